/* `trace-run port-forward --target pod/web -L [BIND:]LPORT:HOST:PORT ...`: local ports
 * whose connections are made from the target's network, like kubectl port-forward to
 * a pod-network-only service (mirrord's port-forward). Each accepted connection gets a
 * thread that resolves HOST in the pod (its /etc/hosts, then its nameservers from its
 * /etc/resolv.conf, queried over UDP through the agent, with its search list) and asks
 * the agent to connect; the splice relay then joins the two. Runs until SIGINT or
 * SIGTERM, or until the target goes away. */
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/signalfd.h>

#include "tracer/redirect/net_internal.h"

#define PROG "trace-run port-forward"
#define MAX_FORWARDS 64
#define DNS_TIMEOUT_MS 2000

static const char usage[] =
    "usage: trace-run port-forward --target pod/NAME [--agent HOST:PORT | --agent-unix PATH]\n"
    "                              [--token-file F] [-v] -L [BIND:]LPORT:HOST:PORT ...\n"
    "\n"
    "Listen on LPORT (on BIND, default 127.0.0.1) and forward each connection to HOST:PORT\n"
    "from the target's network, as if the target had opened it. HOST is an address or a\n"
    "name resolved in the target (its /etc/hosts, then its nameservers and search list).\n"
    "IPv6 addresses go in brackets: -L [::1]:8080:[fd00::7]:80. Runs until SIGINT/SIGTERM.\n"
    "\n"
    "  --target T          pod/NAME, pid/N or container/ID\n"
    "  --agent HOST:PORT   the agent's TCP address\n"
    "  --agent-unix PATH   the agent's unix socket (default /run/hermit/agent.sock)\n"
    "  --token-file F      the agent's auth token (default /run/hermit/agent.token, or\n"
    "                      $HERMIT_TOKEN)\n"
    "  -L SPEC             a forward (repeatable)\n"
    "  -v, --verbose       log every connection\n";

struct forward {
	char spec[300];
	struct net_addr bind;
	char host[256]; /* a name or an address, without brackets */
	uint16_t port;
	int fd;
};

struct pf {
	struct trace_session s;
	struct relay_counters counters;
	struct relay *relay;
	struct forward fwd[MAX_FORWARDS];
	size_t n_fwd;
	int active; /* atomic: connection threads still talking to the agent */
};

struct pf_conn {
	struct pf *pf;
	const struct forward *fwd;
	int client;
	struct net_addr from;
};

/* ---- -L specs ---- */

/* split at ':' outside brackets; brackets are stripped */
static int split_spec(const char *spec, char parts[4][256])
{
	int n = 0;
	size_t len = 0;
	bool bracket = false;
	for (const char *p = spec;; p++) {
		if (*p == '\0' || (*p == ':' && !bracket)) {
			if (n == 4)
				return -1;
			parts[n++][len] = '\0';
			len = 0;
			if (*p == '\0')
				break;
			continue;
		}
		if (*p == '[' && len == 0 && !bracket) {
			bracket = true;
			continue;
		}
		if (*p == ']' && bracket) {
			bracket = false;
			continue;
		}
		if (len + 1 >= 256 || n == 4)
			return -1;
		parts[n][len++] = *p;
	}
	return bracket ? -1 : n;
}

static int parse_port(const char *s, uint16_t *out)
{
	uint64_t v;
	if (hm_parse_u64(s, &v) < 0 || v == 0 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

static int parse_ip(const char *s, uint16_t port, struct net_addr *out)
{
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
	if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		out->len = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		out->len = sizeof(*s6);
		return 0;
	}
	return -1;
}

static int parse_forward(const char *spec, struct forward *f, struct hm_err *err)
{
	char parts[4][256];
	int n = split_spec(spec, parts);
	if (n != 3 && n != 4)
		return hm_err_set(err, EINVAL, "-L %s: expected [BIND:]LPORT:HOST:PORT", spec);
	const char *bind = n == 4 ? parts[0] : "127.0.0.1";
	const char *lport = parts[n - 3], *host = parts[n - 2], *port = parts[n - 1];
	uint16_t lp;
	if (parse_port(lport, &lp) < 0 || parse_port(port, &f->port) < 0)
		return hm_err_set(err, EINVAL, "-L %s: ports are 1-65535", spec);
	if (!strcmp(bind, "*") || !bind[0])
		bind = "0.0.0.0";
	if (!strcasecmp(bind, "localhost"))
		bind = "127.0.0.1";
	if (parse_ip(bind, lp, &f->bind) < 0)
		return hm_err_set(err, EINVAL, "-L %s: bind address '%s' is not an IP address",
				  spec, bind);
	if (!host[0] || strlen(host) >= sizeof(f->host))
		return hm_err_set(err, EINVAL, "-L %s: no host", spec);
	snprintf(f->host, sizeof(f->host), "%s", host);
	snprintf(f->spec, sizeof(f->spec), "%s", spec);
	f->fd = -1;
	return 0;
}

static int listen_on(struct forward *f, struct hm_err *err)
{
	hm_cleanup_close int fd =
	    socket(f->bind.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hm_err_errno(err, "socket");
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (f->bind.ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	char where[80];
	trace_net_addr_str(&f->bind, where, sizeof(where));
	if (bind(fd, (struct sockaddr *)&f->bind.ss, f->bind.len) < 0)
		return hm_err_errno(err, "-L %s: listen on %s", f->spec, where);
	if (listen(fd, SOMAXCONN) < 0)
		return hm_err_errno(err, "listen on %s", where);
	f->fd = hm_steal_fd(&fd);
	return 0;
}

/* ---- names, resolved in the target ---- */

struct resolv {
	struct net_addr ns[3];
	size_t n_ns;
	char search[6][256];
	size_t n_search;
	int ndots;
};

static void parse_resolv(const char *text, struct resolv *r)
{
	memset(r, 0, sizeof(*r));
	r->ndots = 1;
	hm_cleanup_free char *copy = strdup(text);
	if (!copy)
		return;
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *ws = NULL;
		char *key = strtok_r(line, " \t\r", &ws);
		if (!key || key[0] == '#' || key[0] == ';')
			continue;
		if (!strcmp(key, "nameserver")) {
			char *v = strtok_r(NULL, " \t\r", &ws);
			if (v && r->n_ns < HM_ARRAY_SIZE(r->ns) &&
			    parse_ip(v, 53, &r->ns[r->n_ns]) == 0)
				r->n_ns++;
		} else if (!strcmp(key, "search") || !strcmp(key, "domain")) {
			r->n_search = 0;
			for (char *v; (v = strtok_r(NULL, " \t\r", &ws)) &&
				      r->n_search < HM_ARRAY_SIZE(r->search);)
				snprintf(r->search[r->n_search++], sizeof(r->search[0]), "%s", v);
		} else if (!strcmp(key, "options")) {
			for (char *v; (v = strtok_r(NULL, " \t\r", &ws));)
				if (!strncmp(v, "ndots:", 6))
					r->ndots = atoi(v + 6);
		}
	}
}

/* the address for name in the target's /etc/hosts */
static int hosts_lookup(const char *text, const char *name, uint16_t port, struct net_addr *out)
{
	hm_cleanup_free char *copy = strdup(text);
	if (!copy)
		return -1;
	char *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *hash = strchr(line, '#');
		if (hash)
			*hash = '\0';
		char *ws = NULL;
		char *ip = strtok_r(line, " \t\r", &ws);
		if (!ip)
			continue;
		for (char *n; (n = strtok_r(NULL, " \t\r", &ws));)
			if (!strcasecmp(n, name) && parse_ip(ip, port, out) == 0)
				return 0;
	}
	return -1;
}

static size_t dns_query(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype)
{
	if (cap < 12 + strlen(name) + 6)
		return 0;
	memset(buf, 0, 12);
	buf[0] = (uint8_t)(id >> 8);
	buf[1] = (uint8_t)id;
	buf[2] = 0x01; /* recursion desired */
	buf[5] = 1;    /* one question */
	size_t off = 12;
	const char *p = name;
	while (*p) {
		const char *dot = strchrnul(p, '.');
		size_t len = (size_t)(dot - p);
		if (len == 0 || len > 63)
			return 0;
		buf[off++] = (uint8_t)len;
		memcpy(buf + off, p, len);
		off += len;
		p = *dot ? dot + 1 : dot;
	}
	buf[off++] = 0;
	buf[off++] = 0;
	buf[off++] = (uint8_t)qtype;
	buf[off++] = 0;
	buf[off++] = 1; /* IN */
	return off;
}

/* 1: an address found; 0: the name does not exist or has none of that type; -1: a
 * malformed answer, another query's, or a server failure */
static int dns_answer(const uint8_t *m, size_t len, uint16_t id, uint16_t port,
		      struct net_addr *out)
{
	struct policy_dns_response res;
	if (policy_dns_decode(m, len, &res) < 0 || res.id != id)
		return -1;
	if (res.rcode == 3)
		return 0; /* NXDOMAIN */
	if (res.rcode != 0)
		return -1;
	if (!res.n)
		return 0;
	memset(out, 0, sizeof(*out));
	if (res.rec[0].family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, res.rec[0].addr, 4);
		out->len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		memcpy(&s6->sin6_addr, res.rec[0].addr, 16);
		out->len = sizeof(*s6);
	}
	return 1;
}

/* one question to one nameserver, through a UDP socket in the target */
static int ask(struct client *c, const struct net_addr *ns, const char *name, uint16_t qtype,
	       uint16_t port, struct net_addr *out, struct hm_err *err)
{
	uint8_t q[512], a[4096];
	uint16_t id;
	if (getrandom(&id, sizeof(id), 0) != sizeof(id))
		id = (uint16_t)getpid();
	size_t qlen = dns_query(q, sizeof(q), id, name, qtype);
	if (!qlen)
		return hm_err_set(err, EINVAL, "'%s' is not a valid name", name);
	struct proto_addr pns;
	if (trace_net_addr_to_proto(ns, &pns, err) < 0)
		return -1;
	hm_cleanup_close int stream = client_udp_open(c, pns.family, NULL, err);
	if (stream < 0)
		return -1;
	if (client_udp_send(stream, &pns, q, qlen, err) < 0)
		return -1;
	int64_t deadline = hm_deadline_in(DNS_TIMEOUT_MS);
	for (;;) {
		int left = hm_ms_until(deadline);
		if (left == 0)
			return hm_err_set(err, ETIMEDOUT, "no answer from the nameserver");
		struct proto_addr src;
		ssize_t n = client_udp_recv(stream, &src, a, sizeof(a), left, err);
		if (n < 0)
			return -1;
		int r = dns_answer(a, (size_t)n, id, port, out);
		if (r >= 0)
			return r;
	}
}

static int resolve(struct client *c, const char *host, uint16_t port, struct net_addr *out,
		   struct hm_err *err)
{
	if (parse_ip(host, port, out) == 0)
		return 0;
	struct client_file_content fc;
	if (client_read_file(c, "/etc/hosts", 0, 1 << 20, &fc, err) == 0) {
		hm_cleanup_free char *text = strndup(fc.data, fc.size);
		client_file_content_release(&fc);
		if (text && hosts_lookup(text, host, port, out) == 0)
			return 0;
	}
	if (client_read_file(c, "/etc/resolv.conf", 0, 1 << 20, &fc, err) < 0)
		return hm_err_prefix(err, "resolve %s in the target: /etc/resolv.conf", host);
	struct resolv rc;
	{
		hm_cleanup_free char *text = strndup(fc.data, fc.size);
		client_file_content_release(&fc);
		if (!text)
			return hm_err_set(err, ENOMEM, "resolv.conf");
		parse_resolv(text, &rc);
	}
	if (!rc.n_ns)
		return hm_err_set(err, ENOENT,
				  "resolve %s: no nameserver in the target's "
				  "/etc/resolv.conf",
				  host);
	/* the order a stub resolver tries: as is first when it has enough dots */
	char cand[8][512];
	size_t n = 0;
	size_t dots = 0;
	for (const char *p = host; *p; p++)
		dots += *p == '.';
	size_t hl = strlen(host);
	bool absolute = hl && host[hl - 1] == '.';
	if (absolute || (int)dots >= rc.ndots)
		snprintf(cand[n++], sizeof(cand[0]), "%.*s", (int)(absolute ? hl - 1 : hl), host);
	for (size_t i = 0; !absolute && i < rc.n_search && n < HM_ARRAY_SIZE(cand) - 1; i++)
		snprintf(cand[n++], sizeof(cand[0]), "%s.%s", host, rc.search[i]);
	if (!absolute && (int)dots < rc.ndots)
		snprintf(cand[n++], sizeof(cand[0]), "%s", host);
	struct hm_err last = {0};
	for (size_t i = 0; i < n; i++) {
		for (uint16_t qtype = 1; qtype != 0; qtype = qtype == 1 ? 28 : 0) {
			for (size_t k = 0; k < rc.n_ns; k++) {
				int r = ask(c, &rc.ns[k], cand[i], qtype, port, out, &last);
				if (r == 1)
					return 0;
				if (r == 0)
					break; /* an answer: the next nameserver would say the same
						*/
			}
		}
	}
	if (last.code)
		return hm_err_set(err, last.code, "resolve %s in the target: %s", host, last.msg);
	return hm_err_set(err, ENOENT, "resolve %s in the target: no such host", host);
}

/* ---- connections ---- */

static void reset_close(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static void *conn_thread(void *arg)
{
	struct pf_conn *pc = arg;
	struct pf *pf = pc->pf;
	struct hm_err err = {0};
	char from[80], dst_str[80], pod[80];
	trace_net_addr_str(&pc->from, from, sizeof(from));
	struct net_addr dst;
	struct proto_addr pdst, local;
	int stream = -1;
	if (resolve(pf->s.client, pc->fwd->host, pc->fwd->port, &dst, &err) == 0 &&
	    trace_net_addr_to_proto(&dst, &pdst, &err) == 0)
		stream = client_tcp_connect(pf->s.client, &pdst, 0, &local, &err);
	if (stream < 0) {
		hm_warn("-L %s: connection from %s: %s", pc->fwd->spec, from, err.msg);
		reset_close(pc->client);
	} else {
		hm_info("-L %s: %s -> %s (from %s in the target)", pc->fwd->spec, from,
			trace_net_addr_str(&dst, dst_str, sizeof(dst_str)),
			proto_addr_str(&local, pod, sizeof(pod)));
		if (relay_add_tcp(pf->relay, pc->client, stream, &err) < 0)
			hm_warn("-L %s: %s", pc->fwd->spec, err.msg);
	}
	/* last: the main thread destroys the relay once no connection thread is left */
	__atomic_sub_fetch(&pf->active, 1, __ATOMIC_ACQ_REL);
	free(pc);
	return NULL;
}

static void accept_all(struct pf *pf, const struct forward *f)
{
	for (;;) {
		struct pf_conn *pc = calloc(1, sizeof(*pc));
		if (!pc)
			return;
		pc->pf = pf;
		pc->fwd = f;
		pc->from.len = sizeof(pc->from.ss);
		pc->client = accept4(f->fd, (struct sockaddr *)&pc->from.ss, &pc->from.len,
				     SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (pc->client < 0) {
			if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR)
				hm_warn("accept on %s: %s", f->spec, strerror(errno));
			free(pc);
			return;
		}
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 << 10);
		pthread_t tid;
		__atomic_add_fetch(&pf->active, 1, __ATOMIC_ACQ_REL);
		int r = pthread_create(&tid, &attr, conn_thread, pc);
		pthread_attr_destroy(&attr);
		if (r != 0) {
			__atomic_sub_fetch(&pf->active, 1, __ATOMIC_ACQ_REL);
			hm_warn("connection thread: %s", strerror(r));
			reset_close(pc->client);
			free(pc);
		}
	}
}

/* ---- main ---- */

static int parse_args(int argc, char **argv, struct policy_config *cfg, struct pf *pf, int *verbose)
{
	static const struct option longopts[] = {
	    {"target", required_argument, NULL, 't'},
	    {"agent", required_argument, NULL, 'a'},
	    {"agent-unix", required_argument, NULL, 'u'},
	    {"token-file", required_argument, NULL, 'k'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct hm_err err = {0};
	int opt;
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":L:vh", longopts, NULL)) != -1) {
		char **slot = NULL;
		switch (opt) {
		case 't':
			slot = &cfg->target;
			break;
		case 'a':
			free(cfg->agent.unix_path);
			cfg->agent.unix_path = NULL;
			slot = &cfg->agent.address;
			break;
		case 'u':
			free(cfg->agent.address);
			cfg->agent.address = NULL;
			slot = &cfg->agent.unix_path;
			break;
		case 'k':
			slot = &cfg->agent.token_file;
			break;
		case 'L':
			if (pf->n_fwd == MAX_FORWARDS)
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "at most %d -L",
						   MAX_FORWARDS);
			if (parse_forward(optarg, &pf->fwd[pf->n_fwd], &err) < 0)
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
			pf->n_fwd++;
			break;
		case 'v':
			(*verbose)++;
			break;
		case 'h':
			fputs(usage, stdout);
			return -1;
		default: /* ':' or '?' */
			return hm_cli_bad_option(PROG, TRACER_EXIT_FAILURE, opt, argv, "--help");
		}
		if (slot) {
			free(*slot);
			*slot = strdup(optarg);
			if (!*slot)
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "out of memory");
		}
	}
	if (optind < argc)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
				   "unexpected argument '%s' (see --help)", argv[optind]);
	if (!cfg->target)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
				   "no target: give --target pod/NAME (or pid/N, container/ID)");
	if (!pf->n_fwd)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
				   "no forward: give -L [BIND:]LPORT:HOST:PORT");
	return 0;
}

static int serve(struct pf *pf, int sigfd)
{
	struct pollfd pfd[MAX_FORWARDS + 2];
	size_t n = 0;
	for (size_t i = 0; i < pf->n_fwd; i++)
		pfd[n++] = (struct pollfd){.fd = pf->fwd[i].fd, .events = POLLIN};
	pfd[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
	pfd[n++] = (struct pollfd){.fd = client_event_fd(pf->s.client), .events = POLLIN};
	for (;;) {
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "poll: %s", strerror(errno));
		}
		if (pfd[n - 2].revents) {
			struct signalfd_siginfo si;
			if (read(sigfd, &si, sizeof(si)) > 0)
				hm_info("%s: stopping", strsignal((int)si.ssi_signo));
			return 0;
		}
		struct hm_err why = {0};
		if (pfd[n - 1].revents && client_ended(pf->s.client, &why))
			return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "the session ended: %s",
					   why.msg);
		for (size_t i = 0; i < pf->n_fwd; i++)
			if (pfd[i].revents)
				accept_all(pf, &pf->fwd[i]);
	}
}

int trace_port_forward_main(int argc, char **argv)
{
	hm_log_init(PROG, HM_LOG_WARN);
	hm_cleanup_free struct pf *pf = calloc(1, sizeof(*pf));
	if (!pf)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "out of memory");
	policy_cleanup_config struct policy_config cfg = {0};
	int verbose = 0;
	int rc = parse_args(argc, argv, &cfg, pf, &verbose);
	if (rc)
		return rc < 0 ? 0 : rc;
	if (verbose)
		hm_log_init(PROG, verbose > 1 ? HM_LOG_DEBUG : HM_LOG_INFO);
	/* every thread from here on (the agent client's, the relay's, the connections')
	 * leaves these to the signalfd */
	sigset_t set, all;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sigfd = signalfd(-1, &set, SFD_CLOEXEC);
	struct hm_err err = {0};
	int exit_code = TRACER_EXIT_FAILURE;
	bool session = false;
	if (sigfd < 0) {
		rc = hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "signalfd: %s", strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < pf->n_fwd; i++) {
		if (listen_on(&pf->fwd[i], &err) < 0) {
			rc = hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
			goto out;
		}
	}
	if (policy_config_finalize(&cfg, &err) < 0) {
		rc = hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
		goto out;
	}
	session = true;
	if (trace_session_init(&pf->s, &cfg, getenv("HERMIT_TOKEN"), &err) < 0 ||
	    trace_session_connect(&pf->s, &exit_code, &err) < 0) {
		rc = hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
		rc = exit_code;
		goto out;
	}
	sigset_t cur;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &cur);
	int r = relay_create(&pf->counters, &pf->relay, &err);
	pthread_sigmask(SIG_SETMASK, &cur, NULL);
	if (r < 0) {
		rc = hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
		goto out;
	}
	for (size_t i = 0; i < pf->n_fwd; i++) {
		char where[80];
		hm_info("forwarding %s to %s port %u from %s",
			trace_net_addr_str(&pf->fwd[i].bind, where, sizeof(where)), pf->fwd[i].host,
			pf->fwd[i].port, pf->s.cfg.target);
	}
	rc = serve(pf, sigfd);
out:
	for (size_t i = 0; i < pf->n_fwd; i++)
		if (pf->fwd[i].fd >= 0)
			close(pf->fwd[i].fd);
	if (session) {
		/* connection threads still waiting for the agent fail now */
		if (pf->s.client)
			client_shutdown(pf->s.client);
		while (__atomic_load_n(&pf->active, __ATOMIC_ACQUIRE) > 0)
			usleep(10000);
		if (pf->relay)
			relay_destroy(pf->relay);
		trace_session_release(&pf->s);
	}
	if (sigfd >= 0)
		close(sigfd);
	return rc;
}
