/* The API server over libcurl: the client's lifetime, credentials (static, tokenFile,
 * exec plugin cached until its expirationTimestamp), TLS as the kubeconfig says, GET
 * of JSON objects, and the one-line errors every failure becomes. */
#include <string.h>
#include <sys/socket.h>

#include "kube/dl.h"
#include "kube/internal.h"

#define KUBE_CONNECT_TIMEOUT_MS 10000
#define KUBE_REQUEST_TIMEOUT_MS 30000
#define KUBE_BODY_MAX (64u << 20)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int kube_open(const struct kube_opts *opts, struct kube **out, struct hm_err *err)
{
	if (kube_dl_load(err) < 0)
		return -1;
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK)
		return hm_err_set(err, EIO, "libcurl: %s", curl_easy_strerror(curl_init_rc));
	struct kube *k = calloc(1, sizeof(*k));
	if (!k)
		return hm_err_set(err, ENOMEM, "kube");
	if (kube_config_load(opts, &k->cfg, err) < 0) {
		free(k);
		return -1;
	}
	pthread_mutex_init(&k->cred_lock, NULL);
	const char *ns = opts->namespace && opts->namespace[0] ? opts->namespace
			 : k->cfg.namespace		       ? k->cfg.namespace
							       : "default";
	if (kube_copy(k->namespace, sizeof(k->namespace), ns, "namespace", err) < 0) {
		kube_close(k);
		return -1;
	}
	*out = k;
	return 0;
}

void kube_close(struct kube *k)
{
	if (!k)
		return;
	/* the pumps end as soon as their sockets are closed; let them, so that no
	 * connection is cut mid-close and their TLS state is freed */
	kube_portforward_wait(2000);
	while (k->pf) {
		struct kube_pf_target *next = k->pf->next;
		free(k->pf);
		k->pf = next;
	}
	kube_cred_free(&k->cred);
	kube_config_free(&k->cfg);
	pthread_mutex_destroy(&k->cred_lock);
	free(k);
}

void kube_closep(struct kube **k)
{
	kube_close(*k);
	*k = NULL;
}

const char *kube_namespace(const struct kube *k)
{
	return k->namespace;
}

const char *kube_server(const struct kube *k)
{
	return k->cfg.server;
}

const char *kube_context(const struct kube *k)
{
	return k->cfg.context;
}

static int cred_copy(const struct kube_cred *from, struct kube_cred *to, struct hm_err *err)
{
	memset(to, 0, sizeof(*to));
	to->expires = from->expires;
	if ((from->token && !(to->token = strdup(from->token))) ||
	    (from->cert_data &&
	     !(to->cert_data = (unsigned char *)strdup((char *)from->cert_data))) ||
	    (from->key_data && !(to->key_data = (unsigned char *)strdup((char *)from->key_data)))) {
		kube_cred_free(to);
		return hm_err_set(err, ENOMEM, "credentials");
	}
	to->cert_len = from->cert_len;
	to->key_len = from->key_len;
	return 0;
}

int kube_current_cred(struct kube *k, struct kube_cred *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (k->cfg.exec) {
		pthread_mutex_lock(&k->cred_lock);
		int rc = 0;
		if (!k->cred_valid || (k->cred.expires && time(NULL) >= k->cred.expires)) {
			kube_cred_free(&k->cred);
			k->cred_valid = false;
			rc = kube_exec_run(k->cfg.exec, k->cfg.server, &k->cred, err);
			if (rc == 0) {
				k->cred_valid = true;
				k->exec_runs++;
				hm_info("exec plugin %s gave credentials%s", k->cfg.exec->command,
					k->cred.expires ? " with an expiry" : "");
			}
		}
		if (rc == 0)
			rc = cred_copy(&k->cred, out, err);
		pthread_mutex_unlock(&k->cred_lock);
		return rc;
	}
	if (k->cfg.token)
		return (out->token = strdup(k->cfg.token)) ? 0 : hm_err_set(err, ENOMEM, "token");
	if (k->cfg.token_file) {
		/* not client_token_load: service account tokens (JWTs) are longer than the
		 * agent's tokens */
		char *text = NULL;
		size_t len = 0;
		if (hm_read_file(k->cfg.token_file, &text, &len, err) < 0)
			return hm_err_prefix(err, "tokenFile of user %s", k->cfg.user);
		char *start = text + strspn(text, " \t\r\n");
		size_t n = strcspn(start, "\r\n");
		while (n && (start[n - 1] == ' ' || start[n - 1] == '\t'))
			n--;
		int rc = 0;
		if (!n)
			rc = hm_err_plain(err, EINVAL, "tokenFile %s of user %s is empty",
					  k->cfg.token_file, k->cfg.user);
		else if (!(out->token = strndup(start, n)))
			rc = hm_err_set(err, ENOMEM, "token");
		explicit_bzero(text, len);
		free(text);
		return rc;
	}
	return 0;
}

static void set_blob(CURL *c, CURLoption opt, const void *data, size_t len)
{
	struct curl_blob blob = {.data = (void *)data, .len = len, .flags = CURL_BLOB_COPY};
	curl_easy_setopt(c, opt, &blob);
}

/* libcurl's sockets are not O_CLOEXEC: a program trace-run starts would inherit the
 * connection that carries the user's credentials */
static curl_socket_t open_cloexec(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	(void)arg;
	(void)purpose;
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

void *kube_curl_new(struct kube *k, const struct kube_cred *cred, struct hm_err *err)
{
	CURL *c = curl_easy_init();
	if (!c) {
		hm_err_set(err, ENOMEM, "libcurl");
		return NULL;
	}
	const struct kube_config *cfg = &k->cfg;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_cloexec);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)KUBE_CONNECT_TIMEOUT_MS);
	/* port-forward is an HTTP/1.1 upgrade: never let ALPN pick h2 */
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
	if (cfg->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (cfg->ca_data) {
		set_blob(c, CURLOPT_CAINFO_BLOB, cfg->ca_data, cfg->ca_data_len);
	} else if (cfg->ca_file) {
		curl_easy_setopt(c, CURLOPT_CAINFO, cfg->ca_file);
	}
	if (cred && cred->cert_data && cred->key_data) {
		set_blob(c, CURLOPT_SSLCERT_BLOB, cred->cert_data, cred->cert_len);
		set_blob(c, CURLOPT_SSLKEY_BLOB, cred->key_data, cred->key_len);
	} else {
		if (cfg->cert_data)
			set_blob(c, CURLOPT_SSLCERT_BLOB, cfg->cert_data, cfg->cert_data_len);
		else if (cfg->cert_file)
			curl_easy_setopt(c, CURLOPT_SSLCERT, cfg->cert_file);
		if (cfg->key_data)
			set_blob(c, CURLOPT_SSLKEY_BLOB, cfg->key_data, cfg->key_data_len);
		else if (cfg->key_file)
			curl_easy_setopt(c, CURLOPT_SSLKEY, cfg->key_file);
	}
	if (cfg->proxy_url)
		curl_easy_setopt(c, CURLOPT_PROXY, cfg->proxy_url);
	return c;
}

int kube_curl_error(struct kube *k, int code, const char *detail, struct hm_err *err)
{
	const char *server = k->cfg.server;
	const char *why = detail && detail[0] ? detail : curl_easy_strerror((CURLcode)code);
	switch (code) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return hm_err_plain(err, EHOSTUNREACH, "cannot reach the API server %s: %s", server,
				    why);
	case CURLE_COULDNT_CONNECT:
		return hm_err_plain(err, ECONNREFUSED, "cannot reach the API server %s: %s", server,
				    why);
	case CURLE_OPERATION_TIMEDOUT:
		return hm_err_plain(err, ETIMEDOUT, "the API server %s did not answer in time: %s",
				    server, why);
	case CURLE_PEER_FAILED_VERIFICATION:
		return hm_err_plain(err, EPROTO,
				    "TLS with the API server %s: its certificate is not trusted "
				    "(%s); check certificate-authority of cluster %s",
				    server, why, k->cfg.cluster);
	case CURLE_SSL_CERTPROBLEM:
		return hm_err_plain(err, EACCES,
				    "TLS with the API server %s: the client certificate of user %s "
				    "cannot be used: %s",
				    server, k->cfg.user, why);
	case CURLE_SSL_CACERT_BADFILE:
		return hm_err_plain(err, EPROTO,
				    "TLS with the API server %s: bad certificate-authority of "
				    "cluster %s: %s",
				    server, k->cfg.cluster, why);
	case CURLE_SSL_CONNECT_ERROR:
		return hm_err_plain(err, EPROTO, "TLS with the API server %s failed: %s", server,
				    why);
	default:
		return hm_err_plain(err, EIO, "API server %s: %s", server, why);
	}
}

int kube_http_error(struct kube *k, long status, const char *body, const struct kube_what *what,
		    struct hm_err *err)
{
	struct json_object *st = body ? json_tokener_parse(body) : NULL;
	const char *message = kube_json_str(st, "message");
	char said[600];
	snprintf(said, sizeof(said), "%s", message ? message : "");
	json_object_put(st);
	const char *ns = what && what->namespace ? what->namespace : NULL;
	char scope[KUBE_NAME_MAX + 32] = "";
	if (ns)
		snprintf(scope, sizeof(scope), " in namespace %s", ns);
	else if (what)
		snprintf(scope, sizeof(scope), " (cluster-wide)");
	char object[KUBE_NAME_MAX + 64] = "";
	if (what)
		snprintf(object, sizeof(object), "%s%s%s%s", what->resource,
			 what->name ? " \"" : "", what->name ? what->name : "",
			 what->name ? "\"" : "");
	switch (status) {
	case 401:
		return hm_err_plain(err, EACCES,
				    "the API server %s rejected the credentials of user %s "
				    "(401 Unauthorized%s%s)",
				    k->cfg.server, k->cfg.user[0] ? k->cfg.user : "(none)",
				    said[0] ? ": " : "", said);
	case 403:
		return hm_err_plain(err, EPERM, "forbidden by RBAC: cannot %s %s%s (%s)",
				    what ? what->verb : "access", object, scope,
				    said[0] ? said : "403 Forbidden");
	case 404:
		if (what && what->kind && what->name)
			return hm_err_plain(err, ENOENT, "no %s %s in namespace %s", what->kind,
					    what->name, ns ? ns : "(cluster)");
		return hm_err_plain(err, ENOENT, "not found: %s%s (%s)", object, scope,
				    said[0] ? said : "404");
	default:
		return hm_err_plain(err, EIO, "API server %s: %s %s%s: HTTP %ld%s%s", k->cfg.server,
				    what ? what->verb : "request", object, scope, status,
				    said[0] ? ": " : "", said);
	}
}

struct body {
	char *data;
	size_t len, cap;
	bool too_big;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb;
	if (b->len + n + 1 > KUBE_BODY_MAX) {
		b->too_big = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *bigger = realloc(b->data, cap);
		if (!bigger)
			return 0;
		b->data = bigger;
		b->cap = cap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

int kube_get_json(struct kube *k, const char *path, const struct kube_what *what,
		  struct json_object **out, struct hm_err *err)
{
	struct kube_cred cred;
	if (kube_current_cred(k, &cred, err) < 0)
		return -1;
	int rc = -1;
	struct curl_slist *headers = NULL;
	struct body b = {0};
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = kube_curl_new(k, &cred, err);
	if (!c)
		goto out;
	char url[4096];
	if ((size_t)snprintf(url, sizeof(url), "%s%s", k->cfg.server, path) >= sizeof(url)) {
		hm_err_set(err, ENAMETOOLONG, "API path %s", path);
		goto out;
	}
	headers = curl_slist_append(headers, "Accept: application/json");
	if (cred.token) {
		char *auth = NULL;
		if (asprintf(&auth, "Authorization: Bearer %s", cred.token) < 0) {
			hm_err_set(err, ENOMEM, "request");
			goto out;
		}
		headers = curl_slist_append(headers, auth);
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "hermit/trace-run");
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)KUBE_REQUEST_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	hm_debug("GET %s", url);
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		if (b.too_big)
			hm_err_set(err, EFBIG, "API server %s: answer to %s is over %u MiB",
				   k->cfg.server, path, KUBE_BODY_MAX >> 20);
		else
			kube_curl_error(k, cc, errbuf, err);
		goto out;
	}
	long status = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		kube_http_error(k, status, b.data, what, err);
		goto out;
	}
	*out = b.data ? json_tokener_parse(b.data) : NULL;
	if (!*out || !json_object_is_type(*out, json_type_object)) {
		json_object_put(*out);
		*out = NULL;
		hm_err_set(err, EPROTO, "API server %s: the answer to %s is not a JSON object",
			   k->cfg.server, path);
		goto out;
	}
	rc = 0;
out:
	if (c)
		curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	free(b.data);
	kube_cred_free(&cred);
	return rc;
}
