/* exec credential plugins (client.authentication.k8s.io v1 and v1beta1), as kubectl
 * runs them: the command with its args, the kubeconfig's env added to ours,
 * KUBERNETES_EXEC_INFO describing the request, stdin and stderr the user's (a plugin
 * may talk to them), and an ExecCredential on stdout. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
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
				return hm_err_plain(err, EFBIG,
						    "exec plugin %s printed more than 1 MiB", cmd);
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
		return hm_err_plain(err, EINVAL,
				    "exec plugin %s did not print a JSON ExecCredential", cmd);
	int rc = -1;
	const char *kind = kube_json_str(doc, "kind");
	const char *api = kube_json_str(doc, "apiVersion");
	struct json_object *status = kube_json_path(doc, "status");
	const char *token = kube_json_str(status, "token");
	const char *cert = kube_json_str(status, "clientCertificateData");
	const char *key = kube_json_str(status, "clientKeyData");
	const char *expiry = kube_json_str(status, "expirationTimestamp");
	if (!kind || strcmp(kind, "ExecCredential")) {
		hm_err_plain(err, EINVAL, "exec plugin %s printed kind '%s', not ExecCredential",
			     cmd, kind ? kind : "");
	} else if (!api || strcmp(api, x->api_version)) {
		hm_err_plain(err, EINVAL,
			     "exec plugin %s answered apiVersion '%s', the kubeconfig "
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

/* PATH search as execvp does it, done before fork: only async-signal-safe calls after */
static int find_command(const char *cmd, char *out, size_t len)
{
	if (strchr(cmd, '/'))
		return (size_t)snprintf(out, len, "%s", cmd) < len ? 0 : -1;
	const char *path = getenv("PATH");
	if (!path || !path[0])
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path;;) {
		size_t n = strcspn(p, ":");
		if (n && (size_t)snprintf(out, len, "%.*s/%s", (int)n, p, cmd) < len &&
		    access(out, X_OK) == 0)
			return 0;
		if (!p[n])
			return -1;
		p += n + 1;
	}
}

/* The plugin runs as a grandchild: an intermediate child waits for it and writes its
 * wait status to status_fd. trace-run's tracer reaps every child of the process
 * (waitpid(-1, __WALL)) while the program runs, and a plugin may run then (expired
 * credentials, a new stream); the pipe keeps the plugin's status ours. */
static pid_t spawn_plugin(const char *file, char **argv, char **env, int out_fd, int status_fd)
{
	pid_t mid = fork();
	if (mid != 0)
		return mid;
	sigset_t none;
	sigemptyset(&none);
	pid_t self = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		/* killed with the intermediate, which read_output kills at its deadline */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != self)
			_exit(127);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(out_fd, STDOUT_FILENO); /* dup2 clears O_CLOEXEC on the copy */
		execve(file, argv, env);
		_exit(127);
	}
	int status = 127 << 8;
	if (pid > 0)
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
	if (write(status_fd, &status, sizeof(status)) != sizeof(status))
		_exit(1);
	_exit(0);
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
	char file[4096];
	if (find_command(x->command, file, sizeof(file)) < 0 || access(file, X_OK) < 0)
		return hm_err_plain(
		    err, ENOENT,
		    "exec plugin %s: not found or not executable (the kubeconfig's "
		    "user runs it to get credentials; is it installed and in PATH?)",
		    x->command);

	int outp[2], statp[2];
	if (pipe2(outp, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	hm_cleanup_close int rd = outp[0];
	hm_cleanup_close int wr = outp[1];
	if (pipe2(statp, O_CLOEXEC) < 0)
		return hm_err_errno(err, "pipe");
	hm_cleanup_close int st_rd = statp[0];
	hm_cleanup_close int st_wr = statp[1];
	pid_t mid = spawn_plugin(file, argv, env, wr, st_wr);
	if (mid < 0)
		return hm_err_errno(err, "fork for exec plugin %s", x->command);
	close(hm_steal_fd(&wr));
	close(hm_steal_fd(&st_wr));
	char *text = NULL;
	int rrc = read_output(rd, mid, x->command, &text, err);
	int status = -1;
	ssize_t n = hm_read_all(st_rd, &status, sizeof(status));
	/* ECHILD when the tracer reaped it first: the status came through the pipe */
	while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
		;
	if (rrc < 0)
		return -1;
	hm_cleanup_free char *owned = text;
	if (n != sizeof(status))
		return hm_err_plain(err, EIO, "exec plugin %s: its exit status was lost",
				    x->command);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return hm_err_plain(err, ENOENT, "exec plugin %s could not be started", x->command);
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
