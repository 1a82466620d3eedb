/* tools — `vdelta promote [--unlink] DISK` (vSphere PromoteDisks) (top
 * layer, over group_promote_unlink / group_consolidate).
 *
 * Owns: the command's options and usage; without --unlink it is
 * `consolidate DISK` (tools_consolidate.c).
 */
#include <getopt.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_promote;

#define MAX_SCAN 64u

static const struct option promote_opts[] = {
	{"unlink", no_argument, NULL, 'u'},
	{"dry-run", no_argument, NULL, 'n'},
	{"json", no_argument, NULL, 'j'},
	{"scan", required_argument, NULL, 's'},
	{"progress", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

static int promote_run(int argc, char **argv)
{
	char *scan[MAX_SCAN];
	unsigned nr_scan = 0, flags = 0;
	bool unlink = false, json = false, progress = false;
	int c;

	while ((c = getopt_long(argc, argv, "np", promote_opts, NULL)) != -1) {
		if (c == 'p')
			progress = true;
		else if (c == 'u')
			unlink = true;
		else if (c == 'n')
			flags |= GROUP_DRY_RUN;
		else if (c == 'j')
			json = true;
		else if (c == 's' && nr_scan < MAX_SCAN)
			scan[nr_scan++] = optarg;
		else
			return tools_usage(&tools_cmd_promote, c == '?' ? NULL :
					   "at most %u --scan folders", MAX_SCAN);
	}
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_promote, "expected one DISK");
	if (unlink)
		return tools_group_run(argv[optind], scan, nr_scan, flags, json, progress,
				       group_promote_unlink);
	return tools_consolidate_disk(argv[optind], scan, nr_scan, NULL, 0, flags, json,
				      progress);
}

const struct tools_cmd tools_cmd_promote = {
	.name = "promote",
	.writes = true,
	TOOLS_PAGE(promote),
	.run = promote_run,
};
