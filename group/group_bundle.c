/* group — the bundle stream: writer and reader (layer 3).
 *
 * Owns: the byte layout of a bundle (docs/bundle.md): the preamble (magic,
 * version), the block envelope every part travels in (tag, sequence
 * number, stored and content length, XXH3-64 of the content and of the
 * bytes stored, XXH3-64 of the envelope itself), the frames (a run table and the runs' bytes,
 * zstd-compressed, at most GROUP_BUNDLE_FRAME_MAX bytes of content) and
 * the trailer (counts, XXH3-64 of every byte before it).  It knows no file
 * system: the writer writes to a file descriptor in order, the reader
 * reads one in order (a pipe is fine), each with buffers of a fixed size
 * whatever the stream says: a frame's content is decompressed into one
 * GROUP_BUNDLE_FRAME_MAX buffer only after its declared sizes were
 * bounded, so a frame claiming more (a decompression bomb) is refused,
 * never allocated.  The header's and layer headers' contents are
 * group_bundle_head.c's.
 *
 * The reader refuses, naming the block (frame index, byte offset in the
 * stream) and what is wrong: a damaged envelope, a tag out of place, a
 * sequence number that is not the next one (blocks reordered, dropped or
 * repeated), a content checksum that does not match, a run table that
 * breaks the layer's order or bounds, a layer whose runs do not add up to
 * what its header said, a trailer that disagrees, bytes after it, or a
 * stream that ends early.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef __x86_64__
#include <xxh_x86dispatch.h> /* XXH3 on AVX2 or AVX-512 where the CPU has them */
#endif
#include <zstd.h>

#include "group_int.h"

#define MAGIC "VDBUNDLE"
#define PREAMBLE 16u
#define ENVELOPE 40u
#define FRAME_HEAD 16u
#define RUN_ENTRY 24u
#define TABLE_ROOM (64u << 10) /* what the writer reserves for a run table */
#define WRITER_RUNS ((TABLE_ROOM - FRAME_HEAD) / RUN_ENTRY)
#define MAX_HEAD_BLOCK (512u << 10)
#define MAX_LAYER_BLOCK (16u << 10)
#define TRAILER 32u
#define WINDOW_LOG_MAX 23 /* frames hold at most 4 MiB: 2^22 would do */

/* 4 bytes in the stream; NUL-terminated here for the messages */
static const char tag_head[] = "HEAD", tag_layer[] = "LAYR", tag_frame[] = "FRAM",
		  tag_tail[] = "TAIL";

/* ---- writer ------------------------------------------------------------------------------------ */

struct group_bundle_writer {
	int fd;
	ZSTD_CCtx *cctx;
	XXH3_state_t *sum;   /* every byte written so far */
	uint32_t seq;        /* the next block's number */
	uint64_t frames, bytes, held;
	uint8_t *content;    /* FRAME_HEAD, table room, then data */
	uint8_t *out;
	size_t out_cap, data_len;
	unsigned layer, nr_runs;
	bool open_frame;
};

static int write_all(struct group_bundle_writer *w, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	XXH3_64bits_update(w->sum, buf, len);
	w->bytes += len;
	while (len) {
		ssize_t n = write(w->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int err = n < 0 ? -errno : -EIO;
			vd_err("bundle: write at byte %llu: %s", (unsigned long long)w->bytes,
			       strerror(-err));
			return err;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void envelope(uint8_t *h, const char tag[4], uint32_t seq, const void *stored,
		     size_t stored_len, const void *content, size_t len)
{
	memcpy(h, tag, 4);
	put_le32(h + 4, seq);
	put_le32(h + 8, (uint32_t)stored_len);
	put_le32(h + 12, (uint32_t)len);
	put_le64(h + 16, XXH3_64bits(content, len));
	put_le64(h + 24, XXH3_64bits(stored, stored_len));
	put_le64(h + 32, XXH3_64bits(h, 32));
}

static int put_block(struct group_bundle_writer *w, const char tag[4], const void *content,
		     size_t len, const void *stored, size_t stored_len)
{
	uint8_t h[ENVELOPE];
	int err;

	envelope(h, tag, w->seq++, stored, stored_len, content, len);
	err = write_all(w, h, sizeof h);
	return err ? err : write_all(w, stored, stored_len);
}

int group_bundle_writer_open(int fd, int level, unsigned threads,
			     struct group_bundle_writer **out)
{
	struct group_bundle_writer *w = calloc(1, sizeof *w);
	int err = -ENOMEM;

	if (!w)
		return err;
	w->fd = fd;
	w->out_cap = ZSTD_compressBound(GROUP_BUNDLE_FRAME_MAX);
	w->cctx = ZSTD_createCCtx();
	w->sum = XXH3_createState();
	w->content = malloc(GROUP_BUNDLE_FRAME_MAX);
	w->out = malloc(w->out_cap);
	if (w->cctx && w->sum && w->content && w->out && XXH3_64bits_reset(w->sum) == XXH_OK)
		err = 0;
	if (!err && (ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level)) ||
		     (threads && (ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_nbWorkers,
								       (int)threads)) ||
				  ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_jobSize,
								       1 << 20)))))) {
		vd_err("bundle: zstd refuses level %d with %u workers", level, threads);
		err = -EINVAL;
	}
	if (err) {
		group_bundle_writer_free(w);
		return err;
	}
	*out = w;
	return 0;
}

void group_bundle_writer_free(struct group_bundle_writer *w)
{
	if (!w)
		return;
	ZSTD_freeCCtx(w->cctx);
	XXH3_freeState(w->sum);
	free(w->content);
	free(w->out);
	free(w);
}

int group_bundle_write_head(struct group_bundle_writer *w, const struct group_bundle_info *b)
{
	uint8_t pre[PREAMBLE], *buf = NULL;
	size_t len = 0;
	int err;

	memcpy(pre, MAGIC, 8);
	put_le32(pre + 8, GROUP_BUNDLE_VERSION);
	put_le32(pre + 12, (uint32_t)XXH3_64bits(pre, 12));
	err = write_all(w, pre, sizeof pre);
	if (!err)
		err = group_bundle_head_encode(b, &buf, &len);
	if (!err)
		err = put_block(w, tag_head, buf, len, buf, len);
	free(buf);
	for (unsigned i = 0; !err && i < b->nr_layers; i++) {
		if (!(err = group_bundle_layer_encode(b, i, &buf, &len)))
			err = put_block(w, tag_layer, buf, len, buf, len);
		free(buf);
	}
	return err;
}

/* The pending frame: table moved up against its data, compressed, out. */
static int flush_frame(struct group_bundle_writer *w)
{
	size_t table = FRAME_HEAD + (size_t)w->nr_runs * RUN_ENTRY, n = table + w->data_len;
	size_t z;

	if (!w->open_frame)
		return 0;
	put_le32(w->content, w->layer);
	put_le32(w->content + 4, w->nr_runs);
	memset(w->content + 8, 0, 8);
	memmove(w->content + table, w->content + TABLE_ROOM, w->data_len);
	z = ZSTD_compress2(w->cctx, w->out, w->out_cap, w->content, n);
	if (ZSTD_isError(z)) {
		vd_err("bundle: frame %llu: zstd: %s", (unsigned long long)w->frames,
		       ZSTD_getErrorName(z));
		return -EIO;
	}
	w->frames++;
	w->open_frame = false;
	return put_block(w, tag_frame, w->content, n, w->out, z);
}

static int add_run(struct group_bundle_writer *w, unsigned layer, uint64_t off, uint64_t len,
		   enum group_bundle_kind kind, const void *data)
{
	bool bytes = kind == GROUP_RUN_DATA;
	uint8_t *e;
	int err = 0;

	if (w->open_frame && (layer != w->layer || w->nr_runs == WRITER_RUNS ||
			      (bytes && w->data_len + len > GROUP_BUNDLE_FRAME_MAX - TABLE_ROOM)))
		err = flush_frame(w);
	if (err)
		return err;
	if (!w->open_frame) {
		w->open_frame = true;
		w->layer = layer;
		w->nr_runs = 0;
		w->data_len = 0;
	}
	e = w->content + FRAME_HEAD + (size_t)w->nr_runs++ * RUN_ENTRY;
	put_le64(e, off);
	put_le64(e + 8, len);
	put_le32(e + 16, kind);
	put_le32(e + 20, 0);
	if (bytes)
		memcpy(w->content + TABLE_ROOM + w->data_len, data, len);
	w->data_len += bytes ? len : 0;
	w->held += len;
	return 0;
}

int group_bundle_write_run(struct group_bundle_writer *w, unsigned layer, uint64_t off,
			   uint64_t len, enum group_bundle_kind kind, const void *data,
			   uint64_t unit)
{
	const uint64_t max = GROUP_BUNDLE_FRAME_MAX - TABLE_ROOM;
	bool bytes = kind == GROUP_RUN_DATA;
	int err = 0;

	unit = unit && unit <= max ? unit : VD_SECTOR;
	while (!err && len) {
		uint64_t room = max - (w->open_frame && w->layer == layer ? w->data_len : 0);
		uint64_t n = !bytes ? len : VD_MIN(len, room / unit * unit);
		if (!n) { /* not one unit fits: the next frame */
			err = flush_frame(w);
			continue;
		}
		err = add_run(w, layer, off, n, kind, data);
		data = bytes ? (const uint8_t *)data + n : NULL;
		off += n;
		len -= n;
	}
	return err;
}

int group_bundle_write_end(struct group_bundle_writer *w)
{
	uint8_t t[TRAILER];
	int err = flush_frame(w);

	if (err)
		return err;
	put_le64(t, w->frames);
	put_le64(t + 8, w->seq);
	put_le64(t + 16, w->held);
	put_le64(t + 24, XXH3_64bits_digest(w->sum));
	return put_block(w, tag_tail, t, sizeof t, t, sizeof t);
}

void group_bundle_writer_stats(const struct group_bundle_writer *w, uint64_t *frames,
			       uint64_t *bytes)
{
	*frames = w->frames;
	*bytes = w->bytes;
}

/* ---- reader ------------------------------------------------------------------------------------ */

struct group_bundle_reader {
	int fd;
	char *name;
	XXH3_state_t *sum;
	uint64_t off;          /* bytes read */
	uint64_t at;           /* offset of the block being read */
	uint32_t seq;
	uint64_t frames, held;
	ZSTD_DCtx *dctx;
	uint8_t *in, *content;
	size_t in_cap;
	struct group_bundle_run *runs;
	const struct group_bundle_info *info;
	unsigned layer;        /* the layer whose runs come now */
	uint64_t layer_end, layer_held;
	bool trailer, ended;
};

/* "NAME: frame 3 (block 7 at byte 1234)" and the like, for messages. */
static void where(const struct group_bundle_reader *r, char *buf, size_t len)
{
	unsigned nl = r->info ? r->info->nr_layers : 0;

	if (r->trailer)
		snprintf(buf, len, "%s: trailer (block %u at byte %llu)", r->name, r->seq,
			 (unsigned long long)r->at);
	else if (r->seq == 0)
		snprintf(buf, len, "%s: header (block 0 at byte %llu)", r->name,
			 (unsigned long long)r->at);
	else if (r->seq <= nl)
		snprintf(buf, len, "%s: layer header %u (block %u at byte %llu)", r->name,
			 r->seq - 1, r->seq, (unsigned long long)r->at);
	else
		snprintf(buf, len, "%s: frame %llu (block %u at byte %llu)", r->name,
			 (unsigned long long)r->frames, r->seq, (unsigned long long)r->at);
}

static int refuse(const struct group_bundle_reader *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int refuse(const struct group_bundle_reader *r, const char *fmt, ...)
{
	char w[512], *msg = NULL;
	va_list ap;

	where(r, w, sizeof w);
	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	vd_err("%s: %s: refused, nothing written", w, msg ? msg : "");
	free(msg);
	return -VD_EBADDATA;
}

/* Exactly len bytes, or (at the end of the stream) a refusal. */
static int read_all(struct group_bundle_reader *r, void *buf, size_t len, const char *what)
{
	uint8_t *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(r->fd, p + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;
			vd_err("%s: read at byte %llu: %s", r->name,
			       (unsigned long long)(r->off + got), strerror(-err));
			return err;
		}
		if (!n)
			return refuse(r, "the stream ends at byte %llu, inside %s (truncated)",
				      (unsigned long long)(r->off + got), what);
		got += (size_t)n;
	}
	r->off += len;
	return 0;
}

int group_bundle_reader_open(int fd, const char *name, struct group_bundle_reader **out)
{
	struct group_bundle_reader *r = calloc(1, sizeof *r);
	int err = -ENOMEM;

	if (!r)
		return err;
	r->fd = fd;
	r->in_cap = ZSTD_compressBound(GROUP_BUNDLE_FRAME_MAX);
	r->name = strdup(name);
	r->sum = XXH3_createState();
	r->dctx = ZSTD_createDCtx();
	r->in = malloc(VD_MAX(r->in_cap, (size_t)MAX_HEAD_BLOCK));
	r->content = malloc(GROUP_BUNDLE_FRAME_MAX);
	r->runs = malloc(sizeof *r->runs * (GROUP_BUNDLE_FRAME_MAX / RUN_ENTRY));
	if (r->name && r->sum && r->dctx && r->in && r->content && r->runs &&
	    XXH3_64bits_reset(r->sum) == XXH_OK &&
	    !ZSTD_isError(ZSTD_DCtx_setParameter(r->dctx, ZSTD_d_windowLogMax, WINDOW_LOG_MAX)))
		err = 0;
	if (err) {
		group_bundle_reader_free(r);
		return err;
	}
	*out = r;
	return 0;
}

void group_bundle_reader_free(struct group_bundle_reader *r)
{
	if (!r)
		return;
	free(r->name);
	XXH3_freeState(r->sum);
	ZSTD_freeDCtx(r->dctx);
	free(r->in);
	free(r->content);
	free(r->runs);
	free(r);
}

static int read_preamble(struct group_bundle_reader *r)
{
	uint8_t p[PREAMBLE];
	int err = read_all(r, p, sizeof p, "the preamble");

	if (err)
		return err;
	XXH3_64bits_update(r->sum, p, sizeof p);
	if (memcmp(p, MAGIC, 8) || get_le32(p + 12) != (uint32_t)XXH3_64bits(p, 12)) {
		vd_err("%s: not a vdelta bundle (bytes 0-15: magic \"%s\" and its check "
		       "expected): refused, nothing written", r->name, MAGIC);
		return -VD_EBADDATA;
	}
	if (get_le32(p + 8) != GROUP_BUNDLE_VERSION) {
		vd_err("%s: bundle version %u; this vdelta reads version %u (a newer vdelta "
		       "wrote it): refused, nothing written", r->name, get_le32(p + 8),
		       GROUP_BUNDLE_VERSION);
		return -EPROTO;
	}
	return 0;
}

/* The envelope of the next block: checked, its tag one of want. */
static int read_envelope(struct group_bundle_reader *r, uint8_t *h, const char *const *want,
			 unsigned nr_want)
{
	bool known = false;
	int err;

	r->at = r->off;
	if ((err = read_all(r, h, ENVELOPE, "a block's envelope")))
		return err;
	if (get_le64(h + 32) != XXH3_64bits(h, 32))
		return refuse(r, "its envelope (bytes 0-39 of the block) is damaged: its "
			      "checksum does not match");
	for (unsigned i = 0; i < nr_want; i++)
		known |= !memcmp(h, want[i], 4);
	if (!known)
		return refuse(r, "tag \"%.4s\" where %s belongs", (const char *)h,
			      nr_want > 1 ? "a frame or the trailer" : want[0]);
	if (get_le32(h + 4) != r->seq)
		return refuse(r, "numbered block %u: blocks out of order, missing or repeated",
			      get_le32(h + 4));
	return 0;
}

/* A block's stored bytes, checked, and into the stream's checksum. */
static int read_stored(struct group_bundle_reader *r, const uint8_t *h, uint8_t *buf,
		       size_t len, const char *what)
{
	int err = read_all(r, buf, len, what);

	if (err)
		return err;
	XXH3_64bits_update(r->sum, h, ENVELOPE);
	XXH3_64bits_update(r->sum, buf, len);
	if (XXH3_64bits(buf, len) != get_le64(h + 24))
		return refuse(r, "its %zu stored bytes are damaged: their checksum does not "
			      "match", len);
	return 0;
}

/* The next block's content (not a frame): at most max bytes. */
static int read_plain(struct group_bundle_reader *r, const char *tag, size_t max, size_t *len)
{
	const char *want[] = { tag };
	uint8_t h[ENVELOPE];
	int err = read_envelope(r, h, want, 1);

	if (err)
		return err;
	*len = get_le32(h + 8);
	if (*len != get_le32(h + 12) || *len > max)
		return refuse(r, "stored length %zu, content length %u (equal, at most %zu)",
			      *len, get_le32(h + 12), max);
	if ((err = read_stored(r, h, r->in, *len, "a block")))
		return err;
	if (XXH3_64bits(r->in, *len) != get_le64(h + 16))
		return refuse(r, "its content does not match its checksum");
	return 0;
}

static int read_layers(struct group_bundle_reader *r, struct group_bundle_info *b)
{
	char w[512];
	size_t len;
	int err = 0;

	for (unsigned i = 0; !err && i < b->nr_layers; i++) {
		err = read_plain(r, tag_layer, MAX_LAYER_BLOCK, &len);
		where(r, w, sizeof w);
		if (!err)
			err = group_bundle_layer_decode(w, r->in, len, b, i);
		r->seq++;
	}
	if (!err) {
		snprintf(w, sizeof w, "%s: header", r->name);
		err = group_bundle_head_check(w, b);
	}
	return err;
}

int group_bundle_read_head(struct group_bundle_reader *r, struct group_bundle_info **out)
{
	struct group_bundle_info *b = calloc(1, sizeof *b);
	char w[512];
	size_t len;
	int err = b ? read_preamble(r) : -ENOMEM;

	if (!err)
		err = read_plain(r, tag_head, MAX_HEAD_BLOCK, &len);
	if (!err) {
		where(r, w, sizeof w);
		err = group_bundle_head_decode(w, r->in, len, b);
		r->seq++;
	}
	if (!err) {
		b->version = GROUP_BUNDLE_VERSION;
		r->info = b;
		err = read_layers(r, b);
	}
	if (err) {
		r->info = NULL;
		group_bundle_info_free(b);
		return err;
	}
	*out = b;
	return 0;
}

/* ---- frames ------------------------------------------------------------------------------------ */

/* The layer whose runs came so far is complete: every run its header said. */
static int layer_done(struct group_bundle_reader *r)
{
	const struct group_bundle_layer *l = &r->info->layers[r->layer];

	if (r->layer_held != l->held_bytes)
		return refuse(r, "layer %u (%s) ends with %llu bytes of runs of the %llu its "
			      "header says: frames are missing", r->layer, l->name,
			      (unsigned long long)r->layer_held,
			      (unsigned long long)l->held_bytes);
	r->layer++;
	r->layer_end = r->layer_held = 0;
	return 0;
}

/* A frame's runs now belong to layer (not an earlier one). */
static int enter_layer(struct group_bundle_reader *r, uint32_t layer)
{
	int err = 0;

	if (layer >= r->info->nr_layers || layer < r->layer)
		return refuse(r, "runs of layer %u where layer %u's or a later one's belong",
			      layer, r->layer);
	while (!err && r->layer < layer)
		err = layer_done(r);
	return err;
}

static int check_run(struct group_bundle_reader *r, const uint8_t *e, unsigned i,
		     struct group_bundle_run *run)
{
	const struct group_bundle_layer *l = &r->info->layers[r->layer];
	uint32_t kind = get_le32(e + 16);

	run->off = get_le64(e);
	run->len = get_le64(e + 8);
	run->kind = (enum group_bundle_kind)kind;
	if (kind < GROUP_RUN_DATA || kind > GROUP_RUN_PARENT || get_le32(e + 20))
		return refuse(r, "run %u: kind %u, flags %u (1 data, 2 zero or 3 parent; "
			      "flags 0)", i, kind, get_le32(e + 20));
	if (kind == GROUP_RUN_PARENT && l->parent_kind == GROUP_BUNDLE_BASE)
		return refuse(r, "run %u: bytes of the parent of layer %u, which has none", i,
			      r->layer);
	if (!run->len || run->off % VD_SECTOR || run->len % VD_SECTOR ||
	    run->off < r->layer_end || run->off > l->capacity ||
	    run->len > l->capacity - run->off)
		return refuse(r, "run %u: bytes %llu+%llu of layer %u (capacity %llu, runs "
			      "so far end at %llu): out of order, unaligned or out of bounds", i,
			      (unsigned long long)run->off, (unsigned long long)run->len,
			      r->layer, (unsigned long long)l->capacity,
			      (unsigned long long)r->layer_end);
	r->layer_end = run->off + run->len;
	r->layer_held += run->len;
	r->held += run->len;
	if (r->layer_held > l->held_bytes)
		return refuse(r, "layer %u's runs exceed the %llu bytes its header says",
			      r->layer, (unsigned long long)l->held_bytes);
	return 0;
}

/* The run table of the decompressed content of n bytes; the data after it. */
static int parse_frame(struct group_bundle_reader *r, size_t n, unsigned *nr)
{
	uint32_t count = n >= FRAME_HEAD ? get_le32(r->content + 4) : 0;
	uint64_t data = 0;
	size_t table;
	int err;

	if (!count || count > (n - FRAME_HEAD) / RUN_ENTRY || get_le64(r->content + 8))
		return refuse(r, "%u runs in %zu bytes of content, or reserved bytes set", count, n);
	if ((err = enter_layer(r, get_le32(r->content))))
		return err;
	table = FRAME_HEAD + (size_t)count * RUN_ENTRY;
	for (unsigned i = 0; !err && i < count; i++) {
		struct group_bundle_run *run = &r->runs[i];
		err = check_run(r, r->content + FRAME_HEAD + (size_t)i * RUN_ENTRY, i, run);
		run->data = run->kind == GROUP_RUN_DATA ? r->content + table + data : NULL;
		data += run->kind == GROUP_RUN_DATA ? run->len : 0;
		if (!err && data > n - table)
			err = refuse(r, "run %u: its bytes run past the frame's content", i);
	}
	if (!err && data != n - table)
		err = refuse(r, "%llu bytes after its runs' data", (unsigned long long)(n - table - data));
	*nr = count;
	return err;
}

/* Decompress the stored frame (stored bytes) into content (len bytes). */
static int inflate(struct group_bundle_reader *r, size_t stored, size_t len)
{
	unsigned long long fcs = ZSTD_getFrameContentSize(r->in, stored);
	size_t whole = ZSTD_findFrameCompressedSize(r->in, stored), got;

	if (ZSTD_isError(whole) || whole != stored)
		return refuse(r, "its %zu stored bytes are not one zstd frame", stored);
	if (fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs == ZSTD_CONTENTSIZE_ERROR)
		return refuse(r, "the zstd frame %s", fcs == ZSTD_CONTENTSIZE_ERROR
			      ? "has a damaged header" : "does not declare its size");
	if (fcs != len)
		return refuse(r, "the zstd frame declares %llu bytes, its envelope %zu", fcs, len);
	got = ZSTD_decompressDCtx(r->dctx, r->content, len, r->in, stored);
	if (ZSTD_isError(got) || got != len)
		return refuse(r, "zstd: %s", ZSTD_isError(got) ? ZSTD_getErrorName(got)
							    : "a short frame");
	return 0;
}

static int read_trailer(struct group_bundle_reader *r, const uint8_t *h, uint64_t sum)
{
	uint8_t t[TRAILER], extra;
	int err;

	if (get_le32(h + 8) != TRAILER || get_le32(h + 12) != TRAILER)
		return refuse(r, "a trailer of %u bytes (%u expected)", get_le32(h + 8), TRAILER);
	if ((err = read_all(r, t, sizeof t, "the trailer")))
		return err;
	if (XXH3_64bits(t, sizeof t) != get_le64(h + 16) || XXH3_64bits(t, sizeof t) != get_le64(h + 24))
		return refuse(r, "the trailer's content does not match its checksum");
	if (get_le64(t) != r->frames || get_le64(t + 8) != r->seq || get_le64(t + 16) != r->held)
		return refuse(r, "the trailer counts %llu frames, %llu blocks, %llu bytes of "
			      "runs; the stream held %llu, %u, %llu",
			      (unsigned long long)get_le64(t), (unsigned long long)get_le64(t + 8),
			      (unsigned long long)get_le64(t + 16), (unsigned long long)r->frames,
			      r->seq, (unsigned long long)r->held);
	if (get_le64(t + 24) != sum)
		return refuse(r, "the checksum of the whole stream does not match the trailer's");
	while (r->layer < r->info->nr_layers && !(err = layer_done(r)))
		;
	if (!err && read(r->fd, &extra, 1) != 0)
		return refuse(r, "bytes after the trailer (or a read error)");
	return err;
}

int group_bundle_read_frame(struct group_bundle_reader *r, unsigned *layer,
			    const struct group_bundle_run **runs, unsigned *nr)
{
	static const char *const want[] = { tag_frame, tag_tail };
	uint8_t h[ENVELOPE];
	size_t stored, len;
	int err = r->ended ? 1 : read_envelope(r, h, want, 2);

	if (err)
		return err;
	if (!memcmp(h, tag_tail, 4)) {
		uint64_t sum = XXH3_64bits_digest(r->sum);
		r->trailer = true;
		if (!(err = read_trailer(r, h, sum)))
			r->ended = true;
		return err ? err : 1;
	}
	stored = get_le32(h + 8);
	len = get_le32(h + 12);
	if (len > GROUP_BUNDLE_FRAME_MAX || len < FRAME_HEAD + RUN_ENTRY || stored > r->in_cap)
		return refuse(r, "content of %zu bytes stored in %zu (at most %u in %zu)", len,
			      stored, GROUP_BUNDLE_FRAME_MAX, r->in_cap);
	if ((err = read_stored(r, h, r->in, stored, "a frame")))
		return err;
	if ((err = inflate(r, stored, len)))
		return err;
	if (XXH3_64bits(r->content, len) != get_le64(h + 16))
		return refuse(r, "its content does not match its checksum");
	if ((err = parse_frame(r, len, nr)))
		return err;
	*layer = r->layer;
	*runs = r->runs;
	r->seq++;
	r->frames++;
	return 0;
}

void group_bundle_reader_stats(const struct group_bundle_reader *r, uint64_t *frames,
			       uint64_t *bytes)
{
	*frames = r->frames;
	*bytes = r->off;
}

/* ---- listing ------------------------------------------------------------------------------------ */

int group_bundle_list(int fd, const char *name, struct group_bundle_info **out)
{
	struct group_bundle_reader *r = NULL;
	int err = group_bundle_reader_open(fd, name, &r);

	if (!err)
		err = group_bundle_read_head(r, out);
	if (!err)
		(*out)->stream_bytes = r->off;
	group_bundle_reader_free(r);
	return err;
}
