/* group — the locks an operation holds on every file it touches (layer 3).
 *
 * Owns: the lock set of one operation.  Before an operation writes its
 * intent record (and before recovery acts on one) every layer it removes,
 * renames, moves, truncates or writes is locked EXCL — qemu's lock bytes,
 * every permission held and every permission denied, so any other user of
 * the file anywhere on this host (qemu, a vdelta mount or export, another
 * vdelta command: readers too) makes it refuse, naming the file and the
 * holder — and every layer it only reads and needs unchanged is locked
 * READ (held read, denied write and resize, as a qemu reader).  An EXCL
 * file is opened for writing, so an immutable or read-only file is refused
 * here too, before anything is written.  Locks of one open file
 * description never conflict with each other but do with a second open of
 * the same file, even in this process: while an operation holds its set,
 * it opens those files without taking locks again (CHAIN_OPEN_NOLOCK,
 * CHAIN_OPEN_NOLOCK_TOP, no vmdk_lock).  The set is released (its files
 * closed) after the operation's last step.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "group_int.h"

/* The slot of (dev, ino) in the set, or -1. */
static int find(const struct group_locks *l, const struct stat *st)
{
	for (unsigned i = 0; i < l->nr; i++)
		if (l->dev[i] == st->st_dev && l->ino[i] == st->st_ino)
			return (int)i;
	return -1;
}

static int grow(struct group_locks *l)
{
	unsigned n = l->nr + 1;
	struct vd_file **f = reallocarray(l->files, n, sizeof *f);
	dev_t *dev = f ? reallocarray(l->dev, n, sizeof *dev) : NULL;
	ino_t *ino = dev ? reallocarray(l->ino, n, sizeof *ino) : NULL;
	enum group_lock_mode *m = ino ? reallocarray(l->mode, n, sizeof *m) : NULL;

	if (f)
		l->files = f;
	if (dev)
		l->dev = dev;
	if (ino)
		l->ino = ino;
	if (m)
		l->mode = m;
	return m ? 0 : -ENOMEM;
}

static int open_locked(const char *path, enum group_lock_mode m, struct vd_file **out)
{
	const struct vd_io *io = vd_io_posix();
	const unsigned all = VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE;
	int err = io->open(io, path, m == GROUP_LOCK_EXCL ? VD_O_RDWR : VD_O_RDONLY, out);

	if (err) {
		vd_err("%s: cannot be %s (%s): nothing changed", path,
		       m == GROUP_LOCK_EXCL ? "changed" : "read", vd_open_strerror(err, path));
		return err;
	}
	err = m == GROUP_LOCK_EXCL ? vmdk_lock_file(*out, path, all, all)
				   : vmdk_lock_file(*out, path, VMDK_PERM_READ,
						    VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (err) {
		vd_close(*out);
		*out = NULL;
	}
	return err;
}

int group_lock_file(struct group_locks *l, const char *path, enum group_lock_mode m)
{
	struct stat st;
	struct vd_file *f;
	int i, err;

	if (m == GROUP_LOCK_NONE || stat(path, &st))
		return 0; /* nothing there (yet, or any more) to protect */
	i = find(l, &st);
	if (i >= 0 && l->mode[i] >= m)
		return 0;
	if (i >= 0) { /* READ to EXCL: our own READ lock would be in the way */
		vd_close(l->files[i]);
		l->files[i] = NULL;
	}
	if ((err = open_locked(path, m, &f)))
		return err;
	if (i < 0 && (err = grow(l))) {
		vd_close(f);
		return err;
	}
	if (i < 0)
		i = (int)l->nr++;
	l->files[i] = f;
	l->dev[i] = st.st_dev;
	l->ino[i] = st.st_ino;
	l->mode[i] = m;
	return 0;
}

int group_lock_layer(struct group_locks *l, const char *layer, enum group_lock_mode m)
{
	char **files;
	unsigned nr;
	struct stat st;
	int err;

	if (m == GROUP_LOCK_NONE || lstat(layer, &st))
		return 0;
	err = m == GROUP_LOCK_READ ? group_layer_read_files(layer, &files, &nr)
				   : group_layer_files(layer, &files, &nr);
	for (unsigned i = 0; !err && i < nr; i++)
		err = group_lock_file(l, files[i], m);
	vd_strv_free(files, nr);
	return err;
}

void group_locks_release(struct group_locks *l)
{
	for (unsigned i = 0; i < l->nr; i++)
		vd_close(l->files[i]);
	free(l->files);
	free(l->dev);
	free(l->ino);
	free(l->mode);
	*l = (struct group_locks){0};
}
