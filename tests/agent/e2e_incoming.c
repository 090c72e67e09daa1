/* agent_e2e commands for incoming traffic (tests/integration/24_agent_incoming_steal.sh):
 * a session subscribes to a port of its target pod and serves the connections the agent
 * hands it. The client library has no subscribe API of its own here (that is trace-run's
 * side), so these commands speak the protocol on a control connection they own: one
 * thread reads it (replies and INCOMING_CONNECTION events), each delivered connection is
 * served on a stream connection of its own. */
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <time.h>

#include "tests/agent/e2e.h"

#define CTL_TIMEOUT_MS 20000

int e2e_ctl_open(struct e2e_ctx *ctx, struct e2e_ctl *c, struct hm_err *err)
{
	c->next_id = 1;
	c->fd = client_endpoint_dial(&ctx->ep, CTL_TIMEOUT_MS, err);
	if (c->fd < 0)
		return -1;
	uint64_t agreed;
	return proto_client_handshake(c->fd, ctx->token, "agent_e2e incoming",
				      PROTO_FEATURES_SUPPORTED, CTL_TIMEOUT_MS, &agreed, err);
}

int e2e_ctl_call(struct e2e_ctl *c, struct proto_msg *req, struct proto_msg *reply,
		 e2e_event_fn on_event, void *arg, struct hm_err *err)
{
	uint32_t id = c->next_id++;
	if (proto_send(c->fd, id, req, err) < 0)
		return -1;
	for (;;) {
		struct proto_msg m = {0};
		if (proto_recv(c->fd, PROTO_MAX_PAYLOAD, CTL_TIMEOUT_MS, &m, err) < 0)
			return -1;
		if (m.id == id) {
			if (m.type == PROTO_ERROR) {
				hm_err_plain(err, m.error.errnum, "%s", m.error.message);
				proto_msg_free(&m);
				return -1;
			}
			*reply = m;
			return 0;
		}
		if (m.type == PROTO_SESSION_ENDED) {
			hm_err_plain(err, m.error.errnum, "session ended: %s", m.error.message);
			proto_msg_free(&m);
			return -1;
		}
		if (on_event)
			on_event(arg, &m);
		proto_msg_free(&m);
	}
}

int e2e_ctl_session(struct e2e_ctx *ctx, struct e2e_ctl *c, struct hm_err *err)
{
	if (!ctx->target)
		return hm_err_set(err, EINVAL, "this command needs --target");
	if (e2e_ctl_open(ctx, c, err) < 0)
		return -1;
	struct proto_msg req = {.type = PROTO_SESSION_OPEN}, r;
	req.session_open.target = ctx->target;
	if (e2e_ctl_call(c, &req, &r, NULL, NULL, err) < 0)
		return hm_err_prefix(err, "session on %s", ctx->target);
	printf("session %llu\n", (unsigned long long)r.session_open_reply.session_id);
	proto_msg_free(&r);
	return 0;
}

int e2e_ctl_subscribe(struct e2e_ctl *c, uint16_t port, uint8_t mode, uint32_t flags,
		      const char *filter, uint32_t *sub, char *note, size_t note_len,
		      struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_INCOMING_SUBSCRIBE}, r;
	req.incoming_subscribe.port = port;
	req.incoming_subscribe.mode = mode;
	req.incoming_subscribe.flags = flags;
	req.incoming_subscribe.http_filter = filter ? filter : "";
	if (e2e_ctl_call(c, &req, &r, NULL, NULL, err) < 0)
		return -1;
	*sub = r.incoming_subscribe_reply.subscription;
	snprintf(note, note_len, "%s", r.incoming_subscribe_reply.note);
	proto_msg_free(&r);
	return 0;
}

/* ---- serving delivered connections ---- */

enum serve_mode { SERVE_HTTP, SERVE_ECHO, SERVE_SILENT, SERVE_FORWARD, SERVE_KEEPALIVE };

struct server_opts {
	struct e2e_ctx *ctx;
	enum serve_mode mode;
	const char *body;
	struct proto_addr forward; /* SERVE_FORWARD: a local server (what trace-run does) */
};

struct delivered {
	const struct server_opts *opts;
	uint8_t token[PROTO_TOKEN_LEN];
};

static void serve_http(int fd, const char *body)
{
	char buf[8192];
	size_t got = 0;
	while (got < sizeof(buf) - 1) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			return;
		got += (size_t)n;
		buf[got] = '\0';
		if (strstr(buf, "\r\n\r\n"))
			break;
	}
	char head[256];
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
			  "%zu\r\nConnection: close\r\n\r\n",
			  strlen(body));
	if (send(fd, head, (size_t)hl, MSG_NOSIGNAL) == hl)
		send(fd, body, strlen(body), MSG_NOSIGNAL);
	shutdown(fd, SHUT_WR);
	while (recv(fd, buf, sizeof(buf), 0) > 0) {
	}
}

/* an echo that tells itself apart from the pod's own echo server */
#define STOLEN_ECHO_PREFIX "stolen:"

static void serve_echo(int fd)
{
	char buf[65536];
	if (send(fd, STOLEN_ECHO_PREFIX, strlen(STOLEN_ECHO_PREFIX), MSG_NOSIGNAL) < 0)
		return;
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	}
	shutdown(fd, SHUT_WR);
}

/* HTTP/1.1 keep-alive on the stream itself, one GET after the other (no bodies): the
 * agent's own cost, without a local server behind it. */
static void serve_keepalive(int fd, const char *body)
{
	char buf[16384], resp[512];
	int rl = snprintf(resp, sizeof(resp),
			  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
			  "%zu\r\n\r\n%s",
			  strlen(body), body);
	size_t got = 0;
	for (;;) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			return;
		got += (size_t)n;
		buf[got] = '\0';
		char *end;
		while ((end = strstr(buf, "\r\n\r\n"))) {
			if (send(fd, resp, (size_t)rl, MSG_NOSIGNAL) != rl)
				return;
			size_t used = (size_t)(end + 4 - buf);
			memmove(buf, buf + used, got - used + 1);
			got -= used;
		}
		if (got == sizeof(buf) - 1)
			return; /* a header this long is not what this serves */
	}
}

/* Copy both ways between the stream and a local server until both sides are done;
 * an EOF becomes a half-close on the other side. */
static void serve_forward(int fd, const struct proto_addr *to)
{
	struct sockaddr_storage ss;
	socklen_t sl = proto_addr_to_sockaddr(to, &ss);
	int local = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (local < 0 || connect(local, (struct sockaddr *)&ss, sl) < 0) {
		if (local >= 0)
			close(local);
		return;
	}
	int one = 1;
	setsockopt(local, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int fds[2] = {fd, local};
	bool open[2] = {true, true};
	char buf[65536];
	while (open[0] || open[1]) {
		struct pollfd pf[2] = {{.fd = open[0] ? fds[0] : -1, .events = POLLIN},
				       {.fd = open[1] ? fds[1] : -1, .events = POLLIN}};
		if (poll(pf, 2, -1) < 0)
			break;
		for (int i = 0; i < 2; i++) {
			if (!pf[i].revents)
				continue;
			ssize_t n = recv(fds[i], buf, sizeof(buf), 0);
			if (n <= 0) {
				open[i] = false;
				shutdown(fds[1 - i], SHUT_WR);
				continue;
			}
			if (send(fds[1 - i], buf, (size_t)n, MSG_NOSIGNAL) != n)
				open[0] = open[1] = false;
		}
	}
	close(local);
}

static void *serve_main(void *arg)
{
	struct delivered *d = arg;
	struct hm_err err = {0};
	int fd = client_endpoint_dial(&d->opts->ctx->ep, CTL_TIMEOUT_MS, &err);
	if (fd < 0 || proto_stream_open(fd, d->token, CTL_TIMEOUT_MS, &err) < 0) {
		fprintf(stderr, "stream: %s\n", err.msg);
	} else {
		/* the relay hands a non-blocking fd's bytes; ours blocks */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		char sink[4096];
		if (d->opts->mode == SERVE_HTTP)
			serve_http(fd, d->opts->body);
		else if (d->opts->mode == SERVE_ECHO)
			serve_echo(fd);
		else if (d->opts->mode == SERVE_FORWARD)
			serve_forward(fd, &d->opts->forward);
		else if (d->opts->mode == SERVE_KEEPALIVE)
			serve_keepalive(fd, d->opts->body);
		else /* read and never answer: a client waits until the session goes */
			while (recv(fd, sink, sizeof(sink), 0) > 0) {
			}
	}
	if (fd >= 0)
		close(fd);
	free(d);
	return NULL;
}

struct serve_state {
	const struct server_opts *opts;
	unsigned delivered;
};

static void on_connection(void *arg, const struct proto_msg *ev)
{
	struct serve_state *st = arg;
	if (ev->type != PROTO_INCOMING_CONNECTION)
		return;
	char from[80], to[80];
	printf("connection %u from %s to %s\n", ev->incoming_connection.subscription,
	       proto_addr_str(&ev->incoming_connection.client, from, sizeof(from)),
	       proto_addr_str(&ev->incoming_connection.server, to, sizeof(to)));
	fflush(stdout);
	st->delivered++;
	struct delivered *d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->opts = st->opts;
	memcpy(d->token, ev->incoming_connection.token, PROTO_TOKEN_LEN);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t th;
	if (pthread_create(&th, &attr, serve_main, d) != 0)
		free(d);
	pthread_attr_destroy(&attr);
}

static void write_ready(const char *path, const char *text)
{
	if (!path)
		return;
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", text);
	fclose(f);
	rename(tmp, path);
}

/* steal PORT [--flush] [--concurrent] [--echo | --http BODY | --http-keepalive BODY |
 *       --silent | --forward ADDR]
 *       [--ready FILE] [--max N] [--unsubscribe] [--linger S] [--filter JSON]: subscribe
 * (steal) to PORT of the target and serve every delivered connection (an HTTP answer
 * with BODY, once or keep-alive; an echo of what it gets after "stolen:"; silence; or a relay to a
 * local server at ADDR, as trace-run does) until N were delivered (default: until killed); then,
 * with --unsubscribe, unsubscribe and keep the session open for S seconds (default 0). Prints
 * "session ID", "subscribed ID", the note if any, and "connection SUB from CLIENT to SERVER" for
 * each; writes "subscribed ID" to FILE. */
static int cmd_steal(struct e2e_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {{"flush", no_argument, NULL, 'f'},
						 {"concurrent", no_argument, NULL, 'c'},
						 {"echo", no_argument, NULL, 'e'},
						 {"http", required_argument, NULL, 'h'},
						 {"ready", required_argument, NULL, 'r'},
						 {"max", required_argument, NULL, 'm'},
						 {"unsubscribe", no_argument, NULL, 'u'},
						 {"linger", required_argument, NULL, 'l'},
						 {"filter", required_argument, NULL, 'F'},
						 {"silent", no_argument, NULL, 's'},
						 {"forward", required_argument, NULL, 'w'},
						 {"http-keepalive", required_argument, NULL, 'k'},
						 {0}};
	struct server_opts opts = {.ctx = ctx, .mode = SERVE_HTTP, .body = "stolen\n"};
	/* this tool serves the stream's bytes itself: never the pod's socket */
	uint32_t flags = PROTO_INCOMING_RELAY;
	const char *ready = NULL, *filter = NULL;
	unsigned max = 0, linger = 0;
	bool unsubscribe = false;
	optind = 0; /* glibc: a full restart of getopt after main's scan */
	int o;
	while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (o) {
		case 'f':
			flags |= PROTO_INCOMING_FLUSH;
			break;
		case 'c':
			flags |= PROTO_INCOMING_CONCURRENT;
			break;
		case 'e':
			opts.mode = SERVE_ECHO;
			break;
		case 's':
			opts.mode = SERVE_SILENT;
			break;
		case 'k':
			opts.mode = SERVE_KEEPALIVE;
			opts.body = optarg;
			break;
		case 'w':
			opts.mode = SERVE_FORWARD;
			if (e2e_parse_addr(optarg, &opts.forward) < 0)
				return 2;
			break;
		case 'h':
			opts.mode = SERVE_HTTP;
			opts.body = optarg;
			break;
		case 'r':
			ready = optarg;
			break;
		case 'm':
			max = (unsigned)atoi(optarg);
			break;
		case 'u':
			unsubscribe = true;
			break;
		case 'l':
			linger = (unsigned)atoi(optarg);
			break;
		case 'F':
			filter = optarg;
			break;
		default:
			return 2;
		}
	}
	if (optind != argc - 1)
		return 2;
	int port = atoi(argv[optind]);
	if (port <= 0 || port > 65535)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	uint32_t sub;
	char note[PROTO_MSG_MAX];
	if (e2e_ctl_session(ctx, &c, &err) < 0 ||
	    e2e_ctl_subscribe(&c, (uint16_t)port, PROTO_INCOMING_STEAL, flags, filter, &sub, note,
			      sizeof(note), &err) < 0)
		return e2e_fail("steal port %d: %s", port, err.msg);
	char line[64];
	snprintf(line, sizeof(line), "subscribed %u", sub);
	printf("%s\n", line);
	if (note[0])
		printf("note: %s\n", note);
	fflush(stdout);
	write_ready(ready, line);
	struct serve_state st = {.opts = &opts};
	while (!max || st.delivered < max) {
		struct proto_msg m = {0};
		if (proto_recv(c.fd, PROTO_MAX_PAYLOAD, -1, &m, &err) < 0)
			return e2e_fail("control connection: %s", err.msg);
		if (m.type == PROTO_SESSION_ENDED) {
			int rc = e2e_fail("session ended: %s", m.error.message);
			proto_msg_free(&m);
			return rc;
		}
		on_connection(&st, &m);
		proto_msg_free(&m);
	}
	if (unsubscribe) {
		struct proto_msg req = {.type = PROTO_INCOMING_UNSUBSCRIBE}, r;
		req.incoming_unsubscribe.subscription = sub;
		if (e2e_ctl_call(&c, &req, &r, on_connection, &st, &err) < 0)
			return e2e_fail("unsubscribe %u: %s", sub, err.msg);
		proto_msg_free(&r);
		printf("unsubscribed %u\n", sub);
		fflush(stdout);
		write_ready(ready, "unsubscribed");
		sleep(linger);
	}
	/* the delivered connections finish on their threads */
	sleep(1);
	close(c.fd);
	return e2e_ok("%u connection(s) delivered on port %d", st.delivered, port);
}

/* subscribe PORT steal|mirror ok|ERRNO [TEXT] [--flush] [--concurrent] [--filter JSON]:
 * one subscribe, expecting success (TEXT then in the reply's note) or an ERROR with
 * that errno (TEXT in its message). */
static int cmd_subscribe(struct e2e_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {{"flush", no_argument, NULL, 'f'},
						 {"concurrent", no_argument, NULL, 'c'},
						 {"filter", required_argument, NULL, 'F'},
						 {0}};
	uint32_t flags = 0;
	const char *filter = NULL;
	optind = 0; /* glibc: a full restart of getopt after main's scan */
	int o;
	while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (o == 'f')
			flags |= PROTO_INCOMING_FLUSH;
		else if (o == 'c')
			flags |= PROTO_INCOMING_CONCURRENT;
		else if (o == 'F')
			filter = optarg;
		else
			return 2;
	}
	int left = argc - optind;
	if (left < 3 || left > 4)
		return 2;
	int port = atoi(argv[optind]);
	const char *mode_s = argv[optind + 1], *want = argv[optind + 2];
	const char *text = left == 4 ? argv[optind + 3] : NULL;
	uint8_t mode = !strcmp(mode_s, "steal")	   ? PROTO_INCOMING_STEAL
		       : !strcmp(mode_s, "mirror") ? PROTO_INCOMING_MIRROR
						   : 0;
	int want_errno = strcmp(want, "ok") ? e2e_errno_code(want) : 0;
	if (port < 0 || port > 65535 || !mode || want_errno < 0) /* 0: the agent says no */
		return 2;
	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	if (e2e_ctl_session(ctx, &c, &err) < 0)
		return e2e_fail("%s", err.msg);
	uint32_t sub;
	char note[PROTO_MSG_MAX];
	int rc = e2e_ctl_subscribe(&c, (uint16_t)port, mode, flags, filter, &sub, note,
				   sizeof(note), &err);
	close(c.fd);
	if (rc == 0) {
		printf("subscribed %u%s%s\n", sub, note[0] ? ", note: " : "", note);
		if (want_errno)
			return e2e_fail("subscribe to port %d succeeded, expected %s", port, want);
		if (text && !strstr(note, text))
			return e2e_fail("the note '%s' does not say '%s'", note, text);
		return e2e_ok("%s of port %d accepted", mode_s, port);
	}
	printf("refused: %s (%s)\n", err.msg, e2e_errno_name(err.code));
	if (err.code != want_errno)
		return e2e_fail("subscribe to port %d: %s (%s), expected %s", port, err.msg,
				e2e_errno_name(err.code), want);
	if (text && !strstr(err.msg, text))
		return e2e_fail("the refusal '%s' does not say '%s'", err.msg, text);
	return e2e_ok("%s of port %d refused with %s", mode_s, port, want);
}

/* unsubscribe ID ok|ERRNO: a fresh session unsubscribes ID (another session's: ENOENT) */
static int cmd_unsubscribe(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	long id = atol(argv[1]);
	int want = strcmp(argv[2], "ok") ? e2e_errno_code(argv[2]) : 0;
	if (id <= 0 || id > UINT32_MAX || want < 0)
		return 2;
	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	if (e2e_ctl_session(ctx, &c, &err) < 0)
		return e2e_fail("%s", err.msg);
	struct proto_msg req = {.type = PROTO_INCOMING_UNSUBSCRIBE}, r;
	req.incoming_unsubscribe.subscription = (uint32_t)id;
	int rc = e2e_ctl_call(&c, &req, &r, NULL, NULL, &err);
	close(c.fd);
	if (rc == 0) {
		proto_msg_free(&r);
		return want ? e2e_fail("unsubscribe %ld succeeded, expected %s", id, argv[2])
			    : e2e_ok("subscription %ld ended", id);
	}
	if (err.code != want)
		return e2e_fail("unsubscribe %ld: %s, expected %s", id, err.msg, argv[2]);
	return e2e_ok("unsubscribe %ld refused: %s", id, err.msg);
}

/* incoming-status: print the agent's incoming counters (has_incoming must be set). */
static int cmd_incoming_status(struct e2e_ctx *ctx, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return 2;
	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	struct proto_msg req = {.type = PROTO_STATUS}, r;
	if (e2e_ctl_open(ctx, &c, &err) < 0 || e2e_ctl_call(&c, &req, &r, NULL, NULL, &err) < 0)
		return e2e_fail("status: %s", err.msg);
	close(c.fd);
	struct proto_status_reply *s = &r.status_reply;
	int rc = s->has_incoming ? 0 : e2e_fail("the status has no incoming counters");
	printf("subscriptions %u stolen %llu passed_to_target %llu mirrored %llu\n",
	       s->subscriptions, (unsigned long long)s->stolen,
	       (unsigned long long)s->passed_to_target, (unsigned long long)s->mirrored);
	proto_msg_free(&r);
	return rc ? rc : e2e_ok("incoming counters reported");
}

/* subscribe-many steal|mirror SESSIONS PER_SESSION BASE_PORT ACCEPTED ERRNO: SESSIONS
 * sessions of this one peer subscribe to PER_SESSION ports each (BASE_PORT on), all held
 * at once; exactly ACCEPTED subscriptions must succeed, the others be refused with
 * ERRNO. */
static int cmd_subscribe_many(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 7)
		return 2;
	uint8_t mode = !strcmp(argv[1], "steal")    ? PROTO_INCOMING_STEAL
		       : !strcmp(argv[1], "mirror") ? PROTO_INCOMING_MIRROR
						    : 0;
	argv++;
	int sessions = atoi(argv[1]), per = atoi(argv[2]), base = atoi(argv[3]);
	int want_ok = atoi(argv[4]), want_errno = e2e_errno_code(argv[5]);
	if (!mode || sessions <= 0 || sessions > 64 || per <= 0 || base <= 0 ||
	    base + sessions * per > 65535 || want_errno <= 0)
		return 2;
	int fds[64];
	int accepted = 0, refused = 0, rc = 0;
	char first_refusal[PROTO_MSG_MAX] = "";
	for (int i = 0; i < sessions; i++)
		fds[i] = -1;
	for (int i = 0; i < sessions && !rc; i++) {
		struct hm_err err = {0};
		struct e2e_ctl c = {.fd = -1};
		if (e2e_ctl_session(ctx, &c, &err) < 0) {
			rc = e2e_fail("session %d: %s", i, err.msg);
			break;
		}
		fds[i] = c.fd;
		for (int j = 0; j < per; j++) {
			uint32_t sub;
			char note[PROTO_MSG_MAX];
			uint16_t port = (uint16_t)(base + i * per + j);
			if (e2e_ctl_subscribe(&c, port, mode, 0, NULL, &sub, note, sizeof(note),
					      &err) == 0) {
				accepted++;
				continue;
			}
			if (err.code != want_errno) {
				rc = e2e_fail("subscribe to port %u: %s (%s), expected %s", port,
					      err.msg, e2e_errno_name(err.code), argv[5]);
				break;
			}
			if (!refused++)
				snprintf(first_refusal, sizeof(first_refusal), "%s", err.msg);
		}
	}
	printf("accepted %d refused %d: %s\n", accepted, refused, first_refusal);
	for (int i = 0; i < sessions; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (rc)
		return rc;
	if (accepted != want_ok)
		return e2e_fail("%d subscriptions accepted, expected %d", accepted, want_ok);
	return e2e_ok("%d of %d subscriptions accepted, the others refused with %s", accepted,
		      sessions * per, argv[5]);
}

/* mirror-netns PORT ACCEPTED ERRNO PID...: one session per pid/PID target (each in a
 * network namespace of its own) mirrors PORT, all held at once; exactly ACCEPTED must
 * succeed, the others be refused with ERRNO. */
static int cmd_mirror_netns(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc < 5 || argc - 4 > 64)
		return 2;
	int port = atoi(argv[1]), want_ok = atoi(argv[2]), want_errno = e2e_errno_code(argv[3]);
	if (port <= 0 || port > 65535 || want_errno <= 0)
		return 2;
	int fds[64], n = argc - 4, accepted = 0, rc = 0;
	char first_refusal[PROTO_MSG_MAX] = "", target[64];
	const char *saved = ctx->target;
	for (int i = 0; i < n; i++)
		fds[i] = -1;
	for (int i = 0; i < n && !rc; i++) {
		struct hm_err err = {0};
		struct e2e_ctl c = {.fd = -1};
		snprintf(target, sizeof(target), "pid/%s", argv[4 + i]);
		ctx->target = target;
		if (e2e_ctl_session(ctx, &c, &err) < 0) {
			rc = e2e_fail("session on %s: %s", target, err.msg);
			break;
		}
		fds[i] = c.fd;
		uint32_t sub;
		char note[PROTO_MSG_MAX];
		if (e2e_ctl_subscribe(&c, (uint16_t)port, PROTO_INCOMING_MIRROR, 0, NULL, &sub,
				      note, sizeof(note), &err) == 0)
			accepted++;
		else if (err.code != want_errno)
			rc = e2e_fail("mirror port %d of %s: %s (%s), expected %s", port, target,
				      err.msg, e2e_errno_name(err.code), argv[3]);
		else if (!first_refusal[0])
			snprintf(first_refusal, sizeof(first_refusal), "%s", err.msg);
	}
	ctx->target = saved;
	printf("accepted %d refused %d: %s\n", accepted, n - accepted, first_refusal);
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (rc)
		return rc;
	if (accepted != want_ok)
		return e2e_fail("%d mirrors accepted, expected %d", accepted, want_ok);
	return e2e_ok("%d of %d network namespaces mirrored, the others refused with %s", accepted,
		      n, argv[3]);
}

/* mirror-stall PORT READY_FILE SECONDS: a session mirrors PORT and then reads nothing
 * for SECONDS (its INCOMING_CONNECTION events pile up in the agent's socket) */
static int cmd_mirror_stall(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int port = atoi(argv[1]), secs = atoi(argv[3]);
	if (port <= 0 || port > 65535 || secs <= 0)
		return 2;
	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	uint32_t sub;
	char note[PROTO_MSG_MAX];
	if (e2e_ctl_session(ctx, &c, &err) < 0 ||
	    e2e_ctl_subscribe(&c, (uint16_t)port, PROTO_INCOMING_MIRROR, 0, NULL, &sub, note,
			      sizeof(note), &err) < 0)
		return e2e_fail("mirror port %d: %s", port, err.msg);
	write_ready(argv[2], "stalled\n");
	sleep((unsigned)secs);
	close(c.fd);
	return e2e_ok("stalled %d s", secs);
}

static const struct e2e_cmd incoming_cmds[] = {
    {"steal",
     "PORT [--flush] [--concurrent] [--echo|--http BODY|--http-keepalive BODY|--silent|"
     "--forward ADDR] [--ready FILE] "
     "[--max N] "
     "[--unsubscribe] [--linger S] [--filter JSON]",
     cmd_steal},
    {"subscribe", "PORT steal|mirror ok|ERRNO [TEXT] [--flush] [--concurrent] [--filter JSON]",
     cmd_subscribe},
    {"unsubscribe", "ID ok|ERRNO", cmd_unsubscribe},
    {"subscribe-many", "steal|mirror SESSIONS PER_SESSION BASE_PORT ACCEPTED ERRNO",
     cmd_subscribe_many},
    {"mirror-netns", "PORT ACCEPTED ERRNO PID...", cmd_mirror_netns},
    {"mirror-stall", "PORT READY_FILE SECONDS", cmd_mirror_stall},
    {"incoming-status", "", cmd_incoming_status},
};
E2E_REGISTER(incoming_cmds)
