/* group — the read-back check of the bulk operations (layer 3).
 *
 * Owns: the two running digests (XXH3-128) of a data move: of the bytes
 * the copy read from its source, and of the bytes the result reads back
 * over the same ranges in the same order.  A commit (C3) and a flattening
 * rewrite (K3) compare the two instead of reading the source a second
 * time: the source is read once, the result once.  The ranges are walked
 * by the source's map, which does not change while the operation holds
 * its locks, so both digests cover the same bytes; a digest does not
 * depend on how the bytes were cut into calls.  On a difference the caller
 * compares the bytes themselves to name the offset.  The result is read
 * back while its flush runs on a second thread (group_sum_check_flushing):
 * the check reads what the page cache holds whether or not it reached the
 * disk yet, and the step after the check waits for both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <xxhash.h>
#ifdef __x86_64__
#include <xxh_x86dispatch.h> /* XXH3 on AVX2 or AVX-512 where the CPU has them */
#endif

#include "group_int.h"

int group_sum_open(struct group_sum *s)
{
	s->copied = XXH3_createState();
	s->back = XXH3_createState();
	if (!s->copied || !s->back) {
		group_sum_close(s);
		return -ENOMEM;
	}
	XXH3_128bits_reset(s->copied);
	XXH3_128bits_reset(s->back);
	return 0;
}

void group_sum_close(struct group_sum *s)
{
	XXH3_freeState(s->copied);
	XXH3_freeState(s->back);
	s->copied = s->back = NULL;
}

void group_sum_copied(struct group_sum *s, const void *buf, size_t n)
{
	XXH3_128bits_update(s->copied, buf, n);
}

void group_sum_back(struct group_sum *s, const void *buf, size_t n)
{
	XXH3_128bits_update(s->back, buf, n);
}

bool group_sum_same(const struct group_sum *s)
{
	return XXH128_isEqual(XXH3_128bits_digest(s->copied), XXH3_128bits_digest(s->back));
}

struct flushing {
	struct vmdk_disk *d;
	int err;
};

static void *flush_thread(void *opaque)
{
	struct flushing *f = opaque;

	f->err = vmdk_flush(f->d);
	return NULL;
}

int group_sum_check_flushing(struct vmdk_disk *d, int (*check)(void *), void *arg)
{
	struct flushing f = { .d = d };
	pthread_t t;
	bool apart = pthread_create(&t, NULL, flush_thread, &f) == 0;
	int err;

	if (!apart) /* no thread: one after the other */
		f.err = vmdk_flush(d);
	err = apart || !f.err ? check(arg) : 0;
	if (apart)
		pthread_join(t, NULL);
	return f.err ? f.err : err;
}
