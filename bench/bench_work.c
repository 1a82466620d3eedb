/* bench — the workloads (bench layer, over chain.h).
 *
 * Owns: sequential 1 MiB reads, random 4 KiB reads on 1..N threads, the
 * replay of a trace, random 4 KiB writes each followed by a flush, run
 * against a chain in process or a file served over FUSE (pread/pwrite with
 * O_DIRECT where the file system allows it); the timing of every request
 * and the latency percentiles; the parsing of traces.  Each thread draws
 * its offsets from its own xorshift generator seeded from o->seed, so runs
 * repeat.  Workers stop early (-EINTR) once bench_run_stop is set
 * (bench_run_interrupt).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_int.h"

#define SEQ_BLOCK (1u << 20)
#define RAND_BLOCK 4096u
#define TRACE_MAX_LEN (16u << 20)
#define TRACE_MAX_OPS (16u << 20)

struct worker {
	const struct bench_target *t;
	const struct bench_opts *o;
	const struct bench_trace *trace;
	enum bench_pattern pattern;
	unsigned index, nr;
	uint64_t rng;
	uint64_t *lat_ns; /* one per op */
	uint64_t nr_ops, bytes;
	int err;
};

const char *bench_work_pattern_name(enum bench_pattern p)
{
	static const char *const names[] = {"seq-read-1M", "rand-read-4K", "trace",
					    "rand-write-4K-fsync"};
	return names[p];
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int target_io(const struct bench_target *t, void *buf, size_t len, uint64_t off,
		     bool write)
{
	ssize_t n;

	if (t->chain)
		return write ? chain_pwrite(t->chain, buf, len, off)
			     : chain_pread(t->chain, buf, len, off);
	n = write ? pwrite(t->fd, buf, len, (off_t)off) : pread(t->fd, buf, len, (off_t)off);
	if (n < 0)
		return -errno;
	return (size_t)n == len || !write ? 0 : -EIO;
}

static int target_flush(const struct bench_target *t)
{
	if (t->chain)
		return chain_flush(t->chain);
	return fdatasync(t->fd) ? -errno : 0;
}

/* Offset and length of op i of this worker; false when done. */
static bool worker_next(struct worker *w, uint64_t i, uint64_t *off, uint32_t *len)
{
	uint64_t size = w->t->size, blocks = size / RAND_BLOCK;
	uint64_t seq_bytes = w->o->seq_bytes ? VD_MIN(w->o->seq_bytes, size) : size;

	switch (w->pattern) {
	case BENCH_SEQ:
		*off = (i * w->nr + w->index) * SEQ_BLOCK;
		*len = (uint32_t)VD_MIN(SEQ_BLOCK, seq_bytes - VD_MIN(*off, seq_bytes));
		return *off < seq_bytes;
	case BENCH_TRACE:
		if (i * w->nr + w->index >= w->trace->nr_ops)
			return false;
		*off = w->trace->ops[i * w->nr + w->index].off;
		*len = w->trace->ops[i * w->nr + w->index].len;
		return true;
	default: /* a disk under 4 KiB has no random workload */
		if (!blocks)
			return false;
		*off = xorshift(&w->rng) % blocks * RAND_BLOCK;
		*len = RAND_BLOCK;
		return i < (w->pattern == BENCH_WRITE ? w->o->write_ops : w->o->rand_ops) / w->nr;
	}
}

static int worker_one(struct worker *w, uint8_t *buf, uint64_t i, uint64_t off,
		      uint32_t len)
{
	bool write = w->pattern == BENCH_WRITE ||
		     (w->pattern == BENCH_TRACE && w->trace->ops[i * w->nr + w->index].write);
	int err;

	if (write)
		memset(buf, (int)(i | 1), len);
	err = target_io(w->t, buf, len, off, write);
	if (!err && w->pattern == BENCH_WRITE)
		err = target_flush(w->t);
	return err;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	size_t bufsize = w->trace && w->pattern == BENCH_TRACE ? w->trace->max_len : SEQ_BLOCK;
	uint8_t *buf = aligned_alloc(4096, VD_ROUND_UP(VD_MAX(bufsize, 4096u), 4096u));
	uint64_t off;
	uint32_t len;

	if (!buf) {
		w->err = -ENOMEM;
		return NULL;
	}
	for (uint64_t i = 0; !w->err && !bench_run_stop && worker_next(w, i, &off, &len); i++) {
		uint64_t t0 = now_ns();
		w->err = worker_one(w, buf, i, off, len);
		w->lat_ns[i] = now_ns() - t0;
		w->nr_ops++;
		w->bytes += len;
	}
	free(buf);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sort every worker's latencies into one array; p50, p99, p99.9. */
static int percentiles(struct worker *w, unsigned nr, uint64_t total, uint64_t out[3])
{
	static const double q[3] = {0.50, 0.99, 0.999};
	uint64_t *all = malloc(VD_MAX(total, 1) * sizeof *all), n = 0;

	if (!all)
		return -ENOMEM;
	for (unsigned i = 0; i < nr; i++)
		for (uint64_t k = 0; k < w[i].nr_ops; k++)
			all[n++] = w[i].lat_ns[k];
	qsort(all, n, sizeof *all, cmp_u64);
	for (int k = 0; k < 3; k++)
		out[k] = n ? all[(uint64_t)(q[k] * (double)(n - 1) + 0.5)] : 0;
	free(all);
	return 0;
}

/* Requests a worker may issue (the size of its latency array). */
static uint64_t worker_cap(const struct worker *w)
{
	uint64_t seq = w->o->seq_bytes ? VD_MIN(w->o->seq_bytes, w->t->size) : w->t->size;

	switch (w->pattern) {
	case BENCH_SEQ: return VD_DIV_ROUND_UP(seq, SEQ_BLOCK) / w->nr + 1;
	case BENCH_TRACE: return w->trace->nr_ops / w->nr + 1;
	case BENCH_WRITE: return w->o->write_ops / w->nr + 1;
	default: return w->o->rand_ops / w->nr + 1;
	}
}

static int workers_run(struct worker *w, unsigned nr)
{
	pthread_t tid[BENCH_MAX_THREADS];
	unsigned started = 0;
	int err = 0;

	for (unsigned i = 0; i < nr; i++) {
		w[i].lat_ns = malloc(worker_cap(&w[i]) * sizeof(uint64_t));
		if (!w[i].lat_ns)
			return -ENOMEM;
	}
	for (; started < nr; started++)
		if ((err = -pthread_create(&tid[started], NULL, worker_main, &w[started])))
			break;
	for (unsigned i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	for (unsigned i = 0; i < nr && !err; i++)
		err = w[i].err;
	return err;
}

int bench_work_run(const struct bench_target *t, const struct bench_opts *o,
		   const struct bench_trace *trace, struct bench_result *r)
{
	struct worker w[BENCH_MAX_THREADS] = {{0}};
	unsigned nr = r->pattern == BENCH_RAND ? r->threads : 1;
	uint64_t t0, total = 0;
	int err;

	for (unsigned i = 0; i < nr; i++)
		w[i] = (struct worker){ .t = t, .o = o, .trace = trace, .pattern = r->pattern,
					.index = i, .nr = nr,
					.rng = (o->seed + 1) * 0x9e3779b97f4a7c15ull + i };
	t0 = now_ns();
	err = workers_run(w, nr);
	r->seconds = (double)(now_ns() - t0) / 1e9;
	r->threads = nr;
	for (unsigned i = 0; i < nr; i++) {
		r->ops += w[i].nr_ops;
		r->bytes += w[i].bytes;
		total += w[i].nr_ops;
	}
	if (!err && bench_run_stop)
		err = -EINTR;
	if (!err)
		err = percentiles(w, nr, total, r->lat_ns);
	for (unsigned i = 0; i < nr; i++)
		free(w[i].lat_ns);
	return err;
}

/* ---- traces ------------------------------------------------------------------ */

/* "OFFSET LENGTH OP": decimal or 0x numbers, op r/read/R or w/write/W. */
static int trace_line(const char *path, unsigned line_no, const char *line,
		      uint64_t capacity, struct bench_op *op)
{
	unsigned long long off, len;
	char kind[16];

	if (sscanf(line, "%lli %lli %15s", &off, &len, kind) != 3 ||
	    (kind[0] != 'r' && kind[0] != 'R' && kind[0] != 'w' && kind[0] != 'W')) {
		vd_err("%s:%u: expected \"OFFSET LENGTH r|w\"", path, line_no);
		return -EINVAL;
	}
	if (len == 0 || len > TRACE_MAX_LEN || off > capacity || len > capacity - off) {
		vd_err("%s:%u: offset %llu length %llu: not within the disk (%" PRIu64
		       " bytes) or length not in 1..%u", path, line_no, off, len, capacity,
		       TRACE_MAX_LEN);
		return -EINVAL;
	}
	*op = (struct bench_op){ off, (uint32_t)len, kind[0] == 'w' || kind[0] == 'W' };
	return 0;
}

static int trace_add(struct bench_trace *t, const struct bench_op *op, size_t *alloc)
{
	if (t->nr_ops == *alloc) {
		size_t n = *alloc ? *alloc * 2 : 1024;
		struct bench_op *p = realloc(t->ops, n * sizeof *p);
		if (!p)
			return -ENOMEM;
		t->ops = p;
		*alloc = n;
	}
	t->ops[t->nr_ops++] = *op;
	t->has_writes |= op->write;
	t->max_len = VD_MAX(t->max_len, op->len);
	return 0;
}

int bench_work_trace_load(const char *path, uint64_t capacity, struct bench_trace *out)
{
	FILE *f = fopen(path, "re");
	char line[256];
	unsigned line_no = 0;
	size_t alloc = 0;
	int err = 0;

	memset(out, 0, sizeof *out);
	if (!f) {
		err = -errno;
		vd_err("%s: %s", path, strerror(errno));
		return err;
	}
	while (!err && fgets(line, sizeof line, f)) {
		struct bench_op op;
		line_no++;
		if (line[strspn(line, " \t\r\n")] == '\0' || line[strspn(line, " \t")] == '#')
			continue;
		if (out->nr_ops >= TRACE_MAX_OPS) {
			vd_err("%s:%u: more than %u requests", path, line_no, TRACE_MAX_OPS);
			err = -E2BIG;
		} else if (!(err = trace_line(path, line_no, line, capacity, &op))) {
			err = trace_add(out, &op, &alloc);
		}
	}
	fclose(f);
	if (!err && !out->nr_ops) {
		vd_err("%s: no requests", path);
		err = -EINVAL;
	}
	return err;
}
