/* tools — recovery of interrupted group operations before any command runs
 * (top layer, over chain_group_intents_near and chain_group_recover).
 *
 * Owns: for every argument of a command that names a VMDK file (a mount
 * argument DISK:MODE by its DISK), finding the intent records beside the
 * layers of its chain and finishing or rolling back their operations, so
 * that `info`, `digest`, `map`, `mount`, `snapshot`... read a disk in its
 * old or its new state, never in the middle of a commit (whose child link
 * is stale until it ends).  Finding is silent (a raw file, a broken chain:
 * the command reports those itself); recovery reports what it does and
 * what fails, and the command runs either way.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain.h"
#include "tools.h"

/* arg as a regular file: itself, or DISK of DISK:MODE; NULL when neither. */
static char *file_arg(const char *arg)
{
	struct stat st;
	const char *colon = strrchr(arg, ':'), *slash = strrchr(arg, '/');
	char *p;

	if (!stat(arg, &st))
		return S_ISREG(st.st_mode) ? strdup(arg) : NULL;
	if (!colon || (slash && colon < slash))
		return NULL;
	p = strndup(arg, (size_t)(colon - arg));
	if (p && (stat(p, &st) || !S_ISREG(st.st_mode))) {
		free(p);
		p = NULL;
	}
	return p;
}

/* arg's VMDK file (malloc'd), or NULL when it names none. */
static char *vmdk_arg(const char *arg)
{
	enum tools_fmt fmt = TOOLS_FMT_RAW;
	char *path = file_arg(arg);

	if (path && (tools_fmt_detect(path, &fmt) || fmt != TOOLS_FMT_VMDK)) {
		free(path);
		path = NULL;
	}
	return path;
}

/* The records near every disk argument, found in one pass (each folder
 * read once: a mount of many clones in one folder stays linear). */
void tools_recover_args(int argc, char **argv)
{
	char **paths = calloc((size_t)argc, sizeof *paths), **recs = NULL;
	unsigned nr_paths = 0, nr = 0;

	if (!paths)
		return;
	tools_log_quiet(true);
	for (int i = 1; i < argc; i++)
		if ((paths[nr_paths] = vmdk_arg(argv[i])))
			nr_paths++;
	if (nr_paths)
		chain_group_intents_near_all((const char *const *)paths, nr_paths, &recs, &nr);
	tools_log_quiet(false);
	for (unsigned i = 0; i < nr; i++) {
		if (!access(recs[i], F_OK)) /* one recovery may have ended another */
			chain_group_recover(recs[i], NULL);
		free(recs[i]);
	}
	free(recs);
	for (unsigned i = 0; i < nr_paths; i++)
		free(paths[i]);
	free(paths);
}
