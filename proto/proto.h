/* proto: the wire protocol between the tracer (trace-run, the client) and the node
 * agent (trace-agent, the server). Both ends link this module; everything a peer
 * sends is decoded here, bounds-checked, and rejected with a protocol error
 * (EPROTO, EBADMSG, E2BIG) if malformed, never crashing or over-reading.
 *
 * ---- Wire format ------------------------------------------------------------------
 * All integers little-endian. Every message is one frame:
 *
 *   u32 len | u16 type | u16 flags | u32 id | payload[len]        (12-byte header)
 *
 *   len    payload length, at most PROTO_MAX_PAYLOAD (16 MiB). Readers check it
 *          before allocating; before authentication the agent uses the much smaller
 *          PROTO_HELLO_MAX_PAYLOAD.
 *   type   enum proto_type. Replies are the request's type | 0x8000.
 *   flags  0. Bits are reserved for features negotiated in the handshake; a frame
 *          with a flag this build does not know is rejected.
 *   id     request id chosen by the client, unique among its outstanding requests,
 *          echoed by the reply. Requests run concurrently and replies arrive in any
 *          order. 0 is for frames that answer nothing (handshake, events, datagrams).
 *
 * Payload field types:
 *   u8 u16 u32 u64 i32 i64   fixed width
 *   string  u32 n | n bytes, none of them NUL | one 0x00 byte. Decoded strings point
 *           into the payload and are ordinary C strings.
 *   token   PROTO_TOKEN_LEN (16) raw bytes: a one-time stream token
 *   addr    u8 family (4 or 6) | u16 port | 4 or 16 address bytes | (6 only) u32 scope_id
 *   blob    u8 encoding (0 raw, 1 zlib) | u64 size | u32 n | n bytes. size is the
 *           uncompressed length, at most PROTO_INLINE_MAX; raw means n == size.
 *   stat    u64 ino, size, blocks | u32 dev_major, dev_minor, rdev_major, rdev_minor,
 *           mode, nlink, uid, gid, blksize | (i64 sec, u32 nsec) x atime, mtime, ctime
 *   statfs  u64 type, bsize, frsize, blocks, bfree, bavail, files, ffree, namelen,
 *           flags | u32 fsid[2]
 * A payload must be consumed exactly: trailing bytes are an error.
 *
 * ---- Conversation -----------------------------------------------------------------
 * Control connection (TCP or unix, to the agent):
 *   1. client HELLO (id 0)  ->  agent HELLO_REPLY (id 0); error != 0 means rejected,
 *      and the agent closes. The auth token travels here.
 *   2. client SESSION_OPEN "pod/NAME" | "pid/N" | "container/ID" -> SESSION_OPEN_REPLY.
 *      One session per control connection; closing the connection ends the session
 *      and releases everything it held (streams not yet opened, relays).
 *   3. Any requests below, concurrently. Any request may be answered with ERROR
 *      (errno + message) instead of its reply.
 *   4. When the target exits the agent sends SESSION_ENDED (id 0) and closes.
 *   Any malformed frame is fatal to its connection: the receiver closes it.
 *   The HELLO and HELLO_REPLY layouts are frozen across versions, so a peer of another
 *   version still gets a readable EPROTONOSUPPORT rejection.
 *
 * Stream connection (bulk bytes never travel in control frames): a new connection to
 * the same agent address, opened with a one-time token from a reply:
 *   client STREAM_HELLO(token) -> agent STREAM_HELLO_REPLY, then depending on the token
 *   - TCP_CONNECT_REPLY (and a stolen INCOMING_CONNECTION):  raw bytes both ways
 *     (splice-able) until either side closes; with PROTO_FEAT_TCP_FD on a unix connection of the
 * session's own uid, instead the reply carries the pod's socket (SCM_RIGHTS) and the agent closes
 * the connection;
 *   - FILE_READ_REPLY with transfer STREAM: the agent sends exactly `size` raw bytes
 *     and closes;
 *   - UDP_OPEN_REPLY:  UDP_DATAGRAM frames (id 0) both ways, each carrying the peer
 *     address (destination going out, real source coming back).
 *   Tokens are single-use and expire when unused. The frame readers below read exactly
 *   one frame and never a byte beyond it, so after the hello the fd holds only the
 *   stream's own bytes.
 *
 * ---- Requests and replies ---------------------------------------------------------
 *   request            union member        reply                union member
 *   HELLO              hello               HELLO_REPLY          hello_reply
 *   STREAM_HELLO       stream_hello        STREAM_HELLO_REPLY   stream_hello_reply
 *   PING               ping                PONG                 ping
 *   STATUS             -                   STATUS_REPLY         status_reply
 *   SESSION_OPEN       session_open        SESSION_OPEN_REPLY   session_open_reply
 *   ENV_GET            -                   ENV_REPLY            env_reply
 *   FILE_READ          file_read           FILE_READ_REPLY      file_read_reply
 *   FILE_WRITE         file_write          FILE_WRITE_REPLY     file_write_reply
 *   FILE_STAT          path_req            FILE_STAT_REPLY      stat_reply
 *   FILE_ACCESS        file_access         OK                   -
 *   FILE_READLINK      path_req            FILE_READLINK_REPLY  readlink_reply
 *   FILE_READDIR       path_req            FILE_READDIR_REPLY   readdir_reply
 *   FILE_MKDIR         file_mkdir          OK                   -
 *   FILE_UNLINK        file_unlink         OK                   -
 *   FILE_RENAME        file_rename         OK                   -
 *   FILE_STATFS        path_req            FILE_STATFS_REPLY    statfs_reply
 *   TCP_CONNECT        tcp_connect         TCP_CONNECT_REPLY    tcp_connect_reply
 *   UDP_OPEN           udp_open            UDP_OPEN_REPLY       udp_open_reply
 *   INCOMING_SUBSCRIBE incoming_subscribe  INCOMING_SUBSCRIBE_REPLY incoming_subscribe_reply
 *   INCOMING_UNSUBSCRIBE incoming_unsubscribe OK                -
 *   events, id 0:      SESSION_ENDED (error), UDP_DATAGRAM (udp_datagram, streams only),
 *                      INCOMING_CONNECTION (incoming_connection, control connection),
 *                      INCOMING_DATA (incoming_data), INCOMING_END (incoming_end): mirror
 *                      streams only, agent to client
 *   any request ->     ERROR (error)
 * Paths in requests are absolute (they are resolved inside the target's root) and at
 * most PROTO_PATH_MAX bytes. Big file write-back goes in several FILE_WRITEs of at
 * most PROTO_INLINE_MAX bytes at increasing offsets, the first with PROTO_WRITE_TRUNC.
 */
#ifndef HERMIT_PROTO_H
#define HERMIT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "util/util.h"

#define PROTO_VERSION 1
#define PROTO_MAGIC 0x544d5248u /* "HRMT" on the wire, first field of both hellos */
#define PROTO_HDR_LEN 12
#define PROTO_MAX_PAYLOAD (16u << 20)
#define PROTO_HELLO_MAX_PAYLOAD 4096u /* frame limit before the peer is authenticated */
#define PROTO_INLINE_MAX (8u << 20)   /* larger file contents go over a stream */
#define PROTO_TOKEN_LEN 16
#define PROTO_AUTH_TOKEN_MAX 256
#define PROTO_NAME_MAX 256  /* client/server names, target strings, reasons */
#define PROTO_MSG_MAX 1024  /* error messages */
#define PROTO_PATH_MAX 4095 /* PATH_MAX without the NUL */
#define PROTO_FILENAME_MAX 255
#define PROTO_ENV_ENTRY_MAX (128u << 10) /* the kernel's MAX_ARG_STRLEN */
#define PROTO_DATAGRAM_MAX 65535
/* where both ends meet by default: the agent's unix socket and the token file it writes */
#define PROTO_DEFAULT_AGENT_UNIX "/run/hermit/agent.sock"
#define PROTO_DEFAULT_TOKEN_FILE "/run/hermit/agent.token"

/* Handshake feature bits; HELLO_REPLY carries the intersection. */
#define PROTO_FEAT_ZLIB (1ull << 0) /* peer inflates zlib blobs: the agent may compress */
/* TCP hand-off: on a unix stream connection of the session's own peer (same uid), the
 * STREAM_HELLO_REPLY of a TCP_CONNECT token, or of a stolen INCOMING_CONNECTION's (a
 * subscription without PROTO_INCOMING_RELAY), carries the pod's socket itself
 * (SCM_RIGHTS on the reply's first byte) and the agent closes the stream connection:
 * no relay. Never over TCP. The frame layouts do not change; see proto_stream_open_fd. */
#define PROTO_FEAT_TCP_FD (1ull << 1)
#define PROTO_FEAT_MIRROR (1ull << 8) /* INCOMING_SUBSCRIBE with PROTO_INCOMING_MIRROR */
#define PROTO_FEAT_STEAL (1ull << 9)  /* INCOMING_SUBSCRIBE with PROTO_INCOMING_STEAL */
#define PROTO_FEATURES_SUPPORTED                                                                   \
	(PROTO_FEAT_ZLIB | PROTO_FEAT_TCP_FD | PROTO_FEAT_MIRROR | PROTO_FEAT_STEAL)

#define PROTO_REPLY_BIT 0x8000
enum proto_type {
	PROTO_HELLO = 0x0001,
	PROTO_STREAM_HELLO = 0x0002,
	PROTO_PING = 0x0003,
	PROTO_STATUS = 0x0004,
	PROTO_HELLO_REPLY = 0x8001,
	PROTO_STREAM_HELLO_REPLY = 0x8002,
	PROTO_PONG = 0x8003,
	PROTO_STATUS_REPLY = 0x8004,
	PROTO_OK = 0x80fe,    /* success without a body */
	PROTO_ERROR = 0x80ff, /* failure of any request */

	PROTO_SESSION_OPEN = 0x0101,
	PROTO_SESSION_OPEN_REPLY = 0x8101,
	PROTO_SESSION_ENDED = 0x8102, /* event: the target is gone */

	PROTO_ENV_GET = 0x0201,
	PROTO_ENV_REPLY = 0x8201,

	PROTO_FILE_READ = 0x0301,
	PROTO_FILE_WRITE = 0x0302,
	PROTO_FILE_STAT = 0x0303,
	PROTO_FILE_ACCESS = 0x0304,
	PROTO_FILE_READLINK = 0x0305,
	PROTO_FILE_READDIR = 0x0306,
	PROTO_FILE_MKDIR = 0x0307,
	PROTO_FILE_UNLINK = 0x0308,
	PROTO_FILE_RENAME = 0x0309,
	PROTO_FILE_STATFS = 0x030a,
	PROTO_FILE_READ_REPLY = 0x8301,
	PROTO_FILE_WRITE_REPLY = 0x8302,
	PROTO_FILE_STAT_REPLY = 0x8303,
	PROTO_FILE_READLINK_REPLY = 0x8305,
	PROTO_FILE_READDIR_REPLY = 0x8306,
	PROTO_FILE_STATFS_REPLY = 0x830a,

	PROTO_TCP_CONNECT = 0x0401,
	PROTO_TCP_CONNECT_REPLY = 0x8401,

	PROTO_UDP_OPEN = 0x0501,
	PROTO_UDP_OPEN_REPLY = 0x8501,
	PROTO_UDP_DATAGRAM = 0x0502, /* on a UDP stream only, both directions */

	/* incoming traffic: the target's connections to a port, mirrored or stolen */
	PROTO_INCOMING_SUBSCRIBE = 0x0601,
	PROTO_INCOMING_UNSUBSCRIBE = 0x0602,
	PROTO_INCOMING_DATA = 0x0603, /* on a mirror stream only, agent to client */
	PROTO_INCOMING_END = 0x0604,  /* on a mirror stream only, agent to client, last */
	PROTO_INCOMING_SUBSCRIBE_REPLY = 0x8601,
	PROTO_INCOMING_CONNECTION = 0x8605, /* event on the control connection */
};

/* ---- message bodies ---- */

struct proto_hello {
	uint16_t version;
	uint64_t features;
	const char *token;  /* the agent's auth token, <= PROTO_AUTH_TOKEN_MAX */
	const char *client; /* "trace-run 0.1", for the agent's logs */
};

struct proto_hello_reply {
	int32_t error;	    /* 0: accepted; else why not (EACCES token, EPROTONOSUPPORT version) */
	uint16_t version;   /* the agent's protocol version */
	uint64_t features;  /* agreed: the client's & the agent's */
	const char *reason; /* human-readable, "" when accepted */
	const char *server; /* "trace-agent 0.1" */
};

struct proto_stream_hello {
	uint8_t token[PROTO_TOKEN_LEN];
};

struct proto_stream_hello_reply {
	int32_t error; /* 0: the stream is live */
	const char *reason;
};

struct proto_error {	     /* ERROR and SESSION_ENDED */
	int32_t errnum;	     /* 1..4095, Linux errno values */
	const char *message; /* <= PROTO_MSG_MAX */
};

struct proto_ping { /* PING and PONG: the pong echoes the nonce */
	uint64_t nonce;
};

/* The agent's budgets, in this order (a later agent may append more; a reader keeps
 * the ones it knows). Optional at the end of STATUS_REPLY: u8 count, then per budget
 * u64 used | u64 limit (0: none) | u64 peak | u64 refused. */
enum proto_budget_kind {
	PROTO_BUDGET_SESSIONS,
	PROTO_BUDGET_STREAMS,
	PROTO_BUDGET_INFLIGHT, /* bytes of replies in flight */
	PROTO_BUDGET_CONNECTS,
	PROTO_BUDGET_COUNT
};
#define PROTO_BUDGET_MAX 16 /* budgets a STATUS_REPLY may carry */
struct proto_budget {
	uint64_t used, limit, peak, refused;
};
struct proto_status_reply {
	const char *version;
	uint64_t uptime_ms;
	uint32_t sessions;
	uint32_t streams;
	uint64_t requests;
	uint64_t errors;
	uint64_t bytes_in;
	uint64_t bytes_out;
	uint8_t nbudgets; /* 0 from an agent without budgets; <= PROTO_BUDGET_COUNT */
	struct proto_budget budgets[PROTO_BUDGET_COUNT];
	/* incoming traffic, encoded after the budgets (so only with nbudgets > 0) */
	bool has_incoming;
	uint32_t subscriptions;	   /* open, all sessions */
	uint64_t mirrored;	   /* connections delivered whole to mirror streams */
	uint64_t mirror_lost;	   /* connections reset because the agent lost bytes */
	uint64_t mirror_bytes;	   /* payload bytes copied to mirror streams */
	uint64_t stolen;	   /* connections (or HTTP requests) given to a client */
	uint64_t passed_to_target; /* filtered HTTP requests left to the target */
	/* the kernel relay, encoded after the incoming counters (so only with them) */
	bool has_kernel_relay;
	bool kernel_relay_on;	 /* loaded: TCP streams of TCP clients go through it */
	uint32_t kernel_streams; /* of streams, moved by the kernel now */
};

struct proto_session_open {
	const char *target; /* checked with proto_target_parse by the decoder */
};

struct proto_session_open_reply {
	uint64_t session_id;
	uint32_t pid;		 /* the target's pid, in the agent's pid namespace */
	const char *description; /* e.g. "pod/web (pid 1234)" */
};

struct proto_env_reply {
	uint32_t count;
	const char *const *vars; /* "KEY=VALUE", NUL-free, each <= PROTO_ENV_ENTRY_MAX */
};

/* File content carried inline. Encode: data/size are the raw bytes and compress asks
 * for zlib when it pays off. Decode: data/size are always the raw (inflated) bytes;
 * encoding says what the wire carried. */
struct proto_blob {
	const void *data;
	uint64_t size; /* <= PROTO_INLINE_MAX */
	bool compress;
	uint8_t encoding; /* PROTO_ENC_RAW or PROTO_ENC_ZLIB, set by the decoder */
};
#define PROTO_ENC_RAW 0
#define PROTO_ENC_ZLIB 1

struct proto_time {
	int64_t sec;
	uint32_t nsec; /* < 1e9 */
};

/* Portable stat: the host's dev_t and struct layout never hit the wire. mode uses the
 * POSIX S_IF* / permission bit values that every Linux architecture shares. */
struct proto_stat {
	uint64_t ino, size, blocks;
	uint32_t dev_major, dev_minor, rdev_major, rdev_minor;
	uint32_t mode, nlink, uid, gid, blksize;
	struct proto_time atime, mtime, ctime;
};

struct proto_statfs {
	uint64_t type, bsize, frsize, blocks, bfree, bavail, files, ffree, namelen, flags;
	uint32_t fsid[2];
};

#define PROTO_READ_NOFOLLOW 0x1
struct proto_file_read {
	const char *path;
	uint32_t flags;	   /* PROTO_READ_* */
	uint64_t max_size; /* the client's cap: larger files fail with EFBIG */
};

#define PROTO_XFER_INLINE 0
#define PROTO_XFER_STREAM 1
struct proto_file_read_reply {
	struct proto_stat st;
	uint8_t transfer;	/* PROTO_XFER_*; the agent picks STREAM above PROTO_INLINE_MAX */
	struct proto_blob data; /* INLINE */
	uint64_t stream_size;	/* STREAM: raw bytes the stream will carry */
	uint8_t token[PROTO_TOKEN_LEN]; /* STREAM */
};

#define PROTO_WRITE_CREATE 0x01
#define PROTO_WRITE_TRUNC 0x02
#define PROTO_WRITE_EXCL 0x04
#define PROTO_WRITE_NOFOLLOW 0x08
#define PROTO_WRITE_FSYNC 0x10
/* "open for write" is a FILE_WRITE of 0 bytes with the app's CREATE/TRUNC/EXCL. */
struct proto_file_write {
	const char *path;
	uint32_t flags; /* PROTO_WRITE_* */
	uint32_t mode;	/* permission bits for CREATE, <= 07777 */
	uint64_t offset;
	struct proto_blob data;
};

struct proto_file_write_reply {
	uint64_t written;
	struct proto_stat st; /* after the write */
};

#define PROTO_STAT_NOFOLLOW 0x1 /* lstat */
struct proto_path_req {		/* FILE_STAT, FILE_READLINK, FILE_READDIR, FILE_STATFS */
	const char *path;
	uint32_t flags; /* FILE_STAT: PROTO_STAT_*; others 0 */
};

#define PROTO_ACCESS_X 1 /* mode bits as access(2); 0 is F_OK */
#define PROTO_ACCESS_W 2
#define PROTO_ACCESS_R 4
#define PROTO_ACCESS_EACCESS 0x1 /* flags: AT_EACCESS, AT_SYMLINK_NOFOLLOW */
#define PROTO_ACCESS_NOFOLLOW 0x2
struct proto_file_access {
	const char *path;
	uint32_t mode;
	uint32_t flags;
};

struct proto_file_mkdir {
	const char *path;
	uint32_t mode; /* <= 07777 */
};

#define PROTO_UNLINK_DIR 0x1 /* rmdir */
struct proto_file_unlink {
	const char *path;
	uint32_t flags;
};

#define PROTO_RENAME_NOREPLACE 0x1
#define PROTO_RENAME_EXCHANGE 0x2
struct proto_file_rename {
	const char *from;
	const char *to;
	uint32_t flags; /* at most one of PROTO_RENAME_* */
};

struct proto_readlink_reply {
	const char *target; /* <= PROTO_PATH_MAX */
};

struct proto_dirent {
	uint64_t ino;
	uint8_t type;	  /* DT_* values (Linux's, shared by all architectures) */
	const char *name; /* 1..PROTO_FILENAME_MAX bytes, no '/' */
};

struct proto_readdir_reply {
	uint32_t count;
	const struct proto_dirent *entries; /* "." and ".." included as the directory has them */
};

#define PROTO_AF_INET 4
#define PROTO_AF_INET6 6
struct proto_addr {
	uint8_t family;	   /* PROTO_AF_* */
	uint16_t port;	   /* host byte order */
	uint8_t addr[16];  /* 4 bytes used for INET, network byte order like in_addr */
	uint32_t scope_id; /* INET6 only */
};

struct proto_tcp_connect {
	struct proto_addr dst;
	uint32_t timeout_ms; /* 0: the agent's default */
};

struct proto_tcp_connect_reply {
	uint8_t token[PROTO_TOKEN_LEN];
	struct proto_addr local; /* the address the pod's socket got */
};

struct proto_udp_open {
	uint8_t family; /* PROTO_AF_* */
};

struct proto_udp_open_reply {
	uint8_t token[PROTO_TOKEN_LEN];
	struct proto_addr local;
};

struct proto_udp_datagram {
	struct proto_addr peer; /* destination (client->agent) or source (agent->client) */
	const void *data;
	uint32_t len; /* <= PROTO_DATAGRAM_MAX */
};

/* ---- incoming traffic ----
 * A subscription is one session's interest in one TCP port of its target (the port the
 * target's own server listens on, or would). MIRROR: every connection to the port that
 * starts after the subscription is copied to the client, the target's server still
 * answers it. STEAL: new connections to the port go to the client instead of the
 * target's server; with an HTTP filter only the requests that match it do, the others
 * go to the target's server. Each delivered connection is an INCOMING_CONNECTION event
 * naming a stream token (see "Stream connection"). Subscriptions end with
 * INCOMING_UNSUBSCRIBE or with the session. */
enum proto_incoming_mode { PROTO_INCOMING_MIRROR = 1, PROTO_INCOMING_STEAL = 2 };
#define PROTO_INCOMING_FLUSH (1u << 0)	    /* steal: reset the port's open connections */
#define PROTO_INCOMING_CONCURRENT (1u << 1) /* on_concurrent_steal=continue: share, no abort */
/* steal: relay the connections even to a peer that agreed PROTO_FEAT_TCP_FD */
#define PROTO_INCOMING_RELAY (1u << 2)
/* steal: the program's listener is a dual-stack IPv6 socket; when this subscription
 * starts the port's steal, IPv4 connections come as IPv6 sockets (v4-mapped), as the
 * program's own accept would give them */
#define PROTO_INCOMING_DUAL_STACK (1u << 3)
#define PROTO_HTTP_FILTER_MAX 8192 /* bytes of an http_filter's JSON text */
#define PROTO_INCOMING_DATA_MAX (256u << 10)

struct proto_incoming_subscribe {
	uint16_t port;	/* 1..65535, the target's port */
	uint8_t mode;	/* enum proto_incoming_mode */
	uint32_t flags; /* PROTO_INCOMING_FLUSH | _CONCURRENT | _RELAY | _DUAL_STACK */
	/* STEAL only: "" for none, else mirrord's http_filter object as JSON text (the
	 * keys header_filter, path_filter, method_filter, all_of, any_of; ports already
	 * applied by the client), <= PROTO_HTTP_FILTER_MAX bytes. Checked by the agent. */
	const char *http_filter;
};

struct proto_incoming_subscribe_reply {
	uint32_t subscription; /* != 0, unique within the session */
	const char *note;      /* "" or one line for the user, e.g. who else holds the port */
};

struct proto_incoming_unsubscribe {
	uint32_t subscription;
};

struct proto_incoming_connection {
	uint32_t subscription;
	uint8_t token[PROTO_TOKEN_LEN]; /* claim the connection's stream with it */
	struct proto_addr client;	/* the original client (accept's address) */
	struct proto_addr server;	/* the target's address the client connected to */
};

struct proto_incoming_data {
	const void *data;
	uint32_t len; /* 1..PROTO_INCOMING_DATA_MAX */
};

struct proto_incoming_end {
	int32_t error; /* 0: the client closed (FIN); ECONNRESET: reset or bytes lost */
};

/* One decoded or to-be-encoded message: set type and the union member the table in
 * the file comment names (types without a body have none). A decoded message points
 * into the frame payload it came from; proto_msg_free releases what it owns. */
struct proto_msg {
	uint16_t type;
	uint32_t id; /* set by decoding; encoding takes the id as an argument */
	union {
		struct proto_hello hello;
		struct proto_hello_reply hello_reply;
		struct proto_stream_hello stream_hello;
		struct proto_stream_hello_reply stream_hello_reply;
		struct proto_error error;
		struct proto_ping ping;
		struct proto_status_reply status_reply;
		struct proto_session_open session_open;
		struct proto_session_open_reply session_open_reply;
		struct proto_env_reply env_reply;
		struct proto_file_read file_read;
		struct proto_file_read_reply file_read_reply;
		struct proto_file_write file_write;
		struct proto_file_write_reply file_write_reply;
		struct proto_path_req path_req;
		struct proto_stat stat_reply;
		struct proto_file_access file_access;
		struct proto_file_mkdir file_mkdir;
		struct proto_file_unlink file_unlink;
		struct proto_file_rename file_rename;
		struct proto_readlink_reply readlink_reply;
		struct proto_readdir_reply readdir_reply;
		struct proto_statfs statfs_reply;
		struct proto_tcp_connect tcp_connect;
		struct proto_tcp_connect_reply tcp_connect_reply;
		struct proto_udp_open udp_open;
		struct proto_udp_open_reply udp_open_reply;
		struct proto_udp_datagram udp_datagram;
		struct proto_incoming_subscribe incoming_subscribe;
		struct proto_incoming_subscribe_reply incoming_subscribe_reply;
		struct proto_incoming_unsubscribe incoming_unsubscribe;
		struct proto_incoming_connection incoming_connection;
		struct proto_incoming_data incoming_data;
		struct proto_incoming_end incoming_end;
	};
	struct { /* private: memory the message owns after decoding */
		void *payload;
		void *array;
		void *inflated;
	} owned;
};

/* ---- types ---- */
bool proto_type_known(uint16_t type);
const char *proto_type_name(uint16_t type); /* "FILE_READ"; "UNKNOWN" if not known */
/* The success reply of a request type (PROTO_OK for bodiless ones); 0 if type is not a
 * request. */
uint16_t proto_reply_type(uint16_t request_type);

/* ---- writer: a growable buffer; failures are sticky and reported by proto_encode ---- */
struct proto_buf {
	uint8_t *data;
	size_t len, cap;
	int error; /* first failure: ENOMEM, E2BIG, EINVAL */
};
#define PROTO_BUF_INIT ((struct proto_buf){0})
void proto_buf_release(struct proto_buf *b);
void proto_buf_reset(struct proto_buf *b); /* keep the memory, drop the content and error */
void *proto_buf_reserve(struct proto_buf *b, size_t n); /* n more bytes at the end, or NULL */
void proto_put_u8(struct proto_buf *b, uint8_t v);
void proto_put_u16(struct proto_buf *b, uint16_t v);
void proto_put_u32(struct proto_buf *b, uint32_t v);
void proto_put_u64(struct proto_buf *b, uint64_t v);
void proto_put_bytes(struct proto_buf *b, const void *p, size_t n);
/* A string of at most max bytes (E2BIG beyond); NULL is written as "". */
void proto_put_string(struct proto_buf *b, const char *s, size_t max);

/* ---- reader: bounds-checked; the first failure sticks and later gets return 0/"" ---- */
struct proto_reader {
	const uint8_t *p;
	size_t len, off;
	int error;	 /* EBADMSG, EPROTO, E2BIG */
	const char *why; /* static text for the first failure */
};
void proto_reader_init(struct proto_reader *r, const void *p, size_t len);
void proto_reader_fail(struct proto_reader *r, int code, const char *why); /* keeps the first */
uint8_t proto_get_u8(struct proto_reader *r);
uint16_t proto_get_u16(struct proto_reader *r);
uint32_t proto_get_u32(struct proto_reader *r);
uint64_t proto_get_u64(struct proto_reader *r);
const void *proto_get_bytes(struct proto_reader *r, size_t n); /* NULL on failure */
/* A string of at most max bytes, checked for NUL-freeness and its terminator. */
const char *proto_get_string(struct proto_reader *r, size_t max);
/* < 0 if a get failed or bytes remain; err says "what: why at offset N". */
int proto_reader_finish(struct proto_reader *r, const char *what, struct hm_err *err);

/* ---- messages ---- */
/* Append one whole frame (header + payload) to b. Fails (b unchanged) on a field out
 * of its limits or a payload over PROTO_MAX_PAYLOAD. */
int proto_encode(struct proto_buf *b, uint32_t id, const struct proto_msg *m, struct hm_err *err);
struct proto_hdr {
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	uint32_t id;
};
/* Decode a payload; m points into payload afterwards (keep it alive). On failure m
 * owns nothing, but proto_msg_free is still safe. */
int proto_decode(const struct proto_hdr *hdr, const void *payload, struct proto_msg *m,
		 struct hm_err *err);
void proto_msg_free(struct proto_msg *m);
/* A message freed when it goes out of scope, initialised so that any exit is safe:
 * `proto_cleanup_msg struct proto_msg reply = {0};` */
#define proto_cleanup_msg __attribute__((cleanup(proto_msg_free)))

/* ---- frames ---- */
void proto_hdr_encode(uint8_t out[PROTO_HDR_LEN], const struct proto_hdr *h);
/* Parse and validate a header: length <= max_payload (E2BIG), flags (EPROTO), known type
 * (EPROTO). h is filled even on failure, so the caller can answer ERROR for h->id. */
int proto_hdr_decode(const uint8_t in[PROTO_HDR_LEN], uint32_t max_payload, struct proto_hdr *h,
		     struct hm_err *err);

struct proto_frame {
	struct proto_hdr hdr;
	uint8_t *payload; /* malloc'ed, hdr.len bytes (NULL when 0) */
};
void proto_frame_release(struct proto_frame *f);
/* Decode a frame; the message takes the payload over (also on failure). */
int proto_decode_frame(struct proto_frame *f, struct proto_msg *m, struct hm_err *err);

/* Incremental reader for a non-blocking fd: reads the header, validates the length
 * against max_payload BEFORE allocating, then the body. Reads never go past the end of
 * the current frame. */
struct proto_frame_reader {
	uint32_t max_payload;
	size_t got; /* bytes of the current frame so far */
	uint8_t hdr_raw[PROTO_HDR_LEN];
	struct proto_frame frame;
};
void proto_frame_reader_init(struct proto_frame_reader *r, uint32_t max_payload);
void proto_frame_reader_release(struct proto_frame_reader *r);
/* 1: a frame is complete and moved to *out; 0: the fd would block, call again when
 * readable; < 0: error. A clean end of stream between frames fails with err->code == 0
 * ("connection closed"); inside a frame it is EPROTO. */
int proto_frame_reader_read(struct proto_frame_reader *r, int fd, struct proto_frame *out,
			    struct hm_err *err);

/* Blocking helpers; they also work on non-blocking fds (they poll). The send side
 * writes a frame in one call but is not atomic: concurrent senders on one fd need a
 * lock. SIGPIPE is not raised on sockets. */
int proto_send(int fd, uint32_t id, const struct proto_msg *m, struct hm_err *err);
/* Receive and decode one message; timeout_ms < 0 waits forever (ETIMEDOUT otherwise). */
int proto_recv(int fd, uint32_t max_payload, int timeout_ms, struct proto_msg *m,
	       struct hm_err *err);

/* ---- handshake ---- */
/* Client: HELLO -> HELLO_REPLY. A rejection fails with err->code = the agent's errno
 * (EACCES for a wrong token). *agreed gets the agreed feature bits. */
int proto_client_handshake(int fd, const char *auth_token, const char *client_name,
			   uint64_t features, int timeout_ms, uint64_t *agreed, struct hm_err *err);
/* Server: judge a decoded HELLO (magic and framing were checked by the decoder) and fill
 * the HELLO_REPLY to send either way. Tokens are compared in constant time. Returns 0
 * if accepted, < 0 if rejected (reply->error says why). */
int proto_server_check_hello(const struct proto_hello *hello, const char *auth_token,
			     uint64_t server_features, const char *server_name,
			     struct proto_hello_reply *reply);
/* Client: STREAM_HELLO with a one-time token, wait for STREAM_HELLO_REPLY. */
int proto_stream_open(int fd, const uint8_t token[PROTO_TOKEN_LEN], int timeout_ms,
		      struct hm_err *err);
/* The same, on a unix stream connection that may get the object itself (PROTO_FEAT_TCP_FD):
 * *passed is the fd that came with the reply (O_CLOEXEC; the agent then closes the
 * connection, fd carries nothing more), or -1 when none came and fd is the stream. */
int proto_stream_open_fd(int fd, const uint8_t token[PROTO_TOKEN_LEN], int timeout_ms, int *passed,
			 struct hm_err *err);
/* Constant-time comparison of two byte strings of the same length. */
bool proto_token_equal(const void *a, const void *b, size_t len);

/* ---- compression (zlib) ---- */
/* Deflate src into dst when it saves at least 1/8: returns the compressed length, or 0 when
 * it does not pay off (store raw). dst_cap must be >= len. */
size_t proto_deflate(const void *src, size_t len, void *dst, size_t dst_cap);
/* Inflate exactly dst_len bytes from exactly src_len bytes, else EBADMSG. */
int proto_inflate(const void *src, size_t src_len, void *dst, size_t dst_len, struct hm_err *err);

/* ---- portable structs <-> host structs ---- */
void proto_stat_from_host(const struct stat *st, struct proto_stat *out);
void proto_stat_to_host(const struct proto_stat *in, struct stat *st);
void proto_statfs_from_host(const struct statfs *sf, struct proto_statfs *out);
void proto_statfs_to_host(const struct proto_statfs *in, struct statfs *sf);
int proto_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct proto_addr *out,
			     struct hm_err *err);
socklen_t proto_addr_to_sockaddr(const struct proto_addr *a, struct sockaddr_storage *ss);
/* "10.0.0.1:80", "[fe80::1%2]:53" */
const char *proto_addr_str(const struct proto_addr *a, char *buf, size_t len);

/* Session targets: "pod/NAME" (local trace-pod name), "pid/N", "container/ID". The
 * parser is strict so the agent can use NAME and ID in paths and /proc scans. */
enum proto_target_kind { PROTO_TARGET_POD = 1, PROTO_TARGET_PID, PROTO_TARGET_CONTAINER };
struct proto_target {
	enum proto_target_kind kind;
	char value[PROTO_NAME_MAX]; /* NAME, ID or the pid's digits */
	uint32_t pid;		    /* PROTO_TARGET_PID */
};
int proto_target_parse(const char *s, struct proto_target *t, struct hm_err *err);

#endif
