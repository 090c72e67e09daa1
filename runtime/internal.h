/* Interfaces between the files of the runtime module. Not for other modules. */
#ifndef HERMIT_RUNTIME_INTERNAL_H
#define HERMIT_RUNTIME_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/runtime.h"

#define RT_BRIDGE_NAME "hermit0"
#define RT_BRIDGE_PREFIX "10.213"   /* private /16: pods get 10.213.x.y */
#define RT_BRIDGE_IP "10.213.0.1"
#define RT_BRIDGE_PREFIXLEN 16

/* ---- cgroup.c: cgroup v2 + v1 (hybrid hosts) ---- */
struct rt_limits {
	uint64_t pids_max;   /* 0 = unset */
	uint64_t memory_max; /* bytes, 0 = unset */
	uint64_t cpu_quota;  /* microseconds per period, 0 = unset */
	uint64_t cpu_period; /* microseconds, default 100000 */
};

#define RT_CGROUP_V1_MAX 16
struct rt_cgroup {
	char v2_path[PATH_MAX]; /* e.g. /sys/fs/cgroup/unified/hermit/NAME; "" if no cgroup2 */
	int v2_fd;              /* O_PATH|O_DIRECTORY fd of v2_path for CLONE_INTO_CGROUP, -1 if none */
	int n_v1;
	char v1_paths[RT_CGROUP_V1_MAX][PATH_MAX]; /* each controller dir we created */
};

/* Parse "--cpu-max" values: "max", "QUOTA" or "QUOTA PERIOD" / "QUOTA/PERIOD" (µs). */
int rt_parse_cpu_max(const char *s, struct rt_limits *lim, struct hm_err *err);
/* Create the pod's cgroups (v2 dir for CLONE_INTO_CGROUP and the v1 controller dirs a
 * limit needs, plus pids/memory/cpu v1 dirs when those controllers are on v1) and write
 * the limits. A requested limit with no controller anywhere is an error. */
int rt_cgroup_create(const char *name, const struct rt_limits *lim, struct rt_cgroup *cg,
		     struct hm_err *err);
/* Move pid into every v1 cgroup (the v2 one is entered by clone3). */
int rt_cgroup_attach_v1(const struct rt_cgroup *cg, pid_t pid, struct hm_err *err);
/* Move pid into every cgroup, v2 included (for `trace-pod exec`). */
int rt_cgroup_attach_all(const struct rt_cgroup *cg, pid_t pid, struct hm_err *err);
/* Number of OOM kills recorded in the pod's memory cgroup (v2 memory.events or v1
 * memory.oom_control), 0 when unknown. */
uint64_t rt_cgroup_oom_kills(const struct rt_cgroup *cg);
/* Kill what is left and remove every directory; idempotent. */
int rt_cgroup_destroy(struct rt_cgroup *cg, struct hm_err *err);
/* Persist/restore the paths (for exec, stop, rm and the agent): one path per line. */
int rt_cgroup_save(const struct rt_cgroup *cg, const char *file, struct hm_err *err);
int rt_cgroup_load(struct rt_cgroup *cg, const char *file, struct hm_err *err);

/* ---- net.c: bridge + veth over netlink (libmnl) ---- */
/* Allocate a free address in the bridge subnet for pod `name` and record it in the
 * pod's state dir (file "ip"), under a lock shared by all trace-pod processes. */
int rt_net_alloc_ip(const char *name, char *ip, size_t iplen, struct hm_err *err);
/* Ensure the bridge exists and is up with RT_BRIDGE_IP/16; create the veth pair
 * host_if <-> eth0 in the netns of `pid`, with `ip`/16, lo up, default route via the
 * bridge. host_if receives the host-side name ("hm" + short id). */
int rt_net_setup_pod(pid_t pid, const char *name, const char *ip, char *host_if, size_t host_if_len,
		     struct hm_err *err);
/* Bring lo up in the netns of pid (for --net none). */
int rt_net_setup_loopback(pid_t pid, struct hm_err *err);
/* Delete the host-side veth (missing is success). */
int rt_net_teardown_pod(const char *host_if, struct hm_err *err);

/* ---- state.c: /run/hermit/pods/NAME ---- */
/* Create the pod's state dir atomically; EEXIST means the name is taken. */
int rt_state_create(const char *name, struct hm_err *err);
int rt_state_write(const char *name, const char *key, const char *value, struct hm_err *err);
int rt_state_read(const char *name, const char *key, char *buf, size_t len, struct hm_err *err);
/* Path of a file in the pod's state dir. */
void rt_state_path(const char *name, const char *key, char *buf, size_t len);
int rt_state_remove(const char *name, struct hm_err *err);
/* Valid pod names: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} */
bool rt_name_valid(const char *name);
/* A pidfd for the pod's monitor if it still is the process that created the state dir
 * (its start time is recorded there, so a reused pid does not count), else -1/ESRCH. */
int rt_state_monitor_pidfd(const char *name, pid_t monitor_pid);
bool rt_state_monitor_alive(const char *name, pid_t monitor_pid);
/* Names of every pod with a state dir, sorted; free with rt_state_list_free. */
int rt_state_list(char ***names, size_t *count, struct hm_err *err);
void rt_state_list_free(char **names, size_t count);

/* ---- rootfs.c ---- */
/* Build a minimal root filesystem from Debian's busybox-static in dir. */
int rt_rootfs_build(const char *dir, struct hm_err *err);
/* Copy a (static) binary into dir/bin. */
int rt_rootfs_deploy(const char *rootfs, const char *file, struct hm_err *err);

/* ---- seccomp.c: the pods' default seccomp profile ---- */
struct sock_filter;
/* A compiled profile (classic BPF); insns NULL: no profile (--seccomp off). */
struct rt_seccomp_prog {
	struct sock_filter *insns;
	size_t len;
};
/* Build the default profile with libseccomp, in trace-pod (it allocates). */
int rt_seccomp_compile(struct rt_seccomp_prog *prog, struct hm_err *err);
void rt_seccomp_free(struct rt_seccomp_prog *prog);
/* In the pod's process, the last step before exec (needs no_new_privs; no malloc). A
 * NULL or empty prog loads nothing. */
int rt_seccomp_load(const struct rt_seccomp_prog *prog, struct hm_err *err);

/* ---- pty.c: the pod's session and terminal ---- */
/* Child side, after the pod's mounts: setsid(); with tty_sock >= 0 also a pty from the
 * pod's /dev/pts as controlling terminal and fds 0-2, its master sent on tty_sock. */
int rt_child_new_session(int tty_sock, struct hm_err *err);
/* trace-pod side. -t needs a terminal on stdin: <0 with a clear message otherwise. */
int rt_tty_require_terminal(struct hm_err *err);
/* Receive the master the child sent; *master -1 (and 0 returned) when the child closed
 * the socket without sending one (it failed: its reason is on the error pipe). */
int rt_tty_receive_master(int sock, int *master, struct hm_err *err);
/* Relay between the operator's terminal (stdin/stdout, raw mode while it runs) and
 * the pod's pty. The caller polls the fds rt_tty_relay_fds gives (at most 2) with its
 * own, passes them to rt_tty_relay_io, calls rt_tty_relay_resize on SIGWINCH and
 * rt_tty_relay_finish once the process exited: that copies the last output, restores
 * the terminal (also restored if a signal kills trace-pod meanwhile) and closes. */
struct rt_tty_relay {
	int master;
	bool stdin_open;
	bool output_open;
	bool handlers_installed;
	size_t to_pod_len, to_pod_off;
	char to_pod[4096];
};
struct pollfd;
int rt_tty_relay_start(struct rt_tty_relay *r, int master, struct hm_err *err);
int rt_tty_relay_fds(const struct rt_tty_relay *r, struct pollfd *fds);
void rt_tty_relay_io(struct rt_tty_relay *r, const struct pollfd *fds, int n);
void rt_tty_relay_resize(struct rt_tty_relay *r);
void rt_tty_relay_finish(struct rt_tty_relay *r);

/* ---- container.c: clone3 and the child's side ---- */
struct rt_spec {
	const char *name;
	const char *rootfs;   /* absolute */
	const char *hostname;
	const char *workdir;  /* inside the pod, default "/" */
	char **argv;          /* command, NULL-terminated */
	char **env;           /* KEY=VALUE, NULL-terminated (already merged with defaults) */
	bool init;            /* run a reaping init as PID 1 */
	bool net_host;        /* share the host's netns (no CLONE_NEWNET) */
	const char *hosts_file;      /* host path bind-mounted onto /etc/hosts (or NULL) */
	const char *resolv_file;     /* ... /etc/resolv.conf */
	const char *hostname_file;   /* ... /etc/hostname */
	const struct rt_seccomp_prog *seccomp; /* loaded just before exec; NULL: none */
	bool tty;             /* a pty of its own (-t), its master for rt_container_start */
};

struct rt_container {
	pid_t pid;
	int pidfd;
	int sync_fd;  /* parent end: write one byte to let the child go on */
	int error_fd; /* parent end: child reports setup/exec failure here */
	bool tty;     /* the child sends a pty master on sync_fd before it execs */
	int tty_fd;   /* that master once started, or -1 */
};

/* clone3() the pod's PID 1 into the v2 cgroup (CLONE_INTO_CGROUP) with new pid, mount,
 * uts, ipc, net and cgroup namespaces. The child waits on the sync pipe before it sets
 * up its root and execs, so the caller can attach cgroups and networking first. */
int rt_container_spawn(const struct rt_spec *spec, const struct rt_cgroup *cg, struct rt_container *c,
		       struct hm_err *err);
/* Let the child continue; then wait for it to exec. Returns 0 once exec succeeded, or
 * <0 with the child's reason; *exit_code gets 127 (not found), 126 (not executable)
 * or 125 (setup failure). */
int rt_container_start(struct rt_container *c, int *exit_code, struct hm_err *err);
void rt_container_release(struct rt_container *c);

/* ---- child side (container.c, mounts.c, init.c; shared with exec.c) ----
 * These run in the pod's first process (or exec's helper) between clone and exec. A
 * failure is sent to the runtime as one record on the error pipe (O_CLOEXEC: a
 * successful exec closes it, so EOF means "exec happened"). */
enum rt_child_stage { RT_STAGE_SETUP = 1, RT_STAGE_EXEC = 2 };
/* In the pod's new mount namespace: private propagation, pivot_root into spec->rootfs
 * with the old root detached, /proc, /sys (ro), /dev, the /etc/hosts-style binds,
 * masked and read-only paths. */
int rt_mounts_setup(const struct rt_spec *spec, struct hm_err *err);
/* --init: PID 1 forks argv, forwards SIGTERM/INT/HUP/QUIT/USR1/USR2 to it, reaps every
 * zombie and exits with argv's status (128+N when killed by signal N). */
void rt_init_run(char **argv, char **env, int error_fd) __attribute__((noreturn));
/* Bounding set down to docker's default capabilities, capset to match, no ambient
 * caps, PR_SET_NO_NEW_PRIVS. */
int rt_child_restrict(struct hm_err *err);
/* Default dispositions (SIG_IGN included) and an empty signal mask, as for a fresh exec. */
void rt_child_reset_signals(void);
/* chdir(dir), then refuse a cwd outside the root (CVE-2024-21626). */
int rt_child_enter_workdir(const char *dir, struct hm_err *err);
/* Close every fd above stdio but the n in keep (-1: none): the child must not hold the
 * runtime's fds (cgroup dirs, other pods' pipes, a test harness's files) even before
 * exec, while a process in the pod could reach them through /proc. */
void rt_child_close_fds_except(const int *keep, size_t n);
/* execvpe with PATH from env; on failure report RT_STAGE_EXEC and _exit(126/127). */
void rt_child_exec(char **argv, char **env, int error_fd) __attribute__((noreturn));
/* Send (errno, stage, message) on error_fd and _exit with the matching code. */
void rt_child_fail(int error_fd, enum rt_child_stage stage, const struct hm_err *err)
	__attribute__((noreturn));
/* Runtime side: read the error pipe to EOF. 0 when the child exec'd; <0 with err (the
 * child's message and errno) and *exit_code 125, 126 or 127 when it reported a failure. */
int rt_child_error_read(int fd, int *exit_code, struct hm_err *err);

/* ---- pod.c: the `trace-pod run` lifecycle ---- */
enum rt_net_mode { RT_NET_BRIDGE, RT_NET_NONE, RT_NET_HOST };

struct rt_run_opts {
	char name[RT_NAME_MAX + 1];
	char rootfs[PATH_MAX];   /* absolute, checked to exist */
	const char *hostname;    /* NULL: the pod name */
	struct rt_limits limits;
	enum rt_net_mode net;
	char **env;              /* the user's KEY=VALUE list, NULL-terminated */
	const char *workdir;     /* NULL: "/" */
	const char *dns;         /* NULL: the host's nameservers */
	unsigned stop_timeout;   /* seconds from a forwarded signal to SIGKILL */
	bool init;
	bool detach;
	bool tty;                /* -t: a pty of its own, relayed to our terminal */
	bool seccomp;            /* the default seccomp profile (false: --seccomp off) */
	char **argv;
};

struct rt_run_result {
	int exit_code;  /* what trace-pod exits with */
	bool monitor;   /* true in the forked monitor of a detached pod: exit quietly */
};

/* Create, start and wait for a pod (foreground), or start it under a forked monitor
 * (detach). Everything created is released before it returns, whatever happens.
 * <0 with err and result->exit_code 125/126/127 when the pod could not start. */
int rt_pod_run(const struct rt_run_opts *opts, struct rt_run_result *result, struct hm_err *err);

/* ---- control.c: stop / rm of existing pods ---- */
/* "running", "created", "exited", or "dead" for a pod whose monitor disappeared. */
const char *rt_pod_status(const struct rt_pod_state *st);
/* SIGTERM to the monitor (which forwards it and escalates), SIGKILL to the pod after
 * timeout seconds; returns once the pod is gone and released. */
int rt_pod_stop(const char *name, unsigned timeout, struct hm_err *err);
/* Remove an exited or dead pod (force: kill a running one first) and its state. */
int rt_pod_remove(const char *name, bool force, struct hm_err *err);

/* ---- exec.c: `trace-pod exec` ---- */
/* Join every namespace of the pod (through its pidfd) and its cgroups, run argv in a
 * new session under the pod's seccomp profile (with tty: on a pty of the pod's relayed
 * to our terminal), wait, return its exit code (or <0). When argv cannot be executed it returns 127 (not found)
 * or 126 and also fills err with the reason ("exec 'foo': No such file or directory").
 * err is cleared on entry, so a caller prints err->msg whenever it is not empty. */
int rt_pod_exec(const struct rt_pod_state *st, char **argv, bool tty, struct hm_err *err);

#endif
