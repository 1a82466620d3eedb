/* tests/fuzz — fuzz target for opening untrusted chains through the public
 * chain-layer API, chain/chain.h (test layer).  The input is a small bundle
 * of files separated by the 8-byte line FUZZ_SEP: the first part is written
 * as top.vmdk, the next ones as p1.vmdk, p2.vmdk, p3.vmdk beside it (a
 * descriptor's parentFileNameHint may name any of them, itself, or the
 * extent files a.bin / b.bin).  top.vmdk is chain_open()ed read-only; when
 * that succeeds, ranges are read, the merged map is walked and the folder
 * is scanned with group_tree_scan.  Bad links (cycles, CID or capacity
 * mismatches, missing parents, hostile layers) must give an error, never a
 * crash, a hang or an unbounded allocation, and nothing may be written.
 *
 * libFuzzer recipe: tests/fuzz/run_long.sh builds and runs it.
 * Without -fsanitize=fuzzer, tests/fuzz/fuzz_main.c supplies main() and the
 * meson test "fuzz_chain" runs the generated seeds plus mutations. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain.h"
#include "group.h"
#include "fuzz.h"

#define FUZZ_SEP "\n#vdfz#\n"
#define FUZZ_SEP_LEN 8u
#define NR_PARTS 4u

static const char *const part_names[NR_PARTS] = {
	"top.vmdk", "p1.vmdk", "p2.vmdk", "p3.vmdk",
};
static const char *work_dir;

static void write_file(const char *dir, const char *name, const void *buf,
		       size_t len)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	fuzz_write_file(path, buf, len);
}

static void make_bin(const char *name, int byte)
{
	static uint8_t buf[1 << 16];

	memset(buf, byte, sizeof buf);
	write_file(work_dir, name, buf, sizeof buf);
}

static void init_once(void)
{
	char tmpl[] = "/tmp/vdfuzz-chain.XXXXXX";

	if (work_dir)
		return;
	work_dir = fuzz_work_dir(tmpl);
	make_bin("a.bin", 'A');
	make_bin("b.bin", 'B');
}

/* Split the input at FUZZ_SEP into the part files; absent parts are
 * removed so a previous input's files do not leak into this one. */
static void write_parts(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *end = data + size;

	for (unsigned i = 0; i < NR_PARTS; i++) {
		char path[4096];
		const uint8_t *sep = p ? memmem(p, (size_t)(end - p), FUZZ_SEP,
						FUZZ_SEP_LEN) : NULL;
		size_t len = p ? (size_t)((sep ? sep : end) - p) : 0;

		snprintf(path, sizeof path, "%s/%s", work_dir, part_names[i]);
		if (p)
			write_file(work_dir, part_names[i], p, len);
		else
			unlink(path);
		p = sep ? sep + FUZZ_SEP_LEN : NULL;
	}
}

static void walk_map(struct chain *c)
{
	uint64_t cap = chain_capacity(c), off = 0;

	for (int i = 0; i < 256 && off < cap; i++) {
		struct chain_run r;
		if (chain_status(c, off, cap - off, &r))
			return;
		if (r.off != off || !r.len || r.len > cap - off)
			fuzz_fail("chain_status at %llu: run %llu+%llu of %llu",
				  (unsigned long long)off, (unsigned long long)r.off,
				  (unsigned long long)r.len, (unsigned long long)cap);
		if (r.kind != CHAIN_UNALLOC && (r.layer < 0 ||
						(unsigned)r.layer >= chain_depth(c)))
			fuzz_fail("chain_status: layer %d of %u", r.layer, chain_depth(c));
		off += r.len;
	}
}

static void exercise(struct chain *c)
{
	static uint8_t buf[1 << 17];
	uint64_t cap = chain_capacity(c);
	uint64_t offs[3] = { 0, cap / 2, cap > sizeof buf ? cap - sizeof buf : 0 };

	for (int i = 0; i < 3; i++) {
		size_t n = cap - offs[i] < sizeof buf ? (size_t)(cap - offs[i]) : sizeof buf;
		(void)chain_pread(c, buf, n, offs[i]);
	}
	if (chain_pread(c, buf, 1, cap) == 0)
		fuzz_fail("read at capacity %llu succeeded", (unsigned long long)cap);
	walk_map(c);
}

static void scan_dir(void)
{
	char *dirs[1] = { (char *)work_dir };
	struct group_tree *t = NULL;

	if (group_tree_scan(dirs, 1, GROUP_SCAN_SIZES, &t) == 0) {
		for (unsigned i = 0; i < t->nr_nodes; i++)
			if (t->nodes[i].parent >= (int)t->nr_nodes)
				fuzz_fail("tree node %u: parent %d of %u", i,
					  t->nodes[i].parent, t->nr_nodes);
		group_tree_free(t);
	}
}

/* Size and mtime of every part, to prove a read-only open wrote nothing. */
static void stat_parts(struct stat st[NR_PARTS])
{
	for (unsigned i = 0; i < NR_PARTS; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", work_dir, part_names[i]);
		if (stat(path, &st[i]))
			memset(&st[i], 0, sizeof st[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stat before[NR_PARTS], after[NR_PARTS];
	struct chain *c = NULL;
	char top[4200];

	init_once();
	write_parts(data, size);
	stat_parts(before);
	snprintf(top, sizeof top, "%s/%s", work_dir, part_names[0]);
	if (chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c) == 0) {
		exercise(c);
		chain_close(c);
	}
	scan_dir();
	stat_parts(after);
	for (unsigned i = 0; i < NR_PARTS; i++)
		if (before[i].st_size != after[i].st_size ||
		    before[i].st_mtim.tv_sec != after[i].st_mtim.tv_sec ||
		    before[i].st_mtim.tv_nsec != after[i].st_mtim.tv_nsec)
			fuzz_fail("a read-only open modified %s", part_names[i]);
	return 0;
}

/* ---- generated seeds: chains made by the library, bundled ------------------------ */

static int read_all(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	if (!f)
		return -1;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
	    !(*out = malloc((size_t)n + 1)) || fread(*out, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		return -1;
	}
	fclose(f);
	*len = (size_t)n;
	return 0;
}

/* Write parts (files in src_dir, top first) as one bundle file out_dir/out. */
static void bundle(const char *src_dir, const char *out_dir, const char *out,
		   const char *const *parts, unsigned n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", out_dir, out);
	f = fopen(path, "wb");
	for (unsigned i = 0; f && i < n; i++) {
		char src[4096];
		uint8_t *buf = NULL;
		size_t len = 0;
		snprintf(src, sizeof src, "%s/%s", src_dir, parts[i]);
		if (read_all(src, &buf, &len) == 0) {
			if (i)
				fwrite(FUZZ_SEP, 1, FUZZ_SEP_LEN, f);
			fwrite(buf, 1, len, f);
		}
		free(buf);
	}
	if (f)
		fclose(f);
}

/* A small sparse disk in dir/name: a few grains of data. */
static int make_layer(const char *dir, const char *name, const char *parent,
		      uint8_t fill, uint64_t at)
{
	struct vmdk_create_opts o = { .capacity = 1 << 20,
				      .subformat = VMDK_MONOLITHIC_SPARSE,
				      .grain_size = 4096, .parent_cid = VMDK_CID_NONE };
	char path[4096];
	struct vmdk_disk *d;
	uint8_t buf[4096];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (parent) {
		char ppath[4096];
		snprintf(ppath, sizeof ppath, "%s/%s", dir, parent);
		if (group_create_child(ppath, path, false, NULL, NULL))
			return -1;
	} else if (vmdk_create(path, &o, NULL)) {
		return -1;
	}
	if (vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d))
		return -1;
	memset(buf, fill, sizeof buf);
	(void)vmdk_pwrite(d, buf, sizeof buf, at);
	return vmdk_close(d);
}

void fuzz_make_seeds(const char *dir)
{
	static const char *const names[] = { "top.vmdk", "p1.vmdk", "p2.vmdk", "p3.vmdk" };
	char sub[] = "/tmp/vdfuzz-chain-seed.XXXXXX", cmd[4200];

	/* chains of depth 1..4, parent hints naming p1/p2/p3 as the bundle does */
	if (!mkdtemp(sub) ||
	    make_layer(sub, "p3.vmdk", NULL, 0x33, 0) ||
	    make_layer(sub, "p2.vmdk", "p3.vmdk", 0x22, 8192) ||
	    make_layer(sub, "p1.vmdk", "p2.vmdk", 0x11, 16384) ||
	    make_layer(sub, "top.vmdk", "p1.vmdk", 0x44, 4096)) {
		fprintf(stderr, "fuzz seeds: cannot make chains in %s\n", sub);
	} else {
		bundle(sub, dir, "gen-chain4.fz", names, 4);
		/* top -> p1 whose parent is missing; a lone base */
		bundle(sub, dir, "gen-chain2.fz", names, 2);
		bundle(sub, dir, "gen-chain1.fz", (const char *const[]){ "p3.vmdk" }, 1);
	}
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", sub);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", sub);
}
