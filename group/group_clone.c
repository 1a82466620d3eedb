/* group — clones that copy data (layer 3).
 *
 * Owns: `clone --from-current` (copy the child-most delta only, sharing
 * every layer below) and `clone --full` (one independent disk with the
 * chain's content).  Both read the source with its locks held (no writer
 * can change it meanwhile), copy only what is allocated, and leave every
 * source file untouched — except that the parent of a --from-current
 * source gets the frozen mark if it lacked it (it has children).
 *
 * Write order of clone --from-current (a new layer appears whole or not
 * at all; recovery = group_stage_resume):
 *  F1. the parent is frozen (it has children already: the source);
 *  F2. the record (new layer, staging folder .NEW.vdelta-clone, the parent
 *      whose record gains it) is written;
 *  F3. the new delta is made in the staging folder under its own name,
 *      its hint written for where it will live, the source top's runs
 *      copied into it (its parent's chain backing partial grains), closed
 *      (fsynced) and compared with the source top;
 *  F4. publish (group_stage.c P1-P6): publish=1, the parent's record names
 *      the new layer (P1b), extents then the descriptor renamed in.
 * Before F4 recovery discards the staging folder; from F4 on it finishes.
 * clone --full keeps the same order without F1 and P1b: the new disk is
 * made whole in its staging folder, then published.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "group_int.h"

#define COPY_BUF (1u << 20)

static int refuse_existing(const char *path)
{
	struct stat st;

	if (lstat(path, &st))
		return group_layer_check_name(path);
	vd_err("%s: already exists", path);
	return -EEXIST;
}

/* Copy [off, off+len) of src into dst (a chain, or else the single disk
 * dst_disk), skipping buffers of zeros when dst reads zeros there
 * (skip_zero). */
static int copy_data(struct chain *src, struct chain *dst, struct vmdk_disk *dst_disk,
		     uint8_t *buf, uint64_t off, uint64_t len, bool skip_zero)
{
	while (len) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)COPY_BUF);
		int err = chain_pread(src, buf, n, off);
		if (!err && !(skip_zero && vd_is_zero(buf, n)))
			err = dst ? chain_pwrite(dst, buf, n, off)
				  : vmdk_pwrite(dst_disk, buf, n, off);
		if (err)
			return err;
		off += n;
		len -= n;
	}
	return 0;
}

/* --from-current: the top's own runs (src opened without parents, so
 * UNALLOC means "the parent's") land in dst, a delta over the same parent
 * (its backing). */
static int copy_top_into(struct chain *src, struct vmdk_disk *dst)
{
	uint8_t *buf = malloc(COPY_BUF);
	struct chain_run r;
	int err = buf ? 0 : -ENOMEM;

	for (uint64_t off = 0; !err && off < chain_capacity(src); off += r.len) {
		err = chain_status(src, off, chain_capacity(src) - off, &r);
		if (err)
			break;
		if (r.kind == CHAIN_DATA)
			err = copy_data(src, NULL, dst, buf, off, r.len, false);
		else if (r.kind == CHAIN_ZERO)
			err = vmdk_pwrite_zeroes(dst, r.len, off);
	}
	free(buf);
	return err ? err : vmdk_flush(dst);
}

const struct group_op group_op_clone = GROUP_STAGE_OP("clone");

struct from_current {
	struct chain *src;   /* the source top, alone */
	struct chain *below; /* its parent's chain (locked: read) */
	const char *parent, *final;
};

static int below_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	return chain_pread(opaque, buf, len, off);
}

/* F3 (group_stage_fill_fn): staged is the staging folder + NEW's name. */
static int fill_clone(void *opaque, const char *staged, const struct vd_io *io)
{
	struct from_current *f = opaque;
	struct vmdk_create_opts o = {0};
	struct vmdk_disk *d = NULL;
	char *hint = NULL;
	uint8_t *buf = NULL;
	int err = group_rewrite_like(chain_layer(f->src, 0), chain_layer(f->src, 0), false, &o);

	if (err == -ENOTSUP) /* a kind not rewritten: hosted sparse, as snapshot makes */
		o = (struct vmdk_create_opts){ .subformat = VMDK_MONOLITHIC_SPARSE,
					       .capacity = chain_capacity(f->src) };
	err = err == -ENOTSUP ? 0 : err;
	if (!err)
		err = chain_hint_make(f->final, f->parent, &hint);
	o.parent_hint = hint;
	o.parent_cid = vmdk_cid(chain_layer(f->below, 0));
	if (!err)
		err = vmdk_create(staged, &o, io);
	if (!err)
		err = vmdk_open(staged, VMDK_OPEN_RDWR, io, &d);
	if (!err) {
		vmdk_set_backing(d, below_read, f->below);
		err = copy_top_into(f->src, d);
	}
	if (d && vmdk_close(d) && !err)
		err = -EIO;
	d = NULL;
	if (!err && !(err = vmdk_open(staged, VMDK_OPEN_RDONLY, io, &d)) &&
	    (buf = malloc(2 * (size_t)GROUP_REWRITE_BUF)))
		err = group_rewrite_compare(f->src, d, GROUP_CMP_CONTENT, NULL, buf,
					    buf + GROUP_REWRITE_BUF);
	else if (!err)
		err = -ENOMEM;
	if (err == -EIO)
		vd_err("%s: the new delta does not read like %s: nothing published", staged,
		       vmdk_path(chain_layer(f->src, 0)));
	vmdk_close(d);
	free(buf);
	free(hint);
	return err;
}

/* The parent of disk's top (the layer the new delta shares). */
static int top_parent(const char *disk, const struct vd_io *io, char **parent)
{
	struct chain *c;
	int err = chain_open(disk, CHAIN_OPEN_RDONLY, io, &c);

	if (err)
		return err;
	if (chain_depth(c) < 2) {
		vd_err("%s: has no parent, nothing to share: use clone --full", disk);
		err = -EINVAL;
	} else if (!(*parent = strdup(vmdk_path(chain_layer(c, 1)))))
		err = -ENOMEM;
	chain_close(c);
	return err;
}

int group_clone_from_current(const char *disk, const char *new_path,
			     const struct vd_io *io)
{
	struct from_current f = { .final = new_path };
	struct group_stage_rec *r = NULL;
	char *parent = NULL;
	int err = refuse_existing(new_path);

	io = io ? io : vd_io_posix();
	if (!err)
		err = top_parent(disk, io, &parent);
	f.parent = parent;
	if (!err)
		err = chain_open(disk, CHAIN_OPEN_NO_PARENT | CHAIN_OPEN_RDONLY, io, &f.src);
	if (!err)
		err = chain_open(parent, CHAIN_OPEN_RDONLY, io, &f.below);
	if (!err) /* F1 */
		err = chain_set_frozen(parent, true, CHAIN_OPEN_NOLOCK, io);
	if (!err)
		err = group_stage_new(&group_op_clone, new_path, &r);
	if (!err && !(r->record_in = strdup(parent)))
		err = -ENOMEM;
	if (!err) /* F2-F4 */
		err = group_stage_run(r, fill_clone, &f, io);
	group_intent_free(r ? &r->in : NULL);
	chain_close(f.below);
	chain_close(f.src);
	free(parent);
	return err;
}

static int copy_all(struct chain *src, struct vmdk_disk *dst)
{
	uint8_t *buf = malloc(COPY_BUF);
	struct chain_run r;
	int err = buf ? 0 : -ENOMEM;

	for (uint64_t off = 0; !err && off < chain_capacity(src); off += r.len) {
		err = chain_status(src, off, chain_capacity(src) - off, &r);
		if (!err && r.kind == CHAIN_DATA)
			err = copy_data(src, NULL, dst, buf, off, r.len, true);
	}
	free(buf);
	return err;
}

/* The adapter type of the chain: the top's, else the nearest layer's. */
static const char *chain_adapter(struct chain *c)
{
	for (unsigned i = 0; i < chain_depth(c); i++) {
		const char *a = vmdk_desc_get(chain_layer(c, i), "ddb.adapterType");
		if (a)
			return a;
	}
	return NULL;
}

struct full {
	struct chain *src;
	struct vmdk_create_opts o;
};

/* F3 of a full clone: the whole chain's content into a new independent
 * disk at staged. */
static int fill_full(void *opaque, const char *staged, const struct vd_io *io)
{
	struct full *f = opaque;
	struct vmdk_disk *dst = NULL;
	int err = vmdk_create(staged, &f->o, io);

	if (!err)
		err = vmdk_open(staged, VMDK_OPEN_RDWR, io, &dst);
	if (!err)
		err = vmdk_lock(dst, VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE,
				VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (!err)
		err = copy_all(f->src, dst);
	if (vmdk_close(dst) && !err)
		err = -EIO;
	return err;
}

int group_clone_full(const char *disk, const char *new_path, enum vmdk_subformat sf,
		     bool preallocate, const struct vd_io *io)
{
	struct full f = { .o = { .subformat = sf, .preallocate = preallocate } };
	struct group_stage_rec *r = NULL;
	int err = refuse_existing(new_path);

	io = io ? io : vd_io_posix();
	if (err || (err = chain_open(disk, CHAIN_OPEN_RDONLY, io, &f.src)))
		return err;
	f.o.capacity = chain_capacity(f.src);
	f.o.adapter = chain_adapter(f.src);
	err = group_stage_new(&group_op_clone, new_path, &r);
	if (!err) /* made whole in a staging folder, published at once (F2-F4) */
		err = group_stage_run(r, fill_full, &f, io);
	group_intent_free(r ? &r->in : NULL);
	chain_close(f.src);
	return err;
}
