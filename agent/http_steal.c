/* agent: the HTTP router bound to the incoming core. The core keeps the subscriptions
 * and their compiled filters; per request this asks it for the port's active steal
 * subscriptions, picks one with http_filter_pick, and hands the request's stream to
 * that session with agent_incoming_offer; the pod's own server is reached through the
 * steal program's bypass (agent_incoming_bypass_connect). */
#include <pthread.h>
#include <string.h>

#include "agent/internal.h"

/* a connection to the pod's server waits at most this long for its connect */
#define POD_CONNECT_TIMEOUT_MS 5000

/* a bypass connect asked by the router, done on the connector thread (it blocks) */
struct pod_connect {
	struct agent_incoming_port *port;
	struct proto_addr server;
	uint64_t ticket;
	struct pod_connect *next;
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
	/* the connector thread and its queue (under lock) */
	pthread_t connector;
	pthread_cond_t wake;
	struct pod_connect *todo, *todo_tail;
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

static void connection(void *ctx, struct agent_incoming_port *port, int fd,
		       const struct proto_addr *client, const struct proto_addr *server)
{
	struct agent_http_steal *s = ctx;
	struct steal_conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		agent_incoming_port_put(port);
		return;
	}
	*c = (struct steal_conn){.s = s, .port = port, .client = *client, .server = *server};
	struct hm_err err = {0};
	/* on failure the router closed fd and called closed(c) */
	if (http_router_add(s->router, fd, c, &err) < 0)
		hm_warn("incoming: filtered connection dropped: %s", err.msg);
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

/* The router's thread never waits for a connect: they are made here, one after
 * another (a connect to a server on the same host takes microseconds; a dead pod's
 * costs at most POD_CONNECT_TIMEOUT_MS, and only the connections waiting for one). */
static void *connector_main(void *arg)
{
	struct agent_http_steal *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->todo && !s->stop)
			pthread_cond_wait(&s->wake, &s->lock);
		if (s->stop)
			break;
		struct pod_connect *pc = s->todo;
		s->todo = pc->next;
		if (!s->todo)
			s->todo_tail = NULL;
		pthread_mutex_unlock(&s->lock);
		struct hm_err err = {0};
		int fd = agent_incoming_bypass_connect(pc->port, &pc->server,
						       POD_CONNECT_TIMEOUT_MS, &err);
		if (fd < 0)
			hm_debug("incoming: filtered connection: %s", err.msg);
		pthread_mutex_lock(&s->lock);
		if (s->router)
			http_router_stream_ready(s->router, pc->ticket, fd);
		else if (fd >= 0)
			close(fd);
		agent_incoming_port_put(pc->port);
		free(pc);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static int open_pod(void *ctx, void *conn, uint64_t ticket, int *fd, struct hm_err *err)
{
	struct agent_http_steal *s = ctx;
	struct steal_conn *c = conn;
	struct pod_connect *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return hm_err_set(err, ENOMEM, "pod connect");
	*pc = (struct pod_connect){
	    .port = agent_incoming_port_get(c->port), .server = c->server, .ticket = ticket};
	pthread_mutex_lock(&s->lock);
	if (s->todo_tail)
		s->todo_tail->next = pc;
	else
		s->todo = pc;
	s->todo_tail = pc;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	*fd = -1;
	return 0;
}

static void claimed(void *arg, int fd)
{
	struct offer_ctx *o = arg;
	struct agent_http_steal *s = o->s;
	pthread_mutex_lock(&s->lock);
	if (s->router)
		http_router_stream_ready(s->router, o->ticket, fd);
	else if (fd >= 0)
		close(fd);
	pthread_mutex_unlock(&s->lock);
	free(o);
	steal_put(s);
}

static int open_local(void *ctx, void *conn, uint32_t sub, uint64_t ticket, struct hm_err *err)
{
	struct agent_http_steal *s = ctx;
	struct steal_conn *c = conn;
	struct subs subs;
	subs.n = agent_incoming_port_subs(c->port, PROTO_INCOMING_STEAL, subs.v,
					  AGENT_INCOMING_MAX_PORT_SUBS);
	struct agent_incoming_sub *chosen = NULL;
	for (size_t i = 0; i < subs.n && !chosen; i++)
		if (agent_incoming_sub_id(subs.v[i]) == sub)
			chosen = subs.v[i];
	int rc = -1;
	struct offer_ctx *o = NULL;
	if (!chosen) {
		hm_err_plain(err, ENOENT, "subscription %u is gone", sub);
	} else if (!(o = malloc(sizeof(*o)))) {
		hm_err_set(err, ENOMEM, "offer");
	} else {
		*o = (struct offer_ctx){.s = s, .ticket = ticket};
		pthread_mutex_lock(&s->lock);
		s->refs++;
		pthread_mutex_unlock(&s->lock);
		/* claimed() runs in every case, also when this fails */
		rc = agent_incoming_offer(chosen, &c->client, &c->server, claimed, o, err);
	}
	subs_put(&subs);
	return rc;
}

static void conn_closed(void *ctx, void *conn)
{
	(void)ctx;
	struct steal_conn *c = conn;
	if (!c)
		return;
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
	int rc = pthread_create(&s->connector, NULL, connector_main, s);
	if (rc) {
		http_router_destroy(s->router);
		pthread_cond_destroy(&s->wake);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return hm_err_set(err, rc, "http router: connector thread");
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
	pthread_join(s->connector, NULL);
	while (s->todo) {
		struct pod_connect *pc = s->todo;
		s->todo = pc->next;
		agent_incoming_port_put(pc->port);
		free(pc);
	}
	http_router_destroy(router);
	steal_put(s);
}
