/* chain — `check --repair`: put one layer's file back in order (layer 2).
 *
 * Owns: deciding what a layer needs (from vmdk_check), clearing a stale
 * uncleanShutdown flag with its redundant tables brought in line (the
 * format layer does that when the layer is opened for writing with the
 * dirty override), and compaction: a fresh copy of the layer without
 * leaked grains and with new tables, same CID, parent link and DDB keys,
 * swapped in by rename.  Compaction moves data, so a frozen or shared
 * layer is refused; clearing the flag changes only metadata outside the
 * data and is done on any layer no one is writing.
 *
 * Write order of a compaction (recovery removes the temporary):
 *  K1. the intent record (layer, temporary name) is written;
 *  K2. the copy is made under a hidden temporary name beside the layer:
 *      every run the layer holds (data, zeroed grains) in order, then the
 *      descriptor (CID, parent, DDB keys of the layer), closed (fsynced);
 *  K3. the copy is compared with the layer: same kind (held / not held)
 *      and same bytes over the whole capacity;
 *  K4. the copy is renamed over the layer and the folder fsynced;
 *  K5. the intent record is removed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "chain_group_int.h"

#define REPAIR_BUF (4u << 20)

static int repair_create(struct vmdk_disk *src, const char *tmp, const struct vd_io *io)
{
	const char *hw = vmdk_desc_get(src, "ddb.virtualHWVersion");
	uint64_t grain = vmdk_grain_size(src);
	struct vmdk_extent_info e;
	struct vmdk_create_opts o = {
		.capacity = vmdk_capacity(src),
		.subformat = VMDK_MONOLITHIC_SPARSE,
		.adapter = vmdk_desc_get(src, "ddb.adapterType"),
		.hwversion = hw ? atoi(hw) : 0,
		.grain_size = grain,
		.parent_cid = vmdk_parent_cid(src),
		.parent_hint = vmdk_parent_hint(src),
	};
	int err = vmdk_extent_info_get(src, 0, &e);

	o.zeroed_grain = !err && (e.flags & 0x4u); /* zeroed-grain GTEs */
	if (o.hwversion < 0 || o.hwversion > 99)
		o.hwversion = 0;
	return err ? err : vmdk_create(tmp, &o, io);
}

/* K2: the runs, then the layer's descriptor keys and CID. */
static int repair_copy(struct vmdk_disk *src, struct vmdk_disk *dst, uint8_t *buf)
{
	uint64_t cap = vmdk_capacity(src), n;
	enum vmdk_bs kind;
	const char *key, *val;
	char cid[9];
	int err = 0;

	for (uint64_t off = 0; !err && off < cap; off += n) {
		err = vmdk_block_status(src, off, VD_MIN(cap - off, (uint64_t)REPAIR_BUF),
					&kind, &n);
		if (!err && kind == VMDK_BS_ZERO)
			err = vmdk_pwrite_zeroes(dst, n, off);
		else if (!err && kind == VMDK_BS_DATA && !(err = vmdk_pread(src, buf, n, off)))
			err = vmdk_pwrite(dst, buf, n, off);
	}
	for (unsigned i = 0; !err && !vmdk_desc_entry(src, i, &key, &val); i++)
		if (!strncmp(key, "ddb.", 4))
			err = vmdk_desc_set(dst, key, val);
	snprintf(cid, sizeof cid, "%08x", vmdk_cid(src));
	if (!err)
		err = vmdk_desc_set(dst, "CID", cid);
	return err ? err : vmdk_desc_write(dst);
}

/* K3: over every run of src, dst holds the same kind and bytes. */
static int repair_verify(struct vmdk_disk *src, struct vmdk_disk *dst, uint8_t *buf)
{
	uint64_t cap = vmdk_capacity(src), n, m;
	enum vmdk_bs ks, kd;
	uint8_t *b2 = buf + REPAIR_BUF;
	int err = vmdk_cid(src) == vmdk_cid(dst) ? 0 : -EIO;

	for (uint64_t off = 0; !err && off < cap; off += n) {
		err = vmdk_block_status(src, off, VD_MIN(cap - off, (uint64_t)REPAIR_BUF),
					&ks, &n);
		if (!err)
			err = vmdk_block_status(dst, off, n, &kd, &m);
		if (!err && m < n)
			n = m;
		if (!err && (ks == VMDK_BS_UNALLOC) != (kd == VMDK_BS_UNALLOC))
			err = -EIO;
		if (!err && ks != VMDK_BS_UNALLOC && !(err = vmdk_pread(src, buf, n, off)) &&
		    !(err = vmdk_pread(dst, b2, n, off)) && memcmp(buf, b2, n))
			err = -EIO;
	}
	if (err == -EIO)
		vd_err("%s: the compacted copy %s does not read like it: left as it was",
		       vmdk_path(src), vmdk_path(dst));
	return err;
}

static int compact_copy(struct vmdk_disk *src, const char *tmp, const struct vd_io *io)
{
	struct vmdk_disk *dst = NULL;
	uint8_t *buf = malloc(2 * (size_t)REPAIR_BUF);
	int err = buf ? repair_create(src, tmp, io) : -ENOMEM;

	if (!err)
		err = vmdk_open(tmp, VMDK_OPEN_RDWR, io, &dst);
	if (!err)
		err = repair_copy(src, dst, buf);
	if (dst && vmdk_close(dst) && !err)
		err = -EIO;
	dst = NULL;
	if (!err)
		err = vmdk_open(tmp, VMDK_OPEN_RDONLY, io, &dst);
	if (!err)
		err = repair_verify(src, dst, buf); /* K3 */
	vmdk_close(dst);
	free(buf);
	return err;
}

/* K1-K5 for the layer open (read-only, locked) as src. */
static int compact(struct vmdk_disk *src, const char *path, const struct vd_io *io)
{
	struct group_intent in = {0};
	char *dir = vd_dirname(path), *name = NULL;
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	int err = -ENOMEM;

	in.op = strdup("repair");
	in.target = strdup(path);
	if (dir && asprintf(&name, ".%s.vdelta-repair.vmdk", base) >= 0)
		in.tmp = vd_path_join(dir, name);
	if (asprintf(&in.path, "%s%s", path, CHAIN_INTENT_SUFFIX) < 0)
		in.path = NULL;
	if (in.op && in.target && in.tmp && in.path)
		err = intent_write(&in, io); /* K1 */
	if (!err) {
		group_unlink(in.tmp, io);
		err = compact_copy(src, in.tmp, io); /* K2, K3 */
	}
	if (!err)
		err = io->rename(io, in.tmp, path); /* K4 */
	if (!err)
		err = io->sync_dir(io, path);
	if (err && in.path && !group_unlink(in.tmp, io)) /* roll back */
		intent_done(&in, io);
	else if (!err)
		err = intent_done(&in, io); /* K5 */
	intent_free(&in);
	free(name);
	free(dir);
	return err;
}

/* The flag goes (and the redundant tables catch up) when the layer is
 * opened for writing with the dirty override; no data is written. */
static int clear_unclean(const char *path, const struct vd_io *io)
{
	struct vmdk_disk *d = NULL;
	int err = vmdk_open(path, VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK, io, &d);

	if (d && vmdk_close(d) && !err)
		err = -EIO;
	return err;
}

static int repair_refuse(const struct chain_group *g, int node, const char *path)
{
	if (node >= 0 && chain_group_shared(g, node))
		return group_refuse_shared(g, node, "compaction (it moves data)");
	vd_err("%s: frozen (a snapshot): compaction moves data and is refused; the "
	       "leaked space stays until its children are committed", path);
	return -EBUSY;
}

static int repair_layer(const struct chain_group *g, const char *path,
			const struct vmdk_check_result *r, const struct vd_io *io,
			struct chain_plan *plan, bool dry_run)
{
	struct vmdk_disk *src = NULL;
	int node = chain_group_node(g, path), err;
	const char *type;

	if (!r->leaked && !r->errors && !r->warnings)
		return 0;
	if (!r->leaked && !r->errors) {
		err = plan_add(plan, CHAIN_STEP_CLEAN, path, 0);
		return err || dry_run ? err : clear_unclean(path, io);
	}
	err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &src);
	if (!err) /* nobody writes it meanwhile */
		err = vmdk_lock(src, VMDK_PERM_READ, VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	type = src ? vmdk_desc_get(src, "createType") : NULL;
	if (!err && (chain_is_frozen(src) || (node >= 0 && chain_group_shared(g, node))))
		err = repair_refuse(g, node, path);
	else if (!err && (!type || strcmp(type, "monolithicSparse"))) {
		vd_err("%s: createType %s: compaction handles monolithicSparse only",
		       path, type ? type : "(none)");
		err = -ENOTSUP;
	}
	if (!err)
		err = plan_add(plan, CHAIN_STEP_COMPACT, path, r->allocated);
	plan->copy_bytes = plan->space_needed = r->allocated;
	if (!err)
		err = plan_space(plan, path);
	if (!err && !dry_run)
		err = compact(src, path, io);
	vmdk_close(src);
	return err;
}

int chain_repair(const char *path, unsigned flags, const struct vd_io *io,
		 struct chain_plan *plan)
{
	struct vmdk_check_result r = {0};
	struct chain_group *g = NULL;
	struct vmdk_disk *d = NULL;
	int err;

	io = io ? io : vd_io_posix();
	plan->op = "repair";
	err = chain_group_load(path, NULL, 0, io, &g); /* finishes interrupted work */
	if (!err)
		err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &d);
	if (!err)
		err = vmdk_check(d, NULL, NULL, &r);
	vmdk_close(d);
	if (!err)
		err = repair_layer(g, path, &r, io, plan, flags & CHAIN_GROUP_DRY_RUN);
	chain_group_free(g);
	return err;
}
