/* common — logging, random numbers, paths, size parsing, string vectors
 * (layer 0). */
#define _GNU_SOURCE
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>

static vd_log_fn *log_fn;
static void *log_opaque;
static __thread unsigned log_muted;

void vd_log_mute(bool on)
{
	if (on)
		log_muted++;
	else if (log_muted)
		log_muted--;
}

void vd_log_set(vd_log_fn *fn, void *opaque)
{
	log_fn = fn;
	log_opaque = opaque;
}

void vd_log(enum vd_log_level level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (!log_fn || log_muted)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_fn(log_opaque, level, msg);
}

bool vd_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	/* check the first 16 bytes, then compare the buffer with itself shifted */
	for (size_t i = 0; i < len && i < 16; i++)
		if (p[i])
			return false;
	return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

uint32_t vd_random32(void)
{
	uint32_t v = 0;

	while (getrandom(&v, sizeof v, 0) != sizeof v)
		;
	return v;
}

char *vd_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *vd_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

char *vd_path_join(const char *dir, const char *name)
{
	char *out;

	if (name[0] == '/' || !dir || !strcmp(dir, "."))
		return strdup(name);
	if (asprintf(&out, "%s/%s", dir, name) < 0)
		return NULL;
	return out;
}

int vd_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGTP";
	char *end;
	unsigned long long v;
	int shift = 0;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end) {
		const char *u = strchr(units, toupper((unsigned char)*end));
		if (!u)
			return -EINVAL;
		shift = 10 * (int)(u - units + 1);
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

bool vd_same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

void vd_strv_free(char **v, unsigned n)
{
	for (unsigned i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

int vd_strv_add(char ***v, unsigned *n, const char *s)
{
	char **nv;

	if (*n >= VD_STRV_MAX)
		return -E2BIG;
	nv = reallocarray(*v, *n + 1, sizeof *nv);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	(*n)++;
	return 0;
}
