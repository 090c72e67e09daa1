/* runtime/cgroup.c against the real cgroup hierarchies of this machine (needs root).
 * The assertions do not assume a layout: each limit must be in exactly one place, v2
 * when the controller is there, else its v1 hierarchy. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <linux/magic.h>
#include <sys/statfs.h>

#include "runtime/internal.h"

static struct rt_cgroup g_cg;
static pid_t g_child = -1;
static bool g_child_is_group; /* g_child leads a process group of its own forks */
static char g_name[64];
static char g_tmpfile[PATH_MAX];

static int setup(void **state)
{
	(void)state;
	static int seq;
	memset(&g_cg, 0, sizeof(g_cg));
	g_cg.v2_fd = -1;
	g_child = -1;
	snprintf(g_name, sizeof(g_name), "test-cg-%d-%d", (int)getpid(), ++seq);
	snprintf(g_tmpfile, sizeof(g_tmpfile), "/tmp/hm-test-cgroup-%d-%d", (int)getpid(), seq);
	return 0;
}

/* runs after a failed assertion too: nothing may outlive the test */
static int teardown(void **state)
{
	(void)state;
	if (g_child > 0) {
		kill(g_child_is_group ? -g_child : g_child, SIGKILL);
		g_child_is_group = false;
		waitpid(g_child, NULL, 0);
		g_child = -1;
	}
	struct hm_err err = {0};
	if (rt_cgroup_destroy(&g_cg, &err) < 0)
		print_error("teardown: %s\n", err.msg);
	unlink(g_tmpfile);
	return 0;
}

static bool path_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* contents of dir/file without the trailing newline, or NULL when it does not exist */
static char *read_cg_file(const char *dir, const char *file)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	char *text = NULL;
	struct hm_err err;
	if (hm_read_file(path, &text, NULL, &err) < 0)
		return NULL;
	text[strcspn(text, "\n")] = '\0';
	return text;
}

/* Where does `file` exist among the pod's dirs: "" for none, else the dir. Fails the
 * test when it exists in more than one (a limit must have exactly one home). */
static const char *dir_with_file(const struct rt_cgroup *cg, const char *file)
{
	const char *found = NULL;
	char path[PATH_MAX + 64];
	if (cg->v2_path[0]) {
		snprintf(path, sizeof(path), "%s/%s", cg->v2_path, file);
		if (path_exists(path))
			found = cg->v2_path;
	}
	for (int i = 0; i < cg->n_v1; i++) {
		snprintf(path, sizeof(path), "%s/%s", cg->v1_paths[i], file);
		if (path_exists(path)) {
			assert_null(found);
			found = cg->v1_paths[i];
		}
	}
	return found;
}

static void assert_value_in(const char *dir, const char *file, const char *want)
{
	hm_cleanup_free char *got = read_cg_file(dir, file);
	assert_non_null(got);
	if (strcmp(got, want))
		fail_msg("%s/%s holds '%s', want '%s'", dir, file, got, want);
}

static pid_t fork_sleeper(void)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

static void describe_layout(const struct rt_cgroup *cg)
{
	print_message("layout: v2 %s\n", cg->v2_path[0] ? cg->v2_path : "(none)");
	for (int i = 0; i < cg->n_v1; i++)
		print_message("layout: v1 %s\n", cg->v1_paths[i]);
}

static void assert_all_dirs_gone(const struct rt_cgroup *copy)
{
	if (copy->v2_path[0])
		assert_false(path_exists(copy->v2_path));
	for (int i = 0; i < copy->n_v1; i++) {
		if (path_exists(copy->v1_paths[i]))
			fail_msg("%s still exists", copy->v1_paths[i]);
		/* the shared parent stays for the other pods */
		char parent[PATH_MAX];
		snprintf(parent, sizeof(parent), "%s", copy->v1_paths[i]);
		*strrchr(parent, '/') = '\0';
		assert_true(path_exists(parent));
	}
}

static void test_limits_attach_destroy(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct rt_limits lim = {.pids_max = 5, .memory_max = 64ULL << 20};
	assert_int_equal(rt_parse_cpu_max("50000", &lim, &err), 0);
	if (rt_cgroup_create(g_name, &lim, &g_cg, &err) < 0)
		fail_msg("create: %s", err.msg);
	describe_layout(&g_cg);

	if (g_cg.v2_path[0]) {
		assert_true(g_cg.v2_fd >= 0);
		struct stat a, b;
		assert_int_equal(fstat(g_cg.v2_fd, &a), 0);
		assert_int_equal(stat(g_cg.v2_path, &b), 0);
		assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	}

	/* each limit in exactly one hierarchy, in the format of that hierarchy */
	const char *pids_dir = dir_with_file(&g_cg, "pids.max");
	assert_non_null(pids_dir);
	assert_value_in(pids_dir, "pids.max", "5");

	const char *mem_v2 = dir_with_file(&g_cg, "memory.max");
	const char *mem_v1 = dir_with_file(&g_cg, "memory.limit_in_bytes");
	assert_true((mem_v2 != NULL) != (mem_v1 != NULL));
	if (mem_v2) {
		assert_value_in(mem_v2, "memory.max", "67108864");
	} else {
		assert_value_in(mem_v1, "memory.limit_in_bytes", "67108864");
		hm_cleanup_free char *swappiness = read_cg_file(mem_v1, "memory.swappiness");
		if (swappiness)
			assert_string_equal(swappiness, "0");
	}

	const char *cpu_v2 = dir_with_file(&g_cg, "cpu.max");
	const char *cpu_v1 = dir_with_file(&g_cg, "cpu.cfs_quota_us");
	assert_true((cpu_v2 != NULL) != (cpu_v1 != NULL));
	if (cpu_v2) {
		assert_value_in(cpu_v2, "cpu.max", "50000 100000");
	} else {
		assert_value_in(cpu_v1, "cpu.cfs_quota_us", "50000");
		assert_value_in(cpu_v1, "cpu.cfs_period_us", "100000");
	}

	/* attach: every hierarchy lists the child under hermit/NAME */
	g_child = fork_sleeper();
	if (rt_cgroup_attach_v1(&g_cg, g_child, &err) < 0)
		fail_msg("attach_v1: %s", err.msg);
	if (rt_cgroup_attach_all(&g_cg, g_child, &err) < 0)
		fail_msg("attach_all: %s", err.msg);
	char path[64], suffix[128];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)g_child);
	snprintf(suffix, sizeof(suffix), "/hermit/%s", g_name);
	hm_cleanup_free char *self_cg = NULL;
	assert_int_equal(hm_read_file(path, &self_cg, NULL, &err), 0);
	int matching = 0;
	bool v2_seen = false;
	char *save = NULL;
	for (char *line = strtok_r(self_cg, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		size_t ll = strlen(line), sl = strlen(suffix);
		if (ll >= sl && !strcmp(line + ll - sl, suffix)) {
			matching++;
			if (!strncmp(line, "0::", 3))
				v2_seen = true;
		}
	}
	assert_int_equal(matching, g_cg.n_v1 + (g_cg.v2_path[0] ? 1 : 0));
	assert_int_equal(v2_seen, g_cg.v2_path[0] != '\0');

	/* the saved paths come back identical */
	struct rt_cgroup *loaded = calloc(1, sizeof(*loaded));
	assert_non_null(loaded);
	assert_int_equal(rt_cgroup_save(&g_cg, g_tmpfile, &err), 0);
	if (rt_cgroup_load(loaded, g_tmpfile, &err) < 0)
		fail_msg("load: %s", err.msg);
	assert_string_equal(loaded->v2_path, g_cg.v2_path);
	assert_int_equal(loaded->n_v1, g_cg.n_v1);
	for (int i = 0; i < g_cg.n_v1; i++)
		assert_string_equal(loaded->v1_paths[i], g_cg.v1_paths[i]);
	assert_true(g_cg.v2_path[0] ? loaded->v2_fd >= 0 : loaded->v2_fd == -1);

	/* destroy through the loaded copy while the child runs, as `trace-pod rm` would */
	struct rt_cgroup *before = malloc(sizeof(*before));
	assert_non_null(before);
	memcpy(before, &g_cg, sizeof(*before));
	if (rt_cgroup_destroy(loaded, &err) < 0)
		fail_msg("destroy: %s", err.msg);
	int status;
	assert_int_equal(waitpid(g_child, &status, 0), g_child);
	g_child = -1;
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	assert_all_dirs_gone(before);

	/* idempotent: the original (stale) struct and the emptied one both succeed */
	assert_int_equal(rt_cgroup_destroy(&g_cg, &err), 0);
	assert_int_equal(rt_cgroup_destroy(loaded, &err), 0);
	assert_int_equal(g_cg.v2_fd, -1);
	assert_int_equal(g_cg.n_v1, 0);
	free(loaded);
	free(before);
}

/* How many lines of /proc/PID/cgroup end in /hermit/NAME */
static int lines_in_pod(pid_t pid, const char *name)
{
	char path[64], suffix[128];
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	snprintf(suffix, sizeof(suffix), "/hermit/%s", name);
	hm_cleanup_free char *text = NULL;
	struct hm_err err;
	assert_int_equal(hm_read_file(path, &text, NULL, &err), 0);
	int matching = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t ll = strlen(line), sl = strlen(suffix);
		matching += ll >= sl && !strcmp(line + ll - sl, suffix);
	}
	return matching;
}

/* The pod's first process joins its v1 cgroups itself through `tasks` fds the runtime
 * opened (container.c): afterwards every v1 hierarchy lists it in the pod's dir, and
 * its pids.max holds (a limit that did not apply would let the forks through). */
static void test_join_v1_self(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct rt_limits lim = {.pids_max = 3, .memory_max = 64ULL << 20};
	if (rt_cgroup_create(g_name, &lim, &g_cg, &err) < 0)
		fail_msg("create: %s", err.msg);
	int fds[RT_CGROUP_V1_MAX];
	assert_int_equal(rt_cgroup_open_v1_tasks(&g_cg, fds, &err), 0);
	int ready[2];
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	g_child = fork();
	assert_true(g_child >= 0);
	if (g_child == 0) {
		setpgid(0, 0); /* it and its forks are killed as one group, never the test's */
		char verdict = rt_cgroup_join_v1(fds, g_cg.n_v1, &err) == 0 ? 'j' : 'e';
		/* pids.max 3 counts this process: of 4 forks at least one must fail */
		int failed = 0;
		for (int i = 0; i < 4; i++) {
			pid_t p = fork();
			if (p == 0) {
				pause();
				_exit(0);
			}
			failed += p < 0;
		}
		if (verdict == 'j' && !failed)
			verdict = 'p';
		if (write(ready[1], &verdict, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	setpgid(g_child, g_child); /* also here: no window where teardown misses the group */
	g_child_is_group = true;
	for (int i = 0; i < g_cg.n_v1; i++)
		close(fds[i]);
	close(ready[1]);
	char verdict = 0;
	assert_int_equal(read(ready[0], &verdict, 1), 1);
	close(ready[0]);
	if (verdict == 'e')
		fail_msg("rt_cgroup_join_v1 failed in the child");
	if (verdict == 'p')
		fail_msg("pids.max 3 let 4 forks through: the child is not in its pids cgroup");
	assert_int_equal(verdict, 'j');
	/* every v1 hierarchy has it in the pod's dir */
	assert_int_equal(lines_in_pod(g_child, g_name), g_cg.n_v1);
}

/* Without limits the pod gets its v2 directory (tracking, kill, CLONE_INTO_CGROUP) and,
 * of v1, only the devices directory its device policy needs (test_devices.c): each v1
 * attach costs an RCU grace period at start. */
static void test_no_limits_v2_only(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct rt_limits lim = {0};
	if (rt_cgroup_create(g_name, &lim, &g_cg, &err) < 0)
		fail_msg("create: %s", err.msg);
	struct statfs sfs;
	bool has_v2 =
	    statfs("/sys/fs/cgroup/unified", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
	has_v2 =
	    has_v2 || (statfs("/sys/fs/cgroup", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC);
	if (has_v2) {
		assert_true(g_cg.v2_fd >= 0);
		assert_true(g_cg.v2_path[0] != '\0');
	}
	bool v1_devices = false;
	hm_cleanup_free char *mounts = NULL;
	assert_int_equal(hm_read_file("/proc/self/mountinfo", &mounts, NULL, &err), 0);
	for (char *m = strstr(mounts, " - cgroup "); m; m = strstr(m + 1, " - cgroup "))
		if (strstr(m, "devices") && strstr(m, "devices") < strchr(m + 1, '\n'))
			v1_devices = true;
	assert_int_equal(g_cg.n_v1, v1_devices ? 1 : 0);
	if (v1_devices)
		assert_non_null(strstr(g_cg.v1_paths[0], "/hermit/"));

	/* destroy kills every process of the pod, forked children included */
	g_child = fork_sleeper();
	assert_int_equal(rt_cgroup_attach_all(&g_cg, g_child, &err), 0);
	assert_int_equal(rt_cgroup_destroy(&g_cg, &err), 0);
	int status;
	assert_int_equal(waitpid(g_child, &status, 0), g_child);
	g_child = -1;
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void test_oom_kill_is_counted(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct rt_limits lim = {.memory_max = 16ULL << 20};
	if (rt_cgroup_create(g_name, &lim, &g_cg, &err) < 0)
		fail_msg("create: %s", err.msg);
	assert_int_equal(rt_cgroup_oom_kills(&g_cg), 0);
	int go[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	g_child = fork();
	assert_true(g_child >= 0);
	if (g_child == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		size_t len = 256ULL << 20;
		char *p =
		    mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			_exit(3);
		for (size_t off = 0; off < len; off += 4096)
			p[off] = 1;
		_exit(0); /* the limit did not hold */
	}
	close(go[0]);
	/* in the cgroups before it allocates: a limit is never late */
	assert_int_equal(rt_cgroup_attach_all(&g_cg, g_child, &err), 0);
	assert_int_equal(write(go[1], "x", 1), 1);
	close(go[1]);
	int status;
	assert_int_equal(waitpid(g_child, &status, 0), g_child);
	g_child = -1;
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_true(rt_cgroup_oom_kills(&g_cg) >= 1);
	assert_int_equal(rt_cgroup_destroy(&g_cg, &err), 0);
}

/* A dir left by a crashed run is reused when empty; a populated one is refused. */
static void test_stale_dir(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct rt_limits lim = {0};
	assert_int_equal(rt_cgroup_create(g_name, &lim, &g_cg, &err), 0);
	struct rt_cgroup *again = calloc(1, sizeof(*again));
	assert_non_null(again);
	/* empty leftovers: create succeeds over them */
	assert_int_equal(rt_cgroup_create(g_name, &lim, again, &err), 0);
	if (again->v2_fd >= 0)
		close(again->v2_fd);
	free(again);
	/* populated: refused, and the running pod's dirs are untouched */
	g_child = fork_sleeper();
	assert_int_equal(rt_cgroup_attach_all(&g_cg, g_child, &err), 0);
	again = calloc(1, sizeof(*again));
	assert_non_null(again);
	assert_true(rt_cgroup_create(g_name, &lim, again, &err) < 0);
	assert_non_null(strstr(err.msg, "in use"));
	assert_int_equal(again->v2_fd, -1);
	free(again);
	if (g_cg.v2_path[0])
		assert_true(path_exists(g_cg.v2_path));
	for (int i = 0; i < g_cg.n_v1; i++)
		assert_true(path_exists(g_cg.v1_paths[i]));
	assert_int_equal(kill(g_child, 0), 0);
}

static void test_bad_names_and_state(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct rt_limits lim = {0};
	assert_true(rt_cgroup_create("", &lim, &g_cg, &err) < 0);
	assert_true(rt_cgroup_create("../x", &lim, &g_cg, &err) < 0);
	assert_true(rt_cgroup_create("..", &lim, &g_cg, &err) < 0);
	assert_int_equal(g_cg.v2_fd, -1);

	static const char *const bad_files[] = {
	    "v1 /etc\n",
	    "v1 /sys/fs/cgroup/pids/hermit/../x\n",
	    "v1 relative/hermit/x\n",
	    "v3 /sys/fs/cgroup/pids/hermit/x\n",
	    "garbage\n",
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(bad_files); i++) {
		assert_int_equal(
		    hm_create_file(g_tmpfile, bad_files[i], strlen(bad_files[i]), 0600, &err), 0);
		if (rt_cgroup_load(&g_cg, g_tmpfile, &err) == 0)
			fail_msg("loaded bad state '%s'", bad_files[i]);
		assert_int_equal(g_cg.n_v1, 0);
	}
	/* destroy refuses paths that are not a pod cgroup even if a caller built them */
	strcpy(g_cg.v1_paths[0], "/tmp");
	g_cg.n_v1 = 1;
	assert_true(rt_cgroup_destroy(&g_cg, &err) < 0);
	g_cg.n_v1 = 0;
	/* a pod whose dirs are already gone loads and destroys cleanly */
	const char *gone = "v1 /sys/fs/cgroup/pids/hermit/never-created-xyz\n";
	assert_int_equal(hm_create_file(g_tmpfile, gone, strlen(gone), 0600, &err), 0);
	assert_int_equal(rt_cgroup_load(&g_cg, g_tmpfile, &err), 0);
	assert_int_equal(rt_cgroup_destroy(&g_cg, &err), 0);
	/* missing state file */
	unlink(g_tmpfile);
	assert_true(rt_cgroup_load(&g_cg, g_tmpfile, &err) < 0);
	assert_int_equal(err.code, ENOENT);
}

static void expect_cpu_ok(const char *s, uint64_t quota, uint64_t period)
{
	struct rt_limits lim = {0};
	struct hm_err err = {0};
	if (rt_parse_cpu_max(s, &lim, &err) < 0)
		fail_msg("'%s' rejected: %s", s, err.msg);
	assert_int_equal(lim.cpu_quota, quota);
	assert_int_equal(lim.cpu_period, period);
}

static void expect_cpu_bad(const char *s, const char *msg_part)
{
	struct rt_limits lim = {.cpu_quota = 7, .cpu_period = 8};
	struct hm_err err = {0};
	if (rt_parse_cpu_max(s, &lim, &err) == 0)
		fail_msg("'%s' accepted", s);
	if (!strstr(err.msg, msg_part))
		fail_msg("'%s': message '%s' lacks '%s'", s, err.msg, msg_part);
	/* a rejected value leaves the limits as they were */
	assert_int_equal(lim.cpu_quota, 7);
	assert_int_equal(lim.cpu_period, 8);
}

static void test_parse_cpu_max(void **state)
{
	(void)state;
	expect_cpu_ok("max", 0, 100000);
	expect_cpu_ok("50000", 50000, 100000);
	expect_cpu_ok("50000 100000", 50000, 100000);
	expect_cpu_ok("25000/50000", 25000, 50000);
	expect_cpu_ok("200000 100000", 200000, 100000); /* two CPUs */
	expect_cpu_ok("1000/1000000", 1000, 1000000);

	expect_cpu_bad("0", "greater than 0");
	expect_cpu_bad("0 100000", "greater than 0");
	expect_cpu_bad("", "not a number");
	expect_cpu_bad("abc", "not a number");
	expect_cpu_bad("50000x", "not a number");
	expect_cpu_bad("50000 ", "not a number");
	expect_cpu_bad("50000/", "not a number");
	expect_cpu_bad(" 50000", "not a number");
	expect_cpu_bad("50000 100000 3", "not a number");
	expect_cpu_bad("max 100000", "not a number");
	expect_cpu_bad("-5", "negative");
	expect_cpu_bad("50000 -100000", "negative");
	expect_cpu_bad("+5", "not a number");
	expect_cpu_bad("99999999999999999999999", "too large");
	expect_cpu_bad("50000 99999999999999999999", "too large");
	expect_cpu_bad("999", "between");
	expect_cpu_bad("50000 999", "between");
	expect_cpu_bad("50000 1000001", "between");
	expect_cpu_bad("17592186044416", "between");
	expect_cpu_bad(NULL, "no value");
}

int main(void)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_cgroup needs root (real cgroups)\n");
		return 1;
	}
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_cpu_max),
	    cmocka_unit_test_setup_teardown(test_limits_attach_destroy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_join_v1_self, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_limits_v2_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oom_kill_is_counted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_dir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_names_and_state, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
