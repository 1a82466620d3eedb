/* tools — private header of the group commands (top layer): commit,
 * delete, revert, promote, consolidate, check --repair.  Never included outside tools/.
 *
 * Owns: the options every group command shares (--dry-run, --json,
 * --scan DIR, -p), loading the group, and printing the plan and the
 * result as text or JSON (tools_group.c).
 */
#ifndef VDELTA_TOOLS_GROUP_H
#define VDELTA_TOOLS_GROUP_H

#include "chain.h"
#include "tools.h"

/* The operation a command runs on its one DISK argument. */
typedef int tools_group_op(struct chain_group *g, const char *disk, unsigned flags,
			   const struct vd_io *io, struct chain_plan *plan);

/* Parse the shared options (plus --orphans when allow_orphans), load the
 * group, run op, print; returns TOOLS_*. */
int tools_group_main(const struct tools_cmd *cmd, int argc, char **argv,
		     tools_group_op *op, bool allow_orphans);

/* Print a plan (or the result of carrying it out) as text or JSON. */
void tools_group_print(const struct chain_plan *p, bool dry_run, bool json);

/* `consolidate DISK` and `promote DISK` (tools_consolidate.c). */
int tools_consolidate_disk(const char *disk, char *const *scan, unsigned nr_scan,
			   char *const *keep, unsigned nr_keep, unsigned flags, bool json);

/* `check --repair [--dry-run] [--json] LAYER` (tools_repair.c). */
int tools_repair_run(const char *path, bool dry_run, bool json);

#endif
