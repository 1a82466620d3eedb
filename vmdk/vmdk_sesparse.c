/* vmdk_sesparse.c — ESXi seSparse extents (magic u64 0xCAFEBABE), read,
 * written and created (layer 1, format layer).  Owns the constant and
 * volatile header checks, the 64-bit grain directory, a bounded cache of
 * 64-bit grain tables, the GTE decoding, the free bitmap and backmap
 * upkeep and the ESXi region layout of a new file (vmdk-format.md §4).
 *
 * Layout, all offsets and sizes in sectors of the constant header:
 *   grain_dir:    u64 entries, 0 = no GT, 0x1000000000000000|index = GT
 *   grain_tables: GT i at grain_tables_offset + i * 64 (4096 u64 GTEs)
 *   grains:       cluster c at grains_offset + c * 8
 * GTE type (top nibble): 0 unallocated (whole value 0), 1 unmapped (zeros,
 * as qemu), 2 zero grain, 3 allocated with the cluster index split as
 * ((e >> 48) & 0xfff) | ((e & 0xffffffffffff) << 12).
 *
 * A truncated file never reads as zeros: the volatile and journal headers
 * and the directory entries the capacity needs must lie in the file at
 * open, a grain table when it is loaded, a grain when it is looked up
 * ("points past the end of the file"); check counts each as an error.
 * Memory: the directory (8 bytes per 16 MiB of capacity) is read only
 * once it is known to be in the file.
 *
 * Reading semantics decided here: an unmapped grain (type 1, left by a
 * guest UNMAP) reads as zeros, as qemu reads it: the guest discarded the
 * bytes above its parent, and falling through would bring back data it
 * deleted.  A volatile header with replay_journal set is refused for
 * reading and writing: replaying the journal is not implemented (no
 * tested replay, no ESXi to validate against), so the tables may be stale.
 *
 * WRITE ORDER (every step is written and synced before the next starts,
 * except that E2's grain and E3's maps share one sync; the journal is
 * never used, so replay_journal stays 0 and a crash leaves the file in a
 * state that needs no replay):
 *  E1. Before the first modification in an open the descriptor gets a new
 *      CID (vmdk_disk_mark_dirty).  seSparse has no unclean mark we may
 *      set: replay_journal would ask ESXi to replay a journal we never
 *      wrote.
 *  E2. Grains are allocated at the end of the file (cluster = bytes past
 *      grains_offset / 4 KiB, rounded up), a run of up to SES_RUN_GRAINS
 *      grains without data in one GT at a time: their whole 4 KiB each
 *      (the caller's bytes, the rest from the backing, or zeros over a
 *      zero/unmapped grain) is written there.  Slots below the end are
 *      never reused, so no live grain is ever overwritten.
 *  E3. Then their backmap entries (type 1 | the GT entry index, encoded
 *      like a GTE) and free_bitmap bits are set, and E2 and E3 are synced
 *      together.  A crash before E5 leaves marked slots nothing points to:
 *      a leak `check` reports, never a grain read twice.
 *  E4. A missing grain table is taken at next = max(free_gt_number, every
 *      table the directory names + 1): the table is written whole (with
 *      the run's new entries), then free_gt_number = next + 1 in the volatile
 *      header, then the directory entry.  A crash before the directory
 *      entry leaves an unused table, reused or skipped later.
 *  E5. Otherwise the run's 8-byte GTEs are written in place, each inside
 *      one sector: old or new per grain.
 *  E6. A whole-grain zero write sets the GTE to type 2 (zero grain: masks
 *      the parent) by E4/E5; only after that is the old cluster's bitmap
 *      bit cleared and its backmap entry zeroed (a crash between: a leak).
 * Refused with a message rather than guessed: writes when the
 * grain_tables region or the grains region is full (ESXi would reuse
 * freed clusters and grow regions in ways not documented).
 * The journal header and journal are left as created (magic 0xdeafc0de,
 * nothing to replay); their layout beyond that is not known.
 *
 * Locking: the GT cache, allocation and the maps are protected by
 * e->disk->lock; data reads and in-place writes run outside it.
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
	uint64_t next_gt;      /* [E4] GT index the next new table takes */
	uint64_t next_cluster; /* [E2] first cluster past the end of the file */
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
	s->next_gt = get_le64(v + 8);
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

/* Bytes [off, off+len) of the file exist; otherwise report `what` as
 * pointing past the end of the file. */
static int ses_in_file(struct vmdk_extent *e, const struct ses *s, uint64_t off,
		       uint64_t len, const char *what)
{
	if (off <= s->file_size && len <= s->file_size - off)
		return 0;
	vd_err("%s: seSparse %s points past the end of the file (bytes %" PRIu64
	       "..%" PRIu64 ", file size %" PRIu64 ")",
	       e->path, what, off, off + len, s->file_size);
	return -VD_EBADDATA;
}

/* The headers and the directory entries the capacity needs lie inside the
 * file (a truncated file must not read as zeros). */
static int ses_check_truncated(struct vmdk_extent *e, const struct ses *s)
{
	static const unsigned need[] = {SES_VOLATILE, SES_JOURNAL_HDR};
	int ret;

	for (unsigned i = 0; i < sizeof need / sizeof need[0]; i++) {
		const struct ses_region *r = &s->r[need[i]];
		ret = ses_in_file(e, s, r->offset_sectors * VD_SECTOR,
				  VD_MIN(r->size_sectors, 1) * VD_SECTOR,
				  ses_region_name[need[i]]);
		if (ret)
			return ret;
	}
	return ses_in_file(e, s, s->r[SES_GD].offset_sectors * VD_SECTOR, s->nr_gd * 8,
			   "grain_dir");
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

static bool ses_gde_valid(const struct ses *s, uint64_t gde);

/* [E2][E4] Where new tables and clusters go: past every table the
 * directory names, past the end of the file. */
static void ses_alloc_start(struct ses *s)
{
	uint64_t grains = s->r[SES_GRAINS].offset_sectors * VD_SECTOR;

	for (uint64_t i = 0; i < s->nr_gd; i++)
		if (ses_gde_valid(s, s->gd[i]))
			s->next_gt = VD_MAX(s->next_gt, (s->gd[i] & 0xffffffffu) + 1);
	s->next_cluster = s->file_size > grains
				  ? VD_DIV_ROUND_UP(s->file_size - grains,
						    (uint64_t)SES_GRAIN_SECTORS * VD_SECTOR)
				  : 0;
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
		ret = vd_fsize(e->file, &s->file_size);
	s->capacity_sectors = get_le64(hdr + SES_OFF_CAPACITY);
	if (!ret)
		ret = ses_check_geometry(e, s);
	if (!ret)
		ret = ses_check_truncated(e, s);
	if (!ret)
		ret = ses_check_volatile(e, s);
	if (!ret)
		ret = ses_load_gd(e, s);
	if (ret) {
		ses_free(s);
		return ret;
	}
	ses_alloc_start(s);
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
	uint8_t *raw;
	int ret;
	char what[64];

	snprintf(what, sizeof what, "grain table %" PRIu64 " (directory entry %" PRIu64 ")",
		 gt_index, gd_index);
	ret = ses_in_file(e, s, off, SES_GTES_PER_GT * 8, what);
	if (ret)
		return ret;
	raw = malloc(SES_GTES_PER_GT * 8);
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

static int ses_grain_in_file(struct vmdk_extent *e, const struct ses *s, uint64_t g,
			     uint64_t gte, uint64_t data_off)
{
	char what[96];

	if (data_off <= s->file_size && s->file_size - data_off >= SES_GRAIN_SECTORS * VD_SECTOR)
		return 0;
	snprintf(what, sizeof what,
		 "grain table entry of grain %" PRIu64 " = 0x%016" PRIx64, g, gte);
	return ses_in_file(e, s, data_off, SES_GRAIN_SECTORS * VD_SECTOR, what);
}

/* Classify grain g; for data, *data_off is the byte offset of the grain.
 * Holds disk->lock. */
static int ses_lookup_locked(struct vmdk_extent *e, uint64_t g, enum ses_kind *kind,
			     uint64_t *data_off)
{
	struct ses *s = e->priv;
	uint64_t gte, cluster;
	int ret = ses_gte_locked(e, s, g, &gte);

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
		return ses_grain_in_file(e, s, g, gte, *data_off);
	}
	vd_err("%s: seSparse grain table entry of grain %" PRIu64 " = 0x%016" PRIx64
	       " invalid (grains region holds %" PRIu64 " grains)",
	       e->path, g, gte, s->nr_clusters);
	return -VD_EBADDATA;
}

static int ses_lookup(struct vmdk_extent *e, uint64_t g, enum ses_kind *kind,
		      uint64_t *data_off)
{
	int ret;

	pthread_mutex_lock(&e->disk->lock);
	ret = ses_lookup_locked(e, g, kind, data_off);
	pthread_mutex_unlock(&e->disk->lock);
	return ret;
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

/* ---- writes (order: E1-E6 at the top of this file) ------------------------------- */

#define SES_TYPE_ZERO 0x2000000000000000ull
#define SES_TYPE_DATA 0x3000000000000000ull
#define SES_BACKMAP_USED 0x1000000000000000ull
#define SES_RUN_GRAINS 256u /* grains allocated by one step (1 MiB) */

/* The split index encoding GTEs and backmap entries share (§4.3). */
static uint64_t ses_encode(uint64_t index)
{
	return (index & 0xfff) << 48 | (index >> 12);
}

static int ses_write_sync(struct vmdk_extent *e, const void *buf, size_t len,
			  uint64_t off, const char *what)
{
	int ret = vd_pwrite(e->file, buf, len, off);

	if (!ret)
		ret = vd_sync(e->file);
	if (ret)
		vd_err("%s: writing the seSparse %s: %s", e->path, what, strerror(-ret));
	return ret;
}

static int ses_write_u64(struct vmdk_extent *e, uint64_t value, uint64_t off,
			 const char *what)
{
	uint8_t le[8];

	put_le64(le, value);
	return ses_write_sync(e, le, sizeof le, off, what);
}

/* [E3][E6] Mark clusters c .. c+n-1 used by GT entries gt_entry .. +n-1
 * (used) or free; one sync. */
static int ses_mark_clusters(struct vmdk_extent *e, struct ses *s, uint64_t c, unsigned n,
			     uint64_t gt_entry, bool used)
{
	uint64_t bm = s->r[SES_BITMAP].offset_sectors * VD_SECTOR + c / 8;
	uint64_t back = s->r[SES_BACKMAP].offset_sectors * VD_SECTOR + c * 8;
	size_t nr_bytes = (size_t)((c + n - 1) / 8 - c / 8 + 1);
	uint8_t bits[SES_RUN_GRAINS / 8 + 2], le[SES_RUN_GRAINS * 8];
	int ret;

	if ((c + n - 1) / 8 >= s->r[SES_BITMAP].size_sectors * VD_SECTOR ||
	    c + n > s->r[SES_BACKMAP].size_sectors * (VD_SECTOR / 8)) {
		vd_err("%s: seSparse free_bitmap or backmap region too small for "
		       "cluster %" PRIu64, e->path, c + n - 1);
		return -VD_EBADDATA;
	}
	ret = vd_pread_meta(e->file, bits, nr_bytes, bm);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < n; i++) {
		uint64_t b = c + i - c / 8 * 8;
		bits[b / 8] = used ? bits[b / 8] | (1u << (b % 8)) : bits[b / 8] & ~(1u << (b % 8));
		put_le64(le + 8 * i, used ? SES_BACKMAP_USED | ses_encode(gt_entry + i) : 0);
	}
	ret = vd_pwrite(e->file, bits, nr_bytes, bm);
	return ret ? ret : ses_write_sync(e, le, (size_t)n * 8, back, "backmap");
}

/* [E4] A new grain table for directory entry gd_index holding gtes[0..n)
 * at entries idx..; fills the cache slot.  Disk lock held.  The run's
 * entries are published together by the directory entry. */
static int ses_new_gt(struct vmdk_extent *e, struct ses *s, uint64_t gd_index,
		      unsigned idx, const uint64_t *gtes, unsigned n)
{
	uint64_t k = s->next_gt, gts = s->r[SES_GTS].offset_sectors * VD_SECTOR;
	uint64_t vol = s->r[SES_VOLATILE].offset_sectors * VD_SECTOR;
	struct ses_slot *slot = &s->cache[gd_index % SES_CACHE_SLOTS];
	uint8_t *raw;
	int ret;

	if (k >= s->nr_gts || k > 0xffffffffu) {
		vd_err("%s: seSparse grain_tables region full (%" PRIu64 " tables); "
		       "allocating more is not supported", e->path, s->nr_gts);
		return -ENOSPC;
	}
	raw = calloc(SES_GTES_PER_GT, 8);
	if (!raw || (!slot->gt && !(slot->gt = malloc(SES_GTES_PER_GT * 8)))) {
		free(raw);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++)
		put_le64(raw + 8 * (idx + i), gtes[i]);
	ret = ses_write_sync(e, raw, SES_GTES_PER_GT * 8, gts + k * SES_GT_SECTORS * VD_SECTOR,
			     "grain table");
	free(raw);
	if (!ret)
		ret = ses_write_u64(e, k + 1, vol + 8, "volatile header");
	s->next_gt = ret ? s->next_gt : k + 1;
	if (!ret)
		ret = ses_write_u64(e, SES_GD_ALLOCATED | k,
				    s->r[SES_GD].offset_sectors * VD_SECTOR + gd_index * 8,
				    "grain directory");
	if (ret)
		return ret;
	s->gd[gd_index] = SES_GD_ALLOCATED | k;
	memset(slot->gt, 0, SES_GTES_PER_GT * 8);
	memcpy(slot->gt + idx, gtes, (size_t)n * 8);
	slot->gd_index = gd_index;
	return 0;
}

/* GT entry index (table * 4096 + entry) grain g has or will get [E4]. */
static uint64_t ses_gt_entry(const struct ses *s, uint64_t g)
{
	uint64_t gde = s->gd[g / SES_GTES_PER_GT];

	return (gde ? gde & 0xffffffffu : s->next_gt) * SES_GTES_PER_GT +
	       g % SES_GTES_PER_GT;
}

/* [E4][E5] Set the GTEs of grains g .. g+n-1 (one GT).  Disk lock held. */
static int ses_set_gtes(struct vmdk_extent *e, struct ses *s, uint64_t g,
			const uint64_t *gtes, unsigned n)
{
	uint64_t gd_index = g / SES_GTES_PER_GT, old, k;
	unsigned idx = (unsigned)(g % SES_GTES_PER_GT);
	uint8_t le[SES_RUN_GRAINS * 8];
	int ret = ses_gte_locked(e, s, g, &old); /* loads the GT */

	if (ret)
		return ret;
	if (s->gd[gd_index] == 0)
		return ses_new_gt(e, s, gd_index, idx, gtes, n);
	k = s->gd[gd_index] & 0xffffffffu;
	for (unsigned i = 0; i < n; i++)
		put_le64(le + 8 * i, gtes[i]);
	ret = ses_write_sync(e, le, (size_t)n * 8,
			     (s->r[SES_GTS].offset_sectors + k * SES_GT_SECTORS) * VD_SECTOR +
				 idx * 8,
			     "grain table");
	if (!ret)
		memcpy(s->cache[gd_index % SES_CACHE_SLOTS].gt + idx, gtes, (size_t)n * 8);
	return ret;
}

/* [E2] Grains g .. g+n-1 as they will be written: `data` at in_run, the
 * rest of a partial first or last grain from below (unallocated) or zeros
 * (zero or unmapped grain). */
static int ses_fill(struct vmdk_extent *e, uint8_t *buf, uint64_t g, unsigned n,
		    const enum ses_kind *kind, const void *data, size_t len, uint64_t in_run)
{
	int ret = 0;

	memset(buf, 0, (size_t)n * SES_GRAIN_BYTES);
	for (unsigned i = 0; i < n && !ret; i += VD_MAX(n - 1, 1)) {
		uint64_t at = (g + i) * SES_GRAIN_BYTES;
		uint64_t valid = VD_MIN(SES_GRAIN_BYTES, e->size - at);
		bool covered = in_run <= i * SES_GRAIN_BYTES &&
			       in_run + len >= i * SES_GRAIN_BYTES + valid;
		if (kind[i] == SES_UNALLOC && !covered)
			ret = vmdk_backing_read(e, buf + i * SES_GRAIN_BYTES, valid, at);
	}
	memcpy(buf + in_run, data, len);
	return ret;
}

/* [E2]-[E5] Allocate grains g .. g+n-1 (none holding data, one GT) with
 * data at in_run bytes into the run: grains and maps, one sync, then the
 * table entries.  Disk lock held. */
static int ses_alloc(struct vmdk_extent *e, struct ses *s, uint64_t g, unsigned n,
		     const enum ses_kind *kind, const void *data, size_t len, uint64_t in_run)
{
	uint64_t c = s->next_cluster, gtes[SES_RUN_GRAINS];
	uint8_t *buf;
	int ret;

	if (c + n > s->nr_clusters) {
		vd_err("%s: seSparse grains region full (%" PRIu64 " grains); reusing "
		       "freed clusters is not supported", e->path, s->nr_clusters);
		return -ENOSPC;
	}
	buf = malloc((size_t)n * SES_GRAIN_BYTES);
	ret = buf ? ses_fill(e, buf, g, n, kind, data, len, in_run) : -ENOMEM;
	if (!ret && (ret = vd_pwrite(e->file, buf, (size_t)n * SES_GRAIN_BYTES,
				     (s->r[SES_GRAINS].offset_sectors + c * SES_GRAIN_SECTORS) *
					 VD_SECTOR)))
		vd_err("%s: writing seSparse grain %" PRIu64 ": %s", e->path, g, strerror(-ret));
	free(buf);
	if (ret)
		return ret; /* synced with the maps [E3] */
	s->next_cluster = c + n;
	s->file_size = VD_MAX(s->file_size, (s->r[SES_GRAINS].offset_sectors +
					     (c + n) * SES_GRAIN_SECTORS) * VD_SECTOR);
	ret = ses_mark_clusters(e, s, c, n, ses_gt_entry(s, g), true);
	for (unsigned i = 0; i < n; i++)
		gtes[i] = SES_TYPE_DATA | ses_encode(c + i);
	return ret ? ret : ses_set_gtes(e, s, g, gtes, n);
}

/* Bytes [off, off+len) starting in a grain without data: the run of such
 * grains (one GT, at most SES_RUN_GRAINS) is allocated at once; *done gets
 * the bytes written.  Disk lock held. */
static int ses_write_run(struct vmdk_extent *e, struct ses *s, const uint8_t *data,
			 size_t len, uint64_t off, enum ses_kind first, size_t *done)
{
	uint64_t g = off / SES_GRAIN_BYTES, end = off + len, data_off;
	enum ses_kind kind[SES_RUN_GRAINS] = {first};
	unsigned n = 1;
	int ret = 0;

	while (n < SES_RUN_GRAINS && (g + n) * SES_GRAIN_BYTES < end &&
	       (g + n) % SES_GTES_PER_GT != 0) {
		ret = ses_lookup_locked(e, g + n, &kind[n], &data_off);
		if (ret || kind[n] == SES_DATA)
			break;
		n++;
	}
	*done = (size_t)(VD_MIN(end, (g + n) * SES_GRAIN_BYTES) - off);
	return ret ? ret : ses_alloc(e, s, g, n, kind, data, *done, off - g * SES_GRAIN_BYTES);
}

/* From off, within grain off/4K or a run of grains without data: *done gets
 * the bytes written.  Disk lock held on entry, released on exit. */
static int ses_grain_write(struct vmdk_extent *e, struct ses *s, const void *data,
			   size_t len, uint64_t off, size_t *done)
{
	uint64_t g = off / SES_GRAIN_BYTES, data_off = 0;
	enum ses_kind kind = SES_UNALLOC;
	int ret = vmdk_disk_mark_dirty(e->disk); /* [E1] */

	*done = (size_t)VD_MIN((uint64_t)len, SES_GRAIN_BYTES - off % SES_GRAIN_BYTES);
	if (!ret)
		ret = ses_lookup_locked(e, g, &kind, &data_off);
	if (!ret && kind != SES_DATA)
		ret = ses_write_run(e, s, data, len, off, kind, done);
	pthread_mutex_unlock(&e->disk->lock);
	if (!ret && kind == SES_DATA &&
	    (ret = vd_pwrite(e->file, data, *done, data_off + off % SES_GRAIN_BYTES)))
		vd_err("%s: writing seSparse grain %" PRIu64 ": %s", e->path, g,
		       strerror(-ret));
	return ret;
}

static int ses_pwrite(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	struct ses *s = e->priv;
	const uint8_t *p = buf;
	int ret = 0;

	while (len && !ret) {
		size_t n;
		pthread_mutex_lock(&e->disk->lock);
		ret = ses_grain_write(e, s, p, len, off, &n);
		p += n;
		off += n;
		len -= n;
	}
	return ret;
}

/* [E6] Grain g becomes a zero grain; its cluster, if any, is freed after.
 * Disk lock held. */
static int ses_zero_grain(struct vmdk_extent *e, struct ses *s, uint64_t g)
{
	uint64_t data_off = 0, c;
	enum ses_kind kind;
	int ret = vmdk_disk_mark_dirty(e->disk); /* [E1] */

	if (!ret)
		ret = ses_lookup_locked(e, g, &kind, &data_off);
	if (ret || kind == SES_ZERO)
		return ret;
	c = data_off / VD_SECTOR - s->r[SES_GRAINS].offset_sectors;
	ret = ses_set_gtes(e, s, g, (const uint64_t[]){SES_TYPE_ZERO}, 1);
	if (!ret && kind == SES_DATA)
		ret = ses_mark_clusters(e, s, c / SES_GRAIN_SECTORS, 1, 0, false);
	return ret;
}

/* Whole grains (or the tail of the last) become zero grains; the partial
 * rest are data writes of zeros. */
static int ses_pwrite_zeroes(struct vmdk_extent *e, size_t len, uint64_t off)
{
	static const uint8_t zeros[SES_GRAIN_BYTES];
	struct ses *s = e->priv;
	int ret = 0;

	while (len && !ret) {
		uint64_t in = off % SES_GRAIN_BYTES;
		size_t n = (size_t)VD_MIN((uint64_t)len, SES_GRAIN_BYTES - in);

		if (in == 0 && (n == SES_GRAIN_BYTES || off + n == e->size)) {
			pthread_mutex_lock(&e->disk->lock);
			ret = ses_zero_grain(e, s, off / SES_GRAIN_BYTES);
			pthread_mutex_unlock(&e->disk->lock);
		} else {
			ret = ses_pwrite(e, zeros, n, off);
		}
		off += n;
		len -= n;
	}
	return ret;
}

/* ---- info and check ------------------------------------------------------------ */

struct ses_tally {
	uint64_t nr_data, nr_zero, nr_bad;
	uint64_t nr_map_bad; /* data grains whose bitmap bit or backmap entry disagree */
};

/* GD entry gde names a table inside the region and the file (each bad one
 * reported once). */
static bool ses_gt_readable(struct vmdk_extent *e, const struct ses *s, uint64_t gde)
{
	uint64_t off;
	char what[64];

	if (!ses_gde_valid(s, gde))
		return false;
	off = (s->r[SES_GTS].offset_sectors + (gde & 0xffffffffull) * SES_GT_SECTORS) *
	      VD_SECTOR;
	snprintf(what, sizeof what, "grain table %" PRIu64, (uint64_t)(gde & 0xffffffffu));
	return ses_in_file(e, s, off, SES_GTES_PER_GT * 8, what) == 0;
}

/* Data grain g at data_off: its free_bitmap bit is set and its backmap
 * entry names its GT entry [E3]. */
static int ses_check_maps(struct vmdk_extent *e, struct ses *s, uint64_t g,
			  uint64_t data_off, struct ses_tally *t)
{
	uint64_t c = (data_off / VD_SECTOR - s->r[SES_GRAINS].offset_sectors) /
		     SES_GRAIN_SECTORS;
	uint8_t byte = 0, le[8] = {0};
	int ret = 0;

	if (c / 8 < s->r[SES_BITMAP].size_sectors * VD_SECTOR)
		ret = vd_pread_meta(e->file, &byte, 1,
			       s->r[SES_BITMAP].offset_sectors * VD_SECTOR + c / 8);
	if (!ret && c < s->r[SES_BACKMAP].size_sectors * (VD_SECTOR / 8))
		ret = vd_pread_meta(e->file, le, 8,
			       s->r[SES_BACKMAP].offset_sectors * VD_SECTOR + c * 8);
	if (ret < 0)
		return ret;
	t->nr_map_bad += !(byte & (1u << (c % 8))) ||
			 get_le64(le) != (SES_BACKMAP_USED | ses_encode(ses_gt_entry(s, g)));
	return 0;
}

/* Clusters marked used in the free bitmap (up to the end of the file). */
static int ses_count_marked(struct vmdk_extent *e, struct ses *s, uint64_t *marked)
{
	uint64_t n = VD_MIN(VD_DIV_ROUND_UP(s->next_cluster, 8),
			    s->r[SES_BITMAP].size_sectors * VD_SECTOR);
	uint8_t buf[4096];
	int ret;

	*marked = 0;
	for (uint64_t at = 0; at < n; at += sizeof buf) {
		size_t len = (size_t)VD_MIN(n - at, (uint64_t)sizeof buf);
		ret = vd_pread_meta(e->file, buf, len,
			       s->r[SES_BITMAP].offset_sectors * VD_SECTOR + at);
		if (ret < 0)
			return ret;
		for (size_t i = 0; i < len; i++)
			*marked += (uint64_t)__builtin_popcount(buf[i]);
	}
	return 0;
}

/* Classify every grain (whole unallocated GTs at once); bad entries are
 * counted, other errors returned. */
static int ses_count(struct vmdk_extent *e, struct ses_tally *t, bool want_maps)
{
	struct ses *s = e->priv;
	uint64_t nr_grains = VD_DIV_ROUND_UP(e->size, SES_GRAIN_BYTES), data_off;
	enum ses_kind k;

	memset(t, 0, sizeof *t);
	for (uint64_t g = 0; g < nr_grains; g++) {
		int ret;

		uint64_t gde = s->gd[g / SES_GTES_PER_GT];

		if (g % SES_GTES_PER_GT == 0 && !ses_gt_readable(e, s, gde)) {
			t->nr_bad += gde != 0; /* once per table, not per grain */
			g += SES_GTES_PER_GT - 1;
			continue;
		}
		ret = ses_lookup(e, g, &k, &data_off);
		if (ret == -VD_EBADDATA) {
			t->nr_bad++;
			continue;
		}
		if (!ret && k == SES_DATA && want_maps)
			ret = ses_check_maps(e, s, g, data_off, t);
		if (ret)
			return ret;
		t->nr_data += k == SES_DATA;
		t->nr_zero += k == SES_ZERO;
	}
	return 0;
}

static int ses_info(struct vmdk_extent *e, struct vmdk_extent_info *out, bool count)
{
	struct ses *s = e->priv;
	struct ses_tally t = { 0 };
	int ret = count ? ses_count(e, &t, false) : 0;

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

/* The journal, free bitmap and backmap a writer maintains lie inside the
 * file; returns how many do not (each reported). */
static unsigned ses_check_regions(struct vmdk_extent *e)
{
	static const unsigned meta[] = {SES_JOURNAL, SES_BITMAP, SES_BACKMAP};
	struct ses *s = e->priv;
	unsigned bad = 0;

	for (unsigned i = 0; i < sizeof meta / sizeof meta[0]; i++) {
		const struct ses_region *r = &s->r[meta[i]];
		bad += ses_in_file(e, s, r->offset_sectors * VD_SECTOR,
				   r->size_sectors * VD_SECTOR,
				   ses_region_name[meta[i]]) != 0;
	}
	return bad;
}

/* Every GD entry and GTE decodes to a table or grain inside its region
 * (each bad one was reported by the lookup; summarised here). */
static int ses_check(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
		     struct vmdk_check_result *res)
{
	struct ses *s = e->priv;
	struct ses_tally t;
	uint64_t marked = 0;
	char msg[160];
	int ret = ses_count(e, &t, true);

	if (!ret)
		ret = ses_count_marked(e, s, &marked);
	if (ret)
		return ret;
	t.nr_bad += ses_check_regions(e);
	if (t.nr_map_bad) { /* the free-space maps only matter to ESXi's allocator */
		res->warnings++;
		snprintf(msg, sizeof msg,
			 "%" PRIu64 " seSparse grains are not marked in the free bitmap "
			 "or backmap", t.nr_map_bad);
		fn(opaque, false, e->path, msg);
	}
	if (marked > t.nr_data - t.nr_map_bad)
		res->leaked += (marked - (t.nr_data - t.nr_map_bad)) * SES_GRAIN_BYTES;
	if (t.nr_bad) {
		res->errors += (unsigned)VD_MIN(t.nr_bad, (uint64_t)UINT32_MAX);
		snprintf(msg, sizeof msg,
			 "%" PRIu64 " seSparse grain directory or table "
			 "entries or regions are invalid or past the end of the file",
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
    .pwrite = ses_pwrite,
    .pwrite_zeroes = ses_pwrite_zeroes,
    .block_status = ses_block_status,
    .info = ses_info,
    .check = ses_check,
};

/* ---- create ------------------------------------------------------------------- */

#define SES_ALIGN_SECTORS 2048u /* ESXi aligns every region to 1 MiB */
#define SES_JOURNAL_MAGIC 0xdeafc0deull

static uint64_t ses_align(uint64_t sectors)
{
	return VD_ROUND_UP(VD_MAX(sectors, 1), SES_ALIGN_SECTORS);
}

/* The regions ESXi lays out for a capacity (one ESXi file, 512 MiB:
 * volatile 1+1, journal header 2+2, journal 2048+2048, then directory,
 * tables, bitmap, backmap each 1 MiB-aligned, grains last). */
static void ses_layout(struct ses_region r[SES_NR_REGIONS], uint64_t sectors)
{
	uint64_t nr_grains = VD_DIV_ROUND_UP(sectors, SES_GRAIN_SECTORS);
	uint64_t nr_gd = VD_DIV_ROUND_UP(nr_grains, SES_GTES_PER_GT);
	uint64_t size[SES_NR_REGIONS] = {
	    [SES_GD] = ses_align(VD_DIV_ROUND_UP(nr_gd * 8, VD_SECTOR)),
	    [SES_GTS] = ses_align(nr_gd * SES_GT_SECTORS),
	    [SES_BITMAP] = ses_align(VD_DIV_ROUND_UP(nr_grains, 8 * VD_SECTOR)),
	    [SES_BACKMAP] = ses_align(VD_DIV_ROUND_UP(nr_grains * 8, VD_SECTOR)),
	    [SES_GRAINS] = nr_grains * SES_GRAIN_SECTORS,
	};

	r[SES_VOLATILE] = (struct ses_region){1, 1};
	r[SES_JOURNAL_HDR] = (struct ses_region){2, 2};
	r[SES_JOURNAL] = (struct ses_region){SES_ALIGN_SECTORS, SES_ALIGN_SECTORS};
	for (unsigned i = SES_GD; i < SES_NR_REGIONS; i++)
		r[i] = (struct ses_region){r[i - 1].offset_sectors + r[i - 1].size_sectors,
					   size[i]};
}

/* An empty seSparse extent: headers, every metadata region as holes, no
 * grains (the file ends where the grains region starts). */
int vmdk_sesparse_create_file(struct vd_file *f, uint64_t sectors)
{
	struct ses_region r[SES_NR_REGIONS];
	uint8_t h[4 * VD_SECTOR] = {0};
	int err;

	if (sectors == 0 || sectors > VMDK_MAX_CAPACITY / VD_SECTOR)
		return -EINVAL;
	ses_layout(r, sectors);
	put_le64(h + SES_OFF_MAGIC, SES_CONST_MAGIC);
	put_le64(h + SES_OFF_VERSION, SES_VERSION);
	put_le64(h + SES_OFF_CAPACITY, sectors);
	put_le64(h + SES_OFF_GRAIN, SES_GRAIN_SECTORS);
	put_le64(h + SES_OFF_GT_SIZE, SES_GT_SECTORS);
	for (unsigned i = 0; i < SES_NR_REGIONS; i++) {
		put_le64(h + SES_OFF_REGIONS + 16 * i, r[i].offset_sectors);
		put_le64(h + SES_OFF_REGIONS + 16 * i + 8, r[i].size_sectors);
	}
	put_le64(h + VD_SECTOR, SES_VOLATILE_MAGIC); /* free_gt 0, txn 1, no replay */
	put_le64(h + VD_SECTOR + 16, 1);
	put_le64(h + 2 * VD_SECTOR, SES_JOURNAL_MAGIC); /* as observed; txn 1 */
	put_le64(h + 2 * VD_SECTOR + 8, 1);
	put_le64(h + 2 * VD_SECTOR + 16, 1);
	err = f->ops->truncate(f, r[SES_GRAINS].offset_sectors * VD_SECTOR);
	if (!err)
		err = vd_pwrite(f, h, sizeof h, 0);
	return err;
}
