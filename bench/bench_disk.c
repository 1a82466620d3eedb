/* bench — a disk under test (bench layer, over chain.h).
 *
 * Owns: opening the chain read-only through the counting io (so every
 * physical read is counted per file, metadata apart from data), mapping
 * the counted files to layers, the open cost, the cost and memory of the
 * merged map (built whole by walking the chain's status before any
 * workload, so workloads see a warm map), the consolidate prediction,
 * warming the page cache, and the throw-away delta that write workloads
 * use.
 *
 * The throw-away delta is the serving core's (CHAIN_SERVE_NONPERSISTENT,
 * what `vdelta mount --nonpersistent` writes into): a new monolithicSparse
 * delta over the top, made in the scratch folder and unlinked as soon as
 * it is open, so nothing is left behind even after a kill.  The top is
 * never opened for writing, frozen or otherwise touched: every parent is
 * opened read-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_int.h"

static uint64_t file_storage(const char *path)
{
	struct stat st;

	return stat(path, &st) ? 0 : (uint64_t)st.st_blocks * 512;
}

/* Layer paths and file sizes; every file of a layer counts toward it. */
static void disk_layers(struct bench_disk_state *s)
{
	struct bench_disk *d = &s->fig;

	d->file_bytes = 0;
	for (unsigned i = 0; i < d->depth; i++) {
		struct vmdk_disk *v = chain_layer(s->chain, i);
		d->layer_paths[i] = vd_strdup(vmdk_path(v));
		d->layer_file_bytes[i] = 0;
		for (unsigned k = 0; k < vmdk_nr_files(v); k++)
			d->layer_file_bytes[i] += file_storage(vmdk_file_path(v, k));
		d->file_bytes += d->layer_file_bytes[i];
	}
}

/* Bytes the chain holds as DATA: what a consolidated disk would store. */
static int disk_data_bytes(struct bench_disk_state *s)
{
	struct bench_disk *d = &s->fig;
	struct chain_run r;
	int err;

	d->data_bytes = 0;
	for (uint64_t off = 0; off < d->capacity; off += r.len) {
		if ((err = chain_status(s->chain, off, d->capacity - off, &r)))
			return err;
		if (r.kind == CHAIN_DATA)
			d->data_bytes += r.len;
	}
	return 0;
}

int bench_disk_open(struct bench_disk_state *s, const char *path)
{
	struct bench_disk *d = &s->fig;
	struct vd_count_stats st;
	uint64_t units;
	int err;

	d->path = vd_strdup(path);
	if (!d->path || (err = vd_countio_create(NULL, &s->count)))
		return -ENOMEM;
	err = chain_open(path, CHAIN_OPEN_RDONLY, vd_countio_io(s->count), &s->chain);
	if (err)
		return err;
	vd_countio_total(s->count, &st);
	d->open_reads = st.meta_reads + st.data_reads;
	d->open_bytes = st.meta_bytes + st.data_bytes;
	d->depth = chain_depth(s->chain);
	d->capacity = chain_capacity(s->chain);
	d->unit = chain_unit(s->chain);
	units = VD_DIV_ROUND_UP(d->capacity, d->unit);
	d->map_bytes = units + VD_DIV_ROUND_UP(units, CHAIN_MAP_CHUNK) * sizeof(void *);
	disk_layers(s);
	vd_countio_reset(s->count);
	err = disk_data_bytes(s);
	vd_countio_total(s->count, &st);
	d->scan_reads = st.meta_reads + st.data_reads;
	d->scan_bytes = st.meta_bytes + st.data_bytes;
	return err;
}

void bench_disk_close(struct bench_disk_state *s)
{
	chain_close(s->chain);
	vd_countio_destroy(s->count);
	for (unsigned i = 0; i < s->fig.depth; i++)
		free(s->fig.layer_paths[i]);
	free(s->fig.path);
	memset(s, 0, sizeof *s);
}

static void warm_file(const char *path)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	while (read(fd, buf, sizeof buf) > 0)
		;
	close(fd);
}

void bench_disk_warm(const struct bench_disk_state *s)
{
	for (unsigned i = 0; i < s->fig.depth; i++) {
		struct vmdk_disk *v = chain_layer(s->chain, i);
		for (unsigned k = 0; k < vmdk_nr_files(v); k++)
			warm_file(vmdk_file_path(v, k));
	}
}

void bench_disk_count_begin(struct bench_disk_state *s)
{
	vd_countio_reset(s->count);
}

/* Add one file's counters to layer l of r. */
static void count_fold(struct bench_result *r, unsigned l, const struct vd_count_stats *s)
{
	r->layers[l].meta_reads += s->meta_reads;
	r->layers[l].meta_bytes += s->meta_bytes;
	r->layers[l].data_reads += s->data_reads;
	r->layers[l].data_bytes += s->data_bytes;
	r->meta_reads += s->meta_reads;
	r->meta_bytes += s->meta_bytes;
	r->data_reads += s->data_reads;
	r->data_bytes += s->data_bytes;
}

void bench_disk_count_end(struct bench_disk_state *s, struct bench_result *r)
{
	struct vd_count_stats st;

	r->counted = r->per_layer = true;
	for (unsigned i = 0; i < s->fig.depth; i++) {
		struct vmdk_disk *v = chain_layer(s->chain, i);
		for (unsigned k = 0; k < vmdk_nr_files(v); k++)
			if (!vd_countio_find(s->count, vmdk_file_path(v, k), &st))
				count_fold(r, i, &st);
	}
}

/* ---- the throw-away delta ------------------------------------------------------ */

int bench_disk_scratch_open(const struct bench_disk_state *d, const char *tmpdir,
			    const struct vd_io *io, struct chain_server **server,
			    struct chain **chain)
{
	struct chain_server_opts so = { .io = io, .tmpdir = tmpdir };
	struct chain_served *sd;
	int err = chain_server_create_opts(&so, server);

	if (err)
		return err;
	err = chain_server_add(*server, d->fig.path, "scratch", CHAIN_SERVE_NONPERSISTENT,
			       &sd);
	*chain = err ? NULL : chain_served_chain(sd);
	return err;
}
