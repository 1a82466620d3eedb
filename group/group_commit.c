/* group — `commit`: merge a layer into its parent (snapshot removal)
 * (layer 3).
 *
 * Owns: the plan and the steps of merging LAYER (L) into its parent (P),
 * re-pointing L's children to P and removing L.  P must be reached by no
 * other disk than through L (not shared), so every disk that reads P reads
 * it through L: writing L's grains into P does not change what any disk
 * reads.  Only the grains L holds are read and written, in runs of up to
 * COMMIT_BUF bytes; P is written in place, whatever kind vdelta writes:
 * hosted sparse or flat, a vmfs flat base, a COWD or seSparse delta.  L is
 * read once and P once; the layers are opened once, before C1 (so a
 * refusal leaves no record), and stay open through C3.
 *
 * Write order (each step safe to stop at; recovery = commit_resume):
 *  C1. the intent record (L, P, L's children, L's files, whether P becomes
 *      a top) is written durably beside L;
 *  C2. every run L holds (data, or zeroed grains) is written into P and P
 *      is flushed (fsync).  P gets a new CID, so L's link to P is stale
 *      until the end: chain_open refuses it, and recovery restarts at C2,
 *      which is idempotent (L is never written; P's other grains are not
 *      touched and no disk reads them but through L);
 *  C3. P is read back over L's runs and compared with L: the digest of
 *      what P reads over L's data runs with the digest of what C2 read from
 *      L (group_sum.c: L is read once), and zeros over L's zeroed runs,
 *      while C2's flush runs (C4 waits for both);
 *  C4. each child of L gets parentCID = P's new CID and a hint to P
 *      (descriptor rewrite, durable, one file at a time);
 *  C5. P's sidecar record: L out, L's children in; P loses its frozen mark
 *      when L had no child (P is the disk's top now);
 *  C6. L's files are removed, descriptor first (after which recovery goes
 *      straight to C6), then its extents and its sidecar record;
 *  C7. the intent record is removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

#define COMMIT_BUF (4u << 20)

/* The record (C1). */
struct commit_rec {
	struct group_intent in;
	char *parent;    /* P, the layer merged into */
	bool unfreeze;   /* P becomes a top */
	char **children; /* L's children, re-pointed to P */
	unsigned nr_children;
	char **files;    /* L's files (descriptor first) and sidecar, removed */
	unsigned nr_files;
};

static const struct group_field commit_fields[] = {
	GROUP_FIELD_ONE(struct commit_rec, parent, "parent", GROUP_FIELD_LAYER,
			GROUP_LOCK_EXCL),
	GROUP_FIELD_ONE(struct commit_rec, unfreeze, "unfreeze", GROUP_FIELD_FLAG,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct commit_rec, children, nr_children, "child",
			 GROUP_FIELD_LAYERS, GROUP_LOCK_EXCL),
	GROUP_FIELD_LIST(struct commit_rec, files, nr_files, "file", GROUP_FIELD_FILES,
			 GROUP_LOCK_EXCL),
};

struct merge {
	struct vmdk_disk *upper, *lower;
	struct chain *below; /* P's parents, backing P's partial grain writes */
	uint8_t *buf, *buf2;
	struct group_sum sum; /* C3 */
	struct group_plan *plan;
	uint64_t done, total;
};

static int below_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	return chain_pread(opaque, buf, len, off);
}

/* Open P for writing (the operation's lock set holds it), its parents
 * (locked here: read, no writer) as the backing of partial grains. */
static int open_lower(struct merge *m, const char *parent, const struct vd_io *io,
		      bool resume)
{
	char *pp;
	int err = vmdk_open(parent, VMDK_OPEN_RDWR | (resume ? VMDK_OPEN_DIRTY_OK : 0),
			    io, &m->lower);

	if (err || !vmdk_parent_hint(m->lower))
		return err;
	err = chain_hint_resolve(parent, vmdk_parent_hint(m->lower),
				 vmdk_desc_get(m->lower, "ddb.nativeParentHint"), &pp);
	if (!err)
		err = chain_open(pp, CHAIN_OPEN_RDONLY, io, &m->below);
	if (!err)
		vmdk_set_backing(m->lower, below_read, m->below);
	free(pp);
	return err;
}

static int open_merge(struct merge *m, const char *layer, const char *parent,
		      const struct vd_io *io, bool resume)
{
	int err = vmdk_open(layer, VMDK_OPEN_RDONLY, io, &m->upper);

	if (!err)
		err = open_lower(m, parent, io, resume);
	m->buf = malloc(COMMIT_BUF);
	m->buf2 = malloc(COMMIT_BUF);
	if (!err && (!m->buf || !m->buf2))
		err = -ENOMEM;
	return err ? err : group_sum_open(&m->sum);
}

static int close_merge(struct merge *m)
{
	int err = vmdk_close(m->lower);

	chain_close(m->below);
	vmdk_close(m->upper);
	free(m->buf);
	free(m->buf2);
	group_sum_close(&m->sum);
	*m = (struct merge){ .plan = m->plan };
	return err;
}

/* C2: one run L holds, into P. */
static int copy_run(struct merge *m, enum vmdk_bs kind, uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)COMMIT_BUF);
		int err = kind == VMDK_BS_ZERO ? 0 : vmdk_pread(m->upper, m->buf, n, off);
		if (!err && kind != VMDK_BS_ZERO)
			group_sum_copied(&m->sum, m->buf, n);
		if (!err && (kind == VMDK_BS_ZERO || vd_is_zero(m->buf, n)))
			err = vmdk_pwrite_zeroes(m->lower, n, off);
		else if (!err)
			err = vmdk_pwrite(m->lower, m->buf, n, off);
		if (err)
			return err;
		group_plan_progress(m->plan, &m->done, n, m->total);
		vmdk_writeback(m->lower); /* the disk writes while the copy goes on */
		off += n;
		len -= n;
	}
	return 0;
}

static int differs(const struct merge *m, uint64_t off)
{
	vd_err("%s: reads differently from %s at offset %llu after the merge: stopped "
	       "before removing anything", vmdk_path(m->lower), vmdk_path(m->upper),
	       (unsigned long long)off);
	return -EIO;
}

/* C3: P read back over one run: zeros over a zeroed run, into the digest
 * over a data run. */
static int verify_run(struct merge *m, enum vmdk_bs kind, uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)COMMIT_BUF);
		int err = vmdk_pread(m->lower, m->buf2, n, off);
		if (err)
			return err;
		if (kind == VMDK_BS_ZERO && !vd_is_zero(m->buf2, n))
			return differs(m, off);
		if (kind != VMDK_BS_ZERO)
			group_sum_back(&m->sum, m->buf2, n);
		off += n;
		len -= n;
	}
	return 0;
}

/* C3 after the digests differ: where (L read again, only then). */
static int locate_run(struct merge *m, enum vmdk_bs kind, uint64_t off, uint64_t len)
{
	while (len && kind != VMDK_BS_ZERO) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)COMMIT_BUF);
		int err = vmdk_pread(m->upper, m->buf, n, off);
		if (!err)
			err = vmdk_pread(m->lower, m->buf2, n, off);
		if (err)
			return err;
		for (size_t i = 0; i < n; i++)
			if (m->buf[i] != m->buf2[i])
				return differs(m, off + i);
		off += n;
		len -= n;
	}
	return 0;
}

typedef int run_fn(struct merge *m, enum vmdk_bs kind, uint64_t off, uint64_t len);

/* Every run L holds, through fn (copy, verify or locate). */
static int each_run(struct merge *m, run_fn *fn)
{
	uint64_t cap = vmdk_capacity(m->upper), n;
	enum vmdk_bs kind;
	int err = 0;

	for (uint64_t off = 0; !err && off < cap; off += n) {
		err = vmdk_block_status(m->upper, off, cap - off, &kind, &n);
		if (err || kind == VMDK_BS_UNALLOC)
			continue;
		err = fn(m, kind, off, n);
	}
	return err;
}

/* C3 (check_fn of group_sum_check_flushing) */
static int verify(void *opaque)
{
	struct merge *m = opaque;
	int err = each_run(m, verify_run);

	if (err || group_sum_same(&m->sum))
		return err;
	err = each_run(m, locate_run);
	if (!err) { /* the bytes agree on a second read: not to be trusted either */
		vd_err("%s: read back unlike %s after the merge: stopped before removing "
		       "anything", vmdk_path(m->lower), vmdk_path(m->upper));
		err = -EIO;
	}
	return err;
}

/* C2 + C3 over the layers m has open (opened here when it has none: a
 * recovery); *cid gets P's CID afterwards, m is closed.  resume: P may be
 * marked unclean by the interrupted C2 (its writes keep data before
 * tables, so P is consistent; a leaked grain at most, which `check
 * --repair` reclaims). */
static int merge_into_parent(const struct commit_rec *r, const struct vd_io *io,
			     struct merge *m, bool resume, uint32_t *cid)
{
	int err = m->upper ? 0 : open_merge(m, r->in.target, r->parent, io, resume);

	m->total = m->plan ? m->plan->copy_bytes : 0; /* progress only */
	if (!err)
		err = each_run(m, copy_run);
	if (!err) /* the end of C2 beside C3 */
		err = group_sum_check_flushing(m->lower, verify, m);
	*cid = m->lower ? vmdk_cid(m->lower) : 0;
	if (close_merge(m) && !err)
		err = -EIO;
	return err;
}

/* C6 (from the first file not yet removed) + C7. */
static int remove_files(const struct commit_rec *r, const struct vd_io *io)
{
	int err = group_layer_remove_files(r->files, r->nr_files, io);

	return err ? err : group_intent_done(&r->in, io);
}

/* C2-C7; m: the layers opened before C1, or none (a recovery). */
static int commit_steps(const struct commit_rec *r, const struct vd_io *io,
			struct merge *m, bool resume)
{
	struct stat st;
	uint32_t cid;
	int err = 0;

	if (!lstat(r->in.target, &st)) {
		err = merge_into_parent(r, io, m, resume, &cid); /* C2, C3 */
		for (unsigned i = 0; !err && i < r->nr_children; i++) /* C4 */
			err = group_layer_repoint(r->children[i], r->parent, cid, io);
		if (!err) /* C5 */
			err = group_record_update(r->parent, r->in.target, r->children,
						  r->nr_children, 0, io);
		if (!err && r->unfreeze)
			err = chain_set_frozen(r->parent, false, CHAIN_OPEN_NOLOCK, io);
	}
	return err ? err : remove_files(r, io); /* C6, C7 */
}

static int commit_resume(struct group_intent *in, const struct vd_io *io)
{
	const struct commit_rec *r = (const struct commit_rec *)in;
	struct merge m = {0};

	if (!r->parent) {
		vd_err("%s: commit record without a parent: left as is", in->path);
		return -VD_EBADDATA;
	}
	return commit_steps(r, io, &m, true);
}

const struct group_op group_op_commit = {
	.name = "commit",
	.fields = commit_fields,
	.nr_fields = sizeof commit_fields / sizeof commit_fields[0],
	.size = sizeof(struct commit_rec),
	.resume = commit_resume,
};

/* ---- plan ------------------------------------------------------------------------- */

/* P's extents must be kinds vdelta writes in place: hosted sparse and flat,
 * vmfs flat, COWD and seSparse; a stream, ZERO or read-only extent is
 * refused. */
static bool writable_kind(const struct vmdk_extent_info *e)
{
	return e->access == VMDK_ACCESS_RW &&
	       (e->kind == VMDK_EXT_SPARSE || e->kind == VMDK_EXT_FLAT ||
		e->kind == VMDK_EXT_VMFS || e->kind == VMDK_EXT_COWD ||
		e->kind == VMDK_EXT_SESPARSE);
}

static int check_writable_kind(const char *path)
{
	struct vmdk_disk *d = NULL;
	struct vmdk_info vi;
	struct vmdk_extent_info e;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d);

	if (err)
		return err;
	vmdk_info_get(d, &vi);
	for (unsigned i = 0; !err && i < vi.nr_extents; i++) {
		err = vmdk_extent_info_get(d, i, &e);
		if (!err && !writable_kind(&e)) {
			vd_err("%s: extent %u is a %s%s extent: vdelta does not write "
			       "into it; commit refused, nothing changed", path, i + 1,
			       e.access == VMDK_ACCESS_RW ? "" : "read-only ",
			       vmdk_extent_kind_name(e.kind));
			err = -ENOTSUP;
		}
	}
	vmdk_close(d);
	return err;
}

/* The record of committing node l: children, files, whether P gets a top. */
static int commit_record(const struct group *g, int l, struct commit_rec **out)
{
	const struct group_tree *t = g->t;
	const struct group_tree_node *n = &t->nodes[l];
	struct group_intent *in;
	struct commit_rec *r;
	int err = group_intent_new(&group_op_commit, n->path, &in);

	if (err)
		return err;
	*out = r = (struct commit_rec *)in;
	r->unfreeze = n->nr_children == 0;
	if (!(r->parent = strdup(t->nodes[n->parent].path)))
		return -ENOMEM;
	for (int c = n->first_child; !err && c >= 0; c = t->nodes[c].next_sibling)
		err = group_intent_add(&r->children, &r->nr_children, t->nodes[c].path);
	return err ? err : group_layer_add_files(&r->files, &r->nr_files, n->path);
}

static int commit_check(const struct group *g, const char *layer, int *l)
{
	int p = group_merge_node(g, layer, "commit", l);

	if (p < 0)
		return p;
	if (group_unknown(g, *l))
		return group_refuse_busy(g, *l, "commit (it is removed)");
	if (group_busy(g, p))
		return group_refuse_busy(g, p, "commit into it");
	return check_writable_kind(g->t->nodes[p].path);
}

/* counted: the bytes L holds, when the caller has them (consolidate). */
static int commit_plan(const struct group *g, int l, const struct commit_rec *r,
		       const uint64_t *counted, struct group_plan *plan)
{
	uint64_t bytes = counted ? *counted : 0;
	int err = counted ? 0 : group_layer_held_bytes(r->in.target, &bytes);

	if (!err)
		err = group_plan_add(plan, GROUP_STEP_WRITE, r->parent, bytes);
	for (unsigned i = 0; !err && i < r->nr_children; i++)
		err = group_plan_add(plan, GROUP_STEP_REPOINT, r->children[i], 0);
	if (!err && r->unfreeze)
		err = group_plan_add(plan, GROUP_STEP_UNFREEZE, r->parent, 0);
	if (!err)
		err = group_plan_add(plan, GROUP_STEP_REMOVE, r->in.target,
				     g->t->nodes[l].file_bytes);
	plan->copy_bytes = plan->space_needed = bytes;
	plan->result = r->unfreeze ? strdup(r->parent) : NULL; /* P is the top now */
	return err ? err : group_plan_space(plan, r->parent);
}

/* Lock, open the layers C2 writes and reads (a refusal here leaves no
 * record), C1, then the steps. */
static int commit_run(const struct commit_rec *r, const struct vd_io *io,
		      struct group_plan *plan)
{
	struct group_locks locks = {0};
	struct merge m = { .plan = plan };
	int err = group_intent_lock(&r->in, &locks);

	if (!err)
		err = open_merge(&m, r->in.target, r->parent, io, false);
	if (!err)
		err = group_intent_write(&r->in, io); /* C1 */
	if (!err)
		err = commit_steps(r, io, &m, false);
	close_merge(&m); /* after a failure before C2 */
	group_locks_release(&locks);
	return err;
}

int group_commit_counted(struct group *g, const char *layer, unsigned flags,
			 const struct vd_io *io, struct group_plan *plan,
			 const uint64_t *counted)
{
	struct commit_rec *r = NULL;
	int l, err = commit_check(g, layer, &l);

	io = io ? io : vd_io_posix();
	plan->op = "commit";
	if (!err)
		err = commit_record(g, l, &r);
	if (!err)
		err = commit_plan(g, l, r, counted, plan);
	if (!err && !(flags & GROUP_DRY_RUN))
		err = commit_run(r, io, plan);
	group_intent_free(r ? &r->in : NULL);
	return err;
}

int group_commit(struct group *g, const char *layer, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan)
{
	return group_commit_counted(g, layer, flags, io, plan, NULL);
}
