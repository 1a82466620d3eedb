/* rbd — one imported layer's content from an image (layer 3).
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
 * Extents are merged as they come, so the list is bounded by the image's
 * fragmentation, not its size.
 */
#include <errno.h>
#include <stdlib.h>

#include "rbd_int.h"

struct extent {
	uint64_t off, len;
};

struct fill {
	struct chain *c;
	uint64_t grain;
	uint8_t *mine; /* one grain of the chain's current content */
	struct extent *ext;
	unsigned nr, cap;
	uint64_t written;
	struct rbd_progress *pr;
	int err;
};

static int add_extent(uint64_t off, size_t len, int exists, void *opaque)
{
	struct fill *f = opaque;
	struct extent *e = f->nr ? &f->ext[f->nr - 1] : NULL;

	(void)exists; /* a removed object reads zeros: compared like the rest */
	if (e && e->off + e->len == off) {
		e->len += len;
		return 0;
	}
	if (f->nr == f->cap) {
		unsigned cap = f->cap ? 2 * f->cap : 256;
		struct extent *grown = realloc(f->ext, cap * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		f->ext = grown;
		f->cap = cap;
	}
	f->ext[f->nr++] = (struct extent){off, len};
	return 0;
}

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

/* The extents below off, clipped there, then [off, end) as one. */
static int add_mask(struct fill *f, uint64_t off, uint64_t end)
{
	while (f->nr && f->ext[f->nr - 1].off >= off)
		f->nr--;
	if (f->nr && f->ext[f->nr - 1].off + f->ext[f->nr - 1].len > off)
		f->ext[f->nr - 1].len = off - f->ext[f->nr - 1].off;
	return add_extent(off, (size_t)(end - off), 1, f);
}

int rbd_fill_layer(struct chain *c, rbd_image_t img, const char *what,
		   const struct rbd_fill_src *src, struct rbd_progress *pr, uint64_t *written)
{
	struct fill f = {.c = c, .grain = chain_unit(c), .pr = pr};
	uint64_t size = chain_capacity(c);
	struct rbd_xfer *x = NULL;
	int err = rbd_diff_iterate2(img, src->from_snap, 0, size, 0, 1, add_extent, &f);

	if (err < 0)
		vd_err("%s: cannot list what it holds: %s", what, strerror(-err));
	if (!err && src->mask_off < VD_MIN(src->mask_end, size))
		err = add_mask(&f, src->mask_off, VD_MIN(src->mask_end, size));
	f.mine = err < 0 ? NULL : malloc(f.grain);
	if (!err && !f.mine)
		err = -ENOMEM;
	for (unsigned i = 0; !err && i < f.nr; i++)
		pr->total += f.ext[i].len;
	if (!err)
		err = rbd_xfer_create(img, what, &x);
	for (unsigned i = 0; !err && i < f.nr; i++)
		err = rbd_xfer_read_range(x, f.ext[i].off, f.ext[i].len, consume, &f);
	rbd_xfer_destroy(x);
	free(f.mine);
	free(f.ext);
	*written = f.written;
	return err;
}
