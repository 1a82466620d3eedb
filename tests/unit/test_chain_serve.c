/* tests — unit tests of the layer pool (chain_pool.c) and the serving core
 * (chain_serve.c), without FUSE (test layer).
 *
 * Setup: a base with known data written through the format layer, frozen,
 * and linked clones over it made by group_create_child.  Oracles: the
 * bytes written (a pattern per region), the files' bytes before/after
 * (nonpersistent), pointer identity of pooled layers.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "chain.h"
#include "group.h"
#include "vdtest.h"

#define CAP (8u << 20)
#define GRAIN (64u << 10)
#define NR_CLONES 3

struct fx {
	char *dir;
	char *base;
	char *clone[NR_CLONES];
};

static void fill(uint8_t *b, size_t n, uint8_t v) { memset(b, v, n); }

/* base: 1 MiB of 0xb0 at 0, a zeroed hole elsewhere; clones over it. */
static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	struct vmdk_create_opts o = { .capacity = CAP, .subformat = VMDK_MONOLITHIC_SPARSE };
	struct vmdk_disk *d;
	uint8_t *buf = malloc(1 << 20);

	assert_non_null(f);
	f->dir = vdt_mkdtemp("chain_serve");
	f->base = vdt_join(f->dir, "base.vmdk");
	assert_int_equal(vmdk_create(f->base, &o, NULL), 0);
	assert_int_equal(vmdk_open(f->base, VMDK_OPEN_RDWR, NULL, &d), 0);
	fill(buf, 1 << 20, 0xb0);
	assert_int_equal(vmdk_pwrite(d, buf, 1 << 20, 0), 0);
	assert_int_equal(vmdk_close(d), 0);
	for (unsigned i = 0; i < NR_CLONES; i++) {
		char name[32];
		snprintf(name, sizeof name, "c%u.vmdk", i);
		f->clone[i] = vdt_join(f->dir, name);
		assert_int_equal(group_create_child(f->base, f->clone[i], false, NULL, NULL), 0);
	}
	free(buf);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	vdt_rmtree(f->dir);
	for (unsigned i = 0; i < NR_CLONES; i++)
		free(f->clone[i]);
	free(f->base);
	free(f->dir);
	free(f);
	return 0;
}

/* ---- pool ------------------------------------------------------------------------ */

static void test_pool_shares_parents(void **state)
{
	struct fx *f = *state;
	struct chain_pool *p;
	struct chain *c[NR_CLONES], *alone;
	uint8_t buf[4096];

	assert_int_equal(chain_pool_create(&p), 0);
	for (unsigned i = 0; i < NR_CLONES; i++)
		assert_int_equal(chain_open_pool(f->clone[i], CHAIN_OPEN_RDWR, NULL, p, &c[i]), 0);
	assert_int_equal(chain_pool_nr_layers(p), 1);
	assert_ptr_equal(chain_layer(c[0], 1), chain_layer(c[2], 1));
	assert_ptr_not_equal(chain_layer(c[0], 0), chain_layer(c[1], 0)); /* tops private */
	/* without a pool, a chain has its own copy */
	assert_int_equal(chain_open(f->clone[0], CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK, NULL,
				    &alone), 0);
	assert_ptr_not_equal(chain_layer(alone, 1), chain_layer(c[0], 1));
	chain_close(alone);
	/* a shared layer outlives the chains that let it go */
	assert_int_equal(chain_close(c[0]), 0);
	assert_int_equal(chain_close(c[1]), 0);
	assert_int_equal(chain_pool_nr_layers(p), 1);
	assert_int_equal(chain_pread(c[2], buf, sizeof buf, 4096), 0);
	for (size_t i = 0; i < sizeof buf; i++)
		assert_int_equal(buf[i], 0xb0);
	assert_int_equal(chain_close(c[2]), 0);
	assert_int_equal(chain_pool_nr_layers(p), 0);
	chain_pool_destroy(p);
}

/* The pooled base is locked once: a writer is still refused. */
static void test_pool_locks_base(void **state)
{
	struct fx *f = *state;
	struct chain_pool *p;
	struct chain *c;
	struct vmdk_disk *w;

	assert_int_equal(chain_pool_create(&p), 0);
	assert_int_equal(chain_open_pool(f->clone[0], CHAIN_OPEN_RDONLY, NULL, p, &c), 0);
	/* a writer (qemu's lock bytes) is refused while the pool holds it */
	assert_int_equal(vmdk_open(f->base, VMDK_OPEN_RDONLY, NULL, &w), 0);
	assert_int_equal(vmdk_lock(w, VMDK_PERM_READ | VMDK_PERM_WRITE, 0), -EAGAIN);
	vmdk_close(w);
	chain_close(c);
	chain_pool_destroy(p);
}

/* ---- serving core ----------------------------------------------------------------- */

static void test_serve_rw_semantics(void **state)
{
	struct fx *f = *state;
	struct chain_server *s;
	struct chain_served *d;
	struct chain_serve_stats st;
	uint8_t buf[8192], pat[1000];
	size_t done;

	assert_int_equal(chain_server_create(&s), 0);
	assert_int_equal(chain_server_add(s, f->clone[0], "a", CHAIN_SERVE_RW, &d), 0);
	assert_int_equal(chain_served_size(d), CAP);
	/* end of disk: short, then empty reads; writes past it refused */
	assert_int_equal(chain_served_read(d, buf, sizeof buf, CAP - 100, &done), 0);
	assert_int_equal(done, 100);
	assert_int_equal(chain_served_read(d, buf, sizeof buf, CAP, &done), 0);
	assert_int_equal(done, 0);
	assert_int_equal(chain_served_write(d, buf, 512, CAP - 256), -EFBIG);
	/* a partial write over the base's data copies one grain up */
	fill(pat, sizeof pat, 0x5e);
	assert_int_equal(chain_served_write(d, pat, sizeof pat, 3 * GRAIN + 100), 0);
	assert_int_equal(chain_served_read(d, buf, sizeof buf, 3 * GRAIN, &done), 0);
	for (size_t i = 0; i < sizeof buf; i++)
		assert_int_equal(buf[i], i >= 100 && i < 1100 ? 0x5e : 0xb0);
	/* unallocated everywhere: zeros */
	assert_int_equal(chain_served_read(d, buf, 4096, 4u << 20, &done), 0);
	assert_true(vd_is_zero(buf, 4096));
	assert_int_equal(chain_served_read(d, buf, 4096, 0, &done), 0); /* base's */
	assert_int_equal(buf[4095], 0xb0);
	assert_int_equal(chain_served_flush(d), 0);
	chain_served_stats(d, &st);
	assert_int_equal(st.cow_grains, 1);
	assert_int_equal(st.writes, 1);
	assert_int_equal(st.write_bytes, sizeof pat);
	assert_int_equal(st.flushes, 1);
	assert_int_equal(st.nr_layers, 2);
	assert_int_equal(st.layer_bytes[0], 8192); /* inside the copied-up grain */
	assert_int_equal(st.layer_bytes[1], 4096);
	assert_int_equal(st.zero_bytes, 100 + 4096);
	assert_int_equal(st.read_bytes, 100 + 8192 + 4096 + 4096);
	assert_int_equal(st.zero_bytes + st.layer_bytes[0] + st.layer_bytes[1], st.read_bytes);
	assert_int_equal(chain_server_close(s), 0);
}

static void test_serve_modes(void **state)
{
	struct fx *f = *state;
	struct chain_server *s;
	struct chain_served *ro, *np, *snap;
	uint8_t buf[4096], *before, *after;
	size_t len0, len1, done;

	before = vdt_slurp(f->clone[1], &len0);
	assert_non_null(before);
	assert_int_equal(chain_server_create(&s), 0);
	assert_int_equal(chain_server_add(s, f->clone[0], "ro", CHAIN_SERVE_RO, &ro), 0);
	assert_int_equal(chain_server_add(s, f->clone[1], "np", CHAIN_SERVE_NONPERSISTENT, &np), 0);
	assert_int_equal(chain_server_add(s, f->clone[2], "snap", CHAIN_SERVE_SNAPSHOT, &snap), -EINVAL);
	assert_int_equal(group_serve_add(s, f->clone[2], "snap", CHAIN_SERVE_SNAPSHOT, &snap), 0);
	assert_int_equal(chain_pool_nr_layers(chain_server_pool(s)), 3); /* base, c1, c2 */
	fill(buf, sizeof buf, 0x77);
	assert_int_equal(chain_served_write(ro, buf, sizeof buf, 0), -EROFS);
	assert_false(chain_served_writable(ro));
	assert_int_equal(chain_served_write(np, buf, sizeof buf, 0), 0);
	assert_int_equal(chain_served_write(snap, buf, sizeof buf, 0), 0);
	assert_int_equal(chain_served_read(np, buf, sizeof buf, 0, &done), 0);
	assert_int_equal(buf[0], 0x77);
	assert_non_null(chain_served_top(snap));
	assert_string_not_equal(chain_served_top(snap), f->clone[2]);
	assert_int_equal(chain_server_close(s), 0);
	/* nonpersistent: the top's bytes are the same */
	after = vdt_slurp(f->clone[1], &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before, after, len0);
	free(before);
	free(after);
}

static bool dir_empty(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool empty = true;

	assert_non_null(d);
	while ((e = readdir(d)))
		empty &= e->d_name[0] == '.';
	closedir(d);
	return empty;
}

/* Options: the throw-away delta is made in the server's tmpdir (and gone
 * from it once open), and every chain reads through the server's io. */
static void test_serve_opts(void **state)
{
	struct fx *f = *state;
	char *tmp = vdt_join(f->dir, "scratch");
	struct vd_countio *ci;
	struct chain_server *s;
	struct chain_served *np;
	struct vd_count_stats st;
	uint8_t buf[4096];
	size_t done;
	struct chain_server_opts o = { .tmpdir = tmp };
	bool in_tmp = false;

	assert_int_equal(mkdir(tmp, 0755), 0);
	assert_int_equal(vd_countio_create(NULL, &ci), 0);
	o.io = vd_countio_io(ci);
	assert_int_equal(chain_server_create_opts(&o, &s), 0);
	assert_int_equal(chain_server_add(s, f->clone[0], "np", CHAIN_SERVE_NONPERSISTENT,
					  &np), 0);
	assert_true(dir_empty(tmp));
	for (unsigned i = 0; i < vd_countio_nr_files(ci); i++) {
		vd_countio_get(ci, i, &st);
		in_tmp |= !strncmp(st.path, tmp, strlen(tmp)) && st.path[strlen(tmp)] == '/';
	}
	assert_true(in_tmp);
	vd_countio_reset(ci);
	assert_int_equal(chain_served_read(np, buf, sizeof buf, 0, &done), 0);
	assert_int_equal(buf[0], 0xb0);
	assert_int_equal(vd_countio_find(ci, f->base, &st), 0);
	assert_true(st.data_reads >= 1);
	fill(buf, sizeof buf, 0x5c);
	assert_int_equal(chain_served_write(np, buf, sizeof buf, 0), 0);
	assert_int_equal(chain_served_flush(np), 0);
	vd_countio_total(ci, &st);
	assert_true(st.writes >= 1 && st.syncs >= 1);
	assert_int_equal(chain_server_close(s), 0);
	assert_true(dir_empty(tmp));
	vd_countio_destroy(ci);
	free(tmp);
}

/* Two servers cannot write one top. */
static void test_serve_refuses_second_writer(void **state)
{
	struct fx *f = *state;
	struct chain_server *a, *b;

	assert_int_equal(chain_server_create(&a), 0);
	assert_int_equal(chain_server_create(&b), 0);
	assert_int_equal(chain_server_add(a, f->clone[0], "x", CHAIN_SERVE_RW, NULL), 0);
	assert_int_equal(chain_server_add(b, f->clone[0], "x", CHAIN_SERVE_RW, NULL), -EAGAIN);
	assert_int_equal(chain_server_nr_disks(b), 0);
	/* written (so marked unclean): a second writer, whose open would
	 * recover an unclean top, is refused before it writes a byte */
	struct chain_served *d = chain_server_disk(a, 0);
	size_t len0, len1;
	uint8_t *before, *after;
	assert_int_equal(chain_served_write(d, "x", 1, 0), 0);
	assert_int_equal(chain_served_flush(d), 0);
	before = vdt_slurp(f->clone[0], &len0);
	assert_int_equal(chain_server_add(b, f->clone[0], "x", CHAIN_SERVE_RW, NULL), -EAGAIN);
	after = vdt_slurp(f->clone[0], &len1);
	assert_int_equal(len0, len1);
	assert_memory_equal(before, after, len0);
	free(before);
	free(after);
	assert_int_equal(chain_server_close(b), 0);
	assert_int_equal(chain_server_close(a), 0);
	/* a frozen layer is refused for writing */
	assert_int_equal(chain_server_create(&a), 0);
	assert_int_equal(chain_server_add(a, f->base, "b", CHAIN_SERVE_RW, NULL), -EPERM);
	assert_int_equal(chain_server_close(a), 0);
}

/* The fast path: base data comes back as (fd, pos) whose bytes are the
 * data; holes come back copied (zeros); the whole read is covered in order. */
static void test_serve_read_segs(void **state)
{
	struct fx *f = *state;
	struct chain_server *s;
	struct chain_served *d;
	struct chain_serve_seg segs[8];
	struct chain_serve_stats st;
	static uint8_t buf[2u << 20], chk[1u << 20];
	unsigned nr;
	size_t done, total = 0;

	assert_int_equal(chain_server_create(&s), 0);
	assert_int_equal(chain_server_add(s, f->clone[0], "a", CHAIN_SERVE_RO, &d), 0);
	/* [512 KiB, 1.5 MiB): half base data, half unallocated */
	assert_int_equal(chain_served_read_segs(d, buf, 1u << 20, 512u << 10, segs, 8, &nr,
						&done), 0);
	assert_int_equal(done, 1u << 20);
	assert_int_equal(nr, 2);
	assert_true(segs[0].fd >= 0);
	assert_int_equal(segs[0].len, 512u << 10);
	assert_int_equal(pread(segs[0].fd, chk, segs[0].len, (off_t)segs[0].pos),
			 (ssize_t)segs[0].len);
	for (size_t i = 0; i < segs[0].len; i++)
		assert_int_equal(chk[i], 0xb0);
	assert_int_equal(segs[1].fd, -1);
	assert_true(vd_is_zero(segs[1].mem, segs[1].len));
	for (unsigned i = 0; i < nr; i++)
		total += segs[i].len;
	assert_int_equal(total, done);
	chain_served_stats(d, &st);
	assert_int_equal(st.direct_bytes, 512u << 10);
	/* max 1: everything copied */
	assert_int_equal(chain_served_read_segs(d, buf, 4096, 0, segs, 1, &nr, &done), 0);
	assert_int_equal(nr, 1);
	assert_int_equal(segs[0].fd, -1);
	assert_int_equal(((uint8_t *)segs[0].mem)[0], 0xb0);
	assert_int_equal(chain_server_close(s), 0);
}

/* The run at off: kind and owning layer. */
static void assert_run(struct chain_served *d, uint64_t off, enum chain_kind kind, int layer)
{
	struct chain_run r;

	assert_int_equal(chain_status(chain_served_chain(d), off, GRAIN, &r), 0);
	assert_int_equal(r.kind, kind);
	assert_int_equal(r.layer, layer);
}

static void assert_bytes(struct chain_served *d, uint64_t off, size_t len, uint8_t v)
{
	uint8_t buf[GRAIN];
	size_t done;

	assert_int_equal(chain_served_read(d, buf, len, off, &done), 0);
	for (size_t i = 0; i < len; i++)
		assert_int_equal(buf[i], v);
}

/* Zeroing: what already reads as zeros is left unallocated; FAST refuses
 * what would write data (nothing changed); TRIM does only the cheap part. */
static void test_serve_zero(void **state)
{
	struct fx *f = *state;
	char *zg = vdt_join(f->dir, "zg.vmdk");
	struct vmdk_create_opts o = { .capacity = CAP, .subformat = VMDK_MONOLITHIC_SPARSE,
				      .zeroed_grain = true, .parent_hint = "base.vmdk" };
	struct vmdk_disk *b;
	struct chain_server *s;
	struct chain_served *plain, *z;

	assert_int_equal(vmdk_open(f->base, VMDK_OPEN_RDONLY, NULL, &b), 0);
	o.parent_cid = vmdk_cid(b);
	vmdk_close(b);
	assert_int_equal(vmdk_create(zg, &o, NULL), 0);
	assert_int_equal(chain_server_create(&s), 0);
	assert_int_equal(chain_server_add(s, f->clone[0], "plain", CHAIN_SERVE_RW, &plain), 0);
	assert_int_equal(chain_server_add(s, zg, "zg", CHAIN_SERVE_RW, &z), 0);
	assert_false(chain_served_zeroed_grains(plain));
	assert_true(chain_served_zeroed_grains(z));
	/* zeros over zeros: nothing allocated, even without zeroed grains */
	assert_int_equal(chain_served_zero(plain, 1u << 20, 2u << 20, CHAIN_SERVE_ZERO_FAST), 0);
	assert_run(plain, 2u << 20, CHAIN_UNALLOC, -1);
	assert_int_equal(chain_served_write_zeroes(plain, 1u << 20, 2u << 20), 0);
	assert_run(plain, 2u << 20, CHAIN_UNALLOC, -1);
	/* over the base's data: slow without zeroed grains */
	assert_int_equal(chain_served_zero(plain, GRAIN, 0, CHAIN_SERVE_ZERO_FAST), -ENOTSUP);
	assert_run(plain, 0, CHAIN_DATA, 1);
	assert_bytes(plain, 0, GRAIN, 0xb0);
	assert_int_equal(chain_served_zero(z, GRAIN, GRAIN, CHAIN_SERVE_ZERO_FAST), 0);
	assert_run(z, GRAIN, CHAIN_ZERO, 0);
	assert_bytes(z, GRAIN, GRAIN, 0);
	/* a partial grain is data written: refused fast, skipped by a trim */
	assert_int_equal(chain_served_zero(z, 512, 4 * GRAIN, CHAIN_SERVE_ZERO_FAST), -ENOTSUP);
	assert_int_equal(chain_served_zero(z, 3 * GRAIN, 4 * GRAIN + 512, CHAIN_SERVE_ZERO_TRIM), 0);
	assert_bytes(z, 4 * GRAIN, 512, 0xb0);
	assert_run(z, 5 * GRAIN, CHAIN_ZERO, 0);
	assert_run(z, 7 * GRAIN, CHAIN_DATA, 1);
	/* a plain zero writes what it must, edges included */
	assert_int_equal(chain_served_write_zeroes(plain, 1000, 100), 0);
	assert_bytes(plain, 0, 100, 0xb0);
	assert_bytes(plain, 100, 1000, 0);
	assert_bytes(plain, 1100, 1000, 0xb0);
	assert_int_equal(chain_server_close(s), 0);
	free(zg);
}

/* DISK[:MODE][=NAME]: each part found only after the last '/', a ':' that
 * names no mode kept in the file name. */
static void test_serve_disk_arg(void **state)
{
	static const struct {
		const char *arg, *disk, *name;
		enum chain_serve_mode mode;
	} cases[] = {
		{ "d/a.vmdk", "d/a.vmdk", NULL, CHAIN_SERVE_RW },
		{ "d/a.vmdk:ro", "d/a.vmdk", NULL, CHAIN_SERVE_RO },
		{ "d/a.vmdk=x", "d/a.vmdk", "x", CHAIN_SERVE_RW },
		{ "d/a.vmdk:snapshot=x", "d/a.vmdk", "x", CHAIN_SERVE_SNAPSHOT },
		{ "d/a:b.vmdk", "d/a:b.vmdk", NULL, CHAIN_SERVE_RW },
		{ "d=1/a.vmdk:nonpersistent", "d=1/a.vmdk", NULL, CHAIN_SERVE_NONPERSISTENT },
		{ "d:ro/a.vmdk", "d:ro/a.vmdk", NULL, CHAIN_SERVE_RW },
	};
	enum chain_serve_mode mode;
	char buf[64], *name, *n;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(buf, sizeof buf, "%s", cases[i].arg);
		assert_int_equal(chain_serve_disk_arg(buf, CHAIN_SERVE_RW, &name, &mode), 0);
		assert_string_equal(buf, cases[i].disk);
		if (cases[i].name)
			assert_string_equal(name, cases[i].name);
		else
			assert_null(name);
		assert_int_equal(mode, cases[i].mode);
	}
	snprintf(buf, sizeof buf, "a.vmdk=");
	assert_int_equal(chain_serve_disk_arg(buf, CHAIN_SERVE_RO, &name, &mode), -EINVAL);
	n = chain_serve_default_name("/x/y/Disk.VMDK");
	assert_string_equal(n, "Disk");
	free(n);
	n = chain_serve_default_name("raw.img");
	assert_string_equal(n, "raw.img");
	free(n);
}

static void quiet(void *opaque, enum vd_log_level level, const char *msg) {}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pool_shares_parents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_locks_base, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve_rw_semantics, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve_opts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve_read_segs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_serve_refuses_second_writer, setup, teardown),
		cmocka_unit_test(test_serve_disk_arg),
		cmocka_unit_test_setup_teardown(test_serve_zero, setup, teardown),
	};

	vd_log_set(quiet, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
