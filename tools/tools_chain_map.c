/* tools — the chain commands that describe a disk: `map`, `digest` and the
 * `--chain` option of `info` (top layer, over chain.h).
 *
 * Owns: their options and output.  `map` prints merged runs like
 * `qemu-img map` (its JSON uses qemu's keys: start, length, depth, present,
 * zero, data, plus file); `digest` prints "<32 hex>  DISK" exactly as
 * `xxhsum -H2` prints a raw export's hash.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chain.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_map, tools_cmd_digest;

enum { OPT_IGNORE_CID = 256, OPT_STRICT_PATHS };

static const struct option read_opts[] = {
	{"json", no_argument, NULL, 'j'},
	{"ignore-cid", no_argument, NULL, OPT_IGNORE_CID},
	{"force-share", no_argument, NULL, 'U'},
	{"strict-paths", no_argument, NULL, OPT_STRICT_PATHS},
	{NULL, 0, NULL, 0},
};

/* Options shared by the read-only chain commands; TOOLS_OK or TOOLS_USAGE. */
static int read_args(const struct tools_cmd *cmd, int argc, char **argv, bool *json,
		     unsigned *flags)
{
	int c;

	*flags = CHAIN_OPEN_RDONLY;
	while ((c = getopt_long(argc, argv, "U", read_opts, NULL)) != -1) {
		if (c == 'j' && json)
			*json = true;
		else if (c == OPT_IGNORE_CID)
			*flags |= CHAIN_OPEN_IGNORE_CID;
		else if (c == 'U')
			*flags |= CHAIN_OPEN_NOLOCK;
		else if (c == OPT_STRICT_PATHS)
			*flags |= CHAIN_OPEN_STRICT_PATHS;
		else
			return tools_usage(cmd, NULL);
	}
	return optind < argc ? TOOLS_OK : tools_usage(cmd, "expected a DISK");
}

/* ---- map -------------------------------------------------------------------- */

static const char *const kind_names[] = {"data", "zero", "unallocated"};

static void map_json(struct tools_json *j, struct chain *c, const struct chain_run *r)
{
	unsigned depth = r->layer < 0 ? chain_depth(c) - 1 : (unsigned)r->layer;

	tools_json_obj_begin(j, NULL);
	tools_json_u64(j, "start", r->off);
	tools_json_u64(j, "length", r->len);
	tools_json_u64(j, "depth", depth);
	tools_json_bool(j, "present", r->kind != CHAIN_UNALLOC);
	tools_json_bool(j, "zero", r->kind != CHAIN_DATA);
	tools_json_bool(j, "data", r->kind == CHAIN_DATA);
	tools_json_str(j, "file", r->layer < 0 ? NULL : vmdk_path(chain_layer(c, depth)));
	tools_json_obj_end(j);
}

static void map_text(struct chain *c, const struct chain_run *r)
{
	char layer[16] = "-";

	if (r->layer >= 0)
		snprintf(layer, sizeof layer, "%d", r->layer);
	printf("%-#15llx %-#15llx %-5s %-11s %s\n", (unsigned long long)r->off,
	       (unsigned long long)r->len, layer, kind_names[r->kind],
	       r->layer < 0 ? "-" : vmdk_path(chain_layer(c, (unsigned)r->layer)));
}

static int map_print(struct chain *c, bool json)
{
	struct tools_json j;
	struct chain_run r;
	int rc = 0;

	if (json) {
		tools_json_init(&j, stdout);
		tools_json_arr_begin(&j, NULL);
	} else {
		printf("%-15s %-15s %-5s %-11s %s\n", "Offset", "Length", "Layer", "Kind",
		       "File");
	}
	for (uint64_t off = 0; off < chain_capacity(c); off += r.len) {
		rc = chain_status(c, off, chain_capacity(c) - off, &r);
		if (rc < 0)
			break;
		if (json)
			map_json(&j, c, &r);
		else
			map_text(c, &r);
	}
	if (json) {
		tools_json_arr_end(&j);
		putchar('\n');
	}
	return rc;
}

static int map_run(int argc, char **argv)
{
	struct chain *c = NULL;
	bool json = false;
	unsigned flags;
	int rc = read_args(&tools_cmd_map, argc, argv, &json, &flags);

	if (rc != TOOLS_OK)
		return rc;
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_map, "expected one DISK");
	rc = chain_open(argv[optind], flags, NULL, &c);
	if (rc == 0)
		rc = map_print(c, json);
	chain_close(c);
	return rc < 0 ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_map = {
	.name = "map",
	TOOLS_PAGE(map),
	.run = map_run,
};

/* ---- digest ------------------------------------------------------------------- */

static int digest_one(const char *path, unsigned flags)
{
	struct chain *c = NULL;
	uint8_t d[16];
	char hex[33];
	int rc = chain_open(path, flags, NULL, &c);

	if (rc == 0)
		rc = chain_digest(c, d);
	chain_close(c);
	if (rc < 0)
		return tools_fail(path, rc);
	chain_digest_hex(d, hex);
	printf("%s  %s\n", hex, path);
	return TOOLS_OK;
}

static int digest_run(int argc, char **argv)
{
	unsigned flags;
	int rc = read_args(&tools_cmd_digest, argc, argv, NULL, &flags), ret = TOOLS_OK;

	if (rc != TOOLS_OK)
		return rc;
	for (int i = optind; i < argc; i++)
		if (digest_one(argv[i], flags) != TOOLS_OK)
			ret = TOOLS_ERR;
	return ret;
}

const struct tools_cmd tools_cmd_digest = {
	.name = "digest",
	TOOLS_PAGE(digest),
	.run = digest_run,
};

/* ---- info --chain ----------------------------------------------------------------- */

/* Guest bytes a layer stores; an error when its tables cannot be read
 * (reported by the format layer), as plain `info` fails then. */
static int layer_allocated(struct vmdk_disk *d, uint64_t *sum)
{
	struct vmdk_info vi;
	struct vmdk_extent_info e;
	int rc;

	*sum = 0;
	vmdk_info_get(d, &vi);
	for (unsigned i = 0; i < vi.nr_extents; i++) {
		if ((rc = vmdk_extent_info_get(d, i, &e)) < 0)
			return rc;
		*sum += e.allocated;
	}
	return 0;
}

static uint64_t layer_file_bytes(struct vmdk_disk *d)
{
	struct stat st;
	uint64_t sum = 0;

	for (unsigned i = 0; i < vmdk_nr_files(d); i++)
		if (stat(vmdk_file_path(d, i), &st) == 0)
			sum += (uint64_t)st.st_size;
	return sum;
}

static void layer_json(struct tools_json *j, struct vmdk_disk *d, unsigned i,
		       uint64_t allocated)
{
	struct vmdk_info vi;
	char cid[16], pcid[16];

	vmdk_info_get(d, &vi);
	snprintf(cid, sizeof cid, "%08x", vi.cid);
	snprintf(pcid, sizeof pcid, "%08x", vi.parent_cid);
	tools_json_obj_begin(j, NULL);
	tools_json_u64(j, "depth", i);
	tools_json_str(j, "filename", vmdk_path(d));
	tools_json_str(j, "create-type", vi.create_type);
	tools_json_str(j, "cid", cid);
	tools_json_str(j, "parent-cid", pcid);
	tools_json_str(j, "parent-hint", vi.parent_hint);
	tools_json_bool(j, "frozen", chain_is_frozen(d));
	tools_json_u64(j, "virtual-size", vi.capacity);
	tools_json_u64(j, "allocated", allocated);
	tools_json_u64(j, "file-size", layer_file_bytes(d));
	tools_json_obj_end(j);
}

static void layer_text(struct vmdk_disk *d, unsigned i, uint64_t allocated)
{
	struct vmdk_info vi;
	char a[32], f[32];

	vmdk_info_get(d, &vi);
	printf("%-5u %08x %08x %-20s %-6s %10s %10s  %s\n", i, vi.cid, vi.parent_cid,
	       vi.create_type ? vi.create_type : "?", chain_is_frozen(d) ? "yes" : "no",
	       tools_human_size(allocated, a, sizeof a),
	       tools_human_size(layer_file_bytes(d), f, sizeof f), vmdk_path(d));
}

/* `vdelta info --chain [--json] DISK` (called by tools_info.c); flags:
 * CHAIN_OPEN_NOLOCK, CHAIN_OPEN_STRICT_PATHS.  Every layer's tables are
 * read before anything is printed: one unreadable layer fails the whole. */
int tools_chain_info(const char *path, bool json, unsigned flags)
{
	uint64_t allocated[CHAIN_MAX_DEPTH];
	struct tools_json j;
	struct chain *c = NULL;
	int rc = chain_open(path, CHAIN_OPEN_RDONLY | flags, NULL, &c);

	for (unsigned i = 0; rc == 0 && i < chain_depth(c); i++)
		rc = layer_allocated(chain_layer(c, i), &allocated[i]);
	if (rc < 0) {
		chain_close(c);
		return tools_fail(path, rc);
	}
	if (json) {
		tools_json_init(&j, stdout);
		tools_json_arr_begin(&j, NULL);
	} else {
		printf("%-5s %-8s %-8s %-20s %-6s %10s %10s  %s\n", "Depth", "CID",
		       "ParentCID", "Type", "Frozen", "Allocated", "FileSize", "File");
	}
	for (unsigned i = 0; i < chain_depth(c); i++)
		json ? layer_json(&j, chain_layer(c, i), i, allocated[i])
		     : layer_text(chain_layer(c, i), i, allocated[i]);
	if (json) {
		tools_json_arr_end(&j);
		putchar('\n');
	}
	chain_close(c);
	return TOOLS_OK;
}
