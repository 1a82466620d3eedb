/* chain — linked-clone groups: discovery and sharing (layer 2).
 *
 * Owns: loading a group (recovering intent records first, then a recursive
 * scan of the disk's folder, its base's folder and the folders given),
 * the sidecar records of the children a layer was given
 * (LAYER CHAIN_CHILDREN_SUFFIX: one "child=PATH" line each, PATH relative
 * to the layer's folder), "who reaches this layer", refusals, and the plan
 * helpers the operations share.
 *
 * Write order of a sidecar record (any file written here):
 *  S1. the new text goes to NAME.tmp, fsynced;
 *  S2. NAME.tmp is renamed over NAME and the folder fsynced.
 * A crash leaves the old or the new record; a stale NAME.tmp is replaced.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "chain_int.h"

bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

int group_unlink(const char *path, const struct vd_io *io)
{
	int err = io->unlink(io, path);

	if (err == -ENOENT)
		return 0;
	if (err)
		vd_err("%s: cannot remove: %s", path, strerror(-err));
	return err;
}

int group_write_file(const char *path, const char *text, size_t len,
		     const struct vd_io *io)
{
	struct vd_file *f;
	char *tmp;
	int err;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	io->unlink(io, tmp);
	err = io->open(io, tmp, VD_O_RDWR | VD_O_CREATE, &f);
	if (!err) {
		err = vd_pwrite(f, text, len, 0); /* S1 */
		if (!err)
			err = vd_sync(f);
		vd_close(f);
	}
	if (!err)
		err = io->rename(io, tmp, path); /* S2 */
	if (!err)
		err = io->sync_dir(io, path);
	if (err)
		vd_err("%s: cannot write: %s", path, strerror(-err));
	free(tmp);
	return err;
}

int group_read_file(const char *path, char **out)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (!f)
		return -errno;
	buf = malloc(GROUP_MAX_RECORD + 1);
	n = buf ? fread(buf, 1, GROUP_MAX_RECORD + 1, f) : 0;
	fclose(f);
	if (!buf)
		return -ENOMEM;
	if (n > GROUP_MAX_RECORD) {
		vd_err("%s: larger than %u bytes: not a vdelta record", path,
		       GROUP_MAX_RECORD);
		free(buf);
		return -VD_EBADDATA;
	}
	buf[n] = 0;
	*out = buf;
	return 0;
}

/* ---- sidecar records ------------------------------------------------------------ */

static char *sidecar_path(const char *layer)
{
	char *p;

	return asprintf(&p, "%s%s", layer, CHAIN_CHILDREN_SUFFIX) < 0 ? NULL : p;
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

/* Recorded children of layer, as paths (resolved against its folder). */
static int record_read(const char *layer, char ***out, unsigned *nr)
{
	char *path = sidecar_path(layer), *text = NULL, *d = vd_dirname(layer);
	char *dir = d ? realpath(d, NULL) : NULL;
	char *save, *line;
	int err = path && dir ? group_read_file(path, &text) : -ENOMEM;

	*out = NULL;
	*nr = 0;
	if (err == -ENOENT)
		err = 0;
	for (line = text ? strtok_r(text, "\n", &save) : NULL; !err && line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "child=", 6))
			continue;
		char *p = record_path(dir, line + 6);
		err = p ? strv_add(out, nr, p) : -ENOMEM;
		free(p);
	}
	free(text);
	free(path);
	free(dir);
	free(d);
	return err;
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

static int record_text(const char *layer, char **paths, unsigned n, char **text)
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
			unsigned nr_added, const struct vd_io *io)
{
	char **v, *path = sidecar_path(parent), *text = NULL;
	unsigned n, k = 0;
	int err = path ? record_read(parent, &v, &n) : -ENOMEM;

	for (unsigned i = 0; !err && i < n; i++) /* drop gone and duplicates */
		if (gone && (!strcmp(v[i], gone) || same_file(v[i], gone)))
			free(v[i]);
		else
			v[k++] = v[i];
	for (unsigned i = 0; !err && i < nr_added; i++) {
		bool dup = false;
		for (unsigned j = 0; j < k; j++)
			dup |= !strcmp(v[j], added[i]) || same_file(v[j], added[i]);
		if (!dup)
			err = strv_add(&v, &k, added[i]);
	}
	if (!err && k > GROUP_MAX_LIST)
		err = -E2BIG;
	if (!err && !k) /* no child left: no record */
		err = group_unlink(path, io);
	else if (!err)
		err = record_text(parent, v, k, &text);
	if (!err && text)
		err = group_write_file(path, text, strlen(text), io);
	strv_free(v, k);
	free(text);
	free(path);
	return err;
}

/* The child is named before it exists (chain_ops.c step 3): its folder is
 * made absolute.  add: record it, else drop its record. */
int group_record_child(const char *parent, const char *child, bool add,
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
					  add, io ? io : vd_io_posix());
	free(abs);
	free(real);
	free(dir);
	return err;
}

int chain_group_record_child(const char *parent, const char *child,
			     const struct vd_io *io)
{
	return group_record_child(parent, child, true, io);
}

/* ---- load ------------------------------------------------------------------------- */

/* Recorded children of node i that the scan did not find. */
static int find_unseen(struct chain_group *g, unsigned i)
{
	const struct chain_tree *t = g->t;
	char **rec;
	unsigned n;
	int err = record_read(t->nodes[i].path, &rec, &n);

	for (unsigned r = 0; !err && r < n; r++) {
		bool found = false;
		for (unsigned c = 0; c < t->nr_nodes && !found; c++)
			found = t->nodes[c].parent == (int)i &&
				same_file(t->nodes[c].path, rec[r]);
		if (!found)
			err = strv_add(&g->unseen[i], &g->nr_unseen[i], rec[r]);
	}
	strv_free(rec, n);
	return err;
}

/* users_unseen[i]: recorded children not found at i or below it, since a
 * disk that reaches a layer reaches its parents too. */
static void count_unseen(struct chain_group *g)
{
	const struct chain_tree *t = g->t;

	for (unsigned i = 0; i < t->nr_nodes; i++) {
		int at = (int)i;
		for (unsigned steps = 0; at >= 0 && steps <= t->nr_nodes; steps++) {
			g->users_unseen[at] += g->nr_unseen[i];
			at = t->nodes[at].parent;
		}
	}
}

/* The folders to scan: disk's, its base's, then the ones given. */
static int scan_dirs(const char *disk, char *const *extra, unsigned nr_extra,
		     char ***dirs, unsigned *nr)
{
	struct chain *c = NULL;
	char *d = vd_dirname(disk);
	int err = d ? 0 : -ENOMEM;

	*dirs = NULL;
	*nr = 0;
	if (!err)
		err = strv_add(dirs, nr, d);
	free(d);
	/* a chain that does not open (an interrupted operation) still gets
	 * its own folder and the ones given scanned, so it can be recovered */
	if (!err && !chain_open(disk, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK |
				CHAIN_OPEN_DIRTY_OK | CHAIN_OPEN_IGNORE_CID, NULL, &c)) {
		d = vd_dirname(vmdk_path(chain_layer(c, chain_depth(c) - 1)));
		err = d ? strv_add(dirs, nr, d) : -ENOMEM;
		free(d);
		chain_close(c);
	}
	for (unsigned i = 0; !err && i < nr_extra; i++)
		err = strv_add(dirs, nr, extra[i]);
	return err;
}

static int group_scan(const char *disk, char *const *extra, unsigned nr_extra,
		      struct chain_tree **t)
{
	char **dirs;
	unsigned nr;
	int err = scan_dirs(disk, extra, nr_extra, &dirs, &nr);

	if (!err)
		err = chain_tree_scan(dirs, nr, t);
	strv_free(dirs, nr);
	return err;
}

/* Recover every intent record found; the scan is redone when one was. */
static int recover_all(const char *disk, char *const *extra, unsigned nr_extra,
		       const struct vd_io *io, struct chain_tree **t)
{
	int err = group_scan(disk, extra, nr_extra, t);

	for (unsigned i = 0; !err && i < (*t)->nr_intents; i++)
		err = chain_group_recover((*t)->intents[i], io);
	if (!err && (*t)->nr_intents) {
		chain_tree_free(*t);
		*t = NULL;
		err = group_scan(disk, extra, nr_extra, t);
	}
	return err;
}

int chain_group_load(const char *disk, char *const *extra, unsigned nr_extra,
		     const struct vd_io *io, struct chain_group **out)
{
	struct chain_group *g = calloc(1, sizeof *g);
	char *abs = realpath(disk, NULL);
	int err = g ? 0 : -ENOMEM;

	if (!abs) {
		err = -errno;
		vd_err("%s: %s", disk, strerror(errno));
	}
	if (!err)
		err = recover_all(abs, extra, nr_extra, io ? io : vd_io_posix(), &g->t);
	if (!err) {
		unsigned n = g->t->nr_nodes ? g->t->nr_nodes : 1;
		g->unseen = calloc(n, sizeof *g->unseen);
		g->nr_unseen = calloc(n, sizeof *g->nr_unseen);
		g->users_unseen = calloc(n, sizeof *g->users_unseen);
		err = g->unseen && g->nr_unseen && g->users_unseen ? 0 : -ENOMEM;
	}
	for (unsigned i = 0; !err && i < g->t->nr_nodes; i++)
		err = find_unseen(g, i);
	if (!err)
		count_unseen(g);
	free(abs);
	if (err) {
		chain_group_free(g);
		return err;
	}
	*out = g;
	return 0;
}

void chain_group_free(struct chain_group *g)
{
	if (!g)
		return;
	for (unsigned i = 0; g->t && g->unseen && i < g->t->nr_nodes; i++)
		strv_free(g->unseen[i], g->nr_unseen[i]);
	free(g->unseen);
	free(g->nr_unseen);
	free(g->users_unseen);
	chain_tree_free(g->t);
	free(g);
}

const struct chain_tree *chain_group_tree(const struct chain_group *g)
{
	return g->t;
}

int chain_group_node(const struct chain_group *g, const char *path)
{
	for (unsigned i = 0; i < g->t->nr_nodes; i++)
		if (same_file(g->t->nodes[i].path, path))
			return (int)i;
	return -ENOENT;
}

unsigned chain_group_nr_users(const struct chain_group *g, int node)
{
	return g->t->nodes[node].reach + g->users_unseen[node];
}

bool chain_group_shared(const struct chain_group *g, int node)
{
	return chain_group_nr_users(g, node) > 1;
}

/* Does the chain of leaf reach node? */
static bool reaches(const struct chain_tree *t, unsigned leaf, int node)
{
	int at = (int)leaf;

	for (unsigned steps = 0; at >= 0 && steps <= t->nr_nodes; steps++) {
		if (at == node)
			return true;
		at = t->nodes[at].parent;
	}
	return false;
}

int group_refuse_shared(const struct chain_group *g, int node, const char *what)
{
	const struct chain_tree *t = g->t;
	char *list = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&list, &len);
	const char *sep = "";

	if (!m)
		return -ENOMEM;
	for (unsigned i = 0; i < t->nr_nodes; i++)
		if (!t->nodes[i].nr_children && reaches(t, i, node)) {
			fprintf(m, "%s%s", sep, t->nodes[i].path);
			sep = ", ";
		}
	for (unsigned i = 0; i < t->nr_nodes; i++)
		for (unsigned k = 0; reaches(t, i, node) && k < g->nr_unseen[i]; k++) {
			fprintf(m, "%s%s (recorded child of %s, not found)", sep,
				g->unseen[i][k], t->nodes[i].path);
			sep = ", ";
		}
	fclose(m);
	vd_err("%s: shared by %u disks (%s): %s refused, nothing changed",
	       t->nodes[node].path, chain_group_nr_users(g, node), list ? list : "",
	       what);
	free(list);
	return -EBUSY;
}

/* ---- what the merges share --------------------------------------------------------- */

int group_merge_node(const struct chain_group *g, const char *layer, const char *what,
		     int *l)
{
	const struct chain_tree *t = g->t;
	int p;

	*l = chain_group_node(g, layer);
	if (*l < 0) {
		vd_err("%s: not found among the disks scanned", layer);
		return -ENOENT;
	}
	p = t->nodes[*l].parent;
	if (p < 0) {
		vd_err("%s: has no parent: %s refused", layer, what);
		return -EINVAL;
	}
	if (t->nodes[*l].flags & (CHAIN_TREE_BROKEN | CHAIN_TREE_MISSING |
				  CHAIN_TREE_CAPACITY | CHAIN_TREE_UNREADABLE)) {
		vd_err("%s: its link to its parent is broken: %s refused", layer, what);
		return -ESTALE;
	}
	return p;
}

int group_add_layer_files(struct group_intent *in, const char *layer)
{
	char **files, *side;
	unsigned nr;
	int err = layer_files(layer, &files, &nr);

	for (unsigned i = 0; !err && i < nr; i++)
		err = strv_add(&in->files, &in->nr_files, files[i]);
	strv_free(files, nr);
	if (!err && asprintf(&side, "%s%s", layer, CHAIN_CHILDREN_SUFFIX) >= 0) {
		err = strv_add(&in->files, &in->nr_files, side);
		free(side);
	}
	return err;
}

int group_remove_files(const struct group_intent *in, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = 0; !err && i < in->nr_files; i++)
		err = group_unlink(in->files[i], io);
	if (!err && in->nr_files)
		err = io->sync_dir(io, in->files[0]);
	return err;
}

/* ---- plans ------------------------------------------------------------------------- */

int plan_add(struct chain_plan *p, enum chain_step_kind kind, const char *path,
	     uint64_t bytes)
{
	struct chain_plan_step *s = reallocarray(p->steps, p->nr_steps + 1, sizeof *s);

	if (!s)
		return -ENOMEM;
	p->steps = s;
	s[p->nr_steps] = (struct chain_plan_step){ kind, strdup(path), bytes };
	return s[p->nr_steps++].path ? 0 : -ENOMEM;
}

int plan_space(struct chain_plan *p, const char *path)
{
	struct statvfs sv;
	char *dir = vd_dirname(path);
	int err = dir && !statvfs(dir, &sv) ? 0 : dir ? -errno : -ENOMEM;

	if (!err)
		p->space_avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (!err && p->space_needed > p->space_avail) {
		vd_err("%s: %llu bytes needed, %llu free: %s refused, nothing changed",
		       dir, (unsigned long long)p->space_needed,
		       (unsigned long long)p->space_avail, p->op);
		err = -ENOSPC;
	}
	free(dir);
	return err;
}

void chain_plan_free(struct chain_plan *p)
{
	for (unsigned i = 0; i < p->nr_steps; i++)
		free(p->steps[i].path);
	free(p->steps);
	free(p->result);
	p->steps = NULL;
	p->result = NULL;
	p->nr_steps = 0;
}

const char *chain_step_name(enum chain_step_kind k)
{
	static const char *const names[] = {
		"write", "create", "remove", "repoint", "unfreeze", "orphan", "keep",
		"clean", "compact", "pull",
	};

	return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}
