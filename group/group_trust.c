/* group — which intent records recovery may act on (layer 3).
 *
 * Owns: the checks a record read back must pass before its operation is
 * finished or rolled back.  A record is input like any file: it may be
 * torn, edited, copied along with a folder from elsewhere, or planted.
 * Recovery acts only on a record that
 *  T1. is a regular file owned by the user running vdelta and writable by
 *      no one else;
 *  T2. lies beside the layer it names (TARGET GROUP_INTENT_SUFFIX), or
 *      beside the layer its row names as the twin (relocate's new top);
 *  T3. names only absolute paths without ".", ".." or empty components;
 *  T4. names files to remove or make only in the folders of the layers it
 *      names;
 *  T5. (version 2) has its checksum verify (checked on reading:
 *      group_intent.c);
 *  T6. passes its row's own check, if it has one (what its text fields
 *      may say: a staging folder's name).
 * Anything else is reported once, naming the record and the rule, and
 * left alone (-VD_EBADDATA, or -EPERM for T1).  Then the files it would
 * remove are sifted: a file is kept out of the operation (reported, never
 * removed) unless
 *  F1. (version 2) it is still the file the record was written for (the
 *      device and inode recorded beside it), a regular file;
 *  F2. (a record of the release before versions: no ids, no checksum) it
 *      is a file of a layer the record names: the descriptor, its sidecar
 *      record, an extent the descriptor lists, or a name of the layer's
 *      own (STEM-....vmdk) in the layer's folder.
 * A file that is gone passes: it was removed before the interruption.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

static void *field_at(const struct group_intent *in, size_t off)
{
	return (char *)in + off;
}

static int untrusted(const struct group_intent *in, const char *why, const char *what)
{
	vd_err("%s: not acted on: %s%s%s (left as it is; remove it once the files "
	       "it names are as they should be)", in->path, why, what ? ": " : "",
	       what ? what : "");
	return -VD_EBADDATA;
}

static const char *base_of(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* path's folder is dir (both absolute and normalised). */
static bool in_dir(const char *path, const char *dir_of)
{
	size_t a = (size_t)(strrchr(path, '/') - path), b = (size_t)(strrchr(dir_of, '/') - dir_of);

	return a == b && !strncmp(path, dir_of, a);
}

/* T3 */
static bool clean_path(const char *p)
{
	if (p[0] != '/' || strstr(p, "//") || strstr(p, "/./") || strstr(p, "/../"))
		return false;
	size_t n = strlen(p);
	return n > 1 && p[n - 1] != '/' && strcmp(p + n - 2, "/.") &&
	       (n < 3 || strcmp(p + n - 3, "/.."));
}

/* ---- walking the record's paths -------------------------------------------------------- */

typedef int path_fn(const struct group_intent *in, const struct group_field *f,
		    const char *path);

/* fn over the target (f NULL) and every path value of the record. */
static int each_path(const struct group_intent *in, path_fn *fn)
{
	int err = fn(in, NULL, in->target);

	for (unsigned i = 0; !err && i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **one = field_at(in, f->off), **list = *(char ***)field_at(in, f->off);
		if (f->kind == GROUP_FIELD_LAYER && *one)
			err = fn(in, f, *one);
		for (unsigned k = 0; !err && f->nr_off && k < *(unsigned *)field_at(in, f->nr_off);
		     k++)
			err = fn(in, f, list[k]);
	}
	return err;
}

static bool is_file_field(const struct group_field *f)
{
	return f && (f->kind == GROUP_FIELD_FILES || f->kind == GROUP_FIELD_NEW_FILES);
}

/* Is path in the folder of a layer of the record? (T4) */
static bool in_layer_dir(const struct group_intent *in, const char *path)
{
	if (in_dir(path, in->target))
		return true;
	for (unsigned i = 0; i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **one = field_at(in, f->off), **list = *(char ***)field_at(in, f->off);
		if (f->kind == GROUP_FIELD_LAYER && *one && in_dir(path, *one))
			return true;
		for (unsigned k = 0; f->kind == GROUP_FIELD_LAYERS &&
				     k < *(unsigned *)field_at(in, f->nr_off); k++)
			if (in_dir(path, list[k]))
				return true;
	}
	return false;
}

static int check_shape(const struct group_intent *in, const struct group_field *f,
		       const char *path)
{
	if (!clean_path(path))
		return untrusted(in, "a path that is not absolute and plain (T3)", path);
	if (is_file_field(f) && !in_layer_dir(in, path))
		return untrusted(in, "a file outside the folders of the layers it names (T4)",
				 path);
	return 0;
}

/* ---- the files a record removes (F1, F2) ------------------------------------------------ */

/* The id recorded for path: true found (*dev, *ino). */
static bool recorded_id(const struct group_intent *in, const char *path,
			unsigned long long *dev, unsigned long long *ino)
{
	for (unsigned i = 0; i < in->nr_ids; i++) {
		int n = 0;
		if (sscanf(in->ids[i], "%llu:%llu:%n", dev, ino, &n) == 2 && n &&
		    !strcmp(in->ids[i] + n, path))
			return true;
	}
	return false;
}

/* F1 */
static bool same_as_written(const struct group_intent *in, const char *path)
{
	unsigned long long dev, ino;
	struct stat st;

	return recorded_id(in, path, &dev, &ino) && !lstat(path, &st) &&
	       S_ISREG(st.st_mode) && st.st_dev == dev && st.st_ino == ino;
}

static bool own_name(const char *layer, const char *path)
{
	const char *lb = base_of(layer), *pb = base_of(path);
	size_t stem = strlen(lb), n = strlen(pb);
	char *side;
	bool ok;

	if (!in_dir(path, layer))
		return false;
	if (stem > 5 && !strcasecmp(lb + stem - 5, ".vmdk"))
		stem -= 5;
	if (!strcmp(lb, pb) || (n > stem + 6 && !strncmp(pb, lb, stem) && pb[stem] == '-' &&
				!strcasecmp(pb + n - 5, ".vmdk")))
		return true;
	if (asprintf(&side, "%s%s", lb, GROUP_CHILDREN_SUFFIX) < 0)
		return false;
	ok = !strcmp(side, pb);
	free(side);
	return ok;
}

/* A file the descriptor of layer (if it still opens) lists. */
static bool listed_by(const char *layer, const char *path)
{
	char **files;
	unsigned nr;
	bool found = false;

	vd_log_mute(true);
	if (!group_layer_files(layer, &files, &nr)) {
		for (unsigned i = 0; i < nr && !found; i++)
			found = vd_same_file(files[i], path);
		vd_strv_free(files, nr);
	}
	vd_log_mute(false);
	return found;
}

static bool of_layer(const char *layer, const char *path)
{
	return layer && (own_name(layer, path) || listed_by(layer, path));
}

/* F2: a file of the target or of a layer field. */
static bool owned(const struct group_intent *in, const char *path)
{
	struct stat st;

	if (lstat(path, &st) || !S_ISREG(st.st_mode))
		return false;
	if (of_layer(in->target, path))
		return true;
	for (unsigned i = 0; i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **one = field_at(in, f->off), **list = *(char ***)field_at(in, f->off);
		if (f->kind == GROUP_FIELD_LAYER && of_layer(*one, path))
			return true;
		for (unsigned k = 0; f->kind == GROUP_FIELD_LAYERS &&
				     k < *(unsigned *)field_at(in, f->nr_off); k++)
			if (of_layer(list[k], path))
				return true;
	}
	return false;
}

/* Keep out of a FILES list every file that exists and fails F1 / F2. */
static void sift(struct group_intent *in, const struct group_field *f)
{
	char **list = *(char ***)field_at(in, f->off);
	unsigned *nr = field_at(in, f->nr_off), k = 0;
	struct stat st;

	for (unsigned i = 0; i < *nr; i++) {
		bool keep = lstat(list[i], &st) ||
			    (in->version ? same_as_written(in, list[i]) : owned(in, list[i]));
		if (keep) {
			list[k++] = list[i];
			continue;
		}
		vd_warn("%s: %s is not %s: it is left where it is", in->path, list[i],
			in->version ? "the file this record was written for"
				    : "a file of the layers this record names");
		free(list[i]);
	}
	*nr = k;
}

/* ---- the record ---------------------------------------------------------------------------- */

/* T1 */
static int check_owner(const struct group_intent *in)
{
	struct stat st;

	if (lstat(in->path, &st))
		return -errno;
	if (!S_ISREG(st.st_mode)) {
		untrusted(in, "not a regular file (T1)", NULL);
		return -EPERM;
	}
	if (st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH))) {
		vd_err("%s: not acted on: owned by uid %u, mode %o; only a record of the "
		       "user running vdelta (uid %u) that no one else may write is (T1)",
		       in->path, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
		       (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}

/* T2: the record is LAYER GROUP_INTENT_SUFFIX, its folder the layer's. */
static bool beside(const char *record, const char *layer)
{
	char *want, *rd = vd_dirname(record), *ld = vd_dirname(layer);
	char *rr = rd ? realpath(rd, NULL) : NULL, *lr = ld ? realpath(ld, NULL) : NULL;
	bool ok = false;

	if (rr && lr && asprintf(&want, "%s%s", base_of(layer), GROUP_INTENT_SUFFIX) >= 0) {
		ok = !strcmp(rr, lr) && !strcmp(base_of(record), want);
		free(want);
	}
	free(rd);
	free(ld);
	free(rr);
	free(lr);
	return ok;
}

static int check_place(const struct group_intent *in)
{
	const char *twin = NULL;

	for (unsigned i = 0; in->op->twin_key && i < in->op->nr_fields; i++)
		if (!strcmp(in->op->fields[i].key, in->op->twin_key))
			twin = *(char **)field_at(in, in->op->fields[i].off);
	if (beside(in->path, in->target) || (twin && beside(in->path, twin)))
		return 0;
	return untrusted(in, "it does not lie beside the layer it names (T2)", in->target);
}

int group_trust_record(struct group_intent *in)
{
	int err = check_owner(in);

	if (!err)
		err = check_place(in);
	if (!err)
		err = each_path(in, check_shape);
	if (!err && in->op->check)
		err = in->op->check(in);
	for (unsigned i = 0; !err && i < in->op->nr_fields; i++)
		if (in->op->fields[i].kind == GROUP_FIELD_FILES)
			sift(in, &in->op->fields[i]);
	return err;
}
