/* group — the front door of a server (layer 3): what a mount or an NBD
 * export does before it serves a disk.
 *
 * Owns: recovery near the disk before it is opened (carried out when the
 * mode writes the disk's own files — rw, and snapshot, which freezes the
 * top — and only reported for ro and nonpersistent, which write nothing
 * of the disk), and the snapshot of a disk served in snapshot mode, made
 * here so its new delta is recorded as the top's child like any other.
 */
#include <stdlib.h>

#include "group_int.h"

int group_serve_add(struct chain_server *s, const char *path, const char *name,
		    enum chain_serve_mode mode, struct chain_served **out)
{
	bool writes = mode == CHAIN_SERVE_RW || mode == CHAIN_SERVE_SNAPSHOT;
	char *top = NULL;
	int err = group_recover_near(path, writes ? GROUP_RECOVER_FINISH : 0, NULL, NULL);

	if (err)
		return err;
	if (mode != CHAIN_SERVE_SNAPSHOT)
		return chain_server_add(s, path, name, mode, out);
	err = group_snapshot(path, NULL, NULL, &top);
	if (!err)
		err = chain_server_add_snapshot(s, path, top, name, out);
	free(top);
	return err;
}
