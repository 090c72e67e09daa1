// SPDX-License-Identifier: GPL-2.0
/* The pod's device policy on cgroup v2: a BPF_CGROUP_DEVICE program the kernel runs
 * on every open and mknod of a device node by a process of the pod's cgroup (and
 * before the v1 devices controller, which trace-pod also configures on hybrid hosts).
 * Returning 0 makes the syscall fail with EPERM. */
/* No CO-RE: the context is a stable UAPI struct, and without relocations libbpf need
 * not load and parse the kernel's BTF at every pod start (~10 ms). */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "devices.h"

/* UAPI values (include/uapi/linux/bpf.h) that vmlinux.h does not carry */
#define BPF_DEVCG_ACC_MKNOD 1
#define BPF_DEVCG_DEV_CHAR 2

/* Set by the loader before load: let mknod of any node through (--allow-mknod). */
const volatile __u8 allow_mknod = 0;

static __always_inline int allowed_char(__u32 major, __u32 minor)
{
#define HM_DEV_MATCH(maj, min, what)                                                               \
	if (major == (maj) && ((min) == HM_DEV_ANY_MINOR || minor == (__u32)(min)))                \
		return 1;
	HM_DEVICE_ALLOW_LIST(HM_DEV_MATCH)
#undef HM_DEV_MATCH
	return 0;
}

/* "hm_" prefix: every hermit program's name starts with it */
SEC("cgroup/dev")
int hm_dev_policy(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 type = ctx->access_type & 0xffff;
	__u32 access = ctx->access_type >> 16;

	if (allow_mknod && access == BPF_DEVCG_ACC_MKNOD)
		return 1;
	if (type == BPF_DEVCG_DEV_CHAR && allowed_char(ctx->major, ctx->minor))
		return 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
