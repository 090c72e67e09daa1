/* The two primitives every message codec is written with: a growable writer and a
 * bounds-checked reader. Both keep the first failure sticky so a codec is a straight
 * list of put/get calls with one check at the end. */
#include <string.h>

#include "proto/proto.h"

/* A buffer may queue several frames, but never more than this: a runaway encoder
 * fails with E2BIG instead of eating memory. */
#define PROTO_BUF_LIMIT (256u << 20)

void proto_buf_release(struct proto_buf *b)
{
	free(b->data);
	*b = PROTO_BUF_INIT;
}

void proto_buf_reset(struct proto_buf *b)
{
	b->len = 0;
	b->error = 0;
}

void *proto_buf_reserve(struct proto_buf *b, size_t n)
{
	if (b->error)
		return NULL;
	if (n > PROTO_BUF_LIMIT - b->len) {
		b->error = E2BIG;
		return NULL;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n)
			cap *= 2;
		uint8_t *d = realloc(b->data, cap);
		if (!d) {
			b->error = ENOMEM;
			return NULL;
		}
		b->data = d;
		b->cap = cap;
	}
	void *p = b->data + b->len;
	b->len += n;
	return p;
}

static void put_le(struct proto_buf *b, uint64_t v, size_t n)
{
	uint8_t *p = proto_buf_reserve(b, n);
	if (!p)
		return;
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void proto_put_u8(struct proto_buf *b, uint8_t v)
{
	put_le(b, v, 1);
}

void proto_put_u16(struct proto_buf *b, uint16_t v)
{
	put_le(b, v, 2);
}

void proto_put_u32(struct proto_buf *b, uint32_t v)
{
	put_le(b, v, 4);
}

void proto_put_u64(struct proto_buf *b, uint64_t v)
{
	put_le(b, v, 8);
}

void proto_put_bytes(struct proto_buf *b, const void *p, size_t n)
{
	void *d = proto_buf_reserve(b, n);
	if (d && n)
		memcpy(d, p, n);
}

void proto_put_string(struct proto_buf *b, const char *s, size_t max)
{
	if (!s)
		s = "";
	size_t n = strnlen(s, max + 1);
	if (n > max) {
		if (!b->error)
			b->error = E2BIG;
		return;
	}
	proto_put_u32(b, (uint32_t)n);
	proto_put_bytes(b, s, n + 1);
}

void proto_reader_init(struct proto_reader *r, const void *p, size_t len)
{
	*r = (struct proto_reader){.p = p, .len = p ? len : 0};
}

void proto_reader_fail(struct proto_reader *r, int code, const char *why)
{
	if (r->error)
		return;
	r->error = code;
	r->why = why;
}

/* Returns a pointer to the next n bytes and advances, or NULL (sticky failure). */
static const uint8_t *take(struct proto_reader *r, size_t n)
{
	if (r->error)
		return NULL;
	if (n > r->len - r->off) {
		proto_reader_fail(r, EBADMSG, "truncated");
		return NULL;
	}
	if (!r->p) /* an empty payload may have no buffer at all */
		return (const uint8_t *)"";
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}

static uint64_t get_le(struct proto_reader *r, size_t n)
{
	const uint8_t *p = take(r, n);
	uint64_t v = 0;
	if (!p)
		return 0;
	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

uint8_t proto_get_u8(struct proto_reader *r)
{
	return (uint8_t)get_le(r, 1);
}

uint16_t proto_get_u16(struct proto_reader *r)
{
	return (uint16_t)get_le(r, 2);
}

uint32_t proto_get_u32(struct proto_reader *r)
{
	return (uint32_t)get_le(r, 4);
}

uint64_t proto_get_u64(struct proto_reader *r)
{
	return get_le(r, 8);
}

const void *proto_get_bytes(struct proto_reader *r, size_t n)
{
	return take(r, n);
}

const char *proto_get_string(struct proto_reader *r, size_t max)
{
	uint32_t n = proto_get_u32(r);
	if (r->error)
		return "";
	if (n > max) {
		proto_reader_fail(r, E2BIG, "string too long");
		return "";
	}
	const char *s = (const char *)take(r, (size_t)n + 1);
	if (!s)
		return "";
	if (memchr(s, '\0', n) || s[n] != '\0') {
		proto_reader_fail(r, EBADMSG, "string with an embedded or missing NUL");
		return "";
	}
	return s;
}

int proto_reader_finish(struct proto_reader *r, const char *what, struct hm_err *err)
{
	if (!r->error && r->off != r->len)
		proto_reader_fail(r, EBADMSG, "trailing bytes");
	if (r->error)
		return hm_err_set(err, r->error, "%s: %s at offset %zu", what, r->why, r->off);
	return 0;
}
