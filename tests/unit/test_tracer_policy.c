/* trace-run's policy pieces: config file, file policy, outgoing filter, environment. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "tracer/policy/policy.h"

/* ================================================================ config */

static int load(struct policy_config *c, const char *json, struct hm_err *err)
{
	policy_config_init(c);
	return policy_config_load_string(c, json, "t.json", err);
}

/* The load fails and its message contains want. */
static void expect_load_error(const char *json, const char *want)
{
	struct policy_config c;
	struct hm_err err = {0};
	int rc = load(&c, json, &err);
	if (rc == 0 || !strstr(err.msg, want))
		fail_msg("config %s: rc %d, message \"%s\", wanted \"%s\"", json, rc, err.msg,
			 want);
	policy_config_free(&c);
}

static const char *example_path(char *buf, size_t size)
{
	const char *root = getenv("HERMIT_ROOT");
	snprintf(buf, size, "%s/docs/trace.example.json", root ? root : ".");
	return buf;
}

static void test_config_example_loads(void **state)
{
	(void)state;
	char path[4096];
	struct policy_config c;
	struct hm_err err = {0};
	policy_config_init(&c);
	if (policy_config_load_file(&c, example_path(path, sizeof(path)), &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_string_equal(c.target, "pod/web");
	assert_string_equal(c.agent.unix_path, "/run/hermit/agent.sock");
	assert_null(c.agent.address);
	assert_string_equal(c.agent.token_file, "/run/hermit/agent.token");
	assert_int_equal(c.backend, TRACER_BACKEND_SECCOMP);
	assert_int_equal(c.feature.env.enabled, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.env.include.len, 3);
	assert_string_equal(c.feature.env.include.items[0], "APP_*");
	assert_string_equal(c.feature.env.include.items[2], "PATH");
	assert_int_equal(c.feature.env.exclude.len, 1);
	assert_int_equal(c.feature.env.override.len, 2);
	assert_string_equal(c.feature.env.override.items[0], "LOG_LEVEL=debug");
	assert_string_equal(c.feature.env.override.items[1],
			    "DATABASE_URL=postgres://localhost:5432/dev");
	assert_int_equal(c.feature.fs.mode, POLICY_FS_MODE_READ);
	assert_int_equal(c.feature.fs.read_only.len, 2);
	assert_string_equal(c.feature.fs.read_only.items[1], "\\.ya?ml$");
	assert_int_equal(c.feature.fs.read_write.len, 1);
	assert_int_equal(c.feature.fs.local.len, 1);
	assert_int_equal(c.feature.fs.not_found.len, 1);
	assert_int_equal(c.feature.fs.max_file_size, 512ull << 20);
	assert_int_equal(c.feature.network.outgoing.tcp, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.network.outgoing.udp, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.network.outgoing.filter_kind, POLICY_NET_FILTER_REMOTE);
	assert_int_equal(c.feature.network.outgoing.filter.len, 5);
	assert_string_equal(c.feature.network.outgoing.filter.items[2], "tcp://db.svc:5432");
	assert_int_equal(c.feature.network.dns, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.network.incoming.mode, POLICY_INCOMING_STEAL);
	uint16_t remote = 0;
	assert_true(policy_incoming_port(&c, 8080, &remote));
	assert_int_equal(remote, 80);
	assert_false(policy_incoming_port(&c, 9090, &remote));
	assert_non_null(policy_incoming_http_filter(&c, 80));

	/* and the policies build from it */
	struct policy_fs_opts fo;
	policy_fs_opts_from_config(&c, &fo);
	struct policy_fs *fp;
	assert_int_equal(policy_fs_new(&fo, &fp, &err), 0);
	assert_int_equal(policy_fs_decide(fp, "/srv/config/app.conf", POLICY_FS_ACCESS_READ, NULL),
			 POLICY_FS_REMOTE);
	policy_fs_free(fp);
	struct policy_net_opts no;
	policy_net_opts_from_config(&c, &no);
	struct policy_net *np;
	assert_int_equal(policy_net_new(&no, &np, &err), 0);
	policy_net_free(np);
	policy_config_free(&c);
}

static void test_config_defaults(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	assert_int_equal(load(&c, "{}", &err), 0);
	assert_false(c.backend_set);
	assert_int_equal(c.feature.fs.mode, POLICY_FS_MODE_UNSET);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_null(c.target);
	assert_null(c.agent.unix_path);
	assert_null(c.agent.address);
	assert_null(c.agent.token_file);
	assert_int_equal(c.backend, TRACER_BACKEND_AUTO);
	assert_int_equal(c.feature.env.enabled, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.env.include.len, 0);
	assert_int_equal(c.feature.fs.mode, POLICY_FS_MODE_READ);
	assert_int_equal(c.feature.fs.max_file_size, POLICY_FS_MAX_FILE_DEFAULT);
	assert_int_equal(c.feature.network.outgoing.tcp, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.network.outgoing.udp, POLICY_TRI_TRUE);
	assert_int_equal(c.feature.network.outgoing.filter_kind, POLICY_NET_FILTER_NONE);
	assert_int_equal(c.feature.network.dns, POLICY_TRI_TRUE);
	policy_config_free(&c);
}

static void test_config_max_file_size(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	assert_int_equal(load(&c, "{\"feature\": {\"fs\": {\"max_file_size\": 1000}}}", &err), 0);
	assert_int_equal(c.feature.fs.max_file_size, 1000);
	policy_config_free(&c);
	assert_int_equal(load(&c, "{\"feature\": {\"fs\": {\"max_file_size\": \"2G\"}}}", &err), 0);
	assert_int_equal(c.feature.fs.max_file_size, 2ull << 30);
	/* a flag wins over the file */
	struct policy_config flags;
	policy_config_init(&flags);
	flags.feature.fs.max_file_size = 4096;
	assert_int_equal(policy_config_merge(&c, &flags, &err), 0);
	assert_int_equal(c.feature.fs.max_file_size, 4096);
	policy_config_free(&flags);
	policy_config_free(&c);
	expect_load_error("{\"feature\": {\"fs\": {\"max_file_size\": 0}}}",
			  "feature.fs.max_file_size: must be a positive number of bytes");
	expect_load_error("{\"feature\": {\"fs\": {\"max_file_size\": \"12x\"}}}",
			  "feature.fs.max_file_size: bad size \"12x\"");
	expect_load_error(
	    "{\"feature\": {\"fs\": {\"max_file_size\": true}}}",
	    "feature.fs.max_file_size: expected a number or a size string, got boolean");
}

static void test_config_cache_ttl(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	assert_int_equal(load(&c, "{}", &err), 0);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_int_equal(c.feature.fs.cache_ttl_ms, POLICY_FS_CACHE_TTL_MS_DEFAULT);
	policy_config_free(&c);
	/* 0 is a setting (never reuse a read), not "unset" */
	assert_int_equal(load(&c, "{\"feature\": {\"fs\": {\"cache_ttl_ms\": 0}}}", &err), 0);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_true(c.feature.fs.cache_ttl_set);
	assert_int_equal(c.feature.fs.cache_ttl_ms, 0);
	/* a later file (or flags) wins */
	struct policy_config over;
	assert_int_equal(load(&over, "{\"feature\": {\"fs\": {\"cache_ttl_ms\": 750}}}", &err), 0);
	assert_int_equal(policy_config_merge(&c, &over, &err), 0);
	assert_int_equal(c.feature.fs.cache_ttl_ms, 750);
	policy_config_free(&over);
	policy_config_free(&c);
	expect_load_error("{\"feature\": {\"fs\": {\"cache_ttl_ms\": 60001}}}",
			  "feature.fs.cache_ttl_ms: must be 0 to 60000 milliseconds");
	expect_load_error("{\"feature\": {\"fs\": {\"cache_ttl_ms\": \"5s\"}}}",
			  "feature.fs.cache_ttl_ms: expected a number of milliseconds, got string");
}

static void test_config_unknown_keys(void **state)
{
	(void)state;
	expect_load_error("{\"tagret\": \"pod/web\"}", "t.json: unknown key tagret");
	expect_load_error("{\"agent\": {\"port\": 1}}", "unknown key agent.port");
	expect_load_error("{\"feature\": {\"fs\": {\"mdoe\": \"read\"}}}",
			  "unknown key feature.fs.mdoe");
	expect_load_error("{\"feature\": {\"fs\": {\"mdoe\": \"read\"}}}",
			  "(known here: mode, read_only, read_write, local, not_found, "
			  "max_file_size, cache_ttl_ms)");
	expect_load_error("{\"feature\": {\"env\": {\"includes\": []}}}",
			  "unknown key feature.env.includes");
	expect_load_error("{\"feature\": {\"network\": {\"dsn\": true}}}",
			  "unknown key feature.network.dsn");
	expect_load_error("{\"feature\": {\"network\": {\"outgoing\": {\"tpc\": true}}}}",
			  "unknown key feature.network.outgoing.tpc");
	expect_load_error(
	    "{\"feature\": {\"network\": {\"outgoing\": {\"filter\": {\"remotes\": []}}}}}",
	    "unknown key feature.network.outgoing.filter.remotes");
	expect_load_error("{\"feature\": {\"incoming\": {}}}", "unknown key feature.incoming");
}

static void test_config_wrong_types(void **state)
{
	(void)state;
	expect_load_error("{\"target\": 5}", "t.json: target: expected a string, got number");
	expect_load_error("{\"target\": \"\"}", "target: must not be empty");
	expect_load_error("{\"agent\": []}", "agent: expected an object, got array");
	expect_load_error("{\"agent\": {\"token_file\": true}}",
			  "agent.token_file: expected a string, got boolean");
	expect_load_error("{\"backend\": 1}", "backend: expected a string, got number");
	expect_load_error("{\"feature\": []}", "feature: expected an object, got array");
	expect_load_error("{\"feature\": {\"env\": 3}}",
			  "feature.env: expected an object or a boolean, got number");
	expect_load_error(
	    "{\"feature\": {\"env\": {\"include\": 3}}}",
	    "feature.env.include: expected a string or an array of strings, got number");
	expect_load_error("{\"feature\": {\"env\": {\"override\": {\"K\": 1}}}}",
			  "feature.env.override.K: expected a string, got number");
	expect_load_error("{\"feature\": {\"env\": {\"override\": []}}}",
			  "feature.env.override: expected an object, got array");
	expect_load_error("{\"feature\": {\"fs\": {\"mode\": 2}}}",
			  "feature.fs.mode: expected a string, got number");
	expect_load_error("{\"feature\": {\"fs\": 1}}",
			  "feature.fs: expected an object or a mode string, got number");
	expect_load_error("{\"feature\": {\"fs\": {\"read_only\": [\"^/a\", 1]}}}",
			  "feature.fs.read_only[1]: expected a string, got number");
	expect_load_error("{\"feature\": {\"fs\": {\"local\": [\"\"]}}}",
			  "feature.fs.local[0]: must not be empty");
	expect_load_error("{\"feature\": {\"network\": {\"dns\": \"yes\"}}}",
			  "feature.network.dns: expected a boolean, got string");
	expect_load_error("{\"feature\": {\"network\": {\"outgoing\": {\"udp\": 0}}}}",
			  "feature.network.outgoing.udp: expected a boolean, got number");
	expect_load_error("{\"feature\": {\"network\": {\"outgoing\": {\"filter\": []}}}}",
			  "feature.network.outgoing.filter: expected an object, got array");
	expect_load_error(
	    "{\"feature\": {\"network\": {\"outgoing\": {\"filter\": {\"local\": {}}}}}}",
	    "feature.network.outgoing.filter.local: expected a string or an array of strings, "
	    "got object");
	expect_load_error("[]", "expected a JSON object at the top, got array");
}

static void test_config_bad_values(void **state)
{
	(void)state;
	expect_load_error("{\"feature\": {\"fs\": {\"mode\": \"rwx\"}}}",
			  "feature.fs.mode: unknown mode \"rwx\"");
	expect_load_error("{\"feature\": {\"fs\": \"readonly\"}}", "feature.fs: unknown mode");
	expect_load_error("{\"backend\": \"docker\"}", "backend: unknown backend \"docker\"");
	expect_load_error("{\"feature\": {\"fs\": {\"local\": [\"^/ok\", \"(unclosed\"]}}}",
			  "t.json: feature.fs.local[1]: invalid regex \"(unclosed\"");
	expect_load_error(
	    "{\"feature\": {\"network\": {\"outgoing\": {\"filter\": {\"remote\": "
	    "[\"10.0.0.0/8\", \"meow://x\"]}}}}}",
	    "feature.network.outgoing.filter.remote[1]: \"meow://x\": unknown protocol");
	expect_load_error("{\"feature\": {\"network\": {\"outgoing\": {\"filter\": "
			  "{\"remote\": [\":1\"], \"local\": [\":2\"]}}}}}",
			  "feature.network.outgoing.filter: set either remote or local, not both");
	expect_load_error("{\"agent\": {\"unix\": \"/s\", \"address\": \"h:1\"}}",
			  "agent: set either unix or address, not both");
	expect_load_error(
	    "{\"feature\": {\"env\": {\"override\": {\"A=B\": \"x\"}}}}",
	    "feature.env.override.A=B: a variable name cannot be empty or contain '='");
	/* JSON syntax: position reported, strict parsing */
	expect_load_error("{\n  \"target\": \"pod/web\",\n  oops\n}", "t.json:3:");
	expect_load_error("{\"target\": \"pod/web\"} trailing", "invalid JSON");
	expect_load_error("{\"target\": \"pod/web\"", "invalid JSON");
	expect_load_error("", "invalid JSON");
	expect_load_error("{\"target\": 'pod/web'}", "invalid JSON");
}

static void test_config_shorthands(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	assert_int_equal(load(&c,
			      "{\"feature\": {\"fs\": \"write\", \"env\": false, "
			      "\"network\": {\"outgoing\": false}}}",
			      &err),
			 0);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_int_equal(c.feature.fs.mode, POLICY_FS_MODE_WRITE);
	assert_int_equal(c.feature.env.enabled, POLICY_TRI_FALSE);
	assert_int_equal(c.feature.network.outgoing.tcp, POLICY_TRI_FALSE);
	assert_int_equal(c.feature.network.outgoing.udp, POLICY_TRI_FALSE);
	policy_config_free(&c);

	/* mirrord's "A;B" lists for env, a single string for a regex list, null as unset */
	assert_int_equal(load(&c,
			      "{\"target\": null, \"feature\": {\"env\": {\"include\": \"A;B_*;\", "
			      "\"exclude\": \"SECRET\"}, \"fs\": {\"local\": \"a;b\", "
			      "\"mode\": \"localwithoverrides\"}}}",
			      &err),
			 0);
	assert_null(c.target);
	assert_int_equal(c.feature.env.include.len, 2);
	assert_string_equal(c.feature.env.include.items[1], "B_*");
	assert_int_equal(c.feature.env.exclude.len, 1);
	assert_int_equal(c.feature.fs.local.len, 1);
	assert_string_equal(c.feature.fs.local.items[0], "a;b");
	assert_int_equal(c.feature.fs.mode, POLICY_FS_MODE_LOCAL_WITH_OVERRIDES);
	policy_config_free(&c);

	/* an empty filter object: no filter */
	assert_int_equal(
	    load(&c, "{\"feature\": {\"network\": {\"outgoing\": {\"filter\": {}}}}}", &err), 0);
	assert_int_equal(c.feature.network.outgoing.filter_kind, POLICY_NET_FILTER_NONE);
	policy_config_free(&c);
}

static void test_config_merge(void **state)
{
	(void)state;
	struct policy_config file, flags;
	struct hm_err err = {0};
	assert_int_equal(
	    load(&file,
		 "{\"target\": \"pod/web\", \"agent\": {\"address\": \"10.0.0.1:7070\", "
		 "\"token_file\": \"/t\"}, \"backend\": \"ptrace\", \"feature\": {"
		 "\"env\": {\"include\": [\"A\"], \"override\": {\"X\": \"file\", "
		 "\"Y\": \"file\"}}, \"fs\": {\"mode\": \"write\", \"local\": [\"^/l\"], "
		 "\"read_only\": [\"^/r\"]}, \"network\": {\"outgoing\": {\"filter\": "
		 "{\"local\": [\":1\"]}}, \"dns\": false}}}",
		 &err),
	    0);
	policy_config_init(&flags);
	flags.target = strdup("pod/api");
	flags.agent.unix_path = strdup("/tmp/agent.sock");
	flags.backend = TRACER_BACKEND_SECCOMP;
	flags.backend_set = true;
	flags.feature.fs.mode = POLICY_FS_MODE_READ;
	assert_int_equal(policy_strv_push(&flags.feature.fs.local, "^/flag", &err), 0);
	assert_int_equal(policy_strv_push_split(&flags.feature.env.include, "B;C", ';', &err), 0);
	assert_int_equal(policy_config_env_override(&flags, "Y=flag", &err), 0);
	assert_int_equal(policy_config_env_override(&flags, "Z=a=b", &err), 0);
	assert_true(policy_config_env_override(&flags, "=v", &err) < 0);
	assert_true(policy_config_env_override(&flags, "novalue", &err) < 0);
	flags.feature.network.outgoing.filter_kind = POLICY_NET_FILTER_REMOTE;
	assert_int_equal(
	    policy_strv_push(&flags.feature.network.outgoing.filter, "10.0.0.0/8", &err), 0);

	assert_int_equal(policy_config_merge(&file, &flags, &err), 0);
	assert_int_equal(policy_config_finalize(&file, &err), 0);
	assert_string_equal(file.target, "pod/api");
	/* --agent-unix replaces the file's address: one endpoint */
	assert_string_equal(file.agent.unix_path, "/tmp/agent.sock");
	assert_null(file.agent.address);
	assert_string_equal(file.agent.token_file, "/t"); /* not given by a flag: kept */
	assert_int_equal(file.backend, TRACER_BACKEND_SECCOMP);
	assert_int_equal(file.feature.fs.mode, POLICY_FS_MODE_READ);
	assert_int_equal(file.feature.fs.local.len, 1); /* lists are replaced */
	assert_string_equal(file.feature.fs.local.items[0], "^/flag");
	assert_int_equal(file.feature.fs.read_only.len, 1); /* not given: kept */
	assert_int_equal(file.feature.env.include.len, 2);
	assert_string_equal(file.feature.env.include.items[0], "B");
	/* overrides merge per key, the flag winning */
	assert_int_equal(file.feature.env.override.len, 3);
	assert_string_equal(file.feature.env.override.items[0], "X=file");
	assert_string_equal(file.feature.env.override.items[1], "Y=flag");
	assert_string_equal(file.feature.env.override.items[2], "Z=a=b");
	assert_int_equal(file.feature.network.outgoing.filter_kind, POLICY_NET_FILTER_REMOTE);
	assert_int_equal(file.feature.network.outgoing.filter.len, 1);
	assert_string_equal(file.feature.network.outgoing.filter.items[0], "10.0.0.0/8");
	assert_int_equal(file.feature.network.dns, POLICY_TRI_FALSE); /* kept */
	policy_config_free(&file);
	policy_config_free(&flags);

	/* finalize catches what flags alone bring in */
	policy_config_init(&flags);
	assert_int_equal(policy_strv_push(&flags.feature.fs.not_found, "[", &err), 0);
	assert_true(policy_config_finalize(&flags, &err) < 0);
	assert_non_null(strstr(err.msg, "feature.fs.not_found[0]: invalid regex"));
	policy_config_free(&flags);
	policy_config_init(&flags);
	flags.feature.network.outgoing.filter_kind = POLICY_NET_FILTER_LOCAL;
	assert_int_equal(policy_strv_push(&flags.feature.network.outgoing.filter, "x/8", &err), 0);
	assert_true(policy_config_finalize(&flags, &err) < 0);
	assert_non_null(strstr(err.msg, "feature.network.outgoing.filter.local[0]"));
	policy_config_free(&flags);
}

static void test_config_file_errors(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	policy_config_init(&c);
	assert_true(policy_config_load_file(&c, "/nonexistent/trace.json", &err) < 0);
	assert_non_null(strstr(err.msg, "/nonexistent/trace.json"));
	assert_int_equal(err.code, ENOENT);
	policy_config_free(&c);

	char path[] = "/tmp/hermit-policy-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char text[] = "{\"feature\": {\"fs\": {\"mode\": \"write\", \"rw\": 1}}}";
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
	close(fd);
	policy_config_init(&c);
	assert_true(policy_config_load_file(&c, path, &err) < 0);
	char want[256];
	snprintf(want, sizeof(want), "%s: unknown key feature.fs.rw", path);
	assert_non_null(strstr(err.msg, want));
	policy_config_free(&c);
	unlink(path);
}

static void test_config_enum_names(void **state)
{
	(void)state;
	enum policy_fs_mode m;
	enum tracer_backend b;
	assert_int_equal(policy_fs_mode_parse("localwithoverrides", &m), 0);
	assert_int_equal(m, POLICY_FS_MODE_LOCAL_WITH_OVERRIDES);
	assert_int_equal(policy_fs_mode_parse("write", &m), 0);
	assert_int_equal(m, POLICY_FS_MODE_WRITE);
	assert_true(policy_fs_mode_parse("Read", &m) < 0);
	assert_int_equal(tracer_backend_parse("ptrace", &b), 0);
	assert_int_equal(b, TRACER_BACKEND_PTRACE);
	assert_string_equal(tracer_backend_name(TRACER_BACKEND_AUTO), "auto");
	assert_true(tracer_backend_parse("", &b) < 0);
}

/* ================================================================ files */

static void test_fs_normalize(void **state)
{
	(void)state;
	char out[64];
	static const struct {
		const char *base, *in, *want;
	} cases[] = {
	    {NULL, "/", "/"},
	    {NULL, "/a/b/c", "/a/b/c"},
	    {NULL, "//a///b//", "/a/b"},
	    {NULL, "/a/./b/.", "/a/b"},
	    {NULL, "/a/b/../c", "/a/c"},
	    {NULL, "/a/b/../../..", "/"},
	    {NULL, "/../../etc/hosts", "/etc/hosts"},
	    {NULL, "/a/..b/c..", "/a/..b/c.."},
	    {NULL, "/...", "/..."},
	    {"/home/u", "src/../x", "/home/u/x"},
	    {"/home/u/", "./", "/home/u"},
	    {"/home/u", "../../../etc", "/etc"},
	    {"/", "a", "/a"},
	    {"/ignored", "/abs", "/abs"},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(cases); i++) {
		int n = policy_fs_path_normalize(cases[i].base, cases[i].in, out, sizeof(out));
		if (n < 0 || strcmp(out, cases[i].want) != 0 || (size_t)n != strlen(out))
			fail_msg("normalize(%s, %s) = %d \"%s\", want \"%s\"", cases[i].base,
				 cases[i].in, n, out, cases[i].want);
	}
	assert_int_equal(policy_fs_path_normalize(NULL, "", out, sizeof(out)), -EINVAL);
	assert_int_equal(policy_fs_path_normalize(NULL, "rel", out, sizeof(out)), -EINVAL);
	assert_int_equal(policy_fs_path_normalize("rel", "x", out, sizeof(out)), -EINVAL);
	assert_int_equal(policy_fs_path_normalize(NULL, "/abcdef", out, 7), -ENAMETOOLONG);
	assert_int_equal(policy_fs_path_normalize(NULL, "/abcdef", out, 8), 7);
	assert_int_equal(policy_fs_path_normalize(NULL, "/", out, 1), -ENAMETOOLONG);
}

struct fs_case {
	const char *path;
	enum policy_fs_access access;
	enum policy_fs_verdict want;
};

#define R POLICY_FS_ACCESS_READ
#define W POLICY_FS_ACCESS_WRITE
#define S POLICY_FS_ACCESS_STAT
#define LOCAL POLICY_FS_LOCAL
#define REMOTE POLICY_FS_REMOTE
#define RW POLICY_FS_REMOTE_WRITE
#define NF POLICY_FS_NOT_FOUND

static void check_fs(const struct policy_fs *p, const char *label, const struct fs_case *cases,
		     size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *why = NULL;
		enum policy_fs_verdict v =
		    policy_fs_decide(p, cases[i].path, cases[i].access, &why);
		if (v != cases[i].want)
			fail_msg("%s: %s (%s) -> %s by \"%s\", want %s", label, cases[i].path,
				 cases[i].access == W	? "write"
				 : cases[i].access == S ? "stat"
							: "read",
				 policy_fs_verdict_name(v), why,
				 policy_fs_verdict_name(cases[i].want));
		assert_non_null(why);
		/* without a rule to name (trace-run below debug level), the same verdict */
		enum policy_fs_verdict fast =
		    policy_fs_decide(p, cases[i].path, cases[i].access, NULL);
		if (fast != v)
			fail_msg("%s: %s -> %s with why, %s without", label, cases[i].path,
				 policy_fs_verdict_name(v), policy_fs_verdict_name(fast));
	}
}

static struct policy_fs *fs_policy(enum policy_fs_mode mode, const struct policy_strv *read_only,
				   const struct policy_strv *read_write,
				   const struct policy_strv *local,
				   const struct policy_strv *not_found, bool dns)
{
	struct policy_fs_opts o = {
	    .mode = mode,
	    .read_only = read_only,
	    .read_write = read_write,
	    .local = local,
	    .not_found = not_found,
	    .program = "/home/dev/proj/bin/app",
	    .cwd = "/home/dev/proj",
	    .home = "/home/dev",
	    .tmpdir = "/var/folders/tmp",
	    .dns_remote = dns,
	};
	struct policy_fs *p = NULL;
	struct hm_err err = {0};
	if (policy_fs_new(&o, &p, &err) < 0)
		fail_msg("%s", err.msg);
	return p;
}

/* Paths every non-local mode agrees on. */
static const struct fs_case common_defaults[] = {
    {"/etc/resolv.conf", R, REMOTE},
    {"/etc/resolv.conf", S, REMOTE},
    {"/etc/hosts", R, REMOTE},
    {"/etc/hostname", R, REMOTE},
    {"/etc/nsswitch.conf", R, REMOTE},
    {"/var/run/secrets/kubernetes.io/serviceaccount/token", R, REMOTE},
    {"/run/secrets/db-password", R, REMOTE},
    {"/run/secrets", S, REMOTE},
    {"/proc/self/maps", R, LOCAL},
    {"/proc", S, LOCAL},
    {"/sys/fs/cgroup/cpu.max", R, LOCAL},
    {"/dev/null", W, LOCAL},
    {"/dev/urandom", R, LOCAL},
    {"/lib/x86_64-linux-gnu/libc.so.6", R, LOCAL},
    {"/lib64/ld-linux-x86-64.so.2", R, LOCAL},
    {"/usr/lib/x86_64-linux-gnu/libssl.so.3", R, LOCAL},
    {"/usr/lib/python3.11/os.py", R, LOCAL},
    {"/usr/bin/env", S, LOCAL},
    {"/bin/sh", R, LOCAL},
    {"/sbin/ldconfig", R, LOCAL},
    {"/usr/sbin/nologin", R, LOCAL},
    {"/usr/share/zoneinfo/UTC", R, LOCAL},
    {"/usr/local/lib/libfoo.so", R, LOCAL},
    {"/usr/local/bin/tool", S, LOCAL},
    {"/etc/ld.so.cache", R, LOCAL},
    {"/etc/ld.so.preload", S, LOCAL},
    {"/etc/ld.so.conf.d/libc.conf", R, LOCAL},
    {"/etc/localtime", R, LOCAL},
    {"/etc/passwd", R, LOCAL},
    {"/etc/group", R, LOCAL},
    {"/etc/alternatives/java", R, LOCAL},
    /* configuration that runs commands or loads code stays local */
    {"/etc/gitconfig", R, LOCAL},
    {"/etc/ssh/ssh_config", R, LOCAL},
    {"/etc/ssh/ssh_config.d/evil.conf", R, LOCAL},
    {"/etc/profile", R, LOCAL},
    {"/etc/profile.d/x.sh", R, LOCAL},
    {"/etc/bash.bashrc", R, LOCAL},
    {"/etc/ssl/openssl.cnf", R, LOCAL},
    {"/etc/pam.d/sudo", R, LOCAL},
    {"/etc/gitconfig.d/x", R, REMOTE},
    {"/run/user/1000/bus", R, LOCAL},
    {"/tmp/x", W, LOCAL},
    {"/tmp", S, LOCAL},
    {"/var/tmp/y", R, LOCAL},
    {"/var/folders/tmp/z", R, LOCAL},
    {"/opt/app/lib/libx.so.1.2", R, LOCAL},
    {"/opt/venv/lib/site.pth", R, LOCAL},
    {"/", S, LOCAL},
    {"/home/dev/proj/bin/app", R, LOCAL},
    {"/home/dev/proj", S, LOCAL},
    {"/home/dev/proj/src/main.go", W, LOCAL},
    {"/home/dev/.bashrc", R, LOCAL},
    {"/home/dev/.kube/config", R, NF},
    {"/home/dev/.kube", S, NF},
    {"/home/dev/.aws/credentials", R, NF},
    {"/home/dev/.azure/x", R, NF},
    {"/home/dev/.config/gcloud/creds.json", R, NF},
    {"/home/dev/.config/other", R, LOCAL},
    {"/home/dev/.kubernetes", R, LOCAL}, /* not ".kube" */
    {"/usr/src/app/package.json", S, REMOTE},
    {"/app/config.yaml", R, REMOTE},
    {"/etc/ssl/certs/ca-certificates.crt", R, REMOTE},
    {"/etc/config/settings.json", S, REMOTE},
    {"/home/other/file", R, REMOTE},
    {"/home/dev2/file", R, REMOTE},	   /* not under $HOME */
    {"/home/dev/projects/x", R, LOCAL},	   /* under $HOME, not the cwd */
    {"/home/dev/proj/bin/app2", R, LOCAL}, /* the cwd */
    {"/var/lib/app/state", R, REMOTE},
    {"/var/run/other.sock", R, LOCAL},
    /* lexical normalization first */
    {"/app/../etc/resolv.conf", R, REMOTE},
    {"//etc///hosts", R, REMOTE},
    {"/usr/lib/../../app/x", R, REMOTE},
    {"/tmp/../app/x", R, REMOTE},
    {"/proc/..", S, LOCAL},
    {"/home/dev/proj/../../../app", R, REMOTE},
    {"/etc/./ld.so.cache", R, LOCAL},
    {"etc/hosts", R, LOCAL}, /* relative: the caller resolves first */
    {"", R, LOCAL},
};

static void test_fs_defaults_read_mode(void **state)
{
	(void)state;
	struct policy_fs *p = fs_policy(POLICY_FS_MODE_UNSET, NULL, NULL, NULL, NULL, true);
	check_fs(p, "read (default)", common_defaults, HM_ARRAY_SIZE(common_defaults));
	static const struct fs_case read_only_mode[] = {
	    {"/app/config.yaml", W, LOCAL}, /* writes stay local in read mode */
	    {"/app/new-file", W, LOCAL},    {"/etc/resolv.conf", W, LOCAL},
	    {"/run/secrets/x", W, LOCAL},   {"/usr/lib/libc.so", W, LOCAL},
	    {"/app/data", S, REMOTE},
	};
	check_fs(p, "read", read_only_mode, HM_ARRAY_SIZE(read_only_mode));
	const char *why;
	policy_fs_decide(p, "/app/x", W, &why);
	assert_string_equal(why, "feature.fs.mode read: writes stay local");
	policy_fs_decide(p, "/lib/libc.so.6", R, &why);
	assert_string_equal(why, "default local: system binaries and libraries");
	policy_fs_decide(p, "/home/dev/.kube/config", R, &why);
	assert_string_equal(why, "default not found: local cloud credentials");
	policy_fs_free(p);
}

static void test_fs_defaults_write_mode(void **state)
{
	(void)state;
	struct policy_fs *p = fs_policy(POLICY_FS_MODE_WRITE, NULL, NULL, NULL, NULL, true);
	check_fs(p, "write", common_defaults, HM_ARRAY_SIZE(common_defaults));
	static const struct fs_case writes[] = {
	    {"/app/config.yaml", W, RW},
	    {"/app/new-dir", W, RW},
	    {"/app/config.yaml", R, REMOTE},
	    {"/etc/resolv.conf", W, RW}, /* default remote covers reads; writes fall to the mode */
	    {"/usr/lib/libc.so", W, LOCAL},
	    {"/home/dev/proj/out.txt", W, LOCAL},
	    {"/tmp/out", W, LOCAL},
	};
	check_fs(p, "write", writes, HM_ARRAY_SIZE(writes));
	policy_fs_free(p);
}

static void test_fs_local_modes(void **state)
{
	(void)state;
	struct policy_strv ro = {0}, rw = {0}, local = {0}, nf = {0};
	struct hm_err err = {0};
	assert_int_equal(policy_strv_push(&ro, "^/srv/ro/", &err), 0);
	assert_int_equal(policy_strv_push(&rw, "^/srv/rw/", &err), 0);
	assert_int_equal(policy_strv_push(&local, "^/srv/", &err), 0);
	assert_int_equal(policy_strv_push(&nf, "^/srv/nf/", &err), 0);

	struct policy_fs *p = fs_policy(POLICY_FS_MODE_LOCAL, &ro, &rw, &local, &nf, true);
	static const struct fs_case all_local[] = {
	    {"/etc/resolv.conf", R, LOCAL},
	    {"/run/secrets/x", R, LOCAL},
	    {"/app/config", R, LOCAL},
	    {"/srv/ro/a", R, LOCAL},
	    {"/srv/rw/a", W, LOCAL},
	    {"/srv/nf/a", R, LOCAL},
	    {"/home/dev/.kube/config", R, LOCAL},
	};
	check_fs(p, "local", all_local, HM_ARRAY_SIZE(all_local));
	policy_fs_free(p);

	p = fs_policy(POLICY_FS_MODE_LOCAL_WITH_OVERRIDES, &ro, &rw, &local, &nf, true);
	static const struct fs_case overrides[] = {
	    {"/app/config", R, LOCAL},
	    {"/app/config", W, LOCAL},
	    {"/etc/resolv.conf", R, REMOTE},
	    {"/etc/hostname", S, REMOTE},
	    {"/run/secrets/x", R, REMOTE},
	    {"/srv/ro/a", R, REMOTE},
	    {"/srv/ro/a", W, LOCAL},
	    {"/srv/rw/a", R, REMOTE},
	    {"/srv/rw/a", W, RW},
	    {"/srv/nf/a", R, NF},
	    {"/srv/nf/a", W, NF},
	    {"/srv/other", R, LOCAL},
	    {"/home/dev/.aws/config", R, NF},
	};
	check_fs(p, "localwithoverrides", overrides, HM_ARRAY_SIZE(overrides));
	policy_fs_free(p);
	policy_strv_clear(&ro);
	policy_strv_clear(&rw);
	policy_strv_clear(&local);
	policy_strv_clear(&nf);
}

/* The precedence of the user's lists, after mirrord's filter tests. */
static void test_fs_lists_precedence(void **state)
{
	(void)state;
	struct policy_strv ro = {0}, rw = {0}, local = {0}, nf = {0};
	struct hm_err err = {0};
	assert_int_equal(policy_strv_push(&rw, "/pain/read_write.*\\.a", &err), 0);
	assert_int_equal(policy_strv_push(&rw, "^/usr/lib/app/", &err), 0);
	assert_int_equal(policy_strv_push(&rw, "^/both/", &err), 0);
	assert_int_equal(policy_strv_push(&ro, "/pain/read_only.*\\.a", &err), 0);
	assert_int_equal(policy_strv_push(&ro, "^/etc/passwd$", &err), 0);
	assert_int_equal(policy_strv_push(&ro, "\\.kube/", &err), 0);
	assert_int_equal(policy_strv_push(&ro, "^/SRV/CaSe", &err), 0);
	assert_int_equal(policy_strv_push(&ro, "(?-i)^/exact/Case", &err), 0);
	assert_int_equal(policy_strv_push(&ro, "^/ro-and-local/", &err), 0);
	assert_int_equal(policy_strv_push(&local, "/pain/local.*\\.a", &err), 0);
	assert_int_equal(policy_strv_push(&local, "resolv", &err), 0);
	assert_int_equal(policy_strv_push(&local, "\\.aws/", &err), 0);
	assert_int_equal(policy_strv_push(&local, "^/ro-and-local/", &err), 0);
	assert_int_equal(policy_strv_push(&nf, "/pain/not_found.*\\.a", &err), 0);
	assert_int_equal(policy_strv_push(&nf, "^/both/", &err), 0);

	static const struct fs_case read_mode[] = {
	    {"/a/test.a", R, REMOTE},
	    {"/a/test.a", W, LOCAL},
	    {"/pain/read_write/test.a", R, REMOTE},
	    {"/pain/read_write/test.a", W, RW}, /* read_write writes even in read mode */
	    {"/pain/read_only/test.a", R, REMOTE},
	    {"/pain/read_only/test.a", W, LOCAL},
	    {"/pain/local/test.a", R, LOCAL},
	    {"/pain/local/test.a", W, LOCAL},
	    {"/pain/not_found/test.a", R, NF},
	    {"/pain/not_found/test.a", W, NF},
	    {"/pain/not_found/test.a", S, NF},
	    {"/both/x", R, NF},			/* not_found beats read_write */
	    {"/usr/lib/app/config", R, REMOTE}, /* read_write beats the default local */
	    {"/usr/lib/app/config", W, RW},
	    {"/etc/passwd", R, REMOTE}, /* read_only beats the default local */
	    {"/etc/passwd", W, LOCAL},
	    {"/etc/resolv.conf", R, LOCAL},	   /* local beats the default remote */
	    {"/home/dev/.kube/config", R, REMOTE}, /* read_only beats the default not-found */
	    {"/home/dev/.aws/config", R, NF},	   /* local does not (as mirrord) */
	    {"/srv/case/x", R, REMOTE},
	    {"/ro-and-local/x", R, REMOTE}, /* read_only is checked before local */
	    {"/ro-and-local/x", W, LOCAL},
	};
	struct policy_fs *p = fs_policy(POLICY_FS_MODE_READ, &ro, &rw, &local, &nf, true);
	check_fs(p, "read + lists", read_mode, HM_ARRAY_SIZE(read_mode));
	const char *why;
	assert_int_equal(policy_fs_decide(p, "/etc/passwd", R, &why), REMOTE);
	assert_string_equal(why, "feature.fs.read_only[1]");
	assert_int_equal(policy_fs_decide(p, "/both/x", R, &why), NF);
	assert_string_equal(why, "feature.fs.not_found[1]");
	assert_int_equal(policy_fs_decide(p, "/x/resolv", R, &why), LOCAL);
	assert_string_equal(why, "feature.fs.local[1]");
	/* user patterns are case insensitive, unless they opt out */
	policy_fs_decide(p, "/srv/case/x", R, &why);
	assert_string_equal(why, "feature.fs.read_only[3]");
	policy_fs_decide(p, "/exact/Case/x", R, &why);
	assert_string_equal(why, "feature.fs.read_only[4]");
	policy_fs_decide(p, "/exact/case/x", R, &why);
	assert_string_equal(why, "feature.fs.mode read");
	policy_fs_free(p);

	static const struct fs_case write_mode[] = {
	    {"/a/test.a", W, RW},
	    {"/pain/read_only/test.a", W, LOCAL}, /* read_only never writes remotely */
	    {"/pain/read_write/test.a", W, RW},
	    {"/pain/local/test.a", W, LOCAL},
	    {"/opt/test.a", W, RW},
	};
	p = fs_policy(POLICY_FS_MODE_WRITE, &ro, &rw, &local, &nf, true);
	check_fs(p, "write + lists", write_mode, HM_ARRAY_SIZE(write_mode));
	policy_fs_free(p);

	/* a bad regex names its list and index */
	struct policy_strv bad = {0};
	assert_int_equal(policy_strv_push(&bad, "ok", &err), 0);
	assert_int_equal(policy_strv_push(&bad, "a{2,1}", &err), 0);
	struct policy_fs_opts o = {.read_write = &bad};
	assert_true(policy_fs_new(&o, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "feature.fs.read_write[1]: invalid regex \"a{2,1}\""));
	policy_strv_clear(&bad);

	policy_strv_clear(&ro);
	policy_strv_clear(&rw);
	policy_strv_clear(&local);
	policy_strv_clear(&nf);
}

static void test_fs_dns_off_and_missing_dirs(void **state)
{
	(void)state;
	struct policy_fs *p = fs_policy(POLICY_FS_MODE_READ, NULL, NULL, NULL, NULL, false);
	static const struct fs_case cases[] = {
	    {"/etc/resolv.conf", R, LOCAL},
	    {"/etc/hosts", R, LOCAL},
	    {"/etc/nsswitch.conf", R, LOCAL},
	    {"/etc/hostname", R, REMOTE}, /* not name resolution */
	    {"/run/secrets/x", R, REMOTE},
	};
	check_fs(p, "dns off", cases, HM_ARRAY_SIZE(cases));
	policy_fs_free(p);

	/* cwd or $HOME at "/" must not make everything local; NULLs are skipped */
	struct policy_fs_opts o = {
	    .cwd = "/", .home = "/", .program = NULL, .tmpdir = "rel", .dns_remote = true};
	struct hm_err err = {0};
	assert_int_equal(policy_fs_new(&o, &p, &err), 0);
	static const struct fs_case root[] = {
	    {"/app/x", R, REMOTE},
	    {"/", S, LOCAL},
	    {"/.kube/config", R, NF}, /* $HOME's credentials are still hidden */
	    {"/home/x/.kube", R, REMOTE},
	};
	check_fs(p, "cwd=/", root, HM_ARRAY_SIZE(root));
	policy_fs_free(p);
}

/* ================================================================ outgoing */

static const char *verdict_name(enum policy_net_verdict v)
{
	return v == POLICY_NET_REMOTE ? "remote" : "local";
}

static struct sockaddr_storage addr_of(const char *ip, uint16_t port, socklen_t *len)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		*len = sizeof(*in);
	} else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
	} else {
		fail_msg("bad test address %s", ip);
	}
	return ss;
}

struct net_case {
	enum policy_net_proto proto;
	const char *ip;
	uint16_t port;
	enum policy_net_verdict want;
};

#define TCP POLICY_NET_TCP
#define UDP POLICY_NET_UDP
#define NL POLICY_NET_LOCAL
#define NR POLICY_NET_REMOTE

static void check_net(const struct policy_net *p, const char *label, const struct net_case *cases,
		      size_t n)
{
	for (size_t i = 0; i < n; i++) {
		socklen_t len;
		struct sockaddr_storage ss = addr_of(cases[i].ip, cases[i].port, &len);
		const char *why = NULL;
		enum policy_net_verdict v =
		    policy_net_decide(p, cases[i].proto, (struct sockaddr *)&ss, len, &why);
		if (v != cases[i].want)
			fail_msg("%s: %s %s:%u -> %s by \"%s\", want %s", label,
				 cases[i].proto == TCP ? "tcp" : "udp", cases[i].ip, cases[i].port,
				 verdict_name(v), why, verdict_name(cases[i].want));
		assert_non_null(why);
	}
}

static struct policy_net *net_policy(bool tcp, bool udp, bool dns, enum policy_net_filter_kind kind,
				     const char *const *specs, struct policy_dns_table *names)
{
	struct policy_strv filter = {0};
	struct hm_err err = {0};
	for (size_t i = 0; specs && specs[i]; i++)
		assert_int_equal(policy_strv_push(&filter, specs[i], &err), 0);
	struct policy_net_opts o = {.tcp = tcp,
				    .udp = udp,
				    .dns = dns,
				    .filter_kind = kind,
				    .filter = &filter,
				    .names = names};
	struct policy_net *p;
	if (policy_net_new(&o, &p, &err) < 0)
		fail_msg("%s", err.msg);
	policy_strv_clear(&filter); /* the policy keeps its own parsed copy */
	return p;
}

static void test_net_spec_parse(void **state)
{
	(void)state;
	struct policy_net_spec s;
	struct hm_err err = {0};
	static const uint8_t v4net10[16] = {[10] = 0xff, [11] = 0xff, [12] = 10};

	assert_int_equal(policy_net_spec_parse("10.0.0.0/8", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_CIDR);
	assert_true(s.v4);
	assert_int_equal(s.prefix, 104);
	assert_memory_equal(s.addr, v4net10, 16);
	assert_int_equal(s.port, 0);
	assert_int_equal(s.protocols, POLICY_NET_TCP | POLICY_NET_UDP);

	assert_int_equal(policy_net_spec_parse("10.1.2.3/8", &s, &err), 0); /* host bits dropped */
	assert_memory_equal(s.addr, v4net10, 16);

	assert_int_equal(policy_net_spec_parse("tcp://db.svc:5432", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_NAME);
	assert_string_equal(s.name, "db.svc");
	assert_int_equal(s.port, 5432);
	assert_int_equal(s.protocols, POLICY_NET_TCP);

	assert_int_equal(policy_net_spec_parse(":53", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_ANY);
	assert_int_equal(s.port, 53);

	assert_int_equal(policy_net_spec_parse("udp://1.1.1.1:53", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_CIDR);
	assert_int_equal(s.prefix, 128);
	assert_int_equal(s.protocols, POLICY_NET_UDP);
	assert_int_equal(s.port, 53);

	assert_int_equal(policy_net_spec_parse("[::1]:80", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_CIDR);
	assert_false(s.v4);
	assert_int_equal(s.prefix, 128);
	assert_int_equal(s.addr[15], 1);
	assert_int_equal(s.port, 80);

	assert_int_equal(policy_net_spec_parse("[fd00::]/8:443", &s, &err), 0);
	assert_int_equal(s.prefix, 8);
	assert_int_equal(s.addr[0], 0xfd);
	assert_int_equal(s.port, 443);

	assert_int_equal(policy_net_spec_parse("fd00::/8", &s, &err), 0); /* bare IPv6: no port */
	assert_int_equal(s.prefix, 8);
	assert_int_equal(s.port, 0);
	assert_int_equal(policy_net_spec_parse("fe80::1", &s, &err), 0);
	assert_int_equal(s.prefix, 128);

	assert_int_equal(policy_net_spec_parse("[::ffff:10.0.0.0]/104", &s, &err), 0);
	assert_true(s.v4);
	assert_memory_equal(s.addr, v4net10, 16);

	assert_int_equal(policy_net_spec_parse("tcp://", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_ANY);
	assert_int_equal(s.port, 0);
	assert_int_equal(s.protocols, POLICY_NET_TCP);

	assert_int_equal(policy_net_spec_parse("ANY://:80", &s, &err), 0);
	assert_int_equal(s.protocols, POLICY_NET_TCP | POLICY_NET_UDP);
	assert_int_equal(policy_net_spec_parse("UDP://x:1", &s, &err), 0);
	assert_int_equal(s.protocols, POLICY_NET_UDP);

	assert_int_equal(policy_net_spec_parse("0.0.0.0:8080", &s, &err), 0); /* any address */
	assert_int_equal(s.kind, POLICY_NET_SPEC_ANY);
	assert_int_equal(s.port, 8080);
	assert_int_equal(policy_net_spec_parse("[::]:8080", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_ANY);
	assert_int_equal(policy_net_spec_parse("0.0.0.0/0", &s, &err), 0); /* every IPv4 */
	assert_int_equal(s.kind, POLICY_NET_SPEC_CIDR);
	assert_int_equal(s.prefix, 96);

	assert_int_equal(policy_net_spec_parse("DB.Default.SVC.", &s, &err), 0);
	assert_string_equal(s.name, "db.default.svc");
	assert_int_equal(policy_net_spec_parse("1password.com", &s, &err), 0);
	assert_int_equal(s.kind, POLICY_NET_SPEC_NAME);
	assert_int_equal(policy_net_spec_parse("_grpc._tcp.svc", &s, &err), 0);

	static const struct {
		const char *spec, *msg;
	} bad[] = {
	    {"", "empty filter"},
	    {"meow://x", "unknown protocol \"meow\""},
	    {"google.com/24", "a subnet needs an IP address"},
	    {"1.2.3.4/33", "at most /32"},
	    {"[fd00::]/129", "bad subnet prefix length"},
	    {"10.0.0.0/", "bad subnet prefix length"},
	    {"10.0.0.0/8x", "bad subnet prefix length"},
	    {"[zz::1]:80", "bad IPv6 address"},
	    {"[::1", "missing ']'"},
	    {"[::1]x", "unexpected \"x\""},
	    {"1.2.3.4:70000", "bad port"},
	    {"1.2.3.4:", "bad port"},
	    {":", "bad port"},
	    {"host:http", "bad port"},
	    {"udp://1.1.1.1:53x", "bad port"},
	    {"1.2.3", "bad IPv4 address"},
	    {"1.2.3.256", "bad IPv4 address"},
	    {"a..b", "bad host name"},
	    {"-", "bad host name"},
	    {"a-.b", "bad host name"},
	    {"a.-b", "bad host name"},
	    {"/8", "a subnet needs an address"},
	    {"[]", "a subnet needs an address"},
	    {"host name", "bad host name"},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(bad); i++) {
		int rc = policy_net_spec_parse(bad[i].spec, &s, &err);
		if (rc == 0 || !strstr(err.msg, bad[i].msg))
			fail_msg("spec \"%s\": rc %d, \"%s\", wanted \"%s\"", bad[i].spec, rc,
				 err.msg, bad[i].msg);
	}
}

static void test_net_no_filter(void **state)
{
	(void)state;
	struct policy_net *p = net_policy(true, true, true, POLICY_NET_FILTER_NONE, NULL, NULL);
	static const struct net_case cases[] = {
	    {TCP, "10.1.2.3", 80, NR},
	    {UDP, "10.1.2.3", 9999, NR},
	    {TCP, "2001:db8::1", 443, NR},
	    {TCP, "::ffff:10.1.2.3", 80, NR},
	    {TCP, "127.0.0.1", 80, NL},
	    {TCP, "127.5.5.5", 80, NL},
	    {UDP, "127.0.0.53", 53, NL}, /* loopback before DNS */
	    {TCP, "::1", 80, NL},
	    {TCP, "::ffff:127.0.0.1", 80, NL},
	    {TCP, "0.0.0.0", 80, NL},
	    {TCP, "::", 80, NL},
	    {TCP, "::ffff:0.0.0.0", 80, NL},
	    {TCP, "128.0.0.1", 80, NR}, /* 127/8 only */
	    {UDP, "10.96.0.10", 53, NR},
	};
	check_net(p, "no filter", cases, HM_ARRAY_SIZE(cases));

	/* not IP, or too short */
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	const char *why;
	assert_int_equal(policy_net_decide(p, TCP, (struct sockaddr *)&un, sizeof(un), &why), NL);
	assert_string_equal(why, "not an IP destination");
	socklen_t len;
	struct sockaddr_storage ss = addr_of("10.0.0.1", 80, &len);
	assert_int_equal(policy_net_decide(p, TCP, (struct sockaddr *)&ss, len - 1, NULL), NL);
	assert_int_equal(policy_net_decide(p, TCP, NULL, 0, NULL), NL);
	policy_net_free(p);
}

static void test_net_protocol_switches(void **state)
{
	(void)state;
	struct policy_net *p = net_policy(false, true, true, POLICY_NET_FILTER_NONE, NULL, NULL);
	static const struct net_case tcp_off[] = {
	    {TCP, "10.1.2.3", 80, NL},
	    {UDP, "10.1.2.3", 80, NR},
	    {TCP, "10.96.0.10", 53, NR}, /* DNS over TCP follows dns, not tcp */
	};
	check_net(p, "tcp off", tcp_off, HM_ARRAY_SIZE(tcp_off));
	policy_net_free(p);

	p = net_policy(true, false, true, POLICY_NET_FILTER_NONE, NULL, NULL);
	static const struct net_case udp_off[] = {
	    {TCP, "10.1.2.3", 80, NR},
	    {UDP, "10.1.2.3", 80, NL},
	    {UDP, "10.96.0.10", 53, NR},
	};
	check_net(p, "udp off", udp_off, HM_ARRAY_SIZE(udp_off));
	policy_net_free(p);

	p = net_policy(true, true, false, POLICY_NET_FILTER_NONE, NULL, NULL);
	static const struct net_case dns_off[] = {
	    {UDP, "10.96.0.10", 53, NL},
	    {TCP, "10.96.0.10", 53, NL},
	    {UDP, "10.96.0.10", 54, NR},
	};
	check_net(p, "dns off", dns_off, HM_ARRAY_SIZE(dns_off));
	policy_net_free(p);
}

static void test_net_remote_filter(void **state)
{
	(void)state;
	struct policy_dns_table *names;
	struct hm_err err = {0};
	assert_int_equal(policy_dns_table_new(0, &names, &err), 0);
	static const char *const specs[] = {"10.0.0.0/8",	 "[fd00::]/8", "tcp://db.svc:5432",
					    "udp://1.1.1.1:53",	 ":6379",      "tcp://cache",
					    "[2001:db8::5]:443", NULL};
	struct policy_net *p = net_policy(true, true, true, POLICY_NET_FILTER_REMOTE, specs, names);
	static const struct net_case before[] = {
	    {TCP, "10.1.2.3", 80, NR},	      {UDP, "10.255.255.255", 1, NR},
	    {TCP, "11.0.0.1", 80, NL},	      {TCP, "9.255.255.255", 80, NL},
	    {TCP, "::ffff:10.9.9.9", 80, NR}, /* v4-mapped IPv6 matches the IPv4 subnet */
	    {TCP, "fd00::1", 80, NR},	      {TCP, "fdff:ffff::1", 80, NR},
	    {TCP, "fe80::1", 80, NL},	      {TCP, "2001:db8::5", 443, NR},
	    {TCP, "2001:db8::5", 80, NL},     {TCP, "2001:db8::6", 443, NL},
	    {TCP, "172.16.0.5", 5432, NL}, /* db.svc not resolved yet */
	    {TCP, "192.168.1.1", 6379, NR},   {UDP, "192.168.1.1", 6379, NR},
	    {UDP, "8.8.8.8", 53, NR}, /* DNS goes remote whatever the remote list */
	    {TCP, "127.0.0.1", 6379, NL},
	};
	check_net(p, "remote filter", before, HM_ARRAY_SIZE(before));

	uint8_t db[4] = {172, 16, 0, 5}, cache[4] = {172, 16, 0, 9};
	assert_int_equal(policy_dns_table_add(names, "db.svc.cluster.local.", AF_INET, db), 0);
	assert_int_equal(
	    policy_dns_table_add(names, "cache.default.svc.cluster.local", AF_INET, cache), 0);
	static const struct net_case after[] = {
	    {TCP, "172.16.0.5", 5432, NR},
	    {TCP, "172.16.0.5", 80, NL},   /* port must match */
	    {UDP, "172.16.0.5", 5432, NL}, /* protocol must match */
	    {TCP, "::ffff:172.16.0.5", 5432, NR},
	    {TCP, "172.16.0.9", 11211, NR}, /* "cache" + search domain */
	    {UDP, "172.16.0.9", 11211, NL},
	    {TCP, "172.16.0.6", 5432, NL},
	};
	check_net(p, "remote filter, names known", after, HM_ARRAY_SIZE(after));
	const char *why;
	socklen_t len;
	struct sockaddr_storage ss = addr_of("172.16.0.5", 5432, &len);
	policy_net_decide(p, TCP, (struct sockaddr *)&ss, len, &why);
	assert_string_equal(why, "feature.network.outgoing.filter.remote[2]");
	policy_net_free(p);

	/* without a table, names never match */
	p = net_policy(true, true, true, POLICY_NET_FILTER_REMOTE, specs, NULL);
	static const struct net_case no_table[] = {{TCP, "172.16.0.5", 5432, NL}};
	check_net(p, "no table", no_table, HM_ARRAY_SIZE(no_table));
	policy_net_free(p);
	policy_dns_table_free(names);
}

static void test_net_name_matching(void **state)
{
	(void)state;
	struct policy_dns_table *names;
	struct hm_err err = {0};
	assert_int_equal(policy_dns_table_new(16, &names, &err), 0);
	uint8_t ip[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 7};
	assert_int_equal(policy_dns_table_add(names, "DB.Default.Svc.Cluster.Local", AF_INET6, ip),
			 0);
	static const struct {
		const char *spec;
		bool match;
	} cases[] = {
	    {"db.default.svc.cluster.local", true},
	    {"db", true}, /* completed by a search domain */
	    {"db.default", true},
	    {"svc.cluster.local", true}, /* a parent domain */
	    {"cluster.local.", true},
	    {"DB.DEFAULT.SVC", true},
	    {"mydb", false},
	    {"b.default", false},
	    {"default", false}, /* a middle label alone */
	    {"local.db", false},
	    {"db.default.svc.cluster.local.extra", false},
	    {"ster.local", false},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(cases); i++) {
		const char *specs[] = {cases[i].spec, NULL};
		struct policy_net *p =
		    net_policy(true, true, true, POLICY_NET_FILTER_REMOTE, specs, names);
		struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(80)};
		memcpy(&in6.sin6_addr, ip, 16);
		enum policy_net_verdict v =
		    policy_net_decide(p, TCP, (struct sockaddr *)&in6, sizeof(in6), NULL);
		if ((v == NR) != cases[i].match)
			fail_msg("spec %s vs db.default.svc.cluster.local: %s", cases[i].spec,
				 verdict_name(v));
		policy_net_free(p);
	}
	policy_dns_table_free(names);
}

static void test_net_local_filter(void **state)
{
	(void)state;
	static const char *const specs[] = {
	    ":6379", "10.1.0.0/16", "udp://:53", "tcp://10.96.0.10:53", "[2001:db8::]/32", NULL};
	struct policy_net *p = net_policy(true, true, true, POLICY_NET_FILTER_LOCAL, specs, NULL);
	static const struct net_case cases[] = {
	    {TCP, "10.2.0.1", 80, NR},	      {TCP, "10.1.2.3", 80, NL},
	    {TCP, "::ffff:10.1.2.3", 80, NL}, {TCP, "192.168.1.1", 6379, NL},
	    {TCP, "2001:db8:1::1", 443, NL},  {TCP, "2001:db9::1", 443, NR},
	    {UDP, "10.96.0.10", 53, NL}, /* "udp://:53" names port 53 */
	    {TCP, "10.96.0.10", 53, NL}, /* "tcp://10.96.0.10:53" */
	    {TCP, "10.96.0.11", 53, NR}, /* DNS remote, no port-53 entry matches */
	    {UDP, "10.1.0.53", 53, NL},	 /* udp://:53 */
	    {TCP, "10.1.0.53", 53, NR},	 /* 10.1.0.0/16 does not name port 53 */
	    {TCP, "127.0.0.1", 80, NL},
	};
	check_net(p, "local filter", cases, HM_ARRAY_SIZE(cases));
	policy_net_free(p);

	/* a local filter with nothing that matches: everything non-loopback goes remote */
	static const char *const none[] = {"tcp://nothing.example:1", NULL};
	p = net_policy(true, true, true, POLICY_NET_FILTER_LOCAL, none, NULL);
	static const struct net_case rest[] = {{TCP, "1.2.3.4", 1, NR}, {UDP, "1.2.3.4", 1, NR}};
	check_net(p, "local filter, no match", rest, HM_ARRAY_SIZE(rest));
	policy_net_free(p);

	/* an empty remote list: nothing goes remote but DNS */
	p = net_policy(true, true, true, POLICY_NET_FILTER_REMOTE, NULL, NULL);
	static const struct net_case empty[] = {{TCP, "1.2.3.4", 1, NL},
						{UDP, "10.0.0.10", 53, NR}};
	check_net(p, "empty remote list", empty, HM_ARRAY_SIZE(empty));
	policy_net_free(p);

	/* a bad spec fails the policy with its index */
	struct policy_strv filter = {0};
	struct hm_err err = {0};
	assert_int_equal(policy_strv_push(&filter, ":1", &err), 0);
	assert_int_equal(policy_strv_push(&filter, "1.2.3.4/40", &err), 0);
	struct policy_net_opts o = {.filter_kind = POLICY_NET_FILTER_LOCAL, .filter = &filter};
	assert_true(policy_net_new(&o, &p, &err) < 0);
	assert_non_null(strstr(err.msg, "feature.network.outgoing.filter.local[1]"));
	policy_strv_clear(&filter);
}

static void test_dns_table(void **state)
{
	(void)state;
	struct policy_dns_table *t;
	struct hm_err err = {0};
	char name[POLICY_DNS_NAME_MAX];
	assert_int_equal(policy_dns_table_new(2, &t, &err), 0);
	uint8_t a[4] = {10, 0, 0, 1}, b[4] = {10, 0, 0, 2}, c[4] = {10, 0, 0, 3};
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), -ENOENT);
	assert_int_equal(policy_dns_table_add(t, "one.example.", AF_INET, a), 0);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), 11);
	assert_string_equal(name, "one.example");
	/* the v4-mapped form of the same address finds it */
	uint8_t mapped[16] = {[10] = 0xff, [11] = 0xff, [12] = 10, [15] = 1};
	assert_int_equal(policy_dns_table_lookup(t, AF_INET6, mapped, name, sizeof(name)), 11);
	assert_int_equal(policy_dns_table_add(t, "alias.example", AF_INET, a), 0);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), 13);
	assert_string_equal(name, "alias.example"); /* the most recent */
	assert_int_equal(policy_dns_table_count(t), 2);
	/* refreshing one.example makes alias.example the least recently added... */
	assert_int_equal(policy_dns_table_add(t, "ONE.example", AF_INET, a), 0);
	assert_int_equal(policy_dns_table_count(t), 2);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), 11);
	/* ...so it is the one a new entry evicts */
	assert_int_equal(policy_dns_table_add(t, "two", AF_INET, b), 0);
	assert_int_equal(policy_dns_table_count(t), 2);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), 11);
	assert_string_equal(name, "one.example");
	assert_int_equal(policy_dns_table_add(t, "three", AF_INET, c), 0);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), -ENOENT);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, b, name, sizeof(name)), 3);
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, c, name, sizeof(name)), 5);
	assert_int_equal(policy_dns_table_add(t, "bad name", AF_INET, a), -EINVAL);
	assert_int_equal(policy_dns_table_add(t, "", AF_INET, a), -EINVAL);
	assert_int_equal(policy_dns_table_add(t, "x", AF_UNIX, a), -EAFNOSUPPORT);
	assert_int_equal(policy_dns_table_lookup(t, AF_UNIX, a, name, sizeof(name)), -EAFNOSUPPORT);
	policy_dns_table_free(t);
}

/* A response to "db" (search-completed to db.default.svc.cluster.local) answering with a
 * CNAME to real.db.internal, its A and AAAA records, and a TXT record to skip. */
static size_t build_response(uint8_t *m)
{
	size_t n = 0;
	static const uint8_t header[12] = {0x12, 0x34, 0x81, 0x80, 0, 1, 0, 4, 0, 0, 0, 0};
	memcpy(m, header, 12);
	n = 12;
	static const uint8_t qname[] = "\x02"
				       "db\x07"
				       "default\x03"
				       "svc\x07"
				       "cluster\x05"
				       "local";
	memcpy(m + n, qname, sizeof(qname)); /* with the terminating zero */
	n += sizeof(qname);
	m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 1; /* A, IN */
	/* CNAME: owner = pointer to qname (offset 12) */
	m[n++] = 0xc0, m[n++] = 12;
	m[n++] = 0, m[n++] = 5, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0,
	m[n++] = 30;
	size_t cname_rdata = n + 2;
	static const uint8_t target[] = "\x04"
					"real\x02"
					"db\x08"
					"internal";
	m[n++] = 0, m[n++] = sizeof(target);
	memcpy(m + n, target, sizeof(target));
	n += sizeof(target);
	/* A: owner = pointer to the CNAME target */
	m[n++] = 0xc0, m[n++] = (uint8_t)cname_rdata;
	m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0,
	m[n++] = 30, m[n++] = 0, m[n++] = 4;
	m[n++] = 10, m[n++] = 20, m[n++] = 30, m[n++] = 40;
	/* TXT, skipped */
	m[n++] = 0xc0, m[n++] = 12;
	m[n++] = 0, m[n++] = 16, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0,
	m[n++] = 30, m[n++] = 0, m[n++] = 3, m[n++] = 2, m[n++] = 'h', m[n++] = 'i';
	/* AAAA */
	m[n++] = 0xc0, m[n++] = (uint8_t)cname_rdata;
	m[n++] = 0, m[n++] = 28, m[n++] = 0, m[n++] = 1, m[n++] = 0, m[n++] = 0, m[n++] = 0,
	m[n++] = 30, m[n++] = 0, m[n++] = 16;
	static const uint8_t v6[16] = {0xfd, 0, [15] = 9};
	memcpy(m + n, v6, 16);
	n += 16;
	return n;
}

static void test_dns_response(void **state)
{
	(void)state;
	struct policy_dns_table *t;
	struct hm_err err = {0};
	char name[POLICY_DNS_NAME_MAX];
	uint8_t m[512];
	size_t n = build_response(m);
	assert_int_equal(policy_dns_table_new(0, &t, &err), 0);
	assert_int_equal(policy_dns_table_add_response(t, m, n), 2);
	uint8_t a[4] = {10, 20, 30, 40};
	uint8_t v6[16] = {0xfd, 0, [15] = 9};
	assert_int_equal(policy_dns_table_lookup(t, AF_INET, a, name, sizeof(name)), 16);
	assert_string_equal(name, "real.db.internal");
	assert_int_equal(policy_dns_table_lookup(t, AF_INET6, v6, name, sizeof(name)), 16);
	assert_int_equal(policy_dns_table_count(t), 4); /* 2 names x 2 addresses */

	/* the question name lets a "db" spec match the address */
	static const char *const specs[] = {"tcp://db:5432", NULL};
	struct policy_net *p = net_policy(true, true, true, POLICY_NET_FILTER_REMOTE, specs, t);
	static const struct net_case cases[] = {
	    {TCP, "10.20.30.40", 5432, NR},
	    {TCP, "fd00::9", 5432, NR},
	    {TCP, "10.20.30.41", 5432, NL},
	};
	check_net(p, "names from a response", cases, HM_ARRAY_SIZE(cases));
	policy_net_free(p);
	policy_dns_table_free(t);

	/* malformed messages record nothing */
	assert_int_equal(policy_dns_table_new(0, &t, &err), 0);
	for (size_t cut = 0; cut < n; cut++)
		assert_int_equal(policy_dns_table_add_response(t, m, cut), -EINVAL);
	assert_int_equal(policy_dns_table_count(t), 0);
	uint8_t q[512];
	memcpy(q, m, n);
	q[2] &= 0x7f; /* a query, not a response */
	assert_int_equal(policy_dns_table_add_response(t, q, n), -EINVAL);
	memcpy(q, m, n);
	q[12 + 30 + 4 + 1] = 12 + 30 + 4; /* the CNAME owner points at itself */
	assert_int_equal(policy_dns_table_add_response(t, q, n), -EINVAL);
	memcpy(q, m, n);
	q[12] = 0x40; /* an obsolete extended label type */
	assert_int_equal(policy_dns_table_add_response(t, q, n), -EINVAL);
	memcpy(q, m, n);
	q[6] = 0, q[7] = 9; /* more answers than the message holds */
	assert_int_equal(policy_dns_table_add_response(t, q, n), -EINVAL);
	assert_int_equal(policy_dns_table_count(t), 0);
	/* trailing bytes and no answers are fine */
	memcpy(q, m, n);
	q[6] = 0, q[7] = 0;
	assert_int_equal(policy_dns_table_add_response(t, q, n), 0);
	policy_dns_table_free(t);
}

/* the decoder itself, as port-forward uses it: id, rcode, question, records in order */
static void test_dns_decode(void **state)
{
	(void)state;
	uint8_t m[512];
	size_t n = build_response(m);
	struct policy_dns_response r;
	assert_int_equal(policy_dns_decode(m, n, &r), 0);
	assert_int_equal(r.id, 0x1234);
	assert_int_equal(r.rcode, 0);
	assert_string_equal(r.qname, "db.default.svc.cluster.local");
	assert_int_equal(r.n, 2); /* the CNAME and TXT records are not addresses */
	assert_int_equal(r.rec[0].family, AF_INET);
	assert_memory_equal(r.rec[0].addr, ((uint8_t[]){10, 20, 30, 40}), 4);
	assert_string_equal(r.rec[0].owner, "real.db.internal");
	assert_int_equal(r.rec[1].family, AF_INET6);
	m[3] = 0x83; /* NXDOMAIN */
	assert_int_equal(policy_dns_decode(m, n, &r), 0);
	assert_int_equal(r.rcode, 3);
	for (size_t cut = 0; cut < n; cut++)
		assert_true(policy_dns_decode(m, cut, &r) < 0);
}

/* ================================================================ environment */

static const char *env_get(char **env, const char *key)
{
	size_t n = strlen(key);
	const char *found = NULL;
	for (char **p = env; *p; p++) {
		if (strncmp(*p, key, n) == 0 && (*p)[n] == '=') {
			if (found)
				fail_msg("%s twice", key);
			found = *p + n + 1;
		}
	}
	return found;
}

static char **build_env(const char *include, const char *exclude, const char *const *overrides,
			bool import, char *const remote[], char *const local[])
{
	struct policy_strv inc = {0}, exc = {0}, ov = {0};
	struct hm_err err = {0};
	if (include)
		assert_int_equal(policy_strv_push_split(&inc, include, ';', &err), 0);
	if (exclude)
		assert_int_equal(policy_strv_push_split(&exc, exclude, ';', &err), 0);
	for (size_t i = 0; overrides && overrides[i]; i++)
		assert_int_equal(policy_strv_push(&ov, overrides[i], &err), 0);
	struct policy_env_opts o = {
	    .import_remote = import, .include = &inc, .exclude = &exc, .override = &ov};
	char **env = NULL;
	if (policy_env_build(&o, remote, local, &env, &err) < 0)
		fail_msg("%s", err.msg);
	policy_strv_clear(&inc);
	policy_strv_clear(&exc);
	policy_strv_clear(&ov);
	return env;
}

static char *const remote_env[] = {
    "PATH=/pod/bin",
    "HOME=/root",
    "HOSTNAME=web-1",
    "APP_MODE=prod",
    "APP_SECRET_KEY=s3",
    "DATABASE_URL=pg://db",
    "KUBERNETES_SERVICE_HOST=10.96.0.1",
    "SHARED=pod",
    "LD_PRELOAD=/pod/lib.so",
    "NOEQUALS",
    "=empty-key",
    "EMPTY=",
    NULL,
};
static char *const local_env[] = {
    "PATH=/usr/bin", "HOME=/home/dev", "TERM=xterm", "SHARED=local", "SHARED=dup", "BROKEN", NULL,
};

static void test_env_default(void **state)
{
	(void)state;
	char **env = build_env(NULL, NULL, NULL, true, remote_env, local_env);
	assert_string_equal(env_get(env, "PATH"), "/usr/bin");	/* stays local */
	assert_string_equal(env_get(env, "HOME"), "/home/dev"); /* stays local */
	assert_string_equal(env_get(env, "TERM"), "xterm");	/* local only: kept */
	assert_string_equal(env_get(env, "SHARED"), "pod");	/* the pod's wins */
	assert_string_equal(env_get(env, "HOSTNAME"), "web-1"); /* imported */
	assert_string_equal(env_get(env, "APP_SECRET_KEY"), "s3");
	assert_string_equal(env_get(env, "KUBERNETES_SERVICE_HOST"), "10.96.0.1");
	assert_string_equal(env_get(env, "EMPTY"), "");
	assert_null(env_get(env, "LD_PRELOAD")); /* local by default */
	assert_null(env_get(env, "NOEQUALS"));
	assert_null(env_get(env, "BROKEN"));
	assert_null(env_get(env, ""));
	/* order: local first (in place), then the pod's new variables in the pod's order */
	assert_string_equal(env[0], "PATH=/usr/bin");
	assert_string_equal(env[3], "SHARED=pod");
	assert_string_equal(env[4], "HOSTNAME=web-1");
	policy_env_free(env);
}

static void test_env_include_exclude(void **state)
{
	(void)state;
	char **env = build_env("APP_*;DATABASE_URL", NULL, NULL, true, remote_env, local_env);
	assert_string_equal(env_get(env, "APP_MODE"), "prod");
	assert_string_equal(env_get(env, "APP_SECRET_KEY"), "s3");
	assert_string_equal(env_get(env, "DATABASE_URL"), "pg://db");
	assert_null(env_get(env, "HOSTNAME"));
	assert_string_equal(env_get(env, "SHARED"), "local"); /* not included: local stays */
	assert_string_equal(env_get(env, "PATH"), "/usr/bin");
	policy_env_free(env);

	env = build_env(NULL, "APP_SECRET_*;KUBERNETES_*", NULL, true, remote_env, local_env);
	assert_string_equal(env_get(env, "APP_MODE"), "prod");
	assert_null(env_get(env, "APP_SECRET_KEY"));
	assert_null(env_get(env, "KUBERNETES_SERVICE_HOST"));
	assert_string_equal(env_get(env, "HOSTNAME"), "web-1");
	policy_env_free(env);

	/* exclude wins over include */
	env = build_env("APP_*", "APP_SECRET_?EY", NULL, true, remote_env, local_env);
	assert_string_equal(env_get(env, "APP_MODE"), "prod");
	assert_null(env_get(env, "APP_SECRET_KEY"));
	policy_env_free(env);

	/* PATH and HOME come from the pod only when named exactly */
	env = build_env("PATH;HOM*;*", NULL, NULL, true, remote_env, local_env);
	assert_string_equal(env_get(env, "PATH"), "/pod/bin");
	assert_string_equal(env_get(env, "HOME"), "/home/dev");
	assert_null(env_get(env, "LD_PRELOAD"));
	policy_env_free(env);
	env = build_env("HOME;LD_PRELOAD", "PATH", NULL, true, remote_env, local_env);
	assert_string_equal(env_get(env, "HOME"), "/root");
	assert_string_equal(env_get(env, "LD_PRELOAD"), "/pod/lib.so");
	assert_string_equal(env_get(env, "PATH"), "/usr/bin");
	assert_null(env_get(env, "HOSTNAME"));
	policy_env_free(env);
	assert_true(policy_env_local_by_default("PATH"));
	assert_false(policy_env_local_by_default("PATHX"));
	assert_false(policy_env_local_by_default("PAT"));
}

/* Variables that make a local program run code never come from the pod: the pod's
 * LD_AUDIT names a library in the pod that trace-run would serve to the local loader. */
static void test_env_never_imported(void **state)
{
	(void)state;
	static const char *const code_loading[] = {
	    "LD_AUDIT",
	    "LD_PRELOAD",
	    "LD_LIBRARY_PATH",
	    "LD_DEBUG_OUTPUT",
	    "GCONV_PATH",
	    "GLIBC_TUNABLES",
	    "BASH_ENV",
	    "ENV",
	    "BASH_FUNC_ls%%",
	    "PS4",
	    "SHELLOPTS",
	    "PYTHONSTARTUP",
	    "PYTHONPATH",
	    "PYTHONHOME",
	    "PERL5OPT",
	    "PERL5LIB",
	    "RUBYOPT",
	    "NODE_OPTIONS",
	    "JAVA_TOOL_OPTIONS",
	    "LUA_INIT_5_4",
	    "OPENSSL_CONF",
	    "HOSTALIASES",
	    "LOCPATH",
	    "NLSPATH",
	    "DYLD_INSERT_LIBRARIES",
	    "GIT_CONFIG_COUNT",
	    "GIT_CONFIG_VALUE_0",
	    "GIT_SSH_COMMAND",
	    "PAGER",
	    "GIT_PAGER",
	    "LESSOPEN",
	    "EDITOR",
	    "VISUAL",
	    "SSH_ASKPASS",
	    "GIT_ASKPASS",
	    "BROWSER",
	    "KUBECONFIG",
	    "XDG_CONFIG_HOME",
	    "XDG_DATA_DIRS",
	    "QT_PLUGIN_PATH",
	    "GDK_PIXBUF_MODULE_FILE",
	    "npm_config_script_shell",
	    "TERMINFO",
	    "INPUTRC",
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(code_loading); i++) {
		if (!policy_env_never_imported(code_loading[i]))
			fail_msg("%s is imported", code_loading[i]);
		assert_true(policy_env_local_by_default(code_loading[i]));
	}
	/* ordinary settings, even look-alikes, still come from the pod */
	static const char *const settings[] = {
	    "LDAP_URI", "ENVIRONMENT", "APP_ENV", "PYTHONUNBUFFERED", "NODE_ENV",
	    "LANG",	"TZ",	       "BASH",	  "MY_LD_AUDIT"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(settings); i++)
		if (policy_env_never_imported(settings[i]))
			fail_msg("%s is not imported", settings[i]);

	char *const pod[] = {"LD_AUDIT=/lib/evil.so",
			     "LD_PRELOAD=/pod/lib.so",
			     "BASH_ENV=/tmp/x",
			     "ENV=/tmp/x",
			     "PYTHONSTARTUP=/pod/s.py",
			     "GCONV_PATH=/pod/gconv",
			     "BASH_FUNC_ls%%=() { evil; }",
			     "APP=1",
			     NULL};
	char *const local[] = {"LD_LIBRARY_PATH=/opt/mine", NULL};
	/* every glob, even "*" and "LD_*", lets none of them in */
	char **env = build_env("*;LD_*;BASH_*;PYTHON*", NULL, NULL, true, pod, local);
	assert_string_equal(env_get(env, "APP"), "1");
	assert_null(env_get(env, "LD_AUDIT"));
	assert_null(env_get(env, "LD_PRELOAD"));
	assert_null(env_get(env, "BASH_ENV"));
	assert_null(env_get(env, "ENV"));
	assert_null(env_get(env, "PYTHONSTARTUP"));
	assert_null(env_get(env, "GCONV_PATH"));
	assert_null(env_get(env, "BASH_FUNC_ls%%"));
	assert_string_equal(env_get(env, "LD_LIBRARY_PATH"), "/opt/mine"); /* the local one stays */
	policy_env_free(env);
	/* naming one exactly lets that one in; an override sets one whatever the pod says */
	static const char *const ov[] = {"BASH_ENV=/home/dev/.bashenv", NULL};
	env = build_env("APP;LD_AUDIT", NULL, ov, true, pod, local);
	assert_string_equal(env_get(env, "LD_AUDIT"), "/lib/evil.so");
	assert_null(env_get(env, "LD_PRELOAD"));
	assert_string_equal(env_get(env, "BASH_ENV"), "/home/dev/.bashenv");
	policy_env_free(env);
}

static void test_env_overrides_and_off(void **state)
{
	(void)state;
	static const char *const ov[] = {"SHARED=override", "NEW=1", "PATH=/custom", "X=a=b", NULL};
	char **env = build_env(NULL, NULL, ov, true, remote_env, local_env);
	assert_string_equal(env_get(env, "SHARED"), "override");
	assert_string_equal(env_get(env, "NEW"), "1");
	assert_string_equal(env_get(env, "PATH"), "/custom"); /* overrides apply to anything */
	assert_string_equal(env_get(env, "X"), "a=b");
	assert_string_equal(env_get(env, "HOSTNAME"), "web-1");
	policy_env_free(env);

	/* env import off: local + overrides */
	env = build_env(NULL, NULL, ov, false, remote_env, local_env);
	assert_null(env_get(env, "HOSTNAME"));
	assert_string_equal(env_get(env, "SHARED"), "override");
	assert_string_equal(env_get(env, "TERM"), "xterm");
	policy_env_free(env);

	/* no remote env at all, empty local */
	char *const empty[] = {NULL};
	env = build_env(NULL, NULL, NULL, true, NULL, empty);
	assert_null(env[0]);
	policy_env_free(env);

	/* from a config */
	struct policy_config c;
	struct hm_err err = {0};
	assert_int_equal(load(&c,
			      "{\"feature\": {\"env\": {\"include\": \"APP_*;PATH\", \"exclude\": "
			      "[\"APP_SECRET_*\"], \"override\": {\"APP_MODE\": \"dev\"}}}}",
			      &err),
			 0);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	struct policy_env_opts o;
	policy_env_opts_from_config(&c, &o);
	assert_true(o.import_remote);
	assert_int_equal(policy_env_build(&o, remote_env, local_env, &env, &err), 0);
	assert_string_equal(env_get(env, "APP_MODE"), "dev");
	assert_string_equal(env_get(env, "PATH"), "/pod/bin");
	assert_null(env_get(env, "APP_SECRET_KEY"));
	assert_null(env_get(env, "HOSTNAME"));
	policy_env_free(env);
	policy_config_free(&c);
}

/* ================================================================ incoming traffic */

static void test_config_incoming_defaults(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	assert_int_equal(load(&c, "{}", &err), 0);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_int_equal(c.feature.network.incoming.mode, POLICY_INCOMING_MIRROR);
	assert_int_equal(c.feature.network.incoming.on_concurrent_steal, POLICY_CONCURRENT_ABORT);
	assert_int_equal(c.feature.network.incoming.flush_connections, POLICY_TRI_FALSE);
	assert_int_equal(c.feature.network.incoming.fd_handoff, POLICY_TRI_TRUE);
	uint16_t remote = 0;
	assert_true(policy_incoming_port(&c, 8080, &remote));
	assert_int_equal(remote, 8080);
	assert_false(policy_incoming_port(&c, 0, &remote));
	assert_null(policy_incoming_http_filter(&c, 8080));
	policy_config_free(&c);
}

static void test_config_incoming_keys(void **state)
{
	(void)state;
	struct policy_config c;
	struct hm_err err = {0};
	if (load(&c,
		 "{\"feature\": {\"network\": {\"incoming\": {\"mode\": \"steal\", "
		 "\"port_mapping\": [[8080, 80], [9000, 9001]], \"ignore_ports\": [9999], "
		 "\"http_filter\": {\"header_filter\": \"^x-user: me$\", \"ports\": [80]}, "
		 "\"on_concurrent_steal\": \"continue\", \"flush_connections\": true, "
		 "\"fd_handoff\": false}}}}",
		 &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	typeof(c.feature.network.incoming) *in = &c.feature.network.incoming;
	assert_int_equal(in->mode, POLICY_INCOMING_STEAL);
	assert_int_equal(in->on_concurrent_steal, POLICY_CONCURRENT_CONTINUE);
	assert_int_equal(in->flush_connections, POLICY_TRI_TRUE);
	assert_int_equal(in->fd_handoff, POLICY_TRI_FALSE);
	uint16_t remote = 0;
	assert_true(policy_incoming_port(&c, 8080, &remote));
	assert_int_equal(remote, 80);
	assert_true(policy_incoming_port(&c, 9000, &remote));
	assert_int_equal(remote, 9001);
	assert_true(policy_incoming_port(&c, 7000, &remote));
	assert_int_equal(remote, 7000);
	assert_false(policy_incoming_port(&c, 9999, &remote));
	/* the filter goes to the agent without its ports, for the ports it names only */
	assert_string_equal(policy_incoming_http_filter(&c, 80),
			    "{\"header_filter\":\"^x-user: me$\"}");
	assert_null(policy_incoming_http_filter(&c, 9001));
	policy_config_free(&c);

	/* ports: only those; mirrord's shorthand "incoming": "steal" */
	if (load(&c, "{\"feature\": {\"network\": {\"incoming\": {\"ports\": [8080]}}}}", &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_true(policy_incoming_port(&c, 8080, &remote));
	assert_false(policy_incoming_port(&c, 8081, &remote));
	policy_config_free(&c);
	if (load(&c, "{\"feature\": {\"network\": {\"incoming\": \"steal\"}}}", &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(c.feature.network.incoming.mode, POLICY_INCOMING_STEAL);
	policy_config_free(&c);
	if (load(&c, "{\"feature\": {\"network\": {\"incoming\": \"off\"}}}", &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_false(policy_incoming_port(&c, 8080, &remote));
	policy_config_free(&c);

	/* a filter applies to steal only, and with no ports to every port */
	if (load(&c,
		 "{\"feature\": {\"network\": {\"incoming\": {\"mode\": \"mirror\", "
		 "\"http_filter\": {\"any_of\": [{\"path\": \"^/api\"}, {\"method\": "
		 "\"POST\"}]}}}}}",
		 &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(policy_config_finalize(&c, &err), 0);
	assert_null(policy_incoming_http_filter(&c, 80));
	c.feature.network.incoming.mode = POLICY_INCOMING_STEAL;
	assert_string_equal(policy_incoming_http_filter(&c, 1234),
			    "{\"any_of\":[{\"path\":\"^\\/api\"},{\"method\":\"POST\"}]}");
	policy_config_free(&c);
}

static void test_config_incoming_errors(void **state)
{
	(void)state;
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"mdoe\": \"steal\"}}}}",
			  "unknown key feature.network.incoming.mdoe");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": \"both\"}}}",
			  "feature.network.incoming: unknown mode \"both\"");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"mode\": \"stael\"}}}}",
			  "feature.network.incoming.mode: unknown mode \"stael\"");
	expect_load_error(
	    "{\"feature\": {\"network\": {\"incoming\": {\"port_mapping\": [[80]]}}}}",
	    "feature.network.incoming.port_mapping[0]: expected a [local, remote] pair");
	expect_load_error(
	    "{\"feature\": {\"network\": {\"incoming\": {\"port_mapping\": [[80, 70000]]}}}}",
	    "feature.network.incoming.port_mapping[0][1]: 70000 is not a port");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"port_mapping\": [[80, "
			  "81], [80, 82]]}}}}",
			  "local port 80 is mapped twice");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"ports\": [\"80\"]}}}}",
			  "feature.network.incoming.ports[0]: expected a port number, got string");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"ports\": [80], "
			  "\"ignore_ports\": [81]}}}}",
			  "set either ports or ignore_ports, not both");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"on_concurrent_steal\": "
			  "\"override\"}}}}",
			  "feature.network.incoming.on_concurrent_steal: \"override\" is not "
			  "supported");
	expect_load_error(
	    "{\"feature\": {\"network\": {\"incoming\": {\"flush_connections\": 1}}}}",
	    "feature.network.incoming.flush_connections: expected a boolean");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"http_filter\": "
			  "{\"header\": \"x\"}}}}}",
			  "unknown key feature.network.incoming.http_filter.header");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"http_filter\": "
			  "{\"header_filter\": \"(\"}}}}}",
			  "feature.network.incoming.http_filter.header_filter[0]: invalid regex");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"http_filter\": "
			  "{\"header_filter\": \"a\", \"path_filter\": \"b\"}}}}}",
			  "set one of header_filter");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"http_filter\": "
			  "{\"all_of\": [{\"header\": \"a\", \"path\": \"b\"}]}}}}}",
			  "all_of[0]: expected one of header, path, method");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"http_filter\": "
			  "{\"any_of\": [{\"query\": \"a\"}]}}}}}",
			  "unknown key feature.network.incoming.http_filter.any_of[0].query");
	expect_load_error("{\"feature\": {\"network\": {\"incoming\": {\"http_filter\": "
			  "{\"any_of\": []}}}}}",
			  "any_of: expected a non-empty array");
}

static void test_config_incoming_merge(void **state)
{
	(void)state;
	struct policy_config file, flags;
	struct hm_err err = {0};
	if (load(&file,
		 "{\"feature\": {\"network\": {\"incoming\": {\"mode\": \"steal\", \"ports\": "
		 "[80]}}}}",
		 &err) < 0)
		fail_msg("%s", err.msg);
	policy_config_init(&flags);
	flags.feature.network.incoming.mode = POLICY_INCOMING_OFF; /* --incoming off */
	assert_int_equal(policy_config_merge(&file, &flags, &err), 0);
	assert_int_equal(policy_config_finalize(&file, &err), 0);
	assert_int_equal(file.feature.network.incoming.mode, POLICY_INCOMING_OFF);
	assert_int_equal(file.feature.network.incoming.ports.len, 1);
	uint16_t remote;
	assert_false(policy_incoming_port(&file, 80, &remote));
	policy_config_free(&file);
	policy_config_free(&flags);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_example_loads),
	    cmocka_unit_test(test_config_defaults),
	    cmocka_unit_test(test_config_cache_ttl),
	    cmocka_unit_test(test_config_unknown_keys),
	    cmocka_unit_test(test_config_incoming_defaults),
	    cmocka_unit_test(test_config_incoming_keys),
	    cmocka_unit_test(test_config_incoming_errors),
	    cmocka_unit_test(test_config_incoming_merge),
	    cmocka_unit_test(test_config_wrong_types),
	    cmocka_unit_test(test_config_bad_values),
	    cmocka_unit_test(test_config_shorthands),
	    cmocka_unit_test(test_config_merge),
	    cmocka_unit_test(test_config_file_errors),
	    cmocka_unit_test(test_config_enum_names),
	    cmocka_unit_test(test_fs_normalize),
	    cmocka_unit_test(test_fs_defaults_read_mode),
	    cmocka_unit_test(test_fs_defaults_write_mode),
	    cmocka_unit_test(test_fs_local_modes),
	    cmocka_unit_test(test_fs_lists_precedence),
	    cmocka_unit_test(test_fs_dns_off_and_missing_dirs),
	    cmocka_unit_test(test_net_spec_parse),
	    cmocka_unit_test(test_net_no_filter),
	    cmocka_unit_test(test_net_protocol_switches),
	    cmocka_unit_test(test_net_remote_filter),
	    cmocka_unit_test(test_net_name_matching),
	    cmocka_unit_test(test_net_local_filter),
	    cmocka_unit_test(test_dns_table),
	    cmocka_unit_test(test_dns_response),
	    cmocka_unit_test(test_dns_decode),
	    cmocka_unit_test(test_env_default),
	    cmocka_unit_test(test_env_include_exclude),
	    cmocka_unit_test(test_env_overrides_and_off),
	    cmocka_unit_test(test_env_never_imported),
	    cmocka_unit_test(test_config_max_file_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
