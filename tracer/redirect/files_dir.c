/* Remote directories. Each one the program opens is mirrored in a private temp dir
 * (BASE/root stands for the target's "/", BASE is 0700 under $XDG_RUNTIME_DIR or /tmp):
 * one placeholder per remote entry, of the remote type, so that getdents64 (and fchdir)
 * work natively on the fd the program gets. Whatever the program then does relative to
 * that fd or directory, the handlers map back to the remote path before deciding
 * (trace_files_mirror_map), so the placeholders' own content never matters.
 *
 * Placeholders: regular files are empty, directories empty until mirrored themselves,
 * FIFOs are FIFOs, and sockets and devices become empty regular files (creating those
 * needs privileges). Symlinks point to a fixed dangling target, not the remote one: a
 * system call trace-run does not intercept (chmod, utimensat, execve...) relative to a
 * mirror directory would otherwise follow a pod's absolute link into this machine.
 * trace-run itself never follows a link inside the mirror (O_NOFOLLOW at every step).
 * The mirror goes when the session ends; one left by a killed trace-run goes when the
 * same user's next trace-run mirrors a directory.
 *
 * chdir: into a mirrored directory (a relative path from a mirror working directory,
 * or fchdir on a remote directory fd) works natively: the kernel's working directory is
 * the mirror copy. An absolute remote path works natively too when this machine has a
 * directory of that name (the program lands there, and its relative paths resolve to the
 * same absolute paths, which go to the target). A directory that exists only in the
 * target cannot become the kernel's working directory: seccomp can only let the call run
 * with its own path argument. trace-run then keeps a "remote working directory" for the
 * process instead: chdir returns 0 and leaves the kernel's where it was, every
 * intercepted call with a path relative to AT_FDCWD starts from the remote one (and goes
 * to the target, as it would from a mirror directory), getcwd answers with it, and chdir
 * elsewhere or fchdir drops it. exec keeps it; a child takes its parent's (looked up
 * through the PPid chain at its first relative path, then its own). Limits: a syscall
 * trace-run does not intercept (execve("./x"), chmod, symlink...) resolves a relative
 * path against the kernel's working directory; a child that is already running when its
 * parent changes directory, but had no relative path yet, takes the new one; a thread
 * made without CLONE_FS shares its process's. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tracer/redirect/files_internal.h"

#define PLACEHOLDER_LINK "/nonexistent/hermit: a symbolic link in the target"

static int remove_entry(int dirfd, const char *name, bool is_dir);

/* Mirrors of trace-runs that could not clean up (SIGKILL): this user's hermit-PID-*
 * directories whose PID is gone. A recycled PID only keeps one for longer. */
static void remove_stale_mirrors(const char *parent)
{
	hm_cleanup_close int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		return;
	int fd = fcntl(pfd, F_DUPFD_CLOEXEC, 0);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (!d) {
		if (fd >= 0)
			close(fd);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		int pid, n = 0;
		struct stat st;
		if (sscanf(e->d_name, "hermit-%d-%*6[A-Za-z0-9]%n", &pid, &n) != 1 ||
		    (size_t)n != strlen(e->d_name) || pid <= 0 ||
		    fstatat(pfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
		    st.st_uid != geteuid() || kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		hm_debug("removing %s/%s, left by trace-run %d", parent, e->d_name, pid);
		remove_entry(pfd, e->d_name, true);
	}
	closedir(d);
}

/* The private temp dir and mirror root, made on first use. */
static int mirror_ready(struct files *f, struct hm_err *err)
{
	if (f->mirror_fd >= 0)
		return 0;
	const char *parent = f->s->runtime_dir[0] && access(f->s->runtime_dir, W_OK | X_OK) == 0
				 ? f->s->runtime_dir
				 : "/tmp";
	remove_stale_mirrors(parent);
	if ((size_t)snprintf(f->base, sizeof(f->base), "%s/hermit-%d-XXXXXX", parent,
			     (int)getpid()) >= sizeof(f->base) - 8)
		return hm_err_set(err, ENAMETOOLONG, "temp dir under %s", parent);
	if (!mkdtemp(f->base)) { /* 0700 */
		int e = errno;
		f->base[0] = '\0';
		return hm_err_set(err, e, "mkdtemp under %s", parent);
	}
	if ((size_t)snprintf(f->mirror, sizeof(f->mirror), "%s/root", f->base) >= sizeof(f->mirror))
		return hm_err_set(err, ENAMETOOLONG, "%s/root", f->base);
	if (mkdir(f->mirror, 0700) < 0)
		return hm_err_errno(err, "mkdir %s", f->mirror);
	f->mirror_fd = open(f->mirror, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (f->mirror_fd < 0)
		return hm_err_errno(err, "open %s", f->mirror);
	f->mirror_len = strlen(f->mirror);
	hm_debug("remote directories are mirrored under %s", f->mirror);
	return 0;
}

bool trace_files_mirror_map(const struct files *f, const char *local, char *remote, size_t size)
{
	size_t n = f->mirror_len;
	if (!n || strncmp(local, f->mirror, n) != 0 || (local[n] != '/' && local[n] != '\0'))
		return false;
	snprintf(remote, size, "%s", local[n] ? local + n : "/");
	return true;
}

/* remove name in dirfd, a directory tree included, never following a link */
static int remove_entry(int dirfd, const char *name, bool is_dir)
{
	if (!is_dir)
		return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -1 : 0;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -1;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		bool sub = e->d_type == DT_DIR;
		if (e->d_type == DT_UNKNOWN) {
			struct stat st;
			sub = fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			      S_ISDIR(st.st_mode);
		}
		remove_entry(fd, e->d_name, sub);
	}
	closedir(d);
	return unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT ? -1 : 0;
}

void trace_files_mirror_remove(struct files *f)
{
	if (f->mirror_fd >= 0) {
		close(f->mirror_fd);
		f->mirror_fd = -1;
	}
	if (!f->base[0])
		return;
	char parent[PATH_MAX];
	snprintf(parent, sizeof(parent), "%s", f->base);
	char *slash = strrchr(parent, '/');
	*slash = '\0';
	hm_cleanup_close int pfd = open(parent[0] ? parent : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0 || remove_entry(pfd, slash + 1, true) < 0)
		hm_warn("cannot remove %s: %s", f->base, strerror(errno));
	f->base[0] = '\0';
	f->mirror_len = 0;
}

/* the placeholder kind for a remote d_type */
static unsigned char placeholder_type(unsigned char remote)
{
	switch (remote) {
	case DT_DIR:
	case DT_LNK:
	case DT_FIFO:
		return remote;
	default:
		return DT_REG;
	}
}

static int create_placeholder(int dirfd, const char *name, unsigned char type)
{
	switch (type) {
	case DT_DIR:
		return mkdirat(dirfd, name, 0700);
	case DT_LNK:
		return symlinkat(PLACEHOLDER_LINK, dirfd, name);
	case DT_FIFO:
		return mkfifoat(dirfd, name, 0600);
	default: {
		int fd =
		    openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return -1;
		close(fd);
		return 0;
	}
	}
}

struct name_type {
	const char *name;
	unsigned char type;
};

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct name_type *)a)->name, ((const struct name_type *)b)->name);
}

static bool valid_name(const char *name)
{
	return name[0] && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/') &&
	       strlen(name) <= NAME_MAX;
}

/* the local entries of dirfd; names point into *pool (free both) */
static int list_local(int dirfd, struct name_type **out, size_t *count, char **pool,
		      struct hm_err *err)
{
	*out = NULL;
	*count = 0;
	*pool = NULL;
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "open mirror directory");
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return hm_err_errno(err, "fdopendir");
	}
	size_t cap = 0, pool_len = 0, pool_cap = 0;
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d))) {
		if (!valid_name(e->d_name))
			continue;
		unsigned char type = e->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			type = S_ISDIR(st.st_mode)    ? DT_DIR
			       : S_ISLNK(st.st_mode)  ? DT_LNK
			       : S_ISFIFO(st.st_mode) ? DT_FIFO
						      : DT_REG;
		}
		size_t n = strlen(e->d_name) + 1;
		if (*count == cap || pool_len + n > pool_cap) {
			size_t ncap = cap ? cap * 2 : 64;
			size_t npool = pool_cap ? pool_cap * 2 : 4096;
			while (npool < pool_len + n)
				npool *= 2;
			struct name_type *v = realloc(*out, ncap * sizeof(*v));
			if (v)
				*out = v;
			char *p = v ? realloc(*pool, npool) : NULL;
			if (!v || !p) {
				rc = hm_err_set(err, ENOMEM, "mirror listing");
				break;
			}
			/* names are stored as offsets until the pool stops moving */
			*pool = p;
			cap = ncap;
			pool_cap = npool;
		}
		memcpy(*pool + pool_len, e->d_name, n);
		(*out)[*count] = (struct name_type){(const char *)(uintptr_t)pool_len, type};
		(*count)++;
		pool_len += n;
	}
	closedir(d);
	for (size_t i = 0; i < *count; i++)
		(*out)[i].name = *pool + (uintptr_t)(*out)[i].name;
	return rc;
}

/* make the entries of dirfd those of the remote listing */
static int sync_entries(int dirfd, const char *path, const struct client_dirent *ents, size_t n,
			struct hm_err *err)
{
	hm_cleanup_free struct name_type *remote = calloc(n ? n : 1, sizeof(*remote));
	if (!remote)
		return hm_err_set(err, ENOMEM, "mirror %s", path);
	size_t nr = 0;
	for (size_t i = 0; i < n; i++)
		if (valid_name(ents[i].name))
			remote[nr++] = (struct name_type){ents[i].name, ents[i].type};
	qsort(remote, nr, sizeof(*remote), by_name);
	hm_cleanup_free struct name_type *local = NULL;
	hm_cleanup_free char *pool = NULL;
	size_t nl = 0;
	if (list_local(dirfd, &local, &nl, &pool, err) < 0)
		return hm_err_prefix(err, "mirror %s", path);
	if (nl)
		qsort(local, nl, sizeof(*local), by_name);

	size_t i = 0, j = 0;
	while (i < nr || j < nl) {
		int cmp = i == nr ? 1 : j == nl ? -1 : strcmp(remote[i].name, local[j].name);
		if (cmp > 0) { /* only here */
			remove_entry(dirfd, local[j].name, local[j].type == DT_DIR);
			j++;
			continue;
		}
		unsigned char want = placeholder_type(remote[i].type);
		if (cmp == 0) {
			unsigned char have = local[j].type;
			/* a link to a directory the program went through is mirrored as one */
			bool keep = have == want || (want == DT_LNK && have == DT_DIR);
			j++;
			if (keep) {
				i++;
				continue;
			}
			remove_entry(dirfd, remote[i].name, have == DT_DIR);
		}
		if (create_placeholder(dirfd, remote[i].name, want) < 0 && errno != EEXIST)
			hm_debug("mirror %s/%s: %s", path, remote[i].name, strerror(errno));
		i++;
	}
	return 0;
}

/* the mirror directory of path, made (and placeholders along the way replaced) as
 * needed; never through a link */
static int mirror_dir_fd(struct files *f, const char *path, struct hm_err *err)
{
	int cur = openat(f->mirror_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return hm_err_errno(err, "open %s", f->mirror);
	const char *p = path;
	char comp[NAME_MAX + 1];
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		size_t n = strcspn(p, "/");
		if (n > NAME_MAX) {
			close(cur);
			return hm_err_set(err, ENAMETOOLONG, "%s", path);
		}
		memcpy(comp, p, n);
		comp[n] = '\0';
		p += n;
		int next = -1;
		for (int tries = 0; next < 0 && tries < 3; tries++) {
			next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (next >= 0)
				break;
			if (errno == ENOTDIR || errno == ELOOP)
				unlinkat(cur, comp,
					 0); /* a placeholder: the target says directory */
			else if (errno != ENOENT)
				break;
			if (mkdirat(cur, comp, 0700) < 0 && errno != EEXIST)
				break;
		}
		if (next < 0) {
			int e = errno;
			close(cur);
			return hm_err_set(err, e, "mirror %s", path);
		}
		close(cur);
		cur = next;
	}
	return cur;
}

int trace_files_dir_open(struct files *f, const char *path, struct hm_err *err)
{
	if (mirror_ready(f, err) < 0)
		return -1;
	hm_cleanup_free struct client_dirent *ents = NULL;
	size_t n = 0;
	f->remote_ops++;
	if (client_readdir(f->client, path, &ents, &n, err) < 0)
		return -1;
	hm_cleanup_close int fd = mirror_dir_fd(f, path, err);
	if (fd < 0)
		return -1;
	if (sync_entries(fd, path, ents, n, err) < 0)
		return -1;
	if (!trace_files_node_add(f, fd, NODE_DIR, path, NULL, err))
		return -1;
	return hm_steal_fd(&fd);
}

/* ---------------------------------------------------------------- remote cwd */

/* Where a process is, when trace-run knows better than the kernel. path NULL: the
 * kernel's working directory (recorded so that a child's lookup stops there). start
 * tells a recycled pid apart. */
struct files_cwd {
	pid_t tgid;
	unsigned long long start;
	char *path;
};

#define CWD_ANCESTORS 16

/* Tgid and PPid of thread tid */
static int proc_ids(pid_t tid, pid_t *tgid, pid_t *ppid)
{
	struct hm_proc_field ids[] = {{.key = "Tgid"}, {.key = "PPid"}};
	if (hm_proc_status(tid, ids, HM_ARRAY_SIZE(ids)) < 0)
		return -1;
	*tgid = atoi(ids[0].value);
	*ppid = atoi(ids[1].value);
	return 0;
}

/* the process's start time (clock ticks since boot), 0 when gone */
static unsigned long long proc_start(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* "pid (comm) state ..." : comm may hold spaces and parentheses; starttime is
	 * field 22, the 20th after the ')' */
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static struct files_cwd *cwd_find(struct files *f, pid_t tgid)
{
	for (size_t i = 0; i < f->ncwds; i++) {
		struct files_cwd *c = &f->cwds[i];
		if (c->tgid != tgid)
			continue;
		if (c->start == proc_start(tgid))
			return c;
		free(c->path); /* a recycled pid */
		f->cwds[i] = f->cwds[--f->ncwds];
		return NULL;
	}
	return NULL;
}

/* drop the records of processes that are gone */
static void cwd_purge(struct files *f)
{
	for (size_t i = 0; i < f->ncwds;) {
		struct files_cwd *c = &f->cwds[i];
		if (c->start == proc_start(c->tgid)) {
			i++;
			continue;
		}
		free(c->path);
		f->cwds[i] = f->cwds[--f->ncwds];
	}
}

/* record path (NULL: the kernel's) as tgid's; false on ENOMEM */
static bool cwd_set(struct files *f, pid_t tgid, const char *path)
{
	char *copy = NULL;
	if (path && !(copy = strdup(path)))
		return false;
	struct files_cwd *c = cwd_find(f, tgid);
	if (!c) {
		if (f->ncwds == f->cap_cwds)
			cwd_purge(f);
		if (f->ncwds == f->cap_cwds) {
			size_t cap = f->cap_cwds ? f->cap_cwds * 2 : 16;
			struct files_cwd *v = realloc(f->cwds, cap * sizeof(*v));
			if (!v) {
				free(copy);
				return false;
			}
			f->cwds = v;
			f->cap_cwds = cap;
		}
		c = &f->cwds[f->ncwds++];
		*c = (struct files_cwd){.tgid = tgid, .start = proc_start(tgid)};
	}
	free(c->path);
	c->path = copy;
	return true;
}

static bool any_remote_cwd(const struct files *f)
{
	for (size_t i = 0; i < f->ncwds; i++)
		if (f->cwds[i].path)
			return true;
	return false;
}

const char *trace_files_cwd_get(struct files *f, pid_t tid)
{
	if (!f->ncwds)
		return NULL; /* the common case: no process ever left the kernel's */
	pid_t tgid, ppid;
	if (proc_ids(tid, &tgid, &ppid) < 0)
		return NULL;
	struct files_cwd *c = cwd_find(f, tgid);
	if (c)
		return c->path;
	if (!any_remote_cwd(f))
		return NULL;
	/* first time: the nearest ancestor with a record decides; from now on tgid has
	 * its own, so that its parent's later chdir does not move it */
	const char *inherited = NULL;
	pid_t self = getpid();
	for (int depth = 0; depth < CWD_ANCESTORS && ppid > 1 && ppid != self; depth++) {
		struct files_cwd *a = cwd_find(f, ppid);
		if (a) {
			inherited = a->path;
			break;
		}
		pid_t up;
		if (proc_ids(ppid, &up, &ppid) < 0)
			break;
	}
	if (!cwd_set(f, tgid, inherited))
		return NULL;
	c = cwd_find(f, tgid);
	return c ? c->path : NULL;
}

void trace_files_cwd_release(struct files *f)
{
	for (size_t i = 0; i < f->ncwds; i++)
		free(f->cwds[i].path);
	free(f->cwds);
	f->cwds = NULL;
	f->ncwds = f->cap_cwds = 0;
}

/* the process of tid now is where the kernel says */
static void cwd_drop(struct files *f, pid_t tid)
{
	pid_t tgid, ppid;
	if (f->ncwds && proc_ids(tid, &tgid, &ppid) == 0)
		cwd_set(f, tgid, NULL);
	if (f->ncwds && !any_remote_cwd(f))
		trace_files_cwd_release(f); /* back to the free case */
}

/* ---------------------------------------------------------------- chdir, getcwd */

static struct tracer_result handle_chdir(const struct tracer_call *call, void *data)
{
	struct files *f = data;
	struct files_target t;
	switch (trace_files_route_path(f, call, AT_FDCWD, call->args[0], POLICY_FS_ACCESS_READ,
				       false, "chdir", &t)) {
	case ROUTE_REMOTE:
		break;
	case ROUTE_FAIL:
		return tracer_error(t.error);
	default: {
		/* a local directory: the kernel's working directory is the one again */
		struct stat lst;
		if (t.path[0] && stat(t.path, &lst) == 0 && S_ISDIR(lst.st_mode))
			cwd_drop(f, call->pid);
		return tracer_continue();
	}
	}
	struct hm_err err = {0};
	bool from_remote_cwd = t.relative && trace_files_cwd_get(f, call->pid);
	if (!t.mapped) {
		struct stat lst;
		if (stat(t.path, &lst) == 0 && S_ISDIR(lst.st_mode)) {
			cwd_drop(f, call->pid);
			return tracer_continue();
		}
	} else if (!from_remote_cwd) {
		/* the kernel resolves the program's path to the mirror copy: make it current */
		int fd = trace_files_dir_open(f, t.path, &err);
		if (fd < 0)
			return tracer_error(trace_files_agent_errno(f, "chdir", t.path, &err));
		close(fd);
		cwd_drop(f, call->pid);
		return tracer_continue();
	}
	struct proto_stat st;
	f->remote_ops++;
	if (client_stat(f->client, t.path, 0, &st, &err) < 0)
		return tracer_error(trace_files_agent_errno(f, "chdir", t.path, &err));
	if (!S_ISDIR(st.mode))
		return tracer_error(ENOTDIR);
	pid_t tgid, ppid;
	if (proc_ids(call->pid, &tgid, &ppid) < 0)
		return tracer_error(ESRCH);
	if (!cwd_set(f, tgid, t.path))
		return tracer_error(ENOMEM);
	hm_debug("pid %d: remote working directory %s", tgid, t.path);
	return tracer_return(0);
}

static struct tracer_result handle_fchdir(const struct tracer_call *call, void *data)
{
	cwd_drop(data, call->pid);
	return tracer_continue();
}

static struct tracer_result handle_getcwd(const struct tracer_call *call, void *data)
{
	struct files *f = data;
	char link[64], local[PATH_MAX], remote[PATH_MAX];
	const char *cwd = trace_files_cwd_get(f, call->pid);
	if (cwd) {
		snprintf(remote, sizeof(remote), "%s", cwd);
		goto answer;
	}
	if (!f->mirror_len)
		return tracer_continue();
	snprintf(link, sizeof(link), "/proc/%d/cwd", call->pid);
	ssize_t n = readlink(link, local, sizeof(local) - 1);
	if (n < 0)
		return tracer_continue();
	local[n] = '\0';
	if (!trace_files_mirror_map(f, local, remote, sizeof(remote)))
		return tracer_continue();
answer:;
	size_t len = strlen(remote) + 1;
	if (len > call->args[1])
		return tracer_error(ERANGE);
	int e = trace_files_put(call, call->args[0], remote, len);
	return e ? tracer_error(e) : tracer_return((int64_t)len);
}

int trace_files_register_dir(struct files *f, struct hm_err *err)
{
	struct tracer *t = f->s->tracer;
	if (tracer_set_handler(t, SYS_chdir, handle_chdir, f, err) < 0 ||
	    tracer_set_handler(t, SYS_fchdir, handle_fchdir, f, err) < 0 ||
	    tracer_set_handler(t, SYS_getcwd, handle_getcwd, f, err) < 0)
		return -1;
	return 0;
}
