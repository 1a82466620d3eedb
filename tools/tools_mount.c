/* tools — `vdelta mount` and `vdelta umount` (top layer, over chain.h and
 * the FUSE front end fuse_front.h).
 *
 * Owns: the command lines, turning DISK[:MODE][=NAME] arguments into disks
 * of one serving core (chain_serve.c), the messages a user sees before the
 * mount returns (every startup failure, the new deltas of --snapshot), and
 * the wait for the daemon's clean exit at umount.  The serving itself is
 * fuse_front_run's; `--status` is tools_mount_status.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <syslog.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chain.h"
#include "fuse_front.h"
#include "tools.h"

extern const struct tools_cmd tools_cmd_mount, tools_cmd_umount;

struct mount_args {
	struct fuse_front_opts fo;
	enum chain_serve_mode mode;
	const char *status_of;
	bool json;
};

/* ---- DISK[:MODE][=NAME] ------------------------------------------------------- */

/* Split "=NAME" (an '=' after the last '/') and ":MODE" off arg, in place. */
static int disk_arg(char *arg, enum chain_serve_mode dflt, char **name,
		    enum chain_serve_mode *mode)
{
	char *slash = strrchr(arg, '/'), *eq = strrchr(arg, '='), *colon;

	*name = NULL;
	*mode = dflt;
	if (eq && (!slash || eq > slash)) {
		*eq = '\0';
		*name = eq + 1;
		slash = strrchr(arg, '/');
	}
	colon = strrchr(arg, ':');
	if (colon && (!slash || colon > slash) && chain_serve_mode_parse(colon + 1, mode) == 0)
		*colon = '\0';
	if (*name && (!**name || strchr(*name, '/') || !strcmp(*name, FUSE_FRONT_STATUS)))
		return -EINVAL;
	return 0;
}

/* The default name: the top's base name without ".vmdk". */
static char *default_name(const char *path)
{
	const char *b = strrchr(path, '/');
	char *n = strdup(b ? b + 1 : path);
	size_t len = n ? strlen(n) : 0;

	if (len > 5 && !strcasecmp(n + len - 5, ".vmdk"))
		n[len - 5] = '\0';
	return n;
}

static bool name_taken(struct chain_server *s, const char *name)
{
	for (unsigned i = 0; i < chain_server_nr_disks(s); i++)
		if (!strcmp(chain_served_name(chain_server_disk(s, i)), name))
			return true;
	return false;
}

/* Add one disk; the messages explain what to do about a refusal. */
static int add_disk(struct chain_server *s, char *arg, enum chain_serve_mode dflt)
{
	enum chain_serve_mode mode;
	char *name, *own = NULL, *path;
	int rc = disk_arg(arg, dflt, &name, &mode);

	if (rc)
		return tools_usage(&tools_cmd_mount, "bad disk name in '%s'", arg);
	path = realpath(arg, NULL);
	if (!path)
		return tools_fail(arg, -errno);
	if (!name)
		name = own = default_name(path);
	if (name && name_taken(s, name)) {
		tools_err("%s: two disks named '%s': give one another name (DISK=NAME)",
			  arg, name);
		rc = TOOLS_ERR;
	} else if (name) {
		rc = chain_server_add(s, path, name, mode, NULL);
		if (rc == -EPERM || rc == -EROFS || rc == -EACCES)
			tools_err("%s: cannot be written; mount it with --snapshot (writes go "
				  "into a new delta over it), --nonpersistent or --ro", arg);
		rc = rc ? tools_fail(arg, rc) : TOOLS_OK;
	}
	free(own);
	free(path);
	return rc;
}

/* Where each snapshot's writes go, before the mount detaches. */
static void report_disks(struct chain_server *s)
{
	for (unsigned i = 0; i < chain_server_nr_disks(s); i++) {
		struct chain_served *d = chain_server_disk(s, i);
		if (chain_served_mode(d) == CHAIN_SERVE_SNAPSHOT)
			printf("%s: writes go into %s\n", chain_served_name(d),
			       chain_served_top(d));
	}
	fflush(stdout); /* before the fork: no buffered line printed twice */
}

/* ---- mount ------------------------------------------------------------------------ */

/* Once detached, the daemon's stderr is /dev/null: its messages go to
 * syslog as well (ident vdelta-mount), where an admin finds a late error. */
static void mount_log(void *opaque, enum vd_log_level level, const char *msg)
{
	int prio = level == VD_LOG_ERROR ? LOG_ERR : level == VD_LOG_WARN ? LOG_WARNING
									  : LOG_INFO;

	if (level != VD_LOG_ERROR && level != VD_LOG_WARN && !getenv("VDELTA_DEBUG"))
		return;
	syslog(prio, "%s", msg);
	if (level == VD_LOG_ERROR)
		tools_err("%s", msg); /* counted: tools_fail adds nothing */
	else
		fprintf(stderr, "vdelta: warning: %s\n", msg);
}

/* One daemon holds a descriptor per layer file it serves (a top per clone,
 * the shared layers once) and one /dev/fuse clone per worker: a thousand
 * clones pass the usual soft limit of 1024, so take the hard limit. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int mount_serve(char **disks, int nr, const char *mnt, struct mount_args *a)
{
	struct chain_server *s;
	char *abs_mnt = realpath(mnt, NULL);
	struct stat st;
	int rc = abs_mnt ? 0 : -errno;

	if (!rc && (stat(abs_mnt, &st) || !S_ISDIR(st.st_mode)))
		rc = -ENOTDIR;
	if (rc) {
		free(abs_mnt);
		return tools_fail(mnt, rc);
	}
	raise_nofile();
	rc = chain_server_create(&s);
	rc = rc ? tools_fail(mnt, rc) : TOOLS_OK;
	for (int i = 0; i < nr && rc == TOOLS_OK; i++)
		rc = add_disk(s, disks[i], a->mode);
	if (rc == TOOLS_OK) {
		report_disks(s);
		openlog("vdelta-mount", LOG_PID, LOG_DAEMON);
		vd_log_set(mount_log, NULL);
		rc = fuse_front_run(s, abs_mnt, &a->fo);
		rc = rc ? tools_fail(mnt, rc) : TOOLS_OK;
	}
	if (chain_server_close(s) && rc == TOOLS_OK)
		rc = tools_fail(mnt, -EIO);
	free(abs_mnt);
	return rc;
}

enum { OPT_RO = 256, OPT_NP, OPT_SNAP, OPT_CACHE, OPT_STATUS, OPT_JSON, OPT_THREADS };

static const struct option mount_opts[] = {
	{"foreground", no_argument, NULL, 'f'},
	{"ro", no_argument, NULL, OPT_RO},
	{"nonpersistent", no_argument, NULL, OPT_NP},
	{"snapshot", no_argument, NULL, OPT_SNAP},
	{"cache", required_argument, NULL, OPT_CACHE},
	{"status", no_argument, NULL, OPT_STATUS},
	{"json", no_argument, NULL, OPT_JSON},
	{"threads", required_argument, NULL, OPT_THREADS},
	{NULL, 0, NULL, 0},
};

static int mount_opt(int c, struct mount_args *a, int *modes)
{
	switch (c) {
	case 'f': a->fo.foreground = true; return 0;
	case 'o': a->fo.mount_opts = optarg; return 0;
	case OPT_RO: a->mode = CHAIN_SERVE_RO; break;
	case OPT_NP: a->mode = CHAIN_SERVE_NONPERSISTENT; break;
	case OPT_SNAP: a->mode = CHAIN_SERVE_SNAPSHOT; break;
	case OPT_STATUS: a->status_of = ""; return 0;
	case OPT_JSON: a->json = true; return 0;
	case OPT_THREADS: a->fo.max_threads = (unsigned)atoi(optarg);
		return a->fo.max_threads ? 0 : -EINVAL;
	case OPT_CACHE:
		if (!strcmp(optarg, "none") || !strcmp(optarg, "kernel")) {
			a->fo.cache = optarg[0] == 'n' ? FUSE_FRONT_CACHE_NONE
						       : FUSE_FRONT_CACHE_KERNEL;
			return 0;
		}
		return -EINVAL;
	default: return -EINVAL;
	}
	return ++*modes > 1 ? -EINVAL : 0;
}

static int mount_run(int argc, char **argv)
{
	struct mount_args a = { .fo.cache = FUSE_FRONT_CACHE_NONE, .mode = CHAIN_SERVE_RW };
	int c, modes = 0;

	while ((c = getopt_long(argc, argv, "fo:", mount_opts, NULL)) != -1)
		if (mount_opt(c, &a, &modes))
			return tools_usage(&tools_cmd_mount, c == '?' ? NULL :
					   "bad option (--cache is none or kernel; give "
					   "one of --ro, --nonpersistent, --snapshot)");
	if (a.status_of) {
		if (optind != argc - 1)
			return tools_usage(&tools_cmd_mount, "--status takes one MOUNTPOINT");
		return tools_mount_status(argv[optind], a.json);
	}
	if (argc - optind < 2)
		return tools_usage(&tools_cmd_mount, "expected DISK... MOUNTPOINT");
	return mount_serve(argv + optind, argc - optind - 1, argv[argc - 1], &a);
}

const struct tools_cmd tools_cmd_mount = {
	.name = "mount",
	.summary = "serve disks as plain block files in a folder (FUSE)",
	.usage = "[options] DISK[:MODE][=NAME]... MOUNTPOINT\n"
		 "       vdelta mount --status [--json] MOUNTPOINT\n"
		 "\n"
		 "Each DISK (the top layer of a chain) appears in MOUNTPOINT as a file\n"
		 "NAME (default: its base name without .vmdk) of the disk's size, for a\n"
		 "hypervisor (format=raw), a loop device or anything that reads files.\n"
		 "All disks are served by one daemon; layers they share are opened once.\n"
		 "Returns once the mount is ready; `vdelta umount MOUNTPOINT`, fusermount3\n"
		 "-u, SIGTERM or SIGINT stop it cleanly (flushed, locks released).\n"
		 "\n"
		 "  -f, --foreground  stay in the foreground, messages on stderr\n"
		 "  -o OPTS           FUSE mount options (allow_other, default_permissions...)\n"
		 "  --ro              every disk read-only\n"
		 "  --nonpersistent   writes go into a throw-away delta, dropped at unmount\n"
		 "  --snapshot        freeze each top at mount, write into a new delta\n"
		 "  --cache=none|kernel  page cache for the files (default none: direct I/O)\n"
		 "  --threads N       at most N FUSE worker threads\n"
		 "  --status          live figures of a mount (--json for JSON)\n"
		 "\n"
		 "MODE (per disk) is rw, ro, nonpersistent or snapshot; default rw, or the\n"
		 "mode option given.  A frozen top cannot be mounted rw: use --snapshot.",
	.run = mount_run,
};

/* ---- umount ------------------------------------------------------------------------ */

static int run_fusermount(const char *mnt)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", mnt, (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EBUSY;
}

/* Gone, or a zombie: it has exited, whoever reaps it (a detached daemon's
 * parent is init or a subreaper, which may take its time). */
static bool has_exited(pid_t pid)
{
	char path[64], buf[256], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return kill(pid, 0) && errno == ESRCH;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* "pid (comm) state ..." */
	return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

/* The daemon exits once it has flushed and closed every disk. */
static int wait_exit(pid_t pid, unsigned timeout_s)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	for (unsigned i = 0; i < timeout_s * 50; i++) {
		if (has_exited(pid))
			return 0;
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

static int umount_run(int argc, char **argv)
{
	long pid;
	int rc;

	if (getopt_long(argc, argv, "", (const struct option[]){{0}}, NULL) != -1)
		return tools_usage(&tools_cmd_umount, NULL);
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_umount, "expected one MOUNTPOINT");
	rc = tools_mount_pid(argv[optind], &pid);
	if (!rc && run_fusermount(argv[optind])) {
		tools_err("%s: fusermount3 -u failed (a file still open?)", argv[optind]);
		return TOOLS_ERR;
	}
	if (!rc && wait_exit((pid_t)pid, 120)) {
		tools_err("%s: the daemon (pid %ld) did not exit", argv[optind], pid);
		return TOOLS_ERR;
	}
	return rc ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_umount = {
	.name = "umount",
	.summary = "stop a `vdelta mount` cleanly and wait until its disks are closed",
	.usage = "MOUNTPOINT\n"
		 "\n"
		 "Unmounts (fusermount3 -u), then waits for the daemon to flush, clear the\n"
		 "unclean flags and release its locks; returns when the disks are free.",
	.run = umount_run,
};
