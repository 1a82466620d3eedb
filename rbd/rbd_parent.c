/* rbd — an image's parent without opening the image (layer 4, over
 * librados' object classes).
 *
 * Why not rbd_open + rbd_get_parent: librbd opens every ancestor of an
 * image when it opens the image, so walking a chain of n clones that way
 * opens n²/2 images (a 130-deep chain: ~8500 opens, ~40 s, gigabytes).
 * The walk instead asks the image header object itself, through the rbd
 * object class methods that librbd's own older clients use and every
 * release keeps: "get_parent" (snapshot id in; parent pool id, image id,
 * snapshot id, overlap out: the link as the header keeps it, which `rbd
 * children` shows and protects, even where the overlap is 0 and
 * rbd_get_parent calls the image parentless), "get_size" (snapshot id in; order, size
 * out), and the names: "dir_get_name" on rbd_directory, and
 * "get_snapshot_name".  Each answer is decoded with its lengths bounded
 * (a name at most RBD_NAME_MAX_IN bytes), so a hostile cluster cannot
 * make us allocate what it likes.  One round trip each: a chain as deep as
 * CHAIN_MAX_DEPTH is walked in a moment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "rbd_int.h"

#define RBD_NAME_MAX_IN 4096u /* bytes of a name or id read from the cluster */
#define REPLY_MAX (RBD_NAME_MAX_IN + 64u)

/* One class method call: *len bytes of reply into out (REPLY_MAX). */
static int call(rados_ioctx_t io, const char *oid, const char *method, const void *in,
		size_t in_len, char *out, size_t *len)
{
	int r = rados_exec(io, oid, "rbd", method, in, in_len, out, REPLY_MAX);

	if (r < 0)
		return r;
	*len = (size_t)r;
	return 0;
}

/* A ceph string (le32 length, bytes) at *pos of buf, bounded. */
static int get_str(const char *buf, size_t len, size_t *pos, char **out)
{
	uint32_t n;

	if (len < *pos + 4)
		return -VD_EBADDATA;
	n = get_le32(buf + *pos);
	if (n > RBD_NAME_MAX_IN || len - *pos - 4 < n)
		return -VD_EBADDATA;
	*out = strndup(buf + *pos + 4, n);
	*pos += 4 + n;
	return *out ? 0 : -ENOMEM;
}

static int put_str(char *buf, const char *s, size_t *len)
{
	size_t n = strlen(s);

	if (n > RBD_NAME_MAX_IN)
		return -ENAMETOOLONG;
	put_le32(buf, (uint32_t)n);
	memcpy(buf + 4, s, n);
	*len = 4 + n;
	return 0;
}

static char *header_oid(const char *id)
{
	char *oid;

	return asprintf(&oid, "rbd_header.%s", id) < 0 ? NULL : oid;
}

/* A method of the image's header object that takes a snapshot id. */
static int call_at_snap(rados_ioctx_t io, const char *id, const char *method,
			uint64_t snap_id, char *out, size_t *len)
{
	char in[8], *oid = header_oid(id);
	int err = oid ? 0 : -ENOMEM;

	put_le64(in, snap_id);
	if (!err)
		err = call(io, oid, method, in, sizeof in, out, len);
	free(oid);
	return err;
}

int rbd_parent_size(rados_ioctx_t io, const char *id, uint64_t snap_id, uint64_t *size)
{
	char out[REPLY_MAX];
	size_t len = 0;
	int err = call_at_snap(io, id, "get_size", snap_id, out, &len);

	if (!err && len < 9)
		err = -VD_EBADDATA;
	if (!err)
		*size = get_le64(out + 1); /* after the order byte */
	return err;
}

static int image_name(rados_ioctx_t io, const char *id, char **name)
{
	char in[RBD_NAME_MAX_IN + 4], out[REPLY_MAX];
	size_t in_len, len = 0, pos = 0;
	int err = put_str(in, id, &in_len);

	if (!err)
		err = call(io, "rbd_directory", "dir_get_name", in, in_len, out, &len);
	return err ? err : get_str(out, len, &pos, name);
}

static int snap_name(rados_ioctx_t io, const char *id, uint64_t snap_id, char **name)
{
	char out[REPLY_MAX];
	size_t len = 0, pos = 0;
	int err = call_at_snap(io, id, "get_snapshot_name", snap_id, out, &len);

	return err ? err : get_str(out, len, &pos, name);
}

/* The reply of get_parent: pool id (-1: none), image id, snapshot id,
 * overlap. */
static int parent_ids(rados_ioctx_t io, const char *id, uint64_t snap_id, int64_t *pool,
		      struct rbd_parent_ref *p)
{
	char out[REPLY_MAX];
	size_t len = 0, pos = 8;
	int err = call_at_snap(io, id, "get_parent", snap_id, out, &len);

	if (!err && len < 8)
		err = -VD_EBADDATA;
	if (!err)
		*pool = (int64_t)get_le64(out);
	if (!err && *pool >= 0)
		err = get_str(out, len, &pos, &p->id);
	if (!err && *pool >= 0 && len < pos + 16)
		err = -VD_EBADDATA;
	if (!err && *pool >= 0) {
		p->snap_id = get_le64(out + pos);
		p->overlap = get_le64(out + pos + 8);
	}
	return err;
}

int rbd_parent_get(rados_t cluster, rados_ioctx_t io, const char *what, const char *id,
		   uint64_t snap_id, struct rbd_parent_ref *out)
{
	char pool[256];
	int64_t pool_id = -1;
	int err;

	memset(out, 0, sizeof *out);
	err = parent_ids(io, id, snap_id, &pool_id, out);
	if (!err && pool_id < 0)
		return 0;
	if (!err && rados_pool_reverse_lookup(cluster, pool_id, pool, sizeof pool) < 0)
		err = -ENOENT;
	if (!err)
		out->pool = strdup(pool);
	if (!err && !out->pool)
		err = -ENOMEM;
	if (err) {
		vd_err("%s: cannot read its parent: %s", what,
		       err == -VD_EBADDATA ? "a malformed answer"
		       : err == -EXDEV	   ? "it is in another pool namespace, which vdelta "
					     "does not follow"
					   : strerror(-err));
		rbd_parent_free(out);
	}
	return err;
}

/* The names of a parent found by rbd_parent_get, in pio (its pool). */
int rbd_parent_names(rados_ioctx_t pio, const char *what, struct rbd_parent_ref *p)
{
	int err = image_name(pio, p->id, &p->name);

	if (!err)
		err = snap_name(pio, p->id, p->snap_id, &p->snap);
	if (err)
		vd_err("%s: cannot read the name of its parent (%s/id %s): %s", what, p->pool,
		       p->id, err == -VD_EBADDATA ? "a malformed answer" : strerror(-err));
	return err;
}

void rbd_parent_free(struct rbd_parent_ref *p)
{
	free(p->pool);
	free(p->id);
	free(p->name);
	free(p->snap);
	memset(p, 0, sizeof *p);
}
