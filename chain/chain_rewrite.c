/* chain — rewriting one layer into a fresh file (layer 2): compaction for
 * `check --repair` and flattening for `promote --unlink`.
 *
 * Owns: copying what a layer holds (or, flattened, what its whole chain
 * reads) into a new monolithicSparse file with the layer's CID and DDB
 * keys, verifying it, and swapping it in by rename.  The layer's CID is
 * kept, so its children stay valid; the content read through the layer is
 * the same.  Data moves in runs of up to REWRITE_BUF bytes taken from the
 * merged map; unallocated runs are skipped, and so are zero runs when
 * flattening (a base reads zeros there).
 *
 * Write order (recovery removes the temporary, so the layer stays as it
 * was until K4):
 *  K1. the intent record (layer, temporary name) is written;
 *  K2. the copy is made under a hidden temporary name beside the layer:
 *      every run in order, then the descriptor (CID, parent unless
 *      flattened, DDB keys), closed (fsynced);
 *  K3. the copy is compared with the source: same bytes over the whole
 *      capacity and, unless flattened, the same runs held / not held;
 *  K3b. (promote) the former parent's sidecar record drops the layer;
 *  K4. the copy is renamed over the layer and the folder fsynced;
 *  K5. the intent record is removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "chain_int.h"

#define REWRITE_BUF LAYER_CMP_BUF

struct rewrite {
	struct chain *src;      /* the layer (alone) or its chain (flatten) */
	struct vmdk_disk *top;  /* chain_layer(src, 0) */
	struct vmdk_disk *dst;
	bool flatten;
	uint8_t *buf, *buf2;
	struct chain_plan *plan;
	uint64_t done, total;
};

int layer_rewrite_check(const char *path)
{
	struct vmdk_disk *d = NULL;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);
	const char *type = d ? vmdk_desc_get(d, "createType") : NULL;

	if (!err && (!type || strcmp(type, "monolithicSparse") || vmdk_nr_files(d) != 1)) {
		vd_err("%s: createType %s: rewriting handles a monolithicSparse layer only",
		       path, type ? type : "(none)");
		err = -ENOTSUP;
	}
	vmdk_close(d);
	return err;
}

static int rewrite_create(struct rewrite *w, const char *tmp, const struct vd_io *io)
{
	struct vmdk_disk *src = w->top;
	const char *hw = vmdk_desc_get(src, "ddb.virtualHWVersion");
	struct vmdk_extent_info e;
	struct vmdk_create_opts o = {
		.capacity = vmdk_capacity(src),
		.subformat = VMDK_MONOLITHIC_SPARSE,
		.adapter = vmdk_desc_get(src, "ddb.adapterType"),
		.hwversion = hw ? atoi(hw) : 0,
		.grain_size = vmdk_grain_size(src),
		.parent_cid = w->flatten ? VMDK_CID_NONE : vmdk_parent_cid(src),
		.parent_hint = w->flatten ? NULL : vmdk_parent_hint(src),
	};
	int err = vmdk_extent_info_get(src, 0, &e);

	o.zeroed_grain = !err && (e.flags & 0x4u); /* zeroed-grain GTEs */
	if (o.hwversion < 0 || o.hwversion > 99)
		o.hwversion = 0;
	return err ? err : vmdk_create(tmp, &o, io);
}

static void rewrite_progress(struct rewrite *w, uint64_t n)
{
	w->done += n;
	if (w->plan && w->plan->progress)
		w->plan->progress(w->plan->progress_opaque, w->done, w->total);
}

/* K2: one run of the source into dst. */
static int rewrite_run(struct rewrite *w, const struct chain_run *r)
{
	bool zero = r->kind == CHAIN_ZERO;
	int err = 0;

	if (r->kind == CHAIN_UNALLOC || (zero && w->flatten))
		return 0;
	if (!zero)
		err = chain_pread(w->src, w->buf, r->len, r->off);
	if (!err && (zero || vd_is_zero(w->buf, r->len)))
		err = w->flatten ? 0 : vmdk_pwrite_zeroes(w->dst, r->len, r->off);
	else if (!err)
		err = vmdk_pwrite(w->dst, w->buf, r->len, r->off);
	rewrite_progress(w, r->len);
	return err;
}

/* K2: every run, then the descriptor keys and the CID. */
static int rewrite_copy(struct rewrite *w)
{
	uint64_t cap = chain_capacity(w->src);
	const char *key, *val;
	struct chain_run r;
	char cid[9];
	int err = 0;

	for (uint64_t off = 0; !err && off < cap; off += r.len) {
		err = chain_status(w->src, off, VD_MIN(cap - off, (uint64_t)REWRITE_BUF), &r);
		if (!err)
			err = rewrite_run(w, &r);
	}
	for (unsigned i = 0; !err && !vmdk_desc_entry(w->top, i, &key, &val); i++)
		if (!strncmp(key, "ddb.", 4) &&
		    !(w->flatten && !strcmp(key, "ddb.nativeParentHint")))
			err = vmdk_desc_set(w->dst, key, val);
	snprintf(cid, sizeof cid, "%08x", vmdk_cid(w->top));
	if (!err)
		err = vmdk_desc_set(w->dst, "CID", cid);
	return err ? err : vmdk_desc_write(w->dst);
}

int layer_compare(struct chain *src, struct vmdk_disk *dst, bool alloc, uint8_t *buf,
		  uint8_t *buf2)
{
	uint64_t cap = chain_capacity(src), m;
	enum vmdk_bs kd;
	struct chain_run r;
	int err = cap == vmdk_capacity(dst) ? 0 : -EIO;

	for (uint64_t off = 0; !err && off < cap; off += r.len) {
		err = chain_status(src, off, VD_MIN(cap - off, (uint64_t)LAYER_CMP_BUF), &r);
		if (!err)
			err = vmdk_block_status(dst, off, r.len, &kd, &m);
		if (!err && m < r.len)
			r.len = m;
		if (!err && alloc && (r.kind == CHAIN_UNALLOC) != (kd == VMDK_BS_UNALLOC))
			err = -EIO;
		if (!err && !(err = chain_pread(src, buf, r.len, off)) &&
		    !(err = vmdk_pread(dst, buf2, r.len, off)) && memcmp(buf, buf2, r.len))
			err = -EIO;
	}
	return err;
}

/* K3 */
static int rewrite_verify(struct rewrite *w)
{
	int err = vmdk_cid(w->top) == vmdk_cid(w->dst) ? 0 : -EIO;

	if (!err)
		err = layer_compare(w->src, w->dst, !w->flatten, w->buf, w->buf2);
	if (err == -EIO)
		vd_err("%s: the rewritten copy %s does not read like it: left as it was",
		       vmdk_path(w->top), vmdk_path(w->dst));
	return err;
}

static int rewrite_into(struct rewrite *w, const char *tmp, const struct vd_io *io)
{
	int err = rewrite_create(w, tmp, io);

	if (!err)
		err = vmdk_open(tmp, VMDK_OPEN_RDWR, io, &w->dst);
	if (!err)
		err = rewrite_copy(w);
	if (w->dst && vmdk_close(w->dst) && !err)
		err = -EIO;
	w->dst = NULL;
	if (!err)
		err = vmdk_open(tmp, VMDK_OPEN_RDONLY, io, &w->dst);
	if (!err)
		err = rewrite_verify(w);
	vmdk_close(w->dst);
	return err;
}

static int rewrite_steps(struct rewrite *w, const struct group_intent *in,
			 const char *unrecord_from, const struct vd_io *io)
{
	int err = intent_write(in, io); /* K1 */

	if (!err) {
		group_unlink(in->tmp, io);
		err = rewrite_into(w, in->tmp, io); /* K2, K3 */
	}
	if (!err && unrecord_from) /* K3b */
		err = group_record_update(unrecord_from, in->target, NULL, 0, io);
	if (!err)
		err = io->rename(io, in->tmp, in->target); /* K4 */
	if (!err)
		err = io->sync_dir(io, in->target);
	if (err && !group_unlink(in->tmp, io)) /* roll back: the layer is as it was */
		intent_done(in, io);
	else if (!err)
		err = intent_done(in, io); /* K5 */
	return err;
}

int layer_rewrite(const char *path, const char *op, bool flatten,
		  const char *unrecord_from, struct chain_plan *plan,
		  const struct vd_io *io)
{
	struct rewrite w = { .flatten = flatten, .plan = plan, .total = plan->copy_bytes };
	struct group_intent in;
	unsigned flags = CHAIN_OPEN_RDONLY | CHAIN_OPEN_DIRTY_OK |
			 (flatten ? 0 : CHAIN_OPEN_NO_PARENT);
	int err = intent_init_tmp(path, op, &in);

	io = io ? io : vd_io_posix();
	w.buf = malloc(REWRITE_BUF);
	w.buf2 = malloc(REWRITE_BUF);
	if (!err && (!w.buf || !w.buf2))
		err = -ENOMEM;
	if (!err) /* locked: nobody writes it meanwhile */
		err = chain_open(path, flags, io, &w.src);
	if (!err) {
		w.top = chain_layer(w.src, 0);
		err = rewrite_steps(&w, &in, unrecord_from, io);
	}
	chain_close(w.src);
	intent_free(&in);
	free(w.buf);
	free(w.buf2);
	return err;
}
