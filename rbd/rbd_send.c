/* rbd — sending one layer's own grains into an image (layer 3).
 *
 * Owns the walk of a layer alone (vmdk_block_status of the layer file, no
 * parent): a DATA run is read from the layer (vmdk_pread: its own grains)
 * and written in requests of at most RBD_XFER_CHUNK that never cross a
 * chunk boundary (so a 4 MiB object is written whole, with no copy-up
 * read of the parent); a ZERO run (zeroed grains) of a clone becomes
 * rbd_write_zeroes, which reads back as zeros over whatever the parent
 * holds (a discard would not for part of an object: librbd skips those);
 * an unallocated run is not sent (the clone reads its parent there, a new
 * base reads zeros).  A base's zeroed grains are not sent either: a new
 * image already reads zeros.  Nothing of the layer is written.
 */
#include <errno.h>

#include "rbd_int.h"

struct send {
	struct vmdk_disk *layer;
	struct rbd_xfer *x; /* NULL: count only */
	bool mask_zeros;
	struct rbd_progress *pr;
	uint64_t data, zeros;
};

static uint64_t chunk_end(uint64_t off, uint64_t end)
{
	return VD_MIN(end, (off / RBD_XFER_CHUNK + 1) * RBD_XFER_CHUNK);
}

static int send_data(struct send *s, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	int err = 0;

	s->data += len;
	while (s->x && !err && off < end) {
		uint64_t n = chunk_end(off, end) - off;
		void *buf = rbd_xfer_next(s->x);
		err = vmdk_pread(s->layer, buf, (size_t)n, off);
		if (!err)
			err = rbd_xfer_write(s->x, (size_t)n, off);
		if (!err)
			rbd_progress_add(s->pr, n);
		off += n;
	}
	return err;
}

static int send_zeros(struct send *s, uint64_t off, uint64_t len)
{
	if (!s->mask_zeros)
		return 0;
	s->zeros += len;
	return s->x ? rbd_xfer_zeroes(s->x, (size_t)len, off) : 0;
}

static int walk(struct send *s)
{
	uint64_t cap = vmdk_capacity(s->layer), off, run;
	enum vmdk_bs kind;
	int err = 0;

	for (off = 0; !err && off < cap; off += run) {
		err = vmdk_block_status(s->layer, off, cap - off, &kind, &run);
		if (!err && kind == VMDK_BS_DATA)
			err = send_data(s, off, run);
		else if (!err && kind == VMDK_BS_ZERO)
			err = send_zeros(s, off, run);
	}
	return err;
}

int rbd_send_layer(struct vmdk_disk *layer, rbd_image_t img, const char *what,
		   bool mask_zeros, struct rbd_progress *pr, uint64_t *sent,
		   uint64_t *zeroed)
{
	struct send s = {.layer = layer, .mask_zeros = mask_zeros, .pr = pr};
	int err = rbd_xfer_create(img, what, &s.x), derr;

	if (err)
		return err;
	err = walk(&s);
	derr = rbd_xfer_drain(s.x);
	rbd_xfer_destroy(s.x);
	if (!err)
		err = derr;
	if (!err) {
		err = rbd_flush(img);
		if (err < 0)
			vd_err("%s: flush: %s", what, strerror(-err));
	}
	*sent = s.data;
	*zeroed = s.zeros;
	return err;
}

int rbd_send_count(struct vmdk_disk *layer, bool mask_zeros, uint64_t *data,
		   uint64_t *zeros)
{
	struct send s = {.layer = layer, .mask_zeros = mask_zeros};
	int err = walk(&s);

	*data = s.data;
	*zeros = s.zeros;
	return err;
}
