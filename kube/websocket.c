/* RFC 6455 frames and the port-forward channel protocol (v4.channel.k8s.io) on top of
 * them: pure functions over buffers, no I/O, so the decoder (network-facing: the API
 * server's bytes) is fuzzed on its own (tests/fuzz/fuzz_websocket.c). */
#include <string.h>

#include "kube/dl.h"
#include "kube/internal.h"

size_t kube_ws_header(uint8_t *out, uint8_t opcode, uint64_t len, const uint8_t mask[4])
{
	size_t n = 0;
	out[n++] = (uint8_t)(0x80 | (opcode & 0x0f));
	if (len < 126) {
		out[n++] = (uint8_t)(0x80 | len);
	} else if (len <= 0xffff) {
		out[n++] = 0x80 | 126;
		out[n++] = (uint8_t)(len >> 8);
		out[n++] = (uint8_t)len;
	} else {
		out[n++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			out[n++] = (uint8_t)(len >> (8 * i));
	}
	memcpy(out + n, mask, 4);
	return n + 4;
}

void kube_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset)
{
	for (size_t i = 0; i < len; i++)
		data[i] ^= mask[(i + offset) & 3];
}

ssize_t kube_ws_parse(uint8_t *buf, size_t len, bool from_server, struct ws_frame *f,
		      struct hm_err *err)
{
	if (len < 2)
		return 0;
	uint8_t b0 = buf[0], b1 = buf[1];
	if (b0 & 0x70)
		return hm_err_set(err, EPROTO, "WebSocket frame with reserved bits set");
	f->fin = b0 & 0x80;
	f->opcode = b0 & 0x0f;
	bool masked = b1 & 0x80;
	if (masked == from_server)
		return hm_err_set(err, EPROTO, "WebSocket frame %s masked",
				  masked ? "is" : "is not");
	switch (f->opcode) {
	case WS_OP_CONT:
	case WS_OP_TEXT:
	case WS_OP_BINARY:
		break;
	case WS_OP_CLOSE:
	case WS_OP_PING:
	case WS_OP_PONG:
		if (!f->fin || (b1 & 0x7f) > 125)
			return hm_err_set(err, EPROTO,
					  "WebSocket control frame fragmented or "
					  "over 125 bytes");
		break;
	default:
		return hm_err_set(err, EPROTO, "WebSocket frame with unknown opcode %u", f->opcode);
	}
	size_t pos = 2;
	uint64_t plen = b1 & 0x7f;
	if (plen == 126) {
		if (len < 4)
			return 0;
		plen = (uint64_t)buf[2] << 8 | buf[3];
		pos = 4;
		if (plen < 126)
			return hm_err_set(err, EPROTO, "WebSocket length not in its shortest form");
	} else if (plen == 127) {
		if (len < 10)
			return 0;
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | buf[2 + i];
		pos = 10;
		if (plen <= 0xffff)
			return hm_err_set(err, EPROTO, "WebSocket length not in its shortest form");
	}
	if (plen > WS_MAX_PAYLOAD)
		return hm_err_set(err, EMSGSIZE, "WebSocket frame of %llu bytes (over %u)",
				  (unsigned long long)plen, WS_MAX_PAYLOAD);
	uint8_t mask[4] = {0};
	if (masked) {
		if (len < pos + 4)
			return 0;
		memcpy(mask, buf + pos, 4);
		pos += 4;
	}
	if (len - pos < plen)
		return 0;
	f->payload = buf + pos;
	f->len = plen;
	if (masked)
		kube_ws_mask(f->payload, (size_t)plen, mask, 0);
	return (ssize_t)(pos + plen);
}

/* the data bytes of a message piece on channel ch, past the channel's port header */
static void channel_data(struct ws_channels *st, int ch, const uint8_t *p, size_t n,
			 struct ws_event *ev)
{
	while (n && st->port_bytes_seen[ch] < 2) {
		st->port_bytes_seen[ch]++;
		p++;
		n--;
	}
	ev->kind = n ? (ch == 0 ? WS_EV_DATA : WS_EV_ERROR_TEXT) : WS_EV_NONE;
	ev->data = p;
	ev->len = n;
}

int kube_ws_channels_feed(struct ws_channels *st, const struct ws_frame *f, struct ws_event *ev,
			  struct hm_err *err)
{
	ev->kind = WS_EV_NONE;
	ev->data = NULL;
	ev->len = 0;
	switch (f->opcode) {
	case WS_OP_PING:
		ev->kind = WS_EV_PING;
		ev->data = f->payload;
		ev->len = (size_t)f->len;
		return 0;
	case WS_OP_PONG:
		return 0;
	case WS_OP_CLOSE:
		ev->kind = WS_EV_CLOSE;
		ev->data = f->payload;
		ev->len = (size_t)f->len;
		return 0;
	case WS_OP_TEXT:
	case WS_OP_BINARY:
		if (st->in_message)
			return hm_err_set(err, EPROTO, "WebSocket message begun inside another");
		st->in_message = !f->fin;
		if (!f->len) {
			st->channel = -1;
			if (!st->in_message)
				return hm_err_set(err, EPROTO,
						  "port-forward message without a channel");
			return 0;
		}
		st->channel = f->payload[0];
		if (st->channel > 1)
			return hm_err_set(err, EPROTO,
					  "port-forward channel %d (one port: 0 and 1)",
					  st->channel);
		channel_data(st, st->channel, f->payload + 1, (size_t)f->len - 1, ev);
		return 0;
	case WS_OP_CONT:
		if (!st->in_message)
			return hm_err_set(err, EPROTO, "WebSocket continuation outside a message");
		st->in_message = !f->fin;
		const uint8_t *p = f->payload;
		size_t n = (size_t)f->len;
		if (st->channel < 0) {
			if (!n) {
				if (!st->in_message)
					return hm_err_set(err, EPROTO,
							  "port-forward message without a channel");
				return 0;
			}
			st->channel = p[0];
			if (st->channel > 1)
				return hm_err_set(err, EPROTO, "port-forward channel %d",
						  st->channel);
			p++;
			n--;
		}
		channel_data(st, st->channel, p, n, ev);
		return 0;
	default:
		return hm_err_set(err, EPROTO, "WebSocket opcode %u", f->opcode);
	}
}

int kube_ws_accept(const char *key, char out[29], struct hm_err *err)
{
	if (kube_dl_load(err) < 0)
		return -1;
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	char joined[128];
	int n = snprintf(joined, sizeof(joined), "%s%s", key, guid);
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	if (!EVP_Digest(joined, (size_t)n, digest, &dlen, EVP_sha1(), NULL))
		return hm_err_set(err, EIO, "SHA-1 of the WebSocket key");
	kube_base64_encode(digest, dlen, out);
	return 0;
}
