/* chain — the copy-on-write chain layer (layer 2): a disk is a chain of
 * VMDK layers, a top and its parents down to a base.  Reads fall through
 * the layers, writes land in the top only.
 *
 * Owns: opening a chain from its top (parent hint resolution, CID /
 * capacity / cycle / depth validation, qemu-compatible locking), the merged
 * grain map, reads and copy-on-write writes, the frozen mark, the digest of
 * a disk's content, the layer pool that lets many chains share their
 * parents, and the serving core that front ends (fuse/, nbd/) translate
 * their protocols into.  It knows one chain at a time: who else reaches a
 * layer, the records of a group and the operations that change several
 * layers belong to the group layer above (group.h).  Uses only vmdk.h and
 * common.h.
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
	CHAIN_OPEN_OUTSIDE_OK = 64,   /* pass VMDK_OPEN_OUTSIDE_OK to every layer */
	CHAIN_OPEN_NOLOCK_TOP = 128,  /* lock the parents but not the top (the
				       * caller holds the top's locks) */
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
/* The top was left unclean (a crash) and opening it for writing with
 * CHAIN_OPEN_DIRTY_OK recovered it (locks taken: not with NOLOCK). */
bool chain_recovered(const struct chain *c);

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
/* Set (frozen) or clear the mark on the layer at `path`: a durable
 * descriptor rewrite under a writer's lock (CID unchanged).  flags:
 * CHAIN_OPEN_DIRTY_OK to mark a layer whose uncleanShutdown is set,
 * CHAIN_OPEN_NOLOCK when the caller holds the layer's locks. */
int chain_set_frozen(const char *path, bool frozen, unsigned flags,
		     const struct vd_io *io);

/* ---- digest (chain_digest.c) ------------------------------------------------------
 * XXH3-128 of the logical content; hex is the canonical (big-endian) form
 * that `xxhsum -H2` prints.  Zero runs are hashed from a static buffer
 * without reading. */
int chain_digest(struct chain *c, uint8_t out[16]);
void chain_digest_hex(const uint8_t d[16], char hex[33]);

/* ---- serving core (chain_serve.c) ------------------------------------------------
 * The set of disks one server process (a FUSE mount, an NBD export)
 * exposes: each disk a chain opened through one shared pool, a mode, and
 * live counters.  Front ends translate their requests into the calls
 * below and never see a struct chain's internals.
 *
 * Modes: RW writes into the top (a frozen top is -EPERM, see chain_open);
 * RO opens it read-only; NONPERSISTENT writes into a throw-away delta over
 * the top, made in the server's tmpdir (default $TMPDIR, or /tmp: see
 * chain_server_opts) and unlinked as soon as it is open,
 * so no file of the disk changes and nothing is left behind even after a
 * kill; SNAPSHOT writes into a new delta over the top that the group layer
 * made at add time (group_serve_add: the top is frozen as it is, the new
 * delta recorded as its child; chain_served_top names it).
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

/* A served disk in the front ends' words, DISK[:MODE][=NAME], split in
 * place: "=NAME" is the last '=' after the last '/', ":MODE" a mode name
 * after the last ':' that follows the last '/' (a ':' in a file name that
 * is not followed by a mode stays part of DISK).  *name NULL when none is
 * given, *mode dflt when none.  -EINVAL (not reported) for an empty NAME or
 * one holding '/'. */
int chain_serve_disk_arg(char *arg, enum chain_serve_mode dflt, char **name,
			 enum chain_serve_mode *mode);
/* The name a disk is served under by default: the top's base name without
 * ".vmdk" (malloc'd; NULL when out of memory). */
char *chain_serve_default_name(const char *path);

int chain_server_create(struct chain_server **out);
/* Where a server's chains read and write, and where its throw-away deltas
 * are made (a bench counting every read, a scratch folder of its own). */
struct chain_server_opts {
	const struct vd_io *io; /* every chain of the server (NULL: POSIX); must
				 * outlive the server */
	const char *tmpdir;     /* throw-away deltas (NULL: $TMPDIR or /tmp) */
	unsigned open_flags;    /* added to every chain's: CHAIN_OPEN_OUTSIDE_OK */
};
/* chain_server_create with options (o NULL: the defaults). */
int chain_server_create_opts(const struct chain_server_opts *o,
			     struct chain_server **out);
/* Open the disk whose top is `path` in `mode`, served under `name`.
 * SNAPSHOT is -EINVAL here: its new delta comes from the group layer
 * (group_serve_add), which then calls chain_server_add_snapshot with the
 * new delta `top` made over `path`. */
int chain_server_add(struct chain_server *s, const char *path, const char *name,
		     enum chain_serve_mode mode, struct chain_served **out);
int chain_server_add_snapshot(struct chain_server *s, const char *path, const char *top,
			      const char *name, struct chain_served **out);
unsigned chain_server_nr_disks(const struct chain_server *s);
struct chain_served *chain_server_disk(const struct chain_server *s, unsigned i);
struct chain_pool *chain_server_pool(const struct chain_server *s);
/* The disk served under `name`, or NULL. */
struct chain_served *chain_server_find(const struct chain_server *s, const char *name);
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
/* Zeros over [off, off+len): ranges that read as zeros already are left
 * as they are (nothing allocated), whole grains the top lacks become
 * zeroed grains where the top records them, the rest is zeros written
 * (copy-on-write at the edges).  chain_served_zero's flags:
 * CHAIN_SERVE_ZERO_FAST: -ENOTSUP, nothing written, unless no data would
 *   be written (NBD's FAST_ZERO);
 * CHAIN_SERVE_ZERO_TRIM: only what needs no data written, the rest left as
 *   it is (a discard: the range's content becomes unspecified). */
enum { CHAIN_SERVE_ZERO_FAST = 1u << 0, CHAIN_SERVE_ZERO_TRIM = 1u << 1 };
int chain_served_write_zeroes(struct chain_served *d, size_t len, uint64_t off);
int chain_served_zero(struct chain_served *d, size_t len, uint64_t off, unsigned flags);
/* Whether the written top records zeroed grains (a zeroed-grain hosted
 * sparse or a seSparse layer): then zeroing whole grains writes no data. */
bool chain_served_zeroed_grains(const struct chain_served *d);
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
/* The same, silent: for a scan that records a missing parent itself. */
int chain_hint_find(const char *child_path, const char *hint, const char *native_hint,
		    char **out);
/* The hint to write in a child at child_path for parent_path: relative to
 * the child's folder when both are reachable that way, else absolute. */
int chain_hint_make(const char *child_path, const char *parent_path, char **out);

#endif
