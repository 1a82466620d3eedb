/* group — what the operations do to one layer's files and descriptor
 * (layer 3).
 *
 * Owns: the list of a layer's files (descriptor first, then its extents,
 * as the format layer names them), their removal in that order, the
 * re-pointing of a layer at a new parent (parentCID and hint, one durable
 * descriptor write under a writer's lock), and the bytes of data a layer
 * holds (what merging it copies).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "group_int.h"

/* The most a name grows by when vdelta derives files from it: an extent
 * (-sesparse.vmdk for .vmdk), a record and its temporary, a staging
 * folder (.NAME.vdelta-promote). */
#define NAME_ROOM 24u

int group_layer_check_name(const char *path)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	const char *why = NULL;

	if (!*base)
		why = "it has no file name";
	else if (strlen(base) + NAME_ROOM > NAME_MAX || strlen(path) + NAME_ROOM >= PATH_MAX)
		why = "it is too long for the files vdelta makes from it (records, extents)";
	for (const char *c = path; !why && *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20 || *c == 0x7f)
			why = "a descriptor cannot carry it back (a quote, a backslash or a "
			      "control character: parent hints and extent names are quoted "
			      "strings where a backslash separates Windows folders)";
	if (!why)
		return 0;
	vd_err("%s: refused as a name for a new layer: %s; nothing written", path, why);
	return -EINVAL;
}

static int layer_files(const char *path, unsigned flags, char ***files, unsigned *nr)
{
	struct vmdk_disk *d = NULL;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK | flags, NULL, &d);

	*files = NULL;
	*nr = 0;
	for (unsigned i = 0; !err && i < vmdk_nr_files(d); i++)
		err = vd_strv_add(files, nr, vmdk_file_path(d, i));
	if (d)
		vmdk_close(d);
	return err;
}

int group_layer_files(const char *path, char ***files, unsigned *nr)
{
	/* an extent outside the layer's folder is no file of the group's to
	 * remove, move or write (a writer's path rules, vmdk_disk.c) */
	return layer_files(path, VMDK_OPEN_STRICT_PATHS, files, nr);
}

int group_layer_read_files(const char *path, char ***files, unsigned *nr)
{
	return layer_files(path, 0, files, nr);
}

int group_layer_add_files(char ***v, unsigned *n, const char *layer)
{
	char **files, *side;
	unsigned nr;
	int err = group_layer_files(layer, &files, &nr);

	for (unsigned i = 0; !err && i < nr; i++)
		err = vd_strv_add(v, n, files[i]);
	vd_strv_free(files, nr);
	if (!err && asprintf(&side, "%s%s", layer, GROUP_CHILDREN_SUFFIX) >= 0) {
		err = vd_strv_add(v, n, side);
		free(side);
	}
	return err;
}

int group_layer_unlink(const char *path, const struct vd_io *io)
{
	int err = io->unlink(io, path);

	if (err == -ENOENT)
		return 0;
	if (err)
		vd_err("%s: cannot remove: %s", path, strerror(-err));
	return err;
}

int group_layer_remove_files(char *const *files, unsigned nr, const struct vd_io *io)
{
	int err = 0;

	for (unsigned i = 0; !err && i < nr; i++)
		err = group_layer_unlink(files[i], io);
	if (!err && nr)
		err = io->sync_dir(io, files[0]);
	return err;
}

int group_layer_repoint(const char *child, const char *parent, uint32_t cid,
			const struct vd_io *io)
{
	struct vmdk_disk *d = NULL;
	char *hint;
	int err = chain_hint_make(child, parent, &hint);

	if (err)
		return err;
	err = vmdk_open(child, VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK, io, &d);
	if (!err)
		err = vmdk_set_parent(d, cid, hint);
	if (!err)
		err = vmdk_desc_write(d);
	if (d && vmdk_close(d) && !err)
		err = -EIO;
	free(hint);
	return err;
}

int group_layer_held_bytes(const char *layer, uint64_t *out)
{
	struct vmdk_disk *d = NULL;
	uint64_t cap, n;
	enum vmdk_bs kind;
	int err = vmdk_open(layer, VMDK_OPEN_RDONLY, NULL, &d);

	*out = 0;
	cap = err ? 0 : vmdk_capacity(d);
	for (uint64_t off = 0; !err && off < cap; off += n) {
		err = vmdk_block_status(d, off, cap - off, &kind, &n);
		if (!err && kind == VMDK_BS_DATA)
			*out += n;
	}
	vmdk_close(d);
	return err;
}
