/* Pod cgroups on cgroup v2, v1 or both (hybrid hosts).
 *
 * The layout is detected per call the way crun and runc do it: statfs() on
 * /sys/fs/cgroup tells a pure v2 host (cgroup2) from a v1/hybrid one (tmpfs), and on
 * the latter a cgroup2 mount at /sys/fs/cgroup/unified is the hybrid's v2 tree. v1
 * controller mounts come from /proc/self/mountinfo, because distributions and
 * container hosts mount (and co-mount) them in different places.
 *
 * Every pod lives in a directory NAME under a shared "hermit" parent in each
 * hierarchy. A limit goes to v2 when its controller is usable there, else to the v1
 * hierarchy the controller is bound to; a controller is bound to one hierarchy only,
 * so the choice is never ambiguous. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>

#include "runtime/internal.h"

#define CGROUP_FS_ROOT "/sys/fs/cgroup"
#define CGROUP_HYBRID_V2 "/sys/fs/cgroup/unified"
#define CGROUP_PARENT "hermit"
#define CPU_PERIOD_DEFAULT 100000ULL
/* kernel bounds for CFS bandwidth (kernel/sched/core.c): 1 ms <= period <= 1 s,
 * quota >= 1 ms and at most MAX_BW = 2^44 - 1 µs */
#define CPU_USEC_MIN 1000ULL
#define CPU_PERIOD_MAX 1000000ULL
#define CPU_QUOTA_MAX ((1ULL << 44) - 1)
/* tasks of a killed pod need a moment to leave the cgroup before rmdir succeeds */
#define DESTROY_TIMEOUT_MS 3000

/* devices has no v2 controller: there the policy is a BPF program (devices.c) */
enum controller { CTRL_PIDS, CTRL_MEMORY, CTRL_CPU, CTRL_DEVICES, CTRL_COUNT };
static const char *const controller_names[CTRL_COUNT] = {"pids", "memory", "cpu", "devices"};
static const char *const limit_flags[CTRL_COUNT] = {"--pids-max", "--memory-max", "--cpu-max",
						    "device policy"};

struct cgroup_layout {
	char v2_root[PATH_MAX];		     /* "" when there is no cgroup2 mount */
	bool v2_listed[CTRL_COUNT];	     /* in the v2 root's cgroup.controllers */
	char v1_mount[CTRL_COUNT][PATH_MAX]; /* "" when the controller has no v1 mount */
};

/* ---- layout detection ---- */

static int join_path(char *buf, size_t len, struct hm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int join_path(char *buf, size_t len, struct hm_err *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len)
		return hm_err_plain(err, ENAMETOOLONG, "cgroup path too long: %s...", buf);
	return 0;
}

static bool is_cgroup2(const char *path)
{
	struct statfs sfs;
	return statfs(path, &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
}

static bool list_has_word(const char *list, const char *word, const char *seps)
{
	size_t wl = strlen(word);
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, seps);
		if (n == wl && !strncmp(p, word, wl))
			return true;
		p += n;
		if (*p)
			p++;
	}
	return false;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo */
static void unescape_mountinfo(char *s)
{
	char *out = s;
	for (char *in = s; *in;) {
		if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' &&
		    in[3] >= '0' && in[3] <= '7') {
			*out++ = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
			in += 4;
		} else {
			*out++ = *in++;
		}
	}
	*out = '\0';
}

static int find_v1_mounts(struct cgroup_layout *lay, struct hm_err *err)
{
	hm_cleanup_fclose FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return hm_err_errno(err, "open /proc/self/mountinfo");
	hm_cleanup_free char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS"
		 */
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		*sep = '\0';
		char *fs_fields = sep + 3;
		char *save = NULL;
		char *fstype = strtok_r(fs_fields, " ", &save);
		if (!fstype || strcmp(fstype, "cgroup"))
			continue;
		strtok_r(NULL, " ", &save); /* source */
		char *superopts = strtok_r(NULL, " ", &save);
		if (!superopts)
			continue;
		char *mnt = NULL;
		save = NULL;
		char *tok = strtok_r(line, " ", &save);
		for (int i = 0; tok && i < 4; i++)
			tok = strtok_r(NULL, " ", &save);
		mnt = tok;
		if (!mnt)
			continue;
		unescape_mountinfo(mnt);
		for (int c = 0; c < CTRL_COUNT; c++) {
			/* the first mount wins: later ones are usually bind mounts of it */
			if (lay->v1_mount[c][0] ||
			    !list_has_word(superopts, controller_names[c], ","))
				continue;
			if (strlen(mnt) >= sizeof(lay->v1_mount[c]))
				return hm_err_set(err, ENAMETOOLONG, "cgroup mount point %s", mnt);
			strcpy(lay->v1_mount[c], mnt);
		}
	}
	if (ferror(f))
		return hm_err_errno(err, "read /proc/self/mountinfo");
	return 0;
}

static int detect_layout(struct cgroup_layout *lay, struct hm_err *err)
{
	memset(lay, 0, sizeof(*lay));
	struct statfs sfs;
	if (statfs(CGROUP_FS_ROOT, &sfs) < 0) {
		if (errno != ENOENT)
			return hm_err_errno(err, "statfs %s", CGROUP_FS_ROOT);
	} else if (sfs.f_type == CGROUP2_SUPER_MAGIC) {
		strcpy(lay->v2_root, CGROUP_FS_ROOT);
	} else if (sfs.f_type == TMPFS_MAGIC && is_cgroup2(CGROUP_HYBRID_V2)) {
		strcpy(lay->v2_root, CGROUP_HYBRID_V2);
	}
	if (lay->v2_root[0]) {
		char path[PATH_MAX];
		if (join_path(path, sizeof(path), err, "%s/cgroup.controllers", lay->v2_root) < 0)
			return -1;
		hm_cleanup_free char *ctrls = NULL;
		if (hm_read_file(path, &ctrls, NULL, err) < 0)
			return -1;
		for (int c = 0; c < CTRL_COUNT; c++)
			lay->v2_listed[c] = list_has_word(ctrls, controller_names[c], " \n");
	}
	/* a pure v2 host has no v1 mounts, so reading mountinfo there costs nothing wrong */
	return find_v1_mounts(lay, err);
}

/* ---- small helpers ---- */

static bool pod_name_ok(const char *name)
{
	if (!name || !*name || strlen(name) > RT_NAME_MAX || !strcmp(name, ".") ||
	    !strcmp(name, ".."))
		return false;
	return strchr(name, '/') == NULL && strchr(name, '\n') == NULL;
}

static bool file_exists_in(const char *dir, const char *file)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return false;
	return access(path, F_OK) == 0;
}

static int write_cgroup_file(const char *dir, const char *file, const char *value,
			     struct hm_err *err)
{
	char path[PATH_MAX];
	if (join_path(path, sizeof(path), err, "%s/%s", dir, file) < 0)
		return -1;
	return hm_write_file(path, value, err);
}

/* A path we may kill in and rmdir: an absolute cgroup directory directly below a
 * "hermit" parent. Guards against a damaged state file pointing somewhere else. */
static int check_pod_cgroup_path(const char *path, struct hm_err *err)
{
	size_t len = strlen(path);
	if (path[0] != '/' || len >= PATH_MAX || strstr(path, "/../") || strstr(path, "/./") ||
	    strchr(path, '\n'))
		return hm_err_plain(err, EINVAL, "not a pod cgroup path: '%s'", path);
	const char *base = strrchr(path, '/');
	if (!pod_name_ok(base + 1) || base - path < (ptrdiff_t)strlen("/" CGROUP_PARENT) ||
	    strncmp(base - strlen("/" CGROUP_PARENT), "/" CGROUP_PARENT "/",
		    strlen(CGROUP_PARENT) + 2))
		return hm_err_plain(err, EINVAL,
				    "not a pod cgroup path (expected .../%s/NAME): '%s'",
				    CGROUP_PARENT, path);
	return 0;
}

/* ---- --cpu-max parsing ---- */

static int parse_usec(const char *s, const char *what, const char *input, uint64_t *out,
		      struct hm_err *err)
{
	if (*s == '-')
		return hm_err_plain(err, EINVAL, "invalid cpu-max '%s': %s must not be negative",
				    input, what);
	if (!*s || strspn(s, "0123456789") != strlen(s))
		return hm_err_plain(
		    err, EINVAL,
		    "invalid cpu-max '%s': %s is not a number (expected max, QUOTA, "
		    "'QUOTA PERIOD' or QUOTA/PERIOD in microseconds)",
		    input, what);
	errno = 0;
	unsigned long long v = strtoull(s, NULL, 10);
	if (errno == ERANGE)
		return hm_err_plain(err, ERANGE, "invalid cpu-max '%s': %s is too large", input,
				    what);
	*out = v;
	return 0;
}

int rt_parse_cpu_max(const char *s, struct rt_limits *lim, struct hm_err *err)
{
	if (!s)
		return hm_err_plain(err, EINVAL, "invalid cpu-max: no value");
	if (!strcmp(s, "max")) {
		lim->cpu_quota = 0;
		lim->cpu_period = CPU_PERIOD_DEFAULT;
		return 0;
	}
	char quota_s[64];
	if (strlen(s) >= sizeof(quota_s))
		return hm_err_plain(err, EINVAL, "invalid cpu-max '%.*s...': too long", 32, s);
	strcpy(quota_s, s);
	const char *period_s = NULL;
	char *sep = strpbrk(quota_s, " /");
	if (sep) {
		*sep = '\0';
		period_s = sep + 1;
	}
	uint64_t quota, period = CPU_PERIOD_DEFAULT;
	if (parse_usec(quota_s, "the quota", s, &quota, err) < 0)
		return -1;
	if (period_s && parse_usec(period_s, "the period", s, &period, err) < 0)
		return -1;
	if (quota == 0)
		return hm_err_plain(err, EINVAL,
				    "invalid cpu-max '%s': the quota must be greater than 0 "
				    "(use 'max' for no limit)",
				    s);
	if (quota < CPU_USEC_MIN || quota > CPU_QUOTA_MAX)
		return hm_err_plain(err, ERANGE,
				    "invalid cpu-max '%s': the quota must be between %llu and "
				    "%llu microseconds",
				    s, CPU_USEC_MIN, CPU_QUOTA_MAX);
	if (period < CPU_USEC_MIN || period > CPU_PERIOD_MAX)
		return hm_err_plain(err, ERANGE,
				    "invalid cpu-max '%s': the period must be between %llu and "
				    "%llu microseconds",
				    s, CPU_USEC_MIN, CPU_PERIOD_MAX);
	lim->cpu_quota = quota;
	lim->cpu_period = period;
	return 0;
}

/* ---- create ---- */

static bool limit_requested(const struct rt_limits *lim, enum controller c)
{
	switch (c) {
	case CTRL_PIDS:
		return lim->pids_max != 0;
	case CTRL_MEMORY:
		return lim->memory_max != 0;
	case CTRL_CPU:
		return lim->cpu_quota != 0;
	default: /* the device policy is always set, by create_device_policy */
		return false;
	}
}

/* Make controller c usable in the children of `hermit`: the root and `hermit` must both
 * have it in cgroup.subtree_control (systemd usually did the root already). */
static int v2_enable_controller(const char *root, const char *parent, enum controller c,
				struct hm_err *err)
{
	const char *chain[] = {root, parent};
	char value[32];
	snprintf(value, sizeof(value), "+%s", controller_names[c]);
	for (size_t i = 0; i < HM_ARRAY_SIZE(chain); i++) {
		char path[PATH_MAX];
		if (join_path(path, sizeof(path), err, "%s/cgroup.subtree_control", chain[i]) < 0)
			return -1;
		hm_cleanup_free char *current = NULL;
		if (hm_read_file(path, &current, NULL, err) < 0)
			return -1;
		if (list_has_word(current, controller_names[c], " \n"))
			continue;
		if (hm_write_file(path, value, err) < 0)
			return hm_err_prefix(err, "enable the %s controller", controller_names[c]);
	}
	return 0;
}

static int make_pod_dir(const char *mount, const char *name, char *out, struct hm_err *err)
{
	char parent[PATH_MAX];
	if (join_path(parent, sizeof(parent), err, "%s/%s", mount, CGROUP_PARENT) < 0 ||
	    join_path(out, PATH_MAX, err, "%s/%s/%s", mount, CGROUP_PARENT, name) < 0)
		return -1;
	if (mkdir(parent, 0755) < 0 && errno != EEXIST)
		return hm_err_errno(err, "mkdir %s", parent);
	if (mkdir(out, 0755) == 0)
		return 0;
	if (errno != EEXIST)
		return hm_err_errno(err, "mkdir %s", out);
	/* Left over by a crashed run: reuse it only when no process is in it. rmdir of a
	 * populated cgroup fails with EBUSY, which is exactly the check we need. */
	if (rmdir(out) < 0) {
		if (errno == EBUSY)
			return hm_err_plain(err, EEXIST, "cgroup %s already exists and is in use",
					    out);
		return hm_err_errno(err, "rmdir stale cgroup %s", out);
	}
	if (mkdir(out, 0755) < 0)
		return hm_err_errno(err, "mkdir %s", out);
	return 0;
}

static int write_cgroup_number(const char *dir, const char *file, uint64_t number,
			       struct hm_err *err)
{
	char value[32];
	snprintf(value, sizeof(value), "%llu", (unsigned long long)number);
	return write_cgroup_file(dir, file, value, err);
}

static uint64_t cpu_period_of(const struct rt_limits *lim)
{
	return lim->cpu_period ? lim->cpu_period : CPU_PERIOD_DEFAULT;
}

static int write_v2_limit(const char *dir, enum controller c, const struct rt_limits *lim,
			  struct hm_err *err)
{
	switch (c) {
	case CTRL_PIDS:
		return write_cgroup_number(dir, "pids.max", lim->pids_max, err);
	case CTRL_MEMORY:
		if (write_cgroup_number(dir, "memory.max", lim->memory_max, err) < 0)
			return -1;
		/* without swap the OOM kill comes promptly instead of after a swap storm */
		if (file_exists_in(dir, "memory.swap.max"))
			return write_cgroup_file(dir, "memory.swap.max", "0", err);
		return 0;
	case CTRL_CPU: {
		char value[64];
		snprintf(value, sizeof(value), "%llu %llu", (unsigned long long)lim->cpu_quota,
			 (unsigned long long)cpu_period_of(lim));
		return write_cgroup_file(dir, "cpu.max", value, err);
	}
	default:
		return 0;
	}
}

static int write_v1_limit(const char *dir, enum controller c, const struct rt_limits *lim,
			  struct hm_err *err)
{
	switch (c) {
	case CTRL_PIDS:
		return write_cgroup_number(dir, "pids.max", lim->pids_max, err);
	case CTRL_MEMORY:
		if (write_cgroup_number(dir, "memory.limit_in_bytes", lim->memory_max, err) < 0)
			return -1;
		/* swap would delay the OOM kill; failing to disable it only makes it slower */
		if (file_exists_in(dir, "memory.swappiness")) {
			struct hm_err ignored;
			if (write_cgroup_file(dir, "memory.swappiness", "0", &ignored) < 0)
				hm_debug("cgroup: %s", ignored.msg);
		}
		return 0;
	case CTRL_CPU:
		/* the period first: the kernel checks the quota against the current period */
		if (write_cgroup_number(dir, "cpu.cfs_period_us", cpu_period_of(lim), err) < 0)
			return -1;
		return write_cgroup_number(dir, "cpu.cfs_quota_us", lim->cpu_quota, err);
	default:
		return 0;
	}
}

static void cgroup_reset(struct rt_cgroup *cg)
{
	memset(cg->v2_path, 0, sizeof(cg->v2_path));
	cg->v2_fd = -1;
	cg->n_v1 = 0;
	for (int i = 0; i < RT_CGROUP_V1_MAX; i++)
		cg->v1_paths[i][0] = '\0';
}

/* The pod's directory in the v1 hierarchy mounted at mount, made on first use. */
static int v1_pod_dir(const char *mount, const char *name, struct rt_cgroup *cg, const char **dir,
		      struct hm_err *err)
{
	/* co-mounted controllers (cpu,cpuacct or a combined pids,memory) share one dir */
	char want[PATH_MAX];
	if (join_path(want, sizeof(want), err, "%s/%s/%s", mount, CGROUP_PARENT, name) < 0)
		return -1;
	for (int i = 0; i < cg->n_v1; i++)
		if (!strcmp(cg->v1_paths[i], want)) {
			*dir = cg->v1_paths[i];
			return 0;
		}
	if (cg->n_v1 >= RT_CGROUP_V1_MAX)
		return hm_err_set(err, E2BIG, "too many cgroup v1 hierarchies");
	if (make_pod_dir(mount, name, cg->v1_paths[cg->n_v1], err) < 0) {
		cg->v1_paths[cg->n_v1][0] = '\0';
		return -1;
	}
	*dir = cg->v1_paths[cg->n_v1++];
	return 0;
}

/* The kernel checks a device access against both the v2 program and the v1 devices
 * controller, so the policy goes everywhere it can, and nowhere is an error: a pod
 * without one could open every device node it can make or find. */
static int create_device_policy(const char *name, const struct rt_limits *lim,
				const struct cgroup_layout *lay, struct rt_cgroup *cg,
				struct hm_err *err)
{
	if (cg->v2_fd < 0 && !lay->v1_mount[CTRL_DEVICES][0])
		return hm_err_plain(err, ENODEV,
				    "device policy: this host has neither cgroup v2 nor a "
				    "cgroup v1 devices controller");
	if (cg->v2_fd >= 0 && rt_devices_attach_v2(cg->v2_fd, lim->allow_mknod, err) < 0)
		return hm_err_prefix(err, "%s", cg->v2_path);
	if (!lay->v1_mount[CTRL_DEVICES][0])
		return 0;
	const char *dir;
	if (v1_pod_dir(lay->v1_mount[CTRL_DEVICES], name, cg, &dir, err) < 0)
		return -1;
	return rt_devices_write_v1(dir, lim->allow_mknod, err);
}

static int create_dirs_and_limits(const char *name, const struct rt_limits *lim,
				  const struct cgroup_layout *lay, struct rt_cgroup *cg,
				  struct hm_err *err)
{
	bool on_v2[CTRL_COUNT] = {false};
	if (lay->v2_root[0]) {
		char parent[PATH_MAX];
		if (join_path(parent, sizeof(parent), err, "%s/%s", lay->v2_root, CGROUP_PARENT) <
		    0)
			return -1;
		if (mkdir(parent, 0755) < 0 && errno != EEXIST)
			return hm_err_errno(err, "mkdir %s", parent);
		for (int c = 0; c < CTRL_COUNT; c++) {
			if (!lay->v2_listed[c])
				continue;
			struct hm_err enable_err;
			if (v2_enable_controller(lay->v2_root, parent, c, &enable_err) == 0) {
				on_v2[c] = true;
			} else if (limit_requested(lim, c)) {
				*err = enable_err;
				return hm_err_prefix(err, "%s", limit_flags[c]);
			} else {
				/* accounting only: the pod still runs without it */
				hm_debug("cgroup: %s", enable_err.msg);
			}
		}
		if (make_pod_dir(lay->v2_root, name, cg->v2_path, err) < 0) {
			cg->v2_path[0] = '\0';
			return -1;
		}
		cg->v2_fd = open(cg->v2_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (cg->v2_fd < 0)
			return hm_err_errno(err, "open %s", cg->v2_path);
		for (int c = 0; c < CTRL_COUNT; c++)
			if (on_v2[c] && limit_requested(lim, c) &&
			    write_v2_limit(cg->v2_path, c, lim, err) < 0)
				return hm_err_prefix(err, "%s", limit_flags[c]);
	}
	for (int c = 0; c < CTRL_COUNT; c++) {
		/* v1 only for the limits asked for: every v1 attach waits for an RCU grace
		 * period (cgroup_threadgroup_rwsem), ~10 ms per start, and the v2 dir already
		 * tracks and kills the pod's processes */
		if (on_v2[c] || !lay->v1_mount[c][0] || !limit_requested(lim, c))
			continue;
		const char *dir;
		if (v1_pod_dir(lay->v1_mount[c], name, cg, &dir, err) < 0)
			return -1;
		if (limit_requested(lim, c) && write_v1_limit(dir, c, lim, err) < 0)
			return hm_err_prefix(err, "%s", limit_flags[c]);
	}
	return create_device_policy(name, lim, lay, cg, err);
}

int rt_cgroup_create(const char *name, const struct rt_limits *lim, struct rt_cgroup *cg,
		     struct hm_err *err)
{
	cgroup_reset(cg);
	if (!pod_name_ok(name))
		return hm_err_plain(err, EINVAL, "cgroup: invalid pod name '%s'", name ? name : "");
	struct cgroup_layout lay;
	if (detect_layout(&lay, err) < 0)
		return hm_err_prefix(err, "cgroup: detect layout");
	/* refuse before creating anything, so a bad request leaves nothing behind */
	for (int c = 0; c < CTRL_COUNT; c++)
		if (limit_requested(lim, c) && !lay.v2_listed[c] && !lay.v1_mount[c][0])
			return hm_err_plain(
			    err, ENODEV,
			    "%s needs the '%s' cgroup controller, which this host has "
			    "neither on cgroup v2 nor mounted as cgroup v1",
			    limit_flags[c], controller_names[c]);
	if (create_dirs_and_limits(name, lim, &lay, cg, err) < 0) {
		struct hm_err cleanup_err;
		if (rt_cgroup_destroy(cg, &cleanup_err) < 0)
			hm_warn("cgroup: cleanup after failed create: %s", cleanup_err.msg);
		cgroup_reset(cg);
		return hm_err_prefix(err, "cgroup");
	}
	hm_debug("cgroup: pod %s: v2 '%s', %d v1 dirs", name, cg->v2_path, cg->n_v1);
	return 0;
}

/* ---- attach ---- */

static int attach_one(const char *dir, pid_t pid, struct hm_err *err)
{
	char value[32];
	snprintf(value, sizeof(value), "%d", (int)pid);
	if (write_cgroup_file(dir, "cgroup.procs", value, err) < 0)
		return hm_err_prefix(err, "cgroup: move pid %d", (int)pid);
	return 0;
}

int rt_cgroup_attach_v1(const struct rt_cgroup *cg, pid_t pid, struct hm_err *err)
{
	for (int i = 0; i < cg->n_v1; i++)
		if (attach_one(cg->v1_paths[i], pid, err) < 0)
			return -1;
	return 0;
}

int rt_cgroup_open_v1_tasks(const struct rt_cgroup *cg, int *fds, struct hm_err *err)
{
	for (int i = 0; i < cg->n_v1; i++)
		fds[i] = -1;
	for (int i = 0; i < cg->n_v1; i++) {
		char path[PATH_MAX];
		if (join_path(path, sizeof(path), err, "%s/tasks", cg->v1_paths[i]) < 0)
			goto fail;
		fds[i] = open(path, O_WRONLY | O_CLOEXEC);
		if (fds[i] < 0) {
			hm_err_errno(err, "cgroup: open %s", path);
			goto fail;
		}
	}
	return 0;
fail:
	for (int i = 0; i < cg->n_v1; i++)
		hm_closep(&fds[i]);
	return -1;
}

/* Writing a pid to cgroup.procs takes the kernel's global threadgroup lock for writing,
 * which waits for an RCU grace period (~10 ms on a VM); moving the writing thread itself
 * ("0" into tasks) does not take it (Linux 6.1, "cgroup: Optimize single thread
 * migration"; an older kernel waits as for a pid, no worse).
 * The caller has one thread, so its one thread is the whole process. */
int rt_cgroup_join_v1(const int *tasks_fds, int n, struct hm_err *err)
{
	for (int i = 0; i < n; i++)
		if (write(tasks_fds[i], "0", 1) != 1)
			return hm_err_errno(err, "cgroup: join the pod's v1 cgroup %d of %d", i + 1,
					    n);
	return 0;
}

int rt_cgroup_attach_all(const struct rt_cgroup *cg, pid_t pid, struct hm_err *err)
{
	if (cg->v2_path[0] && attach_one(cg->v2_path, pid, err) < 0)
		return -1;
	return rt_cgroup_attach_v1(cg, pid, err);
}

/* ---- OOM accounting ---- */

static bool read_keyed_u64(const char *dir, const char *file, const char *key, uint64_t *out)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return false;
	hm_cleanup_free char *text = NULL;
	struct hm_err ignored;
	if (hm_read_file(path, &text, NULL, &ignored) < 0)
		return false;
	size_t kl = strlen(key);
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* exact key: memory.oom_control also has "oom_kill_disable" */
		if (!strncmp(line, key, kl) && line[kl] == ' ')
			return hm_parse_u64(line + kl + 1, out) == 0;
	}
	return false;
}

uint64_t rt_cgroup_oom_kills(const struct rt_cgroup *cg)
{
	uint64_t n = 0;
	if (cg->v2_path[0] && read_keyed_u64(cg->v2_path, "memory.events", "oom_kill", &n))
		return n;
	for (int i = 0; i < cg->n_v1; i++)
		if (read_keyed_u64(cg->v1_paths[i], "memory.oom_control", "oom_kill", &n))
			return n;
	return 0;
}

/* ---- destroy ---- */

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* SIGKILL every process listed in dir and its sub-cgroups (the pod may have made some
 * through its cgroup namespace). Used where cgroup.kill does not exist (v1, < 5.14). */
static void kill_listed_procs(const char *dir, int depth)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
		return;
	hm_cleanup_free char *text = NULL;
	struct hm_err ignored;
	if (hm_read_file(path, &text, NULL, &ignored) == 0) {
		pid_t self = getpid();
		for (char *p = text; *p;) {
			char *end;
			long pid = strtol(p, &end, 10);
			if (end == p)
				break;
			/* 0 means "not in our pid namespace"; kill(0) or kill(-1) would be a
			 * disaster */
			if (pid > 0 && pid != self)
				kill((pid_t)pid, SIGKILL);
			p = end;
			while (*p == '\n')
				p++;
		}
	}
	if (depth > 32)
		return;
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char sub[PATH_MAX];
		if (snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) < (int)sizeof(sub))
			kill_listed_procs(sub, depth + 1);
	}
	closedir(d);
}

static void kill_cgroup(const char *dir)
{
	if (file_exists_in(dir, "cgroup.kill")) {
		struct hm_err kill_err;
		if (write_cgroup_file(dir, "cgroup.kill", "1", &kill_err) == 0)
			return;
		hm_debug("cgroup: %s", kill_err.msg);
	}
	kill_listed_procs(dir, 0);
}

/* rmdir dir after its sub-cgroups; returns 0, or -1 with errno (EBUSY while tasks exit) */
static int rmdir_tree(const char *dir, int depth)
{
	if (depth <= 32) {
		DIR *d = opendir(dir);
		if (!d)
			return errno == ENOENT ? 0 : -1;
		struct dirent *de;
		while ((de = readdir(d))) {
			if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") ||
			    !strcmp(de->d_name, ".."))
				continue;
			char sub[PATH_MAX];
			if (snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name) < (int)sizeof(sub))
				rmdir_tree(
				    sub, depth + 1); /* a failure shows up as the parent's EBUSY */
		}
		closedir(d);
	}
	if (rmdir(dir) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

static int remove_pod_cgroup(const char *dir, struct hm_err *err)
{
	if (check_pod_cgroup_path(dir, err) < 0)
		return -1;
	struct statfs sfs;
	if (statfs(dir, &sfs) < 0) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "statfs %s", dir);
	}
	if (sfs.f_type != CGROUP_SUPER_MAGIC && sfs.f_type != CGROUP2_SUPER_MAGIC)
		return hm_err_plain(err, EINVAL, "refusing to remove %s: not a cgroup", dir);
	int64_t deadline = hm_deadline_in(DESTROY_TIMEOUT_MS);
	long pause_ms = 1;
	for (;;) {
		kill_cgroup(dir);
		if (rmdir_tree(dir, 0) == 0)
			return 0;
		if (errno != EBUSY)
			return hm_err_errno(err, "rmdir %s", dir);
		if (hm_now_ms() >= deadline)
			return hm_err_plain(err, EBUSY,
					    "rmdir %s: processes still inside after %d ms", dir,
					    DESTROY_TIMEOUT_MS);
		sleep_ms(pause_ms);
		if (pause_ms < 20)
			pause_ms *= 2;
	}
}

int rt_cgroup_destroy(struct rt_cgroup *cg, struct hm_err *err)
{
	int rc = 0;
	struct hm_err local;
	if (cg->v2_fd >= 0) {
		close(cg->v2_fd);
		cg->v2_fd = -1;
	}
	if (cg->v2_path[0]) {
		if (remove_pod_cgroup(cg->v2_path, rc == 0 ? err : &local) < 0)
			rc = -1;
		else
			cg->v2_path[0] = '\0';
	}
	/* keep the dirs that could not go, so a second call can retry them */
	int kept = 0;
	for (int i = 0; i < cg->n_v1; i++) {
		if (remove_pod_cgroup(cg->v1_paths[i], rc == 0 ? err : &local) < 0) {
			rc = -1;
			if (kept != i)
				memcpy(cg->v1_paths[kept], cg->v1_paths[i],
				       sizeof(cg->v1_paths[i]));
			kept++;
		}
	}
	for (int i = kept; i < cg->n_v1; i++)
		cg->v1_paths[i][0] = '\0';
	cg->n_v1 = kept;
	if (rc < 0)
		return hm_err_prefix(err, "cgroup: destroy");
	return 0;
}

/* ---- persistence: "v2 PATH" and "v1 PATH", one per line ---- */

int rt_cgroup_save(const struct rt_cgroup *cg, const char *file, struct hm_err *err)
{
	size_t cap = (size_t)(cg->n_v1 + 1) * (PATH_MAX + 4);
	hm_cleanup_free char *buf = malloc(cap);
	if (!buf)
		return hm_err_set(err, ENOMEM, "cgroup: save %s", file);
	size_t len = 0;
	if (cg->v2_path[0])
		len += snprintf(buf + len, cap - len, "v2 %s\n", cg->v2_path);
	for (int i = 0; i < cg->n_v1; i++)
		len += snprintf(buf + len, cap - len, "v1 %s\n", cg->v1_paths[i]);
	char tmp[PATH_MAX];
	if (join_path(tmp, sizeof(tmp), err, "%s.tmp", file) < 0)
		return hm_err_prefix(err, "cgroup: save %s", file);
	/* rename makes the update atomic for concurrent readers (trace-pod ls, the agent) */
	if (hm_create_file(tmp, buf, len, 0644, err) < 0)
		return hm_err_prefix(err, "cgroup: save");
	if (rename(tmp, file) < 0) {
		int saved = errno;
		unlink(tmp);
		return hm_err_set(err, saved, "cgroup: rename %s to %s", tmp, file);
	}
	return 0;
}

int rt_cgroup_load(struct rt_cgroup *cg, const char *file, struct hm_err *err)
{
	cgroup_reset(cg);
	hm_cleanup_free char *text = NULL;
	if (hm_read_file(file, &text, NULL, err) < 0)
		return hm_err_prefix(err, "cgroup: load");
	int lineno = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		bool v2 = !strncmp(line, "v2 ", 3);
		if (!v2 && strncmp(line, "v1 ", 3))
			goto bad;
		const char *path = line + 3;
		if (check_pod_cgroup_path(path, err) < 0)
			goto bad_path;
		if (v2) {
			if (cg->v2_path[0])
				goto bad;
			strcpy(cg->v2_path, path);
		} else {
			if (cg->n_v1 >= RT_CGROUP_V1_MAX)
				goto bad;
			strcpy(cg->v1_paths[cg->n_v1++], path);
		}
	}
	if (cg->v2_path[0]) {
		/* a pod whose cgroup is already gone still loads, so rm can finish its cleanup */
		cg->v2_fd = open(cg->v2_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (cg->v2_fd < 0 && errno != ENOENT) {
			hm_err_errno(err, "cgroup: load %s: open %s", file, cg->v2_path);
			cgroup_reset(cg);
			return -1;
		}
	}
	return 0;
bad:
	hm_err_plain(err, EINVAL, "line %d: expected 'v2 PATH' or 'v1 PATH'", lineno);
bad_path:
	cgroup_reset(cg);
	return hm_err_prefix(err, "cgroup: load %s", file);
}
