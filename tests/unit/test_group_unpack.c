/* tests — pack and unpack of group/ (group_pack.c, group_unpack.c): the
 * round trip, and an unpack stopped at every write then recovered and
 * resumed (test layer).
 *
 * The group: base <- base-000001 (a disk), base <- c1 <- c1-000001 (disk
 * A), base <- c2 (disk B), in one folder; the deltas hold whole grains of
 * their own and grains they wrote a few bytes of (the rest: their
 * parent's, which the bundle carries as parent runs).  A and B are packed: c1,
 * c1-000001 and c2 go in, base (reached by base-000001 too) is needed.
 * The receiving folder holds a copy of base only.  Oracles: each disk's
 * content as written (an in-memory model), the bytes of base, and the
 * folder's listing before the unpack.
 *
 * Fault injection: the unpack runs with vd_faultio allowing 0, 1, 2, ...
 * writes (renames and unlinks count), with and without dropping the
 * unsynced ones; then recovery runs (as the next command in the folder
 * would), and the folder must hold either every new layer, reading as
 * packed, or nothing new (the listing and base as before, base as frozen
 * as it was); then the unpack runs again, unhurt: it succeeds when
 * nothing was left, and the disks read as packed either way.  The sweep
 * runs twice: over a frozen base, and over a base given with --base that
 * the unpack must freeze (thawed again by a roll back).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vdt_chain.h"
#include "chain.h"
#include "group_int.h"

#define CAP (8u << 20)
#define FAULT_MAX 5000

static char *src, *dst0, *bundle;
static uint8_t *model_a, *model_b;
static const char *const new_files[] = { "c1.vmdk", "c1-000001.vmdk", "c2.vmdk" };

static char *at(const char *dir, const char *name)
{
	char *p = vdt_join(dir, name);

	assert_non_null(p);
	return p;
}

static void write_into(const char *dir, const char *name, uint8_t *model, uint64_t off,
		       size_t len, int pat)
{
	char *p = at(dir, name);
	uint8_t *buf = malloc(len);
	struct chain *c;

	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(pat + i / 512);
	assert_int_equal(chain_open(p, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(pat ? chain_pwrite(c, buf, len, off) : chain_pwrite_zeroes(c, len, off), 0);
	assert_int_equal(chain_close(c), 0);
	if (model)
		memcpy(model + off, pat ? buf : memset(buf, 0, len), len);
	free(buf);
	free(p);
}

static void child(const char *parent, const char *name)
{
	char *p = at(src, parent), *c = at(src, name);

	assert_int_equal(group_create_child(p, c, false, NULL, NULL), 0);
	free(p);
	free(c);
}

static void build(void)
{
	struct vmdk_create_opts o = { .capacity = CAP };
	char *base = at(src, "base.vmdk"), *top;
	uint8_t *m = calloc(1, CAP);

	assert_int_equal(vmdk_create(base, &o, NULL), 0);
	write_into(src, "base.vmdk", m, 0, 1u << 20, 1);
	write_into(src, "base.vmdk", m, 5u << 20, 256u << 10, 2);
	assert_int_equal(group_snapshot(base, NULL, NULL, &top), 0);
	free(top);
	child("base.vmdk", "c1.vmdk");
	child("base.vmdk", "c2.vmdk");
	memcpy(model_a, m, CAP);
	memcpy(model_b, m, CAP);
	write_into(src, "c1.vmdk", model_a, 512u << 10, 1u << 20, 3);
	write_into(src, "c1.vmdk", model_a, 5u << 20, 128u << 10, 0);
	write_into(src, "c1.vmdk", model_a, (5u << 20) + 200000, 4096, 6); /* in base's data */
	child("c1.vmdk", "c1-000001.vmdk");
	write_into(src, "c1-000001.vmdk", model_a, 7u << 20, 64u << 10, 4);
	write_into(src, "c1-000001.vmdk", model_a, (512u << 10) + 8192, 1024, 7); /* in c1's */
	write_into(src, "c2.vmdk", model_b, 3u << 20, 2u << 20, 5);
	write_into(src, "c2.vmdk", model_b, 100u << 10, 2048, 8);
	free(m);
	free(base);
}

static void pack(void)
{
	char *disks[2] = { at(src, "c1-000001.vmdk"), at(src, "c2.vmdk") };
	struct group_pack_opts o = { .level = 3, .threads = 2 };
	struct group_bundle_info *b = NULL;
	int fd = open(bundle, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(group_pack(disks, 2, NULL, 0, &o, fd, NULL, &b), 0);
	close(fd);
	assert_int_equal(b->nr_layers, 3);
	assert_int_equal(b->nr_needs, 1);
	assert_string_equal(b->needs[0].name, "base.vmdk");
	group_bundle_info_free(b);
	free(disks[0]);
	free(disks[1]);
}

/* The bundle carries what the deltas wrote, not the parent's bytes around
 * it: parent runs, and fewer bytes of data than the layers hold. */
static void check_kinds(void)
{
	struct group_bundle_reader *r;
	struct group_bundle_info *b;
	const struct group_bundle_run *runs;
	unsigned layer, nr, parent = 0;
	uint64_t data = 0;
	int fd = open(bundle, O_RDONLY), err;

	assert_int_equal(group_bundle_reader_open(fd, bundle, &r), 0);
	assert_int_equal(group_bundle_read_head(r, &b), 0);
	while (!(err = group_bundle_read_frame(r, &layer, &runs, &nr)))
		for (unsigned i = 0; i < nr; i++) {
			parent += runs[i].kind == GROUP_RUN_PARENT;
			data += runs[i].kind == GROUP_RUN_DATA ? runs[i].len : 0;
		}
	assert_int_equal(err, 1);
	assert_true(parent >= 3);
	assert_true(data + 3 * (60u << 10) <= b->held_bytes);
	group_bundle_reader_free(r);
	group_bundle_info_free(b);
	close(fd);
}

#define reads(dir, name, model) vdt_chain_reads(dir, name, model, CAP)

/* The folder's entries, sorted, one a line. */
static char *listing(const char *dir)
{
	char *cmd, *out = NULL;
	size_t len = 0;
	FILE *p;

	assert_true(asprintf(&cmd, "ls -A '%s'", dir) > 0);
	p = popen(cmd, "r");
	assert_non_null(p);
	out = calloc(1, 4096);
	len = fread(out, 1, 4095, p);
	out[len] = 0;
	pclose(p);
	free(cmd);
	return out;
}

static bool frozen(const char *dir)
{
	char *p = at(dir, "base.vmdk");
	struct vmdk_disk *d;
	bool f;

	assert_int_equal(vmdk_open(p, VMDK_OPEN_RDONLY, NULL, &d), 0);
	f = chain_is_frozen(d);
	vmdk_close(d);
	free(p);
	return f;
}

static int unpack_into(const char *dir, bool thaw, const struct vd_io *io)
{
	char *base = at(dir, "base.vmdk");
	char *const bases[1] = { base };
	struct group_unpack_opts o = { .bases = bases, .nr_bases = thaw };
	int fd = open(bundle, O_RDONLY), err;

	assert_true(fd >= 0);
	err = group_unpack(fd, bundle, dir, &o, io, NULL);
	close(fd);
	free(base);
	return err;
}

static char *fresh_dst(bool thaw)
{
	char *dir = vdt_mkdtemp("unpackdst"), *base = at(dir, "base.vmdk");

	assert_int_equal(vdt_sh("cp -a '%s'/base.vmdk '%s'/", src, dir), 0);
	if (thaw)
		assert_int_equal(chain_set_frozen(base, false, 0, NULL), 0);
	free(base);
	return dir;
}

static bool all_there(const char *dir)
{
	return reads(dir, "c1-000001.vmdk", model_a) && reads(dir, "c2.vmdk", model_b);
}

static bool none_there(const char *dir)
{
	for (unsigned i = 0; i < 3; i++) {
		char *p = at(dir, new_files[i]);
		bool e = !access(p, F_OK);
		free(p);
		if (e)
			return false;
	}
	return true;
}

/* Stopped after n writes, recovered, checked, resumed, checked. */
static bool crash_at(long n, bool drop, bool thaw)
{
	char *dir = fresh_dst(thaw), *before = listing(dir), *after, *probe = at(dir, "x.vmdk");
	char *base = at(dir, "base.vmdk"), *base0 = at(dst0, "base.vmdk");
	struct vd_faultio *fi;
	bool crashed, whole;

	if (!thaw)
		assert_true(vdt_same_file(base, base0));
	assert_int_equal(vd_faultio_create(n, drop, &fi), 0);
	unpack_into(dir, thaw, vd_faultio_io(fi));
	crashed = vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	assert_int_equal(group_recover_near(probe, GROUP_RECOVER_FINISH, NULL, NULL), 0);
	whole = all_there(dir);
	after = listing(dir);
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "crash after %ld writes (drop %d, thaw %d): %s, %s\n", n, drop,
			thaw, crashed ? "crashed" : "finished", whole ? "unpacked" : "nothing");
	if (!whole) { /* rolled back: as before */
		assert_true(none_there(dir));
		assert_string_equal(before, after);
		assert_true(frozen(dir) == !thaw);
		if (!thaw)
			assert_true(vdt_same_file(base, base0));
		assert_int_equal(unpack_into(dir, thaw, NULL), 0); /* resumed */
	}
	assert_true(all_there(dir));
	assert_true(frozen(dir));
	assert_int_equal(vdt_sh("test -z \"$(ls -A '%s' | grep -e vdelta-intent -e '^\\.')\"", dir), 0);
	assert_int_equal(vdt_sh("rm -rf '%s'", dir), 0);
	free(dir);
	free(before);
	free(after);
	free(probe);
	free(base);
	free(base0);
	return crashed;
}

static void faults(bool thaw)
{
	for (int drop = 0; drop < 2; drop++) {
		long n = 0;
		while (n < FAULT_MAX && crash_at(n, drop, thaw))
			n++;
		assert_true(n < FAULT_MAX);
		assert_true(n > 5);
	}
}

static void test_round_trip(void **state)
{
	char *dir = fresh_dst(false), *c1, *c2;

	(void)state;
	assert_int_equal(unpack_into(dir, false, NULL), 0);
	assert_true(all_there(dir));
	c1 = at(dir, "c1-000001.vmdk");
	c2 = at(dir, "c2.vmdk");
	assert_int_equal(vdt_sh("qemu-img check -q '%s' && qemu-img check -q '%s'", c1, c2), 0);
	/* the sharing: base records c1 and c2, c1 records its child */
	assert_int_equal(vdt_sh("grep -q '^child=c1.vmdk$' '%s'/base.vmdk.vdelta-children && "
				"grep -q '^child=c2.vmdk$' '%s'/base.vmdk.vdelta-children && "
				"grep -q '^child=c1-000001.vmdk$' '%s'/c1.vmdk.vdelta-children",
				dir, dir, dir), 0);
	/* again into the same folder: every name taken, refused */
	assert_int_equal(unpack_into(dir, false, NULL), -EEXIST);
	assert_int_equal(vdt_sh("rm -rf '%s'", dir), 0);
	free(c1);
	free(c2);
	free(dir);
}

static void test_faults(void **state) { (void)state; faults(false); }
static void test_faults_thaw(void **state) { (void)state; faults(true); }

static int setup(void **state)
{
	(void)state;
	vd_log_set(vdt_log, NULL);
	model_a = calloc(1, CAP);
	model_b = calloc(1, CAP);
	src = vdt_mkdtemp("unpacksrc");
	dst0 = vdt_mkdtemp("unpackdst0");
	if (!model_a || !model_b || !src || !dst0)
		return -1;
	bundle = at(src, "group.vdb");
	build();
	pack();
	check_kinds();
	return vdt_sh("cp -a '%s'/base.vmdk '%s'/", src, dst0);
}

static int teardown(void **state)
{
	(void)state;
	vdt_sh("rm -rf '%s' '%s'", src, dst0);
	free(src);
	free(dst0);
	free(bundle);
	free(model_a);
	free(model_b);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_faults),
		cmocka_unit_test(test_faults_thaw),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
