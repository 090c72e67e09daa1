/* The stat family, access, readlink and statfs on remote paths, and fstat / fstatfs /
 * fstatat(AT_EMPTY_PATH) / statx(AT_EMPTY_PATH) on fds that hold remote files: the
 * agent answers, the result is written into the program's buffer in the x86-64 layout
 * (the kernel's struct stat, struct statx and struct statfs are glibc's there).
 * Extended attributes of remote paths: none. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>

#include "tracer/redirect/files_internal.h"

#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

_Static_assert(sizeof(struct stat) == 144, "x86-64 struct stat");
_Static_assert(sizeof(struct statx) == 256, "struct statx");
_Static_assert(sizeof(struct statfs) == 120, "x86-64 struct statfs");

static struct tracer_result put_stat(const struct tracer_call *call, uint64_t addr,
				     const struct proto_stat *ps)
{
	struct stat st;
	proto_stat_to_host(ps, &st);
	int e = trace_files_put(call, addr, &st, sizeof(st));
	return e ? tracer_error(e) : tracer_return(0);
}

static struct statx_timestamp statx_time(const struct proto_time *t)
{
	return (struct statx_timestamp){.tv_sec = t->sec, .tv_nsec = t->nsec};
}

static struct tracer_result put_statx(const struct tracer_call *call, uint64_t addr,
				      const struct proto_stat *ps)
{
	struct statx sx;
	memset(&sx, 0, sizeof(sx));
	/* everything but the birth time, which the protocol does not carry */
	sx.stx_mask = STATX_BASIC_STATS;
	sx.stx_blksize = ps->blksize;
	sx.stx_nlink = ps->nlink;
	sx.stx_uid = ps->uid;
	sx.stx_gid = ps->gid;
	sx.stx_mode = (uint16_t)ps->mode;
	sx.stx_ino = ps->ino;
	sx.stx_size = ps->size;
	sx.stx_blocks = ps->blocks;
	sx.stx_atime = statx_time(&ps->atime);
	sx.stx_mtime = statx_time(&ps->mtime);
	sx.stx_ctime = statx_time(&ps->ctime);
	sx.stx_rdev_major = ps->rdev_major;
	sx.stx_rdev_minor = ps->rdev_minor;
	sx.stx_dev_major = ps->dev_major;
	sx.stx_dev_minor = ps->dev_minor;
	int e = trace_files_put(call, addr, &sx, sizeof(sx));
	return e ? tracer_error(e) : tracer_return(0);
}

enum stat_layout { LAYOUT_STAT, LAYOUT_STATX };

static struct tracer_result put_layout(const struct tracer_call *call, enum stat_layout layout,
				       uint64_t addr, const struct proto_stat *ps)
{
	return layout == LAYOUT_STATX ? put_statx(call, addr, ps) : put_stat(call, addr, ps);
}

/* fd-based: only fds that hold one of our nodes */
static struct tracer_result stat_fd(struct files *f, const struct tracer_call *call, int fd,
				    enum stat_layout layout, uint64_t buf)
{
	struct stat lst;
	struct files_node *n = trace_files_node_of_fd(f, call->pid, fd, &lst);
	if (!n)
		return tracer_continue();
	struct proto_stat ps;
	struct hm_err err = {0};
	if (trace_files_node_stat(f, n, &lst, &ps, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "fstat", n->path, &err));
	return put_layout(call, layout, buf, &ps);
}

static struct tracer_result stat_at(struct files *f, const struct tracer_call *call, int dirfd,
				    uint64_t path, int at_flags, enum stat_layout layout,
				    uint64_t buf, const char *op)
{
	struct files_target t;
	switch (trace_files_route_path(f, call, dirfd, path, POLICY_FS_ACCESS_STAT,
				       (at_flags & AT_EMPTY_PATH) != 0, op, &t)) {
	case ROUTE_REMOTE:
		break;
	case ROUTE_FD:
		return stat_fd(f, call, dirfd, layout, buf);
	case ROUTE_FAIL:
		return tracer_error(t.error);
	default:
		return tracer_continue();
	}
	struct proto_stat ps;
	struct hm_err err = {0};
	f->remote_ops++;
	if (client_stat(f->client, t.path,
			(at_flags & AT_SYMLINK_NOFOLLOW) ? PROTO_STAT_NOFOLLOW : 0, &ps, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, op, t.path, &err));
	if (t.trailing_slash && !S_ISDIR(ps.mode))
		return tracer_error(ENOTDIR);
	return put_layout(call, layout, buf, &ps);
}

static struct tracer_result handle_stat(const struct tracer_call *call, void *data)
{
	return stat_at(data, call, AT_FDCWD, call->args[0], 0, LAYOUT_STAT, call->args[1], "stat");
}

static struct tracer_result handle_lstat(const struct tracer_call *call, void *data)
{
	return stat_at(data, call, AT_FDCWD, call->args[0], AT_SYMLINK_NOFOLLOW, LAYOUT_STAT,
		       call->args[1], "lstat");
}

static struct tracer_result handle_newfstatat(const struct tracer_call *call, void *data)
{
	return stat_at(data, call, (int)call->args[0], call->args[1], (int)call->args[3],
		       LAYOUT_STAT, call->args[2], "fstatat");
}

static struct tracer_result handle_fstat(const struct tracer_call *call, void *data)
{
	return stat_fd(data, call, (int)call->args[0], LAYOUT_STAT, call->args[1]);
}

static struct tracer_result handle_statx(const struct tracer_call *call, void *data)
{
	return stat_at(data, call, (int)call->args[0], call->args[1], (int)call->args[2],
		       LAYOUT_STATX, call->args[4], "statx");
}

/* ---------------------------------------------------------------- access */

static struct tracer_result access_at(struct files *f, const struct tracer_call *call, int dirfd,
				      uint64_t path, int mode, int at_flags)
{
	if (mode & ~(R_OK | W_OK | X_OK))
		return tracer_continue(); /* EINVAL from the kernel */
	struct files_target t;
	const char *remote = NULL;
	switch (trace_files_route_path(f, call, dirfd, path, POLICY_FS_ACCESS_STAT,
				       (at_flags & AT_EMPTY_PATH) != 0, "access", &t)) {
	case ROUTE_REMOTE:
		remote = t.path;
		break;
	case ROUTE_FD: {
		struct files_node *n = trace_files_node_of_fd(f, call->pid, dirfd, NULL);
		if (!n)
			return tracer_continue();
		remote = n->path;
		break;
	}
	case ROUTE_FAIL:
		return tracer_error(t.error);
	default:
		return tracer_continue();
	}
	uint32_t flags = ((at_flags & AT_EACCESS) ? PROTO_ACCESS_EACCESS : 0) |
			 ((at_flags & AT_SYMLINK_NOFOLLOW) ? PROTO_ACCESS_NOFOLLOW : 0);
	struct hm_err err = {0};
	f->remote_ops++;
	if (client_access(f->client, remote, (uint32_t)mode, flags, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "access", remote, &err));
	return tracer_return(0);
}

static struct tracer_result handle_access(const struct tracer_call *call, void *data)
{
	return access_at(data, call, AT_FDCWD, call->args[0], (int)call->args[1], 0);
}

static struct tracer_result handle_faccessat(const struct tracer_call *call, void *data)
{
	return access_at(data, call, (int)call->args[0], call->args[1], (int)call->args[2], 0);
}

static struct tracer_result handle_faccessat2(const struct tracer_call *call, void *data)
{
	int flags = (int)call->args[3];
	if (flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))
		return tracer_continue();
	return access_at(data, call, (int)call->args[0], call->args[1], (int)call->args[2], flags);
}

/* ---------------------------------------------------------------- readlink */

static struct tracer_result readlink_at(struct files *f, const struct tracer_call *call, int dirfd,
					uint64_t path, uint64_t buf, uint64_t size)
{
	if ((int64_t)size <= 0)
		return tracer_continue(); /* EINVAL from the kernel */
	struct files_target t;
	struct tracer_result res;
	if (!trace_files_route_remote(f, call, dirfd, path, POLICY_FS_ACCESS_READ, "readlink", &t,
				      &res))
		return res;
	char target[PATH_MAX];
	struct hm_err err = {0};
	f->remote_ops++;
	if (client_readlink(f->client, t.path, target, sizeof(target), &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "readlink", t.path, &err));
	size_t len = strlen(target);
	if (len > size)
		len = (size_t)size; /* truncated, as readlink(2) does */
	int e = trace_files_put(call, buf, target, len);
	return e ? tracer_error(e) : tracer_return((int64_t)len);
}

static struct tracer_result handle_readlink(const struct tracer_call *call, void *data)
{
	return readlink_at(data, call, AT_FDCWD, call->args[0], call->args[1], call->args[2]);
}

static struct tracer_result handle_readlinkat(const struct tracer_call *call, void *data)
{
	return readlink_at(data, call, (int)call->args[0], call->args[1], call->args[2],
			   call->args[3]);
}

/* ---------------------------------------------------------------- statfs */

static struct tracer_result put_statfs(struct files *f, const struct tracer_call *call,
				       const char *remote, uint64_t buf)
{
	struct proto_statfs ps;
	struct hm_err err = {0};
	f->remote_ops++;
	if (client_statfs(f->client, remote, &ps, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "statfs", remote, &err));
	struct statfs sf;
	memset(&sf, 0, sizeof(sf));
	proto_statfs_to_host(&ps, &sf);
	int e = trace_files_put(call, buf, &sf, sizeof(sf));
	return e ? tracer_error(e) : tracer_return(0);
}

static struct tracer_result handle_statfs(const struct tracer_call *call, void *data)
{
	struct files *f = data;
	struct files_target t;
	switch (trace_files_route_path(f, call, AT_FDCWD, call->args[0], POLICY_FS_ACCESS_STAT,
				       false, "statfs", &t)) {
	case ROUTE_REMOTE:
		return put_statfs(f, call, t.path, call->args[1]);
	case ROUTE_FAIL:
		return tracer_error(t.error);
	default:
		return tracer_continue();
	}
}

static struct tracer_result handle_fstatfs(const struct tracer_call *call, void *data)
{
	struct files *f = data;
	struct files_node *n = trace_files_node_of_fd(f, call->pid, (int)call->args[0], NULL);
	if (!n)
		return tracer_continue();
	return put_statfs(f, call, n->path, call->args[1]);
}

/* ---------------------------------------------------------------- xattrs */

/* The protocol carries no extended attributes: a remote file has none, as on a
 * filesystem without them, rather than the ENOENT of the local path that `ls -l`
 * (ACL and SELinux label lookups) would report. */
static struct tracer_result xattr_remote(const struct tracer_call *call, void *data, bool listing)
{
	struct files *f = data;
	struct files_target t;
	switch (trace_files_route_path(f, call, AT_FDCWD, call->args[0], POLICY_FS_ACCESS_STAT,
				       false, listing ? "listxattr" : "getxattr", &t)) {
	case ROUTE_REMOTE:
		return listing ? tracer_return(0) : tracer_error(ENODATA);
	case ROUTE_FAIL:
		return tracer_error(t.error);
	default:
		return tracer_continue();
	}
}

static struct tracer_result handle_getxattr(const struct tracer_call *call, void *data)
{
	return xattr_remote(call, data, false);
}

static struct tracer_result handle_listxattr(const struct tracer_call *call, void *data)
{
	return xattr_remote(call, data, true);
}

int trace_files_register_stat(struct files *f, struct hm_err *err)
{
	static const struct {
		int nr;
		tracer_handler_fn fn;
	} handlers[] = {
	    {SYS_stat, handle_stat},
	    {SYS_lstat, handle_lstat},
	    {SYS_newfstatat, handle_newfstatat},
	    {SYS_fstat, handle_fstat},
	    {SYS_statx, handle_statx},
	    {SYS_access, handle_access},
	    {SYS_faccessat, handle_faccessat},
	    {SYS_faccessat2, handle_faccessat2},
	    {SYS_readlink, handle_readlink},
	    {SYS_readlinkat, handle_readlinkat},
	    {SYS_statfs, handle_statfs},
	    {SYS_fstatfs, handle_fstatfs},
	    {SYS_getxattr, handle_getxattr},
	    {SYS_lgetxattr, handle_getxattr},
	    {SYS_listxattr, handle_listxattr},
	    {SYS_llistxattr, handle_listxattr},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(handlers); i++)
		if (tracer_set_handler(f->s->tracer, handlers[i].nr, handlers[i].fn, f, err) < 0)
			return -1;
	return 0;
}
