/* Lifetime of hermit's tc filters. Classic tc filters (libbpf 1.1 has no tcx links)
 * are owned by the interface, not by the process: they survive a crash of the process
 * that attached them and keep running its program. So attach first removes filters whose program no
 * process holds any more, and detach removes exactly what we added — our filter, and
 * the clsact qdisc only when we created it and nobody else's filter sits on it. */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <time.h>

#include "loader/internal.h"

/* every hermit BPF program's name starts with this (see bpf/NAME.bpf.c) */
#define HM_PROG_PREFIX "hm_"

static const char *point_name(enum bpf_tc_attach_point point)
{
	return point == BPF_TC_EGRESS ? "egress" : "ingress";
}

/* ---- listing the filters of one clsact hook over rtnetlink ----
 * bpf_tc_query needs a handle and a priority; finding other filters needs a dump. */

struct tc_entry {
	uint32_t handle;
	uint32_t priority;
	uint32_t prog_id;
	char name[64]; /* libbpf names its filters "PROG_NAME:[PROG_ID]" */
};

struct tc_listing {
	size_t total; /* every entry the kernel reported, bpf or not */
	size_t n_bpf;
	size_t cap;
	struct tc_entry *bpf;
};

static void tc_listing_free(struct tc_listing *l)
{
	free(l->bpf);
	*l = (struct tc_listing){0};
}

static int collect_attr(const struct nlattr *attr, void *data)
{
	const struct nlattr **tb = data;
	int type = mnl_attr_get_type(attr);
	if (mnl_attr_type_valid(attr, TCA_MAX) < 0)
		return MNL_CB_OK;
	tb[type] = attr;
	return MNL_CB_OK;
}

static int collect_bpf_attr(const struct nlattr *attr, void *data)
{
	const struct nlattr **tb = data;
	int type = mnl_attr_get_type(attr);
	if (mnl_attr_type_valid(attr, TCA_BPF_MAX) < 0)
		return MNL_CB_OK;
	tb[type] = attr;
	return MNL_CB_OK;
}

static int on_filter(const struct nlmsghdr *nlh, void *data)
{
	struct tc_listing *l = data;
	if (nlh->nlmsg_type != RTM_NEWTFILTER)
		return MNL_CB_OK;
	const struct tcmsg *tcm = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[TCA_MAX + 1] = {0};
	if (mnl_attr_parse(nlh, sizeof(*tcm), collect_attr, tb) < 0)
		return MNL_CB_ERROR;
	l->total++;
	if (!tb[TCA_KIND] || mnl_attr_validate(tb[TCA_KIND], MNL_TYPE_NUL_STRING) < 0 ||
	    strcmp(mnl_attr_get_str(tb[TCA_KIND]), "bpf") != 0 || !tb[TCA_OPTIONS])
		return MNL_CB_OK;
	const struct nlattr *opt[TCA_BPF_MAX + 1] = {0};
	if (mnl_attr_parse_nested(tb[TCA_OPTIONS], collect_bpf_attr, opt) < 0)
		return MNL_CB_ERROR;
	/* the per-priority head entry has no program */
	if (!opt[TCA_BPF_ID] || mnl_attr_validate(opt[TCA_BPF_ID], MNL_TYPE_U32) < 0)
		return MNL_CB_OK;
	if (l->n_bpf == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct tc_entry *grown = realloc(l->bpf, cap * sizeof(*grown));
		if (!grown)
			return MNL_CB_ERROR;
		l->bpf = grown;
		l->cap = cap;
	}
	struct tc_entry *e = &l->bpf[l->n_bpf++];
	*e = (struct tc_entry){
	    .handle = tcm->tcm_handle,
	    .priority = TC_H_MAJ(tcm->tcm_info) >> 16,
	    .prog_id = mnl_attr_get_u32(opt[TCA_BPF_ID]),
	};
	if (opt[TCA_BPF_NAME] && mnl_attr_validate(opt[TCA_BPF_NAME], MNL_TYPE_NUL_STRING) == 0)
		snprintf(e->name, sizeof(e->name), "%s", mnl_attr_get_str(opt[TCA_BPF_NAME]));
	return MNL_CB_OK;
}

static void mnl_closep(struct mnl_socket **nl)
{
	if (*nl)
		mnl_socket_close(*nl);
	*nl = NULL;
}
#define cleanup_mnl_socket __attribute__((cleanup(mnl_closep)))

/* Filters on one clsact hook of ifindex, in the calling thread's netns. */
static int tc_list(int ifindex, enum bpf_tc_attach_point point, struct tc_listing *out,
		   struct hm_err *err)
{
	*out = (struct tc_listing){0};
	cleanup_mnl_socket struct mnl_socket *nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0)
		return hm_err_errno(err, "rtnetlink socket");
	/* dump replies fill up to 32 KiB per datagram; a smaller buffer truncates them */
	size_t buf_size = 32768;
	hm_cleanup_free char *buf = malloc(buf_size);
	if (!buf)
		return hm_err_errno(err, "tc filter dump buffer");

	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_GETTFILTER;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = (uint32_t)time(NULL);
	struct tcmsg *tcm = mnl_nlmsg_put_extra_header(nlh, sizeof(*tcm));
	tcm->tcm_family = AF_UNSPEC;
	tcm->tcm_ifindex = ifindex;
	tcm->tcm_parent =
	    TC_H_MAKE(TC_H_CLSACT, point == BPF_TC_EGRESS ? TC_H_MIN_EGRESS : TC_H_MIN_INGRESS);
	uint32_t seq = nlh->nlmsg_seq;
	uint32_t portid = mnl_socket_get_portid(nl);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return hm_err_errno(err, "send tc filter dump request");

	int r;
	do {
		ssize_t n = mnl_socket_recvfrom(nl, buf, buf_size);
		if (n < 0) {
			int saved = errno;
			tc_listing_free(out);
			return hm_err_set(err, saved, "read tc filter dump");
		}
		errno = ENOMEM; /* what a failing callback means, unless the kernel said more */
		r = mnl_cb_run(buf, n, seq, portid, on_filter, out);
	} while (r > MNL_CB_STOP);
	if (r < 0) {
		int saved = errno;
		tc_listing_free(out);
		return hm_err_set(err, saved, "tc filter dump");
	}
	return 0;
}

/* ---- is anyone still holding a program? ---- */

static bool fdinfo_has_prog_id(int pid, const char *fd_name, uint32_t prog_id)
{
	char path[sizeof("/proc//fdinfo/") + 12 + sizeof(((struct dirent *)0)->d_name)];
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", pid, fd_name);
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char text[1024];
	ssize_t n = hm_read_all(fd, text, sizeof(text) - 1);
	if (n <= 0)
		return false;
	text[n] = '\0';
	const char *line = strstr(text, "prog_id:");
	return line && strtoul(line + strlen("prog_id:"), NULL, 10) == prog_id;
}

/* A process that holds prog_id through a program or link fd, 0 when none does (as far
 * as this /proc shows: a caller in its own pid namespace sees only its peers). */
static pid_t prog_holder(uint32_t prog_id)
{
	DIR *proc = opendir("/proc");
	if (!proc)
		return 0;
	pid_t holder = 0;
	struct dirent *de;
	while (!holder && (de = readdir(proc))) {
		if (!isdigit((unsigned char)de->d_name[0]))
			continue;
		int pid = atoi(de->d_name);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/fd", pid);
		int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			continue; /* exited meanwhile */
		DIR *fds = fdopendir(dfd);
		if (!fds) {
			close(dfd);
			continue;
		}
		struct dirent *fe;
		while (!holder && (fe = readdir(fds))) {
			char target[64];
			ssize_t n = readlinkat(dirfd(fds), fe->d_name, target, sizeof(target) - 1);
			if (n <= 0)
				continue;
			target[n] = '\0';
			if (strcmp(target, "anon_inode:bpf-prog") != 0 &&
			    strcmp(target, "anon_inode:bpf_link") != 0)
				continue;
			if (fdinfo_has_prog_id(pid, fe->d_name, prog_id))
				holder = pid;
		}
		closedir(fds);
	}
	closedir(proc);
	return holder;
}

/* ---- the steps, all in the target's netns ---- */

/* Remove the hermit filters of ifindex whose program no process holds. own (may be
 * NULL): the filter about to be attached, whose slot held by a live process is EBUSY. */
static int remove_stale_filters(int ifindex, const char *ifname, const struct hm_tc_filter *own,
				int *removed, struct hm_err *err)
{
	static const enum bpf_tc_attach_point points[] = {BPF_TC_INGRESS, BPF_TC_EGRESS};
	for (size_t p = 0; p < HM_ARRAY_SIZE(points); p++) {
		struct tc_listing l;
		if (tc_list(ifindex, points[p], &l, err) < 0)
			return hm_err_prefix(err, "list %s filters of %s", point_name(points[p]),
					     ifname);
		int r = 0;
		for (size_t i = 0; i < l.n_bpf && r == 0; i++) {
			const struct tc_entry *e = &l.bpf[i];
			if (strncmp(e->name, HM_PROG_PREFIX, strlen(HM_PROG_PREFIX)) != 0)
				continue;
			pid_t holder = prog_holder(e->prog_id);
			if (holder) {
				if (own && points[p] == own->point && e->handle == own->handle &&
				    e->priority == own->priority)
					r = hm_err_set(
					    err, EBUSY,
					    "%s %s already has hermit filter %s (prio %u), "
					    "held by live pid %d",
					    ifname, point_name(points[p]), e->name, e->priority,
					    holder);
				continue;
			}
			LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex,
				    .attach_point = points[p]);
			LIBBPF_OPTS(bpf_tc_opts, opts, .handle = e->handle,
				    .priority = e->priority);
			int d = bpf_tc_detach(&hook, &opts);
			if (d == 0) {
				hm_info("removed stale hermit tc filter %s from %s %s (prio %u)",
					e->name, ifname, point_name(points[p]), e->priority);
				if (removed)
					(*removed)++;
			} else if (d != -ENOENT) { /* ENOENT: another cleaner was faster */
				r = hm_err_set(err, -d, "remove stale hermit filter %s from %s %s",
					       e->name, ifname, point_name(points[p]));
			}
		}
		tc_listing_free(&l);
		if (r < 0)
			return r;
	}
	return 0;
}

static int remove_clsact_if_unused(const struct hm_tc_filter *f, struct hm_err *err)
{
	size_t others = 0;
	static const enum bpf_tc_attach_point points[] = {BPF_TC_INGRESS, BPF_TC_EGRESS};
	for (size_t p = 0; p < HM_ARRAY_SIZE(points); p++) {
		struct tc_listing l;
		if (tc_list(f->ifindex, points[p], &l, err) < 0)
			return hm_err_prefix(err, "list filters of %s", f->ifname);
		others += l.total;
		tc_listing_free(&l);
	}
	if (others) {
		hm_debug("keeping clsact on %s: %zu filter entries of others", f->ifname, others);
		return 0;
	}
	/* INGRESS|EGRESS is libbpf's way of saying "delete the qdisc", not just flush */
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = f->ifindex,
		    .attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS);
	int r = bpf_tc_hook_destroy(&hook);
	if (r < 0 && r != -ENOENT && r != -EINVAL)
		return hm_err_set(err, -r, "remove clsact qdisc from %s", f->ifname);
	return 0;
}

static int attach_here(struct hm_tc_filter *f, int prog_fd, struct hm_err *err)
{
	f->ifindex = (int)if_nametoindex(f->ifname);
	if (!f->ifindex)
		return hm_err_errno(err, "interface %s", f->ifname);

	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = f->ifindex, .attach_point = f->point);
	int r = bpf_tc_hook_create(&hook);
	if (r < 0 && r != -EEXIST)
		return hm_err_set(err, -r, "add clsact qdisc to %s", f->ifname);
	f->created_clsact = r == 0;

	if (remove_stale_filters(f->ifindex, f->ifname, f, NULL, err) < 0)
		goto undo;
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog_fd, .handle = f->handle,
		    .priority = f->priority);
	r = bpf_tc_attach(&hook, &opts);
	if (r == -EEXIST) {
		hm_err_set(err, EBUSY, "%s %s: tc handle %#x prio %u is taken", f->ifname,
			   point_name(f->point), f->handle, f->priority);
		goto undo;
	}
	if (r < 0) {
		hm_err_set(err, -r, "attach tc filter to %s %s", f->ifname, point_name(f->point));
		goto undo;
	}
	f->prog_id = opts.prog_id;
	return 0;
undo:
	if (f->created_clsact) {
		struct hm_err ignored;
		remove_clsact_if_unused(f, &ignored);
		f->created_clsact = false;
	}
	return -1;
}

static int detach_here(struct hm_tc_filter *f, struct hm_err *err)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = f->ifindex, .attach_point = f->point);
	LIBBPF_OPTS(bpf_tc_opts, query, .handle = f->handle, .priority = f->priority);
	int r = bpf_tc_query(&hook, &query);
	if (r == -ENODEV) {
		/* the pod's interface went away, and our filter and the qdisc with it */
		hm_debug("%s is gone: nothing to detach", f->ifname);
		return 0;
	}
	if (r == -ENOENT || r == -EINVAL) {
		/* EINVAL: the kernel's "parent qdisc does not exist" — someone removed it */
		hm_warn("hermit filter on %s %s was already removed by someone else", f->ifname,
			point_name(f->point));
	} else if (r < 0) {
		return hm_err_set(err, -r, "query tc filter on %s", f->ifname);
	} else if (query.prog_id != f->prog_id) {
		hm_warn("hermit filter on %s %s now runs prog id %u, not ours (%u): leaving it",
			f->ifname, point_name(f->point), query.prog_id, f->prog_id);
	} else {
		LIBBPF_OPTS(bpf_tc_opts, opts, .handle = f->handle, .priority = f->priority);
		r = bpf_tc_detach(&hook, &opts);
		if (r < 0 && r != -ENOENT)
			return hm_err_set(err, -r, "detach tc filter from %s %s", f->ifname,
					  point_name(f->point));
	}
	if (f->created_clsact && remove_clsact_if_unused(f, err) < 0)
		return -1;
	return 0;
}

int hm_tc_filter_attach(struct hm_tc_filter *f, int netns_fd, const char *ifname,
			enum bpf_tc_attach_point point, uint32_t priority, int prog_fd,
			struct hm_err *err)
{
	*f = (struct hm_tc_filter){
	    .netns_fd = -1, .point = point, .handle = HM_TC_HANDLE, .priority = priority};
	if (!ifname || !*ifname || strlen(ifname) >= sizeof(f->ifname))
		return hm_err_set(err, EINVAL, "bad interface name '%s'", ifname ? ifname : "");
	snprintf(f->ifname, sizeof(f->ifname), "%s", ifname);
	hm_cleanup_close int ns = fcntl(netns_fd, F_DUPFD_CLOEXEC, 3);
	if (ns < 0)
		return hm_err_errno(err, "dup netns fd");

	struct hm_netns_switch sw;
	if (hm_netns_enter(ns, &sw, err) < 0)
		return -1;
	int r = attach_here(f, prog_fd, err);
	struct hm_err leave_err;
	if (hm_netns_leave(&sw, &leave_err) < 0) {
		/* still in the target netns, so the attachment can be undone right here */
		if (r == 0) {
			struct hm_err ignored;
			detach_here(f, &ignored);
		}
		*err = leave_err;
		return -1;
	}
	if (r < 0)
		return -1;
	f->netns_fd = hm_steal_fd(&ns);
	f->attached = true;
	hm_debug("tc filter prog id %u on %s %s (handle %#x prio %u%s)", f->prog_id, f->ifname,
		 point_name(f->point), f->handle, f->priority,
		 f->created_clsact ? ", clsact created" : "");
	return 0;
}

int hm_tc_filter_detach(struct hm_tc_filter *f, struct hm_err *err)
{
	if (!f->attached)
		return 0;
	hm_cleanup_close int ns = hm_steal_fd(&f->netns_fd);
	f->attached = false;
	struct hm_netns_switch sw;
	if (hm_netns_enter(ns, &sw, err) < 0)
		return hm_err_prefix(err, "detach from %s", f->ifname);
	int r = detach_here(f, err);
	struct hm_err leave_err;
	if (hm_netns_leave(&sw, &leave_err) < 0) {
		*err = leave_err;
		return -1;
	}
	return r;
}

int hm_tc_remove_stale_in(int netns_fd, struct hm_err *err)
{
	struct hm_netns_switch sw;
	if (hm_netns_enter(netns_fd, &sw, err) < 0)
		return -1;
	int removed = 0, r = 0;
	struct if_nameindex *ifs = if_nameindex();
	if (!ifs)
		r = hm_err_errno(err, "list interfaces");
	for (struct if_nameindex *i = ifs; i && i->if_index && r == 0; i++) {
		r = remove_stale_filters((int)i->if_index, i->if_name, NULL, &removed, err);
		/* an interface without clsact or gone meanwhile has nothing of ours */
		if (r < 0 && (err->code == EINVAL || err->code == ENODEV || err->code == ENOENT))
			r = 0;
	}
	if (ifs)
		if_freenameindex(ifs);
	struct hm_err leave_err;
	if (hm_netns_leave(&sw, &leave_err) < 0) {
		*err = leave_err;
		return -1;
	}
	return r < 0 ? r : removed;
}
