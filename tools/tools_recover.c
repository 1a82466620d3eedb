/* tools — the front door of every command (top layer, over
 * group_recover_near).
 *
 * Owns: which arguments of a command name a VMDK file (a mount argument
 * DISK:MODE by its DISK), each handed to the group layer's recovery before
 * the command runs, so that `info`, `digest`, `map`, `mount`,
 * `snapshot`... read a disk in its old or its new state, never in the
 * middle of a commit (whose child link is stale until it ends).  A raw
 * file or a broken chain is the command's to report; recovery reports
 * what it does and what fails, and the command runs either way.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group.h"
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

static void recover_arg(const char *arg)
{
	enum tools_fmt fmt = TOOLS_FMT_RAW;
	char *path = file_arg(arg);
	int rc = path ? 0 : -1;

	tools_log_quiet(true);
	if (!rc)
		rc = tools_fmt_detect(path, &fmt);
	tools_log_quiet(false);
	if (!rc && fmt == TOOLS_FMT_VMDK)
		group_recover_near(path, GROUP_RECOVER_FINISH, NULL, NULL);
	free(path);
}

void tools_recover_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		recover_arg(argv[i]);
}
