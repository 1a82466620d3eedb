/* vdio — a small qemu-io-like driver for the integration tests (tests layer,
 * not installed).  Opens one disk through the public format API (vmdk.h)
 * and runs commands given with -c, in order, with qemu-io's syntax so a
 * test can feed the same command list to both tools:
 *
 *   vdio [-w] FILE -c 'write [-P 0xNN] OFF LEN' -c 'write -z OFF LEN'
 *                  -c 'read [-P 0xNN] OFF LEN' -c 'flush' -c 'length'
 *
 * OFF and LEN take qemu's binary suffixes (512, 64k, 1M, 2G).  write
 * without -P writes 0xcd, as qemu-io does.  read -P fails on the first byte
 * that differs.  Without -w the disk is opened read-only.  Exits 0 when
 * every command succeeded, 1 otherwise (the remaining commands are not
 * run), 2 on a usage error.  With -C the disk is opened as a chain
 * (chain.h): reads fall through to the parents and writes copy-on-write
 * from them, as a guest of the chain sees it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "common.h"
#include "vmdk.h"

#define VDIO_MAX_LEN (256u << 20) /* one command's buffer, bytes */
#define VDIO_MAX_ARGS 8

/* The disk the commands run on: one VMDK, or a chain (-C). */
struct vdio_target {
	struct vmdk_disk *d;
	struct chain *c;
};

static int vdio_pread(struct vdio_target *t, void *buf, size_t len, uint64_t off)
{
	return t->c ? chain_pread(t->c, buf, len, off) : vmdk_pread(t->d, buf, len, off);
}

static int vdio_pwrite(struct vdio_target *t, const void *buf, size_t len, uint64_t off)
{
	return t->c ? chain_pwrite(t->c, buf, len, off) : vmdk_pwrite(t->d, buf, len, off);
}

static int vdio_pwrite_zeroes(struct vdio_target *t, size_t len, uint64_t off)
{
	return t->c ? chain_pwrite_zeroes(t->c, len, off) : vmdk_pwrite_zeroes(t->d, len, off);
}

struct vdio_cmd {
	bool has_pattern, zero;
	int pattern;
	uint64_t off, len;
};

static void vdio_log(void *opaque, enum vd_log_level level, const char *msg)
{
	if (level <= VD_LOG_WARN)
		fprintf(stderr, "vdio: %s\n", msg);
}

/* qemu's cvtnum: a number with an optional binary suffix. */
static int vdio_parse_num(const char *s, uint64_t *out)
{
	char *end;
	unsigned shift = 0;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	switch (*end) {
	case 'b': case 'B': shift = 0; end++; break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

/* Split a command line into words (no quoting: qemu-io's data commands
 * need none).  Returns the number of words, -EINVAL when too many. */
static int vdio_split(char *line, char **argv)
{
	int argc = 0;

	for (char *w = strtok(line, " \t"); w; w = strtok(NULL, " \t")) {
		if (argc == VDIO_MAX_ARGS)
			return -EINVAL;
		argv[argc++] = w;
	}
	return argc;
}

/* Parse "[-P N] [-z] OFF LEN" from argv[1..]. */
static int vdio_parse_args(int argc, char **argv, struct vdio_cmd *c)
{
	int i = 1;
	uint64_t pat;

	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-z")) {
			c->zero = true;
		} else if (!strcmp(argv[i], "-P") && i + 1 < argc &&
			   !vdio_parse_num(argv[i + 1], &pat) && pat <= 0xff) {
			c->has_pattern = true;
			c->pattern = (int)pat;
			i++;
		} else {
			return -EINVAL;
		}
	}
	if (argc - i != 2 || vdio_parse_num(argv[i], &c->off) ||
	    vdio_parse_num(argv[i + 1], &c->len))
		return -EINVAL;
	if (c->len == 0 || c->len > VDIO_MAX_LEN || (c->zero && c->has_pattern))
		return -EINVAL;
	return 0;
}

/* First offset in buf[0..len) whose byte is not `pattern`, or len. */
static size_t vdio_mismatch(const uint8_t *buf, size_t len, int pattern)
{
	size_t i = 0;

	while (i < len && buf[i] == (uint8_t)pattern)
		i++;
	return i;
}

static int vdio_read(struct vdio_target *d, const struct vdio_cmd *c)
{
	uint8_t *buf = malloc(c->len);
	int ret;

	if (!buf)
		return -ENOMEM;
	ret = vdio_pread(d, buf, c->len, c->off);
	if (ret == 0 && c->has_pattern) {
		size_t bad = vdio_mismatch(buf, c->len, c->pattern);
		if (bad < c->len) {
			fprintf(stderr,
				"vdio: pattern verification failed at offset %" PRIu64
				": byte 0x%02x, expected 0x%02x\n",
				c->off + bad, buf[bad], c->pattern);
			ret = -EIO;
		}
	}
	free(buf);
	return ret;
}

static int vdio_write(struct vdio_target *d, const struct vdio_cmd *c)
{
	uint8_t *buf;
	int ret;

	if (c->zero)
		return vdio_pwrite_zeroes(d, c->len, c->off);
	buf = malloc(c->len);
	if (!buf)
		return -ENOMEM;
	memset(buf, c->has_pattern ? c->pattern : 0xcd, c->len);
	ret = vdio_pwrite(d, buf, c->len, c->off);
	free(buf);
	return ret;
}

/* Run one command line; 0 or -errno (-EINVAL for bad syntax). */
static int vdio_run(struct vdio_target *d, const char *line)
{
	char copy[256], *argv[VDIO_MAX_ARGS];
	struct vdio_cmd c = { 0 };
	int argc, ret;

	if (strlen(line) >= sizeof(copy))
		return -EINVAL;
	strcpy(copy, line);
	argc = vdio_split(copy, argv);
	if (argc == 1 && !strcmp(argv[0], "flush"))
		return d->c ? chain_flush(d->c) : vmdk_flush(d->d);
	if (argc == 1 && !strcmp(argv[0], "length")) {
		printf("%" PRIu64 "\n", d->c ? chain_capacity(d->c) : vmdk_capacity(d->d));
		return 0;
	}
	if (argc < 1 || vdio_parse_args(argc, argv, &c))
		return -EINVAL;
	if (!strcmp(argv[0], "read") && !c.zero)
		ret = vdio_read(d, &c);
	else if (!strcmp(argv[0], "write"))
		ret = vdio_write(d, &c);
	else
		return -EINVAL;
	if (ret == 0)
		printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n",
		       !strcmp(argv[0], "read") ? "read" : "wrote", c.len, c.len, c.off);
	return ret;
}

static void vdio_usage(void)
{
	fprintf(stderr, "usage: vdio [-w] [-C] FILE -c 'write [-P 0xNN | -z] OFF LEN' "
			"-c 'read [-P 0xNN] OFF LEN' -c flush -c length ...\n");
}

int main(int argc, char **argv)
{
	const char *cmds[256];
	struct vdio_target d = {0};
	unsigned nr_cmds = 0;
	bool rw = false, chain = false;
	int opt, ret;

	vd_log_set(vdio_log, NULL);
	while ((opt = getopt(argc, argv, "wCc:f:h")) != -1) {
		if (opt == 'w')
			rw = true;
		else if (opt == 'C')
			chain = true;
		else if (opt == 'c' && nr_cmds < 256)
			cmds[nr_cmds++] = optarg;
		else if (opt != 'f') /* -f vmdk: accepted for qemu-io parity */
			return vdio_usage(), 2;
	}
	if (optind != argc - 1)
		return vdio_usage(), 2;
	ret = chain ? chain_open(argv[optind], rw ? CHAIN_OPEN_RDWR : CHAIN_OPEN_RDONLY,
				 NULL, &d.c)
		    : vmdk_open(argv[optind], rw ? VMDK_OPEN_RDWR : VMDK_OPEN_RDONLY, NULL,
				&d.d);
	if (ret) {
		fprintf(stderr, "vdio: %s: open failed: %s\n", argv[optind], strerror(-ret));
		return 1;
	}
	for (unsigned i = 0; i < nr_cmds && ret == 0; i++) {
		ret = vdio_run(&d, cmds[i]);
		if (ret == -EINVAL)
			fprintf(stderr, "vdio: '%s': bad command or range\n", cmds[i]);
		else if (ret)
			fprintf(stderr, "vdio: '%s': %s\n", cmds[i], strerror(-ret));
	}
	int cret = chain ? chain_close(d.c) : vmdk_close(d.d);
	if (cret && !ret)
		fprintf(stderr, "vdio: %s: close failed: %s\n", argv[optind], strerror(-cret));
	return ret || cret ? 1 : 0;
}
