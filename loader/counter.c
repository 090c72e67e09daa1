/* The counter program (bpf/counter.bpf.c): load with its read-only config, attach at
 * tc ingress, read the per-CPU totals, detach. */
#include <linux/types.h>

#include "bpf/counter.h"
#include "counter.skel.h"
#include "loader/internal.h"

struct hm_counter {
	struct counter_bpf *skel;
	struct hm_tc_filter filter;
	int ncpus;
};

int hm_counter_attach(const struct hm_counter_opts *opts, struct hm_counter **out,
		      struct hm_err *err)
{
	*out = NULL;
	hm_libbpf_log_setup();
	hm_cleanup_close int netns = hm_netns_open(&opts->dev, err);
	if (netns < 0)
		return hm_err_prefix(err, "counter");

	struct hm_counter *c = calloc(1, sizeof(*c));
	if (!c)
		return hm_err_errno(err, "counter");
	c->filter.netns_fd = -1;
	c->ncpus = libbpf_num_possible_cpus();
	if (c->ncpus <= 0) {
		hm_err_set(err, -c->ncpus, "counter: number of possible CPUs");
		goto fail;
	}
	c->skel = counter_bpf__open();
	if (!c->skel) {
		hm_err_errno(err, "counter: open BPF object");
		goto fail;
	}
	/* rodata: frozen at load, so the verifier treats it as a constant */
	c->skel->rodata->only_ip_proto = opts->only_ip_proto;
	int r = counter_bpf__load(c->skel);
	if (r < 0) {
		hm_err_set(err, -r,
			   "counter: load BPF program (libbpf warnings above have the "
			   "verifier log)");
		goto fail;
	}
	if (hm_tc_filter_attach(&c->filter, netns, opts->dev.ifname, BPF_TC_INGRESS,
				HM_TC_PRIO_COUNTER, bpf_program__fd(c->skel->progs.hm_count_proto),
				err) < 0) {
		hm_err_prefix(err, "counter");
		goto fail;
	}
	*out = c;
	return 0;
fail:
	hm_counter_destroy(c, NULL); /* the filter is not attached: nothing can fail */
	return -1;
}

int hm_counter_read(const struct hm_counter *c, uint8_t ip_proto, struct hm_counter_stats *out,
		    struct hm_err *err)
{
	*out = (struct hm_counter_stats){0};
	__u32 key = ip_proto;
	/* a per-CPU map returns one value per possible CPU, each padded to 8 bytes */
	size_t len = (size_t)c->ncpus * sizeof(struct counter_value);
	hm_cleanup_free struct counter_value *per_cpu = calloc(c->ncpus, sizeof(*per_cpu));
	if (!per_cpu)
		return hm_err_errno(err, "read counter");
	int r = bpf_map__lookup_elem(c->skel->maps.stats, &key, sizeof(key), per_cpu, len, 0);
	if (r < 0)
		return hm_err_set(err, -r, "read counter for IP protocol %u", ip_proto);
	for (int i = 0; i < c->ncpus; i++) {
		out->packets += per_cpu[i].packets;
		out->bytes += per_cpu[i].bytes;
	}
	return 0;
}

int hm_counter_destroy(struct hm_counter *c, struct hm_err *err)
{
	if (!c)
		return 0;
	/* detach before the program fd closes: a filter whose program nobody holds looks
	 * stale to everyone else */
	int r = hm_tc_filter_detach(&c->filter, err);
	if (r < 0)
		hm_err_prefix(err, "counter");
	counter_bpf__destroy(c->skel);
	free(c);
	return r;
}
