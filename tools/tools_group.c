/* tools — what the group commands share (top layer, over chain.h's group
 * operations).
 *
 * Owns: option parsing (--dry-run, --json, --scan DIR..., -p, --orphans),
 * the progress meter of data moves, and the plan / result output: text
 * (one step a line, then bytes to copy and space) or JSON
 * {"op","dry_run","steps":[{"action","path","bytes"}],"copy_bytes",
 * "space_needed","space_available","result"}.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

#define MAX_SCAN 64u

struct group_args {
	bool dry_run, json, force_progress;
	unsigned flags;
	char *scan[MAX_SCAN];
	unsigned nr_scan;
};

static const struct option group_opts[] = {
	{"dry-run", no_argument, NULL, 'n'},
	{"json", no_argument, NULL, 'j'},
	{"scan", required_argument, NULL, 's'},
	{"orphans", no_argument, NULL, 'o'},
	{"progress", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

static int parse(const struct tools_cmd *cmd, int argc, char **argv,
		 bool allow_orphans, struct group_args *a)
{
	int c;

	while ((c = getopt_long(argc, argv, "np", group_opts, NULL)) != -1) {
		if (c == 'n')
			a->flags |= GROUP_DRY_RUN;
		else if (c == 'j')
			a->json = true;
		else if (c == 'p')
			a->force_progress = true;
		else if (c == 'o' && allow_orphans)
			a->flags |= GROUP_ORPHANS;
		else if (c == 's' && a->nr_scan < MAX_SCAN)
			a->scan[a->nr_scan++] = optarg;
		else if (c == 's')
			return tools_usage(cmd, "at most %u --scan folders", MAX_SCAN);
		else
			return tools_usage(cmd, c == 'o' ? "--orphans goes with delete only"
							 : NULL);
	}
	if (optind != argc - 1)
		return tools_usage(cmd, "expected one DISK");
	a->dry_run = a->flags & GROUP_DRY_RUN;
	return TOOLS_OK;
}

static void print_json(const struct group_plan *p, bool dry_run)
{
	struct tools_json j;

	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	tools_json_str(&j, "op", p->op);
	tools_json_bool(&j, "dry_run", dry_run);
	tools_json_arr_begin(&j, "steps");
	for (unsigned i = 0; i < p->nr_steps; i++) {
		bool rec = p->steps[i].kind == GROUP_STEP_RECORD;
		tools_json_obj_begin(&j, NULL);
		tools_json_str(&j, "action", group_plan_step_name(p->steps[i].kind));
		tools_json_str(&j, "path", p->steps[i].path);
		tools_json_u64(&j, rec ? "children" : "bytes", p->steps[i].bytes);
		if (p->steps[i].why)
			tools_json_str(&j, "why", p->steps[i].why);
		tools_json_obj_end(&j);
	}
	tools_json_arr_end(&j);
	tools_json_arr_begin(&j, "scanned");
	for (unsigned i = 0; i < p->nr_scanned; i++)
		tools_json_str(&j, NULL, p->scanned[i]);
	tools_json_arr_end(&j);
	tools_json_arr_begin(&j, "not_scanned");
	for (unsigned i = 0; i < p->nr_unscanned; i++)
		tools_json_str(&j, NULL, p->unscanned[i]);
	tools_json_arr_end(&j);
	tools_json_u64(&j, "copy_bytes", p->copy_bytes);
	tools_json_u64(&j, "space_needed", p->space_needed);
	tools_json_u64(&j, "space_available", p->space_avail);
	tools_json_str(&j, "result", p->result);
	tools_json_obj_end(&j);
}

static void print_text(const struct group_plan *p, bool dry_run)
{
	char h1[32], h2[32], h3[32];

	printf("%s%s:%s\n", p->op, dry_run ? " (dry run: nothing changed)" : "",
	       p->nr_steps ? "" : " nothing to do");
	if (p->nr_scanned)
		printf("  scanned:  ");
	for (unsigned i = 0; i < p->nr_scanned; i++)
		printf("%s%s", p->scanned[i], i + 1 < p->nr_scanned ? ", " : "\n");
	for (unsigned i = 0; i < p->nr_unscanned; i++)
		printf("  not scanned (a clone there is not seen): %s\n", p->unscanned[i]);
	if (!p->nr_steps)
		return;
	for (unsigned i = 0; i < p->nr_steps; i++) {
		const struct group_plan_step *s = &p->steps[i];
		printf("  %-9s %s", group_plan_step_name(s->kind), s->path);
		if (s->kind == GROUP_STEP_RECORD)
			printf("  (%llu child%s)", (unsigned long long)s->bytes,
			       s->bytes == 1 ? "" : "ren");
		else if (s->bytes)
			printf("  (%s)", tools_human_size(s->bytes, h1, sizeof h1));
		if (s->why)
			printf("  (%s)", s->why);
		putchar('\n');
	}
	if (p->copy_bytes || p->space_needed)
		printf("data to copy: %s; space needed: %s of %s free\n",
		       tools_human_size(p->copy_bytes, h1, sizeof h1),
		       tools_human_size(p->space_needed, h2, sizeof h2),
		       tools_human_size(p->space_avail, h3, sizeof h3));
	if (p->result && !dry_run)
		printf("disk: %s\n", p->result);
}

void tools_group_print(const struct group_plan *p, bool dry_run, bool json)
{
	json ? print_json(p, dry_run) : print_text(p, dry_run);
}

void tools_group_scanned(struct group_plan *plan, const struct group *g)
{
	plan->scanned = group_scanned(g, &plan->nr_scanned);
	plan->unscanned = group_nodes(g)->unscanned;
	plan->nr_unscanned = group_nodes(g)->nr_unscanned;
}

void tools_group_progress(struct group_plan *plan, struct tools_progress *pr, bool force)
{
	tools_progress_init(pr, 0, force);
	plan->progress = tools_progress_cb;
	plan->progress_opaque = pr;
}

int tools_group_run(const char *disk, char *const *scan, unsigned nr_scan,
		    unsigned flags, bool json, bool force_progress, tools_group_op *op)
{
	struct group_plan plan = {0};
	struct tools_progress pr;
	struct group *g;
	int rc = group_load(disk, scan, nr_scan, flags, NULL, &g);

	if (rc < 0)
		return tools_fail(disk, rc);
	tools_group_progress(&plan, &pr, force_progress);
	rc = op(g, disk, flags, NULL, &plan);
	tools_progress_end(&pr, pr.total);
	tools_group_scanned(&plan, g);
	if (rc >= 0)
		tools_group_print(&plan, flags & GROUP_DRY_RUN, json);
	group_plan_free(&plan);
	group_free(g);
	return rc < 0 ? tools_fail(disk, rc) : TOOLS_OK;
}

int tools_group_main(const struct tools_cmd *cmd, int argc, char **argv,
		     tools_group_op *op, bool allow_orphans)
{
	struct group_args a = {0};
	int rc = parse(cmd, argc, argv, allow_orphans, &a);

	if (rc != TOOLS_OK)
		return rc;
	return tools_group_run(argv[optind], a.scan, a.nr_scan, a.flags, a.json,
			       a.force_progress, op);
}

/* ---- vdelta adopt -------------------------------------------------------------------------- */

extern const struct tools_cmd tools_cmd_adopt;

static int adopt_run(int argc, char **argv)
{
	struct group_args a = {0};
	struct group_plan plan = {0};
	struct group *g;
	int c, rc;

	while ((c = getopt_long(argc, argv, "n", group_opts, NULL)) != -1) {
		if (c == 'n')
			a.flags |= GROUP_DRY_RUN;
		else if (c == 'j')
			a.json = true;
		else
			return tools_usage(&tools_cmd_adopt, c == '?' ? NULL :
					   "--dry-run and --json only");
	}
	if (optind == argc)
		return tools_usage(&tools_cmd_adopt, "expected DIR...");
	rc = group_load(NULL, argv + optind, (unsigned)(argc - optind), a.flags, NULL,
			&g);
	if (rc < 0)
		return tools_fail(argv[optind], rc);
	rc = group_adopt(g, a.flags, NULL, &plan);
	tools_group_scanned(&plan, g);
	if (rc >= 0)
		tools_group_print(&plan, a.flags & GROUP_DRY_RUN, a.json);
	group_plan_free(&plan);
	group_free(g);
	return rc < 0 ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_adopt = {
	.name = "adopt",
	TOOLS_PAGE(adopt),
	.run = adopt_run,
	.writes = true,
};
