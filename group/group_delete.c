/* group — `delete`: remove a disk's own layers (layer 3).
 *
 * Owns: choosing which layers of a disk no other disk reaches, their
 * removal, and the orphans a deletion leaves.
 *
 * Write order of delete (recovery finishes it):
 *  D1. the intent record (the files to remove, top layer first and each
 *      layer's descriptor before its extents; the kept parent) is written;
 *  D2. the files are removed in that order: the disk is gone as soon as its
 *      top descriptor is, and the rest only frees space;
 *  D3. the kept parent's sidecar record loses the removed child;
 *  D4. the intent record is removed.

 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "group_int.h"

/* The record (D1). */
struct delete_rec {
	struct group_intent in; /* target: the disk's top */
	char *parent;    /* the kept layer the lowest removed one hung from */
	char **children; /* that removed layer (one), dropped from parent's record */
	unsigned nr_children;
	char **files;    /* every removed layer's files, top layer first */
	unsigned nr_files;
};

static const struct group_field delete_fields[] = {
	GROUP_FIELD_ONE(struct delete_rec, parent, "parent", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct delete_rec, children, nr_children, "child",
			 GROUP_FIELD_LAYERS, GROUP_LOCK_EXCL),
	GROUP_FIELD_LIST(struct delete_rec, files, nr_files, "file", GROUP_FIELD_FILES,
			 GROUP_LOCK_EXCL),
};

static int delete_steps(const struct delete_rec *r, const struct vd_io *io)
{
	int err = group_layer_remove_files(r->files, r->nr_files, io); /* D2 */

	if (!err && r->parent && r->nr_children) /* D3 */
		err = group_record_update(r->parent, r->children[0], NULL, 0, 0, io);
	return err ? err : group_intent_done(&r->in, io); /* D4 */
}

static int delete_resume(struct group_intent *in, const struct vd_io *io)
{
	return delete_steps((const struct delete_rec *)in, io);
}

const struct group_op group_op_delete = {
	.name = "delete",
	.fields = delete_fields,
	.nr_fields = sizeof delete_fields / sizeof delete_fields[0],
	.size = sizeof(struct delete_rec),
	.resume = delete_resume,
};

/* Found children of node. */
static unsigned nr_found_children(const struct group_tree *t, int node)
{
	unsigned n = 0;

	for (unsigned i = 0; i < t->nr_nodes; i++)
		n += t->nodes[i].parent == node;
	return n;
}

/* Left without a disk once ours goes: our layer is its one found child, its
 * children are known (only records of unseen children hold it) and it has
 * no other name a disk could reach it by. */
static bool orphaned(const struct group *g, int node)
{
	const struct group_tree *t = g->t;

	return nr_found_children(t, node) == 1 && !group_unknown(g, node) &&
	       !t->nodes[node].aliases;
}

/* Add node's files (and sidecar) to the intent and a REMOVE step. */
static int delete_layer(const struct group *g, int node, struct delete_rec *r,
			struct group_plan *plan)
{
	const struct group_tree_node *n = &g->t->nodes[node];
	int err = group_layer_add_files(&r->files, &r->nr_files, n->path);

	return err ? err : group_plan_add(plan, GROUP_STEP_REMOVE, n->path, n->file_bytes);
}

/* Walk from the disk up: its own layers go, the first shared one stays.
 * With GROUP_ORPHANS a layer left without any disk found goes too. */
static int delete_walk(const struct group *g, int d, unsigned flags,
		       struct delete_rec *r, struct group_plan *plan)
{
	const struct group_tree *t = g->t;
	int at = d, below = -1, err = 0;

	while (!err && at >= 0 && !group_busy(g, at)) {
		err = delete_layer(g, at, r, plan);
		below = at;
		at = t->nodes[at].parent;
	}
	while (!err && (flags & GROUP_ORPHANS) && at >= 0 && below >= 0 && orphaned(g, at)) {
		err = delete_layer(g, at, r, plan);
		below = at;
		at = t->nodes[at].parent;
	}
	if (!err && at >= 0 && below >= 0) {
		/* one found child (ours): only records of unseen children hold it */
		err = orphaned(g, at) ? group_plan_add(plan, GROUP_STEP_ORPHAN, t->nodes[at].path, 0)
				      : group_plan_keep(plan, g, at);
		if (!err && !(r->parent = strdup(t->nodes[at].path)))
			err = -ENOMEM;
		if (!err)
			err = group_intent_add(&r->children, &r->nr_children,
					       t->nodes[below].path);
	}
	return err;
}

static int delete_check(const struct group *g, const char *disk, int d)
{
	if (d < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	if (g->t->nodes[d].nr_children) {
		vd_err("%s: has children (it is a snapshot, not a disk): delete refused; "
		       "delete its disks, or commit it", disk);
		return -EBUSY;
	}
	return group_busy(g, d) ? group_refuse_busy(g, d, "delete") : 0;
}

int group_delete(struct group *g, const char *disk, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan)
{
	struct group_locks locks = {0};
	struct group_intent *in = NULL;
	int d = group_node(g, disk), err = delete_check(g, disk, d);

	io = io ? io : vd_io_posix();
	plan->op = "delete";
	if (!err)
		err = group_intent_new(&group_op_delete, g->t->nodes[d].path, &in);
	if (!err)
		err = delete_walk(g, d, flags, (struct delete_rec *)in, plan);
	if (!err) /* refused (-EAGAIN, reported) while anyone uses a layer it removes */
		err = group_intent_lock(in, &locks);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = group_intent_write(in, io); /* D1 */
	if (!err && !(flags & GROUP_DRY_RUN))
		err = delete_steps((const struct delete_rec *)in, io);
	group_locks_release(&locks);
	group_intent_free(in);
	return err;
}
