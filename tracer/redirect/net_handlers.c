/* The network handlers of trace-run: which syscalls are intercepted, the first look at
 * each (is the socket one of ours, is the destination remote), and the worker threads
 * that wait for the agent while the program's call is deferred. See net_internal.h. */
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tracer/redirect/net_internal.h"

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

/* ---- jobs ---- */

struct net_job *trace_net_job_new(struct net_state *st, int dup, ino_t ino)
{
	struct net_job *job = calloc(1, sizeof(*job));
	if (!job)
		return NULL;
	job->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (job->efd < 0) {
		free(job);
		return NULL;
	}
	job->st = st;
	job->dup = dup;
	job->ino = ino;
	job->result_fd = -1;
	job->refs = 2;
	return job;
}

void trace_net_job_discard(struct net_job *job)
{
	if (job->release)
		job->release(job);
	if (job->result_fd >= 0)
		close(job->result_fd);
	if (job->dup >= 0)
		close(job->dup);
	close(job->efd);
	free(job->data);
	free(job);
}

static void job_put(struct net_job *job)
{
	if (__atomic_sub_fetch(&job->refs, 1, __ATOMIC_ACQ_REL) == 0)
		trace_net_job_discard(job);
}

static void *job_thread(void *arg)
{
	struct net_job *job = arg;
	job->work(job);
	__atomic_sub_fetch(&job->st->jobs_running, 1, __ATOMIC_ACQ_REL);
	uint64_t one = 1;
	if (write(job->efd, &one, sizeof(one)) < 0)
		hm_debug("job eventfd: %s", strerror(errno));
	job_put(job);
	return NULL;
}

static struct tracer_result job_resume(const struct tracer_call *call, void *arg)
{
	struct net_job *job = arg;
	struct tracer_result res = job->finish(job, call);
	job_put(job);
	return res;
}

static void job_cancel(void *arg)
{
	job_put(arg);
}

int trace_net_thread_start(void *(*fn)(void *), void *arg, struct hm_err *err)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 << 10);
	/* worker threads must leave trace-run's signals to its signalfd */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_t tid;
	int r = pthread_create(&tid, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return r ? hm_err_set(err, r, "thread") : 0;
}

struct tracer_result trace_net_job_defer(struct net_job *job)
{
	struct hm_err err = {0};
	__atomic_add_fetch(&job->st->jobs_running, 1, __ATOMIC_ACQ_REL);
	if (trace_net_thread_start(job_thread, job, &err) < 0) {
		__atomic_sub_fetch(&job->st->jobs_running, 1, __ATOMIC_ACQ_REL);
		hm_warn("worker thread: %s", strerror(err.code));
		trace_net_job_discard(job);
		return tracer_error(EAGAIN);
	}
	return tracer_defer(job->efd, job_resume, job_cancel, job);
}

/* ---- first looks ---- */

static bool remote(struct net_state *st, enum policy_net_proto proto, const struct net_addr *dst,
		   const char **why)
{
	if (!st->s->net)
		return false;
	return policy_net_decide(st->s->net, proto, (const struct sockaddr *)&dst->ss, dst->len,
				 why) == POLICY_NET_REMOTE;
}

static size_t count_of(const size_t *n)
{
	return __atomic_load_n(n, __ATOMIC_RELAXED);
}

/* A UDP socket of ours connects elsewhere (locally, or AF_UNSPEC to disconnect): it is
 * no longer connected through a proxy. */
static void udp_unconnect(struct net_state *st, const struct tracer_call *call, int fd)
{
	if (!count_of(&st->n_udp))
		return;
	ino_t ino = trace_net_fd_ino(call, fd);
	if (!ino)
		return;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, ino);
	if (ns && ns->type == SOCK_DGRAM)
		ns->connected = false;
	pthread_mutex_unlock(&st->lock);
}

/* Each redirected socket costs trace-run a few fds (streams, proxies): take the hard
 * limit, once the program runs (it was started with the limits it had, and keeps them). */
static void raise_nofile(struct net_state *st)
{
	if (st->nofile_raised)
		return;
	st->nofile_raised = true;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static struct tracer_result handle_connect(const struct tracer_call *call, void *data)
{
	struct net_state *st = data;
	raise_nofile(st);
	int fd = (int)call->args[0];
	struct net_addr dst;
	if (trace_net_read_addr(call, call->args[1], call->args[2], &dst) < 0)
		return tracer_continue();
	if (dst.ss.ss_family != AF_INET && dst.ss.ss_family != AF_INET6) {
		if (dst.ss.ss_family == AF_UNSPEC)
			udp_unconnect(st, call, fd);
		return tracer_continue();
	}
	const char *why_tcp = NULL, *why_udp = NULL;
	bool tcp = remote(st, POLICY_NET_TCP, &dst, &why_tcp);
	bool udp = remote(st, POLICY_NET_UDP, &dst, &why_udp);
	if (!tcp && !udp) {
		udp_unconnect(st, call, fd);
		return tracer_continue();
	}
	struct hm_err err = {0};
	int dup = trace_net_getfd(call, fd, &err);
	if (dup < 0)
		return tracer_continue(); /* the kernel gives the program its EBADF */
	struct stat sb;
	int type = 0, proto = 0, family = 0;
	socklen_t l1 = sizeof(type), l2 = sizeof(proto), l3 = sizeof(family);
	if (fstat(dup, &sb) < 0 || !S_ISSOCK(sb.st_mode) ||
	    getsockopt(dup, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 ||
	    getsockopt(dup, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) < 0 ||
	    getsockopt(dup, SOL_SOCKET, SO_DOMAIN, &family, &l3) < 0 ||
	    /* an AF_INET socket cannot reach an IPv6 address: the kernel says so */
	    (family == AF_INET && dst.ss.ss_family != AF_INET) ||
	    (family == AF_INET6 && dst.ss.ss_family != AF_INET6)) {
		close(dup);
		return tracer_continue();
	}
	if (type == SOCK_STREAM && (proto == IPPROTO_TCP || proto == IPPROTO_MPTCP) && tcp) {
		hm_debug("pid %d: connect: remote (%s)", call->pid, why_tcp ? why_tcp : "-");
		return trace_net_tcp_connect(st, call, dup, sb.st_ino, &dst);
	}
	if (type == SOCK_DGRAM && proto == IPPROTO_UDP && udp) {
		hm_debug("pid %d: connect (udp): remote (%s)", call->pid, why_udp ? why_udp : "-");
		return trace_net_udp_connect(st, call, dup, sb.st_ino, &dst);
	}
	close(dup);
	if (type == SOCK_DGRAM)
		udp_unconnect(st, call, fd);
	return tracer_continue();
}

/* getpeername / getsockname of a redirected socket: the addresses it has in the pod */
static struct tracer_result answer_name(const struct tracer_call *call, struct net_state *st,
					bool peer)
{
	if (!count_of(&st->n_tcp) && !count_of(&st->n_udp) && !st->incoming)
		return tracer_continue();
	ino_t ino = trace_net_fd_ino(call, (int)call->args[0]);
	if (!ino)
		return tracer_continue();
	struct net_addr addr;
	bool found = false;
	pthread_mutex_lock(&st->lock);
	struct net_sock *ns = trace_net_table_find(st, ino);
	if (ns && ns->type == SOCK_STREAM) {
		addr = peer ? ns->peer : ns->local;
		found = addr.len > 0 && !ns->handed_off;
	} else if (ns && peer && ns->connected) {
		addr = ns->peer;
		found = true;
	}
	pthread_mutex_unlock(&st->lock);
	if (!found && !ns && st->incoming)
		found = trace_net_incoming_name(st, call, peer, &addr);
	if (!found)
		return tracer_continue();
	struct hm_err err;
	if (trace_net_write_addr(call, &addr, call->args[1], call->args[2], &err) < 0)
		return tracer_error(err.code == EINVAL ? EINVAL : EFAULT);
	return tracer_return(0);
}

static struct tracer_result handle_getpeername(const struct tracer_call *call, void *data)
{
	return answer_name(call, data, true);
}

static struct tracer_result handle_getsockname(const struct tracer_call *call, void *data)
{
	return answer_name(call, data, false);
}

/* sendto(fd, buf, len, flags, dst, dstlen), intercepted only with a destination */
static struct tracer_result handle_sendto(const struct tracer_call *call, void *data)
{
	struct net_state *st = data;
	raise_nofile(st);
	struct net_addr dst;
	if (trace_net_read_addr(call, call->args[4], call->args[5], &dst) < 0 ||
	    (dst.ss.ss_family != AF_INET && dst.ss.ss_family != AF_INET6) ||
	    !remote(st, POLICY_NET_UDP, &dst, NULL))
		return tracer_continue();
	return trace_net_udp_sendto(st, call, (int)call->args[0], call->args[1], call->args[2],
				    &dst);
}

static struct tracer_result handle_sendmsg(const struct tracer_call *call, void *data)
{
	return trace_net_udp_sendmsg(data, call);
}

static struct tracer_result handle_sendmmsg(const struct tracer_call *call, void *data)
{
	return trace_net_udp_sendmmsg(data, call);
}

static struct tracer_result handle_recv(const struct tracer_call *call, void *data)
{
	return trace_net_udp_recv(data, call);
}

/* ---- registration ---- */

int trace_net_register(struct trace_session *s, struct hm_err *err)
{
	const struct policy_config *c = &s->cfg;
	bool tcp = c->feature.network.outgoing.tcp != POLICY_TRI_FALSE;
	bool udp = c->feature.network.outgoing.udp != POLICY_TRI_FALSE ||
		   c->feature.network.dns != POLICY_TRI_FALSE;
	bool incoming = c->feature.network.incoming.mode != POLICY_INCOMING_OFF;
	if (!tcp && !udp && !incoming)
		return 0;
	struct net_state *st = calloc(1, sizeof(*st));
	if (!st)
		return hm_err_set(err, ENOMEM, "network state");
	st->s = s;
	st->listen4 = st->listen6 = st->epfd = st->wake_fd = st->diag_fd = -1;
	pthread_mutex_init(&st->lock, NULL);
	s->netio = st;
	if (trace_net_tcp_init(st, err) < 0 || trace_net_udp_init(st, err) < 0)
		return hm_err_prefix(err, "local proxy");
	if (incoming && trace_net_incoming_init(st, err) < 0)
		return hm_err_prefix(err, "incoming traffic");
	struct tracer *t = s->tracer;
	if (tracer_set_handler(t, SYS_connect, handle_connect, st, err) < 0 ||
	    tracer_set_handler(t, SYS_getpeername, handle_getpeername, st, err) < 0 ||
	    tracer_set_handler(t, SYS_getsockname, handle_getsockname, st, err) < 0)
		return -1;
	if (udp && (tracer_set_handler_if_arg(t, SYS_sendto, 4, handle_sendto, st, err) < 0 ||
		    tracer_set_handler(t, SYS_sendmsg, handle_sendmsg, st, err) < 0 ||
		    tracer_set_handler(t, SYS_sendmmsg, handle_sendmmsg, st, err) < 0 ||
		    tracer_set_handler_if_arg(t, SYS_recvfrom, 4, handle_recv, st, err) < 0 ||
		    tracer_set_handler(t, SYS_recvmsg, handle_recv, st, err) < 0))
		return -1;
	return 0;
}

void trace_net_release(struct trace_session *s)
{
	struct net_state *st = s->netio;
	if (!st)
		return;
	/* a worker still waiting for the agent (the program ended meanwhile) must be done
	 * with the client before the session closes it; its request times out at worst */
	for (int i = 0; __atomic_load_n(&st->jobs_running, __ATOMIC_ACQUIRE) > 0; i++) {
		if (i == 10)
			hm_info("waiting for %d pending agent requests",
				__atomic_load_n(&st->jobs_running, __ATOMIC_ACQUIRE));
		usleep(10000);
	}
	trace_net_incoming_fini(st);
	trace_net_udp_fini(st);
	trace_net_tcp_fini(st);
	hm_info("network: %lu TCP and %lu UDP sockets went through the pod, %lu DNS answers seen",
		st->redirected_tcp, st->redirected_udp, st->dns_answers);
	for (size_t i = 0; i < HM_ARRAY_SIZE(st->table); i++) {
		while (st->table[i]) {
			struct net_sock *ns = st->table[i];
			st->table[i] = ns->next;
			trace_net_sock_free(st, ns);
		}
	}
	pthread_mutex_destroy(&st->lock);
	free(st);
	s->netio = NULL;
}
