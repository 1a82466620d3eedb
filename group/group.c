/* group — linked-clone groups: discovery and sharing (layer 3).
 *
 * Owns: a group as the scan of some folders sees it (group_tree.c), with
 * the children each layer recorded (group_record.c) and did not turn up;
 * "who reaches this layer", the refusals that name them, and what the
 * merges ask of a layer and its parent.  Loading with recovery first is
 * the front door, group_load (group_recover.c).
 *
 * Where clones live (the folders scanned, recursively): the folder of
 * every layer of the disk's chain and the folder above it — the datastore
 * level, where VMware keeps one folder per VM — except `/` and a shared
 * temporary folder (sticky and writable by all, /tmp: other users' files,
 * not a datastore); every configured datastore root ($VDELTA_DATASTORES,
 * colon-separated, or else one folder a line in /etc/vdelta/datastores);
 * and the folders given (--scan).
 *
 * Who reaches a layer: the disks found above it, plus the children it
 * recorded that the scan did not find, plus its other names (aliases: hard
 * links, symlinks, a second descriptor of its extent files) — counted on
 * the layer and every layer below it, since a disk that reaches a layer
 * reaches its parents.  A layer with children found and no record of any,
 * or with a child found that its record does not list, has children vdelta
 * never recorded (made by another tool, copied in): they are UNKNOWN (a
 * record vdelta wrote later for the layer does not make the others known).  A layer is busy when it is shared or its children are
 * unknown; no operation removes, merges into or moves a busy layer, and
 * walks down a chain stop at the first (what lies below a busy layer is
 * reached through it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "group_int.h"

/* ---- scan ---------------------------------------------------------------------------- */

/* Recorded children of node i that the scan did not find; a child found
 * that the record does not list makes i's children unknown too (the record
 * is not the whole list: who else did it miss?) until `vdelta adopt`. */
static int find_unseen(struct group *g, unsigned i)
{
	struct group_tree *t = g->t;
	char **rec;
	unsigned n, listed = 0;
	int err = group_record_read(t->nodes[i].path, &rec, &n), c;

	for (unsigned r = 0; !err && r < n; r++)
		if ((c = group_tree_find(t, rec[r])) < 0 || t->nodes[c].parent != (int)i)
			err = vd_strv_add(&g->unseen[i], &g->nr_unseen[i], rec[r]);
		else
			listed++;
	if (!err && listed < t->nodes[i].nr_children)
		t->nodes[i].flags |= GROUP_TREE_UNKNOWN;
	vd_strv_free(rec, n);
	return err;
}

/* users_unseen[i]: recorded children not found and other names, at i or
 * above it (a disk that reaches a layer reaches its parents too). */
static void count_unseen(struct group *g)
{
	const struct group_tree *t = g->t;

	for (unsigned i = 0; i < t->nr_nodes; i++) {
		unsigned extra = g->nr_unseen[i] + t->nodes[i].aliases;
		int at = (int)i;
		for (unsigned steps = 0; extra && at >= 0 && steps <= t->nr_nodes; steps++) {
			g->users_unseen[at] += extra;
			at = t->nodes[at].parent;
		}
	}
}

/* A folder that is no datastore: the root, or a shared temporary folder. */
static bool not_a_datastore(const char *dir)
{
	struct stat st;

	return !strcmp(dir, "/") || stat(dir, &st) ||
	       ((st.st_mode & S_ISVTX) && (st.st_mode & S_IWOTH));
}

/* path's folder (canonical) and, unless it is none, the one above it. */
static int add_layer_dirs(const char *path, char ***dirs, unsigned *nr)
{
	char *d = vd_dirname(path), *real = d ? realpath(d, NULL) : NULL, *up;
	int err = real ? vd_strv_add(dirs, nr, real) : d ? -errno : -ENOMEM;

	up = real ? vd_dirname(real) : NULL;
	if (!err && up && !not_a_datastore(up))
		err = vd_strv_add(dirs, nr, up);
	free(up);
	free(real);
	free(d);
	return err;
}

/* The configured datastore roots that exist. */
static int add_roots(char ***dirs, unsigned *nr)
{
	const char *env = getenv("VDELTA_DATASTORES");
	char *text = NULL, *save, *line;
	int err = env ? 0 : vd_read_small(GROUP_DATASTORES_FILE, GROUP_MAX_RECORD, &text);
	const char *sep = env ? ":" : "\n";

	if (!env && err)
		return err == -ENOENT ? 0 : err;
	if (env && !(text = strdup(env)))
		return -ENOMEM;
	for (line = strtok_r(text, sep, &save); !err && line; line = strtok_r(NULL, sep, &save)) {
		line += strspn(line, " \t");
		if (!*line || *line == '#')
			continue;
		if (access(line, F_OK))
			vd_warn("%s: a datastore root that does not exist (%s): not scanned",
				line, env ? "VDELTA_DATASTORES" : GROUP_DATASTORES_FILE);
		else
			err = vd_strv_add(dirs, nr, line);
	}
	free(text);
	return err;
}

/* The folders of disk's layers and the ones above them. */
static int disk_dirs(const char *disk, char ***dirs, unsigned *nr)
{
	struct chain *c = NULL;
	int err = add_layer_dirs(disk, dirs, nr);

	/* a chain that does not open (an interrupted operation) still gets
	 * its own folder and the ones given scanned, so it can be recovered */
	vd_log_mute(true);
	if (!err && !chain_open(disk, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK |
				CHAIN_OPEN_DIRTY_OK | CHAIN_OPEN_IGNORE_CID, NULL, &c)) {
		for (unsigned i = 1; !err && i < chain_depth(c); i++)
			err = add_layer_dirs(vmdk_path(chain_layer(c, i)), dirs, nr);
		chain_close(c);
	}
	vd_log_mute(false);
	return err;
}

/* The folders to scan: every layer's and the one above it, the datastore
 * roots, then the ones given. */
static int scan_dirs(char *const *disks, unsigned nr_disks, char *const *extra,
		     unsigned nr_extra, char ***dirs, unsigned *nr)
{
	int err = 0;

	*dirs = NULL;
	*nr = 0;
	for (unsigned i = 0; !err && i < nr_disks; i++)
		err = disk_dirs(disks[i], dirs, nr);
	if (!err)
		err = add_roots(dirs, nr);
	for (unsigned i = 0; !err && i < nr_extra; i++)
		err = vd_strv_add(dirs, nr, extra[i]);
	return err;
}

/* Drop folders named twice (one scan visits a folder once anyway; the
 * plan lists each folder once). */
static void unique_dirs(char **dirs, unsigned *nr)
{
	unsigned k = 0;

	for (unsigned i = 0; i < *nr; i++) {
		bool dup = false;
		for (unsigned j = 0; j < k && !dup; j++)
			dup = !strcmp(dirs[j], dirs[i]);
		if (dup)
			free(dirs[i]);
		else
			dirs[k++] = dirs[i];
	}
	*nr = k;
}

static int group_alloc(struct group *g)
{
	unsigned n = g->t->nr_nodes ? g->t->nr_nodes : 1;

	g->unseen = calloc(n, sizeof *g->unseen);
	g->nr_unseen = calloc(n, sizeof *g->nr_unseen);
	g->users_unseen = calloc(n, sizeof *g->users_unseen);
	return g->unseen && g->nr_unseen && g->users_unseen ? 0 : -ENOMEM;
}

/* The disks' canonical paths (each reported when it is not there). */
static int real_disks(char *const *disks, unsigned nr, char ***abs, unsigned *nr_abs)
{
	int err = 0;

	for (unsigned i = 0; !err && i < nr; i++) {
		char *p = realpath(disks[i], NULL);
		if (!p) {
			err = -errno;
			vd_err("%s: %s", disks[i], strerror(errno));
		}
		err = err ? err : vd_strv_add(abs, nr_abs, p);
		free(p);
	}
	return err;
}

int group_scan(const char *disk, char *const *extra, unsigned nr_extra,
	       struct group **out)
{
	char *const one[1] = { (char *)disk };

	return group_scan_disks(one, disk ? 1 : 0, extra, nr_extra, out);
}

int group_scan_disks(char *const *disks, unsigned nr_disks, char *const *extra,
		     unsigned nr_extra, struct group **out)
{
	struct group *g = calloc(1, sizeof *g);
	char **abs = NULL;
	unsigned nr_abs = 0;
	int err = g ? real_disks(disks, nr_disks, &abs, &nr_abs) : -ENOMEM;

	if (!err)
		err = scan_dirs(abs, nr_abs, extra, nr_extra, &g->dirs, &g->nr_dirs);
	if (!err)
		unique_dirs(g->dirs, &g->nr_dirs);
	if (!err)
		err = group_tree_scan(g->dirs, g->nr_dirs, 0, &g->t);
	if (!err)
		err = group_alloc(g);
	for (unsigned i = 0; !err && i < g->t->nr_nodes; i++)
		err = find_unseen(g, i);
	if (!err)
		count_unseen(g);
	vd_strv_free(abs, nr_abs);
	if (err) {
		group_free(g);
		return err;
	}
	*out = g;
	return 0;
}

void group_free(struct group *g)
{
	if (!g)
		return;
	for (unsigned i = 0; g->t && g->unseen && i < g->t->nr_nodes; i++)
		vd_strv_free(g->unseen[i], g->nr_unseen[i]);
	free(g->unseen);
	free(g->nr_unseen);
	free(g->users_unseen);
	vd_strv_free(g->dirs, g->nr_dirs);
	group_tree_free(g->t);
	free(g);
}

/* ---- sharing -------------------------------------------------------------------------- */

const struct group_tree *group_nodes(const struct group *g)
{
	return g->t;
}

const char *group_base_name(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

char *const *group_scanned(const struct group *g, unsigned *nr)
{
	*nr = g->nr_dirs;
	return g->dirs;
}

int group_node(const struct group *g, const char *path)
{
	int i = group_tree_find(g->t, path);

	return i >= 0 && !(g->t->nodes[i].flags & GROUP_TREE_GONE) ? i : -ENOENT;
}

unsigned group_nr_users(const struct group *g, int node)
{
	return g->t->nodes[node].reach + g->users_unseen[node];
}

bool group_shared(const struct group *g, int node)
{
	return group_nr_users(g, node) > 1;
}

bool group_unknown(const struct group *g, int node)
{
	return g->t->nodes[node].flags & GROUP_TREE_UNKNOWN;
}

bool group_busy(const struct group *g, int node)
{
	return group_shared(g, node) || group_unknown(g, node);
}

/* fprintf into m every user of node: the disks that reach it (its
 * subtree's leaves), then the recorded children not found and the other
 * names, at node or below. */
static void list_users(const struct group *g, int node, FILE *m)
{
	const struct group_tree *t = g->t;
	const char *sep = "";
	unsigned steps = 0;

	for (int i = node; i >= 0 && steps++ <= t->nr_nodes; i = group_tree_next(t, node, i))
		if (!t->nodes[i].nr_children) {
			fprintf(m, "%s%s", sep, t->nodes[i].path);
			sep = ", ";
		}
	steps = 0;
	for (int i = node; i >= 0 && steps++ <= t->nr_nodes; i = group_tree_next(t, node, i)) {
		for (unsigned k = 0; k < g->nr_unseen[i]; k++) {
			fprintf(m, "%s%s (recorded child of %s, not found)", sep,
				g->unseen[i][k], t->nodes[i].path);
			sep = ", ";
		}
		if (t->nodes[i].aliases) {
			fprintf(m, "%s%s under %u other name%s (a hard link, a symlink or a "
				"second descriptor of its files)", sep, t->nodes[i].path,
				t->nodes[i].aliases, t->nodes[i].aliases == 1 ? "" : "s");
			sep = ", ";
		}
	}
}

int group_refuse_shared(const struct group *g, int node, const char *what)
{
	char *list = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&list, &len);

	if (!m)
		return -ENOMEM;
	list_users(g, node, m);
	fclose(m);
	vd_err("%s: shared by %u disks (%s): %s refused, nothing changed",
	       g->t->nodes[node].path, group_nr_users(g, node), list ? list : "", what);
	free(list);
	return -EBUSY;
}

int group_disk_node(const struct group *g, const char *disk, const char *what)
{
	int d = group_node(g, disk);

	if (d < 0) {
		vd_err("%s: not found among the disks scanned", disk);
		return -ENOENT;
	}
	if (g->t->nodes[d].nr_children) {
		vd_err("%s: has children (it is a snapshot, not a disk): %s refused", disk, what);
		return -EBUSY;
	}
	return group_busy(g, d) ? group_refuse_busy(g, d, what) : d;
}

int group_refuse_busy(const struct group *g, int node, const char *what)
{
	if (group_shared(g, node))
		return group_refuse_shared(g, node, what);
	vd_err("%s: children unknown: it has children and no record of the ones "
	       "vdelta gave it (made by another tool, copied in), so a clone in a "
	       "folder not scanned may read it: %s refused, nothing changed.  Name "
	       "the folders where its clones may live (VDELTA_DATASTORES, %s, or "
	       "--scan DIR) and record what they hold with `vdelta adopt DIR...`",
	       g->t->nodes[node].path, what, GROUP_DATASTORES_FILE);
	return -EBUSY;
}

/* ---- what the merges share ------------------------------------------------------------ */

int group_merge_node(const struct group *g, const char *layer, const char *what, int *l)
{
	const struct group_tree *t = g->t;
	int p;

	*l = group_node(g, layer);
	if (*l < 0) {
		vd_err("%s: not found among the disks scanned", layer);
		return -ENOENT;
	}
	p = t->nodes[*l].parent;
	if (p < 0) {
		vd_err("%s: has no parent: %s refused", layer, what);
		return -EINVAL;
	}
	if (t->nodes[*l].flags & (GROUP_TREE_BROKEN | GROUP_TREE_MISSING |
				  GROUP_TREE_CAPACITY | GROUP_TREE_UNREADABLE)) {
		vd_err("%s: its link to its parent is broken: %s refused", layer, what);
		return -ESTALE;
	}
	return p;
}
