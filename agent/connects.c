/* One session's TCP connects in progress, waited for by the session's own thread: the
 * sockets sit in an epoll set the thread polls beside its control connection, so a
 * connect to a black hole costs one fd and no thread (the agent used to run a thread
 * per connect: 8 sessions made 4107 threads). Few per session (a budget bounds them),
 * so the deadlines are a list scanned in full. */
#include <string.h>
#include <sys/epoll.h>

#include "agent/internal.h"

struct pending_connect {
	struct pending_connect *next;
	int fd;
	uint32_t id;
	struct proto_addr dst;
	uint32_t timeout_ms;
	uint64_t deadline_ms;
};

struct agent_connects {
	int epfd;
	struct pending_connect *list;
	size_t count;
};

int agent_connects_create(struct agent_connects **out, struct hm_err *err)
{
	struct agent_connects *cs = calloc(1, sizeof(*cs));
	if (!cs)
		return hm_err_set(err, ENOMEM, "connects");
	cs->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (cs->epfd < 0) {
		hm_err_errno(err, "epoll_create1");
		free(cs);
		return -1;
	}
	*out = cs;
	return 0;
}

void agent_connects_destroy(struct agent_connects *cs)
{
	if (!cs)
		return;
	while (cs->list) {
		struct pending_connect *p = cs->list;
		cs->list = p->next;
		close(p->fd);
		free(p);
	}
	close(cs->epfd);
	free(cs);
}

int agent_connects_fd(const struct agent_connects *cs)
{
	return cs ? cs->epfd : -1;
}

size_t agent_connects_count(const struct agent_connects *cs)
{
	return cs ? cs->count : 0;
}

uint64_t agent_connects_deadline(const struct agent_connects *cs)
{
	uint64_t first = 0;
	for (const struct pending_connect *p = cs ? cs->list : NULL; p; p = p->next)
		if (!first || p->deadline_ms < first)
			first = p->deadline_ms;
	return first;
}

/* Report a finished connect and forget it: fd < 0 with err on failure. */
static void finish(struct pending_connect *p, int outcome, agent_connect_done_fn done, void *ctx)
{
	struct hm_err err = {0};
	struct proto_addr local = {0};
	int fd = p->fd;
	if (agent_outgoing_tcp_finish(fd, &p->dst, outcome, p->timeout_ms, &local, &err) < 0) {
		close(fd);
		fd = -1;
	}
	done(ctx, p->id, fd, &local, &err);
	free(p);
}

void agent_connects_start(struct agent_connects *cs, struct agent_target *t, uint32_t id,
			  const struct proto_addr *dst, uint32_t timeout_ms,
			  agent_connect_done_fn done, void *ctx)
{
	struct hm_err err = {0};
	struct pending_connect *p = calloc(1, sizeof(*p));
	if (!p) {
		hm_err_set(&err, ENOMEM, "connect");
		done(ctx, id, -1, NULL, &err);
		return;
	}
	p->id = id;
	p->dst = *dst;
	p->timeout_ms = agent_outgoing_timeout(timeout_ms);
	int rc = agent_outgoing_tcp_begin(t, dst, &p->fd, &err);
	if (rc < 0) {
		free(p);
		done(ctx, id, -1, NULL, &err);
		return;
	}
	if (rc == 0) { /* the pod's own loopback answers at once */
		finish(p, 0, done, ctx);
		return;
	}
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = p};
	if (epoll_ctl(cs->epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) {
		hm_err_errno(&err, "epoll_ctl");
		close(p->fd);
		free(p);
		done(ctx, id, -1, NULL, &err);
		return;
	}
	p->deadline_ms = hm_now_ms() + p->timeout_ms;
	p->next = cs->list;
	cs->list = p;
	cs->count++;
}

static void unlink_pending(struct agent_connects *cs, struct pending_connect *p)
{
	for (struct pending_connect **pp = &cs->list; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			cs->count--;
			break;
		}
	}
	epoll_ctl(cs->epfd, EPOLL_CTL_DEL, p->fd, NULL);
}

void agent_connects_progress(struct agent_connects *cs, agent_connect_done_fn done, void *ctx)
{
	if (!cs)
		return;
	struct epoll_event evs[64];
	int n;
	do {
		n = epoll_wait(cs->epfd, evs, HM_ARRAY_SIZE(evs), 0);
		for (int i = 0; i < n; i++) {
			struct pending_connect *p = evs[i].data.ptr;
			unlink_pending(cs, p);
			finish(p, -1, done, ctx);
		}
	} while (n == (int)HM_ARRAY_SIZE(evs));
	/* what is still waiting after the events were taken has had its time */
	uint64_t now = hm_now_ms();
	for (struct pending_connect **pp = &cs->list; *pp;) {
		struct pending_connect *p = *pp;
		if (p->deadline_ms > now) {
			pp = &p->next;
			continue;
		}
		unlink_pending(cs, p);
		finish(p, ETIMEDOUT, done, ctx);
	}
}
