/* group — private declarations of the group layer.  Never included outside
 * group/ (unit tests may).
 */
#ifndef VDELTA_GROUP_INT_H
#define VDELTA_GROUP_INT_H

#include <stddef.h>

#include "group.h"

#define GROUP_MAX_RECORD 65536u /* bytes of an intent record */
/* bytes of a sidecar record: VD_STRV_MAX children of 256 bytes a line (a
 * datastore of thousands of clones of one base) */
#define GROUP_MAX_CHILDREN (1u << 20)

struct group {
	struct group_tree *t;
	char **dirs;         /* the folders scanned */
	unsigned nr_dirs;
	char ***unseen;      /* per node: recorded children not found */
	unsigned *nr_unseen;
	unsigned *users_unseen; /* unseen and aliases at the node or any layer above */
};

/* ---- group.c -------------------------------------------------------------------------- */

/* Scan the folders of disk (may be NULL), of its base and extra into a
 * group; no recovery (group_load, the front door, recovers first). */
int group_scan(const char *disk, char *const *extra, unsigned nr_extra,
	       struct group **out);
/* The same for the folders of several disks (NULL-free, nr_disks of them). */
int group_scan_disks(char *const *disks, unsigned nr_disks, char *const *extra,
		     unsigned nr_extra, struct group **out);
/* The last component of path (path itself when it has no '/'). */
const char *group_base_name(const char *path);
/* Refuse (-EBUSY) changing node: names the other disks. */
int group_refuse_shared(const struct group *g, int node, const char *what);
/* Refuse (-EBUSY) changing a busy node: shared (names the other disks) or
 * with unknown users (names the layer, why, and what makes it safe). */
int group_refuse_busy(const struct group *g, int node, const char *what);
/* The node of layer (*l) and its parent's (returned), refusing (reported)
 * a layer not found, without a parent or with a broken link. */
int group_merge_node(const struct group *g, const char *layer, const char *what, int *l);
/* The node of a disk (a top) an operation changes, refusing (reported) a
 * layer not found, a snapshot or a shared top. */
int group_disk_node(const struct group *g, const char *disk, const char *what);

/* ---- group_lock.c: the locks of one operation ------------------------------------------ */

enum group_lock_mode {
	GROUP_LOCK_NONE, /* not locked: a record edit at most */
	GROUP_LOCK_READ, /* read, and must not change: no writer elsewhere */
	GROUP_LOCK_EXCL, /* removed, moved or written: no other user at all */
};

struct group_locks {
	struct vd_file **files;
	dev_t *dev;
	ino_t *ino;
	enum group_lock_mode *mode;
	unsigned nr;
};

/* Lock the file (a missing one is skipped); a file already in the set is
 * kept, or taken again in the stronger mode.  Refusals reported. */
int group_lock_file(struct group_locks *l, const char *path, enum group_lock_mode m);
/* Every file of the layer at path (a missing layer is skipped). */
int group_lock_layer(struct group_locks *l, const char *layer, enum group_lock_mode m);
void group_locks_release(struct group_locks *l);

/* ---- group_tree.c ---------------------------------------------------------------------- */

/* Read node i's descriptor facts again (CID, parent CID, frozen mark,
 * storage) after an operation of this command wrote the layer. */
int group_tree_refresh(struct group_tree *t, unsigned i);
/* Hang node i from parent (-1: none), keeping nr_children and the child
 * lists (i goes first among its new siblings); constant time. */
void group_tree_move(struct group_tree *t, unsigned i, int parent);

/* ---- group_record.c: the sidecar records of children ------------------------------------ */

/* Recorded children of layer, as paths resolved against its folder. */
int group_record_read(const char *layer, char ***out, unsigned *nr);
/* Replace in parent's record the child `gone` by `added` (either may be
 * NULL / empty); no child left: no record (unless it says others were
 * never recorded).  A record made where there was none, or one saying so
 * already, says others were never recorded unless GROUP_RECORD_COMPLETE. */
int group_record_update(const char *parent, const char *gone, char *const *added,
			unsigned nr_added, unsigned flags, const struct vd_io *io);
/* None; the whole list of children vdelta gave it; or a part only. */
enum group_record_state { GROUP_RECORD_NONE, GROUP_RECORD_WHOLE, GROUP_RECORD_PART };
enum group_record_state group_record_state(const char *layer);
/* Drop child (named before it exists, as group_record_child) from the record. */
int group_record_drop(const char *parent, const char *child, const struct vd_io *io);

/* ---- group_plan.c ------------------------------------------------------------------------ */

int group_plan_add(struct group_plan *p, enum group_step_kind kind, const char *path,
		   uint64_t bytes);
/* A KEEP step for node, saying why it stays (shared, children unknown). */
int group_plan_keep(struct group_plan *p, const struct group *g, int node);
/* Free bytes in path's folder; refuse (-ENOSPC, reported) when short. */
int group_plan_space(struct group_plan *p, const char *path);
/* Report n more bytes moved to the plan's progress callback. */
void group_plan_progress(struct group_plan *p, uint64_t *done, uint64_t n, uint64_t total);

/* ---- group_intent.c: intent records --------------------------------------------------------
 * A record is the head struct group_intent followed by the operation's own
 * fields; the operation's row (struct group_op) describes each field (its
 * key in the text, its kind, where it sits in the record) and the intent
 * layer reads and writes them through that description alone. */

enum group_field_kind {
	GROUP_FIELD_TEXT,  /* char *: a value (a CID, a key's text) */
	GROUP_FIELD_FLAG,  /* bool: "1" when set, absent otherwise */
	GROUP_FIELD_LAYER, /* char *: an absolute path of a layer */
	GROUP_FIELD_LAYERS, /* char ** + unsigned count: absolute layer paths */
	GROUP_FIELD_FILES, /* char ** + unsigned count: absolute paths of files
			    * that exist when the record is written */
	GROUP_FIELD_NEW_FILES, /* the same, of files the operation makes */
};

struct group_field {
	const char *key;
	enum group_field_kind kind;
	size_t off;    /* of the value in the record */
	size_t nr_off; /* lists: of the unsigned count */
	enum group_lock_mode lock; /* layers and files: held while it runs */
};

struct group_intent;

/* One operation kind: a row of the table in group_recover.c. */
struct group_op {
	const char *name; /* op= in the record */
	const struct group_field *fields;
	unsigned nr_fields;
	size_t size; /* of the record: struct group_intent and the fields */
	/* Finish or roll back the operation of a record read back. */
	int (*resume)(struct group_intent *in, const struct vd_io *io);
	/* Optional (group_trust.c T6): 0 when the record's own fields say
	 * what this operation writes there, else reported -VD_EBADDATA. */
	int (*check)(const struct group_intent *in);
	/* Optional: the key of a LAYER field beside which a twin of the
	 * record may lie (group_trust.c T2). */
	const char *twin_key;
};

/* The head of every record. */
struct group_intent {
	const struct group_op *op;
	char *path;   /* the record itself: TARGET GROUP_INTENT_SUFFIX */
	char *target; /* the layer operated on */
	/* read back: 2, or 0 for a record of the release before versions */
	unsigned version;
	char **ids;   /* read back: "DEV:INO:PATH" of the paths that existed */
	unsigned nr_ids;
};

#define GROUP_FIELD_ONE(type, member, k, kd, lk) \
	{ .key = k, .kind = kd, .off = offsetof(type, member), .lock = lk }
#define GROUP_FIELD_LIST(type, member, nr, k, kd, lk) \
	{ .key = k, .kind = kd, .off = offsetof(type, member), .nr_off = offsetof(type, nr), \
	  .lock = lk }

/* A zeroed record of op for target (its path: target + the suffix); *out
 * is the head of op->size bytes, freed with group_intent_free. */
int group_intent_new(const struct group_op *op, const char *target,
		     struct group_intent **out);
int group_intent_write(const struct group_intent *in, const struct vd_io *io);
/* Read the record at path; ops/nr_ops: the table its op= is looked up in. */
int group_intent_read(const char *path, const struct group_op *const *ops,
		      unsigned nr_ops, struct group_intent **out);
/* Lock every layer and file the record names, in the mode its row gives
 * (before the record is written, and before recovery acts on it). */
int group_intent_lock(const struct group_intent *in, struct group_locks *l);
/* Does match accept the target or a path of a layer or file field? */
typedef bool group_intent_match_fn(const char *path, void *opaque);
bool group_intent_names(const struct group_intent *in, group_intent_match_fn *match,
			void *opaque);
/* The last step of every operation: the record (and a stale temporary of
 * it) removed, the folder fsynced. */
int group_intent_done(const struct group_intent *in, const struct vd_io *io);
void group_intent_free(struct group_intent *in); /* NULL is a no-op */
/* Append s to the list field at v / n (the record's own arrays). */
int group_intent_add(char ***v, unsigned *n, const char *s);

/* ---- group_trust.c: which records recovery acts on ------------------------------------------ */

/* 0 when recovery may act on the record read back (files it would remove
 * that are not the ones it was written for are taken out of it); an
 * untrusted record is reported and -VD_EBADDATA / -EPERM. */
int group_trust_record(struct group_intent *in);

/* ---- group_layer.c: a layer's files and descriptor ------------------------------------------ */

/* Paths of every file of the layer at path (descriptor first), each in the
 * layer's folder: what an operation removes, moves or writes (an extent
 * elsewhere is refused, -EPERM, reported).  group_layer_read_files: the
 * same wherever they are, for a layer only read. */
int group_layer_files(const char *path, char ***files, unsigned *nr);
int group_layer_read_files(const char *path, char ***files, unsigned *nr);
/* Refuse (-EINVAL, reported) a name for a new layer that the files made
 * from it would not fit, or that a descriptor cannot carry back. */
int group_layer_check_name(const char *path);
/* Add the layer's files (descriptor first) and its sidecar record to v. */
int group_layer_add_files(char ***v, unsigned *n, const char *layer);
/* Remove path (reported on failure; a missing file is fine). */
int group_layer_unlink(const char *path, const struct vd_io *io);
/* Remove files in order, then fsync their folder. */
int group_layer_remove_files(char *const *files, unsigned nr, const struct vd_io *io);
/* The layer at child gets parentCID cid and a hint to parent (relative to
 * child's folder when possible); a durable descriptor rewrite (the
 * caller's lock set holds child). */
int group_layer_repoint(const char *child, const char *parent, uint32_t cid,
			const struct vd_io *io);
/* Bytes of data (not zeroed grains) the layer holds. */
int group_layer_held_bytes(const char *layer, uint64_t *out);

/* ---- group_sum.c: the read-back check of a data move ----------------------------------------- */

/* Digests of what a copy read from its source and of what its result
 * reads back over the same ranges, in the same order. */
struct XXH3_state_s;
struct group_sum {
	struct XXH3_state_s *copied, *back;
};
int group_sum_open(struct group_sum *s);
void group_sum_close(struct group_sum *s); /* a zeroed or closed one: a no-op */
void group_sum_copied(struct group_sum *s, const void *buf, size_t n);
void group_sum_back(struct group_sum *s, const void *buf, size_t n);
/* Both digests are equal: the result reads back what was copied. */
bool group_sum_same(const struct group_sum *s);
/* check(arg) while vmdk_flush(d) runs on a second thread (one after the
 * other when no thread can be made); the flush's error first, then the
 * check's. */
int group_sum_check_flushing(struct vmdk_disk *d, int (*check)(void *), void *arg);

/* ---- group_stage.c: a layer replaced through a staging folder ------------------------------- */

/* The record of revert, repair and promote --unlink (one layer swapped),
 * and of clone --from-current (one new layer published). */
struct group_stage_rec {
	struct group_intent in;
	char *record_in; /* a new layer: the parent whose record gains it (P1b) */
	char *tmp;     /* the staging folder .NAME.vdelta-OP beside the layer */
	char *parent;  /* promote: the shared layer whose record drops it */
	bool publish;  /* the staged layer is being swapped in: finish */
	char **files;  /* the layer's files before the swap (none: a new one) */
	unsigned nr_files;
};
#define GROUP_STAGE_NR_FIELDS 5u
extern const struct group_field group_stage_fields[GROUP_STAGE_NR_FIELDS];
/* The row of an operation made of one staged swap. */
#define GROUP_STAGE_OP(op_name) \
	{ .name = op_name, .fields = group_stage_fields, \
	  .nr_fields = GROUP_STAGE_NR_FIELDS, .size = sizeof(struct group_stage_rec), \
	  .resume = group_stage_resume, .check = group_stage_check }

/* A record of op for the layer at path with its staging folder. */
int group_stage_new(const struct group_op *op, const char *path,
		    struct group_stage_rec **out);
/* Make the replacement: the record is written with the layer's files,
 * fill(opaque, staged, io) makes the new layer at `staged` complete,
 * fsynced and verified, then it is published (P1-P6).  A failure before P1
 * rolls back; from P1 on, recovery finishes. */
typedef int group_stage_fill_fn(void *opaque, const char *staged, const struct vd_io *io);
int group_stage_run(struct group_stage_rec *r, group_stage_fill_fn *fill, void *opaque,
		    const struct vd_io *io);
/* Recovery: finish a publish, or discard what was staged. */
int group_stage_resume(struct group_intent *in, const struct vd_io *io);
/* A record's staging folder is the one its operation makes for its layer. */
int group_stage_check(const struct group_intent *in);
/* Names in a staging folder (none when it does not exist). */
int group_stage_list(const char *dir, char ***names, unsigned *nr);
/* Remove a staging folder and whatever it holds (reported on failure). */
int group_stage_remove(const char *dir, const struct vd_io *io);

/* ---- group_rewrite.c ------------------------------------------------------------------------
 * Replace the layer at path by a fresh copy of the same kind (same CID and
 * DDB keys) swapped in through the staging folder.  flatten=false: the
 * layer alone, same parent; true: the content of its whole chain, no
 * parent (an ESXi delta becomes a vmfs base).  unrecord_from (may be
 * NULL): drop the layer from that layer's sidecar record once it no longer
 * reads it.  group_rewrite_check: -ENOTSUP (reported, with the reason) for
 * a layer that cannot be rewritten. */
int group_rewrite(const struct group_op *op, const char *path, bool flatten,
		  const char *unrecord_from, struct group_plan *plan,
		  const struct vd_io *io);
int group_rewrite_check(const char *path, bool flatten);
/* Create options for a new layer like top (its kind, geometry, grain,
 * split; adapter and hardware version from base when top lacks them):
 * flatten=false over top's parent, true a base.  -ENOTSUP (reported) for
 * flat, stream and custom layers. */
struct vmdk_create_opts;
int group_rewrite_like(struct vmdk_disk *top, struct vmdk_disk *base, bool flatten,
		       struct vmdk_create_opts *o);
/* 0 when dst reads like src (a chain, often one layer opened with
 * CHAIN_OPEN_NO_PARENT) over the whole capacity: CONTENT the same bytes;
 * RUNS and the same runs held; LAYER the same runs held except zeros src
 * holds where below (the layer's parents, NULL for a base) reads zeros
 * too, which dst may drop.  -EIO (not reported) when it does not.  buf and
 * buf2 hold GROUP_REWRITE_BUF bytes each. */
#define GROUP_REWRITE_BUF (4u << 20)
enum group_cmp { GROUP_CMP_CONTENT, GROUP_CMP_RUNS, GROUP_CMP_LAYER };
int group_rewrite_compare(struct chain *src, struct vmdk_disk *dst, enum group_cmp mode,
			  struct chain *below, uint8_t *buf, uint8_t *buf2);

/* ---- group_commit.c, group_pull.c: the merges with their bytes counted -------------------- */

/* group_commit and group_pull when the caller counted the bytes the merge
 * copies (consolidate, choosing the direction): counted, or NULL to count.
 * depth: the layers pulled into layer, its parent and depth - 1 under it
 * (each reached only through the one above it). */
int group_commit_counted(struct group *g, const char *layer, unsigned flags,
			 const struct vd_io *io, struct group_plan *plan,
			 const uint64_t *counted);
int group_pull_counted(struct group *g, const char *layer, unsigned depth,
		       unsigned flags, const struct vd_io *io, struct group_plan *plan,
		       const uint64_t *counted);

/* ---- group_pull.c ---------------------------------------------------------------------------- */

/* Bytes a pull of layer's parent (and depth - 1 layers under it) into
 * layer copies. */
int group_pull_bytes(const char *layer, const char *parent, unsigned depth,
		     uint64_t *out);
/* 0 when layer can take its parent in (hosted sparse), -ENOTSUP (not
 * reported) otherwise. */
int group_pull_eligible(const char *layer);

/* ---- group_bundle.c, group_bundle_head.c: the bundle stream (docs/bundle.md) ---------------- */

#define GROUP_BUNDLE_VERSION 1u
#define GROUP_BUNDLE_MAX_LAYERS 1024u /* layers, and needs, of one bundle */

/* What a run of a layer holds (its kind in the run table). */
enum group_bundle_kind {
	GROUP_RUN_DATA = 1,   /* the bytes follow in the frame */
	GROUP_RUN_ZERO = 2,   /* zeros (masking the parent) */
	GROUP_RUN_PARENT = 3, /* what the layer's parent reads there: allocated in
			       * the layer, its bytes taken from the parent the
			       * receiver has (a delta only) */
};

/* One run of a frame: len bytes at off of the frame's layer; data (DATA:
 * in the reader's buffer, valid until the next frame; else NULL). */
struct group_bundle_run {
	uint64_t off, len;
	enum group_bundle_kind kind;
	const uint8_t *data;
};

struct group_bundle_writer;
/* A writer to fd; level: zstd's; threads: its workers (0: none). */
int group_bundle_writer_open(int fd, int level, unsigned threads,
			     struct group_bundle_writer **out);
void group_bundle_writer_free(struct group_bundle_writer *w); /* NULL is a no-op */
/* The preamble, the header and every layer header. */
int group_bundle_write_head(struct group_bundle_writer *w, const struct group_bundle_info *b);
/* A run of layer (layers in order, runs ascending in a layer): len bytes
 * of kind (data: its bytes; else NULL).  Cut into frames at multiples of
 * unit (bytes; the layer's grain, so no grain is split where it fits). */
int group_bundle_write_run(struct group_bundle_writer *w, unsigned layer, uint64_t off,
			   uint64_t len, enum group_bundle_kind kind, const void *data,
			   uint64_t unit);
/* The last frame and the trailer. */
int group_bundle_write_end(struct group_bundle_writer *w);
void group_bundle_writer_stats(const struct group_bundle_writer *w, uint64_t *frames,
			       uint64_t *bytes);

struct group_bundle_reader;
/* A reader of fd; name names the stream in messages. */
int group_bundle_reader_open(int fd, const char *name, struct group_bundle_reader **out);
void group_bundle_reader_free(struct group_bundle_reader *r); /* NULL is a no-op */
/* The preamble, header and layer headers, checked.  *out is the caller's
 * and must outlive the reader (frames are checked against it). */
int group_bundle_read_head(struct group_bundle_reader *r, struct group_bundle_info **out);
/* The next frame: its layer and runs (valid until the next call); 1 at
 * the end, once the trailer and every layer's total were checked and
 * nothing follows. */
int group_bundle_read_frame(struct group_bundle_reader *r, unsigned *layer,
			    const struct group_bundle_run **runs, unsigned *nr);
void group_bundle_reader_stats(const struct group_bundle_reader *r, uint64_t *frames,
			       uint64_t *bytes);

/* group_bundle_head.c: the HEAD and LAYR contents; `where` names the block. */
bool group_bundle_name_ok(const char *name);
int group_bundle_head_encode(const struct group_bundle_info *b, uint8_t **out, size_t *len);
int group_bundle_layer_encode(const struct group_bundle_info *b, unsigned i, uint8_t **out,
			      size_t *len);
int group_bundle_head_decode(const char *where, const uint8_t *p, size_t len,
			     struct group_bundle_info *b);
int group_bundle_layer_decode(const char *where, const uint8_t *p, size_t len,
			      struct group_bundle_info *b, unsigned i);
int group_bundle_head_check(const char *where, const struct group_bundle_info *b);

/* ---- group_digest.c ---------------------------------------------------------------------------
 * The digest (canonical XXH3-128, as chain_digest) of what the chain of the
 * layer at path reads, from its sidecar LAYER GROUP_DIGEST_SUFFIX while that
 * still holds, else computed (the chain opened with a reader's locks), and
 * the key of the chain it was taken with (group_digest.c says what the key
 * is and when a sidecar holds).  group_digest_record writes the sidecar of
 * a frozen layer whose key is still d's (not reported when it does not). */
struct group_digest {
	uint8_t digest[16];
	bool cached;  /* it came from the sidecar */
	char *key;    /* malloc'd */
};
int group_digest_get(const char *path, const struct vd_io *io, struct group_digest *d);
void group_digest_record(const char *path, const struct group_digest *d,
			 const struct vd_io *io);
void group_digest_clear(struct group_digest *d);

/* ---- group_unpack_need.c ---------------------------------------------------------------------
 * Find each need of b: a layer with its CID, capacity and digest among
 * opts' bases, the layers in dir and in opts' scan folders (b->needs[i].path
 * set, canonical), checked to take children: frozen, or read-only, or
 * (thaw[i] set) one this unpack may freeze (a base given or in dir); its
 * chain deep enough to hold the layers above it.  A need not found is
 * reported, naming it (and a layer of its CID whose content differs).
 * found[i]: the digest of need i as it was taken (for group_digest_record
 * once the unpack is done). */
int group_unpack_find_needs(struct group_bundle_info *b, const char *dir,
			    const struct group_unpack_opts *o, bool *thaw,
			    struct group_digest *found);

/* ---- operation kinds (group_recover.c holds the table) ------------------------------------------
 * Adding an operation: its file defines `const struct group_op
 * group_op_NAME`, and one X(NAME) line here puts it in the table. */
#define GROUP_OPS(X) \
	X(commit)    \
	X(pull)      \
	X(delete)    \
	X(revert)    \
	X(repair)    \
	X(promote)   \
	X(relocate)  \
	X(clone)     \
	X(unpack)

#define GROUP_OP_DECLARE(n) extern const struct group_op group_op_##n;
GROUP_OPS(GROUP_OP_DECLARE)

#endif
