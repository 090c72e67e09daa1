/* seccomp features newer than some build machines' headers (the probe checks the
 * running kernel). Also included by tests/apps-c/notif_floor.c, the benchmarks' minimal
 * supervisor, so both use the same values. */
#ifndef HERMIT_TRACER_SECCOMP_COMPAT_H
#define HERMIT_TRACER_SECCOMP_COMPAT_H

#include <linux/seccomp.h>

#ifndef SECCOMP_ADDFD_FLAG_SEND
#define SECCOMP_ADDFD_FLAG_SEND (1UL << 1)
#endif
#ifndef SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
#define SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (1UL << 5)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

#endif
