/* bench — private header of the bench layer (layer 4); included only by
 * bench/bench_*.c (and unit tests).
 *
 * Owns the shapes the bench files share:
 *   bench_run.c    a run: its disks, the order of workloads and systems,
 *                  the results
 *   bench_work.c   workloads (sequential, random, trace, write) over a
 *                  target, latency percentiles, traces
 *   bench_disk.c   a disk under test: the chain through the counting io,
 *                  per-layer counts, open cost, map memory, consolidate
 *                  prediction, the throw-away delta of write workloads
 *   bench_synth.c  synthetic chains built with the library
 *   bench_peer.c   the servers beside vdelta (vdelta mount, qemu's FUSE
 *                  export, vmdkmount)
 */
#ifndef VDELTA_BENCH_INT_H
#define VDELTA_BENCH_INT_H

#include <signal.h>

#include "bench.h"

/* One trace line: a read or a write of len bytes at off. */
struct bench_op {
	uint64_t off;
	uint32_t len;
	bool write;
};

struct bench_trace {
	struct bench_op *ops;
	size_t nr_ops;
	bool has_writes;
	uint32_t max_len;
};

/* What a workload runs against: a chain in process, or a served file. */
struct bench_target {
	struct chain *chain; /* in process, or NULL */
	int fd;              /* a file served over FUSE, or -1 */
	uint64_t size;
};

/* A disk under test: its figures and the chain they are read through. */
struct bench_disk_state {
	struct bench_disk fig;
	struct chain *chain; /* open for reading, counting */
	struct vd_countio *count;
};

/* ---- bench_run.c ---- */
/* Set by bench_run_interrupt: workloads end with -EINTR. */
extern volatile sig_atomic_t bench_run_stop;

/* ---- bench_work.c ---- */
/* Run one workload; fills r's logical figures and latencies. */
int bench_work_run(const struct bench_target *t, const struct bench_opts *o,
		   const struct bench_trace *trace, struct bench_result *r);
/* Parse a trace file ("OFFSET LENGTH op" lines) for a disk of capacity. */
int bench_work_trace_load(const char *path, uint64_t capacity, struct bench_trace *out);

/* ---- bench_disk.c ---- */
int bench_disk_open(struct bench_disk_state *d, const char *path);
void bench_disk_close(struct bench_disk_state *d);
/* Read every layer file once so the page cache is warm. */
void bench_disk_warm(const struct bench_disk_state *d);
/* Zero the counters before a workload; fold them into r after it. */
void bench_disk_count_begin(struct bench_disk_state *d);
void bench_disk_count_end(struct bench_disk_state *d, struct bench_result *r);
/* The serving core's throw-away delta over the disk's top, made under
 * tmpdir (NULL: $TMPDIR or /tmp); *chain writes into it, every read going
 * through io.  The top itself is never opened for writing.  Close with
 * chain_server_close(*server) (also after a failure). */
int bench_disk_scratch_open(const struct bench_disk_state *d, const char *tmpdir,
			    const struct vd_io *io, struct chain_server **server,
			    struct chain **chain);

/* ---- bench_synth.c ---- */
/* Build (or reuse) a chain of max(depths) layers in dir; tops[i] is the
 * top of the chain of depth depths[i] (malloc'd). */
int bench_synth_build(const struct bench_opts *o, const char *dir, char **tops);
/* Remove a temporary folder of synthetic chains (its files, then it). */
void bench_synth_remove(const char *dir);

/* ---- bench_peer.c ---- */
/* The servers, k < bench_nr_peers, in the order a run alternates them. */
#define BENCH_PEER_MAX 8
struct bench_peer;
extern const unsigned bench_nr_peers;
const char *bench_peer_system(unsigned k);
const char *bench_peer_access(unsigned k);
/* o->systems selects server k. */
bool bench_peer_wanted(unsigned k, const struct bench_opts *o);
/* Server k is not installed: *out says what is missing (true). */
bool bench_peer_missing(unsigned k, const struct bench_opts *o, struct bench_missing *out);
/* What server k's throughput is set against (bench_result.vs_system),
 * runs[i] telling whether server i runs. */
const char *bench_peer_vs(unsigned k, const bool *runs);
/* Serve top with server k, a child process in a folder under o->tmpdir. */
int bench_peer_start(unsigned k, const char *top, unsigned depth,
		     const struct bench_opts *o, struct bench_peer **out);
const char *bench_peer_file(const struct bench_peer *p);
/* /proc/PID/io of the serving process: read syscalls and bytes. */
int bench_peer_io(const struct bench_peer *p, uint64_t *syscr, uint64_t *rchar);
void bench_peer_stop(struct bench_peer *p); /* NULL is a no-op */

#endif
