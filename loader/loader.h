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

#endif
