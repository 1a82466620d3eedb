/* common — shared helpers below every other layer (layer 0).
 *
 * Owns: little-endian decode/encode, overflow-checked arithmetic, the log
 * callback through which every library layer reports errors, and the I/O ops
 * (struct vd_io / struct vd_file) through which all file access flows so that
 * tests can inject faults and simulate a crash.
 *
 * THREAD MODEL: the log callback may be called from any thread; it is set
 * once at start-up.  A struct vd_file may be used by several threads at once
 * for pread/pwrite (like a POSIX fd); open/close are not concurrent with I/O
 * on the same file.  The fault-injecting io serialises its bookkeeping with a
 * mutex.
 *
 * ERRORS: functions return 0 or -errno.  I/O functions report nothing; their
 * callers report once with context (file, field).
 */
#ifndef VDELTA_COMMON_H
#define VDELTA_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define VD_SECTOR 512u

/* Error code for bad on-disk data (a field out of range, bad magic, ...).
 * Always reported with a message naming the file and the field. */
#define VD_EBADDATA EUCLEAN

/* ---- little-endian helpers ------------------------------------------------ */

static inline uint16_t get_le16(const void *p)
{
	const uint8_t *b = p;
	return (uint16_t)(b[0] | b[1] << 8);
}
static inline uint32_t get_le32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}
static inline uint64_t get_le64(const void *p)
{
	const uint8_t *b = p;
	return (uint64_t)get_le32(b) | (uint64_t)get_le32(b + 4) << 32;
}
static inline void put_le16(void *p, uint16_t v)
{
	uint8_t *b = p;
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}
static inline void put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_le64(void *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* ---- arithmetic ------------------------------------------------------------ */

#define VD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define VD_DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define VD_ROUND_UP(n, d) (VD_DIV_ROUND_UP(n, d) * (d))

static inline bool vd_is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

/* true when the whole buffer is zero bytes */
bool vd_is_zero(const void *buf, size_t len);

/* ---- logging ---------------------------------------------------------------- */

enum vd_log_level { VD_LOG_ERROR, VD_LOG_WARN, VD_LOG_INFO, VD_LOG_DEBUG };
typedef void vd_log_fn(void *opaque, enum vd_log_level level, const char *msg);

/* Install the sink for library messages (default: discard). */
void vd_log_set(vd_log_fn *fn, void *opaque);
void vd_log(enum vd_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* on: this thread's messages are dropped until off (a probe whose failure
 * is an answer, not an error: nested calls count). */
void vd_log_mute(bool on);
#define vd_err(...) vd_log(VD_LOG_ERROR, __VA_ARGS__)
#define vd_warn(...) vd_log(VD_LOG_WARN, __VA_ARGS__)

/* ---- I/O ops ------------------------------------------------------------------
 * Every byte the library reads or writes goes through these.  Reads and
 * writes are whole: a short read past end-of-file fills the tail with zeros
 * and still succeeds (sparse files and truncated tails read as zeros), a
 * write either writes everything or fails. */

struct vd_file;

/* Byte-range advisory lock request (OFD semantics where available). */
struct vd_lock_req {
	uint64_t start;
	uint64_t len;
	bool write; /* exclusive (F_WRLCK) vs shared (F_RDLCK) */
};

struct vd_file_ops {
	int (*pread)(struct vd_file *f, void *buf, size_t len, uint64_t off);
	/* Optional: the same as pread for a read of format metadata (headers,
	 * descriptors, grain directories/tables, stream markers) so a counting
	 * io can tell it from a data read.  NULL: pread is used. */
	int (*pread_meta)(struct vd_file *f, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct vd_file *f, const void *buf, size_t len, uint64_t off);
	int (*sync)(struct vd_file *f);
	/* Optional: start writing what was written to storage, without
	 * waiting for it (a hint: only sync makes anything durable).  NULL:
	 * nothing is started. */
	void (*writeback)(struct vd_file *f);
	int (*size)(struct vd_file *f, uint64_t *size);
	int (*truncate)(struct vd_file *f, uint64_t size);
	/* Non-blocking; -EAGAIN when another holder conflicts.  unlock=true
	 * releases the range. */
	int (*lock)(struct vd_file *f, const struct vd_lock_req *r, bool unlock);
	/* Test whether a conflicting lock exists; *held=true if so. */
	int (*lock_test)(struct vd_file *f, const struct vd_lock_req *r, bool *held);
	void (*close)(struct vd_file *f);
};

struct vd_file {
	const struct vd_file_ops *ops;
	char *path; /* as opened; owned by the file */
	int fd;     /* underlying descriptor, -1 if none */
};

enum {
	VD_O_RDONLY = 0,
	VD_O_RDWR = 1,
	VD_O_CREATE = 2, /* create; fail if it exists */
	VD_O_TRUNC = 4,
};

struct vd_io {
	int (*open)(const struct vd_io *io, const char *path, unsigned flags,
		    struct vd_file **out);
	/* Make a directory entry durable (fsync of the containing dir). */
	int (*sync_dir)(const struct vd_io *io, const char *path);
	int (*rename)(const struct vd_io *io, const char *from, const char *to);
	int (*unlink)(const struct vd_io *io, const char *path);
	void *opaque;
};

/* The default: POSIX files.  Its open never blocks (O_NONBLOCK, cleared
 * once the kind is known) and accepts only regular files and block devices:
 * a FIFO, socket, character device or directory is -VD_ENOTFILE. */
const struct vd_io *vd_io_posix(void);

/* A path that is neither a regular file nor a block device. */
#define VD_ENOTFILE ENODEV
/* open(2) for a disk file, as the POSIX io does it: never blocks on a FIFO,
 * refuses other kinds than regular files and block devices (-VD_ENOTFILE).
 * Returns the descriptor or -errno. */
int vd_open_fd(const char *path, int oflags, mode_t mode);
/* "regular file", "FIFO", "socket", "directory", ... of path (stat). */
const char *vd_file_type(const char *path);
/* The message for an open error on path: says the file's kind for
 * -VD_ENOTFILE ("is a FIFO, not a regular file or block device"). */
const char *vd_open_strerror(int err, const char *path);

static inline int vd_pread(struct vd_file *f, void *buf, size_t len, uint64_t off)
{
	return f->ops->pread(f, buf, len, off);
}
/* A read of metadata (see pread_meta): the format layer uses it at every
 * header, descriptor and table read site. */
static inline int vd_pread_meta(struct vd_file *f, void *buf, size_t len, uint64_t off)
{
	if (f->ops->pread_meta)
		return f->ops->pread_meta(f, buf, len, off);
	return f->ops->pread(f, buf, len, off);
}
static inline int vd_pwrite(struct vd_file *f, const void *buf, size_t len,
			    uint64_t off)
{
	return f->ops->pwrite(f, buf, len, off);
}
static inline int vd_sync(struct vd_file *f) { return f->ops->sync(f); }
static inline void vd_writeback(struct vd_file *f)
{
	if (f->ops->writeback)
		f->ops->writeback(f);
}
static inline int vd_fsize(struct vd_file *f, uint64_t *size)
{
	return f->ops->size(f, size);
}
/* close(NULL) is a no-op */
void vd_close(struct vd_file *f);

/* ---- fault injection (tests) -------------------------------------------------
 * Wraps the POSIX io.  After `writes_left` successful writes (and truncates)
 * the io "crashes": every further write fails with -EIO and changes nothing.
 * If drop_unsynced is set, the crash also undoes every write made since that
 * file's last sync (the worst case a power loss can produce when the disk
 * does not reorder across fsync).  The undo happens at vd_faultio_crash(). */
struct vd_faultio;
int vd_faultio_create(long writes_left, bool drop_unsynced, struct vd_faultio **out);
const struct vd_io *vd_faultio_io(struct vd_faultio *fi);
/* Writes that were attempted (successful or refused) so far. */
long vd_faultio_writes(const struct vd_faultio *fi);
bool vd_faultio_crashed(const struct vd_faultio *fi);
/* With drop_unsynced: the newest unsynced write survives the crash while
 * every older unsynced one is rolled back (a disk cache that wrote the
 * last write of a sync window first); the file keeps at least the size
 * that write gave it, so space it skipped reads as zeros or as before. */
void vd_faultio_keep_newest(struct vd_faultio *fi);
/* Whether a write to path since that file's last sync overlaps [off,
 * off+len): bytes a crash with drop_unsynced would roll back. */
bool vd_faultio_unsynced(struct vd_faultio *fi, const char *path, uint64_t off,
			 uint64_t len);
/* Apply the crash: roll back unsynced writes if drop_unsynced. Files must be
 * closed (or abandoned) first. */
int vd_faultio_crash(struct vd_faultio *fi);
void vd_faultio_destroy(struct vd_faultio *fi);

/* ---- counting io (common_count.c) ---------------------------------------------
 * Wraps another io (NULL: POSIX) and counts, per file path, the reads (ops
 * and bytes, metadata and data apart: see vd_pread_meta), writes and syncs
 * that go through it.  Files opened twice under one path share one record.
 * Counters are updated atomically: any number of threads may do I/O; read
 * them (vd_countio_get) when the I/O of interest is over. */
struct vd_countio;
struct vd_count_stats {
	const char *path; /* as opened; valid until destroy */
	uint64_t meta_reads, meta_bytes;
	uint64_t data_reads, data_bytes;
	uint64_t writes, write_bytes, syncs;
};
int vd_countio_create(const struct vd_io *inner, struct vd_countio **out);
const struct vd_io *vd_countio_io(struct vd_countio *ci);
/* Files seen so far (in order of first open); i < vd_countio_nr_files. */
unsigned vd_countio_nr_files(const struct vd_countio *ci);
void vd_countio_get(const struct vd_countio *ci, unsigned i, struct vd_count_stats *out);
/* The record of `path`; -ENOENT when it was never opened. */
int vd_countio_find(const struct vd_countio *ci, const char *path,
		    struct vd_count_stats *out);
/* Sum of every file's counters (path NULL). */
void vd_countio_total(const struct vd_countio *ci, struct vd_count_stats *out);
/* Zero every counter (no I/O may run meanwhile). */
void vd_countio_reset(struct vd_countio *ci);
/* Files must be closed first.  NULL is a no-op. */
void vd_countio_destroy(struct vd_countio *ci);

/* ---- misc -------------------------------------------------------------------- */

/* Random 32-bit value from getrandom(). */
uint32_t vd_random32(void);
/* Directory part of path ("." if none), newly allocated. */
char *vd_dirname(const char *path);
/* Join dir and a relative name; an absolute name is returned as is. */
char *vd_path_join(const char *dir, const char *name);
/* Duplicate or abort-free NULL on ENOMEM (callers check). */
char *vd_strdup(const char *s);
/* Parse "10G", "512M", "4096", "1.5T" is not accepted; K/M/G/T/P binary
 * suffixes, optional trailing "B"/"iB". */
int vd_parse_size(const char *s, uint64_t *out);
/* Do a and b name one file (stat: device and inode, links followed)? */
bool vd_same_file(const char *a, const char *b);

/* ---- string vectors -------------------------------------------------------------
 * A malloc'd array of n malloc'd strings.  vd_strv_add appends a copy of s
 * (-E2BIG past VD_STRV_MAX entries: bounds a list read from a file);
 * vd_strv_free(NULL, 0) is a no-op. */
#define VD_STRV_MAX 4096u
int vd_strv_add(char ***v, unsigned *n, const char *s);
void vd_strv_free(char **v, unsigned n);

/* ---- small files written durably (common_io.c) -----------------------------------
 * vd_write_durable replaces path by text so that a crash leaves the old or
 * the new file, never a mix:
 *  W1. the text goes to PATH.tmp (a stale one is replaced), fsynced;
 *  W2. PATH.tmp is renamed over PATH, then the folder is fsynced.
 * vd_read_small reads a whole file of at most max bytes, NUL-terminated
 * (-EFBIG when larger, -ENOENT when none).  Neither reports. */
int vd_write_durable(const struct vd_io *io, const char *path, const char *text,
		     size_t len);
int vd_read_small(const char *path, size_t max, char **out);
/* Remove PATH.tmp left by a vd_write_durable that never reached W2 (a
 * crash): only a regular file of this user that no live writer holds (W1
 * holds a lock on it until it closes).  0 when removed or left for its
 * writer. */
int vd_remove_stale_temp(const struct vd_io *io, const char *path);

#endif
