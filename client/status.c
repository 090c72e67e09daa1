/* An agent's STATUS reply, as `trace-agent status` prints it (client/client.h). */
#include <stdio.h>

#include "client/client.h"

static void print_bytes(FILE *f, const char *label, uint64_t v)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double x = (double)v;
	size_t u = 0;
	while (x >= 1024 && u + 1 < HM_ARRAY_SIZE(units)) {
		x /= 1024;
		u++;
	}
	if (u == 0)
		fprintf(f, "%-12s %llu B\n", label, (unsigned long long)v);
	else
		fprintf(f, "%-12s %llu (%.1f %s)\n", label, (unsigned long long)v, x, units[u]);
}

void client_status_print(FILE *f, const struct client_status *s)
{
	uint64_t secs = s->uptime_ms / 1000;
	hm_print_line(f, "%-12s %s", "agent", s->version);
	fprintf(f, "%-12s %llud %02lluh %02llum %02llus\n", "uptime",
		(unsigned long long)(secs / 86400), (unsigned long long)(secs / 3600 % 24),
		(unsigned long long)(secs / 60 % 60), (unsigned long long)(secs % 60));
	fprintf(f, "%-12s %u\n", "sessions", s->sessions);
	fprintf(f, "%-12s %u\n", "streams", s->streams);
	fprintf(f, "%-12s %llu\n", "requests", (unsigned long long)s->requests);
	fprintf(f, "%-12s %llu\n", "errors", (unsigned long long)s->errors);
	/* the protocol's counters are named from the client's side of the agent */
	print_bytes(f, "to clients", s->bytes_in);
	print_bytes(f, "from clients", s->bytes_out);
	if (s->has_incoming) {
		/* one line, "name N" pairs: scripts pick a counter by its name */
		fprintf(f,
			"%-12s subscriptions %u mirrored %llu mirror_lost %llu mirror_bytes %llu "
			"stolen %llu passed_to_target %llu\n",
			"incoming", s->subscriptions, (unsigned long long)s->mirrored,
			(unsigned long long)s->mirror_lost, (unsigned long long)s->mirror_bytes,
			(unsigned long long)s->stolen, (unsigned long long)s->passed_to_target);
	}
	if (s->has_kernel_relay)
		fprintf(f, "%-12s %s streams %u\n", "kernel relay",
			s->kernel_relay_on ? "on" : "off", s->kernel_streams);
	if (!s->nbudgets)
		return;
	static const struct {
		const char *name;
		bool bytes;
	} kinds[PROTO_BUDGET_COUNT] = {
	    [PROTO_BUDGET_SESSIONS] = {"sessions", false},
	    [PROTO_BUDGET_STREAMS] = {"streams", false},
	    [PROTO_BUDGET_INFLIGHT] = {"in flight", true},
	    [PROTO_BUDGET_CONNECTS] = {"connects", false},
	};
	fprintf(f, "budgets      %-10s %10s %10s %10s %10s\n", "", "used", "peak", "limit",
		"refused");
	for (unsigned i = 0; i < s->nbudgets && i < PROTO_BUDGET_COUNT; i++) {
		const struct proto_budget *b = &s->budgets[i];
		char used[32], peak[32], limit[32];
		if (kinds[i].bytes) {
			snprintf(used, sizeof(used), "%lluK", (unsigned long long)(b->used >> 10));
			snprintf(peak, sizeof(peak), "%lluK", (unsigned long long)(b->peak >> 10));
			snprintf(limit, sizeof(limit), "%lluK",
				 (unsigned long long)(b->limit >> 10));
		} else {
			snprintf(used, sizeof(used), "%llu", (unsigned long long)b->used);
			snprintf(peak, sizeof(peak), "%llu", (unsigned long long)b->peak);
			snprintf(limit, sizeof(limit), "%llu", (unsigned long long)b->limit);
		}
		fprintf(f, "             %-10s %10s %10s %10s %10llu\n", kinds[i].name, used, peak,
			b->limit ? limit : "none", (unsigned long long)b->refused);
	}
}
