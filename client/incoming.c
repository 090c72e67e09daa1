/* Incoming traffic (client/client.h): subscriptions to the target's ports, the
 * INCOMING_CONNECTION events of the control connection, and the delivered streams. */
#include <poll.h>
#include <string.h>

#include "client/internal.h"

void client_incoming_set_handler(struct client *c, client_incoming_fn fn, void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->incoming_fn = fn;
	c->incoming_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

bool client_incoming_event(struct client *c, const struct proto_msg *m)
{
	if (m->type != PROTO_INCOMING_CONNECTION)
		return false;
	/* under the lock (the caller's), so that once the handler is replaced it runs no
	 * more; no handler: nobody subscribed, the token expires in the agent */
	if (c->incoming_fn)
		c->incoming_fn(c->incoming_arg, &m->incoming_connection);
	return true;
}

int client_incoming_subscribe(struct client *c, uint16_t port, uint8_t mode, uint32_t flags,
			      const char *http_filter, uint32_t *subscription, char *note,
			      size_t note_len, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_INCOMING_SUBSCRIBE};
	proto_cleanup_msg struct proto_msg reply = {0};
	req.incoming_subscribe.port = port;
	req.incoming_subscribe.mode = mode;
	req.incoming_subscribe.flags = flags;
	req.incoming_subscribe.http_filter = http_filter ? http_filter : "";
	if (client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	*subscription = reply.incoming_subscribe_reply.subscription;
	if (note && note_len)
		snprintf(note, note_len, "%s", reply.incoming_subscribe_reply.note);
	return 0;
}

int client_incoming_unsubscribe(struct client *c, uint32_t subscription, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_INCOMING_UNSUBSCRIBE};
	proto_cleanup_msg struct proto_msg reply = {0};
	req.incoming_unsubscribe.subscription = subscription;
	return client_call(c, &req, &reply, 0, err);
}

int client_incoming_open(struct client *c, const uint8_t token[PROTO_TOKEN_LEN], bool *pod_socket,
			 struct hm_err *err)
{
	int fd = client_open_stream_handoff(c, token, pod_socket, err);
	if (fd < 0)
		return hm_err_prefix(err, "incoming connection's stream");
	return fd;
}

ssize_t client_incoming_read(int stream_fd, struct proto_msg *m, const void **data, int *end_error,
			     int timeout_ms, struct hm_err *err)
{
	memset(m, 0, sizeof(*m));
	*data = NULL;
	*end_error = 0;
	/* wait for the first byte, then the frame completes within a grace period */
	int n = hm_poll_fd(stream_fd, POLLIN, hm_deadline_in(timeout_ms));
	if (n < 0)
		return hm_err_errno(err, "poll mirror stream");
	if (n == 0)
		return hm_err_set(err, ETIMEDOUT, "no mirror frame within %d ms", timeout_ms);
	if (proto_recv(stream_fd, PROTO_INCOMING_DATA_MAX + 64, STREAM_FRAME_GRACE_MS, m, err) < 0)
		return -1;
	if (m->type == PROTO_INCOMING_DATA) {
		*data = m->incoming_data.data;
		return (ssize_t)m->incoming_data.len;
	}
	if (m->type == PROTO_INCOMING_END) {
		*end_error = m->incoming_end.error;
		return 0;
	}
	int rc = hm_err_set(err, EPROTO, "mirror stream carried %s", proto_type_name(m->type));
	proto_msg_free(m);
	memset(m, 0, sizeof(*m));
	return rc;
}
