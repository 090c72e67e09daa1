/* Process lifecycle shared by both backends: which signals reach the program, reaping,
 * and the program's exit status.
 *
 * trace-run blocks SIGCHLD and the forwarded signals and reads them from a signalfd.
 * A signal that another process sent to trace-run (kill, timeout, systemd) is sent on
 * to the program. One the kernel generated for the terminal's foreground group (^C)
 * is not: the program is in that group and got its own copy. The program's parent is
 * the guard (guard.c), a child subreaper that reaps what the program orphans and exits
 * once all of it has exited, so "everything has exited" is simply waitpid() saying
 * ECHILD here. trace-run is a subreaper too, for when the guard itself is killed. */
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>

#include "tracer/engine/internal.h"

static const int forwarded_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

int tracer_signals_block(struct tracer *t, struct hm_err *err)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (size_t i = 0; i < HM_ARRAY_SIZE(forwarded_signals); i++)
		sigaddset(&set, forwarded_signals[i]);
	/* an inherited SIG_IGN for SIGCHLD would make the kernel reap behind our back */
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	if (sigaction(SIGCHLD, &dfl, &t->saved_sigchld) < 0)
		return hm_err_errno(err, "sigaction SIGCHLD");
	if (sigprocmask(SIG_BLOCK, &set, &t->saved_mask) < 0)
		return hm_err_errno(err, "sigprocmask");
	t->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (t->sigfd < 0) {
		int e = errno;
		tracer_signals_restore(t);
		return hm_err_set(err, e, "signalfd");
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		int e = errno;
		tracer_signals_restore(t);
		return hm_err_set(err, e, "PR_SET_CHILD_SUBREAPER");
	}
	return 0;
}

void tracer_signals_restore(struct tracer *t)
{
	if (t->sigfd >= 0) {
		close(t->sigfd);
		t->sigfd = -1;
	}
	sigprocmask(SIG_SETMASK, &t->saved_mask, NULL);
	sigaction(SIGCHLD, &t->saved_sigchld, NULL);
}

void tracer_note_exit(struct tracer *t, pid_t pid, int status)
{
	if (pid == t->guard_pid && pid > 0) {
		/* the guard reported the program's status before it exited */
		tracer_guard_poll(t);
		return;
	}
	if (pid != t->main_pid || t->main_done)
		return;
	if (WIFEXITED(status)) {
		t->exit.outcome = TRACER_EXITED;
		t->exit.code = WEXITSTATUS(status);
	} else if (WIFSIGNALED(status)) {
		t->exit.outcome = TRACER_SIGNALED;
		t->exit.code = WTERMSIG(status);
		t->exit.core_dumped = WCOREDUMP(status);
	} else {
		return;
	}
	/* an exec failure reported by the launch child overrides its exit code */
	if (t->exit.outcome == TRACER_EXITED && t->status_sock >= 0)
		tracer_launch_status(t);
	t->main_done = true;
	hm_debug("program (pid %d) %s %d", pid,
		 t->exit.outcome == TRACER_SIGNALED ? "killed by signal" : "exited with",
		 t->exit.code);
}

/* waitpid(-1, WNOHANG) until nothing is left to reap (seccomp backend) */
static void reap_children(struct tracer *t)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG | __WALL);
		if (pid > 0) {
			tracer_note_exit(t, pid, status);
			continue;
		}
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0 && errno == ECHILD)
			t->no_children = true;
		return;
	}
}

/* After the program itself is gone, a forwarded signal goes to what it left behind:
 * the children of the guard (orphans come to it, the subreaper) and ours, if the guard
 * died. */
struct forward {
	pid_t self, guard;
	int sig;
};

static void forward_if_child(pid_t pid, void *arg)
{
	const struct forward *f = arg;
	if (pid == f->guard)
		return;
	pid_t ppid = tracer_proc_ppid(pid);
	if (ppid > 0 && (ppid == f->self || ppid == f->guard))
		kill(pid, f->sig);
}

static void forward_to_children(struct tracer *t, int sig)
{
	struct forward f = {.self = getpid(), .guard = t->guard_pid, .sig = sig};
	tracer_proc_for_each(forward_if_child, &f);
}

void tracer_terminate(struct tracer *t, int sig)
{
	tracer_guard_poll(t);
	if (!t->main_done && t->main_pid > 0)
		kill(t->main_pid, sig);
	forward_to_children(t, sig);
}

void tracer_signals_handle(struct tracer *t)
{
	struct signalfd_siginfo si;
	bool reap = false;
	while (read(t->sigfd, &si, sizeof(si)) == sizeof(si)) {
		int sig = (int)si.ssi_signo;
		if (sig == SIGCHLD) {
			reap = true;
			continue;
		}
		/* SI_KERNEL: the terminal signalled its foreground group, program included */
		if (si.ssi_code == SI_KERNEL)
			continue;
		if ((pid_t)si.ssi_pid == t->main_pid)
			continue;
		hm_debug("forwarding signal %d from pid %u", sig, si.ssi_pid);
		tracer_guard_poll(t);
		if (!t->main_done)
			kill(t->main_pid, sig);
		else
			forward_to_children(t, sig);
	}
	if (reap && t->backend == TRACER_BACKEND_SECCOMP)
		reap_children(t);
}

static const char *const backend_names[] = {
    [TRACER_BACKEND_AUTO] = "auto",
    [TRACER_BACKEND_SECCOMP] = "seccomp",
    [TRACER_BACKEND_PTRACE] = "ptrace",
};

const char *tracer_backend_name(enum tracer_backend backend)
{
	if ((size_t)backend < HM_ARRAY_SIZE(backend_names))
		return backend_names[backend];
	return "auto";
}

int tracer_backend_parse(const char *name, enum tracer_backend *out)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(backend_names); i++) {
		if (!strcmp(name, backend_names[i])) {
			*out = (enum tracer_backend)i;
			return 0;
		}
	}
	return -1;
}

int tracer_exit_code(const struct tracer_exit *e)
{
	switch (e->outcome) {
	case TRACER_EXITED:
		return e->code;
	case TRACER_SIGNALED:
		return 128 + e->code;
	case TRACER_EXEC_FAILED:
		return (e->code == ENOENT || e->code == ENOTDIR) ? TRACER_EXIT_NOTFOUND
								 : TRACER_EXIT_NOEXEC;
	}
	return TRACER_EXIT_FAILURE;
}
