/* rbd — private header of the RBD front end (layer 4); never included
 * outside rbd/ (unit tests aside).  Units: bytes.
 */
#ifndef VDELTA_RBD_INT_H
#define VDELTA_RBD_INT_H

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "group.h"
#include "rbd.h"

/* ---- librados and librbd, loaded when first needed (rbd_lib.c) ----
 * vdelta links neither: only `vdelta rbd` needs them, and loading them
 * (and the Ceph libraries under them) cost every other command 10 ms and
 * the mount 3.7 MiB.  The functions the layer calls are listed once here;
 * a call by its own name goes through the loaded table. */
#define RBD_LIB_RADOS \
	X(rados_create) X(rados_conf_read_file) X(rados_conf_parse_env) \
	X(rados_conf_set) X(rados_connect) X(rados_shutdown) X(rados_ioctx_create) \
	X(rados_ioctx_destroy) X(rados_exec) X(rados_pool_reverse_lookup) X(rados_remove)
#define RBD_LIB_RBD \
	X(rbd_open) X(rbd_open_read_only) X(rbd_open_by_id_read_only) X(rbd_close) \
	X(rbd_create4) X(rbd_clone3) X(rbd_remove) X(rbd_rename) X(rbd_get_size) \
	X(rbd_get_id) X(rbd_get_parent) X(rbd_linked_image_spec_cleanup) \
	X(rbd_snap_spec_cleanup) X(rbd_flush) X(rbd_diff_iterate2) \
	X(rbd_metadata_get) X(rbd_metadata_set) X(rbd_lock_get_owners) \
	X(rbd_lock_get_owners_cleanup) X(rbd_lock_break) X(rbd_snap_create) \
	X(rbd_snap_remove) X(rbd_snap_exists) X(rbd_snap_get_id) X(rbd_snap_list) \
	X(rbd_snap_list_end) X(rbd_snap_protect) X(rbd_snap_unprotect) \
	X(rbd_snap_is_protected) X(rbd_snap_set_by_id) X(rbd_aio_create_completion) \
	X(rbd_aio_release) X(rbd_aio_wait_for_complete) X(rbd_aio_get_return_value) \
	X(rbd_aio_read2) X(rbd_aio_write2) X(rbd_aio_write_zeroes) \
	X(rbd_image_options_create) X(rbd_image_options_set_uint64) \
	X(rbd_image_options_destroy) X(rbd_list2) X(rbd_image_spec_list_cleanup)

struct rbd_lib {
#define X(f) __typeof__(&f) f##_fn;
	RBD_LIB_RADOS RBD_LIB_RBD
#undef X
};
extern struct rbd_lib rbd_lib;
/* dlopen librados.so.2 and librbd.so.1 and resolve the table (once; a
 * failure is reported, naming the library and the package to install). */
int rbd_lib_load(void);

#ifndef RBD_LIB_LOADER
#define rados_create (rbd_lib.rados_create_fn)
#define rados_conf_read_file (rbd_lib.rados_conf_read_file_fn)
#define rados_conf_parse_env (rbd_lib.rados_conf_parse_env_fn)
#define rados_conf_set (rbd_lib.rados_conf_set_fn)
#define rados_connect (rbd_lib.rados_connect_fn)
#define rados_shutdown (rbd_lib.rados_shutdown_fn)
#define rados_ioctx_create (rbd_lib.rados_ioctx_create_fn)
#define rados_ioctx_destroy (rbd_lib.rados_ioctx_destroy_fn)
#define rados_exec (rbd_lib.rados_exec_fn)
#define rados_pool_reverse_lookup (rbd_lib.rados_pool_reverse_lookup_fn)
#define rados_remove (rbd_lib.rados_remove_fn)
#define rbd_open (rbd_lib.rbd_open_fn)
#define rbd_open_read_only (rbd_lib.rbd_open_read_only_fn)
#define rbd_open_by_id_read_only (rbd_lib.rbd_open_by_id_read_only_fn)
#define rbd_close (rbd_lib.rbd_close_fn)
#define rbd_create4 (rbd_lib.rbd_create4_fn)
#define rbd_clone3 (rbd_lib.rbd_clone3_fn)
#define rbd_remove (rbd_lib.rbd_remove_fn)
#define rbd_rename (rbd_lib.rbd_rename_fn)
#define rbd_get_size (rbd_lib.rbd_get_size_fn)
#define rbd_get_id (rbd_lib.rbd_get_id_fn)
#define rbd_get_parent (rbd_lib.rbd_get_parent_fn)
#define rbd_linked_image_spec_cleanup (rbd_lib.rbd_linked_image_spec_cleanup_fn)
#define rbd_snap_spec_cleanup (rbd_lib.rbd_snap_spec_cleanup_fn)
#define rbd_flush (rbd_lib.rbd_flush_fn)
#define rbd_diff_iterate2 (rbd_lib.rbd_diff_iterate2_fn)
#define rbd_metadata_get (rbd_lib.rbd_metadata_get_fn)
#define rbd_metadata_set (rbd_lib.rbd_metadata_set_fn)
#define rbd_lock_get_owners (rbd_lib.rbd_lock_get_owners_fn)
#define rbd_lock_get_owners_cleanup (rbd_lib.rbd_lock_get_owners_cleanup_fn)
#define rbd_lock_break (rbd_lib.rbd_lock_break_fn)
#define rbd_snap_create (rbd_lib.rbd_snap_create_fn)
#define rbd_snap_remove (rbd_lib.rbd_snap_remove_fn)
#define rbd_snap_exists (rbd_lib.rbd_snap_exists_fn)
#define rbd_snap_get_id (rbd_lib.rbd_snap_get_id_fn)
#define rbd_snap_list (rbd_lib.rbd_snap_list_fn)
#define rbd_snap_list_end (rbd_lib.rbd_snap_list_end_fn)
#define rbd_snap_protect (rbd_lib.rbd_snap_protect_fn)
#define rbd_snap_unprotect (rbd_lib.rbd_snap_unprotect_fn)
#define rbd_snap_is_protected (rbd_lib.rbd_snap_is_protected_fn)
#define rbd_snap_set_by_id (rbd_lib.rbd_snap_set_by_id_fn)
#define rbd_aio_create_completion (rbd_lib.rbd_aio_create_completion_fn)
#define rbd_aio_release (rbd_lib.rbd_aio_release_fn)
#define rbd_aio_wait_for_complete (rbd_lib.rbd_aio_wait_for_complete_fn)
#define rbd_aio_get_return_value (rbd_lib.rbd_aio_get_return_value_fn)
#define rbd_aio_read2 (rbd_lib.rbd_aio_read2_fn)
#define rbd_aio_write2 (rbd_lib.rbd_aio_write2_fn)
#define rbd_aio_write_zeroes (rbd_lib.rbd_aio_write_zeroes_fn)
#define rbd_image_options_create (rbd_lib.rbd_image_options_create_fn)
#define rbd_image_options_set_uint64 (rbd_lib.rbd_image_options_set_uint64_fn)
#define rbd_image_options_destroy (rbd_lib.rbd_image_options_destroy_fn)
#define rbd_list2 (rbd_lib.rbd_list2_fn)
#define rbd_image_spec_list_cleanup (rbd_lib.rbd_image_spec_list_cleanup_fn)
#endif

#define RBD_XFER_DEPTH 16u          /* requests in flight per image */
#define RBD_XFER_CHUNK (4u << 20)   /* bytes per request at most */
#define RBD_DEFAULT_CLONE_OBJECT (64u << 10)
#define RBD_META_VALUE_MAX 4096u    /* bytes of a metadata value we read */

/* ---- progress (rbd_export.c) ---- */
struct rbd_progress {
	group_progress_fn *fn;
	void *opaque;
	uint64_t done, total;
};
void rbd_progress_add(struct rbd_progress *p, uint64_t bytes);

/* ---- connection (rbd_conn.c) ---- */
struct rbd_conn {
	rados_t cluster;
	rados_ioctx_t io; /* the target's pool */
	char *pool;
	char *who;        /* "client.ID" */
	bool connected;
};
/* Connect and open the target's pool; c is cleared first, and must be
 * closed (rbd_conn_close) whatever this returns. */
int rbd_conn_open(const struct rbd_target *t, struct rbd_conn *c);
/* An I/O context on another pool (destroy it with rados_ioctx_destroy). */
int rbd_conn_pool(struct rbd_conn *c, const char *pool, rados_ioctx_t *io);
void rbd_conn_close(struct rbd_conn *c);

/* ---- names (rbd_name.c) ---- */
/* The deepest folder holding every path (canonical paths). */
int rbd_name_root(char *const *paths, unsigned n, char **out);
/* rbd.h "IMAGE NAMES": -ENAMETOOLONG (reported) past RBD_NAME_MAX. */
int rbd_name_make(const char *prefix, const char *root, const char *path, char **out);
char *rbd_name_part(const char *image); /* image RBD_EXPORT_PART */
/* dir/IMAGE.vmdk or dir/IMAGE-SNAP.vmdk (import). */
char *rbd_name_file(const char *dir, const char *image, const char *snap, bool with_snap);

/* ---- transfer windows (rbd_xfer.c) ---- */
struct rbd_xfer;
/* name: "pool/image" for messages (kept, not copied). */
int rbd_xfer_create(rbd_image_t img, const char *name, struct rbd_xfer **out);
/* The buffer of the next request (RBD_XFER_CHUNK bytes), waiting for the
 * oldest one when all are in flight; fill it, then rbd_xfer_write.  NULL:
 * out of memory. */
void *rbd_xfer_next(struct rbd_xfer *x);
int rbd_xfer_write(struct rbd_xfer *x, size_t len, uint64_t off);
int rbd_xfer_zeroes(struct rbd_xfer *x, size_t len, uint64_t off);
/* Wait for every request; the first error of any. */
int rbd_xfer_drain(struct rbd_xfer *x);
typedef int rbd_xfer_consume_fn(void *opaque, const void *buf, size_t len, uint64_t off);
/* Read [off, off+len) in chunks, each handed to fn in order. */
int rbd_xfer_read_range(struct rbd_xfer *x, uint64_t off, uint64_t len,
			rbd_xfer_consume_fn *fn, void *opaque);
void rbd_xfer_destroy(struct rbd_xfer *x); /* drains first; NULL is a no-op */

/* ---- one image (rbd_image.c) ---- */
int rbd_image_open(rados_ioctx_t io, const char *pool, const char *name, const char *snap,
		   bool rdonly, rbd_image_t *out);
/* 0, -ENOENT (not reported) when absent. */
int rbd_image_meta_get(rbd_image_t img, const char *key, char *buf, size_t len);
int rbd_image_meta_set(rbd_image_t img, const char *what, const char *key, const char *val);
/* Create (if absent) and protect snapshot snap. */
int rbd_image_snap(rbd_image_t img, const char *what, const char *snap);
/* Remove name with its snapshots; 0 when it is not there. */
int rbd_image_remove(rados_ioctx_t io, const char *pool, const char *name);
int rbd_image_rename(rados_ioctx_t io, const char *pool, const char *from, const char *to);
/* Finish a rename of part to name that a stopped run left half done (see
 * rbd_image.c); 0 when there was none. */
int rbd_image_rename_finish(rados_ioctx_t io, const char *pool, const char *part,
			    const char *name);

/* ---- digest (rbd_digest.c) ---- */
int rbd_digest_image(rbd_image_t img, const char *what, struct rbd_progress *pr,
		     uint8_t out[16]);

/* ---- the group half (rbd_source.c) ---- */
struct rbd_layer {
	char *path;          /* canonical */
	int parent;          /* index, -1 for a base */
	unsigned nr_children;
	uint32_t cid;
	uint64_t capacity;
	unsigned group;      /* index of its group's base */
	struct chain *chain; /* rbd_source_open: its disk, read-only, locked */
};
struct rbd_source {
	struct rbd_layer *layers; /* parents before children */
	unsigned nr;
	struct chain_pool *pool;
};
/* flags: RBD_DRY_RUN loads the groups as a dry run does (interrupted
 * operations reported, not finished: group_load's GROUP_DRY_RUN). */
int rbd_source_load(char *const *disks, unsigned nr_disks, char *const *dirs,
		    unsigned nr_dirs, unsigned flags, struct rbd_source *s);
int rbd_source_open(struct rbd_source *s);
void rbd_source_close(struct rbd_source *s); /* a cleared s is a no-op */
/* A blank monolithicSparse delta at child over parent: the parent frozen,
 * the child recorded in its sidecar (group_create_child). */
int rbd_source_child(const char *parent, const char *child);
/* The front door of a writer into dir (group_recover_near,
 * GROUP_RECOVER_FINISH): interrupted group operations there finished;
 * with RBD_DRY_RUN in flags only reported. */
int rbd_source_recover(const char *dir, unsigned flags);

/* ---- sending one layer (rbd_send.c) ---- */
struct rbd_send_out {
	uint64_t sent, zeroed; /* bytes of data and of zeros written */
	uint8_t digest[16];    /* the layer's digest (rbd_send.c) */
};
/* Write the layer's own runs (vmdk_block_status of the layer alone) into
 * img: data, and zeros as rbd_write_zeroes when mask_zeros (a clone: they
 * must hide the parent); flushed. */
int rbd_send_layer(struct vmdk_disk *layer, rbd_image_t img, const char *what,
		   bool mask_zeros, struct rbd_progress *pr, struct rbd_send_out *out);
/* The layer's digest without sending (reads its own data). */
int rbd_send_digest(struct vmdk_disk *layer, uint8_t out[16]);
/* The object size for a base image of layer (rbd_send.c). */
int rbd_send_object_size(struct vmdk_disk *layer, uint64_t *object_size);
/* The bytes rbd_send_layer would send and zero. */
int rbd_send_count(struct vmdk_disk *layer, bool mask_zeros, uint64_t *data,
		   uint64_t *zeros);

/* ---- lists of byte ranges (rbd_extent.c) ---- */
struct rbd_extent {
	uint64_t off, len;
};
struct rbd_extents {
	struct rbd_extent *v; /* sorted, merged */
	unsigned nr, cap;
};
/* Add a range that starts at or after the last one's start. */
int rbd_extent_add(struct rbd_extents *x, uint64_t off, uint64_t len);
int rbd_extent_diff_cb(uint64_t off, size_t len, int exists, void *opaque);
/* What img holds itself in [0, size), since from_snap when given (whole
 * objects, its parent's not included). */
int rbd_extent_of_image(rbd_image_t img, const char *what, const char *from_snap,
			uint64_t size, struct rbd_extents *out);
/* What layer holds itself: data and zeroed grains. */
int rbd_extent_of_layer(struct vmdk_disk *layer, struct rbd_extents *out);
int rbd_extent_union(const struct rbd_extents *a, const struct rbd_extents *b,
		     struct rbd_extents *out);
void rbd_extent_free(struct rbd_extents *x); /* a cleared list is a no-op */

/* ---- an image checked against its disk (rbd_verify.c) ---- */
/* img read back over own (what the image holds itself) and what the top
 * layer of disk holds itself, compared byte for byte with disk; *bytes:
 * read back. */
int rbd_verify_layer(struct chain *disk, rbd_image_t img, const char *what,
		     const struct rbd_extents *own, struct rbd_progress *pr,
		     uint64_t *bytes);

/* ---- parents read from the image header (rbd_parent.c) ---- */
#define RBD_NOSNAP ((uint64_t)-2) /* the head, as librados names it */
struct rbd_parent_ref {
	char *pool, *id;  /* pool name, image id; NULL for a base */
	char *name, *snap; /* set by rbd_parent_names */
	uint64_t snap_id;
	uint64_t overlap;  /* bytes of the image that read through to the parent */
};
/* The parent of image id (in io) at snap_id; out->pool NULL for a base. */
int rbd_parent_get(rados_t cluster, rados_ioctx_t io, const char *what, const char *id,
		   uint64_t snap_id, struct rbd_parent_ref *out);
/* Its image and snapshot names, read in pio, the parent's pool. */
int rbd_parent_names(rados_ioctx_t pio, const char *what, struct rbd_parent_ref *p);
int rbd_parent_size(rados_ioctx_t io, const char *id, uint64_t snap_id, uint64_t *size);
void rbd_parent_free(struct rbd_parent_ref *p);

/* ---- an imported layer's content (rbd_fill.c) ---- */
struct rbd_fill_src {
	const char *from_snap; /* an earlier snapshot of img; NULL: the parent image */
	/* [mask_off, mask_end): img reads zeros there over a parent that may
	 * not (past its parent overlap); empty when mask_off >= mask_end */
	uint64_t mask_off, mask_end;
};
/* What img holds beyond its parent: its objects (since from_snap) and the
 * mask range. */
int rbd_fill_ranges(rbd_image_t img, const char *what, const struct rbd_fill_src *src,
		    uint64_t size, struct rbd_extents *out);
/* Fill the top of c (a new layer over its parent, or a new base) with what
 * img holds beyond its parent; *written: bytes written into the layer. */
int rbd_fill_layer(struct chain *c, rbd_image_t img, const char *what,
		   const struct rbd_fill_src *src, struct rbd_progress *pr,
		   uint64_t *written);

/* ---- the staging folder of an import (rbd_stage.c) ---- */
int rbd_stage_create(const char *dir, char **out);
int rbd_stage_remove(const char *stage);
/* I2-I4: names (files of stage, in order) moved into dir. */
int rbd_stage_publish(const char *stage, const char *dir, char *const *names,
		      unsigned nr);
/* Finish or remove the staging folders in dir of imports that were stopped. */
int rbd_stage_recover(const char *dir);

/* ---- an export under way (rbd_export.c, rbd_plan.c) ---- */
struct rbd_export {
	const struct rbd_export_opts *o;
	char *const *disks, *const *dirs;
	unsigned nr_disks, nr_dirs;
	struct rbd_source src;
	struct rbd_conn conn;
	struct rbd_export_result *res; /* items[i] is src.layers[i] */
	uint8_t (*digest)[16];         /* of each layer's disk (RBD_VERIFY_FULL) */
	struct rbd_progress pr;
};
/* Items with names, parents and snapshots (no cluster needed). */
int rbd_plan_names(struct rbd_export *e);
/* Each item's action from what the pool holds; every refusal reported,
 * then -EEXIST.  Kept images' digests are checked by rbd_plan_digests
 * once the local digests are known. */
int rbd_plan_look(struct rbd_export *e);
int rbd_plan_digests(struct rbd_export *e);

#endif
