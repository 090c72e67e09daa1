/* Write mode: write-back of files opened for writing, and mkdir, rmdir, unlink, rename
 * in the target. Only registered when remote writes are possible at all (fs mode write,
 * or a read_write list), so that close() stays off the intercepted path otherwise.
 *
 * A written file is a memfd (files_open.c) that trace-run keeps a reference to. Its
 * content goes back to the target, whole, when the program closes an fd on it, calls
 * fsync / fdatasync, dup2()s over one, opens it for reading (read-your-writes), and
 * before close_range, exec and exit (which close fds wholesale) — each time only if the
 * content changed since the last write-back — and finally when the session ends (a
 * process killed by a signal). Beyond FILES_KEEP_MAX such files trace-run lets go of one
 * (written back first); for those only a close / fsync / dup2 through the
 * program's fd writes later changes back. The remote file is not created again if it
 * was removed meanwhile. Writes through a shared mapping after the last close reach
 * the target at the session's end (or not at all for a released file).
 *
 * mkdir, unlink and rename are not idempotent: if the program never got the answer
 * (an interrupted syscall, re-issued by Go after its preemption signal), the retry gets
 * the first answer again (trace_files_undo_replay) instead of EEXIST / ENOENT. */
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tracer/redirect/files_internal.h"

/* the content of a written file trace-run no longer holds, through the program's fd */
static int content_fd(const struct files_node *n, pid_t tid, int fd, struct hm_err *err)
{
	if (tid <= 0 || fd < 0)
		return hm_err_set(err, EBADF, "%s: no fd to read it from", n->path);
	char link[64];
	snprintf(link, sizeof(link), "/proc/%d/fd/%d", tid, fd);
	int r = open(link, O_RDONLY | O_CLOEXEC);
	if (r < 0)
		return hm_err_errno(err, "open %s", link);
	return r;
}

static int node_sync(struct files *f, struct files_node *n, pid_t tid, int fd, bool fsync,
		     struct hm_err *err)
{
	hm_cleanup_close int src = -1;
	if (n->keep_fd >= 0) {
		src = fcntl(n->keep_fd, F_DUPFD_CLOEXEC, 0);
		if (src < 0)
			return hm_err_errno(err, "dup");
	} else if ((src = content_fd(n, tid, fd, err)) < 0) {
		return -1;
	}
	struct stat st;
	if (fstat(src, &st) < 0)
		return hm_err_errno(err, "fstat");
	bool changed = st.st_size != n->synced_size ||
		       st.st_mtim.tv_sec != n->synced_mtime.tv_sec ||
		       st.st_mtim.tv_nsec != n->synced_mtime.tv_nsec ||
		       st.st_ctim.tv_sec != n->synced_ctime.tv_sec ||
		       st.st_ctim.tv_nsec != n->synced_ctime.tv_nsec;
	if (!changed && !fsync)
		return 0;
	void *data = NULL;
	size_t size = (size_t)st.st_size;
	if (size) {
		data = mmap(NULL, size, PROT_READ, MAP_SHARED, src, 0);
		if (data == MAP_FAILED)
			return hm_err_errno(err, "map %s", n->path);
	}
	struct proto_file_write_reply reply;
	trace_files_cache_invalidate(f, n->path);
	f->remote_ops++;
	int rc = client_write_file(f->client, n->path,
				   PROTO_WRITE_TRUNC | (fsync ? PROTO_WRITE_FSYNC : 0), 0, 0, data,
				   size, &reply, err);
	if (data)
		munmap(data, size);
	if (rc < 0)
		return -1;
	hm_debug("wrote back %s (%zu bytes)", n->path, size);
	n->synced_size = st.st_size;
	n->synced_mtime = st.st_mtim;
	n->synced_ctime = st.st_ctim;
	return 0;
}

/* A written file trace-run holds (keep_fd) back to the target, a failure only warned
 * about: nothing of the program's waits for it. */
static void kept_write_back(struct files *f, struct files_node *n)
{
	struct hm_err err = {0};
	if (node_sync(f, n, 0, -1, false, &err) < 0)
		hm_warn("write back %s: %s", n->path, err.msg);
}

/* the written files trace-run still holds, of path (NULL: all) */
static void kept_sync(struct files *f, const char *path)
{
	for (size_t i = 0; f->kept && i < f->nbuckets; i++)
		for (struct files_node *n = f->buckets[i]; n; n = n->hnext) {
			if (n->kind != NODE_WRITE || n->keep_fd < 0 ||
			    (path && strcmp(n->path, path)))
				continue;
			kept_write_back(f, n);
		}
}

/* every written file trace-run still holds (the others only go back through an fd of
 * the program's) */
void trace_files_sync_all(struct files *f)
{
	kept_sync(f, NULL);
}

void trace_files_sync_path(struct files *f, const char *path)
{
	kept_sync(f, path);
}

void trace_files_release_kept(struct files *f)
{
	/* the first kept one found: written back, then only the program's fds hold it */
	for (size_t i = 0; f->kept > FILES_KEEP_MAX && i < f->nbuckets; i++)
		for (struct files_node *n = f->buckets[i]; n; n = n->hnext) {
			if (n->kind != NODE_WRITE || n->keep_fd < 0)
				continue;
			kept_write_back(f, n);
			close(n->keep_fd);
			n->keep_fd = -1;
			f->kept--;
			return;
		}
}

/* write back the written file fd refers to, if it is one */
static void sync_fd(struct files *f, const struct tracer_call *call, int fd, bool fsync,
		    const char *op, struct tracer_result *res)
{
	if (!f->writers)
		return; /* the common case: close() costs nothing more */
	struct files_node *n = trace_files_node_of_fd(f, call->pid, fd, NULL);
	if (!n || n->kind != NODE_WRITE)
		return;
	struct hm_err err = {0};
	if (node_sync(f, n, call->pid, fd, fsync, &err) == 0) {
		if (res)
			*res = tracer_return(0);
		return;
	}
	if (res)
		*res = tracer_error(trace_files_agent_errno(f, op, n->path, &err));
	else
		hm_warn("write back %s on %s: %s", n->path, op, err.msg);
}

static struct tracer_result handle_close(const struct tracer_call *call, void *data)
{
	/* the fd goes whatever happens: an error here cannot be reported by close without
	 * leaving it open */
	sync_fd(data, call, (int)call->args[0], false, "close", NULL);
	return tracer_continue();
}

/* dup2 / dup3 over a written file's fd close it without a close(): shells do that when
 * they undo a redirection */
static struct tracer_result handle_dup2(const struct tracer_call *call, void *data)
{
	if (call->args[0] != call->args[1])
		sync_fd(data, call, (int)call->args[1], false, "dup2", NULL);
	return tracer_continue();
}

/* close_range, exec and exit close fds wholesale: write back whatever changed (a
 * file that did not costs one fstat) */
static struct tracer_result handle_sync_all(const struct tracer_call *call, void *data)
{
	(void)call;
	trace_files_sync_all(data);
	return tracer_continue();
}

static struct tracer_result handle_fsync(const struct tracer_call *call, void *data)
{
	struct tracer_result res = tracer_continue();
	sync_fd(data, call, (int)call->args[0], true, "fsync", &res);
	return res;
}

/* ---------------------------------------------------------------- namespace changes */

/* route a path that is to be changed */
static enum files_route route_write(struct files *f, const struct tracer_call *call, int dirfd,
				    uint64_t addr, const char *op, struct files_target *t)
{
	return trace_files_route_path(f, call, dirfd, addr, POLICY_FS_ACCESS_WRITE, false, op, t);
}

/* mkdir and unlink: true for a path of the target to change (t->path); false with *res
 * the call's answer otherwise (a replayed one, the routing's error, or the kernel's) */
static bool route_change(struct files *f, const struct tracer_call *call, int dirfd, uint64_t addr,
			 const char *op, struct files_target *t, struct tracer_result *res)
{
	if (trace_files_undo_replay(f, call, res))
		return false;
	return trace_files_route_remote(f, call, dirfd, addr, POLICY_FS_ACCESS_WRITE, op, t, res);
}

static struct tracer_result mkdir_at(struct files *f, const struct tracer_call *call, int dirfd,
				     uint64_t path, mode_t mode)
{
	struct tracer_result res;
	struct files_target t;
	if (!route_change(f, call, dirfd, path, "mkdir", &t, &res))
		return res;
	struct hm_err err = {0};
	f->remote_ops++;
	mode_t m = (mode & 07777) & ~trace_files_umask(call->pid);
	trace_files_cache_invalidate(f, t.path);
	if (client_mkdir(f->client, t.path, m, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "mkdir", t.path, &err));
	return trace_files_replayable(f, call, tracer_return(0));
}

static struct tracer_result handle_mkdir(const struct tracer_call *call, void *data)
{
	return mkdir_at(data, call, AT_FDCWD, call->args[0], (mode_t)call->args[1]);
}

static struct tracer_result handle_mkdirat(const struct tracer_call *call, void *data)
{
	return mkdir_at(data, call, (int)call->args[0], call->args[1], (mode_t)call->args[2]);
}

static struct tracer_result unlink_at(struct files *f, const struct tracer_call *call, int dirfd,
				      uint64_t path, bool dir, const char *op)
{
	struct tracer_result res;
	struct files_target t;
	if (!route_change(f, call, dirfd, path, op, &t, &res))
		return res;
	struct hm_err err = {0};
	f->remote_ops++;
	trace_files_cache_invalidate(f, t.path);
	if (client_unlink(f->client, t.path, dir ? PROTO_UNLINK_DIR : 0, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, op, t.path, &err));
	return trace_files_replayable(f, call, tracer_return(0));
}

static struct tracer_result handle_unlink(const struct tracer_call *call, void *data)
{
	return unlink_at(data, call, AT_FDCWD, call->args[0], false, "unlink");
}

static struct tracer_result handle_rmdir(const struct tracer_call *call, void *data)
{
	return unlink_at(data, call, AT_FDCWD, call->args[0], true, "rmdir");
}

static struct tracer_result handle_unlinkat(const struct tracer_call *call, void *data)
{
	int flags = (int)call->args[2];
	if (flags & ~AT_REMOVEDIR)
		return tracer_continue(); /* EINVAL from the kernel */
	return unlink_at(data, call, (int)call->args[0], call->args[1], flags & AT_REMOVEDIR,
			 "unlink");
}

/* files open for writing follow their name, so that their write-back lands there */
static void rename_writers(struct files *f, const char *from, const char *to)
{
	size_t flen = strlen(from);
	for (size_t i = 0; f->writers && i < f->nbuckets; i++)
		for (struct files_node *n = f->buckets[i]; n; n = n->hnext) {
			if (n->kind != NODE_WRITE || strncmp(n->path, from, flen) ||
			    (n->path[flen] != '\0' && n->path[flen] != '/'))
				continue;
			char *p = NULL;
			if (asprintf(&p, "%s%s", to, n->path + flen) < 0)
				continue;
			free(n->path);
			n->path = p;
		}
}

static struct tracer_result rename_at(struct files *f, const struct tracer_call *call, int olddir,
				      uint64_t oldpath, int newdir, uint64_t newpath,
				      unsigned flags)
{
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return tracer_continue(); /* RENAME_WHITEOUT or unknown: the kernel decides */
	struct tracer_result res;
	if (trace_files_undo_replay(f, call, &res))
		return res;
	struct files_target from, to;
	enum files_route rf = route_write(f, call, olddir, oldpath, "rename", &from);
	enum files_route rt = route_write(f, call, newdir, newpath, "rename", &to);
	if (rf == ROUTE_FAIL)
		return tracer_error(from.error);
	if (rt == ROUTE_FAIL)
		return tracer_error(to.error);
	if (rf != ROUTE_REMOTE && rt != ROUTE_REMOTE)
		return tracer_continue();
	if (rf != rt)
		return tracer_error(EXDEV); /* as between two filesystems: mv copies instead */
	uint32_t pflags = (flags & RENAME_NOREPLACE)  ? PROTO_RENAME_NOREPLACE
			  : (flags & RENAME_EXCHANGE) ? PROTO_RENAME_EXCHANGE
						      : 0;
	struct hm_err err = {0};
	trace_files_cache_invalidate(f, from.path);
	trace_files_cache_invalidate(f, to.path);
	f->remote_ops++;
	if (client_rename(f->client, from.path, to.path, pflags, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "rename", from.path, &err));
	if (!(flags & RENAME_EXCHANGE))
		rename_writers(f, from.path, to.path);
	return trace_files_replayable(f, call, tracer_return(0));
}

static struct tracer_result handle_rename(const struct tracer_call *call, void *data)
{
	return rename_at(data, call, AT_FDCWD, call->args[0], AT_FDCWD, call->args[1], 0);
}

static struct tracer_result handle_renameat(const struct tracer_call *call, void *data)
{
	return rename_at(data, call, (int)call->args[0], call->args[1], (int)call->args[2],
			 call->args[3], 0);
}

static struct tracer_result handle_renameat2(const struct tracer_call *call, void *data)
{
	return rename_at(data, call, (int)call->args[0], call->args[1], (int)call->args[2],
			 call->args[3], (unsigned)call->args[4]);
}

int trace_files_register_write(struct files *f, struct hm_err *err)
{
	static const struct {
		int nr;
		tracer_handler_fn fn;
	} handlers[] = {
	    {SYS_close, handle_close},	       {SYS_fsync, handle_fsync},
	    {SYS_fdatasync, handle_fsync},     {SYS_mkdir, handle_mkdir},
	    {SYS_mkdirat, handle_mkdirat},     {SYS_rmdir, handle_rmdir},
	    {SYS_unlink, handle_unlink},       {SYS_unlinkat, handle_unlinkat},
	    {SYS_rename, handle_rename},       {SYS_renameat, handle_renameat},
	    {SYS_renameat2, handle_renameat2}, {SYS_dup2, handle_dup2},
	    {SYS_dup3, handle_dup2},	       {SYS_close_range, handle_sync_all},
	    {SYS_execve, handle_sync_all},     {SYS_execveat, handle_sync_all},
	    {SYS_exit_group, handle_sync_all},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(handlers); i++)
		if (tracer_set_handler(f->s->tracer, handlers[i].nr, handlers[i].fn, f, err) < 0)
			return -1;
	return 0;
}
