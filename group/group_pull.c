/* group — `pull`: merge a layer's parent into the layer (the other merge
 * direction of consolidate) (layer 3).
 *
 * Owns: the plan and the steps of copying into layer L what its parent P
 * holds and L does not override, re-pointing L to P's parent G (or making
 * L a base when P was one) and removing P.  L keeps its name (a disk's top
 * stays where the VM config names it) and its CID (it reads the same, so
 * its children stay valid).  P must be reached by no other disk than
 * through L, and L by no other disk at all: P is only read, G is never
 * written (its sidecar record at most), and L reads the same before and
 * after every step.  L must be a hosted sparse layer (monolithicSparse or
 * twoGbMaxExtentSparse: a base and a delta of those kinds differ only by
 * the parent keys).
 *
 * Write order (each step safe to stop at; recovery = pull_resume):
 *  U1. the intent record (L, P, G, L's CID and ddb.longContentID, P's
 *      files) is written durably beside L;
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
	char *grandparent;       /* G, P's parent (NULL: P was a base) */
	char *cid;               /* L's CID (8 hex digits), kept */
	char *long_cid;          /* L's ddb.longContentID, when it had one */
	char **files;            /* P's files and sidecar, removed */
	unsigned nr_files;
};

static const struct group_field pull_fields[] = {
	GROUP_FIELD_ONE(struct pull_rec, parent, "parent", GROUP_FIELD_LAYER,
			GROUP_LOCK_EXCL),
	GROUP_FIELD_ONE(struct pull_rec, grandparent, "grandparent", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct pull_rec, cid, "cid", GROUP_FIELD_TEXT, GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct pull_rec, long_cid, "long_cid", GROUP_FIELD_TEXT,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct pull_rec, files, nr_files, "file", GROUP_FIELD_FILES,
			 GROUP_LOCK_EXCL),
};

struct pull {
	struct vmdk_disk *l, *p;
	struct chain *pc; /* P's chain: the bytes P reads, L's partial grains */
	bool base;        /* P has no parent: L becomes a base */
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
	for (unsigned i = 0; d && !err && !vmdk_extent_info_get(d, i, &e); i++)
		if (e.kind != VMDK_EXT_SPARSE)
			err = -ENOTSUP;
	vmdk_close(d);
	return err;
}

/* fn over every part of P's held runs that L does not hold. */
typedef int pull_fn(struct pull *u, enum vmdk_bs pk, uint64_t off, uint64_t len);

static int each_gap(struct pull *u, pull_fn *fn)
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

static int count_gap(struct pull *u, enum vmdk_bs pk, uint64_t off, uint64_t len)
{
	(void)off;
	u->total += pk == VMDK_BS_DATA ? len : 0;
	return 0;
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

/* Open L (writable when rdwr: the operation's lock set holds L and P) and
 * P's chain (its parents locked here: read, no writer). */
static int pull_open(struct pull *u, const char *layer, const char *parent, bool rdwr,
		     const struct vd_io *io)
{
	int err = vmdk_open(layer, rdwr ? VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK
				       : VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &u->l);

	if (!err)
		err = chain_open(parent, CHAIN_OPEN_RDONLY | CHAIN_OPEN_DIRTY_OK |
				 (rdwr ? CHAIN_OPEN_NOLOCK_TOP : 0), io, &u->pc);
	if (!err) {
		u->p = chain_layer(u->pc, 0);
		u->base = chain_depth(u->pc) == 1;
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
	return err;
}

int group_pull_bytes(const char *layer, const char *parent, uint64_t *out)
{
	struct pull u = {0};
	int err = pull_open(&u, layer, parent, false, NULL);

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

	if (!err && r->grandparent && !(err = vmdk_open(r->parent, VMDK_OPEN_RDONLY |
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

/* Before U1: L opens for writing and P's chain for reading (a refusal
 * here leaves no record). */
static int pull_probe(const struct pull_rec *r, const struct vd_io *io)
{
	struct pull u = {0};
	int err = pull_open(&u, r->in.target, r->parent, true, io);

	if (pull_close(&u) && !err)
		err = -EIO;
	return err;
}

/* U2, U3 */
static int pull_merge(const struct pull_rec *r, const struct vd_io *io,
		      struct group_plan *plan)
{
	struct pull u = { .plan = plan };
	int err = pull_open(&u, r->in.target, r->parent, true, io);

	if (!err)
		err = each_gap(&u, count_gap);
	if (!err)
		err = each_gap(&u, copy_gap);
	if (!err)
		err = vmdk_flush(u.l);
	if (!err)
		err = each_gap(&u, verify_gap);
	if (pull_close(&u) && !err)
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

static int pull_steps(const struct pull_rec *r, const struct vd_io *io,
		      struct group_plan *plan)
{
	int before_u4 = names_parent(r), err = before_u4 < 0 ? before_u4 : 0;

	if (before_u4 > 0)
		err = pull_merge(r, io, plan); /* U2, U3 */
	/* U4 again after it, while P is there: the same values, L closed clean */
	if (!err && (before_u4 > 0 || !lstat(r->parent, &(struct stat){0})))
		err = pull_repoint(r, io); /* U4 */
	if (!err && r->grandparent) /* U5 */
		err = group_record_update(r->grandparent, r->parent, &r->in.target, 1, 0, io);
	if (!err) /* U6 */
		err = group_layer_remove_files(r->files, r->nr_files, io);
	return err ? err : group_intent_done(&r->in, io); /* U7 */
}

static int pull_resume(struct group_intent *head, const struct vd_io *io)
{
	const struct pull_rec *r = (const struct pull_rec *)head;

	if (!r->parent || !r->cid || strlen(r->cid) != 8 ||
	    strspn(r->cid, "0123456789abcdefABCDEF") != 8) {
		vd_err("%s: pull record without a parent or a CID: left as is", r->in.path);
		return -VD_EBADDATA;
	}
	return pull_steps(r, io, NULL);
}

const struct group_op group_op_pull = {
	.name = "pull",
	.fields = pull_fields,
	.nr_fields = sizeof pull_fields / sizeof pull_fields[0],
	.size = sizeof(struct pull_rec),
	.resume = pull_resume,
};

/* ---- plan ------------------------------------------------------------------------- */

/* The record of pulling node l's parent into l. */
static int pull_record(const struct group *g, int l, struct pull_rec **out)
{
	const struct group_tree *t = g->t;
	const struct group_tree_node *n = &t->nodes[l], *p = &t->nodes[n->parent];
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
	if (p->parent >= 0)
		r->grandparent = strdup(t->nodes[p->parent].path);
	if (!err && (!r->parent || !r->cid || (p->parent >= 0 && !r->grandparent)))
		err = -ENOMEM;
	return err ? err : group_layer_add_files(&r->files, &r->nr_files, p->path);
}

static int pull_check(const struct group *g, const char *layer, int *l)
{
	int p = group_merge_node(g, layer, "merging its parent into it", l), err;

	if (p < 0)
		return p;
	if (group_shared(g, *l))
		return group_refuse_shared(g, *l, "merging its parent into it");
	if (group_busy(g, p))
		return group_refuse_busy(g, p, "merging it into its child");
	if ((err = group_pull_eligible(layer)) == -ENOTSUP)
		vd_err("%s: not a hosted sparse layer: its parent cannot be merged into it; "
		       "nothing changed", layer);
	return err;
}

static int pull_plan(const struct group *g, int l, const struct pull_rec *r,
		     struct group_plan *plan)
{
	uint64_t bytes = 0;
	int err = group_pull_bytes(r->in.target, r->parent, &bytes);

	if (!err)
		err = group_plan_add(plan, GROUP_STEP_PULL, r->in.target, bytes);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_REPOINT, r->in.target, 0);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_REMOVE, r->parent,
				     g->t->nodes[g->t->nodes[l].parent].file_bytes);
	plan->copy_bytes = plan->space_needed = bytes;
	free(plan->result);
	plan->result = g->t->nodes[l].nr_children ? NULL : strdup(r->in.target);
	return err ? err : group_plan_space(plan, r->in.target);
}

int group_pull(struct group *g, const char *layer, unsigned flags,
	       const struct vd_io *io, struct group_plan *plan)
{
	struct group_locks locks = {0};
	struct pull_rec *r = NULL;
	int l, err = pull_check(g, layer, &l);

	io = io ? io : vd_io_posix();
	plan->op = "pull";
	if (!err)
		err = pull_record(g, l, &r);
	if (!err)
		err = pull_plan(g, l, r, plan);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = group_intent_lock(&r->in, &locks);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = pull_probe(r, io);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = group_intent_write(&r->in, io); /* U1 */
	if (!err && !(flags & GROUP_DRY_RUN))
		err = pull_steps(r, io, plan);
	group_locks_release(&locks);
	group_intent_free(r ? &r->in : NULL);
	return err;
}
