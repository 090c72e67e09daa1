/* Interfaces between the network handler files of trace-run (net_*.c). Not for other
 * files of trace-run (tracer/redirect): they use session.h.
 *
 * The design is a local proxy with real kernel sockets on the program's side:
 *  - TCP, unix agent: a connect() to a REMOTE destination asks the agent to connect from
 *    the pod (in a worker thread), gets the pod's connected socket itself over the unix
 *    socket (PROTO_FEAT_TCP_FD) and puts it under the program's fd number
 *    (TRACER_REPLACE_FD), with the program's O_NONBLOCK, FD_CLOEXEC and socket options:
 *    no relay, the kernel answers getsockname/getpeername (net_tcp.c, hand_off).
 *  - TCP otherwise (an agent that does not hand sockets off): the agent connects from the pod
 *    (in a worker thread; the program's thread waits in its connect, the supervisor
 *    does not), then connects the program's own socket (a pidfd_getfd duplicate) to
 *    trace-run's relay listener on loopback, pairs the accepted connection with the
 *    agent's stream and hands both to the splice relay (relay/relay.h). When the agent
 *    is a TCP address (--agent HOST:PORT), the program's socket instead connects to
 *    the agent itself and sends the STREAM_HELLO: its bytes then go straight to the
 *    agent with no trace-run process in between. The program's reads and writes are
 *    never intercepted.
 *  - UDP: each redirected program socket has one agent UDP stream and one loopback
 *    "proxy" socket per remote peer. Datagrams the program sends natively to a proxy
 *    go to the agent addressed to that peer; datagrams from the agent come to the
 *    program from the proxy of their real source. recvfrom/recvmsg on a redirected
 *    socket are done by trace-run, which writes the real source (the proxy's peer)
 *    into the program's buffers.
 *  - Sockets are known by inode (stable across dup and fork); getpeername and
 *    getsockname of redirected sockets are answered from that table. Entries of closed
 *    sockets are found with sock_diag and released. */
#ifndef HERMIT_TRACER_NET_INTERNAL_H
#define HERMIT_TRACER_NET_INTERNAL_H

#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "relay/relay.h"
#include "tracer/redirect/session.h"

/* A socket address as the program sees one. */
struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* Loopback endpoint of a UDP socket that stands in for one remote peer. */
struct net_proxy {
	int fd;
	struct net_addr local;	/* where the program's socket sends to reach the peer */
	struct net_addr remote; /* the peer, in the program socket's family */
	struct net_proxy *next;
	struct net_sock *sock;
};

struct net_sock {
	ino_t ino;
	int type;   /* SOCK_STREAM or SOCK_DGRAM */
	int family; /* of the program's socket */
	struct net_sock *next;
	int64_t last_ms; /* hm_now_ms of the last traffic (UDP) or creation (TCP) */
	/* the program socket's own address (on loopback, or its bound address) and the
	 * loopback peer it is connected to (listener or proxy): how sock_diag finds it */
	struct net_addr prog, diag_peer;
	/* TCP */
	struct net_addr peer;  /* the original destination */
	struct net_addr local; /* the pod-side address the agent's socket got */
	bool delivered;	       /* the connect's answer reached the program */
	bool handed_off;       /* the program's fd is the pod's socket: the kernel answers */
	/* UDP */
	int stream; /* agent UDP stream (frames), O_NONBLOCK */
	struct proto_frame_reader reader;
	bool connected; /* to peer, through its proxy */
	struct net_proxy *proxies;
};

struct net_state {
	struct trace_session *s;
	struct relay_counters counters;
	struct relay *relay;
	int listen4, listen6; /* the relay listeners; listen6 -1 without IPv6 loopback */
	struct net_addr listen4_addr, listen6_addr;
	bool have6; /* ::1 can be bound */
	/* --agent HOST:PORT: the agent's address, per family of the program's socket
	 * (IPv4 as v4-mapped for AF_INET6 sockets when the agent has no IPv6 one).
	 * Redirected sockets connect there themselves and carry the agent's stream: no
	 * relay, no loopback hop. len 0 when there is none for that family. */
	struct net_addr direct4, direct6;

	pthread_mutex_t lock; /* the table and every net_sock in it */
	struct net_sock *table[1024];
	size_t n_tcp, n_udp;
	ino_t last_ino; /* the socket the answer being sent is about (see undo) */

	/* the UDP thread */
	pthread_t thread;
	bool thread_started;
	int epfd, wake_fd;
	bool stopping;
	int diag_fd;	/* NETLINK_SOCK_DIAG, used by the UDP thread only */
	uint8_t *dgram; /* one datagram, UDP thread only */
	unsigned long redirected_tcp, redirected_udp, dns_answers;
	int jobs_running; /* atomic: worker threads that may still use the agent client */
	bool nofile_raised;
	struct net_incoming
	    *incoming; /* net_incoming.c; NULL when feature.network.incoming is off */
};

bool trace_net_addr_is_v4(const struct net_addr *a); /* AF_INET or v4-mapped AF_INET6 */
/* 16-byte form (IPv4 as ::ffff:a.b.c.d) and port, for comparisons */
void trace_net_addr_key(const struct net_addr *a, uint8_t key[16], uint16_t *port);
bool trace_net_addr_equal(const struct net_addr *a, const struct net_addr *b);
/* a in the program socket's family: IPv4 becomes v4-mapped for AF_INET6 sockets and
 * v4-mapped becomes IPv4 for AF_INET ones */
void trace_net_addr_for_family(const struct net_addr *a, int family, struct net_addr *out);
int trace_net_addr_from_proto(const struct proto_addr *p, struct net_addr *out);
int trace_net_addr_to_proto(const struct net_addr *a, struct proto_addr *out, struct hm_err *err);
const char *trace_net_addr_str(const struct net_addr *a, char *buf, size_t len);
/* the loopback address of family (v6 without ::1: ::ffff:127.0.0.1), port */
void trace_net_loopback(const struct net_state *st, int family, uint16_t port,
			struct net_addr *out);
uint16_t trace_net_addr_port(const struct net_addr *a);
/* Read a sockaddr argument of the program (CONTINUE material when it fails). */
int trace_net_read_addr(const struct tracer_call *call, uint64_t addr, uint64_t len,
			struct net_addr *out);
/* Write addr into the program's (addr, *len_ptr) pair the way the kernel does:
 * truncated to the buffer, the full length stored. */
int trace_net_write_addr(const struct tracer_call *call, const struct net_addr *addr, uint64_t buf,
			 uint64_t len_ptr, struct hm_err *err);

/* The program's fd as a socket of trace-run's (pidfd_getfd, O_CLOEXEC). */
int trace_net_getfd(const struct tracer_call *call, int fd, struct hm_err *err);
/* The inode of the program's fd when it is a socket, else 0 (/proc/TID/fd/N). */
ino_t trace_net_fd_ino(const struct tracer_call *call, int fd);

/* under st->lock */
struct net_sock *trace_net_table_find(struct net_state *st, ino_t ino);
void trace_net_table_insert(struct net_state *st, struct net_sock *ns);
void trace_net_table_remove(struct net_state *st, struct net_sock *ns);
/* insert ns, replacing (and freeing) an entry of the same inode */
void trace_net_table_replace(struct net_state *st, struct net_sock *ns);
/* not under st->lock: insert ns, replacing (and freeing) an entry of the same inode */
void trace_net_table_put(struct net_state *st, struct net_sock *ns);
/* frees the entry (closes its UDP stream and proxies); not in the table any more */
void trace_net_sock_free(struct net_state *st, struct net_sock *ns);
/* AF_INET / AF_INET6 of a socket (SO_DOMAIN), 0 when unknown */
int trace_net_socket_family(int fd);
/* false once sock_diag says the program's socket ns->ino is gone */
bool trace_net_sock_alive(struct net_state *st, const struct net_sock *ns);
/* the same with a NETLINK_SOCK_DIAG socket of the caller's (one per thread) */
bool trace_net_sock_alive_fd(int diag_fd, const struct net_sock *ns);

/* ---- net_tcp.c ---- */
int trace_net_tcp_init(struct net_state *st, struct hm_err *err);
void trace_net_tcp_fini(struct net_state *st);
struct tracer_result trace_net_tcp_connect(struct net_state *st, const struct tracer_call *call,
					   int dup, ino_t ino, const struct net_addr *dst);

/* ---- net_udp.c ---- */
int trace_net_udp_init(struct net_state *st, struct hm_err *err);
void trace_net_udp_fini(struct net_state *st);
struct tracer_result trace_net_udp_connect(struct net_state *st, const struct tracer_call *call,
					   int dup, ino_t ino, const struct net_addr *dst);
/* UDP datagrams with an explicit REMOTE destination: sendto/sendmsg/sendmmsg */
struct tracer_result trace_net_udp_sendto(struct net_state *st, const struct tracer_call *call,
					  int fd, uint64_t buf, uint64_t len,
					  const struct net_addr *dst);
struct tracer_result trace_net_udp_sendmsg(struct net_state *st, const struct tracer_call *call);
struct tracer_result trace_net_udp_sendmmsg(struct net_state *st, const struct tracer_call *call);
struct tracer_result trace_net_udp_recv(struct net_state *st, const struct tracer_call *call);

/* ---- net_incoming.c: the target's incoming traffic to the program's listeners ----
 * bind/listen/accept/accept4 of the program's TCP sockets; delivered connections come
 * to the program's real listener from a loopback socket of trace-run's (relayed raw for
 * steal, fed from INCOMING_DATA frames for mirror). */
int trace_net_incoming_init(struct net_state *st, struct hm_err *err);
/* unsubscribes, ends the delivered connections' threads */
void trace_net_incoming_fini(struct net_state *st);
/* getpeername/getsockname of an accepted socket the table does not know (accepted
 * without trace-run): the original client / the target's address. */
bool trace_net_incoming_name(struct net_state *st, const struct tracer_call *call, bool peer,
			     struct net_addr *out);

/* the state net_incoming*.c share; everything below net_incoming.lock is under it */
struct inc_listener {
	struct inc_listener *next;
	ino_t ino;
	int family;
	struct net_addr asked; /* what the program bound */
	struct net_addr real;  /* what the socket is bound to */
	uint16_t local_port, remote_port;
	bool moved;   /* the asked port was taken here: bound to another */
	uint32_t sub; /* 0: not subscribed */
	uint8_t mode; /* PROTO_INCOMING_* */
	bool pending; /* a subscription is being asked for */
};

/* a delivered connection: trace-run's loopback socket's source port -> the client */
struct inc_conn {
	struct inc_conn *next;
	uint16_t port;
	ino_t listener;
	struct net_addr client, server; /* server: the target's address, the asked port */
	int64_t added_ms;
	/* steal over a unix agent: the pod's accepted socket, which the program's accept
	 * gets in place of this loopback placeholder; -1: the placeholder is relayed */
	int pod_socket;
};
/* closes its pod_socket */
void trace_incoming_conn_free(struct inc_conn *c);

/* a mirror connection being fed, so that fini can end it */
struct inc_feed {
	struct inc_feed *next;
	int stream;
};

struct net_incoming {
	struct net_state *st;
	const struct policy_config *cfg;
	pthread_mutex_t lock; /* everything below */
	struct inc_listener *listeners;
	struct inc_conn *conns;
	struct inc_feed *feeds;
	size_t n_listeners, n_conns;
	bool stopping;
	int threads; /* delivery threads still running (at most INCOMING_THREADS_MAX) */
	pthread_cond_t threads_done;
	/* connections waiting for a delivery thread, oldest first (at most
	 * INCOMING_WAITING_MAX) */
	struct inc_delivery *waiting, *waiting_tail;
	size_t n_waiting;
	/* the housekeeping thread */
	pthread_t thread;
	bool thread_started;
	int wake_fd;
	int diag_fd;
	/* counters for the summary line */
	unsigned long delivered, failed, refused;
	unsigned long refused_unsaid; /* since the last warning, at most one a second */
	int64_t refused_warned_ms;
	struct tracer_once warned;
};

/* under in->lock */
struct inc_listener *trace_incoming_listener_by_ino(struct net_incoming *in, ino_t ino);
struct inc_listener *trace_incoming_listener_by_sub(struct net_incoming *in, uint32_t sub);
struct inc_conn *trace_incoming_conn_take(struct net_incoming *in, uint16_t port);
/* where trace-run reaches the listener: its own address, loopback for a wildcard */
void trace_incoming_listener_target(const struct net_state *st, const struct inc_listener *l,
				    struct net_addr *out);
bool trace_net_addr_is_loopback(const struct net_addr *a); /* 127/8, ::1 (v4-mapped too) */
/* the program's socket args[0] as trace-run's (pidfd_getfd), -1 when it cannot be had */
int trace_incoming_getfd(const struct tracer_call *call);
/* net_incoming_deliver.c: the INCOMING_CONNECTION callback (the client's reader thread).
 * A pod is hostile to this machine: a flood of connections to a mirrored or stolen port
 * gets at most INCOMING_THREADS_MAX delivery threads and INCOMING_WAITING_MAX waiting
 * connections; more are refused (left to the agent, which closes them when their
 * token expires) with a warning at most once a second. */
#define INCOMING_THREADS_MAX 128
#define INCOMING_WAITING_MAX 256
struct inc_delivery;
void trace_incoming_on_connection(void *arg, const struct proto_incoming_connection *ev);
/* Forget the connections still waiting (once no delivery thread runs); returns how many. */
size_t trace_incoming_waiting_drop(struct net_incoming *in);
/* net_incoming_accept.c: the accept and accept4 handler */
struct tracer_result trace_incoming_accept(const struct tracer_call *call, void *data);

/* ---- net_handlers.c: work done by a thread while the program's call waits ---- */
struct net_job;
typedef void (*net_job_fn)(struct net_job *job);
/* What a job does and what it found; the handler fills the first part. */
struct net_job {
	struct net_state *st;
	net_job_fn work;
	struct tracer_result (*finish)(struct net_job *job, const struct tracer_call *call);
	void (*release)(struct net_job *job); /* free what finish did not take */
	int efd;			      /* eventfd, readable once work is done */
	int refs;			      /* atomic: the worker and the supervisor */
	/* inputs */
	int dup; /* the program's socket, owned */
	ino_t ino;
	struct net_addr dst;
	struct proto_addr pdst;
	uint8_t family;
	void *data; /* a datagram to send once the stream exists (malloc'ed) */
	size_t data_len;
	/* outputs */
	int result_fd;
	bool direct;	 /* dup itself is connected to the agent and carries the stream */
	bool pod_socket; /* result_fd is the pod's own socket (TCP hand-off, unix agent) */
	struct proto_addr local;
	struct hm_err err;
};
/* Start job->work in a thread and defer the call until it is done; finish then gives
 * the answer. Takes job (malloc'ed) in every case. */
struct tracer_result trace_net_job_defer(struct net_job *job);
/* A job that owns dup (closed with the job); NULL on ENOMEM (dup left open). */
struct net_job *trace_net_job_new(struct net_state *st, int dup, ino_t ino);
/* Free a job that was never started. */
void trace_net_job_discard(struct net_job *job);
/* Run fn(arg) in a detached thread that takes none of trace-run's signals. */
int trace_net_thread_start(void *(*fn)(void *), void *arg, struct hm_err *err);

#endif
