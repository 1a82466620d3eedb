/* tools — `vdelta info`: what one VMDK file set holds (top layer).
 *
 * Owns: gathering the disk's identity, descriptor entries, extents (with the
 * sparse header fields of each) and files, and printing them as text or
 * JSON.  It describes the layer named on the command line, not its chain.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "chain.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_info;

struct info {
	const char *path;
	struct vmdk_disk *disk;
	struct vmdk_info vi;
	struct vmdk_extent_info *ext; /* vi.nr_extents */
	uint64_t allocated;           /* guest bytes stored, all extents */
	uint64_t disk_size;           /* bytes of storage used, all files */
};

static const char *const access_names[] = {"RW", "RDONLY", "NOACCESS"};

static const char *access_name(enum vmdk_access a)
{
	return (unsigned)a < 3 ? access_names[a] : "?";
}

static bool is_sparse(enum vmdk_extent_kind k)
{
	return k == VMDK_EXT_SPARSE || k == VMDK_EXT_STREAM || k == VMDK_EXT_COWD ||
	       k == VMDK_EXT_SESPARSE;
}

static int info_gather(struct info *in)
{
	struct stat st;
	int rc;

	vmdk_info_get(in->disk, &in->vi);
	in->ext = calloc(in->vi.nr_extents ? in->vi.nr_extents : 1, sizeof *in->ext);
	if (!in->ext)
		return -ENOMEM;
	for (unsigned i = 0; i < in->vi.nr_extents; i++) {
		rc = vmdk_extent_info_get(in->disk, i, &in->ext[i]);
		if (rc < 0)
			return rc;
		in->allocated += in->ext[i].allocated;
	}
	for (unsigned i = 0; i < vmdk_nr_files(in->disk); i++)
		if (stat(vmdk_file_path(in->disk, i), &st) == 0)
			in->disk_size += (uint64_t)st.st_blocks * 512;
	return 0;
}

/* ---- text ------------------------------------------------------------------- */

static void text_sparse(const struct vmdk_extent_info *e)
{
	printf("      version %u, flags 0x%x, capacity %llu sectors, grain %llu sectors\n"
	       "      descriptor at sector %llu (%llu sectors), overhead %llu sectors\n"
	       "      grain directory at sector %llu, redundant at %llu, "
	       "%u entries, %u grain table entries each\n",
	       e->version, e->flags, (unsigned long long)e->header_capacity_sectors,
	       (unsigned long long)e->grain_size_sectors,
	       (unsigned long long)e->descriptor_offset_sectors,
	       (unsigned long long)e->descriptor_size_sectors,
	       (unsigned long long)e->overhead_sectors,
	       (unsigned long long)e->gd_offset_sectors,
	       (unsigned long long)e->rgd_offset_sectors, e->nr_gd_entries,
	       e->nr_gtes_per_gt);
	if (e->kind == VMDK_EXT_STREAM)
		printf("      compression %u\n", e->compress_algorithm);
	if (e->unclean_shutdown)
		printf("      unclean shutdown\n");
}

static void text_extent(unsigned i, const struct vmdk_extent_info *e)
{
	printf("  [%u] %s %s \"%s\"\n", i, vmdk_extent_kind_name(e->kind),
	       access_name(e->access), e->name ? e->name : "");
	printf("      virtual bytes %llu..%llu (%llu)", (unsigned long long)e->start,
	       (unsigned long long)(e->start + e->size), (unsigned long long)e->size);
	if (e->kind == VMDK_EXT_FLAT || e->kind == VMDK_EXT_VMFS)
		printf(", file offset %llu", (unsigned long long)e->file_offset);
	printf("\n");
	if (e->path)
		printf("      file %s, %llu bytes, %llu bytes allocated\n", e->path,
		       (unsigned long long)e->file_size, (unsigned long long)e->allocated);
	if (is_sparse(e->kind))
		text_sparse(e);
}

static void text_desc(struct vmdk_disk *d)
{
	const char *key, *value;

	printf("descriptor:\n");
	for (unsigned i = 0; vmdk_desc_entry(d, i, &key, &value) == 0; i++)
		printf("  %s = \"%s\"\n", key, value);
}

static void info_text(const struct info *in)
{
	char h1[32], h2[32], h3[32];

	printf("image: %s\n", in->path);
	printf("create type: %s\n", in->vi.create_type ? in->vi.create_type : "?");
	printf("virtual size: %s (%llu bytes)\n",
	       tools_human_size(in->vi.capacity, h1, sizeof h1),
	       (unsigned long long)in->vi.capacity);
	printf("allocated: %s (%llu bytes)\n", tools_human_size(in->allocated, h2, sizeof h2),
	       (unsigned long long)in->allocated);
	printf("disk size: %s\n", tools_human_size(in->disk_size, h3, sizeof h3));
	printf("CID: %08x\nparent CID: %08x\n", in->vi.cid, in->vi.parent_cid);
	if (in->vi.parent_hint)
		printf("parent: %s\n", in->vi.parent_hint);
	printf("embedded descriptor: %s\n", in->vi.embedded_descriptor ? "yes" : "no");
	text_desc(in->disk);
	printf("extents:\n");
	for (unsigned i = 0; i < in->vi.nr_extents; i++)
		text_extent(i, &in->ext[i]);
	printf("files:\n");
	for (unsigned i = 0; i < vmdk_nr_files(in->disk); i++)
		printf("  %s\n", vmdk_file_path(in->disk, i));
}

/* ---- JSON ------------------------------------------------------------------- */

static void json_sparse(struct tools_json *j, const struct vmdk_extent_info *e)
{
	tools_json_obj_begin(j, "header");
	tools_json_u64(j, "version", e->version);
	tools_json_u64(j, "flags", e->flags);
	tools_json_u64(j, "capacity-sectors", e->header_capacity_sectors);
	tools_json_u64(j, "grain-size-sectors", e->grain_size_sectors);
	tools_json_u64(j, "descriptor-offset-sectors", e->descriptor_offset_sectors);
	tools_json_u64(j, "descriptor-size-sectors", e->descriptor_size_sectors);
	tools_json_u64(j, "num-gtes-per-gt", e->nr_gtes_per_gt);
	tools_json_u64(j, "num-gd-entries", e->nr_gd_entries);
	tools_json_u64(j, "rgd-offset-sectors", e->rgd_offset_sectors);
	tools_json_u64(j, "gd-offset-sectors", e->gd_offset_sectors);
	tools_json_u64(j, "overhead-sectors", e->overhead_sectors);
	tools_json_bool(j, "unclean-shutdown", e->unclean_shutdown);
	tools_json_u64(j, "compress-algorithm", e->compress_algorithm);
	tools_json_obj_end(j);
}

static void json_extent(struct tools_json *j, const struct vmdk_extent_info *e)
{
	tools_json_obj_begin(j, NULL);
	tools_json_str(j, "kind", vmdk_extent_kind_name(e->kind));
	tools_json_str(j, "access", access_name(e->access));
	tools_json_str(j, "name", e->name);
	tools_json_str(j, "filename", e->path);
	tools_json_u64(j, "start", e->start);
	tools_json_u64(j, "size", e->size);
	tools_json_u64(j, "file-offset", e->file_offset);
	tools_json_u64(j, "file-size", e->file_size);
	tools_json_u64(j, "allocated", e->allocated);
	if (is_sparse(e->kind))
		json_sparse(j, e);
	tools_json_obj_end(j);
}

static void json_desc(struct tools_json *j, struct vmdk_disk *d)
{
	const char *key, *value;

	tools_json_obj_begin(j, "descriptor");
	for (unsigned i = 0; vmdk_desc_entry(d, i, &key, &value) == 0; i++)
		tools_json_str(j, key, value);
	tools_json_obj_end(j);
}

static void info_json(const struct info *in)
{
	struct tools_json j;

	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	tools_json_str(&j, "filename", in->path);
	tools_json_str(&j, "format", "vmdk");
	tools_json_str(&j, "create-type", in->vi.create_type);
	tools_json_u64(&j, "virtual-size", in->vi.capacity);
	tools_json_u64(&j, "allocated", in->allocated);
	tools_json_u64(&j, "actual-size", in->disk_size);
	tools_json_u64(&j, "cid", in->vi.cid);
	tools_json_u64(&j, "parent-cid", in->vi.parent_cid);
	tools_json_str(&j, "parent-hint", in->vi.parent_hint);
	tools_json_bool(&j, "embedded-descriptor", in->vi.embedded_descriptor);
	json_desc(&j, in->disk);
	tools_json_arr_begin(&j, "extents");
	for (unsigned i = 0; i < in->vi.nr_extents; i++)
		json_extent(&j, &in->ext[i]);
	tools_json_arr_end(&j);
	tools_json_arr_begin(&j, "files");
	for (unsigned i = 0; i < vmdk_nr_files(in->disk); i++)
		tools_json_str(&j, NULL, vmdk_file_path(in->disk, i));
	tools_json_arr_end(&j);
	tools_json_obj_end(&j);
}

/* ---- command ---------------------------------------------------------------- */

enum { OPT_STRICT_PATHS = 256 };

static const struct option info_opts[] = {
	{"json", no_argument, NULL, 'j'},
	{"chain", no_argument, NULL, 'c'}, /* tools_chain_map.c */
	{"force-share", no_argument, NULL, 'U'},
	{"strict-paths", no_argument, NULL, OPT_STRICT_PATHS},
	{NULL, 0, NULL, 0},
};

static int info_run(int argc, char **argv)
{
	struct info in = {0};
	bool json = false, chain = false, share = false, strict = false;
	int c, rc;

	while ((c = getopt_long(argc, argv, "U", info_opts, NULL)) != -1) {
		if (c != 'j' && c != 'c' && c != 'U' && c != OPT_STRICT_PATHS)
			return tools_usage(&tools_cmd_info, NULL);
		*(c == 'j' ? &json : c == 'c' ? &chain : c == 'U' ? &share : &strict) = true;
	}
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_info, "expected one FILE");
	if (chain)
		return tools_chain_info(argv[optind], json,
					(share ? CHAIN_OPEN_NOLOCK : 0) |
					(strict ? CHAIN_OPEN_STRICT_PATHS : 0));
	in.path = argv[optind];
	rc = tools_vmdk_open_read(in.path, strict ? VMDK_OPEN_STRICT_PATHS : 0, share,
				  &in.disk);
	if (rc == 0)
		rc = info_gather(&in);
	if (rc == 0)
		json ? info_json(&in) : info_text(&in);
	free(in.ext);
	vmdk_close(in.disk);
	return rc < 0 ? tools_fail(in.path, rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_info = {
	.name = "info",
	TOOLS_PAGE(info),
	.run = info_run,
};
