/* vmdk_cowd.c — ESX vmfsSparse "COWD" extents (layer 1, format layer).
 * Owns the 2048-byte COWD header and the mapping of guest offsets through
 * its 32-bit tables (vmdk-format.md §3): GD at gdOffset with numGDEntries
 * u32 entries, GTs of 4096 u32 GTEs, grainSize sectors per grain (often 1),
 * GTE 0 = unallocated (the parent's), otherwise the grain's sector.  No
 * zeroed grains, no compression, no redundant tables.
 *
 * Tables are the shared struct vmdk_gt (vmdk_gt.c), protected by
 * e->disk->lock, which is taken here around every table access; data I/O
 * to allocated grains runs outside it.
 *
 * WRITE ORDER for an allocating write (with [G1]-[G4] of vmdk_gt.c):
 *  C1. On the first write after open, the descriptor gets a new CID and
 *      the header uncleanShutdown = 1, synced before any data.
 *  C2. The whole grain (caller's bytes plus backing fill) is appended at
 *      max(freeSector, end of file, end of the GD), never over live data;
 *      a missing GT is allocated after it the same way.
 *  C3. The GTE is set in memory after C2; at flush: data, GT, GD, then
 *      freeSector, each synced (a crash leaves freeSector behind, never
 *      ahead: the next writer appends past the end of file anyway).
 *  C4. uncleanShutdown is cleared only at close, after the final flush.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "vmdk_int.h"

#define COWD_MAGIC 0x44574f43u /* "COWD" little-endian */
#define COWD_HEADER_SIZE 2048u
#define COWD_GTES_PER_GT 4096u

/* header offsets (u32 each) */
enum {
	COWD_OFF_MAGIC = 0,
	COWD_OFF_VERSION = 4,
	COWD_OFF_FLAGS = 8,
	COWD_OFF_CAPACITY = 12,
	COWD_OFF_GRAIN = 16,
	COWD_OFF_GD = 20,
	COWD_OFF_NR_GD = 24,
	COWD_OFF_FREE = 28,
	COWD_OFF_UNCLEAN = 1648,
};

struct cowd {
	uint32_t version, flags, capacity_sectors, grain_size_sectors;
	uint32_t gd_offset_sectors, nr_gd_entries, free_sector;
	bool unclean;
	uint64_t file_size;
	uint64_t append_at; /* bytes: where the next grain or GT goes */
	struct vmdk_gt gt;
};

/* ---- open ------------------------------------------------------------------- */

static int cowd_decode(struct cowd *c, const uint8_t *h, const char *path)
{
	if (get_le32(h + COWD_OFF_MAGIC) != COWD_MAGIC) {
		vd_err("%s: not a COWD extent (magic 0x%08x)", path, get_le32(h));
		return -EMEDIUMTYPE;
	}
	c->version = get_le32(h + COWD_OFF_VERSION);
	c->flags = get_le32(h + COWD_OFF_FLAGS);
	c->capacity_sectors = get_le32(h + COWD_OFF_CAPACITY);
	c->grain_size_sectors = get_le32(h + COWD_OFF_GRAIN);
	c->gd_offset_sectors = get_le32(h + COWD_OFF_GD);
	c->nr_gd_entries = get_le32(h + COWD_OFF_NR_GD);
	c->free_sector = get_le32(h + COWD_OFF_FREE);
	c->unclean = get_le32(h + COWD_OFF_UNCLEAN) != 0;
	if (c->version != 1) {
		vd_err("%s: COWD version = %u unsupported (expected 1)", path,
		       c->version);
		return -ENOTSUP;
	}
	if (c->grain_size_sectors == 0 ||
	    c->grain_size_sectors > VMDK_MAX_GRAIN_SECTORS) {
		vd_err("%s: COWD grainSize = %u sectors out of range (1..%u)", path,
		       c->grain_size_sectors, VMDK_MAX_GRAIN_SECTORS);
		return -VD_EBADDATA;
	}
	if (c->capacity_sectors == 0) {
		vd_err("%s: COWD numSectors = 0", path);
		return -VD_EBADDATA;
	}
	return 0;
}

/* The descriptor's size against the header, and the GD against both. */
static int cowd_check_geometry(struct vmdk_extent *e, struct cowd *c)
{
	uint64_t cap = (uint64_t)c->capacity_sectors * VD_SECTOR;
	uint64_t cover = (uint64_t)COWD_GTES_PER_GT * c->grain_size_sectors * VD_SECTOR;
	uint64_t need;

	if (e->size == 0)
		e->size = cap;
	if (e->size > cap) {
		vd_err("%s: descriptor size %" PRIu64
		       " sectors exceeds COWD numSectors = %u",
		       e->path, e->size / VD_SECTOR, c->capacity_sectors);
		return -VD_EBADDATA;
	}
	if (e->size < cap)
		vd_warn("%s: descriptor size %" PRIu64 " sectors < COWD numSectors = %u;"
			" using the descriptor's",
			e->path, e->size / VD_SECTOR, c->capacity_sectors);
	need = VD_DIV_ROUND_UP(e->size, cover);
	if (c->nr_gd_entries < need) {
		vd_err("%s: COWD numGDEntries = %u, the capacity needs %" PRIu64, e->path,
		       c->nr_gd_entries, need);
		return -VD_EBADDATA;
	}
	if (c->gd_offset_sectors < COWD_HEADER_SIZE / VD_SECTOR) {
		vd_err("%s: COWD gdOffset = %u overlaps the header", e->path,
		       c->gd_offset_sectors);
		return -VD_EBADDATA;
	}
	return 0;
}

/* bytes: end of the grain directory, the start of the data area */
static uint64_t cowd_gd_end(const struct cowd *c)
{
	return (uint64_t)c->gd_offset_sectors * VD_SECTOR +
	       VD_ROUND_UP((uint64_t)c->nr_gd_entries * 4, VD_SECTOR);
}

/* GD entries are 0 or a whole GT after the header and inside the file
 * (vmdk_gt only checks the latter). */
static int cowd_check_gd(struct vmdk_extent *e, struct cowd *c)
{
	uint64_t gt_sectors = COWD_GTES_PER_GT * 4 / VD_SECTOR;
	uint64_t last = c->file_size / VD_SECTOR;

	for (uint32_t i = 0; i < c->gt.nr_gd; i++) {
		uint32_t v = c->gt.gd[i];
		if (v && (v < COWD_HEADER_SIZE / VD_SECTOR || v + gt_sectors > last)) {
			vd_err("%s: COWD grain directory entry %u = %u overlaps the"
			       " header or lies outside the file (%" PRIu64 " sectors)",
			       e->path, i, v, last);
			return -VD_EBADDATA;
		}
	}
	return 0;
}

/* Header, directory and tables against each other and the file's end (a
 * writable open is refused on any problem). */
static int cowd_regions(struct vmdk_extent *e, struct cowd *c)
{
	bool strict = e->disk->writable && e->access == VMDK_ACCESS_RW;
	int ret = vmdk_regions_add(&c->gt.meta, 0, COWD_HEADER_SIZE / VD_SECTOR,
				   VMDK_REG_HEADER, 0);

	return ret ? ret : vmdk_gt_regions(&c->gt, strict);
}

static int cowd_open(struct vmdk_extent *e, const uint8_t *hdr)
{
	struct cowd *c = calloc(1, sizeof *c);
	uint8_t *h = malloc(COWD_HEADER_SIZE);
	int ret = c && h ? 0 : -ENOMEM;

	(void)hdr; /* the header is 2048 bytes; read it whole */
	if (!ret && (ret = vd_pread_meta(e->file, h, COWD_HEADER_SIZE, 0)) < 0)
		vd_err("%s: reading the COWD header: %s", e->path, strerror(-ret));
	if (!ret)
		ret = cowd_decode(c, h, e->path);
	if (!ret)
		ret = cowd_check_geometry(e, c);
	if (!ret)
		ret = vmdk_gt_init(&c->gt, e->file, e->path,
				   (uint64_t)c->grain_size_sectors * VD_SECTOR,
				   COWD_GTES_PER_GT, e->size,
				   (uint64_t)c->gd_offset_sectors * VD_SECTOR, 0);
	if (!ret)
		ret = vd_fsize(e->file, &c->file_size);
	if (!ret)
		ret = cowd_check_gd(e, c);
	if (!ret)
		ret = cowd_regions(e, c);
	c->append_at = VD_MAX(VD_MAX((uint64_t)c->free_sector * VD_SECTOR,
				     VD_ROUND_UP(c->file_size, VD_SECTOR)),
			      cowd_gd_end(c));
	free(h);
	if (ret) {
		if (c && c->gt.slots)
			vmdk_gt_destroy(&c->gt);
		free(c);
		return ret;
	}
	e->grain_size = c->gt.grain_size;
	e->priv = c;
	return 0;
}

static void cowd_close(struct vmdk_extent *e)
{
	struct cowd *c = e->priv;

	if (!c)
		return;
	vmdk_gt_destroy(&c->gt);
	free(c);
	e->priv = NULL;
}

/* ---- I/O --------------------------------------------------------------------- */

static int cowd_lookup(struct vmdk_extent *e, uint64_t g, uint32_t *gte)
{
	struct cowd *c = e->priv;
	int ret;

	pthread_mutex_lock(&e->disk->lock);
	ret = vmdk_gt_lookup(&c->gt, g, gte);
	pthread_mutex_unlock(&e->disk->lock);
	return ret;
}

static int cowd_pread(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct cowd *c = e->priv;
	uint64_t gs = c->gt.grain_size;
	uint8_t *p = buf;

	while (len) {
		uint64_t g = off / gs, in = off % gs;
		size_t n = (size_t)VD_MIN((uint64_t)len, gs - in);
		uint32_t gte;
		int ret = cowd_lookup(e, g, &gte);

		if (ret)
			return ret;
		if (gte == 0)
			memset(p, 0, n);
		else if ((ret = vd_pread(e->file, p, n, (uint64_t)gte * VD_SECTOR + in)) <
			 0) {
			vd_err("%s: reading COWD grain %" PRIu64 ": %s", e->path, g,
			       strerror(-ret));
			return ret;
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int cowd_block_status(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			     enum vmdk_bs *kind, uint64_t *run_len)
{
	struct cowd *c = e->priv;
	uint64_t gs = c->gt.grain_size, end = VD_MIN(off + max_len, e->size), pos = off;

	while (pos < end) {
		uint64_t g = pos / gs;
		uint32_t gte;
		int ret = cowd_lookup(e, g, &gte);
		enum vmdk_bs k;

		if (ret)
			return ret;
		k = gte ? VMDK_BS_DATA : VMDK_BS_UNALLOC;
		if (pos == off)
			*kind = k;
		else if (k != *kind)
			break;
		if (!c->gt.gd[g / COWD_GTES_PER_GT]) /* no table: its whole range */
			g = g / COWD_GTES_PER_GT * COWD_GTES_PER_GT + COWD_GTES_PER_GT - 1;
		pos = (g + 1) * gs;
	}
	*run_len = VD_MIN(pos, end) - off;
	return 0;
}

/* ---- writes ------------------------------------------------------------------------ */

/* Whole-grain buffer for grain g: what lies below (the backing: the
 * grain is unallocated here), then the caller's bytes at in_grain. */
static int cowd_fill(struct vmdk_extent *e, struct cowd *c, uint8_t *grain, uint64_t g,
		     const void *data, size_t len, uint64_t in_grain)
{
	uint64_t gs = c->gt.grain_size, valid = VD_MIN(gs, e->size - g * gs);
	int ret = 0;

	memset(grain, 0, gs);
	if (len < valid)
		ret = vmdk_backing_read(e, grain, valid, g * gs);
	memcpy(grain + in_grain, data, len);
	return ret;
}

/* [C2][C3] Append grain g holding `data` at in_grain; disk lock held. */
static int cowd_alloc(struct vmdk_extent *e, struct cowd *c, uint64_t g, const void *data,
		      size_t len, uint64_t in_grain)
{
	uint64_t gs = c->gt.grain_size, at = c->append_at;
	const uint8_t *src = data;
	uint8_t *grain = NULL;
	int ret = 0;

	if ((at + gs) / VD_SECTOR > UINT32_MAX) {
		vd_err("%s: COWD extent full (2 TiB of sectors)", e->path);
		return -EFBIG;
	}
	if (len != gs) {
		grain = malloc(gs);
		ret = grain ? cowd_fill(e, c, grain, g, data, len, in_grain) : -ENOMEM;
		src = grain;
	}
	if (!ret)
		ret = vd_pwrite(e->file, src, gs, at);
	free(grain);
	if (ret)
		return ret;
	c->append_at = at + gs;
	c->gt.file_size = VD_MAX(c->gt.file_size, c->append_at);
	return vmdk_gt_set(&c->gt, g, (uint32_t)(at / VD_SECTOR), &c->append_at);
}

/* len bytes within grain g; disk lock held on entry, released on exit. */
static int cowd_grain_write(struct vmdk_extent *e, struct cowd *c, const void *data,
			    size_t len, uint64_t off)
{
	uint64_t gs = c->gt.grain_size, g = off / gs;
	uint32_t gte = 0;
	int ret = vmdk_disk_mark_dirty(e->disk); /* [C1] */

	if (!ret)
		ret = vmdk_gt_lookup(&c->gt, g, &gte);
	if (!ret && gte == 0)
		ret = cowd_alloc(e, c, g, data, len, off % gs);
	pthread_mutex_unlock(&e->disk->lock);
	if (!ret && gte)
		ret = vd_pwrite(e->file, data, len, (uint64_t)gte * VD_SECTOR + off % gs);
	return ret;
}

static int cowd_pwrite(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	struct cowd *c = e->priv;
	const uint8_t *p = buf;
	int ret = 0;

	while (len && !ret) {
		size_t n = (size_t)VD_MIN((uint64_t)len,
					  c->gt.grain_size - off % c->gt.grain_size);
		pthread_mutex_lock(&e->disk->lock);
		ret = cowd_grain_write(e, c, p, n, off);
		p += n;
		off += n;
		len -= n;
	}
	if (ret && ret != -VD_EBADDATA && ret != -EFBIG)
		vd_err("%s: COWD write at %" PRIu64 ": %s", e->path, off, strerror(-ret));
	return ret;
}

/* [C3] tables, then freeSector. */
static int cowd_flush(struct vmdk_extent *e)
{
	struct cowd *c = e->priv;
	uint64_t free_sector = c->append_at / VD_SECTOR;
	uint8_t le[4];
	int ret;

	pthread_mutex_lock(&e->disk->lock);
	ret = c->gt.any_dirty ? vmdk_gt_flush(&c->gt) : 0;
	if (!ret && free_sector != c->free_sector) {
		put_le32(le, (uint32_t)free_sector);
		ret = vd_pwrite(e->file, le, 4, COWD_OFF_FREE);
		if (!ret)
			c->free_sector = (uint32_t)free_sector;
	}
	if (!ret)
		ret = vd_sync(e->file);
	pthread_mutex_unlock(&e->disk->lock);
	return ret;
}

/* Disk lock held (called from vmdk_disk_mark_dirty). */
static int cowd_prepare_write(struct vmdk_extent *e)
{
	struct cowd *c = e->priv;

	return vmdk_gt_verify(&c->gt);
}

static int cowd_set_dirty(struct vmdk_extent *e, bool dirty)
{
	struct cowd *c = e->priv;
	uint8_t le[4];
	int ret;

	put_le32(le, dirty);
	ret = vd_pwrite(e->file, le, 4, COWD_OFF_UNCLEAN);
	if (!ret)
		ret = vd_sync(e->file);
	if (ret)
		vd_err("%s: updating COWD uncleanShutdown: %s", e->path, strerror(-ret));
	else
		c->unclean = dirty;
	return ret;
}

/* ---- info and check ------------------------------------------------------------ */

static int cowd_info(struct vmdk_extent *e, struct vmdk_extent_info *out, bool count)
{
	struct cowd *c = e->priv;
	int ret = 0;

	if (count) {
		pthread_mutex_lock(&e->disk->lock);
		ret = vmdk_gt_allocated(&c->gt, &out->allocated);
		pthread_mutex_unlock(&e->disk->lock);
	}
	if (ret)
		return ret;
	out->kind = VMDK_EXT_COWD;
	out->file_size = c->file_size;
	out->version = c->version;
	out->flags = c->flags;
	out->header_capacity_sectors = c->capacity_sectors;
	out->grain_size_sectors = c->grain_size_sectors;
	out->nr_gtes_per_gt = COWD_GTES_PER_GT;
	out->nr_gd_entries = c->nr_gd_entries;
	out->gd_offset_sectors = c->gd_offset_sectors;
	out->unclean_shutdown = c->unclean;
	return 0;
}

/* The shared 32-bit table check: tables and grains inside the file and
 * past the directory, no overlaps, leaked space.  Metadata ends with the
 * GD (GTs are allocated on demand among the grains). */
static int cowd_check(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
		      struct vmdk_check_result *res)
{
	struct cowd *c = e->priv;

	if (c->unclean) {
		res->warnings++;
		fn(opaque, false, e->path, "COWD uncleanShutdown is set");
	}
	return vmdk_gt_check(e, &c->gt, cowd_gd_end(c), c->unclean, fn, opaque, res);
}

const struct vmdk_extent_ops vmdk_cowd_ops = {
    .name = "vmfsSparse",
    .open = cowd_open,
    .close = cowd_close,
    .pread = cowd_pread,
    .pwrite = cowd_pwrite,
    .block_status = cowd_block_status,
    .flush = cowd_flush,
    .prepare_write = cowd_prepare_write,
    .set_dirty = cowd_set_dirty,
    .info = cowd_info,
    .check = cowd_check,
};

/* ---- create ------------------------------------------------------------------- */

/* An empty COWD extent as ESXi starts one: header (version 1, flags 3),
 * the directory at sector 4, freeSector right after it; no tables yet
 * (they are allocated on demand by the writer, [C2]). */
int vmdk_cowd_create_file(struct vd_file *f, uint64_t sectors, uint64_t grain_sectors)
{
	uint64_t cover = COWD_GTES_PER_GT * grain_sectors;
	uint32_t nr_gd = (uint32_t)VD_DIV_ROUND_UP(sectors, cover);
	uint32_t gd_sectors = (uint32_t)VD_DIV_ROUND_UP(nr_gd * 4ull, VD_SECTOR);
	uint8_t h[COWD_HEADER_SIZE] = {0};
	int err;

	if (sectors == 0 || sectors > UINT32_MAX || grain_sectors == 0 ||
	    grain_sectors > VMDK_MAX_GRAIN_SECTORS)
		return -EINVAL;
	put_le32(h + COWD_OFF_MAGIC, COWD_MAGIC);
	put_le32(h + COWD_OFF_VERSION, 1);
	put_le32(h + COWD_OFF_FLAGS, 3);
	put_le32(h + COWD_OFF_CAPACITY, (uint32_t)sectors);
	put_le32(h + COWD_OFF_GRAIN, (uint32_t)grain_sectors);
	put_le32(h + COWD_OFF_GD, COWD_HEADER_SIZE / VD_SECTOR);
	put_le32(h + COWD_OFF_NR_GD, nr_gd);
	put_le32(h + COWD_OFF_FREE, COWD_HEADER_SIZE / VD_SECTOR + gd_sectors);
	err = f->ops->truncate(f, (uint64_t)(COWD_HEADER_SIZE / VD_SECTOR + gd_sectors) *
				       VD_SECTOR);
	if (!err)
		err = vd_pwrite(f, h, sizeof h, 0);
	return err;
}
