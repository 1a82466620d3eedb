/* vmdk — creating new disks (format layer): monolithic and split sparse,
 * monolithic and split flat, stream (via vmdk_stream.c), ESXi's vmfs base
 * (NAME-flat.vmdk) and its deltas (vmfsSparse NAME-delta.vmdk via
 * vmdk_cowd.c, seSparse NAME-sesparse.vmdk via vmdk_sesparse.c, named and
 * described as ESXi writes them: isNativeSnapshot, ddb.longContentID,
 * ddb.grain), and sparse deltas that name a parent by CID and hint.
 *
 * Layout of a hosted sparse extent we create (what VMware and qemu write,
 * format doc §2.4; all tables preallocated so that qemu, which cannot
 * allocate grain tables, can write into our files):
 *   sector 0        header
 *   1 .. 20         embedded descriptor (monolithic) / unused (split)
 *   21              redundant GD, then redundant GTs
 *   ..              GD, then GTs
 *   overHead        first grain (rounded up to a grain)
 * Extents are written before the descriptor that names them; every file is
 * synced, and removed again if creation fails. */
#define _GNU_SOURCE
#include "vmdk_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>

#define DEFAULT_GRAIN (64u * 1024)
#define DEFAULT_SPLIT (2047ull << 20) /* VMware's 2047 MiB */
#define EMBEDDED_DESC_SECTORS 20u
#define GTES_PER_GT 512u

static const char *const subformat_names[VMDK_SUBFORMAT_COUNT] = {
	"monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat",
	"twoGbMaxExtentFlat", "streamOptimized", "vmfs", "vmfsSparse", "seSparse",
};

int vmdk_subformat_parse(const char *name, enum vmdk_subformat *out)
{
	for (int i = 0; i < VMDK_SUBFORMAT_COUNT; i++)
		if (!strcmp(name, subformat_names[i])) {
			*out = (enum vmdk_subformat)i;
			return 0;
		}
	return -EINVAL;
}

const char *vmdk_subformat_name(enum vmdk_subformat sf)
{
	return (unsigned)sf < VMDK_SUBFORMAT_COUNT ? subformat_names[sf] : "?";
}

static bool is_sparse(enum vmdk_subformat sf)
{
	return sf == VMDK_MONOLITHIC_SPARSE || sf == VMDK_TWOGB_SPARSE;
}

/* ESXi's delta kinds */
static bool is_esx_delta(enum vmdk_subformat sf)
{
	return sf == VMDK_VMFS_SPARSE || sf == VMDK_SESPARSE;
}

static bool is_esx(enum vmdk_subformat sf)
{
	return sf == VMDK_VMFS || is_esx_delta(sf);
}

static bool is_split(enum vmdk_subformat sf)
{
	return sf == VMDK_TWOGB_SPARSE || sf == VMDK_TWOGB_FLAT;
}

/* ---- options ------------------------------------------------------------------------------ */

static int opts_check(const char *path, const struct vmdk_create_opts *o)
{
	static const char *const adapters[] = { "ide", "lsilogic", "buslogic", "legacyESX",
						"lsisas1068", "pvscsi" };
	bool adapter_ok = !o->adapter;

	for (size_t i = 0; i < sizeof adapters / sizeof adapters[0]; i++)
		adapter_ok |= o->adapter && !strcmp(o->adapter, adapters[i]);
#define REFUSE(cond, ...) if (cond) { vd_err(__VA_ARGS__); return -EINVAL; }
	REFUSE((unsigned)o->subformat >= VMDK_SUBFORMAT_COUNT, "%s: unknown subformat", path);
	REFUSE(strpbrk(path, "\"\n\r"), "%s: a disk name may not contain '\"' or a line "
	       "break (the descriptor grammar has no escapes)", path);
	REFUSE(!adapter_ok, "%s: unknown adapter type \"%s\"", path, o->adapter);
	REFUSE(o->capacity == 0 || o->capacity > VMDK_MAX_CAPACITY,
	       "%s: size %llu is out of range (1 byte .. 64 TiB)", path,
	       (unsigned long long)o->capacity);
	REFUSE(o->subformat == VMDK_MONOLITHIC_SPARSE &&
	       VD_ROUND_UP(o->capacity, VD_SECTOR) / VD_SECTOR > UINT32_MAX,
	       "%s: monolithicSparse holds at most 2 TiB; use twoGbMaxExtentSparse", path);
	REFUSE(o->zeroed_grain && !is_sparse(o->subformat),
	       "%s: zeroed grains need a sparse subformat", path);
	REFUSE(o->parent_hint && !is_sparse(o->subformat) && !is_esx_delta(o->subformat),
	       "%s: a delta must be sparse (monolithicSparse, twoGbMaxExtentSparse, "
	       "vmfsSparse or seSparse)", path);
	REFUSE(o->subformat == VMDK_VMFS_SPARSE &&
	       VD_ROUND_UP(o->capacity, VD_SECTOR) / VD_SECTOR > UINT32_MAX,
	       "%s: vmfsSparse holds at most 2 TiB - 512 B (32-bit sector count); use "
	       "seSparse", path);
	REFUSE(o->subformat == VMDK_SESPARSE && o->grain_size && o->grain_size != 4096,
	       "%s: seSparse grains are 4 KiB", path);
	REFUSE(o->subformat == VMDK_VMFS_SPARSE && o->grain_size > (1u << 20),
	       "%s: vmfsSparse grains of at most 1 MiB", path);
	REFUSE(o->preallocate && o->subformat != VMDK_VMFS &&
	       o->subformat != VMDK_MONOLITHIC_FLAT && o->subformat != VMDK_TWOGB_FLAT,
	       "%s: --preallocate needs a flat subformat (vmfs, monolithicFlat, "
	       "twoGbMaxExtentFlat)", path);
	REFUSE(o->grain_size && (!vd_is_pow2(o->grain_size) || o->grain_size < VD_SECTOR ||
				 o->grain_size > VMDK_MAX_GRAIN_SECTORS * VD_SECTOR),
	       "%s: grain size %llu is not a power of two between 512 B and 32 MiB", path,
	       (unsigned long long)o->grain_size);
	REFUSE(o->split_size && (o->split_size % VD_SECTOR || o->split_size > (2ull << 40)),
	       "%s: split size must be a multiple of 512 up to 2 TiB", path);
	REFUSE(o->hwversion < 0 || o->hwversion > 99, "%s: hwversion %d out of range", path,
	       o->hwversion);
#undef REFUSE
	return 0;
}

/* ---- descriptor ----------------------------------------------------------------------------- */

static char *long_content_id(char buf[33], uint32_t cid)
{
	snprintf(buf, 33, "%08x%08x%08x%08x", vd_random32(), vd_random32(), vd_random32(),
		 cid);
	return buf;
}

/* ESXi deltas carry only the content id (and seSparse its grain). */
static int desc_ddb_esx_delta(struct vmdk_desc *d, const struct vmdk_create_opts *o,
			      uint32_t cid)
{
	char lcid[33];
	int err = 0;

	if (o->subformat == VMDK_SESPARSE)
		err = vmdk_desc_kv_set(d, "ddb.encoding", "UTF-8", true);
	if (!err && o->subformat == VMDK_SESPARSE)
		err = vmdk_desc_kv_set(d, "ddb.grain", "8", true);
	if (!err)
		err = vmdk_desc_kv_set(d, "ddb.longContentID", long_content_id(lcid, cid), true);
	return err;
}

/* ddb.uuid as ESXi spells it: "xx xx .. xx-xx .. xx" */
static int desc_uuid(struct vmdk_desc *d)
{
	char buf[48], *p = buf;

	for (int i = 0; i < 16; i++) {
		snprintf(p, 4, "%02x%s", vd_random32() & 0xff, i == 15 ? "" : i == 7 ? "-" : " ");
		p += strlen(p);
	}
	return vmdk_desc_kv_set(d, "ddb.uuid", buf, true);
}

static int desc_ddb(struct vmdk_desc *d, const struct vmdk_create_opts *o,
		    uint64_t sectors, uint32_t cid)
{
	const char *adapter = o->adapter ? o->adapter : "ide";
	bool ide = !strcmp(adapter, "ide");
	uint64_t heads = ide ? 16 : 255, cyl = sectors / (heads * 63);
	char buf[3][48];
	int err;

	cyl = VD_MIN(cyl, ide ? 16383u : 65535u);
	snprintf(buf[0], sizeof buf[0], "%d", o->hwversion ? o->hwversion : 4);
	long_content_id(buf[1], cid);
	err = vmdk_desc_kv_set(d, "ddb.virtualHWVersion", buf[0], true);
	if (!err)
		err = vmdk_desc_kv_set(d, "ddb.longContentID", buf[1], true);
	snprintf(buf[2], sizeof buf[2], "%llu", (unsigned long long)cyl);
	if (!err)
		err = vmdk_desc_kv_set(d, "ddb.geometry.cylinders", buf[2], true);
	if (!err)
		err = vmdk_desc_kv_set(d, "ddb.geometry.heads", ide ? "16" : "255", true);
	if (!err)
		err = vmdk_desc_kv_set(d, "ddb.geometry.sectors", "63", true);
	if (!err)
		err = vmdk_desc_kv_set(d, "ddb.adapterType", adapter, true);
	if (!err && o->subformat == VMDK_VMFS && !o->preallocate)
		err = vmdk_desc_kv_set(d, "ddb.thinProvisioned", "1", true);
	if (!err && o->subformat == VMDK_VMFS)
		err = desc_uuid(d);
	return err;
}

static int desc_header(struct vmdk_desc *d, const struct vmdk_create_opts *o,
		       uint32_t cid)
{
	char cids[2][9];
	int err;

	snprintf(cids[0], sizeof cids[0], "%08x", cid);
	snprintf(cids[1], sizeof cids[1], "%08x",
		 o->parent_hint ? o->parent_cid : VMDK_CID_NONE);
	err = vmdk_desc_kv_set(d, "version", "1", false);
	if (!err)
		err = vmdk_desc_kv_set(d, "encoding", "UTF-8", true);
	if (!err)
		err = vmdk_desc_kv_set(d, "CID", cids[0], false);
	if (!err)
		err = vmdk_desc_kv_set(d, "parentCID", cids[1], false);
	if (!err && is_esx(o->subformat))
		err = vmdk_desc_kv_set(d, "isNativeSnapshot", "no", true);
	if (!err)
		err = vmdk_desc_kv_set(d, "createType", subformat_names[o->subformat], true);
	if (!err && o->parent_hint)
		err = vmdk_desc_kv_set(d, "parentFileNameHint", o->parent_hint, true);
	return err;
}

/* Base name of path without a trailing ".vmdk", for extent names. */
static char *stem_of(const char *path)
{
	const char *base = strrchr(path, '/');
	size_t n;

	base = base ? base + 1 : path;
	n = strlen(base);
	if (n > 5 && !strcmp(base + n - 5, ".vmdk"))
		n -= 5;
	return strndup(base, n);
}

/* Extent file names for the subformat, in order, NULL-terminated. */
static char **extent_names(const char *path, const struct vmdk_create_opts *o,
			   uint64_t split, unsigned *count)
{
	uint64_t sectors = VD_DIV_ROUND_UP(o->capacity, VD_SECTOR);
	unsigned n = is_split(o->subformat) ? (unsigned)VD_DIV_ROUND_UP(sectors * VD_SECTOR, split) : 1;
	char *stem = stem_of(path), **names = calloc(n + 1, sizeof *names);
	const char *base = strrchr(path, '/');

	for (unsigned i = 0; stem && names && i < n; i++) {
		int r = 0;
		if (o->subformat == VMDK_TWOGB_SPARSE)
			r = asprintf(&names[i], "%s-s%03u.vmdk", stem, i + 1);
		else if (o->subformat == VMDK_TWOGB_FLAT)
			r = asprintf(&names[i], "%s-f%03u.vmdk", stem, i + 1);
		else if (o->subformat == VMDK_MONOLITHIC_FLAT || o->subformat == VMDK_VMFS)
			r = asprintf(&names[i], "%s-flat.vmdk", stem);
		else if (o->subformat == VMDK_VMFS_SPARSE)
			r = asprintf(&names[i], "%s-delta.vmdk", stem);
		else if (o->subformat == VMDK_SESPARSE)
			r = asprintf(&names[i], "%s-sesparse.vmdk", stem);
		else
			names[i] = strdup(base ? base + 1 : path);
		if (r < 0)
			names[i] = NULL;
	}
	free(stem);
	*count = n;
	return names;
}

static void free_names(char **names)
{
	for (unsigned i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}

/* ---- sparse extent files --------------------------------------------------------------------- */

struct sparse_layout {
	struct kdmv_header h;
	uint32_t nr_gd, gd_sectors, gt_sectors;
};

static void sparse_layout(struct sparse_layout *l, uint64_t sectors, uint64_t grain_sectors,
			  bool embedded, bool zeroed)
{
	uint64_t nr_grains = VD_DIV_ROUND_UP(sectors, grain_sectors);
	uint64_t rgd = 1 + EMBEDDED_DESC_SECTORS, tables;

	l->nr_gd = (uint32_t)VD_DIV_ROUND_UP(nr_grains, GTES_PER_GT);
	l->gd_sectors = (uint32_t)VD_DIV_ROUND_UP(l->nr_gd * 4ull, VD_SECTOR);
	l->gt_sectors = GTES_PER_GT * 4 / VD_SECTOR;
	tables = l->gd_sectors + (uint64_t)l->nr_gd * l->gt_sectors;
	l->h = (struct kdmv_header){
		.version = zeroed ? 2 : 1,
		.flags = KDMV_FLAG_NL_CHECK | KDMV_FLAG_RGD | (zeroed ? KDMV_FLAG_ZEROED_GTE : 0),
		.capacity_sectors = sectors, .grain_size_sectors = grain_sectors,
		.desc_offset_sectors = embedded ? 1 : 0,
		.desc_size_sectors = embedded ? EMBEDDED_DESC_SECTORS : 0,
		.nr_gtes_per_gt = GTES_PER_GT, .rgd_offset_sectors = rgd,
		.gd_offset_sectors = rgd + tables,
		.overhead_sectors = VD_ROUND_UP(rgd + 2 * tables, grain_sectors),
	};
}

/* Directory pointing at contiguous tables starting at first_gt. */
static int write_dir(struct vd_file *f, const struct sparse_layout *l, uint64_t dir,
		     uint64_t first_gt)
{
	uint8_t *buf = calloc(l->gd_sectors, VD_SECTOR);
	int err;

	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < l->nr_gd; i++)
		put_le32(buf + 4 * i, (uint32_t)(first_gt + (uint64_t)i * l->gt_sectors));
	err = vd_pwrite(f, buf, (size_t)l->gd_sectors * VD_SECTOR, dir * VD_SECTOR);
	free(buf);
	return err;
}

static int write_sparse(struct vd_file *f, uint64_t sectors, const struct vmdk_create_opts *o,
			const char *desc_text)
{
	struct sparse_layout l;
	uint8_t hdr[VD_SECTOR];
	uint64_t gs = o->grain_size ? o->grain_size / VD_SECTOR : DEFAULT_GRAIN / VD_SECTOR;
	int err;

	sparse_layout(&l, sectors, gs, desc_text != NULL, o->zeroed_grain);
	if (desc_text && strlen(desc_text) >= EMBEDDED_DESC_SECTORS * VD_SECTOR) {
		vd_err("descriptor too large for the embedded area");
		return -ENOSPC;
	}
	err = f->ops->truncate(f, l.h.overhead_sectors * VD_SECTOR); /* tables read as 0 */
	if (!err)
		err = write_dir(f, &l, l.h.rgd_offset_sectors, l.h.rgd_offset_sectors + l.gd_sectors);
	if (!err)
		err = write_dir(f, &l, l.h.gd_offset_sectors, l.h.gd_offset_sectors + l.gd_sectors);
	if (!err && desc_text)
		err = vd_pwrite(f, desc_text, strlen(desc_text), VD_SECTOR);
	kdmv_header_encode(&l.h, hdr);
	if (!err)
		err = vd_pwrite(f, hdr, sizeof hdr, 0);
	return err;
}

/* ---- files -------------------------------------------------------------------------------------- */

struct created {
	char *paths[VMDK_MAX_EXTENTS + 1];
	unsigned n;
	const struct vd_io *io;
};

static int create_file(struct created *c, const char *path, struct vd_file **out)
{
	int err = c->io->open(c->io, path, VD_O_CREATE | VD_O_RDWR, out);

	if (err) {
		vd_err("%s: cannot create: %s", path, strerror(-err));
		return err;
	}
	c->paths[c->n++] = strdup(path);
	err = vmdk_lock_new_file(*out, path); /* a writer's lock until closed */
	if (err)
		vd_close(*out);
	return err;
}

static int finish_file(struct vd_file *f, int err)
{
	if (!err)
		err = vd_sync(f);
	if (err && err != -ENOSPC)
		vd_err("%s: writing: %s", f->path, strerror(-err));
	vd_close(f);
	return err;
}

/* A flat extent: a sparse file, or every byte allocated. */
static int write_flat(struct vd_file *f, uint64_t size, bool preallocate)
{
	static const uint8_t zeros[1 << 16];
	int err = f->ops->truncate(f, size);

	if (err || !preallocate)
		return err;
	if (f->fd >= 0 && posix_fallocate(f->fd, 0, (off_t)size) == 0)
		return 0;
	for (uint64_t at = 0; !err && at < size; at += sizeof zeros)
		err = vd_pwrite(f, zeros, (size_t)VD_MIN(size - at, (uint64_t)sizeof zeros), at);
	return err;
}

static int create_extent(struct created *c, const char *path, uint64_t sectors,
			 const struct vmdk_create_opts *o, const char *desc_text)
{
	struct vd_file *f;
	int err = create_file(c, path, &f);

	if (err)
		return err;
	if (is_sparse(o->subformat))
		err = write_sparse(f, sectors, o, desc_text);
	else if (o->subformat == VMDK_VMFS_SPARSE)
		err = vmdk_cowd_create_file(f, sectors,
					    o->grain_size ? o->grain_size / VD_SECTOR : 1);
	else if (o->subformat == VMDK_SESPARSE)
		err = vmdk_sesparse_create_file(f, sectors);
	else
		err = write_flat(f, sectors * VD_SECTOR, o->preallocate);
	return finish_file(f, err);
}

static int write_text_file(struct created *c, const char *path, const char *text)
{
	struct vd_file *f;
	int err = create_file(c, path, &f);

	if (!err)
		err = finish_file(f, vd_pwrite(f, text, strlen(text), 0));
	return err;
}

/* ---- create ------------------------------------------------------------------------------------- */

static int build_desc(const struct vmdk_create_opts *o, char **names, unsigned n,
		      uint64_t split, struct vmdk_desc **out)
{
	static const char *const types[VMDK_SUBFORMAT_COUNT] = {
		"SPARSE", "SPARSE", "FLAT", "FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE"};
	bool has_offset = o->subformat == VMDK_MONOLITHIC_FLAT || o->subformat == VMDK_TWOGB_FLAT;
	uint64_t sectors = VD_DIV_ROUND_UP(o->capacity, VD_SECTOR), left = sectors;
	uint32_t cid = vd_random32();
	struct vmdk_desc *d = calloc(1, sizeof *d);
	int err = d ? 0 : -ENOMEM;

	while (cid == VMDK_CID_NONE || cid == 0xfffffffeu)
		cid = vd_random32();
	if (!err)
		err = desc_header(d, o, cid);
	for (unsigned i = 0; !err && i < n; i++) {
		uint64_t ext = is_split(o->subformat) ? VD_MIN(left, split / VD_SECTOR) : left;
		err = vmdk_desc_add_extent(d, VMDK_ACCESS_RW, ext, types[o->subformat], names[i],
					   0, has_offset);
		left -= ext;
	}
	if (!err)
		err = is_esx_delta(o->subformat) ? desc_ddb_esx_delta(d, o, cid)
						 : desc_ddb(d, o, sectors, cid);
	if (err)
		vmdk_desc_free(d);
	else
		*out = d;
	return err;
}

static int create_files(struct created *c, const char *path, const struct vmdk_create_opts *o,
			const struct vmdk_desc *d, const char *text)
{
	char *dir = vd_dirname(path);
	int err = dir ? 0 : -ENOMEM;

	if (o->subformat == VMDK_STREAM_OPTIMIZED) {
		err = vmdk_stream_create(path, o, c->io, text); /* refuses an existing file */
	} else if (o->subformat == VMDK_MONOLITHIC_SPARSE) {
		err = create_extent(c, path, d->ext[0].size_sectors, o, text);
	} else {
		for (unsigned i = 0; !err && i < d->nr_ext; i++) {
			char *p = vd_path_join(dir, d->ext[i].name);
			err = p ? create_extent(c, p, d->ext[i].size_sectors, o, NULL) : -ENOMEM;
			free(p);
		}
		if (!err)
			err = write_text_file(c, path, text);
	}
	if (!err)
		err = c->io->sync_dir(c->io, path);
	free(dir);
	return err;
}

/* The options checked as vmdk_create checks them, and the extent names. */
static int plan_names(const char *path, const struct vmdk_create_opts *o, char ***names,
		      unsigned *n)
{
	uint64_t split = o->split_size ? o->split_size : DEFAULT_SPLIT;
	int err = opts_check(path, o);

	if (!err && is_split(o->subformat) &&
	    VD_DIV_ROUND_UP(o->capacity, split) > VMDK_MAX_EXTENTS) {
		vd_err("%s: %llu extents would be needed", path,
		       (unsigned long long)VD_DIV_ROUND_UP(o->capacity, split));
		err = -EINVAL;
	}
	if (!err && !(*names = extent_names(path, o, split, n)))
		err = -ENOMEM;
	return err;
}

int vmdk_create_names(const char *path, const struct vmdk_create_opts *o, char ***files,
		      unsigned *nr)
{
	char **names = NULL, *dir = vd_dirname(path);
	unsigned n = 0;
	int err = dir ? plan_names(path, o, &names, &n) : -ENOMEM;

	*files = NULL;
	*nr = 0;
	if (!err)
		err = vd_strv_add(files, nr, path);
	for (unsigned i = 0; !err && i < n; i++) {
		char *p = vd_path_join(dir, names[i]);
		if (p && strcmp(p, path))
			err = vd_strv_add(files, nr, p);
		err = err ? err : p ? 0 : -ENOMEM;
		free(p);
	}
	free_names(names);
	free(dir);
	if (err) {
		vd_strv_free(*files, *nr);
		*files = NULL;
		*nr = 0;
	}
	return err;
}

int vmdk_create(const char *path, const struct vmdk_create_opts *o, const struct vd_io *io)
{
	struct created c = { .io = io ? io : vd_io_posix() };
	uint64_t split = o->split_size ? o->split_size : DEFAULT_SPLIT;
	struct vmdk_desc *d = NULL;
	char **names = NULL, *text = NULL;
	unsigned n = 0;
	int err = plan_names(path, o, &names, &n);

	if (!err)
		err = build_desc(o, names, n, split, &d);
	if (!err && !(text = vmdk_desc_emit(d)))
		err = -ENOMEM;
	if (!err)
		err = create_files(&c, path, o, d, text);
	for (unsigned i = 0; i < c.n; i++) {
		if (err)
			c.io->unlink(c.io, c.paths[i]);
		free(c.paths[i]);
	}
	free(text);
	vmdk_desc_free(d);
	free_names(names);
	return err;
}
