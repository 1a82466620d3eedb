/* rbd — the connection to a Ceph cluster (layer 4, over librados).
 *
 * Owns: turning a struct rbd_target into a connected cluster handle and an
 * I/O context on a pool: the conf file (or librados' own search), the
 * client id, a keyring, $CEPH_ARGS, and the timeouts that bound every
 * wait on the cluster (connecting, monitor and OSD operations), so an
 * unreachable cluster is an error after timeout_s, not a hang.  Each
 * failure is reported once, saying what to check: the conf file, the key,
 * the monitors' address, the pool.  The Ceph libraries are loaded here
 * (rbd_lib.c): every call into them follows a connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "rbd_int.h"

static int conf_set(struct rbd_conn *c, const char *key, const char *val)
{
	int err = rados_conf_set(c->cluster, key, val);

	if (err < 0)
		vd_err("ceph: cannot set %s = %s: %s", key, val, strerror(-err));
	return err;
}

/* client_mount_timeout bounds the connection, the others each operation. */
static int set_timeouts(struct rbd_conn *c, unsigned secs)
{
	static const char *const keys[] = {
		"client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout",
	};
	char val[16];
	int err = 0;

	snprintf(val, sizeof val, "%u", secs);
	for (size_t i = 0; !err && i < sizeof keys / sizeof keys[0]; i++)
		err = conf_set(c, keys[i], val);
	return err;
}

static int read_conf(struct rbd_conn *c, const struct rbd_target *t)
{
	int err = rados_conf_read_file(c->cluster, t->conf);

	if (err < 0) {
		if (t->conf)
			vd_err("%s: cannot read the Ceph configuration: %s", t->conf,
			       strerror(-err));
		else
			vd_err("no Ceph configuration found ($CEPH_CONF, /etc/ceph/ceph.conf, "
			       "~/.ceph/config, ./ceph.conf): name one with --conf");
		return err;
	}
	err = rados_conf_parse_env(c->cluster, NULL);
	if (err < 0)
		vd_err("ceph: $CEPH_ARGS: %s", strerror(-err));
	if (!err && t->keyring)
		err = conf_set(c, "keyring", t->keyring);
	return err;
}

static void connect_error(const struct rbd_conn *c, const struct rbd_target *t, int err,
			  unsigned secs)
{
	if (err == -ETIMEDOUT || err == -EINTR)
		vd_err("ceph: no monitor answered within %u s (mon_host in %s): is the "
		       "cluster up and reachable?", secs, t->conf ? t->conf : "the conf");
	else if (err == -EACCES || err == -EPERM)
		vd_err("ceph: the cluster refused %s: wrong key or no such user (keyring %s)",
		       c->who, t->keyring ? t->keyring : "from the conf");
	else if (err == -ENOENT)
		vd_err("ceph: no key for %s: give its keyring with --keyring", c->who);
	else
		vd_err("ceph: cannot connect as %s: %s", c->who, strerror(-err));
}

int rbd_conn_open(const struct rbd_target *t, struct rbd_conn *c)
{
	unsigned secs = t->timeout_s ? t->timeout_s : RBD_DEFAULT_TIMEOUT_S;
	int err;

	memset(c, 0, sizeof *c);
	err = rbd_lib_load();
	if (err)
		return err;
	if (asprintf(&c->who, "client.%s", t->id ? t->id : "admin") < 0) {
		c->who = NULL;
		return -ENOMEM;
	}
	err = rados_create(&c->cluster, t->id);
	if (err < 0) {
		vd_err("ceph: cannot create a client as %s: %s", c->who, strerror(-err));
		c->cluster = NULL;
		return err;
	}
	err = read_conf(c, t);
	if (!err)
		err = set_timeouts(c, secs);
	if (!err) {
		err = rados_connect(c->cluster);
		if (err < 0)
			connect_error(c, t, err, secs);
	}
	c->connected = !err;
	if (!err)
		err = rbd_conn_pool(c, t->pool ? t->pool : RBD_DEFAULT_POOL, &c->io);
	if (!err)
		c->pool = strdup(t->pool ? t->pool : RBD_DEFAULT_POOL);
	if (!err && !c->pool)
		err = -ENOMEM;
	return err;
}

int rbd_conn_pool(struct rbd_conn *c, const char *pool, rados_ioctx_t *io)
{
	int err = rados_ioctx_create(c->cluster, pool, io);

	if (err == -ENOENT)
		vd_err("ceph: pool %s does not exist", pool);
	else if (err < 0)
		vd_err("ceph: pool %s: %s", pool, strerror(-err));
	return err;
}

void rbd_conn_close(struct rbd_conn *c)
{
	if (c->io)
		rados_ioctx_destroy(c->io);
	if (c->cluster)
		rados_shutdown(c->cluster);
	free(c->pool);
	free(c->who);
	memset(c, 0, sizeof *c);
}
