/* Interfaces between the files of the runtime module. Not for other modules. */
#ifndef HERMIT_RUNTIME_INTERNAL_H
#define HERMIT_RUNTIME_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/runtime.h"

#define RT_BRIDGE_NAME "hermit0"
#define RT_BRIDGE_PREFIX "10.213" /* private /16: pods get 10.213.x.y */
#define RT_BRIDGE_IP "10.213.0.1"
#define RT_BRIDGE_PREFIXLEN 16

/* ---- cgroup.c: cgroup v2 + v1 (hybrid hosts) ---- */
struct rt_limits {
	uint64_t pids_max;   /* 0 = unset */
	uint64_t memory_max; /* bytes, 0 = unset */
	uint64_t cpu_quota;  /* microseconds per period, 0 = unset */
	uint64_t cpu_period; /* microseconds, default 100000 */
	bool allow_mknod;    /* device policy: mknod of any node passes (open does not) */
};

#define RT_CGROUP_V1_MAX 16
struct rt_cgroup {
	char v2_path[PATH_MAX]; /* e.g. /sys/fs/cgroup/unified/hermit/NAME; "" if no cgroup2 */
	int v2_fd; /* O_PATH|O_DIRECTORY fd of v2_path for CLONE_INTO_CGROUP, -1 if none */
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
/* For a child that joins the v1 cgroups itself (rt_cgroup_join_v1): the `tasks` file
 * of each v1 cgroup opened for writing, fds[cg->n_v1]. All closed on failure. */
int rt_cgroup_open_v1_tasks(const struct rt_cgroup *cg, int *fds, struct hm_err *err);
/* Move the calling single-threaded process into the v1 cgroups whose `tasks` files
 * tasks_fds are: microseconds where rt_cgroup_attach_v1 waits ~10 ms. No malloc. */
int rt_cgroup_join_v1(const int *tasks_fds, int n, struct hm_err *err);
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

/* ---- devices.c: the pod's device policy (allow-list in bpf/devices.h) ---- */
/* v1 devices controller: deny all, then allow the list (and mknod of any node). */
int rt_devices_write_v1(const char *dir, bool allow_mknod, struct hm_err *err);
/* cgroup v2: attach bpf/devices.bpf.c to the pod's directory; it stays with the cgroup. */
int rt_devices_attach_v2(int v2_fd, bool allow_mknod, struct hm_err *err);
/* Whether the process keeps CAP_MKNOD in its bounding set (a pod run with
 * --allow-mknod): `trace-pod exec` gives its command the same capabilities. */
bool rt_devices_pid_keeps_mknod(pid_t pid);

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
/* An exclusive lock (close the fd to release it) that rt_state_create holds while it
 * takes a name: whoever removes a pod whose monitor is gone re-checks that under it, so
 * a new pod that took the name meanwhile is never removed. */
int rt_state_lock(struct hm_err *err);
/* Valid pod names: [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62} */
bool rt_name_valid(const char *name);
/* A pidfd for the pod's monitor if it still is the process that created the state dir
 * (its start time is recorded there, so a reused pid does not count), else -1/ESRCH. */
int rt_state_monitor_pidfd(const char *name, pid_t monitor_pid);
bool rt_state_monitor_alive(const char *name, pid_t monitor_pid);
/* Names of every pod with a state dir, sorted; free with rt_state_list_free. */
int rt_state_list(char ***names, size_t *count, struct hm_err *err);
void rt_state_list_free(char **names, size_t count);

/* ---- podlog.c: a detached pod's log, capped and rotated ---- */
#define RT_LOG_MAX_DEFAULT (10ULL << 20)
struct rt_log {
	int fd;	      /* the current file, also the monitor's stdout and stderr */
	uint64_t max; /* bytes per file: "log" is renamed to "log.1" before it would pass */
	char name[RT_NAME_MAX + 1];
};
/* Open (append to) the pod's log and point stdout and stderr at it. max 0: default. */
int rt_log_open(struct rt_log *log, const char *name, uint64_t max, struct hm_err *err);
/* Move what the non-blocking pipe_fd holds into the log, until it is empty, at EOF
 * (*eof) or after 1 MiB. <0 when some output could not be written (it is dropped, the
 * pipe drained all the same). */
int rt_log_relay(struct rt_log *log, int pipe_fd, bool *eof, struct hm_err *err);
void rt_log_close(struct rt_log *log);
/* Write the pod's log.1 and log to out_fd (`trace-pod logs`); ENOENT without a log. */
int rt_log_print(const char *name, int out_fd, struct hm_err *err);

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
/* The same program, from cache_dir (RT_RUN_DIR) when an earlier start of this binary
 * with this libseccomp left it there, else compiled and left there (seccomp_cache.c). */
int rt_seccomp_compile_cached(struct rt_seccomp_prog *prog, const char *cache_dir,
			      struct hm_err *err);
/* Where rt_seccomp_compile_cached keeps this binary's program in dir. */
int rt_seccomp_cache_path(const char *dir, char *buf, size_t len, struct hm_err *err);
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
/* Relay between the operator's fds 0-2 and the pod: with -t the pod's pty (our terminal
 * in raw mode while it runs); without -t, pipes that stand in for those of fds 0-2 that
 * are a terminal, so the pod never holds the operator's terminal (a process left in the
 * pod could read what is typed after trace-pod returned). The caller polls the fds
 * rt_tty_relay_fds gives (at most RT_TTY_RELAY_MAX_FDS) with its own, passes them to
 * rt_tty_relay_io, calls rt_tty_relay_resize on SIGWINCH and rt_tty_relay_finish once
 * the process exited: that stops the input, copies the last output, restores the
 * terminal (also restored if a signal kills trace-pod meanwhile) and closes. */
#define RT_TTY_RELAY_MAX_FDS 4
struct rt_tty_relay {
	bool pty;   /* in and out[0] are the pty master */
	int in;	    /* where our stdin goes (pty master or the pod's stdin pipe), or -1 */
	int out[2]; /* what the pod writes, copied to our fd 1 and 2, or -1 */
	bool stdin_open;
	bool handlers_installed;
	size_t to_pod_len, to_pod_off;
	char to_pod[4096];
};
struct pollfd;
int rt_tty_relay_start(struct rt_tty_relay *r, int master, struct hm_err *err);
/* Without -t: pipes for those of fds 0-2 that are a terminal (stdin from /dev/null when
 * trace-pod is a background job), the pod's ends put on our fds 0-2 for the spawn, the
 * originals kept in saved for rt_tty_relay_pipes_restore right after it. 1: r relays
 * them; 0: none of 0-2 is a terminal, nothing changed. */
int rt_tty_relay_pipes(struct rt_tty_relay *r, int saved[3], struct hm_err *err);
void rt_tty_relay_pipes_restore(int saved[3]);
int rt_tty_relay_fds(const struct rt_tty_relay *r, struct pollfd *fds);
void rt_tty_relay_io(struct rt_tty_relay *r, const struct pollfd *fds, int n);
void rt_tty_relay_resize(struct rt_tty_relay *r);
void rt_tty_relay_finish(struct rt_tty_relay *r);
/* ---- rootfs_private.c: keep the pod's files from the host's other users ---- */
/* rootfs (a realpath) is private when a directory on its path, itself included, is
 * owned by root and closed to group and others; else EACCES with the fix in err. */
int rt_rootfs_check_private(const char *rootfs, struct hm_err *err);
/* Before `trace-pod rootfs DIR` makes DIR: a missing parent is created 0700 (with
 * any missing ancestors), so a new rootfs is private from the start. */
int rt_rootfs_prepare_parent(const char *dir, struct hm_err *err);
/* ---- rootfs_path.c: host-side writes into a rootfs ----
 * A rootfs is the pods': any entry may be a symlink planted to reach the host. Paths are
 * relative to root (an fd of the rootfs) and resolved with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS): links are followed as the pod would see them, never out of the
 * rootfs; a final component that is created or replaced is not followed. When a link on
 * the way does not resolve, the message names it and its target. */
/* O_PATH fd of the rootfs directory the operator named. */
int rt_rootfs_open_root(const char *dir, struct hm_err *err);
int rt_rootfs_open(int root, const char *path, int flags, mode_t mode, struct hm_err *err);
/* path is a directory (created if missing) with mode, set through an fd. */
int rt_rootfs_mkdir(int root, const char *path, mode_t mode, struct hm_err *err);
/* Create or replace path with src_fd's content (or, src_fd < 0, len bytes of data) and
 * mode: a temporary file beside it renamed over it, so a link at path is replaced and a
 * running binary never seen half-written. */
int rt_rootfs_install(int root, const char *path, int src_fd, const void *data, size_t len,
		      mode_t mode, struct hm_err *err);
/* Create path with data unless something of that name exists (kept, a link too). */
int rt_rootfs_create(int root, const char *path, const void *data, size_t len, mode_t mode,
		     struct hm_err *err);
/* A symlink at path to target unless something of that name exists. */
int rt_rootfs_symlink(int root, const char *path, const char *target, struct hm_err *err);
/* O_PATH fd of the regular file path (created empty if missing), a bind-mount target for
 * move_mount(MOVE_MOUNT_T_EMPTY_PATH). */
int rt_rootfs_mount_target(int root, const char *path, struct hm_err *err);

/* ---- container.c: clone3 and the child's side ---- */
struct rt_spec {
	const char *name;
	const char *rootfs; /* absolute */
	const char *hostname;
	const char *workdir;	   /* inside the pod, default "/" */
	char **argv;		   /* command, NULL-terminated */
	char **env;		   /* KEY=VALUE, NULL-terminated (already merged with defaults) */
	bool init;		   /* run a reaping init as PID 1 */
	bool net_host;		   /* share the host's netns (no CLONE_NEWNET) */
	bool allow_mknod;	   /* keep CAP_MKNOD (the cgroup device policy still applies) */
	const char *hosts_file;	   /* host path bind-mounted onto /etc/hosts (or NULL) */
	const char *resolv_file;   /* ... /etc/resolv.conf */
	const char *hostname_file; /* ... /etc/hostname */
	const struct rt_seccomp_prog *seccomp; /* loaded just before exec; NULL: none */
	bool tty; /* a pty of its own (-t), its master for rt_container_start */
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
 * uts, ipc, net and cgroup namespaces. The child waits on the sync pipe before it joins
 * its v1 cgroups, sets up its root and execs, so the caller can set up networking
 * first. */
int rt_container_spawn(const struct rt_spec *spec, const struct rt_cgroup *cg,
		       struct rt_container *c, struct hm_err *err);
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
/* Bounding set down to docker's default capabilities without CAP_MKNOD (kept only
 * when keep_mknod: --allow-mknod), capset to match, no ambient caps,
 * PR_SET_NO_NEW_PRIVS. */
int rt_child_restrict(bool keep_mknod, struct hm_err *err);
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
	char rootfs[PATH_MAX]; /* absolute, checked to exist */
	const char *hostname;  /* NULL: the pod name */
	struct rt_limits limits;
	enum rt_net_mode net;
	char **env;	       /* the user's KEY=VALUE list, NULL-terminated */
	const char *workdir;   /* NULL: "/" */
	const char *dns;       /* NULL: the host's nameservers */
	unsigned stop_timeout; /* seconds from a forwarded signal to SIGKILL */
	uint64_t log_max_size; /* detached: cap of each log file, 0 = RT_LOG_MAX_DEFAULT */
	bool init;
	bool detach;
	bool tty;	    /* -t: a pty of its own, relayed to our terminal */
	bool seccomp;	    /* the default seccomp profile (false: --seccomp off) */
	bool public_rootfs; /* --unsafe-public-rootfs: skip rt_rootfs_check_private */
	char **argv;
};

struct rt_run_result {
	int exit_code; /* what trace-pod exits with */
	bool monitor;  /* true in the forked monitor of a detached pod: exit quietly */
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
/* A pod whose monitor died (kill -9, crash) before it released the pod: its processes,
 * cgroups, veth and state dir are removed and the name is free. Pods that are running,
 * being set up or exited normally are left alone. 1: removed, 0: nothing to do. */
int rt_pod_reap_dead(const char *name, struct hm_err *err);
/* Remove an exited or dead pod (force: kill a running one first) and its state. */
int rt_pod_remove(const char *name, bool force, struct hm_err *err);

/* ---- exec.c: `trace-pod exec` ---- */
/* Join every namespace of the pod (through its pidfd) and its cgroups, run argv in a
 * new session under the pod's seccomp profile (with tty: on a pty of the pod's relayed
 * to our terminal), wait, return its exit code (or <0). When argv cannot be executed it returns 127
 * (not found) or 126 and also fills err with the reason ("exec 'foo': No such file or directory").
 * err is cleared on entry, so a caller prints err->msg whenever it is not empty. */
int rt_pod_exec(const struct rt_pod_state *st, char **argv, bool tty, struct hm_err *err);

#endif
