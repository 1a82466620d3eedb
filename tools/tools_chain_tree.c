/* tools — `vdelta tree DIR...`: the linked-clone groups in some folders
 * (top layer, over chain.h's group_tree_scan).
 *
 * Owns: printing each group (all disks that reach one base) as a tree with
 * per-layer size and how many disks reach it, and per group the space used
 * against what full clones would take; flags broken links, missing parents,
 * orphaned snapshots.  Exit status 1 when any link is broken or missing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_tree;

static const char *const flag_names[] = {
	"broken-link", "missing-parent", "orphan", "unreadable", "outside", "capacity-mismatch",
	"gone", "children-unknown",
};
#define NR_FLAGS (sizeof flag_names / sizeof flag_names[0])

/* What `tree` prints per group, indexed by its root: the space used, as
 * full clones, the layers, and the layers in index order (first, next).
 * One pass over the nodes, whatever the number of groups. */
struct sums {
	uint64_t *used, *full;
	unsigned *layers;
	int *first, *next;
};

static void sums_free(struct sums *s)
{
	free(s->used);
	free(s->full);
	free(s->layers);
	free(s->first);
	free(s->next);
}

static int sums_make(const struct group_tree *t, struct sums *s)
{
	size_t n = t->nr_nodes + 1;

	s->used = calloc(n, sizeof *s->used);
	s->full = calloc(n, sizeof *s->full);
	s->layers = calloc(n, sizeof *s->layers);
	s->first = malloc(n * sizeof *s->first);
	s->next = malloc(n * sizeof *s->next);
	if (!s->used || !s->full || !s->layers || !s->first || !s->next) {
		sums_free(s);
		return -ENOMEM;
	}
	memset(s->first, 0xff, n * sizeof *s->first);
	for (unsigned i = t->nr_nodes; i-- > 0;) {
		unsigned r = (unsigned)t->nodes[i].root;
		s->used[r] += t->nodes[i].file_bytes;
		s->full[r] += t->nodes[i].full_bytes;
		s->layers[r]++;
		s->next[i] = s->first[r];
		s->first[r] = (int)i;
	}
	return 0;
}

static void text_flags(const struct group_tree_node *n, const struct group_tree *t)
{
	if (n->frozen)
		printf("  frozen");
	if (n->flags & GROUP_TREE_BROKEN)
		printf("  BROKEN LINK: parentCID=%08x, parent CID=%08x", n->parent_cid,
		       t->nodes[n->parent].cid);
	if (n->flags & GROUP_TREE_MISSING)
		printf("  MISSING PARENT \"%s\"", n->hint);
	if (n->flags & GROUP_TREE_CAPACITY)
		printf("  CAPACITY differs from the parent's");
	if (n->flags & GROUP_TREE_ORPHAN)
		printf("  orphan (frozen, no child uses it)");
	if (n->flags & GROUP_TREE_UNREADABLE)
		printf("  UNREADABLE");
	if (n->flags & GROUP_TREE_OUTSIDE)
		printf("  (outside the folders scanned)");
	if (n->flags & GROUP_TREE_UNKNOWN)
		printf("  children unknown (no record: `vdelta adopt`)");
	if (n->aliases)
		printf("  %u other name%s", n->aliases, n->aliases == 1 ? "" : "s");
}

static void text_node(const struct group_tree *t, unsigned i, const char *prefix,
		      bool last, bool top)
{
	const struct group_tree_node *n = &t->nodes[i];
	char size[32], *sub;
	unsigned left = n->nr_children;

	printf("%s%s%s  %s  %u disk%s", prefix, top ? "" : last ? "`-- " : "|-- ", n->path,
	       tools_human_size(n->file_bytes, size, sizeof size), n->reach,
	       n->reach == 1 ? "" : "s");
	text_flags(n, t);
	putchar('\n');
	if (asprintf(&sub, "%s%s", prefix, top ? "" : last ? "    " : "|   ") < 0)
		return;
	for (int k = n->first_child; k >= 0 && left; k = t->nodes[k].next_sibling)
		text_node(t, (unsigned)k, sub, --left == 0, false);
	free(sub);
}

static void text_tree(const struct group_tree *t, const struct sums *s)
{
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		char u[32], f[32];
		if (t->nodes[i].parent >= 0 || t->nodes[i].root != (int)i)
			continue;
		printf("group %s: %u disk%s, %u layer%s, uses %s, as full clones %s\n",
		       t->nodes[i].path, t->nodes[i].reach, t->nodes[i].reach == 1 ? "" : "s",
		       s->layers[i], s->layers[i] == 1 ? "" : "s",
		       tools_human_size(s->used[i], u, sizeof u),
		       tools_human_size(s->full[i], f, sizeof f));
		text_node(t, i, "  ", true, true);
		putchar('\n');
	}
	for (unsigned i = 0; i < t->nr_unscanned; i++)
		printf("not scanned (a clone there is not seen): %s\n", t->unscanned[i]);
}

static void json_node(struct tools_json *j, const struct group_tree *t, unsigned i)
{
	const struct group_tree_node *n = &t->nodes[i];
	char cid[16], pcid[16];

	snprintf(cid, sizeof cid, "%08x", n->cid);
	snprintf(pcid, sizeof pcid, "%08x", n->parent_cid);
	tools_json_obj_begin(j, NULL);
	tools_json_str(j, "filename", n->path);
	tools_json_str(j, "parent", n->parent >= 0 ? t->nodes[n->parent].path : NULL);
	tools_json_str(j, "parent-hint", n->hint);
	tools_json_str(j, "cid", cid);
	tools_json_str(j, "parent-cid", pcid);
	tools_json_bool(j, "frozen", n->frozen);
	tools_json_u64(j, "virtual-size", n->capacity);
	tools_json_u64(j, "file-bytes", n->file_bytes);
	tools_json_u64(j, "children", n->nr_children);
	tools_json_u64(j, "reached-by", n->reach);
	tools_json_u64(j, "other-names", n->aliases);
	tools_json_arr_begin(j, "flags");
	for (unsigned f = 0; f < NR_FLAGS; f++)
		if (n->flags & (1u << f))
			tools_json_str(j, NULL, flag_names[f]);
	tools_json_arr_end(j);
	tools_json_obj_end(j);
}

static void json_tree(const struct group_tree *t, const struct sums *s)
{
	struct tools_json j;

	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	tools_json_arr_begin(&j, "groups");
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		if (t->nodes[i].parent >= 0 || t->nodes[i].root != (int)i)
			continue;
		tools_json_obj_begin(&j, NULL);
		tools_json_str(&j, "root", t->nodes[i].path);
		tools_json_u64(&j, "disks", t->nodes[i].reach);
		tools_json_u64(&j, "used-bytes", s->used[i]);
		tools_json_u64(&j, "full-clone-bytes", s->full[i]);
		tools_json_arr_begin(&j, "layers");
		for (int k = s->first[i]; k >= 0; k = s->next[k])
			json_node(&j, t, (unsigned)k);
		tools_json_arr_end(&j);
		tools_json_obj_end(&j);
	}
	tools_json_arr_end(&j);
	tools_json_arr_begin(&j, "not-scanned");
	for (unsigned i = 0; i < t->nr_unscanned; i++)
		tools_json_str(&j, NULL, t->unscanned[i]);
	tools_json_arr_end(&j);
	tools_json_obj_end(&j);
	putchar('\n');
}

static const struct option tree_opts[] = {
	{"json", no_argument, NULL, 'j'},
	{NULL, 0, NULL, 0},
};

static int tree_run(int argc, char **argv)
{
	struct group_tree *t;
	struct sums s = {0};
	bool json = false, bad = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", tree_opts, NULL)) != -1) {
		if (c != 'j')
			return tools_usage(&tools_cmd_tree, NULL);
		json = true;
	}
	if (optind >= argc)
		return tools_usage(&tools_cmd_tree, "expected at least one DIR");
	rc = group_tree_scan(argv + optind, (unsigned)(argc - optind), GROUP_SCAN_SIZES, &t);
	if (rc < 0)
		return tools_fail(argv[optind], rc);
	if ((rc = sums_make(t, &s)) < 0) {
		group_tree_free(t);
		return tools_fail(argv[optind], rc);
	}
	json ? json_tree(t, &s) : text_tree(t, &s);
	sums_free(&s);
	for (unsigned i = 0; i < t->nr_nodes; i++)
		bad |= (t->nodes[i].flags & (GROUP_TREE_BROKEN | GROUP_TREE_MISSING |
					     GROUP_TREE_UNREADABLE | GROUP_TREE_CAPACITY)) != 0;
	group_tree_free(t);
	return bad ? TOOLS_ERR : TOOLS_OK;
}

const struct tools_cmd tools_cmd_tree = {
	.name = "tree",
	TOOLS_PAGE(tree),
	.run = tree_run,
};
