/* libFuzzer target: what a filtered steal reads from the network. The first byte picks
 * the input: the http_filter JSON a client sends in INCOMING_SUBSCRIBE (parsed, then
 * matched against a request), a stolen client's request stream, or an upstream's
 * response stream; the streams are cut into pieces at positions the input chooses, so
 * heads and chunk sizes split across reads as they do on a socket. */
#include <stdint.h>
#include <string.h>

#include "agent/internal.h"

static struct http_filter *fixed_filter(void)
{
	static struct http_filter *f;
	static const char json[] =
	    "{\"any_of\": [{\"header\": \"^x-user: (a|b)+$\"}, {\"all_of\": [{\"method\": "
	    "\"POST\"}, {\"path\": \"^/api/v[0-9]+/\"}]}]}";
	if (!f && http_filter_parse(json, strlen(json), &f, NULL) < 0)
		__builtin_trap();
	return f;
}

static void check_request(const struct http_request *r, const char *base, size_t len)
{
	/* everything the head points to lies inside the buffer */
	if (r->url_len && (r->url < base || r->url + r->url_len > base + len))
		__builtin_trap();
	if (r->n_headers > HTTP_HEADERS_MAX)
		__builtin_trap();
	for (size_t i = 0; i < r->n_headers; i++) {
		const struct http_header *h = &r->headers[i];
		if (h->name_len && (h->name < base || h->name + h->name_len > base + len))
			__builtin_trap();
		if (h->value_len && (h->value < base || h->value + h->value_len > base + len))
			__builtin_trap();
	}
}

/* feed data as the router does: a buffer that grows by pieces, the current message kept
 * at its front, parsed bytes dropped once the message ended */
static void run_stream(const uint8_t *data, size_t size, bool request)
{
	if (size < 2)
		return;
	unsigned step = data[0] ? data[0] : 1; /* piece size */
	bool head_flag = data[1] & 1;
	data += 2;
	size -= 2;
	struct http_reader rd;
	if (http_reader_init(&rd, request, NULL) < 0)
		return;
	char *buf = malloc(size ? size : 1);
	size_t len = 0, parsed = 0, fed = 0;
	for (int rounds = 0; rounds < 100000; rounds++) {
		size_t piece = size - fed < step ? size - fed : step;
		memcpy(buf + len, data + fed, piece);
		len += piece;
		fed += piece;
		if (!request)
			http_reader_expect_head(&rd, head_flag);
		size_t used;
		int ev = parsed < len ? http_reader_feed(&rd, buf, 0, parsed, len, &used)
				      : (fed == size ? http_reader_eof(&rd) : 0);
		if (parsed < len)
			parsed += used;
		if (parsed > len)
			__builtin_trap();
		if ((ev & HTTP_EV_HEAD) && request) {
			struct http_request *r = malloc(sizeof(*r));
			http_reader_request(&rd, buf, r);
			check_request(r, buf, len);
			http_filter_match(fixed_filter(), r);
			free(r);
		}
		if (ev & HTTP_EV_ERROR) {
			http_reader_error(&rd);
			break;
		}
		if (ev & HTTP_EV_END) {
			if (ev & HTTP_EV_UPGRADE)
				break;
			memmove(buf, buf + parsed, len - parsed);
			len -= parsed;
			parsed = 0;
			http_reader_next(&rd);
			continue;
		}
		if (fed == size && (parsed == len || piece == 0) && !(ev & HTTP_EV_END))
			break;
	}
	free(buf);
	http_reader_fini(&rd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0: {
		struct http_filter *f = NULL;
		if (http_filter_parse((const char *)data + 1, size - 1, &f, NULL) == 0) {
			static const char head[] = "GET /api/v1/x?y=1 HTTP/1.1";
			struct http_request r = {.method = "GET", .url = head + 4, .url_len = 13};
			r.headers[0] = (struct http_header){"X-User", "abab", 6, 4};
			r.n_headers = 1;
			http_filter_match(f, &r);
			http_filter_free(f);
		}
		break;
	}
	case 1:
		run_stream(data + 1, size - 1, true);
		break;
	default:
		run_stream(data + 1, size - 1, false);
		break;
	}
	return 0;
}
