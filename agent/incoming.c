/* Incoming connections of a target: the registry of subscriptions by (netns, port),
 * shared by the sessions of every target in that netns, and stealing.
 *
 * Locking: one registry mutex guards every port's list of subscriptions and its steal
 * and mirror state. Nothing that blocks on another thread of the registry runs under
 * it: stopping a port's steal (joining its accept thread, which takes the lock) and
 * the mirror engine's port_last run after it is released. Events are sent without it
 * too (a stalled client must not hold up the other ports): the accept thread takes a
 * reference to the subscription (and through it the session) under the lock, and
 * sends after.
 *
 * Stealing one port: the agent's listener in the target's netns, the sk_lookup
 * program's link (loader/steal.c) and one accept thread. Who gets a connection: the
 * port's subscriptions in arrival order; if the first steal subscription has no
 * filter, it alone (the holder); otherwise every filtered one up to the first
 * unfiltered, through the HTTP router. The others wait (PROTO_INCOMING_CONCURRENT:
 * they take over, in order, when the holder goes); without that flag a subscribe that
 * would wait is refused with EADDRINUSE naming the holder. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "agent/internal.h"
#include "loader/loader.h"

#define STEAL_BACKLOG 4096
#define BYPASS_TIMEOUT_MS 10000

struct agent_incoming_sub {
	struct agent_incoming_sub *next; /* the port's list, in arrival order */
	struct agent_incoming_port *port;
	struct agent_incoming_session *sess; /* held (sess->hold) until the sub is freed */
	uint32_t id;
	uint8_t mode;
	uint32_t flags;
	void *filter; /* the router's compiled http_filter; NULL: none */
	bool active;  /* STEAL: gets connections now */
	atomic_uint refs;
};

/* A port being stolen. Owned by its port; stopped outside the registry lock. */
struct steal_engine {
	struct agent_incoming_port *port; /* a reference */
	/* IPv4 (an IPv6 socket bound to ::ffff:127.0.0.1 for a dual-stack program), IPv6
	 * (-1: none, e.g. IPv6 disabled in the pod) */
	int listen_fd[2];
	int stop_efd;
	struct hm_steal *bpf;
	pthread_t thread;
	bool thread_started;
};

struct agent_incoming_port {
	struct agent_incoming_port *next; /* registry list (while it has subscriptions) */
	struct agent_incoming *reg;
	uint64_t netns_ino;
	int netns_fd;
	uint16_t port;
	struct agent_target *target; /* the first subscriber's: makes sockets in the netns */
	char name[PROTO_NAME_MAX];   /* "port 80 of pod/web" for messages */
	struct agent_incoming_sub *subs;
	unsigned nmirror, nsteal;
	struct steal_engine *steal;
	uint64_t steal_gen; /* changes with each steal engine: bypass entries belong to one */
	void *mirror_state;
	atomic_uint refs;
	atomic_uint routed; /* connections in the HTTP router */
};

struct agent_incoming {
	pthread_mutex_t lock;
	struct agent_incoming_port *ports;
	struct agent_streams *streams;
	struct agent_incoming_counters counters;
	atomic_uint_fast32_t next_sub_id;
	unsigned nsubs;
	const struct agent_incoming_mirror_ops *mirror;
	void *mirror_engine;
	const struct agent_http_router_ops *router;
	void *router_ctx;
	/* runs the work of confined session threads (see run_unconfined) */
	pthread_t runner;
	bool runner_started, runner_stop;
	pthread_mutex_t runner_lock;
	pthread_cond_t runner_cond;
	struct unconfined_job *jobs;
};

/* ---- the unconfined runner ----
 * A pid/N session of a non-root peer runs on a thread without capabilities
 * (agent_peer_confine_thread), and threads it starts inherit that. Loading BPF, the
 * netns ioctls and the mirror engine's tc work need the agent's own: the session hands
 * that work to this thread, started with the registry by the unconfined main thread,
 * and waits. What the work may do is decided by check_confined, not by the thread. */
struct unconfined_job {
	struct unconfined_job *next;
	void (*fn)(void *arg);
	void *arg;
	bool done;
};

static void *runner_main(void *arg)
{
	struct agent_incoming *reg = arg;
	pthread_mutex_lock(&reg->runner_lock);
	for (;;) {
		while (!reg->jobs && !reg->runner_stop)
			pthread_cond_wait(&reg->runner_cond, &reg->runner_lock);
		if (!reg->jobs)
			break;
		struct unconfined_job *job = reg->jobs;
		reg->jobs = job->next;
		pthread_mutex_unlock(&reg->runner_lock);
		job->fn(job->arg);
		pthread_mutex_lock(&reg->runner_lock);
		job->done = true;
		pthread_cond_broadcast(&reg->runner_cond);
	}
	pthread_mutex_unlock(&reg->runner_lock);
	return NULL;
}

static void run_unconfined(struct agent_incoming *reg, void (*fn)(void *), void *arg)
{
	if (!agent_thread_confined() || !reg->runner_started) {
		fn(arg);
		return;
	}
	struct unconfined_job job = {.fn = fn, .arg = arg};
	pthread_mutex_lock(&reg->runner_lock);
	struct unconfined_job **tail = &reg->jobs;
	while (*tail)
		tail = &(*tail)->next;
	*tail = &job;
	pthread_cond_broadcast(&reg->runner_cond);
	while (!job.done)
		pthread_cond_wait(&reg->runner_cond, &reg->runner_lock);
	pthread_mutex_unlock(&reg->runner_lock);
}

int agent_incoming_create(struct agent_streams *streams, struct agent_incoming **out,
			  struct hm_err *err)
{
	struct agent_incoming *reg = calloc(1, sizeof(*reg));
	if (!reg)
		return hm_err_set(err, ENOMEM, "incoming registry");
	pthread_mutex_init(&reg->lock, NULL);
	pthread_mutex_init(&reg->runner_lock, NULL);
	pthread_cond_init(&reg->runner_cond, NULL);
	reg->streams = streams;
	atomic_init(&reg->next_sub_id, 1);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&reg->runner, NULL, runner_main, reg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		agent_incoming_destroy(reg);
		return hm_err_set(err, rc, "start the incoming runner");
	}
	reg->runner_started = true;
	*out = reg;
	return 0;
}

void agent_incoming_destroy(struct agent_incoming *reg)
{
	if (!reg)
		return;
	if (reg->ports)
		hm_warn("incoming: destroyed with subscriptions left");
	if (reg->runner_started) {
		pthread_mutex_lock(&reg->runner_lock);
		reg->runner_stop = true;
		pthread_cond_broadcast(&reg->runner_cond);
		pthread_mutex_unlock(&reg->runner_lock);
		pthread_join(reg->runner, NULL);
	}
	pthread_mutex_destroy(&reg->runner_lock);
	pthread_cond_destroy(&reg->runner_cond);
	pthread_mutex_destroy(&reg->lock);
	free(reg);
}

void agent_incoming_set_mirror(struct agent_incoming *reg,
			       const struct agent_incoming_mirror_ops *ops, void *engine)
{
	pthread_mutex_lock(&reg->lock);
	reg->mirror = ops;
	reg->mirror_engine = engine;
	pthread_mutex_unlock(&reg->lock);
}

void agent_incoming_set_http_router(struct agent_incoming *reg,
				    const struct agent_http_router_ops *ops, void *router)
{
	pthread_mutex_lock(&reg->lock);
	reg->router = ops;
	reg->router_ctx = router;
	pthread_mutex_unlock(&reg->lock);
}

struct agent_incoming_counters *agent_incoming_counters(struct agent_incoming *reg)
{
	return &reg->counters;
}

void agent_incoming_status(struct agent_incoming *reg, struct proto_status_reply *out)
{
	pthread_mutex_lock(&reg->lock);
	out->subscriptions = reg->nsubs;
	pthread_mutex_unlock(&reg->lock);
	out->has_incoming = true;
	out->mirrored = atomic_load(&reg->counters.mirrored);
	out->mirror_lost = atomic_load(&reg->counters.mirror_lost);
	out->mirror_bytes = atomic_load(&reg->counters.mirror_bytes);
	out->stolen = atomic_load(&reg->counters.stolen);
	out->passed_to_target = atomic_load(&reg->counters.passed_to_target);
}

/* ---- ports and subscriptions: references ---- */

struct agent_incoming_port *agent_incoming_port_get(struct agent_incoming_port *p)
{
	atomic_fetch_add(&p->refs, 1);
	return p;
}

void agent_incoming_port_put(struct agent_incoming_port *p)
{
	if (!p || atomic_fetch_sub(&p->refs, 1) != 1)
		return;
	if (p->netns_fd >= 0)
		close(p->netns_fd);
	agent_target_put(p->target);
	free(p);
}

uint16_t agent_incoming_port_number(const struct agent_incoming_port *p)
{
	return p->port;
}

uint64_t agent_incoming_port_netns_ino(const struct agent_incoming_port *p)
{
	return p->netns_ino;
}

int agent_incoming_port_netns_fd(const struct agent_incoming_port *p)
{
	return p->netns_fd;
}

struct agent_target *agent_incoming_port_target(const struct agent_incoming_port *p)
{
	return p->target;
}

struct agent_incoming_counters *agent_incoming_port_counters(struct agent_incoming_port *p)
{
	return &p->reg->counters;
}

bool agent_incoming_port_route_begin(struct agent_incoming_port *p, unsigned max)
{
	if (atomic_fetch_add(&p->routed, 1) < max)
		return true;
	atomic_fetch_sub(&p->routed, 1);
	return false;
}

void agent_incoming_port_route_end(struct agent_incoming_port *p)
{
	atomic_fetch_sub(&p->routed, 1);
}

static struct agent_incoming_sub *sub_get(struct agent_incoming_sub *sub)
{
	atomic_fetch_add(&sub->refs, 1);
	return sub;
}

void agent_incoming_sub_put(struct agent_incoming_sub *sub)
{
	if (!sub || atomic_fetch_sub(&sub->refs, 1) != 1)
		return;
	struct agent_incoming *reg = sub->port->reg;
	if (sub->filter && reg->router)
		reg->router->filter_free(reg->router_ctx, sub->filter);
	sub->sess->release(sub->sess->conn);
	agent_incoming_port_put(sub->port);
	free(sub);
}

uint32_t agent_incoming_sub_id(const struct agent_incoming_sub *sub)
{
	return sub->id;
}

uint64_t agent_incoming_sub_session_id(const struct agent_incoming_sub *sub)
{
	return sub->sess->id;
}

void *agent_incoming_sub_filter(const struct agent_incoming_sub *sub)
{
	return sub->filter;
}

/* Which steal subscriptions get connections now (see the file comment). Lock held. */
static void steal_recompute_active(struct agent_incoming_port *p)
{
	bool seen_steal = false, closed = false;
	for (struct agent_incoming_sub *s = p->subs; s; s = s->next) {
		if (s->mode != PROTO_INCOMING_STEAL)
			continue;
		if (!seen_steal) {
			seen_steal = true;
			s->active = true;
			closed = !s->filter; /* an unfiltered holder takes it all */
			continue;
		}
		if (closed || !s->filter)
			closed = true;
		s->active = !closed;
	}
}

size_t agent_incoming_port_subs(struct agent_incoming_port *p, uint8_t mode,
				struct agent_incoming_sub **out, size_t max)
{
	size_t n = 0;
	pthread_mutex_lock(&p->reg->lock);
	for (struct agent_incoming_sub *s = p->subs; s && n < max; s = s->next)
		if (s->mode == mode && (mode != PROTO_INCOMING_STEAL || s->active))
			out[n++] = sub_get(s);
	pthread_mutex_unlock(&p->reg->lock);
	return n;
}

/* ---- announcing connections ---- */

/* Accepted sockets of a dual-stack listener show IPv4 peers as ::ffff:a.b.c.d: the
 * client wants the address as the pod's server would have seen it. */
static int sockaddr_to_proto(struct sockaddr_storage *ss, socklen_t len, struct proto_addr *out,
			     struct hm_err *err)
{
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
		struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6->sin6_port};
		memcpy(&in.sin_addr, &in6->sin6_addr.s6_addr[12], 4);
		return proto_addr_from_sockaddr((struct sockaddr *)&in, sizeof(in), out, err);
	}
	return proto_addr_from_sockaddr((struct sockaddr *)ss, len, out, err);
}

static int send_connection_event(struct agent_incoming_sub *sub,
				 const uint8_t token[PROTO_TOKEN_LEN],
				 const struct proto_addr *client, const struct proto_addr *server,
				 struct hm_err *err)
{
	struct proto_msg m = {.type = PROTO_INCOMING_CONNECTION};
	m.incoming_connection.subscription = sub->id;
	memcpy(m.incoming_connection.token, token, PROTO_TOKEN_LEN);
	m.incoming_connection.client = *client;
	m.incoming_connection.server = *server;
	if (sub->sess->send(sub->sess->conn, &m) < 0)
		return hm_err_set(err, ENOTCONN, "session %llu ended",
				  (unsigned long long)sub->sess->id);
	return 0;
}

/* The event could not be sent: take the parked object back unless the session's end
 * took it first (then it was closed, or its claimed(-1) called, there). */
static void unpark(struct agent_incoming_sub *sub, const uint8_t token[PROTO_TOKEN_LEN])
{
	struct agent_pending_stream ps;
	if (agent_streams_claim(sub->port->reg->streams, token, &ps) < 0)
		return;
	if (ps.fd >= 0)
		close(ps.fd);
	if (ps.claimed)
		ps.claimed(ps.claimed_ctx, -1, NULL);
	agent_budget_stream_closed(ps.account);
}

int agent_incoming_offer(struct agent_incoming_sub *sub, const struct proto_addr *client,
			 const struct proto_addr *server, agent_stream_claimed_fn claimed,
			 void *ctx, struct hm_err *err)
{
	uint8_t token[PROTO_TOKEN_LEN];
	struct agent_incoming_session *s = sub->sess;
	if (agent_streams_add_handoff(sub->port->reg->streams, s->id, s->account, claimed, ctx,
				      token, err) < 0) {
		claimed(ctx, -1, NULL);
		return -1;
	}
	if (send_connection_event(sub, token, client, server, err) < 0) {
		unpark(sub, token);
		return -1;
	}
	return 0;
}

int agent_incoming_offer_fd(struct agent_incoming_sub *sub, int fd, const struct proto_addr *client,
			    const struct proto_addr *server, struct hm_err *err)
{
	uint8_t token[PROTO_TOKEN_LEN];
	struct agent_incoming_session *s = sub->sess;
	/* to the session's own unix peer, the socket itself (no relay); otherwise relayed */
	int64_t pass_uid = (sub->flags & PROTO_INCOMING_RELAY) ? -1 : s->pass_uid;
	if (agent_streams_add_tcp(sub->port->reg->streams, s->id, s->account, fd, pass_uid, token,
				  err) < 0)
		return -1;
	if (send_connection_event(sub, token, client, server, err) < 0) {
		unpark(sub, token);
		return -1;
	}
	return 0;
}

/* ---- stealing: the accept thread ---- */

/* One accepted connection: to the holder, or to the router. */
static void steal_dispatch(struct agent_incoming_port *p, int fd)
{
	hm_cleanup_close int cfd = fd;
	struct hm_err err = {0};
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct proto_addr client, server;
	if (getpeername(cfd, (struct sockaddr *)&ss, &sl) < 0 ||
	    sockaddr_to_proto(&ss, sl, &client, &err) < 0)
		return; /* reset already: nothing to announce */
	sl = sizeof(ss);
	if (getsockname(cfd, (struct sockaddr *)&ss, &sl) < 0 ||
	    sockaddr_to_proto(&ss, sl, &server, &err) < 0)
		return;
	struct agent_incoming *reg = p->reg;
	struct agent_incoming_sub *holder = NULL;
	bool routed = false;
	pthread_mutex_lock(&reg->lock);
	for (struct agent_incoming_sub *s = p->subs; s; s = s->next) {
		if (s->mode == PROTO_INCOMING_STEAL && s->active) {
			if (s->filter)
				routed = true;
			else
				holder = sub_get(s);
			break;
		}
	}
	const struct agent_http_router_ops *router = reg->router;
	void *router_ctx = reg->router_ctx;
	pthread_mutex_unlock(&reg->lock);
	char from[80];
	proto_addr_str(&client, from, sizeof(from));
	if (routed && router) {
		/* the HTTP router's call point: it owns the connection from here on */
		router->connection(router_ctx, agent_incoming_port_get(p), hm_steal_fd(&cfd),
				   &client, &server);
		return;
	}
	if (!holder)
		return; /* the last subscription just went: closing makes the client retry */
	if (agent_incoming_offer_fd(holder, hm_steal_fd(&cfd), &client, &server, &err) < 0) {
		hm_debug("incoming: %s: connection from %s not delivered: %s", p->name, from,
			 err.msg);
	} else {
		atomic_fetch_add(&reg->counters.stolen, 1);
		hm_debug("incoming: %s: connection from %s to session %llu", p->name, from,
			 (unsigned long long)holder->sess->id);
	}
	agent_incoming_sub_put(holder);
}

static void *steal_main(void *arg)
{
	struct steal_engine *e = arg;
	for (;;) {
		struct pollfd pf[3] = {{.fd = e->stop_efd, .events = POLLIN},
				       {.fd = e->listen_fd[0], .events = POLLIN},
				       {.fd = e->listen_fd[1], .events = POLLIN}};
		if (poll(pf, 3, -1) < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			break;
		for (int i = 1; i < 3; i++) {
			if (!pf[i].revents)
				continue;
			int lfd = e->listen_fd[i - 1];
			int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (fd >= 0)
				steal_dispatch(e->port, fd);
			else if (errno == EMFILE || errno == ENFILE)
				agent_fd_spare_shed(lfd);
			else if (errno == ENOBUFS || errno == ENOMEM)
				poll(NULL, 0, 100); /* the backlog stays readable: do not spin */
		}
	}
	return NULL;
}

/* A listener of one family on the target's loopback and an ephemeral port: only the
 * steal program sends it connections (an IPv6 socket bound to ::1 is v6-only, hence
 * one per family). v4_mapped: an IPv6 socket for IPv4 connections (bound to
 * ::ffff:127.0.0.1), whose accepted sockets are what a dual-stack listener's are. */
static int steal_listener(struct agent_target *t, int family, bool v4_mapped, struct hm_err *err)
{
	hm_cleanup_close int fd = agent_target_socket(t, family, SOCK_STREAM, 0, err);
	if (fd < 0)
		return -1;
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		if (v4_mapped)
			inet_pton(AF_INET6, "::ffff:127.0.0.1", &a->sin6_addr);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, STEAL_BACKLOG) < 0)
		return hm_err_errno(err, "IPv%c listener in the target's network namespace",
				    family == AF_INET6 ? '6' : '4');
	return hm_steal_fd(&fd);
}

static void steal_stop(struct steal_engine *e)
{
	if (!e)
		return;
	/* the program goes first, so no new connection is handed to a closing listener */
	hm_steal_destroy(e->bpf);
	if (e->thread_started) {
		uint64_t one = 1;
		if (write(e->stop_efd, &one, sizeof(one)) < 0)
			hm_warn("incoming: wake the accept thread: %s", strerror(errno));
		pthread_join(e->thread, NULL);
	}
	if (e->thread_started)
		hm_info("incoming: %s is not stolen any more", e->port->name);
	for (int i = 0; i < 2; i++)
		if (e->listen_fd[i] >= 0)
			close(e->listen_fd[i]);
	if (e->stop_efd >= 0)
		close(e->stop_efd);
	agent_incoming_port_put(e->port);
	free(e);
}

static int steal_start(struct agent_incoming_port *p, bool dual_stack, struct hm_err *err)
{
	struct steal_engine *e = calloc(1, sizeof(*e));
	if (!e)
		return hm_err_set(err, ENOMEM, "steal");
	e->port = agent_incoming_port_get(p);
	e->listen_fd[0] = e->listen_fd[1] = -1;
	e->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->stop_efd < 0) {
		hm_err_errno(err, "eventfd");
		goto fail;
	}
	struct hm_err v6err = {0};
	if (dual_stack) {
		e->listen_fd[0] = steal_listener(p->target, AF_INET6, true, &v6err);
		if (e->listen_fd[0] < 0) /* IPv6 off in the pod: plain IPv4 sockets then */
			hm_info("incoming: %s: IPv4 connections as IPv4 sockets: %s", p->name,
				v6err.msg);
	}
	if (e->listen_fd[0] < 0)
		e->listen_fd[0] = steal_listener(p->target, AF_INET, false, err);
	if (e->listen_fd[0] < 0)
		goto fail;
	e->listen_fd[1] = steal_listener(p->target, AF_INET6, false, &v6err);
	if (e->listen_fd[1] < 0) /* IPv6 off in the pod: nobody connects over it */
		hm_info("incoming: %s: IPv4 only: %s", p->name, v6err.msg);
	if (hm_steal_attach(p->netns_fd, p->port, e->listen_fd[0], e->listen_fd[1], &e->bpf, err) <
	    0)
		goto fail;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&e->thread, NULL, steal_main, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		hm_err_set(err, rc, "start the accept thread");
		goto fail;
	}
	e->thread_started = true;
	p->steal = e;
	p->steal_gen++;
	hm_info("incoming: stealing %s (sk_lookup program id %u)", p->name,
		hm_steal_prog_id(e->bpf));
	return 0;
fail:
	hm_err_prefix(err, "steal %s", p->name);
	steal_stop(e);
	return -1;
}

int agent_incoming_bypass_connect(struct agent_incoming_port *p, const struct proto_addr *server,
				  uint32_t timeout_ms, struct hm_err *err)
{
	int domain = server->family == PROTO_AF_INET6 ? AF_INET6 : AF_INET;
	hm_cleanup_close int fd =
	    agent_target_socket(p->target, domain, SOCK_STREAM | SOCK_NONBLOCK, 0, err);
	if (fd < 0)
		return -1;
	/* the source port must be known before the SYN: bind it first */
	struct sockaddr_storage any = {.ss_family = (sa_family_t)domain};
	socklen_t sl =
	    domain == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	struct sockaddr_storage local;
	socklen_t ll = sizeof(local);
	if (bind(fd, (struct sockaddr *)&any, sl) < 0 ||
	    getsockname(fd, (struct sockaddr *)&local, &ll) < 0)
		return hm_err_errno(err, "%s: bypass socket", p->name);
	uint16_t src = ntohs(((struct sockaddr_in *)&local)->sin_port); /* same offset in v6 */
	struct agent_incoming *reg = p->reg;
	pthread_mutex_lock(&reg->lock);
	struct steal_engine *e = p->steal;
	uint64_t gen = p->steal_gen;
	int rc = e ? hm_steal_bypass(e->bpf, src, true, err) : 0;
	pthread_mutex_unlock(&reg->lock);
	if (rc < 0)
		return -1;
	struct sockaddr_storage dst;
	socklen_t dl = proto_addr_to_sockaddr(server, &dst);
	int outcome = connect(fd, (struct sockaddr *)&dst, dl) == 0 ? 0 : errno;
	if (outcome == EINPROGRESS) {
		int64_t until = hm_deadline_in(timeout_ms ? (int)timeout_ms : BYPASS_TIMEOUT_MS);
		int r = hm_poll_fd(fd, POLLOUT, until);
		socklen_t len = sizeof(outcome);
		if (r <= 0)
			outcome = ETIMEDOUT;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &outcome, &len) < 0)
			outcome = errno;
	}
	/* established (or failed): its SYN was the only packet looked up */
	pthread_mutex_lock(&reg->lock);
	if (e && p->steal == e && p->steal_gen == gen)
		hm_steal_bypass(e->bpf, src, false, NULL);
	pthread_mutex_unlock(&reg->lock);
	if (outcome) {
		char to[80];
		return hm_err_set(err, outcome, "%s: connect to the target's server %s", p->name,
				  proto_addr_str(server, to, sizeof(to)));
	}
	return hm_steal_fd(&fd);
}

/* ---- subscribe / unsubscribe ---- */

/* The netns of t (from a socket made there, so no pid is read twice) and its inode. */
static int target_netns(struct agent_target *t, uint64_t *ino, struct hm_err *err)
{
	hm_cleanup_close int sock = agent_target_socket(t, AF_UNIX, SOCK_DGRAM, 0, err);
	if (sock < 0)
		return -1;
	hm_cleanup_close int ns = ioctl(sock, SIOCGSKNS);
	struct stat st;
	if (ns < 0 || fstat(ns, &st) < 0)
		return hm_err_errno(err, "network namespace of %s", agent_target_describe(t));
	*ino = (uint64_t)st.st_ino;
	return hm_steal_fd(&ns);
}

/* pid/N sessions of a non-root peer: the port's whole netns is at stake, so only one
 * the peer's own user namespace owns (`unshare -rn`), where the peer could take the
 * port itself. */
static int check_confined(struct agent_incoming_session *s, int netns_fd, uint16_t port,
			  struct hm_err *err)
{
	if (!s->confined)
		return 0;
	hm_cleanup_close int userns = ioctl(netns_fd, NS_GET_USERNS);
	uid_t owner = (uid_t)-1;
	if (userns >= 0 && ioctl(userns, NS_GET_OWNER_UID, &owner) < 0)
		owner = (uid_t)-1;
	if (owner == s->uid)
		return 0;
	return hm_err_plain(err, EPERM,
			    "port %u of %s: a pid/N session of uid %u may subscribe to "
			    "incoming traffic only in a network namespace its own user "
			    "namespace owns (this one belongs to uid %d): the port is shared "
			    "by every process in it",
			    port, agent_target_describe(s->target), (unsigned)s->uid,
			    owner == (uid_t)-1 ? -1 : (int)owner);
}

static struct agent_incoming_port *port_find(struct agent_incoming *reg, uint64_t ino,
					     uint16_t port)
{
	for (struct agent_incoming_port *p = reg->ports; p; p = p->next)
		if (p->netns_ino == ino && p->port == port)
			return p;
	return NULL;
}

static struct agent_incoming_port *port_new(struct agent_incoming *reg,
					    struct agent_incoming_session *s, uint64_t ino,
					    int *netns_fd, uint16_t port)
{
	struct agent_incoming_port *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	atomic_init(&p->refs, 1); /* the registry's */
	p->reg = reg;
	p->netns_ino = ino;
	p->netns_fd = hm_steal_fd(netns_fd);
	p->port = port;
	p->target = s->target;
	agent_target_get(s->target);
	snprintf(p->name, sizeof(p->name), "port %u of %.200s", port,
		 agent_target_describe(s->target));
	p->next = reg->ports;
	reg->ports = p;
	return p;
}

/* The port has no subscription left: out of the registry (lock held). */
static void port_unlink(struct agent_incoming *reg, struct agent_incoming_port *p)
{
	for (struct agent_incoming_port **pp = &reg->ports; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			return;
		}
	}
}

static const struct agent_incoming_sub *steal_holder(const struct agent_incoming_port *p)
{
	for (const struct agent_incoming_sub *s = p->subs; s; s = s->next)
		if (s->mode == PROTO_INCOMING_STEAL && s->active)
			return s;
	return NULL;
}

/* Who holds the port, for a refusal or a note. */
static void describe_holders(const struct agent_incoming_port *p, char *buf, size_t len)
{
	const struct agent_incoming_sub *h = steal_holder(p);
	if (!h) {
		snprintf(buf, len, "nobody");
		return;
	}
	snprintf(buf, len, "%s%s", h->sess->who,
		 h->filter ? " and maybe other sessions with HTTP filters" : "");
}

/* What happens to what a subscription held once it left the port's list (lock held):
 * returned for the caller to run after unlocking. */
struct released {
	struct steal_engine *steal;
	void *mirror_state;
	bool mirror_last;
	struct agent_incoming_port *port; /* a reference while anything above is set */
	const struct agent_incoming_mirror_ops *mirror; /* reg's, taken under its lock */
	void *mirror_engine;
};

static void sub_unlink(struct agent_incoming *reg, struct agent_incoming_sub *sub,
		       struct released *out)
{
	struct agent_incoming_port *p = sub->port;
	for (struct agent_incoming_sub **pp = &p->subs; *pp; pp = &(*pp)->next) {
		if (*pp == sub) {
			*pp = sub->next;
			break;
		}
	}
	reg->nsubs--;
	*out = (struct released){0};
	if (sub->mode == PROTO_INCOMING_MIRROR && --p->nmirror == 0) {
		out->mirror_last = true;
		out->mirror_state = p->mirror_state;
		p->mirror_state = NULL;
	}
	if (sub->mode == PROTO_INCOMING_STEAL) {
		steal_recompute_active(p);
		if (--p->nsteal == 0) {
			out->steal = p->steal;
			p->steal = NULL;
		}
	}
	if (out->mirror_last || out->steal)
		out->port = agent_incoming_port_get(p);
	if (!p->subs) {
		port_unlink(reg, p);
		agent_incoming_port_put(p); /* the registry's reference */
	}
}

static void released_run(const struct released *r)
{
	steal_stop(r->steal);
	if (r->mirror_last && r->mirror)
		r->mirror->port_last(r->mirror_engine, r->port, r->mirror_state);
	agent_incoming_port_put(r->port);
}

/* Network namespaces mirrored (by peer's sessions; NULL: anyone's), counted up to
 * max + 1, and whether ino is one of them (lock held). */
static unsigned mirrored_netns(struct agent_incoming *reg, const char *peer, uint64_t ino,
			       unsigned max, bool *has_ino)
{
	uint64_t seen[AGENT_MIRROR_NETNS_MAX + 1];
	unsigned n = 0;
	*has_ino = false;
	for (struct agent_incoming_port *p = reg->ports; p; p = p->next) {
		bool counts = false;
		for (struct agent_incoming_sub *sub = p->subs; sub && !counts; sub = sub->next)
			counts = sub->mode == PROTO_INCOMING_MIRROR &&
				 (!peer || !strcmp(sub->sess->peer_key, peer));
		unsigned i = 0;
		while (counts && i < n && seen[i] != p->netns_ino)
			i++;
		if (counts && i == n && n <= max)
			seen[n++] = p->netns_ino;
		*has_ino |= counts && p->netns_ino == ino;
	}
	return n;
}

/* Whether s may hold one more subscription of this mode in netns ino: of its own, of
 * its peer's sessions, and of the agent's (lock held). */
static int check_limits(struct agent_incoming *reg, const struct agent_incoming_session *s,
			uint8_t mode, uint64_t ino, struct hm_err *err)
{
	unsigned of_session = 0, of_peer = 0;
	for (struct agent_incoming_port *p = reg->ports; p; p = p->next) {
		for (struct agent_incoming_sub *sub = p->subs; sub; sub = sub->next) {
			of_session += sub->sess == s;
			of_peer += !strcmp(sub->sess->peer_key, s->peer_key);
		}
	}
	if (of_session >= AGENT_INCOMING_MAX_PER_SESSION)
		return hm_err_set(err, ENOSPC, "a session may hold %d subscriptions",
				  AGENT_INCOMING_MAX_PER_SESSION);
	if (of_peer >= AGENT_INCOMING_MAX_PER_PEER)
		return hm_err_set(err, EUSERS,
				  "agent limit: this peer (%s) holds %u subscriptions in its "
				  "sessions, the limit is %d",
				  s->peer_key, of_peer, AGENT_INCOMING_MAX_PER_PEER);
	if (reg->nsubs >= AGENT_INCOMING_MAX)
		return hm_err_set(err, ENOSPC,
				  "agent limit: the agent holds %u subscriptions, the limit is %d",
				  reg->nsubs, AGENT_INCOMING_MAX);
	if (mode != PROTO_INCOMING_MIRROR)
		return 0;
	bool has;
	unsigned n = mirrored_netns(reg, s->peer_key, ino, AGENT_MIRROR_NETNS_PER_PEER, &has);
	if (!has && n >= AGENT_MIRROR_NETNS_PER_PEER)
		return hm_err_set(err, EUSERS,
				  "agent limit: this peer (%s) mirrors %d network namespaces, "
				  "the limit is %d (each has a ring buffer)",
				  s->peer_key, AGENT_MIRROR_NETNS_PER_PEER,
				  AGENT_MIRROR_NETNS_PER_PEER);
	n = mirrored_netns(reg, NULL, ino, AGENT_MIRROR_NETNS_MAX, &has);
	if (!has && n >= AGENT_MIRROR_NETNS_MAX)
		return hm_err_set(err, ENOSPC,
				  "agent limit: the agent mirrors %d network namespaces, the "
				  "limit is %d (each has a ring buffer)",
				  AGENT_MIRROR_NETNS_MAX, AGENT_MIRROR_NETNS_MAX);
	return 0;
}

static int check_request(const struct proto_incoming_subscribe *req, struct hm_err *err)
{
	if (req->port == 0)
		return hm_err_set(err, EINVAL, "port 0 cannot be subscribed to");
	if (req->mode != PROTO_INCOMING_MIRROR && req->mode != PROTO_INCOMING_STEAL)
		return hm_err_set(err, EINVAL, "unknown incoming mode %u", req->mode);
	bool filtered = req->http_filter && req->http_filter[0];
	if (filtered && req->mode != PROTO_INCOMING_STEAL)
		return hm_err_set(err, EINVAL, "an http_filter applies to steal only");
	if (req->flags & ~(uint32_t)(PROTO_INCOMING_FLUSH | PROTO_INCOMING_CONCURRENT |
				     PROTO_INCOMING_RELAY | PROTO_INCOMING_DUAL_STACK))
		return hm_err_set(err, EINVAL, "unknown incoming flags 0x%x", req->flags);
	return 0;
}

static int subscribe(struct agent_incoming *reg, struct agent_incoming_session *s,
		     const struct proto_incoming_subscribe *req,
		     struct proto_incoming_subscribe_reply *reply, char *note, size_t note_len,
		     struct hm_err *err)
{
	note[0] = '\0';
	reply->note = note;
	if (check_request(req, err) < 0)
		return -1;
	uint64_t ino = 0;
	hm_cleanup_close int netns_fd = target_netns(s->target, &ino, err);
	if (netns_fd < 0 || check_confined(s, netns_fd, req->port, err) < 0)
		return -1;
	bool filtered = req->http_filter && req->http_filter[0];

	struct agent_incoming_sub *sub = calloc(1, sizeof(*sub));
	if (!sub)
		return hm_err_set(err, ENOMEM, "subscription");
	atomic_init(&sub->refs, 1); /* the port list's */
	sub->mode = req->mode;
	sub->flags = req->flags;
	sub->sess = s;

	pthread_mutex_lock(&reg->lock);
	int rc = -1;
	/* after the steal is attached (so a client that reconnects lands in it); a
	 * connection accepted by the agent in the few ms between is flushed too, and its
	 * client reconnects like the others */
	bool flush = false;
	struct agent_incoming_port *p = port_find(reg, ino, req->port);
	bool new_port = !p;
	if (check_limits(reg, s, req->mode, ino, err) < 0)
		goto out;
	if (req->mode == PROTO_INCOMING_MIRROR && !reg->mirror) {
		hm_err_plain(err, EOPNOTSUPP,
			     "port %u: mirroring is not built into this agent yet (mirror "
			     "engine missing); use steal",
			     req->port);
		goto out;
	}
	if (filtered && !reg->router) {
		hm_err_plain(err, EOPNOTSUPP,
			     "port %u: HTTP filters are not built into this agent yet (HTTP "
			     "router missing)",
			     req->port);
		goto out;
	}
	if (filtered &&
	    reg->router->filter_compile(reg->router_ctx, req->http_filter, &sub->filter, err) < 0) {
		hm_err_prefix(err, "port %u: http_filter", req->port);
		goto out;
	}
	if (!p) {
		p = port_new(reg, s, ino, &netns_fd, req->port);
		if (!p) {
			hm_err_set(err, ENOMEM, "port");
			goto out;
		}
	}
	if (req->mode == PROTO_INCOMING_STEAL && p->nsteal) {
		/* sharing is for filtered subscriptions among themselves */
		const struct agent_incoming_sub *h = steal_holder(p);
		bool shares = filtered && h && h->filter;
		bool last_is_filtered = true;
		for (const struct agent_incoming_sub *x = p->subs; x; x = x->next)
			if (x->mode == PROTO_INCOMING_STEAL)
				last_is_filtered = x->filter && x->active;
		shares = shares && last_is_filtered;
		char holders[300];
		describe_holders(p, holders, sizeof(holders));
		if (!shares && !(req->flags & PROTO_INCOMING_CONCURRENT)) {
			hm_err_plain(err, EADDRINUSE, "%s is stolen by %s", p->name, holders);
			goto out;
		}
		if (!shares)
			snprintf(note, note_len,
				 "%s is stolen by %s: this subscription waits and takes over "
				 "when that one ends (on_concurrent_steal=continue)",
				 p->name, holders);
	}
	if (req->mode == PROTO_INCOMING_MIRROR && p->nmirror == 0 &&
	    reg->mirror->port_first(reg->mirror_engine, p, &p->mirror_state, err) < 0) {
		hm_err_prefix(err, "mirror %s", p->name);
		goto out;
	}
	bool started_steal = req->mode == PROTO_INCOMING_STEAL && p->nsteal == 0;
	if (started_steal && steal_start(p, req->flags & PROTO_INCOMING_DUAL_STACK, err) < 0)
		goto out;
	/* only when stealing starts: later, the port's connections are stolen ones */
	flush = started_steal && (req->flags & PROTO_INCOMING_FLUSH);
	sub->port = agent_incoming_port_get(p);
	sub->id = (uint32_t)atomic_fetch_add(&reg->next_sub_id, 1);
	s->hold(s->conn);
	/* appended: arrival order decides who holds and who waits */
	struct agent_incoming_sub **tail = &p->subs;
	while (*tail)
		tail = &(*tail)->next;
	*tail = sub;
	if (req->mode == PROTO_INCOMING_MIRROR)
		p->nmirror++;
	else
		p->nsteal++;
	steal_recompute_active(p);
	reg->nsubs++;
	reply->subscription = sub->id;
	hm_info("incoming: %s subscribed to %s (%s%s%s, subscription %u)%s%s", s->who, p->name,
		req->mode == PROTO_INCOMING_STEAL ? "steal" : "mirror",
		filtered ? " with an HTTP filter" : "", sub->active ? "" : ", waiting", sub->id,
		note[0] ? ": " : "", note);
	rc = 0;
	sub = NULL;
out:
	if (rc < 0 && new_port && p && !p->subs) {
		port_unlink(reg, p);
		agent_incoming_port_put(p);
	}
	pthread_mutex_unlock(&reg->lock);
	if (sub) {
		if (sub->filter)
			reg->router->filter_free(reg->router_ctx, sub->filter);
		free(sub);
	}
	if (rc == 0 && flush) {
		struct hm_err ferr = {0};
		int n = agent_incoming_flush(s->target, req->port, &ferr);
		if (n < 0)
			snprintf(note + strlen(note), note_len - strlen(note),
				 "%sflush_connections failed: %s", note[0] ? "; " : "", ferr.msg);
		else
			hm_info("incoming: port %u: %d open connection(s) closed (flush)",
				req->port, n);
	}
	return rc;
}

/* Session s's subscription with this id, or (id 0) any of its subscriptions; NULL
 * when none. Call with reg->lock held. */
static struct agent_incoming_sub *session_sub(struct agent_incoming *reg,
					      const struct agent_incoming_session *s, uint32_t id)
{
	for (struct agent_incoming_port *p = reg->ports; p; p = p->next)
		for (struct agent_incoming_sub *sub = p->subs; sub; sub = sub->next)
			if (sub->sess == s && (!id || sub->id == id))
				return sub;
	return NULL;
}

/* Unlinks session_sub(reg, s, id); r: what is left to release (released_run) outside the
 * lock. The subscription, still to put, or NULL when none. */
static struct agent_incoming_sub *session_sub_unlink(struct agent_incoming *reg,
						     struct agent_incoming_session *s, uint32_t id,
						     struct released *r)
{
	pthread_mutex_lock(&reg->lock);
	struct agent_incoming_sub *found = session_sub(reg, s, id);
	*r = (struct released){0};
	if (found)
		sub_unlink(reg, found, r);
	r->mirror = reg->mirror;
	r->mirror_engine = reg->mirror_engine;
	pthread_mutex_unlock(&reg->lock);
	return found;
}

static int unsubscribe(struct agent_incoming *reg, struct agent_incoming_session *s,
		       uint32_t subscription, struct hm_err *err)
{
	struct released r;
	struct agent_incoming_sub *found = session_sub_unlink(reg, s, subscription, &r);
	if (!found)
		return hm_err_set(err, ENOENT, "no subscription %u in this session", subscription);
	hm_info("incoming: %s unsubscribed from %s (subscription %u)", s->who, found->port->name,
		subscription);
	released_run(&r);
	agent_incoming_sub_put(found);
	return 0;
}

static void session_end(struct agent_incoming *reg, struct agent_incoming_session *s)
{
	for (;;) {
		struct released r;
		struct agent_incoming_sub *found = session_sub_unlink(reg, s, 0, &r);
		if (!found)
			return;
		hm_debug("incoming: %s: subscription %u to %s released with the session", s->who,
			 found->id, found->port->name);
		released_run(&r);
		agent_incoming_sub_put(found);
	}
}

/* ---- the entry points: on the runner when the session's thread is confined ---- */

struct call {
	struct agent_incoming *reg;
	struct agent_incoming_session *s;
	const struct proto_incoming_subscribe *req;
	struct proto_incoming_subscribe_reply *reply;
	char *note;
	size_t note_len;
	uint32_t subscription;
	struct hm_err *err;
	int rc;
};

static void call_subscribe(void *arg)
{
	struct call *c = arg;
	c->rc = subscribe(c->reg, c->s, c->req, c->reply, c->note, c->note_len, c->err);
}

static void call_unsubscribe(void *arg)
{
	struct call *c = arg;
	c->rc = unsubscribe(c->reg, c->s, c->subscription, c->err);
}

static void call_session_end(void *arg)
{
	struct call *c = arg;
	session_end(c->reg, c->s);
}

int agent_incoming_subscribe(struct agent_incoming *reg, struct agent_incoming_session *s,
			     const struct proto_incoming_subscribe *req,
			     struct proto_incoming_subscribe_reply *reply, char *note,
			     size_t note_len, struct hm_err *err)
{
	struct call c = {.reg = reg,
			 .s = s,
			 .req = req,
			 .reply = reply,
			 .note = note,
			 .note_len = note_len,
			 .err = err};
	run_unconfined(reg, call_subscribe, &c);
	return c.rc;
}

int agent_incoming_unsubscribe(struct agent_incoming *reg, struct agent_incoming_session *s,
			       uint32_t subscription, struct hm_err *err)
{
	struct call c = {.reg = reg, .s = s, .subscription = subscription, .err = err};
	run_unconfined(reg, call_unsubscribe, &c);
	return c.rc;
}

void agent_incoming_session_end(struct agent_incoming *reg, struct agent_incoming_session *s)
{
	struct call c = {.reg = reg, .s = s};
	run_unconfined(reg, call_session_end, &c);
}
