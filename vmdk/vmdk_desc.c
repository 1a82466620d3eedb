/* vmdk — descriptor text: parse what real writers produce, emit VMware's
 * canonical layout (format layer).
 *
 * Parsing is tolerant: CRLF, trailing blanks, comments anywhere, a missing
 * "# Disk DescriptorFile" line, "#DDB" without its comment, `key = "value"`
 * with blanks, NUL padding (text ends at the first NUL), unquoted extent
 * file names.  Emitting is strict (format doc §9, writer 1): the fixed
 * first line, `key=value` header with CID immediately followed by
 * parentCID (qemu rewrites from "CID=" to "parentCID"), quoted names, the
 * canonical section comments, `ddb.key = "value"`, LF endings.  Unknown
 * header keys and DDB entries are kept in their order. */
#define _GNU_SOURCE
#include "vmdk_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define DESC_MAX_LINE 4096u
#define DESC_KV_EXTRA 5u /* " = " and two quotes around a value */

static const char *const access_names[] = { "RW", "RDONLY", "NOACCESS" };

void vmdk_desc_free(struct vmdk_desc *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < d->nr_kv; i++) {
		free(d->kv[i].key);
		free(d->kv[i].value);
	}
	for (unsigned i = 0; i < d->nr_ext; i++) {
		free(d->ext[i].type);
		free(d->ext[i].name);
	}
	free(d->kv);
	free(d->ext);
	free(d);
}

int vmdk_desc_parse_cid(const char *s, uint32_t *out)
{
	size_t n = s ? strspn(s, "0123456789abcdefABCDEF") : 0;

	if (n == 0 || n > 8 || s[n])
		return -EINVAL;
	*out = (uint32_t)strtoul(s, NULL, 16);
	return 0;
}

const char *vmdk_desc_kv_get(const struct vmdk_desc *d, const char *key)
{
	for (unsigned i = 0; i < d->nr_kv; i++)
		if (!strcmp(d->kv[i].key, key))
			return d->kv[i].value;
	return NULL;
}

static void kv_remove(struct vmdk_desc *d, unsigned i)
{
	free(d->kv[i].key);
	free(d->kv[i].value);
	memmove(&d->kv[i], &d->kv[i + 1], (d->nr_kv - i - 1) * sizeof d->kv[0]);
	d->nr_kv--;
}

/* Room for entry nr of an array of `size`-byte entries that holds nr now:
 * grown by doubling (at nr 8, 16, 32, ...), so parsing n lines costs O(n)
 * copies, not O(n^2). */
static int desc_grow(void **arr, unsigned nr, size_t size)
{
	void *p;

	if (nr >= 8 && (nr & (nr - 1)))
		return 0;
	p = realloc(*arr, (size_t)(nr < 8 ? 8 : 2 * nr) * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	return 0;
}

int vmdk_desc_kv_set(struct vmdk_desc *d, const char *key, const char *value,
		     bool quoted)
{
	struct vmdk_desc_kv *kv;
	unsigned i;

	for (i = 0; i < d->nr_kv && strcmp(d->kv[i].key, key); i++)
		;
	if (!value) {
		if (i < d->nr_kv)
			kv_remove(d, i);
		return 0;
	}
	if (strchr(value, '"') || strchr(value, '\n'))
		return -EINVAL; /* VMware's grammar has no escapes */
	if (i == d->nr_kv) {
		if (d->nr_kv >= VMDK_MAX_DESC_KEYS)
			return -E2BIG;
		if (desc_grow((void **)&d->kv, d->nr_kv, sizeof *kv))
			return -ENOMEM;
		kv = d->kv;
		kv[i] = (struct vmdk_desc_kv){ .key = strdup(key) };
		if (!kv[i].key)
			return -ENOMEM;
		d->nr_kv++;
	}
	kv = &d->kv[i];
	free(kv->value);
	kv->value = strdup(value);
	kv->quoted = quoted;
	kv->section = strncmp(key, "ddb.", 4) ? VMDK_DESC_HEADER : VMDK_DESC_DDB;
	return kv->value ? 0 : -ENOMEM;
}

int vmdk_desc_add_extent(struct vmdk_desc *d, enum vmdk_access access,
			 uint64_t size_sectors, const char *type,
			 const char *name, uint64_t offset_sectors, bool has_offset)
{
	struct vmdk_desc_extent *e;

	if (d->nr_ext >= VMDK_MAX_EXTENTS)
		return -E2BIG;
	if (desc_grow((void **)&d->ext, d->nr_ext, sizeof *e))
		return -ENOMEM;
	e = &d->ext[d->nr_ext];
	*e = (struct vmdk_desc_extent){
		.access = access, .size_sectors = size_sectors,
		.type = strdup(type), .name = name ? strdup(name) : NULL,
		.offset_sectors = offset_sectors, .has_offset = has_offset,
	};
	if (!e->type || (name && !e->name)) {
		free(e->type);
		free(e->name);
		return -ENOMEM;
	}
	d->nr_ext++;
	return 0;
}

/* ---- parsing ------------------------------------------------------------------------ */

struct parse_ctx {
	const char *file;
	unsigned line_no;
	struct vmdk_desc *d;
};

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* Next whitespace-separated token, or a double-quoted string (quotes
 * removed, *quoted set).  Returns NULL at end of line. */
static char *next_token(char **cursor, bool *quoted)
{
	char *p = *cursor, *tok;

	while (isspace((unsigned char)*p))
		p++;
	if (!*p)
		return NULL;
	*quoted = *p == '"';
	if (*quoted) {
		tok = ++p;
		p = strchr(p, '"');
		if (!p)
			return NULL;
	} else {
		tok = p;
		while (*p && !isspace((unsigned char)*p))
			if (*p++ == '"')
				return NULL; /* a quote inside a bare word */
	}
	if (*p)
		*p++ = '\0';
	*cursor = p;
	return tok;
}

static int bad_line(const struct parse_ctx *c, const char *what)
{
	vd_err("%s: descriptor line %u: %s", c->file, c->line_no, what);
	return -VD_EBADDATA;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno || *end) ? -EINVAL : 0;
}

static int parse_extent(struct parse_ctx *c, char *line, enum vmdk_access access)
{
	char *cur = line, *tok, *type, *name = NULL;
	uint64_t size, offset = 0;
	bool quoted, has_offset = false;

	unsigned quotes = 0;

	for (const char *q = line; *q; q++)
		quotes += *q == '"';
	if (quotes != 0 && quotes != 2)
		return bad_line(c, "unbalanced quotes (a file name cannot contain '\"')");
	next_token(&cur, &quoted); /* access word, already known */
	tok = next_token(&cur, &quoted);
	if (parse_u64(tok, &size) || size > VMDK_MAX_CAPACITY / VD_SECTOR)
		return bad_line(c, "extent size is not a sector count in range");
	type = next_token(&cur, &quoted);
	if (!type || quoted)
		return bad_line(c, "extent line has no type");
	if (strcmp(type, "ZERO")) {
		name = next_token(&cur, &quoted);
		if (!name || !*name)
			return bad_line(c, "extent line has no file name");
		tok = next_token(&cur, &quoted);
		if (tok) {
			if (parse_u64(tok, &offset) || offset > UINT64_MAX / VD_SECTOR)
				return bad_line(c, "extent offset is not a sector number");
			has_offset = true;
		}
		/* further fields (partition UUID, device id) are ignored */
	}
	return vmdk_desc_add_extent(c->d, access, size, type, name, offset, has_offset);
}

static int parse_kv(struct parse_ctx *c, char *line, char *eq)
{
	char *key, *val, *close;
	bool quoted = false;
	int err;

	*eq = '\0';
	key = trim(line);
	val = trim(eq + 1);
	if (!*key || strpbrk(key, " \t\""))
		return bad_line(c, "malformed key");
	if (*val == '"') {
		close = strchr(val + 1, '"');
		if (!close)
			return bad_line(c, "unterminated quoted value");
		*close = '\0';
		val++;
		quoted = true;
	}
	/* written back as KEY = "VALUE": it must still fit a line */
	if (strlen(key) + strlen(val) + DESC_KV_EXTRA > DESC_MAX_LINE)
		return bad_line(c, "line too long");
	err = vmdk_desc_kv_set(c->d, key, val, quoted);
	if (err == -E2BIG)
		return bad_line(c, "too many keys");
	return err;
}

static int access_of(const char *line, enum vmdk_access *out)
{
	for (unsigned i = 0; i < 3; i++) {
		size_t n = strlen(access_names[i]);
		if (!strncmp(line, access_names[i], n) && isspace((unsigned char)line[n])) {
			*out = (enum vmdk_access)i;
			return 0;
		}
	}
	return -ENOENT;
}

static int parse_line(struct parse_ctx *c, char *raw)
{
	char *line = trim(raw), *eq;
	enum vmdk_access access;

	if (!*line || *line == '#')
		return 0;
	if (!access_of(line, &access)) {
		int err = parse_extent(c, line, access);
		return err == -E2BIG ? bad_line(c, "too many extents") : err;
	}
	eq = strchr(line, '=');
	if (!eq)
		return bad_line(c, "neither key=value nor an extent line");
	return parse_kv(c, line, eq);
}

int vmdk_desc_parse(const char *text, size_t len, const char *file,
		    struct vmdk_desc **out)
{
	struct parse_ctx c = { .file = file };
	char *buf, *line, *next;
	int err = 0;

	len = strnlen(text, len);
	buf = strndup(text, len);
	c.d = calloc(1, sizeof *c.d);
	if (!buf || !c.d) {
		free(buf);
		free(c.d);
		return -ENOMEM;
	}
	for (line = buf; line && !err; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		c.line_no++;
		if (strlen(line) > DESC_MAX_LINE)
			err = bad_line(&c, "line too long");
		else
			err = parse_line(&c, line);
	}
	free(buf);
	if (err) {
		vmdk_desc_free(c.d);
		return err;
	}
	*out = c.d;
	return 0;
}

/* ---- emitting -------------------------------------------------------------------------- */

struct sbuf {
	char *s;
	size_t len, cap;
	bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < b->cap - b->len)
			break;
		char *s = realloc(b->s, b->cap * 2 + (size_t)n + 64);
		if (n < 0 || !s) {
			b->oom = true;
			return;
		}
		b->s = s;
		b->cap = b->cap * 2 + (size_t)n + 64;
	}
	b->len += (size_t)n;
}

static void emit_kv(struct sbuf *b, const struct vmdk_desc_kv *kv)
{
	const char *sep = kv->section == VMDK_DESC_DDB ? " = " : "=";

	if (kv->quoted || kv->section == VMDK_DESC_DDB)
		sb_printf(b, "%s%s\"%s\"\n", kv->key, sep, kv->value);
	else
		sb_printf(b, "%s%s%s\n", kv->key, sep, kv->value);
}

static void emit_header(struct sbuf *b, const struct vmdk_desc *d)
{
	static const char *const first[] = { "version", "encoding", "CID", "parentCID" };

	/* version as parsed (quoted or not: a value of blanks must survive) */
	sb_printf(b, "# Disk DescriptorFile\n%s", vmdk_desc_kv_get(d, "version") ? ""
								     : "version=1\n");
	for (unsigned f = 0; f < 4; f++)
		for (unsigned i = 0; i < d->nr_kv; i++)
			if (!strcmp(d->kv[i].key, first[f]))
				emit_kv(b, &d->kv[i]);
	for (unsigned i = 0; i < d->nr_kv; i++) {
		const struct vmdk_desc_kv *kv = &d->kv[i];
		bool is_first = false;
		for (unsigned f = 0; f < 4; f++)
			is_first |= !strcmp(kv->key, first[f]);
		if (kv->section == VMDK_DESC_HEADER && !is_first)
			emit_kv(b, kv);
	}
}

static void emit_extent(struct sbuf *b, const struct vmdk_desc_extent *e)
{
	sb_printf(b, "%s %" PRIu64 " %s", access_names[e->access], e->size_sectors, e->type);
	if (e->name)
		sb_printf(b, " \"%s\"", e->name);
	if (e->name && (e->has_offset || !strcmp(e->type, "FLAT")))
		sb_printf(b, " %" PRIu64, e->offset_sectors);
	sb_printf(b, "\n");
}

char *vmdk_desc_emit(const struct vmdk_desc *d)
{
	struct sbuf b = { .s = malloc(1024), .cap = 1024 };

	if (!b.s)
		return NULL;
	b.s[0] = '\0';
	emit_header(&b, d);
	sb_printf(&b, "\n# Extent description\n");
	for (unsigned i = 0; i < d->nr_ext; i++)
		emit_extent(&b, &d->ext[i]);
	sb_printf(&b, "\n# The Disk Data Base\n#DDB\n\n");
	for (unsigned i = 0; i < d->nr_kv; i++)
		if (d->kv[i].section == VMDK_DESC_DDB)
			emit_kv(&b, &d->kv[i]);
	if (b.oom) {
		free(b.s);
		return NULL;
	}
	return b.s;
}
