/* tools — private header of `vdelta bench` (top layer); included only by
 * tools/tools_bench*.c.
 *
 * Owns the shapes shared by the bench files:
 *   tools_bench.c        options, the run plan, orchestration
 *   tools_bench_run.c    workloads (sequential, random, trace, write) over a
 *                        target, latency percentiles
 *   tools_bench_disk.c   a disk under test: the chain through the counting
 *                        io, per-layer counts, open cost, map memory,
 *                        consolidate prediction, the throw-away delta
 *   tools_bench_synth.c  synthetic chains built with the library
 *   tools_bench_peer.c   peers (qemu-storage-daemon FUSE export, vmdkmount)
 *   tools_bench_out.c    table, JSON, CSV and gnuplot output
 *
 * Units: bytes, nanoseconds (`_ns`), seconds (`seconds`).
 */
#ifndef VDELTA_TOOLS_BENCH_H
#define VDELTA_TOOLS_BENCH_H

#include <signal.h>

#include "group.h"
#include "tools.h"

#define BENCH_MAX_DEPTHS 16
#define BENCH_MAX_THREADS 64
#define BENCH_MAX_RESULTS 256

enum bench_pattern { BENCH_SEQ, BENCH_RAND, BENCH_TRACE, BENCH_WRITE };

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

struct bench_layer_count {
	uint64_t meta_reads, meta_bytes, data_reads, data_bytes;
};

/* The figures of one workload on one system. */
struct bench_result {
	const char *system;    /* "vdelta", "vdelta-fuse", "qemu-fuse", "vmdkmount" */
	unsigned disk;         /* index into the run's disks */
	enum bench_pattern pattern;
	unsigned threads;
	uint32_t block;        /* request size (0: trace) */
	uint64_t ops, bytes;   /* logical */
	double seconds;
	uint64_t lat_ns[3];    /* p50, p99, p99.9 */
	/* physical reads: counted by the counting io (vdelta in process,
	 * split metadata/data, per layer) or /proc/PID/io of a daemon */
	bool counted, per_layer;
	uint64_t meta_reads, meta_bytes, data_reads, data_bytes;
	struct bench_layer_count layers[CHAIN_MAX_DEPTH];
};

/* A disk under test and what is known about it. */
struct bench_disk {
	char *path;            /* the top */
	unsigned depth;
	uint64_t capacity, unit;
	uint64_t open_reads, open_bytes; /* read to open the chain */
	uint64_t scan_reads, scan_bytes; /* read to build the merged map */
	uint64_t map_bytes;              /* merged map, fully built */
	uint64_t file_bytes;             /* storage of every layer now */
	uint64_t data_bytes;             /* bytes of DATA runs of the chain */
	uint64_t layer_file_bytes[CHAIN_MAX_DEPTH];
	char *layer_paths[CHAIN_MAX_DEPTH];
	struct chain *chain;             /* open for reading, counting */
	struct vd_countio *count;
};

struct bench_opts {
	bool json, csv, synthetic, peers, fuse, write, keep, quiet;
	const char *plot, *trace_path, *dir, *tmpdir;
	unsigned depths[BENCH_MAX_DEPTHS], nr_depths;
	unsigned threads[BENCH_MAX_THREADS], nr_threads;
	uint64_t size, grain, seq_bytes;
	unsigned churn_pct, fill_pct;
	uint64_t rand_ops, write_ops, seed;
	unsigned repeat;
};

struct bench_run {
	struct bench_opts o;
	struct bench_trace trace;
	struct bench_disk disks[BENCH_MAX_DEPTHS];
	unsigned nr_disks;
	struct bench_result results[BENCH_MAX_RESULTS];
	unsigned nr_results;
	bool progress;
};

/* ---- tools_bench_run.c ---- */
/* Set from a SIGINT/SIGTERM handler: workloads end with -EINTR, so the
 * servers and scratch files are cleaned up on the normal path. */
extern volatile sig_atomic_t bench_run_stop;
const char *bench_pattern_name(enum bench_pattern p);
/* Run one workload; fills r's logical figures and latencies. */
int bench_run_workload(const struct bench_target *t, const struct bench_opts *o,
		       const struct bench_trace *trace, struct bench_result *r);
/* Parse a trace file (offset length op lines). */
int bench_run_trace_load(const char *path, uint64_t capacity, struct bench_trace *out);

/* ---- tools_bench_disk.c ---- */
int bench_disk_open(struct bench_disk *d, const char *path);
void bench_disk_close(struct bench_disk *d);
/* Read every layer file once so the page cache is warm. */
void bench_disk_warm(const struct bench_disk *d);
/* Zero the counters before a workload; fold them into r after it. */
void bench_disk_count_begin(struct bench_disk *d);
void bench_disk_count_end(struct bench_disk *d, struct bench_result *r);
/* A throw-away delta over the disk's top in a new folder under tmpdir:
 * *dir_out (malloc'd) holds it; the top itself is never opened for
 * writing. Close with chain_close, remove with bench_disk_scratch_remove. */
int bench_disk_scratch(const struct bench_disk *d, const char *tmpdir,
		       char **dir_out, char **delta_out);
void bench_disk_scratch_remove(const char *dir);

/* ---- tools_bench_synth.c ---- */
/* Build (or reuse) a chain of max(depths) layers in dir; tops[i] is the
 * top of the chain of depth depths[i] (malloc'd). */
int bench_synth_build(const struct bench_opts *o, const char *dir, char **tops);

/* ---- tools_bench_peer.c ---- */
struct bench_peer;
/* Names of the FUSE servers that may run: "vdelta-fuse" (--fuse), then the
 * peers "qemu-fuse" and "vmdkmount" (--peers). */
extern const char *const bench_peer_names[];
extern const unsigned bench_nr_peers;
bool bench_peer_available(unsigned peer);
/* Serve top with peer `peer`; *out NULL and 0 when it is not installed. */
int bench_peer_start(unsigned peer, const char *top, unsigned depth, const char *tmpdir,
		     struct bench_peer **out);
const char *bench_peer_file(const struct bench_peer *p);
/* /proc/PID/io of the serving process: read syscalls and bytes. */
int bench_peer_io(const struct bench_peer *p, uint64_t *syscr, uint64_t *rchar);
void bench_peer_stop(struct bench_peer *p);

/* ---- tools_bench_out.c ---- */
void bench_out_table(const struct bench_run *b, FILE *f);
void bench_out_json(const struct bench_run *b, FILE *f);
void bench_out_csv(const struct bench_run *b, FILE *f);
int bench_out_plot(const struct bench_run *b, const char *path);
double bench_out_amp(const struct bench_result *r, bool bytes);

#endif
