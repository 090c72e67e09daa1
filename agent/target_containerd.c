/* container/ID through containerd's task state: the runc shim v2 writes the container's
 * init pid to STATE/<namespace>/<ID>/init.pid. That file is the host's, but the ID comes
 * from a client: it is checked to be one plain path element, and the file is opened
 * with openat2 below STATE without symlinks, read bounded and parsed as digits only.
 * The pid found is only a candidate: target.c checks its cgroup before serving it. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/internal.h"

#define PID_MAX_LIMIT 4194304 /* the kernel's ceiling for pid_max */
#define PID_FILE_MAX 32	      /* "4194304\n" with room; a bigger file is not a pid */
#define NAMESPACES_MAX 64     /* directories of the state root looked into, at most */

bool agent_container_id_ok(const char *id)
{
	size_t n = strnlen(id, AGENT_CONTAINER_ID_MAX + 1);
	if (n == 0 || n > AGENT_CONTAINER_ID_MAX || strstr(id, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
		if (!ok)
			return false;
	}
	/* "." alone names the directory itself */
	return strcmp(id, ".") != 0;
}

int agent_parse_pid_file(const char *text, size_t len, pid_t *pid)
{
	if (len > 0 && text[len - 1] == '\n')
		len--;
	if (len == 0 || len > 7 || text[0] == '0')
		return -1;
	uint32_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		v = v * 10 + (uint32_t)(text[i] - '0');
	}
	if (v > PID_MAX_LIMIT)
		return -1;
	*pid = (pid_t)v;
	return 0;
}

/* STATE/ns/id/init.pid below root_fd, or < 0: ENOENT when there is no such task. */
static int read_task_pid(int root_fd, const char *ns, const char *id, pid_t *pid,
			 struct hm_err *err)
{
	char path[2 * NAME_MAX + 16];
	snprintf(path, sizeof(path), "%s/%s/init.pid", ns, id);
	/* no symlink anywhere (a planted one could point at any file of the host), no
	 * mount crossed, nothing above root_fd; O_PATH first, so that nothing but a
	 * regular file (no fifo, no device) is ever really opened */
	hm_cleanup_close int path_fd = hm_openat2(
	    root_fd, path, O_PATH, 0,
	    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, err);
	if (path_fd < 0)
		return -1;
	struct stat st;
	if (fstat(path_fd, &st) < 0)
		return hm_err_errno(err, "%s", path);
	if (!S_ISREG(st.st_mode) || st.st_size > PID_FILE_MAX)
		return hm_err_plain(err, EINVAL, "%s: not a pid file (a %s of %lld bytes)", path,
				    S_ISREG(st.st_mode) ? "file" : "non-regular file",
				    (long long)st.st_size);
	hm_cleanup_close int fd = agent_file_reopen(path_fd, O_RDONLY | O_NONBLOCK, err);
	if (fd < 0)
		return -1;
	char buf[PID_FILE_MAX + 1];
	ssize_t n = hm_read_all(fd, buf, sizeof(buf));
	if (n < 0)
		return hm_err_errno(err, "read %s", path);
	if (agent_parse_pid_file(buf, (size_t)n, pid) < 0)
		return hm_err_plain(err, EINVAL,
				    "%s: not a pid (%zd bytes that are not 1 to 7 "
				    "digits)",
				    path, n);
	return 0;
}

int agent_containerd_task_pid(const char *state_dir, const char *id, pid_t *pid, char *ns,
			      size_t ns_len, struct hm_err *err)
{
	if (!agent_container_id_ok(id))
		return hm_err_plain(err, EINVAL,
				    "container id '%s': expected 1 to %d of [A-Za-z0-9_.-], "
				    "never '/' or '..'",
				    id, AGENT_CONTAINER_ID_MAX);
	hm_cleanup_close int root_fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		return hm_err_errno(err, "containerd task state %s", state_dir);
	/* the kubelet's namespace first: on a node that is where pods' containers are */
	static const char k8s_ns[] = "k8s.io";
	struct hm_err why = {0};
	if (read_task_pid(root_fd, k8s_ns, id, pid, &why) == 0) {
		snprintf(ns, ns_len, "%s", k8s_ns);
		return 0;
	}
	if (why.code != ENOENT) {
		*err = why;
		return -1;
	}
	int dir_fd = fcntl(root_fd, F_DUPFD_CLOEXEC, 0);
	DIR *d = dir_fd < 0 ? NULL : fdopendir(dir_fd);
	if (!d) {
		hm_err_errno(err, "read %s", state_dir);
		if (dir_fd >= 0)
			close(dir_fd);
		return -1;
	}
	int rc = -1;
	struct hm_err found_bad = {0}; /* a task file that is there but not right */
	struct dirent *de;
	for (unsigned seen = 0; (de = readdir(d)) && seen < NAMESPACES_MAX;) {
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
			continue;
		if (!agent_container_id_ok(de->d_name) || !strcmp(de->d_name, k8s_ns))
			continue;
		seen++;
		struct hm_err e = {0};
		if (read_task_pid(root_fd, de->d_name, id, pid, &e) == 0) {
			snprintf(ns, ns_len, "%s", de->d_name);
			rc = 0;
			break;
		}
		if (e.code != ENOENT) {
			found_bad = e;
			break;
		}
	}
	closedir(d);
	if (rc < 0 && found_bad.code)
		*err = found_bad;
	else if (rc < 0)
		hm_err_plain(err, ENOENT, "no task %s in %s", id, state_dir);
	return rc;
}
