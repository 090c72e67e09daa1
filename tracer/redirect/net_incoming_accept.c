/* accept/accept4 on the program's subscribed listeners (see net_incoming.c): done by
 * trace-run on a duplicate of the listener, so that the address the program gets, and
 * later getpeername, is the original client's and not the loopback socket's. */
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include "tracer/redirect/net_internal.h"

#define SIGNAL_CHECK_MS 200 /* a thread waiting in accept is checked for signals */

struct accept_wait {
	struct net_state *st;
	int dup; /* the listener */
	ino_t ino;
	int flags; /* accept4's */
	/* a blocking accept waits for the listener or the timer, whichever comes first */
	int epfd, timer;
};

static void accept_wait_free(void *arg)
{
	struct accept_wait *aw = arg;
	close(aw->dup);
	if (aw->epfd >= 0)
		close(aw->epfd);
	if (aw->timer >= 0)
		close(aw->timer);
	free(aw);
}

/* The wait of a blocking accept: readable when the listener has a connection, and every
 * SIGNAL_CHECK_MS. */
static int accept_wait_fd(struct accept_wait *aw)
{
	if (aw->epfd >= 0)
		return aw->epfd;
	aw->epfd = epoll_create1(EPOLL_CLOEXEC);
	aw->timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (aw->epfd < 0 || aw->timer < 0)
		return -1;
	struct itimerspec every = {.it_interval = {0, SIGNAL_CHECK_MS * 1000000L},
				   .it_value = {0, SIGNAL_CHECK_MS * 1000000L}};
	struct epoll_event ev = {.events = EPOLLIN};
	if (timerfd_settime(aw->timer, 0, &every, NULL) < 0 ||
	    epoll_ctl(aw->epfd, EPOLL_CTL_ADD, aw->timer, &ev) < 0 ||
	    epoll_ctl(aw->epfd, EPOLL_CTL_ADD, aw->dup, &ev) < 0)
		return -1;
	return aw->epfd;
}

/* A signal waits for the thread (not blocked): the kernel's own accept, which returns
 * at once for it, lets it be handled (or kill the program) and the call be restarted as
 * the handler's SA_RESTART says. A deferred call would hold it back until a connection
 * came (the ptrace backend keeps the thread stopped meanwhile). */
static bool signal_waiting(pid_t tid)
{
	struct hm_proc_field f[] = {{.key = "SigPnd"}, {.key = "ShdPnd"}, {.key = "SigBlk"}};
	if (hm_proc_status(tid, f, HM_ARRAY_SIZE(f)) < 0)
		return false;
	unsigned long long pnd = strtoull(f[0].value, NULL, 16) | strtoull(f[1].value, NULL, 16);
	return pnd & ~strtoull(f[2].value, NULL, 16);
}

/* accept on a duplicate of a blocking listener without blocking the supervisor */
static int accept_nowait(int lfd, struct net_addr *peer)
{
	int fl = fcntl(lfd, F_GETFL);
	bool flip = fl >= 0 && !(fl & O_NONBLOCK);
	if (flip)
		fcntl(lfd, F_SETFL, fl | O_NONBLOCK);
	peer->len = sizeof(peer->ss);
	int fd = accept4(lfd, (struct sockaddr *)&peer->ss, &peer->len, SOCK_CLOEXEC);
	int e = errno;
	if (flip)
		fcntl(lfd, F_SETFL, fl);
	errno = e;
	return fd;
}

/* An accepted connection as the program gets it: the original client's address (from
 * the table of delivered connections), the target's address as its own. A placeholder
 * of a handed-off connection (net_incoming_deliver.c) gives way to the pod's socket:
 * returns the fd the program gets (fd or the pod's socket, fd then closed). */
static int accepted_entry(struct net_state *st, int fd, const struct net_addr *kernel_peer,
			  struct net_addr *shown)
{
	struct net_incoming *in = st->incoming;
	*shown = *kernel_peer;
	if (!trace_net_addr_is_loopback(kernel_peer))
		return fd;
	pthread_mutex_lock(&in->lock);
	struct inc_conn *c = trace_incoming_conn_take(in, trace_net_addr_port(kernel_peer));
	pthread_mutex_unlock(&in->lock);
	if (!c)
		return fd; /* a local client of the program's own */
	*shown = c->client;
	if (c->pod_socket >= 0) {
		/* the kernel answers getsockname/getpeername on it: nothing to remember */
		close(fd);
		fd = hm_steal_fd(&c->pod_socket);
		shown->len = sizeof(shown->ss);
		if (getpeername(fd, (struct sockaddr *)&shown->ss, &shown->len) < 0)
			*shown = c->client;
		hm_debug("incoming connection from port %u: the pod's socket accepted", c->port);
		trace_incoming_conn_free(c);
		return fd;
	}
	struct stat sb;
	struct net_sock *ns = fstat(fd, &sb) == 0 ? calloc(1, sizeof(*ns)) : NULL;
	if (ns) {
		ns->ino = sb.st_ino;
		ns->type = SOCK_STREAM;
		ns->family = trace_net_socket_family(fd);
		ns->stream = -1;
		ns->peer = c->client;
		ns->local = c->server;
		ns->prog.len = sizeof(ns->prog.ss);
		getsockname(fd, (struct sockaddr *)&ns->prog.ss, &ns->prog.len);
		ns->diag_peer = *kernel_peer;
		ns->delivered = true;
		ns->last_ms = hm_now_ms();
		trace_net_table_put(st, ns);
	}
	trace_incoming_conn_free(c);
	return fd;
}

static struct tracer_result accept_resume(const struct tracer_call *call, void *arg);

/* One try: the connection installed in the program, EAGAIN, or the call deferred until
 * the (blocking) listener has one. aw is consumed unless the call is deferred. */
static struct tracer_result accept_try(const struct tracer_call *call, struct accept_wait *aw)
{
	struct net_addr peer, kernel_peer;
	int fd = accept_nowait(aw->dup, &kernel_peer);
	if (fd < 0) {
		int e = errno;
		int fl = fcntl(aw->dup, F_GETFL);
		if (e == EAGAIN && fl >= 0 && !(fl & O_NONBLOCK)) {
			int wfd = accept_wait_fd(aw);
			if (wfd >= 0)
				return tracer_defer(wfd, accept_resume, accept_wait_free, aw);
			accept_wait_free(aw);
			return tracer_continue(); /* the kernel's accept, loopback address */
		}
		accept_wait_free(aw);
		return tracer_error(e);
	}
	fd = accepted_entry(aw->st, fd, &kernel_peer, &peer);
	struct hm_err err = {0};
	if (trace_net_write_addr(call, &peer, call->args[1], call->args[2], &err) < 0) {
		close(fd);
		accept_wait_free(aw);
		return tracer_error(EFAULT); /* the kernel's answer too; the connection is lost */
	}
	int fd_flags = ((aw->flags & SOCK_CLOEXEC) ? O_CLOEXEC : 0) |
		       ((aw->flags & SOCK_NONBLOCK) ? O_NONBLOCK : 0);
	accept_wait_free(aw);
	/* An answer that cannot arrive closes the connection (its client sees it end). No
	 * copy is kept for a re-issued accept: it would hold the connection open after the
	 * program closed it. Once trace-run has the call, only a fatal signal or the
	 * thread's death ends it (WAIT_KILLABLE_RECV; ptrace keeps the thread stopped). */
	return tracer_install_fd(fd, fd_flags);
}

static struct tracer_result accept_resume(const struct tracer_call *call, void *arg)
{
	struct accept_wait *aw = arg;
	uint64_t ticks;
	if (read(aw->timer, &ticks, sizeof(ticks)) == sizeof(ticks) && signal_waiting(call->pid)) {
		accept_wait_free(aw);
		return tracer_continue();
	}
	return accept_try(call, aw);
}

struct tracer_result trace_incoming_accept(const struct tracer_call *call, void *data)
{
	struct net_state *st = data;
	struct net_incoming *in = st->incoming;
	if (!__atomic_load_n(&in->n_listeners, __ATOMIC_RELAXED))
		return tracer_continue();
	int flags = call->nr == SYS_accept4 ? (int)call->args[3] : 0;
	if (flags & ~(SOCK_CLOEXEC | SOCK_NONBLOCK))
		return tracer_continue(); /* the kernel's EINVAL */
	ino_t ino = trace_net_fd_ino(call, (int)call->args[0]);
	pthread_mutex_lock(&in->lock);
	struct inc_listener *l = ino ? trace_incoming_listener_by_ino(in, ino) : NULL;
	bool ours = l && (l->sub || l->pending);
	pthread_mutex_unlock(&in->lock);
	if (!ours)
		return tracer_continue();
	int dup = trace_incoming_getfd(call);
	if (dup < 0)
		return tracer_continue();
	struct accept_wait *aw = malloc(sizeof(*aw));
	if (!aw) {
		close(dup);
		return tracer_error(ENOMEM);
	}
	*aw = (struct accept_wait){
	    .st = st, .dup = dup, .ino = ino, .flags = flags, .epfd = -1, .timer = -1};
	return accept_try(call, aw);
}
