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
	if (r->master >= 0 && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0)
		ioctl(r->master, TIOCSWINSZ, &ws);
}

int rt_tty_relay_start(struct rt_tty_relay *r, int master, struct hm_err *err)
{
	*r = (struct rt_tty_relay){.master = master, .stdin_open = true, .output_open = true};
	/* never block on a pod that does not read its input: trace-pod must see it exit */
	int flags = fcntl(master, F_GETFL);
	if (flags < 0 || fcntl(master, F_SETFL, flags | O_NONBLOCK) < 0)
		return hm_err_errno(err, "pty");
	rt_tty_relay_resize(r);
	set_raw(r);
	return 0;
}

int rt_tty_relay_fds(const struct rt_tty_relay *r, struct pollfd *fds)
{
	int n = 0;
	if (r->master < 0 || !r->output_open)
		return 0;
	/* input waits in to_pod until the pod takes it: stdin is read only when it is empty */
	if (r->stdin_open && r->to_pod_len == 0)
		fds[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
	fds[n++] =
	    (struct pollfd){.fd = r->master, .events = POLLIN | (r->to_pod_len ? POLLOUT : 0)};
	return n;
}

/* Copy what the pod wrote to stdout; false once the pty is closed on the pod's side. */
static bool copy_output(struct rt_tty_relay *r)
{
	char buf[16384];
	for (;;) {
		ssize_t n = read(r->master, buf, sizeof(buf));
		if (n > 0) {
			if (hm_write_all(STDOUT_FILENO, buf, n) < 0)
				hm_debug("relay to stdout: %s", strerror(errno));
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		/* EIO: every process of the pod closed its side */
		return n < 0 && errno == EAGAIN;
	}
}

static void copy_input(struct rt_tty_relay *r)
{
	if (r->to_pod_len == 0 && r->stdin_open) {
		ssize_t n = read(STDIN_FILENO, r->to_pod, sizeof(r->to_pod));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		if (n <= 0) {
			r->stdin_open = false;
			return;
		}
		r->to_pod_len = n;
		r->to_pod_off = 0;
	}
	while (r->to_pod_off < r->to_pod_len) {
		ssize_t n =
		    write(r->master, r->to_pod + r->to_pod_off, r->to_pod_len - r->to_pod_off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				r->to_pod_len = r->to_pod_off = 0;
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
		if (fds[i].fd == r->master && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
		    !copy_output(r)) {
			/* nobody in the pod holds the terminal any more: the caller only
			 * waits for the process now (a closed pty polls as always ready) */
			r->output_open = false;
			r->stdin_open = false;
		}
		if (fds[i].fd == STDIN_FILENO || (fds[i].revents & POLLOUT))
			copy_input(r);
	}
}

void rt_tty_relay_finish(struct rt_tty_relay *r)
{
	if (r->master >= 0) {
		/* what the pod wrote just before it exited is still in the pty */
		copy_output(r);
		hm_closep(&r->master);
	}
	restore_terminal();
	if (r->handlers_installed) {
		for (size_t i = 0; i < HM_ARRAY_SIZE(fatal_signals); i++)
			sigaction(fatal_signals[i], &previous_actions[i], NULL);
		r->handlers_installed = false;
	}
}
