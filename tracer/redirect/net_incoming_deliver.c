/* Connections the agent delivers to the program's listeners (see net_incoming.c): a
 * delivery thread opens the connection's stream and connects a loopback socket to the
 * program's real listener; steal hands the pair to the splice relay, mirror feeds the
 * INCOMING_DATA frames to the program and drops what it answers.
 *
 * Threads are bounded (INCOMING_THREADS_MAX): a connection that comes while all are
 * busy waits in a bounded queue, and a thread that finishes one takes the next waiting
 * one, so normal bursts are served in order. A flood beyond the queue (the pod's
 * clients are not to be trusted, and the program may accept slowly: each delivery can
 * wait LOCAL_CONNECT_MS for its listener) is refused with a warning, never more threads.
 *
 * Steal over a unix agent (PROTO_FEAT_TCP_FD) gets the pod's accepted socket itself:
 * the loopback connection is then only a placeholder that wakes the program's listener
 * (accept, epoll, poll on it), and the program's accept gets the pod's socket in its
 * place (net_incoming_accept.c), keyed by the placeholder's source port. No relay. */
#include <poll.h>
#include <string.h>

#include "tracer/redirect/net_internal.h"

#define SUBSCRIPTION_WAIT_MS 2000  /* an event that overtook its subscribe reply */
#define LOCAL_CONNECT_MS 5000	   /* to the program's listener on this machine */
#define MIRROR_REPLY_DRAIN_MS 5000 /* the program's answer after the client's FIN */

struct inc_delivery {
	struct net_incoming *in;
	struct proto_incoming_connection ev;
	struct inc_delivery *next; /* in->waiting */
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
		struct inc_listener *l = trace_incoming_listener_by_sub(in, sub);
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

/* pod_socket (-1: none) goes with the connection's entry, closed with it */
static int connect_local(struct net_incoming *in, const struct inc_listener *l,
			 const struct proto_incoming_connection *ev, int pod_socket,
			 struct hm_err *err)
{
	hm_cleanup_close int pod = pod_socket;
	struct net_addr target;
	trace_incoming_listener_target(in->st, l, &target);
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
	c->pod_socket = hm_steal_fd(&pod);
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
		trace_incoming_conn_free(trace_incoming_conn_take(in, c->port));
		pthread_mutex_unlock(&in->lock);
		char where[80];
		return hm_err_set(err, e, "connect to the program's listener at %s",
				  trace_net_addr_str(&target, where, sizeof(where)));
	}
	return hm_steal_fd(&fd);
}

/* One connection; true when it reached the program. */
static bool deliver(struct inc_delivery *d)
{
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
	bool pod_socket = false;
	stream = client_incoming_open(st->s->client, d->ev.token, &pod_socket, &err);
	if (stream < 0) {
		hm_debug("incoming connection from %s: %s", client, err.msg);
		goto out;
	}
	/* the program's accept gets a socket of its listener's family, as the kernel's
	 * would; an IPv4 client of a dual-stack listener is relayed */
	int pod_family = pod_socket ? trace_net_socket_family(stream) : 0;
	bool hand = pod_socket && l.mode == PROTO_INCOMING_STEAL && pod_family == l.family;
	int local = connect_local(in, &l, &d->ev, hand ? hm_steal_fd(&stream) : -1, &err);
	if (local < 0) {
		/* the client sees a reset, as from a port nobody listens on */
		hm_debug("incoming connection from %s: %s", client, err.msg);
		goto out;
	}
	hm_debug("incoming connection from %s to port %u (%s)", client, l.local_port,
		 l.mode != PROTO_INCOMING_STEAL ? "mirror"
		 : hand				? "steal, the pod's socket handed to the program"
		 : pod_socket			? "steal, the pod's socket relayed: another family"
						: "steal, relayed");
	ok = true;
	if (hand) {
		/* the placeholder has woken the listener; its accepted end is all that is
		 * needed of it */
		close(local);
	} else if (l.mode == PROTO_INCOMING_STEAL) {
		if (relay_add_tcp(st->relay, local, hm_steal_fd(&stream), &err) < 0) {
			hm_debug("incoming connection from %s: %s", client, err.msg);
			ok = false;
		}
	} else {
		mirror_feed(in, stream, local);
	}
out:
	return ok;
}

/* under in->lock */
static struct inc_delivery *waiting_pop(struct net_incoming *in)
{
	struct inc_delivery *d = in->waiting;
	if (d) {
		in->waiting = d->next;
		if (!in->waiting)
			in->waiting_tail = NULL;
		in->n_waiting--;
	}
	return d;
}

size_t trace_incoming_waiting_drop(struct net_incoming *in)
{
	size_t n = 0;
	pthread_mutex_lock(&in->lock);
	for (struct inc_delivery *d; (d = waiting_pop(in)); n++)
		free(d);
	pthread_mutex_unlock(&in->lock);
	return n;
}

/* A delivery thread: its connection, then the waiting ones until none is left. */
static void *deliver_main(void *arg)
{
	struct inc_delivery *d = arg;
	struct net_incoming *in = d->in;
	while (d) {
		bool ok = deliver(d);
		free(d);
		pthread_mutex_lock(&in->lock);
		if (ok)
			in->delivered++;
		else
			in->failed++;
		d = in->stopping ? NULL : waiting_pop(in);
		if (!d && --in->threads == 0)
			pthread_cond_broadcast(&in->threads_done);
		pthread_mutex_unlock(&in->lock);
	}
	return NULL;
}

/* Under in->lock: a connection refused for the bounds; returns true when it is time to
 * say so (at most once a second), with the count and port filled in. */
static bool refuse(struct net_incoming *in, uint32_t sub, unsigned long *count, uint16_t *port)
{
	in->refused++;
	in->refused_unsaid++;
	int64_t now = hm_now_ms();
	if (in->refused_warned_ms && now - in->refused_warned_ms < 1000)
		return false;
	in->refused_warned_ms = now;
	*count = in->refused_unsaid;
	in->refused_unsaid = 0;
	struct inc_listener *l = trace_incoming_listener_by_sub(in, sub);
	*port = l ? l->local_port : 0;
	return true;
}

/* On the client's reader thread: hand the connection to a delivery thread, a new one
 * while there are fewer than INCOMING_THREADS_MAX, else to the queue they take from. */
void trace_incoming_on_connection(void *arg, const struct proto_incoming_connection *ev)
{
	struct net_incoming *in = arg;
	struct inc_delivery *d = malloc(sizeof(*d));
	if (!d)
		return;
	*d = (struct inc_delivery){.in = in, .ev = *ev};
	bool start = false, say = false;
	unsigned long refused = 0;
	uint16_t port = 0;
	pthread_mutex_lock(&in->lock);
	if (in->stopping) {
		/* dropped below */
	} else if (in->threads < INCOMING_THREADS_MAX) {
		in->threads++;
		start = true;
	} else if (in->n_waiting < INCOMING_WAITING_MAX) {
		if (in->waiting_tail)
			in->waiting_tail->next = d;
		else
			in->waiting = d;
		in->waiting_tail = d;
		in->n_waiting++;
		d = NULL;
	} else {
		say = refuse(in, ev->subscription, &refused, &port);
	}
	pthread_mutex_unlock(&in->lock);
	if (say)
		hm_warn("incoming: %lu connection(s) to port %u refused: %d are being delivered "
			"to the program and %d wait already (a flood from the pod's side?); the "
			"agent closes them",
			refused, port, INCOMING_THREADS_MAX, INCOMING_WAITING_MAX);
	if (!start) {
		free(d);
		return;
	}
	struct hm_err err = {0};
	int r = trace_net_thread_start(deliver_main, d, &err);
	if (r != 0) {
		hm_warn("incoming connection: %s", strerror(err.code));
		free(d);
		pthread_mutex_lock(&in->lock);
		in->failed++;
		if (--in->threads == 0)
			pthread_cond_broadcast(&in->threads_done);
		pthread_mutex_unlock(&in->lock);
	}
}
