/* group — `consolidate` (= `promote` without --unlink) (layer 3).
 *
 * Owns: choosing the merges: every layer of the disk from its top down to
 * the first shared layer that is not kept, each merged with its (unshared)
 * parent, lowest first, in the direction that copies fewer bytes (counted
 * from the maps; a tie: into the parent): the layer into its parent
 * (commit) or the parent into the layer (pull, when the parent is not
 * kept).  The top only takes its parent in (pull), so the disk keeps its
 * file name; a top that cannot (not hosted sparse) stays over its parent.
 * Shared layers are never written.
 *
 * When those merges would leave the top straight over the first layer they
 * cannot write (shared, or with children unknown), or make it a base, the
 * top takes every layer between in one pull instead: the same result, each
 * byte copied once and one merge's syncs, not one merge per layer.
 *
 * Steps: a sequence of commits (group_commit.c C1-C7) and pulls
 * (group_pull.c U1-U7), each complete and recoverable on its own.  The
 * group loaded once is kept up to date between two merges (the layer
 * merged away marked gone, the one that stays read again), so consolidating
 * every disk of a folder costs one scan.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "group_int.h"

static bool kept(const char *path, char *const *keep, unsigned nr_keep)
{
	for (unsigned i = 0; i < nr_keep; i++)
		if (vd_same_file(path, keep[i]))
			return true;
	return false;
}

/* The top d merges with its parent only by taking it in (a pull keeps the
 * disk's name, which the VM's configuration holds). */
static bool top_takes_parent(const struct group *g, int d, char *const *keep,
			     unsigned nr_keep)
{
	const struct group_tree *t = g->t;

	return !kept(t->nodes[t->nodes[d].parent].path, keep, nr_keep) &&
	       !group_pull_eligible(t->nodes[d].path);
}

/* How many layers the top d, which takes its parent in, takes in by one
 * pull (see above), or 0: the merges go pairwise (a layer under d is kept,
 * or a link is broken). */
static unsigned pull_depth(const struct group *g, int d, char *const *keep,
			   unsigned nr_keep)
{
	const struct group_tree *t = g->t;
	unsigned k = 0;

	for (int q = t->nodes[d].parent; q >= 0; q = t->nodes[q].parent, k++) {
		if (group_busy(g, q))
			return k;
		if (kept(t->nodes[q].path, keep, nr_keep) ||
		    (t->nodes[q].flags & (GROUP_TREE_BROKEN | GROUP_TREE_MISSING |
					  GROUP_TREE_CAPACITY | GROUP_TREE_UNREADABLE)))
			return 0;
	}
	return k;
}

/* The lowest layer of the disk to merge with its parent, or -1; takes:
 * the top takes its parent in (top_takes_parent). */
static int next_merge(const struct group *g, int d, char *const *keep,
		      unsigned nr_keep, bool takes)
{
	const struct group_tree *t = g->t;
	int pick = -1;

	for (int at = d; at >= 0; at = t->nodes[at].parent) {
		int p = t->nodes[at].parent;
		if (p < 0 || group_busy(g, p) || (at != d && group_unknown(g, at)))
			break;
		if (at == d ? takes : !kept(t->nodes[at].path, keep, nr_keep))
			pick = at;
	}
	return pick;
}

/* The direction of merging node l and its parent that copies fewer bytes
 * (a tie: l into its parent), and those bytes (*counted is false when they
 * were not counted: the top, whose merge counts them).  The parent goes
 * into l only when it is not kept and l can take it (a hosted sparse
 * layer). */
static int merge_direction(const struct group *g, int l, char *const *keep,
			   unsigned nr_keep, bool *pull, uint64_t *bytes, bool *counted)
{
	const char *lp = g->t->nodes[l].path, *pp = g->t->nodes[g->t->nodes[l].parent].path;
	uint64_t up = 0;
	int err;

	*pull = !g->t->nodes[l].nr_children; /* the top: next_merge checked it */
	*counted = false;
	if (*pull)
		return 0;
	err = group_layer_held_bytes(lp, bytes);
	*counted = !err;
	if (err || kept(pp, keep, nr_keep) || group_pull_eligible(lp))
		return err;
	err = group_pull_bytes(lp, pp, 1, &up);
	*pull = !err && up < *bytes;
	*bytes = *pull ? up : *bytes;
	return err;
}

/* Merge node l with its parent in the direction that copies fewer bytes
 * (counted once); *pull tells which.  depth > 1: l is the top and takes in
 * that many layers (pull_depth). */
static int merge_one(struct group *g, int l, unsigned depth, char *const *keep,
		     unsigned nr_keep, unsigned flags, const struct vd_io *io,
		     struct group_plan *plan, bool *pull)
{
	uint64_t bytes = 0;
	bool counted;
	int err = depth > 1 ? 0 : merge_direction(g, l, keep, nr_keep, pull, &bytes, &counted);

	if (err)
		return err;
	*pull = *pull || depth > 1;
	if (*pull)
		return group_pull_counted(g, g->t->nodes[l].path, depth, flags, io, plan,
					  depth == 1 && counted ? &bytes : NULL);
	return group_commit_counted(g, g->t->nodes[l].path, flags, io, plan,
				    counted ? &bytes : NULL);
}

static void gone(struct group_tree *t, int n)
{
	group_tree_move(t, (unsigned)n, -1);
	t->nodes[n].nr_children = t->nodes[n].reach = 0;
	t->nodes[n].flags |= GROUP_TREE_GONE;
}

/* The tree as the merge of node l with its parent (a pull of depth > 1:
 * with that many layers) leaves it (a dry run: as it would leave it): the
 * layers merged away are gone, their children hang from the one that
 * stays, whose facts are read again. */
static int merged(struct group *g, int l, unsigned depth, bool pull, bool dry_run)
{
	struct group_tree *t = g->t;
	int p = t->nodes[l].parent, stays = pull ? l : p;

	for (unsigned i = 0; pull && i < depth; i++, p = t->nodes[l].parent) {
		group_tree_move(t, (unsigned)l, t->nodes[p].parent);
		gone(t, p);
	}
	while (!pull && t->nodes[l].first_child >= 0)
		group_tree_move(t, (unsigned)t->nodes[l].first_child, p);
	if (!pull)
		gone(t, l);
	return dry_run ? 0 : group_tree_refresh(t, (unsigned)stays);
}

/* The next merge of disk d: *l and *depth (0 when none is left). */
static void next_step(const struct group *g, int d, char *const *keep, unsigned nr_keep,
		      int *l, unsigned *depth)
{
	bool takes = g->t->nodes[d].parent >= 0 && top_takes_parent(g, d, keep, nr_keep);

	*depth = takes ? pull_depth(g, d, keep, nr_keep) : 0;
	*l = *depth > 1 ? d : next_merge(g, d, keep, nr_keep, takes);
	*depth = *l < 0 ? 0 : *depth > 1 ? *depth : 1;
}

/* Dry run: the merges on the group as it is, lowest first; the bytes of the
 * second and later merges are counted on the layers as they are now. */
static int consolidate_plan(struct group *g, int d, char *const *keep,
			    unsigned nr_keep, struct group_plan *plan)
{
	int l, err = 0;
	unsigned depth;
	uint64_t copy = 0;
	bool pull = true;

	for (next_step(g, d, keep, nr_keep, &l, &depth); !err && depth;
	     next_step(g, d, keep, nr_keep, &l, &depth)) {
		err = merge_one(g, l, depth, keep, nr_keep, GROUP_DRY_RUN, NULL, plan, &pull);
		copy += plan->copy_bytes;
		if (!err)
			err = merged(g, l, depth, pull, true);
	}
	plan->copy_bytes = plan->space_needed = copy;
	return err;
}

/* A layer of the merges' reach whose children are unknown (the walk of
 * next_merge would stop at it), or -1: consolidate refuses it up front
 * rather than merge half the chain. */
static int unknown_in_reach(const struct group *g, int d)
{
	const struct group_tree *t = g->t;

	for (int at = d; at >= 0; at = t->nodes[at].parent) {
		int p = t->nodes[at].parent;
		if (p < 0 || group_shared(g, p))
			return -1;
		if (group_unknown(g, p))
			return p;
	}
	return -1;
}

int group_consolidate(struct group *g, const char *disk, char *const *keep,
		      unsigned nr_keep, unsigned flags, const struct vd_io *io,
		      struct group_plan *plan)
{
	uint64_t copy = 0;
	bool pull = true;
	unsigned depth = 0;
	int d = group_disk_node(g, disk, "consolidate"), l, err = d < 0 ? d : 0;

	plan->op = "consolidate";
	if (!err && (l = unknown_in_reach(g, d)) >= 0)
		err = group_refuse_busy(g, l, "consolidate");
	if (!err && (flags & GROUP_DRY_RUN)) {
		err = consolidate_plan(g, d, keep, nr_keep, plan);
		plan->op = "consolidate";
		return err;
	}
	if (!err)
		next_step(g, d, keep, nr_keep, &l, &depth);
	for (; !err && depth; next_step(g, d, keep, nr_keep, &l, &depth)) {
		free(plan->result);
		plan->result = NULL;
		err = merge_one(g, l, depth, keep, nr_keep, 0, io, plan, &pull);
		copy += plan->copy_bytes;
		if (!err)
			err = merged(g, l, depth, pull, false);
	}
	plan->copy_bytes = plan->space_needed = copy;
	plan->op = "consolidate";
	return err;
}
