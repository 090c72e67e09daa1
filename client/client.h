/* agent: the client library of trace-agent, hermit's node agent. trace-run and the
 * tests use it to talk to an agent over its unix socket or TCP address: handshake with
 * the auth token, open a session on a target (pod/NAME, pid/N, container/ID), then
 * read the target's environment and files and open connections from its network.
 *
 * A client is one control connection. Its calls are thread-safe and may run
 * concurrently: each request gets its own id and a background thread routes replies.
 * Every fallible call returns < 0 and fills err; when the agent answered with an error,
 * err->code is the errno it sent (ENOENT for a missing file, ESRCH when the target is
 * gone...), so a tracer can hand it to the program unchanged.
 *
 * Bulk bytes travel on separate stream connections (see proto/proto.h): a connected
 * TCP stream from agent_client_tcp_connect is a plain fd carrying the raw bytes of the
 * pod's connection; a UDP stream carries one UDP_DATAGRAM frame per datagram
 * (agent_udp_send / agent_udp_recv). */
#ifndef HERMIT_AGENT_H
#define HERMIT_AGENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "proto/proto.h"
#include "util/util.h"

#define AGENT_DEFAULT_UNIX "/run/hermit/agent.sock"
#define AGENT_DEFAULT_TOKEN_FILE "/run/hermit/agent.token"
#define AGENT_DEFAULT_TIMEOUT_MS 30000

/* Where the agent listens: a unix socket path or a TCP host and port. */
struct agent_endpoint {
	bool is_unix;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char host[256];
	char port[8];
};
/* "unix:PATH", "/abs/path" or "./rel/path" (unix); "HOST:PORT", "[V6]:PORT" (TCP). */
int agent_endpoint_parse(const char *spec, struct agent_endpoint *out, struct hm_err *err);
/* "unix:/run/hermit/agent.sock", "127.0.0.1:7070" */
const char *agent_endpoint_str(const struct agent_endpoint *ep, char *buf, size_t len);
/* A connected, blocking, O_CLOEXEC socket to the agent, nothing sent yet. */
int agent_endpoint_dial(const struct agent_endpoint *ep, int timeout_ms, struct hm_err *err);

/* Read an auth token file: its first line, without surrounding blanks. */
int agent_token_load(const char *path, char *out, size_t outlen, struct hm_err *err);

struct agent_client_opts {
	const char *client_name;   /* for the agent's logs; NULL: "hermit-client" */
	uint64_t disable_features; /* PROTO_FEAT_* not to ask for (default: all supported) */
	int timeout_ms;            /* per request; 0: AGENT_DEFAULT_TIMEOUT_MS; < 0: none */
};

struct agent_client;
/* Connect and authenticate. A rejected token fails with err->code EACCES. opts may be
 * NULL. */
int agent_client_connect(const struct agent_endpoint *ep, const char *token,
			 const struct agent_client_opts *opts, struct agent_client **out,
			 struct hm_err *err);
/* Close the connection: the agent ends the session and releases what it held. No call
 * may be running in another thread (agent_client_shutdown first makes them fail). Stream
 * fds already returned stay open and are the caller's. */
void agent_client_close(struct agent_client *c);
/* End the connection now: running and later calls fail with ECONNRESET. */
void agent_client_shutdown(struct agent_client *c);
uint64_t agent_client_features(const struct agent_client *c); /* agreed PROTO_FEAT_* */
/* Readable (poll) once the session or the connection has ended; do not close it. */
int agent_client_event_fd(const struct agent_client *c);
/* True once the session or connection ended; *why (may be NULL) says how: err->code is
 * ESRCH when the target exited, ESHUTDOWN when the agent stopped. */
bool agent_client_ended(struct agent_client *c, struct hm_err *why);

/* Send any request and wait for its reply (reply->type is the request's reply type;
 * release it with proto_msg_free). An ERROR reply fails with its errno. timeout_ms 0:
 * the client's default. */
int agent_client_call(struct agent_client *c, const struct proto_msg *req,
		      struct proto_msg *reply, int timeout_ms, struct hm_err *err);

int agent_client_ping(struct agent_client *c, struct hm_err *err);

struct agent_status {
	char version[PROTO_NAME_MAX];
	uint64_t uptime_ms;
	uint32_t sessions, streams;
	uint64_t requests, errors, bytes_in, bytes_out;
	unsigned nbudgets; /* 0: an agent without budgets */
	struct proto_budget budgets[PROTO_BUDGET_COUNT]; /* by enum proto_budget_kind */
};
int agent_client_status(struct agent_client *c, struct agent_status *out, struct hm_err *err);
void agent_status_print(FILE *f, const struct agent_status *s);

/* ---- session ---- */
struct agent_session_info {
	uint64_t session_id;
	pid_t pid;
	char description[PROTO_NAME_MAX];
};
/* "pod/web", "pid/1234", "container/3f4e..." (one session per client). */
int agent_client_session_open(struct agent_client *c, const char *target,
			      struct agent_session_info *out, struct hm_err *err);

/* The target's environment: a NULL-terminated array of "KEY=VALUE" strings in one
 * allocation; free(*vars) releases it. */
int agent_client_env(struct agent_client *c, char ***vars, size_t *count, struct hm_err *err);

/* ---- files: paths are absolute, resolved inside the target's root ---- */
struct agent_file_content {
	struct proto_stat st;
	void *data; /* malloc'ed (never NULL on success, even for 0 bytes) */
	uint64_t size;
};
/* Whole content of a regular file; flags PROTO_READ_*; max_size: larger files fail with
 * EFBIG (0: no limit of the client's). Big files come over a stream connection. */
int agent_client_read_file(struct agent_client *c, const char *path, uint32_t flags,
			   uint64_t max_size, struct agent_file_content *out, struct hm_err *err);
void agent_file_content_release(struct agent_file_content *fc);
/* The same, written to dst_fd (e.g. a memfd) at its current offset. */
int agent_client_read_file_fd(struct agent_client *c, const char *path, uint32_t flags,
			      uint64_t max_size, int dst_fd, struct proto_stat *st, uint64_t *size,
			      struct hm_err *err);
/* Write size bytes at offset (PROTO_WRITE_* flags, mode for CREATE); contents larger
 * than PROTO_INLINE_MAX go in several requests. */
int agent_client_write_file(struct agent_client *c, const char *path, uint32_t flags,
			    uint32_t mode, uint64_t offset, const void *data, size_t size,
			    struct proto_file_write_reply *out, struct hm_err *err);
/* flags PROTO_STAT_NOFOLLOW for lstat */
int agent_client_stat(struct agent_client *c, const char *path, uint32_t flags,
		      struct proto_stat *out, struct hm_err *err);
/* mode PROTO_ACCESS_*, flags PROTO_ACCESS_EACCESS / _NOFOLLOW */
int agent_client_access(struct agent_client *c, const char *path, uint32_t mode,
			uint32_t flags, struct hm_err *err);
/* NUL-terminated; ENAMETOOLONG if it does not fit buflen */
int agent_client_readlink(struct agent_client *c, const char *path, char *buf, size_t buflen,
			  struct hm_err *err);
struct agent_dirent {
	uint64_t ino;
	uint8_t type; /* DT_* */
	const char *name;
};
/* Entries in one allocation: free(*entries) releases them and their names. */
int agent_client_readdir(struct agent_client *c, const char *path, struct agent_dirent **entries,
			 size_t *count, struct hm_err *err);
int agent_client_mkdir(struct agent_client *c, const char *path, uint32_t mode,
		       struct hm_err *err);
/* flags PROTO_UNLINK_DIR for rmdir */
int agent_client_unlink(struct agent_client *c, const char *path, uint32_t flags,
			struct hm_err *err);
int agent_client_rename(struct agent_client *c, const char *from, const char *to, uint32_t flags,
			struct hm_err *err);
int agent_client_statfs(struct agent_client *c, const char *path, struct proto_statfs *out,
			struct hm_err *err);

/* ---- outgoing traffic from the target's network ---- */
/* Connect to dst from the pod (timeout_ms 0: the agent's default). Returns a connected
 * O_CLOEXEC stream fd that carries the connection's raw bytes from here on; *local (may
 * be NULL) gets the address the pod's socket got. */
int agent_client_tcp_connect(struct agent_client *c, const struct proto_addr *dst,
			     uint32_t timeout_ms, struct proto_addr *local, struct hm_err *err);
/* The same connect, without opening the stream: the one-time token for a STREAM_HELLO
 * the caller sends on a connection of its own to the agent's address (a socket it
 * wants to carry the pod's bytes itself, with no relay in between). The token expires
 * when unused, like every stream token. */
int agent_client_tcp_connect_token(struct agent_client *c, const struct proto_addr *dst,
				   uint32_t timeout_ms, uint8_t token[PROTO_TOKEN_LEN],
				   struct proto_addr *local, struct hm_err *err);
/* A UDP socket in the pod (family PROTO_AF_INET or _INET6). Returns the stream fd for
 * agent_udp_send / agent_udp_recv; *local (may be NULL) gets the pod-side address. */
int agent_client_udp_open(struct agent_client *c, uint8_t family, struct proto_addr *local,
			  struct hm_err *err);
/* One datagram to dst. Not safe for concurrent senders on the same fd. */
int agent_udp_send(int stream_fd, const struct proto_addr *dst, const void *data, size_t len,
		   struct hm_err *err);
/* One datagram and its real source; returns its length (truncated to cap, like recv).
 * timeout_ms < 0 waits forever; ETIMEDOUT; err->code 0 when the agent closed the stream. */
ssize_t agent_udp_recv(int stream_fd, struct proto_addr *src, void *buf, size_t cap,
		       int timeout_ms, struct hm_err *err);


/* ---- the splice relay (relay.c) ----
 * The agent's byte mover, also trace-run's local proxy for redirected connections: one
 * thread with an epoll loop that moves bytes between pairs of fds with splice() through
 * pipes (no user-space copy). Per stream it keeps ~200 bytes and its own fds; pipes are
 * pooled and held only while bytes are in flight (at most 32 idle pipes are kept).
 * The thread is created with the caller's signal mask: block the signals it must not
 * take (a signalfd user) around agent_relay_create. */
struct agent_counters {
	atomic_uint_fast64_t bytes_in;	/* towards the client */
	atomic_uint_fast64_t bytes_out; /* from the client */
	atomic_uint_fast64_t streams;	/* currently open */
};
struct agent_relay;
/* counters must outlive the relay. */
int agent_relay_create(struct agent_counters *counters, struct agent_relay **out,
		       struct hm_err *err);
/* Stops the thread and closes (with a reset) everything still relayed or queued. No add
 * may run concurrently with or after it. */
void agent_relay_destroy(struct agent_relay *r);
/* Relay a pair of connected stream sockets until both directions are done. May be
 * called from any thread; takes ownership of both fds in every case (closed on failure:
 * ENOMEM, or ESHUTDOWN once destroy began) and switches them to O_NONBLOCK.
 * EOF from one side becomes shutdown(SHUT_WR) on the other once the bytes before it are
 * delivered; the pair is closed when both directions saw EOF. A reset or error on one
 * side resets the other (close with SO_LINGER 0), so the app sees ECONNRESET where the
 * pod would have. */
int agent_relay_add_tcp(struct agent_relay *r, int client_fd, int remote_fd, struct hm_err *err);

#endif
