/* tests — unit tests of the hosted sparse extent, vmdk/vmdk_sparse.c
 * (format layer, private API): kdmv_header_decode/encode round trip and
 * every validation rule of vmdk-format.md §2.1/§2.2/§7.3, the qemu-made
 * header bytes quoted in §2.1, headers made by qemu-img on this machine
 * (when installed), and opening the shared corpus: the negative files are
 * refused, the readable ones give the content whose sha256 INDEX.md lists
 * (hashed by sha256sum, an independent program). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "vdtest.h"
#include "vmdk_int.h"

/* vmdk-format.md §2.1: a qemu-created 100 MiB monolithicSparse, bytes 0-0x4f */
static const uint8_t qemu_hdr[80] = {
	0x4b, 0x44, 0x4d, 0x56, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x20, 0x03, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
	0x15, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x20, 0x0d, 0x0a, 0x00, 0x00, 0x00,
};

static void qemu_sector(uint8_t *buf)
{
	memset(buf, 0, VD_SECTOR);
	memcpy(buf, qemu_hdr, sizeof qemu_hdr);
}

static void decode_ok(const uint8_t *buf, struct kdmv_header *h)
{
	int rc = kdmv_header_decode(buf, "t.vmdk", h);

	if (rc)
		fail_msg("decode failed %d: %s", rc, vdt_last_msg);
}

static void decode_bad(const uint8_t *buf, const char *what)
{
	struct kdmv_header h;
	int rc = kdmv_header_decode(buf, "t.vmdk", &h);

	if (rc >= 0)
		fail_msg("header with %s accepted", what);
	/* the message names the file */
	if (!strstr(vdt_last_msg, "t.vmdk"))
		fail_msg("%s: message does not name the file: %s", what, vdt_last_msg);
}

static void test_qemu_bytes(void **state)
{
	uint8_t buf[VD_SECTOR], out[VD_SECTOR];
	struct kdmv_header h;

	(void)state;
	qemu_sector(buf);
	decode_ok(buf, &h);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.flags, 3);
	assert_int_equal(h.capacity_sectors, 204800);
	assert_int_equal(h.grain_size_sectors, 128);
	assert_int_equal(h.desc_offset_sectors, 1);
	assert_int_equal(h.desc_size_sectors, 20);
	assert_int_equal(h.nr_gtes_per_gt, 512);
	assert_int_equal(h.rgd_offset_sectors, 21);
	assert_int_equal(h.gd_offset_sectors, 38);
	assert_int_equal(h.overhead_sectors, 128);
	assert_int_equal(h.unclean_shutdown, 0);
	assert_int_equal(h.compress_algorithm, 0);
	/* encoding gives back qemu's bytes exactly, padding zeroed */
	memset(out, 0xcc, sizeof out);
	kdmv_header_encode(&h, out);
	assert_memory_equal(out, buf, VD_SECTOR);
}

static void random_header(uint64_t *s, struct kdmv_header *h)
{
	static const uint32_t flag_sets[] = { 0, 1, 3, 7, 0x30001, 0x30003, 0x10003, 0x2 };
	uint32_t f = flag_sets[vdt_below(s, 8)];

	*h = (struct kdmv_header){
		.version = f & 0x10000 ? 3 : (f & 4 ? 2 : 1 + (uint32_t)vdt_below(s, 3)),
		.flags = f,
		.capacity_sectors = 1 + vdt_below(s, VMDK_MAX_CAPACITY / VD_SECTOR),
		.grain_size_sectors = 16ull << vdt_below(s, 12), /* 16 .. 0x8000 */
		.desc_offset_sectors = vdt_below(s, 2),
		.desc_size_sectors = vdt_below(s, 2) * 20,
		.nr_gtes_per_gt = vdt_below(s, 2) ? 512 : 128,
		.rgd_offset_sectors = vdt_below(s, 1ull << 32),
		.gd_offset_sectors = (f & 0x10000) && !vdt_below(s, 4) ? KDMV_GD_AT_END
							     : vdt_below(s, 1ull << 32),
		.overhead_sectors = vdt_below(s, 1ull << 32),
		.unclean_shutdown = (uint8_t)vdt_below(s, 2),
		.compress_algorithm = f & 0x10000 ? 1 : 0,
	};
}

static void expect_same_header(const struct kdmv_header *a, const struct kdmv_header *b)
{
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->flags, b->flags);
	assert_true(a->capacity_sectors == b->capacity_sectors);
	assert_true(a->grain_size_sectors == b->grain_size_sectors);
	assert_true(a->desc_offset_sectors == b->desc_offset_sectors);
	assert_true(a->desc_size_sectors == b->desc_size_sectors);
	assert_int_equal(a->nr_gtes_per_gt, b->nr_gtes_per_gt);
	assert_true(a->rgd_offset_sectors == b->rgd_offset_sectors);
	assert_true(a->gd_offset_sectors == b->gd_offset_sectors);
	assert_true(a->overhead_sectors == b->overhead_sectors);
	assert_int_equal(a->unclean_shutdown, b->unclean_shutdown);
	assert_int_equal(a->compress_algorithm, b->compress_algorithm);
}

static void test_round_trip(void **state)
{
	uint64_t s = 2024;

	(void)state;
	for (int i = 0; i < 5000; i++) {
		struct kdmv_header h, h2;
		uint8_t buf[VD_SECTOR];
		random_header(&s, &h);
		memset(buf, 0xa5, sizeof buf);
		kdmv_header_encode(&h, buf);
		/* byte layout per §2.1 */
		assert_true(get_le32(buf) == KDMV_MAGIC);
		assert_true(get_le32(buf + 4) == h.version);
		assert_true(get_le32(buf + 8) == h.flags);
		assert_true(get_le64(buf + 12) == h.capacity_sectors);
		assert_true(get_le64(buf + 20) == h.grain_size_sectors);
		assert_true(get_le64(buf + 28) == h.desc_offset_sectors);
		assert_true(get_le64(buf + 36) == h.desc_size_sectors);
		assert_true(get_le32(buf + 44) == h.nr_gtes_per_gt);
		assert_true(get_le64(buf + 48) == h.rgd_offset_sectors);
		assert_true(get_le64(buf + 56) == h.gd_offset_sectors);
		assert_true(get_le64(buf + 64) == h.overhead_sectors);
		assert_true(buf[72] == h.unclean_shutdown);
		assert_memory_equal(buf + 73, "\n \r\n", 4);
		assert_true(get_le16(buf + 77) == h.compress_algorithm);
		for (int k = 79; k < (int)VD_SECTOR; k++)
			assert_int_equal(buf[k], 0);
		decode_ok(buf, &h2);
		expect_same_header(&h, &h2);
	}
}

static void test_bad_magic(void **state)
{
	static const char *magics[] = { "KDMW", "vmdk", "VMDK", "COWD", "\0\0\0\0", "kdmv" };
	uint8_t buf[VD_SECTOR];

	(void)state;
	for (size_t i = 0; i < sizeof magics / sizeof magics[0]; i++) {
		qemu_sector(buf);
		memcpy(buf, magics[i], 4);
		decode_bad(buf, magics[i]);
	}
}

static void test_version(void **state)
{
	static const uint32_t bad[] = { 0, 4, 5, 0x100, 0xffffffffu };
	uint8_t buf[VD_SECTOR];
	struct kdmv_header h;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		qemu_sector(buf);
		put_le32(buf + 4, bad[i]);
		decode_bad(buf, "bad version");
	}
	for (uint32_t v = 1; v <= 3; v++) {
		qemu_sector(buf);
		put_le32(buf + 4, v);
		decode_ok(buf, &h);
		assert_int_equal(h.version, v);
	}
}

/* bits 16-31 are incompatible: only 16 (compressed) and 17 (markers) known */
static void test_incompat_flags(void **state)
{
	uint8_t buf[VD_SECTOR];
	struct kdmv_header h;

	(void)state;
	for (int bit = 18; bit < 32; bit++) {
		qemu_sector(buf);
		put_le32(buf + 4, 3);
		put_le32(buf + 8, 0x30003u | 1u << bit);
		put_le16(buf + 77, 1);
		decode_bad(buf, "unknown incompatible flag");
		/* also on a plain version 1 header */
		qemu_sector(buf);
		put_le32(buf + 8, 3u | 1u << bit);
		decode_bad(buf, "unknown incompatible flag (v1)");
	}
	/* known incompatible bits: stream headers as qemu and VMware write them */
	qemu_sector(buf);
	put_le32(buf + 4, 3);
	put_le32(buf + 8, 0x30001);
	put_le16(buf + 77, 1);
	decode_ok(buf, &h);
	assert_int_equal(h.flags, 0x30001);
	assert_int_equal(h.compress_algorithm, 1);
	put_le32(buf + 8, 0x30003);
	decode_ok(buf, &h);
	/* compatible bits 2..15 are ignored (not refused) */
	for (int bit = 3; bit < 16; bit++) {
		qemu_sector(buf);
		put_le32(buf + 8, 3u | 1u << bit);
		decode_ok(buf, &h);
		assert_int_equal(h.flags, 3u | 1u << bit);
	}
	/* zeroed-grain GTEs, version 2, as qemu's zeroed_grain=on */
	qemu_sector(buf);
	put_le32(buf + 4, 2);
	put_le32(buf + 8, 7);
	decode_ok(buf, &h);
}

/* the newline-detection bytes are checked only when flag bit 0 is set */
static void test_newline_bytes(void **state)
{
	uint8_t buf[VD_SECTOR];
	struct kdmv_header h;

	(void)state;
	for (int i = 0; i < 4; i++) {
		qemu_sector(buf);
		buf[73 + i] ^= 0x07;
		decode_bad(buf, "damaged newline bytes");
		put_le32(buf + 8, 2); /* bit 0 clear: not checked */
		decode_ok(buf, &h);
		assert_int_equal(h.flags, 2);
	}
	/* what a CR/LF translating transfer does: "\n \r\n" -> "\r\n \r\r\n" */
	qemu_sector(buf);
	memcpy(buf + 73, "\r\n \r", 4);
	decode_bad(buf, "CRLF-translated header");
	qemu_sector(buf);
	memset(buf + 73, 0, 4);
	decode_bad(buf, "zero newline bytes");
	put_le32(buf + 8, 0);
	decode_ok(buf, &h);
}

static void set_grain(uint8_t *buf, uint64_t v) { put_le64(buf + 20, v); }
static void set_gtes(uint8_t *buf, uint64_t v) { put_le32(buf + 44, (uint32_t)v); }
static void set_cap(uint8_t *buf, uint64_t v) { put_le64(buf + 12, v); }

static void expect_field(void (*set)(uint8_t *, uint64_t), uint64_t v, bool ok,
			 const char *what)
{
	uint8_t buf[VD_SECTOR];
	struct kdmv_header h;
	int rc;

	qemu_sector(buf);
	set(buf, v);
	rc = kdmv_header_decode(buf, "t.vmdk", &h);
	if (ok && rc)
		fail_msg("%s = %llu refused (%d: %s)", what, (unsigned long long)v, rc,
			 vdt_last_msg);
	if (!ok && rc >= 0)
		fail_msg("%s = %llu accepted", what, (unsigned long long)v);
}

static void test_sizes(void **state)
{
	(void)state;
	/* grain: a power of two, bounded (it sizes buffers) */
	expect_field(set_grain, 128, true, "grainSize");
	expect_field(set_grain, 16, true, "grainSize");
	expect_field(set_grain, 0x8000, true, "grainSize");
	expect_field(set_grain, 0, false, "grainSize");
	expect_field(set_grain, 3, false, "grainSize");
	expect_field(set_grain, 100, false, "grainSize");
	expect_field(set_grain, 129, false, "grainSize");
	expect_field(set_grain, 2ull * VMDK_MAX_GRAIN_SECTORS, false, "grainSize");
	expect_field(set_grain, 0x200000, false, "grainSize");
	expect_field(set_grain, 1ull << 40, false, "grainSize");
	expect_field(set_grain, 1ull << 63, false, "grainSize");
	expect_field(set_grain, UINT64_MAX, false, "grainSize");
	/* numGTEsPerGT */
	expect_field(set_gtes, 512, true, "numGTEsPerGT");
	expect_field(set_gtes, 128, true, "numGTEsPerGT");
	expect_field(set_gtes, 0, false, "numGTEsPerGT");
	expect_field(set_gtes, 2ull * VMDK_MAX_GTES_PER_GT, false, "numGTEsPerGT");
	expect_field(set_gtes, 0x80000000u, false, "numGTEsPerGT");
	expect_field(set_gtes, 0xffffffffu, false, "numGTEsPerGT");
	/* capacity: qemu made a 3 TiB monolithicSparse (§7.4); beyond 64 TiB no */
	expect_field(set_cap, 6442450944ull, true, "capacity");
	expect_field(set_cap, 1954, true, "capacity"); /* not grain-aligned (§2.3) */
	expect_field(set_cap, VMDK_MAX_CAPACITY / VD_SECTOR + 1, false, "capacity");
	expect_field(set_cap, 1ull << 50, false, "capacity");
	expect_field(set_cap, UINT64_MAX, false, "capacity");
	expect_field(set_cap, 0x1efffffc1b000001ull, false, "capacity"); /* afl9 */
}

/* mutated headers never crash the decoder (and accepted ones re-encode) */
static void test_decode_mutations(void **state)
{
	static const int fields[] = { 4, 8, 12, 20, 28, 36, 44, 48, 56, 64, 72, 73, 77 };
	uint64_t s = 31337;

	(void)state;
	for (int i = 0; i < 100000; i++) {
		uint8_t buf[VD_SECTOR], out[VD_SECTOR];
		struct kdmv_header h;
		int off = fields[vdt_below(&s, 13)];
		qemu_sector(buf);
		if (vdt_below(&s, 2))
			put_le64(buf + off, vdt_rand(&s) >> vdt_below(&s, 64));
		else
			buf[vdt_below(&s, 80)] ^= (uint8_t)(1u << vdt_below(&s, 8));
		if (kdmv_header_decode(buf, "m.vmdk", &h) == 0) {
			kdmv_header_encode(&h, out);
			/* every field round-trips; pad and newline bytes are canonical */
			assert_memory_equal(out, buf, 73);
			assert_memory_equal(out + 77, buf + 77, 2);
		}
	}
}

/* ---- qemu-img made headers --------------------------------------------------------- */

static void qemu_img_header(const char *dir, const char *opts, const char *size,
			    struct kdmv_header *h)
{
	char cmd[1024], *path = vdt_join(dir, "q.vmdk");
	uint8_t buf[VD_SECTOR];

	assert_non_null(path);
	unlink(path);
	snprintf(cmd, sizeof cmd, "qemu-img create -q -f vmdk %s '%s' %s", opts,
		 path ? path : "", size);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(vdt_peek(path, buf, sizeof buf, 0), 0);
	decode_ok(buf, h);
	free(path);
}

static void test_qemu_img_headers(void **state)
{
	char *dir;
	struct kdmv_header h;

	(void)state;
	if (!vdt_have("qemu-img"))
		skip();
	dir = vdt_mkdtemp("sparse");
	qemu_img_header(dir, "", "100M", &h);
	assert_int_equal(h.version, 1);
	assert_int_equal(h.flags, 3);
	assert_int_equal(h.capacity_sectors, 100 * 2048);
	assert_int_equal(h.gd_offset_sectors, 38);
	qemu_img_header(dir, "-o zeroed_grain=on", "1000448", &h);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.flags, 7);
	qemu_img_header(dir, "-o subformat=streamOptimized", "3G", &h);
	assert_int_equal(h.version, 3);
	assert_int_equal(h.flags, 0x30003);
	assert_int_equal(h.capacity_sectors, 3ull << 21);
	assert_int_equal(h.compress_algorithm, 1);
	qemu_img_header(dir, "", "3T", &h);
	assert_int_equal(h.capacity_sectors, 3ull << 31);
	vdt_rmtree(dir);
	free(dir);
}

/* ---- corpus: negative files refused, readable ones hash right --------------------- */

static void test_corpus_negative(void **state)
{
	static const char *neg[] = {
		"qemu-iotests-sample_images/afl9.vmdk",
		"go-vmdk-parser/vmdk-invalid.img",
		"virt-manager/CentOS-6.4-i386-Gnome-disk1.vmdk",
		"vmdk-forensic/ms3-win.vmdk",
		"virt-manager/test-vmdk-desc.vmdk",
		"vmdk-rs/vmfs_thick-000001.vmdk",
	};
	unsigned done = 0;

	(void)state;
	for (size_t i = 0; i < sizeof neg / sizeof neg[0]; i++) {
		char *p = vdt_corpus_path(neg[i]);
		struct vmdk_disk *d = NULL;
		int rc;
		if (!p)
			continue;
		vdt_last_msg[0] = 0;
		rc = vmdk_open(p, VMDK_OPEN_RDONLY, NULL, &d);
		if (rc >= 0) {
			vmdk_close(d);
			fail_msg("%s: negative corpus file opened", neg[i]);
		}
		if (!vdt_last_msg[0])
			fail_msg("%s: refused (%d) without a message", neg[i], rc);
		free(p);
		done++;
	}
	if (!done)
		skip();
}

/* sha256 of the disk's raw content through sha256sum(1) */
static int disk_sha256(struct vmdk_disk *d, char out[65])
{
	const size_t chunk = 1 << 20;
	uint64_t cap = vmdk_capacity(d);
	uint8_t *buf = malloc(chunk);
	char *dir = vdt_mkdtemp("sha"), *tmp = vdt_join(dir, "sum"), cmd[4200];
	FILE *p;
	int err = 0;

	snprintf(cmd, sizeof cmd, "sha256sum > '%s'", tmp);
	p = popen(cmd, "w");
	for (uint64_t off = 0; p && !err && off < cap; off += chunk) {
		size_t n = (size_t)VD_MIN((uint64_t)chunk, cap - off);
		err = vmdk_pread(d, buf, n, off);
		if (!err && fwrite(buf, 1, n, p) != n)
			err = -EIO;
	}
	if (!p || pclose(p))
		err = err ? err : -EIO;
	if (!err) {
		size_t len = 0;
		char *s = (char *)vdt_slurp(tmp, &len);
		if (s && len >= 64) {
			memcpy(out, s, 64);
			out[64] = 0;
		} else {
			err = -EIO;
		}
		free(s);
	}
	vdt_rmtree(dir);
	free(dir);
	free(tmp);
	free(buf);
	return err;
}

struct corpus_file {
	const char *rel;
	uint64_t size;
	const char *sha256;
};

/* from INDEX.md (qemu-img and libvmdk agree on them) */
static const struct corpus_file positives[] = {
	{ "vmdk-rs/monolithicSparse.vmdk", 10485760,
	  "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727" },
	{ "vmdk-rs/monolithicFlat.vmdk", 10485760,
	  "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727" },
	{ "vmdk-rs/twoGbMaxExtentSparse.vmdk", 10485760,
	  "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727" },
	{ "vmdk-rs/twoGbMaxExtentFlat.vmdk", 10485760,
	  "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727" },
	{ "vmdk-rs/old-2023/0.vmdk", 10485760,
	  "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727" },
	{ "vmdk-rs/old-2023/1.vmdk", 10485760,
	  "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727" },
	{ "vmdk-rs/vmfs_thick.vmdk", 2097152,
	  "8d43c795d24bce01b49f92744f934c1072210dcac170bb1c83a5aa56df46ab7d" },
	{ "dfvfs/ext2.vmdk", 4194304,
	  "a6c2f0e39afe6c6ab432ca5465349fcefe8dc944398e97b2d957d3f89dbb5d80" },
	{ "dfvfs/2020/ext2.vmdk", 4194304,
	  "ec09b82aa57a3fff111b2c8cc3009c5d6bcbc74bcb0074b183467a7c5ac1b06e" },
	{ "plaso/image.vmdk", 102400,
	  "854c3db1c4a07a241e2ed9fbd8892adf2adc662c7862a75deed26f3483f414c9" },
	{ "go-vmdk-parser/vmdk-monolith.img", 65536,
	  "de2f256064a0af797747c2b97505dc0b9f3df0de4f489eac731c23ae9ca9cc31" },
};

static void test_corpus_content(void **state)
{
	unsigned done = 0;

	(void)state;
	if (!vdt_have("sha256sum"))
		skip();
	for (size_t i = 0; i < sizeof positives / sizeof positives[0]; i++) {
		const struct corpus_file *c = &positives[i];
		char *p = vdt_corpus_path(c->rel), sum[65];
		struct vmdk_disk *d = NULL;
		uint64_t covered = 0;
		int rc;

		if (!p)
			continue;
		rc = vmdk_open(p, VMDK_OPEN_RDONLY, NULL, &d);
		if (rc)
			fail_msg("%s: open failed %d: %s", c->rel, rc, vdt_last_msg);
		assert_false(vmdk_writable(d));
		if (vmdk_capacity(d) != c->size)
			fail_msg("%s: capacity %llu, want %llu", c->rel,
				 (unsigned long long)vmdk_capacity(d),
				 (unsigned long long)c->size);
		assert_int_equal(disk_sha256(d, sum), 0);
		if (strcmp(sum, c->sha256))
			fail_msg("%s: sha256 %s, want %s", c->rel, sum, c->sha256);
		/* block status covers the capacity exactly */
		while (covered < c->size) {
			enum vmdk_bs kind;
			uint64_t run = 0;
			assert_int_equal(vmdk_block_status(d, covered, c->size - covered,
							   &kind, &run), 0);
			assert_true(run > 0 && run <= c->size - covered);
			covered += run;
		}
		/* reads past the end are refused */
		{
			uint8_t b[2];
			assert_true(vmdk_pread(d, b, 2, c->size - 1) < 0);
			assert_int_equal(vmdk_pread(d, b, 1, c->size - 1), 0);
		}
		vmdk_close(d);
		free(p);
		done++;
	}
	if (!done)
		skip();
}

/* ---- damaged tables: refused or reported, never garbage -------------------------- */

struct damaged {
	char *dir, *path;
	uint64_t gd, rgd, gt, rgt; /* sectors */
};

/* a fresh 1 MiB monolithicSparse (8 KiB grains) with grain 0 written */
static void make_small(struct damaged *t)
{
	struct vmdk_create_opts o = { .capacity = 1 << 20, .grain_size = 8192,
				      .subformat = VMDK_MONOLITHIC_SPARSE,
				      .parent_cid = VMDK_CID_NONE };
	struct vmdk_disk *d;
	uint8_t buf[8192], hdr[512];

	t->dir = vdt_mkdtemp("damaged");
	t->path = vdt_join(t->dir, "d.vmdk");
	assert_int_equal(vmdk_create(t->path, &o, NULL), 0);
	assert_int_equal(vmdk_open(t->path, VMDK_OPEN_RDWR, NULL, &d), 0);
	memset(buf, 0x77, sizeof buf);
	assert_int_equal(vmdk_pwrite(d, buf, sizeof buf, 0), 0);
	assert_int_equal(vmdk_close(d), 0);
	assert_int_equal(vdt_peek(t->path, hdr, sizeof hdr, 0), 0);
	t->gd = get_le64(hdr + 56);
	t->rgd = get_le64(hdr + 48);
	assert_int_equal(vdt_peek(t->path, buf, 4, (off_t)t->gd * 512), 0);
	t->gt = get_le32(buf);
	assert_int_equal(vdt_peek(t->path, buf, 4, (off_t)t->rgd * 512), 0);
	t->rgt = get_le32(buf);
	assert_true(t->gt && t->rgt && t->gt != t->rgt);
}

static void poke32(const char *path, uint64_t off, uint32_t v)
{
	uint8_t b[4];

	put_le32(b, v);
	assert_int_equal(vdt_poke(path, b, 4, (off_t)off), 0);
}

static void free_damaged(struct damaged *t)
{
	vdt_rmtree(t->dir);
	free(t->dir);
	free(t->path);
}

static void count_problem(void *opaque, bool is_error, const char *file, const char *msg)
{
	(void)file;
	(void)msg;
	if (is_error)
		(*(unsigned *)opaque)++;
}

/* open fails, or reading grain 0 fails and vmdk_check reports an error */
static void expect_refused(const char *path, const char *what)
{
	struct vmdk_disk *d;
	uint8_t buf[8192];
	struct vmdk_check_result r;
	unsigned errors = 0;

	if (vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d))
		return;
	if (vmdk_pread(d, buf, sizeof buf, 0) == 0)
		fail_msg("%s: grain 0 read succeeded", what);
	assert_int_equal(vmdk_check(d, count_problem, &errors, &r), 0);
	if (!r.errors || !errors)
		fail_msg("%s: vmdk_check found no error", what);
	vmdk_close(d);
}

static void test_damaged_tables(void **state)
{
	struct damaged t;

	(void)state;
	/* GTE beyond the end of the file */
	make_small(&t);
	poke32(t.path, t.gt * 512, 0x00100000);
	poke32(t.path, t.rgt * 512, 0x00100000);
	expect_refused(t.path, "GTE past EOF");
	free_damaged(&t);
	/* GTE 1 without the zeroed-grain flag: sector 1 is the descriptor */
	make_small(&t);
	poke32(t.path, t.gt * 512, 1);
	poke32(t.path, t.rgt * 512, 1);
	expect_refused(t.path, "GTE 1 without flag");
	free_damaged(&t);
	/* GTE pointing into the metadata (the GD itself) */
	make_small(&t);
	poke32(t.path, t.gt * 512, (uint32_t)t.gd);
	poke32(t.path, t.rgt * 512, (uint32_t)t.gd);
	expect_refused(t.path, "GTE inside metadata");
	free_damaged(&t);
	/* GD entry (and RGD) beyond the end of the file */
	make_small(&t);
	poke32(t.path, t.gd * 512, 0x00200000);
	poke32(t.path, t.rgd * 512, 0x00200000);
	expect_refused(t.path, "GD entry past EOF");
	free_damaged(&t);
	/* gdOffset beyond the end of the file: refused at open */
	make_small(&t);
	{
		uint8_t b[8];
		struct vmdk_disk *d;
		put_le64(b, 0x7fffffff);
		assert_int_equal(vdt_poke(t.path, b, 8, 56), 0);
		if (vmdk_open(t.path, VMDK_OPEN_RDONLY, NULL, &d) == 0) {
			vmdk_close(d);
			fail_msg("gdOffset past EOF: opened");
		}
	}
	free_damaged(&t);
	/* GT and RGT disagree: vmdk_check reports it */
	make_small(&t);
	{
		struct vmdk_disk *d;
		struct vmdk_check_result r;
		unsigned errors = 0;
		poke32(t.path, t.rgt * 512 + 4, 0x00000abc);
		assert_int_equal(vmdk_open(t.path, VMDK_OPEN_RDONLY, NULL, &d), 0);
		assert_int_equal(vmdk_check(d, count_problem, &errors, &r), 0);
		if (!r.errors)
			fail_msg("GT/RGT mismatch not reported");
		vmdk_close(d);
	}
	free_damaged(&t);
}

/* a descriptor whose extents add up to more than 64 TiB is refused */
static void test_capacity_limit(void **state)
{
	char *dir = vdt_mkdtemp("caplimit"), *p = vdt_join(dir, "z.vmdk");
	const char *text = "# Disk DescriptorFile\nversion=1\nCID=12345678\n"
			   "parentCID=ffffffff\ncreateType=\"custom\"\n"
			   "RW 68719476736 ZERO\nRW 68719476736 ZERO\nRW 68719476736 ZERO\n";
	struct vmdk_disk *d;

	(void)state;
	assert_int_equal(vdt_write_file(p, text, strlen(text)), 0);
	if (vmdk_open(p, VMDK_OPEN_RDONLY, NULL, &d) == 0) {
		uint64_t cap = vmdk_capacity(d);
		vmdk_close(d);
		fail_msg("96 TiB of ZERO extents opened (capacity %llu)", (unsigned long long)cap);
	}
	vdt_rmtree(dir);
	free(dir);
	free(p);
}

/* uncleanShutdown: read-only open allowed, read-write needs DIRTY_OK */
static void test_dirty_open(void **state)
{
	struct damaged t;
	struct vmdk_disk *d;
	uint8_t one = 1, b = 0xee;

	(void)state;
	make_small(&t);
	assert_int_equal(vdt_poke(t.path, &one, 1, 72), 0);
	assert_int_equal(vmdk_open(t.path, VMDK_OPEN_RDONLY, NULL, &d), 0);
	vmdk_close(d);
	assert_int_equal(vdt_peek(t.path, &b, 1, 72), 0);
	assert_int_equal(b, 1); /* a read-only open changes nothing */
	if (vmdk_open(t.path, VMDK_OPEN_RDWR, NULL, &d) == 0) {
		vmdk_close(d);
		fail_msg("dirty disk opened read-write without VMDK_OPEN_DIRTY_OK");
	}
	assert_int_equal(vmdk_open(t.path, VMDK_OPEN_RDWR | VMDK_OPEN_DIRTY_OK, NULL, &d), 0);
	assert_int_equal(vmdk_close(d), 0);
	assert_int_equal(vdt_peek(t.path, &b, 1, 72), 0);
	assert_int_equal(b, 0); /* clean after a clean close */
	free_damaged(&t);
}

/* ---- syncs per flush (vmdk_gt.c write order) ------------------------------------ */

static uint64_t syncs_of_flush(struct vmdk_disk *d, struct vd_countio *ci)
{
	struct vd_count_stats st;

	vd_countio_reset(ci);
	assert_int_equal(vmdk_flush(d), 0);
	vd_countio_total(ci, &st);
	return st.syncs;
}

static void write_4k(struct vmdk_disk *d, uint64_t off)
{
	uint8_t buf[4096];

	memset(buf, (int)(off >> 16) | 1, sizeof buf);
	assert_int_equal(vmdk_pwrite(d, buf, sizeof buf, off), 0);
}

/* An allocating flush costs two syncs, with or without a new grain table;
 * grains written in place one; a flush after a flush none. */
static void test_flush_syncs(void **state)
{
	struct vmdk_create_opts o = { .capacity = 64 << 20, .grain_size = 65536,
				      .subformat = VMDK_MONOLITHIC_SPARSE,
				      .parent_cid = VMDK_CID_NONE };
	char *dir = vdt_mkdtemp("syncs"), *path = vdt_join(dir, "d.vmdk");
	uint8_t hdr[512], zero[4] = { 0 };
	struct vd_countio *ci;
	struct vmdk_disk *d;

	(void)state;
	assert_int_equal(vmdk_create(path, &o, NULL), 0);
	assert_int_equal(vdt_peek(path, hdr, sizeof hdr, 0), 0);
	/* directory entry 1 (32..64 MiB) -> 0 in both directories: no table */
	assert_int_equal(vdt_poke(path, zero, 4, (off_t)(get_le64(hdr + 56) * 512 + 4)), 0);
	assert_int_equal(vdt_poke(path, zero, 4, (off_t)(get_le64(hdr + 48) * 512 + 4)), 0);
	assert_int_equal(vd_countio_create(NULL, &ci), 0);
	assert_int_equal(vmdk_open(path, VMDK_OPEN_RDWR, vd_countio_io(ci), &d), 0);
	write_4k(d, 0); /* the first write: CID and unclean flag, synced */
	assert_int_equal(vmdk_flush(d), 0);
	write_4k(d, 5 << 16);
	assert_int_equal(syncs_of_flush(d, ci), 2); /* new grain, table exists */
	write_4k(d, (5 << 16) + 8192);
	assert_int_equal(syncs_of_flush(d, ci), 1); /* in place */
	assert_int_equal(syncs_of_flush(d, ci), 0); /* nothing since */
	write_4k(d, 40 << 20);
	assert_int_equal(syncs_of_flush(d, ci), 2); /* new grain and new table */
	assert_int_equal(vmdk_close(d), 0);
	vd_countio_destroy(ci);
	assert_int_equal(vmdk_open(path, VMDK_OPEN_RDONLY, NULL, &d), 0);
	{
		uint8_t buf[4096], want[4096];
		assert_int_equal(vmdk_pread(d, buf, sizeof buf, 40 << 20), 0);
		memset(want, (40 << 4) | 1, sizeof want);
		assert_memory_equal(buf, want, sizeof buf);
	}
	assert_int_equal(vmdk_close(d), 0);
	vdt_rmtree(dir);
	free(path);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qemu_bytes),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_bad_magic),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_incompat_flags),
		cmocka_unit_test(test_newline_bytes),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_decode_mutations),
		cmocka_unit_test(test_qemu_img_headers),
		cmocka_unit_test(test_corpus_negative),
		cmocka_unit_test(test_corpus_content),
		cmocka_unit_test(test_damaged_tables),
		cmocka_unit_test(test_capacity_limit),
		cmocka_unit_test(test_dirty_open),
		cmocka_unit_test(test_flush_syncs),
	};
	vd_log_set(vdt_log, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
