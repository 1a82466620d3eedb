/* tests — unit tests of common/common_io.c (layer 0): the POSIX io and the
 * fault-injecting io used by the crash tests (write budget, refused writes
 * change nothing, crash rollback of unsynced writes with drop_unsynced,
 * synced writes survive, the unsynced ranges a crash would roll back).
 * The file contents are checked with plain POSIX reads, outside the io
 * under test. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"

struct fx {
	char *dir;
	char *a, *b;
};

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);

	fx->dir = vdt_mkdtemp("common_io");
	if (!fx->dir)
		return -1;
	fx->a = vdt_join(fx->dir, "a.bin");
	fx->b = vdt_join(fx->dir, "b.bin");
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	vdt_rmtree(fx->dir);
	free(fx->dir);
	free(fx->a);
	free(fx->b);
	free(fx);
	return 0;
}

/* file content as a string (test files hold text) */
static char *content(const char *path)
{
	size_t len = 0;
	return (char *)vdt_slurp(path, &len);
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) ? -1 : st.st_size;
}

static void test_posix_basic(void **state)
{
	struct fx *fx = *state;
	const struct vd_io *io = vd_io_posix();
	struct vd_file *f, *g;
	uint8_t buf[16];
	uint64_t size;

	assert_int_equal(io->open(io, fx->a, VD_O_CREATE, &f), 0);
	assert_int_equal(vd_pwrite(f, "hello", 5, 10), 0);
	assert_int_equal(vd_fsize(f, &size), 0);
	assert_int_equal(size, 15);
	/* a read that runs past EOF is whole: the tail reads as zeros */
	memset(buf, 0xaa, sizeof buf);
	assert_int_equal(vd_pread(f, buf, sizeof buf, 8), 0);
	assert_memory_equal(buf, "\0\0hello\0\0\0\0\0\0\0\0\0", 16);
	assert_int_equal(vd_sync(f), 0);
	assert_int_equal(f->ops->truncate(f, 12), 0);
	assert_int_equal(vd_fsize(f, &size), 0);
	assert_int_equal(size, 12);
	vd_close(f);
	vd_close(NULL);
	/* CREATE refuses an existing file */
	assert_int_equal(io->open(io, fx->a, VD_O_CREATE, &g), -EEXIST);
	assert_int_equal(io->open(io, fx->b, VD_O_RDONLY, &g), -ENOENT);
	assert_int_equal(io->open(io, fx->a, VD_O_RDONLY, &g), 0);
	assert_string_equal(g->path, fx->a);
	assert_true(vd_pwrite(g, "x", 1, 0) < 0); /* read-only fd */
	vd_close(g);
	assert_int_equal(io->rename(io, fx->a, fx->b), 0);
	assert_int_equal(file_size(fx->b), 12);
	assert_int_equal(io->sync_dir(io, fx->b), 0);
	assert_int_equal(io->unlink(io, fx->b), 0);
	assert_int_equal(file_size(fx->b), -1);
}

/* write `s` at off through f, expecting rc */
static void wr(struct vd_file *f, const char *s, uint64_t off, int rc)
{
	assert_int_equal(vd_pwrite(f, s, strlen(s), off), rc);
}

static void test_fault_budget(void **state)
{
	struct fx *fx = *state;
	struct vd_faultio *fi;
	const struct vd_io *io;
	struct vd_file *f;
	char *c;

	assert_int_equal(vd_faultio_create(3, false, &fi), 0);
	io = vd_faultio_io(fi);
	assert_int_equal(io->open(io, fx->a, VD_O_CREATE, &f), 0);
	wr(f, "aaaa", 0, 0);
	wr(f, "bb", 1, 0);
	assert_false(vd_faultio_crashed(fi));
	wr(f, "c", 3, 0);
	assert_int_equal(vd_faultio_writes(fi), 3);
	assert_false(vd_faultio_crashed(fi));
	/* the 4th write is refused and changes nothing */
	wr(f, "dddddddd", 0, -EIO);
	assert_true(vd_faultio_crashed(fi));
	assert_int_equal(vd_faultio_writes(fi), 4);
	wr(f, "e", 0, -EIO);
	assert_int_equal(f->ops->truncate(f, 0), -EIO);
	assert_int_equal(vd_faultio_writes(fi), 6);
	assert_int_equal(vd_sync(f), -EIO);
	c = content(fx->a);
	assert_string_equal(c, "abbc");
	free(c);
	/* reads still work after the crash */
	{
		char buf[4];
		assert_int_equal(vd_pread(f, buf, 4, 0), 0);
		assert_memory_equal(buf, "abbc", 4);
	}
	vd_close(f);
	/* no rollback without drop_unsynced */
	assert_int_equal(vd_faultio_crash(fi), 0);
	c = content(fx->a);
	assert_string_equal(c, "abbc");
	free(c);
	/* a crashed io creates nothing */
	assert_int_equal(io->open(io, fx->b, VD_O_CREATE, &f), -EIO);
	assert_int_equal(file_size(fx->b), -1);
	vd_faultio_destroy(fi);
	vd_faultio_destroy(NULL);
}

static void test_fault_zero_budget(void **state)
{
	struct fx *fx = *state;
	struct vd_faultio *fi;
	const struct vd_io *io;
	struct vd_file *f;

	assert_int_equal(vdt_write_file(fx->a, "keep", 4), 0);
	assert_int_equal(vd_faultio_create(0, true, &fi), 0);
	io = vd_faultio_io(fi);
	assert_int_equal(io->open(io, fx->a, VD_O_RDWR, &f), 0);
	wr(f, "lost", 0, -EIO);
	assert_int_equal(io->rename(io, fx->a, fx->b), -EIO);
	assert_int_equal(io->unlink(io, fx->a), -EIO);
	vd_close(f);
	assert_int_equal(vd_faultio_crash(fi), 0);
	assert_int_equal(file_size(fx->a), 4);
	assert_int_equal(file_size(fx->b), -1);
	vd_faultio_destroy(fi);
}

/* A fault layer that drops unsynced writes at the crash, with fx->a
 * created through it as *fa, and fx->b opened with b_flags as *fb when fb. */
static struct vd_faultio *fault_open(struct fx *fx, struct vd_file **fa, unsigned b_flags,
				     struct vd_file **fb)
{
	struct vd_faultio *fi;
	const struct vd_io *io;

	assert_int_equal(vd_faultio_create(100, true, &fi), 0);
	io = vd_faultio_io(fi);
	assert_int_equal(io->open(io, fx->a, VD_O_CREATE, fa), 0);
	if (fb)
		assert_int_equal(io->open(io, fx->b, b_flags, fb), 0);
	return fi;
}

/* drop_unsynced: writes after the last sync vanish at the crash, including
 * the file growth they caused; synced writes stay. */
static void test_fault_rollback(void **state)
{
	struct fx *fx = *state;
	struct vd_file *f;
	struct vd_faultio *fi = fault_open(fx, &f, 0, NULL);
	char *c;

	wr(f, "0123456789", 0, 0);
	assert_int_equal(vd_sync(f), 0);
	wr(f, "AB", 2, 0);          /* overwrite, unsynced */
	wr(f, "XYZ", 12, 0);        /* extends the file, unsynced */
	wr(f, "QQ", 3, 0);          /* overlaps an unsynced write */
	assert_int_equal(f->ops->truncate(f, 20), 0);
	assert_int_equal(file_size(fx->a), 20);
	c = content(fx->a);
	assert_memory_equal(c, "01AQQ56789\0\0XYZ", 15);
	free(c);
	vd_close(f);
	assert_false(vd_faultio_crashed(fi));
	assert_int_equal(vd_faultio_crash(fi), 0);
	assert_true(vd_faultio_crashed(fi));
	c = content(fx->a);
	assert_string_equal(c, "0123456789");
	free(c);
	assert_int_equal(file_size(fx->a), 10);
	vd_faultio_destroy(fi);
}

/* keep_newest: the last unsynced write stays, older unsynced ones go; an
 * append skipped over by a rolled-back one leaves zeros, not a short file */
static void test_fault_keep_newest(void **state)
{
	struct fx *fx = *state;
	struct vd_faultio *fi;
	const struct vd_io *io;
	struct vd_file *f;
	char *c;

	assert_int_equal(vd_faultio_create(100, true, &fi), 0);
	vd_faultio_keep_newest(fi);
	io = vd_faultio_io(fi);
	assert_int_equal(io->open(io, fx->a, VD_O_CREATE, &f), 0);
	wr(f, "0123456789", 0, 0);
	assert_int_equal(vd_sync(f), 0);
	wr(f, "AB", 2, 0);   /* overwrite, rolled back */
	wr(f, "XYZ", 12, 0); /* append, rolled back */
	wr(f, "QQ", 16, 0);  /* newest: stays */
	vd_close(f);
	assert_int_equal(vd_faultio_crash(fi), 0);
	assert_int_equal(file_size(fx->a), 18);
	c = content(fx->a);
	assert_memory_equal(c, "0123456789\0\0\0\0\0\0QQ", 18);
	free(c);
	vd_faultio_destroy(fi);
}

/* unsynced: the ranges written since the file's last sync, per file */
static void test_fault_unsynced(void **state)
{
	struct fx *fx = *state;
	struct vd_file *f, *g;
	struct vd_faultio *fi = fault_open(fx, &f, VD_O_CREATE, &g);

	wr(f, "0123456789", 0, 0);
	assert_true(vd_faultio_unsynced(fi, fx->a, 9, 1));
	assert_false(vd_faultio_unsynced(fi, fx->a, 10, 5)); /* past the write */
	assert_false(vd_faultio_unsynced(fi, fx->b, 0, 10)); /* another file */
	assert_int_equal(vd_sync(f), 0);
	assert_false(vd_faultio_unsynced(fi, fx->a, 0, 10));
	wr(f, "AB", 4, 0);
	wr(g, "x", 0, 0);
	assert_false(vd_faultio_unsynced(fi, fx->a, 0, 4));
	assert_true(vd_faultio_unsynced(fi, fx->a, 5, 4));
	assert_int_equal(vd_sync(f), 0);
	assert_false(vd_faultio_unsynced(fi, fx->a, 0, 10));
	assert_true(vd_faultio_unsynced(fi, fx->b, 0, 1)); /* g not synced */
	assert_int_equal(f->ops->truncate(f, 4), 0); /* bytes 4..9 change */
	assert_false(vd_faultio_unsynced(fi, fx->a, 0, 4));
	assert_true(vd_faultio_unsynced(fi, fx->a, 8, 1));
	vd_close(f);
	vd_close(g);
	vd_faultio_destroy(fi);
}

/* a sync protects only its own file's writes */
static void test_fault_sync_per_file(void **state)
{
	struct fx *fx = *state;
	struct vd_faultio *fi;
	struct vd_file *fa, *fb;
	char *c;

	assert_int_equal(vdt_write_file(fx->b, "bbbb", 4), 0);
	fi = fault_open(fx, &fa, VD_O_RDWR, &fb);
	wr(fa, "aaaa", 0, 0);
	wr(fb, "B", 1, 0);
	assert_int_equal(vd_sync(fa), 0);
	wr(fa, "A", 3, 0);
	vd_close(fa);
	vd_close(fb);
	assert_int_equal(vd_faultio_crash(fi), 0);
	c = content(fx->a);
	assert_string_equal(c, "aaaa");
	free(c);
	c = content(fx->b);
	assert_string_equal(c, "bbbb"); /* never synced: rolled back */
	free(c);
	vd_faultio_destroy(fi);
}

/* crash at write k of a sequence with periodic syncs: the file holds
 * exactly the writes up to the last sync before the crash (drop) or all
 * writes before the crash (no drop). */
static void test_fault_prefixes(void **state)
{
	struct fx *fx = *state;
	enum { N = 12 };

	for (int drop = 0; drop < 2; drop++) {
		for (long k = 0; k <= N; k++) {
			struct vd_faultio *fi;
			const struct vd_io *io;
			struct vd_file *f;
			char want[N + 1], *c;
			long synced = 0, done = 0;

			unlink(fx->a);
			assert_int_equal(vdt_write_file(fx->a, "............", N), 0);
			assert_int_equal(vd_faultio_create(k, drop, &fi), 0);
			io = vd_faultio_io(fi);
			assert_int_equal(io->open(io, fx->a, VD_O_RDWR, &f), 0);
			for (long i = 0; i < N; i++) {
				char ch = (char)('a' + i);
				if (vd_pwrite(f, &ch, 1, (uint64_t)i))
					break;
				done = i + 1;
				if (i % 3 == 2 && vd_sync(f) == 0)
					synced = done;
			}
			vd_close(f);
			assert_int_equal(done, k < N ? k : N);
			assert_int_equal(vd_faultio_crash(fi), 0);
			for (long i = 0; i < N; i++)
				want[i] = i < (drop ? synced : done) ? (char)('a' + i) : '.';
			want[N] = 0;
			c = content(fx->a);
			assert_string_equal(c, want);
			free(c);
			vd_faultio_destroy(fi);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_posix_basic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_zero_budget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_rollback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_keep_newest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_unsynced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_sync_per_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fault_prefixes, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
