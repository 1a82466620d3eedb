/* tests/fuzz — what every fuzz target provides (test layer).
 *
 * A target is one .c file with the libFuzzer entry point and a hook that
 * adds generated seeds.  Built with -fsanitize=fuzzer it runs under
 * libFuzzer; built normally it is linked with fuzz_main.c, a deterministic
 * driver that runs seed files and mutations of them as a regression test. */
#ifndef VDELTA_FUZZ_H
#define VDELTA_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Write extra seed files (made with the library itself) into dir.  Called
 * once by the driver before the seeds are read. */
void fuzz_make_seeds(const char *dir);

/* Abort with a message on a broken invariant (libFuzzer and the driver
 * both treat an abort as a finding). */
static inline __attribute__((format(printf, 1, 2), noreturn)) void
fuzz_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* Write buf (len bytes) as the file at path, replacing it. */
static inline void fuzz_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0 || (len && write(fd, buf, len) != (ssize_t)len))
		fuzz_fail("cannot write %s: %s", path, strerror(errno));
	close(fd);
}

/* The target's scratch folder: made on first use from tmpl (ending in
 * XXXXXX, modified), removed with everything in it at exit. */
static char *fuzz_dir_made;

static inline void fuzz_dir_remove(void)
{
	char cmd[4200];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_made);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", fuzz_dir_made);
}

static inline const char *fuzz_work_dir(char *tmpl)
{
	if (fuzz_dir_made)
		return fuzz_dir_made;
	if (!mkdtemp(tmpl) || !(fuzz_dir_made = strdup(tmpl)))
		fuzz_fail("mkdtemp %s: %s", tmpl, strerror(errno));
	atexit(fuzz_dir_remove);
	return fuzz_dir_made;
}

#endif
