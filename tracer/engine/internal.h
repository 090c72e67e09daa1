/* The interception engine's private state and the interfaces between its files. Not for
 * other modules: handlers see only tracer.h. */
#ifndef HERMIT_TRACER_INTERNAL_H
#define HERMIT_TRACER_INTERNAL_H

#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/user.h>

#include "tracer/engine/tracer.h"

/* ---- architecture: one syscall table per arch; x86-64 first ---- */
#if defined(__x86_64__)
#define TRACER_NATIVE_ARCH AUDIT_ARCH_X86_64
/* x32 syscalls arrive with arch X86_64 and this bit set in nr: a second table the
 * handlers do not know, so the filter refuses them outright */
#define TRACER_X32_SYSCALL_BIT 0x40000000U
#define TRACER_SYSCALL_INSN_LEN 2 /* `syscall` = 0f 05 */
#else
#error "trace-run: only x86-64 is supported so far (add a syscall table and ptrace regs)"
#endif

#include "tracer/engine/seccomp_compat.h"

/* every native syscall number is below this (x86-64 is at ~470 in 2025) */
#define TRACER_NR_MAX 1024

/* ---- fdpass.c: a one-byte message carrying one fd (SCM_RIGHTS) ----
 * msg points into the struct itself: initialize it where it will be used. */
struct tracer_fd_msg {
	struct msghdr msg;
	struct iovec iov;
	char byte;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
};
void tracer_fd_msg_init(struct tracer_fd_msg *m, char tag, int fd);

struct tracer_handler_entry {
	tracer_handler_fn fn;
	void *data;
	uint8_t when_arg_set; /* 1 + the argument that must be non-zero; 0: always */
};

struct tracer_stats {
	unsigned long calls;	 /* intercepted syscalls dispatched */
	unsigned long continued; /* answered with CONTINUE */
	unsigned long fds;	 /* fds installed */
	unsigned long abandoned; /* replies that found the syscall gone (ENOENT / ESRCH) */
};

struct tracer_ptrace; /* ptrace.c */

/* dispatch.c: calls answered with TRACER_DEFER, waiting for their fd */
struct tracer_deferred {
	struct tracer_call call;
	struct tracer_result res;     /* verdict TRACER_DEFER */
	struct user_regs_struct regs; /* ptrace: the thread's registers at its seccomp stop */
};

/* probe.c: the listener probe running in its thread */
struct tracer_probe_job {
	pthread_t thread;
	bool running; /* thread started and not joined yet */
	/* written by the thread, read after the join */
	int fd; /* its listener, -1 when none */
	bool wait_killable;
	int error;
};

struct tracer {
	enum tracer_backend backend;
	struct tracer_features features;
	struct tracer_probe_job probe; /* between tracer_new_start and tracer_new_finish */
	bool ready;		       /* tracer_new_finish succeeded */
	struct tracer_handler_entry handlers[TRACER_NR_MAX];
	uint64_t handoff_cookie[2]; /* see filter.c: the listener handoff sendmsg */

	/* while running */
	pid_t main_pid;
	bool main_done;
	pid_t guard_pid; /* guard.c: the program's parent, the subreaper of its tree */
	int guard_sock;	 /* the guard's reports; its hang-up tells the guard we died */
	struct tracer_exit exit;
	int listener;	 /* seccomp backend */
	int status_sock; /* launch.c: child's exec errors; EOF once exec succeeded */
	int sigfd;
	sigset_t saved_mask;
	struct sigaction saved_sigchld;
	bool no_children; /* waitpid said ECHILD: everything has exited */
	size_t notif_size, resp_size;
	uint64_t next_call_id;
	struct tracer_ptrace *pt;
	struct tracer_stats stats;
	struct tracer_deferred *deferred;
	size_t n_deferred, cap_deferred;
	struct tracer_once warned_exec; /* exec_check.c */
	int watch_fd;			/* tracer_watch_fd, -1 when none (or fired) */
	void (*watch_fn)(void *arg);
	void *watch_arg;
};

/* probe.c: the cheap probes at once, the listener's in a thread (tracer_probe_start);
 * tracer_probe_finish waits for it and completes f; tracer_probe_cancel when the
 * result is not wanted any more. tracer_probe = start + finish. */
int tracer_probe_start(struct tracer_probe_job *job, struct tracer_features *f, struct hm_err *err);
int tracer_probe_finish(struct tracer_probe_job *job, struct tracer_features *f,
			struct hm_err *err);
void tracer_probe_cancel(struct tracer_probe_job *job);
int tracer_probe(struct tracer_features *f, struct hm_err *err);
void tracer_probe_log(const struct tracer_features *f);

/* filter.c: the BPF program for the registered handlers. intercept_action is
 * SECCOMP_RET_USER_NOTIF or SECCOMP_RET_TRACE. Free prog->filter with free(). */
int tracer_filter_build(const struct tracer *t, uint32_t intercept_action, struct sock_fprog *prog,
			struct hm_err *err);
/* syscalls refused with ENOSYS whatever the handlers: io_uring would bypass seccomp */
bool tracer_filter_refused(int nr);

/* dispatch.c */
struct tracer_result tracer_dispatch(struct tracer *t, const struct tracer_call *call);
/* result was not delivered: close its fd, run its undo */
void tracer_result_abandon(struct tracer *t, struct tracer_result *res);
void tracer_result_release(struct tracer_result *res);
int tracer_register_builtin(struct tracer *t, struct hm_err *err);
/* Park a deferred call (regs: ptrace only, else NULL). Fails only on ENOMEM; the
 * caller then cancels it and answers ENOMEM. */
int tracer_defer_add(struct tracer *t, const struct tracer_call *call,
		     const struct tracer_result *res, const struct user_regs_struct *regs);
/* Append a pollfd (POLLIN) per deferred call to pfd, which has room for n_deferred
 * more. Returns how many were appended, in the order of t->deferred. */
size_t tracer_defer_pollfds(const struct tracer *t, struct pollfd *pfd);
/* Take out the calls whose pollfd (the npfd from tracer_defer_pollfds, calls added
 * since then come after them) reported readiness; *ready is malloc'ed (NULL when none). */
size_t tracer_defer_take_ready(struct tracer *t, const struct pollfd *pfd, size_t npfd,
			       struct tracer_deferred **ready);
/* Drop the deferred calls for which gone(call) is true (or every call when gone is
 * NULL), cancelling each. */
void tracer_defer_drop(struct tracer *t, bool (*gone)(const struct tracer_call *call, void *arg),
		       void *arg);

/* exec_check.c: intercept execve/execveat (CONTINUE) and, from the dispatcher whatever
 * handler is registered for them later, say once per program that a setuid / setgid /
 * file-capability program gains nothing under no_new_privs */
int tracer_exec_check_register(struct tracer *t, struct hm_err *err);
void tracer_exec_check(struct tracer *t, const struct tracer_call *call);

/* dispatch.c: the watched fd in the supervisor loops: append its pollfd (0 or 1
 * appended), then fire it if that pollfd reported anything */
size_t tracer_watch_pollfd(const struct tracer *t, struct pollfd *pfd);
void tracer_watch_check(struct tracer *t, const struct pollfd *pfd, size_t n);

/* launch.c: fork the program with the filter in place. seccomp: t->listener is set
 * on return; ptrace: the child is seized and will stop at its exec. */
int tracer_launch(struct tracer *t, char *const argv[], struct hm_err *err);
/* read what the launch child reports after the handoff; false once it has exec'd */
void tracer_launch_status(struct tracer *t);

/* guard.c: the guard process (see there) */
__attribute__((noreturn)) void tracer_guard_main(int sock, pid_t program);
/* wait for the guard to report the program's pid (t->main_pid) */
int tracer_guard_program_pid(struct tracer *t);
/* read what the guard reported meanwhile (the program's exit status) */
void tracer_guard_poll(struct tracer *t);
/* The parent of pid from /proc/PID/stat, -1 if gone; async-signal-safe. */
pid_t tracer_proc_ppid(pid_t pid);
/* fn(pid) for every process in /proc; async-signal-safe. */
int tracer_proc_for_each(void (*fn)(pid_t pid, void *arg), void *arg);

/* lifecycle.c: signals, reaping, exit status */
int tracer_signals_block(struct tracer *t, struct hm_err *err);
void tracer_signals_restore(struct tracer *t);
/* drain the signalfd: forward what must reach the program, reap on SIGCHLD */
void tracer_signals_handle(struct tracer *t);
/* a wait status for pid (from waitpid); records the program's own outcome */
void tracer_note_exit(struct tracer *t, pid_t pid, int status);

/* notify.c / ptrace.c: the supervisor loops; return when everything has exited */
int tracer_notify_loop(struct tracer *t, struct hm_err *err);
int tracer_ptrace_loop(struct tracer *t, struct hm_err *err);
void tracer_ptrace_free(struct tracer *t);

/* ptrace.c / inject.c */
struct tracer_pt_proc; /* per thread group: the fd channel into the program */
struct tracer_ptrace {
	struct tracer_pt_proc *procs;
	int listen_fd; /* abstract unix socket programs connect back to, -1 until needed */
	struct sockaddr_un listen_addr;
	socklen_t listen_addrlen;
	pid_t current_tid; /* the thread whose seccomp stop is being handled */
	uint64_t current_id;
	/* tid -> tgid, direct-mapped; an entry leaves when its thread exits or execs */
	struct {
		pid_t tid, tgid;
	} tgid_cache[256];
};
/* the call is the one being handled (its thread stays stopped until we resume it) */
bool tracer_ptrace_valid(const struct tracer_call *call);
/* one waitpid() status of a tracee */
void tracer_pt_handle_status(struct tracer *t, pid_t pid, int status);
/* at the seccomp stop described by regs: install res->fd as the syscall's result and
 * resume the thread */
void tracer_pt_install_fd(struct tracer *t, pid_t tid, const struct user_regs_struct *regs,
			  struct tracer_result *res);
/* the thread group tgid exec'd or exited: drop its channel */
void tracer_pt_forget(struct tracer *t, pid_t tgid);
/* thread tid is gone (exit, or replaced in an exec) */
void tracer_pt_thread_gone(struct tracer *t, pid_t tid);
void tracer_pt_free_procs(struct tracer *t);

#endif
