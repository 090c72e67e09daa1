/* tracer/engine: the interception engine of trace-run, this module's one public
 * header (prefix tracer_). It launches a program so that a chosen set of its
 * system calls is answered by trace-run instead of (or before) the kernel, in every
 * thread and every descendant process, whatever the program is linked against.
 *
 * Two backends drive the same handlers:
 *  - seccomp: a seccomp filter returning SECCOMP_RET_USER_NOTIF for the intercepted
 *    calls; trace-run answers on the listener fd (Linux 5.9+: user notification,
 *    CONTINUE and ADDFD). Syscalls that are not intercepted never leave the kernel.
 *  - ptrace: the same filter returning SECCOMP_RET_TRACE, answered at the ptrace
 *    seccomp stop; the fallback for kernels without user notification or ADDFD.
 *
 * Lifecycle: the program's exit status (or terminating signal) is reported by
 * tracer_run(); SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to
 * trace-run are forwarded to it. If trace-run dies, however it dies, the program and
 * every descendant get SIGKILL: they live under a guard process (a child subreaper
 * that sees trace-run's end of a socketpair hang up; guard.c), on both backends. */
#ifndef HERMIT_TRACER_H
#define HERMIT_TRACER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/util.h"

/* Exit codes of trace-run itself, one family: each says what to fix. 124 is left to
 * timeout(1); 125-127 as shells and container runtimes use them. */
#define TRACER_EXIT_AGENT_DOWN 121 /* no agent at the address (no socket, refused, timeout) */
#define TRACER_EXIT_AUTH 122	   /* no usable token, or the agent rejected it */
#define TRACER_EXIT_TARGET 123	   /* no such target, not running, or not the caller's */
#define TRACER_EXIT_FAILURE 125	   /* trace-run could not set up */
#define TRACER_EXIT_NOEXEC 126	   /* PROGRAM exists but cannot be executed */
#define TRACER_EXIT_NOTFOUND 127   /* PROGRAM not found */

enum tracer_backend {
	TRACER_BACKEND_AUTO = 0, /* seccomp when the kernel can, ptrace otherwise */
	TRACER_BACKEND_SECCOMP,
	TRACER_BACKEND_PTRACE,
};

/* "auto", "seccomp", "ptrace" (trace-run's --backend and the config's "backend");
 * parse returns < 0 on another name */
const char *tracer_backend_name(enum tracer_backend backend);
int tracer_backend_parse(const char *name, enum tracer_backend *out);

enum tracer_outcome {
	TRACER_EXITED,	    /* code = exit status */
	TRACER_SIGNALED,    /* code = signal number */
	TRACER_EXEC_FAILED, /* code = errno of execve (nothing ran) */
};

struct tracer_exit {
	enum tracer_outcome outcome;
	int code;
	bool core_dumped;
};

/* What the kernel offers, probed once by tracer_new() (or tracer_new_start/finish). */
struct tracer_features {
	bool user_notif;     /* SECCOMP_RET_USER_NOTIF (5.0) */
	bool notif_continue; /* SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5) */
	bool addfd;	     /* SECCOMP_IOCTL_NOTIF_ADDFD (5.9) */
	bool addfd_send;     /* SECCOMP_ADDFD_FLAG_SEND (5.14) */
	bool wait_killable;  /* SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19) */
	bool sync_wakeup;    /* SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6) */
	bool ret_trace;	     /* SECCOMP_RET_TRACE, for the ptrace backend */
	bool ptrace;	     /* ptrace not forbidden by kernel.yama.ptrace_scope */
	int listener_errno;  /* why no listener could be had although USER_NOTIF exists */
	int kernel_major, kernel_minor;
};

struct tracer;

/* Probe the kernel and pick the backend (AUTO: seccomp when user notification, CONTINUE
 * and ADDFD work, ptrace otherwise). Asking for a backend the kernel cannot run is an
 * error that names the missing feature. Degradations are logged at info level. */
int tracer_new(enum tracer_backend backend, struct tracer **out, struct hm_err *err);
/* tracer_new in two steps: _start begins the probe in a thread of its own and returns,
 * _finish waits for it, chooses the backend and must succeed before anything else is
 * done with t (tracer_free excepted). In between, the caller does what it has to anyway
 * (trace-run: the agent handshake) while the probe runs. */
int tracer_new_start(enum tracer_backend backend, struct tracer **out, struct hm_err *err);
int tracer_new_finish(struct tracer *t, struct hm_err *err);
void tracer_free(struct tracer *t);

/* Run argv (PATH is searched) under the tracer with the handlers registered so far and
 * return when the program and every descendant have exited. Meant to be called once,
 * from the main thread of a process that has no other children: it makes the caller a
 * child subreaper, reaps every child, and blocks the forwarded signals while it runs. */
int tracer_run(struct tracer *t, char *const argv[], struct tracer_exit *out, struct hm_err *err);

/* Send sig to the program and to everything it started (from the supervisor thread, a
 * handler say): trace-run ends the run this way when it cannot go on. */
void tracer_terminate(struct tracer *t, int sig);

/* The shell-style status for an outcome: the exit code, 128+N for signal N, 126/127
 * when exec failed. */
int tracer_exit_code(const struct tracer_exit *e);

/* ================================================================ the handler API
 * What the handler sets (tracer/redirect, tests) plug into.
 *
 * A handler sees one intercepted syscall of the program and decides its result. It
 * runs in trace-run's supervisor loop, for both backends, with the calling thread
 * blocked in the syscall. Pointer arguments are addresses in the program: read them
 * with tracer_read_*, never dereference them.
 *
 * A reply can fail to arrive: the seccomp backend may find that the syscall was
 * interrupted by a signal (Go preempts every ~10 ms with SIGURG) and will be re-issued
 * with a new notification; any thread may be killed meanwhile. Handlers must therefore
 * be idempotent, or set result.undo to take back what they did.
 *
 * Handlers run one at a time on the supervisor's thread: one that waits (for the agent,
 * say) holds up every intercepted syscall of every thread meanwhile. */
struct tracer_call {
	struct tracer *tracer;
	pid_t pid;     /* the calling thread (TID), in trace-run's pid namespace */
	int nr;	       /* native syscall number (SYS_openat...) */
	uint32_t arch; /* AUDIT_ARCH_*, always TRACER_NATIVE_ARCH today */
	uint64_t args[6];
	uint64_t ip; /* user instruction pointer after the syscall instruction */
	uint64_t id; /* seccomp notification id; ptrace: a sequence number */
};

enum tracer_verdict {
	TRACER_CONTINUE,   /* let the kernel run the syscall as the program issued it */
	TRACER_RETURN,	   /* skip it; it returns value */
	TRACER_ERROR,	   /* skip it; it fails with error (a positive errno) */
	TRACER_INSTALL_FD, /* skip it; install fd in the program and return the new number */
	TRACER_REPLACE_FD, /* skip it; put fd at the program's number target_fd (as dup2
			    * would), then return value, or fail with error when not 0 */
	TRACER_DEFER,	   /* answer later: see tracer_defer() */
};

struct tracer_result;
/* Called on the supervisor thread once a deferred call's defer_fd is readable (or
 * reports an error or hang-up); returns the final result, or TRACER_DEFER again to go
 * on waiting (on the same or another fd, with the same or another arg). */
typedef struct tracer_result (*tracer_resume_fn)(const struct tracer_call *call, void *arg);

struct tracer_result {
	enum tracer_verdict verdict;
	int64_t value; /* TRACER_RETURN */
	int error;     /* TRACER_ERROR */
	int fd;	       /* TRACER_INSTALL_FD, _REPLACE_FD: trace-run's fd; the core closes it */
	int fd_flags;  /* TRACER_INSTALL_FD, _REPLACE_FD: O_CLOEXEC and/or O_NONBLOCK as the
			* program asked */
	int target_fd; /* TRACER_REPLACE_FD: the program's fd number that gets fd */
	/* called when the result could not be delivered (syscall interrupted, thread gone) */
	void (*undo)(void *arg);
	void *undo_arg;
	/* TRACER_DEFER */
	int defer_fd;		   /* trace-run's fd to wait for (POLLIN); not owned by the core */
	tracer_resume_fn resume;   /* produces the result once defer_fd is ready */
	void (*cancel)(void *arg); /* the call went away before resume answered it */
	void *defer_arg;
};

static inline struct tracer_result tracer_continue(void)
{
	return (struct tracer_result){.verdict = TRACER_CONTINUE, .fd = -1};
}
static inline struct tracer_result tracer_return(int64_t value)
{
	return (struct tracer_result){.verdict = TRACER_RETURN, .value = value, .fd = -1};
}
static inline struct tracer_result tracer_error(int error)
{
	return (struct tracer_result){.verdict = TRACER_ERROR, .error = error, .fd = -1};
}
/* Takes ownership of fd. */
static inline struct tracer_result tracer_install_fd(int fd, int fd_flags)
{
	return (struct tracer_result){.verdict = TRACER_INSTALL_FD, .fd = fd, .fd_flags = fd_flags};
}

/* Takes ownership of fd: the program's fd target_fd becomes it (the file there before is
 * closed, as dup2 closes it) and the syscall returns value, or fails with error when
 * error != 0. The swap happens even when the answer then finds the call gone (set undo
 * for that). */
static inline struct tracer_result tracer_replace_fd(int fd, int fd_flags, int target_fd,
						     int64_t value, int error)
{
	return (struct tracer_result){.verdict = TRACER_REPLACE_FD,
				      .fd = fd,
				      .fd_flags = fd_flags,
				      .target_fd = target_fd,
				      .value = value,
				      .error = error};
}

/* Answer later, without holding up the supervisor: the calling thread stays blocked in
 * its syscall while every other intercepted syscall is served. For work that waits on
 * the outside world (an agent request made by a worker thread, a datagram on a socket):
 * the handler starts it and returns tracer_defer(fd, resume, cancel, arg); the core
 * polls fd together with its own fds and calls resume(call, arg) on the supervisor
 * thread when fd is readable. resume gets a copy of the original call (same id: the
 * memory helpers and tracer_call_valid work) and is only called while the call is
 * still valid. When the call goes away first (the thread was killed, a signal
 * interrupted the syscall, the program ended), cancel(arg) runs instead, exactly once,
 * and resume never does. A deferred call can only be interrupted by a fatal signal (the
 * seccomp backend waits killably when the kernel can; the ptrace backend keeps the
 * thread stopped), so defer only what completes or fails on its own. */
static inline struct tracer_result tracer_defer(int fd, tracer_resume_fn resume,
						void (*cancel)(void *arg), void *arg)
{
	return (struct tracer_result){.verdict = TRACER_DEFER,
				      .fd = -1,
				      .defer_fd = fd,
				      .resume = resume,
				      .cancel = cancel,
				      .defer_arg = arg};
}

typedef struct tracer_result (*tracer_handler_fn)(const struct tracer_call *call, void *data);

/* Intercept syscall nr (native number) with fn. Must be called before tracer_run(); the
 * filter is built from the registered set. Registering twice replaces the handler. */
int tracer_set_handler(struct tracer *t, int nr, tracer_handler_fn fn, void *data,
		       struct hm_err *err);
/* The same, but the filter intercepts nr only when argument arg (0-5) is not zero;
 * otherwise the syscall runs natively at full speed. For calls whose interesting form
 * is recognizable by a pointer: recvfrom() with a source address buffer, sendto() with
 * a destination. */
int tracer_set_handler_if_arg(struct tracer *t, int nr, int arg, tracer_handler_fn fn, void *data,
			      struct hm_err *err);

/* Call fn(arg) once, on the supervisor thread, when fd (not owned; e.g. an eventfd)
 * turns readable or hangs up: news from outside that does not wait for a syscall of
 * the program. One watch per tracer, set before tracer_run(). */
void tracer_watch_fd(struct tracer *t, int fd, void (*fn)(void *arg), void *arg);

/* ---- access to the program's memory (memory.c) ----
 * process_vm_readv/writev, falling back to /proc/TID/mem. Failures fill err with EFAULT
 * (bad address), ESRCH (thread gone) or the errno of the access. */
int tracer_read_mem(const struct tracer_call *call, uint64_t addr, void *buf, size_t len,
		    struct hm_err *err);
int tracer_write_mem(const struct tracer_call *call, uint64_t addr, const void *buf, size_t len,
		     struct hm_err *err);
/* True while the notification is still pending, i.e. what was read belongs to the
 * thread that made this call and not to a recycled TID (SECCOMP_IOCTL_NOTIF_ID_VALID).
 * It does not stop a sibling thread from rewriting the memory meanwhile: hermit is not
 * a sandbox, the program runs as the user. Always true with ptrace (thread stopped). */
bool tracer_call_valid(const struct tracer_call *call);
/* The path argument at addr (NUL-terminated, ENAMETOOLONG when it does not fit), read
 * while the call is still valid (tracer_call_valid). */
int tracer_read_path(const struct tracer_call *call, uint64_t addr, char *buf, size_t size,
		     struct hm_err *err);
/* The same without the validity check (one ioctl less on every intercepted path): for
 * a decision that can only end in TRACER_CONTINUE. A read from a recycled TID belongs to
 * a call that is gone, and the kernel refuses any answer to it; call tracer_call_valid
 * before acting on the path in any other way (asking the agent, answering). */
int tracer_peek_path(const struct tracer_call *call, uint64_t addr, char *buf, size_t size,
		     struct hm_err *err);
/* The absolute, lexically normalized form of path as the program would resolve it
 * relative to dirfd (AT_FDCWD = its current directory), through /proc/TID/{cwd,fd}. */
int tracer_resolve_at(const struct tracer_call *call, int dirfd, const char *path, char *out,
		      size_t size, struct hm_err *err);
/* Collapse "//", "/./" and "/../" in an absolute path, in place. */
void tracer_path_normalize(char *path);

/* ---- once.c: say a thing once per key (a warning per path, say) ---- */
/* a small memory of keys already reported */
struct tracer_once {
	uint64_t seen[32];
	unsigned next;
};
/* true the first time key is seen (of the last 32) */
bool tracer_once(struct tracer_once *o, const char *key);

#endif
