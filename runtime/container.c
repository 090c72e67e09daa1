/* The pod's first process: one clone3() into fresh namespaces (and straight into the
 * pod's cgroup v2 directory), held on a sync socket until the runtime has set up the
 * network, then it joins its v1 cgroups itself (through `tasks` fds opened before the
 * clone: no ~10 ms RCU wait, see rt_cgroup_join_v1), root filesystem, hostname,
 * capabilities, fd hygiene and exec. Failures come back as (errno, stage, message) on an O_CLOEXEC
 * pipe.
 *
 * The child is a raw clone3 of the runtime without a new stack (fork semantics), so it
 * stays away from malloc and other locks: only stack buffers, syscalls and snprintf. */
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "runtime/internal.h"

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* struct clone_args of <linux/sched.h>, spelled out because that header collides with
 * glibc's <sched.h>. Size CLONE_ARGS_SIZE_VER2 (cgroup field, Linux 5.7). */
struct rt_clone_args {
	uint64_t flags;
	uint64_t pidfd;
	uint64_t child_tid;
	uint64_t parent_tid;
	uint64_t exit_signal;
	uint64_t stack;
	uint64_t stack_size;
	uint64_t tls;
	uint64_t set_tid;
	uint64_t set_tid_size;
	uint64_t cgroup;
};

/* docker's default capability set (moby/oci/caps/defaults.go) minus CAP_MKNOD: the
 * pod's /dev is made for it, and a node it makes could only be opened where the device
 * policy allows anyway (runtime/devices.c); --allow-mknod keeps it */
static const int default_caps[] = {
    CAP_CHOWN,	    CAP_DAC_OVERRIDE, CAP_FSETID,      CAP_FOWNER,  CAP_NET_RAW,
    CAP_SETGID,	    CAP_SETUID,	      CAP_SETFCAP,     CAP_SETPCAP, CAP_NET_BIND_SERVICE,
    CAP_SYS_CHROOT, CAP_KILL,	      CAP_AUDIT_WRITE,
};

struct child_error_record {
	int32_t code;
	int32_t stage;
	char msg[HM_ERR_MSG_MAX];
};
/* one write() of at most PIPE_BUF bytes is atomic: the runtime never sees half a record */
_Static_assert(sizeof(struct child_error_record) <= 4096, "error record must fit PIPE_BUF");

/* ---- child-side helpers (also used by exec.c) ---- */

static int failure_exit_code(int stage, int code)
{
	if (stage != RT_STAGE_EXEC)
		return RT_EXIT_RUNTIME;
	if (code == ENOENT || code == ENOTDIR)
		return RT_EXIT_NOTFOUND;
	return RT_EXIT_NOEXEC;
}

void rt_child_fail(int error_fd, enum rt_child_stage stage, const struct hm_err *err)
{
	struct child_error_record rec = {.code = err->code, .stage = stage};
	snprintf(rec.msg, sizeof(rec.msg), "%s", err->msg[0] ? err->msg : "pod setup failed");
	if (error_fd >= 0) {
		ssize_t n;
		do
			n = write(error_fd, &rec, sizeof(rec));
		while (n < 0 && errno == EINTR);
	}
	_exit(failure_exit_code(stage, err->code));
}

int rt_child_error_read(int fd, int *exit_code, struct hm_err *err)
{
	struct child_error_record rec;
	ssize_t n = hm_read_all(fd, &rec, sizeof(rec));
	if (n == 0)
		return 0;
	if (exit_code)
		*exit_code = RT_EXIT_RUNTIME;
	if (n < 0)
		return hm_err_errno(err, "read the pod's status");
	if (n != (ssize_t)sizeof(rec))
		return hm_err_set(err, 0, "the pod's process died during setup");
	rec.msg[sizeof(rec.msg) - 1] = '\0';
	if (exit_code)
		*exit_code = failure_exit_code(rec.stage, rec.code);
	/* the child's message already ends with strerror() */
	hm_err_set(err, 0, "%s", rec.msg);
	if (err)
		err->code = rec.code;
	return -1;
}

void rt_child_reset_signals(void)
{
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	/* glibc's internal signals answer EINVAL: fine, they are not the pod's business */
	for (int sig = 1; sig < _NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

int rt_child_restrict(bool keep_mknod, struct hm_err *err)
{
	uint64_t keep = keep_mknod ? 1ULL << CAP_MKNOD : 0;
	for (size_t i = 0; i < HM_ARRAY_SIZE(default_caps); i++)
		keep |= 1ULL << default_caps[i];
	/* PR_CAPBSET_READ fails past the kernel's last capability */
	for (int cap = 0; cap < 64; cap++) {
		int in_set = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
		if (in_set < 0)
			break;
		if (!in_set) {
			keep &= ~(1ULL << cap);
			continue;
		}
		if (!(keep & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			return hm_err_errno(err, "drop capability %d from the bounding set", cap);
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return hm_err_errno(err, "clear ambient capabilities");

	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &hdr, data) < 0)
		return hm_err_errno(err, "capget");
	/* capset may only lower: keep what we hold of docker's set */
	uint64_t permitted = data[0].permitted | (uint64_t)data[1].permitted << 32;
	keep &= permitted;
	/* Nothing inheritable (moby CVE-2022-24769): with an inheritable set, a file with
	 * inheritable file capabilities would gain them at execve, from a pod user
	 * without them. Ambient capabilities need the inheritable ones, so they stay off. */
	for (int i = 0; i < 2; i++) {
		uint32_t word = (uint32_t)(keep >> (32 * i));
		data[i].effective = data[i].permitted = word;
		data[i].inheritable = 0;
	}
	if (syscall(SYS_capset, &hdr, data) < 0)
		return hm_err_errno(err, "capset");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return hm_err_errno(err, "set no_new_privs");
	return 0;
}

int rt_child_enter_workdir(const char *dir, struct hm_err *err)
{
	if (chdir(dir) < 0)
		return hm_err_errno(err, "workdir %s", dir);
	char cwd[PATH_MAX];
	/* a cwd outside the root: glibc answers ENOENT, older ones "(unreachable)/..." */
	if (!getcwd(cwd, sizeof(cwd)))
		return hm_err_errno(err, "workdir %s: getcwd", dir);
	if (cwd[0] != '/')
		return hm_err_set(err, EPERM, "workdir %s is outside the pod's root (%s)", dir,
				  cwd);
	return 0;
}

void rt_child_exec(char **argv, char **env, int error_fd)
{
	static char *no_env[] = {NULL};
	if (!env)
		env = no_env;
	/* clearenv() + setenv would touch malloc; execvpe takes PATH from environ */
	environ = env;
	execvpe(argv[0], argv, env);
	struct hm_err err;
	hm_err_errno(&err, "exec '%s'", argv[0]);
	rt_child_fail(error_fd, RT_STAGE_EXEC, &err);
}

void rt_child_close_fds_except(const int *keep, size_t n)
{
	/* close_range between the kept fds, in ascending order, without malloc */
	unsigned lo = 3;
	for (;;) {
		int next = -1;
		for (size_t i = 0; i < n; i++)
			if (keep[i] >= (int)lo && (next < 0 || keep[i] < next))
				next = keep[i];
		if (next < 0)
			break;
		if ((unsigned)next > lo)
			syscall(SYS_close_range, lo, (unsigned)next - 1, 0);
		lo = next + 1;
	}
	syscall(SYS_close_range, lo, ~0U, 0);
}

/* ---- the pod's first process ---- */

static int child_setup(const struct rt_spec *spec, struct hm_err *err)
{
	umask(022);
	/* in the v1 cgroups now (child_main): re-root the cgroup namespace so the pod
	 * sees "/" there too, not the host's layout */
	if (unshare(CLONE_NEWCGROUP) < 0)
		return hm_err_errno(err, "unshare cgroup namespace");
	if (rt_mounts_setup(spec, err) < 0)
		return -1;
	const char *hostname = spec->hostname ? spec->hostname : spec->name;
	if (hostname && sethostname(hostname, strlen(hostname)) < 0)
		return hm_err_errno(err, "sethostname %s", hostname);
	if (rt_child_restrict(spec->allow_mknod, err) < 0)
		return -1;
	if (rt_child_enter_workdir(spec->workdir && *spec->workdir ? spec->workdir : "/", err) < 0)
		return -1;
	/* belt and braces: whatever setup opened must not survive exec */
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		return hm_err_errno(err, "close_range");
	return 0;
}

static void __attribute__((noreturn))
child_main(const struct rt_spec *spec, int sync_fd, int error_fd, const int *v1_tasks, int n_v1)
{
	rt_child_reset_signals();
	/* The pod must not outlive the trace-pod process that owns it (foreground run or
	 * detached monitor): nobody would clean up its cgroups and veth. If the parent is
	 * already gone, the sync read below sees EOF. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	int keep[2 + RT_CGROUP_V1_MAX] = {sync_fd, error_fd};
	for (int i = 0; i < n_v1; i++)
		keep[2 + i] = v1_tasks[i];
	rt_child_close_fds_except(keep, 2 + (size_t)n_v1);
	char go;
	ssize_t n;
	do
		n = read(sync_fd, &go, 1);
	while (n < 0 && errno == EINTR);
	/* EOF: the runtime released us without starting (error path or it died) */
	if (n != 1)
		_exit(RT_EXIT_RUNTIME);
	/* with -t the pty's master goes back on the sync socket */
	if (!spec->tty)
		hm_closep(&sync_fd);

	struct hm_err err = {0};
	/* before anything of the pod runs, and before child_setup re-roots the cgroup
	 * namespace */
	if (rt_cgroup_join_v1(v1_tasks, n_v1, &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	for (int i = 0; i < n_v1; i++)
		close(v1_tasks[i]);
	if (child_setup(spec, &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	/* never the caller's session: its terminal must not be ours (TIOCSTI) */
	if (rt_child_new_session(sync_fd, &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	hm_closep(&sync_fd);
	if (rt_seccomp_load(spec->seccomp, &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	if (spec->init)
		rt_init_run(spec->argv, spec->env, error_fd);
	rt_child_exec(spec->argv, spec->env, error_fd);
}

/* Keep our pipe ends off fds 0-2 in case the runtime was started with stdio closed. */
static int fd_above_stdio(int *fd, struct hm_err *err)
{
	if (*fd > 2)
		return 0;
	int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
	if (moved < 0)
		return hm_err_errno(err, "dup");
	close(*fd);
	*fd = moved;
	return 0;
}

int rt_container_spawn(const struct rt_spec *spec, const struct rt_cgroup *cg,
		       struct rt_container *c, struct hm_err *err)
{
	c->pid = 0;
	c->pidfd = c->sync_fd = c->error_fd = c->tty_fd = -1;
	c->tty = spec->tty;
	if (!spec->argv || !spec->argv[0])
		return hm_err_set(err, EINVAL, "no command to run");
	if (!spec->rootfs || spec->rootfs[0] != '/')
		return hm_err_set(err, EINVAL, "rootfs must be an absolute path");
	struct stat st;
	if (stat(spec->rootfs, &st) < 0)
		return hm_err_errno(err, "rootfs %s", spec->rootfs);
	if (!S_ISDIR(st.st_mode))
		return hm_err_set(err, ENOTDIR, "rootfs %s", spec->rootfs);

	/* a socket, not a pipe, so a start after the child died is EPIPE, not SIGPIPE */
	int sync_pair[2], error_pipe[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sync_pair) < 0)
		return hm_err_errno(err, "socketpair");
	hm_cleanup_close int sync_parent = sync_pair[0];
	hm_cleanup_close int sync_child = sync_pair[1];
	if (pipe2(error_pipe, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	hm_cleanup_close int error_parent = error_pipe[0];
	hm_cleanup_close int error_child = error_pipe[1];
	if (fd_above_stdio(&sync_parent, err) < 0 || fd_above_stdio(&sync_child, err) < 0 ||
	    fd_above_stdio(&error_parent, err) < 0 || fd_above_stdio(&error_child, err) < 0)
		return -1;

	uint64_t flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC |
			 CLONE_NEWCGROUP | CLONE_PIDFD;
	if (!spec->net_host)
		flags |= CLONE_NEWNET;
	bool into_cgroup = cg && cg->v2_fd >= 0;
	int pidfd = -1;
	struct rt_clone_args args = {
	    .flags = flags | (into_cgroup ? CLONE_INTO_CGROUP : 0),
	    .pidfd = (uint64_t)(uintptr_t)&pidfd,
	    .exit_signal = SIGCHLD,
	    .cgroup = into_cgroup ? (uint64_t)cg->v2_fd : 0,
	};
	/* the child joins its v1 cgroups itself, through these */
	int n_v1 = cg ? cg->n_v1 : 0;
	int v1_tasks[RT_CGROUP_V1_MAX];
	if (n_v1 && rt_cgroup_open_v1_tasks(cg, v1_tasks, err) < 0)
		return -1;
	bool fallback = false;
	pid_t pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0 && errno == ENOSYS) {
		/* a kernel before 5.3 (or a seccomp profile that hides clone3): clone() has
		 * no CLONE_INTO_CGROUP; its pidfd comes back in the parent_tid slot */
		fallback = true;
		pid =
		    syscall(SYS_clone, (unsigned long)(flags | SIGCHLD), NULL, &pidfd, NULL, NULL);
	}
	if (pid == 0)
		child_main(spec, sync_child, error_child, v1_tasks, n_v1);
	int clone_errno = errno;
	for (int i = 0; i < n_v1; i++)
		close(v1_tasks[i]);
	if (pid < 0) {
		errno = clone_errno;
		return hm_err_errno(err, "%s", fallback ? "clone" : "clone3");
	}

	hm_closep(&sync_child);
	hm_closep(&error_child);
	if (fallback && into_cgroup) {
		char buf[32];
		snprintf(buf, sizeof(buf), "%d", (int)pid);
		if (hm_write_file_at(cg->v2_fd, "cgroup.procs", buf, err) < 0) {
			/* closing the sync socket makes the child exit; reap it here */
			hm_closep(&sync_parent);
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			close(pidfd);
			return hm_err_prefix(err, "cgroup %s", cg->v2_path);
		}
	}
	c->pid = pid;
	c->pidfd = pidfd;
	c->sync_fd = hm_steal_fd(&sync_parent);
	c->error_fd = hm_steal_fd(&error_parent);
	return 0;
}

int rt_container_start(struct rt_container *c, int *exit_code, struct hm_err *err)
{
	if (exit_code)
		*exit_code = 0;
	if (c->sync_fd < 0 || c->error_fd < 0)
		return hm_err_set(err, EINVAL, "pod process not spawned or already started");
	char go = 'g';
	ssize_t n;
	do
		n = send(c->sync_fd, &go, 1, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != 1) {
		hm_closep(&c->sync_fd);
		hm_closep(&c->error_fd);
		if (exit_code)
			*exit_code = RT_EXIT_RUNTIME;
		return hm_err_errno(err, "the pod's process died before it was started");
	}
	struct hm_err tty_err = {0};
	int tty_rc = c->tty ? rt_tty_receive_master(c->sync_fd, &c->tty_fd, &tty_err) : 0;
	hm_closep(&c->sync_fd);
	/* the child's own report explains a missing pty better than the socket's EOF */
	int rc = rt_child_error_read(c->error_fd, exit_code, err);
	hm_closep(&c->error_fd);
	if (rc == 0 && (tty_rc < 0 || (c->tty && c->tty_fd < 0))) {
		if (exit_code)
			*exit_code = RT_EXIT_RUNTIME;
		if (tty_rc < 0 && err)
			*err = tty_err;
		return tty_rc < 0 ? -1 : hm_err_set(err, EPROTO, "the pod's process sent no pty");
	}
	return rc;
}

void rt_container_release(struct rt_container *c)
{
	/* a child still waiting on the sync socket sees EOF and exits 125 */
	hm_closep(&c->sync_fd);
	hm_closep(&c->error_fd);
	hm_closep(&c->pidfd);
	hm_closep(&c->tty_fd);
}
