/* rbd — the content digest of an image read back (layer 4).
 *
 * Owns: XXH3-128 over every byte of an image (at its head or an open
 * snapshot), read through librbd in order with RBD_XFER_DEPTH reads in
 * flight, so parents and zero fill come from librbd itself.  The value is
 * the one chain_digest gives for a disk of the same content (`vdelta
 * digest`, `xxhsum -H2` of a raw export).
 */
#include <errno.h>
#include <xxhash.h>
#ifdef __x86_64__
#include <xxh_x86dispatch.h> /* XXH3 on AVX2 or AVX-512 where the CPU has them */
#endif

#include "rbd_int.h"

struct digest_ctx {
	XXH3_state_t *st;
	struct rbd_progress *pr;
};

static int consume(void *opaque, const void *buf, size_t len, uint64_t off)
{
	struct digest_ctx *d = opaque;

	if (XXH3_128bits_update(d->st, buf, len) != XXH_OK)
		return -EIO;
	rbd_progress_add(d->pr, len);
	return 0;
}

int rbd_digest_image(rbd_image_t img, const char *what, struct rbd_progress *pr,
		     uint8_t out[16])
{
	struct digest_ctx d = {.st = XXH3_createState(), .pr = pr};
	struct rbd_xfer *x = NULL;
	uint64_t size;
	int err = rbd_get_size(img, &size);

	if (err < 0)
		vd_err("%s: cannot read the size: %s", what, strerror(-err));
	if (!d.st || XXH3_128bits_reset(d.st) != XXH_OK)
		err = -ENOMEM;
	if (!err)
		err = rbd_xfer_create(img, what, &x);
	if (!err)
		err = rbd_xfer_read_range(x, 0, size, consume, &d);
	if (!err) {
		XXH128_canonical_t canon;
		XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(d.st));
		memcpy(out, canon.digest, 16);
	}
	rbd_xfer_destroy(x);
	XXH3_freeState(d.st);
	return err;
}
