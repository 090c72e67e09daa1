/* Layout shared by steal.bpf.c and loader/steal.c. Includers provide __u32 (vmlinux.h
 * on the BPF side, <linux/types.h> in user space). */
#ifndef HERMIT_BPF_STEAL_H
#define HERMIT_BPF_STEAL_H

/* the agent's own connections to the target's server that are in their handshake at
 * once (HTTP requests a filter leaves to the target): more wait in their connect */
#define STEAL_BYPASS_MAX 4096

/* keys of the `listener` sockmap: one listener per family (an IPv6 socket bound to
 * ::1 is v6-only, and one bound to :: would take connections on its own port too) */
#define STEAL_LISTENER_V4 0
#define STEAL_LISTENER_V6 1

#endif
