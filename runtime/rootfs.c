/* A minimal root filesystem made of Debian's busybox-static, and copying static binaries
 * into one. Both are idempotent: running them again repairs and updates, and never
 * replaces what a user put into the rootfs. */
#include <elf.h>
#include <fcntl.h>
#include <libgen.h>
#include <spawn.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "runtime/internal.h"

#define HOST_BUSYBOX "/bin/busybox"

extern char **environ;

static const struct {
	const char *path;
	mode_t mode;
} rootfs_dirs[] = {
    {"bin", 0755},	     {"sbin", 0755},	{"etc", 0755},	    {"proc", 0555},
    {"sys", 0555},	     {"dev", 0755},	{"tmp", 01777},	    {"root", 0700},
    {"home", 0755},	     {"mnt", 0755},	{"opt", 0755},	    {"run", 0755},
    {"var", 0755},	     {"var/run", 0755}, {"var/log", 0755},  {"var/tmp", 01777},
    {"usr", 0755},	     {"usr/bin", 0755}, {"usr/sbin", 0755}, {"usr/local", 0755},
    {"usr/local/bin", 0755},
};

static const char os_release[] = "NAME=\"hermit busybox\"\n"
				 "ID=hermit-busybox\n"
				 "PRETTY_NAME=\"hermit busybox rootfs (trace-pod)\"\n"
				 "VERSION_ID=1\n";

static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
			     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
static const char group[] = "root:x:0:\nnogroup:x:65534:\n";

/* Copy src to dst with mode through a temporary file renamed into place, so a rootfs
 * in use never has a half-written binary and a running one is not modified. */
static int copy_file(const char *src, const char *dst, mode_t mode, struct hm_err *err)
{
	hm_autofd in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return hm_err_errno(err, "%s", src);
	struct stat st;
	if (fstat(in, &st) < 0)
		return hm_err_errno(err, "stat %s", src);
	if (!S_ISREG(st.st_mode))
		return hm_err_set(err, 0, "%s: not a regular file", src);
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp%d", dst, (int)getpid()) >= (int)sizeof(tmp))
		return hm_err_set(err, ENAMETOOLONG, "%s", dst);
	hm_autofd out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (out < 0)
		return hm_err_errno(err, "create %s", tmp);
	off_t left = st.st_size;
	while (left > 0) {
		ssize_t n = sendfile(out, in, NULL, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			unlink(tmp);
			return hm_err_set(err, e, "copy %s to %s", src, tmp);
		}
		left -= n;
	}
	if (fchmod(out, mode) < 0 || rename(tmp, dst) < 0) {
		int e = errno;
		unlink(tmp);
		return hm_err_set(err, e, "install %s", dst);
	}
	return 0;
}

/* Run `busybox --list-full` (applets with their usual directory, e.g. usr/bin/env);
 * fall back to --list, whose applets then all go into bin/. */
static int busybox_applets(const char *busybox, const char *flag, char **out, struct hm_err *err)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	char *argv[] = {(char *)busybox, (char *)flag, NULL};
	pid_t pid;
	int rc = posix_spawn(&pid, busybox, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	hm_autofd rfd = pipefd[0];
	if (rc != 0)
		return hm_err_set(err, rc, "run %s %s", busybox, flag);
	char *buf = NULL;
	size_t n = 0;
	struct hm_err read_err;
	if (hm_read_fd(rfd, 16384, 0, busybox, &buf, &n, &read_err) < 0)
		buf = NULL;
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!buf)
		return hm_err_set(err, read_err.code, "read %s %s", busybox, flag);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || n == 0) {
		free(buf);
		return hm_err_set(err, 0, "%s %s failed", busybox, flag);
	}
	*out = buf;
	return 0;
}

/* One symlink per applet, pointing at /bin/busybox; existing entries (a deployed binary
 * with an applet's name, an earlier run's link) are left alone. */
static int link_applets(int root, struct hm_err *err)
{
	hm_autofree char *list = NULL;
	bool full = true;
	if (busybox_applets(HOST_BUSYBOX, "--list-full", &list, NULL) < 0) {
		full = false;
		if (busybox_applets(HOST_BUSYBOX, "--list", &list, err) < 0)
			return -1;
	}
	int count = 0;
	char *save = NULL;
	for (char *line = strtok_r(list, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!*line || strstr(line, "..") || line[0] == '/')
			continue;
		char rel[PATH_MAX];
		if (full)
			snprintf(rel, sizeof(rel), "%s", line);
		else
			snprintf(rel, sizeof(rel), "bin/%s", line);
		if (!strcmp(rel, "bin/busybox"))
			continue;
		/* --list-full names linuxrc at the top; keep the tree's top level tidy */
		if (!strchr(rel, '/'))
			continue;
		if (symlinkat("/bin/busybox", root, rel) < 0 && errno != EEXIST)
			return hm_err_errno(err, "symlink %s", rel);
		count++;
	}
	hm_debug("rootfs: %d busybox applets", count);
	return 0;
}

static int write_etc(int root, const char *name, const char *data, bool replace, struct hm_err *err)
{
	char rel[64];
	snprintf(rel, sizeof(rel), "etc/%s", name);
	int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (replace ? O_TRUNC : O_EXCL);
	hm_autofd fd = openat(root, rel, flags, 0644);
	if (fd < 0) {
		if (!replace && errno == EEXIST)
			return 0;
		return hm_err_errno(err, "create %s", rel);
	}
	if (hm_write_all(fd, data, strlen(data)) < 0)
		return hm_err_errno(err, "write %s", rel);
	return 0;
}

int rt_rootfs_build(const char *dir, struct hm_err *err)
{
	if (access(HOST_BUSYBOX, X_OK) < 0)
		return hm_err_errno(err, "%s (install Debian's busybox-static: scripts/deps.sh)",
				    HOST_BUSYBOX);
	if (hm_mkdir_p(dir, 0755, err) < 0)
		return -1;
	hm_autofd root = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return hm_err_errno(err, "%s", dir);
	for (size_t i = 0; i < HM_ARRAY_SIZE(rootfs_dirs); i++) {
		if (mkdirat(root, rootfs_dirs[i].path, rootfs_dirs[i].mode) < 0 && errno != EEXIST)
			return hm_err_errno(err, "mkdir %s/%s", dir, rootfs_dirs[i].path);
		/* explicit chmod: the umask would drop tmp's sticky world-writable bits */
		if (fchmodat(root, rootfs_dirs[i].path, rootfs_dirs[i].mode, 0) < 0)
			return hm_err_errno(err, "chmod %s/%s", dir, rootfs_dirs[i].path);
	}
	char dst[PATH_MAX];
	snprintf(dst, sizeof(dst), "%s/bin/busybox", dir);
	if (copy_file(HOST_BUSYBOX, dst, 0755, err) < 0)
		return -1;
	if (link_applets(root, err) < 0)
		return hm_err_prefix(err, "rootfs %s", dir);
	if (write_etc(root, "os-release", os_release, true, err) < 0 ||
	    write_etc(root, "passwd", passwd, true, err) < 0 ||
	    write_etc(root, "group", group, true, err) < 0)
		return hm_err_prefix(err, "rootfs %s", dir);
	/* bind-mount targets for the pod's own files; kept if a user edited them */
	const char *targets[] = {"hosts", "resolv.conf", "hostname"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(targets); i++)
		if (write_etc(root, targets[i], "", false, err) < 0)
			return hm_err_prefix(err, "rootfs %s", dir);
	return 0;
}

/* A dynamically linked binary has a PT_INTERP program header. */
static bool elf_is_dynamic(const char *file)
{
	hm_autofd fd = open(file, O_RDONLY | O_CLOEXEC);
	Elf64_Ehdr eh;
	if (fd < 0 || pread(fd, &eh, sizeof(eh), 0) != sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_phentsize != sizeof(Elf64_Phdr))
		return false;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		if (pread(fd, &ph, sizeof(ph), eh.e_phoff + (off_t)i * sizeof(ph)) != sizeof(ph))
			return false;
		if (ph.p_type == PT_INTERP)
			return true;
	}
	return false;
}

int rt_rootfs_deploy(const char *rootfs, const char *file, struct hm_err *err)
{
	struct stat st;
	if (stat(file, &st) < 0)
		return hm_err_errno(err, "%s", file);
	if (!S_ISREG(st.st_mode))
		return hm_err_set(err, 0, "%s: not a regular file", file);
	char bin[PATH_MAX];
	snprintf(bin, sizeof(bin), "%s/bin", rootfs);
	if (stat(rootfs, &st) < 0)
		return hm_err_errno(err, "rootfs %s", rootfs);
	if (stat(bin, &st) < 0)
		return hm_err_errno(err, "rootfs %s: %s", rootfs, bin);
	if (!S_ISDIR(st.st_mode))
		return hm_err_set(err, ENOTDIR, "rootfs %s: %s", rootfs, bin);
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s", file);
	char dst[PATH_MAX];
	if (snprintf(dst, sizeof(dst), "%s/%s", bin, basename(copy)) >= (int)sizeof(dst))
		return hm_err_set(err, ENAMETOOLONG, "%s/%s", bin, basename(copy));
	/* rename() in copy_file replaces a busybox applet link of the same name instead of
	 * writing through it into busybox */
	if (copy_file(file, dst, 0755, err) < 0)
		return -1;
	if (elf_is_dynamic(file))
		hm_warn("%s is dynamically linked: it needs its libraries inside the rootfs", file);
	return 0;
}
