/* Redirected UDP: one agent UDP stream per program socket, one loopback proxy socket
 * per remote peer, and a thread that moves datagrams between them; recvfrom/recvmsg on
 * redirected sockets are done here so that the program sees each datagram's real
 * source. DNS answers on the way are recorded for hostname filters. See
 * net_internal.h. */
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "tracer/redirect/net_internal.h"

#define DGRAM_MAX 65536
#define GC_EVERY_MS 2000
#define IDLE_CHECK_MS 3000 /* entries quiet for this long are checked with sock_diag */
#define MANY_UDP 64	   /* more UDP entries than this: collect often */
#define IOV_MAX_PROGRAM 1024
#define CONTROL_MAX 4096

/* epoll data: a proxy has the low bit set, a net_sock not, the wake-up fd is 0 */
#define TAG_PROXY 1ULL

static void ep_add(struct net_state *st, int fd, uint64_t data)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
	if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		hm_warn("epoll_ctl: %s", strerror(errno));
}

/* ---- entries and proxies (st->lock held) ---- */

static void sock_bury(struct net_state *st, struct net_sock *ns);

static struct net_proxy *proxy_find_remote(struct net_sock *ns, const struct net_addr *remote)
{
	for (struct net_proxy *p = ns->proxies; p; p = p->next)
		if (trace_net_addr_equal(&p->remote, remote))
			return p;
	return NULL;
}

static struct net_proxy *proxy_find_local(struct net_sock *ns, const struct net_addr *local)
{
	for (struct net_proxy *p = ns->proxies; p; p = p->next)
		if (trace_net_addr_equal(&p->local, local))
			return p;
	return NULL;
}

static struct net_proxy *proxy_get(struct net_state *st, struct net_sock *ns,
				   const struct net_addr *remote, struct hm_err *err)
{
	struct net_addr peer;
	trace_net_addr_for_family(remote, ns->family, &peer);
	struct net_proxy *p = proxy_find_remote(ns, &peer);
	if (p)
		return p;
	hm_cleanup_close int fd = socket(ns->family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return hm_err_errno(err, "proxy socket"), NULL;
	struct net_addr local;
	trace_net_loopback(st, ns->family, 0, &local);
	if (bind(fd, (struct sockaddr *)&local.ss, local.len) < 0)
		return hm_err_errno(err, "bind proxy"), NULL;
	local.len = sizeof(local.ss);
	if (getsockname(fd, (struct sockaddr *)&local.ss, &local.len) < 0)
		return hm_err_errno(err, "getsockname"), NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return hm_err_set(err, ENOMEM, "proxy"), NULL;
	p->fd = hm_steal_fd(&fd);
	p->local = local;
	p->remote = peer;
	p->sock = ns;
	p->next = ns->proxies;
	ns->proxies = p;
	ep_add(st, p->fd, (uint64_t)(uintptr_t)p | TAG_PROXY);
	return p;
}

static bool addr_is_any(const struct net_addr *a)
{
	uint8_t k[16];
	uint16_t port;
	trace_net_addr_key(a, k, &port);
	static const uint8_t any4[16] = {[10] = 0xff, [11] = 0xff};
	static const uint8_t any6[16] = {0};
	return !memcmp(k, any4, 16) || !memcmp(k, any6, 16);
}

/* Where datagrams for the program's socket go: its own address, or loopback when it is
 * bound to the wildcard. An unbound socket is bound as its first sendto would. */
static int prog_addr(struct net_state *st, int dup, int family, struct net_addr *out,
		     struct hm_err *err)
{
	out->len = sizeof(out->ss);
	if (getsockname(dup, (struct sockaddr *)&out->ss, &out->len) < 0)
		return hm_err_errno(err, "getsockname");
	if (trace_net_addr_port(out) == 0) {
		struct net_addr any;
		memset(&any, 0, sizeof(any));
		any.ss.ss_family = (sa_family_t)family;
		any.len =
		    family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		if (bind(dup, (struct sockaddr *)&any.ss, any.len) < 0 && errno != EINVAL)
			return hm_err_errno(err, "bind the program's socket");
		out->len = sizeof(out->ss);
		if (getsockname(dup, (struct sockaddr *)&out->ss, &out->len) < 0)
			return hm_err_errno(err, "getsockname");
	}
	if (addr_is_any(out))
		trace_net_loopback(st, family, trace_net_addr_port(out), out);
	return 0;
}

/* A new entry for the program's socket dup, with the agent's UDP stream (taken). */
static struct net_sock *udp_sock_new(struct net_state *st, int dup, ino_t ino, int stream,
				     struct hm_err *err)
{
	struct net_sock *ns = calloc(1, sizeof(*ns));
	if (!ns) {
		close(stream);
		return hm_err_set(err, ENOMEM, "socket entry"), NULL;
	}
	ns->ino = ino;
	ns->type = SOCK_DGRAM;
	ns->family = trace_net_socket_family(dup);
	ns->stream = stream;
	ns->last_ms = hm_now_ms();
	proto_frame_reader_init(&ns->reader, PROTO_DATAGRAM_MAX + 512);
	fcntl(stream, F_SETFL, fcntl(stream, F_GETFL) | O_NONBLOCK);
	if (prog_addr(st, dup, ns->family, &ns->prog, err) < 0) {
		trace_net_sock_free(st, ns);
		return NULL;
	}
	trace_net_loopback(st, ns->family, 9, &ns->diag_peer); /* any source reaches it */
	struct net_sock *old = trace_net_table_find(st, ino);
	if (old) /* a closed socket's inode, reused */
		sock_bury(st, old);
	trace_net_table_insert(st, ns);
	ep_add(st, stream, (uint64_t)(uintptr_t)ns);
	st->redirected_udp++;
	return ns;
}

/* Send one datagram to dst through the agent (st->lock held). */
static int udp_send(struct net_sock *ns, const struct net_addr *dst, const void *data, size_t len,
		    struct hm_err *err)
{
	struct proto_addr pdst;
	if (trace_net_addr_to_proto(dst, &pdst, err) < 0)
		return -1;
	ns->last_ms = hm_now_ms();
	return client_udp_send(ns->stream, &pdst, data, len, err);
}

/* Connect the program's socket to dst's proxy (st->lock held). */
static struct tracer_result connect_via_proxy(struct net_state *st, struct net_sock *ns, int dup,
					      const struct net_addr *dst)
{
	struct hm_err err = {0};
	struct net_proxy *p = proxy_get(st, ns, dst, &err);
	if (!p) {
		hm_warn("UDP connect: %s", err.msg);
		return tracer_error(err.code ? err.code : ENOBUFS);
	}
	if (connect(dup, (struct sockaddr *)&p->local.ss, p->local.len) < 0)
		return tracer_error(errno);
	ns->connected = true;
	ns->peer = p->remote;
	ns->diag_peer = p->local;
	struct net_addr prog = {.len = sizeof(prog.ss)};
	if (getsockname(dup, (struct sockaddr *)&prog.ss, &prog.len) == 0)
		ns->prog = prog;
	return tracer_return(0);
}

/* ---- connect ---- */

static uint8_t proto_family(int family)
{
	return family == AF_INET6 ? PROTO_AF_INET6 : PROTO_AF_INET;
}

static void udp_open_work(struct net_job *job)
{
	job->result_fd = client_udp_open(job->st->s->client, job->family, NULL, &job->err);
}

/* The entry for job's socket, made with the stream the job opened when there is none
 * (st->lock held). */
static struct net_sock *job_sock(struct net_job *job)
{
	struct net_state *st = job->st;
	struct net_sock *ns = trace_net_table_find(st, job->ino);
	if (ns && ns->type == SOCK_DGRAM)
		return ns;
	if (job->result_fd < 0)
		return NULL;
	ns = udp_sock_new(st, job->dup, job->ino, hm_steal_fd(&job->result_fd), &job->err);
	if (!ns)
		hm_warn("UDP through the pod: %s", job->err.msg);
	return ns;
}

/* the session's end is said once (trace_session_lost), not once per datagram */
static int udp_errno(struct net_state *st, const struct hm_err *err)
{
	if (trace_session_lost(st->s, NULL))
		hm_debug("UDP through the agent: %s", err->msg);
	else
		hm_warn("UDP through the agent: %s", err->msg);
	return ENETUNREACH;
}

static struct tracer_result udp_connect_finish(struct net_job *job, const struct tracer_call *call)
{
	(void)call;
	struct net_state *st = job->st;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = job_sock(job);
	struct tracer_result res = ns ? connect_via_proxy(st, ns, job->dup, &job->dst)
				      : tracer_error(udp_errno(job->st, &job->err));
	pthread_mutex_unlock(&st->lock);
	return res;
}

struct tracer_result trace_net_udp_connect(struct net_state *st, const struct tracer_call *call,
					   int dup, ino_t ino, const struct net_addr *dst)
{
	(void)call;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, ino);
	if (ns && ns->type == SOCK_DGRAM) {
		struct tracer_result res = connect_via_proxy(st, ns, dup, dst);
		pthread_mutex_unlock(&st->lock);
		close(dup);
		return res;
	}
	pthread_mutex_unlock(&st->lock);
	struct net_job *job = trace_net_job_new(st, dup, ino);
	if (!job) {
		close(dup);
		return tracer_error(ENOMEM);
	}
	job->dst = *dst;
	job->family = proto_family(trace_net_socket_family(dup));
	job->work = udp_open_work;
	job->finish = udp_connect_finish;
	return trace_net_job_defer(job);
}

/* ---- datagrams with a destination ---- */

static struct tracer_result udp_sendto_finish(struct net_job *job, const struct tracer_call *call)
{
	(void)call;
	struct net_state *st = job->st;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = job_sock(job);
	struct tracer_result res;
	if (!ns)
		res = tracer_error(udp_errno(job->st, &job->err));
	else if (udp_send(ns, &job->dst, job->data, job->data_len, &job->err) < 0)
		res = tracer_error(udp_errno(job->st, &job->err));
	else
		res = tracer_return((int64_t)job->data_len);
	pthread_mutex_unlock(&st->lock);
	return res;
}

/* The program's socket fd as ours when it is a UDP socket that can send to dst (any
 * destination when NULL); -1 otherwise (the kernel handles the call). */
static int udp_dup(const struct tracer_call *call, int fd, const struct net_addr *dst, ino_t *ino)
{
	struct hm_err err;
	int dup = trace_net_getfd(call, fd, &err);
	if (dup < 0)
		return -1;
	struct stat sb;
	int type = 0, proto = 0;
	socklen_t l1 = sizeof(type), l2 = sizeof(proto);
	int family = trace_net_socket_family(dup);
	if (fstat(dup, &sb) < 0 || !S_ISSOCK(sb.st_mode) ||
	    getsockopt(dup, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 ||
	    getsockopt(dup, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) < 0 || type != SOCK_DGRAM ||
	    proto != IPPROTO_UDP || (family != AF_INET && family != AF_INET6) ||
	    (dst && family == AF_INET && dst->ss.ss_family != AF_INET)) {
		close(dup);
		return -1;
	}
	*ino = sb.st_ino;
	return dup;
}

/* Send data (taken) to dst from the program's socket fd, through the agent. */
static struct tracer_result send_datagram(struct net_state *st, const struct tracer_call *call,
					  int fd, void *data, size_t len,
					  const struct net_addr *dst)
{
	ino_t ino;
	int dup = udp_dup(call, fd, dst, &ino);
	if (dup < 0) {
		free(data);
		return tracer_continue();
	}
	struct hm_err err = {0};
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, ino);
	if (ns && ns->type == SOCK_DGRAM) {
		int r = udp_send(ns, dst, data, len, &err);
		pthread_mutex_unlock(&st->lock);
		close(dup);
		free(data);
		return r < 0 ? tracer_error(udp_errno(st, &err)) : tracer_return((int64_t)len);
	}
	pthread_mutex_unlock(&st->lock);
	struct net_job *job = trace_net_job_new(st, dup, ino);
	if (!job) {
		close(dup);
		free(data);
		return tracer_error(ENOMEM);
	}
	job->dst = *dst;
	job->data = data;
	job->data_len = len;
	job->family = proto_family(trace_net_socket_family(dup));
	job->work = udp_open_work;
	job->finish = udp_sendto_finish;
	return trace_net_job_defer(job);
}

struct tracer_result trace_net_udp_sendto(struct net_state *st, const struct tracer_call *call,
					  int fd, uint64_t buf, uint64_t len,
					  const struct net_addr *dst)
{
	if (len > PROTO_DATAGRAM_MAX)
		return tracer_error(EMSGSIZE);
	void *data = malloc(len ? len : 1);
	if (!data)
		return tracer_error(ENOMEM);
	struct hm_err err;
	if (tracer_read_mem(call, buf, data, len, &err) < 0) {
		free(data);
		return tracer_error(EFAULT);
	}
	return send_datagram(st, call, fd, data, len, dst);
}

/* Gather a msghdr's iovecs from the program: the datagram, at most 64 KiB. */
static int gather(const struct tracer_call *call, const struct msghdr *m, void **out, size_t *len,
		  int *error)
{
	*out = NULL;
	*len = 0;
	if (m->msg_iovlen > IOV_MAX_PROGRAM)
		return *error = EMSGSIZE, -1;
	struct hm_err err;
	hm_cleanup_free struct iovec *iov = calloc(m->msg_iovlen ? m->msg_iovlen : 1, sizeof(*iov));
	if (!iov)
		return *error = ENOMEM, -1;
	if (tracer_read_mem(call, (uint64_t)(uintptr_t)m->msg_iov, iov,
			    m->msg_iovlen * sizeof(*iov), &err) < 0)
		return *error = EFAULT, -1;
	size_t total = 0;
	for (size_t i = 0; i < m->msg_iovlen; i++) {
		total += iov[i].iov_len;
		if (total > PROTO_DATAGRAM_MAX)
			return *error = EMSGSIZE, -1;
	}
	uint8_t *data = malloc(total ? total : 1);
	if (!data)
		return *error = ENOMEM, -1;
	size_t off = 0;
	for (size_t i = 0; i < m->msg_iovlen; i++) {
		if (tracer_read_mem(call, (uint64_t)(uintptr_t)iov[i].iov_base, data + off,
				    iov[i].iov_len, &err) < 0) {
			free(data);
			return *error = EFAULT, -1;
		}
		off += iov[i].iov_len;
	}
	*out = data;
	*len = total;
	return 0;
}

static bool remote_udp(struct net_state *st, const struct net_addr *dst)
{
	return st->s->net && (dst->ss.ss_family == AF_INET || dst->ss.ss_family == AF_INET6) &&
	       policy_net_decide(st->s->net, POLICY_NET_UDP, (const struct sockaddr *)&dst->ss,
				 dst->len, NULL) == POLICY_NET_REMOTE;
}

struct tracer_result trace_net_udp_sendmsg(struct net_state *st, const struct tracer_call *call)
{
	struct msghdr m;
	struct hm_err err;
	if (tracer_read_mem(call, call->args[1], &m, sizeof(m), &err) < 0 || !m.msg_name)
		return tracer_continue();
	struct net_addr dst;
	if (trace_net_read_addr(call, (uint64_t)(uintptr_t)m.msg_name, m.msg_namelen, &dst) < 0 ||
	    !remote_udp(st, &dst))
		return tracer_continue();
	void *data;
	size_t len;
	int error;
	if (gather(call, &m, &data, &len, &error) < 0)
		return tracer_error(error);
	return send_datagram(st, call, (int)call->args[0], data, len, &dst);
}

/* sendmmsg with destinations (glibc sends its A and AAAA queries with one sendmmsg,
 * without destinations, on a connected socket: that goes to the kernel as is). Messages
 * to REMOTE destinations go through the agent, the others through the program's socket
 * from here; the entry is made synchronously in this rare case. */
struct tracer_result trace_net_udp_sendmmsg(struct net_state *st, const struct tracer_call *call)
{
	unsigned vlen = (unsigned)call->args[2];
	if (vlen > IOV_MAX_PROGRAM)
		vlen = IOV_MAX_PROGRAM;
	if (!vlen)
		return tracer_continue();
	struct hm_err err = {0};
	hm_cleanup_free struct mmsghdr *msgs = calloc(vlen, sizeof(*msgs));
	if (!msgs || tracer_read_mem(call, call->args[1], msgs, vlen * sizeof(*msgs), &err) < 0)
		return tracer_continue();
	bool any = false;
	for (unsigned i = 0; i < vlen && !any; i++) {
		struct net_addr dst;
		any = msgs[i].msg_hdr.msg_name &&
		      trace_net_read_addr(call, (uint64_t)(uintptr_t)msgs[i].msg_hdr.msg_name,
					  msgs[i].msg_hdr.msg_namelen, &dst) == 0 &&
		      remote_udp(st, &dst);
	}
	if (!any)
		return tracer_continue();
	ino_t ino;
	hm_cleanup_close int dup = udp_dup(call, (int)call->args[0], NULL, &ino);
	if (dup < 0)
		return tracer_continue();
	unsigned sent = 0;
	int first_error = 0;
	for (unsigned i = 0; i < vlen; i++) {
		struct msghdr *m = &msgs[i].msg_hdr;
		struct net_addr dst = {0};
		bool named =
		    m->msg_name && trace_net_read_addr(call, (uint64_t)(uintptr_t)m->msg_name,
						       m->msg_namelen, &dst) == 0;
		void *data;
		size_t len;
		int error = 0;
		if (gather(call, m, &data, &len, &error) < 0) {
			first_error = error;
			break;
		}
		pthread_mutex_lock(&st->lock);
		struct net_sock *ns = trace_net_table_find(st, ino);
		bool via_agent = named ? remote_udp(st, &dst) : ns && ns->connected;
		if (via_agent && !named)
			dst = ns->peer;
		if (via_agent && !ns) {
			pthread_mutex_unlock(&st->lock);
			int stream = client_udp_open(
			    st->s->client, proto_family(trace_net_socket_family(dup)), NULL, &err);
			pthread_mutex_lock(&st->lock);
			ns = trace_net_table_find(st, ino);
			if (!ns && stream >= 0)
				ns = udp_sock_new(st, dup, ino, stream, &err);
			else if (stream >= 0)
				close(stream);
			if (!ns)
				error = udp_errno(st, &err);
		}
		if (!error && via_agent && udp_send(ns, &dst, data, len, &err) < 0)
			error = udp_errno(st, &err);
		pthread_mutex_unlock(&st->lock);
		if (!error && !via_agent) {
			struct iovec v = {.iov_base = data, .iov_len = len};
			struct msghdr local = {.msg_name = named ? &dst.ss : NULL,
					       .msg_namelen = named ? dst.len : 0,
					       .msg_iov = &v,
					       .msg_iovlen = 1};
			if (sendmsg(dup, &local, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
				error = errno;
		}
		free(data);
		if (error) {
			first_error = error;
			break;
		}
		unsigned int n = (unsigned int)len;
		uint64_t at =
		    call->args[1] + i * sizeof(struct mmsghdr) + offsetof(struct mmsghdr, msg_len);
		tracer_write_mem(call, at, &n, sizeof(n), &err);
		sent++;
	}
	if (!sent)
		return tracer_error(first_error ? first_error : EIO);
	return tracer_return(sent);
}

/* ---- receiving on a redirected socket ---- */

struct recv_ctx {
	struct net_state *st;
	int dup;
	ino_t ino;
	int flags;
	bool nonblock;
};

static void recv_ctx_free(void *arg)
{
	struct recv_ctx *c = arg;
	close(c->dup);
	free(c);
}

/* The datagram's source as the program must see it: the peer a proxy stands for. */
static void real_source(struct recv_ctx *c, struct net_addr *src)
{
	struct net_state *st = c->st;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, c->ino);
	struct net_proxy *p = ns ? proxy_find_local(ns, src) : NULL;
	if (p)
		*src = p->remote;
	pthread_mutex_unlock(&st->lock);
}

static struct tracer_result recv_resume(const struct tracer_call *call, void *arg);

/* recvfrom(fd, buf, len, flags, src, srclen) or recvmsg(fd, msg, flags) once, on our
 * duplicate; results written into the program's buffers. */
static struct tracer_result recv_attempt(struct recv_ctx *c, const struct tracer_call *call)
{
	bool is_msg = call->nr == SYS_recvmsg;
	struct hm_err err;
	struct msghdr pm = {0};
	hm_cleanup_free struct iovec *piov = NULL;
	size_t cap = 0;
	if (is_msg) {
		if (tracer_read_mem(call, call->args[1], &pm, sizeof(pm), &err) < 0 ||
		    pm.msg_iovlen > IOV_MAX_PROGRAM) {
			recv_ctx_free(c);
			return tracer_error(pm.msg_iovlen > IOV_MAX_PROGRAM ? EMSGSIZE : EFAULT);
		}
		piov = calloc(pm.msg_iovlen ? pm.msg_iovlen : 1, sizeof(*piov));
		if (!piov || tracer_read_mem(call, (uint64_t)(uintptr_t)pm.msg_iov, piov,
					     pm.msg_iovlen * sizeof(*piov), &err) < 0) {
			recv_ctx_free(c);
			return tracer_error(piov ? EFAULT : ENOMEM);
		}
		for (size_t i = 0; i < pm.msg_iovlen; i++)
			cap += piov[i].iov_len;
	} else {
		cap = call->args[2];
	}
	if (cap > DGRAM_MAX)
		cap = DGRAM_MAX;
	hm_cleanup_free uint8_t *buf = malloc(cap ? cap : 1);
	size_t ctl_cap =
	    is_msg ? (pm.msg_controllen < CONTROL_MAX ? pm.msg_controllen : CONTROL_MAX) : 0;
	hm_cleanup_free uint8_t *ctl = ctl_cap ? calloc(1, ctl_cap) : NULL;
	if (!buf || (ctl_cap && !ctl)) {
		recv_ctx_free(c);
		return tracer_error(ENOMEM);
	}
	struct net_addr src;
	memset(&src, 0, sizeof(src));
	struct iovec v = {.iov_base = buf, .iov_len = cap};
	struct msghdr m = {.msg_name = &src.ss,
			   .msg_namelen = sizeof(src.ss),
			   .msg_iov = &v,
			   .msg_iovlen = 1,
			   .msg_control = ctl,
			   .msg_controllen = ctl_cap};
	ssize_t n = recvmsg(c->dup, &m, (c->flags & ~MSG_WAITALL) | MSG_DONTWAIT);
	if (n < 0) {
		int e = errno;
		if ((e == EAGAIN || e == EWOULDBLOCK) && !c->nonblock)
			return tracer_defer(c->dup, recv_resume, recv_ctx_free, c);
		recv_ctx_free(c);
		return tracer_error(e);
	}
	src.len = m.msg_namelen;
	real_source(c, &src);
	size_t got = (size_t)n < cap ? (size_t)n : cap;
	int failed = 0;
	if (is_msg) {
		size_t off = 0;
		for (size_t i = 0; i < pm.msg_iovlen && off < got && !failed; i++) {
			size_t k = piov[i].iov_len < got - off ? piov[i].iov_len : got - off;
			failed = tracer_write_mem(call, (uint64_t)(uintptr_t)piov[i].iov_base,
						  buf + off, k, &err);
			off += k;
		}
		if (pm.msg_name && !failed) {
			size_t k = pm.msg_namelen < src.len ? pm.msg_namelen : src.len;
			failed = tracer_write_mem(call, (uint64_t)(uintptr_t)pm.msg_name, &src.ss,
						  k, &err);
			pm.msg_namelen = src.len; /* without a buffer the kernel leaves it alone */
		}
		if (m.msg_controllen && !failed)
			failed = tracer_write_mem(call, (uint64_t)(uintptr_t)pm.msg_control, ctl,
						  m.msg_controllen, &err);
		pm.msg_controllen = m.msg_controllen;
		pm.msg_flags = m.msg_flags;
		if (!failed)
			failed = tracer_write_mem(call, call->args[1], &pm, sizeof(pm), &err);
	} else {
		failed = tracer_write_mem(call, call->args[1], buf, got, &err);
		if (!failed && call->args[4])
			failed =
			    trace_net_write_addr(call, &src, call->args[4], call->args[5], &err);
	}
	recv_ctx_free(c);
	if (failed)
		return tracer_error(EFAULT);
	return tracer_return(n);
}

static struct tracer_result recv_resume(const struct tracer_call *call, void *arg)
{
	return recv_attempt(arg, call);
}

struct tracer_result trace_net_udp_recv(struct net_state *st, const struct tracer_call *call)
{
	if (!__atomic_load_n(&st->n_udp, __ATOMIC_RELAXED))
		return tracer_continue();
	int fd = (int)call->args[0];
	int flags = (int)(call->nr == SYS_recvmsg ? call->args[2] : call->args[3]);
	if (flags & MSG_ERRQUEUE)
		return tracer_continue();
	ino_t ino = trace_net_fd_ino(call, fd);
	if (!ino)
		return tracer_continue();
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, ino);
	bool ours = ns && ns->type == SOCK_DGRAM;
	pthread_mutex_unlock(&st->lock);
	if (!ours)
		return tracer_continue();
	struct hm_err err;
	int dup = trace_net_getfd(call, fd, &err);
	if (dup < 0)
		return tracer_continue();
	struct recv_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		close(dup);
		return tracer_error(ENOMEM);
	}
	int fl = fcntl(dup, F_GETFL);
	*c =
	    (struct recv_ctx){.st = st,
			      .dup = dup,
			      .ino = ino,
			      .flags = flags,
			      .nonblock = (fl >= 0 && (fl & O_NONBLOCK)) || (flags & MSG_DONTWAIT)};
	return recv_attempt(c, call);
}

/* ---- the UDP thread ---- */

/* Entries out of the table whose fds may still be in a batch of events the UDP thread
 * got from epoll: freed by that thread at the end of its batch. Under st->lock; there is
 * one net_state per trace-run. */
static struct net_sock *graveyard;

/* out of the table now, freed after the current batch of events */
static void sock_bury(struct net_state *st, struct net_sock *ns)
{
	trace_net_table_remove(st, ns);
	ns->type = -SOCK_DGRAM; /* events later in the batch skip it */
	ns->next = graveyard;
	graveyard = ns;
}

static void graveyard_empty(struct net_state *st)
{
	while (graveyard) {
		struct net_sock *ns = graveyard;
		graveyard = ns->next;
		ns->type = SOCK_DGRAM;
		trace_net_sock_free(st, ns);
	}
}

/* datagrams the program sent to a proxy: to the agent, addressed to its peer */
static void proxy_readable(struct net_state *st, struct net_proxy *p)
{
	struct net_sock *ns = p->sock;
	for (int i = 0; i < 64 && ns->type == SOCK_DGRAM; i++) {
		struct net_addr from = {.len = sizeof(from.ss)};
		ssize_t n = recvfrom(p->fd, st->dgram, DGRAM_MAX, MSG_DONTWAIT,
				     (struct sockaddr *)&from.ss, &from.len);
		if (n < 0)
			return;
		if (!trace_net_addr_equal(&from, &ns->prog)) {
			char buf[80];
			hm_debug("UDP proxy: dropped a datagram from %s",
				 trace_net_addr_str(&from, buf, sizeof(buf)));
			continue;
		}
		struct hm_err err;
		if (udp_send(ns, &p->remote, st->dgram, (size_t)n, &err) < 0) {
			hm_warn("UDP to the agent: %s", err.msg);
			sock_bury(st, ns);
		}
	}
}

/* datagrams from the pod: to the program, from the proxy of their real source */
static void stream_readable(struct net_state *st, struct net_sock *ns)
{
	for (int i = 0; i < 64; i++) {
		struct proto_frame f;
		struct hm_err err = {0};
		int r = proto_frame_reader_read(&ns->reader, ns->stream, &f, &err);
		if (r == 0)
			return;
		struct proto_msg m;
		if (r < 0 || proto_decode_frame(&f, &m, &err) < 0 || m.type != PROTO_UDP_DATAGRAM) {
			if (r >= 0)
				proto_msg_free(&m);
			if (err.code)
				hm_debug("UDP stream: %s", err.msg);
			sock_bury(st, ns);
			return;
		}
		struct net_addr src;
		if (trace_net_addr_from_proto(&m.udp_datagram.peer, &src) == 0) {
			const void *data = m.udp_datagram.data;
			size_t len = m.udp_datagram.len;
			if (trace_net_addr_port(&src) == 53 && st->s->dns &&
			    policy_dns_table_add_response(st->s->dns, data, len) > 0)
				st->dns_answers++;
			struct net_proxy *p = proxy_get(st, ns, &src, &err);
			if (p && sendto(p->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL,
					(struct sockaddr *)&ns->prog.ss, ns->prog.len) < 0)
				hm_debug("UDP to the program: %s", strerror(errno));
			else if (!p)
				hm_warn("UDP proxy: %s", err.msg);
			ns->last_ms = hm_now_ms();
		}
		proto_msg_free(&m);
	}
}

/* Release the entries of sockets the program has closed. Quiet ones are checked; all
 * of them when there are many (a resolver opens a socket per query, each entry holds
 * a few fds). */
static void collect(struct net_state *st)
{
	int64_t now = hm_now_ms();
	int64_t quiet = st->n_udp > MANY_UDP ? 100 : IDLE_CHECK_MS;
	for (size_t i = 0; i < HM_ARRAY_SIZE(st->table); i++) {
		for (struct net_sock *ns = st->table[i], *next; ns; ns = next) {
			next = ns->next;
			if (now - ns->last_ms < quiet)
				continue;
			if (trace_net_sock_alive(st, ns)) {
				if (ns->type == SOCK_STREAM)
					ns->last_ms = now;
				continue;
			}
			hm_debug("the program closed socket %llu: entry released",
				 (unsigned long long)ns->ino);
			if (ns->type == SOCK_DGRAM) {
				sock_bury(st, ns);
			} else {
				trace_net_table_remove(st, ns);
				trace_net_sock_free(st, ns);
			}
		}
	}
}

static void *udp_thread(void *arg)
{
	struct net_state *st = arg;
	int64_t last_gc = hm_now_ms();
	for (;;) {
		struct epoll_event ev[64];
		int every =
		    __atomic_load_n(&st->n_udp, __ATOMIC_RELAXED) > MANY_UDP ? 250 : GC_EVERY_MS;
		int n = epoll_wait(st->epfd, ev, HM_ARRAY_SIZE(ev), every);
		if (n < 0 && errno != EINTR) {
			hm_warn("UDP thread: epoll_wait: %s", strerror(errno));
			return NULL;
		}
		pthread_mutex_lock(&st->lock);
		if (st->stopping) {
			pthread_mutex_unlock(&st->lock);
			return NULL;
		}
		for (int i = 0; i < n; i++) {
			uint64_t d = ev[i].data.u64;
			if (d == 0) {
				uint64_t v;
				if (read(st->wake_fd, &v, sizeof(v)) < 0)
					continue;
			} else if (d & TAG_PROXY) {
				struct net_proxy *p =
				    (struct net_proxy *)(uintptr_t)(d & ~TAG_PROXY);
				if (p->sock->type == SOCK_DGRAM)
					proxy_readable(st, p);
			} else {
				struct net_sock *ns = (struct net_sock *)(uintptr_t)d;
				if (ns->type == SOCK_DGRAM)
					stream_readable(st, ns);
			}
		}
		int64_t now = hm_now_ms();
		if (now - last_gc >= every) {
			collect(st);
			last_gc = now;
		}
		graveyard_empty(st);
		pthread_mutex_unlock(&st->lock);
	}
}

int trace_net_udp_init(struct net_state *st, struct hm_err *err)
{
	st->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (st->epfd < 0)
		return hm_err_errno(err, "epoll_create1");
	st->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (st->wake_fd < 0)
		return hm_err_errno(err, "eventfd");
	ep_add(st, st->wake_fd, 0);
	st->dgram = malloc(DGRAM_MAX);
	if (!st->dgram)
		return hm_err_set(err, ENOMEM, "datagram buffer");
	st->diag_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (st->diag_fd < 0) {
		hm_info("no sock_diag (%s): entries of closed sockets are kept", strerror(errno));
	} else {
		struct timeval tv = {.tv_sec = 1};
		setsockopt(st->diag_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int r = pthread_create(&st->thread, NULL, udp_thread, st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r != 0)
		return hm_err_set(err, r, "UDP thread");
	st->thread_started = true;
	return 0;
}

void trace_net_udp_fini(struct net_state *st)
{
	if (st->thread_started) {
		pthread_mutex_lock(&st->lock);
		st->stopping = true;
		pthread_mutex_unlock(&st->lock);
		uint64_t one = 1;
		if (write(st->wake_fd, &one, sizeof(one)) < 0)
			hm_debug("wake the UDP thread: %s", strerror(errno));
		pthread_join(st->thread, NULL);
		st->thread_started = false;
	}
	graveyard_empty(st);
	if (st->diag_fd >= 0)
		close(st->diag_fd);
	if (st->wake_fd >= 0)
		close(st->wake_fd);
	if (st->epfd >= 0)
		close(st->epfd);
	st->diag_fd = st->wake_fd = st->epfd = -1;
	free(st->dgram);
	st->dgram = NULL;
}
