/* The target's environment, from /proc/PID/environ. The file is read by pid, so the
 * target's pidfd is checked afterwards: if the process exited meanwhile, the pid may name
 * another process already and what was read is thrown away. */
#include <fcntl.h>
#include <string.h>

#include "agent/internal.h"

void agent_env_release(struct agent_env *e)
{
	free(e->buf);
	free(e->vars);
	memset(e, 0, sizeof(*e));
}

/* A trace-pod started with --init has hermit-init as PID 1, whose environment is not
 * the pod's (it never execs): the pod's command, init's first child, has it. */
static pid_t env_source_pid(pid_t pid)
{
	char path[64], comm[32];
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, comm, sizeof(comm) - 1);
	if (n <= 0)
		return pid;
	comm[n] = '\0';
	if (strcmp(comm, "hermit-init\n"))
		return pid;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	hm_cleanup_close int cfd = open(path, O_RDONLY | O_CLOEXEC);
	char list[64];
	n = cfd < 0 ? -1 : read(cfd, list, sizeof(list) - 1);
	if (n <= 0)
		return pid;
	list[n] = '\0';
	long child = strtol(list, NULL, 10);
	return child > 0 ? (pid_t)child : pid;
}

int agent_env_read(const struct agent_target *t, struct agent_env *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/environ", (int)env_source_pid(agent_target_pid(t)));
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "open %s", path);
	hm_cleanup_free char *buf = NULL;
	size_t len = 0;
	/* hm_read_fd NUL-terminates: the last entry may lack its NUL if the process
	 * rewrote it */
	if (hm_read_fd(fd, 16384, AGENT_ENV_MAX, path, &buf, &len, err) < 0) {
		if (err && err->code == EFBIG)
			return hm_err_set(err, E2BIG, "%s: environment over %u bytes", path,
					  AGENT_ENV_MAX);
		return -1;
	}
	if (!agent_target_alive(t))
		return hm_err_set(err, ESRCH, "%s exited", agent_target_describe(t));

	size_t count = 0;
	for (size_t i = 0; i < len; i++)
		if (buf[i] == '\0')
			count++;
	count++;
	const char **vars = calloc(count, sizeof(*vars));
	if (!vars)
		return hm_err_set(err, ENOMEM, "read %s", path);
	uint32_t n = 0;
	for (size_t off = 0; off < len;) {
		const char *entry = buf + off;
		size_t elen = strlen(entry);
		off += elen + 1;
		/* A process may scribble anything over its environment block: send only what
		 * the protocol can carry and a program could have got from execve. */
		if (elen == 0 || elen > PROTO_ENV_ENTRY_MAX)
			continue;
		vars[n++] = entry;
	}
	out->buf = hm_steal_ptr(&buf);
	out->vars = vars;
	out->count = n;
	return 0;
}
