/* The agent's counters, as the STATUS request reports them and `trace-agent status`
 * prints them. */
#include <string.h>
#include <time.h>

#include "agent/agent.h"
#include "agent/internal.h"

uint64_t agent_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void agent_stats_init(struct agent_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->started_ms = agent_now_ms();
}

static uint32_t clamp32(uint64_t v)
{
	return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

void agent_stats_fill(struct agent_stats *s, const char *version, size_t pending_streams,
		      struct proto_status_reply *out)
{
	memset(out, 0, sizeof(*out));
	out->version = version;
	out->uptime_ms = agent_now_ms() - s->started_ms;
	out->sessions = clamp32(atomic_load(&s->sessions));
	/* streams: relayed now, plus opened by a reply and not yet connected */
	out->streams = clamp32(atomic_load(&s->relay.streams) + pending_streams);
	out->requests = atomic_load(&s->requests);
	out->errors = atomic_load(&s->errors);
	out->bytes_in = atomic_load(&s->relay.bytes_in) + atomic_load(&s->ctl_bytes_in);
	out->bytes_out = atomic_load(&s->relay.bytes_out) + atomic_load(&s->ctl_bytes_out);
}

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

void agent_status_print(FILE *f, const struct agent_status *s)
{
	uint64_t secs = s->uptime_ms / 1000;
	fprintf(f, "%-12s %s\n", "agent", s->version);
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
			snprintf(limit, sizeof(limit), "%lluK", (unsigned long long)(b->limit >> 10));
		} else {
			snprintf(used, sizeof(used), "%llu", (unsigned long long)b->used);
			snprintf(peak, sizeof(peak), "%llu", (unsigned long long)b->peak);
			snprintf(limit, sizeof(limit), "%llu", (unsigned long long)b->limit);
		}
		fprintf(f, "             %-10s %10s %10s %10s %10llu\n", kinds[i].name, used, peak,
			b->limit ? limit : "none", (unsigned long long)b->refused);
	}
}
