/* group — linked-clone groups and their life cycle (layer 3): every disk
 * that reaches one base, who shares which layer, and the operations that
 * change several layers of a group without ever changing what another
 * disk reads.
 *
 * Owns: discovery (the disks in folders and their parent links: the tree),
 * sharing (who reaches a layer; the sidecar record of the children a layer
 * was given, LAYER GROUP_CHILDREN_SUFFIX), snapshots and clones (they freeze
 * a parent and record its child), the intent record an operation writes
 * before its first change (LAYER GROUP_INTENT_SUFFIX), the recovery of
 * interrupted operations at the front door, and every life-cycle
 * operation: commit, pull, delete, revert, promote --unlink, consolidate,
 * relocate, repair; and bundles, a group's layers shipped to another host
 * (pack, unpack).  Uses chain.h, vmdk.h and common.h; front ends (fuse/,
 * nbd/, tools/) use it.
 *
 * MODEL: a layer is SHARED when more than one disk reaches it, or when it
 * recorded giving a child that a scan does not find (a clone moved out of
 * reach still counts).  Disks are found by scanning, recursively, the
 * folders of the disk and of its base plus the folders given.  Every
 * operation refuses (-EBUSY, a message naming the other disks, nothing
 * written) to modify, merge into or delete a shared layer.
 *
 * OPERATIONS: each is a list of numbered steps (docs/architecture.md,
 * "Write ordering"; the list is at the top of the operation's file) safe to
 * stop anywhere: the intent record written first lets recovery finish the
 * work or roll it back after a crash, so every disk reads exactly its old
 * or its new content.  Operation kinds sit in one table (group_recover.c):
 * recovery reaches an operation only through its row.
 *
 * FRONT DOOR: every front end runs recovery before it opens a disk:
 * group_load for the group commands, group_serve_add for servers (the
 * mount, the NBD export), group_recover_near for any other command.
 *
 * THREAD MODEL: one thread per group; nothing else may write the group's
 * files meanwhile (the layers touched are locked like qemu does).
 * group_serve_add is called before serving starts, like chain_server_add.
 *
 * ERRORS: 0 or -errno, every failure reported once through the log
 * callback naming the file(s): shared layer -EBUSY, broken link -ESTALE,
 * layer not found -ENOENT, short of space -ENOSPC, a kind vdelta cannot
 * write -ENOTSUP, a lock held elsewhere -EAGAIN, a record that is not
 * vdelta's -VD_EBADDATA.
 */
#ifndef VDELTA_GROUP_H
#define VDELTA_GROUP_H

#include "chain.h"
#include "common.h"
#include "vmdk.h"

#define GROUP_INTENT_SUFFIX ".vdelta-intent"
#define GROUP_CHILDREN_SUFFIX ".vdelta-children"
/* Datastore roots every group command scans, one folder a line (the
 * variable VDELTA_DATASTORES, colon-separated, replaces the file). */
#define GROUP_DATASTORES_FILE "/etc/vdelta/datastores"

/* ---- tree (group_tree.c) -------------------------------------------------------------
 * Every VMDK disk found in some folders (descriptors and single-file disks;
 * extent files are recognised and skipped), linked to its parent.  Parents
 * outside the folders are added too.  Nothing is locked or written. */

enum {
	GROUP_TREE_BROKEN = 1u << 0,  /* parentCID != the parent's CID */
	GROUP_TREE_MISSING = 1u << 1, /* the parent hint resolves to nothing */
	GROUP_TREE_ORPHAN = 1u << 2,  /* frozen, but no disk uses it any more */
	GROUP_TREE_UNREADABLE = 1u << 3, /* vmdk_open failed (reported) */
	GROUP_TREE_OUTSIDE = 1u << 4, /* a parent outside the folders scanned */
	GROUP_TREE_CAPACITY = 1u << 5, /* capacity differs from the parent's */
	GROUP_TREE_GONE = 1u << 6,    /* merged away by this command (no links) */
	GROUP_TREE_UNKNOWN = 1u << 7, /* children found, none recorded: its
				       * children are unknown */
};

struct group_tree_node {
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
	unsigned flags;       /* GROUP_TREE_* */
	uint64_t full_bytes;  /* leaves: data bytes of the whole chain (GROUP_SCAN_SIZES) */
	int root;             /* index of its group's root */
	dev_t dev;            /* identity of the descriptor (or single file) */
	ino_t ino;
	unsigned aliases;     /* other names of the layer: hard links, symlinks
			       * met in the folders, other descriptors of its
			       * extent files */
	int first_child;      /* its children: first_child, then each one's */
	int next_sibling;     /* next_sibling (-1 ends): in index order as
			       * scanned, a node an operation moved first */
};

struct group_tree_index;

struct group_tree {
	struct group_tree_node *nodes;
	unsigned nr_nodes;
	char **intents;       /* intent records found (GROUP_INTENT_SUFFIX) */
	unsigned nr_intents;
	char **unscanned;     /* "PATH: reason": folders and *.vmdk files it could
			       * not read (a clone there is not seen) */
	unsigned nr_unscanned;
	struct group_tree_index *index; /* private: nodes by identity */
};

#define GROUP_TREE_MAX_DIR_DEPTH 8u /* subfolder levels a scan descends */

/* The folders are scanned recursively (see group_tree.c for the bounds).
 * GROUP_SCAN_SIZES: also the space each disk would take as a full clone
 * (reads every leaf's whole map; `tree` wants it, operations do not). */
enum { GROUP_SCAN_SIZES = 1u << 0 };
int group_tree_scan(char *const *dirs, unsigned nr_dirs, unsigned flags,
		    struct group_tree **out);
void group_tree_free(struct group_tree *t);
/* The node of the layer at path (the same file), or -ENOENT. */
int group_tree_find(const struct group_tree *t, const char *path);
/* The node after at in a walk of root's subtree that begins at root
 * (depth first, children in list order), -1 after the last.  Links read
 * from a hostile folder may loop: bound a walk to nr_nodes steps. */
int group_tree_next(const struct group_tree *t, int root, int at);

/* ---- snapshots and clones (group_snapshot.c, group_clone.c) --------------------------
 * NEW paths must not exist.  Parent hints are written relative to NEW's
 * folder where possible.  A parent that gets a child is frozen first and
 * records the child (sidecar) before the child is made. */

/* The kind of a new delta: monolithicSparse, twoGbMaxExtentSparse,
 * vmfsSparse, seSparse, or GROUP_DELTA_AUTO for what the parent's product
 * makes there (rule in group_snapshot.c). */
#define GROUP_DELTA_AUTO VMDK_SUBFORMAT_COUNT
struct group_child_opts {
	enum vmdk_subformat kind;
	/* CHAIN_OPEN_DIRTY_OK: freeze a parent whose uncleanShutdown is set */
	unsigned flags;
};

/* Freeze the top of DISK and add an empty delta beside it
 * (name-000001.vmdk, -000002, ...: the next free number).  *new_top is the
 * new top's path (malloc'd).  A chain already CHAIN_MAX_DEPTH deep is
 * refused (-ELOOP), nothing written; the new files hold a writer's lock
 * while they are made.  o may be NULL (the defaults). */
int group_snapshot(const char *disk, const struct group_child_opts *o,
		   const struct vd_io *io, char **new_top);
/* A blank delta at new_path over the layer `parent`.  require_frozen:
 * refuse a parent that is not frozen (clone --linked); otherwise freeze it
 * (create --parent).  Depth and locks as group_snapshot; o may be NULL. */
int group_create_child(const char *parent, const char *new_path, bool require_frozen,
		       const struct group_child_opts *o, const struct vd_io *io);
/* Copy only DISK's top delta to new_path, sharing every layer below. */
int group_clone_from_current(const char *disk, const char *new_path,
			     const struct vd_io *io);
/* One independent disk at new_path with the chain's content; preallocate:
 * flat and vmfs only, every byte allocated. */
int group_clone_full(const char *disk, const char *new_path, enum vmdk_subformat sf,
		     bool preallocate, const struct vd_io *io);

/* ---- sidecar records (group_record.c) --------------------------------------------------- */

/* Record in parent's sidecar that child was made over it.  A layer with no
 * record yet gets one that says it may have children never recorded,
 * unless GROUP_RECORD_COMPLETE: it had none (a layer just made, a writable
 * top given its first child). */
enum { GROUP_RECORD_COMPLETE = 1u << 0 };
int group_record_child(const char *parent, const char *child, unsigned flags,
		       const struct vd_io *io);

/* ---- plans (group_plan.c) -----------------------------------------------------------------
 * What an operation does (or, with GROUP_DRY_RUN, would do), step by step. */

enum group_step_kind {
	GROUP_STEP_WRITE,    /* data copied into an existing layer */
	GROUP_STEP_CREATE,   /* a new layer file */
	GROUP_STEP_REMOVE,   /* a layer deleted */
	GROUP_STEP_REPOINT,  /* parentCID / hint rewritten */
	GROUP_STEP_UNFREEZE, /* frozen mark cleared (it became a top) */
	GROUP_STEP_ORPHAN,   /* left without any disk (kept unless asked) */
	GROUP_STEP_KEEP,     /* shared: untouched */
	GROUP_STEP_CLEAN,    /* stale unclean flag cleared, redundant tables synced */
	GROUP_STEP_COMPACT,  /* rewritten without leaked grains, same content/CID */
	GROUP_STEP_PULL,     /* its parent's data copied into it (the parent goes) */
	GROUP_STEP_RECORD,   /* its sidecar record gains the children found */
};

struct group_plan_step {
	enum group_step_kind kind;
	char *path;
	uint64_t bytes; /* data to copy (WRITE/CREATE) or freed (REMOVE) */
	const char *why; /* KEEP: "children unknown", "shared" (static), or NULL */
};

typedef void group_progress_fn(void *opaque, uint64_t done, uint64_t total);

struct group_plan {
	const char *op;
	struct group_plan_step *steps;
	unsigned nr_steps;
	uint64_t copy_bytes;   /* data to move */
	uint64_t space_needed; /* new storage, at most */
	uint64_t space_avail;  /* free bytes where it goes (statvfs) */
	char *result;          /* the disk's top afterwards (malloc'd), NULL if gone */
	char *const *scanned;  /* the folders looked in (the group's: see group_scanned) */
	unsigned nr_scanned;
	char *const *unscanned; /* what they held that could not be read (the tree's) */
	unsigned nr_unscanned;
	group_progress_fn *progress; /* optional, set by the caller */
	void *progress_opaque;
};

void group_plan_free(struct group_plan *p);
const char *group_plan_step_name(enum group_step_kind k);

/* ---- loading a group (group.c) ---------------------------------------------------------- */

struct group;

enum {
	GROUP_DRY_RUN = 1u << 0, /* plan only: nothing written */
	GROUP_ORPHANS = 1u << 1, /* delete: remove orphaned layers too */
};

/* The front door of the group commands: recover every intent record near
 * disk (its layers' folders) and in the folders scanned, then scan them.
 * disk may be any layer of the group.  With GROUP_DRY_RUN the records are
 * only reported (a dry run changes nothing, an interrupted operation
 * included). */
int group_load(const char *disk, char *const *scan_dirs, unsigned nr_dirs, unsigned flags,
	       const struct vd_io *io, struct group **out);
/* The same for several disks (of one group or of several). */
int group_load_disks(char *const *disks, unsigned nr_disks, char *const *scan_dirs,
		     unsigned nr_dirs, unsigned flags, const struct vd_io *io,
		     struct group **out);
void group_free(struct group *g); /* NULL is a no-op */
const struct group_tree *group_nodes(const struct group *g);
/* Node of the layer at path (same file), or -ENOENT. */
int group_node(const struct group *g, const char *path);
/* Disks (leaf paths) reaching node, plus recorded children not found and
 * other names of the node or a layer above it. */
unsigned group_nr_users(const struct group *g, int node);
bool group_shared(const struct group *g, int node);
/* The node has children vdelta never recorded: found and none recorded
 * (GROUP_TREE_UNKNOWN), or one found that its record does not list. */
bool group_unknown(const struct group *g, int node);
/* Shared or unknown: no operation removes, merges into or moves it. */
bool group_busy(const struct group *g, int node);
/* The folders the load scanned (the plan prints them). */
char *const *group_scanned(const struct group *g, unsigned *nr);

/* ---- operations ----------------------------------------------------------------------- */

/* Merge LAYER into its parent, re-point LAYER's children, remove LAYER
 * (group_commit.c). */
int group_commit(struct group *g, const char *layer, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan);
/* The other direction (group_pull.c): LAYER's parent's data that LAYER does
 * not override goes into LAYER, LAYER is re-pointed to the grandparent (or
 * becomes a base), the parent is removed; LAYER keeps its name and CID.
 * Refused when LAYER or its parent is shared, or LAYER is not a hosted
 * sparse layer (-ENOTSUP). */
int group_pull(struct group *g, const char *layer, unsigned flags,
	       const struct vd_io *io, struct group_plan *plan);
/* Remove DISK's unshared layers (group_delete.c). */
int group_delete(struct group *g, const char *disk, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan);
/* Replace DISK's top by an empty delta over the same parent
 * (group_revert.c). */
int group_revert(struct group *g, const char *disk, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan);
/* promote --unlink (group_promote.c): the disk's lowest unshared layer is
 * rewritten with everything it reads from the shared layers below (same
 * CID), so the disk reaches no shared layer; an empty plan when it reaches
 * none already. */
int group_promote_unlink(struct group *g, const char *disk, unsigned flags,
			 const struct vd_io *io, struct group_plan *plan);
/* consolidate (= promote without --unlink; group_consolidate.c): every
 * layer of DISK between its top and the first shared layer, except the
 * kept ones, is merged with its parent, lowest first.  g is kept up to
 * date, so the next disk of the same group can be consolidated with it. */
int group_consolidate(struct group *g, const char *disk, char *const *keep,
		      unsigned nr_keep, unsigned flags, const struct vd_io *io,
		      struct group_plan *plan);
/* relocate (group_relocate.c): move DISK (a top) to the existing folder
 * dir.  CHILD_MOST: the top only, its hint re-pointed at the parent where
 * it stays.  NO_SHARE: every layer of the chain: the unshared ones are
 * moved, the shared ones copied (the originals stay for the other disks).
 * SHARE: as NO_SHARE, but a layer already in dir under the same name with
 * the same CID, content and allocation (and, above the base, the same
 * parent) is reattached instead of copied.  Copies keep their CID; a layer
 * is never moved while another disk reaches it. */
enum group_relocate_mode {
	GROUP_RELOCATE_CHILD_MOST,
	GROUP_RELOCATE_SHARE,
	GROUP_RELOCATE_NO_SHARE,
};
int group_relocate(struct group *g, const char *disk, const char *dir,
		   enum group_relocate_mode mode, unsigned flags, const struct vd_io *io,
		   struct group_plan *plan);
/* `check --repair` of the layer at path (group_repair.c): clear a stale
 * unclean flag (any layer no one writes), or compact away leaked grains and
 * damaged tables (refused for a frozen or shared layer).  An empty plan
 * means nothing needed doing. */
int group_repair(struct group *g, const char *path, unsigned flags,
		 const struct vd_io *io, struct group_plan *plan);

/* adopt (group_record.c): every layer of the group with children found
 * that its sidecar record does not list records them (bytes: how many), so
 * its children are known and the normal rules apply.  The scan must have
 * covered every folder its clones may live in: what it did not find stays
 * unrecorded. */
int group_adopt(struct group *g, unsigned flags, const struct vd_io *io,
		struct group_plan *plan);

/* ---- recovery at the front door (group_recover.c) -------------------------------------
 * An intent record names the operation (a row of the table of kinds) and
 * what it needs to finish or roll back.  group_recover handles one record;
 * group_recover_near every record beside path and beside each layer its
 * chain names (their folders, not recursed).  GROUP_RECOVER_FINISH carries
 * the operations out (a writer's front door: the record must be trusted,
 * group_trust.c, and every layer it names is locked first) and removes
 * the temporaries a crash left of records; without it the records are
 * only reported, naming the command that finishes them (a reader's).
 * Finding is silent: a path that is not a VMDK yields its own folder only.
 * Returns the first error of a recovery; *nr_found (may be NULL) counts the
 * records met. */
enum {
	GROUP_RECOVER_FINISH = 1u << 0,
	/* a refused record that names no layer of path's chain is an error too
	 * (otherwise reported and left alone: it does not stop path opening) */
	GROUP_RECOVER_STRICT = 1u << 1,
};
int group_recover(const char *intent_path, unsigned flags, const struct vd_io *io);
int group_recover_near(const char *path, unsigned flags, const struct vd_io *io,
		       unsigned *nr_found);

/* ---- bundles: shipping layers between hosts (group_bundle.c, group_pack.c,
 * group_unpack.c, group_digest.c; the format: docs/bundle.md) -----------------------------
 * A bundle is a stream (a pipe is fine: it is read and written once, in
 * order, in bounded memory): a header naming the layers it holds and the
 * layers the receiver must already have (NEEDS: each the first layer not
 * packed below a packed one, known by CID and by the XXH3-128 of what its
 * chain reads, as `vdelta digest` prints it), then each packed layer's
 * allocated and zeroed runs in zstd frames of at most
 * GROUP_BUNDLE_FRAME_MAX bytes, each with the XXH3-64 of its content,
 * then a trailer with the count of frames and the XXH3-64 of the whole
 * stream.  Packed layers come base first; layers that several disks reach
 * are packed once, so an unpack rebuilds the group's sharing. */
#define GROUP_DIGEST_SUFFIX ".vdelta-digest"
#define GROUP_BUNDLE_FRAME_MAX (4u << 20) /* bytes of a frame's content */

enum group_bundle_parent {
	GROUP_BUNDLE_BASE,  /* no parent */
	GROUP_BUNDLE_LAYER, /* parent: an earlier layer of the bundle */
	GROUP_BUNDLE_NEED,  /* parent: a layer the receiver has (a need) */
};

struct group_bundle_layer {
	char *name;          /* its descriptor's file name (unpacked in one folder) */
	char *source_type;   /* createType where it was packed */
	enum vmdk_subformat kind; /* what unpack makes of it */
	uint64_t capacity, grain_size, split_size; /* bytes; 0: none */
	bool zeroed_grain;   /* hosted sparse with zeroed-grain entries */
	bool top;            /* a disk's top: packed by its name */
	uint32_t cid, parent_cid;
	enum group_bundle_parent parent_kind;
	unsigned parent;     /* index into layers or needs */
	uint64_t held_bytes; /* bytes of the runs it holds (data and zeroed) */
	char **keys;         /* "ddb.KEY=VALUE" kept from its descriptor */
	unsigned nr_keys;
	char *path;          /* pack: where it is; unpack: where it goes */
};

struct group_bundle_need {
	char *name;          /* its file name where it was packed */
	uint32_t cid;
	uint64_t capacity;
	uint8_t digest[16];  /* canonical XXH3-128 of its chain's content */
	char *path;          /* pack: the layer; unpack: the one found, or NULL */
};

struct group_bundle_info {
	unsigned version;
	int level;           /* zstd level it was packed with */
	struct group_bundle_layer *layers;
	unsigned nr_layers;
	struct group_bundle_need *needs;
	unsigned nr_needs;
	uint64_t held_bytes; /* of every layer */
	/* once the whole stream went through: */
	uint64_t frames, stream_bytes;
};
void group_bundle_info_free(struct group_bundle_info *b); /* NULL is a no-op */

/* pack: DISK's layers that no disk outside the bundle reaches (walking
 * down from each top while every disk that reaches a layer is packed);
 * since: the layers above that layer instead; full: every layer.  The
 * group is loaded (recovery, then the scan of where clones live) first;
 * every layer read and every need are read-locked while the bundle is
 * written to fd (nothing else is written, but the digest sidecars of
 * frozen needs).  *out (may be NULL) says what went in. */
struct group_pack_opts {
	const char *since;   /* NULL: the default */
	bool full;
	int level;           /* zstd level (1..19; 0: 3) */
	unsigned threads;    /* zstd workers (0: compress in this thread) */
	group_progress_fn *progress; /* bytes of runs packed, of held_bytes */
	void *progress_opaque;
};
int group_pack(char *const *disks, unsigned nr_disks, char *const *scan, unsigned nr_scan,
	       const struct group_pack_opts *o, int fd, const struct vd_io *io,
	       struct group_bundle_info **out);
/* What the bundle on fd holds and needs: its header only (the frames are
 * not read).  name is fd's name in messages. */
int group_bundle_list(int fd, const char *name, struct group_bundle_info **out);

/* unpack (group_unpack.c): rebuild the bundle's layers in the folder dir
 * (it must exist), each need found by CID and digest among the layers in
 * dir, the bases given and the folders scanned (recursively), or the
 * unpack is refused naming it.  Every frame's and the stream's checksum is
 * verified before any layer appears under its name; an unpack stopped
 * anywhere is finished or rolled back by recovery (the next group
 * command, vdelta recover, or unpack into dir again).  GROUP_DRY_RUN:
 * find the needs, read and verify the whole stream, write nothing.
 * *out (may be NULL): the layers with where they went, the needs with
 * where they were found. */
struct group_unpack_opts {
	char *const *bases;  /* layers that may be the needs */
	unsigned nr_bases;
	char *const *scan;   /* folders to look for them in */
	unsigned nr_scan;
	unsigned flags;      /* GROUP_DRY_RUN */
	group_progress_fn *progress; /* bytes of runs unpacked, of held_bytes */
	void *progress_opaque;
};
int group_unpack(int fd, const char *name, const char *dir, const struct group_unpack_opts *o,
		 const struct vd_io *io, struct group_bundle_info **out);


/* ---- serving (group_serve.c) -------------------------------------------------------------
 * The front door of a server (fuse/, nbd/): recovery near path (finished
 * when the mode writes the disk's files, reported otherwise), then
 * chain_server_add; for CHAIN_SERVE_SNAPSHOT, group_snapshot first and the
 * new delta served. */
int group_serve_add(struct chain_server *s, const char *path, const char *name,
		    enum chain_serve_mode mode, struct chain_served **out);

#endif
