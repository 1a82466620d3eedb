/* rbd — `vdelta rbd export`: a linked-clone group laid into RBD layering
 * (layer 4, over group.h, chain.h and librbd).  The mapping, names and
 * metadata are rbd.h's; rbd_plan.c decides, rbd_send.c moves a layer's grains.
 *
 * Order, per run:
 *  X1. the groups are loaded (interrupted group operations recovered) and
 *      every layer's chain opened read-only with a reader's lock, held to
 *      the end: no writer can change a source layer meanwhile;
 *  X2. connect; plan every image (rbd_plan.c); the layer digest of every
 *      image that is there (RBD_VERIFY_FULL: the digest of every disk to
 *      be read back); every refusal reported, then stop, nothing written;
 *  X3. per layer, parents first: a NAME RBD_EXPORT_PART left by a stopped
 *      run is removed; a new image is made under NAME RBD_EXPORT_PART
 *      (rbd_create4 for a base, rbd_clone3 of the parent's snapshot for a
 *      clone), the layer's own grains written and flushed (its digest
 *      taken on the way), the metadata set, the image read back and
 *      compared with the disk (rbd.h VERIFICATION), its snapshot made and
 *      protected when the layer has children;
 *  X4. only then is it renamed NAME.  A kept image that gets children is
 *      read back and compared before its snapshot is made.
 * A run stopped anywhere leaves whole, verified images under final names
 * and at most one NAME RBD_EXPORT_PART, which the next run removes and
 * makes again (children of it cannot exist: a clone is made only of an
 * image under its final name).  A failure removes the image it was making.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "rbd_int.h"

void rbd_progress_add(struct rbd_progress *p, uint64_t bytes)
{
	p->done += bytes;
	if (p->fn)
		p->fn(p->opaque, p->done, p->total);
}

const char *rbd_export_action_name(enum rbd_action a)
{
	static const char *const names[] = {"create", "clone", "keep", "snapshot"};

	return (unsigned)a < sizeof names / sizeof names[0] ? names[a] : "?";
}

/* ---- image options -------------------------------------------------------------- */

static int order_of(uint64_t size, unsigned *order)
{
	for (unsigned o = 12; o <= 26; o++)
		if (size == 1ull << o) {
			*order = o;
			return 0;
		}
	vd_err("object size %llu: a power of two from 4 KiB to 64 MiB",
	       (unsigned long long)size);
	return -EINVAL;
}

/* Objects of object_size bytes, one object per stripe (a clone must set
 * its stripe unit: it would inherit the parent's otherwise). */
static int image_opts(uint64_t object_size, rbd_image_options_t *out)
{
	unsigned order;
	int err = order_of(object_size, &order);

	if (err)
		return err;
	rbd_image_options_create(out);
	if (rbd_image_options_set_uint64(*out, RBD_IMAGE_OPTION_ORDER, order) ||
	    rbd_image_options_set_uint64(*out, RBD_IMAGE_OPTION_STRIPE_UNIT, object_size) ||
	    rbd_image_options_set_uint64(*out, RBD_IMAGE_OPTION_STRIPE_COUNT, 1)) {
		rbd_image_options_destroy(*out);
		return -EINVAL;
	}
	return 0;
}

/* ---- one image ------------------------------------------------------------------- */

static char *what_of(const struct rbd_export *e, const char *image)
{
	char *w;

	return asprintf(&w, "%s/%s", e->conn.pool, image) < 0 ? NULL : w;
}

static int make_image(struct rbd_export *e, unsigned i, const char *part)
{
	const struct rbd_export_item *it = &e->res->items[i];
	bool clone = it->action == RBD_ACT_CLONE;
	rbd_image_options_t opts;
	int err = image_opts(it->object_size, &opts);

	if (err)
		return err;
	if (clone) {
		const struct rbd_export_item *p = &e->res->items[e->src.layers[i].parent];
		err = rbd_clone3(e->conn.io, p->image, p->snap, e->conn.io, part, opts);
	} else {
		err = rbd_create4(e->conn.io, part, it->capacity, opts);
	}
	rbd_image_options_destroy(opts);
	if (err < 0)
		vd_err("%s/%s: cannot %s: %s", e->conn.pool, part,
		       clone ? "clone the parent's snapshot" : "create", strerror(-err));
	return err;
}

static int set_meta(struct rbd_export *e, unsigned i, rbd_image_t img, const char *what)
{
	const struct rbd_layer *l = &e->src.layers[i];
	const struct rbd_export_item *it = &e->res->items[i];
	char cid[16], pcid[16];
	int err;

	snprintf(cid, sizeof cid, "%08x", l->cid);
	snprintf(pcid, sizeof pcid, "%08x",
		 l->parent >= 0 ? e->src.layers[l->parent].cid : VMDK_CID_NONE);
	err = rbd_image_meta_set(img, what, RBD_META_LAYER, it->layer);
	if (!err)
		err = rbd_image_meta_set(img, what, RBD_META_CID, cid);
	if (!err)
		err = rbd_image_meta_set(img, what, RBD_META_PARENT_CID, pcid);
	if (!err)
		err = rbd_image_meta_set(img, what, RBD_META_DIGEST, it->digest);
	if (!err) /* last: an image without it is not taken for a finished one */
		err = rbd_image_meta_set(img, what, RBD_META_FORMAT, "1");
	return err;
}

/* RBD_VERIFY_FULL: the image read back whole has the digest of the
 * layer's disk. */
static int verify_full(struct rbd_export *e, unsigned i, rbd_image_t img, const char *what)
{
	struct rbd_export_item *it = &e->res->items[i];
	uint8_t got[16];
	char hex[33];
	int err = rbd_digest_image(img, what, &e->pr, got);

	if (err)
		return err;
	e->res->verify_bytes += it->capacity;
	if (memcmp(got, e->digest[i], 16)) {
		chain_digest_hex(got, hex);
		vd_err("%s: read back, its digest is %s, the disk's (%s) is %s", what, hex,
		       it->layer, it->disk_digest);
		return -EIO;
	}
	return 0;
}

/* X3's read back: what the image and the layer hold themselves (rbd_verify.c),
 * or all of it. */
static int verify(struct rbd_export *e, unsigned i, rbd_image_t img, const char *what)
{
	struct rbd_export_item *it = &e->res->items[i];
	struct rbd_extents own = {0};
	uint64_t bytes = 0;
	int err;

	if (e->o->flags & RBD_VERIFY_FULL)
		err = verify_full(e, i, img, what);
	else
		err = rbd_extent_of_image(img, what, NULL, it->capacity, &own);
	if (!err && !(e->o->flags & RBD_VERIFY_FULL))
		err = rbd_verify_layer(e->src.layers[i].chain, img, what, &own, &e->pr, &bytes);
	rbd_extent_free(&own);
	e->res->verify_bytes += bytes;
	it->verified = !err;
	return err;
}

/* X3 on an open image: grains, metadata, read back, snapshot. */
static int fill(struct rbd_export *e, unsigned i, rbd_image_t img, const char *what)
{
	struct rbd_export_item *it = &e->res->items[i];
	struct vmdk_disk *layer = chain_layer(e->src.layers[i].chain, 0);
	struct rbd_send_out so = {0};
	int err = rbd_send_layer(layer, img, what, it->action == RBD_ACT_CLONE, &e->pr, &so);

	it->send_bytes = so.sent;
	it->zero_bytes = so.zeroed;
	e->res->send_bytes += so.sent;
	if (!err)
		chain_digest_hex(so.digest, it->digest);
	if (!err)
		err = set_meta(e, i, img, what);
	if (!err)
		err = verify(e, i, img, what);
	if (!err && it->snap)
		err = rbd_image_snap(img, what, it->snap);
	return err;
}

static int export_new(struct rbd_export *e, unsigned i)
{
	const struct rbd_export_item *it = &e->res->items[i];
	char *part = rbd_name_part(it->image), *what = part ? what_of(e, part) : NULL;
	rbd_image_t img;
	int err = what ? 0 : -ENOMEM;

	/* X3: what a stopped run left, looked for even when the plan saw none:
	 * a clone killed half made is listed but does not open (a no-op when
	 * nothing has the name) */
	if (!err)
		err = rbd_image_remove(e->conn.io, e->conn.pool, part);
	if (!err)
		err = make_image(e, i, part);
	if (!err) {
		err = rbd_image_open(e->conn.io, e->conn.pool, part, NULL, false, &img);
		if (!err) {
			err = fill(e, i, img, what);
			rbd_close(img);
		}
		if (!err)
			err = rbd_image_rename(e->conn.io, e->conn.pool, part, it->image); /* X4 */
		if (err)
			rbd_image_remove(e->conn.io, e->conn.pool, part);
	}
	free(what);
	free(part);
	return err;
}

/* A kept image whose layer got children: read back, then its snapshot. */
static int export_snap(struct rbd_export *e, unsigned i)
{
	const struct rbd_export_item *it = &e->res->items[i];
	char *what = what_of(e, it->image);
	rbd_image_t img;
	int err = what ? rbd_image_open(e->conn.io, e->conn.pool, it->image, NULL, false, &img)
		       : -ENOMEM;

	if (!err) {
		err = verify(e, i, img, what);
		if (!err)
			err = rbd_image_snap(img, what, it->snap);
		rbd_close(img);
	}
	free(what);
	return err;
}

/* ---- the run ---------------------------------------------------------------------- */

/* The layer digest of each image that is there (to tell it is this
 * layer's), and with RBD_VERIFY_FULL the digest of each disk read back. */
static int local_digest(struct rbd_export *e, unsigned i)
{
	struct rbd_export_item *it = &e->res->items[i];
	bool there = it->action == RBD_ACT_KEEP || it->action == RBD_ACT_SNAP;
	uint8_t d[16];
	int err = 0;

	if (there)
		err = rbd_send_digest(chain_layer(e->src.layers[i].chain, 0), d);
	if (!err && there)
		chain_digest_hex(d, it->digest);
	if (err || !(e->o->flags & RBD_VERIFY_FULL) || it->action == RBD_ACT_KEEP)
		return err;
	err = chain_digest(e->src.layers[i].chain, e->digest[i]);
	if (err)
		vd_err("%s: cannot read its disk for the digest: %s", it->layer,
		       strerror(-err));
	else
		chain_digest_hex(e->digest[i], it->disk_digest);
	return err;
}

static int local_digests(struct rbd_export *e)
{
	int err = 0;

	e->digest = calloc(e->src.nr, sizeof *e->digest);
	if (!e->digest)
		return -ENOMEM;
	for (unsigned i = 0; !err && i < e->src.nr; i++)
		err = local_digest(e, i);
	return err;
}

/* A new image's object size, what it will send, the progress total. */
static int count_one(struct rbd_export *e, unsigned i)
{
	struct rbd_export_item *it = &e->res->items[i];
	struct vmdk_disk *layer = chain_layer(e->src.layers[i].chain, 0);
	bool clone = it->action == RBD_ACT_CLONE;
	bool full = e->o->flags & RBD_VERIFY_FULL;
	int err = 0;

	if (it->action == RBD_ACT_SNAP && full)
		e->pr.total += it->capacity;
	if (it->action != RBD_ACT_CREATE && !clone)
		return 0;
	it->object_size = clone ? e->o->clone_object_size : e->o->object_size;
	if (!it->object_size)
		err = rbd_send_object_size(layer, &it->object_size);
	if (!err)
		err = rbd_send_count(layer, clone, &it->send_bytes, &it->zero_bytes);
	if (err)
		vd_err("%s: cannot read its allocation: %s", it->layer, strerror(-err));
	/* sent, then read back: the same bytes, or all of it */
	e->pr.total += it->send_bytes + (full ? it->capacity : it->send_bytes + it->zero_bytes);
	return err;
}

static int count_work(struct rbd_export *e)
{
	int err = 0;

	for (unsigned i = 0; !err && i < e->res->nr_items; i++)
		err = count_one(e, i);
	return err;
}

static int plan(struct rbd_export *e)
{
	int err = rbd_source_load(e->disks, e->nr_disks, e->dirs, e->nr_dirs, e->o->flags,
				  &e->src);

	if (!err)
		err = rbd_source_open(&e->src); /* X1 */
	if (!err)
		err = rbd_plan_names(e);
	if (!err)
		err = rbd_conn_open(&e->o->target, &e->conn); /* X2 */
	if (!err)
		e->res->pool = strdup(e->conn.pool);
	if (!err)
		err = rbd_plan_look(e);
	if (!err)
		err = count_work(e);
	if (!err && !(e->o->flags & RBD_DRY_RUN))
		err = local_digests(e);
	if (!err && !(e->o->flags & RBD_DRY_RUN))
		err = rbd_plan_digests(e);
	return err;
}

/* An image that is there under its name: a rename to it (X4) that a
 * stopped run left half done is finished first. */
static int finish_rename(struct rbd_export *e, unsigned i)
{
	char *part = rbd_name_part(e->res->items[i].image);
	int err = part ? rbd_image_rename_finish(e->conn.io, e->conn.pool, part,
						 e->res->items[i].image) : -ENOMEM;

	free(part);
	return err;
}

static int run(struct rbd_export *e)
{
	int err = 0;

	for (unsigned i = 0; !err && i < e->res->nr_items; i++) {
		enum rbd_action a = e->res->items[i].action;
		if (a == RBD_ACT_CREATE || a == RBD_ACT_CLONE)
			err = export_new(e, i);
		else if (a == RBD_ACT_KEEP || a == RBD_ACT_SNAP)
			err = finish_rename(e, i);
		if (!err && a == RBD_ACT_SNAP)
			err = export_snap(e, i);
	}
	return err;
}

int rbd_export_run(char *const *disks, unsigned nr_disks, char *const *dirs,
		   unsigned nr_dirs, const struct rbd_export_opts *o,
		   struct rbd_export_result *res)
{
	struct rbd_export_opts oo = *o;
	struct rbd_export e = {.o = &oo, .res = res, .disks = disks, .nr_disks = nr_disks,
			       .dirs = dirs, .nr_dirs = nr_dirs,
			       .pr = {.fn = o->progress, .opaque = o->progress_opaque}};
	int err;

	memset(res, 0, sizeof *res);
	if (!oo.clone_object_size)
		oo.clone_object_size = RBD_DEFAULT_CLONE_OBJECT;
	err = plan(&e);
	if (!err && !(o->flags & RBD_DRY_RUN))
		err = run(&e);
	rbd_conn_close(&e.conn);
	rbd_source_close(&e.src);
	free(e.digest);
	return err;
}

void rbd_export_result_free(struct rbd_export_result *res)
{
	for (unsigned i = 0; i < res->nr_items; i++) {
		free(res->items[i].layer);
		free(res->items[i].image);
		free(res->items[i].parent);
		free(res->items[i].snap);
	}
	free(res->items);
	free(res->pool);
	memset(res, 0, sizeof *res);
}
