/* runtime/seccomp.c: the default profile loaded in a forked child, which then tries the
 * refused syscalls (and harmless neighbours that must still work) and reports each
 * result as one errno per line on a pipe. The argument edge cases live here: the
 * 32-bit ioctl request, personality values next to the allowed ones, clone flags. */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>

#include <cmocka.h>

#include "runtime/internal.h"

/* the result of one syscall: 0 or its errno */
static int outcome(long rc)
{
	return rc < 0 ? errno : 0;
}

struct probe {
	const char *what;
	int expected; /* 0: allowed, else the errno of the refusal */
};

/* Run in the child under the profile; the order matches probes[] below. */
static void run_probes(int out)
{
	int results[21];
	int n = 0;
	hm_cleanup_close int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	char c = 'x';
	results[n++] = outcome(syscall(SYS_unshare, CLONE_NEWUSER));
	results[n++] = outcome(syscall(SYS_unshare, CLONE_NEWNS | CLONE_FILES));
	results[n++] = outcome(syscall(SYS_unshare, CLONE_FILES));
	results[n++] = outcome(syscall(SYS_ioctl, master, TIOCSTI, &c));
	results[n++] =
	    outcome(syscall(SYS_ioctl, master, (unsigned long)TIOCSTI | (1UL << 32), &c));
	/* on a pty the kernel itself answers ENOTTY: EPERM can only be the profile's */
	char subcode = 12;
	results[n++] = outcome(syscall(SYS_ioctl, master, TIOCLINUX, &subcode));
	struct winsize ws;
	results[n++] = outcome(syscall(SYS_ioctl, master, TIOCGWINSZ, &ws));
	results[n++] = outcome(syscall(SYS_personality, READ_IMPLIES_EXEC));
	results[n++] = outcome(syscall(SYS_personality, 1));
	results[n++] = outcome(syscall(SYS_personality, 0xfffffffeUL));
	results[n++] = outcome(syscall(SYS_personality, PER_LINUX32 | UNAME26));
	results[n++] = outcome(syscall(SYS_personality, 0xffffffffUL));
	results[n++] = outcome(syscall(SYS_personality, PER_LINUX));
	results[n++] = outcome(syscall(SYS_keyctl, 0, -3, 0));
	struct clone_args args = {.exit_signal = SIGCHLD};
	results[n++] = outcome(syscall(SYS_clone3, &args, sizeof(args)));
	results[n++] = outcome(syscall(SYS_io_uring_setup, 1, NULL));
	results[n++] = outcome(syscall(SYS_socket, AF_VSOCK, SOCK_STREAM, 0));
	results[n++] =
	    outcome(syscall(SYS_socket, (unsigned long)AF_VSOCK | (1UL << 32), SOCK_STREAM, 0));
	int pair[2];
	results[n++] = outcome(syscall(SYS_socketpair, AF_VSOCK, SOCK_STREAM, 0, pair));
	results[n++] = outcome(syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	results[n++] = outcome(syscall(SYS_getppid));
	if (write(out, results, sizeof(results)) != sizeof(results))
		_exit(3);
	_exit(0);
}

static const struct probe probes[21] = {
    {"unshare(CLONE_NEWUSER)", EPERM},
    {"unshare(CLONE_NEWNS|CLONE_FILES)", EPERM},
    {"unshare(CLONE_FILES)", 0},
    {"ioctl(TIOCSTI)", EPERM},
    {"ioctl(TIOCSTI | 1<<32)", EPERM},
    {"ioctl(TIOCLINUX)", EPERM},
    {"ioctl(TIOCGWINSZ)", 0},
    {"personality(READ_IMPLIES_EXEC)", EPERM},
    {"personality(1)", EPERM},
    {"personality(0xfffffffe)", EPERM},
    {"personality(PER_LINUX32|UNAME26)", 0},
    {"personality(query)", 0},
    {"personality(PER_LINUX)", 0},
    {"keyctl", EPERM},
    {"clone3", ENOSYS},
    {"io_uring_setup", ENOSYS},
    {"socket(AF_VSOCK)", EAFNOSUPPORT},
    {"socket(AF_VSOCK | 1<<32)", EAFNOSUPPORT},
    {"socketpair(AF_VSOCK)", EAFNOSUPPORT},
    {"socket(AF_UNIX)", 0},
    {"getppid", 0},
};

/* Fork, load the default profile, run probe (which writes len bytes of results on its
 * fd and exits); read the results. */
static void run_under_profile(void (*probe)(int out), void *results, size_t len)
{
	struct rt_seccomp_prog prog;
	struct hm_err err = {0};
	assert_int_equal(rt_seccomp_compile(&prog, &err), 0);
	assert_non_null(prog.insns);
	assert_true(prog.len > 0);
	int pipefd[2];
	assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pipefd[0]);
		struct hm_err child_err = {0};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
		    rt_seccomp_load(&prog, &child_err) < 0)
			_exit(2);
		probe(pipefd[1]);
	}
	close(pipefd[1]);
	ssize_t n = hm_read_all(pipefd[0], results, len);
	close(pipefd[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	/* a probe killed by the filter (wrong architecture) shows here */
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(n, (ssize_t)len);
	rt_seccomp_free(&prog);
	assert_null(prog.insns);
}

static void check_probes(const struct probe *expected, const int *results, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (results[i] != expected[i].expected)
			fail_msg("%s: expected %s, got %s", expected[i].what,
				 expected[i].expected ? strerror(expected[i].expected) : "success",
				 results[i] ? strerror(results[i]) : "success");
	}
}

static void test_default_profile(void **state)
{
	(void)state;
	int results[HM_ARRAY_SIZE(probes)];
	run_under_profile(run_probes, results, sizeof(results));
	check_probes(probes, results, HM_ARRAY_SIZE(probes));
}

#ifdef __x86_64__
/* The i386 ABI from a 64-bit process (int 0x80; 310 is its unshare): a filter that
 * only knew x86-64 numbers would not see this one. */
static long i386_unshare(unsigned long flags)
{
	long ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(310L), "b"(flags) : "memory");
	return ret;
}

static void run_i386_probes(int out)
{
	long rc[2] = {i386_unshare(CLONE_NEWUSER), i386_unshare(CLONE_FILES)};
	int results[2] = {rc[0] < 0 ? (int)-rc[0] : 0, rc[1] < 0 ? (int)-rc[1] : 0};
	if (write(out, results, sizeof(results)) != sizeof(results))
		_exit(3);
	_exit(0);
}

static void test_i386_abi_gets_the_rules(void **state)
{
	(void)state;
	static const struct probe i386_probes[] = {
	    {"i386 unshare(CLONE_NEWUSER)", EPERM},
	    {"i386 unshare(CLONE_FILES)", 0},
	};
	int results[HM_ARRAY_SIZE(i386_probes)];
	run_under_profile(run_i386_probes, results, sizeof(results));
	check_probes(i386_probes, results, HM_ARRAY_SIZE(i386_probes));
}
#endif

static void test_no_profile_loads_nothing(void **state)
{
	(void)state;
	struct rt_seccomp_prog none = {0};
	struct hm_err err = {0};
	/* no no_new_privs needed when there is nothing to load */
	assert_int_equal(rt_seccomp_load(&none, &err), 0);
	assert_int_equal(rt_seccomp_load(NULL, &err), 0);
}

/* A fresh directory for the cache, removed by the caller (hm_rm_rf). */
static void cache_dir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/hm-test-seccomp-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void assert_same_program(const struct rt_seccomp_prog *a, const struct rt_seccomp_prog *b)
{
	assert_int_equal(a->len, b->len);
	assert_memory_equal(a->insns, b->insns, a->len * sizeof(*a->insns));
}

/* The second start reads what the first one compiled: the same program, from the file. */
static void test_cache_roundtrip(void **state)
{
	(void)state;
	char dir[64], path[PATH_MAX];
	struct hm_err err = {0};
	cache_dir(dir, sizeof(dir));
	struct rt_seccomp_prog fresh = {0}, first = {0}, second = {0};
	assert_int_equal(rt_seccomp_compile(&fresh, &err), 0);
	assert_int_equal(rt_seccomp_compile_cached(&first, dir, &err), 0);
	assert_int_equal(rt_seccomp_cache_path(dir, path, sizeof(path), &err), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal((size_t)st.st_size, fresh.len * sizeof(*fresh.insns));
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(rt_seccomp_compile_cached(&second, dir, &err), 0);
	assert_same_program(&first, &fresh);
	assert_same_program(&second, &fresh);
	rt_seccomp_free(&fresh);
	rt_seccomp_free(&first);
	rt_seccomp_free(&second);
	assert_int_equal(hm_rm_rf(dir, &err), 0);
}

/* The attack: whoever can write the cache file swaps in an allow-everything filter
 * (one instruction, RET ALLOW). A file another user could have written — group/other
 * writable, owned by nobody, or a symlink to one — must not become the pod's profile. */
static void test_cache_refuses_foreign_file(void **state)
{
	(void)state;
	char dir[64], path[PATH_MAX], elsewhere[PATH_MAX + 16];
	struct hm_err err = {0};
	cache_dir(dir, sizeof(dir));
	assert_int_equal(rt_seccomp_cache_path(dir, path, sizeof(path), &err), 0);
	snprintf(elsewhere, sizeof(elsewhere), "%s/evil.bpf", dir);
	struct sock_filter allow_all = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct rt_seccomp_prog fresh = {0};
	assert_int_equal(rt_seccomp_compile(&fresh, &err), 0);
	for (int how = 0; how < 3; how++) {
		unlink(path);
		const char *file = how == 2 ? elsewhere : path;
		assert_int_equal(hm_create_file(file, &allow_all, sizeof(allow_all), 0644, &err),
				 0);
		if (how == 0)
			assert_int_equal(chmod(file, 0666), 0);
		else
			assert_int_equal(chown(file, 65534, 65534), 0);
		if (how == 2)
			assert_int_equal(symlink(elsewhere, path), 0);
		struct rt_seccomp_prog got = {0};
		assert_int_equal(rt_seccomp_compile_cached(&got, dir, &err), 0);
		if (got.len == 1)
			fail_msg("case %d: the planted allow-all filter was used", how);
		assert_same_program(&got, &fresh);
		rt_seccomp_free(&got);
		unlink(elsewhere);
	}
	rt_seccomp_free(&fresh);
	assert_int_equal(hm_rm_rf(dir, &err), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_default_profile),
#ifdef __x86_64__
	    cmocka_unit_test(test_i386_abi_gets_the_rules),
#endif
	    cmocka_unit_test(test_no_profile_loads_nothing),
	    cmocka_unit_test(test_cache_roundtrip),
	    cmocka_unit_test(test_cache_refuses_foreign_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
