/* rbd — librados and librbd, loaded on first use (layer 4).
 *
 * Owns: the table of the Ceph client functions the layer calls
 * (rbd_int.h, RBD_LIB_*), filled from librados.so.2 and librbd.so.1 by
 * dlopen the first time a connection is made.  The libraries stay loaded
 * until the process exits (librados' threads outlive a shutdown).
 */
#define _GNU_SOURCE
#define RBD_LIB_LOADER
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>

#include "rbd_int.h"

struct rbd_lib rbd_lib;

static int lib_err;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void *lib_open(const char *name)
{
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);

	if (!h)
		vd_err("cannot load %s (Debian: apt-get install librbd1): %s", name,
		       dlerror());
	return h;
}

static int lib_sym(void *h, const char *lib, const char *name, void **out)
{
	*out = h ? dlsym(h, name) : NULL;
	if (h && !*out)
		vd_err("%s has no %s: librbd 16 (Ceph Pacific) or newer is needed", lib,
		       name);
	return *out ? 0 : -ENOSYS;
}

static void lib_load(void)
{
	void *rados = lib_open("librados.so.2");
	void *rbd = rados ? lib_open("librbd.so.1") : NULL;
	int err = rbd ? 0 : -ENOSYS;

#define X(f) if (!err) err = lib_sym(rados, "librados.so.2", #f, (void **)&rbd_lib.f##_fn);
	RBD_LIB_RADOS
#undef X
#define X(f) if (!err) err = lib_sym(rbd, "librbd.so.1", #f, (void **)&rbd_lib.f##_fn);
	RBD_LIB_RBD
#undef X
	lib_err = err;
}

int rbd_lib_load(void)
{
	pthread_once(&lib_once, lib_load);
	return lib_err;
}
