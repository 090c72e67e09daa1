/* libcurl and libcrypto, loaded when a cluster target first needs them (kube_dl_load)
 * instead of linked: linked, their ~25 shared objects (OpenSSL, GnuTLS, Kerberos,
 * LDAP... that Debian's libcurl brings) were mapped and initialised at every trace-run
 * start, +5 ms for local targets that never use them. Include this instead of
 * <curl/curl.h> and <openssl/...>: the calls below go through the loaded pointers, and
 * are valid only after kube_dl_load succeeded. Private to kube/. */
#ifndef HERMIT_KUBE_DL_H
#define HERMIT_KUBE_DL_H

#define CURL_DISABLE_TYPECHECK /* its checking macros would hide the pointers below */
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "util/util.h"

struct kube_dl {
	CURLcode (*curl_global_init)(long flags);
	CURL *(*curl_easy_init)(void);
	void (*curl_easy_cleanup)(CURL *h);
	CURLcode (*curl_easy_setopt)(CURL *h, CURLoption option, ...);
	CURLcode (*curl_easy_getinfo)(CURL *h, CURLINFO info, ...);
	CURLcode (*curl_easy_perform)(CURL *h);
	CURLcode (*curl_easy_recv)(CURL *h, void *buf, size_t len, size_t *n);
	CURLcode (*curl_easy_send)(CURL *h, const void *buf, size_t len, size_t *n);
	const char *(*curl_easy_strerror)(CURLcode rc);
	struct curl_slist *(*curl_slist_append)(struct curl_slist *l, const char *s);
	void (*curl_slist_free_all)(struct curl_slist *l);
	int (*EVP_Digest)(const void *data, size_t count, unsigned char *md, unsigned int *size,
			  const EVP_MD *type, ENGINE *impl);
	const EVP_MD *(*EVP_sha1)(void);
	void (*OPENSSL_thread_stop)(void);
};
extern struct kube_dl kube_dl;

/* Load both libraries and every pointer, once (thread-safe); < 0 names what is missing. */
int kube_dl_load(struct hm_err *err);

#ifndef KUBE_DL_IMPL
/* curl.h defines these two as argument-count macros of themselves */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init kube_dl.curl_global_init
#define curl_easy_init kube_dl.curl_easy_init
#define curl_easy_cleanup kube_dl.curl_easy_cleanup
#define curl_easy_setopt kube_dl.curl_easy_setopt
#define curl_easy_getinfo kube_dl.curl_easy_getinfo
#define curl_easy_perform kube_dl.curl_easy_perform
#define curl_easy_recv kube_dl.curl_easy_recv
#define curl_easy_send kube_dl.curl_easy_send
#define curl_easy_strerror kube_dl.curl_easy_strerror
#define curl_slist_append kube_dl.curl_slist_append
#define curl_slist_free_all kube_dl.curl_slist_free_all
#define EVP_Digest kube_dl.EVP_Digest
#define EVP_sha1 kube_dl.EVP_sha1
#define OPENSSL_thread_stop kube_dl.OPENSSL_thread_stop
#endif

#endif
