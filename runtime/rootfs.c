/* A minimal root filesystem made of Debian's busybox-static, and copying static binaries
 * into one. Both are idempotent: running them again repairs and updates, and never
 * replaces what a user put into the rootfs. "Repair" means: missing directories, links
 * and files are created, trace-pod's own files (busybox, passwd, group, os-release) are
 * restored as regular files, and directory modes are reset. Every path is resolved inside
 * the rootfs (rootfs_path.c): a symlink a pod planted is followed as the pod would see
 * it, and one that does not resolve inside the rootfs is an error that names it. */
#include <elf.h>
#include <fcntl.h>
#include <libgen.h>
#include <spawn.h>
#include <string.h>
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

/* Install the host file src at path in the rootfs (see rt_rootfs_install). */
static int install_host_file(int root, const char *src, const char *path, mode_t mode,
			     struct hm_err *err)
{
	hm_cleanup_close int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return hm_err_errno(err, "%s", src);
	struct stat st;
	if (fstat(in, &st) < 0)
		return hm_err_errno(err, "stat %s", src);
	if (!S_ISREG(st.st_mode))
		return hm_err_set(err, 0, "%s: not a regular file", src);
	return rt_rootfs_install(root, path, in, NULL, 0, mode, err);
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
	hm_cleanup_close int rfd = pipefd[0];
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
	hm_cleanup_free char *list = NULL;
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
		if (rt_rootfs_symlink(root, rel, "/bin/busybox", err) < 0)
			return -1;
		count++;
	}
	hm_debug("rootfs: %d busybox applets", count);
	return 0;
}

static int write_etc(int root, const char *name, const char *data, bool replace, struct hm_err *err)
{
	char rel[64];
	snprintf(rel, sizeof(rel), "etc/%s", name);
	if (replace)
		return rt_rootfs_install(root, rel, -1, data, strlen(data), 0644, err);
	return rt_rootfs_create(root, rel, data, strlen(data), 0644, err);
}

int rt_rootfs_build(const char *dir, struct hm_err *err)
{
	if (access(HOST_BUSYBOX, X_OK) < 0)
		return hm_err_errno(err, "%s (install Debian's busybox-static: scripts/deps.sh)",
				    HOST_BUSYBOX);
	if (hm_mkdir_p(dir, 0755, err) < 0)
		return -1;
	hm_cleanup_close int root = rt_rootfs_open_root(dir, err);
	if (root < 0)
		return -1;
	for (size_t i = 0; i < HM_ARRAY_SIZE(rootfs_dirs); i++)
		if (rt_rootfs_mkdir(root, rootfs_dirs[i].path, rootfs_dirs[i].mode, err) < 0)
			return hm_err_prefix(err, "rootfs %s", dir);
	if (install_host_file(root, HOST_BUSYBOX, "bin/busybox", 0755, err) < 0)
		return hm_err_prefix(err, "rootfs %s", dir);
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
	hm_cleanup_close int fd = open(file, O_RDONLY | O_CLOEXEC);
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
	hm_cleanup_close int in = open(file, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return hm_err_errno(err, "%s", file);
	struct stat st;
	if (fstat(in, &st) < 0)
		return hm_err_errno(err, "%s", file);
	if (!S_ISREG(st.st_mode))
		return hm_err_set(err, 0, "%s: not a regular file", file);
	hm_cleanup_close int root = rt_rootfs_open_root(rootfs, err);
	if (root < 0)
		return hm_err_prefix(err, "rootfs");
	hm_cleanup_close int bin = rt_rootfs_open(root, "bin", O_PATH | O_DIRECTORY, 0, err);
	if (bin < 0)
		return hm_err_prefix(err, "rootfs %s", rootfs);
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s", file);
	char dst[PATH_MAX];
	if (snprintf(dst, sizeof(dst), "bin/%s", basename(copy)) >= (int)sizeof(dst))
		return hm_err_set(err, ENAMETOOLONG, "%s", file);
	/* the rename replaces a busybox applet link of the same name instead of writing
	 * through it into busybox */
	if (rt_rootfs_install(root, dst, in, NULL, 0, 0755, err) < 0)
		return hm_err_prefix(err, "rootfs %s", rootfs);
	if (elf_is_dynamic(file))
		hm_warn("%s is dynamically linked: it needs its libraries inside the rootfs", file);
	return 0;
}
