/* chain — the serving core (layer 2): the disks one server process exposes
 * (see "serving core" in chain.h).
 *
 * Owns: opening each served disk in its mode through one shared layer
 * pool, the throw-away delta of a nonpersistent disk, per-disk live
 * counters, clipping requests to the disk's size, and the flush/close
 * order.  Front ends (fuse/) only translate their protocol into these
 * calls.
 *
 * Close order (invariants):
 * 1. Every disk is flushed before any chain is closed, so a failure while
 *    closing one disk cannot leave another's acknowledged writes unsynced.
 * 2. Chains are closed before the pool: a top's final flush and the
 *    clearing of its unclean flag happen while its parents are still open
 *    and locked (no one can write a parent under an open child).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>

#include "chain_int.h"

struct chain_served {
	char *name;
	char *path;     /* the top asked for */
	char *top;      /* the layer written into (NULL: none that persists) */
	enum chain_serve_mode mode;
	struct chain *chain;
	bool zeroed_grains; /* the top records zeroed grains (chain_served_zero) */
	struct chain_serve_stats st; /* updated with relaxed atomics */
};

struct chain_server {
	struct chain_pool *pool;
	struct chain_served **disks;
	unsigned nr_disks;
	const struct vd_io *io; /* every chain's (NULL: POSIX) */
	char *tmpdir;           /* throw-away deltas (NULL: $TMPDIR or /tmp) */
	unsigned open_flags;    /* added to every chain's open */
};

static const char *const mode_names[] = {
	[CHAIN_SERVE_RW] = "rw",
	[CHAIN_SERVE_RO] = "ro",
	[CHAIN_SERVE_NONPERSISTENT] = "nonpersistent",
	[CHAIN_SERVE_SNAPSHOT] = "snapshot",
};

const char *chain_serve_mode_name(enum chain_serve_mode m)
{
	return m < sizeof mode_names / sizeof mode_names[0] ? mode_names[m] : "?";
}

int chain_serve_mode_parse(const char *s, enum chain_serve_mode *out)
{
	for (unsigned i = 0; i < sizeof mode_names / sizeof mode_names[0]; i++) {
		if (!strcmp(s, mode_names[i])) {
			*out = i;
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- DISK[:MODE][=NAME], the front ends' words for a served disk ---------------- */

int chain_serve_disk_arg(char *arg, enum chain_serve_mode dflt, char **name,
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
	if (*name && (!**name || strchr(*name, '/')))
		return -EINVAL;
	return 0;
}

char *chain_serve_default_name(const char *path)
{
	const char *b = strrchr(path, '/');
	char *n = strdup(b ? b + 1 : path);
	size_t len = n ? strlen(n) : 0;

	if (len > 5 && !strcasecmp(n + len - 5, ".vmdk"))
		n[len - 5] = '\0';
	return n;
}

int chain_server_create_opts(const struct chain_server_opts *o,
			     struct chain_server **out)
{
	struct chain_server *s = calloc(1, sizeof *s);
	int err = s ? chain_pool_create(&s->pool) : -ENOMEM;

	if (!err && o && o->tmpdir && !(s->tmpdir = strdup(o->tmpdir)))
		err = -ENOMEM;
	if (err) {
		if (s)
			chain_pool_destroy(s->pool);
		free(s);
		return err;
	}
	s->io = o ? o->io : NULL;
	s->open_flags = o ? o->open_flags & CHAIN_OPEN_OUTSIDE_OK : 0;
	*out = s;
	return 0;
}

int chain_server_create(struct chain_server **out)
{
	return chain_server_create_opts(NULL, out);
}

/* ---- nonpersistent: a delta nobody will ever see ------------------------------ */

/* Create an empty delta over `top` in a fresh temp folder (without freezing
 * top: it is only read, and must not change by a byte). */
static int throwaway_create(const struct chain_server *s, const char *top, char **dir_out,
			    char **delta_out)
{
	const char *tmp = s->tmpdir ? s->tmpdir : getenv("TMPDIR");
	char *dir = NULL, *delta = NULL, *abs_top = realpath(top, NULL);
	struct vmdk_create_opts o = { .subformat = VMDK_MONOLITHIC_SPARSE,
				      .zeroed_grain = true };
	struct vmdk_disk *d = NULL;
	int err = abs_top ? vmdk_open(top, VMDK_OPEN_RDONLY, NULL, &d) : -errno;

	if (!err && asprintf(&dir, "%s/vdelta-np.XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0)
		err = -ENOMEM;
	if (!err && !mkdtemp(dir)) {
		err = -errno;
		vd_err("%s: cannot make a folder for the throw-away delta: %s", dir,
		       strerror(errno));
	}
	if (!err && !(delta = vd_path_join(dir, "nonpersistent.vmdk")))
		err = -ENOMEM;
	if (!err) {
		o.capacity = vmdk_capacity(d);
		o.parent_cid = vmdk_cid(d);
		o.parent_hint = abs_top;
		err = vmdk_create(delta, &o, NULL);
	}
	vmdk_close(d);
	free(abs_top);
	*dir_out = dir;
	*delta_out = delta;
	return err;
}

/* Open the throw-away delta, then unlink it: the open descriptors keep it
 * alive until close, and a killed server leaves nothing behind. */
static int open_nonpersistent(struct chain_server *s, struct chain_served *d)
{
	char *dir = NULL, *delta = NULL;
	int err = throwaway_create(s, d->path, &dir, &delta);

	if (!err)
		err = chain_open_pool(delta, CHAIN_OPEN_RDWR | s->open_flags, s->io, s->pool,
				      &d->chain);
	if (delta)
		unlink(delta);
	if (dir)
		rmdir(dir);
	free(delta);
	free(dir);
	return err;
}

/* A top left unclean was recovered by its dirty open: say so, once, with
 * the grains a crash leaked (wasted space, not an error). */
static void report_recovery(struct chain_served *d)
{
	struct vmdk_check_result r = { 0 };

	vmdk_check(chain_layer(d->chain, 0), NULL, NULL, &r);
	vd_warn("%s: was not closed cleanly (killed server or power loss): tables "
		"recovered, %llu bytes of leaked grains (`vdelta check`), serving",
		d->top, (unsigned long long)r.leaked);
}

/* Whether every extent of the top records zeroed grains (GTE 1 of a
 * zeroed-grain hosted sparse extent, seSparse's zero grains). */
static bool top_zeroed_grains(struct chain *c)
{
	struct vmdk_disk *top = chain_layer(c, 0);
	struct vmdk_extent_info ei;
	struct vmdk_info info;

	vmdk_info_get(top, &info);
	for (unsigned i = 0; i < info.nr_extents; i++) {
		if (vmdk_extent_head_get(top, i, &ei))
			return false;
		if (ei.kind != VMDK_EXT_SESPARSE &&
		    !(ei.kind == VMDK_EXT_SPARSE && (ei.flags & VMDK_FLAG_ZEROED_GRAIN)))
			return false;
	}
	return info.nr_extents > 0;
}

static int served_open(struct chain_server *s, struct chain_served *d)
{
	int err;

	switch (d->mode) {
	case CHAIN_SERVE_RO:
		return chain_open_pool(d->path, CHAIN_OPEN_RDONLY | s->open_flags, s->io,
				       s->pool, &d->chain);
	case CHAIN_SERVE_NONPERSISTENT:
		return open_nonpersistent(s, d);
	case CHAIN_SERVE_SNAPSHOT: /* d->top: made by the caller */
		break;
	default:
		d->top = strdup(d->path);
		if (!d->top)
			return -ENOMEM;
	}
	err = chain_open_pool(d->top, CHAIN_OPEN_RDWR | CHAIN_OPEN_DIRTY_OK | s->open_flags, s->io,
			      s->pool, &d->chain);
	if (!err && !chain_writable(d->chain)) {
		vd_err("%s: the top is read-only (file or extent access): it cannot be "
		       "written", d->top);
		return -EROFS;
	}
	if (!err && chain_recovered(d->chain))
		report_recovery(d);
	return err;
}

static void served_free(struct chain_served *d)
{
	if (!d)
		return;
	free(d->name);
	free(d->path);
	free(d->top);
	free(d);
}

static int server_add(struct chain_server *s, const char *path, const char *top,
		      const char *name, enum chain_serve_mode mode,
		      struct chain_served **out)
{
	struct chain_served *d = calloc(1, sizeof *d), **v;
	int err = d ? 0 : -ENOMEM;

	v = d ? realloc(s->disks, (s->nr_disks + 1) * sizeof *v) : NULL;
	if (d && !v)
		err = -ENOMEM;
	if (v)
		s->disks = v;
	if (!err) {
		d->mode = mode;
		d->name = strdup(name);
		d->path = strdup(path);
		d->top = vd_strdup(top);
		err = d->name && d->path && (d->top || !top) ? served_open(s, d) : -ENOMEM;
	}
	if (err) {
		chain_close(d ? d->chain : NULL);
		served_free(d);
		return err;
	}
	d->st.nr_layers = chain_depth(d->chain);
	d->zeroed_grains = chain_writable(d->chain) && top_zeroed_grains(d->chain);
	s->disks[s->nr_disks++] = d;
	if (out)
		*out = d;
	return 0;
}

int chain_server_add(struct chain_server *s, const char *path, const char *name,
		     enum chain_serve_mode mode, struct chain_served **out)
{
	if (mode == CHAIN_SERVE_SNAPSHOT)
		return -EINVAL; /* chain_server_add_snapshot, with the new delta */
	return server_add(s, path, NULL, name, mode, out);
}

int chain_server_add_snapshot(struct chain_server *s, const char *path, const char *top,
			      const char *name, struct chain_served **out)
{
	return server_add(s, path, top, name, CHAIN_SERVE_SNAPSHOT, out);
}

unsigned chain_server_nr_disks(const struct chain_server *s) { return s->nr_disks; }
struct chain_pool *chain_server_pool(const struct chain_server *s) { return s->pool; }

struct chain_served *chain_server_disk(const struct chain_server *s, unsigned i)
{
	return i < s->nr_disks ? s->disks[i] : NULL;
}

struct chain_served *chain_server_find(const struct chain_server *s, const char *name)
{
	for (unsigned i = 0; i < s->nr_disks; i++)
		if (!strcmp(s->disks[i]->name, name))
			return s->disks[i];
	return NULL;
}

int chain_server_flush(struct chain_server *s)
{
	int err = 0;

	for (unsigned i = 0; i < s->nr_disks; i++) {
		int e = chain_served_flush(s->disks[i]);
		if (!err)
			err = e;
	}
	return err;
}

int chain_server_close(struct chain_server *s)
{
	int err;

	if (!s)
		return 0;
	err = chain_server_flush(s); /* invariant 1 */
	for (unsigned i = 0; i < s->nr_disks; i++) {
		int e = chain_close(s->disks[i]->chain); /* invariant 2 */
		if (!err)
			err = e;
		served_free(s->disks[i]);
	}
	chain_pool_destroy(s->pool);
	free(s->disks);
	free(s->tmpdir);
	free(s);
	return err;
}

/* ---- per-disk ------------------------------------------------------------------ */

const char *chain_served_name(const struct chain_served *d) { return d->name; }
const char *chain_served_path(const struct chain_served *d) { return d->path; }
const char *chain_served_top(const struct chain_served *d) { return d->top; }
enum chain_serve_mode chain_served_mode(const struct chain_served *d) { return d->mode; }
uint64_t chain_served_size(const struct chain_served *d) { return chain_capacity(d->chain); }
bool chain_served_writable(const struct chain_served *d) { return chain_writable(d->chain); }
struct chain *chain_served_chain(const struct chain_served *d) { return d->chain; }

static void count(uint64_t *ctr, uint64_t n)
{
	__atomic_fetch_add(ctr, n, __ATOMIC_RELAXED);
}

/* Copy a run of units with one owner (entry e): from that layer, zeros,
 * or a walk of the layers for mixed units. */
static int read_copy(struct chain_served *d, uint8_t e, uint8_t *buf, uint64_t len,
		     uint64_t off)
{
	struct chain *c = d->chain;

	if (e == CHAIN_E_NONE) {
		memset(buf, 0, len);
		count(&d->st.zero_bytes, len);
		return 0;
	}
	if (e == CHAIN_E_MIXED) {
		count(&d->st.walked_bytes, len);
		return chain_io_read_from(c, 0, buf, len, off, true);
	}
	count(&d->st.layer_bytes[e], len);
	return vmdk_pread(c->layers[e].disk, buf, len, off);
}

/* The part of a run owned by layer e that sits as plain bytes in its
 * file: bytes mapped into *seg, 0 when none. */
static uint64_t read_map(struct chain_served *d, uint8_t e, uint64_t len, uint64_t off,
			 struct chain_serve_seg *seg)
{
	uint64_t pos, n;
	int fd;

	if (e >= d->chain->nr_layers ||
	    vmdk_file_map(d->chain->layers[e].disk, off, len, &fd, &pos, &n))
		return 0;
	*seg = (struct chain_serve_seg){ .fd = fd, .pos = pos, .len = n };
	count(&d->st.layer_bytes[e], n);
	count(&d->st.direct_bytes, n);
	return n;
}

/* Append seg, merged into the last one when it continues it. */
static void seg_add(struct chain_serve_seg *segs, unsigned *nr,
		    const struct chain_serve_seg *seg)
{
	struct chain_serve_seg *last = *nr ? &segs[*nr - 1] : NULL;

	if (last && last->fd == seg->fd && (seg->fd >= 0 ? last->pos + last->len == seg->pos
					    : (uint8_t *)last->mem + last->len == seg->mem))
		last->len += seg->len;
	else
		segs[(*nr)++] = *seg;
}

int chain_served_read_segs(struct chain_served *d, void *buf, size_t len, uint64_t off,
			   struct chain_serve_seg *segs, unsigned max, unsigned *nr,
			   size_t *done)
{
	uint64_t size = chain_capacity(d->chain), run, n;
	uint8_t *p = buf, e;
	int err = 0;

	len = off >= size ? 0 : VD_MIN(len, size - off);
	*done = 0;
	*nr = 0;
	count(&d->st.reads, 1);
	for (uint64_t at = 0; at < len && !err; at += n) {
		struct chain_serve_seg seg = { .fd = -1, .mem = p + at };
		err = chain_io_run(d->chain, off + at, len - at, true, &e, &run);
		/* keep one slot for the copied rest */
		n = err || *nr + 1 >= max ? 0 : read_map(d, e, run, off + at, &seg);
		if (!err && !n) {
			n = seg.len = run;
			err = read_copy(d, e, p + at, run, off + at);
		}
		if (!err && max)
			seg_add(segs, nr, &seg);
	}
	if (err)
		return err;
	count(&d->st.read_bytes, len);
	*done = len;
	return 0;
}

int chain_served_read(struct chain_served *d, void *buf, size_t len, uint64_t off,
		      size_t *done)
{
	unsigned nr;

	return chain_served_read_segs(d, buf, len, off, NULL, 0, &nr, done);
}

static void cow_check(struct chain_served *d, uint64_t unit)
{
	uint8_t e;

	if (!chain_map_get(d->chain, unit, true, &e) && e != 0 && e != CHAIN_E_NONE)
		count(&d->st.cow_grains, 1);
}

/* Units the write covers only in part and that a layer below the top
 * holds: each is a grain copied up (the head and the tail at most). */
static void count_cow(struct chain_served *d, size_t len, uint64_t off)
{
	struct chain *c = d->chain;
	uint64_t mask = c->unit - 1, end = off + len;
	uint64_t head = off >> c->unit_shift, tail = (end - 1) >> c->unit_shift;

	if (off & mask)
		cow_check(d, head);
	if ((end & mask) && (tail != head || !(off & mask)))
		cow_check(d, tail);
}

static int write_check(struct chain_served *d, size_t len, uint64_t off)
{
	uint64_t size = chain_capacity(d->chain);

	if (!chain_writable(d->chain))
		return -EROFS;
	if (off > size || len > size - off)
		return -EFBIG; /* a block device does not grow */
	if (len)
		count_cow(d, len, off);
	return 0;
}

int chain_served_write(struct chain_served *d, const void *buf, size_t len,
		       uint64_t off)
{
	int err = write_check(d, len, off);

	if (!err)
		err = chain_pwrite(d->chain, buf, len, off);
	if (!err) {
		count(&d->st.writes, 1);
		count(&d->st.write_bytes, len);
	}
	return err;
}

/* ---- zeroing ------------------------------------------------------------------- *
 * A zero request is cut into the runs of the merged map.  Runs that read as
 * zeros already (unallocated everywhere, zeroed grains) are left alone: the
 * content does not change, and a delta allocates nothing for them.  A data
 * run is widened to whole units inside the request, so the format layer
 * sees whole grains where it can; a whole unit the top lacks becomes a
 * zeroed grain when the top records them (no data written: "cheap"),
 * anything else is real zeros written.  FAST refuses (-ENOTSUP, nothing
 * written) a request with any part that is not cheap; TRIM does only the
 * cheap parts. */

bool chain_served_zeroed_grains(const struct chain_served *d) { return d->zeroed_grains; }

/* The data run r widened to whole units and clipped to [off, end): [*a, *b),
 * and its whole units [*body_a, *body_b) (empty: equal), the only part that
 * can be cheap. */
static void zero_span(struct chain_served *d, const struct chain_run *r, uint64_t off,
		      uint64_t end, uint64_t span[4])
{
	uint64_t u = chain_unit(d->chain), size = chain_capacity(d->chain);
	uint64_t a = VD_MAX(off, r->off / u * u);
	uint64_t b = VD_MIN(end, VD_MIN(VD_DIV_ROUND_UP(r->off + r->len, u) * u, size));
	uint64_t ba = VD_DIV_ROUND_UP(a, u) * u, bb = b == size ? b : b / u * u;

	span[0] = a;
	span[1] = b;
	span[2] = VD_MIN(ba, b);
	span[3] = VD_MAX(bb, span[2]);
}

/* One pass over the runs of [off, off+len): with apply false, only whether
 * any part is not cheap (*slow); with apply true, the zeroing (of the cheap
 * parts alone for a trim). */
static int zero_pass(struct chain_served *d, size_t len, uint64_t off, unsigned flags,
		     bool apply, bool *slow)
{
	uint64_t end = off + len, sp[4];
	struct chain_run r;
	int err = 0;

	*slow = false;
	for (uint64_t at = off; at < end && !err; at = r.off + r.len) {
		err = chain_status(d->chain, at, end - at, &r);
		if (err || r.kind != CHAIN_DATA)
			continue;
		zero_span(d, &r, off, end, sp);
		bool cheap = d->zeroed_grains && r.layer > 0; /* for the body */
		*slow |= !cheap || sp[0] < sp[2] || sp[3] < sp[1];
		if (apply && !(flags & CHAIN_SERVE_ZERO_TRIM))
			err = chain_pwrite_zeroes(d->chain, (size_t)(sp[1] - sp[0]), sp[0]);
		else if (apply && cheap && sp[2] < sp[3])
			err = chain_pwrite_zeroes(d->chain, (size_t)(sp[3] - sp[2]), sp[2]);
	}
	return err;
}

int chain_served_zero(struct chain_served *d, size_t len, uint64_t off, unsigned flags)
{
	int err = write_check(d, len, off);
	bool slow = false;

	if (!err && (flags & CHAIN_SERVE_ZERO_FAST))
		err = zero_pass(d, len, off, flags, false, &slow);
	if (!err && slow)
		return -ENOTSUP;
	if (!err && len)
		err = zero_pass(d, len, off, flags, true, &slow);
	if (!err) {
		count(&d->st.writes, 1);
		count(&d->st.write_bytes, len);
	}
	return err;
}

int chain_served_write_zeroes(struct chain_served *d, size_t len, uint64_t off)
{
	return chain_served_zero(d, len, off, 0);
}

int chain_served_flush(struct chain_served *d)
{
	count(&d->st.flushes, 1);
	return chain_flush(d->chain);
}

static uint64_t load(const uint64_t *ctr)
{
	return __atomic_load_n(ctr, __ATOMIC_RELAXED);
}

void chain_served_stats(struct chain_served *d, struct chain_serve_stats *out)
{
	const struct chain_serve_stats *st = &d->st;

	*out = (struct chain_serve_stats){
		.reads = load(&st->reads), .read_bytes = load(&st->read_bytes),
		.writes = load(&st->writes), .write_bytes = load(&st->write_bytes),
		.flushes = load(&st->flushes), .cow_grains = load(&st->cow_grains),
		.zero_bytes = load(&st->zero_bytes), .walked_bytes = load(&st->walked_bytes),
		.direct_bytes = load(&st->direct_bytes), .nr_layers = st->nr_layers,
	};
	for (unsigned i = 0; i < out->nr_layers; i++)
		out->layer_bytes[i] = load(&st->layer_bytes[i]);
}
