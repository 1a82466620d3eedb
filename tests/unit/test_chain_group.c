/* tests — group operations of chain/ (commit, delete, revert): sharing
 * refusals and crash safety (test layer).
 *
 * The group: base <- s1 <- s2 <- s3 (disk A, top s3) and clone over base
 * (disk B), all in one folder.  The oracle of content is an in-memory model
 * of every byte the test wrote; the oracle of "nothing shared changed" is
 * the bytes of every shared file, compared with a copy taken before.
 *
 * Fault injection: each operation is run with vd_faultio allowing 0, 1, 2,
 * ... writes (renames and unlinks count), with and without dropping the
 * unsynced ones, then the group is loaded again (which recovers the intent
 * record); every disk must then read its old or its new content, and the
 * shared base must be byte-identical.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vdt_chain.h"
#include "vdt_legacy.h"
#include "chain.h"
#include "group.h"

#define CAP (8u << 20)
#define FAULT_MAX 5000

struct models {
	uint8_t *base, *s1, *s2, *s3, *clone; /* what each disk / layer reads */
};

static struct models M;
static char *tmpl; /* the group, built once */

static void fill(uint8_t *model, struct chain *c, uint64_t off, size_t len, int pat)
{
	uint8_t *buf = malloc(len);

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = pat ? (uint8_t)(pat + i / 4096) : 0;
	assert_int_equal(pat ? chain_pwrite(c, buf, len, off)
			     : chain_pwrite_zeroes(c, len, off), 0);
	memcpy(model + off, buf, len);
	free(buf);
}

/* Open top RDWR, apply writes (off, len, pattern; pattern 0: zeroes). */
static void write_into(const char *top, uint8_t *model, const uint64_t (*w)[3], int n)
{
	struct chain *c;

	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), 0);
	for (int i = 0; i < n; i++)
		fill(model, c, w[i][0], (size_t)w[i][1], (int)w[i][2]);
	assert_int_equal(chain_close(c), 0);
}

static char *at(const char *dir, const char *name)
{
	char *p = vdt_join(dir, name);
	assert_non_null(p);
	return p;
}

static void snap(const char *dir, const char *top, const char *expect)
{
	char *p = at(dir, top), *n;

	assert_int_equal(group_snapshot(p, NULL, NULL, &n), 0);
	assert_string_equal(strrchr(n, '/') + 1, expect);
	free(n);
	free(p);
}

static void build(const char *dir)
{
	struct vmdk_create_opts o = { .capacity = CAP };
	char *base = at(dir, "base.vmdk"), *p;
	static const uint64_t wb[][3] = { {0, 1 << 20, 1}, {3 << 20, 256 << 10, 2},
					  {7 << 20, 64 << 10, 3} };
	static const uint64_t w1[][3] = { {512 << 10, 1 << 20, 4}, {5 << 20, 4096, 5} };
	static const uint64_t w2[][3] = { {0, 128 << 10, 0}, {2 << 20, 300 << 10, 6},
					  {3 << 20, 64 << 10, 0} };
	static const uint64_t w3[][3] = { {100 << 10, 8192, 7}, {6 << 20, 1 << 20, 8} };
	static const uint64_t wc[][3] = { {1 << 20, 512 << 10, 9}, {3 << 20, 4096, 10} };

	assert_int_equal(vmdk_create(base, &o, NULL), 0);
	write_into(base, M.base, wb, 3);
	snap(dir, "base.vmdk", "base-000001.vmdk");
	memcpy(M.s1, M.base, CAP);
	p = at(dir, "base-000001.vmdk");
	write_into(p, M.s1, w1, 2);
	free(p);
	snap(dir, "base-000001.vmdk", "base-000002.vmdk");
	memcpy(M.s2, M.s1, CAP);
	p = at(dir, "base-000002.vmdk");
	write_into(p, M.s2, w2, 3);
	free(p);
	snap(dir, "base-000002.vmdk", "base-000003.vmdk");
	memcpy(M.s3, M.s2, CAP);
	p = at(dir, "base-000003.vmdk");
	write_into(p, M.s3, w3, 2);
	free(p);
	p = at(dir, "clone.vmdk");
	assert_int_equal(group_create_child(base, p, true, NULL, NULL), 0);
	memcpy(M.clone, M.base, CAP);
	write_into(p, M.clone, wc, 2);
	free(p);
	free(base);
}

static int setup(void **state)
{
	(void)state;
	vd_log_set(vdt_log, NULL);
	M.base = calloc(1, CAP);
	M.s1 = calloc(1, CAP);
	M.s2 = calloc(1, CAP);
	M.s3 = calloc(1, CAP);
	M.clone = calloc(1, CAP);
	tmpl = vdt_mkdtemp("group");
	if (!M.base || !M.s1 || !M.s2 || !M.s3 || !M.clone || !tmpl)
		return -1;
	build(tmpl);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	vdt_rmtree(tmpl);
	free(tmpl);
	free(M.base);
	free(M.s1);
	free(M.s2);
	free(M.s3);
	free(M.clone);
	return 0;
}

/* A fresh copy of the group. */
static char *copy_group(void)
{
	char *dir = vdt_mkdtemp("groupcp"), cmd[512];

	assert_non_null(dir);
	snprintf(cmd, sizeof cmd, "cp -a '%s'/. '%s'/", tmpl, dir);
	assert_int_equal(system(cmd), 0);
	return dir;
}

#define reads(dir, name, model) vdt_chain_reads(dir, name, model, CAP)

static bool same_bytes(const char *dir, const char *name)
{
	char *a = at(dir, name), *b = at(tmpl, name);
	size_t la = 0, lb = 0;
	uint8_t *x = vdt_slurp(a, &la), *y = vdt_slurp(b, &lb);
	bool same = x && y && la == lb && !memcmp(x, y, la);

	free(x);
	free(y);
	free(a);
	free(b);
	return same;
}

static bool exists(const char *dir, const char *name)
{
	char *p = at(dir, name);
	bool e = !access(p, F_OK);

	free(p);
	return e;
}

/* Does the disk's chain reach base.vmdk? */
static bool reaches_base(const char *dir)
{
	char *p = at(dir, "base-000003.vmdk"), *b = at(dir, "base.vmdk");
	struct chain *c;
	bool r = false;
	struct stat sa, sb;

	assert_int_equal(chain_open(p, CHAIN_OPEN_RDONLY, NULL, &c), 0);
	for (unsigned i = 0; i < chain_depth(c); i++)
		r |= !stat(vmdk_path(chain_layer(c, i)), &sa) && !stat(b, &sb) &&
		     sa.st_ino == sb.st_ino;
	chain_close(c);
	free(p);
	free(b);
	return r;
}

typedef int group_fn(struct group *g, const char *disk, unsigned flags,
		     const struct vd_io *io, struct group_plan *plan);

/* Load the group of path (recovery with the POSIX io) and run op on it. */
static int run_path(const char *p, group_fn *op, unsigned flags, const struct vd_io *io,
		    struct group_plan *plan)
{
	struct group *g;
	int err = group_load(p, NULL, 0, 0, NULL, &g);

	if (!err) {
		err = op(g, p, flags, io, plan);
		group_free(g);
	}
	return err;
}

static int run_op(const char *dir, const char *name, group_fn *op, unsigned flags,
		  const struct vd_io *io, struct group_plan *plan)
{
	char *p = at(dir, name);
	int err = run_path(p, op, flags, io, plan);

	free(p);
	return err;
}

static int consolidate_op(struct group *g, const char *disk, unsigned flags,
			  const struct vd_io *io, struct group_plan *plan)
{
	return group_consolidate(g, disk, NULL, 0, flags, io, plan);
}

/* Every file of the copy is byte-identical to the template. */
static void assert_all_unchanged(const char *dir)
{
	static const char *const names[] = {
		"base.vmdk", "base-000001.vmdk", "base-000002.vmdk", "base-000003.vmdk",
		"clone.vmdk", "base.vmdk.vdelta-children",
	};

	for (unsigned i = 0; i < sizeof names / sizeof *names; i++)
		assert_true(same_bytes(dir, names[i]));
}

/* ---- sharing ---------------------------------------------------------------------- */

static void test_discovery(void **state)
{
	char *p = at(tmpl, "base-000003.vmdk"), *pb = at(tmpl, "base.vmdk");
	char *p1 = at(tmpl, "base-000001.vmdk");
	struct group *g;
	int b, s1;

	(void)state;
	assert_int_equal(group_load(p, NULL, 0, 0, NULL, &g), 0);
	b = group_node(g, pb);
	s1 = group_node(g, p1);
	free(pb);
	free(p1);
	assert_true(b >= 0 && s1 >= 0);
	assert_int_equal(group_nr_users(g, b), 2);
	assert_true(group_shared(g, b));
	assert_false(group_shared(g, s1));
	group_free(g);
	free(p);
}

static void test_commit_into_shared_refused(void **state)
{
	char *dir = copy_group();
	struct group_plan plan = {0};

	(void)state;
	assert_int_equal(run_op(dir, "base-000001.vmdk", group_commit, 0, NULL,
				&plan), -EBUSY);
	assert_non_null(strstr(vdt_last_msg, "clone.vmdk"));
	group_plan_free(&plan);
	assert_all_unchanged(dir);
	vdt_rmtree(dir);
	free(dir);
}

static void test_delete_snapshot_refused(void **state)
{
	char *dir = copy_group();
	struct group_plan plan = {0};

	(void)state;
	assert_int_equal(run_op(dir, "base.vmdk", group_delete, 0, NULL, &plan),
			 -EBUSY);
	group_plan_free(&plan);
	assert_all_unchanged(dir);
	vdt_rmtree(dir);
	free(dir);
}

static void test_dry_run_writes_nothing(void **state)
{
	char *dir = copy_group();
	struct group_plan plan = {0};

	(void)state;
	assert_int_equal(run_op(dir, "base-000002.vmdk", group_commit,
				GROUP_DRY_RUN, NULL, &plan), 0);
	assert_true(plan.nr_steps >= 3);
	assert_int_equal(plan.steps[0].kind, GROUP_STEP_WRITE);
	group_plan_free(&plan);
	assert_int_equal(run_op(dir, "base-000003.vmdk", group_delete,
				GROUP_DRY_RUN, NULL, &plan), 0);
	group_plan_free(&plan);
	assert_all_unchanged(dir);
	vdt_rmtree(dir);
	free(dir);
}

/* A clone moved out of the folders scanned still protects the base. */
static void test_moved_clone_protects(void **state)
{
	char *dir = copy_group(), *away = vdt_mkdtemp("groupaway");
	char *from = at(dir, "clone.vmdk"), *to = at(away, "clone.vmdk");
	struct group_plan plan = {0};
	bool orphan = false;

	(void)state;
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(run_op(dir, "base-000001.vmdk", group_commit, 0, NULL,
				&plan), -EBUSY);
	group_plan_free(&plan);
	assert_int_equal(run_op(dir, "base-000003.vmdk", group_delete, 0, NULL,
				&plan), 0);
	for (unsigned i = 0; i < plan.nr_steps; i++)
		orphan |= plan.steps[i].kind == GROUP_STEP_ORPHAN;
	assert_true(orphan);
	group_plan_free(&plan);
	assert_true(same_bytes(dir, "base.vmdk"));
	assert_false(exists(dir, "base-000001.vmdk"));
	assert_int_equal(rename(to, from), 0);
	assert_true(reads(dir, "clone.vmdk", M.clone));
	vdt_rmtree(away);
	vdt_rmtree(dir);
	free(away);
	free(dir);
	free(from);
	free(to);
}

/* ---- operations, then the same under every crash point ------------------------------ */

enum which { OP_COMMIT, OP_DELETE, OP_REVERT, OP_REPAIR, OP_UNLINK, OP_CONSOLIDATE,
	     OP_PULL, OP_PULL_BASE, OP_CONSOLIDATE_BASE };

/* The *_BASE ops run on the group without the clone: base is A's alone. */
static bool without_clone(enum which w)
{
	return w == OP_PULL_BASE || w == OP_CONSOLIDATE_BASE;
}

/* The clone goes, and base's record with it keeps only the snapshot (a
 * record gone altogether would leave base's children unknown). */
static void drop_clone(const char *dir)
{
	char *c = at(dir, "clone.vmdk"), *r = at(dir, "base.vmdk.vdelta-children");
	FILE *f;

	assert_int_equal(unlink(c), 0);
	assert_non_null(f = fopen(r, "w"));
	fputs("child=base-000001.vmdk\n", f);
	assert_int_equal(fclose(f), 0);
	free(c);
	free(r);
}

/* The parent the layer's descriptor names ("" for a base). */
static char *parent_of(const char *dir, const char *name)
{
	char *p = at(dir, name), *h;
	struct vmdk_disk *d;

	assert_int_equal(vmdk_open(p, VMDK_OPEN_RDONLY, NULL, &d), 0);
	h = strdup(vmdk_parent_hint(d) ? vmdk_parent_hint(d) : "");
	if (!vmdk_parent_hint(d))
		assert_int_equal(vmdk_parent_cid(d), VMDK_CID_NONE);
	vmdk_close(d);
	free(p);
	return h;
}

/* Leaked grains at the end of the top (what a killed writer leaves). */
static void add_leak(const char *dir)
{
	char *p = at(dir, "base-000003.vmdk");
	uint8_t junk[3 * 65536];
	FILE *f = fopen(p, "ab");

	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)(i * 7 + 1);
	assert_non_null(f);
	assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
	fclose(f);
	free(p);
}

static uint64_t leaked(const char *dir)
{
	char *p = at(dir, "base-000003.vmdk");
	struct vmdk_check_result r = {0};
	struct vmdk_disk *d;

	assert_int_equal(vmdk_open(p, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d), 0);
	assert_int_equal(vmdk_check(d, NULL, NULL, &r), 0);
	vmdk_close(d);
	free(p);
	return r.leaked;
}

/* After the op (finished, or crashed and recovered): the invariants. */
static void check_after(const char *dir, enum which w, bool finished)
{
	char *h;

	if (!without_clone(w)) {
		assert_true(same_bytes(dir, "base.vmdk"));
		assert_true(reads(dir, "clone.vmdk", M.clone));
	}
	assert_false(exists(dir, "base-000003.vmdk" GROUP_INTENT_SUFFIX));
	assert_false(exists(dir, "base-000002.vmdk" GROUP_INTENT_SUFFIX));
	assert_false(exists(dir, "base-000001.vmdk" GROUP_INTENT_SUFFIX));
	switch (w) {
	case OP_PULL: /* same content; s1 gone and s2 over base when finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		assert_true(reads(dir, "base-000002.vmdk", M.s2));
		h = parent_of(dir, "base-000002.vmdk");
		assert_string_equal(h, exists(dir, "base-000001.vmdk") ? "base-000001.vmdk"
									: "base.vmdk");
		free(h);
		if (finished)
			assert_false(exists(dir, "base-000001.vmdk"));
		break;
	case OP_PULL_BASE: /* same content; base gone and s1 a base when finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		assert_true(reads(dir, "base-000001.vmdk", M.s1));
		h = parent_of(dir, "base-000001.vmdk");
		assert_string_equal(h, exists(dir, "base.vmdk") ? "base.vmdk" : "");
		free(h);
		if (finished)
			assert_false(exists(dir, "base.vmdk"));
		break;
	case OP_CONSOLIDATE_BASE: /* same content; s3 a base, alone, when finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		if (finished) {
			assert_false(exists(dir, "base.vmdk") || exists(dir, "base-000001.vmdk") ||
				     exists(dir, "base-000002.vmdk"));
			h = parent_of(dir, "base-000003.vmdk");
			assert_string_equal(h, "");
			free(h);
		}
		break;
	case OP_COMMIT: /* content unchanged, s2 gone when finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		if (finished)
			assert_false(exists(dir, "base-000002.vmdk"));
		break;
	case OP_DELETE: /* old content, or all three layers gone */
		if (exists(dir, "base-000003.vmdk")) {
			assert_false(finished);
			assert_true(reads(dir, "base-000003.vmdk", M.s3));
		} else {
			assert_false(exists(dir, "base-000002.vmdk"));
			assert_false(exists(dir, "base-000001.vmdk"));
		}
		break;
	case OP_UNLINK: /* same content; no shared layer reached once finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		if (finished)
			assert_true(same_bytes(dir, "base-000003.vmdk") && !reaches_base(dir));
		else /* rolled back: s1 as it was */
			assert_true(same_bytes(dir, "base-000001.vmdk") || reaches_base(dir) == false);
		break;
	case OP_CONSOLIDATE: /* same content; s3 over the shared base when finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		if (finished) {
			assert_false(exists(dir, "base-000002.vmdk") || exists(dir, "base-000001.vmdk"));
			h = parent_of(dir, "base-000003.vmdk");
			assert_string_equal(h, "base.vmdk");
			free(h);
		}
		break;
	case OP_REPAIR: /* same content; no leak once finished */
		assert_true(reads(dir, "base-000003.vmdk", M.s3));
		if (finished)
			assert_int_equal(leaked(dir), 0);
		break;
	case OP_REVERT: /* old content or its parent's */
		assert_true(reads(dir, "base-000003.vmdk", M.s3) ||
			    reads(dir, "base-000003.vmdk", M.s2));
		if (finished)
			assert_true(reads(dir, "base-000003.vmdk", M.s2));
		break;
	}
}

static int do_op(const char *dir, enum which w, const struct vd_io *io)
{
	struct group_plan plan = {0};
	char *top = at(dir, "base-000003.vmdk");
	int err = w == OP_REPAIR ? run_path(top, group_repair, 0, io, &plan)
		: w == OP_CONSOLIDATE || w == OP_CONSOLIDATE_BASE
			? run_path(top, consolidate_op, 0, io, &plan)
		: w == OP_PULL ? run_op(dir, "base-000002.vmdk", group_pull, 0, io, &plan)
		: w == OP_PULL_BASE ? run_op(dir, "base-000001.vmdk", group_pull, 0, io,
					     &plan)
		: w == OP_UNLINK ? run_op(dir, "base-000003.vmdk", group_promote_unlink, 0,
					  io, &plan)
		: w == OP_COMMIT ? run_op(dir, "base-000002.vmdk", group_commit, 0,
					  io, &plan)
		: w == OP_DELETE ? run_op(dir, "base-000003.vmdk", group_delete, 0,
					  io, &plan)
		: run_op(dir, "base-000003.vmdk", group_revert, 0, io, &plan);

	group_plan_free(&plan);
	free(top);
	return err;
}

static void plain(enum which w)
{
	char *dir = copy_group();

	if (without_clone(w))
		drop_clone(dir);
	if (w == OP_REPAIR) {
		add_leak(dir);
		assert_true(leaked(dir) > 0);
	}
	assert_int_equal(do_op(dir, w, NULL), 0);
	check_after(dir, w, true);
	vdt_rmtree(dir);
	free(dir);
}

static void test_commit(void **state) { (void)state; plain(OP_COMMIT); }
static void test_delete(void **state) { (void)state; plain(OP_DELETE); }
static void test_revert(void **state) { (void)state; plain(OP_REVERT); }
static void test_repair(void **state) { (void)state; plain(OP_REPAIR); }
static void test_unlink(void **state) { (void)state; plain(OP_UNLINK); }
static void test_consolidate(void **state) { (void)state; plain(OP_CONSOLIDATE); }
static void test_pull(void **state) { (void)state; plain(OP_PULL); }
static void test_pull_base(void **state) { (void)state; plain(OP_PULL_BASE); }
static void test_consolidate_base(void **state) { (void)state; plain(OP_CONSOLIDATE_BASE); }

/* Recovery as a command that is not a group command runs it: the records
 * beside the disk's layers, each recovered. */
static bool recover_near;

static void recover_beside(const char *disk)
{
	assert_int_equal(group_recover_near(disk, GROUP_RECOVER_FINISH, NULL, NULL), 0);
}

static bool legacy;

/* A dry run's load of the crashed group changes no file (the interrupted
 * operation is reported, not carried out). */
static bool check_dry;

static void dry_load_changes_nothing(const char *dir, const char *disk)
{
	struct group *g;

	assert_int_equal(vdt_sh("cp -a --sparse=always '%s' '%s.dry'", dir, dir), 0);
	if (!group_load(disk, NULL, 0, GROUP_DRY_RUN, NULL, &g))
		group_free(g);
	assert_int_equal(vdt_sh("diff -r '%s' '%s.dry' >/dev/null", dir, dir), 0);
	assert_int_equal(vdt_sh("rm -rf '%s.dry'", dir), 0);
}

/* Crash after n writes; then load the group again (recovery) and check. */
static bool crash_at(enum which w, long n, bool drop)
{
	char *dir = copy_group(), *top = at(dir, "base-000003.vmdk");
	char *clone = at(dir, "clone.vmdk");
	struct group *g;
	struct vd_faultio *fi;
	bool crashed;

	if (w == OP_REPAIR)
		add_leak(dir);
	if (without_clone(w))
		drop_clone(dir);
	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	do_op(dir, w, vd_faultio_io(fi));
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "crash after %ld writes (drop %d): %s\n", n, drop,
			crashed ? "crashed" : "finished");
	if (legacy)
		vdt_records_to_legacy(dir);
	if (check_dry)
		dry_load_changes_nothing(dir, exists(dir, "base-000003.vmdk") ? top : clone);
	/* the next command on the group: recovery, from any of its disks */
	if (recover_near)
		recover_beside(top);
	else if (!group_load(exists(dir, "base-000003.vmdk") ? top : clone, NULL, 0, 0,
				   NULL, &g))
		group_free(g);
	check_after(dir, w, !crashed);
	vdt_rmtree(dir);
	free(dir);
	free(top);
	free(clone);
	return crashed;
}

static void faults(enum which w)
{
	for (int drop = 0; drop < 2; drop++) {
		long n = 0;
		while (n < FAULT_MAX && crash_at(w, n, drop))
			n++;
		assert_true(n < FAULT_MAX);
		assert_true(n > 2); /* the op did write */
	}
}

static void test_commit_faults(void **state)
{
	(void)state;
	check_dry = true;
	faults(OP_COMMIT);
	check_dry = false;
}
static void test_delete_faults(void **state) { (void)state; faults(OP_DELETE); }
static void test_revert_faults(void **state) { (void)state; faults(OP_REVERT); }
static void test_repair_faults(void **state) { (void)state; faults(OP_REPAIR); }
static void test_unlink_faults(void **state) { (void)state; faults(OP_UNLINK); }
static void test_consolidate_faults(void **state) { (void)state; faults(OP_CONSOLIDATE); }
static void test_pull_faults(void **state) { (void)state; faults(OP_PULL); }

/* The same, recovered the way info / digest / mount do. */
static void test_faults_near(void **state)
{
	(void)state;
	recover_near = true;
	faults(OP_PULL);
	faults(OP_CONSOLIDATE_BASE); /* one pull of three layers */
	recover_near = false;
}
static void test_pull_base_faults(void **state) { (void)state; faults(OP_PULL_BASE); }

/* Records the release before record versions wrote, left at every crash
 * point of each operation, are recovered the same way (none is refused:
 * check_after finds no record left).  A pull of a base cuts the only
 * descriptor link between its layers at U4 (group_trust.c T7). */
static void test_legacy_faults(void **state)
{
	(void)state;
	legacy = true;
	faults(OP_COMMIT);
	faults(OP_DELETE);
	faults(OP_REVERT);
	faults(OP_PULL);
	faults(OP_PULL_BASE);
	faults(OP_UNLINK);
	legacy = false;
}
static void test_consolidate_base_faults(void **state)
{
	(void)state;
	faults(OP_CONSOLIDATE_BASE);
}

/* A frozen layer with leaked grains: compaction refused, nothing written. */
static void test_repair_frozen_refused(void **state)
{
	char *dir = copy_group(), *p = at(dir, "base-000001.vmdk");
	char *keep = at(dir, "frozen.copy");
	struct group_plan plan = {0};
	FILE *f = fopen(p, "ab");
	uint8_t junk[65536];

	(void)state;
	memset(junk, 0x5a, sizeof junk);
	assert_non_null(f);
	assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
	fclose(f);
	assert_int_equal(vdt_copy_file(p, keep), 0);
	assert_int_equal(run_path(p, group_repair, 0, NULL, &plan), -EBUSY);
	group_plan_free(&plan);
	size_t la = 0, lb = 0;
	uint8_t *a = vdt_slurp(p, &la), *b = vdt_slurp(keep, &lb);
	assert_true(a && b && la == lb && !memcmp(a, b, la));
	free(a);
	free(b);
	unlink(keep);
	free(keep);
	assert_true(reads(dir, "base-000003.vmdk", M.s3));
	vdt_rmtree(dir);
	free(dir);
	free(p);
}

/* The record of a pull stopped before its merge (U2), met again after P's
 * parent was relinked to a copy of G (same content, same CID): the layers
 * under P are not the ones it names, so recovery refuses it, naming both,
 * and writes nothing (group_pull.c, pull_matches). */
static bool pull_stopped_before_merge(const char *dir, long n)
{
	struct vd_faultio *fi;
	char *rec = at(dir, "base-000002.vmdk" GROUP_INTENT_SUFFIX), *h;
	bool before;

	assert_int_equal(vd_faultio_create(n, false, &fi), 0);
	do_op(dir, OP_PULL, vd_faultio_io(fi));
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	h = parent_of(dir, "base-000002.vmdk");
	before = !access(rec, F_OK) && !strcmp(h, "base-000001.vmdk");
	free(h);
	free(rec);
	return before;
}

static void relink(const char *dir, const char *name, const char *from, const char *to)
{
	char *p = at(dir, name), *hit;
	size_t len = 0;
	uint8_t *b = vdt_slurp(p, &len);

	assert_non_null(b);
	assert_int_equal(strlen(from), strlen(to)); /* the descriptor keeps its size */
	assert_non_null(hit = memmem(b, len, from, strlen(from)));
	memcpy(hit, to, strlen(to));
	assert_int_equal(vdt_write_file(p, b, len), 0);
	free(b);
	free(p);
}

static void test_pull_stale_chain(void **state)
{
	char *dir = NULL, *rec;
	long n;

	(void)state;
	for (n = 0; n < FAULT_MAX; n++) {
		dir = copy_group();
		if (pull_stopped_before_merge(dir, n))
			break;
		vdt_rmtree(dir);
		free(dir);
		dir = NULL;
	}
	assert_non_null(dir);
	assert_int_equal(vdt_sh("cp '%s/base.vmdk' '%s/basx.vmdk'", dir, dir), 0);
	relink(dir, "base-000001.vmdk", "=\"base.vmdk\"", "=\"basx.vmdk\"");
	assert_int_equal(vdt_sh("cd '%s' && sha256sum * | sort >'%s.sums'", dir, dir), 0);
	rec = at(dir, "base-000002.vmdk" GROUP_INTENT_SUFFIX);
	vdt_last_msg[0] = 0;
	assert_int_equal(group_recover(rec, GROUP_RECOVER_FINISH, NULL), -ESTALE);
	assert_non_null(strstr(vdt_last_msg, "basx.vmdk"));
	assert_non_null(strstr(vdt_last_msg, "not merged"));
	assert_int_equal(vdt_sh("cd '%s' && sha256sum * | sort | cmp -s - '%s.sums'", dir, dir),
			 0);
	assert_int_equal(vdt_sh("rm -f '%s.sums'", dir), 0);
	vdt_rmtree(dir);
	free(dir);
	free(rec);
}

/* Pulling a shared parent into its child: refused, nothing written. */
static void test_pull_refused(void **state)
{
	char *dir = copy_group();
	struct group_plan plan = {0};

	(void)state;
	assert_int_equal(run_op(dir, "base-000001.vmdk", group_pull, 0, NULL, &plan),
			 -EBUSY);
	assert_non_null(strstr(vdt_last_msg, "clone.vmdk"));
	group_plan_free(&plan);
	assert_int_equal(run_op(dir, "clone.vmdk", group_pull, 0, NULL, &plan), -EBUSY);
	group_plan_free(&plan);
	assert_all_unchanged(dir);
	vdt_rmtree(dir);
	free(dir);
}

/* Bytes of the disk whose top is `under` that top does not override: what
 * `top` holds not, where the chain of `under` reads data (its merged map,
 * not the pull's walk of each layer). */
static uint64_t taken_in(const char *top, const char *under)
{
	struct vmdk_disk *t;
	struct chain *c;
	enum vmdk_bs tk, ck;
	uint64_t n, m, bytes = 0;

	assert_int_equal(vmdk_open(top, VMDK_OPEN_RDONLY, NULL, &t), 0);
	assert_int_equal(chain_open(under, CHAIN_OPEN_RDONLY, NULL, &c), 0);
	for (uint64_t off = 0; off < CAP; off += n) {
		assert_int_equal(vmdk_block_status(t, off, CAP - off, &tk, &n), 0);
		for (uint64_t o = off; tk == VMDK_BS_UNALLOC && o < off + n; o += m) {
			assert_int_equal(chain_block_status(c, o, off + n - o, &ck, &m), 0);
			bytes += ck == VMDK_BS_DATA ? m : 0;
		}
	}
	chain_close(c);
	vmdk_close(t);
	return bytes;
}

/* Consolidating a disk alone (the clone dropped): its top takes every
 * layer under it in one pull, each byte once, and becomes a base. */
static void test_consolidate_one_pull(void **state)
{
	char *dir = copy_group(), *top = at(dir, "base-000003.vmdk");
	char *s2 = at(dir, "base-000002.vmdk");
	static const char *const gone[] = { "base-000002.vmdk", "base-000001.vmdk", "base.vmdk" };
	struct group_plan plan = {0};
	uint64_t bytes;
	char *parent;

	(void)state;
	drop_clone(dir);
	bytes = taken_in(top, s2);
	assert_int_equal(run_path(top, consolidate_op, GROUP_DRY_RUN, NULL, &plan), 0);
	assert_int_equal(plan.nr_steps, 5);
	assert_int_equal(plan.steps[0].kind, GROUP_STEP_PULL);
	assert_string_equal(strrchr(plan.steps[0].path, '/') + 1, "base-000003.vmdk");
	assert_int_equal(plan.steps[0].bytes, bytes);
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(plan.steps[2 + i].kind, GROUP_STEP_REMOVE);
		assert_string_equal(strrchr(plan.steps[2 + i].path, '/') + 1, gone[i]);
	}
	group_plan_free(&plan);
	assert_true(same_bytes(dir, "base.vmdk") && same_bytes(dir, "base-000001.vmdk") &&
		    same_bytes(dir, "base-000002.vmdk") && same_bytes(dir, "base-000003.vmdk"));
	assert_int_equal(run_path(top, consolidate_op, 0, NULL, &plan), 0);
	assert_int_equal(plan.copy_bytes, bytes);
	group_plan_free(&plan);
	assert_true(reads(dir, "base-000003.vmdk", M.s3));
	parent = parent_of(dir, "base-000003.vmdk");
	assert_string_equal(parent, "");
	for (unsigned i = 0; i < 3; i++)
		assert_false(exists(dir, gone[i]));
	vdt_rmtree(dir);
	free(parent);
	free(dir);
	free(top);
	free(s2);
}

/* ---- a legacy record naming another group's disk --------------------------------- */

/* Messages citing T7 (the family rule of group_trust.c). */
static unsigned nr_t7;

static void count_log(void *opaque, enum vd_log_level level, const char *msg)
{
	nr_t7 += strstr(msg, "(T7)") != NULL;
	vdt_log(opaque, level, msg);
}

/* Another group beside A in its folder: other.vmdk <- other-000001.vmdk. */
static void add_other_group(const char *dir, uint8_t *model)
{
	struct vmdk_create_opts o = { .capacity = CAP };
	char *b = at(dir, "other.vmdk"), *t = at(dir, "other-000001.vmdk");
	static const uint64_t wb[][3] = { {0, 256 << 10, 11} };
	static const uint64_t wt[][3] = { {1 << 20, 128 << 10, 12} };

	assert_int_equal(vmdk_create(b, &o, NULL), 0);
	write_into(b, model, wb, 1);
	snap(dir, "other.vmdk", "other-000001.vmdk");
	write_into(t, model, wt, 1);
	free(b);
	free(t);
}

/* Plant, beside A's top, a record as the release before versions wrote
 * it: op, then key=value lines whose values name files of dir. */
static void plant_legacy(const char *dir, const char *op, const char *const *lines)
{
	char *rec = at(dir, "base-000003.vmdk" GROUP_INTENT_SUFFIX);
	FILE *f = fopen(rec, "w");

	assert_non_null(f);
	fprintf(f, "# vdelta: an operation in progress; the next vdelta command on\n"
		   "# this group finishes it (do not remove by hand)\n"
		   "op=%s\ntarget=%s/base-000003.vmdk\n", op, dir);
	for (unsigned i = 0; lines[i]; i += 2)
		fprintf(f, "%s=%s/%s\n", lines[i], dir, lines[i + 1]);
	assert_int_equal(fclose(f), 0);
	free(rec);
}

/* Recovery from A's top, by the front door and by a group command: the
 * record is refused, reported once each time, and no file changes. */
static void refused_untouched(const char *dir, const uint8_t *other)
{
	char *top = at(dir, "base-000003.vmdk");
	struct group *g = NULL;

	assert_int_equal(vdt_sh("cp -a --sparse=always '%s' '%s.before'", dir, dir), 0);
	vd_log_set(count_log, NULL);
	nr_t7 = 0;
	assert_int_equal(group_recover_near(top, GROUP_RECOVER_FINISH, NULL, NULL),
			 -VD_EBADDATA);
	assert_int_equal(nr_t7, 1);
	assert_non_null(strstr(vdt_last_msg, "/other")); /* the layer refused */
	assert_non_null(strstr(vdt_last_msg, GROUP_INTENT_SUFFIX));
	assert_int_equal(group_load(top, NULL, 0, 0, NULL, &g), -VD_EBADDATA);
	assert_int_equal(nr_t7, 2);
	vd_log_set(vdt_log, NULL);
	assert_int_equal(vdt_sh("diff -r '%s' '%s.before' >/dev/null", dir, dir), 0);
	assert_int_equal(vdt_sh("rm -rf '%s.before'", dir), 0);
	assert_true(exists(dir, "base-000003.vmdk" GROUP_INTENT_SUFFIX));
	assert_true(reads(dir, "other-000001.vmdk", other));
	assert_true(reads(dir, "base-000003.vmdk", M.s3));
	assert_all_unchanged(dir);
	free(top);
}

/* A delete record of A whose child and files are the other group's top
 * and base; a commit record of A's top that re-points the other group's
 * top.  Both lie beside A, name files in A's folder: T1-T6 and F2 pass. */
static void test_legacy_other_group(void **state)
{
	static const char *const del[] = {
		"parent", "other.vmdk", "child", "other-000001.vmdk",
		"file", "other-000001.vmdk", "file", "other.vmdk", NULL,
	};
	static const char *const com[] = {
		"parent", "base-000002.vmdk", "child", "other-000001.vmdk",
		"file", "base-000003.vmdk", NULL,
	};
	const char *const *recs[] = { del, com };
	const char *ops[] = { "delete", "commit" };
	uint8_t *other = calloc(1, CAP);

	(void)state;
	assert_non_null(other);
	for (unsigned i = 0; i < 2; i++) {
		char *dir = copy_group();
		memset(other, 0, CAP);
		add_other_group(dir, other);
		plant_legacy(dir, ops[i], recs[i]);
		refused_untouched(dir, other);
		vdt_rmtree(dir);
		free(dir);
	}
	free(other);
}

/* A legacy record naming more layers than T7 weighs (each a file that is
 * there): refused, reported, nothing removed. */
static void test_legacy_too_many_layers(void **state)
{
	char *dir = copy_group(), *rec = at(dir, "base-000003.vmdk" GROUP_INTENT_SUFFIX);
	char *top = at(dir, "base-000003.vmdk");
	FILE *f;

	(void)state;
	assert_int_equal(vdt_sh("cd '%s' && mkdir many && touch $(seq -f many/x%%g.vmdk 600)",
				dir), 0);
	assert_non_null(f = fopen(rec, "w"));
	fprintf(f, "op=delete\ntarget=%s\nfile=%s\n", top, top);
	for (unsigned i = 1; i <= 600; i++)
		fprintf(f, "child=%s/many/x%u.vmdk\n", dir, i);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(group_recover_near(top, GROUP_RECOVER_FINISH, NULL, NULL),
			 -VD_EBADDATA);
	assert_non_null(strstr(vdt_last_msg, "more layers than recovery weighs (T7)"));
	assert_true(exists(dir, "many/x600.vmdk") && exists(dir, "base-000003.vmdk"));
	assert_all_unchanged(dir);
	vdt_rmtree(dir);
	free(dir);
	free(rec);
	free(top);
}

/* ---- the sidecar record, written partly ------------------------------------------ */

/* A linked clone of base is made with the writes stopped after n, while the
 * only other clone sits out of reach (its record alone protects base).
 * Afterwards base is still shared: a commit into it is refused and its
 * bytes are unchanged; the record is the old one or the old one plus the
 * new clone, and holds the new clone whenever its file exists. */
static bool sidecar_crash_at(long n, bool drop)
{
	char *dir = copy_group(), *away = vdt_mkdtemp("groupaway");
	char *from = at(dir, "clone.vmdk"), *to = at(away, "clone.vmdk");
	char *base = at(dir, "base.vmdk"), *c2 = at(dir, "clone2.vmdk");
	char *rec = at(dir, "base.vmdk" GROUP_CHILDREN_SUFFIX), *old = at(tmpl, "base.vmdk"
								    GROUP_CHILDREN_SUFFIX);
	struct group_plan plan = {0};
	struct vd_faultio *fi;
	size_t lr = 0, lo = 0;
	uint8_t *r, *o;
	bool crashed;

	assert_int_equal(rename(from, to), 0);
	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	group_create_child(base, c2, true, NULL, vd_faultio_io(fi));
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	r = vdt_slurp(rec, &lr);
	o = vdt_slurp(old, &lo);
	assert_true(r && o && lr >= lo && !memcmp(r, o, lo)); /* old, or old + a line */
	assert_true(lr == lo || (lr > lo && memmem(r + lo, lr - lo, "child=clone2.vmdk\n", 18)));
	if (!access(c2, F_OK))
		assert_true(lr > lo);
	free(r);
	free(o);
	assert_int_equal(run_op(dir, "base-000001.vmdk", group_commit, 0, NULL, &plan),
			 -EBUSY);
	group_plan_free(&plan);
	assert_true(same_bytes(dir, "base.vmdk"));
	assert_true(reads(dir, "base-000003.vmdk", M.s3));
	assert_int_equal(rename(to, from), 0);
	assert_true(reads(dir, "clone.vmdk", M.clone));
	vdt_rmtree(away);
	vdt_rmtree(dir);
	free(away);
	free(dir);
	free(from);
	free(to);
	free(base);
	free(c2);
	free(rec);
	free(old);
	return crashed;
}

/* crash_fn(n, drop) for n = 0, 1, ... until a run ends without a crash,
 * with writes dropped and kept; more than min writes were made. */
static void every_crash_point(bool (*crash_fn)(long n, bool drop), long min)
{
	for (int drop = 0; drop < 2; drop++) {
		long n = 0;
		while (n < FAULT_MAX && crash_fn(n, drop))
			n++;
		assert_true(n < FAULT_MAX);
		assert_true(n > min);
	}
}

static void test_sidecar_faults(void **state)
{
	(void)state;
	every_crash_point(sidecar_crash_at, 2); /* the record and the clone were written */
}

/* A disk whose own layers lie in three folders over a base in a fourth
 * (kept: another clone shares it): a delete crashed after n writes is finished by
 * the next load, whatever folder it stopped in. */
static bool spread_crash_at(long n, bool drop)
{
	static const uint64_t wb[][3] = { {0, 4 << 20, 0x11} }, wm[][3] = { {0, 1 << 20, 0x21} },
			      wt[][3] = { {2 << 20, 1 << 20, 0x31} };
	char *dir = vdt_mkdtemp("spread"), *base = at(dir, "C/base.vmdk"), *mid = at(dir, "B/mid.vmdk");
	char *top = at(dir, "A/top.vmdk"), *other = at(dir, "C/other.vmdk"), *low = at(dir, "D/low.vmdk");
	uint8_t *mbase = calloc(1, CAP), *mtop = calloc(1, CAP);
	struct vmdk_create_opts o = { .capacity = CAP };
	struct group_plan plan = {0};
	struct vd_faultio *fi;
	struct group *g;
	bool crashed;

	assert_true(mbase && mtop);
	assert_int_equal(vdt_sh("mkdir -p '%s/A' '%s/B' '%s/C' '%s/D'", dir, dir, dir, dir), 0);
	assert_int_equal(vmdk_create(base, &o, NULL), 0);
	write_into(base, mbase, wb, 1);
	memcpy(mtop, mbase, CAP);
	assert_int_equal(group_create_child(base, low, false, NULL, NULL), 0);
	assert_int_equal(group_create_child(low, mid, false, NULL, NULL), 0);
	assert_int_equal(group_create_child(base, other, false, NULL, NULL), 0);
	write_into(mid, mtop, wm, 1);
	assert_int_equal(group_create_child(mid, top, false, NULL, NULL), 0);
	write_into(top, mtop, wt, 1);
	assert_int_equal(group_load(top, NULL, 0, 0, NULL, &g), 0);
	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	group_delete(g, top, 0, vd_faultio_io(fi), &plan);
	group_plan_free(&plan);
	group_free(g);
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	if (!group_load(other, NULL, 0, 0, NULL, &g)) /* the next command: recovery */
		group_free(g);
	/* before its record nothing went; from it on, its three layers go */
	assert_true(exists(dir, "A/top.vmdk") == exists(dir, "B/mid.vmdk"));
	assert_true(exists(dir, "A/top.vmdk") == exists(dir, "D/low.vmdk"));
	assert_true(!exists(dir, "A/top.vmdk") || (crashed && reads(dir, "A/top.vmdk", mtop)));
	assert_false(exists(dir, "A/top.vmdk" GROUP_INTENT_SUFFIX));
	assert_true(reads(dir, "C/other.vmdk", mbase));
	assert_int_equal(vdt_sh("rm -rf '%s'", dir), 0);
	free(mbase);
	free(mtop);
	free(dir);
	free(base);
	free(mid);
	free(top);
	free(other);
	free(low);
	return crashed;
}

static void test_delete_spread_faults(void **state)
{
	(void)state;
	every_crash_point(spread_crash_at, 2);
}

/* A folder swept and found empty of records is not read again until it
 * changes: a record made there after the sweep is found by the next one. */
static void test_sweep_sees_new_records(void **state)
{
	char *dir = copy_group(), *top = at(dir, "base-000003.vmdk");
	char *rec = at(dir, "planted.vmdk" GROUP_INTENT_SUFFIX);
	unsigned n = 99;

	(void)state;
	usleep(100000); /* the folder settles: the sweep may remember it */
	assert_int_equal(group_recover_near(top, 0, NULL, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(group_recover_near(top, 0, NULL, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(vdt_write_file(rec, "op=delete\n", 10), 0);
	group_recover_near(top, 0, NULL, &n); /* reported, not acted on */
	assert_int_equal(n, 1);
	vdt_rmtree(dir);
	free(dir);
	free(top);
	free(rec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_discovery),
		cmocka_unit_test(test_commit_into_shared_refused),
		cmocka_unit_test(test_delete_snapshot_refused),
		cmocka_unit_test(test_dry_run_writes_nothing),
		cmocka_unit_test(test_moved_clone_protects),
		cmocka_unit_test(test_commit),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_revert),
		cmocka_unit_test(test_commit_faults),
		cmocka_unit_test(test_delete_faults),
		cmocka_unit_test(test_revert_faults),
		cmocka_unit_test(test_repair),
		cmocka_unit_test(test_repair_faults),
		cmocka_unit_test(test_repair_frozen_refused),
		cmocka_unit_test(test_unlink),
		cmocka_unit_test(test_unlink_faults),
		cmocka_unit_test(test_consolidate),
		cmocka_unit_test(test_consolidate_faults),
		cmocka_unit_test(test_pull),
		cmocka_unit_test(test_pull_base),
		cmocka_unit_test(test_pull_faults),
		cmocka_unit_test(test_pull_base_faults),
		cmocka_unit_test(test_legacy_faults),
		cmocka_unit_test(test_legacy_other_group),
		cmocka_unit_test(test_legacy_too_many_layers),
		cmocka_unit_test(test_pull_refused),
		cmocka_unit_test(test_pull_stale_chain),
		cmocka_unit_test(test_consolidate_one_pull),
		cmocka_unit_test(test_consolidate_base),
		cmocka_unit_test(test_consolidate_base_faults),
		cmocka_unit_test(test_faults_near),
		cmocka_unit_test(test_sidecar_faults),
		cmocka_unit_test(test_delete_spread_faults),
		cmocka_unit_test(test_sweep_sees_new_records),
	};

	if (getenv("VDT_FILTER"))
		cmocka_set_test_filter(getenv("VDT_FILTER"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
