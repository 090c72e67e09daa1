/* YAML to json-c with libyaml's event parser: kubeconfig files are YAML (kubectl writes
 * block style; JSON kubeconfigs are YAML too), and the rest of the module reads json-c
 * trees, as it does the API server's answers. */
#include <string.h>
#include <yaml.h>

#include "kube/internal.h"

#define YAML_MAX_DEPTH 64

struct yaml_ctx {
	yaml_parser_t parser;
	const char *what;
	struct hm_err *err;
};

static struct json_object *scalar_value(const yaml_event_t *ev)
{
	const char *v = (const char *)ev->data.scalar.value;
	size_t n = ev->data.scalar.length;
	if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE"))
			return json_object_new_boolean(1);
		if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE"))
			return json_object_new_boolean(0);
		if (!n || !strcmp(v, "null") || !strcmp(v, "~"))
			return NULL;
	}
	return json_object_new_string_len(v, (int)n);
}

static int next_event(struct yaml_ctx *y, yaml_event_t *ev)
{
	if (!yaml_parser_parse(&y->parser, ev))
		return hm_err_set(y->err, EINVAL, "%s: YAML line %zu: %s", y->what,
				  y->parser.problem_mark.line + 1,
				  y->parser.problem ? y->parser.problem : "syntax error");
	return 0;
}

static int parse_node(struct yaml_ctx *y, yaml_event_t *ev, int depth, struct json_object **out);

/* the members or items until the closing event */
static int parse_children(struct yaml_ctx *y, bool mapping, int depth, struct json_object *parent)
{
	for (;;) {
		yaml_event_t ev;
		if (next_event(y, &ev) < 0)
			return -1;
		yaml_event_type_t end = mapping ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT;
		if (ev.type == end) {
			yaml_event_delete(&ev);
			return 0;
		}
		if (!mapping) {
			struct json_object *item = NULL;
			int rc = parse_node(y, &ev, depth + 1, &item);
			yaml_event_delete(&ev);
			if (rc < 0)
				return -1;
			json_object_array_add(parent, item);
			continue;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			yaml_event_delete(&ev);
			return hm_err_set(y->err, EINVAL,
					  "%s: YAML line %zu: a key that is not a string", y->what,
					  y->parser.mark.line + 1);
		}
		char *key = strdup((const char *)ev.data.scalar.value);
		yaml_event_delete(&ev);
		if (!key)
			return hm_err_set(y->err, ENOMEM, "%s", y->what);
		struct json_object *value = NULL;
		int rc = next_event(y, &ev);
		if (rc == 0) {
			rc = parse_node(y, &ev, depth + 1, &value);
			yaml_event_delete(&ev);
		}
		if (rc == 0)
			json_object_object_add(parent, key, value);
		free(key);
		if (rc < 0)
			return -1;
	}
}

static int parse_node(struct yaml_ctx *y, yaml_event_t *ev, int depth, struct json_object **out)
{
	*out = NULL;
	if (depth > YAML_MAX_DEPTH)
		return hm_err_set(y->err, EINVAL, "%s: YAML nested deeper than %d levels", y->what,
				  YAML_MAX_DEPTH);
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		*out = scalar_value(ev);
		return 0;
	case YAML_ALIAS_EVENT:
		return hm_err_set(y->err, EINVAL, "%s: YAML line %zu: aliases are not supported",
				  y->what, ev->start_mark.line + 1);
	case YAML_MAPPING_START_EVENT:
	case YAML_SEQUENCE_START_EVENT: {
		bool mapping = ev->type == YAML_MAPPING_START_EVENT;
		struct json_object *o =
		    mapping ? json_object_new_object() : json_object_new_array();
		if (!o)
			return hm_err_set(y->err, ENOMEM, "%s", y->what);
		if (parse_children(y, mapping, depth, o) < 0) {
			json_object_put(o);
			return -1;
		}
		*out = o;
		return 0;
	}
	default:
		return hm_err_set(y->err, EINVAL, "%s: unexpected YAML event", y->what);
	}
}

int kube_yaml_parse(const char *text, size_t len, const char *what, struct json_object **out,
		    struct hm_err *err)
{
	struct yaml_ctx y = {.what = what, .err = err};
	*out = NULL;
	if (!yaml_parser_initialize(&y.parser))
		return hm_err_set(err, ENOMEM, "%s: YAML parser", what);
	yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
	int rc = 0;
	struct json_object *doc = NULL;
	bool done = false;
	while (!done && rc == 0) {
		yaml_event_t ev;
		if ((rc = next_event(&y, &ev)) < 0)
			break;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		default:
			if (doc) {
				rc = hm_err_set(err, EINVAL, "%s: more than one YAML document",
						what);
				break;
			}
			rc = parse_node(&y, &ev, 0, &doc);
			if (rc == 0 && !doc)
				doc = json_object_new_object(); /* "null" or "" */
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&y.parser);
	if (rc < 0) {
		json_object_put(doc);
		return -1;
	}
	if (!doc)
		doc = json_object_new_object();
	if (!json_object_is_type(doc, json_type_object)) {
		json_object_put(doc);
		return hm_err_set(err, EINVAL, "%s: not a YAML mapping", what);
	}
	*out = doc;
	return 0;
}
