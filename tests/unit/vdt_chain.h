/* vdt_chain.h — test helpers over chain.h (tests, over chain/): what a
 * disk reads, checked against the test's own model of it. */
#ifndef VDELTA_VDT_CHAIN_H
#define VDELTA_VDT_CHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chain.h"
#include "vdtest.h"

/* Does the disk dir/name read, from offset 0, exactly the len bytes of
 * model? */
static inline bool vdt_chain_reads(const char *dir, const char *name, const uint8_t *model,
				   size_t len)
{
	char *p = vdt_join(dir, name);
	uint8_t *buf = malloc(len);
	struct chain *c;
	bool ok = p && buf && !chain_open(p, CHAIN_OPEN_RDONLY, NULL, &c);

	if (ok) {
		ok = !chain_pread(c, buf, len, 0) && !memcmp(buf, model, len);
		chain_close(c);
	}
	free(buf);
	free(p);
	return ok;
}

#endif
