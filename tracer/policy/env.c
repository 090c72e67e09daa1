/* The program's environment, as mirrord builds it: the local environment, with the
 * pod's variables (those include/exclude let through) set over it, then the overrides.
 * Local variables the pod does not have are kept, so the program still finds TERM,
 * DISPLAY, SSH_AUTH_SOCK... Variables that describe this machine's installation
 * (PATH, HOME, the shell's bookkeeping) and those that make a program load or run code
 * (the loader's LD_*, BASH_ENV, PYTHONSTARTUP...) stay local unless include names them
 * exactly or an override sets them. */
#include <fnmatch.h>
#include <string.h>

#include "tracer/policy/policy.h"

/* mirrord keeps PATH, HOME, CLASSPATH, JAVA_HOME, PYTHONPATH local for the same
 * reason; the shell's bookkeeping is about the local shell. */
static const char *const local_by_default[] = {
    "PATH", "HOME", "PWD", "OLDPWD", "SHLVL", "_", "CLASSPATH", "JAVA_HOME",
};

/* Never imported (unless named exactly): variables that make a local program load or
 * run code. The pod's values name the pod's files, which this machine's loader, shell
 * or interpreter would otherwise happily execute here: LD_AUDIT=/lib/evil.so in the
 * pod means /lib/evil.so of the pod, served by trace-run, loaded into /usr/bin/id. The
 * list is glibc's "unsecure" variables (what it drops for setuid programs) plus the
 * start-up hooks of shells and common interpreters. fnmatch globs. */
static const char *const never_import[] = {
    /* the dynamic loader and glibc */
    "LD_*",
    "DYLD_*",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCPATH",
    "MALLOC_TRACE",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "TZDIR",
    /* shells: start-up files, exported functions, trace prompts run on expansion */
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "ZDOTDIR",
    /* interpreters and runtimes */
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONBREAKPOINT",
    "PYTHONWARNINGS",
    "PYTHONPLATLIBDIR",
    "PYTHONEXECUTABLE",
    "PERL5LIB",
    "PERLLIB",
    "PERL5OPT",
    "PERL5DB",
    "RUBYLIB",
    "RUBYOPT",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "LUA_INIT*",
    "LUA_PATH*",
    "LUA_CPATH*",
    "TCLLIBPATH",
    /* libraries that load modules named by the environment */
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "GIO_EXTRA_MODULES",
    "GTK_MODULES",
    "GTK_PATH",
    "GST_PLUGIN_PATH*",
    "QT_PLUGIN_PATH",
    "*_PLUGIN_PATH",
    "GDK_PIXBUF_MODULE_FILE",
    /* tools that run a command or read config named by the environment: git (its
     * config in GIT_CONFIG_KEY_n/VALUE_n runs core.fsmonitor, sshCommand...), pagers
     * and editors, askpass helpers, ssh, kubectl's exec credential plugins, npm */
    "GIT_*",
    "*PAGER",
    "LESSOPEN",
    "LESSCLOSE",
    "LESSKEY*",
    "EDITOR",
    "VISUAL",
    "*ASKPASS*",
    "BROWSER",
    "SSH_*",
    "KUBECONFIG",
    "npm_config_*",
    "NPM_CONFIG_*",
    "INPUTRC",
    "TERMINFO*",
    /* where programs look for their user configuration (and code in it) */
    "XDG_*_HOME",
    "XDG_*_DIRS",
};

bool policy_env_never_imported(const char *name)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(never_import); i++)
		if (fnmatch(never_import[i], name, 0) == 0)
			return true;
	return false;
}

bool policy_env_local_by_default(const char *name)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(local_by_default); i++)
		if (strcmp(local_by_default[i], name) == 0)
			return true;
	return policy_env_never_imported(name);
}

void policy_env_opts_from_config(const struct policy_config *c, struct policy_env_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->import_remote = c->feature.env.enabled != POLICY_TRI_FALSE;
	o->include = &c->feature.env.include;
	o->exclude = &c->feature.env.exclude;
	o->override = &c->feature.env.override;
}

static bool any_glob(const struct policy_strv *globs, const char *name)
{
	for (size_t i = 0; globs && i < globs->len; i++)
		if (fnmatch(globs->items[i], name, 0) == 0)
			return true;
	return false;
}

static bool any_exact(const struct policy_strv *names, const char *name)
{
	for (size_t i = 0; names && i < names->len; i++)
		if (strcmp(names->items[i], name) == 0)
			return true;
	return false;
}

static bool import_wanted(const struct policy_env_opts *o, const char *name)
{
	bool include_all = !o->include || o->include->len == 0;
	if (policy_env_local_by_default(name) && !any_exact(o->include, name))
		return false;
	if (!include_all && !any_glob(o->include, name))
		return false;
	return !any_glob(o->exclude, name);
}

struct env_vec {
	char **v;
	size_t n, cap;
};

static size_t key_len(const char *kv)
{
	const char *eq = strchr(kv, '=');
	return eq ? (size_t)(eq - kv) : 0;
}

static bool same_key(const char *kv, const char *key, size_t klen)
{
	return strncmp(kv, key, klen) == 0 && kv[klen] == '=';
}

/* Set kv: replace the first entry with its key and drop later duplicates, or append.
 * Without replace, an existing entry stays (the first of duplicates is the one getenv
 * sees, so a local environment keeps its meaning). */
static int env_set(struct env_vec *e, const char *kv, bool replace, struct hm_err *err)
{
	size_t klen = key_len(kv);
	if (!replace) {
		for (size_t i = 0; i < e->n; i++)
			if (same_key(e->v[i], kv, klen))
				return 0;
	}
	char *copy = strdup(kv);
	if (!copy)
		return hm_err_set(err, ENOMEM, "environment");
	bool placed = false;
	size_t out = 0;
	for (size_t i = 0; i < e->n; i++) {
		if (same_key(e->v[i], kv, klen)) {
			free(e->v[i]);
			if (placed)
				continue;
			e->v[i] = copy;
			placed = true;
		}
		e->v[out++] = e->v[i];
	}
	e->n = out;
	if (placed)
		return 0;
	if (e->n + 2 > e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		char **grown = realloc(e->v, cap * sizeof(*grown));
		if (!grown) {
			free(copy);
			return hm_err_set(err, ENOMEM, "environment");
		}
		e->v = grown;
		e->cap = cap;
	}
	e->v[e->n++] = copy;
	return 0;
}

void policy_env_free(char **env)
{
	if (!env)
		return;
	for (char **p = env; *p; p++)
		free(*p);
	free(env);
}

int policy_env_build(const struct policy_env_opts *o, char *const remote[], char *const local[],
		     char ***out, struct hm_err *err)
{
	struct env_vec e = {0};
	for (size_t i = 0; local && local[i]; i++) {
		if (key_len(local[i]) == 0)
			continue;
		if (env_set(&e, local[i], false, err) < 0)
			goto fail;
	}
	for (size_t i = 0; o->import_remote && remote && remote[i]; i++) {
		size_t klen = key_len(remote[i]);
		if (klen == 0)
			continue;
		hm_cleanup_free char *name = strndup(remote[i], klen);
		if (!name) {
			hm_err_set(err, ENOMEM, "environment");
			goto fail;
		}
		if (import_wanted(o, name) && env_set(&e, remote[i], true, err) < 0)
			goto fail;
	}
	for (size_t i = 0; o->override && i < o->override->len; i++) {
		if (key_len(o->override->items[i]) == 0)
			continue;
		if (env_set(&e, o->override->items[i], true, err) < 0)
			goto fail;
	}
	if (e.n + 1 > e.cap) {
		char **grown = realloc(e.v, (e.n + 1) * sizeof(*grown));
		if (!grown) {
			hm_err_set(err, ENOMEM, "environment");
			goto fail;
		}
		e.v = grown;
	}
	e.v[e.n] = NULL;
	*out = e.v;
	return 0;
fail:
	for (size_t i = 0; i < e.n; i++)
		free(e.v[i]);
	free(e.v);
	return -1;
}
