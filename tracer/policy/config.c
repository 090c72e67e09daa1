/* trace-run's configuration: the `-f trace.json` file and the struct CLI flags fill.
 * Shaped after mirrord's config (target, agent, feature.env/fs/network) with hermit's
 * own keys. The walk is strict: a misspelt key would otherwise silently leave a
 * default in place, so an unknown key or a wrong type is an error naming the key's
 * JSON path. docs/config.md is the reference. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <json-c/json.h>
#include <pcre2.h>
#include <string.h>

#include "tracer/policy/policy.h"

/* ---------------------------------------------------------------- string lists */

int policy_strv_push(struct policy_strv *v, const char *s, struct hm_err *err)
{
	char **grown = realloc(v->items, (v->len + 2) * sizeof(*grown));
	if (!grown)
		return hm_err_set(err, ENOMEM, "list");
	v->items = grown;
	v->items[v->len] = strdup(s);
	if (!v->items[v->len])
		return hm_err_set(err, ENOMEM, "list");
	v->len++;
	v->items[v->len] = NULL;
	v->set = true;
	return 0;
}

int policy_strv_push_split(struct policy_strv *v, const char *s, char sep, struct hm_err *err)
{
	v->set = true;
	while (*s) {
		const char *end = strchr(s, sep);
		size_t n = end ? (size_t)(end - s) : strlen(s);
		if (n > 0) {
			hm_cleanup_free char *piece = strndup(s, n);
			if (!piece)
				return hm_err_set(err, ENOMEM, "list");
			if (policy_strv_push(v, piece, err) < 0)
				return -1;
		}
		s += n;
		if (*s)
			s++;
	}
	return 0;
}

void policy_strv_clear(struct policy_strv *v)
{
	for (size_t i = 0; i < v->len; i++)
		free(v->items[i]);
	free(v->items);
	*v = (struct policy_strv){0};
}

static int strv_copy(struct policy_strv *dst, const struct policy_strv *src, struct hm_err *err)
{
	struct policy_strv copy = {0};
	for (size_t i = 0; i < src->len; i++) {
		if (policy_strv_push(&copy, src->items[i], err) < 0) {
			policy_strv_clear(&copy);
			return -1;
		}
	}
	copy.set = src->set;
	policy_strv_clear(dst);
	*dst = copy;
	return 0;
}

/* ---------------------------------------------------------------- enums */

static const char *const fs_mode_names[] = {
    [POLICY_FS_MODE_READ] = "read",
    [POLICY_FS_MODE_WRITE] = "write",
    [POLICY_FS_MODE_LOCAL] = "local",
    [POLICY_FS_MODE_LOCAL_WITH_OVERRIDES] = "localwithoverrides",
};

/* The index of s in names (NULL holes allowed), or -1. */
static int enum_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (names[i] && strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

int policy_fs_mode_parse(const char *s, enum policy_fs_mode *out)
{
	int i = enum_index(fs_mode_names, HM_ARRAY_SIZE(fs_mode_names), s);
	if (i < 0)
		return -1;
	*out = (enum policy_fs_mode)i;
	return 0;
}

static const char *const incoming_mode_names[] = {
    [POLICY_INCOMING_MIRROR] = "mirror",
    [POLICY_INCOMING_STEAL] = "steal",
    [POLICY_INCOMING_OFF] = "off",
};

int policy_incoming_mode_parse(const char *s, enum policy_incoming_mode *out)
{
	int i = enum_index(incoming_mode_names, HM_ARRAY_SIZE(incoming_mode_names), s);
	if (i < 0)
		return -1;
	*out = (enum policy_incoming_mode)i;
	return 0;
}

const char *policy_incoming_mode_name(enum policy_incoming_mode m)
{
	if ((size_t)m < HM_ARRAY_SIZE(incoming_mode_names) && incoming_mode_names[m])
		return incoming_mode_names[m];
	return "mirror";
}

/* ---------------------------------------------------------------- ports */

static void ports_clear(struct policy_ports *p)
{
	free(p->items);
	*p = (struct policy_ports){0};
}

static void port_map_clear(struct policy_port_map *m)
{
	free(m->pairs);
	*m = (struct policy_port_map){0};
}

static bool ports_have(const struct policy_ports *p, uint16_t port)
{
	for (size_t i = 0; i < p->len; i++)
		if (p->items[i] == port)
			return true;
	return false;
}

static int ports_copy(struct policy_ports *dst, const struct policy_ports *src, struct hm_err *err)
{
	uint16_t *items = NULL;
	if (src->len && !(items = malloc(src->len * sizeof(*items))))
		return hm_err_set(err, ENOMEM, "config");
	if (src->len)
		memcpy(items, src->items, src->len * sizeof(*items));
	ports_clear(dst);
	*dst = (struct policy_ports){.items = items, .len = src->len, .set = src->set};
	return 0;
}

static int port_map_copy(struct policy_port_map *dst, const struct policy_port_map *src,
			 struct hm_err *err)
{
	uint16_t(*pairs)[2] = NULL;
	if (src->len && !(pairs = malloc(src->len * sizeof(*pairs))))
		return hm_err_set(err, ENOMEM, "config");
	if (src->len)
		memcpy(pairs, src->pairs, src->len * sizeof(*pairs));
	port_map_clear(dst);
	*dst = (struct policy_port_map){.pairs = pairs, .len = src->len, .set = src->set};
	return 0;
}

bool policy_incoming_port(const struct policy_config *c, uint16_t local, uint16_t *remote)
{
	const typeof(c->feature.network.incoming) *in = &c->feature.network.incoming;
	*remote = local;
	if (in->mode == POLICY_INCOMING_OFF || local == 0)
		return false;
	if (in->ports.set && !ports_have(&in->ports, local))
		return false;
	if (ports_have(&in->ignore_ports, local))
		return false;
	for (size_t i = 0; i < in->port_mapping.len; i++) {
		if (in->port_mapping.pairs[i][0] == local) {
			*remote = in->port_mapping.pairs[i][1];
			break;
		}
	}
	return true;
}

const char *policy_incoming_http_filter(const struct policy_config *c, uint16_t remote)
{
	const typeof(c->feature.network.incoming) *in = &c->feature.network.incoming;
	if (in->mode != POLICY_INCOMING_STEAL || !in->http_filter)
		return NULL;
	if (in->http_filter_ports.set && !ports_have(&in->http_filter_ports, remote))
		return NULL;
	return in->http_filter;
}

/* ---------------------------------------------------------------- lifecycle */

void policy_config_init(struct policy_config *c)
{
	memset(c, 0, sizeof(*c));
}

void policy_config_free(struct policy_config *c)
{
	free(c->target);
	free(c->agent.unix_path);
	free(c->agent.address);
	free(c->agent.token_file);
	policy_strv_clear(&c->feature.env.include);
	policy_strv_clear(&c->feature.env.exclude);
	policy_strv_clear(&c->feature.env.override);
	policy_strv_clear(&c->feature.fs.read_only);
	policy_strv_clear(&c->feature.fs.read_write);
	policy_strv_clear(&c->feature.fs.local);
	policy_strv_clear(&c->feature.fs.not_found);
	policy_strv_clear(&c->feature.network.outgoing.filter);
	port_map_clear(&c->feature.network.incoming.port_mapping);
	ports_clear(&c->feature.network.incoming.ports);
	ports_clear(&c->feature.network.incoming.ignore_ports);
	ports_clear(&c->feature.network.incoming.http_filter_ports);
	free(c->feature.network.incoming.http_filter);
	policy_config_init(c);
}

static int set_string(char **dst, const char *value, struct hm_err *err)
{
	char *copy = NULL;
	if (value && !(copy = strdup(value)))
		return hm_err_set(err, ENOMEM, "config");
	free(*dst);
	*dst = copy;
	return 0;
}

/* Replace or add the override for key (value's "KEY=VALUE" form is what env.c
 * consumes directly). */
static int override_set(struct policy_strv *ov, const char *key, size_t keylen, const char *value,
			struct hm_err *err)
{
	hm_cleanup_free char *kv = NULL;
	if (asprintf(&kv, "%.*s=%s", (int)keylen, key, value) < 0)
		return hm_err_set(err, ENOMEM, "config");
	for (size_t i = 0; i < ov->len; i++) {
		if (strncmp(ov->items[i], key, keylen) == 0 && ov->items[i][keylen] == '=') {
			free(ov->items[i]);
			ov->items[i] = hm_steal_ptr(&kv);
			ov->set = true;
			return 0;
		}
	}
	return policy_strv_push(ov, kv, err);
}

int policy_config_env_override(struct policy_config *c, const char *key_value, struct hm_err *err)
{
	const char *eq = strchr(key_value, '=');
	if (!eq || eq == key_value)
		return hm_err_set(err, 0, "env override \"%s\": expected KEY=VALUE", key_value);
	return override_set(&c->feature.env.override, key_value, (size_t)(eq - key_value), eq + 1,
			    err);
}

/* ---------------------------------------------------------------- value checks */

/* The same compile options fs.c uses for user patterns (mirrord's are case
 * insensitive), so a pattern that loads also builds. */
static int check_regex(const char *key, size_t index, const char *re, struct hm_err *err)
{
	int code;
	PCRE2_SIZE offset;
	pcre2_code *compiled = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS,
					     &code, &offset, NULL);
	if (compiled) {
		pcre2_code_free(compiled);
		return 0;
	}
	PCRE2_UCHAR msg[256];
	pcre2_get_error_message(code, msg, sizeof(msg));
	return hm_err_set(err, 0, "%s[%zu]: invalid regex \"%s\": %s at offset %zu", key, index, re,
			  (const char *)msg, (size_t)offset);
}

static int check_regex_list(const char *key, const struct policy_strv *v, struct hm_err *err)
{
	for (size_t i = 0; i < v->len; i++)
		if (check_regex(key, i, v->items[i], err) < 0)
			return -1;
	return 0;
}

static int check_filter_list(const char *key, const struct policy_strv *v, struct hm_err *err)
{
	for (size_t i = 0; i < v->len; i++) {
		struct policy_net_spec spec;
		if (policy_net_spec_parse(v->items[i], &spec, err) < 0)
			return hm_err_prefix(err, "%s[%zu]", key, i);
	}
	return 0;
}

static const char *filter_key(enum policy_net_filter_kind k)
{
	return k == POLICY_NET_FILTER_LOCAL ? "feature.network.outgoing.filter.local"
					    : "feature.network.outgoing.filter.remote";
}

/* ---------------------------------------------------------------- the JSON walk */

struct walk {
	const char *origin;
	struct hm_err *err;
};

static const char *json_kind(json_object *v)
{
	switch (json_object_get_type(v)) {
	case json_type_null:
		return "null";
	case json_type_boolean:
		return "boolean";
	case json_type_int:
	case json_type_double:
		return "number";
	case json_type_string:
		return "string";
	case json_type_array:
		return "array";
	case json_type_object:
		return "object";
	}
	return "?";
}

static int fail(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct walk *w, const char *fmt, ...)
{
	char msg[HM_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return hm_err_set(w->err, 0, "%s: %s", w->origin, msg);
}

static int type_error(struct walk *w, const char *path, const char *expected, json_object *got)
{
	return fail(w, "%s: expected %s, got %s", path, expected, json_kind(got));
}

static int unknown_key(struct walk *w, const char *parent, const char *key, const char *known)
{
	return fail(w, "unknown key %s%s%s (known here: %s)", parent, *parent ? "." : "", key,
		    known);
}

static void join(char *out, size_t size, const char *parent, const char *key)
{
	snprintf(out, size, "%s%s%s", parent, *parent ? "." : "", key);
}

static int get_string(struct walk *w, const char *path, json_object *v, char **dst)
{
	if (!json_object_is_type(v, json_type_string))
		return type_error(w, path, "a string", v);
	const char *s = json_object_get_string(v);
	if (!*s)
		return fail(w, "%s: must not be empty", path);
	return set_string(dst, s, w->err);
}

static int get_bool(struct walk *w, const char *path, json_object *v, enum policy_tristate *dst)
{
	if (!json_object_is_type(v, json_type_boolean))
		return type_error(w, path, "a boolean", v);
	*dst = json_object_get_boolean(v) ? POLICY_TRI_TRUE : POLICY_TRI_FALSE;
	return 0;
}

/* A list is an array of strings or, as in mirrord, a single string. split: the
 * separator a single string may use for several entries (0: none). */
static int get_list(struct walk *w, const char *path, json_object *v, char split,
		    struct policy_strv *dst)
{
	struct policy_strv list = {.set = true};
	if (json_object_is_type(v, json_type_string)) {
		const char *s = json_object_get_string(v);
		if (!*s)
			return fail(w, "%s: must not be empty", path);
		int rc = split ? policy_strv_push_split(&list, s, split, w->err)
			       : policy_strv_push(&list, s, w->err);
		if (rc < 0)
			goto fail;
	} else if (json_object_is_type(v, json_type_array)) {
		size_t n = json_object_array_length(v);
		for (size_t i = 0; i < n; i++) {
			json_object *item = json_object_array_get_idx(v, i);
			if (!json_object_is_type(item, json_type_string)) {
				char at[256];
				snprintf(at, sizeof(at), "%s[%zu]", path, i);
				type_error(w, at, "a string", item);
				goto fail;
			}
			if (!*json_object_get_string(item)) {
				fail(w, "%s[%zu]: must not be empty", path, i);
				goto fail;
			}
			if (policy_strv_push(&list, json_object_get_string(item), w->err) < 0)
				goto fail;
		}
	} else {
		type_error(w, path, "a string or an array of strings", v);
		return -1;
	}
	policy_strv_clear(dst);
	*dst = list;
	return 0;
fail:
	policy_strv_clear(&list);
	return -1;
}

static int check_object(struct walk *w, const char *path, json_object *v)
{
	if (!json_object_is_type(v, json_type_object))
		return type_error(w, path, "an object", v);
	return 0;
}

/* A member of an object in the config: its key, and its path ("feature.fs.mode") under
 * parent ("feature.fs"). */
struct member {
	const char *parent, *key, *path;
	json_object *val; /* never null: a null member is one not set */
};
typedef int member_fn(struct walk *w, const struct member *m, struct policy_config *c);

/* fn for each member of obj (the object at parent) but the null ones, up to the first
 * that fails. */
static int walk_members(struct walk *w, const char *parent, json_object *obj,
			struct policy_config *c, member_fn *fn)
{
	json_object_object_foreach(obj, key, val)
	{
		if (json_object_is_type(val, json_type_null))
			continue;
		char path[256];
		join(path, sizeof(path), parent, key);
		struct member m = {.parent = parent, .key = key, .path = path, .val = val};
		if (fn(w, &m, c) < 0)
			return -1;
	}
	return 0;
}

static int agent_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	if (strcmp(m->key, "unix") == 0)
		return get_string(w, m->path, m->val, &c->agent.unix_path);
	if (strcmp(m->key, "address") == 0)
		return get_string(w, m->path, m->val, &c->agent.address);
	if (strcmp(m->key, "token_file") == 0)
		return get_string(w, m->path, m->val, &c->agent.token_file);
	return unknown_key(w, m->parent, m->key, "unix, address, token_file");
}

static int walk_agent(struct walk *w, json_object *obj, struct policy_config *c)
{
	if (check_object(w, "agent", obj) < 0)
		return -1;
	if (walk_members(w, "agent", obj, c, agent_member) < 0)
		return -1;
	if (c->agent.unix_path && c->agent.address)
		return fail(w, "agent: set either unix or address, not both");
	return 0;
}

static int env_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	int rc = 0;
	if (strcmp(m->key, "include") == 0) {
		rc = get_list(w, m->path, m->val, ';', &c->feature.env.include);
	} else if (strcmp(m->key, "exclude") == 0) {
		rc = get_list(w, m->path, m->val, ';', &c->feature.env.exclude);
	} else if (strcmp(m->key, "override") == 0) {
		if (check_object(w, m->path, m->val) < 0)
			return -1;
		c->feature.env.override.set = true;
		json_object_object_foreach(m->val, name, value)
		{
			char at[512];
			snprintf(at, sizeof(at), "%s.%s", m->path, name);
			if (!*name || strchr(name, '='))
				return fail(w, "%s: a variable name cannot be empty or contain '='",
					    at);
			if (!json_object_is_type(value, json_type_string))
				return type_error(w, at, "a string", value);
			if (override_set(&c->feature.env.override, name, strlen(name),
					 json_object_get_string(value), w->err) < 0)
				return -1;
		}
	} else {
		rc = unknown_key(w, m->parent, m->key, "include, exclude, override");
	}
	return rc;
}

static int walk_env(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.env";
	if (json_object_is_type(obj, json_type_boolean))
		return get_bool(w, parent, obj, &c->feature.env.enabled);
	if (!json_object_is_type(obj, json_type_object))
		return type_error(w, parent, "an object or a boolean", obj);
	c->feature.env.enabled = POLICY_TRI_TRUE;
	return walk_members(w, parent, obj, c, env_member);
}

/* a byte count: a positive integer, or a string with a k/M/G suffix ("512M") */
static int get_size(struct walk *w, const char *path, json_object *v, uint64_t *dst)
{
	if (json_object_is_type(v, json_type_int)) {
		int64_t n = json_object_get_int64(v);
		if (n <= 0)
			return fail(w, "%s: must be a positive number of bytes", path);
		*dst = (uint64_t)n;
		return 0;
	}
	if (!json_object_is_type(v, json_type_string))
		return type_error(w, path, "a number or a size string", v);
	uint64_t n;
	if (hm_parse_size(json_object_get_string(v), &n) < 0 || n == 0)
		return fail(w, "%s: bad size \"%s\" (expected bytes, or a number with k, M or G)",
			    path, json_object_get_string(v));
	*dst = n;
	return 0;
}

static int get_cache_ttl(struct walk *w, const char *path, json_object *v,
			 __typeof__(((struct policy_config *)0)->feature.fs) *fs)
{
	if (!json_object_is_type(v, json_type_int))
		return type_error(w, path, "a number of milliseconds", v);
	int64_t n = json_object_get_int64(v);
	if (n < 0 || n > POLICY_FS_CACHE_TTL_MS_MAX)
		return fail(w, "%s: must be 0 to %d milliseconds", path,
			    POLICY_FS_CACHE_TTL_MS_MAX);
	fs->cache_ttl_ms = (uint32_t)n;
	fs->cache_ttl_set = true;
	return 0;
}

static int get_fs_mode(struct walk *w, const char *path, json_object *v, enum policy_fs_mode *dst)
{
	if (!json_object_is_type(v, json_type_string))
		return type_error(w, path, "a string", v);
	if (policy_fs_mode_parse(json_object_get_string(v), dst) < 0)
		return fail(w,
			    "%s: unknown mode \"%s\" (expected read, write, local or "
			    "localwithoverrides)",
			    path, json_object_get_string(v));
	return 0;
}

static int fs_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	if (strcmp(m->key, "mode") == 0)
		return get_fs_mode(w, m->path, m->val, &c->feature.fs.mode);
	if (strcmp(m->key, "read_only") == 0)
		return get_list(w, m->path, m->val, 0, &c->feature.fs.read_only);
	if (strcmp(m->key, "read_write") == 0)
		return get_list(w, m->path, m->val, 0, &c->feature.fs.read_write);
	if (strcmp(m->key, "local") == 0)
		return get_list(w, m->path, m->val, 0, &c->feature.fs.local);
	if (strcmp(m->key, "not_found") == 0)
		return get_list(w, m->path, m->val, 0, &c->feature.fs.not_found);
	if (strcmp(m->key, "max_file_size") == 0)
		return get_size(w, m->path, m->val, &c->feature.fs.max_file_size);
	if (strcmp(m->key, "cache_ttl_ms") == 0)
		return get_cache_ttl(w, m->path, m->val, &c->feature.fs);
	return unknown_key(w, m->parent, m->key,
			   "mode, read_only, read_write, local, not_found, "
			   "max_file_size, cache_ttl_ms");
}

static int walk_fs(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.fs";
	/* mirrord's shorthand: "fs": "write" */
	if (json_object_is_type(obj, json_type_string))
		return get_fs_mode(w, parent, obj, &c->feature.fs.mode);
	if (!json_object_is_type(obj, json_type_object))
		return type_error(w, parent, "an object or a mode string", obj);
	if (walk_members(w, parent, obj, c, fs_member) < 0)
		return -1;
	struct {
		const char *key;
		struct policy_strv *list;
	} lists[] = {
	    {"feature.fs.read_only", &c->feature.fs.read_only},
	    {"feature.fs.read_write", &c->feature.fs.read_write},
	    {"feature.fs.local", &c->feature.fs.local},
	    {"feature.fs.not_found", &c->feature.fs.not_found},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(lists); i++)
		if (check_regex_list(lists[i].key, lists[i].list, w->err) < 0)
			return hm_err_prefix(w->err, "%s", w->origin);
	return 0;
}

static int walk_filter(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.network.outgoing.filter";
	if (check_object(w, parent, obj) < 0)
		return -1;
	enum policy_net_filter_kind kind = POLICY_NET_FILTER_NONE;
	json_object *list = NULL;
	json_object_object_foreach(obj, key, val)
	{
		enum policy_net_filter_kind this;
		if (strcmp(key, "remote") == 0)
			this = POLICY_NET_FILTER_REMOTE;
		else if (strcmp(key, "local") == 0)
			this = POLICY_NET_FILTER_LOCAL;
		else
			return unknown_key(w, parent, key, "remote, local");
		if (json_object_is_type(val, json_type_null))
			continue;
		if (kind != POLICY_NET_FILTER_NONE)
			return fail(w, "%s: set either remote or local, not both", parent);
		kind = this;
		list = val;
	}
	c->feature.network.outgoing.filter_kind = kind;
	if (kind == POLICY_NET_FILTER_NONE) {
		policy_strv_clear(&c->feature.network.outgoing.filter);
		c->feature.network.outgoing.filter.set = true;
		return 0;
	}
	if (get_list(w, filter_key(kind), list, 0, &c->feature.network.outgoing.filter) < 0)
		return -1;
	if (check_filter_list(filter_key(kind), &c->feature.network.outgoing.filter, w->err) < 0)
		return hm_err_prefix(w->err, "%s", w->origin);
	return 0;
}

static int outgoing_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	if (strcmp(m->key, "tcp") == 0)
		return get_bool(w, m->path, m->val, &c->feature.network.outgoing.tcp);
	if (strcmp(m->key, "udp") == 0)
		return get_bool(w, m->path, m->val, &c->feature.network.outgoing.udp);
	if (strcmp(m->key, "filter") == 0)
		return walk_filter(w, m->val, c);
	return unknown_key(w, m->parent, m->key, "tcp, udp, filter");
}

static int walk_outgoing(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.network.outgoing";
	if (json_object_is_type(obj, json_type_boolean)) {
		if (get_bool(w, parent, obj, &c->feature.network.outgoing.tcp) < 0)
			return -1;
		c->feature.network.outgoing.udp = c->feature.network.outgoing.tcp;
		return 0;
	}
	if (!json_object_is_type(obj, json_type_object))
		return type_error(w, parent, "an object or a boolean", obj);
	return walk_members(w, parent, obj, c, outgoing_member);
}

/* ---------------------------------------------------------------- incoming */

static int get_port(struct walk *w, const char *path, json_object *v, uint16_t *out)
{
	if (!json_object_is_type(v, json_type_int))
		return type_error(w, path, "a port number", v);
	int64_t n = json_object_get_int64(v);
	if (n < 1 || n > 65535)
		return fail(w, "%s: %lld is not a port (1-65535)", path, (long long)n);
	*out = (uint16_t)n;
	return 0;
}

/* an array of ports, or as in mirrord a single port */
static int get_ports(struct walk *w, const char *path, json_object *v, struct policy_ports *dst)
{
	struct policy_ports list = {.set = true};
	size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 1;
	if (!json_object_is_type(v, json_type_array) && !json_object_is_type(v, json_type_int))
		return type_error(w, path, "an array of port numbers", v);
	if (n && !(list.items = calloc(n, sizeof(*list.items))))
		return hm_err_set(w->err, ENOMEM, "config");
	for (size_t i = 0; i < n; i++) {
		char at[300];
		snprintf(at, sizeof(at), "%s[%zu]", path, i);
		json_object *item =
		    json_object_is_type(v, json_type_array) ? json_object_array_get_idx(v, i) : v;
		if (get_port(w, at, item, &list.items[i]) < 0) {
			ports_clear(&list);
			return -1;
		}
	}
	list.len = n;
	ports_clear(dst);
	*dst = list;
	return 0;
}

static int get_port_mapping(struct walk *w, const char *path, json_object *v,
			    struct policy_port_map *dst)
{
	if (!json_object_is_type(v, json_type_array))
		return type_error(w, path, "an array of [local, remote] pairs", v);
	struct policy_port_map map = {.set = true};
	size_t n = json_object_array_length(v);
	if (n && !(map.pairs = calloc(n, sizeof(*map.pairs))))
		return hm_err_set(w->err, ENOMEM, "config");
	for (size_t i = 0; i < n; i++) {
		char at[300];
		snprintf(at, sizeof(at), "%s[%zu]", path, i);
		json_object *pair = json_object_array_get_idx(v, i);
		if (!json_object_is_type(pair, json_type_array) ||
		    json_object_array_length(pair) != 2) {
			fail(w, "%s: expected a [local, remote] pair", at);
			goto fail;
		}
		char at0[320], at1[320];
		snprintf(at0, sizeof(at0), "%s[0]", at);
		snprintf(at1, sizeof(at1), "%s[1]", at);
		if (get_port(w, at0, json_object_array_get_idx(pair, 0), &map.pairs[i][0]) < 0 ||
		    get_port(w, at1, json_object_array_get_idx(pair, 1), &map.pairs[i][1]) < 0)
			goto fail;
		for (size_t j = 0; j < i; j++) {
			if (map.pairs[j][0] == map.pairs[i][0]) {
				fail(w, "%s: local port %u is mapped twice", at, map.pairs[i][0]);
				goto fail;
			}
		}
	}
	map.len = n;
	port_map_clear(dst);
	*dst = map;
	return 0;
fail:
	port_map_clear(&map);
	return -1;
}

/* A regex of an HTTP filter: compiled here as the agent will (PCRE2, caseless) */
static int check_filter_regex(struct walk *w, const char *path, json_object *v)
{
	if (!json_object_is_type(v, json_type_string))
		return type_error(w, path, "a string", v);
	const char *re = json_object_get_string(v);
	if (!*re)
		return fail(w, "%s: must not be empty", path);
	if (check_regex(path, 0, re, w->err) < 0)
		return hm_err_prefix(w->err, "%s", w->origin);
	return 0;
}

/* one entry of all_of / any_of: {"header": RE} | {"path": RE} | {"method": NAME} */
static int check_inner_filter(struct walk *w, const char *path, json_object *v)
{
	if (check_object(w, path, v) < 0)
		return -1;
	if (json_object_object_length(v) != 1)
		return fail(w, "%s: expected one of header, path, method", path);
	json_object_object_foreach(v, key, val)
	{
		char at[512];
		join(at, sizeof(at), path, key);
		if (strcmp(key, "header") == 0 || strcmp(key, "path") == 0)
			return check_filter_regex(w, at, val);
		if (strcmp(key, "method") == 0) {
			char *ignored = NULL;
			int rc = get_string(w, at, val, &ignored);
			free(ignored);
			return rc;
		}
		return unknown_key(w, path, key, "header, path, method");
	}
	return 0;
}

static int walk_http_filter(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.network.incoming.http_filter";
	if (check_object(w, parent, obj) < 0)
		return -1;
	json_object *filter = json_object_new_object();
	if (!filter)
		return hm_err_set(w->err, ENOMEM, "config");
	int rc = 0, kinds = 0;
	json_object_object_foreach(obj, key, val)
	{
		char path[256];
		join(path, sizeof(path), parent, key);
		if (json_object_is_type(val, json_type_null))
			continue;
		if (strcmp(key, "ports") == 0) {
			rc =
			    get_ports(w, path, val, &c->feature.network.incoming.http_filter_ports);
			if (rc < 0)
				break;
			continue;
		}
		if (strcmp(key, "header_filter") == 0 || strcmp(key, "path_filter") == 0) {
			rc = check_filter_regex(w, path, val);
		} else if (strcmp(key, "method_filter") == 0) {
			char *ignored = NULL;
			rc = get_string(w, path, val, &ignored);
			free(ignored);
		} else if (strcmp(key, "all_of") == 0 || strcmp(key, "any_of") == 0) {
			if (!json_object_is_type(val, json_type_array) ||
			    json_object_array_length(val) == 0) {
				rc = fail(w, "%s: expected a non-empty array of filters", path);
				break;
			}
			for (size_t i = 0; rc == 0 && i < json_object_array_length(val); i++) {
				char at[300];
				snprintf(at, sizeof(at), "%s[%zu]", path, i);
				rc = check_inner_filter(w, at, json_object_array_get_idx(val, i));
			}
		} else {
			rc = unknown_key(w, parent, key,
					 "header_filter, path_filter, method_filter, all_of, "
					 "any_of, ports");
		}
		if (rc < 0)
			break;
		kinds++;
		json_object_object_add(filter, key, json_object_get(val));
	}
	if (rc == 0 && kinds > 1)
		rc =
		    fail(w,
			 "%s: set one of header_filter, path_filter, method_filter, all_of, any_of "
			 "(combine them with all_of or any_of)",
			 parent);
	if (rc == 0) {
		const char *text =
		    kinds ? json_object_to_json_string_ext(filter, JSON_C_TO_STRING_PLAIN) : NULL;
		if (text && strlen(text) > 8192)
			rc = fail(w, "%s: longer than 8192 bytes", parent);
		else
			rc = set_string(&c->feature.network.incoming.http_filter, text, w->err);
	}
	json_object_put(filter);
	return rc;
}

static int get_incoming_mode(struct walk *w, const char *path, json_object *v,
			     enum policy_incoming_mode *dst)
{
	if (!json_object_is_type(v, json_type_string))
		return type_error(w, path, "a string", v);
	if (policy_incoming_mode_parse(json_object_get_string(v), dst) < 0)
		return fail(w, "%s: unknown mode \"%s\" (expected mirror, steal or off)", path,
			    json_object_get_string(v));
	return 0;
}

static int incoming_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	typeof(c->feature.network.incoming) *in = &c->feature.network.incoming;
	int rc = 0;
	if (strcmp(m->key, "mode") == 0) {
		rc = get_incoming_mode(w, m->path, m->val, &in->mode);
	} else if (strcmp(m->key, "port_mapping") == 0) {
		rc = get_port_mapping(w, m->path, m->val, &in->port_mapping);
	} else if (strcmp(m->key, "ports") == 0) {
		rc = get_ports(w, m->path, m->val, &in->ports);
	} else if (strcmp(m->key, "ignore_ports") == 0) {
		rc = get_ports(w, m->path, m->val, &in->ignore_ports);
	} else if (strcmp(m->key, "http_filter") == 0) {
		rc = walk_http_filter(w, m->val, c);
	} else if (strcmp(m->key, "on_concurrent_steal") == 0) {
		if (!json_object_is_type(m->val, json_type_string))
			return type_error(w, m->path, "a string", m->val);
		const char *v = json_object_get_string(m->val);
		if (strcmp(v, "abort") == 0)
			in->on_concurrent_steal = POLICY_CONCURRENT_ABORT;
		else if (strcmp(v, "continue") == 0)
			in->on_concurrent_steal = POLICY_CONCURRENT_CONTINUE;
		else
			return fail(w, "%s: \"%s\" is not supported (expected abort or continue)",
				    m->path, v);
	} else if (strcmp(m->key, "flush_connections") == 0) {
		rc = get_bool(w, m->path, m->val, &in->flush_connections);
	} else if (strcmp(m->key, "fd_handoff") == 0) {
		rc = get_bool(w, m->path, m->val, &in->fd_handoff);
	} else {
		rc = unknown_key(w, m->parent, m->key,
				 "mode, port_mapping, ports, ignore_ports, http_filter, "
				 "on_concurrent_steal, flush_connections, fd_handoff");
	}
	return rc;
}

static int walk_incoming(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.network.incoming";
	typeof(c->feature.network.incoming) *in = &c->feature.network.incoming;
	/* mirrord's shorthand: "incoming": "steal" */
	if (json_object_is_type(obj, json_type_string))
		return get_incoming_mode(w, parent, obj, &in->mode);
	if (!json_object_is_type(obj, json_type_object))
		return type_error(w, parent, "an object or a mode string", obj);
	if (walk_members(w, parent, obj, c, incoming_member) < 0)
		return -1;
	if (in->ports.set && in->ignore_ports.set)
		return fail(w, "%s: set either ports or ignore_ports, not both", parent);
	return 0;
}

static int network_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	if (strcmp(m->key, "outgoing") == 0)
		return walk_outgoing(w, m->val, c);
	if (strcmp(m->key, "dns") == 0)
		return get_bool(w, m->path, m->val, &c->feature.network.dns);
	if (strcmp(m->key, "incoming") == 0)
		return walk_incoming(w, m->val, c);
	return unknown_key(w, m->parent, m->key, "outgoing, incoming, dns");
}

static int walk_network(struct walk *w, json_object *obj, struct policy_config *c)
{
	const char *parent = "feature.network";
	if (check_object(w, parent, obj) < 0)
		return -1;
	return walk_members(w, parent, obj, c, network_member);
}

static int feature_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	if (strcmp(m->key, "env") == 0)
		return walk_env(w, m->val, c);
	if (strcmp(m->key, "fs") == 0)
		return walk_fs(w, m->val, c);
	if (strcmp(m->key, "network") == 0)
		return walk_network(w, m->val, c);
	return unknown_key(w, m->parent, m->key, "env, fs, network");
}

static int walk_feature(struct walk *w, json_object *obj, struct policy_config *c)
{
	if (check_object(w, "feature", obj) < 0)
		return -1;
	return walk_members(w, "feature", obj, c, feature_member);
}

static int root_member(struct walk *w, const struct member *m, struct policy_config *c)
{
	int rc = 0;
	if (strcmp(m->key, "target") == 0) {
		rc = get_string(w, "target", m->val, &c->target);
	} else if (strcmp(m->key, "agent") == 0) {
		rc = walk_agent(w, m->val, c);
	} else if (strcmp(m->key, "backend") == 0) {
		if (!json_object_is_type(m->val, json_type_string))
			return type_error(w, "backend", "a string", m->val);
		if (tracer_backend_parse(json_object_get_string(m->val), &c->backend) < 0)
			return fail(w,
				    "backend: unknown backend \"%s\" (expected seccomp, ptrace "
				    "or auto)",
				    json_object_get_string(m->val));
		c->backend_set = true;
		rc = 0;
	} else if (strcmp(m->key, "feature") == 0) {
		rc = walk_feature(w, m->val, c);
	} else {
		rc = unknown_key(w, m->parent, m->key, "target, agent, backend, feature");
	}
	return rc;
}

static int walk_root(struct walk *w, json_object *obj, struct policy_config *c)
{
	if (!json_object_is_type(obj, json_type_object))
		return fail(w, "expected a JSON object at the top, got %s", json_kind(obj));
	return walk_members(w, "", obj, c, root_member);
}

/* 1-based line and column of a byte offset, for parse errors people can find. */
static void locate(const char *text, size_t offset, unsigned *line, unsigned *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < offset && text[i]; i++) {
		if (text[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

int policy_config_load_string(struct policy_config *c, const char *json, const char *origin,
			      struct hm_err *err)
{
	struct walk w = {.origin = origin, .err = err};
	json_tokener *tok = json_tokener_new();
	if (!tok)
		return hm_err_set(err, ENOMEM, "%s", origin);
	/* strict: no trailing garbage, comments or single quotes; strings must be UTF-8 */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	size_t len = strlen(json);
	json_object *root = json_tokener_parse_ex(tok, json, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (jerr == json_tokener_continue) {
		json_object_put(root);
		return hm_err_set(err, 0, "%s: invalid JSON: unexpected end of input", origin);
	}
	if (!root || jerr != json_tokener_success) {
		unsigned line, col;
		locate(json, end, &line, &col);
		json_object_put(root);
		return hm_err_set(err, 0, "%s:%u:%u: invalid JSON: %s", origin, line, col,
				  json_tokener_error_desc(jerr));
	}
	int rc = walk_root(&w, root, c);
	json_object_put(root);
	return rc;
}

int policy_config_load_file(struct policy_config *c, const char *path, struct hm_err *err)
{
	hm_cleanup_free char *text = NULL;
	size_t len;
	if (hm_read_file(path, &text, &len, err) < 0)
		return hm_err_prefix(err, "config");
	if (strlen(text) != len)
		return hm_err_set(err, 0, "%s: invalid JSON: NUL byte in the file", path);
	return policy_config_load_string(c, text, path, err);
}

/* ---------------------------------------------------------------- merge, finalize */

static int merge_list(struct policy_strv *dst, const struct policy_strv *src, struct hm_err *err)
{
	return src->set ? strv_copy(dst, src, err) : 0;
}

int policy_config_merge(struct policy_config *base, const struct policy_config *over,
			struct hm_err *err)
{
	if (over->target && set_string(&base->target, over->target, err) < 0)
		return -1;
	/* one endpoint choice: --agent-unix after a file's "address" replaces it */
	if (over->agent.unix_path || over->agent.address) {
		if (set_string(&base->agent.unix_path, over->agent.unix_path, err) < 0 ||
		    set_string(&base->agent.address, over->agent.address, err) < 0)
			return -1;
	}
	if (over->agent.token_file &&
	    set_string(&base->agent.token_file, over->agent.token_file, err) < 0)
		return -1;
	if (over->backend_set) {
		base->backend = over->backend;
		base->backend_set = true;
	}

	typeof(over->feature) *of = &over->feature; /* const, as over is */
	typeof(base->feature) *bf = &base->feature;
	if (of->env.enabled)
		bf->env.enabled = of->env.enabled;
	if (merge_list(&bf->env.include, &of->env.include, err) < 0 ||
	    merge_list(&bf->env.exclude, &of->env.exclude, err) < 0)
		return -1;
	for (size_t i = 0; i < of->env.override.len; i++) {
		const char *kv = of->env.override.items[i];
		const char *eq = strchr(kv, '=');
		if (eq && override_set(&bf->env.override, kv, (size_t)(eq - kv), eq + 1, err) < 0)
			return -1;
	}
	if (of->fs.mode)
		bf->fs.mode = of->fs.mode;
	if (of->fs.max_file_size)
		bf->fs.max_file_size = of->fs.max_file_size;
	if (of->fs.cache_ttl_set) {
		bf->fs.cache_ttl_ms = of->fs.cache_ttl_ms;
		bf->fs.cache_ttl_set = true;
	}
	if (merge_list(&bf->fs.read_only, &of->fs.read_only, err) < 0 ||
	    merge_list(&bf->fs.read_write, &of->fs.read_write, err) < 0 ||
	    merge_list(&bf->fs.local, &of->fs.local, err) < 0 ||
	    merge_list(&bf->fs.not_found, &of->fs.not_found, err) < 0)
		return -1;
	if (of->network.outgoing.tcp)
		bf->network.outgoing.tcp = of->network.outgoing.tcp;
	if (of->network.outgoing.udp)
		bf->network.outgoing.udp = of->network.outgoing.udp;
	/* the kind and its list go together: a flag's remote list replaces a file's local one */
	if (of->network.outgoing.filter_kind) {
		bf->network.outgoing.filter_kind = of->network.outgoing.filter_kind;
		if (strv_copy(&bf->network.outgoing.filter, &of->network.outgoing.filter, err) < 0)
			return -1;
	}
	if (of->network.dns)
		bf->network.dns = of->network.dns;
	typeof(of->network.incoming) *oi = &of->network.incoming;
	typeof(bf->network.incoming) *bi = &bf->network.incoming;
	if (oi->mode)
		bi->mode = oi->mode;
	if ((oi->port_mapping.set &&
	     port_map_copy(&bi->port_mapping, &oi->port_mapping, err) < 0) ||
	    (oi->ports.set && ports_copy(&bi->ports, &oi->ports, err) < 0) ||
	    (oi->ignore_ports.set && ports_copy(&bi->ignore_ports, &oi->ignore_ports, err) < 0))
		return -1;
	/* the filter and its ports go together */
	if (oi->http_filter || oi->http_filter_ports.set) {
		if (set_string(&bi->http_filter, oi->http_filter, err) < 0 ||
		    ports_copy(&bi->http_filter_ports, &oi->http_filter_ports, err) < 0)
			return -1;
	}
	if (oi->on_concurrent_steal)
		bi->on_concurrent_steal = oi->on_concurrent_steal;
	if (oi->flush_connections)
		bi->flush_connections = oi->flush_connections;
	if (oi->fd_handoff)
		bi->fd_handoff = oi->fd_handoff;
	return 0;
}

static void default_tri(enum policy_tristate *t)
{
	if (*t == POLICY_TRI_UNSET)
		*t = POLICY_TRI_TRUE;
}

int policy_config_finalize(struct policy_config *c, struct hm_err *err)
{
	if (c->agent.unix_path && c->agent.address)
		return hm_err_set(err, 0, "agent: set either unix or address, not both");
	default_tri(&c->feature.env.enabled);
	if (c->feature.fs.mode == POLICY_FS_MODE_UNSET)
		c->feature.fs.mode = POLICY_FS_MODE_READ;
	if (!c->feature.fs.max_file_size)
		c->feature.fs.max_file_size = POLICY_FS_MAX_FILE_DEFAULT;
	if (!c->feature.fs.cache_ttl_set) {
		c->feature.fs.cache_ttl_ms = POLICY_FS_CACHE_TTL_MS_DEFAULT;
		c->feature.fs.cache_ttl_set = true;
	}
	default_tri(&c->feature.network.outgoing.tcp);
	default_tri(&c->feature.network.outgoing.udp);
	default_tri(&c->feature.network.dns);
	if (c->feature.network.outgoing.filter_kind == POLICY_NET_FILTER_UNSET)
		c->feature.network.outgoing.filter_kind = POLICY_NET_FILTER_NONE;
	typeof(c->feature.network.incoming) *in = &c->feature.network.incoming;
	if (in->mode == POLICY_INCOMING_UNSET)
		in->mode = POLICY_INCOMING_MIRROR;
	if (in->on_concurrent_steal == POLICY_CONCURRENT_UNSET)
		in->on_concurrent_steal = POLICY_CONCURRENT_ABORT;
	if (in->flush_connections == POLICY_TRI_UNSET)
		in->flush_connections = POLICY_TRI_FALSE;
	default_tri(&in->fd_handoff);
	if (in->ports.set && in->ignore_ports.set)
		return hm_err_set(
		    err, 0, "feature.network.incoming: set either ports or ignore_ports, not both");

	if (check_regex_list("feature.fs.read_only", &c->feature.fs.read_only, err) < 0 ||
	    check_regex_list("feature.fs.read_write", &c->feature.fs.read_write, err) < 0 ||
	    check_regex_list("feature.fs.local", &c->feature.fs.local, err) < 0 ||
	    check_regex_list("feature.fs.not_found", &c->feature.fs.not_found, err) < 0)
		return -1;
	enum policy_net_filter_kind kind = c->feature.network.outgoing.filter_kind;
	if (kind == POLICY_NET_FILTER_NONE)
		policy_strv_clear(&c->feature.network.outgoing.filter);
	else if (check_filter_list(filter_key(kind), &c->feature.network.outgoing.filter, err) < 0)
		return -1;
	return 0;
}
