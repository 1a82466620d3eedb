/* vmdk_stream.c — streamOptimized extents: KDMV with compressed grains
 * (flag bit 16), usually with markers (bit 17) (layer 1, format layer).
 * Owns reading every stream variant (GD in the header, or gdOffset =
 * GD_AT_END with the footer at EOF-1536), the zlib grain decoder with its
 * one-grain cache, and the sequential export writer (vmdk-format.md
 * §2.6-2.8).
 *
 * An extent opens in one of three modes:
 *   READ    a finished stream: GTEs (struct vmdk_gt) point at grain markers.
 *   EMPTY   a freshly created stream (file size == overHead, GD_AT_END, no
 *           footer) opened read-only: reads as zeros.
 *   EXPORT  a freshly created stream opened read-write: ascending writes
 *           are appended as grains; ops->finish writes tables and footer.
 * Any other stream opened read-write stays read-only (pwrite: -EROFS).
 *
 * EXPORT LAYOUT (appended in file order; only the header's
 * uncleanShutdown byte and the descriptor's CID are rewritten in place):
 *  S1. sector 0 header (version 3, flags 0x30001, compressAlgorithm 1,
 *      gdOffset = GD_AT_END), descriptor at sector 1 (20 sectors), zeros up
 *      to overHead (grain aligned) — all by vmdk_stream_create.
 *  S1b. before the first write: new CID, header uncleanShutdown = 1,
 *      synced (set_dirty), so an export cut short is never mistaken for
 *      an empty fresh stream, even when the crash drops every grain.
 *  S2. each grain that is not all zeros, in ascending order: marker
 *      (u64 lba, u32 size) + zlib stream, padded to a sector.
 *  S3. when the grains move past a GT's range, and at finish: GT marker
 *      (numSectors 4, type 1) + GT, for GTs that hold grains only.
 *  S4. at finish: GD marker (type 2) + GD, footer marker (type 3), footer
 *      (header copy with the real gdOffset), EOS (a zero sector), fsync;
 *      then at close uncleanShutdown = 0 in the header.
 * A crash before S4 leaves a file without a footer (refused: "unfinished
 * stream") or a fresh-sized file with uncleanShutdown set (refused:
 * "interrupted export"), never a misread one.
 *
 * Locking: table lookups take e->disk->lock (vmdk_gt's contract); the
 * grain cache, the inflater and the writer are under the extent's own
 * mutex, so grain reads of different extents run in parallel.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "vmdk_int.h"

#define STREAM_GTES_PER_GT 512u
#define STREAM_DESC_SECTORS 20u
#define STREAM_MARKER_HDR 12u /* u64 lba/numSectors + u32 size */
#define STREAM_FLAGS_EXPORT                                                              \
	(KDMV_FLAG_NL_CHECK | KDMV_FLAG_COMPRESSED | KDMV_FLAG_MARKERS)
#define STREAM_NO_GRAIN UINT64_MAX

enum stream_marker { MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER, MARKER_PROGRESS };
enum stream_mode { STREAM_READ, STREAM_EMPTY, STREAM_EXPORT, STREAM_DONE };

struct stream_writer {
	uint64_t pos;	      /* bytes: writes below this are refused */
	uint64_t next_sector; /* where the next marker goes */
	uint64_t buf_grain;   /* grain held in gbuf, or STREAM_NO_GRAIN */
	uint8_t *gbuf;	      /* one grain */
	uint8_t *zbuf;	      /* marker + compressed grain, sector padded */
	size_t zbuf_size;
	z_stream zs;
	bool zs_ready;
	uint32_t *gd; /* nr_gd entries, sectors of the GTs written */
	uint32_t nr_gd;
	uint32_t gt[STREAM_GTES_PER_GT]; /* GT being filled */
	uint64_t gt_index;
	bool gt_used;
	uint64_t nr_grains; /* grains written */
	int error;	    /* sticky: after a failed append the tail is unknown */
};

struct stream {
	enum stream_mode mode;
	struct kdmv_header h; /* the footer's copy when gdOffset = GD_AT_END */
	uint64_t grain_size;  /* bytes */
	uint64_t file_size;
	bool markers;
	bool footer;	   /* gdOffset = GD_AT_END: tables came from the footer */
	struct vmdk_gt gt; /* READ */
	bool gt_ready;
	pthread_mutex_t lock; /* cache, inflater, writer */
	z_stream zs;
	bool zs_ready;
	uint8_t *cbuf;		 /* compressed grain: 2 * grain + a sector */
	uint8_t *grain;		 /* last decompressed grain */
	uint64_t cached;	 /* its index, or STREAM_NO_GRAIN */
	struct stream_writer *w; /* EXPORT */
};

/* ---- open ------------------------------------------------------------------- */

static int stream_check_header(struct vmdk_extent *e, const struct kdmv_header *h)
{
	if (!(h->flags & KDMV_FLAG_COMPRESSED)) {
		vd_err("%s: flags = 0x%x: not a compressed (streamOptimized) extent",
		       e->path, h->flags);
		return -EMEDIUMTYPE;
	}
	if (h->compress_algorithm != 1) {
		vd_err("%s: compressAlgorithm = %u unsupported (only 1, deflate)",
		       e->path, h->compress_algorithm);
		return -ENOTSUP;
	}
	if (h->grain_size_sectors == 0 ||
	    h->grain_size_sectors > VMDK_MAX_GRAIN_SECTORS || h->nr_gtes_per_gt == 0 ||
	    h->nr_gtes_per_gt > VMDK_MAX_GTES_PER_GT) {
		vd_err("%s: grainSize = %" PRIu64
		       " sectors, numGTEsPerGT = %u out of range",
		       e->path, h->grain_size_sectors, h->nr_gtes_per_gt);
		return -VD_EBADDATA;
	}
	if (h->capacity_sectors == 0 ||
	    h->capacity_sectors > VMDK_MAX_CAPACITY / VD_SECTOR) {
		vd_err("%s: capacity = %" PRIu64 " sectors out of range", e->path,
		       h->capacity_sectors);
		return -VD_EBADDATA;
	}
	return 0;
}

/* Footer marker (type 3, size 0) at EOF-1536, header copy at EOF-1024,
 * EOS at EOF-512. */
static int stream_read_footer(struct vmdk_extent *e, struct stream *s)
{
	uint8_t t[3 * VD_SECTOR];
	struct kdmv_header f;
	int ret;

	if (s->file_size < (s->h.overhead_sectors + 3) * VD_SECTOR) {
		vd_err("%s: gdOffset = GD_AT_END but the file (%" PRIu64
		       " bytes) has no room"
		       " for a footer: unfinished stream",
		       e->path, s->file_size);
		return -VD_EBADDATA;
	}
	ret = vd_pread_meta(e->file, t, sizeof t, s->file_size - sizeof t);
	if (ret < 0) {
		vd_err("%s: reading the stream footer: %s", e->path, strerror(-ret));
		return ret;
	}
	if (get_le32(t + 8) != 0 || get_le32(t + 12) != MARKER_FOOTER ||
	    !vd_is_zero(t + 2 * VD_SECTOR, 16)) {
		vd_err("%s: footer marker at EOF-1536 (size %u, type %u) or EOS marker at"
		       " EOF-512 invalid: unfinished or damaged stream",
		       e->path, get_le32(t + 8), get_le32(t + 12));
		return -VD_EBADDATA;
	}
	ret = kdmv_header_decode(t + VD_SECTOR, e->path, &f);
	if (ret)
		return ret;
	if (f.gd_offset_sectors == KDMV_GD_AT_END) {
		vd_err("%s: footer gdOffset = GD_AT_END", e->path);
		return -VD_EBADDATA;
	}
	s->h = f;
	return 0;
}

static uint64_t stream_gd_sectors(const struct kdmv_header *h)
{
	uint64_t per_gt = h->grain_size_sectors * h->nr_gtes_per_gt;
	uint64_t nr_gd = VD_DIV_ROUND_UP(h->capacity_sectors, per_gt);

	return VD_DIV_ROUND_UP(nr_gd * 4, VD_SECTOR);
}

/* With GD_AT_END the GD follows its marker (type 2, numSectors >= GD). */
static int stream_check_gd_marker(struct vmdk_extent *e, struct stream *s)
{
	uint64_t gd = s->h.gd_offset_sectors, need = stream_gd_sectors(&s->h);
	uint8_t m[VD_SECTOR];
	int ret;

	if (gd < 2 || gd > s->file_size / VD_SECTOR) {
		vd_err("%s: footer gdOffset = %" PRIu64 " outside the file", e->path, gd);
		return -VD_EBADDATA;
	}
	ret = vd_pread_meta(e->file, m, sizeof m, (gd - 1) * VD_SECTOR);
	if (ret < 0) {
		vd_err("%s: reading the GD marker: %s", e->path, strerror(-ret));
		return ret;
	}
	if (get_le32(m + 8) != 0 || get_le32(m + 12) != MARKER_GD || get_le64(m) < need) {
		vd_err("%s: GD marker at sector %" PRIu64 " invalid (numSectors %" PRIu64
		       ", size %u, type %u; expected type 2 covering %" PRIu64
		       " sectors)",
		       e->path, gd - 1, get_le64(m), get_le32(m + 8), get_le32(m + 12),
		       need);
		return -VD_EBADDATA;
	}
	return 0;
}

static int stream_check_size(struct vmdk_extent *e, struct stream *s)
{
	uint64_t cap = s->h.capacity_sectors * VD_SECTOR;

	if (e->size == 0)
		e->size = cap;
	if (e->size > cap) {
		vd_err("%s: descriptor size %" PRIu64
		       " sectors exceeds header capacity = %" PRIu64 " sectors",
		       e->path, e->size / VD_SECTOR, s->h.capacity_sectors);
		return -VD_EBADDATA;
	}
	if (e->size < cap)
		vd_warn("%s: descriptor size %" PRIu64
			" sectors < header capacity = %" PRIu64
			" sectors; using the descriptor's",
			e->path, e->size / VD_SECTOR, s->h.capacity_sectors);
	return 0;
}

static int stream_open_tables(struct vmdk_extent *e, struct stream *s)
{
	int ret;

	if (s->h.gd_offset_sectors > s->file_size / VD_SECTOR) {
		vd_err("%s: gdOffset = %" PRIu64 " outside the file (%" PRIu64 " bytes)",
		       e->path, s->h.gd_offset_sectors, s->file_size);
		return -VD_EBADDATA;
	}
	ret = vmdk_gt_init(&s->gt, e->file, e->path, s->grain_size, s->h.nr_gtes_per_gt,
			   e->size, s->h.gd_offset_sectors * VD_SECTOR, 0);
	if (ret)
		return ret;
	s->gt_ready = true;
	s->gt.stream = true;
	s->gt.zeroed_ok = (s->h.flags & KDMV_FLAG_ZEROED_GTE) != 0;
	s->grain = malloc(s->grain_size);
	s->cbuf = malloc(2 * s->grain_size + VD_SECTOR);
	if (!s->grain || !s->cbuf)
		return -ENOMEM;
	if (inflateInit(&s->zs) != Z_OK)
		return -ENOMEM;
	s->zs_ready = true;
	return 0;
}

static int stream_writer_init(struct vmdk_extent *e, struct stream *s);

/* Header, descriptor, footer, directory and tables against each other (a
 * writable open is refused on any problem); then how much of the
 * descriptor area a rewrite may use. */
static int stream_regions(struct vmdk_extent *e, struct stream *s)
{
	bool strict = (e->disk->open_flags & VMDK_OPEN_RDWR) && e->access == VMDK_ACCESS_RW;
	struct vmdk_regions fresh = { 0 };
	struct vmdk_regions *rs = s->gt_ready ? &s->gt.meta : &fresh;
	uint64_t file_sectors = s->file_size / VD_SECTOR;
	int ret = kdmv_add_regions(&s->h, rs);

	if (!ret && s->footer && file_sectors >= 3) /* footer marker + footer */
		ret = vmdk_regions_add(rs, file_sectors - 3, 2, VMDK_REG_FOOTER, 0);
	if (!ret && s->gt_ready)
		ret = vmdk_gt_regions(&s->gt, strict);
	if (!ret)
		kdmv_set_desc_room(e, &s->h, rs);
	vmdk_regions_free(&fresh);
	return ret;
}

/* Pick the mode (see the top of the file) and set it up. */
static int stream_open_mode(struct vmdk_extent *e, struct stream *s)
{
	bool fresh = s->h.gd_offset_sectors == KDMV_GD_AT_END &&
		     s->file_size == s->h.overhead_sectors * VD_SECTOR;
	bool rw = (e->disk->open_flags & VMDK_OPEN_RDWR) && e->access == VMDK_ACCESS_RW;
	int ret;

	if (fresh && s->h.unclean_shutdown) { /* [S1b] */
		vd_err("%s: interrupted export: a fresh stream with uncleanShutdown set"
		       " (written to, never finished)",
		       e->path);
		return -VD_EBADDATA;
	}
	if (fresh) {
		s->mode = rw ? STREAM_EXPORT : STREAM_EMPTY;
		ret = stream_check_size(e, s);
		if (!ret)
			ret = stream_regions(e, s);
		return ret || !rw ? ret : stream_writer_init(e, s);
	}
	if (s->h.gd_offset_sectors == KDMV_GD_AT_END) {
		ret = stream_read_footer(e, s);
		if (!ret)
			ret = stream_check_header(e, &s->h);
		if (!ret && s->markers)
			ret = stream_check_gd_marker(e, s);
		if (ret)
			return ret;
		s->grain_size = s->h.grain_size_sectors * VD_SECTOR;
		s->footer = true;
	}
	s->mode = STREAM_READ;
	ret = stream_check_size(e, s);
	if (!ret)
		ret = stream_open_tables(e, s);
	return ret ? ret : stream_regions(e, s);
}

static void stream_writer_free(struct stream_writer *w);

static void stream_free(struct stream *s)
{
	if (!s)
		return;
	if (s->gt_ready)
		vmdk_gt_destroy(&s->gt);
	if (s->zs_ready)
		inflateEnd(&s->zs);
	stream_writer_free(s->w);
	free(s->grain);
	free(s->cbuf);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int stream_open(struct vmdk_extent *e, const uint8_t *hdr)
{
	struct stream *s = calloc(1, sizeof *s);
	int ret;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	s->cached = STREAM_NO_GRAIN;
	ret = kdmv_header_decode(hdr, e->path, &s->h);
	if (!ret)
		ret = stream_check_header(e, &s->h);
	if (!ret)
		ret = vd_fsize(e->file, &s->file_size);
	if (!ret && s->file_size < s->h.overhead_sectors * VD_SECTOR) {
		vd_err("%s: file truncated: %" PRIu64 " bytes, overHead = %" PRIu64
		       " sectors",
		       e->path, s->file_size, s->h.overhead_sectors);
		ret = -VD_EBADDATA;
	}
	s->markers = (s->h.flags & KDMV_FLAG_MARKERS) != 0;
	s->grain_size = s->h.grain_size_sectors * VD_SECTOR;
	if (!ret)
		ret = stream_open_mode(e, s);
	if (ret) {
		stream_free(s);
		return ret;
	}
	e->grain_size = s->grain_size;
	e->priv = s;
	return 0;
}

static void stream_close(struct vmdk_extent *e)
{
	stream_free(e->priv);
	e->priv = NULL;
}

/* ---- grain decoding ------------------------------------------------------------ */

/* Inflate `len` bytes of zlib data into s->grain; `need` bytes must come
 * out (less than a grain only for the extent's last, partial grain). */
static int stream_inflate(struct vmdk_extent *e, struct stream *s, const uint8_t *data,
			  size_t len, uint64_t g, uint64_t need)
{
	size_t got;
	int zr;

	inflateReset(&s->zs);
	s->zs.next_in = (Bytef *)data;
	s->zs.avail_in = (uInt)len;
	s->zs.next_out = s->grain;
	s->zs.avail_out = (uInt)s->grain_size;
	zr = inflate(&s->zs, Z_FINISH);
	got = s->grain_size - s->zs.avail_out;
	if (zr != Z_STREAM_END) {
		vd_err("%s: grain %" PRIu64 ": zlib data %s (%s)", e->path, g,
		       zr == Z_BUF_ERROR && !s->zs.avail_out
			   ? "inflates to more than a grain"
			   : "corrupt or truncated",
		       s->zs.msg ? s->zs.msg : zError(zr));
		return -VD_EBADDATA;
	}
	if (got < need) {
		vd_err("%s: grain %" PRIu64 ": inflates to %zu bytes, %" PRIu64 " needed",
		       e->path, g, got, need);
		return -VD_EBADDATA;
	}
	memset(s->grain + got, 0, s->grain_size - got);
	return 0;
}

/* Grain marker at byte `off`: u64 lba, u32 size, data.  Reads it into
 * s->cbuf; *data and *len locate the zlib bytes. */
static int stream_read_marker(struct vmdk_extent *e, struct stream *s, uint64_t g,
			      uint64_t off, const uint8_t **data, size_t *len)
{
	uint64_t lba, size;
	int ret = vd_pread(e->file, s->cbuf, VD_SECTOR, off);

	if (ret < 0)
		return ret;
	lba = get_le64(s->cbuf);
	size = get_le32(s->cbuf + 8);
	if (size == 0 || size >= 2 * s->grain_size ||
	    off + STREAM_MARKER_HDR + size > s->file_size) {
		vd_err("%s: grain %" PRIu64 ": marker at sector %" PRIu64
		       ": size = %" PRIu64 " out of range (1..%" PRIu64
		       ", inside the file)",
		       e->path, g, off / VD_SECTOR, size, 2 * s->grain_size - 1);
		return -VD_EBADDATA;
	}
	if (lba != g * s->h.grain_size_sectors) {
		vd_err("%s: grain %" PRIu64 ": marker at sector %" PRIu64
		       ": lba = %" PRIu64 ", expected %" PRIu64,
		       e->path, g, off / VD_SECTOR, lba, g * s->h.grain_size_sectors);
		return -VD_EBADDATA;
	}
	if (STREAM_MARKER_HDR + size > VD_SECTOR)
		ret = vd_pread(e->file, s->cbuf + VD_SECTOR,
			       STREAM_MARKER_HDR + size - VD_SECTOR, off + VD_SECTOR);
	*data = s->cbuf + STREAM_MARKER_HDR;
	*len = (size_t)size;
	return ret;
}

static bool stream_zlib_header(const uint8_t *b)
{
	return (b[0] & 0x0f) == 8 && ((b[0] << 8) | b[1]) % 31 == 0;
}

/* Compressed without markers (flag 16 alone): qemu reads a bare zlib
 * stream, open-vmdk and dissect a u32 size first.  A plausible size
 * followed by a zlib header (CMF/FLG check) wins, then a bare header. */
static int stream_read_bare(struct vmdk_extent *e, struct stream *s, uint64_t g,
			    uint64_t off, const uint8_t **data, size_t *len)
{
	uint64_t avail = off < s->file_size ? s->file_size - off : 0;
	size_t n = (size_t)VD_MIN(avail, 2 * s->grain_size);
	int ret = vd_pread(e->file, s->cbuf, n, off);
	const uint8_t *b = s->cbuf;

	if (ret < 0)
		return ret;
	if (n >= 6 && get_le32(b) >= 2 && get_le32(b) <= n - 4 &&
	    stream_zlib_header(b + 4)) {
		*data = b + 4;
		*len = get_le32(b);
		return 0;
	}
	if (n >= 2 && stream_zlib_header(b)) {
		*data = b;
		*len = n;
		return 0;
	}
	vd_err("%s: grain %" PRIu64 " at sector %" PRIu64 ": neither zlib data nor a"
	       " valid size prefix",
	       e->path, g, off / VD_SECTOR);
	return -VD_EBADDATA;
}

/* Make s->grain hold grain g, stored at sector gte.  Holds s->lock. */
static int stream_load_grain(struct vmdk_extent *e, struct stream *s, uint64_t g,
			     uint32_t gte)
{
	uint64_t off = (uint64_t)gte * VD_SECTOR;
	uint64_t need = VD_MIN(s->grain_size, e->size - g * s->grain_size);
	const uint8_t *data;
	size_t len;
	int ret;

	if (s->cached == g)
		return 0;
	s->cached = STREAM_NO_GRAIN;
	ret = s->markers ? stream_read_marker(e, s, g, off, &data, &len)
			 : stream_read_bare(e, s, g, off, &data, &len);
	if (ret == -VD_EBADDATA)
		return ret;
	if (ret < 0) {
		vd_err("%s: reading grain %" PRIu64 ": %s", e->path, g, strerror(-ret));
		return ret;
	}
	ret = stream_inflate(e, s, data, len, g, need);
	if (!ret)
		s->cached = g;
	return ret;
}

static int stream_lookup(struct vmdk_extent *e, struct stream *s, uint64_t g,
			 uint32_t *gte)
{
	int ret;

	pthread_mutex_lock(&e->disk->lock);
	ret = vmdk_gt_lookup(&s->gt, g, gte);
	pthread_mutex_unlock(&e->disk->lock);
	return ret;
}

/* ---- reading ---------------------------------------------------------------------- */

static bool stream_gte_is_zero(const struct stream *s, uint32_t gte)
{
	return gte == 0 || gte == VMDK_GTE_ZEROED;
}

static int stream_read_grain(struct vmdk_extent *e, struct stream *s, uint8_t *p,
			     uint64_t g, uint64_t in, size_t n)
{
	uint32_t gte;
	int ret = stream_lookup(e, s, g, &gte);

	if (ret)
		return ret;
	if (stream_gte_is_zero(s, gte)) {
		memset(p, 0, n);
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	ret = stream_load_grain(e, s, g, gte);
	if (!ret)
		memcpy(p, s->grain + in, n);
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int stream_pread(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct stream *s = e->priv;
	uint8_t *p = buf;

	if (s->mode == STREAM_EMPTY) {
		memset(buf, 0, len);
		return 0;
	}
	if (s->mode != STREAM_READ) {
		vd_err("%s: a stream being written cannot be read until it is closed",
		       e->path);
		return -EBUSY;
	}
	while (len) {
		uint64_t g = off / s->grain_size, in = off % s->grain_size;
		size_t n = (size_t)VD_MIN((uint64_t)len, s->grain_size - in);
		int ret = stream_read_grain(e, s, p, g, in, n);

		if (ret)
			return ret;
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int stream_block_status(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			       enum vmdk_bs *kind, uint64_t *run_len)
{
	struct stream *s = e->priv;
	uint64_t end = VD_MIN(off + max_len, e->size), pos = off;

	if (s->mode != STREAM_READ) {
		*kind = VMDK_BS_UNALLOC;
		*run_len = end - off;
		return 0;
	}
	while (pos < end) {
		uint64_t g = pos / s->grain_size, gpt = s->gt.gtes_per_gt;
		uint32_t gte;
		int ret = stream_lookup(e, s, g, &gte);
		enum vmdk_bs k;

		if (ret)
			return ret;
		k = gte == 0		     ? VMDK_BS_UNALLOC
		    : gte == VMDK_GTE_ZEROED ? VMDK_BS_ZERO
					     : VMDK_BS_DATA;
		if (pos == off)
			*kind = k;
		else if (k != *kind)
			break;
		if (!s->gt.gd[g / gpt]) /* no table: the rest of its range at once */
			g = g / gpt * gpt + gpt - 1;
		pos = (g + 1) * s->grain_size;
	}
	*run_len = VD_MIN(pos, end) - off;
	return 0;
}

/* ---- export: writer state ------------------------------------------------------------
 */

static void stream_writer_free(struct stream_writer *w)
{
	if (!w)
		return;
	if (w->zs_ready)
		deflateEnd(&w->zs);
	free(w->gbuf);
	free(w->zbuf);
	free(w->gd);
	free(w);
}

static int stream_writer_init(struct vmdk_extent *e, struct stream *s)
{
	struct stream_writer *w = calloc(1, sizeof *w);
	uint64_t nr_grains = VD_DIV_ROUND_UP(e->size, s->grain_size);

	if (!w)
		return -ENOMEM;
	s->w = w;
	/* what vmdk_stream_create makes; also bounds the GD kept in memory */
	if (s->h.nr_gtes_per_gt != STREAM_GTES_PER_GT ||
	    s->h.flags != STREAM_FLAGS_EXPORT || s->h.grain_size_sectors < 16 ||
	    e->size != s->h.capacity_sectors * VD_SECTOR) {
		vd_err("%s: fresh stream with numGTEsPerGT = %u, flags = 0x%x,"
		       " grainSize = %" PRIu64 ": only 512, 0x%x, >= 16 sectors and"
		       " the descriptor's size can be written",
		       e->path, s->h.nr_gtes_per_gt, s->h.flags, s->h.grain_size_sectors,
		       STREAM_FLAGS_EXPORT);
		return -ENOTSUP;
	}
	w->nr_gd = (uint32_t)VD_DIV_ROUND_UP(nr_grains, STREAM_GTES_PER_GT);
	w->next_sector = s->h.overhead_sectors;
	w->buf_grain = STREAM_NO_GRAIN;
	w->gbuf = malloc(s->grain_size);
	w->zbuf_size = VD_ROUND_UP(
	    STREAM_MARKER_HDR + compressBound((uLong)s->grain_size), VD_SECTOR);
	w->zbuf = malloc(w->zbuf_size);
	w->gd = calloc(w->nr_gd ? w->nr_gd : 1, sizeof *w->gd);
	if (!w->gbuf || !w->zbuf || !w->gd)
		return -ENOMEM;
	if (deflateInit(&w->zs, Z_DEFAULT_COMPRESSION) != Z_OK)
		return -ENOMEM;
	w->zs_ready = true;
	return 0;
}

/* Append len bytes (a sector multiple) at the end of the stream. */
static int stream_append(struct vmdk_extent *e, struct stream_writer *w, const void *buf,
			 size_t len, uint64_t *sector)
{
	uint64_t n = len / VD_SECTOR;
	int ret;

	if (w->next_sector + n > UINT32_MAX) {
		vd_err("%s: stream would exceed 2^32 sectors (2 TiB of compressed data)",
		       e->path);
		return -EFBIG;
	}
	ret = vd_pwrite(e->file, buf, len, w->next_sector * VD_SECTOR);
	if (ret < 0) {
		vd_err("%s: writing the stream at sector %" PRIu64 ": %s", e->path,
		       w->next_sector, strerror(-ret));
		return ret;
	}
	*sector = w->next_sector;
	w->next_sector += n;
	return 0;
}

static void stream_put_marker(uint8_t *m, uint64_t num_sectors, uint32_t type)
{
	memset(m, 0, VD_SECTOR);
	put_le64(m, num_sectors);
	put_le32(m + 12, type);
}

/* [S3] GT marker + GT of the GT being filled, if it holds grains. */
static int stream_put_gt(struct vmdk_extent *e, struct stream_writer *w)
{
	uint8_t buf[VD_SECTOR + STREAM_GTES_PER_GT * 4];
	uint64_t sector;
	int ret;

	if (!w->gt_used)
		return 0;
	stream_put_marker(buf, STREAM_GTES_PER_GT * 4 / VD_SECTOR, MARKER_GT);
	for (unsigned i = 0; i < STREAM_GTES_PER_GT; i++)
		put_le32(buf + VD_SECTOR + 4 * i, w->gt[i]);
	ret = stream_append(e, w, buf, sizeof buf, &sector);
	if (ret)
		return ret;
	w->gd[w->gt_index] = (uint32_t)(sector + 1);
	memset(w->gt, 0, sizeof w->gt);
	w->gt_used = false;
	return 0;
}

/* Marker + zlib stream of w->gbuf into w->zbuf; *len: padded length. */
static int stream_compress(struct vmdk_extent *e, struct stream *s, uint64_t g,
			   size_t *len)
{
	struct stream_writer *w = s->w;
	size_t out;

	deflateReset(&w->zs);
	w->zs.next_in = w->gbuf;
	w->zs.avail_in = (uInt)s->grain_size;
	w->zs.next_out = w->zbuf + STREAM_MARKER_HDR;
	w->zs.avail_out = (uInt)(w->zbuf_size - STREAM_MARKER_HDR);
	if (deflate(&w->zs, Z_FINISH) != Z_STREAM_END) {
		vd_err("%s: compressing grain %" PRIu64 " failed", e->path, g);
		return -EIO;
	}
	out = w->zbuf_size - STREAM_MARKER_HDR - w->zs.avail_out;
	put_le64(w->zbuf, g * s->h.grain_size_sectors);
	put_le32(w->zbuf + 8, (uint32_t)out);
	*len = VD_ROUND_UP(STREAM_MARKER_HDR + out, VD_SECTOR);
	memset(w->zbuf + STREAM_MARKER_HDR + out, 0, *len - STREAM_MARKER_HDR - out);
	return 0;
}

/* [S2] Write the buffered grain unless it is all zeros. */
static int stream_emit(struct vmdk_extent *e, struct stream *s)
{
	struct stream_writer *w = s->w;
	uint64_t g = w->buf_grain, sector;
	size_t len;
	int ret = 0;

	w->buf_grain = STREAM_NO_GRAIN;
	if (g == STREAM_NO_GRAIN || vd_is_zero(w->gbuf, s->grain_size))
		return 0;
	if (g / STREAM_GTES_PER_GT != w->gt_index) {
		ret = stream_put_gt(e, w);
		w->gt_index = g / STREAM_GTES_PER_GT;
	}
	if (!ret)
		ret = stream_compress(e, s, g, &len);
	if (!ret)
		ret = stream_append(e, w, w->zbuf, len, &sector);
	if (ret)
		return ret;
	w->gt[g % STREAM_GTES_PER_GT] = (uint32_t)sector;
	w->gt_used = true;
	w->nr_grains++;
	return 0;
}

/* ---- export: pwrite and finish --------------------------------------------------------
 */

/* Copy [off, off+len) into the grain buffer, emitting each grain once the
 * writes have moved past it.  Holds s->lock. */
static int stream_write_locked(struct vmdk_extent *e, struct stream *s, const uint8_t *p,
			       size_t len, uint64_t off)
{
	struct stream_writer *w = s->w;
	int ret = 0;

	while (len && !ret) {
		uint64_t g = off / s->grain_size, in = off % s->grain_size;
		size_t n = (size_t)VD_MIN((uint64_t)len, s->grain_size - in);

		if (w->buf_grain != g) {
			ret = stream_emit(e, s);
			memset(w->gbuf, 0, s->grain_size);
			w->buf_grain = g;
		}
		memcpy(w->gbuf + in, p, n);
		p += n;
		off += n;
		len -= n;
		if (!ret && (in + n == s->grain_size || off == e->size))
			ret = stream_emit(e, s);
	}
	return ret;
}

/* Zeros over [off, off+len): the grain buffer already holds zeros past the
 * last write and all-zero grains are omitted, so only the buffered grain
 * may need emitting.  Holds s->lock. */
static int stream_zero_locked(struct vmdk_extent *e, struct stream *s, size_t len,
			      uint64_t off)
{
	struct stream_writer *w = s->w;
	uint64_t end = off + len;

	if (w->buf_grain != STREAM_NO_GRAIN &&
	    (end >= (w->buf_grain + 1) * s->grain_size || end == e->size))
		return stream_emit(e, s);
	return 0;
}

/* Data (buf) or zeros (buf NULL) at off: append-only, export mode only. */
static int stream_put(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	struct stream *s = e->priv;
	struct stream_writer *w = s->w;
	int ret;

	if (s->mode != STREAM_EXPORT) {
		vd_err("%s: streamOptimized extent is read-only: only a freshly created"
		       " stream can be written (%s)",
		       e->path,
		       s->mode == STREAM_DONE ? "this one is finished"
					      : "by ascending writes");
		return -EROFS;
	}
	pthread_mutex_lock(&e->disk->lock);
	ret = vmdk_disk_mark_dirty(e->disk);
	pthread_mutex_unlock(&e->disk->lock);
	if (ret)
		return ret;
	pthread_mutex_lock(&s->lock);
	if (w->error) {
		ret = w->error;
	} else if (off < w->pos) {
		vd_err("%s: stream is append-only: write at byte %" PRIu64 " below the"
		       " current position %" PRIu64,
		       e->path, off, w->pos);
		ret = -EINVAL;
	} else {
		ret = w->error = buf ? stream_write_locked(e, s, buf, len, off)
				     : stream_zero_locked(e, s, len, off);
		w->pos = off + len;
	}
	pthread_mutex_unlock(&s->lock);
	return ret;
}

static int stream_pwrite(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	return stream_put(e, buf, len, off);
}

static int stream_pwrite_zeroes(struct vmdk_extent *e, size_t len, uint64_t off)
{
	return stream_put(e, NULL, len, off);
}

/* [S4] GD marker + GD, footer marker + footer, EOS, in one append. */
static int stream_put_tail(struct vmdk_extent *e, struct stream *s)
{
	struct stream_writer *w = s->w;
	uint64_t gd_sectors = VD_DIV_ROUND_UP((uint64_t)w->nr_gd * 4, VD_SECTOR);
	size_t len = (size_t)(1 + gd_sectors + 3) * VD_SECTOR;
	uint8_t *buf = calloc(1, len), *f;
	struct kdmv_header h = s->h;
	uint64_t sector;
	int ret;

	if (!buf)
		return -ENOMEM;
	stream_put_marker(buf, gd_sectors, MARKER_GD);
	for (uint32_t i = 0; i < w->nr_gd; i++)
		put_le32(buf + VD_SECTOR + 4 * i, w->gd[i]);
	f = buf + (1 + gd_sectors) * VD_SECTOR;
	stream_put_marker(f, 1, MARKER_FOOTER);
	h.gd_offset_sectors = w->next_sector + 1;
	h.unclean_shutdown = 0;
	kdmv_header_encode(&h, f + VD_SECTOR);
	ret = stream_append(e, w, buf, len, &sector); /* EOS: the zero last sector */
	free(buf);
	return ret;
}

static int stream_finish(struct vmdk_extent *e)
{
	struct stream *s = e->priv;
	struct stream_writer *w;
	int ret;

	if (!s || s->mode != STREAM_EXPORT)
		return 0;
	w = s->w;
	pthread_mutex_lock(&s->lock);
	ret = w->error;
	if (!ret)
		ret = stream_emit(e, s);
	if (!ret)
		ret = stream_put_gt(e, w);
	if (!ret)
		ret = stream_put_tail(e, s);
	if (!ret && (ret = vd_sync(e->file)) < 0)
		vd_err("%s: syncing the finished stream: %s", e->path, strerror(-ret));
	w->error = ret;
	if (!ret)
		s->mode = STREAM_DONE;
	pthread_mutex_unlock(&s->lock);
	return ret;
}

/* [S1b] [S4] uncleanShutdown in the header: set before the first write of
 * an export, cleared after it is finished; other modes write nothing. */
static int stream_set_dirty(struct vmdk_extent *e, bool dirty)
{
	struct stream *s = e->priv;
	uint8_t v = dirty;
	int ret;

	if (s->mode != STREAM_EXPORT && !(s->mode == STREAM_DONE && !dirty))
		return 0;
	ret = vd_pwrite(e->file, &v, 1, 72);
	if (!ret)
		ret = vd_sync(e->file);
	if (ret)
		vd_err("%s: updating uncleanShutdown: %s", e->path, strerror(-ret));
	return ret;
}

/* ---- create ---------------------------------------------------------------------------
 */

static int stream_create_header(const struct vmdk_create_opts *o, const char *path,
				struct kdmv_header *h)
{
	uint64_t gs = o->grain_size ? o->grain_size : 65536;

	/* the format notes (and libvmdk) want more than 8 sectors */
	if (!vd_is_pow2(gs) || gs < 16 * VD_SECTOR ||
	    gs > (uint64_t)VMDK_MAX_GRAIN_SECTORS * VD_SECTOR) {
		vd_err("%s: grain size %" PRIu64
		       " must be a power of two, 8 KiB .. %u KiB",
		       path, gs, VMDK_MAX_GRAIN_SECTORS / 2);
		return -EINVAL;
	}
	if (o->capacity == 0 || o->capacity > VMDK_MAX_CAPACITY) {
		vd_err("%s: capacity %" PRIu64 " out of range (1 .. 64 TiB)", path,
		       o->capacity);
		return -EINVAL;
	}
	memset(h, 0, sizeof *h);
	h->version = 3;
	h->flags = STREAM_FLAGS_EXPORT;
	h->capacity_sectors = VD_DIV_ROUND_UP(o->capacity, VD_SECTOR);
	h->grain_size_sectors = gs / VD_SECTOR;
	h->desc_offset_sectors = 1;
	h->desc_size_sectors = STREAM_DESC_SECTORS;
	h->nr_gtes_per_gt = STREAM_GTES_PER_GT;
	h->gd_offset_sectors = KDMV_GD_AT_END;
	h->overhead_sectors = VD_ROUND_UP(1 + STREAM_DESC_SECTORS, h->grain_size_sectors);
	h->compress_algorithm = 1;
	return 0;
}

static int stream_create_write(const char *path, const struct vd_io *io,
			       const uint8_t *buf, size_t len)
{
	struct vd_file *f;
	int ret = io->open(io, path, VD_O_RDWR | VD_O_CREATE, &f);

	if (ret < 0) {
		vd_err("%s: creating: %s", path, strerror(-ret));
		return ret;
	}
	ret = vd_pwrite(f, buf, len, 0);
	if (!ret)
		ret = vd_sync(f);
	vd_close(f);
	if (!ret && io->sync_dir)
		ret = io->sync_dir(io, path);
	if (ret < 0) {
		vd_err("%s: writing the stream header: %s", path, strerror(-ret));
		io->unlink(io, path);
	}
	return ret;
}

int vmdk_stream_create(const char *path, const struct vmdk_create_opts *o,
		       const struct vd_io *io, const char *desc_text)
{
	size_t desc_len = strlen(desc_text), len;
	struct kdmv_header h;
	uint8_t *buf;
	int ret;

	if (!io)
		io = vd_io_posix();
	ret = stream_create_header(o, path, &h);
	if (ret)
		return ret;
	if (desc_len >= STREAM_DESC_SECTORS * VD_SECTOR) {
		vd_err("%s: descriptor of %zu bytes does not fit in %u sectors", path,
		       desc_len, STREAM_DESC_SECTORS);
		return -EINVAL;
	}
	len = (size_t)h.overhead_sectors * VD_SECTOR; /* [S1] */
	buf = calloc(1, len);
	if (!buf)
		return -ENOMEM;
	kdmv_header_encode(&h, buf);
	memcpy(buf + VD_SECTOR, desc_text, desc_len);
	ret = stream_create_write(path, io, buf, len);
	free(buf);
	return ret;
}

/* ---- info and check
 * -------------------------------------------------------------------- */

static int stream_info(struct vmdk_extent *e, struct vmdk_extent_info *out, bool count)
{
	struct stream *s = e->priv;
	const struct kdmv_header *h = &s->h;
	int ret = 0;

	out->kind = VMDK_EXT_STREAM;
	out->file_size = s->w ? s->w->next_sector * VD_SECTOR : s->file_size;
	kdmv_header_info(h, out);
	if (s->mode == STREAM_READ) {
		out->nr_gd_entries = s->gt.nr_gd;
		pthread_mutex_lock(&e->disk->lock);
		ret = count ? vmdk_gt_allocated(&s->gt, &out->allocated) : 0;
		pthread_mutex_unlock(&e->disk->lock);
	} else if (s->w) {
		out->nr_gd_entries = s->w->nr_gd;
		out->allocated = s->w->nr_grains * s->grain_size;
	}
	return ret;
}

static void stream_report(vmdk_check_fn *fn, void *opaque, const char *path,
			  struct vmdk_check_result *res, uint64_t g, int err)
{
	char msg[160];

	res->errors++;
	snprintf(msg, sizeof msg, "grain %" PRIu64 " unreadable: %s", g,
		 err == -VD_EBADDATA ? "bad marker or zlib data" : strerror(-err));
	fn(opaque, true, path, msg);
}

/* Every GTE must lead to a grain marker with the right lba whose zlib data
 * inflates to the grain (at most 20 reports). */
static int stream_check_grains(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
			       struct vmdk_check_result *res)
{
	struct stream *s = e->priv;
	unsigned bad = 0;

	for (uint64_t g = 0; g < s->gt.nr_grains; g++) {
		uint32_t gte;
		int ret;

		uint64_t i = g / s->gt.gtes_per_gt;
		if (g % s->gt.gtes_per_gt == 0 &&
		    (!s->gt.gd[i] || (s->gt.flags[i] & VMDK_GT_BAD))) {
			g += s->gt.gtes_per_gt - 1; /* none, or reported by the region check */
			continue;
		}
		ret = stream_lookup(e, s, g, &gte);
		if (!ret && stream_gte_is_zero(s, gte))
			continue;
		if (!ret) {
			pthread_mutex_lock(&s->lock);
			ret = stream_load_grain(e, s, g, gte);
			pthread_mutex_unlock(&s->lock);
		}
		if (ret && ret != -VD_EBADDATA && ret != -EIO)
			return ret;
		if (ret && bad++ < 20)
			stream_report(fn, opaque, e->path, res, g, ret);
		else if (ret)
			res->errors++;
	}
	return 0;
}

/* A stream written in order (footer, markers) has a GT marker (type 1)
 * before each GT; a missing one is worth a warning, not an error. */
static int stream_check_gt_markers(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
				   struct vmdk_check_result *res)
{
	struct stream *s = e->priv;
	uint8_t m[VD_SECTOR];
	char msg[160];

	for (uint32_t i = 0; s->footer && s->markers && i < s->gt.nr_gd; i++) {
		uint32_t at = s->gt.gd[i];
		int ret;
		if (at < 2)
			continue; /* 0: none; 1: reported by the table check */
		ret = vd_pread_meta(e->file, m, sizeof m, (uint64_t)(at - 1) * VD_SECTOR);
		if (ret < 0)
			return ret;
		if (get_le32(m + 8) || get_le32(m + 12) != MARKER_GT) {
			snprintf(msg, sizeof msg,
				 "grain table %u at sector %u has no GT marker"
				 " before it",
				 i, at);
			res->warnings++;
			fn(opaque, false, e->path, msg);
		}
	}
	return 0;
}

/* The shared table check (tables inside the file; grains counted), the
 * GT markers, then every grain decoded. */
static int stream_check(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
			struct vmdk_check_result *res)
{
	struct stream *s = e->priv;
	int ret;

	if (s->mode != STREAM_READ)
		return 0;
	ret = vmdk_gt_check(e, &s->gt, s->h.overhead_sectors * VD_SECTOR, false, fn,
			    opaque, res);
	if (!ret)
		ret = stream_check_gt_markers(e, fn, opaque, res);
	return ret ? ret : stream_check_grains(e, fn, opaque, res);
}

const struct vmdk_extent_ops vmdk_stream_ops = {
    .name = "streamOptimized",
    .open = stream_open,
    .close = stream_close,
    .pread = stream_pread,
    .pwrite = stream_pwrite,
    .pwrite_zeroes = stream_pwrite_zeroes,
    .block_status = stream_block_status,
    .set_dirty = stream_set_dirty,
    .finish = stream_finish,
    .info = stream_info,
    .check = stream_check,
};
