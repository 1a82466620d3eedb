/* tools — `vdelta mount` and `vdelta umount` (top layer, over chain.h and
 * the FUSE front end fuse_front.h).
 *
 * Owns: the command lines, turning DISK[:MODE][=NAME] arguments (or the
 * disk and mountpoint lines of --config FILE, whose other keys are the long
 * options) into disks of one serving core (chain_serve.c), the messages a
 * user sees before the mount returns (every startup failure, the new
 * deltas of --snapshot), readiness and stop told to a service manager
 * (tools_notify.c), and the wait for the daemon's clean exit at umount.
 * The serving itself is fuse_front_run's; `--status` is
 * tools_mount_status.c; the file format of --config tools_mount_conf.c; the
 * fstab form tools_fstab.c.
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

#include "group.h"
#include "fuse_front.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_mount, tools_cmd_umount;

#define MOUNT_MAX_CONF_DISKS 1024u /* disk lines of one config file */

struct mount_args {
	struct fuse_front_opts fo;
	enum chain_serve_mode mode;
	const char *status_of;
	bool json;
	char *fuse_opts;                 /* the -o lists, joined (fo.mount_opts) */
	const char *conf_file;           /* --config FILE */
	int nr_modes;                    /* mode options seen (at most one) */
	int conf_rc;                     /* TOOLS_* of reading the file */
	char **conf_disks, *conf_mnt;    /* what the file names */
	unsigned nr_conf_disks;
	bool outside;                    /* --outside-extents */
};

/* ---- DISK[:MODE][=NAME] ------------------------------------------------------- */

/* The serving core's split, and a name that is not the control file's. */
static int disk_arg(char *arg, enum chain_serve_mode dflt, char **name,
		    enum chain_serve_mode *mode)
{
	int err = chain_serve_disk_arg(arg, dflt, name, mode);

	if (!err && *name && !strcmp(*name, FUSE_FRONT_STATUS))
		return -EINVAL;
	return err;
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
		name = own = chain_serve_default_name(path);
	if (name && chain_server_find(s, name)) {
		tools_err("%s: two disks named '%s': give one another name (DISK=NAME)",
			  arg, name);
		rc = TOOLS_ERR;
	} else if (name) {
		rc = group_serve_add(s, path, name, mode, NULL);
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

static bool log_to_syslog; /* detached: stderr is /dev/null */

/* Once detached, the daemon's stderr is /dev/null: its messages go to
 * syslog as well (ident vdelta-mount), where an admin finds a late error.
 * In the foreground (under systemd: the journal) stderr is enough. */
static void mount_log(void *opaque, enum vd_log_level level, const char *msg)
{
	int prio = level == VD_LOG_ERROR ? LOG_ERR : level == VD_LOG_WARN ? LOG_WARNING
									  : LOG_DEBUG;

	if (level != VD_LOG_ERROR && level != VD_LOG_WARN && !getenv("VDELTA_DEBUG"))
		return;
	if (log_to_syslog)
		syslog(prio, "%s", msg);
	if (level == VD_LOG_ERROR)
		tools_err("%s", msg); /* counted: tools_fail adds nothing */
	else if (level == VD_LOG_WARN)
		tools_warn("%s", msg);
	else
		fprintf(stderr, "vdelta: debug: %s\n", msg);
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

/* The service manager, if any, learns that the mount serves
 * (tools_notify.c; in the serving process, once stop signals are handled). */
static void mount_ready(void *opaque)
{
	struct chain_server *s = opaque;
	char msg[128];
	int rc;

	snprintf(msg, sizeof msg, "READY=1\nSTATUS=serving %u disk%s\nMAINPID=%ld",
		 chain_server_nr_disks(s), chain_server_nr_disks(s) == 1 ? "" : "s",
		 (long)getpid());
	rc = tools_notify(msg);
	if (rc)
		tools_warn("cannot notify NOTIFY_SOCKET=%s: %s", getenv("NOTIFY_SOCKET"),
			   strerror(-rc));
}

/* The absolute folder to mount on, or "/dev/fd/N": a /dev/fuse descriptor
 * that mount.fuse3 -o drop_privileges mounted already. */
static int mount_point(const char *mnt, char **out)
{
	struct stat st;

	*out = !strncmp(mnt, "/dev/fd/", 8) ? strdup(mnt) : realpath(mnt, NULL);
	if (!*out)
		return errno ? -errno : -ENOMEM;
	if (strncmp(mnt, "/dev/fd/", 8) && (stat(*out, &st) || !S_ISDIR(st.st_mode))) {
		free(*out);
		*out = NULL;
		return -ENOTDIR;
	}
	return 0;
}

static int mount_serve(char *const *disks, unsigned nr, const char *mnt, struct mount_args *a)
{
	struct chain_server *s;
	char *abs_mnt;
	int rc = mount_point(mnt, &abs_mnt);

	if (rc)
		return tools_fail(mnt, rc);
	raise_nofile();
	rc = chain_server_create_opts(&(struct chain_server_opts){
		.open_flags = a->outside ? CHAIN_OPEN_OUTSIDE_OK : 0 }, &s);
	rc = rc ? tools_fail(mnt, rc) : TOOLS_OK;
	for (unsigned i = 0; i < nr && rc == TOOLS_OK; i++)
		rc = add_disk(s, disks[i], a->mode);
	if (rc == TOOLS_OK) {
		report_disks(s);
		openlog("vdelta-mount", LOG_PID, LOG_DAEMON);
		log_to_syslog = !a->fo.foreground;
		vd_log_set(mount_log, NULL);
		a->fo.ready = mount_ready;
		a->fo.opaque = s;
		rc = fuse_front_run(s, abs_mnt, &a->fo);
		rc = rc ? tools_fail(mnt, rc) : TOOLS_OK;
		tools_notify("STOPPING=1"); /* flushing and closing from here */
	}
	if (chain_server_close(s) && rc == TOOLS_OK)
		rc = tools_fail(mnt, -EIO);
	free(abs_mnt);
	return rc;
}

enum { OPT_RO = 256, OPT_NP, OPT_SNAP, OPT_CACHE, OPT_STATUS, OPT_JSON, OPT_THREADS,
       OPT_CONFIG, OPT_OUTSIDE };

static const struct option mount_opts[] = {
	{"foreground", no_argument, NULL, 'f'},
	{"options", required_argument, NULL, 'o'},
	{"ro", no_argument, NULL, OPT_RO},
	{"nonpersistent", no_argument, NULL, OPT_NP},
	{"snapshot", no_argument, NULL, OPT_SNAP},
	{"cache", required_argument, NULL, OPT_CACHE},
	{"threads", required_argument, NULL, OPT_THREADS},
	{"config", required_argument, NULL, OPT_CONFIG},
	{"outside-extents", no_argument, NULL, OPT_OUTSIDE},
	{"status", no_argument, NULL, OPT_STATUS},
	{"json", no_argument, NULL, OPT_JSON},
	{NULL, 0, NULL, 0},
};

/* -o lists add up, comma-separated, as mount(8) reads them. */
static int add_fuse_opts(struct mount_args *a, const char *list)
{
	char *joined;

	if (!a->fuse_opts)
		joined = strdup(list);
	else if (asprintf(&joined, "%s,%s", a->fuse_opts, list) < 0)
		joined = NULL;
	if (!joined)
		return -ENOMEM;
	free(a->fuse_opts);
	a->fo.mount_opts = a->fuse_opts = joined;
	return 0;
}

static int mount_conf_key(void *opaque, const char *file, unsigned line, const char *key,
			  const char *value);

/* One option (from the command line or the config file, arg its value). */
static int mount_opt(int c, const char *arg, struct mount_args *a)
{
	switch (c) {
	case 'f': a->fo.foreground = true; return 0;
	case 'o': return add_fuse_opts(a, arg);
	case OPT_RO: a->mode = CHAIN_SERVE_RO; break;
	case OPT_NP: a->mode = CHAIN_SERVE_NONPERSISTENT; break;
	case OPT_SNAP: a->mode = CHAIN_SERVE_SNAPSHOT; break;
	case OPT_STATUS: a->status_of = ""; return 0;
	case OPT_JSON: a->json = true; return 0;
	case OPT_OUTSIDE: a->outside = true; return 0;
	case OPT_THREADS: a->fo.max_threads = (unsigned)atoi(arg);
		return a->fo.max_threads ? 0 : -EINVAL;
	case OPT_CONFIG:
		if (a->conf_file)
			return -EINVAL;
		a->conf_file = arg;
		a->conf_rc = tools_mount_conf_read(arg, mount_conf_key, a);
		return a->conf_rc ? -ECANCELED : 0;
	case OPT_CACHE:
		if (!strcmp(arg, "none") || !strcmp(arg, "kernel")) {
			a->fo.cache = arg[0] == 'n' ? FUSE_FRONT_CACHE_NONE
						    : FUSE_FRONT_CACHE_KERNEL;
			return 0;
		}
		return -EINVAL;
	default: return -EINVAL;
	}
	return ++a->nr_modes > 1 ? -EINVAL : 0;
}

/* ---- --config FILE: "key = value" lines (tools_mount_conf.c) -------------------- */

static int conf_path(const char *file, unsigned line, const char *key, const char *value,
		     char **out)
{
	if (!value || *value != '/') {
		tools_err("%s:%u: %s: an absolute path is expected", file, line, key);
		return TOOLS_USAGE;
	}
	if (*out && !strcmp(key, "mountpoint")) {
		tools_err("%s:%u: a second mountpoint", file, line);
		return TOOLS_USAGE;
	}
	free(*out);
	*out = strdup(value);
	return *out ? TOOLS_OK : tools_fail(file, -ENOMEM);
}

static int conf_disk(struct mount_args *a, const char *file, unsigned line, const char *value)
{
	char **v;

	if (a->nr_conf_disks >= MOUNT_MAX_CONF_DISKS) {
		tools_err("%s:%u: more than %u disks", file, line, MOUNT_MAX_CONF_DISKS);
		return TOOLS_USAGE;
	}
	v = realloc(a->conf_disks, (a->nr_conf_disks + 1) * sizeof *v);
	if (!v)
		return tools_fail(file, -ENOMEM);
	a->conf_disks = v;
	v[a->nr_conf_disks] = NULL;
	if (conf_path(file, line, "disk", value, &v[a->nr_conf_disks]))
		return TOOLS_USAGE;
	a->nr_conf_disks++;
	return TOOLS_OK;
}

/* A key is "disk", "mountpoint", or a long option of mount_opts. */
static int mount_conf_key(void *opaque, const char *file, unsigned line, const char *key,
			  const char *value)
{
	struct mount_args *a = opaque;
	const struct option *o = mount_opts;

	if (!strcmp(key, "disk"))
		return conf_disk(a, file, line, value);
	if (!strcmp(key, "mountpoint"))
		return conf_path(file, line, key, value, &a->conf_mnt);
	while (o->name && strcmp(o->name, key))
		o++;
	if (!o->name || o->val == OPT_CONFIG || o->val == OPT_STATUS || o->val == OPT_JSON) {
		tools_err("%s:%u: unknown key '%s'", file, line, key);
		return TOOLS_USAGE;
	}
	if ((o->has_arg == required_argument) != (value != NULL)) {
		tools_err("%s:%u: %s %s", file, line, key,
			  value ? "takes no value" : "needs a value (key = value)");
		return TOOLS_USAGE;
	}
	if (mount_opt(o->val, value, a)) {
		tools_err("%s:%u: bad %s (cache is none or kernel; threads a count; one "
			  "of ro, nonpersistent, snapshot)", file, line, key);
		return TOOLS_USAGE;
	}
	return TOOLS_OK;
}

static void mount_args_free(struct mount_args *a)
{
	for (unsigned i = 0; i < a->nr_conf_disks; i++)
		free(a->conf_disks[i]);
	free(a->conf_disks);
	free(a->conf_mnt);
	free(a->fuse_opts);
}

/* What to serve: the disks and mountpoint of the config file, or argv's. */
static int mount_what(struct mount_args *a, int argc, char **argv)
{
	if (a->status_of) {
		if (optind != argc - 1)
			return tools_usage(&tools_cmd_mount, "--status takes one MOUNTPOINT");
		return tools_mount_status(argv[optind], a->json);
	}
	if (a->conf_file) {
		if (optind != argc)
			return tools_usage(&tools_cmd_mount, "with --config, the disks and "
					   "the mountpoint come from the file");
		if (!a->conf_mnt || !a->nr_conf_disks) {
			tools_err("%s: no %s line", a->conf_file, a->conf_mnt ? "disk" : "mountpoint");
			return TOOLS_USAGE;
		}
		return mount_serve(a->conf_disks, a->nr_conf_disks, a->conf_mnt, a);
	}
	if (argc - optind < 2)
		return tools_usage(&tools_cmd_mount, "expected DISK... MOUNTPOINT");
	return mount_serve(argv + optind, (unsigned)(argc - optind - 1), argv[argc - 1], a);
}

static int mount_run(int argc, char **argv)
{
	struct mount_args a = { .fo.cache = FUSE_FRONT_CACHE_NONE, .mode = CHAIN_SERVE_RW };
	int c, rc = TOOLS_OK, err;

	while (rc == TOOLS_OK && (c = getopt_long(argc, argv, "fo:", mount_opts, NULL)) != -1)
		if ((err = mount_opt(c, optarg, &a)))
			rc = err == -ECANCELED ? a.conf_rc : err == -ENOMEM ? tools_fail("-o", err)
			     : tools_usage(&tools_cmd_mount, c == '?' ? NULL :
					   "bad option (--cache is none or kernel; give one of "
					   "--ro, --nonpersistent, --snapshot; one --config)");
	if (rc == TOOLS_OK)
		rc = mount_what(&a, argc, argv);
	mount_args_free(&a);
	return rc;
}

const struct tools_cmd tools_cmd_mount = {
	.name = "mount",
	TOOLS_PAGE(mount),
	.run = mount_run,
	.own_front_door = true,
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
bool tools_pid_exited(pid_t pid)
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

int tools_wait_exit(pid_t pid, unsigned timeout_s)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };

	for (unsigned i = 0; i < timeout_s * 50; i++) {
		if (tools_pid_exited(pid))
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
	if (!rc && tools_wait_exit((pid_t)pid, 120)) {
		tools_err("%s: the daemon (pid %ld) did not exit", argv[optind], pid);
		return TOOLS_ERR;
	}
	return rc ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_umount = {
	.name = "umount",
	TOOLS_PAGE(umount),
	.run = umount_run,
};
