/* Targets: pod/NAME, pid/N or container/ID resolved to a live process held by a pidfd,
 * its root directory, and a worker thread inside its network namespace. Sessions that
 * name the same process share one agent_target (refcounted, in a registry). */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/nsfs.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "agent/internal.h"
#include "runtime/runtime.h"

#define CONTAINER_ID_MIN 12 /* docker's short ids; shorter ones match too much */
#define CONTAINER_ID_MAX 64

struct socket_request {
	int domain, type, protocol;
	int result; /* fd, or -errno */
	bool done;
	struct socket_request *next;
};

struct agent_target {
	struct agent_target *next; /* registry */
	unsigned refs;		   /* under registry_lock */
	pid_t pid;
	int pidfd;
	int root_fd;
	char description[PROTO_NAME_MAX + 32];

	pthread_t worker;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* new request, request done, worker state */
	struct socket_request *queue, *queue_tail;
	bool stopping;
	int worker_state; /* 0 starting, 1 ready, < 0 -errno of setns */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct agent_target *registry;

static int pidfd_open(pid_t pid, unsigned flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

static bool pidfd_alive(int pidfd)
{
	return hm_poll_fd(pidfd, POLLIN, 0) == 0; /* a passed deadline: look once */
}

bool agent_target_alive(const struct agent_target *t)
{
	return pidfd_alive(t->pidfd);
}

pid_t agent_target_pid(const struct agent_target *t)
{
	return t->pid;
}

int agent_target_pidfd(const struct agent_target *t)
{
	return t->pidfd;
}

int agent_target_root_fd(const struct agent_target *t)
{
	return t->root_fd;
}

const char *agent_target_describe(const struct agent_target *t)
{
	return t->description;
}

/* ---- the worker: one thread per target, inside the target's netns ---- */

static void *worker_main(void *arg)
{
	struct agent_target *t = arg;
	/* only this thread changes namespace: the rest of the agent stays in the host's */
	int state = setns(t->pidfd, CLONE_NEWNET) < 0 ? -errno : 1;
	pthread_mutex_lock(&t->lock);
	t->worker_state = state;
	pthread_cond_broadcast(&t->cond);
	while (state > 0) {
		while (!t->queue && !t->stopping)
			pthread_cond_wait(&t->cond, &t->lock);
		if (!t->queue)
			break;
		struct socket_request *req = t->queue;
		t->queue = req->next;
		if (!t->queue)
			t->queue_tail = NULL;
		pthread_mutex_unlock(&t->lock);
		int fd = socket(req->domain, req->type | SOCK_CLOEXEC, req->protocol);
		int result = fd < 0 ? -errno : fd;
		pthread_mutex_lock(&t->lock);
		req->result = result;
		req->done = true;
		pthread_cond_broadcast(&t->cond);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

int agent_target_socket(struct agent_target *t, int domain, int type, int protocol,
			struct hm_err *err)
{
	struct socket_request req = {.domain = domain, .type = type, .protocol = protocol};
	pthread_mutex_lock(&t->lock);
	if (t->stopping || t->worker_state <= 0) {
		pthread_mutex_unlock(&t->lock);
		return hm_err_set(err, ESRCH, "%s: target worker stopped", t->description);
	}
	if (t->queue_tail)
		t->queue_tail->next = &req;
	else
		t->queue = &req;
	t->queue_tail = &req;
	pthread_cond_broadcast(&t->cond);
	while (!req.done)
		pthread_cond_wait(&t->cond, &t->lock);
	pthread_mutex_unlock(&t->lock);
	if (req.result < 0)
		return hm_err_set(err, -req.result, "socket in the netns of %s", t->description);
	return req.result;
}

static void target_free(struct agent_target *t)
{
	if (t->worker_state != 0) {
		pthread_mutex_lock(&t->lock);
		t->stopping = true;
		pthread_cond_broadcast(&t->cond);
		pthread_mutex_unlock(&t->lock);
		pthread_join(t->worker, NULL);
	}
	pthread_mutex_destroy(&t->lock);
	pthread_cond_destroy(&t->cond);
	if (t->pidfd >= 0)
		close(t->pidfd);
	if (t->root_fd >= 0)
		close(t->root_fd);
	free(t);
}

void agent_target_get(struct agent_target *t)
{
	pthread_mutex_lock(&registry_lock);
	t->refs++;
	pthread_mutex_unlock(&registry_lock);
}

void agent_target_put(struct agent_target *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&registry_lock);
	bool last = --t->refs == 0;
	if (last) {
		for (struct agent_target **pp = &registry; *pp; pp = &(*pp)->next) {
			if (*pp == t) {
				*pp = t->next;
				break;
			}
		}
	}
	pthread_mutex_unlock(&registry_lock);
	if (last) {
		hm_debug("target %s released", t->description);
		target_free(t);
	}
}

/* ---- resolution: target string -> pid ---- */

static int resolve_pod(const char *name, pid_t *pid, struct hm_err *err)
{
	struct rt_pod_state st;
	if (rt_pod_state_load(name, &st, err) < 0)
		return -1;
	if (!rt_pod_is_running(&st))
		return hm_err_set(err, ESRCH, "pod %s is not running (status %s)", name, st.status);
	*pid = st.pid;
	return 0;
}

static bool is_hex(int c)
{
	return isdigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Does text start with the (lower-case) id, abbreviated or whole, followed by suffix
 * and nothing else? A full 64-digit id must match whole; an abbreviated one (>= 12
 * digits) may be the start of a longer id, unless whole is asked for. */
static bool id_then(const char *text, size_t len, const char *id, size_t idlen, bool whole,
		    const char *suffix)
{
	if (len < idlen || strncasecmp(text, id, idlen))
		return false;
	size_t n = idlen;
	while (!whole && n < len && n < CONTAINER_ID_MAX && is_hex((unsigned char)text[n]))
		n++; /* an abbreviated id: the rest of the full id */
	size_t slen = strlen(suffix);
	return len - n == slen && !memcmp(text + n, suffix, slen);
}

static bool element_is(const char *el, size_t len, const char *name)
{
	return strlen(name) == len && !memcmp(el, name, len);
}

/* Does a cgroup path name container id the way a container runtime does? As a path
 * element of its own under "docker" or a "kubepods..." element ("/docker/ID",
 * "/kubepods/besteffort/podUID/ID"), or behind a runtime's prefix: "docker-ID.scope",
 * "cri-containerd-ID.scope", "crio-ID.scope", "libpod-ID.scope". Any user can make a
 * cgroup named so (systemd-run --user, delegation): the namespace checks of
 * agent_target_check_container decide, this only finds the candidates. */
static bool cgroup_path_has_id(const char *path, const char *id, size_t idlen, bool whole)
{
	static const char *const prefixes[] = {"docker-", "cri-containerd-", "crio-", "libpod-"};
	bool under_runtime = false, prev_docker = false;
	for (const char *el = path; *el;) {
		while (*el == '/')
			el++;
		size_t len = strcspn(el, "/\n");
		if (!len)
			break;
		for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
			size_t plen = strlen(prefixes[i]);
			if (len > plen && !memcmp(el, prefixes[i], plen) &&
			    (id_then(el + plen, len - plen, id, idlen, whole, ".scope") ||
			     id_then(el + plen, len - plen, id, idlen, whole, "")))
				return true;
		}
		if ((prev_docker || under_runtime) && id_then(el, len, id, idlen, whole, ""))
			return true;
		prev_docker = element_is(el, len, "docker");
		if (len >= 8 && !memcmp(el, "kubepods", 8))
			under_runtime = true;
		el += len;
		if (*el == '\n')
			break;
	}
	return false;
}

static bool pid_in_container(int proc_fd, const char *pid_name, const char *id, size_t idlen,
			     bool whole)
{
	char path[64];
	snprintf(path, sizeof(path), "%s/cgroup", pid_name);
	hm_cleanup_close int fd = openat(proc_fd, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	/* cgroup files are small; a bounded read is plenty and a huge one is nobody's */
	char buf[16384];
	ssize_t n = hm_read_all(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* "hierarchy-id:controllers:path": only the path may carry the id */
		char *path_part = strchr(line, ':');
		path_part = path_part ? strchr(path_part + 1, ':') : NULL;
		if (path_part && cgroup_path_has_id(path_part + 1, id, idlen, whole))
			return true;
	}
	return false;
}

/* Is namespace kind of pid the agent's own? */
static int same_namespace(pid_t pid, const char *kind, bool *same, struct hm_err *err)
{
	char path[64];
	struct stat mine, theirs;
	snprintf(path, sizeof(path), "/proc/self/ns/%s", kind);
	if (stat(path, &mine) < 0)
		return hm_err_errno(err, "stat %s", path);
	snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, kind);
	if (stat(path, &theirs) < 0)
		return hm_err_errno(err, "stat %s", path);
	*same = mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino;
	return 0;
}

/* Is pid (pinned by a pidfd) really pod name's PID 1, not a process that got its pid
 * after the pod's PID 1 was reaped (the state says running until teardown ends)? It is
 * in a pid namespace of its own and in the pod's cgroup, "/hermit/NAME" (trace-pod's
 * layout, runtime/cgroup.c), as the agent sees it. */
static int check_pod_process(pid_t pid, const char *name, struct hm_err *err)
{
	bool same;
	if (same_namespace(pid, "pid", &same, err) < 0)
		return -1;
	if (same)
		return hm_err_set(err, ESRCH,
				  "pod/%s: pid %d is in the host's pid namespace: "
				  "not the pod's (exited?)",
				  name, (int)pid);
	char path[64], want[PROTO_NAME_MAX + 16]; /* name is at most a target value */
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	snprintf(want, sizeof(want), "/hermit/%s", name);
	hm_cleanup_free char *text = NULL;
	size_t len;
	if (hm_read_file(path, &text, &len, err) < 0)
		return -1;
	size_t wlen = strlen(want);
	for (const char *p = text; (p = strstr(p, want)); p++) {
		char after = p[wlen];
		if ((p == text || p[-1] == ':') && (after == '\n' || after == '\0' || after == '/'))
			return 0;
	}
	return hm_err_set(err, ESRCH, "pod/%s: pid %d is not in the pod's cgroup %s (exited?)",
			  name, (int)pid, want);
}

/* Pin pid with a pidfd, then check it is (still) in a cgroup of container id: a pid
 * read before the pidfd was opened may have been recycled since. The pidfd, or < 0. */
static int pin_container_pid(int proc_fd, pid_t pid, const char *id, size_t idlen, bool whole)
{
	int pidfd = pidfd_open(pid, 0);
	if (pidfd < 0)
		return -1;
	char pid_name[16];
	snprintf(pid_name, sizeof(pid_name), "%d", (int)pid);
	if (!pid_in_container(proc_fd, pid_name, id, idlen, whole) || !pidfd_alive(pidfd)) {
		close(pidfd);
		return -1;
	}
	return pidfd;
}

static long long micros_since(uint64_t t0_ns)
{
	return (long long)((hm_now_ns() - t0_ns) / 1000);
}

/* The pid containerd's task state gives for id, pinned and verified; < 0 (why logged)
 * when there is none to trust, and the caller falls back to the cgroup scan. */
static int container_by_task_state(int proc_fd, const char *state, const char *id, pid_t *pid)
{
	uint64_t t0 = hm_now_ns();
	struct hm_err err = {0};
	char ns[NAME_MAX + 1];
	pid_t candidate;
	if (agent_containerd_task_pid(state, id, &candidate, ns, sizeof(ns), &err) < 0) {
		if (err.code == ENOENT)
			hm_debug("container/%s: not in containerd's task state (%s)", id, err.msg);
		else
			hm_warn("container/%s: containerd's task state: %s; falling back to the "
				"cgroup scan",
				id, err.msg);
		return -1;
	}
	/* the task state is only as trustworthy as whoever could write it: the process
	 * must be in the container's cgroup, under the whole id */
	int pidfd = pin_container_pid(proc_fd, candidate, id, strlen(id), true);
	if (pidfd < 0) {
		hm_warn("container/%s: containerd's task state (namespace %s) names pid %d, "
			"which is not a live process in a cgroup of the container; falling back "
			"to the cgroup scan",
			id, ns, (int)candidate);
		return -1;
	}
	hm_debug("container/%s: pid %d from containerd's task state (namespace %s) in %lld us", id,
		 (int)candidate, ns, micros_since(t0));
	*pid = candidate;
	return pidfd;
}

static int container_by_cgroup_scan(int proc_fd, const char *id, pid_t *pid, struct hm_err *err)
{
	uint64_t t0 = hm_now_ns();
	size_t idlen = strlen(id);
	if (idlen < CONTAINER_ID_MIN || idlen > CONTAINER_ID_MAX)
		return hm_err_set(err, EINVAL, "container id '%s': expected %d to %d hex digits",
				  id, CONTAINER_ID_MIN, CONTAINER_ID_MAX);
	for (size_t i = 0; i < idlen; i++)
		if (!is_hex((unsigned char)id[i]))
			return hm_err_set(err, EINVAL, "container id '%s': not hexadecimal", id);
	char lower[CONTAINER_ID_MAX + 1];
	for (size_t i = 0; i <= idlen; i++)
		lower[i] = (char)tolower((unsigned char)id[i]);

	int dir_fd = fcntl(proc_fd, F_DUPFD_CLOEXEC, 0);
	DIR *d = dir_fd < 0 ? NULL : fdopendir(dir_fd);
	if (!d) {
		hm_err_errno(err, "read /proc");
		if (dir_fd >= 0)
			close(dir_fd);
		return -1;
	}
	pid_t best = 0;
	unsigned scanned = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t n;
		if (hm_parse_u64(de->d_name, &n) < 0 || n == 0 || n > INT32_MAX)
			continue;
		scanned++;
		if (best && (pid_t)n >= best)
			continue;
		if (pid_in_container(proc_fd, de->d_name, lower, idlen, false))
			best = (pid_t)n;
	}
	closedir(d);
	if (!best)
		return hm_err_set(err, ESRCH, "no process in a cgroup of container %s", id);
	int pidfd = pin_container_pid(proc_fd, best, lower, idlen, false);
	if (pidfd < 0)
		return hm_err_set(err, ESRCH, "container/%s (pid %d) exited while being resolved",
				  id, (int)best);
	hm_debug("container/%s: pid %d by a cgroup scan of /proc (%u processes) in %lld us", id,
		 (int)best, scanned, micros_since(t0));
	*pid = best;
	return pidfd;
}

/* container/ID to a pid pinned by the returned pidfd: containerd's task state first
 * when there is one, else (or when it names no process of the container) the cgroup
 * scan of /proc. */
static int resolve_container(const char *id, const char *containerd_state, pid_t *pid,
			     struct hm_err *err)
{
	/* the id goes into paths below the task state: one plain element, checked here
	 * whatever the protocol layer already checked */
	if (!agent_container_id_ok(id))
		return hm_err_plain(err, EINVAL,
				    "container id '%s': expected 1 to %d of [A-Za-z0-9_.-], never "
				    "'/' or '..'",
				    id, AGENT_CONTAINER_ID_MAX);
	hm_cleanup_close int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (proc_fd < 0)
		return hm_err_errno(err, "open /proc");
	if (containerd_state && containerd_state[0]) {
		int pidfd = container_by_task_state(proc_fd, containerd_state, id, pid);
		if (pidfd >= 0)
			return pidfd;
	}
	return container_by_cgroup_scan(proc_fd, id, pid, err);
}

/* An existing live target for pid, with a reference taken; NULL if none. A registered
 * target whose process exited is not reused even if the pid came back. */
static struct agent_target *registry_get(pid_t pid)
{
	struct agent_target *found = NULL;
	pthread_mutex_lock(&registry_lock);
	for (struct agent_target *t = registry; t; t = t->next) {
		if (t->pid == pid && pidfd_alive(t->pidfd)) {
			t->refs++;
			found = t;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
	return found;
}

static int target_create(pid_t pid, int pidfd, const char *description, struct agent_target **out,
			 struct hm_err *err)
{
	struct agent_target *t = calloc(1, sizeof(*t));
	if (!t) {
		close(pidfd);
		return hm_err_set(err, ENOMEM, "target");
	}
	t->refs = 1;
	t->pid = pid;
	t->pidfd = pidfd;
	t->root_fd = -1;
	snprintf(t->description, sizeof(t->description), "%s", description);
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);

	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/root", (int)pid);
	t->root_fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (t->root_fd < 0) {
		hm_err_errno(err, "open %s", path);
		target_free(t);
		return -1;
	}
	/* the root was opened by pid: only valid if that pid is still the pidfd's process */
	if (!pidfd_alive(pidfd)) {
		hm_err_set(err, ESRCH, "%s exited", description);
		target_free(t);
		return -1;
	}

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old); /* the worker must take no signals */
	int rc = pthread_create(&t->worker, &attr, worker_main, t);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (rc) {
		hm_err_set(err, rc, "start the worker of %s", description);
		target_free(t);
		return -1;
	}
	pthread_mutex_lock(&t->lock);
	while (t->worker_state == 0)
		pthread_cond_wait(&t->cond, &t->lock);
	int state = t->worker_state;
	pthread_mutex_unlock(&t->lock);
	if (state < 0) {
		hm_err_set(err, -state, "enter the network namespace of %s", description);
		target_free(t);
		return -1;
	}
	*out = t;
	return 0;
}

int agent_target_resolve(const struct proto_target *spec, const char *containerd_state,
			 struct agent_target **out, struct hm_err *err)
{
	*out = NULL;
	pid_t pid = 0;
	int pidfd = -1;
	const char *kind = "pid";
	switch (spec->kind) {
	case PROTO_TARGET_POD:
		kind = "pod";
		if (resolve_pod(spec->value, &pid, err) < 0)
			return -1;
		break;
	case PROTO_TARGET_PID:
		if (spec->pid == 0 || spec->pid > INT32_MAX)
			return hm_err_set(err, EINVAL, "bad pid %u", spec->pid);
		pid = (pid_t)spec->pid;
		break;
	case PROTO_TARGET_CONTAINER:
		kind = "container";
		pidfd = resolve_container(spec->value, containerd_state, &pid, err);
		if (pidfd < 0)
			return -1;
		break;
	default:
		return hm_err_set(err, EINVAL, "unknown target kind %d", (int)spec->kind);
	}

	char description[PROTO_NAME_MAX + 32];
	snprintf(description, sizeof(description), "%s/%s (pid %d)", kind, spec->value, (int)pid);
	if (pidfd < 0)
		pidfd = pidfd_open(pid, 0);
	if (pidfd < 0) {
		if (errno == ESRCH)
			return hm_err_set(err, ESRCH, "%s: no such process", description);
		return hm_err_errno(err, "pidfd_open %s", description);
	}
	/* The pid was read (state file, /proc scan) before the pidfd was opened: check
	 * again now that the pidfd pins the process, so a recycled pid is not served. */
	if (spec->kind == PROTO_TARGET_POD) {
		struct rt_pod_state st;
		if (rt_pod_state_load(spec->value, &st, err) < 0 || !rt_pod_is_running(&st) ||
		    st.pid != pid) {
			close(pidfd);
			return hm_err_set(err, ESRCH, "%s exited while being resolved",
					  description);
		}
		if (check_pod_process(pid, spec->value, err) < 0 || !pidfd_alive(pidfd)) {
			close(pidfd);
			if (!err->code)
				hm_err_set(err, ESRCH, "%s exited while being resolved",
					   description);
			return -1;
		}
	}
	/* container/ID: resolve_container pinned and checked it already */

	struct agent_target *t = registry_get(pid);
	if (t) {
		close(pidfd);
		*out = t;
		return 0;
	}
	if (target_create(pid, pidfd, description, &t, err) < 0)
		return -1;
	/* Two sessions may have resolved the same pid at once: keep the first registered. */
	pthread_mutex_lock(&registry_lock);
	struct agent_target *other = NULL;
	for (struct agent_target *o = registry; o; o = o->next) {
		if (o->pid == pid && pidfd_alive(o->pidfd)) {
			o->refs++;
			other = o;
			break;
		}
	}
	if (!other) {
		t->next = registry;
		registry = t;
	}
	pthread_mutex_unlock(&registry_lock);
	if (other) {
		target_free(t);
		t = other;
	} else {
		hm_info("target %s resolved", t->description);
	}
	*out = t;
	return 0;
}

int agent_target_check_container(const struct agent_target *t, struct hm_err *err)
{
	bool same;
	static const char *const kinds[] = {"pid", "mnt"};
	for (size_t i = 0; i < 2; i++) {
		if (same_namespace(t->pid, kinds[i], &same, err) < 0)
			return -1;
		if (same)
			return hm_err_plain(err, EPERM,
					    "it shares the agent's %s namespace: not a container",
					    kinds[i]);
	}
	/* unshare -Urpm gives any user new pid and mount namespaces (and a root of its
	 * choosing): only a user namespace made by root (or the initial one) will do */
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)t->pid);
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "open %s", path);
	uid_t owner = (uid_t)-1;
	if (ioctl(fd, NS_GET_OWNER_UID, &owner) < 0)
		return hm_err_errno(err, "owner of %s", path);
	if (owner != 0)
		return hm_err_plain(err, EPERM,
				    "its user namespace belongs to uid %lu, not root: not a "
				    "container of a privileged runtime",
				    (unsigned long)owner);
	if (!pidfd_alive(t->pidfd))
		return hm_err_set(err, ESRCH, "%s exited", t->description);
	return 0;
}
