/* tests — unit tests of the bounded grain table cache, vmdk/vmdk_gt.c
 * (format layer, private API): with the cache forced down to one slot,
 * every table change evicts a dirty table, which must be written back in
 * order and read back intact; the result is compared entry by entry with
 * a plain array kept by the test and with the bytes on disk read by
 * pread, not through the cache. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vmdk_int.h"

#define NR_GD 8u
#define GTES 128u
#define GRAIN 4096u
#define GD_OFF 512u
#define DATA_OFF 4096u

static char *make_file(char **dir)
{
	char *path;
	uint8_t zero[DATA_OFF] = { 0 };

	*dir = vdt_mkdtemp("gt");
	path = vdt_join(*dir, "t.bin");
	assert_int_equal(vdt_write_file(path, zero, sizeof zero), 0);
	return path;
}

static void open_gt(const char *path, struct vd_file **f, struct vmdk_gt *t)
{
	const struct vd_io *io = vd_io_posix();

	assert_int_equal(io->open(io, path, VD_O_RDWR, f), 0);
	assert_int_equal(vmdk_gt_init(t, *f, path, GRAIN, GTES,
				      (uint64_t)NR_GD * GTES * GRAIN, GD_OFF, 0), 0);
	assert_int_equal(vmdk_regions_add(&t->meta, 0, 1, VMDK_REG_HEADER, 0), 0);
	assert_int_equal(vmdk_gt_regions(t, true), 0);
}

/* Every table change lands on the single slot another dirty table holds. */
static void test_one_slot_writeback(void **state)
{
	char *dir, *path = make_file(&dir);
	struct vd_file *f;
	struct vmdk_gt t;
	uint32_t want[NR_GD * GTES] = { 0 }, gte;
	uint64_t append_at = DATA_OFF, seed = 7;
	uint8_t grain[GRAIN];

	(void)state;
	open_gt(path, &f, &t);
	t.slot_mask = 0; /* one slot: the smallest cache */
	for (unsigned k = 0; k < 200; k++) {
		uint64_t g = vdt_below(&seed, NR_GD * GTES), at;
		assert_int_equal(vmdk_gt_lookup(&t, g, &gte), 0);
		assert_int_equal(gte, want[g]);
		if (gte)
			continue;
		at = VD_ROUND_UP(append_at, GRAIN);
		memset(grain, (int)(g & 0xff), sizeof grain);
		assert_int_equal(vd_pwrite(f, grain, GRAIN, at), 0);
		append_at = at + GRAIN;
		t.file_size = VD_MAX(t.file_size, append_at); /* as the extents do */
		assert_int_equal(vmdk_gt_set(&t, g, (uint32_t)(at / VD_SECTOR), &append_at), 0);
		want[g] = (uint32_t)(at / VD_SECTOR);
	}
	assert_int_equal(vmdk_gt_flush(&t), 0);
	vmdk_gt_destroy(&t);
	vd_close(f);

	/* the directory and tables on disk, read without the library */
	for (uint32_t i = 0; i < NR_GD; i++) {
		uint8_t le[4], raw[GTES * 4];
		assert_int_equal(vdt_peek(path, le, 4, GD_OFF + 4 * i), 0);
		for (uint32_t j = 0; j < GTES; j++)
			if (want[i * GTES + j])
				assert_int_not_equal(get_le32(le), 0);
		if (!get_le32(le))
			continue;
		assert_int_equal(vdt_peek(path, raw, sizeof raw,
					  (off_t)get_le32(le) * VD_SECTOR), 0);
		for (uint32_t j = 0; j < GTES; j++)
			assert_int_equal(get_le32(raw + 4 * j), want[i * GTES + j]);
	}
	/* and reopened through the cache */
	open_gt(path, &f, &t);
	for (uint64_t g = 0; g < NR_GD * GTES; g++) {
		assert_int_equal(vmdk_gt_lookup(&t, g, &gte), 0);
		assert_int_equal(gte, want[g]);
	}
	vmdk_gt_destroy(&t);
	vd_close(f);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

/* Directory entries naming one table share one slot and are flagged. */
static void test_shared_table_flagged(void **state)
{
	char *dir, *path = make_file(&dir);
	const struct vd_io *io = vd_io_posix();
	struct vd_file *f;
	struct vmdk_gt t;
	uint8_t le[4];

	(void)state;
	put_le32(le, 2048 / VD_SECTOR); /* one table inside the file */
	for (uint32_t i = 0; i < NR_GD; i++)
		assert_int_equal(vdt_poke(path, le, 4, GD_OFF + 4 * i), 0);
	assert_int_equal(io->open(io, path, VD_O_RDONLY, &f), 0);
	assert_int_equal(vmdk_gt_init(&t, f, path, GRAIN, GTES,
				      (uint64_t)NR_GD * GTES * GRAIN, GD_OFF, 0), 0);
	vdt_last_msg[0] = 0;
	assert_int_equal(vmdk_gt_regions(&t, true), -VD_EBADDATA); /* writable: refused */
	assert_non_null(strstr(vdt_last_msg, "t.bin"));
	vmdk_gt_destroy(&t);
	assert_int_equal(vmdk_gt_init(&t, f, path, GRAIN, GTES,
				      (uint64_t)NR_GD * GTES * GRAIN, GD_OFF, 0), 0);
	assert_int_equal(vmdk_gt_regions(&t, false), 0); /* read-only: a warning */
	assert_int_equal(t.nr_overlaps, NR_GD - 1);
	for (uint32_t i = 0; i < NR_GD; i++)
		assert_int_equal(!!(t.flags[i] & VMDK_GT_BAD), i != 0);
	vmdk_gt_destroy(&t);
	vd_close(f);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

/* A writable open checks the tables laid one after another in one read,
 * each on its own, and caches none of them (each is read again, once,
 * when a lookup needs it); tables laid otherwise are read one by one.  Layouts: 0 in order, 1 in reverse order, 2 in order
 * with table 5 naming a grain on table 2. */
#define RUN_TBL 16u  /* sector of the first table */
#define RUN_DATA 32u /* sector of grain 0 */
static void run_layout(int layout)
{
	char *dir, *path;
	uint8_t le[4], zero[64 << 10] = { 0 };
	struct vd_countio *ci;
	struct vd_count_stats st;
	struct vd_file *f;
	struct vmdk_gt t;
	uint32_t gte;

	dir = vdt_mkdtemp("gt");
	path = vdt_join(dir, "t.bin");
	assert_int_equal(vdt_write_file(path, zero, sizeof zero), 0);
	for (uint32_t i = 0; i < NR_GD; i++) {
		uint32_t at = layout == 1 ? RUN_TBL + NR_GD - 1 - i : RUN_TBL + i;
		put_le32(le, at);
		assert_int_equal(vdt_poke(path, le, 4, GD_OFF + 4 * i), 0);
		put_le32(le, layout == 2 && i == 5 ? RUN_TBL + 2 : RUN_DATA + 8 * i);
		assert_int_equal(vdt_poke(path, le, 4, (off_t)at * VD_SECTOR + 4 * i), 0);
	}
	assert_int_equal(vd_countio_create(NULL, &ci), 0);
	assert_int_equal(vd_countio_io(ci)->open(vd_countio_io(ci), path, VD_O_RDWR, &f), 0);
	assert_int_equal(vmdk_gt_init(&t, f, path, GRAIN, GTES,
				      (uint64_t)NR_GD * GTES * GRAIN, GD_OFF, 0), 0);
	assert_int_equal(vmdk_regions_add(&t.meta, 0, 1, VMDK_REG_HEADER, 0), 0);
	vd_countio_reset(ci);
	vdt_last_msg[0] = 0;
	if (layout == 2) {
		assert_int_equal(vmdk_gt_regions(&t, true), -VD_EBADDATA);
		assert_non_null(strstr(vdt_last_msg, "directory entry 5"));
	} else {
		assert_int_equal(vmdk_gt_regions(&t, true), 0);
		vd_countio_total(ci, &st);
		assert_int_equal(st.meta_reads + st.data_reads, layout == 0 ? 1 : NR_GD);
		for (uint64_t g = 0; g < NR_GD * GTES; g++) {
			assert_int_equal(vmdk_gt_lookup(&t, g, &gte), 0);
			assert_int_equal(gte, g % (GTES + 1) == 0 ? RUN_DATA + 8 * (g / GTES) : 0);
		}
		vd_countio_total(ci, &st);
		assert_int_equal(st.meta_reads + st.data_reads, (layout == 0 ? 1 : NR_GD) + NR_GD);
	}
	vmdk_gt_destroy(&t);
	vd_close(f);
	vd_countio_destroy(ci);
	vdt_rmtree(dir);
	free(dir);
	free(path);
}

static void test_tables_read_in_runs(void **state)
{
	(void)state;
	for (int layout = 0; layout < 3; layout++)
		run_layout(layout);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_slot_writeback),
		cmocka_unit_test(test_shared_table_flagged),
		cmocka_unit_test(test_tables_read_in_runs),
	};

	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
