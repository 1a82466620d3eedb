/* tests — parent hint resolution and generation (chain/chain_hint.c).
 *
 * Files are laid out in a scratch tree; the expected answer is the file
 * that exists where the hint points, found by realpath() outside the
 * library. */
#define _GNU_SOURCE
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "chain.h"
#include "group.h"

static char *root;

static char *mk(const char *rel)
{
	char *p;

	asprintf(&p, "%s/%s", root, rel);
	assert_int_equal(vdt_write_file(p, "x", 1), 0);
	return p;
}

static void mkd(const char *rel)
{
	char *p;

	asprintf(&p, "%s/%s", root, rel);
	mkdir(p, 0755);
	free(p);
}

static void expect(const char *child, const char *hint, const char *native,
		   const char *want)
{
	char *got = NULL, *a, *b;

	assert_int_equal(chain_hint_resolve(child, hint, native, &got), 0);
	a = realpath(got, NULL);
	b = realpath(want, NULL);
	assert_non_null(a);
	assert_string_equal(a, b);
	free(a);
	free(b);
	free(got);
}

static void test_resolve(void **state)
{
	char *child, *sib, *up, *abs_hint;

	root = vdt_mkdtemp("chain-hint");
	mkd("vm");
	child = mk("vm/child.vmdk");
	sib = mk("vm/base.vmdk");
	up = mk("up.vmdk");
	/* relative to the child's folder, not the working directory */
	expect(child, "base.vmdk", NULL, sib);
	expect(child, "../up.vmdk", NULL, up);
	/* absolute */
	expect(child, up, NULL, up);
	/* Windows paths: by basename beside the child */
	expect(child, "C:\\VMs\\Golden\\base.vmdk", NULL, sib);
	expect(child, "\\\\server\\share\\base.vmdk", NULL, sib);
	/* an absolute path from another host (ESXi datastore) by basename */
	expect(child, "/vmfs/volumes/5f1e/vm/base.vmdk", NULL, sib);
	/* ddb.nativeParentHint when the hint leads nowhere */
	asprintf(&abs_hint, "%s", up);
	expect(child, "gone.vmdk", abs_hint, up);
	free(abs_hint);
	/* nothing: -ENOENT and a message naming the child and the hint */
	{
		char *out;
		assert_int_equal(chain_hint_resolve(child, "gone.vmdk", NULL, &out), -ENOENT);
		assert_non_null(strstr(vdt_last_msg, "gone.vmdk"));
		assert_non_null(strstr(vdt_last_msg, "child.vmdk"));
	}
	free(child);
	free(sib);
	free(up);
}

static void expect_make(const char *child, const char *parent, const char *want)
{
	char *got = NULL;

	assert_int_equal(chain_hint_make(child, parent, &got), 0);
	assert_string_equal(got, want);
	free(got);
}

static void test_make(void **state)
{
	char *a, *b, *c, *d, *e;

	mkd("vm/deep");
	mkd("other");
	a = mk("vm/base.vmdk");
	asprintf(&b, "%s/vm/new.vmdk", root);
	asprintf(&c, "%s/vm/deep/new.vmdk", root);
	asprintf(&d, "%s/other/new.vmdk", root);
	expect_make(b, a, "base.vmdk");
	expect_make(c, a, "../base.vmdk");
	expect_make(d, a, "../vm/base.vmdk");
	/* a hint made for a child resolves back to the parent */
	e = mk("other/child.vmdk");
	{
		char *h, *r, *ra, *rr;
		assert_int_equal(chain_hint_make(e, a, &h), 0);
		assert_int_equal(chain_hint_resolve(e, h, NULL, &r), 0);
		ra = realpath(a, NULL);
		rr = realpath(r, NULL);
		assert_string_equal(ra, rr);
		free(h);
		free(r);
		free(ra);
		free(rr);
	}
	/* nothing shared but the root: absolute */
	expect_make("/tmp/x.vmdk", "/etc/passwd", "/etc/passwd");
	free(a);
	free(b);
	free(c);
	free(d);
	free(e);
	{
		char *cmd;
		asprintf(&cmd, "rm -rf '%s'", root);
		assert_int_equal(system(cmd), 0);
		free(cmd);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resolve),
		cmocka_unit_test(test_make),
	};

	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
