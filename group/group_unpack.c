/* group — `unpack`: a bundle's layers rebuilt in a folder (layer 3).
 *
 * Owns: the plan of an unpack (where each layer of the bundle goes in DIR,
 * the files it will have, the create options that give it its kind, CID,
 * parent link and DDB keys), its steps and their recovery (the operation
 * kind `unpack`, a row of the table in group_recover.c).  Finding the
 * needs is group_unpack_need.c's; reading the stream, group_bundle.c's.
 *
 * Before the record (a refusal here writes nothing): DIR's interrupted
 * operations are recovered (the front door) and DIR's unpack lock taken
 * (an exclusive flock on the folder, held to the end: one unpack into a
 * folder at a time, and a recovery elsewhere refuses to act on this one's
 * record while it runs); the header and every layer header are read and
 * checked; every need is found by CID and digest and checked (frozen, or
 * one this unpack may freeze; its chain not too deep); every file each
 * layer will have (vmdk_create_names), its sidecar and its record must be
 * free names in DIR; the free space must hold the layers; the needs are
 * locked (a reader's lock, a writer's for one to freeze).  Then (NAME:
 * the first layer's name; recovery = unpack_resume):
 *  N1. the intent record DIR/NAME.vdelta-intent (staging folder, the new
 *      layers base first, every file they will have, the needs, the needs
 *      to freeze) is written durably; then the hidden staging folder
 *      DIR/.NAME.vdelta-unpack/ is made;
 *  N2. each need to freeze is frozen (a durable descriptor write, CID
 *      unchanged);
 *  N3. each layer, base first, is created in the staging folder under its
 *      own name (vmdk_create: its parent hint as read from DIR), its
 *      frames' runs written into it as they come, each frame's checksums
 *      and run table verified before any of its runs is written, then its
 *      DDB keys and CID set and it is closed (flushed, fsynced) once its
 *      runs add up to what its header said;
 *  N4. the trailer: frame count and the whole stream's checksum verified,
 *      nothing after it; the staging folder holds exactly the files the
 *      record names;
 *  N5. the record is rewritten with publish=1: from here recovery
 *      finishes the unpack instead of discarding it;
 *  N6. publish: every staged extent is renamed into DIR and the folder
 *      fsynced, then each descriptor, base first, each followed by a
 *      folder fsync: a descriptor appears only after its extents and its
 *      parent;
 *  N7. each new layer is recorded in its parent's sidecar record
 *      (group_record_child);
 *  N8. the staging folder is removed, then the record;
 *  N9. the digest of each frozen need whose files did not change since it
 *      was taken is recorded beside it (group_digest.c D1-D4; the next
 *      unpack over it does not read it again).
 * Recovery: publish=1 — redo N6-N8 from wherever they stopped (a rename
 * whose source is gone was done, a record written again is the same
 * record); otherwise — the needs N2 froze are thawed, the staging folder
 * removed, then the record: nothing is left under a final name.  An
 * unpack that fails before N5 rolls itself back the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

#define STAGE_SUFFIX ".vdelta-unpack"
#define META_SLACK (1u << 20) /* per layer: header, tables, descriptor */

/* The record (N1). */
struct unpack_rec {
	struct group_intent in; /* target: the first layer, in DIR */
	char *tmp;              /* the staging folder */
	bool publish;           /* N5 done: recovery finishes */
	char **layers;          /* the new layers, base first */
	unsigned nr_layers;
	char **needs;           /* the layers found that they hang from */
	unsigned nr_needs;
	char **thaw;            /* needs N2 freezes (thawed by a roll back) */
	unsigned nr_thaw;
	char **files;           /* every file the new layers have */
	unsigned nr_files;
};

struct unpack {
	const struct group_unpack_opts *o;
	const struct vd_io *io;
	char *dir;                   /* canonical */
	struct group_bundle_reader *r;
	struct group_bundle_info *b;
	bool *thaw_need;             /* per need: this unpack freezes it */
	struct group_digest *found;  /* per need: its digest as it was found */
	struct vmdk_create_opts *co; /* per layer */
	char **hints;                /* per layer: its parent hint */
	struct unpack_rec *rec;
	struct group_locks locks;
	int dir_fd;                  /* holds the folder's unpack lock */
	struct group_plan progress;  /* its progress callback only */
	uint64_t done;
	/* what lies below a layer being built */
	struct chain **need_chain;   /* per need, opened when first read */
	struct vmdk_disk **rd;       /* per layer: built, opened read-only */
	uint8_t *pbuf;               /* a parent run's bytes */
	/* the frame read last */
	bool have_frame;
	int ended;
	unsigned frame_layer, nr_runs;
	const struct group_bundle_run *runs;
};

static const struct group_field unpack_fields[] = {
	GROUP_FIELD_ONE(struct unpack_rec, tmp, "tmp", GROUP_FIELD_TEXT, GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct unpack_rec, publish, "publish", GROUP_FIELD_FLAG,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct unpack_rec, layers, nr_layers, "layer", GROUP_FIELD_LAYERS,
			 GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct unpack_rec, needs, nr_needs, "need", GROUP_FIELD_LAYERS,
			 GROUP_LOCK_READ),
	GROUP_FIELD_LIST(struct unpack_rec, thaw, nr_thaw, "thaw", GROUP_FIELD_LAYERS,
			 GROUP_LOCK_EXCL),
	GROUP_FIELD_LIST(struct unpack_rec, files, nr_files, "file", GROUP_FIELD_NEW_FILES,
			 GROUP_LOCK_EXCL),
};

static char *stage_name(const char *target)
{
	char *dir = vd_dirname(target), *name = NULL, *p = NULL;

	if (dir && asprintf(&name, ".%s%s", group_base_name(target), STAGE_SUFFIX) >= 0)
		p = vd_path_join(dir, name);
	free(name);
	free(dir);
	return p;
}

/* ---- recovery ---------------------------------------------------------------------------- */

/* The folder's unpack lock (flock, exclusive, held by *fd): one unpack
 * into a folder at a time, and no recovery of its record while it runs. */
static int lock_dir(const char *dir, int *fd)
{
	int err = 0;

	*fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*fd < 0 || flock(*fd, LOCK_EX | LOCK_NB))
		err = -errno;
	if (err == -EWOULDBLOCK)
		vd_err("%s: another unpack into this folder is running: left to it", dir);
	else if (err)
		vd_err("%s: cannot lock the folder: %s", dir, strerror(-err));
	if (err && *fd >= 0)
		close(*fd);
	*fd = err ? -1 : *fd;
	return err == -EWOULDBLOCK ? -EAGAIN : err;
}

/* Is name the descriptor of one of the record's layers? */
static bool is_descriptor(const struct unpack_rec *r, const char *name)
{
	for (unsigned i = 0; i < r->nr_layers; i++)
		if (!strcmp(group_base_name(r->layers[i]), name))
			return true;
	return false;
}

static bool is_listed(const struct unpack_rec *r, const char *name)
{
	for (unsigned i = 0; i < r->nr_files; i++)
		if (!strcmp(group_base_name(r->files[i]), name))
			return true;
	return false;
}

static int move_in(const struct unpack_rec *r, const char *name, const struct vd_io *io)
{
	char *from = vd_path_join(r->tmp, name), *dir = vd_dirname(r->in.target);
	char *to = dir ? vd_path_join(dir, name) : NULL;
	int err = from && to ? 0 : -ENOMEM;

	if (!err && !access(from, F_OK)) /* gone: moved before an interruption */
		err = io->rename(io, from, to);
	if (err && err != -ENOMEM)
		vd_err("%s: cannot publish as %s: %s", from, to, strerror(-err));
	free(from);
	free(to);
	free(dir);
	return err;
}

/* N6: extents, a folder fsync, then each descriptor base first. */
static int publish(const struct unpack_rec *r, const struct vd_io *io)
{
	char **names = NULL;
	unsigned nr = 0;
	int err = group_stage_list(r->tmp, &names, &nr);

	for (unsigned i = 0; !err && i < nr; i++)
		if (names[i][0] != '.' && is_listed(r, names[i]) && !is_descriptor(r, names[i]))
			err = move_in(r, names[i], io);
	if (!err)
		err = io->sync_dir(io, r->in.target);
	for (unsigned i = 0; !err && i < r->nr_layers; i++) {
		err = move_in(r, group_base_name(r->layers[i]), io);
		if (!err)
			err = io->sync_dir(io, r->layers[i]);
	}
	vd_strv_free(names, nr);
	return err;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Does this unpack know every child of parent: a layer it made, or a need
 * it froze (writable until now, so without children)? */
static bool knows_children(const struct unpack_rec *r, const char *parent)
{
	for (unsigned i = 0; i < r->nr_layers; i++)
		if (same_file(r->layers[i], parent))
			return true;
	for (unsigned i = 0; i < r->nr_thaw; i++)
		if (same_file(r->thaw[i], parent))
			return true;
	return false;
}

/* N7: each new layer in its parent's record, the parent as its hint says
 * (a record made now is complete when this unpack knows all its children). */
static int record_links(const struct unpack_rec *r, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = 0; !err && i < r->nr_layers; i++) {
		struct vmdk_disk *d = NULL;
		char *parent = NULL;
		err = vmdk_open(r->layers[i], VMDK_OPEN_RDONLY, io, &d);
		if (!err && vmdk_parent_hint(d))
			err = chain_hint_resolve(r->layers[i], vmdk_parent_hint(d),
						 vmdk_desc_get(d, "ddb.nativeParentHint"), &parent);
		vmdk_close(d);
		if (!err && parent)
			err = group_record_child(parent, r->layers[i],
						 knows_children(r, parent) ? GROUP_RECORD_COMPLETE : 0,
						 io);
		free(parent);
	}
	return err;
}

/* N6-N8 */
static int finish(const struct unpack_rec *r, const struct vd_io *io)
{
	int err = publish(r, io);

	if (!err)
		err = record_links(r, io);
	if (!err)
		err = group_stage_remove(r->tmp, io);
	return err ? err : group_intent_done(&r->in, io);
}

/* Before N5: thaw what N2 froze, remove the staging folder and the record. */
static int roll_back(const struct unpack_rec *r, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = 0; !err && i < r->nr_thaw; i++)
		err = chain_set_frozen(r->thaw[i], false, CHAIN_OPEN_NOLOCK | CHAIN_OPEN_DIRTY_OK,
				       io);
	if (!err)
		err = group_stage_remove(r->tmp, io);
	return err ? err : group_intent_done(&r->in, io);
}

static int unpack_resume(struct group_intent *in, const struct vd_io *io)
{
	const struct unpack_rec *r = (const struct unpack_rec *)in;
	char *dir = vd_dirname(in->target);
	int fd = -1, err = !dir ? -ENOMEM : r->tmp && r->nr_layers ? lock_dir(dir, &fd)
								      : -VD_EBADDATA;

	if (err == -VD_EBADDATA)
		vd_err("%s: unpack record without its staging folder or layers: left as is",
		       in->path);
	if (!err)
		err = r->publish ? finish(r, io) : roll_back(r, io);
	if (fd >= 0)
		close(fd);
	free(dir);
	return err;
}

/* T6: the staging folder is the one unpack makes for the first layer, the
 * layers are plain names in its folder, the first of them the target. */
static int unpack_check(const struct group_intent *in)
{
	const struct unpack_rec *r = (const struct unpack_rec *)in;
	char *want = stage_name(in->target), *dir = vd_dirname(in->target);
	int err = want && dir ? 0 : -ENOMEM;

	if (!err && (!r->tmp || strcmp(r->tmp, want) || !r->nr_layers ||
		     strcmp(r->layers[0], in->target)))
		err = -VD_EBADDATA;
	for (unsigned i = 0; !err && i < r->nr_layers; i++) {
		char *d = vd_dirname(r->layers[i]);
		if (!d || strcmp(d, dir) || !group_bundle_name_ok(group_base_name(r->layers[i])))
			err = -VD_EBADDATA;
		free(d);
	}
	if (err == -VD_EBADDATA)
		vd_err("%s: not acted on: its staging folder is not %s or its layers are not "
		       "plain names beside %s (T6): left as it is", in->path,
		       want ? want : "?", in->target);
	free(want);
	free(dir);
	return err;
}

const struct group_op group_op_unpack = {
	.name = "unpack",
	.fields = unpack_fields,
	.nr_fields = sizeof unpack_fields / sizeof unpack_fields[0],
	.size = sizeof(struct unpack_rec),
	.resume = unpack_resume,
	.check = unpack_check,
};

/* ---- the plan ------------------------------------------------------------------------------- */

/* The create options of layer i (its hint into u->hints[i]). */
static int layer_opts(struct unpack *u, unsigned i)
{
	const struct group_bundle_layer *l = &u->b->layers[i];
	struct vmdk_create_opts *o = &u->co[i];
	const char *parent = l->parent_kind == GROUP_BUNDLE_LAYER ? u->b->layers[l->parent].path
			     : l->parent_kind == GROUP_BUNDLE_NEED ? u->b->needs[l->parent].path
								   : NULL;

	*o = (struct vmdk_create_opts){
		.capacity = l->capacity, .subformat = l->kind, .grain_size = l->grain_size,
		.split_size = l->split_size, .zeroed_grain = l->zeroed_grain,
		.parent_cid = l->parent_cid,
	};
	if (!parent)
		return 0;
	if (l->kind == VMDK_VMFS_SPARSE || l->kind == VMDK_SESPARSE)
		o->grain_size = l->kind == VMDK_SESPARSE ? 0 : l->grain_size;
	if (l->parent_kind == GROUP_BUNDLE_LAYER) /* beside it, not made yet */
		u->hints[i] = strdup(u->b->layers[l->parent].name);
	else if (chain_hint_make(l->path, parent, &u->hints[i]))
		return -ENOENT;
	o->parent_hint = u->hints[i];
	return o->parent_hint ? 0 : -ENOMEM;
}

static int name_free(const char *path)
{
	struct stat st;

	if (lstat(path, &st) && errno == ENOENT)
		return 0;
	vd_err("%s: already exists: unpack would overwrite it: refused, nothing written", path);
	return -EEXIST;
}

/* Every file layer i will have, and its sidecars, free in DIR; listed. */
static int plan_files(struct unpack *u, unsigned i)
{
	static const char *const side[] = { GROUP_CHILDREN_SUFFIX, GROUP_INTENT_SUFFIX };
	char **files = NULL, *p;
	unsigned nr = 0;
	int err = vmdk_create_names(u->b->layers[i].path, &u->co[i], &files, &nr);

	for (unsigned k = 0; !err && k < nr; k++) {
		err = name_free(files[k]);
		for (unsigned j = 0; !err && j < u->rec->nr_files; j++)
			if (!strcmp(group_base_name(u->rec->files[j]), group_base_name(files[k]))) {
				vd_err("%s: two layers of the bundle would make it: refused, "
				       "nothing written", files[k]);
				err = -EEXIST;
			}
		if (!err)
			err = vd_strv_add(&u->rec->files, &u->rec->nr_files, files[k]);
	}
	for (unsigned k = 0; !err && k < 2; k++) {
		if (asprintf(&p, "%s%s", u->b->layers[i].path, side[k]) < 0)
			return -ENOMEM;
		err = name_free(p);
		free(p);
	}
	vd_strv_free(files, nr);
	return err;
}

static int plan_record(struct unpack *u)
{
	struct group_intent *in;
	int err = group_intent_new(&group_op_unpack, u->b->layers[0].path, &in);

	if (err)
		return err;
	u->rec = (struct unpack_rec *)in;
	if (!(u->rec->tmp = stage_name(in->target)))
		return -ENOMEM;
	for (unsigned i = 0; !err && i < u->b->nr_layers; i++)
		err = vd_strv_add(&u->rec->layers, &u->rec->nr_layers, u->b->layers[i].path);
	for (unsigned i = 0; !err && i < u->b->nr_needs; i++)
		err = vd_strv_add(u->thaw_need[i] ? &u->rec->thaw : &u->rec->needs,
				  u->thaw_need[i] ? &u->rec->nr_thaw : &u->rec->nr_needs,
				  u->b->needs[i].path);
	return err;
}

static int plan(struct unpack *u)
{
	struct group_plan sp = { .op = "unpack" };
	int err = 0;

	u->co = calloc(u->b->nr_layers, sizeof *u->co);
	u->hints = calloc(u->b->nr_layers, sizeof *u->hints);
	u->rd = calloc(u->b->nr_layers, sizeof *u->rd);
	u->need_chain = calloc(u->b->nr_needs + 1, sizeof *u->need_chain);
	u->pbuf = malloc(GROUP_BUNDLE_FRAME_MAX);
	if (!u->co || !u->hints || !u->rd || !u->need_chain || !u->pbuf)
		return -ENOMEM;
	for (unsigned i = 0; !err && i < u->b->nr_layers; i++)
		if (!(u->b->layers[i].path = vd_path_join(u->dir, u->b->layers[i].name)))
			err = -ENOMEM;
	for (unsigned i = 0; !err && i < u->b->nr_layers; i++)
		err = layer_opts(u, i);
	if (!err)
		err = plan_record(u);
	for (unsigned i = 0; !err && i < u->b->nr_layers; i++)
		err = plan_files(u, i);
	sp.space_needed = u->b->held_bytes + (uint64_t)u->b->nr_layers * META_SLACK;
	return err ? err : group_plan_space(&sp, u->b->layers[0].path);
}

/* The needs: a reader's lock (no writer may change them), a writer's for
 * one N2 freezes. */
static int lock_needs(struct unpack *u)
{
	int err = 0;

	for (unsigned i = 0; !err && i < u->b->nr_needs; i++)
		err = group_lock_layer(&u->locks, u->b->needs[i].path,
				       u->thaw_need[i] ? GROUP_LOCK_EXCL : GROUP_LOCK_READ);
	return err;
}

/* ---- the steps ----------------------------------------------------------------------------- */

/* N1b: a fresh staging folder (one left by a recovery that failed to
 * remove it is removed: this unpack holds the folder's lock). */
static int stage_make(struct unpack *u)
{
	int err = group_stage_remove(u->rec->tmp, u->io);

	if (!err && mkdir(u->rec->tmp, 0700)) {
		err = -errno;
		vd_err("%s: cannot make the staging folder: %s", u->rec->tmp, strerror(-err));
	}
	return err ? err : u->io->sync_dir(u->io, u->rec->tmp);
}

/* N2 */
static int freeze_needs(struct unpack *u)
{
	int err = 0;

	for (unsigned i = 0; !err && i < u->rec->nr_thaw; i++)
		err = chain_set_frozen(u->rec->thaw[i], true, CHAIN_OPEN_NOLOCK, u->io);
	return err;
}

static char *staged(const struct unpack *u, unsigned i)
{
	return vd_path_join(u->rec->tmp, u->b->layers[i].name);
}

/* ---- what lies below a layer being built ------------------------------------------------ */

static int read_under(struct unpack *u, enum group_bundle_parent kind, unsigned idx,
		      uint8_t *buf, size_t len, uint64_t off);

/* Layer idx, built: read it, and below it where it holds nothing. */
static int read_built(struct unpack *u, unsigned idx, uint8_t *buf, size_t len, uint64_t off)
{
	const struct group_bundle_layer *l = &u->b->layers[idx];
	char *path = u->rd[idx] ? NULL : staged(u, idx);
	int err = path ? vmdk_open(path, VMDK_OPEN_RDONLY, u->io, &u->rd[idx]) : 0;

	free(path);
	while (!err && len) {
		enum vmdk_bs k;
		uint64_t n;
		err = vmdk_block_status(u->rd[idx], off, len, &k, &n);
		if (!err && k == VMDK_BS_DATA)
			err = vmdk_pread(u->rd[idx], buf, (size_t)n, off);
		else if (!err && k == VMDK_BS_ZERO)
			memset(buf, 0, (size_t)n);
		else if (!err)
			err = read_under(u, l->parent_kind, l->parent, buf, (size_t)n, off);
		buf += n;
		off += n;
		len -= (size_t)n;
	}
	return err;
}

/* What a parent reads: a layer built here, a need, or (no parent) zeros. */
static int read_under(struct unpack *u, enum group_bundle_parent kind, unsigned idx,
		      uint8_t *buf, size_t len, uint64_t off)
{
	int err = 0;

	if (kind == GROUP_BUNDLE_BASE) {
		memset(buf, 0, len);
		return 0;
	}
	if (kind == GROUP_BUNDLE_LAYER)
		return read_built(u, idx, buf, len, off);
	if (!u->need_chain[idx]) /* the lock set holds the need */
		err = chain_open(u->b->needs[idx].path, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK_TOP,
				 NULL, &u->need_chain[idx]);
	return err ? err : chain_pread(u->need_chain[idx], buf, len, off);
}

/* Close what was read below the layers built (before the publish). */
static void close_below(struct unpack *u)
{
	for (unsigned i = 0; u->rd && i < u->b->nr_layers; i++) {
		vmdk_close(u->rd[i]);
		u->rd[i] = NULL;
	}
	for (unsigned i = 0; u->need_chain && i < u->b->nr_needs; i++) {
		chain_close(u->need_chain[i]);
		u->need_chain[i] = NULL;
	}
}

struct below {
	struct unpack *u;
	unsigned i;
};

/* The backing of the delta being built: what its parent reads (fills a
 * grain a run covers only part of, as the layer's own writes did). */
static int below_delta(void *opaque, void *buf, size_t len, uint64_t off)
{
	const struct below *b = opaque;
	const struct group_bundle_layer *l = &b->u->b->layers[b->i];

	return read_under(b->u, l->parent_kind, l->parent, buf, len, off);
}

/* A parent run: what the parent reads there, written into the layer. */
static int write_parent(struct unpack *u, struct vmdk_disk *d, unsigned i,
			const struct group_bundle_run *run)
{
	const struct group_bundle_layer *l = &u->b->layers[i];
	int err = 0;

	for (uint64_t at = 0; !err && at < run->len;) {
		size_t n = (size_t)VD_MIN(run->len - at, (uint64_t)GROUP_BUNDLE_FRAME_MAX);
		err = read_under(u, l->parent_kind, l->parent, u->pbuf, n, run->off + at);
		if (!err)
			err = vmdk_pwrite(d, u->pbuf, n, run->off + at);
		at += n;
	}
	return err;
}

/* N3: one frame's runs into layer i (a base needs no zeros written). */
static int write_runs(struct unpack *u, struct vmdk_disk *d, unsigned i)
{
	bool base = u->b->layers[i].parent_kind == GROUP_BUNDLE_BASE;
	int err = 0;

	for (unsigned k = 0; !err && k < u->nr_runs; k++) {
		const struct group_bundle_run *run = &u->runs[k];
		if (run->kind == GROUP_RUN_DATA)
			err = vmdk_pwrite(d, run->data, (size_t)run->len, run->off);
		else if (run->kind == GROUP_RUN_PARENT)
			err = write_parent(u, d, i, run);
		else if (!base)
			err = vmdk_pwrite_zeroes(d, (size_t)run->len, run->off);
		group_plan_progress(&u->progress, &u->done, run->len, u->b->held_bytes);
	}
	vmdk_writeback(d);
	return err;
}

/* The next frame (or the end) into u. */
static int next_frame(struct unpack *u)
{
	u->ended = group_bundle_read_frame(u->r, &u->frame_layer, &u->runs, &u->nr_runs);
	u->have_frame = !u->ended;
	return u->ended < 0 ? u->ended : 0;
}

/* N3: DDB keys and CID last (the first write gave it a new CID). */
static int seal(struct unpack *u, struct vmdk_disk *d, unsigned i)
{
	const struct group_bundle_layer *l = &u->b->layers[i];
	char cid[9];
	int err = 0;

	for (unsigned k = 0; !err && k < l->nr_keys; k++) {
		char *kv = strdup(l->keys[k]), *eq = kv ? strchr(kv, '=') : NULL;
		if (eq)
			*eq++ = 0;
		err = eq ? vmdk_desc_set(d, kv, eq) : -ENOMEM;
		free(kv);
	}
	snprintf(cid, sizeof cid, "%08x", l->cid);
	if (!err)
		err = vmdk_desc_set(d, "CID", cid);
	return err ? err : vmdk_desc_write(d);
}

/* N3 for layer i: made, its runs written, sealed, closed. */
static int build_layer(struct unpack *u, unsigned i)
{
	struct below below = { .u = u, .i = i };
	struct vmdk_disk *d = NULL;
	char *path = staged(u, i);
	int err = path ? vmdk_create(path, &u->co[i], u->io) : -ENOMEM;

	if (!err)
		err = vmdk_open(path, VMDK_OPEN_RDWR, u->io, &d);
	if (!err && u->b->layers[i].parent_kind != GROUP_BUNDLE_BASE)
		vmdk_set_backing(d, below_delta, &below);
	while (!err && u->have_frame && u->frame_layer == i) {
		err = write_runs(u, d, i);
		if (!err)
			err = next_frame(u);
	}
	if (!err)
		err = seal(u, d, i);
	if (d && vmdk_close(d) && !err)
		err = -EIO;
	free(path);
	return err;
}

/* N4: the staging folder holds what the record names, and only that. */
static int check_staged(const struct unpack *u)
{
	char **names = NULL;
	unsigned nr = 0, seen = 0;
	int err = group_stage_list(u->rec->tmp, &names, &nr);

	for (unsigned i = 0; !err && i < nr; i++) {
		if (!is_listed(u->rec, names[i])) {
			vd_err("%s/%s: not a file of the bundle's layers: unpack rolled back",
			       u->rec->tmp, names[i]);
			err = -EEXIST;
		}
		seen++;
	}
	if (!err && seen != u->rec->nr_files) {
		vd_err("%s: %u of the %u files the layers have: unpack rolled back",
		       u->rec->tmp, seen, u->rec->nr_files);
		err = -EIO;
	}
	vd_strv_free(names, nr);
	return err;
}

static int steps(struct unpack *u)
{
	int err = group_intent_write(&u->rec->in, u->io); /* N1 */
	bool written = !err;

	if (!err)
		err = stage_make(u);
	if (!err)
		err = freeze_needs(u); /* N2 */
	if (!err)
		err = next_frame(u);
	for (unsigned i = 0; !err && i < u->b->nr_layers; i++) /* N3 */
		err = build_layer(u, i);
	if (!err && u->have_frame)
		err = next_frame(u); /* a frame past the last layer: refused */
	close_below(u);
	if (!err)
		err = check_staged(u); /* N4 */
	if (!err) {
		u->rec->publish = true;
		err = group_intent_write(&u->rec->in, u->io); /* N5 */
		if (!err)
			return finish(u->rec, u->io); /* N6-N8 */
	}
	if (written)
		roll_back(u->rec, u->io);
	return err;
}

/* --dry-run: every frame read and verified, nothing written. */
static int drain(struct unpack *u)
{
	int err = next_frame(u);

	while (!err && u->have_frame) {
		for (unsigned k = 0; k < u->nr_runs; k++)
			group_plan_progress(&u->progress, &u->done, u->runs[k].len,
					    u->b->held_bytes);
		err = next_frame(u);
	}
	return err;
}

/* ---- the front -------------------------------------------------------------------------------- */

static int open_dir(struct unpack *u, const char *dir)
{
	struct stat st;
	char *probe;
	int err;

	if (!(u->dir = realpath(dir, NULL)) || stat(u->dir, &st) || !S_ISDIR(st.st_mode)) {
		err = u->dir ? -ENOTDIR : -errno;
		vd_err("%s: %s: unpack refused (the folder must exist)", dir, strerror(-err));
		return err;
	}
	if (!(probe = vd_path_join(u->dir, STAGE_SUFFIX)))
		return -ENOMEM;
	/* the front door: a dry run only reports what it finds */
	err = group_recover_near(probe, u->o->flags & GROUP_DRY_RUN ? 0 : GROUP_RECOVER_FINISH,
				 u->io, NULL);
	free(probe);
	return err ? err : lock_dir(u->dir, &u->dir_fd);
}

static void unpack_free(struct unpack *u)
{
	close_below(u);
	free(u->rd);
	free(u->need_chain);
	free(u->pbuf);
	for (unsigned i = 0; u->hints && i < u->b->nr_layers; i++)
		free(u->hints[i]);
	free(u->hints);
	free(u->co);
	free(u->thaw_need);
	for (unsigned i = 0; u->found && i < u->b->nr_needs; i++)
		group_digest_clear(&u->found[i]);
	free(u->found);
	free(u->dir);
	group_locks_release(&u->locks);
	if (u->dir_fd >= 0)
		close(u->dir_fd);
	group_bundle_reader_free(u->r);
	group_intent_free(u->rec ? &u->rec->in : NULL);
}

int group_unpack(int fd, const char *name, const char *dir, const struct group_unpack_opts *o,
		 const struct vd_io *io, struct group_bundle_info **out)
{
	struct unpack u = { .o = o, .io = io ? io : vd_io_posix(), .dir_fd = -1,
			    .progress = { .progress = o->progress,
					  .progress_opaque = o->progress_opaque } };
	int err = open_dir(&u, dir);

	if (!err)
		err = group_bundle_reader_open(fd, name, &u.r);
	if (!err)
		err = group_bundle_read_head(u.r, &u.b);
	if (!err && (!(u.thaw_need = calloc(u.b->nr_needs + 1, sizeof *u.thaw_need)) ||
		     !(u.found = calloc(u.b->nr_needs + 1, sizeof *u.found))))
		err = -ENOMEM;
	if (!err)
		err = group_unpack_find_needs(u.b, u.dir, o, u.thaw_need, u.found);
	if (!err)
		err = plan(&u);
	if (!err && (o->flags & GROUP_DRY_RUN))
		err = drain(&u);
	else if (!err && !(err = lock_needs(&u)))
		err = steps(&u);
	for (unsigned i = 0; !err && !(o->flags & GROUP_DRY_RUN) && i < u.b->nr_needs; i++)
		group_digest_record(u.b->needs[i].path, &u.found[i], u.io); /* N9 */
	if (u.b)
		group_bundle_reader_stats(u.r, &u.b->frames, &u.b->stream_bytes);
	unpack_free(&u);
	if (!err && out)
		*out = u.b;
	else
		group_bundle_info_free(u.b);
	return err;
}
