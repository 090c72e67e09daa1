/* agent: one-time stream tokens (streams.c), endpoint parsing and token files
 * (client.c). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "client/client.h"
#include "agent/internal.h"

static int a_socket(void)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	return fd;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void test_token_claimed_once(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(0, &s, &err), 0);
	int fd = a_socket();
	uint8_t token[PROTO_TOKEN_LEN];
	assert_int_equal(agent_streams_add(s, 7, NULL, RELAY_FILE, fd, 1234, token, &err), 0);
	assert_int_equal(agent_streams_pending(s), 1);

	uint8_t wrong[PROTO_TOKEN_LEN];
	memcpy(wrong, token, sizeof(wrong));
	wrong[PROTO_TOKEN_LEN - 1] ^= 1;
	struct agent_pending_stream ps;
	assert_int_equal(agent_streams_claim(s, wrong, &ps), -1);

	assert_int_equal(agent_streams_claim(s, token, &ps), 0);
	assert_int_equal(ps.kind, RELAY_FILE);
	assert_int_equal(ps.fd, fd);
	assert_int_equal(ps.size, 1234);
	assert_int_equal(ps.session_id, 7);
	assert_true(fd_open(fd)); /* the claimer owns it now */
	assert_int_equal(agent_streams_claim(s, token, &ps), -1);
	assert_int_equal(agent_streams_pending(s), 0);
	close(fd);
	agent_streams_destroy(s);
}

static void test_tokens_differ(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(0, &s, &err), 0);
	uint8_t a[PROTO_TOKEN_LEN], b[PROTO_TOKEN_LEN];
	assert_int_equal(agent_streams_add(s, 1, NULL, RELAY_TCP, a_socket(), 0, a, &err), 0);
	assert_int_equal(agent_streams_add(s, 1, NULL, RELAY_TCP, a_socket(), 0, b, &err), 0);
	assert_memory_not_equal(a, b, PROTO_TOKEN_LEN);
	agent_streams_destroy(s); /* closes both */
}

/* Only agent_streams_add_tcp with a uid makes a socket passable (the TCP hand-off); every
 * other parked object, a root client's included (uid 0), is relayed. */
static void test_passable_only_when_asked(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(0, &s, &err), 0);
	uint8_t a[PROTO_TOKEN_LEN], b[PROTO_TOKEN_LEN], c[PROTO_TOKEN_LEN], d[PROTO_TOKEN_LEN];
	assert_int_equal(agent_streams_add(s, 1, NULL, RELAY_TCP, a_socket(), 0, a, &err), 0);
	assert_int_equal(agent_streams_add_tcp(s, 1, NULL, a_socket(), -1, b, &err), 0);
	assert_int_equal(agent_streams_add_tcp(s, 1, NULL, a_socket(), 0, c, &err), 0);
	assert_int_equal(agent_streams_add_tcp(s, 1, NULL, a_socket(), 1000, d, &err), 0);
	struct agent_pending_stream ps;
	assert_int_equal(agent_streams_claim(s, a, &ps), 0);
	assert_false(ps.passable);
	close(ps.fd);
	assert_int_equal(agent_streams_claim(s, b, &ps), 0);
	assert_false(ps.passable);
	close(ps.fd);
	assert_int_equal(agent_streams_claim(s, c, &ps), 0);
	assert_true(ps.passable);
	assert_int_equal(ps.pass_uid, 0);
	assert_int_equal(ps.kind, RELAY_TCP);
	close(ps.fd);
	assert_int_equal(agent_streams_claim(s, d, &ps), 0);
	assert_true(ps.passable);
	assert_int_equal(ps.pass_uid, 1000);
	close(ps.fd);
	agent_streams_destroy(s);
}

static void test_drop_session_closes_its_fds(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(0, &s, &err), 0);
	int mine = a_socket(), other = a_socket();
	uint8_t t1[PROTO_TOKEN_LEN], t2[PROTO_TOKEN_LEN];
	assert_int_equal(agent_streams_add(s, 1, NULL, RELAY_UDP, mine, 0, t1, &err), 0);
	assert_int_equal(agent_streams_add(s, 2, NULL, RELAY_UDP, other, 0, t2, &err), 0);
	agent_streams_drop_session(s, 1);
	assert_false(fd_open(mine));
	assert_true(fd_open(other));
	struct agent_pending_stream ps;
	assert_int_equal(agent_streams_claim(s, t1, &ps), -1);
	assert_int_equal(agent_streams_claim(s, t2, &ps), 0);
	close(ps.fd);
	agent_streams_destroy(s);
}

static void test_expiry(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(50, &s, &err), 0);
	int fd = a_socket();
	uint8_t t[PROTO_TOKEN_LEN];
	assert_int_equal(agent_streams_add(s, 1, NULL, RELAY_TCP, fd, 0, t, &err), 0);
	usleep(120 * 1000);
	agent_streams_expire(s);
	assert_false(fd_open(fd));
	struct agent_pending_stream ps;
	assert_int_equal(agent_streams_claim(s, t, &ps), -1);
	agent_streams_destroy(s);
}

/* A handoff's callback runs exactly once: -1 when dropped or expired unclaimed; the
 * claimer calls it with the stream (here: by hand, as server.c does). */
static int handoff_calls, handoff_fd;
static void handoff_claimed(void *ctx, int fd, const struct relay_release *release)
{
	assert_ptr_equal(ctx, &handoff_calls);
	assert_true((fd < 0) == (release == NULL)); /* a stream comes with its release */
	handoff_calls++;
	handoff_fd = fd;
}

static void test_handoff(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(50, &s, &err), 0);
	uint8_t t1[PROTO_TOKEN_LEN], t2[PROTO_TOKEN_LEN], t3[PROTO_TOKEN_LEN];
	assert_int_equal(
	    agent_streams_add_handoff(s, 1, NULL, handoff_claimed, &handoff_calls, t1, &err), 0);
	assert_int_equal(
	    agent_streams_add_handoff(s, 2, NULL, handoff_claimed, &handoff_calls, t2, &err), 0);
	assert_int_equal(
	    agent_streams_add_handoff(s, 3, NULL, handoff_claimed, &handoff_calls, t3, &err), 0);
	struct agent_pending_stream ps;
	assert_int_equal(agent_streams_claim(s, t1, &ps), 0);
	assert_int_equal(handoff_calls, 0); /* the claimer's to call */
	assert_ptr_equal(ps.claimed, handoff_claimed);
	assert_int_equal(ps.fd, -1);
	struct relay_release none = {0};
	ps.claimed(ps.claimed_ctx, 42, &none);
	assert_int_equal(handoff_calls, 1);
	assert_int_equal(handoff_fd, 42);
	agent_streams_drop_session(s, 2);
	assert_int_equal(handoff_calls, 2);
	assert_int_equal(handoff_fd, -1);
	usleep(120 * 1000);
	agent_streams_expire(s);
	assert_int_equal(handoff_calls, 3);
	assert_int_equal(handoff_fd, -1);
	assert_int_equal(agent_streams_claim(s, t3, &ps), -1);
	agent_streams_destroy(s);
	assert_int_equal(handoff_calls, 3);
}

static void close_session(struct agent_budget_account *a)
{
	agent_budget_session_close(a);
	agent_budget_account_put(a);
}

static struct agent_budget *small_budget(void)
{
	struct agent_budget_limits l = {0};
	l.global[AGENT_RES_SESSIONS] = 3;
	l.per_session[AGENT_RES_SESSIONS] = 2; /* per peer */
	l.global[AGENT_RES_STREAMS] = 6;
	l.per_session[AGENT_RES_STREAMS] = 4;
	l.global[AGENT_RES_BYTES] = 1000;
	l.per_session[AGENT_RES_BYTES] = 600;
	struct agent_budget *b;
	struct hm_err err = {0};
	assert_int_equal(agent_budget_create(&l, &b, &err), 0);
	return b;
}

/* Unclaimed streams count against their session (EMFILE) and the agent (ENFILE);
 * a stream's count lasts until it is closed, also after its token is claimed. */
static void test_stream_budget(void **state)
{
	(void)state;
	struct agent_streams *s;
	struct hm_err err = {0};
	assert_int_equal(agent_streams_create(0, &s, &err), 0);
	struct agent_budget *b = small_budget();
	struct agent_budget_account *one, *two;
	assert_int_equal(agent_budget_session_open(b, "uid 1", &one, &err), 0);
	assert_int_equal(agent_budget_session_open(b, "uid 2", &two, &err), 0);
	uint8_t t[PROTO_TOKEN_LEN], first[PROTO_TOKEN_LEN];
	assert_int_equal(agent_streams_add(s, 1, one, RELAY_TCP, a_socket(), 0, first, &err), 0);
	for (int i = 1; i < 4; i++)
		assert_int_equal(agent_streams_add(s, 1, one, RELAY_TCP, a_socket(), 0, t, &err),
				 0);
	int fd = a_socket();
	assert_int_equal(agent_streams_add(s, 1, one, RELAY_TCP, fd, 0, t, &err), -1);
	assert_int_equal(err.code, EMFILE);
	assert_non_null(strstr(err.msg, "--max-session-streams"));
	assert_false(fd_open(fd)); /* taken over even on failure */
	/* the other session has its own share, up to what the agent has left */
	assert_int_equal(agent_streams_add(s, 2, two, RELAY_TCP, a_socket(), 0, t, &err), 0);
	assert_int_equal(agent_streams_add(s, 2, two, RELAY_TCP, a_socket(), 0, t, &err), 0);
	assert_int_equal(agent_streams_add(s, 2, two, RELAY_TCP, a_socket(), 0, t, &err), -1);
	assert_int_equal(err.code, ENFILE);
	assert_non_null(strstr(err.msg, "--max-streams"));
	/* claimed: still counted (now the relay's), until closed */
	struct agent_pending_stream ps;
	assert_int_equal(agent_streams_claim(s, first, &ps), 0);
	assert_ptr_equal(ps.account, one);
	assert_int_equal(agent_streams_add(s, 2, two, RELAY_TCP, a_socket(), 0, t, &err), -1);
	close(ps.fd);
	agent_budget_stream_closed(ps.account);
	assert_int_equal(agent_streams_add(s, 2, two, RELAY_TCP, a_socket(), 0, t, &err), 0);
	/* a session's end returns its unclaimed streams */
	agent_streams_drop_session(s, 1);
	struct agent_budget_usage u;
	agent_budget_usage(b, &u);
	assert_int_equal(u.used[AGENT_RES_STREAMS], 3);
	assert_int_equal(u.refused[AGENT_RES_STREAMS], 3);
	agent_streams_destroy(s);
	agent_budget_usage(b, &u);
	assert_int_equal(u.used[AGENT_RES_STREAMS], 0);
	close_session(one);
	close_session(two);
	agent_budget_destroy(b);
}

static void test_session_budget(void **state)
{
	(void)state;
	struct agent_budget *b = small_budget();
	struct hm_err err = {0};
	struct agent_budget_account *a1, *a2, *a3, *x;
	assert_int_equal(agent_budget_session_open(b, "uid 1", &a1, &err), 0);
	assert_int_equal(agent_budget_session_open(b, "uid 1", &a2, &err), 0);
	assert_int_equal(agent_budget_session_open(b, "uid 1", &x, &err), -1);
	assert_int_equal(err.code, EUSERS);
	assert_non_null(strstr(err.msg, "--max-peer-sessions"));
	assert_int_equal(agent_budget_session_open(b, "10.0.0.1", &a3, &err), 0);
	assert_int_equal(agent_budget_session_open(b, "10.0.0.2", &x, &err), -1);
	assert_int_equal(err.code, EUSERS);
	assert_non_null(strstr(err.msg, "--max-sessions"));
	close_session(a1);
	assert_int_equal(agent_budget_session_open(b, "10.0.0.2", &x, &err), 0);
	close_session(x);
	close_session(a2);
	close_session(a3);
	agent_budget_destroy(b);
}

struct waiter_arg {
	struct agent_budget_account *a;
	uint64_t n;
	int rc, code;
};

static void *reserve_waiting(void *arg)
{
	struct waiter_arg *w = arg;
	struct hm_err err = {0};
	w->rc = agent_budget_reserve(w->a, AGENT_RES_BYTES, w->n, 5000, &err);
	w->code = err.code;
	return NULL;
}

/* Reply memory: over the session's share fails at once; over the agent's waits for a
 * release, or fails with ENOBUFS when none comes in time. */
static void test_bytes_budget(void **state)
{
	(void)state;
	struct agent_budget *b = small_budget();
	struct hm_err err = {0};
	struct agent_budget_account *one, *two;
	assert_int_equal(agent_budget_session_open(b, "uid 1", &one, &err), 0);
	assert_int_equal(agent_budget_session_open(b, "uid 2", &two, &err), 0);
	assert_int_equal(agent_budget_reserve(one, AGENT_RES_BYTES, 700, 1000, &err), -1);
	assert_int_equal(err.code, ENOBUFS);
	assert_non_null(strstr(err.msg, "--max-session-inflight"));
	assert_int_equal(agent_budget_reserve(one, AGENT_RES_BYTES, 600, 0, &err), 0);
	assert_int_equal(agent_budget_reserve(two, AGENT_RES_BYTES, 500, 0, &err), -1);
	assert_int_equal(err.code, ENOBUFS);
	assert_int_equal(agent_budget_reserve(two, AGENT_RES_BYTES, 500, 50, &err), -1);
	assert_int_equal(err.code, ENOBUFS);
	assert_non_null(strstr(err.msg, "--max-inflight"));
	struct waiter_arg w = {.a = two, .n = 500};
	pthread_t th;
	pthread_create(&th, NULL, reserve_waiting, &w);
	usleep(50 * 1000);
	agent_budget_release(one, AGENT_RES_BYTES, 600);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, 0);
	/* stopping wakes a waiter */
	w = (struct waiter_arg){.a = one, .n = 600};
	pthread_create(&th, NULL, reserve_waiting, &w);
	usleep(50 * 1000);
	agent_budget_stop(b);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, -1);
	assert_int_equal(w.code, ESHUTDOWN);
	agent_budget_release(two, AGENT_RES_BYTES, 500);
	close_session(one);
	close_session(two);
	agent_budget_destroy(b);
}

static void test_endpoint_parse(void **state)
{
	(void)state;
	struct client_endpoint ep;
	char buf[200];
	assert_int_equal(client_endpoint_parse("unix:/run/x.sock", &ep, NULL), 0);
	assert_ptr_equal(ep.transport, &client_transport_unix);
	assert_string_equal(ep.path, "/run/x.sock");
	assert_int_equal(client_endpoint_parse("/abs.sock", &ep, NULL), 0);
	assert_ptr_equal(ep.transport, &client_transport_unix);
	assert_int_equal(client_endpoint_parse("127.0.0.1:7070", &ep, NULL), 0);
	assert_ptr_equal(ep.transport, &client_transport_tcp);
	assert_string_equal(ep.host, "127.0.0.1");
	assert_string_equal(ep.port, "7070");
	assert_string_equal(client_endpoint_str(&ep, buf, sizeof(buf)), "127.0.0.1:7070");
	assert_int_equal(client_endpoint_parse("[::1]:53", &ep, NULL), 0);
	assert_string_equal(ep.host, "::1");
	assert_string_equal(client_endpoint_str(&ep, buf, sizeof(buf)), "[::1]:53");
	assert_int_equal(client_endpoint_parse("node.example:443", &ep, NULL), 0);
	assert_string_equal(ep.host, "node.example");

	const char *bad[] = {"",	 "host", "host:",   "host:0", "host:65536",
			     "host:12a", ":80",	 "[::1]53", "[::1",   "unix:"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(bad); i++)
		assert_int_equal(client_endpoint_parse(bad[i], &ep, NULL), -1);
	char longpath[300] = "unix:/";
	memset(longpath + 6, 'a', 250);
	longpath[256] = '\0';
	assert_int_equal(client_endpoint_parse(longpath, &ep, NULL), -1);

	/* trace-run --agent-unix: a path as it is, even without '/' or "./" */
	assert_int_equal(client_endpoint_unix("agent.sock", &ep, NULL), 0);
	assert_ptr_equal(ep.transport, &client_transport_unix);
	assert_string_equal(client_endpoint_str(&ep, buf, sizeof(buf)), "unix:agent.sock");
	struct hm_err err = {0};
	assert_int_equal(client_endpoint_unix(longpath + 5, &ep, &err), -1);
	assert_int_equal(err.code, ENAMETOOLONG);
}

static void write_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static void test_token_load(void **state)
{
	(void)state;
	char dir[] = "/tmp/hermit-token-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[256], tok[PROTO_AUTH_TOKEN_MAX + 1];
	snprintf(path, sizeof(path), "%s/t", dir);
	struct hm_err err = {0};

	assert_int_equal(client_token_load(path, tok, sizeof(tok), &err), -1);
	assert_int_equal(err.code, ENOENT);

	write_file(path, "  abc123 \t\nsecond line\n");
	assert_int_equal(client_token_load(path, tok, sizeof(tok), &err), 0);
	assert_string_equal(tok, "abc123");

	write_file(path, "\n\n");
	assert_int_equal(client_token_load(path, tok, sizeof(tok), &err), -1);
	assert_int_equal(err.code, EINVAL);

	char big[PROTO_AUTH_TOKEN_MAX + 10];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	write_file(path, big);
	assert_int_equal(client_token_load(path, tok, sizeof(tok), &err), -1);
	assert_int_equal(err.code, E2BIG);

	write_file(path, "short");
	char tiny[4];
	assert_int_equal(client_token_load(path, tiny, sizeof(tiny), &err), -1);

	unlink(path);
	rmdir(dir);
}

int main(void)
{
	hm_log_init("test_agent_streams", HM_LOG_QUIET);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_token_claimed_once),
	    cmocka_unit_test(test_tokens_differ),
	    cmocka_unit_test(test_passable_only_when_asked),
	    cmocka_unit_test(test_drop_session_closes_its_fds),
	    cmocka_unit_test(test_expiry),
	    cmocka_unit_test(test_handoff),
	    cmocka_unit_test(test_stream_budget),
	    cmocka_unit_test(test_session_budget),
	    cmocka_unit_test(test_bytes_budget),
	    cmocka_unit_test(test_endpoint_parse),
	    cmocka_unit_test(test_token_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
