/* tools — `vdelta consolidate`: collapse a disk's unshared layers (top
 * layer, over chain_group_consolidate).
 *
 * Owns: the options (--keep LAYER..., --scan DIR..., --all DIR, -p), the
 * per-disk plan output (tools_group.c's format), and for --all the depth
 * of each disk and the space of the folder before and after.
 */
#include <getopt.h>
#include <stdlib.h>

#include "chain.h"
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

int tools_consolidate_disk(const char *disk, char *const *scan, unsigned nr_scan,
			   char *const *keep, unsigned nr_keep, unsigned flags, bool json,
			   bool force_progress)
{
	struct chain_plan plan = {0};
	struct tools_progress pr;
	int rc;

	tools_group_progress(&plan, &pr, force_progress);
	rc = chain_group_consolidate(disk, scan, nr_scan, keep, nr_keep, flags, NULL, &plan);
	tools_progress_end(&pr, pr.total);

	if (rc >= 0)
		tools_group_print(&plan, flags & CHAIN_GROUP_DRY_RUN, json);
	chain_plan_free(&plan);
	return rc < 0 ? tools_fail(disk, rc) : TOOLS_OK;
}

static unsigned depth_of(const struct chain_tree *t, unsigned i)
{
	unsigned n = 0;

	for (int at = (int)i; at >= 0 && n <= t->nr_nodes; at = t->nodes[at].parent)
		n++;
	return n;
}

static uint64_t space_of(const struct chain_tree *t)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < t->nr_nodes; i++)
		sum += t->nodes[i].file_bytes;
	return sum;
}

/* --all DIR: every disk (leaf) found under DIR. */
static int consolidate_all(char *dir, const struct cons_args *a)
{
	struct chain_tree *t, *after;
	char h1[32], h2[32];
	int rc = chain_tree_scan(&dir, 1, &t), worst = TOOLS_OK;

	if (rc < 0)
		return tools_fail(dir, rc);
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		if (t->nodes[i].nr_children || (t->nodes[i].flags & CHAIN_TREE_OUTSIDE))
			continue;
		printf("%s: depth %u before\n", t->nodes[i].path, depth_of(t, i));
		rc = tools_consolidate_disk(t->nodes[i].path, &dir, 1, a->keep, a->nr_keep,
					    a->flags, a->json, a->progress);
		worst = rc != TOOLS_OK ? rc : worst;
	}
	if ((rc = chain_tree_scan(&dir, 1, &after)) < 0) {
		chain_tree_free(t);
		return tools_fail(dir, rc);
	}
	for (unsigned i = 0; i < after->nr_nodes; i++)
		if (!after->nodes[i].nr_children && !(after->nodes[i].flags & CHAIN_TREE_OUTSIDE))
			printf("%s: depth %u after\n", after->nodes[i].path, depth_of(after, i));
	printf("%s: space %s before, %s after\n", dir,
	       tools_human_size(space_of(t), h1, sizeof h1),
	       tools_human_size(space_of(after), h2, sizeof h2));
	chain_tree_free(t);
	chain_tree_free(after);
	return worst;
}

static int cons_run(int argc, char **argv)
{
	struct cons_args a = {0};
	int c;

	while ((c = getopt_long(argc, argv, "np", cons_opts, NULL)) != -1) {
		if (c == 'p')
			a.progress = true;
		else if (c == 'n')
			a.flags |= CHAIN_GROUP_DRY_RUN;
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
	TOOLS_PAGE(consolidate),
	.run = cons_run,
};
