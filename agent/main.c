/* trace-agent: hermit's node agent. Parses the command line, prepares the auth token,
 * turns SIGTERM/SIGINT into a graceful stop and runs the server (server.c); `status`
 * asks a running agent for its counters. */
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "agent/agent.h"
#include "client/client.h"

#define PROG "trace-agent"
#define EXIT_USAGE 2
#define DEFAULT_MAX_FILE (1ull << 30)
#define DEFAULT_HANDSHAKE_MS 2000

static const char usage_text[] =
    "usage: trace-agent [OPTIONS]\n"
    "       trace-agent status [--unix PATH | --agent ADDR:PORT] [--token-file F]\n"
    "\n"
    "hermit's node agent: serves trace-run sessions on local targets (pod/NAME, pid/N,\n"
    "container/ID): their environment, their files and connections from their network.\n"
    "Runs in the foreground and logs on stderr; SIGTERM, SIGINT or SIGHUP stop it\n"
    "gracefully: every session ends with a message to its client.\n"
    "\n"
    "  --unix PATH            unix socket to listen on (default " PROTO_DEFAULT_AGENT_UNIX "),\n"
    "                         mode 0660: only root and --unix-group may connect\n"
    "  --unix-group GROUP     the unix socket's group, name or gid (default: root)\n"
    "  --no-unix              do not listen on a unix socket\n"
    "  --listen ADDR:PORT     also listen on TCP, e.g. 127.0.0.1:7070 or [::1]:7070;\n"
    "                         loopback only, unless --insecure\n"
    "  --insecure             allow --listen on any address: TCP is not encrypted, the\n"
    "                         token and file contents cross the network in clear\n"
    "  --no-kernel-relay      relay the TCP connections of TCP clients in user space\n"
    "                         too. By default the kernel moves their bytes (a BPF\n"
    "                         sk_skb program on a sockhash; needs CAP_BPF and\n"
    "                         CAP_NET_ADMIN, Linux 5.13+; without them the agent\n"
    "                         says why once and relays in user space)\n"
    "  --kernel-relay-memory SIZE  bytes the kernel may hold queued between the two\n"
    "                         sockets of all kernel-relayed streams (default 256M; 0:\n"
    "                         unlimited). A stream gets 2M a direction while half of\n"
    "                         it is free, then 128K; past it streams go to the\n"
    "                         user-space relay\n"
    "  --allow-any-pid        any token holder may target any pid/N (default: root\n"
    "                         any; other unix users their own processes; TCP none)\n"
    "  --token-file F         auth token (default " PROTO_DEFAULT_TOKEN_FILE "); created\n"
    "                         with a random token, mode 0600, if it does not exist\n"
    "  --max-file-size SIZE   largest file a client may read (default 1G)\n"
    "  --handshake-timeout MS time a new connection has to say hello (default 2000)\n"
    "  --stream-ttl MS        life of an unclaimed stream token (default 10000)\n"
    "  --mirror-buffer SIZE   ring buffer of the mirror program, per target network\n"
    "                         namespace (a power of 2 >= 4k; default 32M): what a burst\n"
    "                         of mirrored traffic may fill before copies are reset\n"
    "  --mirror-copy-buffer SIZE  how far one mirror copy may fall behind its\n"
    "                         connection before it is reset (default 64M)\n"
    "  --containerd-state DIR containerd's runc v2 task state, where container/ID is\n"
    "                         looked up first (DIR/NAMESPACE/ID/init.pid, namespace\n"
    "                         k8s.io first; the pid must be in the container's cgroup),\n"
    "                         before the cgroup scan of /proc (default\n"
    "                         " AGENT_CONTAINERD_STATE_DEFAULT ";\n"
    "                         '' for the scan only)\n"
    "  --log-level L          debug, info (default), warn or error\n"
    "  --version              print the version\n"
    "  -h, --help             this text\n"
    "\n"
    "Budgets (0: unlimited). A client over one gets an error naming the flag; the agent\n"
    "keeps serving the others:\n"
    "  --max-sessions N       sessions open at once (default 256; EUSERS)\n"
    "  --max-peer-sessions N  sessions of one peer: a unix uid or a TCP address\n"
    "                         (default 128; EUSERS)\n"
    "  --max-streams N        streams (opened, relayed) in all (default 8192, fewer if\n"
    "                         the fd limit is low; ENFILE)\n"
    "  --max-session-streams N  streams of one session (default 1024; EMFILE)\n"
    "  --max-inflight SIZE    memory of file contents, listings and environments being\n"
    "                         sent (default 256M; a request waits up to 10 s, then\n"
    "                         ENOBUFS; a file over 64K is streamed instead)\n"
    "  --max-session-inflight SIZE  the same for one session (default 64M)\n"
    "  --max-connects N       TCP connects in progress (default 1024; EAGAIN)\n"
    "  --max-session-connects N  the same for one session (default 256)\n"
    "\n"
    "status: print the sessions, streams, requests, errors, bytes, budgets and incoming\n"
    "traffic counters (subscriptions, stolen and mirrored connections) of a running agent.\n"
    "The token may also come from the HERMIT_TOKEN environment variable.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, PROG ": ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " --help'.\n");
	return EXIT_USAGE;
}

static int fail(const struct hm_err *err)
{
	hm_print_line(stderr, PROG ": %s", err->msg); /* may be a remote agent's words */
	return 1;
}

/* Load the token file, creating it with a fresh random token if it does not exist. */
static int token_prepare(const char *path, char *token, size_t len, struct hm_err *err)
{
	struct hm_err load_err = {0};
	if (client_token_load(path, token, len, &load_err) == 0)
		return 0;
	if (load_err.code != ENOENT) {
		*err = load_err;
		return -1;
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (hm_mkdir_p(dir, 0755, err) < 0)
			return -1;
	}
	uint8_t raw[32];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return hm_err_errno(err, "getrandom");
	char hex[2 * sizeof(raw) + 2];
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	explicit_bzero(raw, sizeof(raw));
	hex[2 * sizeof(raw)] = '\n';
	hex[2 * sizeof(raw) + 1] = '\0';
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (errno == EEXIST) /* another agent made it just now */
			return client_token_load(path, token, len, err);
		return hm_err_errno(err, "create token file %s", path);
	}
	ssize_t n = hm_write_all(fd, hex, strlen(hex));
	int saved = errno;
	close(fd);
	if (n < 0) {
		unlink(path);
		return hm_err_set(err, saved, "write token file %s", path);
	}
	hm_info("created token file %s", path);
	return client_token_load(path, token, len, err);
}

static void warn_token_mode(const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & 077))
		hm_warn("token file %s is readable by others (mode %04o)", path,
			(unsigned)(st.st_mode & 07777));
}

static int parse_level(const char *s, enum hm_log_level *out)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(names); i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum hm_log_level)i;
			return 0;
		}
	}
	return -1;
}

#define OPT_BUDGET 0x100
static const struct {
	const char *name;
	enum agent_budget_res res;
	bool global;
} budget_flags[] = {
    {"max-sessions", AGENT_RES_SESSIONS, true}, {"max-peer-sessions", AGENT_RES_SESSIONS, false},
    {"max-streams", AGENT_RES_STREAMS, true},	{"max-session-streams", AGENT_RES_STREAMS, false},
    {"max-inflight", AGENT_RES_BYTES, true},	{"max-session-inflight", AGENT_RES_BYTES, false},
    {"max-connects", AGENT_RES_CONNECTS, true}, {"max-session-connects", AGENT_RES_CONNECTS, false},
};

/* fds besides the streams': listeners, logs, targets' pidfds and roots, the relay's
 * pipe pool, the spare fd for accept, and the connections that have not sent their
 * first frame yet (both transports) */
#define FD_OVERHEAD (256 + 2 * AGENT_MAX_PENDING_PER_TRANSPORT)

/* Relayed sockets take many fds: use the hard limit. A stream holds ~3 (the client's
 * connection, the pod's socket, a share of the pipes), a session and a connect one:
 * unless told, keep the stream budget within the limit, so that the agent itself never
 * runs out of fds. */
static void fit_fd_limit(struct agent_budget_limits *l, bool streams_set)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY)
		return;
	uint64_t others =
	    FD_OVERHEAD + l->global[AGENT_RES_SESSIONS] + l->global[AGENT_RES_CONNECTS];
	uint64_t room = rl.rlim_cur > others ? (rl.rlim_cur - others) / 3 : 1;
	uint64_t *streams = &l->global[AGENT_RES_STREAMS];
	if (*streams && *streams <= room)
		return;
	if (streams_set) {
		hm_warn("--max-streams %llu may need more fds than the limit of %llu (ulimit -n)",
			(unsigned long long)*streams, (unsigned long long)rl.rlim_cur);
		return;
	}
	hm_info("fd limit %llu: at most %llu streams", (unsigned long long)rl.rlim_cur,
		(unsigned long long)room);
	*streams = room;
}

static int parse_group(const char *s, gid_t *out)
{
	struct group *g = getgrnam(s);
	if (g) {
		*out = g->gr_gid;
		return 0;
	}
	uint64_t v;
	if (hm_parse_u64(s, &v) < 0 || v >= UINT32_MAX)
		return -1;
	*out = (gid_t)v;
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"unix", required_argument, NULL, 'u'},
	    {"agent", required_argument, NULL, 'a'},
	    {"token-file", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *where = NULL, *token_file = PROTO_DEFAULT_TOKEN_FILE;
	bool where_unix = true;
	bool token_file_set = false;
	int opt;
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (opt) {
		case 'u':
		case 'a':
			if (where)
				return usage_error("status: give one of --unix and --agent");
			where = optarg;
			where_unix = opt == 'u';
			break;
		case 't':
			token_file = optarg;
			token_file_set = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case ':':
			return usage_error("status: option '%s' needs a value", argv[optind - 1]);
		default:
			return usage_error("status: unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("status: unexpected argument '%s'", argv[optind]);
	struct hm_err err = {0};
	struct client_endpoint ep;
	char spec[4200];
	if (!where)
		where = PROTO_DEFAULT_AGENT_UNIX;
	/* --unix takes a path even without a slash */
	snprintf(spec, sizeof(spec), "%s%s", where_unix ? "unix:" : "", where);
	if (client_endpoint_parse(spec, &ep, &err) < 0)
		return fail(&err);
	char token[PROTO_AUTH_TOKEN_MAX + 1];
	const char *env_token = getenv("HERMIT_TOKEN");
	if (env_token && env_token[0] && !token_file_set) {
		snprintf(token, sizeof(token), "%s", env_token);
	} else if (client_token_load(token_file, token, sizeof(token), &err) < 0) {
		return fail(&err);
	}
	struct client_opts copts = {.client_name = PROG " status " AGENT_VERSION};
	client_cleanup_close struct client *c = NULL;
	if (client_connect(&ep, token, &copts, &c, &err) < 0)
		return fail(&err);
	struct client_status st;
	if (client_status(c, &st, &err) < 0)
		return fail(&err);
	client_status_print(stdout, &st);
	return 0;
}

int main(int argc, char **argv)
{
	hm_log_init(PROG, HM_LOG_INFO);
	if (argc > 1 && !strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1);

	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"unix", required_argument, NULL, 'u'},
	    {"no-unix", no_argument, NULL, 'U'},
	    {"unix-group", required_argument, NULL, 'g'},
	    {"insecure", no_argument, NULL, 'I'},
	    {"no-kernel-relay", no_argument, NULL, 'K'},
	    {"kernel-relay-memory", required_argument, NULL, 'R'},
	    {"allow-any-pid", no_argument, NULL, 'P'},
	    {"token-file", required_argument, NULL, 't'},
	    {"max-file-size", required_argument, NULL, 'm'},
	    {"handshake-timeout", required_argument, NULL, 'H'},
	    {"stream-ttl", required_argument, NULL, 'S'},
	    {"mirror-buffer", required_argument, NULL, 'B'},
	    {"mirror-copy-buffer", required_argument, NULL, 'C'},
	    {"max-sessions", required_argument, NULL, OPT_BUDGET + 0},
	    {"max-peer-sessions", required_argument, NULL, OPT_BUDGET + 1},
	    {"max-streams", required_argument, NULL, OPT_BUDGET + 2},
	    {"max-session-streams", required_argument, NULL, OPT_BUDGET + 3},
	    {"max-inflight", required_argument, NULL, OPT_BUDGET + 4},
	    {"max-session-inflight", required_argument, NULL, OPT_BUDGET + 5},
	    {"max-connects", required_argument, NULL, OPT_BUDGET + 6},
	    {"max-session-connects", required_argument, NULL, OPT_BUDGET + 7},
	    {"containerd-state", required_argument, NULL, 'D'},
	    {"log-level", required_argument, NULL, 'L'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct agent_server_config cfg = {
	    .unix_path = PROTO_DEFAULT_AGENT_UNIX,
	    .max_file_size = DEFAULT_MAX_FILE,
	    .handshake_timeout_ms = DEFAULT_HANDSHAKE_MS,
	    .stream_ttl_ms = AGENT_STREAM_TTL_MS,
	    .containerd_state = AGENT_CONTAINERD_STATE_DEFAULT,
	    .kernel_relay_memory = AGENT_KR_MEMORY_DEFAULT,
	};
	agent_budget_default_limits(&cfg.limits);
	bool streams_set = false;
	const char *token_file = PROTO_DEFAULT_TOKEN_FILE;
	enum hm_log_level level = HM_LOG_INFO;
	uint64_t v;
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (opt) {
		case 'l':
			cfg.listen_addr = optarg;
			break;
		case 'u':
			cfg.unix_path = optarg;
			break;
		case 'U':
			cfg.unix_path = NULL;
			break;
		case 'g':
			if (parse_group(optarg, &cfg.unix_gid) < 0)
				return usage_error("--unix-group: no group '%s'", optarg);
			break;
		case 'I':
			cfg.insecure_listen = true;
			break;
		case 'K':
			cfg.no_kernel_relay = true;
			break;
		case 'P':
			cfg.allow_any_pid = true;
			break;
		case 't':
			token_file = optarg;
			break;
		case 'm':
			if (hm_parse_size(optarg, &v) < 0 || v == 0)
				return usage_error("bad --max-file-size '%s'", optarg);
			cfg.max_file_size = v;
			break;
		case 'H':
			if (hm_parse_u64(optarg, &v) < 0 || v == 0 || v > 600000)
				return usage_error("bad --handshake-timeout '%s' (1..600000 ms)",
						   optarg);
			cfg.handshake_timeout_ms = (int)v;
			break;
		case 'R':
			if (hm_parse_size(optarg, &v) < 0)
				return usage_error(
				    "bad --kernel-relay-memory '%s' (a size, 0: unlimited)",
				    optarg);
			cfg.kernel_relay_memory = v;
			break;
		case 'S':
			if (hm_parse_u64(optarg, &v) < 0 || v == 0 || v > 3600000)
				return usage_error("bad --stream-ttl '%s' (1..3600000 ms)", optarg);
			cfg.stream_ttl_ms = (unsigned)v;
			break;
		case 'B':
			if (hm_parse_size(optarg, &v) < 0 || v < 4096 || v > (1u << 30) ||
			    (v & (v - 1)))
				return usage_error(
				    "bad --mirror-buffer '%s' (a power of 2, 4k..1G)", optarg);
			cfg.mirror_ring_bytes = (size_t)v;
			break;
		case 'C':
			if (hm_parse_size(optarg, &v) < 0 || v < 65536 || v > (4ull << 30))
				return usage_error("bad --mirror-copy-buffer '%s' (64k..4G)",
						   optarg);
			cfg.mirror_copy_bytes = (size_t)v;
			break;
		case OPT_BUDGET + 0 ... OPT_BUDGET + 7: {
			int i = opt - OPT_BUDGET;
			uint64_t *slot = budget_flags[i].global
					     ? &cfg.limits.global[budget_flags[i].res]
					     : &cfg.limits.per_session[budget_flags[i].res];
			int prc = budget_flags[i].res == AGENT_RES_BYTES ? hm_parse_size(optarg, &v)
									 : hm_parse_u64(optarg, &v);
			if (prc < 0)
				return usage_error("bad --%s '%s'", budget_flags[i].name, optarg);
			*slot = v;
			streams_set |= i == 2;
			break;
		}
		case 'D':
			cfg.containerd_state = optarg;
			break;
		case 'L':
			if (parse_level(optarg, &level) < 0)
				return usage_error(
				    "bad --log-level '%s' (debug, info, warn, error)", optarg);
			break;
		case 'V':
			printf("%s (protocol %d)\n", AGENT_SERVER_NAME, PROTO_VERSION);
			return 0;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (!cfg.unix_path && !cfg.listen_addr)
		return usage_error("--no-unix needs --listen");
	if (cfg.listen_addr && cfg.insecure_listen)
		hm_warn("--insecure: TCP on %s carries the token and file contents unencrypted",
			cfg.listen_addr);
	hm_log_init(PROG, level);

	struct hm_err err = {0};
	char token[PROTO_AUTH_TOKEN_MAX + 1];
	if (token_prepare(token_file, token, sizeof(token), &err) < 0)
		return fail(&err);
	warn_token_mode(token_file);
	cfg.token = token;
	fit_fd_limit(&cfg.limits, streams_set);
	/* modes of files and dirs a client creates in the target are the client's, as
	 * open(2)/mkdir(2) in the pod would apply them; the umask is the app's concern */
	umask(0);
	/* A fixed threshold: glibc's adaptive one would move big reply buffers into the
	 * heap once one was freed, where freeing them keeps them resident; mmap'ed, they
	 * go back to the kernel, so the agent's memory follows --max-inflight. */
	mallopt(M_MMAP_THRESHOLD, 256 << 10);

	/* Every thread inherits this mask, so the signals reach only the signalfd. */
	sigset_t stop_set;
	sigemptyset(&stop_set);
	sigaddset(&stop_set, SIGTERM);
	sigaddset(&stop_set, SIGINT);
	sigaddset(&stop_set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &stop_set, NULL) != 0)
		return fail(&(struct hm_err){.msg = "cannot block signals"});
	signal(SIGPIPE, SIG_IGN); /* splice() to a closed socket must fail, not kill */
	int sfd = signalfd(-1, &stop_set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		hm_err_errno(&err, "signalfd");
		return fail(&err);
	}
	cfg.stop_fd = sfd;
	int rc = agent_server_run(&cfg, &err);
	struct signalfd_siginfo si;
	if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		hm_debug("stopped by signal %u", si.ssi_signo);
	close(sfd);
	explicit_bzero(token, sizeof(token));
	if (rc < 0)
		return fail(&err);
	return 0;
}
