/* tracer: the core of trace-run. It launches a program so that a chosen set of its
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
#include <sys/types.h>

#include "util/util.h"

/* Exit codes of trace-run itself, as shells and container runtimes use them. */
#define TRACER_EXIT_FAILURE 125	 /* trace-run could not set up */
#define TRACER_EXIT_NOEXEC 126	 /* PROGRAM exists but cannot be executed */
#define TRACER_EXIT_NOTFOUND 127 /* PROGRAM not found */

enum tracer_backend {
	TRACER_BACKEND_AUTO = 0, /* seccomp when the kernel can, ptrace otherwise */
	TRACER_BACKEND_SECCOMP,
	TRACER_BACKEND_PTRACE,
};

/* "auto", "seccomp", "ptrace" */
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

/* What the kernel offers, probed once by tracer_new(). */
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
void tracer_free(struct tracer *t);
enum tracer_backend tracer_backend(const struct tracer *t);
const struct tracer_features *tracer_features(const struct tracer *t);

/* Run argv (PATH is searched) under the tracer with the handlers registered so far and
 * return when the program and every descendant have exited. Meant to be called once,
 * from the main thread of a process that has no other children: it makes the caller a
 * child subreaper, reaps every child, and blocks the forwarded signals while it runs. */
int tracer_run(struct tracer *t, char *const argv[], struct tracer_exit *out, struct hm_err *err);

/* The shell-style status for an outcome: the exit code, 128+N for signal N, 126/127
 * when exec failed. */
int tracer_exit_code(const struct tracer_exit *e);

#endif
