/* tools — the progress meter of long commands (top layer).
 *
 * Owns: deciding whether to show progress (stderr is a terminal and the work
 * has taken over a second, or forced with -p) and drawing one line on
 * stderr, at most ten times a second.
 */
#include <time.h>
#include <unistd.h>

#include "tools.h"

#define SHOW_AFTER 1.0   /* seconds of work before an unforced meter appears */
#define REDRAW_EVERY 0.1 /* seconds between redraws */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tools_progress_init(struct tools_progress *p, uint64_t total, bool force)
{
	p->total = total;
	p->forced = force;
	p->enabled = force || isatty(STDERR_FILENO);
	p->shown = false;
	p->start = now();
	p->last = 0;
}

static void draw(struct tools_progress *p, uint64_t done)
{
	double pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;

	fprintf(stderr, "\r    (%6.2f/100%%)", pct);
	fflush(stderr);
	p->shown = true;
}

void tools_progress_update(struct tools_progress *p, uint64_t done)
{
	double t;

	if (!p->enabled)
		return;
	t = now();
	if (t - p->last < REDRAW_EVERY)
		return;
	if (!p->forced && t - p->start < SHOW_AFTER)
		return;
	p->last = t;
	draw(p, done);
}

void tools_progress_end(struct tools_progress *p, uint64_t done)
{
	if (!p->shown && !p->forced)
		return;
	draw(p, done);
	fputc('\n', stderr);
	p->shown = false;
}

void tools_progress_cb(void *opaque, uint64_t done, uint64_t total)
{
	struct tools_progress *pr = opaque;

	pr->total = total;
	tools_progress_update(pr, done);
}
