/* rbd — sending one layer's own grains into an image (layer 4).
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
 * image already reads zeros.  A chunk of data that holds only zeros is
 * sent the same way as a zero run.  Nothing of the layer is written.
 *
 * The same walk gives the layer's digest (RBD_META_DIGEST): XXH3-128 over
 * each run the layer holds itself, in order, as its offset and length
 * (le64 each), its kind (1 data, 2 zeros) and, for data, its bytes.  It
 * names what the layer holds, whatever its parents hold.
 *
 * Also the object size of a base (rbd_send_object_size): the largest from
 * 4 MiB (rbd's own) down to 64 KiB at which the objects its data touches
 * hold at most 1/16 more than the data.  A dense base keeps 4 MiB; a
 * sparse one does not store (and `rbd du` does not count) whole 4 MiB
 * objects around a few grains.
 */
#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>
#ifdef __x86_64__
#include <xxh_x86dispatch.h> /* XXH3 on AVX2 or AVX-512 where the CPU has them */
#endif

#include "rbd_int.h"

struct send {
	struct vmdk_disk *layer;
	struct rbd_xfer *x; /* NULL: nothing sent */
	XXH3_state_t *h;    /* NULL: no digest */
	uint8_t *buf;       /* a chunk, when the data is read without sending */
	bool mask_zeros;
	struct rbd_progress *pr;
	uint64_t data, zeros;
};

static uint64_t chunk_end(uint64_t off, uint64_t end)
{
	return VD_MIN(end, (off / RBD_XFER_CHUNK + 1) * RBD_XFER_CHUNK);
}

static void hash_run(struct send *s, uint64_t off, uint64_t len, uint8_t kind)
{
	uint8_t rec[17];

	if (!s->h)
		return;
	put_le64(rec, off);
	put_le64(rec + 8, len);
	rec[16] = kind;
	XXH3_128bits_update(s->h, rec, sizeof rec);
}

static int send_zeros(struct send *s, uint64_t off, uint64_t len)
{
	if (!s->mask_zeros)
		return 0;
	s->zeros += len;
	return s->x ? rbd_xfer_zeroes(s->x, (size_t)len, off) : 0;
}

/* One chunk read (into the next request's buffer when sending), hashed,
 * sent: as zeros when it holds only zeros. */
static int send_chunk(struct send *s, uint64_t off, uint64_t n)
{
	void *buf = s->x ? rbd_xfer_next(s->x) : s->buf;
	int err = buf ? vmdk_pread(s->layer, buf, (size_t)n, off) : -ENOMEM;

	if (err)
		return err;
	if (s->h)
		XXH3_128bits_update(s->h, buf, (size_t)n);
	if (!s->x)
		return 0;
	if (vd_is_zero(buf, (size_t)n))
		return send_zeros(s, off, n);
	s->data += n;
	return rbd_xfer_write(s->x, (size_t)n, off);
}

/* A run of data; counting alone (nothing read) counts it all as data. */
static int send_data(struct send *s, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	int err = 0;

	hash_run(s, off, len, 1);
	if (!s->x && !s->h) {
		s->data += len;
		return 0;
	}
	for (; !err && off < end; off = chunk_end(off, end)) {
		err = send_chunk(s, off, chunk_end(off, end) - off);
		if (!err && s->x)
			rbd_progress_add(s->pr, chunk_end(off, end) - off);
	}
	return err;
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
		else if (!err && kind == VMDK_BS_ZERO) {
			hash_run(s, off, run, 2);
			err = send_zeros(s, off, run);
		}
	}
	return err;
}

static void digest_out(struct send *s, uint8_t out[16])
{
	XXH128_canonical_t canon;

	XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(s->h));
	memcpy(out, canon.digest, 16);
}

int rbd_send_layer(struct vmdk_disk *layer, rbd_image_t img, const char *what,
		   bool mask_zeros, struct rbd_progress *pr, struct rbd_send_out *out)
{
	struct send s = {.layer = layer, .mask_zeros = mask_zeros, .pr = pr,
			 .h = XXH3_createState()};
	int err = s.h && XXH3_128bits_reset(s.h) == XXH_OK ? 0 : -ENOMEM, derr;

	if (!err)
		err = rbd_xfer_create(img, what, &s.x);
	if (!err)
		err = walk(&s);
	derr = s.x ? rbd_xfer_drain(s.x) : 0;
	rbd_xfer_destroy(s.x);
	if (!err)
		err = derr;
	if (!err) {
		err = rbd_flush(img);
		if (err < 0)
			vd_err("%s: flush: %s", what, strerror(-err));
	}
	if (!err)
		digest_out(&s, out->digest);
	XXH3_freeState(s.h);
	out->sent = s.data;
	out->zeroed = s.zeros;
	return err;
}

int rbd_send_digest(struct vmdk_disk *layer, uint8_t out[16])
{
	struct send s = {.layer = layer, .h = XXH3_createState(),
			 .buf = malloc(RBD_XFER_CHUNK)};
	int err = s.h && s.buf && XXH3_128bits_reset(s.h) == XXH_OK ? 0 : -ENOMEM;

	if (!err)
		err = walk(&s);
	if (!err)
		digest_out(&s, out);
	else
		vd_err("%s: cannot read it for its digest: %s", vmdk_path(layer),
		       strerror(-err));
	XXH3_freeState(s.h);
	free(s.buf);
	return err;
}

#define OBJ_MIN_ORDER 16u /* 64 KiB: a grain */
#define OBJ_MAX_ORDER 22u /* 4 MiB */
#define OBJ_ORDERS (OBJ_MAX_ORDER - OBJ_MIN_ORDER + 1)

/* Objects at each candidate size that [off, off+len) touches beyond the
 * ones an earlier run touched (last[]: the last object counted). */
static void touch(uint64_t off, uint64_t len, uint64_t *touched, uint64_t *last)
{
	for (unsigned k = 0; k < OBJ_ORDERS; k++) {
		uint64_t first = off >> (OBJ_MIN_ORDER + k);
		uint64_t end = (off + len - 1) >> (OBJ_MIN_ORDER + k);
		touched[k] += end - first + 1 - (first == last[k]);
		last[k] = end;
	}
}

int rbd_send_object_size(struct vmdk_disk *layer, uint64_t *object_size)
{
	uint64_t cap = vmdk_capacity(layer), off, run, data = 0;
	uint64_t touched[OBJ_ORDERS] = {0}, last[OBJ_ORDERS];
	enum vmdk_bs kind;
	int err = 0;

	memset(last, 0xff, sizeof last);
	for (off = 0; !err && off < cap; off += run) {
		err = vmdk_block_status(layer, off, cap - off, &kind, &run);
		if (!err && kind == VMDK_BS_DATA) {
			touch(off, run, touched, last);
			data += run;
		}
	}
	*object_size = 1ull << OBJ_MIN_ORDER;
	for (unsigned k = OBJ_ORDERS; !err && k-- > 0;)
		if ((touched[k] << (OBJ_MIN_ORDER + k)) <= data + data / 16) {
			*object_size = 1ull << (OBJ_MIN_ORDER + k);
			break;
		}
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
