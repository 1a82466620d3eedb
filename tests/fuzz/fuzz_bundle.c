/* tests/fuzz — fuzz target for the bundle reader of group/ (group_bundle.c,
 * group_bundle_head.c) and unpack's checks before it writes (test layer).
 * The input is a bundle stream, read from a pipe-like descriptor (a memfd:
 * read in order, never seeked): the header and every layer header, then
 * every frame to the end.  Whatever the bytes, the reader must refuse or
 * finish, never crash, hang or allocate by what the stream declares, and
 * every run it hands out must lie inside its layer and its frame.  When
 * the header reads, `unpack --dry-run` of the same bytes into an empty
 * folder must refuse or finish without writing anything.  Each input runs
 * twice: as it is, and with its checksums made right again (fix_sums), so
 * that mutations reach the decoders behind them.
 *
 * libFuzzer recipe: tests/fuzz/run_long.sh builds and runs it.
 * Without -fsanitize=fuzzer, tests/fuzz/fuzz_main.c supplies main() and the
 * meson test "fuzz_bundle" runs the generated seeds plus mutations. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "group_int.h"
#include "fuzz.h"

static const char *work_dir;

static void init_once(void)
{
	char tmpl[] = "/tmp/vdfuzz-bundle.XXXXXX";

	if (!work_dir)
		work_dir = fuzz_work_dir(tmpl);
}

/* The input as a descriptor read from its start. */
static int as_fd(const uint8_t *data, size_t size)
{
	int fd = memfd_create("bundle", MFD_CLOEXEC);

	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size) || lseek(fd, 0, SEEK_SET))
		fuzz_fail("memfd: %s", strerror(errno));
	return fd;
}

static void check_runs(const struct group_bundle_info *b, unsigned layer,
		       const struct group_bundle_run *runs, unsigned nr)
{
	if (layer >= b->nr_layers)
		fuzz_fail("frame of layer %u of %u", layer, b->nr_layers);
	for (unsigned i = 0; i < nr; i++) {
		const struct group_bundle_run *r = &runs[i];
		if (!r->len || r->off > b->layers[layer].capacity ||
		    r->len > b->layers[layer].capacity - r->off || ((r->kind == GROUP_RUN_DATA) != !!r->data))
			fuzz_fail("run %u of layer %u: %llu+%llu, capacity %llu", i, layer,
				  (unsigned long long)r->off, (unsigned long long)r->len,
				  (unsigned long long)b->layers[layer].capacity);
		if (r->data) /* touch the bytes: they must be in the frame */
			(void)*(volatile const uint8_t *)(r->data + r->len - 1);
	}
}

/* Read it all; true when the header read. */
static bool read_all(const uint8_t *data, size_t size)
{
	struct group_bundle_reader *r = NULL;
	struct group_bundle_info *b = NULL;
	const struct group_bundle_run *runs;
	unsigned layer, nr, frames = 0;
	int fd = as_fd(data, size), err = group_bundle_reader_open(fd, "fuzz", &r);
	bool head = false;

	if (!err)
		head = !(err = group_bundle_read_head(r, &b));
	while (!err && !(err = group_bundle_read_frame(r, &layer, &runs, &nr))) {
		check_runs(b, layer, runs, nr);
		if (++frames > size)
			fuzz_fail("%u frames from %zu bytes", frames, size);
	}
	if (err == 1 && group_bundle_read_frame(r, &layer, &runs, &nr) != 1)
		fuzz_fail("a read past the end did not say the end");
	group_bundle_reader_free(r);
	group_bundle_info_free(b);
	close(fd);
	return head;
}

static unsigned entries(const char *dir)
{
	DIR *d = opendir(dir);
	unsigned n = 0;

	while (d && readdir(d))
		n++;
	if (d)
		closedir(d);
	return n;
}

static void dry_run(const uint8_t *data, size_t size)
{
	struct group_unpack_opts o = { .flags = GROUP_DRY_RUN };
	struct group_bundle_info *b = NULL;
	int fd = as_fd(data, size);
	unsigned before = entries(work_dir);

	if (!group_unpack(fd, "fuzz", work_dir, &o, NULL, &b))
		group_bundle_info_free(b);
	close(fd);
	if (entries(work_dir) != before)
		fuzz_fail("a dry run wrote into %s", work_dir);
}

/* The input with every checksum made right again (envelopes, stored
 * bytes, contents the frames decompress to, the trailer's counts left as
 * they are but its stream checksum recomputed), so that a mutation of a
 * field reaches the decoders instead of stopping at a checksum. */
static uint8_t *fix_sums(const uint8_t *data, size_t size)
{
	uint8_t *s = malloc(size ? size : 1), *buf = malloc(GROUP_BUNDLE_FRAME_MAX);
	size_t o = 16;

	memcpy(s, data, size);
	if (size >= 16)
		put_le32(s + 12, (uint32_t)XXH3_64bits(s, 12));
	while (o + 40 <= size) {
		uint8_t *h = s + o;
		size_t stored = get_le32(h + 8), got;
		if (stored > size - o - 40)
			break;
		if (!memcmp(h, "TAIL", 4) && stored == 32)
			put_le64(h + 40 + 24, XXH3_64bits(s, o));
		got = memcmp(h, "FRAM", 4) ? stored
		      : ZSTD_decompress(buf, GROUP_BUNDLE_FRAME_MAX, h + 40, stored);
		if (!ZSTD_isError(got))
			put_le64(h + 16, XXH3_64bits(memcmp(h, "FRAM", 4) ? h + 40 : buf, got));
		put_le64(h + 24, XXH3_64bits(h + 40, stored));
		put_le64(h + 32, XXH3_64bits(h, 32));
		o += 40 + stored;
	}
	free(buf);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;

	init_once();
	if (read_all(data, size))
		dry_run(data, size);
	fixed = fix_sums(data, size);
	if (read_all(fixed, size))
		dry_run(fixed, size);
	free(fixed);
	return 0;
}

/* ---- seeds ---------------------------------------------------------------------------------- */

static struct group_bundle_info *seed_info(unsigned nr_layers, bool need)
{
	struct group_bundle_info *b = calloc(1, sizeof *b);

	b->nr_layers = nr_layers;
	b->layers = calloc(nr_layers, sizeof *b->layers);
	b->needs = calloc(1, sizeof *b->needs);
	b->nr_needs = need;
	if (need)
		b->needs[0] = (struct group_bundle_need){ .name = strdup("base.vmdk"),
							  .cid = 0xfeed, .capacity = 1u << 20 };
	for (unsigned i = 0; i < nr_layers; i++) {
		struct group_bundle_layer *l = &b->layers[i];
		char name[32];
		snprintf(name, sizeof name, "l%u.vmdk", i);
		*l = (struct group_bundle_layer){
			.name = strdup(name), .source_type = strdup("monolithicSparse"),
			.kind = VMDK_MONOLITHIC_SPARSE, .capacity = 1u << 20, .grain_size = 4096,
			.cid = 0x10 + i, .top = i + 1 == nr_layers,
			.parent_kind = i ? GROUP_BUNDLE_LAYER
				     : need ? GROUP_BUNDLE_NEED : GROUP_BUNDLE_BASE,
			.parent_cid = i ? 0x10 + i - 1 : need ? 0xfeed : VMDK_CID_NONE };
		vd_strv_add(&l->keys, &l->nr_keys, "ddb.adapterType=lsilogic");
	}
	return b;
}

static void seed(const char *dir, const char *name, unsigned nr_layers, bool need,
		 unsigned nr_runs)
{
	struct group_bundle_info *b = seed_info(nr_layers, need);
	struct group_bundle_writer *w = NULL;
	static uint8_t data[64 << 10];
	char path[4096];
	int fd;

	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)("seed bytes of a bundle "[i % 23] ^ (i / 4096));
	for (unsigned i = 0; i < nr_layers; i++)
		b->layers[i].held_bytes = nr_runs * 8192u;
	b->held_bytes = (uint64_t)nr_layers * nr_runs * 8192u;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || group_bundle_writer_open(fd, 1, 0, &w) || group_bundle_write_head(w, b))
		fuzz_fail("seed %s", path);
	for (unsigned i = 0; i < nr_layers; i++)
		for (unsigned k = 0; k < nr_runs; k++)
			if (group_bundle_write_run(w, i, k * 65536u, 8192,
						   (enum group_bundle_kind)(i && k % 3 == 2 ? 3 : 1 + k % 2),
						   data, 4096))
				fuzz_fail("seed %s: run", path);
	if (group_bundle_write_end(w))
		fuzz_fail("seed %s: end", path);
	group_bundle_writer_free(w);
	group_bundle_info_free(b);
	close(fd);
}

void fuzz_make_seeds(const char *dir)
{
	seed(dir, "one-layer.vdb", 1, false, 4);
	seed(dir, "two-over-need.vdb", 2, true, 3);
	seed(dir, "empty-layers.vdb", 3, false, 0);
}
