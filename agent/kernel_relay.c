/* The kernel relay: RELAY_TCP streams whose bytes the kernel moves (loader's sockrelay,
 * bpf/sockrelay.bpf.c) instead of the relay thread. The verdict program redirects each
 * socket's bytes to its peer's transmit path from the softirq that received them, so a
 * request crosses the agent without waking any of its threads (on a VM whose idle vCPU
 * halts, each such wake-up costs 20-30 us).
 *
 * This file's thread does what the program cannot:
 * - EOF: the program sees payload, not FIN. A FIN on one socket is forwarded
 *   (shutdown(SHUT_WR) of the peer) only once every byte received before it went
 *   through the program and the peer's TCP took every byte redirected to it: received
 *   (tcpi_bytes_received) against redirected + passed, written (tcpi_bytes_acked +
 *   SIOCOUTQ, from what the agent itself wrote before) against redirected + drained.
 * - Bytes the program left on their socket (its peer was at its limit, or gone): read
 *   and written to the peer once the kernel's queue to that peer is empty (so they keep
 *   their place), then the program redirects again.
 * - The bound: the program redirects a direction only up to a limit the thread keeps at
 *   what the peer's TCP took plus KR_CREDIT. Past it bytes stay on the socket they came
 *   in on, whose TCP window closes as they fill it: a client writing to a pod that does
 *   not read cannot grow the kernel's queue between the two sockets. The queue is
 *   bounded in skbs too (HM_SOCKRELAY_SKB_CREDIT, raised only when the queue is seen
 *   empty): one-byte segments would otherwise queue ~1 KiB of kernel memory per byte.
 * - A reset or error on one socket resets the other (close with SO_LINGER 0), as
 *   RELAY_TCP does.
 * The sockets are not polled for input (a redirected byte would wake the thread): the
 * program's ring buffer says when a socket needs the thread, and a short timer runs
 * while one waits for the kernel's queue to empty. */
#include <linux/sockios.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* tcp_info with bytes_acked and bytes_received */
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/internal.h"
#include "loader/loader.h"

/* how far the kernel may run ahead of what a peer's TCP took, per direction: KR_CREDIT
 * while half the memory budget is free, then KR_MIN_CREDIT */
#define KR_CREDIT (2u << 20)
#define KR_MIN_CREDIT (128u << 10)
/* what one read of bytes left to the thread may take */
#define KR_CHUNK (64u << 10)
/* polling while a socket waits for the kernel's queue to its peer to empty: it starts
 * short (the queue is usually a few packets) and backs off for a peer that stopped
 * reading */
#define KR_POLL_MIN_MS 1
#define KR_POLL_MAX_MS 64

struct kr_pair;

struct kr_side {
	struct kr_pair *pair;
	int fd;
	uint8_t idx;
	bool eof;	       /* FIN received */
	bool forwarded;	       /* its EOF went to the peer (shutdown SHUT_WR) */
	uint32_t events;       /* registered with epoll */
	bool unwatched;	       /* hung up: out of the epoll set for good */
	uint64_t consumed;     /* bytes the agent read from it before it entered the map */
	uint64_t wrote_before; /* bytes the agent wrote to it before it entered the map */
	uint64_t sent;	       /* bytes of this side's passed ones written to the peer */
	uint64_t limit;	       /* what the program was told last */
	char *held;	       /* passed bytes read, not yet written to the peer */
	size_t held_len, held_off;
};

struct kr_pair {
	struct kr_pair *next, *prev;
	struct kr_side side[2]; /* AGENT_KR_CLIENT, AGENT_KR_REMOTE */
	struct hm_sockrelay_pair slots;
	uint64_t credit; /* per direction, reserved from the memory budget */
	struct relay_release release;
	bool busy; /* waits for the kernel: looked at again on the timer */
	bool dead;
};

struct agent_krelay {
	struct hm_sockrelay *bpf;
	struct relay_counters *counters;
	atomic_uint_fast64_t *streams; /* kernel-relayed, open */
	int epfd, wake_fd;
	pthread_t thread;
	pthread_mutex_t lock; /* incoming, stopping, memory_used */
	uint64_t max_memory;  /* 0: unlimited */
	uint64_t memory_used; /* credits of the open pairs */
	struct kr_pair *incoming;
	bool stopping;
	struct kr_pair *pairs; /* the thread's */
	/* closed during the current batch of events, which may still point at them */
	struct kr_pair *graveyard;
	struct kr_pair *by_slot[HM_SOCKRELAY_SLOTS]; /* the thread's */
	int poll_ms;
	int64_t busy_at; /* CLOCK_MONOTONIC ms: when the waiting pairs are looked at next */
};

/* Bytes written to fd's TCP since the connection began: acked plus still queued, read
 * until two tcp_info around the queue's size agree (an ack between them would count
 * its bytes in neither). */
static int tcp_written(int fd, uint64_t *out)
{
	for (int tries = 0; tries < 100; tries++) {
		struct tcp_info a, b;
		socklen_t la = sizeof(a), lb = sizeof(b);
		int outq = 0;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &a, &la) < 0 ||
		    ioctl(fd, SIOCOUTQ, &outq) < 0 ||
		    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &b, &lb) < 0)
			return -1;
		if (a.tcpi_bytes_acked == b.tcpi_bytes_acked) {
			*out = a.tcpi_bytes_acked + (uint64_t)outq;
			return 0;
		}
	}
	errno = EAGAIN;
	return -1;
}

static int tcp_received(int fd, uint64_t *out)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -1;
	*out = ti.tcpi_bytes_received;
	return 0;
}

/* TCP_ESTABLISHED of the kernel's tcp_states.h: linux/tcp.h, for the tcp_info this file
 * needs, does not have it and glibc's netinet/tcp.h would clash with that header */
#define KR_TCP_ESTABLISHED 1

static bool tcp_established(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	       ti.tcpi_state == KR_TCP_ESTABLISHED;
}

/* Bytes the agent has read from fd so far: received minus still queued, read until two
 * tcp_info agree (bytes may arrive between the calls). Before fd enters the map only. */
static int tcp_consumed(int fd, uint64_t *out)
{
	for (int tries = 0; tries < 100; tries++) {
		uint64_t a, b;
		int inq = 0;
		if (tcp_received(fd, &a) < 0 || ioctl(fd, SIOCINQ, &inq) < 0 ||
		    tcp_received(fd, &b) < 0)
			return -1;
		if (a == b) {
			*out = a - (uint64_t)inq;
			return 0;
		}
	}
	errno = EAGAIN;
	return -1;
}

static void watch(struct agent_krelay *k, struct kr_side *s, uint32_t events)
{
	if (s->fd < 0 || s->unwatched || s->events == events)
		return;
	struct epoll_event ev = {.events = events, .data.ptr = s};
	epoll_ctl(k->epfd, EPOLL_CTL_MOD, s->fd, &ev);
	s->events = events;
}

void agent_close_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Reserve the credit of a new pair (per direction) from the memory budget; 0: spent. */
static uint64_t credit_take(struct agent_krelay *k)
{
	uint64_t credit = 0;
	pthread_mutex_lock(&k->lock);
	if (!k->max_memory || k->memory_used + 2 * KR_CREDIT <= k->max_memory / 2)
		credit = KR_CREDIT;
	else if (k->memory_used + 2 * KR_MIN_CREDIT <= k->max_memory)
		credit = KR_MIN_CREDIT;
	k->memory_used += 2 * credit;
	pthread_mutex_unlock(&k->lock);
	return credit;
}

static void credit_put(struct agent_krelay *k, uint64_t credit)
{
	pthread_mutex_lock(&k->lock);
	k->memory_used -= 2 * credit;
	pthread_mutex_unlock(&k->lock);
}

static void pair_close(struct agent_krelay *k, struct kr_pair *p, bool reset, const char *why)
{
	if (p->dead)
		return;
	p->dead = true;
	struct hm_sockrelay_side c[2];
	for (int i = 0; i < 2; i++)
		hm_sockrelay_get(k->bpf, &p->slots, i, &c[i]);
	hm_debug(
	    "kernel relay: stream closed%s%s; bytes from the client %llu, to it %llu, of "
	    "which moved by the agent %llu",
	    why ? ": " : "", why ? why : "",
	    (unsigned long long)(c[AGENT_KR_CLIENT].redirected + p->side[AGENT_KR_CLIENT].sent),
	    (unsigned long long)(c[AGENT_KR_REMOTE].redirected + p->side[AGENT_KR_REMOTE].sent),
	    (unsigned long long)(p->side[0].sent + p->side[1].sent));
	atomic_fetch_add(&k->counters->bytes_out,
			 c[AGENT_KR_CLIENT].redirected + p->side[AGENT_KR_CLIENT].sent);
	atomic_fetch_add(&k->counters->bytes_in,
			 c[AGENT_KR_REMOTE].redirected + p->side[AGENT_KR_REMOTE].sent);
	hm_sockrelay_remove(k->bpf, &p->slots);
	for (int i = 0; i < 2; i++) {
		struct kr_side *s = &p->side[i];
		k->by_slot[p->slots.slot[i]] = NULL;
		epoll_ctl(k->epfd, EPOLL_CTL_DEL, s->fd, NULL);
		if (reset)
			agent_close_reset(s->fd);
		else
			close(s->fd);
		s->fd = -1;
		free(s->held);
		s->held = NULL;
	}
	if (p->release.fn)
		p->release.fn(p->release.arg);
	credit_put(k, p->credit);
	if (p->prev)
		p->prev->next = p->next;
	else
		k->pairs = p->next;
	if (p->next)
		p->next->prev = p->prev;
	atomic_fetch_sub(&k->counters->streams, 1);
	atomic_fetch_sub(k->streams, 1);
	p->next = k->graveyard;
	k->graveyard = p;
}

static void bury(struct agent_krelay *k)
{
	while (k->graveyard) {
		struct kr_pair *p = k->graveyard;
		k->graveyard = p->next;
		free(p);
	}
}

/* Write held bytes to the peer. 1: all written; 0: the peer is full (EPOLLOUT armed);
 * -1: the peer failed. */
static int flush_held(struct agent_krelay *k, struct kr_side *s, struct kr_side *peer)
{
	while (s->held_off < s->held_len) {
		ssize_t n = send(peer->fd, s->held + s->held_off, s->held_len - s->held_off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				watch(k, peer, peer->events | EPOLLOUT);
				return 0;
			}
			return -1;
		}
		s->held_off += (size_t)n;
		s->sent += (uint64_t)n;
	}
	s->held_len = s->held_off = 0;
	return 1;
}

/* Move one direction (s to its peer) as far as it goes now. Returns -1 when the pair
 * must be reset; sets p->busy when it has to wait for the kernel. */
static int step(struct agent_krelay *k, struct kr_pair *p, struct kr_side *s)
{
	struct kr_side *peer = &p->side[1 - s->idx];
	for (;;) {
		struct hm_sockrelay_side c;
		hm_sockrelay_get(k->bpf, &p->slots, s->idx, &c);
		uint64_t written;
		if (tcp_written(peer->fd, &written) < 0) {
			if (errno != EAGAIN)
				return -1;
			/* acks kept coming between the reads (a busy stream): not a failure
			 * of the stream, look again shortly */
			p->busy = true;
			return 0;
		}
		/* what the kernel handed to the peer's TCP: the rest of redirected is queued
		 * between the two sockets */
		uint64_t kernel_done = written - peer->wrote_before - s->sent;
		bool queue_empty = kernel_done >= c.redirected;
		if (queue_empty)
			hm_sockrelay_skbs_gone(k->bpf, &p->slots, s->idx, c.skbs);
		else if (c.skbs_low)
			p->busy = true; /* the skb credit is raised once the queue empties */
		uint64_t limit = kernel_done + p->credit;
		if (limit > s->limit || s->held_len == 0) {
			if (limit > s->limit)
				s->limit = limit;
			/* drained counts only bytes written whole: while some are held the
			 * program keeps leaving new ones to this thread, behind them */
			hm_sockrelay_set(k->bpf, &p->slots, s->idx, s->sent, s->limit,
					 s->limit - p->credit / 2);
		}
		if (s->held_len) {
			if (!queue_empty) {
				p->busy = true;
				return 0;
			}
			int r = flush_held(k, s, peer);
			if (r < 0)
				return -1;
			if (r == 0)
				return 0; /* EPOLLOUT on the peer calls again */
			continue;
		}
		if (c.passed > s->sent) {
			if (!queue_empty) {
				p->busy = true;
				return 0;
			}
			if (!s->held && !(s->held = malloc(KR_CHUNK)))
				return -1;
			uint64_t want = c.passed - s->sent;
			ssize_t n =
			    recv(s->fd, s->held, want < KR_CHUNK ? want : KR_CHUNK, MSG_DONTWAIT);
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
				p->busy = true; /* counted before it was queued: soon */
				return 0;
			}
			if (n <= 0)
				return -1;
			s->held_len = (size_t)n;
			s->held_off = 0;
			/* A verdict that read drained just before it grew and counts its skb
			 * as passed just after this thread last read passed sends no record
			 * (it did not see passed == drained): look once more shortly, when
			 * any verdict under way has ended. */
			p->busy = true;
			continue;
		}
		if (s->eof && !s->forwarded) {
			uint64_t received;
			if (tcp_received(s->fd, &received) < 0)
				return -1;
			/* the FIN counts one in bytes_received */
			bool all_seen = received - 1 - s->consumed == c.redirected + c.passed;
			if (!all_seen || !queue_empty) {
				p->busy = true;
				return 0;
			}
			shutdown(peer->fd, SHUT_WR);
			s->forwarded = true;
		}
		return 0;
	}
}

static int side_error(int fd)
{
	int e = 0;
	socklen_t len = sizeof(e);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
		return errno;
	return e;
}

static void pair_run(struct agent_krelay *k, struct kr_pair *p)
{
	p->busy = false;
	for (int i = 0; i < 2 && !p->dead; i++) {
		if (step(k, p, &p->side[i]) < 0) {
			pair_close(k, p, true, "a socket failed");
			return;
		}
	}
	if (!p->dead && p->side[0].forwarded && p->side[1].forwarded)
		pair_close(k, p, false, NULL);
}

static void on_socket(struct agent_krelay *k, struct kr_side *s, uint32_t ev)
{
	struct kr_pair *p = s->pair;
	if (p->dead)
		return;
	if (ev & (EPOLLERR | EPOLLHUP)) {
		int e = side_error(s->fd);
		if (e) {
			char why[96];
			snprintf(why, sizeof(why), "%s side: %s",
				 s->idx == AGENT_KR_CLIENT ? "client" : "remote", strerror(e));
			pair_close(k, p, true, why);
			return;
		}
	}
	if (ev & (EPOLLRDHUP | EPOLLHUP)) {
		s->eof = true;
		/* nothing more to hear from its input */
		watch(k, s, s->events & ~EPOLLRDHUP);
	}
	if (ev & EPOLLHUP) {
		/* Both directions are shut (its EOF came and its peer's went to it) and no
		 * mask turns EPOLLHUP off: left in the set it would wake this thread on every
		 * wait until the pair closes, which a peer that does not read puts off at
		 * will. Nothing is written to it any more; the timer looks after the pair. */
		epoll_ctl(k->epfd, EPOLL_CTL_DEL, s->fd, NULL);
		s->unwatched = true;
	}
	if (ev & EPOLLOUT)
		watch(k, s, s->events & ~EPOLLOUT);
	pair_run(k, p);
}

static void on_slot(void *ctx, uint32_t slot)
{
	struct agent_krelay *k = ctx;
	struct kr_pair *p = k->by_slot[slot];
	if (p && !p->dead)
		pair_run(k, p);
}

static void take_incoming(struct agent_krelay *k)
{
	uint64_t v;
	ssize_t rd = read(k->wake_fd, &v, sizeof(v));
	(void)rd;
	pthread_mutex_lock(&k->lock);
	struct kr_pair *in = k->incoming;
	k->incoming = NULL;
	pthread_mutex_unlock(&k->lock);
	while (in) {
		struct kr_pair *p = in;
		in = in->next;
		p->prev = NULL;
		p->next = k->pairs;
		if (k->pairs)
			k->pairs->prev = p;
		k->pairs = p;
		for (int i = 0; i < 2; i++) {
			struct kr_side *s = &p->side[i];
			k->by_slot[p->slots.slot[i]] = p;
			s->events = EPOLLRDHUP;
			struct epoll_event ev = {.events = s->events, .data.ptr = s};
			if (epoll_ctl(k->epfd, EPOLL_CTL_ADD, s->fd, &ev) < 0)
				p->dead = true; /* closed below, with a reset */
		}
		if (p->dead) {
			p->dead = false;
			pair_close(k, p, true, "epoll");
			continue;
		}
		/* the program's records for it may have come before it was known here */
		pair_run(k, p);
	}
}

static void *krelay_thread(void *arg)
{
	struct agent_krelay *k = arg;
	struct epoll_event evs[64];
	for (;;) {
		bool busy = false;
		for (struct kr_pair *p = k->pairs; p; p = p->next)
			busy |= p->busy;
		int64_t now = hm_now_ms();
		int timeout = !busy ? -1 : k->busy_at > now ? (int)(k->busy_at - now) : 0;
		int n = epoll_wait(k->epfd, evs, 64, timeout);
		if (n < 0) {
			if (errno != EINTR)
				break;
			n = 0;
		}
		bool stop = false;
		for (int i = 0; i < n; i++) {
			void *ptr = evs[i].data.ptr;
			if (ptr == &k->wake_fd) {
				take_incoming(k);
				pthread_mutex_lock(&k->lock);
				stop = k->stopping;
				pthread_mutex_unlock(&k->lock);
			} else if (ptr == k) {
				hm_sockrelay_consume(k->bpf, on_slot, k);
			}
		}
		/* a pair closed above stays allocated (dead) until bury, after the batch */
		for (int i = 0; i < n; i++) {
			void *ptr = evs[i].data.ptr;
			if (ptr != &k->wake_fd && ptr != k)
				on_socket(k, ptr, evs[i].events);
		}
		bury(k);
		now = hm_now_ms();
		if (n > 0) {
			/* activity: look at the waiting pairs again soon; but events, however
			 * many (another client's streams opened and closed in a loop), must not
			 * put that look off, or the waiting pairs stall */
			k->poll_ms = KR_POLL_MIN_MS;
			if (k->busy_at > now + KR_POLL_MIN_MS)
				k->busy_at = now + KR_POLL_MIN_MS;
		}
		if (now >= k->busy_at) {
			for (struct kr_pair *p = k->pairs, *next; p; p = next) {
				next = p->next;
				if (p->busy)
					pair_run(k, p);
			}
			bury(k);
			/* backs off while nothing else happens: a peer that stopped reading */
			if (n == 0)
				k->poll_ms = k->poll_ms * 2 > KR_POLL_MAX_MS ? KR_POLL_MAX_MS
									     : k->poll_ms * 2;
			k->busy_at = now + k->poll_ms;
		}
		if (stop)
			break;
	}
	while (k->pairs)
		pair_close(k, k->pairs, true, "agent stopping");
	bury(k);
	return NULL;
}

int agent_krelay_create(struct relay_counters *counters, atomic_uint_fast64_t *streams,
			uint64_t max_memory, struct agent_krelay **out, struct hm_err *err)
{
	*out = NULL;
	struct agent_krelay *k = calloc(1, sizeof(*k));
	if (!k)
		return hm_err_errno(err, "kernel relay");
	k->counters = counters;
	k->streams = streams;
	k->max_memory = max_memory;
	k->epfd = k->wake_fd = -1;
	k->poll_ms = KR_POLL_MIN_MS;
	pthread_mutex_init(&k->lock, NULL);
	if (hm_sockrelay_open(&k->bpf, err) < 0)
		goto fail;
	k->epfd = epoll_create1(EPOLL_CLOEXEC);
	k->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (k->epfd < 0 || k->wake_fd < 0) {
		hm_err_errno(err, "kernel relay: epoll");
		goto fail;
	}
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &k->wake_fd};
	struct epoll_event rb = {.events = EPOLLIN, .data.ptr = k};
	if (epoll_ctl(k->epfd, EPOLL_CTL_ADD, k->wake_fd, &ev) < 0 ||
	    epoll_ctl(k->epfd, EPOLL_CTL_ADD, hm_sockrelay_events_fd(k->bpf), &rb) < 0) {
		hm_err_errno(err, "kernel relay: epoll");
		goto fail;
	}
	int rc = pthread_create(&k->thread, NULL, krelay_thread, k);
	if (rc) {
		hm_err_set(err, rc, "kernel relay: thread");
		goto fail;
	}
	*out = k;
	return 0;
fail:
	hm_sockrelay_close(k->bpf);
	if (k->epfd >= 0)
		close(k->epfd);
	if (k->wake_fd >= 0)
		close(k->wake_fd);
	pthread_mutex_destroy(&k->lock);
	free(k);
	return -1;
}

void agent_krelay_destroy(struct agent_krelay *k)
{
	if (!k)
		return;
	pthread_mutex_lock(&k->lock);
	k->stopping = true;
	pthread_mutex_unlock(&k->lock);
	uint64_t one = 1;
	ssize_t w = write(k->wake_fd, &one, sizeof(one));
	(void)w;
	pthread_join(k->thread, NULL);
	/* pairs added after the thread's last look */
	while (k->incoming) {
		struct kr_pair *p = k->incoming;
		k->incoming = p->next;
		p->prev = p->next = NULL;
		k->pairs = p;
		pair_close(k, p, true, "agent stopping");
	}
	bury(k);
	hm_sockrelay_close(k->bpf);
	close(k->epfd);
	close(k->wake_fd);
	pthread_mutex_destroy(&k->lock);
	free(k);
}

uint32_t agent_krelay_prog_id(const struct agent_krelay *k)
{
	return hm_sockrelay_prog_id(k->bpf);
}

int agent_krelay_add(struct agent_krelay *k, int client_fd, int remote_fd,
		     const struct relay_release *rel, struct hm_err *err)
{
	struct kr_pair *p = calloc(1, sizeof(*p));
	if (!p)
		return hm_err_errno(err, "kernel relay");
	int fds[2] = {client_fd, remote_fd};
	uint64_t limit[2];
	for (int i = 0; i < 2; i++) {
		struct kr_side *s = &p->side[i];
		s->pair = p;
		s->idx = (uint8_t)i;
		s->fd = fds[i];
		/* the kernel takes only established sockets: one that saw its FIN (a server
		 * that answered and closed) goes to the user-space relay, whole */
		if (!tcp_established(fds[i])) {
			free(p);
			return hm_err_plain(err, EOPNOTSUPP,
					    "the %s socket is no longer established (half closed)",
					    i == AGENT_KR_CLIENT ? "client" : "remote");
		}
		if (tcp_consumed(fds[i], &s->consumed) < 0 ||
		    tcp_written(fds[i], &s->wrote_before) < 0) {
			free(p);
			return hm_err_errno(err, "kernel relay: TCP state of the %s socket",
					    i == AGENT_KR_CLIENT ? "client" : "remote");
		}
	}
	p->credit = credit_take(k);
	if (!p->credit) {
		free(p);
		return hm_err_plain(err, ENOSPC,
				    "the kernel relay's memory (--kernel-relay-memory) is spent");
	}
	/* as the user-space relay does (relay.c set_nodelay): what the verdict program redirects
	 * on the pod's socket goes out when it comes, not behind Nagle's wait for an ack.
	 * The client's socket has it from accept. */
	int nodelay = 1;
	setsockopt(remote_fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof(nodelay));
	/* the credit counts from what each peer's TCP holds now (nothing redirected yet) */
	for (int i = 0; i < 2; i++)
		limit[i] = p->side[i].limit = p->credit;
	if (hm_sockrelay_add(k->bpf, fds, limit, &p->slots, err) < 0) {
		credit_put(k, p->credit);
		free(p);
		return -1;
	}
	if (rel)
		p->release = *rel;
	atomic_fetch_add(&k->counters->streams, 1);
	atomic_fetch_add(k->streams, 1);
	pthread_mutex_lock(&k->lock);
	p->next = k->incoming;
	k->incoming = p;
	pthread_mutex_unlock(&k->lock);
	uint64_t one = 1;
	ssize_t w = write(k->wake_fd, &one, sizeof(one));
	(void)w;
	return 0;
}
