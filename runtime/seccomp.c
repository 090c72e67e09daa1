/* The pods' default seccomp profile: everything is allowed except what lets a process
 * in a pod leave it, raise its own limits, reach the kernel's global state or type on
 * a terminal it does not own — in the spirit of the Docker/runc default. The profile is
 * compiled by libseccomp in the runtime (arch checks for x86-64 and its 32-bit ABIs,
 * argument matching) and exported as plain BPF, so the pod's process loads it with one
 * seccomp() call just before execve, without malloc between clone and exec.
 *
 * The pod never holds CAP_SYS_ADMIN (container.c keeps docker's default capabilities),
 * so everything the kernel would only allow with it is refused outright here. */
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>

#include "runtime/internal.h"

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

struct denied_syscall {
	const char *name;
	int errno_value;
};

/* Syscalls refused whatever their arguments. A name this libseccomp does not know is
 * skipped (the kernel of such a system has no such syscall either). */
static const struct denied_syscall denied_syscalls[] = {
    /* New namespaces come from clone/unshare (argument rules below); setns would join
     * another pod's or the host's, and needs CAP_SYS_ADMIN the pod does not have.
     * clone3 passes its flags in memory a filter cannot read: ENOSYS makes libcs fall
     * back to clone, whose flags are checked (as runc does). */
    {"setns", EPERM},
    {"clone3", ENOSYS},
    /* Mounts: the pod's own are in place before the profile is loaded; later ones
     * could mount cgroup v1 controllers and raise the pod's limits, or uncover masked
     * paths. */
    {"mount", EPERM},
    {"umount", EPERM},
    {"umount2", EPERM},
    {"pivot_root", EPERM},
    {"move_mount", EPERM},
    {"open_tree", EPERM},
    {"fsopen", EPERM},
    {"fsconfig", EPERM},
    {"fsmount", EPERM},
    {"fspick", EPERM},
    {"mount_setattr", EPERM},
    /* The kernel keyring is not namespaced: keys of the host and of other pods. */
    {"keyctl", EPERM},
    {"add_key", EPERM},
    {"request_key", EPERM},
    /* io_uring runs syscalls from kernel threads this filter never sees. */
    {"io_uring_setup", ENOSYS},
    {"io_uring_enter", ENOSYS},
    {"io_uring_register", ENOSYS},
    /* Replacing or extending the running kernel. */
    {"kexec_load", EPERM},
    {"kexec_file_load", EPERM},
    {"init_module", EPERM},
    {"finit_module", EPERM},
    {"delete_module", EPERM},
    {"create_module", EPERM},
    /* Kernel-wide observation and tracing: programs in the kernel, all CPUs' events,
     * the kernel log, dcookies; userfaultfd stalls kernel code at will (exploit aid). */
    {"bpf", EPERM},
    {"perf_event_open", EPERM},
    {"userfaultfd", EPERM},
    {"syslog", EPERM},
    {"lookup_dcookie", EPERM},
    /* Host-wide settings: process accounting, swap, reboot, quotas, the clock. */
    {"acct", EPERM},
    {"swapon", EPERM},
    {"swapoff", EPERM},
    {"reboot", EPERM},
    {"quotactl", EPERM},
    {"quotactl_fd", EPERM},
    {"settimeofday", EPERM},
    {"stime", EPERM},
    {"clock_settime", EPERM},
    {"clock_adjtime", EPERM},
    {"adjtimex", EPERM},
    /* File handles bypass the mount namespace ("shocker": open any host inode). */
    {"open_by_handle_at", EPERM},
    {"name_to_handle_at", EPERM},
    /* 32-bit x86 virtual 8086 mode and raw port access. */
    {"vm86", EPERM},
    {"vm86old", EPERM},
    {"iopl", EPERM},
    {"ioperm", EPERM},
    /* Obsolete interfaces with a history of holes. */
    {"uselib", EPERM},
    {"nfsservctl", EPERM},
    {"get_kernel_syms", EPERM},
    {"query_module", EPERM},
};

/* Namespace flags clone() and unshare() may not ask for: a user namespace gives the
 * pod every capability over new mount/cgroup namespaces (the way to mount cgroup v1
 * and raise its own pids.max); the others need CAP_SYS_ADMIN, which the pod lacks.
 * CLONE_NEWTIME shares its bit with clone()'s exit signal, so it is checked on
 * unshare only. */
static const uint64_t namespace_flags[] = {
    CLONE_NEWUSER, CLONE_NEWNS,	 CLONE_NEWCGROUP, CLONE_NEWPID,
    CLONE_NEWNET,  CLONE_NEWUTS, CLONE_NEWIPC,
};

/* Terminal ioctls that act on the terminal's owner: TIOCSTI types input that the
 * session's shell then reads (the pod used it to run commands in the operator's root
 * shell); TIOCLINUX can do the same through the console's selection buffer. The
 * kernel takes the request as an unsigned int, so only its low 32 bits are compared:
 * TIOCSTI | 1 << 32 must not slip through. */
static const unsigned long denied_ioctls[] = {TIOCSTI, TIOCLINUX};

/* Socket families a pod may not open. AF_VSOCK is not bound to a network namespace:
 * it reaches the hypervisor's and the host's vsock services whatever --net says.
 * The kernel takes the family as an int: only its low 32 bits are compared. */
static const int denied_socket_families[] = {AF_VSOCK};

/* personality() values that change nothing dangerous (as Docker allows): PER_LINUX,
 * PER_LINUX32, UNAME26 and both, and 0xffffffff, which only queries. The others
 * (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, PER_BSD ...) weaken the process's own
 * protections or are foreign ABIs. */
#define PERSONALITY_ALLOWED_BITS ((uint32_t)(PER_LINUX32 | UNAME26))
#define PERSONALITY_QUERY 0xffffffffU

static int add_rule(scmp_filter_ctx ctx, int errno_value, int nr, unsigned count,
		    const struct scmp_arg_cmp *cmp, const char *what, struct hm_err *err)
{
	int r = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(errno_value), nr, count, cmp);
	if (r < 0)
		return hm_err_set(err, -r, "seccomp rule for %s", what);
	return 0;
}

static int deny_namespace_flags(scmp_filter_ctx ctx, const char *name, bool with_newtime,
				struct hm_err *err)
{
	int nr = seccomp_syscall_resolve_name(name);
	for (size_t i = 0; i < HM_ARRAY_SIZE(namespace_flags) + with_newtime; i++) {
		uint64_t flag =
		    i < HM_ARRAY_SIZE(namespace_flags) ? namespace_flags[i] : CLONE_NEWTIME;
		struct scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag);
		if (add_rule(ctx, EPERM, nr, 1, &cmp, name, err) < 0)
			return -1;
	}
	return 0;
}

/* "Deny unless arg0 is one of the allowed values" with one comparison per rule (all
 * libseccomp allows) and a default-allow filter: every 32-bit value outside the set
 * has a bit outside PERSONALITY_ALLOWED_BITS, and is not the all-ones query, i.e.
 *  - bit 0 clear and some other disallowed bit k set, or
 *  - bit 0 set (disallowed itself) and some bit j clear.
 * The kernel ignores the upper 32 bits, so they are never compared. */
static int deny_personality(scmp_filter_ctx ctx, struct hm_err *err)
{
	int nr = SCMP_SYS(personality);
	_Static_assert(!(PERSONALITY_ALLOWED_BITS & 1), "bit 0 must be a disallowed bit");
	for (unsigned bit = 1; bit < 32; bit++) {
		uint64_t b = 1ULL << bit;
		struct scmp_arg_cmp cmp;
		if (!(PERSONALITY_ALLOWED_BITS & b)) {
			cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, b | 1, b);
			if (add_rule(ctx, EPERM, nr, 1, &cmp, "personality", err) < 0)
				return -1;
		}
		cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, b | 1, 1);
		if (add_rule(ctx, EPERM, nr, 1, &cmp, "personality", err) < 0)
			return -1;
	}
	return 0;
}

static int build_filter(scmp_filter_ctx ctx, struct hm_err *err)
{
	/* Programs of the 32-bit ABIs get the same rules instead of being killed. */
	if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
		int r = seccomp_arch_add(ctx, SCMP_ARCH_X86);
		if (r < 0 && r != -EEXIST)
			return hm_err_set(err, -r, "seccomp: add the x86 architecture");
		r = seccomp_arch_add(ctx, SCMP_ARCH_X32);
		if (r < 0 && r != -EEXIST)
			return hm_err_set(err, -r, "seccomp: add the x32 architecture");
	}
	for (size_t i = 0; i < HM_ARRAY_SIZE(denied_syscalls); i++) {
		int nr = seccomp_syscall_resolve_name(denied_syscalls[i].name);
		if (nr == __NR_SCMP_ERROR) {
			hm_debug("seccomp: this libseccomp does not know %s",
				 denied_syscalls[i].name);
			continue;
		}
		if (add_rule(ctx, denied_syscalls[i].errno_value, nr, 0, NULL,
			     denied_syscalls[i].name, err) < 0)
			return -1;
	}
	if (deny_namespace_flags(ctx, "clone", false, err) < 0 ||
	    deny_namespace_flags(ctx, "unshare", true, err) < 0)
		return -1;
	for (size_t i = 0; i < HM_ARRAY_SIZE(denied_ioctls); i++) {
		struct scmp_arg_cmp cmp =
		    SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, denied_ioctls[i]);
		if (add_rule(ctx, EPERM, SCMP_SYS(ioctl), 1, &cmp, "ioctl", err) < 0)
			return -1;
	}
	for (size_t i = 0; i < HM_ARRAY_SIZE(denied_socket_families); i++) {
		struct scmp_arg_cmp cmp =
		    SCMP_A0(SCMP_CMP_MASKED_EQ, 0xffffffffULL, (uint64_t)denied_socket_families[i]);
		if (add_rule(ctx, EAFNOSUPPORT, SCMP_SYS(socket), 1, &cmp, "socket", err) < 0 ||
		    add_rule(ctx, EAFNOSUPPORT, SCMP_SYS(socketpair), 1, &cmp, "socketpair", err) <
			0)
			return -1;
	}
	return deny_personality(ctx, err);
}

int rt_seccomp_compile(struct rt_seccomp_prog *prog, struct hm_err *err)
{
	prog->insns = NULL;
	prog->len = 0;
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return hm_err_set(err, ENOMEM, "seccomp_init");
	int rc = -1;
	hm_cleanup_close int mem = -1;
	if (build_filter(ctx, err) < 0)
		goto out;
	/* libseccomp 2.5 exports BPF only to an fd */
	mem = memfd_create("hermit-seccomp", MFD_CLOEXEC);
	if (mem < 0) {
		hm_err_errno(err, "memfd_create");
		goto out;
	}
	int r = seccomp_export_bpf(ctx, mem);
	if (r < 0) {
		hm_err_set(err, -r, "seccomp: export the filter");
		goto out;
	}
	if (lseek(mem, 0, SEEK_SET) < 0) {
		hm_err_errno(err, "seccomp: rewind the filter");
		goto out;
	}
	char *bytes;
	size_t len;
	if (hm_read_fd(mem, 4096, BPF_MAXINSNS * sizeof(struct sock_filter), "seccomp filter",
		       &bytes, &len, err) < 0)
		goto out;
	if (len == 0 || len % sizeof(struct sock_filter)) {
		free(bytes);
		hm_err_set(err, EINVAL, "seccomp: filter of %zu bytes", len);
		goto out;
	}
	prog->insns = (struct sock_filter *)bytes;
	prog->len = len / sizeof(struct sock_filter);
	rc = 0;
out:
	seccomp_release(ctx);
	return rc;
}

void rt_seccomp_free(struct rt_seccomp_prog *prog)
{
	free(prog->insns);
	prog->insns = NULL;
	prog->len = 0;
}

int rt_seccomp_load(const struct rt_seccomp_prog *prog, struct hm_err *err)
{
	if (!prog || !prog->insns)
		return 0;
	struct sock_fprog fprog = {.len = (unsigned short)prog->len, .filter = prog->insns};
	/* no_new_privs is already set (rt_child_restrict): no CAP_SYS_ADMIN needed */
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) < 0)
		return hm_err_errno(err, "load the seccomp profile");
	return 0;
}
