/* group — finding on this side the layers a bundle needs (layer 3).
 *
 * Owns: the search for each need of a bundle (the first layer not packed
 * below a packed one): the candidates are the layers given (--base), then
 * every layer found in the unpack's folder and in the folders given
 * (--scan), recursively as `tree` scans; a candidate is the need when its
 * CID and capacity are the need's and its digest (group_digest.c: its
 * sidecar when that holds, else read) is the need's digest.  The CID is
 * matched too because the new layers' parentCID names it: a copy with the
 * same content and another CID would be a broken link.  Nothing is
 * written here (unpack records a need's digest once it is done).
 *
 * A need found must take children: frozen (vdelta made it a parent, or
 * copied one), or read-only (never written anyway), or, when it was given
 * with --base or lies in the unpack's folder, a writable layer the unpack
 * freezes (N2 of group_unpack.c).  A writable layer found in a folder
 * scanned is refused instead: it may be a disk in use, which a freeze
 * would stop.  Its chain must leave room for the layers above it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "group_int.h"

enum origin { FROM_BASE, FROM_DIR, FROM_SCAN };

struct candidates {
	char **paths;
	unsigned nr;
	enum origin *from;
	unsigned cap;
};

static int add(struct candidates *c, const char *path, enum origin from)
{
	char *real = realpath(path, NULL);
	int err = real ? 0 : -errno;

	for (unsigned i = 0; !err && i < c->nr; i++)
		if (!strcmp(c->paths[i], real))
			goto out; /* met twice: the first way it was met counts */
	if (!err && c->nr == c->cap) {
		enum origin *f = reallocarray(c->from, c->cap ? 2 * c->cap : 16, sizeof *f);
		if (!f)
			err = -ENOMEM;
		else {
			c->from = f;
			c->cap = c->cap ? 2 * c->cap : 16;
		}
	}
	if (!err && !(err = vd_strv_add(&c->paths, &c->nr, real)))
		c->from[c->nr - 1] = from;
out:
	free(real);
	return err;
}

static int add_bases(struct candidates *c, const struct group_unpack_opts *o)
{
	int err = 0;

	for (unsigned i = 0; !err && i < o->nr_bases; i++)
		if ((err = add(c, o->bases[i], FROM_BASE)))
			vd_err("%s: %s (--base)", o->bases[i], strerror(-err));
	return err;
}

/* Every layer found in dir and the folders scanned. */
static int add_scanned(struct candidates *c, const char *dir, const struct group_unpack_opts *o)
{
	char **dirs = NULL;
	unsigned nr = 0;
	struct group_tree *t = NULL;
	int err = vd_strv_add(&dirs, &nr, dir);

	for (unsigned i = 0; !err && i < o->nr_scan; i++)
		err = vd_strv_add(&dirs, &nr, o->scan[i]);
	if (!err)
		err = group_tree_scan(dirs, nr, 0, &t);
	for (unsigned i = 0; !err && i < t->nr_nodes; i++) {
		const struct group_tree_node *n = &t->nodes[i];
		char *d = vd_dirname(n->path), *real = d ? realpath(d, NULL) : NULL;
		if (!(n->flags & GROUP_TREE_UNREADABLE))
			err = add(c, n->path, real && !strcmp(real, dir) ? FROM_DIR : FROM_SCAN);
		err = err == -ENOENT ? 0 : err;
		free(d);
		free(real);
	}
	group_tree_free(t);
	vd_strv_free(dirs, nr);
	return err;
}

/* Is the layer at path the need (*dg its digest)?  *same_cid: its CID and
 * capacity are. */
static bool matches(const char *path, const struct group_bundle_need *n, bool *same_cid,
		    struct group_digest *dg)
{
	struct vmdk_disk *d = NULL;
	bool same = false;

	vd_log_mute(true);
	if (!vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d))
		same = vmdk_cid(d) == n->cid && vmdk_capacity(d) == n->capacity;
	vmdk_close(d);
	*same_cid = same;
	same = same && !group_digest_get(path, NULL, dg);
	if (same && memcmp(dg->digest, n->digest, 16)) {
		group_digest_clear(dg);
		same = false;
	}
	vd_log_mute(false);
	return same;
}

/* Every file of the layer writable by us: a frozen mark can be written. */
static bool markable(struct vmdk_disk *d)
{
	for (unsigned i = 0; i < vmdk_nr_files(d); i++)
		if (access(vmdk_file_path(d, i), W_OK))
			return false;
	return true;
}

/* Can the need found at path take children?  *thaw: it is to be frozen. */
static int check_found(const char *path, enum origin from, unsigned above, bool *thaw)
{
	struct chain *c = NULL;
	int err = chain_open(path, CHAIN_OPEN_RDONLY, NULL, &c);
	struct vmdk_disk *d = err ? NULL : chain_layer(c, 0);

	*thaw = d && !chain_is_frozen(d) && markable(d);
	if (!err && *thaw && from == FROM_SCAN) {
		vd_err("%s: has the content the bundle needs, but is a writable disk (not "
		       "frozen), which a child would stop: name it with --base to freeze it "
		       "and unpack over it: unpack refused, nothing written", path);
		err = -EPERM;
	}
	if (!err && chain_depth(c) + above > CHAIN_MAX_DEPTH) {
		vd_err("%s: its chain has %u layers and the bundle puts %u above it: more "
		       "than the %u vdelta opens: unpack refused, nothing written", path,
		       chain_depth(c), above, CHAIN_MAX_DEPTH);
		err = -ELOOP;
	}
	chain_close(c);
	return err;
}

static int missing(const struct group_bundle_need *n, const char *dir, const char *other)
{
	char hex[33];

	chain_digest_hex(n->digest, hex);
	vd_err("the bundle needs %s (CID %08x, %llu bytes, digest %s): no layer in %s, "
	       "--base or --scan has that CID and content%s%s%s: unpack refused, nothing "
	       "written", n->name, n->cid, (unsigned long long)n->capacity, hex, dir,
	       other ? " (" : "", other ? other : "", other ? " has the CID, not the content)" : "");
	return -ENOENT;
}

/* The most layers of the bundle stacked on need k. */
static unsigned height_on(const struct group_bundle_info *b, unsigned k)
{
	unsigned h[GROUP_BUNDLE_MAX_LAYERS], most = 0;

	for (unsigned i = 0; i < b->nr_layers && i < GROUP_BUNDLE_MAX_LAYERS; i++) {
		const struct group_bundle_layer *l = &b->layers[i];
		h[i] = l->parent_kind == GROUP_BUNDLE_LAYER && h[l->parent] ? h[l->parent] + 1
		       : l->parent_kind == GROUP_BUNDLE_NEED && l->parent == k ? 1 : 0;
		most = VD_MAX(most, h[i]);
	}
	return most;
}

static int find_one(struct group_bundle_info *b, unsigned k, const struct candidates *c,
		    const char *dir, bool *thaw, struct group_digest *dg)
{
	struct group_bundle_need *n = &b->needs[k];
	const char *other = NULL;

	for (unsigned i = 0; i < c->nr; i++) {
		bool same_cid;
		if (!matches(c->paths[i], n, &same_cid, dg)) {
			other = same_cid && !other ? c->paths[i] : other;
			continue;
		}
		if (!(n->path = strdup(c->paths[i])))
			return -ENOMEM;
		return check_found(n->path, c->from[i], height_on(b, k), thaw);
	}
	return missing(n, dir, other);
}

int group_unpack_find_needs(struct group_bundle_info *b, const char *dir,
			    const struct group_unpack_opts *o, bool *thaw,
			    struct group_digest *found)
{
	struct candidates c = {0};
	int err = b->nr_needs ? add_bases(&c, o) : 0;

	if (!err && b->nr_needs)
		err = add_scanned(&c, dir, o);
	for (unsigned k = 0; !err && k < b->nr_needs; k++)
		err = find_one(b, k, &c, dir, &thaw[k], &found[k]);
	vd_strv_free(c.paths, c.nr);
	free(c.from);
	return err;
}
