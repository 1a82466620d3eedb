/* tools — `vdelta commit [--dry-run] LAYER`: merge a layer into its parent
 * (top layer, over group_commit).
 *
 * Owns: the command's usage text; tools_group.c does the rest.
 */
#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_commit;

static int commit_run(int argc, char **argv)
{
	return tools_group_main(&tools_cmd_commit, argc, argv, group_commit, false);
}

const struct tools_cmd tools_cmd_commit = {
	.name = "commit",
	.writes = true,
	TOOLS_PAGE(commit),
	.run = commit_run,
};
