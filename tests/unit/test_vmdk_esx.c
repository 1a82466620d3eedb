/* tests — unit tests of the ESXi delta extents, vmdk/vmdk_cowd.c (vmfsSparse
 * "COWD") and vmdk/vmdk_sesparse.c (seSparse), through the public API.
 *
 * Oracles: the corpus extents read to the sha256 INDEX.md lists (qemu-img's
 * reading) and to the sector facts INDEX.md states (COWD sector 3 = 'C',
 * 4095 = 'D'; seSparse grain 0 'S', 1 zeroed, 2 unmapped, 4101 'T'; the
 * ESXi seSparse's first 16 MiB are 'a'); the same extents rebuilt here
 * from the format notes (as the corpus mk.py scripts do) read alike; and
 * hand-damaged headers and tables are refused with a message naming the
 * file, under an address-space limit; truncated seSparse files are refused
 * (read and check) and left unchanged; headers claiming huge tables from a
 * few sectors are refused within 12 MiB of address space. */
#define _GNU_SOURCE
#include <setjmp.h> /* cmocka.h needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vdt_corpus_hash.h"
#include "vmdk_int.h"

static struct vmdk_disk *open_ok(const char *path)
{
	struct vmdk_disk *d = NULL;
	int rc = vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d);

	if (rc)
		fail_msg("%s: open failed %d: %s", path, rc, vdt_last_msg);
	return d;
}

static struct vmdk_disk *open_ok_rw(const char *path)
{
	struct vmdk_disk *d = NULL;
	int rc = vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d);

	if (rc)
		fail_msg("%s: read-write open failed %d: %s", path, rc, vdt_last_msg);
	return d;
}

static void expect_bytes(struct vmdk_disk *d, uint64_t off, size_t len, int byte)
{
	uint8_t *buf = malloc(len), *want = malloc(len);

	memset(want, byte, len);
	assert_int_equal(vmdk_pread(d, buf, len, off), 0);
	if (memcmp(buf, want, len))
		fail_msg("[%llu, +%zu) is not all 0x%02x", (unsigned long long)off, len,
			 byte);
	free(buf);
	free(want);
}

static void expect_bs(struct vmdk_disk *d, uint64_t off, uint64_t max, enum vmdk_bs kind,
		      uint64_t run)
{
	enum vmdk_bs k;
	uint64_t r;

	assert_int_equal(vmdk_block_status(d, off, max, &k, &r), 0);
	if (k != kind || r != run)
		fail_msg("block status at %llu: kind %d run %llu, want %d %llu",
			 (unsigned long long)off, k, (unsigned long long)r, kind,
			 (unsigned long long)run);
}

static void check_cb(void *opaque, bool is_error, const char *file, const char *msg)
{
	(void)opaque;
	(void)file;
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "[check %s] %s\n", is_error ? "error" : "warning", msg);
}

static void expect_clean(struct vmdk_disk *d, uint64_t allocated)
{
	struct vmdk_check_result res;

	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.leaked, 0);
	if (allocated != UINT64_MAX)
		assert_int_equal(res.allocated, allocated);
}

static void expect_clean_leaks_ok(struct vmdk_disk *d)
{
	struct vmdk_check_result res;

	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	if (res.errors)
		fail_msg("check found %u errors", res.errors);
}

/* ---- corpus -------------------------------------------------------------------------
 */

struct corpus_case {
	const char *rel; /* file to open */
	const char *key; /* INDEX.md text before its sha256 */
	enum vmdk_extent_kind kind;
};

static const struct corpus_case corpus[] = {
    {"synthetic/cowd/test.vmdk", "`cowd/`", VMDK_EXT_COWD},
    {"synthetic/cowd/test-delta.vmdk", "`cowd/`", VMDK_EXT_COWD},
    {"synthetic/sesparse/disk.vmdk", "`sesparse/`", VMDK_EXT_SESPARSE},
    {"synthetic/sesparse/disk-sesparse.vmdk", "`sesparse/`", VMDK_EXT_SESPARSE},
    {"dissect.hypervisor/sesparse-wrapper.vmdk", "`dissect.hypervisor/sesparse.vmdk`",
     VMDK_EXT_SESPARSE},
    {"dissect.hypervisor/sesparse.vmdk", "`dissect.hypervisor/sesparse.vmdk`",
     VMDK_EXT_SESPARSE},
};

static void test_corpus_sha256(void **state)
{
	unsigned done = 0;

	(void)state;
	for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
		char *p = vdt_corpus_path(corpus[i].rel), want[65], got[65];
		struct vmdk_extent_info ei;
		struct vmdk_disk *d;
		int rc;

		if (!p || !vdt_index_sha256(corpus[i].key, want)) {
			free(p);
			continue;
		}
		d = open_ok(p);
		assert_int_equal(vmdk_extent_info_get(d, 0, &ei), 0);
		assert_int_equal(ei.kind, corpus[i].kind);
		rc = vdt_disk_sha256(d, 64u << 20, got);
		if (rc && rc != -ENOTSUP)
			fail_msg("%s: read failed %d: %s", corpus[i].rel, rc,
				 vdt_last_msg);
		if (!rc && strcmp(got, want))
			fail_msg("%s: sha256 %s, INDEX.md says %s", corpus[i].rel, got,
				 want);
		expect_clean(d, UINT64_MAX);
		vmdk_close(d);
		free(p);
		done += !rc;
	}
	if (!done)
		skip();
}

static void test_corpus_cowd_facts(void **state)
{
	char *p = vdt_corpus_path("synthetic/cowd/test.vmdk");
	struct vmdk_extent_info ei;
	struct vmdk_disk *d;

	(void)state;
	if (!p)
		skip();
	d = open_ok(p);
	expect_bytes(d, 3 * 512, 512, 'C');
	expect_bytes(d, 4095 * 512, 512, 'D');
	expect_bytes(d, 4096 * 512, 12288 * 512, 0);
	expect_bs(d, 0, 1 << 20, VMDK_BS_UNALLOC, 3 * 512);
	expect_bs(d, 3 * 512, 1 << 20, VMDK_BS_DATA, 512);
	expect_bs(d, 4 * 512, 8 << 20, VMDK_BS_UNALLOC, 4091 * 512);
	assert_int_equal(vmdk_grain_size(d), 512);
	assert_int_equal(vmdk_extent_info_get(d, 0, &ei), 0);
	assert_int_equal(ei.grain_size_sectors, 1);
	assert_int_equal(ei.nr_gtes_per_gt, 4096);
	assert_int_equal(ei.allocated, 1024);
	expect_clean(d, 1024);
	vmdk_close(d);
	free(p);
}

static void test_corpus_sesparse_facts(void **state)
{
	char *p = vdt_corpus_path("synthetic/sesparse/disk.vmdk");
	char *q = vdt_corpus_path("dissect.hypervisor/sesparse-wrapper.vmdk");
	struct vmdk_disk *d;

	(void)state;
	if (!p || !q)
		skip();
	d = open_ok(p);
	expect_bytes(d, 0, 4096, 'S');
	expect_bytes(d, 4096, 3 * 4096, 0);
	expect_bytes(d, 4101 * 4096ull, 4096, 'T');
	expect_bs(d, 0, 1 << 20, VMDK_BS_DATA, 4096);
	expect_bs(d, 4096, 1 << 20, VMDK_BS_ZERO, 2 * 4096); /* zeroed, unmapped */
	expect_bs(d, 3 * 4096, 32 << 20, VMDK_BS_UNALLOC, 4098 * 4096ull);
	assert_int_equal(vmdk_grain_size(d), 4096);
	expect_clean(d, 2 * 4096);
	vmdk_close(d);
	d = open_ok(q);
	expect_bytes(d, 0, 16 << 20, 'a');
	vmdk_close(d);
	free(p);
	free(q);
}

/* ---- hand-built extents (the corpus mk.py layouts)
 * ------------------------------------------ */

#define COWD_SECTORS 39
static void mk_cowd(uint8_t *f)
{
	memset(f, 0, COWD_SECTORS * 512);
	memcpy(f, "COWD", 4);
	put_le32(f + 4, 1);
	put_le32(f + 8, 3);
	put_le32(f + 12, 16384); /* 8 MiB */
	put_le32(f + 16, 1);	 /* grain: 1 sector */
	put_le32(f + 20, 4);	 /* GD at sector 4 */
	put_le32(f + 24, 4);	 /* 4 GD entries of 4096 grains */
	put_le32(f + 28, 39);
	put_le32(f + 4 * 512, 5);	   /* GD[0] -> GT at sector 5 */
	put_le32(f + 5 * 512 + 3 * 4, 37); /* sector 3 -> 37 */
	put_le32(f + 5 * 512 + 4095 * 4, 38);
	memset(f + 37 * 512, 'C', 512);
	memset(f + 38 * 512, 'D', 512);
}

#define SES_SECTORS 400
static uint64_t ses_enc(uint64_t idx)
{
	return 0x3000000000000000ull | (idx & 0xfff) << 48 | idx >> 12;
}

static void mk_sesparse(uint8_t *f)
{
	static const uint64_t h[26] = {
	    0xcafebabe, 0x200000001, 65536, 8, 64, 0, 0,   0,	0, 0,	1, 1,	2,
	    1,		3,	     1,	    4, 1,  8, 128, 200, 1, 201, 1, 256, 144};

	memset(f, 0, SES_SECTORS * 512);
	for (int i = 0; i < 26; i++)
		put_le64(f + 8 * i, h[i]);
	put_le64(f + 512, 0xcafecafe);
	put_le64(f + 512 + 8, 1);
	put_le64(f + 4 * 512, 0x1000000000000000ull);
	put_le64(f + 4 * 512 + 8, 0x1000000000000001ull);
	put_le64(f + 8 * 512, ses_enc(0));
	put_le64(f + 8 * 512 + 8, 0x2000000000000000ull);
	put_le64(f + 8 * 512 + 16, 0x1000000000000000ull);
	put_le64(f + 72 * 512 + 5 * 8, ses_enc(1));
	memset(f + 256 * 512, 'S', 4096);
	memset(f + 264 * 512, 'T', 4096);
}

static void limit_memory(void)
{
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	struct rlimit rl = {1ull << 30, 1ull << 30};
	setrlimit(RLIMIT_AS, &rl);
#endif
}

/* Write the image (and a descriptor of `desc_sectors` when non-zero), open
 * it, read everything; return the first error. */
static int try_image(const uint8_t *f, size_t len, const char *type,
		     uint64_t desc_sectors)
{
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "bad-extent.vmdk");
	char *desc = vdt_join(dir, "bad.vmdk"), text[512];
	const char *open_path = desc_sectors ? desc : ext;
	struct vmdk_disk *d = NULL;
	int rc;

	assert_int_equal(vdt_write_file(ext, f, len), 0);
	snprintf(text, sizeof text,
		 "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
		 "createType=\"custom\"\n\n# Extent description\nRW %llu %s "
		 "\"bad-extent.vmdk\"\n\n# The Disk Data Base\n#DDB\n",
		 (unsigned long long)desc_sectors, type);
	assert_int_equal(vdt_write_file(desc, text, strlen(text)), 0);
	vdt_last_msg[0] = 0;
	rc = vmdk_open(open_path, VMDK_OPEN_RDONLY, NULL, &d);
	if (!rc) {
		uint64_t cap = vmdk_capacity(d);
		uint8_t *buf = malloc(cap);
		assert_non_null(buf);
		rc = vmdk_pread(d, buf, cap, 0);
		if (!rc) /* the whole map too */
			for (uint64_t off = 0, run; !rc && off < cap; off += run) {
				enum vmdk_bs k;
				rc = vmdk_block_status(d, off, cap - off, &k, &run);
			}
		free(buf);
		vmdk_close(d);
	}
	vdt_rmtree(dir);
	free(dir);
	free(ext);
	free(desc);
	return rc;
}

static void expect_refused(const char *what, const uint8_t *f, size_t len,
			   const char *type, uint64_t desc_sectors, const char *word)
{
	int rc = try_image(f, len, type, desc_sectors);

	if (rc >= 0)
		fail_msg("%s: accepted", what);
	if (!strstr(vdt_last_msg, "bad") || (word && !strstr(vdt_last_msg, word)))
		fail_msg("%s: message \"%s\" should name the file and say \"%s\"", what,
			 vdt_last_msg, word ? word : "");
}

static void test_built_ok(void **state)
{
	uint8_t *f = malloc(SES_SECTORS * 512);

	(void)state;
	mk_cowd(f);
	assert_int_equal(try_image(f, COWD_SECTORS * 512, "VMFSSPARSE", 16384), 0);
	assert_int_equal(try_image(f, COWD_SECTORS * 512, "VMFSSPARSE", 0), 0);
	mk_sesparse(f);
	assert_int_equal(try_image(f, SES_SECTORS * 512, "SESPARSE", 65536), 0);
	assert_int_equal(try_image(f, SES_SECTORS * 512, "SESPARSE", 0), 0);
	free(f);
}

struct cowd_mut {
	const char *what;
	unsigned off;
	uint32_t value;
	uint64_t desc_sectors;
	const char *word;
};

static void test_cowd_hostile(void **state)
{
	static const struct cowd_mut m[] = {
	    {"magic", 0, 0x44574f44, 0, NULL},
	    {"version 2", 4, 2, 0, "version"},
	    {"capacity 0", 12, 0, 0, "numSectors"},
	    {"grainSize 0", 16, 0, 0, "grainSize"},
	    {"grainSize 2^20", 16, 1u << 20, 0, "grainSize"},
	    {"gdOffset 0", 20, 0, 0, "gdOffset"},
	    {"gdOffset past EOF", 20, 0x10000000, 0, NULL},
	    {"numGDEntries 3", 24, 3, 0, "numGDEntries"},
	    {"capacity 2^32-1", 12, 0xffffffffu, 0, "numGDEntries"},
	    {"capacity below descriptor", 12, 8192, 16384, "numSectors"},
	    {"GD entry past EOF", 4 * 512, 0x7fffffff, 0, NULL},
	    {"GD entry in the header", 4 * 512, 1, 0, NULL},
	    {"GTE past EOF", 5 * 512 + 4095 * 4, 0x7fffffff, 0, NULL},
	};
	uint8_t f[COWD_SECTORS * 512];

	(void)state;
	limit_memory();
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
		mk_cowd(f);
		put_le32(f + m[i].off, m[i].value);
		expect_refused(m[i].what, f, sizeof f, "VMFSSPARSE", m[i].desc_sectors,
			       m[i].word);
	}
}

struct ses_mut {
	const char *what;
	unsigned off;
	uint64_t value;
	const char *word;
};

static void test_sesparse_hostile(void **state)
{
	static const struct ses_mut m[] = {
	    {"version", 8, 0x200000002, "version"},
	    {"capacity 0", 16, 0, "capacity"},
	    {"capacity 2^60", 16, 1ull << 60, "capacity"},
	    {"grain_size 16", 24, 16, "grain_size"},
	    {"grain_table_size 128", 32, 128, "grain_table_size"},
	    {"flags", 40, 1, "flags"},
	    {"reserved", 56, 1, "reserved"},
	    {"padding", 300, 1, "padding"},
	    {"volatile offset 0", 80, 0, "volatile_header"},
	    {"journal offset 2^63", 112, 1ull << 63, "journal"},
	    {"grain_dir size overflow", 136, UINT64_MAX, "grain_dir"},
	    {"grain_dir too small", 136, 0, "grain_dir"},
	    {"volatile magic", 512, 0xcafebabe, "volatile"},
	    {"replay_journal", 512 + 24, 1, "journal"},
	    {"GD entry type", 4 * 512, 0x2000000000000000ull, "directory"},
	    {"GD entry index", 4 * 512, 0x1000000000000002ull, "directory"},
	    {"GTE type 5", 8 * 512 + 24, 0x5000000000000000ull, "table entry"},
	    {"GTE type 0 not zero", 8 * 512 + 24, 0x42, "table entry"},
	    {"GTE cluster past grains", 8 * 512 + 24, 0x3000000000000100ull,
	     "table entry"},
	};
	uint8_t *f = malloc(SES_SECTORS * 512);

	(void)state;
	limit_memory();
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
		mk_sesparse(f);
		put_le64(f + m[i].off, m[i].value);
		expect_refused(m[i].what, f, SES_SECTORS * 512, "SESPARSE", 0, m[i].word);
	}
	free(f);
}

/* ---- COWD writes
 * -------------------------------------------------------------------------- */

/* A COWD delta with grainSize gs sectors and nothing allocated: header,
 * GD at sector 4 (numGDEntries 1), freeSector 5. */
static size_t mk_cowd_empty(uint8_t *f, uint32_t cap_sectors, uint32_t gs)
{
	memset(f, 0, 5 * 512);
	memcpy(f, "COWD", 4);
	put_le32(f + 4, 1);
	put_le32(f + 8, 3);
	put_le32(f + 12, cap_sectors);
	put_le32(f + 16, gs);
	put_le32(f + 20, 4);
	put_le32(f + 24, VD_DIV_ROUND_UP(cap_sectors, 4096 * gs));
	put_le32(f + 28, 5);
	return 5 * 512;
}

static int backing_p(void *opaque, void *buf, size_t len, uint64_t off)
{
	(void)opaque;
	(void)off;
	memset(buf, 'P', len);
	return 0;
}

/* Writes through a descriptor; the expected content mirrors them. */
static void cowd_write_script(struct vmdk_disk *d, uint8_t *raw, uint64_t cap,
			      bool backing)
{
	static const struct {
		uint64_t off;
		size_t len;
		int byte;
	} w[] = {
	    {3 * 512, 512, 'w'},	/* an allocated grain, in place */
	    {5000 * 512 + 7, 100, 'x'}, /* partial: fill from below */
	    {4095 * 512, 3 * 512, 'y'}, /* across a GT boundary */
	    {16383 * 512, 512, 'z'},	/* last sector */
	    {5000 * 512 + 50, 20, 'v'}, /* the same grain again */
	};

	for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
		uint8_t buf[4096];
		uint64_t gs = vmdk_grain_size(d);
		memset(buf, w[i].byte, w[i].len);
		for (uint64_t b = w[i].off / gs * gs; backing && b < w[i].off + w[i].len;
		     b += gs) {
			enum vmdk_bs k;
			uint64_t run;
			assert_int_equal(vmdk_block_status(d, b, 1, &k, &run), 0);
			if (k == VMDK_BS_UNALLOC) /* newly allocated: the parent shows */
				memset(raw + b, 'P', VD_MIN(gs, cap - b));
		}
		assert_int_equal(vmdk_pwrite(d, buf, w[i].len, w[i].off), 0);
		memcpy(raw + w[i].off, buf, w[i].len);
	}
}

static void cowd_write_case(const uint8_t *img, size_t img_len, const uint8_t *base,
			    uint32_t gs)
{
	const uint64_t cap = 16384 * 512ull;
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "w-delta.vmdk");
	char *desc = vdt_join(dir, "w.vmdk"), *rawp = vdt_join(dir, "w.raw"), cmd[8400];
	const char *text =
	    "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
	    "createType=\"vmfsSparse\"\n\n# Extent description\n"
	    "RW 16384 VMFSSPARSE \"w-delta.vmdk\"\n\n# The Disk Data Base\n#DDB\n";
	uint8_t *raw = malloc(cap), h[2048];
	struct vmdk_disk *d;
	size_t len = 0;

	memcpy(raw, base, cap);
	assert_int_equal(vdt_write_file(ext, img, img_len), 0);
	assert_int_equal(vdt_write_file(desc, text, strlen(text)), 0);
	d = open_ok_rw(desc);
	assert_int_equal(vmdk_grain_size(d), gs * 512);
	vmdk_set_backing(d, backing_p, NULL);
	cowd_write_script(d, raw, cap, true);
	assert_int_equal(vmdk_close(d), 0);

	assert_int_equal(vdt_peek(ext, h, sizeof h, 0), 0);
	assert_int_equal(get_le32(h + 1648), 0); /* uncleanShutdown cleared */
	free(vdt_slurp(ext, &len));
	assert_int_equal(get_le32(h + 28), len / 512); /* freeSector = end */
	d = open_ok(desc);
	expect_clean(d, 0xffffffffffffffffull);
	for (uint64_t off = 0; off < cap; off += 1 << 20) {
		uint8_t buf[1 << 16];
		for (uint64_t o = off; o < off + (1 << 20); o += sizeof buf) {
			assert_int_equal(vmdk_pread(d, buf, sizeof buf, o), 0);
			if (memcmp(buf, raw + o, sizeof buf))
				fail_msg("gs %u: content differs at %llu", gs,
					 (unsigned long long)o);
		}
	}
	vmdk_close(d);
	if (vdt_have("qemu-img") && gs == 1) { /* qemu reads COWD without a backing */
		uint8_t *q = malloc(cap);
		memcpy(q, base, cap);
		d = open_ok(desc);
		assert_int_equal(vmdk_pread(d, q, cap, 0), 0);
		vmdk_close(d);
		assert_int_equal(vdt_write_file(rawp, q, cap), 0);
		snprintf(cmd, sizeof cmd, "qemu-img compare -q -f vmdk -F raw '%s' '%s'",
			 desc, rawp);
		assert_int_equal(system(cmd), 0);
		snprintf(cmd, sizeof cmd, "qemu-img check -q -f vmdk '%s'", desc);
		assert_int_equal(system(cmd), 0);
		free(q);
	}
	free(raw);
	vdt_rmtree(dir);
	free(dir);
	free(ext);
	free(desc);
	free(rawp);
}

static void test_cowd_write(void **state)
{
	const uint64_t cap = 16384 * 512ull;
	uint8_t *f = malloc(SES_SECTORS * 512), *base = calloc(1, cap);

	(void)state;
	mk_cowd(f); /* sector 3 'C', 4095 'D' allocated */
	memset(base + 3 * 512, 'C', 512);
	memset(base + 4095 * 512, 'D', 512);
	cowd_write_case(f, COWD_SECTORS * 512, base, 1);
	memset(base, 0, cap);
	cowd_write_case(f, mk_cowd_empty(f, 16384, 8), base, 8);
	free(f);
	free(base);
}

/* A COWD header whose freeSector points into the header: writes still go
 * past the directory and the end of the file, never over the header. */
static void test_cowd_bad_free_sector(void **state)
{
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "f-delta.vmdk");
	char *desc = vdt_join(dir, "f.vmdk");
	const char *text =
	    "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
	    "createType=\"vmfsSparse\"\n\n# Extent description\n"
	    "RW 16384 VMFSSPARSE \"f-delta.vmdk\"\n\n# The Disk Data Base\n#DDB\n";
	uint8_t img[5 * 512], buf[512];
	struct vmdk_disk *d;

	(void)state;
	mk_cowd_empty(img, 16384, 1);
	put_le32(img + 28, 1); /* freeSector inside the header */
	assert_int_equal(vdt_write_file(ext, img, sizeof img), 0);
	assert_int_equal(vdt_write_file(desc, text, strlen(text)), 0);
	d = open_ok_rw(desc);
	memset(buf, 'h', sizeof buf);
	assert_int_equal(vmdk_pwrite(d, buf, sizeof buf, 0), 0);
	assert_int_equal(vmdk_close(d), 0);
	assert_int_equal(vdt_peek(ext, buf, 4, 0), 0);
	assert_memory_equal(buf, "COWD", 4);
	d = open_ok(desc);
	expect_bytes(d, 0, 512, 'h');
	expect_clean(d, 512);
	vmdk_close(d);
	vdt_rmtree(dir);
	free(dir);
	free(ext);
	free(desc);
}

/* Threads writing interleaved sectors of shared 8-sector grains at once:
 * grain allocation (with the fill of the rest of the grain) is serialised
 * by the disk lock, so no thread's sector is lost. */
struct writer {
	struct vmdk_disk *d;
	int id, bad;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t buf[512];

	for (uint64_t s = (uint64_t)w->id; s < 16384; s += 4 * 7) {
		memset(buf, 'a' + w->id, sizeof buf);
		put_le64(buf, s);
		w->bad += vmdk_pwrite(w->d, buf, sizeof buf, s * 512) != 0;
	}
	return NULL;
}

static void test_cowd_parallel_writes(void **state)
{
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "p-delta.vmdk");
	char *desc = vdt_join(dir, "p.vmdk");
	const char *text =
	    "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
	    "createType=\"vmfsSparse\"\n\n# Extent description\n"
	    "RW 16384 VMFSSPARSE \"p-delta.vmdk\"\n\n# The Disk Data Base\n#DDB\n";
	uint8_t img[5 * 512], buf[512], want[512];
	struct writer w[4];
	pthread_t th[4];
	struct vmdk_disk *d;

	(void)state;
	assert_int_equal(vdt_write_file(ext, img, mk_cowd_empty(img, 16384, 8)), 0);
	assert_int_equal(vdt_write_file(desc, text, strlen(text)), 0);
	d = open_ok_rw(desc);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){d, i, 0};
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].bad, 0);
	}
	assert_int_equal(vmdk_close(d), 0);
	d = open_ok(desc);
	for (uint64_t s = 0; s < 16384; s++) {
		bool written = s % 28 < 4;
		memset(want, written ? 'a' + (int)(s % 28) : 0, sizeof want);
		if (written)
			put_le64(want, s);
		assert_int_equal(vmdk_pread(d, buf, sizeof buf, s * 512), 0);
		if (memcmp(buf, want, sizeof buf))
			fail_msg("sector %llu lost", (unsigned long long)s);
	}
	expect_clean(d, UINT64_MAX);
	vmdk_close(d);
	vdt_rmtree(dir);
	free(dir);
	free(ext);
	free(desc);
}

/* Crash test of COWD allocation: the operation (an in-place write, a
 * write allocating a grain and a GT, one allocating a grain in an existing
 * GT) is cut after each prefix of its writes, with and without unsynced
 * writes dropped; the delta must then open, check without errors, and
 * every sector touched read its old or its new content (all new once
 * nothing was cut). */
struct crash_region {
	uint64_t sector;
	int old_byte, new_byte;
	size_t new_len;
};

static const struct crash_region crash_regions[] = {
    {3, 'C', 'N', 512},
    {5000, 0, 'M', 100},
    {10, 0, 'Q', 512},
};

static long cowd_crash_op(const char *desc, long budget, bool drop, bool *crashed)
{
	struct vd_faultio *fi;
	struct vmdk_disk *d;
	long writes;

	assert_int_equal(vd_faultio_create(budget, drop, &fi), 0);
	if (!vmdk_open(desc, VMDK_OPEN_RDWR, vd_faultio_io(fi), &d)) {
		for (size_t i = 0; i < 3; i++) {
			uint8_t buf[512];
			const struct crash_region *r = &crash_regions[i];
			memset(buf, r->new_byte, r->new_len);
			if (vmdk_pwrite(d, buf, r->new_len, r->sector * 512))
				break;
		}
		vmdk_close(d);
	}
	*crashed = vd_faultio_crashed(fi);
	writes = vd_faultio_writes(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	return writes;
}

static void cowd_crash_verify(const char *desc, bool all_new)
{
	struct vmdk_disk *d = NULL;
	uint8_t buf[512], old[512], new[512];

	assert_int_equal(vmdk_open(desc, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d),
			 0);
	for (size_t i = 0; i < 3; i++) {
		const struct crash_region *r = &crash_regions[i];
		memset(old, r->old_byte, sizeof old);
		memset(new, r->old_byte, sizeof new);
		memset(new, r->new_byte, r->new_len);
		assert_int_equal(vmdk_pread(d, buf, sizeof buf, r->sector * 512), 0);
		if (memcmp(buf, new, sizeof buf) &&
		    (all_new || memcmp(buf, old, sizeof buf)))
			fail_msg("sector %llu is neither old nor new (byte 0x%02x)",
				 (unsigned long long)r->sector, buf[0]);
	}
	expect_clean_leaks_ok(d);
	vmdk_close(d);
}

static void test_cowd_crash(void **state)
{
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "k-delta.vmdk");
	char *desc = vdt_join(dir, "k.vmdk");
	const char *text =
	    "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
	    "createType=\"vmfsSparse\"\n\n# Extent description\n"
	    "RW 16384 VMFSSPARSE \"k-delta.vmdk\"\n\n# The Disk Data Base\n#DDB\n";
	uint8_t img[COWD_SECTORS * 512];
	bool crashed;
	long total;

	(void)state;
	mk_cowd(img);
	assert_int_equal(vdt_write_file(ext, img, sizeof img), 0);
	assert_int_equal(vdt_write_file(desc, text, strlen(text)), 0);
	total = cowd_crash_op(desc, 1000000, true, &crashed);
	assert_false(crashed);
	assert_true(total > 3);
	for (int drop = 0; drop < 2; drop++)
		for (long k = 0; k <= total; k++) {
			/* a crash can leave vmdk_desc_write's temporary behind */
			char *tmp = vdt_join(dir, "k.vmdk.vdelta-tmp");
			unlink(tmp);
			free(tmp);
			assert_int_equal(vdt_write_file(ext, img, sizeof img), 0);
			assert_int_equal(vdt_write_file(desc, text, strlen(text)), 0);
			cowd_crash_op(desc, k, drop, &crashed);
			cowd_crash_verify(desc, !crashed);
		}
	vdt_rmtree(dir);
	free(dir);
	free(ext);
	free(desc);
}

/* check counts bad seSparse entries as errors and goes on */
static void test_sesparse_check(void **state)
{
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "c-sesparse.vmdk");
	uint8_t *f = malloc(SES_SECTORS * 512);
	struct vmdk_check_result res;
	struct vmdk_disk *d;

	(void)state;
	mk_sesparse(f);
	put_le64(f + 8 * 512 + 24, 0x5000000000000000ull); /* GT0[3] */
	put_le64(f + 8 * 512 + 32, 0x3000000000000100ull); /* GT0[4] */
	put_le64(f + 4 * 512 + 8, 0x1000000000000009ull);  /* GD[1] */
	assert_int_equal(vdt_write_file(ext, f, SES_SECTORS * 512), 0);
	d = open_ok(ext);
	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	assert_int_equal(res.errors, 3);
	assert_int_equal(res.allocated, 4096); /* grain 0 still counted */
	vmdk_close(d);
	free(f);
	vdt_rmtree(dir);
	free(dir);
	free(ext);
}


/* ---- seSparse writes ----------------------------------------------------------------- */

/* 40 MiB + 1.5 KiB: three GTs, the last grain partial */
#define SESW_CAP ((40ull << 20) + 1536)

struct ses_op {
	uint64_t off;
	size_t len;
	int byte; /* -1: a zero write */
};

static const struct ses_op ses_script[] = {
    {1000, 100, 'a'},		       /* partial, new GT: rest from below */
    {8192, 4096, 'b'},		       /* a whole grain */
    {(16 << 20) - 2000, 5000, 'c'},   /* across GT 0/1: a second new GT */
    {20480, 3 * 4096, -1},	       /* whole zero grains over nothing */
    {8192 + 10, 100, -1},	       /* partial zeros into data */
    {1 << 20, 4096, 'd'},	       /* a grain, freed again next */
    {1 << 20, 4096, -1},	       /* data -> zero grain, cluster freed */
    {20480 + 100, 50, 'e'},	       /* into a zero grain: rest zeros */
    {SESW_CAP - 700, 700, 'f'},	       /* the partial last grain */
    {1000 + 10, 10, 'g'},	       /* in place */
    {(32 << 20) + 4096 * 9, 4096, -1}, /* zero grain in a third new GT */
};

/* Apply ops to d and to raw (what the disk shows over a parent of 'P'). */
static void ses_apply(struct vmdk_disk *d, uint8_t *raw, const struct ses_op *ops,
		      size_t n)
{
	static uint8_t buf[4 * 4096];

	for (size_t i = 0; i < n; i++) {
		const struct ses_op *o = &ops[i];
		for (uint64_t b = o->off / 4096 * 4096; b < o->off + o->len; b += 4096) {
			enum vmdk_bs k;
			uint64_t run;
			assert_int_equal(vmdk_block_status(d, b, 1, &k, &run), 0);
			if (k == VMDK_BS_ZERO) /* a zero grain: the parent no longer shows */
				memset(raw + b, 0, VD_MIN(4096, SESW_CAP - b));
		}
		memset(buf, o->byte < 0 ? 0 : o->byte, o->len);
		if (o->byte < 0)
			assert_int_equal(vmdk_pwrite_zeroes(d, o->len, o->off), 0);
		else
			assert_int_equal(vmdk_pwrite(d, buf, o->len, o->off), 0);
		memcpy(raw + o->off, buf, o->len);
	}
}

/* Every grain of d reads as raw (unallocated grains: raw shows 'P'). */
static void ses_expect_content(struct vmdk_disk *d, const uint8_t *raw)
{
	static uint8_t buf[4096], p[4096];

	memset(p, 'P', sizeof p);
	for (uint64_t b = 0; b < SESW_CAP; b += 4096) {
		size_t n = (size_t)VD_MIN(4096, SESW_CAP - b);
		enum vmdk_bs k;
		uint64_t run;
		assert_int_equal(vmdk_block_status(d, b, n, &k, &run), 0);
		assert_int_equal(vmdk_pread(d, buf, n, b), 0);
		if (memcmp(k == VMDK_BS_UNALLOC ? p : buf, raw + b, n))
			fail_msg("grain at %llu (kind %d) differs", (unsigned long long)b, k);
	}
}

static char *ses_new_disk(const char *dir)
{
	char *desc = vdt_join(dir, "w.vmdk");
	struct vmdk_create_opts o = {.capacity = SESW_CAP, .subformat = VMDK_SESPARSE,
				     .parent_cid = 0x1234, .parent_hint = "p.vmdk"};

	assert_int_equal(vmdk_create(desc, &o, NULL), 0);
	return desc;
}

static void test_sesparse_write(void **state)
{
	char *dir = vdt_mkdtemp("esx"), *desc = ses_new_disk(dir);
	uint8_t *raw = malloc(SESW_CAP);
	struct vmdk_check_result res;
	struct vmdk_disk *d;

	(void)state;
	memset(raw, 'P', SESW_CAP);
	d = open_ok_rw(desc);
	vmdk_set_backing(d, backing_p, NULL);
	ses_apply(d, raw, ses_script, sizeof ses_script / sizeof ses_script[0]);
	ses_expect_content(d, raw);
	assert_int_equal(vmdk_close(d), 0);
	d = open_ok(desc);
	ses_expect_content(d, raw);
	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.warnings, 0);
	assert_int_equal(res.leaked, 0);
	/* grains 0 (a), 2 (b), 4095-4096 (c), 5 (e), 10240 (f) hold data */
	assert_int_equal(res.allocated, 6 * 4096);
	vmdk_close(d);
	free(raw);
	vdt_rmtree(dir);
	free(dir);
	free(desc);
}

/* Crash test of seSparse writes: a disk holding grains 256 and 300 ('O')
 * gets an allocating write of three grains in a new GT, one of three
 * grains in an existing GT, a zero
 * write over grain 256 and an in-place write into grain 300; cut after
 * each prefix of its writes, with and without unsynced writes dropped, it
 * must open, check without errors or map warnings, and each grain read old
 * or new. */
static const struct ses_op ses_crash_ops[] = {
    {(20 << 20) + 100, 9000, 'N'}, /* three grains in a new GT 1 */
    {4096 * 3 - 10, 4096 + 20, 'M'}, /* a run of three in the existing GT 0 */
    {4096 * 256, 4096, -1},	  /* data -> zero grain */
    {4096 * 300 + 8, 8, 'Q'},	  /* in place */
};

static long ses_crash_op(const char *desc, long budget, bool drop, bool *crashed)
{
	struct vd_faultio *fi;
	struct vmdk_disk *d;
	uint8_t *raw = malloc(SESW_CAP);
	long writes;

	assert_int_equal(vd_faultio_create(budget, drop, &fi), 0);
	if (!vmdk_open(desc, VMDK_OPEN_RDWR, vd_faultio_io(fi), &d)) {
		for (size_t i = 0; i < 4; i++) {
			const struct ses_op *o = &ses_crash_ops[i];
			static uint8_t buf[16384];
			memset(buf, o->byte < 0 ? 0 : o->byte, o->len);
			if ((o->byte < 0 ? vmdk_pwrite_zeroes(d, o->len, o->off)
					 : vmdk_pwrite(d, buf, o->len, o->off)))
				break;
		}
		vmdk_close(d);
	}
	*crashed = vd_faultio_crashed(fi);
	writes = vd_faultio_writes(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	free(raw);
	return writes;
}

/* Each op's bytes read all old or all new (all new when nothing was cut). */
static void ses_crash_verify(const char *desc, bool all_new)
{
	static const int old_byte[4] = {0, 0, 'O', 'O'};
	struct vmdk_disk *d = NULL;
	struct vmdk_check_result res;
	static uint8_t buf[16384], old[16384], new[16384];

	assert_int_equal(vmdk_open(desc, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d),
			 0);
	for (size_t i = 0; i < 4; i++) {
		const struct ses_op *o = &ses_crash_ops[i];
		int nb = o->byte < 0 ? 0 : o->byte;
		memset(old, old_byte[i], o->len);
		memset(new, nb, o->len);
		assert_int_equal(vmdk_pread(d, buf, o->len, o->off), 0);
		if (memcmp(buf, new, o->len) && (all_new || memcmp(buf, old, o->len)))
			fail_msg("op %zu: neither old nor new (0x%02x)", i, buf[0]);
	}
	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	if (res.errors || res.warnings)
		fail_msg("check: %u errors %u warnings", res.errors, res.warnings);
	vmdk_close(d);
}

static void restore(const char *path, const uint8_t *img, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	for (size_t at = 0; at < len; at += 4096) /* keep the holes */
		if (!vd_is_zero(img + at, VD_MIN(4096, len - at)))
			assert_true(pwrite(fd, img + at, VD_MIN(4096, len - at), (off_t)at) > 0);
	close(fd);
}

static void test_sesparse_crash(void **state)
{
	char *dir = vdt_mkdtemp("esx"), *desc = ses_new_disk(dir);
	char *ext = vdt_join(dir, "w-sesparse.vmdk"), *tmp = vdt_join(dir, "w.vmdk.vdelta-tmp");
	uint8_t *img, *text, buf[4096];
	size_t img_len = 0, text_len = 0;
	struct vmdk_disk *d = open_ok_rw(desc);
	bool crashed;
	long total;

	(void)state;
	memset(buf, 'O', sizeof buf);
	assert_int_equal(vmdk_pwrite(d, buf, sizeof buf, 4096 * 256), 0);
	assert_int_equal(vmdk_pwrite(d, buf, sizeof buf, 4096 * 300), 0);
	assert_int_equal(vmdk_close(d), 0);
	img = vdt_slurp(ext, &img_len);
	text = vdt_slurp(desc, &text_len);
	total = ses_crash_op(desc, 1000000, true, &crashed);
	assert_false(crashed);
	assert_true(total > 8);
	for (int drop = 0; drop < 2; drop++)
		for (long k = 0; k <= total; k++) {
			unlink(tmp);
			restore(ext, img, img_len);
			assert_int_equal(vdt_write_file(desc, text, text_len), 0);
			ses_crash_op(desc, k, drop, &crashed);
			ses_crash_verify(desc, !crashed);
		}
	free(img);
	free(text);
	vdt_rmtree(dir);
	free(dir);
	free(desc);
	free(ext);
	free(tmp);
}

/* ---- truncated and oversized seSparse ------------------------------------------------ */

/* Opens the truncated image, reads it all and checks it; the read must be
 * refused naming the file and `word`, check must count an error, and the
 * file must be unchanged. */
static void expect_truncated_refused(const char *what, const uint8_t *f, size_t len,
				     uint64_t read_from, const char *word)
{
	char *dir = vdt_mkdtemp("esx"), *ext = vdt_join(dir, "trunc-sesparse.vmdk");
	struct vmdk_disk *d = NULL;
	uint8_t *after = malloc(len + 1), *buf = malloc(32 << 20);
	int rc;

	assert_int_equal(vdt_write_file(ext, f, len), 0);
	vdt_last_msg[0] = 0;
	rc = vmdk_open(ext, VMDK_OPEN_RDONLY, NULL, &d);
	if (!rc) {
		struct vmdk_check_result res;
		assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
		if (res.errors == 0)
			fail_msg("%s: check found no error", what);
		vdt_last_msg[0] = 0;
		rc = vmdk_pread(d, buf, vmdk_capacity(d) - read_from, read_from);
		vmdk_close(d);
	}
	if (rc >= 0)
		fail_msg("%s: read as if complete", what);
	if (!strstr(vdt_last_msg, "trunc-sesparse.vmdk") ||
	    !strstr(vdt_last_msg, "past the end of the file") ||
	    !strstr(vdt_last_msg, word))
		fail_msg("%s: message \"%s\" should name the file, \"%s\" and say past "
			 "the end of the file", what, vdt_last_msg, word);
	assert_int_equal(vdt_peek(ext, after, len, 0), 0);
	assert_memory_equal(after, f, len);
	vdt_rmtree(dir);
	free(dir);
	free(ext);
	free(after);
	free(buf);
}

static void test_sesparse_truncated(void **state)
{
	static const struct {
		const char *what;
		size_t len;
		uint64_t read_from;
		const char *word;
	} cut[] = {
	    {"in the volatile header", 512 + 100, 0, "volatile_header"},
	    {"in the journal header", 2 * 512 + 8, 0, "journal_header"},
	    {"in the directory", 4 * 512 + 12, 0, "grain_dir"},
	    {"in the first table", 8 * 512 + 100, 0, "grain table 0"},
	    {"in the second table", 100 * 512, 16 << 20, "grain table 1"},
	    {"in grain 0", 256 * 512 + 4000, 0, "grain 0 "},
	    {"before grain 4101", 264 * 512, 16 << 20, "grain 4101 "},
	};
	uint8_t *f = malloc(SES_SECTORS * 512);

	(void)state;
	mk_sesparse(f);
	for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++)
		expect_truncated_refused(cut[i].what, f, cut[i].len, cut[i].read_from,
					 cut[i].word);
	free(f);
}

/* Bytes of address space in use (VmSize). */
static uint64_t vm_size(void)
{
	char line[256];
	unsigned long long kb = 0;
	FILE *fp = fopen("/proc/self/status", "r");

	assert_non_null(fp);
	while (fgets(line, sizeof line, fp))
		if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
			break;
	fclose(fp);
	return (uint64_t)kb << 10;
}

/* In a child limited to 12 MiB more address space than it uses, headers
 * that claim a 64 TiB directory (32 MiB) or 2 TiB of COWD tables from a
 * file of a few sectors are refused as bad data, not as out of memory. */
static void expect_refused_small(const char *what, const uint8_t *f, size_t len,
				 const char *type)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;
		int rc;

		rl.rlim_cur = rl.rlim_max = vm_size() + (12u << 20);
		setrlimit(RLIMIT_AS, &rl);
		rc = try_image(f, len, type, 0);
		if (rc != -VD_EBADDATA)
			fprintf(stderr, "%s: rc %d (%s)\n", what, rc, vdt_last_msg);
		_exit(rc == -VD_EBADDATA ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fail_msg("%s: not refused as bad data under a 12 MiB memory bound", what);
}

static void test_hostile_sizes_bounded(void **state)
{
	uint8_t *f;

	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	skip(); /* the sanitizers reserve terabytes of address space */
#endif
	f = malloc(SES_SECTORS * 512);
	mk_sesparse(f);
	put_le64(f + 16, 64ull << 31);	     /* capacity 64 TiB */
	put_le64(f + 136, 1ull << 16);	     /* grain_dir_size: 32 MiB */
	put_le64(f + 152, 1ull << 28);	     /* grain_tables_size */
	put_le64(f + 200, 1ull << 40);	     /* grains_size */
	expect_refused_small("seSparse 64 TiB in 20 sectors", f, 20 * 512, "SESPARSE");
	mk_cowd(f);
	put_le32(f + 12, 0xffffffffu);	     /* numSectors: 2 TiB */
	put_le32(f + 24, 1u << 20);	     /* numGDEntries for grain 1 */
	expect_refused_small("COWD 2 TiB in 39 sectors", f, COWD_SECTORS * 512,
			     "VMFSSPARSE");
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus_sha256),
	    cmocka_unit_test(test_corpus_cowd_facts),
	    cmocka_unit_test(test_corpus_sesparse_facts),
	    cmocka_unit_test(test_built_ok),
	    cmocka_unit_test(test_cowd_write),
	    cmocka_unit_test(test_cowd_bad_free_sector),
	    cmocka_unit_test(test_cowd_parallel_writes),
	    cmocka_unit_test(test_cowd_crash),
	    cmocka_unit_test(test_cowd_hostile),
	    cmocka_unit_test(test_sesparse_hostile),
	    cmocka_unit_test(test_sesparse_check),
	    cmocka_unit_test(test_sesparse_write),
	    cmocka_unit_test(test_sesparse_crash),
	    cmocka_unit_test(test_sesparse_truncated),
	    cmocka_unit_test(test_hostile_sizes_bounded),
	};

	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
