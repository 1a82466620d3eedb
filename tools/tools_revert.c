/* tools — `vdelta revert [--dry-run] DISK`: back to the last snapshot (top
 * layer, over group_revert).
 *
 * Owns: the command's usage text; tools_group.c does the rest.
 */
#include "group.h"
#include "tools.h"

extern const struct tools_cmd tools_cmd_revert;

static int revert_run(int argc, char **argv)
{
	return tools_group_main(&tools_cmd_revert, argc, argv, group_revert, false);
}

const struct tools_cmd tools_cmd_revert = {
	.name = "revert",
	.writes = true,
	.summary = "discard a disk's top delta: back to its last snapshot",
	.usage = "[--dry-run] [--json] [--scan DIR]... DISK\n"
		 "\n"
		 "DISK's top is replaced by an empty delta of its own kind (monolithic\n"
		 "or split sparse, vmfsSparse, seSparse) and file names over the same\n"
		 "parent, atomically: DISK reads as its parent snapshot.\n"
		 "\n"
		 "  -n, --dry-run  print the plan and stop\n"
		 "  --json         the plan / the result as JSON\n"
		 "  --scan DIR     look for more disks under DIR",
	.run = revert_run,
};
