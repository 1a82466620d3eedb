/* tools — `vdelta bench`: what reading a chain costs (top layer, over
 * bench.h).
 *
 * Owns: the options, the progress line, Ctrl-C, and the choice of output
 * (tools_bench_out.c).  The run itself (disks, workloads, systems and
 * their order) is the bench layer's: bench/bench_run.c.  See
 * docs/benchmarks.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
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

struct bench_cmd {
	struct bench_opts o;
	bool json, csv, quiet, progress;
	const char *plot;
	struct tools_progress build; /* of a synthetic chain */
	bool building;
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

static int parse_one(struct bench_cmd *cmd, int c, const char *arg)
{
	struct bench_opts *o = &cmd->o;

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
		return parse_list(arg, o->threads, &o->nr_threads, BENCH_MAX_THREAD_COUNTS,
				  BENCH_MAX_THREADS);
	case OPT_OPS: return parse_u64(arg, 1, 1u << 30, &o->rand_ops);
	case OPT_SEQ: return vd_parse_size(arg, &o->seq_bytes);
	case OPT_TRACE: o->trace_path = arg; return 0;
	case OPT_WRITE: o->write = true; return 0;
	case OPT_WRITE_OPS: return parse_u64(arg, 1, 1u << 24, &o->write_ops);
	case OPT_SEED: return parse_u64(arg, 0, UINT64_MAX >> 1, &o->seed);
	case OPT_PEERS: o->systems |= BENCH_SYS_PEERS; return 0;
	case OPT_FUSE: o->systems |= BENCH_SYS_FUSE; return 0;
	case OPT_JSON: cmd->json = true; return 0;
	case OPT_CSV: cmd->csv = true; return 0;
	case OPT_PLOT: cmd->plot = arg; return 0;
	case OPT_TMPDIR: o->tmpdir = arg; return 0;
	case 'q': cmd->quiet = true; return 0;
	default: return -ENOTSUP;
	}
}

static int opts_check(const struct bench_cmd *c, int nr_disks)
{
	const struct tools_cmd *cmd = &tools_cmd_bench;
	const struct bench_opts *o = &c->o;

	if (o->synthetic == (nr_disks > 0))
		return tools_usage(cmd, "give a DISK or --synthetic (not both)");
	if (c->json && c->csv)
		return tools_usage(cmd, "--json and --csv are exclusive");
	if (!vd_is_pow2(o->grain) || o->grain < 4096 || o->grain > (16u << 20) ||
	    !o->size || o->size % o->grain)
		return tools_usage(cmd, "--grain must be a power of two in 4K..16M dividing --size");
	return nr_disks > BENCH_MAX_DEPTHS ? tools_usage(cmd, "too many DISKs") : TOOLS_OK;
}

static int parse_args(int argc, char **argv, struct bench_cmd *cmd)
{
	int c;

	bench_run_defaults(&cmd->o);
	cmd->o.vdelta_prog = "/proc/self/exe"; /* vdelta-fuse: this very program */
	while ((c = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
		if (c == '?')
			return tools_usage(&tools_cmd_bench, NULL);
		if (parse_one(cmd, c, optarg))
			return tools_usage(&tools_cmd_bench, "%s: bad value '%s'",
					   argv[optind - 1], optarg ? optarg : "");
	}
	return opts_check(cmd, argc - optind);
}

/* ---- progress ------------------------------------------------------------------ */

static void on_build(void *arg, uint64_t done, uint64_t total, bool last)
{
	struct bench_cmd *cmd = arg;

	if (!cmd->building)
		tools_progress_init(&cmd->build, total, false);
	cmd->building = !last;
	if (last)
		tools_progress_end(&cmd->build, done);
	else
		tools_progress_update(&cmd->build, done);
}

static void on_workload(void *arg, const struct bench_disk *d,
			const struct bench_result *r)
{
	struct bench_cmd *cmd = arg;

	if (cmd->progress)
		fprintf(stderr, "\rbench: depth %u: %-19s %-20s x%u ...   ", d->depth,
			r->label, bench_work_pattern_name(r->pattern), r->threads);
}

/* ---- the run ---------------------------------------------------------------------- */

static int output(const struct bench_cmd *cmd, const struct bench_run *b)
{
	if (cmd->progress)
		fputs("\r\033[K", stderr);
	if (cmd->json)
		tools_bench_out_json(b, stdout);
	else if (cmd->csv)
		tools_bench_out_csv(b, stdout);
	else
		tools_bench_out_table(b, stdout);
	if (cmd->plot && tools_bench_out_plot(b, cmd->plot))
		return TOOLS_ERR;
	return fflush(stdout) ? tools_fail("stdout", -errno) : TOOLS_OK;
}

static int run(struct bench_cmd *cmd, char **paths, unsigned nr)
{
	struct bench_run *b = NULL;
	int err = bench_run_create(&cmd->o, &b), ret;

	if (!err)
		err = bench_run_measure(b, paths, nr);
	if (err) {
		unsigned n = b ? bench_run_nr_disks(b) : 0;
		ret = tools_fail(n ? bench_run_disk(b, n - 1)->path : "bench", err);
	} else {
		ret = output(cmd, b);
	}
	bench_run_destroy(b);
	return ret;
}

static void on_signal(int sig)
{
	(void)sig;
	bench_run_interrupt();
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

static int bench_cmd_run(int argc, char **argv)
{
	struct bench_cmd cmd = { 0 };
	int ret;

	catch_signals();
	ret = parse_args(argc, argv, &cmd);
	cmd.progress = !cmd.quiet && isatty(STDERR_FILENO);
	cmd.o.hooks = (struct bench_hooks){ .build = on_build, .workload = on_workload,
					    .arg = &cmd };
	if (ret == TOOLS_OK)
		ret = run(&cmd, argv + optind, (unsigned)(argc - optind));
	return ret;
}

const struct tools_cmd tools_cmd_bench = {
	.name = "bench",
	TOOLS_PAGE(bench),
	.run = bench_cmd_run,
};
