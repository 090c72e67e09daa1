/* The program's environment: the target's variables, fetched once from the agent
 * before the program starts, merged over trace-run's own as feature.env says
 * (tracer/policy/env.c). The program is exec'd with the result. */
#include <string.h>

#include "tracer/redirect/session.h"

/* hermit's own secrets are not the program's business */
static bool kept_local(const char *kv)
{
	return strncmp(kv, "HERMIT_TOKEN=", strlen("HERMIT_TOKEN=")) != 0;
}

int trace_env_build(struct trace_session *s, char *const local[], char ***out, struct hm_err *err)
{
	struct policy_env_opts opts;
	policy_env_opts_from_config(&s->cfg, &opts);
	hm_cleanup_free char **remote = NULL;
	size_t remote_count = 0;
	if (opts.import_remote) {
		if (client_env(s->client, &remote, &remote_count, err) < 0)
			return hm_err_prefix(err, "environment of %s", s->cfg.target);
		hm_debug("%zu variables in %s's environment", remote_count, s->cfg.target);
	}
	size_t n = 0;
	while (local && local[n])
		n++;
	hm_cleanup_free char **filtered = calloc(n + 1, sizeof(*filtered));
	if (!filtered)
		return hm_err_set(err, ENOMEM, "environment");
	size_t kept = 0;
	for (size_t i = 0; i < n; i++)
		if (kept_local(local[i]))
			filtered[kept++] = local[i];
	return policy_env_build(&opts, remote, filtered, out, err);
}
