/* The persisted state of local pods: one small file per field under RT_STATE_DIR/NAME,
 * each holding one value and a newline, so shell tools and the agent can read them. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "runtime/internal.h"

#define MONITOR_START_KEY "monitor_start"
#define RT_STATE_LOCK RT_RUN_DIR "/pods.lock"

bool rt_name_valid(const char *name)
{
	if (!name || !isalnum((unsigned char)name[0]))
		return false;
	size_t n = strlen(name);
	if (n > RT_NAME_MAX)
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = name[i];
		if (!isalnum(c) && c != '_' && c != '.' && c != '-')
			return false;
	}
	return true;
}

void rt_state_path(const char *name, const char *key, char *buf, size_t len)
{
	if (key && *key)
		snprintf(buf, len, "%s/%s/%s", RT_STATE_DIR, name, key);
	else
		snprintf(buf, len, "%s/%s", RT_STATE_DIR, name);
}

/* The kernel's start time of pid (clock ticks since boot): with the pid it identifies a
 * process even after the pid number has been reused. */
static int proc_start_time(pid_t pid, uint64_t *out, char *state)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	hm_cleanup_free char *stat = NULL;
	if (hm_read_file(path, &stat, NULL, NULL) < 0)
		return -1;
	/* comm may contain spaces and parentheses: fields restart after the last ')' */
	char *p = strrchr(stat, ')');
	if (!p)
		return -1;
	p++;
	if (state)
		*state = p[1];
	/* after comm: state(3) ... starttime(22), i.e. the 20th field from here */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -1;
	}
	char *end;
	errno = 0;
	unsigned long long v = strtoull(p + 1, &end, 10);
	if (errno || end == p + 1)
		return -1;
	*out = v;
	return 0;
}

static int ensure_state_root(struct hm_err *err)
{
	const char *dirs[] = {RT_RUN_DIR, RT_STATE_DIR};
	for (size_t i = 0; i < HM_ARRAY_SIZE(dirs); i++) {
		if (mkdir(dirs[i], 0755) == 0) {
			/* the umask must not make the tree unreadable for the agent */
			if (chmod(dirs[i], 0755) < 0)
				return hm_err_errno(err, "chmod %s", dirs[i]);
		} else if (errno != EEXIST) {
			return hm_err_errno(err, "mkdir %s", dirs[i]);
		}
	}
	return 0;
}

int rt_state_lock(struct hm_err *err)
{
	if (ensure_state_root(err) < 0)
		return -1;
	int fd = open(RT_STATE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return hm_err_errno(err, "open %s", RT_STATE_LOCK);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			hm_err_errno(err, "lock %s", RT_STATE_LOCK);
			close(fd);
			return -1;
		}
	}
	return fd;
}

static int write_value_at(const char *dir, const char *key, const char *value, struct hm_err *err)
{
	char path[PATH_MAX], tmp[PATH_MAX];
	snprintf(path, sizeof(path), "%s/%s", dir, key);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp%d", dir, key, (int)getpid());
	size_t len = strlen(value);
	bool newline = len == 0 || value[len - 1] != '\n';
	hm_cleanup_free char *data = malloc(len + 2);
	if (!data)
		return hm_err_set(err, ENOMEM, "write %s", path);
	memcpy(data, value, len);
	if (newline)
		data[len++] = '\n';
	/* readers (ls, the agent) must never see a half-written value: write then rename */
	if (hm_create_file(tmp, data, len, 0644, err) < 0) {
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) < 0) {
		int e = errno;
		unlink(tmp);
		return hm_err_set(err, e, "rename %s", path);
	}
	return 0;
}

int rt_state_write(const char *name, const char *key, const char *value, struct hm_err *err)
{
	char dir[PATH_MAX];
	rt_state_path(name, NULL, dir, sizeof(dir));
	return write_value_at(dir, key, value, err);
}

int rt_state_read(const char *name, const char *key, char *buf, size_t len, struct hm_err *err)
{
	char path[PATH_MAX];
	rt_state_path(name, key, path, sizeof(path));
	hm_cleanup_free char *data = NULL;
	size_t n;
	if (hm_read_file(path, &data, &n, err) < 0)
		return -1;
	while (n > 0 && (data[n - 1] == '\n' || data[n - 1] == '\r'))
		data[--n] = '\0';
	if (n >= len)
		return hm_err_set(err, ENAMETOOLONG, "%s: value too long", path);
	memcpy(buf, data, n + 1);
	return 0;
}

/* Rename the complete hidden directory tmp to final, the pod's name, unless taken. */
static int publish_state_dir(const char *name, const char *tmp, const char *final,
			     struct hm_err *err)
{
	/* taking the name is serialized with removing a dead pod of that name */
	hm_cleanup_close int lock = rt_state_lock(err);
	if (lock < 0) {
		hm_rm_rf(tmp, NULL);
		return -1;
	}
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) == 0)
		return 0;
	int e = errno;
	hm_rm_rf(tmp, NULL);
	if (e == EEXIST || e == ENOTEMPTY)
		return hm_err_plain(err, EEXIST, "pod %s already exists", name);
	if (e != EINVAL)
		return hm_err_set(err, e, "create state %s", final);
	/* a file system without RENAME_NOREPLACE: mkdir is atomic too, only the directory
	 * is briefly empty */
	if (mkdir(final, 0700) < 0) {
		if (errno == EEXIST)
			return hm_err_plain(err, EEXIST, "pod %s already exists", name);
		return hm_err_errno(err, "mkdir %s", final);
	}
	char value[32];
	snprintf(value, sizeof(value), "%d", (int)getpid());
	if (rt_state_write(name, "monitor_pid", value, err) < 0 ||
	    rt_state_write(name, "status", "created", err) < 0) {
		hm_rm_rf(final, NULL);
		return -1;
	}
	return 0;
}

int rt_state_create(const char *name, struct hm_err *err)
{
	if (!rt_name_valid(name)) {
		return hm_err_plain(
		    err, EINVAL, "invalid pod name '%s' (expected [a-zA-Z0-9][a-zA-Z0-9_.-]{0,62})",
		    name);
	}
	if (ensure_state_root(err) < 0)
		return -1;
	char final[PATH_MAX], tmp[PATH_MAX];
	rt_state_path(name, NULL, final, sizeof(final));
	/* Build the directory under a hidden name and rename it into place, so that every
	 * visible pod directory already names its monitor (ls can tell stale from starting). */
	snprintf(tmp, sizeof(tmp), "%s/.new-%s.%d", RT_STATE_DIR, name, (int)getpid());
	hm_rm_rf(tmp, NULL);
	if (mkdir(tmp, 0700) < 0)
		return hm_err_errno(err, "mkdir %s", tmp);
	if (chmod(tmp, 0700) < 0)
		goto fail_errno;
	char value[32];
	uint64_t start = 0;
	snprintf(value, sizeof(value), "%d", (int)getpid());
	if (write_value_at(tmp, "monitor_pid", value, err) < 0)
		goto fail;
	if (proc_start_time(getpid(), &start, NULL) == 0) {
		snprintf(value, sizeof(value), "%llu", (unsigned long long)start);
		if (write_value_at(tmp, MONITOR_START_KEY, value, err) < 0)
			goto fail;
	}
	if (write_value_at(tmp, "status", "created", err) < 0)
		goto fail;
	return publish_state_dir(name, tmp, final, err);

fail_errno:
	hm_err_errno(err, "create state %s", tmp);
fail:
	hm_rm_rf(tmp, NULL);
	return -1;
}

int rt_state_remove(const char *name, struct hm_err *err)
{
	if (!rt_name_valid(name))
		return hm_err_set(err, EINVAL, "invalid pod name '%s'", name);
	char dir[PATH_MAX];
	rt_state_path(name, NULL, dir, sizeof(dir));
	if (hm_rm_rf(dir, err) < 0)
		return hm_err_prefix(err, "remove state of pod %s", name);
	return 0;
}

/* Missing optional fields keep their defaults: a pod being set up has not written them yet. */
static void read_opt(const char *name, const char *key, char *buf, size_t len)
{
	if (rt_state_read(name, key, buf, len, NULL) < 0)
		buf[0] = '\0';
}

static long read_opt_long(const char *name, const char *key, long dflt)
{
	char v[32];
	read_opt(name, key, v, sizeof(v));
	char *end;
	errno = 0;
	long r = strtol(v, &end, 10);
	if (!v[0] || *end || errno)
		return dflt;
	return r;
}

int rt_pod_state_load(const char *name, struct rt_pod_state *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (!rt_name_valid(name)) {
		/* an invalid name can never exist: say "no such pod" */
		return hm_err_plain(err, ENOENT, "no such pod: %s", name);
	}
	char dir[PATH_MAX];
	rt_state_path(name, NULL, dir, sizeof(dir));
	struct stat st;
	if (stat(dir, &st) < 0) {
		if (errno == ENOENT)
			return hm_err_plain(err, ENOENT, "no such pod: %s", name);
		return hm_err_errno(err, "pod %s", name);
	}
	if (!S_ISDIR(st.st_mode))
		return hm_err_plain(err, ENOENT, "no such pod: %s", name);
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->pid = read_opt_long(name, "pid", 0);
	out->monitor_pid = read_opt_long(name, "monitor_pid", 0);
	out->exit_code = read_opt_long(name, "exit_code", -1);
	read_opt(name, "ip", out->ip, sizeof(out->ip));
	read_opt(name, "rootfs", out->rootfs, sizeof(out->rootfs));
	read_opt(name, "status", out->status, sizeof(out->status));
	read_opt(name, "net", out->net, sizeof(out->net));
	if (!out->status[0])
		snprintf(out->status, sizeof(out->status), "created");
	return 0;
}

int rt_state_monitor_pidfd(const char *name, pid_t monitor_pid)
{
	if (monitor_pid <= 0) {
		errno = ESRCH;
		return -1;
	}
	int fd = syscall(SYS_pidfd_open, monitor_pid, 0);
	if (fd < 0)
		return -1;
	/* The pidfd pins the process: if its start time matches the recorded one now, the
	 * pidfd refers to the monitor and not to a later process with a reused pid. */
	char recorded[32];
	uint64_t want, have;
	char state = '?';
	bool same = proc_start_time(monitor_pid, &have, &state) == 0;
	if (same && rt_state_read(name, MONITOR_START_KEY, recorded, sizeof(recorded), NULL) == 0 &&
	    hm_parse_u64(recorded, &want) == 0)
		same = have == want;
	/* a zombie monitor (its new parent has not reaped it yet) is as dead as a gone one */
	if (!same || state == 'Z' || state == 'X') {
		close(fd);
		errno = ESRCH;
		return -1;
	}
	return fd;
}

bool rt_state_monitor_alive(const char *name, pid_t monitor_pid)
{
	int fd = rt_state_monitor_pidfd(name, monitor_pid);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

bool rt_pod_is_running(const struct rt_pod_state *st)
{
	if (st->pid <= 0 || !rt_state_monitor_alive(st->name, st->monitor_pid))
		return false;
	if (!strcmp(st->status, "exited"))
		return false;
	/* while the monitor lives the pod's PID 1 is its unreaped child: the pid is its own */
	return kill(st->pid, 0) == 0 || errno == EPERM;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int rt_state_list(char ***names, size_t *count, struct hm_err *err)
{
	*names = NULL;
	*count = 0;
	DIR *d = opendir(RT_STATE_DIR);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "open %s", RT_STATE_DIR);
	}
	size_t cap = 0, n = 0;
	char **list = NULL;
	struct dirent *de;
	int rc = 0;
	while ((de = readdir(d))) {
		/* hidden entries are directories still being created */
		if (de->d_name[0] == '.' || !rt_name_valid(de->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nl = realloc(list, cap * sizeof(*nl));
			if (!nl) {
				rc = hm_err_set(err, ENOMEM, "list pods");
				break;
			}
			list = nl;
		}
		if (!(list[n] = strdup(de->d_name))) {
			rc = hm_err_set(err, ENOMEM, "list pods");
			break;
		}
		n++;
	}
	closedir(d);
	if (rc < 0) {
		rt_state_list_free(list, n);
		return rc;
	}
	/* stable output: sorted by name */
	if (n > 1)
		qsort(list, n, sizeof(*list), compare_names);
	*names = list;
	*count = n;
	return 0;
}

void rt_state_list_free(char **names, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
}
