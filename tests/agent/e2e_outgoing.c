/* agent_e2e commands for outgoing traffic (tests/integration/21_agent_outgoing.sh): TCP
 * and UDP leave from the target pod's network namespace through a real agent. The
 * servers they talk to are tests/apps-c/echo_server and dns_responder in pods. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "tests/agent/e2e.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A byte stream every connection can check at any offset: the seed tells the
 * connections apart, so crossed streams are caught too. */
static uint8_t pattern_byte(uint64_t seed, uint64_t off)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + (off >> 3) + 1;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (uint8_t)(z >> ((off & 7) * 8));
}

static void pattern_fill(uint64_t seed, uint64_t off, uint8_t *buf, size_t len)
{
	size_t i = 0;
	for (; i < len && ((off + i) & 7); i++)
		buf[i] = pattern_byte(seed, off + i);
	/* whole words: one mix per 8 bytes, the same bytes pattern_byte gives */
	for (; i + 8 <= len; i += 8) {
		uint64_t z = seed * 0x9e3779b97f4a7c15ull + ((off + i) >> 3) + 1;
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
		z ^= z >> 31;
		for (int k = 0; k < 8; k++)
			buf[i + k] = (uint8_t)(z >> (k * 8));
	}
	for (; i < len; i++)
		buf[i] = pattern_byte(seed, off + i);
}

/* One connection to an echo server: send `size` pattern bytes and half-close, check
 * that exactly the same bytes come back, then EOF. */
struct echo_conn {
	int fd;
	uint64_t seed, sent, got;
	bool wdone, eof, bad;
	struct proto_addr local;
};

/* Drive every connection in one poll loop until each saw its EOF. */
static int echo_drive(struct echo_conn *cs, int n, uint64_t size, double timeout_s)
{
	struct pollfd *pfd = calloc((size_t)n, sizeof(*pfd));
	if (!pfd)
		return e2e_fail("out of memory");
	static uint8_t buf[65536], want[65536];
	int finished = 0, rc = 0;
	double deadline = now_s() + timeout_s;
	for (int i = 0; i < n; i++)
		fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
	while (finished < n && rc == 0) {
		for (int i = 0; i < n; i++) {
			pfd[i].fd = cs[i].eof ? -1 : cs[i].fd;
			pfd[i].events = POLLIN | (cs[i].wdone ? 0 : POLLOUT);
		}
		int left_ms = (int)((deadline - now_s()) * 1000);
		if (left_ms <= 0 || poll(pfd, (nfds_t)n, left_ms) == 0) {
			rc = e2e_fail("%d of %d connections still unfinished after %.0f s",
				      n - finished, n, timeout_s);
			break;
		}
		for (int i = 0; i < n && rc == 0; i++) {
			struct echo_conn *c = &cs[i];
			if ((pfd[i].revents & POLLOUT) && !c->wdone) {
				size_t len = size - c->sent < sizeof(buf) ? (size_t)(size - c->sent)
									  : sizeof(buf);
				pattern_fill(c->seed, c->sent, buf, len);
				ssize_t w = len ? send(c->fd, buf, len, MSG_NOSIGNAL) : 0;
				if (w < 0 && errno != EAGAIN) {
					rc =
					    e2e_fail("connection %d: send: %s", i, strerror(errno));
					break;
				}
				if (w > 0)
					c->sent += (uint64_t)w;
				if (c->sent == size) {
					shutdown(c->fd, SHUT_WR);
					c->wdone = true;
				}
			}
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
				if (r < 0 && errno == EAGAIN)
					continue;
				if (r < 0) {
					rc = e2e_fail("connection %d: recv after %llu bytes: %s", i,
						      (unsigned long long)c->got, strerror(errno));
					break;
				}
				if (r == 0) {
					c->eof = true;
					finished++;
					continue;
				}
				pattern_fill(c->seed, c->got, want, (size_t)r);
				if (memcmp(buf, want, (size_t)r))
					c->bad = true;
				c->got += (uint64_t)r;
			}
		}
	}
	free(pfd);
	for (int i = 0; i < n && rc == 0; i++) {
		if (cs[i].bad || cs[i].got != size)
			rc = e2e_fail("connection %d: %llu bytes came back%s, expected %llu", i,
				      (unsigned long long)cs[i].got,
				      cs[i].bad ? " with wrong content" : "",
				      (unsigned long long)size);
	}
	return rc;
}

/* tcp-echo ADDR BYTES [EXPECT_LOCAL_IP]: one connection from the pod to an echo server;
 * prints "local IP:PORT" (the pod-side address the agent reported) so the caller can
 * find it in the server's log. */
static int cmd_tcp_echo(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr dst;
	uint64_t size;
	if (argc < 3 || argc > 4 || e2e_parse_addr(argv[1], &dst) < 0 ||
	    hm_parse_size(argv[2], &size) < 0)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct echo_conn conn = {.seed = 77};
	conn.fd = client_tcp_connect(c, &dst, 0, &conn.local, &err);
	if (conn.fd < 0) {
		client_close(c);
		return e2e_fail("TCP_CONNECT %s: %s", argv[1], err.msg);
	}
	char local[80];
	proto_addr_str(&conn.local, local, sizeof(local));
	printf("local %s\n", local);
	fflush(stdout);
	int rc = 0;
	if (argc == 4) {
		uint8_t want[16];
		uint8_t fam = inet_pton(AF_INET, argv[3], want) == 1	? PROTO_AF_INET
			      : inet_pton(AF_INET6, argv[3], want) == 1 ? PROTO_AF_INET6
									: 0;
		if (!fam)
			rc = 2;
		else if (fam != conn.local.family ||
			 memcmp(want, conn.local.addr, fam == PROTO_AF_INET ? 4 : 16))
			rc = e2e_fail("the pod-side address is %s, expected %s", local, argv[3]);
	}
	double t0 = now_s();
	if (rc == 0)
		rc = echo_drive(&conn, 1, size, 60);
	double dt = now_s() - t0;
	close(conn.fd);
	client_close(c);
	if (rc == 0)
		e2e_ok("%s echoed %llu bytes intact from %s (%.0f MB/s each way)", argv[1],
		       (unsigned long long)size, local, dt > 0 ? (double)size / dt / 1e6 : 0.0);
	return rc;
}

/* tcp-parallel ADDR N BYTES: N connections open at the same time, each echoing BYTES of
 * its own pattern; the agent reports the relayed ones as open streams meanwhile, and
 * none for sockets it handed off (PROTO_FEAT_TCP_FD: it keeps nothing of them). */
static int cmd_tcp_parallel(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr dst;
	uint64_t size;
	if (argc != 4 || e2e_parse_addr(argv[1], &dst) < 0 || hm_parse_size(argv[3], &size) < 0)
		return 2;
	int n = atoi(argv[2]);
	if (n < 1 || n > 4096)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct echo_conn *cs = calloc((size_t)n, sizeof(*cs));
	if (!cs) {
		client_close(c);
		return e2e_fail("out of memory");
	}
	int rc = 0, opened = 0, relayed = 0;
	struct hm_err err = {0};
	double t0 = now_s();
	for (; opened < n; opened++) {
		cs[opened].seed = 1000 + (uint64_t)opened;
		bool pod_socket;
		cs[opened].fd =
		    client_tcp_connect_handoff(c, &dst, 0, &cs[opened].local, &pod_socket, &err);
		if (cs[opened].fd < 0) {
			rc = e2e_fail("connection %d of %d: %s", opened, n, err.msg);
			break;
		}
		relayed += !pod_socket;
	}
	double t_open = now_s() - t0;
	if (rc == 0) {
		struct client_status st;
		/* the agent replies to a stream hello just before its relay counts the
		 * stream: give the last ones a moment to be counted */
		int status_rc;
		for (int tries = 0;; tries++) {
			status_rc = client_status(c, &st, &err);
			if (status_rc < 0 || st.streams >= (uint32_t)relayed || tries >= 100)
				break;
			usleep(10000);
		}
		if (status_rc < 0)
			rc = e2e_fail("STATUS: %s", err.msg);
		else if (st.streams < (uint32_t)relayed)
			rc = e2e_fail(
			    "the agent reports %u open streams with %d relayed connections "
			    "open",
			    st.streams, relayed);
		else if (relayed == 0 && st.streams != 0)
			rc = e2e_fail("the agent reports %u open streams for %d sockets it handed "
				      "off",
				      st.streams, n);
	}
	t0 = now_s();
	if (rc == 0)
		rc = echo_drive(cs, n, size, 120);
	double dt = now_s() - t0;
	for (int i = 0; i < opened; i++)
		close(cs[i].fd);
	free(cs);
	client_close(c);
	if (rc == 0)
		e2e_ok("%d parallel connections to %s (%d relayed, %d handed off) each echoed "
		       "%llu bytes intact (opened in %.2f s, %.0f MB/s total each way)",
		       n, argv[1], relayed, n - relayed, (unsigned long long)size, t_open,
		       dt > 0 ? (double)size * n / dt / 1e6 : 0.0);
	return rc;
}

/* tcp-hold ADDR N READY_FILE: open N connections, create READY_FILE, wait (up to 60 s)
 * until the caller removes it (it measures the agent meanwhile), then check that each
 * connection still echoes. */
static int cmd_tcp_hold(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr dst;
	if (argc != 4 || e2e_parse_addr(argv[1], &dst) < 0)
		return 2;
	int n = atoi(argv[2]);
	if (n < 1 || n > 4096)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct echo_conn *cs = calloc((size_t)n, sizeof(*cs));
	if (!cs) {
		client_close(c);
		return e2e_fail("out of memory");
	}
	int rc = 0, opened = 0;
	struct hm_err err = {0};
	for (; opened < n; opened++) {
		cs[opened].seed = 5000 + (uint64_t)opened;
		cs[opened].fd = client_tcp_connect(c, &dst, 0, &cs[opened].local, &err);
		if (cs[opened].fd < 0) {
			rc = e2e_fail("connection %d of %d: %s", opened, n, err.msg);
			break;
		}
	}
	if (rc == 0 && hm_create_file(argv[3], "ready\n", 6, 0644, &err) < 0)
		rc = e2e_fail("%s", err.msg);
	for (int i = 0; rc == 0 && i < 600 && access(argv[3], F_OK) == 0; i++)
		poll(NULL, 0, 100);
	if (rc == 0)
		rc = echo_drive(cs, n, 4096, 60);
	for (int i = 0; i < opened; i++)
		close(cs[i].fd);
	free(cs);
	client_close(c);
	if (rc == 0)
		e2e_ok("held %d connections to %s, all still echo", n, argv[1]);
	return rc;
}

/* tcp-connect-fails ADDR ERRNO_NAME [TIMEOUT_MS]: the pod's connect fails, and the app
 * would get exactly this errno. */
static int cmd_tcp_connect_fails(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr dst;
	if (argc < 3 || argc > 4 || e2e_parse_addr(argv[1], &dst) < 0)
		return 2;
	int want = e2e_errno_code(argv[2]);
	if (want < 0)
		return 2;
	uint32_t timeout_ms = argc == 4 ? (uint32_t)atoi(argv[3]) : 0;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	double t0 = now_s();
	int fd = client_tcp_connect(c, &dst, timeout_ms, NULL, &err);
	double dt = now_s() - t0;
	int rc;
	if (fd >= 0) {
		close(fd);
		rc = e2e_fail("TCP_CONNECT %s succeeded, expected %s", argv[1], argv[2]);
	} else if (err.code != want) {
		rc = e2e_fail("TCP_CONNECT %s failed with errno %d (%s), expected %s", argv[1],
			      err.code, err.msg, argv[2]);
	} else {
		rc = e2e_ok("TCP_CONNECT %s: %s after %.2f s (%s)", argv[1], argv[2], dt, err.msg);
	}
	/* the failure ended that request only: the session still works */
	if (rc == 0 && client_ping(c, &err) < 0)
		rc = e2e_fail("ping after the failed connect: %s", err.msg);
	client_close(c);
	return rc;
}

/* ---- DNS over the pod's UDP ---- */

static size_t dns_query_build(uint8_t *out, size_t cap, uint16_t id, const char *name,
			      uint16_t qtype)
{
	size_t o = 12;
	memset(out, 0, 12);
	out[0] = (uint8_t)(id >> 8);
	out[1] = (uint8_t)id;
	out[2] = 0x01; /* RD */
	out[5] = 1;    /* QDCOUNT */
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t l = dot ? (size_t)(dot - p) : strlen(p);
		if (l == 0 || l > 63 || o + l + 6 > cap)
			return 0;
		out[o++] = (uint8_t)l;
		memcpy(out + o, p, l);
		o += l;
		p += l + (dot ? 1 : 0);
	}
	out[o++] = 0;
	out[o++] = (uint8_t)(qtype >> 8);
	out[o++] = (uint8_t)qtype;
	out[o++] = 0;
	out[o++] = 1; /* IN */
	return o;
}

/* The first A/AAAA answer's address and the rcode; -1 if the reply is malformed. */
static int dns_reply_parse(const uint8_t *r, size_t len, uint16_t id, int *rcode, int *family,
			   uint8_t addr[16])
{
	if (len < 12 || (r[0] << 8 | r[1]) != id || !(r[2] & 0x80))
		return -1;
	*rcode = r[3] & 0xf;
	*family = 0;
	unsigned qd = (unsigned)(r[4] << 8 | r[5]), an = (unsigned)(r[6] << 8 | r[7]);
	size_t o = 12;
	for (unsigned i = 0; i < qd; i++) {
		while (o < len && r[o] && (r[o] & 0xc0) != 0xc0)
			o += 1u + r[o];
		if (o >= len)
			return -1;
		o += (r[o] & 0xc0) == 0xc0 ? 2 : 1;
		o += 4;
	}
	for (unsigned i = 0; i < an; i++) {
		while (o < len && r[o] && (r[o] & 0xc0) != 0xc0)
			o += 1u + r[o];
		if (o >= len)
			return -1;
		o += (r[o] & 0xc0) == 0xc0 ? 2 : 1;
		if (o + 10 > len)
			return -1;
		unsigned type = (unsigned)(r[o] << 8 | r[o + 1]);
		unsigned rdlen = (unsigned)(r[o + 8] << 8 | r[o + 9]);
		o += 10;
		if (o + rdlen > len)
			return -1;
		if ((type == 1 && rdlen == 4) || (type == 28 && rdlen == 16)) {
			*family = type == 1 ? AF_INET : AF_INET6;
			memcpy(addr, r + o, rdlen);
			return 0;
		}
		o += rdlen;
	}
	return 0;
}

/* dns-query SERVER NAME EXPECT: a DNS query sent over UDP from the pod to SERVER (e.g.
 * 10.213.0.7:53) is answered; EXPECT is the address of the first answer (A for IPv4,
 * AAAA for IPv6) or NXDOMAIN. The reply must come from SERVER itself: resolvers such
 * as musl's drop replies from any other source. */
static int cmd_dns_query(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr server;
	if (argc != 4 || e2e_parse_addr(argv[1], &server) < 0)
		return 2;
	const char *expect = argv[3];
	uint8_t want[16];
	int want_family = 0;
	if (inet_pton(AF_INET, expect, want) == 1)
		want_family = AF_INET;
	else if (inet_pton(AF_INET6, expect, want) == 1)
		want_family = AF_INET6;
	else if (strcmp(expect, "NXDOMAIN"))
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct proto_addr local;
	int fd = client_udp_open(c, server.family, &local, &err);
	if (fd < 0) {
		client_close(c);
		return e2e_fail("UDP_OPEN: %s", err.msg);
	}
	uint8_t q[512], r[4096];
	uint16_t id = (uint16_t)(getpid() ^ 0x5a5a);
	size_t qlen = dns_query_build(q, sizeof(q), id, argv[2], want_family == AF_INET6 ? 28 : 1);
	int rc = 0;
	ssize_t n = -1;
	struct proto_addr src = {0};
	double t0 = now_s();
	/* UDP may lose a datagram: ask again like a resolver does */
	for (int attempt = 0; attempt < 5 && n < 0 && rc == 0; attempt++) {
		if (client_udp_send(fd, &server, q, qlen, &err) < 0) {
			rc = e2e_fail("send the query: %s", err.msg);
			break;
		}
		n = client_udp_recv(fd, &src, r, sizeof(r), 2000, &err);
		if (n < 0 && err.code != ETIMEDOUT)
			rc = e2e_fail("receive the answer: %s", err.msg);
	}
	double dt = now_s() - t0;
	close(fd);
	if (rc == 0 && n < 0)
		rc = e2e_fail("no answer from %s within 5 attempts", argv[1]);
	char src_str[80], server_str[80];
	proto_addr_str(&src, src_str, sizeof(src_str));
	proto_addr_str(&server, server_str, sizeof(server_str));
	if (rc == 0 && strcmp(src_str, server_str))
		rc = e2e_fail("the answer came from %s, not from the server %s", src_str,
			      server_str);
	int rcode = 0, family = 0;
	uint8_t addr[16];
	if (rc == 0 && dns_reply_parse(r, (size_t)n, id, &rcode, &family, addr) < 0)
		rc = e2e_fail("malformed DNS answer of %zd bytes", n);
	char got[INET6_ADDRSTRLEN] = "no address";
	if (family)
		inet_ntop(family, addr, got, sizeof(got));
	if (rc == 0 && want_family == 0 && rcode != 3)
		rc = e2e_fail("%s: rcode %d (%s), expected NXDOMAIN", argv[2], rcode, got);
	if (rc == 0 && want_family &&
	    (rcode != 0 || family != want_family ||
	     memcmp(addr, want, want_family == AF_INET ? 4 : 16)))
		rc = e2e_fail("%s: rcode %d, %s, expected %s", argv[2], rcode, got, expect);
	if (rc == 0 && client_ping(c, &err) < 0)
		rc = e2e_fail("ping: %s", err.msg);
	client_close(c);
	if (rc == 0) {
		char local_str[80];
		e2e_ok("%s answered %s for %s to the pod's UDP socket %s (%.1f ms)", src_str,
		       want_family ? got : "NXDOMAIN", argv[2],
		       proto_addr_str(&local, local_str, sizeof(local_str)), dt * 1000);
	}
	return rc;
}

static const struct e2e_cmd outgoing_cmds[] = {
    {"tcp-echo", "ADDR BYTES [EXPECT_LOCAL_IP]", cmd_tcp_echo},
    {"tcp-parallel", "ADDR N BYTES", cmd_tcp_parallel},
    {"tcp-hold", "ADDR N READY_FILE", cmd_tcp_hold},
    {"tcp-connect-fails", "ADDR ERRNO_NAME [TIMEOUT_MS]", cmd_tcp_connect_fails},
    {"dns-query", "SERVER NAME IP|NXDOMAIN", cmd_dns_query},
};
E2E_REGISTER(outgoing_cmds)
