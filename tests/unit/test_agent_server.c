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
#include <grp.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

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

/* A TCP listener on loopback in this process's netns (the target of pid/self). */
static int loopback_listener(struct sockaddr_in *addr)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	*addr =
	    (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(l, (struct sockaddr *)addr, sizeof(*addr)), 0);
	assert_int_equal(listen(l, 8), 0);
	socklen_t len = sizeof(*addr);
	assert_int_equal(getsockname(l, (struct sockaddr *)addr, &len), 0);
	return l;
}

static struct client *session_on_self(struct fixture *f, uint64_t disable)
{
	struct client *c;
	struct hm_err err = {0};
	struct client_opts opts = {.disable_features = disable};
	if (client_connect(&f->ep, TOKEN, &opts, &c, &err) < 0)
		fail_msg("connect: %s", err.msg);
	char target[32];
	snprintf(target, sizeof(target), "pid/%d", (int)getpid());
	if (client_session_open(c, target, NULL, &err) < 0)
		fail_msg("session: %s", err.msg);
	return c;
}

/* The TCP hand-off: on the unix socket the client gets the target's socket itself,
 * connected to the destination; without the feature, a relayed stream. A stream token
 * claimed by another user (a leaked token) gets the relay, never the socket. */
static void test_tcp_handoff(void **state)
{
	struct fixture *f = *state;
	if (geteuid() != 0)
		skip(); /* entering a netns, even our own, needs CAP_SYS_ADMIN */
	struct sockaddr_in laddr;
	int l = loopback_listener(&laddr);
	struct proto_addr dst;
	struct hm_err err = {0};
	assert_int_equal(
	    proto_addr_from_sockaddr((struct sockaddr *)&laddr, sizeof(laddr), &dst, &err), 0);

	struct client *c = session_on_self(f, 0);
	assert_true(client_features(c) & PROTO_FEAT_TCP_FD);
	bool pod_socket = false;
	int fd = client_tcp_connect_handoff(c, &dst, 0, NULL, &pod_socket, &err);
	assert_true(fd >= 0);
	assert_true(pod_socket);
	/* the agent's own socket: its peer is the listener, not an agent stream */
	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	assert_int_equal(getpeername(fd, (struct sockaddr *)&peer, &plen), 0);
	assert_int_equal(peer.sin_port, laddr.sin_port);
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(write(fd, "hand", 4), 4);
	char buf[8];
	assert_int_equal(read(a, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "hand", 4);
	close(a);
	close(fd);

	/* another user with this session's stream token: the relay, not the socket */
	uint8_t token[PROTO_TOKEN_LEN];
	assert_int_equal(client_tcp_connect_token(c, &dst, 0, token, NULL, &err), 0);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(chmod(f->dir, 0711), 0);
	assert_int_equal(chmod(f->sock, 0666), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
			_exit(3);
		struct hm_err e = {0};
		int s = client_endpoint_dial(&f->ep, 5000, &e);
		int passed = -1;
		if (s < 0 || proto_stream_open_fd(s, token, 5000, &passed, &e) < 0)
			_exit(2);
		if (passed >= 0)
			_exit(1); /* the hole: another user got the pod's socket */
		_exit(write(s, "relay", 5) == 5 ? 0 : 4);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(read(a, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "relay", 5);
	close(a);
	client_close(c);

	/* a client that does not offer the feature gets the relay */
	c = session_on_self(f, PROTO_FEAT_TCP_FD);
	fd = client_tcp_connect_handoff(c, &dst, 0, NULL, &pod_socket, &err);
	assert_true(fd >= 0);
	assert_false(pod_socket);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(write(fd, "stream", 6), 6);
	assert_int_equal(read(a, buf, sizeof(buf)), 6);
	close(a);
	close(fd);
	client_close(c);
	close(l);
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
	    cmocka_unit_test_setup_teardown(test_tcp_handoff, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_calls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stop_ends_sessions, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
