/* group — intent records of group operations (layer 3).
 *
 * Owns: the record TARGET GROUP_INTENT_SUFFIX that an operation writes
 * before its first change and removes after its last, and its text form:
 * comment lines, then one key=value a line: op=NAME, target=PATH,
 * version=2, then the operation's fields in the order of its row (struct
 * group_op: key, kind, place in the record, lock), a list field one line
 * per value, then id=DEV:INO:PATH for every file it would remove, and last checksum=X (XXH3-64, 16 hex
 * digits, of every byte before that line).  Paths are absolute.  A record
 * without a version line is one of the release before versions (no ids, no
 * checksum): it is read the same way and trusted less (group_trust.c).
 * This file knows no operation: it reads and writes the fields an
 * operation's row describes, and the table of rows (group_recover.c) says
 * which row a record's op= names.
 *
 * The life of a record (the state of one operation on disk):
 *
 *   NONE ──(1)──▶ WRITTEN ──(2)──▶ PUBLISHING ──(3)──▶ NONE
 *                    │                                  ▲
 *                    └──────────────(3)─────────────────┘
 *
 *  (1) group_intent_write: the operation has checked its plan and is about
 *      to make its first change; the record is written durably (common.h
 *      W1-W2: temp, fsync, rename, folder fsync).  From here a crash leaves
 *      the record for recovery, which finishes the operation or rolls it
 *      back through the row's resume function.
 *  (2) group_intent_write again, with the operation's own flag set (the
 *      staged swap's publish=1, chain of group_stage.c P1): the point from
 *      which recovery finishes instead of rolling back.  Operations whose
 *      steps are all idempotent forward (commit, pull, delete) have no
 *      PUBLISHING state: recovery always finishes them.
 *  (3) group_intent_done: after the operation's last step, the record and
 *      any temporary of it are removed and the folder fsynced.
 *
 * Reading (group_intent_read) refuses, with a message and -VD_EBADDATA,
 * a record without op and target, with an op no row has, or with a key
 * its row does not list: such a file is reported and left alone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "group_int.h"

#define RECORD_VERSION 2u

static void *field_at(const struct group_intent *in, size_t off)
{
	return (char *)in + off;
}

int group_intent_new(const struct group_op *op, const char *target,
		     struct group_intent **out)
{
	struct group_intent *in = calloc(1, op->size);

	if (!in)
		return -ENOMEM;
	in->op = op;
	in->target = strdup(target);
	if (!in->target || asprintf(&in->path, "%s%s", target, GROUP_INTENT_SUFFIX) < 0) {
		in->path = NULL;
		group_intent_free(in);
		return -ENOMEM;
	}
	*out = in;
	return 0;
}

int group_intent_add(char ***v, unsigned *n, const char *s)
{
	return vd_strv_add(v, n, s);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void put_field(FILE *m, const struct group_intent *in, const struct group_field *f)
{
	char **one = field_at(in, f->off);
	char ***list = field_at(in, f->off);

	switch (f->kind) {
	case GROUP_FIELD_TEXT:
	case GROUP_FIELD_LAYER:
		if (*one)
			fprintf(m, "%s=%s\n", f->key, *one);
		break;
	case GROUP_FIELD_FLAG:
		if (*(bool *)field_at(in, f->off))
			fprintf(m, "%s=1\n", f->key);
		break;
	case GROUP_FIELD_LAYERS:
	case GROUP_FIELD_FILES:
	case GROUP_FIELD_NEW_FILES:
		for (unsigned i = 0; i < *(unsigned *)field_at(in, f->nr_off); i++)
			fprintf(m, "%s=%s\n", f->key, (*list)[i]);
		break;
	}
}

static void put_id(FILE *m, const char *path)
{
	struct stat st;

	if (!stat(path, &st))
		fprintf(m, "id=%llu:%llu:%s\n", (unsigned long long)st.st_dev,
			(unsigned long long)st.st_ino, path);
}

/* The identity of every file the record would remove (descriptors of
 * layers it only rewrites may change inode, so they carry none). */
static void put_ids(FILE *m, const struct group_intent *in)
{
	for (unsigned i = 0; i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **list = *(char ***)field_at(in, f->off);
		for (unsigned k = 0; f->kind == GROUP_FIELD_FILES &&
				     k < *(unsigned *)field_at(in, f->nr_off); k++)
			put_id(m, list[k]);
	}
}

/* Every folder the operation removes files from or makes files in takes
 * the change: a removal refused halfway would leave the record stuck. */
static int check_folders(const struct group_intent *in)
{
	for (unsigned i = 0; i < in->op->nr_fields; i++) {
		const struct group_field *f = &in->op->fields[i];
		char **list = *(char ***)field_at(in, f->off);
		unsigned nr = f->kind == GROUP_FIELD_FILES || f->kind == GROUP_FIELD_NEW_FILES
				      ? *(unsigned *)field_at(in, f->nr_off) : 0;
		for (unsigned k = 0; k < nr; k++) {
			char *d = vd_dirname(list[k]);
			int err = !d ? -ENOMEM : access(d, W_OK | X_OK) ? -errno : 0;
			if (err == -ENOENT) /* made by the operation (a staging folder) */
				err = 0;
			if (err && err != -ENOMEM)
				vd_err("%s: folder of %s: %s: %s refused, nothing changed", d,
				       list[k], strerror(-err), in->op->name);
			free(d);
			if (err)
				return err;
		}
	}
	return 0;
}

int group_intent_write(const struct group_intent *in, const struct vd_io *io)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m;
	int err = check_folders(in);

	if (err)
		return err;
	if (!(m = open_memstream(&text, &len)))
		return -ENOMEM;
	fprintf(m, "# vdelta: an operation in progress; a vdelta command that changes\n"
		   "# this group finishes it (`vdelta recover`; do not edit by hand)\n");
	fprintf(m, "op=%s\ntarget=%s\nversion=%u\n", in->op->name, in->target,
		RECORD_VERSION);
	for (unsigned i = 0; i < in->op->nr_fields; i++)
		put_field(m, in, &in->op->fields[i]);
	put_ids(m, in);
	fflush(m);
	fprintf(m, "checksum=%016llx\n", (unsigned long long)XXH3_64bits(text, len));
	fclose(m);
	err = text ? vd_write_durable(io, in->path, text, len) : -ENOMEM; /* (1), (2) */
	if (err)
		vd_err("%s: cannot write the intent record: %s", in->path, strerror(-err));
	free(text);
	return err;
}

/* ---- reading ------------------------------------------------------------------------------ */

static const struct group_field *find_field(const struct group_op *op, const char *key)
{
	for (unsigned i = 0; i < op->nr_fields; i++)
		if (!strcmp(op->fields[i].key, key))
			return &op->fields[i];
	return NULL;
}

static int set_field(struct group_intent *in, const struct group_field *f, const char *val)
{
	char **one = field_at(in, f->off);

	switch (f->kind) {
	case GROUP_FIELD_TEXT:
	case GROUP_FIELD_LAYER:
		free(*one);
		return (*one = strdup(val)) ? 0 : -ENOMEM;
	case GROUP_FIELD_FLAG:
		*(bool *)field_at(in, f->off) = !strcmp(val, "1");
		return 0;
	default:
		return vd_strv_add(field_at(in, f->off), field_at(in, f->nr_off), val);
	}
}

/* One line; op and target were taken by find_op. */
static int read_line(struct group_intent *in, char *line)
{
	char *eq = strchr(line, '=');
	const struct group_field *f;

	if (line[0] == '#' || !line[0])
		return 0;
	if (!eq)
		return -VD_EBADDATA;
	*eq++ = 0;
	if (!strcmp(line, "op") || !strcmp(line, "target") || !strcmp(line, "checksum"))
		return 0;
	if (!strcmp(line, "version"))
		return (in->version = (unsigned)strtoul(eq, NULL, 10)) == RECORD_VERSION
		       ? 0 : -EPROTO;
	if (!strcmp(line, "id"))
		return vd_strv_add(&in->ids, &in->nr_ids, eq);
	f = find_field(in->op, line);
	return f ? set_field(in, f, eq) : -VD_EBADDATA;
}

/* The value of the first line `key=` in text (a copy), or NULL. */
static char *find_value(const char *text, const char *key)
{
	size_t k = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, key, k) && l[k] == '=')
			return strndup(l + k + 1, strcspn(l + k + 1, "\n"));
	return NULL;
}

static int new_from_text(const char *text, const struct group_op *const *ops,
			 unsigned nr_ops, struct group_intent **out)
{
	char *op = find_value(text, "op"), *target = find_value(text, "target");
	int err = op && target ? -VD_EBADDATA : -ENOENT;

	for (unsigned i = 0; op && target && i < nr_ops; i++)
		if (!strcmp(ops[i]->name, op))
			err = group_intent_new(ops[i], target, out);
	free(op);
	free(target);
	return err;
}

/* A record with a version line ends with the checksum of what precedes it. */
static int check_sum(const char *path, const char *text)
{
	const char *last = strstr(text, "\nchecksum=");
	unsigned long long want;

	if (!strstr(text, "\nversion="))
		return 0; /* the release before versions wrote none */
	if (!last || sscanf(last + 10, "%16llx", &want) != 1 ||
	    strchr(last + 1, '\n') != last + 26 || last[27] ||
	    XXH3_64bits(text, (size_t)(last + 1 - text)) != want) {
		vd_err("%s: its checksum does not match its text (a torn, truncated or "
		       "edited record): left as is", path);
		return -VD_EBADDATA;
	}
	return 0;
}

int group_intent_read(const char *path, const struct group_op *const *ops,
		      unsigned nr_ops, struct group_intent **out)
{
	struct group_intent *in = NULL;
	char *text = NULL, *save, *line;
	int err = vd_read_small(path, GROUP_MAX_RECORD, &text);

	if (err) {
		vd_err("%s: cannot read the intent record: %s", path,
		       err == -EFBIG ? "larger than a vdelta record" : strerror(-err));
		return err == -EFBIG ? -VD_EBADDATA : err;
	}
	if ((err = check_sum(path, text))) {
		free(text);
		return err;
	}
	err = new_from_text(text, ops, nr_ops, &in);
	if (!err) {
		free(in->path);
		err = (in->path = strdup(path)) ? 0 : -ENOMEM;
	}
	for (line = strtok_r(text, "\n", &save); !err && line;
	     line = strtok_r(NULL, "\n", &save))
		err = read_line(in, line);
	if (err == -VD_EBADDATA || err == -ENOENT)
		vd_err("%s: not a valid intent record (op, target and the operation's "
		       "key=value lines expected): left as is", path);
	if (err == -EPROTO)
		vd_err("%s: record version is not %u (a newer vdelta wrote it): left as is",
		       path, RECORD_VERSION);
	free(text);
	if (err) {
		group_intent_free(in);
		return err == -ENOENT || err == -EPROTO ? -VD_EBADDATA : err;
	}
	*out = in;
	return 0;
}

/* ---- locks --------------------------------------------------------------------------------- */

static int lock_field(const struct group_intent *in, const struct group_field *f,
		      struct group_locks *l)
{
	char **one = field_at(in, f->off), **list = *(char ***)field_at(in, f->off);
	unsigned nr = f->nr_off ? *(unsigned *)field_at(in, f->nr_off) : 0;
	int err = 0;

	switch (f->kind) {
	case GROUP_FIELD_LAYER:
		return *one ? group_lock_layer(l, *one, f->lock) : 0;
	case GROUP_FIELD_LAYERS:
		for (unsigned i = 0; !err && i < nr; i++)
			err = group_lock_layer(l, list[i], f->lock);
		return err;
	case GROUP_FIELD_FILES:
	case GROUP_FIELD_NEW_FILES:
		for (unsigned i = 0; !err && i < nr; i++)
			err = group_lock_file(l, list[i], f->lock);
		return err;
	default:
		return 0;
	}
}

int group_intent_lock(const struct group_intent *in, struct group_locks *l)
{
	int err = group_lock_layer(l, in->target, GROUP_LOCK_EXCL);

	for (unsigned i = 0; !err && i < in->op->nr_fields; i++)
		err = lock_field(in, &in->op->fields[i], l);
	return err;
}

/* ---- what a record names ---------------------------------------------------------------- */

static bool field_names(const struct group_intent *in, const struct group_field *f,
			group_intent_match_fn *match, void *opaque)
{
	char **one = field_at(in, f->off), **list = *(char ***)field_at(in, f->off);
	unsigned nr = f->nr_off ? *(unsigned *)field_at(in, f->nr_off) : 0;

	if (f->kind == GROUP_FIELD_LAYER)
		return *one && match(*one, opaque);
	if (f->kind == GROUP_FIELD_TEXT || f->kind == GROUP_FIELD_FLAG)
		return false;
	for (unsigned i = 0; i < nr; i++)
		if (match(list[i], opaque))
			return true;
	return false;
}

bool group_intent_names(const struct group_intent *in, group_intent_match_fn *match,
			void *opaque)
{
	if (match(in->target, opaque))
		return true;
	for (unsigned i = 0; i < in->op->nr_fields; i++)
		if (field_names(in, &in->op->fields[i], match, opaque))
			return true;
	return false;
}

/* ---- end ------------------------------------------------------------------------------------ */

static void free_field(struct group_intent *in, const struct group_field *f)
{
	if (f->kind == GROUP_FIELD_TEXT || f->kind == GROUP_FIELD_LAYER)
		free(*(char **)field_at(in, f->off));
	else if (f->kind != GROUP_FIELD_FLAG)
		vd_strv_free(*(char ***)field_at(in, f->off),
			     *(unsigned *)field_at(in, f->nr_off));
}

void group_intent_free(struct group_intent *in)
{
	if (!in)
		return;
	for (unsigned i = 0; i < in->op->nr_fields; i++)
		free_field(in, &in->op->fields[i]);
	vd_strv_free(in->ids, in->nr_ids);
	free(in->path);
	free(in->target);
	free(in);
}

int group_intent_done(const struct group_intent *in, const struct vd_io *io)
{
	char *tmp;
	int err = group_layer_unlink(in->path, io); /* (3) */

	if (!err && asprintf(&tmp, "%s.tmp", in->path) >= 0) {
		err = group_layer_unlink(tmp, io);
		free(tmp);
	}
	return err ? err : io->sync_dir(io, in->path);
}
