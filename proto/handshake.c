/* The two hellos: the control connection's (version, features, auth token) and the
 * stream connection's (one-time token). */
#include <string.h>

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

int proto_stream_open(int fd, const uint8_t token[PROTO_TOKEN_LEN], int timeout_ms,
		      struct hm_err *err)
{
	struct proto_msg m = {.type = PROTO_STREAM_HELLO};
	memcpy(m.stream_hello.token, token, PROTO_TOKEN_LEN);
	if (proto_send(fd, 0, &m, err) < 0)
		return hm_err_prefix(err, "stream hello");
	struct proto_msg reply;
	if (proto_recv(fd, PROTO_HELLO_MAX_PAYLOAD, timeout_ms, &reply, err) < 0)
		return hm_err_prefix(err, "stream hello");
	int rc = 0;
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
	return rc;
}
