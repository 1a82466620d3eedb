/* tools — the front door of every command but mount (whose front door is
 * the group layer's, group_serve_add, disk by disk), and `vdelta recover`
 * (top layer, over group_recover_near and group_recover).
 *
 * Owns: which arguments of a command name a VMDK file (a serve argument
 * DISK:MODE by its DISK), each handed to the group layer's recovery before
 * the command runs: a command that writes (its table entry says so) has
 * the interrupted operations near its disks finished first, so `snapshot`
 * or `clone` never builds on a disk in the middle of a commit; one that
 * only reads (`info`, `digest`, `map`, `check`) has them reported with the
 * command that finishes them, and changes nothing; so does a command
 * that writes when asked for a dry run.  A raw file or a broken
 * chain is the command's to report; the command runs either way.
 * `vdelta recover` finishes (or with --dry-run lists) the interrupted
 * operations near disks, in folders, or of named records.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

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

static void recover_arg(const char *arg, bool finish)
{
	enum tools_fmt fmt = TOOLS_FMT_RAW;
	char *path = file_arg(arg);
	int rc = path ? 0 : -1;

	tools_log_quiet(true);
	if (!rc)
		rc = tools_fmt_detect(path, &fmt);
	tools_log_quiet(false);
	if (!rc && fmt == TOOLS_FMT_VMDK)
		group_recover_near(path, finish ? GROUP_RECOVER_FINISH : 0, NULL, NULL);
	free(path);
}

/* --dry-run (or an abbreviation getopt takes), or a cluster of the short
 * flags -n and -p holding -n, before "--". */
static bool dry_run_arg(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
		const char *a = argv[i];
		size_t n = strlen(a);

		if (n >= 4 && !strncmp(a, "--dry-run", n))
			return true;
		if (a[0] == '-' && n >= 2 && strspn(a + 1, "np") == n - 1 && strchr(a, 'n'))
			return true;
	}
	return false;
}

void tools_recover_args(int argc, char **argv, bool finish)
{
	finish = finish && !dry_run_arg(argc, argv);
	for (int i = 1; i < argc; i++)
		recover_arg(argv[i], finish);
}

/* ---- vdelta recover ------------------------------------------------------------------- */

extern const struct tools_cmd tools_cmd_recover;

static bool is_record(const char *path)
{
	size_t n = strlen(path), k = strlen(GROUP_INTENT_SUFFIX);

	return n > k && !strcmp(path + n - k, GROUP_INTENT_SUFFIX);
}

/* The records under a folder (recursively, as tree scans), and with
 * GROUP_RECOVER_FINISH the temporaries crashes left of records. */
static int recover_dir(char *dir, unsigned flags, unsigned *found)
{
	struct group_tree *t;
	int rc = group_tree_scan(&dir, 1, 0, &t), first = 0;

	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < t->nr_intents; i++) {
		rc = group_recover(t->intents[i], flags, NULL);
		first = first ? first : rc;
	}
	/* beside each layer too: the temporaries of records never published */
	for (unsigned i = 0; (flags & GROUP_RECOVER_FINISH) && i < t->nr_nodes; i++)
		group_recover_near(t->nodes[i].path, flags, NULL, NULL);
	*found += t->nr_intents;
	group_tree_free(t);
	return first;
}

static int recover_one(char *arg, unsigned flags, unsigned *found)
{
	struct stat st;
	unsigned n = 0;
	int rc;

	if (stat(arg, &st))
		return -errno;
	if (S_ISDIR(st.st_mode))
		return recover_dir(arg, flags, found);
	if (is_record(arg)) {
		(*found)++;
		return group_recover(arg, flags, NULL);
	}
	rc = group_recover_near(arg, flags, NULL, &n);
	*found += n;
	return rc;
}

static int recover_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dry-run", no_argument, NULL, 'n'}, {NULL, 0, NULL, 0},
	};
	unsigned flags = GROUP_RECOVER_FINISH | GROUP_RECOVER_STRICT, found = 0;
	int c, worst = TOOLS_OK;

	while ((c = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
		if (c != 'n')
			return tools_usage(&tools_cmd_recover, NULL);
		flags = GROUP_RECOVER_STRICT;
	}
	if (optind == argc)
		return tools_usage(&tools_cmd_recover, "expected DISK, DIR or RECORD");
	for (int i = optind; i < argc; i++) {
		int rc = recover_one(argv[i], flags, &found);
		if (rc < 0)
			worst = tools_fail(argv[i], rc);
	}
	printf("%u interrupted operation%s found%s\n", found, found == 1 ? "" : "s",
	       !(flags & GROUP_RECOVER_FINISH) ? " (dry run: nothing changed)"
	       : worst != TOOLS_OK ? "; not all finished (the messages above say why)"
	       : found ? ", every one finished" : "");
	return worst;
}

const struct tools_cmd tools_cmd_recover = {
	.name = "recover",
	TOOLS_PAGE(recover),
	.run = recover_run,
	.writes = true,
	.own_front_door = true,
};
