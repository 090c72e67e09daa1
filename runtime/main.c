/* trace-pod: the command line of hermit's container runtime. Parses and validates every
 * argument before anything is created, then hands over to pod.c / control.c. Errors
 * are one line on stderr, "trace-pod: ...", with docker's exit codes. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "runtime/internal.h"

#define PROG "trace-pod"
#define DEFAULT_STOP_TIMEOUT 10
#define MAX_TIMEOUT (7 * 24 * 3600)

static const char usage_main[] =
    "usage: trace-pod [-v|--verbose] COMMAND [ARGS]\n"
    "\n"
    "hermit's container runtime: local pods made of namespaces, cgroups and a veth.\n"
    "\n"
    "commands:\n"
    "  rootfs DIR                    build a minimal busybox root filesystem in DIR\n"
    "  deploy FILE --rootfs DIR      copy a (static) binary into DIR/bin\n"
    "  run [OPTIONS] -- CMD [ARGS]   run CMD as PID 1 of a new pod\n"
    "  ls [--json]                   list pods\n"
    "  exec [-t] NAME -- CMD [ARGS]  run CMD inside a running pod\n"
    "  stop [--timeout S] NAME       stop a pod (SIGTERM, then SIGKILL after S seconds)\n"
    "  rm [-f] NAME                  remove a stopped pod (-f: kill it first)\n"
    "  logs NAME                     print the output of a detached pod\n"
    "\n"
    "`trace-pod COMMAND --help` describes each command.\n"
    "exit codes: 125 trace-pod failed, 126 CMD not executable, 127 CMD not found,\n"
    "otherwise the exit status of CMD (128+N when it was killed by signal N).\n";

static const char usage_run[] =
    "usage: trace-pod run [OPTIONS] --rootfs DIR [--] CMD [ARGS]\n"
    "\n"
    "Run CMD as PID 1 of a new pod (pid, mount, uts, ipc, net and cgroup namespaces)\n"
    "and exit with its status. SIGINT, SIGTERM and SIGHUP are forwarded to the pod;\n"
    "if it is still running --stop-timeout seconds later it gets SIGKILL.\n"
    "\n"
    "  --name NAME          pod name (default: pod-XXXXXX)\n"
    "  --rootfs DIR         root filesystem (see `trace-pod rootfs`)\n"
    "  --hostname H         hostname in the pod (default: the pod name)\n"
    "  --pids-max N         maximum number of processes\n"
    "  --memory-max BYTES   memory limit (k, M, G suffixes)\n"
    "  --cpu-max QUOTA      CPU time in µs per 100000 µs period, or \"QUOTA PERIOD\"\n"
    "  --net MODE           bridge (default: own IP on the hermit0 bridge), none, host\n"
    "  -e, --env K=V        set an environment variable (repeatable)\n"
    "  -w, --workdir DIR    working directory inside the pod (default: /)\n"
    "  --init               run a minimal init as PID 1 that reaps zombies\n"
    "  -d, --detach         run in the background, print the pod name\n"
    "  --dns IP             nameserver for /etc/resolv.conf (default: the host's)\n"
    "  --stop-timeout S     seconds from a forwarded signal to SIGKILL (default: 10)\n"
    "  -t, --tty            give CMD a terminal of its own (a pty relayed to ours;\n"
    "                       stdin must be a terminal). Without -t, CMD still gets a\n"
    "                       new session, and pipes relayed by trace-pod in place of\n"
    "                       those of our stdin/stdout/stderr that are a terminal:\n"
    "                       the pod never holds our terminal\n"
    "  --seccomp PROFILE    default: refuse user namespaces, mounts, keyctl, io_uring,\n"
    "                       bpf, kernel modules, TIOCSTI and more (see README);\n"
    "                       off: no seccomp profile (exec in the pod follows the pod)\n"
    "  --allow-mknod        keep CAP_MKNOD: root in the pod may make device nodes, but\n"
    "                       opening one is still limited to the standard /dev set\n"
    "  --unsafe-public-rootfs\n"
    "                       run a rootfs that other host users can reach (UNSAFE: a\n"
    "                       setuid-root file made in the pod becomes root for them);\n"
    "                       by default a parent of DIR (never DIR itself: it is the\n"
    "                       pod's /) must be root-owned, mode 0700\n"
    "  --log-max-size SIZE  with -d: the log is rotated (one older file kept) before it\n"
    "                       passes SIZE (k, M, G suffixes; default: 10M)\n"
    "  -v, --verbose        debug logs\n"
    "\n"
    "The pod's /dev is a fresh tmpfs with null, zero, full, random, urandom, tty, ptmx,\n"
    "pts/, shm/ and mqueue/; a cgroup device policy (v1 devices controller and a v2\n"
    "BPF program) denies every other device, CAP_MKNOD is dropped.\n";

static const char usage_rootfs[] =
    "usage: trace-pod rootfs DIR\n"
    "\n"
    "Build (or repair) a minimal root filesystem in DIR from the host's Debian\n"
    "busybox-static: the usual directories, busybox and one link per applet, and\n"
    "/etc/os-release, passwd, group, hosts, resolv.conf and hostname. Run again, it\n"
    "creates what is missing and restores busybox, passwd, group and os-release;\n"
    "symlinks in DIR are followed only inside DIR, as a pod sees them, and one that\n"
    "leads nowhere there is an error.\n"
    "A missing parent of DIR is created with mode 0700: `trace-pod run` wants a rootfs\n"
    "behind a parent that other host users cannot pass (see trace-pod run --help);\n"
    "the mode of DIR itself does not count, root in the pod can change it.\n";

static const char usage_deploy[] =
    "usage: trace-pod deploy FILE --rootfs DIR\n"
    "\n"
    "Copy FILE (a statically linked program) into DIR/bin with mode 0755. DIR/bin is\n"
    "resolved inside DIR; a link of FILE's name there is replaced, not written through.\n";

static const char usage_ls[] =
    "usage: trace-pod ls [--json]\n"
    "\n"
    "List pods: NAME, PID (of its PID 1), IP, STATUS (created, running, exited).\n"
    "A pod whose trace-pod was killed is removed (its cgroups, veth and state) instead\n"
    "of listed, as `run --name` does with its name; one that cannot be is listed as\n"
    "dead. --json prints an array of objects with name, pid, ip, status, rootfs, net\n"
    "and exit_code.\n";

static const char usage_exec[] =
    "usage: trace-pod exec [-t|--tty] NAME [--] CMD [ARGS]\n"
    "\n"
    "Run CMD in every namespace and cgroup of the running pod NAME, in a new session,\n"
    "under the pod's seccomp profile; exit with its status.\n"
    "\n"
    "  -t, --tty            give CMD a terminal of its own (a pty relayed to ours;\n"
    "                       stdin must be a terminal). Without -t, those of our\n"
    "                       stdin/stdout/stderr that are a terminal reach CMD as pipes\n"
    "                       relayed by trace-pod, closed when CMD exits\n";

static const char usage_stop[] =
    "usage: trace-pod stop [--timeout S] NAME...\n"
    "\n"
    "Send SIGTERM to the pod (through its trace-pod, which forwards it), SIGKILL after\n"
    "S seconds (default: 10), and wait until it is gone.\n";

static const char usage_rm[] =
    "usage: trace-pod rm [-f|--force] NAME...\n"
    "\n"
    "Remove a pod that is not running and its state. -f kills a running pod first.\n";

static const char usage_logs[] =
    "usage: trace-pod logs NAME\n"
    "\n"
    "Print what a detached pod (run -d) wrote on stdout and stderr: the latest\n"
    "--log-max-size bytes (of run) and the file rotated before them.\n";

static void set_verbose(void)
{
	hm_log_init(PROG, HM_LOG_DEBUG);
}

/* getopt with our own messages: unknown flags are usage errors (125) */
static int bad_option(const char *cmd, int opt, char **argv)
{
	const char *arg = argv[optind - 1];
	if (opt == ':')
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "%s: option '%s' needs a value (see trace-pod %s --help)", cmd,
				   arg, cmd);
	if (optopt && !(arg[0] == '-' && arg[1] == '-'))
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "%s: unknown option '-%c' (see trace-pod %s --help)", cmd,
				   optopt, cmd);
	return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
			   "%s: unknown option '%s' (see trace-pod %s --help)", cmd, arg, cmd);
}

static int print_usage(const char *text)
{
	fputs(text, stdout);
	return 0;
}

/* ---- run ---- */

enum {
	OPT_HOSTNAME = 1000,
	OPT_PIDS,
	OPT_MEMORY,
	OPT_CPU,
	OPT_NET,
	OPT_INIT,
	OPT_DNS,
	OPT_STOP_TIMEOUT,
	OPT_ROOTFS,
	OPT_NAME,
	OPT_JSON,
	OPT_TIMEOUT,
	OPT_SECCOMP,
	OPT_ALLOW_MKNOD,
	OPT_PUBLIC_ROOTFS,
	OPT_LOG_MAX,
};

static bool hostname_valid(const char *h)
{
	size_t n = strlen(h);
	if (n == 0 || n > 64 || h[0] == '-' || h[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

static int parse_timeout(const char *flag, const char *value, unsigned *out)
{
	uint64_t v;
	if (hm_parse_u64(value, &v) < 0 || v > MAX_TIMEOUT) {
		hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s '%s': expected whole seconds (0 to %d)",
			    flag, value, MAX_TIMEOUT);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* Both print the error; <0 on a bad value. */
/* "max" leaves a limit unset, like writing "max" to the cgroup file */
static int parse_limit(const char *flag, const char *value, bool size, uint64_t *out)
{
	if (!strcmp(value, "max")) {
		*out = 0;
		return 0;
	}
	int r = size ? hm_parse_size(value, out) : hm_parse_u64(value, out);
	if (r < 0 || *out == 0) {
		hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s '%s': expected %s", flag, value,
			    size ? "a size in bytes > 0 (k, M, G suffixes) or max"
				 : "a whole number > 0 or max");
		return -1;
	}
	return 0;
}

/* -t relays our terminal: without one on stdin there is nothing to relay (and no raw
 * mode to set), so say so instead of guessing. Prints the error. */
static int require_terminal(void)
{
	struct hm_err err = {0};
	if (rt_tty_require_terminal(&err) < 0) {
		hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
		return -1;
	}
	return 0;
}

static int random_name(char *buf, size_t len)
{
	unsigned char r[3];
	if (getrandom(r, sizeof(r), 0) != sizeof(r))
		return -1;
	snprintf(buf, len, "pod-%02x%02x%02x", r[0], r[1], r[2]);
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"name", required_argument, NULL, OPT_NAME},
	    {"rootfs", required_argument, NULL, OPT_ROOTFS},
	    {"hostname", required_argument, NULL, OPT_HOSTNAME},
	    {"pids-max", required_argument, NULL, OPT_PIDS},
	    {"memory-max", required_argument, NULL, OPT_MEMORY},
	    {"cpu-max", required_argument, NULL, OPT_CPU},
	    {"net", required_argument, NULL, OPT_NET},
	    {"env", required_argument, NULL, 'e'},
	    {"workdir", required_argument, NULL, 'w'},
	    {"init", no_argument, NULL, OPT_INIT},
	    {"detach", no_argument, NULL, 'd'},
	    {"dns", required_argument, NULL, OPT_DNS},
	    {"stop-timeout", required_argument, NULL, OPT_STOP_TIMEOUT},
	    {"tty", no_argument, NULL, 't'},
	    {"seccomp", required_argument, NULL, OPT_SECCOMP},
	    {"allow-mknod", no_argument, NULL, OPT_ALLOW_MKNOD},
	    {"unsafe-public-rootfs", no_argument, NULL, OPT_PUBLIC_ROOTFS},
	    {"log-max-size", required_argument, NULL, OPT_LOG_MAX},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	struct rt_run_opts o = {
	    .net = RT_NET_BRIDGE,
	    .stop_timeout = DEFAULT_STOP_TIMEOUT,
	    .limits = {.cpu_period = 100000},
	    .seccomp = true,
	};
	const char *name = NULL, *rootfs = NULL;
	hm_cleanup_free char **env = calloc(argc + 1, sizeof(*env));
	if (!env)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "out of memory");
	size_t n_env = 0;
	int opt;
	/* '+': stop at CMD, whose own flags are not ours */
	while ((opt = getopt_long(argc, argv, "+:e:w:dtvh", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_NAME:
			name = optarg;
			break;
		case OPT_ROOTFS:
			rootfs = optarg;
			break;
		case OPT_HOSTNAME:
			if (!hostname_valid(optarg))
				return hm_cli_fail(
				    PROG, RT_EXIT_RUNTIME,
				    "--hostname '%s': expected 1 to 64 letters, digits, '-' or '.'",
				    optarg);
			o.hostname = optarg;
			break;
		case OPT_PIDS:
			if (parse_limit("--pids-max", optarg, false, &o.limits.pids_max) < 0)
				return RT_EXIT_RUNTIME;
			break;
		case OPT_MEMORY:
			if (parse_limit("--memory-max", optarg, true, &o.limits.memory_max) < 0)
				return RT_EXIT_RUNTIME;
			break;
		case OPT_CPU: {
			struct hm_err err = {0};
			if (rt_parse_cpu_max(optarg, &o.limits, &err) < 0)
				return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
			break;
		}
		case OPT_NET:
			if (!strcmp(optarg, "bridge"))
				o.net = RT_NET_BRIDGE;
			else if (!strcmp(optarg, "none"))
				o.net = RT_NET_NONE;
			else if (!strcmp(optarg, "host"))
				o.net = RT_NET_HOST;
			else
				return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
						   "--net '%s': expected bridge, none or host",
						   optarg);
			break;
		case 'e': {
			const char *eq = strchr(optarg, '=');
			if (!eq || eq == optarg)
				return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
						   "--env '%s': expected KEY=VALUE", optarg);
			env[n_env++] = optarg;
			break;
		}
		case 'w':
			if (optarg[0] != '/')
				return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
						   "--workdir '%s': expected an absolute path",
						   optarg);
			o.workdir = optarg;
			break;
		case OPT_INIT:
			o.init = true;
			break;
		case 'd':
			o.detach = true;
			break;
		case 't':
			o.tty = true;
			break;
		case OPT_SECCOMP:
			if (!strcmp(optarg, "default"))
				o.seccomp = true;
			else if (!strcmp(optarg, "off"))
				o.seccomp = false;
			else
				return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
						   "--seccomp '%s': expected default or off",
						   optarg);
			break;
		case OPT_DNS: {
			unsigned char addr[16];
			if (inet_pton(AF_INET, optarg, addr) != 1 &&
			    inet_pton(AF_INET6, optarg, addr) != 1)
				return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
						   "--dns '%s': expected an IP address", optarg);
			o.dns = optarg;
			break;
		}
		case OPT_STOP_TIMEOUT:
			if (parse_timeout("--stop-timeout", optarg, &o.stop_timeout) < 0)
				return RT_EXIT_RUNTIME;
			break;
		case OPT_ALLOW_MKNOD:
			o.limits.allow_mknod = true;
			break;
		case OPT_PUBLIC_ROOTFS:
			o.public_rootfs = true;
			break;
		case OPT_LOG_MAX:
			if (hm_parse_size(optarg, &o.log_max_size) < 0 || o.log_max_size == 0)
				return hm_cli_fail(
				    PROG, RT_EXIT_RUNTIME,
				    "--log-max-size '%s': expected a size in bytes > 0 "
				    "(k, M, G suffixes)",
				    optarg);
			break;
		case 'v':
			set_verbose();
			break;
		case 'h':
			return print_usage(usage_run);
		default:
			return bad_option("run", opt, argv);
		}
	}
	if (optind >= argc)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "run: missing command (see trace-pod run --help)");
	o.argv = argv + optind;
	o.env = env;
	if (o.tty && o.detach)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "run: -t and -d exclude each other (a detached pod has no "
				   "terminal to relay to)");
	if (o.tty && require_terminal() < 0)
		return RT_EXIT_RUNTIME;
	if (!rootfs)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "run: --rootfs DIR is required");
	struct stat st;
	char bin[PATH_MAX + 8];
	if (!realpath(rootfs, o.rootfs) || stat(o.rootfs, &st) < 0 || !S_ISDIR(st.st_mode))
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "rootfs %s: %s", rootfs,
				   strerror(errno ? errno : ENOTDIR));
	snprintf(bin, sizeof(bin), "%s/bin", o.rootfs);
	if (stat(bin, &st) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "rootfs %s: %s: %s (build one with: trace-pod rootfs %s)",
				   rootfs, bin, strerror(errno), rootfs);
	struct hm_err private_err = {0};
	if (!o.public_rootfs && rt_rootfs_check_private(o.rootfs, &private_err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", private_err.msg);
	if (name) {
		if (!rt_name_valid(name))
			return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
					   "--name '%s': expected [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}",
					   name);
		snprintf(o.name, sizeof(o.name), "%s", name);
	} else if (random_name(o.name, sizeof(o.name)) < 0) {
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "random pod name: %s", strerror(errno));
	}
	/* pod names may hold '_', hostnames may not */
	static char default_hostname[RT_NAME_MAX + 1];
	if (!o.hostname) {
		snprintf(default_hostname, sizeof(default_hostname), "%s", o.name);
		for (char *c = default_hostname; *c; c++)
			if (*c == '_')
				*c = '-';
		o.hostname = default_hostname;
	}

	struct rt_run_result res = {0};
	struct hm_err err = {0};
	int rc = rt_pod_run(&o, &res, &err);
	if (res.monitor)
		return res.exit_code;
	if (rc < 0)
		return hm_cli_fail(PROG, res.exit_code ? res.exit_code : RT_EXIT_RUNTIME, "%s",
				   err.msg);
	if (o.detach)
		printf("%s\n", o.name);
	return res.exit_code;
}

/* ---- rootfs, deploy ---- */

static int parse_simple(const char *cmd, const char *usage, int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int opt;
	while ((opt = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'v':
			set_verbose();
			break;
		case 'h':
			print_usage(usage);
			return 0;
		default:
			return bad_option(cmd, opt, argv);
		}
	}
	return -1;
}

static int cmd_rootfs(int argc, char **argv)
{
	int r = parse_simple("rootfs", usage_rootfs, argc, argv);
	if (r >= 0)
		return r;
	if (argc - optind != 1)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "rootfs: expected one DIR (see trace-pod rootfs --help)");
	struct hm_err err = {0};
	if (rt_rootfs_prepare_parent(argv[optind], &err) < 0 ||
	    rt_rootfs_build(argv[optind], &err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	char abs[PATH_MAX];
	bool resolved = realpath(argv[optind], abs) != NULL;
	/* built all the same: the user may mean to move it, or to run it unsafe */
	if (resolved && rt_rootfs_check_private(abs, &err) < 0)
		fprintf(stderr, "trace-pod: warning: %s\n", err.msg);
	printf("%s\n", resolved ? abs : argv[optind]);
	return 0;
}

static int cmd_deploy(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"rootfs", required_argument, NULL, OPT_ROOTFS},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	const char *rootfs = NULL;
	int opt;
	while ((opt = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_ROOTFS:
			rootfs = optarg;
			break;
		case 'v':
			set_verbose();
			break;
		case 'h':
			return print_usage(usage_deploy);
		default:
			return bad_option("deploy", opt, argv);
		}
	}
	if (argc - optind != 1 || !rootfs)
		return hm_cli_fail(
		    PROG, RT_EXIT_RUNTIME,
		    "deploy: expected FILE --rootfs DIR (see trace-pod deploy --help)");
	struct hm_err err = {0};
	if (rt_rootfs_deploy(rootfs, argv[optind], &err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	return 0;
}

/* ---- ls ---- */

static int cmd_ls(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, OPT_JSON},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool json = false;
	int opt;
	while ((opt = getopt_long(argc, argv, ":vh", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_JSON:
			json = true;
			break;
		case 'v':
			set_verbose();
			break;
		case 'h':
			return print_usage(usage_ls);
		default:
			return bad_option("ls", opt, argv);
		}
	}
	if (optind != argc)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "ls: unexpected argument '%s'",
				   argv[optind]);
	struct hm_err err = {0};
	char **names;
	size_t count;
	if (rt_state_list(&names, &count, &err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	struct rt_pod_state *pods = calloc(count ? count : 1, sizeof(*pods));
	if (!pods) {
		rt_state_list_free(names, count);
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "out of memory");
	}
	size_t n = 0;
	int width = 4;
	for (size_t i = 0; i < count; i++) {
		/* a pod removed while we list is simply not listed */
		if (rt_pod_state_load(names[i], &pods[n], NULL) < 0)
			continue;
		/* what a killed trace-pod left is removed, not listed */
		if (!strcmp(rt_pod_status(&pods[n]), "dead")) {
			int reaped = rt_pod_reap_dead(names[i], &err);
			if (reaped < 0)
				hm_warn("%s", err.msg);
			if (reaped > 0)
				continue;
		}
		if ((int)strlen(pods[n].name) > width)
			width = strlen(pods[n].name);
		n++;
	}
	rt_state_list_free(names, count);

	if (json) {
		json_object *arr = json_object_new_array();
		for (size_t i = 0; i < n; i++) {
			const struct rt_pod_state *p = &pods[i];
			const char *status = rt_pod_status(p);
			json_object *o = json_object_new_object();
			json_object_object_add(o, "name", json_object_new_string(p->name));
			json_object_object_add(o, "pid", json_object_new_int(p->pid));
			json_object_object_add(o, "ip", json_object_new_string(p->ip));
			json_object_object_add(o, "status", json_object_new_string(status));
			json_object_object_add(o, "rootfs", json_object_new_string(p->rootfs));
			json_object_object_add(o, "net", json_object_new_string(p->net));
			json_object_object_add(o, "exit_code",
					       !strcmp(status, "exited") && p->exit_code >= 0
						   ? json_object_new_int(p->exit_code)
						   : NULL);
			json_object_array_add(arr, o);
		}
		printf("%s\n", json_object_to_json_string_ext(
				   arr, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(arr);
	} else {
		printf("%-*s  %-8s  %-15s  %s\n", width, "NAME", "PID", "IP", "STATUS");
		for (size_t i = 0; i < n; i++) {
			const struct rt_pod_state *p = &pods[i];
			const char *status = rt_pod_status(p);
			bool live = !strcmp(status, "running") || !strcmp(status, "created");
			char pid[16], st[48];
			snprintf(pid, sizeof(pid), "%d", (int)p->pid);
			if (!strcmp(status, "exited") && p->exit_code >= 0)
				snprintf(st, sizeof(st), "exited (%d)", p->exit_code);
			else
				snprintf(st, sizeof(st), "%s", status);
			printf("%-*s  %-8s  %-15s  %s\n", width, p->name,
			       live && p->pid > 0 ? pid : "-", live && p->ip[0] ? p->ip : "-", st);
		}
	}
	free(pods);
	return 0;
}

/* ---- exec, stop, rm, logs ---- */

static int cmd_exec(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"tty", no_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool tty = false;
	int opt;
	while ((opt = getopt_long(argc, argv, "+:tvh", longopts, NULL)) != -1) {
		switch (opt) {
		case 't':
			tty = true;
			break;
		case 'v':
			set_verbose();
			break;
		case 'h':
			return print_usage(usage_exec);
		default:
			return bad_option("exec", opt, argv);
		}
	}
	if (optind >= argc)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "exec: expected NAME -- CMD (see trace-pod exec --help)");
	const char *name = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	if (optind >= argc)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "exec: missing command (see trace-pod exec --help)");
	if (tty && require_terminal() < 0)
		return RT_EXIT_RUNTIME;
	struct hm_err err = {0};
	struct rt_pod_state st;
	if (rt_pod_state_load(name, &st, &err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	if (!rt_pod_is_running(&st))
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "pod %s is not running", name);
	fflush(NULL);
	err.msg[0] = '\0';
	int rc = rt_pod_exec(&st, argv + optind, tty, &err);
	if (rc < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	/* 126/127: the command could not be run, and err says why */
	if (err.msg[0])
		hm_cli_fail(PROG, rc, "%s", err.msg);
	return rc;
}

static int cmd_stop(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"timeout", required_argument, NULL, 't'},
	    {"time", required_argument, NULL, 't'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	unsigned timeout = DEFAULT_STOP_TIMEOUT;
	int opt;
	while ((opt = getopt_long(argc, argv, ":t:vh", longopts, NULL)) != -1) {
		switch (opt) {
		case 't':
			if (parse_timeout("--timeout", optarg, &timeout) < 0)
				return RT_EXIT_RUNTIME;
			break;
		case 'v':
			set_verbose();
			break;
		case 'h':
			return print_usage(usage_stop);
		default:
			return bad_option("stop", opt, argv);
		}
	}
	if (optind >= argc)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "stop: expected NAME (see trace-pod stop --help)");
	int rc = 0;
	for (int i = optind; i < argc; i++) {
		struct hm_err err = {0};
		if (rt_pod_stop(argv[i], timeout, &err) < 0)
			rc = hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	}
	return rc;
}

static int cmd_rm(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"force", no_argument, NULL, 'f'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	bool force = false;
	int opt;
	while ((opt = getopt_long(argc, argv, ":fvh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'f':
			force = true;
			break;
		case 'v':
			set_verbose();
			break;
		case 'h':
			return print_usage(usage_rm);
		default:
			return bad_option("rm", opt, argv);
		}
	}
	if (optind >= argc)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "rm: expected NAME (see trace-pod rm --help)");
	int rc = 0;
	for (int i = optind; i < argc; i++) {
		struct hm_err err = {0};
		if (rt_pod_remove(argv[i], force, &err) < 0)
			rc = hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	}
	return rc;
}

static int cmd_logs(int argc, char **argv)
{
	int r = parse_simple("logs", usage_logs, argc, argv);
	if (r >= 0)
		return r;
	if (argc - optind != 1)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
				   "logs: expected NAME (see trace-pod logs --help)");
	const char *name = argv[optind];
	struct hm_err err = {0};
	struct rt_pod_state st;
	if (rt_pod_state_load(name, &st, &err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	if (rt_log_print(name, STDOUT_FILENO, &err) < 0)
		return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "%s", err.msg);
	return 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
} commands[] = {
    {"run", cmd_run, usage_run},
    {"rootfs", cmd_rootfs, usage_rootfs},
    {"deploy", cmd_deploy, usage_deploy},
    {"ls", cmd_ls, usage_ls},
    {"exec", cmd_exec, usage_exec},
    {"stop", cmd_stop, usage_stop},
    {"rm", cmd_rm, usage_rm},
    {"logs", cmd_logs, usage_logs},
};

int main(int argc, char **argv)
{
	hm_log_init(PROG, HM_LOG_WARN);
	opterr = 0;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--verbose"))
			set_verbose();
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return print_usage(usage_main);
		else
			return hm_cli_fail(PROG, RT_EXIT_RUNTIME,
					   "unknown option '%s' (see trace-pod --help)", argv[i]);
	}
	if (i >= argc) {
		fputs(usage_main, stderr);
		return RT_EXIT_RUNTIME;
	}
	const char *cmd = argv[i];
	if (!strcmp(cmd, "help")) {
		for (size_t c = 0; i + 1 < argc && c < HM_ARRAY_SIZE(commands); c++)
			if (!strcmp(argv[i + 1], commands[c].name))
				return print_usage(commands[c].usage);
		return print_usage(usage_main);
	}
	for (size_t c = 0; c < HM_ARRAY_SIZE(commands); c++)
		if (!strcmp(cmd, commands[c].name))
			/* the command parses its own argv, with itself as argv[0] */
			return commands[c].fn(argc - i, argv + i);
	return hm_cli_fail(PROG, RT_EXIT_RUNTIME, "unknown command '%s' (see trace-pod --help)",
			   cmd);
}
