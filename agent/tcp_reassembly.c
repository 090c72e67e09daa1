/* TCP reassembly of the client-to-server direction of mirrored connections. Sequence
 * numbers are compared as offsets from the next expected byte in 32-bit modular
 * arithmetic, so wrap-around needs no special case.
 *
 * Connections are found by a hash of their 4-tuple. The pod's clients choose their
 * ports (and a hostile pod its clients' addresses), so the hash is keyed with a secret
 * drawn from getrandom() for each reassembly: with a public hash (FNV-1a, before) a
 * pod could put all of its 4096 connections in one bucket and make every segment walk
 * them all. A bucket's chain is also bounded (CHAIN_MAX): a connection that would go
 * over it is not followed, so even a leaked key costs at most CHAIN_MAX comparisons
 * per segment. */
#include <sys/random.h>
#include <string.h>

#include "agent/internal.h"

#define BUCKETS_MIN 64
#define BUCKETS_MAX (1u << 16)
/* With a secret key and at most one connection per bucket on average, a chain this
 * long comes by chance about never (Poisson(1): 1e-13 per bucket): reaching it means
 * the key is known to whoever chose the flows. */
#define CHAIN_MAX 16
/* What a held segment counts against the bounds at least: its bookkeeping (~48 bytes
 * of malloc) and its place in the sorted list. Counted by payload alone, a client of
 * the pod sending 1-byte segments behind a hole made the 4 MB per connection 4 million
 * list entries: ~200 MB of memory and a walk of the list per segment (hours of the
 * mirror thread). */
#define HELD_CHARGE_MIN 1024u

static size_t held_charge(uint32_t len)
{
	return len > HELD_CHARGE_MIN ? len : HELD_CHARGE_MIN;
}

struct held {
	struct held *next; /* sorted by seq */
	uint32_t seq;
	uint32_t len;
	uint8_t data[];
};

struct conn {
	struct conn *hash_next;
	struct conn *lru_prev, *lru_next; /* most recently active at the head */
	struct agent_tcp_segment key;	  /* payload unused */
	void *user;
	uint32_t isn;
	uint32_t next_seq;
	bool fin_seen;
	uint32_t fin_seq;
	struct held *held;
	size_t held_bytes;
	int64_t last_ms;
	int64_t gap_since_ms; /* when the oldest held segment arrived; -1 without a hole */
};

struct agent_reasm {
	struct agent_reasm_config cfg;
	uint64_t key[2];
	unsigned bucket_bits;
	struct conn **buckets; /* 1 << bucket_bits */
	struct conn *lru_head, *lru_tail;
	size_t nconns;
	size_t held_total;
	uint64_t unfollowed; /* connections over CHAIN_MAX, since the last warning */
	int64_t unfollowed_warned_ms;
};

static size_t addr_len(uint8_t family)
{
	return family == 6 ? 16 : 4;
}

static bool same_conn(const struct agent_tcp_segment *a, const struct agent_tcp_segment *b)
{
	return a->family == b->family && a->sport == b->sport && a->dport == b->dport &&
	       memcmp(a->saddr, b->saddr, addr_len(a->family)) == 0 &&
	       memcmp(a->daddr, b->daddr, addr_len(a->family)) == 0;
}

/* splitmix64's finalizer: every input bit flips each output bit with probability ~1/2 */
static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* A keyed mix of the 4-tuple, not a MAC: it only has to keep a pod that never sees
 * the key (nor the buckets) from choosing flows that share one. */
size_t agent_reasm_bucket_of(const struct agent_reasm *r, const struct agent_tcp_segment *s)
{
	uint8_t addrs[32] = {0}; /* an IPv4 address's unused bytes are not part of it */
	memcpy(addrs, s->saddr, addr_len(s->family));
	memcpy(addrs + 16, s->daddr, addr_len(s->family));
	uint64_t h = r->key[0];
	for (size_t i = 0; i < sizeof(addrs); i += 8) {
		uint64_t w;
		memcpy(&w, addrs + i, 8);
		h = mix64(h ^ w);
	}
	h = mix64(h ^ ((uint64_t)s->family << 32 | (uint64_t)s->sport << 16 | s->dport));
	h = mix64(h ^ r->key[1]);
	return (size_t)(h >> (64 - r->bucket_bits));
}

static struct conn **find(struct agent_reasm *r, const struct agent_tcp_segment *s)
{
	struct conn **pp = &r->buckets[agent_reasm_bucket_of(r, s)];
	while (*pp && !same_conn(&(*pp)->key, s))
		pp = &(*pp)->hash_next;
	return pp;
}

static size_t chain_length(const struct conn *c)
{
	size_t n = 0;
	for (; c; c = c->hash_next)
		n++;
	return n;
}

static void lru_unlink(struct agent_reasm *r, struct conn *c)
{
	if (c->lru_prev)
		c->lru_prev->lru_next = c->lru_next;
	else
		r->lru_head = c->lru_next;
	if (c->lru_next)
		c->lru_next->lru_prev = c->lru_prev;
	else
		r->lru_tail = c->lru_prev;
	c->lru_prev = c->lru_next = NULL;
}

static void lru_push(struct agent_reasm *r, struct conn *c)
{
	c->lru_next = r->lru_head;
	if (r->lru_head)
		r->lru_head->lru_prev = c;
	r->lru_head = c;
	if (!r->lru_tail)
		r->lru_tail = c;
}

static void free_held(struct agent_reasm *r, struct conn *c)
{
	while (c->held) {
		struct held *h = c->held;
		c->held = h->next;
		free(h);
	}
	r->held_total -= c->held_bytes;
	c->held_bytes = 0;
}

/* Remove c; how < 0: silently (the caller stopped following it). */
static void finish(struct agent_reasm *r, struct conn *c, int how)
{
	struct conn **pp = find(r, &c->key);
	if (*pp == c)
		*pp = c->hash_next;
	lru_unlink(r, c);
	free_held(r, c);
	r->nconns--;
	if (how >= 0)
		r->cfg.ops.end(r->cfg.ctx, c->user, (enum agent_reasm_end)how);
	free(c);
}

/* Deliver [seq, seq+len) where it starts at or before next_seq. false: c is gone. */
static bool deliver(struct agent_reasm *r, struct conn *c, uint32_t seq, const uint8_t *p,
		    uint32_t len)
{
	uint32_t skip = c->next_seq - seq; /* already delivered part */
	if (skip >= len)
		return true;
	if (!r->cfg.ops.data(r->cfg.ctx, c->user, p + skip, len - skip)) {
		finish(r, c, -1);
		return false;
	}
	c->next_seq = seq + len;
	return true;
}

static bool at_or_before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) <= 0;
}

/* Deliver what the held segments now continue; false: c is gone. progress_from: the
 * next_seq before this segment, to restart the hole's clock when bytes moved on. */
static bool drain(struct agent_reasm *r, struct conn *c, uint32_t progress_from, int64_t now_ms)
{
	while (c->held && at_or_before(c->held->seq, c->next_seq)) {
		struct held *h = c->held;
		c->held = h->next;
		c->held_bytes -= held_charge(h->len);
		r->held_total -= held_charge(h->len);
		bool alive = deliver(r, c, h->seq, h->data, h->len);
		free(h);
		if (!alive)
			return false;
	}
	if (c->fin_seen && c->next_seq == c->fin_seq && !c->held) {
		finish(r, c, AGENT_REASM_FIN);
		return false;
	}
	/* a FIN beyond the delivered bytes is a hole too, even with nothing held */
	bool hole = c->held || (c->fin_seen && c->next_seq != c->fin_seq);
	if (!hole)
		c->gap_since_ms = -1;
	else if (c->gap_since_ms < 0 || c->next_seq != progress_from)
		c->gap_since_ms = now_ms;
	return true;
}

/* Keep an out-of-order segment; false: c went over a bound and is gone. */
static bool hold(struct agent_reasm *r, struct conn *c, uint32_t seq, const uint8_t *p,
		 uint32_t len)
{
	struct held **pp = &c->held;
	while (*pp && at_or_before((*pp)->seq, seq)) {
		/* a retransmit of a held segment, or inside it: nothing new */
		if ((*pp)->seq == seq && (*pp)->len >= len)
			return true;
		pp = &(*pp)->next;
	}
	size_t charge = held_charge(len);
	if (c->held_bytes + charge > r->cfg.max_held_conn ||
	    r->held_total + charge > r->cfg.max_held_total) {
		finish(r, c, AGENT_REASM_LOST);
		return false;
	}
	struct held *h = malloc(sizeof(*h) + len);
	if (!h) {
		finish(r, c, AGENT_REASM_LOST);
		return false;
	}
	h->seq = seq;
	h->len = len;
	memcpy(h->data, p, len);
	h->next = *pp;
	*pp = h;
	c->held_bytes += charge;
	r->held_total += charge;
	return true;
}

/* A connection whose bucket is full is not followed (its copies are never offered):
 * only flows chosen with the key can fill one. Said at most once a second. */
static bool chain_full(struct agent_reasm *r, const struct agent_tcp_segment *syn, int64_t now_ms)
{
	if (chain_length(r->buckets[agent_reasm_bucket_of(r, syn)]) < CHAIN_MAX)
		return false;
	r->unfollowed++;
	if (now_ms - r->unfollowed_warned_ms >= 1000) {
		hm_warn("mirror: %llu new connection(s) to port %u not mirrored: %d connections "
			"already share their hash bucket (flows chosen to collide?)",
			(unsigned long long)r->unfollowed, syn->dport, CHAIN_MAX);
		r->unfollowed = 0;
		r->unfollowed_warned_ms = now_ms;
	}
	return true;
}

static struct conn *open_conn(struct agent_reasm *r, const struct agent_tcp_segment *syn,
			      int64_t now_ms)
{
	if (chain_full(r, syn, now_ms))
		return NULL;
	if (r->nconns >= r->cfg.max_conns && r->lru_tail)
		finish(r, r->lru_tail, AGENT_REASM_LOST);
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->user = r->cfg.ops.open(r->cfg.ctx, syn);
	if (!c->user) {
		free(c);
		return NULL;
	}
	c->key = *syn;
	c->key.payload = NULL;
	c->key.len = 0;
	c->isn = syn->seq;
	c->next_seq = syn->seq + 1;
	c->last_ms = now_ms;
	c->gap_since_ms = -1;
	struct conn **pp = find(r, syn);
	c->hash_next = *pp;
	*pp = c;
	lru_push(r, c);
	r->nconns++;
	return c;
}

void agent_reasm_segment(struct agent_reasm *r, const struct agent_tcp_segment *s, int64_t now_ms)
{
	struct conn *c = *find(r, s);
	if (s->syn) {
		if (c && c->isn == s->seq)
			return; /* a retransmitted SYN */
		if (c)		/* the tuple is reused: the old connection's end never reached us */
			finish(r, c, c->held ? AGENT_REASM_LOST : AGENT_REASM_RESET);
		if (s->rst)
			return;
		c = open_conn(r, s, now_ms);
		if (!c)
			return;
		/* data on a SYN (TCP Fast Open) starts after the ISN */
		struct agent_tcp_segment rest = *s;
		rest.syn = false;
		rest.seq = s->seq + 1;
		if (rest.len || rest.fin)
			agent_reasm_segment(r, &rest, now_ms);
		return;
	}
	if (!c)
		return; /* began before the subscription, or not followed */
	c->last_ms = now_ms;
	lru_unlink(r, c);
	lru_push(r, c);
	if (s->rst) {
		finish(r, c, AGENT_REASM_RESET);
		return;
	}
	uint32_t progress_from = c->next_seq;
	if (s->fin && !c->fin_seen) {
		c->fin_seen = true;
		c->fin_seq = s->seq + s->len;
	}
	if (s->len) {
		if (at_or_before(s->seq, c->next_seq)) {
			if (!deliver(r, c, s->seq, s->payload, s->len))
				return;
		} else if (!hold(r, c, s->seq, s->payload, s->len)) {
			return;
		}
	}
	drain(r, c, progress_from, now_ms);
}

int64_t agent_reasm_tick(struct agent_reasm *r, int64_t now_ms)
{
	int64_t next_due = -1;
	struct conn *c = r->lru_head;
	while (c) {
		struct conn *next = c->lru_next;
		int64_t due = c->last_ms + r->cfg.idle_timeout_ms;
		if (c->gap_since_ms >= 0 && c->gap_since_ms + r->cfg.gap_timeout_ms < due)
			due = c->gap_since_ms + r->cfg.gap_timeout_ms;
		if (due <= now_ms)
			finish(r, c, AGENT_REASM_LOST);
		else if (next_due < 0 || due - now_ms < next_due)
			next_due = due - now_ms;
		c = next;
	}
	return next_due;
}

void agent_reasm_lose(struct agent_reasm *r, const struct agent_tcp_segment *key)
{
	struct conn *c = *find(r, key);
	if (c)
		finish(r, c, AGENT_REASM_LOST);
}

void agent_reasm_drop_port(struct agent_reasm *r, uint16_t port)
{
	struct conn *c = r->lru_head;
	while (c) {
		struct conn *next = c->lru_next;
		if (c->key.dport == port)
			finish(r, c, AGENT_REASM_RESET);
		c = next;
	}
}

size_t agent_reasm_conns(const struct agent_reasm *r)
{
	return r->nconns;
}

size_t agent_reasm_held_bytes(const struct agent_reasm *r)
{
	return r->held_total;
}

size_t agent_reasm_longest_chain(const struct agent_reasm *r)
{
	size_t longest = 0;
	for (size_t b = 0; b < (size_t)1 << r->bucket_bits; b++) {
		size_t n = chain_length(r->buckets[b]);
		longest = n > longest ? n : longest;
	}
	return longest;
}

int agent_reasm_create(const struct agent_reasm_config *cfg, struct agent_reasm **out,
		       struct hm_err *err)
{
	*out = NULL;
	struct agent_reasm *r = calloc(1, sizeof(*r));
	if (!r)
		return hm_err_errno(err, "tcp reassembly");
	r->cfg = *cfg;
	/* about one connection per bucket when all max_conns are there */
	r->bucket_bits = 6;
	while (((size_t)1 << r->bucket_bits) < BUCKETS_MAX &&
	       ((size_t)1 << r->bucket_bits) < cfg->max_conns)
		r->bucket_bits++;
	r->buckets = calloc((size_t)1 << r->bucket_bits, sizeof(*r->buckets));
	if (!r->buckets) {
		free(r);
		return hm_err_errno(err, "tcp reassembly");
	}
	if (cfg->hash_key[0] || cfg->hash_key[1]) {
		memcpy(r->key, cfg->hash_key, sizeof(r->key));
	} else if (getrandom(r->key, sizeof(r->key), 0) != (ssize_t)sizeof(r->key)) {
		hm_err_errno(err, "getrandom (the connection hash's key)");
		free(r->buckets);
		free(r);
		return -1;
	}
	*out = r;
	return 0;
}

void agent_reasm_destroy(struct agent_reasm *r)
{
	if (!r)
		return;
	while (r->lru_head)
		finish(r, r->lru_head, AGENT_REASM_RESET);
	explicit_bzero(r->key, sizeof(r->key));
	free(r->buckets);
	free(r);
}
