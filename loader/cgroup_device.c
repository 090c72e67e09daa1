/* The pod device policy (bpf/devices.bpf.c) on a cgroup v2 directory. The program is
 * attached the legacy way, not as a bpf_link: a link is detached when its last fd
 * closes, so a SIGKILLed trace-pod would leave its pod without a policy; a legacy
 * attachment belongs to the cgroup and is released with it. */
#include <bpf/bpf.h>
#include <fcntl.h>
#include <stdio.h>

#include "devices.skel.h"
#include "loader/internal.h"

int hm_device_policy_attach(int cgroup_fd, bool allow_mknod, struct hm_err *err)
{
	hm_libbpf_log_setup();
	/* BPF_PROG_ATTACH wants a real open file on older kernels, not an O_PATH fd */
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", cgroup_fd);
	hm_cleanup_close int dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0)
		return hm_err_errno(err, "device policy: open the cgroup");
	struct devices_bpf *skel = devices_bpf__open();
	if (!skel)
		return hm_err_errno(err, "device policy: open BPF object");
	/* rodata: frozen at load, so the verifier drops the mknod branch when it is 0 */
	skel->rodata->allow_mknod = allow_mknod;
	int rc = devices_bpf__load(skel);
	if (rc < 0) {
		hm_err_set(err, -rc,
			   "device policy: load BPF program (libbpf warnings above have the "
			   "verifier log)");
		goto out;
	}
	/* ALLOW_MULTI: programs of the parent cgroups still run too, ours can only narrow */
	rc = bpf_prog_attach(bpf_program__fd(skel->progs.hm_dev_policy), dir, BPF_CGROUP_DEVICE,
			     BPF_F_ALLOW_MULTI);
	if (rc < 0)
		hm_err_set(err, -rc, "device policy: attach to the cgroup");
out:
	/* the cgroup keeps its own reference to the attached program */
	devices_bpf__destroy(skel);
	return rc < 0 ? -1 : 0;
}
