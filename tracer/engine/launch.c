/* Starting the program under the filter.
 *
 * trace-run forks the guard (guard.c), which forks the program: the whole tree then
 * dies with trace-run. The program: dies with the guard (PR_SET_PDEATHSIG, checked
 * against the race with an early parent death), gets back the signal mask and SIGCHLD
 * disposition trace-run had, sets no_new_privs (what lets an ordinary user install a
 * filter, and keeps setuid programs from gaining privileges under it), installs the
 * filter and execs.
 *  - seccomp: the filter comes with a listener (plus WAIT_KILLABLE_RECV when probed),
 *    handed to trace-run over a SOCK_SEQPACKET socketpair with SCM_RIGHTS before exec
 *    (the filter lets that one sendmsg through, see filter.c).
 *  - ptrace: the child waits until trace-run has PTRACE_SEIZEd it, since a RET_TRACE
 *    syscall with no tracer attached fails with ENOSYS.
 * Failures come back on the same socket as (stage, errno); it is O_CLOEXEC in the child,
 * so a successful exec shows as EOF. The child runs between fork and exec: no malloc,
 * only syscalls on data prepared by the parent. */
#include <fcntl.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tracer/engine/internal.h"

enum launch_stage { STAGE_SETUP = 1, STAGE_SECCOMP, STAGE_HANDOFF, STAGE_EXEC };

struct launch_record {
	int32_t stage;
	int32_t code;
};

struct launch_child {
	char *const *argv;
	struct sock_fprog prog;
	unsigned long seccomp_flags;
	bool send_listener;
	bool wait_for_tracer;
	int sock;
	pid_t parent;
	sigset_t mask;
	struct sigaction sigchld;
	uint64_t cookie[2];
};

static const char *stage_name(int stage)
{
	switch (stage) {
	case STAGE_SETUP:
		return "prepare the program";
	case STAGE_SECCOMP:
		return "install the seccomp filter";
	case STAGE_HANDOFF:
		return "hand over the seccomp listener";
	default:
		return "exec";
	}
}

__attribute__((noreturn)) static void child_fail(const struct launch_child *c, int stage, int code)
{
	struct launch_record rec = {.stage = stage, .code = code};
	ssize_t n;
	do
		n = write(c->sock, &rec, sizeof(rec));
	while (n < 0 && errno == EINTR);
	if (stage != STAGE_EXEC)
		_exit(TRACER_EXIT_FAILURE);
	_exit((code == ENOENT || code == ENOTDIR) ? TRACER_EXIT_NOTFOUND : TRACER_EXIT_NOEXEC);
}

__attribute__((noreturn)) static void child_main(const struct launch_child *c)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(c, STAGE_SETUP, errno);
	if (getppid() != c->parent)
		_exit(TRACER_EXIT_FAILURE); /* trace-run died before PDEATHSIG was armed */
	sigaction(SIGCHLD, &c->sigchld, NULL);
	sigprocmask(SIG_SETMASK, &c->mask, NULL);
	if (c->wait_for_tracer) {
		char go;
		ssize_t n;
		do
			n = read(c->sock, &go, 1);
		while (n < 0 && errno == EINTR);
		if (n != 1)
			_exit(TRACER_EXIT_FAILURE);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		child_fail(c, STAGE_SETUP, errno);
	long listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, c->seccomp_flags, &c->prog);
	if (listener < 0)
		child_fail(c, STAGE_SECCOMP, errno);
	if (c->send_listener) {
		struct tracer_fd_msg m;
		tracer_fd_msg_init(&m, 'L', (int)listener);
		/* the cookie in the unused argument registers is what the filter lets through */
		long n = syscall(SYS_sendmsg, c->sock, &m.msg, MSG_NOSIGNAL, c->cookie[0],
				 c->cookie[1], 0);
		if (n != 1)
			child_fail(c, STAGE_HANDOFF, n < 0 ? errno : EIO);
		/* the listener is O_CLOEXEC: the program never sees it */
	}
	execvp(c->argv[0], c->argv);
	child_fail(c, STAGE_EXEC, errno);
}

/* The guard: becomes the subreaper of the program's tree, forks the program and watches
 * over both (guard.c). */
__attribute__((noreturn)) static void guard_main(struct launch_child *c, int guard_sock)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		child_fail(c, STAGE_SETUP, errno);
	if (getppid() != c->parent)
		_exit(TRACER_EXIT_FAILURE); /* trace-run is gone already */
	c->parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		child_fail(c, STAGE_SETUP, errno);
	if (pid == 0) {
		close(guard_sock);
		child_main(c);
	}
	/* only the program may hold the status socket: its EOF tells that exec worked */
	close(c->sock);
	/* nor may the guard keep trace-run's other fds (the agent connection...) alive */
	if (guard_sock > 3)
		syscall(SYS_close_range, 3, guard_sock - 1, 0);
	syscall(SYS_close_range, guard_sock + 1, ~0U, 0);
	tracer_guard_main(guard_sock, pid);
}

static int recv_listener(int sock, int *listener, struct launch_record *rec)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	char data[sizeof(struct launch_record)];
	struct iovec iov = {.iov_base = data, .iov_len = sizeof(data)};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf)};
	ssize_t n;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	*listener = -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
		    cm->cmsg_len >= CMSG_LEN(sizeof(int)))
			memcpy(listener, CMSG_DATA(cm), sizeof(int));
	if (*listener >= 0)
		return 0;
	if (n == (ssize_t)sizeof(*rec))
		memcpy(rec, data, sizeof(*rec));
	else
		*rec = (struct launch_record){.stage = STAGE_SETUP, .code = EPIPE};
	return 1;
}

/* a failed launch: make sure the program and the guard are gone and reaped (the
 * program too, when it is our tracee) before reporting */
static int launch_failed(struct tracer *t, const struct launch_record *rec, struct hm_err *err)
{
	if (t->main_pid > 0)
		kill(t->main_pid, SIGKILL);
	for (;;) {
		pid_t r = waitpid(-1, NULL, __WALL);
		if ((r < 0 && errno != EINTR) || r == t->guard_pid)
			break;
	}
	t->main_pid = 0;
	t->guard_pid = 0;
	return hm_err_set(err, rec->code, "cannot %s", stage_name(rec->stage));
}

int tracer_launch(struct tracer *t, char *const argv[], struct hm_err *err)
{
	bool ptrace_backend = t->backend == TRACER_BACKEND_PTRACE;
	if (getrandom(t->handoff_cookie, sizeof(t->handoff_cookie), 0) !=
	    (ssize_t)sizeof(t->handoff_cookie))
		return hm_err_errno(err, "getrandom");
	struct launch_child c = {
	    .argv = argv,
	    .seccomp_flags = 0,
	    .send_listener = !ptrace_backend,
	    .wait_for_tracer = ptrace_backend,
	    .parent = getpid(),
	    .mask = t->saved_mask,
	    .sigchld = t->saved_sigchld,
	    .cookie = {t->handoff_cookie[0], t->handoff_cookie[1]},
	};
	if (!ptrace_backend) {
		c.seccomp_flags = SECCOMP_FILTER_FLAG_NEW_LISTENER;
		if (t->features.wait_killable)
			c.seccomp_flags |= SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
	}
	if (tracer_filter_build(t, ptrace_backend ? SECCOMP_RET_TRACE : SECCOMP_RET_USER_NOTIF,
				&c.prog, err) < 0)
		return -1;
	hm_cleanup_free struct sock_filter *insns = c.prog.filter;
	hm_debug("seccomp filter: %u instructions", c.prog.len);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return hm_err_errno(err, "socketpair");
	c.sock = sv[1];
	int gsv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, gsv) < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		return hm_err_set(err, e, "socketpair");
	}
	pid_t guard = fork();
	if (guard < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		close(gsv[0]);
		close(gsv[1]);
		return hm_err_set(err, e, "fork");
	}
	if (guard == 0) {
		close(sv[0]);
		close(gsv[0]);
		guard_main(&c, gsv[1]);
	}
	close(sv[1]);
	close(gsv[1]);
	t->guard_pid = guard;
	t->guard_sock = gsv[0];
	t->status_sock = sv[0];
	struct launch_record rec = {0};
	if (tracer_guard_program_pid(t) < 0) {
		/* the guard could not start the program: its reason is on the status socket */
		if (recv(t->status_sock, &rec, sizeof(rec), MSG_DONTWAIT) != (ssize_t)sizeof(rec))
			rec = (struct launch_record){.stage = STAGE_SETUP, .code = EPIPE};
		return launch_failed(t, &rec, err);
	}
	pid_t pid = t->main_pid;

	if (ptrace_backend) {
		long opts = PTRACE_O_TRACESECCOMP | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK |
			    PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL |
			    PTRACE_O_TRACESYSGOOD;
		if (ptrace(PTRACE_SEIZE, pid, 0, opts) < 0) {
			/* EPERM: Yama, or trace-run itself is being traced (a tracee's children
			 * belong to its tracer) */
			rec = (struct launch_record){.stage = STAGE_SETUP, .code = errno};
			launch_failed(t, &rec, err);
			return hm_err_set(err, rec.code, "cannot trace the program: PTRACE_SEIZE");
		}
		char go = 'G';
		if (write(t->status_sock, &go, 1) != 1) {
			rec = (struct launch_record){.stage = STAGE_SETUP, .code = errno};
			return launch_failed(t, &rec, err);
		}
		return 0;
	}

	int listener = -1;
	int r = recv_listener(t->status_sock, &listener, &rec);
	if (r < 0) {
		rec = (struct launch_record){.stage = STAGE_HANDOFF, .code = errno};
		return launch_failed(t, &rec, err);
	}
	if (r > 0)
		return launch_failed(t, &rec, err);
	t->listener = listener;
	if (t->features.sync_wakeup) {
		/* wake the supervisor on the notifying CPU: 33 µs -> 3 µs a round trip */
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS,
			  SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) < 0)
			hm_info("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: %s", strerror(errno));
	}
	return 0;
}

void tracer_launch_status(struct tracer *t)
{
	if (t->status_sock < 0)
		return;
	struct launch_record rec;
	ssize_t n = recv(t->status_sock, &rec, sizeof(rec), MSG_DONTWAIT);
	if (n == (ssize_t)sizeof(rec) && rec.stage == STAGE_EXEC) {
		t->exit.outcome = TRACER_EXEC_FAILED;
		t->exit.code = rec.code;
	} else if (n == (ssize_t)sizeof(rec)) {
		hm_error("cannot %s: %s", stage_name(rec.stage), strerror(rec.code));
	}
	if (n >= 0 || errno != EAGAIN) {
		close(t->status_sock);
		t->status_sock = -1;
	}
}
