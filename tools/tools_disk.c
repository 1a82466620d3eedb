/* tools — the one place commands open a disk to read its content (top
 * layer).
 *
 * Owns: format detection (raw vs VMDK) and a small ops table over the two
 * kinds of readable disk: a raw file (holes found with SEEK_DATA/SEEK_HOLE)
 * and a VMDK (vmdk_block_status).  A VMDK that has a parent is read whole
 * through its chain (chain.h): a third ops table, chosen in
 * vmdk_open_disk().
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "chain.h"
#include "tools.h"

#define DETECT_LEN 4096 /* bytes read to guess the format */

struct disk_ops {
	int (*status)(struct tools_disk *d, uint64_t off, uint64_t max_len,
		      enum vmdk_bs *kind, uint64_t *run_len);
	int (*pread)(struct tools_disk *d, void *buf, size_t len, uint64_t off);
	void (*close)(struct tools_disk *d);
};

struct tools_disk {
	const struct disk_ops *ops;
	char *path;
	uint64_t size;
	int fd;                 /* raw */
	struct vmdk_disk *vmdk; /* vmdk; for a chain, its top */
	struct chain *chain;    /* a VMDK with a parent */
};

/* Report a failed system call on path; returns -errno. */
static int sys_err(const char *path, const char *what)
{
	int err = errno;

	tools_err("%s: %s%s%s", path, what, *what ? ": " : "", strerror(err));
	return -err;
}

/* ---- format detection ------------------------------------------------------ */

int tools_fmt_parse(const char *s, enum tools_fmt *out)
{
	if (!strcmp(s, "raw"))
		*out = TOOLS_FMT_RAW;
	else if (!strcmp(s, "vmdk"))
		*out = TOOLS_FMT_VMDK;
	else
		return -EINVAL;
	return 0;
}

/* Text up to the first NUL, whose first non-blank line is a comment or a
 * "key=" line, as every descriptor's is ("# Disk DescriptorFile",
 * "version=1", ...). */
static bool looks_like_descriptor(const unsigned char *buf, size_t n)
{
	size_t i = 0;

	for (size_t k = 0; k < n && buf[k]; k++)
		if (buf[k] < 0x20 && !isspace(buf[k]))
			return false;
	while (i < n && isspace(buf[i]))
		i++;
	if (i == n || buf[i] == 0)
		return false;
	if (buf[i] == '#')
		return true;
	if (!isalpha(buf[i]))
		return false;
	while (i < n && (isalnum(buf[i]) || buf[i] == '_' || buf[i] == '.'))
		i++;
	while (i < n && (buf[i] == ' ' || buf[i] == '\t'))
		i++;
	return i < n && buf[i] == '=';
}

static bool looks_like_vmdk(const unsigned char *buf, size_t n)
{
	if (n >= 4 && (!memcmp(buf, "KDMV", 4) || !memcmp(buf, "COWD", 4)))
		return true;
	if (n >= 8 && get_le64(buf) == 0xCAFEBABEull)
		return true;
	return looks_like_descriptor(buf, n);
}

static bool tools_has_vmdk_suffix(const char *path)
{
	size_t n = strlen(path);

	return n >= 5 && !strcasecmp(path + n - 5, ".vmdk");
}

int tools_fmt_detect(const char *path, enum tools_fmt *out)
{
	unsigned char buf[DETECT_LEN];
	ssize_t n;
	int rc, fd = vd_open_fd(path, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0) {
		tools_err("%s: %s", path, vd_open_strerror(fd, path));
		return fd;
	}
	n = pread(fd, buf, sizeof buf, 0);
	rc = n < 0 ? sys_err(path, "read") : 0;
	close(fd);
	if (rc < 0)
		return rc;
	/* A file named *.vmdk is read as a VMDK even when it does not look like
	 * one, so that a damaged disk is refused rather than copied as raw. */
	*out = looks_like_vmdk(buf, (size_t)n) || tools_has_vmdk_suffix(path)
		       ? TOOLS_FMT_VMDK : TOOLS_FMT_RAW;
	return 0;
}

/* ---- raw files ------------------------------------------------------------- */

static int raw_status(struct tools_disk *d, uint64_t off, uint64_t max_len,
		      enum vmdk_bs *kind, uint64_t *run_len)
{
	uint64_t left = VD_MIN(max_len, d->size - off);
	off_t data = lseek(d->fd, (off_t)off, SEEK_DATA);
	off_t hole;

	*kind = VMDK_BS_UNALLOC;
	if (data < 0 && errno == ENXIO) { /* only a hole up to the end */
		*run_len = left;
		return 0;
	}
	if (data < 0 || (uint64_t)data > off) {
		/* no SEEK_DATA (data < 0): call everything data */
		*kind = data < 0 ? VMDK_BS_DATA : VMDK_BS_UNALLOC;
		*run_len = data < 0 ? left : VD_MIN(left, (uint64_t)data - off);
		return 0;
	}
	*kind = VMDK_BS_DATA;
	hole = lseek(d->fd, (off_t)off, SEEK_HOLE);
	*run_len = hole > (off_t)off ? VD_MIN(left, (uint64_t)hole - off) : left;
	return 0;
}

/* Whole reads; past end-of-file reads as zeros (the file may shrink). */
static int raw_pread(struct tools_disk *d, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(d->fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return sys_err(d->path, "read");
		if (n == 0) {
			memset(p, 0, len);
			break;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void raw_close(struct tools_disk *d)
{
	close(d->fd);
}

static const struct disk_ops raw_ops = {raw_status, raw_pread, raw_close};

static int raw_open(struct tools_disk *d)
{
	off_t end;

	d->fd = vd_open_fd(d->path, O_RDONLY | O_CLOEXEC, 0);
	if (d->fd < 0) {
		tools_err("%s: %s", d->path, vd_open_strerror(d->fd, d->path));
		return d->fd;
	}
	end = lseek(d->fd, 0, SEEK_END); /* works for block devices too */
	if (end < 0) {
		int rc = sys_err(d->path, "size");
		close(d->fd);
		return rc;
	}
	posix_fadvise(d->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	d->size = (uint64_t)end;
	d->ops = &raw_ops;
	return 0;
}

/* ---- VMDK ------------------------------------------------------------------- */

static int vmdk_status(struct tools_disk *d, uint64_t off, uint64_t max_len,
		       enum vmdk_bs *kind, uint64_t *run_len)
{
	return vmdk_block_status(d->vmdk, off, max_len, kind, run_len);
}

static int vmdk_read(struct tools_disk *d, void *buf, size_t len, uint64_t off)
{
	return vmdk_pread(d->vmdk, buf, len, off);
}

static void vmdk_done(struct tools_disk *d)
{
	vmdk_close(d->vmdk);
}

static const struct disk_ops vmdk_ops = {vmdk_status, vmdk_read, vmdk_done};

/* A delta disk read whole: its chain (chain.h), top to base. */
static int chain_status_op(struct tools_disk *d, uint64_t off, uint64_t max_len,
			   enum vmdk_bs *kind, uint64_t *run_len)
{
	return chain_block_status(d->chain, off, max_len, kind, run_len);
}

static int chain_read_op(struct tools_disk *d, void *buf, size_t len, uint64_t off)
{
	return chain_pread(d->chain, buf, len, off);
}

static void chain_done(struct tools_disk *d)
{
	chain_close(d->chain);
}

static const struct disk_ops chain_ops = {chain_status_op, chain_read_op, chain_done};

static int chain_open_disk(struct tools_disk *d)
{
	int rc;

	vmdk_close(d->vmdk);
	d->vmdk = NULL;
	rc = chain_open(d->path, CHAIN_OPEN_RDONLY, NULL, &d->chain);
	if (rc < 0)
		return rc;
	d->vmdk = chain_layer(d->chain, 0);
	d->size = chain_capacity(d->chain);
	d->ops = &chain_ops;
	return 0;
}

static int vmdk_open_disk(struct tools_disk *d)
{
	int rc = vmdk_open(d->path, VMDK_OPEN_RDONLY, NULL, &d->vmdk);

	if (rc < 0)
		return rc;
	if (vmdk_parent_hint(d->vmdk)) /* a delta: read it through its chain */
		return chain_open_disk(d);
	/* a reader's lock, as chain_open takes for a delta: no writer meanwhile */
	rc = vmdk_lock(d->vmdk, VMDK_PERM_READ, VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (rc < 0) {
		vmdk_close(d->vmdk);
		return rc;
	}
	d->size = vmdk_capacity(d->vmdk);
	d->ops = &vmdk_ops;
	return 0;
}

/* ---- the interface -------------------------------------------------------- */

int tools_disk_open(const char *path, enum tools_fmt fmt, struct tools_disk **out)
{
	struct tools_disk *d = calloc(1, sizeof *d);
	int rc;

	if (!d || !(d->path = strdup(path))) {
		free(d);
		tools_err("%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	rc = fmt == TOOLS_FMT_AUTO ? tools_fmt_detect(path, &fmt) : 0;
	if (rc == 0)
		rc = fmt == TOOLS_FMT_RAW ? raw_open(d) : vmdk_open_disk(d);
	if (rc < 0) {
		free(d->path);
		free(d);
		return rc;
	}
	*out = d;
	return 0;
}

void tools_disk_close(struct tools_disk *d)
{
	if (!d)
		return;
	d->ops->close(d);
	free(d->path);
	free(d);
}

uint64_t tools_disk_size(const struct tools_disk *d)
{
	return d->size;
}

const char *tools_disk_path(const struct tools_disk *d)
{
	return d->path;
}

struct vmdk_disk *tools_disk_vmdk(struct tools_disk *d)
{
	return d->vmdk;
}

int tools_disk_status(struct tools_disk *d, uint64_t off, uint64_t max_len,
		      enum vmdk_bs *kind, uint64_t *run_len)
{
	return d->ops->status(d, off, max_len, kind, run_len);
}

int tools_disk_pread(struct tools_disk *d, void *buf, size_t len, uint64_t off)
{
	return d->ops->pread(d, buf, len, off);
}

int tools_vmdk_open_read(const char *path, unsigned vmdk_flags, bool force_share,
			 struct vmdk_disk **out)
{
	int rc = vmdk_open(path, VMDK_OPEN_RDONLY | vmdk_flags, NULL, out);

	if (rc < 0 || force_share)
		return rc;
	rc = vmdk_lock(*out, VMDK_PERM_READ, VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (rc < 0) {
		fprintf(stderr, "vdelta: %s is being written; -U (--force-share) reads it "
			"anyway, with no guarantee of consistency\n", path);
		vmdk_close(*out);
		*out = NULL;
	}
	return rc;
}
