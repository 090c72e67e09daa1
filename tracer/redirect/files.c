/* The file handlers' common ground: the session state, turning a path argument into a
 * decision, the table of inodes handed to the program, and the undo of non-idempotent
 * calls. See files_internal.h for the overall design. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "tracer/redirect/files_internal.h"

/* FILE and DIR nodes beyond this go oldest first: a stale node only costs fstat its
 * remote answer, and memfd inode numbers are not reused for a long time */
#define FILES_NODES_MAX 65536
#define FILES_REPLAY_NS 2000000000LL

/* ---------------------------------------------------------------- routing */

enum files_route trace_files_route_path(struct files *f, const struct tracer_call *call, int dirfd,
					uint64_t addr, enum policy_fs_access access,
					bool empty_is_fd, const char *op, struct files_target *t)
{
	t->mapped = t->relative = t->trailing_slash = false;
	t->error = 0;
	t->path[0] = '\0';
	if (addr == 0)
		return empty_is_fd ? ROUTE_FD : ROUTE_LOCAL;
	char raw[PATH_MAX];
	struct hm_err err = {0};
	/* unreadable or too long: the kernel says what it says. Most paths are local and
	 * end in CONTINUE, which needs no validity check; the others are checked below */
	if (tracer_peek_path(call, addr, raw, sizeof(raw), &err) < 0)
		return ROUTE_LOCAL;
	if (!raw[0])
		return empty_is_fd ? ROUTE_FD : ROUTE_LOCAL;
	size_t rawlen = strlen(raw);
	t->trailing_slash = rawlen > 1 && raw[rawlen - 1] == '/';
	char abs[PATH_MAX];
	if (raw[0] == '/') {
		memcpy(abs, raw, rawlen + 1);
		tracer_path_normalize(abs);
	} else {
		t->relative = true;
		/* a remote working directory is trace-run's alone: the kernel's is elsewhere */
		const char *cwd = dirfd == AT_FDCWD ? trace_files_cwd_get(f, call->pid) : NULL;
		if (cwd) {
			if ((size_t)snprintf(t->path, sizeof(t->path), "%s/%s", cwd, raw) >=
			    sizeof(t->path)) {
				t->error = ENAMETOOLONG;
				return ROUTE_FAIL;
			}
			tracer_path_normalize(t->path);
			t->mapped = true;
			goto decide;
		}
		if (tracer_resolve_at(call, dirfd, raw, abs, sizeof(abs), &err) < 0)
			return ROUTE_LOCAL; /* EBADF, ENOTDIR...: the kernel's to report */
		/* relative to a memfd or a deleted directory: ENOTDIR / ENOENT from the
		 * kernel */
		if (!strncmp(abs, "/memfd:", 7))
			return ROUTE_LOCAL;
	}
	if (f->mirror_len && trace_files_mirror_map(f, abs, t->path, sizeof(t->path)))
		t->mapped = true;
	else
		memcpy(t->path, abs, strlen(abs) + 1);

decide:;
	/* which rule decided is said only in debug logs; naming it costs regex matches */
	const char *why = NULL;
	enum policy_fs_verdict v =
	    policy_fs_decide(f->fs, t->path, access, hm_log_level() <= HM_LOG_DEBUG ? &why : NULL);
	if (t->mapped && v == POLICY_FS_LOCAL) {
		/* the program got here by looking at the target: the local mirror holds only
		 * placeholders, so a local answer would be a wrong one */
		if (access != POLICY_FS_ACCESS_WRITE) {
			v = POLICY_FS_REMOTE;
			why = "reached through a remote directory";
		} else if (f->writes) {
			v = POLICY_FS_REMOTE_WRITE;
			why = "reached through a remote directory";
		} else {
			hm_debug("%s %s: EROFS (a remote directory, fs mode read)", op, t->path);
			t->error = EROFS;
			return ROUTE_FAIL;
		}
	}
	t->verdict = v;
	/* acting on the path: it must be the calling thread's (not a recycled TID's) */
	if (v != POLICY_FS_LOCAL && !tracer_call_valid(call))
		return ROUTE_LOCAL;
	if (v != POLICY_FS_LOCAL)
		hm_debug("%s %s: %s (%s)", op, t->path, policy_fs_verdict_name(v), why ? why : "");
	switch (v) {
	case POLICY_FS_LOCAL:
		return ROUTE_LOCAL;
	case POLICY_FS_NOT_FOUND:
		t->error = ENOENT;
		return ROUTE_FAIL;
	default:
		return ROUTE_REMOTE;
	}
}

bool trace_files_route_remote(struct files *f, const struct tracer_call *call, int dirfd,
			      uint64_t addr, enum policy_fs_access access, const char *op,
			      struct files_target *t, struct tracer_result *res)
{
	switch (trace_files_route_path(f, call, dirfd, addr, access, false, op, t)) {
	case ROUTE_REMOTE:
		return true;
	case ROUTE_FAIL:
		*res = tracer_error(t->error);
		return false;
	default:
		*res = tracer_continue();
		return false;
	}
}

/* ---------------------------------------------------------------- nodes */

static size_t node_hash(const struct files *f, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev;
	return (size_t)(h >> 17) & (f->nbuckets - 1);
}

struct files_node *trace_files_node_find(struct files *f, dev_t dev, ino_t ino)
{
	if (!f->count)
		return NULL;
	for (struct files_node *n = f->buckets[node_hash(f, dev, ino)]; n; n = n->hnext)
		if (n->ino == ino && n->dev == dev)
			return n;
	return NULL;
}

struct files_node *trace_files_node_of_fd(struct files *f, pid_t tid, int fd, struct stat *lst)
{
	if (!f->count)
		return NULL; /* the common case: nothing remote handed out yet */
	char link[64];
	if (fd == AT_FDCWD)
		snprintf(link, sizeof(link), "/proc/%d/cwd", tid);
	else if (fd >= 0)
		snprintf(link, sizeof(link), "/proc/%d/fd/%d", tid, fd);
	else
		return NULL;
	struct stat st;
	if (stat(link, &st) < 0)
		return NULL;
	if (lst)
		*lst = st;
	return trace_files_node_find(f, st.st_dev, st.st_ino);
}

static void unlink_age(struct files *f, struct files_node *n)
{
	if (n->kind == NODE_WRITE)
		return;
	if (n->older)
		n->older->newer = n->newer;
	else if (f->oldest == n)
		f->oldest = n->newer;
	if (n->newer)
		n->newer->older = n->older;
	else if (f->newest == n)
		f->newest = n->older;
	n->older = n->newer = NULL;
}

static void node_free(struct files *f, struct files_node *n)
{
	if (n->keep_fd >= 0) {
		close(n->keep_fd);
		f->kept--;
	}
	free(n->path);
	free(n);
}

static void node_remove(struct files *f, struct files_node *n)
{
	struct files_node **pp = &f->buckets[node_hash(f, n->dev, n->ino)];
	while (*pp && *pp != n)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = n->hnext;
	unlink_age(f, n);
	f->count--;
	if (n->kind == NODE_WRITE)
		f->writers--;
	node_free(f, n);
}

static int grow_buckets(struct files *f, struct hm_err *err)
{
	size_t nb = f->nbuckets ? f->nbuckets * 2 : 256;
	struct files_node **b = calloc(nb, sizeof(*b));
	if (!b)
		return hm_err_set(err, ENOMEM, "file table");
	struct files_node **old = f->buckets;
	size_t oldn = f->nbuckets;
	f->buckets = b;
	f->nbuckets = nb;
	for (size_t i = 0; i < oldn; i++) {
		struct files_node *n = old[i];
		while (n) {
			struct files_node *next = n->hnext;
			size_t h = node_hash(f, n->dev, n->ino);
			n->hnext = b[h];
			b[h] = n;
			n = next;
		}
	}
	free(old);
	return 0;
}

struct files_node *trace_files_node_add(struct files *f, int fd, enum files_node_kind kind,
					const char *path, const struct proto_stat *st,
					struct hm_err *err)
{
	struct stat lst;
	if (fstat(fd, &lst) < 0) {
		hm_err_errno(err, "fstat");
		return NULL;
	}
	struct files_node *old = trace_files_node_find(f, lst.st_dev, lst.st_ino);
	if (old)
		node_remove(f, old); /* a recycled inode, or a directory mirrored again */
	if ((f->count + 1) * 2 > f->nbuckets && grow_buckets(f, err) < 0)
		return NULL;
	struct files_node *n = calloc(1, sizeof(*n));
	if (!n || !(n->path = strdup(path))) {
		free(n);
		hm_err_set(err, ENOMEM, "file table");
		return NULL;
	}
	n->dev = lst.st_dev;
	n->ino = lst.st_ino;
	n->kind = kind;
	n->keep_fd = -1;
	if (st)
		n->st = *st;
	size_t h = node_hash(f, n->dev, n->ino);
	n->hnext = f->buckets[h];
	f->buckets[h] = n;
	f->count++;
	if (kind == NODE_WRITE) {
		f->writers++;
	} else {
		n->older = f->newest;
		if (f->newest)
			f->newest->newer = n;
		f->newest = n;
		if (!f->oldest)
			f->oldest = n;
		if (f->count - f->writers > FILES_NODES_MAX)
			node_remove(f, f->oldest);
	}
	return n;
}

int trace_files_node_stat(struct files *f, struct files_node *n, const struct stat *lst,
			  struct proto_stat *out, struct hm_err *err)
{
	switch (n->kind) {
	case NODE_FILE:
		*out = n->st;
		return 0;
	case NODE_WRITE: {
		/* the remote identity, the local content */
		struct stat own;
		if (!lst) {
			if (n->keep_fd < 0 || fstat(n->keep_fd, &own) < 0) {
				*out = n->st;
				return 0;
			}
			lst = &own;
		}
		*out = n->st;
		out->size = (uint64_t)lst->st_size;
		out->blocks = (uint64_t)lst->st_blocks;
		out->mtime =
		    (struct proto_time){lst->st_mtim.tv_sec, (uint32_t)lst->st_mtim.tv_nsec};
		out->ctime =
		    (struct proto_time){lst->st_ctim.tv_sec, (uint32_t)lst->st_ctim.tv_nsec};
		return 0;
	}
	case NODE_DIR:
		f->remote_ops++;
		return client_stat(f->client, n->path, 0, out, err);
	}
	return hm_err_set(err, EINVAL, "node kind");
}

/* ---------------------------------------------------------------- helpers */

int trace_files_agent_errno(struct files *f, const char *op, const char *path,
			    const struct hm_err *err)
{
	int lost_errno;
	if (err->code != EFBIG && trace_session_lost(f->s, &lost_errno)) {
		hm_debug("%s %s: %s", op, path, err->msg);
		return lost_errno;
	}
	switch (err->code) {
	case 0:
	case ECONNRESET:
	case ECONNABORTED:
	case EPIPE:
	case ESHUTDOWN:
	case ENOTCONN:
	case ETIMEDOUT:
	case EPROTO:
		if (!f->warned_agent) {
			hm_warn("%s %s: %s; remote files fail with EIO", op, path, err->msg);
			f->warned_agent = true;
		}
		return EIO;
	default:
		hm_debug("%s %s: %s", op, path, err->msg);
		return err->code;
	}
}

mode_t trace_files_umask(pid_t tid)
{
	struct hm_proc_field umask = {.key = "Umask"};
	unsigned mask = 022;
	if (hm_proc_status(tid, &umask, 1) == 0)
		sscanf(umask.value, "%o", &mask);
	return (mode_t)(mask & 0777);
}

int trace_files_put(const struct tracer_call *call, uint64_t addr, const void *buf, size_t len)
{
	struct hm_err err = {0};
	if (tracer_write_mem(call, addr, buf, len, &err) < 0)
		return err.code == ESRCH ? ESRCH : EFAULT;
	return 0;
}

/* ---------------------------------------------------------------- read cache */

static int64_t ns_since(const struct timespec *t);
static int64_t ns_between(const struct timespec *from, const struct timespec *to);

static void cache_drop(struct files_cache_entry *e)
{
	if (e->memfd >= 0)
		close(e->memfd);
	free(e->path);
	memset(e, 0, sizeof(*e));
	e->memfd = -1;
}

static void entry_fill(struct files_cache_entry *e, bool nofollow, int memfd,
		       const struct proto_stat *st)
{
	e->nofollow = nofollow;
	e->memfd = memfd;
	struct stat lst;
	if (memfd >= 0 && fstat(memfd, &lst) == 0) {
		e->dev = lst.st_dev;
		e->ino = lst.st_ino;
	}
	if (st)
		e->st = *st;
	clock_gettime(CLOCK_MONOTONIC, &e->when);
}

const struct files_cache_entry *trace_files_cache_get(struct files *f, const char *path,
						      bool nofollow)
{
	/* once, not per slot: this runs on every remote open */
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (unsigned i = 0; i < FILES_CACHE_SLOTS; i++) {
		struct files_cache_entry *e = &f->cache[i];
		if (!e->path)
			continue;
		if (ns_between(&e->when, &now) > f->cache_ttl_ns) {
			cache_drop(e);
			continue;
		}
		if (e->nofollow != nofollow || strcmp(e->path, path))
			continue;
		f->cache_hits++;
		return e;
	}
	return NULL;
}

void trace_files_cache_put(struct files *f, const char *path, bool nofollow, int memfd,
			   const struct proto_stat *st, int error)
{
	struct files_cache_entry *victim = NULL;
	for (unsigned i = 0; i < FILES_CACHE_SLOTS; i++) {
		struct files_cache_entry *e = &f->cache[i];
		if (!e->path || (e->nofollow == nofollow && !strcmp(e->path, path))) {
			victim = e;
			break;
		}
		if (!victim || ns_between(&e->when, &victim->when) > 0) /* e is older */
			victim = e;
	}
	cache_drop(victim);
	victim->path = strdup(path);
	if (!victim->path) {
		if (memfd >= 0)
			close(memfd);
		return;
	}
	entry_fill(victim, nofollow, memfd, st);
	victim->error = error;
}

struct files_cache_entry *trace_files_shared_get(struct files *f, const char *path, bool nofollow)
{
	for (unsigned i = 0; i < FILES_SHARED_SLOTS; i++) {
		struct files_cache_entry *e = &f->shared[i];
		if (e->path && e->nofollow == nofollow && !strcmp(e->path, path)) {
			clock_gettime(CLOCK_MONOTONIC, &e->when); /* recently used */
			return e;
		}
	}
	return NULL;
}

void trace_files_shared_drop(struct files *f, struct files_cache_entry *e)
{
	if (e->path)
		f->shared_bytes -= e->st.size;
	cache_drop(e);
}

/* the least recently used copy, or a free slot */
static struct files_cache_entry *shared_victim(struct files *f)
{
	struct files_cache_entry *victim = NULL;
	for (unsigned i = 0; i < FILES_SHARED_SLOTS; i++) {
		struct files_cache_entry *e = &f->shared[i];
		if (!e->path)
			return e;
		if (!victim || ns_between(&e->when, &victim->when) > 0)
			victim = e;
	}
	return victim;
}

void trace_files_shared_put(struct files *f, const char *path, bool nofollow, int memfd,
			    const struct proto_stat *st)
{
	struct files_cache_entry *old = trace_files_shared_get(f, path, nofollow);
	if (old)
		trace_files_shared_drop(f, old);
	while (f->shared_bytes && f->shared_bytes + st->size > f->max_file_size) {
		struct files_cache_entry *e = shared_victim(f);
		if (!e->path)
			break;
		trace_files_shared_drop(f, e);
	}
	struct files_cache_entry *slot = shared_victim(f);
	trace_files_shared_drop(f, slot);
	slot->path = strdup(path);
	if (!slot->path) {
		close(memfd);
		return;
	}
	entry_fill(slot, nofollow, memfd, st);
	f->shared_bytes += st->size;
}

static bool under(const char *entry, const char *path, size_t n)
{
	return !strncmp(entry, path, n) &&
	       (entry[n] == '\0' || entry[n] == '/' || (n == 1 && path[0] == '/'));
}

void trace_files_cache_invalidate(struct files *f, const char *path)
{
	size_t n = strlen(path);
	for (unsigned i = 0; i < FILES_CACHE_SLOTS; i++) {
		struct files_cache_entry *e = &f->cache[i];
		if (e->path && under(e->path, path, n))
			cache_drop(e);
	}
	for (unsigned i = 0; i < FILES_SHARED_SLOTS; i++) {
		struct files_cache_entry *e = &f->shared[i];
		if (e->path && under(e->path, path, n))
			trace_files_shared_drop(f, e);
	}
}

static void cache_clear(struct files *f)
{
	for (unsigned i = 0; i < FILES_CACHE_SLOTS; i++)
		if (f->cache[i].path)
			cache_drop(&f->cache[i]);
	for (unsigned i = 0; i < FILES_SHARED_SLOTS; i++)
		if (f->shared[i].path)
			trace_files_shared_drop(f, &f->shared[i]);
}

/* ---------------------------------------------------------------- undo */

static int64_t ns_between(const struct timespec *from, const struct timespec *to)
{
	return (int64_t)(to->tv_sec - from->tv_sec) * 1000000000LL + (to->tv_nsec - from->tv_nsec);
}

static int64_t ns_since(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return ns_between(t, &now);
}

bool trace_files_undo_replay(struct files *f, const struct tracer_call *call,
			     struct tracer_result *out)
{
	for (unsigned i = 0; i < FILES_UNDO_SLOTS; i++) {
		struct files_undo *u = &f->undo[i];
		if (!u->armed || u->kind != UNDO_REPLAY || u->tid != call->pid ||
		    u->nr != call->nr || memcmp(u->args, call->args, sizeof(u->args)))
			continue;
		u->armed = false;
		if (ns_since(&u->when) > FILES_REPLAY_NS)
			continue;
		hm_debug("pid %d: syscall %d re-issued after an interruption: same answer",
			 call->pid, call->nr);
		*out = u->result;
		return true;
	}
	return false;
}

struct files_undo *trace_files_undo_slot(struct files *f, const struct tracer_call *call,
					 enum files_undo_kind kind)
{
	/* a slot is reused after FILES_UNDO_SLOTS newer calls: by then its reply was long
	 * delivered or abandoned */
	struct files_undo *u = &f->undo[f->undo_next++ % FILES_UNDO_SLOTS];
	memset(u, 0, sizeof(*u));
	u->f = f;
	u->kind = kind;
	u->tid = call->pid;
	u->nr = call->nr;
	memcpy(u->args, call->args, sizeof(u->args));
	return u;
}

void trace_files_undo_run(void *arg)
{
	struct files_undo *u = arg;
	struct files *f = u->f;
	clock_gettime(CLOCK_MONOTONIC, &u->when);
	if (u->kind == UNDO_REPLAY) {
		u->armed = true;
		return;
	}
	struct files_node *n = trace_files_node_find(f, u->dev, u->ino);
	if (n)
		node_remove(f, n);
	struct hm_err err = {0};
	if (client_unlink(f->client, u->path, 0, &err) < 0)
		hm_debug("undo the creation of %s: %s", u->path, err.msg);
}

struct tracer_result trace_files_replayable(struct files *f, const struct tracer_call *call,
					    struct tracer_result result)
{
	struct files_undo *u = trace_files_undo_slot(f, call, UNDO_REPLAY);
	u->result = result;
	result.undo = trace_files_undo_run;
	result.undo_arg = u;
	return result;
}

/* ---------------------------------------------------------------- register */

int trace_files_register(struct trace_session *s, struct hm_err *err)
{
	if (!s->fs)
		return 0; /* fs mode local: nothing to intercept */
	struct files *f = calloc(1, sizeof(*f));
	if (!f)
		return hm_err_set(err, ENOMEM, "file handlers");
	f->s = s;
	f->client = s->client;
	f->fs = s->fs;
	f->mirror_fd = -1;
	f->self_fds = -1;
	for (unsigned i = 0; i < FILES_CACHE_SLOTS; i++)
		f->cache[i].memfd = -1;
	for (unsigned i = 0; i < FILES_SHARED_SLOTS; i++)
		f->shared[i].memfd = -1;
	const struct policy_config *c = &s->cfg;
	f->max_file_size =
	    c->feature.fs.max_file_size ? c->feature.fs.max_file_size : POLICY_FS_MAX_FILE_DEFAULT;
	f->cache_ttl_ns = (c->feature.fs.cache_ttl_set ? (int64_t)c->feature.fs.cache_ttl_ms
						       : POLICY_FS_CACHE_TTL_MS_DEFAULT) *
			  1000000LL;
	f->writes =
	    c->feature.fs.mode == POLICY_FS_MODE_WRITE ||
	    (c->feature.fs.mode != POLICY_FS_MODE_LOCAL && c->feature.fs.read_write.len > 0);
	s->files = f;
	if (trace_files_register_open(f, err) < 0 || trace_files_register_stat(f, err) < 0 ||
	    trace_files_register_dir(f, err) < 0 ||
	    (f->writes && trace_files_register_write(f, err) < 0))
		return -1;
	hm_debug("file handlers: remote reads%s", f->writes ? " and writes" : "");
	return 0;
}

void trace_files_release(struct trace_session *s)
{
	struct files *f = s->files;
	if (!f)
		return;
	if (f->writers)
		trace_files_sync_all(f);
	hm_info("remote files: %lu agent calls, %lu reads from the %lld ms cache, %lu opens of "
		"a shared big file",
		f->remote_ops, f->cache_hits, (long long)(f->cache_ttl_ns / 1000000),
		f->shared_hits);
	cache_clear(f);
	for (size_t i = 0; i < f->nbuckets; i++) {
		struct files_node *n = f->buckets[i];
		while (n) {
			struct files_node *next = n->hnext;
			node_free(f, n);
			n = next;
		}
	}
	free(f->buckets);
	trace_files_mirror_remove(f);
	trace_files_cwd_release(f);
	if (f->self_fds >= 0)
		close(f->self_fds);
	free(f);
	s->files = NULL;
}
