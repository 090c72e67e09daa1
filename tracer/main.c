/* trace-run: run a program with its system calls under hermit's tracer. Errors are one
 * line on stderr, "trace-run: ...". The exit status is the program's; when the program
 * was killed by a signal, trace-run kills itself with the same signal, so that a shell
 * or CI sees the same thing as without trace-run. */
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include "tracer/tracer.h"

#define PROG "trace-run"

static const char usage[] =
    "usage: trace-run [--backend seccomp|ptrace] [-v] [--] PROGRAM [ARGS]\n"
    "\n"
    "Run PROGRAM (searched in PATH) with its system calls under hermit's tracer, in\n"
    "every thread and child process, whatever it is linked against (static Go, glibc,\n"
    "musl, raw syscalls).\n"
    "\n"
    "  --backend B    seccomp: seccomp user notification (Linux 5.9+, the default when\n"
    "                 the kernel has it); ptrace: seccomp + ptrace, for older kernels\n"
    "                 (slower); auto: pick the best the kernel offers\n"
    "  -v, --verbose  kernel features found, backend chosen, per-run counters\n"
    "  -h, --help     this text\n"
    "\n"
    "SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to trace-run are\n"
    "forwarded to PROGRAM. trace-run returns once PROGRAM and everything it started\n"
    "have exited. If trace-run dies, PROGRAM is killed.\n"
    "\n"
    "exit codes: PROGRAM's exit status (or trace-run dies of PROGRAM's fatal signal),\n"
    "125 trace-run failed, 126 PROGRAM not executable, 127 PROGRAM not found.\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	char msg[HM_ERR_MSG_MAX + 128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, PROG ": %s\n", msg);
	return TRACER_EXIT_FAILURE;
}

/* Die the way the program died. Its core (if any) was already written. */
static int exit_like(const struct tracer_exit *e)
{
	if (e->outcome != TRACER_SIGNALED)
		return tracer_exit_code(e);
	int sig = e->code;
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	fflush(NULL);
	signal(sig, SIG_DFL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	return 128 + sig; /* a signal whose default action is not to terminate */
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"backend", required_argument, NULL, 'b'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	hm_log_init(PROG, HM_LOG_WARN);
	enum tracer_backend backend = TRACER_BACKEND_AUTO;
	int opt;
	opterr = 0;
	/* '+': stop at PROGRAM, whose own flags are not ours */
	while ((opt = getopt_long(argc, argv, "+:vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'b':
			if (tracer_backend_parse(optarg, &backend) < 0)
				return fail("--backend '%s': expected seccomp, ptrace or auto",
					    optarg);
			break;
		case 'v':
			hm_log_init(PROG, HM_LOG_DEBUG);
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		case ':':
			return fail("option '%s' needs a value (see trace-run --help)",
				    argv[optind - 1]);
		default:
			return fail("unknown option '%s' (see trace-run --help)", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return fail("no PROGRAM given (see trace-run --help)");

	struct hm_err err = {0};
	struct tracer *t = NULL;
	if (tracer_new(backend, &t, &err) < 0)
		return fail("%s", err.msg);
	struct tracer_exit ex;
	int r = tracer_run(t, argv + optind, &ex, &err);
	tracer_free(t);
	if (r < 0)
		return fail("%s", err.msg);
	if (ex.outcome == TRACER_EXEC_FAILED) {
		fail("%s: %s", argv[optind], strerror(ex.code));
		return tracer_exit_code(&ex);
	}
	if (ex.outcome == TRACER_SIGNALED && ex.code == SIGSYS)
		fail("%s was killed by SIGSYS; a system call with a foreign ABI (32-bit int 0x80) "
		     "would get past the tracer, so it is not allowed",
		     argv[optind]);
	return exit_like(&ex);
}
