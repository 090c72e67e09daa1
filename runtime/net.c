/* Pod networking for `--net bridge`: one shared host bridge on a private /16, a veth
 * pair per pod, and the address bookkeeping that keeps concurrent trace-pods from
 * handing out the same IP. Everything goes over rtnetlink with libmnl.
 *
 * The host's forwarding and firewall settings are deliberately left alone: pod<->pod and
 * pod<->bridge traffic stays on the bridge and needs neither ip_forward nor NAT. */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "runtime/internal.h"

/* GETLINK replies of a bridge with many ports can be several KiB; a truncated datagram
 * is lost, so receive into a buffer comfortably larger than any single reply. */
#define NL_RECV_BUF 32768
/* Every request we build is a few hundred bytes. */
#define NL_SEND_BUF 4096
#define POD_IFNAME "eth0"
#define HOST_IF_PREFIX "hm"
/* "hm" + 8 hex digits + NUL */
#define HOST_IF_LEN 11
#define VETH_NAME_ATTEMPTS 8

struct nl_conn {
	struct mnl_socket *sock;
	unsigned int portid;
	unsigned int seq;
};

static void nl_conn_close(struct nl_conn *c)
{
	if (c->sock)
		mnl_socket_close(c->sock);
	c->sock = NULL;
}

#define cleanup_nl_conn __attribute__((cleanup(nl_conn_close)))

static int nl_conn_open(struct nl_conn *c, struct hm_err *err)
{
	c->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!c->sock)
		return hm_err_errno(err, "open rtnetlink socket");
	if (mnl_socket_bind(c->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		int saved = errno;
		nl_conn_close(c);
		return hm_err_set(err, saved, "bind rtnetlink socket");
	}
	/* Best effort: the kernel's own explanation (extack) makes errors far clearer, and
	 * capped ACKs keep large requests from being echoed back. Older kernels lack both. */
	int one = 1;
	mnl_socket_setsockopt(c->sock, NETLINK_EXT_ACK, &one, sizeof(one));
	mnl_socket_setsockopt(c->sock, NETLINK_CAP_ACK, &one, sizeof(one));
	c->portid = mnl_socket_get_portid(c->sock);
	c->seq = (unsigned int)getpid() << 8;
	return 0;
}

/* What one request's replies and ACK produced. */
struct nl_reply {
	mnl_cb_t data_cb;
	void *data;
	int error;	  /* errno from the ACK, 0 on success */
	char extack[256]; /* the kernel's message, if it sent one */
};

static int nl_extack_attr_cb(const struct nlattr *attr, void *data)
{
	struct nl_reply *reply = data;
	if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG &&
	    mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0)
		snprintf(reply->extack, sizeof(reply->extack), "%s", mnl_attr_get_str(attr));
	return MNL_CB_OK;
}

static int nl_error_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nl_reply *reply = data;
	if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr))) {
		reply->error = EBADMSG;
		return MNL_CB_ERROR;
	}
	const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
	if (e->error == 0)
		return MNL_CB_STOP;
	reply->error = -e->error;
	if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
		/* The TLVs follow the echoed request, which is only its header when capped. */
		size_t offset = sizeof(*e);
		if (!(nlh->nlmsg_flags & NLM_F_CAPPED) &&
		    e->msg.nlmsg_len > sizeof(struct nlmsghdr))
			offset += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
		if (mnl_nlmsg_size(offset) <= nlh->nlmsg_len)
			mnl_attr_parse(nlh, offset, nl_extack_attr_cb, reply);
	}
	errno = reply->error;
	return MNL_CB_ERROR;
}

static int nl_data_cb(const struct nlmsghdr *nlh, void *data)
{
	struct nl_reply *reply = data;
	return reply->data_cb ? reply->data_cb(nlh, reply->data) : MNL_CB_OK;
}

/* Send one request with NLM_F_ACK and consume everything up to its ACK. On failure
 * err says "<what>: <strerror>" (plus the kernel's extack text) and err->code is the
 * errno, so callers can tolerate EEXIST or ENODEV. */
static int nl_transact(struct nl_conn *c, struct nlmsghdr *nlh, mnl_cb_t data_cb, void *data,
		       struct hm_err *err, const char *what_fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int nl_transact(struct nl_conn *c, struct nlmsghdr *nlh, mnl_cb_t data_cb, void *data,
		       struct hm_err *err, const char *what_fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, what_fmt);
	vsnprintf(what, sizeof(what), what_fmt, ap);
	va_end(ap);

	nlh->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = ++c->seq;
	if (mnl_socket_sendto(c->sock, nlh, nlh->nlmsg_len) < 0)
		return hm_err_errno(err, "%s: netlink send", what);

	struct nl_reply reply = {.data_cb = data_cb, .data = data};
	mnl_cb_t ctl_cbs[NLMSG_MIN_TYPE] = {[NLMSG_ERROR] = nl_error_cb};
	char *buf = malloc(NL_RECV_BUF);
	if (!buf)
		return hm_err_set(err, ENOMEM, "%s", what);
	int ret;
	do {
		ssize_t n = mnl_socket_recvfrom(c->sock, buf, NL_RECV_BUF);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int saved = errno;
			free(buf);
			return hm_err_set(err, saved, "%s: netlink receive", what);
		}
		ret = mnl_cb_run2(buf, n, nlh->nlmsg_seq, c->portid, nl_data_cb, &reply, ctl_cbs,
				  HM_ARRAY_SIZE(ctl_cbs));
	} while (ret > MNL_CB_STOP);
	int saved = errno;
	free(buf);
	if (ret == MNL_CB_ERROR) {
		int code = reply.error ? reply.error : saved;
		hm_err_set(err, code, "%s", what);
		if (reply.extack[0]) {
			size_t len = strlen(err->msg);
			snprintf(err->msg + len, sizeof(err->msg) - len, " (%s)", reply.extack);
		}
		return -1;
	}
	return 0;
}

static struct nlmsghdr *nl_link_msg(char *buf, uint16_t type, uint16_t flags,
				    struct ifinfomsg **ifm)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = flags;
	*ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(**ifm));
	(*ifm)->ifi_family = AF_UNSPEC;
	return nlh;
}

struct link_info {
	int index;
	char kind[32]; /* IFLA_INFO_KIND, "" for plain devices such as lo */
};

static int link_linkinfo_cb(const struct nlattr *attr, void *data)
{
	struct link_info *li = data;
	if (mnl_attr_get_type(attr) == IFLA_INFO_KIND &&
	    mnl_attr_validate(attr, MNL_TYPE_STRING) >= 0)
		snprintf(li->kind, sizeof(li->kind), "%.*s", (int)mnl_attr_get_payload_len(attr),
			 (const char *)mnl_attr_get_payload(attr));
	return MNL_CB_OK;
}

static int link_attr_cb(const struct nlattr *attr, void *data)
{
	if (mnl_attr_get_type(attr) == IFLA_LINKINFO &&
	    mnl_attr_validate(attr, MNL_TYPE_NESTED) >= 0)
		mnl_attr_parse_nested(attr, link_linkinfo_cb, data);
	return MNL_CB_OK;
}

static int link_reply_cb(const struct nlmsghdr *nlh, void *data)
{
	struct link_info *li = data;
	if (nlh->nlmsg_type != RTM_NEWLINK)
		return MNL_CB_OK;
	const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
	li->index = ifm->ifi_index;
	mnl_attr_parse(nlh, sizeof(*ifm), link_attr_cb, li);
	return MNL_CB_OK;
}

/* Look a link up by name in the connection's netns; ENODEV when it is not there. */
static int link_get(struct nl_conn *c, const char *ifname, struct link_info *li, struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh = nl_link_msg(buf, RTM_GETLINK, 0, &ifm);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
	mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
	memset(li, 0, sizeof(*li));
	if (nl_transact(c, nlh, link_reply_cb, li, err, "look up link %s", ifname) < 0)
		return -1;
	if (li->index <= 0)
		return hm_err_set(err, ENODEV, "look up link %s", ifname);
	return 0;
}

static int link_set_up(struct nl_conn *c, int index, const char *ifname, struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh = nl_link_msg(buf, RTM_NEWLINK, 0, &ifm);
	ifm->ifi_index = index;
	ifm->ifi_flags = IFF_UP;
	ifm->ifi_change = IFF_UP;
	return nl_transact(c, nlh, NULL, NULL, err, "set %s up", ifname);
}

/* Add addr/prefixlen to a link; EEXIST is reported to the caller like any error. */
static int addr_add(struct nl_conn *c, int index, const char *ifname, struct in_addr addr,
		    int prefixlen, struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWADDR;
	nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = prefixlen;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = index;
	uint32_t mask = prefixlen ? htonl(~0u << (32 - prefixlen)) : 0;
	uint32_t brd = addr.s_addr | ~mask;
	mnl_attr_put(nlh, IFA_LOCAL, sizeof(addr), &addr);
	mnl_attr_put(nlh, IFA_ADDRESS, sizeof(addr), &addr);
	mnl_attr_put(nlh, IFA_BROADCAST, sizeof(brd), &brd);
	char text[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &addr, text, sizeof(text));
	return nl_transact(c, nlh, NULL, NULL, err, "add address %s/%d to %s", text, prefixlen,
			   ifname);
}

static int route_add_default(struct nl_conn *c, int index, const char *ifname, struct in_addr gw,
			     struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWROUTE;
	nlh->nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_INET;
	rtm->rtm_dst_len = 0;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_BOOT;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put(nlh, RTA_GATEWAY, sizeof(gw), &gw);
	mnl_attr_put_u32(nlh, RTA_OIF, index);
	char text[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &gw, text, sizeof(text));
	return nl_transact(c, nlh, NULL, NULL, err, "add default route via %s dev %s", text,
			   ifname);
}

/* The bridge is shared by every pod and outlives them: concurrent trace-pods race to
 * create and address it, so every step treats EEXIST as "someone else did it". */
static int bridge_ensure(struct nl_conn *c, int *bridge_index, struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh = nl_link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifm);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, RT_BRIDGE_NAME);
	/* A bridge without an explicitly set MAC takes the lowest MAC of its ports, so it
	 * would change as pods come and go and leave stale ARP entries in every pod. */
	uint8_t mac[6];
	if (getrandom(mac, sizeof(mac), GRND_NONBLOCK) != sizeof(mac)) {
		uint32_t r = (uint32_t)getpid() * 2654435761u;
		memcpy(mac + 2, &r, 4);
	}
	mac[0] = 0x02; /* locally administered, unicast */
	mac[1] = 0x68;
	mnl_attr_put(nlh, IFLA_ADDRESS, sizeof(mac), mac);
	struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
	mnl_attr_nest_end(nlh, linkinfo);
	if (nl_transact(c, nlh, NULL, NULL, err, "create bridge %s", RT_BRIDGE_NAME) < 0 &&
	    err->code != EEXIST)
		return -1;

	struct link_info li;
	if (link_get(c, RT_BRIDGE_NAME, &li, err) < 0)
		return -1;
	if (strcmp(li.kind, "bridge") != 0)
		return hm_err_set(err, EEXIST, "%s exists but is a %s device, not a bridge",
				  RT_BRIDGE_NAME, li.kind[0] ? li.kind : "plain");

	struct in_addr addr;
	inet_pton(AF_INET, RT_BRIDGE_IP, &addr);
	if (addr_add(c, li.index, RT_BRIDGE_NAME, addr, RT_BRIDGE_PREFIXLEN, err) < 0 &&
	    err->code != EEXIST)
		return -1;
	if (link_set_up(c, li.index, RT_BRIDGE_NAME, err) < 0)
		return -1;
	*bridge_index = li.index;
	return 0;
}

/* "hm" + 4 hex digits of the pod name's hash (so `ip link` hints at the pod) + 4 random
 * hex digits (so a name reused quickly, or two names with the same hash, still differ). */
static void host_if_name(const char *pod, char *out, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)pod; *p; p++)
		h = (h ^ *p) * 16777619u;
	uint16_t salt;
	if (getrandom(&salt, sizeof(salt), GRND_NONBLOCK) != sizeof(salt)) {
		static uint16_t counter;
		salt = (uint16_t)(getpid() * 31 + ++counter);
	}
	snprintf(out, len, HOST_IF_PREFIX "%04x%04x", (unsigned)((h ^ (h >> 16)) & 0xffff),
		 (unsigned)salt);
}

static int veth_create(struct nl_conn *c, const char *host_if, int bridge_index, int pod_netns_fd,
		       struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh = nl_link_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifm);
	/* Host side joins the bridge and comes up in the same request as its creation. */
	ifm->ifi_flags = IFF_UP;
	ifm->ifi_change = IFF_UP;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, host_if);
	mnl_attr_put_u32(nlh, IFLA_MASTER, bridge_index);
	struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	struct nlattr *info_data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	struct ifinfomsg *peer_ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*peer_ifm));
	peer_ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, POD_IFNAME);
	/* The fd pins the very netns we configure next; a pid could in principle be reused. */
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, pod_netns_fd);
	mnl_attr_nest_end(nlh, peer);
	mnl_attr_nest_end(nlh, info_data);
	mnl_attr_nest_end(nlh, linkinfo);
	return nl_transact(c, nlh, NULL, NULL, err, "create veth %s", host_if);
}

static int link_delete(struct nl_conn *c, const char *ifname, struct hm_err *err)
{
	char buf[NL_SEND_BUF] = {0}; /* attribute padding goes to the kernel too */
	struct ifinfomsg *ifm;
	struct nlmsghdr *nlh = nl_link_msg(buf, RTM_DELLINK, 0, &ifm);
	mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
	return nl_transact(c, nlh, NULL, NULL, err, "delete link %s", ifname);
}

static int netns_open(pid_t pid, struct hm_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "open network namespace of pid %d", (int)pid);
	return fd;
}

/* A netlink socket stays bound to the netns it was created in, so entering the pod's
 * netns just long enough to create one lets us configure the pod from our own netns.
 * Namespaces are per thread; trace-pod is single-threaded, and we return before
 * anything else can run. */
static int nl_conn_open_in_netns(struct nl_conn *c, int netns_fd, struct hm_err *err)
{
	hm_cleanup_close int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0)
		return hm_err_errno(err, "open own network namespace");
	if (setns(netns_fd, CLONE_NEWNET) < 0)
		return hm_err_errno(err, "enter pod network namespace");
	int r = nl_conn_open(c, err);
	if (setns(self, CLONE_NEWNET) < 0) {
		/* Practically impossible for root; if it happens we are stranded in the
		 * pod's netns and the caller must give up on the pod. */
		int saved = errno;
		nl_conn_close(c);
		return hm_err_set(err, saved, "return to own network namespace");
	}
	if (r < 0)
		return hm_err_prefix(err, "in pod network namespace");
	return 0;
}

static int loopback_up(struct nl_conn *c, struct hm_err *err)
{
	struct link_info lo;
	if (link_get(c, "lo", &lo, err) < 0)
		return -1;
	return link_set_up(c, lo.index, "lo", err);
}

static int pod_configure(struct nl_conn *c, struct in_addr addr, struct hm_err *err)
{
	if (loopback_up(c, err) < 0)
		return -1;
	struct link_info eth;
	if (link_get(c, POD_IFNAME, &eth, err) < 0)
		return -1;
	/* Up before the address so the connected /16 route exists when the default route's
	 * gateway is checked for reachability. */
	if (link_set_up(c, eth.index, POD_IFNAME, err) < 0)
		return -1;
	if (addr_add(c, eth.index, POD_IFNAME, addr, RT_BRIDGE_PREFIXLEN, err) < 0)
		return -1;
	struct in_addr gw;
	inet_pton(AF_INET, RT_BRIDGE_IP, &gw);
	return route_add_default(c, eth.index, POD_IFNAME, gw, err);
}

int rt_net_setup_pod(pid_t pid, const char *name, const char *ip, char *host_if, size_t host_if_len,
		     struct hm_err *err)
{
	if (host_if_len < HOST_IF_LEN)
		return hm_err_set(err, EINVAL, "host interface buffer too small");
	host_if[0] = '\0';
	struct in_addr addr;
	if (!ip || inet_pton(AF_INET, ip, &addr) != 1)
		return hm_err_set(err, EINVAL, "pod address \"%s\" is not an IPv4 address",
				  ip ? ip : "");

	hm_cleanup_close int pod_netns = netns_open(pid, err);
	if (pod_netns < 0)
		return -1;
	cleanup_nl_conn struct nl_conn host = {0};
	if (nl_conn_open(&host, err) < 0)
		return -1;
	int bridge_index = 0;
	if (bridge_ensure(&host, &bridge_index, err) < 0)
		return -1;

	char ifname[HOST_IF_LEN];
	for (int attempt = 0;; attempt++) {
		host_if_name(name ? name : "", ifname, sizeof(ifname));
		if (veth_create(&host, ifname, bridge_index, pod_netns, err) == 0)
			break;
		/* EEXIST is either our random host name colliding (try another) or an eth0
		 * already in the pod, which no other name fixes. */
		if (err->code != EEXIST || attempt + 1 >= VETH_NAME_ATTEMPTS)
			return -1;
		if (if_nametoindex(ifname) == 0)
			return hm_err_prefix(err, "pod %s already has an %s", name, POD_IFNAME);
	}

	cleanup_nl_conn struct nl_conn pod = {0};
	if (nl_conn_open_in_netns(&pod, pod_netns, err) < 0 || pod_configure(&pod, addr, err) < 0) {
		struct hm_err ignored;
		link_delete(&host, ifname, &ignored);
		return hm_err_prefix(err, "pod %s", name);
	}
	snprintf(host_if, host_if_len, "%s", ifname);
	return 0;
}

int rt_net_setup_loopback(pid_t pid, struct hm_err *err)
{
	hm_cleanup_close int pod_netns = netns_open(pid, err);
	if (pod_netns < 0)
		return -1;
	cleanup_nl_conn struct nl_conn pod = {0};
	if (nl_conn_open_in_netns(&pod, pod_netns, err) < 0)
		return -1;
	return loopback_up(&pod, err);
}

static bool link_listed(unsigned index, const char *ifname)
{
	char name[IF_NAMESIZE];
	return if_indextoname(index, name) && !strcmp(name, ifname);
}

/* RTM_DELLINK keeps its sender in the kernel well after the link is unlisted: the
 * rcu_barrier() of netdev_run_todo costs ~20 ms, more than a whole pod start. So a
 * forked helper sends the request and stays for that part, and we return as soon as the
 * link is gone from the host's list (~2 ms). When the helper fails, the request is
 * repeated here, where its error is read. */
int rt_net_teardown_pod(const char *host_if, struct hm_err *err)
{
	if (!host_if || !host_if[0])
		return 0;
	/* When the pod's netns dies first the kernel removes the pair by itself. */
	unsigned index = if_nametoindex(host_if);
	if (index == 0 && errno == ENODEV)
		return 0;
	cleanup_nl_conn struct nl_conn host = {0};
	if (nl_conn_open(&host, err) < 0)
		return -1;
	pid_t helper = index ? fork() : -1;
	if (helper == 0) {
		/* only the socket: a caller reading our stdout must not wait for the helper */
		int sock = mnl_socket_get_fd(host.sock);
		if (sock > 0)
			syscall(SYS_close_range, 0, sock - 1, 0);
		syscall(SYS_close_range, sock + 1, ~0U, 0);
		char buf[NL_SEND_BUF] = {0};
		struct ifinfomsg *ifm;
		struct nlmsghdr *nlh = nl_link_msg(buf, RTM_DELLINK, 0, &ifm);
		nlh->nlmsg_flags |= NLM_F_REQUEST;
		mnl_attr_put_strz(nlh, IFLA_IFNAME, host_if);
		_exit(mnl_socket_sendto(host.sock, nlh, nlh->nlmsg_len) < 0 ? 1 : 0);
	}
	if (helper > 0) {
		hm_cleanup_close int pidfd = syscall(SYS_pidfd_open, helper, 0);
		bool exited = false;
		for (int waited_ms = 0; pidfd >= 0 && waited_ms < 10000; waited_ms++) {
			if (!link_listed(index, host_if))
				return 0; /* the helper is reaped with us, or by init */
			if (exited)
				break;
			if (hm_poll_fd(pidfd, POLLIN, hm_deadline_in(1)) > 0) {
				waitpid(helper, NULL, 0);
				exited = true; /* one more look at the list, then ask ourselves */
			}
		}
		if (!exited)
			hm_debug("veth %s: deletion helper still busy, deleting here", host_if);
	}
	if (link_delete(&host, host_if, err) < 0 && err->code != ENODEV)
		return -1;
	return 0;
}

/* ---- address allocation ---- */

/* Host part (16 bits) of a 10.213.x.y address. Skips the network, the bridge and every
 * x.0 / x.255, which some stacks still treat as network/broadcast forms. */
static bool host_part_usable(uint32_t host)
{
	uint32_t low = host & 0xff;
	return host > 1 && low != 0 && low != 255;
}

static int parse_pod_ip(const char *text, uint32_t *host)
{
	char buf[INET_ADDRSTRLEN];
	size_t n = strcspn(text, " \t\r\n");
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, text, n);
	buf[n] = '\0';
	struct in_addr addr, net;
	if (inet_pton(AF_INET, buf, &addr) != 1 ||
	    inet_pton(AF_INET, RT_BRIDGE_PREFIX ".0.0", &net) != 1)
		return -1;
	uint32_t a = ntohl(addr.s_addr), base = ntohl(net.s_addr);
	if ((a & 0xffff0000u) != base)
		return -1;
	*host = a & 0xffff;
	return 0;
}

/* Mark every address recorded by another pod's state dir. */
static int collect_used(const char *self, uint8_t *used, struct hm_err *err)
{
	DIR *dir = opendir(RT_STATE_DIR);
	if (!dir)
		return hm_err_errno(err, "open %s", RT_STATE_DIR);
	struct dirent *de;
	while ((errno = 0, de = readdir(dir))) {
		if (de->d_name[0] == '.' || strcmp(de->d_name, self) == 0)
			continue;
		char path[PATH_MAX];
		rt_state_path(de->d_name, "ip", path, sizeof(path));
		hm_cleanup_free char *text = NULL;
		struct hm_err ignored;
		uint32_t host;
		/* A pod without an ip file (--net host/none, or mid-creation) holds nothing. */
		if (hm_read_file(path, &text, NULL, &ignored) == 0 &&
		    parse_pod_ip(text, &host) == 0)
			used[host / 8] |= 1u << (host % 8);
	}
	int saved = errno;
	closedir(dir);
	if (saved)
		return hm_err_set(err, saved, "read %s", RT_STATE_DIR);
	return 0;
}

int rt_net_alloc_ip(const char *name, char *ip, size_t iplen, struct hm_err *err)
{
	if (!name || !rt_name_valid(name))
		return hm_err_set(err, EINVAL, "invalid pod name \"%s\"", name ? name : "");
	if (iplen < INET_ADDRSTRLEN)
		return hm_err_set(err, EINVAL, "address buffer too small");
	if (hm_mkdir_p(RT_RUN_DIR, 0755, err) < 0)
		return -1;

	const char *lock_path = RT_RUN_DIR "/ipam.lock";
	hm_cleanup_close int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock < 0)
		return hm_err_errno(err, "open %s", lock_path);
	while (flock(lock, LOCK_EX) < 0) {
		if (errno != EINTR)
			return hm_err_errno(err, "lock %s", lock_path);
	}

	char pod_dir[PATH_MAX];
	rt_state_path(name, NULL, pod_dir, sizeof(pod_dir));
	struct stat st;
	if (stat(pod_dir, &st) < 0)
		return hm_err_errno(err, "state directory of pod %s", name);
	if (!S_ISDIR(st.st_mode))
		return hm_err_set(err, ENOTDIR, "state directory of pod %s", name);

	/* a pod that already holds an address keeps it */
	char own_path[PATH_MAX];
	rt_state_path(name, "ip", own_path, sizeof(own_path));
	hm_cleanup_free char *own = NULL;
	uint32_t own_host;
	if (hm_read_file(own_path, &own, NULL, NULL) == 0 && parse_pod_ip(own, &own_host) == 0 &&
	    host_part_usable(own_host)) {
		snprintf(ip, iplen, "%s.%u.%u", RT_BRIDGE_PREFIX, own_host >> 8, own_host & 0xff);
		return 0;
	}

	hm_cleanup_free uint8_t *used = calloc(65536 / 8, 1);
	if (!used)
		return hm_err_set(err, ENOMEM, "allocate address for pod %s", name);
	if (collect_used(name, used, err) < 0)
		return hm_err_prefix(err, "allocate address for pod %s", name);

	/* Hand addresses out round-robin from the last one given, not lowest-free: a
	 * just-released address stays unused as long as possible, so neighbours (the host's
	 * ARP cache on the bridge, other pods) do not talk to a stale MAC for it. */
	char last_text[16] = {0};
	uint32_t last = 1;
	if (pread(lock, last_text, sizeof(last_text) - 1, 0) > 0) {
		uint64_t v;
		last_text[strcspn(last_text, "\n")] = '\0';
		if (hm_parse_u64(last_text, &v) == 0 && v < 65536)
			last = (uint32_t)v;
	}
	uint32_t host = 0;
	for (uint32_t i = 1; i <= 65536; i++) {
		uint32_t candidate = (last + i) % 65536;
		if (host_part_usable(candidate) &&
		    !(used[candidate / 8] & (1u << (candidate % 8)))) {
			host = candidate;
			break;
		}
	}
	if (host == 0)
		return hm_err_set(err, ENOSPC, "no free address left in %s.0.0/%d",
				  RT_BRIDGE_PREFIX, RT_BRIDGE_PREFIXLEN);
	snprintf(last_text, sizeof(last_text), "%u\n", host);
	if (ftruncate(lock, 0) < 0 || pwrite(lock, last_text, strlen(last_text), 0) < 0)
		hm_debug("ipam: cannot record the last address: %s", strerror(errno));

	snprintf(ip, iplen, "%s.%u.%u", RT_BRIDGE_PREFIX, host >> 8, host & 0xff);
	/* Written while the lock is held: the next allocator must see it. */
	if (rt_state_write(name, "ip", ip, err) < 0)
		return hm_err_prefix(err, "record address of pod %s", name);
	return 0;
}
