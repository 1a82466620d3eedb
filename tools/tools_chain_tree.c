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

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_tree;

static const char *const flag_names[] = {
	"broken-link", "missing-parent", "orphan", "unreadable", "outside", "capacity-mismatch",
	"gone", "children-unknown",
};
#define NR_FLAGS (sizeof flag_names / sizeof flag_names[0])

static void group_sums(const struct group_tree *t, unsigned root, uint64_t *used,
		       uint64_t *full, unsigned *layers)
{
	*used = *full = 0;
	*layers = 0;
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		if (t->nodes[i].root != (int)root)
			continue;
		*used += t->nodes[i].file_bytes;
		*full += t->nodes[i].full_bytes;
		(*layers)++;
	}
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
	for (unsigned k = 0; k < t->nr_nodes && left; k++)
		if (t->nodes[k].parent == (int)i)
			text_node(t, k, sub, --left == 0, false);
	free(sub);
}

static void text_tree(const struct group_tree *t)
{
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		char u[32], f[32];
		uint64_t used, full;
		unsigned layers;
		if (t->nodes[i].parent >= 0 || t->nodes[i].root != (int)i)
			continue;
		group_sums(t, i, &used, &full, &layers);
		printf("group %s: %u disk%s, %u layer%s, uses %s, as full clones %s\n",
		       t->nodes[i].path, t->nodes[i].reach, t->nodes[i].reach == 1 ? "" : "s",
		       layers, layers == 1 ? "" : "s", tools_human_size(used, u, sizeof u),
		       tools_human_size(full, f, sizeof f));
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

static void json_tree(const struct group_tree *t)
{
	struct tools_json j;

	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	tools_json_arr_begin(&j, "groups");
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		uint64_t used, full;
		unsigned layers;
		if (t->nodes[i].parent >= 0 || t->nodes[i].root != (int)i)
			continue;
		group_sums(t, i, &used, &full, &layers);
		tools_json_obj_begin(&j, NULL);
		tools_json_str(&j, "root", t->nodes[i].path);
		tools_json_u64(&j, "disks", t->nodes[i].reach);
		tools_json_u64(&j, "used-bytes", used);
		tools_json_u64(&j, "full-clone-bytes", full);
		tools_json_arr_begin(&j, "layers");
		for (unsigned k = 0; k < t->nr_nodes; k++)
			if (t->nodes[k].root == (int)i)
				json_node(&j, t, k);
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
	json ? json_tree(t) : text_tree(t);
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
