/* Every message's payload layout, written once. A layout is one function over a codec
 * that either encodes or decodes: the same field list in the same order drives both
 * directions, so the encoder and the decoder cannot drift apart. A value rule
 * (c_check, c_require) holds both ways: the decoder refuses a peer's message that
 * breaks it, the encoder refuses to send one (EINVAL), so what we send always decodes. */
#include <string.h>

#include "proto/proto.h"

/* ---- the codec: one field operation, two directions ---- */

struct codec {
	struct proto_buf *out;	 /* encoding: the frame being written; NULL when decoding */
	struct proto_reader *in; /* decoding: the payload being read */
	struct proto_msg *m;	 /* decoding: owns what the decoder allocates */
};

static bool decoding(const struct codec *c)
{
	return c->out == NULL;
}

/* no failure so far (failures are sticky in both directions) */
static bool c_ok(const struct codec *c)
{
	return decoding(c) ? !c->in->error : !c->out->error;
}

/* A value rule: a decoded value breaking it fails with code and why, a value to encode
 * fails the encode with EINVAL. The first failure is the one reported. */
static void c_require(struct codec *c, bool ok, int code, const char *why)
{
	if (ok)
		return;
	if (decoding(c))
		proto_reader_fail(c->in, code, why);
	else if (!c->out->error)
		c->out->error = EINVAL;
}

static void c_check(struct codec *c, bool ok, const char *why)
{
	c_require(c, ok, EBADMSG, why);
}

/* fixed-width integers: little-endian, signed ones as their two's complement */
#define CODEC_INT(name, type, bits)                                                                \
	static void c_##name(struct codec *c, type *v)                                             \
	{                                                                                          \
		if (decoding(c))                                                                   \
			*v = (type)proto_get_u##bits(c->in);                                       \
		else                                                                               \
			proto_put_u##bits(c->out, (uint##bits##_t)(*v));                           \
	}
CODEC_INT(u8, uint8_t, 8)
CODEC_INT(u16, uint16_t, 16)
CODEC_INT(u32, uint32_t, 32)
CODEC_INT(u64, uint64_t, 64)
CODEC_INT(i32, int32_t, 32)
CODEC_INT(i64, int64_t, 64)
#undef CODEC_INT

/* A field with one legal value (magic, version): a peer sending another is not
 * speaking this protocol (EPROTO). */
static void c_const_u32(struct codec *c, uint32_t value, const char *why)
{
	uint32_t v = value;
	c_u32(c, &v);
	c_require(c, v == value, EPROTO, why);
}

static void c_const_u16(struct codec *c, uint16_t value, const char *why)
{
	uint16_t v = value;
	c_u16(c, &v);
	c_require(c, v == value, EPROTO, why);
}

/* a u32 of flag bits, of which only known may be set */
static void c_flags(struct codec *c, uint32_t *v, uint32_t known)
{
	c_u32(c, v);
	c_require(c, !(*v & ~known), EPROTO, "unknown flag bits");
}

/* A string of at most max bytes; decoded, it points into the payload. Encoding NULL
 * writes "". */
static void c_string(struct codec *c, const char **s, size_t max)
{
	if (decoding(c))
		*s = proto_get_string(c->in, max);
	else
		proto_put_string(c->out, *s, max);
}

static void c_path(struct codec *c, const char **path)
{
	c_string(c, path, PROTO_PATH_MAX);
	c_check(c, *path && (*path)[0] == '/', "path is not absolute");
}

/* n bytes copied in or out, e.g. a token */
static void c_bytes(struct codec *c, void *p, size_t n)
{
	if (!decoding(c)) {
		proto_put_bytes(c->out, p, n);
		return;
	}
	const void *src = proto_get_bytes(c->in, n);
	if (src)
		memcpy(p, src, n);
}

static void c_token(struct codec *c, uint8_t token[PROTO_TOKEN_LEN])
{
	c_bytes(c, token, PROTO_TOKEN_LEN);
}

/* n bytes by reference: decoded, *p points into the payload */
static void c_bytes_ref(struct codec *c, const void **p, size_t n)
{
	if (decoding(c)) {
		*p = proto_get_bytes(c->in, n);
		return;
	}
	c_require(c, *p || !n, EINVAL, "no bytes to send");
	if (c_ok(c))
		proto_put_bytes(c->out, *p, n);
}

/* Smallest wire size of one list element, used to refuse an element count the payload
 * cannot possibly hold before allocating the array. */
#define MIN_STRING 5			    /* u32 length + NUL */
#define MIN_DIRENT (8 + 1 + MIN_STRING + 1) /* ino, type, non-empty name */

/* A counted list: u32 count, then the elements. Returns the array to walk: the
 * caller's when encoding (NULL only with count 0), a zeroed one of *count elements
 * owned by the message when decoding (NULL after a failure, with *count 0). */
static void *c_list(struct codec *c, uint32_t *count, const void *array, size_t elem_size,
		    size_t min_wire_size)
{
	if (!decoding(c)) {
		c_require(c, array || !*count, EINVAL, "no list to send");
		c_u32(c, count);
		return (void *)array; /* encoding only reads the elements */
	}
	c_u32(c, count);
	struct proto_reader *r = c->in;
	if (!r->error && *count > (r->len - r->off) / min_wire_size)
		proto_reader_fail(r, EBADMSG, "count larger than the payload");
	void *a = r->error ? NULL : calloc(*count ? *count : 1, elem_size);
	if (!r->error && !a)
		proto_reader_fail(r, ENOMEM, "out of memory");
	if (!a) {
		*count = 0;
		return NULL;
	}
	c->m->owned.array = a;
	return a;
}

/* An optional tail: encoded when the message has it, decoded when the payload goes on. */
static bool c_has_tail(const struct codec *c, bool present)
{
	return decoding(c) ? c_ok(c) && c->in->off < c->in->len : present;
}

/* ---- value rules ---- */

#define STAT_MODE_BITS 0177777u /* S_IFMT | 07777 */
#define PERM_BITS 07777u
#define ERRNO_MAX 4095
#define WRITE_FLAGS                                                                                \
	(PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC | PROTO_WRITE_EXCL | PROTO_WRITE_NOFOLLOW |        \
	 PROTO_WRITE_FSYNC)

static bool errno_ok(int32_t e)
{
	return e > 0 && e <= ERRNO_MAX;
}

static bool status_ok(int32_t e)
{
	return e == 0 || errno_ok(e);
}

static bool stat_ok(const struct proto_stat *s)
{
	return !(s->mode & ~STAT_MODE_BITS) && s->atime.nsec < 1000000000u &&
	       s->mtime.nsec < 1000000000u && s->ctime.nsec < 1000000000u;
}

static bool name_ok(const char *s)
{
	return s && s[0] && !strchr(s, '/');
}

static bool family_ok(uint8_t f)
{
	return f == PROTO_AF_INET || f == PROTO_AF_INET6;
}

static bool target_ok(const char *target)
{
	struct proto_target t;
	return target && proto_target_parse(target, &t, NULL) == 0;
}

/* ---- compound field types ---- */

static void c_addr(struct codec *c, struct proto_addr *a)
{
	if (decoding(c))
		memset(a, 0, sizeof(*a));
	c_u8(c, &a->family);
	c_u16(c, &a->port);
	c_check(c, family_ok(a->family), "unknown address family");
	if (!c_ok(c))
		return;
	c_bytes(c, a->addr, a->family == PROTO_AF_INET6 ? 16 : 4);
	if (a->family == PROTO_AF_INET6)
		c_u32(c, &a->scope_id);
}

static void c_time(struct codec *c, struct proto_time *t)
{
	c_i64(c, &t->sec);
	c_u32(c, &t->nsec);
}

static void c_stat(struct codec *c, struct proto_stat *s)
{
	c_u64(c, &s->ino);
	c_u64(c, &s->size);
	c_u64(c, &s->blocks);
	uint32_t *u32s[] = {&s->dev_major, &s->dev_minor, &s->rdev_major, &s->rdev_minor, &s->mode,
			    &s->nlink,	   &s->uid,	  &s->gid,	  &s->blksize};
	for (size_t i = 0; i < HM_ARRAY_SIZE(u32s); i++)
		c_u32(c, u32s[i]);
	c_time(c, &s->atime);
	c_time(c, &s->mtime);
	c_time(c, &s->ctime);
	c_check(c, stat_ok(s), "bad stat mode or nanoseconds");
}

static void c_statfs(struct codec *c, struct proto_statfs *s)
{
	uint64_t *u64s[] = {&s->type,	&s->bsize, &s->frsize, &s->blocks,  &s->bfree,
			    &s->bavail, &s->files, &s->ffree,  &s->namelen, &s->flags};
	for (size_t i = 0; i < HM_ARRAY_SIZE(u64s); i++)
		c_u64(c, u64s[i]);
	c_u32(c, &s->fsid[0]);
	c_u32(c, &s->fsid[1]);
}

/* Inline file content: u8 encoding | u64 size | u32 n | n bytes. The one field whose
 * wire form depends on the direction: the encoder chooses to deflate, the decoder
 * inflates into memory the message owns. */
static void put_blob(struct proto_buf *b, const struct proto_blob *bl)
{
	size_t at = b->len;
	proto_put_u8(b, PROTO_ENC_RAW);
	proto_put_u64(b, bl->size);
	proto_put_u32(b, (uint32_t)bl->size);
	uint8_t *dst = proto_buf_reserve(b, bl->size);
	if (!dst)
		return;
	size_t n = bl->compress ? proto_deflate(bl->data, bl->size, dst, bl->size) : 0;
	if (!n) {
		if (bl->size)
			memcpy(dst, bl->data, bl->size);
		return;
	}
	b->data[at] = PROTO_ENC_ZLIB;
	for (size_t i = 0; i < 4; i++)
		b->data[at + 9 + i] = (uint8_t)(n >> (8 * i));
	b->len = at + 13 + n;
}

/* deflate cannot expand better than ~1032:1; anything claiming more is a lie meant to
 * make us allocate */
#define ZLIB_MAX_RATIO 1032

static void get_blob(struct proto_reader *r, struct proto_blob *bl, struct proto_msg *m)
{
	bl->encoding = proto_get_u8(r);
	bl->size = proto_get_u64(r);
	uint32_t n = proto_get_u32(r);
	const void *p = proto_get_bytes(r, n);
	if (r->error)
		return;
	if (bl->size > PROTO_INLINE_MAX) {
		proto_reader_fail(r, E2BIG, "inline content over PROTO_INLINE_MAX");
		return;
	}
	if (bl->encoding == PROTO_ENC_RAW) {
		if (n != bl->size)
			proto_reader_fail(r, EBADMSG, "raw content length mismatch");
		bl->data = p;
		return;
	}
	if (bl->encoding != PROTO_ENC_ZLIB) {
		proto_reader_fail(r, EPROTO, "unknown content encoding");
		return;
	}
	if (bl->size > (uint64_t)n * ZLIB_MAX_RATIO) {
		proto_reader_fail(r, EBADMSG, "impossible compression ratio");
		return;
	}
	void *dst = malloc(bl->size ? bl->size : 1);
	if (!dst) {
		proto_reader_fail(r, ENOMEM, "out of memory inflating content");
		return;
	}
	m->owned.inflated = dst;
	if (proto_inflate(p, n, dst, bl->size, NULL) < 0) {
		proto_reader_fail(r, EBADMSG, "bad zlib content");
		return;
	}
	bl->data = dst;
}

static void c_blob(struct codec *c, struct proto_blob *bl)
{
	if (decoding(c)) {
		get_blob(c->in, bl, c->m);
		return;
	}
	c_require(c, bl->size <= PROTO_INLINE_MAX && (bl->data || !bl->size), EINVAL,
		  "bad inline content");
	if (c_ok(c))
		put_blob(c->out, bl);
}

/* ---- the message layouts, in the order of the wire ---- */

static void hello(struct codec *c, struct proto_msg *m)
{
	struct proto_hello *h = &m->hello;
	c_const_u32(c, PROTO_MAGIC, "bad magic: not a hermit client");
	c_u16(c, &h->version);
	c_u64(c, &h->features);
	c_string(c, &h->token, PROTO_AUTH_TOKEN_MAX);
	c_string(c, &h->client, PROTO_NAME_MAX);
}

static void hello_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_hello_reply *h = &m->hello_reply;
	c_i32(c, &h->error);
	c_check(c, status_ok(h->error), "bad errno");
	c_u16(c, &h->version);
	c_u64(c, &h->features);
	c_string(c, &h->reason, PROTO_NAME_MAX);
	c_string(c, &h->server, PROTO_NAME_MAX);
}

static void stream_hello(struct codec *c, struct proto_msg *m)
{
	c_const_u32(c, PROTO_MAGIC, "bad magic: not a hermit stream");
	c_const_u16(c, PROTO_VERSION, "unsupported protocol version");
	c_token(c, m->stream_hello.token);
}

static void stream_hello_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_stream_hello_reply *s = &m->stream_hello_reply;
	c_i32(c, &s->error);
	c_check(c, status_ok(s->error), "bad errno");
	c_string(c, &s->reason, PROTO_NAME_MAX);
}

static void failure(struct codec *c, struct proto_msg *m) /* ERROR, SESSION_ENDED */
{
	c_i32(c, &m->error.errnum);
	c_check(c, errno_ok(m->error.errnum), "bad errno");
	c_string(c, &m->error.message, PROTO_MSG_MAX);
}

static void ping(struct codec *c, struct proto_msg *m) /* PING, PONG */
{
	c_u64(c, &m->ping.nonce);
}

static void status_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_status_reply *s = &m->status_reply;
	c_string(c, &s->version, PROTO_NAME_MAX);
	c_u64(c, &s->uptime_ms);
	c_u32(c, &s->sessions);
	c_u32(c, &s->streams);
	c_u64(c, &s->requests);
	c_u64(c, &s->errors);
	c_u64(c, &s->bytes_in);
	c_u64(c, &s->bytes_out);
	c_check(c, s->nbudgets <= PROTO_BUDGET_COUNT, "too many budgets");
	if (!c_has_tail(c, s->nbudgets))
		return; /* an agent without budgets */
	uint8_t n = s->nbudgets;
	c_u8(c, &n);
	c_check(c, n > 0 && n <= PROTO_BUDGET_MAX, "bad budget count");
	for (unsigned i = 0; i < n && c_ok(c); i++) {
		/* a later agent's budgets are read past and dropped */
		struct proto_budget unknown = {0};
		struct proto_budget *bd = i < PROTO_BUDGET_COUNT ? &s->budgets[i] : &unknown;
		c_u64(c, &bd->used);
		c_u64(c, &bd->limit);
		c_u64(c, &bd->peak);
		c_u64(c, &bd->refused);
	}
	s->nbudgets = n < PROTO_BUDGET_COUNT ? n : PROTO_BUDGET_COUNT;
	if (!c_has_tail(c, s->has_incoming))
		return; /* an agent without incoming traffic */
	s->has_incoming = true;
	c_u32(c, &s->subscriptions);
	c_u64(c, &s->mirrored);
	c_u64(c, &s->mirror_lost);
	c_u64(c, &s->mirror_bytes);
	c_u64(c, &s->stolen);
	c_u64(c, &s->passed_to_target);
	if (!c_has_tail(c, s->has_kernel_relay))
		return; /* an agent without a kernel relay */
	s->has_kernel_relay = true;
	uint8_t on = s->kernel_relay_on;
	c_u8(c, &on);
	c_check(c, on <= 1, "bad kernel relay flag");
	s->kernel_relay_on = on;
	c_u32(c, &s->kernel_streams);
}

static void session_open(struct codec *c, struct proto_msg *m)
{
	c_string(c, &m->session_open.target, PROTO_NAME_MAX);
	c_check(c, target_ok(m->session_open.target), "bad target");
}

static void session_open_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_session_open_reply *s = &m->session_open_reply;
	c_u64(c, &s->session_id);
	c_u32(c, &s->pid);
	c_string(c, &s->description, PROTO_NAME_MAX);
}

static void env_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_env_reply *e = &m->env_reply;
	const char **vars = c_list(c, &e->count, e->vars, sizeof(*vars), MIN_STRING);
	for (uint32_t i = 0; i < e->count && c_ok(c); i++)
		c_string(c, &vars[i], PROTO_ENV_ENTRY_MAX);
	e->vars = vars;
}

static void file_read(struct codec *c, struct proto_msg *m)
{
	struct proto_file_read *f = &m->file_read;
	c_path(c, &f->path);
	c_flags(c, &f->flags, PROTO_READ_NOFOLLOW);
	c_u64(c, &f->max_size);
}

static void file_read_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_file_read_reply *f = &m->file_read_reply;
	c_stat(c, &f->st);
	c_u8(c, &f->transfer);
	if (f->transfer == PROTO_XFER_INLINE) {
		c_blob(c, &f->data);
	} else if (f->transfer == PROTO_XFER_STREAM) {
		c_u64(c, &f->stream_size);
		c_token(c, f->token);
	} else {
		c_require(c, false, EPROTO, "unknown transfer kind");
	}
}

static void file_write(struct codec *c, struct proto_msg *m)
{
	struct proto_file_write *f = &m->file_write;
	c_path(c, &f->path);
	c_flags(c, &f->flags, WRITE_FLAGS);
	c_u32(c, &f->mode);
	c_check(c, !(f->mode & ~PERM_BITS), "bad mode");
	c_u64(c, &f->offset);
	c_blob(c, &f->data);
}

static void file_write_reply(struct codec *c, struct proto_msg *m)
{
	c_u64(c, &m->file_write_reply.written);
	c_stat(c, &m->file_write_reply.st);
}

/* FILE_STAT, FILE_READLINK, FILE_READDIR, FILE_STATFS */
static void path_req(struct codec *c, struct proto_msg *m)
{
	c_path(c, &m->path_req.path);
	c_flags(c, &m->path_req.flags, m->type == PROTO_FILE_STAT ? PROTO_STAT_NOFOLLOW : 0);
}

static void stat_reply(struct codec *c, struct proto_msg *m)
{
	c_stat(c, &m->stat_reply);
}

static void file_access(struct codec *c, struct proto_msg *m)
{
	struct proto_file_access *f = &m->file_access;
	c_path(c, &f->path);
	c_flags(c, &f->mode, PROTO_ACCESS_R | PROTO_ACCESS_W | PROTO_ACCESS_X);
	c_flags(c, &f->flags, PROTO_ACCESS_EACCESS | PROTO_ACCESS_NOFOLLOW);
}

static void file_mkdir(struct codec *c, struct proto_msg *m)
{
	c_path(c, &m->file_mkdir.path);
	c_flags(c, &m->file_mkdir.mode, PERM_BITS);
}

static void file_unlink(struct codec *c, struct proto_msg *m)
{
	c_path(c, &m->file_unlink.path);
	c_flags(c, &m->file_unlink.flags, PROTO_UNLINK_DIR);
}

static void file_rename(struct codec *c, struct proto_msg *m)
{
	struct proto_file_rename *f = &m->file_rename;
	c_path(c, &f->from);
	c_path(c, &f->to);
	c_flags(c, &f->flags, PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE);
	c_check(c, f->flags != (PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE),
		"NOREPLACE and EXCHANGE together");
}

static void readlink_reply(struct codec *c, struct proto_msg *m)
{
	const char **target = &m->readlink_reply.target;
	c_string(c, target, PROTO_PATH_MAX);
	c_check(c, *target && (*target)[0], "empty link target");
}

static void readdir_reply(struct codec *c, struct proto_msg *m)
{
	struct proto_readdir_reply *d = &m->readdir_reply;
	struct proto_dirent *ents = c_list(c, &d->count, d->entries, sizeof(*ents), MIN_DIRENT);
	for (uint32_t i = 0; i < d->count && c_ok(c); i++) {
		c_u64(c, &ents[i].ino);
		c_u8(c, &ents[i].type);
		c_string(c, &ents[i].name, PROTO_FILENAME_MAX);
		c_check(c, name_ok(ents[i].name), "bad file name");
	}
	d->entries = ents;
}

static void statfs_reply(struct codec *c, struct proto_msg *m)
{
	c_statfs(c, &m->statfs_reply);
}

static void tcp_connect(struct codec *c, struct proto_msg *m)
{
	c_addr(c, &m->tcp_connect.dst);
	c_u32(c, &m->tcp_connect.timeout_ms);
}

static void tcp_connect_reply(struct codec *c, struct proto_msg *m)
{
	c_token(c, m->tcp_connect_reply.token);
	c_addr(c, &m->tcp_connect_reply.local);
}

static void udp_open(struct codec *c, struct proto_msg *m)
{
	c_u8(c, &m->udp_open.family);
	c_check(c, family_ok(m->udp_open.family), "unknown address family");
}

static void udp_open_reply(struct codec *c, struct proto_msg *m)
{
	c_token(c, m->udp_open_reply.token);
	c_addr(c, &m->udp_open_reply.local);
}

static void udp_datagram(struct codec *c, struct proto_msg *m)
{
	struct proto_udp_datagram *d = &m->udp_datagram;
	c_addr(c, &d->peer);
	c_u32(c, &d->len);
	c_require(c, d->len <= PROTO_DATAGRAM_MAX, E2BIG, "datagram too large");
	c_bytes_ref(c, &d->data, d->len);
}

static void incoming_subscribe(struct codec *c, struct proto_msg *m)
{
	struct proto_incoming_subscribe *s = &m->incoming_subscribe;
	c_u16(c, &s->port);
	c_check(c, s->port != 0, "port 0");
	c_u8(c, &s->mode);
	c_check(c, s->mode == PROTO_INCOMING_MIRROR || s->mode == PROTO_INCOMING_STEAL,
		"unknown incoming mode");
	c_flags(c, &s->flags,
		PROTO_INCOMING_FLUSH | PROTO_INCOMING_CONCURRENT | PROTO_INCOMING_RELAY |
		    PROTO_INCOMING_DUAL_STACK);
	c_string(c, &s->http_filter, PROTO_HTTP_FILTER_MAX);
	c_check(c, s->mode == PROTO_INCOMING_STEAL || !s->http_filter || !s->http_filter[0],
		"an http filter needs steal mode");
}

static void incoming_subscribe_reply(struct codec *c, struct proto_msg *m)
{
	c_u32(c, &m->incoming_subscribe_reply.subscription);
	c_check(c, m->incoming_subscribe_reply.subscription != 0, "subscription 0");
	c_string(c, &m->incoming_subscribe_reply.note, PROTO_MSG_MAX);
}

static void incoming_unsubscribe(struct codec *c, struct proto_msg *m)
{
	c_u32(c, &m->incoming_unsubscribe.subscription);
	c_check(c, m->incoming_unsubscribe.subscription != 0, "subscription 0");
}

static void incoming_connection(struct codec *c, struct proto_msg *m)
{
	struct proto_incoming_connection *ic = &m->incoming_connection;
	c_u32(c, &ic->subscription);
	c_check(c, ic->subscription != 0, "subscription 0");
	c_token(c, ic->token);
	c_addr(c, &ic->client);
	c_addr(c, &ic->server);
}

static void incoming_data(struct codec *c, struct proto_msg *m)
{
	struct proto_incoming_data *d = &m->incoming_data;
	c_u32(c, &d->len);
	c_require(c, d->len <= PROTO_INCOMING_DATA_MAX, E2BIG, "incoming data too large");
	c_check(c, d->len > 0, "empty incoming data");
	c_bytes_ref(c, &d->data, d->len);
}

static void incoming_end(struct codec *c, struct proto_msg *m)
{
	c_i32(c, &m->incoming_end.error);
	c_check(c, m->incoming_end.error == 0 || errno_ok(m->incoming_end.error), "bad errno");
}

/* ---- the message types ---- */

typedef void layout_fn(struct codec *c, struct proto_msg *m);

/* one line per type: MSG(NAME, its success reply or 0, its layout or NULL for no body) */
#define MSG(t, reply_type, fn)                                                                     \
	{                                                                                          \
		.type = PROTO_##t, .reply = reply_type, .name = #t, .layout = fn                   \
	}
static const struct type_info {
	uint16_t type;
	uint16_t reply; /* success reply for requests, 0 for replies and events */
	const char *name;
	layout_fn *layout; /* NULL: no body */
} type_table[] = {
    MSG(HELLO, PROTO_HELLO_REPLY, hello),
    MSG(STREAM_HELLO, PROTO_STREAM_HELLO_REPLY, stream_hello),
    MSG(PING, PROTO_PONG, ping),
    MSG(STATUS, PROTO_STATUS_REPLY, NULL),
    MSG(HELLO_REPLY, 0, hello_reply),
    MSG(STREAM_HELLO_REPLY, 0, stream_hello_reply),
    MSG(PONG, 0, ping),
    MSG(STATUS_REPLY, 0, status_reply),
    MSG(OK, 0, NULL),
    MSG(ERROR, 0, failure),
    MSG(SESSION_OPEN, PROTO_SESSION_OPEN_REPLY, session_open),
    MSG(SESSION_OPEN_REPLY, 0, session_open_reply),
    MSG(SESSION_ENDED, 0, failure),
    MSG(ENV_GET, PROTO_ENV_REPLY, NULL),
    MSG(ENV_REPLY, 0, env_reply),
    MSG(FILE_READ, PROTO_FILE_READ_REPLY, file_read),
    MSG(FILE_WRITE, PROTO_FILE_WRITE_REPLY, file_write),
    MSG(FILE_STAT, PROTO_FILE_STAT_REPLY, path_req),
    MSG(FILE_ACCESS, PROTO_OK, file_access),
    MSG(FILE_READLINK, PROTO_FILE_READLINK_REPLY, path_req),
    MSG(FILE_READDIR, PROTO_FILE_READDIR_REPLY, path_req),
    MSG(FILE_MKDIR, PROTO_OK, file_mkdir),
    MSG(FILE_UNLINK, PROTO_OK, file_unlink),
    MSG(FILE_RENAME, PROTO_OK, file_rename),
    MSG(FILE_STATFS, PROTO_FILE_STATFS_REPLY, path_req),
    MSG(FILE_READ_REPLY, 0, file_read_reply),
    MSG(FILE_WRITE_REPLY, 0, file_write_reply),
    MSG(FILE_STAT_REPLY, 0, stat_reply),
    MSG(FILE_READLINK_REPLY, 0, readlink_reply),
    MSG(FILE_READDIR_REPLY, 0, readdir_reply),
    MSG(FILE_STATFS_REPLY, 0, statfs_reply),
    MSG(TCP_CONNECT, PROTO_TCP_CONNECT_REPLY, tcp_connect),
    MSG(TCP_CONNECT_REPLY, 0, tcp_connect_reply),
    MSG(UDP_OPEN, PROTO_UDP_OPEN_REPLY, udp_open),
    MSG(UDP_OPEN_REPLY, 0, udp_open_reply),
    MSG(UDP_DATAGRAM, 0, udp_datagram),
    MSG(INCOMING_SUBSCRIBE, PROTO_INCOMING_SUBSCRIBE_REPLY, incoming_subscribe),
    MSG(INCOMING_SUBSCRIBE_REPLY, 0, incoming_subscribe_reply),
    MSG(INCOMING_UNSUBSCRIBE, PROTO_OK, incoming_unsubscribe),
    MSG(INCOMING_CONNECTION, 0, incoming_connection),
    MSG(INCOMING_DATA, 0, incoming_data),
    MSG(INCOMING_END, 0, incoming_end),
#undef MSG
};

static const struct type_info *type_info(uint16_t type)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(type_table); i++)
		if (type_table[i].type == type)
			return &type_table[i];
	return NULL;
}

bool proto_type_known(uint16_t type)
{
	return type_info(type) != NULL;
}

const char *proto_type_name(uint16_t type)
{
	const struct type_info *t = type_info(type);
	return t ? t->name : "UNKNOWN";
}

uint16_t proto_reply_type(uint16_t request_type)
{
	const struct type_info *t = type_info(request_type);
	return t ? t->reply : 0;
}

/* ---- frames of messages ---- */

int proto_encode(struct proto_buf *b, uint32_t id, const struct proto_msg *m, struct hm_err *err)
{
	const struct type_info *t = type_info(m->type);
	if (!t)
		return hm_err_set(err, EPROTO, "encode: unknown message type 0x%04x", m->type);
	if (b->error)
		return hm_err_set(err, b->error, "encode %s: buffer already failed", t->name);
	size_t start = b->len;
	proto_buf_reserve(b, PROTO_HDR_LEN);
	if (t->layout) {
		/* a layout takes its message writable (decoding fills it): give it a copy */
		struct proto_msg copy = *m;
		struct codec c = {.out = b};
		t->layout(&c, &copy);
	}
	int e = b->error;
	size_t payload = b->len - start - PROTO_HDR_LEN;
	if (!e && payload > PROTO_MAX_PAYLOAD)
		e = E2BIG;
	if (e) {
		/* leave frames queued before this one intact */
		b->len = start;
		b->error = 0;
		return hm_err_set(err, e, "encode %s", t->name);
	}
	struct proto_hdr h = {.len = (uint32_t)payload, .type = m->type, .flags = 0, .id = id};
	proto_hdr_encode(b->data + start, &h);
	return 0;
}

int proto_decode(const struct proto_hdr *hdr, const void *payload, struct proto_msg *m,
		 struct hm_err *err)
{
	memset(m, 0, sizeof(*m));
	m->type = hdr->type;
	m->id = hdr->id;
	const struct type_info *t = type_info(hdr->type);
	if (!t)
		return hm_err_set(err, EPROTO, "unknown message type 0x%04x", hdr->type);
	if (hdr->flags)
		return hm_err_set(err, EPROTO, "%s: unknown frame flags 0x%04x", t->name,
				  hdr->flags);
	if (hdr->len > PROTO_MAX_PAYLOAD)
		return hm_err_set(err, E2BIG, "%s: payload of %u bytes", t->name, hdr->len);
	struct proto_reader r;
	proto_reader_init(&r, payload, hdr->len);
	if (t->layout) {
		struct codec c = {.in = &r, .m = m};
		t->layout(&c, m);
	}
	if (proto_reader_finish(&r, t->name, err) < 0) {
		proto_msg_free(m);
		return -1;
	}
	return 0;
}

void proto_msg_free(struct proto_msg *m)
{
	free(m->owned.payload);
	free(m->owned.array);
	free(m->owned.inflated);
	memset(&m->owned, 0, sizeof(m->owned));
}
