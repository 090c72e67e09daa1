/* agent: the server (server.c) in-process, driven by the client library over a unix
 * socket in /tmp: handshake, auth, request routing, a session on this very process
 * (pid/N of the test), graceful stop. Pods and the real binary are covered by
 * tests/integration/20_agent.sh. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "client/client.h"

#define TOKEN "unit-test-token-0123456789"

struct fixture {
	char dir[64];
	char sock[128];
	int stop_fd;
	pthread_t thread;
	struct agent_server_config cfg;
	int rc;
	struct hm_err err;
	struct client_endpoint ep;
};

static void *server_main(void *arg)
{
	struct fixture *f = arg;
	f->rc = agent_server_run(&f->cfg, &f->err);
	return NULL;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/hermit-agent-unit-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/a.sock", f->dir);
	f->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	f->cfg = (struct agent_server_config){
	    .unix_path = f->sock,
	    .token = TOKEN,
	    .max_file_size = 1 << 20,
	    .handshake_timeout_ms = 300,
	    .stream_ttl_ms = 1000,
	    .stop_fd = f->stop_fd,
	};
	assert_int_equal(pthread_create(&f->thread, NULL, server_main, f), 0);
	for (int i = 0; i < 200 && access(f->sock, F_OK) < 0; i++)
		usleep(10000);
	assert_int_equal(access(f->sock, F_OK), 0);
	assert_int_equal(client_endpoint_parse(f->sock, &f->ep, NULL), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	uint64_t one = 1;
	assert_int_equal(write(f->stop_fd, &one, sizeof(one)), sizeof(one));
	pthread_join(f->thread, NULL);
	assert_int_equal(f->rc, 0);
	/* the socket file goes with the server */
	assert_int_equal(access(f->sock, F_OK), -1);
	close(f->stop_fd);
	rmdir(f->dir);
	free(f);
	return 0;
}

static struct client *connect_ok(struct fixture *f)
{
	struct client *c;
	struct hm_err err = {0};
	int rc = client_connect(&f->ep, TOKEN, NULL, &c, &err);
	if (rc < 0)
		fail_msg("connect: %s", err.msg);
	return c;
}

static void test_ping_and_status(void **state)
{
	struct fixture *f = *state;
	struct client *c = connect_ok(f);
	struct hm_err err = {0};
	assert_int_equal(client_ping(c, &err), 0);
	assert_true(client_features(c) & PROTO_FEAT_ZLIB);
	struct client_status st;
	assert_int_equal(client_status(c, &st, &err), 0);
	assert_string_equal(st.version, AGENT_SERVER_NAME);
	assert_true(st.requests >= 2);
	assert_int_equal(st.sessions, 0);
	client_close(c);
}

static void test_wrong_token(void **state)
{
	struct fixture *f = *state;
	struct client *c;
	struct hm_err err = {0};
	assert_int_equal(client_connect(&f->ep, TOKEN "x", NULL, &c, &err), -1);
	assert_int_equal(err.code, EACCES);
	assert_int_equal(client_connect(&f->ep, "unit", NULL, &c, &err), -1);
	assert_int_equal(err.code, EACCES);
	/* the server goes on */
	c = connect_ok(f);
	assert_int_equal(client_ping(c, &err), 0);
	client_close(c);
}

static void test_silent_peer_cut_off(void **state)
{
	struct fixture *f = *state;
	struct hm_err err = {0};
	int fd = client_endpoint_dial(&f->ep, 1000, &err);
	assert_true(fd >= 0);
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 3000), 1); /* handshake timeout is 300 ms */
	char b;
	assert_int_equal(read(fd, &b, 1), 0);
	close(fd);
}

/* A transport of another module's kind (a port-forward): the client dials the control
 * connection and every stream through it, never by the address fields itself. */
struct counting_dialer {
	const struct client_endpoint *real;
	int dials;
};

static int counting_dial(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	struct counting_dialer *d = ep->ctx;
	d->dials++;
	return client_endpoint_dial(d->real, timeout_ms, err);
}

static void counting_describe(const struct client_endpoint *ep, char *buf, size_t len)
{
	(void)ep;
	snprintf(buf, len, "counting:");
}

static void test_own_transport(void **state)
{
	struct fixture *f = *state;
	static const struct client_transport counting = {
	    .name = "counting", .dial = counting_dial, .describe = counting_describe};
	struct counting_dialer d = {.real = &f->ep};
	struct client_endpoint ep = {.transport = &counting, .ctx = &d};
	char where[64];
	assert_string_equal(client_endpoint_str(&ep, where, sizeof(where)), "counting:");
	struct hm_err err = {0};
	struct client *c;
	assert_int_equal(client_connect(&ep, TOKEN "x", NULL, &c, &err), -1);
	assert_int_equal(err.code, EACCES);
	assert_int_equal(d.dials, 1);
	assert_int_equal(client_connect(&ep, TOKEN, NULL, &c, &err), 0);
	assert_int_equal(d.dials, 2);
	assert_int_equal(client_ping(c, &err), 0);
	if (geteuid() == 0) { /* a session on ourselves needs CAP_SYS_ADMIN for the netns */
		char target[32];
		snprintf(target, sizeof(target), "pid/%d", (int)getpid());
		assert_int_equal(client_session_open(c, target, NULL, &err), 0);
		int fd = client_udp_open(c, PROTO_AF_INET, NULL, &err);
		if (fd < 0)
			fail_msg("UDP stream: %s", err.msg);
		close(fd);
		assert_int_equal(d.dials, 3); /* the stream came through the transport too */
	}
	client_close(c);
}

static void test_no_session_yet(void **state)
{
	struct fixture *f = *state;
	struct client *c = connect_ok(f);
	struct hm_err err = {0};
	struct proto_stat st;
	assert_int_equal(client_stat(c, "/", 0, &st, &err), -1);
	assert_int_equal(err.code, ENOTCONN);
	struct client_session_info info;
	assert_int_equal(client_session_open(c, "pod/surely-not-a-pod-here", &info, &err), -1);
	assert_int_equal(err.code, ENOENT);
	client_close(c);
}

static void test_session_on_self(void **state)
{
	struct fixture *f = *state;
	if (geteuid() != 0)
		skip(); /* entering a netns, even our own, needs CAP_SYS_ADMIN */
	struct client *c = connect_ok(f);
	struct hm_err err = {0};
	char target[32];
	snprintf(target, sizeof(target), "pid/%d", (int)getpid());
	struct client_session_info info;
	assert_int_equal(client_session_open(c, target, &info, &err), 0);
	assert_int_equal(info.pid, getpid());

	/* the environment block of exec time, as /proc/self/environ has it */
	char **vars;
	size_t n;
	assert_int_equal(client_env(c, &vars, &n, &err), 0);
	assert_non_null(vars);
	assert_null(vars[n]);
	char *raw;
	size_t len;
	assert_int_equal(hm_read_file("/proc/self/environ", &raw, &len, &err), 0);
	size_t i = 0;
	for (size_t off = 0; off < len; off += strlen(raw + off) + 1) {
		if (!raw[off])
			continue;
		assert_true(i < n);
		assert_string_equal(vars[i], raw + off);
		i++;
	}
	assert_int_equal(i, n);
	free(raw);
	free(vars);

	/* our own files, through the target's root (which is "/") */
	char path[128];
	snprintf(path, sizeof(path), "%s/f", f->dir);
	FILE *fp = fopen(path, "w");
	fputs("hello agent", fp);
	fclose(fp);
	struct client_file_content fc;
	assert_int_equal(client_read_file(c, path, 0, 0, &fc, &err), 0);
	assert_int_equal(fc.size, 11);
	assert_memory_equal(fc.data, "hello agent", 11);
	client_file_content_release(&fc);
	unlink(path);
	assert_int_equal(client_read_file(c, path, 0, 0, &fc, &err), -1);
	assert_int_equal(err.code, ENOENT);

	struct client_status st;
	assert_int_equal(client_status(c, &st, &err), 0);
	assert_int_equal(st.sessions, 1);
	client_close(c);
}

struct par {
	struct client *c;
	int failures;
};

static void *par_main(void *arg)
{
	struct par *p = arg;
	struct hm_err err = {0};
	for (int i = 0; i < 200; i++)
		if (client_ping(p->c, &err) < 0)
			p->failures++;
	return NULL;
}

static void test_concurrent_calls(void **state)
{
	struct fixture *f = *state;
	struct client *c = connect_ok(f);
	struct par ps[8];
	pthread_t th[8];
	for (int i = 0; i < 8; i++) {
		ps[i] = (struct par){.c = c};
		pthread_create(&th[i], NULL, par_main, &ps[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(ps[i].failures, 0);
	}
	client_close(c);
}

static void test_stop_ends_sessions(void **state)
{
	struct fixture *f = *state;
	if (geteuid() != 0)
		skip();
	struct client *c = connect_ok(f);
	struct hm_err err = {0};
	char target[32];
	snprintf(target, sizeof(target), "pid/%d", (int)getpid());
	assert_int_equal(client_session_open(c, target, NULL, &err), 0);
	uint64_t one = 1;
	assert_int_equal(write(f->stop_fd, &one, sizeof(one)), sizeof(one));
	struct pollfd p = {.fd = client_event_fd(c), .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_true(client_ended(c, &err));
	assert_int_equal(err.code, ESHUTDOWN);
	assert_int_equal(client_ping(c, &err), -1);
	assert_int_equal(err.code, ESHUTDOWN);
	client_close(c);
}

int main(void)
{
	hm_log_init("test_agent_server", HM_LOG_QUIET);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_ping_and_status, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wrong_token, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_silent_peer_cut_off, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_own_transport, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_session_yet, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_session_on_self, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_calls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_ends_sessions, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
