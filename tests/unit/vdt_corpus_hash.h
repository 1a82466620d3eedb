/* tests — corpus oracles for the stream/COWD/seSparse unit tests (test
 * layer).  Looks a file's expected SHA-256 up in the
 * corpus INDEX.md (written by the corpus collector from qemu-img/libvmdk
 * output, independent of this code) and hashes a disk's content read
 * through the vmdk API.  SHA-256 comes from libcrypto when built with it
 * (VDT_HAVE_LIBCRYPTO), else from sha256sum through a pipe (disks up to
 * 2 GiB; bigger ones skip). */
#ifndef VDELTA_VDT_CORPUS_HASH_H
#define VDELTA_VDT_CORPUS_HASH_H

#include <ctype.h>

#include "vdtest.h"
#include "vmdk.h"

#ifdef VDT_HAVE_LIBCRYPTO
#include <openssl/evp.h>
#endif

/* The first 64-hex-digit run after `key` in INDEX.md, or false. */
static inline bool vdt_index_sha256(const char *key, char out[65])
{
	char *idx = vdt_corpus_path("INDEX.md");
	size_t len;
	char *text = idx ? (char *)vdt_slurp(idx, &len) : NULL;
	const char *p = text ? strstr(text, key) : NULL;
	bool found = false;

	for (; p && *p && !found; p++) {
		size_t n = 0;
		while (isxdigit((unsigned char)p[n]) && !isupper((unsigned char)p[n]))
			n++;
		if (n == 64 && p[-1] == '`' && p[64] == '`') {
			memcpy(out, p, 64);
			out[64] = 0;
			found = true;
		}
		p += n;
	}
	free(text);
	free(idx);
	return found;
}

/* SHA-256 of the whole disk into hex.  Disks up to `full_read_limit`
 * bytes are read entirely through vmdk_pread; bigger ones are walked by
 * block status and only data runs are read (zero and unallocated runs hash
 * as zeros).  libcrypto when built with it, else sha256sum through a pipe
 * (slow: disks over 2 GiB give -ENOTSUP, callers skip). */
struct vdt_sha {
#ifdef VDT_HAVE_LIBCRYPTO
	EVP_MD_CTX *ctx;
#else
	FILE *pipe;
	char *dir, *out;
#endif
};

#ifdef VDT_HAVE_LIBCRYPTO
static inline int vdt_sha_init(struct vdt_sha *s, uint64_t len)
{
	(void)len;
	s->ctx = EVP_MD_CTX_new();
	return s->ctx && EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) ? 0 : -ENOMEM;
}
static inline void vdt_sha_update(struct vdt_sha *s, const void *p, size_t n)
{
	EVP_DigestUpdate(s->ctx, p, n);
}
static inline int vdt_sha_final(struct vdt_sha *s, char hex[65], int err)
{
	uint8_t md[32];

	if (!err)
		EVP_DigestFinal_ex(s->ctx, md, NULL);
	for (int i = 0; !err && i < 32; i++)
		sprintf(hex + 2 * i, "%02x", md[i]);
	EVP_MD_CTX_free(s->ctx);
	return err;
}
#else
static inline int vdt_sha_init(struct vdt_sha *s, uint64_t len)
{
	char cmd[4200];

	if (len > (2ull << 30) || !vdt_have("sha256sum"))
		return -ENOTSUP;
	s->dir = vdt_mkdtemp("sha");
	s->out = s->dir ? vdt_join(s->dir, "sum") : NULL;
	if (!s->out)
		return -ENOMEM;
	snprintf(cmd, sizeof cmd, "sha256sum > '%s'", s->out);
	s->pipe = popen(cmd, "w");
	return s->pipe ? 0 : -errno;
}
static inline void vdt_sha_update(struct vdt_sha *s, const void *p, size_t n)
{
	fwrite(p, 1, n, s->pipe);
}
static inline int vdt_sha_final(struct vdt_sha *s, char hex[65], int err)
{
	size_t len;
	char *text;

	if (pclose(s->pipe) && !err)
		err = -EIO;
	text = err ? NULL : (char *)vdt_slurp(s->out, &len);
	if (text && len >= 64) {
		memcpy(hex, text, 64);
		hex[64] = 0;
	} else if (!err) {
		err = -EIO;
	}
	free(text);
	vdt_rmtree(s->dir);
	free(s->dir);
	free(s->out);
	return err;
}
#endif

static inline int vdt_disk_sha256(struct vmdk_disk *d, uint64_t full_read_limit,
				  char hex[65])
{
	const size_t chunk = 1u << 20;
	uint64_t cap = vmdk_capacity(d), off = 0;
	uint8_t *buf = malloc(chunk), *zero = calloc(1, chunk);
	struct vdt_sha sha;
	int err = buf && zero ? vdt_sha_init(&sha, cap) : -ENOMEM;

	if (err) {
		free(buf);
		free(zero);
		return err;
	}
	while (!err && off < cap) {
		uint64_t run = VD_MIN(cap - off, (uint64_t)chunk);
		enum vmdk_bs kind = VMDK_BS_DATA;
		if (cap > full_read_limit)
			err = vmdk_block_status(d, off, run, &kind, &run);
		if (!err && kind == VMDK_BS_DATA)
			err = vmdk_pread(d, buf, (size_t)run, off);
		if (!err)
			vdt_sha_update(&sha, kind == VMDK_BS_DATA ? buf : zero,
				       (size_t)run);
		off += run;
	}
	free(buf);
	free(zero);
	return vdt_sha_final(&sha, hex, err);
}

#endif
