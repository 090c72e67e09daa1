/* echo_server: a TCP echo server for tests, linked statically so `trace-pod deploy` can
 * drop it into a pod's busybox rootfs.
 *
 *   echo_server [-p PORT] [-b ADDR]...
 *
 * Listens on every ADDR (default 0.0.0.0; IPv6 addresses such as ::1 work too) at PORT
 * (default 7), echoes every byte back on each connection, passes a half-close on
 * (shutdown(SHUT_WR) once the client's EOF and everything before it is echoed), and
 * logs one line per connection on stdout: "accept PEER on LOCAL" — tests read it to
 * learn who connected. One poll loop serves many connections at once. Exits on
 * SIGTERM or SIGINT, also as a pod's PID 1. */
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
#include <unistd.h>

#define MAX_LISTEN 8
#define MAX_CONNS 2048
#define BUF_SIZE 65536

struct conn {
	int fd;
	char *buf; /* bytes read and not yet echoed */
	size_t len, off;
	bool eof; /* the client half-closed */
};

static void on_signal(int sig)
{
	(void)sig;
	_exit(0);
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(in->sin_port));
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
	}
	return buf;
}

static int listen_on(const char *addr, int port)
{
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		sl = sizeof(*in);
	} else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*in6);
	} else {
		fprintf(stderr, "echo_server: bad address '%s'\n", addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ss.ss_family == AF_INET6) /* "::" and "0.0.0.0" may both be asked for */
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
		fprintf(stderr, "echo_server: listen on %s port %d: %s\n", addr, port,
			strerror(errno));
		return -1;
	}
	return fd;
}

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c->buf);
	c->fd = -1;
	c->buf = NULL;
}

/* Echo what is buffered, then read more; false once the connection is finished. */
static bool conn_step(struct conn *c)
{
	for (;;) {
		while (c->off < c->len) {
			ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
			if (n < 0)
				return errno == EAGAIN || errno == EINTR;
			c->off += (size_t)n;
		}
		c->off = c->len = 0;
		if (c->eof) {
			shutdown(c->fd, SHUT_WR);
			return false;
		}
		ssize_t n = recv(c->fd, c->buf, BUF_SIZE, 0);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR;
		if (n == 0)
			c->eof = true;
		else
			c->len = (size_t)n;
	}
}

int main(int argc, char **argv)
{
	const char *addrs[MAX_LISTEN];
	int naddrs = 0, port = 7, opt;
	while ((opt = getopt(argc, argv, "p:b:h")) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'b':
			if (naddrs == MAX_LISTEN) {
				fprintf(stderr, "echo_server: at most %d addresses\n", MAX_LISTEN);
				return 2;
			}
			addrs[naddrs++] = optarg;
			break;
		default:
			fprintf(stderr, "usage: echo_server [-p PORT] [-b ADDR]...\n");
			return 2;
		}
	}
	if (port <= 0 || port > 65535 || optind != argc) {
		fprintf(stderr, "usage: echo_server [-p PORT] [-b ADDR]...\n");
		return 2;
	}
	if (!naddrs)
		addrs[naddrs++] = "0.0.0.0";
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);

	static struct pollfd pfd[MAX_LISTEN + MAX_CONNS];
	static struct conn conns[MAX_CONNS];
	int nconns = 0;
	for (int i = 0; i < naddrs; i++) {
		pfd[i].fd = listen_on(addrs[i], port);
		if (pfd[i].fd < 0)
			return 1;
		pfd[i].events = POLLIN;
		printf("echo_server: listening on %s port %d\n", addrs[i], port);
	}
	fflush(stdout);
	for (;;) {
		for (int i = 0; i < nconns; i++) {
			struct pollfd *p = &pfd[naddrs + i];
			p->fd = conns[i].fd;
			/* a client that does not read stops being read: no unbounded buffer */
			p->events = conns[i].off < conns[i].len ? POLLOUT : POLLIN;
		}
		if (poll(pfd, (nfds_t)(naddrs + nconns), -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("echo_server: poll");
			return 1;
		}
		for (int i = 0; i < nconns; i++) {
			if (pfd[naddrs + i].revents && !conn_step(&conns[i]))
				conn_close(&conns[i]);
		}
		/* compact closed connections away */
		int k = 0;
		for (int i = 0; i < nconns; i++)
			if (conns[i].fd >= 0)
				conns[k++] = conns[i];
		nconns = k;
		for (int l = 0; l < naddrs; l++) {
			if (!(pfd[l].revents & POLLIN))
				continue;
			for (;;) {
				struct sockaddr_storage peer, local;
				socklen_t pl = sizeof(peer), ll = sizeof(local);
				int fd = accept4(pfd[l].fd, (struct sockaddr *)&peer, &pl,
						 SOCK_CLOEXEC | SOCK_NONBLOCK);
				if (fd < 0)
					break;
				if (nconns == MAX_CONNS) {
					close(fd);
					continue;
				}
				getsockname(fd, (struct sockaddr *)&local, &ll);
				char a[80], b[80];
				printf("accept %s on %s\n", addr_str(&peer, a, sizeof(a)),
				       addr_str(&local, b, sizeof(b)));
				fflush(stdout);
				conns[nconns] = (struct conn){.fd = fd, .buf = malloc(BUF_SIZE)};
				if (!conns[nconns].buf) {
					close(fd);
					continue;
				}
				nconns++;
			}
		}
	}
}
