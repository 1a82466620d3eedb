/* bench — the servers beside vdelta in process (bench layer).
 *
 * Owns: the table of servers that serve a chain so the bench reads it
 * there beside vdelta in process, one row each: `vdelta mount -f --ro`
 * (o->vdelta_prog), qemu-storage-daemon's FUSE export (read-only) and
 * vmdkmount (libvmdk; DIR/vmdkN is the whole chain); which of them a run
 * wants and which are not installed (with the Debian package that brings
 * each).  Each runs as our child in a fresh folder under o->tmpdir; its
 * physical reads are the `syscr`/`rchar` lines of /proc/PID/io (every
 * thread of the process).  They include the server's reads of requests
 * from /dev/fuse (one per FUSE request; the kernel cuts a large read into
 * several requests), so they are the server's whole read cost.  Stopping
 * unmounts our own mountpoint and waits for our own child, never another.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_int.h"

#define FUSE_SUPER_MAGIC 0x65735546
#define START_TIMEOUT_MS 15000

struct bench_peer {
	pid_t pid;
	char dir[PATH_MAX / 2];       /* our folder: the mountpoint lives here */
	char mnt[PATH_MAX / 2 + 16];  /* what was mounted */
	char file[PATH_MAX / 2 + 32]; /* the served disk */
};

/* A server beside vdelta in process. */
struct peer_kind {
	const char *system;  /* its name in results */
	unsigned systems;    /* the BENCH_SYS_* bits that run it */
	const char *access;  /* how the bench reaches the disk */
	bool ours;           /* vdelta itself: the others of its access compare with it */
	const char *prog;    /* the program (NULL: o->vdelta_prog) */
	const char *package; /* the Debian package that brings it */
	const char *mnt_file; /* the mountpoint is this file (NULL: a folder) */
	const char *served;  /* the served file in the folder ... */
	bool served_depth;   /* ... with the chain's depth appended */
	void (*exec)(const char *prog, const char *top, const struct bench_peer *p);
};

static void exec_vdelta(const char *prog, const char *top, const struct bench_peer *p)
{
	char file[PATH_MAX + 64];

	snprintf(file, sizeof file, "%s=disk", top); /* --ro: reads only */
	execlp(prog, "vdelta", "mount", "-f", "--ro", file, p->mnt, (char *)NULL);
}

/* qemu follows the parent hints itself. */
static void exec_qemu(const char *prog, const char *top, const struct bench_peer *p)
{
	char file[PATH_MAX + 64], exp[PATH_MAX + 128];

	snprintf(file, sizeof file, "driver=file,node-name=f,filename=%s,read-only=on", top);
	snprintf(exp, sizeof exp, "type=fuse,id=e,node-name=n,mountpoint=%s,writable=off",
		 p->mnt);
	execlp(prog, prog, "--blockdev", file, "--blockdev",
	       "driver=vmdk,node-name=n,file=f,read-only=on", "--export", exp, (char *)NULL);
}

/* -v: stay in the foreground (and talk: stderr goes too). */
static void exec_vmdkmount(const char *prog, const char *top, const struct bench_peer *p)
{
	int null = open("/dev/null", O_RDWR);

	dup2(null, STDERR_FILENO);
	execlp(prog, prog, "-v", top, p->mnt, (char *)NULL);
}

/* Adding a server is one row here (and an exec function for a new command
 * line).  Every FUSE server also needs fusermount3 (fuse3) to unmount. */
static const struct peer_kind kinds[] = {
	{ "vdelta-fuse", BENCH_SYS_FUSE | BENCH_SYS_PEERS, "fuse", true, NULL, NULL, NULL,
	  "disk", false, exec_vdelta },
	{ "qemu-fuse", BENCH_SYS_PEERS, "fuse", false, "qemu-storage-daemon",
	  "qemu-system-common", "disk.img", NULL, false, exec_qemu },
	{ "vmdkmount", BENCH_SYS_PEERS, "fuse", false, "vmdkmount", "libvmdk-utils", NULL,
	  "vmdk", true, exec_vmdkmount },
};

const unsigned bench_nr_peers = sizeof kinds / sizeof kinds[0];
_Static_assert(sizeof kinds / sizeof kinds[0] <= BENCH_PEER_MAX, "BENCH_PEER_MAX");

const char *bench_peer_system(unsigned k) { return kinds[k].system; }
const char *bench_peer_access(unsigned k) { return kinds[k].access; }

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (strchr(prog, '/'))
		return access(prog, X_OK) == 0;
	for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(buf, sizeof buf, "%.*s/%s", (int)n, p, prog);
		if (access(buf, X_OK) == 0)
			return true;
		p += n + (p[n] == ':');
	}
	return false;
}

static const char *kind_prog(unsigned k, const struct bench_opts *o)
{
	return kinds[k].prog ? kinds[k].prog : o->vdelta_prog;
}

bool bench_peer_wanted(unsigned k, const struct bench_opts *o)
{
	return (kinds[k].systems & o->systems) != 0;
}

bool bench_peer_missing(unsigned k, const struct bench_opts *o, struct bench_missing *out)
{
	*out = (struct bench_missing){ .system = kinds[k].system };
	if (!in_path("fusermount3")) {
		out->program = "fusermount3";
		out->package = "fuse3";
	} else if (!in_path(kind_prog(k, o))) {
		out->program = kind_prog(k, o);
		out->package = kinds[k].package;
	}
	return out->program != NULL;
}

const char *bench_peer_vs(unsigned k, const bool *runs)
{
	if (kinds[k].ours)
		return "vdelta";
	for (unsigned i = 0; i < bench_nr_peers; i++)
		if (kinds[i].ours && runs[i] && !strcmp(kinds[i].access, kinds[k].access))
			return kinds[i].system;
	return NULL;
}

static void peer_exec(unsigned k, const char *top, const struct bench_opts *o,
		      const struct bench_peer *p)
{
	int null = open("/dev/null", O_RDWR);

	dup2(null, STDIN_FILENO);
	dup2(null, STDOUT_FILENO);
	kinds[k].exec(kind_prog(k, o), top, p);
	_exit(127);
}

/* Wait until mnt is a FUSE mount and the served file exists. */
static int peer_wait(struct bench_peer *p)
{
	struct timespec ts = { 0, 20 * 1000000 };
	struct statfs sf;
	int status;

	for (int ms = 0; ms < START_TIMEOUT_MS; ms += 20) {
		if (!statfs(p->mnt, &sf) && sf.f_type == FUSE_SUPER_MAGIC &&
		    access(p->file, R_OK) == 0)
			return 0;
		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			p->pid = 0;
			return -ECHILD;
		}
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

static int peer_prepare(unsigned k, unsigned depth, const char *tmpdir,
			struct bench_peer *p)
{
	const struct peer_kind *kind = &kinds[k];

	snprintf(p->dir, sizeof p->dir, "%s/vdelta-bench-peer-XXXXXX", tmpdir);
	if (!mkdtemp(p->dir))
		return -errno;
	if (kind->mnt_file) {
		snprintf(p->mnt, sizeof p->mnt, "%s/%s", p->dir, kind->mnt_file);
		snprintf(p->file, sizeof p->file, "%s", p->mnt);
		return close(open(p->mnt, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)) ? -errno : 0;
	}
	snprintf(p->mnt, sizeof p->mnt, "%s/mnt", p->dir);
	if (kind->served_depth)
		snprintf(p->file, sizeof p->file, "%s/%s%u", p->mnt, kind->served, depth);
	else
		snprintf(p->file, sizeof p->file, "%s/%s", p->mnt, kind->served);
	return mkdir(p->mnt, 0755) ? -errno : 0;
}

int bench_peer_start(unsigned k, const char *top, unsigned depth,
		     const struct bench_opts *o, struct bench_peer **out)
{
	struct bench_peer *p = calloc(1, sizeof *p);
	char top_abs[PATH_MAX];
	int err;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	if (!realpath(top, top_abs) || (err = peer_prepare(k, depth, o->tmpdir, p))) {
		err = -errno;
		vd_err("%s: %s", p->dir[0] ? p->dir : top, strerror(errno));
		bench_peer_stop(p);
		return err;
	}
	p->pid = fork();
	if (p->pid == 0)
		peer_exec(k, top_abs, o, p);
	err = p->pid < 0 ? -errno : peer_wait(p);
	if (err) {
		vd_err("%s: %s did not come up serving %s (%s)", p->mnt, kind_prog(k, o), top,
		       strerror(-err));
		bench_peer_stop(p);
		return err;
	}
	*out = p;
	return 0;
}

const char *bench_peer_file(const struct bench_peer *p)
{
	return p->file;
}

int bench_peer_io(const struct bench_peer *p, uint64_t *syscr, uint64_t *rchar)
{
	char path[64], line[128];
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/io", (int)p->pid);
	if (!(f = fopen(path, "re")))
		return -errno;
	while (fgets(line, sizeof line, f)) {
		unsigned long long v;
		if (sscanf(line, "syscr: %llu", &v) == 1)
			*syscr = v;
		else if (sscanf(line, "rchar: %llu", &v) == 1)
			*rchar = v;
	}
	fclose(f);
	return 0;
}

static bool peer_mounted(const struct bench_peer *p)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	char line[PATH_MAX + 256], want[PATH_MAX];
	bool found = false;

	snprintf(want, sizeof want, " %s fuse", p->mnt);
	while (f && !found && fgets(line, sizeof line, f))
		found = strstr(line, want) != NULL;
	if (f)
		fclose(f);
	return found;
}

static void peer_unmount(const struct bench_peer *p)
{
	pid_t pid = fork();

	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", p->mnt, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/* Wait up to timeout_ms for our child to exit; true when it did. */
static bool peer_reaped(pid_t pid, int timeout_ms)
{
	struct timespec ts = { 0, 20 * 1000000 };

	for (int ms = 0; ms < timeout_ms; ms += 20) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return true;
		nanosleep(&ts, NULL);
	}
	return false;
}

/* Unmount (every FUSE server exits then, having flushed), then SIGTERM,
 * then SIGKILL: only our own child and our own mountpoint. */
void bench_peer_stop(struct bench_peer *p)
{
	if (!p)
		return;
	if (peer_mounted(p))
		peer_unmount(p);
	if (p->pid > 0 && !peer_reaped(p->pid, 5000)) {
		kill(p->pid, SIGTERM);
		if (!peer_reaped(p->pid, 5000)) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, NULL, 0);
		}
	}
	if (peer_mounted(p))
		peer_unmount(p);
	unlink(p->mnt);
	rmdir(p->mnt);
	rmdir(p->dir);
	free(p);
}
