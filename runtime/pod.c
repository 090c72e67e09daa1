/* The `trace-pod run` lifecycle: state dir, cgroups, bind-mounted /etc files, clone3,
 * networking, start, wait with signal forwarding, and the release of all of it in
 * reverse order. A detached pod runs the same lifecycle in a forked monitor. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "runtime/internal.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct pod {
	const struct rt_run_opts *o;
	const char *hostname;
	bool state_created;
	bool cgroup_created;
	struct rt_cgroup cg;
	bool spawned;
	bool reaped;
	struct rt_container c;
	char ip[64];
	char host_if[32];
	int sigfd;
	struct rt_seccomp_prog seccomp;
	bool relaying;
	struct rt_tty_relay tty;
	struct rt_log log; /* detached only */
	int out_pipe;	   /* detached: read end of the pod's stdout and stderr, else -1 */
	bool log_failed;
};

static int pidfd_signal(int pidfd, int sig)
{
	return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* The signals a pod's owner forwards. SIGPIPE is blocked too (never read): a vanished
 * reader of our stderr or of the detach pipe must not kill us before the cleanup. */
static void forwarded_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGHUP);
}

static int block_signals(sigset_t *old, struct hm_err *err)
{
	sigset_t set;
	forwarded_signals(&set);
	sigaddset(&set, SIGPIPE);
	/* for the signalfd of a pod with a pty; ignored otherwise, as by default */
	sigaddset(&set, SIGWINCH);
	if (sigprocmask(SIG_BLOCK, &set, old) < 0)
		return hm_err_errno(err, "block signals");
	return 0;
}

/* ---- files bind-mounted over the rootfs's /etc ---- */

static bool loopback_address(const char *addr)
{
	return !strncmp(addr, "127.", 4) || !strcmp(addr, "::1") || !strcmp(addr, "0.0.0.0");
}

/* Append the nameservers (and search/options lines) of a host resolv.conf; loopback
 * servers only when keep_loopback (the pod shares the host's network). */
static int append_host_resolvers(const char *path, bool keep_loopback, char *out, size_t len)
{
	hm_cleanup_free char *text = NULL;
	if (hm_read_file(path, &text, NULL, NULL) < 0)
		return 0;
	int servers = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char addr[128];
		if (sscanf(line, " nameserver %127s", addr) == 1) {
			if (!keep_loopback && loopback_address(addr))
				continue;
			servers++;
		} else if (strncmp(line, "search", 6) && strncmp(line, "options", 7)) {
			continue;
		}
		size_t used = strlen(out);
		snprintf(out + used, len - used, "%s\n", line);
	}
	return servers;
}

static int write_etc_files(struct pod *p, char *hosts_path, char *resolv_path, char *hostname_path,
			   struct hm_err *err)
{
	const struct rt_run_opts *o = p->o;
	char buf[4096];

	rt_state_path(o->name, "hosts", hosts_path, PATH_MAX);
	snprintf(buf, sizeof(buf),
		 "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n",
		 p->ip[0] ? p->ip : "127.0.1.1", p->hostname);
	if (hm_create_file(hosts_path, buf, strlen(buf), 0644, err) < 0)
		return -1;

	rt_state_path(o->name, "resolv.conf", resolv_path, PATH_MAX);
	buf[0] = '\0';
	if (o->dns) {
		snprintf(buf, sizeof(buf), "nameserver %s\n", o->dns);
	} else if (o->net == RT_NET_HOST) {
		int n = append_host_resolvers("/etc/resolv.conf", true, buf, sizeof(buf));
		if (n == 0) {
			/* systemd-resolved hosts point at 127.0.0.53; its upstream list is here */
			buf[0] = '\0';
			n = append_host_resolvers("/run/systemd/resolve/resolv.conf", true, buf,
						  sizeof(buf));
		}
		if (n == 0)
			snprintf(buf, sizeof(buf), "nameserver 127.0.0.1\n");
	} else {
		/* The bridge is not NATed to the outside, so the host's resolvers are not
		 * reachable from a pod: point at the bridge, where a resolver can be run (or
		 * pass --dns to name a pod that runs one). */
		snprintf(buf, sizeof(buf), "nameserver %s\n", RT_BRIDGE_IP);
	}
	if (hm_create_file(resolv_path, buf, strlen(buf), 0644, err) < 0)
		return -1;

	rt_state_path(o->name, "hostname", hostname_path, PATH_MAX);
	snprintf(buf, sizeof(buf), "%s\n", p->hostname);
	return hm_create_file(hostname_path, buf, strlen(buf), 0644, err);
}

/* PATH, HOME, HOSTNAME (and the caller's TERM) unless the user set them. */
static char **build_env(const struct rt_run_opts *o, const char *hostname)
{
	size_t n_user = 0;
	while (o->env && o->env[n_user])
		n_user++;
	char **env = calloc(n_user + 5, sizeof(*env));
	if (!env)
		return NULL;
	static char hostname_var[80];
	static char term_var[128];
	snprintf(hostname_var, sizeof(hostname_var), "HOSTNAME=%s", hostname);
	const char *defaults[4] = {"PATH=" DEFAULT_PATH, "HOME=/root", hostname_var, NULL};
	const char *term = getenv("TERM");
	if (term) {
		snprintf(term_var, sizeof(term_var), "TERM=%s", term);
		defaults[3] = term_var;
	}
	size_t n = 0;
	for (size_t d = 0; d < HM_ARRAY_SIZE(defaults); d++) {
		if (!defaults[d])
			continue;
		size_t klen = strchr(defaults[d], '=') - defaults[d] + 1;
		bool overridden = false;
		for (size_t u = 0; u < n_user; u++)
			if (!strncmp(o->env[u], defaults[d], klen))
				overridden = true;
		if (!overridden)
			env[n++] = (char *)defaults[d];
	}
	for (size_t u = 0; u < n_user; u++)
		env[n++] = o->env[u];
	return env;
}

/* ---- setup, wait, release ---- */

static const char *net_name(enum rt_net_mode m)
{
	return m == RT_NET_HOST ? "host" : m == RT_NET_NONE ? "none" : "bridge";
}

/* The pod's PID 1, with its stdout and stderr on a pipe to us when it is detached: the
 * monitor caps the log (podlog.c). The child inherits our fds 0-2 at the clone: in the
 * foreground without -t, pipes instead of those that are the operator's terminal. */
static int spawn(struct pod *p, const struct rt_spec *spec, struct hm_err *err)
{
	if (p->o->tty)
		return rt_container_spawn(spec, &p->cg, &p->c, err);
	if (!p->o->detach) {
		int saved[3];
		int piped = rt_tty_relay_pipes(&p->tty, saved, err);
		if (piped <= 0)
			return piped < 0 ? -1 : rt_container_spawn(spec, &p->cg, &p->c, err);
		p->relaying = true;
		int rc = rt_container_spawn(spec, &p->cg, &p->c, err);
		rt_tty_relay_pipes_restore(saved);
		return rc;
	}
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	p->out_pipe = fds[0];
	hm_cleanup_close int write_end = fds[1];
	/* only our end: the pod's writes block while the log is being written */
	if (fcntl(p->out_pipe, F_SETFL, O_NONBLOCK) < 0)
		return hm_err_errno(err, "pipe");
	if (dup2(write_end, STDOUT_FILENO) < 0 || dup2(write_end, STDERR_FILENO) < 0)
		return hm_err_errno(err, "redirect output to the pipe");
	int rc = rt_container_spawn(spec, &p->cg, &p->c, err);
	if (dup2(p->log.fd, STDOUT_FILENO) < 0 || dup2(p->log.fd, STDERR_FILENO) < 0) {
		if (rc == 0)
			return hm_err_errno(err, "redirect output to the log");
	}
	return rc;
}

/* Move the pod's output into its log. On a failed write (a full /run) the output is
 * dropped, said once, so the pod never blocks on a pipe nobody reads. */
static void relay_output(struct pod *p, bool *eof)
{
	struct hm_err err;
	if (rt_log_relay(&p->log, p->out_pipe, eof, &err) < 0 && !p->log_failed) {
		p->log_failed = true;
		hm_warn("pod %s: output dropped: %s", p->o->name, err.msg);
	}
}

/* Everything up to a running pod. *code gets 125, or 126/127 from the exec. */
static int pod_setup(struct pod *p, int *code, struct hm_err *err)
{
	const struct rt_run_opts *o = p->o;
	*code = RT_EXIT_RUNTIME;

	int created = rt_state_create(o->name, err);
	if (created < 0 && err->code == EEXIST) {
		/* the name of a pod whose trace-pod was killed is free again */
		struct hm_err reap_err;
		int reaped = rt_pod_reap_dead(o->name, &reap_err);
		if (reaped < 0) {
			*err = reap_err;
			return -1;
		}
		if (reaped > 0)
			created = rt_state_create(o->name, err);
	}
	if (created < 0)
		return -1;
	p->state_created = true;
	if (rt_state_write(o->name, "rootfs", o->rootfs, err) < 0 ||
	    rt_state_write(o->name, "net", net_name(o->net), err) < 0 ||
	    rt_state_write(o->name, "seccomp", o->seccomp ? "default" : "off", err) < 0)
		return -1;
	if (o->seccomp && rt_seccomp_compile_cached(&p->seccomp, RT_RUN_DIR, err) < 0)
		return -1;

	/* from now on our own output goes to the log, and the pod's through us */
	if (o->detach && rt_log_open(&p->log, o->name, o->log_max_size, err) < 0)
		return -1;

	if (rt_cgroup_create(o->name, &o->limits, &p->cg, err) < 0)
		return -1;
	p->cgroup_created = true;
	char path[PATH_MAX];
	rt_state_path(o->name, "cgroups", path, sizeof(path));
	if (rt_cgroup_save(&p->cg, path, err) < 0)
		return -1;

	if (o->net == RT_NET_BRIDGE && rt_net_alloc_ip(o->name, p->ip, sizeof(p->ip), err) < 0)
		return -1;

	char hosts[PATH_MAX], resolv[PATH_MAX], hostname_file[PATH_MAX];
	if (write_etc_files(p, hosts, resolv, hostname_file, err) < 0)
		return -1;

	hm_cleanup_free char **env = build_env(o, p->hostname);
	if (!env)
		return hm_err_set(err, ENOMEM, "environment");
	struct rt_spec spec = {
	    .name = o->name,
	    .rootfs = o->rootfs,
	    .hostname = p->hostname,
	    .workdir = o->workdir ? o->workdir : "/",
	    .argv = o->argv,
	    .env = env,
	    .init = o->init,
	    .net_host = o->net == RT_NET_HOST,
	    .allow_mknod = o->limits.allow_mknod,
	    .hosts_file = hosts,
	    .resolv_file = resolv,
	    .hostname_file = hostname_file,
	    .seccomp = &p->seccomp,
	    .tty = o->tty,
	};
	if (spawn(p, &spec, err) < 0)
		return -1;
	p->spawned = true;
	hm_debug("pod %s: PID 1 is host pid %d", o->name, (int)p->c.pid);

	if (o->net == RT_NET_BRIDGE) {
		if (rt_net_setup_pod(p->c.pid, o->name, p->ip, p->host_if, sizeof(p->host_if),
				     err) < 0)
			return -1;
		if (rt_state_write(o->name, "veth", p->host_if, err) < 0)
			return -1;
	} else if (o->net == RT_NET_NONE) {
		if (rt_net_setup_loopback(p->c.pid, err) < 0)
			return -1;
	}

	char value[32];
	snprintf(value, sizeof(value), "%d", (int)p->c.pid);
	if (rt_state_write(o->name, "pid", value, err) < 0 ||
	    rt_state_write(o->name, "status", "running", err) < 0)
		return -1;

	if (rt_container_start(&p->c, code, err) < 0)
		return -1;
	if (o->tty) {
		if (rt_tty_relay_start(&p->tty, hm_steal_fd(&p->c.tty_fd), err) < 0)
			return -1;
		p->relaying = true;
	}
	*code = 0;
	return 0;
}

/* Wait for PID 1, forwarding SIGINT/SIGTERM/SIGHUP; a PID 1 without handlers ignores
 * them, so stop_timeout seconds after the first one it gets SIGKILL. */
static int pod_wait(struct pod *p, int *status, struct hm_err *err)
{
	int64_t kill_at = HM_NO_DEADLINE;
	/* the pod, signals, a detached pod's output, then the tty relay's */
	struct pollfd fds[3 + RT_TTY_RELAY_MAX_FDS] = {
	    {.fd = p->c.pidfd, .events = POLLIN},
	    {.fd = p->sigfd, .events = POLLIN},
	    {.fd = p->out_pipe, .events = POLLIN},
	};
	for (;;) {
		int n_tty = p->relaying ? rt_tty_relay_fds(&p->tty, fds + 3) : 0;
		int r = poll(fds, 3 + n_tty, hm_ms_until(kill_at));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return hm_err_errno(err, "poll");
		}
		if (n_tty)
			rt_tty_relay_io(&p->tty, fds + 3, n_tty);
		if (fds[0].revents)
			break;
		if (fds[2].revents) {
			bool eof;
			relay_output(p, &eof);
			if (eof) /* every writer gone: nothing more to wait for here */
				fds[2].fd = -1;
		}
		if (fds[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(p->sigfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo == SIGWINCH) {
				rt_tty_relay_resize(&p->tty);
				continue;
			}
			hm_debug("pod %s: forwarding %s", p->o->name, strsignal(si.ssi_signo));
			if (pidfd_signal(p->c.pidfd, si.ssi_signo) < 0 && errno != ESRCH)
				hm_warn("forward %s to pod %s: %s", strsignal(si.ssi_signo),
					p->o->name, strerror(errno));
			if (kill_at == HM_NO_DEADLINE)
				kill_at = hm_deadline_in((int64_t)p->o->stop_timeout * 1000);
		}
		if (kill_at != HM_NO_DEADLINE && hm_now_ms() >= kill_at) {
			hm_debug("pod %s: still running %us after the signal, sending SIGKILL",
				 p->o->name, p->o->stop_timeout);
			pidfd_signal(p->c.pidfd, SIGKILL);
			kill_at = HM_NO_DEADLINE;
		}
	}
	siginfo_t info = {0};
	while (waitid(P_PIDFD, p->c.pidfd, &info, WEXITED) < 0) {
		if (errno != EINTR)
			return hm_err_errno(err, "wait for pod %s", p->o->name);
	}
	p->reaped = true;
	/* PID 1 exits last in its pid namespace: the pod's writers are gone, the rest of
	 * its output is in the pipe */
	bool eof = p->out_pipe < 0;
	for (int calls = 0; !eof && calls < 64; calls++)
		relay_output(p, &eof);
	if (info.si_code == CLD_EXITED)
		*status = info.si_status;
	else
		*status = 128 + info.si_status;
	return 0;
}

/* Release in reverse order of creation. keep_state: a detached pod that ran keeps its
 * state dir (status, exit code, log) until `trace-pod rm`. */
static void pod_release(struct pod *p, bool keep_state, int exit_code)
{
	struct hm_err err;
	const char *name = p->o->name;
	if (p->spawned && !p->reaped) {
		pidfd_signal(p->c.pidfd, SIGKILL);
		siginfo_t info;
		while (waitid(P_PIDFD, p->c.pidfd, &info, WEXITED) < 0 && errno == EINTR)
			;
		p->reaped = true;
	}
	if (p->relaying) {
		rt_tty_relay_finish(&p->tty);
		p->relaying = false;
	}
	if (p->spawned)
		rt_container_release(&p->c);
	rt_seccomp_free(&p->seccomp);
	hm_closep(&p->out_pipe);
	rt_log_close(&p->log);
	/* The kernel would remove the pair with the pod's network namespace, but in a
	 * workqueue, later: deleted here (this returns once the link is unlisted), the veth
	 * is gone when trace-pod returns. Gone already, the namespace won, is success. */
	if (p->host_if[0] && rt_net_teardown_pod(p->host_if, &err) < 0)
		hm_warn("pod %s: remove veth %s: %s", name, p->host_if, err.msg);
	if (p->cgroup_created && rt_cgroup_destroy(&p->cg, &err) < 0)
		hm_warn("pod %s: %s", name, err.msg);
	if (!p->state_created)
		return;
	if (keep_state) {
		char path[PATH_MAX], value[32];
		/* the address file is what reserves the IP: give it back now */
		rt_state_path(name, "ip", path, sizeof(path));
		unlink(path);
		rt_state_path(name, "veth", path, sizeof(path));
		unlink(path);
		snprintf(value, sizeof(value), "%d", exit_code);
		if (rt_state_write(name, "exit_code", value, &err) < 0 ||
		    rt_state_write(name, "status", "exited", &err) < 0)
			hm_warn("pod %s: %s", name, err.msg);
	} else if (rt_state_remove(name, &err) < 0) {
		hm_warn("%s", err.msg);
	}
}

struct start_report {
	int code; /* 0: started */
	char msg[HM_ERR_MSG_MAX];
};

static void send_report(int fd, int code, const char *msg)
{
	struct start_report rep = {.code = code};
	snprintf(rep.msg, sizeof(rep.msg), "%s", msg ? msg : "");
	/* one write below PIPE_BUF: atomic; EPIPE (parent gone) is fine, SIGPIPE is blocked */
	if (write(fd, &rep, sizeof(rep)) < 0)
		hm_debug("report start: %s", strerror(errno));
}

/* The whole lifecycle of one pod in this process. report_fd >= 0 (detached): the
 * outcome of the start is written there as soon as it is known. */
static int pod_lifecycle(const struct rt_run_opts *o, int report_fd, int *exit_code,
			 struct hm_err *err)
{
	struct pod p = {
	    .o = o,
	    .hostname = o->hostname ? o->hostname : o->name,
	    .c = {.pid = 0, .pidfd = -1, .sync_fd = -1, .error_fd = -1, .tty_fd = -1},
	    .cg = {.v2_fd = -1},
	    .sigfd = -1,
	    .log = {.fd = -1},
	    .out_pipe = -1,
	};
	sigset_t set;
	forwarded_signals(&set);
	/* a resized terminal is the pty's business, not a signal to forward */
	if (o->tty)
		sigaddset(&set, SIGWINCH);
	/* signals that arrive during the setup wait in the signalfd and are forwarded after */
	hm_cleanup_close int sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sigfd < 0) {
		*exit_code = RT_EXIT_RUNTIME;
		return hm_err_errno(err, "signalfd");
	}
	p.sigfd = sigfd;

	int code;
	if (pod_setup(&p, &code, err) < 0) {
		*exit_code = code ? code : RT_EXIT_RUNTIME;
		/* a pod that never started leaves nothing, detached or not; the caller of a
		 * detached run hears of the failure only once that is so */
		pod_release(&p, false, *exit_code);
		if (report_fd >= 0)
			send_report(report_fd, *exit_code, err->msg);
		return -1;
	}
	if (report_fd >= 0)
		send_report(report_fd, 0, NULL);

	int status = RT_EXIT_RUNTIME;
	if (pod_wait(&p, &status, err) < 0) {
		*exit_code = RT_EXIT_RUNTIME;
		pod_release(&p, o->detach, *exit_code);
		return -1;
	}
	uint64_t oom_kills = status == 128 + SIGKILL ? rt_cgroup_oom_kills(&p.cg) : 0;
	hm_debug("pod %s: exited with status %d", o->name, status);
	pod_release(&p, o->detach, status);
	*exit_code = status;
	if (oom_kills > 0) {
		/* not an error of trace-pod's: the pod ran and its status is reported */
		fprintf(
		    stderr,
		    "trace-pod: pod %s was killed by the OOM killer (memory limit %llu bytes)\n",
		    o->name, (unsigned long long)o->limits.memory_max);
		*exit_code = 128 + SIGKILL;
	}
	return 0;
}

/* The monitor of a detached pod: its own session, stdio on /dev/null until the log
 * exists, no inherited fds but the report pipe (a caller's `$(trace-pod run -d ...)`
 * must see EOF as soon as the parent exits). */
static int monitor_main(const struct rt_run_opts *o, int report_fd)
{
	if (report_fd > 3)
		close_range(3, report_fd - 1, 0);
	close_range(report_fd + 1, ~0U, 0);
	struct hm_err err = {0};
	int exit_code = RT_EXIT_RUNTIME;
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
	    dup2(null, STDERR_FILENO) < 0) {
		hm_err_errno(&err, "redirect to /dev/null");
		send_report(report_fd, exit_code, err.msg);
		return exit_code;
	}
	if (null > STDERR_FILENO)
		close(null);
	if (setsid() < 0)
		hm_debug("setsid: %s", strerror(errno));
	if (chdir("/") < 0)
		hm_debug("chdir /: %s", strerror(errno));
	if (pod_lifecycle(o, report_fd, &exit_code, &err) < 0)
		hm_error("%s", err.msg);
	close(report_fd);
	return exit_code;
}

static int run_detached(const struct rt_run_opts *o, struct rt_run_result *res, struct hm_err *err)
{
	int pipefd[2];
	res->exit_code = RT_EXIT_RUNTIME;
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	sigset_t old;
	/* blocked before the fork so the monitor never has a window without them */
	if (block_signals(&old, err) < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(pipefd[0]);
		close(pipefd[1]);
		return hm_err_set(err, e, "fork");
	}
	if (pid == 0) {
		close(pipefd[0]);
		res->monitor = true;
		res->exit_code = monitor_main(o, pipefd[1]);
		return 0;
	}
	/* the caller stays interruptible while it waits for the start */
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(pipefd[1]);
	hm_cleanup_close int rfd = pipefd[0];
	struct start_report rep;
	ssize_t n = hm_read_all(rfd, &rep, sizeof(rep));
	if (n != (ssize_t)sizeof(rep)) {
		waitpid(pid, NULL, 0);
		return hm_err_set(err, 0, "pod %s: monitor exited before the pod started", o->name);
	}
	rep.msg[sizeof(rep.msg) - 1] = '\0';
	if (rep.code != 0) {
		waitpid(pid, NULL, 0);
		res->exit_code = rep.code;
		return hm_err_set(err, 0, "%s", rep.msg);
	}
	res->exit_code = 0;
	return 0;
}

int rt_pod_run(const struct rt_run_opts *o, struct rt_run_result *res, struct hm_err *err)
{
	res->monitor = false;
	if (o->detach)
		return run_detached(o, res, err);
	sigset_t old;
	if (block_signals(&old, err) < 0) {
		res->exit_code = RT_EXIT_RUNTIME;
		return -1;
	}
	int rc = pod_lifecycle(o, -1, &res->exit_code, err);
	/* signals that came after PID 1 exited were for a pod that is gone: drop them */
	sigset_t set;
	forwarded_signals(&set);
	struct timespec zero = {0};
	while (sigtimedwait(&set, NULL, &zero) > 0)
		;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return rc;
}
