/* agent: mirrord's http_filter (steal mode), parsed from the client's JSON and matched
 * against request heads. The JSON comes from the network: its size, nesting and
 * regexes are bounded, and each regex runs under PCRE2 match/depth/heap limits so a
 * catastrophic pattern ((a+)+$ on a long header) costs a bounded, small amount of CPU
 * per request instead of the router's thread. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <json-c/json.h>
#include <pcre2.h>
#include <string.h>
#include <strings.h>

#include "agent/internal.h"

/* The interpreter's limits for one match (pcre2_set_*): a header line is at most
 * HTTP_HEAD_MAX bytes; these keep a hostile regex to a few ms of CPU. */
#define MATCH_LIMIT 50000 /* ~0.6 ms for (a|a)*[bc]$ on a 250-byte header */
#define MATCH_DEPTH_LIMIT 2000
#define MATCH_HEAP_LIMIT_KIB 2048
/* What matching one request may cost a filter in all: the router's one thread serves
 * every filtered connection of every session, and the per-match limits above multiply
 * by regexes x headers x subscriptions (64 x 128 x 64 matches of up to a few ms each:
 * half an hour of that thread for one request). A legitimate filter takes microseconds.
 * So a filter is spent for the rest of a request (what is left of it counts as no
 * match) once one of its regexes hits a per-match limit, or once matching that request
 * has taken FILTER_CPU_BUDGET_NS of the thread's CPU time (looked at every
 * FILTER_CPU_CHECK_EVERY matches). CPU time, not the clock: a router preempted on a busy
 * machine must not route a legitimate request elsewhere. With AGENT_INCOMING_MAX_PORT_SUBS
 * filters, a request costs at most ~0.15 s. */
#define FILTER_CPU_BUDGET_NS (2000ull * 1000)
#define FILTER_CPU_CHECK_EVERY 16

enum node_kind { NODE_HEADER, NODE_PATH, NODE_METHOD, NODE_ALL_OF, NODE_ANY_OF };

struct http_filter {
	enum node_kind kind;
	pcre2_code *re;		       /* HEADER, PATH */
	pcre2_match_context *mctx;     /* HEADER, PATH: the limits */
	char *method;		       /* METHOD */
	struct http_filter **children; /* ALL_OF, ANY_OF */
	size_t n_children;
};

void http_filter_free(struct http_filter *f)
{
	if (!f)
		return;
	pcre2_code_free(f->re);
	pcre2_match_context_free(f->mctx);
	free(f->method);
	for (size_t i = 0; i < f->n_children; i++)
		http_filter_free(f->children[i]);
	free(f->children);
	free(f);
}

struct parse {
	size_t nodes;
	struct hm_err *err;
};

static int compile_regex(struct http_filter *f, const char *where, const char *re, size_t len,
			 struct hm_err *err)
{
	if (len > HTTP_FILTER_REGEX_MAX)
		return hm_err_plain(err, EINVAL, "%s: regex longer than %u bytes", where,
				    HTTP_FILTER_REGEX_MAX);
	pcre2_compile_context *cctx = pcre2_compile_context_create(NULL);
	if (!cctx)
		return hm_err_set(err, ENOMEM, "%s", where);
	/* deeply nested parentheses are a compile-time stack attack of their own */
	pcre2_set_parens_nest_limit(cctx, 64);
	int code;
	PCRE2_SIZE offset;
	/* MATCH_INVALID_UTF: a header with bytes that are not UTF-8 is matched (as bytes
	 * where it is invalid), never an error */
	f->re = pcre2_compile((PCRE2_SPTR)re, len, PCRE2_CASELESS | PCRE2_MATCH_INVALID_UTF, &code,
			      &offset, cctx);
	pcre2_compile_context_free(cctx);
	if (!f->re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(code, msg, sizeof(msg));
		return hm_err_plain(err, EINVAL, "%s: bad regex \"%.*s\" at offset %zu: %s", where,
				    (int)(len > 200 ? 200 : len), re, (size_t)offset, (char *)msg);
	}
	f->mctx = pcre2_match_context_create(NULL);
	if (!f->mctx)
		return hm_err_set(err, ENOMEM, "%s", where);
	pcre2_set_match_limit(f->mctx, MATCH_LIMIT);
	pcre2_set_depth_limit(f->mctx, MATCH_DEPTH_LIMIT);
	pcre2_set_heap_limit(f->mctx, MATCH_HEAP_LIMIT_KIB);
	return 0;
}

/* RFC 9110 token characters: what a method can be */
static bool is_token(const char *s, size_t len)
{
	if (len == 0 || len > 32)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(c > 32 && c < 127) || strchr("\"(),/:;<=>?@[\\]{}", c))
			return false;
	}
	return true;
}

static int parse_node(struct parse *p, json_object *key_value, enum node_kind kind,
		      const char *where, int depth, struct http_filter **out);

static int parse_list(struct parse *p, json_object *arr, enum node_kind kind, const char *where,
		      int depth, struct http_filter *f)
{
	if (!json_object_is_type(arr, json_type_array))
		return hm_err_plain(p->err, EINVAL, "%s: must be a list of filters", where);
	if (depth >= HTTP_FILTER_DEPTH_MAX)
		return hm_err_plain(p->err, EINVAL, "%s: nested deeper than %d", where,
				    HTTP_FILTER_DEPTH_MAX);
	size_t n = json_object_array_length(arr);
	if (n == 0)
		return hm_err_plain(p->err, EINVAL, "%s: cannot be an empty list", where);
	if (n > HTTP_FILTER_NODES_MAX)
		return hm_err_plain(p->err, EINVAL, "%s: more than %d filters", where,
				    HTTP_FILTER_NODES_MAX);
	f->kind = kind;
	f->children = calloc(n, sizeof(*f->children));
	if (!f->children)
		return hm_err_set(p->err, ENOMEM, "%s", where);
	for (size_t i = 0; i < n; i++) {
		char at[256];
		snprintf(at, sizeof(at), "%s[%zu]", where, i);
		json_object *item = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(item, json_type_object))
			return hm_err_plain(p->err, EINVAL,
					    "%s: must be an object like {\"header\": \"...\"}", at);
		if (json_object_object_length(item) != 1)
			return hm_err_plain(p->err, EINVAL,
					    "%s: must have exactly one of header, path, method, "
					    "all_of, any_of",
					    at);
		json_object_object_foreach(item, key, val)
		{
			static const struct {
				const char *name;
				enum node_kind kind;
			} inner[] = {{"header", NODE_HEADER},
				     {"path", NODE_PATH},
				     {"method", NODE_METHOD},
				     {"all_of", NODE_ALL_OF},
				     {"any_of", NODE_ANY_OF}};
			char sub[300];
			snprintf(sub, sizeof(sub), "%s.%s", at, key);
			size_t k = 0;
			while (k < HM_ARRAY_SIZE(inner) && strcmp(inner[k].name, key) != 0)
				k++;
			if (k == HM_ARRAY_SIZE(inner))
				return hm_err_plain(
				    p->err, EINVAL,
				    "%s: unknown key (header, path, method, all_of, "
				    "any_of are known)",
				    sub);
			if (parse_node(p, val, inner[k].kind, sub, depth + 1,
				       &f->children[f->n_children]) < 0)
				return -1;
			f->n_children++;
		}
	}
	return 0;
}

static int parse_node(struct parse *p, json_object *val, enum node_kind kind, const char *where,
		      int depth, struct http_filter **out)
{
	if (++p->nodes > HTTP_FILTER_NODES_MAX)
		return hm_err_plain(p->err, EINVAL, "%s: more than %d filters in all", where,
				    HTTP_FILTER_NODES_MAX);
	struct http_filter *f = calloc(1, sizeof(*f));
	if (!f)
		return hm_err_set(p->err, ENOMEM, "%s", where);
	int rc = 0;
	f->kind = kind;
	if (kind == NODE_ALL_OF || kind == NODE_ANY_OF) {
		rc = parse_list(p, val, kind, where, depth, f);
	} else if (!json_object_is_type(val, json_type_string)) {
		rc = hm_err_plain(p->err, EINVAL, "%s: must be a string", where);
	} else if (kind == NODE_METHOD) {
		const char *m = json_object_get_string(val);
		size_t len = (size_t)json_object_get_string_len(val);
		if (!is_token(m, len) || strlen(m) != len)
			rc = hm_err_plain(p->err, EINVAL, "%s: \"%.40s\" is not an HTTP method",
					  where, m);
		else if (!(f->method = strdup(m)))
			rc = hm_err_set(p->err, ENOMEM, "%s", where);
	} else {
		rc = compile_regex(f, where, json_object_get_string(val),
				   (size_t)json_object_get_string_len(val), p->err);
	}
	if (rc < 0) {
		http_filter_free(f);
		return -1;
	}
	*out = f;
	return 0;
}

static int parse_root(struct parse *p, json_object *root, struct http_filter **out)
{
	static const struct {
		const char *name;
		enum node_kind kind;
	} top[] = {{"header_filter", NODE_HEADER},
		   {"path_filter", NODE_PATH},
		   {"method_filter", NODE_METHOD},
		   {"all_of", NODE_ALL_OF},
		   {"any_of", NODE_ANY_OF}};
	if (!json_object_is_type(root, json_type_object))
		return hm_err_plain(p->err, EINVAL, "http_filter: must be a JSON object");
	json_object *chosen = NULL;
	const char *chosen_name = NULL;
	enum node_kind kind = NODE_HEADER;
	json_object_object_foreach(root, key, val)
	{
		if (strcmp(key, "ports") == 0)
			continue; /* which ports are filtered: decided by the client */
		size_t k = 0;
		while (k < HM_ARRAY_SIZE(top) && strcmp(top[k].name, key) != 0)
			k++;
		if (k == HM_ARRAY_SIZE(top))
			return hm_err_plain(p->err, EINVAL,
					    "http_filter.%.60s: unknown key (header_filter, "
					    "path_filter, method_filter, all_of, any_of, ports are "
					    "known)",
					    key);
		if (chosen)
			return hm_err_plain(
			    p->err, EINVAL,
			    "http_filter: %s and %s both set; only one of "
			    "header_filter, path_filter, method_filter, all_of, any_of "
			    "may be (combine them with all_of)",
			    chosen_name, top[k].name);
		chosen = val;
		chosen_name = top[k].name;
		kind = top[k].kind;
	}
	if (!chosen)
		return hm_err_plain(
		    p->err, EINVAL,
		    "http_filter: none of header_filter, path_filter, method_filter, "
		    "all_of, any_of is set");
	char where[64];
	snprintf(where, sizeof(where), "http_filter.%s", chosen_name);
	return parse_node(p, chosen, kind, where, 0, out);
}

int http_filter_parse(const char *json, size_t len, struct http_filter **out, struct hm_err *err)
{
	*out = NULL;
	if (len > HTTP_FILTER_JSON_MAX)
		return hm_err_plain(err, EINVAL, "http_filter: longer than %u bytes",
				    HTTP_FILTER_JSON_MAX);
	if (memchr(json, '\0', len))
		return hm_err_plain(err, EINVAL, "http_filter: NUL byte in the JSON text");
	/* json-c's own depth bound keeps its recursion small; ours is checked above it */
	json_tokener *tok = json_tokener_new_ex(4 * HTTP_FILTER_DEPTH_MAX + 8);
	if (!tok)
		return hm_err_set(err, ENOMEM, "http_filter");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	json_object *root = json_tokener_parse_ex(tok, json, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (jerr == json_tokener_continue) {
		json_object_put(root);
		return hm_err_plain(err, EINVAL,
				    "http_filter: invalid JSON: unexpected end of input");
	}
	if (!root || jerr != json_tokener_success || end != len) {
		json_object_put(root);
		return hm_err_plain(err, EINVAL, "http_filter: invalid JSON at byte %zu: %s", end,
				    jerr != json_tokener_success ? json_tokener_error_desc(jerr)
								 : "trailing bytes");
	}
	struct parse p = {.err = err};
	int rc = parse_root(&p, root, out);
	json_object_put(root);
	return rc;
}

/* ---- matching ---- */

/* One filter's matching of one request (see FILTER_CPU_BUDGET_NS) */
struct match_budget {
	pcre2_match_data *md;
	uint64_t cpu_deadline_ns;
	unsigned matches;
	bool spent;
};

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
		return UINT64_MAX; /* cannot tell: spent, the safe side */
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool regex_finds(const struct http_filter *f, const char *s, size_t len,
			struct match_budget *b)
{
	if (b->spent)
		return false;
	int rc = pcre2_match(f->re, (PCRE2_SPTR)s, len, 0, 0, b->md, f->mctx);
	if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
	    rc == PCRE2_ERROR_HEAPLIMIT) {
		b->spent = true;
		hm_debug("http filter: a regex hit its match limit; the rest of the filter counts "
			 "as no match for this request");
		return false;
	}
	if (++b->matches % FILTER_CPU_CHECK_EVERY == 0 && thread_cpu_ns() >= b->cpu_deadline_ns) {
		b->spent = true;
		hm_debug("http filter: out of matching time for this request; the rest of the "
			 "filter counts as no match");
	}
	return rc >= 0;
}

/* "Name: value" of each header, as mirrord gives them to header_filter */
static bool header_matches(const struct http_filter *f, const struct http_request *req,
			   struct match_budget *b)
{
	char stack[1024];
	for (size_t i = 0; i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];
		size_t len = h->name_len + 2 + h->value_len;
		char *line = len <= sizeof(stack) ? stack : malloc(len);
		if (!line)
			return false;
		memcpy(line, h->name, h->name_len);
		memcpy(line + h->name_len, ": ", 2);
		memcpy(line + h->name_len + 2, h->value, h->value_len);
		bool hit = regex_finds(f, line, len, b);
		if (line != stack)
			free(line);
		if (hit)
			return true;
	}
	return false;
}

/* The path alone, and the path with its query (mirrord tries both). An absolute-form
 * target ("http://host/p?q", proxies) counts from its path. */
static bool path_matches(const struct http_filter *f, const struct http_request *req,
			 struct match_budget *b)
{
	const char *url = req->url;
	size_t len = req->url_len;
	if (len && url[0] != '/') {
		const char *scheme = memmem(url, len, "://", 3);
		if (scheme) {
			const char *slash =
			    memchr(scheme + 3, '/', len - (size_t)(scheme + 3 - url));
			const char *q = memchr(scheme + 3, '?', len - (size_t)(scheme + 3 - url));
			if (q && (!slash || q < slash))
				slash = q;
			len -= slash ? (size_t)(slash - url) : len;
			url = slash ? slash : url + req->url_len;
		}
	}
	const char *fragment = memchr(url, '#', len);
	if (fragment)
		len = (size_t)(fragment - url);
	const char *query = memchr(url, '?', len);
	if (query && regex_finds(f, url, (size_t)(query - url), b))
		return true;
	return regex_finds(f, url, len, b);
}

static bool node_matches(const struct http_filter *f, const struct http_request *req,
			 struct match_budget *b)
{
	switch (f->kind) {
	case NODE_HEADER:
		return header_matches(f, req, b);
	case NODE_PATH:
		return path_matches(f, req, b);
	case NODE_METHOD:
		return req->method && strcasecmp(req->method, f->method) == 0;
	case NODE_ALL_OF:
		for (size_t i = 0; i < f->n_children; i++)
			if (!node_matches(f->children[i], req, b))
				return false;
		return true;
	case NODE_ANY_OF:
		for (size_t i = 0; i < f->n_children; i++)
			if (node_matches(f->children[i], req, b))
				return true;
		return false;
	}
	return false;
}

bool http_filter_match(const struct http_filter *f, const struct http_request *req)
{
	struct match_budget b = {.md = pcre2_match_data_create(1, NULL),
				 .cpu_deadline_ns = thread_cpu_ns() + FILTER_CPU_BUDGET_NS};
	if (!b.md)
		return false;
	bool hit = node_matches(f, req, &b);
	pcre2_match_data_free(b.md);
	return hit;
}

int http_filter_pick(struct http_filter *const *filters, size_t n, const struct http_request *req)
{
	int catch_all = -1;
	for (size_t i = 0; i < n; i++) {
		if (!filters[i])
			catch_all = catch_all < 0 ? (int)i : catch_all;
		else if (http_filter_match(filters[i], req))
			return (int)i;
	}
	return catch_all;
}
