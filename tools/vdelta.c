/* tools — vdelta, the command-line program (top layer: uses vmdk.h and,
 * through the chain commands, chain.h).
 *
 * Owns: main, the command table, `help`, `--version`, the log callback that
 * prints library messages, the error helpers declared in tools.h, and the
 * dispatch of mount.fuse3's form `vdelta SOURCE MOUNTPOINT -o OPTS` to
 * `vdelta mount` (tools_fstab.c).  The help text of each command is
 * generated from its page (tools/pages, tools_pages.c).
 * Exit status: 0 ok, 1 error, 2 usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools.h"

/* The command table: one X(name) line per tools_cmd_name. */
#define TOOLS_CMDS(X) \
	X(create)     \
	X(info)       \
	X(convert)    \
	X(check)      \
	X(snapshot)   \
	X(clone)      \
	X(map)        \
	X(digest)     \
	X(tree)       \
	X(mount)      \
	X(umount)     \
	X(serve)      \
	X(bench)      \
	X(commit)     \
	X(delete)     \
	X(revert)     \
	X(promote)    \
	X(consolidate) \
	X(relocate)   \
	X(adopt)      \
	X(recover)    \
	X(rbd)        \
	X(pack)       \
	X(unpack)

#define TOOLS_DECLARE(n) extern const struct tools_cmd tools_cmd_##n;
#define TOOLS_REF(n) &tools_cmd_##n,
TOOLS_CMDS(TOOLS_DECLARE)
static const struct tools_cmd *const cmds[] = {TOOLS_CMDS(TOOLS_REF)};
#define NR_CMDS (sizeof cmds / sizeof cmds[0])

static unsigned nr_errors;   /* error messages printed so far */
static unsigned seen_errors; /* nr_errors at the last tools_fail */
static bool quiet;           /* tools_log_quiet */
/* Syslog priorities before error and warning lines when stderr is the
 * journal (sd-daemon(3)): "<3>", "<4>"; else nothing. */
static const char *prio_err = "", *prio_warn = "";

/* ---- messages -------------------------------------------------------------- */

void tools_log_quiet(bool on)
{
	quiet = on;
}

static void log_cb(void *opaque, enum vd_log_level level, const char *msg)
{
	if (quiet)
		return;
	if (level == VD_LOG_ERROR) {
		nr_errors++;
		fprintf(stderr, "%svdelta: %s\n", prio_err, msg);
	} else if (level == VD_LOG_WARN) {
		fprintf(stderr, "%svdelta: warning: %s\n", prio_warn, msg);
	} else if (getenv("VDELTA_DEBUG")) {
		fprintf(stderr, "vdelta: debug: %s\n", msg);
	}
}

void tools_err(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	nr_errors++;
	fprintf(stderr, "%svdelta: ", prio_err);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void tools_warn(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	fprintf(stderr, "%svdelta: warning: ", prio_warn);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int tools_fail(const char *file, int rc)
{
	if (nr_errors == seen_errors)
		tools_err("%s: %s", file, strerror(rc < 0 ? -rc : rc));
	seen_errors = nr_errors;
	return TOOLS_ERR;
}

unsigned tools_nr_errors(void)
{
	return nr_errors;
}

int tools_usage(const struct tools_cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	if (fmt) {
		fprintf(stderr, "%svdelta: ", prio_err);
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	fprintf(stderr, "Try 'vdelta help %s' for more information.\n", cmd->name);
	return TOOLS_USAGE;
}

const char *tools_human_size(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGTPE";
	double v = (double)bytes;
	int u = -1;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, "%.1f %ciB", v, units[u]);
	return buf;
}

/* ---- help ------------------------------------------------------------------ */

static const struct tools_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < NR_CMDS; i++)
		if (!strcmp(cmds[i]->name, name))
			return cmds[i];
	return NULL;
}

static void print_overview(FILE *f)
{
	fprintf(f, "Usage: vdelta COMMAND [OPTIONS] ARGS...\n"
		   "       vdelta help [COMMAND] | --help | --version\n\n"
		   "Commands:\n");
	for (size_t i = 0; i < NR_CMDS; i++)
		fprintf(f, "  %-10s %s\n", cmds[i]->name, cmds[i]->summary);
	fprintf(f, "\nRun 'vdelta help COMMAND' or 'vdelta COMMAND --help' for "
		   "a command's options.\n");
}

static void print_cmd_help(const struct tools_cmd *cmd)
{
	printf("vdelta %s: %s\n\nUsage: vdelta %s %s\n", cmd->name, cmd->summary,
	       cmd->name, cmd->usage);
}

static int help_main(int argc, char **argv)
{
	const struct tools_cmd *cmd;

	if (argc < 2) {
		print_overview(stdout);
		return TOOLS_OK;
	}
	cmd = find_cmd(argv[1]);
	if (!cmd) {
		fprintf(stderr, "vdelta: unknown command '%s'\n", argv[1]);
		return TOOLS_USAGE;
	}
	print_cmd_help(cmd);
	return TOOLS_OK;
}

/* `vdelta CMD ... --help ...`: anything before a "--" asks for help. */
static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--help"))
			return true;
	return false;
}

/* ---- main ------------------------------------------------------------------ */

static int run_cmd(const struct tools_cmd *cmd, int argc, char **argv)
{
	char *name;
	int ret;

	if (wants_help(argc, argv)) {
		print_cmd_help(cmd);
		return TOOLS_OK;
	}
	/* argv[0] prefixes getopt's own messages */
	if (asprintf(&name, "vdelta %s", cmd->name) < 0) {
		tools_err("%s", strerror(ENOMEM));
		return TOOLS_ERR;
	}
	argv[0] = name;
	if (!cmd->own_front_door)
		tools_recover_args(argc, argv, cmd->writes);
	ret = cmd->run(argc, argv);
	free(name);
	return ret;
}

/* mount.fuse3's `vdelta SOURCE MOUNTPOINT -o OPTS` (tools_fstab.c). */
static int fstab_mount(int argc, char **argv)
{
	struct tools_fstab f;
	int ret = tools_fstab_parse(argc, argv, &f);

	if (ret == TOOLS_OK && !f.fake)
		ret = run_cmd(&tools_cmd_mount, f.argc, f.argv);
	tools_fstab_free(&f);
	return ret;
}

static void print_version(void)
{
	if (*tools_version_commit)
		printf("vdelta %s (commit %s)\n", VDELTA_VERSION, tools_version_commit);
	else
		printf("vdelta %s\n", VDELTA_VERSION);
}

int main(int argc, char **argv)
{
	const struct tools_cmd *cmd;
	int ret;

	if (tools_notify_journal()) {
		prio_err = "<3>";
		prio_warn = "<4>";
	}
	vd_log_set(log_cb, NULL);
	if (argc < 2) {
		print_overview(stderr);
		return TOOLS_USAGE;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
		print_version();
		return TOOLS_OK;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return help_main(1, argv + 1);
	if (!strcmp(argv[1], "help"))
		return help_main(argc - 1, argv + 1);
	cmd = find_cmd(argv[1]);
	if (!cmd && tools_fstab_form(argc, argv))
		return fstab_mount(argc, argv);
	if (!cmd) {
		fprintf(stderr, "vdelta: unknown command '%s'\n"
				"Try 'vdelta help' for the list of commands.\n",
			argv[1]);
		return TOOLS_USAGE;
	}
	ret = run_cmd(cmd, argc - 1, argv + 1);
	if (fflush(stdout) != 0 && ret == TOOLS_OK) {
		tools_err("write error on standard output: %s", strerror(errno));
		ret = TOOLS_ERR;
	}
	return ret;
}
