/* chain — `delete` (remove a disk's own layers) and `revert` (back to the
 * last snapshot) (layer 2).
 *
 * Owns: choosing which layers of a disk no other disk reaches, their
 * removal, the orphans a deletion leaves, and the replacement of a top by
 * an empty delta.
 *
 * Write order of delete (recovery finishes it):
 *  D1. the intent record (the files to remove, top layer first and each
 *      layer's descriptor before its extents; the kept parent) is written;
 *  D2. the files are removed in that order: the disk is gone as soon as its
 *      top descriptor is, and the rest only frees space;
 *  D3. the kept parent's sidecar record loses the removed child;
 *  D4. the intent record is removed.
 *
 * Write order of revert (recovery rolls it back unless R3 began):
 *  R1. the intent record (top T, staging folder, T's files) is written;
 *  R2. an empty delta of T's kind (monolithicSparse, twoGbMaxExtentSparse,
 *      vmfsSparse, seSparse) over T's parent is created in the staging
 *      folder under T's own name (vmdk_create: written and fsynced);
 *  R3. it is published (chain_stage.c P1-P6: extents, then the descriptor,
 *      renamed over T's; T reads as its parent from P3 on; recovery
 *      finishes a publish once begun);
 *  R4. (P6) the intent record is removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chain_int.h"

/* ---- delete ------------------------------------------------------------------------ */

static int delete_steps(const struct group_intent *in, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = 0; !err && i < in->nr_files; i++) /* D2 */
		err = group_unlink(in->files[i], io);
	if (!err && in->nr_files)
		err = io->sync_dir(io, in->files[0]);
	if (!err && in->parent && in->nr_children) /* D3 */
		err = group_record_update(in->parent, in->children[0], NULL, 0, io);
	return err ? err : intent_done(in, io); /* D4 */
}

int delete_resume(const struct group_intent *in, const struct vd_io *io)
{
	return delete_steps(in, io);
}

/* Found children of node. */
static unsigned nr_found_children(const struct chain_tree *t, int node)
{
	unsigned n = 0;

	for (unsigned i = 0; i < t->nr_nodes; i++)
		n += t->nodes[i].parent == node;
	return n;
}

/* Add node's files (and sidecar) to the intent and a REMOVE step. */
static int delete_layer(const struct chain_group *g, int node, struct group_intent *in,
			struct chain_plan *plan)
{
	const struct chain_tree_node *n = &g->t->nodes[node];
	int err = group_add_layer_files(in, n->path);

	return err ? err : plan_add(plan, CHAIN_STEP_REMOVE, n->path, n->file_bytes);
}

/* Walk from the disk up: its own layers go, the first shared one stays.
 * With CHAIN_GROUP_ORPHANS a layer left without any disk found goes too. */
static int delete_walk(const struct chain_group *g, int d, unsigned flags,
		       struct group_intent *in, struct chain_plan *plan)
{
	const struct chain_tree *t = g->t;
	int at = d, below = -1, err = 0;

	while (!err && at >= 0 && !chain_group_shared(g, at)) {
		err = delete_layer(g, at, in, plan);
		below = at;
		at = t->nodes[at].parent;
	}
	while (!err && (flags & CHAIN_GROUP_ORPHANS) && at >= 0 && below >= 0 &&
	       nr_found_children(t, at) == 1) {
		err = delete_layer(g, at, in, plan);
		below = at;
		at = t->nodes[at].parent;
	}
	if (!err && at >= 0 && below >= 0) {
		/* one found child (ours): only records of unseen children hold it */
		bool orphan = nr_found_children(t, at) == 1;
		err = plan_add(plan, orphan ? CHAIN_STEP_ORPHAN : CHAIN_STEP_KEEP,
			       t->nodes[at].path, 0);
		if (!err && !(in->parent = strdup(t->nodes[at].path)))
			err = -ENOMEM;
		if (!err)
			err = strv_add(&in->children, &in->nr_children, t->nodes[below].path);
	}
	return err;
}

/* Take and drop the disk's read locks, which deny writers: -EAGAIN when
 * someone runs it. */
static int lock_probe(const char *disk, const struct vd_io *io)
{
	struct chain *c;
	int err = chain_open(disk, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NO_PARENT |
			     CHAIN_OPEN_DIRTY_OK, io, &c);

	return err ? err : chain_close(c);
}

int chain_group_delete(struct chain_group *g, const char *disk, unsigned flags,
		       const struct vd_io *io, struct chain_plan *plan)
{
	struct group_intent in = { .op = strdup("delete"), .target = NULL };
	int d = chain_group_node(g, disk), err = in.op ? 0 : -ENOMEM;

	io = io ? io : vd_io_posix();
	plan->op = "delete";
	if (!err && d < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		err = -ENOENT;
	}
	if (!err && g->t->nodes[d].nr_children) {
		vd_err("%s: has children (it is a snapshot, not a disk): delete refused; "
		       "delete its disks, or commit it", disk);
		err = -EBUSY;
	}
	if (!err && chain_group_shared(g, d))
		err = group_refuse_shared(g, d, "delete");
	if (!err && (!(in.target = strdup(g->t->nodes[d].path)) ||
		     asprintf(&in.path, "%s%s", in.target, CHAIN_INTENT_SUFFIX) < 0))
		err = -ENOMEM;
	if (!err)
		err = delete_walk(g, d, flags, &in, plan);
	if (!err) /* refused (-EAGAIN, reported) while a VM has the disk open */
		err = lock_probe(in.target, io);
	if (!err && !(flags & CHAIN_GROUP_DRY_RUN))
		err = intent_write(&in, io); /* D1 */
	if (!err && !(flags & CHAIN_GROUP_DRY_RUN))
		err = delete_steps(&in, io);
	intent_free(&in);
	return err;
}

/* ---- revert ------------------------------------------------------------------------ */

/* R2: an empty delta like T (kind, capacity, grain, adapter, hint) over
 * its parent; a new CID, as any change of content gives. */
static int revert_create(void *top, const char *tmp, const struct vd_io *io)
{
	struct vmdk_create_opts o = {0};
	int err = layer_like(top, top, false, &o);

	return err ? err : vmdk_create(tmp, &o, io);
}

/* T must be a disk's top, a delta of a kind layer_like makes. */
static int revert_check(const struct chain_group *g, int t, struct vmdk_disk *top)
{
	const struct chain_tree_node *n = &g->t->nodes[t];
	struct vmdk_create_opts o = {0};

	if (n->nr_children || n->frozen) {
		vd_err("%s: a snapshot (%s), not a disk's top: revert refused",
		       n->path, n->nr_children ? "it has children" : "frozen");
		return -EBUSY;
	}
	if (n->flags & (CHAIN_TREE_BROKEN | CHAIN_TREE_MISSING | CHAIN_TREE_CAPACITY)) {
		vd_err("%s: its link to its parent is broken: revert refused", n->path);
		return -ESTALE;
	}
	if (n->parent < 0 || !vmdk_parent_hint(top)) {
		vd_err("%s: has no parent: no snapshot to revert to", n->path);
		return -EINVAL;
	}
	if (chain_group_shared(g, t))
		return group_refuse_shared(g, t, "revert");
	return layer_like(top, top, false, &o); /* -ENOTSUP: says why */
}

int chain_group_revert(struct chain_group *g, const char *disk, unsigned flags,
		       const struct vd_io *io, struct chain_plan *plan)
{
	struct vmdk_disk *top = NULL;
	struct group_intent in = {0};
	int t = chain_group_node(g, disk), err = 0;

	io = io ? io : vd_io_posix();
	plan->op = "revert";
	if (t < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	err = vmdk_open(g->t->nodes[t].path, VMDK_OPEN_RDONLY, io, &top);
	if (!err) /* no writer meanwhile */
		err = vmdk_lock(top, VMDK_PERM_READ, VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (!err)
		err = revert_check(g, t, top);
	if (!err)
		err = intent_init_tmp(g->t->nodes[t].path, "revert", &in);
	if (!err)
		err = plan_add(plan, CHAIN_STEP_CREATE, in.target, 0);
	if (!err)
		err = plan_add(plan, CHAIN_STEP_REMOVE, in.target, g->t->nodes[t].file_bytes);
	plan->space_needed = 1u << 20; /* an empty delta: header and tables */
	plan->result = in.target ? strdup(in.target) : NULL;
	if (!err)
		err = plan_space(plan, in.target);
	if (!err && !(flags & CHAIN_GROUP_DRY_RUN))
		err = stage_run(&in, revert_create, top, io); /* R1-R4 */
	vmdk_close(top);
	intent_free(&in);
	return err;
}
