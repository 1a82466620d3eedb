/* rbd — one imported layer's content from an image (layer 4).
 *
 * Owns: finding the objects an image (at a snapshot) holds beyond its
 * parent (rbd_diff_iterate2, whole objects, without the parent's; or
 * from an earlier snapshot of the same image), reading them in order, and
 * writing into the new top of a chain only the grains whose bytes differ
 * from what the chain already reads there (its parent's content: a
 * copied-up object holds much of its parent's data, which stays the
 * parent's).  A differing grain of zeros becomes chain_pwrite_zeroes (a
 * zeroed grain masking the parent), any other chain_pwrite.  A base's
 * zero grains thus stay holes.  Past its parent overlap a clone reads
 * zeros whatever the parent holds (a clone shrunk, then grown): that range
 * is read and compared whole, so the layer masks the parent there too.
 * The ranges (rbd_fill_ranges: the image's objects and that range) are
 * rbd_extent.c lists, bounded by the image's fragmentation.
 */
#include <errno.h>
#include <stdlib.h>

#include "rbd_int.h"

struct fill {
	struct chain *c;
	uint64_t grain;
	uint8_t *mine; /* one grain of the chain's current content */
	uint64_t written;
	struct rbd_progress *pr;
};

/* The part [off, off+len) of one grain: written when it differs. */
static int put_piece(struct fill *f, const uint8_t *buf, size_t len, uint64_t off)
{
	int err = chain_pread(f->c, f->mine, len, off);

	if (err || !memcmp(f->mine, buf, len))
		return err;
	f->written += len;
	return vd_is_zero(buf, len) ? chain_pwrite_zeroes(f->c, len, off)
				    : chain_pwrite(f->c, buf, len, off);
}

static int consume(void *opaque, const void *data, size_t len, uint64_t off)
{
	struct fill *f = opaque;
	const uint8_t *buf = data;
	int err = 0;

	for (size_t done = 0; !err && done < len;) {
		uint64_t at = off + done;
		size_t n = (size_t)VD_MIN(len - done, f->grain - at % f->grain);
		err = put_piece(f, buf + done, n, at);
		done += n;
	}
	rbd_progress_add(f->pr, len);
	return err;
}

int rbd_fill_ranges(rbd_image_t img, const char *what, const struct rbd_fill_src *src,
		    uint64_t size, struct rbd_extents *out)
{
	struct rbd_extents objs = {0}, mask = {0};
	uint64_t end = VD_MIN(src->mask_end, size);
	int err = rbd_extent_of_image(img, what, src->from_snap, size, &objs);

	if (!err && src->mask_off < end)
		err = rbd_extent_add(&mask, src->mask_off, end - src->mask_off);
	if (!err)
		err = rbd_extent_union(&objs, &mask, out);
	rbd_extent_free(&objs);
	rbd_extent_free(&mask);
	return err;
}

int rbd_fill_layer(struct chain *c, rbd_image_t img, const char *what,
		   const struct rbd_fill_src *src, struct rbd_progress *pr, uint64_t *written)
{
	struct fill f = {.c = c, .grain = chain_unit(c), .pr = pr};
	struct rbd_extents ext = {0};
	struct rbd_xfer *x = NULL;
	int err = rbd_fill_ranges(img, what, src, chain_capacity(c), &ext);

	f.mine = err ? NULL : malloc(f.grain);
	if (!err && !f.mine)
		err = -ENOMEM;
	for (unsigned i = 0; !err && i < ext.nr; i++)
		pr->total += ext.v[i].len;
	if (!err)
		err = rbd_xfer_create(img, what, &x);
	for (unsigned i = 0; !err && i < ext.nr; i++)
		err = rbd_xfer_read_range(x, ext.v[i].off, ext.v[i].len, consume, &f);
	rbd_xfer_destroy(x);
	free(f.mine);
	rbd_extent_free(&ext);
	*written = f.written;
	return err;
}
