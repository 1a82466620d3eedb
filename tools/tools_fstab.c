/* tools — the filesystem side of fuse3's mount helper conventions (top
 * layer): how an /etc/fstab line mounts vdelta disks.
 *
 * Owns: `vdelta SOURCE MOUNTPOINT [-o OPTS]`, the command line that
 * mount.fuse3(8) runs for a mount of type fuse.vdelta (mount(8) runs
 * mount.fuse.vdelta, a link to mount.fuse3, or mount.fuse3 itself: the
 * type after "fuse." names the program) and for type fuse with SOURCE
 * "vdelta#DISK", turned into the arguments of `vdelta mount`.  mount.fuse3
 * has already taken out what is its own (setuid=USER, drop_privileges,
 * user, nofail, auto, _netdev, ...); of the options left, ro,
 * nonpersistent, snapshot, cache=, threads= and disk= are vdelta's, the
 * rest are FUSE's (allow_other, dev, suid, ...).
 *
 * SOURCE is a disk, DISK[:MODE][=NAME] as for `vdelta mount`, with an
 * optional "vdelta#" before it; more disks come as disk=DISK options.  The
 * mount detaches once ready, as mount(8) expects of a helper.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

#define FSTAB_MAX_WORDS 1024u /* of the `vdelta mount` line */

bool tools_fstab_form(int argc, char **argv)
{
	const char *s = argc >= 3 ? argv[1] : "";
	size_t len = strlen(s);

	return *s && *s != '-' &&
	       (strchr(s, '/') || strchr(s, '#') || (len > 5 && !strcmp(s + len - 5, ".vmdk")));
}

static int add(struct tools_fstab *f, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int add(struct tools_fstab *f, const char *fmt, ...)
{
	va_list ap;
	char *w;
	int n;

	if ((unsigned)f->argc + 2 > FSTAB_MAX_WORDS) {
		tools_err("%s: more than %u options and disks", f->argv[f->argc - 1],
			  FSTAB_MAX_WORDS);
		return TOOLS_USAGE;
	}
	va_start(ap, fmt);
	n = vasprintf(&w, fmt, ap);
	va_end(ap);
	if (n < 0)
		return tools_fail("mount", -ENOMEM);
	f->words[f->argc] = f->argv[f->argc] = w;
	f->argv[++f->argc] = NULL;
	return TOOLS_OK;
}

/* fstab and mount(8) words that say nothing to vdelta or FUSE. */
static bool dropped(const char *o)
{
	static const char *const words[] = { "", "defaults", "rw", "auto", "noauto", "user",
					     "nouser", "users", "owner", "group", "nofail",
					     "_netdev", NULL };

	for (unsigned i = 0; words[i]; i++)
		if (!strcmp(o, words[i]))
			return true;
	return !strncmp(o, "x-", 2) || !strncmp(o, "comment=", 8);
}

/* *list = *list + "," + item (or item): mount(8)'s option lists. */
static int join(char **list, const char *item)
{
	char *all = NULL;

	if (asprintf(&all, "%s%s%s", *list ? *list : "", *list ? "," : "", item) < 0)
		return tools_fail("mount", -ENOMEM);
	free(*list);
	*list = all;
	return TOOLS_OK;
}

static bool vdelta_opt(const char *o)
{
	return !strcmp(o, "nonpersistent") || !strcmp(o, "snapshot") ||
	       !strncmp(o, "cache=", 6) || !strncmp(o, "threads=", 8);
}

/* The -o list: vdelta's options become `vdelta mount` options, disk= go
 * to disks[], the others join *fuse (FUSE's -o list; ro is both). */
static int fstab_opts(struct tools_fstab *f, char *list, char **fuse, char **disks,
		      unsigned *nr_disks)
{
	int rc = TOOLS_OK;

	for (char *o = strtok(list, ","); o && rc == TOOLS_OK; o = strtok(NULL, ",")) {
		if (dropped(o))
			continue;
		if (vdelta_opt(o) || !strcmp(o, "ro"))
			rc = add(f, "--%s", o);
		if (rc || vdelta_opt(o))
			continue;
		if (!strncmp(o, "disk=", 5) && *nr_disks < FSTAB_MAX_WORDS / 2) {
			disks[(*nr_disks)++] = o + 5;
			continue;
		}
		rc = join(fuse, o);
	}
	return rc;
}

/* After SOURCE MOUNTPOINT: -o OPTS (any number), and mount(8)'s helper
 * flags: -f (fake: do not mount), -n, -s, -v (nothing to do), -t TYPE. */
static int fstab_flags(struct tools_fstab *f, int argc, char **argv, char **opts)
{
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			if (join(opts, argv[++i]))
				return TOOLS_ERR;
		} else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
			i++;
		} else if (!strcmp(argv[i], "-f")) {
			f->fake = true;
		} else if (strcmp(argv[i], "-n") && strcmp(argv[i], "-s") && strcmp(argv[i], "-v")) {
			tools_err("unknown argument '%s' (usage: vdelta SOURCE MOUNTPOINT "
				  "[-o OPTIONS])", argv[i]);
			return TOOLS_USAGE;
		}
	}
	return TOOLS_OK;
}

static int fstab_words(struct tools_fstab *f, int argc, char **argv, char *opts)
{
	const char *source = argv[1];
	char *fuse = NULL, **disks = calloc(FSTAB_MAX_WORDS / 2, sizeof *disks);
	unsigned nr_disks = 0;
	int rc = disks ? add(f, "mount") : tools_fail("mount", -ENOMEM);

	if (!strncmp(source, "vdelta#", 7))
		source += 7;
	if (rc == TOOLS_OK && opts)
		rc = fstab_opts(f, opts, &fuse, disks, &nr_disks);
	if (rc == TOOLS_OK && fuse)
		rc = add(f, "--options=%s", fuse);
	if (rc == TOOLS_OK)
		rc = add(f, "--");
	if (rc == TOOLS_OK)
		rc = add(f, "%s", source);
	for (unsigned i = 0; i < nr_disks && rc == TOOLS_OK; i++)
		rc = add(f, "%s", disks[i]);
	if (rc == TOOLS_OK)
		rc = add(f, "%s", argv[2]);
	free(fuse);
	free(disks);
	return rc;
}

int tools_fstab_parse(int argc, char **argv, struct tools_fstab *f)
{
	char *opts = NULL;
	int rc;

	memset(f, 0, sizeof *f);
	f->argv = calloc(FSTAB_MAX_WORDS, sizeof *f->argv);
	f->words = calloc(FSTAB_MAX_WORDS, sizeof *f->words);
	if (!f->argv || !f->words)
		return tools_fail("mount", -ENOMEM);
	rc = fstab_flags(f, argc, argv, &opts);
	if (rc == TOOLS_OK)
		rc = fstab_words(f, argc, argv, opts);
	free(opts);
	return rc;
}

void tools_fstab_free(struct tools_fstab *f)
{
	for (int i = 0; f->words && i < f->argc; i++)
		free(f->words[i]);
	free(f->words);
	free(f->argv);
}
