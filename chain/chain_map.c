/* chain — the merged grain map (layer 2).
 *
 * Owns: for each map unit, the topmost layer holding it (see MERGED MAP in
 * chain.h).  The map is an array of chunk pointers; a chunk of
 * CHAIN_MAP_CHUNK one-byte entries is built on first use from every
 * layer's block status, under map_lock, and published with a release
 * store so readers need no lock.  Entries change only by writes into the
 * top (to 0, the top) and are single bytes, read and written atomically.
 *
 * Invariants:
 * 1. An entry i < nr_layers means layers 0..i-1 hold nothing of the unit
 *    and layer i holds all of it (data or zeroed grains).
 * 2. CHAIN_E_NONE means no layer holds any of it; CHAIN_E_MIXED that some
 *    layer holds only part of it (reads walk the layers' block status).
 * 3. A chunk is built before any write into its units starts, so a write's
 *    entry update always lands on a built chunk and is never overwritten by
 *    a build that saw the layers before the write.
 */
#include <errno.h>
#include <stdlib.h>

#include "chain_int.h"

#define E_UNDECIDED 0xfdu
#define DEFAULT_UNIT (64u << 10) /* when the top has no grains (flat) */
#define MIN_UNIT 512u

int chain_map_init(struct chain *c)
{
	struct vmdk_disk *top = c->layers[0].disk;
	uint64_t g = vmdk_grain_size(top);

	c->capacity = vmdk_capacity(top);
	/* a unit must divide the top's grains so a write owns whole units */
	c->unit = g ? (g & -g) : DEFAULT_UNIT;
	if (c->unit < MIN_UNIT)
		c->unit = MIN_UNIT;
	for (c->unit_shift = 0; (1ull << c->unit_shift) < c->unit; c->unit_shift++)
		;
	c->nr_units = VD_DIV_ROUND_UP(c->capacity, c->unit);
	c->nr_chunks = VD_DIV_ROUND_UP(c->nr_units, CHAIN_MAP_CHUNK);
	c->chunks = calloc(c->nr_chunks ? c->nr_chunks : 1, sizeof *c->chunks);
	return c->chunks ? 0 : -ENOMEM;
}

void chain_map_destroy(struct chain *c)
{
	if (!c->chunks)
		return;
	for (uint64_t i = 0; i < c->nr_chunks; i++)
		free(c->chunks[i]);
	free(c->chunks);
	c->chunks = NULL;
}

/* OR into mask[] the block-status kinds layer d reports over each unit of
 * [off0, end); unit 0 of mask is the unit at off0. */
static int layer_mask(struct chain *c, struct vmdk_disk *d, uint64_t off0,
		      uint64_t end, uint8_t *mask)
{
	uint64_t off, run;
	enum vmdk_bs kind;
	int err;

	for (off = off0; off < end; off += run) {
		err = vmdk_block_status(d, off, end - off, &kind, &run);
		if (err)
			return err;
		if (run == 0 || run > end - off)
			return -EIO; /* the format layer broke its contract */
		for (uint64_t u = (off - off0) >> c->unit_shift;
		     u <= (off + run - 1 - off0) >> c->unit_shift; u++)
			mask[u] |= (uint8_t)(1u << kind);
	}
	return 0;
}

/* Fold one layer's mask into the entries still undecided. */
static unsigned decide(uint8_t *e, const uint8_t *mask, uint64_t n, unsigned layer)
{
	const uint8_t unalloc = 1u << VMDK_BS_UNALLOC;
	unsigned decided = 0;

	for (uint64_t u = 0; u < n; u++) {
		if (e[u] != E_UNDECIDED || mask[u] == unalloc)
			continue;
		e[u] = (mask[u] & unalloc) ? CHAIN_E_MIXED : (uint8_t)layer;
		decided++;
	}
	return decided;
}

/* Compute the n entries of units [u0, u0+n) into e. */
static int compute(struct chain *c, uint64_t u0, uint64_t n, uint8_t *e)
{
	uint64_t off0 = u0 << c->unit_shift;
	uint64_t end = VD_MIN(c->capacity, (u0 + n) << c->unit_shift);
	uint8_t *mask = malloc(n);
	uint64_t left = n;
	int err = 0;

	if (!mask)
		return -ENOMEM;
	memset(e, E_UNDECIDED, n);
	for (unsigned i = 0; i < c->nr_layers && left && !err; i++) {
		memset(mask, 0, n);
		err = layer_mask(c, c->layers[i].disk, off0, end, mask);
		if (!err)
			left -= decide(e, mask, n, i);
	}
	for (uint64_t u = 0; u < n; u++)
		if (e[u] == E_UNDECIDED)
			e[u] = CHAIN_E_NONE;
	free(mask);
	return err;
}

static uint64_t chunk_units(const struct chain *c, uint64_t ci)
{
	return VD_MIN(CHAIN_MAP_CHUNK, c->nr_units - ci * CHAIN_MAP_CHUNK);
}

int chain_map_chunk(struct chain *c, uint64_t ci, bool build, uint8_t **out)
{
	uint8_t *p = __atomic_load_n(&c->chunks[ci], __ATOMIC_ACQUIRE);
	int err = 0;

	if (p || !build) {
		*out = p;
		return p ? 0 : -EAGAIN;
	}
	pthread_mutex_lock(&c->map_lock);
	p = c->chunks[ci];
	if (!p) {
		p = malloc(chunk_units(c, ci));
		err = p ? compute(c, ci * CHAIN_MAP_CHUNK, chunk_units(c, ci), p) : -ENOMEM;
		if (err) {
			free(p);
			p = NULL;
		} else {
			__atomic_store_n(&c->chunks[ci], p, __ATOMIC_RELEASE);
		}
	}
	pthread_mutex_unlock(&c->map_lock);
	*out = p;
	return err;
}

int chain_map_get(struct chain *c, uint64_t u, bool build, uint8_t *out)
{
	uint8_t *p;
	int err = chain_map_chunk(c, u / CHAIN_MAP_CHUNK, build, &p);

	if (!err)
		*out = __atomic_load_n(&p[u % CHAIN_MAP_CHUNK], __ATOMIC_RELAXED);
	return err;
}

void chain_map_set(struct chain *c, uint64_t first_unit, uint64_t nr_units, uint8_t e)
{
	for (uint64_t u = first_unit; u < first_unit + nr_units && u < c->nr_units; u++) {
		uint8_t *p = __atomic_load_n(&c->chunks[u / CHAIN_MAP_CHUNK],
					     __ATOMIC_ACQUIRE);
		if (p) /* invariant 3: not built means it will be computed fresh */
			__atomic_store_n(&p[u % CHAIN_MAP_CHUNK], e, __ATOMIC_RELAXED);
	}
}

int chain_map_refresh(struct chain *c, uint64_t off, uint64_t len)
{
	uint64_t u0 = off >> c->unit_shift;
	uint64_t u1 = VD_DIV_ROUND_UP(off + len, c->unit);
	uint8_t *e = malloc(u1 - u0 ? u1 - u0 : 1);
	int err;

	if (!e)
		return -ENOMEM;
	pthread_mutex_lock(&c->map_lock);
	err = compute(c, u0, u1 - u0, e);
	for (uint64_t u = u0; !err && u < u1; u++)
		chain_map_set(c, u, 1, e[u - u0]);
	pthread_mutex_unlock(&c->map_lock);
	free(e);
	return err;
}
