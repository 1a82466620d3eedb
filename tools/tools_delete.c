/* tools — `vdelta delete [--dry-run] [--orphans] DISK`: remove a disk's own
 * layers (top layer, over group_delete).
 *
 * Owns: the command's usage text; tools_group.c does the rest.
 */
#include "group.h"
#include "tools.h"

extern const struct tools_cmd tools_cmd_delete;

static int delete_run(int argc, char **argv)
{
	return tools_group_main(&tools_cmd_delete, argc, argv, group_delete, true);
}

const struct tools_cmd tools_cmd_delete = {
	.name = "delete",
	.writes = true,
	.summary = "remove a disk's layers that no other disk uses",
	.usage = "[--dry-run] [--json] [--orphans] [--scan DIR]... DISK\n"
		 "\n"
		 "Removes DISK's top and every layer below it that no other disk\n"
		 "reaches; the first shared layer and everything below stay.  A layer\n"
		 "left without any disk found (only a recorded child that is out of\n"
		 "reach holds it) is reported as an orphan and kept.\n"
		 "\n"
		 "  -n, --dry-run  print the plan and stop\n"
		 "  --json         the plan / the result as JSON\n"
		 "  --orphans      remove the orphans too\n"
		 "  --scan DIR     look for more disks under DIR",
	.run = delete_run,
};
