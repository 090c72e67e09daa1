/* A trace-run session: where the agent is, how to authenticate, the target, and the
 * policies the handlers consult. Connection failures are sorted into what the user has
 * to fix (start the agent, give the right token, name an existing target), each with
 * its own exit code. */
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kube/kube.h"
#include "tracer/redirect/session.h"

static void copy_env(char *dst, size_t size, const char *value)
{
	snprintf(dst, size, "%s", value && value[0] == '/' ? value : "");
}

int trace_session_init(struct trace_session *s, struct policy_config *cfg, const char *token_env,
		       struct hm_err *err)
{
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	policy_config_init(cfg); /* moved: the lists now belong to s->cfg */
	if (token_env && token_env[0]) {
		/* the file wins when named explicitly, by a flag or the config */
		if (strlen(token_env) > PROTO_AUTH_TOKEN_MAX)
			return hm_err_set(err, EINVAL, "HERMIT_TOKEN is longer than %d bytes",
					  PROTO_AUTH_TOKEN_MAX);
		if (!s->cfg.agent.token_file)
			snprintf(s->token, sizeof(s->token), "%s", token_env);
	}
	if (!getcwd(s->cwd, sizeof(s->cwd)))
		return hm_err_errno(err, "getcwd");
	copy_env(s->home, sizeof(s->home), getenv("HOME"));
	copy_env(s->tmpdir, sizeof(s->tmpdir), getenv("TMPDIR"));
	copy_env(s->runtime_dir, sizeof(s->runtime_dir), getenv("XDG_RUNTIME_DIR"));
	return 0;
}

bool trace_session_lost(struct trace_session *s, int *errno_for_files)
{
	struct hm_err why = {0};
	if (!s->client || !client_ended(s->client, &why))
		return false;
	bool target_gone = why.code == ESRCH;
	if (errno_for_files)
		*errno_for_files = target_gone ? ESRCH : EIO;
	if (!s->lost_reported) {
		s->lost_reported = true;
		if (target_gone)
			hm_warn(
			    "%s; from now on the program's remote files fail with ESRCH and its "
			    "connections through the pod with ENETUNREACH",
			    why.msg);
		else
			hm_warn("lost the agent (%s); from now on the program's remote files fail "
				"with EIO and its connections through the pod with ENETUNREACH",
				why.msg);
	}
	return true;
}

static void session_ended(void *arg)
{
	trace_session_lost(arg, NULL);
}

void trace_session_watch(struct trace_session *s)
{
	tracer_watch_fd(s->tracer, client_event_fd(s->client), session_ended, s);
}

static bool agent_unreachable(int code)
{
	switch (code) {
	case ENOENT:	   /* no socket file */
	case ECONNREFUSED: /* a stale socket, or nothing on the port */
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ECONNRESET:
	case ECONNABORTED:
	case EPIPE:
	case ENOTSOCK:
	case ENOTDIR:
	case EADDRNOTAVAIL:
		return true;
	default:
		return false;
	}
}

int trace_session_connect(struct trace_session *s, int *exit_code, struct hm_err *err)
{
	*exit_code = TRACER_EXIT_FAILURE;
	const char *spec = s->cfg.agent.address	    ? s->cfg.agent.address
			   : s->cfg.agent.unix_path ? s->cfg.agent.unix_path
						    : PROTO_DEFAULT_AGENT_UNIX;
	if (s->endpoint_set) {
		/* kube.c chose it */
	} else if (s->cfg.agent.unix_path && !s->cfg.agent.address) {
		/* a unix path need not start with '/' or "./" to be one */
		if (client_endpoint_unix(spec, &s->endpoint, err) < 0)
			return -1;
	} else if (client_endpoint_parse(spec, &s->endpoint, err) < 0) {
		return hm_err_prefix(err, "agent address");
	}
	char where[300];
	client_endpoint_str(&s->endpoint, where, sizeof(where));

	if (!s->token[0]) {
		const char *file =
		    s->cfg.agent.token_file ? s->cfg.agent.token_file : PROTO_DEFAULT_TOKEN_FILE;
		if (client_token_load(file, s->token, sizeof(s->token), err) < 0) {
			*exit_code = TRACER_EXIT_AUTH;
			return hm_err_prefix(err, "no auth token for the agent (give --token-file "
						  "or set HERMIT_TOKEN)");
		}
	}

	struct client_opts opts = {.client_name = "trace-run"};
	if (client_connect(&s->endpoint, s->token, &opts, &s->client, err) < 0) {
		if (err->code == EACCES) {
			/* a rejected token, or a socket we may not connect to: try the socket
			 * alone to tell which */
			struct hm_err dial_err = {0};
			int fd = client_endpoint_dial(&s->endpoint, 2000, &dial_err);
			if (fd >= 0) {
				close(fd);
				*exit_code = TRACER_EXIT_AUTH;
				return hm_err_plain(err, EACCES,
						    "the agent at %s rejected the auth token "
						    "(wrong --token-file or HERMIT_TOKEN?)",
						    where);
			}
			if (dial_err.code == EACCES) {
				*exit_code = TRACER_EXIT_AUTH;
				return hm_err_plain(err, EACCES, "%s", dial_err.msg);
			}
			*exit_code = TRACER_EXIT_AGENT_DOWN;
			return hm_err_plain(err, dial_err.code, "cannot reach the agent at %s: %s",
					    where, strerror(dial_err.code));
		}
		if (err->code == EPERM && s->kube) {
			/* RBAC refused the port-forward: kube/ said who may not do what */
			*exit_code = TRACER_EXIT_AUTH;
			return -1;
		}
		if (s->kube) {
			/* through a port-forward, whatever ends the connection before the
			 * handshake (the kubelet's refused connect, the API server closing) is
			 * the agent out of reach: an EOF or a reset, as the race goes */
			*exit_code = TRACER_EXIT_AGENT_DOWN;
			char why[HM_ERR_MSG_MAX], said[512];
			snprintf(why, sizeof(why), "%s", err->msg);
			if (kube_portforward_last_error(said, sizeof(said)))
				snprintf(why, sizeof(why), "%s", said);
			return hm_err_plain(err, err->code ? err->code : ECONNRESET,
					    "cannot reach the agent at %s: %s", where, why);
		}
		if (agent_unreachable(err->code)) {
			*exit_code = TRACER_EXIT_AGENT_DOWN;
			return hm_err_plain(err, err->code,
					    "cannot reach the agent at %s: %s (is trace-agent "
					    "running? --agent / --agent-unix say where it is)",
					    where, strerror(err->code));
		}
		return hm_err_prefix(err, "agent at %s", where);
	}
	const char *agent_target = s->agent_target[0] ? s->agent_target : s->cfg.target;
	if (client_session_open(s->client, agent_target, &s->info, err) < 0) {
		if (err->code == ENOENT || err->code == ESRCH || err->code == EINVAL ||
		    err->code == EPERM) {
			*exit_code = TRACER_EXIT_TARGET;
			/* the agent's words, without the request name the client puts first */
			const char *why = err->msg;
			if (!strncmp(why, "SESSION_OPEN: ", 14))
				why += 14;
			char msg[HM_ERR_MSG_MAX];
			snprintf(msg, sizeof(msg), "%s", why);
			return hm_err_plain(err, err->code, "target %s: %s", s->cfg.target, msg);
		}
		if (agent_unreachable(err->code) || err->code == ESHUTDOWN)
			*exit_code = TRACER_EXIT_AGENT_DOWN;
		return hm_err_prefix(err, "open a session on %s", s->cfg.target);
	}
	hm_info("session %llu on %s (%s, pid %d) through the agent at %s",
		(unsigned long long)s->info.session_id, s->cfg.target, s->info.description,
		(int)s->info.pid, where);
	*exit_code = 0;
	return 0;
}

/* PATH search as execvp does it, to learn which file will run */
static void find_program(const char *program, const char *path, const char *cwd, char *out,
			 size_t size)
{
	out[0] = '\0';
	if (strchr(program, '/')) {
		if (program[0] == '/')
			snprintf(out, size, "%s", program);
		else if ((size_t)snprintf(out, size, "%s/%s", cwd, program) >= size)
			out[0] = '\0';
		return;
	}
	if (!path)
		path = "/usr/local/bin:/bin:/usr/bin";
	const char *p = path;
	for (;;) {
		const char *end = strchrnul(p, ':');
		size_t n = (size_t)(end - p);
		char candidate[PATH_MAX];
		int len = n ? snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)n, p, program)
			    : snprintf(candidate, sizeof(candidate), "%s/%s", cwd, program);
		struct stat st;
		if (len > 0 && (size_t)len < sizeof(candidate) && stat(candidate, &st) == 0 &&
		    S_ISREG(st.st_mode) && access(candidate, X_OK) == 0) {
			if (candidate[0] == '/')
				snprintf(out, size, "%s", candidate);
			else if ((size_t)snprintf(out, size, "%s/%.*s", cwd, PATH_MAX / 2,
						  candidate) >= size)
				out[0] = '\0';
			return;
		}
		if (!*end)
			return;
		p = end + 1;
	}
}

int trace_session_policies(struct trace_session *s, const char *program, const char *path,
			   struct hm_err *err)
{
	find_program(program, path, s->cwd, s->program, sizeof(s->program));
	if (s->program[0]) {
		char real[PATH_MAX];
		if (realpath(s->program, real))
			snprintf(s->program, sizeof(s->program), "%s", real);
		else
			tracer_path_normalize(s->program);
	}
	if (s->cfg.feature.fs.mode != POLICY_FS_MODE_LOCAL) {
		struct policy_fs_opts fo;
		policy_fs_opts_from_config(&s->cfg, &fo);
		fo.program = s->program[0] ? s->program : NULL;
		fo.cwd = s->cwd;
		fo.home = s->home[0] ? s->home : NULL;
		fo.tmpdir = s->tmpdir[0] ? s->tmpdir : NULL;
		if (policy_fs_new(&fo, &s->fs, err) < 0)
			return -1;
	}
	if (policy_dns_table_new(4096, &s->dns, err) < 0)
		return -1;
	struct policy_net_opts no;
	policy_net_opts_from_config(&s->cfg, &no);
	no.names = s->dns;
	if (policy_net_new(&no, &s->net, err) < 0)
		return -1;
	return 0;
}

void trace_session_release(struct trace_session *s)
{
	if (s->client) {
		client_close(s->client);
		s->client = NULL;
	}
	policy_fs_free(s->fs);
	s->fs = NULL;
	policy_net_free(s->net);
	s->net = NULL;
	policy_dns_table_free(s->dns);
	s->dns = NULL;
	policy_config_free(&s->cfg);
	explicit_bzero(s->token, sizeof(s->token));
	kube_close(s->kube); /* after the client: its streams dial through it */
	s->kube = NULL;
}
