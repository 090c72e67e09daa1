/* pod_escape: the attacks of a process in a pod on its host, one per subcommand, for
 * the hardening tests (trace-pod deploys it into a rootfs). Each prints one line, "NAME
 * ok" when the attack's syscall succeeded or "NAME errno=E (text)" when it was refused,
 * and exits 0 on success, 1 on refusal, 2 on a usage error.
 *
 *   tiocsti TEXT          type TEXT into the terminal on fd 0 (TIOCSTI)
 *   tiocsti-hi TEXT       the same with bit 32 of the request set (the kernel ignores it)
 *   session               "sid=S pid=P tty=0|1": our session and whether fd 0 is a tty
 *   unshare-user          unshare(CLONE_NEWUSER)
 *   clone-user            clone(CLONE_NEWUSER)
 *   clone3                clone3() with no flags
 *   keyctl                keyctl(KEYCTL_GET_KEYRING_ID, session keyring)
 *   io-uring              io_uring_setup(1)
 *   mount                 mount a tmpfs on /mnt
 *   personality VALUE     personality(VALUE), VALUE in hex
 *   vsock                 socket(AF_VSOCK), which no network namespace confines
 *   raise-limit CONTROLLER FILE VALUE DIR
 *                         the attack: unshare(user|mount|cgroup), map root,
 *                         mount the cgroup v1 CONTROLLER on DIR and write VALUE to
 *                         FILE of our cgroup (the namespace's root), e.g.
 *                         "pids pids.max max" or "memory memory.limit_in_bytes -1" */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int report(const char *what, long rc)
{
	if (rc < 0) {
		int e = errno;
		printf("%s errno=%d (%s)\n", what, e, strerror(e));
		return 1;
	}
	printf("%s ok\n", what);
	return 0;
}

static int type_text(const char *what, const char *text, unsigned long request)
{
	for (const char *c = text; *c; c++)
		if (syscall(SYS_ioctl, 0, request, c) < 0)
			return report(what, -1);
	/* "\n" in the argument types a newline, so the shell runs the line */
	return report(what, syscall(SYS_ioctl, 0, request, "\n"));
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	int e = errno;
	close(fd);
	errno = e;
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

static int raise_limit(char **args)
{
	const char *controller = args[0], *file = args[1], *value = args[2], *dir = args[3];
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) < 0)
		return report("raise-limit unshare", -1);
	/* root of the pod stays root in the new user namespace */
	if (write_file("/proc/self/setgroups", "deny") < 0 ||
	    write_file("/proc/self/uid_map", "0 0 1") < 0 ||
	    write_file("/proc/self/gid_map", "0 0 1") < 0)
		return report("raise-limit map", -1);
	if (mount("none", dir, "cgroup", 0, controller) < 0)
		return report("raise-limit mount", -1);
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	return report("raise-limit write", write_file(path, value));
}

static int child_fn(void *arg)
{
	(void)arg;
	_exit(0);
}

static int clone_user(void)
{
	static char stack[64 * 1024];
	pid_t pid = clone(child_fn, stack + sizeof(stack), CLONE_NEWUSER | SIGCHLD, NULL);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	return report("clone-user", pid);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc < 2) {
		fprintf(stderr, "usage: pod_escape SUBCOMMAND [ARG] (see the source)\n");
		return 2;
	}
	const char *cmd = argv[1], *arg = argc > 2 ? argv[2] : "";
	if (!strcmp(cmd, "tiocsti"))
		return type_text(cmd, arg, TIOCSTI);
	if (!strcmp(cmd, "tiocsti-hi"))
		return type_text(cmd, arg, (unsigned long)TIOCSTI | (1UL << 32));
	if (!strcmp(cmd, "session")) {
		printf("sid=%d pid=%d tty=%d\n", (int)getsid(0), (int)getpid(), isatty(0));
		return 0;
	}
	if (!strcmp(cmd, "unshare-user"))
		return report(cmd, unshare(CLONE_NEWUSER));
	if (!strcmp(cmd, "clone-user"))
		return clone_user();
	if (!strcmp(cmd, "clone3")) {
		struct {
			unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack,
			    stack_size, tls;
		} args = {.exit_signal = SIGCHLD};
		long pid = syscall(SYS_clone3, &args, sizeof(args));
		if (pid == 0)
			_exit(0);
		if (pid > 0)
			waitpid(pid, NULL, 0);
		return report(cmd, pid);
	}
	if (!strcmp(cmd, "keyctl"))
		/* KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3), create: 1 */
		return report(cmd, syscall(SYS_keyctl, 0, -3, 1));
	if (!strcmp(cmd, "io-uring")) {
		char params[120] = {0};
		return report(cmd, syscall(SYS_io_uring_setup, 1, params));
	}
	if (!strcmp(cmd, "mount"))
		return report(cmd, mount("none", "/mnt", "tmpfs", 0, NULL));
	if (!strcmp(cmd, "personality"))
		return report(cmd, syscall(SYS_personality, strtoul(arg, NULL, 16)));
	if (!strcmp(cmd, "vsock"))
		return report(cmd, socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0));
	if (!strcmp(cmd, "raise-limit") && argc == 6)
		return raise_limit(argv + 2);
	fprintf(stderr, "pod_escape: unknown subcommand '%s'\n", cmd);
	return 2;
}
