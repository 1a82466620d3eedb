/* group — `pack`: a group's layers written as a bundle (layer 3).
 *
 * Owns: which layers of the disks named go into a bundle, what the
 * receiver must already have (the needs), the descriptor facts of each
 * packed layer and the kind unpack makes of it, and the reading of each
 * layer's own runs (vmdk_block_status over the layer alone) into the
 * bundle writer (group_bundle.c).  Nothing of the group is written: pack
 * reads, under a reader's lock on every layer it packs and every need
 * (no writer may change them while the bundle is made), and records the
 * digest of a frozen need beside it (group_digest.c).
 *
 * Which layers (each disk's chain walked from its top down):
 *  - default: while every disk that reaches the layer is one of the disks
 *    packed (group_nr_users counts the disks found, recorded children not
 *    found and other names) and its children are known: the layers no
 *    disk outside the bundle reaches.  One disk: while !group_busy.  The
 *    first layer the walk stops at is the disk's need;
 *  - since LAYER: the layers above LAYER, which is the need;
 *  - full: every layer, no need.
 * A layer reached by several packed disks is packed once.  Layers go base
 * first (a parent before its children), so unpack can make each over one
 * it made or found.
 *
 * Kinds: a layer laid out as vdelta creates it keeps its kind
 * (monolithicSparse, twoGbMaxExtentSparse with its split, vmfsSparse,
 * seSparse, monolithicFlat, twoGbMaxExtentFlat, vmfs); anything else (a
 * streamOptimized base, a custom descriptor) is packed to become a hosted
 * sparse layer (monolithicSparse, twoGbMaxExtentSparse past 2 TiB), said
 * in a warning.
 *
 * Runs: a zeroed run stays one; of an allocated run, each unit (a grain of
 * a base, 4 KiB of a delta or its grain when smaller) that reads as zeros
 * goes as a zeroed run (it reads the same, masks the same), each unit of a
 * delta that holds what its parent reads there (a grain's copy-on-write of
 * the base around the few bytes written) as a parent run: the receiver
 * has that parent (it has the need, and has made the layers above it
 * first), so only what the layer itself wrote travels.  The layer keeps
 * every run allocated as it was.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "group_int.h"

#define CHUNK (2u << 20)          /* bytes read at once */
#define FLAT_UNIT (64u << 10)     /* zero detection of a layer without grains */
#define UNIT (4u << 10)           /* a delta's bytes compared with its parent's */
#define TWO_TIB (2ull << 40)

struct pack {
	struct group *g;
	const struct group_pack_opts *o;
	int *slot;          /* per node: its index in the bundle, or -1 */
	int *need;          /* per node: its index among the needs, or -1 */
	unsigned *reach;    /* per node: packed disks that reach it */
	int *order;         /* packed nodes, base first */
	unsigned nr;
	struct group_bundle_info *b;
	struct group_locks locks;
	uint8_t *buf, *pbuf;      /* a chunk of a layer, and what its parent reads there */
	struct group_plan progress; /* its progress callback only */
	uint64_t done;
};

/* ---- which layers ----------------------------------------------------------------------- */

/* The node of each disk, its chain's links sound; reach counted. */
static int disk_nodes(struct pack *p, char *const *disks, unsigned nr, int *nodes)
{
	const struct group_tree *t = group_nodes(p->g);
	unsigned bad = GROUP_TREE_BROKEN | GROUP_TREE_MISSING | GROUP_TREE_CAPACITY |
		       GROUP_TREE_UNREADABLE;

	for (unsigned i = 0; i < nr; i++) {
		if ((nodes[i] = group_node(p->g, disks[i])) < 0) {
			vd_err("%s: not found among the disks scanned", disks[i]);
			return -ENOENT;
		}
		for (unsigned k = 0; k < i; k++)
			if (nodes[k] == nodes[i])
				nodes[i] = -1; /* named twice */
		for (int at = nodes[i]; at >= 0; at = t->nodes[at].parent) {
			if (t->nodes[at].flags & bad) {
				vd_err("%s: its link to its parent is broken: pack refused",
				       t->nodes[at].path);
				return -ESTALE;
			}
			p->reach[at]++;
		}
	}
	return 0;
}

/* Does the walk down from a disk take node in? */
static bool packed_here(const struct pack *p, int node, int since, bool *below_since)
{
	if (p->o->full)
		return true;
	if (p->o->since)
		return !(*below_since |= node == since);
	return !group_unknown(p->g, node) && p->reach[node] == group_nr_users(p->g, node);
}

static int since_node(struct pack *p, int *node)
{
	*node = p->o->since ? group_node(p->g, p->o->since) : -1;
	if (p->o->since && *node < 0) {
		vd_err("%s: not found among the disks scanned (--since)", p->o->since);
		return -ENOENT;
	}
	return 0;
}

/* Mark the layers of the disk at node (top first) and its need. */
static int walk_disk(struct pack *p, int node, int since)
{
	const struct group_tree *t = group_nodes(p->g);
	bool below = false;
	int at = node;

	for (; at >= 0 && packed_here(p, at, since, &below); at = t->nodes[at].parent)
		p->slot[at] = 0;
	if (since >= 0 && !below) {
		vd_err("%s: not a layer of %s's chain (--since)", p->o->since,
		       t->nodes[node].path);
		return -EINVAL;
	}
	if (at == node) {
		vd_err("%s: %s: nothing of it to pack (--since names its top, or another "
		       "disk reaches it: pack --since or --full)", t->nodes[node].path,
		       p->o->since ? "--since" : "shared");
		return -EINVAL;
	}
	if (at >= 0 && p->need[at] < 0)
		p->need[at] = (int)p->b->nr_needs++;
	return 0;
}

static unsigned depth_of(const struct group_tree *t, int node)
{
	unsigned d = 0;

	for (int at = t->nodes[node].parent; at >= 0; at = t->nodes[at].parent)
		d++;
	return d;
}

/* The packed nodes base first (by depth, then as found). */
static int order_nodes(struct pack *p)
{
	const struct group_tree *t = group_nodes(p->g);

	for (unsigned d = 0; d <= CHAIN_MAX_DEPTH; d++)
		for (unsigned i = 0; i < t->nr_nodes; i++)
			if (p->slot[i] >= 0 && depth_of(t, (int)i) == d) {
				p->slot[i] = (int)p->nr;
				p->order[p->nr++] = (int)i;
			}
	if (p->nr > GROUP_BUNDLE_MAX_LAYERS || p->b->nr_needs > GROUP_BUNDLE_MAX_LAYERS) {
		vd_err("pack: %u layers and %u needs: a bundle holds at most %u of each",
		       p->nr, p->b->nr_needs, GROUP_BUNDLE_MAX_LAYERS);
		return -E2BIG;
	}
	return 0;
}

static int choose(struct pack *p, char *const *disks, unsigned nr)
{
	unsigned n = group_nodes(p->g)->nr_nodes;
	int *nodes = calloc(nr, sizeof *nodes), since = -1;
	int err = nodes ? disk_nodes(p, disks, nr, nodes) : -ENOMEM;

	if (!err)
		err = since_node(p, &since);
	for (unsigned i = 0; !err && i < nr; i++)
		if (nodes[i] >= 0)
			err = walk_disk(p, nodes[i], since);
	if (!err && !(p->b->layers = calloc(n, sizeof *p->b->layers)))
		err = -ENOMEM;
	if (!err && !(p->b->needs = calloc(p->b->nr_needs + 1, sizeof *p->b->needs)))
		err = -ENOMEM;
	if (!err)
		err = order_nodes(p);
	for (unsigned i = 0; !err && i < nr; i++)
		if (nodes[i] >= 0)
			p->b->layers[p->slot[nodes[i]]].top = true;
	free(nodes);
	return err;
}

/* ---- the facts of a layer ---------------------------------------------------------------- */

/* A flat layer laid out as vdelta creates kind sf (one file per extent,
 * each from offset 0, equal extents when split). */
static bool flat_as(struct vmdk_disk *d, enum vmdk_subformat sf, struct group_bundle_layer *l)
{
	enum vmdk_extent_kind want = sf == VMDK_VMFS ? VMDK_EXT_VMFS : VMDK_EXT_FLAT;
	struct vmdk_extent_info e, first;
	struct vmdk_info vi;

	vmdk_info_get(d, &vi);
	for (unsigned i = 0; i < vi.nr_extents; i++)
		if (vmdk_extent_info_get(d, i, i ? &e : &first) ||
		    (i ? &e : &first)->kind != want || (i ? &e : &first)->file_offset ||
		    (i && (e.start != i * first.size ||
			   (e.size != first.size && i + 1 < vi.nr_extents))))
			return false;
	if (vmdk_nr_files(d) != vi.nr_extents + 1 || (sf != VMDK_TWOGB_FLAT && vi.nr_extents != 1))
		return false;
	l->split_size = sf == VMDK_TWOGB_FLAT ? first.size : 0;
	return true;
}

static bool vmfs_type(const char *type)
{
	return !strcmp(type, "vmfs") || !strcmp(type, "vmfsPreallocated") ||
	       !strcmp(type, "vmfsEagerZeroedThick") || !strcmp(type, "vmfsThin");
}

/* The kind vdelta makes of d, as it is, if it can. */
static bool own_kind(struct vmdk_disk *d, struct group_bundle_layer *l)
{
	const char *type = l->source_type;
	struct vmdk_create_opts o = {0};
	enum vmdk_subformat sf;
	bool ok;

	if (vmfs_type(type))
		return (l->kind = VMDK_VMFS, flat_as(d, VMDK_VMFS, l));
	if (vmdk_subformat_parse(type, &sf))
		return false;
	if (sf == VMDK_MONOLITHIC_FLAT || sf == VMDK_TWOGB_FLAT)
		return (l->kind = sf, flat_as(d, sf, l));
	vd_log_mute(true);
	ok = !group_rewrite_like(d, d, false, &o);
	vd_log_mute(false);
	l->kind = o.subformat;
	l->grain_size = vmdk_grain_size(d);
	l->split_size = o.split_size;
	l->zeroed_grain = o.zeroed_grain;
	return ok;
}

/* A layer vdelta cannot make as it is becomes hosted sparse. */
static int other_kind(struct vmdk_disk *d, struct group_bundle_layer *l, bool delta)
{
	uint64_t grain = delta ? vmdk_grain_size(d) : 64u << 10;

	if (!vd_is_pow2(grain) || grain < VD_SECTOR || grain > (32u << 20)) {
		vd_err("%s: createType %s with grains of %llu bytes: no kind vdelta makes "
		       "holds this delta: pack refused", vmdk_path(d), l->source_type,
		       (unsigned long long)grain);
		return -ENOTSUP;
	}
	l->kind = l->capacity > TWO_TIB ? VMDK_TWOGB_SPARSE : VMDK_MONOLITHIC_SPARSE;
	l->grain_size = grain;
	l->split_size = l->kind == VMDK_TWOGB_SPARSE ? 2047ull << 20 : 0;
	l->zeroed_grain = false;
	vd_warn("%s: createType %s is not a kind vdelta makes as it is: unpack makes it "
		"a %s", vmdk_path(d), l->source_type, vmdk_subformat_name(l->kind));
	return 0;
}

/* The DDB keys worth keeping: all but the parent's native path (a path on
 * this host) and seSparse's grain key on another kind. */
static int keep_keys(struct vmdk_disk *d, struct group_bundle_layer *l)
{
	const char *key, *val;
	int err = 0;

	for (unsigned i = 0; !err && !vmdk_desc_entry(d, i, &key, &val); i++) {
		char *kv;
		if (strncmp(key, "ddb.", 4) || !strcmp(key, "ddb.nativeParentHint") ||
		    (!strcmp(key, "ddb.grain") && l->kind != VMDK_SESPARSE))
			continue;
		if (asprintf(&kv, "%s=%s", key, val) < 0)
			return -ENOMEM;
		err = vd_strv_add(&l->keys, &l->nr_keys, kv);
		free(kv);
	}
	return err;
}

static int held_bytes(struct vmdk_disk *d, uint64_t *out)
{
	uint64_t cap = vmdk_capacity(d), n;
	enum vmdk_bs kind;
	int err = 0;

	*out = 0;
	for (uint64_t off = 0; !err && off < cap; off += n) {
		err = vmdk_block_status(d, off, cap - off, &kind, &n);
		*out += !err && kind != VMDK_BS_UNALLOC ? n : 0;
	}
	return err;
}

static void set_parent(struct pack *p, int node, struct group_bundle_layer *l)
{
	int par = group_nodes(p->g)->nodes[node].parent;

	l->parent_kind = par < 0 ? GROUP_BUNDLE_BASE
				 : p->slot[par] >= 0 ? GROUP_BUNDLE_LAYER : GROUP_BUNDLE_NEED;
	l->parent = par < 0 ? 0 : (unsigned)(p->slot[par] >= 0 ? p->slot[par] : p->need[par]);
}

static int describe(struct pack *p, unsigned i)
{
	struct group_bundle_layer *l = &p->b->layers[i];
	const char *path = group_nodes(p->g)->nodes[p->order[i]].path, *type;
	struct vmdk_disk *d = NULL;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d);

	if (err)
		return err;
	type = vmdk_desc_get(d, "createType");
	l->path = strdup(path);
	l->name = strdup(group_base_name(path));
	l->source_type = strdup(type ? type : "");
	l->capacity = vmdk_capacity(d);
	l->cid = vmdk_cid(d);
	l->parent_cid = vmdk_parent_hint(d) ? vmdk_parent_cid(d) : VMDK_CID_NONE;
	set_parent(p, p->order[i], l);
	if (!l->path || !l->name || !l->source_type)
		err = -ENOMEM;
	if (!err && !own_kind(d, l))
		err = other_kind(d, l, l->parent_kind != GROUP_BUNDLE_BASE);
	if (!err)
		err = keep_keys(d, l);
	if (!err)
		err = held_bytes(d, &l->held_bytes);
	p->b->held_bytes += l->held_bytes;
	vmdk_close(d);
	return err;
}

/* Every layer goes into one folder on the other side: one name each. */
static int check_names(const struct group_bundle_info *b)
{
	for (unsigned i = 0; i < b->nr_layers; i++) {
		if (!group_bundle_name_ok(b->layers[i].name)) {
			vd_err("%s: a file name unpack would not make (NAME.vmdk, no leading "
			       "dot, no quote or control character): pack refused",
			       b->layers[i].path);
			return -EINVAL;
		}
		for (unsigned j = 0; j < i; j++)
			if (!strcasecmp(b->layers[i].name, b->layers[j].name)) {
				vd_err("%s and %s: one file name; unpack puts every layer in one "
				       "folder: pack refused", b->layers[j].path, b->layers[i].path);
				return -EEXIST;
			}
	}
	return 0;
}

/* The need's digest, recorded beside it when it is frozen (the next pack
 * of it does not read it again). */
static int need_digest(const char *path, uint8_t out[16])
{
	struct group_digest dg;
	int err = group_digest_get(path, NULL, &dg);

	if (!err) {
		memcpy(out, dg.digest, 16);
		group_digest_record(path, &dg, NULL);
	}
	group_digest_clear(&dg);
	return err;
}

static int describe_need(struct pack *p, int node)
{
	const char *path = group_nodes(p->g)->nodes[node].path;
	struct group_bundle_need *n = &p->b->needs[p->need[node]];
	struct vmdk_disk *d = NULL;
	int err = vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d);

	if (err)
		return err;
	n->cid = vmdk_cid(d);
	n->capacity = vmdk_capacity(d);
	vmdk_close(d);
	n->path = strdup(path);
	n->name = strdup(group_base_name(path));
	if (!n->path || !n->name)
		return -ENOMEM;
	if (!group_bundle_name_ok(n->name)) {
		vd_err("%s: a file name a bundle cannot carry (NAME.vmdk, plain): pack refused",
		       path);
		return -EINVAL;
	}
	return need_digest(path, n->digest);
}

/* Locks (every layer packed and every need: a reader's), then the facts. */
static int describe_all(struct pack *p)
{
	const struct group_tree *t = group_nodes(p->g);
	int err = 0;

	p->b->nr_layers = p->nr;
	for (unsigned i = 0; !err && i < p->nr; i++)
		err = group_lock_layer(&p->locks, t->nodes[p->order[i]].path, GROUP_LOCK_READ);
	for (unsigned i = 0; !err && i < t->nr_nodes; i++)
		if (p->need[i] >= 0)
			err = group_lock_layer(&p->locks, t->nodes[i].path, GROUP_LOCK_READ);
	for (unsigned i = 0; !err && i < p->nr; i++)
		err = describe(p, i);
	if (!err)
		err = check_names(p->b);
	for (unsigned i = 0; !err && i < t->nr_nodes; i++)
		if (p->need[i] >= 0)
			err = describe_need(p, (int)i);
	return err;
}

/* ---- the runs ------------------------------------------------------------------------------ */

/* The layer being packed. */
struct put {
	struct pack *p;
	struct group_bundle_writer *w;
	unsigned i;
	struct vmdk_disk *d;
	struct chain *below;  /* what its parent reads (a delta), else NULL */
	uint64_t cut, unit;   /* frames cut at multiples of cut; units compared */
};

static enum group_bundle_kind unit_kind(const struct put *t, size_t at, size_t n)
{
	const uint8_t *b = t->p->buf + at;

	if (vd_is_zero(b, n))
		return GROUP_RUN_ZERO;
	return t->below && !memcmp(b, t->p->pbuf + at, n) ? GROUP_RUN_PARENT : GROUP_RUN_DATA;
}

/* A chunk of data, unit by unit: zeros go as a zeroed run, what the parent
 * reads there already as a parent run, the rest as data. */
static int put_data(struct put *t, uint64_t off, size_t len)
{
	size_t at = 0;
	int err = 0;

	while (!err && at < len) {
		enum group_bundle_kind k = unit_kind(t, at, VD_MIN(t->unit, len - at));
		size_t n = VD_MIN(t->unit, len - at);
		while (at + n < len && unit_kind(t, at + n, VD_MIN(t->unit, len - at - n)) == k)
			n += VD_MIN(t->unit, len - at - n);
		err = group_bundle_write_run(t->w, t->i, off + at, n, k, t->p->buf + at, t->cut);
		at += n;
	}
	return err;
}

static int put_run(struct put *t, enum vmdk_bs kind, uint64_t off, uint64_t len)
{
	struct pack *p = t->p;
	int err = 0;

	if (kind == VMDK_BS_ZERO)
		err = group_bundle_write_run(t->w, t->i, off, len, GROUP_RUN_ZERO, NULL, t->cut);
	for (uint64_t at = 0; kind == VMDK_BS_DATA && !err && at < len;) {
		size_t n = (size_t)VD_MIN(len - at, (uint64_t)CHUNK);
		err = vmdk_pread(t->d, p->buf, n, off + at);
		if (!err && t->below)
			err = chain_pread(t->below, p->pbuf, n, off + at);
		if (!err)
			err = put_data(t, off + at, n);
		at += n;
		group_plan_progress(&p->progress, &p->done, n, p->b->held_bytes);
	}
	if (kind == VMDK_BS_ZERO)
		group_plan_progress(&p->progress, &p->done, len, p->b->held_bytes);
	return err;
}

/* What a delta's parent reads: the packed layer's or the need's chain. */
static int open_below(struct put *t)
{
	const struct group_bundle_info *b = t->p->b;
	const struct group_bundle_layer *l = &b->layers[t->i];
	const char *parent = l->parent_kind == GROUP_BUNDLE_LAYER ? b->layers[l->parent].path
			     : l->parent_kind == GROUP_BUNDLE_NEED ? b->needs[l->parent].path
								   : NULL;

	return parent ? chain_open(parent, CHAIN_OPEN_RDONLY, NULL, &t->below) : 0;
}

static int put_layer(struct pack *p, struct group_bundle_writer *w, unsigned i)
{
	const struct group_bundle_layer *l = &p->b->layers[i];
	struct put t = { .p = p, .w = w, .i = i };
	enum vmdk_bs kind;
	uint64_t n;
	int err = vmdk_open(l->path, VMDK_OPEN_RDONLY, NULL, &t.d);

	t.cut = l->grain_size && l->grain_size <= CHUNK ? l->grain_size
		: l->grain_size ? CHUNK : FLAT_UNIT;
	t.unit = l->parent_kind == GROUP_BUNDLE_BASE ? t.cut : VD_MIN(t.cut, (uint64_t)UNIT);
	if (!err)
		err = open_below(&t);
	for (uint64_t off = 0; !err && off < l->capacity; off += n) {
		err = vmdk_block_status(t.d, off, l->capacity - off, &kind, &n);
		if (!err && kind != VMDK_BS_UNALLOC)
			err = put_run(&t, kind, off, n);
	}
	chain_close(t.below);
	vmdk_close(t.d);
	return err;
}

static int write_bundle(struct pack *p, int fd)
{
	struct group_bundle_writer *w = NULL;
	int level = p->o->level ? p->o->level : 3;
	int err = group_bundle_writer_open(fd, level, p->o->threads, &w);

	p->b->level = level;
	if (!err)
		err = group_bundle_write_head(w, p->b);
	for (unsigned i = 0; !err && i < p->b->nr_layers; i++)
		err = put_layer(p, w, i);
	if (!err)
		err = group_bundle_write_end(w);
	if (!err)
		group_bundle_writer_stats(w, &p->b->frames, &p->b->stream_bytes);
	group_bundle_writer_free(w);
	return err;
}

static int pack_alloc(struct pack *p)
{
	unsigned n = group_nodes(p->g)->nr_nodes + 1;

	p->slot = malloc(n * sizeof *p->slot);
	p->need = malloc(n * sizeof *p->need);
	p->reach = calloc(n, sizeof *p->reach);
	p->order = calloc(n, sizeof *p->order);
	p->b = calloc(1, sizeof *p->b);
	p->buf = malloc(CHUNK);
	p->pbuf = malloc(CHUNK);
	if (!p->slot || !p->need || !p->reach || !p->order || !p->b || !p->buf || !p->pbuf)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		p->slot[i] = p->need[i] = -1;
	p->b->version = GROUP_BUNDLE_VERSION;
	return 0;
}

int group_pack(char *const *disks, unsigned nr_disks, char *const *scan, unsigned nr_scan,
	       const struct group_pack_opts *o, int fd, const struct vd_io *io,
	       struct group_bundle_info **out)
{
	struct pack p = { .o = o, .progress = { .progress = o->progress,
						.progress_opaque = o->progress_opaque } };
	int err = group_load_disks(disks, nr_disks, scan, nr_scan, 0, io, &p.g);

	if (!err)
		err = pack_alloc(&p);
	if (!err)
		err = choose(&p, disks, nr_disks);
	if (!err)
		err = describe_all(&p);
	if (!err)
		err = write_bundle(&p, fd);
	group_locks_release(&p.locks);
	if (!err && out)
		*out = p.b;
	else
		group_bundle_info_free(p.b);
	free(p.slot);
	free(p.need);
	free(p.reach);
	free(p.order);
	free(p.buf);
	free(p.pbuf);
	group_free(p.g);
	return err;
}
