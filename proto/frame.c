/* Frames on a byte stream: the 12-byte header, the incremental reader for non-blocking
 * fds, and blocking send/receive helpers. A reader never asks the kernel for a byte past
 * the current frame, so a stream connection can switch to raw bytes right after its
 * hello. */
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/proto.h"

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

void proto_hdr_encode(uint8_t out[PROTO_HDR_LEN], const struct proto_hdr *h)
{
	put_le(out, h->len, 4);
	put_le(out + 4, h->type, 2);
	put_le(out + 6, h->flags, 2);
	put_le(out + 8, h->id, 4);
}

int proto_hdr_decode(const uint8_t in[PROTO_HDR_LEN], uint32_t max_payload, struct proto_hdr *h,
		     struct hm_err *err)
{
	h->len = (uint32_t)get_le(in, 4);
	h->type = (uint16_t)get_le(in + 4, 2);
	h->flags = (uint16_t)get_le(in + 6, 2);
	h->id = (uint32_t)get_le(in + 8, 4);
	if (max_payload > PROTO_MAX_PAYLOAD)
		max_payload = PROTO_MAX_PAYLOAD;
	if (h->len > max_payload)
		return hm_err_set(err, E2BIG, "frame of %u bytes over the limit of %u", h->len,
				  max_payload);
	if (!proto_type_known(h->type))
		return hm_err_set(err, EPROTO, "unknown message type 0x%04x", h->type);
	if (h->flags)
		return hm_err_set(err, EPROTO, "unknown frame flags 0x%04x", h->flags);
	return 0;
}

void proto_frame_release(struct proto_frame *f)
{
	free(f->payload);
	f->payload = NULL;
}

int proto_decode_frame(struct proto_frame *f, struct proto_msg *m, struct hm_err *err)
{
	int rc = proto_decode(&f->hdr, f->payload, m, err);
	if (rc < 0) {
		proto_frame_release(f);
		return rc;
	}
	m->owned.payload = hm_steal_ptr(&f->payload);
	return 0;
}

void proto_frame_reader_init(struct proto_frame_reader *r, uint32_t max_payload)
{
	memset(r, 0, sizeof(*r));
	r->max_payload = max_payload;
}

void proto_frame_reader_release(struct proto_frame_reader *r)
{
	proto_frame_release(&r->frame);
	r->got = 0;
}

/* At most max_reads read() calls, so a caller that polls with a deadline never blocks
 * in read() on a blocking fd. */
static int reader_step(struct proto_frame_reader *r, int fd, struct proto_frame *out,
		       unsigned max_reads, struct hm_err *err)
{
	for (unsigned reads = 0;; reads++) {
		void *dst;
		size_t want;
		if (r->got < PROTO_HDR_LEN) {
			dst = r->hdr_raw + r->got;
			want = PROTO_HDR_LEN - r->got;
		} else {
			size_t body = r->got - PROTO_HDR_LEN;
			if (body == r->frame.hdr.len) {
				*out = r->frame;
				r->frame.payload = NULL;
				r->got = 0;
				return 1;
			}
			dst = r->frame.payload + body;
			want = r->frame.hdr.len - body;
		}
		if (reads == max_reads)
			return 0;
		ssize_t n = read(fd, dst, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return hm_err_errno(err, "read frame");
		}
		if (n == 0) {
			if (r->got == 0)
				return hm_err_set(err, 0, "connection closed");
			return hm_err_set(
			    err, EPROTO, "connection closed inside a frame (%zu bytes in)", r->got);
		}
		r->got += (size_t)n;
		if (r->got == PROTO_HDR_LEN) {
			/* the length is checked before a single byte of payload is allocated */
			if (proto_hdr_decode(r->hdr_raw, r->max_payload, &r->frame.hdr, err) < 0)
				return -1;
			if (r->frame.hdr.len) {
				r->frame.payload = malloc(r->frame.hdr.len);
				if (!r->frame.payload)
					return hm_err_set(err, ENOMEM, "frame of %u bytes",
							  r->frame.hdr.len);
			}
		}
	}
}

int proto_frame_reader_read(struct proto_frame_reader *r, int fd, struct proto_frame *out,
			    struct hm_err *err)
{
	return reader_step(r, fd, out, UINT32_MAX, err);
}

static int wait_fd(int fd, short events, int64_t deadline_ms, struct hm_err *err)
{
	int n = hm_poll_fd(fd, events, deadline_ms);
	if (n < 0)
		return hm_err_errno(err, "poll");
	if (n == 0)
		return hm_err_set(err, ETIMEDOUT, "waiting for the peer");
	return 0;
}

static int send_buf(int fd, const struct proto_buf *b, struct hm_err *err)
{
	size_t done = 0;
	bool is_socket = true;
	while (done < b->len) {
		ssize_t n = is_socket ? send(fd, b->data + done, b->len - done, MSG_NOSIGNAL)
				      : write(fd, b->data + done, b->len - done);
		if (n < 0) {
			if (errno == ENOTSOCK && is_socket) {
				is_socket = false;
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				if (wait_fd(fd, POLLOUT, HM_NO_DEADLINE, err) < 0)
					return -1;
				continue;
			}
			return hm_err_errno(err, "send frame");
		}
		done += (size_t)n;
	}
	return 0;
}

int proto_send(int fd, uint32_t id, const struct proto_msg *m, struct hm_err *err)
{
	struct proto_buf b = PROTO_BUF_INIT;
	int rc = proto_encode(&b, id, m, err);
	if (rc == 0)
		rc = send_buf(fd, &b, err);
	proto_buf_release(&b);
	return rc;
}

int proto_recv(int fd, uint32_t max_payload, int timeout_ms, struct proto_msg *m,
	       struct hm_err *err)
{
	bool timed = timeout_ms >= 0;
	int64_t deadline = hm_deadline_in(timeout_ms);
	memset(m, 0, sizeof(*m));
	struct proto_frame_reader r;
	proto_frame_reader_init(&r, max_payload);
	struct proto_frame f = {0};
	for (;;) {
		/* with a deadline, never sit in a blocking read() the timer cannot interrupt */
		if (timed && wait_fd(fd, POLLIN, deadline, err) < 0)
			break;
		int rc = reader_step(&r, fd, &f, timed ? 1 : UINT32_MAX, err);
		if (rc < 0)
			break;
		if (rc == 0) {
			if (!timed && wait_fd(fd, POLLIN, HM_NO_DEADLINE, err) < 0)
				break;
			continue;
		}
		proto_frame_reader_release(&r);
		return proto_decode_frame(&f, m, err);
	}
	proto_frame_reader_release(&r);
	return -1;
}
