/* group — `relocate`: move a disk's layers to another folder (layer 3).
 *
 * Owns: the plan of a relocation (which layers of DISK's chain are copied
 * into DIR, reattached to an identical layer already there or kept where
 * they are, and which sources go), the byte-for-byte copy of a layer's
 * files (holes kept: SEEK_DATA / SEEK_HOLE, runs of up to LAYER_CMP_BUF
 * bytes), the new parent hints, the sidecar records of the layers that
 * gain or lose a child, and the recovery of an interrupted relocation.
 *
 * A layer is moved by copying it and removing the source once the copy is
 * fsynced, verified and published; a layer another disk reaches is copied,
 * never moved.  A copy keeps its CID (its children stay valid): only its
 * descriptor's parent hint changes.  Every layer's files must share its
 * folder (relative extent names survive the move).
 *
 * Write order (each step safe to stop at; recovery = relocate_resume):
 *  L1. the intent record (old top, new top, the files L3 creates, the
 *      sources L5 removes, the record edits) is written durably beside the
 *      old top, then a twin beside the new top in DIR, so a later group
 *      command that scans either folder recovers;
 *  L2. the kept layer the new chain hangs from (child-most: the parent
 *      that stays; share: the highest reattached layer) records its new
 *      child, before that child exists (a record of a child never made
 *      only makes a layer count as shared);
 *  L3. each layer to copy, base first: every extent file is copied to a
 *      hidden temporary in DIR, fsynced, renamed to its name and the folder
 *      fsynced; then the descriptor (or single file) likewise, its parent
 *      hint re-pointed in the temporary, the temporary compared with the
 *      source (CID, content, runs held), the record of its child in DIR
 *      written, and only then renamed to its name;
 *  L4. the new disk is opened: every CID link and hint holds;
 *  L5. the sources of the moved layers are removed, the old top's
 *      descriptor first.  Until it is gone recovery rolls back (removes
 *      what L2-L3 made, old disk untouched); after, it rolls forward;
 *  L6. the kept original the lowest moved layer hung from drops it from
 *      its record;
 *  L7. the twin record, then the intent record, are removed.
 * No step writes into a layer that stays (only sidecar records change),
 * so every disk of the group reads the same bytes at every step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

#define RL_TMP ".vdelta-relocate"

/* The record (L1), beside the old top and (a twin) beside the new one. */
struct relocate_rec {
	struct group_intent in; /* target: the old top */
	char *tmp;          /* the new top, in DIR */
	char *parent;       /* the kept original the lowest moved layer hung from */
	char **children;    /* that moved layer (one), dropped from its record (L6) */
	unsigned nr_children;
	char **files;       /* the sources removed (L5), old top descriptor first */
	unsigned nr_files;
	char *attach;       /* the kept layer the new chain hangs from (L2) */
	char *attach_child; /* its new child in DIR */
	char **created;     /* what L3 may leave in DIR (rolled back) */
	unsigned nr_created;
	char **moved;       /* the layers whose sources L5 removes */
	unsigned nr_moved;
};

static const struct group_field relocate_fields[] = {
	GROUP_FIELD_ONE(struct relocate_rec, tmp, "tmp", GROUP_FIELD_LAYER, GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct relocate_rec, parent, "parent", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct relocate_rec, children, nr_children, "child",
			 GROUP_FIELD_LAYERS, GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct relocate_rec, files, nr_files, "file", GROUP_FIELD_FILES,
			 GROUP_LOCK_EXCL),
	GROUP_FIELD_ONE(struct relocate_rec, attach, "attach", GROUP_FIELD_LAYER,
			GROUP_LOCK_NONE),
	GROUP_FIELD_ONE(struct relocate_rec, attach_child, "attach_child",
			GROUP_FIELD_LAYER, GROUP_LOCK_NONE),
	GROUP_FIELD_LIST(struct relocate_rec, created, nr_created, "created",
			 GROUP_FIELD_NEW_FILES, GROUP_LOCK_EXCL),
	GROUP_FIELD_LIST(struct relocate_rec, moved, nr_moved, "moved", GROUP_FIELD_LAYERS,
			 GROUP_LOCK_EXCL),
};

struct rl_layer {
	char *src;    /* canonical path where it is now */
	char *dst;    /* its path in the new chain (src when it stays) */
	uint64_t file_bytes;
	bool shared;
	bool copy;    /* copied into DIR; else the file at dst is used */
	bool removed; /* its source goes (moved) */
};

struct relocate {
	const struct group *g;
	enum group_relocate_mode mode;
	char *dir; /* canonical */
	struct rl_layer l[CHAIN_MAX_DEPTH];
	int n;
	struct relocate_rec *rec;
	struct group_plan *plan;
	const struct vd_io *io;
	uint8_t *buf, *buf2;
	uint64_t done;
};

/* DIR/.NAME.vdelta-relocate: where a file of a layer is copied first. */
static char *tmp_path(const char *dir, const char *src)
{
	char *name, *p;

	if (asprintf(&name, ".%s%s", group_base_name(src), RL_TMP) < 0)
		return NULL;
	p = vd_path_join(dir, name);
	free(name);
	return p;
}

static bool exists(const char *path)
{
	struct stat st;

	return !lstat(path, &st);
}

static void rl_free(struct relocate *r)
{
	for (int i = 0; i < r->n; i++) {
		free(r->l[i].src);
		free(r->l[i].dst);
	}
	free(r->dir);
	free(r->buf);
	free(r->buf2);
	group_intent_free(r->rec ? &r->rec->in : NULL);
}

/* ---- recovery (L5-L7 forward, or the roll back) ------------------------------------ */

/* L7: the two records, each with the temporary a write of it may have
 * left; the one beside where the disk now lives goes last, so a crash
 * leaves it where the next command on the disk finds it. */
static int intents_done(const struct relocate_rec *in, const struct vd_io *io,
			bool forward)
{
	const char *tops[2] = { forward ? in->in.target : in->tmp,
				forward ? in->tmp : in->in.target };
	int err = 0;

	for (unsigned i = 0; !err && i < 4; i++) {
		char *rec;
		if (asprintf(&rec, "%s%s%s", tops[i / 2], GROUP_INTENT_SUFFIX,
			     i % 2 ? "" : ".tmp") < 0)
			return -ENOMEM;
		err = group_layer_unlink(rec, io);
		if (!err && i % 2)
			err = io->sync_dir(io, rec);
		free(rec);
	}
	return err;
}

/* Until L5 starts: remove what L2-L3 made. */
static int roll_back(const struct relocate_rec *in, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = in->nr_created; !err && i-- > 0;)
		err = group_layer_unlink(in->created[i], io);
	if (!err && in->nr_created)
		err = io->sync_dir(io, in->created[0]);
	if (!err && in->attach && in->attach_child)
		err = group_record_update(in->attach, in->attach_child, NULL, 0, 0, io);
	return err ? err : intents_done(in, io, false);
}

/* L5-L7 */
static int roll_forward(const struct relocate_rec *in, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = 0; !err && i < in->nr_files; i++) { /* L5 */
		err = group_layer_unlink(in->files[i], io);
		if (!err)
			err = io->sync_dir(io, in->files[i]);
	}
	if (!err && in->parent && in->nr_children) /* L6 */
		err = group_record_update(in->parent, in->children[0], NULL, 0, 0, io);
	return err ? err : intents_done(in, io, true); /* L7 */
}

static int relocate_resume(struct group_intent *head, const struct vd_io *io)
{
	const struct relocate_rec *in = (const struct relocate_rec *)head;

	if (!in->nr_files || !in->tmp) {
		vd_err("%s: relocate record without files or destination: left as is",
		       head->path);
		return -VD_EBADDATA;
	}
	return exists(in->files[0]) ? roll_back(in, io) : roll_forward(in, io);
}

/* What L3 makes lies in the new top's folder and has a name L3 gives:
 * a layer file's (a .vmdk), a sidecar record, or a hidden temporary. */
static int relocate_check(const struct group_intent *head)
{
	const struct relocate_rec *in = (const struct relocate_rec *)head;
	char *dir = in->tmp ? vd_dirname(in->tmp) : NULL;
	int err = dir ? 0 : -VD_EBADDATA;

	for (unsigned i = 0; !err && i < in->nr_created; i++) {
		const char *c = in->created[i], *b = group_base_name(c);
		size_t n = strlen(b);
		bool named = (n > 5 && !strcmp(b + n - 5, ".vmdk")) ||
			     strstr(b, GROUP_CHILDREN_SUFFIX) || strstr(b, RL_TMP);
		if (strncmp(c, dir, strlen(dir)) || c[strlen(dir)] != '/' ||
		    strchr(c + strlen(dir) + 1, '/') || !named) {
			vd_err("%s: not acted on: %s is not a file relocate makes in %s (T6): "
			       "left as it is", head->path, c, dir);
			err = -VD_EBADDATA;
		}
	}
	free(dir);
	return err;
}

const struct group_op group_op_relocate = {
	.name = "relocate",
	.fields = relocate_fields,
	.nr_fields = sizeof relocate_fields / sizeof relocate_fields[0],
	.size = sizeof(struct relocate_rec),
	.resume = relocate_resume,
	.check = relocate_check,
	.twin_key = "tmp",
};

/* ---- copying (L3) -------------------------------------------------------------------- */

static void progress(struct relocate *r, uint64_t n)
{
	group_plan_progress(r->plan, &r->done, n, r->plan->copy_bytes);
}

static int copy_run(struct relocate *r, int fd, struct vd_file *f, off_t off, off_t len)
{
	while (len > 0) {
		size_t n = (size_t)VD_MIN((uint64_t)len, (uint64_t)GROUP_REWRITE_BUF);
		ssize_t got = pread(fd, r->buf, n, off);
		int err;

		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		if ((err = vd_pwrite(f, r->buf, (size_t)got, (uint64_t)off)))
			return err;
		progress(r, (uint64_t)got);
		vd_writeback(f); /* the disk writes while the copy goes on */
		off += got;
		len -= got;
	}
	return 0;
}

/* src's bytes into a new file tmp, holes kept, fsynced. */
static int copy_file(struct relocate *r, const char *src, const char *tmp)
{
	struct vd_file *f = NULL;
	struct stat st;
	int fd = open(src, O_RDONLY | O_CLOEXEC);
	int err = fd < 0 || fstat(fd, &st) ? -errno : 0;

	if (!err) {
		r->io->unlink(r->io, tmp);
		err = r->io->open(r->io, tmp, VD_O_RDWR | VD_O_CREATE, &f);
	}
	for (off_t off = 0, data, end; !err && off < st.st_size; off = end) {
		data = lseek(fd, off, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break; /* a hole up to the end */
		data = data < 0 ? off : data;
		end = lseek(fd, data, SEEK_HOLE);
		end = end < 0 || end > st.st_size ? st.st_size : end;
		err = copy_run(r, fd, f, data, end - data);
	}
	if (!err)
		err = f->ops->truncate(f, (uint64_t)st.st_size);
	if (!err)
		err = vd_sync(f);
	vd_close(f);
	if (fd >= 0)
		close(fd);
	if (err)
		vd_err("%s: cannot copy to %s: %s", src, tmp, strerror(-err));
	return err;
}

/* The copy's parent hint, when it changes (tmp lies in DIR, beside dst). */
static int repoint_copy(struct relocate *r, int i, const char *tmp)
{
	struct vmdk_disk *d = NULL;
	char *hint = NULL;
	uint32_t pcid = 0;
	bool same = true;
	int err = i + 1 < r->n ? chain_hint_make(tmp, r->l[i + 1].dst, &hint) : 0;

	if (!err && hint && !(err = vmdk_open(tmp, VMDK_OPEN_RDONLY, r->io, &d))) {
		same = vmdk_parent_hint(d) && !strcmp(vmdk_parent_hint(d), hint);
		pcid = vmdk_parent_cid(d);
		vmdk_close(d);
	}
	if (!err && !same)
		err = group_layer_repoint(tmp, r->l[i + 1].dst, pcid, r->io);
	free(hint);
	return err;
}

/* Does the layer file at path read like src alone (CID, content, runs)? */
static int same_layer(struct relocate *r, const char *src, const char *path)
{
	struct chain *c = NULL;
	struct vmdk_disk *d = NULL;
	int err = chain_open(src, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NO_PARENT | CHAIN_OPEN_NOLOCK,
			     NULL, &c); /* the lock set holds src */

	if (!err)
		err = vmdk_open(path, VMDK_OPEN_RDONLY, r->io, &d);
	if (!err && vmdk_cid(d) != vmdk_cid(chain_layer(c, 0)))
		err = -EIO;
	if (!err)
		err = group_rewrite_compare(c, d, GROUP_CMP_RUNS, NULL, r->buf, r->buf2);
	vmdk_close(d);
	chain_close(c);
	return err;
}

/* L3 for one file: copy, (descriptor) re-point, verify, record, publish. */
static int publish_file(struct relocate *r, const char *src, int layer)
{
	char *tmp = tmp_path(r->dir, src), *dst = vd_path_join(r->dir, group_base_name(src));
	int err = tmp && dst ? copy_file(r, src, tmp) : -ENOMEM; /* L3: copy, fsync */

	if (!err && layer >= 0) /* L3: the descriptor's hint, in the temporary */
		err = repoint_copy(r, layer, tmp);
	if (!err && layer >= 0 && (err = same_layer(r, src, tmp)) == -EIO)
		vd_err("%s: the copy %s does not read like it: relocate rolled back",
		       src, tmp);
	if (!err && layer > 0 && r->l[layer - 1].copy) /* L3: its child in DIR */
		err = group_record_update(r->l[layer].dst, NULL, &r->l[layer - 1].dst, 1,
					  GROUP_RECORD_COMPLETE, r->io); /* a copy just made */
	if (!err) /* L3: published */
		err = r->io->rename(r->io, tmp, dst);
	if (!err)
		err = r->io->sync_dir(r->io, dst);
	free(tmp);
	free(dst);
	return err;
}

static int copy_layer(struct relocate *r, int i)
{
	char **files;
	unsigned nr;
	int err = group_layer_files(r->l[i].src, &files, &nr);

	for (unsigned j = 1; !err && j < nr; j++) /* extents first */
		err = publish_file(r, files[j], -1);
	if (!err)
		err = publish_file(r, files[0], i);
	vd_strv_free(files, nr);
	return err;
}

static int intents_write(struct relocate_rec *in, const struct vd_io *io)
{
	char *path = in->in.path, *twin;
	int err = group_intent_write(&in->in, io);

	if (!err && asprintf(&twin, "%s%s", in->tmp, GROUP_INTENT_SUFFIX) < 0)
		return -ENOMEM;
	if (!err) {
		in->in.path = twin;
		err = group_intent_write(&in->in, io);
		in->in.path = path;
		free(twin);
	}
	return err;
}

static int relocate_steps(struct relocate *r)
{
	struct relocate_rec *in = r->rec;
	struct chain *c = NULL;
	int err = intents_write(in, r->io); /* L1 */

	if (!err && in->attach) /* L2 */
		err = group_record_update(in->attach, NULL, &in->attach_child, 1, 0, r->io);
	for (int i = r->n - 1; !err && i >= 0; i--) /* L3 */
		if (r->l[i].copy)
			err = copy_layer(r, i);
	if (!err) /* L4 */
		err = chain_open(r->l[0].dst, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK, r->io, &c);
	chain_close(c);
	if (err) {
		roll_back(in, r->io);
		return err;
	}
	return roll_forward(in, r->io); /* L5-L7 */
}

/* ---- plan ---------------------------------------------------------------------------- */

/* DISK's chain, top first, canonical paths; refused when a link is broken. */
static int load_chain(struct relocate *r, int d)
{
	const struct group_tree *t = r->g->t;
	unsigned bad = GROUP_TREE_BROKEN | GROUP_TREE_MISSING | GROUP_TREE_CAPACITY |
		       GROUP_TREE_UNREADABLE;

	for (int at = d; at >= 0; at = t->nodes[at].parent) {
		struct rl_layer *l = &r->l[r->n];
		if (r->n == CHAIN_MAX_DEPTH || (t->nodes[at].flags & bad)) {
			vd_err("%s: %s: relocate refused, nothing changed", t->nodes[at].path,
			       r->n == CHAIN_MAX_DEPTH ? "chain too deep"
						       : "its link to its parent is broken");
			return r->n == CHAIN_MAX_DEPTH ? -ELOOP : -ESTALE;
		}
		l->src = realpath(t->nodes[at].path, NULL);
		if (!l->src)
			return -errno;
		r->n++;
		l->file_bytes = t->nodes[at].file_bytes;
		/* below a busy layer, everything is reached through it */
		l->shared = group_busy(r->g, at) || (r->n > 1 && r->l[r->n - 2].shared);
	}
	return 0;
}

/* A file of a layer to copy: beside its descriptor, its name free in DIR. */
static int check_file(struct relocate *r, const char *layer, const char *file)
{
	char *ld = vd_dirname(layer), *fd = vd_dirname(file);
	char *dst = vd_path_join(r->dir, group_base_name(file));
	int err = ld && fd && dst ? 0 : -ENOMEM;

	if (!err && strcmp(ld, fd)) {
		vd_err("%s: extent file %s is not in the layer's folder: relocate "
		       "refused, nothing changed", layer, file);
		err = -ENOTSUP;
	} else if (!err && exists(dst)) {
		vd_err("%s: already exists and is not a copy of %s: relocate refused, "
		       "nothing changed", dst, layer);
		err = -EEXIST;
	}
	free(ld);
	free(fd);
	free(dst);
	return err;
}

static int check_copy(struct relocate *r, int i)
{
	char **files, *side;
	unsigned nr;
	int err = group_layer_files(r->l[i].src, &files, &nr);

	for (int j = 0; !err && j < i; j++)
		if (r->l[j].copy && !strcmp(r->l[j].dst, r->l[i].dst)) {
			vd_err("%s and %s: one name in %s: relocate refused, nothing changed",
			       r->l[j].src, r->l[i].src, r->dir);
			err = -EEXIST;
		}
	for (unsigned j = 0; !err && j < nr; j++)
		err = check_file(r, r->l[i].src, files[j]);
	vd_strv_free(files, nr);
	if (!err && asprintf(&side, "%s%s", r->l[i].dst, GROUP_CHILDREN_SUFFIX) >= 0) {
		err = check_file(r, r->l[i].dst, side);
		free(side);
	}
	return err;
}

/* A parent already: frozen, or with children of its own (an identical
 * layer a disk still writes is no parent to hang from). */
static bool a_parent(struct relocate *r, struct vmdk_disk *d, const char *path)
{
	int n = group_node(r->g, path);

	return chain_is_frozen(d) || (n >= 0 && r->g->t->nodes[n].nr_children);
}

/* share: the layer at l[i].dst is l[i] (same CID, content, runs), a parent
 * already below the top, and hangs from l[i+1].dst. */
static bool reattachable(struct relocate *r, int i)
{
	struct vmdk_disk *d = NULL;
	char *p = NULL;
	bool ok = !same_layer(r, r->l[i].src, r->l[i].dst) &&
		  !vmdk_open(r->l[i].dst, VMDK_OPEN_RDONLY, NULL, &d) &&
		  (i == 0 || a_parent(r, d, r->l[i].dst));

	if (ok && i + 1 == r->n)
		ok = !vmdk_parent_hint(d);
	else if (ok)
		ok = vmdk_parent_hint(d) &&
		     !chain_hint_find(r->l[i].dst, vmdk_parent_hint(d),
				      vmdk_desc_get(d, "ddb.nativeParentHint"), &p) &&
		     vd_same_file(p, r->l[i + 1].dst);
	vmdk_close(d);
	free(p);
	return ok;
}

/* Names in DIR, base first: the layers already there (the same file, or in
 * share mode an identical one) are used; above the first that is not,
 * every name must be free. */
static int choose(struct relocate *r)
{
	bool below = true;
	int err = 0;

	for (int i = r->n - 1; !err && i >= 0; i--) {
		struct rl_layer *l = &r->l[i];
		bool stays = r->mode == GROUP_RELOCATE_CHILD_MOST && i > 0;
		l->dst = stays ? strdup(l->src) : vd_path_join(r->dir, group_base_name(l->src));
		if (!l->dst)
			return -ENOMEM;
		l->copy = !stays && !(below && exists(l->dst) &&
				      (vd_same_file(l->src, l->dst) ||
				       (r->mode == GROUP_RELOCATE_SHARE && reattachable(r, i))));
		below = !l->copy;
		l->removed = !l->shared && !vd_same_file(l->src, l->dst);
	}
	for (int i = 0; !err && i < r->n; i++)
		if (r->l[i].copy)
			err = check_copy(r, i);
	return err;
}

/* What L3 of layer i may leave in DIR, its descriptor last. */
static int add_created(struct relocate *r, int i)
{
	struct relocate_rec *in = r->rec;
	char **files, *s;
	unsigned nr;
	int err = group_layer_files(r->l[i].src, &files, &nr);

	for (unsigned j = nr; !err && j-- > 0;) {
		char *tmp = tmp_path(r->dir, files[j]), *dst;
		dst = vd_path_join(r->dir, group_base_name(files[j]));
		err = tmp && dst ? vd_strv_add(&in->created, &in->nr_created, tmp) : -ENOMEM;
		if (!err && !j && asprintf(&s, "%s.vdelta-tmp", tmp) >= 0) {
			err = vd_strv_add(&in->created, &in->nr_created, s);
			free(s);
		}
		for (unsigned k = 0; !err && !j && k < 2; k++)
			if (asprintf(&s, "%s%s%s", r->l[i].dst, GROUP_CHILDREN_SUFFIX,
				     k ? "" : ".tmp") >= 0) {
				err = vd_strv_add(&in->created, &in->nr_created, s);
				free(s);
			}
		if (!err)
			err = vd_strv_add(&in->created, &in->nr_created, dst);
		free(tmp);
		free(dst);
	}
	vd_strv_free(files, nr);
	return err;
}

/* The record edits: the kept layer the new chain hangs from gains its
 * child (L2); the original the lowest moved layer hung from loses it (L6). */
static int record_edits(struct relocate *r)
{
	struct relocate_rec *in = r->rec;
	int b = 0, a = 0;

	while (b < r->n && r->l[b].removed)
		b++;
	while (a < r->n && r->l[a].copy)
		a++;
	if (b > 0 && b < r->n) {
		if (!(in->parent = strdup(r->l[b].src)))
			return -ENOMEM;
		if (vd_strv_add(&in->children, &in->nr_children, r->l[b - 1].src))
			return -ENOMEM;
	}
	if (a > 0 && a < r->n) {
		in->attach = strdup(r->l[a].dst);
		in->attach_child = strdup(r->l[a - 1].dst);
		if (!in->attach || !in->attach_child)
			return -ENOMEM;
	}
	return 0;
}

static int build_intent(struct relocate *r)
{
	struct group_intent *head;
	struct relocate_rec *in;
	int err = group_intent_new(&group_op_relocate, r->l[0].src, &head);

	if (err)
		return err;
	r->rec = in = (struct relocate_rec *)head;
	if (!(in->tmp = strdup(r->l[0].dst)))
		return -ENOMEM;
	for (int i = 0; !err && i < r->n; i++)
		if (r->l[i].removed && !(err = group_layer_add_files(&in->files, &in->nr_files,
								     r->l[i].src)))
			err = group_intent_add(&in->moved, &in->nr_moved, r->l[i].src);
	for (int i = r->n - 1; !err && i >= 0; i--)
		if (r->l[i].copy)
			err = add_created(r, i);
	return err ? err : record_edits(r);
}

static int build_plan(struct relocate *r)
{
	struct group_plan *p = r->plan;
	int err = 0;

	for (int i = 0; !err && i < r->n; i++) {
		struct rl_layer *l = &r->l[i];
		if (l->copy) {
			err = group_plan_add(p, GROUP_STEP_CREATE, l->dst, l->file_bytes);
			p->copy_bytes += l->file_bytes;
		} else
			err = group_plan_add(p, GROUP_STEP_KEEP, l->dst, 0);
	}
	for (int i = 0; !err && i < r->n; i++)
		if (r->l[i].removed)
			err = group_plan_add(p, GROUP_STEP_REMOVE, r->l[i].src, r->l[i].file_bytes);
	p->space_needed = p->copy_bytes;
	if (!err && !(p->result = strdup(r->l[0].dst)))
		err = -ENOMEM;
	return err ? err : group_plan_space(p, r->l[0].dst);
}

/* What moves and what is created: EXCL (the record's fields); the layers
 * that stay, and are read or hung from: READ, the layers in DIR the new
 * chain is reattached to included. */
static int relocate_lock(struct relocate *r, struct group_locks *locks)
{
	int err = group_intent_lock(&r->rec->in, locks);

	for (int i = 0; !err && i < r->n; i++) {
		const struct rl_layer *l = &r->l[i];
		if (!l->removed)
			err = group_lock_layer(locks, l->src, GROUP_LOCK_READ);
		if (!err && !l->copy && !vd_same_file(l->src, l->dst))
			err = group_lock_layer(locks, l->dst, GROUP_LOCK_READ);
	}
	return err;
}

static int check_disk(struct relocate *r, const char *disk, const char *dir, int *d)
{
	const struct group_tree *t = r->g->t;
	struct stat st;

	r->dir = realpath(dir, NULL);
	if (!r->dir || stat(r->dir, &st) || !S_ISDIR(st.st_mode)) {
		int err = r->dir ? -ENOTDIR : -errno;
		vd_err("%s: %s: relocate refused (the folder must exist)", dir,
		       strerror(-err));
		return err;
	}
	if ((*d = group_node(r->g, disk)) < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	if (t->nodes[*d].nr_children) {
		vd_err("%s: has children (a snapshot layer): relocate moves a disk by its "
		       "top layer", disk);
		return -EINVAL;
	}
	if (group_busy(r->g, *d))
		return group_refuse_busy(r->g, *d, "relocate");
	return 0;
}

int group_relocate(struct group *g, const char *disk, const char *dir,
		   enum group_relocate_mode mode, unsigned flags, const struct vd_io *io,
		   struct group_plan *plan)
{
	struct relocate r = { .g = g, .mode = mode, .plan = plan,
			      .io = io ? io : vd_io_posix() };
	struct group_locks locks = {0};
	int d = -1, err = check_disk(&r, disk, dir, &d);

	plan->op = "relocate";
	r.buf = malloc(GROUP_REWRITE_BUF);
	r.buf2 = malloc(GROUP_REWRITE_BUF);
	if (!err && (!r.buf || !r.buf2))
		err = -ENOMEM;
	if (!err)
		err = load_chain(&r, d);
	if (!err)
		err = choose(&r);
	if (!err && !r.l[0].copy && !r.l[0].removed) /* already there */
		plan->result = strdup(r.l[0].src);
	else if (!err)
		err = build_plan(&r);
	if (!err && plan->nr_steps)
		err = build_intent(&r);
	if (!err && plan->nr_steps && !(flags & GROUP_DRY_RUN))
		err = relocate_lock(&r, &locks);
	if (!err && plan->nr_steps && !(flags & GROUP_DRY_RUN))
		err = relocate_steps(&r);
	group_locks_release(&locks);
	rl_free(&r);
	return err;
}
