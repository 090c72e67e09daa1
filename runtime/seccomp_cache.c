/* The compiled default profile, kept as a file so that a pod start does not pay
 * libseccomp's probing and compiling (~1.5 ms) again. The program depends only on this
 * trace-pod binary (the profile is its code) and the libseccomp it runs with, so both
 * name the file; a new build or library simply compiles and writes its own.
 *
 * The file becomes the pod's syscall filter: a file that someone other than root could
 * have written (owner, group/other write bits, a symlink, not a regular file) is never
 * used — the profile is compiled again instead. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <seccomp.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/internal.h"

#define CACHE_PREFIX "seccomp-"
#define CACHE_SUFFIX ".bpf"

int rt_seccomp_cache_path(const char *dir, char *buf, size_t len, struct hm_err *err)
{
	struct stat exe;
	if (stat("/proc/self/exe", &exe) < 0)
		return hm_err_errno(err, "seccomp cache: stat /proc/self/exe");
	const struct scmp_version *v = seccomp_version();
	int n =
	    snprintf(buf, len, "%s/" CACHE_PREFIX "%llx-%llx-%lld.%09ld-%lld-%u.%u.%u" CACHE_SUFFIX,
		     dir, (unsigned long long)exe.st_dev, (unsigned long long)exe.st_ino,
		     (long long)exe.st_mtim.tv_sec, exe.st_mtim.tv_nsec, (long long)exe.st_size,
		     v ? v->major : 0, v ? v->minor : 0, v ? v->micro : 0);
	if (n < 0 || (size_t)n >= len)
		return hm_err_plain(err, ENAMETOOLONG, "seccomp cache: path too long in %s", dir);
	return 0;
}

/* 1 and prog filled from a trustworthy cache file, 0 when there is none to use. */
static int cache_read(const char *path, struct rt_seccomp_prog *prog)
{
	hm_cleanup_close int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return 0;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 022)) {
		hm_warn("seccomp: ignoring %s: not a regular file that only this user can write",
			path);
		return 0;
	}
	char *bytes;
	size_t len;
	struct hm_err err;
	if (hm_read_fd(fd, (size_t)st.st_size, BPF_MAXINSNS * sizeof(struct sock_filter),
		       "seccomp cache", &bytes, &len, &err) < 0)
		return 0;
	if (len == 0 || len % sizeof(struct sock_filter)) {
		free(bytes);
		return 0;
	}
	prog->insns = (struct sock_filter *)bytes;
	prog->len = len / sizeof(struct sock_filter);
	return 1;
}

/* Best effort: a failure only means the next start compiles again. The files of other
 * builds go, so that rebuilds do not pile them up in /run. */
static void cache_write(const char *dir, const char *path, const struct rt_seccomp_prog *prog)
{
	char tmp[PATH_MAX];
	struct hm_err err;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return;
	if (hm_create_file(tmp, prog->insns, prog->len * sizeof(struct sock_filter), 0644, &err) <
	    0) {
		hm_debug("seccomp cache: %s", err.msg);
		unlink(tmp);
		return;
	}
	if (rename(tmp, path) < 0) {
		hm_debug("seccomp cache: rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return;
	}
	DIR *d = opendir(dir);
	if (!d)
		return;
	const char *mine = strrchr(path, '/') + 1;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (!strncmp(de->d_name, CACHE_PREFIX, strlen(CACHE_PREFIX)) &&
		    n > strlen(CACHE_SUFFIX) &&
		    !strcmp(de->d_name + n - strlen(CACHE_SUFFIX), CACHE_SUFFIX) &&
		    strcmp(de->d_name, mine))
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

int rt_seccomp_compile_cached(struct rt_seccomp_prog *prog, const char *cache_dir,
			      struct hm_err *err)
{
	char path[PATH_MAX];
	struct hm_err path_err;
	if (rt_seccomp_cache_path(cache_dir, path, sizeof(path), &path_err) < 0) {
		hm_debug("%s", path_err.msg);
		return rt_seccomp_compile(prog, err);
	}
	if (cache_read(path, prog))
		return 0;
	if (rt_seccomp_compile(prog, err) < 0)
		return -1;
	cache_write(cache_dir, path, prog);
	return 0;
}
