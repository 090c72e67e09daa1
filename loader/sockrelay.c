/* The agent's kernel relay (bpf/sockrelay.bpf.c): one program on one SOCKHASH for every
 * relayed pair, its per-socket counters in a memory-mapped array that the agent reads
 * and writes without a syscall. Nothing is pinned: it all goes with the agent's fds. */
#include <linux/types.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <bpf/bpf.h>

#include "bpf/sockrelay.h"
#include "loader/internal.h"
#include "sockrelay.skel.h"

_Static_assert(HM_SOCKRELAY_SLOTS == SOCKRELAY_SLOTS, "one slot count");
_Static_assert(HM_SOCKRELAY_SKB_CREDIT == SOCKRELAY_SKB_CREDIT, "one skb credit");

struct hm_sockrelay {
	struct sockrelay_bpf *skel;
	struct ring_buffer *events;
	void (*on_event)(void *ctx, uint32_t slot);
	void *event_ctx;
	size_t mapped;		      /* bytes of the slots mapping; 0: none */
	struct sockrelay_slot *slots; /* the slots array, mapped */
	pthread_mutex_t lock;	      /* free */
	/* free slots, a FIFO ring: a slot freed now is reused last, so a verdict that was
	 * still running on another CPU for the socket that held it (it looked the slot up
	 * before the removal) has long ended before a new stream's counters start in it */
	uint32_t free_head, nfree;
	uint32_t free[SOCKRELAY_SLOTS];
};

static int check_support(struct hm_err *err)
{
	if (!(hm_has_cap(CAP_BPF) || hm_has_cap(CAP_SYS_ADMIN)) || !hm_has_cap(CAP_NET_ADMIN))
		return hm_err_plain(
		    err, EPERM,
		    "kernel relay: loading the sk_skb BPF program needs CAP_BPF "
		    "(or CAP_SYS_ADMIN) and CAP_NET_ADMIN, which the agent does not "
		    "have");
	int r = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_SKB, NULL);
	if (r == 0)
		return hm_err_plain(err, EOPNOTSUPP,
				    "kernel relay: this kernel has no sk_skb BPF programs "
				    "(CONFIG_BPF_STREAM_PARSER)");
	if (r < 0)
		return hm_err_set(err, -r, "kernel relay: probe for sk_skb BPF support");
	return 0;
}

static int event_cb(void *ctx, void *data, size_t size)
{
	struct hm_sockrelay *r = ctx;
	const struct sockrelay_event *e = data;
	if (size >= sizeof(*e) && e->slot < SOCKRELAY_SLOTS && r->on_event)
		r->on_event(r->event_ctx, e->slot);
	return 0;
}

int hm_sockrelay_open(struct hm_sockrelay **out, struct hm_err *err)
{
	*out = NULL;
	hm_libbpf_log_setup();
	if (check_support(err) < 0)
		return -1;
	struct hm_sockrelay *r = calloc(1, sizeof(*r));
	if (!r)
		return hm_err_errno(err, "kernel relay");
	pthread_mutex_init(&r->lock, NULL);
	for (uint32_t i = 0; i < SOCKRELAY_SLOTS; i++)
		r->free[r->nfree++] = i;
	r->skel = sockrelay_bpf__open_and_load();
	if (!r->skel) {
		int e = errno;
		hm_err_plain(err, e == EPERM ? EPERM : EOPNOTSUPP,
			     "kernel relay: the kernel refused the sk_skb program or its maps "
			     "(%s; a verdict program without a parser needs Linux 5.13+); "
			     "--log-level debug shows the verifier log",
			     strerror(e));
		goto fail;
	}
	size_t sz = sizeof(struct sockrelay_slot) * SOCKRELAY_SLOTS;
	void *m =
	    mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(r->skel->maps.slots), 0);
	if (m == MAP_FAILED) {
		hm_err_errno(err, "kernel relay: map the counters");
		goto fail;
	}
	r->slots = m;
	r->mapped = sz;
	r->events = ring_buffer__new(bpf_map__fd(r->skel->maps.events), event_cb, r, NULL);
	if (!r->events) {
		hm_err_errno(err, "kernel relay: ring buffer");
		goto fail;
	}
	int rc = bpf_prog_attach(bpf_program__fd(r->skel->progs.hm_sockrelay),
				 bpf_map__fd(r->skel->maps.socks), BPF_SK_SKB_VERDICT, 0);
	if (rc < 0) {
		hm_err_set(err, -rc == EINVAL ? EOPNOTSUPP : -rc,
			   "kernel relay: attach the verdict program to its sockhash "
			   "(Linux 5.13+)");
		goto fail;
	}
	*out = r;
	return 0;
fail:
	hm_sockrelay_close(r);
	return -1;
}

void hm_sockrelay_close(struct hm_sockrelay *r)
{
	if (!r)
		return;
	ring_buffer__free(r->events);
	if (r->mapped)
		munmap(r->slots, r->mapped);
	sockrelay_bpf__destroy(r->skel);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

uint32_t hm_sockrelay_prog_id(const struct hm_sockrelay *r)
{
	struct bpf_prog_info info = {0};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(bpf_program__fd(r->skel->progs.hm_sockrelay), &info, &len) < 0)
		return 0;
	return info.id;
}

static int cookie_of(int fd, __u64 *out, struct hm_err *err)
{
	socklen_t len = sizeof(*out);
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, out, &len) < 0)
		return hm_err_errno(err, "kernel relay: socket cookie");
	return 0;
}

static void slots_put(struct hm_sockrelay *r, const uint32_t *slot, int n)
{
	pthread_mutex_lock(&r->lock);
	for (int i = 0; i < n; i++)
		r->free[(r->free_head + r->nfree++) % SOCKRELAY_SLOTS] = slot[i];
	pthread_mutex_unlock(&r->lock);
}

/* A data_ready on fd: the program runs over what was queued before the socket entered
 * the map (it otherwise runs only when new bytes arrive). TCP's SO_RCVLOWAT setter
 * calls the socket's data_ready, which the map replaced with the verdict's. */
static void kick(int fd)
{
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

int hm_sockrelay_add(struct hm_sockrelay *r, const int fd[2], const uint64_t limit[2],
		     struct hm_sockrelay_pair *out, struct hm_err *err)
{
	__u64 cookie[2];
	for (int i = 0; i < 2; i++)
		if (cookie_of(fd[i], &cookie[i], err) < 0)
			return -1;
	pthread_mutex_lock(&r->lock);
	bool room = r->nfree >= 2;
	if (room) {
		for (int i = 0; i < 2; i++) {
			out->slot[i] = r->free[r->free_head];
			r->free_head = (r->free_head + 1) % SOCKRELAY_SLOTS;
			r->nfree--;
		}
	}
	pthread_mutex_unlock(&r->lock);
	if (!room)
		return hm_err_plain(err, ENOSPC, "kernel relay: all %u sockets in use",
				    SOCKRELAY_SLOTS);
	for (int i = 0; i < 2; i++) {
		struct sockrelay_slot *s = &r->slots[out->slot[i]];
		memset(s, 0, sizeof(*s));
		s->peer = cookie[1 - i];
		s->limit = limit[i];
		s->notify_at = limit[i] / 2;
		uint64_t skb_credit = limit[i] >> 10;
		if (skb_credit > SOCKRELAY_SKB_CREDIT)
			skb_credit = SOCKRELAY_SKB_CREDIT;
		if (skb_credit < SOCKRELAY_SKB_CREDIT_MIN)
			skb_credit = SOCKRELAY_SKB_CREDIT_MIN;
		s->skb_credit = skb_credit;
		s->skb_limit = skb_credit;
		s->skb_notify_at = skb_credit / 2;
	}
	atomic_thread_fence(memory_order_seq_cst);
	int rc = 0, done = 0;
	/* the slots first: from the moment a socket is in socks, its bytes are counted */
	for (int i = 0; i < 2 && rc == 0; i++, done++)
		rc = bpf_map__update_elem(r->skel->maps.slot_of, &cookie[i], sizeof(__u64),
					  &out->slot[i], sizeof(__u32), BPF_NOEXIST);
	if (rc < 0) {
		done--;
		hm_err_set(err, -rc, "kernel relay: index a socket");
		goto undo;
	}
	int in_socks = 0;
	for (int i = 0; i < 2 && rc == 0; i++, in_socks++) {
		__u64 v = (__u64)fd[i];
		rc = bpf_map__update_elem(r->skel->maps.socks, &cookie[i], sizeof(__u64), &v,
					  sizeof(v), BPF_NOEXIST);
	}
	if (rc < 0) {
		in_socks--;
		hm_err_set(err, -rc, "kernel relay: put a socket in the sockhash");
		for (int i = 0; i < in_socks; i++) {
			bpf_map__delete_elem(r->skel->maps.socks, &cookie[i], sizeof(__u64), 0);
			/* What the program left on a socket while its peer was not in the map
			 * sat in the socket's psock, which leaving the map discards: the
			 * stream has a hole and must be reset, not relayed on. */
			if (__atomic_load_n(&r->slots[out->slot[i]].passed, __ATOMIC_ACQUIRE))
				hm_err_plain(err, ECONNABORTED,
					     "kernel relay: bytes arrived while only one socket "
					     "was in the map, and leaving it lost them");
		}
		goto undo;
	}
	for (int i = 0; i < 2; i++)
		kick(fd[i]);
	return 0;
undo:
	for (int i = 0; i < done; i++)
		bpf_map__delete_elem(r->skel->maps.slot_of, &cookie[i], sizeof(__u64), 0);
	slots_put(r, out->slot, 2);
	return -1;
}

void hm_sockrelay_get(const struct hm_sockrelay *r, const struct hm_sockrelay_pair *p, int i,
		      struct hm_sockrelay_side *out)
{
	struct sockrelay_slot *s = &r->slots[p->slot[i]];
	/* skbs first (hm_sockrelay_skbs_gone relies on it): the program adds to redirected
	 * before it counts the skb */
	out->skbs = __atomic_load_n(&s->skbs, __ATOMIC_ACQUIRE);
	out->skbs_low = out->skbs >= __atomic_load_n(&s->skb_notify_at, __ATOMIC_ACQUIRE);
	out->redirected = __atomic_load_n(&s->redirected, __ATOMIC_ACQUIRE);
	out->passed = __atomic_load_n(&s->passed, __ATOMIC_ACQUIRE);
}

void hm_sockrelay_skbs_gone(struct hm_sockrelay *r, const struct hm_sockrelay_pair *p, int i,
			    uint64_t skbs)
{
	struct sockrelay_slot *s = &r->slots[p->slot[i]];
	if (skbs + s->skb_credit <= __atomic_load_n(&s->skb_limit, __ATOMIC_ACQUIRE))
		return;
	__atomic_store_n(&s->skb_notify_at, skbs + s->skb_credit / 2, __ATOMIC_RELEASE);
	__atomic_store_n(&s->skb_limit, skbs + s->skb_credit, __ATOMIC_RELEASE);
}

void hm_sockrelay_set(struct hm_sockrelay *r, const struct hm_sockrelay_pair *p, int i,
		      uint64_t drained, uint64_t limit, uint64_t notify_at)
{
	struct sockrelay_slot *s = &r->slots[p->slot[i]];
	__atomic_store_n(&s->notify_at, notify_at, __ATOMIC_RELEASE);
	__atomic_store_n(&s->limit, limit, __ATOMIC_RELEASE);
	__atomic_store_n(&s->drained, drained, __ATOMIC_RELEASE);
}

void hm_sockrelay_remove(struct hm_sockrelay *r, const struct hm_sockrelay_pair *p)
{
	for (int i = 0; i < 2; i++) {
		/* the peer's cookie names this socket: both sides' cookies are at hand */
		__u64 cookie = r->slots[p->slot[1 - i]].peer;
		bpf_map__delete_elem(r->skel->maps.socks, &cookie, sizeof(cookie), 0);
		bpf_map__delete_elem(r->skel->maps.slot_of, &cookie, sizeof(cookie), 0);
	}
	slots_put(r, p->slot, 2);
}

int hm_sockrelay_events_fd(const struct hm_sockrelay *r)
{
	return ring_buffer__epoll_fd(r->events);
}

int hm_sockrelay_consume(struct hm_sockrelay *r, void (*fn)(void *ctx, uint32_t slot), void *ctx)
{
	r->on_event = fn;
	r->event_ctx = ctx;
	int n = ring_buffer__consume(r->events);
	r->on_event = NULL;
	return n;
}
