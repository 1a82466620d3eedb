/* rbd — lists of byte ranges (layer 4).
 *
 * Owns the ranges import and verification walk: what an image holds of its
 * own (rbd_diff_iterate2's extents, whole objects) and what a layer holds
 * (vmdk_block_status runs), each list sorted and merged as it is built, so
 * it is bounded by the fragmentation, not the size; and the union of two
 * lists.
 */
#include <errno.h>
#include <stdlib.h>

#include "rbd_int.h"

/* [off, off+len), at or after the list's last range (as both sources
 * give them): merged with the last one when they touch. */
int rbd_extent_add(struct rbd_extents *x, uint64_t off, uint64_t len)
{
	struct rbd_extent *last = x->nr ? &x->v[x->nr - 1] : NULL;

	if (!len)
		return 0;
	if (last && off <= last->off + last->len) {
		last->len = VD_MAX(last->len, off + len - last->off);
		return 0;
	}
	if (x->nr == x->cap) {
		unsigned cap = x->cap ? 2 * x->cap : 256;
		struct rbd_extent *grown = realloc(x->v, cap * sizeof *grown);
		if (!grown)
			return -ENOMEM;
		x->v = grown;
		x->cap = cap;
	}
	x->v[x->nr++] = (struct rbd_extent){off, len};
	return 0;
}

/* rbd_diff_iterate2's callback (opaque: a struct rbd_extents).  An object
 * that no longer exists reads zeros: listed like the rest. */
int rbd_extent_diff_cb(uint64_t off, size_t len, int exists, void *opaque)
{
	(void)exists;
	return rbd_extent_add(opaque, off, len);
}

/* The image's own objects in [0, size) (since from_snap, when given). */
int rbd_extent_of_image(rbd_image_t img, const char *what, const char *from_snap,
			uint64_t size, struct rbd_extents *out)
{
	int err = rbd_diff_iterate2(img, from_snap, 0, size, 0, 1, rbd_extent_diff_cb, out);

	if (err < 0)
		vd_err("%s: cannot list what it holds: %s", what, strerror(-err));
	return err < 0 ? err : 0;
}

/* The runs layer holds itself: data and zeroed grains. */
int rbd_extent_of_layer(struct vmdk_disk *layer, struct rbd_extents *out)
{
	uint64_t cap = vmdk_capacity(layer), off, run;
	enum vmdk_bs kind;
	int err = 0;

	for (off = 0; !err && off < cap; off += run) {
		err = vmdk_block_status(layer, off, cap - off, &kind, &run);
		if (!err && (kind == VMDK_BS_DATA || kind == VMDK_BS_ZERO))
			err = rbd_extent_add(out, off, run);
	}
	if (err)
		vd_err("%s: cannot read its allocation: %s", vmdk_path(layer), strerror(-err));
	return err;
}

/* The union of a and b, into out (empty). */
int rbd_extent_union(const struct rbd_extents *a, const struct rbd_extents *b,
		     struct rbd_extents *out)
{
	unsigned i = 0, k = 0;
	int err = 0;

	while (!err && (i < a->nr || k < b->nr)) {
		const struct rbd_extent *e = k >= b->nr || (i < a->nr && a->v[i].off <= b->v[k].off)
						     ? &a->v[i++] : &b->v[k++];
		err = rbd_extent_add(out, e->off, e->len);
	}
	return err;
}

void rbd_extent_free(struct rbd_extents *x)
{
	free(x->v);
	*x = (struct rbd_extents){0};
}
