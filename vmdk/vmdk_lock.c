/* vmdk — qemu-compatible image locking of every file of a disk (layer 1;
 * written for the chain layer, which decides what to hold and deny).
 *
 * qemu's scheme (block/file-posix.c): for each permission bit n a user
 * holds, a shared OFD lock on byte 100+n; for each bit it does not share
 * with others, a shared OFD lock on byte 200+n.  After taking its own
 * bytes, a user tests with F_OFD_GETLK for a write lock: byte 200+n for
 * each n it holds (somebody denies it), byte 100+n for each n it denies
 * (somebody holds it).  Locks of one open file description never conflict
 * with each other, so a disk's own bytes never trip its own test, while a
 * second open of the same file (another process or this one) does.
 *
 * When a conflict is found we look for the holder in /proc/<pid>/fdinfo
 * (the kernel lists OFD locks there) to name it: "qemu-io (pid 5922)".
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "vmdk_int.h"

#define LOCK_HELD_BASE 100u
#define LOCK_DENY_BASE 200u
#define NR_PERM_BITS 4u
#define MAX_PROCS_SCANNED 65536u /* bounds the holder search */

static const char *const perm_names[NR_PERM_BITS] = {
	"read", "write", "write-unchanged", "resize",
};

/* ---- naming the holder ---------------------------------------------------- */

/* Does an fdinfo line "lock: 1: OFDLCK ADVISORY READ -1 fe:00:123 100 101"
 * lock byte `byte` of (dev, ino)? */
static bool line_matches(char *line, dev_t dev, ino_t ino, unsigned byte)
{
	char *save, *tok, *start = NULL, *end = NULL;
	unsigned maj, min;
	unsigned long long i = 0;
	bool have_id = false;

	for (tok = strtok_r(line, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
		if (!have_id && strchr(tok, ':') != strrchr(tok, ':'))
			have_id = sscanf(tok, "%x:%x:%llu", &maj, &min, &i) == 3;
		else if (have_id && !start)
			start = tok;
		else if (have_id && !end)
			end = tok;
	}
	if (!end || maj != major(dev) || min != minor(dev) || i != (unsigned long long)ino)
		return false;
	return strtoull(start, NULL, 10) <= byte &&
	       (!strcmp(end, "EOF") || strtoull(end, NULL, 10) >= byte);
}

/* Does process `pid` lock the byte through an fd other than skip_fd (our
 * own, which holds our own bytes)? */
static bool pid_holds(const char *pid, int skip_fd, dev_t dev, ino_t ino, unsigned byte)
{
	bool self = atoi(pid) == getpid();
	char path[600], line[256];
	struct dirent *e;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof path, "/proc/%s/fdinfo", pid);
	d = opendir(path);
	while (d && !found && (e = readdir(d))) {
		FILE *f;
		if (e->d_name[0] == '.' || (self && atoi(e->d_name) == skip_fd))
			continue;
		snprintf(path, sizeof path, "/proc/%s/fdinfo/%s", pid, e->d_name);
		f = fopen(path, "r");
		while (f && !found && fgets(line, sizeof line, f))
			found = !strncmp(line, "lock:", 5) && line_matches(line, dev, ino, byte);
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

/* " by qemu-io (pid 5922)" into buf, or "" when no holder is found. */
static void find_holder(struct vd_file *f, unsigned byte, char *buf, size_t len)
{
	struct stat st;
	struct dirent *e;
	unsigned scanned = 0;
	DIR *proc;

	buf[0] = 0;
	if (f->fd < 0 || fstat(f->fd, &st) || !(proc = opendir("/proc")))
		return;
	while ((e = readdir(proc)) && scanned++ < MAX_PROCS_SCANNED) {
		char comm[64] = "?", path[300];
		FILE *cf;
		if (!isdigit((unsigned char)e->d_name[0]) ||
		    !pid_holds(e->d_name, f->fd, st.st_dev, st.st_ino, byte))
			continue;
		snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
		if ((cf = fopen(path, "r"))) {
			if (fgets(comm, sizeof comm, cf))
				comm[strcspn(comm, "\n")] = 0;
			fclose(cf);
		}
		snprintf(buf, len, " by %s (pid %s%s)%s", comm, e->d_name,
			 atoi(e->d_name) == getpid() ? ", this process" : "",
			 strncmp(comm, "qemu", 4) ? "" : ": the image is in use by qemu");
		break;
	}
	closedir(proc);
}

/* ---- taking and testing lock bytes -------------------------------------------- */

static int lock_byte(struct vd_file *f, unsigned byte, bool unlock)
{
	struct vd_lock_req r = { .start = byte, .len = 1, .write = false };

	return f->ops->lock ? f->ops->lock(f, &r, unlock) : 0;
}

static int conflict(struct vd_file *f, unsigned byte, bool *held)
{
	struct vd_lock_req r = { .start = byte, .len = 1, .write = true };

	*held = false;
	return f->ops->lock_test ? f->ops->lock_test(f, &r, held) : 0;
}

static int apply(struct vd_file *f, unsigned held, unsigned denied)
{
	int err = 0;

	for (unsigned n = 0; n < NR_PERM_BITS && !err; n++) {
		if (held & (1u << n))
			err = lock_byte(f, LOCK_HELD_BASE + n, false);
		if (!err && (denied & (1u << n)))
			err = lock_byte(f, LOCK_DENY_BASE + n, false);
	}
	return err;
}

static int report(struct vd_file *f, const char *path, unsigned n, bool ours_held)
{
	unsigned byte = (ours_held ? LOCK_DENY_BASE : LOCK_HELD_BASE) + n;
	char who[512];

	find_holder(f, byte, who, sizeof who);
	if (!who[0])
		snprintf(who, sizeof who, " by another open of the file (qemu or vdelta)");
	if (ours_held)
		vd_err("%s: lock conflict: %s permission is denied to us%s",
		       path, perm_names[n], who);
	else
		vd_err("%s: lock conflict: %s permission is held%s, and we cannot let "
		       "it change while we use it", path, perm_names[n], who);
	return -EAGAIN;
}

static int check(struct vd_file *f, const char *path, unsigned held, unsigned denied)
{
	bool busy;
	int err = 0;

	for (unsigned n = 0; n < NR_PERM_BITS && !err; n++) {
		if ((held & (1u << n)) && !(err = conflict(f, LOCK_DENY_BASE + n, &busy)) &&
		    busy)
			return report(f, path, n, true);
		if (!err && (denied & (1u << n)) &&
		    !(err = conflict(f, LOCK_HELD_BASE + n, &busy)) && busy)
			return report(f, path, n, false);
	}
	return err;
}

static void unlock_file(struct vd_file *f)
{
	struct vd_lock_req r = { .start = LOCK_HELD_BASE,
				 .len = LOCK_DENY_BASE + NR_PERM_BITS - LOCK_HELD_BASE };

	if (f && f->ops->lock)
		f->ops->lock(f, &r, true);
}

int vmdk_lock(struct vmdk_disk *d, unsigned held, unsigned denied)
{
	int err = 0;

	for (unsigned i = 0; i < d->nr_files && !err; i++) {
		struct vd_file *f = d->files[i].file;
		if (!f)
			continue;
		err = apply(f, held, denied);
		if (err == -EAGAIN)
			err = report(f, d->files[i].path, 0, false);
		else if (err)
			vd_err("%s: cannot take lock bytes: %s", d->files[i].path,
			       strerror(-err));
		if (!err)
			err = check(f, d->files[i].path, held, denied);
	}
	if (err) {
		vmdk_unlock(d);
		return err;
	}
	d->lock_held = held;
	d->lock_denied = denied;
	return 0;
}

void vmdk_unlock(struct vmdk_disk *d)
{
	d->lock_held = d->lock_denied = 0;
	for (unsigned i = 0; i < d->nr_files; i++)
		unlock_file(d->files[i].file);
}

int vmdk_lock_file(struct vd_file *f, const char *path, unsigned held, unsigned denied)
{
	int err = apply(f, held, denied);

	if (err == -EAGAIN)
		err = report(f, path, 0, false);
	else if (err)
		vd_err("%s: cannot take lock bytes: %s", path, strerror(-err));
	if (!err)
		err = check(f, path, held, denied);
	if (err)
		unlock_file(f);
	return err;
}

int vmdk_lock_new_file(struct vd_file *f, const char *path)
{
	return vmdk_lock_file(f, path, VMDK_PERM_READ | VMDK_PERM_WRITE | VMDK_PERM_RESIZE,
			      VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
}
