#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "util/util.h"

static void test_err_set_appends_strerror(void **state)
{
	(void)state;
	struct hm_err err = {0};
	assert_int_equal(hm_err_set(&err, ENOENT, "open %s", "/x"), -1);
	assert_int_equal(err.code, ENOENT);
	assert_string_equal(err.msg, "open /x: No such file or directory");
	hm_err_prefix(&err, "rootfs");
	assert_string_equal(err.msg, "rootfs: open /x: No such file or directory");
}

static void test_err_prefix_truncates_safely(void **state)
{
	(void)state;
	struct hm_err err = {0};
	char big[3000];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	hm_err_set(&err, 0, "%s", big);
	hm_err_prefix(&err, "%s", big);
	assert_int_equal(strlen(err.msg), HM_ERR_MSG_MAX - 1);
}

static void test_parse_size(void **state)
{
	(void)state;
	uint64_t v;
	assert_int_equal(hm_parse_size("64M", &v), 0);
	assert_int_equal(v, 64ULL << 20);
	assert_int_equal(hm_parse_size("1g", &v), 0);
	assert_int_equal(v, 1ULL << 30);
	assert_int_equal(hm_parse_size("512KiB", &v), 0);
	assert_int_equal(v, 512ULL << 10);
	assert_int_equal(hm_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_true(hm_parse_size("-1", &v) < 0);
	assert_true(hm_parse_size("abc", &v) < 0);
	assert_true(hm_parse_size("12X", &v) < 0);
	assert_true(hm_parse_size("", &v) < 0);
	assert_true(hm_parse_size("99999999999999999999G", &v) < 0);
	assert_true(hm_parse_u64("12a", &v) < 0);
	assert_true(hm_parse_u64(" -5", &v) < 0);
	assert_true(hm_parse_size(" 5", &v) < 0);
	assert_int_equal(hm_parse_u64("42", &v), 0);
	assert_int_equal(v, 42);
}

static void test_files_and_rm_rf(void **state)
{
	(void)state;
	struct hm_err err = {0};
	char tmpl[] = "/tmp/hm-util-XXXXXX";
	assert_non_null(mkdtemp(tmpl));
	char path[4096];
	snprintf(path, sizeof(path), "%s/a/b/c", tmpl);
	assert_int_equal(hm_mkdir_p(path, 0755, &err), 0);
	snprintf(path, sizeof(path), "%s/a/b/c/f", tmpl);
	assert_int_equal(hm_create_file(path, "hello", 5, 0600, &err), 0);
	hm_cleanup_free char *data = NULL;
	size_t len = 0;
	assert_int_equal(hm_read_file(path, &data, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_string_equal(data, "hello");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(hm_rm_rf(tmpl, &err), 0);
	assert_int_equal(stat(tmpl, &st), -1);
	assert_int_equal(hm_rm_rf(tmpl, &err), 0); /* missing is success */
	assert_true(hm_read_file(path, (char **)&data, &len, &err) < 0);
	assert_int_equal(err.code, ENOENT);
}

static void test_read_fd_bounded(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "0123456789", 10), 10);
	close(p[1]);
	struct hm_err err = {0};
	char *out = NULL;
	size_t len = 0;
	assert_true(hm_read_fd(p[0], 0, 9, "pipe", &out, &len, &err) < 0);
	assert_int_equal(err.code, EFBIG);
	assert_null(out);
	close(p[0]);

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "0123456789", 10), 10);
	close(p[1]);
	assert_int_equal(hm_read_fd(p[0], 3, 10, "pipe", &out, &len, &err), 0);
	assert_int_equal(len, 10);
	assert_string_equal(out, "0123456789");
	free(out);
	close(p[0]);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void test_now_ms_advances(void **state)
{
	(void)state;
	int64_t t0 = hm_now_ms();
	sleep_ms(30);
	int64_t t1 = hm_now_ms();
	assert_true(t1 - t0 >= 30);
	assert_true(t1 - t0 < 5000);
	assert_int_equal(hm_deadline_in(-1), HM_NO_DEADLINE);
	assert_int_equal(hm_ms_until(HM_NO_DEADLINE), -1);
	assert_int_equal(hm_ms_until(t0), 0); /* passed */
	int left = hm_ms_until(hm_deadline_in(10000));
	assert_true(left > 9000 && left <= 10000);
}

static void test_poll_fd_times_out_then_sees_data(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	int64_t t0 = hm_now_ms();
	assert_int_equal(hm_poll_fd(p[0], POLLIN, t0 + 50), 0);
	assert_true(hm_now_ms() - t0 >= 50);
	/* a passed deadline still looks once */
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(hm_poll_fd(p[0], POLLIN, t0), POLLIN);
	assert_int_equal(hm_poll_fd(p[0], POLLIN, HM_NO_DEADLINE), POLLIN);
	close(p[1]);
	char c;
	assert_int_equal(read(p[0], &c, 1), 1);
	assert_true(hm_poll_fd(p[0], POLLIN, HM_NO_DEADLINE) & POLLHUP);
	close(p[0]);
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* a signal must neither end the wait early nor restart it with the whole timeout */
static void test_poll_fd_keeps_deadline_across_signals(void **state)
{
	(void)state;
	struct sigaction sa = {.sa_handler = on_alarm}, old;
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0); /* no SA_RESTART: poll sees EINTR */
	struct itimerval every_20ms = {.it_interval = {0, 20000}, .it_value = {0, 20000}};
	assert_int_equal(setitimer(ITIMER_REAL, &every_20ms, NULL), 0);
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	int64_t t0 = hm_now_ms();
	int n = hm_poll_fd(p[0], POLLIN, t0 + 200);
	int64_t waited = hm_now_ms() - t0;
	struct itimerval off = {0};
	setitimer(ITIMER_REAL, &off, NULL);
	sigaction(SIGALRM, &old, NULL);
	close(p[0]);
	close(p[1]);
	assert_int_equal(n, 0);
	assert_true(waited >= 200);
	assert_true(waited < 1000);
}

static int loopback_listener(int backlog, struct sockaddr_in *addr)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	*addr =
	    (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(l, (struct sockaddr *)addr, sizeof(*addr)), 0);
	socklen_t len = sizeof(*addr);
	assert_int_equal(getsockname(l, (struct sockaddr *)addr, &len), 0);
	if (backlog >= 0)
		assert_int_equal(listen(l, backlog), 0);
	return l;
}

static int nonblocking_socket(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	return fd;
}

static void test_connect_deadline_connects_and_refuses(void **state)
{
	(void)state;
	struct sockaddr_in addr;
	hm_cleanup_close int l = loopback_listener(8, &addr);
	hm_cleanup_close int fd = nonblocking_socket();
	struct hm_err err = {0};
	assert_int_equal(hm_connect_deadline(fd, (struct sockaddr *)&addr, sizeof(addr),
					     hm_deadline_in(2000), &err),
			 0);
	hm_cleanup_close int accepted = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(accepted >= 0);

	/* bound, not listening: nobody takes the connection */
	hm_cleanup_close int closed = loopback_listener(-1, &addr);
	hm_cleanup_close int refused = nonblocking_socket();
	assert_int_equal(hm_connect_deadline(refused, (struct sockaddr *)&addr, sizeof(addr),
					     hm_deadline_in(2000), &err),
			 -1);
	assert_int_equal(errno, ECONNREFUSED);
	assert_int_equal(err.code, ECONNREFUSED);
	assert_string_equal(err.msg, "connect: Connection refused");
	/* without an err the reason is in errno */
	hm_cleanup_close int again = nonblocking_socket();
	assert_int_equal(hm_connect_deadline(again, (struct sockaddr *)&addr, sizeof(addr),
					     hm_deadline_in(2000), NULL),
			 -1);
	assert_int_equal(errno, ECONNREFUSED);
}

/* A listener whose accept queue is full drops new SYNs: the connect stays pending until
 * our deadline, not the kernel's two minutes. */
static void test_connect_deadline_times_out(void **state)
{
	(void)state;
	struct sockaddr_in addr;
	hm_cleanup_close int l = loopback_listener(0, &addr);
	int fds[8];
	size_t used = 0;
	bool timed_out = false;
	struct hm_err err = {0};
	while (used < HM_ARRAY_SIZE(fds) && !timed_out) {
		int fd = fds[used++] = nonblocking_socket();
		int64_t t0 = hm_now_ms();
		if (hm_connect_deadline(fd, (struct sockaddr *)&addr, sizeof(addr), t0 + 100,
					&err) == 0)
			continue;
		int64_t waited = hm_now_ms() - t0;
		assert_int_equal(err.code, ETIMEDOUT);
		assert_int_equal(errno, ETIMEDOUT);
		assert_true(waited >= 100 && waited < 2000);
		timed_out = true;
	}
	for (size_t i = 0; i < used; i++)
		close(fds[i]);
	assert_true(timed_out);
}

static void test_cleanup_macros_release(void **state)
{
	(void)state;
	int raw_fd, file_fd;
	{
		hm_cleanup_close int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		hm_cleanup_fclose FILE *f = fopen("/dev/null", "re");
		hm_cleanup_free char *p = strdup("freed on exit (valgrind sees a leak otherwise)");
		assert_true(fd >= 0);
		assert_non_null(f);
		assert_non_null(p);
		raw_fd = fd;
		file_fd = fileno(f);
		errno = EXDEV;
	}
	assert_int_equal(errno, EXDEV); /* the cleanups keep errno */
	assert_int_equal(fcntl(raw_fd, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(fcntl(file_fd, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	/* a stolen fd survives its variable */
	int kept;
	{
		hm_cleanup_close int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		kept = hm_steal_fd(&fd);
	}
	assert_true(fcntl(kept, F_GETFD) >= 0);
	close(kept);
}

/* hm_proc_status: fields by key in file order or not, a missing key, a gone process */
static void test_proc_status(void **state)
{
	(void)state;
	struct hm_proc_field f[] = {{.key = "PPid"}, {.key = "Tgid"}, {.key = "Umask"}};
	assert_int_equal(hm_proc_status(getpid(), f, HM_ARRAY_SIZE(f)), 0);
	assert_int_equal(atoi(f[0].value), (int)getppid());
	assert_int_equal(atoi(f[1].value), (int)getpid());
	mode_t old = umask(027);
	struct hm_proc_field m = {.key = "Umask"};
	assert_int_equal(hm_proc_status(getpid(), &m, 1), 0);
	umask(old);
	assert_string_equal(m.value, "0027");

	struct hm_proc_field missing[] = {{.key = "Tgid"}, {.key = "NoSuchField"}};
	assert_int_equal(hm_proc_status(getpid(), missing, 2), -1);
	assert_int_equal(errno, ENOENT);
	assert_true(missing[0].found);
	assert_false(missing[1].found);

	pid_t child = fork();
	if (child == 0)
		_exit(0);
	assert_int_equal(waitpid(child, NULL, 0), child);
	struct hm_proc_field gone = {.key = "Tgid"};
	assert_int_equal(hm_proc_status(child, &gone, 1), -1);
	assert_int_equal(errno, ESRCH);
	assert_false(gone.found);
}

/* An agent's error or a pod's name with escape sequences, logged: the terminal gets
 * them as text (\xNN), and a newline cannot start a forged line. */
static void test_log_escapes_control_characters(void **state)
{
	(void)state;
	char out[256];
	assert_string_equal(hm_printable("a\x1b]0;x\x07"
					 "b\tc\nd\x7f"
					 "\xc2\x9b"
					 "6n é",
					 out, sizeof(out)),
			    "a\\x1b]0;x\\x07b\tc\\x0ad\\x7f\\xc2\\x9b6n é");
	/* cut at a whole character, always terminated */
	assert_string_equal(hm_printable("ab\x1b", out, 6), "ab");
	assert_string_equal(hm_printable("abc", out, 1), "");

	int p[2];
	assert_int_equal(pipe(p), 0);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	hm_log_init("test", HM_LOG_INFO);
	hm_warn("agent says: %s", "\x1b[2J\x1b]2;owned\x07\nfake: line");
	fflush(stderr);
	hm_cli_fail("test", 1, "pod %s", "web\x1b[31m");
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(p[1]);
	char buf[1024];
	ssize_t n = read(p[0], buf, sizeof(buf) - 1);
	close(p[0]);
	assert_true(n > 0);
	buf[n] = '\0';
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] != '\n')
			assert_false((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f);
	assert_non_null(strstr(buf, "agent says: \\x1b[2J\\x1b]2;owned\\x07\\x0afake: line\n"));
	assert_non_null(strstr(buf, "test: pod web\\x1b[31m\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_err_set_appends_strerror),
	    cmocka_unit_test(test_err_prefix_truncates_safely),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_proc_status),
	    cmocka_unit_test(test_files_and_rm_rf),
	    cmocka_unit_test(test_read_fd_bounded),
	    cmocka_unit_test(test_now_ms_advances),
	    cmocka_unit_test(test_poll_fd_times_out_then_sees_data),
	    cmocka_unit_test(test_poll_fd_keeps_deadline_across_signals),
	    cmocka_unit_test(test_connect_deadline_connects_and_refuses),
	    cmocka_unit_test(test_connect_deadline_times_out),
	    cmocka_unit_test(test_cleanup_macros_release),
	    cmocka_unit_test(test_log_escapes_control_characters),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
