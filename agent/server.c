/* trace-agent's server: listeners, one thread per connection, authentication, the
 * session on each control connection and its request dispatch.
 *
 * Threads: the main thread accepts and reads every connection's first frame
 * (admission.c: no thread for a peer that has not said anything yet); then each
 * connection has a thread that checks that frame, reads the next ones and answers them
 * in order, except TCP_CONNECT, whose connect the same thread waits for beside the
 * frames (connects.c), so a slow connect does not hold up the session's other requests.
 * Frames to a connection are serialized by its send lock. A connection is freed by its
 * own thread when it ends: nothing else refers to it (an unclaimed token or a relayed
 * stream holds its fd and a reference to the session's budget account instead).
 *
 * Everything a peer sends is hostile: before HELLO succeeds only a hello-sized frame is
 * read, within a deadline; a frame that is malformed, oversized, of an unknown type or
 * not a request closes its connection, and only that one. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "agent/internal.h"

/* inline file contents smaller than this are sent raw (see handle_file_read) */
#define AGENT_COMPRESS_MIN (64u << 10)

#define MAX_CONNECTIONS 4096
#define MAX_PENDING_PER_PEER 64 /* AGENT_MAX_PENDING_PER_TRANSPORT of one uid / address */
#define ACCEPT_BATCH 32		/* accepts per listener between reads of pending ones */
/* a full accept queue drops a TCP client's SYN (it retries after 1 s) and blocks a unix
 * client: room for floods, at the kernel's cost (capped by net.core.somaxconn) */
#define LISTEN_BACKLOG 4096
#define SEND_STALL_MS 30000 /* a peer that reads nothing for this long is dropped */
/* ... for an event: the threads that send them (the mirror engine, the HTTP router's
 * opener, a port's accept thread) serve every session, and a session that stopped
 * reading must not hold them (the mirror engine's ring buffers overflow meanwhile, and
 * every mirrored connection of the agent is lost) */
#define EVENT_STALL_MS 200
#define DRAIN_MS 500 /* reading leftovers before close, so TCP sends no RST */
#define SHUTDOWN_WAIT_MS 10000
#define THREAD_STACK (256u << 10)
#define FRAME_CHARGE_MIN (64u << 10) /* smaller requests are not counted */

struct server {
	const struct agent_server_config *cfg;
	int unix_fd, tcp_fd;
	dev_t unix_dev;
	ino_t unix_ino;
	struct relay *relay;
	struct agent_krelay *krelay; /* TCP pairs moved by the kernel; NULL: all by relay */
	struct agent_streams *streams;
	struct agent_budget *budget;
	struct agent_stats stats;
	struct agent_admission *admission;
	struct agent_incoming *incoming;     /* subscriptions to the targets' ports */
	struct agent_mirror *mirror;	     /* the mirror engine (mirror.c), NULL without */
	struct agent_http_steal *http_steal; /* routes the filtered steal ports */
	int stop_efd; /* eventfd, readable once shutdown began: every connection polls it */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* nconns changed */
	unsigned nconns;
	atomic_uint_fast64_t next_conn_id, next_session_id;
};

struct conn {
	struct server *srv;
	/* the connection's thread, and each subscription and event in flight of its
	 * session (incoming.c): the last one frees it */
	atomic_uint refs;
	int fd;
	uint64_t id;
	char peer[128];
	struct agent_peer from;
	struct proto_frame first; /* read by admission; consumed by handshake() */

	pthread_mutex_t send_lock; /* frames out; also guards closed */
	bool closed;		   /* the session ended: nothing more is sent or parked */

	uint64_t features; /* agreed in the handshake */
	uint64_t session_id;
	struct agent_budget_account *account; /* the session's share of the budgets */
	struct agent_connects *connects;      /* TCP connects in progress (serve's thread) */
	uint64_t frame_charge;		      /* reply memory held by the request read */
	struct agent_target *target;
	char target_name[PROTO_NAME_MAX];	/* as the client named it */
	struct agent_incoming_session incoming; /* the session as incoming.c sees it */
	/* serve's thread looks for the next request of a burst a little while before it
	 * sleeps in poll: waking an idle vCPU costs more than the whole request */
	struct hm_spin request_spin;
	uint64_t answered_ns; /* when the last request was answered; 0: not since */
};

static int errno_for_wire(int e)
{
	return e > 0 && e <= 4095 ? e : EIO;
}

/* ---- connection lifetime ---- */

static void conn_put(struct conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	struct server *srv = c->srv;
	if (c->fd >= 0)
		close(c->fd);
	agent_target_put(c->target);
	agent_budget_account_put(c->account);
	proto_frame_release(&c->first);
	pthread_mutex_destroy(&c->send_lock);
	free(c);
	atomic_fetch_sub(&srv->stats.connections, 1);
	pthread_mutex_lock(&srv->lock);
	srv->nconns--;
	pthread_cond_broadcast(&srv->cond);
	pthread_mutex_unlock(&srv->lock);
}

/* ---- sending ---- */

/* Write a whole buffer to the non-blocking fd. Gives up when the peer has read nothing
 * for SEND_STALL_MS or the agent stops. Call with send_lock held. */
static int send_bytes(struct conn *c, const uint8_t *p, size_t len, int stall_ms,
		      struct hm_err *err)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = send(c->fd, p + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return hm_err_errno(err, "send");
		struct pollfd pf[2] = {{.fd = c->fd, .events = POLLOUT},
				       {.fd = c->srv->stop_efd, .events = POLLIN}};
		int r = poll(pf, 2, stall_ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return hm_err_errno(err, "poll");
		if (r == 0)
			return hm_err_set(err, ETIMEDOUT, "peer read nothing for %d ms", stall_ms);
		if (pf[1].revents)
			return hm_err_set(err, ESHUTDOWN, "agent stopping");
	}
	atomic_fetch_add(&c->srv->stats.ctl_bytes_in, len);
	return 0;
}

static int lock_within(pthread_mutex_t *lock, int ms)
{
	struct timespec until;
	hm_realtime_in(&until, ms);
	return pthread_mutex_timedlock(lock, &until);
}

/* Send one frame unless the session has ended. A reply we cannot encode (a value
 * outside the protocol's limits, e.g. a too long link target) becomes an ERROR. An
 * event waits at most EVENT_STALL_MS, for the lock and for the peer. */
static int conn_send_frame(struct conn *c, uint32_t id, const struct proto_msg *m, bool event)
{
	struct hm_err err = {0};
	struct proto_buf b = PROTO_BUF_INIT;
	if (proto_encode(&b, id, m, &err) < 0) {
		hm_warn("conn %llu: cannot encode %s: %s", (unsigned long long)c->id,
			proto_type_name(m->type), err.msg);
		proto_buf_reset(&b);
		char text[PROTO_MSG_MAX];
		snprintf(text, sizeof(text), "agent could not encode its %s: %.900s",
			 proto_type_name(m->type), err.msg);
		struct proto_msg e = {.type = PROTO_ERROR};
		e.error.errnum = err.code == E2BIG ? E2BIG : EIO;
		e.error.message = text;
		atomic_fetch_add(&c->srv->stats.errors, 1);
		if (proto_encode(&b, id, &e, &err) < 0) {
			proto_buf_release(&b);
			return -1;
		}
	}
	int rc = 0;
	int stall_ms = event ? EVENT_STALL_MS : SEND_STALL_MS;
	if (event && lock_within(&c->send_lock, EVENT_STALL_MS) != 0) {
		/* a reply is being sent (a session's own thread may be stuck in a big one
		 * to a peer that stopped reading): the event is lost, the session goes on */
		proto_buf_release(&b);
		return -1;
	}
	if (!event)
		pthread_mutex_lock(&c->send_lock);
	if (c->closed) {
		rc = -1;
	} else if (send_bytes(c, b.data, b.len, stall_ms, &err) < 0) {
		hm_debug("conn %llu: %s: %s", (unsigned long long)c->id, proto_type_name(m->type),
			 err.msg);
		/* a peer that cannot take a reply gets nothing more: the reader notices the
		 * dead socket or the shutdown */
		c->closed = true;
		shutdown(c->fd, SHUT_RDWR);
		rc = -1;
	}
	pthread_mutex_unlock(&c->send_lock);
	proto_buf_release(&b);
	return rc;
}

static int conn_send(struct conn *c, uint32_t id, const struct proto_msg *m)
{
	return conn_send_frame(c, id, m, false);
}

static int conn_send_error(struct conn *c, uint32_t id, uint16_t req_type, int errnum,
			   const char *msg)
{
	atomic_fetch_add(&c->srv->stats.errors, 1);
	hm_debug("conn %llu: %s #%u failed: %s", (unsigned long long)c->id,
		 proto_type_name(req_type), id, msg);
	char text[PROTO_MSG_MAX];
	snprintf(text, sizeof(text), "%s", msg); /* the protocol's message limit */
	struct proto_msg m = {.type = PROTO_ERROR};
	m.error.errnum = errno_for_wire(errnum);
	m.error.message = text;
	return conn_send(c, id, &m);
}

static int conn_send_err(struct conn *c, uint32_t id, uint16_t req_type, const struct hm_err *err)
{
	return conn_send_error(c, id, req_type, err->code ? err->code : EIO, err->msg);
}

/* End the session on this connection: a last frame (SESSION_ENDED with why), no more
 * after it, and the session's unclaimed streams closed. */
static void conn_end(struct conn *c, int errnum, const char *why)
{
	pthread_mutex_lock(&c->send_lock);
	bool was_open = !c->closed;
	pthread_mutex_unlock(&c->send_lock);
	if (was_open && errnum) {
		struct proto_msg m = {.type = PROTO_SESSION_ENDED};
		m.error.errnum = errno_for_wire(errnum);
		m.error.message = why;
		conn_send(c, 0, &m);
	}
	pthread_mutex_lock(&c->send_lock);
	c->closed = true;
	pthread_mutex_unlock(&c->send_lock);
	agent_budget_release(c->account, AGENT_RES_CONNECTS, agent_connects_count(c->connects));
	agent_budget_release(c->account, AGENT_RES_BYTES, c->frame_charge);
	c->frame_charge = 0;
	agent_connects_destroy(c->connects);
	c->connects = NULL;
	if (c->session_id) {
		/* first: no new connection is announced to the session from here on */
		agent_incoming_session_end(c->srv->incoming, &c->incoming);
		agent_streams_drop_session(c->srv->streams, c->session_id);
		agent_budget_session_close(c->account);
		atomic_fetch_sub(&c->srv->stats.sessions, 1);
		hm_info("conn %llu: session %llu on %s ended: %s", (unsigned long long)c->id,
			(unsigned long long)c->session_id, agent_target_describe(c->target),
			why ? why : "client disconnected");
	}
	if (was_open && errnum && c->fd >= 0) {
		/* Let the last frame reach the client: closing with unread input would make
		 * TCP reset the connection and maybe drop it. */
		shutdown(c->fd, SHUT_WR);
		int64_t until = hm_deadline_in(DRAIN_MS);
		char sink[4096];
		for (;;) {
			/* the deadline ends the drain even while the client keeps sending */
			if (hm_now_ms() >= until || hm_poll_fd(c->fd, POLLIN, until) <= 0)
				break;
			ssize_t n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
		}
	}
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
}

/* ---- request handlers: each answers exactly once (reply or ERROR) ---- */

static void target_refused(struct conn *c, const struct proto_msg *m, const struct hm_err *err)
{
	hm_warn("conn %llu (%s): target %s refused: %s", (unsigned long long)c->id, c->peer,
		m->session_open.target, err->msg);
	conn_send_err(c, m->id, m->type, err);
}

/* ---- the session as incoming.c sees it ---- */

static int incoming_send(void *conn, const struct proto_msg *m)
{
	return conn_send_frame(conn, 0, m, true);
}

static void incoming_hold(void *conn)
{
	struct conn *c = conn;
	atomic_fetch_add(&c->refs, 1);
}

static void incoming_release(void *conn)
{
	conn_put(conn);
}

static void session_incoming_init(struct conn *c, const char *description, bool confined)
{
	struct agent_incoming_session *s = &c->incoming;
	s->id = c->session_id;
	snprintf(s->who, sizeof(s->who), "session %llu (%.80s) on %.120s",
		 (unsigned long long)c->session_id, c->peer, description);
	s->target = c->target;
	s->account = c->account;
	s->confined = confined;
	s->uid = c->from.uid;
	agent_peer_key(&c->from, s->peer_key, sizeof(s->peer_key));
	s->pass_uid = (c->features & PROTO_FEAT_TCP_FD) && c->from.is_unix && c->from.has_cred
			  ? (int64_t)c->from.uid
			  : -1;
	s->send = incoming_send;
	s->hold = incoming_hold;
	s->release = incoming_release;
	s->conn = c;
}

static void handle_incoming(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	if (m->type == PROTO_INCOMING_UNSUBSCRIBE) {
		if (agent_incoming_unsubscribe(c->srv->incoming, &c->incoming,
					       m->incoming_unsubscribe.subscription, &err) < 0) {
			conn_send_err(c, m->id, m->type, &err);
			return;
		}
		struct proto_msg r = {.type = PROTO_OK};
		conn_send(c, m->id, &r);
		return;
	}
	uint64_t feature = m->incoming_subscribe.mode == PROTO_INCOMING_MIRROR ? PROTO_FEAT_MIRROR
									       : PROTO_FEAT_STEAL;
	if (!(c->features & feature)) {
		conn_send_error(c, m->id, m->type, EOPNOTSUPP,
				"incoming mode not agreed in the handshake");
		return;
	}
	char note[PROTO_MSG_MAX];
	struct proto_msg r = {.type = PROTO_INCOMING_SUBSCRIBE_REPLY};
	if (agent_incoming_subscribe(c->srv->incoming, &c->incoming, &m->incoming_subscribe,
				     &r.incoming_subscribe_reply, note, sizeof(note), &err) < 0) {
		hm_info("conn %llu (%s): subscribe to port %u refused: %s",
			(unsigned long long)c->id, c->peer, m->incoming_subscribe.port, err.msg);
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	conn_send(c, m->id, &r);
}

/* A session refused after its budget was taken gives its slot back. */
static void session_account_drop(struct agent_budget_account *account)
{
	agent_budget_session_close(account);
	agent_budget_account_put(account);
}

static void handle_session_open(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	if (c->target) {
		conn_send_error(c, m->id, m->type, EISCONN,
				"this connection has a session already; open another connection");
		return;
	}
	struct proto_target spec;
	if (proto_target_parse(m->session_open.target, &spec, &err) < 0) {
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	bool any_pid = c->srv->cfg->allow_any_pid;
	if (spec.kind == PROTO_TARGET_PID && spec.pid > 0 && spec.pid <= INT32_MAX &&
	    agent_peer_may_target_pid(&c->from, (pid_t)spec.pid, any_pid, &err) < 0) {
		target_refused(c, m, &err);
		return;
	}
	/* --max-peer-sessions counts by who connected (uid / source address), as the
	 * admission's per-peer limit does */
	char peer_key[64];
	agent_peer_key(&c->from, peer_key, sizeof(peer_key));
	struct agent_budget_account *account;
	if (agent_budget_session_open(c->srv->budget, peer_key, &account, &err) < 0) {
		hm_warn("conn %llu (%s): session refused: %s", (unsigned long long)c->id, c->peer,
			err.msg);
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	struct agent_target *t;
	if (agent_target_resolve(&spec, c->srv->cfg->containerd_state, &t, &err) < 0) {
		hm_info("conn %llu (%s): target %s: %s", (unsigned long long)c->id, c->peer,
			m->session_open.target, err.msg);
		session_account_drop(account);
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	/* A container/ID that is not a privileged runtime's container (a user can name a
	 * cgroup like one) is a process like any other: the pid/N rules hold for it. */
	bool pid_rules = spec.kind == PROTO_TARGET_PID;
	if (spec.kind == PROTO_TARGET_CONTAINER) {
		struct hm_err why = {0};
		if (agent_target_check_container(t, &why) < 0) {
			pid_rules = true;
			hm_info("conn %llu (%s): %s: %s; the pid/N rules apply",
				(unsigned long long)c->id, c->peer, agent_target_describe(t),
				why.msg);
		}
	}
	/* again now that the target pins the process (its pidfd): the pid may have been
	 * recycled in between, and a live target read after the check is the one checked */
	if (pid_rules) {
		int rc = agent_peer_may_target_pid(&c->from, agent_target_pid(t), any_pid, &err);
		if (rc == 0 && !agent_target_alive(t))
			rc = hm_err_plain(&err, ESRCH, "%s exited", m->session_open.target);
		if (rc < 0 && spec.kind == PROTO_TARGET_CONTAINER)
			hm_err_prefix(&err,
				      "%s: not a container of a privileged runtime (see the "
				      "agent's log)",
				      m->session_open.target);
		if (rc < 0) {
			agent_target_put(t);
			session_account_drop(account);
			target_refused(c, m, &err);
			return;
		}
	}
	/* A user's own process often has the host's / as its root: a pid/N session works
	 * on files as the user, not as the agent's root, from this (the session's) thread */
	if (pid_rules && agent_peer_needs_confining(&c->from, any_pid) &&
	    agent_peer_confine_thread(&c->from, &err) < 0) {
		agent_target_put(t);
		session_account_drop(account);
		target_refused(c, m, &err);
		return;
	}
	c->target = t;
	c->account = account;
	c->session_id = atomic_fetch_add(&c->srv->next_session_id, 1);
	snprintf(c->target_name, sizeof(c->target_name), "%s", m->session_open.target);
	atomic_fetch_add(&c->srv->stats.sessions, 1);
	char description[PROTO_NAME_MAX];
	/* the protocol's limit for descriptions is the target string's */
	snprintf(description, sizeof(description), "%.200s (pid %d)", c->target_name,
		 (int)agent_target_pid(t));
	hm_info("conn %llu (%s): session %llu opened on %s", (unsigned long long)c->id, c->peer,
		(unsigned long long)c->session_id, description);
	session_incoming_init(c, description,
			      pid_rules && agent_peer_needs_confining(&c->from, any_pid));
	struct proto_msg r = {.type = PROTO_SESSION_OPEN_REPLY};
	r.session_open_reply.session_id = c->session_id;
	r.session_open_reply.pid = (uint32_t)agent_target_pid(t);
	r.session_open_reply.description = description;
	conn_send(c, m->id, &r);
}

static void handle_env(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	struct agent_env env;
	if (agent_env_read(c->target, &env, &err) < 0) {
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	/* read before it is counted: an environment is small (AGENT_ENV_MAX at most) and
	 * its size is not known before */
	uint64_t cost = 0;
	for (uint32_t i = 0; i < env.count; i++)
		cost += 2 * (strlen(env.vars[i]) + 1) + 4 + sizeof(char *);
	if (agent_budget_reserve(c->account, AGENT_RES_BYTES, cost, AGENT_BUDGET_WAIT_MS, &err) <
	    0) {
		agent_env_release(&env);
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	struct proto_msg r = {.type = PROTO_ENV_REPLY};
	r.env_reply.count = env.count;
	r.env_reply.vars = env.vars;
	conn_send(c, m->id, &r);
	agent_env_release(&env);
	agent_budget_release(c->account, AGENT_RES_BYTES, cost);
}

static void send_file_read_reply(struct conn *c, const struct proto_msg *m,
				 struct agent_file_read_result *res)
{
	struct hm_err err = {0};
	hm_cleanup_close int file_fd = res->fd;
	void *data = res->data;
	struct proto_msg r = {.type = PROTO_FILE_READ_REPLY};
	r.file_read_reply.st = res->st;
	if (file_fd < 0) {
		if (res->size && !data) {
			conn_send_error(c, m->id, m->type, EIO, "file content missing");
			return;
		}
		r.file_read_reply.transfer = PROTO_XFER_INLINE;
		r.file_read_reply.data.data = data;
		r.file_read_reply.data.size = res->size;
		/* zlib costs ~60 us per small file and saves little there; it pays on big
		 * text files over slow links (port-forwarded agents) */
		r.file_read_reply.data.compress =
		    (c->features & PROTO_FEAT_ZLIB) && res->size >= AGENT_COMPRESS_MIN;
	} else {
		r.file_read_reply.transfer = PROTO_XFER_STREAM;
		r.file_read_reply.stream_size = res->size;
		if (agent_streams_add(c->srv->streams, c->session_id, c->account, RELAY_FILE,
				      hm_steal_fd(&file_fd), res->size, r.file_read_reply.token,
				      &err) < 0) {
			conn_send_err(c, m->id, m->type, &err);
			return;
		}
	}
	conn_send(c, m->id, &r);
}

static void handle_file_read(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	struct agent_file_read_result res = {.fd = -1};
	if (agent_file_read(agent_target_root_fd(c->target), &m->file_read,
			    c->srv->cfg->max_file_size, c->account, &res, &err) < 0) {
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	send_file_read_reply(c, m, &res);
	free(res.data);
	agent_budget_release(c->account, AGENT_RES_BYTES, res.reserved);
}

/* The mode bits a created file or directory may get: the agent creates them as root,
 * so setuid, setgid and sticky are root's to give only. */
static uint32_t creation_mode(const struct conn *c, uint32_t mode)
{
	bool root = c->from.is_unix && c->from.has_cred && c->from.uid == 0;
	return root ? mode : mode & 0777;
}

static void handle_file_write(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	struct proto_msg r = {.type = PROTO_FILE_WRITE_REPLY};
	struct proto_file_write req = m->file_write;
	req.mode = creation_mode(c, req.mode);
	if (agent_file_write(agent_target_root_fd(c->target), &req, &r.file_write_reply, &err) < 0)
		conn_send_err(c, m->id, m->type, &err);
	else
		conn_send(c, m->id, &r);
}

static void handle_file_simple(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	int root = agent_target_root_fd(c->target);
	struct proto_msg r = {.type = proto_reply_type(m->type)};
	char link[PROTO_PATH_MAX + 2];
	void *storage = NULL;
	uint64_t reserved = 0;
	int rc;
	switch (m->type) {
	case PROTO_FILE_STAT:
		rc = agent_file_stat(root, &m->path_req, &r.stat_reply, &err);
		break;
	case PROTO_FILE_ACCESS:
		rc = agent_file_access(root, &m->file_access, &err);
		break;
	case PROTO_FILE_READLINK:
		rc = agent_file_readlink(root, &m->path_req, link, sizeof(link), &r.readlink_reply,
					 &err);
		break;
	case PROTO_FILE_READDIR:
		rc = agent_file_readdir(root, &m->path_req, c->account, &r.readdir_reply, &storage,
					&reserved, &err);
		break;
	case PROTO_FILE_MKDIR: {
		struct proto_file_mkdir req = m->file_mkdir;
		req.mode = creation_mode(c, req.mode);
		rc = agent_file_mkdir(root, &req, &err);
		break;
	}
	case PROTO_FILE_UNLINK:
		rc = agent_file_unlink(root, &m->file_unlink, &err);
		break;
	case PROTO_FILE_RENAME:
		rc = agent_file_rename(root, &m->file_rename, &err);
		break;
	case PROTO_FILE_STATFS:
		rc = agent_file_statfs(root, &m->path_req, &r.statfs_reply, &err);
		break;
	default:
		rc = hm_err_set(&err, ENOSYS, "%s not handled", proto_type_name(m->type));
	}
	if (rc < 0)
		conn_send_err(c, m->id, m->type, &err);
	else
		conn_send(c, m->id, &r);
	free(storage);
	agent_budget_release(c->account, AGENT_RES_BYTES, reserved);
}

static void handle_udp_open(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	struct proto_msg r = {.type = PROTO_UDP_OPEN_REPLY};
	int fd =
	    agent_outgoing_udp_open(c->target, m->udp_open.family, &r.udp_open_reply.local, &err);
	if (fd < 0 || agent_streams_add(c->srv->streams, c->session_id, c->account, RELAY_UDP, fd,
					0, r.udp_open_reply.token, &err) < 0) {
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	conn_send(c, m->id, &r);
}

/* A connect finished: connects.c calls this on the session's thread. */
static void connect_done(void *ctx, uint32_t id, int fd, const struct proto_addr *local,
			 const struct hm_err *result)
{
	struct conn *c = ctx;
	agent_budget_release(c->account, AGENT_RES_CONNECTS, 1);
	struct hm_err err = *result;
	struct proto_msg r = {.type = PROTO_TCP_CONNECT_REPLY};
	if (fd >= 0) {
		r.tcp_connect_reply.local = *local;
		/* the hand-off goes only to this session's own unix peer (start_stream) */
		bool passable =
		    (c->features & PROTO_FEAT_TCP_FD) && c->from.is_unix && c->from.has_cred;
		if (agent_streams_add_tcp(c->srv->streams, c->session_id, c->account, fd,
					  passable ? (int64_t)c->from.uid : -1,
					  r.tcp_connect_reply.token, &err) < 0)
			fd = -1;
	}
	if (fd < 0) {
		conn_send_error(c, id, PROTO_TCP_CONNECT, err.code ? err.code : EIO, err.msg);
		return;
	}
	char local_str[80];
	hm_debug("conn %llu: session %llu: TCP from %s", (unsigned long long)c->id,
		 (unsigned long long)c->session_id,
		 proto_addr_str(&r.tcp_connect_reply.local, local_str, sizeof(local_str)));
	conn_send(c, id, &r);
}

static int spawn_detached(void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, THREAD_STACK);
	pthread_t th;
	int rc = pthread_create(&th, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return rc;
}

/* Started here, finished by the session's own loop (serve): a slow connect holds a
 * socket, not a thread, and does not hold up the session's other requests. */
static void handle_tcp_connect(struct conn *c, const struct proto_msg *m)
{
	struct hm_err err = {0};
	if (agent_budget_reserve(c->account, AGENT_RES_CONNECTS, 1, 0, &err) < 0) {
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	if (!c->connects && agent_connects_create(&c->connects, &err) < 0) {
		agent_budget_release(c->account, AGENT_RES_CONNECTS, 1);
		conn_send_err(c, m->id, m->type, &err);
		return;
	}
	agent_connects_start(c->connects, c->target, m->id, &m->tcp_connect.dst,
			     m->tcp_connect.timeout_ms, connect_done, c);
}

static void handle_status(struct conn *c, const struct proto_msg *m)
{
	struct proto_msg r = {.type = PROTO_STATUS_REPLY};
	agent_stats_fill(&c->srv->stats, AGENT_SERVER_NAME, agent_streams_pending(c->srv->streams),
			 &r.status_reply);
	agent_budget_status(c->srv->budget, &r.status_reply);
	agent_incoming_status(c->srv->incoming, &r.status_reply);
	r.status_reply.has_kernel_relay = true;
	r.status_reply.kernel_relay_on = c->srv->krelay != NULL;
	r.status_reply.kernel_streams = (uint32_t)atomic_load(&c->srv->stats.kernel_streams);
	conn_send(c, m->id, &r);
}

/* One decoded request. Returns < 0 when the connection must close. */
static int dispatch(struct conn *c, const struct proto_msg *m)
{
	uint16_t reply = proto_reply_type(m->type);
	if (!reply || m->type == PROTO_HELLO || m->type == PROTO_STREAM_HELLO) {
		hm_warn("conn %llu (%s): %s is not a request here; closing",
			(unsigned long long)c->id, c->peer, proto_type_name(m->type));
		atomic_fetch_add(&c->srv->stats.errors, 1);
		return -1;
	}
	atomic_fetch_add(&c->srv->stats.requests, 1);
	switch (m->type) {
	case PROTO_PING: {
		struct proto_msg r = {.type = PROTO_PONG};
		r.ping.nonce = m->ping.nonce;
		conn_send(c, m->id, &r);
		return 0;
	}
	case PROTO_STATUS:
		handle_status(c, m);
		return 0;
	case PROTO_SESSION_OPEN:
		handle_session_open(c, m);
		return 0;
	default:
		break;
	}
	if (!c->target) {
		conn_send_error(c, m->id, m->type, ENOTCONN, "no session: send SESSION_OPEN first");
		return 0;
	}
	switch (m->type) {
	case PROTO_ENV_GET:
		handle_env(c, m);
		break;
	case PROTO_FILE_READ:
		handle_file_read(c, m);
		break;
	case PROTO_FILE_WRITE:
		handle_file_write(c, m);
		break;
	case PROTO_FILE_STAT:
	case PROTO_FILE_ACCESS:
	case PROTO_FILE_READLINK:
	case PROTO_FILE_READDIR:
	case PROTO_FILE_MKDIR:
	case PROTO_FILE_UNLINK:
	case PROTO_FILE_RENAME:
	case PROTO_FILE_STATFS:
		handle_file_simple(c, m);
		break;
	case PROTO_TCP_CONNECT:
		handle_tcp_connect(c, m);
		break;
	case PROTO_UDP_OPEN:
		handle_udp_open(c, m);
		break;
	case PROTO_INCOMING_SUBSCRIBE:
	case PROTO_INCOMING_UNSUBSCRIBE:
		handle_incoming(c, m);
		break;
	default:
		conn_send_error(c, m->id, m->type, EOPNOTSUPP,
				"request not supported by this agent");
	}
	return 0;
}

/* ---- reading frames ---- */

enum wake {
	WAKE_FRAME,
	WAKE_CLOSED,
	WAKE_STOP,
	WAKE_TARGET,
	WAKE_TIMEOUT,
	WAKE_BAD,
	WAKE_CONNECTS
};

/* Sleep until the connection is readable (WAKE_FRAME) or something else happened: the
 * agent's stop, the target's exit, a connect of the session to finish or time out
 * (WAKE_CONNECTS), deadline_ms (0: none) passing. On WAKE_BAD err says why. */
static enum wake wait_readable(struct conn *c, uint64_t deadline_ms, struct hm_err *err)
{
	for (;;) {
		struct pollfd pf[4] = {
		    {.fd = c->fd, .events = POLLIN},
		    {.fd = c->srv->stop_efd, .events = POLLIN},
		    {.fd = c->target ? agent_target_pidfd(c->target) : -1, .events = POLLIN},
		    {.fd = agent_connects_fd(c->connects), .events = POLLIN},
		};
		int timeout = -1;
		uint64_t now = hm_now_ms();
		if (deadline_ms) {
			if (now >= deadline_ms)
				return WAKE_TIMEOUT;
			timeout = (int)(deadline_ms - now);
		}
		uint64_t connect_deadline = agent_connects_deadline(c->connects);
		if (connect_deadline) {
			if (now >= connect_deadline)
				return WAKE_CONNECTS;
			if (timeout < 0 || connect_deadline - now < (uint64_t)timeout)
				timeout = (int)(connect_deadline - now);
		}
		int n = poll(pf, 4, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			hm_err_errno(err, "poll");
			return WAKE_BAD;
		}
		if (n == 0)
			continue; /* the deadline check above returns */
		if (pf[1].revents)
			return WAKE_STOP;
		if (pf[2].revents)
			return WAKE_TARGET;
		if (pf[3].revents)
			return WAKE_CONNECTS;
		if (pf[0].revents)
			return WAKE_FRAME;
	}
}

/* Wait for the next whole frame, or what wait_readable reports instead. On
 * WAKE_BAD/WAKE_CLOSED err says why. */
static enum wake next_frame(struct conn *c, struct proto_frame_reader *rd, uint64_t deadline_ms,
			    struct proto_frame *f, struct hm_err *err)
{
	uint64_t spin_from = c->answered_ns;
	bool spinning = spin_from != 0;
	c->answered_ns = 0;
	for (;;) {
		if (!spinning) {
			enum wake w = wait_readable(c, deadline_ms, err);
			if (w != WAKE_FRAME)
				return w;
		}
		int rc = proto_frame_reader_read(rd, c->fd, f, err);
		/* a big request (a file written back) is reply-like memory too: counted
		 * once its length is known, waiting before the rest is read */
		uint32_t len = rc == 1			  ? f->hdr.len
			       : rd->got >= PROTO_HDR_LEN ? rd->frame.hdr.len
							  : 0;
		if (rc >= 0 && c->account && !c->frame_charge && len >= FRAME_CHARGE_MIN) {
			if (agent_budget_reserve(c->account, AGENT_RES_BYTES, len,
						 AGENT_BUDGET_WAIT_MS, err) < 0) {
				if (rc == 1)
					free(f->payload);
				return WAKE_BAD;
			}
			c->frame_charge = len;
		}
		if (rc == 1) {
			atomic_fetch_add(&c->srv->stats.ctl_bytes_out, PROTO_HDR_LEN + f->hdr.len);
			if (spin_from)
				hm_spin_waited(&c->request_spin, spin_from);
			return WAKE_FRAME;
		}
		if (rc < 0)
			return err->code == 0 ? WAKE_CLOSED : WAKE_BAD;
		spinning = spinning && hm_spin_more(&c->request_spin, spin_from);
	}
}

/* A frame a peer had no business sending: log it with the peer, count it. */
static void protocol_error(struct conn *c, const char *what, const struct hm_err *err)
{
	atomic_fetch_add(&c->srv->stats.errors, 1);
	hm_warn("conn %llu (%s): %s: %s; closing", (unsigned long long)c->id, c->peer, what,
		err->msg);
}

/* The TCP hand-off (PROTO_FEAT_TCP_FD): the reply carries the pod's socket itself and
 * the stream connection ends there. The client then owns the connection outright: the
 * socket stops counting as a stream of the session. */
static void hand_off(struct conn *c, const struct proto_msg *r, struct agent_pending_stream *ps)
{
	struct hm_err err = {0};
	struct proto_buf b = PROTO_BUF_INIT;
	if (proto_encode(&b, 0, r, &err) == 0) {
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} control;
		memset(&control, 0, sizeof(control));
		struct iovec iov = {.iov_base = b.data, .iov_len = b.len};
		struct msghdr msg = {.msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = control.buf,
				     .msg_controllen = sizeof(control.buf)};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &ps->fd, sizeof(int));
		/* a fresh connection's send buffer takes a reply of a few dozen bytes whole */
		ssize_t n;
		do
			n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			hm_err_errno(&err, "sendmsg");
		else if ((size_t)n < b.len &&
			 send_bytes(c, b.data + n, b.len - (size_t)n, SEND_STALL_MS, &err) < 0)
			n = -1;
		if (n >= 0)
			atomic_fetch_add(&c->srv->stats.ctl_bytes_in, (size_t)n);
	}
	proto_buf_release(&b);
	if (err.code) {
		atomic_fetch_add(&c->srv->stats.errors, 1);
		hm_warn("conn %llu (%s): TCP hand-off of session %llu: %s",
			(unsigned long long)c->id, c->peer, (unsigned long long)ps->session_id,
			err.msg);
	} else {
		hm_debug("conn %llu (%s): TCP socket of session %llu handed off",
			 (unsigned long long)c->id, c->peer, (unsigned long long)ps->session_id);
	}
	close(ps->fd);
	agent_budget_stream_closed(ps->account);
}

/* A STREAM_HELLO: the token names a parked object; the fd goes to the relay, or for a
 * TCP socket to the session's own unix peer (hand_off). */
static void start_stream(struct conn *c, const struct proto_msg *m)
{
	struct server *srv = c->srv;
	struct agent_pending_stream ps;
	struct proto_msg r = {.type = PROTO_STREAM_HELLO_REPLY};
	if (agent_streams_claim(srv->streams, m->stream_hello.token, &ps) < 0) {
		atomic_fetch_add(&srv->stats.errors, 1);
		atomic_fetch_add(&srv->stats.auth_failures, 1);
		hm_warn("conn %llu (%s): stream token unknown, used or expired; closing",
			(unsigned long long)c->id, c->peer);
		r.stream_hello_reply.error = EACCES;
		r.stream_hello_reply.reason = "unknown, used or expired stream token";
		conn_send(c, 0, &r);
		return;
	}
	r.stream_hello_reply.reason = "";
	if (ps.claimed) {
		/* a handoff: its owner (mirror, HTTP router) serves the stream itself, and the
		 * stream counts for its session until the owner closes it */
		struct relay_release owner_release = {agent_budget_stream_closed, ps.account};
		if (conn_send(c, 0, &r) < 0) {
			ps.claimed(ps.claimed_ctx, -1, NULL);
			agent_budget_stream_closed(ps.account);
		} else {
			ps.claimed(ps.claimed_ctx, hm_steal_fd(&c->fd), &owner_release);
		}
		return;
	}
	if (ps.kind == RELAY_TCP && ps.passable && c->from.is_unix && c->from.has_cred &&
	    c->from.uid == ps.pass_uid) {
		hand_off(c, &r, &ps);
		return;
	}
	/* the stream keeps counting for its session until the relay closes it */
	struct relay_release rel = {agent_budget_stream_closed, ps.account};
	if (conn_send(c, 0, &r) < 0) {
		close(ps.fd);
		agent_budget_stream_closed(ps.account);
		return;
	}
	struct hm_err err = {0};
	int client_fd = hm_steal_fd(&c->fd);
	const char *kind = relay_kind_name(ps.kind);
	/* after the reply: the kernel relay takes what the client sent behind it, and
	 * whatever the target's server said first, from the sockets' queues */
	if (ps.kind == RELAY_TCP && srv->krelay && !c->from.is_unix) {
		if (agent_krelay_add(srv->krelay, client_fd, ps.fd, ps.account ? &rel : NULL,
				     &err) == 0) {
			hm_debug("conn %llu (%s): tcp stream of session %llu relayed by the kernel",
				 (unsigned long long)c->id, c->peer,
				 (unsigned long long)ps.session_id);
			return;
		}
		if (err.code == ECONNABORTED) {
			atomic_fetch_add(&srv->stats.errors, 1);
			hm_warn("conn %llu (%s): tcp stream of session %llu reset: %s",
				(unsigned long long)c->id, c->peer,
				(unsigned long long)ps.session_id, err.msg);
			agent_close_reset(client_fd);
			agent_close_reset(ps.fd);
			if (ps.account)
				agent_budget_stream_closed(ps.account);
			return;
		}
		hm_debug("conn %llu (%s): tcp stream of session %llu in the user-space relay: %s",
			 (unsigned long long)c->id, c->peer, (unsigned long long)ps.session_id,
			 err.msg);
		err = (struct hm_err){0};
	}
	/* the relay owns both fds from here on, also when adding fails */
	int rc = relay_add(srv->relay, ps.kind, client_fd, ps.fd, ps.size, ps.account ? &rel : NULL,
			   &err);
	if (rc < 0) {
		atomic_fetch_add(&srv->stats.errors, 1);
		hm_warn("conn %llu (%s): %s stream of session %llu: %s", (unsigned long long)c->id,
			c->peer, kind, (unsigned long long)ps.session_id, err.msg);
	} else {
		hm_debug("conn %llu (%s): %s stream of session %llu relayed",
			 (unsigned long long)c->id, c->peer, kind,
			 (unsigned long long)ps.session_id);
	}
}

/* The first frame: HELLO (control) or STREAM_HELLO (stream). Returns 1 when a control
 * connection is authenticated, 0 when the connection is done (stream handed over,
 * rejected). */
static int handshake(struct conn *c)
{
	struct server *srv = c->srv;
	struct hm_err err = {0};
	proto_cleanup_msg struct proto_msg m = {0};
	atomic_fetch_add(&srv->stats.ctl_bytes_out, PROTO_HDR_LEN + c->first.hdr.len);
	int decoded = proto_decode_frame(&c->first, &m, &err);
	c->first = (struct proto_frame){0}; /* the message owns the payload now */
	if (decoded < 0) {
		protocol_error(c, "malformed hello", &err);
		return 0;
	}
	int result = 0;
	if (m.type == PROTO_HELLO) {
		struct proto_msg r = {.type = PROTO_HELLO_REPLY};
		if (proto_server_check_hello(&m.hello, srv->cfg->token, PROTO_FEATURES_SUPPORTED,
					     AGENT_SERVER_NAME, &r.hello_reply) < 0) {
			atomic_fetch_add(&srv->stats.errors, 1);
			atomic_fetch_add(&srv->stats.auth_failures, 1);
			hm_warn("conn %llu (%s): rejected client '%s': %s",
				(unsigned long long)c->id, c->peer, m.hello.client,
				r.hello_reply.reason);
		} else {
			c->features = r.hello_reply.features;
			hm_info("conn %llu (%s): client '%s' authenticated",
				(unsigned long long)c->id, c->peer, m.hello.client);
			result = 1;
		}
		conn_send(c, 0, &r);
	} else if (m.type == PROTO_STREAM_HELLO) {
		start_stream(c, &m);
	} else {
		atomic_fetch_add(&srv->stats.errors, 1);
		hm_warn("conn %llu (%s): first frame is %s, not HELLO; closing",
			(unsigned long long)c->id, c->peer, proto_type_name(m.type));
	}
	return result;
}

static void serve(struct conn *c)
{
	struct proto_frame_reader rd;
	proto_frame_reader_init(&rd, PROTO_MAX_PAYLOAD);
	char why[PROTO_MSG_MAX];
	int end_errno = 0;
	for (;;) {
		struct proto_frame f = {0};
		struct hm_err err = {0};
		enum wake w = next_frame(c, &rd, 0, &f, &err);
		if (w == WAKE_STOP) {
			end_errno = ESHUTDOWN;
			snprintf(why, sizeof(why), "agent shutting down");
			break;
		}
		if (w == WAKE_TARGET) {
			end_errno = ESRCH;
			snprintf(why, sizeof(why), "target %s (pid %d) exited", c->target_name,
				 (int)agent_target_pid(c->target));
			break;
		}
		if (w == WAKE_CLOSED) {
			snprintf(why, sizeof(why), "client disconnected");
			break;
		}
		if (w == WAKE_CONNECTS) {
			agent_connects_progress(c->connects, connect_done, c);
			continue;
		}
		if (w == WAKE_BAD && err.code == ENOBUFS) {
			/* a request too big for the memory left: the client learns why */
			hm_warn("conn %llu (%s): %s; ending the session", (unsigned long long)c->id,
				c->peer, err.msg);
			end_errno = ENOBUFS;
			snprintf(why, sizeof(why), "%s", err.msg);
			break;
		}
		if (w != WAKE_FRAME) {
			protocol_error(c, "bad frame", &err);
			snprintf(why, sizeof(why), "protocol error");
			break;
		}
		uint16_t type = f.hdr.type;
		struct proto_msg m;
		if (proto_decode_frame(&f, &m, &err) < 0) {
			char what[64];
			snprintf(what, sizeof(what), "malformed %s", proto_type_name(type));
			protocol_error(c, what, &err);
			proto_msg_free(&m);
			snprintf(why, sizeof(why), "protocol error");
			break;
		}
		m.id = f.hdr.id;
		int rc = dispatch(c, &m);
		c->answered_ns = hm_now_ns();
		proto_msg_free(&m);
		agent_budget_release(c->account, AGENT_RES_BYTES, c->frame_charge);
		c->frame_charge = 0;
		if (rc < 0) {
			snprintf(why, sizeof(why), "protocol error");
			break;
		}
	}
	proto_frame_reader_release(&rd);
	conn_end(c, end_errno, why);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	if (handshake(c) == 1)
		serve(c);
	else
		conn_end(c, 0, NULL);
	conn_put(c);
	return NULL;
}

/* ---- listeners ---- */

/* admission.c has a whole first frame from this connection: it gets its thread. */
static void admitted(void *arg, int fd, uint64_t id, const struct agent_peer *peer,
		     struct proto_frame *first)
{
	struct server *srv = arg;
	pthread_mutex_lock(&srv->lock);
	bool full = srv->nconns >= MAX_CONNECTIONS;
	if (!full)
		srv->nconns++;
	pthread_mutex_unlock(&srv->lock);
	struct conn *c = full ? NULL : calloc(1, sizeof(*c));
	if (!c) {
		atomic_fetch_add(&srv->stats.errors, 1);
		hm_warn("conn %llu (%s): %s; closing", (unsigned long long)id, peer->desc,
			full ? "too many connections" : "out of memory");
		proto_frame_release(first);
		close(fd);
		if (!full) {
			pthread_mutex_lock(&srv->lock);
			srv->nconns--;
			pthread_cond_broadcast(&srv->cond);
			pthread_mutex_unlock(&srv->lock);
		}
		return;
	}
	c->srv = srv;
	c->fd = fd;
	c->id = id;
	c->from = *peer;
	c->first = *first;
	snprintf(c->peer, sizeof(c->peer), "%s", peer->desc);
	pthread_mutex_init(&c->send_lock, NULL);
	atomic_init(&c->refs, 1);
	atomic_fetch_add(&srv->stats.connections, 1);
	hm_debug("conn %llu (%s): accepted", (unsigned long long)id, peer->desc);
	int rc = spawn_detached(conn_main, c);
	if (rc == 0)
		return;
	hm_warn("conn %llu: cannot start its thread: %s", (unsigned long long)id, strerror(rc));
	conn_put(c); /* closes fd, nconns-- */
}

static void accept_some(struct server *srv, int lfd, bool is_unix)
{
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				agent_fd_spare_shed(lfd);
			} else if (errno == ENOBUFS || errno == ENOMEM) {
				hm_warn("accept: %s", strerror(errno));
				poll(NULL, 0, 100); /* the backlog stays readable: do not spin */
			}
			return;
		}
		if (!is_unix) {
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		}
		struct agent_peer peer;
		agent_peer_from_accept(fd, is_unix, &ss, &peer);
		agent_admission_add(srv->admission, fd, atomic_fetch_add(&srv->next_conn_id, 1),
				    &peer);
	}
}

/* Refuse to take over a socket another agent is serving; remove a stale one. */
static int unix_path_prepare(const char *path, struct hm_err *err)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "%s", path);
	}
	if (!S_ISSOCK(st.st_mode))
		return hm_err_set(err, EEXIST, "%s exists and is not a socket", path);
	hm_cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return hm_err_errno(err, "socket");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return hm_err_set(err, EADDRINUSE, "another agent is listening on %s", path);
	if (errno != ECONNREFUSED)
		return hm_err_errno(err, "probe %s", path);
	hm_info("removing stale socket %s", path);
	if (unlink(path) < 0 && errno != ENOENT)
		return hm_err_errno(err, "remove %s", path);
	return 0;
}

static int listen_unix(struct server *srv, const char *path, struct hm_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	/* room for the ".PID.tmp" name we bind first */
	if (!path[0] || strlen(path) + 20 >= sizeof(sa.sun_path))
		return hm_err_set(err, ENAMETOOLONG, "unix socket path '%s'", path);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s.%d.tmp", path, (int)getpid());
	char dir[sizeof(sa.sun_path)];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (hm_mkdir_p(dir, 0755, err) < 0)
			return -1;
	}
	if (unix_path_prepare(path, err) < 0)
		return -1;
	unlink(sa.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hm_err_errno(err, "socket");
	/* Who may connect at all is the file's business, before any token: root and the
	 * socket's group (--unix-group; root's by default), mode 0660. Bind under a umask
	 * that lets nobody else in even for an instant, and listen under a temporary name,
	 * then rename: a client never finds the socket file before it accepts connections
	 * with its final owner and mode. */
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	struct stat st;
	if (rc < 0 || chown(sa.sun_path, (uid_t)-1, srv->cfg->unix_gid) < 0 ||
	    chmod(sa.sun_path, 0660) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
	    rename(sa.sun_path, path) < 0 || stat(path, &st) < 0) {
		hm_err_errno(err, "listen on %s", path);
		unlink(sa.sun_path);
		close(fd);
		return -1;
	}
	srv->unix_fd = fd;
	srv->unix_dev = st.st_dev;
	srv->unix_ino = st.st_ino;
	hm_info("listening on unix:%s (mode 0660, group %u)", path, (unsigned)st.st_gid);
	return 0;
}

static int split_host_port(const char *spec, char *host, size_t hlen, char *port, size_t plen,
			   struct hm_err *err)
{
	const char *colon;
	const char *h = spec;
	size_t hl;
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':')
			return hm_err_set(err, EINVAL, "bad address '%s': expected [V6]:PORT",
					  spec);
		h = spec + 1;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon)
			return hm_err_set(err, EINVAL, "bad address '%s': expected ADDR:PORT",
					  spec);
		hl = (size_t)(colon - spec);
	}
	if (hl >= hlen || strlen(colon + 1) >= plen || !colon[1])
		return hm_err_set(err, EINVAL, "bad address '%s'", spec);
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

static bool sockaddr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

static int listen_tcp(struct server *srv, const char *spec, struct hm_err *err)
{
	char host[256], port[16];
	if (split_host_port(spec, host, sizeof(host), port, sizeof(port), err) < 0)
		return -1;
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
	if (gai)
		return hm_err_set(err, EINVAL, "listen address '%s': %s", spec, gai_strerror(gai));
	for (struct addrinfo *ai = res; ai && !srv->cfg->insecure_listen; ai = ai->ai_next) {
		if (!sockaddr_is_loopback(ai->ai_addr)) {
			freeaddrinfo(res);
			return hm_err_plain(
			    err, EPERM,
			    "refusing to listen on %s: not a loopback address, and "
			    "TCP carries the token and file contents in clear text "
			    "(anyone on the path can read or hijack sessions); listen "
			    "on 127.0.0.1 and reach it through a port-forward or SSH "
			    "tunnel, or add --insecure to accept the risk",
			    spec);
		}
	}
	int fd = -1;
	int saved = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, LISTEN_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return hm_err_set(err, saved, "listen on %s", spec);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct proto_addr a;
	char shown[80] = "?";
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
	    proto_addr_from_sockaddr((struct sockaddr *)&ss, sl, &a, NULL) == 0)
		proto_addr_str(&a, shown, sizeof(shown));
	srv->tcp_fd = fd;
	hm_info("listening on %s", shown);
	return 0;
}

static void remove_unix_socket(struct server *srv)
{
	struct stat st;
	const char *path = srv->cfg->unix_path;
	/* only our own socket: another agent may have replaced it since */
	if (path && lstat(path, &st) == 0 && st.st_dev == srv->unix_dev &&
	    st.st_ino == srv->unix_ino)
		unlink(path);
}

/* What the connections share, in the order their references to each other allow. */
static void destroy_services(struct server *srv)
{
	agent_krelay_destroy(srv->krelay);
	relay_destroy(srv->relay);
	agent_http_steal_destroy(srv->http_steal);
	agent_mirror_stop(srv->mirror); /* it offers through the registry */
	agent_incoming_destroy(srv->incoming);
	agent_streams_destroy(srv->streams);
	agent_mirror_destroy(srv->mirror); /* after the claims the streams resolved */
	agent_budget_destroy(srv->budget);
}

static int wait_connections_gone(struct server *srv)
{
	struct timespec until;
	hm_realtime_in(&until, SHUTDOWN_WAIT_MS);
	int rc = 0;
	pthread_mutex_lock(&srv->lock);
	while (srv->nconns > 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&srv->cond, &srv->lock, &until);
	unsigned left = srv->nconns;
	pthread_mutex_unlock(&srv->lock);
	return left ? -1 : 0;
}

int agent_server_run(const struct agent_server_config *cfg, struct hm_err *err)
{
	static struct server srv_storage; /* one per process: threads may outlive a failed stop */
	struct server *srv = &srv_storage;
	memset(srv, 0, sizeof(*srv));
	srv->cfg = cfg;
	srv->unix_fd = srv->tcp_fd = -1;
	agent_stats_init(&srv->stats);
	atomic_init(&srv->next_conn_id, 1);
	atomic_init(&srv->next_session_id, 1);
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->cond, NULL);
	if (!cfg->token || !cfg->token[0])
		return hm_err_set(err, EINVAL, "no auth token");
	if (!cfg->unix_path && !cfg->listen_addr)
		return hm_err_set(err, EINVAL, "nothing to listen on");
	srv->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->stop_efd < 0)
		return hm_err_errno(err, "eventfd");
	if (agent_streams_create(cfg->stream_ttl_ms, &srv->streams, err) < 0)
		goto fail;
	if (agent_budget_create(&cfg->limits, &srv->budget, err) < 0 ||
	    agent_fd_spare_init(err) < 0)
		goto fail;
	if (relay_create(&srv->stats.relay, &srv->relay, err) < 0)
		goto fail;
	if (cfg->no_kernel_relay) {
		hm_info(
		    "kernel relay off (--no-kernel-relay): TCP streams in the user-space relay");
	} else {
		struct hm_err kr_err = {0};
		if (agent_krelay_create(&srv->stats.relay, &srv->stats.kernel_streams,
					cfg->kernel_relay_memory, &srv->krelay, &kr_err) == 0)
			hm_info("kernel relay on: TCP streams from TCP clients are moved by the "
				"kernel (BPF program %u)",
				agent_krelay_prog_id(srv->krelay));
		else
			hm_warn("kernel relay off, TCP streams in the user-space relay: %s",
				kr_err.msg);
	}
	struct agent_admission_config acfg = {
	    .deadline_ms = cfg->handshake_timeout_ms,
	    .max_per_transport = AGENT_MAX_PENDING_PER_TRANSPORT,
	    .max_per_peer = MAX_PENDING_PER_PEER,
	    .stats = &srv->stats,
	    .admitted = admitted,
	    .arg = srv,
	};
	if (agent_admission_create(&acfg, &srv->admission, err) < 0)
		goto fail;
	if (agent_incoming_create(srv->streams, &srv->incoming, err) < 0 ||
	    agent_http_steal_create(srv->incoming, &srv->http_steal, err) < 0)
		goto fail;
	struct agent_mirror_config mcfg = {.ring_bytes = cfg->mirror_ring_bytes,
					   .copy_buffer_max = cfg->mirror_copy_bytes,
					   .counters = agent_incoming_counters(srv->incoming)};
	struct hm_err mirror_err;
	if (agent_mirror_create(&mcfg, &srv->mirror, &mirror_err) == 0)
		agent_incoming_set_mirror(srv->incoming, &agent_mirror_ops, srv->mirror);
	else /* steal and the rest still work; MIRROR subscribes say why not */
		hm_warn("no mirror mode: %s", mirror_err.msg);
	if (cfg->unix_path && listen_unix(srv, cfg->unix_path, err) < 0)
		goto fail;
	if (cfg->listen_addr && listen_tcp(srv, cfg->listen_addr, err) < 0)
		goto fail;
	hm_info("%s ready (pid %d)", AGENT_SERVER_NAME, (int)getpid());

	int64_t next_expire = hm_now_ms() + 1000;
	for (;;) {
		struct pollfd pf[4] = {
		    {.fd = cfg->stop_fd, .events = POLLIN},
		    {.fd = srv->unix_fd, .events = POLLIN},
		    {.fd = srv->tcp_fd, .events = POLLIN},
		    {.fd = agent_admission_fd(srv->admission), .events = POLLIN},
		};
		int wait = agent_admission_service(srv->admission);
		if (wait < 0 || wait > 1000)
			wait = 1000;
		int n = poll(pf, 4, wait);
		if (n < 0 && errno != EINTR) {
			hm_err_errno(err, "poll");
			break;
		}
		/* also when connections keep arriving: an unclaimed token holds an fd */
		if (hm_now_ms() >= next_expire) {
			agent_streams_expire(srv->streams);
			next_expire = hm_now_ms() + 1000;
		}
		if (n <= 0)
			continue;
		if (pf[0].revents)
			break;
		/* hellos that arrived first, so newcomers do not evict them */
		agent_admission_service(srv->admission);
		if (pf[1].revents)
			accept_some(srv, srv->unix_fd, true);
		if (pf[2].revents)
			accept_some(srv, srv->tcp_fd, false);
	}

	pthread_mutex_lock(&srv->lock);
	unsigned open_conns = srv->nconns;
	pthread_mutex_unlock(&srv->lock);
	hm_info("shutting down: ending %u connection(s)", open_conns);
	/* stop accepting first, so nothing new starts while sessions end */
	if (srv->unix_fd >= 0) {
		close(srv->unix_fd);
		srv->unix_fd = -1;
		remove_unix_socket(srv);
	}
	if (srv->tcp_fd >= 0) {
		close(srv->tcp_fd);
		srv->tcp_fd = -1;
	}
	agent_admission_destroy(srv->admission);
	srv->admission = NULL;
	uint64_t one = 1;
	if (write(srv->stop_efd, &one, sizeof(one)) < 0)
		hm_warn("signal the connections to stop: %s", strerror(errno));
	agent_budget_stop(srv->budget);
	if (wait_connections_gone(srv) < 0) {
		/* threads still use the relay and the tokens: leave them to the exit */
		hm_warn("connections did not end within %d s", SHUTDOWN_WAIT_MS / 1000);
		return 0;
	}
	destroy_services(srv);
	close(srv->stop_efd);
	hm_info("stopped");
	return 0;

fail:
	if (srv->unix_fd >= 0) {
		close(srv->unix_fd);
		remove_unix_socket(srv);
	}
	if (srv->tcp_fd >= 0)
		close(srv->tcp_fd);
	destroy_services(srv);
	agent_admission_destroy(srv->admission);
	close(srv->stop_efd);
	return -1;
}
