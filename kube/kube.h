/* kube: hermit's Kubernetes API client. It reads kubeconfig as kubectl does (or the
 * in-cluster service account), talks to the API server over libcurl, resolves
 * pod/NAME, pod/NAME/container/C and deployment/NAME targets to a node, a container ID
 * and a pod IP, finds the hermit agent pod on that node, reads the agent's auth token
 * from its Secret (with the user's own credentials, so cluster RBAC decides who may
 * use the agent), and reaches the agent through the API server's WebSocket
 * port-forward as a client/client.h transport.
 *
 * Every fallible call returns < 0 and fills err with one line a user can act on:
 * the server named for connection and TLS failures, "credentials rejected" for 401,
 * the verb, resource and namespace RBAC denied for 403, "no pod X in namespace Y" for
 * 404 (err->code ECONNREFUSED/EHOSTUNREACH..., EACCES, EPERM, ENOENT respectively). */
#ifndef HERMIT_KUBE_H
#define HERMIT_KUBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "client/client.h"
#include "util/util.h"

/* Where the agent DaemonSet lives (kube/deploy/) */
#define KUBE_AGENT_NAMESPACE "hermit-system"
#define KUBE_AGENT_LABEL "app.kubernetes.io/name=hermit-agent"
#define KUBE_AGENT_SECRET "hermit-agent-token"
#define KUBE_AGENT_SECRET_KEY "token"
#define KUBE_AGENT_PORT 7070

#define KUBE_NAME_MAX 254 /* a DNS subdomain (253) and its NUL */

/* ---- kubeconfig ---- */
struct kube_opts {
	const char *kubeconfig; /* --kubeconfig: this file only; NULL: $KUBECONFIG, then
				   ~/.kube/config, then in-cluster */
	const char *context;	/* --context; NULL: current-context */
	const char *namespace;	/* -n; NULL: the context's, else "default" */
};

struct kube;
/* Load the configuration and prepare a client (no request is made yet). */
int kube_open(const struct kube_opts *opts, struct kube **out, struct hm_err *err);
void kube_close(struct kube *k);
void kube_closep(struct kube **k);
#define kube_cleanup_close __attribute__((cleanup(kube_closep)))
const char *kube_namespace(const struct kube *k); /* -n, the context's, or "default" */
const char *kube_server(const struct kube *k);
const char *kube_context(const struct kube *k); /* "" in-cluster */

/* GET path (starting with /api or /apis) and parse its JSON body; *out is the caller's
 * (json_object_put). what describes the request for error lines (verb, resource, name,
 * namespace; see struct kube_what). */
struct json_object;
struct kube_what {
	const char *verb;      /* "get", "list", "create" */
	const char *resource;  /* "pods", "secrets", "pods/portforward" */
	const char *kind;      /* "pod" for 404 lines */
	const char *name;      /* NULL for lists */
	const char *namespace; /* NULL for cluster-scoped */
};
int kube_get_json(struct kube *k, const char *path, const struct kube_what *what,
		  struct json_object **out, struct hm_err *err);

/* ---- targets ---- */
struct kube_target {
	char namespace[KUBE_NAME_MAX];
	char pod[KUBE_NAME_MAX];
	char container[KUBE_NAME_MAX];
	char node[KUBE_NAME_MAX];
	char container_id[512]; /* as the pod's status says: "containerd://3f4e..." */
	char pod_ip[64];
};
/* "pod/NAME", "pod/NAME/container/C" or "deployment/NAME" in namespace ns (NULL:
 * kube_namespace). A deployment's pod is chosen as kubectl chooses one: Running and
 * Ready first, then the longest ready, then the newest. A pod that is not Running or
 * a container that is not ready is an error (EAGAIN), not a wait. */
int kube_resolve_target(struct kube *k, const char *spec, const char *ns, struct kube_target *out,
			struct hm_err *err);
/* True for the target forms kube_resolve_target takes that a local agent does not:
 * "deployment/NAME", "pod/NAME/container/C". */
bool kube_target_is_kube_only(const char *spec);
/* The target name the agent on the node resolves: "container/ID" for containerd://,
 * cri-o:// and docker:// IDs; "pod/NAME" for hermit://NAME, the scheme the tests' API
 * server gives trace-pod pods (tests/kube/README.md). */
int kube_agent_target(const struct kube_target *t, char *out, size_t len, struct hm_err *err);

/* ---- the agent DaemonSet ---- */
struct kube_agent {
	char pod[KUBE_NAME_MAX];
	char node[KUBE_NAME_MAX];
	bool ready;
	char phase[32];
};
/* The agent pod on node: labelled KUBE_AGENT_LABEL in KUBE_AGENT_NAMESPACE with
 * spec.nodeName=node, Running and ready (ENOENT / EAGAIN otherwise). */
int kube_find_agent(struct kube *k, const char *node, struct kube_agent *out, struct hm_err *err);
/* Every agent pod, by node name; free(*out). */
int kube_list_agents(struct kube *k, struct kube_agent **out, size_t *count, struct hm_err *err);
/* The token in Secret KUBE_AGENT_SECRET, read with the user's credentials. */
int kube_agent_token(struct kube *k, char *out, size_t len, struct hm_err *err);

/* ---- port-forward ----
 * A client_endpoint whose every dial is a new WebSocket port-forward
 * (/api/v1/namespaces/NS/pods/POD/portforward?ports=PORT, v4.channel.k8s.io) through
 * the API server; the dialed fd is one end of a socketpair, the other end pumped by a
 * thread of its own. k must outlive the endpoint's use. */
int kube_portforward_endpoint(struct kube *k, const char *ns, const char *pod, uint16_t port,
			      struct client_endpoint *out, struct hm_err *err);
/* What the API server's error channel said on the last port-forward that ended before
 * carrying any byte ("error forwarding port 7070 to pod ...: connection refused"), for
 * the caller's error line; false when nothing. Clears it. */
bool kube_portforward_last_error(char *out, size_t len);
/* One port-forward connection now: the fd described above. */
int kube_portforward_dial(struct kube *k, const char *ns, const char *pod, uint16_t port,
			  int timeout_ms, struct hm_err *err);

#endif
