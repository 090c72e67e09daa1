/* agent: the filtered-steal router. One epoll thread drives every connection; each
 * connection is a state machine advanced by drive() until nothing moves (fds are
 * edge-triggered: drive retries every read and write it may do, so no readiness is
 * lost when it holds back for lack of buffer space).
 *
 * Requests: the client's bytes land in cin; the reader parses one message at a time
 * (it pauses at each message's end); when the head is complete the request is matched
 * and every parsed byte of it is written, unchanged, to the chosen upstream. The next
 * request is parsed only when this one is fully written, so requests keep their order
 * on each upstream. Responses: a queue remembers, in request order, which upstream
 * owes the next response; only that upstream is read (the others' answers wait in
 * their socket), and its bytes are parsed just to find where the response ends. */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "agent/internal.h"

#define CIN_CAP (HTTP_HEAD_MAX + (32u << 10))
_Static_assert(HTTP_ROUTER_CONNS_MAX <= 4096, "a ticket has 12 bits of slot");
#define UPIN_CAP (64u << 10)

static const char too_large_reply[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
				      "Connection: close\r\nContent-Length: 0\r\n\r\n";

enum up_state { UP_NONE, UP_OPENING, UP_CONNECTING, UP_READY, UP_FAILED };

struct watch {
	struct conn *c;
	int up; /* -1: the client */
	/* what epoll last said and no EAGAIN denied since: a read or send is tried only
	 * then, so an idle side costs no syscall per request */
	bool rd, wr;
};

struct upstream {
	enum up_state state;
	int fd;
	uint32_t sub;	/* 0: the pod */
	uint32_t opens; /* times this slot was opened: a late answer to an earlier open is
			 * told apart by it (ticket) */
	struct watch w;
	struct http_reader resp;
	char *in;
	size_t in_len, in_parsed;
	unsigned pending;	      /* requests in the queue for it */
	bool eof;		      /* it closed its side */
	bool shut;		      /* we closed ours (raw tunnel) */
	struct relay_release release; /* run when fd closes: a session's stream budget */
};

enum entry_kind { ENTRY_RESPONSE, ENTRY_431 };
struct entry {
	enum entry_kind kind;
	int up;
	bool head;    /* answers a HEAD (or CONNECT: no body, then a tunnel) */
	bool upgrade; /* after its response, the upstream's bytes are raw */
};

struct conn {
	struct http_router *r;
	uint32_t slot, gen;
	void *ctx;
	int fd;
	struct watch w;
	bool client_eof, client_shut;
	char *cin;
	size_t cin_len, cin_parsed;
	struct http_reader req;
	int cur;	  /* upstream of the request being forwarded; -1: in its head */
	bool cur_done;	  /* the reader saw its end */
	bool routed_any;  /* a request was routed (no longer "is it HTTP?") */
	int raw_up;	  /* >= 0: client bytes go raw to this upstream */
	int resp_raw_up;  /* >= 0: this upstream's bytes go raw to the client */
	bool finishing;	  /* close once what is owed to the client is written */
	size_t synth_off; /* bytes of too_large_reply written */
	struct entry q[HTTP_ROUTER_PIPELINE_MAX];
	unsigned q_head, q_len;
	struct upstream up[HTTP_ROUTER_UPSTREAMS_MAX];
	bool dead, reset;
	struct conn *next_dead;
};

enum msg_kind { MSG_ADD, MSG_STREAM };
struct msg {
	enum msg_kind kind;
	int fd;
	uint64_t ticket;
	void *ctx;
	struct relay_release release; /* MSG_STREAM: fd's */
	struct msg *next;
};

struct http_router {
	const struct http_router_ops *ops;
	void *ctx;
	struct http_router_counters *counters;
	int epfd, evfd;
	pthread_t thread;
	pthread_mutex_t lock;
	struct msg *inbox, *inbox_tail;
	atomic_bool stop;
	atomic_uint count; /* connections added and not yet closed, queued ones too */
	struct conn *slots[HTTP_ROUTER_CONNS_MAX];
	uint32_t next_gen;
	struct conn *dead;
};

/* connection generation 32 bits | slot 12 | the upstream's opens 12 | upstream 8 */
static uint64_t make_ticket(const struct conn *c, int up)
{
	return (uint64_t)c->gen << 32 | (uint64_t)c->slot << 20 |
	       (uint64_t)(c->up[up].opens & 0xfff) << 8 | (uint64_t)up;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl >= 0)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void kill_conn(struct conn *c, bool reset)
{
	if (c->dead)
		return;
	c->dead = true;
	c->reset = reset;
	c->next_dead = c->r->dead;
	c->r->dead = c;
}

static void watch_fd(struct conn *c, int fd, struct watch *w)
{
	w->rd = w->wr = true;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.ptr = w};
	if (epoll_ctl(c->r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		hm_warn("http router: epoll_ctl: %s", strerror(errno));
		kill_conn(c, true);
	}
}

static void upstream_close(struct conn *c, struct upstream *u)
{
	if (u->fd >= 0) {
		epoll_ctl(c->r->epfd, EPOLL_CTL_DEL, u->fd, NULL);
		close(u->fd);
	}
	u->fd = -1;
	agent_release_run(&u->release); /* conn_free may have closed fd already */
	u->state = UP_NONE;
	u->in_len = u->in_parsed = 0;
	u->eof = u->shut = false;
	if (u->resp.st)
		http_reader_fini(&u->resp);
}

static void conn_free(struct conn *c)
{
	struct http_router *r = c->r;
	for (int i = 0; i < HTTP_ROUTER_UPSTREAMS_MAX; i++) {
		struct upstream *u = &c->up[i];
		if (u->fd >= 0 && c->reset) {
			epoll_ctl(r->epfd, EPOLL_CTL_DEL, u->fd, NULL);
			agent_close_reset(u->fd);
			u->fd = -1;
		}
		upstream_close(c, u);
		free(u->in);
	}
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->reset)
		agent_close_reset(c->fd);
	else
		close(c->fd);
	http_reader_fini(&c->req);
	free(c->cin);
	r->slots[c->slot] = NULL;
	atomic_fetch_sub(&r->counters->connections, 1);
	atomic_fetch_sub(&r->count, 1);
	r->ops->closed(r->ctx, c->ctx);
	free(c);
}

/* the upstream index for sub, opening it if needed; -1 when none can be had */
static int upstream_for(struct conn *c, uint32_t sub)
{
	int free_slot = -1;
	for (int i = 0; i < HTTP_ROUTER_UPSTREAMS_MAX; i++) {
		struct upstream *u = &c->up[i];
		if (u->state != UP_NONE && u->state != UP_FAILED && u->sub == sub && !u->eof)
			return i;
		if (free_slot < 0 && u->pending == 0 &&
		    (u->state == UP_NONE || u->state == UP_FAILED || u->eof) &&
		    i != c->resp_raw_up && i != c->raw_up)
			free_slot = i;
	}
	if (free_slot < 0)
		return -1;
	struct upstream *u = &c->up[free_slot];
	upstream_close(c, u);
	u->sub = sub;
	u->opens++;
	struct hm_err err = {0};
	if (http_reader_init(&u->resp, false, &err) < 0)
		return -1;
	if (!u->in && !(u->in = malloc(UPIN_CAP)))
		return -1;
	if (sub == 0) {
		int fd = -1;
		u->state = UP_OPENING;
		if (c->r->ops->open_pod(c->r->ctx, c->ctx, make_ticket(c, free_slot), &fd, &err) <
		    0) {
			hm_debug("http router: pod: %s", err.msg);
			u->state = UP_FAILED;
			return free_slot;
		}
		if (fd < 0)
			return free_slot; /* http_router_stream_ready brings it */
		set_nonblock(fd);
		u->fd = fd;
		u->state = UP_CONNECTING;
		watch_fd(c, fd, &u->w);
		return free_slot;
	}
	u->state = UP_OPENING;
	if (c->r->ops->open_local(c->r->ctx, c->ctx, sub, make_ticket(c, free_slot), &err) < 0) {
		hm_debug("http router: subscription %u: %s", sub, err.msg);
		u->state = UP_FAILED;
	}
	return free_slot;
}

static void connect_done(struct conn *c, struct upstream *u)
{
	int soerr = 0;
	socklen_t len = sizeof(soerr);
	if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr == EINPROGRESS || soerr == EALREADY)
		return;
	if (soerr) {
		hm_debug("http router: connect to the pod: %s", strerror(soerr));
		u->state = UP_FAILED;
		return;
	}
	u->state = UP_READY;
	(void)c;
}

/* Send up to *part bytes from the front of buf (which holds *total), and drop what was
 * sent from the front: 1 when bytes moved, 0 when the peer is full, -1 on a hard
 * error. */
static int send_front(int fd, struct watch *w, char *buf, size_t *part, size_t *total)
{
	if (*part == 0 || !w->wr)
		return 0;
	ssize_t n = send(fd, buf, *part, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN)
			w->wr = false;
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	}
	memmove(buf, buf + n, *total - (size_t)n);
	*total -= (size_t)n;
	*part -= (size_t)n;
	return 1;
}

static struct entry *q_front(struct conn *c)
{
	return c->q_len ? &c->q[c->q_head] : NULL;
}

static void q_push(struct conn *c, struct entry e)
{
	c->q[(c->q_head + c->q_len) % HTTP_ROUTER_PIPELINE_MAX] = e;
	c->q_len++;
	if (e.kind == ENTRY_RESPONSE)
		c->up[e.up].pending++;
}

static void q_pop(struct conn *c)
{
	struct entry *e = q_front(c);
	if (e->kind == ENTRY_RESPONSE)
		c->up[e->up].pending--;
	c->q_head = (c->q_head + 1) % HTTP_ROUTER_PIPELINE_MAX;
	c->q_len--;
}

/* ---- client -> upstreams ---- */

static int read_client(struct conn *c)
{
	if (c->client_eof || c->cin_len == CIN_CAP || c->finishing || !c->w.rd)
		return 0;
	ssize_t n = recv(c->fd, c->cin + c->cin_len, CIN_CAP - c->cin_len, 0);
	if (n < 0) {
		if (errno == EAGAIN)
			c->w.rd = false;
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		kill_conn(c, true);
		return 0;
	}
	if (n == 0)
		c->client_eof = true;
	c->cin_len += (size_t)n;
	return 1;
}

static void go_passthrough(struct conn *c)
{
	int pod = upstream_for(c, 0);
	if (pod < 0) {
		kill_conn(c, true);
		return;
	}
	c->raw_up = pod;
	c->resp_raw_up = pod;
	c->routed_any = true;
	atomic_fetch_add(&c->r->counters->passthrough, 1);
}

static void route_head(struct conn *c, int events)
{
	struct http_request *hr = malloc(sizeof(*hr));
	if (!hr) {
		kill_conn(c, true);
		return;
	}
	http_reader_request(&c->req, c->cin, hr);
	uint32_t sub = c->r->ops->route(c->r->ctx, c->ctx, hr);
	bool head = strcmp(hr->method, "HEAD") == 0, connect = strcmp(hr->method, "CONNECT") == 0;
	free(hr);
	int up = upstream_for(c, sub);
	if (up < 0 && sub != 0)
		up = upstream_for(c, 0);
	if (up < 0) {
		kill_conn(c, true);
		return;
	}
	atomic_fetch_add(sub ? &c->r->counters->to_local : &c->r->counters->to_pod, 1);
	c->cur = up;
	c->routed_any = true;
	q_push(c, (struct entry){.kind = ENTRY_RESPONSE, .up = up, .head = head || connect});
	(void)events;
}

/* a local stream that will not come: its request goes to the pod (nothing of it was
 * written, since nothing is written before the upstream is ready) */
static void reroute_to_pod(struct conn *c)
{
	int pod = upstream_for(c, 0);
	if (pod < 0 || c->up[pod].state == UP_FAILED) {
		kill_conn(c, true);
		return;
	}
	unsigned last = (c->q_head + c->q_len - 1) % HTTP_ROUTER_PIPELINE_MAX;
	c->up[c->q[last].up].pending--;
	c->q[last].up = pod;
	c->up[pod].pending++;
	if (c->raw_up == c->cur)
		c->raw_up = pod;
	c->cur = pod;
}

static int step_requests(struct conn *c)
{
	int moved = 0;
	if (c->raw_up >= 0) {
		struct upstream *u = &c->up[c->raw_up];
		if (u->state == UP_FAILED) {
			kill_conn(c, true);
			return 0;
		}
		if (u->state != UP_READY)
			return 0;
		size_t all = c->cin_len;
		int w = send_front(u->fd, &u->w, c->cin, &all, &c->cin_len);
		if (w < 0) {
			kill_conn(c, true);
			return 0;
		}
		if (c->client_eof && c->cin_len == 0 && !u->shut) {
			shutdown(u->fd, SHUT_WR);
			u->shut = true;
			moved = 1;
		}
		return moved | w;
	}
	for (;;) {
		if (c->dead || c->finishing)
			return moved;
		/* parse the head, or the current message's body, as far as it goes */
		if (!c->cur_done && c->cin_parsed < c->cin_len &&
		    (c->cur >= 0 || c->q_len < HTTP_ROUTER_PIPELINE_MAX)) {
			size_t used;
			int ev =
			    http_reader_feed(&c->req, c->cin, 0, c->cin_parsed, c->cin_len, &used);
			c->cin_parsed += used;
			if (used)
				moved = 1;
			if (ev & HTTP_EV_HEAD)
				route_head(c, ev);
			if (c->dead)
				return moved;
			if (ev & HTTP_EV_END) {
				c->cur_done = true;
				if (ev & HTTP_EV_UPGRADE) {
					struct entry *last = &c->q[(c->q_head + c->q_len - 1) %
								   HTTP_ROUTER_PIPELINE_MAX];
					last->upgrade = true;
				}
			}
			if (ev & HTTP_EV_ERROR) {
				if (c->cur < 0 && !c->routed_any &&
				    !http_reader_too_large(&c->req)) {
					hm_debug("http router: not HTTP (%s): passthrough",
						 http_reader_error(&c->req));
					go_passthrough(c);
					return 1;
				}
				if (c->cur < 0 && http_reader_too_large(&c->req) &&
				    c->q_len < HTTP_ROUTER_PIPELINE_MAX) {
					q_push(c, (struct entry){.kind = ENTRY_431, .up = -1});
					c->finishing = true;
					return 1;
				}
				hm_debug("http router: broken request: %s",
					 http_reader_error(&c->req));
				kill_conn(c, true);
				return moved;
			}
		}
		if (c->cur < 0) {
			/* between requests: the client is done when it closed with nothing
			 * begun; a head cut by the close is dropped */
			if (c->client_eof && c->cin_parsed == c->cin_len && c->cin_len &&
			    !http_reader_idle(&c->req))
				c->cin_len = c->cin_parsed = 0;
			return moved;
		}
		struct upstream *u = &c->up[c->cur];
		if (u->state == UP_FAILED && u->sub != 0) {
			reroute_to_pod(c);
			if (c->dead)
				return moved;
			u = &c->up[c->cur];
		}
		if (u->state == UP_FAILED) {
			kill_conn(c, true);
			return moved;
		}
		if (u->state != UP_READY)
			return moved;
		int w = send_front(u->fd, &u->w, c->cin, &c->cin_parsed, &c->cin_len);
		if (w < 0) {
			kill_conn(c, true);
			return moved;
		}
		moved |= w;
		if (c->cin_parsed != 0)
			return moved; /* the upstream is full: wait for EPOLLOUT */
		if (!c->cur_done) {
			if (c->client_eof && c->cin_len == 0) {
				/* the client closed inside a request: let the upstream see it */
				if (!u->shut)
					shutdown(u->fd, SHUT_WR), u->shut = true;
				c->finishing = c->q_len == 0;
			}
			return moved;
		}
		/* the whole request is out */
		struct entry *last = &c->q[(c->q_head + c->q_len - 1) % HTTP_ROUTER_PIPELINE_MAX];
		if (last->upgrade) {
			c->raw_up = c->cur;
			return 1;
		}
		c->cur = -1;
		c->cur_done = false;
		http_reader_next(&c->req);
		moved = 1;
	}
}

/* ---- upstreams -> client ---- */

static int read_upstream(struct conn *c, struct upstream *u)
{
	if (u->state != UP_READY || u->eof || u->in_len == UPIN_CAP || !u->w.rd)
		return 0;
	ssize_t n = recv(u->fd, u->in + u->in_len, UPIN_CAP - u->in_len, 0);
	if (n < 0) {
		if (errno == EAGAIN)
			u->w.rd = false;
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		/* a reset upstream: the client sees one too */
		kill_conn(c, true);
		return 0;
	}
	if (n == 0)
		u->eof = true;
	u->in_len += (size_t)n;
	return 1;
}

/* idle upstreams: notice their close, and a pod that speaks first */
static int watch_idle(struct conn *c)
{
	int moved = 0;
	for (int i = 0; i < HTTP_ROUTER_UPSTREAMS_MAX; i++) {
		struct upstream *u = &c->up[i];
		if (u->pending || u->state != UP_READY || i == c->resp_raw_up || u->eof)
			continue;
		if (read_upstream(c, u) == 0)
			continue;
		moved = 1;
		if (u->in_len && u->sub == 0 && !c->routed_any && c->cin_len == 0) {
			hm_debug("http router: the pod spoke first: passthrough");
			c->raw_up = c->resp_raw_up = i;
			c->routed_any = true;
			atomic_fetch_add(&c->r->counters->passthrough, 1);
			continue;
		}
		if (u->in_len) /* an answer nobody asked for */
			hm_debug("http router: unsolicited bytes from an upstream: closed");
		if (c->cur != i)
			upstream_close(c, u);
	}
	return moved;
}

static int write_client(struct conn *c, char *buf, size_t *part, size_t *total)
{
	int w = send_front(c->fd, &c->w, buf, part, total);
	if (w < 0)
		kill_conn(c, true);
	return w < 0 ? 0 : w;
}

static int step_responses(struct conn *c)
{
	int moved = 0;
	if (c->resp_raw_up >= 0 && c->q_len == 0) {
		struct upstream *u = &c->up[c->resp_raw_up];
		if (u->state != UP_READY)
			return 0;
		moved |= read_upstream(c, u);
		size_t all = u->in_len;
		moved |= write_client(c, u->in, &all, &u->in_len);
		u->in_parsed = 0;
		if (u->eof && u->in_len == 0 && !c->client_shut) {
			shutdown(c->fd, SHUT_WR);
			c->client_shut = true;
			moved = 1;
		}
		return moved;
	}
	for (;;) {
		if (c->dead)
			return moved;
		struct entry *e = q_front(c);
		if (!e)
			return moved;
		if (e->kind == ENTRY_431) {
			size_t left = sizeof(too_large_reply) - 1 - c->synth_off;
			if (!c->w.wr)
				return moved;
			ssize_t n = send(c->fd, too_large_reply + c->synth_off, left, MSG_NOSIGNAL);
			if (n < 0) {
				if (errno == EAGAIN)
					c->w.wr = false;
				else if (errno != EINTR)
					kill_conn(c, true);
				return moved;
			}
			c->synth_off += (size_t)n;
			if (c->synth_off < sizeof(too_large_reply) - 1)
				return 1;
			q_pop(c);
			moved = 1;
			continue;
		}
		struct upstream *u = &c->up[e->up];
		if (u->state == UP_FAILED) {
			kill_conn(c, true);
			return moved;
		}
		if (u->state != UP_READY)
			return moved;
		moved |= read_upstream(c, u);
		if (c->dead)
			return moved;
		http_reader_expect_head(&u->resp, e->head);
		int ev;
		if (u->in_parsed < u->in_len) {
			size_t used;
			ev = http_reader_feed(&u->resp, u->in, 0, u->in_parsed, u->in_len, &used);
			u->in_parsed += used;
		} else if (u->eof) {
			ev = http_reader_eof(&u->resp);
			if (ev == 0)
				ev = HTTP_EV_ERROR; /* closed before answering */
		} else {
			return moved; /* wait for more of the response */
		}
		/* forward what is parsed of this response */
		moved |= write_client(c, u->in, &u->in_parsed, &u->in_len);
		if (c->dead || u->in_parsed)
			return moved; /* the client is full: EPOLLOUT comes back here */
		if (ev & HTTP_EV_ERROR) {
			/* what came is delivered; the client sees the close (a reset when the
			 * upstream is still there but spoke broken HTTP) */
			hm_debug("http router: response: %s", http_reader_error(&u->resp));
			kill_conn(c, !u->eof);
			return moved;
		}
		if (!(ev & HTTP_EV_END))
			continue;
		unsigned status = http_reader_status(&u->resp);
		bool keep_alive = http_reader_keep_alive(&u->resp);
		http_reader_next(&u->resp);
		moved = 1;
		if (status / 100 == 1 && status != 101)
			continue; /* an interim answer (100 Continue); the real one follows */
		bool tunnel = e->upgrade;
		q_pop(c);
		if (tunnel) {
			/* Upgrade/CONNECT: whatever the answer, the client now talks to this
			 * upstream only, both ways */
			c->resp_raw_up = (int)(u - c->up);
			continue;
		}
		/* the server closes after it ("Connection: close", close-delimited): the
		 * client, told so, sees the close too */
		if (!keep_alive || (u->eof && u->in_parsed == u->in_len))
			c->finishing = true;
	}
}

static void drive(struct conn *c)
{
	while (!c->dead) {
		int moved = read_client(c);
		moved |= step_requests(c);
		if (c->dead)
			break;
		moved |= step_responses(c);
		if (c->dead)
			break;
		moved |= watch_idle(c);
		if (c->dead)
			break;
		bool raw_done = c->raw_up >= 0 && c->resp_raw_up >= 0 && c->q_len == 0 &&
				c->client_shut && c->up[c->raw_up].shut;
		bool http_done = c->raw_up < 0 && c->q_len == 0 && c->cur < 0 &&
				 (c->client_eof || c->finishing) && c->cin_len == c->cin_parsed;
		bool finished = c->finishing && c->q_len == 0;
		if (raw_done || http_done || finished) {
			kill_conn(c, false);
			break;
		}
		if (!moved)
			break;
	}
}

/* ---- the thread ---- */

static void conn_start(struct http_router *r, struct msg *m)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct hm_err err = {0};
	uint32_t slot = 0;
	while (slot < HTTP_ROUTER_CONNS_MAX && r->slots[slot])
		slot++;
	if (!c || slot == HTTP_ROUTER_CONNS_MAX || !(c->cin = malloc(CIN_CAP)) ||
	    http_reader_init(&c->req, true, &err) < 0) {
		hm_warn("http router: connection refused: %s",
			!c || slot == HTTP_ROUTER_CONNS_MAX ? "too many connections" : "no memory");
		if (c)
			free(c->cin);
		free(c);
		agent_close_reset(m->fd);
		atomic_fetch_sub(&r->count, 1);
		r->ops->closed(r->ctx, m->ctx);
		return;
	}
	c->r = r;
	c->slot = slot;
	c->gen = ++r->next_gen;
	c->ctx = m->ctx;
	c->fd = m->fd;
	c->cur = c->raw_up = c->resp_raw_up = -1;
	c->w = (struct watch){.c = c, .up = -1};
	for (int i = 0; i < HTTP_ROUTER_UPSTREAMS_MAX; i++)
		c->up[i] = (struct upstream){.fd = -1, .w = {.c = c, .up = i}};
	r->slots[slot] = c;
	atomic_fetch_add(&r->counters->connections, 1);
	set_nonblock(c->fd);
	watch_fd(c, c->fd, &c->w);
	/* the pod's connection at once: a server-first protocol shows itself there, and a
	 * request for the pod does not wait for a connect */
	if (upstream_for(c, 0) < 0)
		kill_conn(c, true);
	drive(c);
}

static void stream_arrived(struct http_router *r, uint64_t ticket, int fd,
			   struct relay_release release)
{
	uint32_t gen = (uint32_t)(ticket >> 32), slot = (uint32_t)(ticket >> 20) & 0xfff;
	uint32_t opens = (uint32_t)(ticket >> 8) & 0xfff;
	int up = (int)(ticket & 0xff);
	struct conn *c = slot < HTTP_ROUTER_CONNS_MAX ? r->slots[slot] : NULL;
	if (!c || c->gen != gen || c->dead || up >= HTTP_ROUTER_UPSTREAMS_MAX ||
	    c->up[up].state != UP_OPENING || (c->up[up].opens & 0xfff) != opens) {
		if (fd >= 0)
			close(fd);
		agent_release_run(&release);
		return;
	}
	struct upstream *u = &c->up[up];
	if (fd < 0) {
		u->state = UP_FAILED;
	} else {
		set_nonblock(fd);
		u->fd = fd;
		u->release = release;
		u->state = UP_READY;
		watch_fd(c, fd, &u->w);
	}
	drive(c);
}

static void reap(struct http_router *r)
{
	while (r->dead) {
		struct conn *c = r->dead;
		r->dead = c->next_dead;
		conn_free(c);
	}
}

static void take_inbox(struct http_router *r)
{
	uint64_t v;
	if (read(r->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		hm_debug("http router: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&r->lock);
	struct msg *m = r->inbox;
	r->inbox = r->inbox_tail = NULL;
	pthread_mutex_unlock(&r->lock);
	while (m) {
		struct msg *next = m->next;
		if (m->kind == MSG_ADD)
			conn_start(r, m);
		else
			stream_arrived(r, m->ticket, m->fd, m->release);
		free(m);
		m = next;
	}
}

static void *router_main(void *arg)
{
	struct http_router *r = arg;
	struct epoll_event evs[64];
	while (!atomic_load(&r->stop)) {
		int n = epoll_wait(r->epfd, evs, HM_ARRAY_SIZE(evs), -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			hm_error("http router: epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			if (!evs[i].data.ptr) {
				take_inbox(r);
				continue;
			}
			struct watch *w = evs[i].data.ptr;
			struct conn *c = w->c;
			if (c->dead)
				continue;
			uint32_t e = evs[i].events;
			if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				w->rd = true;
			if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				w->wr = true;
			if (w->up >= 0 && c->up[w->up].state == UP_CONNECTING &&
			    (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
				connect_done(c, &c->up[w->up]);
			drive(c);
		}
		reap(r);
	}
	return NULL;
}

static void post(struct http_router *r, struct msg *m)
{
	pthread_mutex_lock(&r->lock);
	if (r->inbox_tail)
		r->inbox_tail->next = m;
	else
		r->inbox = m;
	r->inbox_tail = m;
	pthread_mutex_unlock(&r->lock);
	uint64_t one = 1;
	if (write(r->evfd, &one, sizeof(one)) < 0)
		hm_debug("http router: eventfd: %s", strerror(errno));
}

int http_router_create(const struct http_router_ops *ops, void *ctx,
		       struct http_router_counters *counters, struct http_router **out,
		       struct hm_err *err)
{
	struct http_router *r = calloc(1, sizeof(*r));
	if (!r)
		return hm_err_set(err, ENOMEM, "http router");
	r->ops = ops;
	r->ctx = ctx;
	r->counters = counters;
	pthread_mutex_init(&r->lock, NULL);
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	r->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (r->epfd < 0 || r->evfd < 0 || epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->evfd, &ev) < 0) {
		hm_err_errno(err, "http router: epoll");
		goto fail;
	}
	int rc = pthread_create(&r->thread, NULL, router_main, r);
	if (rc) {
		hm_err_set(err, rc, "http router: thread");
		goto fail;
	}
	*out = r;
	return 0;
fail:
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->evfd >= 0)
		close(r->evfd);
	pthread_mutex_destroy(&r->lock);
	free(r);
	return -1;
}

void http_router_destroy(struct http_router *r)
{
	if (!r)
		return;
	atomic_store(&r->stop, true);
	uint64_t one = 1;
	if (write(r->evfd, &one, sizeof(one)) < 0)
		hm_debug("http router: eventfd: %s", strerror(errno));
	pthread_join(r->thread, NULL);
	/* what was queued and never started */
	struct msg *m = r->inbox;
	while (m) {
		struct msg *next = m->next;
		if (m->fd >= 0)
			agent_close_reset(m->fd);
		agent_release_run(&m->release);
		if (m->kind == MSG_ADD) {
			atomic_fetch_sub(&r->count, 1);
			r->ops->closed(r->ctx, m->ctx);
		}
		free(m);
		m = next;
	}
	for (size_t i = 0; i < HTTP_ROUTER_CONNS_MAX; i++)
		if (r->slots[i])
			kill_conn(r->slots[i], true);
	reap(r);
	close(r->epfd);
	close(r->evfd);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

int http_router_add(struct http_router *r, int client_fd, void *conn, struct hm_err *err)
{
	if (atomic_fetch_add(&r->count, 1) >= HTTP_ROUTER_CONNS_MAX) {
		atomic_fetch_sub(&r->count, 1);
		agent_close_reset(client_fd);
		return hm_err_set(err, EMFILE, "http router: %d connections already",
				  HTTP_ROUTER_CONNS_MAX);
	}
	struct msg *m = calloc(1, sizeof(*m));
	if (!m) {
		atomic_fetch_sub(&r->count, 1);
		agent_close_reset(client_fd);
		return hm_err_set(err, ENOMEM, "http router");
	}
	*m = (struct msg){.kind = MSG_ADD, .fd = client_fd, .ctx = conn};
	post(r, m);
	return 0;
}

void http_router_stream_ready(struct http_router *r, uint64_t ticket, int fd,
			      const struct relay_release *release)
{
	struct relay_release rel = release ? *release : (struct relay_release){0};
	struct msg *m = calloc(1, sizeof(*m));
	if (!m) {
		if (fd >= 0)
			close(fd);
		agent_release_run(&rel);
		/* the connection then waits for a stream that never comes; its client
		 * times out. Only under memory exhaustion. */
		return;
	}
	*m = (struct msg){.kind = MSG_STREAM, .fd = fd, .ticket = ticket, .release = rel};
	post(r, m);
}
