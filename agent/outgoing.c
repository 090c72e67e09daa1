/* Outgoing traffic from the target's network: sockets are made by the target's worker
 * thread (inside its netns) and then connected or bound from whatever thread asks; a
 * socket keeps the namespace it was created in, so the pod's routes, addresses and
 * firewall apply and the peer sees the pod's IP. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "agent/internal.h"

#define OUTGOING_DEFAULT_TIMEOUT_MS 10000
/* a client cannot pin a request thread for longer than this */
#define OUTGOING_MAX_TIMEOUT_MS 120000

static int family_to_domain(uint8_t family, struct hm_err *err)
{
	if (family == PROTO_AF_INET)
		return AF_INET;
	if (family == PROTO_AF_INET6)
		return AF_INET6;
	return hm_err_set(err, EAFNOSUPPORT, "address family %u", family);
}

static int local_addr(int fd, struct proto_addr *local, struct hm_err *err)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return hm_err_errno(err, "getsockname");
	return proto_addr_from_sockaddr((struct sockaddr *)&ss, len, local, err);
}

uint32_t agent_outgoing_timeout(uint32_t timeout_ms)
{
	if (timeout_ms == 0)
		return OUTGOING_DEFAULT_TIMEOUT_MS;
	return timeout_ms > OUTGOING_MAX_TIMEOUT_MS ? OUTGOING_MAX_TIMEOUT_MS : timeout_ms;
}

int agent_outgoing_tcp_begin(struct agent_target *t, const struct proto_addr *dst, int *fd_out,
			     struct hm_err *err)
{
	*fd_out = -1;
	char dst_str[80];
	proto_addr_str(dst, dst_str, sizeof(dst_str));
	int domain = family_to_domain(dst->family, err);
	if (domain < 0)
		return hm_err_prefix(err, "connect to %s", dst_str);
	/* non-blocking from the start: the timeout is ours, not the kernel's ~2 minutes,
	 * and the relay wants it non-blocking anyway */
	hm_cleanup_close int fd =
	    agent_target_socket(t, domain, SOCK_STREAM | SOCK_NONBLOCK, 0, err);
	if (fd < 0)
		return hm_err_prefix(err, "connect to %s", dst_str);
	struct sockaddr_storage ss;
	socklen_t sl = proto_addr_to_sockaddr(dst, &ss);
	if (connect(fd, (struct sockaddr *)&ss, sl) == 0) {
		*fd_out = hm_steal_fd(&fd);
		return 0;
	}
	if (errno == EINPROGRESS || errno == EINTR) {
		*fd_out = hm_steal_fd(&fd);
		return 1;
	}
	return hm_err_set(err, errno, "connect to %s", dst_str);
}

int agent_outgoing_tcp_finish(int fd, const struct proto_addr *dst, int outcome,
			      uint32_t timeout_ms, struct proto_addr *local, struct hm_err *err)
{
	char dst_str[80];
	proto_addr_str(dst, dst_str, sizeof(dst_str));
	if (outcome < 0) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
			return hm_err_errno(err, "connect to %s: getsockopt SO_ERROR", dst_str);
		outcome = soerr;
	}
	if (outcome == ETIMEDOUT)
		return hm_err_set(err, ETIMEDOUT, "connect to %s: no answer after %u ms", dst_str,
				  timeout_ms);
	if (outcome)
		return hm_err_set(err, outcome, "connect to %s", dst_str);
	if (local && local_addr(fd, local, err) < 0)
		return hm_err_prefix(err, "connect to %s", dst_str);
	hm_debug("outgoing: tcp to %s connected", dst_str);
	return 0;
}

int agent_outgoing_udp_open(struct agent_target *t, uint8_t family, struct proto_addr *local,
			    struct hm_err *err)
{
	int domain = family_to_domain(family, err);
	if (domain < 0)
		return hm_err_prefix(err, "udp socket");
	hm_cleanup_close int fd =
	    agent_target_socket(t, domain, SOCK_DGRAM | SOCK_NONBLOCK, 0, err);
	if (fd < 0)
		return hm_err_prefix(err, "udp socket");
	/* the wildcard address: each datagram leaves from whatever source the pod's routes
	 * pick for its destination. On AF_INET6 the default (not v6-only) lets v4-mapped
	 * destinations through, as on the app's own dual-stack sockets. */
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (domain == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_addr.s_addr = htonl(INADDR_ANY);
		sl = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_addr = in6addr_any;
		sl = sizeof(*in6);
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0)
		return hm_err_errno(err, "udp socket: bind to an ephemeral port");
	struct proto_addr unused;
	if (local_addr(fd, local ? local : &unused, err) < 0)
		return hm_err_prefix(err, "udp socket");
	return hm_steal_fd(&fd);
}
