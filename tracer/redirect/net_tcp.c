/* Redirected TCP connects: the agent connects from the pod, the program's own socket is
 * connected to trace-run's relay listener on loopback, and the splice relay joins the
 * accepted connection to the agent's stream. With a TCP agent the program's socket is
 * the stream itself (direct). See net_internal.h. */
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "tracer/redirect/net_internal.h"

#define ATTACH_TIMEOUT_MS 5000 /* a loopback handshake; only a wedged system takes long */

static int listener_open(int family, struct net_addr *addr, struct hm_err *err)
{
	hm_cleanup_close int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hm_err_errno(err, "relay listener socket");
	int one = 1;
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	struct net_addr any;
	memset(&any, 0, sizeof(any));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&any.ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_addr = in6addr_loopback;
		any.len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&any.ss;
		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		any.len = sizeof(*s4);
	}
	if (bind(fd, (struct sockaddr *)&any.ss, any.len) < 0)
		return hm_err_errno(err, "bind relay listener");
	if (listen(fd, SOMAXCONN) < 0)
		return hm_err_errno(err, "listen");
	addr->len = sizeof(addr->ss);
	if (getsockname(fd, (struct sockaddr *)&addr->ss, &addr->len) < 0)
		return hm_err_errno(err, "getsockname");
	return hm_steal_fd(&fd);
}

/* The agent's TCP address for program sockets of either family. Only the first
 * address of each family counts (the order the control connection tried them in). */
static void direct_init(struct net_state *st)
{
	const struct client_endpoint *ep = &st->s->endpoint;
	if (ep->transport != &client_transport_tcp)
		return;
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	int gai = getaddrinfo(ep->host, ep->port, &hints, &res);
	if (gai) {
		hm_debug("agent %s: %s; connections go through the relay", ep->host,
			 gai_strerror(gai));
		return;
	}
	struct net_addr v4 = {0}, v6 = {0};
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		struct net_addr *a = ai->ai_family == AF_INET	 ? &v4
				     : ai->ai_family == AF_INET6 ? &v6
								 : NULL;
		if (!a || a->len || ai->ai_addrlen > sizeof(a->ss))
			continue;
		memcpy(&a->ss, ai->ai_addr, ai->ai_addrlen);
		a->len = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	st->direct4 = v4;
	if (v6.len)
		st->direct6 = v6;
	else if (v4.len) /* IPv4 agent, AF_INET6 program socket: v4-mapped */
		trace_net_addr_for_family(&v4, AF_INET6, &st->direct6);
	char b4[80], b6[80];
	hm_debug("TCP agent: redirected IPv4 sockets connect to %s, IPv6 sockets to %s",
		 st->direct4.len ? trace_net_addr_str(&st->direct4, b4, sizeof(b4)) : "the relay",
		 st->direct6.len ? trace_net_addr_str(&st->direct6, b6, sizeof(b6)) : "the relay");
}

int trace_net_tcp_init(struct net_state *st, struct hm_err *err)
{
	direct_init(st);
	st->listen4 = listener_open(AF_INET, &st->listen4_addr, err);
	if (st->listen4 < 0)
		return hm_err_prefix(err, "127.0.0.1");
	struct hm_err err6;
	st->listen6 = listener_open(AF_INET6, &st->listen6_addr, &err6);
	st->have6 = st->listen6 >= 0;
	if (!st->have6)
		hm_debug("no IPv6 loopback (%s): IPv6 sockets reach the relay v4-mapped", err6.msg);
	/* the relay thread must not take the signals trace-run reads from its signalfd */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = relay_create(&st->counters, &st->relay, err);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r;
}

void trace_net_tcp_fini(struct net_state *st)
{
	if (st->relay)
		relay_destroy(st->relay);
	st->relay = NULL;
	if (st->listen4 >= 0)
		close(st->listen4);
	if (st->listen6 >= 0)
		close(st->listen6);
	st->listen4 = st->listen6 = -1;
}

/* Connect the program's socket (dup) to the relay listener and take the accepted end:
 * the connection whose peer is the program socket's own address. */
static int attach(struct net_state *st, int dup, int family, const struct net_addr *dst,
		  struct net_addr *prog, struct net_addr *via, struct hm_err *err)
{
	int lfd;
	if (family == AF_INET) {
		lfd = st->listen4;
		*via = st->listen4_addr;
	} else if (trace_net_addr_is_v4(dst) || !st->have6) {
		lfd = st->listen4;
		trace_net_addr_for_family(&st->listen4_addr, AF_INET6, via);
	} else {
		lfd = st->listen6;
		*via = st->listen6_addr;
	}
	int64_t deadline = hm_deadline_in(ATTACH_TIMEOUT_MS);
	if (hm_connect_deadline(dup, (struct sockaddr *)&via->ss, via->len, deadline, NULL) < 0)
		return hm_err_errno(err, "connect to the relay");
	prog->len = sizeof(prog->ss);
	if (getsockname(dup, (struct sockaddr *)&prog->ss, &prog->len) < 0)
		return hm_err_errno(err, "getsockname");
	for (;;) {
		struct net_addr peer = {.len = sizeof(peer.ss)};
		int fd = accept4(lfd, (struct sockaddr *)&peer.ss, &peer.len,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				return hm_err_errno(err, "accept on the relay listener");
			if (hm_poll_fd(lfd, POLLIN, deadline) <= 0)
				return hm_err_set(err, ETIMEDOUT,
						  "the relay listener got no connection");
			continue;
		}
		if (trace_net_addr_equal(&peer, prog))
			return fd;
		/* someone else on this machine found the port; the pairing is by address */
		char buf[80];
		hm_debug("relay listener: dropped a connection from %s",
			 trace_net_addr_str(&peer, buf, sizeof(buf)));
		close(fd);
	}
}

/* The connect's answer was not delivered: a re-issued connect must get it again. */
static void undo_connect(void *arg)
{
	struct net_state *st = arg;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, st->last_ino);
	if (ns)
		ns->delivered = false;
	pthread_mutex_unlock(&st->lock);
}

static struct tracer_result connected(struct net_state *st, ino_t ino, int dup)
{
	int fl = fcntl(dup, F_GETFL);
	/* Linux never completes a non-blocking TCP connect at once; the socket is writable
	 * and SO_ERROR 0 when the program looks */
	struct tracer_result res =
	    fl >= 0 && (fl & O_NONBLOCK) ? tracer_error(EINPROGRESS) : tracer_return(0);
	st->last_ino = ino;
	res.undo = undo_connect;
	res.undo_arg = st;
	return res;
}

/* errnos a connect can give; anything else means the agent could not be asked */
static int connect_errno(int code)
{
	switch (code) {
	case ECONNREFUSED:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ENETDOWN:
	case EADDRNOTAVAIL:
	case EACCES:
	case EPERM:
	case ECONNRESET:
	case EAFNOSUPPORT:
		return code;
	default:
		return ENETUNREACH;
	}
}

static const struct net_addr *direct_addr(const struct net_state *st, int family)
{
	const struct net_addr *a = family == AF_INET	? &st->direct4
				   : family == AF_INET6 ? &st->direct6
							: NULL;
	return a && a->len ? a : NULL;
}

/* The program's socket becomes the agent's stream: connect it to the agent and send the
 * STREAM_HELLO on it. The hello reply is read to its last byte and no further, so what
 * follows on the socket is the pod connection's own bytes, for the program to read.
 * 0 when done; 1 when the socket could not reach the agent and is still unconnected
 * (the relay can take over with the same token); -1 otherwise. */
static int direct_stream(struct net_job *job, const struct net_addr *agent,
			 const uint8_t token[PROTO_TOKEN_LEN])
{
	int timeout = CLIENT_DEFAULT_TIMEOUT_MS; /* as the client library's own streams */
	char where[80];
	/* The dup shares the program's file status flags: a non-blocking socket is waited
	 * for, a blocking one waits in connect like the program's own connect would. */
	if (hm_connect_deadline(job->dup, (const struct sockaddr *)&agent->ss, agent->len,
				hm_deadline_in(ATTACH_TIMEOUT_MS), NULL) < 0) {
		int e = errno;
		hm_err_set(&job->err, e, "connect to the agent at %s",
			   trace_net_addr_str(agent, where, sizeof(where)));
		/* refused or unreachable: the socket is closed again and may connect once
		 * more; a timed-out attempt may still be under way */
		return e == ETIMEDOUT ? -1 : 1;
	}
	if (proto_stream_open(job->dup, token, timeout, &job->err) < 0) {
		/* the program's connect fails: its socket must not stay a line to the agent */
		shutdown(job->dup, SHUT_RDWR);
		return hm_err_prefix(&job->err, "stream from the agent at %s",
				     trace_net_addr_str(agent, where, sizeof(where)));
	}
	return 0;
}

static void tcp_work(struct net_job *job)
{
	struct net_state *st = job->st;
	const struct net_addr *agent = direct_addr(st, trace_net_socket_family(job->dup));
	if (!agent) {
		job->result_fd = client_tcp_connect_handoff(
		    st->s->client, &job->pdst, 0, &job->local, &job->pod_socket, &job->err);
		return;
	}
	uint8_t token[PROTO_TOKEN_LEN];
	if (client_tcp_connect_token(st->s->client, &job->pdst, 0, token, &job->local, &job->err) <
	    0)
		return;
	int rc = direct_stream(job, agent, token);
	if (rc == 0) {
		job->direct = true;
		return;
	}
	if (rc < 0) {
		/* the pod's connection exists but the program's socket cannot carry it */
		char where[80];
		hm_warn("connect to %s: %s", trace_net_addr_str(&job->dst, where, sizeof(where)),
			job->err.msg);
		if (job->err.code != ETIMEDOUT)
			job->err.code = ECONNRESET;
		return;
	}
	hm_debug("%s; through the relay instead", job->err.msg);
	job->err = (struct hm_err){0};
	/* the relay's path: trace-run's own stream connection, as client_tcp_connect */
	int timeout = CLIENT_DEFAULT_TIMEOUT_MS;
	hm_cleanup_close int fd = client_endpoint_dial(&st->s->endpoint, timeout, &job->err);
	if (fd < 0 || proto_stream_open(fd, token, timeout, &job->err) < 0)
		return;
	job->result_fd = hm_steal_fd(&fd);
}

/* ---- the TCP hand-off: the program's fd becomes the pod's socket ---- */

/* Options a program sets before connect() that the pod's socket must carry too. Not
 * copied: a bind() address or port (the pod picks its own), SO_REUSEADDR/PORT (they
 * matter for binding only), SO_BINDTODEVICE and SO_MARK (names of this host's network),
 * TCP_FASTOPEN_CONNECT and TCP_CONGESTION (the connection is already open); the program's
 * epoll registrations and dup()s of the fd made before connect() stay with the old
 * socket (docs/config.md, "TCP hand-off"). */
static const struct {
	int level, name;
} copied_opts[] = {
    {SOL_SOCKET, SO_KEEPALIVE},	 {SOL_SOCKET, SO_LINGER},	  {SOL_SOCKET, SO_RCVTIMEO},
    {SOL_SOCKET, SO_SNDTIMEO},	 {SOL_SOCKET, SO_PRIORITY},	  {SOL_SOCKET, SO_OOBINLINE},
    {IPPROTO_TCP, TCP_NODELAY},	 {IPPROTO_TCP, TCP_KEEPIDLE},	  {IPPROTO_TCP, TCP_KEEPINTVL},
    {IPPROTO_TCP, TCP_KEEPCNT},	 {IPPROTO_TCP, TCP_USER_TIMEOUT}, {IPPROTO_TCP, TCP_CORK},
    {IPPROTO_TCP, TCP_QUICKACK},
};

static void copy_sockopts(int from, int to, int family)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(copied_opts); i++) {
		uint8_t val[32];
		socklen_t len = sizeof(val);
		if (getsockopt(from, copied_opts[i].level, copied_opts[i].name, val, &len) == 0)
			setsockopt(to, copied_opts[i].level, copied_opts[i].name, val, len);
	}
	int tos, tlen = sizeof(tos);
	if (family == AF_INET &&
	    getsockopt(from, IPPROTO_IP, IP_TOS, &tos, (socklen_t *)&tlen) == 0 && tos)
		setsockopt(to, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
	if (family == AF_INET6 &&
	    getsockopt(from, IPPROTO_IPV6, IPV6_TCLASS, &tos, (socklen_t *)&tlen) == 0 && tos)
		setsockopt(to, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos));
	/* buffer sizes only when the program chose them: the kernel locks a size set with
	 * setsockopt, and a fresh socket shows what the default would have been */
	hm_cleanup_close int fresh = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	static const int bufs[] = {SO_RCVBUF, SO_SNDBUF};
	for (size_t i = 0; fresh >= 0 && i < HM_ARRAY_SIZE(bufs); i++) {
		int mine, dflt;
		socklen_t l1 = sizeof(mine), l2 = sizeof(dflt);
		if (getsockopt(from, SOL_SOCKET, bufs[i], &mine, &l1) == 0 &&
		    getsockopt(fresh, SOL_SOCKET, bufs[i], &dflt, &l2) == 0 && mine != dflt) {
			int half = mine / 2; /* the kernel doubles what it is given */
			setsockopt(to, SOL_SOCKET, bufs[i], &half, sizeof(half));
		}
	}
}

/* Whether the program's fd has FD_CLOEXEC: the "flags:" line of /proc/TID/fdinfo/N
 * shows O_CLOEXEC for it (a pidfd_getfd copy has its own fd flags). */
static bool prog_fd_cloexec(const struct tracer_call *call, int fd)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", call->pid, fd);
	hm_cleanup_close int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0)
		return true; /* the safer guess: the fd does not leak into an exec */
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	if (n <= 0)
		return true;
	buf[n] = 0;
	const char *p = strstr(buf, "flags:");
	return !p || (strtoul(p + 6, NULL, 8) & O_CLOEXEC);
}

/* The pod's socket in the program socket's place: its status flags (O_NONBLOCK) and the
 * options above follow, the program's fd number and FD_CLOEXEC stay. */
static struct tracer_result hand_off(struct net_state *st, struct net_job *job,
				     const struct tracer_call *call, struct net_sock *ns)
{
	int pod = hm_steal_fd(&job->result_fd);
	int fl = fcntl(job->dup, F_GETFL);
	bool nonblock = fl >= 0 && (fl & O_NONBLOCK);
	copy_sockopts(job->dup, pod, ns->family);
	if (nonblock && fcntl(pod, F_SETFL, O_NONBLOCK) < 0) {
		close(pod);
		return tracer_error(ENOBUFS);
	}
	struct stat sb;
	if (fstat(pod, &sb) == 0)
		ns->ino = sb.st_ino; /* the program's socket from now on */
	ns->handed_off = true;
	st->last_ino = ns->ino;
	int flags = prog_fd_cloexec(call, (int)call->args[0]) ? O_CLOEXEC : 0;
	/* Linux never completes a non-blocking TCP connect at once: EINPROGRESS, and the
	 * socket is writable with SO_ERROR 0 when the program looks, as in connected() */
	struct tracer_result res =
	    tracer_replace_fd(pod, flags, (int)call->args[0], 0, nonblock ? EINPROGRESS : 0);
	res.undo = undo_connect;
	res.undo_arg = st;
	return res;
}

static struct tracer_result tcp_finish(struct net_job *job, const struct tracer_call *call)
{
	struct net_state *st = job->st;
	char where[80];
	trace_net_addr_str(&job->dst, where, sizeof(where));
	if (job->result_fd < 0 && !job->direct) {
		if (trace_session_lost(st->s, NULL)) {
			/* not ECONNRESET / ECONNREFUSED: no server refused anything */
			hm_debug("pid %d: connect %s: %s", call->pid, where, job->err.msg);
			return tracer_error(ENETUNREACH);
		}
		int code = connect_errno(job->err.code);
		if (code != job->err.code)
			hm_warn("connect to %s through the agent: %s", where, job->err.msg);
		else
			hm_debug("pid %d: connect %s: %s", call->pid, where, strerror(code));
		return tracer_error(code);
	}
	int family = trace_net_socket_family(job->dup);
	struct hm_err err = {0};
	struct net_sock *ns = calloc(1, sizeof(*ns));
	if (!ns)
		return tracer_error(ENOMEM);
	ns->ino = job->ino;
	ns->type = SOCK_STREAM;
	ns->family = family;
	ns->stream = -1;
	bool hand = false;
	if (job->pod_socket) {
		/* the pod's socket goes in the program socket's place when they are alike;
		 * otherwise trace-run relays to it, as to a stream */
		int pod_family = trace_net_socket_family(job->result_fd);
		hand = pod_family == family && family != 0;
		if (!hand)
			hm_debug("pid %d: connect %s: the pod's socket is of family %d, the "
				 "program's %d: relayed",
				 call->pid, where, pod_family, family);
	}
	struct tracer_result handed = {.verdict = TRACER_ERROR};
	if (hand) {
		handed = hand_off(st, job, call, ns);
		if (handed.verdict == TRACER_ERROR) {
			free(ns);
			return handed;
		}
	} else if (job->direct) {
		/* connected and handshaken by the worker: nothing to relay */
		const struct net_addr *agent = direct_addr(st, family);
		if (agent)
			ns->diag_peer = *agent;
		ns->prog.len = sizeof(ns->prog.ss);
		if (getsockname(job->dup, (struct sockaddr *)&ns->prog.ss, &ns->prog.len) < 0)
			ns->prog.len = 0;
	} else {
		int acc = attach(st, job->dup, family, &job->dst, &ns->prog, &ns->diag_peer, &err);
		if (acc < 0) {
			hm_warn("connect to %s: %s", where, err.msg);
			free(ns);
			return tracer_error(ECONNREFUSED);
		}
		int agent_fd = hm_steal_fd(&job->result_fd);
		if (relay_add_tcp(st->relay, acc, agent_fd, &err) < 0) {
			hm_warn("connect to %s: %s", where, err.msg);
			free(ns);
			return tracer_error(ENOBUFS);
		}
	}
	trace_net_addr_for_family(&job->dst, family, &ns->peer);
	struct net_addr local;
	if (trace_net_addr_from_proto(&job->local, &local) == 0)
		trace_net_addr_for_family(&local, family, &ns->local);
	ns->delivered = true;
	ns->last_ms = hm_now_ms();
	pthread_mutex_lock(&st->lock);
	trace_net_table_replace(st, ns);
	st->redirected_tcp++;
	pthread_mutex_unlock(&st->lock);
	char pod[80];
	hm_debug("pid %d: connect %s through the pod (from %s)%s", call->pid, where,
		 trace_net_addr_str(&ns->local, pod, sizeof(pod)),
		 hand	       ? ", the socket is the pod's"
		 : job->direct ? ", the socket is the agent's stream"
			       : "");
	return hand ? handed : connected(st, ns->ino, job->dup);
}

struct tracer_result trace_net_tcp_connect(struct net_state *st, const struct tracer_call *call,
					   int dup, ino_t ino, const struct net_addr *dst)
{
	(void)call;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, ino);
	if (ns && ns->type == SOCK_STREAM) {
		/* redirected already: a re-issued connect whose answer got lost gets it again;
		 * otherwise the kernel says what it says to a connected socket (EISCONN) */
		bool again = !ns->delivered;
		if (again)
			ns->delivered = true;
		pthread_mutex_unlock(&st->lock);
		struct tracer_result res = again ? connected(st, ino, dup) : tracer_continue();
		close(dup);
		return res;
	}
	pthread_mutex_unlock(&st->lock);
	/* connected already (a handed-off socket whose entry was released, a program that
	 * calls connect() again to see whether it is done): the kernel answers it */
	struct sockaddr_storage peer;
	socklen_t peer_len = sizeof(peer);
	if (getpeername(dup, (struct sockaddr *)&peer, &peer_len) == 0) {
		close(dup);
		return tracer_continue();
	}
	struct net_job *job = trace_net_job_new(st, dup, ino);
	if (!job) {
		close(dup);
		return tracer_error(ENOMEM);
	}
	job->dst = *dst;
	if (trace_net_addr_to_proto(dst, &job->pdst, &job->err) < 0) {
		hm_debug("connect: %s", job->err.msg);
		trace_net_job_discard(job);
		return tracer_continue();
	}
	job->work = tcp_work;
	job->finish = tcp_finish;
	return trace_net_job_defer(job);
}
