/* tools — the output of `vdelta bench` (top layer, over bench.h).
 *
 * Owns: the table printed on a terminal, the JSON document (its schema is
 * docs/bench.schema.json), the CSV rows and the gnuplot plot (random 4 KiB
 * IOPS and sequential MiB/s on log axes, random-read amplification, against
 * depth, one line per system).  Amplification is physical reads (or bytes) per
 * logical one; for a FUSE server the physical reads are all its read
 * syscalls, its reads of requests from /dev/fuse included.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tools_bench.h"

static double ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static double amp(const struct bench_result *r, bool bytes)
{
	if (bytes)
		return ratio((double)(r->meta_bytes + r->data_bytes), (double)r->bytes);
	return ratio((double)(r->meta_reads + r->data_reads), (double)r->ops);
}

static double iops(const struct bench_result *r)
{
	return ratio((double)r->ops, r->seconds);
}

static double mibs(const struct bench_result *r)
{
	return ratio((double)r->bytes / 1048576.0, r->seconds);
}

/* Throughput of r over that of r->vs_system on the same disk and workload;
 * vdelta in process against itself is 1, 0 when there is nothing to set
 * r against. */
static double vs_vdelta(const struct bench_run *b, const struct bench_result *r)
{
	if (!r->vs_system)
		return strcmp(r->access, "in-process") ? 0 : 1.0;
	for (unsigned i = 0; i < bench_run_nr_results(b); i++) {
		const struct bench_result *v = bench_run_result(b, i);
		if (!strcmp(v->system, r->vs_system) && v->disk == r->disk &&
		    v->pattern == r->pattern && v->threads == r->threads)
			return ratio(iops(r), iops(v));
	}
	return 0;
}

/* Share of the data reads served by layer l. */
static double layer_share(const struct bench_result *r, unsigned l)
{
	return ratio((double)r->layers[l].data_reads, (double)r->data_reads);
}

/* ---- table ---------------------------------------------------------------------- */

static void table_disk(const struct bench_disk *d, FILE *f)
{
	char cap[32], ob[32], mb[32], now[32], after[32];

	fprintf(f, "\ndepth %u: %s (%s virtual)\n", d->depth, d->path,
		tools_human_size(d->capacity, cap, sizeof cap));
	fprintf(f, "  open: %" PRIu64 " reads, %s; merged map: %s, built with %" PRIu64
		" reads\n", d->open_reads, tools_human_size(d->open_bytes, ob, sizeof ob),
		tools_human_size(d->map_bytes, mb, sizeof mb), d->scan_reads);
	fprintf(f, "  consolidate: depth %u -> 1, storage %s -> ~%s, predicted "
		"amplification 1.00 read per read\n", d->depth,
		tools_human_size(d->file_bytes, now, sizeof now),
		tools_human_size(d->data_bytes, after, sizeof after));
	fprintf(f, "  %-19s %-20s %3s %8s %9s %8s %8s %8s %8s %7s %7s %7s %6s\n", "system",
		"pattern", "thr", "ops", "IOPS", "MiB/s", "p50 us", "p99 us", "p99.9 us",
		"amp", "amp B", "meta/op", "x vd");
}

static void table_layers(const struct bench_result *r, unsigned depth, FILE *f)
{
	unsigned shown = 0;

	fprintf(f, "  %-19s data reads by layer (0 = top):", "");
	for (unsigned l = 0; l < depth; l++) {
		if (!r->layers[l].data_reads)
			continue;
		if (++shown > 8) {
			fputs(" ...", f);
			break;
		}
		fprintf(f, " %u:%.1f%%", l, 100 * layer_share(r, l));
	}
	fputc('\n', f);
}

static void table_row(const struct bench_run *b, const struct bench_result *r, FILE *f)
{
	fprintf(f, "  %-19s %-20s %3u %8" PRIu64 " %9.0f %8.1f %8.1f %8.1f %8.1f", r->label,
		bench_work_pattern_name(r->pattern), r->threads, r->ops, iops(r), mibs(r),
		r->lat_ns[0] / 1e3, r->lat_ns[1] / 1e3, r->lat_ns[2] / 1e3);
	if (r->counted)
		fprintf(f, " %7.2f %7.2f %7.3f", amp(r, false), amp(r, true),
			ratio((double)r->meta_reads, (double)r->ops));
	else
		fprintf(f, " %7s %7s %7s", "-", "-", "-");
	if (r->vs_system)
		fprintf(f, " %6.2f", vs_vdelta(b, r));
	else if (strcmp(r->access, "in-process"))
		fprintf(f, " %6s", "-");
	fputc('\n', f);
	if (r->per_layer && r->pattern != BENCH_WRITE)
		table_layers(r, bench_run_disk(b, r->disk)->depth, f);
}

void tools_bench_out_table(const struct bench_run *b, FILE *f)
{
	for (unsigned d = 0; d < bench_run_nr_disks(b); d++) {
		table_disk(bench_run_disk(b, d), f);
		for (unsigned i = 0; i < bench_run_nr_results(b); i++)
			if (bench_run_result(b, i)->disk == d)
				table_row(b, bench_run_result(b, i), f);
	}
	fputs("\namp = physical reads per logical read (amp B: bytes); meta/op = metadata "
	      "reads per request;\nx vd = throughput against vdelta reached the same way "
	      "(through FUSE: vdelta-fuse),\n       vdelta's own servers against vdelta in "
	      "process\n", f);
	for (unsigned i = 0; i < bench_run_nr_missing(b); i++) {
		const struct bench_missing *m = bench_run_missing(b, i);
		fprintf(f, "not run: %s (%s not installed%s%s)\n", m->system, m->program,
			m->package ? "; Debian package " : "", m->package ? m->package : "");
	}
}

/* ---- JSON ----------------------------------------------------------------------- */

static void json_disk(struct tools_json *j, const struct bench_disk *d)
{
	tools_json_obj_begin(j, NULL);
	tools_json_str(j, "path", d->path);
	tools_json_u64(j, "depth", d->depth);
	tools_json_u64(j, "capacity", d->capacity);
	tools_json_u64(j, "map_unit", d->unit);
	tools_json_u64(j, "open_reads", d->open_reads);
	tools_json_u64(j, "open_bytes", d->open_bytes);
	tools_json_u64(j, "map_bytes", d->map_bytes);
	tools_json_u64(j, "map_build_reads", d->scan_reads);
	tools_json_u64(j, "map_build_bytes", d->scan_bytes);
	tools_json_u64(j, "file_bytes", d->file_bytes);
	tools_json_arr_begin(j, "layers");
	for (unsigned l = 0; l < d->depth; l++) {
		tools_json_obj_begin(j, NULL);
		tools_json_str(j, "path", d->layer_paths[l]);
		tools_json_u64(j, "file_bytes", d->layer_file_bytes[l]);
		tools_json_obj_end(j);
	}
	tools_json_arr_end(j);
	tools_json_obj_begin(j, "consolidate");
	tools_json_u64(j, "depth", 1);
	tools_json_u64(j, "file_bytes", d->data_bytes);
	tools_json_f64(j, "predicted_amplification", 1.0);
	tools_json_obj_end(j);
	tools_json_obj_end(j);
}

static void json_physical(struct tools_json *j, const struct bench_result *r)
{
	tools_json_obj_begin(j, "physical");
	tools_json_str(j, "source", r->per_layer ? "counting-io" : "proc-pid-io");
	tools_json_u64(j, "reads", r->meta_reads + r->data_reads);
	tools_json_u64(j, "bytes", r->meta_bytes + r->data_bytes);
	tools_json_u64(j, "meta_reads", r->meta_reads);
	tools_json_u64(j, "meta_bytes", r->meta_bytes);
	tools_json_u64(j, "data_reads", r->data_reads);
	tools_json_u64(j, "data_bytes", r->data_bytes);
	tools_json_f64(j, "amplification_ops", amp(r, false));
	tools_json_f64(j, "amplification_bytes", amp(r, true));
	tools_json_obj_end(j);
}

static void json_layers(struct tools_json *j, const struct bench_result *r, unsigned depth)
{
	tools_json_arr_begin(j, "layers");
	for (unsigned l = 0; r->per_layer && l < depth; l++) {
		tools_json_obj_begin(j, NULL);
		tools_json_u64(j, "layer", l);
		tools_json_u64(j, "meta_reads", r->layers[l].meta_reads);
		tools_json_u64(j, "meta_bytes", r->layers[l].meta_bytes);
		tools_json_u64(j, "data_reads", r->layers[l].data_reads);
		tools_json_u64(j, "data_bytes", r->layers[l].data_bytes);
		tools_json_f64(j, "share", layer_share(r, l));
		tools_json_obj_end(j);
	}
	tools_json_arr_end(j);
}

static void json_result(struct tools_json *j, const struct bench_run *b,
			const struct bench_result *r)
{
	tools_json_obj_begin(j, NULL);
	tools_json_str(j, "system", r->system);
	tools_json_str(j, "access", r->access);
	tools_json_u64(j, "disk", r->disk);
	tools_json_u64(j, "depth", bench_run_disk(b, r->disk)->depth);
	tools_json_str(j, "pattern", bench_work_pattern_name(r->pattern));
	tools_json_u64(j, "threads", r->threads);
	tools_json_u64(j, "ops", r->ops);
	tools_json_u64(j, "bytes", r->bytes);
	tools_json_f64(j, "seconds", r->seconds);
	tools_json_f64(j, "iops", iops(r));
	tools_json_f64(j, "mib_per_s", mibs(r));
	tools_json_obj_begin(j, "latency_us");
	tools_json_f64(j, "p50", r->lat_ns[0] / 1e3);
	tools_json_f64(j, "p99", r->lat_ns[1] / 1e3);
	tools_json_f64(j, "p99_9", r->lat_ns[2] / 1e3);
	tools_json_obj_end(j);
	if (r->counted)
		json_physical(j, r);
	json_layers(j, r, bench_run_disk(b, r->disk)->depth);
	tools_json_f64(j, "vs_vdelta", vs_vdelta(b, r));
	if (r->vs_system)
		tools_json_str(j, "vs_system", r->vs_system);
	tools_json_obj_end(j);
}

/* The servers asked for and not installed. */
static void json_not_run(struct tools_json *j, const struct bench_run *b)
{
	tools_json_arr_begin(j, "not_run");
	for (unsigned i = 0; i < bench_run_nr_missing(b); i++) {
		const struct bench_missing *m = bench_run_missing(b, i);
		tools_json_obj_begin(j, NULL);
		tools_json_str(j, "system", m->system);
		tools_json_str(j, "program", m->program);
		if (m->package)
			tools_json_str(j, "package", m->package);
		tools_json_obj_end(j);
	}
	tools_json_arr_end(j);
}

void tools_bench_out_json(const struct bench_run *b, FILE *f)
{
	struct tools_json j;
	double load[3] = {0};

	getloadavg(load, 3);
	tools_json_init(&j, f);
	tools_json_obj_begin(&j, NULL);
	tools_json_str(&j, "vdelta_version", VDELTA_VERSION);
	tools_json_u64(&j, "cpus", (uint64_t)sysconf(_SC_NPROCESSORS_ONLN));
	tools_json_f64(&j, "load_average", load[0]);
	tools_json_arr_begin(&j, "disks");
	for (unsigned d = 0; d < bench_run_nr_disks(b); d++)
		json_disk(&j, bench_run_disk(b, d));
	tools_json_arr_end(&j);
	tools_json_arr_begin(&j, "results");
	for (unsigned i = 0; i < bench_run_nr_results(b); i++)
		json_result(&j, b, bench_run_result(b, i));
	tools_json_arr_end(&j);
	json_not_run(&j, b);
	tools_json_obj_end(&j);
}

/* ---- CSV ------------------------------------------------------------------------ */

void tools_bench_out_csv(const struct bench_run *b, FILE *f)
{
	fputs("system,depth,pattern,threads,ops,bytes,seconds,iops,mib_per_s,p50_us,p99_us,"
	      "p99_9_us,phys_reads,phys_bytes,meta_reads,data_reads,amp_ops,amp_bytes,"
	      "vs_vdelta,access,vs_system\n", f);
	for (unsigned i = 0; i < bench_run_nr_results(b); i++) {
		const struct bench_result *r = bench_run_result(b, i);
		fprintf(f, "%s,%u,%s,%u,%" PRIu64 ",%" PRIu64 ",%.6f,%.1f,%.2f,%.1f,%.1f,%.1f,",
			r->system, bench_run_disk(b, r->disk)->depth,
			bench_work_pattern_name(r->pattern), r->threads, r->ops, r->bytes,
			r->seconds, iops(r), mibs(r),
			r->lat_ns[0] / 1e3, r->lat_ns[1] / 1e3, r->lat_ns[2] / 1e3);
		fprintf(f, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%.4f,%.4f,%.3f,%s,%s\n",
			r->meta_reads + r->data_reads, r->meta_bytes + r->data_bytes,
			r->meta_reads, r->data_reads, amp(r, false), amp(r, true),
			vs_vdelta(b, r), r->access, r->vs_system ? r->vs_system : "");
	}
}

/* ---- plot ----------------------------------------------------------------------- */

#define PLOT_MAX_SYSTEMS 8

/* The result of system on disk d for a pattern (random: 1 thread). */
static const struct bench_result *find(const struct bench_run *b, const char *system,
				       unsigned d, enum bench_pattern p)
{
	for (unsigned i = 0; i < bench_run_nr_results(b); i++) {
		const struct bench_result *r = bench_run_result(b, i);
		if (r->disk == d && r->pattern == p && !strcmp(r->system, system) &&
		    (p != BENCH_RAND || r->threads == 1))
			return r;
	}
	return NULL;
}

/* The first result of each system, in order of appearance. */
static unsigned systems(const struct bench_run *b, const struct bench_result **out)
{
	unsigned n = 0, k;

	for (unsigned i = 0; i < bench_run_nr_results(b); i++) {
		const struct bench_result *r = bench_run_result(b, i);
		for (k = 0; k < n && strcmp(out[k]->system, r->system); k++)
			;
		if (k == n && n < PLOT_MAX_SYSTEMS)
			out[n++] = r;
	}
	return n;
}

static void plot_value(FILE *g, bool have, double v)
{
	if (have)
		fprintf(g, " %.4f", v);
	else
		fputs(" NaN", g);
}

/* One datablock per system: depth, rand IOPS, seq MiB/s, rand amplification
 * (a rate of 0 has no place on the log axis: missing). */
static void plot_data(const struct bench_run *b, const struct bench_result **sys,
		      unsigned n, FILE *g)
{
	for (unsigned s = 0; s < n; s++) {
		fprintf(g, "$s%u << EOD\n", s);
		for (unsigned d = 0; d < bench_run_nr_disks(b); d++) {
			const struct bench_result *r = find(b, sys[s]->system, d, BENCH_RAND);
			const struct bench_result *q = find(b, sys[s]->system, d, BENCH_SEQ);
			fprintf(g, "%u", bench_run_disk(b, d)->depth);
			plot_value(g, r && iops(r) > 0, r ? iops(r) : 0);
			plot_value(g, q && mibs(q) > 0, q ? mibs(q) : 0);
			plot_value(g, r && r->counted, r ? amp(r, false) : 0);
			fputc('\n', g);
		}
		fputs("EOD\n", g);
	}
}

/* Throughput panels on a log axis: systems apart by 100x stay readable. */
static void plot_panel(FILE *g, const struct bench_result **sys, unsigned n, int col,
		       bool log_y, const char *title)
{
	fputs(log_y ? "set logscale y 10\nset yrange [*:*]\n"
		    : "unset logscale y\nset yrange [0:*]\n", g);
	fprintf(g, "set title '%s'\nplot ", title);
	for (unsigned s = 0; s < n; s++)
		fprintf(g, "%s$s%u using 1:%d with linespoints title '%s'", s ? ", " : "", s,
			col, sys[s]->label);
	fputc('\n', g);
}

int tools_bench_out_plot(const struct bench_run *b, const char *path)
{
	const struct bench_result *sys[PLOT_MAX_SYSTEMS];
	const char *ext = strrchr(path, '.');
	unsigned n = systems(b, sys);
	bool png = ext && !strcmp(ext, ".png");
	FILE *g;
	int st;

	if (strchr(path, '\'')) {
		tools_err("%s: a plot file name may not contain a quote", path);
		return -EINVAL;
	}
	g = popen("gnuplot", "w");
	if (!g)
		return tools_fail("gnuplot", -errno), -EIO;
	fprintf(g, "set terminal %s size 1200,400\nset output '%s'\n",
		png ? "pngcairo" : "svg dynamic", path);
	fputs("set datafile missing NaN\nset key top right\nset xlabel 'chain depth'\n"
	      "set grid\nset logscale x 2\nset multiplot layout 1,3\n", g);
	plot_data(b, sys, n, g);
	plot_panel(g, sys, n, 2, true, "random 4 KiB reads (IOPS, log scale)");
	plot_panel(g, sys, n, 3, true, "sequential 1 MiB reads (MiB/s, log scale)");
	plot_panel(g, sys, n, 4, false, "read amplification (reads per 4 KiB read)");
	fputs("unset multiplot\n", g);
	st = pclose(g);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		tools_err("%s: gnuplot failed", path);
		return -EIO;
	}
	return 0;
}
