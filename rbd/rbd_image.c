/* rbd — one image: open, metadata, snapshots, removal (layer 4, over
 * librbd).
 *
 * Owns the librbd calls on a single image that export and import share,
 * each failure reported once as "POOL/IMAGE[@SNAP]: what: why".  Removal
 * is only of an image an export made and did not finish (NAME
 * RBD_EXPORT_PART, which no one else writes and no clone is made of): its
 * lock, held by the run that was stopped, is broken, its snapshots
 * unprotected and removed, then the image; and of the id object a rename
 * stopped inside librbd left (rbd_image_rename_finish), never of data.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "rbd_int.h"

#define RBD_WATCH_WAIT_S 45 /* longer than the OSDs' default watch timeout */

int rbd_image_open(rados_ioctx_t io, const char *pool, const char *name, const char *snap,
		   bool rdonly, rbd_image_t *out)
{
	int err = rdonly ? rbd_open_read_only(io, name, out, snap) : rbd_open(io, name, out, snap);

	if (err == -ENOENT)
		vd_err("%s/%s%s%s: no such image%s", pool, name, snap ? "@" : "",
		       snap ? snap : "", snap ? " or snapshot" : "");
	else if (err < 0)
		vd_err("%s/%s: cannot open: %s", pool, name, strerror(-err));
	return err;
}

int rbd_image_meta_get(rbd_image_t img, const char *key, char *buf, size_t len)
{
	size_t n = len;
	int err = rbd_metadata_get(img, key, buf, &n);

	if (err == -ERANGE)
		return -VD_EBADDATA; /* longer than anything we write */
	return err < 0 ? err : 0;
}

int rbd_image_meta_set(rbd_image_t img, const char *what, const char *key, const char *val)
{
	int err = rbd_metadata_set(img, key, val);

	if (err < 0)
		vd_err("%s: cannot set metadata %s: %s", what, key, strerror(-err));
	return err;
}

int rbd_image_snap(rbd_image_t img, const char *what, const char *snap)
{
	int err = rbd_snap_create(img, snap);

	if (err == -EEXIST)
		err = 0;
	if (!err)
		err = rbd_snap_protect(img, snap);
	if (err == -EBUSY) /* protected already */
		err = 0;
	if (err < 0)
		vd_err("%s@%s: cannot make or protect the snapshot: %s", what, snap,
		       strerror(-err));
	return err;
}

/* The exclusive lock a killed export still holds on an image it was
 * making: broken (librbd blocklists the holder), so the removal does not
 * wait for the dead client's lock request to time out (30 s). */
static void break_locks(rbd_image_t img)
{
	char *owners[8];
	size_t nr = 8;
	rbd_lock_mode_t mode;

	if (rbd_lock_get_owners(img, &mode, owners, &nr) < 0)
		return;
	for (size_t i = 0; i < nr; i++)
		rbd_lock_break(img, mode, owners[i]);
	rbd_lock_get_owners_cleanup(owners, nr);
}

/* Unprotect and remove every snapshot of img. */
static int drop_snaps(rbd_image_t img, const char *what)
{
	rbd_snap_info_t snaps[64];
	int max = 64, n = rbd_snap_list(img, snaps, &max), err = 0;

	if (n < 0) {
		vd_err("%s: cannot list snapshots: %s", what, strerror(-n));
		return n;
	}
	for (int i = 0; !err && i < n; i++) {
		int p = 0;
		rbd_snap_is_protected(img, snaps[i].name, &p);
		err = p ? rbd_snap_unprotect(img, snaps[i].name) : 0;
		if (!err)
			err = rbd_snap_remove(img, snaps[i].name);
		if (err)
			vd_err("%s@%s: cannot remove the snapshot: %s", what, snaps[i].name,
			       strerror(-err));
	}
	rbd_snap_list_end(snaps);
	return err;
}

/* rbd_remove, waiting out the watch a killed client left on the image
 * (the OSDs drop it after osd_client_watch_timeout, 30 s by default). */
static int remove_waiting(rados_ioctx_t io, const char *name, const char *what)
{
	int err = rbd_remove(io, name);

	for (int s = 0; err == -EBUSY && s < RBD_WATCH_WAIT_S; s++) {
		if (!s)
			vd_warn("%s: still watched (a client killed before it closed it?): "
				"waiting up to %d s for the watch to expire", what,
				RBD_WATCH_WAIT_S);
		sleep(1);
		err = rbd_remove(io, name);
	}
	return err;
}

int rbd_image_remove(rados_ioctx_t io, const char *pool, const char *name)
{
	char what[RBD_NAME_MAX + 300];
	rbd_image_t img;
	int err;

	snprintf(what, sizeof what, "%s/%s", pool, name);
	err = rbd_open(io, name, &img, NULL);
	if (err == -ENOENT) { /* listed, no header: a clone killed half made */
		err = remove_waiting(io, name, what);
	} else if (err < 0) {
		vd_err("%s: cannot open: %s", what, strerror(-err));
		return err;
	} else {
		break_locks(img);
		err = drop_snaps(img, what);
		rbd_close(img);
		if (!err)
			err = remove_waiting(io, name, what);
	}
	if (err < 0 && err != -ENOENT)
		vd_err("%s: cannot remove: %s", what, strerror(-err));
	return err == -ENOENT ? 0 : err;
}

int rbd_image_rename(rados_ioctx_t io, const char *pool, const char *from, const char *to)
{
	int err = rbd_rename(io, from, to);

	if (err < 0)
		vd_err("%s/%s: cannot rename to %s: %s", pool, from, to, strerror(-err));
	return err;
}

/* The image id name opens, "" when it does not. */
static void id_of(rados_ioctx_t io, const char *name, char *id, size_t len)
{
	rbd_image_t img;

	id[0] = '\0';
	if (rbd_open_read_only(io, name, &img, NULL) < 0)
		return;
	if (rbd_get_id(img, id, len) < 0)
		id[0] = '\0';
	rbd_close(img);
}

/* Is name listed in the pool's directory (1), not (0), or -errno? */
static int listed(rados_ioctx_t io, const char *name)
{
	rbd_image_spec_t *v = NULL;
	size_t n = 0;
	int err = rbd_list2(io, NULL, &n), found = 0;

	if (err == -ERANGE && !(v = calloc(n ? n : 1, sizeof *v)))
		return -ENOMEM;
	if (err == -ERANGE)
		err = rbd_list2(io, v, &n);
	for (size_t i = 0; err >= 0 && i < n; i++)
		found |= !strcmp(v[i].name, name);
	if (v && err >= 0)
		rbd_image_spec_list_cleanup(v, n);
	free(v);
	return err < 0 ? err : found;
}

/* librbd renames in three steps: the id object of the new name is
 * written, the pool's directory entry changed, the old id object
 * removed.  A run stopped between the first two leaves the image listed
 * as part and opening as name as well (rbd ls shows no name); between the
 * last two, listed as name with part's id object left.  Both are told by
 * part and name opening the same image, and finished: the first by
 * removing name's id object and renaming again, the second by removing
 * part's. */
int rbd_image_rename_finish(rados_ioctx_t io, const char *pool, const char *part,
			    const char *name)
{
	char pid[RBD_NAME_MAX + 1], nid[RBD_NAME_MAX + 1], *oid = NULL;
	int err, in_dir;

	id_of(io, part, pid, sizeof pid);
	if (!pid[0])
		return 0; /* the common case: no part */
	id_of(io, name, nid, sizeof nid);
	if (!nid[0] || strcmp(pid, nid))
		return 0; /* not a rename of this image */
	in_dir = listed(io, part);
	if (in_dir < 0 || asprintf(&oid, "rbd_id.%s", in_dir ? name : part) < 0) {
		err = in_dir < 0 ? in_dir : -ENOMEM;
		vd_err("%s/%s: cannot list the pool: %s", pool, part, strerror(-err));
		return err;
	}
	err = rados_remove(io, oid);
	if (err < 0)
		vd_err("%s: cannot remove the object %s of a stopped rename: %s", pool, oid,
		       strerror(-err));
	free(oid);
	return err < 0 ? err : in_dir ? rbd_image_rename(io, pool, part, name) : 0;
}
