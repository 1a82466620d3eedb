/* tests — group operations over every kind vdelta writes: ESXi chains (vmfs
 * base, vmfsSparse/COWD and seSparse deltas), hosted sparse over and under
 * them, split (twoGbMaxExtentSparse) layers (test layer).
 *
 * Each scenario builds a chain vm <- s1 <- s2 (disk s2), with a linked
 * clone over vm when vm must be shared, and runs one operation: commit of
 * s1 into a vmfs/hosted base, commit of s2 into an ESXi delta, promote
 * --unlink (s1 flattened: an ESXi delta becomes a vmfs base), revert and
 * check --repair (compaction) of s2.  Oracles: an in-memory model of every
 * byte written (what each disk must read), the template's bytes (`diff -r`:
 * a rolled-back operation changed no file, a shared layer never changes),
 * vmdk_check (no errors, no leak after compaction) and the descriptors'
 * createType, CID and extent names (the layer keeps its kind and names).
 *
 * Fault injection: every operation is run with vd_faultio allowing 0, 1,
 * 2, ... writes (renames and unlinks count), with and without dropping the
 * unsynced ones; then the group is loaded again (recovery).  Afterwards the
 * folder is either exactly the template (rolled back) or the finished
 * result, every disk reads its content and no intent record or staging
 * folder is left.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <sys/stat.h>

#include "vdtest.h"
#include "vdt_chain.h"
#include "chain.h"
#include "group.h"

#define CAP (2u << 20)
#define SPLIT (1u << 20) /* split layers: two extents */
#define FAULT_MAX 20000

enum op { COMMIT_S1, COMMIT_S2, UNLINK, REVERT, REPAIR };

struct scen {
	const char *name;
	enum vmdk_subformat base, k1, k2;
	enum op op;
	bool clone; /* a linked clone shares vm */
};

static uint8_t *m_base, *m_s1, *m_s2, *m_clone; /* what each disk reads */
static const struct scen *S;
static char *tmpl;

static char *at(const char *dir, const char *name)
{
	char *p = vdt_join(dir, name);

	assert_non_null(p);
	return p;
}

/* A shell command that must succeed. */
#define sh(...) assert_int_equal(vdt_sh(__VA_ARGS__), 0)

/* Entries of a folder, without . and .. (NULL-terminated). */
static char **names_in(const char *dir, unsigned *n)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;

	*n = 0;
	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			v = reallocarray(v, *n + 2, sizeof *v);
			assert_non_null(v);
			v[(*n)++] = strdup(e->d_name);
			v[*n] = NULL;
		}
	closedir(d);
	return v;
}

static void free_names(char **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Remove a scratch folder: files, and folders of files (staging). */
static void rm_rf(const char *dir)
{
	unsigned n;
	char **v = names_in(dir, &n);
	struct stat st;

	for (unsigned i = 0; i < n; i++) {
		char *p = at(dir, v[i]);
		if (!lstat(p, &st) && S_ISDIR(st.st_mode))
			rm_rf(p);
		else
			unlink(p);
		free(p);
	}
	free_names(v, n);
	rmdir(dir);
}

/* Write len bytes of pattern pat (0: zeroes) at off through the chain. */
static void put(const char *top, uint8_t *model, uint64_t off, size_t len, int pat)
{
	struct chain *c;
	uint8_t *buf = malloc(len);

	assert_non_null(buf);
	for (size_t i = 0; i < len; i++)
		buf[i] = pat ? (uint8_t)(pat + i / 512 + i % 7) : 0;
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(pat ? chain_pwrite(c, buf, len, off) : chain_pwrite_zeroes(c, len, off), 0);
	assert_int_equal(chain_close(c), 0);
	memcpy(model + off, buf, len);
	free(buf);
}

static void set_key(const char *path, const char *key, const char *val)
{
	struct vmdk_disk *d;

	assert_int_equal(vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d), 0);
	assert_int_equal(vmdk_desc_set(d, key, val), 0);
	assert_int_equal(vmdk_desc_write(d), 0);
	assert_int_equal(vmdk_close(d), 0);
}

static uint32_t cid_of(const char *path)
{
	struct vmdk_disk *d;
	uint32_t cid;

	assert_int_equal(vmdk_open(path, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d), 0);
	cid = vmdk_cid(d);
	vmdk_close(d);
	return cid;
}

/* Does dir/name keep the template's CID? */
static bool same_cid(const char *dir, const char *name)
{
	char *a = at(dir, name), *b = at(tmpl, name);
	bool same = cid_of(a) == cid_of(b);

	free(a);
	free(b);
	return same;
}

/* child of parent, of kind k; a split kind gets two extents (vmdk_create,
 * the parent frozen as group_create_child freezes it). */
static void child(const char *parent, const char *path, enum vmdk_subformat k)
{
	struct group_child_opts o = { .kind = k };
	struct vmdk_create_opts c = { .capacity = CAP, .subformat = k, .split_size = SPLIT,
				      .parent_hint = strrchr(parent, '/') + 1 };

	if (k != VMDK_TWOGB_SPARSE) {
		assert_int_equal(group_create_child(parent, path, false, &o, NULL), 0);
		return;
	}
	set_key(parent, CHAIN_FROZEN_KEY, "1");
	assert_int_equal(group_record_child(parent, path, GROUP_RECORD_COMPLETE, NULL), 0);
	c.parent_cid = cid_of(parent);
	assert_int_equal(vmdk_create(path, &c, NULL), 0);
}

static void build(const char *dir)
{
	struct vmdk_create_opts o = { .capacity = CAP, .subformat = S->base };
	char *vm = at(dir, "vm.vmdk"), *s1 = at(dir, "s1.vmdk"), *s2 = at(dir, "s2.vmdk");
	char *cl = at(dir, "clone.vmdk");

	memset(m_base, 0, CAP);
	assert_int_equal(vmdk_create(vm, &o, NULL), 0);
	put(vm, m_base, 0, 256 << 10, 1);
	put(vm, m_base, 1536 << 10, 128 << 10, 2);
	child(vm, s1, S->k1);
	memcpy(m_s1, m_base, CAP);
	put(s1, m_s1, 100 << 10, 12 << 10, 3);
	put(s1, m_s1, 1 << 20, 4096, 4);
	put(s1, m_s1, 1600 << 10, 64 << 10, 0);
	child(s1, s2, S->k2);
	memcpy(m_s2, m_s1, CAP);
	put(s2, m_s2, 0, 8192, 5);
	put(s2, m_s2, 1 << 20, 2048, 0);
	put(s2, m_s2, (1 << 20) - 4096, 8192, 6); /* across the split */
	if (S->clone) {
		struct group_child_opts co = { .kind = GROUP_DELTA_AUTO };
		assert_int_equal(group_create_child(vm, cl, false, &co, NULL), 0);
		memcpy(m_clone, m_base, CAP);
		put(cl, m_clone, 64 << 10, 4096, 7);
	}
	free(vm);
	free(s1);
	free(s2);
	free(cl);
}

#define reads(dir, name, model) vdt_chain_reads(dir, name, model, CAP)

static bool exists(const char *dir, const char *name)
{
	char *p = at(dir, name);
	bool e = !access(p, F_OK);

	free(p);
	return e;
}

/* The template's files into a fresh folder (in process: a crash point
 * costs no fork). */
static char *copy_tmpl(void)
{
	char *dir = vdt_mkdtemp("formats"), **v;
	unsigned n;

	assert_non_null(dir);
	v = names_in(tmpl, &n);
	for (unsigned i = 0; i < n; i++) {
		char *a = at(tmpl, v[i]), *b = at(dir, v[i]);
		assert_int_equal(vdt_copy_file(a, b), 0);
		free(a);
		free(b);
	}
	free_names(v, n);
	return dir;
}

/* A record's own temporary, NAME.tmp, may stay behind a crash
 * (group_write_file's S1, never read). */
static bool ignored(const char *name)
{
	size_t n = strlen(name);

	return n > 4 && !strcmp(name + n - 4, ".tmp") && strstr(name, ".vdelta-");
}

/* Every entry as in the template: the same names (but ignored ones), the
 * same bytes. */
static bool unchanged(const char *dir)
{
	unsigned n, nt;
	char **v = names_in(dir, &n), **vt = names_in(tmpl, &nt);
	unsigned seen = 0;
	bool same = true;

	for (unsigned i = 0; same && i < n; i++) {
		char *a = at(dir, v[i]), *b = at(tmpl, v[i]);
		if (!ignored(v[i])) {
			same = vdt_same_file(a, b);
			seen++;
		}
		free(a);
		free(b);
	}
	free_names(v, n);
	free_names(vt, nt);
	return same && seen == nt;
}

/* vmdk_check of one layer: errors, and leaked bytes in *leak. */
static unsigned check_errors(const char *dir, const char *name, uint64_t *leak)
{
	char *p = at(dir, name);
	struct vmdk_check_result r = {0};
	struct vmdk_disk *d;

	assert_int_equal(vmdk_open(p, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d), 0);
	assert_int_equal(vmdk_check(d, NULL, NULL, &r), 0);
	vmdk_close(d);
	free(p);
	if (leak)
		*leak = r.leaked;
	return r.errors;
}

/* createType and extent names of a layer, as one string. */
static char *shape(const char *dir, const char *name)
{
	char *p = at(dir, name), *s = NULL, *t;
	struct vmdk_disk *d;

	assert_int_equal(vmdk_open(p, VMDK_OPEN_RDONLY | VMDK_OPEN_DIRTY_OK, NULL, &d), 0);
	assert_true(asprintf(&s, "%s", vmdk_desc_get(d, "createType")) > 0);
	for (unsigned i = 1; i < vmdk_nr_files(d); i++) {
		assert_true(asprintf(&t, "%s %s", s, strrchr(vmdk_file_path(d, i), '/') + 1) > 0);
		free(s);
		s = t;
	}
	vmdk_close(d);
	free(p);
	return s;
}

static void assert_same_shape(const char *dir, const char *name)
{
	char *a = shape(dir, name), *b = shape(tmpl, name);

	assert_string_equal(a, b);
	free(a);
	free(b);
}

/* The disk's chain depth. */
static unsigned depth(const char *dir, const char *name)
{
	char *p = at(dir, name);
	struct chain *c;
	unsigned n;

	assert_int_equal(chain_open(p, CHAIN_OPEN_RDONLY, NULL, &c), 0);
	n = chain_depth(c);
	chain_close(c);
	free(p);
	return n;
}

/* The operation's finished result. */
static void assert_finished(const char *dir)
{
	uint64_t leak;
	char *s;

	switch (S->op) {
	case COMMIT_S1:
		assert_false(exists(dir, "s1.vmdk"));
		assert_true(reads(dir, "vm.vmdk", m_s1) && reads(dir, "s2.vmdk", m_s2));
		assert_same_shape(dir, "vm.vmdk");
		break;
	case COMMIT_S2:
		assert_false(exists(dir, "s2.vmdk"));
		assert_true(reads(dir, "s1.vmdk", m_s2));
		assert_same_shape(dir, "s1.vmdk");
		break;
	case UNLINK:
		assert_true(reads(dir, "s2.vmdk", m_s2));
		assert_int_equal(depth(dir, "s2.vmdk"), 2);
		assert_true(same_cid(dir, "s1.vmdk"));
		s = shape(dir, "s1.vmdk");
		assert_string_equal(s, S->k1 == VMDK_MONOLITHIC_SPARSE ? "monolithicSparse"
				    : "vmfs s1-flat.vmdk");
		free(s);
		assert_false(exists(dir, "s1-delta.vmdk") || exists(dir, "s1-sesparse.vmdk"));
		break;
	case REVERT:
		assert_true(reads(dir, "s2.vmdk", m_s1));
		assert_same_shape(dir, "s2.vmdk");
		break;
	case REPAIR:
		assert_true(reads(dir, "s2.vmdk", m_s2));
		assert_same_shape(dir, "s2.vmdk");
		assert_true(same_cid(dir, "s2.vmdk"));
		assert_int_equal(check_errors(dir, "s2.vmdk", &leak), 0);
		assert_int_equal(leak, 0);
		break;
	}
}

/* Invariants after the op, finished or crashed and recovered. */
static void check_after(const char *dir, bool finished)
{
	static const char *const layers[] = { "vm.vmdk", "s1.vmdk", "s2.vmdk", "clone.vmdk" };
	char *stage;

	if (S->clone)
		assert_true(reads(dir, "clone.vmdk", m_clone));
	for (unsigned i = 0; i < 4; i++) {
		char *rec = NULL;
		assert_true(asprintf(&rec, "%s%s", layers[i], GROUP_INTENT_SUFFIX) > 0);
		assert_false(exists(dir, rec));
		free(rec);
		assert_true(asprintf(&stage, ".%s.vdelta-%s", layers[i],
				     S->op == UNLINK ? "promote" : S->op == REVERT ? "revert"
				     : "repair") > 0);
		assert_false(exists(dir, stage));
		free(stage);
		if (exists(dir, layers[i]))
			assert_int_equal(check_errors(dir, layers[i], NULL), 0);
	}
	if (finished || !unchanged(dir))
		assert_finished(dir);
}

/* A leak in s2, as a killed writer leaves it: whole-grain writes of the
 * bytes s2 already reads, cut after 1, 2, ... writes until check counts a
 * leaked grain (the content stays the same whatever the cut). */
static void make_leak(const char *dir)
{
	char *p = at(dir, "s2.vmdk");
	uint64_t leak = 0, off = 256 << 10;

	for (long k = 1; !leak && off + (64 << 10) <= CAP; k++, off += 64 << 10) {
		struct vd_faultio *fi;
		struct vmdk_disk *d;
		assert_int_equal(vd_faultio_create(k, false, &fi), 0);
		assert_int_equal(vmdk_open(p, VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK,
					   vd_faultio_io(fi), &d), 0);
		vmdk_pwrite(d, m_s2 + off, 64 << 10, off);
		vmdk_close(d);
		assert_int_equal(vd_faultio_crash(fi), 0);
		vd_faultio_destroy(fi);
		check_errors(dir, "s2.vmdk", &leak);
	}
	assert_true(leak > 0);
	free(p);
}

static void setup_scen(const struct scen *s)
{
	S = s;
	tmpl = vdt_mkdtemp("formats-tmpl");
	assert_non_null(tmpl);
	build(tmpl);
	if (s->op == REPAIR)
		make_leak(tmpl);
	assert_true(reads(tmpl, "s2.vmdk", m_s2));
}

static int do_op(const char *dir, const struct vd_io *io)
{
	struct group_plan plan = {0};
	struct group *g = NULL;
	char *s1 = at(dir, "s1.vmdk"), *s2 = at(dir, "s2.vmdk");
	int err = group_load(s2, NULL, 0, 0, NULL, &g);

	if (!err && S->op == REPAIR)
		err = group_repair(g, s2, 0, io, &plan);
	else if (!err && S->op == COMMIT_S1)
		err = group_commit(g, s1, 0, io, &plan);
	else if (!err && S->op == COMMIT_S2)
		err = group_commit(g, s2, 0, io, &plan);
	else if (!err && S->op == UNLINK)
		err = group_promote_unlink(g, s2, 0, io, &plan);
	else if (!err && S->op == REVERT)
		err = group_revert(g, s2, 0, io, &plan);
	group_free(g);
	group_plan_free(&plan);
	free(s1);
	free(s2);
	return err;
}

static bool crash_at(long n, bool drop)
{
	char *dir = copy_tmpl(), *top = at(dir, "s2.vmdk"), *s1 = at(dir, "s1.vmdk");
	struct group *g;
	struct vd_faultio *fi;
	bool crashed;

	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	do_op(dir, vd_faultio_io(fi));
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "%s: crash after %ld writes (drop %d): %s\n", S->name, n, drop,
			crashed ? "crashed" : "finished");
	if (!group_load(exists(dir, "s2.vmdk") ? top : s1, NULL, 0, 0, NULL, &g))
		group_free(g); /* the next command: recovery */
	check_after(dir, !crashed);
	rm_rf(dir);
	free(dir);
	free(top);
	free(s1);
	return crashed;
}

static void run_scen(const struct scen *s)
{
	char *dir;

	setup_scen(s);
	dir = copy_tmpl();
	assert_int_equal(do_op(dir, NULL), 0);
	check_after(dir, true);
	rm_rf(dir);
	free(dir);
	for (int drop = 0; drop < 2; drop++) {
		long n = 0;
		while (n < FAULT_MAX && crash_at(n, drop))
			n++;
		assert_true(n < FAULT_MAX && n > 2);
	}
	rm_rf(tmpl);
	free(tmpl);
}

#define VMFS VMDK_VMFS
#define COWD VMDK_VMFS_SPARSE
#define SES VMDK_SESPARSE
#define MONO VMDK_MONOLITHIC_SPARSE
#define SPLIT2 VMDK_TWOGB_SPARSE

static const struct scen scens[] = {
	{ "commit COWD into vmfs", VMFS, COWD, COWD, COMMIT_S1, false },
	{ "commit seSparse into vmfs", VMFS, SES, SES, COMMIT_S1, false },
	{ "commit seSparse into seSparse", VMFS, SES, SES, COMMIT_S2, false },
	{ "commit COWD into COWD", VMFS, COWD, COWD, COMMIT_S2, true },
	/* hosted into COWD (64 KiB grains into 512 B ones: ~800 crash points)
	 * is in test_esxi.sh; here the other ESXi delta */
	{ "commit hosted into seSparse", VMFS, SES, MONO, COMMIT_S2, true },
	{ "commit COWD into hosted", MONO, MONO, COWD, COMMIT_S2, true },
	{ "commit split into vmfs", VMFS, SPLIT2, MONO, COMMIT_S1, false },
	{ "unlink vmfs-COWD-seSparse", VMFS, COWD, SES, UNLINK, true },
	{ "unlink vmfs-seSparse-seSparse", VMFS, SES, SES, UNLINK, true },
	{ "unlink vmfs-COWD-COWD", VMFS, COWD, COWD, UNLINK, true },
	{ "revert COWD", VMFS, COWD, COWD, REVERT, true },
	{ "revert seSparse", VMFS, SES, SES, REVERT, true },
	{ "revert split", MONO, MONO, SPLIT2, REVERT, true },
	{ "repair COWD", VMFS, COWD, COWD, REPAIR, true },
	{ "repair seSparse", VMFS, SES, SES, REPAIR, true },
	{ "repair split", MONO, MONO, SPLIT2, REPAIR, true },
};

/* VDT_SCEN=TEXT runs only the scenarios whose name holds TEXT. */
static void test_scen(void **state)
{
	const struct scen *s = *state;
	const char *only = getenv("VDT_SCEN");

	if (only && !strstr(s->name, only))
		skip();
	print_message("%s\n", s->name);
	run_scen(s);
}

/* A layer kind that cannot be rewritten: refused naming the reason,
 * nothing written. */
static void test_flat_delta_refused(void **state)
{
	static const struct scen s = { "refusal", VMFS, COWD, COWD, REVERT, true };
	char *dir, *p;

	(void)state;
	S = &s;
	tmpl = vdt_mkdtemp("formats-tmpl");
	build(tmpl);
	dir = copy_tmpl();
	p = at(dir, "s2.vmdk");
	/* s2's descriptor made to list a second (ZERO) extent: not a layout
	 * vdelta creates, so neither revert nor compaction may rebuild it */
	sh("sed -i 's/^RW 4096 VMFSSPARSE \"s2-delta.vmdk\"$/RW 2048 VMFSSPARSE \"s2-delta.vmdk\"\\n"
	   "RW 2048 ZERO/' '%s'", p);
	rm_rf(tmpl);
	free(tmpl);
	tmpl = dir; /* the edited folder is the reference: nothing may change */
	dir = copy_tmpl();
	assert_int_equal(do_op(dir, NULL), -ENOTSUP);
	assert_non_null(strstr(vdt_last_msg, "not laid out as vdelta creates them"));
	assert_true(unchanged(dir));
	rm_rf(dir);
	rm_rf(tmpl);
	free(dir);
	free(tmpl);
	free(p);
}

static int setup(void **state)
{
	(void)state;
	vd_log_set(vdt_log, NULL);
	m_base = calloc(1, CAP);
	m_s1 = calloc(1, CAP);
	m_s2 = calloc(1, CAP);
	m_clone = calloc(1, CAP);
	return m_base && m_s1 && m_s2 && m_clone ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	free(m_base);
	free(m_s1);
	free(m_s2);
	free(m_clone);
	return 0;
}

#define SCEN(i) cmocka_unit_test_prestate(test_scen, (void *)&scens[i])

int main(void)
{
	const struct CMUnitTest tests[] = {
		SCEN(0), SCEN(1), SCEN(2), SCEN(3), SCEN(4), SCEN(5), SCEN(6), SCEN(7),
		SCEN(8), SCEN(9), SCEN(10), SCEN(11), SCEN(12), SCEN(13), SCEN(14), SCEN(15),
		cmocka_unit_test(test_flat_delta_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
