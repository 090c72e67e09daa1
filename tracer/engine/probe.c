/* Start-up probes: which seccomp user-notification features this kernel has. Each is
 * asked of the kernel itself, never inferred from the version, except where a feature
 * exists but is known to misbehave. The flag probes need a listener: a short-lived
 * thread installs an allow-everything filter on itself only (no TSYNC: the filter and
 * no_new_privs stay on that thread, which exits) and leaves its listener behind. That
 * thread runs while trace-run talks to the agent (tracer_new_start/finish): its creation,
 * its seccomp() and the join cost a few hundred us of every start otherwise. */
#include <linux/seccomp.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

#include "tracer/engine/internal.h"

static void *probe_listener_thread(void *arg)
{
	struct tracer_probe_job *p = arg;
	struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = 1, .filter = &allow};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		p->error = errno;
		return NULL;
	}
	long fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			  SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
			  &prog);
	if (fd >= 0) {
		p->wait_killable = true;
	} else if (errno == EINVAL) {
		fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
			     &prog);
	}
	if (fd < 0) {
		p->error = errno;
		return NULL;
	}
	/* the seccomp listener is created O_CLOEXEC */
	p->fd = (int)fd;
	return NULL;
}

static bool action_available(uint32_t action)
{
	return syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
}

/* ioctl with an id that cannot be pending: ENOENT means the kernel understood the
 * request (flags included) and only failed to find the notification; EINVAL means the
 * request or one of its flags is unknown. */
static bool notif_ioctl_known(int listener, unsigned long request, void *arg)
{
	return ioctl(listener, request, arg) < 0 && errno == ENOENT;
}

static int ptrace_scope(void)
{
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	if (!f)
		return 0; /* no Yama: classic ptrace permissions */
	int scope = 0;
	if (fscanf(f, "%d", &scope) != 1)
		scope = 0;
	fclose(f);
	return scope;
}

int tracer_probe_start(struct tracer_probe_job *job, struct tracer_features *f, struct hm_err *err)
{
	memset(job, 0, sizeof(*job));
	job->fd = -1;
	memset(f, 0, sizeof(*f));
	struct utsname u;
	if (uname(&u) == 0)
		sscanf(u.release, "%d.%d", &f->kernel_major, &f->kernel_minor);
	f->ret_trace = action_available(SECCOMP_RET_TRACE);
	f->ptrace = ptrace_scope() < 3;
	f->user_notif = action_available(SECCOMP_RET_USER_NOTIF);
	if (!f->user_notif)
		return 0;
	int r = pthread_create(&job->thread, NULL, probe_listener_thread, job);
	if (r != 0)
		return hm_err_set(err, r, "probe seccomp: create thread");
	job->running = true;
	return 0;
}

void tracer_probe_cancel(struct tracer_probe_job *job)
{
	if (job->running)
		pthread_join(job->thread, NULL);
	job->running = false;
	if (job->fd >= 0)
		close(job->fd);
	job->fd = -1;
}

int tracer_probe_finish(struct tracer_probe_job *job, struct tracer_features *f, struct hm_err *err)
{
	(void)err;
	if (!job->running)
		return 0; /* no user notification: nothing was started */
	pthread_join(job->thread, NULL);
	job->running = false;
	if (job->fd < 0) {
		/* the action exists but no listener can be had (e.g. an outer filter forbids
		 * seccomp()): as good as no user notification */
		f->listener_errno = job->error;
		f->user_notif = false;
		return 0;
	}
	hm_cleanup_close int listener = job->fd;
	job->fd = -1;
	f->wait_killable = job->wait_killable;

	struct seccomp_notif_resp resp = {.id = 0, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
	f->notif_continue = notif_ioctl_known(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
	struct seccomp_notif_addfd addfd = {.id = 0, .srcfd = (uint32_t)listener};
	f->addfd = notif_ioctl_known(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
	addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
	f->addfd_send = f->addfd && notif_ioctl_known(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
	/* the flags travel by value, not through a pointer */
	f->sync_wakeup =
	    ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) == 0;
	return 0;
}

int tracer_probe(struct tracer_features *f, struct hm_err *err)
{
	struct tracer_probe_job job;
	if (tracer_probe_start(&job, f, err) < 0)
		return -1;
	return tracer_probe_finish(&job, f, err);
}

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

void tracer_probe_log(const struct tracer_features *f)
{
	hm_info("kernel %d.%d: user notification %s, CONTINUE %s, ADDFD %s, ADDFD_FLAG_SEND %s, "
		"WAIT_KILLABLE_RECV %s, SYNC_WAKE_UP %s, RET_TRACE %s, ptrace %s",
		f->kernel_major, f->kernel_minor, yes_no(f->user_notif), yes_no(f->notif_continue),
		yes_no(f->addfd), yes_no(f->addfd_send), yes_no(f->wait_killable),
		yes_no(f->sync_wakeup), yes_no(f->ret_trace), yes_no(f->ptrace));
}
