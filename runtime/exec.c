/* `trace-pod exec`: run a command inside a running pod. A helper process joins the pod's
 * cgroups (while the host's cgroup paths are still visible), then all of its namespaces
 * at once through the pod's pidfd, and forks: setns(CLONE_NEWPID) only applies to
 * children. The command gets the same capability set and no_new_privs as the pod. */
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "runtime/internal.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* The pod's netns is joined even for --net host: it is then the netns the pod was
 * started from, which is right even when exec runs from another one. */
#define POD_NAMESPACES                                                                             \
	(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP)

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static int exit_code_of(int status)
{
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* pidfd was opened from a pid number: make sure it is a pod, not a host process that
 * got the number after the pod went away. */
static int check_pod_process(const struct rt_pod_state *st, int pidfd, struct hm_err *err)
{
	char path[64];
	struct stat pod_ns, own_ns;
	snprintf(path, sizeof(path), "/proc/%d/ns/pid", (int)st->pid);
	if (stat(path, &pod_ns) < 0 || stat("/proc/self/ns/pid", &own_ns) < 0)
		return hm_err_set(err, ESRCH, "pod %s is not running", st->name);
	/* still alive after the stat: /proc/PID above was the pidfd's process */
	if (pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
		return hm_err_set(err, ESRCH, "pod %s is not running", st->name);
	if (pod_ns.st_ino == own_ns.st_ino && pod_ns.st_dev == own_ns.st_dev)
		return hm_err_set(err, ESRCH, "pod %s: pid %d is not in a pod", st->name,
				  (int)st->pid);
	return 0;
}

/* What the command in the pod gets besides argv. */
struct exec_child {
	char **argv;
	int error_fd;
	int tty_sock; /* -1 without a pty */
	const struct rt_seccomp_prog *seccomp;
};

static void __attribute__((noreturn)) run_in_pod(const struct exec_child *x, bool keep_mknod)
{
	struct hm_err err = {0};
	int error_fd = x->error_fd;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	rt_child_reset_signals();
	umask(022);
	if (rt_child_restrict(keep_mknod, &err) < 0 || rt_child_enter_workdir("/", &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		hm_err_errno(&err, "close_range");
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	}
	/* never the caller's session: its terminal must not be the command's (TIOCSTI) */
	if (rt_child_new_session(x->tty_sock, &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	if (x->tty_sock >= 0)
		close(x->tty_sock);
	if (rt_seccomp_load(x->seccomp, &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	char term[256];
	char *env[4] = {DEFAULT_PATH, "HOME=/root", NULL, NULL};
	const char *host_term = getenv("TERM");
	if (host_term && snprintf(term, sizeof(term), "TERM=%s", host_term) < (int)sizeof(term))
		env[2] = term;
	rt_child_exec(x->argv, env, error_fd);
}

/* Outside the pod: join it, fork the command, wait, exit with its status. */
static void __attribute__((noreturn))
exec_helper(int pidfd, const struct rt_cgroup *cg, const struct exec_child *x, pid_t runtime_pid,
	    pid_t pod_pid)
{
	struct hm_err err = {0};
	int error_fd = x->error_fd;
	/* read while /proc is still the host's; the pidfd check made pod_pid the pod's */
	bool keep_mknod = rt_devices_pid_keeps_mknod(pod_pid);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != runtime_pid)
		_exit(RT_EXIT_RUNTIME);
	/* Once in the pod, its root could open /proc/PID/fd of this process and of the
	 * command before exec (runc CVE-2016-9962): hold no other fd, and stay
	 * non-dumpable until exec resets it. */
	rt_child_close_fds_except((int[]){pidfd, error_fd, x->tty_sock}, 3);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (cg && rt_cgroup_attach_all(cg, getpid(), &err) < 0) {
		hm_err_prefix(&err, "join the pod's cgroups");
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	}
	if (setns(pidfd, POD_NAMESPACES) < 0) {
		hm_err_errno(&err, "join the pod's namespaces");
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	}
	close(pidfd);
	pid_t child = fork();
	if (child < 0) {
		hm_err_errno(&err, "fork in the pod");
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	}
	if (child == 0)
		run_in_pod(x, keep_mknod);
	close(error_fd);
	if (x->tty_sock >= 0)
		close(x->tty_sock);
	int status;
	while (waitpid(child, &status, 0) < 0)
		if (errno != EINTR)
			_exit(RT_EXIT_RUNTIME);
	_exit(exit_code_of(status));
}

static int load_pod_cgroups(const char *name, struct rt_cgroup *cg, bool *have, struct hm_err *err)
{
	char file[PATH_MAX];
	rt_state_path(name, "cgroups", file, sizeof(file));
	*have = false;
	if (access(file, F_OK) < 0) {
		/* a pod started without cgroups (or a state dir from elsewhere) */
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "%s", file);
	}
	if (rt_cgroup_load(cg, file, err) < 0)
		return -1;
	*have = true;
	return 0;
}

/* The pod's profile, as `run` chose it: only an explicit "off" goes without. */
static int load_pod_seccomp(const char *name, struct rt_seccomp_prog *prog, struct hm_err *err)
{
	char value[16];
	if (rt_state_read(name, "seccomp", value, sizeof(value), NULL) == 0 &&
	    !strcmp(value, "off"))
		return 0;
	return rt_seccomp_compile(prog, err);
}

/* Relay the command's pty or pipes (relay started) until the helper, which waits for
 * the command, exits; then stop and close the relay. */
static int relay_until_exit(pid_t helper, struct rt_tty_relay *relay, struct hm_err *err)
{
	sigset_t blocked;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGWINCH);
	/* a pod that closed its stdin pipe must not kill us with our next write */
	sigaddset(&blocked, SIGPIPE);
	sigset_t old;
	sigprocmask(SIG_BLOCK, &blocked, &old);
	int rc = -1;
	sigset_t winch;
	sigemptyset(&winch);
	sigaddset(&winch, SIGWINCH);
	hm_cleanup_close int sigfd = signalfd(-1, &winch, SFD_CLOEXEC | SFD_NONBLOCK);
	hm_cleanup_close int helper_fd = pidfd_open(helper, 0);
	if (sigfd < 0 || helper_fd < 0) {
		hm_err_errno(err, sigfd < 0 ? "signalfd" : "pidfd_open");
		goto out;
	}
	for (;;) {
		struct pollfd fds[2 + RT_TTY_RELAY_MAX_FDS] = {
		    {.fd = helper_fd, .events = POLLIN},
		    {.fd = sigfd, .events = POLLIN},
		};
		int n_tty = rt_tty_relay_fds(relay, fds + 2);
		if (poll(fds, 2 + n_tty, -1) < 0) {
			if (errno == EINTR)
				continue;
			hm_err_errno(err, "poll");
			break;
		}
		rt_tty_relay_io(relay, fds + 2, n_tty);
		if (fds[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sigfd, &si, sizeof(si)) == sizeof(si))
				rt_tty_relay_resize(relay);
		}
		if (fds[0].revents) {
			rc = 0;
			break;
		}
	}
out:
	rt_tty_relay_finish(relay);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int rt_pod_exec(const struct rt_pod_state *st, char **argv, bool tty, struct hm_err *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
	if (!argv || !argv[0])
		return hm_err_set(err, EINVAL, "exec: no command");
	if (st->pid <= 0)
		return hm_err_set(err, ESRCH, "pod %s is not running", st->name);
	hm_cleanup_close int pidfd = pidfd_open(st->pid, 0);
	if (pidfd < 0) {
		if (errno == ESRCH)
			return hm_err_set(err, ESRCH, "pod %s is not running", st->name);
		return hm_err_errno(err, "pidfd_open %d", (int)st->pid);
	}
	if (st->monitor_pid > 0 && !rt_pod_is_running(st))
		return hm_err_set(err, ESRCH, "pod %s is not running", st->name);
	if (check_pod_process(st, pidfd, err) < 0)
		return -1;

	int rc = -1;
	struct rt_cgroup cg;
	bool have_cg;
	if (load_pod_cgroups(st->name, &cg, &have_cg, err) < 0)
		return hm_err_prefix(err, "pod %s", st->name);

	struct rt_seccomp_prog seccomp = {0};
	int error_pipe[2] = {-1, -1};
	hm_cleanup_close int error_parent = -1;
	hm_cleanup_close int error_child = -1;
	hm_cleanup_close int tty_parent = -1;
	hm_cleanup_close int tty_child = -1;
	if (load_pod_seccomp(st->name, &seccomp, err) < 0)
		goto out_cg;
	if (pipe2(error_pipe, O_CLOEXEC) < 0) {
		hm_err_errno(err, "pipe");
		goto out_cg;
	}
	error_parent = error_pipe[0];
	error_child = error_pipe[1];
	if (tty) {
		int pair[2];
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
			hm_err_errno(err, "socketpair");
			goto out_cg;
		}
		tty_parent = pair[0];
		tty_child = pair[1];
	}

	/* like system(): a ^C from the terminal is the command's to handle, not ours */
	struct sigaction ignore = {.sa_handler = SIG_IGN}, old_int, old_quit;
	sigaction(SIGINT, &ignore, &old_int);
	sigaction(SIGQUIT, &ignore, &old_quit);

	/* without -t: the command gets pipes, never the operator's terminal */
	struct rt_tty_relay relay;
	int saved_stdio[3];
	int piped = tty ? 0 : rt_tty_relay_pipes(&relay, saved_stdio, err);
	if (piped < 0)
		goto out_signals;
	pid_t runtime_pid = getpid();
	pid_t helper = fork();
	if (helper == 0) {
		struct exec_child x = {.argv = argv,
				       .error_fd = error_child,
				       .tty_sock = tty_child,
				       .seccomp = &seccomp};
		exec_helper(pidfd, have_cg ? &cg : NULL, &x, runtime_pid, st->pid);
	}
	if (piped)
		rt_tty_relay_pipes_restore(saved_stdio);
	if (helper < 0) {
		hm_err_errno(err, "fork");
		if (piped)
			rt_tty_relay_finish(&relay);
		goto out_signals;
	}
	hm_closep(&error_child);
	hm_closep(&tty_child);

	int master = -1;
	struct hm_err tty_err = {0};
	int tty_rc = tty ? rt_tty_receive_master(tty_parent, &master, &tty_err) : 0;
	int failure_code = 0;
	int reported = rt_child_error_read(error_parent, &failure_code, err);
	if (reported == 0 && tty && master < 0) {
		/* no pty although the command runs: it must not run on without its terminal */
		kill(helper, SIGKILL);
		if (tty_rc < 0 && err)
			*err = tty_err;
		else
			hm_err_set(err, EPROTO, "the command's process sent no pty");
		reported = -1;
		failure_code = RT_EXIT_RUNTIME;
	} else if (reported == 0 && (master >= 0 || piped)) {
		/* a relay that failed to start holds the master: finish closes it */
		bool started = master < 0 || rt_tty_relay_start(&relay, master, err) == 0;
		if (!started)
			rt_tty_relay_finish(&relay);
		if (!started || relay_until_exit(helper, &relay, err) < 0) {
			kill(helper, SIGKILL);
			reported = -1;
			failure_code = RT_EXIT_RUNTIME;
		}
	} else {
		if (master >= 0)
			close(master);
		if (piped)
			rt_tty_relay_finish(&relay);
	}
	int status;
	while (waitpid(helper, &status, 0) < 0) {
		if (errno != EINTR) {
			hm_err_errno(err, "wait for the exec helper");
			goto out_signals;
		}
	}
	if (reported < 0)
		/* not executable / not found are the command's exit codes, err says why */
		rc = failure_code == RT_EXIT_RUNTIME ? -1 : failure_code;
	else
		rc = exit_code_of(status);
out_signals:
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
out_cg:
	rt_seccomp_free(&seccomp);
	if (have_cg)
		hm_closep(&cg.v2_fd);
	return rc;
}
