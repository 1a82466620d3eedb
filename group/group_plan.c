/* group — the plan of an operation (layer 3).
 *
 * Owns: the steps an operation prints (what it changes, or with
 * GROUP_DRY_RUN would change), the bytes it moves and the space it needs,
 * the space check every operation makes before its first write, and the
 * progress callback of data moves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/statvfs.h>

#include "group_int.h"

int group_plan_add(struct group_plan *p, enum group_step_kind kind, const char *path,
		   uint64_t bytes)
{
	struct group_plan_step *s = reallocarray(p->steps, p->nr_steps + 1, sizeof *s);

	if (!s)
		return -ENOMEM;
	p->steps = s;
	s[p->nr_steps] = (struct group_plan_step){ .kind = kind, .path = strdup(path),
						    .bytes = bytes };
	return s[p->nr_steps++].path ? 0 : -ENOMEM;
}

int group_plan_keep(struct group_plan *p, const struct group *g, int node)
{
	int err = group_plan_add(p, GROUP_STEP_KEEP, g->t->nodes[node].path, 0);

	if (!err)
		p->steps[p->nr_steps - 1].why = group_unknown(g, node) ? "children unknown"
						: group_shared(g, node) ? "shared" : NULL;
	return err;
}

/* The records an operation writes beside its data: its intent record and
 * the sidecar records it edits, each with its temporary (a few files of at
 * most GROUP_MAX_RECORD bytes). */
#define RECORDS_RESERVE (8ull * GROUP_MAX_RECORD)

int group_plan_space(struct group_plan *p, const char *path)
{
	struct statvfs sv;
	char *dir = vd_dirname(path);
	int err = dir && !statvfs(dir, &sv) ? 0 : dir ? -errno : -ENOMEM;
	uint64_t need = p->space_needed + RECORDS_RESERVE;

	if (!err)
		p->space_avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (!err && need > p->space_avail) {
		vd_err("%s: %llu bytes needed (data and the operation's records), %llu free: "
		       "%s refused, nothing changed", dir, (unsigned long long)need,
		       (unsigned long long)p->space_avail, p->op);
		err = -ENOSPC;
	}
	free(dir);
	return err;
}

void group_plan_progress(struct group_plan *p, uint64_t *done, uint64_t n, uint64_t total)
{
	*done += n;
	if (p && p->progress)
		p->progress(p->progress_opaque, *done, total);
}

void group_plan_free(struct group_plan *p)
{
	for (unsigned i = 0; i < p->nr_steps; i++)
		free(p->steps[i].path);
	free(p->steps);
	free(p->result);
	p->steps = NULL;
	p->result = NULL;
	p->nr_steps = 0;
}

const char *group_plan_step_name(enum group_step_kind k)
{
	static const char *const names[] = {
		"write", "create", "remove", "repoint", "unfreeze", "orphan", "keep",
		"clean", "compact", "pull", "record",
	};

	return (unsigned)k < sizeof names / sizeof *names ? names[k] : "?";
}
