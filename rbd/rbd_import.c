/* rbd — `vdelta rbd import`: RBD clone chains into a VMDK chain (layer 3,
 * over chain.h and librbd).
 *
 * Owns: the images to import (each spec and its parents through
 * rbd_get_parent, bounded by CHAIN_MAX_DEPTH; an image reached twice is
 * one layer), the order (parents first; two snapshots or a snapshot and
 * the head of one image: the later over the earlier), the layers' names
 * (rbd_name_file), and the run: every name checked free in DIR before
 * anything is made, each layer made in the staging folder (rbd_stage.c
 * I1) as a monolithicSparse base or a delta over its parent
 * (rbd_source_child: parent frozen, child recorded), filled with what
 * differs from the parent (rbd_fill.c), closed, and verified: the digest
 * of its disk against the image read back.  Then published (I2-I4).
 * A failure before the publish removes the staging folder: DIR is as it
 * was.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "rbd_int.h"

#define MAX_POOLS 16u

struct node {
	char *pool, *image, *snap; /* snap NULL: the head */
	char *id;                  /* the image's id: one image, whatever its name */
	uint64_t snap_id;          /* order within one image; the head is last */
	uint64_t size;
	int parent;                /* index, -1: a base */
	bool from_snap;            /* the parent is an earlier snapshot of it */
	rados_ioctx_t io;          /* its pool's (owned by struct rbd_imp) */
	rbd_image_t img;
	char *what;                /* pool/image[@snap] */
	char *name;                /* its file's name */
};

struct rbd_imp {
	const struct rbd_import_opts *o;
	struct rbd_conn conn;
	char *pool_name[MAX_POOLS];
	rados_ioctx_t pool_io[MAX_POOLS];
	unsigned nr_pools;
	struct node *nodes;
	unsigned nr;
	const char *dir;
	char *stage;
	struct rbd_progress pr;
};

/* ---- images and their parents --------------------------------------------------- */

static int pool_io(struct rbd_imp *m, const char *pool, rados_ioctx_t *io)
{
	int err;

	for (unsigned i = 0; i < m->nr_pools; i++)
		if (!strcmp(m->pool_name[i], pool)) {
			*io = m->pool_io[i];
			return 0;
		}
	if (m->nr_pools == MAX_POOLS) {
		vd_err("ceph: a chain across more than %u pools", MAX_POOLS);
		return -E2BIG;
	}
	err = rbd_conn_pool(&m->conn, pool, io);
	if (!err) {
		m->pool_name[m->nr_pools] = strdup(pool);
		m->pool_io[m->nr_pools++] = *io;
	}
	return err;
}

static int find_node(const struct rbd_imp *m, const char *pool, const char *id,
		     const char *snap)
{
	for (unsigned i = 0; i < m->nr; i++)
		if (!strcmp(m->nodes[i].pool, pool) && !strcmp(m->nodes[i].id, id) &&
		    (snap ? m->nodes[i].snap && !strcmp(m->nodes[i].snap, snap)
			  : !m->nodes[i].snap))
			return (int)i;
	return -1;
}

/* Open pool/image@snap as node *idx (a new one unless it is there). */
static int open_node(struct rbd_imp *m, const char *pool, const char *image,
		     const char *snap, int *idx)
{
	struct node n = {0}, *grown;
	char id[128];
	int err = pool_io(m, pool, &n.io);

	if (!err)
		err = rbd_image_open(n.io, pool, image, snap, true, &n.img);
	if (err)
		return err;
	if (rbd_get_id(n.img, id, sizeof id) < 0 || rbd_get_size(n.img, &n.size) < 0)
		err = -EIO;
	*idx = err ? -1 : find_node(m, pool, id, snap);
	if (err || *idx >= 0) {
		rbd_close(n.img);
		return err;
	}
	n.snap_id = UINT64_MAX;
	if (snap && rbd_snap_get_id(n.img, snap, &n.snap_id) < 0)
		err = -EIO;
	n.pool = strdup(pool);
	n.image = strdup(image);
	n.snap = snap ? strdup(snap) : NULL;
	n.id = strdup(id);
	n.parent = -1;
	if (asprintf(&n.what, "%s/%s%s%s", pool, image, snap ? "@" : "", snap ? snap : "") < 0)
		n.what = NULL;
	grown = realloc(m->nodes, (m->nr + 1) * sizeof *grown);
	if (err || !grown || !n.pool || !n.image || !n.id || !n.what || (snap && !n.snap)) {
		if (grown)
			m->nodes = grown;
		rbd_close(n.img);
		free(n.pool), free(n.image), free(n.snap), free(n.id), free(n.what);
		return err ? err : -ENOMEM;
	}
	m->nodes = grown;
	*idx = (int)m->nr;
	m->nodes[m->nr++] = n;
	return 0;
}

/* Node idx's RBD parent as a node, or -1 for a base. */
static int open_parent(struct rbd_imp *m, int idx, int *parent)
{
	rbd_linked_image_spec_t pi;
	rbd_snap_spec_t ps;
	int err = rbd_get_parent(m->nodes[idx].img, &pi, &ps);

	*parent = -1;
	if (err == -ENOENT)
		return 0;
	if (err < 0) {
		vd_err("%s: cannot read its parent: %s", m->nodes[idx].what, strerror(-err));
		return err;
	}
	err = open_node(m, pi.pool_name, pi.image_name, ps.name, parent);
	rbd_linked_image_spec_cleanup(&pi);
	rbd_snap_spec_cleanup(&ps);
	return err;
}

/* spec and every parent up to its base, at most CHAIN_MAX_DEPTH images. */
static int walk(struct rbd_imp *m, const char *pool, const char *image, const char *snap)
{
	int at, up, err = open_node(m, pool, image, snap, &at);
	unsigned depth = 1;

	while (!err && at >= 0) {
		const char *what = m->nodes[at].what;
		err = open_parent(m, at, &up);
		if (!err && up >= 0 && ++depth > CHAIN_MAX_DEPTH) {
			vd_err("%s/%s: its parent chain is deeper than %u images, the most a "
			       "VMDK chain holds; nothing imported (flatten it in RBD first)",
			       pool, image, CHAIN_MAX_DEPTH);
			return -ELOOP;
		}
		if (!err && up >= 0)
			m->nodes[at].parent = up;
		(void)what;
		at = up;
	}
	return err;
}

static int parse_spec(const struct rbd_imp *m, const char *spec, char **pool,
		      char **image, char **snap)
{
	const char *slash = strchr(spec, '/'), *at = strchr(spec, '@');
	const char *img = slash ? slash + 1 : spec;

	*pool = slash ? strndup(spec, (size_t)(slash - spec)) : strdup(m->conn.pool);
	*image = at ? strndup(img, (size_t)(at - img)) : strdup(img);
	*snap = at ? strdup(at + 1) : NULL;
	if (!*pool || !*image || (at && !*snap))
		return -ENOMEM;
	if (!**pool || !**image || (at && (at < img || !**snap)) || strchr(img, '/')) {
		vd_err("%s: not POOL/IMAGE[@SNAP]", spec);
		return -EINVAL;
	}
	return 0;
}

/* ---- order and names --------------------------------------------------------------- */

/* Nodes of one image: each over the latest earlier one of them. */
static void chain_snapshots(struct rbd_imp *m)
{
	for (unsigned i = 0; i < m->nr; i++) {
		int best = -1;
		for (unsigned k = 0; k < m->nr; k++)
			if (k != i && !strcmp(m->nodes[k].pool, m->nodes[i].pool) &&
			    !strcmp(m->nodes[k].id, m->nodes[i].id) &&
			    m->nodes[k].snap_id < m->nodes[i].snap_id &&
			    (best < 0 || m->nodes[k].snap_id > m->nodes[best].snap_id))
				best = (int)k;
		if (best >= 0) {
			m->nodes[i].parent = best;
			m->nodes[i].from_snap = true;
		}
	}
}

static unsigned depth_of(const struct rbd_imp *m, unsigned i)
{
	unsigned d = 1;

	for (int at = m->nodes[i].parent; at >= 0 && d <= m->nr; at = m->nodes[at].parent)
		d++;
	return d;
}

/* Parents first: a stable sort by depth, parent indexes remapped. */
static int order(struct rbd_imp *m)
{
	struct node *sorted = malloc(m->nr * sizeof *sorted);
	int *where = malloc(m->nr * sizeof *where);
	unsigned n = 0;

	if (!sorted || !where) {
		free(sorted);
		free(where);
		return -ENOMEM;
	}
	for (unsigned d = 1; n < m->nr && d <= CHAIN_MAX_DEPTH; d++)
		for (unsigned i = 0; i < m->nr; i++)
			if (depth_of(m, i) == d) {
				where[i] = (int)n;
				sorted[n++] = m->nodes[i];
			}
	for (unsigned i = 0; i < n; i++)
		if (sorted[i].parent >= 0)
			sorted[i].parent = where[sorted[i].parent];
	free(m->nodes);
	free(where);
	m->nodes = sorted;
	if (n < m->nr) {
		vd_err("%s: a chain deeper than %u layers (snapshots of one image included)",
		       m->nodes[0].what, CHAIN_MAX_DEPTH);
		m->nr = n;
		return -ELOOP;
	}
	return 0;
}

static bool shares_image(const struct rbd_imp *m, unsigned i)
{
	for (unsigned k = 0; k < m->nr; k++)
		if (k != i && !strcmp(m->nodes[k].pool, m->nodes[i].pool) &&
		    !strcmp(m->nodes[k].id, m->nodes[i].id))
			return true;
	return false;
}

static int name_nodes(struct rbd_imp *m)
{
	int first = 0;

	for (unsigned i = 0; i < m->nr; i++) {
		struct node *n = &m->nodes[i];
		char *p = rbd_name_file(m->dir, n->image, n->snap, n->snap && shares_image(m, i));
		struct stat st;
		if (!p)
			return -ENOMEM;
		n->name = strdup(strrchr(p, '/') + 1);
		for (unsigned k = 0; n->name && k < i; k++)
			if (!strcmp(m->nodes[k].name, n->name)) {
				vd_err("%s and %s: both would be %s", m->nodes[k].what, n->what, p);
				first = first ? first : -EEXIST;
			}
		if (!lstat(p, &st)) {
			vd_err("%s: exists; %s is not imported (nothing is)", p, n->what);
			first = first ? first : -EEXIST;
		}
		free(p);
		if (!n->name)
			return -ENOMEM;
	}
	return first;
}

/* ---- the run ----------------------------------------------------------------------- */

static char *stage_path(const struct rbd_imp *m, unsigned i)
{
	return vd_path_join(m->stage, m->nodes[i].name);
}

static int make_layer(struct rbd_imp *m, unsigned i, const char *path)
{
	const struct node *n = &m->nodes[i];
	struct vmdk_create_opts co = {.capacity = n->size, .subformat = VMDK_MONOLITHIC_SPARSE};
	char *parent;
	int err;

	if (n->size % VD_SECTOR || !n->size) {
		vd_err("%s: %llu bytes: not a whole number of 512-byte sectors", n->what,
		       (unsigned long long)n->size);
		return -EINVAL;
	}
	if (n->parent < 0)
		return vmdk_create(path, &co, NULL);
	parent = stage_path(m, (unsigned)n->parent);
	err = parent ? rbd_source_child(parent, path) : -ENOMEM;
	free(parent);
	return err;
}

static int verify(struct rbd_imp *m, unsigned i, const char *path,
		  struct rbd_import_item *it)
{
	struct chain *c;
	uint8_t mine[16], theirs[16];
	char hex[33];
	int err = chain_open(path, CHAIN_OPEN_RDONLY, NULL, &c);

	if (!err) {
		err = chain_digest(c, mine);
		chain_close(c);
	}
	if (!err)
		err = rbd_digest_image(m->nodes[i].img, m->nodes[i].what, &m->pr, theirs);
	if (err)
		return err;
	chain_digest_hex(mine, it->digest);
	if (memcmp(mine, theirs, 16)) {
		chain_digest_hex(theirs, hex);
		vd_err("%s: imported, its digest is %s, the image's is %s", it->path,
		       it->digest, hex);
		return -EIO;
	}
	it->verified = true;
	return 0;
}

static int import_one(struct rbd_imp *m, unsigned i, struct rbd_import_item *it)
{
	const struct node *n = &m->nodes[i];
	char *path = stage_path(m, i);
	struct chain *c;
	int err = path ? make_layer(m, i, path) : -ENOMEM;

	if (!err)
		err = chain_open(path, CHAIN_OPEN_RDWR, NULL, &c);
	if (!err) {
		const char *from = n->from_snap ? m->nodes[n->parent].snap : NULL;
		err = rbd_fill_layer(c, n->img, n->what, from, &m->pr, &it->data_bytes);
		if (chain_close(c) && !err)
			err = -EIO;
	}
	if (!err)
		err = verify(m, i, path, it);
	free(path);
	return err;
}

static int fill_items(struct rbd_imp *m, struct rbd_import_result *res)
{
	res->items = calloc(m->nr, sizeof *res->items);
	if (!res->items)
		return -ENOMEM;
	for (unsigned i = 0; i < m->nr; i++) {
		struct rbd_import_item *it = &res->items[i];
		it->spec = strdup(m->nodes[i].what);
		it->path = vd_path_join(m->dir, m->nodes[i].name);
		it->parent = m->nodes[i].parent >= 0
				     ? vd_path_join(m->dir, m->nodes[m->nodes[i].parent].name) : NULL;
		it->capacity = m->nodes[i].size;
		res->nr_items = i + 1;
		if (!it->spec || !it->path || (m->nodes[i].parent >= 0 && !it->parent))
			return -ENOMEM;
		m->pr.total += it->capacity;
	}
	return 0;
}

/* The files to publish, in order: each layer, then its sidecar. */
static int publish(struct rbd_imp *m)
{
	char **names = calloc(2 * m->nr, sizeof *names);
	unsigned nr = 0;
	int err = names ? 0 : -ENOMEM;

	for (unsigned i = 0; !err && i < m->nr; i++) {
		char *side, *p;
		names[nr++] = strdup(m->nodes[i].name);
		if (asprintf(&side, "%s%s", m->nodes[i].name, CHAIN_CHILDREN_SUFFIX) < 0)
			err = -ENOMEM;
		p = err ? NULL : vd_path_join(m->stage, side);
		if (!err && p && !access(p, F_OK))
			names[nr++] = side;
		else if (!err)
			free(side);
		free(p);
	}
	if (!err)
		err = rbd_stage_publish(m->stage, m->dir, names, nr);
	for (unsigned i = 0; names && i < nr; i++)
		free(names[i]);
	free(names);
	return err;
}

static int plan(struct rbd_imp *m, char *const *specs, unsigned nr_specs)
{
	int err = rbd_stage_recover(m->dir);

	if (!err)
		err = rbd_conn_open(&m->o->target, &m->conn);
	for (unsigned i = 0; !err && i < nr_specs; i++) {
		char *pool = NULL, *image = NULL, *snap = NULL;
		err = parse_spec(m, specs[i], &pool, &image, &snap);
		if (!err)
			err = walk(m, pool, image, snap);
		free(pool), free(image), free(snap);
	}
	if (!err)
		chain_snapshots(m);
	if (!err)
		err = order(m);
	if (!err)
		err = name_nodes(m);
	return err;
}

static int run(struct rbd_imp *m, struct rbd_import_result *res)
{
	int err = rbd_stage_create(m->dir, &m->stage);

	for (unsigned i = 0; !err && i < m->nr; i++) {
		err = import_one(m, i, &res->items[i]);
		res->data_bytes += res->items[i].data_bytes;
	}
	if (!err)
		err = publish(m);
	else if (m->stage)
		rbd_stage_remove(m->stage);
	return err;
}

static void close_all(struct rbd_imp *m)
{
	for (unsigned i = 0; i < m->nr; i++) {
		struct node *n = &m->nodes[i];
		rbd_close(n->img);
		free(n->pool), free(n->image), free(n->snap), free(n->id);
		free(n->what), free(n->name);
	}
	free(m->nodes);
	for (unsigned i = 0; i < m->nr_pools; i++) {
		rados_ioctx_destroy(m->pool_io[i]);
		free(m->pool_name[i]);
	}
	rbd_conn_close(&m->conn);
	free(m->stage);
}

int rbd_import_run(char *const *specs, unsigned nr_specs, const char *dir,
		   const struct rbd_import_opts *o, struct rbd_import_result *res)
{
	struct rbd_imp m = {.o = o, .dir = dir,
			    .pr = {.fn = o->progress, .opaque = o->progress_opaque}};
	struct stat st;
	int err = 0;

	memset(res, 0, sizeof *res);
	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		vd_err("%s: not a folder", dir);
		return -ENOTDIR;
	}
	err = plan(&m, specs, nr_specs);
	if (!err)
		err = fill_items(&m, res);
	if (!err && !(o->flags & RBD_DRY_RUN))
		err = run(&m, res);
	close_all(&m);
	return err;
}

void rbd_import_result_free(struct rbd_import_result *res)
{
	for (unsigned i = 0; i < res->nr_items; i++) {
		free(res->items[i].spec);
		free(res->items[i].path);
		free(res->items[i].parent);
	}
	free(res->items);
	memset(res, 0, sizeof *res);
}
