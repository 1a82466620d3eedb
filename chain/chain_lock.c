/* chain — the locking policy of a chain (layer 2), on top of the format
 * layer's qemu-compatible lock bytes (vmdk_lock).
 *
 * A writable top holds read, write and resize and denies write and resize,
 * as a qemu writer does; a read-only top and every parent hold read and deny
 * write and resize, as qemu does for a backing file.  So qemu cannot write
 * any layer we have open, we refuse a layer qemu is writing, and two vdelta
 * writers never share a top; readers share everything.
 */
#include "chain_int.h"

int chain_lock_layer(struct chain *c, unsigned i, bool writable)
{
	unsigned held = VMDK_PERM_READ;

	if (writable)
		held |= VMDK_PERM_WRITE | VMDK_PERM_RESIZE;
	return vmdk_lock(c->layers[i].disk, held, VMDK_PERM_WRITE | VMDK_PERM_RESIZE);
}
