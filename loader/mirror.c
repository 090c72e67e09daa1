/* The mirror program (bpf/mirror.bpf.c): one object per network namespace, attached
 * at tc ingress of each of its interfaces, with a ring buffer the caller drains. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/types.h>
#include <string.h>
#include <sys/stat.h>

#include "bpf/mirror.h"
#include "loader/internal.h"
#include "mirror.skel.h"

#define DEFAULT_RING_BYTES (32u << 20)

struct hm_mirror {
	struct mirror_bpf *skel;
	struct ring_buffer *ring;
	hm_mirror_segment_fn on_segment;
	void *ctx;
	int ncpus;
	size_t nfilters;
	struct hm_tc_filter *filters;
};

static int on_record(void *ctx, void *data, size_t size)
{
	struct hm_mirror *m = ctx;
	const struct mirror_event *ev = data;
	if (size < sizeof(*ev) || size - sizeof(*ev) < ev->payload_len)
		return 0; /* the kernel wrote it: cannot happen, but never over-read */
	struct hm_mirror_segment seg = {
	    .family = ev->family,
	    .tcp_flags = ev->tcp_flags,
	    .sport = ev->sport,
	    .dport = ev->dport,
	    .seq = ev->seq,
	    .ifindex = ev->ifindex,
	    .payload = ev + 1,
	    .len = ev->payload_len,
	};
	memcpy(seg.saddr, ev->saddr, sizeof(seg.saddr));
	memcpy(seg.daddr, ev->daddr, sizeof(seg.daddr));
	/* a negative return makes libbpf stop after this record, which stays consumed */
	return m->on_segment(m->ctx, &seg) ? 0 : -EINTR;
}

/* Why a load failed, in words an operator can act on. */
static int load_error(int code, struct hm_err *err)
{
	if (code == EPERM || code == EACCES)
		return hm_err_set(err, code,
				  "mirror: loading a BPF program needs CAP_BPF and CAP_NET_ADMIN "
				  "(or root), and unprivileged BPF may be disabled");
	if (code == ENOSYS || code == EOPNOTSUPP)
		return hm_err_set(err, code,
				  "mirror: this kernel has no BPF support for tc programs and ring "
				  "buffers (needs Linux 5.8+ with CONFIG_BPF_SYSCALL)");
	return hm_err_set(err, code,
			  "mirror: the kernel refused the BPF program (the verifier log is in "
			  "the libbpf messages at --log-level debug)");
}

static int attach_everywhere(struct hm_mirror *m, int netns_fd, struct hm_err *err)
{
	/* the interface list is the namespace's: read it from inside */
	struct hm_netns_switch sw;
	if (hm_netns_enter(netns_fd, &sw, err) < 0)
		return hm_err_prefix(err, "mirror");
	struct if_nameindex *ifs = if_nameindex();
	int saved = errno;
	struct hm_err leave_err;
	if (hm_netns_leave(&sw, &leave_err) < 0) {
		if (ifs)
			if_freenameindex(ifs);
		*err = leave_err;
		return -1;
	}
	if (!ifs)
		return hm_err_set(err, saved, "mirror: list interfaces");
	size_t n = 0;
	while (ifs[n].if_index)
		n++;
	m->filters = calloc(n ? n : 1, sizeof(*m->filters));
	if (!m->filters) {
		if_freenameindex(ifs);
		return hm_err_errno(err, "mirror");
	}
	int r = 0;
	int prog_fd = bpf_program__fd(m->skel->progs.hm_mirror);
	for (size_t i = 0; i < n && r == 0; i++) {
		r = hm_tc_filter_attach(&m->filters[m->nfilters], netns_fd, ifs[i].if_name,
					BPF_TC_INGRESS, HM_TC_PRIO_MIRROR, prog_fd, err);
		if (r == 0)
			m->nfilters++;
		else if (err->code == EPERM)
			hm_err_prefix(err, "mirror (attaching a tc filter needs CAP_NET_ADMIN in "
					   "the target's network namespace)");
		else
			hm_err_prefix(err, "mirror");
	}
	if_freenameindex(ifs);
	return r;
}

int hm_mirror_attach(const struct hm_mirror_opts *opts, struct hm_mirror **out, struct hm_err *err)
{
	*out = NULL;
	hm_libbpf_log_setup();
	struct hm_mirror *m = calloc(1, sizeof(*m));
	if (!m)
		return hm_err_errno(err, "mirror");
	m->on_segment = opts->on_segment;
	m->ctx = opts->ctx;
	m->ncpus = libbpf_num_possible_cpus();
	if (m->ncpus <= 0) {
		hm_err_set(err, -m->ncpus, "mirror: number of possible CPUs");
		goto fail;
	}
	m->skel = mirror_bpf__open();
	if (!m->skel) {
		hm_err_errno(err, "mirror: open BPF object");
		goto fail;
	}
	size_t ring = opts->ring_bytes ? opts->ring_bytes : DEFAULT_RING_BYTES;
	int r = bpf_map__set_max_entries(m->skel->maps.mirror_events, (__u32)ring);
	if (r == 0)
		r = bpf_map__set_max_entries(m->skel->maps.mirror_scratch, (__u32)m->ncpus);
	if (r < 0) {
		hm_err_set(err, -r, "mirror: size maps (ring buffer %zu bytes)", ring);
		goto fail;
	}
	m->skel->rodata->wakeup_bytes = opts->wakeup_bytes;
	r = mirror_bpf__load(m->skel);
	if (r < 0) {
		load_error(-r, err);
		goto fail;
	}
	m->ring = ring_buffer__new(bpf_map__fd(m->skel->maps.mirror_events), on_record, m, NULL);
	if (!m->ring) {
		hm_err_errno(err, "mirror: ring buffer");
		goto fail;
	}
	if (attach_everywhere(m, opts->netns_fd, err) < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	hm_mirror_destroy(m, NULL);
	return -1;
}

static int port_update(struct hm_mirror *m, uint16_t port, bool add, struct hm_err *err)
{
	__u16 key = port;
	__u8 one = 1;
	int r = add ? bpf_map__update_elem(m->skel->maps.mirror_ports, &key, sizeof(key), &one,
					   sizeof(one), BPF_ANY)
		    : bpf_map__delete_elem(m->skel->maps.mirror_ports, &key, sizeof(key), 0);
	if (r < 0 && !(r == -ENOENT && !add))
		return hm_err_set(err, -r, "mirror: %s port %u", add ? "add" : "remove", port);
	return 0;
}

int hm_mirror_port_add(struct hm_mirror *m, uint16_t port, struct hm_err *err)
{
	return port_update(m, port, true, err);
}

int hm_mirror_port_remove(struct hm_mirror *m, uint16_t port, struct hm_err *err)
{
	return port_update(m, port, false, err);
}

int hm_mirror_fd(const struct hm_mirror *m)
{
	return ring_buffer__epoll_fd(m->ring);
}

int hm_mirror_consume(struct hm_mirror *m, struct hm_err *err)
{
	int r = ring_buffer__consume(m->ring);
	if (r == -EINTR)
		return 1;
	if (r < 0)
		return hm_err_set(err, -r, "mirror: read ring buffer");
	return 0;
}

void hm_mirror_drops(const struct hm_mirror *m, uint64_t *segments, uint64_t *bytes)
{
	*segments = *bytes = 0;
	__u32 key = 0;
	struct mirror_drops per_cpu[m->ncpus];
	if (bpf_map__lookup_elem(m->skel->maps.mirror_drop_stats, &key, sizeof(key), per_cpu,
				 sizeof(per_cpu), 0) < 0)
		return;
	for (int i = 0; i < m->ncpus; i++) {
		*segments += per_cpu[i].events;
		*bytes += per_cpu[i].bytes;
	}
}

int hm_mirror_take_lost(struct hm_mirror *m, void (*fn)(void *ctx, const struct hm_mirror_flow *),
			void *ctx)
{
	const struct bpf_map *map = m->skel->maps.mirror_lost_flows;
	struct mirror_flow key, next;
	int n = 0;
	/* always the first key: each is deleted once taken; bounded, as the program may
	 * add more meanwhile */
	while (n < MIRROR_LOST_FLOWS_MAX &&
	       bpf_map__get_next_key(map, NULL, &next, sizeof(next)) == 0) {
		key = next;
		bpf_map__delete_elem(map, &key, sizeof(key), 0);
		struct hm_mirror_flow f = {
		    .family = key.family, .sport = key.sport, .dport = key.dport};
		memcpy(f.saddr, key.saddr, sizeof(f.saddr));
		memcpy(f.daddr, key.daddr, sizeof(f.daddr));
		fn(ctx, &f);
		n++;
	}
	return n;
}

int hm_mirror_destroy(struct hm_mirror *m, struct hm_err *err)
{
	if (!m)
		return 0;
	int result = 0;
	/* detach before the program fd closes: a filter whose program nobody holds looks
	 * stale to everyone else */
	for (size_t i = 0; i < m->nfilters; i++) {
		struct hm_err e;
		if (hm_tc_filter_detach(&m->filters[i], &e) < 0 && result == 0) {
			result = -1;
			if (err)
				hm_err_set(err, e.code, "mirror: %s", e.msg);
		}
	}
	free(m->filters);
	ring_buffer__free(m->ring);
	mirror_bpf__destroy(m->skel);
	free(m);
	return result;
}

/* ---- stale filters of killed agents, in every namespace we can see ---- */

struct seen_ns {
	dev_t dev;
	ino_t ino;
};

static int clean_one(const char *path, struct seen_ns **seen, size_t *nseen, size_t *cap,
		     int *removed)
{
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return 0; /* gone meanwhile */
	for (size_t i = 0; i < *nseen; i++)
		if ((*seen)[i].dev == st.st_dev && (*seen)[i].ino == st.st_ino)
			return 0;
	if (*nseen == *cap) {
		size_t grown_cap = *cap ? *cap * 2 : 64;
		struct seen_ns *grown = realloc(*seen, grown_cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		*seen = grown;
		*cap = grown_cap;
	}
	(*seen)[(*nseen)++] = (struct seen_ns){st.st_dev, st.st_ino};
	struct hm_err e;
	int r = hm_tc_remove_stale_in(fd, &e);
	if (r < 0)
		hm_debug("stale tc filters in %s: %s", path, e.msg);
	else
		*removed += r;
	return 0;
}

int hm_tc_remove_stale_everywhere(struct hm_err *err)
{
	hm_libbpf_log_setup();
	hm_cleanup_free struct seen_ns *seen = NULL;
	size_t nseen = 0, cap = 0;
	int removed = 0;
	char path[300];
	DIR *proc = opendir("/proc");
	if (!proc)
		return hm_err_errno(err, "open /proc");
	struct dirent *de;
	int r = 0;
	while (r == 0 && (de = readdir(proc))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/ns/net", de->d_name);
		r = clean_one(path, &seen, &nseen, &cap, &removed);
	}
	closedir(proc);
	DIR *named = opendir("/run/netns");
	while (r == 0 && named && (de = readdir(named))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/run/netns/%s", de->d_name);
		r = clean_one(path, &seen, &nseen, &cap, &removed);
	}
	if (named)
		closedir(named);
	if (r < 0)
		return hm_err_set(err, -r, "remove stale tc filters");
	return removed;
}
