/* chain — digest of a disk's logical content (layer 2).
 *
 * Owns: XXH3-128 over every byte of the virtual disk in order, the same
 * value `xxhsum -H2` prints for a raw export.  Runs that read as zeros
 * (unallocated everywhere, zeroed grains) are fed from a static zero buffer
 * without any read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>
#ifdef __x86_64__
#include <xxh_x86dispatch.h> /* XXH3 on AVX2 or AVX-512 where the CPU has them */
#endif

#include "chain_int.h"

#define DIGEST_BUF (1u << 20) /* bytes read per call */

static const uint8_t zeros[DIGEST_BUF];

static int hash_zeros(XXH3_state_t *st, uint64_t len)
{
	while (len) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)DIGEST_BUF);
		if (XXH3_128bits_update(st, zeros, n) != XXH_OK)
			return -EIO;
		len -= n;
	}
	return 0;
}

static int hash_data(struct chain *c, XXH3_state_t *st, uint8_t *buf,
		     uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = (size_t)VD_MIN(len, (uint64_t)DIGEST_BUF);
		int err = chain_pread(c, buf, n, off);
		if (err)
			return err;
		if (XXH3_128bits_update(st, buf, n) != XXH_OK)
			return -EIO;
		off += n;
		len -= n;
	}
	return 0;
}

static int hash_all(struct chain *c, XXH3_state_t *st, uint8_t *buf)
{
	struct chain_run r;
	uint64_t off;
	int err = 0;

	for (off = 0; !err && off < c->capacity; off += r.len) {
		err = chain_status(c, off, c->capacity - off, &r);
		if (err)
			break;
		if (r.kind == CHAIN_DATA)
			err = hash_data(c, st, buf, off, r.len);
		else
			err = hash_zeros(st, r.len);
	}
	return err;
}

int chain_digest(struct chain *c, uint8_t out[16])
{
	XXH3_state_t *st = XXH3_createState();
	uint8_t *buf = malloc(DIGEST_BUF);
	int err = -ENOMEM;

	if (st && buf && XXH3_128bits_reset(st) == XXH_OK) {
		err = hash_all(c, st, buf);
		if (!err) {
			XXH128_canonical_t canon;
			XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
			memcpy(out, canon.digest, 16);
		}
	}
	free(buf);
	XXH3_freeState(st);
	return err;
}

void chain_digest_hex(const uint8_t d[16], char hex[33])
{
	for (int i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
}
