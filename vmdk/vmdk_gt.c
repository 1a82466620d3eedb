/* vmdk — 32-bit two-level grain tables shared by hosted sparse, stream and
 * COWD extents (format layer): the fixed-size table cache, region checks
 * of directories and tables, grain checks as tables load, in-memory
 * updates and their ordered write-back.
 *
 * CACHE: VMDK_GT_CACHE_BYTES of tables (2048 KDMV/stream tables of 2 KiB,
 * 256 COWD tables of 16 KiB; fewer for small disks), direct mapped by the
 * table's position in the file, so memory never depends on the directory
 * size a header claims, and directory entries naming one table share one
 * slot.  A hit costs a division and a compare.  A dirty table is pinned until flush: a
 * miss on its slot flushes first (all invariants below hold; flushing
 * early is always allowed).  A miss reads the table and checks each grain
 * against the sorted metadata regions: O(gtes log regions).
 * REGIONS: header, descriptor, directories and every table are checked
 * against each other and the file's end at open (vmdk_gt_regions: a sort
 * of at most 2 regions per directory entry).  Grain-versus-metadata is
 * checked as tables load, and before the first write of an open every
 * allocated table is checked once (vmdk_gt_verify), so no in-place write
 * (header, descriptor, table, grain) can land on another region; grain
 * versus grain is left to vmdk_gt_check (sort of all grains).
 *
 * WRITE-ORDER INVARIANTS (kept by vmdk_gt_flush; cited as [Gn] elsewhere):
 *  G1. Grain data is durable before any reachable table entry that points
 *      to it: flush syncs the file before writing a GT that a directory
 *      entry on disk already names.
 *  G2. A GT is written before its redundant copy: after a crash the
 *      primary is never behind the RGT, so primary wins on repair.
 *  G3. A newly allocated GT (and RGT) is durable before the GD (and RGD)
 *      entry that points to it.  Until that entry is written nothing
 *      reaches the new table, so it is written with the grain data, before
 *      the first sync.
 * A flush is therefore: new tables; sync (data and new tables); changed
 * tables that were already reachable, then new directory entries; sync.
 * Two syncs whatever was allocated; a flush with no table change is the
 * one sync of the data (vmdk_sparse.c), and none when nothing was written
 * since the last flush (vmdk_disk.c, vmdk_flush).
 *  G4. Nothing is ever written in place of live data: grains and new
 *      tables are appended past the end of the file, and a table or grain
 *      rewritten in place was proved (vmdk_gt_regions, vmdk_gt_verify) to
 *      overlap no other region.
 *  G5. A new directory entry is written to the redundant directory before
 *      the primary one: the primary entry is the commit point, and a
 *      redundant entry without a primary one is dropped on recovery.
 * A crash at any point therefore leaves every grain reading its old or its
 * new content; the worst case is a leaked grain or table. */
#include "vmdk_int.h"

#include <errno.h>
#include <stdlib.h>

#define GT_MAX_REPORTS 10u /* region problems logged at open */
#define GT_RUN_BYTES (1u << 20) /* tables read at once by vmdk_gt_verify */

static uint64_t gt_bytes(const struct vmdk_gt *t)
{
	return VD_ROUND_UP((uint64_t)t->gtes_per_gt * 4, VD_SECTOR);
}

/* Tables that do not overlap (vmdk_gt_regions) have distinct sector / table
 * size, and the tables a writer lays out one after another (all of them,
 * for a disk vdelta, qemu or VMware created) fall in distinct slots while
 * the directory fits the cache. */
static struct vmdk_gt_slot *gt_slot(const struct vmdk_gt *t, uint32_t sector)
{
	return &t->slots[(uint32_t)((uint64_t)sector * VD_SECTOR / gt_bytes(t)) & t->slot_mask];
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

/* Slots: the cache's bytes over a table's, a power of two, no more than
 * the directory needs. */
static int cache_init(struct vmdk_gt *t)
{
	uint64_t want = VD_MAX(VMDK_GT_CACHE_BYTES / gt_bytes(t), 1), n = 1;

	while (n * 2 <= want && n < t->nr_gd)
		n *= 2;
	t->slots = calloc(n, sizeof *t->slots);
	t->slot_mask = (uint32_t)n - 1;
	t->flags = calloc(t->nr_gd ? t->nr_gd : 1, 1);
	return t->slots && t->flags ? 0 : -ENOMEM;
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
	t->open_size = t->file_size;
	if (!err)
		err = read_dir(t, gd_off, &t->gd, "grain directory (gdOffset)");
	if (!err && rgd_off)
		err = read_dir(t, rgd_off, &t->rgd, "redundant grain directory (rgdOffset)");
	if (!err)
		err = cache_init(t);
	if (err)
		vmdk_gt_destroy(t);
	return err;
}

void vmdk_gt_destroy(struct vmdk_gt *t)
{
	for (uint32_t i = 0; t->slots && i <= t->slot_mask; i++)
		free(t->slots[i].gt);
	free(t->slots);
	free(t->gd);
	free(t->rgd);
	free(t->flags);
	vmdk_regions_free(&t->meta);
	t->slots = NULL;
	t->gd = t->rgd = NULL;
	t->flags = NULL;
}

/* ---- region checks ----------------------------------------------------------------------- */

struct region_report {
	struct vmdk_gt *t;
	bool strict;
	uint64_t n;
};

static void region_problem(void *opaque, const struct vmdk_region *a,
			   const struct vmdk_region *b, uint64_t file_sectors)
{
	struct region_report *rr = opaque;
	char msg[320];

	if (b->kind == VMDK_REG_GT)
		rr->t->flags[b->index] |= VMDK_GT_BAD;
	if (rr->n++ >= GT_MAX_REPORTS)
		return;
	vmdk_region_msg(a, b, file_sectors, msg, sizeof msg);
	vd_log(rr->strict ? VD_LOG_ERROR : VD_LOG_WARN, "%s: %s", rr->t->path, msg);
}

static int add_tables(struct vmdk_gt *t)
{
	uint64_t gd_sectors = VD_DIV_ROUND_UP((uint64_t)t->nr_gd * 4, VD_SECTOR);
	uint64_t gt_sectors = gt_bytes(t) / VD_SECTOR;
	int err = vmdk_regions_add(&t->meta, t->gd_off / VD_SECTOR, gd_sectors,
				   VMDK_REG_GD, 0);

	if (!err && t->rgd)
		err = vmdk_regions_add(&t->meta, t->rgd_off / VD_SECTOR, gd_sectors,
				       VMDK_REG_RGD, 0);
	for (uint32_t i = 0; !err && i < t->nr_gd; i++) {
		if (t->gd[i])
			err = vmdk_regions_add(&t->meta, t->gd[i], gt_sectors, VMDK_REG_GT, i);
		if (!err && t->rgd && t->rgd[i])
			err = vmdk_regions_add(&t->meta, t->rgd[i], gt_sectors, VMDK_REG_RGT, i);
	}
	return err;
}

/* Tables that fit the cache are all checked at a writable open (the
 * grains against the regions: the open is refused rather than the first
 * write); larger sets wait for the first write (vmdk_gt_verify). */
static int verify_if_small(struct vmdk_gt *t)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < t->nr_gd; i++)
		n += t->gd[i] != 0;
	if (n * gt_bytes(t) > VMDK_GT_CACHE_BYTES)
		return 0;
	return vmdk_gt_verify(t);
}

int vmdk_gt_regions(struct vmdk_gt *t, bool strict)
{
	struct region_report rr = { .t = t, .strict = strict };
	int err = add_tables(t);

	if (!err)
		err = vmdk_regions_check(&t->meta, t->file_size, region_problem, &rr,
					 &t->nr_overlaps);
	t->strict = strict;
	if (!err && !t->nr_overlaps)
		return strict ? verify_if_small(t) : 0;
	if (err)
		return err;
	if (rr.n > GT_MAX_REPORTS)
		vd_log(strict ? VD_LOG_ERROR : VD_LOG_WARN, "%s: %llu more region problems",
		       t->path, (unsigned long long)(rr.n - GT_MAX_REPORTS));
	if (!strict) {
		vd_warn("%s: metadata regions overlap or lie outside the file: reading "
			"anyway (read-only); run `vdelta check`", t->path);
		return 0;
	}
	vd_err("%s: metadata regions overlap or lie outside the file: refusing to open "
	       "for writing (a write would destroy data)", t->path);
	return -VD_EBADDATA;
}


/* ---- the table cache ---------------------------------------------------------------------- */

/* A grain of table i against the metadata (and, before writes, the file's
 * end at open): an error when strict, else one warning per extent. */
static int grain_problem(struct vmdk_gt *t, uint32_t i, uint32_t j, uint32_t v,
			 const struct vmdk_region *r)
{
	char name[128] = "the end of the file";
	uint64_t g = (uint64_t)i * t->gtes_per_gt + j;

	if (r)
		vmdk_region_name(r, name, sizeof name);
	if (!t->strict && t->warned)
		return 0;
	vd_log(t->strict ? VD_LOG_ERROR : VD_LOG_WARN, "%s: grain %llu at sector %u (grain "
	       "table of directory entry %u) %s %s%s", t->path, (unsigned long long)g, v, i,
	       r ? "overlaps the" : "lies past", name,
	       t->strict ? ": refusing to write" : ": reading anyway (read-only)");
	t->warned = true;
	return t->strict ? -VD_EBADDATA : 0;
}

static int table_validate(struct vmdk_gt *t, uint32_t i, const uint32_t *gt)
{
	uint64_t len = t->stream ? 1 : t->grain_size / VD_SECTOR;
	int err = 0;

	if (!t->meta.sorted)
		return 0;
	for (uint32_t j = 0; !err && j < t->gtes_per_gt; j++) {
		const struct vmdk_region *r;
		if (gt[j] <= VMDK_GTE_ZEROED)
			continue;
		r = vmdk_regions_find(&t->meta, gt[j], len);
		if (r || (!t->verified && (uint64_t)gt[j] * VD_SECTOR >= t->open_size))
			err = grain_problem(t, i, j, gt[j], r);
	}
	return err;
}

static bool table_in_file(const struct vmdk_gt *t, uint32_t i, uint32_t n)
{
	uint64_t off = (uint64_t)t->gd[i] * VD_SECTOR;

	return off >= VD_SECTOR &&
	       off + n * gt_bytes(t) <= VD_ROUND_UP(t->file_size, VD_SECTOR);
}

static int table_outside(const struct vmdk_gt *t, uint32_t i)
{
	vd_err("%s: grain directory entry %u = %u points outside the file", t->path, i,
	       t->gd[i]);
	return -VD_EBADDATA;
}

static void table_decode(const struct vmdk_gt *t, const uint8_t *raw, uint32_t *gt)
{
	for (uint32_t j = 0; j < t->gtes_per_gt; j++)
		gt[j] = get_le32(raw + 4 * j);
}

/* Read table i (at gd[i]) into slot; a dirty occupant is flushed first. */
static int table_load(struct vmdk_gt *t, uint32_t i, struct vmdk_gt_slot *slot)
{
	uint64_t len = (uint64_t)t->gtes_per_gt * 4;
	int err = 0;

	if (!table_in_file(t, i, 1))
		return table_outside(t, i);
	if (slot->dirty && (err = vmdk_gt_flush(t)))
		return err;
	slot->sector = 0;
	if (!slot->gt && !(slot->gt = malloc(len)))
		return -ENOMEM;
	err = vd_pread_meta(t->file, slot->gt, len, (uint64_t)t->gd[i] * VD_SECTOR);
	if (err) {
		vd_err("%s: reading grain table %u: %s", t->path, i, strerror(-err));
		return err;
	}
	table_decode(t, (const uint8_t *)slot->gt, slot->gt); /* in place */
	err = table_validate(t, i, slot->gt);
	if (!err) {
		slot->sector = t->gd[i];
		slot->index = i;
	}
	return err;
}

int vmdk_gt_table(struct vmdk_gt *t, uint32_t i, uint32_t **out)
{
	struct vmdk_gt_slot *slot;
	int err = 0;

	*out = NULL;
	if (!t->gd[i])
		return 0;
	slot = gt_slot(t, t->gd[i]);
	if (slot->sector != t->gd[i] && (err = table_load(t, i, slot)))
		return err;
	*out = slot->gt;
	return 0;
}

/* Is GTE v of grain g usable? */
static int gte_check(const struct vmdk_gt *t, uint64_t grain, uint32_t v)
{
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
	return 0;
}

int vmdk_gt_lookup(struct vmdk_gt *t, uint64_t grain, uint32_t *gte)
{
	uint64_t i = grain / t->gtes_per_gt;
	struct vmdk_gt_slot *slot;
	uint32_t v;
	int err;

	if (grain >= t->nr_grains)
		return -EINVAL;
	if (!t->gd[i]) {
		*gte = 0;
		return 0;
	}
	slot = gt_slot(t, t->gd[i]);
	if (slot->sector != t->gd[i] && (err = table_load(t, (uint32_t)i, slot)))
		return err;
	v = slot->gt[grain % t->gtes_per_gt];
	if (v == 0 || (v > VMDK_GTE_ZEROED && (uint64_t)v * VD_SECTOR < t->file_size &&
	    (uint64_t)v * VD_SECTOR >= t->data_start)) {
		*gte = v; /* the common cases, checked in one go */
		return 0;
	}
	err = gte_check(t, grain, v);
	if (!err)
		*gte = v;
	return err;
}

/* A new, zeroed table for GD entry i at *append_at, cached and pinned. */
static int alloc_gt(struct vmdk_gt *t, uint32_t i, uint64_t *append_at)
{
	uint64_t at = VD_ROUND_UP(*append_at, VD_SECTOR);
	struct vmdk_gt_slot *slot;
	int err = 0;

	if (at / VD_SECTOR + 2 * gt_bytes(t) / VD_SECTOR > UINT32_MAX) {
		vd_err("%s: file would exceed 2 TiB of sectors", t->path);
		return -EFBIG;
	}
	slot = gt_slot(t, (uint32_t)(at / VD_SECTOR));
	if (slot->dirty && (err = vmdk_gt_flush(t)))
		return err;
	if (!slot->gt && !(slot->gt = malloc((size_t)t->gtes_per_gt * 4)))
		return -ENOMEM;
	memset(slot->gt, 0, (size_t)t->gtes_per_gt * 4);
	t->gd[i] = (uint32_t)(at / VD_SECTOR);
	slot->sector = t->gd[i];
	slot->index = i;
	slot->dirty = 2;
	at += gt_bytes(t);
	if (t->rgd) {
		t->rgd[i] = (uint32_t)(at / VD_SECTOR);
		at += gt_bytes(t);
	}
	*append_at = at;
	t->file_size = VD_MAX(t->file_size, at);
	return 0;
}

int vmdk_gt_set(struct vmdk_gt *t, uint64_t grain, uint32_t gte, uint64_t *append_at)
{
	uint64_t i = grain / t->gtes_per_gt;
	struct vmdk_gt_slot *slot;
	uint32_t old;
	int err = vmdk_gt_lookup(t, grain, &old); /* loads (and pins below) the table */

	if (err)
		return err;
	if (!t->gd[i] && (err = alloc_gt(t, (uint32_t)i, append_at)))
		return err;
	slot = gt_slot(t, t->gd[i]);
	slot->gt[grain % t->gtes_per_gt] = gte;
	slot->dirty |= 1;
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

/* Write the dirty tables: the new ones (never on disk: no directory entry
 * names them yet) or the ones a directory entry already names. */
static int flush_tables(struct vmdk_gt *t, bool new_ones)
{
	int err = 0;

	for (uint32_t k = 0; !err && k <= t->slot_mask; k++) {
		struct vmdk_gt_slot *slot = &t->slots[k];
		if (new_ones ? !(slot->dirty & 2) : slot->dirty != 1)
			continue;
		err = write_table(t, slot->gt, slot->sector); /* [G2] primary first */
		if (!err && t->rgd)
			err = write_table(t, slot->gt, t->rgd[slot->index]);
	}
	return err;
}

static int flush_dir(struct vmdk_gt *t)
{
	int err = 0;

	for (uint32_t k = 0; !err && k <= t->slot_mask; k++)
		if (t->slots[k].dirty & 2)
			err = write_dir_entry(t, t->slots[k].index);
	return err;
}

int vmdk_gt_flush(struct vmdk_gt *t)
{
	int err;

	if (!t->any_dirty)
		return 0;
	err = flush_tables(t, true); /* [G3] unreachable until flush_dir */
	if (!err)
		err = vd_sync(t->file); /* [G1] data before reachable tables, [G3] */
	if (!err)
		err = flush_tables(t, false);
	if (!err)
		err = flush_dir(t); /* [G5] */
	if (!err)
		err = vd_sync(t->file);
	if (err) {
		vd_err("%s: writing grain tables: %s", t->path, strerror(-err));
		return err;
	}
	for (uint32_t k = 0; k <= t->slot_mask; k++)
		t->slots[k].dirty = 0;
	t->any_dirty = false;
	return 0;
}

/* Tables checked at once by vmdk_gt_verify: as many as GT_RUN_BYTES holds. */
static uint32_t run_most(const struct vmdk_gt *t)
{
	return (uint32_t)VD_MAX(GT_RUN_BYTES / gt_bytes(t), 1);
}

/* How many tables from i on lie one after another inside the file, none
 * of them cached after the first (at most run_most). */
static uint32_t table_run(const struct vmdk_gt *t, uint32_t i)
{
	uint32_t n = 1, step = (uint32_t)(gt_bytes(t) / VD_SECTOR);

	while (i + n < t->nr_gd && n < run_most(t) && t->gd[i + n] &&
	       t->gd[i + n] == t->gd[i] + (uint64_t)n * step && table_in_file(t, i, n + 1) &&
	       gt_slot(t, t->gd[i + n])->sector != t->gd[i + n])
		n++;
	return n;
}

/* Check tables i..i+n-1 of a run in one read, without caching them
 * (raw: run_most tables, gt: one decoded). */
static int table_check_run(struct vmdk_gt *t, uint32_t i, uint32_t n, uint8_t *raw,
			   uint32_t *gt)
{
	uint64_t len = gt_bytes(t);
	int err;

	if (!table_in_file(t, i, n)) /* a run is inside: only a first table can be out */
		return table_outside(t, i);
	/* the last table's bytes only: the file may end there */
	err = vd_pread_meta(t->file, raw, (n - 1) * len + (uint64_t)t->gtes_per_gt * 4,
			    (uint64_t)t->gd[i] * VD_SECTOR);
	if (err)
		vd_err("%s: reading grain tables %u to %u: %s", t->path, i, i + n - 1,
		       strerror(-err));
	for (uint32_t k = 0; !err && k < n; k++) {
		table_decode(t, raw + k * len, gt);
		err = table_validate(t, i + k, gt);
	}
	return err;
}

/* Every table is checked once, before the first write of an open: the
 * cached ones where they are, the others read in runs and not kept (a
 * writable open of an empty 1 GiB delta reads its 32 tables in one read
 * and holds none of them until its I/O asks). */
int vmdk_gt_verify(struct vmdk_gt *t)
{
	uint8_t *raw = NULL;
	uint32_t *gt = NULL;
	int err = 0;

	for (uint32_t i = 0, n = 1; !t->verified && !err && i < t->nr_gd; i += n) {
		struct vmdk_gt_slot *slot = t->gd[i] ? gt_slot(t, t->gd[i]) : NULL;
		n = 1;
		if (!slot)
			continue;
		if (slot->sector == t->gd[i]) { /* checked when it loaded */
			err = table_validate(t, i, slot->gt);
			continue;
		}
		if (!raw && (!(raw = malloc(run_most(t) * gt_bytes(t))) ||
			     !(gt = malloc((size_t)t->gtes_per_gt * 4))))
			err = -ENOMEM;
		n = table_run(t, i);
		if (!err)
			err = table_check_run(t, i, n, raw, gt);
	}
	free(raw);
	free(gt);
	if (!err)
		t->verified = true;
	return err;
}

/* Allocated grains of one table (entries past the extent's end ignored). */
static int table_allocated(struct vmdk_gt *t, uint32_t i, uint64_t *n)
{
	uint64_t first = (uint64_t)i * t->gtes_per_gt;
	uint32_t *gt;
	int err = vmdk_gt_table(t, i, &gt);

	for (uint32_t j = 0; !err && j < t->gtes_per_gt && first + j < t->nr_grains; j++) {
		if (gt[j] <= VMDK_GTE_ZEROED && (gt[j] == 0 || t->zeroed_ok || t->stream))
			continue;
		err = gte_check(t, first + j, gt[j]);
		*n += !err;
	}
	return err;
}

/* A table past the end of the file cannot be read: the allocation is not
 * known, which is an error, not zero. */
static int table_inside(const struct vmdk_gt *t, uint32_t i)
{
	if ((uint64_t)t->gd[i] * VD_SECTOR + gt_bytes(t) <= t->file_size)
		return 0;
	vd_err("%s: grain directory entry %u = %u points outside the file: its grains "
	       "cannot be counted", t->path, i, t->gd[i]);
	return -VD_EBADDATA;
}

/* Tables flagged VMDK_GT_BAD (sharing or overlapping another region) are
 * not counted: each table once, so the cost follows the file, not the
 * directory's claims. */
int vmdk_gt_allocated(struct vmdk_gt *t, uint64_t *bytes)
{
	uint64_t n = 0;
	int err = 0;

	for (uint32_t i = 0; !err && i < t->nr_gd; i++)
		if (t->gd[i] && !(err = table_inside(t, i)) && !(t->flags[i] & VMDK_GT_BAD))
			err = table_allocated(t, i, &n);
	*bytes = n * t->grain_size;
	return err;
}

/* RGT i against GT i (loaded): rewritten when it differs. */
static int repair_one(struct vmdk_gt *t, uint32_t i, unsigned *fixed)
{
	uint64_t len = (uint64_t)t->gtes_per_gt * 4;
	uint8_t *raw;
	uint32_t *gt;
	int err = vmdk_gt_table(t, i, &gt);

	if (err || (uint64_t)t->rgd[i] * VD_SECTOR + gt_bytes(t) > t->file_size)
		return err; /* outside: reported by check */
	raw = malloc(len);
	if (!raw)
		return -ENOMEM;
	err = vd_pread_meta(t->file, raw, len, (uint64_t)t->rgd[i] * VD_SECTOR);
	for (uint32_t j = 0; !err && j < t->gtes_per_gt; j++)
		if (get_le32(raw + 4 * j) != gt[j]) {
			err = write_table(t, gt, t->rgd[i]);
			(*fixed)++;
			break;
		}
	free(raw);
	return err;
}

int vmdk_gt_repair_redundant(struct vmdk_gt *t, unsigned *fixed)
{
	int err = t->rgd ? vmdk_gt_verify(t) : 0; /* before any write */

	*fixed = 0;
	for (uint32_t i = 0; t->rgd && !err && i < t->nr_gd; i++) {
		if (!t->gd[i] && t->rgd[i]) { /* [G5] allocation never committed */
			uint8_t zero[4] = { 0 };
			err = vd_pwrite(t->file, zero, 4, t->rgd_off + 4ull * i);
			t->rgd[i] = 0;
			(*fixed)++;
		} else if (t->gd[i] && t->rgd[i]) {
			err = repair_one(t, i, fixed);
		}
	}
	return err ? err : (*fixed ? vd_sync(t->file) : 0);
}
