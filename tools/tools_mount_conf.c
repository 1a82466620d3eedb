/* tools — the configuration file of `vdelta mount --config FILE` (top
 * layer), the one a vdelta-mount@NAME.service reads (/etc/vdelta/NAME.conf).
 *
 * Owns: reading the file as "key = value" lines (or a key alone), with
 * '#' comments and blank lines, bounded in size, and the messages that
 * name FILE:LINE.  What the keys mean is tools_mount.c's: each pair is
 * handed to its callback in file order.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

#define CONF_MAX_BYTES (64u << 10) /* a few disks and options: plenty */
#define CONF_MAX_LINE 4096u        /* a path and its mode and name */

static char *trim(char *s)
{
	char *end = s + strlen(s);

	while (isspace((unsigned char)*s))
		s++;
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* One line (comment and blanks already gone): key, '=' and value. */
static int conf_line(const char *path, unsigned no, char *line, tools_mount_conf_fn *fn,
		     void *opaque)
{
	char *eq = strchr(line, '='), *key = line, *value = NULL;

	if (eq) {
		*eq = '\0';
		value = trim(eq + 1);
	}
	key = trim(key);
	for (const char *k = key; *k; k++)
		if (!islower((unsigned char)*k) && *k != '-') {
			tools_err("%s:%u: '%s' is not a key (lowercase letters and '-')",
				  path, no, key);
			return TOOLS_USAGE;
		}
	if (!*key) {
		tools_err("%s:%u: a value without a key", path, no);
		return TOOLS_USAGE;
	}
	return fn(opaque, path, no, key, value);
}

static int conf_lines(const char *path, char *text, tools_mount_conf_fn *fn, void *opaque)
{
	unsigned no = 0;
	int rc = TOOLS_OK;

	for (char *line = text, *next; line && rc == TOOLS_OK; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		no++;
		if (strlen(line) > CONF_MAX_LINE) {
			tools_err("%s:%u: line longer than %u bytes", path, no, CONF_MAX_LINE);
			return TOOLS_USAGE;
		}
		if (strchr(line, '#'))
			*strchr(line, '#') = '\0';
		if (*trim(line))
			rc = conf_line(path, no, trim(line), fn, opaque);
	}
	return rc;
}

int tools_mount_conf_read(const char *path, tools_mount_conf_fn *fn, void *opaque)
{
	FILE *f = fopen(path, "r");
	char *text;
	size_t n;
	int rc;

	if (!f)
		return tools_fail(path, -errno);
	text = malloc(CONF_MAX_BYTES + 1);
	n = text ? fread(text, 1, CONF_MAX_BYTES + 1, f) : 0;
	rc = !text ? -ENOMEM : ferror(f) ? -EIO : 0;
	fclose(f);
	if (rc) {
		free(text);
		return tools_fail(path, rc);
	}
	if (n > CONF_MAX_BYTES || memchr(text, '\0', n)) {
		tools_err("%s: not a configuration file (over %u bytes, or binary)", path,
			  CONF_MAX_BYTES);
		free(text);
		return TOOLS_USAGE;
	}
	text[n] = '\0';
	rc = conf_lines(path, text, fn, opaque);
	free(text);
	return rc;
}
