/* client: the client library of trace-agent, hermit's node agent (agent/). trace-run,
 * `trace-agent status` and the tests use it to talk to an agent (over its unix socket,
 * its TCP address or another transport): handshake with the auth token, open a session
 * on a target (pod/NAME, pid/N, container/ID), then read the target's environment and
 * files and open connections from its network.
 *
 * A client is one control connection. Its calls are thread-safe and may run
 * concurrently: each request gets its own id and a background thread routes replies.
 * Every fallible call returns < 0 and fills err; when the agent answered with an error,
 * err->code is the errno it sent (ENOENT for a missing file, ESRCH when the target is
 * gone...), so a tracer can hand it to the program unchanged.
 *
 * Bulk bytes travel on separate stream connections (see proto/proto.h): a connected
 * TCP stream from client_tcp_connect is a plain fd carrying the raw bytes of the
 * pod's connection; a UDP stream carries one UDP_DATAGRAM frame per datagram
 * (client_udp_send / client_udp_recv). */
#ifndef HERMIT_CLIENT_H
#define HERMIT_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "proto/proto.h"
#include "util/util.h"

/* the agent's defaults, PROTO_DEFAULT_AGENT_UNIX and PROTO_DEFAULT_TOKEN_FILE, are in
 * proto/proto.h: the server uses them too */
#define CLIENT_DEFAULT_TIMEOUT_MS 30000

/* ---- where the agent is ----
 * An endpoint is an address and the transport that dials it. unix and TCP are here; a
 * transport of another module (a Kubernetes port-forward) fills its own transport and
 * keeps its state behind ctx. The control connection and every stream connection are
 * dialed the same way. */
struct client_endpoint;
struct client_transport {
	const char *name; /* "unix", "tcp" */
	/* A connected, blocking, O_CLOEXEC stream socket (or any such fd) to the agent,
	 * nothing sent yet; < 0 with err (EACCES when the caller may not connect) */
	int (*dial)(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err);
	/* "unix:/run/hermit/agent.sock", "127.0.0.1:7070": for messages */
	void (*describe)(const struct client_endpoint *ep, char *buf, size_t len);
};
extern const struct client_transport client_transport_unix, client_transport_tcp;
struct client_endpoint {
	const struct client_transport *transport;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* unix */
	char host[256];						/* tcp */
	char port[8];
	void *ctx; /* another transport's own state */
};
/* "unix:PATH", "/abs/path" or "./rel/path" (unix); "HOST:PORT", "[V6]:PORT" (TCP). */
int client_endpoint_parse(const char *spec, struct client_endpoint *out, struct hm_err *err);
/* A unix socket path as it is, without a prefix or a leading '/' or "./". */
int client_endpoint_unix(const char *path, struct client_endpoint *out, struct hm_err *err);
/* "unix:/run/hermit/agent.sock", "127.0.0.1:7070" */
const char *client_endpoint_str(const struct client_endpoint *ep, char *buf, size_t len);
/* Dial through the endpoint's transport. */
int client_endpoint_dial(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err);

/* Read an auth token file: its first line, without surrounding blanks. */
int client_token_load(const char *path, char *out, size_t outlen, struct hm_err *err);

struct client_opts {
	const char *client_name;   /* for the agent's logs; NULL: "hermit-client" */
	uint64_t disable_features; /* PROTO_FEAT_* not to ask for (default: all supported) */
	int timeout_ms;		   /* per request; 0: CLIENT_DEFAULT_TIMEOUT_MS; < 0: none */
};

struct client;
/* Connect and authenticate. A rejected token fails with err->code EACCES. opts may be
 * NULL. */
int client_connect(const struct client_endpoint *ep, const char *token,
		   const struct client_opts *opts, struct client **out, struct hm_err *err);
/* Close the connection: the agent ends the session and releases what it held. No call
 * may be running in another thread (client_shutdown first makes them fail). Stream
 * fds already returned stay open and are the caller's. */
void client_close(struct client *c);
/* client_close on scope exit: `client_cleanup_close struct client *c = NULL;` */
void client_closep(struct client **c);
#define client_cleanup_close __attribute__((cleanup(client_closep)))
/* End the connection now: running and later calls fail with ECONNRESET. */
void client_shutdown(struct client *c);
uint64_t client_features(const struct client *c); /* agreed PROTO_FEAT_* */
/* Readable (poll) once the session or the connection has ended; do not close it. */
int client_event_fd(const struct client *c);
/* True once the session or connection ended; *why (may be NULL) says how: err->code is
 * ESRCH when the target exited, ESHUTDOWN when the agent stopped. */
bool client_ended(struct client *c, struct hm_err *why);

/* Send any request and wait for its reply (reply->type is the request's reply type;
 * release it with proto_msg_free). An ERROR reply fails with its errno. timeout_ms 0:
 * the client's default. */
int client_call(struct client *c, const struct proto_msg *req, struct proto_msg *reply,
		int timeout_ms, struct hm_err *err);

int client_ping(struct client *c, struct hm_err *err);

struct client_status {
	char version[PROTO_NAME_MAX];
	uint64_t uptime_ms;
	uint32_t sessions, streams;
	uint64_t requests, errors, bytes_in, bytes_out;
	unsigned nbudgets;				 /* 0: an agent without budgets */
	struct proto_budget budgets[PROTO_BUDGET_COUNT]; /* by enum proto_budget_kind */
	/* incoming traffic; has_incoming false: an agent without it */
	bool has_incoming;
	uint32_t subscriptions;
	uint64_t mirrored, mirror_lost, mirror_bytes, stolen, passed_to_target;
	/* has_kernel_relay false: an agent without one */
	bool has_kernel_relay, kernel_relay_on;
	uint32_t kernel_streams; /* of streams, moved by the kernel */
};
int client_status(struct client *c, struct client_status *out, struct hm_err *err);
void client_status_print(FILE *f, const struct client_status *s);

/* ---- session ---- */
struct client_session_info {
	uint64_t session_id;
	pid_t pid;
	char description[PROTO_NAME_MAX];
};
/* "pod/web", "pid/1234", "container/3f4e..." (one session per client). */
int client_session_open(struct client *c, const char *target, struct client_session_info *out,
			struct hm_err *err);

/* The target's environment: a NULL-terminated array of "KEY=VALUE" strings in one
 * allocation; free(*vars) releases it. */
int client_env(struct client *c, char ***vars, size_t *count, struct hm_err *err);

/* ---- files: paths are absolute, resolved inside the target's root ---- */
struct client_file_content {
	struct proto_stat st;
	void *data; /* malloc'ed (never NULL on success, even for 0 bytes) */
	uint64_t size;
};
/* Whole content of a regular file; flags PROTO_READ_*; max_size: larger files fail with
 * EFBIG (0: no limit of the client's). Big files come over a stream connection. */
int client_read_file(struct client *c, const char *path, uint32_t flags, uint64_t max_size,
		     struct client_file_content *out, struct hm_err *err);
void client_file_content_release(struct client_file_content *fc);
/* The same, written to dst_fd (e.g. a memfd) at its current offset. */
int client_read_file_fd(struct client *c, const char *path, uint32_t flags, uint64_t max_size,
			int dst_fd, struct proto_stat *st, uint64_t *size, struct hm_err *err);
/* Write size bytes at offset (PROTO_WRITE_* flags, mode for CREATE); contents larger
 * than PROTO_INLINE_MAX go in several requests. */
int client_write_file(struct client *c, const char *path, uint32_t flags, uint32_t mode,
		      uint64_t offset, const void *data, size_t size,
		      struct proto_file_write_reply *out, struct hm_err *err);
/* flags PROTO_STAT_NOFOLLOW for lstat */
int client_stat(struct client *c, const char *path, uint32_t flags, struct proto_stat *out,
		struct hm_err *err);
/* mode PROTO_ACCESS_*, flags PROTO_ACCESS_EACCESS / _NOFOLLOW */
int client_access(struct client *c, const char *path, uint32_t mode, uint32_t flags,
		  struct hm_err *err);
/* NUL-terminated; ENAMETOOLONG if it does not fit buflen */
int client_readlink(struct client *c, const char *path, char *buf, size_t buflen,
		    struct hm_err *err);
struct client_dirent {
	uint64_t ino;
	uint8_t type; /* DT_* */
	const char *name;
};
/* Entries in one allocation: free(*entries) releases them and their names. */
int client_readdir(struct client *c, const char *path, struct client_dirent **entries,
		   size_t *count, struct hm_err *err);
int client_mkdir(struct client *c, const char *path, uint32_t mode, struct hm_err *err);
/* flags PROTO_UNLINK_DIR for rmdir */
int client_unlink(struct client *c, const char *path, uint32_t flags, struct hm_err *err);
int client_rename(struct client *c, const char *from, const char *to, uint32_t flags,
		  struct hm_err *err);
int client_statfs(struct client *c, const char *path, struct proto_statfs *out, struct hm_err *err);

/* ---- outgoing traffic from the target's network ---- */
/* Connect to dst from the pod (timeout_ms 0: the agent's default). Returns a connected
 * O_CLOEXEC stream fd that carries the connection's raw bytes from here on; *local (may
 * be NULL) gets the address the pod's socket got. From a unix agent that hands sockets
 * off (PROTO_FEAT_TCP_FD) the fd is the pod's connected socket itself. */
int client_tcp_connect(struct client *c, const struct proto_addr *dst, uint32_t timeout_ms,
		       struct proto_addr *local, struct hm_err *err);
/* The same, saying which fd it is: on a unix agent that agreed PROTO_FEAT_TCP_FD the
 * pod's socket itself (*pod_socket true: no relay; getsockname and getpeername are the
 * pod's), otherwise a stream connection to the agent. Blocking either way. */
int client_tcp_connect_handoff(struct client *c, const struct proto_addr *dst, uint32_t timeout_ms,
			       struct proto_addr *local, bool *pod_socket, struct hm_err *err);
/* The same connect, without opening the stream: the one-time token for a STREAM_HELLO
 * the caller sends on a connection of its own to the agent's address (a socket it
 * wants to carry the pod's bytes itself, with no relay in between). The token expires
 * when unused, like every stream token. */
int client_tcp_connect_token(struct client *c, const struct proto_addr *dst, uint32_t timeout_ms,
			     uint8_t token[PROTO_TOKEN_LEN], struct proto_addr *local,
			     struct hm_err *err);
/* A UDP socket in the pod (family PROTO_AF_INET or _INET6). Returns the stream fd for
 * client_udp_send / client_udp_recv; *local (may be NULL) gets the pod-side address. */
int client_udp_open(struct client *c, uint8_t family, struct proto_addr *local, struct hm_err *err);
/* One datagram to dst. Not safe for concurrent senders on the same fd. */
int client_udp_send(int stream_fd, const struct proto_addr *dst, const void *data, size_t len,
		    struct hm_err *err);
/* One datagram and its real source; returns its length (truncated to cap, like recv).
 * timeout_ms < 0 waits forever; ETIMEDOUT; err->code 0 when the agent closed the stream. */
ssize_t client_udp_recv(int stream_fd, struct proto_addr *src, void *buf, size_t cap,
			int timeout_ms, struct hm_err *err);

/* ---- incoming traffic: the target's connections to a port, mirrored or stolen ----
 * Each connection the agent delivers is an event naming a stream token; the callback
 * runs on the thread reading the connection (a caller or the watcher) with the client's lock held
 * and must not block or call the client (hand the event to a thread of yours); once
 * client_incoming_set_handler returns, the previous handler runs no more. The event points into a
 * frame freed after the call: copy what you keep. Set the callback before the first subscription.
 */
typedef void (*client_incoming_fn)(void *arg, const struct proto_incoming_connection *ev);
void client_incoming_set_handler(struct client *c, client_incoming_fn fn, void *arg);
/* Subscribe to the target's TCP port in mode (PROTO_INCOMING_MIRROR / _STEAL), flags
 * PROTO_INCOMING_FLUSH / _CONCURRENT, http_filter: NULL or "" for none, else mirrord's
 * http_filter object as JSON text (steal only). *subscription gets the id; note (may be
 * NULL) the agent's one line for the user ("" when none). A refused steal fails with
 * EADDRINUSE and the agent's message naming who holds the port. */
int client_incoming_subscribe(struct client *c, uint16_t port, uint8_t mode, uint32_t flags,
			      const char *http_filter, uint32_t *subscription, char *note,
			      size_t note_len, struct hm_err *err);
int client_incoming_unsubscribe(struct client *c, uint32_t subscription, struct hm_err *err);
/* Claim a delivered connection's stream (STREAM_HELLO with ev->token): an O_CLOEXEC fd
 * carrying the connection's raw bytes both ways (steal), or INCOMING_DATA frames ending
 * with INCOMING_END (mirror; client_incoming_read). With pod_socket (steal) a unix agent
 * that agreed PROTO_FEAT_TCP_FD may pass the pod's accepted socket itself instead:
 * *pod_socket says which the fd is. */
int client_incoming_open(struct client *c, const uint8_t token[PROTO_TOKEN_LEN], bool *pod_socket,
			 struct hm_err *err);
/* One frame of a mirror stream: INCOMING_DATA (returns its length, *data points into
 * *m) or INCOMING_END (returns 0, *end_error its error). Release m with proto_msg_free.
 * timeout_ms < 0 waits forever. */
ssize_t client_incoming_read(int stream_fd, struct proto_msg *m, const void **data, int *end_error,
			     int timeout_ms, struct hm_err *err);

#endif
