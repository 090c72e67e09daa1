/* `trace-pod exec`: run a command inside a running pod. A helper process joins the pod's
 * cgroups (while the host's cgroup paths are still visible), then all of its namespaces
 * at once through the pod's pidfd, and forks: setns(CLONE_NEWPID) only applies to
 * children. The command gets the same capability set and no_new_privs as the pod. */
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
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

static void __attribute__((noreturn)) run_in_pod(char **argv, bool keep_mknod, int error_fd)
{
	struct hm_err err = {0};
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	rt_child_reset_signals();
	umask(022);
	if (rt_child_restrict(keep_mknod, &err) < 0 || rt_child_enter_workdir("/", &err) < 0)
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		hm_err_errno(&err, "close_range");
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	}
	char term[256];
	char *env[4] = {DEFAULT_PATH, "HOME=/root", NULL, NULL};
	const char *host_term = getenv("TERM");
	if (host_term && snprintf(term, sizeof(term), "TERM=%s", host_term) < (int)sizeof(term))
		env[2] = term;
	rt_child_exec(argv, env, error_fd);
}

/* Outside the pod: join it, fork the command, wait, exit with its status. */
static void __attribute__((noreturn))
exec_helper(int pidfd, const struct rt_cgroup *cg, char **argv, int error_fd, pid_t runtime_pid,
	    pid_t pod_pid)
{
	struct hm_err err = {0};
	/* read while /proc is still the host's; the pidfd check made pod_pid the pod's */
	bool keep_mknod = rt_devices_pid_keeps_mknod(pod_pid);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != runtime_pid)
		_exit(RT_EXIT_RUNTIME);
	/* Once in the pod, its root could open /proc/PID/fd of this process and of the
	 * command before exec (runc CVE-2016-9962): hold no other fd, and stay
	 * non-dumpable until exec resets it. */
	rt_child_close_fds_except(pidfd, error_fd);
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
		run_in_pod(argv, keep_mknod, error_fd);
	close(error_fd);
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

int rt_pod_exec(const struct rt_pod_state *st, char **argv, struct hm_err *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
	if (!argv || !argv[0])
		return hm_err_set(err, EINVAL, "exec: no command");
	if (st->pid <= 0)
		return hm_err_set(err, ESRCH, "pod %s is not running", st->name);
	hm_autofd pidfd = pidfd_open(st->pid, 0);
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

	int error_pipe[2] = {-1, -1};
	hm_autofd error_parent = -1;
	hm_autofd error_child = -1;
	if (pipe2(error_pipe, O_CLOEXEC) < 0) {
		hm_err_errno(err, "pipe");
		goto out_cg;
	}
	error_parent = error_pipe[0];
	error_child = error_pipe[1];

	/* like system(): a ^C from the terminal is the command's to handle, not ours */
	struct sigaction ignore = {.sa_handler = SIG_IGN}, old_int, old_quit;
	sigaction(SIGINT, &ignore, &old_int);
	sigaction(SIGQUIT, &ignore, &old_quit);

	pid_t runtime_pid = getpid();
	pid_t helper = fork();
	if (helper < 0) {
		hm_err_errno(err, "fork");
		goto out_signals;
	}
	if (helper == 0)
		exec_helper(pidfd, have_cg ? &cg : NULL, argv, error_child, runtime_pid, st->pid);
	hm_closep(&error_child);

	int failure_code = 0;
	int reported = rt_child_error_read(error_parent, &failure_code, err);
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
	if (have_cg)
		hm_closep(&cg.v2_fd);
	return rc;
}
