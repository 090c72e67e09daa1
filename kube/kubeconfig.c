/* kubeconfig as kubectl reads it: --kubeconfig (that file only), else every file of
 * $KUBECONFIG (a ':' list; missing files are skipped) merged so that the first file to
 * name a cluster, context or user, or to set current-context, wins; else
 * ~/.kube/config; else the in-cluster service account. Relative paths in a file are
 * relative to that file's folder (an exec command only when it contains a '/'), and
 * *-data fields win over their file counterparts, as in client-go. */
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "kube/internal.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

struct kc_file {
	char path[PATH_MAX];
	char dir[PATH_MAX];
	struct json_object *doc;
};

struct kc_merged {
	struct kc_file files[16];
	size_t nfiles;
	char sources[1024]; /* for messages */
};

static void merged_free(struct kc_merged *m)
{
	for (size_t i = 0; i < m->nfiles; i++)
		json_object_put(m->files[i].doc);
}

static int add_file(struct kc_merged *m, const char *path, bool must_exist, struct hm_err *err)
{
	if (m->nfiles == HM_ARRAY_SIZE(m->files))
		return hm_err_set(err, E2BIG, "more than %zu kubeconfig files",
				  HM_ARRAY_SIZE(m->files));
	char *text = NULL;
	size_t len = 0;
	struct hm_err rerr = {0};
	if (hm_read_file(path, &text, &len, &rerr) < 0) {
		if (!must_exist && rerr.code == ENOENT)
			return 0;
		return hm_err_set(err, rerr.code, "kubeconfig %s", path);
	}
	struct kc_file *f = &m->files[m->nfiles];
	char what[PATH_MAX + 16];
	snprintf(what, sizeof(what), "kubeconfig %s", path);
	int rc = kube_yaml_parse(text, len, what, &f->doc, err);
	free(text);
	if (rc < 0)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s", path);
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", path);
	snprintf(f->dir, sizeof(f->dir), "%s", dirname(tmp));
	size_t used = strlen(m->sources);
	snprintf(m->sources + used, sizeof(m->sources) - used, "%s%s", used ? ", " : "", path);
	m->nfiles++;
	return 0;
}

/* The first entry named name in the list key ("clusters"...) of the first file that has
 * one: its inner object (cluster/context/user) and that file. */
static struct json_object *find_named(struct kc_merged *m, const char *list, const char *inner,
				      const char *name, const struct kc_file **from)
{
	for (size_t i = 0; i < m->nfiles; i++) {
		struct json_object *arr;
		if (!json_object_object_get_ex(m->files[i].doc, list, &arr) ||
		    !json_object_is_type(arr, json_type_array))
			continue;
		for (size_t j = 0; j < json_object_array_length(arr); j++) {
			struct json_object *e = json_object_array_get_idx(arr, j);
			const char *n = kube_json_str(e, "name");
			struct json_object *body;
			if (n && !strcmp(n, name) && json_object_object_get_ex(e, inner, &body)) {
				*from = &m->files[i];
				return body;
			}
		}
	}
	return NULL;
}

static int dup_str(char **dst, const char *src, struct hm_err *err)
{
	free(*dst);
	*dst = NULL;
	if (src && !(*dst = strdup(src)))
		return hm_err_set(err, ENOMEM, "kubeconfig");
	return 0;
}

/* a path of a kubeconfig file, relative to its folder */
static int dup_path(char **dst, const char *path, const struct kc_file *from, struct hm_err *err)
{
	if (!path || !path[0] || path[0] == '/' || !from)
		return dup_str(dst, path && path[0] ? path : NULL, err);
	if (asprintf(dst, "%s/%s", from->dir, path) < 0) {
		*dst = NULL;
		return hm_err_set(err, ENOMEM, "kubeconfig");
	}
	return 0;
}

static int decode_data(struct json_object *o, const char *key, unsigned char **out, size_t *len,
		       const char *where, struct hm_err *err)
{
	const char *s = kube_json_str(o, key);
	if (!s || !s[0])
		return 0;
	if (kube_base64_decode(s, out, len) < 0)
		return hm_err_set(err, EINVAL, "%s: %s is not base64", where, key);
	return 0;
}

static bool json_true(struct json_object *o, const char *key)
{
	struct json_object *v;
	if (!json_object_object_get_ex(o, key, &v))
		return false;
	if (json_object_is_type(v, json_type_boolean))
		return json_object_get_boolean(v);
	return json_object_is_type(v, json_type_string) &&
	       !strcmp(json_object_get_string(v), "true");
}

static int strv_from(struct json_object *arr, char ***out, bool env, struct hm_err *err)
{
	size_t n =
	    arr && json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
	char **v = calloc(n + 1, sizeof(*v));
	if (!v)
		return hm_err_set(err, ENOMEM, "kubeconfig");
	*out = v;
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_array_get_idx(arr, i);
		if (!env) {
			if (!json_object_is_type(e, json_type_string))
				return hm_err_set(err, EINVAL, "exec args must be strings");
			if (!(v[i] = strdup(json_object_get_string(e))))
				return hm_err_set(err, ENOMEM, "kubeconfig");
			continue;
		}
		const char *name = kube_json_str(e, "name"), *value = kube_json_str(e, "value");
		if (!name || !name[0] || strchr(name, '='))
			return hm_err_set(err, EINVAL, "exec env entries need a name");
		if (asprintf(&v[i], "%s=%s", name, value ? value : "") < 0) {
			v[i] = NULL;
			return hm_err_set(err, ENOMEM, "kubeconfig");
		}
	}
	return 0;
}

static int load_exec(struct json_object *e, const struct kc_file *from, struct kube_config *c,
		     const char *where, struct hm_err *err)
{
	struct kube_exec *x = calloc(1, sizeof(*x));
	if (!x)
		return hm_err_set(err, ENOMEM, "kubeconfig");
	c->exec = x;
	const char *cmd = kube_json_str(e, "command");
	const char *api = kube_json_str(e, "apiVersion");
	if (!cmd || !cmd[0])
		return hm_err_set(err, EINVAL, "%s: exec has no command", where);
	if (!api || (strcmp(api, "client.authentication.k8s.io/v1") &&
		     strcmp(api, "client.authentication.k8s.io/v1beta1")))
		return hm_err_set(err, EINVAL,
				  "%s: exec apiVersion '%s' is not client.authentication.k8s.io/v1 "
				  "or /v1beta1",
				  where, api ? api : "");
	if (dup_str(&x->api_version, api, err) < 0 ||
	    (strchr(cmd, '/') ? dup_path(&x->command, cmd, from, err)
			      : dup_str(&x->command, cmd, err)) < 0)
		return -1;
	struct json_object *args = NULL, *env = NULL;
	json_object_object_get_ex(e, "args", &args);
	json_object_object_get_ex(e, "env", &env);
	if (strv_from(args, &x->args, false, err) < 0 || strv_from(env, &x->env, true, err) < 0)
		return hm_err_prefix(err, "%s", where);
	return 0;
}

static int load_cluster(struct json_object *cl, const struct kc_file *from, struct kube_config *c,
			struct hm_err *err)
{
	char where[PATH_MAX + 2 * KUBE_NAME_MAX];
	snprintf(where, sizeof(where), "cluster %s in %s", c->cluster, from->path);
	const char *server = kube_json_str(cl, "server");
	if (!server || !server[0])
		return hm_err_set(err, EINVAL, "%s has no server", where);
	if (dup_str(&c->server, server, err) < 0)
		return -1;
	size_t n = strlen(c->server);
	while (n > 8 && c->server[n - 1] == '/')
		c->server[--n] = '\0';
	c->insecure = json_true(cl, "insecure-skip-tls-verify");
	if (decode_data(cl, "certificate-authority-data", &c->ca_data, &c->ca_data_len, where,
			err) < 0)
		return -1;
	if (!c->ca_data &&
	    dup_path(&c->ca_file, kube_json_str(cl, "certificate-authority"), from, err) < 0)
		return -1;
	return dup_str(&c->proxy_url, kube_json_str(cl, "proxy-url"), err) < 0 ||
		       dup_str(&c->tls_server_name, kube_json_str(cl, "tls-server-name"), err) < 0
		   ? -1
		   : 0;
}

static int load_user(struct json_object *u, const struct kc_file *from, struct kube_config *c,
		     struct hm_err *err)
{
	char where[PATH_MAX + 2 * KUBE_NAME_MAX];
	snprintf(where, sizeof(where), "user %s in %s", c->user, from->path);
	if (decode_data(u, "client-certificate-data", &c->cert_data, &c->cert_data_len, where,
			err) < 0 ||
	    decode_data(u, "client-key-data", &c->key_data, &c->key_data_len, where, err) < 0)
		return -1;
	if (!c->cert_data &&
	    dup_path(&c->cert_file, kube_json_str(u, "client-certificate"), from, err) < 0)
		return -1;
	if (!c->key_data && dup_path(&c->key_file, kube_json_str(u, "client-key"), from, err) < 0)
		return -1;
	const char *token = kube_json_str(u, "token");
	if (token && token[0]) {
		if (dup_str(&c->token, token, err) < 0)
			return -1;
	} else if (dup_path(&c->token_file, kube_json_str(u, "tokenFile"), from, err) < 0) {
		return -1;
	}
	if ((c->cert_data || c->cert_file) != (c->key_data || c->key_file))
		return hm_err_set(err, EINVAL,
				  "%s: a client certificate needs its key and a key its "
				  "certificate",
				  where);
	struct json_object *exec;
	if (json_object_object_get_ex(u, "exec", &exec) && exec &&
	    load_exec(exec, from, c, where, err) < 0)
		return -1;
	return 0;
}

static int load_in_cluster(struct kube_config *c, struct hm_err *err)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	const char *dir = getenv("HERMIT_SERVICEACCOUNT_DIR"); /* tests only */
	if (!dir || !dir[0])
		dir = SA_DIR;
	char token[PATH_MAX];
	snprintf(token, sizeof(token), "%s/token", dir);
	if (!host || !host[0] || !port || !port[0] || access(token, R_OK) < 0)
		return hm_err_plain(err, ENOENT,
				    "no kubeconfig: give --kubeconfig, set KUBECONFIG or create "
				    "~/.kube/config (and not in a pod with a service account)");
	bool v6 = strchr(host, ':') != NULL;
	if (asprintf(&c->server, v6 ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0 ||
	    asprintf(&c->ca_file, "%s/ca.crt", dir) < 0 || !(c->token_file = strdup(token)) ||
	    !(c->source = strdup("the in-cluster service account")) || !(c->context = strdup("")) ||
	    !(c->cluster = strdup("in-cluster")) || !(c->user = strdup("service account")))
		return hm_err_set(err, ENOMEM, "in-cluster config");
	char nsfile[PATH_MAX];
	snprintf(nsfile, sizeof(nsfile), "%s/namespace", dir);
	char *ns = NULL;
	size_t len;
	if (hm_read_file(nsfile, &ns, &len, NULL) == 0) {
		ns[strcspn(ns, "\r\n")] = '\0';
		if (ns[0])
			c->namespace = ns;
		else
			free(ns);
	}
	return 0;
}

int kube_config_load(const struct kube_opts *opts, struct kube_config *c, struct hm_err *err)
{
	memset(c, 0, sizeof(*c));
	struct kc_merged m = {0};
	int rc = -1;
	const char *env = getenv("KUBECONFIG");
	if (opts->kubeconfig) {
		if (add_file(&m, opts->kubeconfig, true, err) < 0)
			goto out;
	} else if (env && env[0]) {
		char *list = strdup(env), *save = NULL;
		if (!list) {
			hm_err_set(err, ENOMEM, "KUBECONFIG");
			goto out;
		}
		for (char *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save))
			if (add_file(&m, p, false, err) < 0) {
				free(list);
				goto out;
			}
		free(list);
		if (!m.nfiles) {
			hm_err_plain(err, ENOENT,
				     "no kubeconfig: none of the files in KUBECONFIG (%s) exists",
				     env);
			goto out;
		}
	} else {
		const char *home = getenv("HOME");
		char path[PATH_MAX];
		snprintf(path, sizeof(path), "%s/.kube/config", home ? home : "");
		if (home && home[0] && add_file(&m, path, false, err) < 0)
			goto out;
		if (!m.nfiles) {
			rc = load_in_cluster(c, err);
			goto out;
		}
	}
	if (dup_str(&c->source, m.sources, err) < 0)
		goto out;

	const char *ctx = opts->context;
	for (size_t i = 0; (!ctx || !ctx[0]) && i < m.nfiles; i++)
		ctx = kube_json_str(m.files[i].doc, "current-context");
	if (!ctx || !ctx[0]) {
		hm_err_plain(err, EINVAL, "kubeconfig %s sets no current-context: give --context",
			     m.sources);
		goto out;
	}
	const struct kc_file *from = NULL;
	struct json_object *context = find_named(&m, "contexts", "context", ctx, &from);
	if (!context) {
		hm_err_plain(err, ENOENT, "context %s is not in kubeconfig %s", ctx, m.sources);
		goto out;
	}
	const char *cluster = kube_json_str(context, "cluster");
	const char *user = kube_json_str(context, "user");
	const char *ns = kube_json_str(context, "namespace");
	if (dup_str(&c->context, ctx, err) < 0 ||
	    dup_str(&c->cluster, cluster ? cluster : "", err) ||
	    dup_str(&c->user, user ? user : "", err) < 0 ||
	    dup_str(&c->namespace, ns && ns[0] ? ns : NULL, err) < 0)
		goto out;
	struct json_object *cl =
	    cluster ? find_named(&m, "clusters", "cluster", cluster, &from) : NULL;
	if (!cl) {
		hm_err_plain(err, ENOENT,
			     "context %s names cluster '%s', which is not in kubeconfig %s", ctx,
			     c->cluster, m.sources);
		goto out;
	}
	if (load_cluster(cl, from, c, err) < 0)
		goto out;
	struct json_object *u =
	    user && user[0] ? find_named(&m, "users", "user", user, &from) : NULL;
	if (u && load_user(u, from, c, err) < 0)
		goto out;
	rc = 0;
out:
	merged_free(&m);
	if (rc < 0)
		kube_config_free(c);
	return rc;
}

static void strv_free(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

void kube_config_free(struct kube_config *c)
{
	free(c->source);
	free(c->context);
	free(c->cluster);
	free(c->user);
	free(c->namespace);
	free(c->server);
	free(c->proxy_url);
	free(c->tls_server_name);
	free(c->ca_file);
	free(c->ca_data);
	free(c->cert_file);
	free(c->cert_data);
	free(c->key_file);
	if (c->key_data)
		explicit_bzero(c->key_data, c->key_data_len);
	free(c->key_data);
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	free(c->token_file);
	if (c->exec) {
		free(c->exec->api_version);
		free(c->exec->command);
		strv_free(c->exec->args);
		strv_free(c->exec->env);
		free(c->exec);
	}
	memset(c, 0, sizeof(*c));
}
