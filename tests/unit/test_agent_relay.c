/* The agent's relay (relay/relay.c) and outgoing sockets (agent/outgoing.c), on
 * loopback: checksummed bulk TCP both ways, small and mixed-size messages against a
 * slow reader, an EOF queued behind bytes, half-close and reset semantics, 200
 * parallel pairs and what they cost, UDP datagrams framed on a stream, file streams,
 * and destroying the relay while it is busy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "agent/internal.h"
#include "relay/relay.h"

static struct relay_counters counters;

/* A blocking connect from the target's netns, the way the server's connects.c drives
 * agent_outgoing_tcp_begin/finish (timeout_ms 0: the agent's default): the connected
 * fd, or -1 with err->code the errno the app would have got. */
static int outgoing_tcp_connect(struct agent_target *t, const struct proto_addr *dst,
				uint32_t timeout_ms, struct proto_addr *local, struct hm_err *err)
{
	timeout_ms = agent_outgoing_timeout(timeout_ms);
	hm_cleanup_close int fd = -1;
	int rc = agent_outgoing_tcp_begin(t, dst, &fd, err);
	if (rc < 0)
		return -1;
	int outcome = 0;
	if (rc == 1) {
		struct hm_err wait_err = {0};
		if (hm_connect_wait(fd, hm_deadline_in(timeout_ms), &wait_err) < 0)
			outcome = wait_err.code;
	}
	if (agent_outgoing_tcp_finish(fd, dst, outcome, timeout_ms, local, err) < 0)
		return -1;
	return hm_steal_fd(&fd);
}

/* ---- helpers ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

/* Wait until the relay reports `want` open streams. */
static void wait_streams(uint64_t want)
{
	for (int i = 0; i < 500; i++) {
		if (atomic_load(&counters.streams) == want)
			return;
		usleep(10000);
	}
	fail_msg("relay has %llu streams, expected %llu",
		 (unsigned long long)atomic_load(&counters.streams), (unsigned long long)want);
}

/* A connected pair of blocking TCP sockets on loopback (v4 or v6). */
static void tcp_pair_family(int family, int *a, int *b)
{
	int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(l >= 0);
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		sl = sizeof(*in6);
	}
	assert_int_equal(bind(l, (struct sockaddr *)&ss, sl), 0);
	assert_int_equal(listen(l, 16), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&ss, &sl), 0);
	*a = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*a >= 0);
	assert_int_equal(connect(*a, (struct sockaddr *)&ss, sl), 0);
	*b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(*b >= 0);
	close(l);
}

static void tcp_pair(int *a, int *b)
{
	tcp_pair_family(AF_INET, a, b);
}

/* app <-> [client side | relay | remote side] <-> server. With unix_client the app's
 * stream to the agent is a unix socket, as with a local agent. */
struct chain {
	int app, server;
};

static void chain_open(struct relay *r, struct chain *ch, bool unix_client)
{
	int client_side, remote_side;
	if (unix_client) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
		ch->app = sv[0];
		client_side = sv[1];
	} else {
		tcp_pair(&ch->app, &client_side);
	}
	tcp_pair(&remote_side, &ch->server);
	struct hm_err err;
	assert_int_equal(relay_add_tcp(r, client_side, remote_side, &err), 0);
}

static void chain_close(struct chain *ch)
{
	close(ch->app);
	close(ch->server);
}

/* A deterministic byte stream that can be checked at any offset. */
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

/* A thread that writes len pattern bytes then half-closes, or reads to EOF and
 * checks what arrived against the pattern (length and crc32). */
struct pump {
	int fd;
	bool write;
	/* a writer of small messages paced apart, of mixed sizes up to 60000 bytes, not of
	 * full 64 KiB chunks back to back */
	bool paced;
	uint64_t seed, len;
	/* results */
	uint64_t done;
	uLong crc, want_crc;
	int error;
	pthread_t thread;
};

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	static const size_t chunk = 64 << 10;
	uint8_t *buf = malloc(chunk);
	p->crc = crc32(0, NULL, 0);
	p->want_crc = crc32(0, NULL, 0);
	/* mostly below the relay's 16 KiB copy buffer, now and then a bulk burst */
	static const size_t paced_sizes[] = {1,	    100,   700,	  3000, 16383,
					     16384, 16385, 60000, 40,	9000};
	if (p->write) {
		for (unsigned i = 0; p->done < p->len; i++) {
			size_t want =
			    p->paced
				? paced_sizes[i % (sizeof(paced_sizes) / sizeof(paced_sizes[0]))]
				: chunk;
			size_t n = p->len - p->done < want ? p->len - p->done : want;
			/* one message per relay read, most of the time */
			if (p->paced && i % 4 == 0)
				usleep(200);
			pattern_fill(p->seed, p->done, buf, n);
			ssize_t w = send(p->fd, buf, n, MSG_NOSIGNAL);
			if (w < 0) {
				p->error = errno;
				break;
			}
			/* the pattern is regenerated from the new offset, so short writes
			 * need no bookkeeping */
			p->done += (uint64_t)w;
		}
		if (!p->error)
			shutdown(p->fd, SHUT_WR);
	} else {
		uint8_t *want = malloc(chunk);
		for (;;) {
			ssize_t n = recv(p->fd, buf, chunk, 0);
			if (n < 0) {
				p->error = errno;
				break;
			}
			if (n == 0)
				break;
			pattern_fill(p->seed, p->done, want, (size_t)n);
			p->crc = crc32(p->crc, buf, (uInt)n);
			p->want_crc = crc32(p->want_crc, want, (uInt)n);
			p->done += (uint64_t)n;
		}
		free(want);
	}
	free(buf);
	return NULL;
}

static void pump_begin(struct pump *p, int fd, bool write, bool paced, uint64_t seed, uint64_t len)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->write = write;
	p->paced = paced;
	p->seed = seed;
	p->len = len;
	assert_int_equal(pthread_create(&p->thread, NULL, pump_main, p), 0);
}

static void pump_start(struct pump *p, int fd, bool write, uint64_t seed, uint64_t len)
{
	pump_begin(p, fd, write, false, seed, len);
}

static void pump_join(struct pump *p)
{
	pthread_join(p->thread, NULL);
}

static int relay_setup(void **state)
{
	memset(&counters, 0, sizeof(counters));
	struct relay *r;
	struct hm_err err;
	if (relay_create(&counters, &r, &err) < 0) {
		print_error("%s\n", err.msg);
		return -1;
	}
	*state = r;
	return 0;
}

static int relay_teardown(void **state)
{
	relay_destroy(*state);
	return 0;
}

/* ---- TCP ---- */

static void bulk_both_ways(struct relay *r, bool unix_client)
{
	const uint64_t size = 10 << 20;
	struct chain ch;
	chain_open(r, &ch, unix_client);
	struct pump up_w, up_r, down_w, down_r;
	pump_start(&up_w, ch.app, true, 1, size);
	pump_start(&up_r, ch.server, false, 1, 0);
	pump_start(&down_w, ch.server, true, 2, size + 12345);
	pump_start(&down_r, ch.app, false, 2, 0);
	pump_join(&up_w);
	pump_join(&up_r);
	pump_join(&down_w);
	pump_join(&down_r);
	assert_int_equal(up_w.error, 0);
	assert_int_equal(up_r.error, 0);
	assert_int_equal(down_w.error, 0);
	assert_int_equal(down_r.error, 0);
	assert_int_equal(up_r.done, size);
	assert_int_equal(up_r.crc, up_r.want_crc);
	assert_int_equal(down_r.done, size + 12345);
	assert_int_equal(down_r.crc, down_r.want_crc);
	chain_close(&ch);
	/* both directions saw EOF: the relay closed its sides by itself */
	wait_streams(0);
}

static void test_tcp_bulk_both_directions(void **state)
{
	struct relay *r = *state;
	bulk_both_ways(r, false);
	assert_true(atomic_load(&counters.bytes_out) == 10 << 20);
	assert_true(atomic_load(&counters.bytes_in) == (10 << 20) + 12345);
	/* the client's stream to a local agent is a unix socket */
	bulk_both_ways(r, true);
}

static ssize_t read_all_timeout(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t got = 0;
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, timeout_ms) != 1)
			return -2; /* timeout */
		ssize_t n = recv(fd, buf + got, cap - got, 0);
		if (n < 0)
			return -1;
		if (n == 0)
			return (ssize_t)got;
		got += (size_t)n;
		if (got == cap)
			return (ssize_t)got;
	}
}

static void half_close(struct relay *r, bool unix_client)
{
	struct chain ch;
	chain_open(r, &ch, unix_client);
	char buf[64];
	/* the app sends its request and half-closes, as `nc -N` or an HTTP/1.0 client */
	assert_int_equal(send(ch.app, "request", 7, 0), 7);
	assert_int_equal(shutdown(ch.app, SHUT_WR), 0);
	ssize_t n = read_all_timeout(ch.server, buf, sizeof(buf), 5000);
	assert_int_equal(n, 7); /* the data, then EOF */
	assert_memory_equal(buf, "request", 7);
	/* the other direction is still open: the server answers after the EOF */
	usleep(50000);
	assert_int_equal(send(ch.server, "response", 8, MSG_NOSIGNAL), 8);
	assert_int_equal(send(ch.server, "-more", 5, MSG_NOSIGNAL), 5);
	assert_int_equal(atomic_load(&counters.streams), 1);
	assert_int_equal(shutdown(ch.server, SHUT_WR), 0);
	n = read_all_timeout(ch.app, buf, sizeof(buf), 5000);
	assert_int_equal(n, 13);
	assert_memory_equal(buf, "response-more", 13);
	wait_streams(0);
	chain_close(&ch);
}

static void test_tcp_half_close(void **state)
{
	half_close(*state, false);
	half_close(*state, true);
}

static void test_tcp_reset_propagates(void **state)
{
	struct relay *r = *state;
	struct chain ch;
	chain_open(r, &ch, false);
	assert_int_equal(send(ch.app, "x", 1, 0), 1);
	char c;
	assert_int_equal(read_all_timeout(ch.server, &c, 1, 5000), 1);
	/* the server aborts: the app must see a reset, not a clean EOF */
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(ch.server, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(ch.server);
	char buf[8];
	ssize_t n = read_all_timeout(ch.app, buf, sizeof(buf), 5000);
	assert_int_equal(n, -1);
	assert_int_equal(errno, ECONNRESET);
	wait_streams(0);
	close(ch.app);

	/* a unix client that goes away entirely: the remote connection is closed */
	chain_open(r, &ch, true);
	wait_streams(1);
	close(ch.app);
	n = read_all_timeout(ch.server, buf, sizeof(buf), 5000);
	assert_int_equal(n, 0);
	wait_streams(0);
	close(ch.server);
}

/* Small writes that reach the relay one by one take its copy path (recv + send), large
 * ones its splice path; a destination that stops reading leaves a copied message half
 * sent, and its rest must wait in the pipe ahead of everything read later. A writer of
 * paced messages of mixed sizes, a reader that starts late on small socket buffers:
 * the stream must arrive whole and in order, in both directions. */
static void set_buffer(int fd, int opt, int size)
{
	assert_int_equal(setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size)), 0);
}

/* The reader at rfd half-closes too: the relay closes the pair by itself. */
static void end_both(int rfd, int app, int server)
{
	shutdown(rfd, SHUT_WR);
	wait_streams(0);
	close(app);
	close(server);
}

static void test_tcp_mixed_sizes_slow_reader(void **state)
{
	struct relay *r = *state;
	for (int dir = 0; dir < 2; dir++) {
		int app, client_side, remote_side, server;
		tcp_pair(&app, &client_side);
		tcp_pair(&remote_side, &server);
		/* the relay's sends hit a full destination early and often (a window
		 * small enough to fill, big enough not to stall on silly-window rules) */
		set_buffer(dir ? client_side : remote_side, SO_SNDBUF, 4096);
		set_buffer(dir ? app : server, SO_RCVBUF, 65536);
		struct hm_err err;
		assert_int_equal(relay_add_tcp(r, client_side, remote_side, &err), 0);
		int wfd = dir ? server : app, rfd = dir ? app : server;
		/* bytes lost on the way must fail the test, not hang it */
		struct timeval tv = {.tv_sec = 20};
		assert_int_equal(setsockopt(rfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
		assert_int_equal(setsockopt(wfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
		const uint64_t size = 4 << 20;
		struct pump w, rd;
		pump_begin(&w, wfd, true, true, 77 + (uint64_t)dir, size);
		usleep(300000);
		pump_start(&rd, rfd, false, 77 + (uint64_t)dir, 0);
		pump_join(&w);
		pump_join(&rd);
		assert_int_equal(w.error, 0);
		assert_int_equal(rd.error, 0);
		assert_int_equal(rd.done, size);
		assert_int_equal(rd.crc, rd.want_crc);
		/* the other direction still ends cleanly */
		end_both(rfd, app, server);
	}
}

/* Bytes and the EOF behind them are queued before the relay first reads: the read of
 * the bytes comes back short, yet the EOF is still owed and must be passed on (no new
 * edge will announce it). */
static void test_tcp_data_and_eof_already_queued(void **state)
{
	struct relay *r = *state;
	for (int dir = 0; dir < 2; dir++) {
		int app, client_side, remote_side, server;
		tcp_pair(&app, &client_side);
		tcp_pair(&remote_side, &server);
		int wfd = dir ? server : app, rfd = dir ? app : server;
		assert_int_equal(send(wfd, "queued", 6, 0), 6);
		assert_int_equal(shutdown(wfd, SHUT_WR), 0);
		usleep(20000); /* both have arrived at the relay's socket */
		struct hm_err err;
		assert_int_equal(relay_add_tcp(r, client_side, remote_side, &err), 0);
		char buf[16];
		assert_int_equal(read_all_timeout(rfd, buf, sizeof(buf), 5000), 6);
		assert_memory_equal(buf, "queued", 6);
		end_both(rfd, app, server);
	}
}

/* 200 connections through one relay at once, driven by one poll loop. */
#define PARALLEL 200
struct endpoint {
	int fd;
	uint64_t wseed, rseed, sent, got;
	bool wdone, eof;
	bool bad;
};

static void test_tcp_200_parallel(void **state)
{
	struct relay *r = *state;
	const uint64_t size = 256 << 10;
	int fds_before = count_fds();
	struct mallinfo2 mi_before = mallinfo2();
	struct chain ch[PARALLEL];
	for (int i = 0; i < PARALLEL; i++)
		chain_open(r, &ch[i], i % 2);
	wait_streams(PARALLEL);
	/* idle: each connection costs its two sockets and a small struct, no pipe */
	usleep(50000);
	struct mallinfo2 mi_idle = mallinfo2();
	int fds_idle = count_fds();
	print_message("200 idle relayed connections: %d fds (relay side %d), heap +%zu bytes\n",
		      fds_idle - fds_before, fds_idle - fds_before - 2 * PARALLEL,
		      mi_idle.uordblks - mi_before.uordblks);
	/* ends the test holds: app + server per chain; the relay: 2 per chain + pooled pipes */
	assert_true(fds_idle - fds_before <= 4 * PARALLEL + 2 * 32);
	assert_true(mi_idle.uordblks - mi_before.uordblks < 256 << 10);

	struct endpoint ep[2 * PARALLEL];
	struct pollfd pfd[2 * PARALLEL];
	for (int i = 0; i < PARALLEL; i++) {
		ep[2 * i] = (struct endpoint){
		    .fd = ch[i].app, .wseed = 1000 + 2 * i, .rseed = 1001 + 2 * i};
		ep[2 * i + 1] = (struct endpoint){
		    .fd = ch[i].server, .wseed = 1001 + 2 * i, .rseed = 1000 + 2 * i};
	}
	for (int i = 0; i < 2 * PARALLEL; i++)
		fcntl(ep[i].fd, F_SETFL, fcntl(ep[i].fd, F_GETFL) | O_NONBLOCK);
	uint8_t buf[16384], want[16384];
	int finished = 0;
	double deadline = now_s() + 60;
	while (finished < 2 * PARALLEL) {
		assert_true(now_s() < deadline);
		for (int i = 0; i < 2 * PARALLEL; i++) {
			pfd[i].fd = ep[i].eof ? -1 : ep[i].fd;
			pfd[i].events = POLLIN | (ep[i].wdone ? 0 : POLLOUT);
		}
		assert_true(poll(pfd, 2 * PARALLEL, 10000) > 0);
		for (int i = 0; i < 2 * PARALLEL; i++) {
			struct endpoint *e = &ep[i];
			if ((pfd[i].revents & POLLOUT) && !e->wdone) {
				size_t n =
				    size - e->sent < sizeof(buf) ? size - e->sent : sizeof(buf);
				pattern_fill(e->wseed, e->sent, buf, n);
				ssize_t w = send(e->fd, buf, n, MSG_NOSIGNAL);
				if (w > 0)
					e->sent += (uint64_t)w;
				else
					assert_true(errno == EAGAIN);
				if (e->sent == size) {
					shutdown(e->fd, SHUT_WR);
					e->wdone = true;
				}
			}
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
				ssize_t n = recv(e->fd, buf, sizeof(buf), 0);
				if (n < 0) {
					assert_true(errno == EAGAIN);
					continue;
				}
				if (n == 0) {
					e->eof = true;
					finished++;
					continue;
				}
				pattern_fill(e->rseed, e->got, want, (size_t)n);
				if (memcmp(buf, want, (size_t)n))
					e->bad = true;
				e->got += (uint64_t)n;
			}
		}
	}
	for (int i = 0; i < 2 * PARALLEL; i++) {
		assert_false(ep[i].bad);
		assert_int_equal(ep[i].got, size);
	}
	wait_streams(0);
	for (int i = 0; i < PARALLEL; i++)
		chain_close(&ch[i]);
	/* nothing relayed any more: only pooled pipes may remain */
	assert_true(count_fds() - fds_before <= 2 * 32);
}

/* ---- UDP ---- */

static int udp_socket(int family, const char *ip, struct proto_addr *addr)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
		sl = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
		sl = sizeof(*in6);
	}
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, sl), 0);
	sl = sizeof(ss);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
	struct hm_err err;
	assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&ss, sl, addr, &err), 0);
	return fd;
}

/* Echo one datagram on `echo`; returns its source. */
static void echo_once(int echo, struct proto_addr *src)
{
	struct pollfd p = {.fd = echo, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	static uint8_t buf[65536];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	ssize_t n = recvfrom(echo, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &sl);
	assert_true(n >= 0);
	struct hm_err err;
	assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&ss, sl, src, &err), 0);
	assert_int_equal(sendto(echo, buf, (size_t)n, 0, (struct sockaddr *)&ss, sl), n);
}

static void send_datagram(int stream, const struct proto_addr *peer, const void *data, uint32_t len)
{
	struct proto_msg m = {.type = PROTO_UDP_DATAGRAM};
	m.udp_datagram.peer = *peer;
	m.udp_datagram.data = data;
	m.udp_datagram.len = len;
	struct hm_err err;
	assert_int_equal(proto_send(stream, 0, &m, &err), 0);
}

static void test_udp_round_trip(void **state)
{
	struct relay *r = *state;
	struct hm_err err;
	struct proto_addr echo_addr, pod_addr, src;
	int echo = udp_socket(AF_INET, "127.0.0.1", &echo_addr);
	int pod = udp_socket(AF_INET, "127.0.0.1", &pod_addr);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(relay_add(r, RELAY_UDP, sv[1], pod, 0, NULL, &err), 0);

	static uint8_t data[65507];
	pattern_fill(7, 0, data, sizeof(data));
	const uint32_t sizes[] = {0, 1, 53, 512, 1400, 9000, 65507};
	for (size_t i = 0; i < HM_ARRAY_SIZE(sizes); i++) {
		send_datagram(sv[0], &echo_addr, data, sizes[i]);
		echo_once(echo, &src);
		/* the datagram left from the pod-side socket */
		assert_int_equal(src.port, pod_addr.port);
		struct proto_msg m;
		assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 5000, &m, &err), 0);
		assert_int_equal(m.type, PROTO_UDP_DATAGRAM);
		/* the reply carries its real source */
		assert_int_equal(m.udp_datagram.peer.family, PROTO_AF_INET);
		assert_int_equal(m.udp_datagram.peer.port, echo_addr.port);
		assert_memory_equal(m.udp_datagram.peer.addr, echo_addr.addr, 4);
		assert_int_equal(m.udp_datagram.len, sizes[i]);
		if (sizes[i])
			assert_memory_equal(m.udp_datagram.data, data, sizes[i]);
		proto_msg_free(&m);
	}
	/* a datagram nobody answers is not an error: the stream lives on */
	struct proto_addr nowhere = echo_addr;
	nowhere.port = 9; /* discard: nothing listens */
	send_datagram(sv[0], &nowhere, "lost", 4);
	send_datagram(sv[0], &echo_addr, "still", 5);
	echo_once(echo, &src);
	struct proto_msg m;
	assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 5000, &m, &err), 0);
	assert_int_equal(m.udp_datagram.len, 5);
	proto_msg_free(&m);

	/* the client closing its stream releases the pod-side socket */
	assert_int_equal(atomic_load(&counters.streams), 1);
	close(sv[0]);
	wait_streams(0);
	close(echo);
}

static void test_udp_v6_and_mapped(void **state)
{
	struct relay *r = *state;
	struct hm_err err;
	struct proto_addr echo6, echo4, pod_addr, src;
	int e6 = udp_socket(AF_INET6, "::1", &echo6);
	int e4 = udp_socket(AF_INET, "127.0.0.1", &echo4);
	int pod = udp_socket(AF_INET6, "::", &pod_addr);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(relay_add(r, RELAY_UDP, sv[1], pod, 0, NULL, &err), 0);

	send_datagram(sv[0], &echo6, "six", 3);
	echo_once(e6, &src);
	struct proto_msg m;
	assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 5000, &m, &err), 0);
	assert_int_equal(m.udp_datagram.peer.family, PROTO_AF_INET6);
	assert_memory_equal(m.udp_datagram.peer.addr, echo6.addr, 16);
	assert_int_equal(m.udp_datagram.peer.port, echo6.port);
	proto_msg_free(&m);

	/* a v4 destination on a v6 socket goes out v4-mapped, and the reply says so */
	send_datagram(sv[0], &echo4, "four", 4);
	echo_once(e4, &src);
	assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 5000, &m, &err), 0);
	assert_int_equal(m.udp_datagram.peer.family, PROTO_AF_INET6);
	static const uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
	assert_memory_equal(m.udp_datagram.peer.addr, mapped, 16);
	assert_int_equal(m.udp_datagram.len, 4);
	proto_msg_free(&m);
	close(sv[0]);
	wait_streams(0);
	close(e4);
	close(e6);
}

static void test_udp_malformed_closes(void **state)
{
	struct relay *r = *state;
	struct hm_err err;
	struct proto_addr pod_addr;
	int pod = udp_socket(AF_INET, "127.0.0.1", &pod_addr);
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(relay_add(r, RELAY_UDP, sv[1], pod, 0, NULL, &err), 0);
	/* a frame of another type has no business on a UDP stream */
	struct proto_msg ping = {.type = PROTO_PING};
	ping.ping.nonce = 1;
	assert_int_equal(proto_send(sv[0], 0, &ping, &err), 0);
	char c;
	assert_true(read_all_timeout(sv[0], &c, 1, 5000) <= 0);
	wait_streams(0);
	close(sv[0]);

	/* garbage that is no frame at all */
	pod = udp_socket(AF_INET, "127.0.0.1", &pod_addr);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(relay_add(r, RELAY_UDP, sv[1], pod, 0, NULL, &err), 0);
	static const uint8_t junk[32] = {0xff, 0xff, 0xff, 0x7f, 0x02, 0x05};
	assert_int_equal(send(sv[0], junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
	assert_true(read_all_timeout(sv[0], &c, 1, 5000) <= 0);
	wait_streams(0);
	close(sv[0]);
}

/* ---- file ---- */

static int temp_file(uint64_t size, uint64_t seed)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	static uint8_t buf[1 << 16];
	for (uint64_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
		pattern_fill(seed, off, buf, n);
		assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
	}
	return fd;
}

static void test_file_sendfile(void **state)
{
	struct relay *r = *state;
	struct hm_err err;
	const uint64_t size = (5 << 20) + 333;
	for (int unix_client = 0; unix_client < 2; unix_client++) {
		int app, client_side;
		if (unix_client) {
			int sv[2];
			assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
			app = sv[0];
			client_side = sv[1];
		} else {
			tcp_pair(&app, &client_side);
		}
		int f = temp_file(size + 4096, 42);
		/* exactly `size` bytes, though the file is longer */
		assert_int_equal(relay_add(r, RELAY_FILE, client_side, f, size, NULL, &err), 0);
		struct pump rd;
		pump_start(&rd, app, false, 42, 0);
		pump_join(&rd);
		assert_int_equal(rd.error, 0);
		assert_int_equal(rd.done, size);
		assert_int_equal(rd.crc, rd.want_crc);
		wait_streams(0);
		close(app);
	}

	/* a file shorter than announced (truncated meanwhile) must not end cleanly */
	int app, client_side;
	tcp_pair(&app, &client_side);
	int f = temp_file(100000, 43);
	assert_int_equal(relay_add(r, RELAY_FILE, client_side, f, 200000, NULL, &err), 0);
	struct pump rd;
	pump_start(&rd, app, false, 43, 0);
	pump_join(&rd);
	assert_int_equal(rd.error, ECONNRESET);
	assert_true(rd.done <= 100000);
	wait_streams(0);
	close(app);

	/* an empty file: EOF right away */
	tcp_pair(&app, &client_side);
	f = temp_file(0, 44);
	assert_int_equal(relay_add(r, RELAY_FILE, client_side, f, 0, NULL, &err), 0);
	char c;
	assert_int_equal(read_all_timeout(app, &c, 1, 5000), 0);
	wait_streams(0);
	close(app);
}

/* ---- lifecycle ---- */

struct spinner {
	int fd;
	bool write;
	atomic_bool stop;
	int error;
	pthread_t thread;
};

static void *spinner_main(void *arg)
{
	struct spinner *s = arg;
	static uint8_t wbuf[1 << 16];
	uint8_t rbuf[1 << 16];
	while (!atomic_load(&s->stop)) {
		ssize_t n = s->write ? send(s->fd, wbuf, sizeof(wbuf), MSG_NOSIGNAL)
				     : recv(s->fd, rbuf, sizeof(rbuf), 0);
		if (n < 0) {
			s->error = errno;
			break;
		}
		if (n == 0)
			break;
	}
	return NULL;
}

static void test_destroy_while_busy(void **state)
{
	(void)state;
	struct hm_err err;
	memset(&counters, 0, sizeof(counters));
	int fds_before = count_fds();
	struct relay *r;
	assert_int_equal(relay_create(&counters, &r, &err), 0);
	enum { N = 20 };
	struct chain ch[N];
	struct spinner sp[4 * N];
	for (int i = 0; i < N; i++) {
		chain_open(r, &ch[i], i % 2);
		int fds[4] = {ch[i].app, ch[i].server, ch[i].server, ch[i].app};
		for (int k = 0; k < 4; k++) {
			struct spinner *s = &sp[4 * i + k];
			memset(s, 0, sizeof(*s));
			s->fd = fds[k];
			s->write = k < 2;
			assert_int_equal(pthread_create(&s->thread, NULL, spinner_main, s), 0);
		}
	}
	/* UDP and file streams in flight too */
	struct proto_addr pod_addr;
	int pod = udp_socket(AF_INET, "127.0.0.1", &pod_addr);
	int usv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, usv), 0);
	assert_int_equal(relay_add(r, RELAY_UDP, usv[1], pod, 0, NULL, &err), 0);
	int fapp, fclient;
	tcp_pair(&fapp, &fclient);
	assert_int_equal(
	    relay_add(r, RELAY_FILE, fclient, temp_file(8 << 20, 5), 8 << 20, NULL, &err), 0);
	usleep(200000);
	assert_int_equal(atomic_load(&counters.streams), N + 2);
	relay_destroy(r);
	assert_int_equal(atomic_load(&counters.streams), 0);
	/* every spinner ends on its own: the relay reset or closed each stream */
	for (int i = 0; i < 4 * N; i++)
		pthread_join(sp[i].thread, NULL);
	for (int i = 0; i < N; i++)
		chain_close(&ch[i]);
	close(usv[0]);
	close(fapp);
	/* the relay's epoll, eventfd, pipes and every relayed fd are gone */
	assert_int_equal(count_fds(), fds_before);
}

static void test_destroy_right_after_add(void **state)
{
	(void)state;
	/* streams possibly still queued for the relay thread when destroy comes */
	struct hm_err err;
	memset(&counters, 0, sizeof(counters));
	int fds_before = count_fds();
	struct relay *r;
	assert_int_equal(relay_create(&counters, &r, &err), 0);
	struct chain ch[8];
	for (int i = 0; i < 8; i++)
		chain_open(r, &ch[i], false);
	relay_destroy(r);
	assert_int_equal(atomic_load(&counters.streams), 0);
	for (int i = 0; i < 8; i++)
		chain_close(&ch[i]);
	assert_int_equal(count_fds(), fds_before);
}

/* ---- throughput: relay vs direct, printed for the report ---- */

struct blaster {
	int fd;
	uint64_t size;
};

static void *blaster_main(void *arg)
{
	struct blaster *b = arg;
	static uint8_t buf[256 << 10];
	for (uint64_t sent = 0; sent < b->size;) {
		size_t n = b->size - sent < sizeof(buf) ? (size_t)(b->size - sent) : sizeof(buf);
		ssize_t w = send(b->fd, buf, n, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		sent += (uint64_t)w;
	}
	shutdown(b->fd, SHUT_WR);
	return NULL;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* MB/s (10^6) from src to dst: the payload is a constant buffer, so the figure is
 * the path's cost, not the test's. *cpu gets the CPU seconds per GB of all threads
 * (sender, receiver, and the relay when there is one). */
static double transfer_mbps(int src, int dst, uint64_t size, double *cpu)
{
	static uint8_t buf[256 << 10];
	struct blaster b = {src, size};
	pthread_t th;
	double t0 = now_s(), c0 = cpu_s();
	assert_int_equal(pthread_create(&th, NULL, blaster_main, &b), 0);
	uint64_t got = 0;
	for (;;) {
		ssize_t n = recv(dst, buf, sizeof(buf), 0);
		assert_true(n >= 0);
		if (n == 0)
			break;
		got += (uint64_t)n;
	}
	pthread_join(th, NULL);
	double dt = now_s() - t0;
	*cpu = (cpu_s() - c0) / ((double)size / 1e9);
	assert_int_equal(got, size);
	return (double)size / dt / 1e6;
}

/* Median microseconds of a 1-byte request/response between a and an echoing b. */
struct pong_arg {
	int fd, rounds;
};

static void *pong_main(void *arg)
{
	struct pong_arg *p = arg;
	char c;
	for (int i = 0; i < p->rounds; i++) {
		if (recv(p->fd, &c, 1, 0) != 1 || send(p->fd, &c, 1, MSG_NOSIGNAL) != 1)
			break;
	}
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double round_trip_us(int a, int b)
{
	enum { ROUNDS = 5000 };
	static double t[ROUNDS];
	struct pong_arg p = {b, ROUNDS};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, pong_main, &p), 0);
	char c = 'x';
	for (int i = 0; i < ROUNDS; i++) {
		double t0 = now_s();
		assert_int_equal(send(a, &c, 1, MSG_NOSIGNAL), 1);
		assert_int_equal(recv(a, &c, 1, 0), 1);
		t[i] = (now_s() - t0) * 1e6;
	}
	pthread_join(th, NULL);
	qsort(t, ROUNDS, sizeof(t[0]), cmp_double);
	return t[ROUNDS / 2];
}

static void test_throughput(void **state)
{
	(void)state;
	const uint64_t size = 1ull << 30;
	int a, b;
	tcp_pair(&a, &b);
	double c_direct, c_tcp, c_unix, c_down;
	int one = 1;
	setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	double rtt_direct = round_trip_us(a, b);
	double direct = transfer_mbps(a, b, size, &c_direct);
	close(a);
	close(b);

	struct relay *r;
	struct hm_err err;
	memset(&counters, 0, sizeof(counters));
	assert_int_equal(relay_create(&counters, &r, &err), 0);
	struct chain ch;
	chain_open(r, &ch, false);
	setsockopt(ch.app, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(ch.server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	double rtt_relay = round_trip_us(ch.app, ch.server);
	double relay_tcp = transfer_mbps(ch.app, ch.server, size, &c_tcp);
	chain_close(&ch);
	chain_open(r, &ch, true);
	double relay_unix = transfer_mbps(ch.app, ch.server, size, &c_unix);
	chain_close(&ch);
	chain_open(r, &ch, false);
	double relay_down = transfer_mbps(ch.server, ch.app, size, &c_down);
	chain_close(&ch);
	relay_destroy(r);
	print_message("throughput, 1 GiB on loopback (CPU s per GB, all threads):\n"
		      "  direct TCP        %5.0f MB/s  %.2f\n"
		      "  relay tcp -> tcp  %5.0f MB/s  %.2f  (%.2fx direct)\n"
		      "  relay unix -> tcp %5.0f MB/s  %.2f\n"
		      "  relay tcp <- tcp  %5.0f MB/s  %.2f\n",
		      direct, c_direct, relay_tcp, c_tcp, relay_tcp / direct, relay_unix, c_unix,
		      relay_down, c_down);
	print_message("1-byte round trip, median: direct %.1f us, through the relay %.1f us\n",
		      rtt_direct, rtt_relay);
}

/* ---- outgoing.c, against this process's own network namespace ---- */

static struct agent_target *self_target(void)
{
	struct proto_target spec = {.kind = PROTO_TARGET_PID, .pid = (uint32_t)getpid()};
	snprintf(spec.value, sizeof(spec.value), "%d", (int)getpid());
	struct agent_target *t;
	struct hm_err err;
	if (agent_target_resolve(&spec, NULL, &t, &err) < 0)
		fail_msg("resolve self: %s", err.msg);
	return t;
}

static void listener(int family, int backlog, int *fd, struct proto_addr *addr)
{
	*fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(*fd >= 0);
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_loopback;
		sl = sizeof(*in6);
	}
	assert_int_equal(bind(*fd, (struct sockaddr *)&ss, sl), 0);
	assert_int_equal(listen(*fd, backlog), 0);
	sl = sizeof(ss);
	assert_int_equal(getsockname(*fd, (struct sockaddr *)&ss, &sl), 0);
	struct hm_err err;
	assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&ss, sl, addr, &err), 0);
}

static void test_outgoing_tcp(void **state)
{
	(void)state;
	struct agent_target *t = self_target();
	struct hm_err err;
	int families[] = {AF_INET, AF_INET6};
	for (int i = 0; i < 2; i++) {
		int l;
		struct proto_addr dst, local, peer;
		listener(families[i], 4, &l, &dst);
		int fd = outgoing_tcp_connect(t, &dst, 0, &local, &err);
		if (fd < 0)
			fail_msg("%s", err.msg);
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int a = accept4(l, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		assert_true(a >= 0);
		assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&ss, sl, &peer, &err),
				 0);
		/* the reply's local address is what the server sees as its peer */
		assert_int_equal(local.family, peer.family);
		assert_int_equal(local.port, peer.port);
		assert_memory_equal(local.addr, peer.addr, 16);
		assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
		assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		close(a);
		close(fd);
		/* nobody listening: the errno the app would get */
		struct proto_addr refused = dst;
		close(l);
		assert_true(outgoing_tcp_connect(t, &refused, 0, &local, &err) < 0);
		assert_int_equal(err.code, ECONNREFUSED);
	}

	/* a listener whose queue is full drops SYNs: the connect times out */
	int l;
	struct proto_addr dst, local;
	listener(AF_INET, 0, &l, &dst);
	int fill[4];
	int nfill = 0;
	for (; nfill < 4; nfill++) {
		fill[nfill] = outgoing_tcp_connect(t, &dst, 300, &local, &err);
		if (fill[nfill] < 0)
			break;
	}
	assert_true(nfill < 4);
	assert_int_equal(err.code, ETIMEDOUT);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(l);

	struct proto_addr bad = {.family = 9};
	assert_true(outgoing_tcp_connect(t, &bad, 0, &local, &err) < 0);
	assert_int_equal(err.code, EAFNOSUPPORT);
	agent_target_put(t);
}

static void test_outgoing_udp(void **state)
{
	(void)state;
	struct agent_target *t = self_target();
	struct hm_err err;
	struct proto_addr local;
	int fd = agent_outgoing_udp_open(t, PROTO_AF_INET, &local, &err);
	assert_true(fd >= 0);
	assert_int_equal(local.family, PROTO_AF_INET);
	assert_true(local.port != 0);
	close(fd);
	fd = agent_outgoing_udp_open(t, PROTO_AF_INET6, &local, &err);
	assert_true(fd >= 0);
	assert_int_equal(local.family, PROTO_AF_INET6);
	assert_true(local.port != 0);
	close(fd);
	assert_true(agent_outgoing_udp_open(t, 0, &local, &err) < 0);
	assert_int_equal(err.code, EAFNOSUPPORT);
	agent_target_put(t);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_tcp_bulk_both_directions, relay_setup,
					    relay_teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_half_close, relay_setup, relay_teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_reset_propagates, relay_setup, relay_teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_mixed_sizes_slow_reader, relay_setup,
					    relay_teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_data_and_eof_already_queued, relay_setup,
					    relay_teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_200_parallel, relay_setup, relay_teardown),
	    cmocka_unit_test_setup_teardown(test_udp_round_trip, relay_setup, relay_teardown),
	    cmocka_unit_test_setup_teardown(test_udp_v6_and_mapped, relay_setup, relay_teardown),
	    cmocka_unit_test_setup_teardown(test_udp_malformed_closes, relay_setup, relay_teardown),
	    cmocka_unit_test_setup_teardown(test_file_sendfile, relay_setup, relay_teardown),
	    cmocka_unit_test(test_destroy_while_busy),
	    cmocka_unit_test(test_destroy_right_after_add),
	    cmocka_unit_test(test_throughput),
	    cmocka_unit_test(test_outgoing_tcp),
	    cmocka_unit_test(test_outgoing_udp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
