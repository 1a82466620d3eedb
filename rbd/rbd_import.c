/* rbd — `vdelta rbd import`: RBD clone chains into a VMDK chain (layer 4,
 * over chain.h and librbd).
 *
 * Owns: the images to import (each spec and its parents through the
 * header's link, rbd_parent.c, bounded by CHAIN_MAX_DEPTH; an image
 * reached twice is one layer), the order (parents first; two snapshots or a snapshot and
 * the head of one image: the later over the earlier), the layers' names
 * (rbd_name_file), and the run: every name checked free in DIR before
 * anything is made, each layer made in the staging folder (rbd_stage.c
 * I1) as a monolithicSparse base or a delta over its parent
 * (rbd_source_child: parent frozen, child recorded), filled with what
 * differs from the parent (rbd_fill.c), closed, and verified: the digest
 * of its disk against the image read back.  Then published (I2-I4).
 * The children's records (sidecars) name them relative to the parent's
 * folder, so the ones made in the staging folder hold in DIR.  A failure
 * before the publish removes the staging folder: DIR is as it was.
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
	uint64_t snap_id;          /* RBD_NOSNAP for the head (orders them last) */
	uint64_t size;
	uint64_t overlap;          /* bytes that read through to its RBD parent */
	int parent;                /* index, -1: a base */
	bool from_snap;            /* the parent is an earlier snapshot of it */
	rados_ioctx_t io;          /* its pool's (owned by struct rbd_imp) */
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
		     uint64_t snap_id)
{
	for (unsigned i = 0; i < m->nr; i++)
		if (!strcmp(m->nodes[i].pool, pool) && !strcmp(m->nodes[i].id, id) &&
		    m->nodes[i].snap_id == snap_id)
			return (int)i;
	return -1;
}

static void free_node(struct node *n)
{
	free(n->pool), free(n->image), free(n->snap), free(n->id);
	free(n->what), free(n->name);
}

/* Node *idx for image id of pool at snap_id (a new one unless it is
 * there); the strings are copied. */
static int add_node(struct rbd_imp *m, const char *pool, const char *id, const char *image,
		    const char *snap, uint64_t snap_id, int *idx)
{
	struct node n = {.snap_id = snap_id, .parent = -1}, *grown;
	int err;

	*idx = find_node(m, pool, id, snap_id);
	if (*idx >= 0)
		return 0;
	err = pool_io(m, pool, &n.io);
	n.pool = strdup(pool);
	n.id = strdup(id);
	n.image = strdup(image);
	n.snap = snap ? strdup(snap) : NULL;
	if (asprintf(&n.what, "%s/%s%s%s", pool, image, snap ? "@" : "", snap ? snap : "") < 0)
		n.what = NULL;
	if (!err && (!n.pool || !n.id || !n.image || !n.what || (snap && !n.snap)))
		err = -ENOMEM;
	if (!err && rbd_parent_size(n.io, id, snap_id, &n.size)) {
		vd_err("%s: cannot read its size", n.what);
		err = -EIO;
	}
	grown = err ? NULL : realloc(m->nodes, (m->nr + 1) * sizeof *grown);
	if (!err && !grown)
		err = -ENOMEM;
	if (err) {
		free_node(&n);
		return err;
	}
	m->nodes = grown;
	*idx = (int)m->nr;
	m->nodes[m->nr++] = n;
	return 0;
}

/* The image a spec names, opened once for its id and snapshot id. */
static int add_spec_node(struct rbd_imp *m, const char *pool, const char *image,
			 const char *snap, int *idx)
{
	rados_ioctx_t io;
	rbd_image_t img;
	uint64_t snap_id = RBD_NOSNAP;
	char id[RBD_NAME_MAX + 1];
	int err = pool_io(m, pool, &io);

	if (!err)
		err = rbd_image_open(io, pool, image, snap, true, &img);
	if (err)
		return err;
	if (rbd_get_id(img, id, sizeof id) < 0 || (snap && rbd_snap_get_id(img, snap, &snap_id) < 0)) {
		vd_err("%s/%s: cannot read its id", pool, image);
		err = -EIO;
	}
	rbd_close(img);
	return err ? err : add_node(m, pool, id, image, snap, snap_id, idx);
}

/* Node idx's parent as a node, or -1 for a base. */
static int add_parent(struct rbd_imp *m, int idx, int *parent)
{
	struct node *n = &m->nodes[idx];
	struct rbd_parent_ref p;
	rados_ioctx_t pio;
	int err = rbd_parent_get(m->conn.cluster, n->io, n->what, n->id, n->snap_id, &p);

	*parent = -1;
	if (err || !p.pool)
		return err;
	err = pool_io(m, p.pool, &pio);
	if (!err)
		err = rbd_parent_names(pio, m->nodes[idx].what, &p);
	if (!err)
		err = add_node(m, p.pool, p.id, p.name, p.snap, p.snap_id, parent);
	if (!err)
		m->nodes[idx].overlap = VD_MIN(p.overlap, m->nodes[idx].size);
	rbd_parent_free(&p);
	return err;
}

/* spec and every parent up to its base, at most CHAIN_MAX_DEPTH images. */
static int walk(struct rbd_imp *m, const char *pool, const char *image, const char *snap)
{
	int at, up, err = add_spec_node(m, pool, image, snap, &at);
	unsigned depth = 1;

	while (!err && at >= 0) {
		err = add_parent(m, at, &up);
		if (!err && up >= 0 && ++depth > CHAIN_MAX_DEPTH) {
			vd_err("%s/%s: its parent chain is deeper than %u images, the most a "
			       "VMDK chain holds; nothing imported (flatten it in RBD first)",
			       pool, image, CHAIN_MAX_DEPTH);
			return -ELOOP;
		}
		if (!err && up >= 0)
			m->nodes[at].parent = up;
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

/* A VMDK layer has its parent's size, a whole number of sectors (the
 * ceiling is vmdk_create's). */
static int check_size(const struct rbd_imp *m, unsigned i)
{
	const struct node *n = &m->nodes[i], *p = n->parent >= 0 ? &m->nodes[n->parent] : NULL;

	if (n->size % VD_SECTOR || !n->size) {
		vd_err("%s: %llu bytes: not a whole number of 512-byte sectors; nothing "
		       "imported", n->what, (unsigned long long)n->size);
		return -EINVAL;
	}
	if (p && p->size != n->size) {
		vd_err("%s: %llu bytes, its parent %s %llu: the layers of a VMDK chain "
		       "have one size; nothing imported (flatten it in RBD first)", n->what,
		       (unsigned long long)n->size, p->what, (unsigned long long)p->size);
		return -EINVAL;
	}
	return 0;
}

static int check_sizes(const struct rbd_imp *m)
{
	int first = 0;

	for (unsigned i = 0; i < m->nr; i++) {
		int err = check_size(m, i);
		first = first ? first : err;
	}
	return first;
}

static int make_layer(struct rbd_imp *m, unsigned i, const char *path)
{
	const struct node *n = &m->nodes[i];
	struct vmdk_create_opts co = {.capacity = n->size, .subformat = VMDK_MONOLITHIC_SPARSE};
	char *parent;
	int err;

	if (n->parent < 0)
		return vmdk_create(path, &co, NULL);
	parent = stage_path(m, (unsigned)n->parent);
	err = parent ? rbd_source_child(parent, path) : -ENOMEM;
	free(parent);
	return err;
}

/* What the layer holds beyond its parent: the image's objects (since the
 * earlier snapshot, when its parent is one), and zeros past its parent
 * overlap (rbd_fill.c). */
static struct rbd_fill_src fill_src(const struct rbd_imp *m, unsigned i)
{
	const struct node *n = &m->nodes[i], *p = n->parent >= 0 ? &m->nodes[n->parent] : NULL;

	if (!p)
		return (struct rbd_fill_src){0};
	if (n->from_snap)
		return (struct rbd_fill_src){.from_snap = p->snap, .mask_off = n->overlap,
					     .mask_end = p->overlap};
	return (struct rbd_fill_src){.mask_off = n->overlap, .mask_end = n->size};
}

/* RBD_VERIFY_FULL: the digest of the layer's disk against the image read
 * back whole. */
static int verify_full(struct rbd_imp *m, unsigned i, rbd_image_t img, struct chain *c,
		       struct rbd_import_item *it)
{
	uint8_t mine[16], theirs[16];
	char hex[33];
	int err = chain_digest(c, mine);

	if (!err)
		err = rbd_digest_image(img, m->nodes[i].what, &m->pr, theirs);
	if (err)
		return err;
	chain_digest_hex(mine, it->digest);
	if (memcmp(mine, theirs, 16)) {
		chain_digest_hex(theirs, hex);
		vd_err("%s: imported, its digest is %s, the image's is %s", it->path,
		       it->digest, hex);
		return -EIO;
	}
	return 0;
}

/* The layer made, reopened, against the image: over what either holds
 * itself (rbd_verify.c), or whole. */
static int verify(struct rbd_imp *m, unsigned i, rbd_image_t img, const char *path,
		  struct rbd_import_item *it)
{
	const struct rbd_fill_src src = fill_src(m, i);
	struct rbd_extents own = {0};
	uint64_t bytes;
	struct chain *c = NULL;
	int err = chain_open(path, CHAIN_OPEN_RDONLY, NULL, &c);

	if (!err && (m->o->flags & RBD_VERIFY_FULL))
		err = verify_full(m, i, img, c, it);
	else if (!err)
		err = rbd_fill_ranges(img, m->nodes[i].what, &src, it->capacity, &own);
	if (!err && !(m->o->flags & RBD_VERIFY_FULL))
		err = rbd_verify_layer(c, img, m->nodes[i].what, &own, &m->pr, &bytes);
	rbd_extent_free(&own);
	chain_close(c);
	it->verified = !err;
	return err;
}

static int fill_one(struct rbd_imp *m, unsigned i, rbd_image_t img, const char *path,
		    struct rbd_import_item *it)
{
	const struct node *n = &m->nodes[i];
	const struct rbd_fill_src src = fill_src(m, i);
	struct chain *c;
	int err = chain_open(path, CHAIN_OPEN_RDWR, NULL, &c);

	if (!err) {
		err = rbd_fill_layer(c, img, n->what, &src, &m->pr, &it->data_bytes);
		if (chain_close(c) && !err)
			err = -EIO;
	}
	return err ? err : verify(m, i, img, path, it);
}

/* By id (a rename meanwhile does not matter) at the snapshot's id: a
 * parent's snapshot may be one in the trash, which no name opens. */
static int open_node(const struct node *n, rbd_image_t *img)
{
	int err = rbd_open_by_id_read_only(n->io, n->id, img, n->snap);

	if (err == -ENOENT && n->snap) {
		err = rbd_open_by_id_read_only(n->io, n->id, img, NULL);
		if (!err && rbd_snap_set_by_id(*img, n->snap_id) < 0) {
			rbd_close(*img);
			err = -ENOENT;
		}
	}
	if (err < 0)
		vd_err("%s: cannot open: %s", n->what, strerror(-err));
	return err;
}

static int import_one(struct rbd_imp *m, unsigned i, struct rbd_import_item *it)
{
	const struct node *n = &m->nodes[i];
	char *path = stage_path(m, i);
	rbd_image_t img;
	int err = path ? make_layer(m, i, path) : -ENOMEM;

	if (!err)
		err = open_node(n, &img);
	if (!err) {
		err = fill_one(m, i, img, path, it);
		rbd_close(img);
	}
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
		if (m->o->flags & RBD_VERIFY_FULL)
			m->pr.total += it->capacity; /* read back whole */
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
		if (asprintf(&side, "%s%s", m->nodes[i].name, GROUP_CHILDREN_SUFFIX) < 0)
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
	int err = rbd_source_recover(m->dir, m->o->flags);

	if (!err && !(m->o->flags & RBD_DRY_RUN)) /* a dry run changes nothing */
		err = rbd_stage_recover(m->dir);

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
		err = check_sizes(m);
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
	if (err && m->stage)
		rbd_stage_remove(m->stage);
	return err ? err : publish(m); /* stopped while moving: the next run finishes */
}

static void close_all(struct rbd_imp *m)
{
	for (unsigned i = 0; i < m->nr; i++)
		free_node(&m->nodes[i]);
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
