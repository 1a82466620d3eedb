/* tests — `relocate` of chain/ (child-most, no-share, share): plans,
 * refusals and crash safety (test layer).
 *
 * The group, one folder per VM:
 *   base/base.vmdk <- base/s1.vmdk <- vmA/a.vmdk <- vmA/a2.vmdk   (disk A)
 *                     base/s1.vmdk <- vmB/b.vmdk                  (disk B)
 *   base/base.vmdk <- vmC/c.vmdk                                  (disk C)
 * and an empty folder dst/.  The oracle of content is an in-memory model of
 * every byte the test wrote; the oracle of "nothing shared changed" is the
 * bytes of base.vmdk and s1.vmdk, compared with the template built once.
 *
 * Fault injection: relocate A in each mode with vd_faultio allowing 0, 1,
 * 2, ... writes (renames and unlinks count), with and without dropping the
 * unsynced ones; then the group is loaded again from A's old or new top
 * (recovery).  A must be at exactly one place and read its content there,
 * B and C must read theirs, the shared files must be byte-identical, no
 * intent record may be left, and a rolled-back relocation leaves dst/ empty.
 * The same for B in share mode after A: its base layers are reattached, and
 * a rollback leaves dst/ and the record of dst/s1.vmdk as they were.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vdt_legacy.h"
#include "chain.h"
#include "group.h"

#define CAP (8u << 20)
#define FAULT_MAX 5000

static uint8_t *mA, *mB, *mC; /* what each disk reads */
static char *tmpl;            /* the group, built once */

static char *at(const char *dir, const char *name)
{
	char *p = vdt_join(dir, name);

	if (!p)
		abort();
	return p;
}

/* A shell command that must succeed. */
#define sh(...) assert_int_equal(vdt_sh(__VA_ARGS__), 0)

/* Write pattern pat (0: zeroes) at [off, off+len) of the disk at top. */
static void put(const char *dir, const char *top, uint8_t *model, uint64_t off,
		size_t len, int pat)
{
	char *p = at(dir, top);
	uint8_t *buf = malloc(len);
	struct chain *c;

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = pat ? (uint8_t)(pat + i / 4096) : 0;
	assert_int_equal(chain_open(p, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(pat ? chain_pwrite(c, buf, len, off)
			     : chain_pwrite_zeroes(c, len, off), 0);
	assert_int_equal(chain_close(c), 0);
	memcpy(model + off, buf, len);
	free(buf);
	free(p);
}

static void child(const char *dir, const char *parent, const char *name)
{
	char *p = at(dir, parent), *n = at(dir, name);

	assert_int_equal(group_create_child(p, n, false, NULL, NULL), 0);
	free(p);
	free(n);
}

static void build(const char *dir)
{
	struct vmdk_create_opts o = { .capacity = CAP };
	char *base = at(dir, "base/base.vmdk");
	uint8_t *m = calloc(1, CAP);

	assert_non_null(m);
	sh("cd '%s' && mkdir base dst vmA vmB vmC", dir);
	assert_int_equal(vmdk_create(base, &o, NULL), 0);
	put(dir, "base/base.vmdk", m, 0, 1 << 20, 1);
	put(dir, "base/base.vmdk", m, 7 << 20, 64 << 10, 2);
	memcpy(mC, m, CAP);
	child(dir, "base/base.vmdk", "base/s1.vmdk");
	put(dir, "base/s1.vmdk", m, 512 << 10, 1 << 20, 3);
	put(dir, "base/s1.vmdk", m, 7 << 20, 4096, 0);
	memcpy(mA, m, CAP);
	memcpy(mB, m, CAP);
	child(dir, "base/s1.vmdk", "vmA/a.vmdk");
	put(dir, "vmA/a.vmdk", mA, 2 << 20, 300 << 10, 4);
	child(dir, "vmA/a.vmdk", "vmA/a2.vmdk");
	put(dir, "vmA/a2.vmdk", mA, 100 << 10, 8192, 5);
	put(dir, "vmA/a2.vmdk", mA, 0, 64 << 10, 0);
	child(dir, "base/s1.vmdk", "vmB/b.vmdk");
	put(dir, "vmB/b.vmdk", mB, 5 << 20, 1 << 20, 6);
	child(dir, "base/base.vmdk", "vmC/c.vmdk");
	put(dir, "vmC/c.vmdk", mC, 3 << 20, 4096, 7);
	free(m);
	free(base);
}

static int setup(void **state)
{
	(void)state;
	vd_log_set(vdt_log, NULL);
	mA = calloc(1, CAP);
	mB = calloc(1, CAP);
	mC = calloc(1, CAP);
	tmpl = vdt_mkdtemp("relocate");
	if (!mA || !mB || !mC || !tmpl)
		return -1;
	build(tmpl);
	return 0;
}

static void rmtree(char *dir)
{
	sh("rm -rf '%s'", dir);
	free(dir);
}

static int teardown(void **state)
{
	(void)state;
	rmtree(tmpl);
	free(mA);
	free(mB);
	free(mC);
	return 0;
}

/* dir's name with suffix: a file of this run's own beside its folder */
static char *beside(const char *dir, const char *suffix)
{
	char *p;

	assert_true(asprintf(&p, "%s%s", dir, suffix) > 0);
	return p;
}

static char *copy_group(void)
{
	char *dir = vdt_mkdtemp("relocatecp");

	assert_non_null(dir);
	sh("cp -a '%s'/. '%s'/", tmpl, dir);
	return dir;
}

static bool exists(const char *dir, const char *name)
{
	char *p = at(dir, name);
	bool e = !access(p, F_OK);

	free(p);
	return e;
}

/* Does the disk whose top is dir/name read exactly model?  outside: set
 * when a layer of its chain is not in the top's folder. */
static bool reads(const char *dir, const char *name, const uint8_t *model, bool *outside)
{
	char *p = at(dir, name), *sub = NULL;
	uint8_t *buf = malloc(CAP);
	struct chain *c;
	bool ok = buf && !chain_open(p, CHAIN_OPEN_RDONLY, NULL, &c);

	if (ok) {
		ok = !chain_pread(c, buf, CAP, 0) && !memcmp(buf, model, CAP);
		sub = realpath(vmdk_path(chain_layer(c, 0)), NULL);
		*strrchr(sub, '/') = 0;
		for (unsigned i = 0; outside && i < chain_depth(c); i++) {
			char *r = realpath(vmdk_path(chain_layer(c, i)), NULL);
			*outside |= !r || strncmp(r, sub, strlen(sub)) || strchr(r + strlen(sub) + 1, '/');
			free(r);
		}
		chain_close(c);
	}
	free(sub);
	free(buf);
	free(p);
	return ok;
}

static bool same_bytes(const char *dir, const char *name)
{
	char *a = at(dir, name), *b = at(tmpl, name);
	bool same = vdt_same_file(a, b);

	free(a);
	free(b);
	return same;
}

static unsigned nr_entries(const char *dir, const char *sub)
{
	char *p = at(dir, sub);
	DIR *d = opendir(p);
	struct dirent *e;
	unsigned n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	free(p);
	return n;
}

static int relocate(const char *dir, const char *disk, const char *to,
		    enum group_relocate_mode mode, unsigned flags, const struct vd_io *io,
		    struct group_plan *plan)
{
	char *p = at(dir, disk), *d = at(dir, to);
	struct group *g;
	int err = group_load(p, NULL, 0, 0, NULL, &g);

	if (!err) {
		err = group_relocate(g, p, d, mode, flags, io, plan);
		group_free(g);
	}
	free(p);
	free(d);
	return err;
}

static unsigned nr_kind(const struct group_plan *p, enum group_step_kind k)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->nr_steps; i++)
		n += p->steps[i].kind == k;
	return n;
}

/* B and C read as before; the shared layers are byte-identical. */
static void others_ok(const char *dir)
{
	assert_true(reads(dir, "vmB/b.vmdk", mB, NULL));
	assert_true(reads(dir, "vmC/c.vmdk", mC, NULL));
	assert_true(same_bytes(dir, "base/base.vmdk"));
	assert_true(same_bytes(dir, "base/s1.vmdk"));
}

/* ---- each mode ---------------------------------------------------------------------- */

static void mode_once(enum group_relocate_mode mode)
{
	char *dir = copy_group();
	struct group_plan plan = {0};
	bool outside = false;

	assert_int_equal(relocate(dir, "vmA/a2.vmdk", "dst", mode, 0, NULL, &plan), 0);
	assert_false(exists(dir, "vmA/a2.vmdk"));
	assert_true(reads(dir, "dst/a2.vmdk", mA, &outside));
	others_ok(dir);
	if (mode == GROUP_RELOCATE_CHILD_MOST) { /* the top only */
		assert_true(outside);
		assert_true(same_bytes(dir, "vmA/a.vmdk"));
		assert_int_equal(nr_kind(&plan, GROUP_STEP_CREATE), 1);
	} else { /* every layer: a and a2 moved, s1 and base copied */
		assert_false(outside);
		assert_false(exists(dir, "vmA/a.vmdk"));
		assert_int_equal(nr_kind(&plan, GROUP_STEP_CREATE), 4);
		assert_int_equal(nr_kind(&plan, GROUP_STEP_REMOVE), 2);
	}
	assert_false(exists(dir, "vmA/a2.vmdk" GROUP_INTENT_SUFFIX));
	assert_false(exists(dir, "dst/a2.vmdk" GROUP_INTENT_SUFFIX));
	group_plan_free(&plan);
	rmtree(dir);
}

static void test_child_most(void **s) { (void)s; mode_once(GROUP_RELOCATE_CHILD_MOST); }
static void test_no_share(void **s) { (void)s; mode_once(GROUP_RELOCATE_NO_SHARE); }
static void test_share(void **s) { (void)s; mode_once(GROUP_RELOCATE_SHARE); }

/* share: A then B leave one s1 and one base in dst that both reach. */
static void test_share_one_base(void **state)
{
	char *dir = copy_group(), *sa = NULL, *sb = NULL;
	struct group_plan plan = {0};
	struct chain *ca, *cb;
	bool outside = false;

	(void)state;
	assert_int_equal(relocate(dir, "vmA/a2.vmdk", "dst", GROUP_RELOCATE_SHARE, 0, NULL,
				  &plan), 0);
	group_plan_free(&plan);
	assert_int_equal(relocate(dir, "vmB/b.vmdk", "dst", GROUP_RELOCATE_SHARE, 0, NULL,
				  &plan), 0);
	assert_int_equal(nr_kind(&plan, GROUP_STEP_CREATE), 1); /* b only */
	assert_int_equal(nr_kind(&plan, GROUP_STEP_KEEP), 2);
	group_plan_free(&plan);
	assert_true(reads(dir, "dst/a2.vmdk", mA, &outside));
	assert_true(reads(dir, "dst/b.vmdk", mB, &outside));
	assert_false(outside);
	assert_true(reads(dir, "vmC/c.vmdk", mC, NULL));
	/* once A is gone, s1 is B's alone: it moves with B; base stays for C */
	assert_true(same_bytes(dir, "base/base.vmdk"));
	assert_false(exists(dir, "base/s1.vmdk"));
	/* a2 a b s1 base and the records of a, s1 and base: no temporaries */
	assert_int_equal(nr_entries(dir, "dst"), 8);
	char *a2 = at(dir, "dst/a2.vmdk"), *b = at(dir, "dst/b.vmdk");
	assert_int_equal(chain_open(a2, CHAIN_OPEN_RDONLY, NULL, &ca), 0);
	assert_int_equal(chain_open(b, CHAIN_OPEN_RDONLY, NULL, &cb), 0);
	sa = realpath(vmdk_path(chain_layer(ca, 2)), NULL);
	sb = realpath(vmdk_path(chain_layer(cb, 1)), NULL);
	assert_string_equal(sa, sb);
	chain_close(ca);
	chain_close(cb);
	free(sa);
	free(sb);
	free(a2);
	free(b);
	rmtree(dir);
}

/* ---- refusals and dry runs: nothing written ------------------------------------------ */

static void sums(const char *dir, const char *out)
{
	sh("cd '%s' && find . -type f | sort | xargs sha256sum > '%s'", dir, out);
}

/* relocate on a fresh copy of the group (after prepare) returns want and
 * leaves every file as it was; the plan is the caller's. */
static void unchanged(const char *disk, const char *to, enum group_relocate_mode mode,
		      unsigned flags, int want, void (*prepare)(const char *dir),
		      struct group_plan *plan)
{
	char *dir = copy_group(), *a = beside(dir, ".before.sha"), *b = beside(dir, ".after.sha");

	if (prepare)
		prepare(dir);
	sums(dir, a);
	assert_int_equal(relocate(dir, disk, to, mode, flags, NULL, plan), want);
	sums(dir, b);
	sh("cmp -s '%s' '%s'", a, b);
	unlink(a);
	unlink(b);
	free(a);
	free(b);
	rmtree(dir);
}

static void refused(const char *disk, const char *to, enum group_relocate_mode mode,
		    int want, void (*prepare)(const char *dir))
{
	struct group_plan plan = {0};

	unchanged(disk, to, mode, 0, want, prepare, &plan);
	group_plan_free(&plan);
}

static void taken_name(const char *dir)
{
	sh("cp '%s'/vmC/c.vmdk '%s'/dst/s1.vmdk", dir, dir);
}

static void a_moved(const char *dir)
{
	struct group_plan plan = {0};

	assert_int_equal(relocate(dir, "vmA/a2.vmdk", "dst", GROUP_RELOCATE_NO_SHARE, 0,
				  NULL, &plan), 0);
	group_plan_free(&plan);
}

static void test_refusals(void **state)
{
	(void)state;
	/* a snapshot layer is not a disk */
	refused("vmA/a.vmdk", "dst", GROUP_RELOCATE_NO_SHARE, -EINVAL, NULL);
	refused("vmA/a2.vmdk", "nowhere", GROUP_RELOCATE_SHARE, -ENOENT, NULL);
	/* a name in dst taken by another layer, in every mode that copies it */
	refused("vmA/a2.vmdk", "dst", GROUP_RELOCATE_SHARE, -EEXIST, taken_name);
	refused("vmA/a2.vmdk", "dst", GROUP_RELOCATE_NO_SHARE, -EEXIST, taken_name);
	/* dst/s1.vmdk is A's copy: no-share does not reattach it */
	refused("vmB/b.vmdk", "dst", GROUP_RELOCATE_NO_SHARE, -EEXIST, a_moved);
}

static void test_dry_run(void **state)
{
	struct group_plan plan = {0};

	(void)state;
	unchanged("vmA/a2.vmdk", "dst", GROUP_RELOCATE_SHARE, GROUP_DRY_RUN, 0, NULL,
		  &plan);
	assert_int_equal(nr_kind(&plan, GROUP_STEP_CREATE), 4);
	assert_true(plan.copy_bytes > (1u << 20));
	assert_true(plan.space_avail > 0);
	group_plan_free(&plan);
}

/* ---- crashes ---------------------------------------------------------------------------- */

static bool legacy; /* records rewritten as the release before versions wrote them */

static bool crash_at(enum group_relocate_mode mode, long n, bool drop)
{
	char *dir = copy_group(), *old = at(dir, "vmA/a2.vmdk"), *new = at(dir, "dst/a2.vmdk");
	struct group_plan plan = {0};
	struct group *g;
	struct vd_faultio *fi;
	bool crashed, there;

	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	relocate(dir, "vmA/a2.vmdk", "dst", mode, 0, vd_faultio_io(fi), &plan);
	group_plan_free(&plan);
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "mode %d crash after %ld writes (drop %d): %s\n", mode, n,
			drop, crashed ? "crashed" : "finished");
	if (legacy) {
		char *vm = at(dir, "vmA"), *dst = at(dir, "dst");
		vdt_records_to_legacy(vm);
		vdt_records_to_legacy(dst);
		free(vm);
		free(dst);
	}
	/* the next command on the group, from wherever A is */
	if (!group_load(exists(dir, "vmA/a2.vmdk") ? old : new, NULL, 0, 0, NULL, &g))
		group_free(g);
	there = exists(dir, "dst/a2.vmdk");
	assert_true(there != exists(dir, "vmA/a2.vmdk")); /* at exactly one place */
	assert_true(reads(dir, there ? "dst/a2.vmdk" : "vmA/a2.vmdk", mA, NULL));
	if (!there && nr_entries(dir, "dst"))
		sh("echo left in dst:; ls -a '%s'/dst", dir);
	assert_true(there || !crashed || nr_entries(dir, "dst") == 0); /* rolled back */
	assert_true(there || crashed);
	others_ok(dir);
	assert_false(exists(dir, "vmA/a2.vmdk" GROUP_INTENT_SUFFIX));
	assert_false(exists(dir, "dst/a2.vmdk" GROUP_INTENT_SUFFIX));
	rmtree(dir);
	free(old);
	free(new);
	return crashed;
}

static void faults(enum group_relocate_mode mode);

/* Records of the release before record versions, left at every crash
 * point of a relocation, are recovered the same way. */
static void test_legacy_faults(void **state)
{
	(void)state;
	legacy = true;
	faults(GROUP_RELOCATE_NO_SHARE);
	legacy = false;
}

static void faults(enum group_relocate_mode mode)
{
	for (int drop = 0; drop < 2; drop++) {
		long n = 0;
		while (n < FAULT_MAX && crash_at(mode, n, drop))
			n++;
		assert_true(n < FAULT_MAX);
		assert_true(n > 4); /* it did write */
	}
}

/* share, B after A: B's base layers are reattached (L2 edits the record of
 * dst/s1.vmdk).  Crash after n writes, recover, check. */
static bool reattach_crash_at(long n, bool drop)
{
	char *dir = copy_group(), *old = at(dir, "vmB/b.vmdk"), *new = at(dir, "dst/b.vmdk");
	char *rec = at(dir, "dst/s1.vmdk.vdelta-children"), *saved = beside(dir, ".s1.rec");
	struct group_plan plan = {0};
	struct group *g;
	struct vd_faultio *fi;
	bool crashed, there;

	assert_int_equal(relocate(dir, "vmA/a2.vmdk", "dst", GROUP_RELOCATE_SHARE, 0, NULL,
				  &plan), 0);
	group_plan_free(&plan);
	assert_int_equal(vdt_copy_file(rec, saved), 0);
	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	relocate(dir, "vmB/b.vmdk", "dst", GROUP_RELOCATE_SHARE, 0, vd_faultio_io(fi), &plan);
	group_plan_free(&plan);
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	if (!group_load(exists(dir, "vmB/b.vmdk") ? old : new, NULL, 0, 0, NULL, &g))
		group_free(g);
	there = exists(dir, "dst/b.vmdk");
	assert_true(there != exists(dir, "vmB/b.vmdk"));
	assert_true(reads(dir, there ? "dst/b.vmdk" : "vmB/b.vmdk", mB, NULL));
	assert_true(reads(dir, "dst/a2.vmdk", mA, NULL));
	assert_true(reads(dir, "vmC/c.vmdk", mC, NULL));
	assert_true(same_bytes(dir, "base/base.vmdk"));
	assert_true(there || (same_bytes(dir, "base/s1.vmdk") && vdt_same_file(rec, saved) &&
			      nr_entries(dir, "dst") == 7)); /* rolled back: as before */
	assert_true(there || crashed);
	assert_false(exists(dir, "vmB/b.vmdk" GROUP_INTENT_SUFFIX));
	assert_false(exists(dir, "dst/b.vmdk" GROUP_INTENT_SUFFIX));
	unlink(saved);
	free(saved);
	free(rec);
	rmtree(dir);
	free(old);
	free(new);
	return crashed;
}

static void test_share_reattach_faults(void **state)
{
	(void)state;
	for (int drop = 0; drop < 2; drop++) {
		long n = 0;
		while (n < FAULT_MAX && reattach_crash_at(n, drop))
			n++;
		assert_true(n < FAULT_MAX);
		assert_true(n > 4);
	}
}

static void test_child_most_faults(void **s) { (void)s; faults(GROUP_RELOCATE_CHILD_MOST); }
static void test_no_share_faults(void **s) { (void)s; faults(GROUP_RELOCATE_NO_SHARE); }
static void test_share_faults(void **s) { (void)s; faults(GROUP_RELOCATE_SHARE); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_child_most),
		cmocka_unit_test(test_no_share),
		cmocka_unit_test(test_share),
		cmocka_unit_test(test_share_one_base),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_dry_run),
		cmocka_unit_test(test_child_most_faults),
		cmocka_unit_test(test_no_share_faults),
		cmocka_unit_test(test_share_faults),
		cmocka_unit_test(test_share_reattach_faults),
		cmocka_unit_test(test_legacy_faults),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
