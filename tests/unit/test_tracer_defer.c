/* Deferred answers (TRACER_DEFER) and argument-conditional interception
 * (tracer_set_handler_if_arg) in the tracer core, under both backends: a deferred call
 * waits while other threads' intercepted calls are served, resume can defer again, a
 * call whose thread dies is cancelled exactly once. The traced program is this binary,
 * run as `test_tracer_defer --helper NAME`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "tracer/engine/tracer.h"

#define DEFERRED_ANSWER 777
#define QUICK_ANSWER 999
#define DELAY_MS 150

static char self_exe[PATH_MAX];

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------ the program */

static volatile double quick_done_at;
static void *quick_caller(void *arg)
{
	(void)arg;
	usleep(20000); /* the deferred call is waiting by now */
	for (int i = 0; i < 50; i++)
		if (syscall(SYS_getpgid, 1) != QUICK_ANSWER)
			return (void *)1;
	quick_done_at = now_ms();
	return NULL;
}

static void *deferred_caller(void *arg)
{
	(void)arg;
	syscall(SYS_getppid); /* never answered: the process exits meanwhile */
	return NULL;
}

static int helper(const char *name)
{
	if (!strcmp(name, "defer")) {
		pthread_t th;
		pthread_create(&th, NULL, quick_caller, NULL);
		double t0 = now_ms();
		long r = syscall(SYS_getppid);
		double waited = now_ms() - t0;
		void *bad;
		pthread_join(th, &bad);
		/* getpgid(0) has a zero argument: the filter lets it through to the kernel */
		long native = syscall(SYS_getpgid, 0);
		printf("deferred=%ld waited=%.0f quick_ok=%d quick_before=%d native_ok=%d\n", r,
		       waited, bad == NULL, quick_done_at < t0 + waited, native == getpgrp());
		return r == DEFERRED_ANSWER && waited >= DELAY_MS - 10 && !bad &&
			       quick_done_at < t0 + waited && native == getpgrp()
			   ? 0
			   : 1;
	}
	if (!strcmp(name, "defer-exit")) {
		pthread_t th;
		pthread_create(&th, NULL, deferred_caller, NULL);
		usleep(100000);
		printf("exiting\n");
		fflush(stdout);
		_exit(0); /* kills the thread that waits for its answer */
	}
	return 2;
}

/* ------------------------------------------------------------------ the tracer */

struct counters {
	int resumes, cancels, quick;
};
static struct counters counters;

struct wait_ctx {
	int rd, wr;
	int rounds; /* resume defers again while > 0 */
};

static void *writer(void *arg)
{
	struct wait_ctx *c = arg;
	usleep(DELAY_MS * 1000 / 2);
	if (write(c->wr, "x", 1) != 1)
		return NULL;
	return NULL;
}

static void ctx_free(struct wait_ctx *c)
{
	close(c->rd);
	close(c->wr);
	free(c);
}

static struct tracer_result resume(const struct tracer_call *call, void *arg)
{
	struct wait_ctx *c = arg;
	counters.resumes++;
	char b;
	if (read(c->rd, &b, 1) != 1)
		return tracer_error(EIO);
	if (c->rounds-- > 0) {
		/* wait once more: the second half of the delay */
		pthread_t th;
		pthread_create(&th, NULL, writer, c);
		pthread_detach(th);
		return tracer_defer(c->rd, resume, (void (*)(void *))ctx_free, c);
	}
	assert_true(tracer_call_valid(call));
	ctx_free(c);
	return tracer_return(DEFERRED_ANSWER);
}

static void cancel(void *arg)
{
	counters.cancels++;
	ctx_free(arg);
}

static struct tracer_result handle_getppid(const struct tracer_call *call, void *data)
{
	(void)call;
	bool answer = data != NULL;
	struct wait_ctx *c = calloc(1, sizeof(*c));
	int p[2];
	if (!c || pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return tracer_error(ENOMEM);
	c->rd = p[0];
	c->wr = p[1];
	c->rounds = 1;
	if (answer) {
		pthread_t th;
		pthread_create(&th, NULL, writer, c);
		pthread_detach(th);
	}
	return tracer_defer(c->rd, resume, cancel, c);
}

static struct tracer_result handle_getpgid(const struct tracer_call *call, void *data)
{
	(void)call;
	(void)data;
	counters.quick++;
	return tracer_return(QUICK_ANSWER);
}

struct report {
	int rc;
	int exit_code;
	struct counters c;
};

static void run(enum tracer_backend backend, const char *helper_name, bool answer,
		struct report *rep, char *out, size_t outlen)
{
	int pout[2], prep[2];
	assert_int_equal(pipe2(pout, O_CLOEXEC), 0);
	assert_int_equal(pipe2(prep, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pout[1], 1);
		struct report r = {0};
		struct hm_err err = {0};
		struct tracer *t = NULL;
		char *argv[] = {self_exe, "--helper", (char *)helper_name, NULL};
		struct tracer_exit ex = {0};
		r.rc = tracer_new(backend, &t, &err);
		if (r.rc == 0)
			r.rc = tracer_set_handler(t, SYS_getppid, handle_getppid,
						  answer ? (void *)1 : NULL, &err);
		if (r.rc == 0)
			r.rc = tracer_set_handler_if_arg(t, SYS_getpgid, 0, handle_getpgid, NULL,
							 &err);
		if (r.rc == 0)
			r.rc = tracer_run(t, argv, &ex, &err);
		if (r.rc < 0)
			fprintf(stderr, "tracer: %s\n", err.msg);
		r.exit_code = tracer_exit_code(&ex);
		r.c = counters;
		tracer_free(t);
		if (write(prep[1], &r, sizeof(r)) != sizeof(r))
			_exit(99);
		_exit(0);
	}
	close(pout[1]);
	close(prep[1]);
	size_t got = 0;
	for (;;) {
		ssize_t n = read(pout[0], out + got, outlen - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	out[got] = '\0';
	assert_int_equal(read(prep[0], rep, sizeof(*rep)), sizeof(*rep));
	close(pout[0]);
	close(prep[0]);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
}

static void test_defer(void **state)
{
	(void)state;
	const enum tracer_backend backends[] = {TRACER_BACKEND_SECCOMP, TRACER_BACKEND_PTRACE};
	for (size_t i = 0; i < HM_ARRAY_SIZE(backends); i++) {
		struct report rep;
		char out[512];
		run(backends[i], "defer", true, &rep, out, sizeof(out));
		print_message("%-8s %s", tracer_backend_name(backends[i]), out);
		assert_int_equal(rep.rc, 0);
		assert_int_equal(rep.exit_code, 0);
		assert_int_equal(rep.c.resumes, 2); /* deferred twice */
		assert_int_equal(rep.c.cancels, 0);
		assert_int_equal(rep.c.quick, 50); /* getpgid(0) never reached the handler */
	}
}

static void test_defer_cancelled(void **state)
{
	(void)state;
	const enum tracer_backend backends[] = {TRACER_BACKEND_SECCOMP, TRACER_BACKEND_PTRACE};
	for (size_t i = 0; i < HM_ARRAY_SIZE(backends); i++) {
		struct report rep;
		char out[512];
		run(backends[i], "defer-exit", false, &rep, out, sizeof(out));
		assert_int_equal(rep.rc, 0);
		assert_int_equal(rep.exit_code, 0);
		assert_int_equal(rep.c.resumes, 0);
		assert_int_equal(rep.c.cancels, 1);
	}
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--helper"))
		return helper(argv[2]);
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n < 0)
		return 1;
	self_exe[n] = '\0';
	hm_log_init("test_tracer_defer", HM_LOG_WARN);
	/* in a SAN=1 build the helper is sanitized too, and LeakSanitizer cannot work in a
	 * traced process; this process read ASAN_OPTIONS at start-up already */
	const char *asan = getenv("ASAN_OPTIONS");
	char opts[512];
	snprintf(opts, sizeof(opts), "%s%sdetect_leaks=0", asan ? asan : "", asan ? ":" : "");
	setenv("ASAN_OPTIONS", opts, 1);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defer),
	    cmocka_unit_test(test_defer_cancelled),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
