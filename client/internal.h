/* Interfaces between the files of the client module. Not for other modules: they use
 * client/client.h. */
#ifndef HERMIT_CLIENT_INTERNAL_H
#define HERMIT_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "client/client.h"

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
};

/* ---- client.c ---- */
/* A stream connection: dial the agent again and claim token (STREAM_HELLO). */
int client_open_stream(struct client *c, const uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);
/* The same for a TCP token, where the agent may hand the pod's socket over instead
 * (PROTO_FEAT_TCP_FD): *handed_off says which of the two the fd is. */
int client_open_stream_handoff(struct client *c, const uint8_t token[PROTO_TOKEN_LEN],
			       bool *handed_off, struct hm_err *err);

#endif
