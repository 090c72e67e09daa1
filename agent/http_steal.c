/* agent: the HTTP router bound to the incoming core. The core keeps the subscriptions
 * and their compiled filters; per request this asks it for the port's active steal
 * subscriptions, picks one with http_filter_pick, and hands the request's stream to
 * that session with agent_incoming_offer; the pod's own server is reached through the
 * steal program's bypass (agent_incoming_bypass_connect). Both of those can block (a
 * connect; an event to a session whose client reads slowly), so they run on a helper
 * thread of their own and the router's thread never waits: a stuck session delays only
 * the opens queued behind it, never the bytes of established connections. */
#include <pthread.h>
#include <string.h>

#include "agent/internal.h"

/* a connection to the pod's server waits at most this long for its connect */
#define POD_CONNECT_TIMEOUT_MS 5000

/* an open the router asked for, done on the opener thread: a bypass connect to the
 * pod (sub 0) or an offer to subscription sub's session */
struct open_job {
	struct agent_incoming_port *port;
	struct proto_addr client, server;
	uint32_t sub;
	uint64_t ticket;
	struct open_job *next;
};

struct agent_http_steal {
	struct agent_incoming *reg;
	struct http_router *router; /* NULL once destroy began */
	struct http_router_counters counters;
	/* one for the owner, one per offer whose claimed() has not come yet: the struct
	 * outlives the router for them (the core calls claimed exactly once, possibly
	 * after destroy) */
	pthread_mutex_t lock;
	unsigned refs;
	/* the opener thread and its queue of jobs, oldest first (under lock) */
	pthread_t opener;
	pthread_cond_t wake;
	struct open_job *jobs, *jobs_tail;
	bool stop;
};

static void steal_put(struct agent_http_steal *s)
{
	pthread_mutex_lock(&s->lock);
	bool last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last) {
		pthread_cond_destroy(&s->wake);
		pthread_mutex_destroy(&s->lock);
		free(s);
	}
}

/* one stolen connection */
struct steal_conn {
	struct agent_http_steal *s;
	struct agent_incoming_port *port;
	struct proto_addr client, server;
};

struct offer_ctx {
	struct agent_http_steal *s;
	uint64_t ticket;
};

static int filter_compile(void *ctx, const char *json, void **filter, struct hm_err *err)
{
	(void)ctx;
	struct http_filter *f;
	if (http_filter_parse(json, strlen(json), &f, err) < 0)
		return -1;
	*filter = f;
	return 0;
}

static void filter_free(void *ctx, void *filter)
{
	(void)ctx;
	http_filter_free(filter);
}

static void conn_closed(void *ctx, void *conn);

static void connection(void *ctx, struct agent_incoming_port *port, int fd,
		       const struct proto_addr *client, const struct proto_addr *server)
{
	struct agent_http_steal *s = ctx;
	if (!agent_incoming_port_route_begin(port, HTTP_ROUTER_PORT_CONNS_MAX)) {
		/* a flood of one port's clients (the pod's, hostile) */
		hm_debug("incoming: port %u: %d filtered connections already; one refused",
			 agent_incoming_port_number(port), HTTP_ROUTER_PORT_CONNS_MAX);
		close(fd);
		agent_incoming_port_put(port);
		return;
	}
	struct steal_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		agent_incoming_port_route_end(port);
		agent_incoming_port_put(port);
		return;
	}
	*c = (struct steal_conn){.s = s, .port = port, .client = *client, .server = *server};
	struct hm_err err = {0};
	/* on failure the router closed fd; c is still ours (closed() is for added ones:
	 * c, the port's reference and its place were leaked here before) */
	if (http_router_add(s->router, fd, c, &err) < 0) {
		hm_debug("incoming: filtered connection dropped: %s", err.msg);
		conn_closed(s, c);
	}
}

struct subs {
	struct agent_incoming_sub *v[AGENT_INCOMING_MAX_PORT_SUBS];
	size_t n;
};

static void subs_put(struct subs *subs)
{
	for (size_t i = 0; i < subs->n; i++)
		agent_incoming_sub_put(subs->v[i]);
	subs->n = 0;
}

static uint32_t route(void *ctx, void *conn, const struct http_request *req)
{
	struct agent_http_steal *s = ctx;
	struct steal_conn *c = conn;
	struct subs subs;
	subs.n = agent_incoming_port_subs(c->port, PROTO_INCOMING_STEAL, subs.v,
					  AGENT_INCOMING_MAX_PORT_SUBS);
	struct http_filter *filters[AGENT_INCOMING_MAX_PORT_SUBS];
	for (size_t i = 0; i < subs.n; i++)
		filters[i] = agent_incoming_sub_filter(subs.v[i]);
	int pick = http_filter_pick(filters, subs.n, req);
	uint32_t id = pick >= 0 ? agent_incoming_sub_id(subs.v[pick]) : 0;
	subs_put(&subs);
	struct agent_incoming_counters *k = agent_incoming_port_counters(c->port);
	atomic_fetch_add(id ? &k->stolen : &k->passed_to_target, 1);
	(void)s;
	return id;
}

static void claimed(void *arg, int fd, const struct relay_release *release)
{
	struct offer_ctx *o = arg;
	struct agent_http_steal *s = o->s;
	struct relay_release rel = release ? *release : (struct relay_release){0};
	pthread_mutex_lock(&s->lock);
	if (s->router) {
		http_router_stream_ready(s->router, o->ticket, fd, &rel);
	} else if (fd >= 0) {
		close(fd);
		agent_release_run(&rel);
	}
	pthread_mutex_unlock(&s->lock);
	free(o);
	steal_put(s);
}

/* the offer of a stream to subscription sub's session; the answer comes to claimed() */
static void offer(struct agent_http_steal *s, const struct open_job *job)
{
	struct subs subs;
	subs.n = agent_incoming_port_subs(job->port, PROTO_INCOMING_STEAL, subs.v,
					  AGENT_INCOMING_MAX_PORT_SUBS);
	struct agent_incoming_sub *chosen = NULL;
	for (size_t i = 0; i < subs.n && !chosen; i++)
		if (agent_incoming_sub_id(subs.v[i]) == job->sub)
			chosen = subs.v[i];
	struct offer_ctx *o = chosen ? malloc(sizeof(*o)) : NULL;
	struct hm_err err = {0};
	if (o) {
		*o = (struct offer_ctx){.s = s, .ticket = job->ticket};
		pthread_mutex_lock(&s->lock);
		s->refs++;
		pthread_mutex_unlock(&s->lock);
		/* claimed() runs in every case, also when this fails */
		if (agent_incoming_offer(chosen, &job->client, &job->server, claimed, o, &err) < 0)
			hm_debug("incoming: subscription %u: %s", job->sub, err.msg);
	} else {
		/* gone since the request matched (or no memory): the pod answers */
		pthread_mutex_lock(&s->lock);
		if (s->router)
			http_router_stream_ready(s->router, job->ticket, -1, NULL);
		pthread_mutex_unlock(&s->lock);
	}
	subs_put(&subs);
}

static void connect_pod(struct agent_http_steal *s, const struct open_job *job)
{
	struct hm_err err = {0};
	int fd =
	    agent_incoming_bypass_connect(job->port, &job->server, POD_CONNECT_TIMEOUT_MS, &err);
	if (fd < 0)
		hm_debug("incoming: filtered connection: %s", err.msg);
	pthread_mutex_lock(&s->lock);
	if (s->router)
		http_router_stream_ready(s->router, job->ticket, fd, NULL);
	else if (fd >= 0)
		close(fd);
	pthread_mutex_unlock(&s->lock);
}

static void *opener_main(void *arg)
{
	struct agent_http_steal *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->jobs && !s->stop)
			pthread_cond_wait(&s->wake, &s->lock);
		if (s->stop)
			break;
		struct open_job *job = s->jobs;
		s->jobs = job->next;
		if (!s->jobs)
			s->jobs_tail = NULL;
		pthread_mutex_unlock(&s->lock);
		if (job->sub)
			offer(s, job);
		else
			connect_pod(s, job);
		agent_incoming_port_put(job->port);
		free(job);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int queue_open(struct agent_http_steal *s, struct steal_conn *c, uint32_t sub,
		      uint64_t ticket, struct hm_err *err)
{
	struct open_job *job = calloc(1, sizeof(*job));
	if (!job)
		return hm_err_set(err, ENOMEM, "open");
	*job = (struct open_job){.port = agent_incoming_port_get(c->port),
				 .client = c->client,
				 .server = c->server,
				 .sub = sub,
				 .ticket = ticket};
	pthread_mutex_lock(&s->lock);
	if (s->jobs_tail)
		s->jobs_tail->next = job;
	else
		s->jobs = job;
	s->jobs_tail = job;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int open_pod(void *ctx, void *conn, uint64_t ticket, int *fd, struct hm_err *err)
{
	*fd = -1; /* the opener thread brings it */
	return queue_open(ctx, conn, 0, ticket, err);
}

static int open_local(void *ctx, void *conn, uint32_t sub, uint64_t ticket, struct hm_err *err)
{
	return queue_open(ctx, conn, sub, ticket, err);
}

static void conn_closed(void *ctx, void *conn)
{
	(void)ctx;
	struct steal_conn *c = conn;
	if (!c)
		return;
	agent_incoming_port_route_end(c->port);
	agent_incoming_port_put(c->port);
	free(c);
}

static const struct http_router_ops router_ops = {
    .route = route,
    .open_pod = open_pod,
    .open_local = open_local,
    .closed = conn_closed,
};

static const struct agent_http_router_ops core_ops = {
    .filter_compile = filter_compile,
    .filter_free = filter_free,
    .connection = connection,
};

int agent_http_steal_create(struct agent_incoming *reg, struct agent_http_steal **out,
			    struct hm_err *err)
{
	struct agent_http_steal *s = calloc(1, sizeof(*s));
	if (!s)
		return hm_err_set(err, ENOMEM, "http router");
	s->reg = reg;
	s->refs = 1;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	if (http_router_create(&router_ops, s, &s->counters, &s->router, err) < 0) {
		pthread_cond_destroy(&s->wake);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return -1;
	}
	int rc = pthread_create(&s->opener, NULL, opener_main, s);
	if (rc) {
		http_router_destroy(s->router);
		pthread_cond_destroy(&s->wake);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return hm_err_set(err, rc, "http router: opener thread");
	}
	agent_incoming_set_http_router(reg, &core_ops, s);
	*out = s;
	return 0;
}

void agent_http_steal_destroy(struct agent_http_steal *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	struct http_router *router = s->router;
	s->router = NULL;
	s->stop = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->opener, NULL);
	while (s->jobs) {
		struct open_job *job = s->jobs;
		s->jobs = job->next;
		agent_incoming_port_put(job->port);
		free(job);
	}
	http_router_destroy(router);
	steal_put(s);
}
