/* rbd — names: of the images a group is laid into, and of the layers an
 * import makes (layer 4).
 *
 * Owns the rule of rbd.h "IMAGE NAMES": prefix + the layer's path below
 * the root folder (the deepest folder holding every layer exported), its
 * ".vmdk" dropped, each byte other than [A-Za-z0-9._-] written %XX and
 * each '/' as '+'.  The encoding is one-to-one on paths, so two layers
 * never share a name, and a name never ends in RBD_EXPORT_PART ('%' is
 * always followed by two hex digits).  Layers whose file does not end in
 * ".vmdk" get a trailing "%" so "a" and "a.vmdk" stay apart.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "rbd_int.h"

/* The common folder of a and b (both absolute, canonical), in a. */
static void common_dir(char *a, const char *b)
{
	size_t i = 0, cut = 1;

	for (; a[i] && a[i] == b[i]; i++)
		if (a[i] == '/')
			cut = i ? i : 1;
	if (!a[i] && (b[i] == '/' || !b[i]))
		return;
	if (a[i] == '/' && !b[i])
		cut = i;
	a[cut] = '\0';
}

int rbd_name_root(char *const *paths, unsigned n, char **out)
{
	char *root = NULL;

	for (unsigned i = 0; i < n; i++) {
		char *dir = vd_dirname(paths[i]);
		if (!dir) {
			free(root);
			return -ENOMEM;
		}
		if (!root)
			root = dir;
		else {
			common_dir(root, dir);
			free(dir);
		}
	}
	*out = root;
	return root ? 0 : -EINVAL;
}

static bool plain(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
}

static void encode(FILE *f, const char *rel, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)rel[i];
		if (plain(ch))
			fputc(ch, f);
		else if (ch == '/')
			fputc('+', f);
		else
			fprintf(f, "%%%02X", ch);
	}
}

int rbd_name_make(const char *prefix, const char *root, const char *path, char **out)
{
	size_t rlen = strlen(root), len, sz = 0;
	const char *rel = path;
	bool vmdk;
	FILE *f;

	if (!strncmp(path, root, rlen) && path[rlen] == '/')
		rel = path + rlen + 1;
	else if (!strcmp(root, "/"))
		rel = path + 1;
	len = strlen(rel);
	vmdk = len > 5 && !strcasecmp(rel + len - 5, ".vmdk");
	f = open_memstream(out, &sz);
	if (!f)
		return -ENOMEM;
	fputs(prefix ? prefix : "", f);
	encode(f, rel, vmdk ? len - 5 : len);
	if (!vmdk)
		fputc('%', f);
	if (fclose(f))
		return -ENOMEM;
	if (sz > RBD_NAME_MAX) {
		vd_err("%s: its image name would have %zu bytes, more than %u: give a "
		       "shorter --prefix or export it from a folder nearer to it",
		       path, sz, RBD_NAME_MAX);
		free(*out);
		*out = NULL;
		return -ENAMETOOLONG;
	}
	return 0;
}

char *rbd_name_part(const char *image)
{
	char *p;

	return asprintf(&p, "%s%s", image, RBD_EXPORT_PART) < 0 ? NULL : p;
}

/* A layer's file in an import: the image's name (its snapshot's too when
 * with_snap), '/' cannot occur; a leading '.' (a hidden file, which no
 * scan would find) becomes '_'. */
char *rbd_name_file(const char *dir, const char *image, const char *snap, bool with_snap)
{
	char *p;
	int n = with_snap ? asprintf(&p, "%s/%s-%s.vmdk", dir, image, snap)
			  : asprintf(&p, "%s/%s.vmdk", dir, image);

	if (n < 0)
		return NULL;
	if (p[strlen(dir) + 1] == '.')
		p[strlen(dir) + 1] = '_';
	return p;
}
