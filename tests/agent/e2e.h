/* agent_e2e: end-to-end checks of a real trace-agent through the client library.
 * `agent_e2e [--unix PATH | --agent ADDR] --token-file F [--target T] CMD [ARGS]`: each
 * CMD asserts one thing and exits 0 (pass), 1 (failed, with a FAIL: line on stderr) or
 * 2 (usage). Other files add commands with E2E_REGISTER (e.g. e2e_outgoing.c). */
#ifndef HERMIT_TESTS_AGENT_E2E_H
#define HERMIT_TESTS_AGENT_E2E_H

#include "client/client.h"

struct e2e_ctx {
	struct client_endpoint ep;
	char token[PROTO_AUTH_TOKEN_MAX + 1];
	const char *target; /* --target, NULL when not given */
	/* --no-handoff: TCP connections come as relayed streams even from a unix agent */
	uint64_t disable_features;
};

struct e2e_cmd {
	const char *name;
	const char *args; /* usage of the arguments after the name */
	int (*run)(struct e2e_ctx *ctx, int argc, char **argv); /* argv[0] is the name */
};

void e2e_register(const struct e2e_cmd *cmds, size_t n);
#define E2E_REGISTER(table)                                                                        \
	static void __attribute__((constructor)) e2e_register_##table(void)                        \
	{                                                                                          \
		e2e_register(table, HM_ARRAY_SIZE(table));                                         \
	}

/* "FAIL: ..." on stderr; returns 1 (the failing exit code). */
int e2e_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "ok: ..." on stdout; returns 0. */
int e2e_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A client connected and authenticated, or NULL after printing why. */
struct client *e2e_connect(struct e2e_ctx *ctx);
/* A client with a session on ctx->target (required), or NULL after printing why. */
struct client *e2e_session(struct e2e_ctx *ctx);
/* "ENOENT" -> ENOENT, -1 for a name the table does not know; and back (strerror
 * for an unknown code). */
int e2e_errno_code(const char *name);
const char *e2e_errno_name(int e);
/* "10.0.0.1:80", "[::1]:53" -> proto_addr; < 0 if malformed. */
int e2e_parse_addr(const char *s, struct proto_addr *out);
/* 0 when the agent still serves a fresh client (ping, and a session + env when
 * ctx->target is set); else 1 after printing why. */
int e2e_agent_still_serves(struct e2e_ctx *ctx);

/* ---- a control connection spoken by hand (e2e_incoming.c), for what the client
 * library does not expose (events such as INCOMING_CONNECTION) ---- */
struct e2e_ctl {
	int fd;
	uint32_t next_id;
};
typedef void (*e2e_event_fn)(void *arg, const struct proto_msg *ev);
/* Dial and authenticate (every supported feature). */
int e2e_ctl_open(struct e2e_ctx *ctx, struct e2e_ctl *c, struct hm_err *err);
/* Send req and wait for its reply (the caller frees it with proto_msg_free); events
 * that arrive meanwhile go to on_event (may be NULL). An ERROR reply fails with its
 * errno and message, SESSION_ENDED too. */
int e2e_ctl_call(struct e2e_ctl *c, struct proto_msg *req, struct proto_msg *reply,
		 e2e_event_fn on_event, void *arg, struct hm_err *err);
/* e2e_ctl_open and a session on ctx->target; prints "session ID". */
int e2e_ctl_session(struct e2e_ctx *ctx, struct e2e_ctl *c, struct hm_err *err);
/* INCOMING_SUBSCRIBE: *sub and the reply's note (note_len bytes at most). */
int e2e_ctl_subscribe(struct e2e_ctl *c, uint16_t port, uint8_t mode, uint32_t flags,
		      const char *filter, uint32_t *sub, char *note, size_t note_len,
		      struct hm_err *err);

#endif
