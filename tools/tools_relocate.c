/* tools — `vdelta relocate --mode MODE DISK DIR`: move a disk's layers to
 * another folder (top layer, over group_relocate).
 *
 * Owns: the options (--mode, --dry-run, --json, --scan DIR..., -p) and the
 * usage text; tools_group.c loads the group, shows progress and prints.
 */
#include <getopt.h>
#include <string.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_relocate;

#define MAX_SCAN 64u

static const struct option reloc_opts[] = {
	{"mode", required_argument, NULL, 'm'},
	{"dry-run", no_argument, NULL, 'n'},
	{"json", no_argument, NULL, 'j'},
	{"scan", required_argument, NULL, 's'},
	{"progress", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

/* The destination and mode, for the group operation below. */
static const char *reloc_dir;
static enum group_relocate_mode reloc_mode;

static int reloc_op(struct group *g, const char *disk, unsigned flags,
		    const struct vd_io *io, struct group_plan *plan)
{
	return group_relocate(g, disk, reloc_dir, reloc_mode, flags, io, plan);
}

static int parse_mode(const char *s)
{
	static const char *const names[] = { "child-most", "share", "no-share" };

	for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
		if (!strcmp(s, names[i]))
			return (int)i;
	return -1;
}

static int reloc_run(int argc, char **argv)
{
	char *scan[MAX_SCAN];
	unsigned nr_scan = 0, flags = 0;
	bool json = false, force = false;
	int c, mode = -1;

	while ((c = getopt_long(argc, argv, "m:np", reloc_opts, NULL)) != -1) {
		if (c == 'm' && (mode = parse_mode(optarg)) < 0)
			return tools_usage(&tools_cmd_relocate, "unknown mode '%s'", optarg);
		else if (c == 'n')
			flags |= GROUP_DRY_RUN;
		else if (c == 'j')
			json = true;
		else if (c == 'p')
			force = true;
		else if (c == 's' && nr_scan < MAX_SCAN)
			scan[nr_scan++] = optarg;
		else if (c != 'm')
			return tools_usage(&tools_cmd_relocate, c == 's' ?
					   "at most %u --scan folders" : NULL, MAX_SCAN);
	}
	if (mode < 0)
		return tools_usage(&tools_cmd_relocate, "--mode is required");
	if (optind != argc - 2)
		return tools_usage(&tools_cmd_relocate, "expected DISK and DIR");
	reloc_mode = (enum group_relocate_mode)mode;
	reloc_dir = argv[optind + 1];
	return tools_group_run(argv[optind], scan, nr_scan, flags, json, force, reloc_op);
}

const struct tools_cmd tools_cmd_relocate = {
	.name = "relocate",
	.writes = true,
	TOOLS_PAGE(relocate),
	.run = reloc_run,
};
