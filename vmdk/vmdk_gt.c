/* vmdk — 32-bit two-level grain tables shared by hosted sparse, stream and
 * COWD extents (format layer): lazy loading, bounds checks, in-memory
 * updates and their ordered write-back.
 *
 * WRITE-ORDER INVARIANTS (kept by vmdk_gt_flush; cited as [Gn] elsewhere):
 *  G1. Grain data is durable before any table entry that points to it:
 *      flush syncs the file before writing a GT.
 *  G2. A GT is written before its redundant copy: after a crash the
 *      primary is never behind the RGT, so primary wins on repair.
 *  G3. A newly allocated GT (and RGT) is durable before the GD (and RGD)
 *      entry that points to it: GTs, sync, then directory entries, sync.
 *  G4. Nothing is ever written in place of live data: grains and new
 *      tables are appended past the end of the file.
 *  G5. A new directory entry is written to the redundant directory before
 *      the primary one: the primary entry is the commit point, and a
 *      redundant entry without a primary one is dropped on recovery.
 * A crash at any point therefore leaves every grain reading its old or its
 * new content; the worst case is a leaked grain or table. */
#include "vmdk_int.h"

#include <errno.h>
#include <stdlib.h>

static uint64_t gt_bytes(const struct vmdk_gt *t)
{
	return VD_ROUND_UP((uint64_t)t->gtes_per_gt * 4, VD_SECTOR);
}

static int read_dir(struct vmdk_gt *t, uint64_t off, uint32_t **out, const char *what)
{
	uint64_t len = (uint64_t)t->nr_gd * 4;
	uint8_t *raw;
	uint32_t *dir;
	int err;

	if (off < VD_SECTOR || off > t->file_size || len > t->file_size - off) {
		vd_err("%s: %s at byte %llu (%u entries) lies outside the file (%llu bytes)",
		       t->path, what, (unsigned long long)off, t->nr_gd,
		       (unsigned long long)t->file_size);
		return -VD_EBADDATA;
	}
	raw = malloc(len);
	dir = malloc(len);
	if (!raw || !dir) {
		free(raw);
		free(dir);
		return -ENOMEM;
	}
	err = vd_pread_meta(t->file, raw, len, off);
	for (uint32_t i = 0; !err && i < t->nr_gd; i++)
		dir[i] = get_le32(raw + 4 * i);
	free(raw);
	if (err) {
		vd_err("%s: reading %s: %s", t->path, what, strerror(-err));
		free(dir);
		return err;
	}
	*out = dir;
	return 0;
}

int vmdk_gt_init(struct vmdk_gt *t, struct vd_file *f, const char *path,
		 uint64_t grain_size, uint32_t gtes_per_gt, uint64_t extent_size,
		 uint64_t gd_off, uint64_t rgd_off)
{
	uint64_t nr_gd;
	int err;

	memset(t, 0, sizeof *t);
	t->file = f;
	t->path = path;
	t->grain_size = grain_size;
	t->gtes_per_gt = gtes_per_gt;
	t->nr_grains = VD_DIV_ROUND_UP(extent_size, grain_size);
	nr_gd = VD_DIV_ROUND_UP(t->nr_grains, gtes_per_gt);
	if (nr_gd > UINT32_MAX) {
		vd_err("%s: grain directory would need %llu entries", path,
		       (unsigned long long)nr_gd);
		return -VD_EBADDATA;
	}
	t->nr_gd = (uint32_t)nr_gd;
	t->gd_off = gd_off;
	t->rgd_off = rgd_off;
	err = vd_fsize(f, &t->file_size);
	if (!err)
		err = read_dir(t, gd_off, &t->gd, "grain directory (gdOffset)");
	if (!err && rgd_off)
		err = read_dir(t, rgd_off, &t->rgd, "redundant grain directory (rgdOffset)");
	if (!err) {
		t->gts = calloc(t->nr_gd ? t->nr_gd : 1, sizeof *t->gts);
		t->dirty = calloc(t->nr_gd ? t->nr_gd : 1, 1);
		if (!t->gts || !t->dirty)
			err = -ENOMEM;
	}
	if (err)
		vmdk_gt_destroy(t);
	return err;
}

void vmdk_gt_destroy(struct vmdk_gt *t)
{
	if (t->gts)
		for (uint32_t i = 0; i < t->nr_gd; i++)
			free(t->gts[i]);
	free(t->gts);
	free(t->gd);
	free(t->rgd);
	free(t->dirty);
	t->gts = NULL;
	t->gd = t->rgd = NULL;
	t->dirty = NULL;
}

/* Read the table at sector `sector` into a new array. */
static int read_table(struct vmdk_gt *t, uint32_t sector, uint32_t **out)
{
	uint64_t off = (uint64_t)sector * VD_SECTOR, len = (uint64_t)t->gtes_per_gt * 4;
	uint8_t *raw = malloc(len);
	uint32_t *gt = malloc(len);
	int err = raw && gt ? 0 : -ENOMEM;

	if (!err)
		err = vd_pread_meta(t->file, raw, len, off);
	for (uint32_t i = 0; !err && i < t->gtes_per_gt; i++)
		gt[i] = get_le32(raw + 4 * i);
	free(raw);
	if (err) {
		free(gt);
		return err;
	}
	*out = gt;
	return 0;
}

int vmdk_gt_load(struct vmdk_gt *t, uint32_t i)
{
	if (t->gts[i] || !t->gd[i])
		return 0;
	uint64_t off = (uint64_t)t->gd[i] * VD_SECTOR;
	int err;

	if (off < VD_SECTOR || off + gt_bytes(t) > VD_ROUND_UP(t->file_size, VD_SECTOR)) {
		vd_err("%s: grain directory entry %u = %u points outside the file", t->path,
		       i, t->gd[i]);
		return -VD_EBADDATA;
	}
	err = read_table(t, t->gd[i], &t->gts[i]);
	if (err)
		vd_err("%s: reading grain table %u: %s", t->path, i, strerror(-err));
	return err;
}

int vmdk_gt_lookup(struct vmdk_gt *t, uint64_t grain, uint32_t *gte)
{
	uint64_t i = grain / t->gtes_per_gt;
	uint32_t v;
	int err;

	if (grain >= t->nr_grains)
		return -EINVAL;
	if (!t->gts[i] && !t->gd[i]) {
		*gte = 0;
		return 0;
	}
	if (!t->gts[i] && (err = vmdk_gt_load(t, (uint32_t)i)))
		return err;
	v = t->gts[i][grain % t->gtes_per_gt];
	if (v == VMDK_GTE_ZEROED && !t->zeroed_ok && !t->stream) {
		vd_err("%s: grain %llu: GTE 1 (zeroed grain) without the zeroed-grain flag",
		       t->path, (unsigned long long)grain);
		return -VD_EBADDATA;
	}
	if (v > VMDK_GTE_ZEROED && ((uint64_t)v * VD_SECTOR >= t->file_size ||
				    (uint64_t)v * VD_SECTOR < t->data_start)) {
		vd_err("%s: grain %llu: GTE %u points %s", t->path, (unsigned long long)grain,
		       v, (uint64_t)v * VD_SECTOR < t->data_start ? "into the metadata area"
								 : "past the end of the file");
		return -VD_EBADDATA;
	}
	*gte = v;
	return 0;
}

static int alloc_gt(struct vmdk_gt *t, uint32_t i, uint64_t *append_at)
{
	uint64_t at = VD_ROUND_UP(*append_at, VD_SECTOR);

	t->gts[i] = calloc(t->gtes_per_gt, 4);
	if (!t->gts[i])
		return -ENOMEM;
	if (at / VD_SECTOR + 2 * gt_bytes(t) / VD_SECTOR > UINT32_MAX) {
		vd_err("%s: file would exceed 2 TiB of sectors", t->path);
		return -EFBIG;
	}
	t->gd[i] = (uint32_t)(at / VD_SECTOR);
	at += gt_bytes(t);
	if (t->rgd) {
		t->rgd[i] = (uint32_t)(at / VD_SECTOR);
		at += gt_bytes(t);
	}
	*append_at = at;
	t->file_size = VD_MAX(t->file_size, at);
	t->dirty[i] |= 2;
	return 0;
}

int vmdk_gt_set(struct vmdk_gt *t, uint64_t grain, uint32_t gte, uint64_t *append_at)
{
	uint64_t i = grain / t->gtes_per_gt;
	uint32_t old;
	int err = vmdk_gt_lookup(t, grain, &old);

	if (err)
		return err;
	if (!t->gd[i] && (err = alloc_gt(t, (uint32_t)i, append_at)))
		return err;
	t->gts[i][grain % t->gtes_per_gt] = gte;
	t->dirty[i] |= 1;
	t->any_dirty = true;
	return 0;
}

static int write_table(struct vmdk_gt *t, const uint32_t *gt, uint32_t sector)
{
	uint64_t len = gt_bytes(t);
	uint8_t *raw = calloc(1, len);
	int err;

	if (!raw)
		return -ENOMEM;
	for (uint32_t j = 0; j < t->gtes_per_gt; j++)
		put_le32(raw + 4 * j, gt[j]);
	err = vd_pwrite(t->file, raw, len, (uint64_t)sector * VD_SECTOR);
	free(raw);
	return err;
}

static int write_dir_entry(struct vmdk_gt *t, uint32_t i)
{
	uint8_t le[4];
	int err;

	if (t->rgd) { /* [G5] redundant entry first: the primary one commits */
		put_le32(le, t->rgd[i]);
		err = vd_pwrite(t->file, le, 4, t->rgd_off + 4ull * i);
		if (err)
			return err;
	}
	put_le32(le, t->gd[i]);
	return vd_pwrite(t->file, le, 4, t->gd_off + 4ull * i);
}

static int flush_tables(struct vmdk_gt *t)
{
	int err = 0;

	for (uint32_t i = 0; !err && i < t->nr_gd; i++) {
		if (!(t->dirty[i] & 1))
			continue;
		err = write_table(t, t->gts[i], t->gd[i]); /* [G2] primary first */
		if (!err && t->rgd)
			err = write_table(t, t->gts[i], t->rgd[i]);
	}
	return err;
}

static int flush_dir(struct vmdk_gt *t)
{
	int err = 0;

	for (uint32_t i = 0; !err && i < t->nr_gd; i++)
		if (t->dirty[i] & 2)
			err = write_dir_entry(t, i);
	return err;
}

int vmdk_gt_flush(struct vmdk_gt *t)
{
	int err;

	if (!t->any_dirty)
		return 0;
	err = vd_sync(t->file); /* [G1] data before tables */
	if (!err)
		err = flush_tables(t);
	if (!err)
		err = vd_sync(t->file); /* [G3] tables before directory */
	if (!err)
		err = flush_dir(t);
	if (!err)
		err = vd_sync(t->file);
	if (err) {
		vd_err("%s: writing grain tables: %s", t->path, strerror(-err));
		return err;
	}
	memset(t->dirty, 0, t->nr_gd);
	t->any_dirty = false;
	return 0;
}

int vmdk_gt_allocated(struct vmdk_gt *t, uint64_t *bytes)
{
	uint64_t n = 0;
	int err = 0;

	for (uint64_t g = 0; g < t->nr_grains && !err; g++) {
		uint32_t gte;
		if (!t->gd[g / t->gtes_per_gt] && !t->gts[g / t->gtes_per_gt]) {
			g += t->gtes_per_gt - 1 - g % t->gtes_per_gt;
			continue;
		}
		err = vmdk_gt_lookup(t, g, &gte);
		n += !err && gte > VMDK_GTE_ZEROED;
	}
	*bytes = n * t->grain_size;
	return err;
}

int vmdk_gt_repair_redundant(struct vmdk_gt *t, unsigned *fixed)
{
	int err = 0;

	*fixed = 0;
	for (uint32_t i = 0; t->rgd && !err && i < t->nr_gd; i++) {
		uint32_t *rgt;
		if (!t->gd[i] && t->rgd[i]) { /* [G5] allocation never committed */
			uint8_t zero[4] = { 0 };
			err = vd_pwrite(t->file, zero, 4, t->rgd_off + 4ull * i);
			t->rgd[i] = 0;
			(*fixed)++;
			continue;
		}
		if (!t->gd[i] || !t->rgd[i])
			continue;
		if (!t->gts[i] && (err = vmdk_gt_load(t, i)))
			break;
		if ((uint64_t)t->rgd[i] * VD_SECTOR + gt_bytes(t) > t->file_size)
			continue; /* reported by check */
		err = read_table(t, t->rgd[i], &rgt);
		if (err)
			break;
		if (memcmp(rgt, t->gts[i], (size_t)t->gtes_per_gt * 4)) {
			err = write_table(t, t->gts[i], t->rgd[i]);
			(*fixed)++;
		}
		free(rgt);
	}
	return err ? err : (*fixed ? vd_sync(t->file) : 0);
}
