/* chain — opening and closing a chain (layer 2).
 *
 * Owns: following parent hints from the top down to the base, and the
 * validation of every link: the child's parentCID equals the parent's CID,
 * equal capacities, no layer seen twice (device + inode), depth at most
 * CHAIN_MAX_DEPTH.  Only the top may be writable, and only when it is not
 * frozen; the frozen mark itself (read and written) lives here too.  Locks
 * are taken layer by layer as they are opened (an unclean top to write:
 * before the open that recovers it).  With a pool
 * (chain_pool.c) every parent comes from it and goes back to it at close.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chain_int.h"

bool chain_recovered(const struct chain *c) { return c->recovered; }

bool chain_is_frozen(struct vmdk_disk *d)
{
	const char *v = vmdk_desc_get(d, CHAIN_FROZEN_KEY);

	return v && !strcmp(v, "1");
}

int chain_set_frozen(const char *path, bool frozen, unsigned flags,
		     const struct vd_io *io)
{
	struct vmdk_disk *d;
	int err = vmdk_open(path, VMDK_OPEN_RDWR | ((flags & CHAIN_OPEN_DIRTY_OK)
						     ? VMDK_OPEN_DIRTY_OK : 0), io, &d);

	if (err)
		return err;
	if (!(flags & CHAIN_OPEN_NOLOCK))
		err = vmdk_lock(d, VMDK_PERM_READ | VMDK_PERM_WRITE,
				VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (!err && chain_is_frozen(d) != frozen) {
		err = vmdk_desc_set(d, CHAIN_FROZEN_KEY, frozen ? "1" : NULL);
		if (!err)
			err = vmdk_desc_write(d);
	}
	if (vmdk_close(d) && !err)
		err = -EIO;
	return err;
}

/* Refuse a path whose file is already a layer of this chain. */
static int check_cycle(struct chain *c, const char *path, struct stat *st)
{
	if (stat(path, st)) {
		int err = -errno;
		vd_err("%s: %s", path, strerror(errno));
		return err;
	}
	for (unsigned i = 0; i < c->nr_layers; i++) {
		if (c->layers[i].dev == st->st_dev && c->layers[i].ino == st->st_ino) {
			vd_err("%s: parent chain loops: %s is already layer %u of %s",
			       vmdk_path(c->layers[c->nr_layers - 1].disk), path, i,
			       c->path);
			return -ELOOP;
		}
	}
	if (c->nr_layers >= CHAIN_MAX_DEPTH) {
		vd_err("%s: chain is deeper than %u layers (at %s)", c->path,
		       CHAIN_MAX_DEPTH, path);
		return -ELOOP;
	}
	return 0;
}

/* Child layer i-1 against its parent layer i. */
static int check_link(struct chain *c, unsigned i)
{
	struct vmdk_disk *child = c->layers[i - 1].disk, *parent = c->layers[i].disk;

	if (vmdk_capacity(child) != vmdk_capacity(parent)) {
		vd_err("%s: capacity %llu bytes differs from its parent %s: %llu bytes",
		       vmdk_path(child), (unsigned long long)vmdk_capacity(child),
		       vmdk_path(parent), (unsigned long long)vmdk_capacity(parent));
		return -VD_EBADDATA;
	}
	if (vmdk_parent_cid(child) == vmdk_cid(parent))
		return 0;
	if (c->flags & CHAIN_OPEN_IGNORE_CID) {
		vd_warn("%s: parentCID=%08x but parent %s has CID=%08x (ignored)",
			vmdk_path(child), vmdk_parent_cid(child), vmdk_path(parent),
			vmdk_cid(parent));
		return 0;
	}
	vd_err("%s: parentCID=%08x but parent %s has CID=%08x: the parent was "
	       "modified after the child was made (--ignore-cid reads anyway)",
	       vmdk_path(child), vmdk_parent_cid(child), vmdk_path(parent),
	       vmdk_cid(parent));
	return -ESTALE;
}

static int open_pooled(struct chain *c, const char *path, const struct stat *st,
		       unsigned vflags)
{
	unsigned i = c->nr_layers;
	int err = chain_pool_get(c->pool, path, st, vflags, c->io,
				 !(c->flags & CHAIN_OPEN_NOLOCK), &c->layers[i].disk);

	if (err)
		return err;
	c->layers[i].dev = st->st_dev;
	c->layers[i].ino = st->st_ino;
	c->layers[i].pooled = true;
	c->nr_layers++;
	return check_link(c, i);
}

/* Whether any extent of d has its unclean flag set. */
static bool any_unclean(struct vmdk_disk *d)
{
	struct vmdk_extent_info ei;
	struct vmdk_info info;

	vmdk_info_get(d, &info);
	for (unsigned i = 0; i < info.nr_extents; i++)
		if (!vmdk_extent_head_get(d, i, &ei) && ei.unclean_shutdown)
			return true;
	return false;
}

/* An unclean top opened for writing with VMDK_OPEN_DIRTY_OK is recovered
 * by that open, which writes (redundant tables, the flag).  Its writer may
 * be alive in another process (it set the flag), so the writer's lock is
 * taken first, through a read-only open of the top (*guard), and held
 * across the recovering open: a refused open changes no byte of a layer
 * someone else writes.  *guard NULL: not needed (clean, or no locks). */
static int lock_before_recovery(struct chain *c, const char *path, unsigned vflags,
				struct vmdk_disk **guard)
{
	int err = vmdk_open(path, vflags & ~VMDK_OPEN_RDWR, c->io, guard);

	if (err) {
		*guard = NULL;
		return err; /* reported: the file is what the real open would refuse */
	}
	if (any_unclean(*guard))
		err = vmdk_lock(*guard, VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE,
				VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (err || !any_unclean(*guard)) {
		vmdk_close(*guard);
		*guard = NULL;
	}
	return err;
}

static int open_layer(struct chain *c, const char *path)
{
	struct vmdk_disk *guard = NULL;
	unsigned i = c->nr_layers, vflags = 0;
	bool rw = i == 0 && (c->flags & CHAIN_OPEN_RDWR);
	struct stat st;
	int err = check_cycle(c, path, &st);

	if (err)
		return err;
	if (rw)
		vflags |= VMDK_OPEN_RDWR;
	if (c->flags & CHAIN_OPEN_DIRTY_OK)
		vflags |= VMDK_OPEN_DIRTY_OK;
	if (c->flags & CHAIN_OPEN_STRICT_PATHS)
		vflags |= VMDK_OPEN_STRICT_PATHS;
	if (c->flags & CHAIN_OPEN_OUTSIDE_OK)
		vflags |= VMDK_OPEN_OUTSIDE_OK;
	if (i && c->pool) /* a shared parent: opened and locked once */
		return open_pooled(c, path, &st, vflags);
	if (rw && (vflags & VMDK_OPEN_DIRTY_OK) && !(c->flags & CHAIN_OPEN_NOLOCK))
		err = lock_before_recovery(c, path, vflags, &guard);
	if (!err)
		err = vmdk_open(path, vflags, c->io, &c->layers[i].disk);
	c->recovered = !err && guard;
	vmdk_close(guard); /* its lock goes: the layer's own is taken below */
	if (err)
		return err;
	c->layers[i].dev = st.st_dev;
	c->layers[i].ino = st.st_ino;
	c->nr_layers++;
	if (rw && chain_is_frozen(c->layers[i].disk)) {
		vd_err("%s: layer is frozen (it has children; %s = \"1\"): it is never "
		       "opened for writing; write into a snapshot or a linked clone of it",
		       path, CHAIN_FROZEN_KEY);
		return -EPERM;
	}
	if (!(c->flags & CHAIN_OPEN_NOLOCK) && !(i == 0 && (c->flags & CHAIN_OPEN_NOLOCK_TOP))) {
		err = chain_lock_layer(c, i, rw);
		if (err)
			return err;
	}
	return i ? check_link(c, i) : 0;
}

/* Path of the parent of the last layer opened, NULL for a base. */
static int next_parent(struct chain *c, char **next)
{
	struct vmdk_disk *d = c->layers[c->nr_layers - 1].disk;
	const char *hint = vmdk_parent_hint(d);

	*next = NULL;
	if (!hint || (c->flags & CHAIN_OPEN_NO_PARENT))
		return 0;
	return chain_hint_resolve(vmdk_path(d), hint,
				  vmdk_desc_get(d, "ddb.nativeParentHint"), next);
}

static int open_layers(struct chain *c)
{
	char *path = strdup(c->path), *next;
	int err = path ? 0 : -ENOMEM;

	while (!err && path) {
		err = open_layer(c, path);
		if (!err)
			err = next_parent(c, &next);
		free(path);
		path = err ? NULL : next;
	}
	free(path);
	return err;
}

static int chain_backing(void *opaque, void *buf, size_t len, uint64_t off)
{
	return chain_io_read_from(opaque, 1, buf, len, off, false);
}

int chain_open(const char *path, unsigned flags, const struct vd_io *io,
	       struct chain **out)
{
	return chain_open_pool(path, flags, io, NULL, out);
}

int chain_open_pool(const char *path, unsigned flags, const struct vd_io *io,
		    struct chain_pool *pool, struct chain **out)
{
	struct chain *c;
	int err;

	if ((flags & CHAIN_OPEN_RDWR) && (flags & CHAIN_OPEN_IGNORE_CID)) {
		vd_err("%s: --ignore-cid is for reading only", path);
		return -EINVAL;
	}
	if ((flags & CHAIN_OPEN_RDWR) && (flags & CHAIN_OPEN_NO_PARENT))
		return -EINVAL; /* copy-on-write needs the parents */
	c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->io = io ? io : vd_io_posix();
	c->flags = flags;
	c->pool = pool;
	pthread_mutex_init(&c->map_lock, NULL);
	c->path = strdup(path);
	err = c->path ? open_layers(c) : -ENOMEM;
	if (!err)
		err = chain_map_init(c);
	if (err) {
		chain_close(c);
		return err;
	}
	if (c->nr_layers > 1 && chain_writable(c))
		vmdk_set_backing(c->layers[0].disk, chain_backing, c);
	*out = c;
	return 0;
}

int chain_close(struct chain *c)
{
	int err = 0;

	if (!c)
		return 0;
	for (unsigned i = 0; i < c->nr_layers; i++) {
		int e = c->layers[i].pooled ? chain_pool_put(c->pool, c->layers[i].disk)
					    : vmdk_close(c->layers[i].disk);
		if (!err)
			err = e;
	}
	chain_map_destroy(c);
	pthread_mutex_destroy(&c->map_lock);
	free(c->path);
	free(c);
	return err;
}

uint64_t chain_capacity(const struct chain *c) { return c->capacity; }
unsigned chain_depth(const struct chain *c) { return c->nr_layers; }
const char *chain_path(const struct chain *c) { return c->path; }
uint64_t chain_unit(const struct chain *c) { return c->unit; }

struct vmdk_disk *chain_layer(const struct chain *c, unsigned i)
{
	return i < c->nr_layers ? c->layers[i].disk : NULL;
}

bool chain_writable(const struct chain *c)
{
	return (c->flags & CHAIN_OPEN_RDWR) && vmdk_writable(c->layers[0].disk);
}
