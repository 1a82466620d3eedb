/* group — linked-clone groups: discovery and sharing (layer 3).
 *
 * Owns: a group as the scan of some folders sees it (the disk's folder,
 * its base's folder and the folders given, recursively: group_tree.c),
 * with the children each layer recorded (group_record.c) and did not turn
 * up; "who reaches this layer", the refusals that name them, and what the
 * merges ask of a layer and its parent.  Loading with recovery first is
 * the front door, group_load (group_recover.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "group_int.h"

int group_unlink(const char *path, const struct vd_io *io)
{
	int err = io->unlink(io, path);

	if (err == -ENOENT)
		return 0;
	if (err)
		vd_err("%s: cannot remove: %s", path, strerror(-err));
	return err;
}

/* ---- scan ---------------------------------------------------------------------------- */

/* Recorded children of node i that the scan did not find. */
static int find_unseen(struct group *g, unsigned i)
{
	const struct group_tree *t = g->t;
	char **rec;
	unsigned n;
	int err = group_record_read(t->nodes[i].path, &rec, &n);

	for (unsigned r = 0; !err && r < n; r++) {
		bool found = false;
		for (unsigned c = 0; c < t->nr_nodes && !found; c++)
			found = t->nodes[c].parent == (int)i &&
				vd_same_file(t->nodes[c].path, rec[r]);
		if (!found)
			err = vd_strv_add(&g->unseen[i], &g->nr_unseen[i], rec[r]);
	}
	vd_strv_free(rec, n);
	return err;
}

/* users_unseen[i]: recorded children not found at i or below it, since a
 * disk that reaches a layer reaches its parents too. */
static void count_unseen(struct group *g)
{
	const struct group_tree *t = g->t;

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
	char *d = disk ? vd_dirname(disk) : NULL;
	int err = d || !disk ? 0 : -ENOMEM;

	*dirs = NULL;
	*nr = 0;
	if (!err && d)
		err = vd_strv_add(dirs, nr, d);
	free(d);
	/* a chain that does not open (an interrupted operation) still gets
	 * its own folder and the ones given scanned, so it can be recovered */
	if (!err && disk && !chain_open(disk, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK |
					CHAIN_OPEN_DIRTY_OK | CHAIN_OPEN_IGNORE_CID, NULL, &c)) {
		d = vd_dirname(vmdk_path(chain_layer(c, chain_depth(c) - 1)));
		err = d ? vd_strv_add(dirs, nr, d) : -ENOMEM;
		free(d);
		chain_close(c);
	}
	for (unsigned i = 0; !err && i < nr_extra; i++)
		err = vd_strv_add(dirs, nr, extra[i]);
	return err;
}

static int group_alloc(struct group *g)
{
	unsigned n = g->t->nr_nodes ? g->t->nr_nodes : 1;

	g->unseen = calloc(n, sizeof *g->unseen);
	g->nr_unseen = calloc(n, sizeof *g->nr_unseen);
	g->users_unseen = calloc(n, sizeof *g->users_unseen);
	return g->unseen && g->nr_unseen && g->users_unseen ? 0 : -ENOMEM;
}

int group_scan(const char *disk, char *const *extra, unsigned nr_extra,
	       struct group **out)
{
	struct group *g = calloc(1, sizeof *g);
	char *abs = disk ? realpath(disk, NULL) : NULL, **dirs = NULL;
	unsigned nr = 0;
	int err = g ? 0 : -ENOMEM;

	if (!err && disk && !abs) {
		err = -errno;
		vd_err("%s: %s", disk, strerror(errno));
	}
	if (!err)
		err = scan_dirs(abs, extra, nr_extra, &dirs, &nr);
	if (!err)
		err = group_tree_scan(dirs, nr, &g->t);
	if (!err)
		err = group_alloc(g);
	for (unsigned i = 0; !err && i < g->t->nr_nodes; i++)
		err = find_unseen(g, i);
	if (!err)
		count_unseen(g);
	vd_strv_free(dirs, nr);
	free(abs);
	if (err) {
		group_free(g);
		return err;
	}
	*out = g;
	return 0;
}

void group_free(struct group *g)
{
	if (!g)
		return;
	for (unsigned i = 0; g->t && g->unseen && i < g->t->nr_nodes; i++)
		vd_strv_free(g->unseen[i], g->nr_unseen[i]);
	free(g->unseen);
	free(g->nr_unseen);
	free(g->users_unseen);
	group_tree_free(g->t);
	free(g);
}

/* ---- sharing -------------------------------------------------------------------------- */

const struct group_tree *group_nodes(const struct group *g)
{
	return g->t;
}

int group_node(const struct group *g, const char *path)
{
	for (unsigned i = 0; i < g->t->nr_nodes; i++)
		if (!(g->t->nodes[i].flags & GROUP_TREE_GONE) &&
		    vd_same_file(g->t->nodes[i].path, path))
			return (int)i;
	return -ENOENT;
}

unsigned group_nr_users(const struct group *g, int node)
{
	return g->t->nodes[node].reach + g->users_unseen[node];
}

bool group_shared(const struct group *g, int node)
{
	return group_nr_users(g, node) > 1;
}

/* Does the chain of leaf reach node? */
static bool reaches(const struct group_tree *t, unsigned leaf, int node)
{
	int at = (int)leaf;

	for (unsigned steps = 0; at >= 0 && steps <= t->nr_nodes; steps++) {
		if (at == node)
			return true;
		at = t->nodes[at].parent;
	}
	return false;
}

int group_refuse_shared(const struct group *g, int node, const char *what)
{
	const struct group_tree *t = g->t;
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
	       t->nodes[node].path, group_nr_users(g, node), list ? list : "", what);
	free(list);
	return -EBUSY;
}

int group_disk_node(const struct group *g, const char *disk, const char *what)
{
	int d = group_node(g, disk);

	if (d < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	if (g->t->nodes[d].nr_children) {
		vd_err("%s: has children (it is a snapshot, not a disk): %s refused", disk, what);
		return -EBUSY;
	}
	return group_shared(g, d) ? group_refuse_shared(g, d, what) : d;
}

/* ---- what the merges share ------------------------------------------------------------ */

int group_merge_node(const struct group *g, const char *layer, const char *what, int *l)
{
	const struct group_tree *t = g->t;
	int p;

	*l = group_node(g, layer);
	if (*l < 0) {
		vd_err("%s: not found among the disks scanned", layer);
		return -ENOENT;
	}
	p = t->nodes[*l].parent;
	if (p < 0) {
		vd_err("%s: has no parent: %s refused", layer, what);
		return -EINVAL;
	}
	if (t->nodes[*l].flags & (GROUP_TREE_BROKEN | GROUP_TREE_MISSING |
				  GROUP_TREE_CAPACITY | GROUP_TREE_UNREADABLE)) {
		vd_err("%s: its link to its parent is broken: %s refused", layer, what);
		return -ESTALE;
	}
	return p;
}
