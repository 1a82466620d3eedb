/* rbd — the staging folder of an import, and its publish (layer 4).
 *
 * Owns the write order that keeps half-made layers away from final names:
 *  I1. every layer is made, flushed and verified in the hidden folder
 *      DIR/RBD_STAGE_PREFIX PID (scans skip hidden folders);
 *  I2. the record RBD_STAGE_PUBLISH, listing the files to move in order
 *      (parents before children, each layer before its sidecar), is
 *      written there (temp, fsync, rename, folder fsync): from here on the
 *      import is finished, never undone;
 *  I3. every file listed is locked (a writer's lock that denies every
 *      other open, held to the end of I4), then each is renamed into DIR
 *      without replacing anything (RENAME_NOREPLACE), in that order, then
 *      DIR is fsynced;
 *  I4. the staging folder is removed, its record last.
 * rbd_stage_recover runs before every import into DIR: a staging folder
 * whose process is gone is finished from I3 when it has the record (a
 * file already moved is skipped), else removed.  So a disk appears in DIR
 * only when every layer below it is there.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rbd_int.h"

#define RBD_STAGE_PREFIX ".vdelta-rbd-import."
#define RBD_STAGE_PUBLISH "PUBLISH"
#define STAGE_MAX_FILES 4096u

int rbd_stage_create(const char *dir, char **out)
{
	char *p;

	if (asprintf(&p, "%s/" RBD_STAGE_PREFIX "%ld", dir, (long)getpid()) < 0)
		return -ENOMEM;
	if (mkdir(p, 0755)) {
		int err = -errno;
		vd_err("%s: cannot make the staging folder: %s", p, strerror(errno));
		free(p);
		return err;
	}
	*out = p;
	return 0;
}

/* Every file of the (flat) staging folder, its record last, then the
 * folder. */
int rbd_stage_remove(const char *stage)
{
	char *rec = vd_path_join(stage, RBD_STAGE_PUBLISH);
	DIR *d = opendir(stage);
	struct dirent *e;
	int err = rec ? 0 : -ENOMEM;

	if (!d) {
		free(rec);
		return errno == ENOENT ? 0 : -errno;
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    strcmp(e->d_name, RBD_STAGE_PUBLISH) &&
		    unlinkat(dirfd(d), e->d_name, 0) && errno != ENOENT)
			err = -errno;
	closedir(d);
	if (!err && unlink(rec) && errno != ENOENT) /* I4: the record last */
		err = -errno;
	if (!err && rmdir(stage) && errno != ENOENT)
		err = -errno;
	if (err)
		vd_err("%s: cannot remove the staging folder: %s", stage, strerror(-err));
	free(rec);
	return err;
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), err = 0;

	if (fd < 0 || fsync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (err)
		vd_err("%s: cannot sync the folder: %s", dir, strerror(-err));
	return err;
}

/* I2: common.h W1-W2. */
static int write_record(const char *path, const char *text, size_t len)
{
	int err = vd_write_durable(vd_io_posix(), path, text, len);

	if (err)
		vd_err("%s: cannot write: %s", path, strerror(-err));
	return err;
}

/* The record's text (bounded: STAGE_MAX_FILES names); -ENOENT when none. */
static int read_record(const char *path, char **out)
{
	int err = vd_read_small(path, STAGE_MAX_FILES * (RBD_NAME_MAX + 80), out);

	if (err && err != -ENOENT)
		vd_err("%s: cannot read: %s", path, strerror(-err));
	return err;
}

/* I3 holds every file it moves under a writer's lock that denies every
 * other open (vmdk.h, qemu's bytes), taken where the file is now (the
 * staging folder, or DIR when a stopped run moved it already). */
struct stage_locks {
	struct vd_file **f;
	unsigned nr;
};

static int lock_one(struct stage_locks *l, const char *stage, const char *dir,
		    const char *name)
{
	const unsigned all = VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE;
	const struct vd_io *io = vd_io_posix();
	char *p = vd_path_join(stage, name);
	struct vd_file **grown = realloc(l->f, (l->nr + 1) * sizeof *grown);
	int err = p && grown ? 0 : -ENOMEM;

	l->f = grown ? grown : l->f;
	if (!err && access(p, F_OK)) {
		free(p);
		p = vd_path_join(dir, name);
		err = p ? 0 : -ENOMEM;
	}
	if (!err)
		err = io->open(io, p, VD_O_RDWR, &l->f[l->nr]);
	if (err && err != -ENOMEM)
		vd_err("%s: cannot be locked to be moved: %s", p, strerror(-err));
	if (!err && (err = vmdk_lock_file(l->f[l->nr], p, all, all)))
		vd_close(l->f[l->nr]);
	else if (!err)
		l->nr++;
	free(p);
	return err;
}

static void unlock_all(struct stage_locks *l)
{
	for (unsigned i = 0; i < l->nr; i++)
		vd_close(l->f[i]);
	free(l->f);
}

/* I3 for one name; done already when it is in dir and not in stage. */
static int move_one(const char *stage, const char *dir, const char *name)
{
	char *from = vd_path_join(stage, name), *to = vd_path_join(dir, name);
	int err = from && to ? 0 : -ENOMEM;

	if (!err && renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE)) {
		err = -errno;
		if (err == -ENOENT && !access(to, F_OK))
			err = 0;
		else if (err == -EEXIST)
			vd_err("%s: appeared while the import ran: not replaced (the import "
			       "is left in %s)", to, stage);
		else
			vd_err("%s: cannot move into %s: %s", from, dir, strerror(-err));
	}
	free(from);
	free(to);
	return err;
}

/* I3 and I4 for the files the record lists, each locked first. */
static int finish(const char *stage, const char *dir, char *list)
{
	struct stage_locks l = {0};
	char **v = NULL;
	unsigned nr = 0;
	int err = 0;

	for (char *save, *n = strtok_r(list, "\n", &save); !err && n;
	     n = strtok_r(NULL, "\n", &save))
		if (*n && !strchr(n, '/'))
			err = vd_strv_add(&v, &nr, n);
	for (unsigned i = 0; !err && i < nr; i++)
		err = lock_one(&l, stage, dir, v[i]);
	for (unsigned i = 0; !err && i < nr; i++)
		err = move_one(stage, dir, v[i]);
	if (!err)
		err = sync_dir(dir);
	if (!err)
		err = rbd_stage_remove(stage); /* I4 */
	unlock_all(&l);
	vd_strv_free(v, nr);
	return err;
}

int rbd_stage_publish(const char *stage, const char *dir, char *const *names,
		      unsigned nr)
{
	char *rec = vd_path_join(stage, RBD_STAGE_PUBLISH), *list = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&list, &len);
	int err = rec && f ? 0 : -ENOMEM;

	for (unsigned i = 0; f && i < nr; i++)
		fprintf(f, "%s\n", names[i]);
	if (f && fclose(f))
		err = -ENOMEM;
	if (!err)
		err = sync_dir(stage); /* I1's files durable by name */
	if (!err)
		err = write_record(rec, list, len); /* I2 */
	if (err) /* nothing moved yet: undone */
		rbd_stage_remove(stage);
	else
		err = finish(stage, dir, list);
	free(list);
	free(rec);
	return err;
}

/* A staging folder of a process that is gone: finish or remove it. */
static int recover_one(const char *dir, const char *name)
{
	long pid = atol(name + strlen(RBD_STAGE_PREFIX));
	char *stage = vd_path_join(dir, name), *rec = stage ? vd_path_join(stage, RBD_STAGE_PUBLISH) : NULL;
	char *list = NULL;
	int err = rec ? 0 : -ENOMEM;

	if (!err && pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
		goto out; /* still running */
	if (!err && read_record(rec, &list) == 0) {
		vd_warn("%s: finishing an import that was stopped while it published", stage);
		err = finish(stage, dir, list);
	} else if (!err) {
		vd_warn("%s: removing what an import that was stopped had made", stage);
		err = rbd_stage_remove(stage);
	}
out:
	free(list);
	free(rec);
	free(stage);
	return err;
}

int rbd_stage_recover(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int err = 0;
	unsigned seen = 0;

	if (!d) {
		vd_err("%s: %s", dir, strerror(errno));
		return -errno;
	}
	while (!err && (e = readdir(d)) && seen++ < STAGE_MAX_FILES * 16)
		if (!strncmp(e->d_name, RBD_STAGE_PREFIX, strlen(RBD_STAGE_PREFIX)))
			err = recover_one(dir, e->d_name);
	closedir(d);
	return err;
}
