/* Admission: connections from accept() until their first whole frame.
 *
 * Anyone who can reach a listener can open connections without knowing the token, so
 * what such a connection costs must be small and bounded, and it must never keep a
 * legitimate client out. Here a pending connection is an fd and ~300 bytes (plus the
 * part of a frame it sent, at most the hello limit), read by the main thread's loop:
 * no thread, no session. Limits:
 *   - a deadline for the whole first frame from accept (--handshake-timeout);
 *   - a budget of pending connections per transport, so a unix flood does not shut
 *     TCP clients out and the reverse;
 *   - a cap per peer (TCP: source address; unix: uid), so one peer holds only part of
 *     its transport's budget;
 *   - when a cap or budget is full, the OLDEST pending connection (of that peer, else of
 *     that transport) is closed to make room: a client that sends its hello at once
 *     always gets in, and a connection that says nothing only loses its place.
 * The first frame is read right at accept time too: a client's hello usually arrives
 * while its connection waits in the listen backlog, so under a flood a legitimate
 * client is admitted without ever being pending. */
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "agent/internal.h"

#define LOG_WINDOW_MS 10000
#define LOG_PER_WINDOW 10 /* dropped connections logged one by one per window */

struct pending {
	struct pending *prev, *next; /* arrival order: the oldest first */
	int fd;
	uint64_t id;
	uint64_t deadline_ms;
	struct agent_peer peer;
	struct proto_frame_reader rd;
};

struct agent_admission {
	struct agent_admission_config cfg;
	int epfd;
	struct pending *head, *tail;
	unsigned count[2]; /* pending per transport: [0] TCP, [1] unix */
	uint64_t window_start_ms;
	unsigned logged, suppressed;
};

int agent_admission_create(const struct agent_admission_config *cfg, struct agent_admission **out,
			   struct hm_err *err)
{
	struct agent_admission *a = calloc(1, sizeof(*a));
	if (!a)
		return hm_err_set(err, ENOMEM, "admission");
	a->cfg = *cfg;
	a->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (a->epfd < 0) {
		free(a);
		return hm_err_errno(err, "epoll_create1");
	}
	*out = a;
	return 0;
}

int agent_admission_fd(const struct agent_admission *a)
{
	return a->epfd;
}

unsigned agent_admission_pending(const struct agent_admission *a, bool is_unix)
{
	return a->count[is_unix];
}

static void unlink_pending(struct agent_admission *a, struct pending *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		a->head = p->next;
	if (p->next)
		p->next->prev = p->prev;
	else
		a->tail = p->prev;
	a->count[p->peer.is_unix]--;
	epoll_ctl(a->epfd, EPOLL_CTL_DEL, p->fd, NULL);
}

static void free_pending(struct pending *p)
{
	proto_frame_reader_release(&p->rd);
	if (p->fd >= 0)
		close(p->fd);
	free(p);
}

/* Log the first few dropped connections of each window one by one, then only a count:
 * a flood must not become a flood of log lines. */
static void log_drop(struct agent_admission *a, const struct pending *p, const char *why)
{
	atomic_fetch_add(&a->cfg.stats->errors, 1);
	uint64_t now = hm_now_ms();
	if (now - a->window_start_ms >= LOG_WINDOW_MS) {
		if (a->suppressed)
			hm_warn("%u more connection(s) closed before their hello in the last %d s "
				"(silent, too slow, or evicted by newer ones)",
				a->suppressed, LOG_WINDOW_MS / 1000);
		a->window_start_ms = now;
		a->logged = a->suppressed = 0;
	}
	if (a->logged >= LOG_PER_WINDOW) {
		a->suppressed++;
		return;
	}
	a->logged++;
	hm_warn("conn %llu (%s): %s; closing", (unsigned long long)p->id, p->peer.desc, why);
}

static void drop(struct agent_admission *a, struct pending *p, const char *why)
{
	unlink_pending(a, p);
	log_drop(a, p, why);
	free_pending(p);
}

/* Read what p sent: 0 while its first frame is incomplete; 1 when *f holds it; < 0 when
 * p is done for (closed, or a frame no peer may send before hello). */
static int advance(struct agent_admission *a, struct pending *p, struct proto_frame *f)
{
	struct hm_err err = {0};
	int rc = proto_frame_reader_read(&p->rd, p->fd, f, &err);
	if (rc < 0) {
		if (err.code == 0) {
			hm_debug("conn %llu (%s): closed before hello", (unsigned long long)p->id,
				 p->peer.desc);
		} else {
			char why[HM_ERR_MSG_MAX + 64];
			snprintf(why, sizeof(why), "bad frame before hello: %s", err.msg);
			atomic_fetch_add(&a->cfg.stats->errors, 1);
			hm_warn("conn %llu (%s): %s; closing", (unsigned long long)p->id,
				p->peer.desc, why);
		}
	}
	return rc;
}

/* p is out of the list and the epoll set: its fd and first frame go to the server. */
static void hand_over(struct agent_admission *a, struct pending *p, struct proto_frame *f)
{
	int fd = p->fd;
	p->fd = -1;
	a->cfg.admitted(a->cfg.arg, fd, p->id, &p->peer, f);
	free_pending(p);
}

static struct pending *oldest_of_peer(struct agent_admission *a, const struct agent_peer *peer,
				      unsigned *count)
{
	struct pending *first = NULL;
	*count = 0;
	for (struct pending *p = a->head; p; p = p->next) {
		if (!agent_peer_same_source(&p->peer, peer))
			continue;
		if (!first)
			first = p;
		(*count)++;
	}
	return first;
}

static struct pending *oldest_of_transport(struct agent_admission *a, bool is_unix)
{
	for (struct pending *p = a->head; p; p = p->next)
		if (p->peer.is_unix == is_unix)
			return p;
	return NULL;
}

void agent_admission_add(struct agent_admission *a, int fd, uint64_t id,
			 const struct agent_peer *peer)
{
	struct pending *p = calloc(1, sizeof(*p));
	if (!p) {
		hm_warn("conn %llu (%s): out of memory; closing", (unsigned long long)id,
			peer->desc);
		close(fd);
		return;
	}
	p->fd = fd;
	p->id = id;
	p->peer = *peer;
	p->deadline_ms = hm_now_ms() + (uint64_t)a->cfg.deadline_ms;
	proto_frame_reader_init(&p->rd, PROTO_HELLO_MAX_PAYLOAD);
	struct proto_frame f = {0};
	int rc = advance(a, p, &f);
	if (rc == 1) {
		hand_over(a, p, &f);
		return;
	}
	if (rc < 0) {
		free_pending(p);
		return;
	}
	unsigned same;
	struct pending *victim = oldest_of_peer(a, peer, &same);
	if (same < a->cfg.max_per_peer)
		victim = a->count[peer->is_unix] >= a->cfg.max_per_transport
			     ? oldest_of_transport(a, peer->is_unix)
			     : NULL;
	if (victim) {
		char why[128];
		snprintf(why, sizeof(why), "no hello yet, evicted by a newer connection (%s)",
			 same >= a->cfg.max_per_peer ? "this peer's pending limit"
						     : "pending handshakes full");
		drop(a, victim, why);
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = p};
	if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		hm_warn("conn %llu (%s): epoll: %s; closing", (unsigned long long)id, peer->desc,
			strerror(errno));
		free_pending(p);
		return;
	}
	p->prev = a->tail;
	if (a->tail)
		a->tail->next = p;
	else
		a->head = p;
	a->tail = p;
	a->count[peer->is_unix]++;
}

int agent_admission_service(struct agent_admission *a)
{
	struct epoll_event evs[64];
	int n;
	do {
		n = epoll_wait(a->epfd, evs, HM_ARRAY_SIZE(evs), 0);
		for (int i = 0; i < n; i++) {
			struct pending *p = evs[i].data.ptr;
			struct proto_frame f = {0};
			int rc = advance(a, p, &f);
			if (rc == 0)
				continue;
			unlink_pending(a, p);
			if (rc == 1)
				hand_over(a, p, &f);
			else
				free_pending(p);
		}
	} while (n == (int)HM_ARRAY_SIZE(evs));
	uint64_t now = hm_now_ms();
	char why[64];
	snprintf(why, sizeof(why), "no hello within %d ms", a->cfg.deadline_ms);
	/* the same deadline for all: the oldest expires first */
	while (a->head && a->head->deadline_ms <= now)
		drop(a, a->head, why);
	if (!a->head)
		return -1;
	uint64_t left = a->head->deadline_ms - now;
	return left > INT32_MAX ? INT32_MAX : (int)left;
}

void agent_admission_destroy(struct agent_admission *a)
{
	if (!a)
		return;
	while (a->head) {
		struct pending *p = a->head;
		unlink_pending(a, p);
		free_pending(p);
	}
	close(a->epfd);
	free(a);
}
