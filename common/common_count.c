/* common — the counting io (layer 0): a struct vd_io that forwards to
 * another io and counts reads (metadata and data apart), writes and syncs
 * per file path.  `vdelta bench` measures read amplification with it.
 * See common.h for the contract.
 *
 * Records live in a singly linked list, newest first; a record is never
 * freed before vd_countio_destroy, so a file keeps a plain pointer to it
 * and I/O never takes the list mutex.  Counters are relaxed atomics: they
 * are read only once the I/O being measured is over.
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct count_rec {
	struct count_rec *next;
	unsigned index; /* order of first open */
	struct vd_count_stats st;
};

struct vd_countio {
	struct vd_io io; /* first: the io handed out points here */
	const struct vd_io *inner;
	pthread_mutex_t lock; /* the list */
	struct count_rec *recs;
	unsigned nr_recs;
};

struct count_file {
	struct vd_file base; /* first */
	struct vd_file *inner;
	struct count_rec *rec;
};

static void count_add(uint64_t *ctr, uint64_t n)
{
	__atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

static struct vd_file *count_inner(struct vd_file *f)
{
	return ((struct count_file *)f)->inner;
}

static struct vd_count_stats *count_st(struct vd_file *f)
{
	return &((struct count_file *)f)->rec->st;
}

static int count_pread(struct vd_file *f, void *buf, size_t len, uint64_t off)
{
	count_add(&count_st(f)->data_reads, 1);
	count_add(&count_st(f)->data_bytes, len);
	return vd_pread(count_inner(f), buf, len, off);
}

static int count_pread_meta(struct vd_file *f, void *buf, size_t len, uint64_t off)
{
	count_add(&count_st(f)->meta_reads, 1);
	count_add(&count_st(f)->meta_bytes, len);
	return vd_pread_meta(count_inner(f), buf, len, off);
}

static int count_pwrite(struct vd_file *f, const void *buf, size_t len, uint64_t off)
{
	count_add(&count_st(f)->writes, 1);
	count_add(&count_st(f)->write_bytes, len);
	return vd_pwrite(count_inner(f), buf, len, off);
}

static int count_sync(struct vd_file *f)
{
	count_add(&count_st(f)->syncs, 1);
	return vd_sync(count_inner(f));
}

static int count_size(struct vd_file *f, uint64_t *size)
{
	return vd_fsize(count_inner(f), size);
}

static int count_truncate(struct vd_file *f, uint64_t size)
{
	struct vd_file *in = count_inner(f);

	return in->ops->truncate(in, size);
}

static int count_lock(struct vd_file *f, const struct vd_lock_req *r, bool unlock)
{
	struct vd_file *in = count_inner(f);

	return in->ops->lock(in, r, unlock);
}

static int count_lock_test(struct vd_file *f, const struct vd_lock_req *r, bool *held)
{
	struct vd_file *in = count_inner(f);

	return in->ops->lock_test(in, r, held);
}

static void count_writeback(struct vd_file *f)
{
	vd_writeback(count_inner(f));
}

static void count_close(struct vd_file *f)
{
	vd_close(count_inner(f));
	free(f->path);
	free(f);
}

static const struct vd_file_ops count_file_ops = {
	.pread = count_pread,
	.pread_meta = count_pread_meta,
	.pwrite = count_pwrite,
	.sync = count_sync,
	.writeback = count_writeback,
	.size = count_size,
	.truncate = count_truncate,
	.lock = count_lock,
	.lock_test = count_lock_test,
	.close = count_close,
};

/* The record of path, created on first use; NULL on ENOMEM. */
static struct count_rec *count_rec_get(struct vd_countio *ci, const char *path)
{
	struct count_rec *r;

	pthread_mutex_lock(&ci->lock);
	for (r = ci->recs; r; r = r->next)
		if (!strcmp(r->st.path, path))
			break;
	if (!r && (r = calloc(1, sizeof *r))) {
		r->st.path = strdup(path);
		if (!r->st.path) {
			free(r);
			r = NULL;
		} else {
			r->index = ci->nr_recs++;
			r->next = ci->recs;
			ci->recs = r;
		}
	}
	pthread_mutex_unlock(&ci->lock);
	return r;
}

static int count_open(const struct vd_io *io, const char *path, unsigned flags,
		      struct vd_file **out)
{
	struct vd_countio *ci = (struct vd_countio *)io;
	struct count_file *f = calloc(1, sizeof *f);
	int err;

	if (!f)
		return -ENOMEM;
	f->rec = count_rec_get(ci, path);
	f->base.path = strdup(path);
	if (!f->rec || !f->base.path) {
		err = -ENOMEM;
		goto fail;
	}
	err = ci->inner->open(ci->inner, path, flags, &f->inner);
	if (err)
		goto fail;
	f->base.ops = &count_file_ops;
	f->base.fd = f->inner->fd;
	*out = &f->base;
	return 0;
fail:
	free(f->base.path);
	free(f);
	return err;
}

static int count_sync_dir(const struct vd_io *io, const char *path)
{
	const struct vd_io *in = ((const struct vd_countio *)io)->inner;

	return in->sync_dir(in, path);
}

static int count_rename(const struct vd_io *io, const char *from, const char *to)
{
	const struct vd_io *in = ((const struct vd_countio *)io)->inner;

	return in->rename(in, from, to);
}

static int count_unlink(const struct vd_io *io, const char *path)
{
	const struct vd_io *in = ((const struct vd_countio *)io)->inner;

	return in->unlink(in, path);
}

int vd_countio_create(const struct vd_io *inner, struct vd_countio **out)
{
	struct vd_countio *ci = calloc(1, sizeof *ci);

	if (!ci)
		return -ENOMEM;
	ci->io = (struct vd_io){ .open = count_open, .sync_dir = count_sync_dir,
				 .rename = count_rename, .unlink = count_unlink };
	ci->inner = inner ? inner : vd_io_posix();
	pthread_mutex_init(&ci->lock, NULL);
	*out = ci;
	return 0;
}

const struct vd_io *vd_countio_io(struct vd_countio *ci)
{
	return &ci->io;
}

unsigned vd_countio_nr_files(const struct vd_countio *ci)
{
	return ci->nr_recs;
}

static void count_copy(const struct count_rec *r, struct vd_count_stats *out)
{
	const struct vd_count_stats *s = &r->st;

	out->path = s->path;
	out->meta_reads = __atomic_load_n(&s->meta_reads, __ATOMIC_RELAXED);
	out->meta_bytes = __atomic_load_n(&s->meta_bytes, __ATOMIC_RELAXED);
	out->data_reads = __atomic_load_n(&s->data_reads, __ATOMIC_RELAXED);
	out->data_bytes = __atomic_load_n(&s->data_bytes, __ATOMIC_RELAXED);
	out->writes = __atomic_load_n(&s->writes, __ATOMIC_RELAXED);
	out->write_bytes = __atomic_load_n(&s->write_bytes, __ATOMIC_RELAXED);
	out->syncs = __atomic_load_n(&s->syncs, __ATOMIC_RELAXED);
}

void vd_countio_get(const struct vd_countio *ci, unsigned i, struct vd_count_stats *out)
{
	const struct count_rec *r;

	memset(out, 0, sizeof *out);
	for (r = ci->recs; r; r = r->next)
		if (r->index == i)
			count_copy(r, out);
}

int vd_countio_find(const struct vd_countio *ci, const char *path,
		    struct vd_count_stats *out)
{
	for (const struct count_rec *r = ci->recs; r; r = r->next) {
		if (!strcmp(r->st.path, path)) {
			count_copy(r, out);
			return 0;
		}
	}
	memset(out, 0, sizeof *out);
	return -ENOENT;
}

void vd_countio_total(const struct vd_countio *ci, struct vd_count_stats *out)
{
	struct vd_count_stats s;

	memset(out, 0, sizeof *out);
	for (const struct count_rec *r = ci->recs; r; r = r->next) {
		count_copy(r, &s);
		out->meta_reads += s.meta_reads;
		out->meta_bytes += s.meta_bytes;
		out->data_reads += s.data_reads;
		out->data_bytes += s.data_bytes;
		out->writes += s.writes;
		out->write_bytes += s.write_bytes;
		out->syncs += s.syncs;
	}
}

void vd_countio_reset(struct vd_countio *ci)
{
	for (struct count_rec *r = ci->recs; r; r = r->next) {
		const char *path = r->st.path;
		r->st = (struct vd_count_stats){ .path = path };
	}
}

void vd_countio_destroy(struct vd_countio *ci)
{
	struct count_rec *r, *next;

	if (!ci)
		return;
	for (r = ci->recs; r; r = next) {
		next = r->next;
		free((char *)r->st.path);
		free(r);
	}
	pthread_mutex_destroy(&ci->lock);
	free(ci);
}
