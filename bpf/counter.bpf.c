// SPDX-License-Identifier: GPL-2.0
/* A tc ingress program that counts packets and bytes per IP protocol and never
 * changes the verdict. No hermit binary attaches it: tests/unit/test_loader.c does, to
 * check the BPF pipeline end to end (CO-RE against the running kernel's BTF, a
 * skeleton, read-only config from user space, tc attach inside a netns). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "counter.h"

/* UAPI macros: vmlinux.h carries types, not #defines */
#define TC_ACT_OK 0
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* Set by the loader through the skeleton's rodata before load; the verifier then sees
 * a constant and prunes the branch it makes dead. 0 counts every protocol. */
const volatile __u8 only_ip_proto = 0;

/* per-CPU: the pod's own traffic passes here, so no shared cache line and no atomics */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, struct counter_value);
} stats SEC(".maps");

/* "hm_" prefix: how the loader recognises hermit's own (possibly stale) filters */
SEC("tc")
int hm_count_proto(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 proto;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_OK;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return TC_ACT_OK;
		proto = ip->protocol;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_OK;
		proto = ip6->nexthdr;
	} else {
		return TC_ACT_OK;
	}

	if (only_ip_proto && proto != only_ip_proto)
		return TC_ACT_OK;

	struct counter_value *v = bpf_map_lookup_elem(&stats, &proto);
	if (v) {
		v->packets++;
		v->bytes += skb->len;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
