/* kube/dl.h: libcurl and libcrypto by dlopen, at the first cluster target. */
#define KUBE_DL_IMPL
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "kube/dl.h"

struct kube_dl kube_dl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static struct hm_err load_err;

static void *open_lib(const char *name)
{
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		hm_err_set(&load_err, ELIBACC, "%s (install libcurl4-openssl-dev / libssl3): %s",
			   name, dlerror());
	return h;
}

/* one symbol into *slot; false (load_err set) when it is missing */
static bool sym(void *lib, const char *name, void *slot)
{
	void *p = dlsym(lib, name);
	if (!p) {
		hm_err_set(&load_err, ELIBBAD, "%s has no %s", lib ? "a library" : "?", name);
		return false;
	}
	memcpy(slot, &p, sizeof(p));
	return true;
}

static void load(void)
{
	/* the handles stay open for the process's life: the pointers point into them */
	void *curl = open_lib("libcurl.so.4");
	void *crypto = curl ? open_lib("libcrypto.so.3") : NULL;
	if (!curl || !crypto)
		return;
	struct kube_dl d;
	bool ok = sym(curl, "curl_global_init", &d.curl_global_init) &&
		  sym(curl, "curl_easy_init", &d.curl_easy_init) &&
		  sym(curl, "curl_easy_cleanup", &d.curl_easy_cleanup) &&
		  sym(curl, "curl_easy_setopt", &d.curl_easy_setopt) &&
		  sym(curl, "curl_easy_getinfo", &d.curl_easy_getinfo) &&
		  sym(curl, "curl_easy_perform", &d.curl_easy_perform) &&
		  sym(curl, "curl_easy_recv", &d.curl_easy_recv) &&
		  sym(curl, "curl_easy_send", &d.curl_easy_send) &&
		  sym(curl, "curl_easy_strerror", &d.curl_easy_strerror) &&
		  sym(curl, "curl_slist_append", &d.curl_slist_append) &&
		  sym(curl, "curl_slist_free_all", &d.curl_slist_free_all) &&
		  sym(crypto, "EVP_Digest", &d.EVP_Digest) &&
		  sym(crypto, "EVP_sha1", &d.EVP_sha1) &&
		  sym(crypto, "OPENSSL_thread_stop", &d.OPENSSL_thread_stop);
	if (ok)
		kube_dl = d;
}

int kube_dl_load(struct hm_err *err)
{
	pthread_once(&load_once, load);
	if (!kube_dl.OPENSSL_thread_stop)
		return hm_err_set(err, load_err.code ? load_err.code : ELIBACC,
				  "cluster targets need libcurl and libcrypto: %s", load_err.msg);
	return 0;
}
