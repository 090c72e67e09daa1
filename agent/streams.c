/* One-time stream tokens. A token is 16 bytes from getrandom(): unguessable, so holding
 * one is the stream connection's credential. It names one parked object (a socket in the
 * pod's netns or an open file), works once, and expires if nobody claims it in time.
 * Each parked object holds one stream of its session's budget (budget.c), which bounds
 * the set, so a list searched in full is enough; every comparison runs in constant
 * time. */
#include <string.h>
#include <sys/random.h>

#include "agent/internal.h"

struct parked {
	struct parked *next;
	uint8_t token[PROTO_TOKEN_LEN];
	uint64_t expires_ms;
	struct agent_pending_stream obj;
};

struct agent_streams {
	pthread_mutex_t lock;
	unsigned ttl_ms;
	struct parked *list;
	size_t count;
};

int agent_streams_create(unsigned ttl_ms, struct agent_streams **out, struct hm_err *err)
{
	struct agent_streams *s = calloc(1, sizeof(*s));
	if (!s)
		return hm_err_set(err, ENOMEM, "stream tokens");
	pthread_mutex_init(&s->lock, NULL);
	s->ttl_ms = ttl_ms ? ttl_ms : AGENT_STREAM_TTL_MS;
	*out = s;
	return 0;
}

static void parked_free(struct parked *p)
{
	if (p->obj.fd >= 0)
		close(p->obj.fd);
	if (p->obj.claimed)
		p->obj.claimed(p->obj.claimed_ctx, -1, NULL);
	if (p->obj.account)
		agent_budget_stream_closed(p->obj.account);
	explicit_bzero(p->token, sizeof(p->token));
	free(p);
}

void agent_streams_destroy(struct agent_streams *s)
{
	if (!s)
		return;
	struct parked *p = s->list;
	while (p) {
		struct parked *next = p->next;
		parked_free(p);
		p = next;
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int random_token(uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err)
{
	size_t got = 0;
	while (got < PROTO_TOKEN_LEN) {
		ssize_t n = getrandom(token + got, PROTO_TOKEN_LEN - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return hm_err_errno(err, "getrandom");
		}
		got += (size_t)n;
	}
	return 0;
}

/* Unlink every parked object for which drop() says so; call with the lock held. The
 * objects are returned as a list to free outside the lock (close may take a while). */
static struct parked *unlink_where(struct agent_streams *s,
				   bool (*drop)(const struct parked *, uint64_t), uint64_t arg)
{
	struct parked *dropped = NULL;
	for (struct parked **pp = &s->list; *pp;) {
		struct parked *p = *pp;
		if (drop(p, arg)) {
			*pp = p->next;
			s->count--;
			p->next = dropped;
			dropped = p;
		} else {
			pp = &p->next;
		}
	}
	return dropped;
}

static void free_list(struct parked *p, const char *why)
{
	while (p) {
		struct parked *next = p->next;
		hm_debug("stream token of session %llu %s", (unsigned long long)p->obj.session_id,
			 why);
		parked_free(p);
		p = next;
	}
}

static bool is_expired(const struct parked *p, uint64_t now)
{
	return p->expires_ms <= now;
}

static bool of_session(const struct parked *p, uint64_t session_id)
{
	return p->obj.session_id == session_id;
}

/* Park obj (its fd owned from here on, closed on failure too; a handoff's callback is
 * not called on failure). */
static int park(struct agent_streams *s, struct agent_pending_stream obj,
		uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err)
{
	agent_streams_expire(s); /* what expired frees room before it is counted */
	if (agent_budget_reserve(obj.account, AGENT_RES_STREAMS, 1, 0, err) < 0) {
		if (obj.fd >= 0)
			close(obj.fd);
		return -1;
	}
	struct parked *p = calloc(1, sizeof(*p));
	if (!p) {
		if (obj.fd >= 0)
			close(obj.fd);
		agent_budget_release(obj.account, AGENT_RES_STREAMS, 1);
		return hm_err_set(err, ENOMEM, "stream token");
	}
	p->obj = obj;
	p->obj.account = agent_budget_account_get(obj.account);
	if (random_token(p->token, err) < 0) {
		p->obj.claimed = NULL;
		parked_free(p);
		return -1;
	}
	p->expires_ms = hm_now_ms() + s->ttl_ms;
	memcpy(token, p->token, PROTO_TOKEN_LEN);
	pthread_mutex_lock(&s->lock);
	p->next = s->list;
	s->list = p;
	s->count++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int agent_streams_add(struct agent_streams *s, uint64_t session_id,
		      struct agent_budget_account *account, enum relay_kind kind, int fd,
		      uint64_t size, uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err)
{
	struct agent_pending_stream obj = {
	    .kind = kind, .fd = fd, .size = size, .session_id = session_id, .account = account};
	return park(s, obj, token, err);
}

int agent_streams_add_tcp(struct agent_streams *s, uint64_t session_id,
			  struct agent_budget_account *account, int fd, int64_t pass_uid,
			  uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err)
{
	struct agent_pending_stream obj = {.kind = RELAY_TCP,
					   .fd = fd,
					   .session_id = session_id,
					   .passable = pass_uid >= 0,
					   .pass_uid = pass_uid >= 0 ? (uid_t)pass_uid : 0,
					   .account = account};
	return park(s, obj, token, err);
}

int agent_streams_add_handoff(struct agent_streams *s, uint64_t session_id,
			      struct agent_budget_account *account, agent_stream_claimed_fn claimed,
			      void *ctx, uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err)
{
	struct agent_pending_stream obj = {.kind = RELAY_TCP,
					   .fd = -1,
					   .session_id = session_id,
					   .account = account,
					   .claimed = claimed,
					   .claimed_ctx = ctx};
	return park(s, obj, token, err);
}

int agent_streams_claim(struct agent_streams *s, const uint8_t token[PROTO_TOKEN_LEN],
			struct agent_pending_stream *out)
{
	uint64_t now = hm_now_ms();
	struct parked *found = NULL;
	pthread_mutex_lock(&s->lock);
	struct parked *expired = unlink_where(s, is_expired, now);
	for (struct parked **pp = &s->list; *pp; pp = &(*pp)->next) {
		if (proto_token_equal((*pp)->token, token, PROTO_TOKEN_LEN)) {
			found = *pp;
			*pp = found->next;
			s->count--;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	free_list(expired, "expired unclaimed");
	if (!found)
		return -1;
	*out = found->obj;
	found->obj.fd = -1;
	found->obj.claimed = NULL; /* the claimer calls it, with the stream */
	found->obj.account = NULL; /* the claimer's now, with its stream of the budget */
	parked_free(found);
	return 0;
}

void agent_streams_drop_session(struct agent_streams *s, uint64_t session_id)
{
	pthread_mutex_lock(&s->lock);
	struct parked *dropped = unlink_where(s, of_session, session_id);
	pthread_mutex_unlock(&s->lock);
	free_list(dropped, "dropped with its session");
}

void agent_streams_expire(struct agent_streams *s)
{
	pthread_mutex_lock(&s->lock);
	struct parked *expired = unlink_where(s, is_expired, hm_now_ms());
	pthread_mutex_unlock(&s->lock);
	free_list(expired, "expired unclaimed");
}

size_t agent_streams_pending(struct agent_streams *s)
{
	pthread_mutex_lock(&s->lock);
	size_t n = s->count;
	pthread_mutex_unlock(&s->lock);
	return n;
}
