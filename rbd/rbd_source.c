/* rbd — the group half: which layers a group has, who is whose parent,
 * and the children an import records (layer 4, over chain.h).
 *
 * Owns every call this front end makes into group.h (group_tree_scan,
 * group_load and its tree, group_create_child which records a child and
 * freezes its parent, group_recover_near), so they sit in one place.  A group is loaded the way every group command loads it (its
 * interrupted operations recovered first), flattened into a list of
 * layers, parents before children; a layer whose link is broken, whose
 * parent is missing or unreadable, or whose size differs from its
 * parent's is refused here, before anything is sent.  rbd_source_open
 * then opens the chain of every layer read-only through one pool: each
 * layer file is held with a reader's lock (writers refused) until
 * rbd_source_close.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "rbd_int.h"

#define BAD_NODE (GROUP_TREE_BROKEN | GROUP_TREE_MISSING | GROUP_TREE_UNREADABLE | \
		  GROUP_TREE_CAPACITY)

static int find_layer(const struct rbd_source *s, const char *path)
{
	for (unsigned i = 0; i < s->nr; i++)
		if (!strcmp(s->layers[i].path, path))
			return (int)i;
	return -1;
}

static int refuse_node(const struct group_tree_node *n)
{
	const char *why = n->flags & GROUP_TREE_BROKEN	  ? "its parentCID is not its parent's CID"
			  : n->flags & GROUP_TREE_MISSING  ? "its parent is missing"
			  : n->flags & GROUP_TREE_CAPACITY ? "its size differs from its parent's"
							   : "it cannot be read";

	vd_err("%s: %s: the group is not exported (vdelta tree shows it)", n->path, why);
	return n->flags & GROUP_TREE_MISSING ? -ENOENT : -VD_EBADDATA;
}

static int add_node(struct rbd_source *s, const struct group_tree *t, unsigned i,
		    int parent, unsigned group)
{
	const struct group_tree_node *n = &t->nodes[i];
	struct rbd_layer *l, *grown = realloc(s->layers, (s->nr + 1) * sizeof *grown);

	if (!grown)
		return -ENOMEM;
	s->layers = grown;
	if (n->flags & BAD_NODE)
		return refuse_node(n);
	l = &s->layers[s->nr];
	*l = (struct rbd_layer){.path = realpath(n->path, NULL), .parent = parent,
				.nr_children = n->nr_children, .cid = n->cid,
				.capacity = n->capacity, .group = group};
	if (!l->path) {
		vd_err("%s: %s", n->path, strerror(errno));
		return -errno;
	}
	s->nr++;
	return 0;
}

/* The nodes of the group rooted at root, parents before children. */
static int add_tree(struct rbd_source *s, const struct group_tree *t, unsigned root)
{
	unsigned first = s->nr, *node = calloc(t->nr_nodes, sizeof *node), nr = 0;
	int err = node ? add_node(s, t, root, -1, first) : -ENOMEM;

	if (!err)
		node[nr++] = root;
	for (unsigned q = 0; !err && q < nr; q++)
		for (unsigned k = 0; !err && k < t->nr_nodes; k++)
			if (t->nodes[k].parent == (int)node[q]) {
				err = add_node(s, t, k, (int)(first + q), first);
				node[nr++] = k;
			}
	free(node);
	return err;
}

/* The group of path, unless a group already taken holds its base. */
static int add_group(struct rbd_source *s, const char *path, char *const *dirs,
		     unsigned nr_dirs, unsigned gflags)
{
	struct group *g;
	const struct group_tree *t;
	char *base;
	int err = group_load(path, dirs, nr_dirs, gflags, NULL, &g), n;

	if (err)
		return err;
	t = group_nodes(g);
	n = group_node(g, path);
	if (n < 0) {
		vd_err("%s: not found in its own folder's scan", path);
		group_free(g);
		return -ENOENT;
	}
	n = t->nodes[n].root;
	base = realpath(t->nodes[n].path, NULL);
	if (!base || find_layer(s, base) < 0)
		err = add_tree(s, t, (unsigned)n);
	free(base);
	group_free(g);
	return err;
}

int rbd_source_load(char *const *disks, unsigned nr_disks, char *const *dirs,
		    unsigned nr_dirs, unsigned flags, struct rbd_source *s)
{
	const unsigned gflags = flags & RBD_DRY_RUN ? GROUP_DRY_RUN : 0;
	struct group_tree *t = NULL;
	int err = 0;

	memset(s, 0, sizeof *s);
	for (unsigned i = 0; !err && i < nr_disks; i++)
		err = add_group(s, disks[i], dirs, nr_dirs, gflags);
	if (!err && !nr_disks)
		err = group_tree_scan(dirs, nr_dirs, 0, &t);
	for (unsigned i = 0; !err && t && i < t->nr_nodes; i++)
		if (t->nodes[i].root == (int)i)
			err = add_group(s, t->nodes[i].path, dirs, nr_dirs, gflags);
	group_tree_free(t);
	if (!err && !s->nr) {
		vd_err("%s: no VMDK disk found", nr_dirs ? dirs[0] : "(no folder)");
		err = -ENOENT;
	}
	if (err)
		rbd_source_close(s);
	return err;
}

int rbd_source_open(struct rbd_source *s)
{
	int err = chain_pool_create(&s->pool);

	for (unsigned i = 0; !err && i < s->nr; i++)
		err = chain_open_pool(s->layers[i].path, CHAIN_OPEN_RDONLY, NULL, s->pool,
				      &s->layers[i].chain);
	return err;
}

void rbd_source_close(struct rbd_source *s)
{
	for (unsigned i = s->nr; i-- > 0;) {
		chain_close(s->layers[i].chain);
		free(s->layers[i].path);
	}
	chain_pool_destroy(s->pool);
	free(s->layers);
	memset(s, 0, sizeof *s);
}

int rbd_source_child(const char *parent, const char *child)
{
	const struct group_child_opts o = {.kind = VMDK_MONOLITHIC_SPARSE};

	return group_create_child(parent, child, false, &o, NULL);
}

int rbd_source_recover(const char *dir, unsigned flags)
{
	return group_recover_near(dir, flags & RBD_DRY_RUN ? 0 : GROUP_RECOVER_FINISH, NULL,
				  NULL);
}
