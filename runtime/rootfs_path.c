/* The runtime's host-side access to a rootfs. A rootfs belongs to the pods that run in
 * it: any entry may have been replaced by a symlink to a host path ("/etc" -> the host's
 * /etc, "tmp" -> a 0600 host file). So no path into a rootfs is ever handed to a
 * path-based syscall: directories are opened with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS) below the rootfs's fd, which follows links as the pod would
 * see them and never out of the rootfs, and the final component is created, replaced or
 * linked relative to its opened parent without following it. Modes are set through fds.
 *
 * Also used by the pod's first process between clone and exec (mounts.c): no malloc. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include "runtime/internal.h"

#define IN_ROOT (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)

/* After a failed resolution of path: if a symlink on the way explains it, say which one
 * and where it points, keeping err's errno. The walk stops at the first symlink, so it
 * only ever resolves real directories of the rootfs. */
static int explain_failure(int root, const char *path, struct hm_err *err)
{
	int code = err->code;
	char prefix[PATH_MAX];
	const char *rel = path;
	while (*rel == '/')
		rel++;
	if (strlen(rel) >= sizeof(prefix))
		return -1;
	for (size_t i = 0;; i++) {
		if (rel[i] != '/' && rel[i] != '\0')
			continue;
		memcpy(prefix, rel, i);
		prefix[i] = '\0';
		struct stat st;
		if (i > 0 && fstatat(root, prefix, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (S_ISLNK(st.st_mode)) {
				char target[PATH_MAX];
				ssize_t n = readlinkat(root, prefix, target, sizeof(target) - 1);
				if (n < 0)
					return -1;
				target[n] = '\0';
				/* stripped of its leading '/', path's prefix is prefix itself */
				if (rel[i] == '\0')
					return hm_err_set(err, code,
							  "%s is a symlink to %s, followed only "
							  "inside the rootfs",
							  path, target);
				return hm_err_set(err, code,
						  "%s: %s is a symlink to %s, followed only inside "
						  "the rootfs",
						  path, prefix, target);
			}
			if (!S_ISDIR(st.st_mode))
				return -1;
		} else if (i > 0) {
			return -1;
		}
		if (rel[i] == '\0')
			return -1;
	}
}

int rt_rootfs_open_root(const char *dir, struct hm_err *err)
{
	/* the operator names the rootfs: a link in that path is theirs to follow */
	int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "%s", dir);
	return fd;
}

int rt_rootfs_open(int root, const char *path, int flags, mode_t mode, struct hm_err *err)
{
	int fd = hm_openat2(root, path, flags, mode, IN_ROOT, err);
	if (fd < 0)
		explain_failure(root, path, err);
	return fd;
}

/* The directory holding path's final component, opened inside the rootfs; *name points
 * at that component in path. */
static int open_parent(int root, const char *path, const char **name, struct hm_err *err)
{
	const char *slash = strrchr(path, '/');
	*name = slash ? slash + 1 : path;
	if (!**name || !strcmp(*name, ".") || !strcmp(*name, ".."))
		return hm_err_set(err, EINVAL, "%s: not a file name", path);
	char parent[PATH_MAX];
	size_t len = slash ? (size_t)(slash - path) : 0;
	if (len >= sizeof(parent))
		return hm_err_set(err, ENAMETOOLONG, "%s", path);
	memcpy(parent, path, len);
	parent[len] = '\0';
	int fd = rt_rootfs_open(root, len ? parent : ".", O_PATH | O_DIRECTORY, 0, err);
	if (fd < 0)
		/* the parent's own message already names the link */
		return hm_err_prefix(err, "%s", path);
	return fd;
}

int rt_rootfs_mkdir(int root, const char *path, mode_t mode, struct hm_err *err)
{
	const char *name;
	hm_cleanup_close int parent = open_parent(root, path, &name, err);
	if (parent < 0)
		return -1;
	/* mkdirat never follows a final symlink: an existing one is EEXIST and resolved
	 * (inside the rootfs) below */
	if (mkdirat(parent, name, mode) < 0 && errno != EEXIST)
		return hm_err_errno(err, "mkdir %s", path);
	hm_cleanup_close int dir =
	    rt_rootfs_open(root, path, O_RDONLY | O_DIRECTORY | O_NOCTTY, 0, err);
	if (dir < 0)
		return -1;
	/* explicit: the umask would drop tmp's sticky world-writable bits */
	if (fchmod(dir, mode) < 0)
		return hm_err_errno(err, "chmod %s", path);
	return 0;
}

/* A new temporary file beside name in parent; never an existing entry, never a link. */
static int create_temp(int parent, const char *name, char *tmp, size_t tmplen, struct hm_err *err)
{
	if (snprintf(tmp, tmplen, ".%s.tmp%d", name, (int)getpid()) >= (int)tmplen)
		return hm_err_set(err, ENAMETOOLONG, "%s", name);
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd =
		    openat(parent, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
		if (errno != EEXIST)
			break;
		/* left by an interrupted run, or planted: the name itself goes, not its target */
		unlinkat(parent, tmp, 0);
	}
	return hm_err_errno(err, "create %s", tmp);
}

static int copy_fd(int out, int in, struct hm_err *err)
{
	struct stat st;
	if (fstat(in, &st) < 0)
		return hm_err_errno(err, "stat");
	off_t left = st.st_size;
	while (left > 0) {
		ssize_t n = sendfile(out, in, NULL, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return hm_err_set(err, n < 0 ? errno : EIO, "copy");
		left -= n;
	}
	return 0;
}

int rt_rootfs_install(int root, const char *path, int src_fd, const void *data, size_t len,
		      mode_t mode, struct hm_err *err)
{
	const char *name;
	hm_cleanup_close int parent = open_parent(root, path, &name, err);
	if (parent < 0)
		return -1;
	char tmp[NAME_MAX + 1];
	hm_cleanup_close int out = create_temp(parent, name, tmp, sizeof(tmp), err);
	if (out < 0)
		return hm_err_prefix(err, "install %s", path);
	int rc = src_fd >= 0 ? copy_fd(out, src_fd, err)
			     : (hm_write_all(out, data, len) < 0 ? hm_err_errno(err, "write") : 0);
	/* rename replaces a link at path instead of writing through it, and a running
	 * binary or a file being read is never seen half-written */
	if (rc == 0 && (fchmod(out, mode) < 0 || renameat(parent, tmp, parent, name) < 0))
		rc = hm_err_errno(err, "rename");
	if (rc < 0) {
		unlinkat(parent, tmp, 0);
		return hm_err_prefix(err, "install %s", path);
	}
	return 0;
}

int rt_rootfs_create(int root, const char *path, const void *data, size_t len, mode_t mode,
		     struct hm_err *err)
{
	const char *name;
	hm_cleanup_close int parent = open_parent(root, path, &name, err);
	if (parent < 0)
		return -1;
	hm_cleanup_close int fd =
	    openat(parent, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		if (errno == EEXIST)
			return 0;
		return hm_err_errno(err, "create %s", path);
	}
	if (hm_write_all(fd, data, len) < 0 || fchmod(fd, mode) < 0)
		return hm_err_errno(err, "write %s", path);
	return 0;
}

int rt_rootfs_symlink(int root, const char *path, const char *target, struct hm_err *err)
{
	const char *name;
	hm_cleanup_close int parent = open_parent(root, path, &name, err);
	if (parent < 0)
		return -1;
	if (symlinkat(target, parent, name) < 0 && errno != EEXIST)
		return hm_err_errno(err, "symlink %s", path);
	return 0;
}

int rt_rootfs_mount_target(int root, const char *path, struct hm_err *err)
{
	hm_cleanup_close int fd = rt_rootfs_open(root, path, O_PATH, 0, err);
	if (fd < 0 && err->code == ENOENT) {
		/* missing: create it empty, through a dangling link too (inside the rootfs) */
		hm_cleanup_close int created = rt_rootfs_open(
		    root, path, O_WRONLY | O_CREAT | O_NONBLOCK | O_NOCTTY, 0644, err);
		if (created < 0)
			return -1;
		fd = rt_rootfs_open(root, path, O_PATH, 0, err);
	}
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return hm_err_errno(err, "stat %s", path);
	if (!S_ISREG(st.st_mode))
		return hm_err_set(err, EINVAL, "%s: not a regular file", path);
	return hm_steal_fd(&fd);
}
