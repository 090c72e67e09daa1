/* runtime/rootfs_path.c (host-side writes into a rootfs whose entries a pod may have
 * replaced by symlinks to host paths) and runtime/podlog.c (the capped log of a
 * detached pod). Each test plants links in a temp rootfs that aim at a temp "host"
 * directory beside it and checks the host side is untouched. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "runtime/internal.h"

struct scene {
	char top[PATH_MAX];
	char root[PATH_MAX + 16];
	char host[PATH_MAX + 16];
	int root_fd;
};

static void put(const char *dir, const char *rel, const char *text, mode_t mode)
{
	char path[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	struct hm_err err;
	if (hm_create_file(path, text, strlen(text), mode, &err) < 0)
		fail_msg("%s", err.msg);
	chmod(path, mode);
}

static void link_at(const char *dir, const char *rel, const char *target)
{
	char path[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	if (symlink(target, path) < 0)
		fail_msg("symlink %s: %s", path, strerror(errno));
}

static char *read_at(const char *dir, const char *rel)
{
	char path[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	char *text = NULL;
	if (hm_read_file(path, &text, NULL, NULL) < 0)
		return NULL;
	return text;
}

static mode_t mode_at(const char *dir, const char *rel)
{
	char path[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

/* A host file host/NAME with text and mode, and the pod's link rel -> its host path. */
static void plant_host_file(const struct scene *s, const char *name, const char *text, mode_t mode,
			    const char *rel)
{
	put(s->host, name, text, mode);
	char target[2 * PATH_MAX];
	snprintf(target, sizeof(target), "%s/%s", s->host, name);
	link_at(s->root, rel, target);
}

static int scene_setup(void **state)
{
	struct scene *s = calloc(1, sizeof(*s));
	snprintf(s->top, sizeof(s->top), "/tmp/hm-test-rootfs-path-XXXXXX");
	if (!mkdtemp(s->top))
		return -1;
	snprintf(s->root, sizeof(s->root), "%s/root", s->top);
	snprintf(s->host, sizeof(s->host), "%s/host", s->top);
	if (mkdir(s->root, 0755) < 0 || mkdir(s->host, 0700) < 0)
		return -1;
	char etc[PATH_MAX + 32];
	snprintf(etc, sizeof(etc), "%s/etc", s->root);
	if (mkdir(etc, 0755) < 0)
		return -1;
	s->root_fd = rt_rootfs_open_root(s->root, NULL);
	*state = s;
	return s->root_fd < 0 ? -1 : 0;
}

static int scene_teardown(void **state)
{
	struct scene *s = *state;
	close(s->root_fd);
	hm_rm_rf(s->top, NULL);
	free(s);
	return 0;
}

/* etc/passwd -> the host's copy: replaced inside the rootfs by a rename, never written
 * through; the host file keeps its bytes and mode. */
static void test_install_replaces_link(void **state)
{
	struct scene *s = *state;
	plant_host_file(s, "passwd", "host-passwd\n", 0600, "etc/passwd");
	struct hm_err err = {0};
	assert_int_equal(rt_rootfs_install(s->root_fd, "etc/passwd", -1, "pod\n", 4, 0644, &err),
			 0);
	char *host = read_at(s->host, "passwd");
	assert_string_equal(host, "host-passwd\n");
	free(host);
	assert_int_equal(mode_at(s->host, "passwd"), 0600);
	char *pod = read_at(s->root, "etc/passwd");
	assert_string_equal(pod, "pod\n");
	free(pod);
	assert_int_equal(mode_at(s->root, "etc/passwd"), 0644);
}

/* etc -> the host directory: every helper refuses, naming the link, and writes nothing. */
static void test_parent_link_out_refused(void **state)
{
	struct scene *s = *state;
	char etc[PATH_MAX + 32];
	snprintf(etc, sizeof(etc), "%s/etc", s->root);
	assert_int_equal(rmdir(etc), 0);
	link_at(s->root, "etc", s->host);
	struct hm_err err = {0};
	assert_int_equal(rt_rootfs_install(s->root_fd, "etc/passwd", -1, "x", 1, 0644, &err), -1);
	assert_int_equal(err.code, ENOENT);
	assert_non_null(strstr(err.msg, "etc is a symlink to"));
	assert_non_null(strstr(err.msg, s->host));
	assert_int_equal(rt_rootfs_create(s->root_fd, "etc/hosts", "", 0, 0644, &err), -1);
	assert_int_equal(rt_rootfs_symlink(s->root_fd, "etc/sh", "/bin/busybox", &err), -1);
	assert_int_equal(rt_rootfs_mkdir(s->root_fd, "etc/sub", 0755, &err), -1);
	/* the link itself as the directory: mkdir must not chmod the host dir to 1777 */
	assert_int_equal(rt_rootfs_mkdir(s->root_fd, "etc", 01777, &err), -1);
	assert_non_null(strstr(err.msg, "etc is a symlink to"));
	assert_int_equal(mode_at(s->host, ""), 0700);
	char cmd[2 * PATH_MAX];
	snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A '%s')\"", s->host);
	assert_int_equal(system(cmd), 0);
}

/* An absolute link to a directory of the rootfs is followed there, as in the pod. */
static void test_link_inside_followed(void **state)
{
	struct scene *s = *state;
	char dir[PATH_MAX + 32];
	snprintf(dir, sizeof(dir), "%s/real-tmp", s->root);
	assert_int_equal(mkdir(dir, 0700), 0);
	link_at(s->root, "tmp", "/real-tmp");
	struct hm_err err = {0};
	assert_int_equal(rt_rootfs_mkdir(s->root_fd, "tmp", 01777, &err), 0);
	assert_int_equal(mode_at(s->root, "real-tmp"), 01777);
	/* relative escapes are held at the root too: ../../.. of the rootfs is the rootfs */
	link_at(s->root, "up", "../../../../..");
	assert_int_equal(rt_rootfs_install(s->root_fd, "up/etc/motd", -1, "hi\n", 3, 0644, &err),
			 0);
	char *motd = read_at(s->root, "etc/motd");
	assert_string_equal(motd, "hi\n");
	free(motd);
}

/* create keeps what is there, a link included, and does not write through it. */
static void test_create_keeps_existing(void **state)
{
	struct scene *s = *state;
	plant_host_file(s, "hosts", "host-hosts\n", 0644, "etc/hosts");
	struct hm_err err = {0};
	assert_int_equal(rt_rootfs_create(s->root_fd, "etc/hosts", "pod\n", 4, 0644, &err), 0);
	char *host = read_at(s->host, "hosts");
	assert_string_equal(host, "host-hosts\n");
	free(host);
	assert_int_equal(rt_rootfs_create(s->root_fd, "etc/new", "new\n", 4, 0640, &err), 0);
	assert_int_equal(mode_at(s->root, "etc/new"), 0640);
}

/* Bind-mount targets: a dangling link out is an error, a magic link is refused, a
 * missing file is created, a directory is refused. */
static void test_mount_target(void **state)
{
	struct scene *s = *state;
	struct hm_err err = {0};
	char target[2 * PATH_MAX];
	snprintf(target, sizeof(target), "%s/hosts", s->host);
	link_at(s->root, "etc/hosts", target);
	assert_int_equal(rt_rootfs_mount_target(s->root_fd, "/etc/hosts", &err), -1);
	assert_non_null(strstr(err.msg, "/etc/hosts is a symlink to"));
	assert_int_equal(access(target, F_OK), -1);

	/* a magic link is refused even where /proc is a real procfs: resolved from the
	 * host's own root, the rootfs's etc/resolv.conf -> /proc/self/fd/0 */
	link_at(s->root, "etc/resolv.conf", "/proc/self/fd/0");
	hm_cleanup_close int host_root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	char path[2 * PATH_MAX];
	snprintf(path, sizeof(path), "%s/etc/resolv.conf", s->root);
	assert_int_equal(rt_rootfs_mount_target(host_root, path, &err), -1);
	assert_int_equal(err.code, ELOOP);

	int fd = rt_rootfs_mount_target(s->root_fd, "/etc/hostname", &err);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(mode_at(s->root, "etc/hostname"), 0644);
	assert_int_equal(rt_rootfs_mount_target(s->root_fd, "/etc", &err), -1);
	assert_int_equal(err.code, EINVAL);
}

/* ---- podlog.c ---- */

struct log_scene {
	char name[64];
	char dir[PATH_MAX];
	int saved_out, saved_err;
};

static int log_setup(void **state)
{
	struct log_scene *l = calloc(1, sizeof(*l));
	snprintf(l->name, sizeof(l->name), "ut-log-%d", (int)getpid());
	rt_state_path(l->name, NULL, l->dir, sizeof(l->dir));
	if (hm_mkdir_p(l->dir, 0700, NULL) < 0)
		return -1;
	/* the log takes over stdout and stderr, as in a monitor */
	l->saved_out = dup(STDOUT_FILENO);
	l->saved_err = dup(STDERR_FILENO);
	*state = l;
	return 0;
}

static int log_teardown(void **state)
{
	struct log_scene *l = *state;
	dup2(l->saved_out, STDOUT_FILENO);
	dup2(l->saved_err, STDERR_FILENO);
	close(l->saved_out);
	close(l->saved_err);
	hm_rm_rf(l->dir, NULL);
	free(l);
	return 0;
}

static void feed(struct rt_log *log, const char *text, int saved_out, int saved_err)
{
	int fds[2];
	assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
	assert_int_equal(write(fds[1], text, strlen(text)), (ssize_t)strlen(text));
	close(fds[1]);
	bool eof = false;
	struct hm_err err = {0};
	int rc = rt_log_relay(log, fds[0], &eof, &err);
	close(fds[0]);
	/* back to the test's own output for the assertions (a rotation redirects again) */
	dup2(saved_out, STDOUT_FILENO);
	dup2(saved_err, STDERR_FILENO);
	assert_int_equal(rc, 0);
	assert_true(eof);
}

/* 100 lines of 10 bytes through a 64-byte cap: each file stays within the cap and ends
 * at a line end, and log.1 + log is the latest output, in order. */
static void test_log_rotates_at_line_ends(void **state)
{
	struct log_scene *l = *state;
	struct rt_log log;
	struct hm_err err = {0};
	assert_int_equal(rt_log_open(&log, l->name, 64, &err), 0);
	dup2(l->saved_out, STDOUT_FILENO);
	dup2(l->saved_err, STDERR_FILENO);
	char text[1100] = "";
	for (int i = 0; i < 100; i++)
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "line-%04d\n", i);
	feed(&log, text, l->saved_out, l->saved_err);
	char *cur = read_at(l->dir, "log");
	char *old = read_at(l->dir, "log.1");
	assert_non_null(cur);
	assert_non_null(old);
	assert_true(strlen(cur) <= 64 && strlen(old) <= 64);
	assert_true(strlen(cur) > 0 && cur[strlen(cur) - 1] == '\n');
	assert_int_equal(strlen(old), 60); /* six whole lines fit in 64 bytes */
	char both[200];
	snprintf(both, sizeof(both), "%s%s", old, cur);
	assert_string_equal(both, text + strlen(text) - strlen(both));
	assert_non_null(strstr(cur, "line-0099\n"));
	free(cur);
	free(old);
	/* a line longer than the cap is cut at the cap rather than kept whole */
	char long_line[200];
	memset(long_line, 'x', 150);
	strcpy(long_line + 150, "\n");
	feed(&log, long_line, l->saved_out, l->saved_err);
	cur = read_at(l->dir, "log");
	assert_true(strlen(cur) <= 64);
	free(cur);
	rt_log_close(&log);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_install_replaces_link, scene_setup,
					    scene_teardown),
	    cmocka_unit_test_setup_teardown(test_parent_link_out_refused, scene_setup,
					    scene_teardown),
	    cmocka_unit_test_setup_teardown(test_link_inside_followed, scene_setup, scene_teardown),
	    cmocka_unit_test_setup_teardown(test_create_keeps_existing, scene_setup,
					    scene_teardown),
	    cmocka_unit_test_setup_teardown(test_mount_target, scene_setup, scene_teardown),
	    cmocka_unit_test_setup_teardown(test_log_rotates_at_line_ends, log_setup, log_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
