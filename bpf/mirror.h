/* Layout shared by mirror.bpf.c and loader/mirror.c: one ring buffer record per TCP
 * segment sent to a mirrored port, its payload right after the header. Includers
 * provide __u8.. __u32 (vmlinux.h on the BPF side, <linux/types.h> in user space). */
#ifndef HERMIT_BPF_MIRROR_H
#define HERMIT_BPF_MIRROR_H

#define MIRROR_PORTS_MAX 1024
/* A GRO segment is at most 64 KiB of IP packet, so its TCP payload fits */
#define MIRROR_PAYLOAD_MAX 65536

#define MIRROR_TCP_FIN 0x01
#define MIRROR_TCP_SYN 0x02
#define MIRROR_TCP_RST 0x04
#define MIRROR_TCP_ACK 0x10

struct mirror_event {
	__u8 family;	/* 4 or 6 */
	__u8 tcp_flags; /* MIRROR_TCP_* as on the wire */
	__u16 sport;	/* host order */
	__u16 dport;	/* host order: the mirrored port */
	__u16 pad;
	__u32 seq;	   /* host order */
	__u32 payload_len; /* bytes following this header */
	__u32 ifindex;
	__u8 saddr[16]; /* IPv4: the first 4 bytes */
	__u8 daddr[16];
};

/* A connection one of whose segments the program could not hand to user space: the
 * agent resets its copies (the segment may have been its last, so no later one would
 * show the hole). */
struct mirror_flow {
	__u8 family;
	__u8 pad;
	__u16 sport, dport;
	__u16 pad2;
	__u8 saddr[16], daddr[16];
};
#define MIRROR_LOST_FLOWS_MAX 4096

/* what the program could not hand to user space, per CPU */
struct mirror_drops {
	__u64 events; /* segments dropped: ring buffer full */
	__u64 bytes;  /* payload bytes of those */
};

#endif
