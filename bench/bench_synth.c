/* bench — synthetic chains (bench layer, over chain.h and vmdk.h).
 *
 * Owns: building one chain DIR/synth-00.vmdk (the base) .. synth-NN.vmdk
 * with the library: a monolithicSparse base whose first fill percent of
 * grains hold data, then one delta per level (group_create_child freezes
 * its parent) into which churn percent of the grains, drawn at random,
 * are written whole.  Every grain written carries its layer and grain
 * number in its first bytes, the rest is seeded pseudo-random data, so
 * every layer's grains differ.  The chain of depth d is the one whose top
 * is synth-(d-1).  DIR/bench-synth.txt records the parameters, written
 * last: a later run with the same parameters reuses the chain.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_int.h"
#include "group.h"

#define STAMP_NAME "bench-synth.txt"
#define BASE_CHUNK (1u << 20)

struct synth {
	const struct bench_opts *o;
	const char *dir;
	uint64_t rng;
	uint8_t *buf; /* BASE_CHUNK or one grain, random bytes */
	size_t buf_len;
	uint64_t done, total; /* bytes written, to write */
};

static uint64_t synth_rand(struct synth *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

static void synth_progress(const struct synth *s, bool last)
{
	const struct bench_hooks *h = &s->o->hooks;

	if (h->build)
		h->build(h->arg, s->done, s->total, last);
}

static char *synth_path(const struct synth *s, unsigned layer)
{
	char name[32];

	snprintf(name, sizeof name, "synth-%02u.vmdk", layer);
	return vd_path_join(s->dir, name);
}

/* Mark each grain of buf (len bytes at virtual off) with layer and grain. */
static void synth_stamp(const struct synth *s, unsigned layer, uint64_t off, size_t len)
{
	for (size_t at = 0; at < len; at += s->o->grain) {
		put_le64(s->buf + at, (uint64_t)layer << 48 | (off + at) / s->o->grain);
		put_le64(s->buf + at + 8, s->o->seed);
	}
}

static int synth_write(struct synth *s, struct vmdk_disk *d, unsigned layer, size_t len,
		       uint64_t off)
{
	int err;

	synth_stamp(s, layer, off, len);
	err = vmdk_pwrite(d, s->buf, len, off);
	s->done += len;
	synth_progress(s, false);
	return err;
}

static int synth_base(struct synth *s, const char *path, uint64_t data_bytes)
{
	struct vmdk_create_opts co = { .capacity = s->o->size, .grain_size = s->o->grain,
				       .subformat = VMDK_MONOLITHIC_SPARSE,
				       .parent_cid = VMDK_CID_NONE };
	struct vmdk_disk *d;
	int err = vmdk_create(path, &co, NULL);

	if (err || (err = vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d)))
		return err;
	for (uint64_t off = 0; !err && off < data_bytes; off += BASE_CHUNK)
		err = synth_write(s, d, 0, (size_t)VD_MIN(BASE_CHUNK, data_bytes - off), off);
	return vmdk_close(d) ?: err;
}

static int synth_delta(struct synth *s, const char *parent, const char *path,
		       unsigned layer, uint64_t nr_grains)
{
	uint64_t grains = s->o->size / s->o->grain;
	struct vmdk_disk *d;
	int err = group_create_child(parent, path, false, NULL, NULL);

	if (err || (err = vmdk_open(path, VMDK_OPEN_RDWR, NULL, &d)))
		return err;
	for (uint64_t i = 0; !err && i < nr_grains; i++)
		err = synth_write(s, d, layer, s->o->grain,
				  synth_rand(s) % grains * s->o->grain);
	return vmdk_close(d) ?: err;
}

static void synth_params(const struct bench_opts *o, unsigned depth, char *buf, size_t len)
{
	snprintf(buf, len, "size=%" PRIu64 " grain=%" PRIu64 " churn=%u fill=%u seed=%" PRIu64
		 " depth=%u\n", o->size, o->grain, o->churn_pct, o->fill_pct, o->seed, depth);
}

/* 1: the stamp matches (reuse), 0: no stamp, -EEXIST: another chain. */
static int synth_stamp_check(const struct synth *s, const char *want)
{
	char *path = vd_path_join(s->dir, STAMP_NAME), have[256] = "";
	FILE *f = path ? fopen(path, "re") : NULL;
	int ret = 0;

	if (f) {
		ret = fgets(have, sizeof have, f) && !strcmp(have, want) ? 1 : -EEXIST;
		fclose(f);
	}
	if (ret == -EEXIST)
		vd_err("%s: holds a synthetic chain built with other parameters (%.*s); "
		       "use another --dir", path, (int)strcspn(have, "\n"), have);
	free(path);
	return ret;
}

static int synth_stamp_write(const struct synth *s, const char *params)
{
	char *path = vd_path_join(s->dir, STAMP_NAME);
	FILE *f = path ? fopen(path, "we") : NULL;
	int err = f && fputs(params, f) >= 0 ? 0 : -EIO;

	if (f && fclose(f))
		err = -EIO;
	if (err)
		vd_err("%s: %s", path ? path : s->dir, strerror(-err));
	free(path);
	return err;
}

static int synth_layers(struct synth *s, unsigned depth)
{
	uint64_t grains = s->o->size / s->o->grain;
	uint64_t base_bytes = grains * s->o->fill_pct / 100 * s->o->grain;
	uint64_t churn = VD_MAX(grains * s->o->churn_pct / 100, 1);
	char *prev = synth_path(s, 0), *cur = NULL;
	int err;

	s->total = base_bytes + (depth - 1) * churn * s->o->grain;
	synth_progress(s, false);
	err = prev ? synth_base(s, prev, base_bytes) : -ENOMEM;
	for (unsigned l = 1; !err && l < depth; l++) {
		if (!(cur = synth_path(s, l)))
			err = -ENOMEM;
		else
			err = synth_delta(s, prev, cur, l, churn);
		free(prev);
		prev = cur;
	}
	free(prev);
	synth_progress(s, true);
	return err;
}

int bench_synth_build(const struct bench_opts *o, const char *dir, char **tops)
{
	struct synth s = { .o = o, .dir = dir, .rng = (o->seed + 7) * 0x2545f4914f6cdd1dull };
	unsigned depth = 0;
	char params[256];
	int ret;

	for (unsigned i = 0; i < o->nr_depths; i++)
		depth = VD_MAX(depth, o->depths[i]);
	synth_params(o, depth, params, sizeof params);
	if (mkdir(dir, 0755) && errno != EEXIST) {
		vd_err("%s: %s", dir, strerror(errno));
		return -EIO;
	}
	ret = synth_stamp_check(&s, params);
	if (ret == 0) {
		s.buf_len = VD_MAX(BASE_CHUNK, o->grain);
		if (!(s.buf = malloc(s.buf_len)))
			return -ENOMEM;
		for (size_t i = 0; i + 8 <= s.buf_len; i += 8)
			put_le64(s.buf + i, synth_rand(&s));
		ret = synth_layers(&s, depth);
		free(s.buf);
		if (!ret)
			ret = synth_stamp_write(&s, params);
	}
	for (unsigned i = 0; ret >= 0 && i < o->nr_depths; i++)
		if (!(tops[i] = synth_path(&s, o->depths[i] - 1)))
			ret = -ENOMEM;
	return ret < 0 ? ret : 0;
}

void bench_synth_remove(const char *dir)
{
	DIR *dh = opendir(dir);
	struct dirent *e;

	if (!dh)
		return;
	while ((e = readdir(dh)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(dh), e->d_name, 0);
	closedir(dh);
	rmdir(dir);
}
