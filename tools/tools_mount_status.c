/* tools — `vdelta mount --status` and the daemon lookup of `umount` (top
 * layer).
 *
 * Owns: reading a mount's control file (MOUNTPOINT/.vdelta-status, written
 * by fuse/fuse_status.c: records of tab-separated key=value fields) and
 * printing it as a table or JSON.  Numbers are printed as the daemon
 * counted them; nothing is computed here but sums for the table.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

#include "fuse_front.h"
#include "tools.h"

#define MAX_FIELDS (24 + CHAIN_MAX_DEPTH)

struct record {
	char *kind;
	unsigned nr;
	char *key[MAX_FIELDS], *val[MAX_FIELDS];
};

/* Split one line in place. */
static void parse_record(char *line, struct record *r)
{
	char *save = NULL, *tok = strtok_r(line, "\t\n", &save);

	r->kind = tok ? tok : "";
	r->nr = 0;
	while ((tok = strtok_r(NULL, "\t\n", &save)) && r->nr < MAX_FIELDS) {
		char *eq = strchr(tok, '=');
		if (!eq)
			continue;
		*eq = '\0';
		r->key[r->nr] = tok;
		r->val[r->nr++] = eq + 1;
	}
}

static const char *field(const struct record *r, const char *key)
{
	for (unsigned i = 0; i < r->nr; i++)
		if (!strcmp(r->key[i], key))
			return r->val[i];
	return "";
}

static uint64_t num(const struct record *r, const char *key)
{
	return strtoull(field(r, key), NULL, 10);
}

static bool is_number_key(const char *k)
{
	return fuse_status_numeric(k);
}

/* The control file's lines (malloc'd array of malloc'd lines). */
static int read_status(const char *mnt, char ***lines, unsigned *nr)
{
	char *path = vd_path_join(mnt, FUSE_FRONT_STATUS), *line = NULL;
	FILE *f = path ? fopen(path, "r") : NULL;
	size_t cap = 0;
	int err = f ? 0 : path ? -errno : -ENOMEM;

	*lines = NULL;
	*nr = 0;
	if (err == -ENOENT || err == -ENOTDIR)
		tools_err("%s: not a vdelta mount (no %s)", mnt, FUSE_FRONT_STATUS);
	while (!err && getline(&line, &cap, f) > 0) {
		char **v = realloc(*lines, (*nr + 1) * sizeof *v);
		if (!v || !(v[*nr] = strdup(line))) {
			err = -ENOMEM;
			*lines = v ? v : *lines;
			break;
		}
		*lines = v;
		(*nr)++;
	}
	free(line);
	free(path);
	if (f)
		fclose(f);
	return err;
}

static void free_lines(char **lines, unsigned nr)
{
	for (unsigned i = 0; i < nr; i++)
		free(lines[i]);
	free(lines);
}

int tools_mount_pid(const char *mnt, long *pid)
{
	char **lines;
	unsigned nr;
	struct record r;
	int err = read_status(mnt, &lines, &nr);

	if (!err && nr) {
		parse_record(lines[0], &r);
		*pid = (long)num(&r, fuse_status_key(FUSE_STATUS_PID));
	}
	if (!err && (!nr || *pid <= 0)) {
		tools_err("%s: the status file names no daemon", mnt);
		err = -EINVAL;
	}
	free_lines(lines, nr);
	return err;
}

static bool is_layer_key(const char *k)
{
	return !strncmp(k, "layer", 5) && k[5] >= '0' && k[5] <= '9';
}

/* One record as an object; layerI_bytes become one array "layer_bytes"
 * (index = layer, 0 the top), empty strings null. */
static void json_record(struct tools_json *j, const struct record *r, const char *key)
{
	bool layers = false;

	tools_json_obj_begin(j, key);
	for (unsigned i = 0; i < r->nr; i++) {
		if (is_layer_key(r->key[i]))
			layers = true;
		else if (is_number_key(r->key[i]))
			tools_json_u64(j, r->key[i], strtoull(r->val[i], NULL, 10));
		else
			tools_json_str(j, r->key[i], *r->val[i] ? r->val[i] : NULL);
	}
	if (layers) {
		tools_json_arr_begin(j, "layer_bytes");
		for (unsigned i = 0; i < r->nr; i++)
			if (is_layer_key(r->key[i]))
				tools_json_u64(j, NULL, strtoull(r->val[i], NULL, 10));
		tools_json_arr_end(j);
	}
	tools_json_obj_end(j);
}

static void print_json(char **lines, unsigned nr)
{
	struct tools_json j;
	struct record r;

	tools_json_init(&j, stdout);
	tools_json_obj_begin(&j, NULL);
	parse_record(lines[0], &r);
	json_record(&j, &r, "mount");
	tools_json_arr_begin(&j, "disks");
	for (unsigned i = 1; i < nr; i++) {
		parse_record(lines[i], &r);
		json_record(&j, &r, NULL);
	}
	tools_json_arr_end(&j);
	tools_json_obj_end(&j);
	fputc('\n', stdout);
}

static void print_disk(const struct record *r)
{
	char a[32], b[32];
	unsigned layers = (unsigned)num(r, fuse_status_key(FUSE_STATUS_LAYERS));

	printf("%s (%s, %s, %u layers)\n", field(r, fuse_status_key(FUSE_STATUS_NAME)), field(r, fuse_status_key(FUSE_STATUS_MODE)),
	       tools_human_size(num(r, fuse_status_key(FUSE_STATUS_SIZE)), a, sizeof a), layers);
	printf("  reads %llu, %s   writes %llu, %s   flushes %llu   cow grains %llu\n",
	       (unsigned long long)num(r, fuse_status_key(FUSE_STATUS_READS)),
	       tools_human_size(num(r, fuse_status_key(FUSE_STATUS_READ_BYTES)), a, sizeof a),
	       (unsigned long long)num(r, fuse_status_key(FUSE_STATUS_WRITES)),
	       tools_human_size(num(r, fuse_status_key(FUSE_STATUS_WRITE_BYTES)), b, sizeof b),
	       (unsigned long long)num(r, fuse_status_key(FUSE_STATUS_FLUSHES)), (unsigned long long)num(r, fuse_status_key(FUSE_STATUS_COW_GRAINS)));
	printf("  read from:");
	for (unsigned i = 0; i < layers; i++) {
		char key[32];
		snprintf(key, sizeof key, FUSE_STATUS_LAYER_KEY, i);
		printf(" layer %u %s,", i, tools_human_size(num(r, key), a, sizeof a));
	}
	printf(" zeros %s, walked %s\n", tools_human_size(num(r, fuse_status_key(FUSE_STATUS_ZERO_BYTES)), a, sizeof a),
	       tools_human_size(num(r, fuse_status_key(FUSE_STATUS_WALKED_BYTES)), b, sizeof b));
}

int tools_mount_status(const char *mnt, bool json)
{
	char **lines;
	unsigned nr;
	struct record r;
	int err = read_status(mnt, &lines, &nr);

	if (!err && !nr)
		err = -EIO;
	if (err) {
		free_lines(lines, nr);
		return tools_fail(mnt, err);
	}
	if (json) {
		print_json(lines, nr);
	} else {
		parse_record(lines[0], &r);
		printf("%s: pid %s, cache %s, disks %s, shared layer files open %s\n",
		       field(&r, fuse_status_key(FUSE_STATUS_MOUNTPOINT)), field(&r, fuse_status_key(FUSE_STATUS_PID)), field(&r, fuse_status_key(FUSE_STATUS_CACHE)),
		       field(&r, fuse_status_key(FUSE_STATUS_DISKS)), field(&r, fuse_status_key(FUSE_STATUS_POOL_LAYERS)));
		for (unsigned i = 1; i < nr; i++) {
			parse_record(lines[i], &r);
			print_disk(&r);
		}
	}
	free_lines(lines, nr);
	return TOOLS_OK;
}
