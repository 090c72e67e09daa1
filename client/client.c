/* The client library (agent/agent.h): one control connection per client, a reader
 * thread that routes replies to the callers waiting for their request ids, and stream
 * connections opened with the one-time tokens of replies. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "agent/agent.h"

#define STREAM_FRAME_GRACE_MS 5000 /* a frame that started arriving completes by then */

struct pending_call {
	struct pending_call *next;
	uint32_t id;
	bool done;
	struct proto_msg reply;
	pthread_cond_t cond;
};

struct agent_client {
	struct agent_endpoint ep;
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

/* ---- endpoints ---- */

int agent_endpoint_parse(const char *spec, struct agent_endpoint *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!spec || !spec[0])
		return hm_err_set(err, EINVAL, "empty agent address");
	const char *path = NULL;
	if (!strncmp(spec, "unix:", 5))
		path = spec + 5;
	else if (spec[0] == '/' || spec[0] == '.')
		path = spec;
	if (path) {
		if (!path[0] || strlen(path) >= sizeof(out->path))
			return hm_err_set(err, ENAMETOOLONG, "bad unix socket path '%s'", path);
		out->is_unix = true;
		strcpy(out->path, path);
		return 0;
	}
	const char *host = spec, *colon;
	size_t hlen;
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':')
			return hm_err_set(err, EINVAL, "bad agent address '%s': expected [V6]:PORT",
					  spec);
		host = spec + 1;
		hlen = (size_t)(end - host);
		colon = end + 1;
	} else {
		colon = strrchr(spec, ':');
		if (!colon)
			return hm_err_set(err, EINVAL,
					  "bad agent address '%s': expected HOST:PORT or a socket path",
					  spec);
		hlen = (size_t)(colon - spec);
	}
	uint64_t port;
	if (!hlen || hlen >= sizeof(out->host) || hm_parse_u64(colon + 1, &port) < 0 || !port ||
	    port > 65535)
		return hm_err_set(err, EINVAL, "bad agent address '%s'", spec);
	memcpy(out->host, host, hlen);
	out->host[hlen] = '\0';
	snprintf(out->port, sizeof(out->port), "%u", (unsigned)port);
	return 0;
}

const char *agent_endpoint_str(const struct agent_endpoint *ep, char *buf, size_t len)
{
	if (ep->is_unix)
		snprintf(buf, len, "unix:%s", ep->path);
	else if (strchr(ep->host, ':'))
		snprintf(buf, len, "[%s]:%s", ep->host, ep->port);
	else
		snprintf(buf, len, "%s:%s", ep->host, ep->port);
	return buf;
}

static int set_blocking(int fd, bool blocking)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl);
}

static int dial_tcp(const struct agent_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV};
	struct addrinfo *res;
	int gai = getaddrinfo(ep->host, ep->port, &hints, &res);
	if (gai)
		return hm_err_set(err, EHOSTUNREACH, "agent %s: %s", ep->host, gai_strerror(gai));
	int saved = ECONNREFUSED;
	int fd = -1;
	for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (rc < 0 && errno == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int n;
			do
				n = poll(&p, 1, timeout_ms);
			while (n < 0 && errno == EINTR);
			int soerr = ETIMEDOUT;
			socklen_t sl = sizeof(soerr);
			if (n > 0)
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
			rc = soerr ? -1 : 0;
			errno = soerr;
		}
		if (rc < 0 || set_blocking(fd, true) < 0) {
			saved = errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		return hm_err_set(err, saved, "connect to agent %s:%s", ep->host, ep->port);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int agent_endpoint_dial(const struct agent_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	if (!ep->is_unix)
		return dial_tcp(ep, timeout_ms, err);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return hm_err_errno(err, "socket");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", ep->path);
	int rc;
	do
		rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int saved = errno;
		close(fd);
		if (saved == EACCES)
			return hm_err_plain(err, EACCES,
					    "connect to agent at %s: permission denied (only root and "
					    "the socket's group, trace-agent --unix-group, may connect)",
					    ep->path);
		return hm_err_set(err, saved, "connect to agent at %s", ep->path);
	}
	return fd;
}

int agent_token_load(const char *path, char *out, size_t outlen, struct hm_err *err)
{
	hm_autofd fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "token file %s", path);
	char buf[PROTO_AUTH_TOKEN_MAX + 64];
	ssize_t n = hm_read_all(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return hm_err_errno(err, "read token file %s", path);
	buf[n] = '\0';
	char *start = buf;
	while (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n')
		start++;
	size_t len = strcspn(start, "\r\n");
	while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	start[len] = '\0';
	int rc = 0;
	if (!len)
		rc = hm_err_set(err, EINVAL, "token file %s is empty", path);
	else if (len > PROTO_AUTH_TOKEN_MAX || strlen(start) != len)
		rc = hm_err_set(err, E2BIG, "token in %s is longer than %d bytes", path,
				PROTO_AUTH_TOKEN_MAX);
	else if (len >= outlen)
		rc = hm_err_set(err, ENAMETOOLONG, "token in %s does not fit", path);
	else
		memcpy(out, start, len + 1);
	explicit_bzero(buf, sizeof(buf));
	return rc;
}

/* ---- the control connection ---- */

static void client_end(struct agent_client *c, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void client_end(struct agent_client *c, int code, const char *fmt, ...)
{
	pthread_mutex_lock(&c->lock);
	if (!c->ended) {
		c->ended = true;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->end_err.msg, sizeof(c->end_err.msg), fmt, ap);
		va_end(ap);
		c->end_err.code = code;
		for (struct pending_call *p = c->pending; p; p = p->next)
			pthread_cond_signal(&p->cond);
		uint64_t one = 1;
		if (write(c->event_fd, &one, sizeof(one)) < 0) {
			/* an eventfd only fails when its counter overflows: it is readable */
		}
	}
	pthread_mutex_unlock(&c->lock);
}

static void *reader_main(void *arg)
{
	struct agent_client *c = arg;
	for (;;) {
		struct proto_msg m;
		struct hm_err err = {0};
		if (proto_recv(c->fd, PROTO_MAX_PAYLOAD, -1, &m, &err) < 0) {
			proto_msg_free(&m);
			if (err.code == 0)
				client_end(c, ECONNRESET, "the agent closed the connection");
			else
				client_end(c, err.code == ECONNRESET ? ECONNRESET : EPROTO,
					   "connection to the agent failed: %s", err.msg);
			return NULL;
		}
		if (m.type == PROTO_SESSION_ENDED) {
			client_end(c, m.error.errnum, "session ended: %s", m.error.message);
			proto_msg_free(&m);
			return NULL;
		}
		bool routed = false;
		pthread_mutex_lock(&c->lock);
		for (struct pending_call *p = c->pending; p && m.id; p = p->next) {
			if (p->id == m.id && !p->done) {
				p->reply = m;
				p->done = true;
				pthread_cond_signal(&p->cond);
				routed = true;
				break;
			}
		}
		pthread_mutex_unlock(&c->lock);
		if (!routed) /* the caller gave up (timeout), or the agent misbehaves */
			proto_msg_free(&m);
	}
}

int agent_client_connect(const struct agent_endpoint *ep, const char *token,
			 const struct agent_client_opts *opts, struct agent_client **out,
			 struct hm_err *err)
{
	*out = NULL;
	struct agent_client_opts defaults = {0};
	if (!opts)
		opts = &defaults;
	if (!token || !token[0])
		return hm_err_set(err, EACCES, "no auth token for the agent");
	struct agent_client *c = calloc(1, sizeof(*c));
	if (!c)
		return hm_err_set(err, ENOMEM, "agent client");
	c->ep = *ep;
	c->fd = c->event_fd = -1;
	c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : AGENT_DEFAULT_TIMEOUT_MS;
	atomic_init(&c->next_id, 1);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	int connect_timeout = c->timeout_ms > 0 ? c->timeout_ms : AGENT_DEFAULT_TIMEOUT_MS;
	c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->event_fd < 0) {
		hm_err_errno(err, "eventfd");
		goto fail;
	}
	c->fd = agent_endpoint_dial(ep, connect_timeout, err);
	if (c->fd < 0)
		goto fail;
	if (proto_client_handshake(c->fd, token,
				   opts->client_name ? opts->client_name : "hermit-client",
				   PROTO_FEATURES_SUPPORTED & ~opts->disable_features,
				   connect_timeout, &c->features, err) < 0)
		goto fail;
	/* the reader must not take the program's signals */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&c->reader, NULL, reader_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		hm_err_set(err, rc, "start the agent client's reader");
		goto fail;
	}
	c->reader_started = true;
	*out = c;
	return 0;
fail:
	agent_client_close(c);
	return -1;
}

void agent_client_close(struct agent_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR); /* wakes the reader */
	if (c->reader_started)
		pthread_join(c->reader, NULL);
	if (c->fd >= 0)
		close(c->fd);
	if (c->event_fd >= 0)
		close(c->event_fd);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	free(c);
}

void agent_client_shutdown(struct agent_client *c)
{
	shutdown(c->fd, SHUT_RDWR);
}

uint64_t agent_client_features(const struct agent_client *c)
{
	return c->features;
}

int agent_client_event_fd(const struct agent_client *c)
{
	return c->event_fd;
}

bool agent_client_ended(struct agent_client *c, struct hm_err *why)
{
	pthread_mutex_lock(&c->lock);
	bool ended = c->ended;
	if (ended && why)
		*why = c->end_err;
	pthread_mutex_unlock(&c->lock);
	return ended;
}

static void unlink_pending(struct agent_client *c, struct pending_call *pc)
{
	for (struct pending_call **pp = &c->pending; *pp; pp = &(*pp)->next) {
		if (*pp == pc) {
			*pp = pc->next;
			return;
		}
	}
}

int agent_client_call(struct agent_client *c, const struct proto_msg *req,
		      struct proto_msg *reply, int timeout_ms, struct hm_err *err)
{
	memset(reply, 0, sizeof(*reply));
	uint16_t want = proto_reply_type(req->type);
	if (!want)
		return hm_err_set(err, EINVAL, "%s is not a request", proto_type_name(req->type));
	if (timeout_ms == 0)
		timeout_ms = c->timeout_ms;

	struct pending_call pc = {0};
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pc.cond, &ca);
	pthread_condattr_destroy(&ca);
	do
		pc.id = atomic_fetch_add(&c->next_id, 1);
	while (pc.id == 0);

	int rc = 0;
	pthread_mutex_lock(&c->lock);
	if (c->ended) {
		*err = c->end_err;
		rc = -1;
	} else {
		pc.next = c->pending;
		c->pending = &pc;
	}
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		goto out;

	pthread_mutex_lock(&c->send_lock);
	rc = proto_send(c->fd, pc.id, req, err);
	pthread_mutex_unlock(&c->send_lock);
	if (rc < 0) {
		hm_err_prefix(err, "%s", proto_type_name(req->type));
		pthread_mutex_lock(&c->lock);
		unlink_pending(c, &pc);
		pthread_mutex_unlock(&c->lock);
		goto out;
	}

	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	if (timeout_ms > 0) {
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
	}
	pthread_mutex_lock(&c->lock);
	int w = 0;
	while (!pc.done && !c->ended && w != ETIMEDOUT)
		w = timeout_ms > 0 ? pthread_cond_timedwait(&pc.cond, &c->lock, &until)
				   : pthread_cond_wait(&pc.cond, &c->lock);
	unlink_pending(c, &pc);
	if (!pc.done) {
		if (c->ended) {
			*err = c->end_err;
			hm_err_prefix(err, "%s", proto_type_name(req->type));
			err->code = c->end_err.code;
		} else {
			hm_err_set(err, ETIMEDOUT, "%s: no answer from the agent within %d ms",
				   proto_type_name(req->type), timeout_ms);
		}
		rc = -1;
	}
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		goto out;

	*reply = pc.reply;
	if (reply->type == PROTO_ERROR) {
		int e = reply->error.errnum;
		hm_err_set(err, 0, "%s: %s", proto_type_name(req->type),
			   reply->error.message[0] ? reply->error.message : strerror(e));
		err->code = e;
		rc = -1;
	} else if (reply->type != want) {
		rc = hm_err_set(err, EPROTO, "%s: the agent answered %s", proto_type_name(req->type),
				proto_type_name(reply->type));
	}
	if (rc < 0) {
		proto_msg_free(reply);
		memset(reply, 0, sizeof(*reply));
	}
out:
	pthread_cond_destroy(&pc.cond);
	return rc;
}

int agent_client_ping(struct agent_client *c, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_PING}, reply;
	if (getrandom(&req.ping.nonce, sizeof(req.ping.nonce), GRND_NONBLOCK) < 0)
		req.ping.nonce = (uint64_t)time(NULL);
	if (agent_client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	int rc = reply.ping.nonce == req.ping.nonce
			 ? 0
			 : hm_err_set(err, EPROTO, "PONG echoes the wrong nonce");
	proto_msg_free(&reply);
	return rc;
}

int agent_client_status(struct agent_client *c, struct agent_status *out, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_STATUS}, reply;
	if (agent_client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	const struct proto_status_reply *s = &reply.status_reply;
	memset(out, 0, sizeof(*out));
	snprintf(out->version, sizeof(out->version), "%s", s->version);
	out->uptime_ms = s->uptime_ms;
	out->sessions = s->sessions;
	out->streams = s->streams;
	out->requests = s->requests;
	out->errors = s->errors;
	out->bytes_in = s->bytes_in;
	out->bytes_out = s->bytes_out;
	out->nbudgets = s->nbudgets;
	memcpy(out->budgets, s->budgets, sizeof(out->budgets));
	proto_msg_free(&reply);
	return 0;
}

int agent_client_session_open(struct agent_client *c, const char *target,
			      struct agent_session_info *out, struct hm_err *err)
{
	struct proto_target t;
	if (proto_target_parse(target, &t, err) < 0)
		return -1;
	struct proto_msg req = {.type = PROTO_SESSION_OPEN}, reply;
	req.session_open.target = target;
	if (agent_client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	if (out) {
		memset(out, 0, sizeof(*out));
		out->session_id = reply.session_open_reply.session_id;
		out->pid = (pid_t)reply.session_open_reply.pid;
		snprintf(out->description, sizeof(out->description), "%s",
			 reply.session_open_reply.description);
	}
	proto_msg_free(&reply);
	return 0;
}

int agent_client_env(struct agent_client *c, char ***vars, size_t *count, struct hm_err *err)
{
	*vars = NULL;
	*count = 0;
	struct proto_msg req = {.type = PROTO_ENV_GET}, reply;
	if (agent_client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	const struct proto_env_reply *e = &reply.env_reply;
	size_t bytes = (e->count + 1) * sizeof(char *);
	for (uint32_t i = 0; i < e->count; i++)
		bytes += strlen(e->vars[i]) + 1;
	char **arr = malloc(bytes);
	if (!arr) {
		proto_msg_free(&reply);
		return hm_err_set(err, ENOMEM, "environment of %u variables", e->count);
	}
	char *p = (char *)(arr + e->count + 1);
	for (uint32_t i = 0; i < e->count; i++) {
		size_t n = strlen(e->vars[i]) + 1;
		memcpy(p, e->vars[i], n);
		arr[i] = p;
		p += n;
	}
	arr[e->count] = NULL;
	*vars = arr;
	*count = e->count;
	proto_msg_free(&reply);
	return 0;
}

/* ---- streams ---- */

static int open_stream(struct agent_client *c, const uint8_t token[PROTO_TOKEN_LEN],
		       struct hm_err *err)
{
	int timeout = c->timeout_ms > 0 ? c->timeout_ms : AGENT_DEFAULT_TIMEOUT_MS;
	int fd = agent_endpoint_dial(&c->ep, timeout, err);
	if (fd < 0)
		return -1;
	if (proto_stream_open(fd, token, timeout, err) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Read exactly len bytes; each wait for data is bounded by the client's timeout. */
static int read_exact(struct agent_client *c, int fd, void *buf, size_t len, uint64_t *done_total,
		      uint64_t expect_total, struct hm_err *err)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = recv(fd, (char *)buf + done, len - done, MSG_DONTWAIT);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return hm_err_set(err, EIO, "stream ended after %llu of %llu bytes",
					  (unsigned long long)(*done_total + done),
					  (unsigned long long)expect_total);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return hm_err_errno(err, "read stream");
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, c->timeout_ms > 0 ? c->timeout_ms : -1);
		if (r < 0 && errno != EINTR)
			return hm_err_errno(err, "poll stream");
		if (r == 0)
			return hm_err_set(err, ETIMEDOUT, "stream stalled after %llu of %llu bytes",
					  (unsigned long long)(*done_total + done),
					  (unsigned long long)expect_total);
	}
	*done_total += len;
	return 0;
}

/* FILE_READ: the reply, checked against the client's cap. */
static int file_read_call(struct agent_client *c, const char *path, uint32_t flags,
			  uint64_t max_size, struct proto_msg *reply, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_READ};
	req.file_read.path = path;
	req.file_read.flags = flags;
	req.file_read.max_size = max_size;
	if (agent_client_call(c, &req, reply, 0, err) < 0)
		return -1;
	const struct proto_file_read_reply *r = &reply->file_read_reply;
	uint64_t size = r->transfer == PROTO_XFER_STREAM ? r->stream_size : r->data.size;
	if (max_size && size > max_size) {
		proto_msg_free(reply);
		return hm_err_set(err, EFBIG, "%s: %llu bytes, over the limit of %llu", path,
				  (unsigned long long)size, (unsigned long long)max_size);
	}
	return 0;
}

int agent_client_read_file(struct agent_client *c, const char *path, uint32_t flags,
			   uint64_t max_size, struct agent_file_content *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	struct proto_msg reply;
	if (file_read_call(c, path, flags, max_size, &reply, err) < 0)
		return -1;
	const struct proto_file_read_reply *r = &reply.file_read_reply;
	out->st = r->st;
	int rc = 0;
	if (r->transfer == PROTO_XFER_INLINE) {
		out->size = r->data.size;
		out->data = malloc(out->size ? out->size : 1);
		if (!out->data)
			rc = hm_err_set(err, ENOMEM, "%s: %llu bytes", path,
					(unsigned long long)out->size);
		else if (out->size)
			memcpy(out->data, r->data.data, out->size);
	} else {
		out->size = r->stream_size;
		out->data = malloc(out->size ? out->size : 1);
		int fd = -1;
		uint64_t got = 0;
		if (!out->data)
			rc = hm_err_set(err, ENOMEM, "%s: %llu bytes", path,
					(unsigned long long)out->size);
		else if ((fd = open_stream(c, r->token, err)) < 0 ||
			 read_exact(c, fd, out->data, out->size, &got, out->size, err) < 0)
			rc = hm_err_prefix(err, "read %s", path);
		if (fd >= 0)
			close(fd);
	}
	proto_msg_free(&reply);
	if (rc < 0)
		agent_file_content_release(out);
	return rc;
}

void agent_file_content_release(struct agent_file_content *fc)
{
	free(fc->data);
	fc->data = NULL;
	fc->size = 0;
}

int agent_client_read_file_fd(struct agent_client *c, const char *path, uint32_t flags,
			      uint64_t max_size, int dst_fd, struct proto_stat *st, uint64_t *size,
			      struct hm_err *err)
{
	struct proto_msg reply;
	if (file_read_call(c, path, flags, max_size, &reply, err) < 0)
		return -1;
	const struct proto_file_read_reply *r = &reply.file_read_reply;
	if (st)
		*st = r->st;
	int rc = 0;
	if (r->transfer == PROTO_XFER_INLINE) {
		if (size)
			*size = r->data.size;
		if (hm_write_all(dst_fd, r->data.data, r->data.size) < 0)
			rc = hm_err_errno(err, "write the content of %s", path);
	} else {
		uint64_t total = r->stream_size, got = 0;
		if (size)
			*size = total;
		size_t bufsize = 1u << 20;
		hm_autofree void *buf = malloc(bufsize);
		hm_autofd fd = -1;
		if (!buf)
			rc = hm_err_set(err, ENOMEM, "read %s", path);
		else if ((fd = open_stream(c, r->token, err)) < 0)
			rc = hm_err_prefix(err, "read %s", path);
		while (rc == 0 && got < total) {
			size_t n = total - got < bufsize ? (size_t)(total - got) : bufsize;
			if (read_exact(c, fd, buf, n, &got, total, err) < 0)
				rc = hm_err_prefix(err, "read %s", path);
			else if (hm_write_all(dst_fd, buf, n) < 0)
				rc = hm_err_errno(err, "write the content of %s", path);
		}
	}
	proto_msg_free(&reply);
	return rc;
}

int agent_client_write_file(struct agent_client *c, const char *path, uint32_t flags,
			    uint32_t mode, uint64_t offset, const void *data, size_t size,
			    struct proto_file_write_reply *out, struct hm_err *err)
{
	size_t done = 0;
	uint64_t written = 0;
	do {
		size_t n = size - done < PROTO_INLINE_MAX ? size - done : PROTO_INLINE_MAX;
		struct proto_msg req = {.type = PROTO_FILE_WRITE}, reply;
		req.file_write.path = path;
		/* create/truncate/exclusive apply to the first piece only */
		req.file_write.flags =
			done ? flags & ~(PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC | PROTO_WRITE_EXCL)
			     : flags;
		req.file_write.mode = mode;
		req.file_write.offset = offset + done;
		req.file_write.data.data = n ? (const char *)data + done : NULL;
		req.file_write.data.size = n;
		req.file_write.data.compress = c->features & PROTO_FEAT_ZLIB;
		if (agent_client_call(c, &req, &reply, 0, err) < 0)
			return -1;
		written += reply.file_write_reply.written;
		if (out)
			*out = reply.file_write_reply;
		proto_msg_free(&reply);
		done += n;
	} while (done < size);
	if (out)
		out->written = written;
	return 0;
}

static int path_call(struct agent_client *c, uint16_t type, const char *path, uint32_t flags,
		     struct proto_msg *reply, struct hm_err *err)
{
	struct proto_msg req = {.type = type};
	req.path_req.path = path;
	req.path_req.flags = flags;
	return agent_client_call(c, &req, reply, 0, err);
}

int agent_client_stat(struct agent_client *c, const char *path, uint32_t flags,
		      struct proto_stat *out, struct hm_err *err)
{
	struct proto_msg reply;
	if (path_call(c, PROTO_FILE_STAT, path, flags, &reply, err) < 0)
		return -1;
	*out = reply.stat_reply;
	proto_msg_free(&reply);
	return 0;
}

int agent_client_statfs(struct agent_client *c, const char *path, struct proto_statfs *out,
			struct hm_err *err)
{
	struct proto_msg reply;
	if (path_call(c, PROTO_FILE_STATFS, path, 0, &reply, err) < 0)
		return -1;
	*out = reply.statfs_reply;
	proto_msg_free(&reply);
	return 0;
}

int agent_client_readlink(struct agent_client *c, const char *path, char *buf, size_t buflen,
			  struct hm_err *err)
{
	struct proto_msg reply;
	if (path_call(c, PROTO_FILE_READLINK, path, 0, &reply, err) < 0)
		return -1;
	size_t n = strlen(reply.readlink_reply.target);
	int rc = 0;
	if (n >= buflen)
		rc = hm_err_set(err, ENAMETOOLONG, "link %s: %zu bytes", path, n);
	else
		memcpy(buf, reply.readlink_reply.target, n + 1);
	proto_msg_free(&reply);
	return rc;
}

int agent_client_readdir(struct agent_client *c, const char *path, struct agent_dirent **entries,
			 size_t *count, struct hm_err *err)
{
	*entries = NULL;
	*count = 0;
	struct proto_msg reply;
	if (path_call(c, PROTO_FILE_READDIR, path, 0, &reply, err) < 0)
		return -1;
	const struct proto_readdir_reply *r = &reply.readdir_reply;
	size_t bytes = (r->count ? r->count : 1) * sizeof(struct agent_dirent);
	for (uint32_t i = 0; i < r->count; i++)
		bytes += strlen(r->entries[i].name) + 1;
	struct agent_dirent *arr = malloc(bytes);
	if (!arr) {
		proto_msg_free(&reply);
		return hm_err_set(err, ENOMEM, "directory %s of %u entries", path, r->count);
	}
	char *p = (char *)(arr + (r->count ? r->count : 1));
	for (uint32_t i = 0; i < r->count; i++) {
		size_t n = strlen(r->entries[i].name) + 1;
		memcpy(p, r->entries[i].name, n);
		arr[i] = (struct agent_dirent){
			.ino = r->entries[i].ino, .type = r->entries[i].type, .name = p};
		p += n;
	}
	*entries = arr;
	*count = r->count;
	proto_msg_free(&reply);
	return 0;
}

static int ok_call(struct agent_client *c, struct proto_msg *req, struct hm_err *err)
{
	struct proto_msg reply;
	if (agent_client_call(c, req, &reply, 0, err) < 0)
		return -1;
	proto_msg_free(&reply);
	return 0;
}

int agent_client_access(struct agent_client *c, const char *path, uint32_t mode,
			uint32_t flags, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_ACCESS};
	req.file_access = (struct proto_file_access){.path = path, .mode = mode, .flags = flags};
	return ok_call(c, &req, err);
}

int agent_client_mkdir(struct agent_client *c, const char *path, uint32_t mode,
		       struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_MKDIR};
	req.file_mkdir = (struct proto_file_mkdir){.path = path, .mode = mode};
	return ok_call(c, &req, err);
}

int agent_client_unlink(struct agent_client *c, const char *path, uint32_t flags,
			struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_UNLINK};
	req.file_unlink = (struct proto_file_unlink){.path = path, .flags = flags};
	return ok_call(c, &req, err);
}

int agent_client_rename(struct agent_client *c, const char *from, const char *to, uint32_t flags,
			struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_RENAME};
	req.file_rename = (struct proto_file_rename){.from = from, .to = to, .flags = flags};
	return ok_call(c, &req, err);
}

/* ---- outgoing ---- */

int agent_client_tcp_connect_token(struct agent_client *c, const struct proto_addr *dst,
				   uint32_t timeout_ms, uint8_t token[PROTO_TOKEN_LEN],
				   struct proto_addr *local, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_TCP_CONNECT}, reply;
	req.tcp_connect.dst = *dst;
	req.tcp_connect.timeout_ms = timeout_ms;
	/* the agent gives up on the connect first and says why */
	int wait = timeout_ms && c->timeout_ms > 0 && (int)timeout_ms + 5000 > c->timeout_ms
			   ? (int)timeout_ms + 5000
			   : 0;
	if (agent_client_call(c, &req, &reply, wait, err) < 0)
		return -1;
	if (local)
		*local = reply.tcp_connect_reply.local;
	memcpy(token, reply.tcp_connect_reply.token, PROTO_TOKEN_LEN);
	proto_msg_free(&reply);
	return 0;
}

int agent_client_tcp_connect(struct agent_client *c, const struct proto_addr *dst,
			     uint32_t timeout_ms, struct proto_addr *local, struct hm_err *err)
{
	uint8_t token[PROTO_TOKEN_LEN];
	if (agent_client_tcp_connect_token(c, dst, timeout_ms, token, local, err) < 0)
		return -1;
	int fd = open_stream(c, token, err);
	if (fd < 0) {
		char where[80];
		return hm_err_prefix(err, "TCP stream to %s", proto_addr_str(dst, where, sizeof(where)));
	}
	return fd;
}

int agent_client_udp_open(struct agent_client *c, uint8_t family, struct proto_addr *local,
			  struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_UDP_OPEN}, reply;
	req.udp_open.family = family;
	if (agent_client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	if (local)
		*local = reply.udp_open_reply.local;
	int fd = open_stream(c, reply.udp_open_reply.token, err);
	proto_msg_free(&reply);
	if (fd < 0)
		return hm_err_prefix(err, "UDP stream");
	return fd;
}

int agent_udp_send(int stream_fd, const struct proto_addr *dst, const void *data, size_t len,
		   struct hm_err *err)
{
	if (len > PROTO_DATAGRAM_MAX)
		return hm_err_set(err, EMSGSIZE, "datagram of %zu bytes", len);
	struct proto_msg m = {.type = PROTO_UDP_DATAGRAM};
	m.udp_datagram.peer = *dst;
	m.udp_datagram.data = data;
	m.udp_datagram.len = (uint32_t)len;
	return proto_send(stream_fd, 0, &m, err);
}

ssize_t agent_udp_recv(int stream_fd, struct proto_addr *src, void *buf, size_t cap,
		       int timeout_ms, struct hm_err *err)
{
	/* Wait for the frame's first byte here, then give the rest a grace period: a
	 * timeout inside a frame would lose its beginning and the stream with it. */
	struct pollfd p = {.fd = stream_fd, .events = POLLIN};
	int n;
	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return hm_err_errno(err, "poll UDP stream");
	if (n == 0)
		return hm_err_set(err, ETIMEDOUT, "no datagram within %d ms", timeout_ms);
	struct proto_msg m;
	if (proto_recv(stream_fd, PROTO_DATAGRAM_MAX + 64, STREAM_FRAME_GRACE_MS, &m, err) < 0) {
		proto_msg_free(&m);
		return -1;
	}
	ssize_t rc;
	if (m.type != PROTO_UDP_DATAGRAM) {
		rc = hm_err_set(err, EPROTO, "UDP stream carried %s", proto_type_name(m.type));
	} else {
		size_t len = m.udp_datagram.len < cap ? m.udp_datagram.len : cap;
		if (len)
			memcpy(buf, m.udp_datagram.data, len);
		if (src)
			*src = m.udp_datagram.peer;
		rc = (ssize_t)len;
	}
	proto_msg_free(&m);
	return rc;
}
