/* tools — private header of the vdelta command-line program (top layer).
 * Never included outside tools/.
 *
 * Owns: the command table entry (struct tools_cmd), exit codes, the error
 * helpers every command uses, the JSON writer (tools_json.c), the progress
 * meter (tools_progress.c) and the one place that opens a disk for reading
 * (tools_disk.c).
 *
 * Adding a command is three things: its file, one table line, its page.
 *  1. tools_NAME.c (listed in tools/meson.build) defining
 *	#include "tools_pages.h"
 *	const struct tools_cmd tools_cmd_NAME = {
 *		.name = "NAME", TOOLS_PAGE(NAME), .run = NAME_run,
 *	};
 *  2. one X(NAME) line in TOOLS_CMDS in vdelta.c;
 *  3. its page source tools/pages/vdelta-NAME.1.scd (and NAME in the list in
 *     tools/pages/meson.build).  The build makes from the page both the
 *     summary and help text (tools_pages.c, which TOOLS_PAGE names) and
 *     the man page vdelta-NAME(1), and the shell completions learn the
 *     command's options from it (HACKING.md, "Pages").
 *
 * Errors: the library reports its own errors through the log callback that
 * vdelta.c installs (printed as "vdelta: <msg>").  A command reports only
 * what it detects itself (tools_err) and ends a failed command with
 * tools_fail(), which prints a generic "FILE: strerror" only when no error
 * was printed since the last tools_fail — so every failure is reported
 * exactly once.
 */
#ifndef VDELTA_TOOLS_H
#define VDELTA_TOOLS_H

#include <stdio.h>
#include <sys/types.h>

#include "common.h"
#include "vmdk.h"

/* ---- commands and exit status -------------------------------------------------- */

enum { TOOLS_OK = 0, TOOLS_ERR = 1, TOOLS_USAGE = 2 };

struct tools_cmd {
	const char *name;
	const char *summary; /* one line, for `vdelta help` (the page's NAME) */
	/* Synopsis after "vdelta NAME " on the first line, then a blank line,
	 * the description and the options, for `vdelta help NAME` (the page's
	 * SYNOPSIS, DESCRIPTION and OPTIONS rendered as text). */
	const char *usage;
	/* argv[0] is "vdelta NAME" (for getopt's messages); returns TOOLS_*. */
	int (*run)(int argc, char **argv);
	/* The command changes disks: interrupted group operations near the
	 * disks it names are finished before it runs (otherwise they are only
	 * reported: a command that reads never removes or rewrites anything). */
	bool writes;
	/* The command has its own front door: it is the recovery itself
	 * (`recover`), or it serves disks (mount), each recovered as it is
	 * opened (group_serve_add); the pass above is not made (it would read
	 * every folder once more per disk, and report each record twice). */
	bool own_front_door;
};

/* Print "vdelta: <msg>" to stderr (a newline is added). */
void tools_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "vdelta: warning: <msg>" to stderr (not counted as an error). */
void tools_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report a failure on `file` unless an error (library or tools_err) was
 * printed since the last tools_fail; returns TOOLS_ERR. */
int tools_fail(const char *file, int rc);
/* Usage error: print msg (may be NULL: getopt already spoke) and a hint to
 * `vdelta help NAME`; returns TOOLS_USAGE. */
int tools_usage(const struct tools_cmd *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Number of error messages logged so far (library and tools). */
unsigned tools_nr_errors(void);
/* on: messages (library and tools_err) are dropped, not counted, until off. */
void tools_log_quiet(bool on);

/* Before a command runs (tools_recover.c): finish or roll back (finish
 * true) or report the interrupted group operations whose intent records
 * lie beside the layers of every VMDK its arguments name. */
void tools_recover_args(int argc, char **argv, bool finish);

/* ---- JSON writer (tools_json.c) --------------------------------------------------
 * Streams pretty-printed JSON to a FILE.  Inside an object every value has
 * a key; inside an array key is NULL.  Strings are escaped; invalid UTF-8
 * bytes become U+FFFD.  A NULL string value is written as null. */
#define TOOLS_JSON_MAX_DEPTH 16

struct tools_json {
	FILE *f;
	int depth;
	bool has_items[TOOLS_JSON_MAX_DEPTH];
};

void tools_json_init(struct tools_json *j, FILE *f);
void tools_json_obj_begin(struct tools_json *j, const char *key);
void tools_json_obj_end(struct tools_json *j);
void tools_json_arr_begin(struct tools_json *j, const char *key);
void tools_json_arr_end(struct tools_json *j);
void tools_json_str(struct tools_json *j, const char *key, const char *val);
void tools_json_u64(struct tools_json *j, const char *key, uint64_t val);
void tools_json_bool(struct tools_json *j, const char *key, bool val);
void tools_json_f64(struct tools_json *j, const char *key, double val);

/* ---- progress meter (tools_progress.c) -------------------------------------------
 * A one-line percentage on stderr, redrawn at most 10 times a second.  Shown
 * only when stderr is a terminal and the work has lasted over a second, or
 * from the start when forced (-p). */
struct tools_progress {
	uint64_t total;
	bool enabled, forced, shown;
	double start, last; /* seconds, CLOCK_MONOTONIC */
};

void tools_progress_init(struct tools_progress *p, uint64_t total, bool force);
void tools_progress_update(struct tools_progress *p, uint64_t done);
/* Draw the final state (if a meter is shown or forced) and end the line. */
void tools_progress_end(struct tools_progress *p, uint64_t done);
/* A library progress callback (group_progress_fn) drawing the meter at
 * opaque, whose total it sets. */
void tools_progress_cb(void *opaque, uint64_t done, uint64_t total);

/* ---- readable disks (tools_disk.c) -------------------------------------------------
 * The ONE place where commands open a disk to read its content: a raw file
 * or a VMDK (a delta is read through its chain).  Errors are reported inside. */
enum tools_fmt { TOOLS_FMT_AUTO, TOOLS_FMT_RAW, TOOLS_FMT_VMDK };

struct tools_disk;

/* "raw" / "vmdk" -> fmt; -EINVAL otherwise */
int tools_fmt_parse(const char *s, enum tools_fmt *out);
/* Guess from the first bytes: VMDK magics or a text descriptor, else raw. */
int tools_fmt_detect(const char *path, enum tools_fmt *out);
int tools_disk_open(const char *path, enum tools_fmt fmt, struct tools_disk **out);
void tools_disk_close(struct tools_disk *d); /* NULL is a no-op */
uint64_t tools_disk_size(const struct tools_disk *d); /* bytes of content */
const char *tools_disk_path(const struct tools_disk *d);
/* The VMDK behind the disk (the top layer of a chain); NULL for raw. */
struct vmdk_disk *tools_disk_vmdk(struct tools_disk *d);
/* Kind (VMDK_BS_*) and length of the run at off; a raw file's holes are
 * VMDK_BS_UNALLOC. */
int tools_disk_status(struct tools_disk *d, uint64_t off, uint64_t max_len,
		      enum vmdk_bs *kind, uint64_t *run_len);
int tools_disk_pread(struct tools_disk *d, void *buf, size_t len, uint64_t off);

/* ---- chain options of other commands (tools_chain*.c) ----------------------------- */

/* `vdelta create --parent PARENT NEW`: a blank delta over PARENT of `kind`
 * (GROUP_DELTA_AUTO or one); force_dirty freezes an unclean PARENT.  Returns TOOLS_*. */
int tools_chain_create_child(const char *parent, const char *new_path,
			     enum vmdk_subformat kind, bool force_dirty);
/* tools_disk.c: one VMDK opened for reading (vmdk_flags added to RDONLY)
 * with a reader's shared lock, as qemu-img info/check take it: refused while
 * a writer (qemu, vdelta) holds the disk; force_share (-U) takes none. */
int tools_vmdk_open_read(const char *path, unsigned vmdk_flags, bool force_share,
			 struct vmdk_disk **out);
/* `info --chain [--json] DISK`: every layer of DISK's chain; returns TOOLS_*. */
int tools_chain_info(const char *path, bool json, unsigned chain_flags);

/* ---- mount (tools_mount*.c) --------------------------------------------------------- */

/* `mount --status [--json] MOUNTPOINT`; returns TOOLS_*. */
int tools_mount_status(const char *mnt, bool json);
/* The pid of the daemon serving MOUNTPOINT (from its control file). */
int tools_mount_pid(const char *mnt, long *pid);
/* Wait until process pid has exited (gone, or a zombie whoever reaps it):
 * a daemon exits once it has flushed and closed every disk.  -ETIMEDOUT. */
int tools_wait_exit(pid_t pid, unsigned timeout_s);
/* Gone, or a zombie: it has exited, whoever reaps it. */
bool tools_pid_exited(pid_t pid);

/* ---- mounting at boot (tools_mount_conf.c, tools_fstab.c, tools_notify.c) ---------- */

/* One "key = value" line of a --config file (value NULL for a key alone);
 * reports its own errors naming file:line; returns TOOLS_*. */
typedef int tools_mount_conf_fn(void *opaque, const char *file, unsigned line,
				const char *key, const char *value);
/* Read the file at path ('#' comments, at most 64 KiB) and hand each pair
 * to fn in order, stopping at the first that fails; returns TOOLS_*. */
int tools_mount_conf_read(const char *path, tools_mount_conf_fn *fn, void *opaque);

/* `vdelta SOURCE MOUNTPOINT [-o OPTS]`, as mount.fuse3 runs a filesystem:
 * true when argv (argv[1] being no command) has that form. */
bool tools_fstab_form(int argc, char **argv);

/* The same as the arguments of `vdelta mount` (argv[0] "mount"). */
struct tools_fstab {
	int argc;
	char **argv;  /* NULL-terminated */
	char **words; /* argv's strings, owned (argv[0] may be replaced) */
	bool fake;    /* -f: mount(8)'s --fake, nothing to do */
};

/* Fills f (free it with tools_fstab_free even on failure); TOOLS_*. */
int tools_fstab_parse(int argc, char **argv, struct tools_fstab *f);
void tools_fstab_free(struct tools_fstab *f);

/* sd_notify(3): send state ("READY=1", "STOPPING=1", ...) to the service
 * manager at $NOTIFY_SOCKET; 0 when none is set, else 0 or -errno. */
int tools_notify(const char *state);
/* stderr is the journal ($JOURNAL_STREAM): lines may carry "<N>" priorities. */
bool tools_notify_journal(void);

/* The commit vdelta was built from ("" outside git; tools_version.c.in). */
extern const char tools_version_commit[];

/* ---- small shared helpers (vdelta.c) ----------------------------------------------- */

/* "1.5 GiB" style rendering into buf. */
const char *tools_human_size(uint64_t bytes, char *buf, size_t len);

/* ---- group commands (tools_group.c, tools_consolidate.c, tools_repair.c) ------------
 * commit, delete, revert, promote, consolidate, relocate, check --repair: shared
 * options (--dry-run, --json, --scan DIR, -p), the group loaded, the plan
 * printed as text or JSON. */
struct group;
struct group_plan;

/* The operation a command runs on its one DISK argument. */
typedef int tools_group_op(struct group *g, const char *disk, unsigned flags,
			   const struct vd_io *io, struct group_plan *plan);

/* Parse the shared options (plus --orphans when allow_orphans), load the
 * group, run op, print; returns TOOLS_*. */
int tools_group_main(const struct tools_cmd *cmd, int argc, char **argv,
		     tools_group_op *op, bool allow_orphans);

/* Show the plan's data moves with pr (a terminal, or force: -p); end with
 * tools_progress_end(pr, pr->total). */
void tools_group_progress(struct group_plan *plan, struct tools_progress *pr, bool force);

/* Load DISK's group (scanning scan[] too), run op with a progress meter,
 * print the plan or the result; returns TOOLS_*. */
int tools_group_run(const char *disk, char *const *scan, unsigned nr_scan,
		    unsigned flags, bool json, bool force_progress, tools_group_op *op);

/* The plan lists the folders g's load scanned and what they held that it
 * could not read. */
void tools_group_scanned(struct group_plan *plan, const struct group *g);

/* Print a plan (or the result of carrying it out) as text or JSON. */
void tools_group_print(const struct group_plan *p, bool dry_run, bool json);

/* `consolidate DISK` and `promote DISK` (tools_consolidate.c). */
int tools_consolidate_disk(const char *disk, char *const *scan, unsigned nr_scan,
			   char *const *keep, unsigned nr_keep, unsigned flags, bool json,
			   bool force_progress);

/* `check --repair [--dry-run] [--json] LAYER` (tools_repair.c). */
int tools_repair_run(const char *path, bool dry_run, bool json);

#endif
