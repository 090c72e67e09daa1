/* openat2(2), the one resolver for paths below a directory someone else controls (a
 * container's root for the agent, a pod's rootfs for trace-pod). */
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>

#include "util.h"

/* RESOLVE_IN_ROOT and RESOLVE_BENEATH report EAGAIN when a concurrent rename might have
 * let ".." escape; the resolution is then simply retried. */
#define OPENAT2_EAGAIN_RETRIES 32

int hm_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve,
	       struct hm_err *err)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    /* openat2 rejects a mode without O_CREAT/O_TMPFILE */
	    .mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? (mode & 07777) : 0,
	    .resolve = resolve,
	};
	for (int tries = 0;; tries++) {
		long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		if (fd >= 0)
			return (int)fd;
		if (errno == EAGAIN && tries < OPENAT2_EAGAIN_RETRIES)
			continue;
		if (errno == ENOSYS)
			return hm_err_set(err, ENOSYS, "%s: openat2 needs Linux 5.6", path);
		return hm_err_errno(err, "%s", path);
	}
}
