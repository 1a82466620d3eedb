/* group — `check --repair`: put one layer's file back in order (layer 3).
 *
 * Owns: deciding what a layer needs (from vmdk_check), clearing a stale
 * uncleanShutdown flag with its redundant tables brought in line (the
 * format layer does that when the layer is opened for writing with the
 * dirty override), and compaction: a fresh copy of the layer without
 * leaked grains and with new tables, same CID, parent link and DDB keys,
 * swapped in by rename.  Compaction moves data, so a frozen or shared
 * layer is refused; clearing the flag changes only metadata outside the
 * data and is done on any layer no one is writing.
 *
 * Compaction is group_rewrite (group_rewrite.c, steps K1-K4, publish
 * P1-P6 in group_stage.c): the layer keeps its kind and file names.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "group_int.h"

const struct group_op group_op_repair = GROUP_STAGE_OP("repair");

/* The flag goes (and the redundant tables catch up) when the layer is
 * opened for writing with the dirty override, no one else using it; no
 * data is written. */
static int clear_unclean(const char *path, const struct vd_io *io)
{
	struct group_locks locks = {0};
	struct vmdk_disk *d = NULL;
	int err = group_lock_layer(&locks, path, GROUP_LOCK_EXCL);

	if (!err)
		err = vmdk_open(path, VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK, io, &d);
	if (d && vmdk_close(d) && !err)
		err = -EIO;
	group_locks_release(&locks);
	return err;
}

static int repair_refuse(const struct group *g, int node, const char *path)
{
	if (node >= 0 && group_shared(g, node))
		return group_refuse_shared(g, node, "compaction (it moves data)");
	vd_err("%s: frozen (a snapshot): compaction moves data and is refused; the "
	       "leaked space stays until its children are committed", path);
	return -EBUSY;
}

static int repair_layer(const struct group *g, const char *path,
			const struct vmdk_check_result *r, const struct vd_io *io,
			struct group_plan *plan, bool dry_run)
{
	struct vmdk_disk *src = NULL;
	int node = group_node(g, path), err;

	if (!r->leaked && !r->errors && !r->warnings)
		return 0;
	if (!r->leaked && !r->errors) {
		err = group_plan_add(plan, GROUP_STEP_CLEAN, path, 0);
		return err || dry_run ? err : clear_unclean(path, io);
	}
	err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &src);
	if (!err && (chain_is_frozen(src) || (node >= 0 && group_shared(g, node))))
		err = repair_refuse(g, node, path);
	vmdk_close(src);
	if (!err)
		err = group_rewrite_check(path, false);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_COMPACT, path, r->allocated);
	plan->copy_bytes = plan->space_needed = r->allocated;
	if (!err)
		err = group_plan_space(plan, path);
	return err || dry_run ? err : group_rewrite(&group_op_repair, path, false, NULL, plan,
						     io);
}

/* What the layer needs, checked while no one else may use it. */
static int repair_check(const char *path, bool dry_run, const struct vd_io *io,
			struct vmdk_check_result *r)
{
	struct group_locks locks = {0};
	struct vmdk_disk *d = NULL;
	int err = group_lock_layer(&locks, path, dry_run ? GROUP_LOCK_READ : GROUP_LOCK_EXCL);

	if (!err)
		err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &d);
	if (!err)
		err = vmdk_check(d, NULL, NULL, r);
	vmdk_close(d);
	group_locks_release(&locks);
	return err;
}

int group_repair(struct group *g, const char *path, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan)
{
	struct vmdk_check_result r = {0};
	int err;

	io = io ? io : vd_io_posix();
	plan->op = "repair";
	err = repair_check(path, flags & GROUP_DRY_RUN, io, &r);
	if (!err)
		err = repair_layer(g, path, &r, io, plan, flags & GROUP_DRY_RUN);
	return err;
}
