/* vmdk — the format layer (layer 1): one VMDK disk = one descriptor plus its
 * extents.  Reads every hosted subformat (monolithic/split sparse and flat,
 * vmfs, streamOptimized, ZERO extents) and the ESXi deltas (COWD vmfsSparse,
 * seSparse); creates and writes hosted sparse and flat extents, vmfs bases
 * and both ESXi delta kinds, and exports streamOptimized.  It knows a parent only as a CID and a hint string, and a
 * "backing" read callback that fills the rest of a grain on copy-on-write;
 * chains, locking policy and group operations belong to chain/.
 *
 * Units: bytes unless the name says otherwise (`_sectors`, `nr_grains`).
 *
 * THREAD MODEL: a struct vmdk_disk may be shared by threads.  vmdk_pread,
 * vmdk_pwrite, vmdk_pwrite_zeroes, vmdk_block_status and vmdk_flush may run
 * concurrently; table caches and grain allocation are protected by one
 * mutex per disk, data I/O to allocated grains runs outside it.  A partial
 * write to a grain the disk lacks is done (backing read + fill + grain
 * write + tables) under that mutex, so concurrent writers to one grain stay
 * correct.  Descriptor edits (vmdk_desc_set/vmdk_desc_write) and
 * vmdk_close must not run concurrently with I/O.
 *
 * ERRORS: every function returns 0 or -errno and reports a message once
 * through the common log callback, naming the file and the field.  Bad
 * on-disk data is -VD_EBADDATA; a file that is not a VMDK is -EMEDIUMTYPE;
 * a feature we do not handle is -ENOTSUP.  Nothing is written when open
 * fails.
 *
 * MEMORY: a sparse extent caches its grain tables lazily (4 bytes per grain
 * of virtual size at most, 8 for seSparse); a stream extent holds one
 * decompressed grain; no whole-disk buffers.
 */
#ifndef VDELTA_VMDK_H
#define VDELTA_VMDK_H

#include "common.h"

struct vmdk_disk;

/* ---- open / close -------------------------------------------------------------- */

enum {
	VMDK_OPEN_RDONLY = 0,
	VMDK_OPEN_RDWR = 1,
	/* Open a disk whose uncleanShutdown flag is set (default: allowed
	 * read-only with a warning, refused read-write). */
	VMDK_OPEN_DIRTY_OK = 2,
	/* Extent files of a text descriptor must resolve (symlinks followed)
	 * inside the descriptor's folder: no absolute path or ".." leading
	 * out.  For disks from untrusted sources.  Default: VMware's and
	 * qemu's rule (absolute and relative names alike, anywhere). */
	VMDK_OPEN_STRICT_PATHS = 4,
	/* A read-write open applies STRICT_PATHS, and refuses a flat extent
	 * file shorter than the extent it holds (a write would grow a file
	 * that is not the disk's): this flag lets a writer use extent files
	 * outside the folder (a raw device named by absolute path). */
	VMDK_OPEN_OUTSIDE_OK = 8,
	/* The descriptor only, read-only: no extent is opened, so the disk
	 * answers vmdk_path, its CIDs, parent hint and descriptor fields, and
	 * nothing else (capacity 0: every read is refused).  For following
	 * parent links cheaply where nothing is read. */
	VMDK_OPEN_DESC_ONLY = 16,
};

/* Open the disk whose descriptor (or single-file image) is at `path`.
 * `io` NULL means POSIX.  The disk's parent is not opened. */
int vmdk_open(const char *path, unsigned flags, const struct vd_io *io,
	      struct vmdk_disk **out);
/* Flush, clear uncleanShutdown, release.  Returns the first error of the
 * final flush; the handle is freed in every case.  close(NULL) is a no-op. */
int vmdk_close(struct vmdk_disk *d);

/* ---- geometry and identity ---------------------------------------------------- */

uint64_t vmdk_capacity(const struct vmdk_disk *d);     /* bytes */
const char *vmdk_path(const struct vmdk_disk *d);      /* as opened */
bool vmdk_writable(const struct vmdk_disk *d);
/* Grain size of the first sparse extent in bytes; 0 for a disk without
 * sparse extents (flat, zero).  The unit of copy-on-write. */
uint64_t vmdk_grain_size(const struct vmdk_disk *d);

#define VMDK_CID_NONE 0xffffffffu /* parentCID of a base disk */
uint32_t vmdk_cid(const struct vmdk_disk *d);
uint32_t vmdk_parent_cid(const struct vmdk_disk *d);
/* parentFileNameHint as written (may be a Windows path), NULL for a base. */
const char *vmdk_parent_hint(const struct vmdk_disk *d);

/* Descriptor values: header keys ("createType") and DDB keys
 * ("ddb.adapterType") alike, unquoted; NULL when absent. */
const char *vmdk_desc_get(const struct vmdk_disk *d, const char *key);
/* Set (value != NULL) or remove a key in memory; a key starting "ddb." goes
 * to the DDB, any other to the header.  Written by vmdk_desc_write. */
int vmdk_desc_set(struct vmdk_disk *d, const char *key, const char *value);
/* Set parentCID / the parent hint (NULL hint: no parent). In memory. */
int vmdk_set_parent(struct vmdk_disk *d, uint32_t parent_cid, const char *hint);
/* Write the descriptor back durably (embedded: in place within
 * descriptorSize; separate file: temp + fsync + rename + dir fsync).
 * Does not change the CID.  Needs a disk opened RDWR. */
int vmdk_desc_write(struct vmdk_disk *d);

/* ---- data ---------------------------------------------------------------------------- */

/* Byte-granular, any alignment.  Reads past capacity are -EINVAL.
 * Unallocated grains read as zeros here; chain/ consults block status to
 * fall through to a parent instead. */
int vmdk_pread(struct vmdk_disk *d, void *buf, size_t len, uint64_t off);

/* Writes go into the disk's own extents.  A partial write into a grain this
 * disk lacks fills the rest of the grain from the backing callback (or
 * zeros when none is set, or when the grain is a zeroed grain).  The first
 * write after open sets a new CID and uncleanShutdown. */
int vmdk_pwrite(struct vmdk_disk *d, const void *buf, size_t len, uint64_t off);
/* Write zeros.  Whole grains become zeroed grains (GTE 1) when the extent
 * allows it and `may_unmap`-style shortcut is safe; otherwise real zeros. */
int vmdk_pwrite_zeroes(struct vmdk_disk *d, size_t len, uint64_t off);
/* Every write that returned before the call is durable when it returns 0,
 * with the tables that point to it (the extent kinds' write orders).
 * Concurrent flushes run one at a time; a flush whose writes the previous
 * one already covered returns at once, so flushes issued together share
 * one round of syncs, and a flush with nothing written since the last one
 * syncs nothing. */
int vmdk_flush(struct vmdk_disk *d);
/* Start writing what was written so far to storage, without waiting, once
 * several MiB were written since the last start (a hint for a long copy,
 * cheap to call after every piece: the flush at its end then has less to
 * wait for; only vmdk_flush makes anything durable). */
void vmdk_writeback(struct vmdk_disk *d);

/* Called to read bytes of the grain that a partial write does not cover,
 * from whatever lies below this disk.  Must return 0 or -errno. */
typedef int vmdk_backing_fn(void *opaque, void *buf, size_t len, uint64_t off);
void vmdk_set_backing(struct vmdk_disk *d, vmdk_backing_fn *fn, void *opaque);

/* Where the run at off (at most len, within one extent) is stored as
 * plain bytes: the descriptor *fd of its file (owned by the disk, valid
 * until close; read it with pread/splice only) and *file_off.  For flat
 * data and uncompressed allocated grains; -ENOENT (not reported) for
 * anything else (holes, zeroed grains, compressed or seSparse/COWD
 * grains), with *run_len its length, so a reader falls back to vmdk_pread.
 * Allocated grains never move, so a mapping stays valid while open. */
int vmdk_file_map(struct vmdk_disk *d, uint64_t off, uint64_t len, int *fd,
		  uint64_t *file_off, uint64_t *run_len);

/* ---- block status ---------------------------------------------------------------------- */

enum vmdk_bs {
	VMDK_BS_UNALLOC, /* not in this disk: parent's, or zeros for a base */
	VMDK_BS_ZERO,    /* reads as zeros, masks the parent */
	VMDK_BS_DATA,    /* this disk holds the bytes */
};

/* Status of the run starting at `off`: its kind and length (>0, at most
 * max_len, never crossing capacity).  Runs are merged across grains and
 * extents of the same kind. */
int vmdk_block_status(struct vmdk_disk *d, uint64_t off, uint64_t max_len,
		      enum vmdk_bs *kind, uint64_t *run_len);

/* ---- locking (vmdk_lock.c) ---------------------------------------------------------
 * qemu-compatible image locking on every file of the disk: for each
 * permission bit n held, a shared OFD lock on byte 100+n; for each
 * permission n denied to others, a shared OFD lock on byte 200+n.  A
 * conflict (someone else holds what we deny, or denies what we hold) is
 * -EAGAIN with a message naming the file and the permission. */
enum {
	VMDK_PERM_READ = 1u << 0,   /* qemu BLK_PERM_CONSISTENT_READ */
	VMDK_PERM_WRITE = 1u << 1,
	VMDK_PERM_RESIZE = 1u << 3,
};
int vmdk_lock(struct vmdk_disk *d, unsigned held, unsigned denied);
void vmdk_unlock(struct vmdk_disk *d);
/* The same bytes on one file the caller opened (a file an operation
 * removes or replaces, whose disk may no longer open): -EAGAIN, reported
 * naming the path and the holder, when another open of it conflicts.
 * Released when the file is closed. */
int vmdk_lock_file(struct vd_file *f, const char *path, unsigned held, unsigned denied);

/* ---- create -------------------------------------------------------------------------- */

enum vmdk_subformat {
	VMDK_MONOLITHIC_SPARSE,
	VMDK_TWOGB_SPARSE,
	VMDK_MONOLITHIC_FLAT,
	VMDK_TWOGB_FLAT,
	VMDK_STREAM_OPTIMIZED,
	VMDK_VMFS,        /* ESXi base: NAME.vmdk + NAME-flat.vmdk (VMFS extent) */
	VMDK_VMFS_SPARSE, /* ESXi delta, COWD: NAME.vmdk + NAME-delta.vmdk */
	VMDK_SESPARSE,    /* ESXi delta, seSparse: NAME.vmdk + NAME-sesparse.vmdk */
	VMDK_SUBFORMAT_COUNT,
};
/* "monolithicSparse" etc. -> enum; -EINVAL if unknown */
int vmdk_subformat_parse(const char *name, enum vmdk_subformat *out);
const char *vmdk_subformat_name(enum vmdk_subformat sf);

struct vmdk_create_opts {
	uint64_t capacity;            /* bytes, rounded up to a sector */
	enum vmdk_subformat subformat;
	const char *adapter;          /* ide (default), lsilogic, buslogic, legacyESX, lsisas1068, pvscsi */
	int hwversion;                /* 0: 4 */
	bool zeroed_grain;            /* version 2 + flag bit 2 (sparse only) */
	uint64_t grain_size;          /* 0: 64 KiB (vmfsSparse: 512 B, as ESXi) */
	uint64_t split_size;          /* twoGb* extent size; 0: 2047 MiB */
	bool preallocate;             /* flat/vmfs: allocate every byte (else a sparse file) */
	/* Delta: parent CID and hint (NULL for a base).  Sparse subformats
	 * (hosted sparse, vmfsSparse, seSparse) only. */
	uint32_t parent_cid;
	const char *parent_hint;
};

/* Create a new, empty disk at path (descriptor; extents beside it).  Refuses
 * to overwrite any existing file.  A stream disk created here is written by
 * ascending vmdk_pwrite calls and finalised by vmdk_close. */
int vmdk_create(const char *path, const struct vmdk_create_opts *opts,
		const struct vd_io *io);
/* The files vmdk_create(path, opts) would make, descriptor (path) first,
 * then its extents beside it (none more for a single-file disk); the
 * options are checked as vmdk_create checks them (-EINVAL, reported).
 * Nothing is written. */
int vmdk_create_names(const char *path, const struct vmdk_create_opts *opts,
		      char ***files, unsigned *nr);

/* ---- info ------------------------------------------------------------------------------- */

enum vmdk_extent_kind {
	VMDK_EXT_FLAT,
	VMDK_EXT_VMFS,
	VMDK_EXT_ZERO,
	VMDK_EXT_SPARSE,  /* hosted KDMV */
	VMDK_EXT_STREAM,  /* KDMV, compressed */
	VMDK_EXT_COWD,    /* vmfsSparse */
	VMDK_EXT_SESPARSE,
};
const char *vmdk_extent_kind_name(enum vmdk_extent_kind k);

enum vmdk_access { VMDK_ACCESS_RW, VMDK_ACCESS_RDONLY, VMDK_ACCESS_NOACCESS };

#define VMDK_FLAG_ZEROED_GRAIN 0x4u

struct vmdk_extent_info {
	enum vmdk_extent_kind kind;
	enum vmdk_access access;
	const char *path;          /* resolved file path; NULL for ZERO */
	const char *name;          /* as written in the extent line */
	uint64_t start;            /* virtual byte offset of this extent */
	uint64_t size;             /* bytes of virtual space it covers */
	uint64_t file_offset;      /* FLAT: byte offset in the file */
	uint64_t file_size;        /* bytes on disk (st_size) */
	uint64_t allocated;        /* bytes of guest data stored (grains) */
	/* sparse header fields (0 for non-sparse kinds); flags bit
	 * VMDK_FLAG_ZEROED_GRAIN: the tables may hold zeroed grains (GTE 1) */
	uint32_t version, flags;
	uint64_t header_capacity_sectors, grain_size_sectors;
	uint64_t descriptor_offset_sectors, descriptor_size_sectors;
	uint32_t nr_gtes_per_gt, nr_gd_entries;
	uint64_t rgd_offset_sectors, gd_offset_sectors, overhead_sectors;
	bool unclean_shutdown;
	uint16_t compress_algorithm;
};

struct vmdk_info {
	const char *create_type;
	uint32_t cid, parent_cid;
	const char *parent_hint;
	uint64_t capacity;
	unsigned nr_extents;
	bool embedded_descriptor;
};
void vmdk_info_get(const struct vmdk_disk *d, struct vmdk_info *out);
/* Extent i (0 .. nr_extents-1); allocation figures may read tables. */
int vmdk_extent_info_get(struct vmdk_disk *d, unsigned i, struct vmdk_extent_info *out);
/* The same without the allocation figure (allocated is 0, but for flat
 * extents): no table is read, whatever the extent's size. */
int vmdk_extent_head_get(struct vmdk_disk *d, unsigned i, struct vmdk_extent_info *out);
/* Every file that makes up the disk (descriptor first, then extents, no
 * duplicates).  Valid until close. */
unsigned vmdk_nr_files(const struct vmdk_disk *d);
const char *vmdk_file_path(const struct vmdk_disk *d, unsigned i);
/* Iterate descriptor entries: 0 .. while it returns 0; -ENOENT at the end. */
int vmdk_desc_entry(const struct vmdk_disk *d, unsigned i, const char **key,
		    const char **value);

/* ---- check ------------------------------------------------------------------------------- */

struct vmdk_check_result {
	unsigned errors;       /* corruptions (tables out of bounds, overlaps, GT/RGT mismatch) */
	unsigned warnings;     /* unclean shutdown, capacity disagreements */
	uint64_t leaked;       /* bytes of grains no table points to */
	uint64_t allocated;    /* bytes of grain data referenced */
};
/* Called for each problem found, with the file and a message (NULL: count only). */
typedef void vmdk_check_fn(void *opaque, bool is_error, const char *file,
			   const char *msg);
/* Check every extent of an open disk (open it with VMDK_OPEN_DIRTY_OK). */
int vmdk_check(struct vmdk_disk *d, vmdk_check_fn *fn, void *opaque,
	       struct vmdk_check_result *out);

#endif
