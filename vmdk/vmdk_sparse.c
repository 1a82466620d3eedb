/* vmdk — hosted sparse extents, magic "KDMV" (format layer): the header,
 * reads, allocating writes, zeroed grains and the per-extent check.
 *
 * Header layout (sector 0, little-endian, packed; format doc §2.1):
 *   OFF SIZE FIELD                 OFF SIZE FIELD
 *     0    4 magic "KDMV"           44    4 numGTEsPerGT
 *     4    4 version (1..3)         48    8 rgdOffset (sectors)
 *     8    4 flags                  56    8 gdOffset (sectors)
 *    12    8 capacity (sectors)     64    8 overHead (sectors)
 *    20    8 grainSize (sectors)    72    1 uncleanShutdown
 *    28    8 descriptorOffset       73    4 "\n \r\n" newline check
 *    36    8 descriptorSize         77    2 compressAlgorithm
 *
 * WRITE ORDER for an allocating write (see also [G1]-[G4] in vmdk_gt.c):
 *  S1. On the first write after open, the descriptor gets a new CID and
 *      the header uncleanShutdown = 1, both synced before any data.
 *  S2. The whole grain (caller's bytes plus backing or zero fill) is
 *      written past the end of the file, never over live data.
 *  S3. The GTE is set in memory only after S2 returned, so readers never
 *      see a GTE whose data is not written; tables reach the file at
 *      flush, after a sync of the data ([G1], [G3]).
 *  S4. uncleanShutdown is cleared only at close, after the final flush.
 */
#include "vmdk_int.h"

#include <errno.h>
#include <stdlib.h>

#define KDMV_INCOMPAT_KNOWN (KDMV_FLAG_COMPRESSED | KDMV_FLAG_MARKERS)

struct sparse {
	struct kdmv_header h;
	struct vmdk_gt gt;
	uint64_t append_at; /* bytes: where the next grain or table goes */
};

/* ---- header ----------------------------------------------------------------------------- */

static int hdr_bad(const char *file, const char *field, unsigned long long v)
{
	vd_err("%s: sparse header field %s = %llu is out of range", file, field, v);
	return -VD_EBADDATA;
}

static int kdmv_check_flags(const struct kdmv_header *h, const uint8_t *buf,
			    const char *file)
{
	if (h->flags & 0xffff0000u & ~KDMV_INCOMPAT_KNOWN) {
		vd_err("%s: sparse header flags 0x%x carry unknown incompatible bits", file,
		       h->flags);
		return -ENOTSUP;
	}
	if ((h->flags & KDMV_FLAG_MARKERS) && !(h->flags & KDMV_FLAG_COMPRESSED))
		return hdr_bad(file, "flags (markers without compression)", h->flags);
	if ((h->flags & KDMV_FLAG_NL_CHECK) &&
	    memcmp(buf + 73, "\n \r\n", 4)) {
		vd_err("%s: sparse header newline-check bytes are damaged "
		       "(file transferred in text mode?)", file);
		return -VD_EBADDATA;
	}
	if (h->compress_algorithm > 1 ||
	    ((h->flags & KDMV_FLAG_COMPRESSED) && h->compress_algorithm != 1))
		return hdr_bad(file, "compressAlgorithm", h->compress_algorithm);
	return 0;
}

static int kdmv_check_sizes(const struct kdmv_header *h, const char *file)
{
	if (h->capacity_sectors > VMDK_MAX_CAPACITY / VD_SECTOR)
		return hdr_bad(file, "capacity", h->capacity_sectors);
	if (!vd_is_pow2(h->grain_size_sectors) ||
	    h->grain_size_sectors > VMDK_MAX_GRAIN_SECTORS)
		return hdr_bad(file, "grainSize", h->grain_size_sectors);
	if (h->nr_gtes_per_gt == 0 || h->nr_gtes_per_gt > VMDK_MAX_GTES_PER_GT)
		return hdr_bad(file, "numGTEsPerGT", h->nr_gtes_per_gt);
	if (h->desc_offset_sectors &&
	    (h->desc_size_sectors > VMDK_MAX_DESC_SIZE / VD_SECTOR ||
	     h->desc_offset_sectors > UINT32_MAX))
		return hdr_bad(file, "descriptorSize", h->desc_size_sectors);
	if (h->overhead_sectors > UINT32_MAX)
		return hdr_bad(file, "overHead", h->overhead_sectors);
	return 0;
}

int kdmv_header_decode(const uint8_t *buf, const char *file, struct kdmv_header *h)
{
	int err;

	if (get_le32(buf) != KDMV_MAGIC) {
		vd_err("%s: not a hosted sparse extent (no KDMV magic)", file);
		return -EMEDIUMTYPE;
	}
	*h = (struct kdmv_header){
		.version = get_le32(buf + 4), .flags = get_le32(buf + 8),
		.capacity_sectors = get_le64(buf + 12),
		.grain_size_sectors = get_le64(buf + 20),
		.desc_offset_sectors = get_le64(buf + 28),
		.desc_size_sectors = get_le64(buf + 36),
		.nr_gtes_per_gt = get_le32(buf + 44),
		.rgd_offset_sectors = get_le64(buf + 48),
		.gd_offset_sectors = get_le64(buf + 56),
		.overhead_sectors = get_le64(buf + 64),
		.unclean_shutdown = buf[72],
		.compress_algorithm = get_le16(buf + 77),
	};
	if (h->version < 1 || h->version > 3) {
		vd_err("%s: sparse header version %u is not supported (1..3)", file,
		       h->version);
		return -ENOTSUP;
	}
	err = kdmv_check_flags(h, buf, file);
	return err ? err : kdmv_check_sizes(h, file);
}

void kdmv_header_encode(const struct kdmv_header *h, uint8_t *buf)
{
	memset(buf, 0, VD_SECTOR);
	put_le32(buf, KDMV_MAGIC);
	put_le32(buf + 4, h->version);
	put_le32(buf + 8, h->flags);
	put_le64(buf + 12, h->capacity_sectors);
	put_le64(buf + 20, h->grain_size_sectors);
	put_le64(buf + 28, h->desc_offset_sectors);
	put_le64(buf + 36, h->desc_size_sectors);
	put_le32(buf + 44, h->nr_gtes_per_gt);
	put_le64(buf + 48, h->rgd_offset_sectors);
	put_le64(buf + 56, h->gd_offset_sectors);
	put_le64(buf + 64, h->overhead_sectors);
	buf[72] = h->unclean_shutdown;
	memcpy(buf + 73, "\n \r\n", 4);
	put_le16(buf + 77, h->compress_algorithm);
}

/* ---- regions ------------------------------------------------------------------------------ */

int kdmv_add_regions(const struct kdmv_header *h, struct vmdk_regions *rs)
{
	int err = vmdk_regions_add(rs, 0, 1, VMDK_REG_HEADER, 0);

	if (!err && h->desc_offset_sectors && h->desc_size_sectors)
		err = vmdk_regions_add(rs, h->desc_offset_sectors, h->desc_size_sectors,
				       VMDK_REG_DESC, 0);
	return err;
}

void kdmv_set_desc_room(struct vmdk_extent *e, const struct kdmv_header *h,
			const struct vmdk_regions *rs)
{
	struct vmdk_disk *d = e->disk;
	uint64_t room;

	if (!d->desc_offset || e->file != d->files[0].file ||
	    d->desc_offset != h->desc_offset_sectors * VD_SECTOR)
		return;
	room = vmdk_regions_room(rs, h->desc_offset_sectors, h->desc_size_sectors,
				 VMDK_REG_DESC);
	if (h->overhead_sectors > h->desc_offset_sectors)
		room = VD_MIN(room, h->overhead_sectors - h->desc_offset_sectors);
	else
		room = 0; /* a descriptor in the data area: nothing proven free */
	d->desc_room = VD_MIN(room * VD_SECTOR, d->desc_size);
}

/* Header, descriptor, directories and tables against each other; a
 * writable open is refused on any problem. */
static int sparse_regions(struct vmdk_extent *e, struct sparse *s)
{
	bool strict = e->disk->writable && e->access == VMDK_ACCESS_RW;
	int err = kdmv_add_regions(&s->h, &s->gt.meta);

	if (!err)
		err = vmdk_gt_regions(&s->gt, strict);
	if (!err)
		kdmv_set_desc_room(e, &s->h, &s->gt.meta);
	return err;
}

/* ---- open / close ------------------------------------------------------------------------ */

static int sparse_open_tables(struct vmdk_extent *e, struct sparse *s)
{
	const struct kdmv_header *h = &s->h;
	uint64_t rgd = (h->flags & KDMV_FLAG_RGD) ? h->rgd_offset_sectors : 0;
	int err;

	if (h->gd_offset_sectors == KDMV_GD_AT_END || h->gd_offset_sectors > UINT32_MAX)
		return hdr_bad(e->path, "gdOffset", h->gd_offset_sectors);
	if (rgd > UINT32_MAX)
		return hdr_bad(e->path, "rgdOffset", rgd);
	err = vmdk_gt_init(&s->gt, e->file, e->path, h->grain_size_sectors * VD_SECTOR,
			   h->nr_gtes_per_gt, h->capacity_sectors * VD_SECTOR,
			   h->gd_offset_sectors * VD_SECTOR, rgd * VD_SECTOR);
	s->gt.zeroed_ok = h->flags & KDMV_FLAG_ZEROED_GTE;
	s->gt.data_start = h->overhead_sectors * VD_SECTOR;
	e->grain_size = h->grain_size_sectors * VD_SECTOR;
	s->append_at = VD_MAX(VD_ROUND_UP(s->gt.file_size, s->gt.grain_size),
			      h->overhead_sectors * VD_SECTOR);
	return err;
}

static int sparse_set_dirty(struct vmdk_extent *e, bool dirty);

/* After a crash the redundant tables may lag the primary ones: catch up
 * before writing anything else. */
static int sparse_recover(struct vmdk_extent *e, struct sparse *s)
{
	unsigned fixed;
	int err = vmdk_gt_repair_redundant(&s->gt, &fixed);

	if (err) {
		vd_err("%s: repairing redundant grain tables: %s", e->path, strerror(-err));
		return err;
	}
	if (fixed)
		vd_log(VD_LOG_INFO, "%s: %u redundant grain tables brought in line after "
		       "an unclean shutdown", e->path, fixed);
	return sparse_set_dirty(e, false); /* consistent again; set anew on write */
}

static int sparse_open(struct vmdk_extent *e, const uint8_t *hdr)
{
	struct sparse *s = calloc(1, sizeof *s);
	int err;

	if (!s)
		return -ENOMEM;
	e->priv = s;
	err = kdmv_header_decode(hdr, e->path, &s->h);
	if (!err && s->h.capacity_sectors * VD_SECTOR < e->size) {
		vd_err("%s: sparse header capacity %llu sectors is smaller than the "
		       "descriptor's extent size %llu sectors", e->path,
		       (unsigned long long)s->h.capacity_sectors,
		       (unsigned long long)(e->size / VD_SECTOR));
		err = -VD_EBADDATA;
	}
	if (!err && s->h.version == 3 && e->disk->writable && e->access == VMDK_ACCESS_RW) {
		vd_err("%s: version 3 (change-tracking) sparse extents are read-only", e->path);
		err = -EROFS;
	}
	if (!err)
		err = sparse_open_tables(e, s);
	if (!err)
		err = sparse_regions(e, s);
	if (!err && s->h.unclean_shutdown && e->disk->writable &&
	    !(e->disk->open_flags & VMDK_OPEN_DIRTY_OK)) {
		vd_err("%s: uncleanShutdown is set (not closed cleanly); run `vdelta check` "
		       "and open with the dirty override to write", e->path);
		err = -EBUSY;
	}
	if (!err && s->h.unclean_shutdown && e->disk->writable)
		err = sparse_recover(e, s);
	return err;
}

static void sparse_close(struct vmdk_extent *e)
{
	struct sparse *s = e->priv;

	if (!s)
		return;
	vmdk_gt_destroy(&s->gt);
	free(s);
	e->priv = NULL;
}

/* ---- mapping --------------------------------------------------------------------------- */

static enum vmdk_bs gte_kind(uint32_t gte)
{
	return gte == 0 ? VMDK_BS_UNALLOC : gte == VMDK_GTE_ZEROED ? VMDK_BS_ZERO
								    : VMDK_BS_DATA;
}

/* The run starting at off (at most len bytes) whose grains are of one kind
 * and, for data, contiguous in the file.  *file_off: data's byte offset. */
static int sparse_map(struct sparse *s, uint64_t off, uint64_t len, uint32_t *gte0,
		      uint64_t *run, bool contiguous)
{
	uint64_t gs = s->gt.grain_size, g = off / gs, done;
	uint32_t gte, expect;
	int err = vmdk_gt_lookup(&s->gt, g, gte0);

	done = VD_MIN(len, gs - off % gs);
	expect = *gte0;
	while (!err && done < len) {
		uint32_t gpt = s->gt.gtes_per_gt;
		expect += gte_kind(expect) == VMDK_BS_DATA ? (uint32_t)(gs / VD_SECTOR) : 0;
		if (!s->gt.gd[(g + 1) / gpt] && !*gte0) {
			/* whole unallocated grain table: skip it at once */
			uint64_t skip = (gpt - (g + 1) % gpt) * gs;
			done = VD_MIN(len, done + skip);
			g = (g + 1) / gpt * gpt + gpt - 1;
			continue;
		}
		err = vmdk_gt_lookup(&s->gt, ++g, &gte);
		if (err || gte_kind(gte) != gte_kind(*gte0) ||
		    (contiguous && gte_kind(gte) == VMDK_BS_DATA && gte != expect))
			break;
		done = VD_MIN(len, done + gs);
	}
	*run = done;
	return err;
}

static int sparse_pread(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct sparse *s = e->priv;
	uint8_t *p = buf;
	int err = 0;

	while (len && !err) {
		uint32_t gte;
		uint64_t run;
		pthread_mutex_lock(&e->disk->lock);
		err = sparse_map(s, off, len, &gte, &run, true);
		pthread_mutex_unlock(&e->disk->lock);
		if (err)
			break;
		if (gte_kind(gte) != VMDK_BS_DATA) {
			memset(p, 0, run);
		} else if ((err = vd_pread(e->file, p, run, (uint64_t)gte * VD_SECTOR +
								off % s->gt.grain_size))) {
			vd_err("%s: read at %llu: %s", e->path, (unsigned long long)off,
			       strerror(-err));
		}
		p += run;
		off += run;
		len -= run;
	}
	return err;
}

/* sparse_map under the disk's lock (the table cache may be loading). */
static int sparse_map_locked(struct vmdk_extent *e, uint64_t off, uint64_t len,
			     uint32_t *gte, uint64_t *run, bool contiguous)
{
	int err;

	pthread_mutex_lock(&e->disk->lock);
	err = sparse_map(e->priv, off, len, gte, run, contiguous);
	pthread_mutex_unlock(&e->disk->lock);
	return err;
}

static int sparse_block_status(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			       enum vmdk_bs *kind, uint64_t *run_len)
{
	uint32_t gte;
	int err = sparse_map_locked(e, off, max_len, &gte, run_len, false);

	*kind = gte_kind(gte);
	return err;
}

static int sparse_file_map(struct vmdk_extent *e, uint64_t off, uint64_t len,
			   uint64_t *file_off, uint64_t *run)
{
	struct sparse *s = e->priv;
	uint32_t gte;
	int err = sparse_map_locked(e, off, len, &gte, run, true);

	if (err)
		return err;
	if (gte_kind(gte) != VMDK_BS_DATA)
		return -ENOENT;
	/* an allocated grain never moves: the mapping stays valid */
	*file_off = (uint64_t)gte * VD_SECTOR + off % s->gt.grain_size;
	return 0;
}

/* ---- writes ------------------------------------------------------------------------------- */

/* Fill a whole-grain buffer for grain g: what lies below (or zeros), then
 * the caller's bytes at in_grain. */
static int grain_fill(struct vmdk_extent *e, struct sparse *s, uint8_t *grain,
		      uint64_t g, uint32_t old_gte, const void *data, size_t len,
		      uint64_t in_grain)
{
	uint64_t gs = s->gt.grain_size, start = g * gs;
	uint64_t valid = VD_MIN(gs, e->size - start);
	int err = 0;

	memset(grain, 0, gs);
	if (len < valid && old_gte == 0)
		err = vmdk_backing_read(e, grain, valid, start);
	if (!err && data)
		memcpy(grain + in_grain, data, len);
	return err;
}

/* Allocate grain g with `data` (NULL: zeros) at in_grain; disk lock held. */
static int grain_alloc(struct vmdk_extent *e, struct sparse *s, uint64_t g,
		       uint32_t old_gte, const void *data, size_t len, uint64_t in_grain)
{
	uint64_t gs = s->gt.grain_size, at = VD_ROUND_UP(s->append_at, gs);
	const uint8_t *src = data;
	uint8_t *grain = NULL;
	int err;

	if ((at + gs) / VD_SECTOR > UINT32_MAX) {
		vd_err("%s: sparse extent full (2 TiB of sectors)", e->path);
		return -EFBIG;
	}
	if (len != gs || !data) {
		grain = malloc(gs);
		if (!grain)
			return -ENOMEM;
		err = grain_fill(e, s, grain, g, old_gte, data, len, in_grain);
		src = grain;
		if (err)
			goto out;
	}
	err = vd_pwrite(e->file, src, gs, at); /* [S2] */
	s->append_at = at + gs;
	s->gt.file_size = VD_MAX(s->gt.file_size, s->append_at);
	if (!err) /* [S3] */
		err = vmdk_gt_set(&s->gt, g, (uint32_t)(at / VD_SECTOR), &s->append_at);
out:
	free(grain);
	return err;
}

/* Write len bytes within grain g; disk lock held on entry, released on exit. */
static int grain_write(struct vmdk_extent *e, struct sparse *s, const void *data,
		       size_t len, uint64_t off)
{
	uint64_t gs = s->gt.grain_size, g = off / gs;
	uint32_t gte;
	int err = vmdk_disk_mark_dirty(e->disk); /* [S1] */

	if (!err)
		err = vmdk_gt_lookup(&s->gt, g, &gte);
	if (!err && gte_kind(gte) != VMDK_BS_DATA)
		err = grain_alloc(e, s, g, gte, data, len, off % gs);
	pthread_mutex_unlock(&e->disk->lock);
	if (!err && gte_kind(gte) == VMDK_BS_DATA)
		err = vd_pwrite(e->file, data, len, (uint64_t)gte * VD_SECTOR + off % gs);
	return err;
}

static int sparse_pwrite(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	struct sparse *s = e->priv;
	const uint8_t *p = buf;
	int err = 0;

	while (len && !err) {
		size_t n = VD_MIN(len, s->gt.grain_size - off % s->gt.grain_size);
		pthread_mutex_lock(&e->disk->lock);
		err = grain_write(e, s, p, n, off);
		p += n;
		off += n;
		len -= n;
	}
	if (err && err != -VD_EBADDATA)
		vd_err("%s: write at %llu: %s", e->path, (unsigned long long)off,
		       strerror(-err));
	return err;
}

/* Zero one whole grain; disk lock held. */
static int grain_zero(struct vmdk_extent *e, struct sparse *s, uint64_t g)
{
	uint32_t gte;
	int err = vmdk_gt_lookup(&s->gt, g, &gte);

	if (err || gte == VMDK_GTE_ZEROED || (gte == 0 && !e->disk->backing))
		return err; /* already reads as zeros */
	err = vmdk_disk_mark_dirty(e->disk);
	if (err)
		return err;
	if (gte == 0 && s->gt.zeroed_ok)
		return vmdk_gt_set(&s->gt, g, VMDK_GTE_ZEROED, &s->append_at);
	if (gte == 0)
		return grain_alloc(e, s, g, gte, NULL, s->gt.grain_size, 0); /* zeros, not the backing */
	return -EAGAIN; /* allocated: the caller writes real zeros */
}

static int sparse_pwrite_zeroes(struct vmdk_extent *e, size_t len, uint64_t off)
{
	struct sparse *s = e->priv;
	uint64_t gs = s->gt.grain_size;
	uint8_t *zeros = NULL;
	int err = 0;

	while (len && !err) {
		size_t n = VD_MIN(len, gs - off % gs);
		if (off % gs == 0 && (n == gs || off + n == e->size)) {
			pthread_mutex_lock(&e->disk->lock);
			err = grain_zero(e, s, off / gs);
			pthread_mutex_unlock(&e->disk->lock);
		} else {
			err = -EAGAIN;
		}
		if (err == -EAGAIN) { /* allocated or partial: write real zeros */
			if (!zeros && !(zeros = calloc(1, gs)))
				return -ENOMEM;
			err = sparse_pwrite(e, zeros, n, off);
		}
		off += n;
		len -= n;
	}
	free(zeros);
	return err;
}

/* Tables changed: vmdk_gt_flush's two syncs under the disk lock (no entry
 * may change between them).  Only grains written in place: one sync of the
 * data, outside the lock, so reads and writes go on meanwhile (a write
 * that allocates now is not the caller's to make durable). */
static int sparse_flush(struct vmdk_extent *e)
{
	struct sparse *s = e->priv;
	bool tables;
	int err = 0;

	pthread_mutex_lock(&e->disk->lock);
	tables = s->gt.any_dirty;
	if (tables)
		err = vmdk_gt_flush(&s->gt);
	pthread_mutex_unlock(&e->disk->lock);
	return tables ? err : vd_sync(e->file);
}

/* Disk lock held (called from vmdk_disk_mark_dirty). */
static int sparse_prepare_write(struct vmdk_extent *e)
{
	struct sparse *s = e->priv;

	return vmdk_gt_verify(&s->gt);
}

static int sparse_set_dirty(struct vmdk_extent *e, bool dirty)
{
	struct sparse *s = e->priv;
	uint8_t v = dirty;
	int err = vd_pwrite(e->file, &v, 1, 72);

	if (!err)
		err = vd_sync(e->file);
	if (err)
		vd_err("%s: updating uncleanShutdown: %s", e->path, strerror(-err));
	else
		s->h.unclean_shutdown = v;
	return err;
}

/* ---- info and check ---------------------------------------------------------------------- */

void kdmv_header_info(const struct kdmv_header *h, struct vmdk_extent_info *out)
{
	out->version = h->version;
	out->flags = h->flags;
	out->header_capacity_sectors = h->capacity_sectors;
	out->grain_size_sectors = h->grain_size_sectors;
	out->descriptor_offset_sectors = h->desc_offset_sectors;
	out->descriptor_size_sectors = h->desc_size_sectors;
	out->nr_gtes_per_gt = h->nr_gtes_per_gt;
	out->rgd_offset_sectors = h->rgd_offset_sectors;
	out->gd_offset_sectors = h->gd_offset_sectors;
	out->overhead_sectors = h->overhead_sectors;
	out->unclean_shutdown = h->unclean_shutdown;
	out->compress_algorithm = h->compress_algorithm;
}

static int sparse_info(struct vmdk_extent *e, struct vmdk_extent_info *out, bool count)
{
	struct sparse *s = e->priv;
	int err;

	kdmv_header_info(&s->h, out);
	out->nr_gd_entries = s->gt.nr_gd;
	if (!count)
		return 0;
	pthread_mutex_lock(&e->disk->lock);
	err = vmdk_gt_allocated(&s->gt, &out->allocated);
	pthread_mutex_unlock(&e->disk->lock);
	return err;
}

static int sparse_check(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
			struct vmdk_check_result *res)
{
	struct sparse *s = e->priv;

	if (s->h.unclean_shutdown) {
		res->warnings++;
		fn(opaque, false, e->path, "uncleanShutdown is set: the disk was not "
		   "closed cleanly (interrupted writes may have leaked grains)");
	}
	return vmdk_gt_check(e, &s->gt, s->h.overhead_sectors * VD_SECTOR,
				 s->h.unclean_shutdown, fn, opaque, res);
}

const struct vmdk_extent_ops vmdk_sparse_ops = {
	.name = "sparse",
	.open = sparse_open,
	.close = sparse_close,
	.pread = sparse_pread,
	.pwrite = sparse_pwrite,
	.pwrite_zeroes = sparse_pwrite_zeroes,
	.block_status = sparse_block_status,
	.file_map = sparse_file_map,
	.flush = sparse_flush,
	.prepare_write = sparse_prepare_write,
	.set_dirty = sparse_set_dirty,
	.info = sparse_info,
	.check = sparse_check,
};
