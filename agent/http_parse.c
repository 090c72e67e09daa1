/* agent: HTTP/1.x message framing for the steal router, over Debian's libhttp-parser.
 * The parser finds where heads and messages end (content-length, chunked, HEAD, 1xx,
 * 204/304, close-delimited, Upgrade/CONNECT); the router forwards the raw bytes by
 * those offsets, so nothing is re-encoded. Header strings are recorded as offsets into
 * the caller's buffer: a header split over several reads arrives as pieces that are
 * adjacent there. */
#include <http_parser.h>
#include <string.h>

#include "agent/internal.h"

struct span {
	size_t off, len;
};

struct http_reader_state {
	http_parser parser;
	bool request;
	bool head_done, msg_done, in_message;
	bool expect_head;
	bool too_large;
	bool keep_alive; /* of the message that ended */
	int events;	 /* of the feed in progress */
	/* request capture, offsets from base */
	const char *base;
	size_t msg_start;  /* offset of the message's first byte in base */
	size_t head_bytes; /* bytes of the head so far */
	struct span url;
	struct span names[HTTP_HEADERS_MAX], values[HTTP_HEADERS_MAX];
	size_t n_headers;
	bool last_was_value;
};

static struct http_reader_state *state_of(http_parser *p)
{
	return (struct http_reader_state *)p->data;
}

static void extend(struct http_reader_state *s, struct span *sp, const char *at, size_t len)
{
	size_t off = (size_t)(at - s->base);
	if (sp->len == 0)
		sp->off = off;
	sp->len = off + len - sp->off; /* pieces are adjacent in base */
}

static int on_message_begin(http_parser *p)
{
	struct http_reader_state *s = state_of(p);
	s->in_message = true;
	s->head_done = s->msg_done = false;
	s->url = (struct span){0};
	s->n_headers = 0;
	s->last_was_value = false;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	extend(state_of(p), &state_of(p)->url, at, len);
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_reader_state *s = state_of(p);
	if (!s->request)
		return 0;
	if (s->last_was_value || s->n_headers == 0) {
		if (s->n_headers == HTTP_HEADERS_MAX) {
			s->too_large = true;
			return -1;
		}
		s->names[s->n_headers] = (struct span){0};
		s->values[s->n_headers] = (struct span){0};
		s->n_headers++;
		s->last_was_value = false;
	}
	extend(s, &s->names[s->n_headers - 1], at, len);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_reader_state *s = state_of(p);
	if (!s->request || s->n_headers == 0)
		return 0;
	s->last_was_value = true;
	extend(s, &s->values[s->n_headers - 1], at, len);
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct http_reader_state *s = state_of(p);
	s->head_done = true;
	s->events |= HTTP_EV_HEAD;
	/* 1: no body whatever the headers say (libhttp-parser's F_SKIPBODY) */
	return !s->request && s->expect_head ? 1 : 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_reader_state *s = state_of(p);
	s->msg_done = true;
	s->in_message = false;
	s->keep_alive = http_should_keep_alive(p);
	s->events |= HTTP_EV_END;
	/* one message per feed: the router routes the next one on its own */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

int http_reader_init(struct http_reader *r, bool request, struct hm_err *err)
{
	r->st = calloc(1, sizeof(*r->st));
	if (!r->st)
		return hm_err_set(err, ENOMEM, "http reader");
	http_parser_init(&r->st->parser, request ? HTTP_REQUEST : HTTP_RESPONSE);
	r->st->parser.data = r->st;
	r->st->request = request;
	return 0;
}

void http_reader_fini(struct http_reader *r)
{
	free(r->st);
	r->st = NULL;
}

int http_reader_feed(struct http_reader *r, const char *base, size_t msg_start, size_t from,
		     size_t len, size_t *consumed)
{
	struct http_reader_state *s = r->st;
	*consumed = 0;
	if (from >= len)
		return 0;
	if (HTTP_PARSER_ERRNO(&s->parser) != HPE_OK)
		return HTTP_EV_ERROR;
	/* offsets already recorded stay valid: the caller keeps the message's bytes at
	 * base + msg_start; rebase them if the caller moved the buffer */
	if (s->base && s->in_message && !s->head_done && s->msg_start != msg_start) {
		/* the message moved as a whole inside the buffer: shift every offset */
		ptrdiff_t d = (ptrdiff_t)msg_start - (ptrdiff_t)s->msg_start;
		s->url.off = (size_t)((ptrdiff_t)s->url.off + d);
		for (size_t i = 0; i < s->n_headers; i++) {
			s->names[i].off = (size_t)((ptrdiff_t)s->names[i].off + d);
			s->values[i].off = (size_t)((ptrdiff_t)s->values[i].off + d);
		}
	}
	s->base = base;
	s->msg_start = msg_start;
	s->events = 0;
	size_t n = len - from;
	/* the head limit: never parse more head than HTTP_HEAD_MAX */
	if (!s->head_done) {
		size_t head_room =
		    HTTP_HEAD_MAX - (s->head_bytes < HTTP_HEAD_MAX ? s->head_bytes : HTTP_HEAD_MAX);
		if (head_room == 0) {
			s->too_large = true;
			return HTTP_EV_ERROR;
		}
	}
	size_t done = http_parser_execute(&s->parser, &settings, base + from, n);
	enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
	if (!s->head_done || (s->events & HTTP_EV_HEAD)) {
		/* bytes up to the end of the head count against the limit */
		s->head_bytes += done;
		if (!s->head_done && s->head_bytes >= HTTP_HEAD_MAX) {
			s->too_large = true;
			*consumed = done;
			return s->events | HTTP_EV_ERROR;
		}
	}
	*consumed = done;
	if (e == HPE_PAUSED) {
		if (s->parser.upgrade)
			s->events |= HTTP_EV_UPGRADE;
		return s->events;
	}
	if (e != HPE_OK) {
		if (e == HPE_HEADER_OVERFLOW)
			s->too_large = true;
		return s->events | HTTP_EV_ERROR;
	}
	return s->events;
}

int http_reader_eof(struct http_reader *r)
{
	struct http_reader_state *s = r->st;
	if (HTTP_PARSER_ERRNO(&s->parser) == HPE_PAUSED)
		return 0;
	if (HTTP_PARSER_ERRNO(&s->parser) != HPE_OK)
		return HTTP_EV_ERROR;
	bool was_in = s->in_message;
	s->events = 0;
	http_parser_execute(&s->parser, &settings, NULL, 0);
	if (s->events & HTTP_EV_END)
		return HTTP_EV_END;
	if (HTTP_PARSER_ERRNO(&s->parser) != HPE_OK || was_in)
		return HTTP_EV_ERROR;
	return 0;
}

void http_reader_next(struct http_reader *r)
{
	struct http_reader_state *s = r->st;
	s->head_done = s->msg_done = false;
	s->head_bytes = 0;
	s->expect_head = false;
	s->base = NULL;
	if (HTTP_PARSER_ERRNO(&s->parser) == HPE_PAUSED)
		http_parser_pause(&s->parser, 0);
}

void http_reader_expect_head(struct http_reader *r, bool head)
{
	r->st->expect_head = head;
}

bool http_reader_idle(const struct http_reader *r)
{
	return !r->st->in_message;
}

void http_reader_request(const struct http_reader *r, const char *base, struct http_request *out)
{
	const struct http_reader_state *s = r->st;
	out->method = http_method_str((enum http_method)s->parser.method);
	out->url = base + s->url.off;
	out->url_len = s->url.len;
	out->n_headers = s->n_headers;
	for (size_t i = 0; i < s->n_headers; i++) {
		out->headers[i] = (struct http_header){
		    .name = base + s->names[i].off,
		    .name_len = s->names[i].len,
		    .value = base + s->values[i].off,
		    .value_len = s->values[i].len,
		};
	}
}

unsigned http_reader_status(const struct http_reader *r)
{
	return r->st->parser.status_code;
}

bool http_reader_keep_alive(const struct http_reader *r)
{
	return r->st->keep_alive;
}

bool http_reader_too_large(const struct http_reader *r)
{
	return r->st->too_large;
}

const char *http_reader_error(const struct http_reader *r)
{
	if (r->st->too_large)
		return "request head too large";
	return http_errno_description(HTTP_PARSER_ERRNO(&r->st->parser));
}
