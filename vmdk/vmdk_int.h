/* vmdk — private declarations of the format layer.  Never included outside
 * vmdk/.  Each extent kind implements struct vmdk_extent_ops in its own file
 * (vmdk_flat.c: FLAT/VMFS/ZERO, vmdk_sparse.c: hosted KDMV, vmdk_stream.c:
 * streamOptimized, vmdk_cowd.c: COWD, vmdk_sesparse.c: seSparse); adding a
 * kind touches that file and vmdk_extent_ops_for() in vmdk_disk.c. */
#ifndef VDELTA_VMDK_INT_H
#define VDELTA_VMDK_INT_H

#include <pthread.h>

#include "vmdk.h"

/* Limits with reasons.  Every number read from disk is checked against
 * these before it sizes an allocation or a loop. */
#define VMDK_MAX_CAPACITY (64ull << 40)     /* seSparse's ceiling, 64 TiB */
#define VMDK_MAX_DESC_SIZE (1u << 20)       /* qemu reads at most 1 MiB */
#define VMDK_MAX_EXTENTS 4096u              /* 2 TiB / 2047 MiB is ~1000 */
#define VMDK_MAX_GRAIN_SECTORS 0x10000u     /* 32 MiB: bounds grain buffers */
#define VMDK_MAX_GTES_PER_GT 4096u          /* KDMV 512, COWD 4096 */
#define VMDK_MAX_DESC_KEYS 4096u

/* ---- descriptor (vmdk_desc.c) --------------------------------------------------- */

enum vmdk_desc_section { VMDK_DESC_HEADER, VMDK_DESC_EXTENT, VMDK_DESC_DDB };

struct vmdk_desc_kv {
	char *key;
	char *value;  /* unquoted */
	bool quoted;  /* emit with quotes */
	enum vmdk_desc_section section;
};

struct vmdk_desc_extent {
	enum vmdk_access access;
	uint64_t size_sectors;
	char *type;         /* "FLAT", "SPARSE", ... as written */
	char *name;         /* NULL for ZERO */
	uint64_t offset_sectors;
	bool has_offset;
};

struct vmdk_desc {
	struct vmdk_desc_kv *kv;      /* header and DDB keys, in file order */
	unsigned nr_kv;
	struct vmdk_desc_extent *ext;
	unsigned nr_ext;
};

/* Parse text (len bytes, stops at the first NUL).  `file` names the source
 * in error messages. */
int vmdk_desc_parse(const char *text, size_t len, const char *file,
		    struct vmdk_desc **out);
void vmdk_desc_free(struct vmdk_desc *d);
/* Canonical text (VMware layout, LF endings), malloc'd, NUL-terminated. */
char *vmdk_desc_emit(const struct vmdk_desc *d);
const char *vmdk_desc_kv_get(const struct vmdk_desc *d, const char *key);
int vmdk_desc_kv_set(struct vmdk_desc *d, const char *key, const char *value,
		     bool quoted);
int vmdk_desc_add_extent(struct vmdk_desc *d, enum vmdk_access access,
			 uint64_t size_sectors, const char *type,
			 const char *name, uint64_t offset_sectors, bool has_offset);
/* "9ab16ab9" -> value; -EINVAL unless 1..8 hex digits */
int vmdk_desc_parse_cid(const char *s, uint32_t *out);

/* ---- extents ------------------------------------------------------------------------ */

struct vmdk_extent;
struct vmdk_regions;

struct vmdk_extent_ops {
	const char *name;
	/* Validate the header (first 512 bytes in hdr) and set up state.
	 * e->size is the descriptor's size; may be cross-checked. */
	int (*open)(struct vmdk_extent *e, const uint8_t *hdr);
	void (*close)(struct vmdk_extent *e);
	/* Offsets are relative to the extent; [off, off+len) lies inside it. */
	int (*pread)(struct vmdk_extent *e, void *buf, size_t len, uint64_t off);
	/* NULL: the kind is read-only. */
	int (*pwrite)(struct vmdk_extent *e, const void *buf, size_t len, uint64_t off);
	/* NULL: zero writes are done as data writes of zeros. */
	int (*pwrite_zeroes)(struct vmdk_extent *e, size_t len, uint64_t off);
	int (*block_status)(struct vmdk_extent *e, uint64_t off, uint64_t max_len,
			    enum vmdk_bs *kind, uint64_t *run_len);
	/* Where the bytes of the run at off (at most len) sit in e->file, when
	 * they are stored there as plain bytes (flat data, uncompressed
	 * allocated grains): *file_off and *run.  -ENOENT (not reported) for
	 * anything else, with *run its length.  NULL: never. */
	int (*file_map)(struct vmdk_extent *e, uint64_t off, uint64_t len,
			uint64_t *file_off, uint64_t *run);
	int (*flush)(struct vmdk_extent *e);           /* NULL: sync the file */
	/* Set or clear the on-disk "unclean shutdown" mark, durably. */
	int (*set_dirty)(struct vmdk_extent *e, bool dirty); /* NULL: none */
	/* Before the first write of an open (before the descriptor and header
	 * are touched): prove in-place writes cannot land on another region.
	 * NULL: nothing to prove. */
	int (*prepare_write)(struct vmdk_extent *e);
	/* Finish a sequential format (stream) at close. NULL: nothing. */
	int (*finish)(struct vmdk_extent *e);
	/* count: the allocation figure too (it may read every table). */
	int (*info)(struct vmdk_extent *e, struct vmdk_extent_info *out, bool count);
	int (*check)(struct vmdk_extent *e, vmdk_check_fn *fn, void *opaque,
		     struct vmdk_check_result *res);      /* NULL: nothing to check */
};

struct vmdk_extent {
	const struct vmdk_extent_ops *ops;
	struct vmdk_disk *disk;
	enum vmdk_extent_kind kind;
	enum vmdk_access access;
	char *name;          /* as written */
	const char *path;    /* resolved; points into the disk's file table */
	struct vd_file *file; /* shared with the disk's file table; NULL for ZERO */
	uint64_t start;      /* virtual byte offset */
	uint64_t size;       /* bytes */
	uint64_t file_offset; /* FLAT: bytes */
	uint64_t grain_size; /* bytes; set at open by kinds that have grains */
	void *priv;          /* kind state, freed by ops->close */
};

struct vmdk_disk_file {
	char *path;
	struct vd_file *file;
};

struct vmdk_disk {
	char *path;
	char *dir;
	const struct vd_io *io;
	unsigned open_flags;
	struct vmdk_desc *desc;
	/* descriptor location: embedded in files[embedded_file] at
	 * desc_offset bytes (desc_size bytes reserved), or file 0 = text. */
	bool embedded;
	unsigned desc_file;  /* index into files */
	uint64_t desc_offset, desc_size;
	/* bytes from desc_offset the header's extent proved free of every
	 * other region at open (write_embedded writes no further); 0: none */
	uint64_t desc_room;
	struct vmdk_disk_file *files;
	unsigned nr_files;
	uint8_t head[VD_SECTOR]; /* file 0's first sector as the open read it */
	bool head_read;
	struct vmdk_extent *extents;
	unsigned nr_extents;
	uint64_t capacity;
	bool writable;
	bool dirty;          /* first write done: CID bumped, unclean set */
	pthread_mutex_t lock; /* tables, allocation, dirty */
	/* writes that returned (atomic, bumped after each), and how many of
	 * them the last successful flush covered (under flush_lock, which
	 * runs one flush at a time and is taken before lock) */
	uint64_t write_gen, synced_gen;
	uint64_t written, written_at_writeback; /* bytes, for vmdk_writeback */
	pthread_mutex_t flush_lock;
	vmdk_backing_fn *backing;
	void *backing_opaque;
	unsigned lock_held, lock_denied; /* as last taken by vmdk_lock */
};

/* vmdk_lock.c: a writer's lock bytes on a file just created (held until it
 * is closed), so nobody opens it for writing while it is being made. */
int vmdk_lock_new_file(struct vd_file *f, const char *path);

/* Backing read for the bytes of extent e at extent offset off (adds e->start);
 * zeros when the disk has no backing. */
int vmdk_backing_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off);
/* Called by an extent before its first modification in this open:
 * new CID + uncleanShutdown, once per open.  Takes no lock; callers hold
 * disk->lock. */
int vmdk_disk_mark_dirty(struct vmdk_disk *d);
/* Extent files must lie in the descriptor's folder (STRICT_PATHS, or a
 * writer without OUTSIDE_OK). */
bool vmdk_disk_strict(const struct vmdk_disk *d);

extern const struct vmdk_extent_ops vmdk_flat_ops, vmdk_zero_ops, vmdk_sparse_ops,
	vmdk_stream_ops, vmdk_cowd_ops, vmdk_sesparse_ops;

/* ---- hosted sparse header (vmdk_sparse.c) ------------------------------------------ */

#define KDMV_MAGIC 0x564d444bu /* "KDMV" little-endian */
#define KDMV_FLAG_NL_CHECK 0x1u
#define KDMV_FLAG_RGD 0x2u
#define KDMV_FLAG_ZEROED_GTE 0x4u
#define KDMV_FLAG_COMPRESSED 0x10000u
#define KDMV_FLAG_MARKERS 0x20000u
#define KDMV_GD_AT_END 0xffffffffffffffffull

struct kdmv_header {
	uint32_t version, flags;
	uint64_t capacity_sectors, grain_size_sectors;
	uint64_t desc_offset_sectors, desc_size_sectors;
	uint32_t nr_gtes_per_gt;
	uint64_t rgd_offset_sectors, gd_offset_sectors, overhead_sectors;
	uint8_t unclean_shutdown;
	uint16_t compress_algorithm;
};

/* Decode and validate sector 0 of a KDMV file (magic, version <= 3,
 * incompatible flags, newline bytes, grain and GTE counts, capacity). */
int kdmv_header_decode(const uint8_t *buf, const char *file, struct kdmv_header *h);
void kdmv_header_encode(const struct kdmv_header *h, uint8_t *buf);
/* Add the header sector and the descriptor area to rs. */
int kdmv_add_regions(const struct kdmv_header *h, struct vmdk_regions *rs);
/* When e's file holds the disk's embedded descriptor: the bytes of it no
 * other region in rs (nor the data area past overHead) touches become
 * disk->desc_room, the most write_embedded may write. */
void kdmv_set_desc_room(struct vmdk_extent *e, const struct kdmv_header *h,
			const struct vmdk_regions *rs);
/* Copy the header fields into an extent info. */
void kdmv_header_info(const struct kdmv_header *h, struct vmdk_extent_info *out);

/* ---- metadata regions of one extent file (vmdk_region.c) ---------------------------
 * Header, descriptor area, directories and tables as sector ranges; checked
 * against each other and the file's end at open, and searched when grains
 * are checked against them (cost: see vmdk_region.c). */

enum vmdk_region_kind {
	VMDK_REG_HEADER, VMDK_REG_DESC, VMDK_REG_GD, VMDK_REG_RGD, VMDK_REG_GT,
	VMDK_REG_RGT, VMDK_REG_FOOTER,
};

#define VMDK_REGION_MAX_SECTORS ((1u << 28) - 1) /* longer ones are clamped */

struct vmdk_region {                  /* 16 bytes: a directory may hold millions */
	uint64_t sector;
	uint32_t nr_sectors : 28;
	uint32_t kind : 4;            /* enum vmdk_region_kind */
	uint32_t index;               /* directory entry of a table */
};

struct vmdk_regions {
	struct vmdk_region *r;
	size_t n, cap;
	uint64_t *max_end;            /* running maximum of ends, once sorted */
	bool sorted;
};

/* a: the earlier region b overlaps, or NULL when b lies outside the file
 * (of file_sectors); vmdk_region_msg words it. */
typedef void vmdk_region_fn(void *opaque, const struct vmdk_region *a,
			    const struct vmdk_region *b, uint64_t file_sectors);
void vmdk_region_msg(const struct vmdk_region *a, const struct vmdk_region *b,
		     uint64_t file_sectors, char *buf, size_t size);

int vmdk_regions_add(struct vmdk_regions *rs, uint64_t sector, uint64_t nr_sectors,
		     enum vmdk_region_kind kind, uint32_t index);
void vmdk_regions_free(struct vmdk_regions *rs);
/* Sort; call fn for every region outside the file or starting inside an
 * earlier one; *nr_problems: how many. */
int vmdk_regions_check(struct vmdk_regions *rs, uint64_t file_size, vmdk_region_fn *fn,
		       void *opaque, uint64_t *nr_problems);
/* A region overlapping [sector, sector + nr_sectors), or NULL.  Sorted only. */
const struct vmdk_region *vmdk_regions_find(const struct vmdk_regions *rs, uint64_t sector,
					    uint64_t nr_sectors);
/* Sectors from `sector` (at most nr_sectors) that no region other than
 * those of kind `self` touches. */
uint64_t vmdk_regions_room(const struct vmdk_regions *rs, uint64_t sector,
			   uint64_t nr_sectors, enum vmdk_region_kind self);
/* "grain table of directory entry 3 (sectors 21..24)" */
void vmdk_region_name(const struct vmdk_region *r, char *buf, size_t size);

/* ---- 32-bit two-level grain tables (vmdk_gt.c): KDMV, stream, COWD ------------------
 * GD entries and GTEs are u32 sector numbers in the extent file.  GTs are
 * loaded on demand into a fixed-size cache (VMDK_GT_CACHE_BYTES, direct
 * mapped by table sector: directory entries that share a table share a
 * slot).  Updates are made in the cached copy, which stays pinned until
 * vmdk_gt_flush writes it back in the order the invariants in vmdk_gt.c
 * require; a miss that lands on a dirty slot flushes first.  All calls are
 * made with the disk lock held; a table pointer is valid until the next
 * call. */

#define VMDK_GT_CACHE_BYTES (4u << 20)

struct vmdk_gt_slot {
	uint32_t *gt;             /* gtes_per_gt entries, NULL until first use */
	uint32_t sector;          /* key: the table's sector; 0 = empty */
	uint32_t index;           /* directory entry it was loaded for */
	uint8_t dirty;            /* 1: table changed, 2: directory entry new */
};

#define VMDK_GT_BAD 1u            /* flags[]: table overlaps another region */

struct vmdk_gt {
	struct vd_file *file;
	const char *path;         /* for messages */
	uint64_t grain_size;      /* bytes */
	uint32_t gtes_per_gt;
	uint32_t nr_gd;           /* GD entries */
	uint64_t nr_grains;       /* grains in the extent */
	uint64_t gd_off, rgd_off; /* bytes; rgd_off 0: no redundant copy */
	uint32_t *gd;             /* primary directory (sector numbers) */
	uint32_t *rgd;            /* redundant directory or NULL */
	uint8_t *flags;           /* per GD entry: VMDK_GT_BAD */
	struct vmdk_gt_slot *slots;
	uint32_t slot_mask;       /* nr slots - 1 (a power of two) */
	bool any_dirty;
	uint64_t file_size;       /* bytes, for bounds checks; raised on alloc */
	uint64_t open_size;       /* bytes: the file's size at open */
	uint64_t data_start;      /* bytes: a GTE below this is corrupt (0: any) */
	bool zeroed_ok;           /* GTE 1 means zeroed grain */
	bool stream;              /* GTEs point at grain markers */
	bool strict;              /* writable: a grain over metadata is an error */
	bool warned;              /* read-only: grain-over-metadata warning given */
	bool verified;            /* every table's grains checked (before writes) */
	struct vmdk_regions meta; /* header, descriptor, directories, tables */
	uint64_t nr_overlaps;     /* region problems found at open */
};

#define VMDK_GTE_ZEROED 1u

/* Set up with GD/RGD at the given byte offsets (rgd_off 0: none); reads and
 * bounds-checks the directory.  The caller then adds its own regions
 * (header, descriptor, footer) to t->meta and calls vmdk_gt_regions. */
int vmdk_gt_init(struct vmdk_gt *t, struct vd_file *f, const char *path,
		 uint64_t grain_size, uint32_t gtes_per_gt, uint64_t extent_size,
		 uint64_t gd_off, uint64_t rgd_off);
void vmdk_gt_destroy(struct vmdk_gt *t);
/* Add the directories and every table to t->meta and check all regions
 * against each other and the file's end: when `strict` (a writable open)
 * any problem fails with -VD_EBADDATA naming the regions, otherwise each is
 * a warning.  Tables that overlap an earlier region get VMDK_GT_BAD. */
int vmdk_gt_regions(struct vmdk_gt *t, bool strict);
/* GTE of grain g (0 when the GT is not allocated).  Loads the GT on demand;
 * checks that a GTE pointing at data lies inside the file. */
int vmdk_gt_lookup(struct vmdk_gt *t, uint64_t grain, uint32_t *gte);
/* Table of GD entry i (NULL when unallocated) without checking its entries
 * (check uses it); valid until the next call on t. */
int vmdk_gt_table(struct vmdk_gt *t, uint32_t i, uint32_t **out);
/* Set the GTE of grain g in memory.  When the GD entry is 0 a GT (and an
 * RGT) is allocated at *append_at (bytes, advanced).  Written by flush. */
int vmdk_gt_set(struct vmdk_gt *t, uint64_t grain, uint32_t gte, uint64_t *append_at);
/* Make data and table updates durable, in order (see vmdk_gt.c). */
int vmdk_gt_flush(struct vmdk_gt *t);
/* Before the first write of an open: every table's grains against the
 * metadata regions, once (reads every allocated table). */
int vmdk_gt_verify(struct vmdk_gt *t);
/* Bytes of grains referenced (grain_size per allocated GTE). */
int vmdk_gt_allocated(struct vmdk_gt *t, uint64_t *bytes);
/* Copy primary GTs over redundant ones that differ (after a crash). */
int vmdk_gt_repair_redundant(struct vmdk_gt *t, unsigned *fixed);
/* Check the tables of a 32-bit table extent (vmdk_check.c): every metadata
 * region against the others and the file's end (shared tables included),
 * grains at or past `overhead`, inside the file and off the metadata, no
 * two grains overlapping, GT == RGT (a mismatch is only a warning when
 * `unclean`: an interrupted update), leaked space. */
int vmdk_gt_check(struct vmdk_extent *e, struct vmdk_gt *gt, uint64_t overhead,
		  bool unclean, vmdk_check_fn *fn, void *opaque,
		  struct vmdk_check_result *res);

/* ---- vmdk_stream.c ------------------------------------------------------------------------ */
/* Write a fresh stream file: header (gdOffset = GD_AT_END) and the given
 * descriptor text at sector 1; then vmdk_open(RDWR) appends grains. */
int vmdk_stream_create(const char *path, const struct vmdk_create_opts *o,
		       const struct vd_io *io, const char *desc_text);

/* ---- ESXi delta files (vmdk_cowd.c, vmdk_sesparse.c) -------------------------------------- */
/* Write an empty extent of `sectors` into the fresh file f (not synced). */
int vmdk_cowd_create_file(struct vd_file *f, uint64_t sectors, uint64_t grain_sectors);
int vmdk_sesparse_create_file(struct vd_file *f, uint64_t sectors);

#endif
