/* zlib for inline file contents: compress only when it pays off, and inflate only to an
 * exact, announced size so a small frame can never expand into a surprise. */
#include <zlib.h>

#include "proto/proto.h"

/* Below this the zlib header and the CPU are not worth the few bytes saved. */
#define COMPRESS_MIN 256
/* Large inputs are judged on a prefix first: incompressible data (media, archives,
 * random bytes) then costs one small attempt instead of a full one. */
#define PROBE_LEN (64u << 10)

/* Compressed length of src into dst if it fits in a budget of len - len/8, else 0. */
static size_t deflate_budget(const void *src, size_t len, void *dst)
{
	uLongf out = len - len / 8;
	if (compress2(dst, &out, src, len, Z_BEST_SPEED) != Z_OK)
		return 0;
	return out;
}

size_t proto_deflate(const void *src, size_t len, void *dst, size_t dst_cap)
{
	if (len < COMPRESS_MIN || dst_cap < len)
		return 0;
	if (len > 4 * PROBE_LEN && !deflate_budget(src, PROBE_LEN, dst))
		return 0;
	return deflate_budget(src, len, dst);
}

int proto_inflate(const void *src, size_t src_len, void *dst, size_t dst_len, struct hm_err *err)
{
	uLongf out = dst_len;
	uLong in = src_len;
	int rc = uncompress2(dst, &out, src, &in);
	if (rc != Z_OK || out != dst_len || in != src_len)
		return hm_err_set(err, EBADMSG, "zlib data does not inflate to %zu bytes (zlib %d)",
				  dst_len, rc);
	return 0;
}
