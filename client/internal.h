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

/* Replies are read by whoever holds the read role: a caller waiting for its own reply
 * reads it itself (no thread hand-off on the round trip); the watcher thread takes the
 * role only when no call has run for a while, so that the end of the session is seen
 * while the client is idle. */
struct client {
	struct client_endpoint ep;
	int fd; /* non-blocking once connected */
	int event_fd;
	uint64_t features;
	int timeout_ms;
	pthread_t watcher;
	bool watcher_started;
	atomic_uint next_id;

	pthread_mutex_t send_lock;
	pthread_mutex_t lock; /* everything below */
	struct pending_call *pending;
	bool ended;
	struct hm_err end_err;
	bool reading;			  /* a thread holds the read role */
	struct proto_frame_reader frames; /* the frame being read, by the role's holder */
	struct hm_spin reply_spin;	  /* of the role's holder */
	int64_t last_call_ms;		  /* when a call last ended (hm_now_ms) */
	bool stopping;			  /* client_close: the watcher returns */
	pthread_cond_t watcher_cond;	  /* stopping was set */

	/* incoming.c: INCOMING_CONNECTION events go to this, on whichever thread reads */
	client_incoming_fn incoming_fn; /* under lock */
	void *incoming_arg;
};

/* ---- client.c ---- */
/* A stream connection: dial the agent again and claim token (STREAM_HELLO). */
int client_open_stream(struct client *c, const uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);
/* The same for a TCP token, where the agent may hand the pod's socket over instead
 * (PROTO_FEAT_TCP_FD): *handed_off says which of the two the fd is. */
int client_open_stream_handoff(struct client *c, const uint8_t token[PROTO_TOKEN_LEN],
			       bool *handed_off, struct hm_err *err);

/* ---- incoming.c ---- */
/* An event of the control connection other than SESSION_ENDED: true when handled.
 * Call with c->lock held (the frame router does). */
bool client_incoming_event(struct client *c, const struct proto_msg *m);

#endif
