/* Global and per-session budgets: what one token holder may take of the agent's shared
 * resources (sessions, stream objects, reply memory, connects in progress), so that no
 * client can use them up for the others.
 *
 * One lock guards every counter: reservations are a handful per request, far from
 * contended enough to need more. A session's account is refcounted because its streams
 * outlive it: a relayed connection keeps counting for the session that opened it until
 * the relay closes it. Waiting (only for reply memory) is first come, first served, so
 * a big listing is not starved by a stream of small ones. */
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "agent/internal.h"

struct peer {
	struct peer *next;
	char key[64];
	uint64_t sessions;
};

struct waiter {
	struct waiter *next;
};

struct agent_budget {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* bytes released, a waiter left, or stop */
	struct agent_budget_limits limits;
	uint64_t used[AGENT_RES_COUNT];
	uint64_t peak[AGENT_RES_COUNT];
	uint64_t refused[AGENT_RES_COUNT];
	struct peer *peers;
	struct waiter *waiters, *waiters_tail; /* for memory, served in this order */
	bool stopping;
};

struct agent_budget_account {
	struct agent_budget *b;
	atomic_uint refs;
	struct peer *peer; /* under b->lock; NULL once the session closed */
	uint64_t used[AGENT_RES_COUNT];
};

static const struct {
	const char *what, *global_flag, *session_flag;
	int global_errno, session_errno;
} res_info[AGENT_RES_COUNT] = {
    [AGENT_RES_SESSIONS] = {"sessions", "--max-sessions", "--max-peer-sessions", EUSERS, EUSERS},
    [AGENT_RES_STREAMS] = {"streams", "--max-streams", "--max-session-streams", ENFILE, EMFILE},
    [AGENT_RES_BYTES] = {"bytes of replies in flight", "--max-inflight", "--max-session-inflight",
			 ENOBUFS, ENOBUFS},
    [AGENT_RES_CONNECTS] = {"connects in progress", "--max-connects", "--max-session-connects",
			    EAGAIN, EAGAIN},
};

void agent_budget_default_limits(struct agent_budget_limits *l)
{
	*l = (struct agent_budget_limits){
	    .global = {[AGENT_RES_SESSIONS] = 256,
		       [AGENT_RES_STREAMS] = 8192,
		       [AGENT_RES_BYTES] = 256ull << 20,
		       [AGENT_RES_CONNECTS] = 1024},
	    .per_session = {[AGENT_RES_SESSIONS] = 128,
			    [AGENT_RES_STREAMS] = 1024,
			    [AGENT_RES_BYTES] = 64ull << 20,
			    [AGENT_RES_CONNECTS] = 256},
	};
}

int agent_budget_create(const struct agent_budget_limits *limits, struct agent_budget **out,
			struct hm_err *err)
{
	struct agent_budget *b = calloc(1, sizeof(*b));
	if (!b)
		return hm_err_set(err, ENOMEM, "budgets");
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->cond, NULL);
	b->limits = *limits;
	*out = b;
	return 0;
}

void agent_budget_destroy(struct agent_budget *b)
{
	if (!b)
		return;
	while (b->peers) {
		struct peer *p = b->peers;
		b->peers = p->next;
		free(p);
	}
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->cond);
	free(b);
}

void agent_budget_stop(struct agent_budget *b)
{
	pthread_mutex_lock(&b->lock);
	b->stopping = true;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

/* Call with the lock held. */
static int refuse(struct agent_budget *b, enum agent_budget_res res, bool global, uint64_t used,
		  uint64_t want, struct hm_err *err)
{
	b->refused[res]++;
	uint64_t limit = global ? b->limits.global[res] : b->limits.per_session[res];
	const char *scope = global			? "the agent"
			    : res == AGENT_RES_SESSIONS ? "this peer"
							: "this session";
	if (res == AGENT_RES_BYTES)
		return hm_err_set(
		    err, global ? res_info[res].global_errno : res_info[res].session_errno,
		    "agent busy: %s has %llu KiB of replies in flight and this one "
		    "needs %llu KiB more, the limit is %llu KiB (trace-agent %s)",
		    scope, (unsigned long long)(used >> 10), (unsigned long long)(want >> 10),
		    (unsigned long long)(limit >> 10),
		    global ? res_info[res].global_flag : res_info[res].session_flag);
	return hm_err_set(err, global ? res_info[res].global_errno : res_info[res].session_errno,
			  "agent limit: %s has %llu %s, the limit is %llu (trace-agent %s)", scope,
			  (unsigned long long)used, res_info[res].what, (unsigned long long)limit,
			  global ? res_info[res].global_flag : res_info[res].session_flag);
}

static bool fits(uint64_t used, uint64_t n, uint64_t limit)
{
	return !limit || (n <= limit && used <= limit - n);
}

static void take(struct agent_budget_account *a, enum agent_budget_res res, uint64_t n)
{
	struct agent_budget *b = a->b;
	a->used[res] += n;
	b->used[res] += n;
	if (b->used[res] > b->peak[res])
		b->peak[res] = b->used[res];
}

/* Call with the lock held. */
static void unqueue(struct agent_budget *b, struct waiter *w)
{
	for (struct waiter **pp = &b->waiters; *pp; pp = &(*pp)->next) {
		if (*pp == w) {
			*pp = w->next;
			break;
		}
	}
	if (b->waiters_tail == w) {
		b->waiters_tail = NULL;
		for (struct waiter *q = b->waiters; q; q = q->next)
			b->waiters_tail = q;
	}
}

int agent_budget_reserve(struct agent_budget_account *a, enum agent_budget_res res, uint64_t n,
			 int wait_ms, struct hm_err *err)
{
	if (!a || !n)
		return 0;
	struct agent_budget *b = a->b;
	uint64_t global = b->limits.global[res];
	pthread_mutex_lock(&b->lock);
	int rc = 0;
	if (b->stopping) {
		rc = hm_err_set(err, ESHUTDOWN, "agent stopping");
	} else if (!fits(a->used[res], n, b->limits.per_session[res])) {
		/* the session's own share: waiting would only wait for itself */
		rc = refuse(b, res, false, a->used[res], n, err);
	} else if (fits(b->used[res], n, global) && (res != AGENT_RES_BYTES || !b->waiters)) {
		take(a, res, n);
	} else if (wait_ms <= 0 || res != AGENT_RES_BYTES || !fits(0, n, global)) {
		rc = refuse(b, res, true, b->used[res], n, err);
	} else {
		struct waiter w = {0};
		if (b->waiters_tail)
			b->waiters_tail->next = &w;
		else
			b->waiters = &w;
		b->waiters_tail = &w;
		struct timespec until;
		hm_realtime_in(&until, wait_ms);
		int t = 0;
		while (!b->stopping && t != ETIMEDOUT &&
		       (b->waiters != &w || !fits(b->used[res], n, global)))
			t = pthread_cond_timedwait(&b->cond, &b->lock, &until);
		if (!b->stopping && b->waiters == &w && fits(b->used[res], n, global))
			take(a, res, n);
		else if (b->stopping)
			rc = hm_err_set(err, ESHUTDOWN, "agent stopping");
		else
			rc = refuse(b, res, true, b->used[res], n, err);
		unqueue(b, &w);
		pthread_cond_broadcast(&b->cond); /* the next in line may fit now */
	}
	pthread_mutex_unlock(&b->lock);
	return rc;
}

void agent_budget_release(struct agent_budget_account *a, enum agent_budget_res res, uint64_t n)
{
	if (!a || !n)
		return;
	struct agent_budget *b = a->b;
	pthread_mutex_lock(&b->lock);
	n = n > a->used[res] ? a->used[res] : n;
	a->used[res] -= n;
	b->used[res] -= n > b->used[res] ? b->used[res] : n;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

/* ---- sessions and their accounts ---- */

int agent_budget_session_open(struct agent_budget *b, const char *peer_key,
			      struct agent_budget_account **out, struct hm_err *err)
{
	*out = NULL;
	struct agent_budget_account *a = calloc(1, sizeof(*a));
	struct peer *fresh = calloc(1, sizeof(*fresh));
	if (!a || !fresh) {
		free(a);
		free(fresh);
		return hm_err_set(err, ENOMEM, "session account");
	}
	a->b = b;
	atomic_init(&a->refs, 1);
	pthread_mutex_lock(&b->lock);
	struct peer *p = b->peers;
	while (p && strcmp(p->key, peer_key))
		p = p->next;
	uint64_t peer_sessions = p ? p->sessions : 0;
	int rc = 0;
	if (b->stopping)
		rc = hm_err_set(err, ESHUTDOWN, "agent stopping");
	else if (!fits(peer_sessions, 1, b->limits.per_session[AGENT_RES_SESSIONS]))
		rc = refuse(b, AGENT_RES_SESSIONS, false, peer_sessions, 1, err);
	else if (!fits(b->used[AGENT_RES_SESSIONS], 1, b->limits.global[AGENT_RES_SESSIONS]))
		rc = refuse(b, AGENT_RES_SESSIONS, true, b->used[AGENT_RES_SESSIONS], 1, err);
	if (rc == 0) {
		if (!p) {
			p = fresh;
			fresh = NULL;
			snprintf(p->key, sizeof(p->key), "%s", peer_key);
			p->next = b->peers;
			b->peers = p;
		}
		p->sessions++;
		a->peer = p;
		take(a, AGENT_RES_SESSIONS, 1);
	}
	pthread_mutex_unlock(&b->lock);
	free(fresh);
	if (rc < 0) {
		free(a);
		return -1;
	}
	*out = a;
	return 0;
}

void agent_budget_session_close(struct agent_budget_account *a)
{
	if (!a)
		return;
	struct agent_budget *b = a->b;
	pthread_mutex_lock(&b->lock);
	struct peer *p = a->peer;
	a->peer = NULL;
	if (p && --p->sessions == 0) {
		for (struct peer **pp = &b->peers; *pp; pp = &(*pp)->next) {
			if (*pp == p) {
				*pp = p->next;
				free(p);
				break;
			}
		}
	}
	pthread_mutex_unlock(&b->lock);
	agent_budget_release(a, AGENT_RES_SESSIONS, 1);
}

struct agent_budget_account *agent_budget_account_get(struct agent_budget_account *a)
{
	if (a)
		atomic_fetch_add(&a->refs, 1);
	return a;
}

void agent_budget_account_put(struct agent_budget_account *a)
{
	if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
		return;
	/* whatever a forgotten path still holds goes back to the agent */
	for (int r = 0; r < AGENT_RES_COUNT; r++)
		agent_budget_release(a, (enum agent_budget_res)r, a->used[r]);
	free(a);
}

void agent_budget_usage(struct agent_budget *b, struct agent_budget_usage *out)
{
	pthread_mutex_lock(&b->lock);
	for (int r = 0; r < AGENT_RES_COUNT; r++) {
		out->used[r] = b->used[r];
		out->peak[r] = b->peak[r];
		out->refused[r] = b->refused[r];
		out->limit[r] = b->limits.global[r];
	}
	pthread_mutex_unlock(&b->lock);
}

void agent_budget_stream_closed(void *account)
{
	agent_budget_release(account, AGENT_RES_STREAMS, 1);
	agent_budget_account_put(account);
}

/* ---- the spare fd for accept ---- */

static int spare_fd = -1;

int agent_fd_spare_init(struct hm_err *err)
{
	if (spare_fd >= 0)
		return 0;
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (spare_fd < 0)
		return hm_err_errno(err, "open /dev/null (the spare fd for accept)");
	return 0;
}

void agent_fd_spare_shed(int listen_fd)
{
	static uint64_t last_warn_ms;
	if (spare_fd < 0)
		return;
	close(spare_fd);
	spare_fd = -1;
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd >= 0)
		close(fd);
	spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	uint64_t now = hm_now_ms();
	if (now - last_warn_ms >= 1000) {
		last_warn_ms = now;
		hm_warn("out of file descriptors: a new connection was closed unserved (see "
			"--max-streams and ulimit -n)");
	}
}

void agent_budget_status(struct agent_budget *b, struct proto_status_reply *out)
{
	static const enum proto_budget_kind kinds[AGENT_RES_COUNT] = {
	    [AGENT_RES_SESSIONS] = PROTO_BUDGET_SESSIONS,
	    [AGENT_RES_STREAMS] = PROTO_BUDGET_STREAMS,
	    [AGENT_RES_BYTES] = PROTO_BUDGET_INFLIGHT,
	    [AGENT_RES_CONNECTS] = PROTO_BUDGET_CONNECTS,
	};
	struct agent_budget_usage u;
	agent_budget_usage(b, &u);
	for (int r = 0; r < AGENT_RES_COUNT; r++)
		out->budgets[kinds[r]] = (struct proto_budget){.used = u.used[r],
							       .limit = u.limit[r],
							       .peak = u.peak[r],
							       .refused = u.refused[r]};
	out->nbudgets = PROTO_BUDGET_COUNT;
}
