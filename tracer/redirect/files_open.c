/* open, openat, openat2, creat of remote paths.
 *
 * Reading: the whole file comes in one agent round trip (zlib when it pays, a stream
 * connection above 8 MiB) into a memfd, sealed against writes and reopened read-only,
 * so that a write fails with EBADF as on a file opened O_RDONLY. A file larger than
 * feature.fs.max_file_size is not read: the open fails with EFBIG and trace-run says
 * why. A big file's memfd is shared by later opens while the file is unchanged (see
 * FILES_SHARE_MIN). A directory is mirrored (files_dir.c) and its mirror opened.
 *
 * Writing (fs mode write, or a read_write path): the open itself happens in the target
 * first, as a zero-byte write with the program's O_CREAT / O_EXCL / O_TRUNC and its mode
 * under its umask, so that errors (EEXIST, ENOENT, EACCES, EISDIR) are the target's and
 * come at open time. The program then gets a memfd holding the current content (none
 * after O_TRUNC), opened with its access mode and O_APPEND; files_write.c writes it back. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "tracer/redirect/files_internal.h"

static void memfd_name(char *name, size_t size, const char *path)
{
	/* the kernel keeps 249 bytes of a memfd name: keep the end of long paths */
	size_t n = strlen(path);
	snprintf(name, size, "hermit:%.200s", n > 200 ? path + n - 200 : path);
}

/* A new open file description of fd (its own offset and flags: a dup would share the
 * offset with every other open of the same cached content). Relative to a kept
 * /proc/self/fd: ~0.3 us less than walking "/proc/self/fd/N" from the root, on every
 * cached remote open. Opened on first use, in the process that handles the calls. */
static int reopen(struct files *f, int fd, int flags, struct hm_err *err)
{
	if (f->self_fds < 0) {
		f->self_fds = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (f->self_fds < 0)
			return hm_err_errno(err, "open /proc/self/fd");
	}
	char name[16];
	snprintf(name, sizeof(name), "%d", fd);
	int r = openat(f->self_fds, name, flags | O_CLOEXEC);
	if (r < 0)
		return hm_err_errno(err, "reopen memfd");
	return r;
}

/* the program's read-only fd on a sealed content memfd, recorded as a node (cached: the
 * node of an earlier fd on the same memfd, when it is still there) */
static int share_content(struct files *f, int memfd, const char *path, const struct proto_stat *st,
			 const struct files_cache_entry *cached, struct hm_err *err)
{
	int ro = reopen(f, memfd, O_RDONLY, err);
	if (ro < 0)
		return -1;
	if (cached && trace_files_node_find(f, cached->dev, cached->ino))
		return ro;
	if (!trace_files_node_add(f, ro, NODE_FILE, path, st, err)) {
		close(ro);
		return -1;
	}
	return ro;
}

/* what a read of path failed with, as a property of the file rather than of the
 * connection: worth remembering for the cache's few milliseconds */
static bool file_errno(int code)
{
	return code == ENOENT || code == ENOTDIR || code == EISDIR || code == EACCES ||
	       code == ELOOP || code == ENAMETOOLONG;
}

static bool same_version(const struct proto_stat *a, const struct proto_stat *b)
{
	return a->ino == b->ino && a->dev_major == b->dev_major && a->dev_minor == b->dev_minor &&
	       a->size == b->size && a->mode == b->mode && a->mtime.sec == b->mtime.sec &&
	       a->mtime.nsec == b->mtime.nsec && a->ctime.sec == b->ctime.sec &&
	       a->ctime.nsec == b->ctime.nsec;
}

/* The shared copy of a big file, if the target's file is still that version: 1 and
 * *fd, 0 when there is none (or it is stale: dropped), -1 when the stat failed. */
static int shared_read_fd(struct files *f, const char *path, bool nofollow, int *fd,
			  struct hm_err *err)
{
	struct files_cache_entry *shared = trace_files_shared_get(f, path, nofollow);
	if (!shared)
		return 0;
	struct proto_stat now;
	f->remote_ops++;
	if (client_stat(f->client, path, nofollow ? PROTO_STAT_NOFOLLOW : 0, &now, err) < 0) {
		trace_files_shared_drop(f, shared);
		return -1;
	}
	if (!same_version(&shared->st, &now)) {
		hm_debug("open %s: changed in the target, read again", path);
		trace_files_shared_drop(f, shared);
		return 0;
	}
	*fd = share_content(f, shared->memfd, path, &shared->st, shared, err);
	if (*fd < 0)
		return -1;
	f->shared_hits++;
	return 1;
}

/* a read-only fd holding the remote file, recorded as a node */
static int remote_read_fd(struct files *f, const char *path, int flags, struct hm_err *err)
{
	bool nofollow = flags & O_NOFOLLOW;
	const struct files_cache_entry *cached = trace_files_cache_get(f, path, nofollow);
	if (cached) {
		if (cached->error)
			return hm_err_set(err, cached->error, "%s (read %lld ms ago)", path,
					  (long long)(f->cache_ttl_ns / 1000000));
		return share_content(f, cached->memfd, path, &cached->st, cached, err);
	}
	int shared_fd = -1;
	int r = shared_read_fd(f, path, nofollow, &shared_fd, err);
	if (r != 0)
		return r < 0 ? -1 : shared_fd;
	struct proto_stat st;
	char name[256];
	memfd_name(name, sizeof(name), path);
	hm_cleanup_close int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return hm_err_errno(err, "memfd_create");
	uint64_t size = 0;
	f->remote_ops++;
	if (client_read_file_fd(f->client, path, nofollow ? PROTO_READ_NOFOLLOW : 0,
				f->max_file_size, fd, &st, &size, err) < 0) {
		if (file_errno(err->code))
			trace_files_cache_put(f, path, nofollow, -1, NULL, err->code);
		return -1;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return hm_err_errno(err, "seal memfd");
	st.size = size; /* what the program can read, even if the file changed meanwhile */
	int ro = share_content(f, fd, path, &st, NULL, err);
	if (ro < 0)
		return -1;
	if (size >= FILES_SHARE_MIN) {
		int keep = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (keep >= 0)
			trace_files_shared_put(f, path, nofollow, keep, &st);
	}
	trace_files_cache_put(f, path, nofollow, hm_steal_fd(&fd), &st, 0);
	return ro;
}

static uint32_t write_flags(int flags)
{
	uint32_t w = 0;
	if (flags & O_CREAT)
		w |= PROTO_WRITE_CREATE;
	if (flags & O_EXCL)
		w |= PROTO_WRITE_EXCL;
	if (flags & O_TRUNC)
		w |= PROTO_WRITE_TRUNC;
	if (flags & O_NOFOLLOW)
		w |= PROTO_WRITE_NOFOLLOW;
	return w;
}

/* the program's fd on a writable memfd with the remote content; the node keeps trace-run's
 * own reference for the write-back */
static int remote_write_fd(struct files *f, const struct tracer_call *call, const char *path,
			   int flags, mode_t mode, struct files_undo **undo, struct hm_err *err)
{
	*undo = NULL;
	trace_files_cache_invalidate(f, path);
	mode_t create_mode = (mode & 07777) & ~trace_files_umask(call->pid);
	struct proto_file_write_reply wr;
	f->remote_ops++;
	if (client_write_file(f->client, path, write_flags(flags), create_mode, 0, NULL, 0, &wr,
			      err) < 0)
		return -1;
	if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) {
		/* made by this call: a retry after an interruption must find it absent */
		*undo = trace_files_undo_slot(f, call, UNDO_UNCREATE);
		snprintf((*undo)->path, sizeof((*undo)->path), "%s", path);
	}
	char name[256];
	memfd_name(name, sizeof(name), path);
	hm_cleanup_close int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "memfd_create");
	struct proto_stat st = wr.st;
	if (!(flags & O_TRUNC) && wr.st.size > 0) {
		f->remote_ops++;
		if (client_read_file_fd(f->client, path, 0, f->max_file_size, fd, &st, NULL, err) <
		    0)
			return -1;
	}
	int prog_flags = (flags & O_ACCMODE) | (flags & O_APPEND);
	hm_cleanup_close int prog_fd = reopen(f, fd, prog_flags, err);
	if (prog_fd < 0)
		return -1;
	struct files_node *n = trace_files_node_add(f, fd, NODE_WRITE, path, &st, err);
	if (!n)
		return -1;
	struct stat lst;
	if (fstat(fd, &lst) == 0) {
		n->synced_mtime = lst.st_mtim;
		n->synced_ctime = lst.st_ctim;
		n->synced_size = lst.st_size;
	}
	n->keep_fd = hm_steal_fd(&fd);
	f->kept++;
	trace_files_release_kept(f);
	if (*undo) {
		(*undo)->dev = n->dev;
		(*undo)->ino = n->ino;
	}
	return hm_steal_fd(&prog_fd);
}

/* once per file: a program may retry an open in a loop */
static void warn_too_big(struct files *f, const char *path, const struct hm_err *err)
{
	if (!tracer_once(&f->warned_too_big, path))
		return;
	hm_warn("open %s: over the size limit, the program gets EFBIG; raise "
		"feature.fs.max_file_size / --max-file-size (now %llu bytes), and the agent's "
		"--max-file-size if it is lower (%s)",
		path, (unsigned long long)f->max_file_size, err->msg);
}

static struct tracer_result open_remote(struct files *f, const struct tracer_call *call, int dirfd,
					uint64_t path_addr, int flags, mode_t mode)
{
	bool writing = (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)) ||
		       (flags & O_TMPFILE) == O_TMPFILE;
	struct files_target t;
	struct tracer_result answer;
	if (!trace_files_route_remote(f, call, dirfd, path_addr,
				      writing ? POLICY_FS_ACCESS_WRITE : POLICY_FS_ACCESS_READ,
				      "open", &t, &answer))
		return answer;
	if ((flags & O_TMPFILE) == O_TMPFILE)
		return tracer_error(EOPNOTSUPP); /* an unnamed file in the target: not offered */
	struct hm_err err = {0};
	int fd;
	struct files_undo *undo = NULL;
	if (writing) {
		if ((flags & O_ACCMODE) == O_ACCMODE)
			return tracer_error(EINVAL);
		fd = remote_write_fd(f, call, t.path, flags, mode, &undo, &err);
	} else if ((flags & O_DIRECTORY) || t.trailing_slash) {
		fd = trace_files_dir_open(f, t.path, &err);
	} else {
		trace_files_sync_path(f, t.path);
		fd = remote_read_fd(f, t.path, flags, &err);
		if (fd < 0 && err.code == EISDIR) {
			err = (struct hm_err){0};
			fd = trace_files_dir_open(f, t.path, &err);
		}
	}
	if (fd < 0 && err.code == EFBIG)
		warn_too_big(f, t.path, &err);
	if (fd < 0)
		return tracer_error(trace_files_agent_errno(f, "open", t.path, &err));
	struct tracer_result res = tracer_install_fd(fd, flags & (O_CLOEXEC | O_NONBLOCK));
	if (undo) {
		res.undo = trace_files_undo_run;
		res.undo_arg = undo;
	}
	return res;
}

static struct tracer_result handle_open(const struct tracer_call *call, void *data)
{
	return open_remote(data, call, AT_FDCWD, call->args[0], (int)call->args[1],
			   (mode_t)call->args[2]);
}

static struct tracer_result handle_creat(const struct tracer_call *call, void *data)
{
	return open_remote(data, call, AT_FDCWD, call->args[0], O_CREAT | O_WRONLY | O_TRUNC,
			   (mode_t)call->args[1]);
}

static struct tracer_result handle_openat(const struct tracer_call *call, void *data)
{
	return open_remote(data, call, (int)call->args[0], call->args[1], (int)call->args[2],
			   (mode_t)call->args[3]);
}

static struct tracer_result handle_openat2(const struct tracer_call *call, void *data)
{
	struct open_how how;
	struct hm_err err = {0};
	/* a smaller or unreadable struct: the kernel reports EINVAL / EFAULT */
	if (call->args[3] < sizeof(how) ||
	    tracer_read_mem(call, call->args[2], &how, sizeof(how), &err) < 0)
		return tracer_continue();
	if (how.flags >> 32)
		return tracer_continue(); /* unknown flags: EINVAL from the kernel */
	/* the resolve restrictions describe this machine's tree; the target's agent
	 * resolves inside the target's root anyway */
	return open_remote(data, call, (int)call->args[0], call->args[1], (int)how.flags,
			   (mode_t)how.mode);
}

int trace_files_register_open(struct files *f, struct hm_err *err)
{
	struct tracer *t = f->s->tracer;
	if (tracer_set_handler(t, SYS_open, handle_open, f, err) < 0 ||
	    tracer_set_handler(t, SYS_creat, handle_creat, f, err) < 0 ||
	    tracer_set_handler(t, SYS_openat, handle_openat, f, err) < 0 ||
	    tracer_set_handler(t, SYS_openat2, handle_openat2, f, err) < 0)
		return -1;
	return 0;
}
