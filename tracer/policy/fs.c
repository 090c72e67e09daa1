/* Which files the program sees from the pod: mirrord's feature.fs decision (mode and
 * regex lists, same precedence) over hermit's documented defaults. Pure string work:
 * the handlers resolve dirfd-relative paths, ask here, and act on the verdict.
 *
 * Order of the checks (the first that matches decides):
 *   1. mode local                      -> LOCAL, nothing is ever remote
 *   2. feature.fs.not_found            -> NOT_FOUND
 *   3. feature.fs.read_write           -> REMOTE / REMOTE_WRITE
 *   4. feature.fs.read_only            -> REMOTE; a write stays LOCAL
 *   5. default not found ($HOME/.kube, .aws, .azure, .config/gcloud) -> NOT_FOUND
 *   6. feature.fs.local                -> LOCAL
 *   7. default remote (DNS files, /etc/hostname, secrets), reads only -> REMOTE
 *   8. default local (system files, program, cwd, $HOME, /tmp...) -> LOCAL
 *   9. the mode: localwithoverrides -> LOCAL; write -> REMOTE / REMOTE_WRITE;
 *      read -> REMOTE, and a write stays LOCAL (as mirrord: the program writes its
 *      own local file rather than failing with EROFS).
 * docs/config.md lists the defaults and why each is there. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <limits.h>
#include <pcre2.h>
#include <pthread.h>
#include <string.h>

#include "tracer/policy/policy.h"
#include <valgrind/valgrind.h>

/* valgrind cannot see through JIT-generated code and reports its reads as
 * uninitialised; the interpreter gives the same answers there */
static bool jit_wanted(void)
{
	return !RUNNING_ON_VALGRIND;
}

struct fs_rule {
	pcre2_code *re;	 /* a regex rule, or: */
	bool jit;	 /* re is JIT-compiled: pcre2_jit_match skips pcre2_match's checks */
	const char *src; /* a default's static pattern, joined into fs_rules.any */
	char *path;	 /* a literal path, matched exactly or with everything under it */
	bool subtree;
	const char *why; /* static, or why_owned */
	char *why_owned;
};

struct fs_rules {
	struct fs_rule *v;
	size_t n;
	/* all of v's regexes as one alternation (defaults only): a path that most rules
	 * miss, the usual remote file, then costs one match instead of one per rule */
	pcre2_code *any;
	bool any_jit;
};

struct policy_fs {
	enum policy_fs_mode mode;
	struct fs_rules not_found, read_write, read_only, local; /* the user's lists */
	struct fs_rules default_not_found, default_remote, default_local;
};

/* ---------------------------------------------------------------- defaults */

struct default_regex {
	const char *re;
	const char *why;
};

/* Reads of these come from the pod. The DNS group follows feature.network.dns: name
 * resolution happens in the pod only when the resolver configuration is the pod's.
 * nsswitch.conf is with them because a local one may send host lookups to local
 * services (systemd-resolved, mDNS) that know nothing of the cluster. */
static const struct default_regex remote_dns_regexes[] = {
    {"^/etc/(resolv\\.conf|hosts|nsswitch\\.conf)$", "default remote: name resolution"},
};
static const struct default_regex remote_regexes[] = {
    {"^/etc/hostname$", "default remote: /etc/hostname"},
    {"^/(var/)?run/secrets(/|$)", "default remote: secrets"},
};

/* What a program needs from this machine to start and run: the loader, its libraries
 * and configuration, the local user database (the program runs with the local uid), and
 * the kernel's and the machine's own trees. The rest of /etc stays remote: ConfigMaps
 * and Secrets are commonly mounted there. */
static const struct default_regex local_regexes[] = {
    {"^/$", "default local: /"},
    {"^/(proc|sys|dev)(/|$)", "default local: /proc, /sys, /dev"},
    {"^/(usr/)?(bin|sbin|lib|lib32|lib64|libx32|libexec)(/|$)",
     "default local: system binaries and libraries"},
    {"^/usr/(share|include)(/|$)", "default local: system binaries and libraries"},
    {"^/usr/local/(bin|sbin|lib|lib32|lib64|libexec|share|include)(/|$)",
     "default local: system binaries and libraries"},
    {"^/nix/store(/|$)", "default local: system binaries and libraries"},
    {"^/etc/ld\\.so\\.(cache|preload|conf)$|^/etc/ld\\.so\\.conf\\.d(/|$)",
     "default local: dynamic loader configuration"},
    {"^/etc/localtime$", "default local: time zone"},
    {"^/etc/(passwd|group|shadow|gshadow)$", "default local: user database"},
    /* realpath() of an alternatives-managed binary readlinks through here */
    {"^/etc/alternatives(/|$)", "default local: /etc/alternatives"},
    /* configuration that makes programs run commands or load code (git's fsmonitor,
     * ssh's Match exec and ProxyCommand, shell start-up files, OpenSSL providers, PAM,
     * sudo): a pod's copy would run the pod's commands on this machine */
    {"^/etc/(gitconfig|inputrc|environment|mailcap|npmrc|pip\\.conf|wgetrc|curlrc|"
     "profile|bash\\.bashrc|bash\\.bash_logout|zshenv|zshrc|zprofile|zlogin|zlogout|"
     "vimrc|gvimrc|nanorc|screenrc|tmux\\.conf|sudoers|man_db\\.conf|"
     "ssl/openssl\\.cnf|pki/tls/openssl\\.cnf)$",
     "default local: configuration that runs code"},
    {"^/etc/(ssh|profile\\.d|zsh|vim|bash_completion\\.d|sudoers\\.d|pam\\.d|security|"
     "environment\\.d|gnupg|X11|xdg|apt|python3(\\.[0-9]+)?)(/|$)",
     "default local: configuration that runs code"},
    {"^/(var/)?run(/|$)", "default local: /run"},
    {"^/(var/)?tmp(/|$)", "default local: /tmp"},
    {"\\.so(\\.[0-9]+)*$", "default local: shared objects"},
    {"\\.(py|pyc|pth|jar|class)$|/pyvenv\\.cfg$|/node_modules(/|$)",
     "default local: interpreter modules"},
};

/* Under $HOME, credentials the program would otherwise use instead of the pod's
 * identity (mirrord's not_found_by_default); kube clients then fall back to the pod's
 * service account. */
static const char *const home_not_found[] = {".aws", ".azure", ".kube", ".config/gcloud"};

/* ---------------------------------------------------------------- rule building */

static void rules_free(struct fs_rules *r)
{
	for (size_t i = 0; i < r->n; i++) {
		pcre2_code_free(r->v[i].re);
		free(r->v[i].path);
		free(r->v[i].why_owned);
	}
	free(r->v);
	pcre2_code_free(r->any);
	*r = (struct fs_rules){0};
}

static struct fs_rule *rules_add(struct fs_rules *r, struct hm_err *err)
{
	struct fs_rule *grown = realloc(r->v, (r->n + 1) * sizeof(*grown));
	if (!grown) {
		hm_err_set(err, ENOMEM, "file policy");
		return NULL;
	}
	r->v = grown;
	memset(&r->v[r->n], 0, sizeof(r->v[r->n]));
	return &r->v[r->n++];
}

static void rule_jit(struct fs_rule *rule);

/* static_src: re is a static default pattern (options 0) that rules_join may combine */
static int rules_add_regex(struct fs_rules *r, const char *re, uint32_t options, bool static_src,
			   const char *why, char *why_owned, struct hm_err *err)
{
	struct fs_rule *rule = rules_add(r, err);
	if (!rule) {
		free(why_owned);
		return -1;
	}
	rule->why = why_owned ? why_owned : why;
	rule->why_owned = why_owned;
	rule->src = static_src ? re : NULL;
	int code;
	PCRE2_SIZE offset;
	rule->re =
	    pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, options, &code, &offset, NULL);
	if (!rule->re) {
		PCRE2_UCHAR msg[256];
		pcre2_get_error_message(code, msg, sizeof(msg));
		return hm_err_set(err, 0, "%s: invalid regex \"%s\": %s at offset %zu", rule->why,
				  re, (const char *)msg, (size_t)offset);
	}
	/* A static default is JIT-compiled only if rules_join cannot fold it into its set's
	 * "any": folded, it is matched alone only to name the rule in debug logs, and a JIT
	 * compile costs ~10 us of every trace-run start per regex. */
	if (!static_src)
		rule_jit(rule);
	return 0;
}

/* JIT makes a match a few times faster; without it (no JIT support) matches still work */
static void rule_jit(struct fs_rule *rule)
{
	rule->jit = jit_wanted() && pcre2_jit_compile(rule->re, PCRE2_JIT_COMPLETE) == 0;
}

/* every regex of r matched one by one: JIT what rules_add_regex left to rules_join */
static void rules_jit_each(struct fs_rules *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].re && !r->v[i].jit)
			rule_jit(&r->v[i]);
}

/* Compile r->any from the rules' static patterns; left NULL (every rule tried in turn)
 * when a regex rule has none, since "any" must match whenever one of them does. */
static int rules_join(struct fs_rules *r, struct hm_err *err)
{
	size_t len = 0, regexes = 0;
	for (size_t i = 0; i < r->n; i++) {
		if (!r->v[i].re)
			continue;
		if (!r->v[i].src) {
			rules_jit_each(r);
			return 0;
		}
		len += strlen(r->v[i].src) + sizeof("|(?:)");
		regexes++;
	}
	if (regexes < 2) {
		rules_jit_each(r);
		return 0;
	}
	hm_cleanup_free char *joined = malloc(len + 1);
	if (!joined)
		return hm_err_set(err, ENOMEM, "file policy");
	char *p = joined;
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].re)
			/* (?:...) keeps each pattern's own alternatives and anchors to itself */
			p += sprintf(p, "%s(?:%s)", p == joined ? "" : "|", r->v[i].src);
	int code;
	PCRE2_SIZE offset;
	r->any = pcre2_compile((PCRE2_SPTR)joined, PCRE2_ZERO_TERMINATED, 0, &code, &offset, NULL);
	if (!r->any)
		return hm_err_set(err, EINVAL, "file policy: default regexes do not combine");
	r->any_jit = jit_wanted() && pcre2_jit_compile(r->any, PCRE2_JIT_COMPLETE) == 0;
	return 0;
}

/* A literal path rule; skipped when path is unset, relative or the root (a subtree
 * rule at "/" would make everything local). */
static int rules_add_path(struct fs_rules *r, const char *path, const char *suffix, bool subtree,
			  const char *why, struct hm_err *err)
{
	if (!path || path[0] != '/')
		return 0;
	char joined[PATH_MAX];
	if (policy_fs_path_normalize(path, suffix ? suffix : ".", joined, sizeof(joined)) < 0)
		return hm_err_set(err, ENAMETOOLONG, "file policy: %s", path);
	if (strcmp(joined, "/") == 0 && subtree)
		return 0;
	struct fs_rule *rule = rules_add(r, err);
	if (!rule)
		return -1;
	rule->why = why;
	rule->subtree = subtree;
	rule->path = strdup(joined);
	if (!rule->path)
		return hm_err_set(err, ENOMEM, "file policy");
	return 0;
}

static int add_user_list(struct fs_rules *r, const char *key, const struct policy_strv *list,
			 struct hm_err *err)
{
	for (size_t i = 0; list && i < list->len; i++) {
		char *why = NULL;
		if (asprintf(&why, "%s[%zu]", key, i) < 0)
			return hm_err_set(err, ENOMEM, "file policy");
		/* case insensitive like mirrord's, so its configs carry over; "(?-i)" opts out */
		if (rules_add_regex(r, list->items[i], PCRE2_CASELESS, false, NULL, why, err) < 0)
			return -1;
	}
	return 0;
}

static int add_defaults(struct fs_rules *r, const struct default_regex *d, size_t n,
			struct hm_err *err)
{
	for (size_t i = 0; i < n; i++)
		if (rules_add_regex(r, d[i].re, 0, true, d[i].why, NULL, err) < 0)
			return -1;
	return 0;
}

void policy_fs_free(struct policy_fs *p)
{
	if (!p)
		return;
	rules_free(&p->not_found);
	rules_free(&p->read_write);
	rules_free(&p->read_only);
	rules_free(&p->local);
	rules_free(&p->default_not_found);
	rules_free(&p->default_remote);
	rules_free(&p->default_local);
	free(p);
}

int policy_fs_new(const struct policy_fs_opts *o, struct policy_fs **out, struct hm_err *err)
{
	struct policy_fs *p = calloc(1, sizeof(*p));
	if (!p)
		return hm_err_set(err, ENOMEM, "file policy");
	p->mode = o->mode ? o->mode : POLICY_FS_MODE_READ;
	if (add_user_list(&p->not_found, "feature.fs.not_found", o->not_found, err) < 0 ||
	    add_user_list(&p->read_write, "feature.fs.read_write", o->read_write, err) < 0 ||
	    add_user_list(&p->read_only, "feature.fs.read_only", o->read_only, err) < 0 ||
	    add_user_list(&p->local, "feature.fs.local", o->local, err) < 0)
		goto fail;

	for (size_t i = 0; i < HM_ARRAY_SIZE(home_not_found); i++)
		if (rules_add_path(&p->default_not_found, o->home, home_not_found[i], true,
				   "default not found: local cloud credentials", err) < 0)
			goto fail;

	if (o->dns_remote && add_defaults(&p->default_remote, remote_dns_regexes,
					  HM_ARRAY_SIZE(remote_dns_regexes), err) < 0)
		goto fail;
	if (add_defaults(&p->default_remote, remote_regexes, HM_ARRAY_SIZE(remote_regexes), err) <
	    0)
		goto fail;

	/* without DNS from the pod, the local resolver configuration must win over mode read */
	if (!o->dns_remote &&
	    rules_add_regex(&p->default_local, remote_dns_regexes[0].re, 0, true,
			    "default local: name resolution (feature.network.dns false)", NULL,
			    err) < 0)
		goto fail;
	if (rules_add_path(&p->default_local, o->program, NULL, false, "default local: the program",
			   err) < 0 ||
	    rules_add_path(&p->default_local, o->cwd, NULL, true,
			   "default local: the working directory", err) < 0 ||
	    rules_add_path(&p->default_local, o->home, NULL, true, "default local: $HOME", err) <
		0 ||
	    rules_add_path(&p->default_local, o->tmpdir, NULL, true, "default local: $TMPDIR",
			   err) < 0 ||
	    add_defaults(&p->default_local, local_regexes, HM_ARRAY_SIZE(local_regexes), err) < 0 ||
	    rules_join(&p->default_remote, err) < 0 || rules_join(&p->default_local, err) < 0)
		goto fail;
	*out = p;
	return 0;
fail:
	policy_fs_free(p);
	return -1;
}

void policy_fs_opts_from_config(const struct policy_config *c, struct policy_fs_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->mode = c->feature.fs.mode;
	o->read_only = &c->feature.fs.read_only;
	o->read_write = &c->feature.fs.read_write;
	o->local = &c->feature.fs.local;
	o->not_found = &c->feature.fs.not_found;
	o->dns_remote = c->feature.network.dns != POLICY_TRI_FALSE;
}

/* ---------------------------------------------------------------- decisions */

/* what first_match answers for "some regex of the set" when no rule is to be named */
static const struct fs_rule any_rule = {.why = "(rule not named)"};

/* >= 0: a match (0 only says the ovector was too small to hold the groups) */
static bool regex_matches(const pcre2_code *re, bool jit, const char *path, size_t len,
			  pcre2_match_data *md)
{
	if (jit)
		return pcre2_jit_match(re, (PCRE2_SPTR)path, len, 0, 0, md, NULL) >= 0;
	return pcre2_match(re, (PCRE2_SPTR)path, len, 0, 0, md, NULL) >= 0;
}

static bool rule_matches(const struct fs_rule *rule, const char *path, size_t len,
			 pcre2_match_data *md)
{
	if (rule->path) {
		size_t n = strlen(rule->path);
		if (strncmp(path, rule->path, n) != 0)
			return false;
		return path[n] == '\0' || (rule->subtree && path[n] == '/');
	}
	return regex_matches(rule->re, rule->jit, path, len, md);
}

/* The rule of r that decides path, or NULL. With name_rule false the caller wants only the
 * verdict (every rule of a set gives the same): a match of the joined "any" regex then
 * answers at once, without trying the regexes one by one to name the first that matches
 * (a path under /tmp used to cost 14 JIT matches). */
static const struct fs_rule *first_match(const struct fs_rules *r, const char *path, size_t len,
					 pcre2_match_data *md, bool name_rule)
{
	bool some_regex = !r->any || regex_matches(r->any, r->any_jit, path, len, md);
	if (r->any && some_regex && !name_rule)
		return &any_rule;
	for (size_t i = 0; i < r->n; i++) {
		if (r->v[i].re && !some_regex)
			continue;
		if (rule_matches(&r->v[i], path, len, md))
			return &r->v[i];
	}
	return NULL;
}

const char *policy_fs_verdict_name(enum policy_fs_verdict v)
{
	switch (v) {
	case POLICY_FS_LOCAL:
		return "local";
	case POLICY_FS_REMOTE:
		return "remote";
	case POLICY_FS_REMOTE_WRITE:
		return "remote-write";
	case POLICY_FS_NOT_FOUND:
		return "not-found";
	}
	return "?";
}

/* One match block per thread, so that concurrent handler threads never share one: made
 * on a thread's first decision (not a malloc and free per decision) and freed when the
 * thread ends. */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;

static void md_free(void *md)
{
	pcre2_match_data_free(md);
}

static void md_key_create(void)
{
	md_key_ok = pthread_key_create(&md_key, md_free) == 0;
}

static pcre2_match_data *thread_match_data(void)
{
	pthread_once(&md_once, md_key_create);
	if (!md_key_ok)
		return NULL;
	pcre2_match_data *md = pthread_getspecific(md_key);
	if (md)
		return md;
	md = pcre2_match_data_create(1, NULL);
	if (md && pthread_setspecific(md_key, md) != 0) {
		pcre2_match_data_free(md);
		md = NULL;
	}
	return md;
}

enum policy_fs_verdict policy_fs_decide(const struct policy_fs *p, const char *path,
					enum policy_fs_access access, const char **why)
{
	const char *unused;
	bool name_rule = why != NULL;
	if (!why)
		why = &unused;
	if (p->mode == POLICY_FS_MODE_LOCAL) {
		*why = "feature.fs.mode local";
		return POLICY_FS_LOCAL;
	}
	if (!path || path[0] != '/') {
		*why = "relative path";
		return POLICY_FS_LOCAL;
	}
	char norm[PATH_MAX];
	int n = policy_fs_path_normalize("/", path, norm, sizeof(norm));
	if (n < 0) {
		/* the kernel will refuse it with ENAMETOOLONG itself */
		*why = "path too long";
		return POLICY_FS_LOCAL;
	}
	size_t len = (size_t)n;
	bool write = access == POLICY_FS_ACCESS_WRITE;
	pcre2_match_data *md = thread_match_data();
	if (!md) {
		*why = "out of memory";
		return POLICY_FS_LOCAL;
	}
	enum policy_fs_verdict v;
	const struct fs_rule *rule;
	if ((rule = first_match(&p->not_found, norm, len, md, name_rule))) {
		v = POLICY_FS_NOT_FOUND;
	} else if ((rule = first_match(&p->read_write, norm, len, md, name_rule))) {
		v = write ? POLICY_FS_REMOTE_WRITE : POLICY_FS_REMOTE;
	} else if ((rule = first_match(&p->read_only, norm, len, md, name_rule))) {
		v = write ? POLICY_FS_LOCAL : POLICY_FS_REMOTE;
	} else if ((rule = first_match(&p->default_not_found, norm, len, md, name_rule))) {
		v = POLICY_FS_NOT_FOUND;
	} else if ((rule = first_match(&p->local, norm, len, md, name_rule))) {
		v = POLICY_FS_LOCAL;
	} else if (!write && (rule = first_match(&p->default_remote, norm, len, md, name_rule))) {
		v = POLICY_FS_REMOTE;
	} else if ((rule = first_match(&p->default_local, norm, len, md, name_rule))) {
		v = POLICY_FS_LOCAL;
	} else {
		switch (p->mode) {
		case POLICY_FS_MODE_WRITE:
			*why = "feature.fs.mode write";
			v = write ? POLICY_FS_REMOTE_WRITE : POLICY_FS_REMOTE;
			break;
		case POLICY_FS_MODE_LOCAL_WITH_OVERRIDES:
			*why = "feature.fs.mode localwithoverrides";
			v = POLICY_FS_LOCAL;
			break;
		default:
			*why = write ? "feature.fs.mode read: writes stay local"
				     : "feature.fs.mode read";
			v = write ? POLICY_FS_LOCAL : POLICY_FS_REMOTE;
			break;
		}
	}
	if (rule)
		*why = rule->why;
	return v;
}

/* ---------------------------------------------------------------- paths */

static int append_components(const char *s, char *out, size_t size, size_t *len)
{
	while (*s) {
		while (*s == '/')
			s++;
		const char *end = s;
		while (*end && *end != '/')
			end++;
		size_t n = (size_t)(end - s);
		if (n == 0 || (n == 1 && s[0] == '.')) {
			/* nothing: an empty component or "." */
		} else if (n == 2 && s[0] == '.' && s[1] == '.') {
			while (*len > 0 && out[*len - 1] != '/')
				(*len)--;
			if (*len > 0)
				(*len)--;
		} else {
			if (*len + 1 + n + 1 > size)
				return -ENAMETOOLONG;
			out[(*len)++] = '/';
			memcpy(out + *len, s, n);
			*len += n;
		}
		s = end;
	}
	return 0;
}

int policy_fs_path_normalize(const char *base, const char *path, char *out, size_t size)
{
	if (!path || !*path)
		return -EINVAL;
	if (size < 2)
		return -ENAMETOOLONG;
	size_t len = 0;
	if (path[0] != '/') {
		if (!base || base[0] != '/')
			return -EINVAL;
		if (append_components(base, out, size, &len) < 0)
			return -ENAMETOOLONG;
	}
	if (append_components(path, out, size, &len) < 0)
		return -ENAMETOOLONG;
	if (len == 0)
		out[len++] = '/';
	out[len] = '\0';
	return (int)len;
}
