/* tools — `vdelta check`: consistency of one VMDK's extents (top layer).
 *
 * Owns: running vmdk_check on a disk opened with VMDK_OPEN_DIRTY_OK and
 * reporting each problem as "FILE: message" plus a summary, as text or
 * JSON.  Exit 0 when nothing was found, 1 when anything was (errors,
 * warnings, leaked grains) or the check could not run.
 */
#include <getopt.h>

#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_check;

struct check_out {
	struct tools_json *json; /* NULL: text */
};

static void check_problem(void *opaque, bool is_error, const char *file,
			  const char *msg)
{
	struct check_out *out = opaque;

	if (!out->json) {
		printf("%s: %s%s\n", file, is_error ? "" : "warning: ", msg);
		return;
	}
	tools_json_obj_begin(out->json, NULL);
	tools_json_str(out->json, "file", file);
	tools_json_str(out->json, "severity", is_error ? "error" : "warning");
	tools_json_str(out->json, "message", msg);
	tools_json_obj_end(out->json);
}

static void check_summary(const char *path, const struct vmdk_check_result *r,
			  struct tools_json *j)
{
	if (j) {
		tools_json_u64(j, "errors", r->errors);
		tools_json_u64(j, "warnings", r->warnings);
		tools_json_u64(j, "allocated", r->allocated);
		tools_json_u64(j, "leaked", r->leaked);
		return;
	}
	printf("%s: %u errors, %u warnings, %llu bytes allocated, %llu bytes leaked\n",
	       path, r->errors, r->warnings, (unsigned long long)r->allocated,
	       (unsigned long long)r->leaked);
}

/* Run the check, writing problems as they come; JSON goes out whole even
 * when the check stops on an error, so that it still parses. */
static int check_disk(struct vmdk_disk *d, const char *path, bool json,
		      struct vmdk_check_result *r)
{
	struct tools_json j;
	struct check_out out = {json ? &j : NULL};
	int rc;

	if (json) {
		tools_json_init(&j, stdout);
		tools_json_obj_begin(&j, NULL);
		tools_json_str(&j, "filename", path);
		tools_json_arr_begin(&j, "problems");
	}
	rc = vmdk_check(d, check_problem, &out, r);
	if (json)
		tools_json_arr_end(&j);
	if (rc == 0)
		check_summary(path, r, out.json);
	if (json) {
		tools_json_bool(&j, "complete", rc == 0);
		tools_json_obj_end(&j);
	}
	return rc;
}

enum { OPT_STRICT_PATHS = 256 };

static const struct option check_opts[] = {
	{"json", no_argument, NULL, 'j'},
	{"force-share", no_argument, NULL, 'U'},
	{"strict-paths", no_argument, NULL, OPT_STRICT_PATHS},
	{"repair", no_argument, NULL, 'r'},
	{"dry-run", no_argument, NULL, 'n'},
	{NULL, 0, NULL, 0},
};

static int check_run(int argc, char **argv)
{
	struct vmdk_check_result r = {0};
	struct vmdk_disk *d;
	bool json = false, share = false, repair = false, dry_run = false;
	unsigned flags = VMDK_OPEN_DIRTY_OK;
	const char *path;
	int c, rc;

	while ((c = getopt_long(argc, argv, "U", check_opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'U')
			share = true;
		else if (c == OPT_STRICT_PATHS)
			flags |= VMDK_OPEN_STRICT_PATHS;
		else if (c == 'r')
			repair = true;
		else if (c == 'n')
			dry_run = true;
		else
			return tools_usage(&tools_cmd_check, NULL);
	}
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_check, "expected one FILE");
	path = argv[optind];
	if (repair)
		return tools_repair_run(path, dry_run, json);
	rc = tools_vmdk_open_read(path, flags, share, &d);
	if (rc < 0)
		return tools_fail(path, rc);
	rc = check_disk(d, path, json, &r);
	vmdk_close(d);
	if (rc < 0)
		return tools_fail(path, rc);
	return r.errors || r.warnings || r.leaked ? TOOLS_ERR : TOOLS_OK;
}

const struct tools_cmd tools_cmd_check = {
	.name = "check",
	TOOLS_PAGE(check),
	.run = check_run,
};
