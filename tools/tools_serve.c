/* tools — `vdelta serve`: linked disks to other hosts over NBD (top layer,
 * a thin wrapper over nbdkit and the vdelta plugin, nbd/nbd_plugin.c).
 *
 * Owns: the command line in the mount's words, the nbdkit command it
 * becomes (the plugin found beside this binary in a build tree, else by
 * name in nbdkit's plugin folder), the pid file, the export URIs printed
 * once serving, and `--stop` (SIGTERM: nbdkit closes the connections, the
 * plugin flushes every disk and releases its locks; then the pid file and
 * the socket are removed).  Every start-up check and message is the
 * plugin's, printed by nbdkit before it detaches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chain.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_serve;

#define SERVE_PLUGIN "nbdkit-vdelta-plugin.so"
#define SERVE_PORT "10809"
#define SERVE_MAX_ARGS 24 /* nbdkit's arguments besides the disks */

struct serve_args {
	const char *port, *bind, *psk, *mode;
	char *sock, *pidfile, *psk_abs; /* absolute (nbdkit changes folder) */
	bool foreground, stop;
};

/* ---- paths ------------------------------------------------------------------------ */

static char *abs_path(const char *p)
{
	char cwd[PATH_MAX];

	if (p[0] == '/' || !getcwd(cwd, sizeof cwd))
		return strdup(p);
	return vd_path_join(cwd, p);
}

/* The plugin of this build tree (build/tools/vdelta -> build/nbd/), else
 * the installed one, which nbdkit finds by name. */
static char *plugin_path(void)
{
	char exe[PATH_MAX], *p = NULL;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash;

	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash && asprintf(&p, "%.*s/../nbd/" SERVE_PLUGIN, (int)(slash - exe),
				      exe) > 0 && access(p, R_OK) == 0)
			return p;
	}
	free(p);
	return strdup("vdelta");
}

/* SOCKET.pid beside a socket; for TCP one per port in the runtime folder. */
static char *default_pidfile(const struct serve_args *a)
{
	const char *run = getenv("XDG_RUNTIME_DIR");
	char *p = NULL;

	if (a->sock)
		return asprintf(&p, "%s.pid", a->sock) < 0 ? NULL : p;
	if (asprintf(&p, "%s/vdelta-serve-%s.pid", run && *run ? run : "/tmp",
		     a->port ? a->port : SERVE_PORT) < 0)
		return NULL;
	return p;
}

/* ---- the running server ------------------------------------------------------------- */

/* The pid in the pid file when it is a live nbdkit, else 0. */
static pid_t live_pid(const char *pidfile)
{
	char path[64], comm[32] = "";
	long pid = 0;
	FILE *f = fopen(pidfile, "r");

	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1 || pid <= 1 || pid > INT_MAX)
		pid = 0;
	fclose(f);
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	f = pid ? fopen(path, "r") : NULL;
	if (!f)
		return 0;
	if (!fgets(comm, sizeof comm, f))
		comm[0] = '\0';
	fclose(f);
	return strncmp(comm, "nbdkit", 6) || tools_pid_exited((pid_t)pid) ? 0 : (pid_t)pid;
}

/* A socket file left by a server that is gone (nbdkit does not remove
 * it, and refuses to start over it): nobody answers on it. */
static void remove_stale_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (stat(path, &st) || !S_ISSOCK(st.st_mode) || strlen(path) >= sizeof sa.sun_path)
		return;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) && errno == ECONNREFUSED)
		unlink(path);
	if (fd >= 0)
		close(fd);
}

/* ---- start ----------------------------------------------------------------------------- */

/* nbdkit's command line: options, the plugin, mode=, one disk= per disk. */
static char **nbdkit_argv(const struct serve_args *a, char *plugin, char **disks, int nr)
{
	char **v = calloc(SERVE_MAX_ARGS + (size_t)nr + 1, sizeof *v);
	int n = 0;

	if (!v)
		return NULL;
	v[n++] = "nbdkit";
	if (a->foreground)
		v[n++] = "-f";
	v[n++] = "--pidfile";
	v[n++] = a->pidfile;
	if (a->sock) {
		v[n++] = "-U";
		v[n++] = a->sock;
	} else {
		v[n++] = "-p";
		v[n++] = (char *)(a->port ? a->port : SERVE_PORT);
	}
	if (a->bind) {
		v[n++] = "-i";
		v[n++] = (char *)a->bind;
	}
	if (a->psk) {
		v[n++] = "--tls=require";
		v[n++] = "--tls-psk";
		v[n++] = a->psk_abs;
	}
	v[n++] = plugin;
	if (a->mode)
		v[n++] = (char *)a->mode;
	for (int i = 0; i < nr; i++)
		v[n++] = disks[i];
	return v;
}

/* One line per export: its name and the URI a client opens. */
static void print_uris(const struct serve_args *a, char **disks, int nr)
{
	const char *tls = a->psk ? "s" : "";

	for (int i = 0; i < nr; i++) {
		char *arg = strdup(disks[i] + strlen("disk=")), *name = NULL, *own = NULL;
		enum chain_serve_mode m;
		if (!arg || chain_serve_disk_arg(arg, CHAIN_SERVE_RW, &name, &m)) {
			free(arg);
			continue;
		}
		if (!name)
			name = own = chain_serve_default_name(arg);
		if (name && a->sock)
			printf("%s\tnbd%s+unix:///%s?socket=%s\n", name, tls, name, a->sock);
		else if (name)
			printf("%s\tnbd%s://%s:%s/%s\n", name, tls, a->bind ? a->bind : "localhost",
			       a->port ? a->port : SERVE_PORT, name);
		free(own);
		free(arg);
	}
}

/* nbdkit daemonizes itself: its first process exits once the socket is
 * bound (or with the plugin's refusal); the daemon writes the pid file
 * just after (serve_ready waits for it). */
static int run_nbdkit(char **argv)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return tools_fail("nbdkit", -errno);
	if (pid == 0) {
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return tools_fail("nbdkit", -errno);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
		tools_err("nbdkit: not found (install Debian's nbdkit)");
		return TOOLS_ERR;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		tools_err("nbdkit did not start (its message above says why)");
		return TOOLS_ERR;
	}
	return TOOLS_OK;
}

/* The daemon's pid file, once it is written (10 s at most). */
static int serve_ready(const struct serve_args *a)
{
	for (int i = 0; i < 1000; i++) {
		if (live_pid(a->pidfile))
			return TOOLS_OK;
		usleep(10000);
	}
	tools_err("%s: nbdkit started but wrote no pid file", a->pidfile);
	return TOOLS_ERR;
}

static int serve_start(struct serve_args *a, char **disks, int nr)
{
	char *plugin = plugin_path(), **argv = plugin ? nbdkit_argv(a, plugin, disks, nr) : NULL;
	pid_t pid = live_pid(a->pidfile);
	int rc = argv ? TOOLS_OK : tools_fail("serve", -ENOMEM);

	if (rc == TOOLS_OK && pid) {
		tools_err("%s: already serving (nbdkit pid %ld): `vdelta serve --stop` first",
			  a->pidfile, (long)pid);
		rc = TOOLS_ERR;
	}
	if (rc == TOOLS_OK) {
		unlink(a->pidfile);
		if (a->sock)
			remove_stale_socket(a->sock);
		fflush(stdout);
		if (a->foreground) {
			execvp(argv[0], argv);
			tools_err("nbdkit: %s (install Debian's nbdkit)", strerror(errno));
			rc = TOOLS_ERR;
		} else {
			rc = run_nbdkit(argv);
		}
		if (rc == TOOLS_OK)
			rc = serve_ready(a);
	}
	if (rc == TOOLS_OK)
		print_uris(a, disks, nr);
	free(argv);
	free(plugin);
	return rc;
}

/* ---- stop ------------------------------------------------------------------------------ */

static int serve_stop(const struct serve_args *a)
{
	pid_t pid = live_pid(a->pidfile);

	if (!pid) {
		tools_err("%s: no nbdkit is serving from it", a->pidfile);
		return TOOLS_ERR;
	}
	if (kill(pid, SIGTERM))
		return tools_fail(a->pidfile, -errno);
	if (tools_wait_exit(pid, 120)) {
		tools_err("%s: nbdkit (pid %ld) did not exit", a->pidfile, (long)pid);
		return TOOLS_ERR;
	}
	unlink(a->pidfile);
	if (a->sock)
		unlink(a->sock);
	return TOOLS_OK;
}

/* ---- command line ------------------------------------------------------------------------ */

enum { OPT_TLS_PSK = 256, OPT_PIDFILE, OPT_STOP, OPT_RO, OPT_NP, OPT_SNAP };

static const struct option serve_opts[] = {
	{"foreground", no_argument, NULL, 'f'},
	{"port", required_argument, NULL, 'p'},
	{"unix", required_argument, NULL, 'U'},
	{"bind", required_argument, NULL, 'b'},
	{"tls-psk", required_argument, NULL, OPT_TLS_PSK},
	{"pid-file", required_argument, NULL, OPT_PIDFILE},
	{"stop", no_argument, NULL, OPT_STOP},
	{"ro", no_argument, NULL, OPT_RO},
	{"nonpersistent", no_argument, NULL, OPT_NP},
	{"snapshot", no_argument, NULL, OPT_SNAP},
	{NULL, 0, NULL, 0},
};

static int serve_opt(int c, struct serve_args *a)
{
	switch (c) {
	case 'f': a->foreground = true; break;
	case 'p': a->port = optarg; break;
	case 'U': free(a->sock); a->sock = abs_path(optarg); break;
	case 'b': a->bind = optarg; break;
	case OPT_TLS_PSK: a->psk = optarg; break;
	case OPT_PIDFILE: free(a->pidfile); a->pidfile = abs_path(optarg); break;
	case OPT_STOP: a->stop = true; break;
	case OPT_RO: a->mode = a->mode ? "" : "mode=ro"; break;
	case OPT_NP: a->mode = a->mode ? "" : "mode=nonpersistent"; break;
	case OPT_SNAP: a->mode = a->mode ? "" : "mode=snapshot"; break;
	default: return -EINVAL;
	}
	return a->mode && !*a->mode ? -EINVAL : 0;
}

/* Each DISK[:MODE][=NAME] as the plugin's disk=... parameter. */
static char **disk_params(char **args, int nr)
{
	char **v = calloc((size_t)nr + 1, sizeof *v);

	for (int i = 0; v && i < nr; i++) {
		if (asprintf(&v[i], "disk=%s", args[i]) < 0) {
			v[i] = NULL;
			return v; /* the caller frees what was made and fails */
		}
	}
	return v;
}

static int serve_main(struct serve_args *a, char **args, int nr)
{
	char **disks = a->stop ? NULL : disk_params(args, nr);
	int rc = TOOLS_OK, n = 0;

	if (!a->pidfile)
		a->pidfile = default_pidfile(a);
	if (a->psk)
		a->psk_abs = abs_path(a->psk);
	while (disks && n < nr && disks[n])
		n++;
	if (!a->pidfile || (a->psk && !a->psk_abs) || (!a->stop && n != nr))
		rc = tools_fail("serve", -ENOMEM);
	else if (a->stop)
		rc = serve_stop(a);
	else
		rc = serve_start(a, disks, nr);
	for (int i = 0; i < n; i++)
		free(disks[i]);
	free(disks);
	return rc;
}

static int serve_run(int argc, char **argv)
{
	struct serve_args a = { 0 };
	int c, rc;

	while ((c = getopt_long(argc, argv, "fp:U:b:", serve_opts, NULL)) != -1)
		if (serve_opt(c, &a)) {
			free(a.sock);
			free(a.pidfile);
			return tools_usage(&tools_cmd_serve, c == '?' ? NULL :
					   "give one of --ro, --nonpersistent, --snapshot");
		}
	if (a.sock && (a.port || a.bind))
		rc = tools_usage(&tools_cmd_serve, "-U and -p/-b exclude each other");
	else if (a.stop == (optind < argc))
		rc = tools_usage(&tools_cmd_serve, a.stop ? "--stop takes no DISK"
							  : "expected DISK...");
	else
		rc = serve_main(&a, argv + optind, argc - optind);
	free(a.sock);
	free(a.pidfile);
	free(a.psk_abs);
	return rc;
}

const struct tools_cmd tools_cmd_serve = {
	.name = "serve",
	TOOLS_PAGE(serve),
	.run = serve_run,
};
