/* agent_e2e's `flood`: the unauthenticated denial of service of issue 7 item 11. It
 * holds IDLE connections to the agent that never send a byte (reopening each one the
 * agent closes, as a determined attacker would), and meanwhile makes LEGIT attempts of
 * a real client (handshake with the token + PING), one after the other. It passes when
 * every attempt succeeds. */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "tests/agent/e2e.h"

struct flood {
	struct e2e_ctx *ctx;
	int *fds;
	unsigned n;
	atomic_bool stop;
	atomic_uint held;	       /* idle connections open right now */
	atomic_uint_fast64_t reopened; /* idle connections the agent closed and we reopened */
	atomic_uint min_held;	       /* lowest count seen while the legitimate clients ran */
	atomic_bool measuring;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int flood_dial(struct flood *fl)
{
	struct hm_err err = {0};
	return client_endpoint_dial(&fl->ctx->ep, 2000, &err);
}

static void flood_count(struct flood *fl)
{
	unsigned held = 0;
	for (unsigned i = 0; i < fl->n; i++)
		held += fl->fds[i] >= 0;
	atomic_store(&fl->held, held);
	if (atomic_load(&fl->measuring) && held < atomic_load(&fl->min_held))
		atomic_store(&fl->min_held, held);
}

/* Keep every slot connected: whatever the agent closes is opened again at once. */
static void *flood_main(void *arg)
{
	struct flood *fl = arg;
	struct pollfd *pf = calloc(fl->n, sizeof(*pf));
	if (!pf)
		return NULL;
	while (!atomic_load(&fl->stop)) {
		for (unsigned i = 0; i < fl->n; i++) {
			if (fl->fds[i] < 0)
				fl->fds[i] = flood_dial(fl);
			pf[i] = (struct pollfd){.fd = fl->fds[i], .events = POLLIN};
		}
		flood_count(fl);
		int r = poll(pf, fl->n, 20);
		if (r <= 0)
			continue;
		for (unsigned i = 0; i < fl->n; i++) {
			if (!pf[i].revents || fl->fds[i] < 0)
				continue;
			char b[64];
			ssize_t got = recv(fl->fds[i], b, sizeof(b), MSG_DONTWAIT);
			if (got > 0 || (got < 0 && (errno == EAGAIN || errno == EINTR)))
				continue;
			close(fl->fds[i]);
			fl->fds[i] = -1;
			atomic_fetch_add(&fl->reopened, 1);
		}
	}
	free(pf);
	return NULL;
}

/* One legitimate client: connect, authenticate, PING, within timeout_ms. */
static int legit_attempt(struct e2e_ctx *ctx, int timeout_ms, char *why, size_t whylen)
{
	struct hm_err err = {0};
	struct client *c;
	struct client_opts opts = {.client_name = "agent_e2e flood-legit",
				   .timeout_ms = timeout_ms};
	if (client_connect(&ctx->ep, ctx->token, &opts, &c, &err) < 0) {
		snprintf(why, whylen, "connect: %.400s", err.msg);
		return -1;
	}
	int rc = client_ping(c, &err);
	if (rc < 0)
		snprintf(why, whylen, "ping: %.400s", err.msg);
	client_close(c);
	return rc;
}

/* flood IDLE LEGIT [ATTEMPT_MS [SPREAD_MS [MIN_OK]]]: the attempts start SPREAD_MS apart in
 * total, so the flood lasts longer than the agent's pre-auth deadline. */
static int cmd_flood(struct e2e_ctx *ctx, int argc, char **argv)
{
	if (argc < 3 || argc > 6)
		return 2;
	unsigned idle = (unsigned)atoi(argv[1]);
	unsigned legit = (unsigned)atoi(argv[2]);
	int attempt_ms = argc > 3 ? atoi(argv[3]) : 3000;
	int spread_ms = argc > 4 ? atoi(argv[4]) : 0;
	unsigned min_ok = argc > 5 ? (unsigned)atoi(argv[5]) : legit;
	if (!idle || !legit || attempt_ms <= 0 || spread_ms < 0)
		return 2;
	struct flood fl = {.ctx = ctx, .n = idle};
	fl.fds = calloc(idle, sizeof(int));
	if (!fl.fds)
		return e2e_fail("out of memory");
	/* all of them at once first, so the agent sees IDLE silent peers together */
	for (unsigned i = 0; i < idle; i++)
		fl.fds[i] = flood_dial(&fl);
	flood_count(&fl);
	unsigned opened = atomic_load(&fl.held);
	pthread_t th;
	if (pthread_create(&th, NULL, flood_main, &fl) != 0)
		return e2e_fail("cannot start the flood thread");
	poll(NULL, 0, 300); /* the agent has accepted (or refused) them by now */
	atomic_store(&fl.min_held, atomic_load(&fl.held));
	atomic_store(&fl.measuring, true);
	unsigned ok = 0;
	double worst = 0, total = 0;
	char why[512] = "";
	double start = now_s();
	for (unsigned i = 0; i < legit; i++) {
		char this_why[512];
		double due = start + (double)spread_ms / 1000.0 * i / legit;
		if (now_s() < due)
			poll(NULL, 0, (int)((due - now_s()) * 1000) + 1);
		double t0 = now_s();
		if (legit_attempt(ctx, attempt_ms, this_why, sizeof(this_why)) == 0)
			ok++;
		else
			snprintf(why, sizeof(why), "%s", this_why);
		double dt = now_s() - t0;
		total += dt;
		if (dt > worst)
			worst = dt;
	}
	atomic_store(&fl.measuring, false);
	unsigned held = atomic_load(&fl.held), min_held = atomic_load(&fl.min_held);
	atomic_store(&fl.stop, true);
	pthread_join(th, NULL);
	for (unsigned i = 0; i < idle; i++)
		if (fl.fds[i] >= 0)
			close(fl.fds[i]);
	free(fl.fds);
	printf("flood: %u idle connections opened, %u held at the end (at least %u during the "
	       "%.1f s of attempts), %llu closed by the agent and reopened\n",
	       opened, held, min_held, now_s() - start,
	       (unsigned long long)atomic_load(&fl.reopened));
	printf("flood: legitimate clients %u/%u succeeded (handshake + PING within %d ms; mean "
	       "%.0f ms, worst %.0f ms)%s%s\n",
	       ok, legit, attempt_ms, total / legit * 1000, worst * 1000,
	       *why ? "; last failure: " : "", why);
	if (opened < idle)
		return e2e_fail("only %u of %u idle connections could be opened", opened, idle);
	if (ok < min_ok)
		return e2e_fail("%u of %u legitimate clients got in (%u needed)", ok, legit,
				min_ok);
	return e2e_ok("%u/%u legitimate clients got in while %u idle connections were held", ok,
		      legit, idle);
}

static const struct e2e_cmd flood_cmds[] = {
    {"flood", "IDLE LEGIT [ATTEMPT_MS [SPREAD_MS [MIN_OK]]]", cmd_flood},
};
E2E_REGISTER(flood_cmds)
