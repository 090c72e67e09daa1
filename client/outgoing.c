/* Outgoing traffic from the target's network (client/client.h): TCP connects and UDP
 * sockets, each carried by a stream connection. */
#include <poll.h>
#include <string.h>

#include "client/internal.h"

int client_tcp_connect_token(struct client *c, const struct proto_addr *dst, uint32_t timeout_ms,
			     uint8_t token[PROTO_TOKEN_LEN], struct proto_addr *local,
			     struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_TCP_CONNECT};
	proto_cleanup_msg struct proto_msg reply = {0};
	req.tcp_connect.dst = *dst;
	req.tcp_connect.timeout_ms = timeout_ms;
	/* the agent gives up on the connect first and says why */
	int wait = timeout_ms && c->timeout_ms > 0 && (int)timeout_ms + 5000 > c->timeout_ms
		       ? (int)timeout_ms + 5000
		       : 0;
	if (client_call(c, &req, &reply, wait, err) < 0)
		return -1;
	if (local)
		*local = reply.tcp_connect_reply.local;
	memcpy(token, reply.tcp_connect_reply.token, PROTO_TOKEN_LEN);
	return 0;
}

int client_tcp_connect(struct client *c, const struct proto_addr *dst, uint32_t timeout_ms,
		       struct proto_addr *local, struct hm_err *err)
{
	bool pod_socket;
	return client_tcp_connect_handoff(c, dst, timeout_ms, local, &pod_socket, err);
}

int client_tcp_connect_handoff(struct client *c, const struct proto_addr *dst, uint32_t timeout_ms,
			       struct proto_addr *local, bool *pod_socket, struct hm_err *err)
{
	uint8_t token[PROTO_TOKEN_LEN];
	if (client_tcp_connect_token(c, dst, timeout_ms, token, local, err) < 0)
		return -1;
	int fd = client_open_stream_handoff(c, token, pod_socket, err);
	if (fd < 0) {
		char where[80];
		return hm_err_prefix(err, "TCP stream to %s",
				     proto_addr_str(dst, where, sizeof(where)));
	}
	return fd;
}

int client_udp_open(struct client *c, uint8_t family, struct proto_addr *local, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_UDP_OPEN};
	proto_cleanup_msg struct proto_msg reply = {0};
	req.udp_open.family = family;
	if (client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	if (local)
		*local = reply.udp_open_reply.local;
	int fd = client_open_stream(c, reply.udp_open_reply.token, err);
	if (fd < 0)
		return hm_err_prefix(err, "UDP stream");
	return fd;
}

int client_udp_send(int stream_fd, const struct proto_addr *dst, const void *data, size_t len,
		    struct hm_err *err)
{
	if (len > PROTO_DATAGRAM_MAX)
		return hm_err_set(err, EMSGSIZE, "datagram of %zu bytes", len);
	struct proto_msg m = {.type = PROTO_UDP_DATAGRAM};
	m.udp_datagram.peer = *dst;
	m.udp_datagram.data = data;
	m.udp_datagram.len = (uint32_t)len;
	return proto_send(stream_fd, 0, &m, err);
}

ssize_t client_udp_recv(int stream_fd, struct proto_addr *src, void *buf, size_t cap,
			int timeout_ms, struct hm_err *err)
{
	/* Wait for the frame's first byte here, then give the rest a grace period: a
	 * timeout inside a frame would lose its beginning and the stream with it. */
	int n = hm_poll_fd(stream_fd, POLLIN, hm_deadline_in(timeout_ms));
	if (n < 0)
		return hm_err_errno(err, "poll UDP stream");
	if (n == 0)
		return hm_err_set(err, ETIMEDOUT, "no datagram within %d ms", timeout_ms);
	proto_cleanup_msg struct proto_msg m = {0};
	if (proto_recv(stream_fd, PROTO_DATAGRAM_MAX + 64, STREAM_FRAME_GRACE_MS, &m, err) < 0)
		return -1;
	if (m.type != PROTO_UDP_DATAGRAM)
		return hm_err_set(err, EPROTO, "UDP stream carried %s", proto_type_name(m.type));
	size_t len = m.udp_datagram.len < cap ? m.udp_datagram.len : cap;
	if (len)
		memcpy(buf, m.udp_datagram.data, len);
	if (src)
		*src = m.udp_datagram.peer;
	return (ssize_t)len;
}
