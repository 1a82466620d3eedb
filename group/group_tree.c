/* group — the parent graph of the disks in some folders (layer 3).
 *
 * Owns: finding the disks in folders (sniffing the first sector so extent
 * files — split sparse extents, flat data, COWD and seSparse — are not
 * taken for disks), linking each to its parent by hint resolution and
 * device+inode identity, and the figures `vdelta tree` prints: children,
 * how many disks reach each layer, group roots, broken links, missing
 * parents, orphaned snapshots, and the space a group would take as full
 * clones (data bytes of each disk's whole chain; 0 for a broken chain).
 * Folders are scanned recursively (a datastore keeps one folder per VM),
 * bounded: GROUP_TREE_MAX_DIR_DEPTH levels, TREE_MAX_ENTRIES entries in
 * all, each folder visited once (device+inode, so symlink loops end), hidden
 * entries and anything but regular files and folders skipped.  Intent
 * records (GROUP_INTENT_SUFFIX) met on the way are listed for recovery.
 * A folder or *.vmdk it may not read (permissions, an I/O error, a folder
 * below those named that is gone) is listed as not scanned and the scan
 * goes on: a clone there is not seen, which the callers say.
 * Opens everything read-only without locks; writes nothing.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

#define KDMV_MAGIC_LE 0x564d444bu
#define COWD_MAGIC_LE 0x44574f43u
#define SESPARSE_MAGIC 0xcafebabeull
#define TREE_MAX_NODES 100000u /* bounds memory on a hostile folder */
#define TREE_MAX_ENTRIES 1000000u /* bounds time: folder entries looked at */
#define TREE_MAX_DIRS 100000u
#define TREE_MAX_UNSCANNED 1000u /* unreadable entries listed */

/* (device, inode) -> index, open addressing. */
struct idmap {
	uint64_t *dev, *ino;
	int *val;
	unsigned cap, nr; /* cap: 0 or a power of two */
};

struct group_tree_index {
	struct idmap nodes;
};

struct scan {
	struct group_tree *t;
	unsigned flags;
	bool *text;     /* node i is a text descriptor (linked first) */
	bool *extent;   /* node i is an extent file of another disk */
	bool *listed;   /* node i was met as a folder entry */
	unsigned cap;
	struct idmap nodes; /* descriptors and single files: node */
	struct idmap dirs;  /* folders visited */
	struct idmap files; /* extent files: the node whose descriptor names it */
	unsigned nr_entries;
};

static unsigned idmap_slot(const struct idmap *m, uint64_t dev, uint64_t ino)
{
	uint64_t h = (dev * 0x9e3779b97f4a7c15ull) ^ (ino * 0xc2b2ae3d27d4eb4full);

	return (unsigned)(h ^ (h >> 29)) & (m->cap - 1);
}

static int idmap_get(const struct idmap *m, uint64_t dev, uint64_t ino)
{
	for (unsigned i = m->cap ? idmap_slot(m, dev, ino) : 0; m->cap && m->val[i] >= 0;
	     i = (i + 1) & (m->cap - 1))
		if (m->dev[i] == dev && m->ino[i] == ino)
			return m->val[i];
	return -1;
}

static void idmap_free(struct idmap *m)
{
	free(m->dev);
	free(m->ino);
	free(m->val);
	*m = (struct idmap){0};
}

static int idmap_put(struct idmap *m, uint64_t dev, uint64_t ino, int val);

static int idmap_grow(struct idmap *m)
{
	struct idmap old = *m, n = { .cap = m->cap ? 2 * m->cap : 64 };
	int err = 0;

	n.dev = calloc(n.cap, sizeof *n.dev);
	n.ino = calloc(n.cap, sizeof *n.ino);
	n.val = malloc(n.cap * sizeof *n.val);
	if (!n.dev || !n.ino || !n.val) {
		idmap_free(&n);
		return -ENOMEM;
	}
	memset(n.val, 0xff, n.cap * sizeof *n.val);
	*m = n;
	for (unsigned i = 0; !err && i < old.cap; i++)
		if (old.val[i] >= 0)
			err = idmap_put(m, old.dev[i], old.ino[i], old.val[i]);
	idmap_free(&old);
	return err;
}

/* Map (dev, ino) to val, replacing an entry of the same key. */
static int idmap_put(struct idmap *m, uint64_t dev, uint64_t ino, int val)
{
	unsigned i;
	int err = 2 * (m->nr + 1) > m->cap ? idmap_grow(m) : 0;

	if (err)
		return err;
	for (i = idmap_slot(m, dev, ino); m->val[i] >= 0; i = (i + 1) & (m->cap - 1))
		if (m->dev[i] == dev && m->ino[i] == ino)
			break;
	m->nr += m->val[i] < 0;
	m->dev[i] = dev;
	m->ino[i] = ino;
	m->val[i] = val;
	return 0;
}

enum sniff { NOT_DISK, TEXT_DISK, SPARSE_DISK };

/* A disk of its own: descriptor text, or a sparse file with room for an
 * embedded descriptor (split extents made by qemu have that room too: they
 * are recognised later, as extents of their descriptor). */
static enum sniff sniff(const char *path)
{
	uint8_t b[1024] = {0};
	int fd = vd_open_fd(path, O_RDONLY | O_CLOEXEC, 0); /* FIFOs etc. skipped */
	ssize_t r;
	size_t n;

	if (fd < 0)
		return NOT_DISK;
	r = pread(fd, b, sizeof b - 1, 0);
	close(fd);
	n = r > 0 ? (size_t)r : 0;
	if (n >= 64 && get_le32(b) == KDMV_MAGIC_LE)
		return get_le64(b + 28) ? SPARSE_DISK : NOT_DISK; /* descriptorOffset */
	if (n >= 8 && (get_le32(b) == COWD_MAGIC_LE || get_le64(b) == SESPARSE_MAGIC))
		return NOT_DISK;
	return (b[0] == '#' || isalpha(b[0])) && strstr((char *)b, "createType")
		       ? TEXT_DISK : NOT_DISK;
}

static int find_node(struct scan *s, const struct stat *st)
{
	return idmap_get(&s->nodes, st->st_dev, st->st_ino);
}

static int grow_nodes(struct scan *s)
{
	struct group_tree *t = s->t;
	unsigned cap = s->cap ? 2 * s->cap : 64;
	struct group_tree_node *n = reallocarray(t->nodes, cap, sizeof *n);
	bool *text = n ? reallocarray(s->text, cap, sizeof *text) : NULL;
	bool *ext = text ? reallocarray(s->extent, cap, sizeof *ext) : NULL;
	bool *listed = ext ? reallocarray(s->listed, cap, sizeof *listed) : NULL;

	if (n)
		t->nodes = n;
	if (text)
		s->text = text;
	if (ext)
		s->extent = ext;
	if (!listed)
		return -ENOMEM;
	s->listed = listed;
	s->cap = cap;
	return 0;
}

/* Index of the node for path, added when new (*added). */
static int add_node(struct scan *s, const char *path, bool *added)
{
	struct group_tree *t = s->t;
	struct stat st;
	int i;

	*added = false;
	if (stat(path, &st))
		return -errno;
	if ((i = find_node(s, &st)) >= 0)
		return i;
	if (t->nr_nodes >= TREE_MAX_NODES) {
		vd_err("%s: more than %u disks under the folders scanned", path, TREE_MAX_NODES);
		return -E2BIG;
	}
	if (t->nr_nodes == s->cap && grow_nodes(s))
		return -ENOMEM;
	i = (int)t->nr_nodes;
	if (idmap_put(&s->nodes, st.st_dev, st.st_ino, i))
		return -ENOMEM;
	t->nr_nodes++;
	t->nodes[i] = (struct group_tree_node){ .path = strdup(path), .parent = -1,
						.root = i, .dev = st.st_dev, .ino = st.st_ino };
	s->text[i] = s->extent[i] = s->listed[i] = false;
	*added = true;
	return t->nodes[i].path ? i : -ENOMEM;
}

/* Remember a folder; false when it was seen already (or too many). */
static bool dir_first_visit(struct scan *s, const struct stat *st)
{
	if (idmap_get(&s->dirs, st->st_dev, st->st_ino) >= 0 || s->dirs.nr >= TREE_MAX_DIRS)
		return false;
	return !idmap_put(&s->dirs, st->st_dev, st->st_ino, 1);
}

static bool has_suffix(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n > k && !strcasecmp(name + n - k, suffix);
}

static int add_intent(struct group_tree *t, const char *path)
{
	int err = vd_strv_add(&t->intents, &t->nr_intents, path);

	if (err == -E2BIG)
		vd_err("%s: more than %u intent records under the folders scanned", path,
		       VD_STRV_MAX);
	return err;
}

/* A folder or *.vmdk the scan cannot read: listed, the scan goes on. */
static int add_unscanned(struct group_tree *t, const char *path, int err)
{
	char *line;
	int e;

	if (t->nr_unscanned >= TREE_MAX_UNSCANNED)
		return 0;
	if (asprintf(&line, "%s: %s", path, strerror(-err)) < 0)
		return -ENOMEM;
	e = vd_strv_add(&t->unscanned, &t->nr_unscanned, line);
	free(line);
	return e;
}

static int scan_dir(struct scan *s, const char *dir, unsigned depth);

/* One folder entry: a disk, an intent record, or a folder to descend. */
static int scan_entry(struct scan *s, const char *path, const char *name,
		      unsigned depth)
{
	struct stat st;
	bool added;
	int err = 0;

	if (stat(path, &st))
		return 0; /* vanished or a dangling link */
	if (S_ISDIR(st.st_mode))
		return depth < GROUP_TREE_MAX_DIR_DEPTH ? scan_dir(s, path, depth + 1) : 0;
	if (!S_ISREG(st.st_mode))
		return 0;
	if (has_suffix(name, GROUP_INTENT_SUFFIX))
		return add_intent(s->t, path);
	if (!has_suffix(name, ".vmdk") || strlen(name) < 6)
		return 0;
	if (access(path, R_OK))
		return add_unscanned(s->t, path, -errno);
	enum sniff k = sniff(path);
	if (k != NOT_DISK)
		err = add_node(s, path, &added);
	if (err >= 0 && k != NOT_DISK) {
		if (s->listed[err]) /* a second folder entry of one file */
			s->t->nodes[err].aliases++;
		s->listed[err] = true;
	}
	if (err >= 0 && k == TEXT_DISK)
		s->text[err] = true;
	return VD_MIN(err, 0);
}

static int scan_dir(struct scan *s, const char *dir, unsigned depth)
{
	struct stat st;
	struct dirent *e;
	DIR *d;
	int err = 0;

	errno = 0;
	if (stat(dir, &st) || !S_ISDIR(st.st_mode) || !(d = opendir(dir))) {
		err = errno ? -errno : -ENOTDIR;
		if (depth > 0 || err == -EACCES || err == -EPERM)
			return add_unscanned(s->t, dir, err);
		vd_err("%s: %s", dir, strerror(-err));
		return err;
	}
	if (!dir_first_visit(s, &st)) {
		closedir(d);
		return 0;
	}
	while (!err && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (++s->nr_entries > TREE_MAX_ENTRIES) {
			vd_err("%s: more than %u folder entries under the folders scanned",
			       dir, TREE_MAX_ENTRIES);
			err = -E2BIG;
			break;
		}
		char *path = vd_path_join(dir, e->d_name);
		err = path ? scan_entry(s, path, e->d_name, depth) : -ENOMEM;
		free(path);
	}
	closedir(d);
	return err;
}

static uint64_t disk_file_bytes(struct vmdk_disk *d)
{
	uint64_t sum = 0;
	struct stat st;

	for (unsigned i = 0; i < vmdk_nr_files(d); i++)
		if (stat(vmdk_file_path(d, i), &st) == 0)
			sum += (uint64_t)st.st_blocks * 512;
	return sum;
}

/* The facts of a node its descriptor gives. */
static void describe(struct group_tree_node *n, struct vmdk_disk *d)
{
	n->cid = vmdk_cid(d);
	n->parent_cid = vmdk_parent_cid(d);
	n->capacity = vmdk_capacity(d);
	n->frozen = chain_is_frozen(d);
	n->file_bytes = disk_file_bytes(d);
}

int group_tree_refresh(struct group_tree *t, unsigned i)
{
	struct vmdk_disk *d;
	int err = vmdk_open(t->nodes[i].path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);

	if (err)
		return err;
	describe(&t->nodes[i], d);
	vmdk_close(d);
	return 0;
}

/* The files of d (node i) other than its descriptor are extents, not
 * disks; an extent another descriptor names too, or any file with more
 * than one link, is another way to reach the layer. */
static int mark_files(struct scan *s, unsigned i, struct vmdk_disk *d)
{
	struct group_tree_node *n = &s->t->nodes[i];
	unsigned links = 0;
	struct stat st;
	int k, err = 0;

	for (unsigned f = 0; !err && f < vmdk_nr_files(d); f++) {
		if (stat(vmdk_file_path(d, f), &st))
			continue;
		links = VD_MAX(links, (unsigned)VD_MIN(st.st_nlink, 1u << 16) - 1);
		if (!f)
			continue;
		if ((k = find_node(s, &st)) >= 0)
			s->extent[k] = true;
		k = idmap_get(&s->files, st.st_dev, st.st_ino);
		if (k >= 0 && k != (int)i) {
			n->aliases++;
			s->t->nodes[k].aliases++;
		} else if (k < 0)
			err = idmap_put(&s->files, st.st_dev, st.st_ino, (int)i);
	}
	n->aliases = VD_MAX(n->aliases, links);
	return err;
}

/* Drop the extent nodes, renumbering parents. */
static void drop_extents(struct scan *s)
{
	struct group_tree *t = s->t;
	unsigned n = 0;
	int *map = malloc((t->nr_nodes ? t->nr_nodes : 1) * sizeof *map);

	if (!map)
		return;
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		map[i] = s->extent[i] ? -1 : (int)n;
		if (s->extent[i]) {
			free(t->nodes[i].path);
			free(t->nodes[i].hint_buf);
		} else {
			t->nodes[n++] = t->nodes[i];
		}
	}
	for (unsigned i = 0; i < n; i++) {
		if (t->nodes[i].parent >= 0)
			t->nodes[i].parent = map[t->nodes[i].parent];
		t->nodes[i].root = (int)i;
	}
	t->nr_nodes = n;
	free(map);
}

/* The tree's own index of its nodes by identity (after drop_extents). */
static int index_nodes(struct group_tree *t)
{
	int err;

	t->index = calloc(1, sizeof *t->index);
	err = t->index ? 0 : -ENOMEM;
	for (unsigned i = 0; !err && i < t->nr_nodes; i++)
		err = idmap_put(&t->index->nodes, t->nodes[i].dev, t->nodes[i].ino, (int)i);
	return err;
}

int group_tree_find(const struct group_tree *t, const char *path)
{
	struct stat st;
	int i;

	if (stat(path, &st))
		return -ENOENT;
	i = t->index ? idmap_get(&t->index->nodes, st.st_dev, st.st_ino) : -1;
	return i >= 0 ? i : -ENOENT;
}

/* Read node i's descriptor and find (or add) its parent. */
static int link_node(struct scan *s, unsigned i)
{
	struct group_tree_node *n = &s->t->nodes[i];
	struct vmdk_disk *d;
	char *ppath;
	bool added;
	int p;

	if (s->extent[i])
		return 0;
	vd_log_mute(true);
	p = vmdk_open(n->path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d);
	vd_log_mute(false);
	if (p) {
		n->flags |= GROUP_TREE_UNREADABLE;
		return 0;
	}
	if ((p = mark_files(s, i, d))) {
		vmdk_close(d);
		return p;
	}
	n = &s->t->nodes[i];
	describe(n, d);
	n->hint = n->hint_buf = vd_strdup(vmdk_parent_hint(d));
	if (n->hint && chain_hint_find(n->path, n->hint,
				       vmdk_desc_get(d, "ddb.nativeParentHint"), &ppath))
		n->flags |= GROUP_TREE_MISSING;
	else if (n->hint) {
		p = add_node(s, ppath, &added);
		free(ppath);
		if (p < 0) {
			vmdk_close(d);
			return p;
		}
		n = &s->t->nodes[i]; /* add_node may move the array */
		n->parent = p;
		if (added)
			s->t->nodes[p].flags |= GROUP_TREE_OUTSIDE;
	}
	vmdk_close(d);
	return 0;
}

/* Bytes of data the whole chain of a leaf holds: its size as a full clone. */
static uint64_t full_size(const char *path)
{
	struct chain *c;
	struct chain_run r;
	uint64_t sum = 0;

	if (chain_open(path, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK | CHAIN_OPEN_DIRTY_OK,
		       NULL, &c))
		return 0;
	for (uint64_t off = 0; off < chain_capacity(c); off += r.len) {
		if (chain_status(c, off, chain_capacity(c) - off, &r))
			break;
		if (r.kind == CHAIN_DATA)
			sum += r.len;
	}
	chain_close(c);
	return sum;
}

/* A sidecar record of the children vdelta gave the layer exists. */
/* Links, children, reach, roots and flags, once every node is linked. */
static void finish(struct group_tree *t, unsigned flags)
{
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		struct group_tree_node *n = &t->nodes[i], *p;
		if (n->parent < 0)
			continue;
		p = &t->nodes[n->parent];
		p->nr_children++;
		if (!(p->flags & GROUP_TREE_UNREADABLE) && n->parent_cid != p->cid)
			n->flags |= GROUP_TREE_BROKEN;
		if (!(p->flags & GROUP_TREE_UNREADABLE) && n->capacity != p->capacity)
			n->flags |= GROUP_TREE_CAPACITY;
	}
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		struct group_tree_node *n = &t->nodes[i];
		int at = (int)i, steps = 0;
		bool leaf = n->nr_children == 0, readable = true;
		for (; at >= 0 && steps++ <= (int)t->nr_nodes; at = t->nodes[at].parent) {
			t->nodes[at].reach += leaf;
			readable &= !(t->nodes[at].flags &
				      (GROUP_TREE_MISSING | GROUP_TREE_UNREADABLE |
				       GROUP_TREE_BROKEN | GROUP_TREE_CAPACITY));
			n->root = at;
		}
		if (n->frozen && leaf)
			n->flags |= GROUP_TREE_ORPHAN;
		if (!leaf && group_record_state(n->path) != GROUP_RECORD_WHOLE)
			n->flags |= GROUP_TREE_UNKNOWN;
		if (leaf && readable && (flags & GROUP_SCAN_SIZES))
			n->full_bytes = full_size(n->path);
	}
}

int group_tree_scan(char *const *dirs, unsigned nr_dirs, unsigned flags,
		    struct group_tree **out)
{
	struct scan s = { .t = calloc(1, sizeof *s.t), .flags = flags };
	int err = s.t ? 0 : -ENOMEM;

	for (unsigned i = 0; !err && i < nr_dirs; i++)
		err = scan_dir(&s, dirs[i], 0);
	/* text descriptors first: they name their extent files */
	for (unsigned i = 0; !err && i < s.t->nr_nodes; i++)
		if (s.text[i])
			err = link_node(&s, i);
	for (unsigned i = 0; !err && i < s.t->nr_nodes; i++)
		if (!s.text[i])
			err = link_node(&s, i);
	if (!err) {
		drop_extents(&s);
		finish(s.t, flags);
		err = index_nodes(s.t);
	}
	idmap_free(&s.nodes);
	idmap_free(&s.dirs);
	idmap_free(&s.files);
	free(s.text);
	free(s.extent);
	free(s.listed);
	if (err) {
		group_tree_free(s.t);
		return err;
	}
	*out = s.t;
	return 0;
}

void group_tree_free(struct group_tree *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->nr_nodes; i++) {
		free(t->nodes[i].path);
		free(t->nodes[i].hint_buf);
	}
	vd_strv_free(t->intents, t->nr_intents);
	vd_strv_free(t->unscanned, t->nr_unscanned);
	free(t->nodes);
	if (t->index)
		idmap_free(&t->index->nodes);
	free(t->index);
	free(t);
}
