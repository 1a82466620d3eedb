/* group — `revert`: back to the last snapshot (layer 3).
 *
 * Owns: the replacement of a disk's top by an empty delta of its kind over
 * the same parent (the top's content is discarded, its parent's read).
 *
 * Write order (recovery rolls it back unless R3 began):
 *  R1. the intent record (top T, staging folder, T's files) is written;
 *  R2. an empty delta of T's kind (monolithicSparse, twoGbMaxExtentSparse,
 *      vmfsSparse, seSparse) over T's parent is created in the staging
 *      folder under T's own name (vmdk_create: written and fsynced);
 *  R3. it is published (group_stage.c P1-P6: extents, then the descriptor,
 *      renamed over T's; T reads as its parent from P3 on; recovery
 *      finishes a publish once begun);
 *  R4. (P6) the intent record is removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "group_int.h"

const struct group_op group_op_revert = GROUP_STAGE_OP("revert");

/* R2: an empty delta like T (kind, capacity, grain, adapter, hint) over
 * its parent; a new CID, as any change of content gives. */
static int revert_create(void *top, const char *tmp, const struct vd_io *io)
{
	struct vmdk_create_opts o = {0};
	int err = group_rewrite_like(top, top, false, &o);

	return err ? err : vmdk_create(tmp, &o, io);
}

/* T must be a disk's top, a delta of a kind group_rewrite_like makes. */
static int revert_check(const struct group *g, int t, struct vmdk_disk *top)
{
	const struct group_tree_node *n = &g->t->nodes[t];
	struct vmdk_create_opts o = {0};

	if (n->nr_children || n->frozen) {
		vd_err("%s: a snapshot (%s), not a disk's top: revert refused",
		       n->path, n->nr_children ? "it has children" : "frozen");
		return -EBUSY;
	}
	if (n->flags & (GROUP_TREE_BROKEN | GROUP_TREE_MISSING | GROUP_TREE_CAPACITY)) {
		vd_err("%s: its link to its parent is broken: revert refused", n->path);
		return -ESTALE;
	}
	if (n->parent < 0 || !vmdk_parent_hint(top)) {
		vd_err("%s: has no parent: no snapshot to revert to", n->path);
		return -EINVAL;
	}
	if (group_busy(g, t))
		return group_refuse_busy(g, t, "revert");
	return group_rewrite_like(top, top, false, &o); /* -ENOTSUP: says why */
}

int group_revert(struct group *g, const char *disk, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan)
{
	struct vmdk_disk *top = NULL;
	struct group_stage_rec *r = NULL;
	int t = group_node(g, disk), err = 0;

	io = io ? io : vd_io_posix();
	plan->op = "revert";
	if (t < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	err = vmdk_open(g->t->nodes[t].path, VMDK_OPEN_RDONLY, io, &top);
	if (!err)
		err = revert_check(g, t, top);
	if (!err)
		err = group_stage_new(&group_op_revert, g->t->nodes[t].path, &r);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_CREATE, r->in.target, 0);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_REMOVE, r->in.target,
				     g->t->nodes[t].file_bytes);
	plan->space_needed = 1u << 20; /* an empty delta: header and tables */
	if (!err && !(plan->result = strdup(r->in.target)))
		err = -ENOMEM;
	if (!err)
		err = group_plan_space(plan, r->in.target);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = group_stage_run(r, revert_create, top, io); /* R1-R4 */
	vmdk_close(top);
	group_intent_free(r ? &r->in : NULL);
	return err;
}
