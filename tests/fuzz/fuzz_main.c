/* tests/fuzz — deterministic driver that runs a fuzz target as an ordinary
 * regression test (test layer), used when the target is not built with
 * -fsanitize=fuzzer (then libFuzzer supplies main()).
 *
 * usage: fuzz_X [-n MUTATIONS] [-t SECONDS] [-s SEED] PATH...
 *        fuzz_X -g DIR      write the generated seeds into DIR and exit
 *                           (for a libFuzzer corpus: tests/fuzz/run_long.sh)
 * Every regular file under each PATH (recursively) is a seed; files larger
 * than 1 MiB are cut to their first 1 MiB.  Each seed runs as is, then in
 * MUTATIONS deterministic variants: bit flips, little-endian field sets at
 * the header offsets of KDMV / COWD / seSparse (0, all-ones, powers of two,
 * random), byte sets in the first 16 KiB, digit-run replacements in text
 * ("99999999999999999999", "0", "-1"), and truncations.  The run stops
 * adding mutations once SECONDS have passed, so the test stays bounded.
 * A crash or abort leaves the input that caused it in
 * /tmp/vdelta-fuzz-crash.<target>; replay it with
 *   build/tests/fuzz/fuzz_X -n 0 /tmp/vdelta-fuzz-crash.fuzz_X
 * (under gdb, or in an ASan build: meson setup -Db_sanitize=address,undefined). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

#define MAX_SEED (1u << 20)
#define MAX_SEEDS 512

struct seed {
	char *name;
	uint8_t *data;
	size_t size;
};

static struct seed seeds[MAX_SEEDS];
static unsigned nr_seeds;

/* the input under test, saved by the crash handler */
static const uint8_t *cur_data;
static size_t cur_size;
static char crash_path[256];

static void on_crash(int sig)
{
	int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd >= 0) {
		if (cur_data && write(fd, cur_data, cur_size) < 0)
			sig = -sig;
		close(fd);
	}
	signal(sig < 0 ? -sig : sig, SIG_DFL);
	raise(sig < 0 ? -sig : sig);
}

static void add_seed(const char *path)
{
	int fd = open(path, O_RDONLY);
	struct seed *s;
	ssize_t n;

	if (fd < 0 || nr_seeds == MAX_SEEDS) {
		if (fd >= 0)
			close(fd);
		return;
	}
	s = &seeds[nr_seeds];
	s->data = malloc(MAX_SEED);
	n = read(fd, s->data, MAX_SEED);
	close(fd);
	if (n < 0) {
		free(s->data);
		return;
	}
	s->size = (size_t)n;
	s->name = strdup(path);
	nr_seeds++;
}

static void add_path(const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;

	if (stat(path, &st))
		return;
	if (S_ISREG(st.st_mode)) {
		add_seed(path);
		return;
	}
	if (!S_ISDIR(st.st_mode) || !(d = opendir(path)))
		return;
	while ((e = readdir(d))) {
		char *sub;
		if (e->d_name[0] == '.')
			continue;
		if (asprintf(&sub, "%s/%s", path, e->d_name) < 0)
			break;
		add_path(sub);
		free(sub);
	}
	closedir(d);
}

static int seed_cmp(const void *a, const void *b)
{
	return strcmp(((const struct seed *)a)->name, ((const struct seed *)b)->name);
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1Dull;
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
}

/* header field offsets (format doc §2.1, §3.1, §4.1) */
static const uint16_t kdmv_fields[] = { 4, 8, 12, 20, 28, 36, 44, 48, 56, 64, 72, 73, 77 };
static const uint16_t cowd_fields[] = { 4, 8, 12, 16, 20, 24, 28, 1648 };
static const uint16_t sesparse_fields[] = { 8, 16, 24, 32, 40, 80, 88, 96, 104, 112, 120,
					    128, 136, 144, 152, 160, 168, 176, 184, 192, 200 };

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t field_value(uint64_t *s)
{
	switch (below(s, 6)) {
	case 0:
		return 0;
	case 1:
		return ~0ull;
	case 2:
		return 1ull << below(s, 64);
	case 3:
		return below(s, 4096);
	case 4:
		return (1ull << below(s, 64)) - 1;
	default:
		return rnd(s);
	}
}

static void set_field(uint64_t *s, uint8_t *buf, size_t size)
{
	const uint16_t *f = kdmv_fields;
	size_t nf = sizeof kdmv_fields / sizeof kdmv_fields[0];
	int width = below(s, 2) ? 8 : 4;
	size_t off;

	if (size >= 4 && !memcmp(buf, "COWD", 4)) {
		f = cowd_fields;
		nf = sizeof cowd_fields / sizeof cowd_fields[0];
		width = 4;
	} else if (size >= 8 && buf[0] == 0xbe && buf[1] == 0xba && buf[2] == 0xfe) {
		f = sesparse_fields;
		nf = sizeof sesparse_fields / sizeof sesparse_fields[0];
		width = 8;
	}
	off = f[below(s, nf)];
	if (off + (size_t)width <= size)
		put_le(buf + off, field_value(s), width);
}

/* replace a run of digits with a hostile number */
static size_t set_number(uint64_t *s, uint8_t *buf, size_t size)
{
	static const char *nums[] = { "99999999999999999999", "0", "-1", "4294967296",
				      "137438953472", "18446744073709551615", "1" };
	const char *num = nums[below(s, 7)];
	size_t start = below(s, size), end, len = strlen(num);

	while (start < size && (buf[start] < '0' || buf[start] > '9'))
		start++;
	if (start == size)
		return size;
	for (end = start; end < size && buf[end] >= '0' && buf[end] <= '9'; end++)
		;
	if (size - (end - start) + len > MAX_SEED)
		return size;
	memmove(buf + start + len, buf + end, size - end);
	memcpy(buf + start, num, len);
	return size - (end - start) + len;
}

static size_t mutate(uint64_t *s, uint8_t *buf, size_t size)
{
	int rounds = 1 + (int)below(s, 3);

	while (rounds-- && size) {
		switch (below(s, 6)) {
		case 0: /* bit flips */
			for (int i = 0, n = 1 + (int)below(s, 8); i < n; i++)
				buf[below(s, size)] ^= (uint8_t)(1u << below(s, 8));
			break;
		case 1:
		case 2:
			set_field(s, buf, size);
			break;
		case 3: /* byte sets in the metadata-rich start */
			for (int i = 0, n = 1 + (int)below(s, 4); i < n; i++)
				buf[below(s, size < 16384 ? size : 16384)] = (uint8_t)rnd(s);
			break;
		case 4:
			size = set_number(s, buf, size);
			break;
		default: /* truncate */
			size = below(s, size + 1);
			break;
		}
	}
	return size;
}

static void run_one(const uint8_t *data, size_t size)
{
	cur_data = data;
	cur_size = size;
	LLVMFuzzerTestOneInput(data, size);
	cur_data = NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long mutations = 100, budget = 25;
	uint64_t base_seed = 1;
	char gen_dir[] = "/tmp/vdfuzz-seeds.XXXXXX";
	uint8_t *buf = malloc(MAX_SEED);
	unsigned long runs = 0;
	double start = now();
	const char *target = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	int opt;

	while ((opt = getopt(argc, argv, "n:t:s:g:")) != -1) {
		if (opt == 'g') {
			fuzz_make_seeds(optarg);
			return 0;
		} else if (opt == 'n')
			mutations = atol(optarg);
		else if (opt == 't')
			budget = atol(optarg);
		else if (opt == 's')
			base_seed = strtoull(optarg, NULL, 0);
		else
			return 2;
	}
	snprintf(crash_path, sizeof crash_path, "/tmp/vdelta-fuzz-crash.%s", target);
	signal(SIGSEGV, on_crash);
	signal(SIGABRT, on_crash);
	signal(SIGBUS, on_crash);
	signal(SIGFPE, on_crash);
	if (mkdtemp(gen_dir)) {
		fuzz_make_seeds(gen_dir);
		add_path(gen_dir);
	}
	for (int i = optind; i < argc; i++)
		add_path(argv[i]);
	qsort(seeds, nr_seeds, sizeof seeds[0], seed_cmp);
	for (unsigned i = 0; i < nr_seeds; i++, runs++)
		run_one(seeds[i].data, seeds[i].size);
	for (long m = 0; m < mutations && now() - start < budget; m++) {
		for (unsigned i = 0; i < nr_seeds; i++, runs++) {
			uint64_t s = base_seed * 0x9e3779b97f4a7c15ull + m * 1000003ull + i + 1;
			size_t size = seeds[i].size;
			memcpy(buf, seeds[i].data, size);
			size = mutate(&s, buf, size);
			run_one(buf, size);
		}
	}
	printf("%s: %u seeds, %lu runs in %.1f s\n", target, nr_seeds, runs, now() - start);
	for (unsigned i = 0; i < nr_seeds; i++) {
		/* only the generated seeds are ours to remove */
		if (!strncmp(seeds[i].name, gen_dir, strlen(gen_dir)))
			unlink(seeds[i].name);
		free(seeds[i].name);
		free(seeds[i].data);
	}
	rmdir(gen_dir);
	free(buf);
	return 0;
}
