/* rbd — the Ceph RBD front end (layer 4, beside fuse/): a linked-clone
 * group laid into RBD layering through librbd's C API, and an RBD clone
 * chain taken back into a VMDK chain.  Public header of rbd/.  Uses
 * group.h (the group's discovery, child records and front door), chain.h
 * (chains, digests), vmdk.h and librados/librbd; docs/rbd.md is the
 * user's side.
 *
 * THE MAPPING: each layer of a group becomes one image.  A base is a plain
 * image written from its allocated grains only (holes and zeroed grains
 * are never sent: a new image reads zeros there).  A layer above is a
 * clone (rbd_clone3) of its parent's snapshot that holds only the layer's
 * own grains; its zeroed grains are written with rbd_write_zeroes, which
 * masks the parent (a discard would not: librbd skips a discard of part of
 * an object).  A layer with children gets the snapshot RBD_EXPORT_SNAP
 * (named by its CID), protected; a disk's top stays a writable image
 * without one.  Bases use objects of opts.object_size (default: 4 MiB, as
 * rbd, or smaller for a sparse base, so that the objects its data touches
 * hold at most 1/16 more than the data: `rbd du` shows what it uses),
 * clones of opts.clone_object_size (default 64 KiB, a VMDK grain): a
 * clone stores whole objects, copied up from the parent on first write, so
 * small objects keep a clone as small as its delta.
 *
 * IMAGE NAMES: prefix + the layer's path relative to the deepest folder
 * holding every layer exported in the run, without ".vmdk"; bytes other than
 * [A-Za-z0-9._-] are %XX, a '/' is '+' (so two layers never get one name,
 * and every name is a word qemu's rbd: syntax takes).  While an image is
 * made it is named NAME RBD_EXPORT_PART (a suffix no layer's name can end
 * in); it gets its final name only once written, verified and snapshotted.
 *
 * METADATA (rbd_metadata_set, RBD_META_*): format, the layer's path, CID,
 * parent CID and the layer's digest: XXH3-128 of the runs the layer holds
 * itself (rbd_send.c), which reading the layer alone gives.  A re-run
 * keeps an image whose metadata says the same CID and digest (sends
 * nothing), finishes what a killed run left (a NAME RBD_EXPORT_PART image
 * is removed and made again) and refuses an image that exists and differs
 * (not made by vdelta, another parent, another content), before anything
 * is written.
 *
 * VERIFICATION, before an image takes its final name: what it holds
 * itself (its objects) and what its layer holds itself (data and zeroed
 * grains) is read back through librbd and compared with the layer's disk
 * (rbd_verify.c); everywhere else both read their parent, checked the same
 * way before them (a base: zeros), so the image reads as the disk without
 * reading the shared base back once per clone.  RBD_VERIFY_FULL reads
 * every image back whole instead and compares its XXH3-128 with
 * chain_digest of the disk (`vdelta digest`).  The source layers are held open read-only
 * with a reader's lock (chain_open) from the start to the end: no writer
 * can change them meanwhile, and nothing of the source is ever written.
 *
 * IMPORT: each POOL/IMAGE[@SNAP] named and its parents (the link each
 * image header keeps, as `rbd children` shows it; at most CHAIN_MAX_DEPTH
 * images) become monolithicSparse layers in DIR; a layer holds the grains
 * where the image differs from its parent (rbd_diff_iterate2 finds the
 * objects it holds, each grain is compared with the parent; past the
 * parent overlap, where a clone reads zeros, too), a base its non-zero
 * grains.  A clone whose size is not its parent's is refused (a VMDK
 * chain has one size).  Two snapshots of one
 * image named or reached make a chain of their own (the later over the
 * earlier).  Everything is made and verified (as VERIFICATION says: each
 * layer against its image) in a hidden staging folder of DIR, then
 * renamed into DIR parents first; a name that exists in DIR is refused
 * before anything is made.  Children are recorded (group_record_child)
 * and parents frozen, as `vdelta snapshot` does.
 *
 * CLUSTER: struct rbd_target names the cluster (ceph.conf, client id,
 * keyring, pool); connecting, monitor and OSD operations are bounded by
 * timeout_s, so an unreachable cluster is an error after that long.
 *
 * THREAD MODEL: one thread calls these functions; inside, librbd's
 * asynchronous I/O keeps several requests in flight (RBD_XFER_DEPTH), and
 * librados runs its own threads.  The source chains are read by the
 * calling thread only.
 *
 * ERRORS: 0 or -errno; every failure is reported once through the common
 * log callback naming the image (pool/name) or the file.  A refusal
 * (-EEXIST: name taken or exists and differs, -ELOOP: chain too deep,
 * -ENOENT: pool or image missing, -EACCES: key refused, -ETIMEDOUT: no
 * answer) writes nothing.
 */
#ifndef VDELTA_RBD_H
#define VDELTA_RBD_H

#include "group.h"

#define RBD_DEFAULT_POOL "rbd"
#define RBD_DEFAULT_TIMEOUT_S 30u
#define RBD_EXPORT_PART "%part"
#define RBD_EXPORT_SNAP "vdelta-" /* + the layer's CID, 8 hex digits */
#define RBD_NAME_MAX 250u         /* bytes of an image name we make */

/* Image metadata keys written by export. */
#define RBD_META_FORMAT "vdelta.format" /* "1" */
#define RBD_META_LAYER "vdelta.layer"   /* the layer's path when exported */
#define RBD_META_CID "vdelta.cid"       /* 8 hex digits */
#define RBD_META_PARENT_CID "vdelta.parent-cid"
#define RBD_META_DIGEST "vdelta.digest" /* the layer's digest, 32 hex */

struct rbd_target {
	const char *conf;    /* ceph.conf; NULL: $CEPH_CONF, then /etc/ceph */
	const char *id;      /* client name without "client." (NULL: admin) */
	const char *keyring; /* NULL: what the conf says */
	const char *pool;    /* NULL: RBD_DEFAULT_POOL */
	unsigned timeout_s;  /* 0: RBD_DEFAULT_TIMEOUT_S */
};

enum {
	RBD_DRY_RUN = 1u << 0,     /* plan only: connect, look, write nothing */
	RBD_VERIFY_FULL = 1u << 1, /* read every image back whole (VERIFICATION) */
};

/* ---- export (rbd_export.c) ------------------------------------------------------ */

enum rbd_action {
	RBD_ACT_CREATE, /* a new base image */
	RBD_ACT_CLONE,  /* a new clone of the parent's snapshot */
	RBD_ACT_KEEP,   /* there already, same CID and digest: nothing sent */
	RBD_ACT_SNAP,   /* there already, gets its snapshot (it got children) */
};

struct rbd_export_opts {
	struct rbd_target target;
	const char *prefix;         /* NULL: "" */
	uint64_t object_size;       /* bases; 0: chosen per base (above) */
	uint64_t clone_object_size; /* clones; 0: 64 KiB */
	unsigned flags;             /* RBD_DRY_RUN */
	group_progress_fn *progress; /* bytes sent and read back */
	void *progress_opaque;
};

struct rbd_export_item {
	char *layer;    /* the VMDK layer (path as found) */
	char *image;    /* image name in the pool */
	char *parent;   /* "NAME@SNAP" of the parent, NULL for a base */
	char *snap;     /* the snapshot it has or gets, NULL for a top */
	enum rbd_action action;
	unsigned nr_children;
	uint64_t capacity;
	uint64_t object_size; /* of a new image (0: none made) */
	uint64_t send_bytes;  /* data to send (dry run) / sent */
	uint64_t zero_bytes;  /* zeros written to mask the parent */
	bool verified;        /* read back, equal */
	char digest[33];      /* the layer's (METADATA); "" in a dry run */
	char disk_digest[33]; /* of its disk, with RBD_VERIFY_FULL; else "" */
};

struct rbd_export_result {
	char *pool;
	struct rbd_export_item *items; /* parents before children */
	unsigned nr_items;
	uint64_t send_bytes, verify_bytes;
};

/* Export the groups of the given disks (any layer of each), or with
 * nr_disks 0 every group found in dirs.  dirs are also scanned for the
 * disks of the named groups.  res is filled on success and, as far as it
 * got, on failure (free it either way). */
int rbd_export_run(char *const *disks, unsigned nr_disks, char *const *dirs,
		   unsigned nr_dirs, const struct rbd_export_opts *o,
		   struct rbd_export_result *res);
void rbd_export_result_free(struct rbd_export_result *res);
const char *rbd_export_action_name(enum rbd_action a);

/* ---- import (rbd_import.c) ------------------------------------------------------ */

struct rbd_import_opts {
	struct rbd_target target; /* pool: for a spec without "POOL/" */
	unsigned flags;           /* RBD_DRY_RUN */
	group_progress_fn *progress;
	void *progress_opaque;
};

struct rbd_import_item {
	char *spec;        /* pool/image[@snap] */
	char *path;        /* the VMDK layer in DIR */
	char *parent;      /* its parent layer, NULL for a base */
	uint64_t capacity;
	uint64_t data_bytes; /* bytes written into the layer */
	bool verified;
	char digest[33];
};

struct rbd_import_result {
	struct rbd_import_item *items; /* parents before children */
	unsigned nr_items;
	uint64_t data_bytes;
};

/* Import the chains of specs ("POOL/IMAGE[@SNAP]" or "IMAGE[@SNAP]") into
 * the existing folder dir.  res as for export. */
int rbd_import_run(char *const *specs, unsigned nr_specs, const char *dir,
		   const struct rbd_import_opts *o, struct rbd_import_result *res);
void rbd_import_result_free(struct rbd_import_result *res);

#endif
