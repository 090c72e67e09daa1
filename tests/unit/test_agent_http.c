/* agent: HTTP filters (http_filter.c), framing (http_parse.c) and the filtered-steal
 * router (http_router.c) with socketpairs standing in for the client, the pod's server
 * and the local programs. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>

#include "agent/internal.h"

/* ---- filters ---- */

static struct http_filter *parse_ok(const char *json)
{
	struct http_filter *f = NULL;
	struct hm_err err = {0};
	int rc = http_filter_parse(json, strlen(json), &f, &err);
	if (rc < 0)
		fail_msg("%s: %s", json, err.msg);
	assert_non_null(f);
	return f;
}

static void parse_bad(const char *json, const char *needle)
{
	struct http_filter *f = NULL;
	struct hm_err err = {0};
	assert_int_equal(http_filter_parse(json, strlen(json), &f, &err), -1);
	assert_null(f);
	if (!strstr(err.msg, needle))
		fail_msg("%s: error \"%s\" does not say \"%s\"", json, err.msg, needle);
}

static void test_filter_parse_good(void **state)
{
	(void)state;
	const char *good[] = {
	    "{\"header_filter\": \"^x-user: me$\"}",
	    "{\"path_filter\": \"^/api/\", \"ports\": [80, 8080]}",
	    "{\"method_filter\": \"post\"}",
	    "{\"all_of\": [{\"header\": \"a\"}, {\"path\": \"b\"}, {\"method\": \"GET\"}]}",
	    "{\"any_of\": [{\"all_of\": [{\"method\": \"GET\"}, {\"path\": \"x\"}]}, "
	    "{\"header\": \"y\"}]}",
	    "{\"header_filter\": \"^User-Agent: (?!kube-probe)\"}",
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(good); i++)
		http_filter_free(parse_ok(good[i]));
}

static void test_filter_parse_bad(void **state)
{
	(void)state;
	parse_bad("not json", "invalid JSON");
	parse_bad("{\"header_filter\": \"a\"", "unexpected end");
	parse_bad("{\"header_filter\": \"a\"} x", "invalid JSON");
	parse_bad("[]", "must be a JSON object");
	parse_bad("{}", "none of header_filter");
	parse_bad("{\"ports\": [80]}", "none of header_filter");
	parse_bad("{\"header_filter\": \"(\"}", "http_filter.header_filter: bad regex \"(\"");
	parse_bad("{\"any_of\": [{\"header\": \"ok\"}, {\"path\": \"[a-\"}]}",
		  "http_filter.any_of[1].path: bad regex");
	parse_bad("{\"bogus\": 1}", "http_filter.bogus: unknown key");
	parse_bad("{\"all_of\": [{\"header\": \"a\", \"path\": \"b\"}]}", "exactly one of");
	parse_bad("{\"all_of\": [{\"headers\": \"a\"}]}",
		  "http_filter.all_of[0].headers: unknown key");
	parse_bad("{\"all_of\": []}", "cannot be an empty list");
	parse_bad("{\"all_of\": {\"header\": \"a\"}}", "must be a list");
	parse_bad("{\"all_of\": [\"a\"]}", "must be an object");
	parse_bad("{\"header_filter\": 1}", "must be a string");
	parse_bad("{\"header_filter\": \"a\", \"path_filter\": \"b\"}", "both set");
	parse_bad("{\"method_filter\": \"GE T\"}", "is not an HTTP method");
	parse_bad("{\"method_filter\": \"\"}", "is not an HTTP method");
	/* nested deeper than allowed */
	char deep[512] = "";
	for (int i = 0; i < 12; i++)
		strcat(deep, "{\"all_of\": [");
	strcat(deep, "{\"header\": \"a\"}");
	for (int i = 0; i < 12; i++)
		strcat(deep, "]}");
	parse_bad(deep, "nested deeper than 8");
	/* too long */
	size_t big = HTTP_FILTER_JSON_MAX + 10;
	char *long_json = malloc(big + 1);
	assert_non_null(long_json);
	memset(long_json, ' ', big);
	long_json[big] = '\0';
	parse_bad(long_json, "longer than");
	free(long_json);
	/* a NUL inside */
	struct http_filter *f = NULL;
	struct hm_err err = {0};
	assert_int_equal(http_filter_parse("{\"header_filter\":\"a\0\"}", 22, &f, &err), -1);
}

static struct http_request req_of(const char *method, const char *url, const char **hdrs)
{
	struct http_request r = {.method = method, .url = url, .url_len = strlen(url)};
	for (size_t i = 0; hdrs && hdrs[i]; i += 2) {
		r.headers[r.n_headers++] = (struct http_header){
		    .name = hdrs[i],
		    .name_len = strlen(hdrs[i]),
		    .value = hdrs[i + 1],
		    .value_len = strlen(hdrs[i + 1]),
		};
	}
	return r;
}

static bool matches(const char *json, const struct http_request *r)
{
	struct http_filter *f = parse_ok(json);
	bool hit = http_filter_match(f, r);
	http_filter_free(f);
	return hit;
}

static void test_filter_match(void **state)
{
	(void)state;
	const char *h[] = {"Host", "web", "X-User", "Alice", NULL};
	struct http_request r = req_of("GET", "/api/v1/items?id=7", h);
	/* header: "Name: value", ignoring case both ways */
	assert_true(matches("{\"header_filter\": \"^x-user: alice$\"}", &r));
	assert_true(matches("{\"header_filter\": \"X-USER: ALI\"}", &r));
	assert_false(matches("{\"header_filter\": \"^x-user: bob\"}", &r));
	assert_false(matches("{\"header_filter\": \"^user: alice\"}", &r));
	/* path: without the query, and with it */
	assert_true(matches("{\"path_filter\": \"^/api/v1/items$\"}", &r));
	assert_true(matches("{\"path_filter\": \"items\\\\?id=7$\"}", &r));
	assert_true(matches("{\"path_filter\": \"^/API/\"}", &r));
	assert_false(matches("{\"path_filter\": \"^/health\"}", &r));
	struct http_request absolute = req_of("GET", "http://web:8080/api/x?y", NULL);
	assert_true(matches("{\"path_filter\": \"^/api/x$\"}", &absolute));
	/* method */
	assert_true(matches("{\"method_filter\": \"get\"}", &r));
	assert_false(matches("{\"method_filter\": \"POST\"}", &r));
	/* all_of / any_of and their nesting */
	assert_true(
	    matches("{\"all_of\": [{\"header\": \"x-user: alice\"}, {\"path\": \"^/api\"}]}", &r));
	assert_false(
	    matches("{\"all_of\": [{\"header\": \"x-user: alice\"}, {\"path\": \"^/x\"}]}", &r));
	assert_true(
	    matches("{\"any_of\": [{\"header\": \"x-user: bob\"}, {\"path\": \"^/api\"}]}", &r));
	assert_false(
	    matches("{\"any_of\": [{\"header\": \"x-user: bob\"}, {\"path\": \"^/x\"}]}", &r));
	assert_true(matches("{\"any_of\": [{\"method\": \"POST\"}, {\"all_of\": [{\"method\": "
			    "\"GET\"}, {\"any_of\": [{\"path\": \"nope\"}, {\"header\": "
			    "\"^host: web$\"}]}]}]}",
			    &r));
	assert_false(matches("{\"all_of\": [{\"method\": \"GET\"}, {\"any_of\": [{\"path\": "
			     "\"nope\"}, {\"header\": \"^host: db$\"}]}]}",
			     &r));
}

/* a catastrophic regex on a long header is cut by the match limits */
static void test_filter_hostile_regex_is_bounded(void **state)
{
	(void)state;
	char value[8192];
	memset(value, 'a', sizeof(value) - 2);
	value[sizeof(value) - 2] = '!';
	value[sizeof(value) - 1] = '\0';
	const char *h[] = {"X", value, NULL};
	struct http_request r = req_of("GET", "/", h);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_false(matches("{\"header_filter\": \"^x: (a+)+$\"}", &r));
	assert_false(matches("{\"header_filter\": \"^x: (a|aa)+$\"}", &r));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	/* without limits this runs for longer than the universe */
	assert_true(ms < 2000);
}

/* The per-match limits multiply: a session's filter of 63 catastrophic regexes
 * against a request of 128 long headers ran for ~18 s of the router's one thread
 * (every filtered connection of every session waits meanwhile), times the 64
 * subscriptions a session may hold on the port. Each filter's matching of a request
 * is bounded in all, and a later session's filter still matches. */
static void test_pick_hostile_filters_are_bounded_in_all(void **state)
{
	(void)state;
	static char json[HTTP_FILTER_JSON_MAX];
	size_t o = (size_t)snprintf(json, sizeof(json), "{\"any_of\": [");
	for (int i = 0; i < 63; i++)
		o += (size_t)snprintf(json + o, sizeof(json) - o, "%s{\"header\": \"(a|a)*[bc]$\"}",
				      i ? ", " : "");
	snprintf(json + o, sizeof(json) - o, "]}");
	enum { HOSTILE = 8 };
	struct http_filter *f[HOSTILE + 1];
	for (int i = 0; i < HOSTILE; i++)
		f[i] = parse_ok(json);
	f[HOSTILE] = parse_ok("{\"header_filter\": \"^x-user: alice$\"}");
	static struct http_request r;
	static char value[250];
	memset(value, 'a', sizeof(value) - 1);
	r.method = "GET";
	r.url = "/";
	r.url_len = 1;
	for (size_t i = 0; i < HTTP_HEADERS_MAX - 1; i++)
		r.headers[r.n_headers++] = (struct http_header){
		    .name = "X", .name_len = 1, .value = value, .value_len = sizeof(value) - 1};
	r.headers[r.n_headers++] =
	    (struct http_header){.name = "X-User", .name_len = 6, .value = "alice", .value_len = 5};
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int pick = http_filter_pick(f, HOSTILE + 1, &r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	for (int i = 0; i <= HOSTILE; i++)
		http_filter_free(f[i]);
	assert_int_equal(pick, HOSTILE);
	/* unbounded, this is 8 x 63 x 128 matches at their limit: ~40 s here, half an hour
	 * under valgrind; bounded, ~5 ms here, a quarter of a second under valgrind */
	assert_true(ms < 5000);
}

static void test_pick(void **state)
{
	(void)state;
	const char *alice[] = {"X-User", "alice", NULL}, *bob[] = {"X-User", "bob", NULL};
	struct http_request ra = req_of("GET", "/", alice), rb = req_of("GET", "/", bob),
			    rn = req_of("GET", "/", NULL);
	struct http_filter *f[3] = {NULL, parse_ok("{\"header_filter\": \"x-user: alice\"}"),
				    parse_ok("{\"header_filter\": \"x-user: \"}")};
	assert_int_equal(http_filter_pick(f, 0, &ra), -1);
	assert_int_equal(http_filter_pick(f + 1, 2, &rn), -1);
	/* filtered ones first, in order; the unfiltered one takes the rest */
	assert_int_equal(http_filter_pick(f, 3, &ra), 1);
	assert_int_equal(http_filter_pick(f, 3, &rb), 2);
	assert_int_equal(http_filter_pick(f, 3, &rn), 0);
	assert_int_equal(http_filter_pick(f + 2, 1, &ra), 0);
	http_filter_free(f[1]);
	http_filter_free(f[2]);
}

/* ---- framing ---- */

static void test_reader_request_split(void **state)
{
	(void)state;
	static const char req[] = "POST /p?q=1 HTTP/1.1\r\nHost: h\r\nX-Long-Name: v1 v2\r\n"
				  "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
				  "GET / HTTP/1.1\r\n\r\n";
	struct http_reader rd;
	struct hm_err err = {0};
	assert_int_equal(http_reader_init(&rd, true, &err), 0);
	size_t parsed = 0, len = 0;
	int seen = 0;
	size_t end_at = 0;
	struct http_request hr;
	while (!(seen & HTTP_EV_END)) {
		len++; /* one byte more each time */
		size_t used;
		int ev = http_reader_feed(&rd, req, 0, parsed, len, &used);
		parsed += used;
		assert_false(ev & HTTP_EV_ERROR);
		if (ev & HTTP_EV_HEAD) {
			http_reader_request(&rd, req, &hr);
			assert_string_equal(hr.method, "POST");
			assert_int_equal(hr.url_len, strlen("/p?q=1"));
			assert_memory_equal(hr.url, "/p?q=1", hr.url_len);
			assert_int_equal(hr.n_headers, 3);
			assert_memory_equal(hr.headers[1].name, "X-Long-Name", 11);
			assert_int_equal(hr.headers[1].value_len, 5);
			assert_memory_equal(hr.headers[1].value, "v1 v2", 5);
		}
		seen |= ev;
		end_at = parsed;
	}
	assert_true(seen & HTTP_EV_HEAD);
	/* the reader stops right at the end of the first message */
	assert_int_equal(end_at, strlen(req) - strlen("GET / HTTP/1.1\r\n\r\n"));
	http_reader_fini(&rd);
}

/* ---- the router ---- */

#define MAX_SIDES 16
struct harness {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int pod[MAX_SIDES]; /* the test's ends of pod connections, in order */
	int n_pod;
	int local[MAX_SIDES];
	uint32_t local_sub[MAX_SIDES];
	int n_local;
	bool refuse_local;
	bool pod_later; /* open_pod answers through http_router_stream_ready */
	int closed;
	atomic_int local_released; /* local streams whose release the router ran */
	struct http_router *router;
	struct http_router_counters counters;
	struct http_filter *filter; /* subscription 5's */
};

static uint32_t h_route(void *ctx, void *conn, const struct http_request *req)
{
	(void)conn;
	struct harness *h = ctx;
	return http_filter_pick(&h->filter, 1, req) == 0 ? 5 : 0;
}

static int h_open_pod(void *ctx, void *conn, uint64_t ticket, int *fd, struct hm_err *err)
{
	(void)conn;
	struct harness *h = ctx;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return hm_err_errno(err, "socketpair");
	pthread_mutex_lock(&h->lock);
	h->pod[h->n_pod++] = sv[0];
	bool later = h->pod_later;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	if (later) { /* as the agent does: connected by another thread */
		*fd = -1;
		http_router_stream_ready(h->router, ticket, sv[1], NULL);
	} else {
		*fd = sv[1];
	}
	return 0;
}

static void h_local_released(void *arg)
{
	struct harness *h = arg;
	atomic_fetch_add(&h->local_released, 1);
}

static int h_open_local(void *ctx, void *conn, uint32_t sub, uint64_t ticket, struct hm_err *err)
{
	(void)conn;
	struct harness *h = ctx;
	if (h->refuse_local)
		return hm_err_set(err, ENOENT, "session gone");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return hm_err_errno(err, "socketpair");
	pthread_mutex_lock(&h->lock);
	h->local[h->n_local] = sv[0];
	h->local_sub[h->n_local++] = sub;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	/* as the session's claim does: later, from elsewhere, holding a stream of the
	 * session's budget until the router closes it */
	struct relay_release release = {h_local_released, h};
	http_router_stream_ready(h->router, ticket, sv[1], &release);
	return 0;
}

static void h_closed(void *ctx, void *conn)
{
	(void)conn;
	struct harness *h = ctx;
	pthread_mutex_lock(&h->lock);
	h->closed++;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

static const struct http_router_ops h_ops = {
    .route = h_route, .open_pod = h_open_pod, .open_local = h_open_local, .closed = h_closed};

static struct harness *harness_new(const char *filter)
{
	struct harness *h = calloc(1, sizeof(*h));
	assert_non_null(h);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	struct hm_err err = {0};
	h->filter = parse_ok(filter);
	assert_int_equal(http_router_create(&h_ops, h, &h->counters, &h->router, &err), 0);
	return h;
}

static int harness_client(struct harness *h)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	struct hm_err err = {0};
	assert_int_equal(http_router_add(h->router, sv[1], NULL, &err), 0);
	return sv[0];
}

static int wait_side(struct harness *h, int *arr, int *n, int idx)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&h->lock);
	while (*n <= idx)
		if (pthread_cond_timedwait(&h->cond, &h->lock, &until) != 0)
			break;
	int fd = *n > idx ? arr[idx] : -1;
	pthread_mutex_unlock(&h->lock);
	assert_true(fd >= 0);
	return fd;
}
#define POD(h, i) wait_side((h), (h)->pod, &(h)->n_pod, (i))
#define LOCAL(h, i) wait_side((h), (h)->local, &(h)->n_local, (i))

static void harness_free(struct harness *h, int client)
{
	close(client);
	http_router_destroy(h->router);
	assert_int_equal(h->closed, 1);
	/* every local stream went back to its session's budget, once */
	assert_int_equal(atomic_load(&h->local_released), h->n_local);
	for (int i = 0; i < h->n_pod; i++)
		close(h->pod[i]);
	for (int i = 0; i < h->n_local; i++)
		close(h->local[i]);
	http_filter_free(h->filter);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

static void send_str(int fd, const char *s)
{
	assert_int_equal(hm_write_all(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* read exactly what is expected (within 5 s) */
static void expect(int fd, const char *want)
{
	size_t len = strlen(want), got = 0;
	char *buf = malloc(len + 1);
	assert_non_null(buf);
	while (got < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 5000) != 1)
			fail_msg("timed out after %zu of %zu bytes: want \"%s\"", got, len, want);
		ssize_t n = read(fd, buf + got, len - got);
		if (n <= 0)
			fail_msg("EOF after %zu bytes: \"%.*s\", want \"%s\"", got, (int)got, buf,
				 want);
		got += (size_t)n;
	}
	buf[len] = '\0';
	if (memcmp(buf, want, len) != 0)
		fail_msg("got \"%s\"\nwant \"%s\"", buf, want);
	free(buf);
}

/* nothing arrives for a moment */
static void expect_quiet(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 100), 0);
}

static void expect_eof(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 5000), 1);
	char c;
	assert_int_equal(read(fd, &c, 1), 0);
}

#define FILTER_ALICE "{\"header_filter\": \"^x-user: alice$\"}"
#define REQ_ALICE(path) "GET " path " HTTP/1.1\r\nHost: web\r\nX-User: alice\r\n\r\n"
#define REQ_OTHER(path) "GET " path " HTTP/1.1\r\nHost: web\r\n\r\n"
#define RESP(body) "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" body

/* one keep-alive connection: requests with the header reach the local program, the
 * others the pod, in order, and the local stream is reused */
static void keepalive_mix(bool pod_later)
{
	struct harness *h = harness_new(FILTER_ALICE);
	h->pod_later = pod_later;
	int client = harness_client(h);
	int pod = POD(h, 0);

	send_str(client, REQ_ALICE("/1"));
	int local = LOCAL(h, 0);
	assert_int_equal(h->local_sub[0], 5);
	expect(local, REQ_ALICE("/1"));
	send_str(local, RESP("local"));
	expect(client, RESP("local"));

	send_str(client, REQ_OTHER("/2"));
	expect(pod, REQ_OTHER("/2"));
	expect_quiet(local);
	send_str(pod, RESP("pod!!"));
	expect(client, RESP("pod!!"));

	send_str(client, REQ_ALICE("/3"));
	expect(local, REQ_ALICE("/3"));
	expect_quiet(pod);
	send_str(local, RESP("loc-3"));
	expect(client, RESP("loc-3"));
	assert_int_equal(h->n_local, 1); /* one stream for both */
	assert_int_equal(atomic_load(&h->counters.to_local), 2);
	assert_int_equal(atomic_load(&h->counters.to_pod), 1);
	harness_free(h, client);
}

static void test_router_keepalive_mix(void **state)
{
	(void)state;
	keepalive_mix(false);
}

/* the same when the pod's socket comes later from another thread (as in the agent) */
static void test_router_keepalive_mix_pod_later(void **state)
{
	(void)state;
	keepalive_mix(true);
}

/* three pipelined requests; the pod answers the middle one first, yet the client gets
 * the answers in its order */
static void test_router_pipelined_in_order(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, REQ_ALICE("/a") REQ_OTHER("/b") REQ_ALICE("/c"));
	expect(pod, REQ_OTHER("/b"));
	send_str(pod, RESP("bbbbb"));
	int local = LOCAL(h, 0);
	expect(local, REQ_ALICE("/a") REQ_ALICE("/c"));
	expect_quiet(client); /* b's answer waits for a's */
	send_str(local, RESP("aaaaa") RESP("ccccc"));
	expect(client, RESP("aaaaa") RESP("bbbbb") RESP("ccccc"));
	harness_free(h, client);
}

/* chunked request and response bodies, a HEAD answer with a Content-Length and no
 * body, an interim 100 Continue */
static void test_router_chunked_head_continue(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	static const char chunked_req[] = "POST /up HTTP/1.1\r\nX-User: alice\r\n"
					  "Transfer-Encoding: chunked\r\n\r\n"
					  "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n";
	static const char chunked_resp[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
					   "3\r\nabc\r\n0\r\n\r\n";
	send_str(client, chunked_req);
	int local = LOCAL(h, 0);
	expect(local, chunked_req);
	send_str(local, "HTTP/1.1 100 Continue\r\n\r\n");
	send_str(local, chunked_resp);
	expect(client, "HTTP/1.1 100 Continue\r\n\r\n");
	expect(client, chunked_resp);

	/* HEAD to the pod: Content-Length 100 and no body; the next answer follows */
	static const char head_resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
	send_str(client, "HEAD /h HTTP/1.1\r\n\r\n" REQ_OTHER("/after"));
	expect(pod, "HEAD /h HTTP/1.1\r\n\r\n" REQ_OTHER("/after"));
	send_str(pod, head_resp);
	send_str(pod, RESP("after"));
	expect(client, head_resp);
	expect(client, RESP("after"));

	/* a 204 has no body either */
	send_str(client, REQ_OTHER("/nc"));
	expect(pod, REQ_OTHER("/nc"));
	send_str(pod, "HTTP/1.1 204 No Content\r\n\r\n");
	expect(client, "HTTP/1.1 204 No Content\r\n\r\n");
	harness_free(h, client);
}

/* a request written one byte at a time is routed by its header all the same */
static void test_router_one_byte_writes(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	static const char req[] =
	    "POST /x HTTP/1.1\r\nX-User: alice\r\nContent-Length: 4\r\n\r\nbody";
	for (size_t i = 0; i < strlen(req); i++) {
		assert_int_equal(write(client, req + i, 1), 1);
		if (i % 7 == 0)
			usleep(1000);
	}
	int local = LOCAL(h, 0);
	expect(local, req);
	expect_quiet(pod);
	send_str(local, RESP("done!"));
	expect(client, RESP("done!"));
	harness_free(h, client);
}

/* bytes that are not HTTP go to the pod untouched, from the first byte, both ways */
static void test_router_not_http_passthrough(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	static const char tls_hello[] =
	    "\x16\x03\x01\x02\x10\x01\x11\x01\xfc\x03\x03GET / HTTP/1.1";
	assert_int_equal(write(client, tls_hello, sizeof(tls_hello) - 1),
			 (ssize_t)sizeof(tls_hello) - 1);
	expect(pod, tls_hello);
	send_str(pod, "\x16\x03\x03 server hello");
	expect(client, "\x16\x03\x03 server hello");
	send_str(client, "X-User: alice\r\n\r\n"); /* still raw, still the pod */
	expect(pod, "X-User: alice\r\n\r\n");
	assert_int_equal(h->n_local, 0);
	assert_int_equal(atomic_load(&h->counters.passthrough), 1);
	/* the client's close reaches the pod */
	shutdown(client, SHUT_WR);
	expect_eof(pod);
	harness_free(h, client);
}

/* HTTP/2 with prior knowledge is not HTTP/1: the pod gets it untouched */
static void test_router_h2_preface_passthrough(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
	expect(pod, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
	assert_int_equal(h->n_local, 0);
	harness_free(h, client);
}

/* a server that speaks first (SMTP-like): the client gets its greeting */
static void test_router_server_first(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(pod, "220 mail ready\r\n");
	expect(client, "220 mail ready\r\n");
	send_str(client, "EHLO x\r\n");
	expect(pod, "EHLO x\r\n");
	harness_free(h, client);
}

/* a head beyond the limit gets 431 and the connection closes */
static void test_router_head_too_large(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, "GET / HTTP/1.1\r\nX-Big: ");
	char *big = malloc(HTTP_HEAD_MAX + 1);
	assert_non_null(big);
	memset(big, 'b', HTTP_HEAD_MAX);
	big[HTTP_HEAD_MAX] = '\0';
	/* the router stops reading once it answered: write what fits */
	struct pollfd p = {.fd = client, .events = POLLOUT};
	size_t off = 0;
	while (off < HTTP_HEAD_MAX && poll(&p, 1, 200) == 1) {
		ssize_t n =
		    send(client, big + off, HTTP_HEAD_MAX - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	free(big);
	expect(client, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
	expect_eof(pod); /* closed, and never saw a byte */
	harness_free(h, client);
}

/* more headers than the router keeps for the filters: 431 too, nothing forwarded */
static void test_router_too_many_headers(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, "GET / HTTP/1.1\r\n");
	/* the router answers and closes as soon as it has seen one header too many: what
	 * follows may meet a closed socket */
	static const char many[] = "X-Many: 1\r\n", last[] = "X-User: alice\r\n\r\n";
	for (int i = 0; i <= HTTP_HEADERS_MAX; i++)
		if (send(client, many, sizeof(many) - 1, MSG_NOSIGNAL) < 0)
			break;
	(void)!send(client, last, sizeof(last) - 1, MSG_NOSIGNAL);
	expect(client, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
	expect_eof(pod);
	assert_int_equal(h->n_local, 0);
	harness_free(h, client);
}

/* "Connection: close" in a response: the client's connection closes after it */
static void test_router_response_connection_close(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	send_str(client, REQ_ALICE("/bye"));
	int local = LOCAL(h, 0);
	expect(local, REQ_ALICE("/bye"));
	static const char bye[] =
	    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye";
	send_str(local, bye); /* the local side does not close: the router does */
	expect(client, bye);
	expect_eof(client);
	harness_free(h, client);
}

/* the subscription's session is gone: its request goes to the pod */
static void test_router_local_gone_goes_to_pod(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	h->refuse_local = true;
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, REQ_ALICE("/z"));
	expect(pod, REQ_ALICE("/z"));
	send_str(pod, RESP("pod-z"));
	expect(client, RESP("pod-z"));
	harness_free(h, client);
}

/* Upgrade: after the local program's 101 both directions are raw */
static void test_router_upgrade_tunnel(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	static const char up_req[] = "GET /ws HTTP/1.1\r\nX-User: alice\r\nConnection: Upgrade\r\n"
				     "Upgrade: websocket\r\n\r\n";
	static const char up_resp[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
				      "Upgrade: websocket\r\n\r\n";
	send_str(client, up_req);
	send_str(client, "\x81\x05hello");
	int local = LOCAL(h, 0);
	expect(local, up_req);
	expect(local, "\x81\x05hello");
	send_str(local, up_resp);
	send_str(local, "\x81\x02hi");
	expect(client, up_resp);
	expect(client, "\x81\x02hi");
	send_str(client, "GET / HTTP/1.1\r\n\r\n"); /* raw now: not routed */
	expect(local, "GET / HTTP/1.1\r\n\r\n");
	expect_quiet(pod);
	harness_free(h, client);
}

/* CONNECT: the 200 ends the HTTP part; then raw both ways, through the pod here */
static void test_router_connect_tunnel(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	static const char req[] = "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n";
	static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
	send_str(client, req);
	expect(pod, req);
	send_str(pod, ok);
	send_str(pod, "raw from the server");
	expect(client, ok);
	expect(client, "raw from the server");
	send_str(client, "X-User: alice\r\n\r\nraw from the client");
	expect(pod, "X-User: alice\r\n\r\nraw from the client");
	assert_int_equal(h->n_local, 0);
	harness_free(h, client);
}

/* a response delimited by the server's close reaches the client whole, then the close */
static void test_router_close_delimited(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, "GET /old HTTP/1.0\r\n\r\n");
	expect(pod, "GET /old HTTP/1.0\r\n\r\n");
	send_str(pod, "HTTP/1.0 200 OK\r\n\r\nuntil the end");
	shutdown(pod, SHUT_WR);
	expect(client, "HTTP/1.0 200 OK\r\n\r\nuntil the end");
	expect_eof(client);
	harness_free(h, client);
}

/* the client half-closes after its requests: the answers still come */
static void test_router_client_half_close(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	int pod = POD(h, 0);
	send_str(client, REQ_OTHER("/1") REQ_ALICE("/2"));
	shutdown(client, SHUT_WR);
	expect(pod, REQ_OTHER("/1"));
	int local = LOCAL(h, 0);
	expect(local, REQ_ALICE("/2"));
	send_str(local, RESP("two!!"));
	send_str(pod, RESP("one!!"));
	expect(client, RESP("one!!") RESP("two!!"));
	expect_eof(client);
	harness_free(h, client);
}

/* ---- a randomized run: many requests, mixed, pipelined, cut at random places ---- */

#define RANDOM_REQUESTS 300

struct fake_server {
	int fd;
	const char *who;
};

/* Serves requests "METHOD /ID ..." with an optional Content-Length body until EOF,
 * answering "who-ID" with a Content-Length or chunked body (no body for HEAD). */
static void *fake_server_main(void *arg)
{
	struct fake_server *fs = arg;
	static __thread char buf[1 << 16];
	size_t got = 0;
	unsigned seed = (unsigned)fs->fd * 7919u;
	for (;;) {
		char *end;
		buf[got] = '\0';
		while (!(end = strstr(buf, "\r\n\r\n"))) {
			ssize_t n = read(fs->fd, buf + got, sizeof(buf) - 1 - got);
			if (n <= 0)
				return NULL;
			got += (size_t)n;
			buf[got] = '\0';
		}
		size_t head = (size_t)(end + 4 - buf), body = 0;
		const char *cl = strstr(buf, "Content-Length: ");
		if (cl && cl < end)
			body = strtoul(cl + 16, NULL, 10);
		while (got < head + body) {
			ssize_t n = read(fs->fd, buf + got, sizeof(buf) - 1 - got);
			if (n <= 0)
				return NULL;
			got += (size_t)n;
		}
		bool is_head = strncmp(buf, "HEAD ", 5) == 0;
		int id = atoi(strchr(buf, '/') + 1);
		char text[64], reply[256];
		int tl = snprintf(text, sizeof(text), "%s-%d", fs->who, id), rl;
		if (!is_head && rand_r(&seed) % 2)
			rl = snprintf(reply, sizeof(reply),
				      "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
				      "chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
				      tl, text);
		else
			rl = snprintf(reply, sizeof(reply),
				      "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", tl,
				      is_head ? "" : text);
		if (hm_write_all(fs->fd, reply, (size_t)rl) != rl)
			return NULL;
		memmove(buf, buf + head + body, got - head - body);
		got -= head + body;
	}
}

struct random_client {
	int fd;
	char *data;
	size_t len;
};

static void *random_writer_main(void *arg)
{
	struct random_client *rc = arg;
	unsigned seed = 42;
	for (size_t off = 0; off < rc->len;) {
		size_t n = 1 + (size_t)rand_r(&seed) % 700;
		if (n > rc->len - off)
			n = rc->len - off;
		if (hm_write_all(rc->fd, rc->data + off, n) != (ssize_t)n)
			break;
		off += n;
		if (rand_r(&seed) % 8 == 0)
			usleep(200);
	}
	return NULL;
}

static void append(char **buf, size_t *len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	*buf = realloc(*buf, *len + (size_t)n + 1);
	assert_non_null(*buf);
	memcpy(*buf + *len, s, (size_t)n + 1);
	*len += (size_t)n;
	free(s);
}

static void test_router_random_mix(void **state)
{
	(void)state;
	struct harness *h = harness_new(FILTER_ALICE);
	int client = harness_client(h);
	char *reqs = NULL, *want = NULL;
	size_t reqs_len = 0, want_len = 0;
	unsigned seed = 7;
	for (int i = 0; i < RANDOM_REQUESTS; i++) {
		bool alice = rand_r(&seed) % 2, head = rand_r(&seed) % 5 == 0;
		bool post = !head && rand_r(&seed) % 3 == 0;
		append(&reqs, &reqs_len, "%s /%d HTTP/1.1\r\nHost: web\r\n%s",
		       head   ? "HEAD"
		       : post ? "POST"
			      : "GET",
		       i, alice ? "X-User: alice\r\n" : "");
		if (post)
			append(&reqs, &reqs_len, "Content-Length: %d\r\n\r\n%0*d", 10 + i, 10 + i,
			       i);
		else
			append(&reqs, &reqs_len, "\r\n");
	}
	struct random_client rc = {.fd = client, .data = reqs, .len = reqs_len};
	pthread_t writer;
	assert_int_equal(pthread_create(&writer, NULL, random_writer_main, &rc), 0);
	struct fake_server pod = {.fd = POD(h, 0), .who = "pod"};
	pthread_t pod_th, local_th;
	assert_int_equal(pthread_create(&pod_th, NULL, fake_server_main, &pod), 0);
	struct fake_server local = {.fd = LOCAL(h, 0), .who = "local"};
	assert_int_equal(pthread_create(&local_th, NULL, fake_server_main, &local), 0);
	/* what the client must read, in its order: the servers' answers are chunked or not
	 * at random, so compare the bodies in sequence */
	size_t got_len = 0, cap = 1 << 20;
	char *got = malloc(cap);
	assert_non_null(got);
	seed = 7;
	int bodies = 0;
	for (int i = 0; i < RANDOM_REQUESTS; i++) {
		bool alice = rand_r(&seed) % 2, head = rand_r(&seed) % 5 == 0;
		if (!head)
			rand_r(&seed);
		if (!head) {
			append(&want, &want_len, "%s-%d|", alice ? "local" : "pod", i);
			bodies++;
		}
	}
	/* read until every body was seen */
	int seen = 0;
	while (seen < bodies) {
		struct pollfd p = {.fd = client, .events = POLLIN};
		if (poll(&p, 1, 10000) != 1)
			fail_msg("timed out with %d of %d bodies", seen, bodies);
		ssize_t n = read(client, got + got_len, cap - 1 - got_len);
		if (n <= 0)
			fail_msg("EOF with %d of %d bodies", seen, bodies);
		got_len += (size_t)n;
		got[got_len] = '\0';
		seen = 0;
		for (const char *q = got; (q = strstr(q, "-")) != NULL; q++)
			if ((q - got >= 3 && !strncmp(q - 3, "pod", 3)) ||
			    (q - got >= 5 && !strncmp(q - 5, "local", 5)))
				seen++;
	}
	/* the bodies, in order */
	char *order = NULL;
	size_t order_len = 0;
	for (const char *q = got; (q = strchr(q, '-')) != NULL; q++) {
		const char *w = NULL;
		if (q - got >= 5 && !strncmp(q - 5, "local", 5))
			w = "local";
		else if (q - got >= 3 && !strncmp(q - 3, "pod", 3))
			w = "pod";
		if (w)
			append(&order, &order_len, "%s-%d|", w, atoi(q + 1));
	}
	assert_non_null(order);
	assert_string_equal(order, want);
	pthread_join(writer, NULL);
	shutdown(pod.fd, SHUT_RDWR);
	shutdown(local.fd, SHUT_RDWR);
	pthread_join(pod_th, NULL);
	pthread_join(local_th, NULL);
	free(order);
	free(got);
	free(reqs);
	free(want);
	harness_free(h, client);
}

int main(void)
{
	hm_log_init("test_agent_http", HM_LOG_QUIET);
	/* a write to a connection the router closed must fail, not kill the test */
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_filter_parse_good),
	    cmocka_unit_test(test_filter_parse_bad),
	    cmocka_unit_test(test_filter_match),
	    cmocka_unit_test(test_filter_hostile_regex_is_bounded),
	    cmocka_unit_test(test_pick_hostile_filters_are_bounded_in_all),
	    cmocka_unit_test(test_pick),
	    cmocka_unit_test(test_reader_request_split),
	    cmocka_unit_test(test_router_keepalive_mix),
	    cmocka_unit_test(test_router_keepalive_mix_pod_later),
	    cmocka_unit_test(test_router_pipelined_in_order),
	    cmocka_unit_test(test_router_chunked_head_continue),
	    cmocka_unit_test(test_router_one_byte_writes),
	    cmocka_unit_test(test_router_not_http_passthrough),
	    cmocka_unit_test(test_router_h2_preface_passthrough),
	    cmocka_unit_test(test_router_server_first),
	    cmocka_unit_test(test_router_head_too_large),
	    cmocka_unit_test(test_router_too_many_headers),
	    cmocka_unit_test(test_router_response_connection_close),
	    cmocka_unit_test(test_router_local_gone_goes_to_pod),
	    cmocka_unit_test(test_router_upgrade_tunnel),
	    cmocka_unit_test(test_router_connect_tunnel),
	    cmocka_unit_test(test_router_close_delimited),
	    cmocka_unit_test(test_router_client_half_close),
	    cmocka_unit_test(test_router_random_mix),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
