/* The pod and the operator's terminal. A pod's process never shares the caller's session:
 * it always starts a new one, so the caller's terminal is not its controlling terminal
 * and TIOCSTI on it fails (and the seccomp profile refuses TIOCSTI anyway). With -t the
 * pod gets a pty of its own devpts instance as controlling terminal and stdio; its
 * master comes back to trace-pod, which relays it to the operator's terminal in raw mode
 * and restores the terminal on every way out.
 *
 * The child side runs between clone and exec (no malloc); the relay runs in trace-pod. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>

#include "runtime/internal.h"

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* ---- the pod's side ---- */

static int send_master(int sock, int master, struct hm_err *err)
{
	char tag = 't';
	struct iovec iov = {.iov_base = &tag, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	memset(&control, 0, sizeof(control));
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	*cm = (struct cmsghdr){
	    .cmsg_len = CMSG_LEN(sizeof(int)), .cmsg_level = SOL_SOCKET, .cmsg_type = SCM_RIGHTS};
	memcpy(CMSG_DATA(cm), &master, sizeof(int));
	ssize_t n;
	do
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n != 1)
		return hm_err_errno(err, "hand the pty to trace-pod");
	return 0;
}

int rt_child_new_session(int tty_sock, struct hm_err *err)
{
	if (setsid() < 0)
		return hm_err_errno(err, "setsid");
	if (tty_sock < 0)
		return 0;
	/* the pod's own devpts (mounts.c): the host's ptys stay out of reach, and the pod
	 * sees its terminal as /dev/pts/N like any other */
	hm_cleanup_close int master =
	    open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW);
	if (master < 0)
		return hm_err_errno(err, "open /dev/pts/ptmx");
	int unlock = 0;
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
		return hm_err_errno(err, "unlock the pty");
	/* the peer of this very master, without a path lookup in the pod's /dev */
	hm_cleanup_close int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		return hm_err_errno(err, "open the pty's terminal");
	if (send_master(tty_sock, master, err) < 0)
		return -1;
	for (int fd = 0; fd <= 2; fd++)
		if (dup2(slave, fd) < 0)
			return hm_err_errno(err, "pty as fd %d", fd);
	if (ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
		return hm_err_errno(err, "pty as controlling terminal");
	return 0;
}

/* ---- trace-pod's side ---- */

int rt_tty_receive_master(int sock, int *master, struct hm_err *err)
{
	*master = -1;
	char tag;
	struct iovec iov = {.iov_base = &tag, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t n;
	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return hm_err_errno(err, "receive the pod's pty");
	/* EOF: the process failed before (its reason is on the error pipe) */
	if (n == 0)
		return 0;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
	    cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return hm_err_set(err, EPROTO, "the pod's process sent no pty");
	hm_cleanup_close int fd = -1;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	/* the pod's root could have put anything at /dev/pts/ptmx: only a pty master
	 * answers TIOCGPTN */
	unsigned ptn;
	if (ioctl(fd, TIOCGPTN, &ptn) < 0)
		return hm_err_set(err, EPROTO, "the pod's process sent something else than a pty");
	*master = hm_steal_fd(&fd);
	return 0;
}

int rt_tty_require_terminal(struct hm_err *err)
{
	if (!isatty(STDIN_FILENO))
		return hm_err_plain(
		    err, ENOTTY, "-t: the input is not a terminal (drop -t to use a pipe or file)");
	return 0;
}

/* The terminal settings to restore, readable from a signal handler. */
static struct termios saved_termios;
static volatile sig_atomic_t terminal_is_raw;

static const int fatal_signals[] = {SIGHUP,  SIGTERM, SIGQUIT, SIGABRT, SIGSEGV,  SIGBUS,
				    SIGFPE,  SIGILL,  SIGTRAP, SIGSYS,	SIGALRM,  SIGUSR1,
				    SIGUSR2, SIGXCPU, SIGXFSZ, SIGPROF, SIGVTALRM};
static struct sigaction previous_actions[HM_ARRAY_SIZE(fatal_signals)];

static void restore_terminal(void)
{
	if (terminal_is_raw) {
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
		terminal_is_raw = 0;
	}
}

/* A signal that kills trace-pod (a blocked one waits in a signalfd and never comes
 * here) must not leave the operator with a raw terminal: restore, then die of it. */
static void restore_and_die(int sig)
{
	int saved_errno = errno;
	restore_terminal();
	errno = saved_errno;
	raise(sig); /* SA_RESETHAND: the default action now */
}

static void set_raw(struct rt_tty_relay *r)
{
	struct termios raw;
	if (tcgetattr(STDIN_FILENO, &saved_termios) < 0)
		return;
	raw = saved_termios;
	cfmakeraw(&raw);
	struct sigaction die = {.sa_handler = restore_and_die, .sa_flags = SA_RESETHAND};
	sigemptyset(&die.sa_mask);
	for (size_t i = 0; i < HM_ARRAY_SIZE(fatal_signals); i++)
		sigaction(fatal_signals[i], &die, &previous_actions[i]);
	terminal_is_raw = 1;
	if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) < 0) {
		terminal_is_raw = 0;
		hm_debug("raw terminal: %s", strerror(errno));
	}
	r->handlers_installed = true;
}

void rt_tty_relay_resize(struct rt_tty_relay *r)
{
	struct winsize ws;
	if (r->pty && r->in >= 0 && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
		ioctl(r->in, TIOCSWINSZ, &ws);
}

/* never block on a pod that does not read its input or fill its output: trace-pod
 * must see it exit */
static int set_nonblocking(int fd, struct hm_err *err)
{
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return hm_err_errno(err, "relay to the pod");
	return 0;
}

int rt_tty_relay_start(struct rt_tty_relay *r, int master, struct hm_err *err)
{
	*r = (struct rt_tty_relay){
	    .pty = true, .in = master, .out = {master, -1}, .stdin_open = true};
	if (set_nonblocking(master, err) < 0)
		return -1;
	rt_tty_relay_resize(r);
	set_raw(r);
	return 0;
}

int rt_tty_relay_pipes(struct rt_tty_relay *r, int saved[3], struct hm_err *err)
{
	*r = (struct rt_tty_relay){.in = -1, .out = {-1, -1}};
	saved[0] = saved[1] = saved[2] = -1;
	if (!isatty(STDIN_FILENO) && !isatty(STDOUT_FILENO) && !isatty(STDERR_FILENO))
		return 0;
	for (int fd = 0; fd <= 2; fd++) {
		if (!isatty(fd))
			continue;
		int ends[2];
		/* a background job reading its terminal is stopped (SIGTTIN): no input */
		bool no_input = fd == STDIN_FILENO && tcgetpgrp(fd) != getpgrp();
		if (no_input) {
			ends[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
			ends[1] = -1;
			if (ends[0] < 0) {
				hm_err_errno(err, "open /dev/null");
				goto fail;
			}
		} else if (pipe2(ends, O_CLOEXEC) < 0) {
			hm_err_errno(err, "pipe");
			goto fail;
		}
		int pod_end = fd == STDIN_FILENO ? ends[0] : ends[1];
		int our_end = fd == STDIN_FILENO ? ends[1] : ends[0];
		saved[fd] = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		bool ok = saved[fd] >= 0 && dup2(pod_end, fd) == fd;
		if (!ok)
			hm_err_errno(err, "pipe as fd %d", fd);
		close(pod_end);
		if (fd == STDIN_FILENO) {
			r->in = our_end;
			r->stdin_open = our_end >= 0;
		} else {
			r->out[fd - 1] = our_end;
		}
		if (!ok || (our_end >= 0 && set_nonblocking(our_end, err) < 0))
			goto fail;
	}
	return 1;
fail:
	rt_tty_relay_pipes_restore(saved);
	rt_tty_relay_finish(r);
	return -1;
}

void rt_tty_relay_pipes_restore(int saved[3])
{
	for (int fd = 0; fd <= 2; fd++) {
		if (saved[fd] < 0)
			continue;
		if (dup2(saved[fd], fd) < 0)
			hm_warn("restore fd %d: %s", fd, strerror(errno));
		hm_closep(&saved[fd]);
	}
}

int rt_tty_relay_fds(const struct rt_tty_relay *r, struct pollfd *fds)
{
	int n = 0;
	bool to_pod_waits = r->in >= 0 && r->to_pod_len > 0;
	/* input waits in to_pod until the pod takes it: stdin is read only when it is empty */
	if (r->in >= 0 && r->stdin_open && r->to_pod_len == 0)
		fds[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
	for (int i = 0; i < 2; i++)
		if (r->out[i] >= 0)
			fds[n++] = (struct pollfd){
			    .fd = r->out[i],
			    .events = POLLIN | (to_pod_waits && r->out[i] == r->in ? POLLOUT : 0)};
	if (to_pod_waits && r->in != r->out[0])
		fds[n++] = (struct pollfd){.fd = r->in, .events = POLLOUT};
	return n;
}

/* Copy what the pod wrote on out[i] to our fd i + 1; false once the pod's side is
 * closed (a pipe's EOF, a pty's EIO). */
static bool copy_output(struct rt_tty_relay *r, int i)
{
	char buf[16384];
	for (;;) {
		ssize_t n = read(r->out[i], buf, sizeof(buf));
		if (n > 0) {
			if (hm_write_all(STDOUT_FILENO + i, buf, n) < 0)
				hm_debug("relay to fd %d: %s", STDOUT_FILENO + i, strerror(errno));
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* EIO: every process of the pod closed the pty */
		return n < 0 && errno == EAGAIN;
	}
}

/* The pod gets no more input: a pipe is closed (the pod reads EOF); a pty stays, it is
 * also the pod's output. */
static void stop_input(struct rt_tty_relay *r)
{
	r->stdin_open = false;
	r->to_pod_len = r->to_pod_off = 0;
	if (!r->pty)
		hm_closep(&r->in);
}

static void copy_input(struct rt_tty_relay *r)
{
	if (r->to_pod_len == 0 && r->stdin_open) {
		ssize_t n = read(STDIN_FILENO, r->to_pod, sizeof(r->to_pod));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		if (n <= 0) {
			stop_input(r);
			return;
		}
		r->to_pod_len = n;
		r->to_pod_off = 0;
	}
	while (r->in >= 0 && r->to_pod_off < r->to_pod_len) {
		ssize_t n = write(r->in, r->to_pod + r->to_pod_off, r->to_pod_len - r->to_pod_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN) /* EPIPE: nobody in the pod reads its input */
				stop_input(r);
			return;
		}
		r->to_pod_off += n;
	}
	r->to_pod_len = r->to_pod_off = 0;
}

void rt_tty_relay_io(struct rt_tty_relay *r, const struct pollfd *fds, int n)
{
	for (int i = 0; i < n; i++) {
		if (!fds[i].revents)
			continue;
		for (int o = 0; o < 2; o++) {
			if (fds[i].fd != r->out[o] ||
			    !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)) || copy_output(r, o))
				continue;
			/* nobody in the pod holds it any more (a closed pty or pipe polls as
			 * always ready): with a pty, that is the end of the input too */
			if (r->pty) {
				r->stdin_open = false;
				r->to_pod_len = 0;
				r->in = -1; /* the same fd as out[0] */
			}
			hm_closep(&r->out[o]);
		}
		if (fds[i].fd == STDIN_FILENO || (fds[i].revents & POLLOUT))
			copy_input(r);
	}
}

void rt_tty_relay_finish(struct rt_tty_relay *r)
{
	/* the command is gone: what the operator types from now on is not the pod's */
	r->stdin_open = false;
	if (!r->pty)
		hm_closep(&r->in);
	/* what the pod wrote just before it exited is still in the pty or the pipes */
	for (int o = 0; o < 2; o++) {
		if (r->out[o] >= 0) {
			copy_output(r, o);
			hm_closep(&r->out[o]);
		}
	}
	r->in = -1; /* with a pty, out[0]: closed above */
	restore_terminal();
	if (r->handlers_installed) {
		for (size_t i = 0; i < HM_ARRAY_SIZE(fatal_signals); i++)
			sigaction(fatal_signals[i], &previous_actions[i], NULL);
		r->handlers_installed = false;
	}
}
