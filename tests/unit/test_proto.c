#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "proto/proto.h"

/* ---- test helpers: what a peer would do with the library, written out here ---- */

/* One whole frame at the start of buf: > 0 its total length, 0 when more bytes are
 * needed, < 0 when its header is invalid. */
static ssize_t parse_frame(const void *buf, size_t len, uint32_t max_payload, struct proto_hdr *h,
			   const uint8_t **payload, struct hm_err *err)
{
	*payload = NULL;
	if (len < PROTO_HDR_LEN)
		return 0;
	if (proto_hdr_decode(buf, max_payload, h, err) < 0)
		return -1;
	if (len - PROTO_HDR_LEN < h->len)
		return 0;
	*payload = (const uint8_t *)buf + PROTO_HDR_LEN;
	return (ssize_t)(PROTO_HDR_LEN + h->len);
}

static int send_error(int fd, uint32_t id, int errnum, struct hm_err *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int send_error(int fd, uint32_t id, int errnum, struct hm_err *err, const char *fmt, ...)
{
	char msg[PROTO_MSG_MAX + 1];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct proto_msg m = {.type = PROTO_ERROR};
	m.error.errnum = errnum;
	m.error.message = msg;
	return proto_send(fd, id, &m, err);
}

/* Send a request and wait for its reply with nothing else in flight on fd. ERROR and
 * SESSION_ENDED become a failure with err->code = their errno; a reply of another type
 * or id is EPROTO. */
static int call(int fd, uint32_t id, const struct proto_msg *req, struct proto_msg *reply,
		int timeout_ms, struct hm_err *err)
{
	memset(reply, 0, sizeof(*reply));
	uint16_t want = proto_reply_type(req->type);
	if (!want)
		return hm_err_set(err, EINVAL, "%s is not a request", proto_type_name(req->type));
	if (proto_send(fd, id, req, err) < 0)
		return -1;
	if (proto_recv(fd, PROTO_MAX_PAYLOAD, timeout_ms, reply, err) < 0)
		return hm_err_prefix(err, "%s", proto_type_name(req->type));
	bool failed = reply->type == PROTO_ERROR || reply->type == PROTO_SESSION_ENDED;
	if (failed && reply->id == (reply->type == PROTO_ERROR ? id : 0)) {
		int e = reply->error.errnum;
		hm_err_set(err, 0, "%s: %s%s", proto_type_name(req->type),
			   reply->type == PROTO_SESSION_ENDED ? "session ended: " : "",
			   reply->error.message[0] ? reply->error.message : strerror(e));
		err->code = e;
		proto_msg_free(reply);
		return -1;
	}
	if (reply->type != want || reply->id != id) {
		hm_err_set(err, EPROTO, "%s: got %s for request %u instead of %s for %u",
			   proto_type_name(req->type), proto_type_name(reply->type), reply->id,
			   proto_type_name(want), id);
		proto_msg_free(reply);
		return -1;
	}
	return 0;
}

/* ---- one sample message of every type ---- */

static const uint8_t sample_token[PROTO_TOKEN_LEN] = {1, 2,  3,	 4,  5,	 6,  7,	 8,
						      9, 10, 11, 12, 13, 14, 15, 16};
static const char *sample_env[] = {"PATH=/usr/bin:/bin", "HOME=/root", "EMPTY=", "A=b=c"};
static const struct proto_dirent sample_dirents[] = {
    {.ino = 2, .type = DT_DIR, .name = "."},
    {.ino = 1, .type = DT_DIR, .name = ".."},
    {.ino = 77, .type = DT_REG, .name = "config.yaml"},
    {.ino = 78, .type = DT_LNK, .name = "..data"},
};
static const char sample_content[] = "line one\nline two\n";

static struct proto_stat sample_stat(void)
{
	return (struct proto_stat){
	    .ino = 123456789012ull,
	    .size = 4096,
	    .blocks = 8,
	    .dev_major = 259,
	    .dev_minor = 3,
	    .rdev_major = 0,
	    .rdev_minor = 0,
	    .mode = S_IFREG | 0644,
	    .nlink = 1,
	    .uid = 1000,
	    .gid = 1000,
	    .blksize = 4096,
	    .atime = {1700000000, 1},
	    .mtime = {-5, 999999999},
	    .ctime = {1700000002, 3},
	};
}

static struct proto_addr sample_addr(bool v6)
{
	struct proto_addr a = {.family = v6 ? PROTO_AF_INET6 : PROTO_AF_INET, .port = 8080};
	if (v6) {
		inet_pton(AF_INET6, "fd00::1:2", a.addr);
		a.scope_id = 3;
	} else {
		inet_pton(AF_INET, "10.213.0.7", a.addr);
	}
	return a;
}

/* Fills m with a sample of type; false if the test does not know the type. */
static bool sample(uint16_t type, struct proto_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	switch (type) {
	case PROTO_STATUS:
	case PROTO_ENV_GET:
	case PROTO_OK:
		return true;
	case PROTO_HELLO:
		m->hello =
		    (struct proto_hello){PROTO_VERSION, PROTO_FEAT_ZLIB, "s3cret", "trace-run 0.1"};
		return true;
	case PROTO_HELLO_REPLY:
		m->hello_reply = (struct proto_hello_reply){0, PROTO_VERSION, PROTO_FEAT_ZLIB, "",
							    "trace-agent 0.1"};
		return true;
	case PROTO_STREAM_HELLO:
		memcpy(m->stream_hello.token, sample_token, PROTO_TOKEN_LEN);
		return true;
	case PROTO_STREAM_HELLO_REPLY:
		m->stream_hello_reply = (struct proto_stream_hello_reply){ENOENT, "unknown token"};
		return true;
	case PROTO_ERROR:
	case PROTO_SESSION_ENDED:
		m->error = (struct proto_error){ESRCH, "target pod/web exited"};
		return true;
	case PROTO_PING:
	case PROTO_PONG:
		m->ping.nonce = 0x0123456789abcdefull;
		return true;
	case PROTO_STATUS_REPLY:
		m->status_reply = (struct proto_status_reply){.version = "0.1",
							      .uptime_ms = 12345,
							      .sessions = 2,
							      .streams = 17,
							      .requests = 1000,
							      .errors = 3,
							      .bytes_in = 1 << 20,
							      .bytes_out = 2 << 20};
		m->status_reply.nbudgets = PROTO_BUDGET_COUNT;
		for (unsigned i = 0; i < PROTO_BUDGET_COUNT; i++)
			m->status_reply.budgets[i] =
			    (struct proto_budget){i, 100 + i, 50 + i, 7 * i};
		m->status_reply.has_incoming = true;
		m->status_reply.subscriptions = 2;
		m->status_reply.mirrored = 200;
		m->status_reply.mirror_lost = 1;
		m->status_reply.mirror_bytes = 1 << 20;
		m->status_reply.stolen = 50;
		m->status_reply.passed_to_target = 9;
		m->status_reply.has_kernel_relay = true;
		m->status_reply.kernel_relay_on = true;
		m->status_reply.kernel_streams = 3;
		return true;
	case PROTO_SESSION_OPEN:
		m->session_open.target = "pod/web";
		return true;
	case PROTO_SESSION_OPEN_REPLY:
		m->session_open_reply =
		    (struct proto_session_open_reply){42, 4321, "pod/web (pid 4321)"};
		return true;
	case PROTO_ENV_REPLY:
		m->env_reply.count = HM_ARRAY_SIZE(sample_env);
		m->env_reply.vars = sample_env;
		return true;
	case PROTO_FILE_READ:
		m->file_read =
		    (struct proto_file_read){"/etc/hosts", PROTO_READ_NOFOLLOW, 64 << 20};
		return true;
	case PROTO_FILE_READ_REPLY:
		m->file_read_reply.st = sample_stat();
		m->file_read_reply.transfer = PROTO_XFER_INLINE;
		m->file_read_reply.data.data = sample_content;
		m->file_read_reply.data.size = strlen(sample_content);
		return true;
	case PROTO_FILE_WRITE:
		m->file_write = (struct proto_file_write){
		    "/tmp/out.txt",
		    PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC,
		    0640,
		    4096,
		    {.data = sample_content, .size = strlen(sample_content)}};
		return true;
	case PROTO_FILE_WRITE_REPLY:
		m->file_write_reply.written = 18;
		m->file_write_reply.st = sample_stat();
		return true;
	case PROTO_FILE_STAT:
		m->path_req = (struct proto_path_req){"/etc/passwd", PROTO_STAT_NOFOLLOW};
		return true;
	case PROTO_FILE_READLINK:
	case PROTO_FILE_READDIR:
	case PROTO_FILE_STATFS:
		m->path_req = (struct proto_path_req){"/var/run/secrets", 0};
		return true;
	case PROTO_FILE_STAT_REPLY:
		m->stat_reply = sample_stat();
		return true;
	case PROTO_FILE_ACCESS:
		m->file_access = (struct proto_file_access){
		    "/bin/sh", PROTO_ACCESS_X | PROTO_ACCESS_R, PROTO_ACCESS_EACCESS};
		return true;
	case PROTO_FILE_MKDIR:
		m->file_mkdir = (struct proto_file_mkdir){"/tmp/newdir", 0755};
		return true;
	case PROTO_FILE_UNLINK:
		m->file_unlink = (struct proto_file_unlink){"/tmp/newdir", PROTO_UNLINK_DIR};
		return true;
	case PROTO_FILE_RENAME:
		m->file_rename =
		    (struct proto_file_rename){"/tmp/a", "/tmp/b", PROTO_RENAME_NOREPLACE};
		return true;
	case PROTO_FILE_READLINK_REPLY:
		m->readlink_reply.target = "../lib/x86_64-linux-gnu/libc.so.6";
		return true;
	case PROTO_FILE_READDIR_REPLY:
		m->readdir_reply.count = HM_ARRAY_SIZE(sample_dirents);
		m->readdir_reply.entries = sample_dirents;
		return true;
	case PROTO_FILE_STATFS_REPLY:
		m->statfs_reply = (struct proto_statfs){
		    0x9123683e,	     4096, 4096, 1000, 500, 400, 1 << 20, 1 << 19, 255, 0x20,
		    {0xdead, 0xbeef}};
		return true;
	case PROTO_TCP_CONNECT:
		m->tcp_connect.dst = sample_addr(false);
		m->tcp_connect.timeout_ms = 5000;
		return true;
	case PROTO_TCP_CONNECT_REPLY:
		memcpy(m->tcp_connect_reply.token, sample_token, PROTO_TOKEN_LEN);
		m->tcp_connect_reply.local = sample_addr(true);
		return true;
	case PROTO_UDP_OPEN:
		m->udp_open.family = PROTO_AF_INET6;
		return true;
	case PROTO_UDP_OPEN_REPLY:
		memcpy(m->udp_open_reply.token, sample_token, PROTO_TOKEN_LEN);
		m->udp_open_reply.local = sample_addr(false);
		return true;
	case PROTO_UDP_DATAGRAM:
		m->udp_datagram.peer = sample_addr(true);
		m->udp_datagram.data = "\x12\x34\x01\x00\x00\x01";
		m->udp_datagram.len = 6;
		return true;
	case PROTO_INCOMING_SUBSCRIBE:
		m->incoming_subscribe.port = 8080;
		m->incoming_subscribe.mode = PROTO_INCOMING_STEAL;
		m->incoming_subscribe.flags = PROTO_INCOMING_FLUSH;
		m->incoming_subscribe.http_filter = "{\"header_filter\":\"^x-user: me$\"}";
		return true;
	case PROTO_INCOMING_SUBSCRIBE_REPLY:
		m->incoming_subscribe_reply.subscription = 3;
		m->incoming_subscribe_reply.note = "port 80 is also mirrored by session 2";
		return true;
	case PROTO_INCOMING_UNSUBSCRIBE:
		m->incoming_unsubscribe.subscription = 3;
		return true;
	case PROTO_INCOMING_CONNECTION:
		m->incoming_connection.subscription = 3;
		memcpy(m->incoming_connection.token, sample_token, PROTO_TOKEN_LEN);
		m->incoming_connection.client = sample_addr(false);
		m->incoming_connection.server = sample_addr(true);
		return true;
	case PROTO_INCOMING_DATA:
		m->incoming_data.data = "GET / HTTP/1.1\r\n";
		m->incoming_data.len = 16;
		return true;
	case PROTO_INCOMING_END:
		m->incoming_end.error = ECONNRESET;
		return true;
	}
	return false;
}

static void assert_stat_equal(const struct proto_stat *a, const struct proto_stat *b)
{
	assert_int_equal(a->ino, b->ino);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->blocks, b->blocks);
	assert_int_equal(a->dev_major, b->dev_major);
	assert_int_equal(a->dev_minor, b->dev_minor);
	assert_int_equal(a->rdev_major, b->rdev_major);
	assert_int_equal(a->rdev_minor, b->rdev_minor);
	assert_int_equal(a->mode, b->mode);
	assert_int_equal(a->nlink, b->nlink);
	assert_int_equal(a->uid, b->uid);
	assert_int_equal(a->gid, b->gid);
	assert_int_equal(a->blksize, b->blksize);
	assert_int_equal(a->atime.sec, b->atime.sec);
	assert_int_equal(a->atime.nsec, b->atime.nsec);
	assert_int_equal(a->mtime.sec, b->mtime.sec);
	assert_int_equal(a->mtime.nsec, b->mtime.nsec);
	assert_int_equal(a->ctime.sec, b->ctime.sec);
	assert_int_equal(a->ctime.nsec, b->ctime.nsec);
}

static void assert_addr_equal(const struct proto_addr *a, const struct proto_addr *b)
{
	assert_int_equal(a->family, b->family);
	assert_int_equal(a->port, b->port);
	assert_memory_equal(a->addr, b->addr, a->family == PROTO_AF_INET6 ? 16 : 4);
	assert_int_equal(a->scope_id, b->scope_id);
}

static void assert_blob_equal(const struct proto_blob *a, const struct proto_blob *b)
{
	assert_int_equal(a->size, b->size);
	assert_non_null(b->data);
	if (a->size)
		assert_memory_equal(a->data, b->data, a->size);
}

/* Every field of the sample survived the trip. */
static void assert_msg_equal(const struct proto_msg *a, const struct proto_msg *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case PROTO_HELLO:
		assert_int_equal(a->hello.version, b->hello.version);
		assert_int_equal(a->hello.features, b->hello.features);
		assert_string_equal(a->hello.token, b->hello.token);
		assert_string_equal(a->hello.client, b->hello.client);
		break;
	case PROTO_HELLO_REPLY:
		assert_int_equal(a->hello_reply.error, b->hello_reply.error);
		assert_int_equal(a->hello_reply.version, b->hello_reply.version);
		assert_int_equal(a->hello_reply.features, b->hello_reply.features);
		assert_string_equal(a->hello_reply.reason, b->hello_reply.reason);
		assert_string_equal(a->hello_reply.server, b->hello_reply.server);
		break;
	case PROTO_STREAM_HELLO:
		assert_memory_equal(a->stream_hello.token, b->stream_hello.token, PROTO_TOKEN_LEN);
		break;
	case PROTO_STREAM_HELLO_REPLY:
		assert_int_equal(a->stream_hello_reply.error, b->stream_hello_reply.error);
		assert_string_equal(a->stream_hello_reply.reason, b->stream_hello_reply.reason);
		break;
	case PROTO_ERROR:
	case PROTO_SESSION_ENDED:
		assert_int_equal(a->error.errnum, b->error.errnum);
		assert_string_equal(a->error.message, b->error.message);
		break;
	case PROTO_PING:
	case PROTO_PONG:
		assert_int_equal(a->ping.nonce, b->ping.nonce);
		break;
	case PROTO_STATUS_REPLY:
		assert_string_equal(a->status_reply.version, b->status_reply.version);
		assert_int_equal(a->status_reply.uptime_ms, b->status_reply.uptime_ms);
		assert_int_equal(a->status_reply.sessions, b->status_reply.sessions);
		assert_int_equal(a->status_reply.streams, b->status_reply.streams);
		assert_int_equal(a->status_reply.requests, b->status_reply.requests);
		assert_int_equal(a->status_reply.errors, b->status_reply.errors);
		assert_int_equal(a->status_reply.bytes_in, b->status_reply.bytes_in);
		assert_int_equal(a->status_reply.bytes_out, b->status_reply.bytes_out);
		assert_int_equal(a->status_reply.nbudgets, b->status_reply.nbudgets);
		assert_memory_equal(a->status_reply.budgets, b->status_reply.budgets,
				    sizeof(a->status_reply.budgets));
		assert_int_equal(a->status_reply.has_incoming, b->status_reply.has_incoming);
		assert_int_equal(a->status_reply.subscriptions, b->status_reply.subscriptions);
		assert_int_equal(a->status_reply.mirrored, b->status_reply.mirrored);
		assert_int_equal(a->status_reply.mirror_lost, b->status_reply.mirror_lost);
		assert_int_equal(a->status_reply.mirror_bytes, b->status_reply.mirror_bytes);
		assert_int_equal(a->status_reply.stolen, b->status_reply.stolen);
		assert_int_equal(a->status_reply.passed_to_target,
				 b->status_reply.passed_to_target);
		assert_int_equal(a->status_reply.has_kernel_relay,
				 b->status_reply.has_kernel_relay);
		assert_int_equal(a->status_reply.kernel_relay_on, b->status_reply.kernel_relay_on);
		assert_int_equal(a->status_reply.kernel_streams, b->status_reply.kernel_streams);
		break;
	case PROTO_SESSION_OPEN:
		assert_string_equal(a->session_open.target, b->session_open.target);
		break;
	case PROTO_SESSION_OPEN_REPLY:
		assert_int_equal(a->session_open_reply.session_id,
				 b->session_open_reply.session_id);
		assert_int_equal(a->session_open_reply.pid, b->session_open_reply.pid);
		assert_string_equal(a->session_open_reply.description,
				    b->session_open_reply.description);
		break;
	case PROTO_ENV_REPLY:
		assert_int_equal(a->env_reply.count, b->env_reply.count);
		for (uint32_t i = 0; i < a->env_reply.count; i++)
			assert_string_equal(a->env_reply.vars[i], b->env_reply.vars[i]);
		break;
	case PROTO_FILE_READ:
		assert_string_equal(a->file_read.path, b->file_read.path);
		assert_int_equal(a->file_read.flags, b->file_read.flags);
		assert_int_equal(a->file_read.max_size, b->file_read.max_size);
		break;
	case PROTO_FILE_READ_REPLY:
		assert_stat_equal(&a->file_read_reply.st, &b->file_read_reply.st);
		assert_int_equal(a->file_read_reply.transfer, b->file_read_reply.transfer);
		if (a->file_read_reply.transfer == PROTO_XFER_INLINE) {
			assert_blob_equal(&a->file_read_reply.data, &b->file_read_reply.data);
		} else {
			assert_int_equal(a->file_read_reply.stream_size,
					 b->file_read_reply.stream_size);
			assert_memory_equal(a->file_read_reply.token, b->file_read_reply.token,
					    PROTO_TOKEN_LEN);
		}
		break;
	case PROTO_FILE_WRITE:
		assert_string_equal(a->file_write.path, b->file_write.path);
		assert_int_equal(a->file_write.flags, b->file_write.flags);
		assert_int_equal(a->file_write.mode, b->file_write.mode);
		assert_int_equal(a->file_write.offset, b->file_write.offset);
		assert_blob_equal(&a->file_write.data, &b->file_write.data);
		break;
	case PROTO_FILE_WRITE_REPLY:
		assert_int_equal(a->file_write_reply.written, b->file_write_reply.written);
		assert_stat_equal(&a->file_write_reply.st, &b->file_write_reply.st);
		break;
	case PROTO_FILE_STAT:
	case PROTO_FILE_READLINK:
	case PROTO_FILE_READDIR:
	case PROTO_FILE_STATFS:
		assert_string_equal(a->path_req.path, b->path_req.path);
		assert_int_equal(a->path_req.flags, b->path_req.flags);
		break;
	case PROTO_FILE_STAT_REPLY:
		assert_stat_equal(&a->stat_reply, &b->stat_reply);
		break;
	case PROTO_FILE_ACCESS:
		assert_string_equal(a->file_access.path, b->file_access.path);
		assert_int_equal(a->file_access.mode, b->file_access.mode);
		assert_int_equal(a->file_access.flags, b->file_access.flags);
		break;
	case PROTO_FILE_MKDIR:
		assert_string_equal(a->file_mkdir.path, b->file_mkdir.path);
		assert_int_equal(a->file_mkdir.mode, b->file_mkdir.mode);
		break;
	case PROTO_FILE_UNLINK:
		assert_string_equal(a->file_unlink.path, b->file_unlink.path);
		assert_int_equal(a->file_unlink.flags, b->file_unlink.flags);
		break;
	case PROTO_FILE_RENAME:
		assert_string_equal(a->file_rename.from, b->file_rename.from);
		assert_string_equal(a->file_rename.to, b->file_rename.to);
		assert_int_equal(a->file_rename.flags, b->file_rename.flags);
		break;
	case PROTO_FILE_READLINK_REPLY:
		assert_string_equal(a->readlink_reply.target, b->readlink_reply.target);
		break;
	case PROTO_FILE_READDIR_REPLY:
		assert_int_equal(a->readdir_reply.count, b->readdir_reply.count);
		for (uint32_t i = 0; i < a->readdir_reply.count; i++) {
			assert_int_equal(a->readdir_reply.entries[i].ino,
					 b->readdir_reply.entries[i].ino);
			assert_int_equal(a->readdir_reply.entries[i].type,
					 b->readdir_reply.entries[i].type);
			assert_string_equal(a->readdir_reply.entries[i].name,
					    b->readdir_reply.entries[i].name);
		}
		break;
	case PROTO_FILE_STATFS_REPLY:
		assert_memory_equal(&a->statfs_reply, &b->statfs_reply, sizeof(a->statfs_reply));
		break;
	case PROTO_TCP_CONNECT:
		assert_addr_equal(&a->tcp_connect.dst, &b->tcp_connect.dst);
		assert_int_equal(a->tcp_connect.timeout_ms, b->tcp_connect.timeout_ms);
		break;
	case PROTO_TCP_CONNECT_REPLY:
		assert_memory_equal(a->tcp_connect_reply.token, b->tcp_connect_reply.token,
				    PROTO_TOKEN_LEN);
		assert_addr_equal(&a->tcp_connect_reply.local, &b->tcp_connect_reply.local);
		break;
	case PROTO_UDP_OPEN:
		assert_int_equal(a->udp_open.family, b->udp_open.family);
		break;
	case PROTO_UDP_OPEN_REPLY:
		assert_memory_equal(a->udp_open_reply.token, b->udp_open_reply.token,
				    PROTO_TOKEN_LEN);
		assert_addr_equal(&a->udp_open_reply.local, &b->udp_open_reply.local);
		break;
	case PROTO_UDP_DATAGRAM:
		assert_addr_equal(&a->udp_datagram.peer, &b->udp_datagram.peer);
		assert_int_equal(a->udp_datagram.len, b->udp_datagram.len);
		assert_memory_equal(a->udp_datagram.data, b->udp_datagram.data,
				    a->udp_datagram.len);
		break;
	case PROTO_INCOMING_SUBSCRIBE:
		assert_int_equal(a->incoming_subscribe.port, b->incoming_subscribe.port);
		assert_int_equal(a->incoming_subscribe.mode, b->incoming_subscribe.mode);
		assert_int_equal(a->incoming_subscribe.flags, b->incoming_subscribe.flags);
		assert_string_equal(a->incoming_subscribe.http_filter,
				    b->incoming_subscribe.http_filter);
		break;
	case PROTO_INCOMING_SUBSCRIBE_REPLY:
		assert_int_equal(a->incoming_subscribe_reply.subscription,
				 b->incoming_subscribe_reply.subscription);
		assert_string_equal(a->incoming_subscribe_reply.note,
				    b->incoming_subscribe_reply.note);
		break;
	case PROTO_INCOMING_UNSUBSCRIBE:
		assert_int_equal(a->incoming_unsubscribe.subscription,
				 b->incoming_unsubscribe.subscription);
		break;
	case PROTO_INCOMING_CONNECTION:
		assert_int_equal(a->incoming_connection.subscription,
				 b->incoming_connection.subscription);
		assert_memory_equal(a->incoming_connection.token, b->incoming_connection.token,
				    PROTO_TOKEN_LEN);
		assert_addr_equal(&a->incoming_connection.client, &b->incoming_connection.client);
		assert_addr_equal(&a->incoming_connection.server, &b->incoming_connection.server);
		break;
	case PROTO_INCOMING_DATA:
		assert_int_equal(a->incoming_data.len, b->incoming_data.len);
		assert_memory_equal(a->incoming_data.data, b->incoming_data.data,
				    a->incoming_data.len);
		break;
	case PROTO_INCOMING_END:
		assert_int_equal(a->incoming_end.error, b->incoming_end.error);
		break;
	}
}

/* Encode m as a frame with id and decode it back through the frame parser. */
static void roundtrip(const struct proto_msg *m, uint32_t id, struct proto_buf *b,
		      struct proto_msg *out)
{
	struct hm_err err = {0};
	proto_buf_reset(b);
	if (proto_encode(b, id, m, &err) < 0)
		fail_msg("encode %s: %s", proto_type_name(m->type), err.msg);
	struct proto_hdr h;
	const uint8_t *payload = NULL;
	assert_int_equal(parse_frame(b->data, b->len, PROTO_MAX_PAYLOAD, &h, &payload, &err),
			 (ssize_t)b->len);
	assert_int_equal(h.type, m->type);
	assert_int_equal(h.id, id);
	if (proto_decode(&h, payload, out, &err) < 0)
		fail_msg("decode %s: %s", proto_type_name(m->type), err.msg);
	assert_int_equal(out->id, id);
}

static void test_roundtrip_every_type(void **state)
{
	(void)state;
	struct proto_buf b = PROTO_BUF_INIT, b2 = PROTO_BUF_INIT;
	int types = 0;
	for (uint32_t t = 0; t <= 0xffff; t++) {
		if (!proto_type_known((uint16_t)t))
			continue;
		types++;
		struct proto_msg m, out, out2;
		if (!sample((uint16_t)t, &m))
			fail_msg("no sample for type 0x%04x %s", t, proto_type_name((uint16_t)t));
		roundtrip(&m, 1000 + t, &b, &out);
		assert_msg_equal(&m, &out);
		/* the decoded message encodes to the very same bytes */
		roundtrip(&out, 1000 + t, &b2, &out2);
		assert_int_equal(b.len, b2.len);
		assert_memory_equal(b.data, b2.data, b.len);
		proto_msg_free(&out2);
		proto_msg_free(&out);
	}
	assert_int_equal(types, 42);
	proto_buf_release(&b);
	proto_buf_release(&b2);
}

static void test_roundtrip_variants(void **state)
{
	(void)state;
	struct proto_buf b = PROTO_BUF_INIT;
	struct proto_msg m, out;

	sample(PROTO_FILE_READ_REPLY, &m);
	m.file_read_reply.transfer = PROTO_XFER_STREAM;
	m.file_read_reply.stream_size = 100ull << 20;
	memcpy(m.file_read_reply.token, sample_token, PROTO_TOKEN_LEN);
	roundtrip(&m, 7, &b, &out);
	assert_msg_equal(&m, &out);
	proto_msg_free(&out);

	/* empty lists and empty content */
	sample(PROTO_ENV_REPLY, &m);
	m.env_reply.count = 0;
	m.env_reply.vars = NULL;
	roundtrip(&m, 8, &b, &out);
	assert_int_equal(out.env_reply.count, 0);
	proto_msg_free(&out);

	sample(PROTO_FILE_READ_REPLY, &m);
	m.file_read_reply.data = (struct proto_blob){.data = NULL, .size = 0, .compress = true};
	roundtrip(&m, 9, &b, &out);
	assert_int_equal(out.file_read_reply.data.size, 0);
	assert_non_null(out.file_read_reply.data.data);
	proto_msg_free(&out);

	sample(PROTO_UDP_DATAGRAM, &m);
	m.udp_datagram.peer = sample_addr(false);
	m.udp_datagram.len = 0;
	m.udp_datagram.data = NULL;
	roundtrip(&m, 0, &b, &out);
	assert_int_equal(out.udp_datagram.len, 0);
	proto_msg_free(&out);
	proto_buf_release(&b);
}

/* ---- hostile input ---- */

#define STATUS_INCOMING_LEN (4 + 5 * 8) /* subscriptions, then five u64 counters */
/* a STATUS_REPLY's kernel relay tail: on/off (u8) and streams (u32) */
#define STATUS_KERNEL_LEN (1 + 4)

static void test_truncated_at_every_offset(void **state)
{
	(void)state;
	struct proto_buf b = PROTO_BUF_INIT;
	for (uint32_t t = 0; t <= 0xffff; t++) {
		struct proto_msg m, out;
		struct hm_err err = {0};
		if (!proto_type_known((uint16_t)t))
			continue;
		sample((uint16_t)t, &m);
		proto_buf_reset(&b);
		assert_int_equal(proto_encode(&b, 5, &m, &err), 0);
		struct proto_hdr h;
		const uint8_t *payload;
		/* a prefix of a frame is never a frame */
		for (size_t n = 0; n < b.len; n++)
			assert_int_equal(
			    parse_frame(b.data, n, PROTO_MAX_PAYLOAD, &h, &payload, &err), 0);
		/* a payload cut short anywhere, with a header that agrees, is rejected */
		assert_true(parse_frame(b.data, b.len, PROTO_MAX_PAYLOAD, &h, &payload, &err) > 0);
		uint32_t full = h.len;
		/* a STATUS_REPLY without its kernel relay tail, or also without its incoming
		 * counters, or also without its budgets, is an older agent's, and whole */
		uint32_t kernelless =
		    t == PROTO_STATUS_REPLY ? full - STATUS_KERNEL_LEN : UINT32_MAX;
		uint32_t incomingless =
		    t == PROTO_STATUS_REPLY ? kernelless - STATUS_INCOMING_LEN : UINT32_MAX;
		uint32_t budgetless = t == PROTO_STATUS_REPLY
					  ? incomingless - 1 - 32 * m.status_reply.nbudgets
					  : UINT32_MAX;
		for (uint32_t n = 0; n < full; n++) {
			if (n == budgetless || n == incomingless || n == kernelless)
				continue;
			h.len = n;
			uint8_t *copy =
			    malloc(n ? n : 1); /* exact size so ASan sees any over-read */
			memcpy(copy, payload, n);
			if (proto_decode(&h, copy, &out, &err) == 0)
				fail_msg("%s truncated to %u of %u bytes decoded",
					 proto_type_name(t), n, full);
			assert_true(err.code == EBADMSG || err.code == EPROTO || err.code == E2BIG);
			proto_msg_free(&out);
			free(copy);
		}
		/* one byte too many is rejected too */
		h.len = full + 1;
		uint8_t *longer = calloc(1, full + 1);
		memcpy(longer, payload, full);
		assert_int_equal(proto_decode(&h, longer, &out, &err), -1);
		assert_int_equal(err.code, EBADMSG);
		free(longer);
	}
	proto_buf_release(&b);
}

/* An agent from before the budgets: its STATUS_REPLY ends after bytes_out. */
static void test_status_without_budgets(void **state)
{
	(void)state;
	struct proto_msg m, out;
	struct hm_err err = {0};
	sample(PROTO_STATUS_REPLY, &m);
	m.status_reply.nbudgets = 0;
	struct proto_buf b = PROTO_BUF_INIT;
	assert_int_equal(proto_encode(&b, 1, &m, &err), 0);
	struct proto_hdr h;
	const uint8_t *payload;
	assert_true(parse_frame(b.data, b.len, PROTO_MAX_PAYLOAD, &h, &payload, &err) > 0);
	assert_int_equal(proto_decode(&h, payload, &out, &err), 0);
	assert_int_equal(out.status_reply.nbudgets, 0);
	assert_int_equal(out.status_reply.bytes_out, m.status_reply.bytes_out);
	proto_msg_free(&out);
	/* more budgets than the protocol allows is a lie */
	m.status_reply.nbudgets = 1;
	proto_buf_reset(&b);
	assert_int_equal(proto_encode(&b, 1, &m, &err), 0);
	assert_true(parse_frame(b.data, b.len, PROTO_MAX_PAYLOAD, &h, &payload, &err) > 0);
	uint8_t *copy = malloc(h.len);
	memcpy(copy, payload, h.len);
	copy[h.len - 33 - STATUS_INCOMING_LEN - STATUS_KERNEL_LEN] = PROTO_BUDGET_MAX + 1;
	assert_int_equal(proto_decode(&h, copy, &out, &err), -1);
	assert_int_equal(err.code, EBADMSG);
	free(copy);
	proto_buf_release(&b);
}

static void make_socketpair(int sv[2], bool nonblock)
{
	assert_int_equal(
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0, sv),
	    0);
}

static void test_truncated_stream_through_reader(void **state)
{
	(void)state;
	struct proto_msg m;
	struct proto_buf b = PROTO_BUF_INIT;
	struct hm_err err = {0};
	sample(PROTO_FILE_WRITE, &m);
	assert_int_equal(proto_encode(&b, 9, &m, &err), 0);
	for (size_t n = 0; n < b.len; n++) {
		int sv[2];
		make_socketpair(sv, true);
		assert_int_equal(write(sv[1], b.data, n), (ssize_t)n);
		close(sv[1]);
		struct proto_frame_reader r;
		struct proto_frame f = {0};
		proto_frame_reader_init(&r, PROTO_MAX_PAYLOAD);
		assert_int_equal(proto_frame_reader_read(&r, sv[0], &f, &err), -1);
		/* nothing at all is a clean close, anything else a truncated frame */
		assert_int_equal(err.code, n == 0 ? 0 : EPROTO);
		proto_frame_reader_release(&r);
		close(sv[0]);
	}
	proto_buf_release(&b);
}

static void test_oversize_rejected_before_allocation(void **state)
{
	(void)state;
	struct hm_err err = {0};
	uint8_t raw[PROTO_HDR_LEN];
	struct proto_hdr h = {.len = PROTO_MAX_PAYLOAD + 1, .type = PROTO_PING, .id = 1};
	proto_hdr_encode(raw, &h);
	struct proto_hdr out;
	assert_int_equal(proto_hdr_decode(raw, PROTO_MAX_PAYLOAD, &out, &err), -1);
	assert_int_equal(err.code, E2BIG);
	assert_int_equal(out.id, 1); /* still known, to answer with ERROR */
	h.len = PROTO_MAX_PAYLOAD;
	proto_hdr_encode(raw, &h);
	assert_int_equal(proto_hdr_decode(raw, PROTO_MAX_PAYLOAD, &out, &err), 0);
	/* even a limit above the protocol's is clamped */
	h.len = 0xffffffffu;
	proto_hdr_encode(raw, &h);
	assert_int_equal(proto_hdr_decode(raw, UINT32_MAX, &out, &err), -1);
	assert_int_equal(err.code, E2BIG);

	/* the fd reader fails right after the header: no payload was ever allocated, and it
	 * does not wait for 4 GiB that will never come */
	int sv[2];
	make_socketpair(sv, true);
	assert_int_equal(write(sv[1], raw, sizeof(raw)), (ssize_t)sizeof(raw));
	struct proto_frame_reader r;
	struct proto_frame f = {0};
	proto_frame_reader_init(&r, PROTO_MAX_PAYLOAD);
	assert_int_equal(proto_frame_reader_read(&r, sv[0], &f, &err), -1);
	assert_int_equal(err.code, E2BIG);
	assert_null(r.frame.payload);
	proto_frame_reader_release(&r);

	/* before authentication the limit is a few KiB */
	h.len = PROTO_HELLO_MAX_PAYLOAD + 1;
	h.type = PROTO_HELLO;
	proto_hdr_encode(raw, &h);
	assert_int_equal(write(sv[1], raw, sizeof(raw)), (ssize_t)sizeof(raw));
	proto_frame_reader_init(&r, PROTO_HELLO_MAX_PAYLOAD);
	assert_int_equal(proto_frame_reader_read(&r, sv[0], &f, &err), -1);
	assert_int_equal(err.code, E2BIG);
	assert_null(r.frame.payload);
	proto_frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);

	/* the encoder refuses to build a frame over the limit */
	char *s = malloc(PROTO_ENV_ENTRY_MAX + 1);
	memset(s, 'x', PROTO_ENV_ENTRY_MAX);
	s[PROTO_ENV_ENTRY_MAX] = '\0';
	size_t n = PROTO_MAX_PAYLOAD / PROTO_ENV_ENTRY_MAX + 1;
	const char **vars = calloc(n, sizeof(*vars));
	for (size_t i = 0; i < n; i++)
		vars[i] = s;
	struct proto_msg m = {.type = PROTO_ENV_REPLY};
	m.env_reply.count = n;
	m.env_reply.vars = vars;
	struct proto_buf b = PROTO_BUF_INIT;
	proto_put_u8(&b, 0xaa); /* something queued before must survive the failure */
	assert_int_equal(proto_encode(&b, 3, &m, &err), -1);
	assert_int_equal(err.code, E2BIG);
	assert_int_equal(b.len, 1);
	assert_int_equal(b.error, 0);
	free(vars);
	free(s);
	proto_buf_release(&b);

	/* a blob over PROTO_INLINE_MAX and a datagram over 64 KiB are refused both ways */
	sample(PROTO_FILE_READ_REPLY, &m);
	m.file_read_reply.data.size = PROTO_INLINE_MAX + 1;
	assert_int_equal(proto_encode(&b, 3, &m, &err), -1);
	uint8_t dgram[] = {PROTO_AF_INET, 53, 0, 10, 0, 0, 1, 0x00, 0x00, 0x01, 0x00};
	struct proto_hdr dh = {.len = sizeof(dgram), .type = PROTO_UDP_DATAGRAM};
	assert_int_equal(proto_decode(&dh, dgram, &m, &err), -1);
	assert_int_equal(err.code, E2BIG);
	proto_buf_release(&b);
}

static void test_unknown_type_and_flags_rejected(void **state)
{
	(void)state;
	struct hm_err err = {0};
	uint8_t raw[PROTO_HDR_LEN];
	struct proto_hdr h = {.len = 0, .type = 0x1234, .id = 77};
	proto_hdr_encode(raw, &h);
	struct proto_hdr out;
	assert_int_equal(proto_hdr_decode(raw, PROTO_MAX_PAYLOAD, &out, &err), -1);
	assert_int_equal(err.code, EPROTO);
	assert_int_equal(out.id, 77);
	struct proto_msg m;
	assert_int_equal(proto_decode(&h, NULL, &m, &err), -1);
	assert_int_equal(err.code, EPROTO);
	h.type = 0x0600; /* in the incoming range, not a type */
	assert_int_equal(proto_decode(&h, NULL, &m, &err), -1);
	assert_int_equal(err.code, EPROTO);

	h.type = PROTO_PING;
	h.flags = 0x0001;
	proto_hdr_encode(raw, &h);
	assert_int_equal(proto_hdr_decode(raw, PROTO_MAX_PAYLOAD, &out, &err), -1);
	assert_int_equal(err.code, EPROTO);

	m = (struct proto_msg){.type = 0x7777};
	struct proto_buf b = PROTO_BUF_INIT;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	assert_int_equal(err.code, EPROTO);
	assert_int_equal(b.len, 0);
	proto_buf_release(&b);

	/* unknown flag bits inside a message */
	sample(PROTO_FILE_STAT, &m);
	m.path_req.flags = 0x80;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	m.path_req.flags = 0;
	assert_int_equal(proto_encode(&b, 1, &m, &err), 0);
	b.data[PROTO_HDR_LEN + 4 + strlen(m.path_req.path) + 1] = 0x80;
	struct proto_hdr ph;
	const uint8_t *payload;
	assert_true(parse_frame(b.data, b.len, PROTO_MAX_PAYLOAD, &ph, &payload, &err) > 0);
	assert_int_equal(proto_decode(&ph, payload, &m, &err), -1);
	assert_int_equal(err.code, EPROTO);
	proto_buf_release(&b);
}

/* FILE_STAT payload: string path | u32 flags */
static int decode_stat_payload(const void *p, size_t len, struct hm_err *err)
{
	struct proto_hdr h = {.len = (uint32_t)len, .type = PROTO_FILE_STAT, .id = 1};
	struct proto_msg m;
	int rc = proto_decode(&h, p, &m, err);
	proto_msg_free(&m);
	return rc;
}

static void test_bad_strings_rejected(void **state)
{
	(void)state;
	struct hm_err err = {0};
	/* "/a\0b" with its terminator */
	static const uint8_t embedded[] = {4, 0, 0, 0, '/', 'a', 0, 'b', 0, 0, 0, 0, 0};
	assert_int_equal(decode_stat_payload(embedded, sizeof(embedded), &err), -1);
	assert_int_equal(err.code, EBADMSG);
	assert_non_null(strstr(err.msg, "NUL"));
	/* terminator missing */
	static const uint8_t unterminated[] = {2, 0, 0, 0, '/', 'a', 'x', 0, 0, 0, 0};
	assert_int_equal(decode_stat_payload(unterminated, sizeof(unterminated), &err), -1);
	assert_int_equal(err.code, EBADMSG);
	/* length pointing past the end */
	static const uint8_t overlong[] = {0xff, 0xff, 0, 0, '/', 'a', 0, 0, 0, 0, 0};
	assert_int_equal(decode_stat_payload(overlong, sizeof(overlong), &err), -1);
	assert_true(err.code == E2BIG || err.code == EBADMSG);
	/* a relative path */
	static const uint8_t relative[] = {2, 0, 0, 0, 'a', 'b', 0, 0, 0, 0, 0};
	assert_int_equal(decode_stat_payload(relative, sizeof(relative), &err), -1);
	assert_int_equal(err.code, EBADMSG);
	static const uint8_t good[] = {2, 0, 0, 0, '/', 'b', 0, 1, 0, 0, 0};
	assert_int_equal(decode_stat_payload(good, sizeof(good), &err), 0);

	/* a path over PATH_MAX is refused by both ends */
	char *path = malloc(PROTO_PATH_MAX + 2);
	memset(path, 'a', PROTO_PATH_MAX + 1);
	path[0] = '/';
	path[PROTO_PATH_MAX + 1] = '\0';
	struct proto_msg m = {.type = PROTO_FILE_STAT};
	m.path_req.path = path;
	struct proto_buf b = PROTO_BUF_INIT;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	assert_int_equal(err.code, E2BIG);
	proto_put_u32(&b, PROTO_PATH_MAX + 1);
	proto_put_bytes(&b, path, PROTO_PATH_MAX + 2);
	proto_put_u32(&b, 0);
	assert_int_equal(decode_stat_payload(b.data, b.len, &err), -1);
	assert_int_equal(err.code, E2BIG);
	free(path);
	proto_buf_release(&b);

	/* a directory entry name with a slash */
	struct proto_dirent bad = {.ino = 1, .type = DT_REG, .name = "a/b"};
	m = (struct proto_msg){.type = PROTO_FILE_READDIR_REPLY};
	m.readdir_reply.count = 1;
	m.readdir_reply.entries = &bad;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	assert_int_equal(err.code, EINVAL);
	proto_buf_release(&b);

	/* a huge element count in a tiny payload is refused before the array is allocated */
	static const uint8_t many[] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0};
	struct proto_hdr h = {.len = sizeof(many), .type = PROTO_ENV_REPLY};
	assert_int_equal(proto_decode(&h, many, &m, &err), -1);
	assert_int_equal(err.code, EBADMSG);
	h.type = PROTO_FILE_READDIR_REPLY;
	assert_int_equal(proto_decode(&h, many, &m, &err), -1);
	assert_int_equal(err.code, EBADMSG);
}

static void test_bad_values_rejected(void **state)
{
	(void)state;
	struct hm_err err = {0};
	struct proto_buf b = PROTO_BUF_INIT;
	struct proto_msg m;

	sample(PROTO_HELLO, &m);
	assert_int_equal(proto_encode(&b, 0, &m, &err), 0);
	b.data[PROTO_HDR_LEN] ^= 0xff; /* magic */
	struct proto_hdr h;
	const uint8_t *payload;
	assert_true(parse_frame(b.data, b.len, PROTO_MAX_PAYLOAD, &h, &payload, &err) > 0);
	assert_int_equal(proto_decode(&h, payload, &m, &err), -1);
	assert_int_equal(err.code, EPROTO);
	proto_buf_reset(&b);

	sample(PROTO_ERROR, &m);
	m.error.errnum = 0;
	assert_int_equal(proto_encode(&b, 0, &m, &err), -1);
	m.error.errnum = 5000;
	assert_int_equal(proto_encode(&b, 0, &m, &err), -1);
	m.error.errnum = -1;
	assert_int_equal(proto_encode(&b, 0, &m, &err), -1);

	sample(PROTO_TCP_CONNECT, &m);
	m.tcp_connect.dst.family = 5;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	sample(PROTO_FILE_MKDIR, &m);
	m.file_mkdir.mode = 010000;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	sample(PROTO_FILE_READ, &m);
	m.file_read.path = "etc/hosts";
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	assert_int_equal(err.code, EINVAL);
	sample(PROTO_SESSION_OPEN, &m);
	m.session_open.target = "pod/../../etc";
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	sample(PROTO_FILE_STAT_REPLY, &m);
	m.stat_reply.mtime.nsec = 1000000000;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	sample(PROTO_FILE_RENAME, &m);
	m.file_rename.flags = PROTO_RENAME_NOREPLACE | PROTO_RENAME_EXCHANGE;
	assert_int_equal(proto_encode(&b, 1, &m, &err), -1);
	assert_int_equal(b.len, 0);

	/* the same target checks on the decoding side */
	proto_put_string(&b, "pod/a b", PROTO_NAME_MAX);
	h = (struct proto_hdr){.len = (uint32_t)b.len, .type = PROTO_SESSION_OPEN};
	assert_int_equal(proto_decode(&h, b.data, &m, &err), -1);
	assert_int_equal(err.code, EBADMSG);
	proto_buf_release(&b);
}

static void test_targets(void **state)
{
	(void)state;
	struct proto_target t;
	struct hm_err err = {0};
	assert_int_equal(proto_target_parse("pod/web", &t, &err), 0);
	assert_int_equal(t.kind, PROTO_TARGET_POD);
	assert_string_equal(t.value, "web");
	assert_int_equal(proto_target_parse("pid/1234", &t, &err), 0);
	assert_int_equal(t.kind, PROTO_TARGET_PID);
	assert_int_equal(t.pid, 1234);
	assert_int_equal(
	    proto_target_parse("container/"
			       "4f8a2b6c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2",
			       &t, &err),
	    0);
	assert_int_equal(t.kind, PROTO_TARGET_CONTAINER);
	const char *bad[] = {"pod/",   "pod/..",  "pod/.",	     "pod/a/b",	 "pid/0",
			     "pid/-1", "pid/012", "pid/99999999999", "pid/12x",	 "node/x",
			     "web",    "",	  "container/a b",   "pod/web\n"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(bad); i++) {
		if (proto_target_parse(bad[i], &t, &err) == 0)
			fail_msg("target '%s' accepted", bad[i]);
		assert_int_equal(err.code, EINVAL);
	}
}

/* ---- compression ---- */

static void test_compression_1mib_and_incompressible(void **state)
{
	(void)state;
	size_t len = 1 << 20;
	char *text = malloc(len);
	/* log-like text: compresses well, but is not trivially uniform */
	size_t off = 0;
	for (unsigned i = 0; off < len; i++) {
		char line[128];
		int n = snprintf(line, sizeof(line),
				 "%08u INFO request id=%u path=/api/v1/items/%u ok\n", i, i * 7919u,
				 i % 1000);
		size_t c = (size_t)n < len - off ? (size_t)n : len - off;
		memcpy(text + off, line, c);
		off += c;
	}
	struct proto_buf b = PROTO_BUF_INIT;
	struct hm_err err = {0};
	struct proto_msg m, out;
	sample(PROTO_FILE_READ_REPLY, &m);
	m.file_read_reply.data = (struct proto_blob){.data = text, .size = len, .compress = true};
	roundtrip(&m, 11, &b, &out);
	assert_int_equal(out.file_read_reply.data.encoding, PROTO_ENC_ZLIB);
	assert_true(b.len < len / 4);
	assert_int_equal(out.file_read_reply.data.size, len);
	assert_memory_equal(out.file_read_reply.data.data, text, len);
	proto_msg_free(&out);

	/* write-back compresses the same way */
	sample(PROTO_FILE_WRITE, &m);
	m.file_write.data = (struct proto_blob){.data = text, .size = len, .compress = true};
	roundtrip(&m, 12, &b, &out);
	assert_int_equal(out.file_write.data.encoding, PROTO_ENC_ZLIB);
	assert_memory_equal(out.file_write.data.data, text, len);
	proto_msg_free(&out);

	/* random bytes stay raw */
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(hm_read_all(fd, text, len), (ssize_t)len);
	close(fd);
	sample(PROTO_FILE_READ_REPLY, &m);
	m.file_read_reply.data = (struct proto_blob){.data = text, .size = len, .compress = true};
	roundtrip(&m, 13, &b, &out);
	assert_int_equal(out.file_read_reply.data.encoding, PROTO_ENC_RAW);
	assert_true(b.len > len);
	assert_memory_equal(out.file_read_reply.data.data, text, len);
	proto_msg_free(&out);

	/* random data behind a compressible prefix still round-trips whatever is chosen */
	memset(text, 'a', 128 << 10);
	roundtrip(&m, 14, &b, &out);
	assert_memory_equal(out.file_read_reply.data.data, text, len);
	proto_msg_free(&out);

	/* tiny content is never worth compressing */
	m.file_read_reply.data =
	    (struct proto_blob){.data = "aaaaaaaaaaaaaaaa", .size = 16, .compress = true};
	roundtrip(&m, 15, &b, &out);
	assert_int_equal(out.file_read_reply.data.encoding, PROTO_ENC_RAW);
	proto_msg_free(&out);

	/* a lying size: the zlib data inflates to something else */
	memset(text, 'z', 4096);
	size_t clen = proto_deflate(text, 4096, text + 8192, 4096);
	assert_true(clen > 0);
	struct proto_buf p = PROTO_BUF_INIT;
	for (int delta = -1; delta <= 1; delta += 2) {
		proto_buf_reset(&p);
		/* FILE_WRITE: path | flags | mode | offset | blob */
		proto_put_string(&p, "/x", PROTO_PATH_MAX);
		proto_put_u32(&p, 0);
		proto_put_u32(&p, 0644);
		proto_put_u64(&p, 0);
		proto_put_u8(&p, PROTO_ENC_ZLIB);
		proto_put_u64(&p, 4096 + delta);
		proto_put_u32(&p, (uint32_t)clen);
		proto_put_bytes(&p, text + 8192, clen);
		struct proto_hdr h = {.len = (uint32_t)p.len, .type = PROTO_FILE_WRITE};
		assert_int_equal(proto_decode(&h, p.data, &out, &err), -1);
		assert_int_equal(err.code, EBADMSG);
	}
	/* and a claimed size far beyond what deflate can reach is refused without inflating */
	proto_buf_reset(&p);
	proto_put_string(&p, "/x", PROTO_PATH_MAX);
	proto_put_u32(&p, 0);
	proto_put_u32(&p, 0644);
	proto_put_u64(&p, 0);
	proto_put_u8(&p, PROTO_ENC_ZLIB);
	proto_put_u64(&p, PROTO_INLINE_MAX);
	proto_put_u32(&p, 8);
	proto_put_bytes(&p, "12345678", 8);
	struct proto_hdr h = {.len = (uint32_t)p.len, .type = PROTO_FILE_WRITE};
	assert_int_equal(proto_decode(&h, p.data, &out, &err), -1);
	assert_non_null(strstr(err.msg, "ratio"));
	proto_buf_release(&p);
	proto_buf_release(&b);
	free(text);
}

/* ---- frames on fds ---- */

static void test_reader_byte_by_byte_and_exact(void **state)
{
	(void)state;
	struct proto_buf b = PROTO_BUF_INIT;
	struct hm_err err = {0};
	struct proto_msg m, out;
	sample(PROTO_STREAM_HELLO, &m);
	assert_int_equal(proto_encode(&b, 0, &m, &err), 0);
	sample(PROTO_PING, &m);
	assert_int_equal(proto_encode(&b, 3, &m, &err), 0);
	sample(PROTO_OK, &m); /* empty payload */
	assert_int_equal(proto_encode(&b, 4, &m, &err), 0);
	int sv[2];
	make_socketpair(sv, true);
	struct proto_frame_reader r;
	proto_frame_reader_init(&r, PROTO_MAX_PAYLOAD);
	struct proto_frame f = {0};
	uint16_t want[] = {PROTO_STREAM_HELLO, PROTO_PING, PROTO_OK};
	size_t got = 0;
	for (size_t i = 0; i < b.len; i++) {
		assert_int_equal(write(sv[1], b.data + i, 1), 1);
		int rc = proto_frame_reader_read(&r, sv[0], &f, &err);
		assert_true(rc >= 0);
		if (rc == 1) {
			assert_true(got < HM_ARRAY_SIZE(want));
			assert_int_equal(f.hdr.type, want[got]);
			assert_int_equal(proto_decode_frame(&f, &out, &err), 0);
			assert_null(f.payload);
			proto_msg_free(&out);
			got++;
		}
	}
	assert_int_equal(got, 3);
	assert_int_equal(proto_frame_reader_read(&r, sv[0], &f, &err), 0);

	/* the reader stops at the frame's end: raw stream bytes that follow are untouched */
	proto_buf_reset(&b);
	sample(PROTO_STREAM_HELLO, &m);
	assert_int_equal(proto_encode(&b, 0, &m, &err), 0);
	proto_put_bytes(&b, "GET / HTTP/1.1\r\n", 16);
	assert_int_equal(write(sv[1], b.data, b.len), (ssize_t)b.len);
	assert_int_equal(proto_frame_reader_read(&r, sv[0], &f, &err), 1);
	proto_frame_release(&f);
	char rest[64];
	assert_int_equal(read(sv[0], rest, sizeof(rest)), 16);
	assert_memory_equal(rest, "GET / HTTP/1.1\r\n", 16);
	proto_frame_reader_release(&r);
	close(sv[0]);
	close(sv[1]);
	proto_buf_release(&b);
}

static void test_send_recv_timeout(void **state)
{
	(void)state;
	int sv[2];
	make_socketpair(sv, false);
	struct hm_err err = {0};
	struct proto_msg m, out;
	sample(PROTO_FILE_READDIR_REPLY, &m);
	assert_int_equal(proto_send(sv[1], 99, &m, &err), 0);
	assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 1000, &out, &err), 0);
	assert_int_equal(out.id, 99);
	assert_msg_equal(&m, &out);
	proto_msg_free(&out);
	/* nothing comes: the deadline holds even on a blocking fd */
	assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 50, &out, &err), -1);
	assert_int_equal(err.code, ETIMEDOUT);
	/* half a frame, then silence */
	struct proto_buf b = PROTO_BUF_INIT;
	sample(PROTO_PING, &m);
	assert_int_equal(proto_encode(&b, 1, &m, &err), 0);
	assert_int_equal(write(sv[1], b.data, PROTO_HDR_LEN + 2), PROTO_HDR_LEN + 2);
	assert_int_equal(proto_recv(sv[0], PROTO_MAX_PAYLOAD, 50, &out, &err), -1);
	assert_int_equal(err.code, ETIMEDOUT);
	proto_buf_release(&b);
	assert_int_equal(send_error(sv[1], 5, ENOENT, &err, "no such file %s", "/x"), 0);
	close(sv[0]);
	/* the peer is gone: an error, not SIGPIPE */
	assert_int_equal(proto_send(sv[1], 1, &m, &err), -1);
	assert_int_equal(err.code, EPIPE);
	close(sv[1]);
}

/* A tiny agent on the other end of a socketpair, for the handshake and request/reply. */
struct fake_agent {
	int fd;
	const char *token;
};

static void *fake_agent_main(void *arg)
{
	struct fake_agent *a = arg;
	struct hm_err err = {0};
	struct proto_msg m;
	for (;;) {
		if (proto_recv(a->fd, PROTO_MAX_PAYLOAD, 5000, &m, &err) < 0)
			break;
		struct proto_msg reply = {.type = PROTO_OK};
		switch (m.type) {
		case PROTO_HELLO:
			reply.type = PROTO_HELLO_REPLY;
			proto_server_check_hello(&m.hello, a->token, PROTO_FEATURES_SUPPORTED,
						 "fake-agent", &reply.hello_reply);
			break;
		case PROTO_STREAM_HELLO:
			reply.type = PROTO_STREAM_HELLO_REPLY;
			if (!proto_token_equal(m.stream_hello.token, sample_token,
					       PROTO_TOKEN_LEN)) {
				reply.stream_hello_reply.error = ENOENT;
				reply.stream_hello_reply.reason = "no such stream";
			}
			break;
		case PROTO_FILE_MKDIR:
			break; /* OK */
		case PROTO_PING:
			reply.type = PROTO_PONG;
			reply.ping.nonce = m.ping.nonce;
			break;
		case PROTO_FILE_STAT:
			send_error(a->fd, m.id, ENOENT, &err, "%s does not exist", m.path_req.path);
			proto_msg_free(&m);
			continue;
		case PROTO_ENV_GET:
			reply.type = PROTO_SESSION_ENDED;
			reply.error = (struct proto_error){ESRCH, "pod/web exited"};
			proto_send(a->fd, 0, &reply, &err);
			proto_msg_free(&m);
			continue;
		default:
			reply.type = PROTO_PONG; /* the wrong reply on purpose */
		}
		proto_send(a->fd, m.id, &reply, &err);
		proto_msg_free(&m);
	}
	close(a->fd);
	return NULL;
}

static void test_handshake_and_call(void **state)
{
	(void)state;
	for (int round = 0; round < 3; round++) {
		int sv[2];
		make_socketpair(sv, false);
		struct fake_agent a = {.fd = sv[1], .token = "right-token"};
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, fake_agent_main, &a), 0);
		struct hm_err err = {0};
		uint64_t agreed = 0;
		if (round == 0) {
			assert_int_equal(proto_client_handshake(sv[0], "wrong", "test",
								PROTO_FEAT_ZLIB, 1000, &agreed,
								&err),
					 -1);
			assert_int_equal(err.code, EACCES);
			assert_non_null(strstr(err.msg, "fake-agent"));
		} else if (round == 1) {
			assert_int_equal(
			    proto_client_handshake(sv[0], "", "test", 0, 1000, &agreed, &err), -1);
			assert_int_equal(err.code, EACCES);
		} else {
			assert_int_equal(proto_client_handshake(sv[0], "right-token", "test",
								PROTO_FEAT_ZLIB | (1ull << 40),
								1000, &agreed, &err),
					 0);
			assert_int_equal(agreed, PROTO_FEAT_ZLIB);

			struct proto_msg req, reply;
			sample(PROTO_PING, &req);
			assert_int_equal(call(sv[0], 1, &req, &reply, 1000, &err), 0);
			assert_int_equal(reply.type, PROTO_PONG);
			assert_int_equal(reply.ping.nonce, req.ping.nonce);
			proto_msg_free(&reply);

			sample(PROTO_FILE_STAT, &req);
			assert_int_equal(call(sv[0], 2, &req, &reply, 1000, &err), -1);
			assert_int_equal(err.code, ENOENT);
			assert_non_null(strstr(err.msg, "/etc/passwd does not exist"));

			sample(PROTO_FILE_MKDIR, &req);
			assert_int_equal(call(sv[0], 3, &req, &reply, 1000, &err), 0);
			assert_int_equal(reply.type, PROTO_OK);

			sample(PROTO_FILE_UNLINK, &req); /* answered with PONG */
			assert_int_equal(call(sv[0], 4, &req, &reply, 1000, &err), -1);
			assert_int_equal(err.code, EPROTO);

			sample(PROTO_STREAM_HELLO, &req);
			assert_int_equal(proto_stream_open(sv[0], sample_token, 1000, &err), 0);
			uint8_t other[PROTO_TOKEN_LEN] = {0};
			assert_int_equal(proto_stream_open(sv[0], other, 1000, &err), -1);
			assert_int_equal(err.code, ENOENT);

			sample(PROTO_ENV_GET, &req);
			assert_int_equal(call(sv[0], 5, &req, &reply, 1000, &err), -1);
			assert_int_equal(err.code, ESRCH);
			assert_non_null(strstr(err.msg, "session ended"));
		}
		close(sv[0]);
		pthread_join(th, NULL);
	}

	/* a server judging an old client */
	struct proto_hello h = {.version = PROTO_VERSION + 1, .token = "t", .client = "old"};
	struct proto_hello_reply r;
	assert_int_equal(proto_server_check_hello(&h, "t", PROTO_FEATURES_SUPPORTED, "a", &r), -1);
	assert_int_equal(r.error, EPROTONOSUPPORT);
}

/* ---- portable structs ---- */

static void test_host_conversions(void **state)
{
	(void)state;
	struct stat st, back;
	assert_int_equal(stat("/dev/null", &st), 0);
	struct proto_stat ps;
	proto_stat_from_host(&st, &ps);
	proto_stat_to_host(&ps, &back);
	assert_int_equal(back.st_dev, st.st_dev);
	assert_int_equal(back.st_rdev, st.st_rdev);
	assert_int_equal(back.st_ino, st.st_ino);
	assert_int_equal(back.st_mode, st.st_mode);
	assert_int_equal(back.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
	assert_true(S_ISCHR(ps.mode));

	struct statfs sf, sfback;
	assert_int_equal(statfs("/", &sf), 0);
	struct proto_statfs psf;
	proto_statfs_from_host(&sf, &psf);
	proto_statfs_to_host(&psf, &sfback);
	assert_int_equal(sfback.f_type, sf.f_type);
	assert_int_equal(sfback.f_blocks, sf.f_blocks);
	assert_memory_equal(&sfback.f_fsid, &sf.f_fsid, sizeof(sf.f_fsid));

	struct sockaddr_in6 in6 = {
	    .sin6_family = AF_INET6, .sin6_port = htons(53), .sin6_scope_id = 2};
	inet_pton(AF_INET6, "fe80::1", &in6.sin6_addr);
	struct proto_addr a;
	struct hm_err err = {0};
	assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&in6, sizeof(in6), &a, &err),
			 0);
	char buf[80];
	assert_string_equal(proto_addr_str(&a, buf, sizeof(buf)), "[fe80::1%2]:53");
	struct sockaddr_storage ss;
	assert_int_equal(proto_addr_to_sockaddr(&a, &ss), sizeof(in6));
	assert_memory_equal(&ss, &in6, sizeof(in6));
	a = sample_addr(false);
	assert_string_equal(proto_addr_str(&a, buf, sizeof(buf)), "10.213.0.7:8080");
	struct sockaddr_un_like {
		sa_family_t f;
		char path[20];
	} un = {AF_UNIX, "x"};
	assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&un, sizeof(un), &a, &err),
			 -1);
	assert_int_equal(err.code, EAFNOSUPPORT);
	/* too short for its family */
	assert_int_equal(proto_addr_from_sockaddr((struct sockaddr *)&in6, 8, &a, &err), -1);
}

static void test_type_table(void **state)
{
	(void)state;
	assert_int_equal(proto_reply_type(PROTO_FILE_READ), PROTO_FILE_READ_REPLY);
	assert_int_equal(proto_reply_type(PROTO_FILE_ACCESS), PROTO_OK);
	assert_int_equal(proto_reply_type(PROTO_FILE_READ_REPLY), 0);
	assert_int_equal(proto_reply_type(PROTO_UDP_DATAGRAM), 0);
	assert_string_equal(proto_type_name(PROTO_TCP_CONNECT), "TCP_CONNECT");
	assert_string_equal(proto_type_name(0x4242), "UNKNOWN");
	for (uint32_t t = 0; t <= 0xffff; t++) {
		uint16_t reply = proto_reply_type((uint16_t)t);
		if (!reply)
			continue;
		/* requests are answered by their own type | 0x8000, or by OK */
		assert_true(reply == (t | PROTO_REPLY_BIT) || reply == PROTO_OK);
		assert_true(proto_type_known(reply));
	}
}

/* HERMIT_PROTO_SEEDS=DIR: write the samples as seeds for tests/fuzz/fuzz_proto.c, in the
 * layout its typed mode reads (index among known types, then the payload), plus whole
 * frames, plus compressed contents that random mutation would never produce. */
static int write_seeds(const char *dir)
{
	struct hm_err err = {0};
	struct proto_buf b = PROTO_BUF_INIT;
	unsigned index = 0, written = 0;
	static char text[2048];
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "hermit wire protocol\n"[i % 21];
	for (uint32_t t = 0; t <= 0xffff; t++, proto_buf_reset(&b)) {
		struct proto_msg m;
		if (!proto_type_known((uint16_t)t) || !sample((uint16_t)t, &m))
			continue;
		for (int variant = 0; variant < 2; variant++) {
			if (variant && t != PROTO_FILE_READ_REPLY && t != PROTO_FILE_WRITE)
				break;
			if (variant && t == PROTO_FILE_READ_REPLY)
				m.file_read_reply.data =
				    (struct proto_blob){text, sizeof(text), true, 0};
			if (variant && t == PROTO_FILE_WRITE)
				m.file_write.data =
				    (struct proto_blob){text, sizeof(text), true, 0};
			proto_buf_reset(&b);
			if (proto_encode(&b, 1, &m, &err) < 0)
				return fprintf(stderr, "%s\n", err.msg), 1;
			char path[4096];
			snprintf(path, sizeof(path), "%s/typed-%s-%d", dir, proto_type_name(t),
				 variant);
			uint8_t *seed = malloc(b.len - PROTO_HDR_LEN + 1);
			seed[0] = (uint8_t)index;
			memcpy(seed + 1, b.data + PROTO_HDR_LEN, b.len - PROTO_HDR_LEN);
			int rc = hm_create_file(path, seed, b.len - PROTO_HDR_LEN + 1, 0644, &err);
			free(seed);
			snprintf(path, sizeof(path), "%s/frame-%s-%d", dir, proto_type_name(t),
				 variant);
			if (rc < 0 || hm_create_file(path, b.data, b.len, 0644, &err) < 0)
				return fprintf(stderr, "%s\n", err.msg), 1;
			written += 2;
		}
		index++;
	}
	proto_buf_release(&b);
	printf("%u seeds in %s\n", written, dir);
	return 0;
}

int main(void)
{
	if (getenv("HERMIT_PROTO_SEEDS"))
		return write_seeds(getenv("HERMIT_PROTO_SEEDS"));

	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_every_type),
	    cmocka_unit_test(test_roundtrip_variants),
	    cmocka_unit_test(test_truncated_at_every_offset),
	    cmocka_unit_test(test_status_without_budgets),
	    cmocka_unit_test(test_truncated_stream_through_reader),
	    cmocka_unit_test(test_oversize_rejected_before_allocation),
	    cmocka_unit_test(test_unknown_type_and_flags_rejected),
	    cmocka_unit_test(test_bad_strings_rejected),
	    cmocka_unit_test(test_bad_values_rejected),
	    cmocka_unit_test(test_targets),
	    cmocka_unit_test(test_compression_1mib_and_incompressible),
	    cmocka_unit_test(test_reader_byte_by_byte_and_exact),
	    cmocka_unit_test(test_send_recv_timeout),
	    cmocka_unit_test(test_handshake_and_call),
	    cmocka_unit_test(test_host_conversions),
	    cmocka_unit_test(test_type_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
