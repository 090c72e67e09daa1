/* The target's incoming traffic, delivered to the program's own listening sockets
 * (feature.network.incoming, docs/config.md).
 *
 *  - bind: a TCP socket of the program that binds a port to be subscribed is bound by
 *    trace-run (on a pidfd_getfd duplicate). When the port is taken on this machine it
 *    gets a free one instead, and getsockname still shows the asked port.
 *  - listen: the port (port_mapping applied) is subscribed in the chosen mode. A steal
 *    the agent refuses ends the run when on_concurrent_steal is abort.
 *  - Each delivered connection (INCOMING_CONNECTION) goes to a delivery thread (at most
 *    INCOMING_THREADS_MAX, the others wait, a flood beyond is refused): it opens
 *    the connection's stream and connects a loopback socket to the program's real
 *    listener. steal: the splice relay joins the two. mirror: INCOMING_DATA frames are
 *    written to the program, INCOMING_END 0 is a FIN and an error a reset; what the
 *    program answers is read and dropped.
 *  - accept/accept4 on a subscribed listener are done by trace-run on a duplicate
 *    (deferred while a blocking listener has nothing to accept), so that the address
 *    the program gets, and later getpeername, is the original client's. The loopback
 *    socket's source port is remembered with the client it stands for, for sockets
 *    accepted some other way.
 *  - A listener the program closed is noticed with sock_diag and unsubscribed.
 * Here: the state, bind, listen, liveness and setup; the delivered connections are in
 * net_incoming_deliver.c, accept in net_incoming_accept.c. */
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tracer/redirect/net_internal.h"

#define CHECK_EVERY_MS 300   /* liveness of the listeners */
#define CONN_FORGET_MS 60000 /* a delivered connection nobody accepted */

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

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

struct inc_listener *trace_incoming_listener_by_ino(struct net_incoming *in, ino_t ino)
{
	for (struct inc_listener *l = in->listeners; l; l = l->next)
		if (l->ino == ino)
			return l;
	return NULL;
}

struct inc_listener *trace_incoming_listener_by_sub(struct net_incoming *in, uint32_t sub)
{
	for (struct inc_listener *l = in->listeners; l && sub; l = l->next)
		if (l->sub == sub)
			return l;
	return NULL;
}

/* Another listener still uses the subscription (SO_REUSEPORT sockets share one). */
static bool sub_in_use(struct net_incoming *in, uint32_t sub)
{
	return trace_incoming_listener_by_sub(in, sub) != NULL;
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
void trace_incoming_listener_target(const struct net_state *st, const struct inc_listener *l,
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

struct inc_conn *trace_incoming_conn_take(struct net_incoming *in, uint16_t port)
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

void trace_incoming_conn_free(struct inc_conn *c)
{
	if (c && c->pod_socket >= 0)
		close(c->pod_socket);
	free(c);
}

static struct inc_conn *conn_find(struct net_incoming *in, uint16_t port)
{
	for (struct inc_conn *c = in->conns; c; c = c->next)
		if (c->port == port)
			return c;
	return NULL;
}

int trace_incoming_getfd(const struct tracer_call *call)
{
	struct hm_err err = {0};
	return trace_net_getfd(call, (int)call->args[0], &err);
}

bool trace_net_addr_is_loopback(const struct net_addr *a)
{
	uint8_t key[16];
	uint16_t port;
	trace_net_addr_key(a, key, &port);
	static const uint8_t lo6[16] = {[15] = 1};
	return key[12] == 127 || !memcmp(key, lo6, 16);
}

/* ================================================================ housekeeping */

static bool listener_alive(struct net_incoming *in, const struct inc_listener *l)
{
	struct net_sock probe = {.ino = l->ino, .type = SOCK_STREAM, .family = l->family};
	trace_incoming_listener_target(in->st, l, &probe.prog);
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
			trace_incoming_conn_free(c);
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&in->lock);
	for (size_t i = 0; i < n; i++) {
		if (listener_alive(in, &check[i].copy))
			continue;
		pthread_mutex_lock(&in->lock);
		struct inc_listener *l = trace_incoming_listener_by_ino(in, check[i].ino);
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
	trace_incoming_listener_target(st, l, &ns->prog);
	ns->diag_peer.ss.ss_family = ns->prog.ss.ss_family;
	ns->diag_peer.len = ns->prog.len;
	ns->delivered = true;
	ns->last_ms = hm_now_ms();
	trace_net_table_put(st, ns);
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
	struct inc_listener *known = trace_incoming_listener_by_ino(in, sb.st_ino);
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
	struct inc_listener *old = trace_incoming_listener_by_ino(in, l->ino);
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
	struct inc_listener *l = trace_incoming_listener_by_ino(in, job->ino);
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
			hm_print_line(stderr,
				      "trace-run: port %u of %s is %s the program (port %u)%s%s",
				      sj->port, target, mode_to(sj->mode), local_port,
				      sj->note[0] ? ": " : "", sj->note);
		return tracer_return(0);
	}
	if (job->err.code == EADDRINUSE && sj->mode == PROTO_INCOMING_STEAL &&
	    in->cfg->feature.network.incoming.on_concurrent_steal == POLICY_CONCURRENT_ABORT) {
		/* mirrord's abort: the run ends rather than serving half the traffic */
		hm_print_line(stderr,
			      "trace-run: cannot steal port %u of %s: %s (on_concurrent_steal is "
			      "abort: ending the program)",
			      sj->port, target, agent_words(&job->err));
		st->s->abort_exit = TRACER_EXIT_FAILURE;
		tracer_terminate(st->s->tracer, SIGKILL);
		return tracer_error(EADDRINUSE);
	}
	/* the program still listens locally; it just gets nothing from the target */
	hm_print_line(stderr, "trace-run: port %u of %s is not %s: %s", sj->port, target,
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
	struct inc_listener *l = ino ? trace_incoming_listener_by_ino(in, ino) : NULL;
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
	int dup = trace_incoming_getfd(call);
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
		if (cfg->fd_handoff == POLICY_TRI_FALSE)
			sj.flags |= PROTO_INCOMING_RELAY;
		/* its IPv4 clients come as IPv6 sockets, as its own accept would give them */
		int v6only = 1;
		socklen_t ol = sizeof(v6only);
		if (trace_net_socket_family(dup) == AF_INET6 &&
		    getsockopt(dup, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &ol) == 0 && !v6only)
			sj.flags |= PROTO_INCOMING_DUAL_STACK;
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
	l = trace_incoming_listener_by_ino(in, ino);
	if (l)
		l->pending = true;
	pthread_mutex_unlock(&in->lock);
	return trace_net_job_defer(job);
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
	    !trace_net_addr_is_loopback(&kernel_peer))
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
	client_incoming_set_handler(st->s->client, trace_incoming_on_connection, in);
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
	    tracer_set_handler(t, SYS_accept, trace_incoming_accept, st, err) < 0 ||
	    tracer_set_handler(t, SYS_accept4, trace_incoming_accept, st, err) < 0)
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
	in->failed += trace_incoming_waiting_drop(in);
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
		trace_incoming_conn_free(c);
	}
	hm_info("incoming: %lu connections delivered to the program, %lu could not be",
		in->delivered, in->failed);
	if (in->refused)
		hm_warn("incoming: %lu connection(s) refused in all: more came at once than "
			"trace-run delivers (%d) and holds waiting (%d)",
			in->refused, INCOMING_THREADS_MAX, INCOMING_WAITING_MAX);
	if (in->diag_fd >= 0)
		close(in->diag_fd);
	if (in->wake_fd >= 0)
		close(in->wake_fd);
	pthread_cond_destroy(&in->threads_done);
	pthread_mutex_destroy(&in->lock);
	free(in);
	st->incoming = NULL;
}
