/* fuse_status — the text of the mount's control file (layer 3).
 *
 * Owns the format that `vdelta mount --status` parses: one record a line,
 * the record's kind first, then tab-separated key=value fields (values
 * never hold a tab or a newline; those are written as spaces).
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
#include <unistd.h>

#include "fuse_front.h"

static void put_str(FILE *f, const char *key, const char *v)
{
	fprintf(f, "\t%s=", key);
	for (; v && *v; v++)
		fputc(*v == '\t' || *v == '\n' ? ' ' : *v, f);
}

static void put_u64(FILE *f, const char *key, uint64_t v)
{
	fprintf(f, "\t%s=%llu", key, (unsigned long long)v);
}

static void put_disk(FILE *f, struct chain_served *d)
{
	struct chain_serve_stats st;
	char key[32];

	chain_served_stats(d, &st);
	fputs("disk", f);
	put_str(f, "name", chain_served_name(d));
	put_str(f, "mode", chain_serve_mode_name(chain_served_mode(d)));
	put_str(f, "path", chain_served_path(d));
	put_str(f, "top", chain_served_top(d));
	put_u64(f, "size", chain_served_size(d));
	put_u64(f, "layers", st.nr_layers);
	put_u64(f, "reads", st.reads);
	put_u64(f, "read_bytes", st.read_bytes);
	put_u64(f, "writes", st.writes);
	put_u64(f, "write_bytes", st.write_bytes);
	put_u64(f, "flushes", st.flushes);
	put_u64(f, "cow_grains", st.cow_grains);
	put_u64(f, "zero_bytes", st.zero_bytes);
	put_u64(f, "walked_bytes", st.walked_bytes);
	put_u64(f, "direct_bytes", st.direct_bytes);
	for (unsigned i = 0; i < st.nr_layers; i++) {
		snprintf(key, sizeof key, "layer%u_bytes", i);
		put_u64(f, key, st.layer_bytes[i]);
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
	put_u64(f, "pid", (uint64_t)getpid());
	put_str(f, "mountpoint", mountpoint);
	put_str(f, "cache", cache == FUSE_FRONT_CACHE_NONE ? "none" : "kernel");
	put_u64(f, "disks", n);
	put_u64(f, "pool_layers", chain_pool_nr_layers(chain_server_pool(s)));
	put_u64(f, "max_read", max_read);
	fputc('\n', f);
	for (unsigned i = 0; i < n; i++)
		put_disk(f, chain_server_disk(s, i));
	return fclose(f) ? -ENOMEM : 0;
}
