/* Addresses, the program's sockets as trace-run sees them, and the table of redirected
 * sockets (by inode), with sock_diag to notice when the program closed one. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>

#include "tracer/redirect/net_internal.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* Linux 6.9 */
#endif

/* ---- addresses ---- */

bool trace_net_addr_is_v4(const struct net_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return true;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
	return a->ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr);
}

void trace_net_addr_key(const struct net_addr *a, uint8_t key[16], uint16_t *port)
{
	memset(key, 0, 16);
	*port = 0;
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &s4->sin_addr, 4);
		*port = ntohs(s4->sin_port);
	} else if (a->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;
		memcpy(key, &s6->sin6_addr, 16);
		*port = ntohs(s6->sin6_port);
	}
}

bool trace_net_addr_equal(const struct net_addr *a, const struct net_addr *b)
{
	uint8_t ka[16], kb[16];
	uint16_t pa, pb;
	trace_net_addr_key(a, ka, &pa);
	trace_net_addr_key(b, kb, &pb);
	return pa == pb && !memcmp(ka, kb, 16);
}

uint16_t trace_net_addr_port(const struct net_addr *a)
{
	uint8_t k[16];
	uint16_t port;
	trace_net_addr_key(a, k, &port);
	return port;
}

void trace_net_addr_for_family(const struct net_addr *a, int family, struct net_addr *out)
{
	uint8_t key[16];
	uint16_t port;
	if (a->ss.ss_family == family) {
		*out = *a;
		return;
	}
	trace_net_addr_key(a, key, &port);
	memset(out, 0, sizeof(*out));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		memcpy(&s6->sin6_addr, key, 16);
		out->len = sizeof(*s6);
	} else {
		/* an IPv6 peer cannot be shown to an AF_INET socket; never happens, as
		 * such a socket cannot have one */
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, key + 12, 4);
		out->len = sizeof(*s4);
	}
}

int trace_net_addr_from_proto(const struct proto_addr *p, struct net_addr *out)
{
	memset(out, 0, sizeof(*out));
	out->len = proto_addr_to_sockaddr(p, &out->ss);
	return out->len ? 0 : -1;
}

int trace_net_addr_to_proto(const struct net_addr *a, struct proto_addr *out, struct hm_err *err)
{
	return proto_addr_from_sockaddr((const struct sockaddr *)&a->ss, a->len, out, err);
}

const char *trace_net_addr_str(const struct net_addr *a, char *buf, size_t len)
{
	struct proto_addr p;
	struct hm_err err;
	if (trace_net_addr_to_proto(a, &p, &err) < 0) {
		snprintf(buf, len, "(family %d)", a->ss.ss_family);
		return buf;
	}
	return proto_addr_str(&p, buf, len);
}

void trace_net_loopback(const struct net_state *st, int family, uint16_t port, struct net_addr *out)
{
	memset(out, 0, sizeof(*out));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		if (st->have6) {
			s6->sin6_addr = in6addr_loopback;
		} else {
			s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xff;
			s6->sin6_addr.s6_addr[12] = 127;
			s6->sin6_addr.s6_addr[15] = 1;
		}
		out->len = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		out->len = sizeof(*s4);
	}
}

int trace_net_read_addr(const struct tracer_call *call, uint64_t addr, uint64_t len,
			struct net_addr *out)
{
	struct hm_err err;
	memset(out, 0, sizeof(*out));
	if (!addr || len < sizeof(sa_family_t) || len > sizeof(out->ss))
		return -1;
	if (tracer_read_mem(call, addr, &out->ss, (size_t)len, &err) < 0)
		return -1;
	out->len = (socklen_t)len;
	if (out->ss.ss_family == AF_INET && len < sizeof(struct sockaddr_in))
		return -1;
	if (out->ss.ss_family == AF_INET6 && len < sizeof(struct sockaddr_in6))
		return -1;
	return 0;
}

int trace_net_write_addr(const struct tracer_call *call, const struct net_addr *addr, uint64_t buf,
			 uint64_t len_ptr, struct hm_err *err)
{
	if (!len_ptr)
		return 0;
	socklen_t room;
	if (tracer_read_mem(call, len_ptr, &room, sizeof(room), err) < 0)
		return -1;
	if ((int)room < 0)
		return hm_err_set(err, EINVAL, "negative address length");
	size_t n = room < addr->len ? room : addr->len;
	if (n && (!buf || tracer_write_mem(call, buf, &addr->ss, n, err) < 0))
		return buf ? -1 : hm_err_set(err, EFAULT, "NULL address buffer");
	socklen_t full = addr->len;
	return tracer_write_mem(call, len_ptr, &full, sizeof(full), err);
}

/* ---- the program's sockets ---- */

static pid_t tgid_of(pid_t tid)
{
	struct hm_proc_field tgid = {.key = "Tgid"};
	return hm_proc_status(tid, &tgid, 1) == 0 ? (pid_t)atoi(tgid.value) : -1;
}

int trace_net_getfd(const struct tracer_call *call, int fd, struct hm_err *err)
{
	/* a thread pidfd reaches the calling thread's own fd table (6.9+); before that,
	 * the thread group's, which is the same unless the thread unshared its files */
	hm_cleanup_close int pidfd = (int)syscall(SYS_pidfd_open, call->pid, PIDFD_THREAD);
	if (pidfd < 0 && errno == EINVAL) {
		pid_t tgid = tgid_of(call->pid);
		if (tgid > 0)
			pidfd = (int)syscall(SYS_pidfd_open, tgid, 0);
	}
	if (pidfd < 0)
		return hm_err_errno(err, "pidfd_open %d", call->pid);
	int dup = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	if (dup < 0)
		return hm_err_errno(err, "pidfd_getfd %d of %d", fd, call->pid);
	/* the pid was the caller's while the call is pending: not a recycled one */
	if (!tracer_call_valid(call)) {
		close(dup);
		return hm_err_set(err, ESRCH, "the syscall of %d is gone", call->pid);
	}
	return dup;
}

ino_t trace_net_fd_ino(const struct tracer_call *call, int fd)
{
	char path[64], link[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", call->pid, fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = '\0';
	unsigned long long ino;
	if (sscanf(link, "socket:[%llu]", &ino) != 1)
		return 0;
	return (ino_t)ino;
}

/* ---- the table ---- */

static size_t slot_of(ino_t ino)
{
	return (size_t)(ino * 0x9E3779B97F4A7C15ULL >> 54) % 1024;
}

struct net_sock *trace_net_table_find(struct net_state *st, ino_t ino)
{
	for (struct net_sock *ns = st->table[slot_of(ino)]; ns; ns = ns->next)
		if (ns->ino == ino)
			return ns;
	return NULL;
}

void trace_net_table_insert(struct net_state *st, struct net_sock *ns)
{
	size_t slot = slot_of(ns->ino);
	ns->next = st->table[slot];
	st->table[slot] = ns;
	if (ns->type == SOCK_STREAM)
		st->n_tcp++;
	else
		st->n_udp++;
}

void trace_net_table_replace(struct net_state *st, struct net_sock *ns)
{
	struct net_sock *old = trace_net_table_find(st, ns->ino);
	if (old) { /* a socket of the same inode before: that one is closed */
		trace_net_table_remove(st, old);
		trace_net_sock_free(st, old);
	}
	trace_net_table_insert(st, ns);
}

void trace_net_table_put(struct net_state *st, struct net_sock *ns)
{
	pthread_mutex_lock(&st->lock);
	trace_net_table_replace(st, ns);
	pthread_mutex_unlock(&st->lock);
}

void trace_net_table_remove(struct net_state *st, struct net_sock *ns)
{
	for (struct net_sock **pp = &st->table[slot_of(ns->ino)]; *pp; pp = &(*pp)->next) {
		if (*pp == ns) {
			*pp = ns->next;
			if (ns->type == SOCK_STREAM)
				st->n_tcp--;
			else
				st->n_udp--;
			return;
		}
	}
}

void trace_net_sock_free(struct net_state *st, struct net_sock *ns)
{
	(void)st;
	if (ns->type == SOCK_DGRAM) {
		while (ns->proxies) {
			struct net_proxy *p = ns->proxies;
			ns->proxies = p->next;
			close(p->fd); /* also leaves the epoll set */
			free(p);
		}
		if (ns->stream >= 0)
			close(ns->stream);
		proto_frame_reader_release(&ns->reader);
	}
	free(ns);
}

/* ---- sock_diag: is the program's socket still there? ---- */

static void diag_fill(const struct net_addr *a, __be32 out[4], __be16 *port)
{
	uint8_t key[16];
	uint16_t p;
	trace_net_addr_key(a, key, &p);
	*port = htons(p);
	memcpy(out, key, 16);
}

bool trace_net_sock_alive(struct net_state *st, const struct net_sock *ns)
{
	return trace_net_sock_alive_fd(st->diag_fd, ns);
}

bool trace_net_sock_alive_fd(int diag_fd, const struct net_sock *ns)
{
	if (diag_fd < 0)
		return true;
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 req;
	} msg;
	memset(&msg, 0, sizeof(msg));
	msg.nh.nlmsg_len = sizeof(msg);
	msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	msg.nh.nlmsg_flags = NLM_F_REQUEST;
	msg.nh.nlmsg_seq = (uint32_t)ns->ino;
	/* traffic between v4-mapped addresses is IPv4 traffic, hashed and found as such */
	bool v4 = trace_net_addr_is_v4(&ns->prog);
	msg.req.sdiag_family = v4 ? AF_INET : AF_INET6;
	msg.req.sdiag_protocol = ns->type == SOCK_STREAM ? IPPROTO_TCP : IPPROTO_UDP;
	msg.req.idiag_states = ~0U;
	msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	/* TCP looks the socket up by its own address (src) and its peer (dst); UDP the
	 * other way round, as the kernel's udp_dump_one does */
	const struct net_addr *self = &ns->prog, *peer = &ns->diag_peer;
	if (ns->type == SOCK_DGRAM) {
		self = &ns->diag_peer;
		peer = &ns->prog;
	}
	if (v4) {
		uint8_t k[16];
		uint16_t p;
		trace_net_addr_key(self, k, &p);
		memcpy(&msg.req.id.idiag_src[0], k + 12, 4);
		msg.req.id.idiag_sport = htons(p);
		trace_net_addr_key(peer, k, &p);
		memcpy(&msg.req.id.idiag_dst[0], k + 12, 4);
		msg.req.id.idiag_dport = htons(p);
	} else {
		diag_fill(self, msg.req.id.idiag_src, &msg.req.id.idiag_sport);
		diag_fill(peer, msg.req.id.idiag_dst, &msg.req.id.idiag_dport);
	}
	struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
	if (sendto(diag_fd, &msg, sizeof(msg), 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		return true;
	union {
		struct nlmsghdr nh;
		char buf[8192];
	} resp;
	for (;;) {
		ssize_t n = recv(diag_fd, resp.buf, sizeof(resp.buf), 0);
		if (n < 0)
			return true; /* cannot tell: keep it */
		for (struct nlmsghdr *nh = &resp.nh; NLMSG_OK(nh, (size_t)n);
		     nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_seq != msg.nh.nlmsg_seq)
				continue; /* a late answer to an earlier question */
			if (nh->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(nh);
				return e->error != -ENOENT;
			}
			if (nh->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
				const struct inet_diag_msg *d = NLMSG_DATA(nh);
				/* 0: an orphan the program closed, still finishing its FIN */
				return d->idiag_inode == ns->ino;
			}
		}
	}
}

int trace_net_socket_family(int fd)
{
	int family = 0;
	socklen_t len = sizeof(family);
	getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len);
	return family;
}
