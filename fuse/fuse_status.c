/* fuse_status — the text of the mount's control file (layer 4).
 *
 * Owns the format that `vdelta mount --status` parses: one record a line,
 * the record's kind first, then tab-separated key=value fields (values
 * never hold a tab or a newline; those are written as spaces), the keys
 * those of FUSE_STATUS_FIELDS (fuse_front.h):
 *
 *   mount	pid=PID	mountpoint=PATH	cache=none|kernel	disks=N	pool_layers=N
 *		max_read=BYTES (the largest read request the kernel sends)
 *   disk	name=NAME	mode=MODE	path=TOP	top=WRITTEN	size=BYTES	layers=N
 *		reads=N	read_bytes=N	writes=N	write_bytes=N	flushes=N
 *		cow_grains=N	zero_bytes=N	walked_bytes=N	direct_bytes=N
 *		layer0_bytes=N ... (one per layer, 0 = the top)
 * (a disk record is one line.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuse_front.h"

#define FUSE_STATUS_KEY(n, k, num) [FUSE_STATUS_##n] = k,
#define FUSE_STATUS_NUM(n, k, num) [FUSE_STATUS_##n] = num,
static const char *const keys[FUSE_STATUS_NR] = { FUSE_STATUS_FIELDS(FUSE_STATUS_KEY) };
static const bool numeric[FUSE_STATUS_NR] = { FUSE_STATUS_FIELDS(FUSE_STATUS_NUM) };

const char *fuse_status_key(enum fuse_status_field f)
{
	return (unsigned)f < FUSE_STATUS_NR ? keys[f] : "?";
}

bool fuse_status_numeric(const char *key)
{
	unsigned i;

	for (unsigned f = 0; f < FUSE_STATUS_NR; f++)
		if (!strcmp(key, keys[f]))
			return numeric[f];
	return sscanf(key, "layer%u_bytes", &i) == 1;
}

static void put_str(FILE *f, enum fuse_status_field k, const char *v)
{
	fprintf(f, "\t%s=", keys[k]);
	for (; v && *v; v++)
		fputc(*v == '\t' || *v == '\n' ? ' ' : *v, f);
}

static void put_num(FILE *f, const char *key, uint64_t v)
{
	fprintf(f, "\t%s=%llu", key, (unsigned long long)v);
}

static void put_u64(FILE *f, enum fuse_status_field k, uint64_t v)
{
	put_num(f, keys[k], v);
}

static void put_disk(FILE *f, struct chain_served *d)
{
	struct chain_serve_stats st;
	char key[32];

	chain_served_stats(d, &st);
	fputs("disk", f);
	put_str(f, FUSE_STATUS_NAME, chain_served_name(d));
	put_str(f, FUSE_STATUS_MODE, chain_serve_mode_name(chain_served_mode(d)));
	put_str(f, FUSE_STATUS_PATH, chain_served_path(d));
	put_str(f, FUSE_STATUS_TOP, chain_served_top(d));
	put_u64(f, FUSE_STATUS_SIZE, chain_served_size(d));
	put_u64(f, FUSE_STATUS_LAYERS, st.nr_layers);
	put_u64(f, FUSE_STATUS_READS, st.reads);
	put_u64(f, FUSE_STATUS_READ_BYTES, st.read_bytes);
	put_u64(f, FUSE_STATUS_WRITES, st.writes);
	put_u64(f, FUSE_STATUS_WRITE_BYTES, st.write_bytes);
	put_u64(f, FUSE_STATUS_FLUSHES, st.flushes);
	put_u64(f, FUSE_STATUS_COW_GRAINS, st.cow_grains);
	put_u64(f, FUSE_STATUS_ZERO_BYTES, st.zero_bytes);
	put_u64(f, FUSE_STATUS_WALKED_BYTES, st.walked_bytes);
	put_u64(f, FUSE_STATUS_DIRECT_BYTES, st.direct_bytes);
	for (unsigned i = 0; i < st.nr_layers; i++) {
		snprintf(key, sizeof key, FUSE_STATUS_LAYER_KEY, i);
		put_num(f, key, st.layer_bytes[i]);
	}
	fputc('\n', f);
}

int fuse_status_render(struct chain_server *s, const char *mountpoint,
		       enum fuse_front_cache cache, size_t max_read, char **text,
		       size_t *len)
{
	FILE *f = open_memstream(text, len);
	unsigned n = chain_server_nr_disks(s);

	if (!f)
		return -ENOMEM;
	fputs("mount", f);
	put_u64(f, FUSE_STATUS_PID, (uint64_t)getpid());
	put_str(f, FUSE_STATUS_MOUNTPOINT, mountpoint);
	put_str(f, FUSE_STATUS_CACHE, cache == FUSE_FRONT_CACHE_NONE ? "none" : "kernel");
	put_u64(f, FUSE_STATUS_DISKS, n);
	put_u64(f, FUSE_STATUS_POOL_LAYERS, chain_pool_nr_layers(chain_server_pool(s)));
	put_u64(f, FUSE_STATUS_MAX_READ, max_read);
	fputc('\n', f);
	for (unsigned i = 0; i < n; i++)
		put_disk(f, chain_server_disk(s, i));
	return fclose(f) ? -ENOMEM : 0;
}
