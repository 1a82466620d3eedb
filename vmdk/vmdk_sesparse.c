/* vmdk_sesparse.c — ESXi seSparse extents (magic u64 0xCAFEBABE), read-only
 * (layer 1, format layer).  Owns the constant and volatile header checks,
 * the 64-bit grain directory, a bounded cache of 64-bit grain tables and
 * the GTE decoding (vmdk-format.md §4).
 *
 * Layout, all offsets and sizes in sectors of the constant header:
 *   grain_dir:    u64 entries, 0 = no GT, 0x1000000000000000|index = GT
 *   grain_tables: GT i at grain_tables_offset + i * 64 (4096 u64 GTEs)
 *   grains:       cluster c at grains_offset + c * 8
 * GTE type (top nibble): 0 unallocated (whole value 0), 1 unmapped (zeros,
 * as qemu), 2 zero grain, 3 allocated with the cluster index split as
 * ((e >> 48) & 0xfff) | ((e & 0xffffffffffff) << 12).
 *
 * Writing seSparse needs the free bitmap, backmap and journal kept
 * consistent; it is out of scope, so pwrite is NULL.
 *
 * Locking: the GT cache is protected by e->disk->lock, taken here around
 * each lookup; data reads run outside it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "vmdk_int.h"

#define SES_CONST_MAGIC 0xcafebabeull
#define SES_VOLATILE_MAGIC 0xcafecafeull
#define SES_VERSION 0x0000000200000001ull
#define SES_GRAIN_SECTORS 8u
#define SES_GT_SECTORS 64u
#define SES_GTES_PER_GT 4096u
#define SES_GD_ALLOCATED 0x1000000000000000ull
/* A direct-mapped cache of this many GTs (32 KiB each, 8 MiB in all)
 * bounds memory whatever the capacity (64 TiB = 4 Mi GTs). */
#define SES_CACHE_SLOTS 256u

/* constant header offsets (u64 each) */
enum {
	SES_OFF_MAGIC = 0,
	SES_OFF_VERSION = 8,
	SES_OFF_CAPACITY = 16,
	SES_OFF_GRAIN = 24,
	SES_OFF_GT_SIZE = 32,
	SES_OFF_FLAGS = 40,
	SES_OFF_RESERVED = 48, /* 4 x u64 */
	SES_OFF_REGIONS = 80,  /* 8 x (offset, size) */
	SES_OFF_PAD = 208,
};
enum {
	SES_VOLATILE,
	SES_JOURNAL_HDR,
	SES_JOURNAL,
	SES_GD,
	SES_GTS,
	SES_BITMAP,
	SES_BACKMAP,
	SES_GRAINS,
	SES_NR_REGIONS
};
static const char *const ses_region_name[SES_NR_REGIONS] = {
    "volatile_header", "journal_header", "journal", "grain_dir",
    "grain_tables",    "free_bitmap",	 "backmap", "grains",
};

struct ses_region {
	uint64_t offset_sectors, size_sectors;
};

struct ses_slot {
	uint64_t gd_index; /* valid when gt != NULL */
	uint64_t *gt;
};

struct ses {
	uint64_t capacity_sectors;
	struct ses_region r[SES_NR_REGIONS];
	uint64_t nr_gd;	      /* GD entries the extent needs */
	uint64_t *gd;	      /* raw entries */
	uint64_t nr_gts;      /* GTs the grain_tables region holds */
	uint64_t nr_clusters; /* grains the grains region holds */
	uint64_t file_size;
	struct ses_slot cache[SES_CACHE_SLOTS];
};

enum ses_kind { SES_UNALLOC, SES_ZERO, SES_DATA };

/* ---- open ------------------------------------------------------------------- */

static int ses_check_const(const uint8_t *hdr, const char *path)
{
	static const struct {
		unsigned off;
		uint64_t want;
		const char *name;
	} f[] = {
	    {SES_OFF_VERSION, SES_VERSION, "version"},
	    {SES_OFF_GRAIN, SES_GRAIN_SECTORS, "grain_size"},
	    {SES_OFF_GT_SIZE, SES_GT_SECTORS, "grain_table_size"},
	    {SES_OFF_FLAGS, 0, "flags"},
	};

	if (get_le64(hdr + SES_OFF_MAGIC) != SES_CONST_MAGIC) {
		vd_err("%s: seSparse constant header: bad magic 0x%016" PRIx64, path,
		       get_le64(hdr + SES_OFF_MAGIC));
		return -EMEDIUMTYPE;
	}
	for (unsigned i = 0; i < sizeof f / sizeof f[0]; i++) {
		uint64_t v = get_le64(hdr + f[i].off);
		if (v != f[i].want) {
			vd_err("%s: seSparse constant header: %s = 0x%" PRIx64
			       " unsupported (expected 0x%" PRIx64 ")",
			       path, f[i].name, v, f[i].want);
			return -ENOTSUP;
		}
	}
	if (!vd_is_zero(hdr + SES_OFF_RESERVED, 32) ||
	    !vd_is_zero(hdr + SES_OFF_PAD, VD_SECTOR - SES_OFF_PAD)) {
		vd_err("%s: seSparse constant header: non-zero reserved bytes or padding",
		       path);
		return -ENOTSUP;
	}
	return 0;
}

/* Every region starts after sector 0 and ends below 2^54 sectors (no
 * overflow when converted to bytes). */
static int ses_read_regions(struct ses *s, const uint8_t *hdr, const char *path)
{
	for (unsigned i = 0; i < SES_NR_REGIONS; i++) {
		const uint8_t *p = hdr + SES_OFF_REGIONS + 16 * i;
		uint64_t off = get_le64(p), size = get_le64(p + 8);

		if (off == 0 || off >= (1ull << 54) || size >= (1ull << 54) - off) {
			vd_err("%s: seSparse %s_offset = %" PRIu64 ", size = %" PRIu64
			       " sectors out of range",
			       path, ses_region_name[i], off, size);
			return -VD_EBADDATA;
		}
		s->r[i].offset_sectors = off;
		s->r[i].size_sectors = size;
	}
	return 0;
}

static int ses_check_volatile(struct vmdk_extent *e, struct ses *s)
{
	uint8_t v[VD_SECTOR];
	int ret;

	if (s->r[SES_VOLATILE].size_sectors < 1) {
		vd_err("%s: seSparse volatile_header_size = 0", e->path);
		return -VD_EBADDATA;
	}
	ret =
	    vd_pread_meta(e->file, v, sizeof v, s->r[SES_VOLATILE].offset_sectors * VD_SECTOR);
	if (ret < 0) {
		vd_err("%s: reading the seSparse volatile header: %s", e->path,
		       strerror(-ret));
		return ret;
	}
	if (get_le64(v) != SES_VOLATILE_MAGIC) {
		vd_err("%s: seSparse volatile header: bad magic 0x%016" PRIx64, e->path,
		       get_le64(v));
		return -VD_EBADDATA;
	}
	if (get_le64(v + 24)) {
		vd_err("%s: seSparse volatile header: replay_journal = %" PRIu64
		       " (the extent is dirty: its journal must be replayed by ESXi "
		       "first; journal replay is not supported)",
		       e->path, get_le64(v + 24));
		return -ENOTSUP;
	}
	return 0;
}

/* Capacity against the descriptor, and the tables against the capacity. */
static int ses_check_geometry(struct vmdk_extent *e, struct ses *s)
{
	uint64_t gt_cover = (uint64_t)SES_GTES_PER_GT * SES_GRAIN_SECTORS * VD_SECTOR;
	uint64_t cap = s->capacity_sectors;

	if (cap == 0 || cap > VMDK_MAX_CAPACITY / VD_SECTOR) {
		vd_err("%s: seSparse capacity = %" PRIu64
		       " sectors out of range (max %llu)",
		       e->path, cap, VMDK_MAX_CAPACITY / VD_SECTOR);
		return -VD_EBADDATA;
	}
	if (e->size == 0)
		e->size = cap * VD_SECTOR;
	if (e->size > cap * VD_SECTOR) {
		vd_err("%s: descriptor size %" PRIu64
		       " sectors exceeds seSparse capacity = %" PRIu64 " sectors",
		       e->path, e->size / VD_SECTOR, cap);
		return -VD_EBADDATA;
	}
	if (e->size < cap * VD_SECTOR)
		vd_warn("%s: descriptor size %" PRIu64
			" sectors < seSparse capacity = %" PRIu64
			" sectors; using the descriptor's",
			e->path, e->size / VD_SECTOR, cap);
	s->nr_gd = VD_DIV_ROUND_UP(e->size, gt_cover);
	if (s->r[SES_GD].size_sectors * (VD_SECTOR / 8) < s->nr_gd) {
		vd_err("%s: seSparse grain_dir_size = %" PRIu64
		       " sectors holds fewer than"
		       " the %" PRIu64 " entries the capacity needs",
		       e->path, s->r[SES_GD].size_sectors, s->nr_gd);
		return -VD_EBADDATA;
	}
	s->nr_gts = s->r[SES_GTS].size_sectors / SES_GT_SECTORS;
	s->nr_clusters = s->r[SES_GRAINS].size_sectors / SES_GRAIN_SECTORS;
	return 0;
}

static int ses_load_gd(struct vmdk_extent *e, struct ses *s)
{
	size_t len = (size_t)s->nr_gd * 8;
	uint8_t *raw = malloc(len);
	int ret;

	s->gd = malloc(len);
	if (!raw || !s->gd) {
		free(raw);
		return -ENOMEM;
	}
	ret = vd_pread_meta(e->file, raw, len, s->r[SES_GD].offset_sectors * VD_SECTOR);
	if (ret < 0) {
		vd_err("%s: reading the seSparse grain directory: %s", e->path,
		       strerror(-ret));
		free(raw);
		return ret;
	}
	for (uint64_t i = 0; i < s->nr_gd; i++)
		s->gd[i] = get_le64(raw + 8 * i);
	free(raw);
	return 0;
}

static void ses_free(struct ses *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < SES_CACHE_SLOTS; i++)
		free(s->cache[i].gt);
	free(s->gd);
	free(s);
}

static int ses_open(struct vmdk_extent *e, const uint8_t *hdr)
{
	struct ses *s = calloc(1, sizeof *s);
	int ret;

	if (!s)
		return -ENOMEM;
	ret = ses_check_const(hdr, e->path);
	if (!ret)
		ret = ses_read_regions(s, hdr, e->path);
	if (!ret)
		ret = ses_check_volatile(e, s);
	s->capacity_sectors = get_le64(hdr + SES_OFF_CAPACITY);
	if (!ret)
		ret = ses_check_geometry(e, s);
	if (!ret)
		ret = vd_fsize(e->file, &s->file_size);
	if (!ret)
		ret = ses_load_gd(e, s);
	if (ret) {
		ses_free(s);
		return ret;
	}
	e->grain_size = SES_GRAIN_SECTORS * VD_SECTOR;
	e->priv = s;
	return 0;
}

static void ses_close(struct vmdk_extent *e)
{
	ses_free(e->priv);
	e->priv = NULL;
}

/* ---- lookup ------------------------------------------------------------------ */

/* Load GT number gt_index (from GD entry gd_index) into its cache slot. */
static int ses_load_gt(struct vmdk_extent *e, struct ses *s, uint64_t gd_index,
		       uint64_t gt_index, struct ses_slot *slot)
{
	uint64_t off =
	    (s->r[SES_GTS].offset_sectors + gt_index * SES_GT_SECTORS) * VD_SECTOR;
	uint8_t *raw = malloc(SES_GTES_PER_GT * 8);
	int ret;

	if (!raw)
		return -ENOMEM;
	if (!slot->gt && !(slot->gt = malloc(SES_GTES_PER_GT * 8))) {
		free(raw);
		return -ENOMEM;
	}
	ret = vd_pread_meta(e->file, raw, SES_GTES_PER_GT * 8, off);
	if (ret < 0) {
		vd_err("%s: reading seSparse grain table %" PRIu64 ": %s", e->path,
		       gt_index, strerror(-ret));
		free(raw);
		free(slot->gt);
		slot->gt = NULL;
		return ret;
	}
	for (unsigned i = 0; i < SES_GTES_PER_GT; i++)
		slot->gt[i] = get_le64(raw + 8 * i);
	slot->gd_index = gd_index;
	free(raw);
	return 0;
}

static bool ses_gde_valid(const struct ses *s, uint64_t gde)
{
	return (gde & 0xffffffff00000000ull) == SES_GD_ALLOCATED &&
	       (gde & 0xffffffffull) < s->nr_gts;
}

/* Raw GTE of grain g (0 when its GT is not allocated).  Holds disk->lock. */
static int ses_gte_locked(struct vmdk_extent *e, struct ses *s, uint64_t g, uint64_t *gte)
{
	uint64_t gd_index = g / SES_GTES_PER_GT, gde = s->gd[gd_index], gt_index;
	struct ses_slot *slot = &s->cache[gd_index % SES_CACHE_SLOTS];
	int ret;

	if (gde == 0) {
		*gte = 0;
		return 0;
	}
	gt_index = gde & 0xffffffffull;
	if (!ses_gde_valid(s, gde)) {
		vd_err("%s: seSparse grain directory entry %" PRIu64 " = 0x%016" PRIx64
		       " invalid (grain_tables region holds %" PRIu64 " tables)",
		       e->path, gd_index, gde, s->nr_gts);
		return -VD_EBADDATA;
	}
	if (!slot->gt || slot->gd_index != gd_index) {
		ret = ses_load_gt(e, s, gd_index, gt_index, slot);
		if (ret)
			return ret;
	}
	*gte = slot->gt[g % SES_GTES_PER_GT];
	return 0;
}

/* Classify grain g; for data, *data_off is the byte offset of the grain. */
static int ses_lookup(struct vmdk_extent *e, uint64_t g, enum ses_kind *kind,
		      uint64_t *data_off)
{
	struct ses *s = e->priv;
	uint64_t gte, cluster;
	int ret;

	pthread_mutex_lock(&e->disk->lock);
	ret = ses_gte_locked(e, s, g, &gte);
	pthread_mutex_unlock(&e->disk->lock);
	if (ret)
		return ret;
	switch (gte >> 60) {
	case 0:
		if (gte)
			break;
		*kind = SES_UNALLOC;
		return 0;
	case 1: /* unmapped by the guest: zeros, like qemu */
	case 2:
		*kind = SES_ZERO;
		return 0;
	case 3:
		cluster = ((gte >> 48) & 0xfff) | ((gte & 0xffffffffffffull) << 12);
		if (cluster >= s->nr_clusters)
			break;
		*kind = SES_DATA;
		*data_off =
		    (s->r[SES_GRAINS].offset_sectors + cluster * SES_GRAIN_SECTORS) *
		    VD_SECTOR;
		return 0;
	}
	vd_err("%s: seSparse grain table entry of grain %" PRIu64 " = 0x%016" PRIx64
	       " invalid (grains region holds %" PRIu64 " grains)",
	       e->path, g, gte, s->nr_clusters);
	return -VD_EBADDATA;
}

/* ---- I/O --------------------------------------------------------------------- */

#define SES_GRAIN_BYTES ((uint64_t)SES_GRAIN_SECTORS * VD_SECTOR)

static int ses_pread(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		uint64_t g = off / SES_GRAIN_BYTES, in = off % SES_GRAIN_BYTES,
			 data_off = 0;
		size_t n = (size_t)VD_MIN((uint64_t)len, SES_GRAIN_BYTES - in);
		enum ses_kind kind;
		int ret = ses_lookup(e, g, &kind, &data_off);

		if (ret)
			return ret;
		if (kind != SES_DATA) {
			memset(p, 0, n);
		} else if ((ret = vd_pread(e->file, p, n, data_off + in)) < 0) {
			vd_err("%s: reading seSparse grain %" PRIu64 ": %s", e->path, g,
			       strerror(-ret));
			return ret;
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static enum vmdk_bs ses_bs(enum ses_kind k)
{
	return k == SES_DATA   ? VMDK_BS_DATA
	       : k == SES_ZERO ? VMDK_BS_ZERO
			       : VMDK_BS_UNALLOC;
}

static int ses_block_status(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			    enum vmdk_bs *kind, uint64_t *run_len)
{
	uint64_t end = VD_MIN(off + max_len, e->size), pos = off, data_off;
	enum ses_kind k;
	int ret;

	while (pos < end) {
		uint64_t g = pos / SES_GRAIN_BYTES;

		ret = ses_lookup(e, g, &k, &data_off);
		if (ret)
			return ret;
		if (pos == off)
			*kind = ses_bs(k);
		else if (ses_bs(k) != *kind)
			break;
		pos = (g + 1) * SES_GRAIN_BYTES;
	}
	*run_len = VD_MIN(pos, end) - off;
	return 0;
}

/* ---- info and check ------------------------------------------------------------ */

struct ses_tally {
	uint64_t nr_data, nr_zero, nr_bad;
};

/* Classify every grain (whole unallocated GTs at once); bad entries are
 * counted, other errors returned. */
static int ses_count(struct vmdk_extent *e, struct ses_tally *t)
{
	struct ses *s = e->priv;
	uint64_t nr_grains = VD_DIV_ROUND_UP(e->size, SES_GRAIN_BYTES), data_off;
	enum ses_kind k;

	memset(t, 0, sizeof *t);
	for (uint64_t g = 0; g < nr_grains; g++) {
		int ret;

		uint64_t gde = s->gd[g / SES_GTES_PER_GT];

		if (g % SES_GTES_PER_GT == 0 && !ses_gde_valid(s, gde)) {
			t->nr_bad += gde != 0; /* once per table, not per grain */
			g += SES_GTES_PER_GT - 1;
			continue;
		}
		ret = ses_lookup(e, g, &k, &data_off);
		if (ret == -VD_EBADDATA) {
			t->nr_bad++;
			continue;
		}
		if (ret)
			return ret;
		t->nr_data += k == SES_DATA;
		t->nr_zero += k == SES_ZERO;
	}
	return 0;
}

static int ses_info(struct vmdk_extent *e, struct vmdk_extent_info *out)
{
	struct ses *s = e->priv;
	struct ses_tally t;
	int ret = ses_count(e, &t);

	if (ret)
		return ret;
	out->kind = VMDK_EXT_SESPARSE;
	out->file_size = s->file_size;
	out->allocated = t.nr_data * SES_GRAIN_BYTES;
	out->version = (uint32_t)(SES_VERSION & 0xffffffffu);
	out->header_capacity_sectors = s->capacity_sectors;
	out->grain_size_sectors = SES_GRAIN_SECTORS;
	out->nr_gtes_per_gt = SES_GTES_PER_GT;
	out->nr_gd_entries = (uint32_t)s->nr_gd;
	out->gd_offset_sectors = s->r[SES_GD].offset_sectors;
	return 0;
}

/* Every GD entry and GTE decodes to a table or grain inside its region
 * (each bad one was reported by the lookup; summarised here). */
static int ses_check(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
		     struct vmdk_check_result *res)
{
	struct ses_tally t;
	char msg[160];
	int ret = ses_count(e, &t);

	if (ret)
		return ret;
	if (t.nr_bad) {
		res->errors += (unsigned)VD_MIN(t.nr_bad, (uint64_t)UINT32_MAX);
		snprintf(msg, sizeof msg,
			 "%" PRIu64 " seSparse grain directory or table "
			 "entries are invalid",
			 t.nr_bad);
		fn(opaque, true, e->path, msg);
	}
	res->allocated += t.nr_data * SES_GRAIN_BYTES;
	return 0;
}

const struct vmdk_extent_ops vmdk_sesparse_ops = {
    .name = "seSparse",
    .open = ses_open,
    .close = ses_close,
    .pread = ses_pread,
    .block_status = ses_block_status,
    .info = ses_info,
    .check = ses_check,
};
