/* The tracer core against real programs, under both backends: exit status, file
 * redirection (glibc dynamic cat, busybox static cat, a static Go program under
 * preemption pressure), children, threads, vfork, exec, io_uring refusal, nested
 * listeners, signal forwarding, the tracer dying, an unprivileged user. Small helper
 * programs are this binary itself, run as `test_tracer --helper NAME ...`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "tracer/engine/internal.h"

#define CONTENT "hello from a memfd\n"
#define PREFIX "/hermit-test-remote"
#define RPATH PREFIX "/dir/file.txt"
#define NOBODY 65534

static char self_exe[PATH_MAX];
static char go_app[PATH_MAX];
static char tmp_dir[] = "/tmp/hm-tracer-XXXXXX"; /* removed by main() whatever happens */

/* ------------------------------------------------------------------ a demonstration handler set
 * open()/openat() of a path under a prefix gets a read-only memfd holding fixed content:
 * the shape remote files take (read the path argument, resolve it as the program would,
 * decide, hand over a real fd so that read, pread, lseek and mmap run at local speed). */

struct redirect {
	const char *prefix; /* absolute; matches the path itself and everything below */
	const void *content;
	size_t len;
	unsigned long hits; /* files handed out */
};

static bool under_prefix(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	while (n > 1 && prefix[n - 1] == '/')
		n--;
	return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/' || n == 1);
}

/* sealed, then reopened read-only: the program gets O_RDONLY semantics, like a file it
 * may not write */
static int content_fd(const struct redirect *r, const char *path, struct hm_err *err)
{
	char name[64];
	snprintf(name, sizeof(name), "hermit:%.50s", path);
	hm_cleanup_close int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return hm_err_errno(err, "memfd_create");
	if (hm_write_all(fd, r->content, r->len) < 0)
		return hm_err_errno(err, "write memfd");
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return hm_err_errno(err, "seal memfd");
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	int ro = open(self, O_RDONLY | O_CLOEXEC);
	if (ro < 0)
		return hm_err_errno(err, "reopen memfd");
	return ro;
}

static struct tracer_result redirect_open(const struct tracer_call *call, int dirfd,
					  uint64_t path_addr, int flags, struct redirect *r)
{
	struct hm_err err = {0};
	char path[PATH_MAX], abs[PATH_MAX];
	/* unreadable path: the kernel gives the program the right error (EFAULT...) */
	if (tracer_read_path(call, path_addr, path, sizeof(path), &err) < 0)
		return tracer_continue();
	if (tracer_resolve_at(call, dirfd, path, abs, sizeof(abs), &err) < 0)
		return tracer_continue();
	if (!under_prefix(abs, r->prefix))
		return tracer_continue();
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
		return tracer_error(EROFS);
	if (flags & O_DIRECTORY)
		return tracer_error(ENOTDIR);
	int fd = content_fd(r, abs, &err);
	if (fd < 0) {
		hm_warn("%s: %s", abs, err.msg);
		return tracer_error(err.code ? err.code : EIO);
	}
	r->hits++;
	return tracer_install_fd(fd, flags & (O_CLOEXEC | O_NONBLOCK));
}

static struct tracer_result handle_open(const struct tracer_call *call, void *data)
{
	return redirect_open(call, AT_FDCWD, call->args[0], (int)call->args[1], data);
}

static struct tracer_result handle_openat(const struct tracer_call *call, void *data)
{
	return redirect_open(call, (int)call->args[0], call->args[1], (int)call->args[2], data);
}

static int redirect_register(struct tracer *t, struct redirect *r, struct hm_err *err)
{
	if (!r->prefix || r->prefix[0] != '/')
		return hm_err_set(err, EINVAL, "redirect prefix must be an absolute path");
	if (tracer_set_handler(t, SYS_open, handle_open, r, err) < 0 ||
	    tracer_set_handler(t, SYS_openat, handle_openat, r, err) < 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------------ helpers */

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *thread_reader(void *arg)
{
	const char *path = arg;
	char buf[256];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return (void *)1;
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	return (n == (ssize_t)strlen(CONTENT) && !memcmp(buf, CONTENT, n)) ? NULL : (void *)1;
}

static volatile sig_atomic_t storm_signals;
static volatile int storm_done;
static void storm_handler(int sig)
{
	(void)sig;
	storm_signals++;
}
struct storm {
	pid_t target;
};
static void *storm_thread(void *arg)
{
	struct storm *s = arg;
	while (!__atomic_load_n(&storm_done, __ATOMIC_RELAXED)) {
		syscall(SYS_tgkill, getpid(), s->target, SIGUSR1);
		for (volatile int i = 0; i < 2000; i++)
			;
	}
	return NULL;
}

static int count_open_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

static int helper(int argc, char **argv)
{
	const char *name = argv[0];
	if (!strcmp(name, "io-uring")) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		long r = syscall(SYS_io_uring_setup, 4, &p);
		printf("io_uring_setup=%ld errno=%d\n", r, r < 0 ? errno : 0);
		return r < 0 && errno == ENOSYS ? 0 : 1;
	}
	if (!strcmp(name, "nested-listener")) {
		struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
		struct sock_fprog prog = {.len = 1, .filter = &allow};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
			return 2;
		long l = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				 SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
		int listener_errno = l < 0 ? errno : 0;
		long plain = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
		printf("listener=%ld errno=%d plain=%ld\n", l, listener_errno, plain);
		return l < 0 && listener_errno == EBUSY && plain == 0 ? 0 : 1;
	}
	if (!strcmp(name, "threads") && argc == 3) {
		int n = atoi(argv[2]);
		pthread_t th[64];
		int bad = 0;
		for (int i = 0; i < n && i < 64; i++)
			if (pthread_create(&th[i], NULL, thread_reader, argv[1]) != 0)
				return 2;
		for (int i = 0; i < n && i < 64; i++) {
			void *r;
			pthread_join(th[i], &r);
			bad += r != NULL;
		}
		printf("threads ok=%d bad=%d\n", n - bad, bad);
		return bad ? 1 : 0;
	}
	if (!strcmp(name, "vfork") && argc == 2) {
		pid_t pid = vfork();
		if (pid == 0) {
			execl("/bin/cat", "cat", argv[1], (char *)NULL);
			_exit(127);
		}
		int st;
		waitpid(pid, &st, 0);
		return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
	}
	if (!strcmp(name, "fds") && argc == 2) {
		/* O_CLOEXEC must follow the program's flags; fd 3 must stay free */
		int a = open(argv[1], O_RDONLY);
		int b = open(argv[1], O_RDONLY | O_CLOEXEC);
		int fa = fcntl(a, F_GETFD), fb = fcntl(b, F_GETFD);
		int mode = fcntl(a, F_GETFL) & O_ACCMODE;
		int w = open(argv[1], O_WRONLY);
		int werr = errno;
		printf("a=%d b=%d cloexec_a=%d cloexec_b=%d mode=%d write=%d/%d\n", a, b,
		       !!(fa & FD_CLOEXEC), !!(fb & FD_CLOEXEC), mode, w, werr);
		return a == 3 && b == 4 && !(fa & FD_CLOEXEC) && (fb & FD_CLOEXEC) &&
			       mode == O_RDONLY && w < 0 && werr == EROFS
			   ? 0
			   : 1;
	}
	if (!strcmp(name, "bench") && argc == 3) {
		/* ns per call: getppid (never intercepted), getpgid (intercepted by the test
		 * when it asks), open+read+close of argv[1] */
		int n = atoi(argv[2]);
		double t0 = now_ns();
		for (int i = 0; i < n * 10; i++)
			syscall(SYS_getppid);
		double t1 = now_ns();
		long check = 0;
		for (int i = 0; i < n; i++)
			check = syscall(SYS_getpgid, 0);
		double t2 = now_ns();
		char buf[64];
		for (int i = 0; i < n; i++) {
			int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
			if (fd < 0 || read(fd, buf, sizeof(buf)) <= 0)
				return 1;
			close(fd);
		}
		double t3 = now_ns();
		printf("getppid %.0f getpgid %.0f open %.0f check %ld\n", (t1 - t0) / (n * 10.0),
		       (t2 - t1) / n, (t3 - t2) / n, check);
		return 0;
	}
	if (!strcmp(name, "signal-storm") && argc == 3) {
		/* intercepted opens while another thread keeps signalling this one: a
		 * handler with SA_RESTART, like Go's SIGURG */
		struct sigaction sa = {.sa_handler = storm_handler, .sa_flags = SA_RESTART};
		sigaction(SIGUSR1, &sa, NULL);
		/* the baseline after one open: under ptrace the first installation adds the
		 * fd channel (by design, see tracer/engine/inject.c) */
		close(open(argv[1], O_RDONLY | O_CLOEXEC));
		int n = atoi(argv[2]), bad = 0, before = count_open_fds();
		struct storm st = {.target = (pid_t)syscall(SYS_gettid)};
		pthread_t th;
		pthread_create(&th, NULL, storm_thread, &st);
		char buf[256];
		for (int i = 0; i < n; i++) {
			int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
			ssize_t got = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
			if (fd < 0 || got != (ssize_t)strlen(CONTENT) || memcmp(buf, CONTENT, got))
				bad++;
			if (fd >= 0)
				close(fd);
		}
		__atomic_store_n(&storm_done, 1, __ATOMIC_RELAXED);
		pthread_join(th, NULL);
		int leaked = count_open_fds() - before;
		printf("storm bad=%d leaked=%d signals=%d\n", bad, leaked, (int)storm_signals);
		return bad || leaked ? 1 : 0;
	}
	if (!strcmp(name, "churn") && argc == 2) {
		/* what daemons and shells do to fds, between intercepted opens */
		char buf[256];
		int bad = 0;
#define CHECK_READ()                                                                               \
	do {                                                                                       \
		int fd_ = open(argv[1], O_RDONLY | O_CLOEXEC);                                     \
		ssize_t n_ = fd_ < 0 ? -1 : read(fd_, buf, sizeof(buf));                           \
		bad += n_ != (ssize_t)strlen(CONTENT);                                             \
		if (fd_ >= 0)                                                                      \
			close(fd_);                                                                \
	} while (0)
		CHECK_READ();
		/* close everything but stdio (and with it anything trace-run left behind) */
		syscall(SYS_close_range, 3, ~0U, 0);
		CHECK_READ();
		CHECK_READ(); /* trace-run's channel (if any) is back */
		/* every fd number but 10..19 now holds /dev/null, the channel's included */
		int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		struct rlimit rl;
		getrlimit(RLIMIT_NOFILE, &rl);
		int top = rl.rlim_cur > 1024 ? 1024 : (int)rl.rlim_cur;
		for (int fd = 3; fd < top; fd++)
			if (fd != devnull && (fd < 10 || fd > 19))
				dup3(devnull, fd, O_CLOEXEC);
		CHECK_READ();
		CHECK_READ();
		syscall(SYS_close_range, 3, ~0U, 0);
		CHECK_READ();
		/* a forked child, no exec: its own fd table, a copy of the memory */
		pid_t pid = fork();
		if (pid == 0) {
			CHECK_READ();
			CHECK_READ();
			_exit(bad);
		}
		int st;
		waitpid(pid, &st, 0);
		bad += !WIFEXITED(st) || WEXITSTATUS(st);
		CHECK_READ();
		printf("churn bad=%d\n", bad);
		return bad ? 1 : 0;
	}
	if (!strcmp(name, "int80")) {
		/* getpid through the 32-bit ABI from a 64-bit process */
		long r = 20;
		__asm__ volatile("int $0x80" : "+a"(r) : : "memory");
		printf("int80 getpid=%ld\n", r);
		return r == getpid() ? 0 : 1;
	}
	if (!strcmp(name, "pid-and-sleep")) {
		printf("%d\n", getpid());
		fflush(stdout);
		for (;;)
			pause();
	}
	if (!strcmp(name, "tree-and-sleep")) {
		/* a child, and an orphan whose parent exited: "SELF CHILD ORPHAN" on one line */
		int p[2];
		if (pipe(p) < 0)
			return 1;
		pid_t child = fork();
		if (child == 0) {
			for (;;)
				pause();
		}
		pid_t middle = fork();
		if (middle == 0) {
			pid_t orphan = fork();
			if (orphan == 0) {
				for (;;)
					pause();
			}
			ssize_t n = write(p[1], &orphan, sizeof(orphan));
			_exit(n == (ssize_t)sizeof(orphan) ? 0 : 1);
		}
		pid_t orphan = 0;
		if (read(p[0], &orphan, sizeof(orphan)) != (ssize_t)sizeof(orphan))
			return 1;
		waitpid(middle, NULL, 0);
		printf("%d %d %d\n", getpid(), child, orphan);
		fflush(stdout);
		for (;;)
			pause();
	}
	fprintf(stderr, "unknown helper %s\n", name);
	return 2;
}

/* ------------------------------------------------------------------ running */

struct run_opts {
	enum tracer_backend backend;
	bool as_nobody;
	bool intercept_getpgid;	    /* answer getpgid() with 4242 (benchmark) */
	int kill_tracer_after_line; /* SIGKILL the tracer once the program printed a line */
	int term_tracer_after_line; /* SIGTERM the tracer once the program printed a line */
	bool no_wait_killable;	    /* seccomp without WAIT_KILLABLE_RECV, as before 5.19 */
	bool intercept_sendmsg;	    /* sendmsg intercepted (CONTINUE): the launch handoff uses it */
};

struct report {
	int rc;
	struct tracer_exit ex;
	struct tracer_stats stats;
	unsigned long hits;
	char msg[256];
};

struct run {
	int wstatus; /* of the process that ran the tracer */
	struct report rep;
	bool have_report;
	char out[65536];
	size_t out_len;
	pid_t tracer_pid;
};

static struct tracer_result answer_4242(const struct tracer_call *call, void *data)
{
	(void)call;
	(void)data;
	return tracer_return(4242);
}

static struct tracer_result count_and_continue(const struct tracer_call *call, void *data)
{
	(void)call;
	(*(unsigned long *)data)++;
	return tracer_continue();
}

__attribute__((noreturn)) static void tracer_child(const struct run_opts *o, char *const argv[],
						   int out_w, int rep_w)
{
	dup2(out_w, STDOUT_FILENO);
	close(out_w);
	struct report rep = {0};
	if (o->as_nobody) {
		/* a normal user: no capabilities, no root-owned privileges */
		if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0) {
			rep.rc = -2;
			goto out;
		}
		/* as after a normal exec (the setuid above cleared it) */
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	}
	alarm(120);
	struct hm_err err = {0};
	struct tracer *t = NULL;
	struct redirect r = {.prefix = PREFIX, .content = CONTENT, .len = strlen(CONTENT)};
	rep.rc = tracer_new(o->backend, &t, &err);
	if (rep.rc == 0 && o->no_wait_killable)
		t->features.wait_killable = false;
	if (rep.rc == 0)
		rep.rc = redirect_register(t, &r, &err);
	if (rep.rc == 0 && o->intercept_getpgid)
		rep.rc = tracer_set_handler(t, SYS_getpgid, answer_4242, NULL, &err);
	unsigned long sendmsgs = 0;
	if (rep.rc == 0 && o->intercept_sendmsg)
		rep.rc = tracer_set_handler(t, SYS_sendmsg, count_and_continue, &sendmsgs, &err);
	if (rep.rc == 0)
		rep.rc = tracer_run(t, argv, &rep.ex, &err);
	if (o->intercept_sendmsg)
		rep.hits = sendmsgs;
	if (t) {
		rep.stats = t->stats;
		tracer_free(t);
	}
	if (!o->intercept_sendmsg)
		rep.hits = r.hits;
	snprintf(rep.msg, sizeof(rep.msg), "%.200s", err.msg);
out:
	if (write(rep_w, &rep, sizeof(rep)) != sizeof(rep))
		_exit(99);
	fflush(stdout);
	if (rep.rc == 0 && rep.ex.outcome == TRACER_SIGNALED) {
		/* die like the program, as trace-run does */
		signal(rep.ex.code, SIG_DFL);
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, rep.ex.code);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		raise(rep.ex.code);
	}
	_exit(rep.rc == 0 ? tracer_exit_code(&rep.ex) : 125);
}

static void run_traced(const struct run_opts *o, char *const argv[], struct run *res)
{
	memset(res, 0, sizeof(*res));
	int out[2], rep[2];
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	assert_int_equal(pipe2(rep, O_CLOEXEC), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(out[0]);
		close(rep[0]);
		tracer_child(o, argv, out[1], rep[1]);
	}
	res->tracer_pid = pid;
	close(out[1]);
	close(rep[1]);
	bool signalled = false;
	double deadline = now_ns() + 120e9;
	for (;;) {
		struct pollfd p = {.fd = out[0], .events = POLLIN};
		int left = (int)((deadline - now_ns()) / 1e6);
		if (left <= 0 || poll(&p, 1, left) <= 0) {
			fail_msg("program output did not end within 120 s");
		}
		ssize_t n =
		    read(out[0], res->out + res->out_len, sizeof(res->out) - 1 - res->out_len);
		if (n <= 0)
			break;
		res->out_len += (size_t)n;
		if (!signalled && memchr(res->out, '\n', res->out_len)) {
			if (o->kill_tracer_after_line) {
				kill(pid, SIGKILL);
				signalled = true;
			} else if (o->term_tracer_after_line) {
				kill(pid, SIGTERM);
				signalled = true;
			}
		}
	}
	res->out[res->out_len] = '\0';
	res->have_report = read(rep[0], &res->rep, sizeof(res->rep)) == sizeof(res->rep);
	close(out[0]);
	close(rep[0]);
	assert_int_equal(waitpid(pid, &res->wstatus, 0), pid);
	if (res->have_report && res->rep.rc != 0)
		print_message("tracer failed: %s\n", res->rep.msg);
}

static void assert_exited(const struct run *r, int code)
{
	if (!WIFEXITED(r->wstatus) || WEXITSTATUS(r->wstatus) != code)
		print_message("status 0x%x, output: %s\n", r->wstatus, r->out);
	assert_true(r->have_report);
	assert_int_equal(r->rep.rc, 0);
	assert_true(WIFEXITED(r->wstatus));
	assert_int_equal(WEXITSTATUS(r->wstatus), code);
}

static const enum tracer_backend backends[] = {TRACER_BACKEND_SECCOMP, TRACER_BACKEND_PTRACE};
#define FOR_EACH_BACKEND(b)                                                                        \
	for (size_t b##_i = 0; b##_i < HM_ARRAY_SIZE(backends); b##_i++)                           \
		for (enum tracer_backend b = backends[b##_i], b##_once = 1; b##_once; b##_once = 0)

/* ------------------------------------------------------------------ tests */

static void test_filter_shape(void **state)
{
	(void)state;
	/* many intercepted syscalls: the binary search must still reach every one */
	struct tracer t;
	memset(&t, 0, sizeof(t));
	for (int nr = 0; nr < 300; nr += 3)
		t.handlers[nr].fn = answer_4242;
	t.handlers[SYS_sendmsg].fn = answer_4242;
	t.handoff_cookie[0] = 0x0123456789abcdefULL;
	t.handoff_cookie[1] = 0xfedcba9876543210ULL;
	struct sock_fprog prog;
	struct hm_err err;
	assert_int_equal(tracer_filter_build(&t, SECCOMP_RET_USER_NOTIF, &prog, &err), 0);
	/* interpret it; the last rounds are sendmsg carrying the handoff cookie, then a
	 * foreign arch, then an x32 number */
	for (uint32_t nr = 0; nr < 503; nr++) {
		struct seccomp_data d = {.nr = (int)nr, .arch = TRACER_NATIVE_ARCH};
		bool with_cookie = nr == 500;
		if (nr >= 500) {
			d.nr = SYS_sendmsg;
			d.args[3] = t.handoff_cookie[0];
			d.args[4] = t.handoff_cookie[1];
		}
		if (nr == 501)
			d.arch = AUDIT_ARCH_I386;
		if (nr == 502)
			d.nr = (int)(TRACER_X32_SYSCALL_BIT | SYS_openat);
		uint32_t A = 0, pc = 0, ret = 0;
		for (;;) {
			struct sock_filter *i = &prog.filter[pc++];
			switch (i->code) {
			case BPF_LD | BPF_W | BPF_ABS:
				memcpy(&A, (char *)&d + i->k, 4);
				break;
			case BPF_JMP | BPF_JEQ | BPF_K:
				pc += A == i->k ? i->jt : i->jf;
				break;
			case BPF_JMP | BPF_JGT | BPF_K:
				pc += A > i->k ? i->jt : i->jf;
				break;
			case BPF_JMP | BPF_JGE | BPF_K:
				pc += A >= i->k ? i->jt : i->jf;
				break;
			case BPF_JMP | BPF_JA:
				pc += i->k;
				break;
			case BPF_RET | BPF_K:
				ret = i->k;
				goto done;
			default:
				fail_msg("unexpected BPF code 0x%x", i->code);
			}
			assert_true(pc < prog.len);
		}
	done:;
		uint32_t want = SECCOMP_RET_ALLOW;
		if (nr == 501)
			want = SECCOMP_RET_KILL_PROCESS;
		else if (nr == 502)
			want = SECCOMP_RET_ERRNO | ENOSYS;
		else if (with_cookie)
			want = SECCOMP_RET_ALLOW;
		else if (nr >= 500)
			want = SECCOMP_RET_USER_NOTIF;
		else if (tracer_filter_refused((int)nr))
			want = SECCOMP_RET_ERRNO | ENOSYS;
		else if (nr < TRACER_NR_MAX && t.handlers[nr].fn)
			want = SECCOMP_RET_USER_NOTIF;
		if (ret != want)
			fail_msg("nr %u: got 0x%x want 0x%x", nr, ret, want);
	}
	free(prog.filter);
}

static void test_path_normalize(void **state)
{
	(void)state;
	static const char *cases[][2] = {
	    {"/a/b/../c", "/a/c"},
	    {"/../..", "/"},
	    {"//a//b/", "/a/b"},
	    {"/a/./b/.", "/a/b"},
	    {"/", "/"},
	    {"/a/..", "/"},
	    {"a/../..", "."},
	    {"/x/y/z/../../w", "/x/w"},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(cases); i++) {
		char buf[64];
		strcpy(buf, cases[i][0]);
		tracer_path_normalize(buf);
		assert_string_equal(buf, cases[i][1]);
	}
}

static void test_probe(void **state)
{
	(void)state;
	struct tracer_features f;
	struct hm_err err;
	assert_int_equal(tracer_probe(&f, &err), 0);
	print_message("kernel %d.%d notif=%d continue=%d addfd=%d send=%d killable=%d sync=%d "
		      "trace=%d\n",
		      f.kernel_major, f.kernel_minor, f.user_notif, f.notif_continue, f.addfd,
		      f.addfd_send, f.wait_killable, f.sync_wakeup, f.ret_trace);
	/* this project's machines run 6.18: everything must be there */
	assert_true(f.user_notif && f.notif_continue && f.addfd && f.addfd_send && f.ret_trace);
}

/* Started and freed without tracer_new_finish (trace-run when the agent cannot be
 * reached): the probe thread is joined and its listener closed, nothing leaks (ASan), no
 * fd stays open; finished, the probe gives what tracer_probe gives. */
static void count_fds(int *n)
{
	*n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	while (readdir(d))
		(*n)++;
	closedir(d);
}

static void test_new_in_two_steps(void **state)
{
	(void)state;
	int before, after;
	count_fds(&before);
	struct hm_err err = {0};
	struct tracer *t = NULL;
	assert_int_equal(tracer_new_start(TRACER_BACKEND_AUTO, &t, &err), 0);
	/* nothing runs on a tracer whose backend is not chosen yet */
	char *true_argv[] = {"true", NULL};
	struct tracer_exit ex;
	assert_int_equal(tracer_run(t, true_argv, &ex, &err), -1);
	assert_int_equal(err.code, EINVAL);
	tracer_free(t);
	count_fds(&after);
	assert_int_equal(after, before);

	struct tracer_features f;
	assert_int_equal(tracer_probe(&f, &err), 0);
	assert_int_equal(tracer_new_start(TRACER_BACKEND_AUTO, &t, &err), 0);
	assert_int_equal(tracer_new_finish(t, &err), 0);
	assert_int_equal(tracer_new_finish(t, &err), 0); /* once is enough */
	assert_int_equal(t->backend, TRACER_BACKEND_SECCOMP);
	assert_true(t->features.notif_continue == f.notif_continue &&
		    t->features.addfd_send == f.addfd_send &&
		    t->features.sync_wakeup == f.sync_wakeup &&
		    t->features.wait_killable == f.wait_killable);
	assert_int_equal(t->probe.fd, -1); /* the probe's listener is closed */
	tracer_free(t);
	count_fds(&after);
	assert_int_equal(after, before);
}

static void test_exit_status(void **state)
{
	(void)state;
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *exit3[] = {"sh", "-c", "exit 3", NULL};
		run_traced(&(struct run_opts){.backend = b}, exit3, &r);
		assert_exited(&r, 3);
		assert_int_equal(r.rep.ex.outcome, TRACER_EXITED);

		char *killed[] = {"sh", "-c", "kill -USR1 $$", NULL};
		run_traced(&(struct run_opts){.backend = b}, killed, &r);
		assert_int_equal(r.rep.ex.outcome, TRACER_SIGNALED);
		assert_int_equal(r.rep.ex.code, SIGUSR1);
		assert_true(WIFSIGNALED(r.wstatus));
		assert_int_equal(WTERMSIG(r.wstatus), SIGUSR1);

		char *missing[] = {"/nonexistent/program", NULL};
		run_traced(&(struct run_opts){.backend = b}, missing, &r);
		assert_int_equal(r.rep.ex.outcome, TRACER_EXEC_FAILED);
		assert_int_equal(r.rep.ex.code, ENOENT);
		assert_exited(&r, TRACER_EXIT_NOTFOUND);
	}
}

static void test_redirect_cat(void **state)
{
	(void)state;
	/* a real file next to the redirected one: CONTINUE must leave it alone */
	char real[PATH_MAX];
	snprintf(real, sizeof(real), "%s/real", tmp_dir);
	int fd = open(real, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "local\n", 6), 6);
	close(fd);
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *glibc_cat[] = {"/bin/cat", RPATH, real, NULL};
		run_traced(&(struct run_opts){.backend = b}, glibc_cat, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, CONTENT "local\n");
		assert_int_equal(r.rep.hits, 1);

		char *busybox_cat[] = {"/bin/busybox", "cat", RPATH, real, NULL};
		run_traced(&(struct run_opts){.backend = b}, busybox_cat, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, CONTENT "local\n");

		/* relative to the cwd and with dot-dot: resolved as the program would */
		char *relative[] = {"sh", "-c", "cd / && cat hermit-test-remote/x/../dir/file.txt",
				    NULL};
		run_traced(&(struct run_opts){.backend = b}, relative, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, CONTENT);

		char *flags[] = {self_exe, "--helper", "fds", RPATH, NULL};
		run_traced(&(struct run_opts){.backend = b}, flags, &r);
		if (!WIFEXITED(r.wstatus) || WEXITSTATUS(r.wstatus))
			print_message("%s", r.out);
		assert_exited(&r, 0);
	}
}

static void test_children_threads_exec(void **state)
{
	(void)state;
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *tree[] = {"sh", "-c",
				"cat " RPATH "; (cat " RPATH "); sh -c 'cat " RPATH "' & wait; "
				"busybox sh -c 'exec cat " RPATH "'",
				NULL};
		run_traced(&(struct run_opts){.backend = b}, tree, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, CONTENT CONTENT CONTENT CONTENT);
		assert_int_equal(r.rep.hits, 4);

		/* glibc 2.34+ creates threads with clone3 */
		char *threads[] = {self_exe, "--helper", "threads", RPATH, "16", NULL};
		run_traced(&(struct run_opts){.backend = b}, threads, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, "threads ok=16 bad=0\n");

		char *churn[] = {self_exe, "--helper", "churn", RPATH, NULL};
		run_traced(&(struct run_opts){.backend = b}, churn, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, "churn bad=0\n");

		char *vf[] = {self_exe, "--helper", "vfork", RPATH, NULL};
		run_traced(&(struct run_opts){.backend = b}, vf, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, CONTENT);
	}
}

static void test_io_uring_refused(void **state)
{
	(void)state;
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {self_exe, "--helper", "io-uring", NULL};
		run_traced(&(struct run_opts){.backend = b}, argv, &r);
		assert_exited(&r, 0);
	}
}

static void test_nested_listener_refused(void **state)
{
	(void)state;
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {self_exe, "--helper", "nested-listener", NULL};
		run_traced(&(struct run_opts){.backend = b}, argv, &r);
		if (!WIFEXITED(r.wstatus) || WEXITSTATUS(r.wstatus))
			print_message("%s", r.out);
		assert_exited(&r, 0);
	}
}

static void test_foreign_abi_killed(void **state)
{
	(void)state;
	/* without the tracer int 0x80 works (IA32 emulation); skip where it does not */
	char cmd[PATH_MAX + 32];
	snprintf(cmd, sizeof(cmd), "%s --helper int80 >/dev/null 2>&1", self_exe);
	if (system(cmd) != 0)
		skip();
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {self_exe, "--helper", "int80", NULL};
		run_traced(&(struct run_opts){.backend = b}, argv, &r);
		assert_int_equal(r.rep.ex.outcome, TRACER_SIGNALED);
		assert_int_equal(r.rep.ex.code, SIGSYS);
	}
}

static void test_handoff_with_sendmsg_intercepted(void **state)
{
	(void)state;
	/* the child hands the listener over with sendmsg after its filter is in place;
	 * intercepted, that would wait for a supervisor that has no listener yet */
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {"/usr/bin/python3", "-c",
				"import socket; a, b = socket.socketpair(); "
				"a.sendmsg([b'x']); print(b.recv(1).decode())",
				NULL};
		run_traced(&(struct run_opts){.backend = b, .intercept_sendmsg = true}, argv, &r);
		assert_exited(&r, 0);
		assert_string_equal(r.out, "x\n");
		assert_true(r.rep.hits >= 1); /* the program's own sendmsg was seen */
	}
}

static void test_sigterm_forwarded(void **state)
{
	(void)state;
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {"sh", "-c",
				"trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done",
				NULL};
		run_traced(&(struct run_opts){.backend = b, .term_tracer_after_line = 1}, argv, &r);
		assert_exited(&r, 42);
	}
}

static bool process_gone(pid_t pid)
{
	for (int i = 0; i < 500; i++) {
		char path[64], buf[256];
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		FILE *f = fopen(path, "re");
		if (!f)
			return true;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		char *rp = strrchr(buf, ')');
		if (rp && (rp[2] == 'Z' || rp[2] == 'X'))
			return true;
		usleep(10000);
	}
	return false;
}

static void test_tracer_death_kills_program(void **state)
{
	(void)state;
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {self_exe, "--helper", "pid-and-sleep", NULL};
		run_traced(&(struct run_opts){.backend = b, .kill_tracer_after_line = 1}, argv, &r);
		assert_true(WIFSIGNALED(r.wstatus));
		assert_int_equal(WTERMSIG(r.wstatus), SIGKILL);
		pid_t pid = atoi(r.out);
		assert_true(pid > 0);
		assert_true(process_gone(pid));

		/* the whole tree: a child and an orphan (reparented to the guard) die too */
		char *tree[] = {self_exe, "--helper", "tree-and-sleep", NULL};
		run_traced(&(struct run_opts){.backend = b, .kill_tracer_after_line = 1}, tree, &r);
		assert_true(WIFSIGNALED(r.wstatus));
		pid_t pids[3] = {0};
		assert_int_equal(sscanf(r.out, "%d %d %d", &pids[0], &pids[1], &pids[2]), 3);
		for (int i = 0; i < 3; i++) {
			assert_true(pids[i] > 0);
			if (!process_gone(pids[i]))
				fail_msg("%s: pid %d outlived trace-run", tracer_backend_name(b),
					 pids[i]);
		}
	}
}

static void test_unprivileged(void **state)
{
	(void)state;
	/* what nobody needs: this binary reachable, busybox, a writable /tmp */
	struct stat st;
	assert_int_equal(stat("/tmp", &st), 0);
	assert_true(st.st_mode & S_IWOTH);
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		char *argv[] = {"sh", "-c", "id -u; cat " RPATH "; busybox cat " RPATH "; exit 7",
				NULL};
		run_traced(&(struct run_opts){.backend = b, .as_nobody = true}, argv, &r);
		assert_exited(&r, 7);
		assert_string_equal(r.out, "65534\n" CONTENT CONTENT);

		char *threads[] = {self_exe, "--helper", "threads", RPATH, "8", NULL};
		run_traced(&(struct run_opts){.backend = b, .as_nobody = true}, threads, &r);
		assert_exited(&r, 0);
	}
}

static void test_go_preemption(void **state)
{
	(void)state;
	if (access(go_app, X_OK) != 0)
		fail_msg("%s missing: `make` builds tests/apps/*/main.go", go_app);
	static const struct run_opts variants[] = {
	    {.backend = TRACER_BACKEND_SECCOMP},
	    {.backend = TRACER_BACKEND_SECCOMP, .no_wait_killable = true},
	    {.backend = TRACER_BACKEND_PTRACE},
	};
	for (size_t v = 0; v < HM_ARRAY_SIZE(variants); v++) {
		enum tracer_backend b = variants[v].backend;
		struct run r;
		char iterations[16];
		snprintf(iterations, sizeof(iterations), "%d",
			 b == TRACER_BACKEND_PTRACE ? 4000 : 20000);
		char *argv[] = {go_app, RPATH, CONTENT, iterations, NULL};
		double t0 = now_ns();
		run_traced(&variants[v], argv, &r);
		r.out[strcspn(r.out, "\n")] = '\0';
		print_message("%s%s: %s; %.2f s, %lu intercepted, %lu fds, %lu abandoned\n",
			      tracer_backend_name(b),
			      variants[v].no_wait_killable ? " (no WAIT_KILLABLE_RECV)" : "", r.out,
			      (now_ns() - t0) / 1e9, r.rep.stats.calls, r.rep.stats.fds,
			      r.rep.stats.abandoned);
		assert_exited(&r, 0);
		int reads = -1, extra = -1;
		assert_int_equal(sscanf(r.out, "ok %d reads, %d extra fds open", &reads, &extra),
				 2);
		assert_int_equal(reads, atoi(iterations));
		/* the Go runtime keeps a few fds of its own (epoll, a pipe); a leak per
		 * interrupted open would show as hundreds */
		assert_true(extra >= 0 && extra < 8);
		assert_true(r.rep.stats.fds >= (unsigned long)reads);
	}
}

static void test_signal_storm(void **state)
{
	(void)state;
	static const struct run_opts variants[] = {
	    {.backend = TRACER_BACKEND_SECCOMP},
	    {.backend = TRACER_BACKEND_SECCOMP, .no_wait_killable = true},
	    {.backend = TRACER_BACKEND_PTRACE},
	};
	for (size_t v = 0; v < HM_ARRAY_SIZE(variants); v++) {
		struct run r;
		char *argv[] = {self_exe, "--helper", "signal-storm", RPATH, "5000", NULL};
		run_traced(&variants[v], argv, &r);
		r.out[strcspn(r.out, "\n")] = '\0';
		print_message("%s%s: %s; %lu intercepted, %lu abandoned\n",
			      tracer_backend_name(variants[v].backend),
			      variants[v].no_wait_killable ? " (no WAIT_KILLABLE_RECV)" : "", r.out,
			      r.rep.stats.calls, r.rep.stats.abandoned);
		assert_exited(&r, 0);
	}
}

static void test_overhead(void **state)
{
	(void)state;
	/* figures for the report; sanity only, no thresholds */
	const char *n = "20000";
	char *argv[] = {self_exe, "--helper", "bench", RPATH, (char *)n, NULL};
	char tmpfile[PATH_MAX];
	snprintf(tmpfile, sizeof(tmpfile), "%s/bench", tmp_dir);
	int fd = open(tmpfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, CONTENT, strlen(CONTENT)), (ssize_t)strlen(CONTENT));
	close(fd);

	/* native */
	char cmd[PATH_MAX * 3];
	snprintf(cmd, sizeof(cmd), "%s --helper bench %s %s", self_exe, tmpfile, n);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char line[256] = "";
	assert_non_null(fgets(line, sizeof(line), p));
	pclose(p);
	print_message("native:  %s", line);
	FOR_EACH_BACKEND(b)
	{
		struct run r;
		argv[3] = tmpfile; /* local file, getpgid intercepted */
		run_traced(&(struct run_opts){.backend = b, .intercept_getpgid = true}, argv, &r);
		assert_exited(&r, 0);
		r.out[strcspn(r.out, "\n")] = '\0';
		print_message("%-8s %s (open = local file, CONTINUE)\n", tracer_backend_name(b),
			      r.out);
		assert_non_null(strstr(r.out, "check 4242"));
		argv[3] = RPATH; /* remote file: the open is a memfd install */
		run_traced(&(struct run_opts){.backend = b}, argv, &r);
		assert_exited(&r, 0);
		r.out[strcspn(r.out, "\n")] = '\0';
		print_message("%-8s %s (open = redirected memfd)\n", tracer_backend_name(b), r.out);
	}
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "--helper"))
		return helper(argc - 2, argv + 2);
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
	if (n < 0)
		return 1;
	self_exe[n] = '\0';
	/* BUILD/tests/test_tracer -> BUILD/apps/preempt */
	snprintf(go_app, sizeof(go_app), "%s", self_exe);
	char *slash = strrchr(go_app, '/');
	if (slash)
		*slash = '\0';
	slash = strrchr(go_app, '/');
	if (slash)
		strcpy(slash, "/apps/preempt");
	hm_log_init("test_tracer", HM_LOG_WARN);
	/* in a SAN=1 build the helpers are sanitized too, and LeakSanitizer refuses to run
	 * in a ptrace'd process; this process read ASAN_OPTIONS at start-up already */
	const char *asan = getenv("ASAN_OPTIONS");
	char opts[512];
	snprintf(opts, sizeof(opts), "%s%sdetect_leaks=0", asan ? asan : "", asan ? ":" : "");
	setenv("ASAN_OPTIONS", opts, 1);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_filter_shape),
	    cmocka_unit_test(test_path_normalize),
	    cmocka_unit_test(test_probe),
	    cmocka_unit_test(test_new_in_two_steps),
	    cmocka_unit_test(test_exit_status),
	    cmocka_unit_test(test_redirect_cat),
	    cmocka_unit_test(test_children_threads_exec),
	    cmocka_unit_test(test_io_uring_refused),
	    cmocka_unit_test(test_nested_listener_refused),
	    cmocka_unit_test(test_foreign_abi_killed),
	    cmocka_unit_test(test_handoff_with_sendmsg_intercepted),
	    cmocka_unit_test(test_sigterm_forwarded),
	    cmocka_unit_test(test_tracer_death_kills_program),
	    cmocka_unit_test(test_unprivileged),
	    cmocka_unit_test(test_go_preemption),
	    cmocka_unit_test(test_signal_storm),
	    cmocka_unit_test(test_overhead),
	};
	if (!mkdtemp(tmp_dir))
		return 1;
	/* the unprivileged runs read files in there */
	chmod(tmp_dir, 0755);
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	struct hm_err err;
	hm_rm_rf(tmp_dir, &err);
	return r;
}
