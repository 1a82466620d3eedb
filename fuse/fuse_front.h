/* fuse_front — the FUSE front end (layer 3, beside tools/): serves the
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
};

/* Mount the server's disks at mountpoint (an absolute path) and serve
 * until unmounted or SIGTERM/SIGINT/SIGHUP; then unmount and return 0 (the
 * caller closes the server: flush, unclean flags, locks).  Unless
 * foreground, the process forks once the mount is ready: the parent exits
 * 0 there (inside libfuse's fuse_daemonize), the child detaches (setsid,
 * cwd "/", stdio to /dev/null) and serves, so every path the server holds
 * must be absolute.  A failure before that returns -errno (reported) in
 * the one process there is, whose stderr is still the user's. */
int fuse_front_run(struct chain_server *s, const char *mountpoint,
		   const struct fuse_front_opts *o);

/* The control file's content (malloc'd, *len bytes); max_read: the
 * largest read request the kernel was told to send. */
int fuse_status_render(struct chain_server *s, const char *mountpoint,
		       enum fuse_front_cache cache, size_t max_read, char **text,
		       size_t *len);

#endif
