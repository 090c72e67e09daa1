/* The ptrace backend: the same filter with SECCOMP_RET_TRACE, the same handlers, run at
 * the PTRACE_EVENT_SECCOMP stop of the calling thread. Only intercepted syscalls stop:
 * there is no PTRACE_SYSCALL outside of fd installation.
 *
 * Applying a result at the seccomp stop:
 *   CONTINUE      resume; the kernel runs the syscall.
 *   RETURN/ERROR  orig_rax = -1 skips the syscall and rax is what it returns (seccomp(2):
 *                 "the system call will appear to return the value that the tracer puts
 *                 in the return value register"), then resume.
 *   INSTALL_FD    there is no ADDFD for ptrace, and pidfd_getfd() pulls fds the wrong
 *                 way. The program receives the fd itself: trace-run sends it over a
 *                 unix socket the program holds, and turns the intercepted syscall into
 *                 recvmsg(that socket, MSG_CMSG_CLOEXEC as asked) whose result is then
 *                 replaced by the received fd number (see inject.c).
 * Children are attached automatically (TRACEFORK/VFORK/CLONE), exec is followed
 * (TRACEEXEC), and PTRACE_O_EXITKILL kills every tracee if trace-run dies. */
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <poll.h>

#include "tracer/engine/internal.h"

static struct tracer_ptrace *pt_state(struct tracer *t)
{
	if (!t->pt) {
		t->pt = calloc(1, sizeof(*t->pt));
		if (t->pt)
			t->pt->listen_fd = -1;
	}
	return t->pt;
}

bool tracer_ptrace_valid(const struct tracer_call *call)
{
	const struct tracer_ptrace *pt = call->tracer->pt;
	return pt && pt->current_tid == call->pid && pt->current_id == call->id;
}

static void resume(pid_t tid, int sig)
{
	if (ptrace(PTRACE_CONT, tid, 0, (long)sig) < 0 && errno != ESRCH)
		hm_debug("PTRACE_CONT %d: %s", tid, strerror(errno));
}

static void apply_result(struct tracer *t, pid_t tid, struct user_regs_struct *regs,
			 struct tracer_result *res)
{
	switch (res->verdict) {
	case TRACER_CONTINUE:
		resume(tid, 0);
		return;
	case TRACER_RETURN:
	case TRACER_ERROR:
		regs->orig_rax = (unsigned long long)-1;
		regs->rax = res->verdict == TRACER_RETURN
				? (unsigned long long)res->value
				: (unsigned long long)-(long long)res->error;
		if (ptrace(PTRACE_SETREGS, tid, 0, regs) < 0) {
			tracer_result_abandon(t, res);
			return;
		}
		tracer_result_release(res);
		resume(tid, 0);
		return;
	case TRACER_INSTALL_FD:
	case TRACER_REPLACE_FD:
		tracer_pt_install_fd(t, tid, regs, res);
		return;
	case TRACER_DEFER: /* answer() parks these; never applied */
		break;
	}
}

/* Apply now, or leave the thread stopped until the deferred call's fd is ready. */
static void answer(struct tracer *t, const struct tracer_call *call, struct user_regs_struct *regs,
		   struct tracer_result *res)
{
	if (res->verdict != TRACER_DEFER) {
		apply_result(t, call->pid, regs, res);
		return;
	}
	if (tracer_defer_add(t, call, res, regs) == 0)
		return;
	if (res->cancel)
		res->cancel(res->defer_arg);
	struct tracer_result oom = tracer_error(ENOMEM);
	apply_result(t, call->pid, regs, &oom);
}

static void handle_seccomp_stop(struct tracer *t, pid_t tid)
{
	struct user_regs_struct regs;
	if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
		return; /* killed meanwhile */
	struct tracer_call call = {
	    .tracer = t,
	    .pid = tid,
	    .nr = (int)regs.orig_rax,
	    .arch = TRACER_NATIVE_ARCH,
	    .args = {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9},
	    .ip = regs.rip,
	    .id = ++t->next_call_id,
	};
	struct tracer_ptrace *pt = t->pt;
	pt->current_tid = tid;
	pt->current_id = call.id;
	struct tracer_result res = tracer_dispatch(t, &call);
	pt->current_tid = 0;
	answer(t, &call, &regs, &res);
}

static bool tid_gone(const struct tracer_call *call, void *arg)
{
	return call->pid == *(const pid_t *)arg;
}

/* the thread is gone: nothing waits for its deferred call any more */
static void thread_gone(struct tracer *t, pid_t tid)
{
	tracer_pt_thread_gone(t, tid);
	if (t->n_deferred)
		tracer_defer_drop(t, tid_gone, &tid);
}

/* Deferred calls whose fd turned ready: their threads are still at the seccomp stop. */
static void run_deferred(struct tracer *t, const struct pollfd *pfd, size_t npfd)
{
	hm_cleanup_free struct tracer_deferred *ready = NULL;
	size_t n = tracer_defer_take_ready(t, pfd, npfd, &ready);
	struct tracer_ptrace *pt = t->pt;
	for (size_t i = 0; i < n; i++) {
		struct tracer_deferred *d = &ready[i];
		pt->current_tid = d->call.pid;
		pt->current_id = d->call.id;
		struct tracer_result res = d->res.resume(&d->call, d->res.defer_arg);
		pt->current_tid = 0;
		answer(t, &d->call, &d->regs, &res);
	}
}

static bool is_stop_signal(int sig)
{
	return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

void tracer_pt_handle_status(struct tracer *t, pid_t pid, int status)
{
	if (WIFEXITED(status) || WIFSIGNALED(status)) {
		tracer_note_exit(t, pid, status);
		thread_gone(t, pid);
		tracer_pt_forget(t, pid); /* a no-op unless pid was a thread group leader */
		return;
	}
	if (!WIFSTOPPED(status))
		return;
	int sig = WSTOPSIG(status);
	unsigned event = (unsigned)status >> 16;
	switch (event) {
	case PTRACE_EVENT_SECCOMP:
		handle_seccomp_stop(t, pid);
		return;
	case PTRACE_EVENT_EXEC: {
		/* a new address space and fd table: the fd channel is gone; a non-leader
		 * thread that exec'd now carries the leader's pid and its own tid is gone */
		unsigned long former = 0;
		if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &former) == 0 && (pid_t)former != pid)
			thread_gone(t, (pid_t)former);
		tracer_pt_forget(t, pid);
		resume(pid, 0);
		return;
	}
	case PTRACE_EVENT_STOP:
		/* group-stop: stay stopped but let job control see it; otherwise it is the
		 * initial stop of an auto-attached child */
		if (is_stop_signal(sig))
			ptrace(PTRACE_LISTEN, pid, 0, 0);
		else
			resume(pid, 0);
		return;
	case 0:
		/* signal-delivery-stop; (SIGTRAP|0x80) is a stray syscall stop */
		resume(pid, sig == (SIGTRAP | 0x80) ? 0 : sig);
		return;
	default: /* FORK, VFORK, CLONE, VFORK_DONE: children attach themselves */
		resume(pid, 0);
		return;
	}
}

int tracer_ptrace_loop(struct tracer *t, struct hm_err *err)
{
	if (!pt_state(t))
		return hm_err_set(err, ENOMEM, "ptrace state");
	hm_cleanup_free struct pollfd *pfd = NULL;
	size_t pfd_cap = 0;
	while (!t->no_children) {
		int status;
		pid_t pid = waitpid(-1, &status, __WALL | WNOHANG);
		if (pid > 0) {
			tracer_pt_handle_status(t, pid, status);
			continue;
		}
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD) {
				t->no_children = true;
				break;
			}
			return hm_err_errno(err, "waitpid");
		}
		/* nothing to reap: sleep until SIGCHLD (stops notify the tracer too), a
		 * signal to forward or a deferred call's fd */
		if (pfd_cap < 2 + t->n_deferred) {
			size_t cap = 2 + t->cap_deferred;
			struct pollfd *bigger = realloc(pfd, cap * sizeof(*pfd));
			if (!bigger)
				return hm_err_set(err, ENOMEM, "poll set");
			pfd = bigger;
			pfd_cap = cap;
		}
		pfd[0] = (struct pollfd){.fd = t->sigfd, .events = POLLIN};
		size_t nw = tracer_watch_pollfd(t, pfd + 1);
		size_t nd = tracer_defer_pollfds(t, pfd + 1 + nw);
		int r = poll(pfd, 1 + nw + nd, -1);
		if (r < 0 && errno != EINTR)
			return hm_err_errno(err, "poll");
		if (r > 0 && nd)
			run_deferred(t, pfd + 1 + nw, nd);
		if (r > 0)
			tracer_watch_check(t, pfd + 1, nw);
		tracer_signals_handle(t);
	}
	tracer_defer_drop(t, NULL, NULL);
	return 0;
}

void tracer_ptrace_free(struct tracer *t)
{
	if (!t->pt)
		return;
	tracer_pt_free_procs(t);
	if (t->pt->listen_fd >= 0)
		close(t->pt->listen_fd);
	free(t->pt);
	t->pt = NULL;
}
