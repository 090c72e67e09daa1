/* The state a trace-run session shares between its handler sets: the agent
 * connection, the merged config and the policies built from it. main.c creates it
 * (connects, opens the session, builds the policies) before the program starts; the
 * file handlers (files_*.c) and the network handlers (net_*.c) register themselves on
 * the tracer with it. The header of the tracer/redirect module, not for other modules. */
#ifndef HERMIT_TRACER_SESSION_H
#define HERMIT_TRACER_SESSION_H

#include <limits.h>

#include "client/client.h"
#include "tracer/engine/tracer.h"
#include "tracer/policy/policy.h"

struct kube;
struct trace_session {
	struct policy_config cfg;	 /* merged and finalized */
	struct kube *kube;		 /* a cluster target: the API client (kube.c) */
	char agent_target[600];		 /* what the agent resolves; "" : cfg.target */
	bool endpoint_set;		 /* endpoint filled by kube.c */
	struct client *client;		 /* connected, session opened on cfg.target */
	struct client_endpoint endpoint; /* where the agent is (streams dial it again) */
	char token[PROTO_AUTH_TOKEN_MAX + 1];
	struct client_session_info info; /* what the agent resolved the target to */
	struct policy_fs *fs;		 /* NULL when fs mode is local */
	struct policy_net *net;
	struct policy_dns_table *dns; /* names the program resolved through the pod */
	struct tracer *tracer;
	void *files; /* private state of the file handlers (files_*.c) */
	void *netio; /* private state of the network handlers (net_*.c) */
	/* taken from trace-run's own environment before the program's replaces it */
	char program[PATH_MAX]; /* absolute path of PROGRAM, "" when not found */
	char cwd[PATH_MAX];
	char home[PATH_MAX];	    /* "" when unset */
	char tmpdir[PATH_MAX];	    /* $TMPDIR, "" when unset */
	char runtime_dir[PATH_MAX]; /* $XDG_RUNTIME_DIR, "" when unset */
	bool lost_reported;	    /* trace_session_lost said so */
	bool quiet;		    /* -q: no notices (which ports are mirrored...) */
	/* trace-run ended the program itself (a refused steal with on_concurrent_steal
	 * abort): its exit code, 0 when not */
	int abort_exit;
};

/* session.c */
/* Take cfg (finalized; moved into s, cfg is left empty) and fill what trace-run's
 * environment says (cwd, home...). token_env: $HERMIT_TOKEN or NULL. */
int trace_session_init(struct trace_session *s, struct policy_config *cfg, const char *token_env,
		       struct hm_err *err);
/* Connect to the agent, authenticate and open the session on cfg.target. On failure
 * *exit_code says which: TRACER_EXIT_AGENT_DOWN, _AUTH, _TARGET or _FAILURE. */
int trace_session_connect(struct trace_session *s, int *exit_code, struct hm_err *err);
/* Build the fs / net policies and the DNS table. program: as given on the command line,
 * searched in path (the program's PATH) to know the file that stays local. */
int trace_session_policies(struct trace_session *s, const char *program, const char *path,
			   struct hm_err *err);
/* The session is over while the program runs: the target exited (*errno_for_files
 * ESRCH) or the agent is gone (EIO). Says so once, in one line on trace-run's stderr;
 * outgoing connects then fail with ENETUNREACH. False while the session is up.
 * Supervisor thread only. */
bool trace_session_lost(struct trace_session *s, int *errno_for_files);
/* Have the tracer call trace_session_lost as soon as the session ends, so that the
 * line comes when it happens, not at the program's next remote call. */
void trace_session_watch(struct trace_session *s);
/* Close the connection and free everything (s may be partly set up). */
void trace_session_release(struct trace_session *s);

/* kube.c: cluster targets (README "Kubernetes") */
struct trace_kube_opts {
	const char *kubeconfig, *context, *namespace;
	bool force; /* --kube */
};
/* Whether trace-run goes through a cluster: any of --kube, --kubeconfig, --context,
 * -n, or a target only a cluster has (deployment/NAME, pod/NAME/container/C). */
bool trace_kube_wanted(const struct trace_kube_opts *o, const char *target);
/* Resolve cfg.target through the API server, find the agent on its node, fetch the
 * agent's token (unless one was given) and make s->endpoint a port-forward to it. On
 * failure *exit_code says which TRACER_EXIT_*. */
int trace_kube_prepare(struct trace_session *s, const struct trace_kube_opts *o, int *exit_code,
		       struct hm_err *err);
/* `trace-run agents`; argv starts at "agents". */
int trace_agents_main(int argc, char **argv);

/* env.c: the program's environment: the target's (from the agent) filtered and merged
 * over local (trace-run's own, minus hermit's secrets) as cfg.feature.env says. Free
 * with policy_env_free. */
int trace_env_build(struct trace_session *s, char *const local[], char ***out, struct hm_err *err);

/* files_*.c: open/openat/openat2/creat, stat family, statx, access family, readlink,
 * getdents64 on remote directories, chdir, statfs; write mode: mkdir, unlink, rename,
 * write-back on close/fsync. Release writes back what is still pending. */
int trace_files_register(struct trace_session *s, struct hm_err *err);
void trace_files_release(struct trace_session *s);

/* net_*.c: connect, sendto/sendmsg/sendmmsg on unconnected UDP, recvfrom/recvmsg and
 * getpeername on redirected sockets, the local relay for redirected streams. */
int trace_net_register(struct trace_session *s, struct hm_err *err);
void trace_net_release(struct trace_session *s);

/* `trace-run port-forward ...` (net_port_forward.c); argv starts at "port-forward". */
int trace_port_forward_main(int argc, char **argv);

#endif
