/* chain — private declarations of the chain layer.  Never included outside
 * chain/. */
#ifndef VDELTA_CHAIN_INT_H
#define VDELTA_CHAIN_INT_H

#include <pthread.h>
#include <sys/types.h>

#include "chain.h"

/* Map entry values besides a layer index (0 .. CHAIN_MAX_DEPTH-1). */
#define CHAIN_E_NONE 0xffu  /* no layer holds the unit: zeros */
#define CHAIN_E_MIXED 0xfeu /* split between layers: walk them */

struct chain_layer {
	struct vmdk_disk *disk;
	dev_t dev;
	ino_t ino;
	bool pooled; /* owned by chain->pool, shared with other chains */
};

struct chain {
	const struct vd_io *io;
	struct chain_pool *pool; /* NULL: every layer private */
	unsigned flags;
	char *path;
	bool recovered;      /* the top was unclean and its open recovered it */
	unsigned nr_layers;
	struct chain_layer layers[CHAIN_MAX_DEPTH];
	uint64_t capacity;
	uint64_t unit;       /* map unit, bytes (power of two) */
	unsigned unit_shift;
	uint64_t nr_units;
	uint64_t nr_chunks;
	uintptr_t *chunks;   /* per chunk: 0, a uniform entry or an array (chain_map.c) */
	pthread_mutex_t map_lock;
};

/* chain_map.c */
int chain_map_init(struct chain *c);
void chain_map_destroy(struct chain *c);
/* Build chunk ci if needed; -EAGAIN when it is not built and build is false. */
int chain_map_chunk(struct chain *c, uint64_t ci, bool build);
/* Entry of unit u; -EAGAIN when its chunk is not built and build is false. */
int chain_map_get(struct chain *c, uint64_t u, bool build, uint8_t *out);
/* Entry *e of unit u and *nr_units (1 .. max_units) units from u that share
 * it; stops before a chunk that is not built (build false) or fails. */
int chain_map_run(struct chain *c, uint64_t u, uint64_t max_units, bool build,
		  uint8_t *e, uint64_t *nr_units);
void chain_map_set(struct chain *c, uint64_t first_unit, uint64_t nr_units, uint8_t e);
/* Recompute the entries of [off, off+len) from the layers (after a failed
 * write whose effect is unknown). */
int chain_map_refresh(struct chain *c, uint64_t off, uint64_t len);

/* chain_io.c: the map entry of off's unit and the bytes from off (up to
 * len) whose units share it; -EAGAIN when off's chunk is not built and
 * build is false. */
int chain_io_run(struct chain *c, uint64_t off, uint64_t len, bool build,
		 uint8_t *e, uint64_t *run);
/* chain_io.c: read [off, off+len) as seen from layer `first` down. */
int chain_io_read_from(struct chain *c, unsigned first, void *buf, size_t len,
		       uint64_t off, bool build);

/* chain_pool.c: take a parent layer from the pool (opened read-only and,
 * when lock, locked on first use); put it back (closed by the last user). */
struct stat;
int chain_pool_get(struct chain_pool *p, const char *path, const struct stat *st,
		   unsigned vflags, const struct vd_io *io, bool lock,
		   struct vmdk_disk **out);
int chain_pool_put(struct chain_pool *p, struct vmdk_disk *d);

/* chain_lock.c */
int chain_lock_layer(struct chain *c, unsigned i, bool writable);

#endif
