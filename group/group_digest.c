/* group — a layer's content digest and the sidecar that remembers it
 * (layer 3).
 *
 * Owns: LAYER GROUP_DIGEST_SUFFIX, the digest of what a frozen layer's chain
 * reads (chain_digest: XXH3-128, what `vdelta digest` prints), so that
 * pack names its needs, and unpack recognises them, without reading a
 * multi-GiB base every time.  Text, one key=value a line:
 *     version=1
 *     digest=HEX (32 digits, canonical)
 *     layer=CID                       every layer of the chain, top first,
 *     file=DEV:INO:SIZE:MTIME:CTIME   each followed by its files (times in ns)
 *     checksum=X                      XXH3-64 of every byte before this line
 * The part from layer= on is the KEY.
 *
 * When it holds: the sidecar's text is exactly what this file writes now
 * for its digest and the chain's key of now (and so its checksum holds).
 * Why that is enough:
 *  D1. a frozen layer is never written by vdelta (chain.h: parents open
 *      read-only, a frozen top refuses a writer), and its parents are
 *      frozen or read-only too; pack and unpack hold a reader's lock on it
 *      while they rely on the digest, so no writer that honours locks
 *      (vdelta, qemu) changes it meanwhile;
 *  D2. any other change still changes the key: writing a file sets its
 *      mtime and ctime (ctime cannot be set back from user space), a
 *      replaced or restored file has another inode (or device, in a copied
 *      folder), a truncated or grown one another size, a layer re-pointed
 *      or rewritten another CID, a chain re-pointed other layers;
 *  D3. a change within the timestamps' granularity of the moment the key
 *      was taken could leave them equal, so the sidecar is written only
 *      when every time in the key is RACY_SECONDS older than now (git's
 *      "racy" rule), and only when the key read before the digest was
 *      computed is the key read after it (nothing changed meanwhile);
 *  D4. it is written durably (common.h W1-W2): a crash leaves none, the
 *      old or the new one, and a torn or edited one fails its checksum.
 * Any key differing, the checksum failing, or no sidecar: the digest is
 * computed from the chain.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <xxhash.h>

#include "group_int.h"

#define RACY_SECONDS 2
#define MAX_SIDECAR (256u << 10)

static uint64_t ns_of(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000u + (uint64_t)t->tv_nsec;
}

/* The key of the open chain c; *racy: some time in it is too recent. */
static int render_key(struct chain *c, FILE *m, bool *racy)
{
	struct timespec t;
	struct stat st;
	uint64_t now = clock_gettime(CLOCK_REALTIME, &t) ? 0 : ns_of(&t); /* 0: all racy */

	for (unsigned i = 0; i < chain_depth(c); i++) {
		struct vmdk_disk *d = chain_layer(c, i);
		fprintf(m, "layer=%08x\n", vmdk_cid(d));
		for (unsigned k = 0; k < vmdk_nr_files(d); k++) {
			if (stat(vmdk_file_path(d, k), &st))
				return -errno;
			fprintf(m, "file=%llu:%llu:%llu:%llu:%llu\n",
				(unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
				(unsigned long long)st.st_size,
				(unsigned long long)ns_of(&st.st_mtim),
				(unsigned long long)ns_of(&st.st_ctim));
			*racy |= ns_of(&st.st_mtim) + RACY_SECONDS * 1000000000ull > now ||
				 ns_of(&st.st_ctim) + RACY_SECONDS * 1000000000ull > now;
		}
	}
	return 0;
}

/* The chain's key now (malloc'd text). */
static int key_text(struct chain *c, char **key, bool *racy)
{
	size_t len = 0;
	FILE *m = open_memstream(key, &len);
	int err;

	if (!m)
		return -ENOMEM;
	err = render_key(c, m, racy);
	fclose(m);
	if (err) {
		free(*key);
		*key = NULL;
	}
	return err ? err : *key ? 0 : -ENOMEM;
}

/* The sidecar's whole text for digest d and key. */
static char *render(const uint8_t d[16], const char *key)
{
	char hex[33], *t = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&t, &len);

	if (!m)
		return NULL;
	chain_digest_hex(d, hex);
	fprintf(m, "# vdelta: the digest of this layer's content (vdelta digest), valid\n"
		   "# while every key below is (its chain's files unchanged)\n"
		   "version=1\ndigest=%s\n%s", hex, key);
	fflush(m);
	fprintf(m, "checksum=%016llx\n", (unsigned long long)XXH3_64bits(t, len));
	fclose(m);
	return t;
}

static char *sidecar_path(const char *layer)
{
	char *p;

	return asprintf(&p, "%s%s", layer, GROUP_DIGEST_SUFFIX) < 0 ? NULL : p;
}

static int unhex(const char *s, uint8_t out[16])
{
	for (int i = 0; i < 16; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -VD_EBADDATA;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* The digest the sidecar holds, if it holds for key (see the top). */
static bool from_sidecar(const char *side, const char *key, uint8_t out[16])
{
	char *text = NULL, *want = NULL, *d;
	bool ok = false;

	if (vd_read_small(side, MAX_SIDECAR, &text))
		return false;
	d = strstr(text, "\ndigest=");
	if (d && strlen(d) > 8 + 32 && !unhex(d + 8, out) && (want = render(out, key)))
		ok = !strcmp(text, want);
	free(text);
	free(want);
	return ok;
}

int group_digest_get(const char *path, const struct vd_io *io, struct group_digest *d)
{
	struct chain *c = NULL;
	char *side = sidecar_path(path);
	bool racy = false;
	int err = side ? chain_open(path, CHAIN_OPEN_RDONLY, io, &c) : -ENOMEM;

	*d = (struct group_digest){0};
	if (!err)
		err = key_text(c, &d->key, &racy);
	if (!err)
		d->cached = from_sidecar(side, d->key, d->digest);
	if (!err && !d->cached)
		err = chain_digest(c, d->digest);
	if (err && c)
		vd_err("%s: cannot compute its digest: %s", path, strerror(-err));
	chain_close(c);
	free(side);
	if (err)
		group_digest_clear(d);
	return err;
}

/* D3: the key now is the key the digest was taken with, none too recent;
 * the layer is frozen.  The caller holds its locks (the open takes none). */
void group_digest_record(const char *path, const struct group_digest *d,
			 const struct vd_io *io)
{
	struct chain *c = NULL;
	char *side = sidecar_path(path), *now = NULL, *text = NULL;
	bool racy = false;

	vd_log_mute(true);
	if (d->key && !d->cached && side &&
	    !chain_open(path, CHAIN_OPEN_RDONLY | CHAIN_OPEN_NOLOCK, io, &c) &&
	    chain_is_frozen(chain_layer(c, 0)) && !key_text(c, &now, &racy) && !racy &&
	    !strcmp(now, d->key) && (text = render(d->digest, now)) &&
	    vd_write_durable(io ? io : vd_io_posix(), side, text, strlen(text))) /* D4 */
		vd_log(VD_LOG_INFO, "%s: cannot record the digest (not needed)", side);
	vd_log_mute(false);
	chain_close(c);
	free(now);
	free(text);
	free(side);
}

void group_digest_clear(struct group_digest *d)
{
	free(d->key);
	d->key = NULL;
}
