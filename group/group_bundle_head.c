/* group — the header and the layer headers of a bundle (layer 3).
 *
 * Owns: the content of the HEAD block (what the bundle needs, how many
 * layers it holds) and of each LAYR block (one packed layer's descriptor
 * facts and parent), encoded and decoded (docs/bundle.md, "Header" and
 * "Layer header").  Decoding treats the bytes as hostile: every number is
 * bounded before use, every string is checked to be one a descriptor may
 * hold, and a layer's facts are checked against the layers and needs before
 * it (parent index, capacity, the kinds a parent may have), so that unpack
 * never meets a layer it cannot make only once it has written something.
 * Errors are reported once, naming the block (`where`) and the field.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "group_int.h"

#define HEAD_FIXED 32u
#define NEED_FIXED 32u
#define LAYER_FIXED 64u
#define MAX_CAPACITY (64ull << 40) /* what vmdk opens */
#define MAX_NAME 255u
#define MAX_TEXT_LINE 1024u

/* ---- strings a descriptor may hold ------------------------------------------------------- */

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '"')
			return false;
	return true;
}

/* A file name unpack may create in its folder: NAME.vmdk, plain. */
bool group_bundle_name_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 5 && n <= MAX_NAME && s[0] != '.' && !strchr(s, '/') && printable(s) &&
	       !strcasecmp(s + n - 5, ".vmdk");
}

static bool key_ok(const char *k, size_t n)
{
	if (n < 5 || n > 128 || strncmp(k, "ddb.", 4))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(k[i] == '.' || k[i] == '_' || k[i] == '-' || (k[i] >= '0' && k[i] <= '9') ||
		      ((k[i] | 0x20) >= 'a' && (k[i] | 0x20) <= 'z')))
			return false;
	return true;
}

static int bad(const char *where, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(const char *where, const char *field, const char *fmt, ...)
{
	char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	vd_err("%s: field %s %s: refused, nothing written", where, field, msg ? msg : "");
	free(msg);
	return -VD_EBADDATA;
}

/* ---- encoding ------------------------------------------------------------------------------- */

int group_bundle_head_encode(const struct group_bundle_info *b, uint8_t **out, size_t *len)
{
	size_t n = HEAD_FIXED;
	uint8_t *p;

	for (unsigned i = 0; i < b->nr_needs; i++)
		n += NEED_FIXED + strlen(b->needs[i].name);
	if (!(*out = p = calloc(1, n)))
		return -ENOMEM;
	put_le32(p, b->nr_layers);
	put_le32(p + 4, b->nr_needs);
	put_le32(p + 8, (uint32_t)b->level);
	put_le64(p + 16, b->held_bytes);
	p += HEAD_FIXED;
	for (unsigned i = 0; i < b->nr_needs; i++) {
		const struct group_bundle_need *nd = &b->needs[i];
		size_t k = strlen(nd->name);
		memcpy(p, nd->digest, 16);
		put_le32(p + 16, nd->cid);
		put_le32(p + 20, (uint32_t)k);
		put_le64(p + 24, nd->capacity);
		memcpy(p + NEED_FIXED, nd->name, k);
		p += NEED_FIXED + k;
	}
	*len = n;
	return 0;
}

/* The text part of a layer header: name, source, kind, then the keys. */
static char *layer_text(const struct group_bundle_layer *l, size_t *len)
{
	char *text = NULL;
	FILE *m = open_memstream(&text, len);

	if (!m)
		return NULL;
	fprintf(m, "name=%s\nsource=%s\nkind=%s\n", l->name, l->source_type,
		vmdk_subformat_name(l->kind));
	for (unsigned i = 0; i < l->nr_keys; i++)
		fprintf(m, "%s\n", l->keys[i]);
	fclose(m);
	return text;
}

int group_bundle_layer_encode(const struct group_bundle_info *b, unsigned i, uint8_t **out,
			      size_t *len)
{
	const struct group_bundle_layer *l = &b->layers[i];
	size_t tlen = 0;
	char *text = layer_text(l, &tlen);
	uint8_t *p = text ? calloc(1, LAYER_FIXED + tlen) : NULL;

	if (!p) {
		free(text);
		return -ENOMEM;
	}
	put_le32(p, i);
	put_le32(p + 4, l->parent_kind);
	put_le32(p + 8, l->parent);
	put_le32(p + 12, (l->top ? 1u : 0) | (l->zeroed_grain ? 2u : 0));
	put_le64(p + 16, l->capacity);
	put_le64(p + 24, l->grain_size);
	put_le64(p + 32, l->split_size);
	put_le64(p + 40, l->held_bytes);
	put_le32(p + 48, l->cid);
	put_le32(p + 52, l->parent_cid);
	put_le32(p + 56, (uint32_t)tlen);
	memcpy(p + LAYER_FIXED, text, tlen);
	free(text);
	*out = p;
	*len = LAYER_FIXED + tlen;
	return 0;
}

/* ---- decoding the header -------------------------------------------------------------------- */

static int decode_need(const char *where, const uint8_t *p, size_t left, unsigned i,
		       struct group_bundle_need *nd, size_t *used)
{
	uint32_t k = left >= NEED_FIXED ? get_le32(p + 20) : 0;

	if (left < NEED_FIXED || k > left - NEED_FIXED)
		return bad(where, "need", "%u runs past the header's end", i);
	if (!(nd->name = strndup((const char *)p + NEED_FIXED, k)))
		return -ENOMEM;
	if (strlen(nd->name) != k || !group_bundle_name_ok(nd->name))
		return bad(where, "need.name", "of need %u is not a plain NAME.vmdk", i);
	memcpy(nd->digest, p, 16);
	nd->cid = get_le32(p + 16);
	nd->capacity = get_le64(p + 24);
	if (!nd->capacity || nd->capacity > MAX_CAPACITY || nd->capacity % VD_SECTOR)
		return bad(where, "need.capacity", "= %llu of need %u (1 sector .. 64 TiB)",
			   (unsigned long long)nd->capacity, i);
	*used = NEED_FIXED + k;
	return 0;
}

int group_bundle_head_decode(const char *where, const uint8_t *p, size_t len,
			     struct group_bundle_info *b)
{
	uint32_t nl = len >= HEAD_FIXED ? get_le32(p) : 0, nn = len >= HEAD_FIXED ? get_le32(p + 4) : 0;
	size_t at = HEAD_FIXED, used = 0;
	int err = 0;

	if (len < HEAD_FIXED)
		return bad(where, "length", "= %zu (at least %u)", len, HEAD_FIXED);
	if (!nl || nl > GROUP_BUNDLE_MAX_LAYERS)
		return bad(where, "layers", "= %u (1 .. %u)", nl, GROUP_BUNDLE_MAX_LAYERS);
	if (nn > GROUP_BUNDLE_MAX_LAYERS)
		return bad(where, "needs", "= %u (at most %u)", nn, GROUP_BUNDLE_MAX_LAYERS);
	if (get_le32(p + 12) || get_le32(p + 24) || get_le32(p + 28))
		return bad(where, "flags", "are not 0 (a newer vdelta wrote it)");
	b->level = (int)get_le32(p + 8);
	b->held_bytes = get_le64(p + 16);
	b->layers = calloc(nl, sizeof *b->layers);
	b->needs = calloc(nn ? nn : 1, sizeof *b->needs);
	if (!b->layers || !b->needs)
		return -ENOMEM;
	b->nr_layers = nl;
	b->nr_needs = nn;
	for (unsigned i = 0; !err && i < nn; i++, at += used)
		err = decode_need(where, p + at, len - at, i, &b->needs[i], &used);
	if (!err && at != len)
		err = bad(where, "length", "= %zu: %zu bytes after the needs", len, len - at);
	return err;
}

/* ---- decoding a layer header ------------------------------------------------------------------- */

static int text_line(const char *where, struct group_bundle_layer *l, char *line)
{
	char *eq = strchr(line, '=');
	char **slot = NULL;

	if (!eq || strlen(line) > MAX_TEXT_LINE || !printable(line))
		return bad(where, "text", "holds a line that is not key=value of plain text");
	*eq = 0;
	if (!strcmp(line, "name"))
		slot = &l->name;
	else if (!strcmp(line, "source"))
		slot = &l->source_type;
	else if (!strcmp(line, "kind")) {
		if (vmdk_subformat_parse(eq + 1, &l->kind) || l->kind == VMDK_STREAM_OPTIMIZED)
			return bad(where, "kind", "= \"%s\" is not a kind unpack makes", eq + 1);
		return 0;
	}
	if (slot) {
		free(*slot);
		return (*slot = strdup(eq + 1)) ? 0 : -ENOMEM;
	}
	if (!key_ok(line, strlen(line)))
		return bad(where, "text", "key \"%s\" is not a DDB key", line);
	*eq = '=';
	return vd_strv_add(&l->keys, &l->nr_keys, line);
}

static int decode_text(const char *where, const uint8_t *p, size_t n,
		       struct group_bundle_layer *l)
{
	char *text = strndup((const char *)p, n), *save, *line;
	int err = text ? 0 : -ENOMEM;

	l->kind = VMDK_SUBFORMAT_COUNT;
	if (!err && strlen(text) != n)
		err = bad(where, "text", "holds a NUL byte");
	for (line = err ? NULL : strtok_r(text, "\n", &save); !err && line;
	     line = strtok_r(NULL, "\n", &save))
		err = text_line(where, l, line);
	free(text);
	if (!err && (!l->name || !group_bundle_name_ok(l->name)))
		err = bad(where, "name", "is missing or not a plain NAME.vmdk");
	if (!err && (!l->source_type || l->kind == VMDK_SUBFORMAT_COUNT))
		err = bad(where, "text", "lacks source= or kind=");
	return err;
}

static bool delta_kind(enum vmdk_subformat k)
{
	return k == VMDK_MONOLITHIC_SPARSE || k == VMDK_TWOGB_SPARSE || k == VMDK_VMFS_SPARSE ||
	       k == VMDK_SESPARSE;
}

static bool split_kind(enum vmdk_subformat k)
{
	return k == VMDK_TWOGB_SPARSE || k == VMDK_TWOGB_FLAT;
}

/* Geometry: capacity, grain and split as vmdk_create takes them. */
static int check_geometry(const char *where, const struct group_bundle_layer *l)
{
	bool flat = !delta_kind(l->kind);

	if (!l->capacity || l->capacity > MAX_CAPACITY || l->capacity % VD_SECTOR)
		return bad(where, "capacity", "= %llu (1 sector .. 64 TiB, whole sectors)",
			   (unsigned long long)l->capacity);
	if (flat ? l->grain_size != 0
		 : (!vd_is_pow2(l->grain_size) || l->grain_size < VD_SECTOR ||
		    l->grain_size > (32u << 20)))
		return bad(where, "grain", "= %llu (%s)", (unsigned long long)l->grain_size,
			   flat ? "0 for a flat kind" : "a power of two, 512 B .. 32 MiB");
	if (split_kind(l->kind) ? (!l->split_size || l->split_size % VD_SECTOR ||
				   l->split_size > (2ull << 40) ||
				   l->capacity / l->split_size >= 4096)
				: l->split_size != 0)
		return bad(where, "split", "= %llu does not fit kind %s",
			   (unsigned long long)l->split_size, vmdk_subformat_name(l->kind));
	if (l->zeroed_grain && l->kind != VMDK_MONOLITHIC_SPARSE && l->kind != VMDK_TWOGB_SPARSE)
		return bad(where, "flags", "say zeroed grains for kind %s",
			   vmdk_subformat_name(l->kind));
	return 0;
}

/* The parent: an earlier layer or a need of the same capacity; a delta
 * kind has one, a flat kind none. */
static int check_parent(const char *where, const struct group_bundle_info *b, unsigned i)
{
	const struct group_bundle_layer *l = &b->layers[i];
	uint64_t cap = 0;

	if (l->parent_kind == GROUP_BUNDLE_BASE)
		return l->parent || l->parent_cid != VMDK_CID_NONE ||
			       l->kind == VMDK_VMFS_SPARSE || l->kind == VMDK_SESPARSE
			       ? bad(where, "parent", "of a base: index %u, CID %08x, kind %s",
				     l->parent, l->parent_cid, vmdk_subformat_name(l->kind))
			       : 0;
	if (l->parent_kind == GROUP_BUNDLE_LAYER && l->parent < i)
		cap = b->layers[l->parent].capacity;
	else if (l->parent_kind == GROUP_BUNDLE_NEED && l->parent < b->nr_needs)
		cap = b->needs[l->parent].capacity;
	if (!cap || l->parent_kind > GROUP_BUNDLE_NEED)
		return bad(where, "parent", "= kind %u index %u names no earlier layer or need",
			   l->parent_kind, l->parent);
	if (cap != l->capacity)
		return bad(where, "capacity", "= %llu differs from its parent's %llu",
			   (unsigned long long)l->capacity, (unsigned long long)cap);
	if (l->parent_cid != (l->parent_kind == GROUP_BUNDLE_LAYER ? b->layers[l->parent].cid
								   : b->needs[l->parent].cid))
		return bad(where, "parentCID", "= %08x is not its parent's CID", l->parent_cid);
	if (!delta_kind(l->kind))
		return bad(where, "kind", "= %s cannot be a delta", vmdk_subformat_name(l->kind));
	return 0;
}

int group_bundle_layer_decode(const char *where, const uint8_t *p, size_t len,
			      struct group_bundle_info *b, unsigned i)
{
	struct group_bundle_layer *l = &b->layers[i];
	uint32_t tlen = len >= LAYER_FIXED ? get_le32(p + 56) : 0;
	int err;

	if (len < LAYER_FIXED || tlen != len - LAYER_FIXED)
		return bad(where, "length", "= %zu does not match its text length %u", len, tlen);
	if (get_le32(p) != i)
		return bad(where, "index", "= %u where layer %u belongs (out of order)",
			   get_le32(p), i);
	if ((get_le32(p + 12) & ~3u) || get_le32(p + 60))
		return bad(where, "flags", "are not known (a newer vdelta wrote it)");
	l->parent_kind = (enum group_bundle_parent)get_le32(p + 4);
	l->parent = get_le32(p + 8);
	l->top = get_le32(p + 12) & 1u;
	l->zeroed_grain = get_le32(p + 12) & 2u;
	l->capacity = get_le64(p + 16);
	l->grain_size = get_le64(p + 24);
	l->split_size = get_le64(p + 32);
	l->held_bytes = get_le64(p + 40);
	l->cid = get_le32(p + 48);
	l->parent_cid = get_le32(p + 52);
	err = decode_text(where, p + LAYER_FIXED, tlen, l);
	if (!err)
		err = check_geometry(where, l);
	if (!err && l->held_bytes > l->capacity)
		err = bad(where, "held", "= %llu exceeds its capacity",
			  (unsigned long long)l->held_bytes);
	return err ? err : check_parent(where, b, i);
}

/* ---- the whole ------------------------------------------------------------------------------------ */

/* After every layer header: names unique, held bytes adding up. */
int group_bundle_head_check(const char *where, const struct group_bundle_info *b)
{
	uint64_t held = 0;

	for (unsigned i = 0; i < b->nr_layers; i++) {
		held += b->layers[i].held_bytes;
		for (unsigned j = 0; j < i; j++)
			if (!strcasecmp(b->layers[i].name, b->layers[j].name))
				return bad(where, "name", "\"%s\" of layer %u is layer %u's too",
					   b->layers[i].name, i, j);
	}
	if (held != b->held_bytes)
		return bad(where, "held", "= %llu but the layers hold %llu",
			   (unsigned long long)b->held_bytes, (unsigned long long)held);
	return 0;
}

void group_bundle_info_free(struct group_bundle_info *b)
{
	if (!b)
		return;
	for (unsigned i = 0; b->layers && i < b->nr_layers; i++) {
		struct group_bundle_layer *l = &b->layers[i];
		free(l->name);
		free(l->source_type);
		free(l->path);
		vd_strv_free(l->keys, l->nr_keys);
	}
	for (unsigned i = 0; b->needs && i < b->nr_needs; i++) {
		free(b->needs[i].name);
		free(b->needs[i].path);
	}
	free(b->layers);
	free(b->needs);
	free(b);
}
