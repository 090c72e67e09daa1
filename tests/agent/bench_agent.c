/* agent_e2e commands that measure a real trace-agent for bench/run.sh (the "agent"
 * benchmarks). Each prints one result line that the script parses; none asserts
 * anything about speed. */
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "tests/agent/e2e.h"

#define CHUNK (1u << 20)

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int compare_doubles(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, size_t n, unsigned p)
{
	size_t rank = (p * n + 99) / 100;
	return sorted[rank ? rank - 1 : 0];
}

/* The loop of tests/apps-c/tcp_sink.c `send`, so the direct client in the pod and this
 * one differ only in where their bytes go: send size bytes from a 1 MiB buffer,
 * half-close, read the sink's count. */
static int send_all_to_sink(int fd, uint64_t size)
{
	static char buf[CHUNK];
	memset(buf, 0x5a, sizeof(buf));
	uint64_t sent = 0;
	while (sent < size) {
		size_t len = size - sent < sizeof(buf) ? (size_t)(size - sent) : sizeof(buf);
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return e2e_fail("send after %llu bytes: %s", (unsigned long long)sent,
					strerror(errno));
		sent += (uint64_t)w;
	}
	if (shutdown(fd, SHUT_WR) < 0)
		return e2e_fail("shutdown: %s", strerror(errno));
	char ack[32];
	size_t got = 0;
	for (;;) {
		ssize_t r = recv(fd, ack + got, sizeof(ack) - 1 - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return e2e_fail("recv the sink's count: %s", strerror(errno));
		if (r == 0 || (got += (size_t)r) == sizeof(ack) - 1)
			break;
	}
	ack[got] = 0;
	if (strtoull(ack, NULL, 10) != size)
		return e2e_fail("the sink counted '%s' bytes, %llu were sent", ack,
				(unsigned long long)size);
	return 0;
}

/* bench-tcp-send ADDR BYTES: one connection from the target pod to a tcp_sink through
 * the agent; prints "sent BYTES in SECONDS s: MBPS MB/s" like `tcp_sink send`. */
static int cmd_tcp_send(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr dst;
	uint64_t size;
	if (argc != 3 || e2e_parse_addr(argv[1], &dst) < 0 || hm_parse_size(argv[2], &size) < 0)
		return 2;
	client_cleanup_close struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	hm_cleanup_close int fd = client_tcp_connect(c, &dst, 0, NULL, &err);
	if (fd < 0)
		return e2e_fail("TCP_CONNECT %s: %s", argv[1], err.msg);
	double t0 = now_s();
	int rc = send_all_to_sink(fd, size);
	double dt = now_s() - t0;
	if (rc == 0)
		printf("sent %llu in %.6f s: %.1f MB/s\n", (unsigned long long)size, dt,
		       (double)size / dt / 1e6);
	return rc;
}

/* A session on ctx->target like e2e_session, optionally without zlib. */
static struct client *bench_session(struct e2e_ctx *ctx, bool zlib)
{
	struct hm_err err = {0};
	client_cleanup_close struct client *c = NULL;
	struct client_opts opts = {.client_name = "agent_e2e bench",
				   .disable_features = zlib ? 0 : PROTO_FEAT_ZLIB,
				   .timeout_ms = 20000};
	struct client_session_info info;
	if (client_connect(&ctx->ep, ctx->token, &opts, &c, &err) < 0) {
		e2e_fail("connect: %s", err.msg);
		return NULL;
	}
	if (client_session_open(c, ctx->target, &info, &err) < 0) {
		e2e_fail("session on %s: %s", ctx->target, err.msg);
		return NULL;
	}
	return hm_steal_ptr(&c);
}

/* bench-file-rtt POD_PATH LOCAL_PATH N [nozlib]: N rounds, each a FILE_READ of POD_PATH through
 * the agent (open + read + close in one request, as the tracer does it) and then an
 * open + read + close of LOCAL_PATH here, and a PING (the bare round trip, for scale);
 * prints "remote median_us p99_us local median_us p99_us ping median_us p99_us bytes".
 * "nozlib": the client does not offer zlib, so the agent sends the content raw. */
static int cmd_file_rtt(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 4 && (argc != 5 || strcmp(argv[4], "nozlib")))
		return 2;
	int n = atoi(argv[3]);
	if (n < 1 || n > 1000000)
		return 2;
	double *remote = calloc((size_t)n, sizeof(double)),
	       *local = calloc((size_t)n, sizeof(double));
	double *ping = calloc((size_t)n, sizeof(double));
	if (!remote || !local || !ping)
		return e2e_fail("out of memory");
	if (!ctx->target)
		return e2e_fail("this command needs --target");
	struct client *c = bench_session(ctx, argc == 4);
	if (!c)
		return 1;
	struct hm_err err = {0};
	static char buf[1 << 16];
	uint64_t remote_size = 0;
	ssize_t local_size = 0;
	int rc = 0;
	/* a few unmeasured rounds warm the caches and the agent's worker */
	for (int i = -20; i < n && rc == 0; i++) {
		struct client_file_content fc;
		double t0 = now_s();
		if (client_read_file(c, argv[1], 0, 0, &fc, &err) < 0) {
			rc = e2e_fail("FILE_READ %s: %s", argv[1], err.msg);
			break;
		}
		double t1 = now_s();
		remote_size = fc.size;
		client_file_content_release(&fc);
		double t2 = now_s();
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			rc = e2e_fail("open %s: %s", argv[2], strerror(errno));
			break;
		}
		local_size = read(fd, buf, sizeof(buf));
		close(fd);
		double t3 = now_s();
		if (local_size < 0) {
			rc = e2e_fail("read %s: %s", argv[2], strerror(errno));
			break;
		}
		if (client_ping(c, &err) < 0) {
			rc = e2e_fail("PING: %s", err.msg);
			break;
		}
		double t4 = now_s();
		if (i >= 0) {
			remote[i] = (t1 - t0) * 1e6;
			local[i] = (t3 - t2) * 1e6;
			ping[i] = (t4 - t3) * 1e6;
		}
	}
	client_close(c);
	if (rc == 0 && remote_size != (uint64_t)local_size)
		rc = e2e_fail("%s has %llu bytes through the agent, %s %zd", argv[1],
			      (unsigned long long)remote_size, argv[2], local_size);
	if (rc == 0) {
		qsort(remote, (size_t)n, sizeof(double), compare_doubles);
		qsort(local, (size_t)n, sizeof(double), compare_doubles);
		qsort(ping, (size_t)n, sizeof(double), compare_doubles);
		printf("remote %.2f %.2f local %.2f %.2f ping %.2f %.2f %llu\n",
		       percentile(remote, (size_t)n, 50), percentile(remote, (size_t)n, 99),
		       percentile(local, (size_t)n, 50), percentile(local, (size_t)n, 99),
		       percentile(ping, (size_t)n, 50), percentile(ping, (size_t)n, 99),
		       (unsigned long long)remote_size);
	}
	free(ping);
	free(remote);
	free(local);
	return rc;
}

/* bench-file-bulk POD_PATH LOCAL_PATH: one whole-file read through the agent into a
 * buffer (the stream path: FILE_READ, then sendfile on the agent's side), then the same
 * file read locally into a buffer of its own; prints
 * "remote SECONDS MBPS local SECONDS MBPS bytes". Both buffers are fresh allocations,
 * so both pay the same page faults. */
static int cmd_file_bulk(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc != 3)
		return 2;
	struct client *c = e2e_session(ctx);
	if (!c)
		return 1;
	struct hm_err err = {0};
	struct client_file_content fc;
	double t0 = now_s();
	if (client_read_file(c, argv[1], 0, 0, &fc, &err) < 0) {
		client_close(c);
		return e2e_fail("FILE_READ %s: %s", argv[1], err.msg);
	}
	double remote = now_s() - t0;
	uint64_t size = fc.size;
	client_file_content_release(&fc);
	client_close(c);

	t0 = now_s();
	char *local_buf;
	size_t local_len;
	if (hm_read_file(argv[2], &local_buf, &local_len, &err) < 0)
		return e2e_fail("read %s: %s", argv[2], err.msg);
	double local = now_s() - t0;
	free(local_buf);
	if (local_len != size)
		return e2e_fail("%s: %llu bytes through the agent, %zu locally", argv[1],
				(unsigned long long)size, local_len);
	printf("remote %.6f %.1f local %.6f %.1f %llu\n", remote, (double)size / remote / 1e6,
	       local, (double)size / local / 1e6, (unsigned long long)size);
	return 0;
}

/* bench-hold ADDR N READY_FILE: open N connections from the pod to ADDR, create
 * READY_FILE, keep them open until the caller removes it (up to 120 s). */
static int cmd_hold(struct e2e_ctx *ctx, int argc, char **argv)
{
	struct proto_addr dst;
	if (argc != 4 || e2e_parse_addr(argv[1], &dst) < 0)
		return 2;
	int n = atoi(argv[2]);
	if (n < 1 || n > 4096)
		return 2;
	int *fds = calloc((size_t)n, sizeof(int));
	if (!fds)
		return e2e_fail("out of memory");
	struct client *c = e2e_session(ctx);
	if (!c) {
		free(fds);
		return 1;
	}
	struct hm_err err = {0};
	int rc = 0, opened = 0;
	for (; opened < n; opened++) {
		fds[opened] = client_tcp_connect(c, &dst, 0, NULL, &err);
		if (fds[opened] < 0) {
			rc = e2e_fail("connection %d of %d: %s", opened, n, err.msg);
			break;
		}
	}
	if (rc == 0 && hm_create_file(argv[3], "ready\n", 6, 0644, &err) < 0)
		rc = e2e_fail("%s", err.msg);
	for (int i = 0; rc == 0 && i < 1200 && access(argv[3], F_OK) == 0; i++)
		poll(NULL, 0, 100);
	for (int i = 0; i < opened; i++)
		close(fds[i]);
	free(fds);
	client_close(c);
	return rc;
}

static const struct e2e_cmd bench_cmds[] = {
    {"bench-tcp-send", "ADDR BYTES", cmd_tcp_send},
    {"bench-file-rtt", "POD_PATH LOCAL_PATH N [nozlib]", cmd_file_rtt},
    {"bench-file-bulk", "POD_PATH LOCAL_PATH", cmd_file_bulk},
    {"bench-hold", "ADDR N READY_FILE", cmd_hold},
};
E2E_REGISTER(bench_cmds)
