/* Acting on existing pods from another trace-pod process: status, stop and rm. The
 * pod's monitor owns its resources; these commands ask it to finish and only release
 * what is left themselves when the monitor is gone (killed, crashed, host rebooted). */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>

#include "runtime/internal.h"

/* How long a monitor gets to release a pod after PID 1 is gone. */
#define MONITOR_CLEANUP_MS 10000

static int pidfd_signal(int pidfd, int sig)
{
	return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

const char *rt_pod_status(const struct rt_pod_state *st)
{
	if (!strcmp(st->status, "exited"))
		return "exited";
	if (!rt_state_monitor_alive(st->name, st->monitor_pid))
		return "dead";
	return st->status;
}

/* true once the process behind pidfd has exited, waiting at most timeout_ms */
static bool wait_exit(int pidfd, int timeout_ms)
{
	return hm_poll_fd(pidfd, POLLIN, hm_deadline_in(timeout_ms)) > 0;
}

/* SIGKILL to the pod's PID 1. Only called while its monitor lives, when the pid still
 * names the monitor's unreaped child. */
static void kill_pod(const struct rt_pod_state *st)
{
	if (st->pid <= 0)
		return;
	int fd = syscall(SYS_pidfd_open, st->pid, 0);
	if (fd < 0)
		return;
	pidfd_signal(fd, SIGKILL);
	close(fd);
}

/* What a dead monitor left behind: the pod's processes (killed with its cgroups), the
 * cgroups themselves and the veth. Idempotent. */
static int release_leftovers(const char *name, struct hm_err *err)
{
	char path[PATH_MAX];
	struct rt_cgroup cg;
	struct hm_err cg_err = {0}, net_err = {0};
	bool cg_failed = false, net_failed = false;
	rt_state_path(name, "cgroups", path, sizeof(path));
	if (rt_cgroup_load(&cg, path, &cg_err) == 0)
		cg_failed = rt_cgroup_destroy(&cg, &cg_err) < 0;
	else if (cg_err.code != ENOENT)
		cg_failed = true;
	char veth[32];
	if (rt_state_read(name, "veth", veth, sizeof(veth), NULL) == 0)
		net_failed = rt_net_teardown_pod(veth, &net_err) < 0;
	if (cg_failed)
		*err = cg_err;
	else if (net_failed)
		*err = net_err;
	return cg_failed || net_failed ? -1 : 0;
}

/* The pod's leftovers and state, if, re-read under the state lock, its monitor is still
 * gone: a new pod may have taken the name since the caller looked. keep_exited leaves a
 * pod that exited normally (its state and log stay until rm). *alive tells a live
 * monitor apart from a pod already removed; both return 0, 1 means removed. */
static int remove_orphaned(const char *name, bool keep_exited, bool *alive, struct hm_err *err)
{
	*alive = false;
	hm_cleanup_close int lock = rt_state_lock(err);
	if (lock < 0)
		return -1;
	struct rt_pod_state st;
	if (rt_pod_state_load(name, &st, NULL) < 0)
		return 0;
	if (rt_state_monitor_alive(name, st.monitor_pid)) {
		*alive = true;
		return 0;
	}
	if (keep_exited && !strcmp(st.status, "exited"))
		return 0;
	hm_debug("pod %s: monitor %d is gone; removing what it left", name, (int)st.monitor_pid);
	if (release_leftovers(name, err) < 0 || rt_state_remove(name, err) < 0)
		return -1;
	return 1;
}

int rt_pod_reap_dead(const char *name, struct hm_err *err)
{
	bool alive;
	int r = remove_orphaned(name, true, &alive, err);
	if (r < 0)
		return hm_err_prefix(err, "pod %s, whose trace-pod died", name);
	return r;
}

static int mark_exited(const char *name, struct hm_err *err)
{
	char path[PATH_MAX];
	rt_state_path(name, "ip", path, sizeof(path));
	unlink(path);
	rt_state_path(name, "veth", path, sizeof(path));
	unlink(path);
	char code[16];
	if (rt_state_read(name, "exit_code", code, sizeof(code), NULL) < 0 &&
	    rt_state_write(name, "exit_code", "137", err) < 0)
		return -1;
	return rt_state_write(name, "status", "exited", err);
}

int rt_pod_stop(const char *name, unsigned timeout, struct hm_err *err)
{
	struct rt_pod_state st;
	if (rt_pod_state_load(name, &st, err) < 0)
		return -1;
	hm_cleanup_close int monitor = rt_state_monitor_pidfd(name, st.monitor_pid);
	if (monitor < 0) {
		/* re-read under the lock: the pod may have been reaped and its name taken */
		hm_cleanup_close int lock = rt_state_lock(err);
		if (lock < 0)
			return -1;
		if (rt_pod_state_load(name, &st, NULL) < 0 || !strcmp(st.status, "exited") ||
		    rt_state_monitor_alive(name, st.monitor_pid))
			return 0;
		hm_debug("pod %s: monitor %d is gone; releasing what it left", name,
			 (int)st.monitor_pid);
		if (release_leftovers(name, err) < 0)
			return hm_err_prefix(err, "stop pod %s", name);
		return mark_exited(name, err);
	}
	if (pidfd_signal(monitor, SIGTERM) < 0 && errno != ESRCH)
		return hm_err_errno(err, "signal the monitor of pod %s", name);
	if (wait_exit(monitor, (int)timeout * 1000))
		return 0;
	hm_debug("pod %s: still running after %us, sending SIGKILL", name, timeout);
	/* re-read: the pid is written once the pod is spawned */
	if (rt_pod_state_load(name, &st, err) < 0)
		return err->code == ENOENT ? 0 : -1;
	kill_pod(&st);
	if (wait_exit(monitor, MONITOR_CLEANUP_MS))
		return 0;
	return hm_err_set(err, 0,
			  "pod %s: its monitor (pid %d) did not exit after SIGKILL to the pod",
			  name, (int)st.monitor_pid);
}

int rt_pod_remove(const char *name, bool force, struct hm_err *err)
{
	struct rt_pod_state st;
	if (rt_pod_state_load(name, &st, err) < 0)
		return -1;
	hm_cleanup_close int monitor = rt_state_monitor_pidfd(name, st.monitor_pid);
	if (monitor >= 0) {
		bool active = strcmp(st.status, "exited") != 0;
		if (active && !force)
			return hm_err_set(err, 0, "pod %s is running; stop it first or use rm -f",
					  name);
		/* a pod still being set up has no PID 1 to kill yet: stop its monitor instead,
		 * the cgroups take whatever it spawned */
		if (active && st.pid <= 0)
			pidfd_signal(monitor, SIGKILL);
		else if (active)
			kill_pod(&st);
		if (!wait_exit(monitor, active ? MONITOR_CLEANUP_MS : 2000)) {
			if (!force)
				return hm_err_set(err, 0,
						  "pod %s: its monitor (pid %d) is still running",
						  name, (int)st.monitor_pid);
			hm_warn("pod %s: monitor %d did not exit, killing it", name,
				(int)st.monitor_pid);
			pidfd_signal(monitor, SIGKILL);
			wait_exit(monitor, 2000);
		}
	}
	bool alive;
	if (remove_orphaned(name, false, &alive, err) < 0)
		return hm_err_prefix(err, "remove pod %s", name);
	if (alive)
		return hm_err_set(err, 0, "pod %s is running; stop it first or use rm -f", name);
	return 0;
}
