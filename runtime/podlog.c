/* The log of a detached pod: the pod writes into a pipe, its monitor moves that into
 * RT_STATE_DIR/NAME/log and, once the file would pass its cap, renames it to log.1
 * (replacing the older one) and starts a new one. A pod that writes without pause thus
 * keeps at most two caps of output on disk, the latest, and is slowed to the speed of
 * the monitor instead of filling the host's /run. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/internal.h"

#define RELAY_CHUNK 65536
/* Chunks per call: a pod that writes as fast as we can move its output must not keep
 * the monitor from its other work (signals to forward, the pod's exit). */
#define RELAY_CHUNKS_PER_CALL 16

static void log_paths(const char *name, char *cur, char *old)
{
	rt_state_path(name, "log", cur, PATH_MAX);
	rt_state_path(name, "log.1", old, PATH_MAX);
}

/* The monitor's own messages (stdout, stderr) follow the current file. */
static int log_open_current(struct rt_log *log, int extra_flags, struct hm_err *err)
{
	char cur[PATH_MAX], old[PATH_MAX];
	log_paths(log->name, cur, old);
	hm_cleanup_close int fd =
	    open(cur, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | extra_flags, 0640);
	if (fd < 0)
		return hm_err_errno(err, "open %s", cur);
	if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
		return hm_err_errno(err, "redirect output to %s", cur);
	hm_closep(&log->fd);
	log->fd = hm_steal_fd(&fd);
	return 0;
}

int rt_log_open(struct rt_log *log, const char *name, uint64_t max, struct hm_err *err)
{
	log->fd = -1;
	log->max = max ? max : RT_LOG_MAX_DEFAULT;
	snprintf(log->name, sizeof(log->name), "%s", name);
	return log_open_current(log, 0, err);
}

void rt_log_close(struct rt_log *log)
{
	hm_closep(&log->fd);
}

static int log_rotate(struct rt_log *log, struct hm_err *err)
{
	char cur[PATH_MAX], old[PATH_MAX];
	log_paths(log->name, cur, old);
	if (rename(cur, old) < 0)
		return hm_err_errno(err, "rotate %s", cur);
	return log_open_current(log, O_TRUNC, err);
}

/* Append, rotating when the data does not fit: after the last line end that fits, or
 * before a line that does not fit; only a line longer than the cap is cut. */
static int log_append(struct rt_log *log, const char *buf, size_t len, struct hm_err *err)
{
	while (len > 0) {
		struct stat st;
		if (fstat(log->fd, &st) < 0)
			return hm_err_errno(err, "stat log of pod %s", log->name);
		uint64_t size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
		uint64_t room = size < log->max ? log->max - size : 0;
		size_t chunk = len;
		if (len > room) {
			const char *nl = room ? memrchr(buf, '\n', room) : NULL;
			if (nl)
				chunk = (size_t)(nl - buf + 1);
			else
				chunk = size == 0 ? (size_t)room : 0;
		}
		if (chunk > 0 && hm_write_all(log->fd, buf, chunk) < 0)
			return hm_err_errno(err, "write log of pod %s", log->name);
		buf += chunk;
		len -= chunk;
		if (len > 0 && log_rotate(log, err) < 0)
			return -1;
	}
	return 0;
}

int rt_log_relay(struct rt_log *log, int pipe_fd, bool *eof, struct hm_err *err)
{
	char buf[RELAY_CHUNK];
	int rc = 0;
	*eof = false;
	for (int chunks = 0; chunks < RELAY_CHUNKS_PER_CALL;) {
		ssize_t n = read(pipe_fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return rc;
		if (n <= 0) {
			*eof = true;
			return n < 0 ? hm_err_errno(err, "read output of pod %s", log->name) : rc;
		}
		/* a failed write drops this chunk; the pipe is drained all the same */
		if (rc == 0 && log_append(log, buf, (size_t)n, err) < 0)
			rc = -1;
		chunks++;
	}
	return rc;
}

static int copy_to(int in, int out, const char *path, struct hm_err *err)
{
	char buf[RELAY_CHUNK];
	for (;;) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return hm_err_errno(err, "read %s", path);
		if (n == 0)
			return 0;
		if (hm_write_all(out, buf, n) < 0)
			return hm_err_errno(err, "write");
	}
}

int rt_log_print(const char *name, int out_fd, struct hm_err *err)
{
	char cur[PATH_MAX], old[PATH_MAX];
	log_paths(name, cur, old);
	/* older part first; opened before the current one, so a rotation in between
	 * repeats a part rather than losing one */
	hm_cleanup_close int old_fd = open(old, O_RDONLY | O_CLOEXEC);
	if (old_fd < 0 && errno != ENOENT)
		return hm_err_errno(err, "%s", old);
	hm_cleanup_close int cur_fd = open(cur, O_RDONLY | O_CLOEXEC);
	if (cur_fd < 0) {
		if (errno == ENOENT)
			return hm_err_plain(
			    err, ENOENT, "pod %s has no log (only detached pods, run -d, have one)",
			    name);
		return hm_err_errno(err, "%s", cur);
	}
	if (old_fd >= 0 && copy_to(old_fd, out_fd, old, err) < 0)
		return -1;
	return copy_to(cur_fd, out_fd, cur, err);
}
