/* bench — a run: the disks under test, the plan and its order (bench
 * layer, over chain.h).
 *
 * Owns: the order of a run and its results.  For every disk (the caller's,
 * or the synthetic chains of o->depths) the chain is opened read-only
 * through the counting io and its files are read once to warm the page
 * cache; then every workload runs on vdelta in process and right after on
 * each server serving the same top (bench_peer.c), so the systems
 * alternate under the same load.  Write workloads run on a throw-away
 * delta over the top (bench_disk.c); the disk's own files are only read.
 * Synthetic chains are built in o->dir (kept) or in a temp folder under
 * o->tmpdir, removed by bench_run_destroy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench_int.h"

volatile sig_atomic_t bench_run_stop;

/* A system as results name it. */
struct system {
	const char *name, *label, *access, *vs;
};

static const struct system in_process = { "vdelta", "vdelta (in process)", "in-process",
					  NULL };

struct bench_run {
	struct bench_opts o;
	bool peer_runs[BENCH_PEER_MAX];  /* wanted and installed */
	const char *peer_vs[BENCH_PEER_MAX]; /* what each is set against */
	struct bench_missing missing[BENCH_PEER_MAX];
	unsigned nr_missing;
	struct bench_trace trace;
	struct bench_disk_state disks[BENCH_MAX_DEPTHS];
	unsigned nr_disks;
	struct bench_result results[BENCH_MAX_RESULTS];
	unsigned nr_results;
	char *synth_tmp;                 /* a temp folder of synthetic chains */
	char *tops[BENCH_MAX_DEPTHS];    /* the synthetic chains' tops */
};

void bench_run_defaults(struct bench_opts *o)
{
	const char *tmp = getenv("TMPDIR");

	*o = (struct bench_opts){ .size = 4ull << 30, .grain = 65536, .churn_pct = 3,
				  .fill_pct = 100, .rand_ops = 20000, .write_ops = 500,
				  .seed = 1, .tmpdir = tmp && *tmp ? tmp : "/tmp",
				  .vdelta_prog = "vdelta" };
	o->depths[0] = 1;
	o->depths[1] = 8;
	o->depths[2] = 32;
	o->nr_depths = 3;
	o->threads[0] = 1;
	o->threads[1] = 2;
	o->nr_threads = 2;
}

void bench_run_interrupt(void)
{
	bench_run_stop = 1;
}

/* ---- one workload on each system ------------------------------------------------ */

static struct bench_result *result_new(struct bench_run *b, const struct system *sys,
				       unsigned disk, enum bench_pattern p, unsigned threads)
{
	const struct bench_hooks *h = &b->o.hooks;
	struct bench_result *r;

	if (b->nr_results == BENCH_MAX_RESULTS) {
		vd_err("more than %u results in one run: fewer disks, threads or systems",
		       BENCH_MAX_RESULTS);
		return NULL;
	}
	r = &b->results[b->nr_results++];
	*r = (struct bench_result){ .system = sys->name, .label = sys->label,
				    .access = sys->access, .vs_system = sys->vs, .disk = disk,
				    .pattern = p, .threads = threads };
	if (h->workload)
		h->workload(h->arg, &b->disks[disk].fig, r);
	return r;
}

static int run_vdelta(struct bench_run *b, unsigned disk, enum bench_pattern p,
		      unsigned threads)
{
	struct bench_disk_state *d = &b->disks[disk];
	struct bench_target t = { .chain = d->chain, .fd = -1, .size = d->fig.capacity };
	struct bench_result *r = result_new(b, &in_process, disk, p, threads);
	int err;

	if (!r)
		return -E2BIG;
	bench_disk_count_begin(d);
	err = bench_work_run(&t, &b->o, &b->trace, r);
	bench_disk_count_end(d, r);
	return err;
}

static int run_peer(struct bench_run *b, unsigned disk, struct bench_peer *peer,
		    unsigned k, enum bench_pattern p, unsigned threads)
{
	const struct system sys = { bench_peer_system(k), bench_peer_system(k),
				    bench_peer_access(k), b->peer_vs[k] };
	struct bench_target t = { .fd = -1, .size = b->disks[disk].fig.capacity };
	struct bench_result *r = result_new(b, &sys, disk, p, threads);
	uint64_t cr0 = 0, ch0 = 0, cr1 = 0, ch1 = 0;
	int err;

	if (!r)
		return -E2BIG;
	t.fd = open(bench_peer_file(peer), O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (t.fd < 0)
		t.fd = open(bench_peer_file(peer), O_RDONLY | O_CLOEXEC);
	if (t.fd < 0) {
		vd_err("%s: %s", bench_peer_file(peer), strerror(errno));
		return -EIO;
	}
	bench_peer_io(peer, &cr0, &ch0);
	err = bench_work_run(&t, &b->o, &b->trace, r);
	r->counted = !bench_peer_io(peer, &cr1, &ch1);
	r->data_reads = cr1 - cr0;
	r->data_bytes = ch1 - ch0;
	close(t.fd);
	return err;
}

/* The write workload on the serving core's throw-away delta over the top,
 * every read of the run counted. */
static int run_write(struct bench_run *b, unsigned disk, enum bench_pattern p)
{
	struct bench_disk_state *d = &b->disks[disk];
	struct bench_result *r = result_new(b, &in_process, disk, p, 1);
	struct bench_target t = { .fd = -1, .size = d->fig.capacity };
	struct chain_server *s = NULL;
	struct vd_countio *ci = NULL;
	struct vd_count_stats st;
	int err = r ? vd_countio_create(NULL, &ci) : -E2BIG;

	if (!err)
		err = bench_disk_scratch_open(d, b->o.tmpdir, vd_countio_io(ci), &s, &t.chain);
	if (!err) {
		vd_countio_reset(ci);
		err = bench_work_run(&t, &b->o, &b->trace, r);
		vd_countio_total(ci, &st);
		r->counted = true;
		r->meta_reads = st.meta_reads, r->meta_bytes = st.meta_bytes;
		r->data_reads = st.data_reads, r->data_bytes = st.data_bytes;
	}
	err = chain_server_close(s) ?: err;
	vd_countio_destroy(ci);
	return err;
}

/* ---- a disk ----------------------------------------------------------------------- */

static int run_pattern(struct bench_run *b, unsigned disk, struct bench_peer **peers,
		       enum bench_pattern p, unsigned threads)
{
	int err = run_vdelta(b, disk, p, threads);

	for (unsigned k = 0; !err && k < bench_nr_peers; k++)
		if (peers[k])
			err = run_peer(b, disk, peers[k], k, p, threads);
	return err;
}

static int run_reads(struct bench_run *b, unsigned disk, struct bench_peer **peers)
{
	int err = run_pattern(b, disk, peers, BENCH_SEQ, 1);

	for (unsigned i = 0; !err && i < b->o.nr_threads; i++)
		err = run_pattern(b, disk, peers, BENCH_RAND, b->o.threads[i]);
	if (!err && b->o.trace_path && !b->trace.has_writes)
		err = run_pattern(b, disk, peers, BENCH_TRACE, 1);
	return err;
}

static int run_disk(struct bench_run *b, unsigned disk)
{
	struct bench_disk_state *d = &b->disks[disk];
	struct bench_peer *peers[BENCH_PEER_MAX] = { NULL };
	int err = 0;

	bench_disk_warm(d);
	for (unsigned k = 0; k < bench_nr_peers && !err; k++)
		if (b->peer_runs[k])
			err = bench_peer_start(k, d->fig.path, d->fig.depth, &b->o, &peers[k]);
	if (!err)
		err = run_reads(b, disk, peers);
	if (!err && b->o.trace_path && b->trace.has_writes)
		err = run_write(b, disk, BENCH_TRACE);
	if (!err && b->o.write)
		err = run_write(b, disk, BENCH_WRITE);
	for (unsigned k = 0; k < bench_nr_peers; k++)
		bench_peer_stop(peers[k]);
	if (err == -EINTR && bench_run_stop)
		vd_err("%s: interrupted", d->fig.path);
	return err;
}

static int open_disks(struct bench_run *b, char *const *paths, unsigned nr)
{
	int err = nr > BENCH_MAX_DEPTHS ? -E2BIG : 0;

	for (unsigned i = 0; i < nr && !err; i++) {
		err = bench_disk_open(&b->disks[i], paths[i]);
		b->nr_disks = i + 1;
	}
	if (!err && b->o.trace_path)
		err = bench_work_trace_load(b->o.trace_path, b->disks[0].fig.capacity,
					    &b->trace);
	return err;
}

/* Synthetic chains: in o->dir (kept) or in a temp folder (removed). */
static int synth_build(struct bench_run *b)
{
	char tmpl[PATH_MAX];
	const char *dir = b->o.dir;

	if (!dir) {
		snprintf(tmpl, sizeof tmpl, "%s/vdelta-bench-synth-XXXXXX", b->o.tmpdir);
		if (!mkdtemp(tmpl)) {
			vd_err("%s: %s", tmpl, strerror(errno));
			return -EIO;
		}
		if (!(b->synth_tmp = vd_strdup(tmpl))) {
			bench_synth_remove(tmpl);
			return -ENOMEM;
		}
		dir = b->synth_tmp;
	}
	return bench_synth_build(&b->o, dir, b->tops);
}

/* Which servers run; the ones wanted and not installed are said once. */
static void plan_peers(struct bench_run *b)
{
	for (unsigned k = 0; k < bench_nr_peers; k++) {
		struct bench_missing *m = &b->missing[b->nr_missing];
		if (!bench_peer_wanted(k, &b->o))
			continue;
		b->peer_runs[k] = !bench_peer_missing(k, &b->o, m);
		if (b->peer_runs[k])
			continue;
		b->nr_missing++;
		if (m->package)
			vd_warn("%s not run: %s is not installed (Debian package %s)",
				m->system, m->program, m->package);
		else
			vd_warn("%s not run: %s is not there", m->system, m->program);
	}
	for (unsigned k = 0; k < bench_nr_peers; k++)
		b->peer_vs[k] = bench_peer_vs(k, b->peer_runs);
}

int bench_run_create(const struct bench_opts *o, struct bench_run **out)
{
	struct bench_run *b = calloc(1, sizeof *b);

	if (!b)
		return -ENOMEM;
	b->o = *o;
	plan_peers(b);
	*out = b;
	return 0;
}

int bench_run_measure(struct bench_run *b, char *const *paths, unsigned nr)
{
	int err = 0;

	if (b->o.synthetic) {
		err = synth_build(b);
		paths = b->tops;
		nr = b->o.nr_depths;
	}
	if (!err)
		err = open_disks(b, paths, nr);
	for (unsigned i = 0; !err && i < b->nr_disks; i++)
		err = run_disk(b, i);
	return err;
}

unsigned bench_run_nr_disks(const struct bench_run *b) { return b->nr_disks; }
unsigned bench_run_nr_results(const struct bench_run *b) { return b->nr_results; }

const struct bench_disk *bench_run_disk(const struct bench_run *b, unsigned i)
{
	return i < b->nr_disks ? &b->disks[i].fig : NULL;
}

const struct bench_result *bench_run_result(const struct bench_run *b, unsigned i)
{
	return i < b->nr_results ? &b->results[i] : NULL;
}

unsigned bench_run_nr_missing(const struct bench_run *b) { return b->nr_missing; }

const struct bench_missing *bench_run_missing(const struct bench_run *b, unsigned i)
{
	return i < b->nr_missing ? &b->missing[i] : NULL;
}

void bench_run_destroy(struct bench_run *b)
{
	if (!b)
		return;
	for (unsigned i = 0; i < b->nr_disks; i++)
		bench_disk_close(&b->disks[i]);
	for (unsigned i = 0; i < BENCH_MAX_DEPTHS; i++)
		free(b->tops[i]);
	if (b->synth_tmp)
		bench_synth_remove(b->synth_tmp);
	free(b->synth_tmp);
	free(b->trace.ops);
	free(b);
}
