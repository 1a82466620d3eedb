/* fuse_front — the FUSE front end (layer 4, beside tools/): serves the
 * disks of a chain_server (chain.h) as regular files in a folder, through
 * libfuse3's low-level API.  Public header of fuse/.
 *
 * Owns only the translation of FUSE requests into serving-core calls
 * (chain_served_*), the mount's attributes, the hidden control file that
 * reports live figures, and the session's life (mount, daemonize, loop,
 * unmount).  Everything that is not FUSE-specific lives in the serving core.
 *
 * The folder holds one file per served disk (size = capacity, mode = the
 * top's, write bits removed when the disk is read-only) and a control file
 * FUSE_FRONT_STATUS that readdir does not list but lookup finds: reading it
 * gives "key=value" fields separated by tabs, one record a line
 * (fuse_status.c describes them).
 *
 * THREAD MODEL: fuse_front_run runs libfuse's multi-threaded loop (one
 * cloned /dev/fuse descriptor per worker); requests reach the serving core
 * concurrently, with no lock of the front end's own.
 * ERRORS: 0/-errno; failures before the mount is ready are reported (log
 * callback) while the caller's stderr is still the user's.
 */
#ifndef VDELTA_FUSE_FRONT_H
#define VDELTA_FUSE_FRONT_H

#include "chain.h"

#define FUSE_FRONT_STATUS ".vdelta-status"
#define FUSE_FRONT_MAX_IO (1u << 20) /* bytes per read/write request, at most */

enum fuse_front_cache {
	FUSE_FRONT_CACHE_NONE,   /* direct I/O: no page cache of the served files */
	FUSE_FRONT_CACHE_KERNEL, /* the kernel caches reads (writes go through) */
};

struct fuse_front_opts {
	bool foreground;               /* stay attached, log to stderr */
	enum fuse_front_cache cache;
	const char *mount_opts;        /* "-o" list for libfuse (allow_other, ...), or NULL */
	unsigned max_threads;          /* 0: libfuse's default */
	/* Called once in the serving process when the mount is ready and
	 * stop signals are handled (a service manager's readiness), or NULL. */
	void (*ready)(void *opaque);
	void *opaque;
};

/* Mount the server's disks at mountpoint (an absolute path) and serve
 * until unmounted or SIGTERM/SIGINT/SIGHUP; then unmount and return 0 (the
 * caller closes the server: flush, unclean flags, locks).  Unless
 * foreground, the process forks once the mount is ready: the parent exits
 * 0 there (inside libfuse's fuse_daemonize), the child detaches (setsid,
 * cwd "/", stdio to /dev/null) and serves, so every path the server holds
 * must be absolute.  A failure before that returns -errno (reported) in
 * the one process there is, whose stderr is still the user's.  mountpoint
 * may be "/dev/fd/N": a /dev/fuse descriptor already mounted by the caller
 * (mount.fuse3's drop_privileges). */
int fuse_front_run(struct chain_server *s, const char *mountpoint,
		   const struct fuse_front_opts *o);

/* The control file's fields, defined once for its writer (fuse_status.c)
 * and its readers (vdelta mount --status): the key of each, and whether
 * its value is a number (else text).  The mount record holds PID ..
 * MAX_READ, a disk's NAME .. DIRECT_BYTES, then FUSE_STATUS_LAYER_KEY
 * for each of its layers (0 = the top). */
#define FUSE_STATUS_FIELDS(X) \
	X(PID, "pid", 1) X(MOUNTPOINT, "mountpoint", 0) X(CACHE, "cache", 0) \
	X(DISKS, "disks", 1) X(POOL_LAYERS, "pool_layers", 1) X(MAX_READ, "max_read", 1) \
	X(NAME, "name", 0) X(MODE, "mode", 0) X(PATH, "path", 0) X(TOP, "top", 0) \
	X(SIZE, "size", 1) X(LAYERS, "layers", 1) X(READS, "reads", 1) \
	X(READ_BYTES, "read_bytes", 1) X(WRITES, "writes", 1) \
	X(WRITE_BYTES, "write_bytes", 1) X(FLUSHES, "flushes", 1) \
	X(COW_GRAINS, "cow_grains", 1) X(ZERO_BYTES, "zero_bytes", 1) \
	X(WALKED_BYTES, "walked_bytes", 1) X(DIRECT_BYTES, "direct_bytes", 1)
#define FUSE_STATUS_ENUM(n, k, num) FUSE_STATUS_##n,
enum fuse_status_field { FUSE_STATUS_FIELDS(FUSE_STATUS_ENUM) FUSE_STATUS_NR };
#define FUSE_STATUS_LAYER_KEY "layer%u_bytes"
const char *fuse_status_key(enum fuse_status_field f);
/* A number field, or a layer's bytes (else text). */
bool fuse_status_numeric(const char *key);

/* The control file's content (malloc'd, *len bytes); max_read: the
 * largest read request the kernel was told to send. */
int fuse_status_render(struct chain_server *s, const char *mountpoint,
		       enum fuse_front_cache cache, size_t max_read, char **text,
		       size_t *len);

#endif
