/* The tracer object: probe, choose a backend, run one program to completion. */
#include <string.h>

#include "tracer/engine/internal.h"

static int choose_backend(struct tracer *t, enum tracer_backend asked, struct hm_err *err)
{
	const struct tracer_features *f = &t->features;
	/* EBUSY: a listener is in place already (trace-run under a seccomp supervisor,
	 * trace-run included); the kernel allows one per filter chain */
	const char *missing = f->listener_errno == EBUSY
				  ? "a seccomp listener of its own (another supervisor holds one)"
			      : f->listener_errno  ? "a seccomp listener (seccomp() refused)"
			      : !f->user_notif	   ? "seccomp user notification (Linux 5.0)"
			      : !f->notif_continue ? "SECCOMP_USER_NOTIF_FLAG_CONTINUE (Linux 5.5)"
			      : !f->addfd	   ? "SECCOMP_IOCTL_NOTIF_ADDFD (Linux 5.9)"
						   : NULL;
	const char *ptrace_missing = !f->ret_trace ? "SECCOMP_RET_TRACE"
				     : !f->ptrace  ? "ptrace (kernel.yama.ptrace_scope is 3)"
						   : NULL;
	switch (asked) {
	case TRACER_BACKEND_SECCOMP:
		if (missing)
			return hm_err_set(
			    err, 0, "--backend seccomp needs %s; try --backend ptrace", missing);
		t->backend = TRACER_BACKEND_SECCOMP;
		break;
	case TRACER_BACKEND_PTRACE:
		if (ptrace_missing)
			return hm_err_set(err, 0, "--backend ptrace needs %s", ptrace_missing);
		t->backend = TRACER_BACKEND_PTRACE;
		break;
	default:
		if (!missing) {
			t->backend = TRACER_BACKEND_SECCOMP;
		} else if (!ptrace_missing) {
			hm_info("the seccomp backend needs %s: using the ptrace backend (slower)",
				missing);
			t->backend = TRACER_BACKEND_PTRACE;
		} else {
			return hm_err_set(err, 0, "this kernel has neither %s nor %s", missing,
					  ptrace_missing);
		}
	}
	if (t->backend != TRACER_BACKEND_SECCOMP)
		return 0;
	/* one line per degradation */
	if (!f->addfd_send)
		hm_info("no SECCOMP_ADDFD_FLAG_SEND (Linux 5.14): an fd handed to a syscall that "
			"is interrupted at that moment stays open in the program");
	if (!f->wait_killable)
		hm_info("no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19): signals interrupt "
			"intercepted syscalls more often (they are retried)");
	else if (f->kernel_major < 6 || (f->kernel_major == 6 && f->kernel_minor < 18))
		hm_info("WAIT_KILLABLE_RECV on a kernel before 6.18: its signal race is only fixed "
			"if your distribution backported the fix");
	if (!f->sync_wakeup)
		hm_info("no SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (Linux 6.6): each intercepted "
			"syscall costs a cross-CPU wake-up (~10x slower)");
	return 0;
}

int tracer_new_start(enum tracer_backend backend, struct tracer **out, struct hm_err *err)
{
	struct tracer *t = calloc(1, sizeof(*t));
	if (!t)
		return hm_err_set(err, ENOMEM, "tracer");
	t->listener = -1;
	t->status_sock = -1;
	t->guard_sock = -1;
	t->watch_fd = -1;
	t->sigfd = -1;
	t->probe.fd = -1;
	t->backend = backend; /* what was asked, until tracer_new_finish chooses */
	if (tracer_probe_start(&t->probe, &t->features, err) < 0) {
		tracer_free(t);
		return -1;
	}
	*out = t;
	return 0;
}

int tracer_new_finish(struct tracer *t, struct hm_err *err)
{
	if (t->ready)
		return 0;
	if (tracer_probe_finish(&t->probe, &t->features, err) < 0)
		return -1;
	tracer_probe_log(&t->features);
	if (choose_backend(t, t->backend, err) < 0 || tracer_register_builtin(t, err) < 0)
		return -1;
	hm_info("backend: %s", tracer_backend_name(t->backend));
	t->ready = true;
	return 0;
}

int tracer_new(enum tracer_backend backend, struct tracer **out, struct hm_err *err)
{
	struct tracer *t = NULL;
	if (tracer_new_start(backend, &t, err) < 0)
		return -1;
	if (tracer_new_finish(t, err) < 0) {
		tracer_free(t);
		return -1;
	}
	*out = t;
	return 0;
}

void tracer_free(struct tracer *t)
{
	if (!t)
		return;
	tracer_probe_cancel(&t->probe);
	if (t->listener >= 0)
		close(t->listener);
	if (t->status_sock >= 0)
		close(t->status_sock);
	if (t->guard_sock >= 0)
		close(t->guard_sock);
	if (t->sigfd >= 0)
		close(t->sigfd);
	tracer_ptrace_free(t);
	free(t);
}

int tracer_run(struct tracer *t, char *const argv[], struct tracer_exit *out, struct hm_err *err)
{
	if (!argv || !argv[0])
		return hm_err_set(err, EINVAL, "no program to run");
	if (t->main_pid)
		return hm_err_set(err, EBUSY, "tracer already ran a program");
	if (!t->ready)
		return hm_err_set(err, EINVAL, "tracer_new_finish first: no backend chosen yet");
	if (tracer_signals_block(t, err) < 0)
		return -1;
	int r = tracer_launch(t, argv, err);
	if (r == 0)
		r = t->backend == TRACER_BACKEND_PTRACE ? tracer_ptrace_loop(t, err)
							: tracer_notify_loop(t, err);
	if (r < 0 && t->main_pid > 0 && !t->no_children) {
		/* the supervisor failed: nobody would answer the program any more (the guard
		 * kills the rest of its tree when we are gone) */
		kill(t->main_pid, SIGKILL);
	}
	tracer_signals_restore(t);
	if (t->status_sock >= 0) {
		close(t->status_sock);
		t->status_sock = -1;
	}
	hm_info("%lu intercepted syscalls: %lu continued, %lu fds installed, %lu replies "
		"abandoned (syscall interrupted or thread gone)",
		t->stats.calls, t->stats.continued, t->stats.fds, t->stats.abandoned);
	if (r < 0)
		return -1;
	if (!t->main_done)
		return hm_err_set(err, ECHILD, "lost track of the program");
	*out = t->exit;
	return 0;
}
