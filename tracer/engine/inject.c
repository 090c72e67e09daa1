/* Installing an fd into a ptrace'd program: the program receives it itself.
 *
 * Each thread group gets, on its first fd installation, a channel: a unix SOCK_SEQPACKET
 * socket in the program (O_CLOEXEC, moved up to a high fd number so that it does not
 * take fd 3 from the program) connected to trace-run, and one anonymous page of scratch
 * memory for recvmsg's arguments. They are made by running syscalls in the stopped
 * thread: at the seccomp stop the intercepted syscall is swapped for mmap, then at each
 * syscall-exit stop the thread is rewound onto its own `syscall` instruction with the
 * next call loaded (socket, connect to trace-run's abstract address, fcntl F_DUPFD_CLOEXEC,
 * close). Every signal is blocked (PTRACE_SETSIGMASK) while that happens, so no handler
 * can run on the rewound registers; the mask is restored before the thread resumes.
 *
 * An installation then costs one injected syscall: trace-run sendmsg()s the fd with
 * SCM_RIGHTS, the intercepted syscall becomes recvmsg(channel, scratch, MSG_CMSG_CLOEXEC
 * if asked), and at its exit the received fd number is put in rax.
 *
 * The channel is checked before use (the program may have closed it, or reused its
 * number: /proc/TID/fd/N must still be the same socket inode) and rebuilt if needed; an
 * exec drops it (new fd table and address space). A forked child builds its own. */
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "tracer/engine/internal.h"

#define SCRATCH_SIZE 4096UL
#define OFF_MSG 0    /* struct msghdr */
#define OFF_IOV 64   /* struct iovec */
#define OFF_DATA 96  /* the one data byte */
#define OFF_CTRL 128 /* control buffer */
#define CTRL_LEN CMSG_SPACE(sizeof(int))
#define OFF_ADDR 256 /* struct sockaddr_un for connect */
#define MSG_AREA 256

_Static_assert(OFF_IOV >= sizeof(struct msghdr), "scratch layout");
_Static_assert(OFF_CTRL + CTRL_LEN <= OFF_ADDR, "scratch layout");
_Static_assert(OFF_ADDR + sizeof(struct sockaddr_un) <= SCRATCH_SIZE, "scratch layout");

struct tracer_pt_proc {
	pid_t tgid;
	uint64_t scratch; /* address in the program, 0 = none */
	int remote_fd;	  /* the program's end, -1 = none */
	ino_t remote_ino;
	int local_fd; /* trace-run's end */
	struct tracer_pt_proc *next;
};

struct injection {
	struct tracer *t;
	pid_t tid;
	pid_t tgid;
	struct user_regs_struct orig; /* at the seccomp stop */
	uint64_t syscall_insn;
	bool at_seccomp_stop; /* the intercepted syscall has not been swapped yet */
	bool mask_saved;
	uint64_t saved_mask;
	bool gone;	  /* the thread died or vanished in an exec */
	int deferred_sig; /* a stop signal that arrived meanwhile: re-sent at the end */
};

/* ---- per thread group state ---- */

static pid_t tgid_read(pid_t tid)
{
	struct hm_proc_field tgid = {.key = "Tgid"};
	return hm_proc_status(tid, &tgid, 1) == 0 ? (pid_t)atoi(tgid.value) : -1;
}

static pid_t tgid_of(struct tracer_ptrace *pt, pid_t tid)
{
	size_t slot = (size_t)tid % HM_ARRAY_SIZE(pt->tgid_cache);
	if (pt->tgid_cache[slot].tid == tid)
		return pt->tgid_cache[slot].tgid;
	pid_t tgid = tgid_read(tid);
	if (tgid > 0) {
		pt->tgid_cache[slot].tid = tid;
		pt->tgid_cache[slot].tgid = tgid;
	}
	return tgid;
}

void tracer_pt_thread_gone(struct tracer *t, pid_t tid)
{
	if (!t->pt)
		return;
	size_t slot = (size_t)tid % HM_ARRAY_SIZE(t->pt->tgid_cache);
	if (t->pt->tgid_cache[slot].tid == tid)
		t->pt->tgid_cache[slot].tid = 0;
}

static struct tracer_pt_proc *proc_get(struct tracer *t, pid_t tgid)
{
	for (struct tracer_pt_proc *p = t->pt->procs; p; p = p->next)
		if (p->tgid == tgid)
			return p;
	struct tracer_pt_proc *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	*p = (struct tracer_pt_proc){.tgid = tgid, .remote_fd = -1, .local_fd = -1};
	p->next = t->pt->procs;
	t->pt->procs = p;
	return p;
}

static void channel_drop(struct tracer_pt_proc *p)
{
	if (p->local_fd >= 0)
		close(p->local_fd);
	p->local_fd = -1;
	p->remote_fd = -1;
}

void tracer_pt_forget(struct tracer *t, pid_t tgid)
{
	if (!t->pt)
		return;
	for (struct tracer_pt_proc **pp = &t->pt->procs; *pp; pp = &(*pp)->next) {
		if ((*pp)->tgid == tgid) {
			struct tracer_pt_proc *p = *pp;
			*pp = p->next;
			channel_drop(p);
			free(p);
			return;
		}
	}
}

void tracer_pt_free_procs(struct tracer *t)
{
	while (t->pt->procs)
		tracer_pt_forget(t, t->pt->procs->tgid);
}

/* ---- running syscalls in a stopped thread ---- */

static int wait_syscall_stop(struct injection *in)
{
	for (;;) {
		int st;
		pid_t r = waitpid(in->tid, &st, __WALL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			in->gone = true;
			return -1;
		}
		if (WIFSTOPPED(st)) {
			int sig = WSTOPSIG(st);
			unsigned event = (unsigned)st >> 16;
			if (event == 0 && sig == (SIGTRAP | 0x80))
				return 0;
			bool signal_stop = event == 0;
			if (signal_stop || event == PTRACE_EVENT_SECCOMP ||
			    event == PTRACE_EVENT_STOP) {
				/* an injected call that is itself intercepted runs as is; the only
				 * signals that get through the full mask are SIGSTOP and forced
				 * ones */
				if (signal_stop && sig == SIGSTOP)
					in->deferred_sig = sig;
				if (ptrace(PTRACE_SYSCALL, in->tid, 0, 0) < 0) {
					in->gone = true;
					return -1;
				}
				continue;
			}
		}
		/* it exited, or another thread's exec took its place: normal processing */
		in->gone = true;
		tracer_pt_handle_status(in->t, in->tid, st);
		return -1;
	}
}

/* Run nr(a...) in the thread; *ret is the raw return value (-errno on failure). */
static int inject(struct injection *in, long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
		  uint64_t a4, uint64_t a5, int64_t *ret)
{
	if (in->gone)
		return -1;
	struct user_regs_struct r = in->orig;
	r.orig_rax = (unsigned long long)nr;
	r.rdi = a0;
	r.rsi = a1;
	r.rdx = a2;
	r.r10 = a3;
	r.r8 = a4;
	r.r9 = a5;
	if (in->at_seccomp_stop) {
		/* swap the intercepted syscall for this one; the kernel re-checks the filter */
		if (ptrace(PTRACE_SETREGS, in->tid, 0, &r) < 0 ||
		    ptrace(PTRACE_SYSCALL, in->tid, 0, 0) < 0) {
			in->gone = true;
			return -1;
		}
		in->at_seccomp_stop = false;
		if (wait_syscall_stop(in) < 0)
			return -1;
	} else {
		/* at a syscall-exit stop: back onto the syscall instruction, once more */
		r.rax = (unsigned long long)nr;
		r.rip = in->syscall_insn;
		if (ptrace(PTRACE_SETREGS, in->tid, 0, &r) < 0 ||
		    ptrace(PTRACE_SYSCALL, in->tid, 0, 0) < 0) {
			in->gone = true;
			return -1;
		}
		if (wait_syscall_stop(in) < 0) /* entry */
			return -1;
		if (ptrace(PTRACE_SYSCALL, in->tid, 0, 0) < 0) {
			in->gone = true;
			return -1;
		}
		if (wait_syscall_stop(in) < 0) /* exit */
			return -1;
	}
	if (ptrace(PTRACE_GETREGS, in->tid, 0, &r) < 0) {
		in->gone = true;
		return -1;
	}
	*ret = (int64_t)r.rax;
	return 0;
}

static int block_signals(struct injection *in)
{
	if (in->mask_saved)
		return 0;
	if (ptrace(PTRACE_GETSIGMASK, in->tid, sizeof(uint64_t), &in->saved_mask) < 0)
		return -1;
	uint64_t all = ~0ULL; /* the kernel leaves SIGKILL and SIGSTOP out */
	if (ptrace(PTRACE_SETSIGMASK, in->tid, sizeof(uint64_t), &all) < 0)
		return -1;
	in->mask_saved = true;
	return 0;
}

/* The intercepted syscall returns result; the thread resumes. */
static void finish(struct injection *in, int64_t result)
{
	if (in->gone)
		return;
	struct user_regs_struct r = in->orig;
	if (in->at_seccomp_stop)
		r.orig_rax = (unsigned long long)-1; /* nothing was injected: skip it */
	r.rax = (unsigned long long)result;
	if (in->mask_saved)
		ptrace(PTRACE_SETSIGMASK, in->tid, sizeof(uint64_t), &in->saved_mask);
	if (ptrace(PTRACE_SETREGS, in->tid, 0, &r) < 0 || ptrace(PTRACE_CONT, in->tid, 0, 0) < 0) {
		in->gone = true;
		return;
	}
	if (in->deferred_sig)
		syscall(SYS_tgkill, in->tgid, in->tid, in->deferred_sig);
}

/* ---- the channel ---- */

static int listen_open(struct tracer_ptrace *pt)
{
	uint64_t nonce;
	if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce))
		return -errno;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	memset(&pt->listen_addr, 0, sizeof(pt->listen_addr));
	pt->listen_addr.sun_family = AF_UNIX;
	/* abstract: nothing on disk to clean up, gone with the socket */
	int n = snprintf(pt->listen_addr.sun_path + 1, sizeof(pt->listen_addr.sun_path) - 1,
			 "hermit-trace-%d-%016llx", getpid(), (unsigned long long)nonce);
	pt->listen_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
	if (bind(fd, (struct sockaddr *)&pt->listen_addr, pt->listen_addrlen) < 0 ||
	    listen(fd, 64) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	pt->listen_fd = fd;
	return 0;
}

/* the connection the program just made; anyone else's is dropped */
static int accept_from(struct tracer_ptrace *pt, pid_t tgid)
{
	for (;;) {
		int fd = accept4(pt->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return -errno;
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == tgid)
			return fd;
		close(fd);
	}
}

static bool channel_usable(const struct tracer_pt_proc *p, pid_t tid)
{
	if (p->remote_fd < 0 || p->local_fd < 0 || !p->scratch)
		return false;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", tid, p->remote_fd);
	struct stat st;
	return stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == p->remote_ino;
}

/* lowest fd number we park the channel at: high, but below select()'s 1024 and the
 * program's RLIMIT_NOFILE */
static long channel_fd_base(pid_t tid)
{
	struct rlimit rl;
	rlim_t soft = 1024;
	if (prlimit(tid, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.rlim_cur < soft)
		soft = rl.rlim_cur;
	long base = (long)soft * 3 / 4;
	return base < 3 ? 3 : base;
}

static int64_t channel_open(struct tracer *t, struct tracer_pt_proc *p, struct injection *in)
{
	struct tracer_ptrace *pt = t->pt;
	struct tracer_call mem = {.tracer = t, .pid = in->tid};
	struct hm_err err;
	int64_t r;
	if (pt->listen_fd < 0 && (r = listen_open(pt)) < 0)
		return r;
	uint8_t insn[TRACER_SYSCALL_INSN_LEN];
	if (tracer_read_mem(&mem, in->syscall_insn, insn, sizeof(insn), &err) < 0 ||
	    insn[0] != 0x0f || insn[1] != 0x05) {
		hm_debug("pid %d: no syscall instruction before 0x%llx", in->tid,
			 (unsigned long long)in->orig.rip);
		return -ENOSYS;
	}
	if (block_signals(in) < 0)
		return -ESRCH;
	if (!p->scratch) {
		if (inject(in, SYS_mmap, 0, SCRATCH_SIZE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0, &r) < 0)
			return -ESRCH;
		if ((uint64_t)r > (uint64_t)-4096)
			return r;
		p->scratch = (uint64_t)r;
	}
	if (tracer_write_mem(&mem, p->scratch + OFF_ADDR, &pt->listen_addr, pt->listen_addrlen,
			     &err) < 0) {
		p->scratch = 0; /* unmapped behind our back? make a new one next time */
		return -err.code;
	}
	int64_t sock;
	if (inject(in, SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, 0, 0, 0, &sock) < 0)
		return -ESRCH;
	if (sock < 0)
		return sock;
	if (inject(in, SYS_connect, (uint64_t)sock, p->scratch + OFF_ADDR, pt->listen_addrlen, 0, 0,
		   0, &r) < 0)
		return -ESRCH;
	int local = r < 0 ? (int)r : accept_from(pt, p->tgid);
	if (local < 0) {
		inject(in, SYS_close, (uint64_t)sock, 0, 0, 0, 0, 0, &r);
		return local;
	}
	int64_t high;
	if (inject(in, SYS_fcntl, (uint64_t)sock, F_DUPFD_CLOEXEC,
		   (uint64_t)channel_fd_base(in->tid), 0, 0, 0, &high) < 0) {
		close(local);
		return -ESRCH;
	}
	if (high >= 0)
		inject(in, SYS_close, (uint64_t)sock, 0, 0, 0, 0, 0, &r);
	else
		high = sock; /* no room up there: keep it where it is */
	char path[64];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", in->tid, (int)high);
	if (in->gone || stat(path, &st) < 0) {
		close(local);
		return -ESRCH;
	}
	p->remote_fd = (int)high;
	p->remote_ino = st.st_ino;
	p->local_fd = local;
	hm_debug("pid %d: fd channel at fd %d, scratch at 0x%llx", p->tgid, p->remote_fd,
		 (unsigned long long)p->scratch);
	return 0;
}

static int send_fd(int sock, int fd)
{
	struct tracer_fd_msg m;
	tracer_fd_msg_init(&m, 'F', fd);
	return sendmsg(sock, &m.msg, MSG_NOSIGNAL | MSG_DONTWAIT) == 1 ? 0 : -1;
}

/* recvmsg's arguments, as the program will see them in its scratch page */
static void scratch_msg(uint64_t scratch, uint8_t area[MSG_AREA])
{
	memset(area, 0, MSG_AREA);
	struct msghdr m = {
	    .msg_iov = (struct iovec *)(uintptr_t)(scratch + OFF_IOV),
	    .msg_iovlen = 1,
	    .msg_control = (void *)(uintptr_t)(scratch + OFF_CTRL),
	    .msg_controllen = CTRL_LEN,
	};
	struct iovec v = {.iov_base = (void *)(uintptr_t)(scratch + OFF_DATA), .iov_len = 1};
	memcpy(area + OFF_MSG, &m, sizeof(m));
	memcpy(area + OFF_IOV, &v, sizeof(v));
}

/* the fd number recvmsg placed in the program, or -EMFILE when it had no room */
static int64_t scratch_received_fd(const uint8_t area[MSG_AREA])
{
	struct msghdr m;
	memcpy(&m, area + OFF_MSG, sizeof(m));
	struct cmsghdr cm;
	memcpy(&cm, area + OFF_CTRL, sizeof(cm));
	if ((m.msg_flags & MSG_CTRUNC) || m.msg_controllen < CMSG_LEN(sizeof(int)) ||
	    cm.cmsg_level != SOL_SOCKET || cm.cmsg_type != SCM_RIGHTS ||
	    cm.cmsg_len < CMSG_LEN(sizeof(int)))
		return -EMFILE;
	int fd;
	memcpy(&fd, area + OFF_CTRL + CMSG_LEN(0), sizeof(fd));
	return fd;
}

static int64_t install(struct tracer *t, struct tracer_pt_proc *p, struct injection *in,
		       const struct tracer_result *res)
{
	struct tracer_call mem = {.tracer = t, .pid = in->tid};
	struct hm_err err;
	int64_t r;
	for (int attempt = 0;; attempt++) {
		if (!channel_usable(p, in->tid)) {
			channel_drop(p);
			if ((r = channel_open(t, p, in)) < 0)
				return r;
		}
		if (send_fd(p->local_fd, res->fd) == 0)
			break;
		/* the program closed its end (EPIPE) or it is clogged: start over once */
		channel_drop(p);
		if (attempt == 1)
			return -EIO;
	}
	uint8_t area[MSG_AREA];
	scratch_msg(p->scratch, area);
	if (tracer_write_mem(&mem, p->scratch, area, sizeof(area), &err) < 0) {
		channel_drop(p);
		p->scratch = 0;
		return -EIO;
	}
	int flags = (res->fd_flags & O_CLOEXEC) ? MSG_CMSG_CLOEXEC : 0;
	if (inject(in, SYS_recvmsg, (uint64_t)p->remote_fd, p->scratch + OFF_MSG, (uint64_t)flags,
		   0, 0, 0, &r) < 0)
		return -ESRCH;
	if (r != 1) {
		/* the fd is stuck in a queue nobody reads: never use this channel again */
		channel_drop(p);
		return r < 0 ? r : -EIO;
	}
	if (tracer_read_mem(&mem, p->scratch, area, sizeof(area), &err) < 0)
		return -EIO;
	return scratch_received_fd(area);
}

/* The received fd (at number got in the program) moves to res->target_fd: dup3 and
 * close, run with every signal blocked since the thread is rewound in between. */
static int64_t replace(struct injection *in, int got, const struct tracer_result *res)
{
	int64_t r = 0;
	if (got != res->target_fd) {
		int flags = (res->fd_flags & O_CLOEXEC) ? O_CLOEXEC : 0;
		if (block_signals(in) < 0 ||
		    inject(in, SYS_dup3, (uint64_t)got, (uint64_t)res->target_fd, (uint64_t)flags,
			   0, 0, 0, &r) < 0)
			return -ESRCH;
		int64_t closed;
		if (inject(in, SYS_close, (uint64_t)got, 0, 0, 0, 0, 0, &closed) < 0)
			return -ESRCH;
		if (r < 0)
			return r;
	}
	return res->error ? -res->error : res->value;
}

void tracer_pt_install_fd(struct tracer *t, pid_t tid, const struct user_regs_struct *regs,
			  struct tracer_result *res)
{
	struct injection in = {
	    .t = t,
	    .tid = tid,
	    .orig = *regs,
	    .syscall_insn = regs->rip - TRACER_SYSCALL_INSN_LEN,
	    .at_seccomp_stop = true,
	};
	int64_t result;
	in.tgid = tgid_of(t->pt, tid);
	struct tracer_pt_proc *p = in.tgid > 0 ? proc_get(t, in.tgid) : NULL;
	if (in.tgid <= 0) {
		result = -ESRCH;
	} else if (!p) {
		result = -ENOMEM;
	} else {
		if ((res->fd_flags & O_NONBLOCK) && fcntl(res->fd, F_SETFL, O_NONBLOCK) < 0)
			hm_debug("O_NONBLOCK on installed fd: %s", strerror(errno));
		result = install(t, p, &in, res);
		if (result >= 0 && res->verdict == TRACER_REPLACE_FD)
			result = replace(&in, (int)result, res);
	}
	if (result < 0 && !in.gone)
		hm_debug("pid %d: fd installation failed: %s", tid, strerror((int)-result));
	finish(&in, result);
	if (in.gone) {
		tracer_result_abandon(t, res);
		return;
	}
	if (result >= 0)
		t->stats.fds++;
	tracer_result_release(res);
}
