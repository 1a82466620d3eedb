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

/* The lowest layer of the disk to merge with its parent, or -1. */
static int next_merge(const struct group *g, int d, char *const *keep,
		      unsigned nr_keep)
{
	const struct group_tree *t = g->t;
	int pick = -1;

	for (int at = d; at >= 0; at = t->nodes[at].parent) {
		int p = t->nodes[at].parent;
		if (p < 0 || group_busy(g, p) || (at != d && group_unknown(g, at)))
			break;
		if (at == d ? top_takes_parent(g, d, keep, nr_keep)
			    : !kept(t->nodes[at].path, keep, nr_keep))
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
	err = group_pull_bytes(lp, pp, &up);
	*pull = !err && up < *bytes;
	*bytes = *pull ? up : *bytes;
	return err;
}

/* Merge node l with its parent in the direction that copies fewer bytes
 * (counted once); *pull tells which. */
static int merge_one(struct group *g, int l, char *const *keep, unsigned nr_keep,
		     unsigned flags, const struct vd_io *io, struct group_plan *plan,
		     bool *pull)
{
	uint64_t bytes = 0;
	bool counted;
	int err = merge_direction(g, l, keep, nr_keep, pull, &bytes, &counted);

	if (err)
		return err;
	return (*pull ? group_pull_counted : group_commit_counted)(
		g, g->t->nodes[l].path, flags, io, plan, counted ? &bytes : NULL);
}

/* The tree as the merge of node l with its parent leaves it (a dry run:
 * as it would leave it): the layer merged away is gone, its children hang
 * from the one that stays, whose facts are read again. */
static int merged(struct group *g, int l, bool pull, bool dry_run)
{
	struct group_tree *t = g->t;
	int p = t->nodes[l].parent, gone = pull ? p : l, stays = pull ? l : p;

	if (pull)
		group_tree_move(t, (unsigned)l, t->nodes[p].parent);
	while (!pull && t->nodes[l].first_child >= 0)
		group_tree_move(t, (unsigned)t->nodes[l].first_child, p);
	group_tree_move(t, (unsigned)gone, -1);
	t->nodes[gone].nr_children = t->nodes[gone].reach = 0;
	t->nodes[gone].flags |= GROUP_TREE_GONE;
	return dry_run ? 0 : group_tree_refresh(t, (unsigned)stays);
}

/* Dry run: the merges on the group as it is, lowest first; the bytes of the
 * second and later merges are counted on the layers as they are now. */
static int consolidate_plan(struct group *g, int d, char *const *keep,
			    unsigned nr_keep, struct group_plan *plan)
{
	int l, err = 0;
	uint64_t copy = 0;
	bool pull;

	while (!err && (l = next_merge(g, d, keep, nr_keep)) >= 0) {
		err = merge_one(g, l, keep, nr_keep, GROUP_DRY_RUN, NULL, plan, &pull);
		copy += plan->copy_bytes;
		if (!err)
			err = merged(g, l, pull, true);
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
	bool pull;
	int d = group_disk_node(g, disk, "consolidate"), l, err = d < 0 ? d : 0;

	plan->op = "consolidate";
	if (!err && (l = unknown_in_reach(g, d)) >= 0)
		err = group_refuse_busy(g, l, "consolidate");
	if (!err && (flags & GROUP_DRY_RUN)) {
		err = consolidate_plan(g, d, keep, nr_keep, plan);
		plan->op = "consolidate";
		return err;
	}
	while (!err && (l = next_merge(g, d, keep, nr_keep)) >= 0) {
		free(plan->result);
		plan->result = NULL;
		err = merge_one(g, l, keep, nr_keep, 0, io, plan, &pull);
		copy += plan->copy_bytes;
		if (!err)
			err = merged(g, l, pull, false);
	}
	plan->copy_bytes = plan->space_needed = copy;
	plan->op = "consolidate";
	return err;
}
