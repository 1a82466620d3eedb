/* tests — unit tests of streamOptimized extents, vmdk/vmdk_stream.c (format
 * layer, through the public API plus vmdk_int.h for the limits).
 *
 * Oracles: the corpus streams read to the sha256 INDEX.md lists (and the
 * sector pattern qemu's own test checks in iotest-version3.vmdk); streams
 * built here by an independent writer (mk_*, zlib compress2, with every
 * variant: GD in the header or at the end, markers or not, type-4 markers,
 * grains bigger than a grain once compressed, grains inflating to zeros, a
 * partial last grain) read back to the content the builder kept, and
 * qemu-img agrees on them when installed; exports made by vmdk_create +
 * vmdk_pwrite + vmdk_close read back through vmdk_open, qemu-img compare,
 * qemu-img convert and vmdkinfo; hand-damaged streams are refused with a
 * message naming the file, under an address-space limit. */
#define _GNU_SOURCE
#include <setjmp.h> /* cmocka.h needs these three first */
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <sys/resource.h>
#include <zlib.h>

#include "vdt_corpus_hash.h"
#include "vmdk_int.h"

#define GD_AT_END UINT64_MAX

/* ---- an independent stream writer ---------------------------------------------------
 */

struct mk {
	uint8_t *file; /* image being built */
	size_t len, cap;
	uint8_t *raw; /* expected content */
	uint64_t cap_sectors, grain_sectors, overhead_sectors;
	uint32_t *gte; /* per grain */
	uint64_t nr_grains, nr_gd;
	bool markers, gd_at_end, progress;
	bool size_prefix; /* without markers: u32 size before the data */
	uint64_t gd_sector;
};

static uint64_t mk_gs(const struct mk *m) { return m->grain_sectors * VD_SECTOR; }

/* Append n bytes padded to a sector; n = 0 appends one zero sector. */
static void mk_put(struct mk *m, const void *p, size_t n)
{
	size_t padded = n ? VD_ROUND_UP(n, VD_SECTOR) : VD_SECTOR;

	if (m->len + padded > m->cap) {
		m->cap = (m->len + padded) * 2;
		m->file = realloc(m->file, m->cap);
		assert_non_null(m->file);
	}
	memcpy(m->file + m->len, p, n);
	memset(m->file + m->len + n, 0, padded - n);
	m->len += padded;
}

static void mk_marker(struct mk *m, uint64_t val, uint32_t size, uint32_t type)
{
	uint8_t s[VD_SECTOR] = {0};

	put_le64(s, val);
	put_le32(s + 8, size);
	put_le32(s + 12, type);
	mk_put(m, s, sizeof s);
}

static void mk_header(const struct mk *m, uint8_t *h, uint64_t gd)
{
	memset(h, 0, VD_SECTOR);
	memcpy(h, "KDMV", 4);
	put_le32(h + 4, 3);
	put_le32(h + 8, 0x10001u | (m->markers ? 0x20000u : 0));
	put_le64(h + 12, m->cap_sectors);
	put_le64(h + 20, m->grain_sectors);
	put_le64(h + 28, 1);
	put_le64(h + 36, 2);
	put_le32(h + 44, 512);
	put_le64(h + 56, gd);
	put_le64(h + 64, m->overhead_sectors);
	memcpy(h + 73, "\n \r\n", 4);
	put_le16(h + 77, 1);
}

static void mk_init(struct mk *m, uint64_t cap_sectors, uint64_t grain_sectors,
		    bool markers, bool gd_at_end)
{
	char desc[1024];
	int n;

	memset(m, 0, sizeof *m);
	m->cap_sectors = cap_sectors;
	m->grain_sectors = grain_sectors;
	m->markers = markers;
	m->gd_at_end = gd_at_end;
	m->overhead_sectors = VD_ROUND_UP(3, grain_sectors);
	m->nr_grains = VD_DIV_ROUND_UP(cap_sectors, grain_sectors);
	m->nr_gd = VD_DIV_ROUND_UP(m->nr_grains, 512);
	m->gte = calloc(m->nr_grains, 4);
	m->raw = calloc(1, cap_sectors * VD_SECTOR);
	assert_non_null(m->gte);
	assert_non_null(m->raw);
	mk_put(m, "", 0); /* header, written at the end */
	n = snprintf(
	    desc, sizeof desc,
	    "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
	    "createType=\"streamOptimized\"\n\n# Extent description\n"
	    "RW %llu SPARSE \"mk.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n"
	    "ddb.adapterType = \"ide\"\n",
	    (unsigned long long)cap_sectors);
	mk_put(m, desc, (size_t)n);
	while (m->len < m->overhead_sectors * VD_SECTOR)
		mk_put(m, "", 0);
	memset(m->file, 0, VD_SECTOR);
}

/* Grain g holding n bytes of data (n <= what fits in the capacity),
 * compressed at `level` (0: stored, bigger than the grain). */
static void mk_grain(struct mk *m, uint64_t g, const uint8_t *data, size_t n, int level)
{
	uLongf zlen = compressBound(n);
	uint8_t *z = malloc(12 + zlen);

	assert_non_null(z);
	assert_int_equal(compress2(z + 12, &zlen, data, n, level), Z_OK);
	if (m->progress)
		mk_marker(m, 0, 0, 4);
	m->gte[g] = (uint32_t)(m->len / VD_SECTOR);
	put_le64(z, g * m->grain_sectors);
	put_le32(z + 8, (uint32_t)zlen);
	if (m->markers)
		mk_put(m, z, 12 + zlen);
	else if (m->size_prefix)
		mk_put(m, z + 8, 4 + zlen);
	else
		mk_put(m, z + 12, zlen);
	memcpy(m->raw + g * mk_gs(m), data, n);
	free(z);
}

/* GTs with grains, GD, footer or not, EOS; header last. */
static void mk_finish(struct mk *m)
{
	uint32_t *gd = calloc(m->nr_gd, 4);
	uint8_t gt[2048], *gdb, h[VD_SECTOR];
	size_t gd_len = VD_ROUND_UP(m->nr_gd * 4, VD_SECTOR);

	for (uint64_t i = 0; i < m->nr_gd; i++) {
		bool any = false;
		for (unsigned j = 0; j < 512; j++) {
			uint64_t g = i * 512 + j;
			put_le32(gt + 4 * j, g < m->nr_grains ? m->gte[g] : 0);
			any |= g < m->nr_grains && m->gte[g];
		}
		if (!any)
			continue;
		if (m->markers)
			mk_marker(m, 4, 0, 1);
		gd[i] = (uint32_t)(m->len / VD_SECTOR);
		mk_put(m, gt, sizeof gt);
	}
	gdb = calloc(1, gd_len);
	for (uint64_t i = 0; i < m->nr_gd; i++)
		put_le32(gdb + 4 * i, gd[i]);
	if (m->markers)
		mk_marker(m, gd_len / VD_SECTOR, 0, 2);
	m->gd_sector = m->len / VD_SECTOR;
	mk_put(m, gdb, gd_len);
	if (m->gd_at_end) {
		mk_marker(m, 1, 0, 3);
		mk_header(m, h, m->gd_sector);
		mk_put(m, h, sizeof h);
	}
	mk_put(m, "", 0); /* EOS */
	mk_header(m, m->file, m->gd_at_end ? GD_AT_END : m->gd_sector);
	free(gd);
	free(gdb);
}

static void mk_free(struct mk *m)
{
	free(m->file);
	free(m->raw);
	free(m->gte);
}

static char *mk_save(const struct mk *m, const char *dir, const char *name)
{
	char *p = vdt_join(dir, name);

	assert_int_equal(vdt_write_file(p, m->file, m->len), 0);
	return p;
}

/* The standard test stream: 3 GTs (grain 16 sectors -> a GT covers 4 MiB),
 * GT 1 empty, a partial last grain compressed short. */
static void mk_standard(struct mk *m, bool markers, bool gd_at_end, bool progress)
{
	uint64_t gs, seed = 42;
	uint8_t *buf;

	mk_init(m, 16 * 1100 + 3, 16, markers, gd_at_end);
	m->progress = progress && markers;
	m->size_prefix = progress && !markers; /* the other no-marker variant */
	gs = mk_gs(m);
	buf = malloc(gs);
	for (size_t i = 0; i < gs; i++)
		buf[i] = (uint8_t)vdt_rand(&seed);
	mk_grain(m, 0, buf, gs, 0); /* stored: compressed size > grain */
	memset(buf, 0, gs);
	mk_grain(m, 1, buf, gs, 9); /* inflates to zeros */
	for (size_t i = 0; i < gs; i++)
		buf[i] = (uint8_t)("stream "[i % 7]);
	mk_grain(m, 3, buf, gs, 6);
	mk_grain(m, 511, buf, gs, 1);
	for (size_t i = 0; i < gs; i++)
		buf[i] = (uint8_t)vdt_rand(&seed);
	mk_grain(m, 1030, buf, gs, 6);
	mk_grain(m, 1100, buf, 3 * VD_SECTOR, 6); /* partial: only what exists */
	mk_finish(m);
	free(buf);
}

/* ---- helpers ------------------------------------------------------------------------
 */

static struct vmdk_disk *open_ok(const char *path, unsigned flags)
{
	struct vmdk_disk *d = NULL;
	int rc = vmdk_open(path, flags, NULL, &d);

	if (rc)
		fail_msg("%s: open failed %d: %s", path, rc, vdt_last_msg);
	return d;
}

/* Read the whole disk in odd-sized pieces and compare with raw. */
static void expect_content(struct vmdk_disk *d, const uint8_t *raw, uint64_t len)
{
	uint64_t off = 0, seed = 7;
	uint8_t *buf = malloc(300000);

	assert_int_equal(vmdk_capacity(d), len);
	while (off < len) {
		uint64_t want = 1 + vdt_below(&seed, 300000);
		size_t n = (size_t)VD_MIN(len - off, want);
		int rc = vmdk_pread(d, buf, n, off);
		if (rc)
			fail_msg("read %zu at %llu failed %d: %s", n,
				 (unsigned long long)off, rc, vdt_last_msg);
		if (memcmp(buf, raw + off, n))
			fail_msg("content differs in [%llu, +%zu)",
				 (unsigned long long)off, n);
		off += n;
	}
	free(buf);
}

static int run(const char *cmd)
{
	int rc = system(cmd);

	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* qemu-img compare of a vmdk against a raw file: 0 identical */
static int qemu_compare(const char *vmdk, const char *raw)
{
	char cmd[8400];

	snprintf(cmd, sizeof cmd, "qemu-img compare -q -f vmdk -F raw '%s' '%s'", vmdk,
		 raw);
	return run(cmd);
}

static void check_cb(void *opaque, bool is_error, const char *file, const char *msg)
{
	(void)opaque;
	(void)file;
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "[check %s] %s\n", is_error ? "error" : "warning", msg);
}

/* ---- corpus -------------------------------------------------------------------------
 */

static const char *const corpus_streams[] = {
    "vmdk-rs/streamOptimized.vmdk",
    "vmdk-rs/streamOptimizedWithMarkers.vmdk",
    "qemu-iotests-sample_images/iotest-version3.vmdk",
    "cot/input.vmdk",
    "cot/blank.vmdk",
    "cot/ubuntu.2.0-disk1.vmdk",
    "go-vmdk-parser/vmdk-streamoptimized.img",
};

static void test_corpus_sha256(void **state)
{
	unsigned done = 0;

	(void)state;
	for (size_t i = 0; i < sizeof corpus_streams / sizeof corpus_streams[0]; i++) {
		char *p = vdt_corpus_path(corpus_streams[i]), want[65], key[200], got[65];
		struct vmdk_check_result res;
		struct vmdk_disk *d;
		struct vmdk_extent_info ei;
		int rc;

		snprintf(key, sizeof key, "`%s`", corpus_streams[i]);
		if (!p || !vdt_index_sha256(key, want)) {
			free(p);
			continue;
		}
		d = open_ok(p, VMDK_OPEN_RDONLY);
		assert_int_equal(vmdk_extent_info_get(d, 0, &ei), 0);
		assert_int_equal(ei.kind, VMDK_EXT_STREAM);
		rc = vdt_disk_sha256(d, 64u << 20, got);
		if (rc == -ENOTSUP) {
			vmdk_close(d);
			free(p);
			continue;
		}
		if (rc)
			fail_msg("%s: read failed %d: %s", corpus_streams[i], rc,
				 vdt_last_msg);
		if (strcmp(got, want))
			fail_msg("%s: sha256 %s, INDEX.md says %s", corpus_streams[i],
				 got, want);
		assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
		if (res.errors)
			fail_msg("%s: check found %u errors", corpus_streams[i],
				 res.errors);
		vmdk_close(d);
		free(p);
		done++;
	}
	if (!done)
		skip();
}

/* qemu's test 059: for i in 0..99 the sector at i*655360 + i*512 holds
 * 0x30 + i%10 (GD_AT_END stream written by ESXi). */
static void test_corpus_version3_pattern(void **state)
{
	char *p = vdt_corpus_path("qemu-iotests-sample_images/iotest-version3.vmdk");
	struct vmdk_disk *d;
	uint8_t buf[VD_SECTOR], want[VD_SECTOR];
	struct vmdk_extent_info ei;

	(void)state;
	if (!p)
		skip();
	d = open_ok(p, VMDK_OPEN_RDONLY);
	for (unsigned i = 0; i < 100; i++) {
		uint64_t off = i * 655360ull + i * 512ull;
		memset(want, 0x30 + i % 10, sizeof want);
		assert_int_equal(vmdk_pread(d, buf, sizeof buf, off), 0);
		assert_memory_equal(buf, want, sizeof want);
	}
	assert_int_equal(vmdk_extent_info_get(d, 0, &ei), 0);
	assert_int_equal(ei.gd_offset_sectors, 545); /* the footer's, not GD_AT_END */
	vmdk_close(d);
	free(p);
}

/* ---- hand-built streams
 * ---------------------------------------------------------------- */

static void check_built(bool markers, bool gd_at_end, bool progress)
{
	char *dir = vdt_mkdtemp("stream"), *path, *rawp;
	struct mk m;
	struct vmdk_check_result res;
	struct vmdk_disk *d;
	enum vmdk_bs kind;
	uint64_t run, gs;

	mk_standard(&m, markers, gd_at_end, progress);
	gs = mk_gs(&m);
	path = mk_save(&m, dir, "mk.vmdk");
	d = open_ok(path, VMDK_OPEN_RDONLY);
	expect_content(d, m.raw, m.cap_sectors * VD_SECTOR);
	/* block status: GTE 0 unallocated, anything else data (also zeros) */
	assert_int_equal(vmdk_block_status(d, 0, 4 * gs, &kind, &run), 0);
	assert_int_equal(kind, VMDK_BS_DATA);
	assert_int_equal(run, 2 * gs);
	assert_int_equal(vmdk_block_status(d, 2 * gs + 5, 4 * gs, &kind, &run), 0);
	assert_int_equal(kind, VMDK_BS_UNALLOC);
	assert_int_equal(run, gs - 5);
	assert_int_equal(vmdk_block_status(d, 512 * gs, 600 * gs, &kind, &run), 0);
	assert_int_equal(kind, VMDK_BS_UNALLOC);
	assert_int_equal(run, 518 * gs);
	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	assert_int_equal(res.errors, 0);
	assert_int_equal(res.warnings, 0);
	assert_int_equal(res.allocated, 6 * gs);
	vmdk_close(d);
	if (markers && vdt_have("qemu-img")) {
		rawp = vdt_join(dir, "mk.raw");
		assert_int_equal(vdt_write_file(rawp, m.raw, m.cap_sectors * VD_SECTOR),
				 0);
		assert_int_equal(qemu_compare(path, rawp), 0);
		free(rawp);
	}
	mk_free(&m);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

static void test_built_footer(void **state)
{
	(void)state;
	check_built(true, true, false);
}

static void test_built_gd_in_header(void **state)
{
	(void)state;
	check_built(true, false, false);
}

static void test_built_progress_markers(void **state)
{
	(void)state;
	check_built(true, true, true);
}

/* flag 16 without 17: bare zlib (qemu) or a u32 size first (open-vmdk) */
static void test_built_no_markers(void **state)
{
	(void)state;
	check_built(false, false, false);
	check_built(false, false, true);
}

/* Threads reading random ranges of one stream disk at once (the grain
 * cache and the table lookups are shared). */
struct reader {
	struct vmdk_disk *d;
	const uint8_t *raw;
	uint64_t len, seed;
	int bad;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(70000);

	for (int i = 0; i < 300 && buf; i++) {
		uint64_t off = vdt_below(&r->seed, r->len);
		uint64_t want = 1 + vdt_below(&r->seed, 70000);
		size_t n = (size_t)VD_MIN(want, r->len - off);
		if (vmdk_pread(r->d, buf, n, off) || memcmp(buf, r->raw + off, n))
			r->bad++;
	}
	free(buf);
	return NULL;
}

static void test_parallel_reads(void **state)
{
	char *dir = vdt_mkdtemp("stream"), *path;
	struct reader r[4];
	pthread_t th[4];
	struct vmdk_disk *d;
	struct mk m;

	(void)state;
	mk_standard(&m, true, true, false);
	path = mk_save(&m, dir, "par.vmdk");
	d = open_ok(path, VMDK_OPEN_RDONLY);
	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){d, m.raw, m.cap_sectors * VD_SECTOR, 1000 + i, 0};
		assert_int_equal(pthread_create(&th[i], NULL, reader_main, &r[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(r[i].bad, 0);
	}
	vmdk_close(d);
	mk_free(&m);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

/* ---- export
 * ------------------------------------------------------------------------------- */

/* Random content with all-zero grains, an empty GT range and a random
 * partial last grain. */
static uint8_t *export_content(uint64_t cap, uint64_t gs)
{
	uint8_t *raw = calloc(1, cap);
	uint64_t seed = 99;

	assert_non_null(raw);
	for (uint64_t g = 0; g * gs < cap; g++) {
		uint64_t n = VD_MIN(gs, cap - g * gs);
		if (g % 3 == 1 || (g >= 512 && g < 1024))
			continue; /* zero grains; GT 1 empty */
		for (uint64_t i = 0; i < n; i++)
			raw[g * gs + i] =
			    g % 3 == 2 ? (uint8_t)(i >> 9) : (uint8_t)vdt_rand(&seed);
	}
	return raw;
}

/* Ascending writes of random sizes; a piece of zeros is sometimes skipped
 * (a hole the writer must fill) or written with vmdk_pwrite_zeroes. */
static void export_write(struct vmdk_disk *d, const uint8_t *raw, uint64_t cap)
{
	uint64_t off = 0, seed = 5, piece = 0;

	while (off < cap) {
		uint64_t want = 1 + vdt_below(&seed, 200 * 1024);
		size_t n = (size_t)VD_MIN(cap - off, want);
		bool zero = vd_is_zero(raw + off, n);
		int rc = 0;
		if (zero && piece % 5 == 1)
			rc = vmdk_pwrite_zeroes(d, n, off);
		else if (!zero || piece % 5)
			rc = vmdk_pwrite(d, raw + off, n, off);
		piece++;
		if (rc)
			fail_msg("write at %llu failed %d: %s", (unsigned long long)off,
				 rc, vdt_last_msg);
		off += n;
	}
}

static void export_oracles(const char *dir, const char *path, const uint8_t *raw,
			   uint64_t cap)
{
	char *rawp = vdt_join(dir, "exp.raw"), *conv = vdt_join(dir, "conv.raw"),
	     cmd[8400];
	uint8_t *back;
	size_t len;

	assert_int_equal(vdt_write_file(rawp, raw, cap), 0);
	assert_int_equal(qemu_compare(path, rawp), 0);
	snprintf(cmd, sizeof cmd, "qemu-img check -q -f vmdk '%s'", path);
	assert_int_equal(run(cmd), 0);
	snprintf(cmd, sizeof cmd, "qemu-img convert -f vmdk -O raw '%s' '%s'", path,
		 conv);
	assert_int_equal(run(cmd), 0);
	back = vdt_slurp(conv, &len);
	assert_non_null(back);
	assert_int_equal(len, cap);
	assert_memory_equal(back, raw, cap);
	free(back);
	if (vdt_have("vmdkinfo")) {
		snprintf(cmd, sizeof cmd, "vmdkinfo '%s' | grep -q 'Stream optimized'",
			 path);
		assert_int_equal(run(cmd), 0);
	}
	free(rawp);
	free(conv);
}

static void export_round_trip(uint64_t gs, uint64_t cap)
{
	char *dir = vdt_mkdtemp("stream"), *path = vdt_join(dir, "exp.vmdk");
	struct vmdk_create_opts o = {
	    .capacity = cap, .subformat = VMDK_STREAM_OPTIMIZED, .grain_size = gs};
	uint8_t *raw = export_content(cap, gs), b[VD_SECTOR];
	struct vmdk_extent_info ei;
	struct vmdk_check_result res;
	struct vmdk_disk *d;
	enum vmdk_bs kind;
	uint64_t run_len, nonzero = 0;

	assert_int_equal(vmdk_create(path, &o, NULL), 0);
	d = open_ok(path, VMDK_OPEN_RDWR);
	export_write(d, raw, cap);
	/* append-only: going back is refused, naming the file */
	assert_int_equal(vmdk_pwrite(d, raw, VD_SECTOR, 0), -EINVAL);
	assert_non_null(strstr(vdt_last_msg, "append-only"));
	assert_non_null(strstr(vdt_last_msg, "exp.vmdk"));
	assert_int_equal(vmdk_close(d), 0);

	/* the header: version 3, flags 0x30001, GD_AT_END, deflate */
	assert_int_equal(vdt_peek(path, b, sizeof b, 0), 0);
	assert_int_equal(get_le32(b + 4), 3);
	assert_int_equal(get_le32(b + 8), 0x30001);
	assert_true(get_le64(b + 56) == UINT64_MAX);
	assert_int_equal(get_le16(b + 77), 1);
	assert_int_equal(get_le64(b + 64) % get_le64(b + 20), 0);
	assert_int_equal(b[72], 0); /* uncleanShutdown cleared at close */

	d = open_ok(path, VMDK_OPEN_RDONLY);
	expect_content(d, raw, cap);
	assert_int_equal(vmdk_block_status(d, gs, 10 * gs, &kind, &run_len), 0);
	assert_int_equal(kind, VMDK_BS_UNALLOC); /* all-zero grains are omitted */
	assert_int_equal(run_len, gs);
	assert_int_equal(vmdk_extent_info_get(d, 0, &ei), 0);
	assert_int_equal(ei.kind, VMDK_EXT_STREAM);
	assert_true(ei.gd_offset_sectors < ei.file_size / VD_SECTOR);
	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	assert_int_equal(res.errors, 0);
	for (uint64_t g = 0; g * gs < cap; g++)
		nonzero += !vd_is_zero(raw + g * gs, VD_MIN(gs, cap - g * gs));
	assert_int_equal(res.allocated, nonzero * gs);
	assert_int_equal(ei.allocated, nonzero * gs);
	vmdk_close(d);
	if (vdt_have("qemu-img"))
		export_oracles(dir, path, raw, cap);
	free(raw);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

/* 64 KiB grains, 4 GTs (GT 1 empty), a 1536-byte last grain */
static void test_export_round_trip(void **state)
{
	(void)state;
	export_round_trip(65536, 100 * 1048576ull + 1536);
}

/* 8 KiB grains (the smallest libvmdk reads): a GT covers 4 MiB */
static void test_export_small_grains(void **state)
{
	(void)state;
	export_round_trip(8192, 9 * 1048576ull + 512);
}

/* A finished stream opened read-write stays read-only and unchanged; a
 * fresh one opened read-only reads as zeros; an untouched export closes to
 * a valid empty stream. */
static void test_export_modes(void **state)
{
	const uint64_t cap = 3 * 1048576 + 512;
	char *dir = vdt_mkdtemp("stream"), *path = vdt_join(dir, "e.vmdk");
	struct vmdk_create_opts o = {.capacity = cap, .subformat = VMDK_STREAM_OPTIMIZED};
	uint8_t *zero = calloc(1, cap), *before, *after, b[4] = "abc";
	size_t l1, l2;
	struct vmdk_disk *d;

	(void)state;
	assert_int_equal(vmdk_create(path, &o, NULL), 0);
	assert_int_equal(vmdk_create(path, &o, NULL) < 0, 1); /* never overwrites */
	d = open_ok(path, VMDK_OPEN_RDONLY);
	expect_content(d, zero, cap);
	vmdk_close(d);
	d = open_ok(path, VMDK_OPEN_RDWR);
	assert_int_equal(vmdk_close(d), 0);
	d = open_ok(path, VMDK_OPEN_RDONLY);
	expect_content(d, zero, cap);
	vmdk_close(d);

	before = vdt_slurp(path, &l1);
	d = open_ok(path, VMDK_OPEN_RDWR);
	assert_int_equal(vmdk_pwrite(d, b, 3, cap - 3), -EROFS);
	assert_non_null(strstr(vdt_last_msg, "e.vmdk"));
	vmdk_close(d);
	after = vdt_slurp(path, &l2);
	assert_int_equal(l1, l2);
	assert_memory_equal(before, after, l1);
	if (vdt_have("qemu-img")) {
		char cmd[8400];
		snprintf(cmd, sizeof cmd, "qemu-img check -q -f vmdk '%s'", path);
		assert_int_equal(run(cmd), 0);
	}
	free(before);
	free(after);
	free(zero);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

/* Crash test of the export: cut after each prefix of its writes, unsynced
 * writes dropped.  The file must then be refused (unfinished or
 * interrupted), or read exactly the exported content, or - only when no
 * write had been acknowledged - read as the empty fresh stream. */
static long export_crash_op(const char *path, const uint8_t *raw, uint64_t cap,
			    long budget, long *acked, int *close_rc)
{
	struct vd_faultio *fi;
	struct vmdk_disk *d;
	long writes;

	*acked = 0;
	*close_rc = -1;
	assert_int_equal(vd_faultio_create(budget, true, &fi), 0);
	if (!vmdk_open(path, VMDK_OPEN_RDWR, vd_faultio_io(fi), &d)) {
		for (uint64_t off = 0; off < cap; off += 300000) {
			size_t n = (size_t)VD_MIN(cap - off, 300000);
			if (vmdk_pwrite(d, raw + off, n, off))
				break;
			(*acked)++;
		}
		*close_rc = vmdk_close(d);
	}
	writes = vd_faultio_writes(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	return writes;
}

static void export_crash_verify(const char *path, const uint8_t *raw, uint64_t cap,
				long acked, int close_rc)
{
	uint8_t *buf = malloc(cap), *zero = calloc(1, cap);
	struct vmdk_disk *d = NULL;
	int rc = vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d);

	if (rc) {
		assert_int_equal(rc, -VD_EBADDATA);
		assert_true(close_rc != 0); /* a clean close leaves a readable file */
	} else {
		assert_int_equal(vmdk_pread(d, buf, cap, 0), 0);
		if (memcmp(buf, raw, cap) && (acked || memcmp(buf, zero, cap)))
			fail_msg("crashed export reads neither its content nor empty "
				 "(acked %ld, close %d)",
				 acked, close_rc);
		vmdk_close(d);
	}
	free(buf);
	free(zero);
}

static void test_export_crash(void **state)
{
	const uint64_t cap = 3 * 1048576ull + 512;
	char *dir = vdt_mkdtemp("stream"), *path = vdt_join(dir, "k.vmdk");
	struct vmdk_create_opts o = {.capacity = cap, .subformat = VMDK_STREAM_OPTIMIZED};
	uint8_t *raw = export_content(cap, 65536);
	long total, acked;
	int close_rc;

	(void)state;
	assert_int_equal(vmdk_create(path, &o, NULL), 0);
	total = export_crash_op(path, raw, cap, 1000000, &acked, &close_rc);
	assert_int_equal(close_rc, 0);
	export_crash_verify(path, raw, cap, acked, close_rc);
	for (long k = 0; k < total; k++) {
		unlink(path);
		assert_int_equal(vmdk_create(path, &o, NULL), 0);
		export_crash_op(path, raw, cap, k, &acked, &close_rc);
		export_crash_verify(path, raw, cap, acked, close_rc);
	}
	free(raw);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

/* ---- hostile streams
 * ------------------------------------------------------------------------ */

/* No hostile file may make the library allocate without bound: cap the
 * address space (not under ASan or TSan, which reserve terabytes of shadow). */
static void limit_memory(void)
{
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
	struct rlimit rl = {1ull << 30, 1ull << 30};
	setrlimit(RLIMIT_AS, &rl);
#endif
}

typedef void mutate_fn(struct mk *m);

/* Build the standard stream, damage it, and expect open or a full read to
 * fail with a message naming the file and containing `word`. */
static void expect_refused(const char *what, mutate_fn *mutate, bool gd_at_end,
			   const char *word)
{
	char *dir = vdt_mkdtemp("stream"), *path;
	struct mk m;
	struct vmdk_disk *d = NULL;
	uint8_t *buf;
	int rc;

	mk_standard(&m, true, gd_at_end, false);
	mutate(&m);
	path = mk_save(&m, dir, "bad.vmdk");
	vdt_last_msg[0] = 0;
	rc = vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d);
	if (!rc) {
		uint64_t cap = vmdk_capacity(d);
		buf = malloc(cap);
		assert_non_null(buf);
		rc = vmdk_pread(d, buf, cap, 0);
		free(buf);
		vmdk_close(d);
	}
	if (rc >= 0)
		fail_msg("%s: accepted", what);
	if (!strstr(vdt_last_msg, "bad.vmdk") || (word && !strstr(vdt_last_msg, word)))
		fail_msg("%s: message \"%s\" should name the file and say \"%s\"", what,
			 vdt_last_msg, word ? word : "");
	mk_free(&m);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

static uint8_t *grain_marker(struct mk *m, uint64_t g)
{
	return m->file + (uint64_t)m->gte[g] * VD_SECTOR;
}

static void mut_footer_type(struct mk *m) { put_le32(m->file + m->len - 1536 + 12, 2); }
static void mut_eos(struct mk *m) { m->file[m->len - 512] = 1; }
static void mut_truncate(struct mk *m) { m->len -= 512; }
static void mut_footer_magic(struct mk *m) { m->file[m->len - 1024] = 'X'; }
static void mut_footer_gd(struct mk *m)
{
	put_le64(m->file + m->len - 1024 + 56, 1ull << 40);
}
static void mut_gd_marker(struct mk *m)
{
	put_le32(m->file + (m->gd_sector - 1) * 512 + 12, 1);
}
static void mut_size_huge(struct mk *m) { put_le32(grain_marker(m, 3) + 8, 0xffffffffu); }
static void mut_size_2g(struct mk *m) { put_le32(grain_marker(m, 3) + 8, 2 * 16 * 512); }
static void mut_lba(struct mk *m) { put_le64(grain_marker(m, 1030), 16 * 1031); }
static void mut_zlib(struct mk *m) { memset(grain_marker(m, 3) + 12, 0x55, 40); }
static void mut_capacity(struct mk *m) { put_le64(m->file + 12, 1ull << 62); }
static void mut_grain_size(struct mk *m) { put_le64(m->file + 20, 1ull << 40); }
static void mut_flags(struct mk *m) { put_le32(m->file + 8, 0x70001); }
static void mut_algo(struct mk *m) { put_le16(m->file + 77, 2); }
static void mut_gte(struct mk *m)
{
	uint32_t gt = get_le32(m->file + m->gd_sector * 512);
	put_le32(m->file + (uint64_t)gt * 512 + 4 * 3, 0x7fffffffu);
}
static void mut_gd_entry(struct mk *m)
{
	put_le32(m->file + m->gd_sector * 512, 0xfffffff0u);
}
static void mut_big_grain(struct mk *m)
{
	/* grain 3 re-made as 2 grains of data: inflates past a grain */
	uint8_t *data = calloc(1, 2 * 16 * 512), *mk = grain_marker(m, 3);
	uLongf zlen = 4096;
	uint8_t z[4096];
	assert_int_equal(compress2(z, &zlen, data, 2 * 16 * 512, 9), Z_OK);
	memcpy(mk + 12, z, zlen);
	put_le32(mk + 8, (uint32_t)zlen);
	free(data);
}

static void test_hostile(void **state)
{
	(void)state;
	limit_memory();
	expect_refused("footer marker type", mut_footer_type, true, "footer");
	expect_refused("EOS marker", mut_eos, true, "EOS");
	expect_refused("truncated tail", mut_truncate, true, NULL);
	expect_refused("footer magic", mut_footer_magic, true, NULL);
	expect_refused("footer gdOffset", mut_footer_gd, true, "gdOffset");
	expect_refused("GD marker", mut_gd_marker, true, "GD marker");
	expect_refused("grain size 4 GiB", mut_size_huge, true, "size");
	expect_refused("grain size 2 grains", mut_size_2g, false, "size");
	expect_refused("marker lba", mut_lba, true, "lba");
	expect_refused("zlib garbage", mut_zlib, false, "zlib");
	expect_refused("grain inflating past a grain", mut_big_grain, true,
		       "more than a grain");
	expect_refused("capacity 2^62", mut_capacity, false, NULL);
	expect_refused("grain size 2^40 sectors", mut_grain_size, false, NULL);
	expect_refused("unknown incompatible flag", mut_flags, false, NULL);
	expect_refused("compressAlgorithm 2", mut_algo, false, "compressAlgorithm");
	expect_refused("GTE past EOF", mut_gte, false, NULL);
	expect_refused("GD entry past EOF", mut_gd_entry, false, NULL);
}

/* check reports damaged grains as errors instead of failing */
static void test_check_damaged(void **state)
{
	char *dir = vdt_mkdtemp("stream"), *path;
	struct vmdk_check_result res;
	struct vmdk_disk *d;
	struct mk m;

	(void)state;
	mk_standard(&m, true, true, false);
	mut_zlib(&m);
	mut_lba(&m);
	path = mk_save(&m, dir, "bad.vmdk");
	d = open_ok(path, VMDK_OPEN_RDONLY);
	assert_int_equal(vmdk_check(d, check_cb, NULL, &res), 0);
	assert_int_equal(res.errors, 2);
	assert_int_equal(res.warnings, 0);
	vmdk_close(d);
	mk_free(&m);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus_sha256),
	    cmocka_unit_test(test_corpus_version3_pattern),
	    cmocka_unit_test(test_built_footer),
	    cmocka_unit_test(test_built_gd_in_header),
	    cmocka_unit_test(test_built_progress_markers),
	    cmocka_unit_test(test_built_no_markers),
	    cmocka_unit_test(test_parallel_reads),
	    cmocka_unit_test(test_export_round_trip),
	    cmocka_unit_test(test_export_small_grains),
	    cmocka_unit_test(test_export_modes),
	    cmocka_unit_test(test_export_crash),
	    cmocka_unit_test(test_check_damaged),
	    cmocka_unit_test(test_hostile),
	};

	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
