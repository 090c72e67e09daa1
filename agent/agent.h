/* agent: trace-agent, hermit's node agent, as a server: what its main (agent/main.c)
 * and the tests start. It serves sessions on local targets (pod/NAME, pid/N,
 * container/ID) to clients (client/client.h) over a unix socket and/or a TCP address:
 * the target's environment, its files and connections from its network. The pieces
 * the server is made of (targets, files, streams, budgets, admission...) are in
 * agent/internal.h. */
#ifndef HERMIT_AGENT_H
#define HERMIT_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/util.h"

/* short: a client claims its token within a round trip; an unclaimed token holds a
 * socket or file open */
#define AGENT_STREAM_TTL_MS 10000

/* connections that have not sent their first frame, per transport (each holds an fd) */
#define AGENT_MAX_PENDING_PER_TRANSPORT 256

/* ---- limits (budget.c) ----
 * What one client may take of the agent's shared resources. Each resource has a
 * global limit and a per-session one (for sessions: per peer, a unix uid or a TCP
 * address); 0 means unlimited. A refusal fails with err->code the errno the client
 * sees and a message naming the trace-agent flag: sessions EUSERS; streams EMFILE
 * (this session's) or ENFILE (the agent's); reply memory ENOBUFS; connects EAGAIN.
 * Streams count from the reply that opens them (an unclaimed token) to the relay's
 * close, or to the close by the mirror or the HTTP router of a stream they were handed.
 * Reply memory is the only resource a request waits for (in arrival order). */
enum agent_budget_res {
	AGENT_RES_SESSIONS,
	AGENT_RES_STREAMS,  /* unclaimed tokens; streams relayed, or held by mirror/router */
	AGENT_RES_BYTES,    /* memory held by replies being built or sent */
	AGENT_RES_CONNECTS, /* TCP connects in progress, a socket each */
	AGENT_RES_COUNT
};
struct agent_budget_limits {
	uint64_t global[AGENT_RES_COUNT];
	uint64_t per_session[AGENT_RES_COUNT]; /* [AGENT_RES_SESSIONS]: per peer */
};
void agent_budget_default_limits(struct agent_budget_limits *l);

/* ---- the server (server.c): listeners, connections, sessions ---- */
#define AGENT_VERSION "0.1"
#define AGENT_SERVER_NAME "trace-agent " AGENT_VERSION
/* where containerd's runc shim v2 keeps its tasks (the DaemonSet mounts the host's
 * /run/containerd there) */
#define AGENT_CONTAINERD_STATE_DEFAULT "/run/containerd/io.containerd.runtime.v2.task"
/* --kernel-relay-memory's default: what the kernel may queue for all streams at once.
 * Without a bound, 8192 streams (--max-streams) of 2 MiB a direction, which one peer
 * can open, would be 32 GiB of kernel memory no socket accounts for. */
#define AGENT_KR_MEMORY_DEFAULT (256ull << 20)
struct agent_server_config {
	const char *unix_path;	  /* NULL: no unix listener */
	const char *listen_addr;  /* "ADDR:PORT" / "[V6]:PORT"; NULL: no TCP listener */
	const char *token;	  /* the auth token every control connection presents */
	uint64_t max_file_size;	  /* FILE_READ cap */
	int handshake_timeout_ms; /* for the first frame, from accept */
	gid_t unix_gid;		  /* group of the unix socket (mode 0660) */
	bool allow_any_pid;	  /* pid/N for every token holder (else see peer.c) */
	bool insecure_listen;	  /* --listen may be a non-loopback address */
	bool no_kernel_relay;	  /* --no-kernel-relay: every stream in the user-space relay */
	/* --kernel-relay-memory: bytes the kernel may queue between the sockets of all
	 * kernel-relayed streams (their credits); 0: unlimited */
	uint64_t kernel_relay_memory;
	unsigned stream_ttl_ms;
	size_t mirror_ring_bytes;     /* per mirrored netns; 0: the default (32 MiB) */
	size_t mirror_copy_bytes;     /* how far one mirror copy may fall behind; 0: 64 MiB */
	const char *containerd_state; /* runc v2 task dir for container/ID; NULL: none */
	struct agent_budget_limits limits;
	int stop_fd; /* readable (e.g. a signalfd) -> graceful shutdown */
};
/* Serve until stop_fd turns readable, then end every session, release everything and
 * remove the unix socket. */
int agent_server_run(const struct agent_server_config *cfg, struct hm_err *err);

#endif
