/* nbd — the NBD front end (layer 4, beside fuse/ and tools/): an nbdkit
 * plugin (API version 2, thread model parallel) that serves the disks of
 * one serving core (chain.h, "serving core") as NBD exports, one export
 * per disk, named as the mount names its files.  nbdkit is the server
 * (sockets, TLS, export lists, filters); this file only translates.  No
 * public header: nbdkit loads the module and calls plugin_init.
 *
 * Owns: the parameters (disk=TOP[:MODE][=NAME] repeated, a bare TOP being
 * a disk too, and mode= for the disks that name none), start-up as the
 * mount does it (through the group layer's front door, group_serve_add:
 * interrupted group operations recovered, each disk added to one
 * chain_server: locks, CID checks, recovery of an unclean top, one layer
 * pool for every export), the translation of NBD requests into
 * serving-core calls, what each export advertises, and the log callback
 * that hands the library's messages to nbdkit.
 *
 * Life: .config/.config_complete collect and check the parameters;
 * .get_ready (before nbdkit forks: descriptors and OFD locks pass to the
 * serving process) opens every disk, and any refusal ends nbdkit with a
 * non-zero status and the library's message naming the file; .cleanup
 * (after the last connection closed, at SIGTERM/SIGINT too) flushes and
 * closes the server, which clears the unclean flags and releases the locks.
 *
 * THREAD MODEL: NBDKIT_THREAD_MODEL_PARALLEL.  Requests of every connection
 * reach the serving core concurrently, with no lock here.  Every connection
 * to one export shares its chain_served (one top, no cache per connection):
 * a write is seen by every connection once acknowledged, and a flush (fsync
 * of the top) makes every acknowledged write durable whichever connection
 * sent it, so every export advertises multi-conn (docs/nbd.md).
 */
#define _GNU_SOURCE
#define NBDKIT_API_VERSION 2
#include <errno.h>
#include <nbdkit-plugin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "chain.h"
#include "group.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
#define READ_SEGS 32 /* segments of one read (layer files and copies) */

struct disk_arg {
	char *path; /* absolute */
	char *name; /* NULL: the default name */
	enum chain_serve_mode mode;
};

static struct {
	const char **args;  /* disk= values, owned by nbdkit */
	struct disk_arg *disks;
	unsigned nr_disks;
	enum chain_serve_mode mode; /* mode= */
	struct chain_server *srv;
	pid_t ready_pid; /* the process that ran .get_ready */
} plugin;

struct handle {
	struct chain_served *d;
	bool writable;
};

/* ---- messages ------------------------------------------------------------------ */

/* Errors are nbdkit's; warnings (an unclean top recovered) go to stderr
 * while the user sees it, and to syslog too once nbdkit has detached. */
static void nbd_plugin_log(void *opaque, enum vd_log_level level, const char *msg)
{
	if (level == VD_LOG_ERROR) {
		nbdkit_error("%s", msg);
	} else if (level == VD_LOG_WARN) {
		fprintf(stderr, "nbdkit: vdelta: warning: %s\n", msg);
		if (plugin.ready_pid && getpid() != plugin.ready_pid)
			syslog(LOG_WARNING, "vdelta: %s", msg);
	} else {
		nbdkit_debug("%s", msg);
	}
}

static void nbd_plugin_load(void)
{
	vd_log_set(nbd_plugin_log, NULL);
}

/* ---- parameters -------------------------------------------------------------------- */

/* disk=VALUE, parsed once every mode= is known. */
static int nbd_plugin_add_arg(const char *value)
{
	const char **v = realloc(plugin.args, (plugin.nr_disks + 1) * sizeof *v);

	if (!v) {
		nbdkit_error("%s", strerror(ENOMEM));
		return -1;
	}
	plugin.args = v;
	v[plugin.nr_disks++] = value;
	return 0;
}

static int nbd_plugin_config(const char *key, const char *value)
{
	if (!strcmp(key, "disk"))
		return nbd_plugin_add_arg(value);
	if (!strcmp(key, "mode")) {
		if (chain_serve_mode_parse(value, &plugin.mode) == 0)
			return 0;
		nbdkit_error("mode=%s: expected rw, ro, nonpersistent or snapshot", value);
		return -1;
	}
	nbdkit_error("unknown parameter '%s' (disk=TOP[:MODE][=NAME]..., mode=MODE)", key);
	return -1;
}

/* TOP[:MODE][=NAME] into a; TOP made absolute (nbdkit changes folder). */
static int nbd_plugin_parse_disk(const char *value, struct disk_arg *a)
{
	char *copy = strdup(value), *name;
	int err = copy ? chain_serve_disk_arg(copy, plugin.mode, &name, &a->mode) : -ENOMEM;

	if (err == -EINVAL)
		nbdkit_error("disk=%s: bad export name (TOP[:MODE][=NAME], NAME not empty, "
			     "without '/')", value);
	else if (err)
		nbdkit_error("%s", strerror(-err));
	if (!err && name && !(a->name = strdup(name)))
		err = -ENOMEM;
	if (!err && !(a->path = nbdkit_realpath(copy))) /* it reports a missing TOP */
		err = -ENOENT;
	free(copy);
	return err;
}

static int nbd_plugin_config_complete(void)
{
	int err = 0;

	if (!plugin.nr_disks) {
		nbdkit_error("no disk: give disk=TOP[:MODE][=NAME] (one per export)");
		return -1;
	}
	plugin.disks = calloc(plugin.nr_disks, sizeof *plugin.disks);
	if (!plugin.disks) {
		nbdkit_error("%s", strerror(ENOMEM));
		return -1;
	}
	for (unsigned i = 0; i < plugin.nr_disks && !err; i++)
		err = nbd_plugin_parse_disk(plugin.args[i], &plugin.disks[i]);
	return err ? -1 : 0;
}

#define nbd_plugin_config_help \
	"disk=TOP[:MODE][=NAME]  (required, repeatable) serve the disk whose top\n" \
	"                        layer is TOP as export NAME (default: TOP's base\n" \
	"                        name without .vmdk); the first is the default export\n" \
	"mode=MODE               rw (default), ro, nonpersistent or snapshot, for the\n" \
	"                        disks that name none"

/* ---- start-up and shutdown ----------------------------------------------------------- */

/* Open one disk; a refusal says what to do about it. */
static int nbd_plugin_open_disk(const struct disk_arg *a)
{
	char *name = a->name ? strdup(a->name) : chain_serve_default_name(a->path);
	struct chain_served *d = NULL;
	int err = name ? 0 : -ENOMEM;

	if (!err && chain_server_find(plugin.srv, name)) {
		nbdkit_error("%s: two disks named '%s': give one another name (disk=TOP=NAME)",
			     a->path, name);
		err = -EEXIST;
	}
	if (!err) /* the front door: recovery near the disk, the snapshot mode's delta */
		err = group_serve_add(plugin.srv, a->path, name, a->mode, &d);
	if (err == -EPERM || err == -EROFS || err == -EACCES)
		nbdkit_error("%s: cannot be written; serve it as %s:snapshot (writes go into a "
			     "new delta over it), :nonpersistent or :ro", a->path, a->path);
	else if (err == -ENOMEM)
		nbdkit_error("%s: %s", a->path, strerror(ENOMEM));
	if (!err && a->mode == CHAIN_SERVE_SNAPSHOT)
		fprintf(stderr, "nbdkit: vdelta: %s: writes go into %s\n", name,
			chain_served_top(d));
	free(name);
	return err;
}

static int nbd_plugin_get_ready(void)
{
	int err = chain_server_create(&plugin.srv);

	for (unsigned i = 0; i < plugin.nr_disks && !err; i++)
		err = nbd_plugin_open_disk(&plugin.disks[i]);
	if (err) {
		chain_server_close(plugin.srv);
		plugin.srv = NULL;
		return -1;
	}
	plugin.ready_pid = getpid();
	openlog("nbdkit-vdelta", LOG_PID, LOG_DAEMON);
	return 0;
}

/* After the last connection: every disk flushed, then closed (unclean
 * flags cleared, locks released), then the pool. */
static void nbd_plugin_cleanup(void)
{
	if (chain_server_close(plugin.srv))
		nbdkit_error("closing the disks failed: the next start recovers them");
	plugin.srv = NULL;
}

static void nbd_plugin_unload(void)
{
	for (unsigned i = 0; plugin.disks && i < plugin.nr_disks; i++) {
		free(plugin.disks[i].path);
		free(plugin.disks[i].name);
	}
	free(plugin.disks);
	free(plugin.args);
}

/* ---- exports ------------------------------------------------------------------------- */

static const char *nbd_plugin_describe(struct chain_served *d)
{
	return nbdkit_printf_intern("%s (%s, %u layers)", chain_served_path(d),
				    chain_serve_mode_name(chain_served_mode(d)),
				    chain_depth(chain_served_chain(d)));
}

static int nbd_plugin_list_exports(int readonly, int is_tls, struct nbdkit_exports *exports)
{
	for (unsigned i = 0; i < chain_server_nr_disks(plugin.srv); i++) {
		struct chain_served *d = chain_server_disk(plugin.srv, i);
		if (nbdkit_add_export(exports, chain_served_name(d), nbd_plugin_describe(d)))
			return -1;
	}
	return 0;
}

static const char *nbd_plugin_default_export(int readonly, int is_tls)
{
	return chain_served_name(chain_server_disk(plugin.srv, 0));
}

static void *nbd_plugin_open(int readonly)
{
	const char *name = nbdkit_export_name();
	struct chain_served *d = name && *name ? chain_server_find(plugin.srv, name)
					       : chain_server_disk(plugin.srv, 0);
	struct handle *h;

	if (!d) {
		nbdkit_error("no export '%s' (nbdinfo --list shows them)", name ? name : "");
		return NULL;
	}
	h = malloc(sizeof *h);
	if (!h) {
		nbdkit_error("%s", strerror(ENOMEM));
		return NULL;
	}
	h->d = d;
	h->writable = !readonly && chain_served_writable(d);
	return h;
}

static void nbd_plugin_close(void *handle)
{
	free(handle);
}

static const char *nbd_plugin_export_description(void *handle)
{
	return nbd_plugin_describe(((struct handle *)handle)->d);
}

static int64_t nbd_plugin_get_size(void *handle)
{
	return (int64_t)chain_served_size(((struct handle *)handle)->d);
}

static int nbd_plugin_can_write(void *handle)
{
	return ((struct handle *)handle)->writable;
}

/* A trim is recorded only as zeroed grains (chain_served_zero): without
 * them the layer has no way to record one. */
static int nbd_plugin_can_trim(void *handle)
{
	struct handle *h = handle;

	return h->writable && chain_served_zeroed_grains(h->d);
}

static int nbd_plugin_yes(void *handle) { return 1; }
static int nbd_plugin_can_fua(void *handle) { return NBDKIT_FUA_NATIVE; }

/* ---- data ----------------------------------------------------------------------------- */

/* -errno as nbdkit wants it (the library reported the failure). */
static int nbd_plugin_fail(int err)
{
	nbdkit_set_error(-err);
	return -1;
}

static int nbd_plugin_pread_fd(int fd, uint8_t *p, size_t len, uint64_t pos)
{
	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)pos);
		if (n <= 0) {
			nbdkit_error("read of a layer at %llu: %s", (unsigned long long)pos,
				     n ? strerror(errno) : "unexpected end of file");
			return n ? -errno : -EIO;
		}
		p += n;
		pos += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* The serving core plans the read: runs stored as plain bytes come
 * straight from the layer's file into buf, the rest is copied there. */
static int nbd_plugin_pread(void *handle, void *buf, uint32_t count, uint64_t offset,
			    uint32_t flags)
{
	struct handle *h = handle;
	struct chain_serve_seg segs[READ_SEGS];
	uint8_t *p = buf;
	unsigned nr;
	size_t done;
	int err = chain_served_read_segs(h->d, buf, count, offset, segs, READ_SEGS, &nr, &done);

	for (unsigned i = 0; i < nr && !err; i++) {
		if (segs[i].fd >= 0)
			err = nbd_plugin_pread_fd(segs[i].fd, p, segs[i].len, segs[i].pos);
		p += segs[i].len;
	}
	if (!err && done != count)
		err = -EIO; /* nbdkit keeps requests inside the disk */
	return err ? nbd_plugin_fail(err) : 0;
}

static int nbd_plugin_done(struct handle *h, uint32_t flags, int err)
{
	if (!err && (flags & NBDKIT_FLAG_FUA))
		err = chain_served_flush(h->d);
	return err ? nbd_plugin_fail(err) : 0;
}

static int nbd_plugin_pwrite(void *handle, const void *buf, uint32_t count,
			     uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;

	return nbd_plugin_done(h, flags, chain_served_write(h->d, buf, count, offset));
}

/* NBDKIT_FLAG_MAY_TRIM changes nothing: what is zeroed always reads as
 * zeros.  A fast zero that would write data fails up front with ENOTSUP,
 * nothing written. */
static int nbd_plugin_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	unsigned zf = flags & NBDKIT_FLAG_FAST_ZERO ? CHAIN_SERVE_ZERO_FAST : 0;

	return nbd_plugin_done(h, flags, chain_served_zero(h->d, count, offset, zf));
}

static int nbd_plugin_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;

	return nbd_plugin_done(h, flags,
			       chain_served_zero(h->d, count, offset, CHAIN_SERVE_ZERO_TRIM));
}

static int nbd_plugin_flush(void *handle, uint32_t flags)
{
	int err = chain_served_flush(((struct handle *)handle)->d);

	return err ? nbd_plugin_fail(err) : 0;
}

/* The merged map, run by run as `vdelta map` prints it: data; zero (a
 * layer records zeros: zeroed grains); hole (no layer holds it). */
static int nbd_plugin_extents(void *handle, uint32_t count, uint64_t offset,
			      uint32_t flags, struct nbdkit_extents *extents)
{
	static const uint32_t type[] = {
		[CHAIN_DATA] = 0,
		[CHAIN_ZERO] = NBDKIT_EXTENT_ZERO,
		[CHAIN_UNALLOC] = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO,
	};
	struct chain *c = chain_served_chain(((struct handle *)handle)->d);
	uint64_t end = offset + count;
	struct chain_run r;

	for (uint64_t at = offset; at < end; at = r.off + r.len) {
		int err = chain_status(c, at, end - at, &r);
		if (err)
			return nbd_plugin_fail(err);
		if (nbdkit_add_extent(extents, r.off, r.len, type[r.kind]))
			return -1;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
	}
	return 0;
}

static struct nbdkit_plugin plugin_ops = {
	.name = "vdelta",
	.longname = "vdelta: VMDK linked clones",
	.version = VDELTA_VERSION,
	.description = "Serves VMDK disks (copy-on-write chains of linked clones) as NBD\n"
		       "exports, one per disk, sharing the layers they have in common.",
	.magic_config_key = "disk",
	.load = nbd_plugin_load,
	.unload = nbd_plugin_unload,
	.config = nbd_plugin_config,
	.config_complete = nbd_plugin_config_complete,
	.config_help = nbd_plugin_config_help,
	.get_ready = nbd_plugin_get_ready,
	.cleanup = nbd_plugin_cleanup,
	.list_exports = nbd_plugin_list_exports,
	.default_export = nbd_plugin_default_export,
	.open = nbd_plugin_open,
	.close = nbd_plugin_close,
	.export_description = nbd_plugin_export_description,
	.get_size = nbd_plugin_get_size,
	.can_write = nbd_plugin_can_write,
	.can_flush = nbd_plugin_yes,
	.can_trim = nbd_plugin_can_trim,
	.can_zero = nbd_plugin_yes,
	.can_fast_zero = nbd_plugin_yes,
	.can_extents = nbd_plugin_yes,
	.can_multi_conn = nbd_plugin_yes,
	.can_fua = nbd_plugin_can_fua,
	.pread = nbd_plugin_pread,
	.pwrite = nbd_plugin_pwrite,
	.zero = nbd_plugin_zero,
	.trim = nbd_plugin_trim,
	.flush = nbd_plugin_flush,
	.extents = nbd_plugin_extents,
};

NBDKIT_REGISTER_PLUGIN(plugin_ops)
