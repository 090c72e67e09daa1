/* runtime: trace-pod, hermit's container runtime. This public header is what other
 * modules (the agent) use: reading the state of local pods under RT_STATE_DIR. */
#ifndef HERMIT_RUNTIME_H
#define HERMIT_RUNTIME_H

#include <limits.h>
#include <sys/types.h>

#include "util/util.h"

#define RT_RUN_DIR "/run/hermit"
#define RT_STATE_DIR "/run/hermit/pods"
#define RT_NAME_MAX 63

/* Exit codes, as docker and podman use them. */
#define RT_EXIT_RUNTIME 125
#define RT_EXIT_NOEXEC 126
#define RT_EXIT_NOTFOUND 127

/* The persisted state of one pod: one small file per field under RT_STATE_DIR/NAME/
 * (pid, ip, rootfs, status, cgroup paths ...) so shell tools and the agent can read it. */
struct rt_pod_state {
	char name[RT_NAME_MAX + 1];
	pid_t pid;	   /* the pod's PID 1, in the host pid namespace; 0 if not started */
	pid_t monitor_pid; /* the trace-pod process that owns the pod */
	char ip[64];	   /* "10.213.0.2", or "" without bridge networking */
	char rootfs[PATH_MAX];
	char status[32]; /* "created", "running", "exited" */
	int exit_code;	 /* valid when status is "exited" */
	char net[16];	 /* "bridge", "none", "host" */
};

/* Load the state of pod `name`. Fails with ENOENT when there is no such pod. */
int rt_pod_state_load(const char *name, struct rt_pod_state *out, struct hm_err *err);
/* True when the pod's monitor and PID 1 still exist. */
bool rt_pod_is_running(const struct rt_pod_state *st);

#endif
