/* tests/fuzz — fuzz target for the descriptor parser, vmdk/vmdk_desc.c
 * (format layer, private API).  The input is descriptor text; an input
 * starting with "KDMV" is a hosted sparse file whose embedded descriptor
 * (sector 1, up to 20 sectors) is parsed instead, so KDMV seeds are useful.
 * Invariants checked on every accepted input: the emitted text parses, it
 * keeps every key and extent, emit is a fixed point, and the CID (when it
 * is there) parses or is refused without harm.
 *
 * libFuzzer recipe (clang):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 \
 *     -D_FILE_OFFSET_BITS=64 -Icommon -Ivmdk tests/fuzz/fuzz_desc.c \
 *     vmdk/vmdk_desc.c common/common.c -o /tmp/fuzz_desc
 *   mkdir -p /tmp/fuzz_desc_corpus
 *   /tmp/fuzz_desc /tmp/fuzz_desc_corpus tests/fuzz/seeds \
 *     ../shared/corpus/synthetic/descriptors -max_len=65536 -max_total_time=600
 * Without -fsanitize=fuzzer, tests/fuzz/fuzz_main.c supplies main() and the
 * meson test "fuzz_desc" runs the seeds plus deterministic mutations. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "vmdk_int.h"

void fuzz_make_seeds(const char *dir)
{
	(void)dir; /* text seeds live in tests/fuzz/seeds */
}

static void same_extents(const struct vmdk_desc *a, const struct vmdk_desc *b)
{
	if (a->nr_ext != b->nr_ext)
		fuzz_fail("emit changed the extent count %u -> %u", a->nr_ext, b->nr_ext);
	for (unsigned i = 0; i < a->nr_ext; i++) {
		const struct vmdk_desc_extent *x = &a->ext[i], *y = &b->ext[i];
		if (x->access != y->access || x->size_sectors != y->size_sectors ||
		    strcmp(x->type, y->type) || !x->name != !y->name ||
		    (x->name && strcmp(x->name, y->name)) ||
		    (x->has_offset && x->offset_sectors != y->offset_sectors))
			fuzz_fail("emit changed extent %u: %s \"%s\" -> %s \"%s\"", i,
				  x->type, x->name, y->type, y->name);
	}
}

static void same_keys(const struct vmdk_desc *a, const struct vmdk_desc *b)
{
	for (unsigned i = 0; i < a->nr_kv; i++) {
		const char *v = vmdk_desc_kv_get(b, a->kv[i].key);
		if (!v || strcmp(v, a->kv[i].value))
			fuzz_fail("emit changed key \"%s\": \"%s\" -> \"%s\"", a->kv[i].key,
				  a->kv[i].value, v ? v : "(absent)");
	}
}

static void check_round_trip(const struct vmdk_desc *d)
{
	char *e = vmdk_desc_emit(d), *e2;
	struct vmdk_desc *d2 = NULL;

	if (!e)
		return; /* out of memory */
	if (vmdk_desc_parse(e, strlen(e), "emitted", &d2))
		fuzz_fail("emitted descriptor does not parse:\n%s", e);
	same_extents(d, d2);
	same_keys(d, d2);
	e2 = vmdk_desc_emit(d2);
	if (e2 && strcmp(e, e2))
		fuzz_fail("emit is not a fixed point:\n%s---\n%s", e, e2);
	free(e2);
	vmdk_desc_free(d2);
	free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct vmdk_desc *d = NULL;
	uint32_t cid;

	if (size >= 1024 && !memcmp(data, "KDMV", 4)) {
		text += 512;
		size = size - 512 < 20 * 512 ? size - 512 : 20 * 512;
	}
	if (vmdk_desc_parse(text, size, "fuzz.vmdk", &d))
		return 0;
	if (vmdk_desc_kv_get(d, "CID"))
		(void)vmdk_desc_parse_cid(vmdk_desc_kv_get(d, "CID"), &cid);
	check_round_trip(d);
	/* edits keep the text valid */
	if (vmdk_desc_kv_set(d, "CID", "0badc0de", false) == 0 &&
	    vmdk_desc_kv_set(d, "ddb.fuzz", "x y", true) == 0)
		check_round_trip(d);
	vmdk_desc_free(d);
	return 0;
}
