/* notif_floor: the floor of a seccomp user-notification round trip on this machine, for
 * bench/tracer.sh to print beside trace-run's figures. It runs COMMAND with the path
 * system calls trace-run always intercepts (open, stat, access, readlink, exec and their
 * *at forms) raising notifications, and answers them from a supervisor that does
 * nothing else: poll, RECV, SEND CONTINUE. With --addfd FILE every openat is answered
 * instead by opening FILE and installing it with ADDFD + ADDFD_FLAG_SEND, which is how
 * trace-run answers an open from its cache. SYNC_WAKE_UP is asked for where the kernel
 * has it, as trace-run does.
 *
 *   notif_floor [--addfd FILE] -- COMMAND [ARGS]
 *
 * The supervisor is this process; COMMAND runs in a child that installs the filter,
 * hands the listener over (SCM_RIGHTS) and execs. Exit status: COMMAND's, 125 when the
 * filter or the launch fails, 2 on a usage error. */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tracer/engine/seccomp_compat.h"

static const int path_syscalls[] = {
    SYS_open,	    SYS_openat,	    SYS_openat2,    SYS_creat,	SYS_stat,
    SYS_lstat,	    SYS_newfstatat, SYS_statx,	    SYS_access, SYS_faccessat,
    SYS_faccessat2, SYS_readlink,   SYS_readlinkat, SYS_execve, SYS_execveat,
};

static int send_fd(int sock, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	char byte = 0;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(fd));
	return sendmsg(sock, &mh, 0) < 0 ? -1 : 0;
}

static int recv_fd(int sock)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	if (recvmsg(sock, &mh, MSG_CMSG_CLOEXEC) <= 0 || !CMSG_FIRSTHDR(&mh))
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&mh)), sizeof(fd));
	return fd;
}

/* In the child: the filter, the listener to the parent, exec. Never returns. */
static void run_filtered(int sock, char **argv)
{
	enum { N = sizeof(path_syscalls) / sizeof(path_syscalls[0]) };
	struct sock_filter insns[N + 3];
	size_t k = 0;
	insns[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						  offsetof(struct seccomp_data, nr));
	for (size_t i = 0; i < N; i++)
		/* a match jumps over the remaining tests and the ALLOW to USER_NOTIF */
		insns[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
							  (unsigned)path_syscalls[i],
							  (unsigned char)(N - i), 0);
	insns[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	insns[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	struct sock_fprog prog = {.len = (unsigned short)k, .filter = insns};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		perror("notif_floor: PR_SET_NO_NEW_PRIVS");
		_exit(125);
	}
	int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				    SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (listener < 0) {
		perror("notif_floor: seccomp");
		_exit(125);
	}
	/* sendmsg and close are not filtered: the hand-over needs no supervisor yet */
	if (send_fd(sock, listener) < 0) {
		perror("notif_floor: sendmsg");
		_exit(125);
	}
	close(listener);
	close(sock);
	execvp(argv[0], argv);
	fprintf(stderr, "notif_floor: %s: %s\n", argv[0], strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

static void answer(int listener, const struct seccomp_notif *req, const char *addfd_path)
{
	if (addfd_path && req->data.nr == SYS_openat) {
		int fd = open(addfd_path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			struct seccomp_notif_addfd add = {.id = req->id,
							  .flags = SECCOMP_ADDFD_FLAG_SEND,
							  .srcfd = (__u32)fd,
							  .newfd_flags = O_CLOEXEC};
			int r = ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &add);
			close(fd);
			if (r >= 0)
				return;
		}
	}
	struct seccomp_notif_resp resp = {.id = req->id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
	ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp); /* fails only if the call is gone */
}

/* Until the listener hangs up: the child and everything it started are gone. */
static void supervise(int listener, const char *addfd_path)
{
	ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
	for (;;) {
		struct pollfd pfd = {.fd = listener, .events = POLLIN};
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("notif_floor: poll");
			return;
		}
		if (pfd.revents & (POLLHUP | POLLERR))
			return;
		struct seccomp_notif req;
		memset(&req, 0, sizeof(req));
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
			continue; /* the call was abandoned meanwhile */
		answer(listener, &req, addfd_path);
	}
}

int main(int argc, char **argv)
{
	const char *addfd_path = NULL;
	int i = 1;
	if (i + 1 < argc && strcmp(argv[i], "--addfd") == 0) {
		addfd_path = argv[i + 1];
		i += 2;
	}
	if (i < argc && strcmp(argv[i], "--") == 0)
		i++;
	if (i >= argc) {
		fprintf(stderr, "usage: notif_floor [--addfd FILE] -- COMMAND [ARGS]\n");
		return 2;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		perror("notif_floor: socketpair");
		return 125;
	}
	pid_t pid = fork();
	if (pid < 0) {
		perror("notif_floor: fork");
		return 125;
	}
	if (pid == 0) {
		close(sv[0]);
		run_filtered(sv[1], argv + i);
	}
	close(sv[1]);
	int listener = recv_fd(sv[0]);
	close(sv[0]);
	if (listener >= 0) {
		supervise(listener, addfd_path);
		close(listener);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR) {
			perror("notif_floor: waitpid");
			return 125;
		}
	if (listener < 0)
		return WIFEXITED(status) ? WEXITSTATUS(status) : 125;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
