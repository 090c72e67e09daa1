/* Layout shared by sockrelay.bpf.c and loader/sockrelay.c. Includers provide __u32 and
 * __u64 (vmlinux.h on the BPF side, <linux/types.h> in user space). */
#ifndef HERMIT_BPF_SOCKRELAY_H
#define HERMIT_BPF_SOCKRELAY_H

/* sockets relayed at once (two per stream) */
#define SOCKRELAY_SLOTS 16384

/* One relayed socket, in a memory-mapped array shared with the agent. The program
 * writes redirected and passed, the agent peer, drained and limit (peer and limit
 * before the socket's cookie is mapped to its slot). Every counter only grows. */
struct sockrelay_slot {
	__u64 peer;	  /* cookie of the socket this one's bytes go out of */
	__u64 redirected; /* bytes handed to the peer's transmit path by the kernel */
	__u64 passed;	  /* bytes left in this socket for the agent to move */
	__u64 drained;	  /* of passed, how many the agent has written to the peer */
	/* the program redirects while redirected stays within limit: the agent raises it
	 * as the peer's TCP takes the bytes, so what waits in the kernel between the two
	 * sockets (the peer's psock queue, which has no bound of its own) stays bounded */
	__u64 limit;
	__u64 notify_at; /* the program tells the agent once redirected crosses this */
	/* The queue's kernel memory is counted in skbs too: a byte limit alone lets a
	 * sender of one-byte segments queue one skb (~1 KiB) per byte, which no socket's
	 * accounting sees. The program redirects while skbs stays below skb_limit, which
	 * the agent raises only once every skb counted has left the queue; it tells the
	 * agent when skbs reaches skb_notify_at. */
	__u64 skbs;
	__u64 skb_limit;
	__u64 skb_notify_at;
	/* the agent's own: skb_limit's step, from the first limit (one skb a KiB of it,
	 * so that their overhead costs at most about as much again as the bytes) */
	__u64 skb_credit;
};
/* skbs a socket may have queued at its peer's psock at once, at most */
#define SOCKRELAY_SKB_CREDIT 2048
#define SOCKRELAY_SKB_CREDIT_MIN 16

/* a ring buffer record: the slot whose socket needs the agent (bytes were left to it,
 * or its redirected total crossed notify_at) */
struct sockrelay_event {
	__u32 slot;
	__u32 why; /* SOCKRELAY_PASSED or SOCKRELAY_CREDIT */
};
#define SOCKRELAY_PASSED 1
#define SOCKRELAY_CREDIT 2
/* at most one record per socket waits (the next needs the agent to act first) */
#define SOCKRELAY_RING_BYTES (2 * SOCKRELAY_SLOTS * 16)

#endif
