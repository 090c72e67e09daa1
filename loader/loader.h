/* loader: the user-space half of hermit's eBPF programs. It opens the skeletons that
 * the build generates from bpf/NAME.bpf.c, sets their read-only config, and attaches
 * them: the device policy to a pod's cgroup (trace-pod), the packet counter to an
 * interface's tc ingress inside a network namespace (only tests/unit/test_loader.c,
 * which checks the BPF pipeline end to end with it).
 *
 * TC filters outlive the process that attached them, so every tc attachment is
 * detached explicitly, and attaching first removes hermit filters whose owner died
 * (a filter is stale when no process holds its program any more: a hermit process
 * keeps its program fd open for as long as its filter is attached). */
#ifndef HERMIT_LOADER_H
#define HERMIT_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

/* An interface inside a network namespace. The calling thread enters the namespace
 * for the duration of each call and returns to its own before the call returns. */
struct hm_netdev {
	const char *netns_path; /* "/proc/PID/ns/net", "/run/netns/NAME"; NULL: use netns_fd */
	int netns_fd;		/* used when netns_path is NULL; -1: the calling thread's netns */
	const char *ifname;
};

/* hermit's tc filters all carry this handle, one priority per program, so
 * `tc filter show dev IF ingress` shows them for what they are. Priorities sit
 * between Cilium's (1) and the kernel's automatic ones (from 49152 down). */
#define HM_TC_HANDLE 0x686d /* "hm" */
#define HM_TC_PRIO_COUNTER 0x6801
#define HM_TC_PRIO_MIRROR 0x6802

/* ---- counter: packets and bytes per IP protocol at tc ingress (bpf/counter.bpf.c) ---- */

struct hm_counter;

struct hm_counter_opts {
	struct hm_netdev dev;
	uint8_t only_ip_proto; /* count only this IP protocol (IPPROTO_UDP ...); 0: all */
};

struct hm_counter_stats {
	uint64_t packets;
	uint64_t bytes; /* frames as tc ingress sees them, Ethernet header included */
};

/* Load the program and attach it to the tc ingress hook of opts->dev (creating the
 * clsact qdisc when the interface has none). Fails with EBUSY when a live process
 * already holds hermit's counter filter on that interface. */
int hm_counter_attach(const struct hm_counter_opts *opts, struct hm_counter **out,
		      struct hm_err *err);
/* Totals over all CPUs for one IP protocol (IPv4 protocol / IPv6 next header). */
int hm_counter_read(const struct hm_counter *counter, uint8_t ip_proto,
		    struct hm_counter_stats *out, struct hm_err *err);
/* Detach (removing the clsact qdisc too when attach created it and nothing else uses
 * it) and free. Always frees; < 0 when the filter could not be removed, in which case
 * the next attach on that interface removes it as stale. NULL is a no-op. */
int hm_counter_destroy(struct hm_counter *counter, struct hm_err *err);

/* ---- mirror: copies of the TCP segments sent to some ports (bpf/mirror.bpf.c) ----
 * One program per network namespace, attached at tc ingress of every interface the
 * namespace has at attach time (lo included: the pod's own clients), with one ring
 * buffer. It never changes a verdict. */

struct hm_mirror;

/* One segment sent to a mirrored port, as the pod received it. Valid during the
 * callback only. */
struct hm_mirror_segment {
	uint8_t family;	   /* 4 or 6 */
	uint8_t tcp_flags; /* HM_MIRROR_FIN | HM_MIRROR_SYN | HM_MIRROR_RST | HM_MIRROR_ACK */
	uint16_t sport, dport;
	uint32_t seq;
	uint8_t saddr[16], daddr[16]; /* IPv4: the first 4 bytes */
	uint32_t ifindex;
	const void *payload;
	uint32_t len;
};
#define HM_MIRROR_FIN 0x01
#define HM_MIRROR_SYN 0x02
#define HM_MIRROR_RST 0x04
#define HM_MIRROR_ACK 0x10

/* Returns false to stop the hm_mirror_consume under way after this segment. */
typedef bool (*hm_mirror_segment_fn)(void *ctx, const struct hm_mirror_segment *seg);

struct hm_mirror_opts {
	int netns_fd;	   /* borrowed: the namespace whose interfaces get the program */
	size_t ring_bytes; /* ring buffer size (a power of 2 >= page size); 0: 32 MiB */
	/* 0: hm_mirror_fd turns readable for every segment; else only once this many bytes
	 * wait, and the caller also consumes on a timer of its own (batches: fewer wake-ups) */
	size_t wakeup_bytes;
	hm_mirror_segment_fn on_segment;
	void *ctx;
};

/* Load the program and attach it to every interface of the namespace. EPERM/EOPNOTSUPP
 * and friends come back with a message naming what is missing (capability, BPF, tc);
 * a verifier rejection's log is in the libbpf warnings (debug level). Nothing is left
 * attached on failure. Thread-safe: enters the namespace on the calling thread only. */
int hm_mirror_attach(const struct hm_mirror_opts *opts, struct hm_mirror **out, struct hm_err *err);
int hm_mirror_port_add(struct hm_mirror *m, uint16_t port, struct hm_err *err);
int hm_mirror_port_remove(struct hm_mirror *m, uint16_t port, struct hm_err *err);
/* Readable (poll/epoll) when segments wait; then call hm_mirror_consume. */
int hm_mirror_fd(const struct hm_mirror *m);
/* Hand the waiting segments to on_segment until none is left (0) or on_segment asks
 * to stop (1: more may wait); < 0 on error. */
int hm_mirror_consume(struct hm_mirror *m, struct hm_err *err);
/* A connection that lost a segment (hm_mirror_take_lost). */
struct hm_mirror_flow {
	uint8_t family;
	uint16_t sport, dport;
	uint8_t saddr[16], daddr[16];
};
/* Hand each connection that lost a segment since the last call to fn, and forget it.
 * Returns how many. */
int hm_mirror_take_lost(struct hm_mirror *m, void (*fn)(void *ctx, const struct hm_mirror_flow *),
			void *ctx);
/* Segments (and their payload bytes) the program dropped because the ring buffer was
 * full, since attach. */
void hm_mirror_drops(const struct hm_mirror *m, uint64_t *segments, uint64_t *bytes);
/* Detach from every interface and free. Always frees; < 0 when a filter could not be
 * removed (the next start of an agent removes it as stale). NULL is a no-op. */
int hm_mirror_destroy(struct hm_mirror *m, struct hm_err *err);

/* Remove the hermit tc filters whose program no process holds any more (left by a
 * killed agent) from every interface of every network namespace this process can see
 * (those of /proc/PID/ns/net and /run/netns). Returns how many were removed. */
int hm_tc_remove_stale_everywhere(struct hm_err *err);

/* ---- device policy of a pod's cgroup v2 (bpf/devices.bpf.c) ---- */

/* Attach the pod device allow-list (bpf/devices.h) to the cgroup v2 directory
 * cgroup_fd (borrowed; O_PATH is fine) with the legacy BPF_PROG_ATTACH and
 * BPF_F_ALLOW_MULTI: the cgroup holds the program, not our fd, so the policy keeps
 * applying when the caller exits or is killed, and it goes away with the cgroup.
 * allow_mknod lets mknod of any device node through (opening one stays denied). */
int hm_device_policy_attach(int cgroup_fd, bool allow_mknod, struct hm_err *err);

/* ---- steal: new TCP connections to a port go to a listener (bpf/steal.bpf.c) ----
 * An sk_lookup program attached to a network namespace with a BPF link held only by
 * this process: it ends with the fd (hm_steal_destroy, exit, kill -9) and nothing is
 * pinned, so nothing can be left behind. Only new connections (SYNs) are affected. */
struct hm_steal;
/* From now on, every new TCP connection to port (any address of netns_fd, borrowed) is
 * given to listen_v4 or listen_v6 by its family (borrowed: listening TCP sockets
 * created in that netns; -1: that family's connections are left alone; a v4 one only
 * gets IPv4). Missing BPF support or capability
 * and a verifier rejection fail with one message naming what is missing (EOPNOTSUPP,
 * EPERM); libbpf's log (the verifier's) is at debug level. */
int hm_steal_attach(int netns_fd, uint16_t port, int listen_v4, int listen_v6,
		    struct hm_steal **out, struct hm_err *err);
/* Let connections from source port src_port (the agent's own connections to the
 * target's server) through to the target (on), or not any more (off). Only their SYN
 * is looked up: the entry can go once the connection is established. */
int hm_steal_bypass(struct hm_steal *s, uint16_t src_port, bool on, struct hm_err *err);
/* The program's id (`bpftool prog show id N`), 0 if unknown. */
uint32_t hm_steal_prog_id(const struct hm_steal *s);
/* Detach and free. NULL is a no-op. */
void hm_steal_destroy(struct hm_steal *s);

/* ---- sockrelay: the agent's kernel relay of TCP socket pairs (bpf/sockrelay.bpf.c) ----
 * An sk_skb verdict program on a SOCKHASH: bytes received on one socket of a pair leave
 * by the other's transmit path from the softirq that received them. Nothing is pinned:
 * the program and maps live with this process's fds, and a socket leaves the map when
 * it is closed. What the program does not redirect stays readable on the socket it
 * came in on (hm_sockrelay_side.passed): the caller moves those bytes itself. */
struct hm_sockrelay;
/* slots (hm_sockrelay_pair.slot) are below this: one per relayed socket */
#define HM_SOCKRELAY_SLOTS 16384
/* skbs one socket may have queued at its peer at once, at most (hm_sockrelay_skbs_gone) */
#define HM_SOCKRELAY_SKB_CREDIT 2048
/* Load the program and attach it to its map. EPERM/EOPNOTSUPP with a message naming
 * what is missing (capability, kernel support); libbpf's log at debug level. */
int hm_sockrelay_open(struct hm_sockrelay **out, struct hm_err *err);
/* Close the program and maps (sockets still in the map leave it). NULL is a no-op. */
void hm_sockrelay_close(struct hm_sockrelay *r);
/* The program's id (`bpftool prog show id N`), 0 if unknown. */
uint32_t hm_sockrelay_prog_id(const struct hm_sockrelay *r);

/* One socket of a relayed pair, as the program counts it: every figure only grows. */
struct hm_sockrelay_side {
	uint64_t redirected; /* bytes the kernel handed to the peer's transmit path */
	uint64_t passed;     /* bytes left on this socket for the caller to move */
	/* skbs redirected: the program stops at a credit more than the count last given
	 * to hm_sockrelay_skbs_gone: one skb a KiB of the first limit given to add, 16 to
	 * HM_SOCKRELAY_SKB_CREDIT */
	uint64_t skbs;
	bool skbs_low; /* past half that credit: call hm_sockrelay_skbs_gone soon */
};
struct hm_sockrelay_pair {
	uint32_t slot[2]; /* the two sockets' slots, in the order given to add */
};
/* Put the connected TCP sockets fd[0] and fd[1] (borrowed) in the map, each one's
 * bytes redirected to the other while, per direction, redirected stays within limit
 * (hm_sockrelay_set). Bytes queued on a socket before it entered are processed by the
 * program too (in order, before anything newer). ENOSPC when the map is full;
 * EOPNOTSUPP when a socket is not established (the kernel takes only those): on these
 * the sockets are as they were. ECONNABORTED: bytes were lost while the first socket
 * was alone in the map (the second's state changed under way): reset the pair. */
int hm_sockrelay_add(struct hm_sockrelay *r, const int fd[2], const uint64_t limit[2],
		     struct hm_sockrelay_pair *out, struct hm_err *err);
/* Read side i's counters (lock-free; concurrent with the program). */
void hm_sockrelay_get(const struct hm_sockrelay *r, const struct hm_sockrelay_pair *p, int i,
		      struct hm_sockrelay_side *out);
/* Tell the program side i's state: drained = how many of its passed bytes the caller
 * has written to the peer (the program redirects again only once drained == passed,
 * which keeps the order), limit = the redirected total it may reach, notify_at = the
 * redirected total at which it tells the caller (time to raise the limit). All grow. */
void hm_sockrelay_set(struct hm_sockrelay *r, const struct hm_sockrelay_pair *p, int i,
		      uint64_t drained, uint64_t limit, uint64_t notify_at);
/* Every skb of side i counted up to skbs (hm_sockrelay_side.skbs, read with the
 * redirected total that the peer's TCP has taken whole) has left the kernel's queue:
 * the program may redirect its skb credit more. The queue's kernel memory
 * is bounded by this as much as by the byte limit (one-byte segments cost ~1 KiB
 * each). */
void hm_sockrelay_skbs_gone(struct hm_sockrelay *r, const struct hm_sockrelay_pair *p, int i,
			    uint64_t skbs);
/* Readable (epoll) when the program has news: then call hm_sockrelay_consume. */
int hm_sockrelay_events_fd(const struct hm_sockrelay *r);
/* fn(ctx, slot) for each socket that needs the caller: bytes were left to it (passed
 * grew past drained) or its redirected total crossed notify_at. Returns how many. */
int hm_sockrelay_consume(struct hm_sockrelay *r, void (*fn)(void *ctx, uint32_t slot), void *ctx);
/* Forget the pair: the sockets leave the map (bytes the kernel holds between them are
 * lost: call this once nothing is in flight, or when the pair is reset anyway). */
void hm_sockrelay_remove(struct hm_sockrelay *r, const struct hm_sockrelay_pair *p);

#endif
