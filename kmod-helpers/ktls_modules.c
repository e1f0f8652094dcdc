#include "ktls_modules.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef KG_HAVE_KMOD
#include <libkmod.h>
#endif

/* gcm needs ctr and ghash at crypto_alloc time (not symbol dependencies), so
 * modprobe's dependency walk alone would leave AES-GCM unusable. */
static const char *const modules[] = {
	"tls", "gcm", "ctr", "ghash-generic", "chacha20poly1305",
};

static int tls_present(void)
{
	struct stat st;

	return stat("/sys/module/tls", &st) == 0;
}

#ifdef KG_HAVE_KMOD
static int load_one(struct kmod_ctx *ctx, const char *name, char *err, size_t errlen)
{
	struct kmod_list *list = NULL, *it;
	int rc = kmod_module_new_from_lookup(ctx, name, &list);

	if (rc < 0 || !list) {
		snprintf(err, errlen, "module %s not found for kernel", name);
		return -1;
	}
	kmod_list_foreach(it, list) {
		struct kmod_module *mod = kmod_module_get_module(it);
		rc = kmod_module_probe_insert_module(mod, KMOD_PROBE_APPLY_BLACKLIST, NULL, NULL,
						     NULL, NULL);
		if (rc < 0 && rc != -EEXIST)
			snprintf(err, errlen, "loading module %s: %s", name, strerror(-rc));
		kmod_module_unref(mod);
	}
	kmod_module_unref_list(list);
	return rc < 0 && rc != -EEXIST ? -1 : 0;
}

int kg_ktls_load_modules(char *err, size_t errlen)
{
	struct kmod_ctx *ctx;
	char ignored[160];

	if (tls_present())
		return 0;
	if (geteuid() != 0) {
		snprintf(err, errlen, "tls module not loaded and not root to load it");
		return -1;
	}
	ctx = kmod_new(NULL, NULL);
	if (!ctx) {
		snprintf(err, errlen, "libkmod: cannot read the module index");
		return -1;
	}
	int rc = load_one(ctx, modules[0], err, errlen);
	for (size_t i = 1; rc == 0 && i < sizeof(modules) / sizeof(modules[0]); i++)
		load_one(ctx, modules[i], ignored, sizeof(ignored)); /* optional ciphers */
	kmod_unref(ctx);
	return rc;
}
#else
int kg_ktls_load_modules(char *err, size_t errlen)
{
	(void)modules;
	if (tls_present())
		return 0;
	snprintf(err, errlen, "tls module not loaded (built without libkmod)");
	return -1;
}
#endif
