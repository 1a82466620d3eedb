/* group — clones that copy data (layer 3).
 *
 * Owns: `clone --from-current` (copy the child-most delta only, sharing
 * every layer below) and `clone --full` (one independent disk with the
 * chain's content).  Both read the source with its locks held (no writer
 * can change it meanwhile), copy only what is allocated, and leave every
 * source file untouched — except that the parent of a --from-current
 * source gets the frozen mark if it lacked it (it has children).
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
		return 0;
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
 * UNALLOC means "the parent's") land in dst, a delta over the same parent. */
static int copy_top(struct chain *src, struct chain *dst)
{
	uint8_t *buf = malloc(COPY_BUF);
	struct chain_run r;
	int err = buf ? 0 : -ENOMEM;

	for (uint64_t off = 0; !err && off < chain_capacity(src); off += r.len) {
		err = chain_status(src, off, chain_capacity(src) - off, &r);
		if (err)
			break;
		if (r.kind == CHAIN_DATA)
			err = copy_data(src, dst, NULL, buf, off, r.len, false);
		else if (r.kind == CHAIN_ZERO)
			err = chain_pwrite_zeroes(dst, r.len, off);
	}
	free(buf);
	return err ? err : chain_flush(dst);
}

int group_clone_from_current(const char *disk, const char *new_path,
			     const struct vd_io *io)
{
	struct chain *c, *src = NULL, *dst = NULL;
	char *parent;
	int err = refuse_existing(new_path);

	if (err || (err = chain_open(disk, CHAIN_OPEN_RDONLY, io, &c)))
		return err;
	if (chain_depth(c) < 2) {
		vd_err("%s: has no parent, nothing to share: use clone --full", disk);
		chain_close(c);
		return -EINVAL;
	}
	parent = strdup(vmdk_path(chain_layer(c, 1)));
	chain_close(c);
	if (!parent)
		return -ENOMEM;
	err = group_create_child(parent, new_path, false, NULL, io);
	if (!err)
		err = chain_open(disk, CHAIN_OPEN_NO_PARENT, io, &src);
	if (!err)
		err = chain_open(new_path, CHAIN_OPEN_RDWR, io, &dst);
	if (!err)
		err = copy_top(src, dst);
	chain_close(src);
	if (chain_close(dst) && !err)
		err = -EIO;
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

int group_clone_full(const char *disk, const char *new_path, enum vmdk_subformat sf,
		     bool preallocate, const struct vd_io *io)
{
	struct chain *src;
	struct vmdk_disk *dst = NULL;
	struct vmdk_create_opts o = { .subformat = sf, .preallocate = preallocate };
	int err = refuse_existing(new_path);

	if (err || (err = chain_open(disk, CHAIN_OPEN_RDONLY, io, &src)))
		return err;
	o.capacity = chain_capacity(src);
	o.adapter = chain_adapter(src);
	err = vmdk_create(new_path, &o, io);
	if (!err)
		err = vmdk_open(new_path, VMDK_OPEN_RDWR, io, &dst);
	if (!err)
		err = vmdk_lock(dst, VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE,
				VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (!err)
		err = copy_all(src, dst);
	if (vmdk_close(dst) && !err)
		err = -EIO;
	chain_close(src);
	return err;
}
