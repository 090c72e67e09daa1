/* One fd in an SCM_RIGHTS message: the launch child hands the seccomp listener to
 * trace-run this way, and the ptrace backend hands installed fds to the program. */
#include <string.h>

#include "tracer/engine/internal.h"

void tracer_fd_msg_init(struct tracer_fd_msg *m, char tag, int fd)
{
	memset(m, 0, sizeof(*m));
	m->byte = tag;
	m->iov = (struct iovec){.iov_base = &m->byte, .iov_len = 1};
	m->msg = (struct msghdr){.msg_iov = &m->iov,
				 .msg_iovlen = 1,
				 .msg_control = m->control.buf,
				 .msg_controllen = sizeof(m->control.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m->msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
}
