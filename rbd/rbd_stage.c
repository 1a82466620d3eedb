/* rbd — the staging folder of an import, and its publish (layer 3).
 *
 * Owns the write order that keeps half-made layers away from final names:
 *  I1. every layer is made, flushed and verified in the hidden folder
 *      DIR/RBD_STAGE_PREFIX PID (scans skip hidden folders);
 *  I2. the record RBD_STAGE_PUBLISH, listing the files to move in order
 *      (parents before children, each layer before its sidecar), is
 *      written there (temp, fsync, rename, folder fsync): from here on the
 *      import is finished, never undone;
 *  I3. each file is renamed into DIR without replacing anything
 *      (RENAME_NOREPLACE), in that order, then DIR is fsynced;
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

/* I2: temp, fsync, rename, folder fsync. */
static int write_record(const char *path, const char *text, size_t len)
{
	char *tmp;
	int fd, err = 0;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len || fsync(fd))
		err = errno ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		vd_err("%s: cannot write: %s", path, strerror(-err));
	free(tmp);
	if (!err) {
		char *dir = vd_dirname(path);
		err = dir ? sync_dir(dir) : -ENOMEM;
		free(dir);
	}
	return err;
}

/* The record's text (bounded: STAGE_MAX_FILES names). */
static int read_record(const char *path, char **out)
{
	size_t max = STAGE_MAX_FILES * (RBD_NAME_MAX + 80), n;
	FILE *f = fopen(path, "r");
	char *buf = f ? malloc(max + 1) : NULL;

	if (!f)
		return -errno;
	n = buf ? fread(buf, 1, max, f) : 0;
	fclose(f);
	if (!buf)
		return -ENOMEM;
	buf[n] = '\0';
	*out = buf;
	return 0;
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

static int finish(const char *stage, const char *dir, char *list)
{
	int err = 0;

	for (char *save, *n = strtok_r(list, "\n", &save); !err && n;
	     n = strtok_r(NULL, "\n", &save))
		if (*n && !strchr(n, '/'))
			err = move_one(stage, dir, n);
	if (!err)
		err = sync_dir(dir);
	return err ? err : rbd_stage_remove(stage); /* I4 */
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
