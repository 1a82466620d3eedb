/* tools — `vdelta create`: a new, empty base disk (top layer).
 *
 * Owns: parsing the create options into struct vmdk_create_opts; the format
 * layer (vmdk_create) does the work and refuses to overwrite anything.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_create;

enum { OPT_ADAPTER = 256, OPT_HWVERSION, OPT_ZEROED_GRAIN, OPT_PARENT, OPT_FORCE_DIRTY };

static const struct option create_opts[] = {
	{"size", required_argument, NULL, 's'},
	{"subformat", required_argument, NULL, 't'},
	{"adapter", required_argument, NULL, OPT_ADAPTER},
	{"hwversion", required_argument, NULL, OPT_HWVERSION},
	{"zeroed-grain", no_argument, NULL, OPT_ZEROED_GRAIN},
	{"parent", required_argument, NULL, OPT_PARENT}, /* tools_chain.c */
	{"force-dirty", no_argument, NULL, OPT_FORCE_DIRTY},
	{NULL, 0, NULL, 0},
};

static int parse_hwversion(const char *s, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 1 || v > INT_MAX)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

/* One option into o; TOOLS_OK or TOOLS_USAGE. */
static int create_opt(int c, const char *arg, struct vmdk_create_opts *o)
{
	const struct tools_cmd *cmd = &tools_cmd_create;

	switch (c) {
	case 's':
		if (vd_parse_size(arg, &o->capacity) < 0 || o->capacity == 0)
			return tools_usage(cmd, "invalid size '%s'", arg);
		return TOOLS_OK;
	case 't':
		if (vmdk_subformat_parse(arg, &o->subformat) < 0)
			return tools_usage(cmd, "unknown subformat '%s'", arg);
		return TOOLS_OK;
	case OPT_ADAPTER:
		o->adapter = arg;
		return TOOLS_OK;
	case OPT_HWVERSION:
		if (parse_hwversion(arg, &o->hwversion) < 0)
			return tools_usage(cmd, "invalid hardware version '%s'", arg);
		return TOOLS_OK;
	case OPT_ZEROED_GRAIN:
		o->zeroed_grain = true;
		return TOOLS_OK;
	default:
		return tools_usage(cmd, NULL);
	}
}

/* A stream is finalised (grain directory, footer) by vmdk_close, under a
 * writer's lock. */
static int finish_stream(const char *path)
{
	struct vmdk_disk *d;
	int rc = vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d);

	if (rc < 0)
		return rc;
	rc = vmdk_lock(d, VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE,
		       VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (rc < 0) {
		vmdk_close(d);
		return rc;
	}
	return vmdk_close(d);
}

static int create_run(int argc, char **argv)
{
	struct vmdk_create_opts o = {
		.subformat = VMDK_MONOLITHIC_SPARSE,
		.parent_cid = VMDK_CID_NONE,
	};
	const char *parent = NULL;
	bool force_dirty = false, have_sf = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "s:t:", create_opts, NULL)) != -1)
		if (c == OPT_PARENT)
			parent = optarg;
		else if (c == OPT_FORCE_DIRTY)
			force_dirty = true;
		else if ((rc = create_opt(c, optarg, &o)) != TOOLS_OK)
			return rc;
		else
			have_sf |= c == 't';
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_create, "expected one FILE");
	if (parent) /* a delta: size and format come from the parent (or -t) */
		return tools_chain_create_child(parent, argv[optind],
						have_sf ? o.subformat : GROUP_DELTA_AUTO,
						force_dirty);
	if (force_dirty)
		return tools_usage(&tools_cmd_create, "--force-dirty goes with --parent");
	if (!o.capacity)
		return tools_usage(&tools_cmd_create, "missing -s SIZE");
	rc = vmdk_create(argv[optind], &o, NULL);
	if (rc == 0 && o.subformat == VMDK_STREAM_OPTIMIZED)
		rc = finish_stream(argv[optind]);
	return rc < 0 ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_create = {
	.name = "create",
	.writes = true,
	TOOLS_PAGE(create),
	.run = create_run,
};
