/* The target's incoming traffic, delivered to the program's own listening sockets
 * (feature.network.incoming, docs/config.md).
 *
 *  - bind: a TCP socket of the program that binds a port to be subscribed is bound by
 *    trace-run (on a pidfd_getfd duplicate). When the port is taken on this machine it
 *    gets a free one instead, and getsockname still shows the asked port.
 *  - listen: the port (port_mapping applied) is subscribed in the chosen mode. A steal
 *    the agent refuses ends the run when on_concurrent_steal is abort.
 *  - Each delivered connection (INCOMING_CONNECTION) gets a thread of its own: it opens
 *    the connection's stream and connects a loopback socket to the program's real
 *    listener. steal: the splice relay joins the two. mirror: INCOMING_DATA frames are
 *    written to the program, INCOMING_END 0 is a FIN and an error a reset; what the
 *    program answers is read and dropped.
 *  - accept/accept4 on a subscribed listener are done by trace-run on a duplicate
 *    (deferred while a blocking listener has nothing to accept), so that the address
 *    the program gets, and later getpeername, is the original client's. The loopback
 *    socket's source port is remembered with the client it stands for, for sockets
 *    accepted some other way.
 *  - A listener the program closed is noticed with sock_diag and unsubscribed. */
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include "tracer/redirect/net_internal.h"

#define CHECK_EVERY_MS 300	   /* liveness of the listeners */
#define CONN_FORGET_MS 60000	   /* a delivered connection nobody accepted */
#define SUBSCRIPTION_WAIT_MS 2000  /* an event that overtook its subscribe reply */
#define LOCAL_CONNECT_MS 5000	   /* to the program's listener on this machine */
#define MIRROR_REPLY_DRAIN_MS 5000 /* the program's answer after the client's FIN */
#define SIGNAL_CHECK_MS 200	   /* a thread waiting in accept is checked for signals */

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

struct inc_listener {
	struct inc_listener *next;
	ino_t ino;
	int family;
	struct net_addr asked; /* what the program bound */
	struct net_addr real;  /* what the socket is bound to */
	uint16_t local_port, remote_port;
	bool moved;   /* the asked port was taken here: bound to another */
	uint32_t sub; /* 0: not subscribed */
	uint8_t mode; /* PROTO_INCOMING_* */
	bool pending; /* a subscription is being asked for */
};

/* a delivered connection: trace-run's loopback socket's source port -> the client */
struct inc_conn {
	struct inc_conn *next;
	uint16_t port;
	ino_t listener;
	struct net_addr client, server; /* server: the target's address, the asked port */
	int64_t added_ms;
};

/* a mirror connection being fed, so that fini can end it */
struct inc_feed {
	struct inc_feed *next;
	int stream;
};

struct net_incoming {
	struct net_state *st;
	const struct policy_config *cfg;
	pthread_mutex_t lock; /* everything below */
	struct inc_listener *listeners;
	struct inc_conn *conns;
	struct inc_feed *feeds;
	size_t n_listeners, n_conns;
	bool stopping;
	int threads; /* delivery threads still running */
	pthread_cond_t threads_done;
	/* the housekeeping thread */
	pthread_t thread;
	bool thread_started;
	int wake_fd;
	int diag_fd;
	/* counters for the summary line */
	unsigned long delivered, failed;
	struct tracer_once warned;
};

static const char *mode_name(uint8_t mode)
{
	return mode == PROTO_INCOMING_STEAL ? "stolen" : "mirrored";
}

static const char *mode_to(uint8_t mode)
{
	return mode == PROTO_INCOMING_STEAL ? "stolen by" : "mirrored to";
}

static uint8_t wanted_mode(const struct net_incoming *in)
{
	return in->cfg->feature.network.incoming.mode == POLICY_INCOMING_STEAL
		   ? PROTO_INCOMING_STEAL
		   : PROTO_INCOMING_MIRROR;
}

static struct inc_listener *listener_by_ino(struct net_incoming *in, ino_t ino)
{
	for (struct inc_listener *l = in->listeners; l; l = l->next)
		if (l->ino == ino)
			return l;
	return NULL;
}

static struct inc_listener *listener_by_sub(struct net_incoming *in, uint32_t sub)
{
	for (struct inc_listener *l = in->listeners; l && sub; l = l->next)
		if (l->sub == sub)
			return l;
	return NULL;
}

/* Another listener still uses the subscription (SO_REUSEPORT sockets share one). */
static bool sub_in_use(struct net_incoming *in, uint32_t sub)
{
	return listener_by_sub(in, sub) != NULL;
}

static void listener_unlink(struct net_incoming *in, struct inc_listener *l)
{
	for (struct inc_listener **pp = &in->listeners; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			in->n_listeners--;
			return;
		}
	}
}

static void listener_free(struct inc_listener *l)
{
	free(l);
}

/* Where trace-run reaches the listener: its own address, loopback for a wildcard */
static void listener_target(const struct net_state *st, const struct inc_listener *l,
			    struct net_addr *out)
{
	uint8_t key[16];
	uint16_t port;
	trace_net_addr_key(&l->real, key, &port);
	static const uint8_t any4[16] = {[10] = 0xff, [11] = 0xff};
	static const uint8_t any6[16] = {0};
	if (!memcmp(key, any4, 16) || !memcmp(key, any6, 16))
		trace_net_loopback(st, l->family, port, out);
	else
		*out = l->real;
}

static struct inc_conn *conn_take(struct net_incoming *in, uint16_t port)
{
	for (struct inc_conn **pp = &in->conns; *pp; pp = &(*pp)->next) {
		if ((*pp)->port == port) {
			struct inc_conn *c = *pp;
			*pp = c->next;
			in->n_conns--;
			return c;
		}
	}
	return NULL;
}

static struct inc_conn *conn_find(struct net_incoming *in, uint16_t port)
{
	for (struct inc_conn *c = in->conns; c; c = c->next)
		if (c->port == port)
			return c;
	return NULL;
}

static bool is_loopback(const struct net_addr *a)
{
	uint8_t key[16];
	uint16_t port;
	trace_net_addr_key(a, key, &port);
	static const uint8_t lo6[16] = {[15] = 1};
	return key[12] == 127 || !memcmp(key, lo6, 16);
}

/* ================================================================ delivery */

struct delivery {
	struct net_incoming *in;
	struct proto_incoming_connection ev;
};

/* The program's replies to a mirrored connection go nowhere: read and drop them. false
 * once the program closed or reset its side. */
static bool drain(int fd)
{
	char buf[16384];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return true;
		return false;
	}
}

static void reset_close(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Write all of data to the program's side, reading its answers meanwhile (a program that
 * writes while we write must not block us both). */
static int feed_write(int fd, const uint8_t *data, size_t len)
{
	while (len) {
		ssize_t n = send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			data += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -1;
		struct pollfd p = {.fd = fd, .events = POLLOUT | POLLIN};
		if (poll(&p, 1, 30000) <= 0)
			return -1;
		if ((p.revents & POLLIN) && !drain(fd))
			return -1;
	}
	return 0;
}

static void feed_register(struct net_incoming *in, struct inc_feed *f, bool add)
{
	pthread_mutex_lock(&in->lock);
	if (add) {
		f->next = in->feeds;
		in->feeds = f;
	} else {
		for (struct inc_feed **pp = &in->feeds; *pp; pp = &(*pp)->next) {
			if (*pp == f) {
				*pp = f->next;
				break;
			}
		}
	}
	pthread_mutex_unlock(&in->lock);
}

/* Mirror: frames from the agent become the bytes the program reads. */
static void mirror_feed(struct net_incoming *in, int stream, int local)
{
	struct inc_feed f = {.stream = stream};
	feed_register(in, &f, true);
	bool reset = true;
	for (;;) {
		struct pollfd p[2] = {{.fd = stream, .events = POLLIN},
				      {.fd = local, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents && !drain(local))
			break; /* the program closed: nothing more to give it */
		if (!p[0].revents)
			continue;
		struct proto_msg m;
		const void *data;
		int end_error;
		struct hm_err err = {0};
		ssize_t n = client_incoming_read(stream, &m, &data, &end_error, 0, &err);
		if (n < 0) {
			hm_debug("mirror stream: %s", err.msg[0] ? err.msg : "closed");
			break;
		}
		if (n == 0) {
			proto_msg_free(&m);
			reset = end_error != 0;
			break;
		}
		int w = feed_write(local, data, (size_t)n);
		proto_msg_free(&m);
		if (w < 0)
			break;
	}
	feed_register(in, &f, false);
	if (reset) {
		reset_close(local);
		return;
	}
	/* the client's FIN: the program sees EOF, answers, closes */
	shutdown(local, SHUT_WR);
	int64_t deadline = hm_deadline_in(MIRROR_REPLY_DRAIN_MS);
	while (hm_poll_fd(local, POLLIN, deadline) > 0 && drain(local))
		;
	close(local);
}

/* The listener a subscription belongs to; waits a little for one whose reply is still
 * on its way to the listen handler. Copies what the thread needs. */
static bool find_listener(struct net_incoming *in, uint32_t sub, struct inc_listener *out)
{
	int64_t deadline = hm_deadline_in(SUBSCRIPTION_WAIT_MS);
	for (;;) {
		pthread_mutex_lock(&in->lock);
		struct inc_listener *l = listener_by_sub(in, sub);
		bool pending = false;
		for (struct inc_listener *p = in->listeners; p; p = p->next)
			pending |= p->pending;
		if (l)
			*out = *l;
		bool stop = in->stopping;
		pthread_mutex_unlock(&in->lock);
		if (l)
			return true;
		if (stop || !pending || hm_now_ms() >= deadline)
			return false;
		usleep(5000);
	}
}

static int connect_local(struct net_incoming *in, const struct inc_listener *l,
			 const struct proto_incoming_connection *ev, struct hm_err *err)
{
	struct net_addr target;
	listener_target(in->st, l, &target);
	int family = target.ss.ss_family;
	hm_cleanup_close int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return hm_err_errno(err, "socket");
	/* the source port is known before the connect, so the accept that may come before
	 * connect returns already finds the client it stands for */
	struct net_addr any = {.len = target.len};
	any.ss.ss_family = (sa_family_t)family;
	if (bind(fd, (struct sockaddr *)&any.ss, any.len) < 0)
		return hm_err_errno(err, "bind");
	struct net_addr self = {.len = sizeof(self.ss)};
	if (getsockname(fd, (struct sockaddr *)&self.ss, &self.len) < 0)
		return hm_err_errno(err, "getsockname");
	struct inc_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return hm_err_set(err, ENOMEM, "connection");
	c->port = trace_net_addr_port(&self);
	c->listener = l->ino;
	struct net_addr client, server;
	if (trace_net_addr_from_proto(&ev->client, &client) == 0)
		trace_net_addr_for_family(&client, l->family, &c->client);
	if (trace_net_addr_from_proto(&ev->server, &server) == 0) {
		trace_net_addr_for_family(&server, l->family, &c->server);
		/* the port the program asked for, as its listener shows */
		if (c->server.ss.ss_family == AF_INET)
			((struct sockaddr_in *)&c->server.ss)->sin_port = htons(l->local_port);
		else
			((struct sockaddr_in6 *)&c->server.ss)->sin6_port = htons(l->local_port);
	}
	c->added_ms = hm_now_ms();
	pthread_mutex_lock(&in->lock);
	c->next = in->conns;
	in->conns = c;
	in->n_conns++;
	pthread_mutex_unlock(&in->lock);
	if (hm_connect_deadline(fd, (struct sockaddr *)&target.ss, target.len,
				hm_deadline_in(LOCAL_CONNECT_MS), NULL) < 0) {
		int e = errno;
		pthread_mutex_lock(&in->lock);
		free(conn_take(in, c->port));
		pthread_mutex_unlock(&in->lock);
		char where[80];
		return hm_err_set(err, e, "connect to the program's listener at %s",
				  trace_net_addr_str(&target, where, sizeof(where)));
	}
	return hm_steal_fd(&fd);
}

static void *deliver_main(void *arg)
{
	struct delivery *d = arg;
	struct net_incoming *in = d->in;
	struct net_state *st = in->st;
	struct hm_err err = {0};
	hm_cleanup_close int stream = -1;
	struct inc_listener l;
	char client[80];
	struct net_addr ca;
	if (trace_net_addr_from_proto(&d->ev.client, &ca) == 0)
		trace_net_addr_str(&ca, client, sizeof(client));
	else
		snprintf(client, sizeof(client), "?");
	bool ok = false;
	if (!find_listener(in, d->ev.subscription, &l)) {
		hm_debug("incoming connection from %s: no subscription %u (any more)", client,
			 d->ev.subscription);
		goto out;
	}
	stream = client_incoming_open(st->s->client, d->ev.token, &err);
	if (stream < 0) {
		hm_debug("incoming connection from %s: %s", client, err.msg);
		goto out;
	}
	int local = connect_local(in, &l, &d->ev, &err);
	if (local < 0) {
		/* the client sees a reset, as from a port nobody listens on */
		hm_debug("incoming connection from %s: %s", client, err.msg);
		goto out;
	}
	hm_debug("incoming connection from %s to port %u (%s)", client, l.local_port,
		 l.mode == PROTO_INCOMING_STEAL ? "steal" : "mirror");
	ok = true;
	if (l.mode == PROTO_INCOMING_STEAL) {
		if (relay_add_tcp(st->relay, local, hm_steal_fd(&stream), &err) < 0) {
			hm_debug("incoming connection from %s: %s", client, err.msg);
			ok = false;
		}
	} else {
		mirror_feed(in, stream, local);
	}
out:
	pthread_mutex_lock(&in->lock);
	if (ok)
		in->delivered++;
	else
		in->failed++;
	if (--in->threads == 0)
		pthread_cond_broadcast(&in->threads_done);
	pthread_mutex_unlock(&in->lock);
	free(d);
	return NULL;
}

/* On the client's reader thread: hand the connection to a thread of its own. */
static void on_incoming(void *arg, const struct proto_incoming_connection *ev)
{
	struct net_incoming *in = arg;
	struct delivery *d = malloc(sizeof(*d));
	if (!d)
		return;
	d->in = in;
	d->ev = *ev;
	pthread_mutex_lock(&in->lock);
	bool stop = in->stopping;
	if (!stop)
		in->threads++;
	pthread_mutex_unlock(&in->lock);
	if (stop) {
		free(d);
		return;
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 << 10);
	pthread_t tid;
	/* the reader thread blocks every signal: so do its children */
	int r = pthread_create(&tid, &attr, deliver_main, d);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		hm_warn("incoming connection: thread: %s", strerror(r));
		free(d);
		pthread_mutex_lock(&in->lock);
		in->failed++;
		if (--in->threads == 0)
			pthread_cond_broadcast(&in->threads_done);
		pthread_mutex_unlock(&in->lock);
	}
}

/* ================================================================ housekeeping */

static bool listener_alive(struct net_incoming *in, const struct inc_listener *l)
{
	struct net_sock probe = {.ino = l->ino, .type = SOCK_STREAM, .family = l->family};
	listener_target(in->st, l, &probe.prog);
	probe.diag_peer.ss.ss_family = probe.prog.ss.ss_family;
	probe.diag_peer.len = probe.prog.len;
	return trace_net_sock_alive_fd(in->diag_fd, &probe);
}

static void unsubscribe(struct net_incoming *in, uint32_t sub, uint16_t port, const char *why)
{
	struct hm_err err = {0};
	if (client_ended(in->st->s->client, NULL))
		return;
	if (client_incoming_unsubscribe(in->st->s->client, sub, &err) < 0)
		hm_debug("unsubscribe port %u: %s", port, err.msg);
	else
		hm_info("port %u of %s: unsubscribed (%s)", port, in->cfg->target, why);
}

static void collect(struct net_incoming *in)
{
	/* listeners are checked without the lock held across sock_diag: copy the ids */
	struct {
		ino_t ino;
		struct inc_listener copy;
	} check[64];
	size_t n = 0;
	pthread_mutex_lock(&in->lock);
	for (struct inc_listener *l = in->listeners; l && n < HM_ARRAY_SIZE(check); l = l->next) {
		/* bound and not yet listening is not found by sock_diag: only subscribed
		 * listeners are checked */
		if (l->pending || !l->sub)
			continue;
		check[n].ino = l->ino;
		check[n].copy = *l;
		n++;
	}
	int64_t now = hm_now_ms();
	for (struct inc_conn **pp = &in->conns; *pp;) {
		struct inc_conn *c = *pp;
		if (now - c->added_ms > CONN_FORGET_MS) {
			*pp = c->next;
			in->n_conns--;
			free(c);
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&in->lock);
	for (size_t i = 0; i < n; i++) {
		if (listener_alive(in, &check[i].copy))
			continue;
		pthread_mutex_lock(&in->lock);
		struct inc_listener *l = listener_by_ino(in, check[i].ino);
		uint32_t sub = 0;
		uint16_t port = 0;
		if (l && !l->pending) {
			sub = l->sub;
			port = l->remote_port;
			listener_unlink(in, l);
			listener_free(l);
			if (sub && sub_in_use(in, sub))
				sub = 0;
		}
		pthread_mutex_unlock(&in->lock);
		if (sub)
			unsubscribe(in, sub, port, "the program closed its listener");
	}
}

static void *housekeeping_main(void *arg)
{
	struct net_incoming *in = arg;
	for (;;) {
		struct pollfd p = {.fd = in->wake_fd, .events = POLLIN};
		poll(&p, 1, CHECK_EVERY_MS);
		pthread_mutex_lock(&in->lock);
		bool stop = in->stopping;
		bool any = in->listeners || in->conns;
		pthread_mutex_unlock(&in->lock);
		if (stop)
			return NULL;
		if (any)
			collect(in);
	}
}

/* ================================================================ bind */

static int sock_kind(int fd, int *family)
{
	int type = 0, proto = 0;
	socklen_t l1 = sizeof(type), l2 = sizeof(proto), l3 = sizeof(*family);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_DOMAIN, family, &l3) < 0)
		return -1;
	return type == SOCK_STREAM && (proto == IPPROTO_TCP || proto == IPPROTO_MPTCP) ? 0 : -1;
}

static bool agent_can(const struct net_incoming *in, uint8_t mode)
{
	uint64_t f = client_features(in->st->s->client);
	return f & (mode == PROTO_INCOMING_STEAL ? PROTO_FEAT_STEAL : PROTO_FEAT_MIRROR);
}

/* The listener's getsockname shows the asked port: an entry of the redirected-socket
 * table (net_sock.c), found by sock_diag as long as the listener lives. */
static void name_entry(struct net_state *st, const struct inc_listener *l)
{
	struct net_sock *ns = calloc(1, sizeof(*ns));
	if (!ns)
		return;
	ns->ino = l->ino;
	ns->type = SOCK_STREAM;
	ns->family = l->family;
	ns->stream = -1;
	ns->local = l->asked;
	listener_target(st, l, &ns->prog);
	ns->diag_peer.ss.ss_family = ns->prog.ss.ss_family;
	ns->diag_peer.len = ns->prog.len;
	ns->delivered = true;
	ns->last_ms = hm_now_ms();
	pthread_mutex_lock(&st->lock);
	struct net_sock *old = trace_net_table_find(st, ns->ino);
	if (old) {
		trace_net_table_remove(st, old);
		trace_net_sock_free(st, old);
	}
	trace_net_table_insert(st, ns);
	pthread_mutex_unlock(&st->lock);
}

static struct tracer_result handle_bind(const struct tracer_call *call, void *data)
{
	struct net_state *st = data;
	struct net_incoming *in = st->incoming;
	struct net_addr asked;
	if (trace_net_read_addr(call, call->args[1], call->args[2], &asked) < 0 ||
	    (asked.ss.ss_family != AF_INET && asked.ss.ss_family != AF_INET6))
		return tracer_continue();
	uint16_t port = trace_net_addr_port(&asked), remote;
	if (!policy_incoming_port(in->cfg, port, &remote))
		return tracer_continue();
	struct hm_err err = {0};
	hm_cleanup_close int dup = trace_net_getfd(call, (int)call->args[0], &err);
	if (dup < 0)
		return tracer_continue();
	struct stat sb;
	int family = 0;
	if (fstat(dup, &sb) < 0 || !S_ISSOCK(sb.st_mode) || sock_kind(dup, &family) < 0 ||
	    family != asked.ss.ss_family)
		return tracer_continue();
	uint8_t mode = wanted_mode(in);
	if (!agent_can(in, mode)) {
		if (tracer_once(&in->warned, "agent-features"))
			hm_warn("the agent cannot %s incoming traffic (an older agent): port %u "
				"stays local",
				mode == PROTO_INCOMING_STEAL ? "steal" : "mirror", port);
		return tracer_continue();
	}
	pthread_mutex_lock(&in->lock);
	struct inc_listener *known = listener_by_ino(in, sb.st_ino);
	bool again = known && trace_net_addr_equal(&known->asked, &asked);
	pthread_mutex_unlock(&in->lock);
	if (again)
		return tracer_return(0); /* a re-issued bind whose answer got lost */
	bool moved = false;
	if (bind(dup, (struct sockaddr *)&asked.ss, asked.len) < 0) {
		if (errno != EADDRINUSE)
			return tracer_error(errno);
		/* taken here: any free port will do, the program is reached through us */
		struct net_addr elsewhere = asked;
		if (family == AF_INET)
			((struct sockaddr_in *)&elsewhere.ss)->sin_port = 0;
		else
			((struct sockaddr_in6 *)&elsewhere.ss)->sin6_port = 0;
		if (bind(dup, (struct sockaddr *)&elsewhere.ss, elsewhere.len) < 0)
			return tracer_error(errno);
		moved = true;
	}
	struct inc_listener *l = calloc(1, sizeof(*l));
	if (!l)
		return tracer_error(ENOMEM); /* never answered with success: nothing to undo */
	l->ino = sb.st_ino;
	l->family = family;
	l->asked = asked;
	l->real.len = sizeof(l->real.ss);
	getsockname(dup, (struct sockaddr *)&l->real.ss, &l->real.len);
	l->local_port = port;
	l->remote_port = remote;
	l->moved = moved;
	l->mode = mode;
	if (moved) {
		hm_info("port %u is taken on this machine: the program listens on %u instead "
			"(getsockname shows %u)",
			port, trace_net_addr_port(&l->real), port);
		name_entry(st, l);
	}
	pthread_mutex_lock(&in->lock);
	struct inc_listener *old = listener_by_ino(in, l->ino);
	uint32_t old_sub = 0;
	if (old) { /* an earlier socket of the same inode: closed since */
		old_sub = old->sub;
		listener_unlink(in, old);
		listener_free(old);
		if (old_sub && sub_in_use(in, old_sub))
			old_sub = 0;
	}
	l->next = in->listeners;
	in->listeners = l;
	in->n_listeners++;
	pthread_mutex_unlock(&in->lock);
	if (old_sub)
		unsubscribe(in, old_sub, remote, "the socket is gone");
	return tracer_return(0);
}

/* ================================================================ listen */

struct sub_job {
	uint16_t port;
	uint8_t mode;
	uint32_t flags;
	const char *filter;
	uint32_t sub;
	char note[256];
};

static void subscribe_work(struct net_job *job)
{
	struct sub_job *sj = job->data;
	client_incoming_subscribe(job->st->s->client, sj->port, sj->mode, sj->flags, sj->filter,
				  &sj->sub, sj->note, sizeof(sj->note), &job->err);
}

/* The agent's words without the request name the client puts first */
static const char *agent_words(const struct hm_err *err)
{
	const char *m = err->msg;
	const char *prefix = "INCOMING_SUBSCRIBE: ";
	return strncmp(m, prefix, strlen(prefix)) ? m : m + strlen(prefix);
}

static struct tracer_result subscribe_finish(struct net_job *job, const struct tracer_call *call)
{
	(void)call;
	struct net_state *st = job->st;
	struct net_incoming *in = st->incoming;
	struct sub_job *sj = job->data;
	const char *target = in->cfg->target;
	pthread_mutex_lock(&in->lock);
	struct inc_listener *l = listener_by_ino(in, job->ino);
	uint16_t local_port = l ? l->local_port : sj->port;
	struct inc_listener moved = {0};
	if (l) {
		l->pending = false;
		l->sub = sj->sub;
		if (l->moved)
			moved = *l;
	}
	pthread_mutex_unlock(&in->lock);
	/* the entry bind made may have been swept meanwhile: sock_diag finds a
	 * socket only once it listens */
	if (moved.ino)
		name_entry(st, &moved);
	if (!job->err.code && !job->err.msg[0]) {
		if (!st->s->quiet)
			fprintf(stderr,
				"trace-run: port %u of %s is %s the program (port %u)%s%s\n",
				sj->port, target, mode_to(sj->mode), local_port,
				sj->note[0] ? ": " : "", sj->note);
		return tracer_return(0);
	}
	if (job->err.code == EADDRINUSE && sj->mode == PROTO_INCOMING_STEAL &&
	    in->cfg->feature.network.incoming.on_concurrent_steal == POLICY_CONCURRENT_ABORT) {
		/* mirrord's abort: the run ends rather than serving half the traffic */
		fprintf(stderr,
			"trace-run: cannot steal port %u of %s: %s (on_concurrent_steal is abort: "
			"ending the program)\n",
			sj->port, target, agent_words(&job->err));
		st->s->abort_exit = TRACER_EXIT_FAILURE;
		tracer_terminate(st->s->tracer, SIGKILL);
		return tracer_error(EADDRINUSE);
	}
	/* the program still listens locally; it just gets nothing from the target */
	fprintf(stderr, "trace-run: port %u of %s is not %s: %s\n", sj->port, target,
		mode_name(sj->mode), agent_words(&job->err));
	return tracer_return(0);
}

static struct tracer_result handle_listen(const struct tracer_call *call, void *data)
{
	struct net_state *st = data;
	struct net_incoming *in = st->incoming;
	if (!__atomic_load_n(&in->n_listeners, __ATOMIC_RELAXED))
		return tracer_continue();
	ino_t ino = trace_net_fd_ino(call, (int)call->args[0]);
	pthread_mutex_lock(&in->lock);
	struct inc_listener *l = ino ? listener_by_ino(in, ino) : NULL;
	bool ours = l && !l->sub && !l->pending;
	struct sub_job sj = {0};
	if (ours) {
		sj.port = l->remote_port;
		sj.mode = l->mode;
		/* another socket of the program on the same port (SO_REUSEPORT) has the
		 * subscription already: the two share it (a second steal would be refused) */
		for (struct inc_listener *o = in->listeners; o; o = o->next) {
			if (o != l && o->sub && o->remote_port == l->remote_port &&
			    o->mode == l->mode) {
				l->sub = o->sub;
				ours = false;
				break;
			}
		}
	}
	pthread_mutex_unlock(&in->lock);
	if (!ours)
		return tracer_continue();
	struct hm_err err = {0};
	int dup = trace_net_getfd(call, (int)call->args[0], &err);
	if (dup < 0)
		return tracer_continue();
	if (listen(dup, (int)call->args[1]) < 0) {
		int e = errno;
		close(dup);
		return tracer_error(e);
	}
	const typeof(in->cfg->feature.network.incoming) *cfg = &in->cfg->feature.network.incoming;
	if (sj.mode == PROTO_INCOMING_STEAL) {
		if (cfg->flush_connections == POLICY_TRI_TRUE)
			sj.flags |= PROTO_INCOMING_FLUSH;
		if (cfg->on_concurrent_steal == POLICY_CONCURRENT_CONTINUE)
			sj.flags |= PROTO_INCOMING_CONCURRENT;
		sj.filter = policy_incoming_http_filter(in->cfg, sj.port);
	}
	struct net_job *job = trace_net_job_new(st, dup, ino);
	struct sub_job *copy = malloc(sizeof(*copy));
	if (!job || !copy) {
		free(copy);
		if (job)
			trace_net_job_discard(job);
		else
			close(dup);
		return tracer_error(ENOMEM);
	}
	*copy = sj;
	job->data = copy;
	job->work = subscribe_work;
	job->finish = subscribe_finish;
	pthread_mutex_lock(&in->lock);
	l = listener_by_ino(in, ino);
	if (l)
		l->pending = true;
	pthread_mutex_unlock(&in->lock);
	return trace_net_job_defer(job);
}

/* ================================================================ accept */

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
 * the table of delivered connections), the target's address as its own. */
static void accepted_entry(struct net_state *st, int fd, const struct net_addr *kernel_peer,
			   struct net_addr *shown)
{
	struct net_incoming *in = st->incoming;
	*shown = *kernel_peer;
	if (!is_loopback(kernel_peer))
		return;
	pthread_mutex_lock(&in->lock);
	struct inc_conn *c = conn_take(in, trace_net_addr_port(kernel_peer));
	pthread_mutex_unlock(&in->lock);
	if (!c)
		return; /* a local client of the program's own */
	*shown = c->client;
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
		pthread_mutex_lock(&st->lock);
		struct net_sock *old = trace_net_table_find(st, ns->ino);
		if (old) {
			trace_net_table_remove(st, old);
			trace_net_sock_free(st, old);
		}
		trace_net_table_insert(st, ns);
		pthread_mutex_unlock(&st->lock);
	}
	free(c);
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
	accepted_entry(aw->st, fd, &kernel_peer, &peer);
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

static struct tracer_result handle_accept(const struct tracer_call *call, void *data)
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
	struct inc_listener *l = ino ? listener_by_ino(in, ino) : NULL;
	bool ours = l && (l->sub || l->pending);
	pthread_mutex_unlock(&in->lock);
	if (!ours)
		return tracer_continue();
	struct hm_err err = {0};
	int dup = trace_net_getfd(call, (int)call->args[0], &err);
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

/* ================================================================ names */

bool trace_net_incoming_name(struct net_state *st, const struct tracer_call *call, bool peer,
			     struct net_addr *out)
{
	struct net_incoming *in = st->incoming;
	if (!__atomic_load_n(&in->n_conns, __ATOMIC_RELAXED))
		return false;
	struct hm_err err = {0};
	hm_cleanup_close int dup = trace_net_getfd(call, (int)call->args[0], &err);
	if (dup < 0)
		return false;
	struct net_addr kernel_peer = {.len = sizeof(kernel_peer.ss)};
	if (getpeername(dup, (struct sockaddr *)&kernel_peer.ss, &kernel_peer.len) < 0 ||
	    !is_loopback(&kernel_peer))
		return false;
	pthread_mutex_lock(&in->lock);
	struct inc_conn *c = conn_find(in, trace_net_addr_port(&kernel_peer));
	bool found = c != NULL;
	if (c)
		*out = peer ? c->client : c->server;
	pthread_mutex_unlock(&in->lock);
	return found && out->len;
}

/* ================================================================ setup */

int trace_net_incoming_init(struct net_state *st, struct hm_err *err)
{
	struct net_incoming *in = calloc(1, sizeof(*in));
	if (!in)
		return hm_err_set(err, ENOMEM, "incoming traffic");
	in->st = st;
	in->cfg = &st->s->cfg;
	in->wake_fd = in->diag_fd = -1;
	pthread_mutex_init(&in->lock, NULL);
	pthread_cond_init(&in->threads_done, NULL);
	st->incoming = in;
	in->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (in->wake_fd < 0)
		return hm_err_errno(err, "eventfd");
	in->diag_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (in->diag_fd >= 0) {
		struct timeval tv = {.tv_sec = 1};
		setsockopt(in->diag_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	client_incoming_set_handler(st->s->client, on_incoming, in);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&in->thread, NULL, housekeeping_main, in);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return hm_err_set(err, r, "incoming traffic thread");
	in->thread_started = true;
	struct tracer *t = st->s->tracer;
	if (tracer_set_handler(t, SYS_bind, handle_bind, st, err) < 0 ||
	    tracer_set_handler(t, SYS_listen, handle_listen, st, err) < 0 ||
	    tracer_set_handler(t, SYS_accept, handle_accept, st, err) < 0 ||
	    tracer_set_handler(t, SYS_accept4, handle_accept, st, err) < 0)
		return -1;
	return 0;
}

void trace_net_incoming_fini(struct net_state *st)
{
	struct net_incoming *in = st->incoming;
	if (!in)
		return;
	/* no new deliveries: once this returns no callback runs any more */
	if (st->s->client)
		client_incoming_set_handler(st->s->client, NULL, NULL);
	pthread_mutex_lock(&in->lock);
	in->stopping = true;
	for (struct inc_feed *f = in->feeds; f; f = f->next)
		shutdown(f->stream, SHUT_RDWR);
	pthread_mutex_unlock(&in->lock);
	if (in->thread_started) {
		uint64_t one = 1;
		if (write(in->wake_fd, &one, sizeof(one)) < 0)
			hm_debug("wake the incoming thread: %s", strerror(errno));
		pthread_join(in->thread, NULL);
	}
	/* delivery threads end soon: their connects and streams have deadlines */
	pthread_mutex_lock(&in->lock);
	while (in->threads > 0) {
		for (struct inc_feed *f = in->feeds; f; f = f->next)
			shutdown(f->stream, SHUT_RDWR);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 100 * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&in->threads_done, &in->lock, &until);
	}
	pthread_mutex_unlock(&in->lock);
	while (in->listeners) {
		struct inc_listener *l = in->listeners;
		in->listeners = l->next;
		if (l->sub && !sub_in_use(in, l->sub))
			unsubscribe(in, l->sub, l->remote_port, "the run ends");
		listener_free(l);
	}
	while (in->conns) {
		struct inc_conn *c = in->conns;
		in->conns = c->next;
		free(c);
	}
	hm_info("incoming: %lu connections delivered to the program, %lu could not be",
		in->delivered, in->failed);
	if (in->diag_fd >= 0)
		close(in->diag_fd);
	if (in->wake_fd >= 0)
		close(in->wake_fd);
	pthread_cond_destroy(&in->threads_done);
	pthread_mutex_destroy(&in->lock);
	free(in);
	st->incoming = NULL;
}
