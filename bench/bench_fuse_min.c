/* bench — the FUSE ceiling: a minimal libfuse low-level server (bench
 * layer; uses only libfuse).
 *
 *   bench_fuse_min [--splice] [--max-read BYTES] [--threads N] FILE MOUNTPOINT
 *
 * Serves FILE (a raw disk) as MOUNTPOINT/disk, in the foreground, until
 * unmounted or signalled.  lookup, getattr, open, read (and write, fsync
 * so fio's write job runs); fuse_session_loop_mt with clone_fd.  A read is
 * one pread into a per-thread buffer and fuse_reply_buf, or with --splice
 * an fd-backed fuse_bufvec handed to fuse_reply_data with splice wanted at
 * init (FUSE_CAP_SPLICE_WRITE and _MOVE, which libfuse leaves off): the
 * kernel splices the file's pages when the reply fits libfuse's pipe, and
 * libfuse reads the rest into a buffer it allocates for that reply (1 MiB
 * where the pipe cannot grow past pipe-max-size, 1 MiB, without
 * CAP_SYS_RESOURCE; --max-read 524288 keeps every read request small
 * enough to splice there, as `vdelta mount` does).  Files are opened
 * direct_io, as `vdelta mount`'s
 * default (--cache=none) does, so both see every request.  Nothing is
 * cached or checked beyond what a request needs: the fastest a FUSE file
 * server can be on this kernel, the figure vdelta mount is held against.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DISK_INO 2
#define MAX_REQ (1u << 20) /* above any max_pages */

static int disk_fd = -1;
static bool use_splice;
static unsigned max_read; /* 0: libfuse's default (1 MiB requests) */
static struct stat disk_st;

static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = disk_st.st_size;
	}
	st->st_uid = getuid();
	st->st_gid = getgid();
}

static void min_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { .ino = DISK_INO, .attr_timeout = 3600,
				      .entry_timeout = 3600 };

	if (parent != FUSE_ROOT_ID || strcmp(name, "disk")) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_attr(DISK_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void min_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, 3600);
}

static void min_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != DISK_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->direct_io = 1;
	fuse_reply_open(req, fi);
}

static void min_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	static __thread char *buf;
	ssize_t n;

	(void)ino, (void)fi;
	if (use_splice) {
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
		bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		bv.buf[0].fd = disk_fd;
		bv.buf[0].pos = off;
		fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
		return;
	}
	if (!buf && !(buf = malloc(MAX_REQ))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = pread(disk_fd, buf, size > MAX_REQ ? MAX_REQ : size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void min_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		      off_t off, struct fuse_file_info *fi)
{
	ssize_t n = pwrite(disk_fd, buf, size, off);

	(void)ino, (void)fi;
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

static void min_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	(void)ino, (void)datasync, (void)fi;
	fuse_reply_err(req, fdatasync(disk_fd) ? errno : 0);
}

static void min_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (use_splice)
		conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	if (max_read)
		conn->max_read = max_read;
}

static const struct fuse_lowlevel_ops min_ops = {
	.init = min_init,
	.lookup = min_lookup,
	.getattr = min_getattr,
	.open = min_open,
	.read = min_read,
	.write = min_write,
	.fsync = min_fsync,
};

static int serve(const char *mnt, unsigned threads)
{
	char opt[64], *argv[] = {"bench_fuse_min", "-o", opt, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(max_read ? 3 : 1, argv);
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	struct fuse_session *se;
	int ret = 1;

	snprintf(opt, sizeof opt, "max_read=%u", max_read);
	se = fuse_session_new(&args, &min_ops, sizeof min_ops, NULL);

	if (!se || !cfg || fuse_set_signal_handlers(se))
		return 1;
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, threads);
	if (!fuse_session_mount(se, mnt)) {
		ret = fuse_session_loop_mt(se, cfg) < 0;
		fuse_session_unmount(se);
	}
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	fuse_loop_cfg_destroy(cfg);
	return ret;
}

int main(int argc, char **argv)
{
	unsigned threads = 10;
	int i = 1;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--splice"))
			use_splice = true;
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--max-read") && i + 1 < argc)
			max_read = (unsigned)atoi(argv[++i]);
		else
			break;
	}
	if (argc - i != 2 || threads < 1) {
		fprintf(stderr, "usage: bench_fuse_min [--splice] [--max-read BYTES] [--threads N] "
				"FILE MOUNTPOINT\n");
		return 2;
	}
	disk_fd = open(argv[i], O_RDWR | O_CLOEXEC);
	if (disk_fd < 0 || fstat(disk_fd, &disk_st)) {
		perror(argv[i]);
		return 1;
	}
	return serve(argv[i + 1], threads);
}
