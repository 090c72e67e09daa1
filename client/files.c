/* File requests (client/client.h): small replies inline, big file contents over a
 * stream connection. */
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "client/internal.h"

/* Read exactly len bytes; each wait for data is bounded by the client's timeout. */
static int read_exact(struct client *c, int fd, void *buf, size_t len, uint64_t *done_total,
		      uint64_t expect_total, struct hm_err *err)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = recv(fd, (char *)buf + done, len - done, MSG_DONTWAIT);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n == 0)
			return hm_err_set(err, EIO, "stream ended after %llu of %llu bytes",
					  (unsigned long long)(*done_total + done),
					  (unsigned long long)expect_total);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return hm_err_errno(err, "read stream");
		int r =
		    hm_poll_fd(fd, POLLIN, hm_deadline_in(c->timeout_ms > 0 ? c->timeout_ms : -1));
		if (r < 0)
			return hm_err_errno(err, "poll stream");
		if (r == 0)
			return hm_err_set(err, ETIMEDOUT, "stream stalled after %llu of %llu bytes",
					  (unsigned long long)(*done_total + done),
					  (unsigned long long)expect_total);
	}
	*done_total += len;
	return 0;
}

/* FILE_READ: the reply, checked against the client's cap. */
static int file_read_call(struct client *c, const char *path, uint32_t flags, uint64_t max_size,
			  struct proto_msg *reply, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_READ};
	req.file_read.path = path;
	req.file_read.flags = flags;
	req.file_read.max_size = max_size;
	if (client_call(c, &req, reply, 0, err) < 0)
		return -1;
	const struct proto_file_read_reply *r = &reply->file_read_reply;
	uint64_t size = r->transfer == PROTO_XFER_STREAM ? r->stream_size : r->data.size;
	if (max_size && size > max_size) {
		proto_msg_free(reply);
		return hm_err_set(err, EFBIG, "%s: %llu bytes, over the limit of %llu", path,
				  (unsigned long long)size, (unsigned long long)max_size);
	}
	return 0;
}

int client_read_file(struct client *c, const char *path, uint32_t flags, uint64_t max_size,
		     struct client_file_content *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	proto_cleanup_msg struct proto_msg reply = {0};
	if (file_read_call(c, path, flags, max_size, &reply, err) < 0)
		return -1;
	const struct proto_file_read_reply *r = &reply.file_read_reply;
	out->st = r->st;
	int rc = 0;
	if (r->transfer == PROTO_XFER_INLINE) {
		out->size = r->data.size;
		out->data = malloc(out->size ? out->size : 1);
		if (!out->data)
			rc = hm_err_set(err, ENOMEM, "%s: %llu bytes", path,
					(unsigned long long)out->size);
		else if (out->size)
			memcpy(out->data, r->data.data, out->size);
	} else {
		out->size = r->stream_size;
		out->data = malloc(out->size ? out->size : 1);
		int fd = -1;
		uint64_t got = 0;
		if (!out->data)
			rc = hm_err_set(err, ENOMEM, "%s: %llu bytes", path,
					(unsigned long long)out->size);
		else if ((fd = client_open_stream(c, r->token, err)) < 0 ||
			 read_exact(c, fd, out->data, out->size, &got, out->size, err) < 0)
			rc = hm_err_prefix(err, "read %s", path);
		if (fd >= 0)
			close(fd);
	}
	if (rc < 0)
		client_file_content_release(out);
	return rc;
}

void client_file_content_release(struct client_file_content *fc)
{
	free(fc->data);
	fc->data = NULL;
	fc->size = 0;
}

int client_read_file_fd(struct client *c, const char *path, uint32_t flags, uint64_t max_size,
			int dst_fd, struct proto_stat *st, uint64_t *size, struct hm_err *err)
{
	proto_cleanup_msg struct proto_msg reply = {0};
	if (file_read_call(c, path, flags, max_size, &reply, err) < 0)
		return -1;
	const struct proto_file_read_reply *r = &reply.file_read_reply;
	if (st)
		*st = r->st;
	int rc = 0;
	if (r->transfer == PROTO_XFER_INLINE) {
		if (size)
			*size = r->data.size;
		if (hm_write_all(dst_fd, r->data.data, r->data.size) < 0)
			rc = hm_err_errno(err, "write the content of %s", path);
	} else {
		uint64_t total = r->stream_size, got = 0;
		if (size)
			*size = total;
		size_t bufsize = 1u << 20;
		hm_cleanup_free void *buf = malloc(bufsize);
		hm_cleanup_close int fd = -1;
		if (!buf)
			rc = hm_err_set(err, ENOMEM, "read %s", path);
		else if ((fd = client_open_stream(c, r->token, err)) < 0)
			rc = hm_err_prefix(err, "read %s", path);
		while (rc == 0 && got < total) {
			size_t n = total - got < bufsize ? (size_t)(total - got) : bufsize;
			if (read_exact(c, fd, buf, n, &got, total, err) < 0)
				rc = hm_err_prefix(err, "read %s", path);
			else if (hm_write_all(dst_fd, buf, n) < 0)
				rc = hm_err_errno(err, "write the content of %s", path);
		}
	}
	return rc;
}

int client_write_file(struct client *c, const char *path, uint32_t flags, uint32_t mode,
		      uint64_t offset, const void *data, size_t size,
		      struct proto_file_write_reply *out, struct hm_err *err)
{
	size_t done = 0;
	uint64_t written = 0;
	do {
		size_t n = size - done < PROTO_INLINE_MAX ? size - done : PROTO_INLINE_MAX;
		struct proto_msg req = {.type = PROTO_FILE_WRITE};
		proto_cleanup_msg struct proto_msg reply = {0};
		req.file_write.path = path;
		/* create/truncate/exclusive apply to the first piece only */
		req.file_write.flags =
		    done ? flags & ~(PROTO_WRITE_CREATE | PROTO_WRITE_TRUNC | PROTO_WRITE_EXCL)
			 : flags;
		req.file_write.mode = mode;
		req.file_write.offset = offset + done;
		req.file_write.data.data = n ? (const char *)data + done : NULL;
		req.file_write.data.size = n;
		req.file_write.data.compress = c->features & PROTO_FEAT_ZLIB;
		if (client_call(c, &req, &reply, 0, err) < 0)
			return -1;
		written += reply.file_write_reply.written;
		if (out)
			*out = reply.file_write_reply;
		done += n;
	} while (done < size);
	if (out)
		out->written = written;
	return 0;
}

static int path_call(struct client *c, uint16_t type, const char *path, uint32_t flags,
		     struct proto_msg *reply, struct hm_err *err)
{
	struct proto_msg req = {.type = type};
	req.path_req.path = path;
	req.path_req.flags = flags;
	return client_call(c, &req, reply, 0, err);
}

int client_stat(struct client *c, const char *path, uint32_t flags, struct proto_stat *out,
		struct hm_err *err)
{
	proto_cleanup_msg struct proto_msg reply = {0};
	if (path_call(c, PROTO_FILE_STAT, path, flags, &reply, err) < 0)
		return -1;
	*out = reply.stat_reply;
	return 0;
}

int client_statfs(struct client *c, const char *path, struct proto_statfs *out, struct hm_err *err)
{
	proto_cleanup_msg struct proto_msg reply = {0};
	if (path_call(c, PROTO_FILE_STATFS, path, 0, &reply, err) < 0)
		return -1;
	*out = reply.statfs_reply;
	return 0;
}

int client_readlink(struct client *c, const char *path, char *buf, size_t buflen,
		    struct hm_err *err)
{
	proto_cleanup_msg struct proto_msg reply = {0};
	if (path_call(c, PROTO_FILE_READLINK, path, 0, &reply, err) < 0)
		return -1;
	size_t n = strlen(reply.readlink_reply.target);
	int rc = 0;
	if (n >= buflen)
		rc = hm_err_set(err, ENAMETOOLONG, "link %s: %zu bytes", path, n);
	else
		memcpy(buf, reply.readlink_reply.target, n + 1);
	return rc;
}

int client_readdir(struct client *c, const char *path, struct client_dirent **entries,
		   size_t *count, struct hm_err *err)
{
	*entries = NULL;
	*count = 0;
	proto_cleanup_msg struct proto_msg reply = {0};
	if (path_call(c, PROTO_FILE_READDIR, path, 0, &reply, err) < 0)
		return -1;
	const struct proto_readdir_reply *r = &reply.readdir_reply;
	size_t bytes = (r->count ? r->count : 1) * sizeof(struct client_dirent);
	for (uint32_t i = 0; i < r->count; i++)
		bytes += strlen(r->entries[i].name) + 1;
	struct client_dirent *arr = malloc(bytes);
	if (!arr)
		return hm_err_set(err, ENOMEM, "directory %s of %u entries", path, r->count);
	char *p = (char *)(arr + (r->count ? r->count : 1));
	for (uint32_t i = 0; i < r->count; i++) {
		size_t n = strlen(r->entries[i].name) + 1;
		memcpy(p, r->entries[i].name, n);
		arr[i] = (struct client_dirent){
		    .ino = r->entries[i].ino, .type = r->entries[i].type, .name = p};
		p += n;
	}
	*entries = arr;
	*count = r->count;
	return 0;
}

static int ok_call(struct client *c, struct proto_msg *req, struct hm_err *err)
{
	proto_cleanup_msg struct proto_msg reply = {0};
	if (client_call(c, req, &reply, 0, err) < 0)
		return -1;
	return 0;
}

int client_access(struct client *c, const char *path, uint32_t mode, uint32_t flags,
		  struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_ACCESS};
	req.file_access = (struct proto_file_access){.path = path, .mode = mode, .flags = flags};
	return ok_call(c, &req, err);
}

int client_mkdir(struct client *c, const char *path, uint32_t mode, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_MKDIR};
	req.file_mkdir = (struct proto_file_mkdir){.path = path, .mode = mode};
	return ok_call(c, &req, err);
}

int client_unlink(struct client *c, const char *path, uint32_t flags, struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_UNLINK};
	req.file_unlink = (struct proto_file_unlink){.path = path, .flags = flags};
	return ok_call(c, &req, err);
}

int client_rename(struct client *c, const char *from, const char *to, uint32_t flags,
		  struct hm_err *err)
{
	struct proto_msg req = {.type = PROTO_FILE_RENAME};
	req.file_rename = (struct proto_file_rename){.from = from, .to = to, .flags = flags};
	return ok_call(c, &req, err);
}
