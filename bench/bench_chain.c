/* bench — read cost of chain depth (bench layer; uses chain.h).
 *
 *   bench_chain [DIR] [SIZE_MIB]
 *
 * Builds, in DIR (default /tmp/bench_chain), chains of depth 1, 8 and 32
 * with qemu-img / qemu-io: a base filled with data, then each delta writes
 * 4 KiB into 2% of the grains (each such grain is copied up into the
 * delta), so the same logical disk is spread over more layers.  Then, with
 * the page cache warm, measures in-process through the chain layer:
 *   - random 4 KiB reads (4 KiB aligned, uniform over the disk),
 *   - 1 MiB sequential reads of the whole disk,
 * and, for comparison on the same files, `qemu-img bench` (sequential
 * 4 KiB and 1 MiB reads, one request in flight).  Prints a Markdown table.
 * Rates are per CPU second (user + system of the reading process), best
 * of 3 for vdelta: the build machine is shared and wall time mostly
 * measures the other tenants.  qemu-img bench's rate includes its start-up.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "chain.h"

struct cfg {
	unsigned depth;
	unsigned per_mille; /* grains each delta writes into */
};
/* 2% per delta: the disk's data ends up spread over the layers; the last
 * row has empty deltas: the pure cost of depth. */
static const struct cfg cfgs[] = { {1, 0}, {8, 20}, {32, 20}, {32, 0} };
#define RAND_OPS 200000u
#define SEQ_PASSES 2
#define BEST_OF 3

/* CPU seconds of this process (user + system): on a shared machine the
 * wall clock mostly measures the other tenants. */
static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds of finished children (qemu-img bench). */
static double child_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_CHILDREN, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int sh(const char *cmd)
{
	int r = system(cmd);

	return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* dir/dN/l0..l(N-1).vmdk; the base is shared content for every depth. */
static int build(const char *dir, const struct cfg *cf, uint64_t size_mib, char *top,
		 size_t len)
{
	unsigned depth = cf->depth, tag = cf->depth * 1000 + cf->per_mille;
	char cmd[8192];
	uint64_t grains = size_mib * 16; /* 64 KiB grains */

	snprintf(cmd, sizeof cmd,
		 "mkdir -p %s/d%u && cd %s/d%u && rm -f *.vmdk w.txt && "
		 "qemu-img create -q -f vmdk l0.vmdk %lluM && "
		 "qemu-io -f vmdk -c 'write -P 0x5a 0 %lluM' l0.vmdk >/dev/null",
		 dir, tag, dir, tag, (unsigned long long)size_mib,
		 (unsigned long long)size_mib);
	if (sh(cmd))
		return -1;
	for (unsigned i = 1; i < depth; i++) {
		FILE *f;
		snprintf(cmd, sizeof cmd, "%s/d%u/w.txt", dir, tag);
		f = fopen(cmd, "w");
		fprintf(f, "write -P %u 0 512\n", i); /* qemu-io needs one command */
		for (uint64_t k = 0; k < grains * cf->per_mille / 1000; k++)
			fprintf(f, "write -P %u %llu 4096\n", i,
				(unsigned long long)(next_rand() % grains * 65536));
		fclose(f);
		snprintf(cmd, sizeof cmd,
			 "cd %s/d%u && qemu-img create -q -f vmdk -b l%u.vmdk -F vmdk "
			 "l%u.vmdk && sed \"s/.*/-c '&'/\" w.txt | xargs -n 400 sh -c "
			 "'qemu-io -f vmdk \"$@\" l%u.vmdk >/dev/null' x",
			 dir, tag, i - 1, i, i);
		if (sh(cmd))
			return -1;
	}
	snprintf(top, len, "%s/d%u/l%u.vmdk", dir, tag, depth - 1);
	return 0;
}

static double bench_random(struct chain *c)
{
	uint64_t blocks = chain_capacity(c) / 4096;
	char buf[4096];
	double t0 = now();

	for (unsigned i = 0; i < RAND_OPS; i++)
		if (chain_pread(c, buf, 4096, next_rand() % blocks * 4096))
			return -1;
	return RAND_OPS / (now() - t0);
}

static double bench_seq(struct chain *c)
{
	static char buf[1 << 20];
	uint64_t cap = chain_capacity(c);
	double t0 = now();

	for (int p = 0; p < SEQ_PASSES; p++)
		for (uint64_t off = 0; off < cap; off += sizeof buf)
			if (chain_pread(c, buf, sizeof buf, off))
				return -1;
	return SEQ_PASSES * (cap / 1048576.0) / (now() - t0);
}

/* qemu-img bench: requests per second (4 KiB) or MiB/s (1 MiB).  It reads
 * sequentially from offset 0, wrapping at the end of the image. */
static double qemu_bench(const char *top, unsigned bs, uint64_t cap)
{
	char cmd[8192];
	unsigned count = bs == 4096 ? RAND_OPS : (unsigned)(SEQ_PASSES * cap / bs);
	double t0;

	snprintf(cmd, sizeof cmd, "qemu-img bench -U -f vmdk -c %u -d 1 -s %u -S %u '%s' >/dev/null",
		 count, bs, bs, top);
	t0 = child_cpu();
	if (sh(cmd))
		return -1;
	return bs == 4096 ? count / (child_cpu() - t0)
			  : count * (bs / 1048576.0) / (child_cpu() - t0);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp/bench_chain";
	uint64_t size_mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 512;
	char top[4096];

	printf("| depth | data in deltas | vdelta random 4 KiB (IOPS) | vdelta seq 1 MiB "
	       "(MiB/s) | qemu-img bench seq 4 KiB (IOPS) | qemu-img bench seq 1 MiB "
	       "(MiB/s) |\n|---|---|---|---|---|---|\n");
	for (unsigned i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
		struct chain *c;
		double r, s;
		if (build(dir, &cfgs[i], size_mib, top, sizeof top)) {
			fprintf(stderr, "bench_chain: building depth %u failed\n", cfgs[i].depth);
			return 1;
		}
		if (chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c)) {
			fprintf(stderr, "bench_chain: cannot open %s\n", top);
			return 1;
		}
		bench_seq(c); /* warm the page cache and the map */
		r = s = 0;
		for (int k = 0; k < BEST_OF; k++) { /* best of: the machine is shared */
			r = VD_MAX(r, bench_random(c));
			s = VD_MAX(s, bench_seq(c));
		}
		chain_close(c);
		printf("| %u | %u%% per delta | %.0f | %.0f | %.0f | %.0f |\n", cfgs[i].depth,
		       cfgs[i].per_mille / 10, r, s,
		       qemu_bench(top, 4096, size_mib << 20),
		       qemu_bench(top, 1 << 20, size_mib << 20));
		fflush(stdout);
	}
	return 0;
}
