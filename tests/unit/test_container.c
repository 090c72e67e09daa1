/* runtime/container.c, mounts.c, init.c and exec.c against real namespaces (needs root):
 * pods started from a busybox rootfs built in a temp dir, without cgroups unless a test
 * says otherwise. Each pod's stdout is a pipe the test reads. */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "runtime/internal.h"

static char g_root[PATH_MAX];	  /* the pod's rootfs */
static char g_host_dir[PATH_MAX]; /* host-side files bind-mounted into pods */
static char g_hosts_file[PATH_MAX + 16];

static const char *const applets[] = {"sh",   "ls",    "cat",  "echo", "hostname",
				      "true", "sleep", "kill", "grep", "wc",
				      "pwd",  "ps",    "env",  "tr",   "touch"};

static void write_file(const char *path, const char *text, mode_t mode)
{
	struct hm_err err;
	if (hm_create_file(path, text, strlen(text), mode, &err) < 0)
		fail_msg("%s", err.msg);
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
	char *data = NULL;
	size_t len = 0;
	struct hm_err err;
	if (hm_read_file(from, &data, &len, &err) < 0 ||
	    hm_create_file(to, data, len, mode, &err) < 0)
		fail_msg("%s", err.msg);
	free(data);
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(g_root, sizeof(g_root), "/tmp/hm-test-container-XXXXXX");
	snprintf(g_host_dir, sizeof(g_host_dir), "/tmp/hm-test-container-host-XXXXXX");
	if (!mkdtemp(g_root) || !mkdtemp(g_host_dir))
		return -1;
	const char *dirs[] = {"bin", "etc", "proc", "sys", "dev", "tmp"};
	char path[PATH_MAX + 32];
	for (size_t i = 0; i < HM_ARRAY_SIZE(dirs); i++) {
		snprintf(path, sizeof(path), "%s/%s", g_root, dirs[i]);
		if (mkdir(path, 0755) < 0)
			return -1;
	}
	snprintf(path, sizeof(path), "%s/bin/busybox", g_root);
	copy_file("/bin/busybox", path, 0755);
	for (size_t i = 0; i < HM_ARRAY_SIZE(applets); i++) {
		snprintf(path, sizeof(path), "%s/bin/%s", g_root, applets[i]);
		if (symlink("busybox", path) < 0)
			return -1;
	}
	snprintf(path, sizeof(path), "%s/bin/not-executable", g_root);
	write_file(path, "#!/bin/sh\necho should not run\n", 0644);
	snprintf(path, sizeof(path), "%s/etc/os-release", g_root);
	write_file(path, "NAME=\"hermit test rootfs\"\n", 0644);
	snprintf(g_hosts_file, sizeof(g_hosts_file), "%s/hosts", g_host_dir);
	write_file(g_hosts_file, "10.213.9.9 hermit-test-host\n", 0644);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	struct hm_err err;
	if (hm_rm_rf(g_root, &err) < 0 || hm_rm_rf(g_host_dir, &err) < 0)
		print_error("teardown: %s\n", err.msg);
	return 0;
}

static char *g_argv_buf[16];
static char *g_env[] = {"PATH=/bin", "HERMIT_TEST=1", NULL};

static struct rt_spec make_spec(const char *const *argv)
{
	size_t n = 0;
	for (; argv[n] && n + 1 < HM_ARRAY_SIZE(g_argv_buf); n++)
		g_argv_buf[n] = (char *)argv[n];
	g_argv_buf[n] = NULL;
	struct rt_spec spec = {
	    .name = "hm-unit",
	    .rootfs = g_root,
	    .hostname = "hm-unit-host",
	    .argv = g_argv_buf,
	    .env = g_env,
	};
	return spec;
}

static const struct rt_cgroup no_cgroup = {.v2_fd = -1};

/* Point our stdout at a new pipe so the pod process created next inherits it as its
 * stdout; returns the read end (undo with stdout_restore). */
static int stdout_to_pipe(int *saved)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(stdout);
	*saved = dup(STDOUT_FILENO);
	assert_true(*saved >= 0);
	assert_int_equal(dup2(p[1], STDOUT_FILENO), STDOUT_FILENO);
	close(p[1]);
	return p[0];
}

static void stdout_restore(int saved)
{
	dup2(saved, STDOUT_FILENO);
	close(saved);
}

static void read_all_into(int fd, char *out, size_t outlen)
{
	ssize_t n = hm_read_all(fd, out, outlen - 1);
	out[n > 0 ? n : 0] = '\0';
	close(fd);
}

struct pod_result {
	int start_rc;
	int start_code;
	char start_msg[HM_ERR_MSG_MAX];
	int status; /* waitpid status */
	char out[8192];
};

/* Spawn, start, collect stdout, reap. */
static void run_pod(const struct rt_spec *spec, const struct rt_cgroup *cg, struct pod_result *r)
{
	memset(r, 0, sizeof(*r));
	struct rt_container c;
	struct hm_err err = {0};
	int saved;
	int out = stdout_to_pipe(&saved);
	int rc = rt_container_spawn(spec, cg ? cg : &no_cgroup, &c, &err);
	/* our own stdout write end must be gone or the read below never sees EOF */
	stdout_restore(saved);
	if (rc < 0) {
		close(out);
		fail_msg("spawn: %s", err.msg);
	}
	r->start_rc = rt_container_start(&c, &r->start_code, &err);
	if (r->start_rc < 0)
		snprintf(r->start_msg, sizeof(r->start_msg), "%s", err.msg);
	read_all_into(out, r->out, sizeof(r->out));
	assert_int_equal(waitpid(c.pid, &r->status, 0), c.pid);
	rt_container_release(&c);
}

static int exit_code(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void assert_ran_ok(const struct pod_result *r)
{
	if (r->start_rc < 0)
		fail_msg("start: %s", r->start_msg);
	if (exit_code(r->status) != 0)
		fail_msg("pod exited %d, output: %s", exit_code(r->status), r->out);
}

static void test_pid1_hostname_rootfs(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){
	    "sh", "-c",
	    "echo pid=$$; echo host=$(hostname); cat /etc/os-release; echo env=$HERMIT_TEST",
	    NULL});
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_ran_ok(&r);
	assert_non_null(strstr(r.out, "pid=1\n"));
	assert_non_null(strstr(r.out, "host=hm-unit-host\n"));
	assert_non_null(strstr(r.out, "NAME=\"hermit test rootfs\"\n"));
	assert_non_null(strstr(r.out, "env=1\n"));
	char *host_release = NULL;
	struct hm_err err;
	if (hm_read_file("/etc/os-release", &host_release, NULL, &err) == 0) {
		host_release[strcspn(host_release, "\n")] = '\0';
		assert_null(strstr(r.out, host_release));
		free(host_release);
	}
	/* the host's hostname is untouched */
	char host[256];
	gethostname(host, sizeof(host));
	assert_string_not_equal(host, "hm-unit-host");
}

static void test_not_found_is_127(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"no-such-command", NULL});
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_int_equal(r.start_rc, -1);
	assert_int_equal(r.start_code, RT_EXIT_NOTFOUND);
	assert_string_equal(r.start_msg, "exec 'no-such-command': No such file or directory");
	assert_int_equal(exit_code(r.status), RT_EXIT_NOTFOUND);
}

static void test_not_executable_is_126(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"/bin/not-executable", NULL});
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_int_equal(r.start_rc, -1);
	assert_int_equal(r.start_code, RT_EXIT_NOEXEC);
	assert_string_equal(r.start_msg, "exec '/bin/not-executable': Permission denied");
	assert_int_equal(exit_code(r.status), RT_EXIT_NOEXEC);
}

static void test_setup_failure_is_125(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"true", NULL});
	spec.workdir = "/no/such/dir";
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_int_equal(r.start_rc, -1);
	assert_int_equal(r.start_code, RT_EXIT_RUNTIME);
	assert_string_equal(r.start_msg, "workdir /no/such/dir: No such file or directory");
	assert_int_equal(exit_code(r.status), RT_EXIT_RUNTIME);
}

static void test_workdir(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"pwd", NULL});
	spec.workdir = "/tmp";
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_ran_ok(&r);
	assert_string_equal(r.out, "/tmp\n");
}

/* An fd the runtime holds without O_CLOEXEC must not reach the pod either. */
static void test_no_fd_leak(void **state)
{
	(void)state;
	int leaky = open("/etc/passwd", O_RDONLY); /* deliberately inheritable */
	assert_true(leaky > 2);
	struct rt_spec spec = make_spec((const char *const[]){"ls", "/proc/self/fd", NULL});
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	close(leaky);
	assert_ran_ok(&r);
	/* 0-2 and ls's own directory fd, which it opens after exec */
	assert_string_equal(r.out, "0\n1\n2\n3\n");

	/* and PID 1's (the shell's) fds seen from its child; "; true" keeps busybox sh from
	 * exec'ing ls in its own place */
	spec = make_spec((const char *const[]){"sh", "-c", "ls /proc/1/fd; true", NULL});
	run_pod(&spec, NULL, &r);
	assert_ran_ok(&r);
	assert_string_equal(r.out, "0\n1\n2\n");
}

static void test_dev_and_masks(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){
	    "sh", "-c",
	    "ls /dev | tr '\\n' ' '; echo;"
	    "echo x > /dev/null && echo null-ok;"
	    "echo timer_list=$(cat /proc/timer_list | wc -c);"
	    "echo firmware=$(ls /sys/firmware | wc -l);"
	    "(echo hacked > /proc/sys/kernel/hostname) 2>/dev/null || echo proc-sys-ro;"
	    "(echo > /proc/sysrq-trigger) 2>/dev/null || echo sysrq-ro;"
	    "(touch /sys/x) 2>/dev/null || echo sys-ro;"
	    "grep -E '^(CapInh|CapBnd|CapEff|CapAmb|NoNewPrivs)' /proc/self/status",
	    NULL});
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_ran_ok(&r);
	/* exactly the standard set, nothing of the rootfs's /dev */
	if (strncmp(r.out,
		    "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom "
		    "zero \n",
		    strlen("fd full mqueue null ptmx pts random shm stderr stdin stdout tty "
			   "urandom zero \n")))
		fail_msg("/dev is not the standard set: %s", r.out);
	assert_non_null(strstr(r.out, "null-ok\n"));
	/* masked: a file and a directory, where this kernel has them */
	if (access("/proc/timer_list", F_OK) == 0)
		assert_non_null(strstr(r.out, "timer_list=0\n"));
	assert_non_null(strstr(r.out, "firmware=0\n"));
	assert_non_null(strstr(r.out, "proc-sys-ro\n"));
	assert_non_null(strstr(r.out, "sysrq-ro\n"));
	assert_non_null(strstr(r.out, "sys-ro\n"));
	/* docker's default capability set without CAP_MKNOD, nothing to gain through exec */
	assert_non_null(strstr(r.out, "CapEff:\t00000000a00425fb\n"));
	assert_non_null(strstr(r.out, "CapBnd:\t00000000a00425fb\n"));
	/* nothing inheritable or ambient (moby CVE-2022-24769) */
	assert_non_null(strstr(r.out, "CapInh:\t0000000000000000\n"));
	assert_non_null(strstr(r.out, "CapAmb:\t0000000000000000\n"));
	assert_non_null(strstr(r.out, "NoNewPrivs:\t1\n"));
}

static void test_host_files_bound(void **state)
{
	(void)state;
	char rootfs_hosts[PATH_MAX + 32];
	snprintf(rootfs_hosts, sizeof(rootfs_hosts), "%s/etc/hosts", g_root);
	unlink(rootfs_hosts);
	struct rt_spec spec = make_spec((const char *const[]){"cat", "/etc/hosts", NULL});
	spec.hosts_file = g_hosts_file;
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_ran_ok(&r);
	assert_string_equal(r.out, "10.213.9.9 hermit-test-host\n");
	/* the shared rootfs only got an empty mount point */
	struct stat st;
	assert_int_equal(stat(rootfs_hosts, &st), 0);
	assert_int_equal(st.st_size, 0);
}

static void test_init_runs_command(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){
	    "sh", "-c", "echo pid=$$; cat /proc/1/comm; sleep 0 & wait; exit 7", NULL});
	spec.init = true;
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_int_equal(r.start_rc, 0);
	assert_int_equal(exit_code(r.status), 7);
	assert_non_null(strstr(r.out, "pid=2\n"));
	assert_non_null(strstr(r.out, "hermit-init\n"));
}

static void test_init_not_found_is_127(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"no-such-command", NULL});
	spec.init = true;
	struct pod_result r;
	run_pod(&spec, NULL, &r);
	assert_int_equal(r.start_rc, -1);
	assert_int_equal(r.start_code, RT_EXIT_NOTFOUND);
	assert_string_equal(r.start_msg, "exec 'no-such-command': No such file or directory");
	assert_int_equal(exit_code(r.status), RT_EXIT_NOTFOUND);

	spec = make_spec((const char *const[]){"/bin/not-executable", NULL});
	spec.init = true;
	run_pod(&spec, NULL, &r);
	assert_int_equal(r.start_code, RT_EXIT_NOEXEC);
	assert_int_equal(exit_code(r.status), RT_EXIT_NOEXEC);
}

/* SIGTERM to the pod's init reaches the command, whose default action ends it. */
static void test_init_forwards_signals(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"sleep", "30", NULL});
	spec.init = true;
	struct rt_container c;
	struct hm_err err = {0};
	assert_int_equal(rt_container_spawn(&spec, &no_cgroup, &c, &err), 0);
	int code = -1;
	if (rt_container_start(&c, &code, &err) < 0)
		fail_msg("start: %s", err.msg);
	/* wait until sleep runs, i.e. init has its child */
	struct timespec tick = {0, 10 * 1000 * 1000};
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)c.pid, (int)c.pid);
	for (int i = 0; i < 200; i++) {
		char *kids = NULL;
		if (hm_read_file(path, &kids, NULL, &err) == 0 && kids[0]) {
			free(kids);
			break;
		}
		free(kids);
		nanosleep(&tick, NULL);
	}
	time_t t0 = time(NULL);
	assert_int_equal(kill(c.pid, SIGTERM), 0);
	int status;
	assert_int_equal(waitpid(c.pid, &status, 0), c.pid);
	rt_container_release(&c);
	assert_true(time(NULL) - t0 < 10);
	assert_int_equal(exit_code(status), 128 + SIGTERM);
}

/* A pod released before start never runs its command. */
static void test_release_before_start(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"true", NULL});
	struct rt_container c;
	struct hm_err err = {0};
	assert_int_equal(rt_container_spawn(&spec, &no_cgroup, &c, &err), 0);
	pid_t pid = c.pid;
	rt_container_release(&c);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(exit_code(status), RT_EXIT_RUNTIME);
	/* and a start after the child is gone is an error, not SIGPIPE */
	assert_int_equal(rt_container_spawn(&spec, &no_cgroup, &c, &err), 0);
	kill(c.pid, SIGKILL);
	waitpid(c.pid, NULL, 0);
	int code = 0;
	assert_int_equal(rt_container_start(&c, &code, &err), -1);
	assert_int_equal(code, RT_EXIT_RUNTIME);
	rt_container_release(&c);
}

/* `trace-pod exec` into a running pod: same hostname, rootfs and pid namespace. */
static void test_pod_exec(void **state)
{
	(void)state;
	struct rt_spec spec = make_spec((const char *const[]){"sleep", "30", NULL});
	struct rt_container c;
	struct hm_err err = {0};
	assert_int_equal(rt_container_spawn(&spec, &no_cgroup, &c, &err), 0);
	int code;
	if (rt_container_start(&c, &code, &err) < 0)
		fail_msg("start: %s", err.msg);

	/* no state dir for this name: no cgroups to join, no monitor to check */
	struct rt_pod_state st = {.name = "hm-unit-exec-nostate", .pid = c.pid};
	char *argv[] = {
	    "sh", "-c",
	    "echo host=$(hostname); cat /etc/os-release; ps -o pid,comm | grep -c sleep;"
	    "grep -E '^(CapInh|CapBnd|NoNewPrivs)' /proc/self/status; echo fds=$(ls /proc/self/fd "
	    "| wc "
	    "-l);"
	    "exit 3",
	    NULL};
	int leaky = open("/etc/passwd", O_RDONLY); /* deliberately inheritable */
	int saved;
	int out = stdout_to_pipe(&saved);
	int rc = rt_pod_exec(&st, argv, false, &err);
	stdout_restore(saved);
	close(leaky);
	char buf[4096];
	read_all_into(out, buf, sizeof(buf));
	char *missing[] = {"no-such-command", NULL};
	struct hm_err err2 = {0};
	int rc_missing = rt_pod_exec(&st, missing, false, &err2);

	kill(c.pid, SIGKILL);
	waitpid(c.pid, NULL, 0);
	rt_container_release(&c);

	if (rc < 0)
		fail_msg("exec: %s", err.msg);
	assert_int_equal(rc, 3);
	assert_string_equal(err.msg, "");
	assert_non_null(strstr(buf, "host=hm-unit-host\n"));
	assert_non_null(strstr(buf, "NAME=\"hermit test rootfs\"\n"));
	/* ps sees the pod's PID 1 (sleep), so we are in its pid namespace */
	assert_non_null(strstr(buf, "\n1\n"));
	assert_non_null(strstr(buf, "CapBnd:\t00000000a00425fb\n"));
	assert_non_null(strstr(buf, "CapInh:\t0000000000000000\n"));
	assert_non_null(strstr(buf, "NoNewPrivs:\t1\n"));
	/* 0-2 and ls's directory */
	assert_non_null(strstr(buf, "fds=4\n"));
	assert_int_equal(rc_missing, RT_EXIT_NOTFOUND);
	assert_string_equal(err2.msg, "exec 'no-such-command': No such file or directory");

	/* a pod that is gone */
	struct hm_err err3 = {0};
	assert_true(rt_pod_exec(&st, argv, false, &err3) < 0);
	assert_non_null(strstr(err3.msg, "not running"));
}

/* ---- cgroup v2 placement and the clone() fallback ---- */

static char g_cg_dir[PATH_MAX];

static bool make_v2_cgroup(struct rt_cgroup *cg)
{
	memset(cg, 0, sizeof(*cg));
	cg->v2_fd = -1;
	const char *roots[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(roots); i++) {
		char probe[PATH_MAX];
		snprintf(probe, sizeof(probe), "%s/cgroup.procs", roots[i]);
		if (access(probe, F_OK) < 0)
			continue;
		snprintf(g_cg_dir, sizeof(g_cg_dir), "%s/hm-test-container-%d", roots[i],
			 (int)getpid());
		if (mkdir(g_cg_dir, 0755) < 0)
			return false;
		snprintf(cg->v2_path, sizeof(cg->v2_path), "%s", g_cg_dir);
		cg->v2_fd = open(g_cg_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
		return cg->v2_fd >= 0;
	}
	return false;
}

static void remove_v2_cgroup(struct rt_cgroup *cg)
{
	hm_closep(&cg->v2_fd);
	rmdir(g_cg_dir);
}

/* Spawn into cg and check placement at clone time; exits 0 when all is well (runs in
 * a forked process for the fallback variant). */
static int spawn_into_cgroup_checks(struct rt_cgroup *cg)
{
	struct rt_spec spec = make_spec((const char *const[]){"cat", "/proc/self/cgroup", NULL});
	struct rt_container c;
	struct hm_err err = {0};
	int saved;
	int out = stdout_to_pipe(&saved);
	int rc = rt_container_spawn(&spec, cg, &c, &err);
	stdout_restore(saved);
	if (rc < 0) {
		fprintf(stderr, "spawn: %s\n", err.msg);
		return 1;
	}
	/* before start: the child already is in the cgroup */
	char procs[PATH_MAX + 16], *text = NULL, pid[32];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", g_cg_dir);
	snprintf(pid, sizeof(pid), "%d\n", (int)c.pid);
	bool placed = hm_read_file(procs, &text, NULL, &err) == 0 && !strcmp(text, pid);
	free(text);
	int code;
	rc = rt_container_start(&c, &code, &err);
	char buf[4096];
	read_all_into(out, buf, sizeof(buf));
	int status;
	waitpid(c.pid, &status, 0);
	rt_container_release(&c);
	if (!placed || rc < 0 || status != 0) {
		fprintf(stderr, "placed=%d rc=%d status=%d %s\n", placed, rc, status, err.msg);
		return 1;
	}
	/* the cgroup namespace is rooted at the pod's cgroup */
	if (!strstr(buf, "0::/\n")) {
		fprintf(stderr, "pod's cgroup view: %s\n", buf);
		return 1;
	}
	return 0;
}

static void test_clone_into_cgroup(void **state)
{
	(void)state;
	struct rt_cgroup cg;
	if (!make_v2_cgroup(&cg))
		skip();
	int rc = spawn_into_cgroup_checks(&cg);
	remove_v2_cgroup(&cg);
	assert_int_equal(rc, 0);
}

/* clone3 answering ENOSYS (a seccomp filter in a forked process) takes the clone()
 * path; the parent then writes the pid into cgroup.procs itself. */
static void test_clone_fallback(void **state)
{
	(void)state;
	struct rt_cgroup cg;
	if (!make_v2_cgroup(&cg))
		skip();
	fflush(stdout);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_filter filter[] = {
		    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = HM_ARRAY_SIZE(filter), .filter = filter};
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
			_exit(2);
		if (syscall(SYS_clone3, NULL, 0) != -1 || errno != ENOSYS)
			_exit(3);
		_exit(spawn_into_cgroup_checks(&cg));
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	remove_v2_cgroup(&cg);
	assert_int_equal(exit_code(status), 0);
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_container needs root\n");
		return 0;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pid1_hostname_rootfs),
	    cmocka_unit_test(test_not_found_is_127),
	    cmocka_unit_test(test_not_executable_is_126),
	    cmocka_unit_test(test_setup_failure_is_125),
	    cmocka_unit_test(test_workdir),
	    cmocka_unit_test(test_no_fd_leak),
	    cmocka_unit_test(test_dev_and_masks),
	    cmocka_unit_test(test_host_files_bound),
	    cmocka_unit_test(test_init_runs_command),
	    cmocka_unit_test(test_init_not_found_is_127),
	    cmocka_unit_test(test_init_forwards_signals),
	    cmocka_unit_test(test_release_before_start),
	    cmocka_unit_test(test_pod_exec),
	    cmocka_unit_test(test_clone_into_cgroup),
	    cmocka_unit_test(test_clone_fallback),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
