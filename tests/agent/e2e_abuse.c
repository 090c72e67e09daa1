/* agent_e2e abuse: one token holder tries to use up a shared agent — unclaimed UDP
 * streams (file descriptors), big file reads and listings (memory), connects to a
 * black hole (threads) — while a sampler watches the agent's /proc figures and, in the
 * middle of it, another client checks that it is still served.
 *
 * abuse KIND SESSIONS COUNT AGENT_PID [KEY=VALUE]...
 *   udp      COUNT UDP_OPENs per session, tokens never claimed
 *   read     COUNT FILE_READs of path= per session, replies taken, streams never claimed
 *   readdir  COUNT FILE_READDIRs of path= per session
 *   connect  COUNT TCP_CONNECTs at once per session to dst= (timeout= ms)
 *   session  SESSIONS sessions held open at once (COUNT is ignored)
 *   write    COUNT FILE_WRITEs of 7 MiB per session to path=.N (N: the session)
 * Keys: path=, dst=, timeout=MS, check=POD_PATH (the other client reads it),
 *   check-agent=ENDPOINT (where the other client connects; default: the same),
 *   check=refused: the agent is expected to be out of fds: the other client must be
 *   turned away within 5 s (not left hanging), and served once the abusers are gone,
 *   errno=NAME[,NAME] (the abusers must be refused, only with these errnos),
 *   allow=NAME[,NAME] (the abusers may be refused, only with these errnos),
 *   max-fds=N, max-threads=N, max-rss-mib=N (peaks of the agent while abused). */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "tests/agent/e2e.h"

#define ABUSE_MAX_SESSIONS 256
#define ERRNO_SLOTS 4096
#define WRITE_SIZE (7u << 20)

struct abuse {
	struct e2e_ctx *ctx;
	const char *kind, *path, *check;
	struct proto_addr dst;
	uint32_t timeout_ms;
	int sessions, count;
	pid_t agent;

	atomic_uint ok;
	atomic_uint refused[ERRNO_SLOTS];
	atomic_uint sessions_up; /* sessions that did all their requests */
	atomic_uint next_index;	 /* numbers the sessions (write: their files) */
	void *write_data;
	atomic_bool check_done; /* the other client has been checked: let go */
	atomic_bool sampling;
	char check_failure[512];

	/* the sampler's peaks */
	unsigned peak_fds, peak_threads;
	unsigned long peak_rss_kib, hwm_kib, base_rss_kib;
	unsigned base_fds, base_threads;
};

/* ---- the agent's figures ---- */

static unsigned count_fds(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	unsigned n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Threads, VmRSS and VmHWM (KiB) from /proc/PID/status. */
static void read_status(pid_t pid, unsigned *threads, unsigned long *rss, unsigned long *hwm)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		if (threads)
			sscanf(line, "Threads: %u", threads);
		if (rss)
			sscanf(line, "VmRSS: %lu", rss);
		if (hwm)
			sscanf(line, "VmHWM: %lu", hwm);
	}
	fclose(f);
}

static void *sampler_main(void *arg)
{
	struct abuse *a = arg;
	while (atomic_load(&a->sampling)) {
		unsigned fds = count_fds(a->agent), threads = 0;
		unsigned long rss = 0;
		read_status(a->agent, &threads, &rss, &a->hwm_kib);
		if (fds > a->peak_fds)
			a->peak_fds = fds;
		if (threads > a->peak_threads)
			a->peak_threads = threads;
		if (rss > a->peak_rss_kib)
			a->peak_rss_kib = rss;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* ---- the abusers ---- */

static void count_result(struct abuse *a, int rc, const struct hm_err *err)
{
	if (rc == 0)
		atomic_fetch_add(&a->ok, 1);
	else
		atomic_fetch_add(
		    &a->refused[err->code > 0 && err->code < ERRNO_SLOTS ? err->code : 0], 1);
}

struct connect_arg {
	struct abuse *a;
	struct client *c;
};

static void *one_connect(void *arg)
{
	struct connect_arg *ca = arg;
	struct hm_err err = {0};
	struct proto_msg req = {.type = PROTO_TCP_CONNECT}, reply;
	req.tcp_connect.dst = ca->a->dst;
	req.tcp_connect.timeout_ms = ca->a->timeout_ms;
	int rc = client_call(ca->c, &req, &reply, (int)ca->a->timeout_ms + 30000, &err);
	if (rc == 0)
		proto_msg_free(&reply);
	/* a black hole answers with an error after its timeout: that is not a refusal */
	if (rc < 0 && (err.code == ETIMEDOUT || err.code == EHOSTUNREACH ||
		       err.code == ECONNREFUSED || err.code == ENETUNREACH))
		rc = 0;
	count_result(ca->a, rc, &err);
	return NULL;
}

static void abuse_connects(struct abuse *a, struct client *c)
{
	pthread_t *th = calloc((size_t)a->count, sizeof(*th));
	bool *started = calloc((size_t)a->count, sizeof(*started));
	struct connect_arg ca = {a, c};
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (int i = 0; th && started && i < a->count; i++)
		started[i] = pthread_create(&th[i], &attr, one_connect, &ca) == 0;
	pthread_attr_destroy(&attr);
	atomic_fetch_add(&a->sessions_up, 1);
	for (int i = 0; th && started && i < a->count; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	free(th);
	free(started);
}

static void *abuser_main(void *arg)
{
	struct abuse *a = arg;
	struct client *c = e2e_connect(a->ctx);
	struct hm_err err = {.code = EIO};
	struct client_session_info info;
	if (!c || client_session_open(c, a->ctx->target, &info, &err) < 0) {
		count_result(a, -1, &err);
		atomic_fetch_add(&a->sessions_up, 1);
		if (c)
			client_close(c);
		return NULL;
	}
	if (!strcmp(a->kind, "session")) {
		count_result(a, 0, &err);
		atomic_fetch_add(&a->sessions_up, 1);
	} else if (!strcmp(a->kind, "connect")) {
		abuse_connects(a, c);
	} else {
		unsigned index = atomic_fetch_add(&a->next_index, 1);
		char write_path[PROTO_PATH_MAX + 1];
		snprintf(write_path, sizeof(write_path), "%.4000s.%u", a->path ? a->path : "",
			 index);
		for (int i = 0; i < a->count; i++) {
			struct hm_err err = {0};
			struct proto_msg req = {0}, reply;
			if (!strcmp(a->kind, "write")) {
				req.type = PROTO_FILE_WRITE;
				req.file_write.path = write_path;
				req.file_write.flags = PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC;
				req.file_write.mode = 0600;
				req.file_write.data.data = a->write_data;
				req.file_write.data.size = WRITE_SIZE;
			} else if (!strcmp(a->kind, "udp")) {
				req.type = PROTO_UDP_OPEN;
				req.udp_open.family = PROTO_AF_INET;
			} else if (!strcmp(a->kind, "read")) {
				req.type = PROTO_FILE_READ;
				req.file_read.path = a->path;
			} else {
				req.type = PROTO_FILE_READDIR;
				req.path_req.path = a->path;
			}
			int rc = client_call(c, &req, &reply, 60000, &err);
			if (rc == 0)
				proto_msg_free(&reply);
			count_result(a, rc, &err);
			if (rc < 0 && (err.code == ECONNRESET || err.code == ESHUTDOWN))
				break;
		}
		atomic_fetch_add(&a->sessions_up, 1);
	}
	/* hold what was obtained until the other client has been checked */
	while (!atomic_load(&a->check_done)) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	client_close(c);
	return NULL;
}

/* The other client, while the abuse holds everything it got. */
static void check_other_client(struct abuse *a, struct e2e_ctx *ctx)
{
	if (e2e_agent_still_serves(ctx)) {
		snprintf(a->check_failure, sizeof(a->check_failure),
			 "another client was not served (see above)");
		return;
	}
	if (!a->check)
		return;
	struct client *c = e2e_session(ctx);
	if (!c) {
		snprintf(a->check_failure, sizeof(a->check_failure), "no session for the check");
		return;
	}
	struct hm_err err = {0};
	struct client_file_content fc;
	if (client_read_file(c, a->check, 0, 0, &fc, &err) < 0)
		snprintf(a->check_failure, sizeof(a->check_failure), "read %.200s: %.250s",
			 a->check, err.msg);
	else
		client_file_content_release(&fc);
	client_close(c);
}

/* With no fd left, the agent accepts a new connection with its spare fd and closes it:
 * the client learns at once, instead of waiting in the backlog until it times out. */
static void check_turned_away(struct abuse *a, struct e2e_ctx *ctx)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct hm_err err = {0};
	struct client *c;
	struct client_opts opts = {.client_name = "agent_e2e check", .timeout_ms = 20000};
	int rc = client_connect(&ctx->ep, ctx->token, &opts, &c, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double took = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (rc == 0) {
		client_close(c);
		snprintf(a->check_failure, sizeof(a->check_failure),
			 "the agent served a client although it should be out of fds");
		return;
	}
	printf("while out of fds, a new client was turned away after %.2f s: %s\n", took, err.msg);
	if (took > 5)
		snprintf(a->check_failure, sizeof(a->check_failure),
			 "a new client waited %.1f s to be turned away", took);
}

static int cmd_abuse(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc < 5)
		return 2;
	static struct abuse a; /* big: the errno table */
	memset(&a, 0, sizeof(a));
	a.ctx = ctx;
	a.kind = argv[1];
	a.sessions = atoi(argv[2]);
	a.count = atoi(argv[3]);
	a.agent = (pid_t)atoi(argv[4]);
	a.timeout_ms = 20000;
	if (strcmp(a.kind, "udp") && strcmp(a.kind, "read") && strcmp(a.kind, "readdir") &&
	    strcmp(a.kind, "connect") && strcmp(a.kind, "session") && strcmp(a.kind, "write"))
		return 2;
	if (a.sessions < 1 || a.sessions > ABUSE_MAX_SESSIONS || a.count < 1 || a.agent <= 0)
		return 2;
	const char *expect = NULL, *allow = NULL;
	struct e2e_ctx check_ctx = *ctx;
	unsigned long max_fds = 0, max_threads = 0, max_rss_mib = 0;
	for (int i = 5; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq)
			return 2;
		*eq = '\0';
		const char *k = argv[i], *v = eq + 1;
		if (!strcmp(k, "path"))
			a.path = v;
		else if (!strcmp(k, "check"))
			a.check = v;
		else if (!strcmp(k, "check-agent") &&
			 client_endpoint_parse(v, &check_ctx.ep, NULL) == 0)
			;
		else if (!strcmp(k, "dst") && e2e_parse_addr(v, &a.dst) == 0)
			;
		else if (!strcmp(k, "timeout"))
			a.timeout_ms = (uint32_t)atoi(v);
		else if (!strcmp(k, "errno"))
			expect = v;
		else if (!strcmp(k, "allow"))
			allow = v;
		else if (!strcmp(k, "max-fds"))
			max_fds = strtoul(v, NULL, 10);
		else if (!strcmp(k, "max-threads"))
			max_threads = strtoul(v, NULL, 10);
		else if (!strcmp(k, "max-rss-mib"))
			max_rss_mib = strtoul(v, NULL, 10);
		else
			return 2;
	}
	if ((!strcmp(a.kind, "read") || !strcmp(a.kind, "readdir") || !strcmp(a.kind, "write")) &&
	    !a.path)
		return 2;
	if (!strcmp(a.kind, "write")) {
		/* incompressible, so the frame on the wire is as big as the content */
		uint8_t *d = malloc(WRITE_SIZE);
		if (!d)
			return e2e_fail("no memory for the write abuse");
		uint64_t x = 0x9e3779b97f4a7c15ull;
		for (size_t i = 0; i < WRITE_SIZE; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			d[i] = (uint8_t)x;
		}
		a.write_data = d;
	}
	if (!strcmp(a.kind, "connect") && !a.dst.family)
		return 2;

	a.base_fds = count_fds(a.agent);
	read_status(a.agent, &a.base_threads, &a.base_rss_kib, NULL);
	atomic_store(&a.sampling, true);
	pthread_t sampler;
	pthread_create(&sampler, NULL, sampler_main, &a);
	pthread_t th[ABUSE_MAX_SESSIONS];
	for (int i = 0; i < a.sessions; i++)
		pthread_create(&th[i], NULL, abuser_main, &a);
	while (atomic_load(&a.sessions_up) < (unsigned)a.sessions) {
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	bool expect_refused = a.check && !strcmp(a.check, "refused");
	if (expect_refused)
		check_turned_away(&a, &check_ctx);
	else
		check_other_client(&a, &check_ctx);
	atomic_store(&a.check_done, true);
	for (int i = 0; i < a.sessions; i++)
		pthread_join(th[i], NULL);
	if (expect_refused && !a.check_failure[0]) {
		/* the abusers are gone: their fds with them */
		a.check = NULL;
		for (int tries = 0; tries < 50; tries++) {
			a.check_failure[0] = '\0';
			check_other_client(&a, &check_ctx);
			if (!a.check_failure[0])
				break;
			struct timespec ts = {0, 100 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
	}
	atomic_store(&a.sampling, false);
	pthread_join(sampler, NULL);
	free(a.write_data);
	read_status(a.agent, NULL, NULL, &a.hwm_kib);

	unsigned refused = 0;
	char refused_text[512] = "";
	size_t off = 0;
	int unexpected = 0;
	for (int e = 0; e < ERRNO_SLOTS; e++) {
		unsigned n = atomic_load(&a.refused[e]);
		if (!n)
			continue;
		refused += n;
		off += (size_t)snprintf(refused_text + off, sizeof(refused_text) - off, " %s x%u",
					e ? e2e_errno_name(e) : "?", n);
		if (off >= sizeof(refused_text))
			off = sizeof(refused_text) - 1;
		bool listed = false;
		if (expect || allow) {
			char list[128];
			snprintf(list, sizeof(list), "%s", expect ? expect : allow);
			char *save = NULL;
			for (char *t = strtok_r(list, ",", &save); t;
			     t = strtok_r(NULL, ",", &save))
				listed |= e2e_errno_code(t) == e;
		}
		if (!listed && !unexpected)
			unexpected = e ? e : -1;
	}
	printf("abuse %s: %d sessions x %d: %u done, %u refused%s\n", a.kind, a.sessions, a.count,
	       atomic_load(&a.ok), refused, refused_text);
	printf("agent figures: fds %u -> peak %u, threads %u -> peak %u, VmRSS %lu MiB -> peak "
	       "%lu MiB, VmHWM %lu MiB\n",
	       a.base_fds, a.peak_fds, a.base_threads, a.peak_threads, a.base_rss_kib >> 10,
	       a.peak_rss_kib >> 10, a.hwm_kib >> 10);
	fflush(stdout);
	if (a.check_failure[0])
		return e2e_fail("while abused: %s", a.check_failure);
	if (expect && !refused)
		return e2e_fail("the abusing sessions were never refused (expected %s)", expect);
	if (unexpected)
		return e2e_fail("the abusing sessions were refused with %s, expected %s",
				unexpected > 0 ? e2e_errno_name(unexpected) : "an unknown error",
				expect	? expect
				: allow ? allow
					: "no refusal");
	if (max_fds && a.peak_fds > max_fds)
		return e2e_fail("the agent held %u fds, the bound is %lu", a.peak_fds, max_fds);
	if (max_threads && a.peak_threads > max_threads)
		return e2e_fail("the agent ran %u threads, the bound is %lu", a.peak_threads,
				max_threads);
	if (max_rss_mib && (a.hwm_kib >> 10) > max_rss_mib)
		return e2e_fail("the agent's RSS peaked at %lu MiB, the bound is %lu MiB",
				a.hwm_kib >> 10, max_rss_mib);
	return e2e_ok("abuse %s: agent within bounds and still serving others", a.kind);
}

static const struct e2e_cmd abuse_cmds[] = {
    {"abuse", "udp|read|readdir|write|connect|session SESSIONS COUNT AGENT_PID [KEY=VALUE]...",
     cmd_abuse},
};
E2E_REGISTER(abuse_cmds)
