/* agent: admission.c, the connections that have not sent their first frame yet: what
 * is handed over, and whom the limits close (the oldest of the peer, else of the
 * transport; never the newcomer), and the deadline. Pending connections are one end of
 * a socketpair; the test plays the peer on the other end. */
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "agent/internal.h"

struct handed {
	int count;
	int fd;
	uint16_t type;
	uint64_t id;
};

static void on_admitted(void *arg, int fd, uint64_t id, const struct agent_peer *peer,
			struct proto_frame *first)
{
	(void)peer;
	struct handed *h = arg;
	h->count++;
	if (h->fd >= 0)
		close(h->fd);
	h->fd = fd;
	h->type = first->hdr.type;
	h->id = id;
	proto_frame_release(first);
}

struct fx {
	struct agent_stats stats;
	struct handed handed;
	struct agent_admission *a;
	int peer_end[16]; /* the test's end of each connection, by id */
};

static void fx_init(struct fx *f, int deadline_ms, unsigned per_transport, unsigned per_peer)
{
	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < HM_ARRAY_SIZE(f->peer_end); i++)
		f->peer_end[i] = -1;
	f->handed.fd = -1;
	agent_stats_init(&f->stats);
	struct agent_admission_config cfg = {
	    .deadline_ms = deadline_ms,
	    .max_per_transport = per_transport,
	    .max_per_peer = per_peer,
	    .stats = &f->stats,
	    .admitted = on_admitted,
	    .arg = &f->handed,
	};
	struct hm_err err = {0};
	assert_int_equal(agent_admission_create(&cfg, &f->a, &err), 0);
}

static void fx_fini(struct fx *f)
{
	agent_admission_destroy(f->a);
	for (size_t i = 0; i < HM_ARRAY_SIZE(f->peer_end); i++)
		if (f->peer_end[i] >= 0)
			close(f->peer_end[i]);
	if (f->handed.fd >= 0)
		close(f->handed.fd);
}

static struct agent_peer unix_peer(uid_t uid)
{
	struct agent_peer p = {.is_unix = true, .has_cred = true, .uid = uid};
	snprintf(p.desc, sizeof(p.desc), "unix uid %u", (unsigned)uid);
	return p;
}

static struct agent_peer tcp_peer(uint8_t last_octet)
{
	struct agent_peer p = {.addr_len = 4, .addr = {10, 0, 0, last_octet}};
	snprintf(p.desc, sizeof(p.desc), "10.0.0.%u", last_octet);
	return p;
}

/* A new connection with id from peer; the test keeps the other end. */
static void connect_as(struct fx *f, uint64_t id, const struct agent_peer *peer)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	f->peer_end[id] = sv[1];
	agent_admission_add(f->a, sv[0], id, peer);
}

/* Bytes [from, upto) of a PING frame (upto 0: to its end). */
static void send_ping_part(int fd, size_t from, size_t upto)
{
	struct proto_buf b = PROTO_BUF_INIT;
	struct proto_msg m = {.type = PROTO_PING};
	m.ping.nonce = 42;
	struct hm_err err = {0};
	assert_int_equal(proto_encode(&b, 7, &m, &err), 0);
	size_t end = upto && upto < b.len ? upto : b.len;
	assert_int_equal(send(fd, b.data + from, end - from, MSG_NOSIGNAL), (ssize_t)(end - from));
	proto_buf_release(&b);
}

static void send_ping(int fd, size_t upto)
{
	send_ping_part(fd, 0, upto);
}

/* Did the agent's side of connection id get closed? */
static bool closed_by_agent(struct fx *f, uint64_t id)
{
	char c;
	ssize_t n = recv(f->peer_end[id], &c, 1, MSG_DONTWAIT);
	return n == 0;
}

static void test_hello_already_there_is_handed_over(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 4, 4);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	f.peer_end[1] = sv[1];
	send_ping(sv[1], 0);
	struct agent_peer p = unix_peer(1000);
	agent_admission_add(f.a, sv[0], 1, &p);
	/* at once, without ever waiting */
	assert_int_equal(f.handed.count, 1);
	assert_int_equal(f.handed.type, PROTO_PING);
	assert_int_equal(f.handed.id, 1);
	assert_int_equal(agent_admission_pending(f.a, true), 0);
	fx_fini(&f);
}

static void test_partial_frame_completes_later(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 4, 4);
	struct agent_peer p = tcp_peer(1);
	connect_as(&f, 1, &p);
	send_ping(f.peer_end[1], 5); /* part of the header */
	agent_admission_service(f.a);
	assert_int_equal(f.handed.count, 0);
	assert_int_equal(agent_admission_pending(f.a, false), 1);
	send_ping_part(f.peer_end[1], 5, 0);
	agent_admission_service(f.a);
	assert_int_equal(f.handed.count, 1);
	assert_int_equal(f.handed.type, PROTO_PING);
	assert_int_equal(agent_admission_pending(f.a, false), 0);
	fx_fini(&f);
}

static void test_per_peer_cap_evicts_that_peers_oldest(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 10000, 10, 3);
	struct agent_peer attacker = unix_peer(65534), other = unix_peer(1000);
	connect_as(&f, 1, &other);
	for (uint64_t id = 2; id <= 4; id++)
		connect_as(&f, id, &attacker);
	assert_int_equal(agent_admission_pending(f.a, true), 4);
	/* the attacker's 4th: its own oldest (2) goes, the other peer's (1) stays */
	connect_as(&f, 5, &attacker);
	assert_int_equal(agent_admission_pending(f.a, true), 4);
	assert_true(closed_by_agent(&f, 2));
	assert_false(closed_by_agent(&f, 1));
	assert_false(closed_by_agent(&f, 3));
	assert_false(closed_by_agent(&f, 5));
	/* the newcomer is served when it speaks */
	send_ping(f.peer_end[5], 0);
	agent_admission_service(f.a);
	assert_int_equal(f.handed.count, 1);
	assert_int_equal(f.handed.id, 5);
	fx_fini(&f);
}

static void test_transport_budget_evicts_oldest_not_other_transport(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 10000, 3, 3);
	struct agent_peer u1 = unix_peer(1), u2 = unix_peer(2), u3 = unix_peer(3),
			  u4 = unix_peer(4);
	struct agent_peer t1 = tcp_peer(1), t2 = tcp_peer(2);
	connect_as(&f, 1, &t1); /* the oldest of all, but TCP's */
	connect_as(&f, 2, &u1);
	connect_as(&f, 3, &u2);
	connect_as(&f, 4, &u3);
	connect_as(&f, 5, &t2);
	assert_int_equal(agent_admission_pending(f.a, true), 3);
	assert_int_equal(agent_admission_pending(f.a, false), 2);
	/* unix is full: its oldest (2) goes, not TCP's older one (1) */
	connect_as(&f, 6, &u4);
	assert_true(closed_by_agent(&f, 2));
	assert_false(closed_by_agent(&f, 1));
	assert_false(closed_by_agent(&f, 6));
	assert_int_equal(agent_admission_pending(f.a, true), 3);
	assert_int_equal(agent_admission_pending(f.a, false), 2);
	assert_true(atomic_load(&f.stats.errors) >= 1);
	fx_fini(&f);
}

static void test_deadline_closes_silent_peers(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 100, 8, 8);
	struct agent_peer p = tcp_peer(9);
	connect_as(&f, 1, &p);
	int wait = agent_admission_service(f.a);
	assert_true(wait > 0 && wait <= 100);
	poll(NULL, 0, 150);
	assert_int_equal(agent_admission_service(f.a), -1);
	assert_true(closed_by_agent(&f, 1));
	assert_int_equal(agent_admission_pending(f.a, false), 0);
	fx_fini(&f);
}

static void test_oversized_first_frame_closed(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f, 1000, 4, 4);
	struct agent_peer p = unix_peer(5);
	connect_as(&f, 1, &p);
	uint8_t hdr[PROTO_HDR_LEN];
	struct proto_hdr h = {.len = PROTO_HELLO_MAX_PAYLOAD + 1, .type = PROTO_HELLO, .id = 0};
	proto_hdr_encode(hdr, &h);
	assert_int_equal(send(f.peer_end[1], hdr, sizeof(hdr), MSG_NOSIGNAL), (ssize_t)sizeof(hdr));
	agent_admission_service(f.a);
	assert_int_equal(f.handed.count, 0);
	assert_true(closed_by_agent(&f, 1));
	assert_int_equal(agent_admission_pending(f.a, true), 0);
	fx_fini(&f);
}

int main(void)
{
	hm_log_init("test_agent_admission", HM_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello_already_there_is_handed_over),
	    cmocka_unit_test(test_partial_frame_completes_later),
	    cmocka_unit_test(test_per_peer_cap_evicts_that_peers_oldest),
	    cmocka_unit_test(test_transport_budget_evicts_oldest_not_other_transport),
	    cmocka_unit_test(test_deadline_closes_silent_peers),
	    cmocka_unit_test(test_oversized_first_frame_closed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
