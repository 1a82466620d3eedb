/* tools — `vdelta convert`: copy a disk's content between raw and VMDK
 * (top layer).
 *
 * Owns: the bulk copy loop.  It asks the input for its allocated runs
 * (tools_disk_status), reads each data run in large buffers, and writes only
 * the pieces that are not all zeros, so holes, unallocated and zeroed grains
 * cost nothing.  Output raw is a sparse file of the input's size; output
 * VMDK is made with vmdk_create and filled with ascending vmdk_pwrite calls
 * (which streamOptimized requires).  An existing output is never touched;
 * a failed or interrupted convert removes what it created.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_convert;

#define BUF_SIZE (4u << 20)  /* bytes moved per read */
#define ZERO_GRAN (64u << 10) /* zero detection unit: one default grain */

struct conv {
	struct tools_disk *in;
	const char *out_path;
	bool out_vmdk;
	enum vmdk_subformat subformat;
	int out_fd;                 /* raw output, -1 if none */
	struct vmdk_disk *out_disk; /* VMDK output */
	char **created;             /* files to remove on failure */
	unsigned nr_created;
	uint8_t *buf;
	struct tools_progress prog;
	bool force_progress;
	int out_fmt;        /* TOOLS_FMT_*; AUTO: by OUT's name */
	bool subformat_set; /* -t given */
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	interrupted = sig;
}

/* ---- output ------------------------------------------------------------------ */

static int remember_file(struct conv *c, const char *path)
{
	char **v = realloc(c->created, (c->nr_created + 1) * sizeof *v);

	if (!v || !(v[c->nr_created] = strdup(path))) {
		c->created = v ? v : c->created;
		return -ENOMEM;
	}
	c->created = v;
	c->nr_created++;
	return 0;
}

static int out_open_raw(struct conv *c, uint64_t size)
{
	int err;

	c->out_fd = open(c->out_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (c->out_fd < 0) {
		err = errno;
		tools_err("%s: %s", c->out_path, strerror(err));
		return -err;
	}
	if (remember_file(c, c->out_path) < 0)
		return -ENOMEM;
	if (ftruncate(c->out_fd, (off_t)size) < 0) {
		err = errno;
		tools_err("%s: truncate to %llu bytes: %s", c->out_path,
			  (unsigned long long)size, strerror(err));
		return -err;
	}
	return 0;
}

static int out_open_vmdk(struct conv *c, uint64_t size)
{
	struct vmdk_create_opts o = {
		.capacity = size,
		.subformat = c->subformat,
		.parent_cid = VMDK_CID_NONE,
	};
	int rc = vmdk_create(c->out_path, &o, NULL);

	if (rc < 0)
		return rc;
	rc = remember_file(c, c->out_path);
	if (rc == 0)
		rc = vmdk_open(c->out_path, VMDK_OPEN_RDWR, NULL, &c->out_disk);
	if (rc == 0) /* a writer's lock until closed: nobody writes it meanwhile */
		rc = vmdk_lock(c->out_disk,
			       VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE,
			       VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	for (unsigned i = 1; rc == 0 && i < vmdk_nr_files(c->out_disk); i++)
		rc = remember_file(c, vmdk_file_path(c->out_disk, i));
	return rc;
}

static int out_write(struct conv *c, const void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	if (c->out_vmdk)
		return vmdk_pwrite(c->out_disk, buf, len, off);
	while (len > 0) {
		n = pwrite(c->out_fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			tools_err("%s: write at offset %llu: %s", c->out_path,
				  (unsigned long long)off, strerror(err));
			return -err;
		}
		buf = (const uint8_t *)buf + n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Flush and close the output; returns the first error. */
static int out_close(struct conv *c)
{
	int rc = 0;

	if (c->out_disk) {
		rc = vmdk_close(c->out_disk);
		c->out_disk = NULL;
	}
	/* Raw output is not fsynced, like cp and qemu-img convert: the file
	 * is new, and a crash leaves a partial file either way. */
	if (c->out_fd >= 0) {
		if (close(c->out_fd) < 0) {
			rc = -errno;
			tools_err("%s: close: %s", c->out_path, strerror(-rc));
		}
		c->out_fd = -1;
	}
	return rc;
}

static void out_remove(struct conv *c)
{
	for (unsigned i = 0; i < c->nr_created; i++)
		unlink(c->created[i]);
}

/* ---- copy -------------------------------------------------------------------- */

/* Write the pieces of buf (which holds [off, off+len)) that are not all
 * zeros, as runs of consecutive non-zero ZERO_GRAN-aligned pieces. */
static int write_nonzero(struct conv *c, const uint8_t *buf, size_t len, uint64_t off)
{
	size_t i = 0, start = 0;
	bool in_run = false;

	while (i < len) {
		size_t end = VD_MIN(len, (size_t)(VD_ROUND_UP(off + i + 1, ZERO_GRAN) - off));
		bool zero = vd_is_zero(buf + i, end - i);

		if (!zero && !in_run)
			start = i;
		if (zero && in_run) {
			int rc = out_write(c, buf + start, i - start, off + start);
			if (rc < 0)
				return rc;
		}
		in_run = !zero;
		i = end;
	}
	return in_run ? out_write(c, buf + start, len - start, off + start) : 0;
}

static int copy_data(struct conv *c, uint64_t off, uint64_t len)
{
	while (len > 0) {
		size_t n = (size_t)VD_MIN(len, BUF_SIZE - off % BUF_SIZE);
		int rc = tools_disk_pread(c->in, c->buf, n, off);

		if (rc == 0)
			rc = write_nonzero(c, c->buf, n, off);
		if (rc == 0 && interrupted)
			rc = -EINTR;
		if (rc < 0)
			return rc;
		off += n;
		len -= n;
		tools_progress_update(&c->prog, off);
	}
	return 0;
}

static int copy_all(struct conv *c)
{
	uint64_t size = tools_disk_size(c->in), off = 0, len = 0;
	enum vmdk_bs kind;
	int rc;

	tools_progress_init(&c->prog, size, c->force_progress);
	for (rc = 0; rc == 0 && off < size; off += len) {
		rc = tools_disk_status(c->in, off, size - off, &kind, &len);
		if (rc == 0 && len == 0)
			rc = -EIO; /* a status that does not advance would loop */
		if (rc == 0 && kind == VMDK_BS_DATA)
			rc = copy_data(c, off, len);
		tools_progress_update(&c->prog, off);
	}
	tools_progress_end(&c->prog, rc == 0 ? size : off);
	return rc;
}

/* ---- command ----------------------------------------------------------------- */

static int convert(struct conv *c, const char *in_path, enum tools_fmt in_fmt)
{
	struct stat st;
	uint64_t size;
	int rc;

	if (lstat(c->out_path, &st) == 0) {
		tools_err("%s: already exists; not overwriting it", c->out_path);
		return -EEXIST;
	}
	rc = tools_disk_open(in_path, in_fmt, &c->in);
	if (rc < 0)
		return rc;
	size = tools_disk_size(c->in);
	c->buf = aligned_alloc(4096, BUF_SIZE);
	if (!c->buf)
		return -ENOMEM;
	rc = c->out_vmdk ? out_open_vmdk(c, size) : out_open_raw(c, size);
	if (rc == 0)
		rc = copy_all(c);
	if (rc == -EINTR)
		tools_err("%s: interrupted by signal %d", c->out_path, (int)interrupted);
	if (rc == 0)
		rc = out_close(c);
	out_close(c);
	if (rc < 0)
		out_remove(c);
	return rc;
}

static const struct option convert_opts[] = {
	{"subformat", required_argument, NULL, 't'},
	{"progress", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

static int convert_opt(int ch, const char *arg, struct conv *c, enum tools_fmt *in_fmt)
{
	const struct tools_cmd *cmd = &tools_cmd_convert;
	enum tools_fmt fmt;

	switch (ch) {
	case 'f':
		if (tools_fmt_parse(arg, in_fmt) < 0)
			return tools_usage(cmd, "unknown input format '%s'", arg);
		return TOOLS_OK;
	case 'O':
		if (tools_fmt_parse(arg, &fmt) < 0)
			return tools_usage(cmd, "unknown output format '%s'", arg);
		c->out_fmt = fmt;
		return TOOLS_OK;
	case 't':
		if (vmdk_subformat_parse(arg, &c->subformat) < 0)
			return tools_usage(cmd, "unknown subformat '%s'", arg);
		c->subformat_set = true;
		return TOOLS_OK;
	case 'p':
		c->force_progress = true;
		return TOOLS_OK;
	default:
		return tools_usage(cmd, NULL);
	}
}

/* -O, else -t means VMDK, else OUT's name: "*.vmdk" is VMDK, others raw. */
static int choose_out_fmt(struct conv *c)
{
	size_t n = strlen(c->out_path);

	if (c->out_fmt == TOOLS_FMT_AUTO)
		c->out_fmt = c->subformat_set ||
				     (n >= 5 && !strcasecmp(c->out_path + n - 5, ".vmdk"))
			     ? TOOLS_FMT_VMDK
			     : TOOLS_FMT_RAW;
	c->out_vmdk = c->out_fmt == TOOLS_FMT_VMDK;
	if (c->subformat_set && !c->out_vmdk)
		return tools_usage(&tools_cmd_convert, "-t needs VMDK output");
	return TOOLS_OK;
}

static void conv_free(struct conv *c)
{
	tools_disk_close(c->in);
	for (unsigned i = 0; i < c->nr_created; i++)
		free(c->created[i]);
	free(c->created);
	free(c->buf);
}

static int convert_run(int argc, char **argv)
{
	struct conv c = {.out_fd = -1};
	struct sigaction sa = {.sa_handler = on_signal};
	enum tools_fmt in_fmt = TOOLS_FMT_AUTO;
	int ch, rc;

	while ((ch = getopt_long(argc, argv, "f:O:t:p", convert_opts, NULL)) != -1)
		if ((rc = convert_opt(ch, optarg, &c, &in_fmt)) != TOOLS_OK)
			return rc;
	if (optind != argc - 2)
		return tools_usage(&tools_cmd_convert, "expected IN and OUT");
	c.out_path = argv[optind + 1];
	if ((rc = choose_out_fmt(&c)) != TOOLS_OK)
		return rc;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	rc = convert(&c, argv[optind], in_fmt);
	conv_free(&c);
	return rc < 0 ? tools_fail(c.out_path, rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_convert = {
	.name = "convert",
	TOOLS_PAGE(convert),
	.run = convert_run,
};
