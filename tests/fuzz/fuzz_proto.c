/* libFuzzer target for the wire protocol: the bytes a hostile peer can send go through
 * (1) the frame header check and the decoder, frame after frame, (2) every message decoder
 * directly (first byte picks the type, the rest is the payload), and (3) the incremental
 * fd reader over a socketpair. Whatever decodes must re-encode, and re-encoding is
 * stable: encode(decode(encode(decode(x)))) == encode(decode(x)). */
#include <string.h>
#include <sys/socket.h>

#include "proto/proto.h"

static uint16_t known_types[64];
static size_t n_known;

static void init_types(void)
{
	if (n_known)
		return;
	for (uint32_t t = 0; t <= 0xffff; t++)
		if (proto_type_known((uint16_t)t) && n_known < HM_ARRAY_SIZE(known_types))
			known_types[n_known++] = (uint16_t)t;
}

/* A decoded message must encode, and its encoding must decode to the same encoding. */
static void check_reencode(const struct proto_msg *m)
{
	struct hm_err err;
	struct proto_buf b1 = PROTO_BUF_INIT, b2 = PROTO_BUF_INIT;
	if (proto_encode(&b1, m->id, m, &err) < 0)
		__builtin_trap(); /* the decoder accepted what the encoder refuses */
	struct proto_hdr h;
	if (proto_hdr_decode(b1.data, PROTO_MAX_PAYLOAD, &h, &err) < 0 ||
	    PROTO_HDR_LEN + h.len != b1.len)
		__builtin_trap();
	struct proto_msg again;
	if (proto_decode(&h, b1.data + PROTO_HDR_LEN, &again, &err) < 0)
		__builtin_trap();
	if (proto_encode(&b2, again.id, &again, &err) < 0)
		__builtin_trap();
	if (b1.len != b2.len || memcmp(b1.data, b2.data, b1.len))
		__builtin_trap();
	proto_msg_free(&again);
	proto_buf_release(&b1);
	proto_buf_release(&b2);
}

static void decode_exact(const struct proto_hdr *h, const uint8_t *payload)
{
	/* an exact-size copy, so ASan catches a read one byte past the payload */
	uint8_t *copy = malloc(h->len ? h->len : 1);
	if (!copy)
		return;
	if (h->len)
		memcpy(copy, payload, h->len);
	struct proto_msg m;
	struct hm_err err;
	if (proto_decode(h, copy, &m, &err) == 0)
		check_reencode(&m);
	proto_msg_free(&m);
	free(copy);
}

static void fuzz_frames(const uint8_t *data, size_t size)
{
	while (size >= PROTO_HDR_LEN) {
		struct proto_hdr h;
		struct hm_err err;
		if (proto_hdr_decode(data, PROTO_MAX_PAYLOAD, &h, &err) < 0 ||
		    size - PROTO_HDR_LEN < h.len)
			return;
		decode_exact(&h, data + PROTO_HDR_LEN);
		data += PROTO_HDR_LEN + h.len;
		size -= PROTO_HDR_LEN + h.len;
	}
}

static void fuzz_typed(const uint8_t *data, size_t size)
{
	if (!size)
		return;
	struct proto_hdr h = {.type = known_types[data[0] % n_known], .id = 1};
	h.len = (uint32_t)(size - 1);
	decode_exact(&h, data + 1);
}

static void fuzz_reader(const uint8_t *data, size_t size)
{
	int sv[2];
	if (size > 16384 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return;
	if (write(sv[1], data, size) != (ssize_t)size) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	close(sv[1]);
	struct proto_frame_reader r;
	proto_frame_reader_init(&r, PROTO_HELLO_MAX_PAYLOAD);
	for (;;) {
		struct proto_frame f = {0};
		struct hm_err err;
		int rc = proto_frame_reader_read(&r, sv[0], &f, &err);
		if (rc <= 0)
			break;
		struct proto_msg m;
		if (proto_decode_frame(&f, &m, &err) == 0)
			check_reencode(&m);
		proto_msg_free(&m);
	}
	proto_frame_reader_release(&r);
	close(sv[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_types();
	fuzz_frames(data, size);
	fuzz_typed(data, size);
	fuzz_reader(data, size);
	return 0;
}
