/* loader internals shared by the per-program files (counter.c, cgroup_device.c):
 * libbpf logging, entering a netns from one thread, tc filter lifetime. */
#ifndef HERMIT_LOADER_INTERNAL_H
#define HERMIT_LOADER_INTERNAL_H

#include <linux/capability.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

#include <bpf/libbpf.h>

#include "loader/loader.h"

/* Route libbpf's messages into hermit's log (idempotent, thread-safe): warnings at
 * warn level (they carry the verifier log when a load fails), the rest at debug. */
void hm_libbpf_log_setup(void);

/* ---- caps.c ---- */

#ifndef CAP_BPF
#define CAP_BPF 39
#endif
/* Whether the process's effective set holds cap (CAP_NET_ADMIN, CAP_BPF, ...). */
bool hm_has_cap(int cap);

/* ---- netns.c ---- */

/* An O_CLOEXEC fd on the netns dev names (path, fd or the calling thread's), checked
 * to really be a network namespace. */
int hm_netns_open(const struct hm_netdev *dev, struct hm_err *err);

struct hm_netns_switch {
	int home_fd; /* the thread's netns before hm_netns_enter; -1 when not switched */
};
/* Move the calling thread into netns_fd (a no-op when it is already there). Every
 * successful enter must be paired with hm_netns_leave on the same thread. */
int hm_netns_enter(int netns_fd, struct hm_netns_switch *sw, struct hm_err *err);
/* Back to the thread's own netns. Failing here leaves the thread in the target's
 * namespace: callers must treat it as fatal for that thread. */
int hm_netns_leave(struct hm_netns_switch *sw, struct hm_err *err);

/* ---- tc.c ---- */

/* One hermit program attached as a direct-action tc filter. */
struct hm_tc_filter {
	int netns_fd; /* owned; lets detach run from any thread */
	int ifindex;
	char ifname[IF_NAMESIZE];
	enum bpf_tc_attach_point point; /* BPF_TC_INGRESS or BPF_TC_EGRESS */
	uint32_t handle;
	uint32_t priority;
	uint32_t prog_id;
	bool created_clsact; /* we added the qdisc, so we remove it once it is empty */
	bool attached;
};

/* Attach prog_fd at (HM_TC_HANDLE, priority) on ifname in netns_fd (borrowed; the
 * filter keeps its own dup). Stale hermit filters on the interface are removed first.
 * On failure nothing is left behind and f needs no detach. */
int hm_tc_filter_attach(struct hm_tc_filter *f, int netns_fd, const char *ifname,
			enum bpf_tc_attach_point point, uint32_t priority, int prog_fd,
			struct hm_err *err);
/* Remove stale hermit filters (no process holds their program) from every interface
 * of netns_fd (borrowed). Returns how many were removed. */
int hm_tc_remove_stale_in(int netns_fd, struct hm_err *err);
/* Idempotent. Removes only our own program (a filter replaced meanwhile is left to
 * its new owner); a vanished interface counts as detached. Releases f's netns fd. */
int hm_tc_filter_detach(struct hm_tc_filter *f, struct hm_err *err);

#endif
