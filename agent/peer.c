/* Who is on the other end of a connection, and what that peer may target.
 *
 * A unix peer has kernel-checked credentials (SO_PEERCRED, taken at accept: the
 * credentials of the process that connected). A TCP peer has only an address, which
 * says nothing about a local user: a port-forward or a proxy may stand in between. */
#include <arpa/inet.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "agent/internal.h"

void agent_peer_from_accept(int fd, bool is_unix, const struct sockaddr_storage *ss,
			    struct agent_peer *out)
{
	memset(out, 0, sizeof(*out));
	out->is_unix = is_unix;
	if (is_unix) {
		struct ucred cred;
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 &&
		    cl == sizeof(cred)) {
			out->has_cred = true;
			out->pid = cred.pid;
			out->uid = cred.uid;
			out->gid = cred.gid;
			snprintf(out->desc, sizeof(out->desc), "unix pid %d uid %d", (int)cred.pid,
				 (int)cred.uid);
			gid_t groups[AGENT_PEER_GROUPS_MAX];
			socklen_t gl = sizeof(groups);
			if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &gl) == 0) {
				out->ngroups = gl / sizeof(gid_t);
				memcpy(out->groups, groups, out->ngroups * sizeof(gid_t));
			}
			/* ERANGE (more groups than we keep) gives none: fewer rights, never more */
		} else {
			snprintf(out->desc, sizeof(out->desc), "unix");
		}
		return;
	}
	/* the source address without the port: what per-peer limits count by */
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		out->addr_len = 4;
		memcpy(out->addr, &sin->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		out->addr_len = 16;
		memcpy(out->addr, &sin6->sin6_addr, 16);
	}
	struct proto_addr a;
	if (proto_addr_from_sockaddr((const struct sockaddr *)ss, sizeof(*ss), &a, NULL) == 0)
		proto_addr_str(&a, out->desc, sizeof(out->desc));
	else
		snprintf(out->desc, sizeof(out->desc), "tcp");
}

/* Any local user can connect from any of 127/8 (and ::1, ::ffff:127/104): counted by
 * address, five of them would hold five peers' share of the limits. */
static bool peer_is_loopback(const struct agent_peer *p)
{
	static const uint8_t v6_loopback[16] = {[15] = 1};
	static const uint8_t v4_mapped[12] = {[10] = 0xff, [11] = 0xff};
	if (p->addr_len == 4)
		return p->addr[0] == 127;
	if (p->addr_len == 16)
		return !memcmp(p->addr, v6_loopback, 16) ||
		       (!memcmp(p->addr, v4_mapped, 12) && p->addr[12] == 127);
	return false;
}

bool agent_peer_same_source(const struct agent_peer *a, const struct agent_peer *b)
{
	if (a->is_unix != b->is_unix)
		return false;
	if (a->is_unix)
		return a->has_cred == b->has_cred && (!a->has_cred || a->uid == b->uid);
	bool a_lo = peer_is_loopback(a), b_lo = peer_is_loopback(b);
	if (a_lo || b_lo)
		return a_lo && b_lo;
	return a->addr_len == b->addr_len && !memcmp(a->addr, b->addr, a->addr_len);
}

void agent_peer_key(const struct agent_peer *peer, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];
	if (peer->is_unix && peer->has_cred)
		snprintf(buf, len, "uid %u", (unsigned)peer->uid);
	else if (peer->is_unix)
		snprintf(buf, len, "unix");
	else if (peer_is_loopback(peer))
		snprintf(buf, len, "loopback");
	else if ((peer->addr_len == 4 || peer->addr_len == 16) &&
		 inet_ntop(peer->addr_len == 4 ? AF_INET : AF_INET6, peer->addr, addr,
			   sizeof(addr)))
		snprintf(buf, len, "%s", addr);
	else
		snprintf(buf, len, "tcp");
}

/* Every uid of the process (real, effective, saved, filesystem) from /proc/PID/status:
 * a setuid program that dropped or raised one of them is not wholly the caller's. */
static int process_uids(pid_t pid, uid_t uids[4], struct hm_err *err)
{
	struct hm_proc_field uid = {.key = "Uid"};
	if (hm_proc_status(pid, &uid, 1) < 0 && errno == ESRCH)
		return hm_err_set(err, ESRCH, "process %d: no such process", (int)pid);
	unsigned long v[4];
	if (!uid.found || sscanf(uid.value, "%lu %lu %lu %lu", &v[0], &v[1], &v[2], &v[3]) != 4)
		return hm_err_plain(err, EIO, "process %d: no Uid line in /proc/%d/status",
				    (int)pid, (int)pid);
	for (int i = 0; i < 4; i++)
		uids[i] = (uid_t)v[i];
	return 0;
}

int agent_peer_may_target_pid(const struct agent_peer *peer, pid_t pid, bool allow_any_pid,
			      struct hm_err *err)
{
	if (allow_any_pid)
		return 0;
	if (!peer->is_unix)
		return hm_err_plain(err, EPERM,
				    "pid/%d: a client over TCP may target pods and containers only "
				    "(the agent cannot tell which user it is; trace-agent "
				    "--allow-any-pid lifts this)",
				    (int)pid);
	if (!peer->has_cred)
		return hm_err_plain(err, EPERM, "pid/%d: the client's credentials are unknown",
				    (int)pid);
	if (peer->uid == 0)
		return 0;
	uid_t uids[4];
	if (process_uids(pid, uids, err) < 0)
		return -1;
	for (int i = 0; i < 4; i++) {
		if (uids[i] != peer->uid)
			return hm_err_plain(
			    err, EPERM,
			    "pid/%d: permission denied: the process runs as uid %lu, "
			    "the client is uid %lu (only root may target another "
			    "user's process)",
			    (int)pid, (unsigned long)uids[i], (unsigned long)peer->uid);
	}
	return 0;
}

bool agent_peer_needs_confining(const struct agent_peer *peer, bool allow_any_pid)
{
	return !allow_any_pid && peer->is_unix && !(peer->has_cred && peer->uid == 0);
}

static __thread bool thread_confined;

bool agent_thread_confined(void)
{
	return thread_confined;
}

int agent_peer_confine_thread(const struct agent_peer *peer, struct hm_err *err)
{
	if (!peer->is_unix || !peer->has_cred)
		return hm_err_plain(err, EPERM, "the client's credentials are unknown");
	/* glibc's setgroups/setfsuid... would change every thread of the agent (nptl's
	 * setxid broadcast) or may in a later version: the raw syscalls change this one */
	if (syscall(SYS_setgroups, (size_t)peer->ngroups, peer->groups) < 0)
		return hm_err_errno(err, "setgroups for uid %u", (unsigned)peer->uid);
	syscall(SYS_setfsgid, peer->gid);
	if ((gid_t)syscall(SYS_setfsgid, (gid_t)-1) != peer->gid)
		return hm_err_plain(err, EPERM, "setfsgid %u failed", (unsigned)peer->gid);
	/* from 0 to non-zero this also clears the file capabilities from the effective set */
	syscall(SYS_setfsuid, peer->uid);
	if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != peer->uid)
		return hm_err_plain(err, EPERM, "setfsuid %u failed", (unsigned)peer->uid);
	/* nothing left: not CAP_SYS_ADMIN, not CAP_DAC_* through faccessat's real-id check
	 * (which takes the permitted set when the real uid is 0) */
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return hm_err_errno(err, "drop the capabilities of the session's thread");
	thread_confined = true;
	return 0;
}
