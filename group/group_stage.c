/* group — staging a layer's replacement and publishing it (layer 3).
 *
 * Owns: the hidden staging folder DIR/.NAME.vdelta-OP/ in which revert,
 * compaction and flattening build the new layer under the layer's own
 * name (so vmdk_create names its extents exactly as the layer's: ESXi's
 * NAME-flat.vmdk, NAME-delta.vmdk, NAME-sesparse.vmdk, hosted NAME-s001.vmdk
 * ...), the swap of every file of a multi-file layer, and the recovery of
 * an interrupted swap.  The scan skips hidden entries, so no disk is ever
 * found in the staging folder.
 *
 * Write order of a publish (the new layer is complete, fsynced and verified
 * in the staging folder before P1):
 *  P1. the intent record is rewritten with publish=1: from here recovery
 *      finishes the swap instead of discarding the staged layer;
 *  P1b. (a new layer: clone --from-current) the parent's sidecar record
 *      names it, before its name appears (a record of a child not there
 *      yet only makes the parent count as shared);
 *  P2. (a layer of several files) the old descriptor is moved into the
 *      staging folder (STAGE_OLD_DESC) and the folder fsynced, so no
 *      descriptor ever reads old and new extents mixed; then each staged
 *      extent file is renamed into the layer's folder (over the layer's
 *      extent of the same name, if any) — extents before the descriptor,
 *      so the descriptor published in P3 never names a file that is not
 *      there.  Between P2 and P3 the layer has no descriptor: a reader
 *      finds it missing, and recovery (which always completes P3) ends it;
 *  P3. the staged descriptor is renamed over the layer's descriptor and
 *      the folder fsynced: the layer is the new one;
 *  P4. the promoted layer's former parent drops it from its sidecar
 *      record (promote only; after P3 the layer no longer reads it, so a
 *      crash before P4 leaves a stale record, which only protects it);
 *  P5. the layer's former extent files the new descriptor does not name
 *      are removed, then the staging folder;
 *  P6. the intent record is removed.
 * Recovery: publish=1 — redo P2-P6 from wherever they stopped (each step
 * is idempotent: a rename whose source is gone is done); otherwise remove
 * the staging folder and the record (the layer is untouched before P1).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

#define STAGE_OLD_DESC ".descriptor-before" /* P2: the old descriptor, set aside */

const struct group_field group_stage_fields[GROUP_STAGE_NR_FIELDS] = {
	GROUP_FIELD_ONE(struct group_stage_rec, record_in, "record_in", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct group_stage_rec, tmp, "tmp", GROUP_FIELD_TEXT, GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct group_stage_rec, parent, "parent", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct group_stage_rec, publish, "publish", GROUP_FIELD_FLAG,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct group_stage_rec, files, nr_files, "file", GROUP_FIELD_FILES,
			 GROUP_LOCK_EXCL),
};

int group_stage_new(const struct group_op *op, const char *path,
		    struct group_stage_rec **out)
{
	struct group_intent *in;
	char *dir = vd_dirname(path), *name = NULL;
	int err = dir ? group_intent_new(op, path, &in) : -ENOMEM;

	if (!err) {
		*out = (struct group_stage_rec *)in;
		if (asprintf(&name, ".%s.vdelta-%s", group_base_name(path), op->name) >= 0)
			(*out)->tmp = vd_path_join(dir, name);
		err = (*out)->tmp ? 0 : -ENOMEM;
	}
	free(name);
	free(dir);
	return err;
}

int group_stage_check(const struct group_intent *in)
{
	const struct group_stage_rec *r = (const struct group_stage_rec *)in;
	struct group_stage_rec *want = NULL;
	int err = group_stage_new(in->op, in->target, &want);

	if (!err && (!r->tmp || strcmp(r->tmp, want->tmp))) {
		vd_err("%s: not acted on: its staging folder is not %s (T6): left as it is",
		       in->path, want->tmp);
		err = -VD_EBADDATA;
	}
	group_intent_free(want ? &want->in : NULL);
	return err;
}

/* The staged descriptor: the staging folder + the layer's own name. */
static char *stage_path(const struct group_stage_rec *r)
{
	return vd_path_join(r->tmp, group_base_name(r->in.target));
}

int group_stage_list(const char *dir, char ***names, unsigned *nr)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int err = 0;

	*names = NULL;
	*nr = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while (!err && (e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			err = vd_strv_add(names, nr, e->d_name);
	closedir(d);
	return err;
}

int group_stage_remove(const char *tmp, const struct vd_io *io)
{
	char **names;
	unsigned nr;
	struct stat st;
	int err;

	if (!lstat(tmp, &st) && !S_ISDIR(st.st_mode))
		return group_layer_unlink(tmp, io); /* a single temporary file */
	err = group_stage_list(tmp, &names, &nr);
	for (unsigned i = 0; !err && i < nr; i++) {
		char *p = vd_path_join(tmp, names[i]);
		err = p ? group_layer_unlink(p, io) : -ENOMEM;
		free(p);
	}
	vd_strv_free(names, nr);
	if (!err && rmdir(tmp) && errno != ENOENT)
		err = -errno;
	if (err)
		vd_err("%s: cannot remove the staging folder: %s", tmp, strerror(-err));
	return err;
}

/* Remove the staging folder and whatever it holds. */
static int stage_discard(const struct group_stage_rec *r, const struct vd_io *io)
{
	return group_stage_remove(r->tmp, io);
}

/* A fresh, empty staging folder. */
static int stage_open(const struct group_stage_rec *r, const struct vd_io *io)
{
	int err = stage_discard(r, io); /* a leftover of an older attempt */

	if (!err && mkdir(r->tmp, 0700)) {
		err = -errno;
		vd_err("%s: cannot make the staging folder: %s", r->tmp, strerror(-err));
	}
	return err ? err : io->sync_dir(io, r->tmp); /* durable before P1 */
}

/* A staged extent may replace only a file of the layer itself: refuse
 * (before P1) a name another file of the folder already has. */
static int stage_check_names(const struct group_stage_rec *r)
{
	char **names = NULL, *dir = vd_dirname(r->in.target);
	unsigned nr = 0;
	int err = dir ? group_stage_list(r->tmp, &names, &nr) : -ENOMEM;

	for (unsigned i = 0; !err && i < nr; i++) {
		char *p = vd_path_join(dir, names[i]);
		bool own = false;
		for (unsigned j = 0; p && j < r->nr_files; j++)
			own |= vd_same_file(p, r->files[j]);
		if (!p)
			err = -ENOMEM;
		else if (!own && !access(p, F_OK)) {
			vd_err("%s: the rewritten layer needs this name for its extent, "
			       "and another file has it: nothing changed", p);
			err = -EEXIST;
		}
		free(p);
	}
	vd_strv_free(names, nr);
	free(dir);
	return err;
}

/* P2, first: with extents to move and the new descriptor still staged,
 * the old descriptor goes out of the way (into the staging folder). */
static int stage_old_aside(const struct group_stage_rec *r, char **names, unsigned nr,
			   const struct vd_io *io)
{
	const char *desc = group_base_name(r->in.target);
	bool extents = false, staged_desc = false;
	char *aside;
	int err;

	for (unsigned i = 0; i < nr; i++) {
		staged_desc |= !strcmp(names[i], desc);
		extents |= strcmp(names[i], desc) && strcmp(names[i], STAGE_OLD_DESC);
	}
	if (!extents || !staged_desc || access(r->in.target, F_OK))
		return 0;
	if (!(aside = vd_path_join(r->tmp, STAGE_OLD_DESC)))
		return -ENOMEM;
	err = io->rename(io, r->in.target, aside);
	free(aside);
	return err ? err : io->sync_dir(io, r->in.target);
}

/* P2, P3: staged extents into the folder, then the descriptor. */
static int stage_move(const struct group_stage_rec *r, const struct vd_io *io)
{
	const char *desc = group_base_name(r->in.target);
	char **names = NULL, *dir = vd_dirname(r->in.target);
	unsigned nr = 0;
	int err = dir ? group_stage_list(r->tmp, &names, &nr) : -ENOMEM;

	if (!err)
		err = stage_old_aside(r, names, nr, io); /* P2 */
	for (int pass = 0; !err && pass < 2; pass++)
		for (unsigned i = 0; !err && i < nr; i++) {
			if (!strcmp(names[i], STAGE_OLD_DESC) ||
			    (strcmp(names[i], desc) == 0) != (pass == 1))
				continue; /* pass 0: extents (P2); pass 1: descriptor (P3) */
			char *from = vd_path_join(r->tmp, names[i]);
			char *to = vd_path_join(dir, names[i]);
			err = from && to ? io->rename(io, from, to) : -ENOMEM;
			free(from);
			free(to);
		}
	if (!err)
		err = io->sync_dir(io, r->in.target);
	vd_strv_free(names, nr);
	free(dir);
	return err;
}

/* P5: the former extents the new descriptor does not name. */
static int stage_drop_old(const struct group_stage_rec *r, const struct vd_io *io)
{
	char **now;
	unsigned nr;
	int err = group_layer_files(r->in.target, &now, &nr);

	for (unsigned i = 0; !err && i < r->nr_files; i++) {
		bool named = vd_same_file(r->files[i], r->in.target);
		for (unsigned j = 0; j < nr; j++)
			named |= vd_same_file(r->files[i], now[j]);
		if (!named)
			err = group_layer_unlink(r->files[i], io);
	}
	vd_strv_free(now, nr);
	if (!err)
		err = io->sync_dir(io, r->in.target);
	return err ? err : stage_discard(r, io);
}

/* P2-P6 (also recovery's roll forward). */
static int stage_finish(const struct group_stage_rec *r, const struct vd_io *io)
{
	int err = r->record_in ? group_record_update(r->record_in, NULL, &r->in.target, 1, 0, io)
			       : 0; /* P1b */

	if (!err)
		err = stage_move(r, io); /* P2, P3 */
	if (!err && r->parent) /* P4 */
		err = group_record_update(r->parent, r->in.target, NULL, 0, 0, io);
	if (!err)
		err = stage_drop_old(r, io); /* P5 */
	return err ? err : group_intent_done(&r->in, io); /* P6 */
}

static int stage_publish(struct group_stage_rec *r, const struct vd_io *io)
{
	int err;

	r->publish = true;
	err = group_intent_write(&r->in, io); /* P1 */
	return err ? err : stage_finish(r, io);
}

int group_stage_run(struct group_stage_rec *r, group_stage_fill_fn *fill, void *opaque,
		    const struct vd_io *io)
{
	struct group_locks locks = {0};
	char *staged = stage_path(r);
	bool written = false, exists = !access(r->in.target, F_OK);
	int err = !staged ? -ENOMEM
		  : exists ? group_layer_files(r->in.target, &r->files, &r->nr_files) : 0;

	if (!err) /* no one else uses the layer from here to the end */
		err = group_intent_lock(&r->in, &locks);
	if (!err)
		written = !(err = group_intent_write(&r->in, io)); /* with the layer's files */
	if (!err)
		err = stage_open(r, io);
	if (!err)
		err = fill(opaque, staged, io); /* made, fsynced and verified */
	if (!err)
		err = stage_check_names(r);
	free(staged);
	if (!err)
		err = stage_publish(r, io); /* finished by recovery from P1 on */
	else if (written && !stage_discard(r, io)) /* roll back: the layer is as it was */
		group_intent_done(&r->in, io);
	group_locks_release(&locks);
	return err;
}

int group_stage_resume(struct group_intent *in, const struct vd_io *io)
{
	const struct group_stage_rec *r = (const struct group_stage_rec *)in;
	int err;

	if (r->publish)
		return stage_finish(r, io);
	err = stage_discard(r, io);
	return err ? err : group_intent_done(&r->in, io);
}
