/* group — the sidecar records of the children a layer was given
 * (layer 3).
 *
 * Owns: LAYER GROUP_CHILDREN_SUFFIX, written by whatever gives a layer a
 * child (snapshot, create --parent, clone --linked / --from-current,
 * relocate, commit): one "child=PATH" line each, PATH relative to the
 * layer's folder, so a folder moved as a whole keeps its records.  A record
 * is a lower bound: a child another tool made is not in it.  A record made
 * for a layer that had children already (an unrecorded child replaced or
 * joined: a pull, a relocation, a clone from a disk's current state) says
 * so, "unknown=1", and the layer's children stay unknown until `vdelta
 * adopt` writes the whole list (GROUP_RECORD_COMPLETE: adopt, a layer just
 * made, a writable top given its first child).
 *
 * Write order of a record: common.h W1-W2 (temp, fsync, rename, folder
 * fsync); a crash leaves the old or the new record.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "group_int.h"

static char *sidecar_path(const char *layer)
{
	char *p;

	return asprintf(&p, "%s%s", layer, GROUP_CHILDREN_SUFFIX) < 0 ? NULL : p;
}

/* A recorded child's path: its folder made canonical when it exists, so a
 * child that is gone still matches its canonical name. */
static char *record_path(const char *dir, const char *rel)
{
	char *p = vd_path_join(dir, rel), *d = p ? vd_dirname(p) : NULL;
	char *real = d ? realpath(d, NULL) : NULL;
	const char *base = p && strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
	char *out = real ? vd_path_join(real, base) : NULL;

	free(real);
	free(d);
	if (!out)
		return p;
	free(p);
	return out;
}

#define RECORD_UNKNOWN "unknown=1"

/* The record's children (paths resolved against its folder) and state. */
static int record_load(const char *layer, char ***out, unsigned *nr,
		       enum group_record_state *state)
{
	char *path = sidecar_path(layer), *text = NULL, *d = vd_dirname(layer);
	char *dir = d ? realpath(d, NULL) : NULL;
	char *save, *line;
	int err = path && dir ? vd_read_small(path, GROUP_MAX_RECORD, &text) : -ENOMEM;

	*out = NULL;
	*nr = 0;
	*state = err == -ENOENT ? GROUP_RECORD_NONE : GROUP_RECORD_WHOLE;
	if (err == -ENOENT)
		err = 0;
	for (line = text ? strtok_r(text, "\n", &save) : NULL; !err && line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, RECORD_UNKNOWN))
			*state = GROUP_RECORD_PART;
		if (strncmp(line, "child=", 6))
			continue;
		char *p = record_path(dir, line + 6);
		err = p ? vd_strv_add(out, nr, p) : -ENOMEM;
		free(p);
	}
	if (err == -E2BIG)
		vd_err("%s: more than %u children recorded", path, VD_STRV_MAX);
	free(text);
	free(path);
	free(dir);
	free(d);
	return err;
}

int group_record_read(const char *layer, char ***out, unsigned *nr)
{
	enum group_record_state state;

	return record_load(layer, out, nr, &state);
}

enum group_record_state group_record_state(const char *layer)
{
	enum group_record_state state;
	char **v;
	unsigned n;

	if (record_load(layer, &v, &n, &state))
		return GROUP_RECORD_WHOLE; /* unreadable: not a reason to refuse */
	vd_strv_free(v, n);
	return state;
}

/* Write path (absolute, real folders) relative to the real folder dir:
 * "../" for each component of dir below their common prefix. */
static void put_relative(FILE *m, const char *dir, const char *path)
{
	size_t i = 0, base;

	while (dir[i] && dir[i] == path[i])
		i++;
	if (!dir[i] && path[i] == '/') { /* below dir */
		fputs(path + i + 1, m);
		return;
	}
	for (base = i; base > 0 && dir[base] != '/'; base--)
		;
	for (const char *p = dir + base; *p; p++)
		if (*p == '/')
			fputs("../", m);
	fputs(path + base + 1, m);
}

static int record_text(const char *layer, char **paths, unsigned n, bool part, char **text)
{
	char *dir = vd_dirname(layer), *real = dir ? realpath(dir, NULL) : NULL;
	char *t = NULL;
	size_t len = 0;
	FILE *m = real ? open_memstream(&t, &len) : NULL;

	free(dir);
	if (!m) {
		free(real);
		return -ENOMEM;
	}
	fprintf(m, "# vdelta: the children this layer was given (one line each)\n");
	if (part)
		fprintf(m, "# and it had others before, never recorded\n" RECORD_UNKNOWN "\n");
	for (unsigned i = 0; i < n; i++)
		if (paths[i][0] == '/') {
			fputs("child=", m);
			put_relative(m, real, paths[i]);
			fputc('\n', m);
		}
	fclose(m);
	free(real);
	*text = t;
	return t ? 0 : -ENOMEM;
}

int group_record_update(const char *parent, const char *gone, char *const *added,
			unsigned nr_added, unsigned flags, const struct vd_io *io)
{
	char **v, *path = sidecar_path(parent), *text = NULL;
	unsigned n, k = 0;
	enum group_record_state state;
	int err = path ? record_load(parent, &v, &n, &state) : -ENOMEM;
	bool part = !(flags & GROUP_RECORD_COMPLETE) &&
		    (state == GROUP_RECORD_PART || (state == GROUP_RECORD_NONE && !err));

	for (unsigned i = 0; !err && i < n; i++) /* drop gone and duplicates */
		if (gone && (!strcmp(v[i], gone) || vd_same_file(v[i], gone)))
			free(v[i]);
		else
			v[k++] = v[i];
	for (unsigned i = 0; !err && i < nr_added; i++) {
		bool dup = false;
		for (unsigned j = 0; j < k; j++)
			dup |= !strcmp(v[j], added[i]) || vd_same_file(v[j], added[i]);
		if (!dup)
			err = vd_strv_add(&v, &k, added[i]);
	}
	if (!err && k > VD_STRV_MAX) {
		vd_err("%s: more than %u children to record", path, VD_STRV_MAX);
		err = -E2BIG;
	}
	if (!err && !k && (state == GROUP_RECORD_NONE || !part)) /* no child left: no record */
		err = group_layer_unlink(path, io);
	else if (!err)
		err = record_text(parent, v, k, part, &text);
	if (!err && text && (err = vd_write_durable(io, path, text, strlen(text))))
		vd_err("%s: cannot write: %s", path, strerror(-err));
	vd_strv_free(v, k);
	free(text);
	free(path);
	return err;
}

/* The child is named before it exists (group_snapshot.c step 3): its
 * folder is made absolute.  add: record it, else drop its record. */
static int record_set(const char *parent, const char *child, bool add, unsigned flags,
		      const struct vd_io *io)
{
	char *dir = vd_dirname(child), *real = dir ? realpath(dir, NULL) : NULL, *abs;
	const char *base = strrchr(child, '/') ? strrchr(child, '/') + 1 : child;
	int err = real ? 0 : dir ? -errno : -ENOMEM;

	abs = real ? vd_path_join(real, base) : NULL;
	if (!err && !abs)
		err = -ENOMEM;
	if (!err)
		err = group_record_update(parent, add ? NULL : abs, add ? &abs : NULL,
					  add, flags, io ? io : vd_io_posix());
	free(abs);
	free(real);
	free(dir);
	return err;
}

int group_record_child(const char *parent, const char *child, unsigned flags,
		       const struct vd_io *io)
{
	return record_set(parent, child, true, flags, io);
}

int group_record_drop(const char *parent, const char *child, const struct vd_io *io)
{
	return record_set(parent, child, false, 0, io);
}

/* ---- adopt -------------------------------------------------------------------------------- */

/* Children of node i found by the scan that its record does not list. */
static int unrecorded(const struct group *g, unsigned i, char ***out, unsigned *nr)
{
	const struct group_tree *t = g->t;
	char **rec;
	unsigned n;
	int err = group_record_read(t->nodes[i].path, &rec, &n);

	for (unsigned c = 0; !err && c < t->nr_nodes; c++) {
		bool listed = false;
		if (t->nodes[c].parent != (int)i || (t->nodes[c].flags & GROUP_TREE_GONE))
			continue;
		for (unsigned r = 0; r < n && !listed; r++)
			listed = vd_same_file(rec[r], t->nodes[c].path);
		if (!listed)
			err = vd_strv_add(out, nr, t->nodes[c].path);
	}
	vd_strv_free(rec, n);
	return err;
}

int group_adopt(struct group *g, unsigned flags, const struct vd_io *io,
		struct group_plan *plan)
{
	const struct group_tree *t = g->t;
	int err = 0;

	io = io ? io : vd_io_posix();
	plan->op = "adopt";
	if (t->nr_unscanned) { /* a record it writes says it is the whole list */
		vd_err("%s: not readable, so a clone there would not be recorded: adopt "
		       "refused, nothing written (make it readable, or name folders "
		       "without it)", t->unscanned[0]);
		return -EACCES;
	}
	for (unsigned i = 0; !err && i < t->nr_nodes; i++) {
		char **add = NULL;
		unsigned nr = 0;
		bool part = t->nodes[i].nr_children &&
			    group_record_state(t->nodes[i].path) == GROUP_RECORD_PART;
		err = t->nodes[i].nr_children ? unrecorded(g, i, &add, &nr) : 0;
		if (!err && (nr || part))
			err = group_plan_add(plan, GROUP_STEP_RECORD, t->nodes[i].path, nr);
		if (!err && (nr || part) && !(flags & GROUP_DRY_RUN))
			err = group_record_update(t->nodes[i].path, NULL, add, nr,
						  GROUP_RECORD_COMPLETE, io);
		vd_strv_free(add, nr);
	}
	return err;
}
