/* tests/fuzz — fuzz target for opening untrusted disks through the public
 * format-layer API, vmdk/vmdk.h (format layer): the input bytes are written
 * to a temporary file which is vmdk_open()ed read-only; when that succeeds
 * a few ranges are read, block status is walked, info/descriptor entries
 * are listed and (for small disks) vmdk_check runs.  The file may be a
 * KDMV, COWD or seSparse extent or a text descriptor; text descriptors can
 * name the extent files a.bin and b.bin that sit beside the input (1 MiB
 * each).  Bad input must give an error, never a crash, hang, or unbounded
 * allocation, and the library must write nothing.
 *
 * libFuzzer recipe (clang; zlib is needed for stream extents):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 \
 *     -D_FILE_OFFSET_BITS=64 -Icommon -Ivmdk tests/fuzz/fuzz_open.c \
 *     $(ls vmdk/vmdk_*.c common/common*.c) -lz -lpthread -o /tmp/fuzz_open
 *   mkdir -p /tmp/fuzz_open_corpus
 *   /tmp/fuzz_open /tmp/fuzz_open_corpus tests/fuzz/seeds ../shared/corpus \
 *     -max_len=1048576 -rss_limit_mb=1024 -timeout=10 -max_total_time=600
 * Without -fsanitize=fuzzer, tests/fuzz/fuzz_main.c supplies main() and the
 * meson test "fuzz_open" runs the seeds plus deterministic mutations. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"
#include "vmdk.h"

static const char *work_dir;
static char *input_path;

/* a.bin / b.bin for descriptors to point at: 1 MiB, a pattern at the start */
static void make_bin(const char *name, int byte)
{
	char path[4096];
	uint8_t buf[4096];
	int fd;

	snprintf(path, sizeof path, "%s/%s", work_dir, name);
	memset(buf, byte, sizeof buf);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, buf, sizeof buf) != (ssize_t)sizeof buf ||
	    ftruncate(fd, 1 << 20))
		fuzz_fail("cannot make %s", path);
	close(fd);
}

static void init_once(void)
{
	char tmpl[] = "/tmp/vdfuzz.XXXXXX";

	if (work_dir)
		return;
	work_dir = fuzz_work_dir(tmpl);
	if (asprintf(&input_path, "%s/input.vmdk", work_dir) < 0)
		abort();
	make_bin("a.bin", 'A');
	make_bin("b.bin", 'B');
}

static void walk_status(struct vmdk_disk *d, uint64_t off, uint64_t cap)
{
	for (int i = 0; i < 64 && off < cap; i++) {
		enum vmdk_bs kind;
		uint64_t run = 0;
		if (vmdk_block_status(d, off, cap - off, &kind, &run))
			return;
		if (!run || run > cap - off)
			fuzz_fail("block status at %llu: run %llu of %llu",
				  (unsigned long long)off, (unsigned long long)run,
				  (unsigned long long)(cap - off));
		off += run;
	}
}

static void ignore_problem(void *opaque, bool is_error, const char *file, const char *msg)
{
	(void)opaque;
	(void)is_error;
	(void)file;
	(void)msg;
}

static void exercise(struct vmdk_disk *d)
{
	static uint8_t buf[65536];
	uint64_t cap = vmdk_capacity(d);
	uint64_t offs[3] = { 0, cap / 2, cap > sizeof buf ? cap - sizeof buf : 0 };
	struct vmdk_info info;
	const char *k, *v;

	for (int i = 0; i < 3; i++) {
		size_t n = cap - offs[i] < sizeof buf ? (size_t)(cap - offs[i]) : sizeof buf;
		(void)vmdk_pread(d, buf, n, offs[i]);
	}
	if (vmdk_pread(d, buf, 1, cap) == 0)
		fuzz_fail("read at capacity %llu succeeded", (unsigned long long)cap);
	walk_status(d, 0, cap);
	walk_status(d, cap / 3, cap);
	vmdk_info_get(d, &info);
	for (unsigned i = 0; i < info.nr_extents && i < 16; i++) {
		struct vmdk_extent_info ei;
		(void)vmdk_extent_info_get(d, i, &ei);
	}
	for (unsigned i = 0; i < 4096 && vmdk_desc_entry(d, i, &k, &v) == 0; i++)
		;
	for (unsigned i = 0; i < vmdk_nr_files(d); i++)
		(void)vmdk_file_path(d, i);
	if (cap <= (256u << 20)) {
		struct vmdk_check_result r;
		(void)vmdk_check(d, ignore_problem, NULL, &r);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmdk_disk *d = NULL;
	struct stat before, after;

	init_once();
	fuzz_write_file(input_path, data, size);
	if (stat(input_path, &before))
		abort();
	if (vmdk_open(input_path, VMDK_OPEN_RDONLY, NULL, &d) == 0) {
		exercise(d);
		vmdk_close(d);
	}
	/* read-only means nothing written */
	if (stat(input_path, &after) || after.st_size != before.st_size ||
	    after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != before.st_mtim.tv_nsec)
		fuzz_fail("a read-only open modified the input file");
	return 0;
}

/* ---- generated seeds: small disks made by the library ---------------------------- */

static void make_disk(const char *dir, const char *name, enum vmdk_subformat sf,
		      uint64_t capacity, uint64_t grain, bool zeroed)
{
	struct vmdk_create_opts o = { .capacity = capacity, .subformat = sf,
				      .grain_size = grain, .zeroed_grain = zeroed,
				      .parent_cid = VMDK_CID_NONE };
	char path[4096];
	struct vmdk_disk *d;
	uint8_t buf[8192];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (vmdk_create(path, &o, NULL) || vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d)) {
		fprintf(stderr, "fuzz seeds: cannot make %s\n", path);
		return;
	}
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i * 7);
	/* ascending whole grains (a stream accepts nothing else) */
	for (uint64_t off = 0; off + grain <= capacity && off < 8 * grain; off += 3 * grain)
		(void)vmdk_pwrite(d, buf, grain, off);
	if (zeroed)
		(void)vmdk_pwrite_zeroes(d, grain, grain);
	vmdk_close(d);
}

void fuzz_make_seeds(const char *dir)
{
	make_disk(dir, "gen-mono.vmdk", VMDK_MONOLITHIC_SPARSE, 200 * 512, 8192, false);
	make_disk(dir, "gen-zg.vmdk", VMDK_MONOLITHIC_SPARSE, 64 * 1024, 8192, true);
	make_disk(dir, "gen-stream.vmdk", VMDK_STREAM_OPTIMIZED, 64 * 1024, 8192, false);
}
