/* The device allow-list of a pod, shared by the BPF_CGROUP_DEVICE program
 * (bpf/devices.bpf.c, cgroup v2) and the v1 devices controller rules
 * (runtime/devices.c), so the two policies cannot drift apart. runc's default minus
 * mknod: every entry is a character device the pod may read, write and mknod; any
 * other device is denied, and so is mknod of anything else unless the pod was started
 * with --allow-mknod (then mknod of any node passes, opening it still does not). */
#ifndef HERMIT_BPF_DEVICES_H
#define HERMIT_BPF_DEVICES_H

#define HM_DEV_ANY_MINOR 0xffffffffu

/* X(major, minor, what): character devices only */
#define HM_DEVICE_ALLOW_LIST(X)                                                                    \
	X(1, 3, "null")                                                                            \
	X(1, 5, "zero")                                                                            \
	X(1, 7, "full")                                                                            \
	X(1, 8, "random")                                                                          \
	X(1, 9, "urandom")                                                                         \
	X(5, 0, "tty")                                                                             \
	X(5, 2, "ptmx")                                                                            \
	X(136, HM_DEV_ANY_MINOR, "pts/N")

#endif
