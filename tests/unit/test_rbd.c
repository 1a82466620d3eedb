/* tests — the parts of the RBD front end that need no cluster (rbd/):
 * image names (rbd_name.c), a base's object size (rbd_send.c) and the
 * staging folder of an import with its publish and recovery
 * (rbd_stage.c).
 *
 * Names are checked against strings written out by hand from rbd.h's
 * rule; object sizes against the objects a hand-made layout touches; the
 * staging folder against what the folder holds afterwards (readdir). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "vdtest.h"
#include "rbd_int.h"

/* ---- names ---------------------------------------------------------------- */

static void expect_root(const char *want, unsigned n, ...)
{
	char *paths[8], *root = NULL;
	va_list ap;

	va_start(ap, n);
	for (unsigned i = 0; i < n; i++)
		paths[i] = va_arg(ap, char *);
	va_end(ap);
	assert_int_equal(rbd_name_root(paths, n, &root), 0);
	assert_string_equal(root, want);
	free(root);
}

static void test_name_root(void **state)
{
	(void)state;
	expect_root("/a/b", 1, "/a/b/x.vmdk");
	expect_root("/a/b", 2, "/a/b/x.vmdk", "/a/b/c/y.vmdk");
	expect_root("/a/b", 2, "/a/b/c/y.vmdk", "/a/b/x.vmdk");
	expect_root("/a", 2, "/a/b/x.vmdk", "/a/bc/y.vmdk");
	expect_root("/", 2, "/ab/x.vmdk", "/a/y.vmdk");
	expect_root("/", 2, "/x.vmdk", "/a/y.vmdk");
}

static void expect_name(const char *prefix, const char *root, const char *path,
			const char *want)
{
	char *got = NULL;

	assert_int_equal(rbd_name_make(prefix, root, path, &got), 0);
	assert_string_equal(got, want);
	free(got);
}

static void test_name_make(void **state)
{
	char *got = (char *)"untouched", long_path[400];

	(void)state;
	expect_name(NULL, "/r", "/r/base.vmdk", "base");
	expect_name("p-", "/r", "/r/base-000001.VMDK", "p-base-000001");
	expect_name("p-", "/r", "/r/vm 1/disk.vmdk", "p-vm%201+disk");
	expect_name("", "/r", "/r/a+b@c.vmdk", "a%2Bb%40c");
	expect_name("", "/r", "/r/a", "a%");           /* not .vmdk: kept apart */
	expect_name("", "/r", "/r/a.vmdk", "a");
	expect_name("", "/", "/x/y.vmdk", "x+y");
	expect_name("", "/r", "/r/%part.vmdk", "%25part"); /* never ends in %part */
	memset(long_path, 'x', sizeof long_path);
	memcpy(long_path, "/r/", 3);
	strcpy(long_path + sizeof long_path - 6, ".vmdk");
	assert_int_equal(rbd_name_make("", "/r", long_path, &got), -ENAMETOOLONG);
	assert_null(got);
}

static void test_name_part_file(void **state)
{
	char *p;

	(void)state;
	p = rbd_name_part("x");
	assert_string_equal(p, "x" RBD_EXPORT_PART);
	free(p);
	p = rbd_name_file("/d", "img", "s1", true);
	assert_string_equal(p, "/d/img-s1.vmdk");
	free(p);
	p = rbd_name_file("/d", "img", "s1", false);
	assert_string_equal(p, "/d/img.vmdk");
	free(p);
	p = rbd_name_file("/d", ".hidden", NULL, false); /* a scan would skip it */
	assert_string_equal(p, "/d/_hidden.vmdk");
	free(p);
}

/* ---- a base's object size -------------------------------------------------- */

/* A 64 MiB monolithicSparse disk holding len bytes at every step bytes. */
static uint64_t object_size_of(uint64_t step, uint64_t len)
{
	char *dir = vdt_mkdtemp("rbd-osize"), *path = vdt_join(dir, "d.vmdk");
	struct vmdk_create_opts o = {.capacity = 64u << 20,
				     .subformat = VMDK_MONOLITHIC_SPARSE};
	struct vmdk_disk *d;
	uint8_t *buf = malloc(len ? len : 1);
	uint64_t osize = 0;

	memset(buf, 0x5a, len ? len : 1);
	assert_int_equal(vmdk_create(path, &o, NULL), 0);
	assert_int_equal(vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d), 0);
	for (uint64_t off = 0; len && off < o.capacity; off += step)
		assert_int_equal(vmdk_pwrite(d, buf, len, off), 0);
	assert_int_equal(rbd_send_object_size(d, &osize), 0);
	assert_int_equal(vmdk_close(d), 0);
	free(buf);
	free(path);
	vdt_rmtree(dir);
	free(dir);
	return osize;
}

static void test_object_size(void **state)
{
	(void)state;
	/* dense: 4 MiB objects hold nothing but data */
	assert_int_equal(object_size_of(8u << 20, 8u << 20), 4u << 20);
	/* nothing: rbd's own size */
	assert_int_equal(object_size_of(0, 0), 4u << 20);
	/* 1 MiB every 4 MiB: 16 MiB of data; 1 MiB objects hold exactly it,
	 * 2 MiB ones twice as much */
	assert_int_equal(object_size_of(4u << 20, 1u << 20), 1u << 20);
	/* a grain every 4 MiB: only grain-sized objects stay within 1/16 */
	assert_int_equal(object_size_of(4u << 20, 64u << 10), 64u << 10);
	/* 31 of every 32 MiB: 4 MiB objects hold 1/31 more than the data */
	assert_int_equal(object_size_of(32u << 20, 31u << 20), 4u << 20);
	/* 15 of every 16 MiB: 4 and 2 MiB objects hold 1/15 more, 1 MiB none */
	assert_int_equal(object_size_of(16u << 20, 15u << 20), 1u << 20);
}

/* ---- the staging folder ---------------------------------------------------- */

static char *names_in(const char *dir)
{
	char *all = NULL, *list[64];
	unsigned n = 0;
	size_t len = 0;
	FILE *f = open_memstream(&all, &len);
	DIR *d = opendir(dir);
	struct dirent *e;

	assert_non_null(d);
	while ((e = readdir(d)) && n < 64)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			list[n++] = strdup(e->d_name);
	closedir(d);
	for (unsigned i = 0; i < n; i++) /* sorted */
		for (unsigned k = i + 1; k < n; k++)
			if (strcmp(list[k], list[i]) < 0) {
				char *t = list[i];
				list[i] = list[k];
				list[k] = t;
			}
	for (unsigned i = 0; i < n; i++) {
		fprintf(f, "%s%s", i ? " " : "", list[i]);
		free(list[i]);
	}
	fclose(f);
	return all;
}

static void put(const char *dir, const char *name, const char *text)
{
	char *p = vdt_join(dir, name);

	assert_int_equal(vdt_write_file(p, text, strlen(text)), 0);
	free(p);
}

static void expect_names(const char *dir, const char *want)
{
	char *got = names_in(dir);

	assert_string_equal(got, want);
	free(got);
}

static void test_stage_publish(void **state)
{
	char *dir = vdt_mkdtemp("rbd-stage"), *stage = NULL;
	char *names[] = {"a.vmdk", "a.vmdk.vdelta-children", "b.vmdk"};

	(void)state;
	assert_int_equal(rbd_stage_create(dir, &stage), 0);
	put(stage, "a.vmdk", "A");
	put(stage, "a.vmdk.vdelta-children", "child=b.vmdk\n");
	put(stage, "b.vmdk", "B");
	put(dir, "other.vmdk", "O");
	assert_int_equal(rbd_stage_publish(stage, dir, names, 3), 0);
	expect_names(dir, "a.vmdk a.vmdk.vdelta-children b.vmdk other.vmdk");
	assert_int_not_equal(access(stage, F_OK), 0);
	free(stage);
	vdt_rmtree(dir);
	free(dir);
}

/* The pid of a process that has exited. */
static long dead_pid(void)
{
	pid_t pid = fork();

	if (!pid)
		_exit(0);
	waitpid(pid, NULL, 0);
	return (long)pid;
}

static char *dead_stage(const char *dir)
{
	char *p;

	assert_true(asprintf(&p, "%s/.vdelta-rbd-import.%ld", dir, dead_pid()) > 0);
	assert_int_equal(mkdir(p, 0755), 0);
	return p;
}

static void test_stage_recover(void **state)
{
	char *dir = vdt_mkdtemp("rbd-recover"), *stage, *live;

	(void)state;
	/* stopped before its record: removed, nothing published */
	stage = dead_stage(dir);
	put(stage, "x.vmdk", "X");
	assert_int_equal(rbd_stage_recover(dir), 0);
	expect_names(dir, "");
	free(stage);
	/* stopped while moving (x moved, y not): finished */
	stage = dead_stage(dir);
	put(stage, "y.vmdk", "Y");
	put(stage, "PUBLISH", "x.vmdk\ny.vmdk\n");
	put(dir, "x.vmdk", "X");
	assert_int_equal(rbd_stage_recover(dir), 0);
	expect_names(dir, "x.vmdk y.vmdk");
	free(stage);
	/* a running import's folder is left alone */
	assert_true(asprintf(&live, "%s/.vdelta-rbd-import.%ld", dir, (long)getpid()) > 0);
	assert_int_equal(mkdir(live, 0755), 0);
	assert_int_equal(rbd_stage_recover(dir), 0);
	assert_int_equal(access(live, F_OK), 0);
	rmdir(live);
	free(live);
	vdt_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_root),
		cmocka_unit_test(test_name_make),
		cmocka_unit_test(test_name_part_file),
		cmocka_unit_test(test_object_size),
		cmocka_unit_test(test_stage_publish),
		cmocka_unit_test(test_stage_recover),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
