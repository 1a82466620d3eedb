/* vdt_legacy.h — intent records as the release before record versions
 * wrote them, for the crash tests of the group layer (tests layer).
 * Included after vdtest.h. */
#ifndef VDT_LEGACY_H
#define VDT_LEGACY_H

#include <dirent.h>

#include "group.h"

/* Rewrite the intent records in dir as the release before record versions
 * wrote them (its writer: two comment lines, then op, target, parent,
 * grandparent, cid, long_cid, tmp, unfreeze, publish, child..., file...,
 * attach, attach_child, created...; no version, ids or checksum). */
static inline void vdt_put_key(FILE *out, char *const *lines, unsigned n, const char *key)
{
	size_t k = strlen(key);

	for (unsigned i = 0; i < n; i++)
		if (!strncmp(lines[i], key, k) && lines[i][k] == '=')
			fprintf(out, "%s\n", lines[i]);
}

static inline void vdt_to_legacy(const char *rec)
{
	static const char *const order[] = {
		"op", "target", "parent", "grandparent", "cid", "long_cid", "tmp", "unfreeze",
		"publish", "child", "file", "attach", "attach_child", "created",
	};
	size_t len = 0;
	char *text = (char *)vdt_slurp(rec, &len), *save, *l, *lines[4096];
	unsigned n = 0;
	FILE *out;

	assert_non_null(text);
	text = realloc(text, len + 1);
	text[len] = 0;
	for (l = strtok_r(text, "\n", &save); l && n < 4096; l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	assert_non_null(out = fopen(rec, "w"));
	fprintf(out, "# vdelta: an operation in progress; the next vdelta command on\n"
		     "# this group finishes it (do not remove by hand)\n");
	for (unsigned i = 0; i < sizeof order / sizeof order[0]; i++)
		vdt_put_key(out, lines, n, order[i]);
	assert_int_equal(fclose(out), 0);
	free(text);
}

static inline void vdt_records_to_legacy(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name), k = strlen(GROUP_INTENT_SUFFIX);
		if (n > k && !strcmp(e->d_name + n - k, GROUP_INTENT_SUFFIX)) {
			char *p = vdt_join(dir, e->d_name);
			assert_non_null(p);
			vdt_to_legacy(p);
			free(p);
		}
	}
	closedir(d);
}

#endif
