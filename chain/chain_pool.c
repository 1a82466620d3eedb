/* chain — the layer pool (layer 2): read-only layers shared by the chains
 * of one process.
 *
 * Owns: one struct vmdk_disk per parent layer file (keyed by device +
 * inode of its descriptor), with a reference count.  chain_open_pool()
 * takes every parent of a chain from the pool, so N linked clones over one
 * base hold the base open once: one file descriptor, one copy of its grain
 * tables, one lock.  A top is never pooled (it is private to its chain,
 * writable or not).  Parents are opened read-only and locked like any chain
 * parent (read held, write+resize denied), once, when the first chain
 * takes them; the last chain to let go closes them.
 *
 * Locking: pool->lock guards the table; it is taken only by open and close
 * of chains, never on the I/O path (a pooled vmdk_disk is itself safe for
 * concurrent I/O, see THREAD MODEL in vmdk.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chain_int.h"

struct pool_ent {
	struct vmdk_disk *disk;
	dev_t dev;
	ino_t ino;
	unsigned refs;
};

struct chain_pool {
	pthread_mutex_t lock;
	struct pool_ent *ents;
	unsigned nr, cap;
};

int chain_pool_create(struct chain_pool **out)
{
	struct chain_pool *p = calloc(1, sizeof *p);

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	*out = p;
	return 0;
}

void chain_pool_destroy(struct chain_pool *p)
{
	if (!p)
		return;
	for (unsigned i = 0; i < p->nr; i++) /* chains closed out of order */
		vmdk_close(p->ents[i].disk);
	free(p->ents);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

unsigned chain_pool_nr_layers(struct chain_pool *p)
{
	unsigned n;

	pthread_mutex_lock(&p->lock);
	n = p->nr;
	pthread_mutex_unlock(&p->lock);
	return n;
}

static struct pool_ent *pool_find(struct chain_pool *p, dev_t dev, ino_t ino)
{
	for (unsigned i = 0; i < p->nr; i++)
		if (p->ents[i].dev == dev && p->ents[i].ino == ino)
			return &p->ents[i];
	return NULL;
}

/* Open and lock a layer the pool does not hold yet, and add it. */
static int pool_add(struct chain_pool *p, const char *path, const struct stat *st,
		    unsigned vflags, const struct vd_io *io, bool lock,
		    struct vmdk_disk **out)
{
	struct vmdk_disk *d;
	int err;

	if (p->nr == p->cap) {
		unsigned cap = p->cap ? 2 * p->cap : 16;
		struct pool_ent *e = realloc(p->ents, cap * sizeof *e);
		if (!e)
			return -ENOMEM;
		p->ents = e;
		p->cap = cap;
	}
	err = vmdk_open(path, vflags & ~VMDK_OPEN_RDWR, io, &d);
	if (!err && lock)
		err = vmdk_lock(d, VMDK_PERM_READ, VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
	if (err) {
		vmdk_close(d);
		return err;
	}
	p->ents[p->nr++] = (struct pool_ent){ d, st->st_dev, st->st_ino, 1 };
	*out = d;
	return 0;
}

int chain_pool_get(struct chain_pool *p, const char *path, const struct stat *st,
		   unsigned vflags, const struct vd_io *io, bool lock,
		   struct vmdk_disk **out)
{
	struct pool_ent *e;
	int err = 0;

	pthread_mutex_lock(&p->lock);
	e = pool_find(p, st->st_dev, st->st_ino);
	if (e) {
		e->refs++;
		*out = e->disk;
	} else {
		err = pool_add(p, path, st, vflags, io, lock, out);
	}
	pthread_mutex_unlock(&p->lock);
	return err;
}

int chain_pool_put(struct chain_pool *p, struct vmdk_disk *d)
{
	struct vmdk_disk *last = NULL;

	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->nr; i++) {
		if (p->ents[i].disk != d)
			continue;
		if (--p->ents[i].refs == 0) {
			last = d;
			p->ents[i] = p->ents[--p->nr];
		}
		break;
	}
	pthread_mutex_unlock(&p->lock);
	return vmdk_close(last);
}
