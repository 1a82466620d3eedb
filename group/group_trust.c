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
 *      may say: a staging folder's name);
 *  T7. (a record of the release before versions: nothing ties it to the
 *      files it was written for) acts within one family as the
 *      descriptors show it now.  Its layers at stake are the target, a
 *      layer of a field its row locks exclusively (recovery writes or
 *      removes it), a layer whose descriptor, sidecar record or listed
 *      extent it would remove, and a file it would remove that is a
 *      layer's descriptor.  Each of them that still exists must be linked
 *      to the target — with the target gone, to the first of them — by a
 *      path through the layers the record names (target, LAYER and LAYERS
 *      fields) in which each next layer is in the other's line of descent
 *      (itself and the parents its descriptor's parentFileNameHint leads
 *      to, up to CHAIN_MAX_DEPTH) or is a child the other's sidecar record
 *      names (a pulled base: from U4 on its child is a base too).  So a
 *      layer of another chain — another group's disk in the same folder,
 *      named as a child or through its files — is not acted on.  The kept
 *      layers the record names (delete's parent, a pull's grandparent) are
 *      links: a sibling under a kept layer the record names passes.  A
 *      record naming more than FAMILY_MAX layers is not acted on.
 * Anything else is reported once, naming the record and the rule (for T7
 * the layer too), and left alone (-VD_EBADDATA, or -EPERM for T1).  Then
 * the files it would remove are sifted: a file is kept out of the
 * operation (reported, never removed) unless
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

/* Does fn hold for the target (f NULL) or a layer the record names? */
typedef bool layer_fn(const char *layer, const struct group_field *f, void *opaque);

static bool any_layer(const struct group_intent *in, layer_fn *fn, void *opaque)
{
	if (fn(in->target, NULL, opaque))
		return true;
	for (unsigned i = 0; i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **one = field_at(in, f->off), **list = *(char ***)field_at(in, f->off);
		if (f->kind == GROUP_FIELD_LAYER && *one && fn(*one, f, opaque))
			return true;
		for (unsigned k = 0; f->kind == GROUP_FIELD_LAYERS &&
				     k < *(unsigned *)field_at(in, f->nr_off); k++)
			if (fn(list[k], f, opaque))
				return true;
	}
	return false;
}

static bool holds_dir(const char *layer, const struct group_field *f, void *path)
{
	(void)f;
	return in_dir(path, layer);
}

/* Is path in the folder of a layer of the record? (T4) */
static bool in_layer_dir(const struct group_intent *in, const char *path)
{
	return any_layer(in, holds_dir, (void *)path);
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

/* path is the layer's descriptor or its sidecar record. */
static bool own_file(const char *layer, const char *path)
{
	char *side;
	bool ok;

	if (!in_dir(path, layer))
		return false;
	if (!strcmp(base_of(layer), base_of(path)))
		return true;
	if (asprintf(&side, "%s%s", base_of(layer), GROUP_CHILDREN_SUFFIX) < 0)
		return false;
	ok = !strcmp(side, base_of(path));
	free(side);
	return ok;
}

/* path bears a name of the layer's own (STEM-....vmdk) in its folder. */
static bool own_name(const char *layer, const char *path)
{
	const char *lb = base_of(layer), *pb = base_of(path);
	size_t stem = strlen(lb), n = strlen(pb);

	if (stem > 5 && !strcasecmp(lb + stem - 5, ".vmdk"))
		stem -= 5;
	return in_dir(path, layer) && n > stem + 6 && !strncmp(pb, lb, stem) &&
	       pb[stem] == '-' && !strcasecmp(pb + n - 5, ".vmdk");
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
	return layer && (own_file(layer, path) || own_name(layer, path) ||
			 listed_by(layer, path));
}

static bool has_file(const char *layer, const struct group_field *f, void *path)
{
	(void)f;
	return of_layer(layer, path);
}

/* F2: a file of the target or of a layer field. */
static bool owned(const struct group_intent *in, const char *path)
{
	struct stat st;

	return !lstat(path, &st) && S_ISREG(st.st_mode) && any_layer(in, has_file, (void *)path);
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

/* ---- one family (T7) ----------------------------------------------------------------------- */

/* The most layers T7 weighs in one record, and children of one sidecar
 * record it reads: its time stays bounded (a record naming more is not
 * acted on). */
#define FAMILY_MAX 512u
#define FAMILY_KIDS 512u

struct file_id {
	dev_t dev;
	ino_t ino;
};

/* A layer of a record of the release before versions, as T7 weighs it. */
struct kin {
	char *path;
	struct file_id id;
	bool stake;  /* recovery writes or removes it, or a file of it */
	bool linked; /* joined to the anchor through the record's layers */
	struct file_id line[CHAIN_MAX_DEPTH]; /* itself, then the parents its
					       * descriptors' hints lead to */
	unsigned nr_line;
	struct file_id *kids; /* the children its sidecar record names */
	unsigned nr_kids;
};

struct family {
	const struct group_intent *in;
	struct kin *k;
	unsigned nr, room;
	int err;
};

static bool id_of(const char *path, struct file_id *id)
{
	struct stat st;

	if (stat(path, &st))
		return false;
	*id = (struct file_id){ st.st_dev, st.st_ino };
	return true;
}

static bool same_id(struct file_id a, struct file_id b)
{
	return a.dev == b.dev && a.ino == b.ino;
}

/* k's line: k, then each parent its descriptor's hint leads to (silent). */
static void descent(struct kin *k)
{
	char *at = strdup(k->path);

	while (at && k->nr_line < CHAIN_MAX_DEPTH && id_of(at, &k->line[k->nr_line])) {
		struct vmdk_disk *d = NULL;
		char *up = NULL;
		k->nr_line++;
		if (!vmdk_open(at, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d)) {
			if (vmdk_parent_hint(d) &&
			    chain_hint_find(at, vmdk_parent_hint(d),
					    vmdk_desc_get(d, "ddb.nativeParentHint"), &up))
				up = NULL;
			vmdk_close(d);
		}
		free(at);
		at = up;
	}
	free(at);
}

/* k's children as its sidecar record names them (none when unreadable). */
static int kids_of(struct kin *k)
{
	char **kids = NULL;
	unsigned nr = 0;

	if (!group_record_read(k->path, &kids, &nr) && nr) {
		k->kids = calloc(VD_MIN(nr, FAMILY_KIDS), sizeof *k->kids);
		for (unsigned i = 0; k->kids && i < nr && k->nr_kids < FAMILY_KIDS; i++)
			k->nr_kids += id_of(kids[i], &k->kids[k->nr_kids]);
	}
	vd_strv_free(kids, nr);
	return nr && !k->kids ? -ENOMEM : 0;
}

/* Add path (when it is there) to the family; the same file twice is one. */
static int kin_add(struct family *fam, const char *path, bool stake)
{
	struct file_id id;
	struct kin *k;

	if (!id_of(path, &id))
		return 0; /* removed before the interruption, or not made yet */
	for (unsigned i = 0; i < fam->nr; i++)
		if (same_id(fam->k[i].id, id)) {
			fam->k[i].stake |= stake;
			return 0;
		}
	if (fam->nr == FAMILY_MAX)
		return -E2BIG; /* reported by check_family, unmuted */
	if (fam->nr == fam->room) {
		unsigned room = fam->room ? 2 * fam->room : 8;
		if (!(k = realloc(fam->k, room * sizeof *k)))
			return -ENOMEM;
		fam->k = k;
		fam->room = room;
	}
	k = &fam->k[fam->nr++];
	*k = (struct kin){ .stake = stake, .id = id, .path = strdup(path) };
	if (!k->path)
		return -ENOMEM;
	descent(k);
	return kids_of(k);
}

/* An existing file of a FILES field that fn(file, opaque) holds for. */
static bool any_removed(const struct group_intent *in, bool (*fn)(const char *, void *),
			void *opaque)
{
	for (unsigned i = 0; i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **list = *(char ***)field_at(in, f->off);
		for (unsigned k = 0; f->kind == GROUP_FIELD_FILES &&
				     k < *(unsigned *)field_at(in, f->nr_off); k++)
			if (!access(list[k], F_OK) && fn(list[k], opaque))
				return true;
	}
	return false;
}

/* A file of layer by its descriptor (a name alone says nothing of a family). */
static bool file_of(const char *file, void *layer)
{
	return own_file(layer, file) || listed_by(layer, file);
}

static bool add_layer(const char *layer, const struct group_field *f, void *opaque)
{
	struct family *fam = opaque;
	bool stake = !f || f->lock != GROUP_LOCK_NONE ||
		     any_removed(fam->in, file_of, (void *)layer);

	fam->err = kin_add(fam, layer, stake);
	return fam->err != 0;
}

/* A layer's descriptor (not a bare extent): a file to remove that is one
 * is a layer at stake too. */
static bool is_descriptor(const char *path, void *opaque)
{
	struct family *fam = opaque;
	struct vmdk_disk *d = NULL;
	struct vmdk_info info;
	bool yes = false;

	vd_log_mute(true);
	if (!vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d)) {
		vmdk_info_get(d, &info);
		yes = info.embedded_descriptor || vmdk_nr_files(d) > 1;
		vmdk_close(d);
	}
	vd_log_mute(false);
	if (yes && !fam->err)
		fam->err = kin_add(fam, path, true);
	return fam->err != 0;
}

static bool in_ids(const struct file_id *v, unsigned n, struct file_id id)
{
	for (unsigned i = 0; i < n; i++)
		if (same_id(v[i], id))
			return true;
	return false;
}

/* b is in a's line of descent, or a's sidecar record names b as a child
 * (a parent whose child no longer names it: pull of a base after U4). */
static bool linked_to(const struct kin *a, const struct kin *b)
{
	return in_ids(a->line, a->nr_line, b->id) || in_ids(a->kids, a->nr_kids, b->id);
}

/* Mark every layer joined to k[anchor] by a path of layers of the record,
 * each next one linked to the one before (each pair weighed once). */
static int link_from(struct family *fam, unsigned anchor)
{
	unsigned *queue = malloc(fam->nr * sizeof *queue), head = 0, tail = 0;

	if (!queue)
		return -ENOMEM;
	fam->k[anchor].linked = true;
	queue[tail++] = anchor;
	while (head < tail) {
		const struct kin *j = &fam->k[queue[head++]];
		for (unsigned i = 0; i < fam->nr; i++)
			if (!fam->k[i].linked && (linked_to(&fam->k[i], j) ||
						  linked_to(j, &fam->k[i]))) {
				fam->k[i].linked = true;
				queue[tail++] = i;
			}
	}
	free(queue);
	return 0;
}

static void family_free(struct family *fam)
{
	for (unsigned i = 0; i < fam->nr; i++) {
		free(fam->k[i].path);
		free(fam->k[i].kids);
	}
	free(fam->k);
}

/* T7: the layers at stake are one family with the target (with the target
 * gone: with each other). */
static int check_family(const struct group_intent *in)
{
	struct family fam = { .in = in };
	int err;

	vd_log_mute(true);
	any_layer(in, add_layer, &fam);
	if (!fam.err)
		any_removed(in, is_descriptor, &fam);
	vd_log_mute(false);
	err = fam.err;
	if (err == -E2BIG)
		err = untrusted(in, "it names more layers than recovery weighs (T7)", NULL);
	for (unsigned i = 0; !err && i < fam.nr; i++)
		if (fam.k[i].stake) { /* the target, when it is there (the first) */
			err = link_from(&fam, i);
			break;
		}
	for (unsigned i = 0; !err && i < fam.nr; i++)
		if (fam.k[i].stake && !fam.k[i].linked)
			err = untrusted(in, "a layer of another chain: not linked by parent "
				       "links to the layer it operates on (T7)", fam.k[i].path);
	family_free(&fam);
	return err;
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
	if (!err && !in->version)
		err = check_family(in);
	for (unsigned i = 0; !err && i < in->op->nr_fields; i++)
		if (in->op->fields[i].kind == GROUP_FIELD_FILES)
			sift(in, &in->op->fields[i]);
	return err;
}
