/* File requests, read side: path resolution inside a target's root, read, stat,
 * access, readlink, readdir, statfs. Every path comes from the client and is hostile:
 * the only resolver is openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) below root_fd,
 * and no path-based syscall ever sees a string built from client input. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent/internal.h"

static int check_path(const char *path, struct hm_err *err)
{
	if (!path)
		return hm_err_set(err, EINVAL, "missing path");
	if (path[0] != '/')
		return hm_err_set(err, EINVAL, "%s: path is not absolute", path);
	if (strnlen(path, PROTO_PATH_MAX + 1) > PROTO_PATH_MAX)
		return hm_err_set(err, ENAMETOOLONG, "path longer than %u bytes", PROTO_PATH_MAX);
	return 0;
}

int agent_file_open_in_root(int root_fd, const char *path, int flags, mode_t mode,
			    struct hm_err *err)
{
	if (check_path(path, err) < 0)
		return -1;
	return hm_openat2(root_fd, path, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, err);
}

/* configfs has no constant in <linux/magic.h> */
#define CONFIGFS_MAGIC_NUMBER 0x62656570

int agent_file_refuse_pseudo(int fd, const char *path, struct hm_err *err)
{
	struct statfs sfs;
	if (fstatfs(fd, &sfs) < 0)
		return hm_err_errno(err, "statfs %s", path);
	const char *fs = NULL;
	switch ((unsigned long)sfs.f_type) {
	case PROC_SUPER_MAGIC:
		fs = "procfs";
		break;
	case SYSFS_MAGIC:
		fs = "sysfs";
		break;
	case DEBUGFS_MAGIC:
		fs = "debugfs";
		break;
	case TRACEFS_MAGIC:
		fs = "tracefs";
		break;
	case SECURITYFS_MAGIC:
		fs = "securityfs";
		break;
	case CGROUP_SUPER_MAGIC:
	case CGROUP2_SUPER_MAGIC:
		fs = "cgroupfs";
		break;
	case BPF_FS_MAGIC:
		fs = "bpffs";
		break;
	case CONFIGFS_MAGIC_NUMBER:
		fs = "configfs";
		break;
	case EFIVARFS_MAGIC:
		fs = "efivarfs";
		break;
	case PSTOREFS_MAGIC:
		fs = "pstore";
		break;
	}
	if (fs)
		return hm_err_set(err, EACCES,
				  "%s: on %s: the agent reads and writes no kernel interface "
				  "files for a target (it would do so with its own rights)",
				  path, fs);
	return 0;
}

int agent_file_split_path(const char *path, struct agent_path_split *out, struct hm_err *err)
{
	if (check_path(path, err) < 0)
		return -1;
	size_t len = strlen(path);
	memcpy(out->buf, path, len + 1);
	out->trailing_slash = false;
	while (len > 1 && out->buf[len - 1] == '/') {
		out->buf[--len] = '\0';
		out->trailing_slash = true;
	}
	char *last = strrchr(out->buf, '/');
	if (len == 1) { /* the root itself, whatever the number of slashes */
		out->parent = "/";
		out->name = "";
		return 0;
	}
	*last = '\0';
	out->name = last + 1;
	out->parent = out->buf[0] ? out->buf : "/";
	if (strlen(out->name) > PROTO_FILENAME_MAX)
		return hm_err_set(err, ENAMETOOLONG, "%s: file name longer than %u bytes", path,
				  PROTO_FILENAME_MAX);
	return 0;
}

int agent_file_open_parent(int root_fd, const struct agent_path_split *sp, struct hm_err *err)
{
	return agent_file_open_in_root(root_fd, sp->parent, O_PATH | O_DIRECTORY, 0, err);
}

int agent_file_reopen(int path_fd, int flags, struct hm_err *err)
{
	char proc_path[64];
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", path_fd);
	int fd = open(proc_path, flags | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return hm_err_errno(err, "reopen through %s (is /proc mounted for the agent?)",
				    proc_path);
	return fd;
}

/* The errno open(2) would give for a non-regular file, without opening it. */
static int reject_non_regular(const struct stat *st, const char *path, struct hm_err *err)
{
	if (S_ISREG(st->st_mode))
		return 0;
	if (S_ISDIR(st->st_mode))
		return hm_err_set(err, EISDIR, "%s", path);
	if (S_ISLNK(st->st_mode)) /* only reached with O_NOFOLLOW, like open(2) */
		return hm_err_set(err, ELOOP, "%s", path);
	return hm_err_set(err, EINVAL, "%s: not a regular file", path);
}

static uint64_t smaller_cap(uint64_t a, uint64_t b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

/* Memory an inline reply of size bytes holds while it is built and sent: the content,
 * the encoded frame and, for the sizes that are compressed, zlib's state. */
static uint64_t inline_cost(uint64_t size)
{
	return 2 * size + (size >= AGENT_FILE_STREAM_MIN ? (320u << 10) : (4u << 10));
}

int agent_file_read(int root_fd, const struct proto_file_read *req, uint64_t cap,
		    struct agent_budget_account *account, struct agent_file_read_result *out,
		    struct hm_err *err)
{
	*out = (struct agent_file_read_result){.fd = -1};
	if (req->flags & ~PROTO_READ_NOFOLLOW)
		return hm_err_set(err, EINVAL, "read: unknown flags 0x%x", req->flags);
	int nofollow = (req->flags & PROTO_READ_NOFOLLOW) ? O_NOFOLLOW : 0;
	/* O_PATH first: opening a FIFO would block and opening a device can have side
	 * effects (a watchdog, a tape), so nothing but a regular file is really opened. */
	hm_cleanup_close int path_fd =
	    agent_file_open_in_root(root_fd, req->path, O_PATH | nofollow, 0, err);
	if (path_fd < 0)
		return -1;
	struct stat st;
	if (fstat(path_fd, &st) < 0)
		return hm_err_errno(err, "stat %s", req->path);
	if (reject_non_regular(&st, req->path, err) < 0 ||
	    agent_file_refuse_pseudo(path_fd, req->path, err) < 0)
		return -1;
	/* O_NONBLOCK: a lease held on the file fails the open instead of blocking it */
	hm_cleanup_close int fd = agent_file_reopen(path_fd, O_RDONLY | O_NONBLOCK, err);
	if (fd < 0)
		return hm_err_prefix(err, "%s", req->path);
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return hm_err_errno(err, "fcntl %s", req->path);
	if (fstat(fd, &st) < 0)
		return hm_err_errno(err, "stat %s", req->path);
	proto_stat_from_host(&st, &out->st);

	uint64_t limit = smaller_cap(cap, req->max_size);
	uint64_t size = (uint64_t)st.st_size;
	if (limit && size > limit)
		return hm_err_set(err, EFBIG, "%s: %llu bytes, the limit is %llu", req->path,
				  (unsigned long long)size, (unsigned long long)limit);
	bool as_stream = size > PROTO_INLINE_MAX;
	uint64_t reserved = 0;
	if (!as_stream && size > 0) {
		/* a stream costs the agent no memory (sendfile): the way out for a big
		 * file when the memory for replies is taken; small ones wait their turn */
		struct hm_err busy = {0};
		if (agent_budget_reserve(account, AGENT_RES_BYTES, inline_cost(size), 0, &busy) ==
		    0)
			reserved = inline_cost(size);
		else if (size >= AGENT_FILE_STREAM_MIN)
			as_stream = true;
		else if (agent_budget_reserve(account, AGENT_RES_BYTES, inline_cost(size),
					      AGENT_BUDGET_WAIT_MS, err) < 0)
			return hm_err_prefix(err, "%s", req->path);
		else
			reserved = inline_cost(size);
	} else if (!as_stream) {
		/* procfs and sysfs files say 0: reserve for a typical one, and for the rest
		 * once its size is known */
		if (agent_budget_reserve(account, AGENT_RES_BYTES,
					 inline_cost(AGENT_FILE_STREAM_MIN), AGENT_BUDGET_WAIT_MS,
					 err) < 0)
			return hm_err_prefix(err, "%s", req->path);
		reserved = inline_cost(AGENT_FILE_STREAM_MIN);
	}
	if (as_stream) {
		out->size = size;
		out->fd = hm_steal_fd(&fd);
		return 0;
	}
	uint64_t inline_limit = smaller_cap(limit, PROTO_INLINE_MAX);
	/* read to EOF rather than trusting st_size: procfs files report 0 */
	char *data;
	size_t len;
	int rc = hm_read_fd(fd, (size_t)size, (size_t)inline_limit, req->path, &data, &len, err);
	if (rc == 0 && inline_cost(len) > reserved) {
		if (agent_budget_reserve(account, AGENT_RES_BYTES, inline_cost(len) - reserved, 0,
					 err) < 0) {
			free(data);
			rc = hm_err_prefix(err, "%s", req->path);
		} else {
			reserved = inline_cost(len);
		}
	}
	if (rc < 0) {
		agent_budget_release(account, AGENT_RES_BYTES, reserved);
		return -1;
	}
	out->data = data;
	out->size = len;
	out->reserved = reserved;
	return 0;
}

int agent_file_stat(int root_fd, const struct proto_path_req *req, struct proto_stat *out,
		    struct hm_err *err)
{
	if (req->flags & ~PROTO_STAT_NOFOLLOW)
		return hm_err_set(err, EINVAL, "stat: unknown flags 0x%x", req->flags);
	/* O_PATH|O_NOFOLLOW on a symlink gives the link itself: that is lstat */
	int nofollow = (req->flags & PROTO_STAT_NOFOLLOW) ? O_NOFOLLOW : 0;
	hm_cleanup_close int fd =
	    agent_file_open_in_root(root_fd, req->path, O_PATH | nofollow, 0, err);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return hm_err_errno(err, "stat %s", req->path);
	proto_stat_from_host(&st, out);
	return 0;
}

/* faccessat2 (5.8) checks the permission bits, read-only mounts (EROFS) and immutable
 * files for us, with the agent's credentials: root, as the agent acts inside the root.
 * AT_EMPTY_PATH on the O_PATH fd keeps the check on the inode openat2 resolved. */
int agent_file_access(int root_fd, const struct proto_file_access *req, struct hm_err *err)
{
	if (req->mode & ~(uint32_t)(PROTO_ACCESS_R | PROTO_ACCESS_W | PROTO_ACCESS_X))
		return hm_err_set(err, EINVAL, "access: bad mode 0%o", req->mode);
	if (req->flags & ~(uint32_t)(PROTO_ACCESS_EACCESS | PROTO_ACCESS_NOFOLLOW))
		return hm_err_set(err, EINVAL, "access: unknown flags 0x%x", req->flags);
	int nofollow = (req->flags & PROTO_ACCESS_NOFOLLOW) ? O_NOFOLLOW : 0;
	hm_cleanup_close int fd =
	    agent_file_open_in_root(root_fd, req->path, O_PATH | nofollow, 0, err);
	if (fd < 0)
		return -1;
	int mode = (int)req->mode; /* PROTO_ACCESS_* are R_OK/W_OK/X_OK */
	/* a confined session's thread has the caller's fsuid but the agent's real uid 0:
	 * only the effective (fs) ids are the caller's */
	bool eaccess = (req->flags & PROTO_ACCESS_EACCESS) || agent_thread_confined();
	int at_flags = AT_EMPTY_PATH | (eaccess ? AT_EACCESS : 0);
	if (syscall(SYS_faccessat2, fd, "", mode, at_flags) == 0)
		return 0;
	if (errno != ENOSYS)
		return hm_err_errno(err, "access %s", req->path);
	/* before 5.8: the same check through our own fd's magic link; root's real and
	 * effective ids are equal, so AT_EACCESS changes nothing */
	if (agent_thread_confined())
		return hm_err_set(err, ENOSYS, "access %s: needs faccessat2 (Linux 5.8)",
				  req->path);
	char proc_path[64];
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);
	if (access(proc_path, mode) < 0)
		return hm_err_errno(err, "access %s", req->path);
	return 0;
}

int agent_file_readlink(int root_fd, const struct proto_path_req *req, char *buf, size_t buflen,
			struct proto_readlink_reply *out, struct hm_err *err)
{
	if (req->flags)
		return hm_err_set(err, EINVAL, "readlink: unknown flags 0x%x", req->flags);
	if (buflen < 2)
		return hm_err_set(err, EINVAL, "readlink: buffer too small");
	hm_cleanup_close int fd =
	    agent_file_open_in_root(root_fd, req->path, O_PATH | O_NOFOLLOW, 0, err);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return hm_err_errno(err, "stat %s", req->path);
	if (!S_ISLNK(st.st_mode))
		return hm_err_set(err, EINVAL, "%s: not a symbolic link", req->path);
	/* procfs links (/proc/PID/root, fd/N, exe, ...) are made up for the reader: the
	 * kernel would describe them as the agent sees them, not as the target does */
	struct statfs sfs;
	if (fstatfs(fd, &sfs) < 0)
		return hm_err_errno(err, "statfs %s", req->path);
	if (sfs.f_type == PROC_SUPER_MAGIC)
		return hm_err_set(err, ELOOP, "%s: procfs links are not read through the agent",
				  req->path);
	ssize_t n = readlinkat(fd, "", buf, buflen);
	if (n < 0)
		return hm_err_errno(err, "readlink %s", req->path);
	if ((size_t)n >= buflen || n > (ssize_t)PROTO_PATH_MAX)
		return hm_err_set(err, ENAMETOOLONG, "%s: link target too long", req->path);
	if (n == 0)
		return hm_err_set(err, EINVAL, "%s: empty link target", req->path);
	buf[n] = '\0';
	out->target = buf;
	return 0;
}

/* Entries gathered before the final block is laid out. */
struct dirent_acc {
	struct raw_dirent {
		uint64_t ino;
		uint8_t type;
		size_t name_off;
	} * ents;
	size_t count, ents_cap;
	char *names;
	size_t names_len, names_cap;
	size_t encoded; /* bytes of the FILE_READDIR_REPLY payload so far */
};

static void dirent_acc_release(struct dirent_acc *a)
{
	free(a->ents);
	free(a->names);
}

static int dirent_acc_add(struct dirent_acc *a, uint64_t ino, uint8_t type, const char *name,
			  const char *path, struct hm_err *err)
{
	size_t len = strlen(name);
	if (!len || len > PROTO_FILENAME_MAX)
		return hm_err_set(err, EIO, "%s: entry with a bad name length %zu", path, len);
	a->encoded += 8 + 1 + 4 + len + 1; /* ino, type, string */
	if (a->count >= AGENT_READDIR_MAX_ENTRIES || a->encoded > PROTO_MAX_PAYLOAD - 4)
		return hm_err_set(err, E2BIG, "%s: more than %u entries or %u bytes", path,
				  AGENT_READDIR_MAX_ENTRIES, PROTO_MAX_PAYLOAD);
	if (a->count == a->ents_cap) {
		size_t cap = a->ents_cap ? a->ents_cap * 2 : 64;
		void *p = reallocarray(a->ents, cap, sizeof(*a->ents));
		if (!p)
			return hm_err_set(err, ENOMEM, "%s", path);
		a->ents = p;
		a->ents_cap = cap;
	}
	if (a->names_len + len + 1 > a->names_cap) {
		size_t cap = a->names_cap ? a->names_cap * 2 : 4096;
		while (cap < a->names_len + len + 1)
			cap *= 2;
		char *p = realloc(a->names, cap);
		if (!p)
			return hm_err_set(err, ENOMEM, "%s", path);
		a->names = p;
		a->names_cap = cap;
	}
	memcpy(a->names + a->names_len, name, len + 1);
	a->ents[a->count++] = (struct raw_dirent){ino, type, a->names_len};
	a->names_len += len + 1;
	return 0;
}

/* One block: the entry array, then the names it points to. */
static int dirent_acc_finish(const struct dirent_acc *a, struct proto_readdir_reply *out,
			     void **storage, const char *path, struct hm_err *err)
{
	size_t ents_bytes = a->count * sizeof(struct proto_dirent);
	char *block = malloc(ents_bytes + a->names_len + 1);
	if (!block)
		return hm_err_set(err, ENOMEM, "%s", path);
	struct proto_dirent *ents = (struct proto_dirent *)block;
	char *names = block + ents_bytes;
	if (a->names_len)
		memcpy(names, a->names, a->names_len);
	for (size_t i = 0; i < a->count; i++)
		ents[i] = (struct proto_dirent){
		    .ino = a->ents[i].ino,
		    .type = a->ents[i].type,
		    .name = names + a->ents[i].name_off,
		};
	out->count = (uint32_t)a->count;
	out->entries = ents;
	*storage = block;
	return 0;
}

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* The first pass over a directory: what its listing will take, without keeping it.
 * E2BIG beyond the protocol's limits, as the second pass would. */
static int dir_measure(int fd, char *buf, size_t bufsize, const char *path, size_t *count,
		       size_t *names, struct hm_err *err)
{
	*count = *names = 0;
	size_t encoded = 0;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, bufsize);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return hm_err_errno(err, "readdir %s", path);
		}
		if (n == 0)
			break;
		for (long off = 0; off < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			size_t len = strlen(d->d_name);
			encoded += 8 + 1 + 4 + len + 1;
			*names += len + 1;
			if (++*count > AGENT_READDIR_MAX_ENTRIES || encoded > PROTO_MAX_PAYLOAD - 4)
				return hm_err_set(err, E2BIG,
						  "%s: more than %u entries or %u bytes", path,
						  AGENT_READDIR_MAX_ENTRIES, PROTO_MAX_PAYLOAD);
			off += d->d_reclen;
		}
	}
	if (lseek(fd, 0, SEEK_SET) < 0)
		return hm_err_errno(err, "rewind %s", path);
	return 0;
}

/* Memory a listing holds while it is gathered, laid out, encoded and sent. */
static uint64_t listing_cost(size_t count, size_t names)
{
	return 3 * (uint64_t)names + 80 * (uint64_t)count + (64u << 10);
}

int agent_file_readdir(int root_fd, const struct proto_path_req *req,
		       struct agent_budget_account *account, struct proto_readdir_reply *out,
		       void **storage, uint64_t *reserved, struct hm_err *err)
{
	*out = (struct proto_readdir_reply){0};
	*storage = NULL;
	*reserved = 0;
	if (req->flags)
		return hm_err_set(err, EINVAL, "readdir: unknown flags 0x%x", req->flags);
	/* O_DIRECTORY fails with ENOTDIR before a FIFO or device would be opened */
	hm_cleanup_close int fd =
	    agent_file_open_in_root(root_fd, req->path, O_RDONLY | O_DIRECTORY, 0, err);
	if (fd < 0)
		return -1;
	struct dirent_acc acc = {0};
	int rc = 0;
	size_t bufsize = 32768;
	hm_cleanup_free char *buf = malloc(bufsize);
	if (!buf)
		return hm_err_set(err, ENOMEM, "%s", req->path);
	/* measured first, so the memory is reserved (or waited for) in one piece: a
	 * request that held part of it while waiting for more could deadlock others */
	size_t count, names;
	if (dir_measure(fd, buf, bufsize, req->path, &count, &names, err) < 0)
		return -1;
	uint64_t cost = listing_cost(count, names);
	if (agent_budget_reserve(account, AGENT_RES_BYTES, cost, AGENT_BUDGET_WAIT_MS, err) < 0)
		return hm_err_prefix(err, "list %s", req->path);
	acc.ents = reallocarray(NULL, count + 16, sizeof(*acc.ents));
	acc.names = malloc(names + 4096);
	if (!acc.ents || !acc.names) {
		rc = hm_err_set(err, ENOMEM, "%s", req->path);
		goto out;
	}
	acc.ents_cap = count + 16;
	acc.names_cap = names + 4096;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, bufsize);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = hm_err_errno(err, "readdir %s", req->path);
			goto out;
		}
		if (n == 0)
			break;
		for (long off = 0; off < n;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			rc = dirent_acc_add(&acc, d->d_ino, d->d_type, d->d_name, req->path, err);
			if (rc < 0)
				goto out;
			off += d->d_reclen;
		}
	}
	/* the directory may have grown between the passes */
	uint64_t actual = listing_cost(acc.count, acc.names_len);
	if (actual > cost) {
		rc = agent_budget_reserve(account, AGENT_RES_BYTES, actual - cost, 0, err);
		if (rc < 0)
			goto out;
		cost = actual;
	}
	rc = dirent_acc_finish(&acc, out, storage, req->path, err);
out:
	dirent_acc_release(&acc);
	if (rc < 0)
		agent_budget_release(account, AGENT_RES_BYTES, cost);
	else
		*reserved = cost;
	return rc;
}

int agent_file_statfs(int root_fd, const struct proto_path_req *req, struct proto_statfs *out,
		      struct hm_err *err)
{
	if (req->flags)
		return hm_err_set(err, EINVAL, "statfs: unknown flags 0x%x", req->flags);
	hm_cleanup_close int fd = agent_file_open_in_root(root_fd, req->path, O_PATH, 0, err);
	if (fd < 0)
		return -1;
	struct statfs sfs;
	if (fstatfs(fd, &sfs) < 0)
		return hm_err_errno(err, "statfs %s", req->path);
	proto_statfs_from_host(&sfs, out);
	return 0;
}
