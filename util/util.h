/* util: error reporting, cleanup helpers, logging and small I/O helpers shared by
 * every hermit module. Fallible functions return < 0 and fill a struct hm_err so
 * the caller can add context and, at the top, print one clear line. */
#ifndef HERMIT_UTIL_H
#define HERMIT_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <time.h>

#define HM_ERR_MSG_MAX 1024

struct hm_err {
	int code; /* errno value, 0 when the failure has no errno */
	char msg[HM_ERR_MSG_MAX];
};

/* Fill err with a formatted message; when code != 0, ": strerror(code)" is appended.
 * Always returns -1 so callers can `return hm_err_set(...)`. */
int hm_err_set(struct hm_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepend "context: " to an error already filled by a callee. Returns -1. */
int hm_err_prefix(struct hm_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* For messages that already say everything: err->code keeps the errno callers test,
 * without the ": strerror" suffix hm_err_set adds. Returns -1. */
int hm_err_plain(struct hm_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Command-line tools: print "prog: message" on stderr as one line and return code,
 * so main can `return hm_cli_fail(...)`. */
int hm_cli_fail(const char *prog, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* getopt_long with ':' first in its optstring: opt ':' (an option without its value) or
 * anything else (an unknown option) as hm_cli_fail's one line, which points at help
 * ("see HELP"). */
int hm_cli_bad_option(const char *prog, int code, int opt, char *const argv[], const char *help);
/* Convenience: hm_err_set(err, errno, ...). */
#define hm_err_errno(err, ...) hm_err_set((err), errno, __VA_ARGS__)

/* Cleanup on scope exit, crun style: the macro is only the attribute, the declaration
 * stays whole and initialised: `hm_cleanup_close int fd = -1;`,
 * `hm_cleanup_free char *p = NULL;`, `hm_cleanup_fclose FILE *f = NULL;`.
 * Hand a value on with hm_steal_fd / hm_steal_ptr. The cleanups keep errno. */
void hm_closep(int *fd);
void hm_freep(void *p);
void hm_fclosep(FILE **f);
#define hm_cleanup_close __attribute__((cleanup(hm_closep)))
#define hm_cleanup_free __attribute__((cleanup(hm_freep)))
#define hm_cleanup_fclose __attribute__((cleanup(hm_fclosep)))
static inline int hm_steal_fd(int *fd)
{
	int r = *fd;
	*fd = -1;
	return r;
}
static inline void *hm_steal_ptr(void *pp)
{
	void **p = (void **)pp;
	void *r = *p;
	*p = NULL;
	return r;
}

/* logging on stderr, leveled */
enum hm_log_level { HM_LOG_DEBUG = 0, HM_LOG_INFO, HM_LOG_WARN, HM_LOG_ERROR, HM_LOG_QUIET };
void hm_log_init(const char *prog, enum hm_log_level level);
enum hm_log_level hm_log_level(void);
void hm_log(enum hm_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define hm_debug(...) hm_log(HM_LOG_DEBUG, __VA_ARGS__)
#define hm_info(...) hm_log(HM_LOG_INFO, __VA_ARGS__)
#define hm_warn(...) hm_log(HM_LOG_WARN, __VA_ARGS__)
#define hm_error(...) hm_log(HM_LOG_ERROR, __VA_ARGS__)
/* Text for a terminal: control characters (C0 but tab, DEL, and C1 as UTF-8) become
 * \xNN. Names and errors come from agents, pods and API servers: an escape sequence in
 * one must not retitle, redraw or answer-back into the operator's terminal, nor a
 * newline forge a log line. hm_log and hm_cli_fail print their message through it.
 * Always NUL-terminated (cut at a whole character); returns out. */
const char *hm_printable(const char *in, char *out, size_t out_len);
/* One line to f (fmt without its newline), through hm_printable. */
void hm_print_line(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Time and waiting. A deadline is a point of CLOCK_MONOTONIC in milliseconds (hm_now_ms
 * terms); HM_NO_DEADLINE waits for ever. */
#define HM_NO_DEADLINE ((int64_t)-1)
int64_t hm_now_ms(void); /* CLOCK_MONOTONIC */
/* The deadline timeout_ms from now; a negative timeout gives HM_NO_DEADLINE. */
int64_t hm_deadline_in(int64_t timeout_ms);
/* What is left until deadline_ms as a poll(2) timeout: 0 once passed, -1 for none. */
int hm_ms_until(int64_t deadline_ms);
/* The absolute CLOCK_REALTIME time ms from now, as pthread_*_timed* take it. */
void hm_realtime_in(struct timespec *ts, int ms);
/* Wait until fd reports one of events or deadline_ms passes, retrying EINTR with the time
 * left. Returns the revents (> 0), 0 at the deadline, -1 with errno when poll fails.
 * A passed deadline still looks once, so a ready fd is reported. */
int hm_poll_fd(int fd, short events, int64_t deadline_ms);
/* Connect fd to sa; a non-blocking fd is waited for until deadline_ms (a blocking one
 * waits in connect as the kernel decides). 0 once connected, else -1 with errno and
 * err->code the reason (ETIMEDOUT at the deadline) and the message "connect: ...";
 * err may be NULL. */
int hm_connect_deadline(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline_ms,
			struct hm_err *err);
/* The waiting half of hm_connect_deadline, for a caller that started the connect itself
 * and saw EINPROGRESS: the same results. */
int hm_connect_wait(int fd, int64_t deadline_ms, struct hm_err *err);

/* I/O: all fds opened O_CLOEXEC. */
ssize_t hm_read_all(int fd, void *buf, size_t len);	   /* until len or EOF; <0 on error */
ssize_t hm_write_all(int fd, const void *buf, size_t len); /* <0 on error */
/* Write data to an existing file (O_WRONLY|O_TRUNC), e.g. cgroup and proc files. */
int hm_write_file(const char *path, const char *data, struct hm_err *err);
int hm_write_file_at(int dirfd, const char *path, const char *data, struct hm_err *err);
/* Create or replace a file with mode. */
int hm_create_file(const char *path, const void *data, size_t len, mode_t mode, struct hm_err *err);
/* Read fd to EOF into a malloc'ed, NUL-terminated buffer; *len excludes the NUL.
 * size_hint (e.g. st_size) sizes the first allocation; max > 0 fails with EFBIG once
 * more than max bytes arrive. what names the source in messages. */
int hm_read_fd(int fd, size_t size_hint, size_t max, const char *what, char **out, size_t *len,
	       struct hm_err *err);
/* Read a whole file, NUL-terminated; *len excludes the NUL. */
int hm_read_file(const char *path, char **out, size_t *len, struct hm_err *err);
int hm_mkdir_p(const char *path, mode_t mode, struct hm_err *err);
/* openat2(dirfd, path, flags | O_CLOEXEC, mode, resolve) with RESOLVE_* flags
 * (<linux/openat2.h>), retried on the EAGAIN of RESOLVE_IN_ROOT/RESOLVE_BENEATH. mode
 * counts only with O_CREAT or O_TMPFILE. Returns the fd, or < 0 with err->code the errno
 * (ENOSYS before Linux 5.6) and the message "PATH: strerror". */
int hm_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve,
	       struct hm_err *err);
/* Fields of /proc/PID/status by key ("Tgid", "Uid", "CapBnd"...): each value is the rest
 * of its line, leading blanks skipped. Reads only as far as the last field asked for.
 * 0 when all were found; -1 with errno ESRCH (no such process) or ENOENT (a field is
 * missing; the found ones are filled). */
struct hm_proc_field {
	const char *key;
	char value[96];
	bool found;
};
int hm_proc_status(pid_t pid, struct hm_proc_field *fields, size_t n);
/* Remove a directory tree (does not cross mount points). Missing path is success. */
int hm_rm_rf(const char *path, struct hm_err *err);

/* parsing */
int hm_parse_u64(const char *s, uint64_t *out);	 /* decimal, whole string, <0 on error */
int hm_parse_size(const char *s, uint64_t *out); /* 123, 64k, 64M, 1G (powers of 1024) */

/* Adaptive spinning before a blocking wait for a message that usually comes within
 * microseconds (a reply, the next request of a burst):
 *   uint64_t t0 = hm_now_ns();
 *   while (!try_nonblocking() && hm_spin_more(&s, t0)) ;  then poll if still nothing;
 *   hm_spin_waited(&s, t0) once it came.
 * It spins (yielding the CPU to any other runnable thread) for at most HM_SPIN_NS, and
 * only while the last wait was shorter than twice that. */
#define HM_SPIN_NS 50000u
struct hm_spin {
	uint64_t last_wait_ns; /* how long the last wait took; 0 at first: spin */
};
uint64_t hm_now_ns(void); /* CLOCK_MONOTONIC */
bool hm_spin_more(const struct hm_spin *s, uint64_t since_ns);
void hm_spin_waited(struct hm_spin *s, uint64_t since_ns);

#define HM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
