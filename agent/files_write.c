/* File requests, write side: write, mkdir, unlink, rename. Same rule as files.c:
 * paths resolve only through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS); the
 * *at syscalls get a parent fd resolved that way and a single checked name. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/internal.h"

#define PROTO_WRITE_ALL                                                                            \
	(PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC | PROTO_WRITE_EXCL | PROTO_WRITE_NOFOLLOW |        \
	 PROTO_WRITE_FSYNC)

static bool is_dot_or_dotdot(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..");
}

/* Open an existing regular file for writing, or create one. Like agent_file_read,
 * nothing but a regular file is really opened: an existing path is looked at with
 * O_PATH first. A file created between that look and the O_CREAT open is checked
 * after the fact; O_NONBLOCK keeps a FIFO from blocking in that window. */
static int open_for_write(int root_fd, const struct proto_file_write *req, struct hm_err *err)
{
	int nofollow = (req->flags & PROTO_WRITE_NOFOLLOW) ? O_NOFOLLOW : 0;
	int trunc = (req->flags & PROTO_WRITE_TRUNC) ? O_TRUNC : 0;
	bool create = req->flags & PROTO_WRITE_CREATE;
	bool excl = create && (req->flags & PROTO_WRITE_EXCL);
	struct stat st;

	hm_cleanup_close int path_fd =
	    agent_file_open_in_root(root_fd, req->path, O_PATH | nofollow, 0, err);
	if (path_fd >= 0) {
		if (excl)
			return hm_err_set(err, EEXIST, "%s", req->path);
		if (fstat(path_fd, &st) < 0)
			return hm_err_errno(err, "stat %s", req->path);
		if (S_ISDIR(st.st_mode))
			return hm_err_set(err, EISDIR, "%s", req->path);
		if (S_ISLNK(st.st_mode))
			return hm_err_set(err, ELOOP, "%s", req->path);
		if (!S_ISREG(st.st_mode))
			return hm_err_set(err, EINVAL, "%s: not a regular file", req->path);
		if (agent_file_refuse_pseudo(path_fd, req->path, err) < 0)
			return -1;
		int fd = agent_file_reopen(path_fd, O_WRONLY | O_NONBLOCK | trunc, err);
		if (fd < 0)
			return hm_err_prefix(err, "%s", req->path);
		return fd;
	}
	if (err->code != ENOENT || !create)
		return -1;
	/* Without O_EXCL, O_CREAT follows a dangling symlink and creates its target, as
	 * open(2) does; RESOLVE_IN_ROOT keeps that target inside the root. */
	hm_cleanup_close int fd = agent_file_open_in_root(
	    root_fd, req->path,
	    O_WRONLY | O_CREAT | O_NOCTTY | O_NONBLOCK | nofollow | trunc | (excl ? O_EXCL : 0),
	    req->mode & 07777, err);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		return hm_err_errno(err, "stat %s", req->path);
	if (!S_ISREG(st.st_mode))
		return hm_err_set(err, EINVAL, "%s: not a regular file", req->path);
	if (agent_file_refuse_pseudo(fd, req->path, err) < 0)
		return -1;
	return hm_steal_fd(&fd);
}

int agent_file_write(int root_fd, const struct proto_file_write *req,
		     struct proto_file_write_reply *out, struct hm_err *err)
{
	*out = (struct proto_file_write_reply){0};
	if (req->flags & ~(uint32_t)PROTO_WRITE_ALL)
		return hm_err_set(err, EINVAL, "write: unknown flags 0x%x", req->flags);
	if (req->mode & ~07777u)
		return hm_err_set(err, EINVAL, "write: bad mode 0%o", req->mode);
	uint64_t size = req->data.size;
	if (size > PROTO_INLINE_MAX)
		return hm_err_set(err, E2BIG, "write: %llu bytes in one request",
				  (unsigned long long)size);
	if (size && !req->data.data)
		return hm_err_set(err, EINVAL, "write: no data");
	if (req->offset > (uint64_t)INT64_MAX - size)
		return hm_err_set(err, EFBIG, "write: offset %llu out of range",
				  (unsigned long long)req->offset);

	hm_cleanup_close int fd = open_for_write(root_fd, req, err);
	if (fd < 0)
		return -1;
	const char *p = req->data.data;
	uint64_t done = 0;
	while (done < size) {
		ssize_t n = pwrite(fd, p + done, size - done, (off_t)(req->offset + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return hm_err_errno(err, "write %s", req->path);
		}
		if (n == 0)
			return hm_err_set(err, EIO, "write %s: no progress", req->path);
		done += (uint64_t)n;
	}
	if ((req->flags & PROTO_WRITE_FSYNC) && fsync(fd) < 0)
		return hm_err_errno(err, "fsync %s", req->path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		return hm_err_errno(err, "stat %s", req->path);
	out->written = done;
	proto_stat_from_host(&st, &out->st);
	return 0;
}

int agent_file_mkdir(int root_fd, const struct proto_file_mkdir *req, struct hm_err *err)
{
	if (req->mode & ~07777u)
		return hm_err_set(err, EINVAL, "mkdir: bad mode 0%o", req->mode);
	struct agent_path_split sp;
	if (agent_file_split_path(req->path, &sp, err) < 0)
		return -1;
	if (!sp.name[0] || is_dot_or_dotdot(sp.name))
		return hm_err_set(err, EEXIST, "mkdir %s", req->path);
	hm_cleanup_close int parent = agent_file_open_parent(root_fd, &sp, err);
	if (parent < 0)
		return -1;
	if (mkdirat(parent, sp.name, req->mode & 07777) < 0)
		return hm_err_errno(err, "mkdir %s", req->path);
	return 0;
}

/* unlink("x/") is ENOTDIR, or EISDIR for a directory, as in the kernel's do_unlinkat */
static int unlink_trailing_slash_error(int parent, const char *name, const char *path,
				       struct hm_err *err)
{
	struct stat st;
	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return hm_err_errno(err, "unlink %s", path);
	return hm_err_set(err, S_ISDIR(st.st_mode) ? EISDIR : ENOTDIR, "unlink %s", path);
}

int agent_file_unlink(int root_fd, const struct proto_file_unlink *req, struct hm_err *err)
{
	if (req->flags & ~(uint32_t)PROTO_UNLINK_DIR)
		return hm_err_set(err, EINVAL, "unlink: unknown flags 0x%x", req->flags);
	bool rmdir = req->flags & PROTO_UNLINK_DIR;
	const char *op = rmdir ? "rmdir" : "unlink";
	struct agent_path_split sp;
	if (agent_file_split_path(req->path, &sp, err) < 0)
		return -1;
	/* the errnos rmdir(2)/unlink(2) give for these */
	if (!sp.name[0])
		return hm_err_set(err, rmdir ? EBUSY : EISDIR, "%s %s", op, req->path);
	if (is_dot_or_dotdot(sp.name)) {
		int code = !rmdir ? EISDIR : !strcmp(sp.name, ".") ? EINVAL : ENOTEMPTY;
		return hm_err_set(err, code, "%s %s", op, req->path);
	}
	hm_cleanup_close int parent = agent_file_open_parent(root_fd, &sp, err);
	if (parent < 0)
		return -1;
	if (!rmdir && sp.trailing_slash)
		return unlink_trailing_slash_error(parent, sp.name, req->path, err);
	if (unlinkat(parent, sp.name, rmdir ? AT_REMOVEDIR : 0) < 0)
		return hm_err_errno(err, "%s %s", op, req->path);
	return 0;
}

int agent_file_rename(int root_fd, const struct proto_file_rename *req, struct hm_err *err)
{
	const uint32_t known = PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE;
	if ((req->flags & ~known) || req->flags == known)
		return hm_err_set(err, EINVAL, "rename: bad flags 0x%x", req->flags);
	unsigned int flags = (req->flags & PROTO_RENAME_NOREPLACE)  ? RENAME_NOREPLACE
			     : (req->flags & PROTO_RENAME_EXCHANGE) ? RENAME_EXCHANGE
								    : 0;
	struct agent_path_split from, to;
	if (agent_file_split_path(req->from, &from, err) < 0 ||
	    agent_file_split_path(req->to, &to, err) < 0)
		return -1;
	/* rename(2) gives EBUSY for "/", "." and ".." on either side */
	if (!from.name[0] || !to.name[0] || is_dot_or_dotdot(from.name) ||
	    is_dot_or_dotdot(to.name))
		return hm_err_set(err, EBUSY, "rename %s to %s", req->from, req->to);
	hm_cleanup_close int from_parent = agent_file_open_parent(root_fd, &from, err);
	if (from_parent < 0)
		return -1;
	hm_cleanup_close int to_parent = agent_file_open_parent(root_fd, &to, err);
	if (to_parent < 0)
		return -1;
	if (from.trailing_slash || to.trailing_slash) {
		/* a trailing slash is only allowed on directories; the kernel checks the
		 * source (and, for an exchange, the target) without following links */
		struct stat st;
		if (fstatat(from_parent, from.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return hm_err_errno(err, "rename %s", req->from);
		if (!S_ISDIR(st.st_mode))
			return hm_err_set(err, ENOTDIR, "rename %s to %s", req->from, req->to);
	}
	if (renameat2(from_parent, from.name, to_parent, to.name, flags) < 0)
		return hm_err_errno(err, "rename %s to %s", req->from, req->to);
	return 0;
}
