/* tests — unit tests of vmdk/vmdk_desc.c (format layer, private API from
 * vmdk_int.h): vmdk_desc_parse on every quirk real writers produce,
 * vmdk_desc_emit's canonical VMware layout (vmdk-format.md §1, §7.2, §9
 * writer 1), emit -> parse -> emit fixed point, kv get/set, extent add,
 * vmdk_desc_parse_cid, hostile input, and the descriptors of the shared
 * corpus (text files and the ones embedded in KDMV files).  Expected values
 * come from reading the input texts, never from the parser. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vmdk_int.h"

/* ---- helpers ------------------------------------------------------------------ */

static struct vmdk_desc *parse_ok(const char *text)
{
	struct vmdk_desc *d = NULL;
	int rc = vmdk_desc_parse(text, strlen(text), "test.vmdk", &d);

	if (rc)
		fail_msg("parse failed (%d: %s) for:\n%s", rc, vdt_last_msg, text);
	assert_non_null(d);
	return d;
}

static void parse_bad_len(const char *text, size_t len)
{
	struct vmdk_desc *d = NULL;
	int rc = vmdk_desc_parse(text, len, "bad.vmdk", &d);

	if (rc >= 0) {
		vmdk_desc_free(d);
		fail_msg("hostile descriptor accepted (%zu bytes): %.200s", len, text);
	}
}

static void parse_bad(const char *text)
{
	parse_bad_len(text, strlen(text));
}

static void expect_kv(const struct vmdk_desc *d, const char *key, const char *want)
{
	const char *v = vmdk_desc_kv_get(d, key);

	if (!want) {
		if (v)
			fail_msg("key %s: want absent, got \"%s\"", key, v);
		return;
	}
	if (!v)
		fail_msg("key %s: missing, want \"%s\"", key, want);
	if (strcmp(v, want))
		fail_msg("key %s: got \"%s\", want \"%s\"", key, v, want);
}

static const struct vmdk_desc_kv *find_kv(const struct vmdk_desc *d, const char *key)
{
	for (unsigned i = 0; i < d->nr_kv; i++)
		if (!strcmp(d->kv[i].key, key))
			return &d->kv[i];
	return NULL;
}

static void expect_section(const struct vmdk_desc *d, const char *key,
			   enum vmdk_desc_section s)
{
	const struct vmdk_desc_kv *kv = find_kv(d, key);

	if (!kv)
		fail_msg("key %s missing", key);
	if (kv->section != s)
		fail_msg("key %s: section %d, want %d", key, kv->section, s);
}

static void expect_ext(const struct vmdk_desc *d, unsigned i, enum vmdk_access acc,
		       uint64_t size_sectors, const char *type, const char *name,
		       bool has_offset, uint64_t offset_sectors)
{
	const struct vmdk_desc_extent *e;

	if (i >= d->nr_ext)
		fail_msg("extent %u missing (have %u)", i, d->nr_ext);
	e = &d->ext[i];
	if (e->access != acc)
		fail_msg("extent %u: access %d, want %d", i, e->access, acc);
	if (e->size_sectors != size_sectors)
		fail_msg("extent %u: %llu sectors, want %llu", i,
			 (unsigned long long)e->size_sectors,
			 (unsigned long long)size_sectors);
	if (!e->type || strcmp(e->type, type))
		fail_msg("extent %u: type %s, want %s", i, e->type, type);
	if (name && (!e->name || strcmp(e->name, name)))
		fail_msg("extent %u: name \"%s\", want \"%s\"", i, e->name, name);
	if (!name && e->name)
		fail_msg("extent %u: name \"%s\", want none", i, e->name);
	if (e->has_offset != has_offset)
		fail_msg("extent %u: has_offset %d, want %d", i, e->has_offset, has_offset);
	if (has_offset && e->offset_sectors != offset_sectors)
		fail_msg("extent %u: offset %llu, want %llu", i,
			 (unsigned long long)e->offset_sectors,
			 (unsigned long long)offset_sectors);
}

/* split text into lines (LF); returns count, lines point into a copy */
struct lines {
	char *buf;
	char **l;
	unsigned n;
};

static void split_lines(const char *text, struct lines *ls)
{
	size_t len = strlen(text);

	ls->buf = strdup(text);
	ls->l = calloc(len + 2, sizeof *ls->l);
	ls->n = 0;
	for (char *p = ls->buf; *p;) {
		char *nl = strchr(p, '\n');
		ls->l[ls->n++] = p;
		if (!nl)
			break;
		*nl = 0;
		p = nl + 1;
	}
}

static void free_lines(struct lines *ls)
{
	free(ls->buf);
	free(ls->l);
}

static int find_line(const struct lines *ls, const char *s)
{
	for (unsigned i = 0; i < ls->n; i++)
		if (!strcmp(ls->l[i], s))
			return (int)i;
	return -1;
}

static bool is_access(const char *l)
{
	return !strncmp(l, "RW ", 3) || !strncmp(l, "RDONLY ", 7) ||
	       !strncmp(l, "NOACCESS ", 9);
}

/* An extent line as VMware writes it: ACCESS SECTORS TYPE ["name" [OFF]] */
static void check_extent_line(const char *l)
{
	const char *p = strchr(l, ' ');
	const char *q;

	assert_non_null(p);
	p++;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p != ' ')
		fail_msg("extent line \"%s\": sector count", l);
	p++;
	q = strchr(p, ' ');
	if (!q) /* ZERO: no name */
		return;
	if (q[1] != '"')
		fail_msg("extent line \"%s\": file name not quoted", l);
	q = strchr(q + 2, '"');
	if (!q)
		fail_msg("extent line \"%s\": unterminated name", l);
	if (q[1] && (q[1] != ' ' || !q[2]))
		fail_msg("extent line \"%s\": junk after name", l);
	for (q += q[1] ? 2 : 1; *q; q++)
		if (*q < '0' || *q > '9')
			fail_msg("extent line \"%s\": offset", l);
}

/* Canonical VMware layout (format doc §1.1, §7.2, §9 writer 1). */
static void check_canonical(const char *text, const struct vmdk_desc *d)
{
	struct lines ls;
	int cid, ext_hdr, ddb_hdr, ddb;
	unsigned nr_ext = 0, nr_ddb = 0, nr_hdr = 0;

	if (strchr(text, '\r'))
		fail_msg("emitted text has CR:\n%s", text);
	assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
	split_lines(text, &ls);
	if (strcmp(ls.l[0], "# Disk DescriptorFile"))
		fail_msg("first line \"%s\"", ls.l[0]);
	ext_hdr = find_line(&ls, "# Extent description");
	ddb_hdr = find_line(&ls, "# The Disk Data Base");
	ddb = find_line(&ls, "#DDB");
	if (ext_hdr < 0 || ddb_hdr < 0 || ddb != ddb_hdr + 1)
		fail_msg("section comments missing or out of order:\n%s", text);
	assert_true(ext_hdr < ddb_hdr);
	cid = -1;
	for (unsigned i = 0; i < ls.n; i++) {
		const char *l = ls.l[i];
		if (!strncmp(l, "CID=", 4))
			cid = (int)i;
		if (!*l || l[0] == '#')
			continue;
		if (is_access(l)) {
			if ((int)i < ext_hdr || (int)i > ddb_hdr)
				fail_msg("extent line outside its section: %s", l);
			check_extent_line(l);
			nr_ext++;
		} else if (!strncmp(l, "ddb.", 4)) {
			const char *eq = strstr(l, " = \"");
			if ((int)i < ddb || !eq || l[strlen(l) - 1] != '"' ||
			    strchr(l, ' ') != eq)
				fail_msg("DDB line not `ddb.k = \"v\"` after #DDB: %s", l);
			nr_ddb++;
		} else {
			const char *eq = strchr(l, '='), *sp = strchr(l, ' ');
			if (!eq || eq == l || (sp && sp < eq) || eq[1] == ' ')
				fail_msg("header line not `key=value`: \"%s\"", l);
			if ((int)i > ext_hdr && strncmp(l, "changeTrackPath=", 16))
				fail_msg("header key after the extents: %s", l);
			nr_hdr++;
		}
	}
	if (cid < 0 || (unsigned)cid + 1 >= ls.n || strncmp(ls.l[cid + 1], "parentCID=", 10))
		fail_msg("CID= not immediately followed by parentCID=:\n%s", text);
	assert_int_equal(nr_ext, d->nr_ext);
	assert_int_equal(nr_hdr + nr_ddb, d->nr_kv);
	free_lines(&ls);
}

/* a and b hold the same entries and extents */
static void expect_same(const struct vmdk_desc *a, const struct vmdk_desc *b)
{
	assert_int_equal(a->nr_kv, b->nr_kv);
	for (unsigned i = 0; i < a->nr_kv; i++) {
		const struct vmdk_desc_kv *kb = find_kv(b, a->kv[i].key);
		if (!kb)
			fail_msg("key %s lost", a->kv[i].key);
		if (strcmp(kb->value, a->kv[i].value))
			fail_msg("key %s: \"%s\" became \"%s\"", kb->key,
				 a->kv[i].value, kb->value);
		assert_int_equal(kb->section == VMDK_DESC_DDB,
				 a->kv[i].section == VMDK_DESC_DDB);
	}
	assert_int_equal(a->nr_ext, b->nr_ext);
	for (unsigned i = 0; i < a->nr_ext; i++) {
		const struct vmdk_desc_extent *e = &a->ext[i];
		expect_ext(b, i, e->access, e->size_sectors, e->type, e->name,
			   e->has_offset, e->offset_sectors);
	}
}

/* emit is canonical, keeps everything, and is a fixed point */
static void check_emit(const struct vmdk_desc *d)
{
	char *t1 = vmdk_desc_emit(d), *t2;
	struct vmdk_desc *d2;

	assert_non_null(t1);
	check_canonical(t1, d);
	d2 = parse_ok(t1);
	expect_same(d, d2);
	t2 = vmdk_desc_emit(d2);
	assert_non_null(t2);
	if (strcmp(t1, t2))
		fail_msg("emit is not a fixed point:\n--- first\n%s--- second\n%s", t1, t2);
	vmdk_desc_free(d2);
	free(t1);
	free(t2);
}

/* ---- a VMware descriptor and its quirky variants ------------------------------- */

static const char vmware_text[] =
	"# Disk DescriptorFile\n"
	"version=1\n"
	"encoding=\"UTF-8\"\n"
	"CID=9ab16ab9\n"
	"parentCID=ffffffff\n"
	"isNativeSnapshot=\"no\"\n"
	"createType=\"vmfs\"\n"
	"\n"
	"# Extent description\n"
	"RW 41943040 VMFS \"disk-flat.vmdk\"\n"
	"\n"
	"# Change Tracking File\n"
	"changeTrackPath=\"disk-ctk.vmdk\"\n"
	"\n"
	"# The Disk Data Base\n"
	"#DDB\n"
	"\n"
	"ddb.adapterType = \"lsilogic\"\n"
	"ddb.geometry.cylinders = \"2610\"\n"
	"ddb.geometry.heads = \"255\"\n"
	"ddb.geometry.sectors = \"63\"\n"
	"ddb.longContentID = \"e6d6c9b8c7164488a10a36b39ab16ab9\"\n"
	"ddb.uuid = \"60 00 C2 97 ee 00 4e ed-cb 09 ab 10 91 3f 7f 99\"\n"
	"ddb.virtualHWVersion = \"13\"\n"
	"ddb.thinProvisioned = \"1\"\n";

static void expect_vmware(const struct vmdk_desc *d)
{
	expect_kv(d, "version", "1");
	expect_kv(d, "encoding", "UTF-8");
	expect_kv(d, "CID", "9ab16ab9");
	expect_kv(d, "parentCID", "ffffffff");
	expect_kv(d, "isNativeSnapshot", "no");
	expect_kv(d, "createType", "vmfs");
	expect_kv(d, "changeTrackPath", "disk-ctk.vmdk");
	expect_kv(d, "ddb.adapterType", "lsilogic");
	expect_kv(d, "ddb.geometry.cylinders", "2610");
	expect_kv(d, "ddb.uuid", "60 00 C2 97 ee 00 4e ed-cb 09 ab 10 91 3f 7f 99");
	expect_kv(d, "ddb.thinProvisioned", "1");
	expect_kv(d, "parentFileNameHint", NULL);
	expect_kv(d, "ddb.nosuch", NULL);
	assert_int_equal(d->nr_kv, 15);
	assert_int_equal(d->nr_ext, 1);
	expect_ext(d, 0, VMDK_ACCESS_RW, 41943040, "VMFS", "disk-flat.vmdk", false, 0);
	expect_section(d, "createType", VMDK_DESC_HEADER);
	expect_section(d, "ddb.uuid", VMDK_DESC_DDB);
}

static void test_vmware(void **state)
{
	struct vmdk_desc *d = parse_ok(vmware_text);

	(void)state;
	expect_vmware(d);
	assert_false(find_kv(d, "CID")->quoted);
	assert_true(find_kv(d, "createType")->quoted);
	assert_true(find_kv(d, "ddb.virtualHWVersion")->quoted);
	check_emit(d);
	vmdk_desc_free(d);
	vmdk_desc_free(NULL);
}

/* rewrite vmware_text: LF -> CRLF */
static char *to_crlf(const char *s)
{
	char *out = malloc(2 * strlen(s) + 1), *o = out;

	for (; *s; s++) {
		if (*s == '\n')
			*o++ = '\r';
		*o++ = *s;
	}
	*o = 0;
	return out;
}

static void test_crlf(void **state)
{
	char *t = to_crlf(vmware_text);
	struct vmdk_desc *d = parse_ok(t);

	(void)state;
	expect_vmware(d);
	for (unsigned i = 0; i < d->nr_kv; i++)
		assert_null(strchr(d->kv[i].value, '\r'));
	check_emit(d);
	vmdk_desc_free(d);
	free(t);
}

/* trailing blanks after every line, and leading/trailing blank lines */
static void test_trailing_spaces(void **state)
{
	const char *t =
		"\n# Disk DescriptorFile \n"
		"version=1 \n"
		"encoding=\"UTF-8\"\t\n"
		"CID=9ab16ab9   \n"
		"parentCID=ffffffff \n"
		"isNativeSnapshot=\"no\" \n"
		"createType=\"vmfs\"  \n"
		"# Extent description \n"
		"RW 41943040 VMFS \"disk-flat.vmdk\"  \n"
		"changeTrackPath=\"disk-ctk.vmdk\" \n"
		"# The Disk Data Base \n"
		"#DDB \n"
		"ddb.adapterType = \"lsilogic\" \n"
		"ddb.geometry.cylinders = \"2610\"  \n"
		"ddb.geometry.heads = \"255\"\t\n"
		"ddb.geometry.sectors = \"63\" \n"
		"ddb.longContentID = \"e6d6c9b8c7164488a10a36b39ab16ab9\" \n"
		"ddb.uuid = \"60 00 C2 97 ee 00 4e ed-cb 09 ab 10 91 3f 7f 99\" \n"
		"ddb.virtualHWVersion = \"13\" \n"
		"ddb.thinProvisioned = \"1\"    \n\n\n";
	struct vmdk_desc *d = parse_ok(t);

	(void)state;
	expect_vmware(d);
	check_emit(d);
	vmdk_desc_free(d);
}

/* comments anywhere: between keys, between extents, inside the DDB, one
 * that mentions CID= before the real key (qemu's strstr trap) */
static void test_comments(void **state)
{
	const char *t =
		"# Description file created by VMDK stream converter\n"
		"# CID=deadbeef (a comment, not the key)\n"
		"version=1\n"
		"# Believe this is random\n"
		"CID=7e5b80a7\n"
		"# Indicates no parent\n"
		"parentCID=ffffffff\n"
		"createType=\"twoGbMaxExtentFlat\"\n"
		"# Extent description\n"
		"RW 100 FLAT \"d-f001.vmdk\" 0\n"
		"# between extents\n"
		"RW 200 FLAT \"d-f002.vmdk\" 0\n"
		"# The Disk Data Base\n"
		"#DDB\n"
		"ddb.adapterType = \"lsilogic\"\n"
		"# 2048 / 63 / 255 rounded up\n"
		"ddb.geometry.cylinders = \"1\"\n"
		"#ddb.geometry.heads = \"99\"\n"
		"ddb.virtualHWVersion = \"11\"\n"
		"# trailing comment\n";
	struct vmdk_desc *d = parse_ok(t);

	(void)state;
	expect_kv(d, "CID", "7e5b80a7");
	expect_kv(d, "createType", "twoGbMaxExtentFlat");
	expect_kv(d, "ddb.geometry.cylinders", "1");
	expect_kv(d, "ddb.geometry.heads", NULL);
	expect_kv(d, "ddb.virtualHWVersion", "11");
	assert_int_equal(d->nr_kv, 7);
	assert_int_equal(d->nr_ext, 2);
	expect_ext(d, 0, VMDK_ACCESS_RW, 100, "FLAT", "d-f001.vmdk", true, 0);
	expect_ext(d, 1, VMDK_ACCESS_RW, 200, "FLAT", "d-f002.vmdk", true, 0);
	check_emit(d);
	vmdk_desc_free(d);
}

/* no "# Disk DescriptorFile" line, "#DDB" without "# The Disk Data Base",
 * no section comments at all, spaces around '=' in the header, DDB keys
 * without spaces, empty quoted values */
static void test_missing_comments_and_spacing(void **state)
{
	const char *t =
		"version=1\n"
		"CID = 278f54ff\n"
		"parentCID = ffffffff\n"
		"createType = \"streamOptimized\"\n"
		"RDONLY 2097152 SPARSE \"generated-stream.vmdk\"\n"
		"#DDB\n"
		"ddb.virtualHWVersion = \"4\"\n"
		"ddb.adapterType=\"ide\"\n"
		"ddb.comment=\"\"\n"
		"ddb.geometry.heads =\"16\"\n";
	struct vmdk_desc *d = parse_ok(t);
	uint32_t cid;

	(void)state;
	expect_kv(d, "CID", "278f54ff");
	expect_kv(d, "parentCID", "ffffffff");
	expect_kv(d, "createType", "streamOptimized");
	expect_kv(d, "ddb.adapterType", "ide");
	expect_kv(d, "ddb.comment", "");
	expect_kv(d, "ddb.geometry.heads", "16");
	assert_int_equal(d->nr_kv, 8);
	expect_ext(d, 0, VMDK_ACCESS_RDONLY, 2097152, "SPARSE", "generated-stream.vmdk",
		   false, 0);
	assert_int_equal(d->nr_ext, 1);
	assert_int_equal(vmdk_desc_parse_cid(vmdk_desc_kv_get(d, "CID"), &cid), 0);
	assert_int_equal(cid, 0x278f54ff);
	check_emit(d);
	vmdk_desc_free(d);
}

/* parsing stops at the first NUL (embedded descriptors are NUL padded) */
static void test_nul_padding(void **state)
{
	static const char head[] =
		"# Disk DescriptorFile\n"
		"version=1\n"
		"CID=12345678\n"
		"parentCID=ffffffff\n"
		"createType=\"monolithicSparse\"\n"
		"# Extent description\n"
		"RW 200 SPARSE \"image.vmdk\"\n"
		"# The Disk Data Base\n"
		"#DDB\n"
		"ddb.adapterType = \"ide\"\n";
	static const char tail[] = "RW 99 FLAT \"evil.bin\" 0\nddb.evil = \"1\"\nCID=0bad0bad\n";
	size_t len = 10240;
	char *buf = calloc(1, len);
	struct vmdk_desc *d = NULL;

	(void)state;
	memcpy(buf, head, strlen(head));
	memcpy(buf + 4096, tail, strlen(tail));
	assert_int_equal(vmdk_desc_parse(buf, len, "pad.vmdk", &d), 0);
	assert_int_equal(d->nr_ext, 1);
	expect_ext(d, 0, VMDK_ACCESS_RW, 200, "SPARSE", "image.vmdk", false, 0);
	expect_kv(d, "CID", "12345678");
	expect_kv(d, "ddb.evil", NULL);
	assert_int_equal(d->nr_kv, 5);
	vmdk_desc_free(d);
	/* a NUL in the middle of a line ends the text there too */
	memset(buf, 0, len);
	memcpy(buf, head, strlen(head));
	buf[strlen(head) - 3] = 0; /* inside ddb.adapterType's value */
	d = NULL;
	if (vmdk_desc_parse(buf, len, "pad.vmdk", &d) == 0) {
		expect_kv(d, "ddb.adapterType", NULL);
		vmdk_desc_free(d);
	}
	/* len excludes the text after it, with no NUL at all */
	d = NULL;
	assert_int_equal(vmdk_desc_parse(vmware_text, strlen(vmware_text) -
					 strlen("ddb.thinProvisioned = \"1\"\n"),
					 "short.vmdk", &d), 0);
	expect_kv(d, "ddb.thinProvisioned", NULL);
	expect_kv(d, "ddb.virtualHWVersion", "13");
	vmdk_desc_free(d);
	free(buf);
}

/* RDONLY / NOACCESS / ZERO keep their place; FLAT offsets; VMFS without;
 * unquoted names; names with spaces */
static void test_extents(void **state)
{
	const char *t =
		"# Disk DescriptorFile\n"
		"version=1\n"
		"CID=12345678\n"
		"parentCID=ffffffff\n"
		"createType=\"custom\"\n"
		"# Extent description\n"
		"RW 2048 FLAT \"a.bin\" 0\n"
		"RDONLY 2048 FLAT \"b.bin\" 0\n"
		"NOACCESS 512 ZERO\n"
		"RW 1024 ZERO\n"
		"RW 1024 FLAT \"b.bin\" 1024\n"
		"RW 4096 VMFS \"my disk-flat.vmdk\"\n"
		"RW 8 FLAT plain.bin 7\n"
		"RW 16 FLAT \"dev with  two spaces\" 4294967296\n"
		"RW 4192256 SPARSE \"C:\\VMs\\disk-s001.vmdk\"\n"
		"# The Disk Data Base\n"
		"#DDB\n";
	struct vmdk_desc *d = parse_ok(t);

	(void)state;
	assert_int_equal(d->nr_ext, 9);
	expect_ext(d, 0, VMDK_ACCESS_RW, 2048, "FLAT", "a.bin", true, 0);
	expect_ext(d, 1, VMDK_ACCESS_RDONLY, 2048, "FLAT", "b.bin", true, 0);
	expect_ext(d, 2, VMDK_ACCESS_NOACCESS, 512, "ZERO", NULL, false, 0);
	expect_ext(d, 3, VMDK_ACCESS_RW, 1024, "ZERO", NULL, false, 0);
	expect_ext(d, 4, VMDK_ACCESS_RW, 1024, "FLAT", "b.bin", true, 1024);
	expect_ext(d, 5, VMDK_ACCESS_RW, 4096, "VMFS", "my disk-flat.vmdk", false, 0);
	expect_ext(d, 6, VMDK_ACCESS_RW, 8, "FLAT", "plain.bin", true, 7);
	expect_ext(d, 7, VMDK_ACCESS_RW, 16, "FLAT", "dev with  two spaces", true,
		   4294967296ull);
	expect_ext(d, 8, VMDK_ACCESS_RW, 4192256, "SPARSE", "C:\\VMs\\disk-s001.vmdk",
		   false, 0);
	check_emit(d);
	/* the emitted lines, exactly as VMware writes them */
	{
		char *e = vmdk_desc_emit(d);
		struct lines ls;
		split_lines(e, &ls);
		assert_true(find_line(&ls, "RW 2048 FLAT \"a.bin\" 0") >= 0);
		assert_true(find_line(&ls, "RDONLY 2048 FLAT \"b.bin\" 0") >= 0);
		assert_true(find_line(&ls, "NOACCESS 512 ZERO") >= 0);
		assert_true(find_line(&ls, "RW 1024 ZERO") >= 0);
		assert_true(find_line(&ls, "RW 4096 VMFS \"my disk-flat.vmdk\"") >= 0);
		assert_true(find_line(&ls, "RW 8 FLAT \"plain.bin\" 7") >= 0);
		assert_true(find_line(&ls, "RW 4192256 SPARSE \"C:\\VMs\\disk-s001.vmdk\"") >= 0);
		assert_true(find_line(&ls, "RW 2048 FLAT \"a.bin\" 0") <
			    find_line(&ls, "NOACCESS 512 ZERO"));
		free_lines(&ls);
		free(e);
	}
	vmdk_desc_free(d);
}

/* unknown header keys and DDB entries survive emit; parentCID follows CID
 * even when the input had something in between (qemu's CID writer) */
static void test_unknown_keys_kept(void **state)
{
	const char *t =
		"# Disk DescriptorFile\n"
		"version=1\n"
		"CID=0000abcd\n"
		"encoding=\"windows-1252\"\n"
		"myVendorKey=\"hello world\"\n"
		"parentCID=1234abcd\n"
		"createType=\"monolithicSparse\"\n"
		"parentFileNameHint=\"C:\\Users\\me\\base disk.vmdk\"\n"
		"someNumber=42\n"
		"# Extent description\n"
		"RW 128 SPARSE \"x.vmdk\"\n"
		"# The Disk Data Base\n"
		"#DDB\n"
		"ddb.uuid.image = \"428fbafb-8694-4ee2-9ce8-333d77f90140\"\n"
		"ddb.vendor.thing = \"a b  c\"\n";
	struct vmdk_desc *d = parse_ok(t);
	char *e;
	struct lines ls;

	(void)state;
	expect_kv(d, "myVendorKey", "hello world");
	expect_kv(d, "someNumber", "42");
	expect_kv(d, "parentFileNameHint", "C:\\Users\\me\\base disk.vmdk");
	expect_kv(d, "ddb.vendor.thing", "a b  c");
	check_emit(d);
	e = vmdk_desc_emit(d);
	split_lines(e, &ls);
	assert_true(find_line(&ls, "myVendorKey=\"hello world\"") > 0);
	assert_true(find_line(&ls, "someNumber=42") > 0);
	assert_true(find_line(&ls, "encoding=\"windows-1252\"") > 0);
	assert_true(find_line(&ls, "parentFileNameHint=\"C:\\Users\\me\\base disk.vmdk\"") > 0);
	assert_true(find_line(&ls, "ddb.uuid.image = \"428fbafb-8694-4ee2-9ce8-333d77f90140\"") > 0);
	assert_true(find_line(&ls, "ddb.vendor.thing = \"a b  c\"") > 0);
	assert_int_equal(find_line(&ls, "parentCID=1234abcd"),
			 find_line(&ls, "CID=0000abcd") + 1);
	assert_true(find_line(&ls, "version=1") < find_line(&ls, "CID=0000abcd"));
	free_lines(&ls);
	free(e);
	vmdk_desc_free(d);
}

static void test_kv_set(void **state)
{
	struct vmdk_desc *d = parse_ok(vmware_text);
	unsigned n = d->nr_kv;
	char *e;
	struct lines ls;

	(void)state;
	/* replace in place */
	assert_int_equal(vmdk_desc_kv_set(d, "CID", "0badc0de", false), 0);
	assert_int_equal(vmdk_desc_kv_set(d, "ddb.adapterType", "buslogic", true), 0);
	assert_int_equal(d->nr_kv, n);
	expect_kv(d, "CID", "0badc0de");
	expect_kv(d, "ddb.adapterType", "buslogic");
	/* new keys: ddb.* to the DDB, others to the header */
	assert_int_equal(vmdk_desc_kv_set(d, "parentFileNameHint", "base.vmdk", true), 0);
	assert_int_equal(vmdk_desc_kv_set(d, "ddb.toolsVersion", "2147483647", true), 0);
	assert_int_equal(d->nr_kv, n + 2);
	expect_section(d, "parentFileNameHint", VMDK_DESC_HEADER);
	expect_section(d, "ddb.toolsVersion", VMDK_DESC_DDB);
	assert_int_equal(vmdk_desc_add_extent(d, VMDK_ACCESS_RW, 1024, "ZERO", NULL, 0, false), 0);
	assert_int_equal(vmdk_desc_add_extent(d, VMDK_ACCESS_RDONLY, 2048, "FLAT",
					      "more data.bin", 16, true), 0);
	assert_int_equal(d->nr_ext, 3);
	check_emit(d);
	e = vmdk_desc_emit(d);
	split_lines(e, &ls);
	assert_true(find_line(&ls, "CID=0badc0de") > 0);
	assert_true(find_line(&ls, "parentFileNameHint=\"base.vmdk\"") > 0);
	assert_true(find_line(&ls, "ddb.toolsVersion = \"2147483647\"") > find_line(&ls, "#DDB"));
	assert_true(find_line(&ls, "ddb.adapterType = \"buslogic\"") > 0);
	assert_int_equal(find_line(&ls, "RW 1024 ZERO"),
			 find_line(&ls, "RW 41943040 VMFS \"disk-flat.vmdk\"") + 1);
	assert_int_equal(find_line(&ls, "RDONLY 2048 FLAT \"more data.bin\" 16"),
			 find_line(&ls, "RW 1024 ZERO") + 1);
	free_lines(&ls);
	free(e);
	vmdk_desc_free(d);
}

/* a descriptor built from nothing emits the canonical layout */
static void test_emit_from_scratch(void **state)
{
	struct vmdk_desc *d = parse_ok("version=1\nCID=fffffffe\nparentCID=ffffffff\n"
				       "createType=\"monolithicSparse\"\n"
				       "RW 1 SPARSE \"a.vmdk\"\n");

	(void)state;
	assert_int_equal(vmdk_desc_kv_set(d, "ddb.virtualHWVersion", "4", true), 0);
	assert_int_equal(vmdk_desc_kv_set(d, "ddb.adapterType", "ide", true), 0);
	check_emit(d);
	vmdk_desc_free(d);
}

static void test_parse_cid(void **state)
{
	uint32_t v;

	(void)state;
	assert_int_equal(vmdk_desc_parse_cid("9ab16ab9", &v), 0);
	assert_int_equal(v, 0x9ab16ab9u);
	assert_int_equal(vmdk_desc_parse_cid("ffffffff", &v), 0);
	assert_int_equal(v, 0xffffffffu);
	assert_int_equal(vmdk_desc_parse_cid("FFFFFFFE", &v), 0);
	assert_int_equal(v, 0xfffffffeu);
	assert_int_equal(vmdk_desc_parse_cid("00000000", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(vmdk_desc_parse_cid("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(vmdk_desc_parse_cid("1a", &v), 0);
	assert_int_equal(v, 0x1a);
	assert_int_equal(vmdk_desc_parse_cid("", &v), -EINVAL);
	assert_int_equal(vmdk_desc_parse_cid("123456789", &v), -EINVAL);
	assert_int_equal(vmdk_desc_parse_cid("12g4", &v), -EINVAL);
	assert_int_equal(vmdk_desc_parse_cid("-1", &v), -EINVAL);
	assert_int_equal(vmdk_desc_parse_cid("0x12", &v), -EINVAL);
	assert_int_equal(vmdk_desc_parse_cid("12 34", &v), -EINVAL);
	assert_int_equal(vmdk_desc_parse_cid("\"1234\"", &v), -EINVAL);
}

/* ---- hostile input ---------------------------------------------------------------- */

/* head + n extent lines "RW 1 ZERO" (keys=false) or n DDB keys */
static char *many_lines(const char *head, unsigned n, bool keys)
{
	char *buf = malloc(strlen(head) + (size_t)n * 32 + 64), *p = buf;

	p += sprintf(p, "%s", head);
	for (unsigned i = 0; i < n; i++)
		p += keys ? sprintf(p, "ddb.k%u = \"v\"\n", i) : sprintf(p, "RW 1 ZERO\n");
	return buf;
}

static const char min_head[] = "version=1\nCID=12345678\nparentCID=ffffffff\n"
			       "createType=\"monolithicFlat\"\n";

static void test_hostile(void **state)
{
	char *t;
	uint64_t s = 99;
	char bin[4096];

	(void)state;
	/* binary garbage */
	for (size_t i = 0; i < sizeof bin; i++)
		bin[i] = (char)(1 + vdt_below(&s, 255));
	parse_bad_len(bin, sizeof bin);
	parse_bad("hello world\nthis is not a descriptor\n");
	/* extent lines that are not */
	parse_bad("version=1\nRW abc FLAT \"a\" 0\n");
	parse_bad("version=1\nRX 10 FLAT \"a\" 0\n");
	parse_bad("version=1\nRW 10\n");
	parse_bad("version=1\nRW -10 FLAT \"a\" 0\n");
	parse_bad("version=1\nRW 10 FLAT \"a 0\n");
	parse_bad("version=1\nRW 10 FLAT \"a\" zz\n");
	/* no escapes in VMware's grammar: a '"' inside a name cannot be
	 * written back (DDB values with one are refused already) */
	parse_bad("version=1\nRW 10 FLAT ab\"c 0\n");
	parse_bad("version=1\nRW 10 VMFS xdisk-flat.vmdk\"\n");
	parse_bad("version=1\nRW 2048 FLAT`\"b.bin\" 0\n"); /* quote inside the type */
	parse_bad("version=1\nRW 2048 FLAT \"b.bin\" 0\"\"\n");
	/* hostile sector counts */
	parse_bad("version=1\nRW 99999999999999999999999 FLAT \"a\" 0\n");
	parse_bad("version=1\nRW 18446744073709551615 ZERO\n");
	t = many_lines(min_head, 0, false);
	strcat(t, "RW 137438953473 ZERO\n"); /* 64 TiB + 1 sector */
	parse_bad(t);
	free(t);
	parse_bad("version=1\nRW 10 FLAT \"a\" 99999999999999999999999\n");
	/* an over-long line (2 MiB) */
	{
		size_t n = 2u << 20;
		char *big = malloc(n + 64);
		strcpy(big, "version=1\nddb.x = \"");
		memset(big + strlen(big), 'x', n);
		strcpy(big + 19 + n, "\"\n");
		parse_bad(big);
		free(big);
	}
	/* too many extents / keys */
	t = many_lines(min_head, VMDK_MAX_EXTENTS + 1, false);
	parse_bad(t);
	free(t);
	t = many_lines(min_head, VMDK_MAX_DESC_KEYS + 1, true);
	parse_bad(t);
	free(t);
	/* ... but the limits themselves are fine */
	t = many_lines(min_head, VMDK_MAX_EXTENTS, false);
	{
		struct vmdk_desc *d = parse_ok(t);
		assert_int_equal(d->nr_ext, VMDK_MAX_EXTENTS);
		vmdk_desc_free(d);
	}
	free(t);
}

/* d2 holds at least what d holds (emit may add version=1), same extents */
static void expect_superset(const struct vmdk_desc *d, const struct vmdk_desc *d2)
{
	for (unsigned i = 0; i < d->nr_kv; i++) {
		const char *v = vmdk_desc_kv_get(d2, d->kv[i].key);
		if (!v || strcmp(v, d->kv[i].value))
			fail_msg("key %s: \"%s\" became \"%s\"", d->kv[i].key,
				 d->kv[i].value, v ? v : "(absent)");
	}
	assert_int_equal(d->nr_ext, d2->nr_ext);
	for (unsigned i = 0; i < d->nr_ext; i++) {
		const struct vmdk_desc_extent *e = &d->ext[i], *e2 = &d2->ext[i];
		if (e->access != e2->access || e->size_sectors != e2->size_sectors ||
		    strcmp(e->type, e2->type) || !e->name != !e2->name ||
		    (e->name && strcmp(e->name, e2->name)) ||
		    (e->has_offset && e->offset_sectors != e2->offset_sectors))
			fail_msg("extent %u changed by emit: %s \"%s\" -> %s \"%s\"", i,
				 e->type, e->name, e2->type, e2->name);
	}
}

/* random mutations of a valid text never crash or leak (ASan), and whatever
 * is accepted emits a text that parses back to the same and is a fixed point */
static void test_mutations(void **state)
{
	size_t len = strlen(vmware_text);
	char *buf = malloc(len);
	uint64_t s = 7;

	(void)state;
	for (int i = 0; i < 50000; i++) {
		struct vmdk_desc *d = NULL, *d2 = NULL;
		size_t n = len - vdt_below(&s, 40);
		char *e, *e2;
		memcpy(buf, vmware_text, len);
		for (int k = 0, m = 1 + (int)vdt_below(&s, 4); k < m; k++)
			buf[vdt_below(&s, n)] = (char)vdt_rand(&s);
		if (vmdk_desc_parse(buf, n, "m.vmdk", &d))
			continue;
		e = vmdk_desc_emit(d);
		assert_non_null(e);
		if (vmdk_desc_parse(e, strlen(e), "m2.vmdk", &d2))
			fail_msg("emitted text does not parse:\n%s", e);
		expect_superset(d, d2);
		e2 = vmdk_desc_emit(d2);
		if (strcmp(e, e2))
			fail_msg("not a fixed point:\n%s---\n%s", e, e2);
		free(e2);
		vmdk_desc_free(d2);
		free(e);
		vmdk_desc_free(d);
	}
	free(buf);
}

/* ---- corpus ----------------------------------------------------------------------- */

struct corpus_desc {
	const char *rel;
	bool embedded;
	const char *create_type, *cid;
	unsigned nr_ext;
	uint64_t total_sectors;
	enum vmdk_access access0;
	const char *type0, *name0;
	const char *ddb_key, *ddb_val;
	const char *parent_cid; /* NULL: ffffffff */
};

/* Values read off the files by hand (cat -A / the header's descriptorOffset). */
static const struct corpus_desc corpus[] = {
	{ "vmdk-rs/monolithicFlat.vmdk", false, "monolithicFlat", "00000000", 1, 20480,
	  VMDK_ACCESS_RW, "FLAT", "monolithicFlat-flat.vmdk", "ddb.adapterType", "buslogic", NULL },
	{ "vmdk-rs/twoGbMaxExtentSparse.vmdk", false, "twoGbMaxExtentSparse", "00000000", 1,
	  20480, VMDK_ACCESS_RW, "SPARSE", "twoGbMaxExtentSparse-s001.vmdk",
	  "ddb.geometry.cylinders", "301", NULL },
	{ "vmdk-rs/vmfs_thick.vmdk", false, "vmfs", "0172e8a4", 1, 4096, VMDK_ACCESS_RW,
	  "VMFS", "vmfs_thick-flat.vmdk", "ddb.virtualHWVersion", "14", NULL },
	{ "vmdk-rs/vmfs_thick-000001.vmdk", false, "vmfsSparse", "8f67ca74", 1, 4096,
	  VMDK_ACCESS_RW, "VMFSSPARSE", "vmfs_thick-000001-delta.vmdk", "ddb.longContentID",
	  "4b98b55ba6a6bc2e8fd6eb368f67ca74", "0172e8a4" },
	{ "virt-manager/test-vmdk-desc.vmdk", false, "vmfs", "4164f1a0", 1, 12582912,
	  VMDK_ACCESS_RW, "VMFS", "ESX4.0-rhel4u8-32b-flat.vmdk", "ddb.thinProvisioned", "1", NULL },
	{ "vmdk-forensic/ms3-win.vmdk", false, "twoGbMaxExtentSparse", "216bc064", 16,
	  15ull * 8323072 + 983040, VMDK_ACCESS_RW, "SPARSE", "disk-s001.vmdk",
	  "ddb.toolsInstallType", "1", NULL },
	{ "dissect.hypervisor/sesparse-wrapper.vmdk", false, "seSparse", "fffffffe", 1,
	  1048576, VMDK_ACCESS_RW, "SESPARSE", "sesparse.vmdk", NULL, NULL, NULL },
	{ "synthetic/cowd/test.vmdk", false, "vmfsSparse", "fffffffe", 1, 16384,
	  VMDK_ACCESS_RW, "VMFSSPARSE", "test-delta.vmdk", NULL, NULL, NULL },
	{ "synthetic/descriptors/lf.vmdk", false, "monolithicFlat", "12345678", 4, 6144,
	  VMDK_ACCESS_RW, "FLAT", "a.bin", "ddb.adapterType", "ide", NULL },
	{ "synthetic/descriptors/crlf.vmdk", false, "monolithicFlat", "12345678", 4, 6144,
	  VMDK_ACCESS_RW, "FLAT", "a.bin", "ddb.adapterType", "ide", NULL },
	{ "synthetic/descriptors/crlf2.vmdk", false, "monolithicFlat", "12345678", 3, 5120,
	  VMDK_ACCESS_RW, "FLAT", "a.bin", "ddb.adapterType", "ide", NULL },
	{ "synthetic/descriptors/crlf4.vmdk", false, "monolithicFlat", "12345678", 4, 6144,
	  VMDK_ACCESS_RW, "FLAT", "a.bin", "ddb.adapterType", "ide", NULL },
	{ "synthetic/descriptors/sp.vmdk", false, "monolithicFlat", "12345678", 4, 6144,
	  VMDK_ACCESS_RW, "FLAT", "a.bin", "ddb.adapterType", "ide", NULL },
	{ "synthetic/descriptors/unq.vmdk", false, "monolithicFlat", "12345678", 1, 2048,
	  VMDK_ACCESS_RW, "FLAT", "a.bin", NULL, NULL, NULL },
	{ "vmdk-rs/monolithicSparse.vmdk", true, "monolithicSparse", "00000000", 1, 20480,
	  VMDK_ACCESS_RW, "SPARSE", "monolithicSparse.vmdk", "ddb.deletable", "true", NULL },
	{ "vmdk-rs/streamOptimizedWithMarkers.vmdk", true, "streamOptimized", "7e5b80a7", 1,
	  2048, VMDK_ACCESS_RDONLY, "SPARSE", "call-me-stream.vmdk", "ddb.geometry.heads",
	  "255", NULL },
	{ "cot/input.vmdk", true, "streamOptimized", "278f54ff", 1, 2097152,
	  VMDK_ACCESS_RDONLY, "SPARSE", "generated-stream.vmdk", "ddb.toolsVersion", "6532", NULL },
	{ "cot/ubuntu.2.0-disk1.vmdk", true, "streamOptimized", "255a27cd", 1, 16777216,
	  VMDK_ACCESS_RDONLY, "SPARSE", "ubuntu.2.0-disk1.vmdk", "ddb.uuid.image",
	  "428fbafb-8694-4ee2-9ce8-333d77f90140", NULL },
	{ "plaso/image.vmdk", true, "monolithicSparse", "53554ac6", 1, 200, VMDK_ACCESS_RW,
	  "SPARSE", "image.vmdk", "ddb.geometry.cylinders", "0", NULL },
	{ "go-vmdk-parser/vmdk-streamoptimized.img", true, "streamOptimized", "8bc8c866", 1,
	  128, VMDK_ACCESS_RW, "SPARSE", "vmdk-streamoptimized.img", "ddb.toolsVersion",
	  "2147483647", NULL },
	{ "qemu-iotests-sample_images/iotest-version3.vmdk", true, "streamOptimized",
	  "a454774a", 1, 33554432, VMDK_ACCESS_RDONLY, "SPARSE", "generated-stream.vmdk",
	  "ddb.geometry.cylinders", "2088", NULL },
};

/* the descriptor text of a corpus file; embedded ones via the KDMV header */
static char *corpus_text(const char *path, bool embedded, size_t *len)
{
	size_t n = 0;
	uint8_t *buf = vdt_slurp(path, &n);
	char *t;

	assert_non_null(buf);
	if (!embedded) {
		*len = n;
		return (char *)buf;
	}
	{
		uint64_t off = get_le64(buf + 28) * 512, size = get_le64(buf + 36) * 512;
		assert_true(get_le32(buf) == KDMV_MAGIC);
		assert_true(off + size <= n);
		t = malloc(size + 1);
		memcpy(t, buf + off, size);
		t[size] = 0;
		*len = size;
	}
	free(buf);
	return t;
}

static void test_corpus(void **state)
{
	unsigned done = 0;

	(void)state;
	for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
		const struct corpus_desc *c = &corpus[i];
		char *path = vdt_corpus_path(c->rel), *text;
		struct vmdk_desc *d = NULL;
		size_t len = 0;
		uint64_t total = 0;
		uint32_t cid;
		int rc;

		if (!path)
			continue;
		text = corpus_text(path, c->embedded, &len);
		rc = vmdk_desc_parse(text, len, c->rel, &d);
		if (rc)
			fail_msg("%s: parse failed %d (%s)", c->rel, rc, vdt_last_msg);
		expect_kv(d, "createType", c->create_type);
		expect_kv(d, "CID", c->cid);
		expect_kv(d, "parentCID", c->parent_cid ? c->parent_cid : "ffffffff");
		assert_int_equal(vmdk_desc_parse_cid(vmdk_desc_kv_get(d, "CID"), &cid), 0);
		assert_int_equal(d->nr_ext, c->nr_ext);
		for (unsigned k = 0; k < d->nr_ext; k++)
			total += d->ext[k].size_sectors;
		if (total != c->total_sectors)
			fail_msg("%s: %llu sectors, want %llu", c->rel,
				 (unsigned long long)total,
				 (unsigned long long)c->total_sectors);
		assert_int_equal(d->ext[0].access, c->access0);
		assert_string_equal(d->ext[0].type, c->type0);
		assert_string_equal(d->ext[0].name, c->name0);
		if (c->ddb_key)
			expect_kv(d, c->ddb_key, c->ddb_val);
		check_emit(d);
		vmdk_desc_free(d);
		free(text);
		free(path);
		done++;
	}
	if (!done)
		skip();
}

/* lf, crlf, crlf4 and sp describe the same disk */
static void test_corpus_variants_agree(void **state)
{
	static const char *names[] = { "crlf.vmdk", "crlf4.vmdk", "sp.vmdk" };
	char *lf = vdt_corpus_path("synthetic/descriptors/lf.vmdk");
	struct vmdk_desc *ref;
	size_t len = 0;
	char *text;

	(void)state;
	if (!lf)
		skip();
	text = (char *)vdt_slurp(lf, &len);
	ref = parse_ok(text);
	free(text);
	expect_ext(ref, 0, VMDK_ACCESS_RW, 2048, "FLAT", "a.bin", true, 0);
	expect_ext(ref, 1, VMDK_ACCESS_RDONLY, 2048, "FLAT", "b.bin", true, 0);
	expect_ext(ref, 2, VMDK_ACCESS_RW, 1024, "ZERO", NULL, false, 0);
	expect_ext(ref, 3, VMDK_ACCESS_RW, 1024, "FLAT", "b.bin", true, 1024);
	for (size_t i = 0; i < 3; i++) {
		char rel[128], *p;
		struct vmdk_desc *d;
		snprintf(rel, sizeof rel, "synthetic/descriptors/%s", names[i]);
		p = vdt_corpus_path(rel);
		assert_non_null(p);
		text = (char *)vdt_slurp(p, &len);
		d = parse_ok(text);
		expect_same(ref, d);
		vmdk_desc_free(d);
		free(text);
		free(p);
	}
	/* crlf3 has a ZERO extent with a file name: either refused or kept as ZERO */
	{
		char *p = vdt_corpus_path("synthetic/descriptors/crlf3.vmdk");
		struct vmdk_desc *d = NULL;
		assert_non_null(p);
		text = (char *)vdt_slurp(p, &len);
		if (vmdk_desc_parse(text, len, p, &d) == 0) {
			assert_int_equal(d->nr_ext, 4);
			assert_string_equal(d->ext[2].type, "ZERO");
			check_emit(d);
			vmdk_desc_free(d);
		}
		free(text);
		free(p);
	}
	vmdk_desc_free(ref);
	free(lf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vmware),
		cmocka_unit_test(test_crlf),
		cmocka_unit_test(test_trailing_spaces),
		cmocka_unit_test(test_comments),
		cmocka_unit_test(test_missing_comments_and_spacing),
		cmocka_unit_test(test_nul_padding),
		cmocka_unit_test(test_extents),
		cmocka_unit_test(test_unknown_keys_kept),
		cmocka_unit_test(test_kv_set),
		cmocka_unit_test(test_emit_from_scratch),
		cmocka_unit_test(test_parse_cid),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_corpus),
		cmocka_unit_test(test_corpus_variants_agree),
	};
	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
