/* tcp_sink: both ends of the outgoing-throughput benchmark (bench/run.sh), linked
 * statically so `trace-pod deploy` can drop it into a pod's busybox rootfs.
 *
 *   tcp_sink serve [-p PORT]         discard what every connection sends; once a client
 *                                    half-closes, answer "N\n" (the bytes received) and
 *                                    close. One poll loop serves many connections at once
 *                                    (idle ones cost nothing), prints "listening" first.
 *   tcp_sink send ADDR:PORT BYTES    connect, send BYTES from a 1 MiB buffer, half-close,
 *                                    wait for the sink's count; prints
 *                                    "sent BYTES in SECONDS s: MBPS MB/s". Byte i of the
 *                                    stream is (j * 7 + j / 4099) & 0xff with j = i mod
 *                                    1 MiB, so a copy of it (the mirror tests) can be
 *                                    checked for order and holes.
 *
 * The host-side client of the benchmark (tests/agent/bench_agent.c) sends through the
 * agent with the same loop (tcp_sink_send_all below is copied there), so the two paths
 * differ only in how the bytes leave. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define CHUNK (1u << 20)

static void on_signal(int sig)
{
	(void)sig;
	_exit(0);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct conn {
	int fd;
	uint64_t got;
};

static int serve(int port)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(l, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(l, 1024) < 0) {
		fprintf(stderr, "tcp_sink: listen on port %d: %s\n", port, strerror(errno));
		return 1;
	}
	printf("tcp_sink: listening on port %d\n", port);
	fflush(stdout);
	static struct pollfd pfd[1 + MAX_CONNS];
	static struct conn conns[MAX_CONNS];
	static char buf[CHUNK];
	int n = 0;
	pfd[0] = (struct pollfd){.fd = l, .events = POLLIN};
	for (;;) {
		for (int i = 0; i < n; i++)
			pfd[1 + i] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
		if (poll(pfd, (nfds_t)(1 + n), -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("tcp_sink: poll");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (!pfd[1 + i].revents)
				continue;
			struct conn *c = &conns[i];
			for (;;) {
				ssize_t r = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
				if (r > 0) {
					c->got += (uint64_t)r;
					continue;
				}
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				if (r == 0) {
					/* a few bytes into an empty send buffer: never blocks */
					char ack[32];
					int len = snprintf(ack, sizeof(ack), "%llu\n",
							   (unsigned long long)c->got);
					if (send(c->fd, ack, (size_t)len, MSG_NOSIGNAL) < 0)
						perror("tcp_sink: send");
				}
				close(c->fd);
				c->fd = -1;
				break;
			}
		}
		int k = 0;
		for (int i = 0; i < n; i++)
			if (conns[i].fd >= 0)
				conns[k++] = conns[i];
		n = k;
		if (pfd[0].revents & POLLIN) {
			for (;;) {
				int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
				if (fd < 0)
					break;
				if (n == MAX_CONNS) {
					close(fd);
					continue;
				}
				conns[n++] = (struct conn){.fd = fd};
			}
		}
	}
}

/* Send size bytes, half-close, read the sink's count; 0 when it matches. */
static int tcp_sink_send_all(int fd, uint64_t size)
{
	static char buf[CHUNK];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)((i * 7 + i / 4099) & 0xff);
	uint64_t sent = 0;
	while (sent < size) {
		size_t at = (size_t)(sent % sizeof(buf)); /* after a short send too */
		size_t len =
		    size - sent < sizeof(buf) - at ? (size_t)(size - sent) : sizeof(buf) - at;
		ssize_t w = send(fd, buf + at, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		sent += (uint64_t)w;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		return -1;
	char ack[32];
	size_t got = 0;
	for (;;) {
		ssize_t r = recv(fd, ack + got, sizeof(ack) - 1 - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
		if (got == sizeof(ack) - 1)
			break;
	}
	ack[got] = 0;
	if (strtoull(ack, NULL, 10) != size) {
		errno = EPROTO;
		return -1;
	}
	return 0;
}

static int send_to(const char *addr, const char *bytes)
{
	char host[64];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return 2;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons((uint16_t)atoi(colon + 1))};
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return 2;
	char *end;
	uint64_t size = strtoull(bytes, &end, 10);
	switch (*end) {
	case 'G':
		size <<= 30;
		break;
	case 'M':
		size <<= 20;
		break;
	case 'K':
	case 'k':
		size <<= 10;
		break;
	case 0:
		break;
	default:
		return 2;
	}
	/* the clock covers the bytes only: connecting through the agent costs a request
	 * more, which is no part of throughput */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		fprintf(stderr, "tcp_sink: connect to %s: %s\n", addr, strerror(errno));
		return 1;
	}
	double t0 = now_s();
	if (tcp_sink_send_all(fd, size) < 0) {
		fprintf(stderr, "tcp_sink: send to %s: %s\n", addr, strerror(errno));
		return 1;
	}
	double dt = now_s() - t0;
	close(fd);
	printf("sent %llu in %.6f s: %.1f MB/s\n", (unsigned long long)size, dt,
	       (double)size / dt / 1e6);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	if (argc >= 2 && !strcmp(argv[1], "serve")) {
		int port = 9000;
		if (argc == 4 && !strcmp(argv[2], "-p"))
			port = atoi(argv[3]);
		else if (argc != 2)
			goto usage;
		return serve(port);
	}
	if (argc == 4 && !strcmp(argv[1], "send")) {
		int rc = send_to(argv[2], argv[3]);
		if (rc != 2)
			return rc;
	}
usage:
	fprintf(stderr, "usage: tcp_sink serve [-p PORT] | tcp_sink send ADDR:PORT BYTES[K|M|G]\n");
	return 2;
}
