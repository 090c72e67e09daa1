/* trace-run against a Kubernetes cluster: the target is resolved through the API
 * server (kube/kube.h), the agent is the DaemonSet's pod on the target's node, its
 * token is read from its Secret with the user's credentials, and every connection to
 * it (control and streams) is a port-forward through the API server. Also `trace-run
 * agents`. */
#include <getopt.h>
#include <string.h>

#include "kube/kube.h"
#include "tracer/redirect/session.h"

#define PROG "trace-run"

bool trace_kube_wanted(const struct trace_kube_opts *o, const char *target)
{
	return o->force || o->kubeconfig || o->context || o->namespace ||
	       (target && kube_target_is_kube_only(target));
}

/* exit codes for the kube module's errors (kube/kube.h says which errno means what) */
static int exit_for(int code, bool about_target)
{
	switch (code) {
	case EACCES: /* 401, a client certificate that does not work */
	case EPERM:  /* 403 */
		return TRACER_EXIT_AUTH;
	case ENOENT:
	case EAGAIN:
		return about_target ? TRACER_EXIT_TARGET : TRACER_EXIT_AGENT_DOWN;
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ETIMEDOUT:
	case EPROTO:
	case ECONNRESET:
		return TRACER_EXIT_AGENT_DOWN;
	default:
		return TRACER_EXIT_FAILURE;
	}
}

int trace_kube_prepare(struct trace_session *s, const struct trace_kube_opts *o, int *exit_code,
		       struct hm_err *err)
{
	*exit_code = TRACER_EXIT_FAILURE;
	if (s->cfg.agent.address || s->cfg.agent.unix_path)
		return hm_err_plain(err, EINVAL,
				    "--agent / --agent-unix name a local agent; with a cluster "
				    "target the agent is the DaemonSet's pod on the target's node");
	struct kube_opts ko = {
	    .kubeconfig = o->kubeconfig, .context = o->context, .namespace = o->namespace};
	struct kube *k = NULL;
	if (kube_open(&ko, &k, err) < 0)
		return -1;
	s->kube = k;
	struct kube_target t;
	if (kube_resolve_target(k, s->cfg.target, NULL, &t, err) < 0) {
		*exit_code = exit_for(err->code, true);
		return -1;
	}
	if (kube_agent_target(&t, s->agent_target, sizeof(s->agent_target), err) < 0) {
		*exit_code = TRACER_EXIT_TARGET;
		return -1;
	}
	struct kube_agent agent;
	if (kube_find_agent(k, t.node, &agent, err) < 0) {
		*exit_code = exit_for(err->code, false);
		return -1;
	}
	if (!s->token[0] && !s->cfg.agent.token_file &&
	    kube_agent_token(k, s->token, sizeof(s->token), err) < 0) {
		*exit_code = exit_for(err->code, false);
		if (err->code == ENOENT)
			*exit_code = TRACER_EXIT_AUTH;
		return -1;
	}
	if (kube_portforward_endpoint(k, KUBE_AGENT_NAMESPACE, agent.pod, KUBE_AGENT_PORT,
				      &s->endpoint, err) < 0)
		return -1;
	s->endpoint_set = true;
	hm_info("%s is pod %s/%s on node %s (container %s, %s, IP %s); agent %s/%s", s->cfg.target,
		t.namespace, t.pod, t.node, t.container, t.container_id, t.pod_ip,
		KUBE_AGENT_NAMESPACE, agent.pod);
	*exit_code = 0;
	return 0;
}

static const char agents_usage[] =
    "usage: trace-run agents [--kubeconfig F] [--context C]\n"
    "\n"
    "List the hermit agent pods of the cluster (the DaemonSet in namespace " KUBE_AGENT_NAMESPACE
    "),\n"
    "one line per node: node, pod, ready (the pod's readiness) and the version the agent\n"
    "itself reports, asked through a port-forward with the token of its Secret, as a\n"
    "session would. Exit status 0 when every agent is ready and answers, 121 otherwise.\n";

/* the version agent a reports, asked as a session would reach it; "" on failure */
static int agent_version(struct kube *k, const struct kube_agent *a, const char *token, char *out,
			 size_t len, struct hm_err *err)
{
	struct client_endpoint ep;
	if (kube_portforward_endpoint(k, KUBE_AGENT_NAMESPACE, a->pod, KUBE_AGENT_PORT, &ep, err) <
	    0)
		return -1;
	struct client_opts opts = {.client_name = "trace-run agents", .timeout_ms = 5000};
	client_cleanup_close struct client *c = NULL;
	struct client_status st;
	if (client_connect(&ep, token, &opts, &c, err) < 0) {
		char said[512];
		if (kube_portforward_last_error(said, sizeof(said)))
			return hm_err_plain(err, ECONNREFUSED, "%s", said);
		return -1;
	}
	if (client_status(c, &st, err) < 0)
		return -1;
	snprintf(out, len, "%s", st.version);
	return 0;
}

int trace_agents_main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"kubeconfig", required_argument, NULL, 'k'},
	    {"context", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct kube_opts ko = {0};
	int opt;
	opterr = 0;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'k':
			ko.kubeconfig = optarg;
			break;
		case 'c':
			ko.context = optarg;
			break;
		case 'h':
			fputs(agents_usage, stdout);
			return 0;
		default:
			return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
					   "agents: bad option '%s' (see trace-run agents --help)",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "agents: unexpected '%s'",
				   argv[optind]);
	struct hm_err err = {0};
	kube_cleanup_close struct kube *k = NULL;
	if (kube_open(&ko, &k, &err) < 0)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
	struct kube_agent *agents = NULL;
	size_t n = 0;
	if (kube_list_agents(k, &agents, &n, &err) < 0)
		return hm_cli_fail(PROG, exit_for(err.code, false), "%s", err.msg);
	if (!n) {
		free(agents);
		return hm_cli_fail(PROG, TRACER_EXIT_AGENT_DOWN,
				   "no hermit agent in namespace %s of %s (install it: kubectl "
				   "apply -k kube/deploy)",
				   KUBE_AGENT_NAMESPACE, kube_server(k));
	}
	char token[PROTO_AUTH_TOKEN_MAX + 1] = "";
	struct hm_err token_err = {0};
	const char *env = getenv("HERMIT_TOKEN");
	if (env && env[0])
		snprintf(token, sizeof(token), "%s", env);
	else
		kube_agent_token(k, token, sizeof(token), &token_err);
	printf("%-24s %-32s %-6s %s\n", "NODE", "POD", "READY", "VERSION");
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		struct kube_agent *a = &agents[i];
		char version[PROTO_NAME_MAX] = "-";
		struct hm_err verr = {0};
		if (!a->ready)
			rc = TRACER_EXIT_AGENT_DOWN;
		else if (!token[0] ||
			 agent_version(k, a, token, version, sizeof(version), &verr) < 0)
			rc = TRACER_EXIT_AGENT_DOWN;
		hm_print_line(stdout, "%-24s %-32s %-6s %s", a->node[0] ? a->node : "<none>",
			      a->pod, a->ready ? "yes" : "no", version);
		if (a->ready && verr.msg[0])
			hm_print_line(stderr, PROG ": agent on node %s: %s", a->node, verr.msg);
	}
	if (!token[0])
		hm_print_line(stderr, PROG ": %s", token_err.msg);
	explicit_bzero(token, sizeof(token));
	free(agents);
	return rc;
}
