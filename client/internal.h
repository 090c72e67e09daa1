/* Interfaces between the files of the client module. Not for other modules: they use
 * client/client.h. */
#ifndef HERMIT_CLIENT_INTERNAL_H
#define HERMIT_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "client/client.h"

#define STREAM_FRAME_GRACE_MS 5000 /* a stream frame that started arriving completes by then */

struct pending_call {
	struct pending_call *next;
	uint32_t id;
	bool done;
	struct proto_msg reply;
	pthread_cond_t cond;
};

struct client {
	struct client_endpoint ep;
	int fd;
	int event_fd;
	uint64_t features;
	int timeout_ms;
	pthread_t reader;
	bool reader_started;
	atomic_uint next_id;

	pthread_mutex_t send_lock;
	pthread_mutex_t lock; /* pending, ended, end_err */
	struct pending_call *pending;
	bool ended;
	struct hm_err end_err;

	/* incoming.c: INCOMING_CONNECTION events go to this, on the reader thread */
	client_incoming_fn incoming_fn; /* under lock */
	void *incoming_arg;
};

/* ---- client.c ---- */
/* A stream connection: dial the agent again and claim token (STREAM_HELLO). */
int client_open_stream(struct client *c, const uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);

/* ---- incoming.c ---- */
/* An event of the control connection other than SESSION_ENDED: true when handled. */
bool client_incoming_event(struct client *c, const struct proto_msg *m);

#endif
