/* chain — intent records of group operations, and recovery (layer 2).
 *
 * Owns: the record TARGET CHAIN_INTENT_SUFFIX that a group operation writes
 * (durably, sidecar order S1-S2 of chain_group.c) before its first change
 * and removes after its last, its text form (one key=value a line: op,
 * target, parent, grandparent, cid, long_cid, tmp, unfreeze, publish,
 * attach, attach_child, child=..., file=..., created=...; absolute paths),
 * chain_group_recover, which hands a record to the operation that wrote it
 * to finish (commit, pull, delete; revert, repair and promote once their
 * publish has begun) or roll back (revert, repair, promote before it) its
 * steps (relocate finishes or rolls back: see chain_relocate.c), and
 * chain_group_intents_near, which finds the records beside a disk's layers
 * for any command.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "chain_int.h"

void strv_free(char **v, unsigned n)
{
	for (unsigned i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

int strv_add(char ***v, unsigned *n, const char *s)
{
	char **nv;

	if (*n >= GROUP_MAX_LIST)
		return -E2BIG;
	nv = reallocarray(*v, *n + 1, sizeof *nv);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

int layer_files(const char *path, char ***files, unsigned *nr)
{
	struct vmdk_disk *d = NULL;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);

	*files = NULL;
	*nr = 0;
	for (unsigned i = 0; !err && i < vmdk_nr_files(d); i++)
		err = strv_add(files, nr, vmdk_file_path(d, i));
	if (d)
		vmdk_close(d);
	return err;
}

/* An intent record for op on path with a hidden staging folder beside it
 * (.NAME.vdelta-OP, chain_stage.c). */
int intent_init_tmp(const char *path, const char *op, struct group_intent *in)
{
	char *dir = vd_dirname(path), *name = NULL;
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

	memset(in, 0, sizeof *in);
	in->op = strdup(op);
	in->target = strdup(path);
	if (dir && asprintf(&name, ".%s.vdelta-%s", base, op) >= 0)
		in->tmp = vd_path_join(dir, name);
	if (asprintf(&in->path, "%s%s", path, CHAIN_INTENT_SUFFIX) < 0)
		in->path = NULL;
	free(name);
	free(dir);
	return in->op && in->target && in->tmp && in->path ? 0 : -ENOMEM;
}

static void put(FILE *m, const char *key, const char *val)
{
	if (val)
		fprintf(m, "%s=%s\n", key, val);
}

int intent_write(const struct group_intent *in, const struct vd_io *io)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	int err;

	if (!m)
		return -ENOMEM;
	fprintf(m, "# vdelta: an operation in progress; the next vdelta command on\n"
		   "# this group finishes it (do not remove by hand)\n");
	put(m, "op", in->op);
	put(m, "target", in->target);
	put(m, "parent", in->parent);
	put(m, "grandparent", in->grandparent);
	put(m, "cid", in->cid);
	put(m, "long_cid", in->long_cid);
	put(m, "tmp", in->tmp);
	put(m, "unfreeze", in->unfreeze ? "1" : NULL);
	put(m, "publish", in->publish ? "1" : NULL);
	for (unsigned i = 0; i < in->nr_children; i++)
		put(m, "child", in->children[i]);
	for (unsigned i = 0; i < in->nr_files; i++)
		put(m, "file", in->files[i]);
	put(m, "attach", in->attach);
	put(m, "attach_child", in->attach_child);
	for (unsigned i = 0; i < in->nr_created; i++)
		put(m, "created", in->created[i]);
	fclose(m);
	err = text ? group_write_file(in->path, text, len, io) : -ENOMEM;
	free(text);
	return err;
}

static int set_str(char **dst, const char *val)
{
	free(*dst);
	return (*dst = strdup(val)) ? 0 : -ENOMEM;
}

static int intent_line(struct group_intent *in, char *line)
{
	char *eq = strchr(line, '=');

	if (line[0] == '#' || !line[0])
		return 0;
	if (!eq)
		return -VD_EBADDATA;
	*eq++ = 0;
	if (!strcmp(line, "op"))
		return set_str(&in->op, eq);
	if (!strcmp(line, "target"))
		return set_str(&in->target, eq);
	if (!strcmp(line, "parent"))
		return set_str(&in->parent, eq);
	if (!strcmp(line, "grandparent"))
		return set_str(&in->grandparent, eq);
	if (!strcmp(line, "cid"))
		return set_str(&in->cid, eq);
	if (!strcmp(line, "long_cid"))
		return set_str(&in->long_cid, eq);
	if (!strcmp(line, "tmp"))
		return set_str(&in->tmp, eq);
	if (!strcmp(line, "unfreeze"))
		return (in->unfreeze = !strcmp(eq, "1")), 0;
	if (!strcmp(line, "publish"))
		return (in->publish = !strcmp(eq, "1")), 0;
	if (!strcmp(line, "child"))
		return strv_add(&in->children, &in->nr_children, eq);
	if (!strcmp(line, "file"))
		return strv_add(&in->files, &in->nr_files, eq);
	if (!strcmp(line, "attach"))
		return set_str(&in->attach, eq);
	if (!strcmp(line, "attach_child"))
		return set_str(&in->attach_child, eq);
	if (!strcmp(line, "created"))
		return strv_add(&in->created, &in->nr_created, eq);
	return -VD_EBADDATA;
}

int intent_read(const char *path, struct group_intent *in)
{
	char *text, *save, *line;
	int err = group_read_file(path, &text);

	memset(in, 0, sizeof *in);
	if (err) {
		vd_err("%s: cannot read the intent record: %s", path, strerror(-err));
		return err;
	}
	in->path = strdup(path);
	err = in->path ? 0 : -ENOMEM;
	for (line = strtok_r(text, "\n", &save); !err && line;
	     line = strtok_r(NULL, "\n", &save))
		err = intent_line(in, line);
	if (!err && (!in->op || !in->target))
		err = -VD_EBADDATA;
	if (err == -VD_EBADDATA)
		vd_err("%s: not a valid intent record (op, target and key=value lines "
		       "expected): left as is", path);
	free(text);
	if (err)
		intent_free(in);
	return err;
}

void intent_free(struct group_intent *in)
{
	free(in->path);
	free(in->op);
	free(in->target);
	free(in->parent);
	free(in->tmp);
	free(in->grandparent);
	free(in->cid);
	free(in->long_cid);
	strv_free(in->children, in->nr_children);
	strv_free(in->files, in->nr_files);
	strv_free(in->created, in->nr_created);
	free(in->attach);
	free(in->attach_child);
	memset(in, 0, sizeof *in);
}

/* The last step of every operation: the record goes. */
int intent_done(const struct group_intent *in, const struct vd_io *io)
{
	int err = group_unlink(in->path, io);

	return err ? err : io->sync_dir(io, in->path);
}

int chain_group_recover(const char *intent_path, const struct vd_io *io)
{
	struct group_intent in;
	int err;

	io = io ? io : vd_io_posix();
	if (access(intent_path, F_OK) && errno == ENOENT)
		return 0; /* a twin record's recovery (relocate) removed it */
	if ((err = intent_read(intent_path, &in)))
		return err;
	vd_warn("%s: finishing an interrupted %s of %s", intent_path, in.op, in.target);
	if (!strcmp(in.op, "commit"))
		err = commit_resume(&in, io);
	else if (!strcmp(in.op, "pull"))
		err = pull_resume(&in, io);
	else if (!strcmp(in.op, "delete"))
		err = delete_resume(&in, io);
	else if (!strcmp(in.op, "relocate"))
		err = relocate_resume(&in, io);
	else if (!strcmp(in.op, "revert") || !strcmp(in.op, "repair") ||
		 !strcmp(in.op, "promote"))
		err = stage_resume(&in, io); /* discard, or finish a publish */
	else {
		vd_err("%s: unknown operation '%s': left as is", intent_path, in.op);
		err = -VD_EBADDATA;
	}
	intent_free(&in);
	return err;
}

/* ---- records beside a disk ------------------------------------------------------------ */

/* The intent records in dir (not recursed; hidden entries skipped). */
static int intents_in(const char *dir, char ***out, unsigned *nr)
{
	size_t k = strlen(CHAIN_INTENT_SUFFIX);
	DIR *d = opendir(dir);
	struct dirent *e;
	int err = 0;

	if (!d)
		return 0; /* nothing to recover there */
	while (!err && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (e->d_name[0] == '.' || n <= k || strcmp(e->d_name + n - k, CHAIN_INTENT_SUFFIX))
			continue;
		char *p = vd_path_join(dir, e->d_name);
		err = p ? strv_add(out, nr, p) : -ENOMEM;
		free(p);
	}
	closedir(d);
	return err;
}

/* Add the folder of file (malloc'd d, freed) to dirs unless there. */
static int dir_add(char ***dirs, unsigned *nr, char *d)
{
	bool seen = false;
	int err;

	for (unsigned j = 0; d && j < *nr && !seen; j++)
		seen = same_file((*dirs)[j], d);
	err = !d ? -ENOMEM : seen ? 0 : strv_add(dirs, nr, d);
	free(d);
	return err;
}

/* path's folder, then the folder of every layer its chain names (the
 * links' CIDs not checked: an interrupted commit leaves one stale), each
 * added to dirs once. */
static int near_dirs(const char *path, char ***dirs, unsigned *nr)
{
	struct chain *c = NULL;
	int err = dir_add(dirs, nr, vd_dirname(path));

	if (err || chain_open(path, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK |
			      CHAIN_OPEN_DIRTY_OK | CHAIN_OPEN_IGNORE_CID, NULL, &c))
		return err;
	for (unsigned i = 1; !err && i < chain_depth(c); i++)
		err = dir_add(dirs, nr, vd_dirname(vmdk_path(chain_layer(c, i))));
	chain_close(c);
	return err;
}

int chain_group_intents_near(const char *path, char ***out, unsigned *nr)
{
	return chain_group_intents_near_all(&path, 1, out, nr);
}

/* Every folder is read once, however many of the disks it holds layers of
 * (a mount of a thousand clones in one folder reads it once, not a
 * thousand times). */
int chain_group_intents_near_all(const char *const *paths, unsigned nr_paths,
				 char ***out, unsigned *nr)
{
	char **dirs = NULL;
	unsigned nr_dirs = 0;
	int err = 0;

	*out = NULL;
	*nr = 0;
	for (unsigned i = 0; !err && i < nr_paths; i++)
		err = near_dirs(paths[i], &dirs, &nr_dirs);
	for (unsigned i = 0; !err && i < nr_dirs; i++)
		err = intents_in(dirs[i], out, nr);
	strv_free(dirs, nr_dirs);
	if (err) {
		strv_free(*out, *nr);
		*out = NULL;
		*nr = 0;
	}
	return err;
}
