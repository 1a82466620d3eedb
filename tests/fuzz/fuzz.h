/* tests/fuzz — what every fuzz target provides (test layer).
 *
 * A target is one .c file with the libFuzzer entry point and a hook that
 * adds generated seeds.  Built with -fsanitize=fuzzer it runs under
 * libFuzzer; built normally it is linked with fuzz_main.c, a deterministic
 * driver that runs seed files and mutations of them as a regression test. */
#ifndef VDELTA_FUZZ_H
#define VDELTA_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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

#endif
