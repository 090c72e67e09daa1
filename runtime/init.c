/* --init: a tiny PID 1 for the pod (the pod's first process itself, no extra binary).
 * A command run as PID 1 gets no default signal actions and must reap orphans; this
 * init does both for it, like tini. */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "runtime/internal.h"

static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

/* Hide the host's trace-pod command line (rootfs path, flags) and environment (the
 * host user's variables) from the pod: overwrite our argv and env areas, whose bounds
 * /proc/self/stat gives (fields 48-51). The agent reads a pod's env from init's child. */
static void hide_host_cmdline_and_env(void)
{
	char buf[2048];
	hm_cleanup_close int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = '\0';
	/* fields after the command name, which may contain spaces, start after the last ')' */
	char *p = strrchr(buf, ')');
	if (!p)
		return;
	unsigned long area[4] = {0}; /* arg_start, arg_end, env_start, env_end */
	int field = 2;
	for (char *tok = strtok(p + 1, " "); tok && field < 51; tok = strtok(NULL, " ")) {
		field++;
		if (field >= 48 && field <= 51)
			area[field - 48] = strtoul(tok, NULL, 10);
	}
	clearenv();
	if (area[2] && area[3] > area[2])
		memset((char *)area[2], 0, area[3] - area[2]);
	if (!area[0] || area[1] <= area[0])
		return;
	memset((char *)area[0], 0, area[1] - area[0]);
	snprintf((char *)area[0], area[1] - area[0], "hermit-init");
}

static int status_to_exit_code(int status)
{
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void rt_init_run(char **argv, char **env, int error_fd)
{
	sigset_t waited;
	sigemptyset(&waited);
	sigaddset(&waited, SIGCHLD);
	for (size_t i = 0; i < HM_ARRAY_SIZE(forwarded_signals); i++)
		sigaddset(&waited, forwarded_signals[i]);
	/* The kernel drops a signal to a namespace's PID 1 whose action is SIG_DFL, unless
	 * it is blocked: blocked, it stays pending for sigwaitinfo. Blocking before fork
	 * also means no SIGCHLD can be missed. */
	sigprocmask(SIG_BLOCK, &waited, NULL);

	pid_t child = fork();
	if (child < 0) {
		struct hm_err err;
		hm_err_errno(&err, "init: fork");
		rt_child_fail(error_fd, RT_STAGE_SETUP, &err);
	}
	if (child == 0) {
		rt_child_reset_signals();
		rt_child_exec(argv, env, error_fd);
	}
	/* the command alone holds the error pipe now: the runtime sees EOF at its exec */
	close(error_fd);
	prctl(PR_SET_NAME, "hermit-init", 0, 0, 0);
	/* Non-dumpable: the pod's processes cannot open /proc/1/exe (the host's trace-pod
	 * binary, CVE-2019-5736) nor ptrace or read init's memory. Set after fork: the
	 * command's own exec makes it dumpable again as usual. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	hide_host_cmdline_and_env();

	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&waited, &info);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(child, sig);
			continue;
		}
		/* one SIGCHLD may stand for many exits */
		int status;
		pid_t pid;
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			if (pid == child)
				_exit(status_to_exit_code(status));
	}
}
