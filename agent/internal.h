/* Interfaces between the files of the agent module (trace-agent). Not for other
 * modules: agent/agent.h is the server's API. Each section is owned by the file it
 * names; keep sections additive. */
#ifndef HERMIT_AGENT_INTERNAL_H
#define HERMIT_AGENT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "agent/agent.h"
#include "proto/proto.h"
#include "relay/relay.h"
#include "util/util.h"

/* ---- target.c: what a session serves ----
 * A resolved target: its pid and pidfd (to notice exit), an O_PATH fd of
 * /proc/PID/root (all file access is openat2(RESOLVE_IN_ROOT) below it), and a worker
 * thread that setns()'d into the target's network namespace once: every socket for the
 * target is created there (a socket stays in the netns it was created in, so the
 * caller can use it from any thread afterwards). Shared by the sessions that name the
 * same pid; refcounted. */
struct agent_target;
/* containerd_state: containerd's runc v2 task directory (agent_server_config), where a
 * container/ID is looked up first; NULL or "": only the cgroup scan of /proc. */
int agent_target_resolve(const struct proto_target *t, const char *containerd_state,
			 struct agent_target **out, struct hm_err *err);
void agent_target_put(struct agent_target *t);
/* Is a container/ID target what a privileged runtime started: its own pid and mount
 * namespaces, and a user namespace that is the initial one or root's? EPERM with the
 * reason if not (then the session is held to the pid/N rules). */
int agent_target_check_container(const struct agent_target *t, struct hm_err *err);
pid_t agent_target_pid(const struct agent_target *t);
int agent_target_pidfd(const struct agent_target *t);	/* POLLIN when the target exits */
int agent_target_root_fd(const struct agent_target *t); /* O_PATH dir fd of its root */
const char *agent_target_describe(const struct agent_target *t);
/* socket(domain, type|SOCK_CLOEXEC, protocol) inside the target's netns. */
int agent_target_socket(struct agent_target *t, int domain, int type, int protocol,
			struct hm_err *err);

/* ---- target_containerd.c: container/ID through containerd's task state ----
 * The runc shim v2 layout STATE/<namespace>/<ID>/init.pid; namespace k8s.io first,
 * then the other directories of STATE. */
#define AGENT_CONTAINER_ID_MAX 128
/* Is id one plain path element a runtime could name a task by: 1 to 128 of
 * [A-Za-z0-9_.-], never containing ".."? */
bool agent_container_id_ok(const char *id);
/* len bytes of an init.pid: 1 to 7 digits, no leading zero, an optional final newline,
 * at most the kernel's pid ceiling. 0 or -1. */
int agent_parse_pid_file(const char *text, size_t len, pid_t *pid);
/* The init pid containerd's task state in state_dir records for container id, and the
 * namespace it was found in (into ns). Opened without symlinks or mount crossings
 * below state_dir. < 0 with err->code ENOENT (no such task or no state_dir), EINVAL (a
 * bad id, or a task file that is not a pid) or another errno. The pid is unverified. */
int agent_containerd_task_pid(const char *state_dir, const char *id, pid_t *pid, char *ns,
			      size_t ns_len, struct hm_err *err);

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
	uint64_t reserved; /* reply memory taken from the account: release after sending */
};
/* Only regular files (EISDIR, ELOOP for a symlink under NOFOLLOW, EINVAL for FIFOs,
 * sockets and devices, which are never opened). cap is the agent's limit and
 * req->max_size the client's; 0 means none; the smaller one applies: EFBIG above.
 * Inline content takes reply memory from account (may be NULL): a file of at least
 * AGENT_FILE_STREAM_MIN bytes comes as a stream (fd) instead when there is none
 * left, a smaller one waits for it (ENOBUFS after AGENT_BUDGET_WAIT_MS). */
#define AGENT_FILE_STREAM_MIN (64u << 10)
struct agent_budget_account;
int agent_file_read(int root_fd, const struct proto_file_read *req, uint64_t cap,
		    struct agent_budget_account *account, struct agent_file_read_result *out,
		    struct hm_err *err);
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
/* out->entries and names are malloc'ed into *storage; free(*storage) releases them.
 * The listing is measured first and its memory taken from account (may be NULL) in
 * one piece, waiting for it (ENOBUFS after AGENT_BUDGET_WAIT_MS); *reserved says how
 * much to release after sending. */
int agent_file_readdir(int root_fd, const struct proto_path_req *req,
		       struct agent_budget_account *account, struct proto_readdir_reply *out,
		       void **storage, uint64_t *reserved, struct hm_err *err);
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
int agent_file_split_path(const char *path, struct agent_path_split *out, struct hm_err *err);
int agent_file_open_parent(int root_fd, const struct agent_path_split *sp, struct hm_err *err);
/* A real open of the inode behind an O_PATH fd (through /proc/self/fd, the only way to
 * reopen one), so the type can be checked before anything with side effects is opened. */
int agent_file_reopen(int path_fd, int flags, struct hm_err *err);
/* EACCES for a file on procfs, sysfs, debugfs, tracefs, securityfs, cgroupfs, bpffs,
 * configfs, efivarfs or pstore: what such a file gives or takes depends on who opens
 * it, and the agent would open it with root's capabilities, not the target's. */
int agent_file_refuse_pseudo(int fd, const char *path, struct hm_err *err);

/* ---- outgoing.c: outgoing TCP/UDP ----
 * Their streams are relayed by relay/relay.h (struct relay_counters are the byte
 * counters the status endpoint reports). */
/* A TCP connect from the target's netns to dst, in two steps, so that one thread can
 * wait for many connects at once (connects.c). begin makes the socket (non-blocking,
 * O_CLOEXEC) and starts the connect: 0 connected, 1 in progress (wait for POLLOUT),
 * both with *fd the socket; < 0 failed. finish reports the outcome: outcome an errno
 * (0: connected; ETIMEDOUT: the caller's deadline passed), or -1 to read it from
 * SO_ERROR; fills local (the address the pod's side got; may be NULL). A refused,
 * unreachable or timed-out connect fails with err->code = the errno the app would have
 * got (ECONNREFUSED, ETIMEDOUT...). timeout_ms is only for the message. */
int agent_outgoing_tcp_begin(struct agent_target *t, const struct proto_addr *dst, int *fd,
			     struct hm_err *err);
int agent_outgoing_tcp_finish(int fd, const struct proto_addr *dst, int outcome,
			      uint32_t timeout_ms, struct proto_addr *local, struct hm_err *err);
/* The timeout that applies to a request's timeout_ms: 0 means 10 s, more than 120 s is
 * cut to 120 s. */
uint32_t agent_outgoing_timeout(uint32_t timeout_ms);
/* A UDP socket in the target's netns (family PROTO_AF_*), bound to the wildcard address
 * and an ephemeral port; O_NONBLOCK | O_CLOEXEC. An AF_INET6 socket is dual-stack. */
int agent_outgoing_udp_open(struct agent_target *t, uint8_t family, struct proto_addr *local,
			    struct hm_err *err);

/* ---- target.c (additions) ---- */
/* False once the target process has exited (its pidfd turned readable). Check after
 * reading anything through /proc/PID so a recycled pid is never served. */
bool agent_target_alive(const struct agent_target *t);

/* ---- env.c: the target's environment ---- */
struct agent_env {
	char *buf;	   /* /proc/PID/environ content; vars point into it */
	const char **vars; /* "KEY=VALUE" entries, NUL-free, each <= PROTO_ENV_ENTRY_MAX */
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
/* A handoff's receiver (agent_streams_add_handoff): fd is the client's stream
 * connection (O_NONBLOCK, O_CLOEXEC, the callee's), -1 when the token expired or its
 * session ended unclaimed. Called once, from any thread, without locks held.
 * With an fd comes release (NULL with -1): the fd keeps holding one stream of its
 * session's budget, so that what the mirror and the HTTP router hold for a session is
 * bounded by --max-session-streams; the callee keeps a copy and runs it
 * (agent_release_run) exactly once, when it closes fd, on every path. */
typedef void (*agent_stream_claimed_fn)(void *ctx, int fd, const struct relay_release *release);
/* Run a release hook once: it is cleared, so a second call does nothing. */
static inline void agent_release_run(struct relay_release *release)
{
	void (*fn)(void *) = release->fn;
	release->fn = NULL;
	if (fn)
		fn(release->arg);
}
struct agent_pending_stream {
	enum relay_kind kind;
	int fd;		     /* TCP or UDP socket in the pod's netns, or the file */
	uint64_t size;	     /* FILE: bytes to send */
	uint64_t session_id; /* the session that asked */
	/* TCP (agent_streams_add_tcp): the session's unix peer agreed PROTO_FEAT_TCP_FD,
	 * so a unix stream connection of pass_uid gets the socket itself, not a relay */
	bool passable;
	uid_t pass_uid;
	/* its budget: one stream reserved and one reference, released together by
	 * agent_budget_stream_closed (NULL: not counted) */
	struct agent_budget_account *account;
	/* a handoff: the claim gives the client's stream fd to claimed(claimed_ctx, fd)
	 * instead of relaying it (kind, fd and size unused) */
	agent_stream_claimed_fn claimed;
	void *claimed_ctx;
};
struct agent_streams;
int agent_streams_create(unsigned ttl_ms, struct agent_streams **out, struct hm_err *err);
void agent_streams_destroy(struct agent_streams *s); /* closes every unclaimed fd */
/* Park fd (owned from here on, closed on failure too) and fill token. One stream of
 * account's budget is reserved (EMFILE/ENFILE when there is none left). */
int agent_streams_add(struct agent_streams *s, uint64_t session_id,
		      struct agent_budget_account *account, enum relay_kind kind, int fd,
		      uint64_t size, uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);
/* Park a handoff: whoever claims the token gets its stream connection through
 * claimed(ctx, fd, release) (see agent_stream_claimed_fn). Reserves one stream of
 * account's budget until claimed's callee closes the stream (or the token ends
 * unclaimed). On failure claimed is not called. */
int agent_streams_add_handoff(struct agent_streams *s, uint64_t session_id,
			      struct agent_budget_account *account, agent_stream_claimed_fn claimed,
			      void *ctx, uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);
/* A connected TCP socket of the target, parked like agent_streams_add; a stream
 * connection of uid pass_uid on the unix socket gets the socket itself instead of a
 * relay (PROTO_FEAT_TCP_FD; pass_uid -1: relay only). */
int agent_streams_add_tcp(struct agent_streams *s, uint64_t session_id,
			  struct agent_budget_account *account, int fd, int64_t pass_uid,
			  uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err);
/* Take the object a token names: 0 and *out (the caller owns out->fd and the budget
 * stream of out->account), or -1 when the token is unknown, used or expired. */
int agent_streams_claim(struct agent_streams *s, const uint8_t token[PROTO_TOKEN_LEN],
			struct agent_pending_stream *out);
void agent_streams_drop_session(struct agent_streams *s, uint64_t session_id);
void agent_streams_expire(struct agent_streams *s);
size_t agent_streams_pending(struct agent_streams *s);

/* ---- connects.c: one session's TCP connects in progress ----
 * Driven by the session's thread: it polls agent_connects_fd (POLLIN when a connect
 * finished) and wakes by agent_connects_deadline (0: none), then calls
 * agent_connects_progress. done gets each result once: fd (connected, O_NONBLOCK,
 * the callee's) and local, or fd -1 and err with the errno the app would have got. */
typedef void (*agent_connect_done_fn)(void *ctx, uint32_t id, int fd,
				      const struct proto_addr *local, const struct hm_err *err);
struct agent_connects;
int agent_connects_create(struct agent_connects **out, struct hm_err *err);
void agent_connects_destroy(struct agent_connects *cs); /* closes what is in progress */
int agent_connects_fd(const struct agent_connects *cs); /* -1 for NULL */
size_t agent_connects_count(const struct agent_connects *cs);
uint64_t agent_connects_deadline(const struct agent_connects *cs);
/* done may be called before this returns (refused at once, the pod's loopback). */
void agent_connects_start(struct agent_connects *cs, struct agent_target *t, uint32_t id,
			  const struct proto_addr *dst, uint32_t timeout_ms,
			  agent_connect_done_fn done, void *ctx);
void agent_connects_progress(struct agent_connects *cs, agent_connect_done_fn done, void *ctx);

/* ---- budget.c: global and per-session limits (see agent/agent.h) ---- */
struct agent_budget_usage {
	uint64_t used[AGENT_RES_COUNT], peak[AGENT_RES_COUNT], limit[AGENT_RES_COUNT];
	uint64_t refused[AGENT_RES_COUNT];
};
struct agent_budget;
/* One session's share. Refcounted: streams and connects outlive their session. */
struct agent_budget_account;
int agent_budget_create(const struct agent_budget_limits *limits, struct agent_budget **out,
			struct hm_err *err);
void agent_budget_destroy(struct agent_budget *b);
/* Wake every waiter and refuse from now on (ESHUTDOWN). */
void agent_budget_stop(struct agent_budget *b);
/* A new session of peer_key: its account with one reference, or EUSERS. */
int agent_budget_session_open(struct agent_budget *b, const char *peer_key,
			      struct agent_budget_account **out, struct hm_err *err);
/* The session ended: its slot is free; the caller's reference stays. */
void agent_budget_session_close(struct agent_budget_account *a);
struct agent_budget_account *agent_budget_account_get(struct agent_budget_account *a);
void agent_budget_account_put(struct agent_budget_account *a);
/* Take n of res for the session and the agent. wait_ms > 0 (reply memory only): wait
 * that long for the agent's share. a NULL: nothing is counted (tests, tools). */
int agent_budget_reserve(struct agent_budget_account *a, enum agent_budget_res res, uint64_t n,
			 int wait_ms, struct hm_err *err);
void agent_budget_release(struct agent_budget_account *a, enum agent_budget_res res, uint64_t n);
/* For the relay's release hook: one stream of the account is closed; drops the
 * stream's reference to the account. */
void agent_budget_stream_closed(void *account);
void agent_budget_usage(struct agent_budget *b, struct agent_budget_usage *out);
/* The budgets of a STATUS_REPLY. */
void agent_budget_status(struct agent_budget *b, struct proto_status_reply *out);
/* Memory reservations: how long a request waits for the agent's share of reply memory
 * before it fails with ENOBUFS. */
#define AGENT_BUDGET_WAIT_MS 10000
/* File descriptors for accept() when the agent is at its fd limit: one spare fd is
 * kept; at EMFILE it is closed, the pending connection accepted and closed (the peer
 * sees a clean close instead of hanging in the backlog), and the spare reopened. */
int agent_fd_spare_init(struct hm_err *err);
void agent_fd_spare_shed(int listen_fd);

/* ---- status.c: what `trace-agent status` reports ---- */
struct agent_stats {
	struct relay_counters relay;	     /* bytes and open streams, updated by the relay */
	atomic_uint_fast64_t kernel_streams; /* of relay.streams, relayed by the kernel */
	atomic_uint_fast64_t requests;	     /* requests answered on control connections */
	atomic_uint_fast64_t errors;	     /* ERROR replies, rejected peers, protocol errors */
	atomic_uint_fast64_t sessions;	     /* open */
	atomic_uint_fast64_t connections;    /* open control and stream connections */
	atomic_uint_fast64_t auth_failures;
	atomic_uint_fast64_t ctl_bytes_in;  /* control frames to clients */
	atomic_uint_fast64_t ctl_bytes_out; /* control frames from clients */
	uint64_t started_ms;		    /* CLOCK_MONOTONIC */
};
void agent_stats_init(struct agent_stats *s);

/* ---- kernel_relay.c: RELAY_TCP streams moved by the kernel (loader's sockrelay) ---- */
#define AGENT_KR_CLIENT 0
#define AGENT_KR_REMOTE 1
struct agent_krelay;
/* Load the program and start the thread. Fails (EPERM, EOPNOTSUPP, ...) with one
 * message saying why, for the caller's log: then the relay thread does it all. The
 * counters (bytes, streams; streams: the kernel's only) must outlive it. */
int agent_krelay_create(struct relay_counters *counters, atomic_uint_fast64_t *streams,
			uint64_t max_memory, struct agent_krelay **out, struct hm_err *err);
/* Reset every stream still relayed and unload. NULL is a no-op. */
void agent_krelay_destroy(struct agent_krelay *k);
uint32_t agent_krelay_prog_id(const struct agent_krelay *k);
/* close() with SO_LINGER 0: the peer gets a reset, not an EOF that would pass a cut
 * stream for a complete one */
void agent_close_reset(int fd);
/* Relay a pair of connected TCP sockets (ENOSPC: the memory budget or the map is
 * full): client_fd (the accepted stream, whose hello
 * and reply the agent read and wrote already) and remote_fd (connected in the target's
 * netns). On success both fds and rel (may be NULL) belong to the kernel relay; on
 * failure they stay the caller's: relay them in user space (the map is full, a socket
 * is half closed), except on ECONNABORTED (bytes were lost under way): reset them.
 * Bytes already queued on either socket are relayed too, in order. */
int agent_krelay_add(struct agent_krelay *k, int client_fd, int remote_fd,
		     const struct relay_release *rel, struct hm_err *err);
/* version must outlive out */
void agent_stats_fill(struct agent_stats *s, const char *version, size_t pending_streams,
		      struct proto_status_reply *out);

/* ---- peer.c: who is connected, and which pids it may target ---- */
#define AGENT_PEER_GROUPS_MAX 64
struct agent_peer {
	bool is_unix;
	bool has_cred; /* unix: SO_PEERCRED worked */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	/* unix: the supplementary groups (SO_PEERGROUPS); beyond AGENT_PEER_GROUPS_MAX the
	 * rest are left out, which can only take rights away */
	gid_t groups[AGENT_PEER_GROUPS_MAX];
	unsigned ngroups;
	uint8_t addr[16]; /* TCP: the source address, without the port */
	uint8_t addr_len; /* 4 or 16 */
	char desc[128];	  /* "unix pid 12 uid 0", "127.0.0.1:4321": for the logs */
};
/* Right after accept4 (SO_PEERCRED gives the connecting process's credentials). */
void agent_peer_from_accept(int fd, bool is_unix, const struct sockaddr_storage *ss,
			    struct agent_peer *out);
/* Same uid (unix) or same source address (TCP; every loopback address is one source,
 * 127/8 and ::1 alike): one peer for the per-peer limits. */
bool agent_peer_same_source(const struct agent_peer *a, const struct agent_peer *b);
/* The same as a string, for keys kept past the connection (--max-peer-sessions):
 * "uid N", "unix" (credentials unknown) or the TCP source address. */
void agent_peer_key(const struct agent_peer *peer, char *buf, size_t len);
/* May this peer open a session on process pid? Root (unix uid 0) may; another unix peer
 * only on a process all of whose uids (real, effective, saved, fs) are its own; a TCP
 * peer never (its user is unknown). allow_any_pid: everyone may (token only). Fails with
 * EPERM and a message saying why; ESRCH when the process is gone. */
int agent_peer_may_target_pid(const struct agent_peer *peer, pid_t pid, bool allow_any_pid,
			      struct hm_err *err);
/* Does a session of this peer on a pid/N target have to run with the peer's own
 * credentials? Every unix peer but root, unless allow_any_pid. */
bool agent_peer_needs_confining(const struct agent_peer *peer, bool allow_any_pid);
/* From now on the calling thread (and only it: raw syscalls, not glibc's process-wide
 * wrappers) opens files as the peer: its groups, fsgid and fsuid, and no capability
 * left (effective, permitted, inheritable). For the session's thread, which ends with
 * the connection. */
int agent_peer_confine_thread(const struct agent_peer *peer, struct hm_err *err);
/* Was agent_peer_confine_thread called on this thread? */
bool agent_thread_confined(void);

/* ---- admission.c: accepted connections until their first frame ----
 * Owned by the server's main thread (not thread-safe). Pending connections have no
 * thread; their first whole frame (at most PROTO_HELLO_MAX_PAYLOAD) goes to admitted(),
 * which takes the fd and the frame's payload. See admission.c for the limits. */
struct agent_admission_config {
	int deadline_ms;	    /* for the whole first frame, from accept */
	unsigned max_per_transport; /* pending unix connections; pending TCP ones */
	unsigned max_per_peer;	    /* pending connections of one uid / source address */
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

/* ---- incoming.c: subscriptions to the target's incoming connections ----
 * A registry of subscriptions keyed by (the target's network namespace, TCP port),
 * shared by every session on that netns. STEAL: the first steal subscription of a
 * (netns, port) attaches the steal program (loader/steal.c) and opens the agent's
 * listener in the netns; an accept thread per port hands each connection to the
 * active subscription (unfiltered: the one holder; filtered: the HTTP router). MIRROR
 * is the mirror engine's (hooks below). Everything is released when the subscription
 * or its session ends, however the session ends. */
struct agent_incoming;	    /* the registry: one per server */
struct agent_incoming_port; /* one (netns, port) with subscriptions; refcounted */
struct agent_incoming_sub;  /* one subscription; refcounted */

/* A session as incoming.c sees it. server.c embeds one in each connection and fills it
 * when the session opens; hold/release keep it (and conn) alive while a subscription
 * or an event in flight refers to it. */
struct agent_incoming_session {
	uint64_t id;
	char who[240]; /* "session 3 (unix pid 1234 uid 0) on pod/web (pid 77)" */
	struct agent_target *target;
	struct agent_budget_account *account;
	/* the pid/N rules hold and the peer is not root: only a network namespace that
	 * the peer's own user namespace owns may be subscribed to */
	bool confined;
	uid_t uid;
	char peer_key[64]; /* agent_peer_key: who the per-peer limit counts */
	/* a stolen connection's socket may be passed to this uid (the session's own unix
	 * peer that agreed PROTO_FEAT_TCP_FD, as for TCP_CONNECT); -1: relayed */
	int64_t pass_uid;
	/* an event (frame id 0) on the control connection, serialized with the session's
	 * replies; < 0 once the session ended. Thread-safe. */
	int (*send)(void *conn, const struct proto_msg *m);
	void (*hold)(void *conn);
	void (*release)(void *conn);
	void *conn;
};

/* STATUS_REPLY counters; the mirror engine and the router add to theirs */
struct agent_incoming_counters {
	atomic_uint_fast64_t mirrored, mirror_lost, mirror_bytes, stolen, passed_to_target;
};

#define AGENT_INCOMING_MAX_PER_SESSION 64
/* A subscription may start a steal (a thread, listeners and an sk_lookup program with
 * its maps in the kernel) or a mirror: a peer with the sessions it may open would
 * otherwise hold 128 x 64 of them. */
#define AGENT_INCOMING_MAX_PER_PEER 256
#define AGENT_INCOMING_MAX 1024
/* Mirroring a network namespace costs a ring buffer (--mirror-buffer, 32 MiB) of kernel
 * memory: network namespaces mirrored at once, by one peer's sessions and in all. */
#define AGENT_MIRROR_NETNS_PER_PEER 8
#define AGENT_MIRROR_NETNS_MAX 64
#define AGENT_INCOMING_MAX_PORT_SUBS 64 /* enumeration: subscriptions of one port */

int agent_incoming_create(struct agent_streams *streams, struct agent_incoming **out,
			  struct hm_err *err);
/* After every session ended (agent_incoming_session_end). NULL is a no-op. */
void agent_incoming_destroy(struct agent_incoming *reg);
/* INCOMING_SUBSCRIBE of session s (its thread). 0: reply filled (reply->note points
 * into note); < 0: err->code the errno for the ERROR (EADDRINUSE naming the holder,
 * EPERM, EOPNOTSUPP naming what is missing, EINVAL). */
int agent_incoming_subscribe(struct agent_incoming *reg, struct agent_incoming_session *s,
			     const struct proto_incoming_subscribe *req,
			     struct proto_incoming_subscribe_reply *reply, char *note,
			     size_t note_len, struct hm_err *err);
/* INCOMING_UNSUBSCRIBE: ENOENT for an id the session does not hold. */
int agent_incoming_unsubscribe(struct agent_incoming *reg, struct agent_incoming_session *s,
			       uint32_t subscription, struct hm_err *err);
/* The session ended (any path): every subscription of s goes; stealing stops (its
 * link closes) when it was the port's last. Returns when s is no longer referenced
 * by the registry (events in flight may still hold s->conn). */
void agent_incoming_session_end(struct agent_incoming *reg, struct agent_incoming_session *s);
struct agent_incoming_counters *agent_incoming_counters(struct agent_incoming *reg);
/* has_incoming and the counters of a STATUS_REPLY */
void agent_incoming_status(struct agent_incoming *reg, struct proto_status_reply *out);

/* -- for the mirror engine and the HTTP router -- */
/* A port's facts; the port stays valid while a reference is held. */
struct agent_incoming_port *agent_incoming_port_get(struct agent_incoming_port *p);
void agent_incoming_port_put(struct agent_incoming_port *p);
uint16_t agent_incoming_port_number(const struct agent_incoming_port *p);
uint64_t agent_incoming_port_netns_ino(const struct agent_incoming_port *p);
int agent_incoming_port_netns_fd(const struct agent_incoming_port *p); /* borrowed */
/* a target in the port's netns: agent_target_socket() makes sockets there */
struct agent_target *agent_incoming_port_target(const struct agent_incoming_port *p);
/* the registry's STATUS counters, for the engine and the router to add to */
struct agent_incoming_counters *agent_incoming_port_counters(struct agent_incoming_port *p);
/* One more of the port's connections in the HTTP router, if it has fewer than max (the
 * router's connections are shared by every port: one port's clients must not take
 * them all); route_end when it is gone. */
bool agent_incoming_port_route_begin(struct agent_incoming_port *p, unsigned max);
void agent_incoming_port_route_end(struct agent_incoming_port *p);
/* The port's current subscriptions of mode (MIRROR: all; STEAL: the active ones, i.e.
 * what gets connections now), at most max, each with a reference for the caller
 * (agent_incoming_sub_put). */
size_t agent_incoming_port_subs(struct agent_incoming_port *p, uint8_t mode,
				struct agent_incoming_sub **out, size_t max);
void agent_incoming_sub_put(struct agent_incoming_sub *sub);
uint32_t agent_incoming_sub_id(const struct agent_incoming_sub *sub);
uint64_t agent_incoming_sub_session_id(const struct agent_incoming_sub *sub);
/* STEAL: the filter the router compiled (filter_compile), NULL when unfiltered */
void *agent_incoming_sub_filter(const struct agent_incoming_sub *sub);
/* Announce a connection to sub's session (INCOMING_CONNECTION with a fresh token) and
 * hand the client's stream connection to claimed(ctx, fd) when it claims the token.
 * claimed is called exactly once in every case: with -1 when the token expires, the
 * session ends, or this fails (returns < 0: the event could not be sent). */
int agent_incoming_offer(struct agent_incoming_sub *sub, const struct proto_addr *client,
			 const struct proto_addr *server, agent_stream_claimed_fn claimed,
			 void *ctx, struct hm_err *err);
/* The same for a stolen connection's socket: the relay carries it as raw bytes, or it
 * is passed to the session's own unix peer (pass_uid; not with PROTO_INCOMING_RELAY).
 * fd is owned from here on, closed on failure too. */
int agent_incoming_offer_fd(struct agent_incoming_sub *sub, int fd, const struct proto_addr *client,
			    const struct proto_addr *server, struct hm_err *err);
/* A connection from the agent to the target's own server on a stolen port (server: the
 * address the client dialed), which the steal program lets through: connected,
 * O_NONBLOCK, O_CLOEXEC. Blocks up to timeout_ms (0: 10 s). */
int agent_incoming_bypass_connect(struct agent_incoming_port *p, const struct proto_addr *server,
				  uint32_t timeout_ms, struct hm_err *err);

/* The mirror engine's hook (agent/mirror.c; set once at start, before any session).
 * Without one, a MIRROR subscribe fails with EOPNOTSUPP. */
struct agent_incoming_mirror_ops {
	/* The first MIRROR subscription of port arrived: start copying its new
	 * connections; *state is given back to port_last. Called with the registry lock
	 * held: it must not call agent_incoming_* (take a port reference and work from a
	 * thread instead). < 0: the subscribe fails with err. */
	int (*port_first)(void *engine, struct agent_incoming_port *port, void **state,
			  struct hm_err *err);
	/* Its last one went: stop. Called without the lock; port_first may already run
	 * again for the same (netns, port) meanwhile. */
	void (*port_last)(void *engine, struct agent_incoming_port *port, void *state);
};
void agent_incoming_set_mirror(struct agent_incoming *reg,
			       const struct agent_incoming_mirror_ops *ops, void *engine);

/* The HTTP router's hook (agent/http_router.c; set once at start). Without one, a
 * STEAL subscribe with an http_filter fails with EOPNOTSUPP. */
struct agent_http_router_ops {
	/* Check and compile a subscription's http_filter (JSON text, not ""): < 0 with
	 * err (EINVAL naming the bad key/regex) refuses the subscribe. */
	int (*filter_compile)(void *router, const char *json, void **filter, struct hm_err *err);
	void (*filter_free)(void *router, void *filter);
	/* A new connection to a port whose active steal subscriptions all have filters:
	 * fd (the accepted socket, O_NONBLOCK, O_CLOEXEC), client and server as for
	 * INCOMING_CONNECTION, and a port reference: all the router's (fd closed and the
	 * reference put by it). Called on the port's accept thread: return quickly. The
	 * router picks subscriptions with agent_incoming_port_subs(STEAL) and
	 * agent_incoming_sub_filter, offers requests with agent_incoming_offer, reaches
	 * the pod's server with agent_incoming_bypass_connect, and counts stolen /
	 * passed_to_target in agent_incoming_counters. */
	void (*connection)(void *router, struct agent_incoming_port *port, int fd,
			   const struct proto_addr *client, const struct proto_addr *server);
};
void agent_incoming_set_http_router(struct agent_incoming *reg,
				    const struct agent_http_router_ops *ops, void *router);

/* ---- incoming_flush.c ---- */
/* Destroy the TCP connections whose local port is port in t's netns (not the
 * listeners): their peers see a reset. Returns how many; EOPNOTSUPP naming
 * CONFIG_INET_DIAG_DESTROY when the kernel cannot. */
int agent_incoming_flush(struct agent_target *t, uint16_t port, struct hm_err *err);

/* ---- target.c (additions) ---- */
/* One more reference (agent_target_put drops it). */
void agent_target_get(struct agent_target *t);
/* ---- http_parse.c: HTTP/1.x message framing over libhttp-parser ----
 * A reader follows one direction of a connection (requests from the client, or one
 * upstream's responses) and tells where each message's head and end are, so that the
 * router can forward the raw bytes as they came. It never copies or rewrites a byte.
 * The bytes of the current message must stay where they are in the caller's buffer
 * until the head is reported (the head's strings point into it). */
#define HTTP_HEAD_MAX (32u << 10) /* request head (line + headers) larger: 431 */
#define HTTP_HEADERS_MAX 128	  /* headers kept for filtering (more: 431) */
struct http_header {
	const char *name, *value;
	size_t name_len, value_len;
};
/* A request head as the filters see it: strings point into the reader's buffer. */
struct http_request {
	const char *method; /* upper case, NUL-terminated (libhttp-parser's name) */
	const char *url;    /* the request target as sent ("/a/b?q=1" or absolute) */
	size_t url_len;
	struct http_header headers[HTTP_HEADERS_MAX];
	size_t n_headers;
};
/* what one feed found; HEAD and END can come together */
enum {
	HTTP_EV_HEAD = 1,    /* the head is complete: http_reader_request / status */
	HTTP_EV_END = 2,     /* the message ended (the reader stopped right after it) */
	HTTP_EV_UPGRADE = 4, /* with END: the bytes after it are another protocol */
	HTTP_EV_ERROR = 8,   /* not HTTP, or broken: http_reader_error says why */
};
struct http_reader_state;
struct http_reader {
	struct http_reader_state *st;
};
/* request: true for client requests, false for responses. */
int http_reader_init(struct http_reader *r, bool request, struct hm_err *err);
void http_reader_fini(struct http_reader *r);
/* Parse base[from..len). base[msg_start..from) are the earlier bytes of the current
 * message, unmoved (msg_start is given by the caller: the offset where it started).
 * Stops after an END; *consumed is what was parsed. Returns HTTP_EV_* bits. */
int http_reader_feed(struct http_reader *r, const char *base, size_t msg_start, size_t from,
		     size_t len, size_t *consumed);
/* The peer closed: END for a response delimited by the close, ERROR when a message
 * was cut, 0 between messages. */
int http_reader_eof(struct http_reader *r);
/* After END: be ready for the next message. */
void http_reader_next(struct http_reader *r);
/* The next response answers a HEAD request (it has no body whatever it says). */
void http_reader_expect_head(struct http_reader *r, bool head);
/* Between messages, with no byte of the next one seen yet. */
bool http_reader_idle(const struct http_reader *r);
/* After HEAD of a request: its method, target and headers (pointers into base). */
void http_reader_request(const struct http_reader *r, const char *base, struct http_request *out);
unsigned http_reader_status(const struct http_reader *r); /* after HEAD of a response */
bool http_reader_too_large(const struct http_reader *r);  /* ERROR: the head is too big */
/* After END: the connection stays open after this message (HTTP/1.1 without
 * "Connection: close", or HTTP/1.0 with keep-alive). */
bool http_reader_keep_alive(const struct http_reader *r);
const char *http_reader_error(const struct http_reader *r);

/* ---- http_filter.c: mirrord's http_filter, parsed and matched ----
 * The JSON object a client sends in INCOMING_SUBSCRIBE.http_filter (hostile input):
 *   {"header_filter": RE} | {"path_filter": RE} | {"method_filter": "GET"}
 *   | {"all_of": [INNER...]} | {"any_of": [INNER...]}   (exactly one of these), plus
 *   "ports" (the client's business: accepted and ignored here);
 *   INNER = {"header": RE} | {"path": RE} | {"method": M} | {"all_of": [...]}
 *   | {"any_of": [...]}  (nesting is hermit's extension; mirrord's lists are flat).
 * header: a header line "Name: value" matches RE; path: the path without the query, or
 * the path with it, matches RE (as mirrord); method: equal, ignoring case. Regexes are
 * PCRE2, case-insensitive, unanchored (as mirrord's), with match, depth and heap limits
 * so that a hostile one costs bounded CPU: a match that hits a limit counts as no
 * match, and so does a filter that has used its time for the request (1 ms: the
 * router's one thread serves every session). Unknown keys, empty lists, wrong types and bad regexes
 * are errors naming the key ("http_filter.all_of[1].header: bad regex ..."). */
#define HTTP_FILTER_JSON_MAX 16384
#define HTTP_FILTER_DEPTH_MAX 8 /* nesting of all_of / any_of */
#define HTTP_FILTER_NODES_MAX 64
#define HTTP_FILTER_REGEX_MAX 1024
struct http_filter;
int http_filter_parse(const char *json, size_t len, struct http_filter **out, struct hm_err *err);
void http_filter_free(struct http_filter *f);
bool http_filter_match(const struct http_filter *f, const struct http_request *req);

/* Which of a port's steal subscriptions a request goes to: the first (in the order
 * given) whose filter matches, else the first unfiltered one (NULL); -1 for none (the
 * pod's own server). */
int http_filter_pick(struct http_filter *const *filters, size_t n, const struct http_request *req);

/* ---- http_router.c: filtered steal, request by request ----
 * One thread with an epoll loop serves every stolen connection of a port whose steal
 * subscriptions have filters (no thread per connection: a connection is ~70 KiB of
 * buffers and a few fds). Each request goes, whole, to the first subscription whose
 * filter matches it (a stream to that session's local program) or else to the pod's own
 * server; its response comes back in order, so keep-alive connections that mix the two
 * and pipelined requests work. Upgrade/CONNECT turn the connection into a raw tunnel
 * with the side its request went to. Bytes that are not HTTP from the first byte, or a
 * pod that speaks first (a server-first protocol), go to the pod untouched as a raw
 * tunnel. A request head over HTTP_HEAD_MAX (or HTTP_HEADERS_MAX headers) gets
 * "431 Request Header Fields Too Large" and the connection is closed; broken HTTP after
 * the first request closes it (reset). */
#define HTTP_ROUTER_CONNS_MAX 4096	/* connections at once (more are refused); at most 4096 */
#define HTTP_ROUTER_PORT_CONNS_MAX 1024 /* ... of one port */
#define HTTP_ROUTER_PIPELINE_MAX 32	/* requests awaiting their response per connection */
#define HTTP_ROUTER_UPSTREAMS_MAX 8	/* the pod + subscriptions used by one connection */
struct http_router_ops {
	/* The subscription a request head goes to; 0: the pod's own server. */
	uint32_t (*route)(void *ctx, void *conn, const struct http_request *req);
	/* A socket to the pod's own server for conn (called at once, and again when the
	 * pod closed an idle one): 0 with *fd connected or with a non-blocking connect in
	 * progress; or 0 with *fd -1: it comes later through
	 * http_router_stream_ready(ticket, fd), connected (the router's thread never
	 * waits for a connect). < 0: no way to the pod (the connection is reset). */
	int (*open_pod)(void *ctx, void *conn, uint64_t ticket, int *fd, struct hm_err *err);
	/* Ask subscription sub's session for a stream; the answer comes through
	 * http_router_stream_ready(ticket, fd). < 0: sub is gone (the pod answers). */
	int (*open_local)(void *ctx, void *conn, uint32_t sub, uint64_t ticket, struct hm_err *err);
	/* The router is done with conn: once per successful http_router_add. */
	void (*closed)(void *ctx, void *conn);
};
struct http_router_counters {
	atomic_uint_fast64_t to_local;	  /* requests sent to a local program */
	atomic_uint_fast64_t to_pod;	  /* requests sent to the pod's server */
	atomic_uint_fast64_t passthrough; /* connections that were not HTTP */
	atomic_uint_fast64_t connections; /* currently open */
};
struct http_router;
/* counters must outlive the router. */
int http_router_create(const struct http_router_ops *ops, void *ctx,
		       struct http_router_counters *counters, struct http_router **out,
		       struct hm_err *err);
/* Stops the thread; every connection is closed (reset) and its closed() called. */
void http_router_destroy(struct http_router *r);
/* A stolen client connection (fd owned from here on, closed on failure too); conn is
 * what the ops get for it. Any thread. */
int http_router_add(struct http_router *r, int client_fd, void *conn, struct hm_err *err);
/* The stream open_local asked for, or the pod's socket open_pod left for later: fd
 * (owned, connected), or -1 when it will not come (a local request then goes to the
 * pod). Any thread; a ticket of a closed connection is fine. release (may be NULL):
 * run exactly once when the router closes fd, also when it never used it. */
void http_router_stream_ready(struct http_router *r, uint64_t ticket, int fd,
			      const struct relay_release *release);

/* ---- http_steal.c: the router bound to the incoming core ----
 * Compiles the filters of steal subscriptions (agent_http_router_ops.filter_compile)
 * and routes the connections of filtered ports: requests to the matching
 * subscription's session (agent_incoming_offer), the others to the pod's server
 * (agent_incoming_bypass_connect), counted in stolen / passed_to_target. */
struct agent_http_steal;
/* Creates the router's thread and registers it with reg. */
int agent_http_steal_create(struct agent_incoming *reg, struct agent_http_steal **out,
			    struct hm_err *err);
/* After every session ended, before agent_incoming_destroy. NULL is a no-op. */
void agent_http_steal_destroy(struct agent_http_steal *s);

/* ---- tcp_reassembly.c: one direction of TCP connections, back in order ----
 * Fed with the segments a client sent to a mirrored port, as the pod received them
 * (copied by bpf/mirror.bpf.c, in ring buffer order, which is not wire order across
 * CPUs). Only connections whose SYN is seen are followed, from its ISN. Bytes are
 * delivered in order exactly once; retransmits and overlaps are dropped, segments
 * after a hole are held (bounded). A hole that is not filled within gap_timeout_ms,
 * or whose held bytes go over a bound, means the copy lost bytes the pod got (no
 * retransmit will come): the connection ends LOST, never delivered with a hole.
 * Not thread-safe: one engine thread owns it. */
struct agent_tcp_segment {
	uint8_t family;		      /* 4 or 6 */
	uint8_t saddr[16], daddr[16]; /* IPv4: the first 4 bytes */
	uint16_t sport, dport;
	uint32_t seq;
	bool syn, fin, rst;
	const void *payload;
	uint32_t len;
};
enum agent_reasm_end {
	AGENT_REASM_FIN,   /* the client closed: every byte was delivered */
	AGENT_REASM_RESET, /* the client reset, or the connection was replaced/dropped */
	AGENT_REASM_LOST,  /* bytes missing for good: nothing after the hole was delivered */
};
struct agent_reasm_ops {
	/* A new connection (its SYN): the caller's handle for it, NULL to ignore it. */
	void *(*open)(void *ctx, const struct agent_tcp_segment *syn);
	/* In-order bytes. Return false to stop following the connection (no end call). */
	bool (*data)(void *ctx, void *conn, const void *p, size_t len);
	/* The last call for conn. */
	void (*end)(void *ctx, void *conn, enum agent_reasm_end how);
};
struct agent_reasm_config {
	size_t max_conns;	 /* beyond: the least recently active one ends LOST */
	size_t max_held_conn;	 /* out-of-order bytes held per connection (a segment
				  * counts as 1 KiB at least: its bookkeeping) */
	size_t max_held_total;	 /* ... for all connections */
	int64_t gap_timeout_ms;	 /* a hole older than this is lost */
	int64_t idle_timeout_ms; /* a connection silent this long ends LOST (its FIN was lost) */
	/* the connection hash's secret; {0, 0} (the agent's case): drawn from getrandom() */
	uint64_t hash_key[2];
	struct agent_reasm_ops ops;
	void *ctx;
};
struct agent_reasm;
int agent_reasm_create(const struct agent_reasm_config *cfg, struct agent_reasm **out,
		       struct hm_err *err);
/* Ends every connection (RESET) and frees. NULL is a no-op. */
void agent_reasm_destroy(struct agent_reasm *r);
void agent_reasm_segment(struct agent_reasm *r, const struct agent_tcp_segment *seg,
			 int64_t now_ms);
/* Apply the timeouts; returns the ms until the next one is due (-1: none). */
int64_t agent_reasm_tick(struct agent_reasm *r, int64_t now_ms);
/* The copy lost a segment of the connection key names (its 4-tuple; payload unused):
 * it ends LOST now, whether or not a later segment would have shown the hole. */
void agent_reasm_lose(struct agent_reasm *r, const struct agent_tcp_segment *key);
/* End every connection to port (RESET): its last subscription went away. */
void agent_reasm_drop_port(struct agent_reasm *r, uint16_t port);
size_t agent_reasm_conns(const struct agent_reasm *r);
size_t agent_reasm_held_bytes(const struct agent_reasm *r);
/* The hash bucket a segment's connection goes to, and the longest chain of connections
 * in one bucket (tests, and the bound a pod choosing its flows runs into). */
size_t agent_reasm_bucket_of(const struct agent_reasm *r, const struct agent_tcp_segment *s);
size_t agent_reasm_longest_chain(const struct agent_reasm *r);

/* ---- mirror.c: the mirror engine (see the file comment) ----
 * Plugs into incoming.c through agent_mirror_ops (agent_incoming_set_mirror). Its
 * claims arrive through the stream tokens: destroy it after the streams. */
#define AGENT_MIRROR_COPY_BUFFER (64u << 20)   /* bytes one copy may fall behind */
#define AGENT_MIRROR_TOTAL_BUFFER (512u << 20) /* ... all copies together */
struct agent_mirror_config {
	size_t ring_bytes;	 /* per network namespace; 0: the loader's default */
	size_t copy_buffer_max;	 /* 0: AGENT_MIRROR_COPY_BUFFER */
	size_t total_buffer_max; /* 0: AGENT_MIRROR_TOTAL_BUFFER */
	struct agent_incoming_counters *counters; /* mirrored, mirror_lost, mirror_bytes */
};
struct agent_mirror;
int agent_mirror_create(const struct agent_mirror_config *cfg, struct agent_mirror **out,
			struct hm_err *err);
/* Stop its threads (before the registry goes); destroy frees (after the streams). */
void agent_mirror_stop(struct agent_mirror *m);	   /* NULL is a no-op */
void agent_mirror_destroy(struct agent_mirror *m); /* NULL is a no-op; stops first */
extern const struct agent_incoming_mirror_ops agent_mirror_ops;

#endif
