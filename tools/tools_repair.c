/* tools — `vdelta check --repair [--dry-run] [--json] LAYER` (top layer,
 * over group_repair).
 *
 * Owns: running the repair, printing what was done (the plan format of
 * the group commands), and checking the layer again afterwards: exit 0
 * only when vmdk_check then finds nothing.
 */
#include "group.h"
#include "tools.h"

static int recheck(const char *path, bool quiet)
{
	struct vmdk_check_result r = {0};
	struct vmdk_disk *d;
	int rc = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);

	if (rc < 0)
		return tools_fail(path, rc);
	rc = vmdk_check(d, NULL, NULL, &r);
	vmdk_close(d);
	if (rc < 0)
		return tools_fail(path, rc);
	if (!quiet)
		printf("%s: %u errors, %u warnings, %llu bytes leaked\n", path, r.errors,
		       r.warnings, (unsigned long long)r.leaked);
	if (r.errors || r.warnings || r.leaked) {
		tools_err("%s: problems remain after the repair (see vdelta check)", path);
		return TOOLS_ERR;
	}
	return TOOLS_OK;
}

int tools_repair_run(const char *path, bool dry_run, bool json)
{
	int rc = tools_group_run(path, NULL, 0, dry_run ? GROUP_DRY_RUN : 0, json, false,
				 group_repair); /* compaction moves data: progress */

	return rc != TOOLS_OK || dry_run ? rc : recheck(path, json);
}
