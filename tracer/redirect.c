/* A demonstration handler set: open()/openat() of a path under a prefix gets a memfd
 * holding fixed content instead of the real file. It is the shape remote files take:
 * read the path argument, resolve it as the program would, decide, and hand over a
 * real, read-only fd so that read, pread, lseek and mmap run at local speed. */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "tracer/internal.h"

static bool under_prefix(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);
	while (n > 1 && prefix[n - 1] == '/')
		n--;
	return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/' || n == 1);
}

/* sealed, then reopened read-only: the program gets O_RDONLY semantics, like a file it
 * may not write */
static int content_fd(const struct tracer_redirect *r, const char *path, struct hm_err *err)
{
	char name[64];
	snprintf(name, sizeof(name), "hermit:%.50s", path);
	hm_autofd fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return hm_err_errno(err, "memfd_create");
	if (hm_write_all(fd, r->content, r->len) < 0)
		return hm_err_errno(err, "write memfd");
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return hm_err_errno(err, "seal memfd");
	char self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	int ro = open(self, O_RDONLY | O_CLOEXEC);
	if (ro < 0)
		return hm_err_errno(err, "reopen memfd");
	return ro;
}

static struct tracer_result redirect_open(const struct tracer_call *call, int dirfd,
					  uint64_t path_addr, int flags, struct tracer_redirect *r)
{
	struct hm_err err = {0};
	char path[PATH_MAX], abs[PATH_MAX];
	/* unreadable path: the kernel gives the program the right error (EFAULT...) */
	if (tracer_read_path(call, path_addr, path, sizeof(path), &err) < 0)
		return tracer_continue();
	if (tracer_resolve_at(call, dirfd, path, abs, sizeof(abs), &err) < 0)
		return tracer_continue();
	if (!under_prefix(abs, r->prefix))
		return tracer_continue();
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
		return tracer_error(EROFS);
	if (flags & O_DIRECTORY)
		return tracer_error(ENOTDIR);
	int fd = content_fd(r, abs, &err);
	if (fd < 0) {
		hm_warn("%s: %s", abs, err.msg);
		return tracer_error(err.code ? err.code : EIO);
	}
	r->hits++;
	return tracer_install_fd(fd, flags & (O_CLOEXEC | O_NONBLOCK));
}

static struct tracer_result handle_open(const struct tracer_call *call, void *data)
{
	return redirect_open(call, AT_FDCWD, call->args[0], (int)call->args[1], data);
}

static struct tracer_result handle_openat(const struct tracer_call *call, void *data)
{
	return redirect_open(call, (int)call->args[0], call->args[1], (int)call->args[2], data);
}

int tracer_redirect_register(struct tracer *t, struct tracer_redirect *r, struct hm_err *err)
{
	if (!r->prefix || r->prefix[0] != '/')
		return hm_err_set(err, EINVAL, "redirect prefix must be an absolute path");
	if (tracer_set_handler(t, SYS_open, handle_open, r, err) < 0 ||
	    tracer_set_handler(t, SYS_openat, handle_openat, r, err) < 0)
		return -1;
	return 0;
}
