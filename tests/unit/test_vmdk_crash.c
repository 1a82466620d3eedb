/* tests — crash test of the format layer's write path (vmdk_sparse.c,
 * vmdk_gt.c, vmdk_disk.c): with the fault-injecting io (common_io.c) an
 * operation is cut after each prefix k = 0, 1, 2, ... of its writes, the
 * crash is applied (drop 0: unsynced writes kept; 1: dropped; 2: dropped
 * but the newest, as a disk that reorders writes between two syncs may
 * leave them, vd_faultio_keep_newest), and the image is
 * reopened with plain POSIX io.  Every grain must read either its old or
 * its new content, an old unallocated grain must still be unallocated,
 * vmdk_check must find no errors (leaks allowed) before and after a
 * read-write recovery open, and once k reaches the operation's write count
 * everything reads new.
 *
 * Operations (on a 96 MiB monolithicSparse, 64 KiB grains, 3 GTs):
 *   new_gt   - a write into the range of a GD entry that is 0 (its GD and
 *              RGD entries zeroed after create): new grains AND a new GT;
 *   old_gt   - a write overwriting half an allocated grain and allocating
 *              the next one, inside an existing GT;
 *   backing  - a partial-grain write into an unallocated grain with a
 *              backing callback that supplies the rest of the grain;
 *   zeroes   - a zero write across allocated and unallocated grains;
 *   zeroed_gte - on a zeroed-grain disk with a backing, a zero write over
 *              allocated grains and unallocated ones (which become GTE 1);
 *   split_cross - on a twoGbMaxExtentSparse (24 MiB extents), a write
 *              across the extent boundary allocating in both extents;
 *   flushed_then_crash - new_gt's write, a flush, then another allocating
 *              write: once the flush has returned 0 the first write must
 *              survive every crash (acknowledged writes are durable);
 *   desc_mono, desc_split - a descriptor edit (vmdk_desc_set +
 *              vmdk_desc_write) on the embedded descriptor and on a
 *              separate descriptor file (temp + rename): the key is then
 *              either absent or set, and the disk always opens.
 *
 * group_commit: threads write and flush at once (vmdk_flush runs one flush
 * at a time and skips a flush whose writes another one covered); whenever
 * a flush returns 0, nothing a crash would roll back may overlap the bytes
 * its caller wrote (vd_faultio_unsynced), in place or in a new grain. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <pthread.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vmdk.h"

#define GRAIN 65536ull
#define CAP (96ull << 20)
#define GT_COVER (GRAIN * 512)
#define SPLIT (24ull << 20)

/* grains whose content we follow: written ones, neighbours, GT edges */
static const uint64_t watch[] = { 0, 1, 2, 3, 4, 5, 9, 10, 11, 511, 512, 513,
				  514, 515, 1023, 1024, 1535 };
#define NR_WATCH (sizeof watch / sizeof watch[0])

struct op {
	const char *name;
	uint64_t off, len;
	bool zeroes, backing;
	unsigned min_writes; /* data + GT + RGT (+ GD + RGD) at least */
	bool split;          /* twoGbMaxExtentSparse with 24 MiB extents */
	bool desc_edit;      /* a descriptor edit instead of a write */
	bool zeroed;         /* created with zeroed_grain (GTE 1 allowed) */
	uint64_t off2, len2; /* a second write after a flush (len2 0: none) */
};

static const struct op ops[] = {
	{ .name = "new_gt", .off = GT_COVER + GRAIN / 2, .len = GRAIN * 3 / 2, .min_writes = 5 },
	{ .name = "old_gt", .off = 3 * GRAIN + GRAIN / 2, .len = GRAIN, .min_writes = 3 },
	{ .name = "backing", .off = 10 * GRAIN + 100, .len = 200, .backing = true,
	  .min_writes = 3 },
	{ .name = "backing_new_gt", .off = GT_COVER + 3 * GRAIN - 1000, .len = 3000,
	  .backing = true, .min_writes = 5 },
	{ .name = "zeroes", .off = 2 * GRAIN + 512, .len = 3 * GRAIN, .zeroes = true,
	  .min_writes = 1 },
	{ .name = "split_cross", .off = SPLIT - GRAIN / 2, .len = GRAIN, .split = true,
	  .min_writes = 6 },
	{ .name = "zeroed_gte", .off = 2 * GRAIN, .len = 20 * GRAIN, .zeroes = true,
	  .backing = true, .zeroed = true, .min_writes = 2 },
	{ .name = "flushed_then_crash", .off = GT_COVER + GRAIN / 2, .len = GRAIN * 3 / 2,
	  .off2 = 4 * GRAIN + 100, .len2 = GRAIN, .min_writes = 8 },
	{ .name = "desc_mono", .desc_edit = true, .min_writes = 1 },
	{ .name = "desc_split", .desc_edit = true, .split = true, .min_writes = 2 },
};

struct crash {
	char *dir, *bdir, *wdir, *base, *work; /* base/disk.vmdk, work/disk.vmdk */
	uint8_t *old[NR_WATCH], *new[NR_WATCH];
	bool old_unalloc[NR_WATCH];
	bool first[NR_WATCH];  /* touched by the first write */
	bool durable;          /* the flush after the first write returned 0 */
};

/* vmdk_check messages of the last check, for failure reports */
static char check_log[4096];
static void check_msg(void *opaque, bool is_error, const char *file, const char *msg)
{
	size_t n = strlen(check_log);

	(void)opaque;
	(void)file;
	snprintf(check_log + n, sizeof check_log - n, "  %s: %s\n",
		 is_error ? "error" : "note", msg);
}

static uint8_t backing_byte(uint64_t off)
{
	return (uint8_t)((off * 7 + 3) ^ 0xb0);
}

static int backing_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	uint8_t *b = buf;

	(void)opaque;
	for (size_t i = 0; i < len; i++)
		b[i] = backing_byte(off + i);
	return 0;
}

static uint8_t data_byte(uint64_t off)
{
	return (uint8_t)(off * 131 + 17) | 1; /* never zero */
}

/* base image: grains 0..3 hold 'A'..'D'; monolithic: GD/RGD entry 1 zeroed */
static void make_base(struct crash *c, const struct op *op)
{
	struct vmdk_create_opts o = { .capacity = CAP, .subformat = VMDK_MONOLITHIC_SPARSE,
				      .parent_cid = VMDK_CID_NONE };
	struct vmdk_disk *d;

	if (op->split) {
		o.subformat = VMDK_TWOGB_SPARSE;
		o.split_size = SPLIT;
	}
	o.zeroed_grain = op->zeroed;
	uint8_t *buf = malloc(GRAIN), hdr[512], zero[4] = { 0 };
	struct vmdk_check_result r;

	assert_int_equal(vmdk_create(c->base, &o, NULL), 0);
	assert_int_equal(vmdk_open(c->base, VMDK_OPEN_RDWR, NULL, &d), 0);
	assert_true(vmdk_grain_size(d) == GRAIN);
	for (int g = 0; g < 4; g++) {
		memset(buf, 'A' + g, GRAIN);
		assert_int_equal(vmdk_pwrite(d, buf, GRAIN, g * GRAIN), 0);
	}
	assert_int_equal(vmdk_close(d), 0);
	free(buf);
	if (op->split)
		return;
	/* GD entry 1 -> 0 in both directories: its 32 MiB have no GT */
	assert_int_equal(vdt_peek(c->base, hdr, sizeof hdr, 0), 0);
	assert_true(get_le32(hdr) == 0x564d444bu);
	assert_true(get_le32(hdr + 8) & 2); /* redundant GD in use */
	assert_int_equal(vdt_poke(c->base, zero, 4, (off_t)(get_le64(hdr + 56) * 512 + 4)), 0);
	assert_int_equal(vdt_poke(c->base, zero, 4, (off_t)(get_le64(hdr + 48) * 512 + 4)), 0);
	/* still a valid image, reading the same */
	assert_int_equal(vmdk_open(c->base, VMDK_OPEN_RDONLY, NULL, &d), 0);
	check_log[0] = 0;
	assert_int_equal(vmdk_check(d, check_msg, NULL, &r), 0);
	if (r.errors)
		fail_msg("base: vmdk_check: %u errors\n%s", r.errors, check_log);
	{
		enum vmdk_bs kind;
		uint64_t run;
		assert_int_equal(vmdk_block_status(d, GT_COVER, GT_COVER, &kind, &run), 0);
		assert_int_equal(kind, VMDK_BS_UNALLOC);
		assert_true(run == GT_COVER);
	}
	assert_int_equal(vmdk_close(d), 0);
}

static int setup(void **state)
{
	struct crash *c = calloc(1, sizeof *c);

	c->dir = vdt_mkdtemp("crash");
	c->bdir = vdt_join(c->dir, "base");
	c->wdir = vdt_join(c->dir, "work");
	c->base = vdt_join(c->bdir, "disk.vmdk");
	c->work = vdt_join(c->wdir, "disk.vmdk");
	mkdir(c->bdir, 0755);
	for (size_t i = 0; i < NR_WATCH; i++) {
		c->old[i] = calloc(1, GRAIN);
		c->new[i] = calloc(1, GRAIN);
	}
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct crash *c = *state;

	vdt_rmtree(c->bdir);
	vdt_rmtree(c->wdir);
	vdt_rmtree(c->dir);
	free(c->dir);
	free(c->bdir);
	free(c->wdir);
	free(c->base);
	free(c->work);
	for (size_t i = 0; i < NR_WATCH; i++) {
		free(c->old[i]);
		free(c->new[i]);
	}
	free(c);
	return 0;
}

/* apply a write of [off, off+len) to the expected new content of grain i */
static bool apply_write(struct crash *c, const struct op *op, size_t i, uint64_t off,
			uint64_t len)
{
	uint64_t g0 = watch[i] * GRAIN;

	if (!len || off >= g0 + GRAIN || off + len <= g0)
		return false;
	/* a grain the disk lacks is completed from the backing */
	if (op->backing && c->old_unalloc[i])
		for (uint64_t b = 0; b < GRAIN; b++)
			c->new[i][b] = backing_byte(g0 + b);
	for (uint64_t b = 0; b < GRAIN; b++)
		if (g0 + b >= off && g0 + b < off + len)
			c->new[i][b] = op->zeroes ? 0 : data_byte(g0 + b);
	return true;
}

/* expected old and new content of the watched grains, from first principles */
static void expect_contents(struct crash *c, const struct op *op)
{
	for (size_t i = 0; i < NR_WATCH; i++) {
		memset(c->old[i], watch[i] < 4 ? 'A' + (int)watch[i] : 0, GRAIN);
		c->old_unalloc[i] = watch[i] >= 4;
		memcpy(c->new[i], c->old[i], GRAIN);
		c->first[i] = apply_write(c, op, i, op->off, op->len);
		assert_false(apply_write(c, op, i, op->off2, op->len2) && c->first[i]);
	}
}

/* work/ := a copy of every file of base/ */
static void copy_base(struct crash *c)
{
	DIR *dir = opendir(c->bdir);
	struct dirent *e;

	vdt_rmtree(c->wdir);
	assert_int_equal(mkdir(c->wdir, 0755), 0);
	assert_non_null(dir);
	while ((e = readdir(dir))) {
		char *from, *to;
		if (e->d_name[0] == '.')
			continue;
		from = vdt_join(c->bdir, e->d_name);
		to = vdt_join(c->wdir, e->d_name);
		assert_int_equal(vdt_copy_file(from, to), 0);
		free(from);
		free(to);
	}
	closedir(dir);
}

static int write_data(struct vmdk_disk *d, uint64_t off, uint64_t len)
{
	uint8_t *buf = malloc(len);
	int rc;

	for (uint64_t i = 0; i < len; i++)
		buf[i] = data_byte(off + i);
	rc = vmdk_pwrite(d, buf, len, off);
	free(buf);
	return rc;
}

static int do_op(struct crash *c, struct vmdk_disk *d, const struct op *op)
{
	int rc;

	if (op->desc_edit) {
		rc = vmdk_desc_set(d, "ddb.comment", "crash test");
		return rc ? rc : vmdk_desc_write(d);
	}
	if (op->backing)
		vmdk_set_backing(d, backing_read, NULL);
	if (op->zeroes)
		return vmdk_pwrite_zeroes(d, op->len, op->off);
	rc = write_data(d, op->off, op->len);
	if (rc || !op->len2)
		return rc;
	rc = vmdk_flush(d);
	c->durable = rc == 0;
	return rc ? rc : write_data(d, op->off2, op->len2);
}

/* open (through io), write, flush, close; returns the writes attempted */
static long run_op(struct crash *c, const struct op *op, long budget, int drop)
{
	struct vd_faultio *fi;
	struct vmdk_disk *d = NULL;
	long n;
	int rc;

	copy_base(c);
	c->durable = false;
	assert_int_equal(vd_faultio_create(budget, drop > 0, &fi), 0);
	if (drop == 2)
		vd_faultio_keep_newest(fi);
	rc = vmdk_open(c->work, VMDK_OPEN_RDWR, vd_faultio_io(fi), &d);
	if (rc == 0) {
		rc = do_op(c, d, op);
		if (!rc)
			rc = vmdk_flush(d);
		{
			int rc2 = vmdk_close(d);
			rc = rc ? rc : rc2;
		}
	}
	if (!vd_faultio_crashed(fi) && rc)
		fail_msg("%s: operation failed without a fault: %d (%s)", op->name, rc,
			 vdt_last_msg);
	if (vd_faultio_crashed(fi) && !rc)
		fail_msg("%s: a write failed but the operation reported success", op->name);
	n = vd_faultio_writes(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	return n;
}

/* every watched grain reads old or new (new only when must_be_new) */
static void verify(struct crash *c, const struct op *op, unsigned flags, bool must_be_new,
		   long k, int drop)
{
	struct vmdk_disk *d;
	struct vmdk_check_result r;
	uint8_t *buf = malloc(GRAIN);
	int rc = vmdk_open(c->work, flags | VMDK_OPEN_DIRTY_OK, NULL, &d);

	if (rc)
		fail_msg("%s k=%ld drop=%d: reopen failed %d: %s", op->name, k, drop, rc,
			 vdt_last_msg);
	for (size_t i = 0; i < NR_WATCH; i++) {
		bool is_old, is_new;
		assert_int_equal(vmdk_pread(d, buf, GRAIN, watch[i] * GRAIN), 0);
		is_old = !memcmp(buf, c->old[i], GRAIN);
		is_new = !memcmp(buf, c->new[i], GRAIN);
		if (must_be_new && !is_new)
			fail_msg("%s k=%ld drop=%d: grain %llu is not new after the whole "
				 "operation", op->name, k, drop,
				 (unsigned long long)watch[i]);
		if (c->durable && c->first[i] && !is_new)
			fail_msg("%s k=%ld drop=%d: grain %llu lost although its flush "
				 "returned 0", op->name, k, drop, (unsigned long long)watch[i]);
		if (!is_old && !is_new)
			fail_msg("%s k=%ld drop=%d: grain %llu is neither old nor new",
				 op->name, k, drop, (unsigned long long)watch[i]);
		if (is_old && !is_new && c->old_unalloc[i]) {
			enum vmdk_bs kind;
			uint64_t run;
			assert_int_equal(vmdk_block_status(d, watch[i] * GRAIN, GRAIN,
							   &kind, &run), 0);
			if (kind != VMDK_BS_UNALLOC)
				fail_msg("%s k=%ld drop=%d: grain %llu reads old zeros but "
					 "is no longer unallocated (would mask a parent)",
					 op->name, k, drop, (unsigned long long)watch[i]);
		}
	}
	if (op->desc_edit) {
		const char *v = vmdk_desc_get(d, "ddb.comment");
		if (v ? strcmp(v, "crash test") != 0 : must_be_new)
			fail_msg("%s k=%ld drop=%d: ddb.comment = %s", op->name, k, drop,
				 v ? v : "(absent)");
	}
	memset(&r, 0, sizeof r);
	check_log[0] = 0;
	assert_int_equal(vmdk_check(d, check_msg, NULL, &r), 0);
	if (r.errors)
		fail_msg("%s k=%ld drop=%d flags=%u: vmdk_check: %u errors\n%s", op->name,
			 k, drop, flags, r.errors, check_log);
	assert_int_equal(vmdk_close(d), 0);
	free(buf);
}

static void crash_test(struct crash *c, const struct op *op)
{
	long total;

	make_base(c, op);
	expect_contents(c, op);
	total = run_op(c, op, LONG_MAX, false);
	verify(c, op, VMDK_OPEN_RDONLY, true, total, false);
	if (total < (long)op->min_writes)
		fail_msg("%s: only %ld writes", op->name, total);
	print_message("%s: %ld writes\n", op->name, total);
	for (int drop = 0; drop < 3; drop++) {
		for (long k = 0; k <= total; k++) {
			assert_int_equal(run_op(c, op, k, drop) >= k, true);
			verify(c, op, VMDK_OPEN_RDONLY, k == total, k, drop);
			/* a read-write open recovers; content stays as it was */
			verify(c, op, VMDK_OPEN_RDWR, k == total, k, drop);
			verify(c, op, VMDK_OPEN_RDONLY, k == total, k, drop);
		}
	}
	vdt_rmtree(c->bdir);
	mkdir(c->bdir, 0755);
}

/* ---- group commit ------------------------------------------------------------------- */

#define GC_THREADS 4
#define GC_ROUNDS 200
#define GC_HELD 8 /* allocated grains per thread, written in place */

struct gc {
	struct vmdk_disk *d;
	struct vd_faultio *fi;
	const char *path;     /* the extent file */
	uint64_t held_pos[GC_THREADS * GC_HELD];
	unsigned id, bad;
	int err;
};

/* Where the 4 KiB at off sit in the extent file (the grain is allocated);
 * no cmocka assert here: it runs on the writer threads too. */
static int gc_pos(struct vmdk_disk *d, uint64_t off, uint64_t *pos)
{
	uint64_t n;
	int fd, err = vmdk_file_map(d, off, 4096, &fd, pos, &n);

	return err ? err : n == 4096 ? 0 : -ERANGE;
}

/* Round r: even, 4 KiB into a held grain; odd, 4 KiB into a new grain. */
static void *gc_main(void *opaque)
{
	struct gc *g = opaque;
	uint8_t buf[4096];

	for (unsigned r = 0; r < GC_ROUNDS && !g->err; r++) {
		unsigned held = g->id * GC_HELD + r / 2 % GC_HELD;
		uint64_t off = r % 2 ? (GC_THREADS * GC_HELD + g->id * GC_ROUNDS + r) * GRAIN
				     : held * GRAIN + (r / 2 / GC_HELD % 16) * 4096;
		uint64_t pos;

		memset(buf, (int)(g->id * 64 + r % 64 + 1), sizeof buf);
		pos = g->held_pos[held] + off % GRAIN;
		g->err = vmdk_pwrite(g->d, buf, sizeof buf, off);
		if (!g->err && r % 2)
			g->err = gc_pos(g->d, off, &pos);
		if (!g->err)
			g->err = vmdk_flush(g->d);
		if (!g->err && vd_faultio_unsynced(g->fi, g->path, pos, sizeof buf))
			g->bad++;
	}
	return NULL;
}

static void gc_base(struct crash *c, struct gc *g)
{
	struct vmdk_create_opts o = { .capacity = CAP, .subformat = VMDK_MONOLITHIC_SPARSE,
				      .parent_cid = VMDK_CID_NONE };
	uint8_t *buf = calloc(1, GRAIN);
	struct vmdk_disk *d;

	assert_int_equal(vmdk_create(c->work, &o, NULL), 0);
	assert_int_equal(vmdk_open(c->work, VMDK_OPEN_RDWR, NULL, &d), 0);
	for (unsigned i = 0; i < GC_THREADS * GC_HELD; i++) {
		memset(buf, 'a' + (int)i, GRAIN);
		assert_int_equal(vmdk_pwrite(d, buf, GRAIN, i * GRAIN), 0);
		assert_int_equal(gc_pos(d, i * GRAIN, &g->held_pos[i]), 0);
	}
	assert_int_equal(vmdk_close(d), 0);
	free(buf);
}

static void test_group_commit(void **state)
{
	struct crash *c = *state;
	struct gc g = { 0 }, w[GC_THREADS];
	struct vmdk_extent_info ei;
	pthread_t th[GC_THREADS];
	unsigned bad = 0;

	mkdir(c->wdir, 0755);
	gc_base(c, &g);
	assert_int_equal(vd_faultio_create(LONG_MAX, true, &g.fi), 0);
	assert_int_equal(vmdk_open(c->work, VMDK_OPEN_RDWR, vd_faultio_io(g.fi), &g.d), 0);
	assert_int_equal(vmdk_extent_info_get(g.d, 0, &ei), 0);
	g.path = ei.path;
	/* the check sees an unsynced write, and the flush clears it */
	assert_int_equal(write_data(g.d, 0, 4096), 0);
	assert_true(vd_faultio_unsynced(g.fi, g.path, g.held_pos[0], 4096));
	assert_int_equal(vmdk_flush(g.d), 0);
	assert_false(vd_faultio_unsynced(g.fi, g.path, g.held_pos[0], 4096));
	for (unsigned i = 0; i < GC_THREADS; i++) {
		w[i] = g;
		w[i].id = i;
		assert_int_equal(pthread_create(&th[i], NULL, gc_main, &w[i]), 0);
	}
	for (unsigned i = 0; i < GC_THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(w[i].err, 0);
		bad += w[i].bad;
	}
	if (bad)
		fail_msg("%u flushes returned before their caller's write was synced", bad);
	assert_int_equal(vmdk_close(g.d), 0);
	vd_faultio_destroy(g.fi);
	vdt_rmtree(c->wdir);
}

#define OP_TEST(i)                                                  \
	static void test_##i(void **state)                          \
	{                                                           \
		crash_test(*state, &ops[i]);                        \
	}
OP_TEST(0)
OP_TEST(1)
OP_TEST(2)
OP_TEST(3)
OP_TEST(4)
OP_TEST(5)
OP_TEST(6)
OP_TEST(7)
OP_TEST(8)
OP_TEST(9)

int main(void)
{
	struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_0, setup, teardown),
		cmocka_unit_test_setup_teardown(test_1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_2, setup, teardown),
		cmocka_unit_test_setup_teardown(test_3, setup, teardown),
		cmocka_unit_test_setup_teardown(test_4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_5, setup, teardown),
		cmocka_unit_test_setup_teardown(test_6, setup, teardown),
		cmocka_unit_test_setup_teardown(test_7, setup, teardown),
		cmocka_unit_test_setup_teardown(test_8, setup, teardown),
		cmocka_unit_test_setup_teardown(test_9, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	};

	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		tests[i].name = ops[i].name;
	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
