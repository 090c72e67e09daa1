/* Network namespaces are per thread: the loader moves only the calling thread into
 * the target's netns for the netlink and ifindex work, and back. */
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <string.h>
#include <sys/stat.h>

#include "loader/internal.h"

int hm_netns_open(const struct hm_netdev *dev, struct hm_err *err)
{
	hm_cleanup_close int fd = -1;
	const char *what;
	if (dev->netns_path) {
		what = dev->netns_path;
		fd = open(dev->netns_path, O_RDONLY | O_CLOEXEC);
	} else if (dev->netns_fd >= 0) {
		what = "netns fd";
		fd = fcntl(dev->netns_fd, F_DUPFD_CLOEXEC, 3);
	} else {
		what = "/proc/thread-self/ns/net";
		fd = open(what, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return hm_err_errno(err, "open network namespace %s", what);
	int type = ioctl(fd, NS_GET_NSTYPE);
	if (type < 0)
		return hm_err_errno(err, "%s is not a namespace", what);
	if (type != CLONE_NEWNET)
		return hm_err_set(err, EINVAL, "%s is not a network namespace", what);
	return hm_steal_fd(&fd);
}

static bool same_file(int a, int b)
{
	struct stat sa, sb;
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

int hm_netns_enter(int netns_fd, struct hm_netns_switch *sw, struct hm_err *err)
{
	sw->home_fd = -1;
	hm_cleanup_close int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (home < 0)
		return hm_err_errno(err, "open own network namespace");
	/* a caller's thread may already live in the target netns */
	if (same_file(home, netns_fd))
		return 0;
	if (setns(netns_fd, CLONE_NEWNET) < 0)
		return hm_err_errno(err, "enter network namespace");
	sw->home_fd = hm_steal_fd(&home);
	return 0;
}

int hm_netns_leave(struct hm_netns_switch *sw, struct hm_err *err)
{
	if (sw->home_fd < 0)
		return 0;
	hm_cleanup_close int home = hm_steal_fd(&sw->home_fd);
	if (setns(home, CLONE_NEWNET) < 0) {
		hm_error("thread %d is stuck in a foreign network namespace: %s", gettid(),
			 strerror(errno));
		return hm_err_errno(err, "return to own network namespace");
	}
	return 0;
}
