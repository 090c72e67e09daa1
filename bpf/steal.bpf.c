// SPDX-License-Identifier: GPL-2.0
/* An sk_lookup program that hands new TCP connections to one port of a network
 * namespace to the agent's listener, whatever address they were sent to. It runs only
 * when the kernel looks for a listening socket (a SYN), so established connections,
 * the pod's included, are never touched. The agent holds its link: when the agent's
 * fd closes (session end, exit, kill -9), the program is gone and the pod's own server
 * gets the port's connections again. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steal.h"

/* set by the loader before load: the verifier sees a constant */
const volatile __u16 steal_port = 0;

#define AF_INET6 10 /* a UAPI macro: vmlinux.h has types only */

/* the agent's listeners (in the same netns) by family, put there by the loader */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} listener SEC(".maps");

/* source ports of the agent's own connections to the port (to the pod's server): they
 * must reach the pod's server, not the agent's listener */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEAL_BYPASS_MAX);
	__type(key, __u16);
	__type(value, __u8);
} bypass SEC(".maps");

/* "hm_" prefix: how hermit's own programs are recognised in `bpftool prog show` */
SEC("sk_lookup")
int hm_steal(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || ctx->local_port != steal_port)
		return SK_PASS;
	__u16 src = bpf_ntohs(ctx->remote_port);
	if (bpf_map_lookup_elem(&bypass, &src))
		return SK_PASS;
	__u32 slot = ctx->family == AF_INET6 ? STEAL_LISTENER_V6 : STEAL_LISTENER_V4;
	struct bpf_sock *sk = bpf_map_lookup_elem(&listener, &slot);
	if (!sk)
		return SK_PASS; /* no listener of this family: the pod's own lookup goes on */
	/* an error leaves the normal lookup: the pod's server gets the connection */
	bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
