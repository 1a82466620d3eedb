/* tools — the chain commands that make layers: `snapshot`, `clone`, and the
 * `--parent` option of `create` (top layer, over chain.h).
 *
 * Owns: argument parsing and output of these commands; the chain layer does
 * the work and reports its own errors.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_snapshot, tools_cmd_clone;

/* After a refusal to write a layer whose uncleanShutdown is set: what to
 * run.  `cmd` is the command line that forces it. */
static int dirty_fail(const char *file, int rc, const char *cmd)
{
	int ret = tools_fail(file, rc);

	if (rc == -EBUSY)
		fprintf(stderr, "vdelta: a writer was interrupted: `vdelta check %s` shows "
			"what it left; `%s` writes anyway (the format layer repairs "
			"what it can on open)\n", file, cmd);
	return ret;
}

/* `vdelta create --parent PARENT [-t KIND] [--force-dirty] NEW`
 * (tools_create.c). */
int tools_chain_create_child(const char *parent, const char *new_path,
			     enum vmdk_subformat kind, bool force_dirty)
{
	struct group_child_opts o = { .kind = kind,
				      .flags = force_dirty ? CHAIN_OPEN_DIRTY_OK : 0 };
	char cmd[512];
	int rc = group_create_child(parent, new_path, false, &o, NULL);

	snprintf(cmd, sizeof cmd, "vdelta create --force-dirty --parent %s %s", parent,
		 new_path);
	return rc < 0 ? dirty_fail(parent, rc, cmd) : TOOLS_OK;
}

/* ---- snapshot ----------------------------------------------------------------- */

/* -t for a new delta: the hosted sparse kinds and the ESXi deltas */
static bool delta_kind_ok(enum vmdk_subformat k)
{
	return k == VMDK_MONOLITHIC_SPARSE || k == VMDK_TWOGB_SPARSE ||
	       k == VMDK_VMFS_SPARSE || k == VMDK_SESPARSE;
}

static int delta_kind_arg(const struct tools_cmd *cmd, const char *arg,
			  enum vmdk_subformat *kind)
{
	if (vmdk_subformat_parse(arg, kind) < 0 || !delta_kind_ok(*kind))
		return tools_usage(cmd, "'%s' is not a delta kind (monolithicSparse, "
				   "twoGbMaxExtentSparse, vmfsSparse, seSparse)", arg);
	return TOOLS_OK;
}

static int snapshot_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"subformat", required_argument, NULL, 't'},
		{"force-dirty", no_argument, NULL, 'F'},
		{NULL, 0, NULL, 0}};
	struct group_child_opts o = { .kind = GROUP_DELTA_AUTO };
	char *new_top, cmd[512];
	int c, rc;

	while ((c = getopt_long(argc, argv, "t:", opts, NULL)) != -1)
		if (c == 'F')
			o.flags |= CHAIN_OPEN_DIRTY_OK;
		else if (c != 't')
			return tools_usage(&tools_cmd_snapshot, NULL);
		else if ((rc = delta_kind_arg(&tools_cmd_snapshot, optarg, &o.kind)) != TOOLS_OK)
			return rc;
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_snapshot, "expected one DISK");
	rc = group_snapshot(argv[optind], &o, NULL, &new_top);
	snprintf(cmd, sizeof cmd, "vdelta snapshot --force-dirty %s", argv[optind]);
	if (rc < 0)
		return dirty_fail(argv[optind], rc, cmd);
	printf("%s\n", new_top);
	free(new_top);
	return TOOLS_OK;
}

const struct tools_cmd tools_cmd_snapshot = {
	.name = "snapshot",
	.writes = true,
	TOOLS_PAGE(snapshot),
	.run = snapshot_run,
};

/* ---- clone -------------------------------------------------------------------- */

enum clone_mode { CLONE_NONE, CLONE_LINKED, CLONE_FROM_CURRENT, CLONE_FULL };

static const struct option clone_opts[] = {
	{"linked", no_argument, NULL, 'l'},
	{"from-current", no_argument, NULL, 'c'},
	{"full", no_argument, NULL, 'f'},
	{"subformat", required_argument, NULL, 't'},
	{"preallocate", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

static int clone_do(enum clone_mode mode, const char *src, const char *dst,
		    enum vmdk_subformat sf, bool have_sf, bool prealloc)
{
	switch (mode) {
	case CLONE_LINKED: {
		struct group_child_opts o = { .kind = have_sf ? sf : GROUP_DELTA_AUTO };
		return group_create_child(src, dst, true, &o, NULL);
	}
	case CLONE_FROM_CURRENT:
		return group_clone_from_current(src, dst, NULL);
	default:
		return group_clone_full(src, dst, sf, prealloc, NULL);
	}
}

static int clone_run(int argc, char **argv)
{
	enum clone_mode mode = CLONE_NONE;
	enum vmdk_subformat sf = VMDK_MONOLITHIC_SPARSE;
	bool have_sf = false, prealloc = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "t:", clone_opts, NULL)) != -1) {
		if (c == 'p') {
			prealloc = true;
			continue;
		}
		if (c == 't' && vmdk_subformat_parse(optarg, &sf) == 0) {
			have_sf = true;
			continue;
		}
		if (c == 't')
			return tools_usage(&tools_cmd_clone, "unknown subformat '%s'", optarg);
		if (c == '?' || mode != CLONE_NONE)
			return tools_usage(&tools_cmd_clone, c == '?' ? NULL :
					   "give one of --linked, --from-current, --full");
		mode = c == 'l' ? CLONE_LINKED : c == 'c' ? CLONE_FROM_CURRENT : CLONE_FULL;
	}
	if (mode == CLONE_NONE)
		return tools_usage(&tools_cmd_clone, "give one of --linked, --from-current, --full");
	if (have_sf && mode == CLONE_FROM_CURRENT)
		return tools_usage(&tools_cmd_clone, "-t goes with --full or --linked");
	if (have_sf && mode == CLONE_LINKED && !delta_kind_ok(sf))
		return tools_usage(&tools_cmd_clone, "'%s' is not a delta kind",
				   vmdk_subformat_name(sf));
	if (prealloc && mode != CLONE_FULL)
		return tools_usage(&tools_cmd_clone, "--preallocate goes with --full only");
	if (optind != argc - 2)
		return tools_usage(&tools_cmd_clone, "expected SOURCE and NEW");
	rc = clone_do(mode, argv[optind], argv[optind + 1], sf, have_sf, prealloc);
	return rc < 0 ? tools_fail(argv[optind + 1], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_clone = {
	.name = "clone",
	.writes = true,
	TOOLS_PAGE(clone),
	.run = clone_run,
};
