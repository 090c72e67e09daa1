/* Endpoints (client/client.h): parsing an agent address, and the unix and TCP
 * transports that dial it. */
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "client/client.h"

int client_endpoint_parse(const char *spec, struct client_endpoint *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!spec || !spec[0])
		return hm_err_set(err, EINVAL, "empty agent address");
	const char *path = NULL;
	if (!strncmp(spec, "unix:", 5))
		path = spec + 5;
	else if (spec[0] == '/' || spec[0] == '.')
		path = spec;
	if (path) {
		if (!path[0] || strlen(path) >= sizeof(out->path))
			return hm_err_set(err, ENAMETOOLONG, "bad unix socket path '%s'", path);
		return client_endpoint_unix(path, out, err);
	}
	const char *host = spec, *colon;
	size_t hlen;
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':')
			return hm_err_set(err, EINVAL, "bad agent address '%s': expected [V6]:PORT",
					  spec);
		host = spec + 1;
		hlen = (size_t)(end - host);
		colon = end + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon)
			return hm_err_set(
			    err, EINVAL,
			    "bad agent address '%s': expected HOST:PORT or a socket path", spec);
		hlen = (size_t)(colon - spec);
	}
	uint64_t port;
	if (!hlen || hlen >= sizeof(out->host) || hm_parse_u64(colon + 1, &port) < 0 || !port ||
	    port > 65535)
		return hm_err_set(err, EINVAL, "bad agent address '%s'", spec);
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	snprintf(out->port, sizeof(out->port), "%u", (unsigned)port);
	out->transport = &client_transport_tcp;
	return 0;
}

int client_endpoint_unix(const char *path, struct client_endpoint *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (strlen(path) >= sizeof(out->path))
		return hm_err_set(err, ENAMETOOLONG, "agent socket path %s is too long", path);
	strcpy(out->path, path);
	out->transport = &client_transport_unix;
	return 0;
}

const char *client_endpoint_str(const struct client_endpoint *ep, char *buf, size_t len)
{
	ep->transport->describe(ep, buf, len);
	return buf;
}

int client_endpoint_dial(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	return ep->transport->dial(ep, timeout_ms, err);
}

/* ---- tcp ---- */

static void describe_tcp(const struct client_endpoint *ep, char *buf, size_t len)
{
	if (strchr(ep->host, ':'))
		snprintf(buf, len, "[%s]:%s", ep->host, ep->port);
	else
		snprintf(buf, len, "%s:%s", ep->host, ep->port);
}

static int set_blocking(int fd, bool blocking)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl);
}

static int dial_tcp(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	struct addrinfo hints = {
	    .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	int gai = getaddrinfo(ep->host, ep->port, &hints, &res);
	if (gai)
		return hm_err_set(err, EHOSTUNREACH, "agent %s: %s", ep->host, gai_strerror(gai));
	int saved = ECONNREFUSED;
	int fd = -1;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		if (hm_connect_deadline(fd, ai->ai_addr, ai->ai_addrlen, hm_deadline_in(timeout_ms),
					NULL) < 0 ||
		    set_blocking(fd, true) < 0) {
			saved = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		return hm_err_set(err, saved, "connect to agent %s:%s", ep->host, ep->port);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

const struct client_transport client_transport_tcp = {
    .name = "tcp", .dial = dial_tcp, .describe = describe_tcp};

/* ---- unix ---- */

static void describe_unix(const struct client_endpoint *ep, char *buf, size_t len)
{
	snprintf(buf, len, "unix:%s", ep->path);
}

static int dial_unix(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	(void)timeout_ms; /* a local connect: blocking, without a deadline of its own */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return hm_err_errno(err, "socket");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ep->path);
	int rc;
	do
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int saved = errno;
		close(fd);
		if (saved == EACCES)
			return hm_err_plain(
			    err, EACCES,
			    "connect to agent at %s: permission denied (only root and "
			    "the socket's group, trace-agent --unix-group, may connect)",
			    ep->path);
		return hm_err_set(err, saved, "connect to agent at %s", ep->path);
	}
	return fd;
}

const struct client_transport client_transport_unix = {
    .name = "unix", .dial = dial_unix, .describe = describe_unix};
