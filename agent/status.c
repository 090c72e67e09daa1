/* The agent's counters, as the STATUS request reports them (client/status.c prints
 * them for `trace-agent status`). */
#include <string.h>

#include "agent/internal.h"

void agent_stats_init(struct agent_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->started_ms = hm_now_ms();
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
	out->uptime_ms = hm_now_ms() - s->started_ms;
	out->sessions = clamp32(atomic_load(&s->sessions));
	/* streams: relayed now, plus opened by a reply and not yet connected */
	out->streams = clamp32(atomic_load(&s->relay.streams) + pending_streams);
	out->requests = atomic_load(&s->requests);
	out->errors = atomic_load(&s->errors);
	out->bytes_in = atomic_load(&s->relay.bytes_in) + atomic_load(&s->ctl_bytes_in);
	out->bytes_out = atomic_load(&s->relay.bytes_out) + atomic_load(&s->ctl_bytes_out);
}
