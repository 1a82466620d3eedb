/* common — POSIX I/O ops, the fault-injecting wrapper used by crash tests,
 * and small files written durably over any io (layer 0).  See common.h for
 * the contract. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- POSIX -------------------------------------------------------------------- */

static int posix_pread(struct vd_file *f, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) { /* past end of file: zeros */
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int posix_pwrite(struct vd_file *f, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(f->fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int posix_sync(struct vd_file *f)
{
	return fdatasync(f->fd) ? -errno : 0;
}

static void posix_writeback(struct vd_file *f)
{
	(void)sync_file_range(f->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

static int posix_size(struct vd_file *f, uint64_t *size)
{
	struct stat st;
	off_t end;

	if (fstat(f->fd, &st))
		return -errno;
	*size = (uint64_t)st.st_size;
	if (!S_ISBLK(st.st_mode))
		return 0;
	end = lseek(f->fd, 0, SEEK_END); /* st_size is 0 for a block device */
	if (end < 0)
		return -errno;
	*size = (uint64_t)end;
	return 0;
}

static int posix_truncate(struct vd_file *f, uint64_t size)
{
	return ftruncate(f->fd, (off_t)size) ? -errno : 0;
}

static int posix_lock(struct vd_file *f, const struct vd_lock_req *r, bool unlock)
{
	struct flock fl = {
		.l_type = unlock ? F_UNLCK : (r->write ? F_WRLCK : F_RDLCK),
		.l_whence = SEEK_SET,
		.l_start = (off_t)r->start,
		.l_len = (off_t)r->len,
	};

	if (fcntl(f->fd, F_OFD_SETLK, &fl))
		return errno == EACCES ? -EAGAIN : -errno;
	return 0;
}

static int posix_lock_test(struct vd_file *f, const struct vd_lock_req *r, bool *held)
{
	struct flock fl = {
		.l_type = r->write ? F_WRLCK : F_RDLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)r->start,
		.l_len = (off_t)r->len,
	};

	if (fcntl(f->fd, F_OFD_GETLK, &fl))
		return -errno;
	*held = fl.l_type != F_UNLCK;
	return 0;
}

static void posix_close(struct vd_file *f)
{
	close(f->fd);
	free(f->path);
	free(f);
}

static const struct vd_file_ops posix_file_ops = {
	.pread = posix_pread,
	.pwrite = posix_pwrite,
	.sync = posix_sync,
	.writeback = posix_writeback,
	.size = posix_size,
	.truncate = posix_truncate,
	.lock = posix_lock,
	.lock_test = posix_lock_test,
	.close = posix_close,
};

int vd_open_fd(const char *path, int oflags, mode_t mode)
{
	int fd = open(path, oflags | O_NONBLOCK | O_NOCTTY, mode), fl;
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		return -VD_ENOTFILE;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK)) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* Kind of path and, for the kinds a disk file cannot be, the sentence
 * vd_open_strerror gives. */
static const char *file_kind(const char *path, const char **why)
{
	struct stat st;

	*why = NULL;
	if (stat(path, &st))
		return "missing file";
	switch (st.st_mode & S_IFMT) {
	case S_IFREG: return "regular file";
	case S_IFBLK: return "block device";
	case S_IFDIR:
		*why = "is a directory, not a regular file or block device";
		return "directory";
	case S_IFIFO:
		*why = "is a FIFO, not a regular file or block device";
		return "FIFO";
	case S_IFSOCK:
		*why = "is a socket, not a regular file or block device";
		return "socket";
	case S_IFCHR:
		*why = "is a character device, not a regular file or block device";
		return "character device";
	default:
		*why = "is not a regular file or block device";
		return "special file";
	}
}

const char *vd_file_type(const char *path)
{
	const char *why;

	return file_kind(path, &why);
}

const char *vd_open_strerror(int err, const char *path)
{
	const char *why = NULL;

	if (err == -VD_ENOTFILE || err == -EISDIR || err == -ENXIO)
		file_kind(path, &why);
	return why ? why : strerror(-err);
}

static int posix_open(const struct vd_io *io, const char *path, unsigned flags,
		      struct vd_file **out)
{
	int oflags = O_CLOEXEC | ((flags & VD_O_RDWR) ? O_RDWR : O_RDONLY);
	struct vd_file *f;

	(void)io;
	if (flags & VD_O_CREATE)
		oflags |= O_CREAT | O_EXCL | O_RDWR;
	if (flags & VD_O_TRUNC)
		oflags |= O_TRUNC;
	f = calloc(1, sizeof *f);
	if (!f)
		return -ENOMEM;
	f->fd = vd_open_fd(path, oflags, 0644);
	if (f->fd < 0) {
		int err = f->fd;
		free(f);
		return err;
	}
	f->ops = &posix_file_ops;
	f->path = strdup(path);
	if (!f->path) {
		posix_close(f);
		return -ENOMEM;
	}
	*out = f;
	return 0;
}

static int posix_sync_dir(const struct vd_io *io, const char *path)
{
	char *dir = vd_dirname(path);
	int fd, err = 0;

	(void)io;
	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return -errno;
	if (fsync(fd))
		err = -errno;
	close(fd);
	return err;
}

static int posix_rename(const struct vd_io *io, const char *from, const char *to)
{
	(void)io;
	return rename(from, to) ? -errno : 0;
}

static int posix_unlink(const struct vd_io *io, const char *path)
{
	(void)io;
	return unlink(path) ? -errno : 0;
}

static const struct vd_io posix_io = {
	.open = posix_open,
	.sync_dir = posix_sync_dir,
	.rename = posix_rename,
	.unlink = posix_unlink,
};

const struct vd_io *vd_io_posix(void)
{
	return &posix_io;
}

void vd_close(struct vd_file *f)
{
	if (f)
		f->ops->close(f);
}

/* ---- small files ------------------------------------------------------------------ */

int vd_write_durable(const struct vd_io *io, const char *path, const char *text,
		     size_t len)
{
	struct vd_file *f;
	char *tmp;
	int err;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	io->unlink(io, tmp);
	err = io->open(io, tmp, VD_O_RDWR | VD_O_CREATE, &f);
	if (!err && f->ops->lock) /* held until closed: vd_remove_stale_temp keeps off */
		f->ops->lock(f, &(struct vd_lock_req){ .start = 0, .len = 1, .write = true },
			     false);
	if (!err) {
		err = vd_pwrite(f, text, len, 0); /* W1 */
		if (!err)
			err = vd_sync(f);
		vd_close(f);
	}
	if (!err)
		err = io->rename(io, tmp, path); /* W2 */
	if (!err)
		err = io->sync_dir(io, path);
	free(tmp);
	return err;
}

int vd_remove_stale_temp(const struct vd_io *io, const char *path)
{
	struct vd_file *f;
	struct stat st;
	int err;

	if (lstat(path, &st) || !S_ISREG(st.st_mode) || st.st_uid != geteuid())
		return 0;
	if ((err = io->open(io, path, VD_O_RDWR, &f)))
		return err == -ENOENT ? 0 : err;
	if (f->ops->lock)
		err = f->ops->lock(f, &(struct vd_lock_req){ .start = 0, .len = 1, .write = true },
				   false);
	if (!err)
		err = io->unlink(io, path);
	if (!err)
		err = io->sync_dir(io, path);
	vd_close(f);
	return err == -EAGAIN || err == -ENOENT ? 0 : err;
}

int vd_read_small(const char *path, size_t max, char **out)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (!f)
		return -errno;
	buf = malloc(max + 1);
	n = buf ? fread(buf, 1, max + 1, f) : 0;
	fclose(f);
	if (!buf)
		return -ENOMEM;
	if (n > max) {
		free(buf);
		return -EFBIG;
	}
	buf[n] = 0;
	*out = buf;
	return 0;
}

/* ---- fault injection -------------------------------------------------------------
 * Each write made through a faulty file records an undo entry (the bytes it
 * overwrote and the file size before) until the file is synced.  A crash
 * replays the undo entries in reverse when drop_unsynced is set. */

struct undo {
	struct undo *next;
	char *path;
	uint64_t off;      /* a truncate's new size */
	uint64_t old_size;
	size_t len;
	bool is_trunc;
	uint8_t data[];
};

struct vd_faultio {
	struct vd_io io;
	pthread_mutex_t lock;
	long writes_left;
	long writes;
	bool drop_unsynced, keep_newest;
	bool crashed;
	struct undo *undo; /* newest first */
};

struct fault_file {
	struct vd_file base; /* must be first */
	struct vd_file *inner;
	struct vd_faultio *fi;
};

static struct vd_file *inner_of(struct vd_file *f)
{
	return ((struct fault_file *)f)->inner;
}

static int fault_pread(struct vd_file *f, void *buf, size_t len, uint64_t off)
{
	return vd_pread(inner_of(f), buf, len, off);
}

/* Consume one write credit; false means the io has crashed. */
static bool fault_take(struct vd_faultio *fi)
{
	fi->writes++;
	if (fi->crashed || fi->writes_left <= 0) {
		fi->crashed = true;
		return false;
	}
	fi->writes_left--;
	return true;
}

static int fault_record(struct vd_faultio *fi, struct vd_file *inner, size_t len,
			uint64_t off, bool is_trunc)
{
	struct undo *u = malloc(sizeof *u + len);
	int err;

	if (!u)
		return -ENOMEM;
	u->path = strdup(inner->path);
	u->off = off;
	u->len = len;
	u->is_trunc = is_trunc;
	err = vd_fsize(inner, &u->old_size);
	if (!err && len)
		err = vd_pread(inner, u->data, len, off);
	if (err || !u->path) {
		free(u->path);
		free(u);
		return err ? err : -ENOMEM;
	}
	u->next = fi->undo;
	fi->undo = u;
	return 0;
}

static int fault_write_common(struct vd_file *f, const void *buf, size_t len,
			      uint64_t off, bool is_trunc)
{
	struct fault_file *ff = (struct fault_file *)f;
	struct vd_faultio *fi = ff->fi;
	int err = -EIO;

	pthread_mutex_lock(&fi->lock);
	if (fault_take(fi)) {
		err = fault_record(fi, ff->inner, is_trunc ? 0 : len, off, is_trunc);
		if (!err)
			err = is_trunc ? ff->inner->ops->truncate(ff->inner, off)
				       : vd_pwrite(ff->inner, buf, len, off);
	}
	pthread_mutex_unlock(&fi->lock);
	return err;
}

static int fault_pwrite(struct vd_file *f, const void *buf, size_t len, uint64_t off)
{
	return fault_write_common(f, buf, len, off, false);
}

static int fault_truncate(struct vd_file *f, uint64_t size)
{
	return fault_write_common(f, NULL, 0, size, true);
}

/* A sync makes this file's pending writes durable: forget their undo. */
static int fault_sync(struct vd_file *f)
{
	struct fault_file *ff = (struct fault_file *)f;
	struct vd_faultio *fi = ff->fi;
	struct undo **pp;

	pthread_mutex_lock(&fi->lock);
	if (fi->crashed) {
		pthread_mutex_unlock(&fi->lock);
		return -EIO;
	}
	for (pp = &fi->undo; *pp;) {
		struct undo *u = *pp;
		if (!strcmp(u->path, f->path)) {
			*pp = u->next;
			free(u->path);
			free(u);
		} else {
			pp = &u->next;
		}
	}
	pthread_mutex_unlock(&fi->lock);
	return vd_sync(ff->inner);
}

static int fault_size(struct vd_file *f, uint64_t *size)
{
	return vd_fsize(inner_of(f), size);
}

static int fault_lock(struct vd_file *f, const struct vd_lock_req *r, bool unlock)
{
	struct vd_file *in = inner_of(f);
	return in->ops->lock(in, r, unlock);
}

static int fault_lock_test(struct vd_file *f, const struct vd_lock_req *r, bool *held)
{
	struct vd_file *in = inner_of(f);
	return in->ops->lock_test(in, r, held);
}

static void fault_close(struct vd_file *f)
{
	struct fault_file *ff = (struct fault_file *)f;

	vd_close(ff->inner);
	free(f->path);
	free(ff);
}

static const struct vd_file_ops fault_file_ops = {
	.pread = fault_pread,
	.pwrite = fault_pwrite,
	.sync = fault_sync,
	.size = fault_size,
	.truncate = fault_truncate,
	.lock = fault_lock,
	.lock_test = fault_lock_test,
	.close = fault_close,
};

static int fault_open(const struct vd_io *io, const char *path, unsigned flags,
		      struct vd_file **out)
{
	struct vd_faultio *fi = io->opaque;
	struct fault_file *ff;
	int err;

	if ((flags & (VD_O_CREATE | VD_O_TRUNC)) && fi->crashed)
		return -EIO;
	ff = calloc(1, sizeof *ff);
	if (!ff)
		return -ENOMEM;
	err = vd_io_posix()->open(vd_io_posix(), path, flags, &ff->inner);
	if (err) {
		free(ff);
		return err;
	}
	ff->base.ops = &fault_file_ops;
	ff->base.path = strdup(path);
	ff->base.fd = ff->inner->fd;
	ff->fi = fi;
	*out = &ff->base;
	return 0;
}

static int fault_sync_dir(const struct vd_io *io, const char *path)
{
	struct vd_faultio *fi = io->opaque;
	return fi->crashed ? -EIO : vd_io_posix()->sync_dir(vd_io_posix(), path);
}

static int fault_rename(const struct vd_io *io, const char *from, const char *to)
{
	struct vd_faultio *fi = io->opaque;
	bool ok;

	pthread_mutex_lock(&fi->lock);
	ok = fault_take(fi);
	pthread_mutex_unlock(&fi->lock);
	return ok ? vd_io_posix()->rename(vd_io_posix(), from, to) : -EIO;
}

static int fault_unlink(const struct vd_io *io, const char *path)
{
	struct vd_faultio *fi = io->opaque;
	bool ok;

	pthread_mutex_lock(&fi->lock);
	ok = fault_take(fi);
	pthread_mutex_unlock(&fi->lock);
	return ok ? vd_io_posix()->unlink(vd_io_posix(), path) : -EIO;
}

int vd_faultio_create(long writes_left, bool drop_unsynced, struct vd_faultio **out)
{
	struct vd_faultio *fi = calloc(1, sizeof *fi);

	if (!fi)
		return -ENOMEM;
	pthread_mutex_init(&fi->lock, NULL);
	fi->writes_left = writes_left;
	fi->drop_unsynced = drop_unsynced;
	fi->io = (struct vd_io){ fault_open, fault_sync_dir, fault_rename,
				 fault_unlink, fi };
	*out = fi;
	return 0;
}

const struct vd_io *vd_faultio_io(struct vd_faultio *fi) { return &fi->io; }
long vd_faultio_writes(const struct vd_faultio *fi) { return fi->writes; }
bool vd_faultio_crashed(const struct vd_faultio *fi) { return fi->crashed; }

static int undo_apply(const struct undo *u)
{
	struct vd_file *f;
	int err = vd_io_posix()->open(vd_io_posix(), u->path, VD_O_RDWR, &f);

	if (err)
		return err;
	if (u->len)
		err = vd_pwrite(f, u->data, u->len, u->off);
	if (!err)
		err = f->ops->truncate(f, u->old_size);
	vd_close(f);
	return err;
}

void vd_faultio_keep_newest(struct vd_faultio *fi) { fi->keep_newest = true; }

bool vd_faultio_unsynced(struct vd_faultio *fi, const char *path, uint64_t off,
			 uint64_t len)
{
	bool hit = false;

	pthread_mutex_lock(&fi->lock);
	for (const struct undo *u = fi->undo; u && !hit; u = u->next) {
		/* a truncate changes the bytes between the old and new size */
		uint64_t lo = u->is_trunc ? VD_MIN(u->off, u->old_size) : u->off;
		uint64_t hi = u->is_trunc ? VD_MAX(u->off, u->old_size) : u->off + u->len;
		hit = !strcmp(u->path, path) && lo < off + len && off < hi;
	}
	pthread_mutex_unlock(&fi->lock);
	return hit;
}

static int crash_undo(struct vd_faultio *fi)
{
	int err = 0;

	fi->crashed = true;
	while (fi->undo) {
		struct undo *u = fi->undo;
		if (fi->drop_unsynced && !err)
			err = undo_apply(u);
		fi->undo = u->next;
		free(u->path);
		free(u);
	}
	return err;
}

/* The newest write's bytes (or a truncate's size) as it left the file. */
static int newest_save(const struct undo *u, uint8_t **bytes)
{
	struct vd_file *f;
	int err;

	*bytes = NULL;
	if (u->is_trunc || !u->len)
		return 0;
	*bytes = malloc(u->len);
	if (!*bytes)
		return -ENOMEM;
	err = vd_io_posix()->open(vd_io_posix(), u->path, VD_O_RDWR, &f);
	if (!err) {
		err = vd_pread(f, *bytes, u->len, u->off);
		vd_close(f);
	}
	return err;
}

/* Put the newest write back after every unsynced write was rolled back. */
static int newest_redo(const struct undo *u, const uint8_t *bytes)
{
	struct vd_file *f;
	int err = vd_io_posix()->open(vd_io_posix(), u->path, VD_O_RDWR, &f);

	if (err)
		return err;
	if (u->is_trunc)
		err = f->ops->truncate(f, u->off);
	else if (bytes)
		err = vd_pwrite(f, bytes, u->len, u->off);
	vd_close(f);
	return err;
}

int vd_faultio_crash(struct vd_faultio *fi)
{
	struct undo newest = { 0 };
	uint8_t *bytes = NULL;
	int err = 0, e2;

	if (fi->drop_unsynced && fi->keep_newest && fi->undo) {
		newest.path = strdup(fi->undo->path);
		newest.off = fi->undo->off;
		newest.len = fi->undo->len;
		newest.is_trunc = fi->undo->is_trunc;
		err = newest.path ? newest_save(fi->undo, &bytes) : -ENOMEM;
	}
	e2 = crash_undo(fi);
	err = err ? err : e2;
	if (!err && newest.path)
		err = newest_redo(&newest, bytes);
	free(newest.path);
	free(bytes);
	return err;
}

void vd_faultio_destroy(struct vd_faultio *fi)
{
	if (!fi)
		return;
	while (fi->undo) {
		struct undo *u = fi->undo;
		fi->undo = u->next;
		free(u->path);
		free(u);
	}
	pthread_mutex_destroy(&fi->lock);
	free(fi);
}
