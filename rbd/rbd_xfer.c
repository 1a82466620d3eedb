/* rbd — asynchronous data transfer with one image (layer 4, over librbd).
 *
 * Owns: a window of RBD_XFER_DEPTH requests in flight (rbd_aio_write2,
 * rbd_aio_write_zeroes, rbd_aio_read2), each with its own buffer of
 * RBD_XFER_CHUNK bytes (allocated when its slot is first used: a small
 * image costs one), completed oldest first; the first error is kept
 * and reported once naming the image and the offset.  Reads of a range
 * hand each chunk to a consumer in order, while later chunks are already
 * on their way.  Single-threaded: one caller drives a window (librbd
 * completes the requests in its own threads; nothing here runs there).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "rbd_int.h"

enum xfer_op { XFER_WRITE, XFER_READ, XFER_ZEROES };
static const char *const op_names[] = {"write", "read", "write_zeroes"};

struct xfer_slot {
	rbd_completion_t comp;
	void *buf;
	uint64_t off;
	size_t len;
	enum xfer_op op;
};

struct rbd_xfer {
	rbd_image_t img;
	const char *name;
	struct xfer_slot slots[RBD_XFER_DEPTH];
	unsigned head, nr_busy; /* the oldest request in flight; how many */
	int err;
};

int rbd_xfer_create(rbd_image_t img, const char *name, struct rbd_xfer **out)
{
	struct rbd_xfer *x = calloc(1, sizeof *x);

	if (!x)
		return -ENOMEM;
	x->img = img;
	x->name = name;
	*out = x;
	return 0;
}

/* Wait for the oldest request; *slot is it (its buffer stays valid until
 * the next submission). */
static int wait_oldest(struct rbd_xfer *x, struct xfer_slot **slot)
{
	struct xfer_slot *s = &x->slots[x->head];
	ssize_t r;

	rbd_aio_wait_for_complete(s->comp);
	r = rbd_aio_get_return_value(s->comp);
	rbd_aio_release(s->comp);
	s->comp = NULL;
	x->head = (x->head + 1) % RBD_XFER_DEPTH;
	x->nr_busy--;
	if (r < 0 && !x->err) {
		vd_err("%s: %s of %zu bytes at %llu: %s", x->name, op_names[s->op], s->len,
		       (unsigned long long)s->off, strerror((int)-r));
		x->err = (int)r;
	}
	if (slot)
		*slot = s;
	return r < 0 ? (int)r : 0;
}

void *rbd_xfer_next(struct rbd_xfer *x)
{
	struct xfer_slot *s;

	if (x->nr_busy == RBD_XFER_DEPTH)
		wait_oldest(x, NULL);
	s = &x->slots[(x->head + x->nr_busy) % RBD_XFER_DEPTH];
	if (!s->buf)
		s->buf = malloc(RBD_XFER_CHUNK);
	return s->buf;
}

/* Submit on the next slot (rbd_xfer_next made room). */
static int submit(struct rbd_xfer *x, enum xfer_op op, size_t len, uint64_t off)
{
	struct xfer_slot *s = &x->slots[(x->head + x->nr_busy) % RBD_XFER_DEPTH];
	int err;

	if (x->err)
		return x->err;
	if (!rbd_xfer_next(x))
		return x->err = -ENOMEM;
	err = rbd_aio_create_completion(NULL, NULL, &s->comp);
	if (err < 0)
		return x->err = err;
	s->off = off;
	s->len = len;
	s->op = op;
	if (op == XFER_WRITE)
		err = rbd_aio_write2(x->img, off, len, s->buf, s->comp, 0);
	else if (op == XFER_READ)
		err = rbd_aio_read2(x->img, off, len, s->buf, s->comp, 0);
	else
		err = rbd_aio_write_zeroes(x->img, off, len, s->comp, 0, 0);
	if (err < 0) {
		rbd_aio_release(s->comp);
		s->comp = NULL;
		vd_err("%s: cannot start a %s at %llu: %s", x->name, op_names[op],
		       (unsigned long long)off, strerror(-err));
		return x->err = err;
	}
	x->nr_busy++;
	return 0;
}

int rbd_xfer_write(struct rbd_xfer *x, size_t len, uint64_t off)
{
	return submit(x, XFER_WRITE, len, off);
}

int rbd_xfer_zeroes(struct rbd_xfer *x, size_t len, uint64_t off)
{
	return submit(x, XFER_ZEROES, len, off);
}

int rbd_xfer_drain(struct rbd_xfer *x)
{
	while (x->nr_busy)
		wait_oldest(x, NULL);
	return x->err;
}

int rbd_xfer_read_range(struct rbd_xfer *x, uint64_t off, uint64_t len,
			rbd_xfer_consume_fn *fn, void *opaque)
{
	uint64_t sent = off, end = off + len;
	struct xfer_slot *s;
	int err = 0;

	while (!err && (sent < end || x->nr_busy)) {
		if (sent < end && x->nr_busy < RBD_XFER_DEPTH) {
			size_t n = (size_t)VD_MIN(end - sent, (uint64_t)RBD_XFER_CHUNK);
			err = submit(x, XFER_READ, n, sent);
			sent += n;
			continue;
		}
		err = wait_oldest(x, &s);
		if (!err)
			err = fn(opaque, s->buf, s->len, s->off);
	}
	if (err)
		rbd_xfer_drain(x);
	return err;
}

void rbd_xfer_destroy(struct rbd_xfer *x)
{
	if (!x)
		return;
	rbd_xfer_drain(x);
	for (unsigned i = 0; i < RBD_XFER_DEPTH; i++)
		free(x->slots[i].buf);
	free(x);
}
