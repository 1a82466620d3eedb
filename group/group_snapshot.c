/* group — snapshots and blank children (layer 3).
 *
 * Owns: `snapshot` (freeze the top, add name-00000N.vmdk beside it) and
 * `create --parent` / `clone --linked` (a blank delta over a layer).  The
 * frozen mark itself is the chain layer's (chain_set_frozen).
 *
 * Order, so that a crash never leaves a child over a writable parent:
 * 1. the parent's chain is validated (opened read-only, locks taken, fewer
 *    than CHAIN_MAX_DEPTH layers): a refusal here writes nothing;
 * 2. the parent is frozen (descriptor rewritten durably; CID unchanged);
 * 3. the parent's sidecar record (group_record.c) names the child to be:
 *    a record of a child never made only makes the parent count as shared;
 * 4. the child is created (vmdk_create writes it durably, then its name
 *    appears).  A crash between 2 and 4 leaves a frozen layer without a
 *    child: still readable, and `snapshot` again gives it one.
 *
 * The kind of the new delta (delta_kind) is what the parent's product
 * would make there (vmdk-format.md §1.4, §4.4, §5.3):
 *  - over an ESXi delta, the same kind (vSphere does not mix vmfsSparse
 *    and seSparse in a chain);
 *  - over a vmfs base: seSparse from 2 TiB (vmfsSparse counts sectors in
 *    32 bits), vmfsSparse below (what VMFS5 makes; VMFS6 makes seSparse
 *    for every size, ask for it with -t seSparse);
 *  - over anything else, hosted sparse (twoGbMaxExtentSparse over a split
 *    parent, else monolithicSparse).
 * An explicit kind overrides this; mixing the two ESXi delta kinds is
 * allowed with a warning (vdelta reads such chains; ESXi may not).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

#define SNAPSHOT_MAX 999999u /* name-NNNNNN.vmdk */

/* What a child needs to know of its parent. */
struct parent_info {
	uint64_t capacity;
	uint32_t cid;
	uint64_t grain_size;
	bool split;       /* twoGbMaxExtentSparse family */
	enum vmdk_subformat esx; /* vmfs, vmfsSparse, seSparse; COUNT: hosted */
	char adapter[32];
	int hwversion;
};

/* The ESXi family of a createType (vmdk-format.md §1.4); COUNT if hosted. */
static enum vmdk_subformat esx_kind(const char *type)
{
	static const char *const base[] = {"vmfs", "vmfsPreallocated",
					   "vmfsEagerZeroedThick"};

	if (!type)
		return VMDK_SUBFORMAT_COUNT;
	for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
		if (!strcmp(type, base[i]))
			return VMDK_VMFS;
	if (!strcmp(type, "vmfsSparse") || !strcmp(type, "vmfsThin"))
		return VMDK_VMFS_SPARSE;
	return !strcmp(type, "seSparse") ? VMDK_SESPARSE : VMDK_SUBFORMAT_COUNT;
}

/* The kind of a new delta over pi (rule at the top of this file). */
static enum vmdk_subformat delta_kind(const struct parent_info *pi, enum vmdk_subformat want)
{
	enum vmdk_subformat kind =
	    pi->esx == VMDK_VMFS_SPARSE || pi->esx == VMDK_SESPARSE ? pi->esx
	    : pi->esx == VMDK_VMFS ? (pi->capacity >= (2ull << 40) ? VMDK_SESPARSE
								   : VMDK_VMFS_SPARSE)
	    : pi->split ? VMDK_TWOGB_SPARSE
			: VMDK_MONOLITHIC_SPARSE;

	if (want == GROUP_DELTA_AUTO)
		return kind;
	if ((want == VMDK_VMFS_SPARSE || want == VMDK_SESPARSE) &&
	    (pi->esx == VMDK_VMFS_SPARSE || pi->esx == VMDK_SESPARSE) && want != pi->esx)
		vd_warn("a %s delta over a %s layer: ESXi does not mix the two kinds in "
			"one chain", vmdk_subformat_name(want), vmdk_subformat_name(pi->esx));
	return want;
}

static void describe(struct vmdk_disk *d, struct parent_info *pi)
{
	const char *type = vmdk_desc_get(d, "createType");
	const char *adapter = vmdk_desc_get(d, "ddb.adapterType");
	const char *hw = vmdk_desc_get(d, "ddb.virtualHWVersion");

	pi->capacity = vmdk_capacity(d);
	pi->cid = vmdk_cid(d);
	pi->grain_size = vmdk_grain_size(d);
	pi->split = type && !strcmp(type, "twoGbMaxExtentSparse");
	pi->esx = esx_kind(type);
	snprintf(pi->adapter, sizeof pi->adapter, "%s", adapter ? adapter : "");
	pi->hwversion = hw ? atoi(hw) : 0;
	if (pi->hwversion < 0 || pi->hwversion > 99)
		pi->hwversion = 0;
}

/* Open the chain below and including `path` read-only: every link valid,
 * and room for one more layer (a child deeper than CHAIN_MAX_DEPTH could
 * never be opened). */
static int validate(const char *path, unsigned flags, const struct vd_io *io)
{
	struct chain *c;
	int err = chain_open(path, CHAIN_OPEN_RDONLY | (flags & CHAIN_OPEN_DIRTY_OK), io, &c);

	if (err)
		return err;
	if (chain_depth(c) >= CHAIN_MAX_DEPTH) {
		vd_err("%s: its chain already has %u layers, the most vdelta opens: a "
		       "child would be layer %u; nothing created (clone --full makes "
		       "a one-layer copy)", path, chain_depth(c), chain_depth(c) + 1);
		err = -ELOOP;
	}
	return chain_close(c) ? -EIO : err;
}

static int create_delta(const char *new_path, const char *parent,
			const struct parent_info *pi, enum vmdk_subformat want,
			const struct vd_io *io)
{
	enum vmdk_subformat kind = delta_kind(pi, want);
	bool hosted = kind != VMDK_VMFS_SPARSE && kind != VMDK_SESPARSE;
	struct vmdk_create_opts o = {
		.capacity = pi->capacity,
		.subformat = kind,
		.adapter = pi->adapter[0] ? pi->adapter : NULL,
		.hwversion = pi->hwversion,
		.grain_size = hosted && pi->grain_size >= 4096 && vd_is_pow2(pi->grain_size)
				      ? pi->grain_size : 0,
		.parent_cid = pi->cid,
	};
	char *hint;
	int err = chain_hint_make(new_path, parent, &hint);

	if (err)
		return err;
	o.parent_hint = hint;
	err = vmdk_create(new_path, &o, io);
	free(hint);
	return err;
}

static int describe_path(const char *path, const struct vd_io *io, struct parent_info *pi)
{
	struct vmdk_disk *d;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, io, &d);

	if (!err)
		describe(d, pi);
	vmdk_close(d);
	return err;
}

/* Can the mark be written?  Not into files we may not write: such a
 * layer stays as it is anyway. */
static bool markable(struct vmdk_disk *d)
{
	for (unsigned i = 0; i < vmdk_nr_files(d); i++)
		if (access(vmdk_file_path(d, i), W_OK))
			return false;
	return true;
}

/* Freeze `parent` (unless it must be frozen already) and put a blank delta
 * at new_path over it; the mark is undone if we set it and creation fails. */
static int child_over(const char *parent, const char *new_path, bool require_frozen,
		      const struct group_child_opts *o, const struct vd_io *io)
{
	struct parent_info pi;
	bool was_frozen, can_mark, marked;
	struct vmdk_disk *d;
	int err = group_layer_check_name(new_path); /* 1: before anything is written */

	if (err || (err = vmdk_open(parent, VMDK_OPEN_RDONLY, io, &d)))
		return err;
	was_frozen = chain_is_frozen(d);
	can_mark = markable(d);
	describe(d, &pi);
	vmdk_close(d);
	if (require_frozen && !was_frozen && can_mark) {
		vd_err("%s: not a snapshot (it is a writable top, not frozen): snapshot "
		       "it first (vdelta snapshot %s) and clone the frozen layer",
		       parent, parent);
		return -EPERM;
	}
	if (!can_mark && !was_frozen)
		vd_warn("%s: read-only (kind or permissions): not marked frozen; vdelta "
			"never writes it", parent);
	if (can_mark) /* 2 */
		err = chain_set_frozen(parent, true, o->flags & CHAIN_OPEN_DIRTY_OK, io);
	marked = !err && can_mark && !was_frozen;
	if (!err && can_mark) /* as it is now that no one may write it */
		err = describe_path(parent, io, &pi);
	if (!err && can_mark)
		/* a writable top had no child: its record is the whole list */
		err = group_record_child(parent, new_path,
					 was_frozen ? 0 : GROUP_RECORD_COMPLETE, io); /* 3 */
	if (!err)
		err = create_delta(new_path, parent, &pi, o->kind, io); /* 4 */
	if (err && access(new_path, F_OK)) /* never made */
		group_record_drop(parent, new_path, io);
	if (err && marked)
		chain_set_frozen(parent, false, o->flags & CHAIN_OPEN_DIRTY_OK, io);
	return err;
}

static const struct group_child_opts default_opts = { .kind = GROUP_DELTA_AUTO };

int group_create_child(const char *parent, const char *new_path, bool require_frozen,
		       const struct group_child_opts *o, const struct vd_io *io)
{
	struct stat st;
	int err;

	o = o ? o : &default_opts;
	if (!lstat(new_path, &st)) {
		vd_err("%s: already exists", new_path);
		return -EEXIST;
	}
	err = validate(parent, o->flags, io);
	return err ? err : child_over(parent, new_path, require_frozen, o, io);
}

/* dir/stem-NNNNNN.vmdk for the first NNNNNN whose name is free; the stem
 * loses a -NNNNNN suffix it already has (disk-000001 -> disk-000002). */
static int snapshot_name(const char *top, unsigned n, char **out)
{
	char *dir = vd_dirname(top), *stem, *file = NULL;
	const char *base = strrchr(top, '/') ? strrchr(top, '/') + 1 : top;
	size_t len = strlen(base);
	int r;

	if (!dir)
		return -ENOMEM;
	if (len > 5 && !strcasecmp(base + len - 5, ".vmdk"))
		len -= 5;
	if (len > 7 && base[len - 7] == '-' &&
	    strspn(base + len - 6, "0123456789") >= 6)
		len -= 7;
	stem = strndup(base, len);
	r = stem ? asprintf(&file, "%s-%06u.vmdk", stem, n) : -1;
	*out = r < 0 ? NULL : vd_path_join(dir, file);
	r = *out ? 0 : -1;
	free(file);
	free(stem);
	free(dir);
	return r < 0 ? -ENOMEM : 0;
}

int group_snapshot(const char *disk, const struct group_child_opts *o,
		   const struct vd_io *io, char **new_top)
{
	struct stat st;
	char *name = NULL;
	int err;

	o = o ? o : &default_opts;
	err = validate(disk, o->flags, io);
	for (unsigned n = 1; !err && n <= SNAPSHOT_MAX; n++) {
		err = snapshot_name(disk, n, &name);
		if (!err && lstat(name, &st)) {
			err = child_over(disk, name, false, o, io);
			if (err != -EEXIST)
				break; /* done, or failed */
			err = 0;   /* an extent name was taken: next number */
		}
		free(name);
		name = NULL;
	}
	if (!err && !name) {
		vd_err("%s: no free snapshot name up to -%06u", disk, SNAPSHOT_MAX);
		err = -EEXIST;
	}
	if (err) {
		free(name);
		return err;
	}
	*new_top = name;
	return 0;
}
