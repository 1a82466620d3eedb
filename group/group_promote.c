/* group — `promote --unlink` (layer 3).
 *
 * Owns: choosing the layer: the lowest layer X of the disk that no other
 * disk reaches, which is rewritten flattened (its own data plus everything
 * it reads from the shared layers below, same CID: the disk's upper layers
 * stay valid) so the disk reaches no shared layer.  Shared layers are
 * never written.  (`promote` without --unlink is consolidate,
 * group_consolidate.c.)
 *
 * Steps: group_rewrite (group_rewrite.c K1-K4, with the publish's P4: the
 * shared parent's sidecar record drops X).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "group_int.h"

const struct group_op group_op_promote = GROUP_STAGE_OP("promote");

/* Bytes of data the whole chain of path reads. */
static int data_bytes(const char *path, uint64_t *out)
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

int group_promote_unlink(struct group *g, const char *disk, unsigned flags,
			 const struct vd_io *io, struct group_plan *plan)
{
	const struct group_tree *t = g->t;
	int x = group_disk_node(g, disk, "promote --unlink"), s;
	uint64_t bytes = 0;
	int err = x < 0 ? x : 0;

	plan->op = "promote --unlink";
	while (!err && t->nodes[x].parent >= 0 && !group_busy(g, t->nodes[x].parent))
		x = t->nodes[x].parent;
	s = err ? -1 : t->nodes[x].parent;
	if (err || s < 0)
		return err; /* s < 0: reaches no shared layer already; empty plan */
	if (!(err = group_rewrite_check(t->nodes[x].path, true)))
		err = data_bytes(t->nodes[x].path, &bytes);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_CREATE, t->nodes[x].path, bytes);
	if (!err)
		err = group_plan_keep(plan, g, s);
	plan->copy_bytes = plan->space_needed = bytes;
	if (!err)
		err = group_plan_space(plan, t->nodes[x].path);
	if (err || (flags & GROUP_DRY_RUN))
		return err;
	return group_rewrite(&group_op_promote, t->nodes[x].path, true, t->nodes[s].path, plan,
			     io);
}

