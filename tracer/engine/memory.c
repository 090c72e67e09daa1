/* Reading and writing the program's memory for the handlers: process_vm_readv/writev
 * (one syscall, no fd), falling back to /proc/TID/mem when cross-memory attach is
 * missing or refuses the mapping (execute-only text, read-only pages to write). Plus the
 * path helpers every file handler needs. */
#include <fcntl.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include "tracer/engine/internal.h"

#define PAGE 4096UL

static ssize_t proc_mem_rw(pid_t pid, uint64_t addr, void *buf, size_t len, bool writing)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	hm_cleanup_close int fd = open(path, (writing ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
	if (fd < 0)
		return -1;
	return writing ? pwrite(fd, buf, len, (off_t)addr) : pread(fd, buf, len, (off_t)addr);
}

/* all of [addr, addr+len) or an error */
static int mem_rw(const struct tracer_call *call, uint64_t addr, void *buf, size_t len,
		  bool writing, struct hm_err *err)
{
	if (len == 0)
		return 0;
	if (addr + len < addr)
		return hm_err_set(err, EFAULT, "address range wraps");
	struct iovec local = {.iov_base = buf, .iov_len = len};
	struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
	ssize_t n = writing ? process_vm_writev(call->pid, &local, 1, &remote, 1, 0)
			    : process_vm_readv(call->pid, &local, 1, &remote, 1, 0);
	if (n == (ssize_t)len)
		return 0;
	if (n < 0 && errno == ESRCH)
		return hm_err_set(err, ESRCH, "thread %d", call->pid);
	n = proc_mem_rw(call->pid, addr, buf, len, writing);
	if (n == (ssize_t)len)
		return 0;
	int code = n < 0 ? (errno == EIO ? EFAULT : errno) : EFAULT;
	return hm_err_set(err, code, "%s %zu bytes at 0x%llx in thread %d",
			  writing ? "write" : "read", len, (unsigned long long)addr, call->pid);
}

int tracer_read_mem(const struct tracer_call *call, uint64_t addr, void *buf, size_t len,
		    struct hm_err *err)
{
	return mem_rw(call, addr, buf, len, false, err);
}

int tracer_write_mem(const struct tracer_call *call, uint64_t addr, const void *buf, size_t len,
		     struct hm_err *err)
{
	return mem_rw(call, addr, (void *)buf, len, true, err);
}

/* NUL-terminated string of at most size-1 bytes; ENAMETOOLONG when longer. */
static int read_string(const struct tracer_call *call, uint64_t addr, char *buf, size_t size,
		       struct hm_err *err)
{
	if (size == 0)
		return hm_err_set(err, EINVAL, "empty buffer");
	if (addr == 0)
		return hm_err_set(err, EFAULT, "NULL string");
	size_t got = 0;
	/* page by page: the string may end just before an unmapped page */
	while (got < size) {
		size_t chunk = PAGE - ((addr + got) & (PAGE - 1));
		if (chunk > size - got)
			chunk = size - got;
		if (mem_rw(call, addr + got, buf + got, chunk, false, err) < 0)
			return -1;
		char *nul = memchr(buf + got, '\0', chunk);
		if (nul)
			return 0;
		got += chunk;
	}
	buf[size - 1] = '\0';
	return hm_err_set(err, ENAMETOOLONG, "string at 0x%llx", (unsigned long long)addr);
}

bool tracer_call_valid(const struct tracer_call *call)
{
	if (call->tracer->backend == TRACER_BACKEND_PTRACE)
		return tracer_ptrace_valid(call);
	uint64_t id = call->id;
	return ioctl(call->tracer->listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0;
}

int tracer_peek_path(const struct tracer_call *call, uint64_t addr, char *buf, size_t size,
		     struct hm_err *err)
{
	return read_string(call, addr, buf, size, err);
}

int tracer_read_path(const struct tracer_call *call, uint64_t addr, char *buf, size_t size,
		     struct hm_err *err)
{
	if (read_string(call, addr, buf, size, err) < 0)
		return -1;
	if (!tracer_call_valid(call))
		return hm_err_set(err, ESRCH, "syscall of thread %d is gone", call->pid);
	return 0;
}

void tracer_path_normalize(char *path)
{
	/* out never overtakes in: rewrite in place */
	char *out = path;
	const char *in = path;
	bool absolute = *in == '/';
	if (absolute)
		*out++ = '/';
	char *base = out;
	while (*in) {
		while (*in == '/')
			in++;
		if (!*in)
			break;
		const char *end = strchrnul(in, '/');
		size_t n = (size_t)(end - in);
		if (n == 1 && in[0] == '.') {
			/* nothing */
		} else if (n == 2 && in[0] == '.' && in[1] == '.') {
			if (out > base) {
				out--; /* the '/' we wrote after the last component, or its end */
				while (out > base && out[-1] != '/')
					out--;
			}
		} else {
			memmove(out, in, n);
			out += n;
			/* out may have caught up with in: the '/' would overwrite the NUL */
			bool last = !*end;
			*out++ = '/';
			if (last)
				break;
		}
		in = end;
	}
	if (out > base)
		out--; /* trailing '/' */
	if (out == path)
		*out++ = absolute ? '/' : '.';
	*out = '\0';
}

int tracer_resolve_at(const struct tracer_call *call, int dirfd, const char *path, char *out,
		      size_t size, struct hm_err *err)
{
	if (path[0] == '/') {
		if (strlen(path) >= size)
			return hm_err_set(err, ENAMETOOLONG, "path");
		strcpy(out, path);
		tracer_path_normalize(out);
		return 0;
	}
	char link[64];
	if (dirfd == AT_FDCWD)
		snprintf(link, sizeof(link), "/proc/%d/cwd", call->pid);
	else
		snprintf(link, sizeof(link), "/proc/%d/fd/%d", call->pid, dirfd);
	char dir[PATH_MAX];
	ssize_t n = readlink(link, dir, sizeof(dir) - 1);
	if (n < 0)
		return hm_err_set(err, errno == ENOENT ? EBADF : errno, "readlink %s", link);
	dir[n] = '\0';
	if (dir[0] != '/')
		return hm_err_set(err, ENOTDIR, "dirfd %d is not a directory (%s)", dirfd, dir);
	if ((size_t)snprintf(out, size, "%s/%s", dir, path) >= size)
		return hm_err_set(err, ENAMETOOLONG, "path");
	tracer_path_normalize(out);
	return 0;
}
