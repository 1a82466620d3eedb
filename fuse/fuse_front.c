/* fuse_front — FUSE requests to serving-core calls (layer 4).
 *
 * Owns: the low-level operations table, inode numbers (1 the folder, 2 the
 * control file, 3+i served disk i), attributes, open flags and the page
 * cache policy per open, and the session's life.  Requests run on
 * libfuse's worker threads with no lock here: the serving core is safe for
 * concurrent calls.  Data requests are at most FUSE_FRONT_MAX_IO bytes.
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse_front.h"

#define INO_ROOT 1
#define INO_STATUS 2
#define INO_DISK0 3
#define ATTR_TIMEOUT 3600.0 /* nothing here changes size or mode while mounted */
#define READ_SEGS 32 /* segments of one read reply (files and copies) */

struct front {
	struct chain_server *srv;
	const char *mountpoint;
	enum fuse_front_cache cache;
	struct timespec started; /* the folder's and control file's times */
};

static struct front *front_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct chain_served *disk_of(struct front *f, fuse_ino_t ino)
{
	if (ino < INO_DISK0)
		return NULL;
	return chain_server_disk(f->srv, (unsigned)(ino - INO_DISK0));
}

/* ---- attributes --------------------------------------------------------------- */

/* A disk file looks like its top: owner, mode, times; size = capacity. */
static void disk_attr(struct chain_served *d, fuse_ino_t ino, struct stat *st)
{
	struct stat top;

	memset(st, 0, sizeof *st);
	if (stat(chain_served_path(d), &top) == 0) {
		st->st_mode = top.st_mode & 07777;
		st->st_uid = top.st_uid;
		st->st_gid = top.st_gid;
		st->st_atim = top.st_atim;
		st->st_mtim = top.st_mtim;
		st->st_ctim = top.st_ctim;
	} else {
		st->st_mode = 0600;
	}
	if (!chain_served_writable(d))
		st->st_mode &= ~0222u;
	st->st_mode |= S_IFREG;
	st->st_nlink = 1;
	st->st_size = (off_t)chain_served_size(d);
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)(chain_served_size(d) / 512);
	st->st_ino = ino;
}

static int attr_of(struct front *f, fuse_ino_t ino, struct stat *st)
{
	struct chain_served *d = disk_of(f, ino);

	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_atim = st->st_mtim = st->st_ctim = f->started;
	if (ino == INO_ROOT) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (ino == INO_STATUS) {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
	} else if (d) {
		disk_attr(d, ino, st);
	} else {
		return -ENOENT;
	}
	return 0;
}

static void front_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct front *f = front_of(req);
	struct fuse_entry_param e = { .attr_timeout = ATTR_TIMEOUT,
				      .entry_timeout = ATTR_TIMEOUT };
	unsigned n = chain_server_nr_disks(f->srv);

	if (parent != INO_ROOT) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!strcmp(name, FUSE_FRONT_STATUS))
		e.ino = INO_STATUS;
	for (unsigned i = 0; i < n && !e.ino; i++)
		if (!strcmp(name, chain_served_name(chain_server_disk(f->srv, i))))
			e.ino = INO_DISK0 + i;
	if (!e.ino || attr_of(f, e.ino, &e.attr)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (e.ino == INO_STATUS)
		e.attr_timeout = e.entry_timeout = 0;
	fuse_reply_entry(req, &e);
}

static void front_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int err = attr_of(front_of(req), ino, &st);

	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_attr(req, &st, ino == INO_STATUS ? 0 : ATTR_TIMEOUT);
}

/* A block device does not change size; owner, mode and times are the
 * top's.  Times are accepted and ignored (touch, cp -p); the rest refused. */
static void front_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			  struct fuse_file_info *fi)
{
	struct front *f = front_of(req);
	struct chain_served *d = disk_of(f, ino);
	const int times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
			  FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME;

	if (d && (to_set & FUSE_SET_ATTR_SIZE) &&
	    (uint64_t)attr->st_size == chain_served_size(d))
		to_set &= ~FUSE_SET_ATTR_SIZE;
	if (!d || (to_set & ~times)) {
		fuse_reply_err(req, d ? EPERM : EACCES);
		return;
	}
	front_getattr(req, ino, fi);
}

/* ---- folder ------------------------------------------------------------------ */

static void add_entry(fuse_req_t req, char *buf, size_t size, size_t *pos,
		      const char *name, fuse_ino_t ino, off_t next)
{
	struct stat st = { .st_ino = ino, .st_mode = ino == INO_ROOT ? S_IFDIR : S_IFREG };
	size_t n = fuse_add_direntry(req, buf + *pos, size - *pos, name, &st, next);

	if (n <= size - *pos)
		*pos += n;
	else
		*pos = size + 1; /* full: stop */
}

/* Entries: ".", "..", then each disk; the control file is not listed. */
static void front_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			  struct fuse_file_info *fi)
{
	struct front *f = front_of(req);
	unsigned n = chain_server_nr_disks(f->srv);
	char *buf = malloc(size ? size : 1);
	size_t pos = 0, last = 0;

	if (ino != INO_ROOT || !buf) {
		free(buf);
		fuse_reply_err(req, ino != INO_ROOT ? ENOTDIR : ENOMEM);
		return;
	}
	for (off_t i = off; i < (off_t)n + 2 && pos <= size; i++) {
		last = pos;
		if (i < 2)
			add_entry(req, buf, size, &pos, i ? ".." : ".", INO_ROOT, i + 1);
		else
			add_entry(req, buf, size, &pos,
				  chain_served_name(chain_server_disk(f->srv, (unsigned)i - 2)),
				  INO_DISK0 + (fuse_ino_t)i - 2, i + 1);
	}
	fuse_reply_buf(req, buf, pos > size ? last : pos);
	free(buf);
}

/* ---- open / close -------------------------------------------------------------- */

/* The control file is rendered at each read, not kept per open: a release
 * may run on another worker while a read of the same open is replying. */
static void open_status(fuse_req_t req, struct fuse_file_info *fi)
{
	fi->direct_io = 1; /* st_size is 0: read what is rendered */
	fuse_reply_open(req, fi);
}

static void front_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct front *f = front_of(req);
	struct chain_served *d = disk_of(f, ino);
	bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;

	if (ino == INO_STATUS) {
		if (wr)
			fuse_reply_err(req, EACCES);
		else
			open_status(req, fi);
		return;
	}
	if (!d || (wr && !chain_served_writable(d)) || (fi->flags & O_TRUNC)) {
		fuse_reply_err(req, !d ? EISDIR : (fi->flags & O_TRUNC) ? EPERM : EROFS);
		return;
	}
	fi->direct_io = f->cache == FUSE_FRONT_CACHE_NONE;
	fi->keep_cache = f->cache == FUSE_FRONT_CACHE_KERNEL;
	fi->fh = ino;
	fuse_reply_open(req, fi);
}

static void front_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

/* ---- data ---------------------------------------------------------------------- */

/* Per-thread copy buffer for the parts of a read not mapped to a file. */
static pthread_key_t copy_key;

static uint8_t *copy_buf(void)
{
	uint8_t *b = pthread_getspecific(copy_key);

	if (!b && (b = malloc(FUSE_FRONT_MAX_IO)) && pthread_setspecific(copy_key, b)) {
		free(b);
		b = NULL;
	}
	return b;
}

/* ---- the reply path of a read (docs/benchmarks.md, "Reply path") ----------------
 *
 * libfuse splices an fd-backed reply only when it spans two pages or more
 * and fits its worker's pipe with a page per buffer to spare; any other
 * fd-backed reply it reads into a buffer it allocates for that one reply
 * (a fresh mapping for 1 MiB: a page fault per page, then an unmap), which
 * costs more than the splice saves.  So a read is spliced only when it
 * surely fits (size between 2 pages and splice_max, probed at start from
 * what a pipe may grow to here); every other read is copied into the
 * thread's buffer and sent as one piece, as the minimal server does
 * (splice_max 0: nothing is spliced).
 *
 * A spliced reply costs the daemon one copy less than a copied one (the
 * kernel moves page references into the pipe), so the kernel is asked for
 * reads no larger than what splices: read_max, the largest power of two
 * from READ_SPLICE_MIN up to FUSE_FRONT_MAX_IO that fits (512 KiB where a
 * pipe stops at 1 MiB), or FUSE_FRONT_MAX_IO when even READ_SPLICE_MIN
 * does not fit (then every large read is copied).  Writes stay at
 * FUSE_FRONT_MAX_IO. */
#define READ_SPLICE_MIN (256u << 10)
static size_t splice_min, splice_max, read_max = FUSE_FRONT_MAX_IO;

static int pipe_max_size(void)
{
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
	int n = 0;

	if (f && fscanf(f, "%d", &n) != 1)
		n = 0;
	if (f)
		fclose(f);
	return n;
}

/* The largest data a reply of READ_SEGS segments can splice through a
 * pipe grown as far as this process may (pipe-max-size, unless allowed
 * more), as libfuse sizes it: a page per buffer and the header beside the
 * data. */
static void splice_probe(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), spare = page * (READ_SEGS + 2) + 64;
	int p[2], cap;

	splice_min = 2 * page;
	if (pipe(p))
		return;
	cap = fcntl(p[0], F_SETPIPE_SZ, (int)(FUSE_FRONT_MAX_IO + spare));
	if (cap < 0) /* as libfuse then does: as far as pipe-max-size */
		cap = fcntl(p[0], F_SETPIPE_SZ, pipe_max_size());
	if (cap < 0)
		cap = fcntl(p[0], F_GETPIPE_SZ);
	close(p[0]);
	close(p[1]);
	if (cap > 0 && (size_t)cap > spare)
		splice_max = VD_MIN((size_t)cap - spare, FUSE_FRONT_MAX_IO);
	for (read_max = FUSE_FRONT_MAX_IO; read_max > splice_max && read_max > READ_SPLICE_MIN;)
		read_max /= 2;
	if (read_max > splice_max)
		read_max = FUSE_FRONT_MAX_IO;
}

static bool splice_fits(size_t size)
{
	return size >= splice_min && size <= splice_max;
}

/* A read as the serving core plans it: file segments go to the kernel
 * straight from the layer's file (spliced), the rest from the copy
 * buffer. */
static void reply_segs(fuse_req_t req, const struct chain_serve_seg *segs, unsigned nr)
{
	struct {
		struct fuse_bufvec v;
		struct fuse_buf more[READ_SEGS - 1];
	} b = { .v = { .count = nr } };
	struct fuse_buf *bufs = b.v.buf; /* buf[1] continues into more[] */

	for (unsigned i = 0; i < nr; i++) {
		struct fuse_buf *fb = bufs + i;
		fb->size = segs[i].len;
		if (segs[i].fd >= 0) {
			fb->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
			fb->fd = segs[i].fd;
			fb->pos = (off_t)segs[i].pos;
		} else {
			fb->mem = segs[i].mem;
		}
	}
	fuse_reply_data(req, &b.v, FUSE_BUF_SPLICE_MOVE);
}

static int read_splice(fuse_req_t req, struct chain_served *d, uint8_t *buf, size_t size,
		       off_t off)
{
	struct chain_serve_seg segs[READ_SEGS];
	unsigned nr;
	size_t done;
	int err = chain_served_read_segs(d, buf, size, (uint64_t)off, segs, READ_SEGS, &nr,
					 &done);

	if (!err && !nr)
		fuse_reply_buf(req, NULL, 0);
	else if (!err)
		reply_segs(req, segs, nr);
	return err;
}

static int read_copy(fuse_req_t req, struct chain_served *d, uint8_t *buf, size_t size,
		     off_t off)
{
	size_t done;
	int err = chain_served_read(d, buf, size, (uint64_t)off, &done);

	if (!err)
		fuse_reply_buf(req, (const char *)buf, done);
	return err;
}

static void read_status(fuse_req_t req, struct front *f, size_t size, off_t off)
{
	char *text = NULL;
	size_t len = 0, at;
	int err = fuse_status_render(f->srv, f->mountpoint, f->cache, read_max, &text, &len);

	at = (uint64_t)off < len ? (size_t)off : len;
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_buf(req, text + at, VD_MIN(size, len - at));
	free(text);
}

static void front_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct chain_served *d = disk_of(front_of(req), ino);
	uint8_t *buf = copy_buf();
	int err;

	if (ino == INO_STATUS) {
		read_status(req, front_of(req), size, off);
		return;
	}
	size = VD_MIN(size, read_max);
	err = !d ? -EISDIR : !buf ? -ENOMEM
	      : splice_fits(size) ? read_splice(req, d, buf, size, off)
				  : read_copy(req, d, buf, size, off);
	if (err)
		fuse_reply_err(req, -err);
}

static void front_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	struct chain_served *d = disk_of(front_of(req), ino);
	int err = d ? chain_served_write(d, buf, size, (uint64_t)off) : -EBADF;

	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_write(req, size);
}

/* fsync and fdatasync alike: acknowledged writes and their tables durable. */
static void front_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct chain_served *d = disk_of(front_of(req), ino);

	fuse_reply_err(req, d ? -chain_served_flush(d) : 0);
}

/* Punching or zeroing a range writes zeros (zeroed grains where whole);
 * plain allocation inside the disk has nothing to do; growing is refused. */
static void front_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			    off_t len, struct fuse_file_info *fi)
{
	struct chain_served *d = disk_of(front_of(req), ino);
	int err = d ? 0 : -EBADF;

	if (!err && (uint64_t)off + (uint64_t)len > chain_served_size(d))
		err = -EFBIG;
	else if (!err && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
		err = chain_served_write_zeroes(d, (size_t)len, (uint64_t)off);
	else if (!err && mode & ~FALLOC_FL_KEEP_SIZE)
		err = -EOPNOTSUPP;
	fuse_reply_err(req, -err);
}

/* ---- session --------------------------------------------------------------------- */

static void front_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->max_write = FUSE_FRONT_MAX_IO;
	conn->max_read = (unsigned)read_max; /* as the max_read mount option says */
	conn->max_readahead = FUSE_FRONT_MAX_IO;
	conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE; /* fsync must see every write */
}

static const struct fuse_lowlevel_ops front_ops = {
	.init = front_init,
	.lookup = front_lookup,
	.getattr = front_getattr,
	.setattr = front_setattr,
	.readdir = front_readdir,
	.open = front_open,
	.release = front_release,
	.read = front_read,
	.write = front_write,
	.fsync = front_fsync,
	.fallocate = front_fallocate,
};

static int session_args(const struct fuse_front_opts *o, struct fuse_args *args)
{
	char *opts = NULL;
	int n = asprintf(&opts, "fsname=vdelta,subtype=vdelta,max_read=%zu%s%s",
			 read_max, o->mount_opts ? "," : "",
			 o->mount_opts ? o->mount_opts : "");

	if (n < 0)
		return -ENOMEM;
	n = fuse_opt_add_arg(args, "vdelta") || fuse_opt_add_arg(args, "-o") ||
	    fuse_opt_add_arg(args, opts);
	free(opts);
	return n ? -ENOMEM : 0;
}

static int serve(struct fuse_session *se, const struct fuse_front_opts *o)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int err;

	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	if (o->max_threads)
		fuse_loop_cfg_set_max_threads(cfg, o->max_threads);
	err = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	return err < 0 ? err : 0;
}

/* A new session mounted at mountpoint. */
static int session_open(const struct fuse_front_opts *o, const char *mountpoint,
			struct front *f, struct fuse_session **out)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	int err = session_args(o, &args);

	if (!err && !(se = fuse_session_new(&args, &front_ops, sizeof front_ops, f))) {
		vd_err("%s: bad FUSE options '%s'", mountpoint, o->mount_opts ? o->mount_opts : "");
		err = -EINVAL;
	}
	fuse_opt_free_args(&args);
	if (!err && fuse_session_mount(se, mountpoint)) {
		vd_err("%s: cannot mount (is it an empty folder? is /dev/fuse there?)",
		       mountpoint);
		fuse_session_destroy(se);
		err = -EIO;
	}
	*out = err ? NULL : se;
	return err;
}

int fuse_front_run(struct chain_server *s, const char *mountpoint,
		   const struct fuse_front_opts *o)
{
	struct front f = { s, mountpoint, o->cache, { 0, 0 } };
	struct fuse_session *se;
	int err = pthread_key_create(&copy_key, free) ? -ENOMEM : 0;

	clock_gettime(CLOCK_REALTIME, &f.started);
	splice_probe();

	if (!err && (err = session_open(o, mountpoint, &f, &se)))
		pthread_key_delete(copy_key);
	if (err)
		return err;
	/* the mount is ready: the parent returns 0 to the shell from here */
	fuse_daemonize(o->foreground);
	if (fuse_set_signal_handlers(se) == 0) {
		if (o->ready)
			o->ready(o->opaque);
		err = serve(se, o);
		fuse_remove_signal_handlers(se);
	}
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	free(pthread_getspecific(copy_key));
	pthread_key_delete(copy_key);
	return err;
}
