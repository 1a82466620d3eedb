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

/* chain_hint.c: chain_hint_resolve without the message. */
int chain_hint_find(const char *child_path, const char *hint, const char *native_hint,
		    char **out);

/* chain_pool.c: take a parent layer from the pool (opened read-only and,
 * when lock, locked on first use); put it back (closed by the last user). */
struct stat;
int chain_pool_get(struct chain_pool *p, const char *path, const struct stat *st,
		   unsigned vflags, const struct vd_io *io, bool lock,
		   struct vmdk_disk **out);
int chain_pool_put(struct chain_pool *p, struct vmdk_disk *d);

/* chain_lock.c */
int chain_lock_layer(struct chain *c, unsigned i, bool writable);

/* ---- group operations (chain_group.c, chain_intent.c, chain_commit.c,
 * chain_delete.c, chain_rewrite.c, chain_promote.c, chain_repair.c,
 * chain_relocate.c) ---- */

#define GROUP_MAX_RECORD 65536u /* bytes of a sidecar or intent record */
#define GROUP_MAX_LIST 4096u    /* children / files in one record */

struct chain_group {
	struct chain_tree *t;
	char ***unseen;      /* per node: recorded children not found */
	unsigned *nr_unseen;
	unsigned *users_unseen; /* unseen at the node or any layer above it */
};

/* A parsed intent record (chain_intent.c). */
struct group_intent {
	char *path;      /* the record itself */
	char *op;        /* "commit", "pull", "delete", "revert", ... */
	char *target;    /* the layer operated on */
	char *parent;    /* commit: the layer merged into; pull: the layer merged
			  * away; delete: kept parent; promote: the shared
			  * layer that loses its record */
	char *grandparent; /* pull: the parent's parent (NULL: it was a base) */
	char *cid;       /* pull: the target's CID (8 hex digits) to keep */
	char *long_cid;  /* pull: its ddb.longContentID, when it had one */
	char *tmp;       /* revert, repair, promote: the staging folder */
	bool unfreeze;   /* commit: the parent becomes a top */
	bool publish;    /* revert, repair, promote: the staged layer is being
			  * swapped in (chain_stage.c P1): finish, never discard */
	char **children; /* commit: re-pointed; delete: removed from a record */
	unsigned nr_children;
	char **files;    /* files to remove, in order */
	unsigned nr_files;
	char **created;  /* relocate: files made in the destination (rollback) */
	unsigned nr_created;
	char *attach;    /* relocate: a kept layer whose record gains attach_child */
	char *attach_child;
};

/* chain_group.c */
/* Write text to path durably: temp + fsync + rename + folder fsync. */
int group_write_file(const char *path, const char *text, size_t len,
		     const struct vd_io *io);
/* Read a small text file (at most GROUP_MAX_RECORD bytes); -ENOENT if none. */
int group_read_file(const char *path, char **out);
/* Replace in parent's sidecar the record of `gone` by `added` (either may be
 * NULL / empty). */
int group_record_update(const char *parent, const char *gone, char *const *added,
			unsigned nr_added, const struct vd_io *io);
int group_record_child(const char *parent, const char *child, bool add,
		       const struct vd_io *io);
int group_unlink(const char *path, const struct vd_io *io);
int plan_add(struct chain_plan *p, enum chain_step_kind kind, const char *path,
	     uint64_t bytes);
/* Free bytes in path's folder; refuse (-ENOSPC, reported) when short. */
int plan_space(struct chain_plan *p, const char *path);
/* Refuse (-EBUSY) changing node: names the other disks. */
int group_refuse_shared(const struct chain_group *g, int node, const char *what);
bool same_file(const char *a, const char *b);
/* The node of layer (*l) and its parent's (returned), refusing (reported)
 * a layer not found, without a parent or with a broken link. */
int group_merge_node(const struct chain_group *g, const char *layer, const char *what,
		     int *l);
/* Add the layer's files (descriptor first) and its sidecar record to in. */
int group_add_layer_files(struct group_intent *in, const char *layer);
/* Remove in's files in order, then fsync their folder. */
int group_remove_files(const struct group_intent *in, const struct vd_io *io);

/* chain_intent.c */
int intent_write(const struct group_intent *in, const struct vd_io *io);
int intent_read(const char *path, struct group_intent *out);
void intent_free(struct group_intent *in);
int intent_done(const struct group_intent *in, const struct vd_io *io);
/* in: op on path with a hidden staging folder .NAME.vdelta-OP beside it. */
int intent_init_tmp(const char *path, const char *op, struct group_intent *in);
/* Paths of every file of the layer at path (descriptor first). */
int layer_files(const char *path, char ***files, unsigned *nr);
void strv_free(char **v, unsigned n);
int strv_add(char ***v, unsigned *n, const char *s);

/* chain_rewrite.c: replace the layer at path by a fresh copy of the same
 * kind (same CID and DDB keys) swapped in through the staging folder.
 * flatten=false: the layer alone, same parent; true: the content of its
 * whole chain, no parent (an ESXi delta becomes a vmfs base).
 * unrecord_from (may be NULL): drop the layer from that layer's sidecar
 * record once it no longer reads it.  layer_rewrite_check: -ENOTSUP
 * (reported, with the reason) for a layer that cannot be rewritten. */
int layer_rewrite(const char *path, const char *op, bool flatten,
		  const char *unrecord_from, struct chain_plan *plan,
		  const struct vd_io *io);
int layer_rewrite_check(const char *path, bool flatten);
/* Create options for a new layer like top (its kind, geometry, grain,
 * split; adapter and hardware version from base when top lacks them):
 * flatten=false over top's parent, true a base.  -ENOTSUP (reported) for
 * flat, stream and custom layers. */
struct vmdk_create_opts;
int layer_like(struct vmdk_disk *top, struct vmdk_disk *base, bool flatten,
	       struct vmdk_create_opts *o);
/* chain_rewrite.c: 0 when dst reads like src (a chain, often one layer
 * opened with CHAIN_OPEN_NO_PARENT) over the whole capacity and, when
 * alloc, holds the same runs; -EIO (not reported) when it does not.  buf
 * and buf2 hold LAYER_CMP_BUF bytes each. */
#define LAYER_CMP_BUF (4u << 20)
int layer_compare(struct chain *src, struct vmdk_disk *dst, bool alloc, uint8_t *buf,
		  uint8_t *buf2);

/* chain_commit.c: the layer at child gets parentCID cid and a hint to
 * parent (relative to child's folder when possible); a durable descriptor
 * rewrite under a writer's lock. */
int layer_repoint(const char *child, const char *parent, uint32_t cid,
		  const struct vd_io *io);

/* chain_stage.c: replace the layer in->target (in from intent_init_tmp):
 * the record is written with the layer's files, fill(opaque, staged, io)
 * makes the new layer at `staged` (the staging folder in->tmp + the
 * layer's own name) complete, fsynced and verified, then it is published
 * (P1-P6: extents before the descriptor).  A failure before P1 rolls back;
 * from P1 on, recovery finishes. */
typedef int stage_fill_fn(void *opaque, const char *staged, const struct vd_io *io);
int stage_run(struct group_intent *in, stage_fill_fn *fill, void *opaque,
	      const struct vd_io *io);
/* Recovery: finish a publish, or discard what was staged. */
int stage_resume(const struct group_intent *in, const struct vd_io *io);

/* chain_commit.c: bytes of data (not zeroed grains) the layer holds. */
int held_bytes(const char *layer, uint64_t *out);

/* chain_pull.c: bytes a pull of layer node l's parent into l copies, and
 * whether l may take it (-ENOTSUP, not reported, when its kind cannot). */
int pull_bytes(const char *layer, const char *parent, uint64_t *out);
int pull_eligible(const char *layer);

/* chain_commit.c / chain_pull.c / chain_delete.c: resume from an intent record */
int commit_resume(const struct group_intent *in, const struct vd_io *io);
int pull_resume(const struct group_intent *in, const struct vd_io *io);
int delete_resume(const struct group_intent *in, const struct vd_io *io);
int relocate_resume(const struct group_intent *in, const struct vd_io *io);

#endif
