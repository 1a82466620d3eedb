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

/* Plain names only: no empty, "." or ".." component. */
static bool plain_names(const char *rel)
{
	for (const char *c = rel; *c;) {
		size_t n = strcspn(c, "/");
		if (!n || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += n + (c[n] == '/');
		if (c[-1] == '/' && !*c)
			return false; /* a trailing slash */
	}
	return *rel != 0;
}

/* The path rel names from the real folder dir.  What put_relative writes
 * ("../" steps, then plain names) is joined without a system call — the
 * steps go up from a folder without symlinks, so the join is canonical up
 * to symlinks below it, which stat follows — anything else through
 * record_path. */
static char *entry_path(const char *dir, const char *rel)
{
	size_t keep = strlen(dir);
	const char *p = rel;
	char *out;

	while (!strncmp(p, "../", 3) || !strncmp(p, "./", 2)) {
		for (; p[1] == '.' && keep > 1 && dir[keep - 1] != '/'; keep--)
			;
		keep -= p[1] == '.' && keep > 1;
		p += p[1] == '.' ? 3 : 2;
	}
	if (rel[0] == '/' || dir[0] != '/' || !plain_names(p))
		return record_path(dir, rel);
	keep = keep ? keep : 1;
	if (asprintf(&out, "%.*s%s%s", (int)keep, dir, keep == 1 ? "" : "/", p) < 0)
		return NULL;
	return out;
}

#define RECORD_UNKNOWN "unknown=1"

/* A record read: its lines and the paths they name. */
struct record {
	char *text;  /* the file, each line cut at its end */
	char **rel;  /* into text: the child= values as written */
	char **abs;  /* the paths they name (entry_path) */
	unsigned nr;
	enum group_record_state state;
};

static void record_free(struct record *r)
{
	vd_strv_free(r->abs, r->nr);
	free(r->rel);
	free(r->text);
	*r = (struct record){0};
}

static int record_add(struct record *r, char *rel, const char *dir)
{
	char **a = r->nr >= VD_STRV_MAX ? NULL : reallocarray(r->abs, r->nr + 1, sizeof *a);
	char **v = a ? reallocarray(r->rel, r->nr + 1, sizeof *v) : NULL;

	if (a)
		r->abs = a;
	if (!v)
		return r->nr >= VD_STRV_MAX ? -E2BIG : -ENOMEM;
	r->rel = v;
	if (!(r->abs[r->nr] = entry_path(dir, rel)))
		return -ENOMEM;
	r->rel[r->nr++] = rel;
	return 0;
}

/* The record of layer (none: empty); dir: the layer's real folder. */
static int record_load(const char *layer, const char *dir, struct record *r)
{
	char *path = sidecar_path(layer), *save, *line;
	int err = path ? vd_read_small(path, GROUP_MAX_CHILDREN, &r->text) : -ENOMEM;

	if (err == -EFBIG)
		vd_err("%s: larger than %u bytes: not a record vdelta wrote", path,
		       GROUP_MAX_CHILDREN);
	r->state = err == -ENOENT ? GROUP_RECORD_NONE : GROUP_RECORD_WHOLE;
	if (err) {
		free(path);
		return err == -ENOENT ? 0 : err;
	}
	for (line = strtok_r(r->text, "\n", &save); !err && line;
	     line = strtok_r(NULL, "\n", &save))
		if (!strncmp(line, "child=", 6))
			err = record_add(r, line + 6, dir);
		else if (!strcmp(line, RECORD_UNKNOWN))
			r->state = GROUP_RECORD_PART;
	if (err == -E2BIG)
		vd_err("%s: more than %u children recorded", path, VD_STRV_MAX);
	free(path);
	if (err)
		record_free(r);
	return err;
}

/* The real folder of a layer (NULL: reported by the caller as -errno). */
static char *real_dir(const char *layer)
{
	char *d = vd_dirname(layer), *real = d ? realpath(d, NULL) : NULL;

	free(d);
	return real;
}

int group_record_read(const char *layer, char ***out, unsigned *nr)
{
	char *dir = real_dir(layer);
	struct record r = {0};
	int err = dir ? record_load(layer, dir, &r) : -ENOMEM;

	*out = err ? NULL : r.abs;
	*nr = err ? 0 : r.nr;
	r.abs = NULL;
	r.nr = 0;
	record_free(&r);
	free(dir);
	return err;
}

enum group_record_state group_record_state(const char *layer)
{
	char *dir = real_dir(layer);
	struct record r = {0};
	enum group_record_state state = GROUP_RECORD_WHOLE; /* unreadable: not a reason to refuse */

	if (dir && !record_load(layer, dir, &r))
		state = r.state;
	record_free(&r);
	free(dir);
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

/* The record's text: its state's line (GROUP_RECORD_PART: RECORD_UNKNOWN),
 * the kept lines as they were written (keep[i]), then the added paths
 * (absolute, real folders) relative to dir. */
static int record_text(const struct record *r, const bool *keep, const char *dir,
		       char *const *added, const bool *add, unsigned nr_added, char **text)
{
	char *t = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&t, &len);

	if (!m)
		return -ENOMEM;
	fprintf(m, "# vdelta: the children this layer was given (one line each)\n");
	if (r->state == GROUP_RECORD_PART)
		fprintf(m, "# and it had others before, never recorded\n" RECORD_UNKNOWN "\n");
	for (unsigned i = 0; i < r->nr; i++)
		if (keep[i])
			fprintf(m, "child=%s\n", r->rel[i]);
	for (unsigned i = 0; i < nr_added; i++)
		if (add[i]) {
			fputs("child=", m);
			put_relative(m, dir, added[i]);
			fputc('\n', m);
		}
	fclose(m);
	*text = t;
	if (t && len > GROUP_MAX_CHILDREN) {
		free(t);
		*text = NULL;
		return -E2BIG;
	}
	return t ? 0 : -ENOMEM;
}

/* path with its folder made canonical (a file that does not exist yet, or
 * any more, still gets its canonical name); an absolute path whose folder
 * is gone as it is; NULL for a relative one. */
static char *canonical(const char *path)
{
	char *dir = real_dir(path);
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	char *abs = dir ? vd_path_join(dir, base) : path[0] == '/' ? strdup(path) : NULL;

	free(dir);
	return abs;
}

/* keep[i]: line i does not name gone.  By the canonical name first (one
 * string compare a line: a record vdelta wrote names its children so);
 * when no line has it, by identity and canonical folders, as a record
 * written by hand may name it. */
static int drop_gone(const struct record *r, const char *dir, const char *gone, bool *keep)
{
	char *g = !gone ? NULL : canonical(gone) ? : strdup(gone);
	unsigned dropped = 0;

	if (gone && !g)
		return -ENOMEM;
	for (unsigned i = 0; i < r->nr; i++) {
		keep[i] = !g || strcmp(r->abs[i], g);
		dropped += !keep[i];
	}
	for (unsigned i = 0; g && !dropped && i < r->nr; i++) {
		char *p = record_path(dir, r->rel[i]);
		keep[i] = p && strcmp(p, g) && !vd_same_file(p, gone);
		free(p);
	}
	free(g);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* add[i]: added[i] (canonical) is neither among the kept lines nor an
 * earlier added[j].  Sorted, so a record of thousands of children with
 * thousands added (adopt) costs n log n compares. */
static int new_children(const struct record *r, const bool *keep, char *const *added,
			unsigned nr_added, bool *add)
{
	const char **have = malloc((r->nr + nr_added + 1) * sizeof *have), **mine;
	unsigned n = 0;

	if (!have)
		return -ENOMEM;
	for (unsigned i = 0; i < r->nr; i++)
		if (keep[i])
			have[n++] = r->abs[i];
	qsort(have, n, sizeof *have, cmp_str);
	mine = have + n; /* the added ones, sorted; the array keeps their order */
	for (unsigned i = 0; i < nr_added; i++)
		mine[i] = added[i];
	qsort(mine, nr_added, sizeof *mine, cmp_str); /* stable enough: equal are equal */
	for (unsigned i = 0; i < nr_added; i++) {
		const char **at = bsearch(&added[i], mine, nr_added, sizeof *mine, cmp_str);
		add[i] = !bsearch(&added[i], have, n, sizeof *have, cmp_str);
		while (at > mine && !strcmp(at[-1], added[i]))
			at--; /* the first equal one */
		if (add[i] && *at != added[i]) /* taken by an earlier equal name? */
			for (unsigned j = 0; j < i && add[i]; j++)
				add[i] = strcmp(added[j], added[i]) != 0;
	}
	free(have);
	return 0;
}

/* text NULL: no record (no child left, none unknown). */
static int write_record(const char *parent, const char *text, const struct vd_io *io)
{
	char *path = sidecar_path(parent);
	int err = !path ? -ENOMEM : !text ? group_layer_unlink(path, io)
				  : vd_write_durable(io, path, text, strlen(text));

	if (err && path && text)
		vd_err("%s: cannot write: %s", path, strerror(-err));
	free(path);
	return err;
}

/* The record of parent with gone out and added (canonical) in; unless
 * GROUP_RECORD_COMPLETE, a layer without a record (it had children vdelta
 * may not have given it) or with a partial one gets a partial one. */
static int update(const char *parent, const char *dir, const char *gone,
		  char *const *added, unsigned nr_added, unsigned flags,
		  const struct vd_io *io)
{
	struct record r = {0};
	bool *keep = NULL, *add = NULL, part, remove;
	char *text = NULL;
	unsigned n = 0;
	int err = record_load(parent, dir, &r);

	part = !err && !(flags & GROUP_RECORD_COMPLETE) && r.state != GROUP_RECORD_WHOLE;

	if (!err && (!(keep = calloc(r.nr + 1, sizeof *keep)) ||
		     !(add = calloc(nr_added + 1, sizeof *add))))
		err = -ENOMEM;
	if (!err)
		err = drop_gone(&r, dir, gone, keep);
	if (!err)
		err = new_children(&r, keep, added, nr_added, add);
	for (unsigned i = 0; !err && i < r.nr + nr_added; i++)
		n += i < r.nr ? keep[i] : add[i - r.nr];
	if (!err && n > VD_STRV_MAX) {
		vd_err("%s: more than %u children to record", parent, VD_STRV_MAX);
		err = -E2BIG;
	}
	remove = !n && (r.state == GROUP_RECORD_NONE || !part);
	r.state = part ? GROUP_RECORD_PART : GROUP_RECORD_WHOLE; /* the new record's */
	if (!err && !remove && (err = record_text(&r, keep, dir, added, add, nr_added, &text)))
		vd_err("%s: a record of %u children would not fit in %u bytes: nothing "
		       "changed", parent, n, GROUP_MAX_CHILDREN);
	if (!err)
		err = write_record(parent, remove ? NULL : text, io);
	record_free(&r);
	free(keep);
	free(add);
	free(text);
	return err;
}

int group_record_update(const char *parent, const char *gone, char *const *added,
			unsigned nr_added, unsigned flags, const struct vd_io *io)
{
	char *dir = real_dir(parent), **abs = calloc(nr_added + 1, sizeof *abs);
	int err = dir && abs ? 0 : dir ? -ENOMEM : -errno;

	for (unsigned i = 0; !err && i < nr_added; i++)
		if (!(abs[i] = canonical(added[i])))
			err = -ENOENT;
	if (err) /* reported: the child's folder does not resolve */
		vd_err("%s: cannot record its children (%s): %s", parent,
		       err == -ENOENT ? "a folder not found" : "out of memory", strerror(-err));
	else
		err = update(parent, dir, gone, abs, nr_added, flags, io);
	vd_strv_free(abs, nr_added);
	free(dir);
	return err;
}

/* The child is named before it exists (group_snapshot.c step 3): its
 * folder is made canonical (group_record_update).  add: record it, else
 * drop its record. */
static int record_set(const char *parent, const char *child, bool add, unsigned flags,
		      const struct vd_io *io)
{
	char *c = strdup(child);
	int err = c ? group_record_update(parent, add ? NULL : c, add ? &c : NULL, add, flags,
					  io ? io : vd_io_posix())
		    : -ENOMEM;

	free(c);
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

/* Children of node i found by the scan that its record does not list
 * (listed: scratch flags of every node, false before and after). */
static int unrecorded(const struct group *g, unsigned i, bool *listed, char ***out,
		      unsigned *nr)
{
	const struct group_tree *t = g->t;
	char **rec;
	unsigned n;
	int err = group_record_read(t->nodes[i].path, &rec, &n), c;

	for (unsigned r = 0; !err && r < n; r++)
		if ((c = group_tree_find(t, rec[r])) >= 0 && t->nodes[c].parent == (int)i)
			listed[c] = true;
	for (c = t->nodes[i].first_child; c >= 0; c = t->nodes[c].next_sibling) {
		if (!err && !listed[c] && !(t->nodes[c].flags & GROUP_TREE_GONE))
			err = vd_strv_add(out, nr, t->nodes[c].path);
		listed[c] = false;
	}
	vd_strv_free(rec, n);
	return err;
}

int group_adopt(struct group *g, unsigned flags, const struct vd_io *io,
		struct group_plan *plan)
{
	const struct group_tree *t = g->t;
	bool *listed;
	int err;

	io = io ? io : vd_io_posix();
	plan->op = "adopt";
	if (t->nr_unscanned) { /* a record it writes says it is the whole list */
		vd_err("%s: not readable, so a clone there would not be recorded: adopt "
		       "refused, nothing written (make it readable, or name folders "
		       "without it)", t->unscanned[0]);
		return -EACCES;
	}
	listed = calloc(t->nr_nodes + 1, sizeof *listed);
	err = listed ? 0 : -ENOMEM;
	for (unsigned i = 0; !err && i < t->nr_nodes; i++) {
		char **add = NULL;
		unsigned nr = 0;
		bool part = t->nodes[i].nr_children &&
			    group_record_state(t->nodes[i].path) == GROUP_RECORD_PART;
		err = t->nodes[i].nr_children ? unrecorded(g, i, listed, &add, &nr) : 0;
		if (!err && (nr || part))
			err = group_plan_add(plan, GROUP_STEP_RECORD, t->nodes[i].path, nr);
		if (!err && (nr || part) && !(flags & GROUP_DRY_RUN))
			err = group_record_update(t->nodes[i].path, NULL, add, nr,
						  GROUP_RECORD_COMPLETE, io);
		vd_strv_free(add, nr);
	}
	free(listed);
	return err;
}
