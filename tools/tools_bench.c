/* tools — `vdelta bench`: what reading a chain costs (top layer, over
 * chain.h).
 *
 * Owns: the options, the plan of a run and its order.  For every disk (the
 * DISKs given, or the synthetic chains of --depths) the chain is opened
 * read-only through the counting io and its files are read once to warm the
 * page cache; then every workload runs on vdelta in process and, with
 * --peers, right after on each peer serving the same top, so the systems
 * alternate under the same load.  Write workloads run on a throw-away delta
 * over the top (tools_bench_disk.c); the disk's own files are only read.
 * See docs/benchmarks.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "tools_bench.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_bench;

enum {
	OPT_SYNTH = 256, OPT_DEPTHS, OPT_SIZE, OPT_CHURN, OPT_GRAIN, OPT_FILL, OPT_DIR,
	OPT_THREADS, OPT_OPS, OPT_SEQ, OPT_TRACE, OPT_WRITE, OPT_WRITE_OPS, OPT_SEED,
	OPT_PEERS, OPT_FUSE, OPT_JSON, OPT_CSV, OPT_PLOT, OPT_TMPDIR,
};

static const struct option opts[] = {
	{"synthetic", no_argument, NULL, OPT_SYNTH},
	{"depths", required_argument, NULL, OPT_DEPTHS},
	{"size", required_argument, NULL, OPT_SIZE},
	{"churn", required_argument, NULL, OPT_CHURN},
	{"grain", required_argument, NULL, OPT_GRAIN},
	{"fill", required_argument, NULL, OPT_FILL},
	{"dir", required_argument, NULL, OPT_DIR},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"ops", required_argument, NULL, OPT_OPS},
	{"seq-bytes", required_argument, NULL, OPT_SEQ},
	{"trace", required_argument, NULL, OPT_TRACE},
	{"write", no_argument, NULL, OPT_WRITE},
	{"write-ops", required_argument, NULL, OPT_WRITE_OPS},
	{"seed", required_argument, NULL, OPT_SEED},
	{"peers", no_argument, NULL, OPT_PEERS},
	{"fuse", no_argument, NULL, OPT_FUSE},
	{"json", no_argument, NULL, OPT_JSON},
	{"csv", no_argument, NULL, OPT_CSV},
	{"plot", required_argument, NULL, OPT_PLOT},
	{"tmpdir", required_argument, NULL, OPT_TMPDIR},
	{"quiet", no_argument, NULL, 'q'},
	{NULL, 0, NULL, 0},
};

/* "1,4,8" into out (values 1..max); -EINVAL on anything else. */
static int parse_list(const char *s, unsigned *out, unsigned *nr, unsigned cap, unsigned max)
{
	char *end;

	*nr = 0;
	do {
		unsigned long v = strtoul(s, &end, 10);
		if (end == s || v < 1 || v > max || *nr == cap)
			return -EINVAL;
		out[(*nr)++] = (unsigned)v;
		s = end + 1;
	} while (*end == ',');
	return *end ? -EINVAL : 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_pct(const char *s, unsigned *out)
{
	uint64_t v = 0;
	int err = parse_u64(s, 0, 100, &v);

	*out = (unsigned)v;
	return err;
}

static int parse_one(struct bench_opts *o, int c, const char *arg)
{
	switch (c) {
	case OPT_SYNTH: o->synthetic = true; return 0;
	case OPT_DEPTHS:
		return parse_list(arg, o->depths, &o->nr_depths, BENCH_MAX_DEPTHS,
				  CHAIN_MAX_DEPTH);
	case OPT_SIZE: return vd_parse_size(arg, &o->size);
	case OPT_CHURN: return parse_pct(arg, &o->churn_pct);
	case OPT_GRAIN: return vd_parse_size(arg, &o->grain);
	case OPT_FILL: return parse_pct(arg, &o->fill_pct);
	case OPT_DIR: o->dir = arg; return 0;
	case OPT_THREADS:
		return parse_list(arg, o->threads, &o->nr_threads, 8, BENCH_MAX_THREADS);
	case OPT_OPS: return parse_u64(arg, 1, 1u << 30, &o->rand_ops);
	case OPT_SEQ: return vd_parse_size(arg, &o->seq_bytes);
	case OPT_TRACE: o->trace_path = arg; return 0;
	case OPT_WRITE: o->write = true; return 0;
	case OPT_WRITE_OPS: return parse_u64(arg, 1, 1u << 24, &o->write_ops);
	case OPT_SEED: return parse_u64(arg, 0, UINT64_MAX >> 1, &o->seed);
	case OPT_PEERS: o->peers = true; return 0;
	case OPT_FUSE: o->fuse = true; return 0;
	case OPT_JSON: o->json = true; return 0;
	case OPT_CSV: o->csv = true; return 0;
	case OPT_PLOT: o->plot = arg; return 0;
	case OPT_TMPDIR: o->tmpdir = arg; return 0;
	case 'q': o->quiet = true; return 0;
	default: return -ENOTSUP;
	}
}

static void opts_default(struct bench_opts *o)
{
	const char *tmp = getenv("TMPDIR");

	*o = (struct bench_opts){ .size = 4ull << 30, .grain = 65536, .churn_pct = 3,
				  .fill_pct = 100, .rand_ops = 20000, .write_ops = 500,
				  .seed = 1, .tmpdir = tmp && *tmp ? tmp : "/tmp" };
	o->depths[0] = 1;
	o->depths[1] = 8;
	o->depths[2] = 32;
	o->nr_depths = 3;
	o->threads[0] = 1;
	o->threads[1] = 2;
	o->nr_threads = 2;
}

static int opts_check(const struct bench_opts *o, int nr_disks)
{
	const struct tools_cmd *cmd = &tools_cmd_bench;

	if (o->synthetic == (nr_disks > 0))
		return tools_usage(cmd, "give a DISK or --synthetic (not both)");
	if (o->json && o->csv)
		return tools_usage(cmd, "--json and --csv are exclusive");
	if (!vd_is_pow2(o->grain) || o->grain < 4096 || o->grain > (16u << 20) ||
	    !o->size || o->size % o->grain)
		return tools_usage(cmd, "--grain must be a power of two in 4K..16M dividing --size");
	return nr_disks > BENCH_MAX_DEPTHS ? tools_usage(cmd, "too many DISKs") : TOOLS_OK;
}

static int parse_args(int argc, char **argv, struct bench_opts *o)
{
	int c;

	opts_default(o);
	while ((c = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
		if (c == '?')
			return tools_usage(&tools_cmd_bench, NULL);
		if (parse_one(o, c, optarg))
			return tools_usage(&tools_cmd_bench, "%s: bad value '%s'",
					   argv[optind - 1], optarg ? optarg : "");
	}
	return opts_check(o, argc - optind);
}

/* ---- one workload on each system ------------------------------------------------ */

static void progress(const struct bench_run *b, const struct bench_result *r)
{
	if (b->progress)
		fprintf(stderr, "\rbench: depth %u: %-10s %-20s x%u ...   ",
			b->disks[r->disk].depth, r->system, bench_pattern_name(r->pattern),
			r->threads);
}

static struct bench_result *result_new(struct bench_run *b, const char *system,
				       unsigned disk, enum bench_pattern p, unsigned threads)
{
	struct bench_result *r;

	if (b->nr_results == BENCH_MAX_RESULTS)
		return NULL;
	r = &b->results[b->nr_results++];
	*r = (struct bench_result){ .system = system, .disk = disk, .pattern = p,
				    .threads = threads };
	progress(b, r);
	return r;
}

static int run_vdelta(struct bench_run *b, unsigned disk, enum bench_pattern p,
		      unsigned threads)
{
	struct bench_disk *d = &b->disks[disk];
	struct bench_target t = { .chain = d->chain, .fd = -1, .size = d->capacity };
	struct bench_result *r = result_new(b, "vdelta", disk, p, threads);
	int err;

	if (!r)
		return -E2BIG;
	bench_disk_count_begin(d);
	err = bench_run_workload(&t, &b->o, &b->trace, r);
	bench_disk_count_end(d, r);
	return err ? tools_fail(d->path, err), err : 0;
}

static int run_peer(struct bench_run *b, unsigned disk, struct bench_peer *peer,
		    const char *name, enum bench_pattern p, unsigned threads)
{
	struct bench_target t = { .fd = -1, .size = b->disks[disk].capacity };
	struct bench_result *r = result_new(b, name, disk, p, threads);
	uint64_t cr0 = 0, ch0 = 0, cr1 = 0, ch1 = 0;
	int err;

	if (!r)
		return -E2BIG;
	t.fd = open(bench_peer_file(peer), O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (t.fd < 0)
		t.fd = open(bench_peer_file(peer), O_RDONLY | O_CLOEXEC);
	if (t.fd < 0)
		return tools_fail(bench_peer_file(peer), -errno), -EIO;
	bench_peer_io(peer, &cr0, &ch0);
	err = bench_run_workload(&t, &b->o, &b->trace, r);
	r->counted = !bench_peer_io(peer, &cr1, &ch1);
	r->data_reads = cr1 - cr0;
	r->data_bytes = ch1 - ch0;
	close(t.fd);
	return err ? tools_fail(bench_peer_file(peer), err), err : 0;
}

/* The write workload on a throw-away delta over the top. */
static int run_write(struct bench_run *b, unsigned disk, enum bench_pattern p)
{
	struct bench_disk *d = &b->disks[disk];
	struct bench_result *r = result_new(b, "vdelta", disk, p, 1);
	struct bench_target t = { .fd = -1, .size = d->capacity };
	struct vd_countio *ci = NULL;
	struct vd_count_stats s;
	char *dir = NULL, *delta = NULL;
	int err = r ? bench_disk_scratch(d, b->o.tmpdir, &dir, &delta) : -E2BIG;

	if (!err && !(err = vd_countio_create(NULL, &ci)))
		err = chain_open(delta, CHAIN_OPEN_RDWR, vd_countio_io(ci), &t.chain);
	if (!err) {
		vd_countio_reset(ci);
		err = bench_run_workload(&t, &b->o, &b->trace, r);
		vd_countio_total(ci, &s);
		r->counted = true;
		r->meta_reads = s.meta_reads, r->meta_bytes = s.meta_bytes;
		r->data_reads = s.data_reads, r->data_bytes = s.data_bytes;
	}
	err = chain_close(t.chain) ?: err;
	vd_countio_destroy(ci);
	if (dir)
		bench_disk_scratch_remove(dir);
	free(dir);
	free(delta);
	return err ? tools_fail(d->path, err), err : 0;
}

/* ---- a disk ----------------------------------------------------------------------- */

static int run_pattern(struct bench_run *b, unsigned disk, struct bench_peer **peers,
		       enum bench_pattern p, unsigned threads)
{
	int err = run_vdelta(b, disk, p, threads);

	for (unsigned k = 0; !err && k < bench_nr_peers; k++)
		if (peers[k])
			err = run_peer(b, disk, peers[k], bench_peer_names[k], p, threads);
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
	struct bench_disk *d = &b->disks[disk];
	struct bench_peer *peers[3] = {NULL, NULL, NULL};
	int err = 0;

	bench_disk_warm(d);
	for (unsigned k = 0; k < bench_nr_peers && !err; k++)
		if ((k ? b->o.peers : b->o.fuse) && bench_peer_available(k))
			err = bench_peer_start(k, d->path, d->depth, b->o.tmpdir, &peers[k]);
	if (!err)
		err = run_reads(b, disk, peers);
	if (!err && b->o.trace_path && b->trace.has_writes)
		err = run_write(b, disk, BENCH_TRACE);
	if (!err && b->o.write)
		err = run_write(b, disk, BENCH_WRITE);
	for (unsigned k = 0; k < bench_nr_peers; k++)
		bench_peer_stop(peers[k]);
	return err;
}

static int open_disks(struct bench_run *b, char **paths, unsigned nr)
{
	int err = 0;

	for (unsigned i = 0; i < nr && !err; i++) {
		err = bench_disk_open(&b->disks[i], paths[i]);
		b->nr_disks = i + 1;
	}
	if (!err && b->o.trace_path)
		err = bench_run_trace_load(b->o.trace_path, b->disks[0].capacity, &b->trace);
	return err;
}

static int output(struct bench_run *b)
{
	if (b->progress)
		fputs("\r\033[K", stderr);
	if (b->o.json)
		bench_out_json(b, stdout);
	else if (b->o.csv)
		bench_out_csv(b, stdout);
	else
		bench_out_table(b, stdout);
	if (b->o.plot && bench_out_plot(b, b->o.plot))
		return TOOLS_ERR;
	return fflush(stdout) ? tools_fail("stdout", -errno) : TOOLS_OK;
}

static int bench_main(struct bench_run *b, char **paths, unsigned nr)
{
	int err = open_disks(b, paths, nr);

	for (unsigned i = 0; !err && i < b->nr_disks; i++)
		err = run_disk(b, i);
	if (err)
		return tools_fail(b->nr_disks ? b->disks[b->nr_disks - 1].path : "bench", err);
	return output(b);
}

/* Synthetic chains: in --dir (kept) or in a temp folder (removed). */
static int bench_synthetic(struct bench_run *b)
{
	char tmpl[PATH_MAX], *tops[BENCH_MAX_DEPTHS] = {NULL};
	const char *dir = b->o.dir;
	int ret;

	snprintf(tmpl, sizeof tmpl, "%s/vdelta-bench-synth-XXXXXX", b->o.tmpdir);
	if (!dir && !(dir = mkdtemp(tmpl)))
		return tools_fail(tmpl, -errno);
	ret = bench_synth_build(&b->o, dir, tops);
	ret = ret ? tools_fail(dir, ret) : bench_main(b, tops, b->o.nr_depths);
	for (unsigned i = 0; i < b->nr_disks; i++)
		bench_disk_close(&b->disks[i]);
	b->nr_disks = 0;
	for (unsigned i = 0; i < b->o.nr_depths; i++)
		free(tops[i]);
	if (!b->o.dir)
		bench_disk_scratch_remove(dir);
	return ret;
}

static void on_signal(int sig)
{
	(void)sig;
	bench_run_stop = 1;
}

/* Ctrl-C or SIGTERM: finish the current request, stop the servers we
 * started, remove the scratch files, then exit 1. */
static void catch_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

static int bench_run(int argc, char **argv)
{
	struct bench_run *b = calloc(1, sizeof *b);
	int ret;

	if (!b)
		return tools_fail("bench", -ENOMEM);
	catch_signals();
	ret = parse_args(argc, argv, &b->o);
	b->progress = !b->o.quiet && isatty(STDERR_FILENO);
	if (ret == TOOLS_OK && b->o.synthetic) {
		ret = bench_synthetic(b);
	} else if (ret == TOOLS_OK) {
		ret = bench_main(b, argv + optind, (unsigned)(argc - optind));
		for (unsigned i = 0; i < b->nr_disks; i++)
			bench_disk_close(&b->disks[i]);
	}
	free(b->trace.ops);
	free(b);
	return ret;
}

const struct tools_cmd tools_cmd_bench = {
	.name = "bench",
	TOOLS_PAGE(bench),
	.run = bench_run,
};
