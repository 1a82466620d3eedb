/* chain — the merged grain map (layer 2).
 *
 * Owns: for each map unit, the topmost layer holding it (see MERGED MAP in
 * chain.h).  The map is an array of one word per chunk of CHAIN_MAP_CHUNK
 * units.  A word is 0 (not built yet), a uniform entry (every unit of the
 * chunk has the same entry: WORD_UNIFORM(e), no memory besides the word), or
 * a pointer to an array of one-byte entries.  A chunk is built on first use
 * from every layer's block status runs (a run that covers the chunk decides
 * it whole), under map_lock, and published with a release store so readers
 * need no lock.  So memory follows what is allocated: a disk whose layers
 * hold few or large runs costs a word per chunk, not a byte per unit.
 *
 * Invariants:
 * 1. An entry i < nr_layers means layers 0..i-1 hold nothing of the unit
 *    and layer i holds all of it (data or zeroed grains).
 * 2. CHAIN_E_NONE means no layer holds any of it; CHAIN_E_MIXED that some
 *    layer holds only part of it (reads walk the layers' block status).
 * 3. A chunk is built before any write into its units starts, so a write's
 *    entry update always lands on a built chunk and is never overwritten by
 *    a build that saw the layers before the write.
 * 4. A word changes only under map_lock, from 0 to built, or from uniform to
 *    another uniform entry or to an array (materialised on the first update
 *    that splits the chunk, filled with the uniform entry before it is
 *    published).  An array, once published, stays until chain_map_destroy:
 *    a reader holding it never reads freed memory, and its entries are
 *    single bytes updated atomically without the lock.
 */
#include <errno.h>
#include <stdlib.h>

#include "chain_int.h"

#define E_UNDECIDED 0xfdu
#define DEFAULT_UNIT (64u << 10) /* when the top has no grains (flat) */
#define MIN_UNIT 512u

#define WORD_UNIFORM(e) (((uintptr_t)(e) << 1) | 1u)
#define WORD_IS_UNIFORM(w) ((w) & 1u)
#define WORD_ENTRY(w) ((uint8_t)((w) >> 1))
#define WORD_ARRAY(w) ((uint8_t *)(w))

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
		if (c->chunks[i] && !WORD_IS_UNIFORM(c->chunks[i]))
			free(WORD_ARRAY(c->chunks[i]));
	free(c->chunks);
	c->chunks = NULL;
}

static uint64_t chunk_units(const struct chain *c, uint64_t ci)
{
	return VD_MIN(CHAIN_MAP_CHUNK, c->nr_units - ci * CHAIN_MAP_CHUNK);
}

static uintptr_t word_load(const struct chain *c, uint64_t ci)
{
	return __atomic_load_n(&c->chunks[ci], __ATOMIC_ACQUIRE);
}

static void word_publish(struct chain *c, uint64_t ci, uintptr_t w)
{
	__atomic_store_n(&c->chunks[ci], w, __ATOMIC_RELEASE);
}

/* ---- building ---------------------------------------------------------------- */

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

/* Compute the n entries of units [u0, u0+n) into e, unit by unit. */
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

/* The fast path: each layer, top down, reports one run over the whole
 * chunk.  *w is the uniform word when that decides it, 0 when some layer
 * splits the chunk (compute() then decides unit by unit). */
static int compute_uniform(struct chain *c, uint64_t ci, uintptr_t *w)
{
	uint64_t off0 = (ci * CHAIN_MAP_CHUNK) << c->unit_shift;
	uint64_t len = VD_MIN(c->capacity, (ci * CHAIN_MAP_CHUNK + chunk_units(c, ci))
						   << c->unit_shift) - off0;
	enum vmdk_bs kind;
	uint64_t run;

	*w = WORD_UNIFORM(CHAIN_E_NONE);
	for (unsigned i = 0; i < c->nr_layers; i++) {
		int err = vmdk_block_status(c->layers[i].disk, off0, len, &kind, &run);
		if (err)
			return err;
		if (run < len) {
			*w = 0;
			return 0;
		}
		if (kind != VMDK_BS_UNALLOC) {
			*w = WORD_UNIFORM(i);
			return 0;
		}
	}
	return 0;
}

/* The word of chunk ci, computed (caller holds map_lock). */
static int build(struct chain *c, uint64_t ci, uintptr_t *w)
{
	uint64_t n = chunk_units(c, ci), u;
	uint8_t *e;
	int err = compute_uniform(c, ci, w);

	if (err || *w)
		return err;
	e = malloc(n);
	if (!e)
		return -ENOMEM;
	err = compute(c, ci * CHAIN_MAP_CHUNK, n, e);
	if (err) {
		free(e);
		return err;
	}
	for (u = 1; u < n && e[u] == e[0]; u++)
		;
	*w = u == n ? WORD_UNIFORM(e[0]) : (uintptr_t)e;
	if (u == n) /* one owner after all: keep the entry only */
		free(e);
	return 0;
}

int chain_map_chunk(struct chain *c, uint64_t ci, bool build_it)
{
	uintptr_t w = word_load(c, ci);
	int err = 0;

	if (w || !build_it)
		return w ? 0 : -EAGAIN;
	pthread_mutex_lock(&c->map_lock);
	if (!c->chunks[ci]) {
		err = build(c, ci, &w);
		if (!err)
			word_publish(c, ci, w);
	}
	pthread_mutex_unlock(&c->map_lock);
	return err;
}

/* ---- lookups ------------------------------------------------------------------ */

static uint8_t word_entry(uintptr_t w, uint64_t u)
{
	if (WORD_IS_UNIFORM(w))
		return WORD_ENTRY(w);
	return __atomic_load_n(&WORD_ARRAY(w)[u % CHAIN_MAP_CHUNK], __ATOMIC_RELAXED);
}

int chain_map_get(struct chain *c, uint64_t u, bool build_it, uint8_t *out)
{
	int err = chain_map_chunk(c, u / CHAIN_MAP_CHUNK, build_it);

	if (!err)
		*out = word_entry(word_load(c, u / CHAIN_MAP_CHUNK), u);
	return err;
}

int chain_map_run(struct chain *c, uint64_t u, uint64_t max_units, bool build_it,
		  uint8_t *e, uint64_t *nr_units)
{
	uint64_t end = VD_MIN(c->nr_units, u + max_units), v = u + 1;
	int err = chain_map_get(c, u, build_it, e);

	while (!err && v < end) {
		uint64_t ci = v / CHAIN_MAP_CHUNK;
		uintptr_t w;
		if (chain_map_chunk(c, ci, build_it))
			break; /* not built (and not to be), or failed: stop here */
		w = word_load(c, ci);
		if (WORD_IS_UNIFORM(w) && WORD_ENTRY(w) == *e) {
			v = (ci + 1) * CHAIN_MAP_CHUNK; /* a whole chunk at once */
			continue;
		}
		if (word_entry(w, v) != *e)
			break;
		v++;
	}
	*nr_units = VD_MIN(v, end) - u;
	return err;
}

/* ---- updates ------------------------------------------------------------------- */

static void array_set(uint8_t *a, uint64_t first, uint64_t n, uint8_t e)
{
	for (uint64_t i = first; i < first + n; i++)
		__atomic_store_n(&a[i], e, __ATOMIC_RELAXED);
}

/* Invariant 4, under map_lock: set units [first, first+n) of chunk ci
 * (offsets within the chunk) when the chunk is uniform. */
static void set_locked(struct chain *c, uint64_t ci, uint64_t first, uint64_t n,
		       uint8_t e)
{
	uintptr_t w = c->chunks[ci];
	uint8_t *a;

	if (!w) /* invariant 3: not built means it will be computed fresh */
		return;
	if (!WORD_IS_UNIFORM(w)) {
		array_set(WORD_ARRAY(w), first, n, e);
		return;
	}
	if (WORD_ENTRY(w) == e)
		return;
	if (n == chunk_units(c, ci)) {
		word_publish(c, ci, WORD_UNIFORM(e));
		return;
	}
	a = malloc(CHAIN_MAP_CHUNK);
	if (!a) { /* cannot split: the chunk says "walk the layers" instead */
		word_publish(c, ci, WORD_UNIFORM(CHAIN_E_MIXED));
		return;
	}
	memset(a, WORD_ENTRY(w), CHAIN_MAP_CHUNK);
	array_set(a, first, n, e);
	word_publish(c, ci, (uintptr_t)a);
}

/* Units [first, first+n) of chunk ci to e; `locked`: caller holds map_lock. */
static void chunk_set(struct chain *c, uint64_t ci, uint64_t first, uint64_t n,
		      uint8_t e, bool locked)
{
	uintptr_t w = word_load(c, ci);

	if (!w || (WORD_IS_UNIFORM(w) && WORD_ENTRY(w) == e))
		return;
	if (!WORD_IS_UNIFORM(w)) { /* an array stays: no lock needed */
		array_set(WORD_ARRAY(w), first, n, e);
		return;
	}
	if (!locked)
		pthread_mutex_lock(&c->map_lock);
	set_locked(c, ci, first, n, e);
	if (!locked)
		pthread_mutex_unlock(&c->map_lock);
}

static void map_set(struct chain *c, uint64_t first_unit, uint64_t nr_units, uint8_t e,
		    bool locked)
{
	uint64_t u = first_unit, end = VD_MIN(c->nr_units, first_unit + nr_units);

	while (u < end) {
		uint64_t ci = u / CHAIN_MAP_CHUNK, in = u % CHAIN_MAP_CHUNK;
		uint64_t n = VD_MIN(end - u, chunk_units(c, ci) - in);
		chunk_set(c, ci, in, n, e, locked);
		u += n;
	}
}

void chain_map_set(struct chain *c, uint64_t first_unit, uint64_t nr_units, uint8_t e)
{
	map_set(c, first_unit, nr_units, e, false);
}

/* Recompute the built entries of [off, off+len), a chunk at a time. */
int chain_map_refresh(struct chain *c, uint64_t off, uint64_t len)
{
	uint64_t u = off >> c->unit_shift, end = VD_DIV_ROUND_UP(off + len, c->unit);
	uint8_t *e = malloc(CHAIN_MAP_CHUNK);
	int err = e ? 0 : -ENOMEM;

	pthread_mutex_lock(&c->map_lock);
	while (!err && u < end) {
		uint64_t ci = u / CHAIN_MAP_CHUNK;
		uint64_t n = VD_MIN(end - u, chunk_units(c, ci) - u % CHAIN_MAP_CHUNK);
		if (c->chunks[ci])
			err = compute(c, u, n, e);
		for (uint64_t i = 0; !err && c->chunks[ci] && i < n; i++)
			map_set(c, u + i, 1, e[i], true);
		u += n;
	}
	pthread_mutex_unlock(&c->map_lock);
	free(e);
	return err;
}
