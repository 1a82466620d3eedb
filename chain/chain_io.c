/* chain — reads, copy-on-write writes and block status through the merged
 * map (layer 2).
 *
 * A read looks up each unit's owner once and reads a run of units owned by
 * one layer with one call into that layer; "mixed" units (a parent with
 * finer grains than the top) and reads made before the map covers them
 * walk the layers' block status instead.  Writes go into the top through
 * the format layer, which calls chain_io_read_from(c, 1, ...) (set up as
 * the top's backing in chain_open) for the rest of a grain the top lacks;
 * the map entries of the written units then say "top".
 */
#include <errno.h>

#include "chain_int.h"

static int check_range(struct chain *c, size_t len, uint64_t off)
{
	if (off > c->capacity || len > c->capacity - off) {
		vd_err("%s: access [%llu, +%zu) is past the capacity %llu", c->path,
		       (unsigned long long)off, len, (unsigned long long)c->capacity);
		return -EINVAL;
	}
	return 0;
}

/* Read [off, off+len) from layer `layer` down, by block status. */
static int walk(struct chain *c, unsigned layer, uint8_t *buf, size_t len, uint64_t off)
{
	if (layer >= c->nr_layers) {
		memset(buf, 0, len);
		return 0;
	}
	while (len) {
		struct vmdk_disk *d = c->layers[layer].disk;
		enum vmdk_bs kind;
		uint64_t run;
		int err;

		err = vmdk_block_status(d, off, len, &kind, &run);
		if (err)
			return err;
		run = VD_MIN(run, len);
		if (kind == VMDK_BS_DATA)
			err = vmdk_pread(d, buf, run, off);
		else if (kind == VMDK_BS_ZERO || layer + 1 >= c->nr_layers)
			memset(buf, 0, run);
		else
			err = walk(c, layer + 1, buf, run, off);
		if (err)
			return err;
		buf += run;
		len -= run;
		off += run;
	}
	return 0;
}

/* Bytes from off (up to len) whose units share the entry of off's unit.
 * -EAGAIN when off's chunk is not built and build is false. */
int chain_io_run(struct chain *c, uint64_t off, uint64_t len, bool build,
		 uint8_t *e, uint64_t *run)
{
	uint64_t u = off >> c->unit_shift, end = (u + 1) << c->unit_shift;
	uint8_t next;
	int err = chain_map_get(c, u, build, e);

	if (err)
		return err;
	while (end < off + len) {
		err = chain_map_get(c, end >> c->unit_shift, build, &next);
		if (err == -EAGAIN || (!err && next != *e))
			break;
		if (err)
			return err;
		end += c->unit;
	}
	*run = VD_MIN(end, off + len) - off;
	return 0;
}

int chain_io_read_from(struct chain *c, unsigned first, void *buf, size_t len,
		       uint64_t off, bool build)
{
	uint8_t *p = buf, e;
	uint64_t run;
	int err;

	while (len) {
		err = chain_io_run(c, off, len, build, &e, &run);
		if (err == -EAGAIN) /* map not built here (backing read) */
			return walk(c, first, p, len, off);
		if (err)
			return err;
		if (e == CHAIN_E_NONE)
			memset(p, 0, run);
		else if (e == CHAIN_E_MIXED || e < first)
			err = walk(c, first, p, run, off);
		else
			err = vmdk_pread(c->layers[e].disk, p, run, off);
		if (err)
			return err;
		p += run;
		len -= run;
		off += run;
	}
	return 0;
}

int chain_pread(struct chain *c, void *buf, size_t len, uint64_t off)
{
	int err = check_range(c, len, off);

	return err ? err : chain_io_read_from(c, 0, buf, len, off, true);
}

/* Checks before a write, and invariant 3 of chain_map.c: build the chunks
 * the write touches first. */
static int write_prepare(struct chain *c, size_t len, uint64_t off)
{
	uint8_t *p;
	int err;

	if (!chain_writable(c)) {
		vd_err("%s: chain not opened for writing", c->path);
		return -EBADF;
	}
	err = check_range(c, len, off);
	if (err || !len)
		return err;
	for (uint64_t ci = (off >> c->unit_shift) / CHAIN_MAP_CHUNK;
	     !err && ci <= ((off + len - 1) >> c->unit_shift) / CHAIN_MAP_CHUNK; ci++)
		err = chain_map_chunk(c, ci, true, &p);
	return err;
}

/* After a write into the top: its units are the top's, or, when the write
 * failed part-way, whatever the layers now say. */
static int write_done(struct chain *c, size_t len, uint64_t off, int err)
{
	uint64_t u0 = off >> c->unit_shift;

	if (!len)
		return err;
	if (err) {
		chain_map_refresh(c, off, len);
		return err;
	}
	chain_map_set(c, u0, VD_DIV_ROUND_UP(off + len, c->unit) - u0, 0);
	return 0;
}

int chain_pwrite(struct chain *c, const void *buf, size_t len, uint64_t off)
{
	int err = write_prepare(c, len, off);

	if (err || !len)
		return err;
	return write_done(c, len, off, vmdk_pwrite(c->layers[0].disk, buf, len, off));
}

int chain_pwrite_zeroes(struct chain *c, size_t len, uint64_t off)
{
	int err = write_prepare(c, len, off);

	if (err || !len)
		return err;
	return write_done(c, len, off, vmdk_pwrite_zeroes(c->layers[0].disk, len, off));
}

int chain_flush(struct chain *c)
{
	return chain_writable(c) ? vmdk_flush(c->layers[0].disk) : 0;
}

/* ---- status --------------------------------------------------------------- */

/* Owner and kind of the run at off, walking from layer `layer` down. */
static int status_walk(struct chain *c, unsigned layer, uint64_t off, uint64_t len,
		       struct chain_run *r)
{
	enum vmdk_bs kind = VMDK_BS_UNALLOC;
	uint64_t run = len;
	int err = 0;

	for (; layer < c->nr_layers; layer++) {
		err = vmdk_block_status(c->layers[layer].disk, off, len, &kind, &run);
		if (err)
			return err;
		len = VD_MIN(run, len);
		if (kind != VMDK_BS_UNALLOC)
			break;
	}
	r->off = off;
	r->len = len;
	r->kind = kind == VMDK_BS_DATA ? CHAIN_DATA
		  : kind == VMDK_BS_ZERO ? CHAIN_ZERO : CHAIN_UNALLOC;
	r->layer = r->kind == CHAIN_UNALLOC ? -1 : (int)layer;
	return 0;
}

static int status_one(struct chain *c, uint64_t off, uint64_t len, struct chain_run *r)
{
	uint64_t run;
	uint8_t e;
	int err = chain_io_run(c, off, len, true, &e, &run);

	if (err)
		return err;
	if (e == CHAIN_E_NONE) {
		*r = (struct chain_run){ off, run, CHAIN_UNALLOC, -1 };
		return 0;
	}
	return status_walk(c, e == CHAIN_E_MIXED ? 0 : e, off, run, r);
}

int chain_status(struct chain *c, uint64_t off, uint64_t max_len, struct chain_run *out)
{
	struct chain_run next;
	int err;

	if (off >= c->capacity)
		return -EINVAL;
	max_len = VD_MIN(max_len, c->capacity - off);
	err = status_one(c, off, max_len, out);
	while (!err && out->len < max_len) {
		err = status_one(c, off + out->len, max_len - out->len, &next);
		if (err || next.kind != out->kind || next.layer != out->layer)
			break;
		out->len += next.len;
	}
	return err;
}

int chain_block_status(struct chain *c, uint64_t off, uint64_t max_len,
		       enum vmdk_bs *kind, uint64_t *run_len)
{
	static const enum vmdk_bs map[] = {
		[CHAIN_DATA] = VMDK_BS_DATA,
		[CHAIN_ZERO] = VMDK_BS_ZERO,
		[CHAIN_UNALLOC] = VMDK_BS_UNALLOC,
	};
	struct chain_run r, next;
	int err = chain_status(c, off, max_len, &r);

	while (!err && r.off + r.len < off + max_len) {
		err = chain_status(c, r.off + r.len, off + max_len - r.off - r.len, &next);
		if (err || map[next.kind] != map[r.kind])
			break;
		r.len += next.len;
	}
	if (!err) {
		*kind = map[r.kind];
		*run_len = r.len;
	}
	return err;
}
