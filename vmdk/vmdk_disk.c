/* vmdk — one disk: find and parse the descriptor, open the extents behind
 * their ops, dispatch I/O by virtual offset, keep the CID and the unclean
 * mark, write the descriptor back (format layer).
 *
 * A disk is opened from:
 *   - a KDMV file with an embedded descriptor (monolithicSparse, stream):
 *     the descriptor's sparse extent is this file, whatever name it has;
 *   - a KDMV file with capacity 0: a descriptor container, extents by name;
 *   - a KDMV file without descriptor, or a bare COWD / seSparse extent: a
 *     one-extent descriptor is synthesised;
 *   - a text descriptor naming extent files relative to its folder
 *     (absolute names and ".." allowed, as VMware and qemu allow them,
 *     unless VMDK_OPEN_STRICT_PATHS keeps them inside the folder).
 * A single-file disk names no other file: see check_embedded().
 */
#define _GNU_SOURCE
#include "vmdk_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define COWD_MAGIC 0x44574f43u          /* "COWD" little-endian */
#define SESPARSE_MAGIC 0xcafebabeull

/* ---- file table ------------------------------------------------------------------------------ */

static int disk_file_open(struct vmdk_disk *d, const char *path, unsigned *idx)
{
	struct vmdk_disk_file *files;
	unsigned flags = d->writable ? VD_O_RDWR : VD_O_RDONLY;
	int err;

	for (unsigned i = 0; i < d->nr_files; i++)
		if (!strcmp(d->files[i].path, path)) {
			*idx = i;
			return 0;
		}
	files = realloc(d->files, (d->nr_files + 1) * sizeof *files);
	if (!files)
		return -ENOMEM;
	d->files = files;
	files[d->nr_files].path = strdup(path);
	if (!files[d->nr_files].path)
		return -ENOMEM;
	err = d->io->open(d->io, path, flags, &files[d->nr_files].file);
	if (err) {
		free(files[d->nr_files].path);
		return err;
	}
	*idx = d->nr_files++;
	return 0;
}

/* ---- descriptor loading ---------------------------------------------------------------------- */

static int read_text(struct vmdk_disk *d, struct vd_file *f, uint64_t off, uint64_t len,
		     const char *what)
{
	char *text = malloc(len + 1);
	int err;

	if (!text)
		return -ENOMEM;
	err = vd_pread_meta(f, text, len, off);
	text[len] = '\0';
	if (err)
		vd_err("%s: reading %s: %s", d->path, what, strerror(-err));
	else
		err = vmdk_desc_parse(text, len, d->path, &d->desc);
	free(text);
	return err;
}

/* A one-extent descriptor for a file that carries none. */
static int synth_desc(struct vmdk_disk *d, const char *type, const char *create_type,
		      uint64_t capacity_sectors)
{
	const char *base = strrchr(d->path, '/');
	int err;

	if (d->writable) {
		vd_err("%s: a bare %s extent has no descriptor to keep its CID: open "
		       "the disk's descriptor for writing, not the extent", d->path, type);
		return -EROFS;
	}
	d->desc = calloc(1, sizeof *d->desc);
	if (!d->desc)
		return -ENOMEM;
	err = vmdk_desc_kv_set(d->desc, "CID", "fffffffe", false);
	if (!err)
		err = vmdk_desc_kv_set(d->desc, "parentCID", "ffffffff", false);
	if (!err)
		err = vmdk_desc_kv_set(d->desc, "createType", create_type, true);
	if (!err)
		err = vmdk_desc_add_extent(d->desc, VMDK_ACCESS_RW, capacity_sectors, type,
					   base ? base + 1 : d->path, 0, false);
	return err;
}

static int load_kdmv(struct vmdk_disk *d, struct vd_file *f, const uint8_t *hdr,
		     uint64_t file_size)
{
	struct kdmv_header h;
	uint64_t off, len;
	int err = kdmv_header_decode(hdr, d->path, &h);

	if (err)
		return err;
	if (!h.desc_offset_sectors || !h.desc_size_sectors)
		return synth_desc(d, "SPARSE", "monolithicSparse", h.capacity_sectors);
	off = h.desc_offset_sectors * VD_SECTOR;
	len = h.desc_size_sectors * VD_SECTOR;
	if (off >= file_size) {
		vd_err("%s: descriptorOffset %llu lies past the end of the file", d->path,
		       (unsigned long long)h.desc_offset_sectors);
		return -VD_EBADDATA;
	}
	len = VD_MIN(len, file_size - off);
	d->embedded = h.capacity_sectors != 0;
	d->desc_offset = off;
	d->desc_size = h.desc_size_sectors * VD_SECTOR;
	return read_text(d, f, off, len, "embedded descriptor");
}

static bool looks_like_text(const uint8_t *buf, size_t len)
{
	size_t n = strnlen((const char *)buf, len);

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (buf[i] < 0x09 || (buf[i] > 0x0d && buf[i] < 0x20))
			return false;
	return true;
}

/* Sniff the file at d->path and fill d->desc; file 0 is that file. */
static int load_descriptor(struct vmdk_disk *d)
{
	struct vd_file *f = d->files[0].file;
	const uint8_t *hdr = d->head;
	uint64_t size;
	int err = vd_fsize(f, &size);

	if (!err)
		err = vd_pread_meta(f, d->head, sizeof d->head, 0);
	if (err) {
		vd_err("%s: %s", d->path, strerror(-err));
		return err;
	}
	d->head_read = size >= VD_SECTOR;
	if (size >= VD_SECTOR && get_le32(hdr) == KDMV_MAGIC)
		return load_kdmv(d, f, hdr, size);
	if (size >= 2048 && get_le32(hdr) == COWD_MAGIC)
		return synth_desc(d, "VMFSSPARSE", "vmfsSparse", get_le32(hdr + 12));
	if (size >= VD_SECTOR && get_le64(hdr) == SESPARSE_MAGIC)
		return synth_desc(d, "SESPARSE", "seSparse", get_le64(hdr + 16));
	if (size > VMDK_MAX_DESC_SIZE || !looks_like_text(hdr, VD_MIN(size, sizeof d->head))) {
		vd_err("%s: not a VMDK (no sparse magic, not a text descriptor)", d->path);
		return -EMEDIUMTYPE;
	}
	return read_text(d, f, 0, size, "descriptor");
}

/* ---- extents ------------------------------------------------------------------------------- */

static const struct vmdk_extent_ops *ops_for(const struct vmdk_desc_extent *de,
					     const uint8_t *hdr, enum vmdk_extent_kind *kind)
{
	static const struct {
		const char *type;
		enum vmdk_extent_kind kind;
		const struct vmdk_extent_ops *ops;
	} table[] = {
		{ "FLAT", VMDK_EXT_FLAT, &vmdk_flat_ops },
		{ "VMFS", VMDK_EXT_VMFS, &vmdk_flat_ops },
		{ "ZERO", VMDK_EXT_ZERO, &vmdk_zero_ops },
		{ "SPARSE", VMDK_EXT_SPARSE, &vmdk_sparse_ops },
		{ "VMFSSPARSE", VMDK_EXT_COWD, &vmdk_cowd_ops },
		{ "SESPARSE", VMDK_EXT_SESPARSE, &vmdk_sesparse_ops },
	};

	for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
		if (strcmp(de->type, table[i].type))
			continue;
		*kind = table[i].kind;
		if (*kind == VMDK_EXT_SPARSE && get_le32(hdr) == COWD_MAGIC)
			*kind = VMDK_EXT_COWD;
		else if (*kind == VMDK_EXT_SPARSE &&
			 (get_le32(hdr + 8) & KDMV_FLAG_COMPRESSED))
			*kind = VMDK_EXT_STREAM;
		return *kind == VMDK_EXT_COWD	  ? &vmdk_cowd_ops
		       : *kind == VMDK_EXT_STREAM ? &vmdk_stream_ops
						  : table[i].ops;
	}
	return NULL;
}

/* A single-file disk (an embedded descriptor) is self-contained: its one
 * extent is the file itself, whatever name the descriptor gives it.  More
 * extent lines, or an extent of another kind, would make vdelta read other
 * files (or none) where VMware and qemu read this one (qemu ignores the
 * extent lines of an embedded descriptor): such a file is refused, not
 * half-read. */
static int check_embedded(struct vmdk_disk *d)
{
	const struct vmdk_desc_extent *de = &d->desc->ext[0];

	if (d->desc->nr_ext > 1) {
		de = &d->desc->ext[1];
		vd_err("%s: embedded descriptor lists %u extents (extent 2: %s \"%s\"): "
		       "a single-file disk holds one extent, itself; refusing to read "
		       "other files", d->path, d->desc->nr_ext, de->type,
		       de->name ? de->name : "");
		return -VD_EBADDATA;
	}
	if (strcmp(de->type, "SPARSE")) {
		vd_err("%s: embedded descriptor extent 1 is of type %s, not SPARSE: a "
		       "single-file disk's extent is the file itself", d->path, de->type);
		return -VD_EBADDATA;
	}
	return 0;
}

/* Strict paths: the extent file, symlinks resolved, lies inside the
 * descriptor's folder (resolved too).  A missing file passes here and is
 * reported by the open that follows. */
static int check_strict(struct vmdk_disk *d, const char *path, unsigned i)
{
	char *dir = realpath(d->dir, NULL), *file = NULL;
	int err = dir ? 0 : -errno;
	size_t n = dir ? strlen(dir) : 0;

	if (!err && !(file = realpath(path, NULL)) && errno != ENOENT)
		err = -errno;
	if (err) {
		vd_err("%s: extent %u file \"%s\": %s", d->path, i + 1, path,
		       strerror(-err));
	} else if (file && (strncmp(file, dir, n) || (file[n] != '/' && strcmp(dir, "/")))) {
		vd_err("%s: extent %u file \"%s\" resolves to %s, outside the "
		       "descriptor's folder %s (%s)", d->path, i + 1,
		       d->desc->ext[i].name, file, dir,
		       d->open_flags & VMDK_OPEN_STRICT_PATHS
		       ? "strict paths: vdelta removes and moves only files in a layer's folder"
		       : "a writer keeps to the disk's folder unless told otherwise: "
			 "--outside-extents");
		err = -EPERM;
	}
	free(dir);
	free(file);
	return err;
}

bool vmdk_disk_strict(const struct vmdk_disk *d)
{
	return (d->open_flags & VMDK_OPEN_STRICT_PATHS) ||
	       ((d->open_flags & VMDK_OPEN_RDWR) && !(d->open_flags & VMDK_OPEN_OUTSIDE_OK));
}

/* The path of extent i: the file itself in a single-file disk, else the
 * name relative to the descriptor's folder (absolute names and ".." are
 * followed as VMware and qemu do, unless VMDK_OPEN_STRICT_PATHS). */
static int extent_path(struct vmdk_disk *d, const struct vmdk_desc_extent *de,
		       unsigned i, char **out)
{
	int err;

	*out = d->embedded ? strdup(d->path) : vd_path_join(d->dir, de->name);
	if (!*out)
		return -ENOMEM;
	if (d->embedded || !vmdk_disk_strict(d))
		return 0;
	err = check_strict(d, *out, i);
	if (err) {
		free(*out);
		*out = NULL;
	}
	return err;
}

static int extent_file(struct vmdk_disk *d, struct vmdk_extent *e, unsigned i,
		       uint8_t *hdr)
{
	const struct vmdk_desc_extent *de = &d->desc->ext[i];
	char *path;
	unsigned idx;
	int err = extent_path(d, de, i, &path);

	if (err)
		return err;
	err = disk_file_open(d, path, &idx);
	if (err)
		vd_err("%s: extent %u file \"%s\": %s%s", d->path, i + 1, path,
		       vd_open_strerror(err, path),
		       err == -ENOENT ? " (extent file not found)" : "");
	free(path);
	if (err)
		return err;
	e->path = d->files[idx].path;
	e->file = d->files[idx].file;
	if (idx == 0 && d->head_read) { /* the descriptor's own file: read already */
		memcpy(hdr, d->head, VD_SECTOR);
		return 0;
	}
	err = vd_pread_meta(e->file, hdr, VD_SECTOR, 0);
	if (err)
		vd_err("%s: reading header: %s", e->path, strerror(-err));
	return err;
}

static int extent_open(struct vmdk_disk *d, unsigned i, uint64_t start)
{
	const struct vmdk_desc_extent *de = &d->desc->ext[i];
	struct vmdk_extent *e = &d->extents[i];
	uint8_t hdr[VD_SECTOR] = { 0 };
	int err = 0;

	*e = (struct vmdk_extent){ .disk = d, .access = de->access, .start = start,
				   .size = de->size_sectors * VD_SECTOR,
				   .file_offset = de->offset_sectors * VD_SECTOR };
	e->name = de->name ? strdup(de->name) : NULL;
	if (strcmp(de->type, "ZERO"))
		err = extent_file(d, e, i, hdr);
	if (err)
		return err;
	e->ops = ops_for(de, hdr, &e->kind);
	if (!e->ops) {
		vd_err("%s: extent %u: type %s is not supported", d->path, i + 1, de->type);
		return -ENOTSUP;
	}
	if (d->writable && de->access == VMDK_ACCESS_RW && !e->ops->pwrite &&
	    e->kind != VMDK_EXT_ZERO) {
		vd_err("%s: %s extents are read-only in vdelta", e->path, e->ops->name);
		return -EROFS;
	}
	err = e->ops->open(e, hdr);
	return err;
}

static int open_extents(struct vmdk_disk *d)
{
	uint64_t start = 0;
	int err = 0;

	if (!d->desc->nr_ext) {
		vd_err("%s: descriptor lists no extents", d->path);
		return -VD_EBADDATA;
	}
	if (d->embedded && (err = check_embedded(d)))
		return err;
	d->extents = calloc(d->desc->nr_ext, sizeof *d->extents);
	if (!d->extents)
		return -ENOMEM;
	for (unsigned i = 0; i < d->desc->nr_ext && !err; i++) {
		d->nr_extents = i + 1;
		err = extent_open(d, i, start);
		start += d->extents[i].size;
		if (start > VMDK_MAX_CAPACITY) {
			vd_err("%s: extents add up to more than 64 TiB", d->path);
			err = -VD_EBADDATA;
		}
	}
	d->capacity = start;
	return err;
}

/* ---- open / close ---------------------------------------------------------------------------- */

static int check_cids(struct vmdk_disk *d)
{
	static const char *const keys[] = { "CID", "parentCID" };
	uint32_t v;

	for (int i = 0; i < 2; i++) {
		const char *s = vmdk_desc_kv_get(d->desc, keys[i]);
		if (!s && i == 1)
			continue; /* a missing parentCID means no parent */
		if (!s || vmdk_desc_parse_cid(s, &v)) {
			vd_err("%s: descriptor field %s = \"%s\" is not a content id",
			       d->path, keys[i], s ? s : "(missing)");
			return -VD_EBADDATA;
		}
	}
	return 0;
}

int vmdk_open(const char *path, unsigned flags, const struct vd_io *io,
	      struct vmdk_disk **out)
{
	struct vmdk_disk *d = calloc(1, sizeof *d);
	unsigned idx;
	int err;

	if (!d)
		return -ENOMEM;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->flush_lock, NULL);
	d->io = io ? io : vd_io_posix();
	d->open_flags = flags;
	d->writable = (flags & VMDK_OPEN_RDWR) && !(flags & VMDK_OPEN_DESC_ONLY);
	d->path = strdup(path);
	d->dir = vd_dirname(path);
	if (!d->path || !d->dir)
		err = -ENOMEM;
	else if ((err = disk_file_open(d, path, &idx)))
		vd_err("%s: %s", path, vd_open_strerror(err, path));
	if (!err)
		err = load_descriptor(d);
	if (!err)
		err = check_cids(d);
	if (!err && !(flags & VMDK_OPEN_DESC_ONLY))
		err = open_extents(d);
	if (err) {
		d->writable = false; /* nothing was written: close quietly */
		vmdk_close(d);
		return err;
	}
	*out = d;
	return 0;
}

/* Whether writes to the disk reach this extent's file. */
static bool extent_written(const struct vmdk_disk *d, const struct vmdk_extent *e)
{
	return e->file && e->access == VMDK_ACCESS_RW && d->writable;
}

static int flush_extents(struct vmdk_disk *d)
{
	int err = 0;

	for (unsigned i = 0; i < d->nr_extents && !err; i++) {
		struct vmdk_extent *e = &d->extents[i];
		if (!extent_written(d, e))
			continue;
		err = e->ops->flush ? e->ops->flush(e) : vd_sync(e->file);
		if (err)
			vd_err("%s: flush: %s", e->path, strerror(-err));
	}
	return err;
}

static int finish_and_clean(struct vmdk_disk *d)
{
	int err = 0, e2;

	for (unsigned i = 0; i < d->nr_extents; i++) {
		struct vmdk_extent *e = &d->extents[i];
		if (e->ops && e->ops->finish && (e2 = e->ops->finish(e)) && !err)
			err = e2;
	}
	if ((e2 = flush_extents(d)) && !err) /* finish's own writes too */
		err = e2;
	for (unsigned i = 0; !err && d->dirty && i < d->nr_extents; i++) {
		struct vmdk_extent *e = &d->extents[i];
		if (e->ops && e->ops->set_dirty && e->access == VMDK_ACCESS_RW)
			err = e->ops->set_dirty(e, false); /* [S4] */
	}
	return err;
}

int vmdk_close(struct vmdk_disk *d)
{
	int err = 0;

	if (!d)
		return 0;
	if (d->writable)
		err = finish_and_clean(d);
	for (unsigned i = 0; i < d->nr_extents; i++) {
		if (d->extents[i].ops && d->extents[i].ops->close)
			d->extents[i].ops->close(&d->extents[i]);
		free(d->extents[i].name);
	}
	for (unsigned i = 0; i < d->nr_files; i++) {
		vd_close(d->files[i].file);
		free(d->files[i].path);
	}
	vmdk_desc_free(d->desc);
	pthread_mutex_destroy(&d->lock);
	pthread_mutex_destroy(&d->flush_lock);
	free(d->extents);
	free(d->files);
	free(d->path);
	free(d->dir);
	free(d);
	return err;
}

/* ---- CID, dirty mark, descriptor write-back -------------------------------------------------- */

static uint32_t new_cid(uint32_t old)
{
	uint32_t v;

	do
		v = vd_random32();
	while (v == VMDK_CID_NONE || v == 0xfffffffeu || v == old);
	return v;
}

static int set_cid(struct vmdk_disk *d, uint32_t cid)
{
	char hex[9], lcid[33];
	const char *old = vmdk_desc_kv_get(d->desc, "ddb.longContentID");
	int err;

	snprintf(hex, sizeof hex, "%08x", cid);
	err = vmdk_desc_kv_set(d->desc, "CID", hex, false);
	if (!err && old && strlen(old) == 32) { /* keep VMware's "ends in CID" rule */
		snprintf(lcid, sizeof lcid, "%08x%08x%08x%s", vd_random32(), vd_random32(),
			 vd_random32(), hex);
		err = vmdk_desc_kv_set(d->desc, "ddb.longContentID", lcid, true);
	}
	return err;
}

int vmdk_disk_mark_dirty(struct vmdk_disk *d)
{
	int err;

	if (d->dirty)
		return 0;
	if (!d->writable)
		return -EROFS;
	for (unsigned i = 0; i < d->nr_extents; i++) { /* before anything is written */
		struct vmdk_extent *e = &d->extents[i];
		if (e->ops->prepare_write && e->access == VMDK_ACCESS_RW &&
		    (err = e->ops->prepare_write(e)))
			return err;
	}
	err = set_cid(d, new_cid(vmdk_cid(d)));
	if (!err)
		err = vmdk_desc_write(d);
	for (unsigned i = 0; !err && i < d->nr_extents; i++) {
		struct vmdk_extent *e = &d->extents[i];
		if (e->ops->set_dirty && e->access == VMDK_ACCESS_RW)
			err = e->ops->set_dirty(e, true);
	}
	if (!err)
		d->dirty = true;
	return err;
}

/* Rewrite the embedded descriptor, zero padded, within the desc_room bytes
 * the extent proved free of every other region at open (never the whole
 * descriptorSize a header merely claims). */
static int write_embedded(struct vmdk_disk *d, const char *text, size_t len)
{
	struct vd_file *f = d->files[0].file;
	char *buf;
	int err;

	if (len >= d->desc_room) {
		vd_err("%s: descriptor (%zu bytes) does not fit in the embedded area "
		       "(descriptorSize %llu bytes, %llu free of other regions)", d->path, len,
		       (unsigned long long)d->desc_size, (unsigned long long)d->desc_room);
		return -ENOSPC;
	}
	buf = calloc(1, d->desc_room);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, text, len);
	err = vd_pwrite(f, buf, d->desc_room, d->desc_offset);
	free(buf);
	return err ? err : vd_sync(f);
}

/* A separate descriptor is rewritten in place when the new text fits in the
 * old file (padded with blank lines: CID changes keep the length), so the
 * file keeps its inode and its locks; otherwise via a synced temporary and
 * rename. */
static int write_separate(struct vmdk_disk *d, const char *text, size_t len)
{
	struct vd_file *f = d->files[0].file, *tmp;
	uint64_t old;
	char *tmp_path;
	int err = vd_fsize(f, &old);

	if (!err && len <= old) {
		char *buf = malloc(old);
		if (!buf)
			return -ENOMEM;
		memcpy(buf, text, len);
		memset(buf + len, '\n', old - len);
		err = vd_pwrite(f, buf, old, 0);
		free(buf);
		return err ? err : vd_sync(f);
	}
	if (err || asprintf(&tmp_path, "%s.vdelta-tmp", d->path) < 0)
		return err ? err : -ENOMEM;
	d->io->unlink(d->io, tmp_path); /* a stale one from an interrupted rewrite */
	err = d->io->open(d->io, tmp_path, VD_O_CREATE | VD_O_RDWR, &tmp);
	if (!err) {
		err = vd_pwrite(tmp, text, len, 0);
		if (!err)
			err = vd_sync(tmp);
		vd_close(tmp);
	}
	if (!err)
		err = d->io->rename(d->io, tmp_path, d->path);
	if (!err)
		err = d->io->sync_dir(d->io, d->path);
	if (err)
		d->io->unlink(d->io, tmp_path);
	free(tmp_path);
	if (!err) /* follow the new inode, and keep holding our locks on it */
		err = d->io->open(d->io, d->path, VD_O_RDWR, &tmp);
	if (!err) {
		vd_close(d->files[0].file);
		d->files[0].file = tmp;
		if (d->lock_held || d->lock_denied)
			err = vmdk_lock(d, d->lock_held, d->lock_denied);
	}
	return err;
}

int vmdk_desc_write(struct vmdk_disk *d)
{
	char *text;
	int err;

	if (!d->writable) {
		vd_err("%s: descriptor is read-only", d->path);
		return -EROFS;
	}
	text = vmdk_desc_emit(d->desc);
	if (!text)
		return -ENOMEM;
	err = d->desc_offset ? write_embedded(d, text, strlen(text))
			     : write_separate(d, text, strlen(text));
	if (err && err != -ENOSPC)
		vd_err("%s: writing descriptor: %s", d->path, strerror(-err));
	free(text);
	return err;
}

/* ---- I/O dispatch ----------------------------------------------------------------------------- */

/* Index of the extent holding byte off (binary search on start). */
static unsigned extent_at(const struct vmdk_disk *d, uint64_t off)
{
	unsigned lo = 0, hi = d->nr_extents;

	while (hi - lo > 1) {
		unsigned mid = lo + (hi - lo) / 2;
		if (d->extents[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	while (lo + 1 < d->nr_extents && d->extents[lo].size == 0)
		lo++;
	return lo;
}

static int check_range(const struct vmdk_disk *d, size_t len, uint64_t off)
{
	if (off > d->capacity || len > d->capacity - off) {
		vd_err("%s: I/O at %llu+%zu is past the capacity %llu", d->path,
		       (unsigned long long)off, len, (unsigned long long)d->capacity);
		return -EINVAL;
	}
	return 0;
}

enum io_kind { IO_READ, IO_WRITE, IO_ZERO };

static int extent_io(struct vmdk_extent *e, enum io_kind kind, void *buf, size_t n,
		     uint64_t off)
{
	if (kind == IO_READ) {
		if (e->access == VMDK_ACCESS_NOACCESS) {
			vd_err("%s: extent \"%s\" is NOACCESS", e->disk->path,
			       e->name ? e->name : "ZERO");
			return -EACCES;
		}
		return e->ops->pread(e, buf, n, off);
	}
	if (e->access != VMDK_ACCESS_RW || !e->ops->pwrite) {
		vd_err("%s: extent \"%s\" is read-only", e->disk->path,
		       e->name ? e->name : "ZERO");
		return -EROFS;
	}
	if (kind == IO_ZERO && e->ops->pwrite_zeroes)
		return e->ops->pwrite_zeroes(e, n, off);
	if (kind == IO_ZERO) {
		uint8_t *z = calloc(1, n);
		int err = z ? e->ops->pwrite(e, z, n, off) : -ENOMEM;
		free(z);
		return err;
	}
	return e->ops->pwrite(e, buf, n, off);
}

static int disk_io(struct vmdk_disk *d, enum io_kind kind, void *buf, size_t len,
		   uint64_t off)
{
	uint8_t *p = buf;
	int err = check_range(d, len, off);

	if (!err && kind != IO_READ && !d->writable) {
		vd_err("%s: disk is open read-only", d->path);
		err = -EROFS;
	}
	while (!err && len) {
		struct vmdk_extent *e = &d->extents[extent_at(d, off)];
		size_t n = (size_t)VD_MIN((uint64_t)len, e->start + e->size - off);
		err = extent_io(e, kind, p, n, off - e->start);
		if (p)
			p += n;
		off += n;
		len -= n;
	}
	return err;
}

int vmdk_pread(struct vmdk_disk *d, void *buf, size_t len, uint64_t off)
{
	return disk_io(d, IO_READ, buf, len, off);
}

/* Counted once it returned, failed or not (part of it may be written):
 * the next flush then syncs. */
static int write_done(struct vmdk_disk *d, size_t len, int err)
{
	__atomic_add_fetch(&d->written, len, __ATOMIC_RELAXED);
	__atomic_add_fetch(&d->write_gen, 1, __ATOMIC_RELEASE);
	return err;
}

int vmdk_pwrite(struct vmdk_disk *d, const void *buf, size_t len, uint64_t off)
{
	return write_done(d, len, disk_io(d, IO_WRITE, (void *)buf, len, off));
}

int vmdk_pwrite_zeroes(struct vmdk_disk *d, size_t len, uint64_t off)
{
	return write_done(d, len, disk_io(d, IO_ZERO, NULL, len, off));
}

/* A group commit of flushes: a caller that waited for the flush lock
 * while another flush ran finds its writes covered when they returned
 * before that flush read the count. */
int vmdk_flush(struct vmdk_disk *d)
{
	uint64_t gen = __atomic_load_n(&d->write_gen, __ATOMIC_ACQUIRE);
	int err = 0;

	pthread_mutex_lock(&d->flush_lock);
	if (gen != d->synced_gen) {
		gen = __atomic_load_n(&d->write_gen, __ATOMIC_ACQUIRE);
		err = flush_extents(d);
		if (!err)
			d->synced_gen = gen;
	}
	pthread_mutex_unlock(&d->flush_lock);
	return err;
}

/* What vmdk_writeback lets pile up before it starts the disk on it. */
#define WRITEBACK_STEP (8u << 20)

void vmdk_writeback(struct vmdk_disk *d)
{
	uint64_t now = __atomic_load_n(&d->written, __ATOMIC_RELAXED);

	if (now - __atomic_load_n(&d->written_at_writeback, __ATOMIC_RELAXED) < WRITEBACK_STEP)
		return;
	__atomic_store_n(&d->written_at_writeback, now, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < d->nr_extents; i++)
		if (extent_written(d, &d->extents[i]))
			vd_writeback(d->extents[i].file);
}

int vmdk_block_status(struct vmdk_disk *d, uint64_t off, uint64_t max_len,
		      enum vmdk_bs *kind, uint64_t *run_len)
{
	uint64_t done = 0;
	enum vmdk_bs k;
	int err = check_range(d, 0, off);

	if (err || off == d->capacity || !max_len)
		return err ? err : -EINVAL;
	max_len = VD_MIN(max_len, d->capacity - off);
	while (!err && done < max_len) {
		struct vmdk_extent *e = &d->extents[extent_at(d, off + done)];
		uint64_t in = off + done - e->start, run;
		err = e->ops->block_status(e, in, VD_MIN(max_len - done, e->size - in), &k, &run);
		if (err || (done && k != *kind))
			break;
		*kind = k;
		done += run;
	}
	*run_len = done;
	return done ? 0 : err;
}

int vmdk_file_map(struct vmdk_disk *d, uint64_t off, uint64_t len, int *fd,
		  uint64_t *file_off, uint64_t *run_len)
{
	struct vmdk_extent *e;
	uint64_t in;
	int err = check_range(d, 0, off);

	if (err || off == d->capacity || !len)
		return err ? err : -EINVAL;
	e = &d->extents[extent_at(d, off)];
	in = off - e->start;
	*run_len = VD_MIN(len, e->size - in);
	if (!e->ops->file_map || !e->file || e->file->fd < 0)
		return -ENOENT;
	err = e->ops->file_map(e, in, *run_len, file_off, run_len);
	*fd = e->file->fd;
	return err;
}

void vmdk_set_backing(struct vmdk_disk *d, vmdk_backing_fn *fn, void *opaque)
{
	d->backing = fn;
	d->backing_opaque = opaque;
}

int vmdk_backing_read(struct vmdk_extent *e, void *buf, size_t len, uint64_t off)
{
	struct vmdk_disk *d = e->disk;

	if (!d->backing) {
		memset(buf, 0, len);
		return 0;
	}
	return d->backing(d->backing_opaque, buf, len, e->start + off);
}

/* ---- accessors --------------------------------------------------------------------------------- */

uint64_t vmdk_capacity(const struct vmdk_disk *d) { return d->capacity; }
const char *vmdk_path(const struct vmdk_disk *d) { return d->path; }
bool vmdk_writable(const struct vmdk_disk *d) { return d->writable; }

uint64_t vmdk_grain_size(const struct vmdk_disk *d)
{
	for (unsigned i = 0; i < d->nr_extents; i++)
		if (d->extents[i].grain_size)
			return d->extents[i].grain_size;
	return 0;
}

static uint32_t cid_of(const struct vmdk_disk *d, const char *key)
{
	uint32_t v = VMDK_CID_NONE;

	vmdk_desc_parse_cid(vmdk_desc_kv_get(d->desc, key), &v);
	return v;
}

uint32_t vmdk_cid(const struct vmdk_disk *d) { return cid_of(d, "CID"); }
uint32_t vmdk_parent_cid(const struct vmdk_disk *d) { return cid_of(d, "parentCID"); }

const char *vmdk_parent_hint(const struct vmdk_disk *d)
{
	return vmdk_desc_kv_get(d->desc, "parentFileNameHint");
}

const char *vmdk_desc_get(const struct vmdk_disk *d, const char *key)
{
	return vmdk_desc_kv_get(d->desc, key);
}

int vmdk_desc_set(struct vmdk_disk *d, const char *key, const char *value)
{
	return vmdk_desc_kv_set(d->desc, key, value,
				!(strcmp(key, "CID") == 0 || strcmp(key, "parentCID") == 0 ||
				  strcmp(key, "version") == 0));
}

int vmdk_set_parent(struct vmdk_disk *d, uint32_t parent_cid, const char *hint)
{
	char hex[9];
	int err;

	snprintf(hex, sizeof hex, "%08x", parent_cid);
	err = vmdk_desc_kv_set(d->desc, "parentCID", hex, false);
	if (!err)
		err = vmdk_desc_kv_set(d->desc, "parentFileNameHint", hint, true);
	return err;
}

int vmdk_desc_entry(const struct vmdk_disk *d, unsigned i, const char **key,
		    const char **value)
{
	if (i >= d->desc->nr_kv)
		return -ENOENT;
	*key = d->desc->kv[i].key;
	*value = d->desc->kv[i].value;
	return 0;
}

unsigned vmdk_nr_files(const struct vmdk_disk *d) { return d->nr_files; }
const char *vmdk_file_path(const struct vmdk_disk *d, unsigned i)
{
	return i < d->nr_files ? d->files[i].path : NULL;
}

void vmdk_info_get(const struct vmdk_disk *d, struct vmdk_info *out)
{
	*out = (struct vmdk_info){
		.create_type = vmdk_desc_kv_get(d->desc, "createType"),
		.cid = vmdk_cid(d), .parent_cid = vmdk_parent_cid(d),
		.parent_hint = vmdk_parent_hint(d), .capacity = d->capacity,
		.nr_extents = d->nr_extents, .embedded_descriptor = d->embedded,
	};
}

static const char *const kind_names[] = { "FLAT", "VMFS", "ZERO", "SPARSE",
					  "STREAM", "VMFSSPARSE", "SESPARSE" };

const char *vmdk_extent_kind_name(enum vmdk_extent_kind k)
{
	return (unsigned)k < sizeof kind_names / sizeof kind_names[0] ? kind_names[k] : "?";
}

static int extent_info(struct vmdk_disk *d, unsigned i, struct vmdk_extent_info *out,
		       bool count)
{
	struct vmdk_extent *e;

	if (i >= d->nr_extents)
		return -EINVAL;
	e = &d->extents[i];
	*out = (struct vmdk_extent_info){
		.kind = e->kind, .access = e->access, .path = e->path, .name = e->name,
		.start = e->start, .size = e->size, .file_offset = e->file_offset,
	};
	if (e->file)
		vd_fsize(e->file, &out->file_size);
	return e->ops->info ? e->ops->info(e, out, count) : 0;
}

int vmdk_extent_info_get(struct vmdk_disk *d, unsigned i, struct vmdk_extent_info *out)
{
	return extent_info(d, i, out, true);
}

int vmdk_extent_head_get(struct vmdk_disk *d, unsigned i, struct vmdk_extent_info *out)
{
	return extent_info(d, i, out, false);
}
