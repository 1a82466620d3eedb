/* chain — private declarations of the group operations (layer 2):
 * chain_group.c (discovery, sidecar records, plans), chain_intent.c (intent
 * records and recovery), chain_commit.c, chain_delete.c.  Never included
 * outside chain/. */
#ifndef VDELTA_CHAIN_GROUP_INT_H
#define VDELTA_CHAIN_GROUP_INT_H

#include "chain_int.h"

#define GROUP_MAX_RECORD 65536u /* bytes of a sidecar or intent record */
#define GROUP_MAX_LIST 4096u    /* children / files in one record */

struct chain_group {
	struct chain_tree *t;
	char ***unseen;      /* per node: recorded children not found */
	unsigned *nr_unseen;
	unsigned *users_unseen; /* unseen at the node or any layer above it */
};

/* A parsed intent record (chain_intent.c). */
struct group_intent {
	char *path;      /* the record itself */
	char *op;        /* "commit", "delete", "revert" */
	char *target;    /* the layer operated on */
	char *parent;    /* commit: the layer merged into; delete: kept parent */
	char *tmp;       /* revert: the new top before it is renamed in */
	bool unfreeze;   /* commit: the parent becomes a top */
	char **children; /* commit: re-pointed; delete: removed from a record */
	unsigned nr_children;
	char **files;    /* files to remove, in order */
	unsigned nr_files;
};

/* chain_group.c */
/* Write text to path durably: temp + fsync + rename + folder fsync. */
int group_write_file(const char *path, const char *text, size_t len,
		     const struct vd_io *io);
/* Read a small text file (at most GROUP_MAX_RECORD bytes); -ENOENT if none. */
int group_read_file(const char *path, char **out);
/* Replace in parent's sidecar the record of `gone` by `added` (either may be
 * NULL / empty). */
int group_record_update(const char *parent, const char *gone, char *const *added,
			unsigned nr_added, const struct vd_io *io);
int group_record_child(const char *parent, const char *child, bool add,
		       const struct vd_io *io);
int group_unlink(const char *path, const struct vd_io *io);
int plan_add(struct chain_plan *p, enum chain_step_kind kind, const char *path,
	     uint64_t bytes);
/* Free bytes in path's folder; refuse (-ENOSPC, reported) when short. */
int plan_space(struct chain_plan *p, const char *path);
/* Refuse (-EBUSY) changing node: names the other disks. */
int group_refuse_shared(const struct chain_group *g, int node, const char *what);
bool same_file(const char *a, const char *b);

/* chain_intent.c */
int intent_write(const struct group_intent *in, const struct vd_io *io);
int intent_read(const char *path, struct group_intent *out);
void intent_free(struct group_intent *in);
int intent_done(const struct group_intent *in, const struct vd_io *io);
/* in: op on path with a hidden temporary .NAME.vdelta-OP.vmdk beside it. */
int intent_init_tmp(const char *path, const char *op, struct group_intent *in);
/* Paths of every file of the layer at path (descriptor first). */
int layer_files(const char *path, char ***files, unsigned *nr);
void strv_free(char **v, unsigned n);
int strv_add(char ***v, unsigned *n, const char *s);

/* chain_rewrite.c: replace the layer at path by a fresh monolithicSparse
 * copy (same CID and DDB keys) swapped in by rename.  flatten=false: the
 * layer alone, same parent; true: the content of its whole chain, no
 * parent.  unrecord_from (may be NULL): drop the layer from that layer's
 * sidecar record before the swap.  layer_rewrite_check: -ENOTSUP
 * (reported) when the layer is not a single-file monolithicSparse. */
int layer_rewrite(const char *path, const char *op, bool flatten,
		  const char *unrecord_from, struct chain_plan *plan,
		  const struct vd_io *io);
int layer_rewrite_check(const char *path);

/* chain_commit.c / chain_delete.c: resume from an intent record */
int commit_resume(const struct group_intent *in, const struct vd_io *io);
int delete_resume(const struct group_intent *in, const struct vd_io *io);
int revert_resume(const struct group_intent *in, const struct vd_io *io);

#endif
