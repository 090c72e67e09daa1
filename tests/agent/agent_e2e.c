/* agent_e2e: the checks tests/integration/20_agent.sh runs against a real agent and
 * real trace-pod pods. Each command asserts one thing (see e2e.h). */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#include "tests/agent/e2e.h"

/* ---- registry and helpers ---- */

static struct {
	const struct e2e_cmd *cmds;
	size_t n;
} tables[16];
static size_t ntables;

void e2e_register(const struct e2e_cmd *cmds, size_t n)
{
	if (ntables < HM_ARRAY_SIZE(tables))
		tables[ntables++] = (typeof(tables[0])){cmds, n};
}

int e2e_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "FAIL: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	return 1;
}

int e2e_ok(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("ok: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	fflush(stdout);
	return 0;
}

/* every errno a command names on its command line */
#define ERRNO_NAME(e)                                                                              \
	{                                                                                          \
#e, e                                                                              \
	}
static const struct {
	const char *name;
	int code;
} errno_names[] = {
    ERRNO_NAME(E2BIG),	     ERRNO_NAME(EACCES),       ERRNO_NAME(EADDRNOTAVAIL),
    ERRNO_NAME(EADDRINUSE),  ERRNO_NAME(EOPNOTSUPP),   ERRNO_NAME(EAFNOSUPPORT),
    ERRNO_NAME(EAGAIN),	     ERRNO_NAME(EBUSY),	       ERRNO_NAME(ECONNREFUSED),
    ERRNO_NAME(ECONNRESET),  ERRNO_NAME(EHOSTUNREACH), ERRNO_NAME(EINVAL),
    ERRNO_NAME(EISCONN),     ERRNO_NAME(ELOOP),	       ERRNO_NAME(EMFILE),
    ERRNO_NAME(ENETUNREACH), ERRNO_NAME(ENFILE),       ERRNO_NAME(ENOBUFS),
    ERRNO_NAME(ENOENT),	     ERRNO_NAME(ENOMEM),       ERRNO_NAME(ENOTCONN),
    ERRNO_NAME(EPERM),	     ERRNO_NAME(ESHUTDOWN),    ERRNO_NAME(ESRCH),
    ERRNO_NAME(ETIMEDOUT),   ERRNO_NAME(EUSERS),       ERRNO_NAME(EXDEV),
};

int e2e_errno_code(const char *name)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(errno_names); i++)
		if (!strcmp(errno_names[i].name, name))
			return errno_names[i].code;
	return -1;
}

const char *e2e_errno_name(int e)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(errno_names); i++)
		if (errno_names[i].code == e)
			return errno_names[i].name;
	return strerror(e);
}

struct client *e2e_connect(struct e2e_ctx *ctx)
{
	struct hm_err err = {0};
	struct client *c;
	struct client_opts opts = {.client_name = "agent_e2e",
				   .timeout_ms = 20000,
				   .disable_features = ctx->disable_features};
	if (client_connect(&ctx->ep, ctx->token, &opts, &c, &err) < 0) {
		e2e_fail("connect: %s", err.msg);
		return NULL;
	}
	return c;
}

struct client *e2e_session(struct e2e_ctx *ctx)
{
	if (!ctx->target) {
		e2e_fail("this command needs --target");
		return NULL;
	}
	client_cleanup_close struct client *c = e2e_connect(ctx);
	if (!c)
		return NULL;
	struct hm_err err = {0};
	struct client_session_info info;
	if (client_session_open(c, ctx->target, &info, &err) < 0) {
		e2e_fail("session on %s: %s", ctx->target, err.msg);
		return NULL;
	}
	return hm_steal_ptr(&c);
}

int e2e_parse_addr(const char *s, struct proto_addr *out)
{
	struct client_endpoint ep;
	if (client_endpoint_parse(s, &ep, NULL) < 0 || ep.transport != &client_transport_tcp)
		return -1;
	memset(out, 0, sizeof(*out));
	out->port = (uint16_t)atoi(ep.port);
	if (inet_pton(AF_INET, ep.host, out->addr) == 1) {
		out->family = PROTO_AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, ep.host, out->addr) == 1) {
		out->family = PROTO_AF_INET6;
		return 0;
	}
	return -1;
}

int e2e_agent_still_serves(struct e2e_ctx *ctx)
{
	struct client *c = e2e_connect(ctx);
	if (!c)
		return e2e_fail("the agent no longer accepts a good client");
	struct hm_err err = {0};
	int rc = 0;
	if (client_ping(c, &err) < 0) {
		rc = e2e_fail("the agent no longer answers a ping: %s", err.msg);
	} else if (ctx->target) {
		struct client_session_info info;
		char **vars;
		size_t n;
		if (client_session_open(c, ctx->target, &info, &err) < 0 ||
		    client_env(c, &vars, &n, &err) < 0)
			rc = e2e_fail("the agent no longer serves a session: %s", err.msg);
		else
			free(vars);
	}
	client_close(c);
	return rc;
}

static int read_local(const char *path, void **data, size_t *len)
{
	char *buf;
	struct hm_err err = {0};
	if (hm_read_file(path, &buf, len, &err) < 0) {
		e2e_fail("read local %s: %s", path, err.msg);
		return -1;
	}
	*data = buf;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- env ---- */

static int cmd_env_equals(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	void *raw;
	size_t len;
	if (read_local(argv[1], &raw, &len) < 0)
		return 1;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	char **vars;
	size_t n;
	if (client_env(c, &vars, &n, &err) < 0)
		return e2e_fail("ENV_GET: %s", err.msg);
	client_close(c);
	/* the expected list: the NUL-separated dump, without empty entries */
	size_t i = 0, off = 0;
	int rc = 0;
	const char *buf = raw;
	while (off < len && rc == 0) {
		const char *e = buf + off;
		size_t elen = strnlen(e, len - off);
		off += elen + 1;
		if (!elen)
			continue;
		if (i >= n)
			rc = e2e_fail(
			    "agent env has %zu entries, the pod's has more: missing '%.*s'", n,
			    (int)elen, e);
		else if (strlen(vars[i]) != elen || memcmp(vars[i], e, elen))
			rc = e2e_fail("env entry %zu: agent says '%s', pod has '%.*s'", i, vars[i],
				      (int)elen, e);
		i++;
	}
	if (rc == 0 && i != n)
		rc = e2e_fail("agent env has %zu entries, the pod's %zu", n, i);
	if (rc == 0)
		e2e_ok("environment of %s: %zu variables equal /proc/PID/environ", ctx->target, n);
	free(vars);
	free(raw);
	return rc;
}

static int cmd_env_has(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	char **vars;
	size_t n;
	if (client_env(c, &vars, &n, &err) < 0)
		return e2e_fail("ENV_GET: %s", err.msg);
	client_close(c);
	bool found = false;
	for (size_t i = 0; i < n; i++)
		found |= !strcmp(vars[i], argv[1]);
	free(vars);
	if (!found)
		return e2e_fail("%s not in the environment of %s", argv[1], ctx->target);
	return e2e_ok("%s has %s", ctx->target, argv[1]);
}

/* ---- files ---- */

static int cmd_read_equals(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	void *want;
	size_t want_len;
	if (read_local(argv[2], &want, &want_len) < 0)
		return 1;
	struct stat st;
	if (stat(argv[2], &st) < 0)
		return e2e_fail("stat %s: %s", argv[2], strerror(errno));
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_file_content fc;
	int rc = 0;
	if (client_read_file(c, argv[1], 0, 0, &fc, &err) < 0) {
		rc = e2e_fail("FILE_READ %s: %s", argv[1], err.msg);
	} else {
		if (fc.size != want_len || memcmp(fc.data, want, want_len))
			rc = e2e_fail("%s: %llu bytes differ from the %zu of %s", argv[1],
				      (unsigned long long)fc.size, want_len, argv[2]);
		else if (fc.st.size != (uint64_t)st.st_size || fc.st.mode != st.st_mode ||
			 fc.st.ino != st.st_ino)
			rc = e2e_fail(
			    "%s: stat (size %llu mode %o ino %llu) differs from the file's "
			    "(size %lld mode %o ino %llu)",
			    argv[1], (unsigned long long)fc.st.size, fc.st.mode,
			    (unsigned long long)fc.st.ino, (long long)st.st_size, st.st_mode,
			    (unsigned long long)st.st_ino);
		client_file_content_release(&fc);
	}
	/* FILE_STAT says the same as the read */
	struct proto_stat ps;
	if (rc == 0 && client_stat(c, argv[1], 0, &ps, &err) < 0)
		rc = e2e_fail("FILE_STAT %s: %s", argv[1], err.msg);
	else if (rc == 0 && (ps.size != (uint64_t)st.st_size || ps.ino != st.st_ino))
		rc = e2e_fail("FILE_STAT %s: size %llu ino %llu, expected %lld %llu", argv[1],
			      (unsigned long long)ps.size, (unsigned long long)ps.ino,
			      (long long)st.st_size, (unsigned long long)st.st_ino);
	client_close(c);
	free(want);
	if (rc == 0)
		e2e_ok("%s read intact (%zu bytes)", argv[1], want_len);
	return rc;
}

static int local_crc(const char *path, uLong *crc, uint64_t *size)
{
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return e2e_fail("open %s: %s", path, strerror(errno));
	static unsigned char buf[1 << 20];
	*crc = crc32(0, NULL, 0);
	*size = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0)
			return e2e_fail("read %s: %s", path, strerror(errno));
		if (n == 0)
			return 0;
		*crc = crc32(*crc, buf, (uInt)n);
		*size += (uint64_t)n;
	}
}

static uLong crc_of(const void *data, uint64_t size)
{
	uLong crc = crc32(0, NULL, 0);
	const unsigned char *p = data;
	while (size) {
		uInt n = size > (1u << 30) ? (1u << 30) : (uInt)size;
		crc = crc32(crc, p, n);
		p += n;
		size -= n;
	}
	return crc;
}

/* Big files: checksummed, read both into memory and into a memfd (the tracer's way). */
static int cmd_read_crc(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	uLong want_crc = 0;
	uint64_t want_size = 0;
	if (local_crc(argv[2], &want_crc, &want_size))
		return 1;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_file_content fc;
	double t0 = now_s();
	if (client_read_file(c, argv[1], 0, 0, &fc, &err) < 0)
		return e2e_fail("FILE_READ %s: %s", argv[1], err.msg);
	double dt = now_s() - t0;
	uLong got_crc = crc_of(fc.data, fc.size);
	uint64_t got_size = fc.size;
	client_file_content_release(&fc);
	if (got_size != want_size || got_crc != want_crc)
		return e2e_fail("%s: %llu bytes crc32 %08lx, expected %llu bytes crc32 %08lx",
				argv[1], (unsigned long long)got_size, got_crc,
				(unsigned long long)want_size, want_crc);

	hm_cleanup_close int mfd = memfd_create("e2e", MFD_CLOEXEC);
	if (mfd < 0)
		return e2e_fail("memfd_create: %s", strerror(errno));
	uint64_t fd_size = 0;
	struct proto_stat st;
	if (client_read_file_fd(c, argv[1], 0, 0, mfd, &st, &fd_size, &err) < 0)
		return e2e_fail("FILE_READ %s into a memfd: %s", argv[1], err.msg);
	client_close(c);
	void *map = fd_size ? mmap(NULL, fd_size, PROT_READ, MAP_PRIVATE, mfd, 0) : NULL;
	if (fd_size && map == MAP_FAILED)
		return e2e_fail("mmap memfd: %s", strerror(errno));
	uLong fd_crc = crc_of(map, fd_size);
	if (map)
		munmap(map, fd_size);
	if (fd_size != want_size || fd_crc != want_crc || st.size != want_size)
		return e2e_fail("%s into a memfd: %llu bytes crc32 %08lx, expected %llu %08lx",
				argv[1], (unsigned long long)fd_size, fd_crc,
				(unsigned long long)want_size, want_crc);
	return e2e_ok("%s: %llu bytes, crc32 %08lx matches (%.0f MB/s)", argv[1],
		      (unsigned long long)want_size, want_crc,
		      dt > 0 ? (double)want_size / dt / 1e6 : 0.0);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_readdir_equals(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	DIR *d = opendir(argv[2]);
	if (!d)
		return e2e_fail("opendir %s: %s", argv[2], strerror(errno));
	char *local[4096];
	size_t nlocal = 0;
	struct dirent *de;
	while ((de = readdir(d)) && nlocal < HM_ARRAY_SIZE(local)) {
		if (asprintf(&local[nlocal], "%s/%u", de->d_name, (unsigned)de->d_type) < 0)
			return e2e_fail("asprintf");
		nlocal++;
	}
	closedir(d);
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_dirent *ents;
	size_t n;
	if (client_readdir(c, argv[1], &ents, &n, &err) < 0)
		return e2e_fail("FILE_READDIR %s: %s", argv[1], err.msg);
	client_close(c);
	char **remote = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		if (asprintf(&remote[i], "%s/%u", ents[i].name, (unsigned)ents[i].type) < 0)
			return e2e_fail("asprintf");
	qsort(local, nlocal, sizeof(char *), compare_names);
	qsort(remote, n, sizeof(char *), compare_names);
	int rc = 0;
	for (size_t i = 0; i < n || i < nlocal; i++) {
		const char *l = i < nlocal ? local[i] : "(none)";
		const char *r = i < n ? remote[i] : "(none)";
		if (strcmp(l, r)) {
			rc = e2e_fail("%s: entry %zu (name/type) is %s through the agent, %s in %s",
				      argv[1], i, r, l, argv[2]);
			break;
		}
	}
	if (rc == 0)
		e2e_ok("%s lists the same %zu entries as %s", argv[1], n, argv[2]);
	for (size_t i = 0; i < nlocal; i++)
		free(local[i]);
	for (size_t i = 0; i < n; i++)
		free(remote[i]);
	free(remote);
	free(ents);
	return rc;
}

/* An escape attempt: reading and stat'ing PATH must fail, and must above all not return
 * the host's secret. */
static int cmd_read_denied(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	void *secret;
	size_t secret_len;
	if (read_local(argv[2], &secret, &secret_len) < 0)
		return 1;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_file_content fc;
	int rc = 0;
	if (client_read_file(c, argv[1], 0, 0, &fc, &err) == 0) {
		if (fc.size == secret_len && !memcmp(fc.data, secret, secret_len))
			rc = e2e_fail("ESCAPE: %s returned the host's %s", argv[1], argv[2]);
		else
			rc = e2e_fail("%s: read succeeded (%llu bytes), expected a failure",
				      argv[1], (unsigned long long)fc.size);
		client_file_content_release(&fc);
	} else {
		printf("FILE_READ %s failed as it must: %s\n", argv[1], err.msg);
	}
	struct proto_stat st;
	if (rc == 0 && client_stat(c, argv[1], 0, &st, &err) == 0)
		rc = e2e_fail("FILE_STAT %s succeeded (size %llu), expected a failure", argv[1],
			      (unsigned long long)st.size);
	client_close(c);
	free(secret);
	if (rc == 0)
		e2e_ok("%s stays inside the pod's root", argv[1]);
	return rc;
}

static int cmd_write_read(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	char content[256];
	snprintf(content, sizeof(content), "written through the agent by pid %d\n", (int)getpid());
	struct proto_file_write_reply wr;
	int rc = 0;
	struct client_file_content fc = {0};
	if (client_write_file(c, argv[1], PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC, 0644, 0, content,
			      strlen(content), &wr, &err) < 0)
		rc = e2e_fail("FILE_WRITE %s: %s", argv[1], err.msg);
	else if (client_read_file(c, argv[1], 0, 0, &fc, &err) < 0)
		rc = e2e_fail("FILE_READ %s after writing: %s", argv[1], err.msg);
	else if (fc.size != strlen(content) || memcmp(fc.data, content, fc.size))
		rc = e2e_fail("%s: read back %llu bytes that differ from what was written", argv[1],
			      (unsigned long long)fc.size);
	client_file_content_release(&fc);
	client_close(c);
	if (rc == 0)
		e2e_ok("%s written and read back", argv[1]);
	return rc;
}

/* Creates POD_DIR, then POD_DIR/f (mode 06777) and POD_DIR/d (mkdir, 07777); prints the modes the
 * agent gave them, "modes FILE DIR" in octal (before any umask: the agent has 022). */
static int cmd_create_modes(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	char file[PROTO_PATH_MAX], dir[PROTO_PATH_MAX];
	snprintf(file, sizeof(file), "%s/f", argv[1]);
	snprintf(dir, sizeof(dir), "%s/d", argv[1]);
	struct proto_file_write_reply wr;
	struct proto_stat fst, dst;
	int rc = 0;
	if (client_mkdir(c, argv[1], 0700, &err) < 0)
		rc = e2e_fail("FILE_MKDIR %s: %s", argv[1], err.msg);
	else if (client_write_file(c, file, PROTO_WRITE_CREATE | PROTO_WRITE_EXCL, 06777, 0, "x", 1,
				   &wr, &err) < 0)
		rc = e2e_fail("FILE_WRITE %s: %s", file, err.msg);
	else if (client_mkdir(c, dir, 07777, &err) < 0)
		rc = e2e_fail("FILE_MKDIR %s: %s", dir, err.msg);
	else if (client_stat(c, file, 0, &fst, &err) < 0 || client_stat(c, dir, 0, &dst, &err) < 0)
		rc = e2e_fail("FILE_STAT: %s", err.msg);
	else
		printf("modes %04o %04o\n", (unsigned)(fst.mode & 07777),
		       (unsigned)(dst.mode & 07777));
	client_close(c);
	return rc;
}

/* ---- sessions ---- */

/* SESSION_OPEN of ctx->target fails with the errno named. */
static int cmd_bad_target(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2 || !ctx->target)
		return 2;
	int want = e2e_errno_code(argv[1]);
	if (want < 0)
		return 2;
	struct client *c = e2e_connect(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_session_info info;
	int rc;
	if (client_session_open(c, ctx->target, &info, &err) == 0)
		rc = e2e_fail("session on %s opened (pid %d), expected %s", ctx->target, info.pid,
			      argv[1]);
	else if (err.code != want)
		rc = e2e_fail("session on %s: %s (errno %d), expected %s", ctx->target, err.msg,
			      err.code, argv[1]);
	else
		rc = e2e_ok("session on %s refused: %s", ctx->target, err.msg);
	client_close(c);
	return rc;
}

/* The session's pid equals PID (how pod/, pid/ and container/ targets resolve). */
static int cmd_session_pid(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct client *c = e2e_connect(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_session_info info;
	int rc;
	if (client_session_open(c, ctx->target ? ctx->target : "", &info, &err) < 0)
		rc = e2e_fail("session on %s: %s", ctx->target, err.msg);
	else if (info.pid != atoi(argv[1]))
		rc = e2e_fail("session on %s is pid %d, expected %s", ctx->target, info.pid,
			      argv[1]);
	else
		rc = e2e_ok("%s resolves to pid %d (%s)", ctx->target, info.pid, info.description);
	client_close(c);
	return rc;
}

/* Requests before SESSION_OPEN fail with ENOTCONN; a second SESSION_OPEN with EISCONN. */
static int cmd_session_rules(struct e2e_ctx *ctx, int argc, char **argv)
{
	(void)argv;
	if (argc != 1 || !ctx->target)
		return 2;
	struct client *c = e2e_connect(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	char **vars;
	size_t n;
	int rc = 0;
	struct client_session_info info;
	if (client_env(c, &vars, &n, &err) == 0)
		rc = e2e_fail("ENV_GET without a session succeeded");
	else if (err.code != ENOTCONN)
		rc = e2e_fail("ENV_GET without a session: %s, expected ENOTCONN", err.msg);
	else if (client_session_open(c, ctx->target, &info, &err) < 0)
		rc = e2e_fail("session: %s", err.msg);
	else if (client_session_open(c, ctx->target, &info, &err) == 0)
		rc = e2e_fail("a second SESSION_OPEN on one connection succeeded");
	else if (err.code != EISCONN)
		rc = e2e_fail("second SESSION_OPEN: %s, expected EISCONN", err.msg);
	client_close(c);
	if (rc == 0)
		e2e_ok("no requests before SESSION_OPEN, one session per connection");
	return rc;
}

/* Open a session, tell the test through READY_FILE, then wait up to TIMEOUT_S seconds
 * for the agent to end the session with ERRNO; afterwards requests fail cleanly. */
static int cmd_session_ended(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int want = e2e_errno_code(argv[1]);
	if (want < 0)
		return 2;
	int timeout_s = atoi(argv[2]);
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	if (hm_create_file(argv[3], "ready\n", 6, 0644, &err) < 0)
		return e2e_fail("%s", err.msg);
	struct pollfd p = {.fd = client_event_fd(c), .events = POLLIN};
	int n = poll(&p, 1, timeout_s * 1000);
	if (n <= 0)
		return e2e_fail("the session did not end within %d s", timeout_s);
	struct hm_err why = {0};
	if (!client_ended(c, &why))
		return e2e_fail("event fd readable but the client is not ended");
	if (why.code != want)
		return e2e_fail("session ended with '%s' (errno %d), expected %s", why.msg,
				why.code, argv[1]);
	char **vars;
	size_t nv;
	if (client_env(c, &vars, &nv, &err) == 0)
		return e2e_fail("ENV_GET succeeded after the session ended");
	if (err.code != want)
		return e2e_fail("ENV_GET after the end: '%s' (errno %d), expected %s", err.msg,
				err.code, argv[1]);
	client_close(c);
	return e2e_ok("session ended cleanly: %s; later requests fail: %s", why.msg, err.msg);
}

/* N threads issue mixed requests on one connection: replies must reach their callers. */
struct conc_arg {
	struct client *c;
	const char *path;
	int iterations;
	char failure[HM_ERR_MSG_MAX + 128];
};

static void *conc_main(void *arg)
{
	struct conc_arg *a = arg;
	struct hm_err err = {0};
	for (int i = 0; i < a->iterations && !a->failure[0]; i++) {
		char **vars;
		size_t n;
		struct proto_stat st;
		struct client_file_content fc;
		if (client_env(a->c, &vars, &n, &err) < 0) {
			snprintf(a->failure, sizeof(a->failure), "ENV_GET: %s", err.msg);
			break;
		}
		free(vars);
		if (client_stat(a->c, a->path, 0, &st, &err) < 0 ||
		    client_read_file(a->c, a->path, 0, 0, &fc, &err) < 0) {
			snprintf(a->failure, sizeof(a->failure), "%s: %s", a->path, err.msg);
			break;
		}
		if (fc.size != st.size)
			snprintf(a->failure, sizeof(a->failure), "read %llu bytes, stat says %llu",
				 (unsigned long long)fc.size, (unsigned long long)st.size);
		client_file_content_release(&fc);
		if (client_ping(a->c, &err) < 0)
			snprintf(a->failure, sizeof(a->failure), "PING: %s", err.msg);
	}
	return NULL;
}

static int cmd_concurrent(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int threads = atoi(argv[1]);
	if (threads < 1 || threads > 256)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct conc_arg args[256];
	pthread_t th[256];
	for (int i = 0; i < threads; i++) {
		args[i] = (struct conc_arg){.c = c, .path = argv[2], .iterations = 50};
		pthread_create(&th[i], NULL, conc_main, &args[i]);
	}
	int rc = 0;
	for (int i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		if (args[i].failure[0] && rc == 0)
			rc = e2e_fail("thread %d: %s", i, args[i].failure);
	}
	client_close(c);
	if (rc == 0)
		e2e_ok("%d threads x 50 rounds of env, stat, read and ping on one connection",
		       threads);
	return rc;
}

/* ---- hostile peers ---- */

static int raw_connect(struct e2e_ctx *ctx)
{
	struct hm_err err = {0};
	int fd = client_endpoint_dial(&ctx->ep, 5000, &err);
	if (fd < 0)
		e2e_fail("connect: %s", err.msg);
	return fd;
}

static int send_frame(int fd, uint16_t type, uint32_t id, uint32_t len, const void *payload,
		      size_t sent_len)
{
	uint8_t hdr[PROTO_HDR_LEN];
	struct proto_hdr h = {.len = len, .type = type, .flags = 0, .id = id};
	proto_hdr_encode(hdr, &h);
	if (send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL) != (ssize_t)sizeof(hdr))
		return -1;
	/* the agent may rightly hang up on the header alone */
	if (sent_len && send(fd, payload, sent_len, MSG_NOSIGNAL) != (ssize_t)sent_len &&
	    errno != EPIPE && errno != ECONNRESET)
		return -1;
	return 0;
}

/* The agent must close the connection within timeout_ms, without answering. */
static int expect_closed(int fd, int timeout_ms, const char *what)
{
	size_t got = 0;
	double until = now_s() + timeout_ms / 1000.0;
	for (;;) {
		int left = (int)((until - now_s()) * 1000);
		if (left <= 0)
			return e2e_fail("%s: the agent kept the connection open for %d ms", what,
					timeout_ms);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, left) <= 0)
			continue;
		char buf[4096];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			break;
		if (n < 0)
			return e2e_fail("%s: recv: %s", what, strerror(errno));
		got += (size_t)n;
	}
	if (got)
		return e2e_fail("%s: the agent answered %zu bytes before closing", what, got);
	printf("%s: connection closed by the agent\n", what);
	return 0;
}

static int hello(struct e2e_ctx *ctx, int fd)
{
	struct hm_err err = {0};
	if (proto_client_handshake(fd, ctx->token, "agent_e2e raw", 0, 5000, NULL, &err) < 0)
		return e2e_fail("handshake: %s", err.msg);
	return 0;
}

/* reject KIND: one kind of hostile or broken peer; it is cut off, others still served. */
static int cmd_reject(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return 2;
	const char *kind = argv[1];
	int wait_ms = argc == 3 ? atoi(argv[2]) : 3000;
	hm_cleanup_close int fd = raw_connect(ctx);
	if (fd < 0)
		return 1;
	uint8_t junk[64];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	int rc;
	if (!strcmp(kind, "wrong-token")) {
		struct hm_err err = {0};
		char bad[sizeof(ctx->token) + 1];
		snprintf(bad, sizeof(bad), "%sx", ctx->token);
		if (proto_client_handshake(fd, bad, "agent_e2e", 0, 5000, NULL, &err) == 0)
			return e2e_fail("a wrong token was accepted");
		if (err.code != EACCES)
			return e2e_fail("wrong token: %s (errno %d), expected EACCES", err.msg,
					err.code);
		printf("wrong token rejected: %s\n", err.msg);
		rc = expect_closed(fd, wait_ms, kind);
	} else if (!strcmp(kind, "empty-token")) {
		struct hm_err err = {0};
		if (proto_client_handshake(fd, "", "agent_e2e", 0, 5000, NULL, &err) == 0)
			return e2e_fail("an empty token was accepted");
		if (err.code != EACCES)
			return e2e_fail("empty token: %s, expected EACCES", err.msg);
		rc = expect_closed(fd, wait_ms, kind);
	} else if (!strcmp(kind, "no-hello")) {
		rc = expect_closed(fd, wait_ms, kind); /* silence until the handshake timeout */
	} else if (!strcmp(kind, "request-before-hello")) {
		struct proto_msg m = {.type = PROTO_SESSION_OPEN};
		m.session_open.target = ctx->target ? ctx->target : "pid/1";
		struct hm_err err = {0};
		if (proto_send(fd, 1, &m, &err) < 0)
			return e2e_fail("send: %s", err.msg);
		rc = expect_closed(fd, wait_ms, kind);
	} else if (!strcmp(kind, "oversized-hello")) {
		rc =
		    send_frame(fd, PROTO_HELLO, 0, PROTO_HELLO_MAX_PAYLOAD + 1, junk, sizeof(junk));
		rc = rc < 0 ? e2e_fail("send: %s", strerror(errno))
			    : expect_closed(fd, wait_ms, kind);
	} else if (!strcmp(kind, "garbage")) {
		if (send(fd, junk, sizeof(junk), MSG_NOSIGNAL) < 0)
			return e2e_fail("send: %s", strerror(errno));
		rc = expect_closed(fd, wait_ms, kind);
	} else if (!strcmp(kind, "bad-stream-token")) {
		struct hm_err err = {0};
		uint8_t token[PROTO_TOKEN_LEN] = {1, 2, 3};
		if (proto_stream_open(fd, token, 5000, &err) == 0)
			return e2e_fail("a made-up stream token was accepted");
		if (err.code != EACCES)
			return e2e_fail("made-up stream token: %s, expected EACCES", err.msg);
		rc = expect_closed(fd, wait_ms, kind);
	} else {
		/* the rest come after a good handshake */
		if (hello(ctx, fd))
			return 1;
		if (!strcmp(kind, "oversized"))
			rc = send_frame(fd, PROTO_FILE_READ, 7, PROTO_MAX_PAYLOAD + 1, junk,
					sizeof(junk));
		else if (!strcmp(kind, "unknown-type"))
			rc = send_frame(fd, 0x7777, 7, sizeof(junk), junk, sizeof(junk));
		else if (!strcmp(kind, "reserved-type"))
			rc = send_frame(fd, 0x0600, 7, 0, NULL, 0);
		else if (!strcmp(kind, "bad-flags")) {
			uint8_t hdr[PROTO_HDR_LEN];
			struct proto_hdr h = {.len = 8, .type = PROTO_PING, .flags = 0x40, .id = 7};
			proto_hdr_encode(hdr, &h);
			rc = send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL) == sizeof(hdr) ? 0 : -1;
		} else if (!strcmp(kind, "malformed"))
			/* a SESSION_OPEN whose string length runs past the payload */
			rc = send_frame(fd, PROTO_SESSION_OPEN, 7, 8, "\xff\xff\x00\x00pod/", 8);
		else if (!strcmp(kind, "trailing-bytes")) {
			uint8_t ping[9] = {0};
			rc = send_frame(fd, PROTO_PING, 7, sizeof(ping), ping, sizeof(ping));
		} else if (!strcmp(kind, "reply-type"))
			rc = send_frame(fd, PROTO_PONG, 7, 8, junk, 8);
		else if (!strcmp(kind, "second-hello")) {
			struct proto_msg m = {.type = PROTO_HELLO};
			m.hello = (struct proto_hello){
			    .version = PROTO_VERSION, .token = ctx->token, .client = "again"};
			struct hm_err err = {0};
			rc = proto_send(fd, 0, &m, &err);
		} else if (!strcmp(kind, "truncated")) {
			rc = send_frame(fd, PROTO_PING, 7, 8, junk, 3);
			if (rc == 0)
				shutdown(fd, SHUT_WR);
		} else
			return e2e_fail("unknown reject kind '%s'", kind);
		rc = rc < 0 ? e2e_fail("send: %s", strerror(errno))
			    : expect_closed(fd, wait_ms, kind);
	}
	if (rc)
		return rc;
	if (e2e_agent_still_serves(ctx))
		return 1;
	return e2e_ok("%s: connection cut off, the agent still serves others", kind);
}

/* A stream token works once: FILE_READ of a big file, stream it, replay the token. */
static int cmd_stream_token_once(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct proto_msg req = {.type = PROTO_FILE_READ}, reply;
	req.file_read.path = argv[1];
	struct hm_err err = {0};
	if (client_call(c, &req, &reply, 0, &err) < 0)
		return e2e_fail("FILE_READ %s: %s", argv[1], err.msg);
	if (reply.file_read_reply.transfer != PROTO_XFER_STREAM)
		return e2e_fail("%s came inline; use a file over %u bytes", argv[1],
				PROTO_INLINE_MAX);
	uint8_t token[PROTO_TOKEN_LEN];
	memcpy(token, reply.file_read_reply.token, sizeof(token));
	uint64_t size = reply.file_read_reply.stream_size;
	proto_msg_free(&reply);
	hm_cleanup_close int s1 = raw_connect(ctx);
	if (s1 < 0)
		return 1;
	if (proto_stream_open(s1, token, 5000, &err) < 0)
		return e2e_fail("first use of the token: %s", err.msg);
	hm_cleanup_close int s2 = raw_connect(ctx);
	if (s2 < 0)
		return 1;
	if (proto_stream_open(s2, token, 5000, &err) == 0)
		return e2e_fail("the stream token worked twice");
	if (err.code != EACCES)
		return e2e_fail("replayed token: %s, expected EACCES", err.msg);
	/* the first stream still carries exactly the file */
	static char buf[1 << 20];
	uint64_t got = 0;
	for (;;) {
		ssize_t n = recv(s1, buf, sizeof(buf), 0);
		if (n < 0)
			return e2e_fail("stream: %s", strerror(errno));
		if (n == 0)
			break;
		got += (uint64_t)n;
	}
	client_close(c);
	if (got != size)
		return e2e_fail("stream carried %llu bytes, expected %llu", (unsigned long long)got,
				(unsigned long long)size);
	return e2e_ok("stream token used once (%llu bytes), a replay is refused",
		      (unsigned long long)size);
}

/* A stream token dies with its session (MODE "dropped": the client disconnects) or when
 * unused for the agent's --stream-ttl (MODE "expires": WAIT_MS later). */
static int cmd_stream_token_dies(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 4)
		return 2;
	bool dropped = !strcmp(argv[1], "dropped");
	if (!dropped && strcmp(argv[1], "expires"))
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct proto_msg req = {.type = PROTO_FILE_READ}, reply;
	req.file_read.path = argv[2];
	struct hm_err err = {0};
	if (client_call(c, &req, &reply, 0, &err) < 0)
		return e2e_fail("FILE_READ %s: %s", argv[2], err.msg);
	if (reply.file_read_reply.transfer != PROTO_XFER_STREAM)
		return e2e_fail("%s came inline; use a file over %u bytes", argv[2],
				PROTO_INLINE_MAX);
	uint8_t token[PROTO_TOKEN_LEN];
	memcpy(token, reply.file_read_reply.token, sizeof(token));
	proto_msg_free(&reply);
	if (dropped) {
		client_close(c);
		c = NULL;
	}
	poll(NULL, 0, atoi(argv[3]));
	hm_cleanup_close int s = raw_connect(ctx);
	if (s < 0)
		return 1;
	int rc = proto_stream_open(s, token, 5000, &err);
	if (c)
		client_close(c);
	if (rc == 0)
		return e2e_fail("the stream token still worked (%s)", argv[1]);
	if (err.code != EACCES)
		return e2e_fail("stale token: %s, expected EACCES", err.msg);
	return e2e_ok("stream token %s: refused", dropped ? "of a closed session" : "expired");
}

static int cmd_ping(struct e2e_ctx *ctx, int argc, char **argv)
{
	(void)argc;
	(void)argv;
	struct client *c = e2e_connect(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_status st;
	if (client_ping(c, &err) < 0)
		return e2e_fail("PING: %s", err.msg);
	if (client_status(c, &st, &err) < 0)
		return e2e_fail("STATUS: %s", err.msg);
	client_close(c);
	return e2e_ok("agent %s answers (up %llu ms, %u sessions)", st.version,
		      (unsigned long long)st.uptime_ms, st.sessions);
}

/* Hold a session (for `trace-agent status` to see) until READY_FILE is removed. */
static int cmd_hold(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	if (hm_create_file(argv[1], "ready\n", 6, 0644, &err) < 0)
		return e2e_fail("%s", err.msg);
	for (int i = 0; i < 600 && access(argv[1], F_OK) == 0; i++)
		poll(NULL, 0, 100);
	client_close(c);
	return 0;
}

static const struct e2e_cmd core_cmds[] = {
    {"ping", "", cmd_ping},
    {"env-equals", "ENVIRON_DUMP", cmd_env_equals},
    {"env-has", "KEY=VALUE", cmd_env_has},
    {"read-equals", "POD_PATH LOCAL_FILE", cmd_read_equals},
    {"read-crc", "POD_PATH LOCAL_FILE", cmd_read_crc},
    {"readdir-equals", "POD_DIR LOCAL_DIR", cmd_readdir_equals},
    {"read-denied", "POD_PATH HOST_SECRET", cmd_read_denied},
    {"write-read", "POD_PATH", cmd_write_read},
    {"create-modes", "POD_DIR", cmd_create_modes},
    {"bad-target", "ERRNO_NAME", cmd_bad_target},
    {"session-pid", "PID", cmd_session_pid},
    {"session-rules", "", cmd_session_rules},
    {"session-ended", "ERRNO_NAME TIMEOUT_S READY_FILE", cmd_session_ended},
    {"concurrent", "THREADS POD_PATH", cmd_concurrent},
    {"reject", "KIND [WAIT_MS]", cmd_reject},
    {"stream-token-once", "POD_BIG_FILE", cmd_stream_token_once},
    {"stream-token-dies", "dropped|expires POD_BIG_FILE WAIT_MS", cmd_stream_token_dies},
    {"hold", "READY_FILE", cmd_hold},
};
E2E_REGISTER(core_cmds)

static void usage(FILE *f)
{
	fprintf(f, "usage: agent_e2e [--unix PATH | --agent ADDR] [--token-file F] "
		   "[--target T] [--no-handoff] CMD [ARGS]\ncommands:\n");
	for (size_t t = 0; t < ntables; t++)
		for (size_t i = 0; i < tables[t].n; i++)
			fprintf(f, "  %s %s\n", tables[t].cmds[i].name, tables[t].cmds[i].args);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"unix", required_argument, NULL, 'u'},	  {"agent", required_argument, NULL, 'a'},
	    {"token-file", required_argument, NULL, 't'}, {"target", required_argument, NULL, 'T'},
	    {"no-handoff", no_argument, NULL, 'H'},	  {0},
	};
	struct e2e_ctx ctx = {0};
	char spec[4200];
	snprintf(spec, sizeof(spec), "unix:%s", PROTO_DEFAULT_AGENT_UNIX);
	const char *token_file = PROTO_DEFAULT_TOKEN_FILE;
	int opt;
	hm_log_init("agent_e2e", HM_LOG_WARN);
	while ((opt = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (opt) {
		case 'u':
			snprintf(spec, sizeof(spec), "unix:%s", optarg);
			break;
		case 'a':
			snprintf(spec, sizeof(spec), "%s", optarg);
			break;
		case 't':
			token_file = optarg;
			break;
		case 'T':
			ctx.target = optarg;
			break;
		case 'H':
			ctx.disable_features |= PROTO_FEAT_TCP_FD;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	struct hm_err err = {0};
	if (client_endpoint_parse(spec, &ctx.ep, &err) < 0 ||
	    client_token_load(token_file, ctx.token, sizeof(ctx.token), &err) < 0) {
		fprintf(stderr, "agent_e2e: %s\n", err.msg);
		return 2;
	}
	const char *name = argv[optind];
	for (size_t t = 0; t < ntables; t++) {
		for (size_t i = 0; i < tables[t].n; i++) {
			if (strcmp(tables[t].cmds[i].name, name))
				continue;
			int rc = tables[t].cmds[i].run(&ctx, argc - optind, argv + optind);
			if (rc == 2) {
				fprintf(stderr, "usage: agent_e2e ... %s %s\n", name,
					tables[t].cmds[i].args);
			}
			return rc;
		}
	}
	fprintf(stderr, "agent_e2e: unknown command '%s'\n", name);
	usage(stderr);
	return 2;
}
