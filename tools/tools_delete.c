/* tools — `vdelta delete [--dry-run] [--orphans] DISK`: remove a disk's own
 * layers (top layer, over group_delete).
 *
 * Owns: the command's usage text; tools_group.c does the rest.
 */
#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_delete;

static int delete_run(int argc, char **argv)
{
	return tools_group_main(&tools_cmd_delete, argc, argv, group_delete, true);
}

const struct tools_cmd tools_cmd_delete = {
	.name = "delete",
	.writes = true,
	TOOLS_PAGE(delete),
	.run = delete_run,
};
