/* tools — `vdelta pack`, `vdelta pack --list` and `vdelta unpack`: a
 * group's layers shipped as a bundle (top layer, over group_pack,
 * group_bundle_list and group_unpack).
 *
 * Owns: the options, where the bundle goes (a new file, written to a
 * hidden temporary beside it, fsynced and renamed, so FILE only ever holds
 * a whole bundle; or stdout) and comes from (a file or stdin), the
 * progress meter, and the summary as text or JSON (docs/bundle.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "group.h"
#include "tools.h"
#include "tools_pages.h"

extern const struct tools_cmd tools_cmd_pack, tools_cmd_unpack;

#define MAX_LIST 64u

struct args {
	char *list[2][MAX_LIST]; /* --scan / --base */
	unsigned nr[2];
	const char *out, *since;
	bool full, json, force, dry_run;
	int level;
	long threads;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool wants_list(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "--list"))
			return true;
	return false;
}

/* ---- the summary --------------------------------------------------------------------------- */

static const char *parent_name(const struct group_bundle_info *b, const struct group_bundle_layer *l)
{
	return l->parent_kind == GROUP_BUNDLE_LAYER ? b->layers[l->parent].name
	       : l->parent_kind == GROUP_BUNDLE_NEED ? b->needs[l->parent].name : NULL;
}

static const char *parent_kind(const struct group_bundle_layer *l)
{
	return l->parent_kind == GROUP_BUNDLE_LAYER ? "layer"
	       : l->parent_kind == GROUP_BUNDLE_NEED ? "need" : "none";
}

static void json_layer(struct tools_json *j, const struct group_bundle_info *b, unsigned i)
{
	const struct group_bundle_layer *l = &b->layers[i];
	char cid[9];

	tools_json_obj_begin(j, NULL);
	tools_json_str(j, "name", l->name);
	tools_json_str(j, "kind", vmdk_subformat_name(l->kind));
	tools_json_str(j, "source_type", l->source_type);
	snprintf(cid, sizeof cid, "%08x", l->cid);
	tools_json_str(j, "cid", cid);
	snprintf(cid, sizeof cid, "%08x", l->parent_cid);
	tools_json_str(j, "parent_cid", cid);
	tools_json_str(j, "parent_kind", parent_kind(l));
	tools_json_str(j, "parent", parent_name(b, l));
	tools_json_u64(j, "capacity", l->capacity);
	tools_json_u64(j, "held_bytes", l->held_bytes);
	tools_json_bool(j, "disk", l->top);
	tools_json_str(j, "path", l->path);
	tools_json_obj_end(j);
}

static void json_need(struct tools_json *j, const struct group_bundle_need *n)
{
	char cid[9], hex[33];

	chain_digest_hex(n->digest, hex);
	snprintf(cid, sizeof cid, "%08x", n->cid);
	tools_json_obj_begin(j, NULL);
	tools_json_str(j, "name", n->name);
	tools_json_str(j, "cid", cid);
	tools_json_u64(j, "capacity", n->capacity);
	tools_json_str(j, "digest", hex);
	tools_json_str(j, "path", n->path);
	tools_json_obj_end(j);
}

static void print_json(FILE *f, const char *op, const char *bundle,
		       const struct group_bundle_info *b, bool dry_run, double secs)
{
	struct tools_json j;

	tools_json_init(&j, f);
	tools_json_obj_begin(&j, NULL);
	tools_json_str(&j, "op", op);
	tools_json_str(&j, "bundle", bundle);
	tools_json_bool(&j, "dry_run", dry_run);
	tools_json_u64(&j, "version", b->version);
	tools_json_u64(&j, "level", (uint64_t)b->level);
	tools_json_u64(&j, "held_bytes", b->held_bytes);
	tools_json_u64(&j, "frames", b->frames);
	tools_json_u64(&j, "stream_bytes", b->stream_bytes);
	tools_json_f64(&j, "seconds", secs);
	tools_json_arr_begin(&j, "needs");
	for (unsigned i = 0; i < b->nr_needs; i++)
		json_need(&j, &b->needs[i]);
	tools_json_arr_end(&j);
	tools_json_arr_begin(&j, "layers");
	for (unsigned i = 0; i < b->nr_layers; i++)
		json_layer(&j, b, i);
	tools_json_arr_end(&j);
	tools_json_obj_end(&j);
}

static void print_text(FILE *f, const char *head, const struct group_bundle_info *b,
		       bool unpacked)
{
	char h1[32], hex[33];

	fprintf(f, "%s: %u layer%s holding %s, %u need%s, zstd level %d\n", head, b->nr_layers,
		b->nr_layers == 1 ? "" : "s", tools_human_size(b->held_bytes, h1, sizeof h1),
		b->nr_needs, b->nr_needs == 1 ? "" : "s", b->level);
	for (unsigned i = 0; i < b->nr_needs; i++) {
		chain_digest_hex(b->needs[i].digest, hex);
		fprintf(f, "  needs   %s  CID %08x  digest %s%s%s\n", b->needs[i].name,
			b->needs[i].cid, hex, b->needs[i].path ? "  found: " : "",
			b->needs[i].path ? b->needs[i].path : "");
	}
	for (unsigned i = 0; i < b->nr_layers; i++) {
		const struct group_bundle_layer *l = &b->layers[i];
		const char *p = parent_name(b, l);
		fprintf(f, "  %-7s %s  %s", unpacked ? "create" : "layer",
			unpacked && l->path ? l->path : l->name, vmdk_subformat_name(l->kind));
		if (strcmp(l->source_type, vmdk_subformat_name(l->kind)))
			fprintf(f, " (was %s)", l->source_type);
		fprintf(f, "  CID %08x  over %s  %s%s\n", l->cid, p ? p : "nothing",
			tools_human_size(l->held_bytes, h1, sizeof h1), l->top ? "  (disk)" : "");
	}
}

static void summary(const char *op, const char *bundle, const struct group_bundle_info *b,
		    const struct args *a, double secs, FILE *f)
{
	char h1[32], *head = NULL;

	if (a->json) {
		print_json(f, op, bundle, b, a->dry_run, secs);
		return;
	}
	if (asprintf(&head, "%s %s%s", op, bundle, a->dry_run ? " (dry run: nothing written)"
							      : "") < 0)
		return;
	print_text(f, head, b, !strcmp(op, "unpack"));
	free(head);
	if (b->frames)
		fprintf(f, "%llu frames, %s in %.1f s\n", (unsigned long long)b->frames,
			tools_human_size(b->stream_bytes, h1, sizeof h1), secs);
}

/* ---- pack ------------------------------------------------------------------------------------- */

static const struct option pack_opts[] = {
	{"since", required_argument, NULL, 'S'},
	{"full", no_argument, NULL, 'F'},
	{"scan", required_argument, NULL, 's'},
	{"json", no_argument, NULL, 'j'},
	{"progress", no_argument, NULL, 'p'},
	{"output", required_argument, NULL, 'o'},
	{"list", no_argument, NULL, 'L'}, /* taken by wants_list, so --list=x is refused */
	{NULL, 0, NULL, 0},
};

static int list_run(int argc, char **argv);

static int parse_pack(int argc, char **argv, struct args *a)
{
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "l:T:o:p", pack_opts, NULL)) != -1) {
		if (c == 'S')
			a->since = optarg;
		else if (c == 'F')
			a->full = true;
		else if (c == 'j')
			a->json = true;
		else if (c == 'p')
			a->force = true;
		else if (c == 'o')
			a->out = optarg;
		else if (c == 's' && a->nr[0] < MAX_LIST)
			a->list[0][a->nr[0]++] = optarg;
		else if (c == 'l' && ((a->level = (int)strtol(optarg, &end, 10)) < 1 ||
				      a->level > 19 || *end))
			return tools_usage(&tools_cmd_pack, "-l takes a level from 1 to 19");
		else if (c == 'T' && ((a->threads = strtol(optarg, &end, 10)) < 0 ||
				      a->threads > 256 || *end))
			return tools_usage(&tools_cmd_pack, "-T takes 0 (every core) to 256");
		else if (c != 'l' && c != 'T')
			return tools_usage(&tools_cmd_pack, c == 's' ? "at most 64 --scan" : NULL);
	}
	if (!a->out)
		return tools_usage(&tools_cmd_pack, "-o FILE (or -o - for stdout) is required");
	if (a->full && a->since)
		return tools_usage(&tools_cmd_pack, "--since and --full exclude each other");
	if (optind == argc)
		return tools_usage(&tools_cmd_pack, "expected DISK...");
	return TOOLS_OK;
}

/* FILE's hidden temporary beside it: .FILE.vdelta-tmp */
static char *temp_of(const char *file)
{
	const char *slash = strrchr(file, '/');
	char *p;

	if (asprintf(&p, "%.*s.%s.vdelta-tmp", slash ? (int)(slash - file + 1) : 0, file,
		     slash ? slash + 1 : file) < 0)
		return NULL;
	return p;
}

/* The bundle's descriptor: stdout, or a new temporary beside FILE. */
static int open_out(const struct args *a, char **tmp)
{
	struct stat st;
	int fd;

	*tmp = NULL;
	if (!strcmp(a->out, "-")) {
		if (isatty(STDOUT_FILENO))
			tools_err("-o -: stdout is a terminal: not writing a bundle there");
		return isatty(STDOUT_FILENO) ? -ENOTTY : STDOUT_FILENO;
	}
	if (!lstat(a->out, &st)) {
		tools_err("%s: already exists: pack writes a new file", a->out);
		return -EEXIST;
	}
	if (!(*tmp = temp_of(a->out)))
		return -ENOMEM;
	unlink(*tmp); /* a stale one of an interrupted pack */
	fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0)
		tools_err("%s: %s", *tmp, strerror(errno));
	return fd < 0 ? -errno : fd;
}

/* The whole bundle is in the temporary: durable, then under its name. */
static int close_out(const struct args *a, int fd, const char *tmp, int rc)
{
	if (!tmp)
		return rc;
	if (!rc && (fsync(fd) || rename(tmp, a->out))) {
		rc = -errno;
		tools_err("%s: %s", a->out, strerror(errno));
	}
	close(fd);
	if (rc)
		unlink(tmp);
	return rc;
}

static int pack_run(int argc, char **argv)
{
	struct args a = { .threads = 0 };
	struct group_pack_opts o = {0};
	struct group_bundle_info *b = NULL;
	struct tools_progress pr;
	double t0 = now();
	char *tmp = NULL;
	int rc, fd;

	if (wants_list(argc, argv))
		return list_run(argc, argv);
	if ((rc = parse_pack(argc, argv, &a)) != TOOLS_OK)
		return rc;
	if ((fd = open_out(&a, &tmp)) < 0)
		return tools_fail(a.out, fd);
	tools_progress_init(&pr, 0, a.force);
	o = (struct group_pack_opts){ .since = a.since, .full = a.full, .level = a.level,
				      .threads = a.threads ? (unsigned)a.threads
							   : (unsigned)sysconf(_SC_NPROCESSORS_ONLN),
				      .progress = tools_progress_cb, .progress_opaque = &pr };
	rc = group_pack(argv + optind, (unsigned)(argc - optind), a.list[0], a.nr[0], &o, fd,
			NULL, &b);
	tools_progress_end(&pr, pr.total);
	rc = close_out(&a, fd, tmp, rc);
	free(tmp);
	if (!rc && (a.json || fd != STDOUT_FILENO))
		summary("pack", a.out, b, &a, now() - t0, fd == STDOUT_FILENO ? stderr : stdout);
	group_bundle_info_free(b);
	return rc ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_pack = {
	.name = "pack",
	.writes = true,
	TOOLS_PAGE(pack),
	.run = pack_run,
};

/* ---- pack --list -------------------------------------------------------------------------------- */

/* FILE, or stdin for "-". */
static int open_in(const char *file)
{
	int fd;

	if (!strcmp(file, "-"))
		return STDIN_FILENO;
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		tools_err("%s: %s", file, strerror(errno));
	return fd < 0 ? -errno : fd;
}

static int list_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{"list", no_argument, NULL, 'L'},
		{"json", no_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	struct args a = {0};
	struct group_bundle_info *b = NULL;
	int c, fd, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
		if (c == 'j')
			a.json = true;
		else if (c != 'L')
			return tools_usage(&tools_cmd_pack, NULL);
	if (optind != argc - 1)
		return tools_usage(&tools_cmd_pack, "expected one FILE");
	if ((fd = open_in(argv[optind])) < 0)
		return tools_fail(argv[optind], fd);
	rc = group_bundle_list(fd, argv[optind], &b);
	if (fd != STDIN_FILENO)
		close(fd);
	if (!rc)
		summary("bundle", argv[optind], b, &a, 0, stdout);
	group_bundle_info_free(b);
	return rc ? tools_fail(argv[optind], rc) : TOOLS_OK;
}


/* ---- unpack --------------------------------------------------------------------------------------- */

static int parse_unpack(int argc, char **argv, struct args *a)
{
	static const struct option opts[] = {
		{"base", required_argument, NULL, 'b'},
		{"scan", required_argument, NULL, 's'},
		{"dry-run", no_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},
		{"progress", no_argument, NULL, 'p'},
		{NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "np", opts, NULL)) != -1) {
		unsigned k = c == 'b';
		if (c == 'n')
			a->dry_run = true;
		else if (c == 'j')
			a->json = true;
		else if (c == 'p')
			a->force = true;
		else if ((c == 's' || c == 'b') && a->nr[k] < MAX_LIST)
			a->list[k][a->nr[k]++] = optarg;
		else
			return tools_usage(&tools_cmd_unpack, c == 's' || c == 'b'
					   ? "at most 64 --base and 64 --scan" : NULL);
	}
	if (optind != argc - 2)
		return tools_usage(&tools_cmd_unpack, "expected FILE|- and DIR");
	return TOOLS_OK;
}

static int unpack_run(int argc, char **argv)
{
	struct args a = {0};
	struct group_bundle_info *b = NULL;
	struct tools_progress pr;
	double t0 = now();
	int rc, fd;

	if ((rc = parse_unpack(argc, argv, &a)) != TOOLS_OK)
		return rc;
	if ((fd = open_in(argv[optind])) < 0)
		return tools_fail(argv[optind], fd);
	tools_progress_init(&pr, 0, a.force);
	struct group_unpack_opts o = {
		.bases = a.list[1], .nr_bases = a.nr[1], .scan = a.list[0], .nr_scan = a.nr[0],
		.flags = a.dry_run ? GROUP_DRY_RUN : 0,
		.progress = tools_progress_cb, .progress_opaque = &pr,
	};
	rc = group_unpack(fd, argv[optind], argv[optind + 1], &o, NULL, &b);
	tools_progress_end(&pr, pr.total);
	if (fd != STDIN_FILENO)
		close(fd);
	if (!rc)
		summary("unpack", argv[optind], b, &a, now() - t0, stdout);
	group_bundle_info_free(b);
	return rc ? tools_fail(argv[optind], rc) : TOOLS_OK;
}

const struct tools_cmd tools_cmd_unpack = {
	.name = "unpack",
	.writes = true,
	TOOLS_PAGE(unpack),
	.run = unpack_run,
};
