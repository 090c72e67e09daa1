/* The pod device policy (runtime/devices.c, bpf/devices.bpf.c, loader/cgroup_device.c)
 * against real cgroups: a child with every capability is put into ONLY the pod's v1
 * devices cgroup, or ONLY its v2 cgroup, and tries what a pod's root would: mknod of a
 * host device, opening a node of one made beforehand, and the standard nodes. Each
 * path must hold on its own, because a host may have only one of them. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "runtime/internal.h"

static struct rt_cgroup g_cg;
static char g_name[64];
static char g_dir[PATH_MAX]; /* scratch directory for device nodes */

/* what the child saw: 0 or the errno of each attempt */
struct attempts {
	int mknod_block; /* b 7:0, a loop device */
	int mknod_char;	 /* c 1:11, /dev/kmsg */
	int mknod_null;	 /* c 1:3, on the allow-list */
	int open_host;	 /* a c 1:11 node made outside the policy */
	int open_null;	 /* a c 1:3 node made outside the policy */
	int open_pts;	 /* a c 136:0 node: every pts is allowed (ENXIO/EIO past the policy) */
	int open_made;	 /* the c 1:11 node the child made, when it could */
};

static int setup(void **state)
{
	(void)state;
	static int seq;
	memset(&g_cg, 0, sizeof(g_cg));
	g_cg.v2_fd = -1;
	snprintf(g_name, sizeof(g_name), "test-dev-%d-%d", (int)getpid(), ++seq);
	snprintf(g_dir, sizeof(g_dir), "/tmp/hm-test-devices-XXXXXX");
	assert_non_null(mkdtemp(g_dir));
	return 0;
}

static void remove_in_dir(const char *name)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", g_dir, name);
	unlink(path);
}

static int teardown(void **state)
{
	(void)state;
	struct hm_err err = {0};
	if (rt_cgroup_destroy(&g_cg, &err) < 0)
		print_error("teardown: %s\n", err.msg);
	const char *names[] = {"host", "null", "pts", "made-b", "made-c", "made-null"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(names); i++)
		remove_in_dir(names[i]);
	rmdir(g_dir);
	return 0;
}

static void make_node(const char *name, mode_t type, unsigned major, unsigned minor)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", g_dir, name);
	if (mknod(path, type | 0600, makedev(major, minor)) < 0)
		fail_msg("mknod %s: %s", path, strerror(errno));
}

static int try_mknod(const char *name, mode_t type, unsigned major, unsigned minor)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", g_dir, name);
	return mknod(path, type | 0600, makedev(major, minor)) < 0 ? errno : 0;
}

static int try_open(const char *name, int flags)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", g_dir, name);
	int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

/* Fork a child, move it into the one cgroup dir given (cgroup.procs), let it try. */
static struct attempts attempt_in(const char *cgroup_dir)
{
	int go[2], report[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(report, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char c;
		close(go[1]);
		close(report[0]);
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		struct attempts a = {
		    .mknod_block = try_mknod("made-b", S_IFBLK, 7, 0),
		    .mknod_char = try_mknod("made-c", S_IFCHR, 1, 11),
		    .mknod_null = try_mknod("made-null", S_IFCHR, 1, 3),
		    .open_host = try_open("host", O_RDONLY),
		    .open_null = try_open("null", O_RDWR),
		    .open_pts = try_open("pts", O_RDWR),
		    .open_made = -1,
		};
		if (a.mknod_char == 0)
			a.open_made = try_open("made-c", O_RDONLY);
		_exit(write(report[1], &a, sizeof(a)) == sizeof(a) ? 0 : 3);
	}
	close(go[0]);
	close(report[1]);
	char procs[PATH_MAX + 32], value[32];
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cgroup_dir);
	snprintf(value, sizeof(value), "%d", (int)pid);
	struct hm_err err = {0};
	int moved = hm_write_file(procs, value, &err);
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	struct attempts a;
	memset(&a, 0xff, sizeof(a));
	ssize_t n = hm_read_all(report[0], &a, sizeof(a));
	close(report[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (moved < 0)
		fail_msg("move the child: %s", err.msg);
	assert_int_equal(n, sizeof(a));
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return a;
}

/* The nodes the child opens, made here, outside any policy; the host node must open
 * here, or the EPERM seen in the child would prove nothing. */
static void prepare_nodes(void)
{
	make_node("host", S_IFCHR, 1, 11);
	make_node("null", S_IFCHR, 1, 3);
	make_node("pts", S_IFCHR, 136, 0);
	assert_int_equal(try_open("host", O_RDONLY), 0);
	assert_int_equal(try_open("null", O_RDWR), 0);
}

static const char *v1_devices_dir(const struct rt_cgroup *cg)
{
	for (int i = 0; i < cg->n_v1; i++)
		if (strstr(cg->v1_paths[i], "/devices/"))
			return cg->v1_paths[i];
	return NULL;
}

static void create_pod_cgroup(bool allow_mknod)
{
	struct hm_err err = {0};
	struct rt_limits lim = {.allow_mknod = allow_mknod};
	if (rt_cgroup_create(g_name, &lim, &g_cg, &err) < 0)
		fail_msg("create: %s", err.msg);
	prepare_nodes();
}

static void assert_default_policy(const struct attempts *a)
{
	assert_int_equal(a->mknod_block, EPERM);
	assert_int_equal(a->mknod_char, EPERM);
	assert_int_equal(a->mknod_null, 0);
	assert_int_equal(a->open_host, EPERM);
	assert_int_equal(a->open_null, 0);
	/* the policy let it through; there is simply no pts 0 in this devpts */
	assert_int_not_equal(a->open_pts, EPERM);
}

static void assert_mknod_policy(const struct attempts *a)
{
	assert_int_equal(a->mknod_block, 0);
	assert_int_equal(a->mknod_char, 0);
	assert_int_equal(a->mknod_null, 0);
	assert_int_equal(a->open_host, EPERM);
	assert_int_equal(a->open_null, 0);
	/* made in the pod, it still cannot be opened there, while out here it can */
	assert_int_equal(a->open_made, EPERM);
	assert_int_equal(try_open("made-c", O_RDONLY), 0);
}

static void test_v1_alone(void **state)
{
	(void)state;
	create_pod_cgroup(false);
	const char *dir = v1_devices_dir(&g_cg);
	if (!dir)
		skip(); /* a pure cgroup v2 host: test_v2_alone is the whole policy */
	hm_cleanup_free char *list = NULL;
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/devices.list", dir);
	assert_int_equal(hm_read_file(path, &list, NULL, NULL), 0);
	assert_non_null(strstr(list, "c 136:* rwm"));
	assert_null(strstr(list, "a *:*"));
	struct attempts a = attempt_in(dir);
	assert_default_policy(&a);
}

static void test_v2_alone(void **state)
{
	(void)state;
	create_pod_cgroup(false);
	if (!g_cg.v2_path[0])
		skip(); /* no cgroup2 at all: test_v1_alone is the whole policy */
	/* the loader holds nothing after the attach: the cgroup keeps the program, so
	 * it outlives a killed trace-pod */
	struct attempts a = attempt_in(g_cg.v2_path);
	assert_default_policy(&a);
}

static void test_v1_alone_allow_mknod(void **state)
{
	(void)state;
	create_pod_cgroup(true);
	const char *dir = v1_devices_dir(&g_cg);
	if (!dir)
		skip();
	struct attempts a = attempt_in(dir);
	assert_mknod_policy(&a);
}

static void test_v2_alone_allow_mknod(void **state)
{
	(void)state;
	create_pod_cgroup(true);
	if (!g_cg.v2_path[0])
		skip();
	struct attempts a = attempt_in(g_cg.v2_path);
	assert_mknod_policy(&a);
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_devices needs root (real cgroups, mknod)\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_v1_alone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v2_alone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v1_alone_allow_mknod, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v2_alone_allow_mknod, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
