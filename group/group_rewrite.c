/* group — rewriting one layer into a fresh file (layer 3): compaction for
 * `check --repair` and flattening for `promote --unlink`.
 *
 * Owns: which kind a layer is rewritten as (group_rewrite_like, also used by
 * revert), copying what a layer holds (or, flattened, what its whole chain
 * reads) into a new layer with the layer's CID and DDB keys, and verifying
 * it.  The layer's CID is kept, so its children stay valid; the content
 * read through the layer is the same.  Data moves in runs of up to
 * REWRITE_BUF bytes taken from the merged map; unallocated runs are
 * skipped, and so are zero runs when flattening (a base reads zeros there).
 *
 * Kinds: a layer is rewritten as its own kind (monolithicSparse,
 * twoGbMaxExtentSparse with the same split, vmfsSparse, seSparse); a
 * flattened ESXi delta becomes what ESXi has below its deltas, a vmfs
 * base (NAME.vmdk + NAME-flat.vmdk, thin).  Flat and stream layers are
 * refused (-ENOTSUP, reported with the reason): a flat layer has no grains
 * to compact and is never a delta, a stream is a read-only export.
 *
 * Write order (the layer stays as it was until K4's publish begins):
 *  K1. the intent record (layer, staging folder, the layer's files; for
 *      promote the shared parent) is written;
 *  K2. the copy is made in the staging folder (group_stage.c) under the
 *      layer's own name: every run in order, then the descriptor (CID,
 *      parent unless flattened, DDB keys), closed (fsynced);
 *  K3. the copy is compared with the source: same bytes over the whole
 *      capacity (runs that neither holds data for read zeros on both
 *      sides, by block status) and, unless flattened, the same runs held /
 *      not held; flattened, the source is not read again: the digest of
 *      what the copy reads back over the source's data runs is compared
 *      with the digest of what K2 read there (group_sum.c), and the copy
 *      must read zeros elsewhere; the copy's extent names are checked
 *      against the folder;
 *  K4. publish (group_stage.c P1-P6): extents, then the descriptor, are
 *      renamed in; (promote) the former parent's sidecar record drops the
 *      layer; former extents no longer named are removed; the record goes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "group_int.h"

#define REWRITE_BUF GROUP_REWRITE_BUF

struct rewrite {
	struct chain *src;      /* the layer (alone) or its chain (flatten) */
	struct chain *below;    /* the layer's parents (not flattening), or NULL */
	struct vmdk_disk *top;  /* chain_layer(src, 0) */
	struct vmdk_disk *dst;
	bool flatten;
	uint8_t *buf, *buf2;
	struct group_sum sum; /* K3 of a flattened copy */
	struct group_plan *plan;
	uint64_t done, total;
};

/* Why a layer of createType type (not one of the four rewritten) cannot be. */
static const char *unlike_reason(const char *type)
{
	if (strstr(type, "Flat") || !strncmp(type, "vmfs", 4))
		return "a flat layer holds every byte: it has no grains to compact and "
		       "is never a delta";
	if (!strcmp(type, "streamOptimized"))
		return "a stream is a read-only export";
	return "not a kind vdelta writes";
}

/* d's extents are laid out as vmdk_create makes sf: one file of the kind,
 * or (split) equal extents of the first one's size. */
static bool laid_out_as(struct vmdk_disk *d, enum vmdk_subformat sf,
			const struct vmdk_extent_info *e)
{
	static const enum vmdk_extent_kind ext[VMDK_SUBFORMAT_COUNT] = {
		[VMDK_MONOLITHIC_SPARSE] = VMDK_EXT_SPARSE, [VMDK_TWOGB_SPARSE] = VMDK_EXT_SPARSE,
		[VMDK_VMFS_SPARSE] = VMDK_EXT_COWD, [VMDK_SESPARSE] = VMDK_EXT_SESPARSE,
	};
	struct vmdk_extent_info x;
	struct vmdk_info vi;

	vmdk_info_get(d, &vi);
	if (e->kind != ext[sf] || !e->size)
		return false;
	if (sf != VMDK_TWOGB_SPARSE)
		return vi.nr_extents == 1 &&
		       vmdk_nr_files(d) == (sf == VMDK_MONOLITHIC_SPARSE ? 1u : 2u);
	for (unsigned i = 1; i < vi.nr_extents; i++)
		if (vmdk_extent_info_get(d, i, &x) || x.kind != e->kind ||
		    x.start != i * e->size || (x.size != e->size && i + 1 < vi.nr_extents))
			return false;
	return vi.nr_extents == VD_DIV_ROUND_UP(vi.capacity, e->size) &&
	       vmdk_nr_files(d) == vi.nr_extents + 1;
}

/* The subformat a rewrite of d makes: its own, or (flatten) a base of its
 * family; -ENOTSUP (reported, with the reason) for any other layer. */
static int like_kind(struct vmdk_disk *d, bool flatten, enum vmdk_subformat *sf,
		     struct vmdk_extent_info *e)
{
	const char *type = vmdk_desc_get(d, "createType"), *why = NULL;

	if (!type || vmdk_subformat_parse(type, sf))
		why = "not a kind vdelta writes";
	else if (*sf != VMDK_MONOLITHIC_SPARSE && *sf != VMDK_TWOGB_SPARSE &&
		 *sf != VMDK_VMFS_SPARSE && *sf != VMDK_SESPARSE)
		why = unlike_reason(type);
	else if (vmdk_extent_info_get(d, 0, e) || !laid_out_as(d, *sf, e))
		why = "its extents are not laid out as vdelta creates them";
	if (why) {
		vd_err("%s: createType %s: cannot be rewritten: %s", vmdk_path(d),
		       type ? type : "(none)", why);
		return -ENOTSUP;
	}
	if (flatten && (*sf == VMDK_VMFS_SPARSE || *sf == VMDK_SESPARSE))
		*sf = VMDK_VMFS;
	return 0;
}

int group_rewrite_like(struct vmdk_disk *top, struct vmdk_disk *base, bool flatten,
	       struct vmdk_create_opts *o)
{
	const char *hw = vmdk_desc_get(top, "ddb.virtualHWVersion");
	const char *adapter = vmdk_desc_get(top, "ddb.adapterType");
	struct vmdk_extent_info e;
	int err = like_kind(top, flatten, &o->subformat, &e);

	if (err)
		return err;
	o->capacity = vmdk_capacity(top);
	o->adapter = adapter ? adapter : vmdk_desc_get(base, "ddb.adapterType");
	hw = hw ? hw : vmdk_desc_get(base, "ddb.virtualHWVersion");
	o->hwversion = hw ? atoi(hw) : 0;
	if (o->hwversion < 0 || o->hwversion > 99)
		o->hwversion = 0;
	if (o->subformat != VMDK_VMFS && o->subformat != VMDK_SESPARSE)
		o->grain_size = vmdk_grain_size(top);
	if (o->subformat == VMDK_TWOGB_SPARSE)
		o->split_size = e.size;
	o->zeroed_grain = e.kind == VMDK_EXT_SPARSE && (e.flags & 0x4u); /* zeroed-grain GTEs */
	o->parent_cid = flatten ? VMDK_CID_NONE : vmdk_parent_cid(top);
	o->parent_hint = flatten ? NULL : vmdk_parent_hint(top);
	return 0;
}

int group_rewrite_check(const char *path, bool flatten)
{
	struct vmdk_disk *d = NULL;
	struct vmdk_create_opts o = {0};
	int err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);

	if (!err)
		err = group_rewrite_like(d, d, flatten, &o);
	vmdk_close(d);
	return err;
}

static int rewrite_create(struct rewrite *w, const char *tmp, const struct vd_io *io)
{
	struct vmdk_create_opts o = {0};
	int err = group_rewrite_like(w->top, chain_layer(w->src, chain_depth(w->src) - 1),
			     w->flatten, &o);

	return err ? err : vmdk_create(tmp, &o, io);
}

/* Does everything below the layer read zeros over [off, off+len)?  (Yes
 * for a base.)  buf holds GROUP_REWRITE_BUF bytes. */
static int below_zero(struct chain *below, uint64_t off, uint64_t len, uint8_t *buf)
{
	struct chain_run r;
	int err = 0;

	for (uint64_t end = off + len; below && !err && off < end; off += r.len) {
		err = chain_status(below, off, VD_MIN(end - off, (uint64_t)GROUP_REWRITE_BUF), &r);
		if (!err && r.kind == CHAIN_DATA && !(err = chain_pread(below, buf, r.len, off)) &&
		    !vd_is_zero(buf, r.len))
			return 0;
	}
	return err ? err : 1;
}

/* K2: one run of the source into dst.  Zeros the layer holds are dropped
 * where its parents read zeros too, and kept (a zeroed grain, or zeros
 * written) where they would uncover a parent's data. */
static int rewrite_run(struct rewrite *w, const struct chain_run *r)
{
	bool zero = r->kind == CHAIN_ZERO;
	int err = 0;

	if (r->kind == CHAIN_UNALLOC || (zero && w->flatten))
		return 0;
	if (!zero)
		err = chain_pread(w->src, w->buf, r->len, r->off);
	if (!err && !zero && w->flatten)
		group_sum_copied(&w->sum, w->buf, r->len);
	if (!err && (zero || vd_is_zero(w->buf, r->len)) && !w->flatten)
		err = (err = below_zero(w->below, r->off, r->len, w->buf2)) < 0 ? err
		      : err ? 0 : vmdk_pwrite_zeroes(w->dst, r->len, r->off);
	else if (!err && !(w->flatten && vd_is_zero(w->buf, r->len)))
		err = vmdk_pwrite(w->dst, w->buf, r->len, r->off);
	group_plan_progress(w->plan, &w->done, r->len, w->total);
	vmdk_writeback(w->dst);
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
		if (!strncmp(key, "ddb.", 4) && !(w->flatten && (!strcmp(key, "ddb.nativeParentHint") ||
							       !strcmp(key, "ddb.grain"))))
			err = vmdk_desc_set(w->dst, key, val);
	snprintf(cid, sizeof cid, "%08x", vmdk_cid(w->top));
	if (!err)
		err = vmdk_desc_set(w->dst, "CID", cid);
	return err ? err : vmdk_desc_write(w->dst);
}

/* One piece of a comparison (one kind on each side): 0, or -EIO. */
static int compare_piece(struct chain *src, struct vmdk_disk *dst, enum group_cmp mode,
			 struct chain *below, const struct chain_run *r, enum vmdk_bs kd,
			 uint8_t *buf, uint8_t *buf2)
{
	bool held = r->kind != CHAIN_UNALLOC, dheld = kd != VMDK_BS_UNALLOC;
	int err;

	if (mode != GROUP_CMP_CONTENT && held != dheld && (!held || mode == GROUP_CMP_RUNS))
		return -EIO;
	if (r->kind != CHAIN_DATA && kd != VMDK_BS_DATA)
		return 0; /* both read zeros: nothing to compare */
	if ((err = chain_pread(src, buf, r->len, r->off)))
		return err;
	if (mode == GROUP_CMP_LAYER && held && !dheld) /* zeros dropped over zeros */
		return vd_is_zero(buf, r->len) && below_zero(below, r->off, r->len, buf2) == 1
		       ? 0 : -EIO;
	if ((err = vmdk_pread(dst, buf2, r->len, r->off)))
		return err;
	return memcmp(buf, buf2, r->len) ? -EIO : 0;
}

int group_rewrite_compare(struct chain *src, struct vmdk_disk *dst, enum group_cmp mode,
			  struct chain *below, uint8_t *buf, uint8_t *buf2)
{
	uint64_t cap = chain_capacity(src), m;
	enum vmdk_bs kd;
	struct chain_run r;
	int err = cap == vmdk_capacity(dst) ? 0 : -EIO;

	for (uint64_t off = 0; !err && off < cap; off += r.len) {
		err = chain_status(src, off, VD_MIN(cap - off, (uint64_t)GROUP_REWRITE_BUF), &r);
		if (!err)
			err = vmdk_block_status(dst, off, r.len, &kd, &m);
		if (!err && m < r.len)
			r.len = m;
		if (!err)
			err = compare_piece(src, dst, mode, below, &r, kd, buf, buf2);
	}
	return err;
}

/* K3, flattened: dst over [off, off + len), where the source reads zeros
 * (kind not DATA) or the data K2 read (into the digest). */
static int verify_flat_run(struct rewrite *w, enum chain_kind kind, uint64_t off,
			   uint64_t len)
{
	enum vmdk_bs kd;
	int err = 0;

	for (uint64_t m, end = off + len; !err && off < end; off += m) {
		err = vmdk_block_status(w->dst, off, end - off, &kd, &m);
		if (err || (kind != CHAIN_DATA && kd != VMDK_BS_DATA))
			continue;
		err = vmdk_pread(w->dst, w->buf2, m, off);
		if (!err && kind == CHAIN_DATA)
			group_sum_back(&w->sum, w->buf2, m);
		else if (!err && !vd_is_zero(w->buf2, m))
			err = -EIO;
	}
	return err;
}

/* K3, flattened: every run of the source, as K2 walked them. */
static int verify_flat(struct rewrite *w)
{
	uint64_t cap = chain_capacity(w->src);
	struct chain_run r;
	int err = cap == vmdk_capacity(w->dst) ? 0 : -EIO;

	for (uint64_t off = 0; !err && off < cap; off += r.len) {
		err = chain_status(w->src, off, VD_MIN(cap - off, (uint64_t)REWRITE_BUF), &r);
		if (!err)
			err = verify_flat_run(w, r.kind, off, r.len);
	}
	return err || group_sum_same(&w->sum) ? err : -EIO;
}

/* K3 */
static int rewrite_verify(struct rewrite *w)
{
	int err = vmdk_cid(w->top) == vmdk_cid(w->dst) ? 0 : -EIO;

	if (!err)
		err = w->flatten ? verify_flat(w)
				 : group_rewrite_compare(w->src, w->dst, GROUP_CMP_LAYER,
							 w->below, w->buf, w->buf2);
	if (err == -EIO)
		vd_err("%s: the rewritten copy %s does not read like it: left as it was",
		       vmdk_path(w->top), vmdk_path(w->dst));
	return err;
}

static int below_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	return chain_pread(opaque, buf, len, off);
}

/* The parents of the layer at path (read-locked), when it has any. */
static int open_below(struct rewrite *w, const char *path, const struct vd_io *io)
{
	const char *hint = vmdk_parent_hint(w->top);
	char *pp;
	int err;

	if (w->flatten || !hint)
		return 0;
	err = chain_hint_resolve(path, hint, vmdk_desc_get(w->top, "ddb.nativeParentHint"), &pp);
	if (!err)
		err = chain_open(pp, CHAIN_OPEN_RDONLY | CHAIN_OPEN_DIRTY_OK, io, &w->below);
	free(pp);
	return err;
}

/* K2, K3 (stage_fill_fn) */
static int rewrite_into(void *opaque, const char *tmp, const struct vd_io *io)
{
	struct rewrite *w = opaque;
	int err = rewrite_create(w, tmp, io);

	if (!err)
		err = vmdk_open(tmp, VMDK_OPEN_RDWR, io, &w->dst);
	if (!err && w->below) /* zeros it holds keep masking what lies below */
		vmdk_set_backing(w->dst, below_read, w->below);
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

int group_rewrite(const struct group_op *op, const char *path, bool flatten,
		  const char *unrecord_from, struct group_plan *plan,
		  const struct vd_io *io)
{
	struct rewrite w = { .flatten = flatten, .plan = plan, .total = plan->copy_bytes };
	struct group_stage_rec *r = NULL;
	unsigned flags = CHAIN_OPEN_RDONLY | CHAIN_OPEN_DIRTY_OK | CHAIN_OPEN_NOLOCK_TOP |
			 (flatten ? 0 : CHAIN_OPEN_NO_PARENT);
	int err = group_stage_new(op, path, &r);

	io = io ? io : vd_io_posix();
	if (!err && unrecord_from && !(r->parent = strdup(unrecord_from)))
		err = -ENOMEM;
	w.buf = malloc(REWRITE_BUF);
	w.buf2 = malloc(REWRITE_BUF);
	if (!err && (!w.buf || !w.buf2))
		err = -ENOMEM;
	if (!err)
		err = group_sum_open(&w.sum);
	if (!err) /* parents locked here, the layer by the staging's lock set */
		err = chain_open(path, flags, io, &w.src);
	if (!err) {
		w.top = chain_layer(w.src, 0);
		err = open_below(&w, path, io);
	}
	if (!err)
		err = group_stage_run(r, rewrite_into, &w, io); /* K1-K4 */
	chain_close(w.below);
	chain_close(w.src);
	group_intent_free(r ? &r->in : NULL);
	group_sum_close(&w.sum);
	free(w.buf);
	free(w.buf2);
	return err;
}
