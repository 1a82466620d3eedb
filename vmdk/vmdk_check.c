/* vmdk — consistency check of a disk's extents (format layer): the
 * disk-level walk and the shared check of 32-bit grain tables.
 *
 * COST of the table check: the metadata regions were sorted at open, so
 * their overlaps are one sweep; each distinct table is read once (tables
 * sharing or overlapping another region are reported, not walked); each
 * grain is looked up among the regions (O(log n)) and all grains are
 * sorted once for grain-versus-grain overlaps.  Memory: 4 bytes per
 * allocated grain, which the file must hold. */
#define _GNU_SOURCE
#include "vmdk_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct gt_check {
	struct vmdk_extent *e;
	struct vmdk_gt *gt;
	vmdk_check_fn *fn;
	void *opaque;
	struct vmdk_check_result *res;
	uint64_t overhead;
	bool unclean;
	uint32_t *grains;      /* sector of every referenced grain */
	uint64_t nr_grains, cap;
	unsigned reported;
};

#define MAX_REPORTS 20u /* per extent, so a wrecked file does not flood */

static void problem(struct gt_check *c, bool is_error, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void problem(struct gt_check *c, bool is_error, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (is_error)
		c->res->errors++;
	else
		c->res->warnings++;
	if (c->reported++ >= MAX_REPORTS)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	c->fn(c->opaque, is_error, c->e->path, msg);
}

static int note_grain(struct gt_check *c, uint32_t sector)
{
	if (c->nr_grains == c->cap) {
		uint64_t cap = c->cap ? c->cap * 2 : 1024;
		uint32_t *g = realloc(c->grains, cap * sizeof *g);
		if (!g)
			return -ENOMEM;
		c->grains = g;
		c->cap = cap;
	}
	c->grains[c->nr_grains++] = sector;
	return 0;
}

static uint64_t table_bytes(const struct vmdk_gt *t)
{
	return VD_ROUND_UP((uint64_t)t->gtes_per_gt * 4, VD_SECTOR);
}

/* Compare GT i with its redundant copy. */
static int check_rgt(struct gt_check *c, uint32_t i, const uint32_t *gt)
{
	struct vmdk_gt *t = c->gt;
	uint64_t len = table_bytes(t), off = (uint64_t)t->rgd[i] * VD_SECTOR;
	uint8_t *raw;
	int err = 0;

	if (!t->rgd[i] || off + len > t->file_size) {
		problem(c, true, "redundant grain directory entry %u = %u is %s", i, t->rgd[i],
			t->rgd[i] ? "outside the file" : "0 while the primary is allocated");
		return 0;
	}
	raw = malloc(len);
	if (!raw)
		return -ENOMEM;
	err = vd_pread_meta(t->file, raw, len, off);
	for (uint32_t j = 0; !err && j < t->gtes_per_gt; j++)
		if (get_le32(raw + 4 * j) != gt[j]) {
			problem(c, !c->unclean, "grain table %u entry %u: primary %u, redundant %u%s",
				i, j, gt[j], get_le32(raw + 4 * j),
				c->unclean ? " (interrupted update; fixed on next write open)" : "");
			break;
		}
	free(raw);
	return err;
}

/* A grain on a metadata region (header, descriptor, directory, table). */
static bool grain_on_metadata(struct gt_check *c, uint64_t g, uint32_t gte)
{
	const struct vmdk_gt *t = c->gt;
	const struct vmdk_region *r;
	char name[128];

	if (!t->meta.sorted)
		return false;
	r = vmdk_regions_find(&t->meta, gte, t->stream ? 1 : t->grain_size / VD_SECTOR);
	if (!r)
		return false;
	vmdk_region_name(r, name, sizeof name);
	problem(c, true, "grain %llu at sector %u overlaps the %s", (unsigned long long)g,
		gte, name);
	return true;
}

static int check_entries(struct gt_check *c, uint32_t i, const uint32_t *gt)
{
	struct vmdk_gt *t = c->gt;
	uint64_t first = (uint64_t)i * t->gtes_per_gt;
	int err = 0;

	for (uint32_t j = 0; !err && j < t->gtes_per_gt && first + j < t->nr_grains; j++) {
		uint32_t gte = gt[j];
		uint64_t at = (uint64_t)gte * VD_SECTOR;
		if (gte == VMDK_GTE_ZEROED && !t->zeroed_ok && !t->stream)
			problem(c, true, "grain %llu: GTE 1 (zeroed grain) without the "
				"zeroed-grain flag", (unsigned long long)(first + j));
		if (gte <= VMDK_GTE_ZEROED)
			continue;
		if (grain_on_metadata(c, first + j, gte))
			continue;
		if (!t->stream && (at < c->overhead || at + t->grain_size >
				   VD_ROUND_UP(t->file_size, t->grain_size)))
			problem(c, true, "grain %llu at sector %u lies %s",
				(unsigned long long)(first + j), gte,
				at < c->overhead ? "inside the metadata area" : "past end of file");
		else
			err = note_grain(c, gte);
	}
	return err;
}

static int check_table(struct gt_check *c, uint32_t i)
{
	struct vmdk_gt *t = c->gt;
	uint64_t off = (uint64_t)t->gd[i] * VD_SECTOR;
	uint32_t *gt;
	int err;

	if (off < VD_SECTOR || off + table_bytes(t) > VD_ROUND_UP(t->file_size, VD_SECTOR)) {
		problem(c, true, "grain directory entry %u = %u points outside the file", i,
			t->gd[i]);
		return 0;
	}
	err = vmdk_gt_table(t, i, &gt);
	if (err || !gt)
		return err;
	err = check_entries(c, i, gt);
	if (!err && t->rgd)
		err = check_rgt(c, i, gt);
	return err;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Sort referenced grains: overlaps and the space nothing points to. */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Grain-sized slots past overHead that a grain or a table touches. */
static uint64_t slots_used(struct gt_check *c, uint64_t *slots)
{
	const struct vmdk_gt *t = c->gt;
	uint64_t n = 0, distinct = 0, gs = t->grain_size;

	for (uint64_t k = 0; k < c->nr_grains; k++) {
		uint64_t at = (uint64_t)c->grains[k] * VD_SECTOR - c->overhead;
		slots[n++] = at / gs;
		slots[n++] = (at + gs - 1) / gs;
	}
	for (uint32_t i = 0; i < t->nr_gd; i++) {
		uint32_t tab[2] = { t->gd[i], t->rgd ? t->rgd[i] : 0 };
		if (t->flags[i] & VMDK_GT_BAD)
			continue; /* shares or overlaps a region counted already */
		for (int j = 0; j < 2; j++) {
			uint64_t at = (uint64_t)tab[j] * VD_SECTOR - c->overhead;
			if (!tab[j] || (uint64_t)tab[j] * VD_SECTOR < c->overhead)
				continue; /* no table (overHead may be 0) */
			for (uint64_t s = at / gs; s <= (at + table_bytes(t) - 1) / gs; s++)
				slots[n++] = s;
		}
	}
	qsort(slots, n, sizeof *slots, cmp_u64);
	for (uint64_t k = 0; k < n; k++)
		distinct += !k || slots[k] != slots[k - 1];
	return distinct;
}

/* Space past overHead that neither a grain nor a table uses, in whole
 * grains (exact for aligned files, never over-reported otherwise). */
static void check_leaks(struct gt_check *c)
{
	const struct vmdk_gt *t = c->gt;
	uint64_t total, *slots, nr_tables = 0;

	if (t->stream || t->file_size <= c->overhead)
		return;
	for (uint32_t i = 0; i < t->nr_gd; i++)
		nr_tables += (t->gd[i] || (t->rgd && t->rgd[i])) && !(t->flags[i] & VMDK_GT_BAD);
	slots = malloc((2 * c->nr_grains +
			2 * nr_tables * (table_bytes(t) / t->grain_size + 2) + 1) * sizeof *slots);
	if (!slots)
		return; /* leak accounting is advisory */
	total = VD_DIV_ROUND_UP(t->file_size - c->overhead, t->grain_size);
	c->res->leaked += (total - VD_MIN(total, slots_used(c, slots))) * t->grain_size;
	free(slots);
}

/* Sort referenced grains: overlaps, then the space nothing points to. */
static void check_overlaps(struct gt_check *c)
{
	uint64_t gs_sectors = c->gt->grain_size / VD_SECTOR;

	if (c->nr_grains) /* grains is NULL when there are none */
		qsort(c->grains, c->nr_grains, sizeof *c->grains, cmp_u32);
	for (uint64_t k = 1; k < c->nr_grains && !c->gt->stream; k++)
		if (c->grains[k] < c->grains[k - 1] + gs_sectors)
			problem(c, true, "grains at sectors %u and %u overlap", c->grains[k - 1],
				c->grains[k]);
	c->res->allocated += c->nr_grains * c->gt->grain_size;
	check_leaks(c);
}

static void check_region(void *opaque, const struct vmdk_region *a,
			 const struct vmdk_region *b, uint64_t file_sectors)
{
	struct gt_check *c = opaque;
	char msg[320] = "";

	if (c->reported < MAX_REPORTS) /* words only what is shown */
		vmdk_region_msg(a, b, file_sectors, msg, sizeof msg);
	problem(c, true, "%s", msg);
}

int vmdk_gt_check(struct vmdk_extent *e, struct vmdk_gt *gt, uint64_t overhead,
		  bool unclean, vmdk_check_fn *fn, void *opaque,
		  struct vmdk_check_result *res)
{
	struct gt_check c = { .e = e, .gt = gt, .fn = fn, .opaque = opaque, .res = res,
			      .overhead = overhead, .unclean = unclean };
	uint64_t nr_regions;
	int err;

	pthread_mutex_lock(&e->disk->lock);
	err = vmdk_regions_check(&gt->meta, gt->open_size, check_region, &c, &nr_regions);
	for (uint32_t i = 0; !err && i < gt->nr_gd; i++) {
		if (gt->gd[i] && (gt->flags[i] & VMDK_GT_BAD))
			continue; /* reported with the regions; walked once via the other */
		if (gt->gd[i])
			err = check_table(&c, i);
		else if (gt->rgd && gt->rgd[i])
			problem(&c, !unclean, "grain directory entry %u is 0 but the redundant "
				"entry is %u%s", i, gt->rgd[i],
				unclean ? " (interrupted allocation; fixed on next write open)" : "");
	}
	pthread_mutex_unlock(&e->disk->lock);
	if (!err)
		check_overlaps(&c);
	free(c.grains);
	return err;
}

static void check_capacity(struct vmdk_disk *d, vmdk_check_fn *fn, void *opaque,
			   struct vmdk_check_result *res)
{
	for (unsigned i = 0; i < d->nr_extents; i++) {
		struct vmdk_extent *e = &d->extents[i];
		struct vmdk_extent_info info = { 0 };
		char msg[256];
		if (e->kind == VMDK_EXT_ZERO || !e->ops->info || e->kind == VMDK_EXT_FLAT ||
		    e->kind == VMDK_EXT_VMFS)
			continue;
		if (e->ops->info(e, &info, false) || !info.header_capacity_sectors ||
		    info.header_capacity_sectors * VD_SECTOR == e->size)
			continue;
		snprintf(msg, sizeof msg, "header capacity %llu sectors, descriptor extent "
			 "size %llu sectors", (unsigned long long)info.header_capacity_sectors,
			 (unsigned long long)(e->size / VD_SECTOR));
		res->warnings++;
		fn(opaque, false, e->path, msg);
	}
}

static void check_flat(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
		       struct vmdk_check_result *res)
{
	uint64_t size = 0;
	char msg[160];

	if (vd_fsize(e->file, &size) || size >= e->file_offset + e->size)
		return;
	snprintf(msg, sizeof msg, "flat extent file is %llu bytes, shorter than the %llu "
		 "the descriptor needs (the tail reads as zeros)", (unsigned long long)size,
		 (unsigned long long)(e->file_offset + e->size));
	res->warnings++;
	fn(opaque, false, e->path, msg);
}

static void check_discard(void *opaque, bool is_error, const char *file, const char *msg)
{
	(void)opaque, (void)is_error, (void)file, (void)msg;
}

int vmdk_check(struct vmdk_disk *d, vmdk_check_fn *fn, void *opaque,
	       struct vmdk_check_result *out)
{
	int err = 0;

	if (!fn)
		fn = check_discard; /* counts only */
	memset(out, 0, sizeof *out);
	check_capacity(d, fn, opaque, out);
	for (unsigned i = 0; !err && i < d->nr_extents; i++) {
		struct vmdk_extent *e = &d->extents[i];
		if (e->kind == VMDK_EXT_FLAT || e->kind == VMDK_EXT_VMFS)
			check_flat(e, fn, opaque, out);
		else if (e->ops->check)
			err = e->ops->check(e, fn, opaque, out);
	}
	return err;
}
