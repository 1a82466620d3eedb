/* rbd — what an export will do with each layer (layer 4).
 *
 * Owns the names of each layer's image, its parent's snapshot and its own
 * (rbd.h "IMAGE NAMES"), and the decision per image from what the pool
 * holds, all before anything is written:
 *  - absent: CREATE (a base) or CLONE;
 *  - there, made by vdelta (RBD_META_FORMAT), of the same size, with the
 *    expected parent snapshot, RBD_META_CID the layer's CID and
 *    RBD_META_DIGEST the layer's digest (rbd_send.c): KEEP, or SNAP when
 *    the layer now has children and the image has no snapshot yet;
 *  - anything else is refused (-EEXIST), naming the image and why: a name
 *    taken by an image vdelta did not make, another parent, another size,
 *    another layer or content.  Every refusal is reported, then the run
 *    stops with nothing written.
 * An image named NAME RBD_EXPORT_PART is what a run that was stopped
 * left half made: the export removes it before NAME is made (rbd_export.c
 * X3), whether it opens or, a clone killed half made, is only listed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "rbd_int.h"

static int name_item(struct rbd_export *e, const char *root, unsigned i)
{
	const struct rbd_layer *l = &e->src.layers[i];
	struct rbd_export_item *it = &e->res->items[i];
	int err;

	it->layer = strdup(l->path);
	it->capacity = l->capacity;
	it->nr_children = l->nr_children;
	err = it->layer ? rbd_name_make(e->o->prefix, root, l->path, &it->image) : -ENOMEM;
	if (!err && l->nr_children && asprintf(&it->snap, RBD_EXPORT_SNAP "%08x", l->cid) < 0)
		err = -ENOMEM;
	if (!err && l->parent >= 0) {
		const struct rbd_export_item *p = &e->res->items[l->parent];
		if (asprintf(&it->parent, "%s@%s", p->image, p->snap) < 0)
			err = -ENOMEM;
	}
	it->action = l->parent >= 0 ? RBD_ACT_CLONE : RBD_ACT_CREATE;
	return err;
}

int rbd_plan_names(struct rbd_export *e)
{
	char **paths = calloc(e->src.nr, sizeof *paths), *root = NULL;
	int err = paths ? 0 : -ENOMEM;

	e->res->items = calloc(e->src.nr, sizeof *e->res->items);
	if (!e->res->items)
		err = -ENOMEM;
	for (unsigned i = 0; !err && i < e->src.nr; i++)
		paths[i] = e->src.layers[i].path;
	if (!err)
		err = rbd_name_root(paths, e->src.nr, &root);
	for (unsigned i = 0; !err && i < e->src.nr; i++) {
		err = name_item(e, root, i);
		e->res->nr_items = i + 1;
	}
	free(root);
	free(paths);
	return err;
}

/* ---- an image that is there -------------------------------------------------- */

static int refuse(const struct rbd_export *e, const struct rbd_export_item *it,
		  const char *why)
{
	vd_err("%s/%s: %s; nothing exported (remove the image, or export under "
	       "another --prefix)", e->conn.pool, it->image, why);
	return -EEXIST;
}

/* The image's parent is the one this layer's image must have. */
static bool parent_is(const struct rbd_export *e, rbd_image_t img, const char *want)
{
	rbd_linked_image_spec_t pi;
	rbd_snap_spec_t ps;
	char *have = NULL;
	bool same;
	int err = rbd_get_parent(img, &pi, &ps);

	if (err == -ENOENT)
		return !want;
	if (err < 0)
		return false;
	same = want && !strcmp(pi.pool_name, e->conn.pool) &&
	       asprintf(&have, "%s@%s", pi.image_name, ps.name) >= 0 && !strcmp(have, want);
	free(have);
	rbd_linked_image_spec_cleanup(&pi);
	rbd_snap_spec_cleanup(&ps);
	return same;
}

static int check_cid(const struct rbd_export *e, rbd_image_t img,
		     const struct rbd_export_item *it, uint32_t cid)
{
	char have[RBD_META_VALUE_MAX], want[16], *why = NULL;
	int err = rbd_image_meta_get(img, RBD_META_CID, have, sizeof have);

	snprintf(want, sizeof want, "%08x", cid);
	if (!err && !strcmp(have, want))
		return 0;
	if (asprintf(&why, "exists and holds another layer or content (CID %s, the "
		     "layer's is %s: written since it was exported?)", err ? "none" : have,
		     want) < 0)
		return -ENOMEM;
	err = refuse(e, it, why);
	free(why);
	return err;
}

static int check_image(struct rbd_export *e, unsigned i, rbd_image_t img)
{
	struct rbd_export_item *it = &e->res->items[i];
	char fmt[RBD_META_VALUE_MAX];
	uint64_t size = 0;
	bool has_snap = false;
	int err;

	if (rbd_image_meta_get(img, RBD_META_FORMAT, fmt, sizeof fmt) || strcmp(fmt, "1"))
		return refuse(e, it, "the name is taken by an image vdelta did not export");
	if (rbd_get_size(img, &size) < 0 || size != it->capacity)
		return refuse(e, it, "exists with another size");
	if (!parent_is(e, img, it->parent))
		return refuse(e, it, it->parent ? "exists with another parent"
						: "exists as a clone, not a base");
	err = check_cid(e, img, it, e->src.layers[i].cid);
	if (!err && it->snap && rbd_snap_exists(img, it->snap, &has_snap) < 0)
		has_snap = false;
	if (!err)
		it->action = it->snap && !has_snap ? RBD_ACT_SNAP : RBD_ACT_KEEP;
	return err;
}

static int look(struct rbd_export *e, unsigned i)
{
	struct rbd_export_item *it = &e->res->items[i];
	rbd_image_t img;
	int err = rbd_open_read_only(e->conn.io, it->image, &img, NULL);
	if (err == -ENOENT)
		return 0; /* CREATE or CLONE, as named */
	if (err < 0) {
		vd_err("%s/%s: cannot open: %s", e->conn.pool, it->image, strerror(-err));
		return err;
	}
	err = check_image(e, i, img);
	rbd_close(img);
	return err;
}

int rbd_plan_look(struct rbd_export *e)
{
	int first = 0;

	for (unsigned i = 0; i < e->res->nr_items; i++) {
		int err = look(e, i);
		if (err && !first)
			first = err;
	}
	return first;
}

/* ---- kept images hold the layer's content ----------------------------------- */

static int check_digest(struct rbd_export *e, unsigned i)
{
	struct rbd_export_item *it = &e->res->items[i];
	char have[RBD_META_VALUE_MAX];
	rbd_image_t img;
	int err = rbd_open_read_only(e->conn.io, it->image, &img, NULL);

	if (err < 0) {
		vd_err("%s/%s: cannot open: %s", e->conn.pool, it->image, strerror(-err));
		return err;
	}
	err = rbd_image_meta_get(img, RBD_META_DIGEST, have, sizeof have);
	rbd_close(img);
	if (!err && !strcmp(have, it->digest))
		return 0;
	return refuse(e, it, "exists with the layer's CID but another content digest");
}

int rbd_plan_digests(struct rbd_export *e)
{
	int first = 0;

	for (unsigned i = 0; i < e->res->nr_items; i++) {
		enum rbd_action a = e->res->items[i].action;
		int err = a == RBD_ACT_KEEP || a == RBD_ACT_SNAP ? check_digest(e, i) : 0;
		if (err && !first)
			first = err;
	}
	return first;
}
