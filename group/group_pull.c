/* group — `pull`: merge a layer's parent into the layer (the other merge
 * direction of consolidate) (layer 3).
 *
 * Owns: the plan and the steps of copying into layer L what its parent P
 * holds and L does not override, re-pointing L to P's parent G (or making
 * L a base when P was one) and removing P.  P may be a run of layers, P
 * (L's parent) and the layers below it down to G's child ("below" in the
 * record): consolidate takes a disk's unshared layers into its top in one
 * pull.  Each of them is then what P is below: reached only through L,
 * only read, removed at the end; U2 copies P's runs first, then each lower
 * layer's runs that L does not hold yet, all read through P's chain, so L
 * takes what the whole run reads, and U3 checks each of them.
 * L keeps its name (a disk's top stays where the VM config names it) and
 * its CID (it reads the same, so its children stay valid).  P must be
 * reached by no other disk than through L, and L by no other disk at all:
 * P is only read, G is never written (its sidecar record at most), and L
 * reads the same before and after every step.  L must be a hosted sparse
 * layer (monolithicSparse or twoGbMaxExtentSparse: a base and a delta of
 * those kinds differ only by the parent keys).
 *
 * Write order (each step safe to stop at; recovery = pull_resume):
 *  U1. the intent record (L, P, the layers below P pulled, G, L's CID and
 *      ddb.longContentID, the pulled layers' files) is written durably
 *      beside L;
 *  U2. every run P holds (data, or zeroed grains unless P is a base) that
 *      L does not hold is written into L, partial grains filled from P's
 *      chain; L is flushed (fsync).  L still names P as its parent and P
 *      is untouched, so L reads the same all along; L's first write gives
 *      it a new CID, so L's children's links are stale until U4 (chain_open
 *      refuses them; recovery restarts at U2, which is idempotent: a run L
 *      already took is not copied again);
 *  U3. L is checked to hold everything P holds (a base P: but zeros);
 *  U4. L's descriptor, one durable write: parentCID = P's parentCID and a
 *      hint to G (a base P: parentCID ffffffff, no hint), the native hint
 *      dropped, the CID and ddb.longContentID of U1 back.  From here L no
 *      longer names P, and recovery goes straight to U5;
 *  U5. G's sidecar record: P out, L in;
 *  U6. P's files are removed, descriptor first, then its sidecar record;
 *  U7. the intent record is removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "group_int.h"

#define PULL_BUF (4u << 20)

/* The record (U1). */
struct pull_rec {
	struct group_intent in;  /* target: L */
	char *parent;            /* P, merged away */
	char *grandparent;       /* G, the lowest pulled layer's parent (NULL: a base) */
	char **below;            /* the layers under P pulled too, top down */
	unsigned nr_below;
	char *cid;               /* L's CID (8 hex digits), kept */
	char *long_cid;          /* L's ddb.longContentID, when it had one */
	char **files;            /* the pulled layers' files and sidecars, removed */
	unsigned nr_files;
};

static const struct group_field pull_fields[] = {
	GROUP_FIELD_ONE(struct pull_rec, parent, "parent", GROUP_FIELD_LAYER,
			GROUP_LOCK_EXCL),
	GROUP_FIELD_ONE(struct pull_rec, grandparent, "grandparent", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct pull_rec, below, nr_below, "below", GROUP_FIELD_LAYERS,
			 GROUP_LOCK_EXCL),
	GROUP_FIELD_ONE(struct pull_rec, cid, "cid", GROUP_FIELD_TEXT, GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct pull_rec, long_cid, "long_cid", GROUP_FIELD_TEXT,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct pull_rec, files, nr_files, "file", GROUP_FIELD_FILES,
			 GROUP_LOCK_EXCL),
};

struct pull {
	struct vmdk_disk *l, *p; /* p: the pulled layer each_gap walks */
	struct chain *pc; /* P's chain: the bytes P reads, L's partial grains */
	unsigned depth;   /* the layers of pc pulled: P and those below it */
	unsigned at;      /* the one each_gap walks (p), 0: P */
	bool base;        /* the lowest of them has no parent: L becomes a base */
	uint8_t *buf;
	struct group_plan *plan;
	uint64_t done, total;
};

int group_pull_eligible(const char *layer)
{
	struct vmdk_disk *d = NULL;
	struct vmdk_extent_info e;
	int err = vmdk_open(layer, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);
	const char *type = d ? vmdk_desc_get(d, "createType") : NULL;

	if (!err && (!type || (strcmp(type, "monolithicSparse") &&
			       strcmp(type, "twoGbMaxExtentSparse"))))
		err = -ENOTSUP;
	for (unsigned i = 0; d && !err && !vmdk_extent_head_get(d, i, &e); i++)
		if (e.kind != VMDK_EXT_SPARSE)
			err = -ENOTSUP;
	vmdk_close(d);
	return err;
}

/* fn over every part of P's held runs that L does not hold. */
typedef int pull_fn(struct pull *u, enum vmdk_bs pk, uint64_t off, uint64_t len);

static int each_gap_of(struct pull *u, pull_fn *fn)
{
	uint64_t cap = vmdk_capacity(u->p), n, m;
	enum vmdk_bs pk, lk;
	int err = 0;

	for (uint64_t off = 0; !err && off < cap; off += n) {
		err = vmdk_block_status(u->p, off, cap - off, &pk, &n);
		if (err || pk == VMDK_BS_UNALLOC || (pk == VMDK_BS_ZERO && u->base))
			continue;
		for (uint64_t o = off; !err && o < off + n; o += m) {
			err = vmdk_block_status(u->l, o, off + n - o, &lk, &m);
			if (!err && lk == VMDK_BS_UNALLOC)
				err = fn(u, pk, o, m);
		}
	}
	return err;
}

/* Each pulled layer top down: once fn copied a layer's gaps, L holds them,
 * so a lower layer's gaps are only what no layer above it holds, where
 * P's chain reads that layer. */
static int each_gap(struct pull *u, pull_fn *fn)
{
	int err = 0;

	for (u->at = 0; !err && u->at < u->depth; u->at++) {
		u->p = chain_layer(u->pc, u->at);
		err = each_gap_of(u, fn);
	}
	u->p = chain_layer(u->pc, u->at = 0);
	return err;
}

/* Into *out the bytes of [off, off + len) that none of the pulled layers
 * above layer i holds (counting copies nothing, so L does not say it). */
static int unheld_above(struct pull *u, unsigned i, uint64_t off, uint64_t len,
			uint64_t *out)
{
	enum vmdk_bs k;
	uint64_t m;
	int err = 0;

	if (!i)
		*out += len;
	for (uint64_t o = off; i && !err && o < off + len; o += m) {
		err = vmdk_block_status(chain_layer(u->pc, i - 1), o, off + len - o, &k, &m);
		if (!err && k == VMDK_BS_UNALLOC)
			err = unheld_above(u, i - 1, o, m, out);
	}
	return err;
}

static int count_gap(struct pull *u, enum vmdk_bs pk, uint64_t off, uint64_t len)
{
	return pk == VMDK_BS_DATA ? unheld_above(u, u->at, off, len, &u->total) : 0;
}

/* U2: one gap, from P's chain into L (zeros stay holes in a new base). */
static int copy_gap(struct pull *u, enum vmdk_bs pk, uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)PULL_BUF);
		bool zero = pk == VMDK_BS_ZERO;
		int err = zero ? 0 : chain_pread(u->pc, u->buf, n, off);
		if (!err && !zero)
			zero = vd_is_zero(u->buf, n);
		if (!err && !(zero && u->base))
			err = zero ? vmdk_pwrite_zeroes(u->l, n, off)
				   : vmdk_pwrite(u->l, u->buf, n, off);
		if (err)
			return err;
		group_plan_progress(u->plan, &u->done, n, u->total);
		vmdk_writeback(u->l);
		off += n;
		len -= n;
	}
	return 0;
}

/* U3: a gap left is allowed only where a base P reads zeros. */
static int verify_gap(struct pull *u, enum vmdk_bs pk, uint64_t off, uint64_t len)
{
	while (len && u->base && pk == VMDK_BS_DATA) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)PULL_BUF);
		int err = chain_pread(u->pc, u->buf, n, off);
		if (err)
			return err;
		if (!vd_is_zero(u->buf, n))
			break;
		off += n;
		len -= n;
	}
	if (!len || (u->base && pk == VMDK_BS_ZERO))
		return 0;
	vd_err("%s: does not hold what %s holds at offset %llu after the merge: "
	       "stopped before re-pointing it", vmdk_path(u->l), vmdk_path(u->p),
	       (unsigned long long)off);
	return -EIO;
}

static int pull_backing(void *opaque, void *buf, size_t len, uint64_t off)
{
	return chain_pread(opaque, buf, len, off);
}

/* Several layers pulled (rdwr): the operation's lock set holds them, so
 * P's chain was opened without locks; the layers under them (G and its
 * parents) are locked here as chain_open locks a parent: read, no writer. */
static int lock_below(struct pull *u, unsigned depth)
{
	int err = 0;

	for (unsigned i = depth; !err && i < chain_depth(u->pc); i++)
		err = vmdk_lock(chain_layer(u->pc, i), VMDK_PERM_READ,
				VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	return err;
}

/* Open L (writable when rdwr: the operation's lock set holds L, P and the
 * layers below P pulled) and P's chain (the layers under those locked here:
 * read, no writer); depth: P and the layers below it pulled. */
static int pull_open(struct pull *u, const char *layer, const char *parent,
		     unsigned depth, bool rdwr, const struct vd_io *io)
{
	unsigned lock = !rdwr ? 0 : depth > 1 ? CHAIN_OPEN_NOLOCK : CHAIN_OPEN_NOLOCK_TOP;
	int err = vmdk_open(layer, rdwr ? VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK
				       : VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &u->l);

	if (!err)
		err = chain_open(parent, CHAIN_OPEN_RDONLY | CHAIN_OPEN_DIRTY_OK | lock, io,
				 &u->pc);
	if (!err && chain_depth(u->pc) < depth) {
		vd_err("%s: its chain has %u layers, the merge pulls %u: not merged", parent,
		       chain_depth(u->pc), depth);
		err = -ESTALE;
	}
	if (!err && (lock & CHAIN_OPEN_NOLOCK) && chain_depth(u->pc) > depth)
		err = lock_below(u, depth);
	if (!err) {
		u->p = chain_layer(u->pc, 0);
		u->depth = depth;
		u->base = chain_depth(u->pc) == depth;
		vmdk_set_backing(u->l, pull_backing, u->pc);
		u->buf = malloc(PULL_BUF);
	}
	if (!err && !u->buf)
		err = -ENOMEM;
	if (!err && vmdk_capacity(u->l) != vmdk_capacity(u->p)) {
		vd_err("%s: capacity differs from its parent %s: not merged", layer, parent);
		err = -EINVAL;
	}
	return err;
}

static int pull_close(struct pull *u)
{
	int err = u->l ? vmdk_close(u->l) : 0;

	chain_close(u->pc);
	free(u->buf);
	*u = (struct pull){ .plan = u->plan };
	return err;
}

/* The lowest pulled layer: P, or the last below it. */
static const char *lowest(const struct pull_rec *r)
{
	return r->nr_below ? r->below[r->nr_below - 1] : r->parent;
}

/* The layers under P in P's chain are the record's, and G under them. */
static int pull_matches(const struct pull *u, const struct pull_rec *r)
{
	struct vmdk_disk *g = chain_depth(u->pc) > u->depth ? chain_layer(u->pc, u->depth)
							     : NULL;

	for (unsigned i = 0; i < r->nr_below; i++)
		if (!vd_same_file(vmdk_path(chain_layer(u->pc, i + 1)), r->below[i])) {
			vd_err("%s: layer %u under %s is %s, not %s: not merged", r->in.path,
			       i + 1, r->parent, vmdk_path(chain_layer(u->pc, i + 1)),
			       r->below[i]);
			return -ESTALE;
		}
	if (g ? r->grandparent && vd_same_file(vmdk_path(g), r->grandparent)
	      : !r->grandparent)
		return 0;
	vd_err("%s: the parent of %s is %s, not %s: not merged", r->in.path, lowest(r),
	       g ? vmdk_path(g) : "none", r->grandparent ? r->grandparent : "none");
	return -ESTALE;
}

int group_pull_bytes(const char *layer, const char *parent, unsigned depth,
		     uint64_t *out)
{
	struct pull u = {0};
	int err = pull_open(&u, layer, parent, depth, false, NULL);

	if (!err)
		err = each_gap(&u, count_gap);
	*out = u.total;
	pull_close(&u);
	return err;
}

/* U4: L names G (or nothing) and has its CID of U1 back; L is opened
 * again, so it is closed clean even when an earlier run stopped here. */
static int pull_repoint(const struct pull_rec *r, const struct vd_io *io)
{
	struct vmdk_disk *d = NULL;
	char *hint = NULL;
	int err = r->grandparent ? chain_hint_make(r->in.target, r->grandparent, &hint) : 0;
	uint32_t pcid = VMDK_CID_NONE;

	if (!err && r->grandparent && !(err = vmdk_open(lowest(r), VMDK_OPEN_RDONLY |
							 VMDK_OPEN_DIRTY_OK, io, &d))) {
		pcid = vmdk_parent_cid(d);
		vmdk_close(d);
		d = NULL;
	}
	if (!err)
		err = vmdk_open(r->in.target, VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK, io, &d);
	if (!err)
		err = vmdk_set_parent(d, pcid, hint);
	if (!err)
		err = vmdk_desc_set(d, "ddb.nativeParentHint", NULL);
	if (!err)
		err = vmdk_desc_set(d, "CID", r->cid);
	if (!err && r->long_cid)
		err = vmdk_desc_set(d, "ddb.longContentID", r->long_cid);
	if (!err)
		err = vmdk_desc_write(d);
	if (d && vmdk_close(d) && !err)
		err = -EIO;
	free(hint);
	return err;
}

/* U2, U3 over the layers u has open (opened here when it has none: a
 * recovery); u is closed. */
static int pull_merge(const struct pull_rec *r, const struct vd_io *io, struct pull *u)
{
	int err = u->l ? 0 : pull_open(u, r->in.target, r->parent, 1 + r->nr_below, true, io);

	u->total = u->plan ? u->plan->copy_bytes : 0; /* progress only */
	if (!err)
		err = pull_matches(u, r);
	if (!err)
		err = each_gap(u, copy_gap);
	if (!err)
		err = vmdk_flush(u->l);
	if (!err)
		err = each_gap(u, verify_gap);
	if (pull_close(u) && !err)
		err = -EIO;
	return err;
}

/* Which parent L names: 1 P (U4 not done), 0 G or none (U4 done), or
 * -ESTALE (reported) for anything else. */
static int names_parent(const struct pull_rec *r)
{
	struct vmdk_disk *d = NULL;
	const char *hint;
	char *pp = NULL;
	int err = vmdk_open(r->in.target, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);

	if (err)
		return err;
	hint = vmdk_parent_hint(d);
	if (hint)
		err = chain_hint_find(r->in.target, hint,
				      vmdk_desc_get(d, "ddb.nativeParentHint"), &pp);
	if (!err && pp && vd_same_file(pp, r->parent))
		err = 1;
	else if (!err && (pp ? r->grandparent && vd_same_file(pp, r->grandparent)
			     : !r->grandparent))
		err = 0;
	else {
		vd_err("%s: names neither %s nor its parent: interrupted merge left as is",
		       r->in.target, r->parent);
		err = -ESTALE;
	}
	free(pp);
	vmdk_close(d);
	return err;
}

/* U2-U7; u: the layers opened before U1, or none (a recovery). */
static int pull_steps(const struct pull_rec *r, const struct vd_io *io, struct pull *u)
{
	int before_u4 = names_parent(r), err = before_u4 < 0 ? before_u4 : 0;

	if (before_u4 > 0)
		err = pull_merge(r, io, u); /* U2, U3 */
	pull_close(u);
	/* U4 again after it, while P is there: the same values, L closed clean */
	if (!err && (before_u4 > 0 || !lstat(r->parent, &(struct stat){0})))
		err = pull_repoint(r, io); /* U4 */
	if (!err && r->grandparent) /* U5 */
		err = group_record_update(r->grandparent, lowest(r), &r->in.target, 1, 0, io);
	if (!err) /* U6 */
		err = group_layer_remove_files(r->files, r->nr_files, io);
	return err ? err : group_intent_done(&r->in, io); /* U7 */
}

static int pull_resume(struct group_intent *head, const struct vd_io *io)
{
	const struct pull_rec *r = (const struct pull_rec *)head;
	struct pull u = {0};

	if (!r->parent || !r->cid || strlen(r->cid) != 8 ||
	    strspn(r->cid, "0123456789abcdefABCDEF") != 8) {
		vd_err("%s: pull record without a parent or a CID: left as is", r->in.path);
		return -VD_EBADDATA;
	}
	return pull_steps(r, io, &u);
}

const struct group_op group_op_pull = {
	.name = "pull",
	.fields = pull_fields,
	.nr_fields = sizeof pull_fields / sizeof pull_fields[0],
	.size = sizeof(struct pull_rec),
	.resume = pull_resume,
};

/* ---- plan ------------------------------------------------------------------------- */

/* The node depth layers above node l (0: l). */
static int up(const struct group_tree *t, int l, unsigned depth)
{
	while (depth-- && l >= 0)
		l = t->nodes[l].parent;
	return l;
}

/* The layers under P pulled (depth - 1 of them) and their files. */
static int add_below(const struct group_tree *t, int l, unsigned depth,
		     struct pull_rec *r)
{
	int err = 0;

	for (unsigned i = 2; !err && i <= depth; i++) {
		const char *path = t->nodes[up(t, l, i)].path;
		err = group_intent_add(&r->below, &r->nr_below, path);
		if (!err)
			err = group_layer_add_files(&r->files, &r->nr_files, path);
	}
	return err;
}

/* The record of pulling node l's parent into l, and the depth - 1 layers
 * under it. */
static int pull_record(const struct group *g, int l, unsigned depth,
		       struct pull_rec **out)
{
	const struct group_tree *t = g->t;
	const struct group_tree_node *n = &t->nodes[l], *p = &t->nodes[n->parent],
				     *low = &t->nodes[up(t, l, depth)];
	struct group_intent *head;
	struct vmdk_disk *d = NULL;
	struct pull_rec *r;
	int err = group_intent_new(&group_op_pull, n->path, &head);

	if (err)
		return err;
	*out = r = (struct pull_rec *)head;
	if (!(err = vmdk_open(n->path, VMDK_OPEN_RDONLY, NULL, &d)) &&
	    asprintf(&r->cid, "%08x", vmdk_cid(d)) < 0)
		r->cid = NULL;
	if (!err && vmdk_desc_get(d, "ddb.longContentID"))
		r->long_cid = strdup(vmdk_desc_get(d, "ddb.longContentID"));
	vmdk_close(d);
	r->parent = strdup(p->path);
	if (low->parent >= 0)
		r->grandparent = strdup(t->nodes[low->parent].path);
	if (!err && (!r->parent || !r->cid || (low->parent >= 0 && !r->grandparent)))
		err = -ENOMEM;
	if (!err)
		err = group_layer_add_files(&r->files, &r->nr_files, p->path);
	return err ? err : add_below(t, l, depth, r);
}

static int pull_check(const struct group *g, const char *layer, unsigned depth, int *l)
{
	int p = group_merge_node(g, layer, "merging its parent into it", l), err;

	if (p < 0)
		return p;
	if (group_shared(g, *l))
		return group_refuse_shared(g, *l, "merging its parent into it");
	for (unsigned i = 1; i <= depth; i++) { /* each pulled layer, and its link down */
		int q = up(g->t, *l, i), below;
		if (q < 0) {
			vd_err("%s: has no %u layers under it to merge", layer, depth);
			return -EINVAL;
		}
		if (i < depth && (err = group_merge_node(g, g->t->nodes[q].path,
							 "merging its parent", &below)) < 0)
			return err;
		if (group_busy(g, q))
			return group_refuse_busy(g, q, "merging it into its child");
	}
	if ((err = group_pull_eligible(layer)) == -ENOTSUP)
		vd_err("%s: not a hosted sparse layer: its parent cannot be merged into it; "
		       "nothing changed", layer);
	return err;
}

/* counted: the bytes the pull copies, when the caller has them. */
static int pull_plan(const struct group *g, int l, const struct pull_rec *r,
		     const uint64_t *counted, struct group_plan *plan)
{
	uint64_t bytes = counted ? *counted : 0;
	unsigned depth = 1 + r->nr_below;
	int err = counted ? 0 : group_pull_bytes(r->in.target, r->parent, depth, &bytes);

	if (!err)
		err = group_plan_add(plan, GROUP_STEP_PULL, r->in.target, bytes);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_REPOINT, r->in.target, 0);
	for (unsigned i = 1; !err && i <= depth; i++)
		err = group_plan_add(plan, GROUP_STEP_REMOVE, g->t->nodes[up(g->t, l, i)].path,
				     g->t->nodes[up(g->t, l, i)].file_bytes);
	plan->copy_bytes = plan->space_needed = bytes;
	free(plan->result);
	plan->result = g->t->nodes[l].nr_children ? NULL : strdup(r->in.target);
	return err ? err : group_plan_space(plan, r->in.target);
}

/* Lock, open L for writing and P's chain for reading (a refusal here
 * leaves no record), U1, then the steps. */
static int pull_run(const struct pull_rec *r, const struct vd_io *io,
		    struct group_plan *plan)
{
	struct group_locks locks = {0};
	struct pull u = { .plan = plan };
	int err = group_intent_lock(&r->in, &locks);

	if (!err)
		err = pull_open(&u, r->in.target, r->parent, 1 + r->nr_below, true, io);
	if (!err)
		err = pull_matches(&u, r);
	if (!err)
		err = group_intent_write(&r->in, io); /* U1 */
	if (!err)
		err = pull_steps(r, io, &u);
	pull_close(&u); /* after a failure before U2 */
	group_locks_release(&locks);
	return err;
}

int group_pull_counted(struct group *g, const char *layer, unsigned depth,
		       unsigned flags, const struct vd_io *io, struct group_plan *plan,
		       const uint64_t *counted)
{
	struct pull_rec *r = NULL;
	int l, err = pull_check(g, layer, depth, &l);

	io = io ? io : vd_io_posix();
	plan->op = "pull";
	if (!err)
		err = pull_record(g, l, depth, &r);
	if (!err)
		err = pull_plan(g, l, r, counted, plan);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = pull_run(r, io, plan);
	group_intent_free(r ? &r->in : NULL);
	return err;
}

int group_pull(struct group *g, const char *layer, unsigned flags,
	       const struct vd_io *io, struct group_plan *plan)
{
	return group_pull_counted(g, layer, 1, flags, io, plan, NULL);
}
