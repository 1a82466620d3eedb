/* tests — small helpers shared by the cmocka unit tests (test layer; may use
 * every layer).  Header-only so each test stays one executable: scratch
 * directories, whole-file copy and read, a deterministic PRNG, the shared
 * corpus location, and a log sink that keeps the last library message. */
#ifndef VDELTA_VDTEST_H
#define VDELTA_VDTEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

#ifndef VDELTA_CORPUS
#define VDELTA_CORPUS "../shared/corpus"
#endif

/* The shared corpus: $VDELTA_CORPUS, else the path meson passed. */
static inline const char *vdt_corpus(void)
{
	const char *env = getenv("VDELTA_CORPUS");
	return env && *env ? env : VDELTA_CORPUS;
}

/* corpus/<rel> when it exists, else NULL (callers skip()). */
static inline char *vdt_corpus_path(const char *rel)
{
	char *p;
	struct stat st;

	if (asprintf(&p, "%s/%s", vdt_corpus(), rel) < 0)
		return NULL;
	if (stat(p, &st)) {
		free(p);
		return NULL;
	}
	return p;
}

/* xorshift64*: deterministic, seedable */
static inline uint64_t vdt_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}
static inline uint64_t vdt_below(uint64_t *s, uint64_t n)
{
	return n ? vdt_rand(s) % n : 0;
}

/* A fresh scratch directory under /tmp/vdelta-test (removed by vdt_rmtree). */
static inline char *vdt_mkdtemp(const char *tag)
{
	char *p;

	/* a shared temporary folder (sticky, writable by all), like /tmp: the
	 * group layer does not take it for a datastore and scan it */
	if (!mkdir("/tmp/vdelta-test", 0755) || errno == EEXIST)
		chmod("/tmp/vdelta-test", 01777);
	if (asprintf(&p, "/tmp/vdelta-test/%s.XXXXXX", tag) < 0)
		return NULL;
	if (!mkdtemp(p)) {
		free(p);
		return NULL;
	}
	return p;
}

/* Remove a flat scratch directory (no subdirectories). */
static inline void vdt_rmtree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4096];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static inline char *vdt_join(const char *dir, const char *name)
{
	char *p;
	return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Whole file into memory (NUL-terminated); NULL on error. */
static inline uint8_t *vdt_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
	    fread(buf, 1, (size_t)n, f) == (size_t)n) {
		buf[n] = 0;
		*len = (size_t)n;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static inline int vdt_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

static inline int vdt_copy_file(const char *from, const char *to)
{
	size_t len;
	uint8_t *buf = vdt_slurp(from, &len);
	int err;

	if (!buf)
		return errno ? -errno : -EIO;
	err = vdt_write_file(to, buf, len);
	free(buf);
	return err;
}

/* Run a shell command; its exit status (-1: out of memory). */
static inline int vdt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int vdt_sh(const char *fmt, ...)
{
	char *cmd;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&cmd, fmt, ap);
	va_end(ap);
	if (r < 0)
		return -1;
	r = system(cmd);
	free(cmd);
	return r;
}

/* Do two files hold the same bytes? */
static inline bool vdt_same_file(const char *a, const char *b)
{
	size_t la = 0, lb = 0;
	uint8_t *x = vdt_slurp(a, &la), *y = vdt_slurp(b, &lb);
	bool same = x && y && la == lb && !memcmp(x, y, la);

	free(x);
	free(y);
	return same;
}

/* pread/pwrite of a few bytes at an offset of a file, outside the library */
static inline int vdt_peek(const char *path, void *buf, size_t len, off_t off)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pread(fd, buf, len, off);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}
static inline int vdt_poke(const char *path, const void *buf, size_t len, off_t off)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pwrite(fd, buf, len, off);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

/* Log sink: keeps the last message; prints when VDT_VERBOSE is set. */
static char vdt_last_msg[1024];
static inline void vdt_log(void *opaque, enum vd_log_level level, const char *msg)
{
	(void)opaque;
	snprintf(vdt_last_msg, sizeof vdt_last_msg, "%s", msg);
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "[lib %d] %s\n", (int)level, msg);
}

/* true when `prog` is on PATH (oracle tools: qemu-img, vmdkinfo) */
static inline bool vdt_have(const char *prog)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

#endif
