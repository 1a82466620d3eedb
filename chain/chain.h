/* chain — the copy-on-write chain layer (layer 2): a disk is a chain of
 * VMDK layers, a top and its parents down to a base.  Reads fall through
 * the layers, writes land in the top only.
 *
 * Owns: opening a chain from its top (parent hint resolution, CID /
 * capacity / cycle / depth validation, qemu-compatible locking), the merged
 * grain map, reads and copy-on-write writes, freezing, and the chain
 * operations (snapshot, linked / from-current / full clones, digest, tree).
 * Uses only vmdk.h and common.h.
 *
 * Units: bytes unless the name says otherwise.  Layer 0 is the top; layer
 * chain_depth()-1 is the base.
 *
 * MERGED MAP: the virtual disk is cut into map units (the top's grain size,
 * or 64 KiB when the top has no grains).  For each unit the map holds ONE
 * BYTE: the index of the topmost layer that holds the unit (data or a
 * zeroed grain), "nobody" (zeros), or "mixed" (the unit is split between
 * layers of finer grain; such units are read by walking the layers).  It is
 * built lazily, CHAIN_MAP_CHUNK units at a time, from each layer's block
 * status, and kept current by every write.  Memory: 1 byte per unit of
 * virtual size (16 KiB per GiB with 64 KiB grains) plus one pointer per
 * chunk.  A read costs one map lookup whatever the depth, and a run of
 * units owned by one layer is read with one call into that layer.
 *
 * FROZEN LAYERS: a layer that has (or is about to get) a child is marked in
 * its descriptor with ddb.vdelta.frozen = "1" (VMware and qemu ignore
 * unknown DDB keys).  chain_open refuses to open a frozen top for writing.
 * Parents are always opened read-only, so a frozen layer's CID never
 * changes.
 *
 * LOCKING (qemu's scheme, see vmdk_lock in vmdk.h): a writable top holds
 * read+write+resize and denies write+resize; a read-only top and every
 * parent hold read and deny write+resize.  A conflict is -EAGAIN with a
 * message naming the file, the permission and, when it can be found, the
 * holding process.  CHAIN_OPEN_NOLOCK (qemu's force-share) skips it.
 *
 * THREAD MODEL: a struct chain may be shared by threads.  chain_pread,
 * chain_pwrite, chain_pwrite_zeroes, chain_status and chain_flush may run
 * concurrently.  Map entries are single bytes read and written atomically;
 * chunks are built under one mutex and published with release ordering.
 * Writes to one grain are serialised by the format layer (which holds the
 * top's mutex for a copy-on-write and calls back into the chain to read the
 * layers below; that callback never builds map chunks or touches the top,
 * so it cannot deadlock).  A concurrent read of a range being written
 * returns old or new data per unit.  chain_open/chain_close are not
 * concurrent with I/O.
 *
 * ERRORS: 0 or -errno; every failure is reported once through the common
 * log callback naming the file(s) involved.  Broken links: CID mismatch
 * -ESTALE (names both files and both CIDs), missing parent -ENOENT,
 * capacity mismatch -VD_EBADDATA, cycle or too deep -ELOOP, frozen top
 * opened for writing -EPERM, lock conflict -EAGAIN.
 */
#ifndef VDELTA_CHAIN_H
#define VDELTA_CHAIN_H

#include "common.h"
#include "vmdk.h"

/* vSphere allows 32 snapshot levels; qemu has no bound.  128 keeps map
 * entries in a byte and the read walk's recursion shallow. */
#define CHAIN_MAX_DEPTH 128u
#define CHAIN_MAP_CHUNK 4096u /* units built at once */
#define CHAIN_FROZEN_KEY "ddb.vdelta.frozen"

struct chain;

enum {
	CHAIN_OPEN_RDONLY = 0,
	CHAIN_OPEN_RDWR = 1,        /* the top only; parents are always read-only */
	CHAIN_OPEN_IGNORE_CID = 2,  /* forensics: warn on a CID mismatch (read-only) */
	CHAIN_OPEN_NOLOCK = 4,      /* take no locks (like qemu's -U) */
	CHAIN_OPEN_DIRTY_OK = 8,    /* pass VMDK_OPEN_DIRTY_OK to every layer */
	CHAIN_OPEN_NO_PARENT = 16,  /* open the top alone (no parents, no map
				     * fall-through: unallocated reads as zeros) */
	CHAIN_OPEN_STRICT_PATHS = 32, /* pass VMDK_OPEN_STRICT_PATHS to every layer */
};

/* ---- open / close ---------------------------------------------------------- */

/* Open the disk whose top layer is `path` and every parent below it.
 * `io` NULL means POSIX. */
int chain_open(const char *path, unsigned flags, const struct vd_io *io,
	       struct chain **out);
/* ---- layer pool (chain_pool.c) ---------------------------------------------
 * Chains opened with a pool share their parents: one struct vmdk_disk (one
 * descriptor, one copy of the grain tables, one lock) per parent file,
 * refcounted, whatever the number of chains that reach it.  Tops stay
 * private.  A pool outlives its chains: close them all, then destroy it.
 * Thread model: open/close of pooled chains may run concurrently (the pool
 * has a mutex); I/O never touches the pool. */
struct chain_pool;
int chain_pool_create(struct chain_pool **out);
void chain_pool_destroy(struct chain_pool *p); /* NULL is a no-op */
unsigned chain_pool_nr_layers(struct chain_pool *p); /* files held open */
/* chain_open with every parent taken from `pool` (NULL: like chain_open). */
int chain_open_pool(const char *path, unsigned flags, const struct vd_io *io,
		    struct chain_pool *pool, struct chain **out);

/* Close every layer (top first); returns the first error. NULL is a no-op. */
int chain_close(struct chain *c);

uint64_t chain_capacity(const struct chain *c);
unsigned chain_depth(const struct chain *c); /* layers, >= 1 */
struct vmdk_disk *chain_layer(const struct chain *c, unsigned i);
const char *chain_path(const struct chain *c); /* the top as opened */
bool chain_writable(const struct chain *c);
uint64_t chain_unit(const struct chain *c); /* map unit, bytes */

/* ---- data ------------------------------------------------------------------ */

int chain_pread(struct chain *c, void *buf, size_t len, uint64_t off);
/* Writes go into the top; a partial write into a grain the top lacks copies
 * the rest of the grain up from the layers below. */
int chain_pwrite(struct chain *c, const void *buf, size_t len, uint64_t off);
int chain_pwrite_zeroes(struct chain *c, size_t len, uint64_t off);
int chain_flush(struct chain *c);

/* ---- map --------------------------------------------------------------------- */

enum chain_kind {
	CHAIN_DATA,    /* layer `layer` holds the bytes */
	CHAIN_ZERO,    /* layer `layer` has zeroed grains (masks what is below) */
	CHAIN_UNALLOC, /* no layer holds it: zeros; layer = -1 */
};

struct chain_run {
	uint64_t off, len;
	enum chain_kind kind;
	int layer;
};

/* The run at `off` (at most max_len, never past capacity) with one owner
 * and kind.  Runs are merged like `qemu-img map`. */
int chain_status(struct chain *c, uint64_t off, uint64_t max_len, struct chain_run *out);
/* The same as VMDK block status of the whole disk: DATA, ZERO (zeroed or
 * unallocated everywhere reads as zeros: ZERO when a layer masks,
 * UNALLOC when nobody holds it). For readers like tools_disk. */
int chain_block_status(struct chain *c, uint64_t off, uint64_t max_len,
		       enum vmdk_bs *kind, uint64_t *run_len);

/* ---- frozen layers ------------------------------------------------------------- */

bool chain_is_frozen(struct vmdk_disk *d);
/* Mark the layer at `path` frozen (descriptor rewrite; CID unchanged). */
int chain_freeze(const char *path, const struct vd_io *io);

/* ---- operations (chain_ops.c, chain_clone.c) -------------------------------------
 * NEW paths must not exist.  Parent hints are written relative to NEW's
 * folder where possible. */

/* Freeze the top of DISK and add an empty delta beside it
 * (name-000001.vmdk, -000002, ...: the next free number).  *new_top is the
 * new top's path (malloc'd).  A chain already CHAIN_MAX_DEPTH deep is
 * refused (-ELOOP), nothing written; the new files hold a writer's lock
 * while they are made. */
int chain_snapshot(const char *disk, const struct vd_io *io, char **new_top);
/* A blank delta at new_path over the layer `parent`.  require_frozen:
 * refuse a parent that is not frozen (clone --linked); otherwise freeze it
 * (create --parent).  Depth and locks as chain_snapshot. */
int chain_create_child(const char *parent, const char *new_path, bool require_frozen,
		       const struct vd_io *io);

/* The kind of a new delta: monolithicSparse, twoGbMaxExtentSparse,
 * vmfsSparse, seSparse, or CHAIN_DELTA_AUTO for what the parent's product
 * makes there (rule in chain_ops.c). */
#define CHAIN_DELTA_AUTO VMDK_SUBFORMAT_COUNT
struct chain_child_opts {
	enum vmdk_subformat kind;
	/* CHAIN_OPEN_DIRTY_OK: freeze a parent whose uncleanShutdown is set */
	unsigned flags;
};
/* chain_snapshot / chain_create_child with options (NULL-free: pass
 * { .kind = CHAIN_DELTA_AUTO } for the defaults). */
int chain_snapshot_opts(const char *disk, const struct chain_child_opts *o,
			const struct vd_io *io, char **new_top);
int chain_create_child_opts(const char *parent, const char *new_path, bool require_frozen,
			    const struct chain_child_opts *o, const struct vd_io *io);
/* Copy only DISK's top delta to new_path, sharing every layer below. */
int chain_clone_from_current(const char *disk, const char *new_path,
			     const struct vd_io *io);
/* One independent disk at new_path with the chain's content.  The _ex
 * form takes `preallocate` (flat and vmfs only: every byte allocated). */
int chain_clone_full(const char *disk, const char *new_path, enum vmdk_subformat sf,
		     const struct vd_io *io);
int chain_clone_full_ex(const char *disk, const char *new_path, enum vmdk_subformat sf,
			bool preallocate, const struct vd_io *io);

/* ---- digest (chain_digest.c) ------------------------------------------------------
 * XXH3-128 of the logical content; hex is the canonical (big-endian) form
 * that `xxhsum -H2` prints.  Zero runs are hashed from a static buffer
 * without reading. */
int chain_digest(struct chain *c, uint8_t out[16]);
void chain_digest_hex(const uint8_t d[16], char hex[33]);

/* ---- tree (chain_tree.c) ----------------------------------------------------------
 * Every VMDK disk found in some folders (descriptors and single-file disks;
 * extent files are recognised and skipped), linked to its parent.  Parents
 * outside the folders are added too.  Nothing is locked or written. */

enum {
	CHAIN_TREE_BROKEN = 1u << 0,  /* parentCID != the parent's CID */
	CHAIN_TREE_MISSING = 1u << 1, /* the parent hint resolves to nothing */
	CHAIN_TREE_ORPHAN = 1u << 2,  /* frozen, but no disk uses it any more */
	CHAIN_TREE_UNREADABLE = 1u << 3, /* vmdk_open failed (reported) */
	CHAIN_TREE_OUTSIDE = 1u << 4, /* a parent outside the folders scanned */
	CHAIN_TREE_CAPACITY = 1u << 5, /* capacity differs from the parent's */
};

struct chain_tree_node {
	char *path;
	int parent;           /* index, -1 for a base or a missing parent */
	uint32_t cid, parent_cid;
	const char *hint;     /* points into hint_buf; NULL for a base */
	char *hint_buf;
	uint64_t capacity;
	uint64_t file_bytes;  /* bytes of storage of every file of the layer */
	unsigned nr_children;
	unsigned reach;       /* disks (leaves) whose chain includes this layer */
	bool frozen;
	unsigned flags;       /* CHAIN_TREE_* */
	uint64_t full_bytes;  /* leaves: data bytes of the whole chain */
	int root;             /* index of its group's root */
};

struct chain_tree {
	struct chain_tree_node *nodes;
	unsigned nr_nodes;
	char **intents;       /* intent records found (CHAIN_INTENT_SUFFIX) */
	unsigned nr_intents;
};

#define CHAIN_TREE_MAX_DIR_DEPTH 8u /* subfolder levels a scan descends */
#define CHAIN_INTENT_SUFFIX ".vdelta-intent"
#define CHAIN_CHILDREN_SUFFIX ".vdelta-children"

/* The folders are scanned recursively (see chain_tree.c for the bounds). */
int chain_tree_scan(char *const *dirs, unsigned nr_dirs, struct chain_tree **out);
void chain_tree_free(struct chain_tree *t);

/* ---- serving core (chain_serve.c) ------------------------------------------------
 * The set of disks one server process (a FUSE mount, later an NBD server)
 * exposes: each disk a chain opened through one shared pool, a mode, and
 * live counters.  Front ends translate their requests into the calls
 * below and never see a struct chain's internals.
 *
 * Modes: RW writes into the top (a frozen top is -EPERM, see chain_open);
 * RO opens it read-only; NONPERSISTENT writes into a throw-away delta over
 * the top, made in $TMPDIR (or /tmp) and unlinked as soon as it is open,
 * so no file of the disk changes and nothing is left behind even after a
 * kill; SNAPSHOT runs chain_snapshot at add time (the top is frozen as it
 * is) and writes into the new delta (chain_served_top names it).
 * RW, NONPERSISTENT and SNAPSHOT open the written top with
 * CHAIN_OPEN_DIRTY_OK: a top left unclean by a crash is recovered by the
 * format layer (redundant tables brought in line), which says so.
 *
 * Close order (chain_server_close): every disk flushed, then each chain
 * closed (top first: its final flush, unclean flag cleared, locks
 * released), then the pool's shared layers.
 *
 * THREAD MODEL: add/close are single-threaded (before and after serving);
 * read/write/zero/flush/map/stats of any disks may run concurrently
 * (counters are atomic; no lock on the read path).
 * ERRORS: 0/-errno, reported once.  A read past the end returns fewer
 * bytes (0 at or past the end); a write past the end is -EFBIG; a write
 * to a read-only disk is -EROFS. */
enum chain_serve_mode {
	CHAIN_SERVE_RW,
	CHAIN_SERVE_RO,
	CHAIN_SERVE_NONPERSISTENT,
	CHAIN_SERVE_SNAPSHOT,
};

struct chain_server;
struct chain_served;

struct chain_serve_stats {
	uint64_t reads, read_bytes;
	uint64_t writes, write_bytes;
	uint64_t flushes;
	uint64_t cow_grains;    /* partial writes into a grain held below the top */
	uint64_t zero_bytes;    /* read bytes no layer holds */
	uint64_t walked_bytes;  /* read bytes of mixed units (layers walked) */
	uint64_t direct_bytes;  /* read bytes handed out as (fd, offset) */
	unsigned nr_layers;
	uint64_t layer_bytes[CHAIN_MAX_DEPTH]; /* read bytes served by layer i */
};

const char *chain_serve_mode_name(enum chain_serve_mode m);
int chain_serve_mode_parse(const char *s, enum chain_serve_mode *out);

int chain_server_create(struct chain_server **out);
/* Open the disk whose top is `path` in `mode`, served under `name`. */
int chain_server_add(struct chain_server *s, const char *path, const char *name,
		     enum chain_serve_mode mode, struct chain_served **out);
unsigned chain_server_nr_disks(const struct chain_server *s);
struct chain_served *chain_server_disk(const struct chain_server *s, unsigned i);
struct chain_pool *chain_server_pool(const struct chain_server *s);
/* Flush every disk (first error returned, every disk tried). */
int chain_server_flush(struct chain_server *s);
/* Flush, close every chain, then the pool; frees s.  NULL is a no-op. */
int chain_server_close(struct chain_server *s);

const char *chain_served_name(const struct chain_served *d);
/* The top layer the disk was asked for / the layer writes go into (the
 * new delta for SNAPSHOT, the top for RW, NULL for RO and NONPERSISTENT). */
const char *chain_served_path(const struct chain_served *d);
const char *chain_served_top(const struct chain_served *d);
enum chain_serve_mode chain_served_mode(const struct chain_served *d);
uint64_t chain_served_size(const struct chain_served *d);
bool chain_served_writable(const struct chain_served *d);
struct chain *chain_served_chain(const struct chain_served *d);

/* Read up to len bytes at off into buf; *done is what was read (short
 * only at the end of the disk). */
int chain_served_read(struct chain_served *d, void *buf, size_t len, uint64_t off,
		      size_t *done);
/* The fast read path: the same read as a list of at most max segments,
 * in order, *nr of them.  A segment with fd >= 0 is len bytes at pos of
 * that layer file (a descriptor owned by the server: read it with
 * pread/splice before the server closes; never write it); one with fd -1
 * is len bytes at mem, filled here inside buf (len bytes, the caller's).
 * Runs stored as plain bytes (flat data, uncompressed allocated grains,
 * see vmdk_file_map) are mapped, the rest copied; a read mapped whole
 * copies nothing.  max 0: everything copied into buf (chain_served_read). */
struct chain_serve_seg {
	int fd;
	uint64_t pos;
	size_t len;
	void *mem;
};
int chain_served_read_segs(struct chain_served *d, void *buf, size_t len, uint64_t off,
			   struct chain_serve_seg *segs, unsigned max, unsigned *nr,
			   size_t *done);
int chain_served_write(struct chain_served *d, const void *buf, size_t len,
		       uint64_t off);
int chain_served_write_zeroes(struct chain_served *d, size_t len, uint64_t off);
/* Every acknowledged write and its tables durable (fsync of the top). */
int chain_served_flush(struct chain_served *d);
void chain_served_stats(struct chain_served *d, struct chain_serve_stats *out);

/* ---- paths (chain_hint.c) --------------------------------------------------------- */

/* Resolve a parent hint seen in `child_path`: relative to the child's
 * folder, absolute, a Windows path by its basename in the child's folder,
 * then native_hint (ddb.nativeParentHint, may be NULL) the same way.
 * *out is malloc'd; -ENOENT (reported) when nothing exists. */
int chain_hint_resolve(const char *child_path, const char *hint,
		       const char *native_hint, char **out);
/* The hint to write in a child at child_path for parent_path: relative to
 * the child's folder when both are reachable that way, else absolute. */
int chain_hint_make(const char *child_path, const char *parent_path, char **out);

/* ---- groups (chain_group.c, chain_commit.c, chain_delete.c, chain_relocate.c) ----
 * A group is every disk that reaches one base.  A layer is SHARED when more
 * than one disk reaches it, or when it recorded giving a child (sidecar
 * LAYER.vmdk CHAIN_CHILDREN_SUFFIX, written by snapshot / create --parent /
 * clone --linked / --from-current) that the scan does not find: a clone
 * moved out of reach still counts.  Disks are found by scanning,
 * recursively, the folders of the disk and of its base plus scan_dirs.
 *
 * Every operation refuses (-EBUSY, message naming the other disks, nothing
 * written) to modify, merge into or delete a shared layer.  Each is a list
 * of numbered steps (docs/architecture.md "Write ordering") safe to stop
 * anywhere: an intent record (TARGET CHAIN_INTENT_SUFFIX) written first
 * lets chain_group_load (and so every group command) finish the work after
 * a crash; every disk then reads exactly its old or its new content.
 *
 * THREAD MODEL: one thread per group; nothing else may write the group's
 * files meanwhile (the layers touched are locked like qemu does). */

struct chain_group;

enum chain_step_kind {
	CHAIN_STEP_WRITE,    /* data copied into an existing layer */
	CHAIN_STEP_CREATE,   /* a new layer file */
	CHAIN_STEP_REMOVE,   /* a layer deleted */
	CHAIN_STEP_REPOINT,  /* parentCID / hint rewritten */
	CHAIN_STEP_UNFREEZE, /* frozen mark cleared (it became a top) */
	CHAIN_STEP_ORPHAN,   /* left without any disk (kept unless asked) */
	CHAIN_STEP_KEEP,     /* shared: untouched */
	CHAIN_STEP_CLEAN,    /* stale unclean flag cleared, redundant tables synced */
	CHAIN_STEP_COMPACT,  /* rewritten without leaked grains, same content/CID */
	CHAIN_STEP_PULL,     /* its parent's data copied into it (the parent goes) */
};

struct chain_plan_step {
	enum chain_step_kind kind;
	char *path;
	uint64_t bytes; /* data to copy (WRITE/CREATE) or freed (REMOVE) */
};

typedef void chain_progress_fn(void *opaque, uint64_t done, uint64_t total);

struct chain_plan {
	const char *op;
	struct chain_plan_step *steps;
	unsigned nr_steps;
	uint64_t copy_bytes;   /* data to move */
	uint64_t space_needed; /* new storage, at most */
	uint64_t space_avail;  /* free bytes where it goes (statvfs) */
	char *result;          /* the disk's top afterwards (malloc'd), NULL if gone */
	chain_progress_fn *progress; /* optional, set by the caller */
	void *progress_opaque;
};

enum {
	CHAIN_GROUP_DRY_RUN = 1u << 0, /* plan only: nothing written */
	CHAIN_GROUP_ORPHANS = 1u << 1, /* delete: remove orphaned layers too */
};

/* Recover every intent record in the folders, then scan them.  disk may be
 * any layer of the group. */
int chain_group_load(const char *disk, char *const *scan_dirs, unsigned nr_dirs,
		     const struct vd_io *io, struct chain_group **out);
void chain_group_free(struct chain_group *g);
const struct chain_tree *chain_group_tree(const struct chain_group *g);
/* Node of the layer at path (same file), or -ENOENT. */
int chain_group_node(const struct chain_group *g, const char *path);
/* Disks (leaf paths) reaching node, plus recorded children not found. */
unsigned chain_group_nr_users(const struct chain_group *g, int node);
bool chain_group_shared(const struct chain_group *g, int node);
/* Finish or roll back the operation of one intent record. */
int chain_group_recover(const char *intent_path, const struct vd_io *io);
/* The intent records beside path and beside every layer its chain names
 * (their folders read, not recursed; links' CIDs not checked), for a
 * command that is not a group command to recover before it opens the disk.
 * *out: malloc'd paths (free each and the array).  Messages: only those of
 * opening the chain (a caller may silence them: a file that is not a
 * VMDK or a broken chain just yields fewer folders). */
int chain_group_intents_near(const char *path, char ***out, unsigned *nr);
/* The same for many disks at once, each folder read once (a record near
 * several of them is listed once). */
int chain_group_intents_near_all(const char *const *paths, unsigned nr_paths,
				 char ***out, unsigned *nr);
/* Record in parent's sidecar that child was made over it. */
int chain_group_record_child(const char *parent, const char *child,
			     const struct vd_io *io);

/* Merge LAYER into its parent, re-point LAYER's children, remove LAYER. */
int chain_group_commit(struct chain_group *g, const char *layer, unsigned flags,
		       const struct vd_io *io, struct chain_plan *plan);
/* The other direction (chain_pull.c): LAYER's parent's data that LAYER does
 * not override goes into LAYER, LAYER is re-pointed to the grandparent (or
 * becomes a base), the parent is removed; LAYER keeps its name and CID.
 * Refused when LAYER or its parent is shared, or LAYER is not a hosted
 * sparse layer (-ENOTSUP). */
int chain_group_pull(struct chain_group *g, const char *layer, unsigned flags,
		     const struct vd_io *io, struct chain_plan *plan);
/* Remove DISK's unshared layers. */
int chain_group_delete(struct chain_group *g, const char *disk, unsigned flags,
		       const struct vd_io *io, struct chain_plan *plan);
/* Replace DISK's top by an empty delta over the same parent. */
int chain_group_revert(struct chain_group *g, const char *disk, unsigned flags,
		       const struct vd_io *io, struct chain_plan *plan);
/* promote --unlink (chain_promote.c): the disk's lowest unshared layer is
 * rewritten with everything it reads from the shared layers below (same
 * CID), so the disk reaches no shared layer; an empty plan when it reaches
 * none already. */
int chain_group_promote_unlink(struct chain_group *g, const char *disk, unsigned flags,
			       const struct vd_io *io, struct chain_plan *plan);
/* consolidate (= promote without --unlink): every layer of DISK between its
 * top and the first shared layer, except the kept ones, is committed into
 * its parent, lowest first; the group is loaded (and recovered) here. */
int chain_group_consolidate(const char *disk, char *const *scan, unsigned nr_scan,
			    char *const *keep, unsigned nr_keep, unsigned flags,
			    const struct vd_io *io, struct chain_plan *plan);
/* relocate (chain_relocate.c): move DISK (a top) to the existing folder
 * dir.  CHILD_MOST: the top only, its hint re-pointed at the parent where
 * it stays.  NO_SHARE: every layer of the chain: the unshared ones are
 * moved, the shared ones copied (the originals stay for the other disks).
 * SHARE: as NO_SHARE, but a layer already in dir under the same name with
 * the same CID, content and allocation (and, above the base, the same
 * parent) is reattached instead of copied.  Copies keep their CID; a layer
 * is never moved while another disk reaches it. */
enum chain_relocate_mode {
	CHAIN_RELOCATE_CHILD_MOST,
	CHAIN_RELOCATE_SHARE,
	CHAIN_RELOCATE_NO_SHARE,
};
int chain_group_relocate(struct chain_group *g, const char *disk, const char *dir,
			 enum chain_relocate_mode mode, unsigned flags,
			 const struct vd_io *io, struct chain_plan *plan);
/* `check --repair` of the layer at path (chain_repair.c): clear a stale
 * unclean flag (any layer no one writes), or compact away leaked grains and
 * damaged tables (refused for a frozen or shared layer).  An empty plan
 * means nothing needed doing. */
int chain_repair(const char *path, unsigned flags, const struct vd_io *io,
		 struct chain_plan *plan);
void chain_plan_free(struct chain_plan *p);
const char *chain_step_name(enum chain_step_kind k);

#endif
