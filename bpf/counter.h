/* Layout shared by counter.bpf.c and loader/counter.c: the value of one slot of the
 * per-CPU `stats` map, indexed by IP protocol number (IPv4 protocol or the IPv6
 * next header of the fixed header). Includers provide __u64 (vmlinux.h on the BPF
 * side, <linux/types.h> in user space). */
#ifndef HERMIT_BPF_COUNTER_H
#define HERMIT_BPF_COUNTER_H

#define COUNTER_SLOTS 256

struct counter_value {
	__u64 packets;
	__u64 bytes; /* skb->len: the frame as tc sees it, Ethernet header included */
};

#endif
