/* agent/files*.c: every file request stays inside the target's root.
 * The fixture is a directory tree with hostile symlinks, used as the root of a real
 * chroot'ed child so root_fd is /proc/CHILD/root as in the agent. Host-only files sit
 * outside it in /tmp, and each escape test first proves those files are really there.
 * Needs root (chroot, mount of a procfs inside the tree in a private mount namespace). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/internal.h"

#define SECRET_CONTENT "host secret\n"
#define DECOY_CONTENT "pod decoy\n"
#define HOSTNAME_CONTENT "pod-only\n"
#define BIG_SIZE ((uint64_t)PROTO_INLINE_MAX + 4096)

static struct {
	char root[64];		    /* the target's root as the host sees it */
	char secret[64];	    /* /tmp/hm-host-secret-PID: host only */
	char hostdir[64];	    /* /tmp/hm-host-dir-PID: host only */
	char created[64];	    /* /tmp/hm-host-created-PID: must never appear */
	char mkdired[64];	    /* /tmp/hm-host-mkdir-PID: must never appear */
	char renamed[64];	    /* /tmp/hm-host-renamed-PID: must never appear */
	const char *secret_in_root; /* that path, seen inside the root */
	pid_t child;
	int root_fd;
	int secret_fd; /* kept open so /proc/self/fd/N is a magic link to it */
	bool proc_mounted;
} fx = {.child = -1, .root_fd = -1, .secret_fd = -1};

/* ---- helpers ---- */

static const char *host_path(const char *in_root)
{
	static char buf[4][PATH_MAX];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s%s", fx.root, in_root);
	return buf[i];
}

static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
	static char buf[8][PATH_MAX];
	static int i;
	i = (i + 1) % 8;
	va_list ap;
	va_start(ap, f);
	vsnprintf(buf[i], sizeof(buf[i]), f, ap);
	va_end(ap);
	return buf[i];
}

static void write_host_file(const char *path, const char *content, mode_t mode)
{
	struct hm_err err = {0};
	assert_int_equal(hm_create_file(path, content, strlen(content), mode, &err), 0);
}

static bool host_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0;
}

static void assert_host_secret_intact(void)
{
	hm_cleanup_free char *data = NULL;
	size_t len;
	struct hm_err err = {0};
	assert_int_equal(hm_read_file(fx.secret, &data, &len, &err), 0);
	assert_string_equal(data, SECRET_CONTENT);
}

/* Each wrapper returns 0 or the errno the agent would send. */
static int do_read(const char *path, uint32_t flags, uint64_t cap, uint64_t max,
		   struct agent_file_read_result *res)
{
	struct hm_err err = {0};
	struct proto_file_read req = {.path = path, .flags = flags, .max_size = max};
	if (agent_file_read(fx.root_fd, &req, cap, NULL, res, &err) < 0) {
		assert_int_not_equal(err.code, 0);
		assert_int_equal(res->fd, -1);
		assert_null(res->data);
		return err.code;
	}
	return 0;
}

static int read_string(const char *path, char *out, size_t outlen)
{
	struct agent_file_read_result res;
	int rc = do_read(path, 0, 0, 0, &res);
	if (rc)
		return rc;
	assert_int_equal(res.fd, -1);
	assert_non_null(res.data);
	assert_true(res.size < outlen);
	memcpy(out, res.data, res.size);
	out[res.size] = '\0';
	free(res.data);
	return 0;
}

static void assert_content(const char *path, const char *want)
{
	char got[256];
	int rc = read_string(path, got, sizeof(got));
	if (rc)
		fail_msg("read %s: %s", path, strerror(rc));
	assert_string_equal(got, want);
}

static int do_stat(const char *path, uint32_t flags, struct proto_stat *st)
{
	struct hm_err err = {0};
	struct proto_path_req req = {.path = path, .flags = flags};
	return agent_file_stat(fx.root_fd, &req, st, &err) < 0 ? err.code : 0;
}

static int do_access(const char *path, uint32_t mode, uint32_t flags)
{
	struct hm_err err = {0};
	struct proto_file_access req = {.path = path, .mode = mode, .flags = flags};
	return agent_file_access(fx.root_fd, &req, &err) < 0 ? err.code : 0;
}

static int do_readlink(const char *path, char *buf, size_t len)
{
	struct hm_err err = {0};
	struct proto_path_req req = {.path = path};
	struct proto_readlink_reply out = {0};
	if (agent_file_readlink(fx.root_fd, &req, buf, len, &out, &err) < 0)
		return err.code;
	assert_ptr_equal(out.target, buf);
	return 0;
}

static int do_readdir(const char *path, struct proto_readdir_reply *out, void **storage)
{
	struct hm_err err = {0};
	struct proto_path_req req = {.path = path};
	uint64_t reserved;
	if (agent_file_readdir(fx.root_fd, &req, NULL, out, storage, &reserved, &err) < 0) {
		assert_null(*storage);
		return err.code;
	}
	return 0;
}

static int do_write(const char *path, uint32_t flags, uint32_t mode, uint64_t offset,
		    const char *data, struct proto_file_write_reply *out)
{
	struct hm_err err = {0};
	struct proto_file_write req = {.path = path,
				       .flags = flags,
				       .mode = mode,
				       .offset = offset,
				       .data = {.data = data, .size = data ? strlen(data) : 0}};
	struct proto_file_write_reply dummy;
	return agent_file_write(fx.root_fd, &req, out ? out : &dummy, &err) < 0 ? err.code : 0;
}

static int do_mkdir(const char *path, uint32_t mode)
{
	struct hm_err err = {0};
	struct proto_file_mkdir req = {.path = path, .mode = mode};
	return agent_file_mkdir(fx.root_fd, &req, &err) < 0 ? err.code : 0;
}

static int do_unlink(const char *path, uint32_t flags)
{
	struct hm_err err = {0};
	struct proto_file_unlink req = {.path = path, .flags = flags};
	return agent_file_unlink(fx.root_fd, &req, &err) < 0 ? err.code : 0;
}

static int do_rename(const char *from, const char *to, uint32_t flags)
{
	struct hm_err err = {0};
	struct proto_file_rename req = {.from = from, .to = to, .flags = flags};
	return agent_file_rename(fx.root_fd, &req, &err) < 0 ? err.code : 0;
}

static int do_statfs(const char *path, struct proto_statfs *out)
{
	struct hm_err err = {0};
	struct proto_path_req req = {.path = path};
	return agent_file_statfs(fx.root_fd, &req, out, &err) < 0 ? err.code : 0;
}

static uint64_t host_ino(const char *path)
{
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	return st.st_ino;
}

/* Paths that, resolved naively, all reach the host-only secret. */
static const char **escape_paths(void)
{
	static const char *paths[16];
	int n = 0;
	paths[n++] = "/abs_secret";
	paths[n++] = "/rel_secret";
	paths[n++] = "/dir/deep_rel_secret";
	paths[n++] = "/chain1";
	paths[n++] = fmt("/up%s", fx.secret);
	paths[n++] = fmt("/../../../../..%s", fx.secret);
	paths[n++] = fmt("/dir/../../../..%s", fx.secret);
	paths[n++] = fmt("/dir/sub/../../../../../../..%s", fx.secret);
	paths[n] = NULL;
	return paths;
}

/* ---- fixture ---- */

static void symlink_in_root(const char *target, const char *name)
{
	assert_int_equal(symlink(target, host_path(name)), 0);
}

static int setup(void **state)
{
	(void)state;
	pid_t pid = getpid();
	struct hm_err err = {0};
	umask(022);
	/* a private mount namespace: the procfs mounted inside the tree never reaches the
	 * host's mount table and disappears with this process */
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		fprintf(stderr, "test_agent_files needs root: %s\n", strerror(errno));
		return -1;
	}
	snprintf(fx.root, sizeof(fx.root), "/tmp/hm-files-%d-XXXXXX", (int)pid);
	if (!mkdtemp(fx.root))
		return -1;
	snprintf(fx.secret, sizeof(fx.secret), "/tmp/hm-host-secret-%d", (int)pid);
	snprintf(fx.hostdir, sizeof(fx.hostdir), "/tmp/hm-host-dir-%d", (int)pid);
	snprintf(fx.created, sizeof(fx.created), "/tmp/hm-host-created-%d", (int)pid);
	snprintf(fx.mkdired, sizeof(fx.mkdired), "/tmp/hm-host-mkdir-%d", (int)pid);
	snprintf(fx.renamed, sizeof(fx.renamed), "/tmp/hm-host-renamed-%d", (int)pid);
	fx.secret_in_root = fx.secret; /* same string: the escape would be a plain lookup */

	/* host-only files */
	if (hm_create_file(fx.secret, SECRET_CONTENT, strlen(SECRET_CONTENT), 0600, &err) < 0 ||
	    hm_mkdir_p(fx.hostdir, 0755, &err) < 0 ||
	    hm_create_file(fmt("%s/hostfile", fx.hostdir), "host\n", 5, 0644, &err) < 0)
		return -1;
	fx.secret_fd = open(fx.secret, O_RDONLY | O_CLOEXEC);

	/* the target's tree */
	const char *dirs[] = {"/etc", "/dir", "/dir/sub", "/tmp", "/proc"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(dirs); i++)
		if (mkdir(host_path(dirs[i]), 0755) < 0)
			return -1;
	if (hm_create_file(host_path("/etc/hostname"), HOSTNAME_CONTENT, strlen(HOSTNAME_CONTENT),
			   0644, &err) < 0 ||
	    hm_create_file(host_path("/dir/a"), "aaa", 3, 0644, &err) < 0 ||
	    hm_create_file(host_path("/dir/b"), "bbbb", 4, 0644, &err) < 0 ||
	    hm_create_file(host_path("/dir/c"), "", 0, 0644, &err) < 0 ||
	    hm_create_file(host_path("/exec.sh"), "#!/bin/sh\n", 10, 0755, &err) < 0)
		return -1;
	if (mkfifo(host_path("/fifo"), 0644) < 0)
		return -1;
	int big = open(host_path("/big"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (big < 0 || ftruncate(big, (off_t)BIG_SIZE) < 0)
		return -1;
	close(big);

	symlink_in_root(fx.secret, "/abs_secret");
	symlink_in_root(fmt("../../../../../..%s", fx.secret), "/rel_secret");
	symlink_in_root(fmt("../../../../../../..%s", fx.secret), "/dir/deep_rel_secret");
	symlink_in_root("chain2", "/chain1");
	symlink_in_root("dir/../chain3", "/chain2");
	symlink_in_root(fmt("/../..%s", fx.secret), "/chain3");
	symlink_in_root(fx.hostdir, "/abs_hostdir");
	symlink_in_root(fmt("../../..%s", fx.hostdir), "/rel_hostdir");
	symlink_in_root("/etc/hostname", "/etc_link");
	symlink_in_root("../../../..", "/up");
	symlink_in_root(fx.created, "/abs_newfile");
	symlink_in_root("loop2", "/loop1");
	symlink_in_root("loop1", "/loop2");
	symlink_in_root(fmt("/proc/self/root%s", fx.secret), "/magic");
	symlink_in_root(fmt("/proc/self/fd/%d", fx.secret_fd), "/magic_fd");

	fx.proc_mounted =
	    mount("proc", host_path("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0;
	if (!fx.proc_mounted)
		fprintf(stderr, "no procfs inside the root (%s): magic-link tests skipped\n",
			strerror(errno));

	/* the target: a child chroot'ed into the tree, as a container's process */
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return -1;
	fx.child = fork();
	if (fx.child < 0)
		return -1;
	if (fx.child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (chroot(fx.root) < 0 || chdir("/") < 0)
			_exit(1);
		char ok = 1;
		if (write(ready[1], &ok, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(ready[1]);
	char ok = 0;
	ssize_t n = read(ready[0], &ok, 1);
	close(ready[0]);
	if (n != 1)
		return -1;
	fx.root_fd = open(fmt("/proc/%d/root", (int)fx.child), O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fx.root_fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	struct hm_err err = {0};
	if (fx.child > 0) {
		kill(fx.child, SIGKILL);
		waitpid(fx.child, NULL, 0);
	}
	if (fx.root_fd >= 0)
		close(fx.root_fd);
	if (fx.secret_fd >= 0)
		close(fx.secret_fd);
	if (fx.proc_mounted)
		umount2(host_path("/proc"), MNT_DETACH);
	hm_rm_rf(fx.root, &err);
	hm_rm_rf(fx.hostdir, &err);
	unlink(fx.secret);
	/* these exist only if a test failed */
	hm_rm_rf(fx.created, &err);
	hm_rm_rf(fx.mkdired, &err);
	hm_rm_rf(fx.renamed, &err);
	return 0;
}

/* ---- tests ---- */

/* Without openat2's protection every one of these paths really reaches the host. */
static void test_escapes_are_real(void **state)
{
	(void)state;
	assert_host_secret_intact();
	const char *naive[] = {"/abs_secret", "/rel_secret", "/dir/deep_rel_secret", "/chain1"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(naive); i++) {
		hm_cleanup_free char *data = NULL;
		size_t len;
		struct hm_err err = {0};
		assert_int_equal(hm_read_file(host_path(naive[i]), &data, &len, &err), 0);
		assert_string_equal(data, SECRET_CONTENT);
	}
	assert_true(host_exists(fmt("%s/hostfile", fx.hostdir)));
	if (fx.proc_mounted) {
		hm_cleanup_free char *data = NULL;
		size_t len;
		struct hm_err err = {0};
		assert_int_equal(
		    hm_read_file(host_path(fmt("/proc/self/root%s", fx.secret)), &data, &len, &err),
		    0);
		assert_string_equal(data, SECRET_CONTENT);
	}
	/* and root_fd is the tree */
	struct proto_stat st;
	assert_int_equal(do_stat("/", 0, &st), 0);
	assert_int_equal(st.ino, host_ino(fx.root));
}

static void test_read_normal(void **state)
{
	(void)state;
	assert_content("/etc/hostname", HOSTNAME_CONTENT);
	assert_content("/etc_link", HOSTNAME_CONTENT);	      /* absolute symlink, inside */
	assert_content("/up/etc/hostname", HOSTNAME_CONTENT); /* "../../../.." stops at / */
	assert_content("/../../../etc/hostname", HOSTNAME_CONTENT);
	assert_content("//dir//..//etc/./hostname", HOSTNAME_CONTENT);
	assert_content("/dir/a", "aaa");
	assert_content("/dir/c", "");

	struct agent_file_read_result res;
	assert_int_equal(do_read("/etc/hostname", 0, 0, 0, &res), 0);
	assert_int_equal(res.size, strlen(HOSTNAME_CONTENT));
	assert_int_equal(res.st.size, strlen(HOSTNAME_CONTENT));
	assert_true(S_ISREG(res.st.mode));
	assert_int_equal(res.st.ino, host_ino(host_path("/etc/hostname")));
	free(res.data);

	/* an empty file still has a buffer, so inline and stream are told apart by data */
	assert_int_equal(do_read("/dir/c", 0, 0, 0, &res), 0);
	assert_non_null(res.data);
	assert_int_equal(res.size, 0);
	free(res.data);
}

static void test_read_escapes_stay_inside(void **state)
{
	(void)state;
	const char **paths = escape_paths();
	assert_host_secret_intact();
	for (int i = 0; paths[i]; i++) {
		struct agent_file_read_result res;
		struct proto_stat st;
		if (do_read(paths[i], 0, 0, 0, &res) != ENOENT)
			fail_msg("read %s did not fail with ENOENT", paths[i]);
		assert_int_equal(do_stat(paths[i], 0, &st), ENOENT);
		assert_int_equal(do_access(paths[i], 0, 0), ENOENT);
		struct proto_statfs sfs;
		assert_int_equal(do_statfs(paths[i], &sfs), ENOENT);
	}
	/* the same paths resolve to the root's own /tmp */
	write_host_file(host_path(fx.secret_in_root), DECOY_CONTENT, 0644);
	uint64_t decoy_ino = host_ino(host_path(fx.secret_in_root));
	for (int i = 0; paths[i]; i++) {
		assert_content(paths[i], DECOY_CONTENT);
		struct proto_stat st;
		assert_int_equal(do_stat(paths[i], 0, &st), 0);
		assert_int_equal(st.ino, decoy_ino);
	}
	assert_int_equal(unlink(host_path(fx.secret_in_root)), 0);
	assert_host_secret_intact();

	struct agent_file_read_result res;
	assert_int_equal(do_read("/abs_secret", PROTO_READ_NOFOLLOW, 0, 0, &res), ELOOP);
	assert_int_equal(do_read("/loop1", 0, 0, 0, &res), ELOOP);
}

static void test_stat(void **state)
{
	(void)state;
	struct proto_stat st;
	assert_int_equal(do_stat("/etc/hostname", 0, &st), 0);
	assert_int_equal(st.size, strlen(HOSTNAME_CONTENT));
	assert_true(S_ISREG(st.mode));
	assert_int_equal(st.mode & 07777, 0644);

	assert_int_equal(do_stat("/abs_secret", PROTO_STAT_NOFOLLOW, &st), 0);
	assert_true(S_ISLNK(st.mode));
	assert_int_equal(st.size, strlen(fx.secret));

	assert_int_equal(do_stat("/etc_link", 0, &st), 0);
	assert_int_equal(st.ino, host_ino(host_path("/etc/hostname")));

	const char *root_aliases[] = {"/", "/..", "/../../..", "/up", "/dir/sub/../../.."};
	for (size_t i = 0; i < HM_ARRAY_SIZE(root_aliases); i++) {
		assert_int_equal(do_stat(root_aliases[i], 0, &st), 0);
		assert_int_equal(st.ino, host_ino(fx.root));
		assert_true(S_ISDIR(st.mode));
	}
	assert_int_equal(do_stat("/loop1", 0, &st), ELOOP);
	assert_int_equal(do_stat("/loop1", PROTO_STAT_NOFOLLOW, &st), 0);
	assert_int_equal(do_stat("/missing", 0, &st), ENOENT);
	assert_int_equal(do_stat("/etc/hostname/x", 0, &st), ENOTDIR);
	/* a FIFO can be stat'ed: O_PATH does not open it */
	assert_int_equal(do_stat("/fifo", 0, &st), 0);
	assert_true(S_ISFIFO(st.mode));
}

static void test_access(void **state)
{
	(void)state;
	assert_int_equal(do_access("/etc/hostname", 0, 0), 0);
	assert_int_equal(do_access("/etc/hostname", PROTO_ACCESS_R | PROTO_ACCESS_W, 0), 0);
	assert_int_equal(do_access("/etc/hostname", PROTO_ACCESS_X, 0), EACCES);
	assert_int_equal(do_access("/exec.sh", PROTO_ACCESS_X, PROTO_ACCESS_EACCESS), 0);
	assert_int_equal(do_access("/dir", PROTO_ACCESS_X, 0), 0);
	assert_int_equal(do_access("/abs_secret", 0, 0), ENOENT);
	assert_int_equal(do_access("/abs_secret", 0, PROTO_ACCESS_NOFOLLOW), 0);
	assert_int_equal(do_access("/etc/hostname", 8, 0), EINVAL);
	assert_int_equal(do_access("/etc/hostname", 0, 0x100), EINVAL);
}

static void test_readlink(void **state)
{
	(void)state;
	char buf[PROTO_PATH_MAX + 1];
	/* the target string is data, not an escape */
	assert_int_equal(do_readlink("/abs_secret", buf, sizeof(buf)), 0);
	assert_string_equal(buf, fx.secret);
	assert_int_equal(do_readlink("/chain1", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "chain2");
	assert_int_equal(do_readlink("/dir/../up", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "../../../..");
	assert_int_equal(do_readlink("/etc/hostname", buf, sizeof(buf)), EINVAL);
	assert_int_equal(do_readlink("/missing", buf, sizeof(buf)), ENOENT);
	assert_int_equal(do_readlink("/abs_hostdir/hostfile", buf, sizeof(buf)), ENOENT);
	assert_int_equal(do_readlink("/abs_secret", buf, 4), ENAMETOOLONG);
}

static bool has_entry(const struct proto_readdir_reply *r, const char *name, uint8_t type,
		      uint64_t ino)
{
	for (uint32_t i = 0; i < r->count; i++)
		if (!strcmp(r->entries[i].name, name))
			return r->entries[i].type == type && (!ino || r->entries[i].ino == ino);
	return false;
}

static void test_readdir(void **state)
{
	(void)state;
	struct proto_readdir_reply r;
	void *storage = NULL;
	assert_int_equal(do_readdir("/dir", &r, &storage), 0);
	assert_int_equal(r.count, 7);
	assert_true(has_entry(&r, ".", DT_DIR, host_ino(host_path("/dir"))));
	assert_true(has_entry(&r, "..", DT_DIR, 0));
	assert_true(has_entry(&r, "a", DT_REG, host_ino(host_path("/dir/a"))));
	assert_true(has_entry(&r, "b", DT_REG, 0));
	assert_true(has_entry(&r, "c", DT_REG, 0));
	assert_true(has_entry(&r, "sub", DT_DIR, 0));
	assert_true(has_entry(&r, "deep_rel_secret", DT_LNK, 0));
	free(storage);

	/* above the root is the root */
	assert_int_equal(do_readdir("/../../..", &r, &storage), 0);
	assert_true(has_entry(&r, ".", DT_DIR, host_ino(fx.root)));
	assert_true(has_entry(&r, "etc", DT_DIR, 0));
	assert_true(has_entry(&r, "abs_secret", DT_LNK, 0));
	free(storage);

	assert_true(host_exists(fmt("%s/hostfile", fx.hostdir)));
	const char *escapes[] = {"/abs_hostdir", "/rel_hostdir", fmt("/up%s", fx.hostdir),
				 fmt("/../../..%s", fx.hostdir),
				 fmt("/abs_hostdir/../..%s", fx.hostdir)};
	for (size_t i = 0; i < HM_ARRAY_SIZE(escapes); i++) {
		storage = NULL;
		assert_int_equal(do_readdir(escapes[i], &r, &storage), ENOENT);
	}
	/* the root's /tmp, not the host's */
	assert_int_equal(do_readdir("/../../tmp", &r, &storage), 0);
	assert_true(has_entry(&r, ".", DT_DIR, host_ino(host_path("/tmp"))));
	assert_int_equal(r.count, 2);
	free(storage);

	assert_int_equal(do_readdir("/etc/hostname", &r, &storage), ENOTDIR);
	assert_int_equal(do_readdir("/fifo", &r, &storage), ENOTDIR);
}

static void make_entries(const char *dir, int from, int to)
{
	hm_cleanup_close int dfd = open(host_path(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	for (int i = from; i < to; i++) {
		int fd = openat(dfd, fmt("entry-%05d", i), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		assert_true(fd >= 0);
		close(fd);
	}
}

static void test_readdir_limit(void **state)
{
	(void)state;
	struct proto_readdir_reply r;
	void *storage = NULL;
	/* exactly the limit, "." and ".." included */
	assert_int_equal(mkdir(host_path("/many"), 0755), 0);
	make_entries("/many", 0, AGENT_READDIR_MAX_ENTRIES - 2);
	assert_int_equal(do_readdir("/many", &r, &storage), 0);
	assert_int_equal(r.count, AGENT_READDIR_MAX_ENTRIES);
	assert_true(has_entry(&r, fmt("entry-%05d", AGENT_READDIR_MAX_ENTRIES - 3), DT_REG, 0));
	free(storage);
	/* one more is refused, not truncated */
	make_entries("/many", AGENT_READDIR_MAX_ENTRIES - 2, AGENT_READDIR_MAX_ENTRIES - 1);
	storage = NULL;
	assert_int_equal(do_readdir("/many", &r, &storage), E2BIG);
	struct hm_err err = {0};
	assert_int_equal(hm_rm_rf(host_path("/many"), &err), 0);
}

static void test_write(void **state)
{
	(void)state;
	struct proto_file_write_reply out;
	assert_int_equal(
	    do_write("/dir/new", PROTO_WRITE_CREATE | PROTO_WRITE_EXCL, 0640, 0, "hello", &out), 0);
	assert_int_equal(out.written, 5);
	assert_int_equal(out.st.size, 5);
	assert_int_equal(out.st.mode & 07777, 0640);
	assert_content("/dir/new", "hello");
	assert_int_equal(do_write("/dir/new", 0, 0, 5, " world", &out), 0);
	assert_int_equal(out.st.size, 11);
	assert_content("/dir/new", "hello world");
	assert_int_equal(
	    do_write("/dir/new", PROTO_WRITE_TRUNC | PROTO_WRITE_FSYNC, 0, 0, "x", &out), 0);
	assert_content("/dir/new", "x");
	/* "open for write": zero bytes, TRUNC */
	assert_int_equal(do_write("/dir/new", PROTO_WRITE_TRUNC, 0, 0, NULL, &out), 0);
	assert_int_equal(out.st.size, 0);
	assert_int_equal(
	    do_write("/dir/new", PROTO_WRITE_CREATE | PROTO_WRITE_EXCL, 0644, 0, "y", NULL),
	    EEXIST);
	assert_int_equal(do_write("/dir/missing", 0, 0, 0, "y", NULL), ENOENT);
	assert_int_equal(do_write("/missing/x", PROTO_WRITE_CREATE, 0644, 0, "y", NULL), ENOENT);
	assert_int_equal(do_write("/dir", 0, 0, 0, "y", NULL), EISDIR);
	assert_int_equal(do_write("/etc_link", PROTO_WRITE_NOFOLLOW, 0, 0, "y", NULL), ELOOP);
	assert_int_equal(do_write("/dir/new", 0, 0, (uint64_t)INT64_MAX, "y", NULL), EFBIG);
	assert_int_equal(do_write("/dir/new", 0x100, 0, 0, "y", NULL), EINVAL);
	assert_int_equal(unlink(host_path("/dir/new")), 0);
}

static void test_write_escapes_stay_inside(void **state)
{
	(void)state;
	assert_host_secret_intact();
	/* through a symlink to an existing host file: no CREATE finds nothing */
	assert_int_equal(do_write("/abs_secret", 0, 0, 0, "pwned", NULL), ENOENT);
	assert_int_equal(do_write("/rel_secret", PROTO_WRITE_TRUNC, 0, 0, "pwned", NULL), ENOENT);
	/* with CREATE, the link target is created inside the root */
	const char **paths = escape_paths();
	for (int i = 0; paths[i]; i++) {
		assert_int_equal(do_write(paths[i], PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC, 0600, 0,
					  "pwned", NULL),
				 0);
		assert_host_secret_intact();
		assert_content(fx.secret_in_root, "pwned");
		assert_int_equal(unlink(host_path(fx.secret_in_root)), 0);
	}
	/* a dangling symlink pointing at a new host path */
	assert_false(host_exists(fx.created));
	assert_int_equal(do_write("/abs_newfile", PROTO_WRITE_CREATE, 0644, 0, "new", NULL), 0);
	assert_false(host_exists(fx.created));
	assert_true(host_exists(host_path(fx.created)));
	assert_int_equal(unlink(host_path(fx.created)), 0);
	/* O_EXCL never follows the dangling link */
	assert_int_equal(
	    do_write("/abs_newfile", PROTO_WRITE_CREATE | PROTO_WRITE_EXCL, 0644, 0, "new", NULL),
	    EEXIST);
	assert_int_equal(
	    do_write(fmt("/../../..%s", fx.created), PROTO_WRITE_CREATE, 0644, 0, "new", NULL), 0);
	assert_false(host_exists(fx.created));
	assert_true(host_exists(host_path(fx.created)));
	assert_int_equal(unlink(host_path(fx.created)), 0);
	assert_int_equal(
	    do_write(fmt("/abs_hostdir/hostfile"), PROTO_WRITE_CREATE, 0644, 0, "x", NULL), ENOENT);
}

static void test_mkdir(void **state)
{
	(void)state;
	struct stat st;
	assert_int_equal(do_mkdir("/dir/newdir", 0750), 0);
	assert_int_equal(stat(host_path("/dir/newdir"), &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0750);
	assert_int_equal(do_mkdir("/dir/newdir", 0750), EEXIST);
	assert_int_equal(do_mkdir("/dir/newdir2/", 0755), 0);
	assert_true(host_exists(host_path("/dir/newdir2")));
	assert_int_equal(do_mkdir("/", 0755), EEXIST);
	assert_int_equal(do_mkdir("/dir/.", 0755), EEXIST);
	assert_int_equal(do_mkdir("/dir/..", 0755), EEXIST);
	assert_int_equal(do_mkdir("/missing/x", 0755), ENOENT);
	assert_int_equal(do_mkdir("/etc/hostname/x", 0755), ENOTDIR);
	assert_int_equal(do_mkdir("/dir/x", 010000), EINVAL);

	/* escapes: through ".." lands in the root's /tmp, through host-dir links nowhere */
	assert_int_equal(do_mkdir(fmt("/../../..%s", fx.mkdired), 0755), 0);
	assert_false(host_exists(fx.mkdired));
	assert_true(host_exists(host_path(fx.mkdired)));
	assert_int_equal(rmdir(host_path(fx.mkdired)), 0);
	assert_int_equal(do_mkdir("/abs_hostdir/x", 0755), ENOENT);
	assert_int_equal(do_mkdir("/rel_hostdir/x", 0755), ENOENT);
	assert_false(host_exists(fmt("%s/x", fx.hostdir)));
	/* mkdir never follows a final symlink: the link exists */
	assert_int_equal(do_mkdir("/abs_newfile", 0755), EEXIST);
	assert_false(host_exists(fx.created));
	assert_false(host_exists(host_path(fx.created)));
	assert_int_equal(rmdir(host_path("/dir/newdir")), 0);
	assert_int_equal(rmdir(host_path("/dir/newdir2")), 0);
}

static void test_unlink(void **state)
{
	(void)state;
	write_host_file(host_path("/dir/tmpfile"), "t", 0644);
	assert_int_equal(do_unlink("/dir/tmpfile", 0), 0);
	assert_false(host_exists(host_path("/dir/tmpfile")));
	assert_int_equal(do_unlink("/dir/tmpfile", 0), ENOENT);

	assert_int_equal(mkdir(host_path("/dir/emptydir"), 0755), 0);
	assert_int_equal(do_unlink("/dir/emptydir", 0), EISDIR);
	assert_int_equal(do_unlink("/dir/emptydir/", PROTO_UNLINK_DIR), 0);
	assert_false(host_exists(host_path("/dir/emptydir")));
	assert_int_equal(do_unlink("/dir/sub", PROTO_UNLINK_DIR), 0);
	assert_int_equal(mkdir(host_path("/dir/sub"), 0755), 0);
	assert_int_equal(do_unlink("/dir", PROTO_UNLINK_DIR), ENOTEMPTY);
	assert_int_equal(do_unlink("/etc/hostname/", 0), ENOTDIR);
	assert_int_equal(do_unlink("/dir/", 0), EISDIR);
	assert_int_equal(do_unlink("/", PROTO_UNLINK_DIR), EBUSY);
	assert_int_equal(do_unlink("/dir/.", PROTO_UNLINK_DIR), EINVAL);
	assert_int_equal(do_unlink("/dir/..", PROTO_UNLINK_DIR), ENOTEMPTY);
	assert_int_equal(do_unlink("/dir/..", 0), EISDIR);

	/* escapes */
	assert_host_secret_intact();
	assert_int_equal(do_unlink("/abs_hostdir/hostfile", 0), ENOENT);
	assert_int_equal(do_unlink("/rel_hostdir/hostfile", 0), ENOENT);
	assert_int_equal(do_unlink(fmt("/../../../..%s", fx.secret), 0), ENOENT);
	assert_int_equal(do_unlink(fmt("/up%s", fx.secret), 0), ENOENT);
	assert_true(host_exists(fmt("%s/hostfile", fx.hostdir)));
	assert_host_secret_intact();
	/* unlinking a link removes the link, never its target */
	assert_int_equal(do_unlink("/abs_secret", 0), 0);
	assert_false(host_exists(host_path("/abs_secret")));
	assert_host_secret_intact();
	symlink_in_root(fx.secret, "/abs_secret");
}

static void test_rename(void **state)
{
	(void)state;
	assert_int_equal(do_rename("/dir/a", "/dir/a2", 0), 0);
	assert_content("/dir/a2", "aaa");
	assert_int_equal(do_rename("/dir/a2", "/dir/a", 0), 0);
	assert_int_equal(do_rename("/dir/a", "/dir/b", PROTO_RENAME_NOREPLACE), EEXIST);
	assert_int_equal(do_rename("/dir/a", "/dir/b", PROTO_RENAME_EXCHANGE), 0);
	assert_content("/dir/a", "bbbb");
	assert_content("/dir/b", "aaa");
	assert_int_equal(do_rename("/dir/a", "/dir/b", PROTO_RENAME_EXCHANGE), 0);
	assert_content("/dir/a", "aaa");
	assert_int_equal(do_rename("/dir/a", "/dir/b", 3), EINVAL);
	assert_int_equal(do_rename("/", "/x", 0), EBUSY);
	assert_int_equal(do_rename("/dir/.", "/x", 0), EBUSY);
	assert_int_equal(do_rename("/dir/a", "/dir/..", 0), EBUSY);
	assert_int_equal(do_rename("/dir/a/", "/dir/a3", 0), ENOTDIR);
	assert_int_equal(do_rename("/dir/sub/", "/dir/sub2/", 0), 0);
	assert_int_equal(do_rename("/dir/sub2", "/dir/sub", 0), 0);
	assert_int_equal(do_rename("/dir/missing", "/dir/x", 0), ENOENT);

	/* escapes: sources and destinations outside the root do not exist */
	assert_host_secret_intact();
	assert_int_equal(do_rename("/abs_hostdir/hostfile", "/stolen", 0), ENOENT);
	assert_int_equal(do_rename(fmt("/../../..%s", fx.secret), "/stolen", 0), ENOENT);
	assert_true(host_exists(fmt("%s/hostfile", fx.hostdir)));
	assert_host_secret_intact();
	assert_int_equal(do_rename("/dir/b", "/abs_hostdir/b", 0), ENOENT);
	assert_int_equal(do_rename("/dir/b", "/rel_hostdir/b", 0), ENOENT);
	assert_false(host_exists(fmt("%s/b", fx.hostdir)));
	assert_int_equal(do_rename("/dir/b", fmt("/../../..%s", fx.renamed), 0), 0);
	assert_false(host_exists(fx.renamed));
	assert_content(fx.renamed, "bbbb");
	assert_int_equal(do_rename(fx.renamed, "/dir/b", 0), 0);
	/* renaming a link moves the link, never its target */
	assert_int_equal(do_rename("/abs_secret", "/abs_secret2", 0), 0);
	assert_host_secret_intact();
	assert_int_equal(do_rename("/abs_secret2", "/abs_secret", 0), 0);
	/* replacing a link replaces the link: the host file stays */
	write_host_file(host_path("/dir/victim"), "v", 0644);
	assert_int_equal(do_rename("/dir/victim", "/abs_secret", 0), 0);
	assert_host_secret_intact();
	assert_content("/abs_secret", "v");
	assert_int_equal(unlink(host_path("/abs_secret")), 0);
	symlink_in_root(fx.secret, "/abs_secret");
}

static void test_statfs(void **state)
{
	(void)state;
	struct proto_statfs got;
	struct statfs want;
	assert_int_equal(do_statfs("/", &got), 0);
	assert_int_equal(statfs(fx.root, &want), 0);
	assert_int_equal(got.type, (uint64_t)want.f_type);
	assert_int_equal(got.bsize, (uint64_t)want.f_bsize);
	assert_int_equal(got.blocks, want.f_blocks);
	assert_int_equal(do_statfs("/etc_link", &got), 0);
	assert_int_equal(got.type, (uint64_t)want.f_type);
	assert_int_equal(do_statfs("/abs_hostdir", &got), ENOENT);
	if (fx.proc_mounted) {
		assert_int_equal(do_statfs("/proc", &got), 0);
		assert_int_equal(got.type, PROC_SUPER_MAGIC);
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_fifo_never_blocks(void **state)
{
	(void)state;
	alarm(10); /* a blocked open kills the test instead of hanging it */
	double t0 = now_s();
	struct agent_file_read_result res;
	assert_int_equal(do_read("/fifo", 0, 0, 0, &res), EINVAL);
	assert_int_equal(do_read("/fifo", PROTO_READ_NOFOLLOW, 0, 0, &res), EINVAL);
	assert_int_equal(do_write("/fifo", 0, 0, 0, "x", NULL), EINVAL);
	assert_int_equal(
	    do_write("/fifo", PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC, 0644, 0, "x", NULL), EINVAL);
	struct proto_readdir_reply r;
	void *storage = NULL;
	assert_int_equal(do_readdir("/fifo", &r, &storage), ENOTDIR);
	alarm(0);
	assert_true(now_s() - t0 < 2.0);
	if (fx.proc_mounted) /* a character device is refused before it is opened */
		assert_int_equal(do_read("/proc/self/fd/0", 0, 0, 0, &res), ELOOP);
}

static void test_size_caps(void **state)
{
	(void)state;
	struct agent_file_read_result res;
	uint64_t n = strlen(HOSTNAME_CONTENT);
	assert_int_equal(do_read("/etc/hostname", 0, n - 1, 0, &res), EFBIG);
	assert_int_equal(do_read("/etc/hostname", 0, 0, n - 1, &res), EFBIG);
	assert_int_equal(do_read("/etc/hostname", 0, 1 << 20, n - 1, &res), EFBIG);
	assert_int_equal(do_read("/etc/hostname", 0, n, n, &res), 0);
	assert_int_equal(res.size, n);
	free(res.data);

	/* above PROTO_INLINE_MAX: the fd, for the core to stream */
	assert_int_equal(do_read("/big", 0, 0, 0, &res), 0);
	assert_null(res.data);
	assert_true(res.fd >= 0);
	assert_int_equal(res.size, BIG_SIZE);
	assert_int_equal(res.st.size, BIG_SIZE);
	assert_int_equal(lseek(res.fd, 0, SEEK_CUR), 0);
	int fl = fcntl(res.fd, F_GETFL);
	assert_int_equal(fl & O_ACCMODE, O_RDONLY);
	assert_false(fl & O_NONBLOCK);
	assert_true(fcntl(res.fd, F_GETFD) & FD_CLOEXEC);
	char buf[16];
	assert_int_equal(read(res.fd, buf, sizeof(buf)), sizeof(buf));
	close(res.fd);
	assert_int_equal(do_read("/big", 0, PROTO_INLINE_MAX, 0, &res), EFBIG);

	/* procfs files are not read at all: the agent would read them with root's
	 * capabilities (/proc/kallsyms shows kernel addresses to root only) */
	if (fx.proc_mounted) {
		char status[4096];
		assert_int_equal(read_string("/proc/self/comm", status, sizeof(status)), EACCES);
		assert_int_equal(read_string("/proc/kallsyms", status, sizeof(status)), EACCES);
		assert_int_equal(do_read("/proc/self/status", 0, 0, 16, &res), EACCES);
		/* nor written (a harmless one: the thread's name) */
		char comm[32];
		assert_int_equal(prctl(PR_GET_NAME, comm), 0);
		assert_int_equal(do_write("/proc/thread-self/comm", 0, 0, 0, "renamed", NULL),
				 EACCES);
		char after[32];
		assert_int_equal(prctl(PR_GET_NAME, after), 0);
		assert_string_equal(after, comm);
	}
}

static void test_magic_links_refused(void **state)
{
	(void)state;
	if (!fx.proc_mounted)
		skip();
	const char *through_root = fmt("/proc/self/root%s", fx.secret);
	const char *through_child = fmt("/proc/%d/root%s", (int)fx.child, fx.secret);
	const char *through_fd = fmt("/proc/self/fd/%d", fx.secret_fd);
	const char *reads[] = {"/magic", "/magic_fd", through_root, through_child, through_fd};
	for (size_t i = 0; i < HM_ARRAY_SIZE(reads); i++) {
		struct agent_file_read_result res;
		struct proto_stat st;
		if (do_read(reads[i], 0, 0, 0, &res) != ELOOP)
			fail_msg("read %s was not refused", reads[i]);
		assert_int_equal(do_stat(reads[i], 0, &st), ELOOP);
		assert_int_equal(do_access(reads[i], 0, 0), ELOOP);
		struct proto_statfs sfs;
		assert_int_equal(do_statfs(reads[i], &sfs), ELOOP);
	}
	struct proto_stat st;
	assert_int_equal(do_stat("/proc/self/root", PROTO_STAT_NOFOLLOW, &st), 0);
	assert_true(S_ISLNK(st.mode));
	char buf[PROTO_PATH_MAX + 1];
	assert_int_equal(do_readlink("/proc/self/root", buf, sizeof(buf)), ELOOP);
	assert_int_equal(do_readlink("/proc/self/exe", buf, sizeof(buf)), ELOOP);

	struct proto_readdir_reply r;
	void *storage = NULL;
	assert_int_equal(do_readdir("/proc/self/root/tmp", &r, &storage), ELOOP);
	assert_int_equal(do_readdir("/proc/self/cwd", &r, &storage), ELOOP);

	assert_int_equal(
	    do_write(fmt("/proc/self/root%s", fx.created), PROTO_WRITE_CREATE, 0644, 0, "x", NULL),
	    ELOOP);
	assert_int_equal(do_write("/magic", PROTO_WRITE_TRUNC, 0, 0, "x", NULL), ELOOP);
	assert_int_equal(do_mkdir(fmt("/proc/self/root%s", fx.mkdired), 0755), ELOOP);
	assert_int_equal(do_unlink(through_root, 0), ELOOP);
	assert_int_equal(do_rename("/dir/a", fmt("/proc/self/root%s", fx.renamed), 0), ELOOP);
	assert_int_equal(do_rename(through_root, "/stolen", 0), ELOOP);
	assert_false(host_exists(fx.created));
	assert_false(host_exists(fx.mkdired));
	assert_false(host_exists(fx.renamed));
	assert_host_secret_intact();
}

static void test_bad_requests(void **state)
{
	(void)state;
	struct agent_file_read_result res;
	struct proto_stat st;
	assert_int_equal(do_read("etc/hostname", 0, 0, 0, &res), EINVAL);
	assert_int_equal(do_read("", 0, 0, 0, &res), EINVAL);
	assert_int_equal(do_read(NULL, 0, 0, 0, &res), EINVAL);
	assert_int_equal(do_read("/etc/hostname", 0x80, 0, 0, &res), EINVAL);
	assert_int_equal(do_stat("/etc/hostname", 0x80, &st), EINVAL);
	assert_int_equal(do_mkdir("relative", 0755), EINVAL);
	assert_int_equal(do_rename("/dir/a", "relative", 0), EINVAL);

	static char longpath[PROTO_PATH_MAX + 10];
	longpath[0] = '/';
	memset(longpath + 1, 'a', sizeof(longpath) - 2);
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(do_stat(longpath, 0, &st), ENAMETOOLONG);
	assert_int_equal(do_mkdir(longpath, 0755), ENAMETOOLONG);
	char longname[PROTO_FILENAME_MAX + 3];
	longname[0] = '/';
	memset(longname + 1, 'b', sizeof(longname) - 2);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(do_mkdir(longname, 0755), ENAMETOOLONG);
	assert_int_equal(do_stat(longname, 0, &st), ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_escapes_are_real),
	    cmocka_unit_test(test_read_normal),
	    cmocka_unit_test(test_read_escapes_stay_inside),
	    cmocka_unit_test(test_stat),
	    cmocka_unit_test(test_access),
	    cmocka_unit_test(test_readlink),
	    cmocka_unit_test(test_readdir),
	    cmocka_unit_test(test_readdir_limit),
	    cmocka_unit_test(test_write),
	    cmocka_unit_test(test_write_escapes_stay_inside),
	    cmocka_unit_test(test_mkdir),
	    cmocka_unit_test(test_unlink),
	    cmocka_unit_test(test_rename),
	    cmocka_unit_test(test_statfs),
	    cmocka_unit_test(test_fifo_never_blocks),
	    cmocka_unit_test(test_size_caps),
	    cmocka_unit_test(test_magic_links_refused),
	    cmocka_unit_test(test_bad_requests),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
