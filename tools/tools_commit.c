/* tools — `vdelta commit [--dry-run] LAYER`: merge a layer into its parent
 * (top layer, over group_commit).
 *
 * Owns: the command's usage text; tools_group.c does the rest.
 */
#include "group.h"
#include "tools.h"

extern const struct tools_cmd tools_cmd_commit;

static int commit_run(int argc, char **argv)
{
	return tools_group_main(&tools_cmd_commit, argc, argv, group_commit, false);
}

const struct tools_cmd tools_cmd_commit = {
	.name = "commit",
	.writes = true,
	.summary = "merge a layer into its parent and remove it (snapshot removal)",
	.usage = "[--dry-run] [--json] [-p] [--scan DIR]... LAYER\n"
		 "\n"
		 "LAYER's data goes into its parent, LAYER's children are re-pointed to\n"
		 "the parent (parentCID and hint), and LAYER is removed.  Refused, with\n"
		 "nothing changed, when another disk reaches the parent: disks are found\n"
		 "in the folders of LAYER and of its base (recursively) and in each\n"
		 "--scan DIR; a child recorded beside the parent but not found counts.\n"
		 "When LAYER was a disk's top, the parent becomes that disk's top.\n"
		 "\n"
		 "  -n, --dry-run  print the plan (layers written, re-pointed, removed;\n"
		 "                 bytes to copy; space needed and free) and stop\n"
		 "  --json         the plan / the result as JSON\n"
		 "  -p             show progress even when stderr is not a terminal\n"
		 "  --scan DIR     look for more disks under DIR\n"
		 "\n"
		 "Safe to interrupt: the next group command finishes the commit.",
	.run = commit_run,
};
