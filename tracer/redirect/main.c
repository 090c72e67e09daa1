/* trace-run: run a program on this machine as if it ran inside a target (a pod): its
 * environment, files and outgoing traffic come from the target through trace-agent.
 * Errors are one line on stderr, "trace-run: ...", with an exit code per kind of
 * failure (see usage). The exit status is otherwise the program's; when the program was
 * killed by a signal, trace-run kills itself with the same signal, so that a shell or
 * CI sees the same thing as without trace-run. */
#include <getopt.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include "tracer/redirect/session.h"
#include "tracer/engine/tracer.h"

#define PROG "trace-run"

extern char **environ;

static const char usage[] =
    "usage: trace-run --target pod/NAME|pid/N|container/ID [OPTIONS] [--] PROGRAM [ARGS]\n"
    "       trace-run port-forward --target pod/NAME -L [BIND:]LPORT:HOST:PORT ...\n"
    "       trace-run agents [--kubeconfig F] [--context C]   (the cluster's agents)\n"
    "\n"
    "Run PROGRAM (searched in PATH) on this machine as if it ran inside the target: it\n"
    "sees the target's environment variables and files, and its outgoing connections and\n"
    "DNS leave from the target's network. Works for any program (static Go, glibc, musl,\n"
    "raw syscalls), in every thread and child process, as an ordinary user.\n"
    "\n"
    "  --target T          pod/NAME, pid/N or container/ID (required, here or in -f)\n"
    "  --agent HOST:PORT   the agent's TCP address ([V6]:PORT for IPv6)\n"
    "  --agent-unix PATH   the agent's unix socket (default " PROTO_DEFAULT_AGENT_UNIX ")\n"
    "  --token-file F      the agent's auth token (default " PROTO_DEFAULT_TOKEN_FILE ";\n"
    "                      the HERMIT_TOKEN environment variable is used when no file is\n"
    "                      named by a flag or the config)\n"
    "Kubernetes (any of these, or a deployment/NAME or pod/NAME/container/C target,\n"
    "makes the target a cluster's pod, reached through the API server):\n"
    "  --kube              the target is in the cluster kubeconfig names\n"
    "  --kubeconfig F      this kubeconfig only (default: $KUBECONFIG, ~/.kube/config,\n"
    "                      then the in-cluster service account)\n"
    "  --context C         this kubeconfig context (default: current-context)\n"
    "  -n, --namespace NS  the target's namespace (default: the context's, or default)\n"
    "                      targets: pod/NAME, pod/NAME/container/C, deployment/NAME\n"
    "  -f, --config FILE   JSON config (docs/config.md); flags override it\n"
    "  --backend B         seccomp (user notification, Linux 5.9+), ptrace (slower, for\n"
    "                      older kernels) or auto (default: the best the kernel offers)\n"
    "  --fs-mode M         read (default), write, local or localwithoverrides\n"
    "  --max-file-size S   largest remote file the program may open (default 1G; k, M, G\n"
    "                      suffixes); a larger one fails with EFBIG\n"
    "  --env-include G     import only the target's variables matching glob G (repeatable;\n"
    "                      LD_*, BASH_ENV, ENV, PYTHONSTARTUP and other variables that\n"
    "                      load code are only imported when G names them exactly)\n"
    "  --env-exclude G     never import variables matching G (repeatable)\n"
    "  -e, --env K=V       set K=V in the program's environment (repeatable)\n"
    "  --incoming M        what reaches PROGRAM's listening TCP ports from the target's\n"
    "                      same ports: mirror (default: a copy of each connection, the\n"
    "                      target still answers; PROGRAM's replies are dropped), steal\n"
    "                      (the connections come to PROGRAM instead) or off\n"
    "  -q, --quiet         no notices (which ports are mirrored or stolen), no warnings\n"
    "  -v, --verbose       what trace-run does (-vv: every remote file decision)\n"
    "  -h, --help          this text\n"
    "\n"
    "Files: reads of remote paths come from the target (read mode); in write mode\n"
    "written files go back to it on close/fsync; /proc, /sys, /dev, system files, the\n"
    "program, the current directory, $HOME and /tmp stay local (docs/config.md).\n"
    "Incoming: when PROGRAM listens on a TCP port, the same port of the target is\n"
    "subscribed (port_mapping, ports, ignore_ports, http_filter in the config); accept\n"
    "and getpeername show the original client. A steal refused because another session\n"
    "holds the port ends the run with 125 (on_concurrent_steal: abort, the default).\n"
    "SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to PROGRAM;\n"
    "trace-run returns once PROGRAM and everything it started have exited. If trace-run\n"
    "dies, even by SIGKILL, PROGRAM and everything it started are killed.\n"
    "\n"
    "exit codes: PROGRAM's exit status (or trace-run dies of PROGRAM's fatal signal), or\n"
    "  121  the agent is unreachable (no socket, connection refused, timeout)\n"
    "  122  no auth token, the agent rejected it, or no permission on its socket\n"
    "  123  the agent has no such target, it is not running, or it is not yours\n"
    "  125  any other trace-run failure (usage, config file, kernel support)\n"
    "  126  PROGRAM is not executable\n"
    "  127  PROGRAM not found\n";

/* Die the way the program died. Its core (if any) was already written. */
static int exit_like(const struct tracer_exit *e)
{
	if (e->outcome != TRACER_SIGNALED)
		return tracer_exit_code(e);
	int sig = e->code;
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);
	fflush(NULL);
	signal(sig, SIG_DFL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
	return 128 + sig; /* a signal whose default action is not to terminate */
}

static int set_string(char **dst, const char *value)
{
	free(*dst);
	*dst = strdup(value);
	return *dst ? 0 : -1;
}

struct cli {
	struct policy_config flags; /* what the flags say; overrides the file */
	struct trace_kube_opts kube;
	const char *config_file;
	int verbose;
	bool quiet;
};

/* 0: parsed; > 0: exit with that code (help printed, or an error reported) */
static int parse_args(int argc, char **argv, struct cli *cli)
{
	enum {
		OPT_TARGET = 256,
		OPT_AGENT,
		OPT_AGENT_UNIX,
		OPT_TOKEN_FILE,
		OPT_BACKEND,
		OPT_FS_MODE,
		OPT_MAX_FILE_SIZE,
		OPT_ENV_INCLUDE,
		OPT_ENV_EXCLUDE,
		OPT_KUBE,
		OPT_KUBECONFIG,
		OPT_CONTEXT,
		OPT_INCOMING,
	};
	static const struct option longopts[] = {
	    {"target", required_argument, NULL, OPT_TARGET},
	    {"agent", required_argument, NULL, OPT_AGENT},
	    {"agent-unix", required_argument, NULL, OPT_AGENT_UNIX},
	    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
	    {"config", required_argument, NULL, 'f'},
	    {"backend", required_argument, NULL, OPT_BACKEND},
	    {"fs-mode", required_argument, NULL, OPT_FS_MODE},
	    {"max-file-size", required_argument, NULL, OPT_MAX_FILE_SIZE},
	    {"env-include", required_argument, NULL, OPT_ENV_INCLUDE},
	    {"env-exclude", required_argument, NULL, OPT_ENV_EXCLUDE},
	    {"env", required_argument, NULL, 'e'},
	    {"kube", no_argument, NULL, OPT_KUBE},
	    {"kubeconfig", required_argument, NULL, OPT_KUBECONFIG},
	    {"context", required_argument, NULL, OPT_CONTEXT},
	    {"namespace", required_argument, NULL, 'n'},
	    {"incoming", required_argument, NULL, OPT_INCOMING},
	    {"quiet", no_argument, NULL, 'q'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct policy_config *c = &cli->flags;
	struct hm_err err = {0};
	int opt;
	opterr = 0;
	/* '+': stop at PROGRAM, whose own flags are not ours */
	while ((opt = getopt_long(argc, argv, "+:f:e:n:vqh", longopts, NULL)) != -1) {
		int rc = 0;
		switch (opt) {
		case OPT_TARGET:
			rc = set_string(&c->target, optarg);
			break;
		case OPT_AGENT:
			/* one endpoint: the last of --agent / --agent-unix wins */
			free(c->agent.unix_path);
			c->agent.unix_path = NULL;
			rc = set_string(&c->agent.address, optarg);
			break;
		case OPT_AGENT_UNIX:
			free(c->agent.address);
			c->agent.address = NULL;
			rc = set_string(&c->agent.unix_path, optarg);
			break;
		case OPT_TOKEN_FILE:
			rc = set_string(&c->agent.token_file, optarg);
			break;
		case 'f':
			cli->config_file = optarg;
			break;
		case OPT_BACKEND:
			if (tracer_backend_parse(optarg, &c->backend) < 0)
				return hm_cli_fail(
				    PROG, TRACER_EXIT_FAILURE,
				    "--backend '%s': expected seccomp, ptrace or auto", optarg);
			c->backend_set = true;
			break;
		case OPT_FS_MODE:
			if (policy_fs_mode_parse(optarg, &c->feature.fs.mode) < 0)
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
						   "--fs-mode '%s': expected read, write, local or "
						   "localwithoverrides",
						   optarg);
			break;
		case OPT_MAX_FILE_SIZE:
			if (hm_parse_size(optarg, &c->feature.fs.max_file_size) < 0 ||
			    !c->feature.fs.max_file_size)
				return hm_cli_fail(
				    PROG, TRACER_EXIT_FAILURE,
				    "--max-file-size '%s': expected bytes, or a number "
				    "with k, M or G",
				    optarg);
			break;
		case OPT_ENV_INCLUDE:
		case OPT_ENV_EXCLUDE: {
			struct policy_strv *v = opt == OPT_ENV_INCLUDE ? &c->feature.env.include
								       : &c->feature.env.exclude;
			if (!optarg[0])
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s: empty glob",
						   argv[optind - 1]);
			rc = policy_strv_push(v, optarg, &err);
			break;
		}
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=')
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
						   "--env '%s': expected KEY=VALUE", optarg);
			rc = policy_config_env_override(c, optarg, &err);
			break;
		case OPT_KUBE:
			cli->kube.force = true;
			break;
		case OPT_KUBECONFIG:
			cli->kube.kubeconfig = optarg;
			break;
		case OPT_CONTEXT:
			cli->kube.context = optarg;
			break;
		case 'n':
			cli->kube.namespace = optarg;
			break;
		case OPT_INCOMING:
			if (policy_incoming_mode_parse(optarg, &c->feature.network.incoming.mode) <
			    0)
				return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
						   "--incoming '%s': expected mirror, steal or off",
						   optarg);
			break;
		case 'q':
			cli->quiet = true;
			break;
		case 'v':
			cli->verbose++;
			break;
		case 'h':
			fputs(usage, stdout);
			return -1;
		default: /* ':' or '?' */
			return hm_cli_bad_option(PROG, TRACER_EXIT_FAILURE, opt, argv,
						 "trace-run --help");
		}
		if (rc < 0)
			return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s",
					   err.msg[0] ? err.msg : "out of memory");
	}
	if (optind >= argc)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
				   "no PROGRAM given (see trace-run --help)");
	return 0;
}

/* The config file, then the flags over it; finalized. */
static int build_config(const struct cli *cli, struct policy_config *out)
{
	struct hm_err err = {0};
	policy_config_init(out);
	if (cli->config_file && policy_config_load_file(out, cli->config_file, &err) < 0)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
	if (policy_config_merge(out, &cli->flags, &err) < 0 ||
	    policy_config_finalize(out, &err) < 0)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
	if (!out->target || !out->target[0])
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE,
				   "no target: give --target pod/NAME (or pid/N, container/ID), or "
				   "\"target\" in the config file");
	return 0;
}

/* What run() set up, in reverse, however far it got (s is set up by trace_session_init
 * first thing, env and t may be NULL). */
static void run_release(struct trace_session *s, char **env, struct tracer *t)
{
	trace_net_release(s);
	trace_files_release(s);
	trace_session_release(s);
	policy_env_free(env);
	tracer_free(t);
}

static int run(int argc, char **argv)
{
	struct cli cli = {0};
	policy_config_init(&cli.flags);
	int rc = parse_args(argc, argv, &cli);
	if (rc != 0) {
		policy_config_free(&cli.flags);
		return rc < 0 ? 0 : rc;
	}
	if (cli.verbose)
		hm_log_init(PROG, cli.verbose > 1 ? HM_LOG_DEBUG : HM_LOG_INFO);
	else if (cli.quiet)
		hm_log_init(PROG, HM_LOG_ERROR);
	char **program = argv + optind;

	policy_cleanup_config struct policy_config cfg = {0};
	rc = build_config(&cli, &cfg);
	policy_config_free(&cli.flags);
	if (rc)
		return rc;

	struct hm_err err = {0};
	struct tracer *t = NULL;
	/* the kernel probe runs in a thread of its own during the agent handshake */
	if (tracer_new_start(cfg.backend, &t, &err) < 0)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);

	struct trace_session s;
	char **env = NULL;
	const char *token_env = getenv("HERMIT_TOKEN");
	int exit_code = TRACER_EXIT_FAILURE;
	bool kube = trace_kube_wanted(&cli.kube, cfg.target);
	if (trace_session_init(&s, &cfg, token_env, &err) < 0 ||
	    (kube && trace_kube_prepare(&s, &cli.kube, &exit_code, &err) < 0) ||
	    trace_session_connect(&s, &exit_code, &err) < 0)
		goto fail;
	exit_code = TRACER_EXIT_FAILURE;
	if (tracer_new_finish(t, &err) < 0)
		goto fail;
	s.tracer = t;
	s.quiet = cli.quiet;
	if (trace_env_build(&s, environ, &env, &err) < 0)
		goto fail;
	const char *path = NULL;
	for (char **e = env; *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			path = *e + 5;
	if (trace_session_policies(&s, program[0], path, &err) < 0 ||
	    trace_files_register(&s, &err) < 0 || trace_net_register(&s, &err) < 0)
		goto fail;
	trace_session_watch(&s);

	char **saved_environ = environ;
	environ = env; /* what execvp in the launched child passes on */
	struct tracer_exit ex;
	rc = tracer_run(t, program, &ex, &err);
	environ = saved_environ;
	int abort_exit = s.abort_exit;
	run_release(&s, env, t);
	if (abort_exit)
		return abort_exit;
	if (rc < 0)
		return hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
	if (ex.outcome == TRACER_EXEC_FAILED) {
		hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s: %s", program[0], strerror(ex.code));
		return tracer_exit_code(&ex);
	}
	if (ex.outcome == TRACER_SIGNALED && ex.code == SIGSYS)
		hm_cli_fail(
		    PROG, TRACER_EXIT_FAILURE,
		    "%s was killed by SIGSYS; a system call with a foreign ABI (32-bit int 0x80) "
		    "would get past the tracer, so it is not allowed",
		    program[0]);
	return exit_like(&ex);

fail:
	hm_cli_fail(PROG, TRACER_EXIT_FAILURE, "%s", err.msg);
	run_release(&s, env, t);
	return exit_code;
}

int main(int argc, char **argv)
{
	hm_log_init(PROG, HM_LOG_WARN);
	if (argc > 1 && strcmp(argv[1], "port-forward") == 0)
		return trace_port_forward_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "agents") == 0)
		return trace_agents_main(argc - 1, argv + 1);
	return run(argc, argv);
}
