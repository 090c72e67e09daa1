/* The pod's device policy: which device nodes a process of the pod may open or make.
 * One allow-list (bpf/devices.h) in two forms, because the kernel asks both: the v1
 * devices controller on hybrid and v1 hosts, and a BPF_CGROUP_DEVICE program on the
 * pod's v2 cgroup (loader/cgroup_device.c). */
#include <linux/capability.h>
#include <string.h>

#include "bpf/devices.h"
#include "loader/loader.h"
#include "runtime/internal.h"

int rt_devices_write_v1(const char *dir, bool allow_mknod, struct hm_err *err)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/devices.deny", dir) >= (int)sizeof(path))
		return hm_err_plain(err, ENAMETOOLONG, "cgroup path too long: %s", dir);
	/* "a" also drops every exception inherited from the parent */
	if (hm_write_file(path, "a", err) < 0)
		return hm_err_prefix(err, "device policy");
	snprintf(path, sizeof(path), "%s/devices.allow", dir);
	static const char *const rules[] = {
#define HM_DEV_RULE(maj, min, what)                                                                \
	(min) == HM_DEV_ANY_MINOR ? "c " #maj ":* rwm" : "c " #maj ":" #min " rwm",
	    HM_DEVICE_ALLOW_LIST(HM_DEV_RULE)
#undef HM_DEV_RULE
	};
	/* the controller takes one rule per write */
	for (size_t i = 0; i < HM_ARRAY_SIZE(rules); i++)
		if (hm_write_file(path, rules[i], err) < 0)
			return hm_err_prefix(err, "device policy: '%s'", rules[i]);
	if (allow_mknod &&
	    (hm_write_file(path, "c *:* m", err) < 0 || hm_write_file(path, "b *:* m", err) < 0))
		return hm_err_prefix(err, "device policy: --allow-mknod");
	return 0;
}

int rt_devices_attach_v2(int v2_fd, bool allow_mknod, struct hm_err *err)
{
	return hm_device_policy_attach(v2_fd, allow_mknod, err);
}

bool rt_devices_pid_keeps_mknod(pid_t pid)
{
	struct hm_proc_field cap = {.key = "CapBnd"};
	unsigned long long bounding;
	if (hm_proc_status(pid, &cap, 1) < 0 || sscanf(cap.value, "%llx", &bounding) != 1)
		return false;
	return bounding & (1ULL << CAP_MKNOD);
}
