/* tools — `vdelta consolidate`: collapse a disk's unshared layers (top
 * layer, over group_consolidate).
 *
 * Owns: the options (--keep LAYER..., --scan DIR..., --all DIR, -p), the
 * per-disk plan output (tools_group.c's format), and for --all the depth
 * of each disk and the space of the folder before and after (the folder
 * loaded once: consolidating N disks costs one scan).
 */
#include <getopt.h>
#include <stdlib.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_consolidate;

#define MAX_LIST 64u

static const struct option cons_opts[] = {
	{"dry-run", no_argument, NULL, 'n'},
	{"json", no_argument, NULL, 'j'},
	{"scan", required_argument, NULL, 's'},
	{"keep", required_argument, NULL, 'k'},
	{"all", no_argument, NULL, 'a'},
	{"progress", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

struct cons_args {
	unsigned flags;
	bool json, all, progress;
	char *scan[MAX_LIST], *keep[MAX_LIST];
	unsigned nr_scan, nr_keep;
};

static int consolidate_one(struct group *g, const char *disk, char *const *keep,
			   unsigned nr_keep, unsigned flags, bool json, bool force_progress)
{
	struct group_plan plan = {0};
	struct tools_progress pr;
	int rc;

	tools_group_progress(&plan, &pr, force_progress);
	rc = group_consolidate(g, disk, keep, nr_keep, flags, NULL, &plan);
	tools_progress_end(&pr, pr.total);
	tools_group_scanned(&plan, g);
	if (rc >= 0)
		tools_group_print(&plan, flags & GROUP_DRY_RUN, json);
	group_plan_free(&plan);
	return rc < 0 ? tools_fail(disk, rc) : TOOLS_OK;
}

int tools_consolidate_disk(const char *disk, char *const *scan, unsigned nr_scan,
			   char *const *keep, unsigned nr_keep, unsigned flags, bool json,
			   bool force_progress)
{
	struct group *g;
	int rc = group_load(disk, scan, nr_scan, flags, NULL, &g);

	if (rc < 0)
		return tools_fail(disk, rc);
	rc = consolidate_one(g, disk, keep, nr_keep, flags, json, force_progress);
	group_free(g);
	return rc;
}

static unsigned depth_of(const struct group_tree *t, unsigned i)
{
	unsigned n = 0;

	for (int at = (int)i; at >= 0 && n <= t->nr_nodes; at = t->nodes[at].parent)
		n++;
	return n;
}

static uint64_t space_of(const struct group_tree *t)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < t->nr_nodes; i++)
		sum += t->nodes[i].file_bytes;
	return sum;
}

static bool is_disk(const struct group_tree_node *n)
{
	return !n->nr_children && !(n->flags & (GROUP_TREE_OUTSIDE | GROUP_TREE_GONE));
}

/* The disks (leaves) of the folder, with their depth before. */
static int disks_of(const struct group_tree *t, char ***disks, unsigned *nr)
{
	int err = 0;

	for (unsigned i = 0; !err && i < t->nr_nodes; i++)
		if (is_disk(&t->nodes[i])) {
			printf("%s: depth %u before\n", t->nodes[i].path, depth_of(t, i));
			err = vd_strv_add(disks, nr, t->nodes[i].path);
		}
	return err;
}

/* The depth of each disk and the folder's space, after. */
static int report_after(char *dir, uint64_t before)
{
	struct group_tree *t;
	char h1[32], h2[32];
	int rc = group_tree_scan(&dir, 1, 0, &t);

	if (rc < 0)
		return tools_fail(dir, rc);
	for (unsigned i = 0; i < t->nr_nodes; i++)
		if (is_disk(&t->nodes[i]))
			printf("%s: depth %u after\n", t->nodes[i].path, depth_of(t, i));
	printf("%s: space %s before, %s after\n", dir,
	       tools_human_size(before, h1, sizeof h1),
	       tools_human_size(space_of(t), h2, sizeof h2));
	group_tree_free(t);
	return TOOLS_OK;
}

/* --all DIR: every disk (leaf) found under DIR, the folder loaded once. */
static int consolidate_all(char *dir, const struct cons_args *a)
{
	struct group *g;
	char **disks = NULL;
	unsigned nr = 0;
	uint64_t before;
	int rc = group_load(NULL, &dir, 1, a->flags, NULL, &g), worst = TOOLS_OK;

	if (rc < 0)
		return tools_fail(dir, rc);
	before = space_of(group_nodes(g));
	if ((rc = disks_of(group_nodes(g), &disks, &nr)) < 0)
		worst = tools_fail(dir, rc);
	for (unsigned i = 0; i < nr; i++) {
		rc = consolidate_one(g, disks[i], a->keep, a->nr_keep, a->flags, a->json,
				     a->progress);
		worst = rc != TOOLS_OK ? rc : worst;
	}
	vd_strv_free(disks, nr);
	group_free(g);
	rc = report_after(dir, before);
	return worst != TOOLS_OK ? worst : rc;
}

static int cons_run(int argc, char **argv)
{
	struct cons_args a = {0};
	int c;

	while ((c = getopt_long(argc, argv, "np", cons_opts, NULL)) != -1) {
		if (c == 'p')
			a.progress = true;
		else if (c == 'n')
			a.flags |= GROUP_DRY_RUN;
		else if (c == 'j')
			a.json = true;
		else if (c == 'a')
			a.all = true;
		else if (c == 's' && a.nr_scan < MAX_LIST)
			a.scan[a.nr_scan++] = optarg;
		else if (c == 'k' && a.nr_keep < MAX_LIST)
			a.keep[a.nr_keep++] = optarg;
		else
			return tools_usage(&tools_cmd_consolidate, c == '?' ? NULL :
					   "at most %u --scan / --keep", MAX_LIST);
	}
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_consolidate, "expected one DISK (or DIR with --all)");
	if (a.all)
		return consolidate_all(argv[optind], &a);
	return tools_consolidate_disk(argv[optind], a.scan, a.nr_scan, a.keep, a.nr_keep,
				      a.flags, a.json, a.progress);
}

const struct tools_cmd tools_cmd_consolidate = {
	.name = "consolidate",
	.writes = true,
	TOOLS_PAGE(consolidate),
	.run = cons_run,
};
