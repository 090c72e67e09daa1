/* flush_connections: when a port starts being stolen, its established connections in
 * the target's netns are destroyed (sock_diag SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY),
 * so that keep-alive clients, which would stay on the pod's server forever, reconnect
 * and land in the steal. The peer of a destroyed socket sees a reset. */
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <libmnl/libmnl.h>

#include "agent/internal.h"

#define FLUSH_MAX 65536 /* sockets destroyed in one flush */

/* every state with a connection behind it; LISTEN is the pod's server itself and
 * TIME_WAIT has no socket left to destroy */
#define FLUSH_STATES                                                                               \
	((1u << TCP_ESTABLISHED) | (1u << TCP_SYN_RECV) | (1u << TCP_FIN_WAIT1) |                  \
	 (1u << TCP_FIN_WAIT2) | (1u << TCP_CLOSE_WAIT) | (1u << TCP_LAST_ACK) |                   \
	 (1u << TCP_CLOSING))

struct flush_dump {
	uint16_t port; /* network order */
	struct inet_diag_sockid *ids;
	uint8_t *families;
	size_t n;
};

static int collect(const struct nlmsghdr *nlh, void *arg)
{
	struct flush_dump *d = arg;
	const struct inet_diag_msg *r = mnl_nlmsg_get_payload(nlh);
	if (r->id.idiag_sport != d->port || d->n >= FLUSH_MAX)
		return MNL_CB_OK;
	d->ids[d->n] = r->id;
	d->families[d->n] = r->idiag_family;
	d->n++;
	return MNL_CB_OK;
}

static int request(struct mnl_socket *nl, uint16_t type, uint16_t flags, uint8_t family,
		   const struct inet_diag_sockid *id, uint32_t states, mnl_cb_t cb, void *arg,
		   struct hm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = NLM_F_REQUEST | flags;
	uint32_t seq = (uint32_t)hm_now_ms();
	nlh->nlmsg_seq = seq;
	struct inet_diag_req_v2 *req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	req->sdiag_family = family;
	req->sdiag_protocol = IPPROTO_TCP;
	req->idiag_states = states;
	if (id)
		req->id = *id;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return hm_err_errno(err, "sock_diag request");
	unsigned portid = mnl_socket_get_portid(nl);
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0)
			return hm_err_errno(err, "sock_diag reply");
		int rc = mnl_cb_run(buf, (size_t)n, seq, portid, cb, arg);
		if (rc < 0)
			return hm_err_errno(err, "sock_diag");
		if (rc == MNL_CB_STOP)
			return 0;
	}
}

int agent_incoming_flush(struct agent_target *t, uint16_t port, struct hm_err *err)
{
	int fd = agent_target_socket(t, AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG, err);
	if (fd < 0)
		return hm_err_prefix(err, "flush port %u", port);
	struct mnl_socket *nl = mnl_socket_fdopen(fd);
	if (!nl) {
		close(fd);
		return hm_err_errno(err, "flush port %u: netlink", port);
	}
	int rc = -1;
	struct flush_dump d = {.port = htons(port)};
	d.ids = calloc(FLUSH_MAX, sizeof(*d.ids));
	d.families = calloc(FLUSH_MAX, 1);
	if (!d.ids || !d.families) {
		hm_err_set(err, ENOMEM, "flush port %u", port);
		goto out;
	}
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		hm_err_errno(err, "flush port %u: netlink bind", port);
		goto out;
	}
	uint8_t families[] = {AF_INET, AF_INET6};
	for (size_t i = 0; i < HM_ARRAY_SIZE(families); i++)
		if (request(nl, SOCK_DIAG_BY_FAMILY, NLM_F_DUMP, families[i], NULL, FLUSH_STATES,
			    collect, &d, err) < 0) {
			hm_err_prefix(err, "flush port %u: list connections", port);
			goto out;
		}
	int destroyed = 0;
	for (size_t i = 0; i < d.n; i++) {
		struct hm_err one = {0};
		if (request(nl, SOCK_DESTROY, NLM_F_ACK, d.families[i], &d.ids[i], ~0u, NULL, NULL,
			    &one) == 0) {
			destroyed++;
		} else if (one.code == EOPNOTSUPP) {
			hm_err_plain(err, EOPNOTSUPP,
				     "flush port %u: this kernel cannot destroy sockets "
				     "(CONFIG_INET_DIAG_DESTROY)",
				     port);
			goto out;
		} else if (one.code != ENOENT) { /* ENOENT: it closed meanwhile */
			hm_debug("flush port %u: %s", port, one.msg);
		}
	}
	rc = destroyed;
out:
	free(d.ids);
	free(d.families);
	mnl_socket_close(nl);
	return rc;
}
