/* libFuzzer target: the WebSocket frame decoder and the port-forward channel layer
 * (kube/websocket.c), which parse the API server's bytes in trace-run's port-forward
 * pump: network-facing input. Frames are parsed as the pump does, one after another
 * from a buffer, each fed to the channel state; every event must point inside the
 * input. */
#include <stdint.h>
#include <string.h>

#include "kube/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	/* the first byte picks the side: server frames (unmasked) or client frames */
	bool from_server = data[0] & 1;
	uint8_t *buf = malloc(size);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, size - 1);
	size_t len = size - 1, off = 0;
	struct ws_channels st = {.channel = -1};
	for (;;) {
		struct ws_frame f;
		struct hm_err err = {0};
		ssize_t n = kube_ws_parse(buf + off, len - off, from_server, &f, &err);
		if (n <= 0)
			break;
		if ((size_t)n > len - off || f.payload < buf + off ||
		    f.payload + f.len > buf + off + n)
			__builtin_trap();
		off += (size_t)n;
		struct ws_event ev;
		if (kube_ws_channels_feed(&st, &f, &ev, &err) < 0)
			break;
		if (ev.kind != WS_EV_NONE && ev.len &&
		    (ev.data < buf || ev.data + ev.len > buf + len))
			__builtin_trap();
		if (ev.kind == WS_EV_DATA || ev.kind == WS_EV_ERROR_TEXT) {
			volatile uint8_t sink = 0;
			for (size_t i = 0; i < ev.len; i++)
				sink ^= ev.data[i];
			(void)sink;
		}
	}
	/* the encoder round-trips through the decoder (client side) */
	uint8_t frame[WS_MAX_HEADER + 300];
	size_t plen = size < 300 ? size : 300;
	static const uint8_t mask[4] = {1, 2, 3, 4};
	size_t h = kube_ws_header(frame, WS_OP_BINARY, plen, mask);
	memcpy(frame + h, data, plen);
	kube_ws_mask(frame + h, plen, mask, 0);
	struct ws_frame f;
	struct hm_err err = {0};
	if (kube_ws_parse(frame, h + plen, false, &f, &err) != (ssize_t)(h + plen) ||
	    f.len != plen || memcmp(f.payload, data, plen))
		__builtin_trap();
	free(buf);
	return 0;
}
