/* Interfaces between the file handlers (files_*.c). Not for the rest of the tracer.
 *
 * How remote files reach the program:
 *  - a regular file is read whole from the agent into a memfd (sealed, reopened
 *    read-only) that is installed as the result of open: read, pread, lseek and mmap
 *    then run at local speed. fstat on it answers with the remote file's metadata: the
 *    memfd's inode is recorded (a "node") when it is made, and fstat looks the fd up by
 *    the inode /proc/TID/fd/N leads to, which survives dup, fork and SCM_RIGHTS.
 *  - a directory is "materialized" in a private mirror tree (BASE/root stands for the
 *    target's "/"): one placeholder entry per remote name, of the right type, so that
 *    getdents64 runs natively. A path the program reaches through the mirror (relative
 *    to a mirror directory fd or working directory) is mapped back to the remote path.
 *  - in write mode, a file opened for writing is a memfd too; trace-run keeps a
 *    reference and writes the content back on close, fsync, exec, exit and when the
 *    session ends (files_write.c).
 *
 * All of it runs on the supervisor thread, one call at a time: no locking. */
#ifndef HERMIT_TRACER_FILES_INTERNAL_H
#define HERMIT_TRACER_FILES_INTERNAL_H

#include <sys/stat.h>
#include <time.h>

#include "tracer/redirect/session.h"

enum files_node_kind {
	NODE_FILE,  /* read-only memfd */
	NODE_WRITE, /* writable memfd, written back */
	NODE_DIR,   /* materialized directory */
};

struct files_node {
	dev_t dev;
	ino_t ino;
	enum files_node_kind kind;
	char *path;	      /* remote, absolute */
	struct proto_stat st; /* FILE: at read time; WRITE: at open time */
	/* NODE_WRITE */
	int keep_fd; /* trace-run's own reference to the content; -1 once released */
	struct timespec synced_mtime, synced_ctime;
	off_t synced_size;
	struct files_node *hnext;	  /* hash chain */
	struct files_node *older, *newer; /* FILE and DIR nodes, for eviction */
};

/* A non-idempotent call whose result the program may never have received: Go's
 * preemption signal can interrupt the syscall after the agent did the work, and the
 * program then issues the very same syscall again. */
enum files_undo_kind {
	UNDO_REPLAY,   /* the same call again soon: answer with the same result */
	UNDO_UNCREATE, /* an O_EXCL create: take the file back so the retry can make it */
};
struct files_undo {
	struct files *f;
	enum files_undo_kind kind;
	bool armed; /* abandoned, waiting for the retry */
	pid_t tid;
	int nr;
	uint64_t args[6];
	struct tracer_result result; /* UNDO_REPLAY: RETURN or ERROR */
	struct timespec when;
	char path[PATH_MAX]; /* UNDO_UNCREATE */
	dev_t dev;
	ino_t ino;
};
#define FILES_UNDO_SLOTS 16

/* Remote reads of the last few milliseconds, by path: a burst of opens of one file (a
 * retry after Go's preemption signal, a program that reads a file twice, a tight loop)
 * costs one agent round trip. The content is a sealed memfd, shared read-only by every
 * fd handed out from it: an open it answers makes no request at all. Writes through
 * trace-run drop the entries they touch; changes made in the target itself show after
 * at most feature.fs.cache_ttl_ms (files->cache_ttl_ns). */
#define FILES_CACHE_SLOTS 32
struct files_cache_entry {
	char *path; /* NULL: free */
	bool nofollow;
	int error; /* the read failed with it; memfd -1 */
	int memfd; /* sealed content */
	dev_t dev; /* its inode: the node every fd shares */
	ino_t ino;
	struct proto_stat st;
	struct timespec when;
};

/* Big remote files, shared between opens: the sealed memfd of a read of at least
 * FILES_SHARE_MIN bytes stays here after the short cache above has forgotten it. A later
 * open asks the target for the file's stat (one small round trip instead of the whole
 * content) and, when the version is the same (inode, size, mtime, ctime), hands out
 * another read-only open of the same memfd: two opens of a 900 MB file cost one copy
 * and one transfer. Least recently used first out, bounded in slots and in bytes
 * (feature.fs.max_file_size); an evicted copy lives on as long as the program's fds. */
#define FILES_SHARE_MIN (1u << 20)
#define FILES_SHARED_SLOTS 8

struct files {
	struct trace_session *s;
	struct client *client;
	const struct policy_fs *fs;
	bool writes;	       /* remote writes possible: fs mode write, or a read_write list */
	char base[PATH_MAX];   /* private temp dir, "" until first needed */
	char mirror[PATH_MAX]; /* base/root: the target's "/" */
	size_t mirror_len;
	int mirror_fd; /* O_PATH of mirror, -1 until made */
	int self_fds;  /* O_PATH of /proc/self/fd, -1 until first needed */
	/* nodes by (dev, ino) */
	struct files_node **buckets;
	size_t nbuckets, count, writers;
	size_t kept; /* NODE_WRITE nodes that still have their keep_fd */
	struct files_node *oldest, *newest;
	struct files_undo undo[FILES_UNDO_SLOTS];
	struct files_cache_entry cache[FILES_CACHE_SLOTS];
	int64_t cache_ttl_ns; /* feature.fs.cache_ttl_ms; 0: nothing is cached */
	unsigned long cache_hits;
	struct files_cache_entry shared[FILES_SHARED_SLOTS];
	uint64_t shared_bytes;
	unsigned long shared_hits;
	uint64_t max_file_size; /* feature.fs.max_file_size: larger files fail with EFBIG */
	struct tracer_once warned_too_big; /* files over max_file_size, reported once each */
	unsigned undo_next;
	bool warned_agent;
	unsigned long remote_ops;
	/* remote working directories, by process (files_dir.c) */
	struct files_cwd *cwds;
	size_t ncwds, cap_cwds;
};

/* ---- files.c: routing, nodes, helpers ---- */

enum files_route {
	ROUTE_LOCAL,  /* let the kernel do it */
	ROUTE_REMOTE, /* target->path in the target */
	ROUTE_FD,     /* an empty path with AT_EMPTY_PATH: about dirfd itself */
	ROUTE_FAIL,   /* target->error */
};

struct files_target {
	char path[PATH_MAX]; /* ROUTE_REMOTE: absolute, normalized, in the target */
	enum policy_fs_verdict verdict;
	bool mapped;	     /* reached through the mirror or a remote working directory */
	bool relative;	     /* the program gave a relative path */
	bool trailing_slash; /* "dir/": must be a directory */
	int error;
};

/* Read the path argument at addr, resolve it as the program would (dirfd: AT_FDCWD or
 * a directory fd of the program), map mirror paths back and ask the policy. An empty
 * path (or a NULL one) is ROUTE_FD when empty_is_fd, else LOCAL; so is anything the
 * kernel should judge (unreadable pointer, bad dirfd). op names the call in logs. */
enum files_route trace_files_route_path(struct files *f, const struct tracer_call *call, int dirfd,
					uint64_t addr, enum policy_fs_access access,
					bool empty_is_fd, const char *op, struct files_target *t);
/* trace_files_route_path (an empty path LOCAL) for the handlers that act only on a path
 * of the target: true for t->path; false with *res the call's answer (the routing's
 * error, or the kernel's) otherwise. */
bool trace_files_route_remote(struct files *f, const struct tracer_call *call, int dirfd,
			      uint64_t addr, enum policy_fs_access access, const char *op,
			      struct files_target *t, struct tracer_result *res);

/* The node an fd of the program refers to (fd AT_FDCWD: its working directory), or NULL
 * when it is not one of ours; *lst (may be NULL) gets the local inode's stat. */
struct files_node *trace_files_node_of_fd(struct files *f, pid_t tid, int fd, struct stat *lst);
struct files_node *trace_files_node_find(struct files *f, dev_t dev, ino_t ino);
/* Record fd (trace-run's) as kind for path. FILE/DIR nodes are evicted oldest first
 * beyond a bound; WRITE nodes stay until released. */
struct files_node *trace_files_node_add(struct files *f, int fd, enum files_node_kind kind,
					const char *path, const struct proto_stat *st,
					struct hm_err *err);
/* The metadata fstat shows for a node (DIR: asks the agent); lst: the local inode's
 * stat (for the size and times of a written file). */
int trace_files_node_stat(struct files *f, struct files_node *n, const struct stat *lst,
			  struct proto_stat *out, struct hm_err *err);

/* The errno to give the program for a failed agent call: the agent's, or EIO when the
 * connection itself failed (logged once). */
int trace_files_agent_errno(struct files *f, const char *op, const char *path,
			    const struct hm_err *err);

/* The program's umask, from /proc/TID/status (022 when unreadable). */
mode_t trace_files_umask(pid_t tid);

/* Non-idempotent calls: take an armed replay for this call, or get a fresh slot to put
 * in result->undo_arg (with trace_files_undo_run as result->undo). */
bool trace_files_undo_replay(struct files *f, const struct tracer_call *call,
			     struct tracer_result *out);
struct files_undo *trace_files_undo_slot(struct files *f, const struct tracer_call *call,
					 enum files_undo_kind kind);
void trace_files_undo_run(void *arg);
/* result with a replay undo attached */
struct tracer_result trace_files_replayable(struct files *f, const struct tracer_call *call,
					    struct tracer_result result);

/* The cached read of path, when fresh (NULL when there is none): memfd (borrowed) and
 * st, or error. */
const struct files_cache_entry *trace_files_cache_get(struct files *f, const char *path,
						      bool nofollow);
/* Remember a read (takes memfd, -1 with error). */
void trace_files_cache_put(struct files *f, const char *path, bool nofollow, int memfd,
			   const struct proto_stat *st, int error);
/* The shared copy of a big file (NULL when none); the caller revalidates it. */
struct files_cache_entry *trace_files_shared_get(struct files *f, const char *path, bool nofollow);
/* Keep memfd (taken; sealed, size bytes) as the shared copy of path at version st. */
void trace_files_shared_put(struct files *f, const char *path, bool nofollow, int memfd,
			    const struct proto_stat *st);
void trace_files_shared_drop(struct files *f, struct files_cache_entry *e);
/* Forget path and everything under it (trace-run changed it in the target), in both
 * the short cache and the shared copies. */
void trace_files_cache_invalidate(struct files *f, const char *path);

/* write a struct into the program: 0, or the errno to fail the call with */
int trace_files_put(const struct tracer_call *call, uint64_t addr, const void *buf, size_t len);

/* ---- files_dir.c ---- */
/* Read directory path from the target and mirror it; an O_RDONLY | O_DIRECTORY fd on
 * the mirror copy, and its node. */
int trace_files_dir_open(struct files *f, const char *path, struct hm_err *err);
/* Map an absolute local path inside the mirror to the target's; false when outside. */
bool trace_files_mirror_map(const struct files *f, const char *local, char *remote, size_t size);
void trace_files_mirror_remove(struct files *f);
int trace_files_register_dir(struct files *f, struct hm_err *err);
/* The remote directory thread tid's process chdir'd into (absolute, in the target), or
 * NULL when its working directory is the kernel's. Free while no process has one. */
const char *trace_files_cwd_get(struct files *f, pid_t tid);
void trace_files_cwd_release(struct files *f);

/* ---- files_open.c / files_stat.c / files_write.c ---- */
int trace_files_register_open(struct files *f, struct hm_err *err);
int trace_files_register_stat(struct files *f, struct hm_err *err);
int trace_files_register_write(struct files *f, struct hm_err *err);
/* Written files whose content trace-run keeps a reference to, at most: beyond, one
 * is written back and released, and only a close / fsync / dup2 on one of the
 * program's fds writes it back again (each kept file holds an fd of trace-run's). */
#define FILES_KEEP_MAX 256
void trace_files_release_kept(struct files *f);
/* Write back every pending file (the session ends). */
void trace_files_sync_all(struct files *f);
/* Write back the files open for writing at path, so that a read sees what the program
 * wrote (cheap when nothing is open for writing). */
void trace_files_sync_path(struct files *f, const char *path);

#endif
