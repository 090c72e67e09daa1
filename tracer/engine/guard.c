/* The guard: a small process between trace-run and the program, so that the program's
 * whole process tree dies with trace-run, even when trace-run is SIGKILLed and no code
 * of its own runs.
 *
 *   trace-run ── guard (child subreaper) ── program ── its children ...
 *
 * The guard is a child subreaper: whatever the program leaves orphaned is reparented
 * to it instead of init, so every descendant stays below it. It holds one end of a
 * socketpair whose other end only trace-run has; the kernel closes that end when
 * trace-run dies however it dies, and the guard then SIGKILLs every descendant until
 * none is left. (PR_SET_PDEATHSIG would follow the death of the forking *thread*, and
 * a signal to the guard could be missed; a hang-up cannot.) The program also has
 * PR_SET_PDEATHSIG(SIGKILL) on the guard, for when the guard itself is killed.
 *
 * A pid namespace would give this for free, but changes the pids the program sees and
 * needs privileges; a cgroup with cgroup.kill needs a delegated cgroup an ordinary user
 * usually does not have. The guard needs neither.
 *
 * trace-run is multi-threaded when it forks the guard: the guard may not allocate or
 * take locks, so it uses raw syscalls and stack buffers only.
 *
 * The guard also reports to trace-run, on the same socket, the program's pid and,
 * since trace-run is no longer its parent, the program's wait status. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "tracer/engine/internal.h"

struct guard_msg {
	int32_t kind; /* GUARD_PROGRAM_PID or GUARD_PROGRAM_STATUS */
	int32_t value;
};
enum { GUARD_PROGRAM_PID = 1, GUARD_PROGRAM_STATUS };

/* Async-signal-safe: open/read only. -1 when pid is gone. */
pid_t tracer_proc_ppid(pid_t pid)
{
	char path[32], buf[512];
	int len = 0;
	/* snprintf is not on the async-signal-safe list: build "/proc/N/stat" by hand */
	char digits[12];
	int nd = 0;
	for (unsigned v = (unsigned)pid; nd == 0 || v; v /= 10)
		digits[nd++] = (char)('0' + v % 10);
	memcpy(path, "/proc/", 6);
	len = 6;
	while (nd)
		path[len++] = digits[--nd];
	memcpy(path + len, "/stat", 6);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) state ppid ...": comm may hold spaces and parentheses */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
		return -1;
	p += 4;
	pid_t ppid = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		ppid = ppid * 10 + (*p - '0');
	return ppid;
}

int tracer_proc_for_each(void (*fn)(pid_t pid, void *arg), void *arg)
{
	int dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	char buf[8192] __attribute__((aligned(8)));
	for (;;) {
		long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64 *de = (struct dirent64 *)(buf + off);
			off += de->d_reclen;
			pid_t pid = 0;
			const char *c = de->d_name;
			for (; *c >= '0' && *c <= '9'; c++)
				pid = pid * 10 + (*c - '0');
			if (*c == '\0' && pid > 0)
				fn(pid, arg);
		}
	}
	close(dfd);
	return 0;
}

struct sweep {
	pid_t guard;
	int killed;
};

/* pid descends from the guard when its chain of parents reaches it */
static void kill_if_descendant(pid_t pid, void *arg)
{
	struct sweep *s = arg;
	pid_t p = pid;
	for (int depth = 0; depth < 4096 && p > 1; depth++) {
		p = tracer_proc_ppid(p);
		if (p == s->guard) {
			kill(pid, SIGKILL);
			s->killed++;
			return;
		}
	}
}

/* SIGKILL every descendant until there is none: a process may fork between two
 * sweeps, and a killed process's children come to us (subreaper) and are found by the
 * next one. Done when we have no child at all, since any descendant has a living
 * chain of parents up to us. */
static void kill_all_descendants(void)
{
	struct sweep s = {.guard = getpid()};
	for (;;) {
		s.killed = 0;
		tracer_proc_for_each(kill_if_descendant, &s);
		pid_t r;
		int reaped = 0;
		while ((r = waitpid(-1, NULL, WNOHANG | __WALL)) > 0)
			reaped++;
		if (r < 0 && errno == ECHILD)
			return;
		if (!reaped) {
			struct timespec ms = {.tv_nsec = 1000000};
			nanosleep(&ms, NULL);
		}
	}
}

static void guard_send(int sock, int32_t kind, int32_t value)
{
	struct guard_msg m = {.kind = kind, .value = value};
	ssize_t n;
	do
		n = send(sock, &m, sizeof(m), MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
}

__attribute__((noreturn)) void tracer_guard_main(int sock, pid_t program)
{
	guard_send(sock, GUARD_PROGRAM_PID, program);
	/* SIGCHLD is blocked (inherited from trace-run): read it from a signalfd */
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	for (;;) {
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG | __WALL)) > 0)
			if (pid == program && (WIFEXITED(status) || WIFSIGNALED(status)))
				guard_send(sock, GUARD_PROGRAM_STATUS, status);
		if (pid < 0 && errno == ECHILD)
			_exit(0); /* the program and everything it started are gone */
		struct pollfd pfd[2] = {{.fd = sock, .events = POLLIN},
					{.fd = sigfd, .events = POLLIN}};
		/* without a signalfd, look for exited children every 100 ms */
		int r = poll(pfd, sigfd >= 0 ? 2 : 1, sigfd >= 0 ? -1 : 100);
		if (r > 0 && pfd[0].revents) {
			/* trace-run never sends: readable or hung up means it is gone */
			kill_all_descendants();
			_exit(0);
		}
		if (r > 0 && (pfd[1].revents & POLLIN)) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				;
		}
	}
}

/* Read the guard's messages; block (until the program's pid came) only when told to. */
static int guard_read(struct tracer *t, bool block)
{
	while (t->guard_sock >= 0) {
		struct guard_msg m;
		ssize_t n = recv(t->guard_sock, &m, sizeof(m), block ? 0 : MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n != (ssize_t)sizeof(m)) {
			/* the guard exited (or failed before it could start the program) */
			close(t->guard_sock);
			t->guard_sock = -1;
			return -1;
		}
		if (m.kind == GUARD_PROGRAM_PID) {
			t->main_pid = m.value;
			if (block)
				return 0;
		} else if (m.kind == GUARD_PROGRAM_STATUS) {
			tracer_note_exit(t, t->main_pid, m.value);
		}
	}
	return -1;
}

int tracer_guard_program_pid(struct tracer *t)
{
	if (guard_read(t, true) < 0 || t->main_pid <= 0)
		return -1;
	return 0;
}

void tracer_guard_poll(struct tracer *t)
{
	guard_read(t, false);
}
