/* chain — `promote --unlink` and `consolidate` (= `promote` without
 * --unlink) (layer 2).
 *
 * Owns: choosing the layers: for --unlink, the lowest layer X of the disk
 * that no other disk reaches, which is rewritten flattened (its own data
 * plus everything it reads from the shared layers below, same CID: the
 * disk's upper layers stay valid) so the disk reaches no shared layer;
 * for consolidate, every layer of the disk from its top down to the first
 * shared layer that is not kept, each merged with its (unshared) parent,
 * lowest first, in the direction that copies fewer bytes (counted from the
 * maps; a tie: into the parent): the layer into its parent (commit) or the
 * parent into the layer (pull, when the parent is not kept).  The top only
 * takes its parent in (pull), so the disk keeps its file name; a top that
 * cannot (not hosted sparse) stays over its parent.  Shared layers are
 * never written.
 *
 * Steps: --unlink is layer_rewrite (chain_rewrite.c K1-K5, with K3b: the
 * shared parent's sidecar record drops X); consolidate is a sequence of
 * commits (chain_commit.c C1-C7) and pulls (chain_pull.c U1-U7), each
 * complete and recoverable on its own, the group loaded again between two.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "chain_int.h"

/* The disk's node, refusing a snapshot or a shared top. */
static int disk_node(const struct chain_group *g, const char *disk, const char *what)
{
	int d = chain_group_node(g, disk);

	if (d < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	if (g->t->nodes[d].nr_children) {
		vd_err("%s: has children (it is a snapshot, not a disk): %s refused", disk, what);
		return -EBUSY;
	}
	return chain_group_shared(g, d) ? group_refuse_shared(g, d, what) : d;
}

/* Bytes of data the whole chain of path reads. */
static int chain_data_bytes(const char *path, uint64_t *out)
{
	struct chain *c = NULL;
	struct chain_run r;
	int err = chain_open(path, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK, NULL, &c);

	*out = 0;
	for (uint64_t off = 0; !err && off < chain_capacity(c); off += r.len) {
		err = chain_status(c, off, chain_capacity(c) - off, &r);
		if (!err && r.kind == CHAIN_DATA)
			*out += r.len;
	}
	chain_close(c);
	return err;
}

int chain_group_promote_unlink(struct chain_group *g, const char *disk, unsigned flags,
			       const struct vd_io *io, struct chain_plan *plan)
{
	const struct chain_tree *t = g->t;
	int x = disk_node(g, disk, "promote --unlink"), s;
	uint64_t bytes = 0;
	int err = x < 0 ? x : 0;

	plan->op = "promote --unlink";
	while (!err && t->nodes[x].parent >= 0 && !chain_group_shared(g, t->nodes[x].parent))
		x = t->nodes[x].parent;
	s = err ? -1 : t->nodes[x].parent;
	if (err || s < 0)
		return err; /* s < 0: reaches no shared layer already; empty plan */
	if (!(err = layer_rewrite_check(t->nodes[x].path, true)))
		err = chain_data_bytes(t->nodes[x].path, &bytes);
	if (!err)
		err = plan_add(plan, CHAIN_STEP_CREATE, t->nodes[x].path, bytes);
	if (!err)
		err = plan_add(plan, CHAIN_STEP_KEEP, t->nodes[s].path, 0);
	plan->copy_bytes = plan->space_needed = bytes;
	if (!err)
		err = plan_space(plan, t->nodes[x].path);
	if (err || (flags & CHAIN_GROUP_DRY_RUN))
		return err;
	return layer_rewrite(t->nodes[x].path, "promote", true, t->nodes[s].path, plan, io);
}

static bool kept(const char *path, char *const *keep, unsigned nr_keep)
{
	for (unsigned i = 0; i < nr_keep; i++)
		if (same_file(path, keep[i]))
			return true;
	return false;
}

/* The top d merges with its parent only by taking it in (a pull keeps the
 * disk's name, which the VM's configuration holds). */
static bool top_takes_parent(const struct chain_group *g, int d, char *const *keep,
			     unsigned nr_keep)
{
	const struct chain_tree *t = g->t;

	return !kept(t->nodes[t->nodes[d].parent].path, keep, nr_keep) &&
	       !pull_eligible(t->nodes[d].path);
}

/* The lowest layer of the disk to merge with its parent, or -1. */
static int next_merge(const struct chain_group *g, int d, char *const *keep,
		      unsigned nr_keep)
{
	const struct chain_tree *t = g->t;
	int pick = -1;

	for (int at = d; at >= 0; at = t->nodes[at].parent) {
		int p = t->nodes[at].parent;
		if (p < 0 || chain_group_shared(g, p))
			break;
		if (at == d ? top_takes_parent(g, d, keep, nr_keep)
			    : !kept(t->nodes[at].path, keep, nr_keep))
			pick = at;
	}
	return pick;
}

/* The direction of merging node l and its parent that copies fewer bytes
 * (a tie: l into its parent).  The parent goes into l only when it is not
 * kept and l can take it (a hosted sparse layer). */
static int merge_direction(const struct chain_group *g, int l, char *const *keep,
			   unsigned nr_keep, bool *pull)
{
	const char *lp = g->t->nodes[l].path, *pp = g->t->nodes[g->t->nodes[l].parent].path;
	uint64_t down = 0, up = 0;
	int err;

	*pull = !g->t->nodes[l].nr_children; /* the top: next_merge checked it */
	if (*pull)
		return 0;
	err = held_bytes(lp, &down);
	if (err || kept(pp, keep, nr_keep) || pull_eligible(lp))
		return err;
	err = pull_bytes(lp, pp, &up);
	*pull = !err && up < down;
	return err;
}

/* Merge node l with its parent in the direction that copies fewer bytes;
 * *pull tells which. */
static int merge_one(struct chain_group *g, int l, char *const *keep, unsigned nr_keep,
		     unsigned flags, const struct vd_io *io, struct chain_plan *plan,
		     bool *pull)
{
	int err = merge_direction(g, l, keep, nr_keep, pull);

	if (err)
		return err;
	return (*pull ? chain_group_pull : chain_group_commit)(g, g->t->nodes[l].path,
							       flags, io, plan);
}

/* Dry run: the tree as the merge of node l with its parent leaves it. */
static void plan_merged(struct chain_group *g, int l, bool pull)
{
	struct chain_tree *t = g->t;
	int p = t->nodes[l].parent, gone = pull ? p : l;

	for (unsigned i = 0; i < t->nr_nodes; i++)
		if (!pull && t->nodes[i].parent == l)
			t->nodes[i].parent = p;
	if (pull)
		t->nodes[l].parent = t->nodes[p].parent;
	t->nodes[gone].parent = -1;
}

/* Dry run: the merges on the group as it is, lowest first; the bytes of the
 * second and later merges are counted on the layers as they are now. */
static int consolidate_plan(struct chain_group *g, int d, char *const *keep,
			    unsigned nr_keep, struct chain_plan *plan)
{
	int l, err = 0;
	uint64_t copy = 0;
	bool pull;

	while (!err && (l = next_merge(g, d, keep, nr_keep)) >= 0) {
		err = merge_one(g, l, keep, nr_keep, CHAIN_GROUP_DRY_RUN, NULL, plan, &pull);
		copy += plan->copy_bytes;
		plan_merged(g, l, pull);
	}
	plan->copy_bytes = plan->space_needed = copy;
	return err;
}

int chain_group_consolidate(const char *disk, char *const *scan, unsigned nr_scan,
			    char *const *keep, unsigned nr_keep, unsigned flags,
			    const struct vd_io *io, struct chain_plan *plan)
{
	struct chain_group *g = NULL;
	uint64_t copy = 0;
	bool pull;
	int d, l, err = chain_group_load(disk, scan, nr_scan, io, &g);

	for (;;) {
		d = err ? err : disk_node(g, disk, "consolidate");
		if (d < 0 || (flags & CHAIN_GROUP_DRY_RUN))
			break;
		if ((l = next_merge(g, d, keep, nr_keep)) < 0)
			break;
		free(plan->result);
		plan->result = NULL;
		err = merge_one(g, l, keep, nr_keep, 0, io, plan, &pull);
		copy += plan->copy_bytes;
		chain_group_free(g);
		g = NULL;
		if (!err)
			err = chain_group_load(disk, scan, nr_scan, io, &g);
	}
	if (d >= 0 && (flags & CHAIN_GROUP_DRY_RUN))
		err = consolidate_plan(g, d, keep, nr_keep, plan);
	else if (!err) {
		plan->copy_bytes = plan->space_needed = copy;
		err = d < 0 ? d : 0;
	}
	plan->op = "consolidate";
	chain_group_free(g);
	return err;
}
