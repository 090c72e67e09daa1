/* Interfaces between the files of the agent module (trace-agent). Not for other
 * modules: they use agent/agent.h, the client library. Each section is owned by the
 * file it names; keep sections additive. */
#ifndef HERMIT_AGENT_INTERNAL_H
#define HERMIT_AGENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "agent/agent.h"
#include "proto/proto.h"
#include "util/util.h"

/* ---- target.c: what a session serves ----
 * A resolved target: its pid and pidfd (to notice exit), an O_PATH fd of
 * /proc/PID/root (all file access is openat2(RESOLVE_IN_ROOT) below it), and a worker
 * thread that setns()'d into the target's network namespace once: every socket for the
 * target is created there (a socket stays in the netns it was created in, so the
 * caller can use it from any thread afterwards). Shared by the sessions that name the
 * same pid; refcounted. */
struct agent_target;
int agent_target_resolve(const struct proto_target *t, struct agent_target **out,
			 struct hm_err *err);
void agent_target_put(struct agent_target *t);
pid_t agent_target_pid(const struct agent_target *t);
int agent_target_pidfd(const struct agent_target *t);   /* POLLIN when the target exits */
int agent_target_root_fd(const struct agent_target *t); /* O_PATH dir fd of its root */
const char *agent_target_describe(const struct agent_target *t);
/* socket(domain, type|SOCK_CLOEXEC, protocol) inside the target's netns. */
int agent_target_socket(struct agent_target *t, int domain, int type, int protocol,
			struct hm_err *err);

/* ---- files.c, files_write.c: file requests, always below root_fd ----
 * Every function resolves paths with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
 * relative to root_fd, so "..", absolute and relative symlinks never leave the root and
 * /proc magic links fail with ELOOP. Fill the reply message (reply->type set by the
 * caller) or return < 0 with err->code the errno to send back; err->msg names only the
 * client's own path. Stateless and thread-safe. Checks are done as the agent (root),
 * which is the intended power inside the target's root. Creation modes are applied as
 * sent (the client already applied the app's umask), minus the agent's umask: the
 * agent's main sets umask(0). Files and directories created belong to the agent's
 * uid/gid. */
/* Content of a regular file. Inline (size <= PROTO_INLINE_MAX): data holds exactly size
 * bytes (malloc'ed, never NULL, also for an empty file) and fd is -1. Stream: data is
 * NULL and fd (O_RDONLY|O_CLOEXEC, at offset 0) is owned by the caller, who sends size
 * bytes of it. size is what was read, which differs from st.size for procfs/sysfs files. */
struct agent_file_read_result {
	struct proto_stat st;
	int fd;
	void *data;
	uint64_t size;
};
/* Only regular files (EISDIR, ELOOP for a symlink under NOFOLLOW, EINVAL for FIFOs,
 * sockets and devices, which are never opened). cap is the agent's limit and
 * req->max_size the client's; 0 means none; the smaller one applies: EFBIG above. */
int agent_file_read(int root_fd, const struct proto_file_read *req, uint64_t cap,
		    struct agent_file_read_result *out, struct hm_err *err);
int agent_file_write(int root_fd, const struct proto_file_write *req,
		     struct proto_file_write_reply *out, struct hm_err *err);
int agent_file_stat(int root_fd, const struct proto_path_req *req, struct proto_stat *out,
		    struct hm_err *err);
/* faccessat2(AT_EMPTY_PATH) on the resolved inode: root's view, EROFS on read-only
 * mounts, X only with an x bit. */
int agent_file_access(int root_fd, const struct proto_file_access *req, struct hm_err *err);
/* out->target points into buf (PROTO_PATH_MAX + 1 bytes is always enough). EINVAL for
 * a non-link; ELOOP for procfs links, whose text the kernel makes up for the reader
 * (the agent), not for the target. */
int agent_file_readlink(int root_fd, const struct proto_path_req *req, char *buf, size_t buflen,
			struct proto_readlink_reply *out, struct hm_err *err);
/* out->entries and names are malloc'ed into *storage; free(*storage) releases them */
int agent_file_readdir(int root_fd, const struct proto_path_req *req,
		       struct proto_readdir_reply *out, void **storage, struct hm_err *err);
int agent_file_mkdir(int root_fd, const struct proto_file_mkdir *req, struct hm_err *err);
int agent_file_unlink(int root_fd, const struct proto_file_unlink *req, struct hm_err *err);
int agent_file_rename(int root_fd, const struct proto_file_rename *req, struct hm_err *err);
int agent_file_statfs(int root_fd, const struct proto_path_req *req, struct proto_statfs *out,
		      struct hm_err *err);
#define AGENT_READDIR_MAX_ENTRIES 65536 /* E2BIG above, or above PROTO_MAX_PAYLOAD encoded */
/* The one way into a target's root: openat2(root_fd, path, flags | O_CLOEXEC, mode,
 * RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS). path must be absolute. Returns the fd, or
 * < 0 with err->code the errno. */
int agent_file_open_in_root(int root_fd, const char *path, int flags, mode_t mode,
			    struct hm_err *err);
/* Shared by files*.c only. Operations without an fd form (mkdir, unlink, rename) open
 * the parent with agent_file_open_in_root and act on the final component, which is
 * never "" (except for "/"), "." or ".." when the caller acts on it, and has no '/'. */
struct agent_path_split {
	char buf[PROTO_PATH_MAX + 2];
	const char *parent;  /* "/" for a top-level name */
	const char *name;    /* "" when the path is the root itself */
	bool trailing_slash; /* "dir/": the final component must be a directory */
};
int agent_file_check_path(const char *path, struct hm_err *err);
int agent_file_split_path(const char *path, struct agent_path_split *out, struct hm_err *err);
int agent_file_open_parent(int root_fd, const struct agent_path_split *sp, struct hm_err *err);
/* A real open of the inode behind an O_PATH fd (through /proc/self/fd, the only way to
 * reopen one), so the type can be checked before anything with side effects is opened. */
int agent_file_reopen(int path_fd, int flags, struct hm_err *err);

/* ---- outgoing.c + relay.c: outgoing TCP/UDP and the byte relay ----
 * struct agent_counters (the byte counters the status endpoint reports),
 * agent_relay_create/destroy and agent_relay_add_tcp are in agent/agent.h: trace-run's
 * local proxy uses the same relay. */
/* Connect a socket made by agent_target_socket to dst (non-blocking connect, waiting
 * at most timeout_ms: 0 means 10 s, more than 120 s is cut to 120 s) and report the
 * local address the pod's side got (local may be NULL). Returns the connected fd,
 * O_NONBLOCK | O_CLOEXEC. A refused, unreachable or timed-out connect fails with
 * err->code = the errno the app would have got (ECONNREFUSED, ETIMEDOUT...). Blocks
 * the calling thread up to the timeout. */
int agent_outgoing_tcp_connect(struct agent_target *t, const struct proto_addr *dst,
			       uint32_t timeout_ms, struct proto_addr *local, struct hm_err *err);
/* A UDP socket in the target's netns (family PROTO_AF_*), bound to the wildcard address
 * and an ephemeral port; O_NONBLOCK | O_CLOEXEC. An AF_INET6 socket is dual-stack. */
int agent_outgoing_udp_open(struct agent_target *t, uint8_t family, struct proto_addr *local,
			    struct hm_err *err);
/* The relay: one thread with an epoll loop that moves bytes between pairs of fds with
 * splice() through pipes (no user-space copy), and frames UDP datagrams. Per stream it
 * keeps ~200 bytes and its own fds; pipes are pooled and held only while bytes are in
 * flight (at most 32 idle pipes are kept for reuse).
 * The add functions may be called from any thread. They take ownership of the fds in
 * every case: on success the relay closes them when the stream is done, on failure
 * (ENOMEM, or ESHUTDOWN once destroy began) they are closed before returning. The fds
 * are switched to O_NONBLOCK.
 * TCP: EOF from one side becomes shutdown(SHUT_WR) on the other once the bytes before it
 * are delivered; the pair is closed when both directions saw EOF. A reset or error on
 * one side resets the other (close with SO_LINGER 0), so the app sees ECONNRESET where
 * the pod would have.
 * Counters: bytes_out counts bytes from the client delivered to the pod side, bytes_in
 * bytes delivered to the client; streams is incremented by a successful add and
 * decremented when that stream is closed. */
/* client_fd carries UDP_DATAGRAM frames (id 0) both ways; udp_fd is the pod-side
 * socket. Each frame from the client is one sendto() to its peer (a v4 peer on a v6
 * socket goes out v4-mapped; an unsendable datagram is dropped, as UDP may); each
 * datagram received is one frame with its real source. Any other frame, a malformed
 * one or the client's EOF closes the stream. */
int agent_relay_add_udp(struct agent_relay *r, int client_fd, int udp_fd, struct hm_err *err);
/* Send exactly size bytes of file_fd from offset 0 to client_fd (sendfile), then close
 * both. A file shorter than size resets client_fd, so a short stream never looks
 * complete. */
int agent_relay_add_file(struct agent_relay *r, int client_fd, int file_fd, uint64_t size,
			 struct hm_err *err);

/* ---- target.c (additions) ---- */
/* False once the target process has exited (its pidfd turned readable). Check after
 * reading anything through /proc/PID so a recycled pid is never served. */
bool agent_target_alive(const struct agent_target *t);
/* Number of targets currently resolved, for the status report. */
unsigned agent_target_count(void);

/* ---- env.c: the target's environment ---- */
struct agent_env {
	char *buf;          /* /proc/PID/environ content; vars point into it */
	const char **vars;  /* "KEY=VALUE" entries, NUL-free, each <= PROTO_ENV_ENTRY_MAX */
	uint32_t count;
};
#define AGENT_ENV_MAX (4u << 20) /* an environment larger than this is refused (E2BIG) */
int agent_env_read(const struct agent_target *t, struct agent_env *out, struct hm_err *err);
void agent_env_release(struct agent_env *e);

/* ---- streams.c: one-time stream tokens ----
 * A reply that opens a stream (TCP_CONNECT, UDP_OPEN, FILE_READ above the inline limit)
 * parks its object here under a fresh random token; the client's STREAM_HELLO claims it
 * exactly once. Unclaimed objects are closed when they expire or when the session that
 * asked for them ends. */
enum agent_stream_kind { AGENT_STREAM_TCP = 1, AGENT_STREAM_UDP, AGENT_STREAM_FILE };
struct agent_pending_stream {
	enum agent_stream_kind kind;
	int fd;              /* TCP or UDP socket in the pod's netns, or the file */
	uint64_t size;       /* FILE: bytes to send */
	uint64_t session_id; /* the session that asked */
};
#define AGENT_STREAM_TTL_MS 30000
#define AGENT_STREAMS_PER_SESSION 1024 /* unclaimed tokens one session may hold */
struct agent_streams;
int agent_streams_create(unsigned ttl_ms, struct agent_streams **out, struct hm_err *err);
void agent_streams_destroy(struct agent_streams *s); /* closes every unclaimed fd */
/* Park fd (owned from here on, closed on failure too) and fill token. */
int agent_streams_add(struct agent_streams *s, uint64_t session_id, enum agent_stream_kind kind,
		      int fd, uint64_t size, uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);
/* Take the object a token names: 0 and *out (the caller owns out->fd), or -1 when the
 * token is unknown, used or expired. */
int agent_streams_claim(struct agent_streams *s, const uint8_t token[PROTO_TOKEN_LEN],
			struct agent_pending_stream *out);
void agent_streams_drop_session(struct agent_streams *s, uint64_t session_id);
void agent_streams_expire(struct agent_streams *s);
size_t agent_streams_pending(struct agent_streams *s);

/* ---- status.c: what `trace-agent status` reports ---- */
struct agent_stats {
	struct agent_counters relay;   /* bytes and open streams, updated by the relay */
	atomic_uint_fast64_t requests; /* requests answered on control connections */
	atomic_uint_fast64_t errors;   /* ERROR replies, rejected peers, protocol errors */
	atomic_uint_fast64_t sessions; /* open */
	atomic_uint_fast64_t connections; /* open control and stream connections */
	atomic_uint_fast64_t auth_failures;
	atomic_uint_fast64_t ctl_bytes_in;  /* control frames to clients */
	atomic_uint_fast64_t ctl_bytes_out; /* control frames from clients */
	uint64_t started_ms;                /* CLOCK_MONOTONIC */
};
void agent_stats_init(struct agent_stats *s);
uint64_t agent_now_ms(void); /* CLOCK_MONOTONIC */
/* version must outlive out */
void agent_stats_fill(struct agent_stats *s, const char *version, size_t pending_streams,
		      struct proto_status_reply *out);

/* ---- peer.c: who is connected, and which pids it may target ---- */
struct agent_peer {
	bool is_unix;
	bool has_cred; /* unix: SO_PEERCRED worked */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	uint8_t addr[16]; /* TCP: the source address, without the port */
	uint8_t addr_len; /* 4 or 16 */
	char desc[128];   /* "unix pid 12 uid 0", "127.0.0.1:4321": for the logs */
};
/* Right after accept4 (SO_PEERCRED gives the connecting process's credentials). */
void agent_peer_from_accept(int fd, bool is_unix, const struct sockaddr_storage *ss,
			    struct agent_peer *out);
/* Same uid (unix) or same source address (TCP): one peer for the per-peer limits. */
bool agent_peer_same_source(const struct agent_peer *a, const struct agent_peer *b);
/* May this peer open a session on process pid? Root (unix uid 0) may; another unix peer
 * only on a process all of whose uids (real, effective, saved, fs) are its own; a TCP
 * peer never (its user is unknown). allow_any_pid: everyone may (token only). Fails with
 * EPERM and a message saying why; ESRCH when the process is gone. */
int agent_peer_may_target_pid(const struct agent_peer *peer, pid_t pid, bool allow_any_pid,
			      struct hm_err *err);

/* ---- admission.c: accepted connections until their first frame ----
 * Owned by the server's main thread (not thread-safe). Pending connections have no
 * thread; their first whole frame (at most PROTO_HELLO_MAX_PAYLOAD) goes to admitted(),
 * which takes the fd and the frame's payload. See admission.c for the limits. */
struct agent_admission_config {
	int deadline_ms;            /* for the whole first frame, from accept */
	unsigned max_per_transport; /* pending unix connections; pending TCP ones */
	unsigned max_per_peer;      /* pending connections of one uid / source address */
	struct agent_stats *stats;  /* errors counted here */
	void (*admitted)(void *arg, int fd, uint64_t id, const struct agent_peer *peer,
			 struct proto_frame *first);
	void *arg;
};
struct agent_admission;
int agent_admission_create(const struct agent_admission_config *cfg, struct agent_admission **out,
			   struct hm_err *err);
/* Closes every pending connection. */
void agent_admission_destroy(struct agent_admission *a);
/* Readable (poll) when a pending connection has something to read. */
int agent_admission_fd(const struct agent_admission *a);
/* A freshly accepted connection (fd owned from here on). */
void agent_admission_add(struct agent_admission *a, int fd, uint64_t id,
			 const struct agent_peer *peer);
/* Read what arrived, hand over whole first frames, close expired connections. Returns
 * the ms until the next deadline, -1 when nothing is pending. */
int agent_admission_service(struct agent_admission *a);
unsigned agent_admission_pending(const struct agent_admission *a, bool is_unix);

/* ---- server.c: listeners, connections, sessions ---- */
#define AGENT_VERSION "0.1"
#define AGENT_SERVER_NAME "trace-agent " AGENT_VERSION
struct agent_server_config {
	const char *unix_path;   /* NULL: no unix listener */
	const char *listen_addr; /* "ADDR:PORT" / "[V6]:PORT"; NULL: no TCP listener */
	const char *token;       /* the auth token every control connection presents */
	uint64_t max_file_size;  /* FILE_READ cap */
	int handshake_timeout_ms; /* for the first frame, from accept */
	gid_t unix_gid;           /* group of the unix socket (mode 0660) */
	bool allow_any_pid;       /* pid/N for every token holder (else see peer.c) */
	bool insecure_listen;     /* --listen may be a non-loopback address */
	unsigned stream_ttl_ms;
	int stop_fd;             /* readable (e.g. a signalfd) -> graceful shutdown */
};
/* Serve until stop_fd turns readable, then end every session, release everything and
 * remove the unix socket. */
int agent_server_run(const struct agent_server_config *cfg, struct hm_err *err);

#endif
