/* The control connection (client/client.h): one per client, a reader thread that
 * routes replies to the callers waiting for their request ids, the small requests, and
 * stream connections opened with the one-time tokens of replies. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "client/internal.h"

/* The request timeout where one must be finite */
static int finite_timeout(const struct client *c)
{
	return c->timeout_ms > 0 ? c->timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
}

/* ---- the control connection ---- */

static void client_end(struct client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void client_end(struct client *c, int code, const char *fmt, ...)
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

/* The watcher takes the read role after this long without a call. Shorter: an idle
 * client notices the end of its session sooner; longer: a sparse sequence of calls keeps
 * reading its replies itself instead of being handed them by the watcher. */
#define WATCH_AFTER_IDLE_MS 10

/* One frame read: a reply goes to the call waiting for its id (freed when none does:
 * the caller gave up, or the agent misbehaves); SESSION_ENDED ends the client. Call
 * with lock held. */
static void route_frame(struct client *c, struct proto_frame *f)
{
	proto_cleanup_msg struct proto_msg m = {0};
	struct hm_err err = {0};
	if (proto_decode_frame(f, &m, &err) < 0) {
		pthread_mutex_unlock(&c->lock);
		client_end(c, EPROTO, "connection to the agent failed: %s", err.msg);
		pthread_mutex_lock(&c->lock);
		return;
	}
	if (m.type == PROTO_SESSION_ENDED) {
		pthread_mutex_unlock(&c->lock);
		client_end(c, m.error.errnum, "session ended: %s", m.error.message);
		pthread_mutex_lock(&c->lock);
		return;
	}
	if (m.id == 0 && client_incoming_event(c, &m))
		return;
	for (struct pending_call *p = c->pending; p && m.id; p = p->next) {
		if (p->id == m.id && !p->done) {
			p->reply = m;
			m = (struct proto_msg){0}; /* the waiting caller owns it now */
			p->done = true;
			pthread_cond_signal(&p->cond);
			break;
		}
	}
}

/* Read and route the frames that are there, with the read role held and lock not held.
 * Returns 1 once mine (may be NULL) is done, 0 when nothing more is there to read, < 0
 * when the connection ended. */
static int read_available(struct client *c, struct pending_call *mine)
{
	for (;;) {
		struct proto_frame f = {0};
		struct hm_err err = {0};
		int rc = proto_frame_reader_read(&c->frames, c->fd, &f, &err);
		if (rc < 0) {
			if (err.code == 0)
				client_end(c, ECONNRESET, "the agent closed the connection");
			else
				client_end(c, err.code == ECONNRESET ? ECONNRESET : EPROTO,
					   "connection to the agent failed: %s", err.msg);
			return -1;
		}
		if (rc == 0)
			return 0;
		pthread_mutex_lock(&c->lock);
		route_frame(c, &f);
		bool ended = c->ended, done = mine && mine->done;
		pthread_mutex_unlock(&c->lock);
		if (ended)
			return -1;
		if (done)
			return 1;
	}
}

/* Give the read role back: a caller still waiting for its reply takes it over. Call
 * with lock held. */
static void release_read_role(struct client *c)
{
	c->reading = false;
	for (struct pending_call *p = c->pending; p; p = p->next) {
		if (!p->done) {
			pthread_cond_signal(&p->cond);
			break;
		}
	}
}

static void *watcher_main(void *arg)
{
	struct client *c = arg;
	pthread_mutex_lock(&c->lock);
	while (!c->stopping && !c->ended) {
		/* looked at again every WATCH_AFTER_IDLE_MS, not woken by each call: a
		 * wake-up per call would cost the round trip what the caller saves */
		int64_t now = hm_now_ms();
		int64_t quiet_from = c->reading || c->pending
					 ? now + WATCH_AFTER_IDLE_MS
					 : c->last_call_ms + WATCH_AFTER_IDLE_MS;
		if (now < quiet_from) {
			struct timespec until = {.tv_sec = quiet_from / 1000,
						 .tv_nsec = (quiet_from % 1000) * 1000000};
			pthread_cond_timedwait(&c->watcher_cond, &c->lock, &until);
			continue;
		}
		c->reading = true;
		pthread_mutex_unlock(&c->lock);
		/* holding the role, as the one reader of an idle client: the first call after
		 * the idle period gets its reply from here */
		int n = hm_poll_fd(c->fd, POLLIN, HM_NO_DEADLINE);
		if (n < 0 && errno != EINTR)
			client_end(c, EIO, "poll the agent connection: %s", strerror(errno));
		else if (n > 0)
			read_available(c, NULL);
		pthread_mutex_lock(&c->lock);
		release_read_role(c);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

int client_connect(const struct client_endpoint *ep, const char *token,
		   const struct client_opts *opts, struct client **out, struct hm_err *err)
{
	*out = NULL;
	struct client_opts defaults = {0};
	if (!opts)
		opts = &defaults;
	if (!token || !token[0])
		return hm_err_set(err, EACCES, "no auth token for the agent");
	struct client *c = calloc(1, sizeof(*c));
	if (!c)
		return hm_err_set(err, ENOMEM, "agent client");
	c->ep = *ep;
	c->fd = c->event_fd = -1;
	c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
	atomic_init(&c->next_id, 1);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->send_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->watcher_cond, &ca);
	pthread_condattr_destroy(&ca);
	proto_frame_reader_init(&c->frames, PROTO_MAX_PAYLOAD);
	c->last_call_ms = hm_now_ms();
	int connect_timeout = finite_timeout(c);
	c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->event_fd < 0) {
		hm_err_errno(err, "eventfd");
		goto fail;
	}
	c->fd = client_endpoint_dial(ep, connect_timeout, err);
	if (c->fd < 0)
		goto fail;
	if (proto_client_handshake(c->fd, token,
				   opts->client_name ? opts->client_name : "hermit-client",
				   PROTO_FEATURES_SUPPORTED & ~opts->disable_features,
				   connect_timeout, &c->features, err) < 0)
		goto fail;
	/* replies are read by whoever waits (read_available): never block in read() */
	int fl = fcntl(c->fd, F_GETFL);
	if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		hm_err_errno(err, "make the agent connection non-blocking");
		goto fail;
	}
	/* the watcher must not take the program's signals */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&c->watcher, NULL, watcher_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		hm_err_set(err, rc, "start the agent client's watcher");
		goto fail;
	}
	c->watcher_started = true;
	*out = c;
	return 0;
fail:
	client_close(c);
	return -1;
}

void client_close(struct client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_cond_signal(&c->watcher_cond);
	pthread_mutex_unlock(&c->lock);
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR); /* wakes a watcher in poll */
	if (c->watcher_started)
		pthread_join(c->watcher, NULL);
	if (c->fd >= 0)
		close(c->fd);
	if (c->event_fd >= 0)
		close(c->event_fd);
	proto_frame_reader_release(&c->frames);
	pthread_cond_destroy(&c->watcher_cond);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->send_lock);
	free(c);
}

void client_closep(struct client **c)
{
	client_close(*c);
	*c = NULL;
}

void client_shutdown(struct client *c)
{
	shutdown(c->fd, SHUT_RDWR);
}

uint64_t client_features(const struct client *c)
{
	return c->features;
}

int client_event_fd(const struct client *c)
{
	return c->event_fd;
}

bool client_ended(struct client *c, struct hm_err *why)
{
	pthread_mutex_lock(&c->lock);
	bool ended = c->ended;
	if (ended && why)
		*why = c->end_err;
	pthread_mutex_unlock(&c->lock);
	return ended;
}

static void unlink_pending(struct client *c, struct pending_call *pc)
{
	for (struct pending_call **pp = &c->pending; *pp; pp = &(*pp)->next) {
		if (*pp == pc) {
			*pp = pc->next;
			return;
		}
	}
}

/* With the read role: read until pc is answered, the connection ends or the deadline
 * passes (ETIMEDOUT). */
static int wait_for_reply(struct client *c, struct pending_call *pc, int64_t deadline)
{
	uint64_t since = hm_now_ns();
	for (;;) {
		int r = read_available(c, pc);
		if (r > 0)
			hm_spin_waited(&c->reply_spin, since);
		if (r != 0)
			return 0;
		if (hm_spin_more(&c->reply_spin, since))
			continue;
		int n = hm_poll_fd(c->fd, POLLIN, deadline);
		if (n == 0)
			return ETIMEDOUT;
		if (n < 0 && errno != EINTR) {
			client_end(c, EIO, "poll the agent connection: %s", strerror(errno));
			return 0;
		}
	}
}

int client_call(struct client *c, const struct proto_msg *req, struct proto_msg *reply,
		int timeout_ms, struct hm_err *err)
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
	int64_t deadline = timeout_ms > 0 ? hm_deadline_in(timeout_ms) : HM_NO_DEADLINE;
	pthread_mutex_lock(&c->lock);
	int w = 0;
	while (!pc.done && !c->ended && w != ETIMEDOUT) {
		if (!c->reading) {
			c->reading = true;
			pthread_mutex_unlock(&c->lock);
			w = wait_for_reply(c, &pc, deadline);
			pthread_mutex_lock(&c->lock);
			release_read_role(c);
			continue;
		}
		w = timeout_ms > 0 ? pthread_cond_timedwait(&pc.cond, &c->lock, &until)
				   : pthread_cond_wait(&pc.cond, &c->lock);
	}
	unlink_pending(c, &pc);
	c->last_call_ms = hm_now_ms();
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
		rc = hm_err_set(err, EPROTO, "%s: the agent answered %s",
				proto_type_name(req->type), proto_type_name(reply->type));
	}
	if (rc < 0) {
		proto_msg_free(reply);
		memset(reply, 0, sizeof(*reply));
	}
out:
	pthread_cond_destroy(&pc.cond);
	return rc;
}

int client_ping(struct client *c, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_PING};
	proto_cleanup_msg struct proto_msg reply = {0};
	if (getrandom(&req.ping.nonce, sizeof(req.ping.nonce), GRND_NONBLOCK) < 0)
		req.ping.nonce = (uint64_t)time(NULL);
	if (client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	int rc = reply.ping.nonce == req.ping.nonce
		     ? 0
		     : hm_err_set(err, EPROTO, "PONG echoes the wrong nonce");
	return rc;
}

int client_status(struct client *c, struct client_status *out, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_STATUS};
	proto_cleanup_msg struct proto_msg reply = {0};
	if (client_call(c, &req, &reply, 0, err) < 0)
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
	out->has_incoming = s->has_incoming;
	out->subscriptions = s->subscriptions;
	out->mirrored = s->mirrored;
	out->mirror_lost = s->mirror_lost;
	out->mirror_bytes = s->mirror_bytes;
	out->stolen = s->stolen;
	out->passed_to_target = s->passed_to_target;
	out->has_kernel_relay = s->has_kernel_relay;
	out->kernel_relay_on = s->kernel_relay_on;
	out->kernel_streams = s->kernel_streams;
	return 0;
}

int client_session_open(struct client *c, const char *target, struct client_session_info *out,
			struct hm_err *err)
{
	struct proto_target t;
	if (proto_target_parse(target, &t, err) < 0)
		return -1;
	struct proto_msg req = {.type = PROTO_SESSION_OPEN};
	proto_cleanup_msg struct proto_msg reply = {0};
	req.session_open.target = target;
	if (client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	if (out) {
		memset(out, 0, sizeof(*out));
		out->session_id = reply.session_open_reply.session_id;
		out->pid = (pid_t)reply.session_open_reply.pid;
		snprintf(out->description, sizeof(out->description), "%s",
			 reply.session_open_reply.description);
	}
	return 0;
}

int client_env(struct client *c, char ***vars, size_t *count, struct hm_err *err)
{
	*vars = NULL;
	*count = 0;
	struct proto_msg req = {.type = PROTO_ENV_GET};
	proto_cleanup_msg struct proto_msg reply = {0};
	if (client_call(c, &req, &reply, 0, err) < 0)
		return -1;
	const struct proto_env_reply *e = &reply.env_reply;
	size_t bytes = (e->count + 1) * sizeof(char *);
	for (uint32_t i = 0; i < e->count; i++)
		bytes += strlen(e->vars[i]) + 1;
	char **arr = malloc(bytes);
	if (!arr)
		return hm_err_set(err, ENOMEM, "environment of %u variables", e->count);
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
	return 0;
}

/* ---- streams ---- */

int client_open_stream(struct client *c, const uint8_t token[PROTO_TOKEN_LEN], struct hm_err *err)
{
	return client_open_stream_handoff(c, token, NULL, err);
}

int client_open_stream_handoff(struct client *c, const uint8_t token[PROTO_TOKEN_LEN],
			       bool *handed_off, struct hm_err *err)
{
	int timeout = finite_timeout(c);
	hm_cleanup_close int fd = client_endpoint_dial(&c->ep, timeout, err);
	if (fd < 0)
		return -1;
	/* only a unix agent passes fds, and only when both ends agreed to */
	bool may_pass = handed_off && (c->features & PROTO_FEAT_TCP_FD) &&
			c->ep.transport == &client_transport_unix;
	if (handed_off)
		*handed_off = false;
	if (!may_pass)
		return proto_stream_open(fd, token, timeout, err) < 0 ? -1 : hm_steal_fd(&fd);
	int passed;
	if (proto_stream_open_fd(fd, token, timeout, &passed, err) < 0)
		return -1;
	if (passed < 0)
		return hm_steal_fd(&fd);
	/* a connected TCP socket or nothing: the fd may end up in a program's fd table */
	int type = 0;
	socklen_t tlen = sizeof(type);
	if (getsockopt(passed, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 || type != SOCK_STREAM) {
		close(passed);
		return hm_err_set(err, EPROTO, "the agent passed an fd that is no stream socket");
	}
	/* blocking, as every stream fd the library returns; the agent's was not */
	int fl = fcntl(passed, F_GETFL);
	if (fl < 0 || fcntl(passed, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		hm_err_errno(err, "the pod's socket");
		close(passed);
		return -1;
	}
	*handed_off = true;
	return passed;
}
