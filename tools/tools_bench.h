/* tools — private header of `vdelta bench` (top layer); included only by
 * tools/tools_bench*.c.
 *
 *   tools_bench.c      options, progress, signals; the run itself is the
 *                      bench layer's (bench.h)
 *   tools_bench_out.c  table, JSON, CSV and gnuplot output of a run
 */
#ifndef VDELTA_TOOLS_BENCH_H
#define VDELTA_TOOLS_BENCH_H

#include <signal.h>

#include "bench.h"
#include "group.h"
#include "tools.h"

void tools_bench_out_table(const struct bench_run *b, FILE *f);
void tools_bench_out_json(const struct bench_run *b, FILE *f);
void tools_bench_out_csv(const struct bench_run *b, FILE *f);
int tools_bench_out_plot(const struct bench_run *b, const char *path);

#endif
