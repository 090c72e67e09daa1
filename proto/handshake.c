/* The two hellos: the control connection's (version, features, auth token) and the
 * stream connection's (one-time token). */
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/proto.h"

bool proto_token_equal(const void *a, const void *b, size_t len)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t diff = 0;
	for (size_t i = 0; i < len; i++)
		diff |= x[i] ^ y[i];
	return diff == 0;
}

int proto_client_handshake(int fd, const char *auth_token, const char *client_name,
			   uint64_t features, int timeout_ms, uint64_t *agreed, struct hm_err *err)
{
	struct proto_msg m = {.type = PROTO_HELLO};
	m.hello = (struct proto_hello){
	    .version = PROTO_VERSION,
	    .features = features,
	    .token = auth_token,
	    .client = client_name,
	};
	if (proto_send(fd, 0, &m, err) < 0)
		return hm_err_prefix(err, "handshake");
	struct proto_msg reply;
	if (proto_recv(fd, PROTO_HELLO_MAX_PAYLOAD, timeout_ms, &reply, err) < 0)
		return hm_err_prefix(err, "handshake");
	int rc = 0;
	if (reply.type != PROTO_HELLO_REPLY) {
		rc = hm_err_set(err, EPROTO, "handshake: agent answered %s",
				proto_type_name(reply.type));
	} else if (reply.hello_reply.error) {
		rc = hm_err_set(err, 0, "agent %s rejected the connection: %s",
				reply.hello_reply.server, reply.hello_reply.reason);
		if (err)
			err->code = reply.hello_reply.error;
	} else if (reply.hello_reply.version != PROTO_VERSION) {
		rc = hm_err_set(err, EPROTONOSUPPORT, "agent speaks protocol version %u, not %u",
				reply.hello_reply.version, PROTO_VERSION);
	} else if (agreed) {
		/* never trust the agent to have narrowed the set itself */
		*agreed = reply.hello_reply.features & features;
	}
	proto_msg_free(&reply);
	return rc;
}

int proto_server_check_hello(const struct proto_hello *hello, const char *auth_token,
			     uint64_t server_features, const char *server_name,
			     struct proto_hello_reply *reply)
{
	*reply = (struct proto_hello_reply){
	    .version = PROTO_VERSION,
	    .features = hello->features & server_features,
	    .reason = "",
	    .server = server_name,
	};
	if (hello->version != PROTO_VERSION) {
		reply->error = EPROTONOSUPPORT;
		reply->reason = "unsupported protocol version";
		reply->features = 0;
		return -1;
	}
	size_t want = strlen(auth_token), got = strlen(hello->token);
	/* compare in constant time; the length check leaks only the length */
	bool ok = want > 0 && want == got && proto_token_equal(auth_token, hello->token, want);
	if (!ok) {
		reply->error = EACCES;
		reply->reason = "wrong or missing auth token";
		reply->features = 0;
		return -1;
	}
	return 0;
}

/* The fd riding on the reply's first byte, taken with MSG_PEEK: a peek hands out a
 * copy of the passed fds, and the frame reader's plain read() below then consumes the
 * bytes and drops the kernel's own reference. The frame itself is read as always. */
static int peek_passed_fd(int fd, int timeout_ms, int *passed, struct hm_err *err)
{
	*passed = -1;
	int n = hm_poll_fd(fd, POLLIN, hm_deadline_in(timeout_ms));
	if (n < 0)
		return hm_err_errno(err, "stream hello: poll");
	if (n == 0)
		return hm_err_set(err, ETIMEDOUT, "stream hello: waiting for the peer");
	char byte;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = control.buf,
			     .msg_controllen = sizeof(control.buf)};
	ssize_t got;
	do
		got = recvmsg(fd, &msg, MSG_PEEK | MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return hm_err_errno(err, "stream hello: recvmsg");
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < nfds; i++) {
			int one;
			memcpy(&one, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (*passed < 0)
				*passed = one;
			else
				close(one); /* only one is ever sent */
		}
	}
	if (msg.msg_flags & MSG_CTRUNC) {
		if (*passed >= 0)
			close(*passed);
		*passed = -1;
		return hm_err_set(err, EPROTO, "stream hello: more fds than one came with it");
	}
	return 0;
}

/* passed NULL: a plain stream, whatever came with the reply is dropped by read() */
static int stream_open(int fd, const uint8_t token[PROTO_TOKEN_LEN], int timeout_ms, int *passed,
		       struct hm_err *err)
{
	struct proto_msg m = {.type = PROTO_STREAM_HELLO};
	memcpy(m.stream_hello.token, token, PROTO_TOKEN_LEN);
	if (proto_send(fd, 0, &m, err) < 0)
		return hm_err_prefix(err, "stream hello");
	int got = -1;
	if (passed && peek_passed_fd(fd, timeout_ms, &got, err) < 0)
		return -1;
	struct proto_msg reply;
	int rc = proto_recv(fd, PROTO_HELLO_MAX_PAYLOAD, timeout_ms, &reply, err);
	if (rc < 0) {
		hm_err_prefix(err, "stream hello");
	} else {
		if (reply.type != PROTO_STREAM_HELLO_REPLY) {
			rc = hm_err_set(err, EPROTO, "stream hello: agent answered %s",
					proto_type_name(reply.type));
		} else if (reply.stream_hello_reply.error) {
			rc = hm_err_set(err, 0, "agent refused the stream: %s",
					reply.stream_hello_reply.reason);
			if (err)
				err->code = reply.stream_hello_reply.error;
		}
		proto_msg_free(&reply);
	}
	if (rc < 0 && got >= 0)
		close(got);
	else if (passed)
		*passed = got;
	return rc;
}

int proto_stream_open(int fd, const uint8_t token[PROTO_TOKEN_LEN], int timeout_ms,
		      struct hm_err *err)
{
	return stream_open(fd, token, timeout_ms, NULL, err);
}

int proto_stream_open_fd(int fd, const uint8_t token[PROTO_TOKEN_LEN], int timeout_ms, int *passed,
			 struct hm_err *err)
{
	*passed = -1;
	return stream_open(fd, token, timeout_ms, passed, err);
}
