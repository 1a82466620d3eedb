/* tools — `vdelta revert [--dry-run] DISK`: back to the last snapshot (top
 * layer, over group_revert).
 *
 * Owns: the command's usage text; tools_group.c does the rest.
 */
#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_revert;

static int revert_run(int argc, char **argv)
{
	return tools_group_main(&tools_cmd_revert, argc, argv, group_revert, false);
}

const struct tools_cmd tools_cmd_revert = {
	.name = "revert",
	.writes = true,
	TOOLS_PAGE(revert),
	.run = revert_run,
};
