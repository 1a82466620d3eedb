/* tests — the chain layer (chain/): reads, copy-on-write writes, the merged
 * map, locking, link validation, concurrency and crash safety, with
 * qemu-img / qemu-io as the oracle (skipped when they are not installed).
 *
 * - chains of depth 1, 8, 32 built by `qemu-img create -b -F vmdk` and
 *   qemu-io random writes (sub-grain, cross-grain, zero) read byte-exact
 *   against `qemu-img convert -O raw`, and the digest equals XXH3-128 of
 *   that raw export;
 * - the same random writes applied through the chain to a qemu-made top
 *   and by qemu-io to a copy: `qemu-img compare` equal, `qemu-img check`
 *   clean, parents' bytes unchanged;
 * - writer and reader threads on overlapping ranges end byte-exact against
 *   a model (and against qemu's reading of the result);
 * - every prefix of the writes of a copy-on-write (fault-injecting io,
 *   unsynced writes dropped) reopens with each grain old or new and
 *   vmdk_check clean;
 * - CID mismatch, missing parent, cycle, capacity mismatch, frozen top and
 *   lock conflicts (with qemu-io and between two writers) give the
 *   documented errors and messages.
 *
 * The base is 16 MiB (a 64 KiB-grain chain) so depth 32 stays quick. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/wait.h>
#include <xxhash.h>

#include "vdtest.h"
#include "chain.h"
#include "group.h"

#define CAP_DEFAULT (16ull << 20)
static uint64_t CAP = CAP_DEFAULT; /* capacity of the disks of the running test */
#define GRAIN 65536ull

static bool have_qemu;

#define sh vdt_sh

/* ---- random writes, one list for qemu-io and the library ------------------- */

struct wr {
	uint64_t off, len;
	int pattern; /* -1: zeros */
};

/* n writes of the kinds the issue names: sub-grain, cross-grain, whole
 * grains, unaligned, zero (whole and partial grains). */
static struct wr *gen_writes(uint64_t *seed, unsigned n)
{
	struct wr *w = calloc(n, sizeof *w);

	for (unsigned i = 0; i < n; i++) {
		uint64_t g = vdt_below(seed, CAP / GRAIN - 1);
		switch (vdt_below(seed, 6)) {
		case 0: /* inside a grain */
			w[i].off = g * GRAIN + vdt_below(seed, 120) * 512;
			w[i].len = (vdt_below(seed, 8) + 1) * 512;
			break;
		case 1: /* across a grain boundary */
			w[i].off = (g + 1) * GRAIN - (vdt_below(seed, 100) + 1) * 512;
			w[i].len = (vdt_below(seed, 300) + 2) * 512;
			break;
		case 2: /* whole grains */
			w[i].off = g * GRAIN;
			w[i].len = (vdt_below(seed, 3) + 1) * GRAIN;
			break;
		case 3: /* unaligned bytes */
			w[i].off = vdt_below(seed, CAP - 10000);
			w[i].len = vdt_below(seed, 9000) + 1;
			break;
		default: /* zeros, whole or partial grain, sector aligned */
			w[i].off = g * GRAIN + vdt_below(seed, 2) * vdt_below(seed, 64) * 512;
			w[i].len = (vdt_below(seed, 2) ? GRAIN : (vdt_below(seed, 64) + 1) * 512);
			w[i].pattern = -1;
			continue;
		}
		w[i].pattern = (int)vdt_below(seed, 254) + 1;
	}
	for (unsigned i = 0; i < n; i++)
		if (w[i].off + w[i].len > CAP)
			w[i].len = CAP - w[i].off;
	return w;
}

/* Apply writes with qemu-io, 100 commands per process. */
static int qemu_apply(const char *img, const struct wr *w, unsigned n)
{
	for (unsigned i = 0; i < n; i += 100) {
		char *cmd = NULL, *tmp;
		size_t len = 0;
		FILE *f = open_memstream(&cmd, &len);
		int r;
		fprintf(f, "qemu-io -f vmdk");
		for (unsigned k = i; k < n && k < i + 100; k++) {
			if (w[k].pattern < 0)
				fprintf(f, " -c 'write -z %llu %llu'",
					(unsigned long long)w[k].off,
					(unsigned long long)w[k].len);
			else
				fprintf(f, " -c 'write -P %d %llu %llu'", w[k].pattern,
					(unsigned long long)w[k].off,
					(unsigned long long)w[k].len);
		}
		fprintf(f, " '%s' >/dev/null", img);
		fclose(f);
		tmp = cmd;
		r = system(tmp);
		free(cmd);
		if (r)
			return -1;
	}
	return 0;
}

static int chain_apply(struct chain *c, const struct wr *w, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		int err;
		if (w[i].pattern < 0) {
			err = chain_pwrite_zeroes(c, w[i].len, w[i].off);
		} else {
			uint8_t *buf = malloc(w[i].len);
			memset(buf, w[i].pattern, w[i].len);
			err = chain_pwrite(c, buf, w[i].len, w[i].off);
			free(buf);
		}
		if (err)
			return err;
	}
	return 0;
}

/* ---- chains made by qemu ----------------------------------------------------- */

/* dir/l0.vmdk (base) .. dir/l<depth-1>.vmdk (top), each with nw random
 * writes by qemu-io.  Returns the top's path. */
static char *qemu_chain(const char *dir, unsigned depth, unsigned nw, uint64_t *seed)
{
	char *top = NULL;

	for (unsigned i = 0; i < depth; i++) {
		struct wr *w = gen_writes(seed, nw);
		int r = i == 0 ? sh("cd %s && qemu-img create -q -f vmdk l0.vmdk %llu", dir,
				    (unsigned long long)CAP)
			       : sh("cd %s && qemu-img create -q -f vmdk -b l%u.vmdk -F vmdk "
				    "l%u.vmdk", dir, i - 1, i);
		free(top);
		asprintf(&top, "%s/l%u.vmdk", dir, i);
		assert_int_equal(r, 0);
		assert_int_equal(qemu_apply(top, w, nw), 0);
		free(w);
	}
	return top;
}

/* The raw content qemu reads for img. */
static uint8_t *qemu_raw(const char *img, const char *dir)
{
	char *raw;
	uint8_t *buf;
	size_t len;

	asprintf(&raw, "%s/qemu.raw", dir);
	unlink(raw);
	assert_int_equal(sh("qemu-img convert -U -f vmdk -O raw '%s' '%s'", img, raw), 0);
	buf = vdt_slurp(raw, &len);
	assert_non_null(buf);
	assert_int_equal(len, CAP);
	unlink(raw);
	free(raw);
	return buf;
}

/* Read the whole chain in pieces of varying size, compare with ref. */
static void check_reads(struct chain *c, const uint8_t *ref, uint64_t *seed)
{
	uint8_t *buf = malloc(CAP);
	uint64_t off = 0;

	while (off < CAP) {
		uint64_t n = vdt_below(seed, 3 * GRAIN) + 1;
		n = VD_MIN(n, CAP - off);
		assert_int_equal(chain_pread(c, buf + off, n, off), 0);
		off += n;
	}
	assert_memory_equal(buf, ref, CAP);
	free(buf);
}

static void check_digest(struct chain *c, const uint8_t *ref)
{
	XXH128_canonical_t canon;
	uint8_t d[16];

	XXH128_canonicalFromHash(&canon, XXH3_128bits(ref, CAP));
	assert_int_equal(chain_digest(c, d), 0);
	assert_memory_equal(d, canon.digest, 16);
}

static void test_read_depth(unsigned depth)
{
	char *dir = vdt_mkdtemp("chain-read"), *top;
	uint64_t seed = 0x1234 + depth;
	struct chain *c;
	uint8_t *ref;

	if (!have_qemu)
		skip();
	top = qemu_chain(dir, depth, depth > 8 ? 12 : 40, &seed);
	ref = qemu_raw(top, dir);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c), 0);
	assert_int_equal(chain_depth(c), depth);
	check_reads(c, ref, &seed);
	check_reads(c, ref, &seed); /* map built: the fast path */
	check_digest(c, ref);
	assert_int_equal(chain_close(c), 0);
	free(ref);
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_read_depth1(void **state) { test_read_depth(1); }
static void test_read_depth8(void **state) { test_read_depth(8); }
static void test_read_depth32(void **state) { test_read_depth(32); }

/* ---- writes through the library into a qemu-made top ----------------------------- */

static void test_write_qemu_top(void **state)
{
	char *dir = vdt_mkdtemp("chain-write"), *ref_dir, *top, *ref_top, *files[4];
	uint8_t *before[4], *after, *ref;
	size_t len[4], alen;
	uint64_t seed = 77;
	struct wr *w;
	struct chain *c;

	if (!have_qemu)
		skip();
	top = qemu_chain(dir, 4, 30, &seed);
	asprintf(&ref_dir, "%s/ref", dir);
	assert_int_equal(sh("mkdir %s && cp %s/*.vmdk %s/", ref_dir, dir, ref_dir), 0);
	asprintf(&ref_top, "%s/l3.vmdk", ref_dir);
	for (int i = 0; i < 3; i++) {
		asprintf(&files[i], "%s/l%d.vmdk", dir, i);
		before[i] = vdt_slurp(files[i], &len[i]);
	}
	w = gen_writes(&seed, 300);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(chain_apply(c, w, 300), 0);
	ref = malloc(CAP);
	assert_int_equal(qemu_apply(ref_top, w, 300), 0);
	free(ref);
	ref = qemu_raw(ref_top, dir);
	check_reads(c, ref, &seed); /* our reads of our writes, while open */
	assert_int_equal(chain_close(c), 0);
	assert_int_equal(sh("qemu-img compare -q -f vmdk -F vmdk '%s' '%s'", top, ref_top), 0);
	assert_int_equal(sh("qemu-img check -q -f vmdk '%s'", top), 0);
	for (int i = 0; i < 3; i++) { /* parents untouched */
		after = vdt_slurp(files[i], &alen);
		assert_int_equal(alen, len[i]);
		assert_memory_equal(after, before[i], alen);
		free(after);
		free(before[i]);
		free(files[i]);
	}
	assert_int_equal(sh("vmdkinfo '%s' >/dev/null 2>&1 || ! command -v vmdkinfo "
			    ">/dev/null", top), 0);
	free(w);
	free(ref);
	free(top);
	free(ref_top);
	sh("rm -rf %s", dir);
	free(ref_dir);
	free(dir);
}

/* A delta made by group_create_child over a base of another kind (flat,
 * split sparse, stream) made by qemu-img convert from random raw content;
 * random writes through the chain vs qemu-io on a copy. */
static void test_write_over(const char *subformat)
{
	char *dir = vdt_mkdtemp("chain-over"), *base, *child, *ref_child;
	uint64_t seed = 4242;
	struct wr *w;
	struct chain *c;
	uint8_t *ref;

	if (!have_qemu)
		skip();
	assert_int_equal(sh("cd %s && head -c %llu /dev/urandom > src.raw && "
			    "qemu-io -f raw -c 'write -z 5M 3M' src.raw >/dev/null && "
			    "qemu-img convert -q -f raw -O vmdk -o subformat=%s src.raw base.vmdk",
			    dir, (unsigned long long)CAP, subformat), 0);
	asprintf(&base, "%s/base.vmdk", dir);
	asprintf(&child, "%s/child.vmdk", dir);
	assert_int_equal(group_create_child(base, child, false, NULL, NULL), 0);
	assert_int_equal(sh("mkdir %s/ref && cp %s/*.vmdk %s/ref/", dir, dir, dir), 0);
	asprintf(&ref_child, "%s/ref/child.vmdk", dir);
	w = gen_writes(&seed, 200);
	assert_int_equal(chain_open(child, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(chain_depth(c), 2);
	assert_int_equal(chain_apply(c, w, 200), 0);
	assert_int_equal(chain_close(c), 0);
	assert_int_equal(qemu_apply(ref_child, w, 200), 0);
	assert_int_equal(sh("qemu-img compare -q -f vmdk -F vmdk '%s' '%s'", child, ref_child),
			 0);
	assert_int_equal(sh("qemu-img check -q -f vmdk '%s'", child), 0);
	ref = qemu_raw(ref_child, dir);
	assert_int_equal(chain_open(child, CHAIN_OPEN_RDONLY, NULL, &c), 0);
	check_reads(c, ref, &seed);
	check_digest(c, ref);
	chain_close(c);
	free(ref);
	free(w);
	free(base);
	free(child);
	free(ref_child);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_over_flat(void **state) { test_write_over("monolithicFlat"); }
static void test_over_split(void **state) { test_write_over("twoGbMaxExtentSparse"); }
static void test_over_stream(void **state) { test_write_over("streamOptimized"); }

/* A sparse delta (ours) over a COWD disk with 512-byte grains (the shared
 * corpus): map units of the top's 64 KiB grains are split between layers
 * ("mixed") and read by walking the layers. */
static void test_mixed_grains(void **state)
{
	char *dir, *src = vdt_corpus_path("synthetic/cowd/test.vmdk"), *base, *child, *ref_child;
	uint64_t seed = 31;
	struct chain_run r;
	struct chain *c;
	uint8_t *ref;
	struct wr *w;

	if (!have_qemu || !src)
		skip();
	dir = vdt_mkdtemp("chain-mixed");
	CAP = 8ull << 20;
	assert_int_equal(sh("cp $(dirname %s)/test*.vmdk %s/ && chmod u+w %s/*", src, dir, dir),
			 0);
	asprintf(&base, "%s/test.vmdk", dir);
	asprintf(&child, "%s/child.vmdk", dir);
	/* hosted on purpose: over an ESXi delta the default kind is ESXi's */
	assert_int_equal(group_create_child(base, child, false,
						 &(struct group_child_opts){
							 .kind = VMDK_MONOLITHIC_SPARSE },
						 NULL), 0);
	/* the corpus' oracle: qemu's raw sha256 of the COWD disk */
	assert_int_equal(sh("qemu-img convert -U -O raw %s %s/c.raw && sha256sum %s/c.raw | "
			    "grep -q ^bb185be75d8fc08174caffe987b3c9e5435df91749cb469528a95577d639c8ed",
			    child, dir, dir), 0);
	ref = qemu_raw(child, dir);
	assert_int_equal(chain_open(child, CHAIN_OPEN_RDONLY, NULL, &c), 0);
	check_reads(c, ref, &seed);
	check_digest(c, ref);
	/* sector 3 of the COWD parent: data of layer 1 inside the top's grain 0 */
	assert_int_equal(chain_status(c, 0, CAP, &r), 0);
	assert_true(r.kind == CHAIN_UNALLOC && r.len == 1536);
	assert_int_equal(chain_status(c, 1536, CAP, &r), 0);
	assert_true(r.kind == CHAIN_DATA && r.layer == 1 && r.len == 512);
	chain_close(c);
	free(ref);
	/* copy-on-write of mixed units, against qemu-io on a copy */
	assert_int_equal(sh("mkdir %s/ref && cp %s/*.vmdk %s/ref/", dir, dir, dir), 0);
	asprintf(&ref_child, "%s/ref/child.vmdk", dir);
	w = gen_writes(&seed, 100);
	w[0] = (struct wr){ 1000, 100, 0x61 }; /* beside sector 3 */
	w[1] = (struct wr){ CAP - 70000, 1000, 0x62 }; /* the grain of sector 4095 */
	assert_int_equal(chain_open(child, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(chain_apply(c, w, 100), 0);
	assert_int_equal(chain_close(c), 0);
	assert_int_equal(qemu_apply(ref_child, w, 100), 0);
	assert_int_equal(sh("qemu-img compare -q -f vmdk -F vmdk '%s' '%s'", child, ref_child),
			 0);
	free(w);
	free(ref_child);
	free(base);
	free(child);
	free(src);
	CAP = CAP_DEFAULT;
	sh("rm -rf %s", dir);
	free(dir);
}

/* ---- concurrency ----------------------------------------------------------------- */

#define NR_WRITERS 3
#define NR_READERS 2
#define BLK 4096ull /* writers own blocks b % (NR_WRITERS + 1) == t */
#define OPS 1500

struct conc {
	struct chain *c;
	uint8_t *model;      /* what the disk must hold at the end */
	const uint8_t *init; /* content before the threads ran */
	int failed;
};

struct worker {
	struct conc *s;
	unsigned id;
};

static void *writer(void *arg)
{
	struct worker *wk = arg;
	uint64_t seed = 1000 + wk->id, nblk = CAP / BLK;
	uint8_t buf[BLK];

	for (unsigned i = 0; i < OPS && !wk->s->failed; i++) {
		uint64_t b = vdt_below(&seed, nblk / (NR_WRITERS + 1)) * (NR_WRITERS + 1) + wk->id;
		int err;
		if (vdt_below(&seed, 8) == 0) {
			err = chain_pwrite_zeroes(wk->s->c, BLK, b * BLK);
			memset(buf, 0, BLK);
		} else {
			for (unsigned k = 0; k < BLK; k++)
				buf[k] = (uint8_t)vdt_rand(&seed);
			err = chain_pwrite(wk->s->c, buf, BLK, b * BLK);
		}
		if (err)
			wk->s->failed = 1;
		memcpy(wk->s->model + b * BLK, buf, BLK);
	}
	return NULL;
}

/* Readers check the blocks nobody writes stay as they were: a torn
 * copy-on-write would clobber them. */
static void *reader(void *arg)
{
	struct worker *wk = arg;
	uint64_t seed = 2000 + wk->id;
	uint8_t *buf = malloc(4 * GRAIN);

	for (unsigned i = 0; i < OPS && !wk->s->failed; i++) {
		uint64_t off = vdt_below(&seed, CAP / BLK - 64) * BLK, len = 4 * GRAIN;
		if (chain_pread(wk->s->c, buf, len, off)) {
			wk->s->failed = 2;
			break;
		}
		for (uint64_t b = off / BLK; b < (off + len) / BLK; b++)
			if (b % (NR_WRITERS + 1) == NR_WRITERS &&
			    memcmp(buf + (b * BLK - off), wk->s->init + b * BLK, BLK))
				wk->s->failed = 3;
	}
	free(buf);
	return NULL;
}

/* Writers and readers at once on the chain whose top is `top`; the end
 * content equals the model and what qemu reads. */
static void run_concurrency(char *dir, char *top, uint64_t seed)
{
	pthread_t th[NR_WRITERS + NR_READERS];
	struct worker wk[NR_WRITERS + NR_READERS];
	struct conc s = {0};
	uint8_t *init, *end;

	init = qemu_raw(top, dir);
	s.init = init;
	s.model = malloc(CAP);
	memcpy(s.model, init, CAP);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &s.c), 0);
	for (unsigned i = 0; i < NR_WRITERS + NR_READERS; i++) {
		wk[i] = (struct worker){ &s, i < NR_WRITERS ? i : i - NR_WRITERS };
		pthread_create(&th[i], NULL, i < NR_WRITERS ? writer : reader, &wk[i]);
	}
	for (unsigned i = 0; i < NR_WRITERS + NR_READERS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(s.failed, 0);
	check_reads(s.c, s.model, &seed);
	assert_int_equal(chain_close(s.c), 0);
	end = qemu_raw(top, dir); /* qemu agrees */
	assert_memory_equal(end, s.model, CAP);
	assert_int_equal(sh("qemu-img check -q -f vmdk '%s'", top), 0);
	free(end);
	free(init);
	free(s.model);
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_concurrency(void **state)
{
	char *dir = vdt_mkdtemp("chain-conc");
	uint64_t seed = 5;

	if (!have_qemu)
		skip();
	run_concurrency(dir, qemu_chain(dir, 3, 60, &seed), seed);
}

/* The map's chunk is uniform (the base holds every unit, the top none):
 * concurrent writes split it (its entry array is materialised once, under
 * the map lock) while readers read through it. */
static void test_concurrency_uniform(void **state)
{
	char *dir = vdt_mkdtemp("chain-conc-u"), *top;

	if (!have_qemu)
		skip();
	assert_int_equal(sh("cd %s && qemu-img create -q -f vmdk l0.vmdk %llu && "
			    "qemu-io -f vmdk -c 'write -P 0x5a 0 %llu' l0.vmdk >/dev/null && "
			    "qemu-img create -q -f vmdk -b l0.vmdk -F vmdk l1.vmdk", dir,
			    (unsigned long long)CAP, (unsigned long long)CAP), 0);
	asprintf(&top, "%s/l1.vmdk", dir);
	run_concurrency(dir, top, 6);
}

/* ---- crash during copy-on-write ------------------------------------------------------ */

struct crash_ctx {
	char *dir, *src_top, *top;
	uint8_t *old, *new;
};

/* One partial write into a grain the top lacks, one across two such
 * grains, one zero write: all copy-on-write. */
static const struct wr crash_writes[] = {
	{ 3 * GRAIN + 1000, 3000, 0x41 },
	{ 7 * GRAIN - 2048, 8192, 0x42 },
	{ 11 * GRAIN + 4096, 8192, -1 },
};
#define NR_CRASH_WRITES (sizeof crash_writes / sizeof crash_writes[0])

/* Run the writes with a crash after `budget` io writes; true when the
 * budget was not exhausted (the operation completed). */
static bool crash_run(struct crash_ctx *x, long budget, int drop)
{
	struct vd_faultio *fi;
	struct chain *c;
	bool done;

	sh("rm -f %s/*.vmdk && cp %s/*.vmdk %s/", x->dir, x->src_top, x->dir);
	assert_int_equal(vd_faultio_create(budget, drop > 0, &fi), 0);
	if (drop == 2)
		vd_faultio_keep_newest(fi);
	if (chain_open(x->top, CHAIN_OPEN_RDWR, vd_faultio_io(fi), &c) == 0) {
		chain_apply(c, crash_writes, NR_CRASH_WRITES);
		chain_flush(c);
		chain_close(c);
	}
	done = !vd_faultio_crashed(fi);
	assert_int_equal(vd_faultio_crash(fi), 0);
	vd_faultio_destroy(fi);
	return done;
}

static void check_cb(void *opaque, bool is_error, const char *file, const char *msg)
{
	if (is_error)
		fprintf(stderr, "check: %s: %s\n", file, msg);
}

static void crash_verify(struct crash_ctx *x, long budget)
{
	struct chain *c;
	uint8_t *buf = malloc(CAP);
	struct vmdk_check_result res;

	assert_int_equal(chain_open(x->top, CHAIN_OPEN_RDONLY | CHAIN_OPEN_DIRTY_OK, NULL, &c), 0);
	assert_int_equal(chain_pread(c, buf, CAP, 0), 0);
	for (uint64_t g = 0; g < CAP / GRAIN; g++) {
		bool old = !memcmp(buf + g * GRAIN, x->old + g * GRAIN, GRAIN);
		bool new = !memcmp(buf + g * GRAIN, x->new + g * GRAIN, GRAIN);
		if (!old && !new)
			fail_msg("budget %ld: grain %llu is neither old nor new", budget,
				 (unsigned long long)g);
	}
	assert_int_equal(vmdk_check(chain_layer(c, 0), check_cb, NULL, &res), 0);
	if (res.errors)
		fail_msg("budget %ld: vmdk_check found %u errors", budget, res.errors);
	chain_close(c);
	/* qemu-img check: 0 clean, 3 leaked clusters only (allowed) */
	{
		int q = sh("qemu-img check -q -f vmdk '%s' >/dev/null 2>&1", x->top);
		if (q != 0 && q != 3)
			fail_msg("budget %ld: qemu-img check exit %d", budget, q);
	}
	free(buf);
}

static void test_crash_cow(void **state)
{
	struct crash_ctx x = { .dir = vdt_mkdtemp("chain-crash") };
	uint64_t seed = 9;
	char *src, *src_top;
	long budget;

	if (!have_qemu)
		skip();
	asprintf(&src, "%s/src", x.dir);
	mkdir(src, 0755);
	src_top = qemu_chain(src, 2, 0, &seed);
	/* the parent holds data everywhere the writes land */
	assert_int_equal(sh("qemu-io -f vmdk -c 'write -P 0x33 0 1M' %s/l0.vmdk >/dev/null",
			    src), 0);
	assert_int_equal(sh("cd %s && rm l1.vmdk && qemu-img create -q -f vmdk -b l0.vmdk "
			    "-F vmdk l1.vmdk", src), 0);
	x.src_top = src;
	asprintf(&x.top, "%s/l1.vmdk", x.dir);
	x.old = qemu_raw(src_top, x.dir);
	x.new = malloc(CAP);
	memcpy(x.new, x.old, CAP);
	for (unsigned i = 0; i < NR_CRASH_WRITES; i++)
		memset(x.new + crash_writes[i].off,
		       crash_writes[i].pattern < 0 ? 0 : crash_writes[i].pattern,
		       crash_writes[i].len);
	/* each prefix of the io writes persists whole (drop 0), or only what
	 * was synced survives (drop 1: a power loss), or that and the newest
	 * write (drop 2: a disk that wrote the last write of a sync window
	 * first, vmdk_gt.c [G1]-[G3]) */
	for (int drop = 0; drop < 3; drop++) {
		for (budget = 0; budget < 10000; budget++) {
			bool done = crash_run(&x, budget, drop);
			crash_verify(&x, budget);
			if (done)
				break;
		}
	}
	assert_true(budget > (long)NR_CRASH_WRITES); /* the writes did take io writes */
	if (getenv("VDT_VERBOSE"))
		fprintf(stderr, "crash: %ld io-write prefixes checked\n", budget + 1);
	/* the completed run holds the new content, by qemu's reading too */
	free(x.old);
	x.old = qemu_raw(x.top, x.dir);
	assert_memory_equal(x.old, x.new, CAP);
	free(x.old);
	free(x.new);
	free(x.top);
	free(src_top);
	free(src);
	sh("rm -rf %s", x.dir);
	free(x.dir);
}

/* ---- errors ----------------------------------------------------------------------------- */

static bool msg_has(const char *a, const char *b)
{
	return strstr(vdt_last_msg, a) && (!b || strstr(vdt_last_msg, b));
}

/* dir/l0 <- dir/l1 made by qemu; returns dir. */
static char *pair(void)
{
	char *dir = vdt_mkdtemp("chain-err");
	uint64_t seed = 3;

	free(qemu_chain(dir, 2, 4, &seed));
	return dir;
}

static void test_cid_mismatch(void **state)
{
	char *dir, *top, *cid;
	struct chain *c;

	if (!have_qemu)
		skip();
	dir = pair();
	asprintf(&top, "%s/l1.vmdk", dir);
	/* qemu writes the parent after the child was made: its CID changes */
	assert_int_equal(sh("qemu-io -f vmdk -c 'write 0 512' %s/l0.vmdk >/dev/null", dir), 0);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c), -ESTALE);
	assert_true(msg_has("l1.vmdk", "l0.vmdk"));
	assert_true(msg_has("parentCID=", "CID="));
	{ /* both CIDs, as the files say them */
		struct vmdk_disk *p, *t;
		char a[16], b[16];
		assert_int_equal(vmdk_open(top, VMDK_OPEN_RDONLY, NULL, &t), 0);
		snprintf(a, sizeof a, "%08x", vmdk_parent_cid(t));
		vmdk_close(t);
		asprintf(&cid, "%s/l0.vmdk", dir);
		assert_int_equal(vmdk_open(cid, VMDK_OPEN_RDONLY, NULL, &p), 0);
		snprintf(b, sizeof b, "%08x", vmdk_cid(p));
		vmdk_close(p);
		free(cid);
		assert_true(msg_has(a, b));
	}
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR | CHAIN_OPEN_IGNORE_CID, NULL, &c),
			 -EINVAL);
	assert_int_equal(chain_open(top, CHAIN_OPEN_IGNORE_CID, NULL, &c), 0);
	chain_close(c);
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_missing_parent(void **state)
{
	char *dir, *top;
	struct chain *c;

	if (!have_qemu)
		skip();
	dir = pair();
	asprintf(&top, "%s/l1.vmdk", dir);
	assert_int_equal(sh("mv %s/l0.vmdk %s/moved.vmdk", dir, dir), 0);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c), -ENOENT);
	assert_true(msg_has("l1.vmdk", "\"l0.vmdk\""));
	assert_true(msg_has("not found", NULL));
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

/* l0 gets l1 as its parent: l1 -> l0 -> l1 */
static void test_cycle(void **state)
{
	char *dir, *l0, *top;
	struct vmdk_disk *d, *t;
	struct chain *c;

	if (!have_qemu)
		skip();
	dir = pair();
	asprintf(&l0, "%s/l0.vmdk", dir);
	asprintf(&top, "%s/l1.vmdk", dir);
	assert_int_equal(vmdk_open(top, VMDK_OPEN_RDONLY, NULL, &t), 0);
	assert_int_equal(vmdk_open(l0, VMDK_OPEN_RDWR, NULL, &d), 0);
	assert_int_equal(vmdk_set_parent(d, vmdk_cid(t), "l1.vmdk"), 0);
	assert_int_equal(vmdk_desc_write(d), 0);
	vmdk_close(d);
	vmdk_close(t);
	/* the descriptor write does not change l0's CID, so only the loop is wrong */
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c), -ELOOP);
	assert_true(msg_has("loops", "l1.vmdk"));
	free(l0);
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_capacity_mismatch(void **state)
{
	char *dir = vdt_mkdtemp("chain-cap"), *top;
	struct chain *c;

	if (!have_qemu)
		skip();
	assert_int_equal(sh("cd %s && qemu-img create -q -f vmdk b.vmdk 8M && "
			    "qemu-img create -q -f vmdk -b b.vmdk -F vmdk t.vmdk 16M", dir), 0);
	asprintf(&top, "%s/t.vmdk", dir);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDONLY, NULL, &c), -VD_EBADDATA);
	assert_true(msg_has("capacity", "b.vmdk"));
	assert_true(msg_has("16777216", "8388608"));
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

/* CHAIN_MAX_DEPTH layers open; one more is refused (-ELOOP).  The layers
 * are copies of one qemu-made delta whose hint is rewritten in place
 * (same length); their CIDs do not link, so they open with IGNORE_CID. */
static void test_depth_bound(void **state)
{
	char *dir = vdt_mkdtemp("chain-deep"), *top;
	unsigned flags = CHAIN_OPEN_RDONLY | CHAIN_OPEN_IGNORE_CID;
	struct chain *c;

	if (!have_qemu)
		skip();
	assert_int_equal(sh("cd %s && qemu-img create -q -f vmdk l000.vmdk 1M && "
			    "qemu-img create -q -f vmdk -b l000.vmdk -F vmdk l001.vmdk && "
			    "for i in $(seq 2 %u); do p=$(printf l%%03d.vmdk $((i - 1))); "
			    "sed \"s/l000\\.vmdk/$p/\" l001.vmdk > $(printf l%%03d.vmdk $i) || "
			    "exit 1; done", dir, CHAIN_MAX_DEPTH), 0);
	vd_log_set(NULL, NULL); /* 127 CID warnings */
	asprintf(&top, "%s/l%03u.vmdk", dir, CHAIN_MAX_DEPTH - 1);
	assert_int_equal(chain_open(top, flags, NULL, &c), 0);
	assert_int_equal(chain_depth(c), CHAIN_MAX_DEPTH);
	chain_close(c);
	free(top);
	vd_log_set(vdt_log, NULL);
	asprintf(&top, "%s/l%03u.vmdk", dir, CHAIN_MAX_DEPTH);
	assert_int_equal(chain_open(top, flags, NULL, &c), -ELOOP);
	assert_true(msg_has("deeper than", "l000.vmdk"));
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_frozen(void **state)
{
	char *dir, *top, *snap;
	struct chain *c;
	uint8_t *before, *after;
	size_t blen, alen;

	if (!have_qemu)
		skip();
	dir = pair();
	asprintf(&top, "%s/l1.vmdk", dir);
	before = qemu_raw(top, dir);
	assert_int_equal(group_snapshot(top, NULL, NULL, &snap), 0);
	assert_non_null(strstr(snap, "l1-000001.vmdk"));
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), -EPERM);
	assert_true(msg_has("frozen", "l1.vmdk"));
	/* the snapshot reads the same, qemu agrees, and writes go to it */
	assert_int_equal(chain_open(snap, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_equal(chain_depth(c), 3);
	assert_int_equal(chain_pwrite(c, "x", 1, 12345), 0);
	assert_int_equal(chain_close(c), 0);
	after = qemu_raw(snap, dir);
	before[12345] = 'x';
	assert_memory_equal(after, before, CAP);
	free(after);
	/* and the frozen layer still reads as before (its CID is unchanged) */
	after = qemu_raw(top, dir);
	before[12345] = after[12345];
	assert_memory_equal(after, before, CAP);
	(void)blen;
	(void)alen;
	free(before);
	free(after);
	free(snap);
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

static void test_locks(void **state)
{
	char *dir, *top, *base;
	struct chain *c, *c2;
	pid_t pid;

	if (!have_qemu)
		skip();
	dir = pair();
	asprintf(&top, "%s/l1.vmdk", dir);
	asprintf(&base, "%s/l0.vmdk", dir);
	/* vdelta holds the chain: qemu can write neither the top nor the base */
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), 0);
	assert_int_not_equal(sh("qemu-io -f vmdk -c 'write 0 512' %s >/dev/null 2>&1", top), 0);
	assert_int_not_equal(sh("qemu-io -f vmdk -c 'write 0 512' %s >/dev/null 2>&1", base), 0);
	/* a second vdelta writer is refused; a reader of the base is fine...
	 * but not a reader of the top being written (it denies writes) */
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c2), -EAGAIN);
	assert_true(msg_has("lock", "l1.vmdk"));
	assert_true(msg_has("this process", NULL));
	assert_int_equal(chain_open(base, CHAIN_OPEN_RDONLY, NULL, &c2), 0);
	chain_close(c2);
	chain_close(c);
	/* qemu holds the top for writing: vdelta refuses it, naming qemu */
	pid = fork();
	if (pid == 0) {
		execlp("qemu-io", "qemu-io", "-f", "vmdk", "-c", "sleep 3000", top, (char *)NULL);
		_exit(127);
	}
	usleep(700 * 1000);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), -EAGAIN);
	assert_true(msg_has("qemu-io", "write"));
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK, NULL, &c), 0);
	chain_close(c);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	assert_int_equal(chain_open(top, CHAIN_OPEN_RDWR, NULL, &c), 0);
	chain_close(c);
	free(base);
	free(top);
	sh("rm -rf %s", dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_depth1),
		cmocka_unit_test(test_read_depth8),
		cmocka_unit_test(test_read_depth32),
		cmocka_unit_test(test_write_qemu_top),
		cmocka_unit_test(test_over_flat),
		cmocka_unit_test(test_over_split),
		cmocka_unit_test(test_over_stream),
		cmocka_unit_test(test_mixed_grains),
		cmocka_unit_test(test_concurrency),
		cmocka_unit_test(test_concurrency_uniform),
		cmocka_unit_test(test_crash_cow),
		cmocka_unit_test(test_cid_mismatch),
		cmocka_unit_test(test_missing_parent),
		cmocka_unit_test(test_cycle),
		cmocka_unit_test(test_capacity_mismatch),
		cmocka_unit_test(test_depth_bound),
		cmocka_unit_test(test_frozen),
		cmocka_unit_test(test_locks),
	};

	vd_log_set(vdt_log, NULL);
	if (getenv("VDT_FILTER"))
		cmocka_set_test_filter(getenv("VDT_FILTER"));
	have_qemu = vdt_have("qemu-img") && vdt_have("qemu-io");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
