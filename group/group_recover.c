/* group — recovery of interrupted operations at the front door (layer 3).
 *
 * Owns: the table of operation kinds (GROUP_OPS in group_int.h: one row
 * per operation, defined in the operation's own file), the recovery of one
 * intent record through its row's resume function, finding the records
 * beside a disk's layers, and the front door of the group commands
 * (group_load: recovery, then the scan).  Nothing here knows an operation
 * by name: a record's op= picks its row.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "group_int.h"

#define GROUP_OP_REF(n) &group_op_##n,
static const struct group_op *const ops[] = {GROUP_OPS(GROUP_OP_REF)};
#define NR_OPS (sizeof ops / sizeof ops[0])

int group_recover(const char *intent_path, unsigned flags, const struct vd_io *io)
{
	struct group_locks locks = {0};
	struct group_intent *in;
	int err;

	io = io ? io : vd_io_posix();
	if (access(intent_path, F_OK) && errno == ENOENT)
		return 0; /* a twin record's recovery (relocate) removed it */
	if ((err = group_intent_read(intent_path, ops, NR_OPS, &in)))
		return err;
	err = group_trust_record(in);
	if (!err && !(flags & GROUP_RECOVER_FINISH))
		vd_warn("%s: an interrupted %s of %s; `vdelta recover %s` finishes it",
			intent_path, in->op->name, in->target, in->target);
	if (!err && (flags & GROUP_RECOVER_FINISH)) /* as the operation held them */
		err = group_intent_lock(in, &locks);
	if (!err && (flags & GROUP_RECOVER_FINISH)) {
		vd_warn("%s: finishing an interrupted %s of %s", intent_path,
			in->op->name, in->target);
		err = in->op->resume(in, io);
	}
	group_locks_release(&locks);
	group_intent_free(in);
	return err;
}

/* A record's or a sidecar's (children, digest) temporary left by a crash
 * before its rename. */
static bool stale_temp(const char *name)
{
	size_t n = strlen(name), t = strlen(".tmp");
	size_t a = strlen(GROUP_INTENT_SUFFIX), b = strlen(GROUP_CHILDREN_SUFFIX);
	size_t c = strlen(GROUP_DIGEST_SUFFIX);

	if (n <= t || strcmp(name + n - t, ".tmp"))
		return false;
	n -= t;
	return (n > a && !strncmp(name + n - a, GROUP_INTENT_SUFFIX, a)) ||
	       (n > b && !strncmp(name + n - b, GROUP_CHILDREN_SUFFIX, b)) ||
	       (n > c && !strncmp(name + n - c, GROUP_DIGEST_SUFFIX, c));
}

/* ---- records beside a disk --------------------------------------------------------------- */

/* Folders swept and found holding no record and no temporary of one, by
 * identity and modification time: a record made there since changes the
 * time, so a server opening many disks of one folder reads it once.  Only
 * a folder last changed SWEPT_SETTLE_NS before the sweep is kept (a change
 * in the same tick of a coarse file-system clock must not look old). */
#define SWEPT_MAX 64u
#define SWEPT_SETTLE_NS 50000000LL
static struct swept {
	dev_t dev;
	ino_t ino;
	struct timespec mtime;
	bool clean; /* swept with stale temporaries removed */
} swept[SWEPT_MAX];
static unsigned swept_next;
static pthread_mutex_t swept_lock = PTHREAD_MUTEX_INITIALIZER;

static bool swept_same(const struct swept *w, const struct stat *st)
{
	return w->dev == st->st_dev && w->ino == st->st_ino &&
	       w->mtime.tv_sec == st->st_mtim.tv_sec && w->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

static bool swept_hit(const struct stat *st, bool clean)
{
	bool hit = false;

	pthread_mutex_lock(&swept_lock);
	for (unsigned i = 0; i < SWEPT_MAX && !hit; i++)
		hit = swept_same(&swept[i], st) && (swept[i].clean || !clean);
	pthread_mutex_unlock(&swept_lock);
	return hit;
}

static void swept_put(const struct stat *st, const struct timespec *at, bool clean)
{
	long long age = (at->tv_sec - st->st_mtim.tv_sec) * 1000000000LL +
			(at->tv_nsec - st->st_mtim.tv_nsec);

	if (age < SWEPT_SETTLE_NS)
		return;
	pthread_mutex_lock(&swept_lock);
	swept[swept_next++ % SWEPT_MAX] = (struct swept){ st->st_dev, st->st_ino,
							  st->st_mtim, clean };
	pthread_mutex_unlock(&swept_lock);
}

/* The intent records in dir (not recursed; hidden entries skipped); with
 * clean, the stale temporaries of records are removed. */
static int intents_in(const char *dir, bool clean, char ***out, unsigned *nr)
{
	size_t k = strlen(GROUP_INTENT_SUFFIX);
	struct timespec at;
	struct stat st;
	struct dirent *e;
	bool any = false;
	int err = 0;
	DIR *d;

	clock_gettime(CLOCK_REALTIME, &at);
	if (stat(dir, &st) || swept_hit(&st, clean) || !(d = opendir(dir)))
		return 0; /* nothing to recover there, or nothing since the last look */
	while (!err && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		bool rec = n > k && !strcmp(e->d_name + n - k, GROUP_INTENT_SUFFIX);
		bool tmp = !rec && stale_temp(e->d_name);
		if (e->d_name[0] == '.' || (!rec && !tmp))
			continue;
		any = true;
		if (!rec && !clean)
			continue;
		char *p = vd_path_join(dir, e->d_name);
		err = !p ? -ENOMEM : rec ? vd_strv_add(out, nr, p)
				    : vd_remove_stale_temp(vd_io_posix(), p);
		free(p);
	}
	closedir(d);
	if (!err && !any)
		swept_put(&st, &at, clean);
	return err;
}

/* What lies near a disk: its folder, then the folder of every layer its
 * chain names, and those layers (the links' CIDs not checked: an
 * interrupted commit leaves one stale). */
struct near {
	char **dirs, **layers;
	unsigned nr_dirs, nr_layers;
};

static void near_free(struct near *n)
{
	vd_strv_free(n->dirs, n->nr_dirs);
	vd_strv_free(n->layers, n->nr_layers);
}

static int near_add_dir(struct near *n, const char *layer)
{
	char *d = vd_dirname(layer);
	bool seen = false;
	int err;

	for (unsigned j = 0; d && j < n->nr_dirs; j++)
		seen |= vd_same_file(n->dirs[j], d);
	err = !d ? -ENOMEM : seen ? 0 : vd_strv_add(&n->dirs, &n->nr_dirs, d);
	free(d);
	return err;
}

/* The layers are found by their descriptors' parent hints alone (a
 * broken link, a missing or unreadable layer: the walk stops there). */
static int near_find(const char *path, struct near *n)
{
	char *at = strdup(path), *next = NULL;
	int err = at ? 0 : -ENOMEM;

	for (unsigned k = 0; !err && at && k < CHAIN_MAX_DEPTH; k++) {
		struct vmdk_disk *d = NULL;
		err = near_add_dir(n, at);
		if (!err)
			err = vd_strv_add(&n->layers, &n->nr_layers, at);
		if (!err && !vmdk_open(at, VMDK_OPEN_DESC_ONLY, NULL, &d) && vmdk_parent_hint(d))
			chain_hint_find(at, vmdk_parent_hint(d),
					vmdk_desc_get(d, "ddb.nativeParentHint"), &next);
		vmdk_close(d);
		free(at);
		at = next;
		next = NULL;
	}
	free(at);
	return err;
}

/* The records near path; opening its chain is silent (a file that is not
 * a VMDK, or a broken chain, just yields fewer folders). */
static int intents_near(const char *path, bool clean, struct near *n, char ***out,
			unsigned *nr)
{
	int err;

	vd_log_mute(true);
	err = near_find(path, n);
	vd_log_mute(false);
	*out = NULL;
	*nr = 0;
	for (unsigned i = 0; !err && i < n->nr_dirs; i++)
		err = intents_in(n->dirs[i], clean, out, nr);
	if (err) {
		vd_strv_free(*out, *nr);
		*out = NULL;
		*nr = 0;
	}
	return err;
}

static bool is_near_layer(const char *path, void *opaque)
{
	const struct near *n = opaque;

	for (unsigned i = 0; i < n->nr_layers; i++)
		if (!strcmp(n->layers[i], path) || vd_same_file(n->layers[i], path))
			return true;
	return false;
}

/* Does a record recovery refused name a layer of the disk's chain (by its
 * own name, TARGET GROUP_INTENT_SUFFIX, when it cannot be read)? */
static bool record_touches(const char *record, struct near *n)
{
	size_t len = strlen(record) - strlen(GROUP_INTENT_SUFFIX);
	char *stem = strndup(record, len);
	struct group_intent *in = NULL;
	bool hit = !stem || is_near_layer(stem, n);

	free(stem);
	vd_log_mute(true);
	if (!hit && !group_intent_read(record, ops, NR_OPS, &in))
		hit = group_intent_names(in, is_near_layer, n);
	vd_log_mute(false);
	group_intent_free(in);
	return hit;
}

int group_recover_near(const char *path, unsigned flags, const struct vd_io *io,
		       unsigned *nr_found)
{
	struct near n = {0};
	char **recs;
	unsigned nr;
	int err = intents_near(path, flags & GROUP_RECOVER_FINISH, &n, &recs, &nr), first = 0;

	for (unsigned i = 0; !err && i < nr; i++) {
		int e = 0;
		if (!access(recs[i], F_OK)) /* one recovery may have ended another */
			e = group_recover(recs[i], flags, io);
		if ((e == -VD_EBADDATA || e == -EPERM) && !(flags & GROUP_RECOVER_STRICT) &&
		    !record_touches(recs[i], &n)) {
			vd_warn("%s: names no layer of %s: left alone, %s opened", recs[i],
				path, path);
			e = 0;
		}
		first = first ? first : e;
	}
	if (nr_found)
		*nr_found = nr;
	vd_strv_free(recs, nr);
	near_free(&n);
	return err ? err : first;
}

/* ---- the front door of the group commands ----------------------------------------------------- */

struct in_group {
	const struct group_tree *t;
	int root;
};

static bool is_group_layer(const char *path, void *opaque)
{
	const struct in_group *ig = opaque;
	int node = group_tree_find(ig->t, path);

	return node >= 0 && ig->t->nodes[node].root == ig->root;
}

/* Does the record name a layer of the group (its own, once gone, need not
 * be: a delete stopped after removing the top names the layers below)? */
static bool names_group_layer(const struct group_tree *t, int root, const char *record)
{
	struct in_group ig = { t, root };
	struct group_intent *in = NULL;
	bool hit;

	vd_log_mute(true);
	hit = !group_intent_read(record, ops, NR_OPS, &in) &&
	      group_intent_names(in, is_group_layer, &ig);
	vd_log_mute(false);
	group_intent_free(in);
	return hit;
}

/* Does the record lie in the folder of a layer of disk's group, or name
 * one (every record, without a disk: the folders were named)?  A record
 * beside a layer of the group names it (TARGET GROUP_INTENT_SUFFIX): one
 * look-up; any other (its layer gone, a twin) is compared with the folder
 * of each layer of the group, then read. */
static bool of_group(const struct group_tree *t, int root, const char *record)
{
	size_t n = strlen(record), k = strlen(GROUP_INTENT_SUFFIX);
	char *target = n > k ? strndup(record, n - k) : NULL, *rd = vd_dirname(record);
	int node = target ? group_tree_find(t, target) : -1;
	bool found = root < 0 || (node >= 0 && t->nodes[node].root == root);
	struct stat rs, ds;
	unsigned steps = 0;

	if (!found && rd && !stat(rd, &rs))
		for (int i = root; !found && i >= 0 && steps++ <= t->nr_nodes;
		     i = group_tree_next(t, root, i)) {
			char *d = vd_dirname(t->nodes[i].path);
			found = d && !stat(d, &ds) && ds.st_dev == rs.st_dev &&
				ds.st_ino == rs.st_ino;
			free(d);
		}
	free(target);
	free(rd);
	return found || names_group_layer(t, root, record);
}

/* Does the record belong to the group of one of the disks (every record,
 * without disks: the folders were named)? */
static bool of_groups(const struct group *g, char *const *disks, unsigned nr,
		      const char *record)
{
	const struct group_tree *t = group_nodes(g);
	bool found = !nr;

	for (unsigned i = 0; !found && i < nr; i++) {
		int node = group_node(g, disks[i]);
		found = node >= 0 && of_group(t, t->nodes[node].root, record);
	}
	return found;
}

/* Recover the records of the scan that belong to the disks' groups
 * (another group's interrupted operation is not this command's); the scan
 * is redone when there was one. */
static int recover_scanned(char *const *disks, unsigned nr, char *const *extra,
			   unsigned nr_extra, unsigned rflags, const struct vd_io *io,
			   struct group **g)
{
	const struct group_tree *t = group_nodes(*g);
	unsigned done = 0;
	int err = 0;

	for (unsigned i = 0; i < nr; i++)
		if (group_node(*g, disks[i]) < 0)
			return 0; /* reported by the operation */
	for (unsigned i = 0; !err && i < t->nr_intents; i++)
		if (of_groups(*g, disks, nr, t->intents[i]) && !access(t->intents[i], F_OK)) {
			err = group_recover(t->intents[i], rflags, io);
			done++;
		}
	if (err || !done || !(rflags & GROUP_RECOVER_FINISH))
		return err;
	group_free(*g);
	*g = NULL;
	return group_scan_disks(disks, nr, extra, nr_extra, g);
}

int group_load_disks(char *const *disks, unsigned nr_disks, char *const *extra,
		     unsigned nr_extra, unsigned flags, const struct vd_io *io,
		     struct group **out)
{
	unsigned rflags = flags & GROUP_DRY_RUN ? 0 : GROUP_RECOVER_FINISH;
	struct group *g = NULL;
	int err = 0;

	io = io ? io : vd_io_posix();
	for (unsigned i = 0; !err && i < nr_disks; i++)
		err = group_recover_near(disks[i], rflags, io, NULL);
	if (!err)
		err = group_scan_disks(disks, nr_disks, extra, nr_extra, &g);
	if (!err)
		err = recover_scanned(disks, nr_disks, extra, nr_extra, rflags, io, &g);
	if (err) {
		group_free(g);
		return err;
	}
	*out = g;
	return 0;
}

int group_load(const char *disk, char *const *extra, unsigned nr_extra, unsigned flags,
	       const struct vd_io *io, struct group **out)
{
	char *const one[1] = { (char *)disk };

	return group_load_disks(one, disk ? 1 : 0, extra, nr_extra, flags, io, out);
}
