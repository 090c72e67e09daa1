/* The steal program (bpf/steal.bpf.c): one instance per stolen (netns, port), attached
 * to the netns with a BPF link whose only holder is the agent's fd, so the program
 * disappears with the agent, however it ends. Nothing is pinned. */
#include <linux/types.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "bpf/steal.h"
#include "loader/internal.h"
#include "steal.skel.h"

struct hm_steal {
	struct steal_bpf *skel;
	struct bpf_link *link;
	uint16_t port;
};

/* One message for what this kernel or process lacks, before a load whose failure
 * would only say EINVAL or EPERM (the probe itself cannot tell them apart). */
static int check_support(uint16_t port, struct hm_err *err)
{
	if (!(hm_has_cap(CAP_BPF) || hm_has_cap(CAP_SYS_ADMIN)) || !hm_has_cap(CAP_NET_ADMIN))
		return hm_err_plain(err, EPERM,
				    "steal port %u: loading the sk_lookup BPF program needs "
				    "CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN, which the agent "
				    "does not have (run it as root)",
				    port);
	int r = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, NULL);
	if (r == 1)
		return 0;
	if (r == 0)
		return hm_err_plain(err, EOPNOTSUPP,
				    "steal port %u: this kernel has no sk_lookup BPF programs "
				    "(Linux 5.9+ with CONFIG_BPF_SYSCALL and CONFIG_INET)",
				    port);
	return hm_err_set(err, -r, "steal port %u: probe for sk_lookup BPF support", port);
}

int hm_steal_attach(int netns_fd, uint16_t port, int listen_v4, int listen_v6,
		    struct hm_steal **out, struct hm_err *err)
{
	*out = NULL;
	hm_libbpf_log_setup();
	if (check_support(port, err) < 0)
		return -1;
	struct hm_steal *s = calloc(1, sizeof(*s));
	if (!s)
		return hm_err_errno(err, "steal port %u", port);
	s->port = port;
	s->skel = steal_bpf__open();
	if (!s->skel) {
		hm_err_errno(err, "steal port %u: open BPF object", port);
		goto fail;
	}
	s->skel->rodata->steal_port = port;
	int r = steal_bpf__load(s->skel);
	if (r < 0) {
		hm_err_plain(err, r == -EPERM ? EPERM : EOPNOTSUPP,
			     "steal port %u: the kernel refused the sk_lookup program (%s); "
			     "--log-level debug shows the verifier log",
			     port, strerror(-r));
		goto fail;
	}
	int fds[2] = {listen_v4, listen_v6};
	for (__u32 slot = STEAL_LISTENER_V4; slot <= STEAL_LISTENER_V6; slot++) {
		if (fds[slot] < 0)
			continue;
		__u64 fd = (__u64)fds[slot];
		r = bpf_map__update_elem(s->skel->maps.listener, &slot, sizeof(slot), &fd,
					 sizeof(fd), BPF_ANY);
		if (r < 0) {
			hm_err_set(err, -r, "steal port %u: put the listener in the sockmap", port);
			goto fail;
		}
	}
	s->link = bpf_program__attach_netns(s->skel->progs.hm_steal, netns_fd);
	r = libbpf_get_error(s->link);
	if (r) {
		s->link = NULL;
		hm_err_set(err, -r, "steal port %u: attach sk_lookup to the network namespace",
			   port);
		goto fail;
	}
	*out = s;
	return 0;
fail:
	hm_steal_destroy(s);
	return -1;
}

int hm_steal_bypass(struct hm_steal *s, uint16_t src_port, bool on, struct hm_err *err)
{
	__u16 key = src_port;
	__u8 one = 1;
	int r = on ? bpf_map__update_elem(s->skel->maps.bypass, &key, sizeof(key), &one,
					  sizeof(one), BPF_ANY)
		   : bpf_map__delete_elem(s->skel->maps.bypass, &key, sizeof(key), 0);
	if (r < 0 && !(r == -ENOENT && !on))
		return hm_err_set(err, -r, "steal port %u: %s bypass for source port %u", s->port,
				  on ? "add" : "remove", src_port);
	return 0;
}

uint32_t hm_steal_prog_id(const struct hm_steal *s)
{
	struct bpf_prog_info info = {0};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(bpf_program__fd(s->skel->progs.hm_steal), &info, &len) < 0)
		return 0;
	return info.id;
}

void hm_steal_destroy(struct hm_steal *s)
{
	if (!s)
		return;
	bpf_link__destroy(s->link); /* closes the link fd: the netns drops the program */
	steal_bpf__destroy(s->skel);
	free(s);
}
