// SPDX-License-Identifier: GPL-2.0
/* The agent's kernel relay: an sk_skb verdict program on the pairs of TCP sockets the
 * agent would otherwise relay in user space (an accepted client stream and the socket it
 * connected in the target's network namespace). Bytes received on one socket leave by
 * the other's transmit path from the softirq that received them, with no wake-up of an
 * agent thread. Whatever the program does not redirect (the peer is gone, the agent
 * still holds bytes left to it, the peer's queue is at its limit) stays readable on the
 * socket it came in on, and the agent moves it: no byte TCP acknowledged is dropped
 * here, and the order is kept because the program redirects only once the agent has
 * written every byte left to it. The agent hears of such bytes from the ring buffer, not
 * from its epoll: it does not poll the sockets for input, so redirected bytes wake no
 * one. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "sockrelay.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, SOCKRELAY_SLOTS);
	__type(key, __u64); /* socket cookie */
	__type(value, __u64);
} socks SEC(".maps");

/* socket cookie -> index in slots */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SOCKRELAY_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} slot_of SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, SOCKRELAY_SLOTS);
	__type(key, __u32);
	__type(value, struct sockrelay_slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SOCKRELAY_RING_BYTES);
} events SEC(".maps");

static void notify(__u32 slot, __u32 why)
{
	struct sockrelay_event e = {.slot = slot, .why = why};
	bpf_ringbuf_output(&events, &e, sizeof(e), BPF_RB_FORCE_WAKEUP);
}

/* "hm_" prefix: how hermit's own programs are recognised in `bpftool prog show` */
SEC("sk_skb") /* attached as BPF_SK_SKB_VERDICT (the loader; older libbpf has no sk_skb/verdict) */
int hm_sockrelay(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 *idx = bpf_map_lookup_elem(&slot_of, &cookie);
	if (!idx)
		return SK_PASS;
	struct sockrelay_slot *s = bpf_map_lookup_elem(&slots, idx);
	if (!s)
		return SK_PASS;
	__u64 len = skb->len;
	/* a bare FIN comes through as an empty skb: redirected, the peer's psock would
	 * send nothing, take it for a broken pipe (EPIPE on the peer) and stop sending.
	 * There is nothing to lose by dropping it: the FIN itself is TCP's, and the agent
	 * forwards it (shutdown) once every byte before it is through. */
	if (len == 0)
		return SK_DROP;
	/* the verdicts of one socket run one at a time (under its lock): only the agent
	 * writes drained and limit concurrently, and both only grow */
	__u64 passed = s->passed, drained = *(volatile __u64 *)&s->drained;
	__u64 limit = *(volatile __u64 *)&s->limit;
	__u64 redirected = s->redirected, skbs = s->skbs;
	__u64 skb_limit = *(volatile __u64 *)&s->skb_limit;
	if (passed == drained && redirected + len <= limit && skbs < skb_limit &&
	    bpf_sk_redirect_hash(skb, &socks, &s->peer, 0) == SK_PASS) {
		/* redirected before skbs: the agent reads skbs first, so every skb it
		 * counts has its bytes in the redirected total it reads next */
		__sync_fetch_and_add(&s->redirected, len);
		__sync_fetch_and_add(&s->skbs, 1);
		__u64 at = *(volatile __u64 *)&s->notify_at;
		__u64 skb_at = *(volatile __u64 *)&s->skb_notify_at;
		if ((redirected < at && redirected + len >= at) || skbs + 1 == skb_at)
			notify(*idx, SOCKRELAY_CREDIT);
		return SK_PASS;
	}
	/* SK_PASS without a redirect: the bytes join this socket's own receive queue
	 * (charged to it, so its TCP window closes as it fills) for the agent to read.
	 * SK_DROP would lose bytes the sender already saw acknowledged. */
	__sync_fetch_and_add(&s->passed, len);
	/* the agent reads passed until it equals drained: one record per such run */
	if (passed == drained)
		notify(*idx, SOCKRELAY_PASSED);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
