/* chain — parent hint resolution and generation (layer 2).
 *
 * Owns: turning a parentFileNameHint (relative, absolute, Windows-style, or
 * ddb.nativeParentHint) into a path that exists, and writing the hint a new
 * child should carry (relative to the child's folder).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chain_int.h"

#define MAX_CANDIDATES 6

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

static bool is_windows(const char *hint)
{
	return strchr(hint, '\\') ||
	       (isalpha((unsigned char)hint[0]) && hint[1] == ':');
}

/* The last component of a hint, whichever separator it uses. */
static const char *hint_basename(const char *hint)
{
	const char *b = hint;

	for (const char *p = hint; *p; p++)
		if (*p == '/' || *p == '\\')
			b = p + 1;
	return b;
}

/* Append the candidates a hint yields, in the order they are tried. */
static void add_candidates(const char *dir, const char *hint, char **cand, unsigned *n)
{
	const char *base = hint_basename(hint);

	if (!hint[0])
		return;
	if (!is_windows(hint))
		cand[(*n)++] = vd_path_join(dir, hint); /* absolute stays as is */
	if (base[0] && *n < MAX_CANDIDATES)
		cand[(*n)++] = vd_path_join(dir, base);
}

int chain_hint_find(const char *child_path, const char *hint, const char *native_hint,
		    char **out)
{
	char *dir = vd_dirname(child_path), *cand[MAX_CANDIDATES] = {0};
	unsigned n = 0, i;
	int err = -ENOENT;

	if (!dir)
		return -ENOMEM;
	add_candidates(dir, hint, cand, &n);
	if (native_hint)
		add_candidates(dir, native_hint, cand, &n);
	for (i = 0; i < n; i++) {
		if (cand[i] && exists(cand[i])) {
			*out = cand[i];
			cand[i] = NULL;
			err = 0;
			break;
		}
	}
	for (i = 0; i < n; i++)
		free(cand[i]);
	free(dir);
	return err;
}

int chain_hint_resolve(const char *child_path, const char *hint,
		       const char *native_hint, char **out)
{
	int err = chain_hint_find(child_path, hint, native_hint, out);

	if (err == -ENOENT)
		vd_err("%s: parent \"%s\" (parentFileNameHint) not found%s%s%s",
		       child_path, hint, native_hint ? " (nor nativeParentHint \"" : "",
		       native_hint ? native_hint : "", native_hint ? "\")" : "");
	return err;
}

/* Canonical absolute form of a folder that exists. */
static char *canon_dir(const char *path)
{
	char *dir = vd_dirname(path), *r;

	if (!dir)
		return NULL;
	r = realpath(dir, NULL);
	free(dir);
	return r;
}

/* Length of the next component at p (p points after a '/'). */
static size_t comp_len(const char *p)
{
	const char *s = strchr(p, '/');

	return s ? (size_t)(s - p) : strlen(p);
}

/* Relative path from folder `from` to file `to` (both canonical and
 * absolute); absolute when they share nothing but the root. */
static char *relative(const char *from, const char *to)
{
	const char *f = from + 1, *t = to + 1;
	size_t k = 0, ups = 0, n;
	char *r, *p;

	/* shared folders: a component of `to` that is not its last one */
	while (*f && strchr(t, '/') && (n = comp_len(f)) == comp_len(t) &&
	       !memcmp(f, t, n)) {
		f += n + (f[n] == '/');
		t += n + 1;
		k++;
	}
	if (k == 0 && from[1])
		return strdup(to);
	for (; *f; f += n + (f[n] == '/'), ups++)
		n = comp_len(f);
	r = p = malloc(ups * 3 + strlen(t) + 1);
	if (!r)
		return NULL;
	for (; ups; ups--, p += 3)
		memcpy(p, "../", 3);
	strcpy(p, t);
	return r;
}

int chain_hint_make(const char *child_path, const char *parent_path, char **out)
{
	char *cdir = canon_dir(child_path), *ppath = realpath(parent_path, NULL);
	int err = 0;

	*out = NULL;
	if (!cdir || !ppath) {
		err = -errno ? -errno : -ENOMEM;
		vd_err("%s: cannot resolve the folder of %s or its parent %s: %s",
		       child_path, child_path, parent_path, strerror(-err));
	} else {
		*out = relative(cdir, ppath);
		if (!*out)
			err = -ENOMEM;
	}
	for (const char *c = *out; !err && *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20 || *c == 0x7f) {
			vd_err("%s: its parent %s cannot be named in a descriptor (a quote, a "
			       "backslash or a control character: a hint is a quoted string "
			       "where a backslash separates Windows folders); nothing written",
			       child_path, parent_path);
			free(*out);
			*out = NULL;
			err = -EINVAL;
		}
	free(cdir);
	free(ppath);
	return err;
}
