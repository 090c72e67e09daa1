/* Targets and agents: pod/NAME, pod/NAME/container/C and deployment/NAME resolved to
 * a node, a container ID and a pod IP through the API; the agent pod on that node
 * (label and spec.nodeName, as a field selector); the agent's token Secret. */
#include <string.h>

#include "kube/internal.h"

static void url_escape(const char *in, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *in && o + 4 < len; in++) {
		unsigned char c = (unsigned char)*in;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
}

/* an object name as the API takes it (a DNS subdomain), so it can go in a path */
static int check_name(const char *name, const char *what, struct hm_err *err)
{
	size_t n = strlen(name);
	if (!n || n >= KUBE_NAME_MAX)
		return hm_err_plain(err, EINVAL, "bad %s name '%s'", what, name);
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return hm_err_plain(err, EINVAL,
					    "bad %s name '%s': lower-case letters, digits, '-' "
					    "and '.' only",
					    what, name);
	}
	return 0;
}

bool kube_target_is_kube_only(const char *spec)
{
	if (!strncmp(spec, "deployment/", 11) || !strncmp(spec, "deploy/", 7))
		return true;
	return !strncmp(spec, "pod/", 4) && strstr(spec + 4, "/container/");
}

static bool is_true(struct json_object *o, const char *key)
{
	struct json_object *v;
	return o && json_object_object_get_ex(o, key, &v) &&
	       json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

static bool pod_ready(struct json_object *pod, const char **since)
{
	struct json_object *conds = kube_json_path(pod, "status.conditions");
	size_t n = conds && json_object_is_type(conds, json_type_array)
		       ? json_object_array_length(conds)
		       : 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *c = json_object_array_get_idx(conds, i);
		const char *type = kube_json_str(c, "type"), *status = kube_json_str(c, "status");
		if (type && !strcmp(type, "Ready") && status && !strcmp(status, "True")) {
			if (since)
				*since = kube_json_str(c, "lastTransitionTime");
			return true;
		}
	}
	return false;
}

static const char *phase_of(struct json_object *pod)
{
	const char *p = kube_json_str(kube_json_path(pod, "status"), "phase");
	return p ? p : "Unknown";
}

/* kubectl's podutils.ByLogging: assigned, Running, ready, longest ready, more restarts,
 * older first; < 0 when a comes first */
static int phase_rank(const char *phase)
{
	return !strcmp(phase, "Running") ? 0 : !strcmp(phase, "Unknown") ? 1 : 2;
}

static long restarts(struct json_object *pod)
{
	struct json_object *st = kube_json_path(pod, "status.containerStatuses");
	long sum = 0;
	for (size_t i = 0;
	     st && json_object_is_type(st, json_type_array) && i < json_object_array_length(st);
	     i++) {
		struct json_object *rc;
		if (json_object_object_get_ex(json_object_array_get_idx(st, i), "restartCount",
					      &rc))
			sum += json_object_get_int64(rc);
	}
	return sum;
}

static int time_cmp(const char *a, const char *b)
{
	/* RFC 3339 in UTC ('Z') sorts as text; a missing time comes last */
	if (!a || !b)
		return !a - !b;
	return strcmp(a, b);
}

static int by_logging(const void *pa, const void *pb)
{
	struct json_object *a = *(struct json_object *const *)pa;
	struct json_object *b = *(struct json_object *const *)pb;
	const char *na = kube_json_str(kube_json_path(a, "spec"), "nodeName");
	const char *nb = kube_json_str(kube_json_path(b, "spec"), "nodeName");
	if (!na != !nb)
		return na ? -1 : 1;
	int d = phase_rank(phase_of(a)) - phase_rank(phase_of(b));
	if (d)
		return d;
	const char *sa = NULL, *sb = NULL;
	bool ra = pod_ready(a, &sa), rb = pod_ready(b, &sb);
	if (ra != rb)
		return ra ? -1 : 1;
	if (ra && (d = time_cmp(sa, sb)))
		return d;
	long ca = restarts(a), cb = restarts(b);
	if (ca != cb)
		return ca > cb ? -1 : 1;
	return time_cmp(kube_json_str(kube_json_path(a, "metadata"), "creationTimestamp"),
			kube_json_str(kube_json_path(b, "metadata"), "creationTimestamp"));
}

/* The items array of a list answer (*items, NULL when it has none) and its length. */
static size_t list_items(struct json_object *list, struct json_object **items)
{
	*items = kube_json_path(list, "items");
	return *items && json_object_is_type(*items, json_type_array)
		   ? json_object_array_length(*items)
		   : 0;
}

/* GET resource/name (a kind) in namespace ns of the API group at api ("/api/v1"). */
static int get_named(struct kube *k, const char *api, const char *resource, const char *kind,
		     const char *ns, const char *name, struct json_object **out, struct hm_err *err)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/namespaces/%s/%s/%s", api, ns, resource, name);
	struct kube_what what = {
	    .verb = "get", .resource = resource, .kind = kind, .name = name, .namespace = ns};
	return kube_get_json(k, path, &what, out, err);
}

static int deployment_pod(struct kube *k, const char *ns, const char *name,
			  struct json_object **pod, struct hm_err *err)
{
	struct json_object *dep = NULL;
	if (get_named(k, "/apis/apps/v1", "deployments", "deployment", ns, name, &dep, err) < 0)
		return -1;
	struct json_object *labels = kube_json_path(dep, "spec.selector.matchLabels");
	if (kube_json_path(dep, "spec.selector.matchExpressions") || !labels ||
	    !json_object_is_type(labels, json_type_object)) {
		json_object_put(dep);
		return hm_err_plain(err, ENOTSUP,
				    "deployment %s in namespace %s: only a matchLabels selector is "
				    "supported; name one of its pods with pod/NAME",
				    name, ns);
	}
	char selector[1024] = "";
	json_object_object_foreach(labels, key, val)
	{
		size_t used = strlen(selector);
		snprintf(selector + used, sizeof(selector) - used, "%s%s=%s", used ? "," : "", key,
			 json_object_get_string(val));
	}
	json_object_put(dep);
	char escaped[3 * sizeof(selector)];
	url_escape(selector, escaped, sizeof(escaped));
	char lpath[sizeof(escaped) + 2 * KUBE_NAME_MAX];
	snprintf(lpath, sizeof(lpath), "/api/v1/namespaces/%s/pods?labelSelector=%s", ns, escaped);
	struct kube_what lwhat = {.verb = "list", .resource = "pods", .namespace = ns};
	struct json_object *list = NULL;
	if (kube_get_json(k, lpath, &lwhat, &list, err) < 0)
		return -1;
	struct json_object *items;
	size_t n = list_items(list, &items);
	struct json_object **pods = calloc(n ? n : 1, sizeof(*pods));
	size_t live = 0;
	for (size_t i = 0; pods && i < n; i++) {
		struct json_object *p = json_object_array_get_idx(items, i);
		if (!kube_json_path(p, "metadata.deletionTimestamp"))
			pods[live++] = p;
	}
	int rc = 0;
	if (!pods) {
		rc = hm_err_set(err, ENOMEM, "pods");
	} else if (!live) {
		rc = hm_err_plain(err, ENOENT, "deployment %s in namespace %s has no pods (%s)",
				  name, ns, selector);
	} else {
		qsort(pods, live, sizeof(*pods), by_logging);
		*pod = json_object_get(pods[0]);
	}
	free(pods);
	json_object_put(list);
	return rc;
}

/* the container's status entry, checked ready */
static int container_status(struct json_object *pod, const char *pod_name, const char *ns,
			    const char *want, struct kube_target *out, struct hm_err *err)
{
	const char *name = want;
	if (!name) {
		struct json_object *ann = kube_json_path(pod, "metadata.annotations");
		name = kube_json_str(ann, "kubectl.kubernetes.io/default-container");
	}
	if (!name) {
		struct json_object *cs = kube_json_path(pod, "spec.containers");
		if (cs && json_object_is_type(cs, json_type_array) && json_object_array_length(cs))
			name = kube_json_str(json_object_array_get_idx(cs, 0), "name");
	}
	if (!name)
		return hm_err_plain(err, ENOENT, "pod %s in namespace %s has no containers",
				    pod_name, ns);
	struct json_object *st = kube_json_path(pod, "status.containerStatuses");
	size_t n =
	    st && json_object_is_type(st, json_type_array) ? json_object_array_length(st) : 0;
	for (size_t i = 0; i < n; i++) {
		struct json_object *c = json_object_array_get_idx(st, i);
		const char *cname = kube_json_str(c, "name");
		if (!cname || strcmp(cname, name))
			continue;
		if (!is_true(c, "ready")) {
			const char *why =
			    kube_json_str(kube_json_path(c, "state.waiting"), "reason");
			if (!why && kube_json_path(c, "state.terminated"))
				why = "terminated";
			return hm_err_plain(
			    err, EAGAIN, "container %s of pod %s in namespace %s is not ready%s%s",
			    name, pod_name, ns, why ? ": " : "", why ? why : "");
		}
		const char *id = kube_json_str(c, "containerID");
		if (!id || !id[0])
			return hm_err_plain(err, EAGAIN,
					    "container %s of pod %s in namespace %s has no "
					    "container ID yet",
					    name, pod_name, ns);
		return kube_copy(out->container, sizeof(out->container), name, "container name",
				 err) < 0 ||
			       kube_copy(out->container_id, sizeof(out->container_id), id,
					 "container ID", err) < 0
			   ? -1
			   : 0;
	}
	return hm_err_plain(err, ENOENT, "pod %s in namespace %s has no container %s", pod_name, ns,
			    name);
}

int kube_resolve_target(struct kube *k, const char *spec, const char *ns, struct kube_target *out,
			struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!ns || !ns[0])
		ns = kube_namespace(k);
	if (check_name(ns, "namespace", err) < 0)
		return -1;
	char name[KUBE_NAME_MAX] = "", container[KUBE_NAME_MAX] = "";
	bool deployment = false;
	const char *rest;
	if (!strncmp(spec, "pod/", 4)) {
		rest = spec + 4;
		const char *c = strstr(rest, "/container/");
		size_t nlen = c ? (size_t)(c - rest) : strlen(rest);
		if (nlen >= sizeof(name) || (c && strlen(c + 11) >= sizeof(container)))
			return hm_err_plain(err, ENAMETOOLONG, "target %s: name too long", spec);
		memcpy(name, rest, nlen);
		name[nlen] = '\0';
		if (c)
			snprintf(container, sizeof(container), "%s", c + 11);
		if (c && check_name(container, "container", err) < 0)
			return -1;
	} else if (!strncmp(spec, "deployment/", 11) || !strncmp(spec, "deploy/", 7)) {
		deployment = true;
		snprintf(name, sizeof(name), "%s", strchr(spec, '/') + 1);
	} else {
		return hm_err_plain(err, EINVAL,
				    "target %s: expected pod/NAME, pod/NAME/container/C or "
				    "deployment/NAME",
				    spec);
	}
	if (check_name(name, deployment ? "deployment" : "pod", err) < 0)
		return -1;
	struct json_object *pod = NULL;
	if (deployment) {
		if (deployment_pod(k, ns, name, &pod, err) < 0)
			return -1;
	} else if (get_named(k, "/api/v1", "pods", "pod", ns, name, &pod, err) < 0) {
		return -1;
	}
	int rc = -1;
	const char *pod_name = kube_json_str(kube_json_path(pod, "metadata"), "name");
	const char *phase = phase_of(pod);
	const char *node = kube_json_str(kube_json_path(pod, "spec"), "nodeName");
	const char *ip = kube_json_str(kube_json_path(pod, "status"), "podIP");
	if (!pod_name) {
		hm_err_plain(err, EPROTO, "API server %s: a pod without a name", kube_server(k));
	} else if (strcmp(phase, "Running")) {
		hm_err_plain(err, EAGAIN, "pod %s in namespace %s is %s, not Running%s", pod_name,
			     ns, phase, deployment ? " (the best pod of the deployment)" : "");
	} else if (!node || !node[0]) {
		hm_err_plain(err, EAGAIN, "pod %s in namespace %s is not on a node", pod_name, ns);
	} else if (kube_copy(out->pod, sizeof(out->pod), pod_name, "pod name", err) == 0 &&
		   kube_copy(out->namespace, sizeof(out->namespace), ns, "namespace", err) == 0 &&
		   kube_copy(out->node, sizeof(out->node), node, "node name", err) == 0 &&
		   kube_copy(out->pod_ip, sizeof(out->pod_ip), ip, "pod IP", err) == 0 &&
		   container_status(pod, pod_name, ns, container[0] ? container : NULL, out, err) ==
		       0) {
		rc = 0;
	}
	json_object_put(pod);
	return rc;
}

int kube_agent_target(const struct kube_target *t, char *out, size_t len, struct hm_err *err)
{
	static const char *const runtimes[] = {"containerd://", "cri-o://", "docker://"};
	const char *id = t->container_id;
	for (size_t i = 0; i < HM_ARRAY_SIZE(runtimes); i++) {
		size_t n = strlen(runtimes[i]);
		if (!strncmp(id, runtimes[i], n) && id[n]) {
			for (const char *p = id + n; *p; p++)
				if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
					return hm_err_plain(
					    err, EINVAL, "container ID %s is not hexadecimal", id);
			if ((size_t)snprintf(out, len, "container/%s", id + n) >= len)
				return hm_err_set(err, ENAMETOOLONG, "container ID %s", id);
			return 0;
		}
	}
	if (!strncmp(id, "hermit://", 9) && id[9]) {
		if (check_name(id + 9, "trace-pod pod", err) < 0)
			return -1;
		if ((size_t)snprintf(out, len, "pod/%s", id + 9) >= len)
			return hm_err_set(err, ENAMETOOLONG, "container ID %s", id);
		return 0;
	}
	return hm_err_plain(err, ENOTSUP,
			    "container %s of pod %s: runtime of container ID '%s' is not "
			    "containerd, cri-o or docker",
			    t->container, t->pod, id);
}

static void agent_from_pod(struct json_object *pod, struct kube_agent *a)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->pod, sizeof(a->pod), "%s",
		 kube_json_str(kube_json_path(pod, "metadata"), "name") ?: "?");
	snprintf(a->node, sizeof(a->node), "%s",
		 kube_json_str(kube_json_path(pod, "spec"), "nodeName") ?: "");
	snprintf(a->phase, sizeof(a->phase), "%s", phase_of(pod));
	a->ready = !strcmp(a->phase, "Running") && pod_ready(pod, NULL);
}

static int agent_pods(struct kube *k, const char *node, struct json_object **list,
		      struct hm_err *err)
{
	char label[256], field[3 * KUBE_NAME_MAX + 64] = "", path[2048];
	url_escape(KUBE_AGENT_LABEL, label, sizeof(label));
	if (node) {
		char sel[KUBE_NAME_MAX + 16];
		snprintf(sel, sizeof(sel), "spec.nodeName=%s", node);
		char esc[3 * KUBE_NAME_MAX + 48];
		url_escape(sel, esc, sizeof(esc));
		snprintf(field, sizeof(field), "&fieldSelector=%s", esc);
	}
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s%s",
		 KUBE_AGENT_NAMESPACE, label, field);
	struct kube_what what = {
	    .verb = "list", .resource = "pods", .namespace = KUBE_AGENT_NAMESPACE};
	return kube_get_json(k, path, &what, list, err);
}

int kube_find_agent(struct kube *k, const char *node, struct kube_agent *out, struct hm_err *err)
{
	struct json_object *list = NULL;
	if (agent_pods(k, node, &list, err) < 0)
		return hm_err_prefix(err, "finding the hermit agent on node %s", node);
	struct json_object *items;
	size_t n = list_items(list, &items);
	int rc = hm_err_plain(err, ENOENT,
			      "no hermit agent on node %s (no pod labelled %s in namespace %s; "
			      "install it: kubectl apply -k kube/deploy)",
			      node, KUBE_AGENT_LABEL, KUBE_AGENT_NAMESPACE);
	for (size_t i = 0; i < n; i++) {
		struct kube_agent a;
		agent_from_pod(json_object_array_get_idx(items, i), &a);
		if (strcmp(a.node, node))
			continue; /* a server that ignored the field selector */
		if (a.ready) {
			*out = a;
			rc = 0;
			break;
		}
		rc = hm_err_plain(err, EAGAIN, "the hermit agent on node %s (pod %s/%s) is %s%s",
				  node, KUBE_AGENT_NAMESPACE, a.pod, a.phase,
				  strcmp(a.phase, "Running") ? "" : " but not ready");
	}
	json_object_put(list);
	return rc;
}

static int by_node(const void *a, const void *b)
{
	return strcmp(((const struct kube_agent *)a)->node, ((const struct kube_agent *)b)->node);
}

int kube_list_agents(struct kube *k, struct kube_agent **out, size_t *count, struct hm_err *err)
{
	struct json_object *list = NULL;
	if (agent_pods(k, NULL, &list, err) < 0)
		return -1;
	struct json_object *items;
	size_t n = list_items(list, &items);
	struct kube_agent *a = calloc(n ? n : 1, sizeof(*a));
	if (!a) {
		json_object_put(list);
		return hm_err_set(err, ENOMEM, "agents");
	}
	for (size_t i = 0; i < n; i++)
		agent_from_pod(json_object_array_get_idx(items, i), &a[i]);
	json_object_put(list);
	qsort(a, n, sizeof(*a), by_node);
	*out = a;
	*count = n;
	return 0;
}

int kube_agent_token(struct kube *k, char *out, size_t len, struct hm_err *err)
{
	struct json_object *secret = NULL;
	if (get_named(k, "/api/v1", "secrets", "secret", KUBE_AGENT_NAMESPACE, KUBE_AGENT_SECRET,
		      &secret, err) < 0)
		return hm_err_prefix(err, "the hermit agent's token");
	const char *b64 = kube_json_str(kube_json_path(secret, "data"), KUBE_AGENT_SECRET_KEY);
	unsigned char *token = NULL;
	size_t tlen = 0;
	int rc = 0;
	if (!b64)
		rc = hm_err_plain(err, ENOENT, "secret %s in namespace %s has no key '%s'",
				  KUBE_AGENT_SECRET, KUBE_AGENT_NAMESPACE, KUBE_AGENT_SECRET_KEY);
	else if (kube_base64_decode(b64, &token, &tlen) < 0)
		rc = hm_err_plain(err, EINVAL, "secret %s: '%s' is not base64", KUBE_AGENT_SECRET,
				  KUBE_AGENT_SECRET_KEY);
	while (rc == 0 && tlen && (token[tlen - 1] == '\n' || token[tlen - 1] == '\r'))
		token[--tlen] = '\0';
	if (rc == 0 && (!tlen || tlen >= len || strlen((char *)token) != tlen))
		rc = hm_err_plain(err, EINVAL, "secret %s: the token is empty, too long or binary",
				  KUBE_AGENT_SECRET);
	if (rc == 0)
		memcpy(out, token, tlen + 1);
	if (token) {
		explicit_bzero(token, tlen);
		free(token);
	}
	json_object_put(secret);
	return rc;
}
