/* The mirror engine: copies of the connections a target's clients open to a mirrored
 * port, delivered to every session that mirrors it.
 *
 * Threads. The registry (incoming.c) calls port_first with its lock held and from a
 * session's thread, which may have dropped its capabilities: attaching BPF happens on
 * the engine's own control thread, which port_first waits for and which never touches
 * the registry. The engine thread reads the ring buffers of every attached namespace,
 * reassembles (tcp_reassembly.c), offers each new connection to the port's mirror
 * subscriptions (agent_incoming_offer, which takes the registry lock: never while
 * holding ours) and writes the copies to the claimed streams. Connections, copies and
 * reassembly belong to the engine thread alone; m->lock guards what the control thread
 * shares with it: the namespace list and the command queue.
 *
 * A copy's stream gets INCOMING_DATA frames, then one INCOMING_END. Its buffering is
 * bounded: a client that does not keep up loses its copy (END ECONNRESET, counted in
 * mirror_lost) and the other copies go on. A connection whose bytes the agent lost
 * (ring buffer full: the pod got them, no retransmit will come) ends ECONNRESET for
 * every copy: what was delivered is a true prefix, never a stream with a hole. */
#include <endian.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "agent/internal.h"
#include "loader/loader.h"

#define MAX_EVENTS 64
#define TICK_MS 100
/* While a namespace is attached the ring buffers are read at least this often: the
 * program wakes the engine only for big batches (a quarter of the ring). */
#define POLL_MS 10
#define DEFAULT_RING_BYTES (32u << 20)
#define MAX_IOV 64
/* segments this big are written at once, without a copy; smaller ones are batched */
#define DIRECT_MIN (16u << 10)
#define STREAM_SNDBUF (4 << 20)

struct mirror_port {
	struct mirror_port *next;
	uint16_t port;
	struct agent_incoming_port *iport; /* a reference */
	struct mirror_ns *ns;
};

struct mirror_ns {
	struct mirror_ns *next;
	struct agent_mirror *m;
	dev_t dev;
	ino_t ino;
	struct hm_mirror *bpf;
	struct agent_reasm *reasm;
	struct mirror_port *ports;
	uint64_t drops_seen;
};

/* one frame waiting for a stream */
struct chunk {
	struct chunk *next;
	uint8_t *data;
	size_t len, off;
	uint32_t payload; /* bytes of connection data in it */
	bool started;	  /* the rest of a frame whose start is already on the wire */
};

struct mirror_conn;

enum copy_state { COPY_PENDING, COPY_OPEN, COPY_DEAD };

struct mirror_copy {
	int kind; /* first: epoll tag (EPOLL_COPY) */
	struct mirror_copy *conn_next;
	struct mirror_copy *claimed_next; /* the claim queue */
	struct mirror_conn *conn;
	struct agent_mirror *m;
	enum copy_state state;
	int fd;
	int claimed_fd; /* handed over by the claim, not yet taken by the engine */
	struct relay_release claimed_release; /* ... with the stream's place in the budget */
	/* the stream (fd, or claimed_fd until the engine takes it) counts for its session
	 * until this runs, when the copy closes it */
	struct relay_release release;
	bool claim_done;
	struct chunk *head, *tail;
	size_t queued;
	bool end_queued; /* no more data after this */
	int end_error;
	bool counted_lost;
	bool in_graveyard;
	struct mirror_copy *grave_next;
	int64_t offered_ms;
	bool dirty; /* new output: written once per round, in one writev */
	struct mirror_copy *dirty_next;
	struct mirror_copy *all_prev, *all_next; /* every copy, for the shutdown */
};

struct mirror_conn {
	struct mirror_conn *new_next; /* waiting for its offers */
	unsigned refs;		      /* the reassembly, each copy, the offer queue */
	struct agent_incoming_port *iport;
	struct proto_addr client, server;
	struct mirror_copy *copies;
	/* bytes that arrived before the offers were made, for the copies to come */
	struct chunk *pre_head, *pre_tail;
	size_t pre_len;
	bool offered;
	bool ended;
	enum agent_reasm_end how;
};

enum { EPOLL_WAKE = 1, EPOLL_RING, EPOLL_COPY };
static int wake_tag = EPOLL_WAKE;
static int ring_tag = EPOLL_RING;

enum cmd_kind { CMD_ATTACH, CMD_DROP_PORT };
struct command {
	struct command *next;
	enum cmd_kind kind;
	/* attach */
	struct agent_incoming_port *iport;
	struct mirror_port *result;
	struct hm_err err;
	int rc;
	bool done;
	/* drop */
	struct mirror_port *port;
};

struct agent_mirror {
	struct agent_mirror_config cfg;
	int epfd;
	int wakefd;
	pthread_t engine, control;
	bool engine_started, control_started;

	pthread_mutex_t lock; /* below, shared with the control thread */
	pthread_cond_t cond;
	bool stopping;
	struct mirror_ns *nss;
	struct command *attach_q; /* for the control thread */
	struct command *drop_q;	  /* for the engine thread */

	pthread_mutex_t claim_lock;
	struct mirror_copy *claimed; /* copies whose claim came, for the engine */

	/* the engine thread's own */
	struct mirror_conn *new_conns;
	struct mirror_copy *graveyard; /* dead and claimed: freed at the end of a round */
	struct mirror_copy *dirty;
	size_t round_bytes; /* taken from the ring buffers this round */
	uint64_t unoffered; /* copies not offered since the last warning */
	int64_t unoffered_warned_ms;
	bool more; /* a ring buffer has more: no waiting before the next round */
	struct mirror_copy *all_copies;
	size_t queued_total;
};

static void wake(struct agent_mirror *m)
{
	uint64_t one = 1;
	ssize_t n = write(m->wakefd, &one, sizeof(one));
	(void)n; /* a full counter already wakes */
}

/* ---- frames ---- */

static struct chunk *frame(const struct proto_msg *msg, uint32_t payload)
{
	struct proto_buf b = PROTO_BUF_INIT;
	struct hm_err err;
	if (proto_encode(&b, 0, msg, &err) < 0) {
		proto_buf_release(&b);
		return NULL;
	}
	struct chunk *c = calloc(1, sizeof(*c));
	if (!c) {
		proto_buf_release(&b);
		return NULL;
	}
	c->data = b.data;
	c->len = b.len;
	c->payload = payload;
	return c;
}

static struct chunk *data_frame(const void *p, size_t len)
{
	struct proto_msg msg = {.type = PROTO_INCOMING_DATA,
				.incoming_data = {.data = p, .len = (uint32_t)len}};
	return frame(&msg, (uint32_t)len);
}

static void chunk_free(struct chunk *c)
{
	free(c->data);
	free(c);
}

/* ---- copies ---- */

static void conn_put(struct mirror_conn *c);

static void copy_free_chunks(struct mirror_copy *cp)
{
	while (cp->head) {
		struct chunk *c = cp->head;
		cp->head = c->next;
		cp->m->queued_total -= c->len - c->off;
		chunk_free(c);
	}
	cp->tail = NULL;
	cp->queued = 0;
}

static void copy_append(struct mirror_copy *cp, struct chunk *c)
{
	if (cp->tail)
		cp->tail->next = c;
	else
		cp->head = c;
	cp->tail = c;
	cp->queued += c->len - c->off;
	cp->m->queued_total += c->len - c->off;
}

/* The copy lost bytes (the connection's or its own backlog): what was not sent yet is
 * dropped, except the rest of a frame already under way, and END ECONNRESET follows. */
static void copy_reset(struct mirror_copy *cp)
{
	if (cp->state == COPY_DEAD || cp->end_queued)
		return;
	struct chunk *keep = NULL;
	if (cp->head && (cp->head->off > 0 || cp->head->started)) {
		keep = cp->head;
		cp->head = keep->next;
		keep->next = NULL;
		cp->queued -= keep->len - keep->off;
		cp->m->queued_total -= keep->len - keep->off;
	}
	copy_free_chunks(cp);
	if (keep)
		copy_append(cp, keep);
	struct proto_msg end = {.type = PROTO_INCOMING_END, .incoming_end = {.error = ECONNRESET}};
	struct chunk *c = frame(&end, 0);
	if (c)
		copy_append(cp, c);
	cp->end_queued = true;
	cp->end_error = ECONNRESET;
	if (!cp->counted_lost) {
		cp->counted_lost = true;
		atomic_fetch_add(&cp->m->cfg.counters->mirror_lost, 1);
	}
}

static void copy_end(struct mirror_copy *cp, int error)
{
	if (cp->state == COPY_DEAD || cp->end_queued)
		return;
	struct proto_msg end = {.type = PROTO_INCOMING_END, .incoming_end = {.error = error}};
	struct chunk *c = frame(&end, 0);
	if (!c) {
		copy_reset(cp);
		return;
	}
	copy_append(cp, c);
	cp->end_queued = true;
	cp->end_error = error;
}

/* Freed at the end of the engine's round: callers may be walking the lists it is on.
 * Only once its claim came: until then the streams hold a pointer to it. */
static void copy_bury(struct mirror_copy *cp)
{
	if (cp->in_graveyard || !cp->claim_done || cp->state != COPY_DEAD)
		return;
	cp->in_graveyard = true;
	cp->grave_next = cp->m->graveyard;
	cp->m->graveyard = cp;
}

static void copy_kill(struct mirror_copy *cp)
{
	if (cp->state != COPY_DEAD) {
		if (cp->fd >= 0) {
			epoll_ctl(cp->m->epfd, EPOLL_CTL_DEL, cp->fd, NULL);
			close(cp->fd);
			cp->fd = -1;
		}
		copy_free_chunks(cp);
		cp->state = COPY_DEAD;
	}
	agent_release_run(&cp->release);
	copy_bury(cp);
}

/* The fast path for a big segment of a copy that has nothing queued: one writev of the
 * frame straight from the ring buffer's memory. Returns the bytes of p that went (whole frames only
 * count) or are now queued: len, or 0 when the caller must queue the frame itself. */
static size_t copy_write_direct(struct mirror_copy *cp, const uint8_t *p, size_t len)
{
	if (cp->state != COPY_OPEN || cp->head || len < DIRECT_MIN || len > PROTO_INCOMING_DATA_MAX)
		return 0;
	/* INCOMING_DATA: the frame header, then u32 len | bytes (proto/proto.h) */
	uint8_t head[PROTO_HDR_LEN + 4];
	struct proto_hdr hdr = {.len = (uint32_t)(4 + len), .type = PROTO_INCOMING_DATA};
	proto_hdr_encode(head, &hdr);
	uint32_t le = htole32((uint32_t)len);
	memcpy(head + PROTO_HDR_LEN, &le, 4);
	struct iovec iov[2] = {{head, sizeof(head)}, {(void *)p, len}};
	ssize_t n = writev(cp->fd, iov, 2);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		hm_debug("mirror: stream write: %s", strerror(errno));
		copy_kill(cp);
		return len;
	}
	size_t total = sizeof(head) + len;
	if ((size_t)n == total) {
		atomic_fetch_add(&cp->m->cfg.counters->mirror_bytes, len);
		return len;
	}
	/* a short write: the rest of this frame goes first when the socket drains */
	struct chunk *c = calloc(1, sizeof(*c));
	uint8_t *rest = malloc(total - (size_t)n);
	if (!c || !rest) {
		free(c);
		free(rest);
		copy_kill(cp); /* half a frame sent: the stream cannot go on */
		return len;
	}
	size_t done = (size_t)n;
	size_t from_head = done < sizeof(head) ? sizeof(head) - done : 0;
	memcpy(rest, head + (sizeof(head) - from_head), from_head);
	memcpy(rest + from_head, p + (len - (total - done - from_head)), total - done - from_head);
	*c = (struct chunk){
	    .data = rest, .len = total - done, .payload = (uint32_t)len, .started = done > 0};
	copy_append(cp, c);
	return len;
}

static void copy_data(struct mirror_copy *cp, const void *p, size_t len)
{
	if (cp->state == COPY_DEAD || cp->end_queued)
		return;
	if (copy_write_direct(cp, p, len) == len)
		return;
	/* until its claim, a copy is bounded by the total only: a burst at the pod's line
	 * rate must not cost it the bytes of the few ms its client takes to claim */
	if ((cp->state == COPY_OPEN && cp->queued + len > cp->m->cfg.copy_buffer_max) ||
	    cp->m->queued_total + len > cp->m->cfg.total_buffer_max) {
		hm_info("mirror: a copy fell %zu bytes behind: reset", cp->queued);
		copy_reset(cp);
		return;
	}
	for (size_t off = 0; off < len; off += PROTO_INCOMING_DATA_MAX) {
		size_t n =
		    len - off < PROTO_INCOMING_DATA_MAX ? len - off : PROTO_INCOMING_DATA_MAX;
		struct chunk *c = data_frame((const uint8_t *)p + off, n);
		if (!c) {
			copy_reset(cp);
			return;
		}
		copy_append(cp, c);
	}
}

/* Write what is queued, read and drop what the client sent. */
static void copy_service(struct mirror_copy *cp)
{
	if (cp->state != COPY_OPEN)
		return;
	while (cp->head) {
		struct iovec iov[MAX_IOV];
		int niov = 0;
		for (struct chunk *c = cp->head; c && niov < MAX_IOV; c = c->next)
			iov[niov++] = (struct iovec){c->data + c->off, c->len - c->off};
		ssize_t n = writev(cp->fd, iov, niov);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			hm_debug("mirror: stream write: %s", strerror(errno));
			copy_kill(cp);
			return;
		}
		cp->queued -= (size_t)n;
		cp->m->queued_total -= (size_t)n;
		size_t left = (size_t)n;
		while (left && cp->head) {
			struct chunk *c = cp->head;
			size_t take = c->len - c->off < left ? c->len - c->off : left;
			c->off += take;
			left -= take;
			if (c->off < c->len)
				break;
			if (c->payload)
				atomic_fetch_add(&cp->m->cfg.counters->mirror_bytes, c->payload);
			cp->head = c->next;
			if (!cp->head)
				cp->tail = NULL;
			chunk_free(c);
		}
		if (cp->head && cp->head->off)
			break; /* a short write: the socket is full */
	}
	char sink[4096];
	for (;;) {
		ssize_t n = recv(cp->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		/* the client closed its stream: nothing more to deliver to it */
		if (!cp->end_queued || cp->head)
			hm_debug("mirror: a client closed its copy early");
		else if (cp->end_error == 0)
			/* it had all of it: a client that closes as soon as it read the end
			 * can do so before this thread looks at the end below */
			atomic_fetch_add(&cp->m->cfg.counters->mirrored, 1);
		copy_kill(cp);
		return;
	}
	if (cp->end_queued && !cp->head) {
		if (cp->end_error == 0)
			atomic_fetch_add(&cp->m->cfg.counters->mirrored, 1);
		copy_kill(cp);
	}
}

static void copy_dirty(struct mirror_copy *cp)
{
	if (cp->dirty || cp->state != COPY_OPEN)
		return;
	cp->dirty = true;
	cp->dirty_next = cp->m->dirty;
	cp->m->dirty = cp;
}

static void flush_dirty(struct agent_mirror *m)
{
	while (m->dirty) {
		struct mirror_copy *cp = m->dirty;
		m->dirty = cp->dirty_next;
		cp->dirty = false;
		copy_service(cp);
	}
}

/* The stream claim (streams.c), from any thread: queue it for the engine. */
static void copy_claimed(void *ctx, int fd, const struct relay_release *release)
{
	struct mirror_copy *cp = ctx;
	struct agent_mirror *m = cp->m;
	pthread_mutex_lock(&m->claim_lock);
	cp->claimed_fd = fd;
	if (release)
		cp->claimed_release = *release;
	cp->claimed_next = m->claimed;
	m->claimed = cp;
	pthread_mutex_unlock(&m->claim_lock);
	wake(m);
}

static void copy_destroy(struct mirror_copy *cp)
{
	struct mirror_conn *c = cp->conn;
	for (struct mirror_copy **pp = &c->copies; *pp; pp = &(*pp)->conn_next) {
		if (*pp == cp) {
			*pp = cp->conn_next;
			break;
		}
	}
	if (cp->all_prev)
		cp->all_prev->all_next = cp->all_next;
	else
		cp->m->all_copies = cp->all_next;
	if (cp->all_next)
		cp->all_next->all_prev = cp->all_prev;
	free(cp);
	conn_put(c);
}

static void reap(struct agent_mirror *m)
{
	while (m->graveyard) {
		struct mirror_copy *cp = m->graveyard;
		m->graveyard = cp->grave_next;
		copy_destroy(cp);
	}
}

/* A claim arrived: the copy gets its stream, or is gone when there is none. */
static void take_claim(struct mirror_copy *cp)
{
	cp->claim_done = true;
	cp->release = cp->claimed_release;
	if (cp->claimed_fd < 0 || cp->state == COPY_DEAD) {
		if (cp->claimed_fd >= 0)
			close(cp->claimed_fd);
		copy_kill(cp); /* releases the stream, also when the copy died before */
		return;
	}
	cp->fd = cp->claimed_fd;
	cp->state = COPY_OPEN;
	hm_debug("mirror: a copy claimed %lld ms after its offer, %zu bytes waiting",
		 (long long)(hm_now_ms() - cp->offered_ms), cp->queued);
	int fl = fcntl(cp->fd, F_GETFL);
	if (fl >= 0)
		fcntl(cp->fd, F_SETFL, fl | O_NONBLOCK);
	/* the default (wmem_default, ~200 KiB) is what one round could hand to a reader
	 * that keeps up: the engine comes back only after its next round */
	int sndbuf = STREAM_SNDBUF;
	if (setsockopt(cp->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		setsockopt(cp->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.ptr = cp};
	if (epoll_ctl(cp->m->epfd, EPOLL_CTL_ADD, cp->fd, &ev) < 0) {
		copy_kill(cp);
		return;
	}
	copy_service(cp);
}

/* ---- connections ---- */

static void conn_put(struct mirror_conn *c)
{
	if (--c->refs)
		return;
	while (c->pre_head) {
		struct chunk *k = c->pre_head;
		c->pre_head = k->next;
		chunk_free(k);
	}
	agent_incoming_port_put(c->iport);
	free(c);
}

static void set_addr(struct proto_addr *a, uint8_t family, const uint8_t *addr, uint16_t port)
{
	*a = (struct proto_addr){.family = family == 6 ? PROTO_AF_INET6 : PROTO_AF_INET,
				 .port = port};
	memcpy(a->addr, addr, family == 6 ? 16 : 4);
}

static void *reasm_open(void *ctx, const struct agent_tcp_segment *syn)
{
	struct mirror_ns *ns = ctx;
	struct mirror_port *p = ns->ports;
	while (p && p->port != syn->dport)
		p = p->next;
	if (!p)
		return NULL;
	struct mirror_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->refs = 2; /* the reassembly's, the offer queue's */
	c->iport = agent_incoming_port_get(p->iport);
	set_addr(&c->client, syn->family, syn->saddr, syn->sport);
	set_addr(&c->server, syn->family, syn->daddr, syn->dport);
	c->new_next = ns->m->new_conns;
	ns->m->new_conns = c;
	return c;
}

static bool reasm_data(void *ctx, void *conn, const void *p, size_t len)
{
	struct mirror_ns *ns = ctx;
	struct mirror_conn *c = conn;
	if (!c->offered) {
		if (c->pre_len + len > ns->m->cfg.total_buffer_max) {
			/* nobody claimed fast enough: the copies to come would lack bytes */
			c->ended = true;
			c->how = AGENT_REASM_LOST;
			conn_put(c);
			return false;
		}
		struct chunk *k = calloc(1, sizeof(*k));
		uint8_t *d = malloc(len);
		if (!k || !d) {
			free(k);
			free(d);
			c->ended = true;
			c->how = AGENT_REASM_LOST;
			conn_put(c);
			return false;
		}
		memcpy(d, p, len);
		*k = (struct chunk){.data = d, .len = len};
		if (c->pre_tail)
			c->pre_tail->next = k;
		else
			c->pre_head = k;
		c->pre_tail = k;
		c->pre_len += len;
		return true;
	}
	bool live = false;
	for (struct mirror_copy *cp = c->copies; cp; cp = cp->conn_next) {
		copy_data(cp, p, len);
		copy_dirty(cp);
		if (cp->state != COPY_DEAD && !cp->end_queued)
			live = true;
	}
	if (!live) {
		/* every copy is gone or reset: stop following (the reassembly's reference) */
		c->ended = true;
		c->how = AGENT_REASM_RESET;
		conn_put(c);
	}
	return live;
}

static void reasm_end(void *ctx, void *conn, enum agent_reasm_end how)
{
	(void)ctx;
	struct mirror_conn *c = conn;
	c->ended = true;
	c->how = how;
	for (struct mirror_copy *cp = c->copies; cp; cp = cp->conn_next) {
		if (how == AGENT_REASM_LOST)
			copy_reset(cp);
		else
			copy_end(cp, how == AGENT_REASM_FIN ? 0 : ECONNRESET);
		copy_dirty(cp);
	}
	if (how == AGENT_REASM_LOST && !c->offered)
		hm_debug("mirror: a connection lost bytes before it was offered");
	conn_put(c);
}

/* Offer a new connection to every mirror subscription of its port (engine thread,
 * m->lock not held: the registry takes its own). */
static void conn_offer(struct agent_mirror *m, struct mirror_conn *c)
{
	struct agent_incoming_sub *subs[AGENT_INCOMING_MAX_PORT_SUBS];
	size_t n =
	    agent_incoming_port_subs(c->iport, PROTO_INCOMING_MIRROR, subs, HM_ARRAY_SIZE(subs));
	for (size_t i = 0; i < n; i++) {
		struct mirror_copy *cp = calloc(1, sizeof(*cp));
		if (!cp) {
			agent_incoming_sub_put(subs[i]);
			continue;
		}
		*cp = (struct mirror_copy){.kind = EPOLL_COPY,
					   .conn = c,
					   .m = m,
					   .state = COPY_PENDING,
					   .fd = -1,
					   .claimed_fd = -1};
		c->refs++;
		cp->conn_next = c->copies;
		c->copies = cp;
		cp->all_next = m->all_copies;
		if (m->all_copies)
			m->all_copies->all_prev = cp;
		m->all_copies = cp;
		/* the bytes so far, then the end if it came already */
		for (struct chunk *k = c->pre_head; k; k = k->next)
			copy_data(cp, k->data, k->len);
		if (c->ended) {
			if (c->how == AGENT_REASM_LOST)
				copy_reset(cp);
			else
				copy_end(cp, c->how == AGENT_REASM_FIN ? 0 : ECONNRESET);
		}
		struct hm_err err;
		cp->offered_ms = hm_now_ms();
		/* claimed is called exactly once from here on, -1 included */
		if (agent_incoming_offer(subs[i], &c->client, &c->server, copy_claimed, cp, &err) <
		    0) {
			/* the session never sees this connection: a lost copy, said (at most once
			 * a second) where the operator looks */
			atomic_fetch_add(&m->cfg.counters->mirror_lost, 1);
			cp->counted_lost = true;
			m->unoffered++;
			int64_t now = hm_now_ms();
			if (now - m->unoffered_warned_ms >= 1000) {
				hm_warn(
				    "mirror: %llu connection(s) not offered to subscription %u: %s",
				    (unsigned long long)m->unoffered,
				    agent_incoming_sub_id(subs[i]), err.msg);
				m->unoffered = 0;
				m->unoffered_warned_ms = now;
			}
		}
		agent_incoming_sub_put(subs[i]);
	}
	c->offered = true;
	while (c->pre_head) {
		struct chunk *k = c->pre_head;
		c->pre_head = k->next;
		chunk_free(k);
	}
	c->pre_tail = NULL;
	c->pre_len = 0;
	conn_put(c); /* the offer queue's */
}

/* ---- namespaces ---- */

/* Bytes one round may take from a ring buffer before the engine offers the new
 * connections and writes to the streams: they must not wait for a burst to end. */
#define ROUND_BYTES (1u << 20)

static bool on_segment(void *ctx, const struct hm_mirror_segment *seg)
{
	struct mirror_ns *ns = ctx;
	struct agent_mirror *m = ns->m;
	struct agent_tcp_segment s = {
	    .family = seg->family,
	    .sport = seg->sport,
	    .dport = seg->dport,
	    .seq = seg->seq,
	    /* SYN+ACK would be the pod answering a connect of its own to this port */
	    .syn = (seg->tcp_flags & HM_MIRROR_SYN) && !(seg->tcp_flags & HM_MIRROR_ACK),
	    .fin = seg->tcp_flags & HM_MIRROR_FIN,
	    .rst = seg->tcp_flags & HM_MIRROR_RST,
	    .payload = seg->payload,
	    .len = seg->len,
	};
	if ((seg->tcp_flags & HM_MIRROR_SYN) && !s.syn)
		return true;
	memcpy(s.saddr, seg->saddr, sizeof(s.saddr));
	memcpy(s.daddr, seg->daddr, sizeof(s.daddr));
	agent_reasm_segment(ns->reasm, &s, hm_now_ms());
	m->round_bytes += seg->len;
	/* a new connection is offered at once, so its copies are claimed before its
	 * bytes pile up */
	return !m->new_conns && m->round_bytes < ROUND_BYTES;
}

static void ns_free(struct mirror_ns *ns)
{
	/* ends every connection: its copies get END ECONNRESET */
	agent_reasm_destroy(ns->reasm);
	struct hm_err err;
	if (ns->bpf && hm_mirror_destroy(ns->bpf, &err) < 0)
		hm_warn("mirror: %s (the next agent start removes it)", err.msg);
	while (ns->ports) {
		struct mirror_port *p = ns->ports;
		ns->ports = p->next;
		agent_incoming_port_put(p->iport);
		free(p);
	}
	free(ns);
}

static int ns_create(struct agent_mirror *m, int netns_fd, const struct stat *st,
		     struct mirror_ns **out, struct hm_err *err)
{
	struct mirror_ns *ns = calloc(1, sizeof(*ns));
	if (!ns)
		return hm_err_errno(err, "mirror");
	ns->m = m;
	ns->dev = st->st_dev;
	ns->ino = st->st_ino;
	struct agent_reasm_config rc = {
	    .max_conns = 4096,
	    .max_held_conn = 4u << 20,
	    .max_held_total = 64u << 20,
	    .gap_timeout_ms = 1000,
	    .idle_timeout_ms = 3600000, /* a FIN the copy lost is seen by the lost-flow map */
	    .ops = {.open = reasm_open, .data = reasm_data, .end = reasm_end},
	    .ctx = ns,
	};
	if (agent_reasm_create(&rc, &ns->reasm, err) < 0) {
		free(ns);
		return -1;
	}
	size_t ring = m->cfg.ring_bytes ? m->cfg.ring_bytes : DEFAULT_RING_BYTES;
	struct hm_mirror_opts o = {.netns_fd = netns_fd,
				   .ring_bytes = ring,
				   .wakeup_bytes = ring / 4,
				   .on_segment = on_segment,
				   .ctx = ns};
	if (hm_mirror_attach(&o, &ns->bpf, err) < 0) {
		ns_free(ns);
		return -1;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &ring_tag};
	if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, hm_mirror_fd(ns->bpf), &ev) < 0) {
		hm_err_errno(err, "mirror: epoll");
		ns_free(ns);
		return -1;
	}
	*out = ns;
	return 0;
}

/* The control thread's part of port_first: the namespace's program, and the port. */
static void do_attach(struct agent_mirror *m, struct command *cmd)
{
	int netns_fd = agent_incoming_port_netns_fd(cmd->iport);
	uint16_t port = agent_incoming_port_number(cmd->iport);
	struct stat st;
	if (fstat(netns_fd, &st) < 0) {
		cmd->rc = hm_err_errno(&cmd->err, "mirror: network namespace");
		return;
	}
	struct mirror_port *p = calloc(1, sizeof(*p));
	if (!p) {
		cmd->rc = hm_err_errno(&cmd->err, "mirror");
		return;
	}
	p->port = port;
	p->iport = agent_incoming_port_get(cmd->iport);

	pthread_mutex_lock(&m->lock);
	struct mirror_ns *ns = m->nss;
	while (ns && !(ns->dev == st.st_dev && ns->ino == st.st_ino))
		ns = ns->next;
	pthread_mutex_unlock(&m->lock);
	if (!ns) {
		/* slow (BPF load, netlink): outside the lock. Only this thread adds
		 * namespaces, so nobody adds this one meanwhile. */
		if (ns_create(m, netns_fd, &st, &ns, &cmd->err) < 0) {
			agent_incoming_port_put(p->iport);
			free(p);
			cmd->rc = -1;
			return;
		}
		pthread_mutex_lock(&m->lock);
		ns->next = m->nss;
		m->nss = ns;
		pthread_mutex_unlock(&m->lock);
		hm_info("mirror: program attached in network namespace %lu",
			(unsigned long)st.st_ino);
	}
	pthread_mutex_lock(&m->lock);
	int r = hm_mirror_port_add(ns->bpf, port, &cmd->err);
	if (r == 0) {
		p->ns = ns;
		p->next = ns->ports;
		ns->ports = p;
	}
	pthread_mutex_unlock(&m->lock);
	if (r < 0) {
		agent_incoming_port_put(p->iport);
		free(p);
		cmd->rc = -1;
		return;
	}
	cmd->result = p;
	cmd->rc = 0;
}

/* Engine thread, m->lock held: a port's last subscription went. */
static void do_drop_port(struct agent_mirror *m, struct mirror_port *p)
{
	struct mirror_ns *ns = p->ns;
	for (struct mirror_port **pp = &ns->ports; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	bool still = false; /* subscribed again meanwhile */
	for (struct mirror_port *q = ns->ports; q; q = q->next)
		still |= q->port == p->port;
	struct hm_err err;
	if (!still) {
		if (hm_mirror_port_remove(ns->bpf, p->port, &err) < 0)
			hm_warn("%s", err.msg);
		agent_reasm_drop_port(ns->reasm, p->port);
	}
	agent_incoming_port_put(p->iport);
	free(p);
	if (ns->ports)
		return;
	for (struct mirror_ns **pp = &m->nss; *pp; pp = &(*pp)->next) {
		if (*pp == ns) {
			*pp = ns->next;
			break;
		}
	}
	epoll_ctl(m->epfd, EPOLL_CTL_DEL, hm_mirror_fd(ns->bpf), NULL);
	hm_info("mirror: program detached from network namespace %lu", (unsigned long)ns->ino);
	ns_free(ns);
}

/* ---- threads ---- */

static void *control_main(void *arg)
{
	struct agent_mirror *m = arg;
	pthread_mutex_lock(&m->lock);
	for (;;) {
		while (!m->attach_q && !m->stopping)
			pthread_cond_wait(&m->cond, &m->lock);
		if (m->stopping && !m->attach_q)
			break;
		struct command *cmd = m->attach_q;
		m->attach_q = cmd->next;
		pthread_mutex_unlock(&m->lock);
		if (m->stopping)
			cmd->rc = hm_err_set(&cmd->err, ESHUTDOWN, "mirror: the agent is stopping");
		else
			do_attach(m, cmd);
		pthread_mutex_lock(&m->lock);
		cmd->done = true;
		pthread_cond_broadcast(&m->cond);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static void on_lost_flow(void *ctx, const struct hm_mirror_flow *f)
{
	struct mirror_ns *ns = ctx;
	struct agent_tcp_segment key = {.family = f->family, .sport = f->sport, .dport = f->dport};
	memcpy(key.saddr, f->saddr, sizeof(key.saddr));
	memcpy(key.daddr, f->daddr, sizeof(key.daddr));
	agent_reasm_lose(ns->reasm, &key);
}

static void check_drops(struct mirror_ns *ns)
{
	hm_mirror_take_lost(ns->bpf, on_lost_flow, ns);
	uint64_t segs, bytes;
	hm_mirror_drops(ns->bpf, &segs, &bytes);
	if (segs > ns->drops_seen) {
		hm_warn("mirror: ring buffer full: %llu segments (%llu bytes) not copied; their "
			"connections are reset to the subscribers",
			(unsigned long long)(segs - ns->drops_seen), (unsigned long long)bytes);
		ns->drops_seen = segs;
	}
}

static void *engine_main(void *arg)
{
	struct agent_mirror *m = arg;
	struct epoll_event evs[MAX_EVENTS];
	int64_t next_tick = hm_now_ms() + TICK_MS;
	bool attached = false;
	for (;;) {
		int timeout = hm_ms_until(next_tick);
		if (attached && timeout > POLL_MS)
			timeout = POLL_MS;
		if (m->more)
			timeout = 0;
		int n = epoll_wait(m->epfd, evs, MAX_EVENTS, timeout);
		for (int i = 0; i < n; i++) {
			int kind = *(int *)evs[i].data.ptr;
			if (kind == EPOLL_WAKE) {
				uint64_t v;
				ssize_t r = read(m->wakefd, &v, sizeof(v));
				(void)r;
			}
		}
		pthread_mutex_lock(&m->lock);
		if (m->stopping) {
			pthread_mutex_unlock(&m->lock);
			break;
		}
		while (m->drop_q) {
			struct command *cmd = m->drop_q;
			m->drop_q = cmd->next;
			do_drop_port(m, cmd->port);
			free(cmd);
		}
		int64_t now = hm_now_ms();
		bool tick = now >= next_tick;
		m->round_bytes = 0;
		m->more = false;
		for (struct mirror_ns *ns = m->nss; ns; ns = ns->next) {
			struct hm_err err;
			int r = hm_mirror_consume(ns->bpf, &err);
			if (r < 0)
				hm_warn("%s", err.msg);
			m->more |= r > 0;
			if (tick) {
				check_drops(ns);
				agent_reasm_tick(ns->reasm, now);
			}
		}
		if (tick)
			next_tick = now + TICK_MS;
		struct mirror_conn *fresh = m->new_conns;
		m->new_conns = NULL;
		attached = m->nss != NULL;
		pthread_mutex_unlock(&m->lock);

		/* oldest first: the list was built by pushing */
		struct mirror_conn *rev = NULL;
		while (fresh) {
			struct mirror_conn *c = fresh;
			fresh = c->new_next;
			c->new_next = rev;
			rev = c;
		}
		while (rev) {
			struct mirror_conn *c = rev;
			rev = c->new_next;
			conn_offer(m, c);
		}

		pthread_mutex_lock(&m->claim_lock);
		struct mirror_copy *claims = m->claimed;
		m->claimed = NULL;
		pthread_mutex_unlock(&m->claim_lock);
		while (claims) {
			struct mirror_copy *cp = claims;
			claims = cp->claimed_next;
			take_claim(cp);
		}
		for (int i = 0; i < n; i++) {
			struct mirror_copy *cp = evs[i].data.ptr;
			if (cp->kind == EPOLL_COPY)
				copy_service(cp);
		}
		flush_dirty(m);
		reap(m);
	}
	return NULL;
}

/* ---- the registry's hook ---- */

static int port_first(void *engine, struct agent_incoming_port *port, void **state,
		      struct hm_err *err)
{
	struct agent_mirror *m = engine;
	struct command cmd = {.kind = CMD_ATTACH, .iport = port};
	pthread_mutex_lock(&m->lock);
	cmd.next = m->attach_q;
	m->attach_q = &cmd;
	pthread_cond_broadcast(&m->cond);
	while (!cmd.done)
		pthread_cond_wait(&m->cond, &m->lock);
	pthread_mutex_unlock(&m->lock);
	if (cmd.rc < 0) {
		*err = cmd.err;
		return -1;
	}
	*state = cmd.result;
	return 0;
}

static void port_last(void *engine, struct agent_incoming_port *port, void *state)
{
	(void)port;
	struct agent_mirror *m = engine;
	struct command *cmd = calloc(1, sizeof(*cmd));
	if (!cmd) {
		hm_error("mirror: out of memory: port %u stays mirrored",
			 agent_incoming_port_number(port));
		return;
	}
	cmd->kind = CMD_DROP_PORT;
	cmd->port = state;
	pthread_mutex_lock(&m->lock);
	cmd->next = m->drop_q;
	m->drop_q = cmd;
	pthread_mutex_unlock(&m->lock);
	wake(m);
}

const struct agent_incoming_mirror_ops agent_mirror_ops = {
    .port_first = port_first,
    .port_last = port_last,
};

int agent_mirror_create(const struct agent_mirror_config *cfg, struct agent_mirror **out,
			struct hm_err *err)
{
	*out = NULL;
	struct agent_mirror *m = calloc(1, sizeof(*m));
	if (!m)
		return hm_err_errno(err, "mirror");
	m->cfg = *cfg;
	/* tc filters outlive their agent: a killed one's still copy the pods' traffic
	 * into a ring buffer nobody reads */
	struct hm_err stale_err;
	int removed = hm_tc_remove_stale_everywhere(&stale_err);
	if (removed < 0)
		hm_warn("mirror: %s", stale_err.msg);
	else if (removed)
		hm_info("mirror: removed %d stale hermit tc filter(s) of an earlier agent",
			removed);
	if (!m->cfg.copy_buffer_max)
		m->cfg.copy_buffer_max = AGENT_MIRROR_COPY_BUFFER;
	if (!m->cfg.total_buffer_max)
		m->cfg.total_buffer_max = AGENT_MIRROR_TOTAL_BUFFER;
	m->epfd = epoll_create1(EPOLL_CLOEXEC);
	m->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->claim_lock, NULL);
	pthread_cond_init(&m->cond, NULL);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &wake_tag};
	if (m->epfd < 0 || m->wakefd < 0 || epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->wakefd, &ev) < 0) {
		hm_err_errno(err, "mirror: epoll");
		agent_mirror_destroy(m);
		return -1;
	}
	int r = pthread_create(&m->engine, NULL, engine_main, m);
	if (r == 0) {
		m->engine_started = true;
		r = pthread_create(&m->control, NULL, control_main, m);
		m->control_started = r == 0;
	}
	if (r != 0) {
		hm_err_set(err, r, "mirror: thread");
		agent_mirror_destroy(m);
		return -1;
	}
	*out = m;
	return 0;
}

void agent_mirror_stop(struct agent_mirror *m)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	if (m->wakefd >= 0)
		wake(m);
	if (m->engine_started)
		pthread_join(m->engine, NULL);
	if (m->control_started)
		pthread_join(m->control, NULL);
	m->engine_started = m->control_started = false;
}

void agent_mirror_destroy(struct agent_mirror *m)
{
	if (!m)
		return;
	agent_mirror_stop(m);
	/* the engine is stopped: its objects are ours now */
	while (m->drop_q) {
		struct command *cmd = m->drop_q;
		m->drop_q = cmd->next;
		do_drop_port(m, cmd->port);
		free(cmd);
	}
	while (m->nss) {
		struct mirror_ns *ns = m->nss;
		m->nss = ns->next;
		ns_free(ns);
	}
	while (m->new_conns) {
		struct mirror_conn *c = m->new_conns;
		m->new_conns = c->new_next;
		conn_put(c);
	}
	/* copies whose claim came: the rest were resolved when the streams went */
	while (m->claimed) {
		struct mirror_copy *cp = m->claimed;
		m->claimed = cp->claimed_next;
		take_claim(cp);
	}
	m->dirty = NULL;
	for (struct mirror_copy *cp = m->all_copies; cp; cp = cp->all_next) {
		cp->claim_done = true; /* the streams are gone: no claim will come */
		copy_kill(cp);
	}
	reap(m);
	if (m->epfd >= 0)
		close(m->epfd);
	if (m->wakefd >= 0)
		close(m->wakefd);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->claim_lock);
	pthread_cond_destroy(&m->cond);
	free(m);
}
