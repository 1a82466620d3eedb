/* vmdk — consistency check of a disk's extents (format layer): the
 * disk-level walk and the shared check of 32-bit grain tables. */
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
static int check_rgt(struct gt_check *c, uint32_t i)
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
	err = vd_pread(t->file, raw, len, off);
	for (uint32_t j = 0; !err && j < t->gtes_per_gt; j++)
		if (get_le32(raw + 4 * j) != t->gts[i][j]) {
			problem(c, !c->unclean, "grain table %u entry %u: primary %u, redundant %u%s",
				i, j, t->gts[i][j], get_le32(raw + 4 * j),
				c->unclean ? " (interrupted update; fixed on next write open)" : "");
			break;
		}
	free(raw);
	return err;
}

static int check_entries(struct gt_check *c, uint32_t i)
{
	struct vmdk_gt *t = c->gt;
	uint64_t first = (uint64_t)i * t->gtes_per_gt;
	int err = 0;

	for (uint32_t j = 0; !err && j < t->gtes_per_gt && first + j < t->nr_grains; j++) {
		uint32_t gte = t->gts[i][j];
		uint64_t at = (uint64_t)gte * VD_SECTOR;
		if (gte == VMDK_GTE_ZEROED && !t->zeroed_ok && !t->stream)
			problem(c, true, "grain %llu: GTE 1 (zeroed grain) without the "
				"zeroed-grain flag", (unsigned long long)(first + j));
		if (gte <= VMDK_GTE_ZEROED)
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
	int err;

	if (off < VD_SECTOR || off + table_bytes(t) > VD_ROUND_UP(t->file_size, VD_SECTOR)) {
		problem(c, true, "grain directory entry %u = %u points outside the file", i,
			t->gd[i]);
		return 0;
	}
	err = vmdk_gt_load(t, i);
	if (err || !t->gts[i])
		return err;
	err = check_entries(c, i);
	if (!err && t->rgd)
		err = check_rgt(c, i);
	return err;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Sort referenced grains: overlaps and the space nothing points to. */
static void check_overlaps(struct gt_check *c)
{
	uint64_t gs_sectors = c->gt->grain_size / VD_SECTOR, used = 0;
	uint64_t data_end = c->overhead;

	qsort(c->grains, c->nr_grains, sizeof *c->grains, cmp_u32);
	for (uint64_t k = 0; k < c->nr_grains; k++) {
		if (k && !c->gt->stream && c->grains[k] < c->grains[k - 1] + gs_sectors)
			problem(c, true, "grains at sectors %u and %u overlap", c->grains[k - 1],
				c->grains[k]);
		used += c->gt->grain_size;
		data_end = VD_MAX(data_end, (uint64_t)c->grains[k] * VD_SECTOR + c->gt->grain_size);
	}
	c->res->allocated += used;
	if (!c->gt->stream && c->gt->file_size > c->overhead + used) {
		uint64_t leaked = c->gt->file_size - c->overhead - used;
		/* tables allocated past overHead are metadata, not leaks */
		for (uint32_t i = 0; i < c->gt->nr_gd; i++)
			if ((uint64_t)c->gt->gd[i] * VD_SECTOR >= c->overhead)
				leaked -= VD_MIN(leaked, table_bytes(c->gt) * (c->gt->rgd ? 2 : 1));
		leaked = leaked / c->gt->grain_size * c->gt->grain_size;
		c->res->leaked += leaked;
	}
}

int vmdk_gt_check(struct vmdk_extent *e, struct vmdk_gt *gt, uint64_t overhead,
		  bool unclean, vmdk_check_fn *fn, void *opaque,
		  struct vmdk_check_result *res)
{
	struct gt_check c = { .e = e, .gt = gt, .fn = fn, .opaque = opaque, .res = res,
			      .overhead = overhead, .unclean = unclean };
	int err = 0;

	pthread_mutex_lock(&e->disk->lock);
	for (uint32_t i = 0; !err && i < gt->nr_gd; i++) {
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
		if (e->ops->info(e, &info) || !info.header_capacity_sectors ||
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

int vmdk_check(struct vmdk_disk *d, vmdk_check_fn *fn, void *opaque,
	       struct vmdk_check_result *out)
{
	int err = 0;

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
