/* tools — `vdelta rbd export|import` (top layer, over the RBD front end
 * rbd.h).
 *
 * Owns: the command lines (cluster options shared by both), the progress
 * meter, and the report: one line per image or layer, then a summary; or
 * JSON {"pool","dry_run","images":[{"image","layer","parent","snapshot",
 * "action","children","virtual-size","object-size","sent-bytes","zero-bytes","verified",
 * "digest","disk-digest"}],"sent-bytes","verified-bytes"} for export and
 * {"dry_run","layers":[{"image","path","parent","virtual-size",
 * "data-bytes","verified","digest"}],"data-bytes"} for import.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>

#include "rbd.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_rbd;

#define MAX_DIRS 64u

struct rbd_args {
	struct rbd_target t;
	const char *prefix;
	uint64_t object_size, clone_object_size;
	char *dirs[MAX_DIRS];
	unsigned nr_dirs;
	bool all, dry_run, json, force_progress, verify_full;
	struct tools_progress pr;
	bool pr_started;
};

enum {
	OPT_POOL = 256, OPT_CONF, OPT_ID, OPT_KEYRING, OPT_TIMEOUT, OPT_PREFIX, OPT_ALL,
	OPT_SCAN, OPT_OSIZE, OPT_COSIZE, OPT_JSON, OPT_VERIFY,
};

static const struct option rbd_opts[] = {
	{"pool", required_argument, NULL, OPT_POOL},
	{"conf", required_argument, NULL, OPT_CONF},
	{"id", required_argument, NULL, OPT_ID},
	{"keyring", required_argument, NULL, OPT_KEYRING},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"prefix", required_argument, NULL, OPT_PREFIX},
	{"all", required_argument, NULL, OPT_ALL},
	{"scan", required_argument, NULL, OPT_SCAN},
	{"object-size", required_argument, NULL, OPT_OSIZE},
	{"clone-object-size", required_argument, NULL, OPT_COSIZE},
	{"dry-run", no_argument, NULL, 'n'},
	{"json", no_argument, NULL, OPT_JSON},
	{"verify", required_argument, NULL, OPT_VERIFY},
	{"progress", no_argument, NULL, 'p'},
	{NULL, 0, NULL, 0},
};

static void progress(void *opaque, uint64_t done, uint64_t total)
{
	struct rbd_args *a = opaque;

	if (!a->pr_started) {
		tools_progress_init(&a->pr, total, a->force_progress);
		a->pr_started = true;
	}
	a->pr.total = total;
	tools_progress_update(&a->pr, done);
}

static int parse_size(const char *s, uint64_t *out)
{
	return vd_parse_size(s, out) ? tools_usage(&tools_cmd_rbd, "bad size '%s'", s)
				     : TOOLS_OK;
}

static int parse_timeout(const char *s, unsigned *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*s < '0' || *s > '9' || *end || v == 0 || v > 3600)
		return tools_usage(&tools_cmd_rbd, "--timeout: seconds from 1 to 3600");
	*out = (unsigned)v;
	return TOOLS_OK;
}

static int parse_verify(const char *s, bool *full)
{
	if (strcmp(s, "full") && strcmp(s, "layers"))
		return tools_usage(&tools_cmd_rbd, "--verify: layers or full");
	*full = !strcmp(s, "full");
	return TOOLS_OK;
}

static int add_dir(struct rbd_args *a, char *dir, bool all)
{
	if (a->nr_dirs == MAX_DIRS)
		return tools_usage(&tools_cmd_rbd, "at most %u folders", MAX_DIRS);
	a->dirs[a->nr_dirs++] = dir;
	a->all |= all;
	return TOOLS_OK;
}

static int option(struct rbd_args *a, int c)
{
	switch (c) {
	case OPT_POOL: a->t.pool = optarg; return TOOLS_OK;
	case OPT_CONF: a->t.conf = optarg; return TOOLS_OK;
	case OPT_ID: a->t.id = optarg; return TOOLS_OK;
	case OPT_KEYRING: a->t.keyring = optarg; return TOOLS_OK;
	case OPT_TIMEOUT: return parse_timeout(optarg, &a->t.timeout_s);
	case OPT_PREFIX: a->prefix = optarg; return TOOLS_OK;
	case OPT_ALL: return add_dir(a, optarg, true);
	case OPT_SCAN: return add_dir(a, optarg, false);
	case OPT_OSIZE: return parse_size(optarg, &a->object_size);
	case OPT_COSIZE: return parse_size(optarg, &a->clone_object_size);
	case 'n': a->dry_run = true; return TOOLS_OK;
	case OPT_JSON: a->json = true; return TOOLS_OK;
	case OPT_VERIFY: return parse_verify(optarg, &a->verify_full);
	case 'p': a->force_progress = true; return TOOLS_OK;
	default: return tools_usage(&tools_cmd_rbd, NULL);
	}
}

static int parse(int argc, char **argv, struct rbd_args *a)
{
	int c, rc = TOOLS_OK;

	optind = 1;
	while (rc == TOOLS_OK && (c = getopt_long(argc, argv, "np", rbd_opts, NULL)) != -1)
		rc = option(a, c);
	return rc;
}

static unsigned flags_of(const struct rbd_args *a)
{
	return (a->dry_run ? RBD_DRY_RUN : 0) | (a->verify_full ? RBD_VERIFY_FULL : 0);
}

/* ---- export ----------------------------------------------------------------------- */

static void export_text(const struct rbd_export_result *r, bool dry)
{
	char s[32], z[32];

	for (unsigned i = 0; i < r->nr_items; i++) {
		const struct rbd_export_item *it = &r->items[i];
		printf("%s/%s  %s  %s", r->pool, it->image, rbd_export_action_name(it->action),
		       it->layer);
		if (it->parent)
			printf("  parent %s", it->parent);
		if (it->send_bytes || it->zero_bytes)
			printf("  %s %s, zeros %s", dry ? "to send" : "sent",
			       tools_human_size(it->send_bytes, s, sizeof s),
			       tools_human_size(it->zero_bytes, z, sizeof z));
		if (it->snap)
			printf("  snapshot %s", it->snap);
		printf("%s\n", it->verified ? "  verified" : "");
	}
	printf("%s %u image%s in pool %s: %s %s\n", dry ? "would export" : "exported",
	       r->nr_items, r->nr_items == 1 ? "" : "s", r->pool ? r->pool : "?",
	       tools_human_size(r->send_bytes, s, sizeof s), dry ? "to send" : "sent");
}

static void export_json(const struct rbd_export_result *r, bool dry)
{
	struct tools_json j;

	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	tools_json_str(&j, "pool", r->pool);
	tools_json_bool(&j, "dry_run", dry);
	tools_json_arr_begin(&j, "images");
	for (unsigned i = 0; i < r->nr_items; i++) {
		const struct rbd_export_item *it = &r->items[i];
		tools_json_obj_begin(&j, NULL);
		tools_json_str(&j, "image", it->image);
		tools_json_str(&j, "layer", it->layer);
		tools_json_str(&j, "parent", it->parent);
		tools_json_str(&j, "snapshot", it->snap);
		tools_json_str(&j, "action", rbd_export_action_name(it->action));
		tools_json_u64(&j, "children", it->nr_children);
		tools_json_u64(&j, "virtual-size", it->capacity);
		tools_json_u64(&j, "object-size", it->object_size);
		tools_json_u64(&j, "sent-bytes", it->send_bytes);
		tools_json_u64(&j, "zero-bytes", it->zero_bytes);
		tools_json_bool(&j, "verified", it->verified);
		tools_json_str(&j, "digest", it->digest[0] ? it->digest : NULL);
		tools_json_str(&j, "disk-digest", it->disk_digest[0] ? it->disk_digest : NULL);
		tools_json_obj_end(&j);
	}
	tools_json_arr_end(&j);
	tools_json_u64(&j, "sent-bytes", r->send_bytes);
	tools_json_u64(&j, "verified-bytes", r->verify_bytes);
	tools_json_obj_end(&j);
	putchar('\n');
}

static int export_main(int argc, char **argv, struct rbd_args *a)
{
	struct rbd_export_opts o = {.target = a->t, .prefix = a->prefix,
				    .object_size = a->object_size,
				    .clone_object_size = a->clone_object_size,
				    .flags = flags_of(a), .progress = progress,
				    .progress_opaque = a};
	struct rbd_export_result r;
	unsigned nr = (unsigned)(argc - optind);
	int rc;

	if (!nr == !a->all)
		return tools_usage(&tools_cmd_rbd, a->all ? "DISK arguments or --all DIR, not both"
							  : "expected DISK... or --all DIR");
	rc = rbd_export_run(argv + optind, nr, a->dirs, a->nr_dirs, &o, &r);
	if (a->pr_started)
		tools_progress_end(&a->pr, a->pr.total);
	if (!rc)
		a->json ? export_json(&r, a->dry_run) : export_text(&r, a->dry_run);
	rbd_export_result_free(&r);
	return rc ? tools_fail(nr ? argv[optind] : a->dirs[0], rc) : TOOLS_OK;
}

/* ---- import ----------------------------------------------------------------------- */

static void import_out(const struct rbd_import_result *r, bool dry, bool json)
{
	struct tools_json j;
	char s[32];

	if (!json) {
		for (unsigned i = 0; i < r->nr_items; i++)
			printf("%s -> %s%s%s  %s%s\n", r->items[i].spec, r->items[i].path,
			       r->items[i].parent ? " over " : "",
			       r->items[i].parent ? r->items[i].parent : "",
			       tools_human_size(r->items[i].data_bytes, s, sizeof s),
			       r->items[i].verified ? "  verified" : "");
		printf("%s %u layer%s\n", dry ? "would import" : "imported", r->nr_items,
		       r->nr_items == 1 ? "" : "s");
		return;
	}
	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	tools_json_bool(&j, "dry_run", dry);
	tools_json_arr_begin(&j, "layers");
	for (unsigned i = 0; i < r->nr_items; i++) {
		tools_json_obj_begin(&j, NULL);
		tools_json_str(&j, "image", r->items[i].spec);
		tools_json_str(&j, "path", r->items[i].path);
		tools_json_str(&j, "parent", r->items[i].parent);
		tools_json_u64(&j, "virtual-size", r->items[i].capacity);
		tools_json_u64(&j, "data-bytes", r->items[i].data_bytes);
		tools_json_bool(&j, "verified", r->items[i].verified);
		tools_json_str(&j, "digest", r->items[i].digest[0] ? r->items[i].digest : NULL);
		tools_json_obj_end(&j);
	}
	tools_json_arr_end(&j);
	tools_json_u64(&j, "data-bytes", r->data_bytes);
	tools_json_obj_end(&j);
	putchar('\n');
}

static int import_main(int argc, char **argv, struct rbd_args *a)
{
	struct rbd_import_opts o = {.target = a->t, .flags = flags_of(a), .progress = progress,
				    .progress_opaque = a};
	struct rbd_import_result r;
	int rc;

	if (argc - optind < 2)
		return tools_usage(&tools_cmd_rbd, "expected POOL/IMAGE[@SNAP]... DIR");
	if (a->all || a->prefix || a->object_size || a->clone_object_size)
		return tools_usage(&tools_cmd_rbd, "--all, --scan, --prefix and the object "
						   "sizes go with export");
	rc = rbd_import_run(argv + optind, (unsigned)(argc - optind - 1), argv[argc - 1], &o, &r);
	if (a->pr_started)
		tools_progress_end(&a->pr, a->pr.total);
	if (!rc)
		import_out(&r, a->dry_run, a->json);
	rbd_import_result_free(&r);
	return rc ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

/* Options anywhere (getopt moves the words after them): the first word
 * left is export or import. */
static int rbd_run(int argc, char **argv)
{
	struct rbd_args a = {0};
	const char *cmd;
	int rc = parse(argc, argv, &a);

	if (rc != TOOLS_OK)
		return rc;
	if (optind >= argc)
		return tools_usage(&tools_cmd_rbd, "expected export or import");
	cmd = argv[optind++];
	if (!strcmp(cmd, "export"))
		return export_main(argc, argv, &a);
	if (!strcmp(cmd, "import"))
		return a.nr_dirs ? tools_usage(&tools_cmd_rbd, "--all and --scan go with export")
				 : import_main(argc, argv, &a);
	return tools_usage(&tools_cmd_rbd, "unknown rbd command '%s'", cmd);
}

const struct tools_cmd tools_cmd_rbd = {
	.name = "rbd",
	.writes = true,
	TOOLS_PAGE(rbd),
	.run = rbd_run,
};
