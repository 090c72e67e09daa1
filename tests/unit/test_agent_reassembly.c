/* agent: TCP reassembly of mirrored connections (tcp_reassembly.c): in-order delivery
 * exactly once, retransmits and overlaps, reordering, sequence wrap-around, holes that
 * never fill (lost copies are reset, never delivered with a hole), bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "agent/internal.h"

#define MAX_CONNS 8

struct rec_conn {
	uint16_t sport;
	uint8_t buf[1 << 16];
	size_t len;
	bool ended;
	enum agent_reasm_end how;
	bool refuse_data; /* data() answers false */
};

struct recorder {
	struct rec_conn conns[MAX_CONNS];
	size_t n;
	bool ignore_new;
};

static void *rec_open(void *ctx, const struct agent_tcp_segment *syn)
{
	struct recorder *r = ctx;
	if (r->ignore_new || r->n == MAX_CONNS)
		return NULL;
	struct rec_conn *c = &r->conns[r->n++];
	c->sport = syn->sport;
	return c;
}

static bool rec_data(void *ctx, void *conn, const void *p, size_t len)
{
	(void)ctx;
	struct rec_conn *c = conn;
	assert_false(c->ended);
	if (c->refuse_data)
		return false;
	assert_true(c->len + len <= sizeof(c->buf));
	memcpy(c->buf + c->len, p, len);
	c->len += len;
	return true;
}

static void rec_end(void *ctx, void *conn, enum agent_reasm_end how)
{
	(void)ctx;
	struct rec_conn *c = conn;
	assert_false(c->ended);
	c->ended = true;
	c->how = how;
}

struct fixture {
	struct recorder rec;
	struct agent_reasm *r;
	uint8_t data[1 << 15]; /* what the client sends */
};

static struct agent_reasm_config config(struct recorder *rec)
{
	return (struct agent_reasm_config){
	    .max_conns = 4,
	    .max_held_conn = 8192,
	    .max_held_total = 12288,
	    .gap_timeout_ms = 500,
	    .idle_timeout_ms = 60000,
	    .ops = {.open = rec_open, .data = rec_data, .end = rec_end},
	    .ctx = rec,
	};
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -1;
	for (size_t i = 0; i < sizeof(fx->data); i++)
		fx->data[i] = (uint8_t)(i * 7 + i / 251);
	struct agent_reasm_config cfg = config(&fx->rec);
	struct hm_err err;
	if (agent_reasm_create(&cfg, &fx->r, &err) < 0)
		return -1;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	agent_reasm_destroy(fx->r);
	free(fx);
	return 0;
}

static struct agent_tcp_segment seg(uint16_t sport, uint32_t seq)
{
	struct agent_tcp_segment s = {.family = 4, .sport = sport, .dport = 80, .seq = seq};
	memcpy(s.saddr, "\x0a\x00\x00\x01", 4);
	memcpy(s.daddr, "\x0a\x00\x00\x02", 4);
	return s;
}

static void syn(struct fixture *fx, uint16_t sport, uint32_t isn)
{
	struct agent_tcp_segment s = seg(sport, isn);
	s.syn = true;
	agent_reasm_segment(fx->r, &s, 0);
}

/* bytes [off, off+len) of fx->data, sent on the connection with ISN isn */
static void data_at(struct fixture *fx, uint16_t sport, uint32_t isn, uint32_t off, uint32_t len,
		    bool fin, int64_t now)
{
	struct agent_tcp_segment s = seg(sport, isn + 1 + off);
	s.payload = fx->data + off;
	s.len = len;
	s.fin = fin;
	agent_reasm_segment(fx->r, &s, now);
}

static void assert_whole(struct fixture *fx, size_t idx, size_t len)
{
	struct rec_conn *c = &fx->rec.conns[idx];
	assert_int_equal(c->len, len);
	assert_memory_equal(c->buf, fx->data, len);
}

static void test_in_order_then_fin(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1000, 5000);
	data_at(fx, 1000, 5000, 0, 100, false, 1);
	data_at(fx, 1000, 5000, 100, 1400, false, 2);
	data_at(fx, 1000, 5000, 1500, 500, true, 3);
	assert_int_equal(fx->rec.n, 1);
	assert_whole(fx, 0, 2000);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_FIN);
	assert_int_equal(agent_reasm_conns(fx->r), 0);
}

static void test_retransmits_and_overlaps_once(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1001, 77);
	syn(fx, 1001, 77); /* retransmitted SYN: the same connection */
	data_at(fx, 1001, 77, 0, 1000, false, 1);
	data_at(fx, 1001, 77, 0, 1000, false, 1);   /* whole retransmit */
	data_at(fx, 1001, 77, 500, 1000, false, 1); /* overlaps the end */
	data_at(fx, 1001, 77, 200, 100, false, 1);  /* inside what was delivered */
	/* ahead of a hole, then the same again and a bigger overlap of it */
	data_at(fx, 1001, 77, 2000, 500, false, 1);
	data_at(fx, 1001, 77, 2000, 500, false, 1);
	data_at(fx, 1001, 77, 1900, 800, false, 1);
	data_at(fx, 1001, 77, 1500, 500, false, 1); /* fills the hole */
	data_at(fx, 1001, 77, 2700, 0, true, 1);
	assert_int_equal(fx->rec.n, 1);
	assert_whole(fx, 0, 2700);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_FIN);
	assert_int_equal(agent_reasm_held_bytes(fx->r), 0);
}

static void test_reordered_delivered_in_order(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1002, 1);
	/* ten 1000-byte segments, the FIN first, then in a scrambled order */
	data_at(fx, 1002, 1, 10000, 0, true, 1);
	static const int order[] = {3, 1, 9, 0, 5, 2, 8, 4, 7, 6};
	for (size_t i = 0; i < HM_ARRAY_SIZE(order); i++) {
		assert_false(fx->rec.conns[0].ended);
		data_at(fx, 1002, 1, (uint32_t)order[i] * 1000, 1000, false, 2);
	}
	assert_whole(fx, 0, 10000);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_FIN);
}

static void test_sequence_wraps(void **state)
{
	struct fixture *fx = *state;
	uint32_t isn = 0xffffffffu - 300;
	syn(fx, 1003, isn);
	data_at(fx, 1003, isn, 600, 400, false, 1); /* after the wrap, held */
	data_at(fx, 1003, isn, 0, 600, false, 1);   /* crosses 2^32 */
	data_at(fx, 1003, isn, 1000, 24, true, 1);
	assert_whole(fx, 0, 1024);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_FIN);
}

static void test_without_syn_not_followed(void **state)
{
	struct fixture *fx = *state;
	/* a connection that began before the subscription */
	data_at(fx, 1004, 42, 0, 100, false, 1);
	data_at(fx, 1004, 42, 100, 100, true, 1);
	assert_int_equal(fx->rec.n, 0);
	assert_int_equal(agent_reasm_conns(fx->r), 0);
}

static void test_hole_at_fin_is_lost_not_delivered(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1005, 9);
	data_at(fx, 1005, 9, 0, 1000, false, 10);
	/* [1000, 2000) dropped by a full ring buffer: the pod got it, no retransmit */
	data_at(fx, 1005, 9, 2000, 1000, true, 20);
	assert_int_equal(agent_reasm_tick(fx->r, 100) > 0, true);
	assert_false(fx->rec.conns[0].ended);
	agent_reasm_tick(fx->r, 20 + 500 + 1);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_LOST);
	assert_whole(fx, 0, 1000); /* nothing after the hole */
	assert_int_equal(agent_reasm_held_bytes(fx->r), 0);
	assert_int_equal(agent_reasm_conns(fx->r), 0);
}

static void test_lost_tail_before_bare_fin(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1006, 9);
	data_at(fx, 1006, 9, 0, 1000, false, 10);
	/* the last data segment lost, then a bare FIN: nothing is held, still a hole */
	data_at(fx, 1006, 9, 1500, 0, true, 10);
	agent_reasm_tick(fx->r, 10 + 500 + 1);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_LOST);
	assert_whole(fx, 0, 1000);
}

static void test_progress_restarts_hole_clock(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1007, 0);
	data_at(fx, 1007, 0, 1000, 100, false, 0); /* hole [0,1000) from t=0 */
	data_at(fx, 1007, 0, 0, 500, false, 400);  /* part filled at t=400 */
	agent_reasm_tick(fx->r, 600);		   /* 600 after the hole, 200 after progress */
	assert_false(fx->rec.conns[0].ended);
	data_at(fx, 1007, 0, 500, 500, false, 700);
	assert_whole(fx, 0, 1100);
	assert_false(fx->rec.conns[0].ended);
}

static void test_held_bound_loses_connection(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1008, 0);
	data_at(fx, 1008, 0, 0, 10, false, 1);
	/* a hole, then more than max_held_conn (8192) bytes behind it */
	for (uint32_t off = 1000; off < 1000 + 9000; off += 1000)
		data_at(fx, 1008, 0, off, 1000, false, 1);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_LOST);
	assert_whole(fx, 0, 10);
	assert_int_equal(agent_reasm_held_bytes(fx->r), 0);
}

static void test_total_held_bound(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1009, 0);
	syn(fx, 1010, 0);
	data_at(fx, 1009, 0, 100, 7000, false, 1); /* held: 7000 of 12288 */
	data_at(fx, 1010, 0, 100, 7000, false, 1); /* would be 14000: over the total */
	assert_false(fx->rec.conns[0].ended);
	assert_true(fx->rec.conns[1].ended);
	assert_int_equal(fx->rec.conns[1].how, AGENT_REASM_LOST);
	assert_int_equal(agent_reasm_held_bytes(fx->r), 7000);
}

/* A pod's client sends 1-byte segments behind a hole: counted by payload, the
 * agent's 4 MB per connection held them as 4 million list entries (~200 MB, and a walk
 * of the list per segment). Each counts for its bookkeeping: the connection is lost
 * after a few thousand. */
static void test_tiny_segments_count_their_bookkeeping(void **state)
{
	(void)state;
	struct recorder rec = {0};
	struct agent_reasm_config cfg = config(&rec);
	cfg.max_held_conn = 4u << 20; /* the mirror engine's bounds */
	cfg.max_held_total = 64u << 20;
	struct agent_reasm *r;
	struct hm_err err;
	assert_int_equal(agent_reasm_create(&cfg, &r, &err), 0);
	struct agent_tcp_segment s = seg(1020, 0);
	s.syn = true;
	agent_reasm_segment(r, &s, 0);
	static const uint8_t byte = 'x';
	uint32_t sent = 0;
	for (; sent < 200000 && !rec.conns[0].ended; sent++) {
		s = seg(1020, 2 + sent); /* byte 1 never comes */
		s.payload = &byte;
		s.len = 1;
		agent_reasm_segment(r, &s, 1);
	}
	assert_true(rec.conns[0].ended);
	assert_int_equal(rec.conns[0].how, AGENT_REASM_LOST);
	assert_true(sent <= (4u << 20) / 1024 + 1);
	assert_int_equal(agent_reasm_held_bytes(r), 0);
	agent_reasm_destroy(r);
}

static void test_rst_resets(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 1011, 0);
	data_at(fx, 1011, 0, 0, 10, false, 1);
	struct agent_tcp_segment s = seg(1011, 11);
	s.rst = true;
	agent_reasm_segment(fx->r, &s, 2);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_RESET);
}

static void test_max_conns_evicts_least_recent(void **state)
{
	struct fixture *fx = *state;
	for (uint16_t p = 0; p < 4; p++) {
		syn(fx, 2000 + p, 0);
		data_at(fx, 2000 + p, 0, 0, 1, false, p);
	}
	data_at(fx, 2000, 0, 1, 1, false, 10); /* 2000 is now the most recent */
	syn(fx, 2004, 0);		       /* a fifth: 2001 goes */
	assert_int_equal(agent_reasm_conns(fx->r), 4);
	assert_false(fx->rec.conns[0].ended);
	assert_true(fx->rec.conns[1].ended);
	assert_int_equal(fx->rec.conns[1].how, AGENT_REASM_LOST);
}

static void test_tuple_reuse_and_ipv6(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 3000, 100);
	struct agent_tcp_segment s6 = seg(3000, 100);
	s6.family = 6;
	memset(s6.saddr, 0xfd, 16);
	memset(s6.daddr, 0xfe, 16);
	s6.syn = true;
	agent_reasm_segment(fx->r, &s6, 0);
	assert_int_equal(fx->rec.n, 2); /* same ports, other family: another connection */
	syn(fx, 3000, 9999);		/* a new ISN on the v4 tuple: the old one ended */
	assert_int_equal(fx->rec.n, 3);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_RESET);
	assert_false(fx->rec.conns[1].ended);
}

static void test_fast_open_and_refusal(void **state)
{
	struct fixture *fx = *state;
	struct agent_tcp_segment s = seg(4000, 50);
	s.syn = true;
	s.payload = fx->data;
	s.len = 300;
	agent_reasm_segment(fx->r, &s, 0);
	assert_whole(fx, 0, 300);
	/* a caller that stops following gets no end call */
	fx->rec.conns[0].refuse_data = true;
	data_at(fx, 4000, 50, 300, 10, false, 1);
	assert_false(fx->rec.conns[0].ended);
	assert_int_equal(agent_reasm_conns(fx->r), 0);
	/* and an open that answers NULL follows nothing */
	fx->rec.ignore_new = true;
	syn(fx, 4001, 0);
	assert_int_equal(agent_reasm_conns(fx->r), 0);
}

static void test_lost_flow_ends_at_once(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 6000, 0);
	syn(fx, 6001, 0);
	data_at(fx, 6000, 0, 0, 100, false, 1);
	/* the program dropped the last segments of 6000, FIN included: no hole to see */
	struct agent_tcp_segment key = seg(6000, 0);
	agent_reasm_lose(fx->r, &key);
	assert_true(fx->rec.conns[0].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_LOST);
	assert_whole(fx, 0, 100);
	assert_false(fx->rec.conns[1].ended);
	/* later segments of it are not followed; an unknown flow is nothing */
	data_at(fx, 6000, 0, 100, 100, true, 2);
	key.sport = 7000;
	agent_reasm_lose(fx->r, &key);
	assert_int_equal(agent_reasm_conns(fx->r), 1);
}

static void test_idle_and_drop_port(void **state)
{
	struct fixture *fx = *state;
	syn(fx, 5000, 0);
	syn(fx, 5001, 0);
	struct agent_tcp_segment other = seg(5002, 0);
	other.dport = 81;
	other.syn = true;
	agent_reasm_segment(fx->r, &other, 0);
	agent_reasm_drop_port(fx->r, 80);
	assert_true(fx->rec.conns[0].ended && fx->rec.conns[1].ended);
	assert_int_equal(fx->rec.conns[0].how, AGENT_REASM_RESET);
	assert_false(fx->rec.conns[2].ended);
	assert_int_equal(agent_reasm_tick(fx->r, 1000), 59000);
	agent_reasm_tick(fx->r, 60001);
	assert_true(fx->rec.conns[2].ended);
	assert_int_equal(fx->rec.conns[2].how, AGENT_REASM_LOST);
	assert_int_equal(agent_reasm_tick(fx->r, 60002), -1);
}

/* ---- the connection hash: a pod chooses its flows ---- */

/* Every connection is followed (a handle that is never NULL); nothing is recorded. */
static int counted_opens;
static void *count_open(void *ctx, const struct agent_tcp_segment *syn)
{
	(void)ctx;
	(void)syn;
	counted_opens++;
	return &counted_opens;
}
static bool count_data(void *ctx, void *conn, const void *p, size_t len)
{
	(void)ctx, (void)conn, (void)p, (void)len;
	return true;
}
static void count_end(void *ctx, void *conn, enum agent_reasm_end how)
{
	(void)ctx, (void)conn, (void)how;
}

/* The agent's sizes (agent/mirror.c); key {0, 0}: from getrandom() */
static struct agent_reasm *hash_reasm(uint64_t k0, uint64_t k1)
{
	struct agent_reasm_config cfg = {
	    .max_conns = 4096,
	    .max_held_conn = 4u << 20,
	    .max_held_total = 64u << 20,
	    .gap_timeout_ms = 1000,
	    .idle_timeout_ms = 60000,
	    .hash_key = {k0, k1},
	    .ops = {.open = count_open, .data = count_data, .end = count_end},
	};
	struct agent_reasm *r;
	struct hm_err err = {0};
	assert_int_equal(agent_reasm_create(&cfg, &r, &err), 0);
	counted_opens = 0;
	return r;
}

/* The hash before it was keyed (FNV-1a over the 4-tuple, 1024 buckets): public, so a
 * pod could compute it for the flows its clients open. */
static unsigned public_fnv_bucket(const struct agent_tcp_segment *s)
{
	uint32_t h = 2166136261u;
	const uint8_t *parts[] = {s->saddr, s->daddr};
	for (size_t p = 0; p < 2; p++)
		for (size_t i = 0; i < 4; i++)
			h = (h ^ parts[p][i]) * 16777619u;
	h = (h ^ s->sport) * 16777619u;
	h = (h ^ s->dport) * 16777619u;
	return h % 1024;
}

#define CHOSEN 512
/* 512 flows of 9 client addresses to port 8080 that all share FNV bucket 7 */
static size_t chosen_flows(struct agent_tcp_segment *out)
{
	size_t n = 0;
	for (unsigned host = 10; host < 250 && n < CHOSEN; host++) {
		for (uint32_t port = 1024; port < 65536 && n < CHOSEN; port++) {
			struct agent_tcp_segment s = {.family = 4,
						      .sport = (uint16_t)port,
						      .dport = 8080,
						      .seq = 1,
						      .syn = true};
			memcpy(s.saddr, (uint8_t[]){10, 213, 0, (uint8_t)host}, 4);
			memcpy(s.daddr, "\x0a\xd5\x00\x02", 4);
			if (public_fnv_bucket(&s) == 7)
				out[n++] = s;
		}
	}
	return n;
}

static size_t open_all(struct agent_reasm *r, const struct agent_tcp_segment *flows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		agent_reasm_segment(r, &flows[i], 0);
	return agent_reasm_conns(r);
}

/* Flows chosen to collide under the public hash spread over the buckets under a key,
 * each key its own way: every one is followed and no chain is long. */
static void test_hash_keyed_spreads_chosen_flows(void **state)
{
	(void)state;
	static struct agent_tcp_segment flows[CHOSEN];
	assert_int_equal(chosen_flows(flows), CHOSEN); /* the attack, under the old hash */
	struct agent_reasm *a = hash_reasm(0x0123456789abcdefull, 0xfedcba9876543210ull);
	struct agent_reasm *b = hash_reasm(0x5851f42d4c957f2dull, 0x14057b7ef767814full);
	struct agent_reasm *drawn = hash_reasm(0, 0);
	size_t same_bucket = 0;
	for (size_t i = 0; i < CHOSEN; i++)
		same_bucket +=
		    agent_reasm_bucket_of(a, &flows[i]) == agent_reasm_bucket_of(b, &flows[i]);
	assert_int_equal(open_all(a, flows, CHOSEN), CHOSEN);
	assert_int_equal(open_all(b, flows, CHOSEN), CHOSEN);
	assert_int_equal(open_all(drawn, flows, CHOSEN), CHOSEN);
	size_t la = agent_reasm_longest_chain(a), lb = agent_reasm_longest_chain(b),
	       ld = agent_reasm_longest_chain(drawn);
	print_message("512 flows in one bucket of the public hash: longest chain %zu, %zu and %zu "
		      "(a drawn key) under keys; %zu flows in the same bucket under both keys\n",
		      la, lb, ld, same_bucket);
	/* 512 connections over 4096 buckets: a chain of 6 happens by chance about never */
	assert_true(la <= 6 && lb <= 6 && ld <= 6);
	assert_true(same_bucket < 16); /* ~512/4096 by chance */
	agent_reasm_destroy(a);
	agent_reasm_destroy(b);
	agent_reasm_destroy(drawn);
}

/* Whoever knows the key can fill a bucket: its chain stays bounded (the flows over
 * the bound are not followed), and the connections followed so far go on. */
static void test_hash_chain_bounded(void **state)
{
	(void)state;
	struct agent_reasm *r = hash_reasm(42, 43);
	static struct agent_tcp_segment flows[64];
	size_t n = 0;
	struct agent_tcp_segment first = seg(1024, 1);
	first.syn = true;
	size_t target = agent_reasm_bucket_of(r, &first);
	for (uint32_t i = 0; i < (1u << 24) && n < HM_ARRAY_SIZE(flows); i++) {
		/* the pod's clients: any address of 10.0/16, any port */
		struct agent_tcp_segment s = seg((uint16_t)(1024 + i % 64512), 1);
		s.saddr[2] = (uint8_t)(i / 64512);
		s.syn = true;
		if (agent_reasm_bucket_of(r, &s) == target)
			flows[n++] = s;
	}
	assert_int_equal(n, HM_ARRAY_SIZE(flows));
	size_t followed = open_all(r, flows, n);
	print_message("64 flows chosen with the key: %zu followed, longest chain %zu\n", followed,
		      agent_reasm_longest_chain(r));
	assert_true(followed >= 8 && followed < n);
	assert_int_equal(agent_reasm_longest_chain(r), followed);
	assert_int_equal(counted_opens, (int)followed);
	/* a connection of another bucket is still followed */
	struct agent_tcp_segment other = seg(80, 1);
	other.syn = true;
	for (uint16_t port = 81; agent_reasm_bucket_of(r, &other) == target; port++)
		other = seg(port, 1), other.syn = true;
	agent_reasm_segment(r, &other, 0);
	assert_int_equal(agent_reasm_conns(r), followed + 1);
	agent_reasm_destroy(r);
}

int main(void)
{
	hm_log_init("test_agent_reassembly", HM_LOG_QUIET);
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_in_order_then_fin),
	    T(test_retransmits_and_overlaps_once),
	    T(test_reordered_delivered_in_order),
	    T(test_sequence_wraps),
	    T(test_without_syn_not_followed),
	    T(test_hole_at_fin_is_lost_not_delivered),
	    T(test_lost_tail_before_bare_fin),
	    T(test_progress_restarts_hole_clock),
	    T(test_held_bound_loses_connection),
	    T(test_total_held_bound),
	    cmocka_unit_test(test_tiny_segments_count_their_bookkeeping),
	    T(test_rst_resets),
	    T(test_max_conns_evicts_least_recent),
	    T(test_tuple_reuse_and_ipv6),
	    T(test_fast_open_and_refusal),
	    T(test_lost_flow_ends_at_once),
	    T(test_idle_and_drop_port),
	    cmocka_unit_test(test_hash_keyed_spreads_chosen_flows),
	    cmocka_unit_test(test_hash_chain_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
