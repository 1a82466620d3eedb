/* vmdk — metadata region map of one extent file (format layer): the
 * header, descriptor area, directories and tables as sector ranges, sorted
 * once, then checked against each other and the file's end, and searched
 * when grains are checked against them.
 *
 * COST: n regions (at most 2 per directory entry + 4, so bounded by the
 * directory, which lies inside the file); sorting O(n log n); the overlap
 * sweep O(n) and it reports each region that starts inside an earlier one
 * once (not every pair, which could be O(n^2)); a grain lookup O(log n). */
#include "vmdk_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static const char *const region_names[] = {
	[VMDK_REG_HEADER] = "header",
	[VMDK_REG_DESC] = "descriptor area (descriptorOffset/descriptorSize)",
	[VMDK_REG_GD] = "grain directory (gdOffset)",
	[VMDK_REG_RGD] = "redundant grain directory (rgdOffset)",
	[VMDK_REG_GT] = "grain table",
	[VMDK_REG_RGT] = "redundant grain table",
	[VMDK_REG_FOOTER] = "footer",
};

int vmdk_regions_add(struct vmdk_regions *rs, uint64_t sector, uint64_t nr_sectors,
		     enum vmdk_region_kind kind, uint32_t index)
{
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 16;
		struct vmdk_region *r = realloc(rs->r, cap * sizeof *r);
		if (!r)
			return -ENOMEM;
		rs->r = r;
		rs->cap = cap;
	}
	rs->r[rs->n++] = (struct vmdk_region){
		.sector = sector, .nr_sectors = VD_MIN(nr_sectors, VMDK_REGION_MAX_SECTORS),
		.kind = kind, .index = index };
	rs->sorted = false;
	return 0;
}

void vmdk_regions_free(struct vmdk_regions *rs)
{
	free(rs->r);
	free(rs->max_end);
	memset(rs, 0, sizeof *rs);
}

void vmdk_region_name(const struct vmdk_region *r, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s", region_names[r->kind]);


	if (n >= 0 && (size_t)n < size && (r->kind == VMDK_REG_GT || r->kind == VMDK_REG_RGT))
		n += snprintf(buf + n, size - n, " of directory entry %u", r->index);
	if (n >= 0 && (size_t)n < size)
		snprintf(buf + n, size - n, " (sectors %llu..%llu)",
			 (unsigned long long)r->sector,
			 (unsigned long long)(r->sector + r->nr_sectors - 1));
}

static int region_cmp(const void *a, const void *b)
{
	const struct vmdk_region *x = a, *y = b;

	if (x->sector != y->sector)
		return x->sector < y->sector ? -1 : 1;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

static uint64_t region_end(const struct vmdk_region *r)
{
	return r->sector + r->nr_sectors;
}

/* Sort and build the running maximum of region ends (for lookups). */
static int regions_sort(struct vmdk_regions *rs)
{
	uint64_t *m;

	if (rs->sorted)
		return 0;
	if (rs->n)
		qsort(rs->r, rs->n, sizeof *rs->r, region_cmp);
	m = realloc(rs->max_end, (rs->n ? rs->n : 1) * sizeof *m);
	if (!m)
		return -ENOMEM;
	rs->max_end = m;
	for (size_t i = 0; i < rs->n; i++)
		m[i] = VD_MAX(i ? m[i - 1] : 0, region_end(&rs->r[i]));
	rs->sorted = true;
	return 0;
}

void vmdk_region_msg(const struct vmdk_region *a, const struct vmdk_region *b,
		     uint64_t file_sectors, char *buf, size_t size)
{
	char na[128], nb[128];

	vmdk_region_name(b, nb, sizeof nb);
	if (!a) {
		snprintf(buf, size, "%s lies outside the file (%llu sectors)", nb,
			 (unsigned long long)file_sectors);
		return;
	}
	vmdk_region_name(a, na, sizeof na);
	snprintf(buf, size, "%s overlaps %s", nb, na);
}

int vmdk_regions_check(struct vmdk_regions *rs, uint64_t file_size, vmdk_region_fn *fn,
		       void *opaque, uint64_t *nr_problems)
{
	uint64_t file_sectors = VD_DIV_ROUND_UP(file_size, VD_SECTOR), n = 0;
	size_t top = 0;
	int err = regions_sort(rs);

	for (size_t i = 0; !err && i < rs->n; i++) {
		const struct vmdk_region *r = &rs->r[i];
		if (region_end(r) > file_sectors) {
			fn(opaque, NULL, r, file_sectors);
			n++;
		}
		if (i && r->sector < region_end(&rs->r[top])) {
			fn(opaque, &rs->r[top], r, file_sectors);
			n++;
		}
		if (!i || region_end(r) > region_end(&rs->r[top]))
			top = i;
	}
	*nr_problems = n;
	return err;
}

/* How far back a lookup searches for the region to name (the running
 * maximum already proved one overlaps; this only finds its name). */
#define REGION_NAME_SCAN 4096u

const struct vmdk_region *vmdk_regions_find(const struct vmdk_regions *rs, uint64_t sector,
					    uint64_t nr_sectors)
{
	static const struct vmdk_region unnamed = { .kind = VMDK_REG_GT,
						    .index = UINT32_MAX };
	uint64_t end = sector + nr_sectors;
	size_t lo = 0, hi = rs->n;

	while (lo < hi) { /* first region starting at or past end */
		size_t mid = lo + (hi - lo) / 2;
		if (rs->r[mid].sector < end)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo || rs->max_end[lo - 1] <= sector)
		return NULL;
	for (size_t i = lo, k = 0; i-- > 0 && k < REGION_NAME_SCAN; k++)
		if (region_end(&rs->r[i]) > sector)
			return &rs->r[i];
	return &unnamed;
}

uint64_t vmdk_regions_room(const struct vmdk_regions *rs, uint64_t sector,
			   uint64_t nr_sectors, enum vmdk_region_kind self)
{
	uint64_t room = nr_sectors;

	for (size_t i = 0; i < rs->n; i++) {
		const struct vmdk_region *r = &rs->r[i];
		if (r->kind == self || !r->nr_sectors)
			continue;
		if (r->sector <= sector && region_end(r) > sector)
			return 0;
		if (r->sector > sector)
			room = VD_MIN(room, r->sector - sector);
	}
	return room;
}
