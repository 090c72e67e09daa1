/* Port-forward through the API server, the WebSocket way the official clients use:
 * GET /api/v1/namespaces/NS/pods/POD/portforward?ports=N upgraded to WebSocket with the
 * v4.channel.k8s.io subprotocol. Debian 12's libcurl (7.88) has no WebSocket API, so
 * libcurl only connects (CURLOPT_CONNECT_ONLY: TCP, proxy, TLS, client certificates
 * stay libcurl's) and this file writes the upgrade request and the frames over
 * curl_easy_send/recv. Each dial is one WebSocket, pumped by a thread of its own
 * between the API server and one end of a socketpair; the caller gets the other end,
 * a plain stream socket, which is what client/client.h's transports hand out. */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "kube/dl.h"
#include "kube/internal.h"

#define PF_HEADERS_MAX 16384
#define PF_CHUNK 65536

/* pumps still running, so kube_close can let them finish (their TLS state with them) */
static pthread_mutex_t pumps_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pumps_done = PTHREAD_COND_INITIALIZER;
static unsigned pumps_live;

/* what the error channel said on a connection that carried no byte yet: the caller's
 * handshake fails then, and its one error line should say why */
static pthread_mutex_t last_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_error[512];

bool kube_portforward_last_error(char *out, size_t len)
{
	pthread_mutex_lock(&last_error_lock);
	bool any = last_error[0] != '\0';
	snprintf(out, len, "%s", last_error);
	last_error[0] = '\0';
	pthread_mutex_unlock(&last_error_lock);
	return any;
}

void kube_portforward_wait(int timeout_ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&pumps_lock);
	while (pumps_live && pthread_cond_timedwait(&pumps_done, &pumps_lock, &until) == 0)
		;
	pthread_mutex_unlock(&pumps_lock);
}

struct pf_conn {
	CURL *curl;
	curl_socket_t sock;
	int local;
	char what[KUBE_NAME_MAX * 2 + 32]; /* "pod NS/POD port N" */
	uint8_t *in;			   /* bytes from the API server not yet parsed */
	size_t inlen, incap;
	struct ws_channels ch;
	bool delivered; /* some data reached the local side */
	uint8_t out[WS_MAX_HEADER + 1 + PF_CHUNK];
};

static void pf_conn_free(struct pf_conn *pc)
{
	if (pc->curl)
		curl_easy_cleanup(pc->curl);
	if (pc->local >= 0)
		close(pc->local);
	free(pc->in);
	free(pc);
}

static ssize_t recv_some(struct pf_conn *pc);

/* all of buf, waiting for the socket when libcurl says so. While the server does not
 * take our bytes, what it sends is read into pc->in (the pump parses it next): a
 * server that waits for us to read before it reads would otherwise never read. */
static int send_all(struct pf_conn *pc, const void *buf, size_t len, int64_t deadline)
{
	const char *p = buf;
	bool can_read = true;
	while (len) {
		size_t sent = 0;
		CURLcode cc = curl_easy_send(pc->curl, p, len, &sent);
		if (cc == CURLE_AGAIN) {
			struct pollfd pfd = {.fd = pc->sock,
					     .events = (short)(POLLOUT | (can_read ? POLLIN : 0))};
			int rc = poll(&pfd, 1, hm_ms_until(deadline));
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc <= 0)
				return -1;
			if (pfd.revents & POLLIN) {
				ssize_t n;
				while ((n = recv_some(pc)) > 0)
					;
				if (n == 0 || errno != EAGAIN)
					can_read = false; /* EOF or full: only wait to write */
			}
			continue;
		}
		if (cc != CURLE_OK)
			return -1;
		p += sent;
		len -= sent;
	}
	return 0;
}

static int send_frame(struct pf_conn *pc, uint8_t opcode, const uint8_t *prefix, size_t plen,
		      const void *data, size_t len)
{
	uint8_t mask[4];
	if (getrandom(mask, sizeof(mask), 0) != sizeof(mask))
		return -1;
	size_t h = kube_ws_header(pc->out, opcode, plen + len, mask);
	if (plen)
		memcpy(pc->out + h, prefix, plen);
	if (len)
		memcpy(pc->out + h + plen, data, len);
	kube_ws_mask(pc->out + h, plen + len, mask, 0);
	return send_all(pc, pc->out, h + plen + len, HM_NO_DEADLINE);
}

/* read what the socket has; 0 at EOF, -1 on error, else bytes appended */
static ssize_t recv_some(struct pf_conn *pc)
{
	if (pc->incap - pc->inlen < PF_CHUNK) {
		size_t cap = pc->incap ? pc->incap * 2 : 2 * PF_CHUNK;
		if (cap > 2 * (size_t)WS_MAX_PAYLOAD + PF_CHUNK)
			return -1; /* a frame over WS_MAX_PAYLOAD is refused anyway */
		uint8_t *bigger = realloc(pc->in, cap);
		if (!bigger)
			return -1;
		pc->in = bigger;
		pc->incap = cap;
	}
	size_t got = 0;
	CURLcode cc = curl_easy_recv(pc->curl, pc->in + pc->inlen, pc->incap - pc->inlen, &got);
	if (cc == CURLE_AGAIN) {
		errno = EAGAIN;
		return -1;
	}
	if (cc != CURLE_OK)
		return -1;
	pc->inlen += got;
	return (ssize_t)got;
}

/* frames parsed from pc->in: 1 to go on, 0 when the WebSocket or the local side ended */
static int handle_frames(struct pf_conn *pc)
{
	size_t off = 0;
	int rc = 1;
	while (rc == 1) {
		struct ws_frame f;
		struct hm_err err = {0};
		ssize_t n = kube_ws_parse(pc->in + off, pc->inlen - off, true, &f, &err);
		if (n == 0)
			break;
		if (n < 0) {
			hm_warn("port-forward to %s: %s", pc->what, err.msg);
			return 0;
		}
		off += (size_t)n;
		struct ws_event ev;
		if (kube_ws_channels_feed(&pc->ch, &f, &ev, &err) < 0) {
			hm_warn("port-forward to %s: %s", pc->what, err.msg);
			return 0;
		}
		switch (ev.kind) {
		case WS_EV_DATA:
			pc->delivered = true;
			if (hm_write_all(pc->local, ev.data, ev.len) < 0)
				rc = 0;
			break;
		case WS_EV_ERROR_TEXT:
			if (pc->delivered) {
				hm_warn("port-forward to %s: %.*s", pc->what, (int)ev.len, ev.data);
			} else {
				hm_debug("port-forward to %s: %.*s", pc->what, (int)ev.len,
					 ev.data);
				pthread_mutex_lock(&last_error_lock);
				snprintf(last_error, sizeof(last_error), "%.*s", (int)ev.len,
					 ev.data);
				pthread_mutex_unlock(&last_error_lock);
			}
			rc = 0;
			break;
		case WS_EV_PING:
			if (send_frame(pc, WS_OP_PONG, NULL, 0, ev.data, ev.len) < 0)
				rc = 0;
			break;
		case WS_EV_CLOSE:
			send_frame(pc, WS_OP_CLOSE, NULL, 0, ev.data, ev.len < 2 ? ev.len : 2);
			rc = 0;
			break;
		case WS_EV_NONE:
			break;
		}
	}
	memmove(pc->in, pc->in + off, pc->inlen - off);
	pc->inlen -= off;
	return rc;
}

static void *pump(void *arg)
{
	struct pf_conn *pc = arg;
	bool local_reading = true;
	uint8_t *chunk = malloc(PF_CHUNK);
	static const uint8_t data_channel = 0;
	/* bytes that came with the upgrade answer */
	bool alive = chunk && handle_frames(pc);
	while (alive) {
		/* frames send_all read while it waited */
		if (pc->inlen && !(alive = handle_frames(pc)))
			break;
		struct pollfd fds[2] = {{.fd = pc->local, .events = local_reading ? POLLIN : 0},
					{.fd = pc->sock, .events = POLLIN}};
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (fds[1].revents) {
			ssize_t n;
			while ((n = recv_some(pc)) > 0)
				if (!(alive = handle_frames(pc)))
					break;
			if (n == 0 || (n < 0 && errno != EAGAIN))
				alive = false;
			if (!alive)
				break;
		}
		if (fds[0].revents & POLLIN) {
			ssize_t n = read(pc->local, chunk, PF_CHUNK);
			if (n < 0 && errno == EINTR)
				continue;
			if (n > 0) {
				if (send_frame(pc, WS_OP_BINARY, &data_channel, 1, chunk,
					       (size_t)n) < 0)
					break;
				continue;
			}
			/* a half close: port-forward cannot pass it on (neither can kubectl's),
			 * so the pod's answer still comes back until the local side closes */
			local_reading = false;
		}
		if (fds[0].revents & (POLLHUP | POLLERR)) {
			static const uint8_t normal[2] = {0x03, 0xe8}; /* 1000 */
			send_frame(pc, WS_OP_CLOSE, NULL, 0, normal, sizeof(normal));
			break;
		}
	}
	free(chunk);
	pf_conn_free(pc);
	OPENSSL_thread_stop(); /* this thread's OpenSSL state, now rather than at exit */
	pthread_mutex_lock(&pumps_lock);
	if (!--pumps_live)
		pthread_cond_broadcast(&pumps_done);
	pthread_mutex_unlock(&pumps_lock);
	return NULL;
}

/* read the upgrade answer's header block; the bytes after it stay in pc->in */
static int read_headers(struct pf_conn *pc, int64_t deadline, char **headers, struct hm_err *err,
			struct kube *k)
{
	for (;;) {
		if (pc->inlen) {
			uint8_t *end = memmem(pc->in, pc->inlen, "\r\n\r\n", 4);
			if (end) {
				size_t hlen = (size_t)(end - pc->in) + 4;
				*headers = strndup((char *)pc->in, hlen);
				if (!*headers)
					return hm_err_set(err, ENOMEM, "port-forward");
				memmove(pc->in, pc->in + hlen, pc->inlen - hlen);
				pc->inlen -= hlen;
				return 0;
			}
			if (pc->inlen > PF_HEADERS_MAX)
				return hm_err_plain(
				    err, EPROTO,
				    "API server %s: port-forward answer headers over "
				    "%d bytes",
				    k->cfg.server, PF_HEADERS_MAX);
		}
		ssize_t n = recv_some(pc);
		if (n < 0 && errno == EAGAIN) {
			int ev = hm_poll_fd(pc->sock, POLLIN, deadline);
			if (ev == 0)
				return hm_err_plain(err, ETIMEDOUT,
						    "API server %s: no answer to the port-forward "
						    "request in time",
						    k->cfg.server);
			if (ev < 0)
				return hm_err_errno(err, "poll");
			continue;
		}
		if (n <= 0)
			return hm_err_plain(err, ECONNRESET,
					    "API server %s closed the port-forward request",
					    k->cfg.server);
	}
}

/* the value of header name (case-insensitive) in the block, copied into out */
static bool header_value(const char *headers, const char *name, char *out, size_t len)
{
	size_t nlen = strlen(name);
	for (const char *line = strstr(headers, "\r\n"); line && line[2];
	     line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;
		if (strncasecmp(h, name, nlen) || h[nlen] != ':')
			continue;
		h += nlen + 1;
		while (*h == ' ' || *h == '\t')
			h++;
		size_t vlen = strcspn(h, "\r\n");
		while (vlen && (h[vlen - 1] == ' ' || h[vlen - 1] == '\t'))
			vlen--;
		snprintf(out, len, "%.*s", (int)vlen, h);
		return true;
	}
	return false;
}

/* a refused upgrade: the Status in the answer's body (what arrives within a moment) */
static int refused(struct pf_conn *pc, struct kube *k, const char *headers, long status,
		   const struct kube_what *what, struct hm_err *err)
{
	char clen[32];
	size_t want = header_value(headers, "Content-Length", clen, sizeof(clen))
			  ? strtoul(clen, NULL, 10)
			  : 65536;
	int64_t deadline = hm_deadline_in(2000);
	while (pc->inlen < want && pc->inlen < 65536) {
		ssize_t n = recv_some(pc);
		if (n < 0 && errno == EAGAIN) {
			if (hm_poll_fd(pc->sock, POLLIN, deadline) <= 0)
				break;
			continue;
		}
		if (n <= 0)
			break;
	}
	char *body = strndup((char *)pc->in, pc->inlen);
	int rc = kube_http_error(k, status, body, what, err);
	free(body);
	return rc;
}

static int upgrade(struct pf_conn *pc, struct kube *k, const struct kube_pf_target *t,
		   const char *token, int64_t deadline, struct hm_err *err)
{
	uint8_t nonce[16];
	if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce))
		return hm_err_errno(err, "getrandom");
	char key[32], accept[29], host[300];
	kube_base64_encode(nonce, sizeof(nonce), key);
	if (kube_ws_accept(key, accept, err) < 0)
		return -1;
	const char *server = k->cfg.server;
	const char *h = strstr(server, "://");
	h = h ? h + 3 : server;
	size_t hlen = strcspn(h, "/");
	snprintf(host, sizeof(host), "%.*s", (int)hlen, h);
	/* a server URL may have a path (a proxy's https://proxy/k8s/clusters/c1): the
	 * API paths are below it */
	const char *prefix = h + hlen;
	char *req = NULL;
	int n = asprintf(&req,
			 "GET %s/api/v1/namespaces/%s/pods/%s/portforward?ports=%u HTTP/1.1\r\n"
			 "Host: %s\r\n"
			 "User-Agent: hermit/trace-run\r\n"
			 "Connection: Upgrade\r\n"
			 "Upgrade: websocket\r\n"
			 "Sec-WebSocket-Version: 13\r\n"
			 "Sec-WebSocket-Key: %s\r\n"
			 "Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n"
			 "%s%s%s"
			 "\r\n",
			 prefix, t->namespace, t->pod, t->port, host, key,
			 token ? "Authorization: Bearer " : "", token ? token : "",
			 token ? "\r\n" : "");
	if (n < 0)
		return hm_err_set(err, ENOMEM, "port-forward");
	int rc = send_all(pc, req, (size_t)n, deadline);
	explicit_bzero(req, (size_t)n);
	free(req);
	if (rc < 0)
		return hm_err_plain(err, ECONNRESET,
				    "API server %s: sending the port-forward request "
				    "failed",
				    server);
	hm_cleanup_free char *headers = NULL;
	if (read_headers(pc, deadline, &headers, err, k) < 0)
		return -1;
	long status = 0;
	if (sscanf(headers, "HTTP/1.%*d %ld", &status) != 1)
		return hm_err_plain(err, EPROTO,
				    "API server %s: not an HTTP answer to port-forward", server);
	struct kube_what what = {.verb = "create",
				 .resource = "pods/portforward",
				 .kind = "pod",
				 .name = t->pod,
				 .namespace = t->namespace};
	if (status != 101)
		return refused(pc, k, headers, status, &what, err);
	char value[128];
	if (!header_value(headers, "Sec-WebSocket-Accept", value, sizeof(value)) ||
	    strcmp(value, accept))
		return hm_err_plain(err, EPROTO,
				    "API server %s: the WebSocket upgrade answer does not match "
				    "the request (Sec-WebSocket-Accept)",
				    server);
	if (!header_value(headers, "Sec-WebSocket-Protocol", value, sizeof(value)) ||
	    strcmp(value, "v4.channel.k8s.io"))
		return hm_err_plain(err, EPROTO,
				    "API server %s: port-forward without the v4.channel.k8s.io "
				    "subprotocol (got '%s')",
				    server, value);
	return 0;
}

static int dial_target(const struct kube_pf_target *t, int timeout_ms, struct hm_err *err)
{
	struct kube *k = t->k;
	struct kube_cred cred;
	if (kube_current_cred(k, &cred, err) < 0)
		return -1;
	struct pf_conn *pc = calloc(1, sizeof(*pc));
	if (!pc) {
		kube_cred_free(&cred);
		return hm_err_set(err, ENOMEM, "port-forward");
	}
	pc->local = -1;
	pc->ch.channel = -1;
	snprintf(pc->what, sizeof(pc->what), "pod %s/%s port %u", t->namespace, t->pod, t->port);
	int64_t deadline = hm_deadline_in(timeout_ms);
	int rc = -1;
	char errbuf[CURL_ERROR_SIZE] = "";
	pc->curl = kube_curl_new(k, &cred, err);
	if (!pc->curl)
		goto out;
	curl_easy_setopt(pc->curl, CURLOPT_URL, k->cfg.server);
	curl_easy_setopt(pc->curl, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(pc->curl, CURLOPT_ERRORBUFFER, errbuf);
	if (timeout_ms > 0)
		curl_easy_setopt(pc->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	CURLcode cc = curl_easy_perform(pc->curl);
	if (cc != CURLE_OK) {
		kube_curl_error(k, cc, errbuf, err);
		goto out;
	}
	if (curl_easy_getinfo(pc->curl, CURLINFO_ACTIVESOCKET, &pc->sock) != CURLE_OK ||
	    pc->sock == CURL_SOCKET_BAD) {
		hm_err_set(err, EIO, "API server %s: no socket", k->cfg.server);
		goto out;
	}
	if (upgrade(pc, k, t, cred.token, deadline, err) < 0)
		goto out;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		hm_err_errno(err, "socketpair");
		goto out;
	}
	pc->local = sp[1];
	pthread_t th;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* no signal for the pump: a caller's signalfd (trace-run's SIGCHLD) must get them */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_mutex_lock(&pumps_lock);
	pumps_live++;
	pthread_mutex_unlock(&pumps_lock);
	int terr = pthread_create(&th, &attr, pump, pc);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (terr) {
		pthread_mutex_lock(&pumps_lock);
		pumps_live--;
		pthread_mutex_unlock(&pumps_lock);
		close(sp[0]);
		hm_err_set(err, terr, "port-forward thread");
		goto out;
	}
	pc = NULL; /* the pump's now */
	rc = sp[0];
out:
	if (pc)
		pf_conn_free(pc);
	kube_cred_free(&cred);
	return rc;
}

int kube_portforward_dial(struct kube *k, const char *ns, const char *pod, uint16_t port,
			  int timeout_ms, struct hm_err *err)
{
	struct kube_pf_target t = {.k = k, .port = port};
	if (kube_copy(t.namespace, sizeof(t.namespace), ns, "namespace", err) < 0 ||
	    kube_copy(t.pod, sizeof(t.pod), pod, "pod name", err) < 0)
		return -1;
	return dial_target(&t, timeout_ms, err);
}

static int dial_endpoint(const struct client_endpoint *ep, int timeout_ms, struct hm_err *err)
{
	return dial_target(ep->ctx, timeout_ms, err);
}

static void describe_endpoint(const struct client_endpoint *ep, char *buf, size_t len)
{
	const struct kube_pf_target *t = ep->ctx;
	snprintf(buf, len, "pod %s/%s port %u through the API server %s", t->namespace, t->pod,
		 t->port, t->k->cfg.server);
}

static const struct client_transport kube_transport = {
    .name = "kube-port-forward", .dial = dial_endpoint, .describe = describe_endpoint};

int kube_portforward_endpoint(struct kube *k, const char *ns, const char *pod, uint16_t port,
			      struct client_endpoint *out, struct hm_err *err)
{
	struct kube_pf_target *t = calloc(1, sizeof(*t));
	if (!t)
		return hm_err_set(err, ENOMEM, "port-forward endpoint");
	t->k = k;
	t->port = port;
	if (kube_copy(t->namespace, sizeof(t->namespace), ns, "namespace", err) < 0 ||
	    kube_copy(t->pod, sizeof(t->pod), pod, "pod name", err) < 0) {
		free(t);
		return -1;
	}
	t->next = k->pf;
	k->pf = t;
	memset(out, 0, sizeof(*out));
	out->transport = &kube_transport;
	out->ctx = t;
	return 0;
}
