/* rbd — an image read back and compared with the disk it holds (layer 4).
 *
 * Owns the check export and import make before they report success, when
 * not asked for the whole one (RBD_VERIFY_FULL, rbd_digest.c: every byte
 * of the image read back, its XXH3-128 against chain_digest of the disk):
 * the ranges the image holds itself (its own objects, which the caller
 * lists) and the ranges the disk's top layer holds itself (data and
 * zeroed grains) are read back through librbd and compared byte for byte
 * with the disk (chain_pread: the layer over its parents).  Anywhere else
 * the image reads its parent's snapshot (a base: zeros) and the disk reads
 * its parent layer (a base: zeros), and that parent was checked the same
 * way before it (parents first), so the two agree everywhere.  What is
 * read back is the layer's own bytes, not the disk's: sixteen clones of a
 * 40 GiB base are not read back as 640 GiB.
 */
#include <errno.h>
#include <stdlib.h>

#include "rbd_int.h"

struct cmp {
	struct chain *disk;
	const char *what;
	uint8_t *mine; /* RBD_XFER_CHUNK bytes of the disk */
	struct rbd_progress *pr;
	uint64_t bytes;
};

static int compare(void *opaque, const void *buf, size_t len, uint64_t off)
{
	struct cmp *c = opaque;
	int err = chain_pread(c->disk, c->mine, len, off);
	size_t i = 0;

	if (err) {
		vd_err("%s: cannot read %zu bytes at %llu of the disk: %s", c->what, len,
		       (unsigned long long)off, strerror(-err));
		return err;
	}
	if (memcmp(c->mine, buf, len)) {
		while (c->mine[i] == ((const uint8_t *)buf)[i])
			i++;
		vd_err("%s: read back, byte %llu differs from the disk's", c->what,
		       (unsigned long long)(off + i));
		return -EIO;
	}
	c->bytes += len;
	rbd_progress_add(c->pr, len);
	return 0;
}

int rbd_verify_layer(struct chain *disk, rbd_image_t img, const char *what,
		     const struct rbd_extents *own, struct rbd_progress *pr,
		     uint64_t *bytes)
{
	struct cmp c = {.disk = disk, .what = what, .pr = pr, .mine = malloc(RBD_XFER_CHUNK)};
	struct rbd_extents held = {0}, all = {0};
	struct rbd_xfer *x = NULL;
	int err = c.mine ? rbd_extent_of_layer(chain_layer(disk, 0), &held) : -ENOMEM;

	if (!err)
		err = rbd_extent_union(own, &held, &all);
	if (!err)
		err = rbd_xfer_create(img, what, &x);
	for (unsigned i = 0; !err && i < all.nr; i++)
		err = rbd_xfer_read_range(x, all.v[i].off, all.v[i].len, compare, &c);
	rbd_xfer_destroy(x);
	rbd_extent_free(&held);
	rbd_extent_free(&all);
	free(c.mine);
	*bytes = c.bytes;
	return err;
}
