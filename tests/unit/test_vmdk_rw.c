/* tests — randomized read/write test of the format layer (vmdk_disk.c,
 * vmdk_sparse.c, vmdk_gt.c, vmdk_flat.c, vmdk_create.c): disks made by
 * vmdk_create (monolithicSparse, twoGbMaxExtentSparse with a small split
 * size, monolithicFlat, twoGbMaxExtentFlat, zeroed-grain sparse), then
 * thousands of reads / writes / zero-writes at unaligned offsets crossing
 * grain, grain-table and extent boundaries, against a reference buffer in
 * memory, reopening now and then.  Also checked: block status covers the
 * capacity and agrees with the reference, vmdk_check is clean, the CID
 * changes on the first write of each open only (never ffffffff/fffffffe),
 * uncleanShutdown is set while dirty and clear after close (read from the
 * file's byte 72, outside the library), descriptor edits persist, and
 * finally qemu-img compare/check agree (when qemu-img is installed).
 *
 * VDT_OPS=<n> changes the number of operations per disk (default 3000). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>

#include "vdtest.h"
#include "vmdk.h"

struct cfg {
	const char *name;
	enum vmdk_subformat sf;
	uint64_t capacity, grain_size, split_size;
	bool zeroed_grain;
};

static const struct cfg cfgs[] = {
	/* 64 KiB grains: a GT covers 32 MiB; capacity = 2 GTs, last grain partial */
	{ "mono64k", VMDK_MONOLITHIC_SPARSE, (40ull << 20) + 1536, 0, 0, false },
	/* 8 KiB grains: a GT covers 4 MiB; 3 GTs */
	{ "mono8k", VMDK_MONOLITHIC_SPARSE, (9ull << 20) + 512, 8192, 0, false },
	{ "mono8k-zg", VMDK_MONOLITHIC_SPARSE, (9ull << 20) + 4608, 8192, 0, true },
	/* split: extent boundaries inside GTs, a last extent of one sector */
	{ "split64k", VMDK_TWOGB_SPARSE, (40ull << 20) + 1536, 0, 24ull << 20, false },
	{ "split8k", VMDK_TWOGB_SPARSE, (9ull << 20) + 512, 8192, 3ull << 20, false },
	{ "flat", VMDK_MONOLITHIC_FLAT, (5ull << 20) + 512, 0, 0, false },
	{ "split-flat", VMDK_TWOGB_FLAT, (5ull << 20) + 512, 0, 2ull << 20, false },
};

struct rw {
	const struct cfg *c;
	char *dir, *path;
	struct vmdk_disk *d;
	uint8_t *ref;
	uint64_t cap, grain, gt_cover;
	uint64_t s;              /* PRNG */
	uint32_t cid;            /* CID at open */
	bool dirty;              /* written since open */
	uint64_t points[64];     /* interesting offsets */
	unsigned nr_points;
	char *ext_paths[16];     /* sparse extent files */
	unsigned nr_ext;
};

static bool is_sparse(const struct cfg *c)
{
	return c->sf == VMDK_MONOLITHIC_SPARSE || c->sf == VMDK_TWOGB_SPARSE;
}

static void rw_open(struct rw *t)
{
	int rc = vmdk_open(t->path, VMDK_OPEN_RDWR, NULL, &t->d);

	if (rc)
		fail_msg("%s: open failed %d: %s", t->c->name, rc, vdt_last_msg);
	assert_true(vmdk_writable(t->d));
	assert_true(vmdk_capacity(t->d) == t->cap);
	t->cid = vmdk_cid(t->d);
	t->dirty = false;
}

static uint8_t unclean_byte(const char *path)
{
	uint8_t b = 0xee;
	assert_int_equal(vdt_peek(path, &b, 1, 72), 0);
	return b;
}

static void rw_close(struct rw *t)
{
	uint32_t cid = vmdk_cid(t->d);

	assert_int_equal(vmdk_close(t->d), 0);
	t->d = NULL;
	for (unsigned i = 0; i < t->nr_ext; i++)
		if (unclean_byte(t->ext_paths[i]) != 0)
			fail_msg("%s: uncleanShutdown still set after close",
				 t->ext_paths[i]);
	/* the CID in memory at close is the one on disk */
	rw_open(t);
	assert_int_equal(vmdk_cid(t->d), cid);
	assert_int_equal(vmdk_close(t->d), 0);
	t->d = NULL;
}

static void note_point(struct rw *t, uint64_t p)
{
	if (p <= t->cap && t->nr_points < 64)
		t->points[t->nr_points++] = p;
}

static void rw_setup(struct rw *t, const struct cfg *c)
{
	struct vmdk_create_opts o = {
		.capacity = c->capacity, .subformat = c->sf, .grain_size = c->grain_size,
		.split_size = c->split_size, .zeroed_grain = c->zeroed_grain,
		.parent_cid = VMDK_CID_NONE,
	};
	struct vmdk_info info;
	int rc;

	memset(t, 0, sizeof *t);
	t->c = c;
	t->s = 0x9e3779b97f4a7c15ull ^ c->capacity ^ c->sf;
	t->dir = vdt_mkdtemp(c->name);
	t->path = vdt_join(t->dir, "disk.vmdk");
	rc = vmdk_create(t->path, &o, NULL);
	if (rc)
		fail_msg("%s: create failed %d: %s", c->name, rc, vdt_last_msg);
	assert_true(vmdk_create(t->path, &o, NULL) < 0); /* never overwrites */
	t->cap = c->capacity;
	t->ref = calloc(1, t->cap);
	assert_non_null(t->ref);
	rw_open(t);
	vmdk_info_get(t->d, &info);
	assert_true(info.capacity == t->cap);
	assert_string_equal(info.create_type, vmdk_subformat_name(c->sf));
	assert_int_equal(vmdk_parent_cid(t->d), VMDK_CID_NONE);
	assert_null(vmdk_parent_hint(t->d));
	t->grain = is_sparse(c) ? (c->grain_size ? c->grain_size : 65536) : 0;
	assert_true(vmdk_grain_size(t->d) == t->grain);
	t->gt_cover = t->grain * 512;
	for (unsigned i = 0; i < info.nr_extents; i++) {
		struct vmdk_extent_info ei;
		assert_int_equal(vmdk_extent_info_get(t->d, i, &ei), 0);
		note_point(t, ei.start);
		if (c->split_size && i + 1 < info.nr_extents)
			assert_true(ei.size == c->split_size);
		if (is_sparse(c)) {
			assert_int_equal(ei.kind, VMDK_EXT_SPARSE);
			assert_true(ei.grain_size_sectors * 512 == t->grain);
			assert_int_equal(ei.nr_gtes_per_gt, 512);
			assert_int_equal(ei.version, c->zeroed_grain ? 2 : 1);
			assert_false(ei.unclean_shutdown);
			t->ext_paths[t->nr_ext++] = strdup(ei.path);
		}
	}
	assert_int_equal(info.nr_extents,
			 c->split_size ? (unsigned)VD_DIV_ROUND_UP(t->cap, c->split_size) : 1);
	note_point(t, t->cap);
	note_point(t, t->cap - 1);
	if (t->grain) {
		note_point(t, t->cap / t->grain * t->grain);
		for (uint64_t p = t->gt_cover; p < t->cap; p += t->gt_cover)
			note_point(t, p);
	}
}

static void rw_teardown(struct rw *t)
{
	if (t->d)
		vmdk_close(t->d);
	vdt_rmtree(t->dir);
	free(t->dir);
	free(t->path);
	free(t->ref);
	for (unsigned i = 0; i < t->nr_ext; i++)
		free(t->ext_paths[i]);
}

/* an offset near a boundary or uniform */
static uint64_t pick_off(struct rw *t)
{
	uint64_t r = vdt_below(&t->s, 8), off;

	if (r < 3) {
		off = vdt_below(&t->s, t->cap);
	} else if (r < 5 && t->grain) {
		off = vdt_below(&t->s, t->cap / t->grain + 1) * t->grain;
		off += vdt_below(&t->s, 2048) - 1024;
	} else {
		off = t->points[vdt_below(&t->s, t->nr_points)];
		off += vdt_below(&t->s, 4096) - 2048;
	}
	return off >= t->cap ? vdt_below(&t->s, t->cap) : off;
}

static uint64_t pick_len(struct rw *t, uint64_t off)
{
	uint64_t g = t->grain ? t->grain : 65536, r = vdt_below(&t->s, 10), len;

	if (r < 4)
		len = 1 + vdt_below(&t->s, 1024);
	else if (r < 8)
		len = 1 + vdt_below(&t->s, 3 * g);
	else if (r < 9)
		len = vdt_below(&t->s, 4) * g + (vdt_below(&t->s, 2) ? 0 : 1 + vdt_below(&t->s, g));
	else
		len = 1 + vdt_below(&t->s, 1 << 20);
	if (!len)
		len = 1;
	return VD_MIN(len, t->cap - off);
}

static void fill(struct rw *t, uint8_t *buf, size_t len)
{
	switch (vdt_below(&t->s, 4)) {
	case 0:
		memset(buf, 0, len); /* zeros written as data */
		break;
	case 1:
		memset(buf, (int)(1 + vdt_below(&t->s, 255)), len);
		break;
	default:
		for (size_t i = 0; i < len; i += 8) {
			uint64_t v = vdt_rand(&t->s);
			memcpy(buf + i, &v, VD_MIN((size_t)8, len - i));
		}
	}
}

static void after_first_write(struct rw *t)
{
	uint32_t cid = vmdk_cid(t->d);
	char hex[16];

	if (t->dirty) {
		assert_int_equal(cid, t->cid); /* only the first write changes it */
		return;
	}
	if (cid == t->cid)
		fail_msg("%s: CID %08x unchanged by the first write", t->c->name, cid);
	assert_true(cid != 0xffffffffu && cid != 0xfffffffeu);
	snprintf(hex, sizeof hex, "%08x", cid);
	assert_string_equal(vmdk_desc_get(t->d, "CID"), hex);
	if (t->nr_ext) {
		unsigned set = 0;
		for (unsigned i = 0; i < t->nr_ext; i++)
			set += unclean_byte(t->ext_paths[i]) == 1;
		if (!set)
			fail_msg("%s: no extent has uncleanShutdown set after a write",
				 t->c->name);
	}
	t->cid = cid;
	t->dirty = true;
}

static void verify_range(struct rw *t, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	int rc = vmdk_pread(t->d, buf, len, off);

	if (rc)
		fail_msg("%s: pread(%llu, %llu) = %d: %s", t->c->name,
			 (unsigned long long)off, (unsigned long long)len, rc, vdt_last_msg);
	if (memcmp(buf, t->ref + off, len)) {
		uint64_t i = 0;
		while (buf[i] == t->ref[off + i])
			i++;
		fail_msg("%s: content differs at byte %llu (read %02x, want %02x)",
			 t->c->name, (unsigned long long)(off + i), buf[i], t->ref[off + i]);
	}
	free(buf);
}

static void verify_all(struct rw *t)
{
	for (uint64_t off = 0; off < t->cap; off += 4 << 20)
		verify_range(t, off, VD_MIN(4ull << 20, t->cap - off));
}

/* runs cover [0, cap) exactly; non-data runs read as zeros in the reference */
static void verify_block_status(struct rw *t)
{
	uint64_t off = 0;
	unsigned runs = 0;

	while (off < t->cap) {
		enum vmdk_bs kind = 99;
		uint64_t run = 0, max = t->cap - off;
		if (vdt_below(&t->s, 4) == 0)
			max = 1 + vdt_below(&t->s, max);
		assert_int_equal(vmdk_block_status(t->d, off, max, &kind, &run), 0);
		if (!run || run > max)
			fail_msg("%s: block status at %llu: run %llu (max %llu)", t->c->name,
				 (unsigned long long)off, (unsigned long long)run,
				 (unsigned long long)max);
		assert_true(kind == VMDK_BS_UNALLOC || kind == VMDK_BS_ZERO ||
			    kind == VMDK_BS_DATA);
		if (kind != VMDK_BS_DATA && !vd_is_zero(t->ref + off, run))
			fail_msg("%s: [%llu, +%llu) reported %s but holds data", t->c->name,
				 (unsigned long long)off, (unsigned long long)run,
				 kind == VMDK_BS_ZERO ? "zero" : "unallocated");
		if (!is_sparse(t->c)) /* flat: data, or zero where it is a hole */
			assert_int_not_equal(kind, VMDK_BS_UNALLOC);
		off += run;
		runs++;
	}
	assert_true(off == t->cap);
	assert_int_equal(vmdk_block_status(t->d, t->cap, 1, &(enum vmdk_bs){ 0 },
					   &(uint64_t){ 0 }) < 0, true);
}

static void check_msg(void *opaque, bool is_error, const char *file, const char *msg)
{
	(void)opaque;
	fprintf(stderr, "check %s: %s: %s\n", is_error ? "error" : "warning", file, msg);
}

static void verify_check(struct rw *t)
{
	struct vmdk_disk *d;
	struct vmdk_check_result r;

	assert_int_equal(vmdk_open(t->path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d), 0);
	memset(&r, 0xff, sizeof r);
	assert_int_equal(vmdk_check(d, check_msg, NULL, &r), 0);
	if (r.errors || r.warnings)
		fail_msg("%s: vmdk_check: %u errors, %u warnings", t->c->name, r.errors,
			 r.warnings);
	vmdk_close(d);
}

static void do_write(struct rw *t, bool zeroes)
{
	uint64_t off = pick_off(t), len = pick_len(t, off);
	uint8_t *buf = malloc(len);
	int rc;

	if (zeroes) {
		memset(buf, 0, len);
		rc = vmdk_pwrite_zeroes(t->d, len, off);
	} else {
		fill(t, buf, len);
		rc = vmdk_pwrite(t->d, buf, len, off);
	}
	if (rc)
		fail_msg("%s: %s(%llu, %llu) = %d: %s", t->c->name,
			 zeroes ? "pwrite_zeroes" : "pwrite", (unsigned long long)off,
			 (unsigned long long)len, rc, vdt_last_msg);
	memcpy(t->ref + off, buf, len);
	free(buf);
	after_first_write(t);
	if (vdt_below(&t->s, 4) == 0) /* read back around the write */
		verify_range(t, off > 777 ? off - 777 : 0,
			     VD_MIN(len + 1554, t->cap - (off > 777 ? off - 777 : 0)));
}

/* I/O past the end is refused and changes nothing */
static void do_out_of_range(struct rw *t)
{
	uint8_t buf[64] = { 1 };

	assert_true(vmdk_pwrite(t->d, buf, 20, t->cap - 10) < 0);
	assert_true(vmdk_pwrite(t->d, buf, 1, t->cap) < 0);
	assert_true(vmdk_pwrite_zeroes(t->d, 20, t->cap - 10) < 0);
	assert_true(vmdk_pread(t->d, buf, 20, t->cap - 10) < 0);
	assert_true(vmdk_pread(t->d, buf, 1, UINT64_MAX) < 0);
	assert_true(vmdk_pwrite(t->d, buf, 64, UINT64_MAX - 8) < 0);
	verify_range(t, t->cap - 10, 10);
}

static void reopen(struct rw *t, unsigned n)
{
	rw_close(t);
	rw_open(t);
	verify_all(t);
	verify_block_status(t);
	/* descriptor edits persist and do not touch the CID */
	if (n == 2) {
		uint32_t cid = vmdk_cid(t->d);
		assert_int_equal(vmdk_desc_set(t->d, "ddb.comment", "rw test"), 0);
		assert_int_equal(vmdk_desc_set(t->d, "ddb.adapterType", NULL), 0);
		assert_int_equal(vmdk_desc_write(t->d), 0);
		rw_close(t);
		rw_open(t);
		assert_string_equal(vmdk_desc_get(t->d, "ddb.comment"), "rw test");
		assert_null(vmdk_desc_get(t->d, "ddb.adapterType"));
		assert_int_equal(vmdk_cid(t->d), cid);
	}
}

/* libvmdk reads the disk: same capacity and CID (vmdkinfo) */
static void vmdkinfo_oracle(struct rw *t)
{
	char cmd[2048], want[160], line[512];
	struct vmdk_disk *d;
	bool size_ok = false, cid_ok = false;
	FILE *p;

	if (!vdt_have("vmdkinfo"))
		return;
	assert_int_equal(vmdk_open(t->path, VMDK_OPEN_RDONLY, NULL, &d), 0);
	snprintf(want, sizeof want, "Content identifier:\t\t0x%08x", vmdk_cid(d));
	vmdk_close(d);
	snprintf(cmd, sizeof cmd, "vmdkinfo '%s' 2>&1", t->path);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof line, p)) {
		char bytes[64];
		snprintf(bytes, sizeof bytes, "(%llu bytes)", (unsigned long long)t->cap);
		if (strstr(line, "Media size:") && strstr(line, bytes))
			size_ok = true;
		if (strstr(line, want))
			cid_ok = true;
	}
	if (pclose(p) || !size_ok || !cid_ok)
		fail_msg("%s: vmdkinfo disagrees (exit, media size %llu or %s)", t->c->name,
			 (unsigned long long)t->cap, want);
}

static void qemu_oracle(struct rw *t)
{
	char *raw = vdt_join(t->dir, "ref.raw"), cmd[2048];

	if (!vdt_have("qemu-img"))
		return;
	assert_int_equal(vdt_write_file(raw, t->ref, t->cap), 0);
	snprintf(cmd, sizeof cmd, "qemu-img compare -q -f vmdk -F raw '%s' '%s'", t->path, raw);
	if (system(cmd))
		fail_msg("%s: qemu-img compare differs: %s", t->c->name, cmd);
	if (is_sparse(t->c)) {
		snprintf(cmd, sizeof cmd, "qemu-img check -q -f vmdk '%s'", t->path);
		if (system(cmd))
			fail_msg("%s: qemu-img check failed", t->c->name);
	}
	unlink(raw);
	free(raw);
	vmdkinfo_oracle(t);
}

/* vmdk_extent_head_get: every field vmdk_extent_info_get gives but the
 * allocation figure, and not one read of the disk's files for it. */
static void verify_head(struct rw *t)
{
	struct vd_countio *ci;
	struct vmdk_disk *d;
	struct vmdk_info info;
	struct vd_count_stats before, after;

	assert_int_equal(vd_countio_create(NULL, &ci), 0);
	assert_int_equal(vmdk_open(t->path, VMDK_OPEN_RDONLY, vd_countio_io(ci), &d), 0);
	vmdk_info_get(d, &info);
	for (unsigned i = 0; i < info.nr_extents; i++) {
		struct vmdk_extent_info h, full;
		vd_countio_total(ci, &before);
		assert_int_equal(vmdk_extent_head_get(d, i, &h), 0);
		vd_countio_total(ci, &after);
		assert_true(after.meta_reads == before.meta_reads &&
			    after.data_reads == before.data_reads);
		assert_int_equal(vmdk_extent_info_get(d, i, &full), 0);
		if (full.kind != VMDK_EXT_FLAT)
			assert_true(h.allocated == 0);
		assert_true(h.kind == full.kind && h.start == full.start && h.size == full.size &&
			    h.file_size == full.file_size && h.version == full.version &&
			    h.flags == full.flags && h.unclean_shutdown == full.unclean_shutdown &&
			    h.grain_size_sectors == full.grain_size_sectors &&
			    h.nr_gd_entries == full.nr_gd_entries &&
			    h.gd_offset_sectors == full.gd_offset_sectors);
	}
	if (t->grain) { /* the data run_cfg wrote is counted by the full one only */
		struct vmdk_extent_info full;
		uint64_t sum = 0;
		for (unsigned i = 0; i < info.nr_extents; i++) {
			assert_int_equal(vmdk_extent_info_get(d, i, &full), 0);
			sum += full.allocated;
		}
		assert_true(sum > 0);
	}
	vmdk_close(d);
	vd_countio_destroy(ci);
}

/* VMDK_OPEN_DESC_ONLY: the descriptor's file alone, read no further than
 * its descriptor, the same CIDs and hint as a full open, and no data. */
static void verify_desc_only(struct rw *t)
{
	struct vd_countio *ci;
	struct vmdk_disk *d, *full;
	struct vd_count_stats st;
	uint8_t b[512];

	assert_int_equal(vmdk_open(t->path, VMDK_OPEN_RDONLY, NULL, &full), 0);
	assert_int_equal(vd_countio_create(NULL, &ci), 0);
	assert_int_equal(vmdk_open(t->path, VMDK_OPEN_DESC_ONLY | VMDK_OPEN_RDWR,
				   vd_countio_io(ci), &d), 0);
	vd_countio_total(ci, &st);
	assert_int_equal(vd_countio_nr_files(ci), 1);
	assert_true(st.meta_reads + st.data_reads <= 2 && !st.writes);
	assert_int_equal(vmdk_cid(d), vmdk_cid(full));
	assert_int_equal(vmdk_parent_cid(d), vmdk_parent_cid(full));
	assert_true(!vmdk_parent_hint(d) == !vmdk_parent_hint(full));
	if (vmdk_parent_hint(d))
		assert_string_equal(vmdk_parent_hint(d), vmdk_parent_hint(full));
	assert_true(vmdk_capacity(d) == 0 && vmdk_pread(d, b, sizeof b, 0) < 0);
	assert_int_equal(vmdk_close(d), 0);
	vd_countio_total(ci, &st);
	assert_true(!st.writes && !st.syncs);
	vmdk_close(full);
	vd_countio_destroy(ci);
}

static void run_cfg(const struct cfg *c)
{
	const char *env = getenv("VDT_OPS");
	unsigned ops = env ? (unsigned)atoi(env) : 3000, reopens = 0;
	struct rw t;

	rw_setup(&t, c);
	/* open and close without writing: CID unchanged, file clean */
	{
		uint32_t cid = t.cid;
		rw_close(&t);
		rw_open(&t);
		assert_int_equal(t.cid, cid);
	}
	verify_block_status(&t);
	for (unsigned i = 0; i < ops; i++) {
		uint64_t r = vdt_below(&t.s, 100);
		if (r < 50) {
			do_write(&t, false);
		} else if (r < 68) {
			do_write(&t, true);
		} else if (r < 97) {
			uint64_t off = pick_off(&t);
			verify_range(&t, off, pick_len(&t, off));
		} else if (r < 98) {
			do_out_of_range(&t);
		} else {
			reopen(&t, reopens++);
		}
		if (i % 500 == 499)
			verify_block_status(&t);
	}
	assert_int_equal(vmdk_flush(t.d), 0);
	verify_all(&t);
	verify_block_status(&t);
	rw_close(&t);
	verify_check(&t);
	verify_head(&t);
	verify_desc_only(&t);
	qemu_oracle(&t);
	rw_teardown(&t);
}

static void test_cfg(void **state)
{
	run_cfg(*state);
}

static int backing_ab(void *opaque, void *buf, size_t len, uint64_t off)
{
	(void)opaque;
	(void)off;
	memset(buf, 0xab, len);
	return 0;
}

/* a zeroed-grain disk turns whole-grain zero writes into ZERO status */
static void test_zeroed_grain_status(void **state)
{
	struct rw t;
	uint64_t g, len = 0;
	enum vmdk_bs kind;
	uint8_t *buf;

	(void)state;
	rw_setup(&t, &cfgs[2]);
	g = t.grain;
	buf = malloc(4 * g);
	memset(buf, 0x5a, 4 * g);
	assert_int_equal(vmdk_pwrite(t.d, buf, 4 * g, 8 * g), 0);
	assert_int_equal(vmdk_pwrite_zeroes(t.d, 2 * g, 9 * g), 0);
	memset(buf + g, 0, 2 * g);
	assert_int_equal(vmdk_block_status(t.d, 8 * g, g, &kind, &len), 0);
	assert_int_equal(kind, VMDK_BS_DATA);
	/* allocated grains may keep their (now zero) data or become zeroed */
	assert_int_equal(vmdk_block_status(t.d, 9 * g, 2 * g, &kind, &len), 0);
	assert_int_not_equal(kind, VMDK_BS_UNALLOC);
	assert_int_equal(vmdk_block_status(t.d, 11 * g, g, &kind, &len), 0);
	assert_int_equal(kind, VMDK_BS_DATA);
	assert_int_equal(vmdk_block_status(t.d, 12 * g, g, &kind, &len), 0);
	assert_int_equal(kind, VMDK_BS_UNALLOC);
	memcpy(t.ref + 8 * g, buf, 4 * g);
	verify_all(&t);
	/* without a backing, zeroing a never-written grain may leave it
	 * unallocated (it reads as zeros already) */
	assert_int_equal(vmdk_pwrite_zeroes(t.d, g, 40 * g), 0);
	assert_int_equal(vmdk_block_status(t.d, 40 * g, g, &kind, &len), 0);
	assert_int_not_equal(kind, VMDK_BS_DATA);
	/* with a backing (a parent below), zeroing never-written grains must
	 * mask it: ZERO (GTE 1), the run covering exactly the zeroed grains */
	vmdk_set_backing(t.d, backing_ab, NULL);
	assert_int_equal(vmdk_pwrite_zeroes(t.d, 3 * g, 20 * g), 0);
	assert_int_equal(vmdk_block_status(t.d, 20 * g, 8 * g, &kind, &len), 0);
	assert_int_equal(kind, VMDK_BS_ZERO);
	assert_true(len == 3 * g);
	assert_int_equal(vmdk_block_status(t.d, 23 * g, g, &kind, &len), 0);
	assert_int_equal(kind, VMDK_BS_UNALLOC);
	/* a partial grain at either end is not a zeroed grain */
	assert_int_equal(vmdk_pwrite_zeroes(t.d, g, 30 * g + 512), 0);
	assert_int_equal(vmdk_block_status(t.d, 30 * g, g, &kind, &len), 0);
	assert_int_not_equal(kind, VMDK_BS_ZERO);
	assert_int_equal(vmdk_block_status(t.d, 31 * g, g, &kind, &len), 0);
	assert_int_not_equal(kind, VMDK_BS_ZERO);
	/* ... and the rest of those two grains came from the backing */
	memset(t.ref + 30 * g, 0xab, 512);
	memset(t.ref + 31 * g + 512, 0xab, g - 512);
	verify_all(&t);
	t.dirty = true;
	rw_close(&t);
	verify_check(&t);
	qemu_oracle(&t);
	free(buf);
	rw_teardown(&t);
}

/* ---- concurrency: threads writing interleaved sectors of shared grains ---------- */

#define NR_THREADS 4

struct worker {
	struct rw *t;
	unsigned id;
	int err;
	uint64_t bad_off;
};

/* sector s belongs to thread s % NR_THREADS; each writes only its own
 * sectors, so many writes race to allocate the same grain */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct rw *t = w->t;
	uint64_t s = 1234567 + w->id, nr_sectors = t->cap / 512;
	uint8_t buf[3 * 512], back[512];

	for (int i = 0; i < 3000 && !w->err; i++) {
		uint64_t sec = vdt_below(&s, nr_sectors / NR_THREADS) * NR_THREADS + w->id;
		if (sec >= nr_sectors)
			continue;
		memset(buf, (int)(1 + vdt_below(&s, 255)), 512);
		if (vdt_below(&s, 3)) {
			w->err = vmdk_pwrite(t->d, buf, 512, sec * 512);
			if (!w->err)
				memcpy(t->ref + sec * 512, buf, 512);
		} else {
			w->err = vmdk_pread(t->d, back, 512, sec * 512);
			if (!w->err && memcmp(back, t->ref + sec * 512, 512)) {
				w->err = -EILSEQ;
				w->bad_off = sec * 512;
			}
		}
	}
	return NULL;
}

/* meanwhile: block status and flushes on the same disk */
static void *status_main(void *arg)
{
	struct worker *w = arg;
	struct rw *t = w->t;
	uint64_t s = 99;

	for (int i = 0; i < 400 && !w->err; i++) {
		enum vmdk_bs kind;
		uint64_t off = vdt_below(&s, t->cap), run = 0;
		w->err = vmdk_block_status(t->d, off, t->cap - off, &kind, &run);
		if (!w->err && (!run || run > t->cap - off))
			w->err = -ERANGE;
		if (!w->err && i % 40 == 0)
			w->err = vmdk_flush(t->d);
	}
	return NULL;
}

static void run_concurrent(const struct cfg *c)
{
	pthread_t th[NR_THREADS], sth;
	struct worker sw;
	struct worker w[NR_THREADS];
	struct rw t;

	rw_setup(&t, c);
	for (unsigned i = 0; i < NR_THREADS; i++) {
		w[i] = (struct worker){ .t = &t, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	sw = (struct worker){ .t = &t, .id = NR_THREADS };
	assert_int_equal(pthread_create(&sth, NULL, status_main, &sw), 0);
	pthread_join(sth, NULL);
	if (sw.err)
		fail_msg("%s: status/flush thread: error %d", c->name, sw.err);
	for (unsigned i = 0; i < NR_THREADS; i++) {
		pthread_join(th[i], NULL);
		if (w[i].err)
			fail_msg("%s: thread %u: error %d at %llu", c->name, i, w[i].err,
				 (unsigned long long)w[i].bad_off);
	}
	verify_all(&t);
	verify_block_status(&t);
	t.dirty = true;
	rw_close(&t);
	rw_open(&t);
	verify_all(&t);
	assert_int_equal(vmdk_close(t.d), 0);
	t.d = NULL;
	verify_check(&t);
	qemu_oracle(&t);
	rw_teardown(&t);
}

static void test_concurrent(void **state)
{
	(void)state;
	run_concurrent(&cfgs[1]); /* 8 KiB grains: 16 sectors, 4 threads each */
	run_concurrent(&cfgs[4]); /* split */
}

/* subformat names, both ways */
static void test_subformat_names(void **state)
{
	static const char *names[] = { "monolithicSparse", "twoGbMaxExtentSparse",
				       "monolithicFlat", "twoGbMaxExtentFlat",
				       "streamOptimized", "vmfs", "vmfsSparse", "seSparse" };
	enum vmdk_subformat sf;

	(void)state;
	for (int i = 0; i < VMDK_SUBFORMAT_COUNT; i++) {
		assert_int_equal(vmdk_subformat_parse(names[i], &sf), 0);
		assert_int_equal(sf, i);
		assert_string_equal(vmdk_subformat_name(sf), names[i]);
	}
	assert_int_equal(vmdk_subformat_parse("vmfsThin", &sf), -EINVAL);
	assert_int_equal(vmdk_subformat_parse("", &sf), -EINVAL);
	assert_int_equal(vmdk_subformat_parse("monolithicsparse", &sf), -EINVAL);
}

int main(void)
{
	struct CMUnitTest tests[sizeof cfgs / sizeof cfgs[0] + 3];
	size_t n = 0;

	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_subformat_names);
	for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
		tests[n] = (struct CMUnitTest)cmocka_unit_test(test_cfg);
		tests[n].name = cfgs[i].name;
		tests[n].initial_state = (void *)&cfgs[i];
		n++;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_zeroed_grain_status);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_concurrent);
	vd_log_set(vdt_log, NULL);
	return _cmocka_run_group_tests("vmdk_rw", tests, n, NULL, NULL);
}
