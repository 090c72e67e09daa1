/* agent_e2e commands for mirror mode (tests/integration/24_agent_incoming_mirror.sh):
 * a session mirrors a port of its target pod and dumps every delivered copy to files,
 * so the test can compare them with what the pod's clients sent. */
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "tests/agent/e2e.h"

#define MIRROR_TIMEOUT_MS 20000

struct dump_opts {
	struct e2e_ctx *ctx;
	const char *dir;
	unsigned stall_ms; /* wait this long before reading each copy: a slow client */
	bool sum_only;	   /* N.sum "BYTES CRC32" instead of N.data (benchmarks) */
};

struct copy_job {
	const struct dump_opts *opts;
	unsigned seq;
	uint8_t token[PROTO_TOKEN_LEN];
	struct proto_addr client;
};

static void write_text(const char *dir, unsigned seq, const char *ext, const char *text)
{
	char path[4096], tmp[4200];
	snprintf(path, sizeof(path), "%s/%u.%s", dir, seq, ext);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", text);
	fclose(f);
	rename(tmp, path); /* whole or absent for a reader polling the directory */
}

/* Read one copy's frames into DIR/SEQ.data (or only their length and CRC-32 into
 * DIR/SEQ.sum); its end goes to DIR/SEQ.end ("0", "ECONNRESET", or "broken: why" when
 * the stream itself failed). */
static void *copy_main(void *arg)
{
	struct copy_job *job = arg;
	const struct dump_opts *o = job->opts;
	char addr[80], end[PROTO_MSG_MAX + 16] = "broken: no INCOMING_END";
	write_text(o->dir, job->seq, "addr", proto_addr_str(&job->client, addr, sizeof(addr)));
	char path[4096];
	snprintf(path, sizeof(path), "%s/%u.data", o->dir, job->seq);
	hm_cleanup_close int out = o->sum_only
				       ? open("/dev/null", O_WRONLY | O_CLOEXEC)
				       : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	uint64_t bytes = 0;
	uLong crc = crc32(0, NULL, 0);
	struct hm_err err = {0};
	hm_cleanup_close int fd = client_endpoint_dial(&o->ctx->ep, MIRROR_TIMEOUT_MS, &err);
	if (out < 0 || fd < 0 || proto_stream_open(fd, job->token, MIRROR_TIMEOUT_MS, &err) < 0) {
		snprintf(end, sizeof(end), "broken: %s", out < 0 ? strerror(errno) : err.msg);
		goto done;
	}
	if (o->stall_ms)
		usleep(o->stall_ms * 1000u);
	for (;;) {
		struct proto_msg m = {0};
		/* untimed: a blocking read loop, no poll per read; the agent ends every stream */
		if (proto_recv(fd, PROTO_MAX_PAYLOAD, -1, &m, &err) < 0) {
			snprintf(end, sizeof(end), "broken: %s", err.msg);
			break;
		}
		if (m.type == PROTO_INCOMING_DATA) {
			bytes += m.incoming_data.len;
			crc = crc32(crc, m.incoming_data.data, m.incoming_data.len);
			ssize_t w = o->sum_only ? 0
						: hm_write_all(out, m.incoming_data.data,
							       m.incoming_data.len);
			proto_msg_free(&m);
			if (w < 0) {
				snprintf(end, sizeof(end), "broken: write: %s", strerror(errno));
				break;
			}
			continue;
		}
		if (m.type == PROTO_INCOMING_END) {
			snprintf(end, sizeof(end), "%s",
				 m.incoming_end.error ? e2e_errno_name(m.incoming_end.error) : "0");
			proto_msg_free(&m);
			break;
		}
		snprintf(end, sizeof(end), "broken: unexpected %s", proto_type_name(m.type));
		proto_msg_free(&m);
		break;
	}
done:
	if (o->sum_only) {
		char sum[64];
		snprintf(sum, sizeof(sum), "%llu %lu", (unsigned long long)bytes, crc);
		write_text(o->dir, job->seq, "sum", sum);
	}
	write_text(o->dir, job->seq, "end", end);
	free(job);
	return NULL;
}

/* mirror PORT DIR [--ready FILE] [--stall-ms MS] [--sum]: mirror PORT of the target and
 * dump every copy (see copy_main) until killed. Prints "subscribed ID" (also written to
 * FILE) and "connection N from CLIENT" per copy. */
static int cmd_mirror(struct e2e_ctx *ctx, int argc, char **argv)
{
	static const struct option longopts[] = {{"ready", required_argument, NULL, 'r'},
						 {"stall-ms", required_argument, NULL, 's'},
						 {"sum", no_argument, NULL, 'S'},
						 {0}};
	struct dump_opts opts = {.ctx = ctx};
	const char *ready = NULL;
	optind = 0; /* glibc: a full restart of getopt after main's scan */
	int o;
	while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (o == 'r')
			ready = optarg;
		else if (o == 's')
			opts.stall_ms = (unsigned)atoi(optarg);
		else if (o == 'S')
			opts.sum_only = true;
		else
			return 2;
	}
	if (optind != argc - 2 || !ctx->target)
		return 2;
	int port = atoi(argv[optind]);
	opts.dir = argv[optind + 1];
	if (port <= 0 || port > 65535)
		return 2;
	signal(SIGPIPE, SIG_IGN);

	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	uint32_t sub;
	char note[PROTO_MSG_MAX];
	if (e2e_ctl_session(ctx, &c, &err) < 0)
		return e2e_fail("%s", err.msg);
	hm_cleanup_close int fd = c.fd;
	if (e2e_ctl_subscribe(&c, (uint16_t)port, PROTO_INCOMING_MIRROR, 0, NULL, &sub, note,
			      sizeof(note), &err) < 0)
		return e2e_fail("mirror port %d: %s (%s)", port, err.msg, e2e_errno_name(err.code));
	char line[64];
	snprintf(line, sizeof(line), "subscribed %u", sub);
	printf("%s\n", line);
	fflush(stdout);
	if (ready) {
		FILE *f = fopen(ready, "w");
		if (f) {
			fprintf(f, "%s\n", line);
			fclose(f);
		}
	}
	for (unsigned seq = 1;; seq++) {
		struct proto_msg m = {0};
		if (proto_recv(fd, PROTO_MAX_PAYLOAD, -1, &m, &err) < 0)
			return e2e_fail("control connection: %s", err.msg);
		if (m.type != PROTO_INCOMING_CONNECTION) {
			int rc = m.type == PROTO_SESSION_ENDED
				     ? e2e_fail("session ended: %s", m.error.message)
				     : e2e_fail("unexpected %s", proto_type_name(m.type));
			proto_msg_free(&m);
			return rc;
		}
		struct copy_job *job = calloc(1, sizeof(*job));
		if (!job)
			return e2e_fail("out of memory");
		job->opts = &opts;
		job->seq = seq;
		job->client = m.incoming_connection.client;
		memcpy(job->token, m.incoming_connection.token, PROTO_TOKEN_LEN);
		proto_msg_free(&m);
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_t th;
		if (pthread_create(&th, &attr, copy_main, job) != 0) {
			free(job);
			return e2e_fail("thread for copy %u", seq);
		}
		pthread_attr_destroy(&attr);
	}
}

/* mirror-status: print the agent's mirror counters as "mirrored N mirror_lost N
 * mirror_bytes N" (the status must carry the incoming counters). */
static int cmd_mirror_status(struct e2e_ctx *ctx, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return 2;
	struct hm_err err = {0};
	struct e2e_ctl c = {.fd = -1};
	struct proto_msg req = {.type = PROTO_STATUS}, reply = {0};
	int rc = e2e_ctl_open(ctx, &c, &err);
	if (rc == 0)
		rc = e2e_ctl_call(&c, &req, &reply, NULL, NULL, &err);
	if (c.fd >= 0)
		close(c.fd);
	if (rc < 0)
		return e2e_fail("status: %s", err.msg);
	const struct proto_status_reply *s = &reply.status_reply;
	rc = s->has_incoming ? 0 : e2e_fail("the status has no incoming counters");
	printf("mirrored %llu mirror_lost %llu mirror_bytes %llu\n",
	       (unsigned long long)s->mirrored, (unsigned long long)s->mirror_lost,
	       (unsigned long long)s->mirror_bytes);
	proto_msg_free(&reply);
	return rc;
}

static const struct e2e_cmd mirror_cmds[] = {
    {"mirror", "PORT DIR [--ready FILE] [--stall-ms MS] [--sum]", cmd_mirror},
    {"mirror-status", "", cmd_mirror_status},
};
E2E_REGISTER(mirror_cmds)
