// SPDX-License-Identifier: GPL-2.0
/* Mirror: a tc ingress program, attached to every interface of a target's network
 * namespace, that copies each TCP segment sent to a subscribed port (header fields and
 * payload) into a ring buffer for the agent to reassemble. It only reads: the verdict
 * is always TC_ACT_OK and the packet is not touched, so nothing of the agent is in
 * the pod's data path. When the ring buffer is full the segment is counted as dropped
 * and user space resets the connection it belonged to (the pod got the bytes, so no
 * retransmission will ever fill the hole). */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mirror.h"

/* UAPI macros: vmlinux.h carries types, not #defines */
#define TC_ACT_OK 0
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_HLEN 14
#define IPPROTO_TCP_NR 6
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Set by the loader before load. 0: wake the reader on every segment; else only once
 * this many bytes wait (the reader polls on a timer too), so a busy pod costs the agent
 * one wake-up per batch instead of one per segment. */
const volatile __u64 wakeup_bytes = 0;

/* destination ports (host order) whose segments are copied; the value is unused */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MIRROR_PORTS_MAX);
	__type(key, __u16);
	__type(value, __u8);
} mirror_ports SEC(".maps");

/* the loader sizes it (bpf_map__set_max_entries) before load */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} mirror_events SEC(".maps");

/* One record under construction per CPU. A 64 KiB GRO payload is too big for the BPF
 * stack and for a per-CPU map value (32 KiB), so this is a plain array indexed by CPU:
 * tc ingress runs in softirq context, which does not nest on one CPU. The loader sets
 * max_entries to the number of possible CPUs. */
struct mirror_record {
	struct mirror_event ev;
	__u8 payload[MIRROR_PAYLOAD_MAX];
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_record);
} mirror_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mirror_drops);
} mirror_drop_stats SEC(".maps");

/* connections that lost a segment; the agent takes them out as it resets them */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MIRROR_LOST_FLOWS_MAX);
	__type(key, struct mirror_flow);
	__type(value, __u8);
} mirror_lost_flows SEC(".maps");

/* Where the IP header starts: Ethernet-framed devices (veth, lo) carry 14 bytes of MAC
 * header before it, L3 devices (tun, wireguard) none. */
static __always_inline int l3_offset(struct __sk_buff *skb, __u16 protocol)
{
	__u16 type;
	if (bpf_skb_load_bytes(skb, 12, &type, sizeof(type)) == 0 && type == protocol)
		return ETH_HLEN;
	return 0;
}

SEC("tc")
int hm_mirror(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u32 cpu = bpf_get_smp_processor_id();
	struct mirror_record *rec = bpf_map_lookup_elem(&mirror_scratch, &cpu);
	if (!rec)
		return TC_ACT_OK;
	struct mirror_event *ev = &rec->ev;
	/* read once: clang may otherwise merge two reads into a ctx access at a computed
	 * offset, which the verifier refuses */
	__u16 protocol = skb->protocol;
	__u32 off = l3_offset(skb, protocol);
	__u32 ip_end; /* offset of the TCP header */
	__u32 ip_total;

	if (protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return TC_ACT_OK;
		if (ip.protocol != IPPROTO_TCP_NR || ip.ihl < 5)
			return TC_ACT_OK;
		/* fragments carry no (or a partial) TCP header: TCP avoids them anyway */
		if (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return TC_ACT_OK;
		ev->family = 4;
		__builtin_memset(ev->saddr, 0, sizeof(ev->saddr));
		__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
		__builtin_memcpy(ev->saddr, &ip.saddr, 4);
		__builtin_memcpy(ev->daddr, &ip.daddr, 4);
		ip_end = off + ip.ihl * 4;
		/* tot_len is 0 for a GSO packet above 64 KiB (BIG TCP): take skb->len then */
		ip_total = bpf_ntohs(ip.tot_len);
		ip_total = ip_total ? off + ip_total : skb->len;
	} else if (protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return TC_ACT_OK;
		/* extension headers before TCP are not followed: TCP does not use them */
		if (ip6.nexthdr != IPPROTO_TCP_NR)
			return TC_ACT_OK;
		ev->family = 6;
		__builtin_memcpy(ev->saddr, &ip6.saddr, 16);
		__builtin_memcpy(ev->daddr, &ip6.daddr, 16);
		ip_end = off + sizeof(ip6);
		ip_total = bpf_ntohs(ip6.payload_len);
		ip_total = ip_total ? ip_end + ip_total : skb->len;
	} else {
		return TC_ACT_OK;
	}

	struct tcphdr tcp;
	if (bpf_skb_load_bytes(skb, ip_end, &tcp, sizeof(tcp)) < 0)
		return TC_ACT_OK;
	__u16 dport = bpf_ntohs(tcp.dest);
	if (!bpf_map_lookup_elem(&mirror_ports, &dport))
		return TC_ACT_OK;

	__u32 payload_off = ip_end + tcp.doff * 4;
	if (ip_total > skb->len)
		ip_total = skb->len;
	__u32 len = ip_total > payload_off ? ip_total - payload_off : 0;
	__u8 flags = ((__u8 *)&tcp)[13];
	ev->tcp_flags = flags;
	ev->sport = bpf_ntohs(tcp.source);
	ev->dport = dport;
	ev->pad = 0;
	ev->seq = bpf_ntohl(tcp.seq);
	ev->ifindex = skb->ifindex;
	/* a pure ACK says nothing the reassembly needs */
	if (len == 0 && !(flags & (MIRROR_TCP_SYN | MIRROR_TCP_FIN | MIRROR_TCP_RST)))
		return TC_ACT_OK;
	if (len > MIRROR_PAYLOAD_MAX)
		len =
		    MIRROR_PAYLOAD_MAX; /* cannot happen below BIG TCP; user space sees the hole */
	ev->payload_len = len;
	/* the bound the verifier needs for a variable length, on the register the helper
	 * gets: hidden from clang, which would otherwise prove it redundant and drop it */
	__u64 n = len;
	asm volatile("" : "+r"(n));
	if (n > MIRROR_PAYLOAD_MAX)
		return TC_ACT_OK;
	if (n > 0 && bpf_skb_load_bytes(skb, payload_off, rec->payload, n) < 0)
		return TC_ACT_OK;
	__u64 wake = 0;
	if (wakeup_bytes)
		wake = bpf_ringbuf_query(&mirror_events, BPF_RB_AVAIL_DATA) >= wakeup_bytes
			   ? BPF_RB_FORCE_WAKEUP
			   : BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&mirror_events, rec, sizeof(rec->ev) + n, wake) < 0) {
		struct mirror_drops *d = bpf_map_lookup_elem(&mirror_drop_stats, &zero);
		if (d) {
			d->events++;
			d->bytes += len;
		}
		struct mirror_flow flow = {
		    .family = ev->family, .sport = ev->sport, .dport = ev->dport};
		__builtin_memcpy(flow.saddr, ev->saddr, sizeof(flow.saddr));
		__builtin_memcpy(flow.daddr, ev->daddr, sizeof(flow.daddr));
		__u8 one = 1;
		bpf_map_update_elem(&mirror_lost_flows, &flow, &one, BPF_ANY);
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
