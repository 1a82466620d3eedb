/* tests — the bundle stream of group/ (group_bundle.c, group_bundle_head.c):
 * round trips and every kind of damage (test layer).
 *
 * A bundle of two layers (a layer over a need, a delta over it) is written with
 * the writer, read back with the reader, and compared with what went in:
 * every run, its kind and bytes.  Then the same stream is damaged: a bit
 * flipped at every byte offset, cut at every length, two frames swapped, a
 * newer version, a frame that decompresses to more than it says (a bomb)
 * and one that claims more than a frame may hold, hostile layer headers.
 * Each must be refused (the reader never reports the end), with a message
 * naming the block or frame and its byte offset.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <xxhash.h>
#include <zstd.h>

#include "vdtest.h"
#include "group_int.h"

#define CAP (16u << 20)
#define PREAMBLE 16u
#define ENVELOPE 40u

static char *dir;

struct run_log {
	uint64_t off[4096], len[4096];
	enum group_bundle_kind kind[4096];
	unsigned layer[4096];
	unsigned n;
};

static uint8_t *pattern; /* CAP bytes of compressible content */

static struct group_bundle_info *info(void)
{
	struct group_bundle_info *b = calloc(1, sizeof *b);

	assert_non_null(b);
	b->nr_layers = 2;
	b->nr_needs = 1;
	b->layers = calloc(2, sizeof *b->layers);
	b->needs = calloc(1, sizeof *b->needs);
	b->needs[0] = (struct group_bundle_need){ .name = strdup("tmpl.vmdk"), .cid = 0x1234,
						  .capacity = CAP };
	memset(b->needs[0].digest, 0xab, 16);
	for (unsigned i = 0; i < 2; i++)
		b->layers[i] = (struct group_bundle_layer){
			.name = strdup(i ? "vm.vmdk" : "mid.vmdk"),
			.source_type = strdup("monolithicSparse"), .kind = VMDK_MONOLITHIC_SPARSE,
			.capacity = CAP, .grain_size = 65536, .cid = 0x100 + i,
			.parent_kind = i ? GROUP_BUNDLE_LAYER : GROUP_BUNDLE_NEED, .parent = 0,
			.parent_cid = i ? 0x100 : 0x1234, .top = i == 1 };
	vd_strv_add(&b->layers[1].keys, &b->layers[1].nr_keys, "ddb.adapterType=lsilogic");
	return b;
}

/* The runs written (layer, offset, length, kind): layer 0 holds 5 MiB of
 * data and a zeroed MiB; layer 1 a few scattered grains, its parent's
 * bytes in one. */
static void runs(struct run_log *w)
{
	static const uint64_t r[][4] = {
		{0, 0, 5u << 20, 1}, {0, 10u << 20, 1u << 20, 2}, {0, 12u << 20, 65536, 1},
		{1, 65536, 65536, 1}, {1, 4u << 20, 8192, 3}, {1, 5u << 20, 3 * 65536, 1},
		{1, 15u << 20, 65536, 2},
	};
	w->n = 0;
	for (unsigned i = 0; i < sizeof r / sizeof r[0]; i++) {
		w->layer[w->n] = (unsigned)r[i][0];
		w->off[w->n] = r[i][1];
		w->len[w->n] = r[i][2];
		w->kind[w->n++] = (enum group_bundle_kind)r[i][3];
	}
}

static char *write_bundle(const char *name, struct run_log *w)
{
	struct group_bundle_info *b = info();
	struct group_bundle_writer *wr;
	char *path = vdt_join(dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

	runs(w);
	for (unsigned i = 0; i < w->n; i++)
		b->layers[w->layer[i]].held_bytes += w->len[i];
	b->held_bytes = b->layers[0].held_bytes + b->layers[1].held_bytes;
	assert_true(fd >= 0);
	assert_int_equal(group_bundle_writer_open(fd, 3, 2, &wr), 0);
	assert_int_equal(group_bundle_write_head(wr, b), 0);
	for (unsigned i = 0; i < w->n; i++)
		assert_int_equal(group_bundle_write_run(wr, w->layer[i], w->off[i], w->len[i],
							w->kind[i], w->kind[i] == GROUP_RUN_DATA
									? pattern + w->off[i] : NULL,
							65536), 0);
	assert_int_equal(group_bundle_write_end(wr), 0);
	group_bundle_writer_free(wr);
	group_bundle_info_free(b);
	close(fd);
	return path;
}

/* Read the whole stream; 0 when it ends well, else the first error.  The
 * runs read are merged into got (adjacent runs of a kind in one layer). */
static int read_bundle(const char *path, struct run_log *got)
{
	struct group_bundle_reader *r = NULL;
	struct group_bundle_info *b = NULL;
	const struct group_bundle_run *runs;
	unsigned layer, nr;
	int fd = open(path, O_RDONLY), err;

	assert_true(fd >= 0);
	got->n = 0;
	err = group_bundle_reader_open(fd, path, &r);
	if (!err)
		err = group_bundle_read_head(r, &b);
	while (!err && !(err = group_bundle_read_frame(r, &layer, &runs, &nr)))
		for (unsigned i = 0; i < nr; i++) {
			unsigned k = got->n;
			if (runs[i].kind == GROUP_RUN_DATA)
				assert_memory_equal(runs[i].data, pattern + runs[i].off, runs[i].len);
			if (k && got->layer[k - 1] == layer && got->kind[k - 1] == runs[i].kind &&
			    got->off[k - 1] + got->len[k - 1] == runs[i].off) {
				got->len[k - 1] += runs[i].len;
				continue;
			}
			got->layer[k] = layer;
			got->off[k] = runs[i].off;
			got->len[k] = runs[i].len;
			got->kind[k] = runs[i].kind;
			got->n++;
		}
	group_bundle_reader_free(r);
	group_bundle_info_free(b);
	close(fd);
	return err == 1 ? 0 : err ? err : -EIO;
}

static void test_round_trip(void **state)
{
	struct run_log *w = calloc(1, sizeof *w), *g = calloc(1, sizeof *g);
	char *path = write_bundle("rt.vdb", w);
	struct group_bundle_info *b = NULL;
	int fd = open(path, O_RDONLY);

	(void)state;
	assert_int_equal(read_bundle(path, g), 0);
	assert_int_equal(g->n, w->n);
	for (unsigned i = 0; i < w->n; i++) {
		assert_int_equal(g->layer[i], w->layer[i]);
		assert_int_equal(g->off[i], w->off[i]);
		assert_int_equal(g->len[i], w->len[i]);
		assert_int_equal(g->kind[i], w->kind[i]);
	}
	assert_int_equal(group_bundle_list(fd, path, &b), 0);
	assert_int_equal(b->nr_layers, 2);
	assert_string_equal(b->layers[1].name, "vm.vmdk");
	assert_int_equal(b->layers[1].parent_kind, GROUP_BUNDLE_LAYER);
	assert_int_equal(b->layers[0].parent_kind, GROUP_BUNDLE_NEED);
	assert_int_equal(b->needs[0].cid, 0x1234);
	assert_string_equal(b->layers[1].keys[0], "ddb.adapterType=lsilogic");
	assert_true(b->layers[1].top && !b->layers[0].top);
	group_bundle_info_free(b);
	close(fd);
	free(path);
	free(w);
	free(g);
}

static uint8_t *load(const char *path, size_t *len)
{
	uint8_t *buf = vdt_slurp(path, len);

	assert_non_null(buf);
	return buf;
}

static char *save(const char *name, const uint8_t *buf, size_t len)
{
	char *p = vdt_join(dir, name);

	assert_int_equal(vdt_write_file(p, buf, len), 0);
	return p;
}

/* A bundle written and loaded whole, to damage (d.s, d.len) and read back
 * (into d.g). */
struct damaged {
	struct run_log *w, *g;
	char *path;
	uint8_t *s;
	size_t len;
};

static struct damaged damaged_open(const char *name)
{
	struct damaged d = { calloc(1, sizeof *d.w), calloc(1, sizeof *d.g), NULL, NULL, 0 };

	assert_true(d.w && d.g);
	d.path = write_bundle(name, d.w);
	d.s = load(d.path, &d.len);
	return d;
}

static void damaged_close(struct damaged *d)
{
	free(d->s);
	free(d->path);
	free(d->w);
	free(d->g);
}

/* Offsets of every block's envelope. */
static unsigned blocks(const uint8_t *s, size_t len, size_t *at, unsigned max)
{
	unsigned n = 0;

	for (size_t o = PREAMBLE; o + ENVELOPE <= len && n < max;
	     o += ENVELOPE + get_le32(s + o + 8))
		at[n++] = o;
	return n;
}

/* A bit flipped anywhere: refused; a flip in a frame names the frame. */
static void test_bit_flips(void **state)
{
	struct damaged d = damaged_open("flip.vdb");
	char *bad;
	size_t at[64];
	unsigned nb = blocks(d.s, d.len, at, 64), named = 0, tried = 0;

	(void)state;
	assert_true(nb >= 6); /* head, 2 layers, >= 3 frames, trailer */
	for (size_t o = 0; o < d.len; o += o < at[3] || o + 512 > d.len ? 1 : 7) {
		d.s[o] ^= (uint8_t)(1u << (o % 8));
		bad = save("bad.vdb", d.s, d.len);
		vdt_last_msg[0] = 0;
		assert_int_not_equal(read_bundle(bad, d.g), 0);
		assert_non_null(strstr(vdt_last_msg, "refused"));
		if (o >= at[3] && o < at[nb - 1]) {
			tried++;
			bool ok = strstr(vdt_last_msg, "frame ") && strstr(vdt_last_msg, "at byte ");
			if (!ok)
				fprintf(stderr, "flip at %zu: %s\n", o, vdt_last_msg);
			named += ok;
		}
		d.s[o] ^= (uint8_t)(1u << (o % 8));
		free(bad);
	}
	assert_true(tried > 10);
	assert_int_equal(named, tried); /* every flip in a frame names it */
	damaged_close(&d);
}

static void test_truncated(void **state)
{
	struct damaged d = damaged_open("cut.vdb");
	char *bad;

	(void)state;
	for (size_t n = 0; n < d.len; n += n < 256 ? 1 : 97) {
		bad = save("bad.vdb", d.s, n);
		assert_int_not_equal(read_bundle(bad, d.g), 0);
		free(bad);
	}
	bad = save("bad.vdb", d.s, d.len - 1);
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	assert_non_null(strstr(vdt_last_msg, "truncated"));
	free(bad);
	damaged_close(&d);
}

/* Frames 0 and 1 swapped; a frame repeated; bytes after the trailer. */
static void test_order(void **state)
{
	struct damaged d = damaged_open("order.vdb");
	char *bad;
	size_t at[64];
	uint8_t *t = malloc(2 * d.len);
	unsigned nb = blocks(d.s, d.len, at, 64);
	size_t a = at[3], b = at[4], c = at[5];

	(void)state;
	memcpy(t, d.s, a);
	memcpy(t + a, d.s + b, c - b);
	memcpy(t + a + (c - b), d.s + a, b - a);
	memcpy(t + c, d.s + c, d.len - c);
	bad = save("bad.vdb", t, d.len);
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	assert_non_null(strstr(vdt_last_msg, "out of order"));
	free(bad);
	memcpy(t, d.s, b);
	memcpy(t + b, d.s + a, b - a); /* frame 0 again */
	memcpy(t + b + (b - a), d.s + b, d.len - b);
	bad = save("bad.vdb", t, d.len + (b - a));
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	free(bad);
	memcpy(t, d.s, d.len);
	t[d.len] = 0;
	bad = save("bad.vdb", t, d.len + 1);
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	assert_non_null(strstr(vdt_last_msg, "after the trailer"));
	assert_true(nb > 5);
	free(bad);
	free(t);
	damaged_close(&d);
}

/* A block of another kind where a layer header, or a frame, belongs (its
 * envelope's checksum made right): refused, naming both kinds. */
static void test_wrong_tag(void **state)
{
	struct damaged d = damaged_open("tag.vdb");
	char *bad;
	size_t at[64];
	static const struct { unsigned block; const char *tag, *msg; } cases[] = {
		{ 1, "FRAM", "tag \"FRAM\" where LAYR belongs" },
		{ 3, "LAYR", "tag \"LAYR\" where a frame or the trailer belongs" },
	};

	(void)state;
	assert_true(blocks(d.s, d.len, at, 64) >= 6);
	for (unsigned i = 0; i < 2; i++) {
		uint8_t *t = malloc(d.len);
		memcpy(t, d.s, d.len);
		memcpy(t + at[cases[i].block], cases[i].tag, 4);
		put_le64(t + at[cases[i].block] + 32, XXH3_64bits(t + at[cases[i].block], 32));
		bad = save("bad.vdb", t, d.len);
		vdt_last_msg[0] = 0;
		assert_int_not_equal(read_bundle(bad, d.g), 0);
		if (!strstr(vdt_last_msg, cases[i].msg))
			fail_msg("block %u: %s", cases[i].block, vdt_last_msg);
		free(bad);
		free(t);
	}
	damaged_close(&d);
}

static void test_newer_version(void **state)
{
	struct damaged d = damaged_open("ver.vdb");
	char *bad;

	(void)state;
	put_le32(d.s + 8, GROUP_BUNDLE_VERSION + 1);
	put_le32(d.s + 12, (uint32_t)XXH3_64bits(d.s, 12));
	bad = save("bad.vdb", d.s, d.len);
	assert_int_equal(read_bundle(bad, d.g), -EPROTO);
	assert_non_null(strstr(vdt_last_msg, "newer vdelta"));
	free(bad);
	damaged_close(&d);
}

/* Replace frame 0's stored bytes by z (zlen) and its sizes by stored /
 * content; the envelope's own checksum made right again. */
static char *with_frame(const uint8_t *s, size_t len, size_t at, size_t next, const void *z,
			size_t zlen, uint32_t content, size_t *out_len)
{
	uint8_t *t = malloc(len + zlen);
	char *p;

	memcpy(t, s, at + ENVELOPE);
	put_le32(t + at + 8, (uint32_t)zlen);
	put_le32(t + at + 12, content);
	put_le64(t + at + 24, XXH3_64bits(z, zlen));
	put_le64(t + at + 32, XXH3_64bits(t + at, 32));
	memcpy(t + at + ENVELOPE, z, zlen);
	memcpy(t + at + ENVELOPE + zlen, s + next, len - next);
	*out_len = at + ENVELOPE + zlen + len - next;
	p = save("bomb.vdb", t, *out_len);
	free(t);
	return p;
}

static void test_bomb(void **state)
{
	struct damaged d = damaged_open("bomb0.vdb");
	char *bad;
	size_t at[64], zcap = ZSTD_compressBound(64u << 20), zlen, n;
	uint8_t *zeros = calloc(1, 64u << 20), *z = malloc(zcap);

	(void)state;
	blocks(d.s, d.len, at, 64);
	zlen = ZSTD_compress(z, zcap, zeros, 64u << 20, 19);
	assert_false(ZSTD_isError(zlen));
	/* 64 MiB of zeros in a frame whose envelope says 4 MiB */
	bad = with_frame(d.s, d.len, at[3], at[4], z, zlen, GROUP_BUNDLE_FRAME_MAX, &n);
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	assert_non_null(strstr(vdt_last_msg, "declares"));
	assert_non_null(strstr(vdt_last_msg, "frame 0"));
	free(bad);
	/* an envelope claiming the 64 MiB: over what a frame may hold */
	bad = with_frame(d.s, d.len, at[3], at[4], z, zlen, 64u << 20, &n);
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	assert_non_null(strstr(vdt_last_msg, "at most"));
	free(bad);
	/* a frame without a declared size */
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 3);
	zlen = ZSTD_compress2(cc, z, zcap, zeros, 4096);
	ZSTD_freeCCtx(cc);
	bad = with_frame(d.s, d.len, at[3], at[4], z, zlen, 4096, &n);
	assert_int_not_equal(read_bundle(bad, d.g), 0);
	free(bad);
	free(zeros);
	free(z);
	damaged_close(&d);
}

/* Layer headers the reader must refuse (the writer writes what it is given). */
static void test_hostile_headers(void **state)
{
	static const char *const names[] = { "../x.vmdk", ".hidden.vmdk", "a\"b.vmdk",
					     "noext", "a/b.vmdk" };
	struct run_log *g = calloc(1, sizeof *g);

	(void)state;
	for (unsigned k = 0; k < 9; k++) {
		struct group_bundle_info *b = info();
		struct group_bundle_writer *wr;
		char *path = vdt_join(dir, "hostile.vdb");
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (k < 5) {
			free(b->layers[1].name);
			b->layers[1].name = strdup(names[k]);
		} else if (k == 5)
			b->layers[1].kind = VMDK_STREAM_OPTIMIZED;
		else if (k == 6)
			b->layers[0].parent = 1; /* a need that is not there */
		else if (k == 7)
			b->layers[1].capacity = CAP * 2;
		else
			b->layers[1].parent_cid = 0x999;
		assert_int_equal(group_bundle_writer_open(fd, 1, 0, &wr), 0);
		assert_int_equal(group_bundle_write_head(wr, b), 0);
		assert_int_equal(group_bundle_write_end(wr), 0);
		group_bundle_writer_free(wr);
		group_bundle_info_free(b);
		close(fd);
		assert_int_equal(read_bundle(path, g), -VD_EBADDATA);
		assert_non_null(strstr(vdt_last_msg, "layer header"));
		free(path);
	}
	free(g);
}

static int setup(void **state)
{
	static const char txt[] = "linked clones share a base; a bundle moves what is unique. ";
	uint64_t seed = 42;

	(void)state;
	vd_log_set(vdt_log, NULL);
	dir = vdt_mkdtemp("bundle");
	pattern = malloc(CAP);
	if (!dir || !pattern)
		return -1;
	for (size_t i = 0; i < CAP; i++) /* compressible, not only repeats */
		pattern[i] = (uint8_t)txt[i % (sizeof txt - 1)];
	for (size_t k = 0; k < CAP / 8192; k++)
		pattern[vdt_below(&seed, CAP)] = (uint8_t)vdt_rand(&seed);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	vdt_rmtree(dir);
	free(dir);
	free(pattern);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_bit_flips),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_wrong_tag),
		cmocka_unit_test(test_newer_version),
		cmocka_unit_test(test_bomb),
		cmocka_unit_test(test_hostile_headers),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
