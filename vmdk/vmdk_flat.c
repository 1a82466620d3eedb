/* vmdk — FLAT and VMFS extents (raw bytes at an offset in a file) and ZERO
 * extents (no file) (format layer).  Holes of a sparse host file report
 * as zero runs so that copies stay sparse; flat extents cannot mark
 * anything unallocated, so they never fall through to a parent. */
#define _GNU_SOURCE
#include "vmdk_int.h"

#include <errno.h>
#include <unistd.h>

/* A writer never grows a file that is shorter than the extent it holds:
 * it is not the disk's (a block device's size is its own). */
static int flat_check_size(struct vmdk_extent *e)
{
	uint64_t size;
	int err = vd_fsize(e->file, &size);

	if (err || size >= e->file_offset + e->size)
		return err;
	vd_err("%s: flat extent file holds %llu bytes, the extent declares %llu from "
	       "offset %llu: refused for writing (it would grow the file)", e->path,
	       (unsigned long long)size, (unsigned long long)e->size,
	       (unsigned long long)e->file_offset);
	return -EFBIG;
}

static int flat_open(struct vmdk_extent *e, const uint8_t *hdr)
{
	(void)hdr;
	if (e->file_offset > UINT64_MAX - e->size) {
		vd_err("%s: extent offset %llu overflows", e->path,
		       (unsigned long long)e->file_offset);
		return -VD_EBADDATA;
	}
	if (e->access == VMDK_ACCESS_RW && (e->disk->open_flags & VMDK_OPEN_RDWR) &&
	    !(e->disk->open_flags & VMDK_OPEN_OUTSIDE_OK))
		return flat_check_size(e);
	return 0;
}

static int flat_pread(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	int err = vd_pread(e->file, buf, len, e->file_offset + off);

	if (err)
		vd_err("%s: read at %llu: %s", e->path,
		       (unsigned long long)(e->file_offset + off), strerror(-err));
	return err;
}

static int flat_pwrite(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off)
{
	int err;

	pthread_mutex_lock(&e->disk->lock);
	err = vmdk_disk_mark_dirty(e->disk);
	pthread_mutex_unlock(&e->disk->lock);
	if (!err)
		err = vd_pwrite(e->file, buf, len, e->file_offset + off);
	if (err)
		vd_err("%s: write at %llu: %s", e->path,
		       (unsigned long long)(e->file_offset + off), strerror(-err));
	return err;
}

/* Data or hole at off, through SEEK_DATA/SEEK_HOLE when the io has an fd. */
static int flat_block_status(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			     enum vmdk_bs *kind, uint64_t *run_len)
{
	off_t pos = (off_t)(e->file_offset + off), next;

	*kind = VMDK_BS_DATA;
	*run_len = max_len;
	if (e->file->fd < 0)
		return 0;
	next = lseek(e->file->fd, pos, SEEK_DATA);
	if (next < 0 && errno == ENXIO) { /* hole up to end of file */
		*kind = VMDK_BS_ZERO;
		return 0;
	}
	if (next < 0)
		return 0; /* no hole support: all data */
	if (next > pos) {
		*kind = VMDK_BS_ZERO;
		*run_len = VD_MIN(max_len, (uint64_t)(next - pos));
		return 0;
	}
	next = lseek(e->file->fd, pos, SEEK_HOLE);
	if (next > pos)
		*run_len = VD_MIN(max_len, (uint64_t)(next - pos));
	return 0;
}

/* Plain bytes, except past the file's end (those read as zeros). */
static int flat_file_map(struct vmdk_extent *e, uint64_t off, uint64_t len,
			 uint64_t *file_off, uint64_t *run)
{
	uint64_t size;
	int err = vd_fsize(e->file, &size);

	*file_off = e->file_offset + off;
	*run = len;
	if (err)
		return err;
	if (*file_off >= size)
		return -ENOENT;
	*run = VD_MIN(len, size - *file_off);
	return 0;
}

static int flat_info(struct vmdk_extent *e, struct vmdk_extent_info *out, bool count)
{
	(void)count; /* no table: the file's size */
	out->allocated = VD_MIN(e->size, out->file_size > e->file_offset
						 ? out->file_size - e->file_offset : 0);
	return 0;
}

const struct vmdk_extent_ops vmdk_flat_ops = {
	.name = "flat",
	.open = flat_open,
	.pread = flat_pread,
	.pwrite = flat_pwrite,
	.block_status = flat_block_status,
	.file_map = flat_file_map,
	.info = flat_info,
};

static int zero_open(struct vmdk_extent *e, const uint8_t *hdr)
{
	(void)e;
	(void)hdr;
	return 0;
}

static int zero_pread(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	(void)e;
	(void)off;
	memset(buf, 0, len);
	return 0;
}

static int zero_block_status(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			     enum vmdk_bs *kind, uint64_t *run_len)
{
	(void)e;
	(void)off;
	*kind = VMDK_BS_ZERO;
	*run_len = max_len;
	return 0;
}

/* ZERO extents refuse writes (pwrite NULL): there is nowhere to put data. */
const struct vmdk_extent_ops vmdk_zero_ops = {
	.name = "zero",
	.open = zero_open,
	.pread = zero_pread,
	.block_status = zero_block_status,
};
