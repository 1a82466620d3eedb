/* tests — unit tests of common/common.c and the LE helpers of common.h
 * (layer 0): get/put_le*, vd_is_zero, vd_parse_size, vd_dirname,
 * vd_path_join.  Expected values are worked out by hand from the
 * definitions (byte order, binary suffixes), not by calling the code. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"

static void test_le_decode(void **state)
{
	static const uint8_t b[8] = { 0x4b, 0x44, 0x4d, 0x56, 0x01, 0x00, 0x00, 0x80 };

	(void)state;
	assert_int_equal(get_le16(b), 0x444b);
	assert_int_equal(get_le32(b), 0x564d444bu); /* "KDMV" */
	assert_true(get_le64(b) == 0x80000001564d444bull);
	/* unaligned access */
	assert_int_equal(get_le32(b + 1), 0x01564d44u);
	assert_int_equal(get_le16(b + 6), 0x8000);
}

static void test_le_encode(void **state)
{
	uint8_t b[11];

	(void)state;
	memset(b, 0xee, sizeof b);
	put_le64(b + 1, 0x0102030405060708ull);
	assert_int_equal(b[0], 0xee);
	for (int i = 0; i < 8; i++)
		assert_int_equal(b[1 + i], 8 - i);
	assert_int_equal(b[9], 0xee);
	put_le32(b + 3, 0xdeadbeefu);
	assert_int_equal(b[3], 0xef);
	assert_int_equal(b[4], 0xbe);
	assert_int_equal(b[5], 0xad);
	assert_int_equal(b[6], 0xde);
	assert_int_equal(b[7], 2); /* untouched: put_le64 wrote it */
	put_le16(b + 9, 0xa55a);
	assert_int_equal(b[9], 0x5a);
	assert_int_equal(b[10], 0xa5);
}

static void test_le_round_trip(void **state)
{
	uint64_t s = 12345;
	uint8_t b[9];

	(void)state;
	for (int i = 0; i < 1000; i++) {
		uint64_t v = vdt_rand(&s);
		put_le64(b + 1, v);
		assert_true(get_le64(b + 1) == v);
		put_le32(b, (uint32_t)v);
		assert_true(get_le32(b) == (uint32_t)v);
		put_le16(b + 3, (uint16_t)v);
		assert_true(get_le16(b + 3) == (uint16_t)v);
	}
}

static void test_is_zero(void **state)
{
	uint8_t buf[4096 + 1];

	(void)state;
	memset(buf, 0, sizeof buf);
	assert_true(vd_is_zero(buf, 0));
	assert_true(vd_is_zero(buf, 1));
	for (size_t len = 1; len <= 40; len++)
		assert_true(vd_is_zero(buf, len));
	assert_true(vd_is_zero(buf, sizeof buf));
	/* a single non-zero byte anywhere in the range is seen */
	for (size_t len = 1; len <= 70; len++) {
		for (size_t i = 0; i < len; i++) {
			buf[i] = 0x80;
			assert_false(vd_is_zero(buf, len));
			buf[i] = 0;
		}
	}
	buf[4096] = 1;
	assert_false(vd_is_zero(buf, sizeof buf));
	assert_true(vd_is_zero(buf, 4096)); /* outside the range */
	buf[4096] = 0;
	buf[2048] = 1;
	assert_false(vd_is_zero(buf, sizeof buf));
	assert_false(vd_is_zero(buf + 2048, 1));
	assert_true(vd_is_zero(buf + 2049, 2047));
}

static void expect_size(const char *s, uint64_t want)
{
	uint64_t v = 0xdead;

	if (vd_parse_size(s, &v) != 0)
		fail_msg("vd_parse_size(\"%s\") failed", s);
	if (v != want)
		fail_msg("vd_parse_size(\"%s\") = %llu, want %llu", s,
			 (unsigned long long)v, (unsigned long long)want);
}

static void expect_size_err(const char *s)
{
	uint64_t v = 0;

	if (vd_parse_size(s, &v) >= 0)
		fail_msg("vd_parse_size(\"%s\") accepted (%llu)", s,
			 (unsigned long long)v);
}

static void test_parse_size(void **state)
{
	(void)state;
	expect_size("0", 0);
	expect_size("4096", 4096);
	expect_size("1K", 1024);
	expect_size("1k", 1024);
	expect_size("512M", 512ull * 1024 * 1024);
	expect_size("10G", 10ull << 30);
	expect_size("10GiB", 10ull << 30);
	expect_size("10GB", 10ull << 30);
	expect_size("3T", 3ull << 40);
	expect_size("2P", 2ull << 50);
	expect_size("18446744073709551615", UINT64_MAX);
	expect_size("16383P", 16383ull << 50);
	expect_size_err("");
	expect_size_err("G");
	expect_size_err("1.5T");
	expect_size_err("-1");
	expect_size_err(" 1");
	expect_size_err("1 G");
	expect_size_err("1X");
	expect_size_err("1GG");
	expect_size_err("1Gx");
	expect_size_err("16384P"); /* 2^64: overflows */
	expect_size_err("18446744073709551616");
	expect_size_err("99999999999999999999999");
	expect_size_err("20000000000000000K");
	assert_true(vd_parse_size(NULL, &(uint64_t){ 0 }) < 0);
}

static void expect_str(char *got, const char *want)
{
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_dirname(void **state)
{
	(void)state;
	expect_str(vd_dirname("a.vmdk"), ".");
	expect_str(vd_dirname("dir/a.vmdk"), "dir");
	expect_str(vd_dirname("/a.vmdk"), "/");
	expect_str(vd_dirname("/x/y/z.vmdk"), "/x/y");
	expect_str(vd_dirname("./a.vmdk"), ".");
	expect_str(vd_dirname("../b/a.vmdk"), "../b");
	expect_str(vd_dirname("my dir/disk 1.vmdk"), "my dir");
}

static void test_path_join(void **state)
{
	(void)state;
	expect_str(vd_path_join("dir", "a.vmdk"), "dir/a.vmdk");
	expect_str(vd_path_join("/x/y", "a-flat.vmdk"), "/x/y/a-flat.vmdk");
	expect_str(vd_path_join(".", "a.vmdk"), "a.vmdk");
	expect_str(vd_path_join("dir", "/abs/b.vmdk"), "/abs/b.vmdk");
	expect_str(vd_path_join("dir", "../base.vmdk"), "dir/../base.vmdk");
	expect_str(vd_path_join("my dir", "disk 1-s001.vmdk"), "my dir/disk 1-s001.vmdk");
	expect_str(vd_path_join(NULL, "a.vmdk"), "a.vmdk");
	/* dirname + join give back the original path */
	{
		const char *p = "/tmp/x/disk-000001.vmdk";
		char *d = vd_dirname(p);
		expect_str(vd_path_join(d, "disk-000001.vmdk"), p);
		free(d);
	}
}

static void test_random32(void **state)
{
	uint32_t a = vd_random32(), b = vd_random32(), c = vd_random32();

	(void)state;
	/* three equal 32-bit draws in a row: 2^-64 */
	assert_false(a == b && b == c);
}

static int log_count;
static char log_last[128];
static void count_log(void *opaque, enum vd_log_level level, const char *msg)
{
	(void)level;
	assert_ptr_equal(opaque, &log_count);
	log_count++;
	snprintf(log_last, sizeof log_last, "%s", msg);
}

static void test_log(void **state)
{
	(void)state;
	vd_log_set(NULL, NULL);
	vd_err("dropped %d", 1); /* default: discard, no crash */
	vd_log_set(count_log, &log_count);
	vd_err("%s: field %s = %llu", "x.vmdk", "grainSize", 7ull);
	assert_int_equal(log_count, 1);
	assert_string_equal(log_last, "x.vmdk: field grainSize = 7");
	vd_log_set(NULL, NULL);
	vd_err("dropped");
	assert_int_equal(log_count, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_le_decode),
		cmocka_unit_test(test_le_encode),
		cmocka_unit_test(test_le_round_trip),
		cmocka_unit_test(test_is_zero),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_dirname),
		cmocka_unit_test(test_path_join),
		cmocka_unit_test(test_random32),
		cmocka_unit_test(test_log),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
