/* bench — the bench engine (layer 4, beside fuse/, over group.h and chain.h): what
 * reading a chain costs, measured in process and through the servers that
 * serve the same chain, side by side in one run.  Public header of bench/;
 * `vdelta bench` (tools/tools_bench*.c) parses the options and prints the
 * figures, this layer measures them.
 *
 * Owns: a run (the disks under test, the order of the workloads on each
 * system, the results), the workloads (bench_work.c), the disk under test
 * read through the counting io (bench_disk.c), synthetic chains
 * (bench_synth.c) and the servers started beside vdelta (bench_peer.c).
 * Uses only chain.h, vmdk.h and common.h.
 *
 * MODEL: a run measures disks (tops given by the caller, or the synthetic
 * chains of o->depths it builds) on systems.  A system is one way to read
 * a disk: vdelta in process (chain_pread through the counting io, every
 * physical read counted per layer, metadata apart from data), or a server
 * the run starts as its child serving the same top (bench_peer.c: one row
 * per system).  For each disk every workload runs on each system in turn,
 * so the systems alternate under the same load; a result is one (system,
 * disk, workload), set against vdelta reached the same way (vs_system).
 * Write workloads run in process on the serving core's throw-away delta
 * over the top (CHAIN_SERVE_NONPERSISTENT, unlinked once open); the disk's
 * own files are only read.
 *
 * UNITS: bytes, nanoseconds (`_ns`), seconds (`seconds`); depths are
 * layers (1: a base alone).
 *
 * MEMORY: one latency (8 bytes) per request of the workload running; the
 * disks and results are fixed arrays in the run (BENCH_MAX_DEPTHS disks,
 * BENCH_MAX_RESULTS results); a trace is 16 bytes per request, at most
 * 16 Mi requests.
 *
 * THREAD MODEL: a run is driven by one thread: bench_run_* calls are not
 * concurrent with each other.  A workload starts its own reader or writer
 * threads (o->threads), which share the disk's chain (chain.h THREAD
 * MODEL) and are joined before it returns.  The hooks are called on the
 * driving thread.  bench_run_interrupt() is async-signal-safe: the running
 * workload stops after its current requests and bench_run_measure returns
 * -EINTR, having stopped its servers (a temporary synthetic folder goes at
 * bench_run_destroy, as always).
 *
 * PROCESSES: a server is our child in a fresh folder under the scratch
 * folder; stopping it unmounts our own mountpoint and waits for our own
 * child, never another.
 *
 * ERRORS: 0 or -errno.  Every failure is reported once, where it is found,
 * through the common log callback (naming the file, the trace line or the
 * server); nothing is printed.  -EINVAL: a trace line that is not
 * "OFFSET LENGTH r|w" or does not fit the disk (file:line named); -E2BIG:
 * more than BENCH_MAX_RESULTS results, or a trace over 16 Mi requests;
 * -EEXIST: a synthetic folder built with other parameters; -ETIMEDOUT /
 * -ECHILD: a server did not come up; -EINTR: interrupted.  A server asked
 * for whose program is not installed is no error: a warning naming the
 * program and its package, and bench_run_missing.
 */
#ifndef VDELTA_BENCH_H
#define VDELTA_BENCH_H

#include "chain.h"

#define BENCH_MAX_DEPTHS 16   /* disks (or synthetic depths) in one run */
#define BENCH_MAX_THREADS 64  /* reader threads of one workload */
#define BENCH_MAX_THREAD_COUNTS 8 /* entries of o->threads */
#define BENCH_MAX_RESULTS 256

enum bench_pattern {
	BENCH_SEQ,   /* sequential 1 MiB reads from offset 0 */
	BENCH_RAND,  /* random 4 KiB reads, 4 KiB aligned, on o->threads */
	BENCH_TRACE, /* a replay of o->trace_path */
	BENCH_WRITE, /* random 4 KiB writes, each flushed */
};

/* "seq-read-1M", "rand-read-4K", "trace", "rand-write-4K-fsync". */
const char *bench_work_pattern_name(enum bench_pattern p);

/* The servers a run starts beside vdelta in process (o->systems): each
 * row of the table in bench_peer.c names the bits that select it. */
enum {
	BENCH_SYS_FUSE = 1u << 0,  /* vdelta-fuse: vdelta mount --ro */
	/* the other programs that serve the same chain (qemu-fuse, vmdkmount),
	 * and vdelta through the same path (vdelta-fuse), so that their figures
	 * compare with vdelta's own through FUSE, not in process */
	BENCH_SYS_PEERS = 1u << 1,
};

/* A server a run wanted and could not start: program is not installed. */
struct bench_missing {
	const char *system;  /* "qemu-fuse" */
	const char *program; /* "qemu-storage-daemon" */
	const char *package; /* the Debian package that brings it */
};

/* Called on the driving thread to show where a run is. */
struct bench_disk;
struct bench_result;
struct bench_hooks {
	/* a synthetic chain is being built: done of total bytes written;
	 * last is set once, on the final call */
	void (*build)(void *arg, uint64_t done, uint64_t total, bool last);
	/* r (system, pattern, threads) starts on disk d */
	void (*workload)(void *arg, const struct bench_disk *d, const struct bench_result *r);
	void *arg;
};

/* What a run measures.  bench_run_defaults fills the defaults; the
 * bounds are the caller's to check (`vdelta bench` does, as usage
 * errors): depths in 1..CHAIN_MAX_DEPTH, threads in 1..BENCH_MAX_THREADS,
 * grain a power of two in 4 KiB..16 MiB dividing size. */
struct bench_opts {
	bool synthetic;         /* build chains of depths[] (else: the caller's disks) */
	bool write;             /* the random write workload too */
	unsigned systems;       /* BENCH_SYS_*: the servers beside vdelta in process */
	const char *vdelta_prog; /* serves vdelta-fuse (default "vdelta" in PATH) */
	const char *trace_path; /* replay this trace (NULL: none) */
	const char *dir;        /* synthetic chains: build (or reuse) and keep here */
	const char *tmpdir;     /* scratch folder: servers, temporary chains */
	unsigned depths[BENCH_MAX_DEPTHS], nr_depths;
	unsigned threads[BENCH_MAX_THREAD_COUNTS], nr_threads;
	uint64_t size, grain;   /* synthetic chains: virtual size, grain */
	unsigned churn_pct;     /* grains each synthetic delta rewrites */
	unsigned fill_pct;      /* grains of the synthetic base holding data */
	uint64_t seq_bytes;     /* sequential reads cover this much (0: all) */
	uint64_t rand_ops, write_ops, seed;
	struct bench_hooks hooks;
};

struct bench_layer_count {
	uint64_t meta_reads, meta_bytes, data_reads, data_bytes;
};

/* The figures of one workload on one system. */
struct bench_result {
	const char *system;    /* "vdelta", "vdelta-fuse", "qemu-fuse", "vmdkmount" */
	const char *label;     /* to show: "vdelta (in process)", else the system */
	const char *access;    /* how it reaches the disk: "in-process", "fuse" */
	/* the system whose throughput this one is set against on the same
	 * disk and workload: vdelta reached the same way (qemu-fuse: vdelta-fuse),
	 * vdelta's own servers against vdelta in process; NULL for vdelta in
	 * process, or when vdelta did not run that way */
	const char *vs_system;
	unsigned disk;         /* index of the run's disk */
	enum bench_pattern pattern;
	unsigned threads;
	uint64_t ops, bytes;   /* logical */
	double seconds;
	uint64_t lat_ns[3];    /* p50, p99, p99.9 */
	/* physical reads: counted by the counting io (vdelta in process,
	 * split metadata/data, per layer) or /proc/PID/io of a server */
	bool counted, per_layer;
	uint64_t meta_reads, meta_bytes, data_reads, data_bytes;
	struct bench_layer_count layers[CHAIN_MAX_DEPTH];
};

/* A disk under test and what is known about it. */
struct bench_disk {
	char *path;            /* the top */
	unsigned depth;
	uint64_t capacity, unit;         /* unit: the merged map's */
	uint64_t open_reads, open_bytes; /* read to open the chain */
	uint64_t scan_reads, scan_bytes; /* read to build the merged map */
	uint64_t map_bytes;              /* merged map, fully built */
	uint64_t file_bytes;             /* storage of every layer now */
	uint64_t data_bytes;             /* bytes of DATA runs of the chain */
	uint64_t layer_file_bytes[CHAIN_MAX_DEPTH];
	char *layer_paths[CHAIN_MAX_DEPTH];
};

struct bench_run;

void bench_run_defaults(struct bench_opts *o);
/* A run of o (copied; its strings must outlive the run). */
int bench_run_create(const struct bench_opts *o, struct bench_run **out);
/* Open the disks (paths[0..nr), or build the synthetic chains when
 * o->synthetic, paths unused) and run every workload on every system.
 * Once; the figures stay readable until destroy, also after a failure
 * (what was measured before it). */
int bench_run_measure(struct bench_run *b, char *const *paths, unsigned nr);
unsigned bench_run_nr_disks(const struct bench_run *b);
const struct bench_disk *bench_run_disk(const struct bench_run *b, unsigned i);
unsigned bench_run_nr_results(const struct bench_run *b);
const struct bench_result *bench_run_result(const struct bench_run *b, unsigned i);
/* The servers o->systems asked for that are not installed: known (and
 * each reported once, as a warning) from bench_run_create on; the run
 * goes on without them. */
unsigned bench_run_nr_missing(const struct bench_run *b);
const struct bench_missing *bench_run_missing(const struct bench_run *b, unsigned i);
/* Close the disks, remove a temporary synthetic folder, free b.  NULL is
 * a no-op. */
void bench_run_destroy(struct bench_run *b);
/* From a signal handler: stop the running workload (see THREAD MODEL). */
void bench_run_interrupt(void);

#endif
