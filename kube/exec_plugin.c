/* exec credential plugins (client.authentication.k8s.io v1 and v1beta1), as kubectl
 * runs them: the command with its args, the kubeconfig's env added to ours,
 * KUBERNETES_EXEC_INFO describing the request, stdin and stderr the user's (a plugin
 * may talk to them), and an ExecCredential on stdout. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>

#include "kube/internal.h"

#define EXEC_TIMEOUT_MS 60000
#define EXEC_OUTPUT_MAX (1u << 20)

extern char **environ;

static char **build_env(const struct kube_exec *x, const char *info)
{
	size_t n = 0, m = 0;
	while (environ[n])
		n++;
	while (x->env && x->env[m])
		m++;
	char **env = calloc(n + m + 2, sizeof(*env));
	if (!env)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		bool overridden = !strncmp(environ[i], "KUBERNETES_EXEC_INFO=", 21);
		size_t klen = strcspn(environ[i], "=");
		for (size_t j = 0; j < m && !overridden; j++)
			overridden = !strncmp(environ[i], x->env[j], klen + 1);
		if (!overridden)
			env[o++] = environ[i];
	}
	for (size_t j = 0; j < m; j++)
		env[o++] = x->env[j];
	env[o++] = (char *)info;
	return env;
}

static int read_output(int fd, pid_t pid, const char *cmd, char **out, struct hm_err *err)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return hm_err_set(err, ENOMEM, "exec plugin");
	int64_t deadline = hm_deadline_in(EXEC_TIMEOUT_MS);
	for (;;) {
		int ev = hm_poll_fd(fd, POLLIN, deadline);
		if (ev == 0) {
			kill(pid, SIGKILL);
			free(buf);
			return hm_err_plain(err, ETIMEDOUT,
					    "exec plugin %s printed no credential within %d s", cmd,
					    EXEC_TIMEOUT_MS / 1000);
		}
		if (len + 1 >= cap) {
			if (cap >= EXEC_OUTPUT_MAX) {
				kill(pid, SIGKILL);
				free(buf);
				return hm_err_plain(err, EFBIG, "exec plugin %s printed more than 1 MiB",
						    cmd);
			}
			char *bigger = realloc(buf, cap * 2);
			if (!bigger) {
				free(buf);
				return hm_err_set(err, ENOMEM, "exec plugin");
			}
			buf = bigger;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

static int parse_credential(const char *text, const struct kube_exec *x, struct kube_cred *out,
			    struct hm_err *err)
{
	const char *cmd = x->command;
	struct json_object *doc = json_tokener_parse(text);
	if (!doc)
		return hm_err_plain(err, EINVAL, "exec plugin %s did not print a JSON ExecCredential",
				    cmd);
	int rc = -1;
	const char *kind = kube_json_str(doc, "kind");
	const char *api = kube_json_str(doc, "apiVersion");
	struct json_object *status = kube_json_path(doc, "status");
	const char *token = kube_json_str(status, "token");
	const char *cert = kube_json_str(status, "clientCertificateData");
	const char *key = kube_json_str(status, "clientKeyData");
	const char *expiry = kube_json_str(status, "expirationTimestamp");
	if (!kind || strcmp(kind, "ExecCredential")) {
		hm_err_plain(err, EINVAL, "exec plugin %s printed kind '%s', not ExecCredential", cmd,
			     kind ? kind : "");
	} else if (!api || strcmp(api, x->api_version)) {
		hm_err_plain(err, EINVAL, "exec plugin %s answered apiVersion '%s', the kubeconfig "
					  "asked for %s",
			     cmd, api ? api : "", x->api_version);
	} else if (!(token && token[0]) && !(cert && key)) {
		hm_err_plain(err, EINVAL,
			     "exec plugin %s gave neither a token nor a client certificate and key",
			     cmd);
	} else if (expiry && kube_parse_time(expiry, &out->expires) < 0) {
		hm_err_plain(err, EINVAL, "exec plugin %s: bad expirationTimestamp '%s'", cmd,
			     expiry);
	} else {
		rc = 0;
		if ((token && token[0] && !(out->token = strdup(token))) ||
		    (cert && key &&
		     (!(out->cert_data = (unsigned char *)strdup(cert)) ||
		      !(out->key_data = (unsigned char *)strdup(key)))))
			rc = hm_err_set(err, ENOMEM, "exec plugin");
		out->cert_len = cert && key ? strlen(cert) : 0;
		out->key_len = cert && key ? strlen(key) : 0;
	}
	json_object_put(doc);
	return rc;
}

int kube_exec_run(const struct kube_exec *x, const char *server, struct kube_cred *out,
		  struct hm_err *err)
{
	(void)server; /* provideClusterInfo is not supported: the plugin gets no cluster */
	memset(out, 0, sizeof(*out));
	char info[256];
	snprintf(info, sizeof(info),
		 "KUBERNETES_EXEC_INFO={\"apiVersion\":\"%s\",\"kind\":\"ExecCredential\","
		 "\"spec\":{\"interactive\":false}}",
		 x->api_version);
	hm_cleanup_free char **env = build_env(x, info);
	size_t nargs = 0;
	while (x->args && x->args[nargs])
		nargs++;
	hm_cleanup_free char **argv = calloc(nargs + 2, sizeof(*argv));
	if (!env || !argv)
		return hm_err_set(err, ENOMEM, "exec plugin");
	argv[0] = x->command;
	for (size_t i = 0; i < nargs; i++)
		argv[i + 1] = x->args[i];

	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	hm_cleanup_close int rd = pipefd[0];
	hm_cleanup_close int wr = pipefd[1];
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, wr, STDOUT_FILENO);
	pid_t pid;
	int rc = posix_spawnp(&pid, x->command, &fa, NULL, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return hm_err_plain(err, rc,
				    "exec plugin %s: %s (the kubeconfig's user runs it to get "
				    "credentials; is it installed and in PATH?)",
				    x->command, strerror(rc));
	close(hm_steal_fd(&wr));
	char *text = NULL;
	int rrc = read_output(rd, pid, x->command, &text, err);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rrc < 0)
		return -1;
	hm_cleanup_free char *owned = text;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (WIFSIGNALED(status))
			return hm_err_plain(err, EACCES, "exec plugin %s was killed by signal %d",
					    x->command, WTERMSIG(status));
		return hm_err_plain(err, EACCES, "exec plugin %s failed with exit status %d",
				    x->command, WEXITSTATUS(status));
	}
	if (parse_credential(text, x, out, err) < 0) {
		kube_cred_free(out);
		return -1;
	}
	explicit_bzero(text, strlen(text));
	return 0;
}

void kube_cred_free(struct kube_cred *c)
{
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	if (c->key_data)
		explicit_bzero(c->key_data, c->key_len);
	free(c->token);
	free(c->cert_data);
	free(c->key_data);
	memset(c, 0, sizeof(*c));
}
