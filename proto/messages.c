/* Every message's payload codec. Each encoder and decoder is the same field list in the
 * same order; the decoder additionally checks every value a peer could get wrong, and
 * the encoder checks the same limits so a message we send always decodes. */
#include <string.h>

#include "proto/proto.h"

static const struct type_info {
	uint16_t type;
	uint16_t reply; /* success reply for requests, 0 for replies and events */
	const char *name;
} type_table[] = {
    {PROTO_HELLO, PROTO_HELLO_REPLY, "HELLO"},
    {PROTO_STREAM_HELLO, PROTO_STREAM_HELLO_REPLY, "STREAM_HELLO"},
    {PROTO_PING, PROTO_PONG, "PING"},
    {PROTO_STATUS, PROTO_STATUS_REPLY, "STATUS"},
    {PROTO_HELLO_REPLY, 0, "HELLO_REPLY"},
    {PROTO_STREAM_HELLO_REPLY, 0, "STREAM_HELLO_REPLY"},
    {PROTO_PONG, 0, "PONG"},
    {PROTO_STATUS_REPLY, 0, "STATUS_REPLY"},
    {PROTO_OK, 0, "OK"},
    {PROTO_ERROR, 0, "ERROR"},
    {PROTO_SESSION_OPEN, PROTO_SESSION_OPEN_REPLY, "SESSION_OPEN"},
    {PROTO_SESSION_OPEN_REPLY, 0, "SESSION_OPEN_REPLY"},
    {PROTO_SESSION_ENDED, 0, "SESSION_ENDED"},
    {PROTO_ENV_GET, PROTO_ENV_REPLY, "ENV_GET"},
    {PROTO_ENV_REPLY, 0, "ENV_REPLY"},
    {PROTO_FILE_READ, PROTO_FILE_READ_REPLY, "FILE_READ"},
    {PROTO_FILE_WRITE, PROTO_FILE_WRITE_REPLY, "FILE_WRITE"},
    {PROTO_FILE_STAT, PROTO_FILE_STAT_REPLY, "FILE_STAT"},
    {PROTO_FILE_ACCESS, PROTO_OK, "FILE_ACCESS"},
    {PROTO_FILE_READLINK, PROTO_FILE_READLINK_REPLY, "FILE_READLINK"},
    {PROTO_FILE_READDIR, PROTO_FILE_READDIR_REPLY, "FILE_READDIR"},
    {PROTO_FILE_MKDIR, PROTO_OK, "FILE_MKDIR"},
    {PROTO_FILE_UNLINK, PROTO_OK, "FILE_UNLINK"},
    {PROTO_FILE_RENAME, PROTO_OK, "FILE_RENAME"},
    {PROTO_FILE_STATFS, PROTO_FILE_STATFS_REPLY, "FILE_STATFS"},
    {PROTO_FILE_READ_REPLY, 0, "FILE_READ_REPLY"},
    {PROTO_FILE_WRITE_REPLY, 0, "FILE_WRITE_REPLY"},
    {PROTO_FILE_STAT_REPLY, 0, "FILE_STAT_REPLY"},
    {PROTO_FILE_READLINK_REPLY, 0, "FILE_READLINK_REPLY"},
    {PROTO_FILE_READDIR_REPLY, 0, "FILE_READDIR_REPLY"},
    {PROTO_FILE_STATFS_REPLY, 0, "FILE_STATFS_REPLY"},
    {PROTO_TCP_CONNECT, PROTO_TCP_CONNECT_REPLY, "TCP_CONNECT"},
    {PROTO_TCP_CONNECT_REPLY, 0, "TCP_CONNECT_REPLY"},
    {PROTO_UDP_OPEN, PROTO_UDP_OPEN_REPLY, "UDP_OPEN"},
    {PROTO_UDP_OPEN_REPLY, 0, "UDP_OPEN_REPLY"},
    {PROTO_UDP_DATAGRAM, 0, "UDP_DATAGRAM"},
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

/* ---- value checks shared by both directions ---- */

#define STAT_MODE_BITS 0177777u /* S_IFMT | 07777 */
#define PERM_BITS 07777u
#define ERRNO_MAX 4095

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

/* Encoder side: a value the decoder would reject fails the encode. */
static void need(struct proto_buf *b, bool ok)
{
	if (!ok && !b->error)
		b->error = EINVAL;
}

/* Decoder side. */
static void check(struct proto_reader *r, bool ok, const char *why)
{
	if (!ok)
		proto_reader_fail(r, EBADMSG, why);
}

static uint32_t get_flags(struct proto_reader *r, uint32_t known)
{
	uint32_t v = proto_get_u32(r);
	if (v & ~known)
		proto_reader_fail(r, EPROTO, "unknown flag bits");
	return v;
}

static void put_flags(struct proto_buf *b, uint32_t v, uint32_t known)
{
	need(b, !(v & ~known));
	proto_put_u32(b, v);
}

static void put_path(struct proto_buf *b, const char *path)
{
	need(b, path && path[0] == '/');
	proto_put_string(b, path, PROTO_PATH_MAX);
}

static const char *get_path(struct proto_reader *r)
{
	const char *p = proto_get_string(r, PROTO_PATH_MAX);
	check(r, p[0] == '/', "path is not absolute");
	return p;
}

static void put_i32(struct proto_buf *b, int32_t v)
{
	proto_put_u32(b, (uint32_t)v);
}

static int32_t get_i32(struct proto_reader *r)
{
	return (int32_t)proto_get_u32(r);
}

static void put_token(struct proto_buf *b, const uint8_t *t)
{
	proto_put_bytes(b, t, PROTO_TOKEN_LEN);
}

static void get_token(struct proto_reader *r, uint8_t *t)
{
	const void *p = proto_get_bytes(r, PROTO_TOKEN_LEN);
	if (p)
		memcpy(t, p, PROTO_TOKEN_LEN);
}

static void put_addr(struct proto_buf *b, const struct proto_addr *a)
{
	need(b, family_ok(a->family));
	proto_put_u8(b, a->family);
	proto_put_u16(b, a->port);
	proto_put_bytes(b, a->addr, a->family == PROTO_AF_INET6 ? 16 : 4);
	if (a->family == PROTO_AF_INET6)
		proto_put_u32(b, a->scope_id);
}

static void get_addr(struct proto_reader *r, struct proto_addr *a)
{
	memset(a, 0, sizeof(*a));
	a->family = proto_get_u8(r);
	a->port = proto_get_u16(r);
	if (r->error)
		return;
	if (!family_ok(a->family)) {
		proto_reader_fail(r, EBADMSG, "unknown address family");
		return;
	}
	size_t n = a->family == PROTO_AF_INET6 ? 16 : 4;
	const void *p = proto_get_bytes(r, n);
	if (p)
		memcpy(a->addr, p, n);
	if (a->family == PROTO_AF_INET6)
		a->scope_id = proto_get_u32(r);
}

static void put_time(struct proto_buf *b, const struct proto_time *t)
{
	proto_put_u64(b, (uint64_t)t->sec);
	proto_put_u32(b, t->nsec);
}

static void get_time(struct proto_reader *r, struct proto_time *t)
{
	t->sec = (int64_t)proto_get_u64(r);
	t->nsec = proto_get_u32(r);
}

static void put_stat(struct proto_buf *b, const struct proto_stat *s)
{
	need(b, stat_ok(s));
	proto_put_u64(b, s->ino);
	proto_put_u64(b, s->size);
	proto_put_u64(b, s->blocks);
	const uint32_t u32s[] = {s->dev_major, s->dev_minor, s->rdev_major, s->rdev_minor, s->mode,
				 s->nlink,     s->uid,	     s->gid,	    s->blksize};
	for (size_t i = 0; i < HM_ARRAY_SIZE(u32s); i++)
		proto_put_u32(b, u32s[i]);
	put_time(b, &s->atime);
	put_time(b, &s->mtime);
	put_time(b, &s->ctime);
}

static void get_stat(struct proto_reader *r, struct proto_stat *s)
{
	s->ino = proto_get_u64(r);
	s->size = proto_get_u64(r);
	s->blocks = proto_get_u64(r);
	uint32_t *u32s[] = {&s->dev_major, &s->dev_minor, &s->rdev_major, &s->rdev_minor, &s->mode,
			    &s->nlink,	   &s->uid,	  &s->gid,	  &s->blksize};
	for (size_t i = 0; i < HM_ARRAY_SIZE(u32s); i++)
		*u32s[i] = proto_get_u32(r);
	get_time(r, &s->atime);
	get_time(r, &s->mtime);
	get_time(r, &s->ctime);
	check(r, stat_ok(s), "bad stat mode or nanoseconds");
}

static void put_statfs(struct proto_buf *b, const struct proto_statfs *s)
{
	const uint64_t u64s[] = {s->type,   s->bsize, s->frsize, s->blocks,  s->bfree,
				 s->bavail, s->files, s->ffree,	 s->namelen, s->flags};
	for (size_t i = 0; i < HM_ARRAY_SIZE(u64s); i++)
		proto_put_u64(b, u64s[i]);
	proto_put_u32(b, s->fsid[0]);
	proto_put_u32(b, s->fsid[1]);
}

static void get_statfs(struct proto_reader *r, struct proto_statfs *s)
{
	uint64_t *u64s[] = {&s->type,	&s->bsize, &s->frsize, &s->blocks,  &s->bfree,
			    &s->bavail, &s->files, &s->ffree,  &s->namelen, &s->flags};
	for (size_t i = 0; i < HM_ARRAY_SIZE(u64s); i++)
		*u64s[i] = proto_get_u64(r);
	s->fsid[0] = proto_get_u32(r);
	s->fsid[1] = proto_get_u32(r);
}

/* blob: u8 encoding | u64 size | u32 n | n bytes */
static void put_blob(struct proto_buf *b, const struct proto_blob *bl)
{
	need(b, bl->size <= PROTO_INLINE_MAX && (bl->data || !bl->size));
	if (b->error)
		return;
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
		check(r, n == bl->size, "raw content length mismatch");
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

/* ---- the codecs, one pair per message body ---- */

static void enc_body(struct proto_buf *b, const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_STATUS:
	case PROTO_ENV_GET:
	case PROTO_OK:
		break;
	case PROTO_HELLO:
		proto_put_u32(b, PROTO_MAGIC);
		proto_put_u16(b, m->hello.version);
		proto_put_u64(b, m->hello.features);
		proto_put_string(b, m->hello.token, PROTO_AUTH_TOKEN_MAX);
		proto_put_string(b, m->hello.client, PROTO_NAME_MAX);
		break;
	case PROTO_HELLO_REPLY:
		need(b, status_ok(m->hello_reply.error));
		put_i32(b, m->hello_reply.error);
		proto_put_u16(b, m->hello_reply.version);
		proto_put_u64(b, m->hello_reply.features);
		proto_put_string(b, m->hello_reply.reason, PROTO_NAME_MAX);
		proto_put_string(b, m->hello_reply.server, PROTO_NAME_MAX);
		break;
	case PROTO_STREAM_HELLO:
		proto_put_u32(b, PROTO_MAGIC);
		proto_put_u16(b, PROTO_VERSION);
		put_token(b, m->stream_hello.token);
		break;
	case PROTO_STREAM_HELLO_REPLY:
		need(b, status_ok(m->stream_hello_reply.error));
		put_i32(b, m->stream_hello_reply.error);
		proto_put_string(b, m->stream_hello_reply.reason, PROTO_NAME_MAX);
		break;
	case PROTO_ERROR:
	case PROTO_SESSION_ENDED:
		need(b, errno_ok(m->error.errnum));
		put_i32(b, m->error.errnum);
		proto_put_string(b, m->error.message, PROTO_MSG_MAX);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		proto_put_u64(b, m->ping.nonce);
		break;
	case PROTO_STATUS_REPLY: {
		const struct proto_status_reply *s = &m->status_reply;
		proto_put_string(b, s->version, PROTO_NAME_MAX);
		proto_put_u64(b, s->uptime_ms);
		proto_put_u32(b, s->sessions);
		proto_put_u32(b, s->streams);
		proto_put_u64(b, s->requests);
		proto_put_u64(b, s->errors);
		proto_put_u64(b, s->bytes_in);
		proto_put_u64(b, s->bytes_out);
		need(b, s->nbudgets <= PROTO_BUDGET_COUNT);
		if (s->nbudgets) {
			proto_put_u8(b, s->nbudgets);
			for (unsigned i = 0; i < s->nbudgets && i < PROTO_BUDGET_COUNT; i++) {
				proto_put_u64(b, s->budgets[i].used);
				proto_put_u64(b, s->budgets[i].limit);
				proto_put_u64(b, s->budgets[i].peak);
				proto_put_u64(b, s->budgets[i].refused);
			}
		}
		break;
	}
	case PROTO_SESSION_OPEN: {
		struct proto_target t;
		need(b, m->session_open.target &&
			    proto_target_parse(m->session_open.target, &t, NULL) == 0);
		proto_put_string(b, m->session_open.target, PROTO_NAME_MAX);
		break;
	}
	case PROTO_SESSION_OPEN_REPLY:
		proto_put_u64(b, m->session_open_reply.session_id);
		proto_put_u32(b, m->session_open_reply.pid);
		proto_put_string(b, m->session_open_reply.description, PROTO_NAME_MAX);
		break;
	case PROTO_ENV_REPLY:
		need(b, m->env_reply.vars || !m->env_reply.count);
		if (b->error)
			break;
		proto_put_u32(b, m->env_reply.count);
		for (uint32_t i = 0; i < m->env_reply.count; i++)
			proto_put_string(b, m->env_reply.vars[i], PROTO_ENV_ENTRY_MAX);
		break;
	case PROTO_FILE_READ:
		put_path(b, m->file_read.path);
		put_flags(b, m->file_read.flags, PROTO_READ_NOFOLLOW);
		proto_put_u64(b, m->file_read.max_size);
		break;
	case PROTO_FILE_READ_REPLY: {
		const struct proto_file_read_reply *f = &m->file_read_reply;
		put_stat(b, &f->st);
		need(b, f->transfer == PROTO_XFER_INLINE || f->transfer == PROTO_XFER_STREAM);
		proto_put_u8(b, f->transfer);
		if (f->transfer == PROTO_XFER_INLINE) {
			put_blob(b, &f->data);
		} else {
			proto_put_u64(b, f->stream_size);
			put_token(b, f->token);
		}
		break;
	}
	case PROTO_FILE_WRITE:
		put_path(b, m->file_write.path);
		put_flags(b, m->file_write.flags, 0x1f);
		need(b, !(m->file_write.mode & ~PERM_BITS));
		proto_put_u32(b, m->file_write.mode);
		proto_put_u64(b, m->file_write.offset);
		put_blob(b, &m->file_write.data);
		break;
	case PROTO_FILE_WRITE_REPLY:
		proto_put_u64(b, m->file_write_reply.written);
		put_stat(b, &m->file_write_reply.st);
		break;
	case PROTO_FILE_STAT:
	case PROTO_FILE_READLINK:
	case PROTO_FILE_READDIR:
	case PROTO_FILE_STATFS:
		put_path(b, m->path_req.path);
		put_flags(b, m->path_req.flags,
			  m->type == PROTO_FILE_STAT ? PROTO_STAT_NOFOLLOW : 0);
		break;
	case PROTO_FILE_STAT_REPLY:
		put_stat(b, &m->stat_reply);
		break;
	case PROTO_FILE_ACCESS:
		put_path(b, m->file_access.path);
		put_flags(b, m->file_access.mode, 7);
		put_flags(b, m->file_access.flags, PROTO_ACCESS_EACCESS | PROTO_ACCESS_NOFOLLOW);
		break;
	case PROTO_FILE_MKDIR:
		put_path(b, m->file_mkdir.path);
		put_flags(b, m->file_mkdir.mode, PERM_BITS);
		break;
	case PROTO_FILE_UNLINK:
		put_path(b, m->file_unlink.path);
		put_flags(b, m->file_unlink.flags, PROTO_UNLINK_DIR);
		break;
	case PROTO_FILE_RENAME:
		put_path(b, m->file_rename.from);
		put_path(b, m->file_rename.to);
		need(b, m->file_rename.flags != (PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE));
		put_flags(b, m->file_rename.flags, PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE);
		break;
	case PROTO_FILE_READLINK_REPLY:
		need(b, m->readlink_reply.target && m->readlink_reply.target[0]);
		proto_put_string(b, m->readlink_reply.target, PROTO_PATH_MAX);
		break;
	case PROTO_FILE_READDIR_REPLY:
		need(b, m->readdir_reply.entries || !m->readdir_reply.count);
		if (b->error)
			break;
		proto_put_u32(b, m->readdir_reply.count);
		for (uint32_t i = 0; i < m->readdir_reply.count; i++) {
			const struct proto_dirent *d = &m->readdir_reply.entries[i];
			need(b, name_ok(d->name));
			proto_put_u64(b, d->ino);
			proto_put_u8(b, d->type);
			proto_put_string(b, d->name, PROTO_FILENAME_MAX);
		}
		break;
	case PROTO_FILE_STATFS_REPLY:
		put_statfs(b, &m->statfs_reply);
		break;
	case PROTO_TCP_CONNECT:
		put_addr(b, &m->tcp_connect.dst);
		proto_put_u32(b, m->tcp_connect.timeout_ms);
		break;
	case PROTO_TCP_CONNECT_REPLY:
		put_token(b, m->tcp_connect_reply.token);
		put_addr(b, &m->tcp_connect_reply.local);
		break;
	case PROTO_UDP_OPEN:
		need(b, family_ok(m->udp_open.family));
		proto_put_u8(b, m->udp_open.family);
		break;
	case PROTO_UDP_OPEN_REPLY:
		put_token(b, m->udp_open_reply.token);
		put_addr(b, &m->udp_open_reply.local);
		break;
	case PROTO_UDP_DATAGRAM:
		put_addr(b, &m->udp_datagram.peer);
		need(b, m->udp_datagram.len <= PROTO_DATAGRAM_MAX &&
			    (m->udp_datagram.data || !m->udp_datagram.len));
		if (b->error)
			break;
		proto_put_u32(b, m->udp_datagram.len);
		proto_put_bytes(b, m->udp_datagram.data, m->udp_datagram.len);
		break;
	default:
		need(b, false);
	}
}

/* Smallest wire size of one list element, used to refuse an element count the payload
 * cannot possibly hold before allocating the array. */
#define MIN_STRING 5			    /* u32 length + NUL */
#define MIN_DIRENT (8 + 1 + MIN_STRING + 1) /* ino, type, non-empty name */

static void dec_body(struct proto_reader *r, struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_STATUS:
	case PROTO_ENV_GET:
	case PROTO_OK:
		break;
	case PROTO_HELLO:
		if (proto_get_u32(r) != PROTO_MAGIC && !r->error)
			proto_reader_fail(r, EPROTO, "bad magic: not a hermit client");
		m->hello.version = proto_get_u16(r);
		m->hello.features = proto_get_u64(r);
		m->hello.token = proto_get_string(r, PROTO_AUTH_TOKEN_MAX);
		m->hello.client = proto_get_string(r, PROTO_NAME_MAX);
		break;
	case PROTO_HELLO_REPLY:
		m->hello_reply.error = get_i32(r);
		check(r, status_ok(m->hello_reply.error), "bad errno");
		m->hello_reply.version = proto_get_u16(r);
		m->hello_reply.features = proto_get_u64(r);
		m->hello_reply.reason = proto_get_string(r, PROTO_NAME_MAX);
		m->hello_reply.server = proto_get_string(r, PROTO_NAME_MAX);
		break;
	case PROTO_STREAM_HELLO:
		if (proto_get_u32(r) != PROTO_MAGIC && !r->error)
			proto_reader_fail(r, EPROTO, "bad magic: not a hermit stream");
		if (proto_get_u16(r) != PROTO_VERSION && !r->error)
			proto_reader_fail(r, EPROTO, "unsupported protocol version");
		get_token(r, m->stream_hello.token);
		break;
	case PROTO_STREAM_HELLO_REPLY:
		m->stream_hello_reply.error = get_i32(r);
		check(r, status_ok(m->stream_hello_reply.error), "bad errno");
		m->stream_hello_reply.reason = proto_get_string(r, PROTO_NAME_MAX);
		break;
	case PROTO_ERROR:
	case PROTO_SESSION_ENDED:
		m->error.errnum = get_i32(r);
		check(r, errno_ok(m->error.errnum), "bad errno");
		m->error.message = proto_get_string(r, PROTO_MSG_MAX);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		m->ping.nonce = proto_get_u64(r);
		break;
	case PROTO_STATUS_REPLY: {
		struct proto_status_reply *s = &m->status_reply;
		s->version = proto_get_string(r, PROTO_NAME_MAX);
		s->uptime_ms = proto_get_u64(r);
		s->sessions = proto_get_u32(r);
		s->streams = proto_get_u32(r);
		s->requests = proto_get_u64(r);
		s->errors = proto_get_u64(r);
		s->bytes_in = proto_get_u64(r);
		s->bytes_out = proto_get_u64(r);
		if (r->error || r->off == r->len)
			break; /* an agent without budgets */
		uint8_t n = proto_get_u8(r);
		if (n == 0 || n > PROTO_BUDGET_MAX) {
			proto_reader_fail(r, EBADMSG, "bad budget count");
			break;
		}
		for (unsigned i = 0; i < n && !r->error; i++) {
			struct proto_budget bd;
			bd.used = proto_get_u64(r);
			bd.limit = proto_get_u64(r);
			bd.peak = proto_get_u64(r);
			bd.refused = proto_get_u64(r);
			if (i < PROTO_BUDGET_COUNT)
				s->budgets[i] = bd;
		}
		s->nbudgets = n < PROTO_BUDGET_COUNT ? n : PROTO_BUDGET_COUNT;
		break;
	}
	case PROTO_SESSION_OPEN: {
		struct proto_target t;
		m->session_open.target = proto_get_string(r, PROTO_NAME_MAX);
		if (!r->error && proto_target_parse(m->session_open.target, &t, NULL) < 0)
			proto_reader_fail(r, EBADMSG, "bad target");
		break;
	}
	case PROTO_SESSION_OPEN_REPLY:
		m->session_open_reply.session_id = proto_get_u64(r);
		m->session_open_reply.pid = proto_get_u32(r);
		m->session_open_reply.description = proto_get_string(r, PROTO_NAME_MAX);
		break;
	case PROTO_ENV_REPLY: {
		uint32_t n = proto_get_u32(r);
		if (r->error)
			break;
		if (n > (r->len - r->off) / MIN_STRING) {
			proto_reader_fail(r, EBADMSG, "count larger than the payload");
			break;
		}
		const char **vars = calloc(n ? n : 1, sizeof(*vars));
		if (!vars) {
			proto_reader_fail(r, ENOMEM, "out of memory");
			break;
		}
		m->owned.array = vars;
		for (uint32_t i = 0; i < n && !r->error; i++)
			vars[i] = proto_get_string(r, PROTO_ENV_ENTRY_MAX);
		m->env_reply.count = n;
		m->env_reply.vars = vars;
		break;
	}
	case PROTO_FILE_READ:
		m->file_read.path = get_path(r);
		m->file_read.flags = get_flags(r, PROTO_READ_NOFOLLOW);
		m->file_read.max_size = proto_get_u64(r);
		break;
	case PROTO_FILE_READ_REPLY: {
		struct proto_file_read_reply *f = &m->file_read_reply;
		get_stat(r, &f->st);
		f->transfer = proto_get_u8(r);
		if (f->transfer == PROTO_XFER_INLINE) {
			get_blob(r, &f->data, m);
		} else if (f->transfer == PROTO_XFER_STREAM) {
			f->stream_size = proto_get_u64(r);
			get_token(r, f->token);
		} else {
			proto_reader_fail(r, EPROTO, "unknown transfer kind");
		}
		break;
	}
	case PROTO_FILE_WRITE:
		m->file_write.path = get_path(r);
		m->file_write.flags = get_flags(r, 0x1f);
		m->file_write.mode = proto_get_u32(r);
		check(r, !(m->file_write.mode & ~PERM_BITS), "bad mode");
		m->file_write.offset = proto_get_u64(r);
		get_blob(r, &m->file_write.data, m);
		break;
	case PROTO_FILE_WRITE_REPLY:
		m->file_write_reply.written = proto_get_u64(r);
		get_stat(r, &m->file_write_reply.st);
		break;
	case PROTO_FILE_STAT:
	case PROTO_FILE_READLINK:
	case PROTO_FILE_READDIR:
	case PROTO_FILE_STATFS:
		m->path_req.path = get_path(r);
		m->path_req.flags =
		    get_flags(r, m->type == PROTO_FILE_STAT ? PROTO_STAT_NOFOLLOW : 0);
		break;
	case PROTO_FILE_STAT_REPLY:
		get_stat(r, &m->stat_reply);
		break;
	case PROTO_FILE_ACCESS:
		m->file_access.path = get_path(r);
		m->file_access.mode = get_flags(r, 7);
		m->file_access.flags = get_flags(r, PROTO_ACCESS_EACCESS | PROTO_ACCESS_NOFOLLOW);
		break;
	case PROTO_FILE_MKDIR:
		m->file_mkdir.path = get_path(r);
		m->file_mkdir.mode = get_flags(r, PERM_BITS);
		break;
	case PROTO_FILE_UNLINK:
		m->file_unlink.path = get_path(r);
		m->file_unlink.flags = get_flags(r, PROTO_UNLINK_DIR);
		break;
	case PROTO_FILE_RENAME:
		m->file_rename.from = get_path(r);
		m->file_rename.to = get_path(r);
		m->file_rename.flags = get_flags(r, PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE);
		check(r, m->file_rename.flags != (PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE),
		      "NOREPLACE and EXCHANGE together");
		break;
	case PROTO_FILE_READLINK_REPLY:
		m->readlink_reply.target = proto_get_string(r, PROTO_PATH_MAX);
		check(r, m->readlink_reply.target[0], "empty link target");
		break;
	case PROTO_FILE_READDIR_REPLY: {
		uint32_t n = proto_get_u32(r);
		if (r->error)
			break;
		if (n > (r->len - r->off) / MIN_DIRENT) {
			proto_reader_fail(r, EBADMSG, "count larger than the payload");
			break;
		}
		struct proto_dirent *ents = calloc(n ? n : 1, sizeof(*ents));
		if (!ents) {
			proto_reader_fail(r, ENOMEM, "out of memory");
			break;
		}
		m->owned.array = ents;
		for (uint32_t i = 0; i < n && !r->error; i++) {
			ents[i].ino = proto_get_u64(r);
			ents[i].type = proto_get_u8(r);
			ents[i].name = proto_get_string(r, PROTO_FILENAME_MAX);
			check(r, name_ok(ents[i].name), "bad file name");
		}
		m->readdir_reply.count = n;
		m->readdir_reply.entries = ents;
		break;
	}
	case PROTO_FILE_STATFS_REPLY:
		get_statfs(r, &m->statfs_reply);
		break;
	case PROTO_TCP_CONNECT:
		get_addr(r, &m->tcp_connect.dst);
		m->tcp_connect.timeout_ms = proto_get_u32(r);
		break;
	case PROTO_TCP_CONNECT_REPLY:
		get_token(r, m->tcp_connect_reply.token);
		get_addr(r, &m->tcp_connect_reply.local);
		break;
	case PROTO_UDP_OPEN:
		m->udp_open.family = proto_get_u8(r);
		check(r, family_ok(m->udp_open.family), "unknown address family");
		break;
	case PROTO_UDP_OPEN_REPLY:
		get_token(r, m->udp_open_reply.token);
		get_addr(r, &m->udp_open_reply.local);
		break;
	case PROTO_UDP_DATAGRAM:
		get_addr(r, &m->udp_datagram.peer);
		m->udp_datagram.len = proto_get_u32(r);
		if (m->udp_datagram.len > PROTO_DATAGRAM_MAX) {
			proto_reader_fail(r, E2BIG, "datagram too large");
			break;
		}
		m->udp_datagram.data = proto_get_bytes(r, m->udp_datagram.len);
		break;
	default:
		proto_reader_fail(r, EPROTO, "unknown message type");
	}
}

int proto_encode(struct proto_buf *b, uint32_t id, const struct proto_msg *m, struct hm_err *err)
{
	if (!proto_type_known(m->type))
		return hm_err_set(err, EPROTO, "encode: unknown message type 0x%04x", m->type);
	if (b->error)
		return hm_err_set(err, b->error, "encode %s: buffer already failed",
				  proto_type_name(m->type));
	size_t start = b->len;
	proto_buf_reserve(b, PROTO_HDR_LEN);
	enc_body(b, m);
	int e = b->error;
	size_t payload = b->len - start - PROTO_HDR_LEN;
	if (!e && payload > PROTO_MAX_PAYLOAD)
		e = E2BIG;
	if (e) {
		/* leave frames queued before this one intact */
		b->len = start;
		b->error = 0;
		return hm_err_set(err, e, "encode %s", proto_type_name(m->type));
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
	if (!proto_type_known(hdr->type))
		return hm_err_set(err, EPROTO, "unknown message type 0x%04x", hdr->type);
	if (hdr->flags)
		return hm_err_set(err, EPROTO, "%s: unknown frame flags 0x%04x",
				  proto_type_name(hdr->type), hdr->flags);
	if (hdr->len > PROTO_MAX_PAYLOAD)
		return hm_err_set(err, E2BIG, "%s: payload of %u bytes", proto_type_name(hdr->type),
				  hdr->len);
	struct proto_reader r;
	proto_reader_init(&r, payload, hdr->len);
	dec_body(&r, m);
	if (proto_reader_finish(&r, proto_type_name(m->type), err) < 0) {
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
