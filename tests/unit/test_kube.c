/* kube/: YAML to json-c, kubeconfig loading and merging as kubectl does it, the
 * WebSocket frame decoder and the port-forward channel layer, container ID mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kube/internal.h"

static void test_yaml_kubeconfig_shapes(void **state)
{
	(void)state;
	const char *y = "clusters:\n- name: c\n  cluster:\n    server: https://x:6443\n"
			"    insecure-skip-tls-verify: true\n    quoted: \"true\"\n"
			"list: [a, 'b', {k: v}]\nempty:\n";
	struct json_object *o = NULL;
	struct hm_err err = {0};
	assert_int_equal(kube_yaml_parse(y, strlen(y), "t", &o, &err), 0);
	struct json_object *cl = json_object_array_get_idx(kube_json_path(o, "clusters"), 0);
	assert_string_equal(kube_json_str(kube_json_path(cl, "cluster"), "server"),
			    "https://x:6443");
	struct json_object *b = kube_json_path(cl, "cluster.insecure-skip-tls-verify");
	assert_true(json_object_is_type(b, json_type_boolean) && json_object_get_boolean(b));
	/* quoted stays a string: only plain true/false are booleans */
	assert_true(json_object_is_type(kube_json_path(cl, "cluster.quoted"), json_type_string));
	assert_int_equal(json_object_array_length(kube_json_path(o, "list")), 3);
	assert_null(kube_json_path(o, "empty"));
	json_object_put(o);
	/* aliases, a sequence at the top and bad syntax are one-line errors */
	const char *alias = "a: &x 1\nb: *x\n";
	assert_int_equal(kube_yaml_parse(alias, strlen(alias), "t", &o, &err), -1);
	assert_non_null(strstr(err.msg, "aliases are not supported"));
	assert_int_equal(kube_yaml_parse("- a\n", 4, "t", &o, &err), -1);
	assert_int_equal(kube_yaml_parse("a: [\n", 5, "t", &o, &err), -1);
	assert_non_null(strstr(err.msg, "YAML line"));
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_kubeconfig_merge_first_wins(void **state)
{
	(void)state;
	char dir[] = "/tmp/hermit-kube-unit.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char a[128], b[128], list[300];
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	write_file(a, "current-context: one\n"
		      "contexts:\n- name: one\n  context: {cluster: c, user: u, namespace: ns-a}\n"
		      "users:\n- name: u\n  user: {tokenFile: tok, client-certificate: c.crt, "
		      "client-key: /abs/c.key}\n");
	write_file(b, "current-context: two\n"
		      "contexts:\n- name: one\n  context: {cluster: c, user: u, namespace: ns-b}\n"
		      "- name: two\n  context: {cluster: c, user: u}\n"
		      "clusters:\n- name: c\n  cluster: {server: 'https://h:1/', "
		      "certificate-authority-data: aGVsbG8=}\n"
		      "users:\n- name: u\n  user: {token: from-b}\n");
	snprintf(list, sizeof(list), "%s/missing:%s:%s", dir, a, b);
	setenv("KUBECONFIG", list, 1);
	struct kube_opts opts = {0};
	struct kube_config c;
	struct hm_err err = {0};
	assert_int_equal(kube_config_load(&opts, &c, &err), 0);
	assert_string_equal(c.context, "one");	      /* a's current-context */
	assert_string_equal(c.namespace, "ns-a");     /* a's context "one" */
	assert_string_equal(c.server, "https://h:1"); /* only b has the cluster */
	assert_int_equal(c.ca_data_len, 5);	      /* base64 decoded */
	assert_null(c.token);			      /* a's user u wins: no token */
	char want[160];
	snprintf(want, sizeof(want), "%s/tok", dir); /* relative to a's folder */
	assert_string_equal(c.token_file, want);
	snprintf(want, sizeof(want), "%s/c.crt", dir);
	assert_string_equal(c.cert_file, want);
	assert_string_equal(c.key_file, "/abs/c.key");
	kube_config_free(&c);
	/* --context picks b's context "two"; --kubeconfig reads that file alone */
	opts.context = "two";
	assert_int_equal(kube_config_load(&opts, &c, &err), 0);
	assert_null(c.namespace);
	kube_config_free(&c);
	opts.kubeconfig = b;
	opts.context = NULL;
	assert_int_equal(kube_config_load(&opts, &c, &err), 0);
	assert_string_equal(c.context, "two");
	assert_string_equal(c.token, "from-b");
	kube_config_free(&c);
	opts.context = "three";
	assert_int_equal(kube_config_load(&opts, &c, &err), -1);
	assert_non_null(strstr(err.msg, "context three is not in kubeconfig"));
	unsetenv("KUBECONFIG");
	hm_rm_rf(dir, NULL);
}

/* a server frame: unmasked, FIN as given */
static size_t server_frame(uint8_t *out, bool fin, uint8_t op, const void *p, size_t n)
{
	out[0] = (uint8_t)((fin ? 0x80 : 0) | op);
	out[1] = (uint8_t)n;
	memcpy(out + 2, p, n);
	return n + 2;
}

static void test_ws_channels_fragments_and_ports(void **state)
{
	(void)state;
	uint8_t buf[256];
	size_t len = 0;
	/* each channel's port header, then data split as [0]"he" + cont "llo" */
	len += server_frame(buf + len, true, WS_OP_BINARY, "\x00\x90\x1f", 3);
	len += server_frame(buf + len, true, WS_OP_BINARY, "\x01\x90\x1f", 3);
	len += server_frame(buf + len, false, WS_OP_BINARY, "\x00he", 3);
	len += server_frame(buf + len, true, WS_OP_CONT, "llo", 3);
	len += server_frame(buf + len, true, WS_OP_PING, "p", 1);
	len += server_frame(buf + len, true, WS_OP_BINARY, "\x01oops", 5);
	struct ws_channels st = {.channel = -1};
	char data[64] = "", text[64] = "";
	int pings = 0;
	size_t off = 0;
	struct hm_err err = {0};
	while (off < len) {
		struct ws_frame f;
		ssize_t n = kube_ws_parse(buf + off, len - off, true, &f, &err);
		assert_true(n > 0);
		off += (size_t)n;
		struct ws_event ev;
		assert_int_equal(kube_ws_channels_feed(&st, &f, &ev, &err), 0);
		if (ev.kind == WS_EV_DATA)
			strncat(data, (const char *)ev.data, ev.len);
		else if (ev.kind == WS_EV_ERROR_TEXT)
			strncat(text, (const char *)ev.data, ev.len);
		else if (ev.kind == WS_EV_PING)
			pings++;
	}
	assert_string_equal(data, "hello");
	assert_string_equal(text, "oops");
	assert_int_equal(pings, 1);
	/* incomplete: wait for more */
	struct ws_frame f;
	assert_int_equal(kube_ws_parse(buf, 3, true, &f, &err), 0);
}

static void test_ws_refuses_bad_frames(void **state)
{
	(void)state;
	struct ws_frame f;
	struct hm_err err = {0};
	uint8_t masked[] = {0x82, 0x81, 1, 2, 3, 4, 5};
	assert_int_equal(kube_ws_parse(masked, sizeof(masked), true, &f, &err), -1);
	uint8_t rsv[] = {0xc2, 0x00};
	assert_int_equal(kube_ws_parse(rsv, sizeof(rsv), true, &f, &err), -1);
	uint8_t big[] = {0x82, 127, 0, 0, 0, 0, 0x7f, 0, 0, 0};
	assert_int_equal(kube_ws_parse(big, sizeof(big), true, &f, &err), -1);
	assert_int_equal(err.code, EMSGSIZE);
	uint8_t long_ping[] = {0x89, 126, 0, 200};
	assert_int_equal(kube_ws_parse(long_ping, sizeof(long_ping), true, &f, &err), -1);
	uint8_t not_shortest[] = {0x82, 126, 0, 5, 'a', 'b', 'c', 'd', 'e'};
	assert_int_equal(kube_ws_parse(not_shortest, sizeof(not_shortest), true, &f, &err), -1);
	/* channel 2 does not exist with one port; a continuation needs a message */
	struct ws_channels st = {.channel = -1};
	struct ws_event ev;
	uint8_t ch2[] = {0x82, 0x02, 2, 'x'};
	assert_int_equal(kube_ws_parse(ch2, sizeof(ch2), true, &f, &err), 4);
	assert_int_equal(kube_ws_channels_feed(&st, &f, &ev, &err), -1);
	uint8_t cont[] = {0x80, 0x01, 'x'};
	struct ws_channels st2 = {.channel = -1};
	assert_int_equal(kube_ws_parse(cont, sizeof(cont), true, &f, &err), 3);
	assert_int_equal(kube_ws_channels_feed(&st2, &f, &ev, &err), -1);
}

static void test_ws_client_frame_and_accept(void **state)
{
	(void)state;
	uint8_t out[WS_MAX_HEADER + 70000];
	static const uint8_t mask[4] = {9, 8, 7, 6};
	uint8_t payload[70000];
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)i;
	size_t h = kube_ws_header(out, WS_OP_BINARY, sizeof(payload), mask);
	assert_int_equal(h, 14); /* 64-bit length + mask */
	memcpy(out + h, payload, sizeof(payload));
	kube_ws_mask(out + h, sizeof(payload), mask, 0);
	struct ws_frame f;
	struct hm_err err = {0};
	assert_int_equal(kube_ws_parse(out, h + sizeof(payload), false, &f, &err),
			 (ssize_t)(h + sizeof(payload)));
	assert_memory_equal(f.payload, payload, sizeof(payload));
	char accept[29];
	/* RFC 6455's example; libcrypto is loaded here, as for a cluster target */
	assert_int_equal(kube_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", accept, &err), 0);
	assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_agent_target_mapping(void **state)
{
	(void)state;
	struct kube_target t = {.pod = "web", .container = "app"};
	char out[600];
	struct hm_err err = {0};
	snprintf(t.container_id, sizeof(t.container_id), "containerd://%s", "0123abcd");
	assert_int_equal(kube_agent_target(&t, out, sizeof(out), &err), 0);
	assert_string_equal(out, "container/0123abcd");
	snprintf(t.container_id, sizeof(t.container_id), "cri-o://ff00");
	assert_int_equal(kube_agent_target(&t, out, sizeof(out), &err), 0);
	assert_string_equal(out, "container/ff00");
	snprintf(t.container_id, sizeof(t.container_id), "hermit://web-1");
	assert_int_equal(kube_agent_target(&t, out, sizeof(out), &err), 0);
	assert_string_equal(out, "pod/web-1");
	/* nothing that could name another target kind through the agent's syntax */
	snprintf(t.container_id, sizeof(t.container_id), "docker://../pid/1");
	assert_int_equal(kube_agent_target(&t, out, sizeof(out), &err), -1);
	snprintf(t.container_id, sizeof(t.container_id), "hermit://x/../pid/1");
	assert_int_equal(kube_agent_target(&t, out, sizeof(out), &err), -1);
	snprintf(t.container_id, sizeof(t.container_id), "rkt://abc");
	assert_int_equal(kube_agent_target(&t, out, sizeof(out), &err), -1);
	assert_true(kube_target_is_kube_only("deployment/web"));
	assert_true(kube_target_is_kube_only("pod/web/container/app"));
	assert_false(kube_target_is_kube_only("pod/web"));
}

static void test_time_and_base64(void **state)
{
	(void)state;
	time_t t;
	assert_int_equal(kube_parse_time("2026-12-05T01:00:00Z", &t), 0);
	assert_int_equal(t, 1796432400);
	assert_int_equal(kube_parse_time("2026-12-05T02:00:00.123+01:00", &t), 0);
	assert_int_equal(t, 1796432400);
	assert_int_equal(kube_parse_time("2026-12-05 01:00:00", &t), -1);
	unsigned char *d;
	size_t n;
	assert_int_equal(kube_base64_decode("aGVs\nbG8=", &d, &n), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(d, "hello", 5);
	free(d);
	assert_int_equal(kube_base64_decode("aGV!", &d, &n), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_yaml_kubeconfig_shapes),
	    cmocka_unit_test(test_kubeconfig_merge_first_wins),
	    cmocka_unit_test(test_ws_channels_fragments_and_ports),
	    cmocka_unit_test(test_ws_refuses_bad_frames),
	    cmocka_unit_test(test_ws_client_frame_and_accept),
	    cmocka_unit_test(test_agent_target_mapping),
	    cmocka_unit_test(test_time_and_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
