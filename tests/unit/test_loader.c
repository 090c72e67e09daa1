/* loader: the counter program attached for real. Each test gets two fresh network
 * namespaces joined by a veth pair (made with `ip`, test-only); the program sits on
 * the tc ingress of the "pod" side and the "peer" side sends it traffic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <linux/capability.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "loader/loader.h"

#define POD_IF "hm-pod0"
#define PEER_IF "hm-peer0"
#define POD_IP "10.99.0.2"
#define PEER_IP "10.99.0.1"
#define UDP_PORT 5555
#define ETH_IP_UDP_HEADERS (14 + 20 + 8)

struct fixture {
	char pod_ns[64];
	char peer_ns[64];
	char pod_path[128];
	char peer_path[128];
	struct hm_counter *counters[2];
};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int status = system(cmd);
	return status == -1 || !WIFEXITED(status) ? -1 : WEXITSTATUS(status);
}

static ino_t netns_inode(void)
{
	struct stat st;
	assert_int_equal(stat("/proc/thread-self/ns/net", &st), 0);
	return st.st_ino;
}

/* Run in the namespace at path: returns the fd the calling thread must come back to. */
static int enter(const char *path)
{
	int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	int ns = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(home >= 0 && ns >= 0);
	assert_int_equal(setns(ns, CLONE_NEWNET), 0);
	close(ns);
	return home;
}

static void leave(int home)
{
	assert_int_equal(setns(home, CLONE_NEWNET), 0);
	close(home);
}

/* a socket lives in the netns it was created in, whichever thread uses it later */
static int socket_in(const char *path, int type)
{
	int home = enter(path);
	int s = socket(AF_INET, type | SOCK_CLOEXEC, 0);
	leave(home);
	assert_true(s >= 0);
	return s;
}

static struct sockaddr_in addr(const char *ip, int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

/* count datagrams from the peer to the pod, each received: the program must not drop */
static void udp_peer_to_pod(const struct fixture *fx, int count, size_t payload)
{
	int rx = socket_in(fx->pod_path, SOCK_DGRAM);
	struct sockaddr_in pod = addr(POD_IP, UDP_PORT);
	assert_int_equal(bind(rx, (struct sockaddr *)&pod, sizeof(pod)), 0);
	int tx = socket_in(fx->peer_path, SOCK_DGRAM);
	char buf[2048];
	memset(buf, 'x', sizeof(buf));
	assert_true(payload <= sizeof(buf));
	for (int i = 0; i < count; i++)
		assert_int_equal(sendto(tx, buf, payload, 0, (struct sockaddr *)&pod, sizeof(pod)),
				 (ssize_t)payload);
	for (int i = 0; i < count; i++) {
		struct pollfd p = {.fd = rx, .events = POLLIN};
		assert_int_equal(poll(&p, 1, 3000), 1);
		assert_int_equal(recv(rx, buf, sizeof(buf), 0), (ssize_t)payload);
	}
	close(tx);
	close(rx);
}

/* one SYN to a closed port of the pod: answered by a RST */
static void tcp_syn_peer_to_pod(const struct fixture *fx)
{
	int s = socket_in(fx->peer_path, SOCK_STREAM);
	struct sockaddr_in pod = addr(POD_IP, UDP_PORT);
	assert_int_equal(connect(s, (struct sockaddr *)&pod, sizeof(pod)), -1);
	assert_int_equal(errno, ECONNREFUSED);
	close(s);
}

/* bpf_tc_query for hermit's counter filter on the pod side: 0 or -errno */
static int query_counter_filter(const struct fixture *fx, uint32_t *prog_id)
{
	int home = enter(fx->pod_path);
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)if_nametoindex(POD_IF),
		    .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = HM_TC_HANDLE, .priority = HM_TC_PRIO_COUNTER);
	int r = hook.ifindex ? bpf_tc_query(&hook, &opts) : -ENODEV;
	leave(home);
	if (r == 0 && prog_id)
		*prog_id = opts.prog_id;
	return r;
}

static bool pod_has_clsact(const struct fixture *fx)
{
	return run("ip netns exec %s tc qdisc show dev " POD_IF " | grep -q clsact", fx->pod_ns) ==
	       0;
}

static struct hm_counter_opts counter_opts(const struct fixture *fx, uint8_t only_ip_proto)
{
	return (struct hm_counter_opts){
	    .dev = {.netns_path = fx->pod_path, .netns_fd = -1, .ifname = POD_IF},
	    .only_ip_proto = only_ip_proto,
	};
}

static void attach_ok(struct fixture *fx, int slot, uint8_t only_ip_proto)
{
	struct hm_err err = {0};
	struct hm_counter_opts o = counter_opts(fx, only_ip_proto);
	int r = hm_counter_attach(&o, &fx->counters[slot], &err);
	if (r < 0)
		fail_msg("hm_counter_attach: %s", err.msg);
}

static void destroy_ok(struct fixture *fx, int slot)
{
	struct hm_err err = {0};
	struct hm_counter *c = fx->counters[slot];
	fx->counters[slot] = NULL;
	if (hm_counter_destroy(c, &err) < 0)
		fail_msg("hm_counter_destroy: %s", err.msg);
}

static struct hm_counter_stats read_ok(struct fixture *fx, int slot, uint8_t proto)
{
	struct hm_err err = {0};
	struct hm_counter_stats s;
	if (hm_counter_read(fx->counters[slot], proto, &s, &err) < 0)
		fail_msg("hm_counter_read: %s", err.msg);
	return s;
}

/* ---- fixture ---- */

/* netns of earlier runs that were killed before their teardown */
static void remove_dead_runs_netns(void)
{
	DIR *d = opendir("/run/netns");
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		int pid;
		char side[8];
		if (sscanf(de->d_name, "hm-lt-%7[a-z]-%d", side, &pid) == 2 && kill(pid, 0) < 0 &&
		    errno == ESRCH)
			run("ip netns del %s 2>/dev/null", de->d_name);
	}
	closedir(d);
}

static int group_setup(void **state)
{
	(void)state;
	hm_log_init("test_loader", getenv("HM_TEST_DEBUG") ? HM_LOG_DEBUG : HM_LOG_WARN);
	remove_dead_runs_netns();
	return 0;
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	if (!fx)
		return -1;
	snprintf(fx->pod_ns, sizeof(fx->pod_ns), "hm-lt-pod-%d", getpid());
	snprintf(fx->peer_ns, sizeof(fx->peer_ns), "hm-lt-peer-%d", getpid());
	snprintf(fx->pod_path, sizeof(fx->pod_path), "/run/netns/%s", fx->pod_ns);
	snprintf(fx->peer_path, sizeof(fx->peer_path), "/run/netns/%s", fx->peer_ns);
	*state = fx;
	run("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", fx->pod_ns, fx->peer_ns);
	int r = run("set -e; ip netns add %1$s; ip netns add %2$s; "
		    "ip -n %2$s link add " PEER_IF " type veth peer name " POD_IF " netns %1$s; "
		    "ip -n %2$s addr add " PEER_IP "/24 dev " PEER_IF "; "
		    "ip -n %2$s link set " PEER_IF " up; "
		    "ip -n %1$s addr add " POD_IP "/24 dev " POD_IF "; "
		    "ip -n %1$s link set " POD_IF " up; ip -n %1$s link set lo up",
		    fx->pod_ns, fx->peer_ns);
	/* teardown runs even when setup fails, and removes whatever was made */
	return r == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	for (size_t i = 0; i < HM_ARRAY_SIZE(fx->counters); i++) {
		struct hm_err err;
		if (fx->counters[i] && hm_counter_destroy(fx->counters[i], &err) < 0)
			fprintf(stderr, "teardown: %s\n", err.msg);
	}
	run("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null", fx->pod_ns, fx->peer_ns);
	free(fx);
	return 0;
}

/* ---- tests ---- */

static void test_counts_udp_then_detaches(void **state)
{
	struct fixture *fx = *state;
	ino_t home = netns_inode();
	attach_ok(fx, 0, 0);
	assert_int_equal(netns_inode(), home); /* the thread came back */
	uint32_t prog_id = 0;
	assert_int_equal(query_counter_filter(fx, &prog_id), 0);
	assert_true(prog_id > 0);
	assert_true(pod_has_clsact(fx));

	udp_peer_to_pod(fx, 10, 100);
	struct hm_counter_stats udp = read_ok(fx, 0, IPPROTO_UDP);
	assert_int_equal(udp.packets, 10);
	assert_int_equal(udp.bytes, 10 * (ETH_IP_UDP_HEADERS + 100));
	assert_int_equal(read_ok(fx, 0, IPPROTO_TCP).packets, 0);

	destroy_ok(fx, 0);
	assert_int_equal(netns_inode(), home);
	/* we created the clsact qdisc, so it went too: the query has no parent left */
	assert_false(pod_has_clsact(fx));
	int r = query_counter_filter(fx, NULL);
	assert_true(r == -ENOENT || r == -EINVAL);
}

/* A foreign direct-action program that lets every packet go on to the next filter,
 * attached at prio 1 (before ours) and no longer held by anyone: not hermit's, so the
 * stale-filter cleanup must leave it alone. */
static void attach_foreign_filter(const struct fixture *fx)
{
	const struct bpf_insn pass_on[] = {
	    {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = -1}, /* UNSPEC */
	    {.code = BPF_JMP | BPF_EXIT},
	};
	int prog = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "foreign_pass", "GPL", pass_on,
				 HM_ARRAY_SIZE(pass_on), NULL);
	assert_true(prog >= 0);
	int home = enter(fx->pod_path);
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)if_nametoindex(POD_IF),
		    .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = prog, .handle = 1, .priority = 1);
	int r = bpf_tc_attach(&hook, &opts);
	leave(home);
	close(prog);
	assert_int_equal(r, 0);
}

static bool pod_has_foreign_filter(const struct fixture *fx)
{
	int home = enter(fx->pod_path);
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)if_nametoindex(POD_IF),
		    .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1);
	int r = bpf_tc_query(&hook, &opts);
	leave(home);
	return r == 0;
}

static void test_leaves_what_is_not_its_own(void **state)
{
	struct fixture *fx = *state;
	assert_int_equal(run("ip netns exec %s tc qdisc add dev " POD_IF " clsact", fx->pod_ns), 0);
	/* a classic-BPF filter too: kind "bpf" without a program id */
	assert_int_equal(run("ip netns exec %s tc filter add dev " POD_IF
			     " ingress prio 2 protocol all bpf bytecode '1,6 0 0 0,'",
			     fx->pod_ns),
			 0);
	attach_foreign_filter(fx);
	attach_ok(fx, 0, 0);
	assert_true(pod_has_foreign_filter(fx));
	udp_peer_to_pod(fx, 3, 10);
	assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, 3);
	destroy_ok(fx, 0);
	/* the hook still has filters, so a missing one is ENOENT (an empty hook says EINVAL) */
	assert_int_equal(query_counter_filter(fx, NULL), -ENOENT);
	assert_true(pod_has_foreign_filter(fx));
	assert_true(pod_has_clsact(fx));
}

static void test_readonly_config_selects_protocol(void **state)
{
	struct fixture *fx = *state;
	attach_ok(fx, 0, IPPROTO_TCP);
	udp_peer_to_pod(fx, 5, 64);
	tcp_syn_peer_to_pod(fx);
	assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, 0);
	assert_true(read_ok(fx, 0, IPPROTO_TCP).packets >= 1);
	destroy_ok(fx, 0);
}

static void test_loads_again_after_detach(void **state)
{
	struct fixture *fx = *state;
	for (int round = 1; round <= 3; round++) {
		attach_ok(fx, 0, 0);
		/* a fresh program: counters start from zero each time */
		assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, 0);
		udp_peer_to_pod(fx, round, 20);
		assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, round);
		destroy_ok(fx, 0);
		assert_int_not_equal(query_counter_filter(fx, NULL), 0);
	}
}

static void test_live_owner_keeps_its_filter(void **state)
{
	struct fixture *fx = *state;
	attach_ok(fx, 0, 0);
	uint32_t first_id = 0;
	assert_int_equal(query_counter_filter(fx, &first_id), 0);

	struct hm_err err = {0};
	struct hm_counter_opts o = counter_opts(fx, 0);
	assert_int_equal(hm_counter_attach(&o, &fx->counters[1], &err), -1);
	assert_int_equal(err.code, EBUSY);
	assert_non_null(strstr(err.msg, "held by live pid"));
	assert_null(fx->counters[1]);

	uint32_t still_id = 0;
	assert_int_equal(query_counter_filter(fx, &still_id), 0);
	assert_int_equal(still_id, first_id);
	destroy_ok(fx, 0);
}

static void test_removes_stale_filter_of_dead_process(void **state)
{
	struct fixture *fx = *state;
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* attach and die without detaching, as a crashed agent would */
		struct hm_err err;
		struct hm_counter *c;
		struct hm_counter_opts o = counter_opts(fx, 0);
		_exit(hm_counter_attach(&o, &c, &err) == 0 ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	uint32_t stale_id = 0;
	assert_int_equal(query_counter_filter(fx, &stale_id), 0);

	attach_ok(fx, 0, 0);
	uint32_t new_id = 0;
	assert_int_equal(query_counter_filter(fx, &new_id), 0);
	assert_int_not_equal(new_id, stale_id);
	udp_peer_to_pod(fx, 4, 10);
	assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, 4);
	destroy_ok(fx, 0);
	assert_int_not_equal(query_counter_filter(fx, NULL), 0);
}

static void test_vanished_interface_detaches_quietly(void **state)
{
	struct fixture *fx = *state;
	attach_ok(fx, 0, 0);
	assert_int_equal(run("ip -n %s link del " POD_IF, fx->pod_ns), 0);
	destroy_ok(fx, 0);
}

static void test_qdisc_removed_by_someone_else(void **state)
{
	struct fixture *fx = *state;
	attach_ok(fx, 0, 0);
	assert_int_equal(run("ip netns exec %s tc qdisc del dev " POD_IF " clsact", fx->pod_ns), 0);
	destroy_ok(fx, 0);
	assert_false(pod_has_clsact(fx));
}

static void test_netns_by_fd_and_by_current_thread(void **state)
{
	struct fixture *fx = *state;
	struct hm_err err = {0};
	int nsfd = open(fx->pod_path, O_RDONLY | O_CLOEXEC);
	assert_true(nsfd >= 0);
	struct hm_counter_opts o = {.dev = {.netns_fd = nsfd, .ifname = POD_IF}};
	if (hm_counter_attach(&o, &fx->counters[0], &err) < 0)
		fail_msg("by fd: %s", err.msg);
	close(nsfd); /* the counter keeps its own reference */
	udp_peer_to_pod(fx, 2, 10);
	assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, 2);
	destroy_ok(fx, 0);

	/* an agent worker thread already inside the pod's netns */
	int home = enter(fx->pod_path);
	ino_t pod_ino = netns_inode();
	o = (struct hm_counter_opts){.dev = {.netns_fd = -1, .ifname = POD_IF}};
	int r = hm_counter_attach(&o, &fx->counters[0], &err);
	assert_int_equal(netns_inode(), pod_ino);
	leave(home);
	if (r < 0)
		fail_msg("current netns: %s", err.msg);
	udp_peer_to_pod(fx, 2, 10);
	assert_int_equal(read_ok(fx, 0, IPPROTO_UDP).packets, 2);
	destroy_ok(fx, 0); /* from the home netns: detach re-enters the pod's */
	assert_int_not_equal(query_counter_filter(fx, NULL), 0);
}

static void test_bad_targets_fail_clearly(void **state)
{
	struct fixture *fx = *state;
	struct hm_err err = {0};
	struct hm_counter *c = NULL;
	ino_t home = netns_inode();

	struct hm_counter_opts o = counter_opts(fx, 0);
	o.dev.ifname = "hm-nosuch0";
	assert_int_equal(hm_counter_attach(&o, &c, &err), -1);
	assert_int_equal(err.code, ENODEV);
	assert_non_null(strstr(err.msg, "hm-nosuch0"));
	assert_int_equal(netns_inode(), home);
	assert_false(pod_has_clsact(fx)); /* nothing was created for a bad interface */

	o = counter_opts(fx, 0);
	o.dev.netns_path = "/proc/self/ns/uts";
	assert_int_equal(hm_counter_attach(&o, &c, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_non_null(strstr(err.msg, "not a network namespace"));

	o.dev.netns_path = "/run/netns/hm-lt-nosuch";
	assert_int_equal(hm_counter_attach(&o, &c, &err), -1);
	assert_int_equal(err.code, ENOENT);

	o = counter_opts(fx, 0);
	o.dev.ifname = "an-interface-name-too-long";
	assert_int_equal(hm_counter_attach(&o, &c, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_null(c);
	assert_int_equal(hm_counter_destroy(NULL, &err), 0);
}

/* ---- mirror (bpf/mirror.bpf.c) ---- */

#define MIRROR_PORT 7777
#define MIRROR_BYTES (1u << 20)

/* the segments of one client port, put back in place by their sequence number */
struct mirror_capture {
	uint16_t sport;
	bool syn;
	uint32_t isn;
	bool fin;
	size_t max_end;
	uint8_t *buf;
	size_t segments;
	size_t other_ports; /* segments to any port but MIRROR_PORT */
};

static bool on_mirror_segment(void *ctx, const struct hm_mirror_segment *seg)
{
	struct mirror_capture *cap = ctx;
	if (seg->dport != MIRROR_PORT) {
		cap->other_ports++;
		return true;
	}
	if (seg->sport != cap->sport)
		return true;
	cap->segments++;
	if (seg->tcp_flags & HM_MIRROR_SYN) {
		cap->syn = true;
		cap->isn = seg->seq;
		return true;
	}
	if (!cap->syn)
		return true;
	size_t off = seg->seq - cap->isn - 1;
	assert_true(off + seg->len <= MIRROR_BYTES);
	memcpy(cap->buf + off, seg->payload, seg->len);
	if (off + seg->len > cap->max_end)
		cap->max_end = off + seg->len;
	if (seg->tcp_flags & HM_MIRROR_FIN)
		cap->fin = true;
	return true;
}

struct sender {
	int fd;
	const uint8_t *data;
	size_t len;
};

static void *send_all(void *arg)
{
	struct sender *s = arg;
	assert_int_equal(hm_write_all(s->fd, s->data, s->len), (ssize_t)s->len);
	shutdown(s->fd, SHUT_WR);
	return NULL;
}

/* One TCP transfer of MIRROR_BYTES from a client socket (made in client_ns) to the
 * pod's listener at server_ip:port; checks what the mirror saw of it. */
static void mirror_transfer(struct fixture *fx, struct hm_mirror *m, struct mirror_capture *cap,
			    const char *client_ns, const char *server_ip, int port,
			    bool expect_copy)
{
	static uint8_t data[MIRROR_BYTES];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(rand() >> 7);
	int lfd = socket_in(fx->pod_path, SOCK_STREAM);
	struct sockaddr_in srv = addr(server_ip, port);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(lfd, (struct sockaddr *)&srv, sizeof(srv)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	int cfd = socket_in(client_ns, SOCK_STREAM);
	assert_int_equal(connect(cfd, (struct sockaddr *)&srv, sizeof(srv)), 0);
	struct sockaddr_in local;
	socklen_t llen = sizeof(local);
	assert_int_equal(getsockname(cfd, (struct sockaddr *)&local, &llen), 0);
	*cap = (struct mirror_capture){.sport = ntohs(local.sin_port), .buf = cap->buf};
	memset(cap->buf, 0, MIRROR_BYTES);

	struct sender snd = {.fd = cfd, .data = data, .len = sizeof(data)};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, send_all, &snd), 0);
	int afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(afd >= 0);
	size_t got = 0;
	char buf[65536];
	ssize_t n;
	while ((n = read(afd, buf, sizeof(buf))) > 0) {
		assert_memory_equal(buf, data + got, (size_t)n);
		got += (size_t)n;
		struct hm_err err;
		assert_true(hm_mirror_consume(m, &err) >= 0); /* keep the ring drained */
	}
	assert_int_equal(got, sizeof(data));
	pthread_join(t, NULL);
	int64_t deadline = hm_deadline_in(3000);
	while (expect_copy && !cap->fin && hm_ms_until(deadline) > 0) {
		hm_poll_fd(hm_mirror_fd(m), POLLIN, hm_deadline_in(100));
		struct hm_err err;
		assert_true(hm_mirror_consume(m, &err) >= 0);
	}
	close(afd);
	close(cfd);
	close(lfd);
	if (!expect_copy) {
		struct hm_err err;
		assert_true(hm_mirror_consume(m, &err) >= 0);
		assert_int_equal(cap->segments, 0);
		return;
	}
	assert_true(cap->syn);
	assert_true(cap->fin);
	assert_int_equal(cap->max_end, sizeof(data));
	assert_memory_equal(cap->buf, data, sizeof(data));
	uint64_t dropped, dropped_bytes;
	hm_mirror_drops(m, &dropped, &dropped_bytes);
	assert_int_equal(dropped, 0);
}

static int query_mirror_filter(const struct fixture *fx, const char *ifname)
{
	int home = enter(fx->pod_path);
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)if_nametoindex(ifname),
		    .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = HM_TC_HANDLE, .priority = HM_TC_PRIO_MIRROR);
	int r = hook.ifindex ? bpf_tc_query(&hook, &opts) : -ENODEV;
	leave(home);
	return r;
}

static struct hm_mirror *mirror_attach_ok(struct fixture *fx, struct mirror_capture *cap, int *nsfd)
{
	*nsfd = open(fx->pod_path, O_RDONLY | O_CLOEXEC);
	assert_true(*nsfd >= 0);
	struct hm_mirror_opts o = {.netns_fd = *nsfd, .on_segment = on_mirror_segment, .ctx = cap};
	struct hm_mirror *m = NULL;
	struct hm_err err = {0};
	if (hm_mirror_attach(&o, &m, &err) < 0)
		fail_msg("hm_mirror_attach: %s", err.msg);
	return m;
}

static void test_mirror_copies_tcp_streams(void **state)
{
	struct fixture *fx = *state;
	struct mirror_capture cap = {.buf = malloc(MIRROR_BYTES)};
	assert_non_null(cap.buf);
	int nsfd;
	ino_t home = netns_inode();
	struct hm_mirror *m = mirror_attach_ok(fx, &cap, &nsfd);
	assert_int_equal(netns_inode(), home);
	assert_int_equal(query_mirror_filter(fx, POD_IF), 0);
	assert_int_equal(query_mirror_filter(fx, "lo"), 0);
	struct hm_err err = {0};

	/* not subscribed yet: nothing is copied */
	mirror_transfer(fx, m, &cap, fx->peer_path, POD_IP, MIRROR_PORT, false);
	assert_int_equal(hm_mirror_port_add(m, MIRROR_PORT, &err), 0);
	/* from another netns over the veth, then from the pod itself over lo */
	mirror_transfer(fx, m, &cap, fx->peer_path, POD_IP, MIRROR_PORT, true);
	mirror_transfer(fx, m, &cap, fx->pod_path, "127.0.0.1", MIRROR_PORT, true);
	/* another port of the pod stays invisible */
	mirror_transfer(fx, m, &cap, fx->peer_path, POD_IP, MIRROR_PORT + 1, false);
	assert_int_equal(cap.other_ports, 0);
	assert_int_equal(hm_mirror_port_remove(m, MIRROR_PORT, &err), 0);
	mirror_transfer(fx, m, &cap, fx->peer_path, POD_IP, MIRROR_PORT, false);

	assert_int_equal(hm_mirror_destroy(m, &err), 0);
	assert_int_not_equal(query_mirror_filter(fx, POD_IF), 0);
	assert_int_not_equal(query_mirror_filter(fx, "lo"), 0);
	close(nsfd);
	free(cap.buf);
}

static void test_mirror_stale_filters_removed_at_start(void **state)
{
	struct fixture *fx = *state;
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* attach and get killed, as an agent under kill -9 */
		struct mirror_capture cap = {0};
		int nsfd = open(fx->pod_path, O_RDONLY | O_CLOEXEC);
		struct hm_mirror_opts o = {
		    .netns_fd = nsfd, .on_segment = on_mirror_segment, .ctx = &cap};
		struct hm_mirror *m;
		struct hm_err err;
		if (hm_mirror_attach(&o, &m, &err) < 0)
			_exit(1);
		raise(SIGKILL);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(query_mirror_filter(fx, POD_IF), 0);
	assert_int_equal(query_mirror_filter(fx, "lo"), 0);

	struct hm_err err = {0};
	int removed = hm_tc_remove_stale_everywhere(&err);
	if (removed < 0)
		fail_msg("hm_tc_remove_stale_everywhere: %s", err.msg);
	assert_true(removed >= 2);
	assert_int_not_equal(query_mirror_filter(fx, POD_IF), 0);
	assert_int_not_equal(query_mirror_filter(fx, "lo"), 0);

	/* a live owner's filters are not stale */
	struct mirror_capture cap = {0};
	int nsfd;
	struct hm_mirror *m = mirror_attach_ok(fx, &cap, &nsfd);
	assert_true(hm_tc_remove_stale_everywhere(&err) >= 0);
	assert_int_equal(query_mirror_filter(fx, POD_IF), 0);
	assert_int_equal(hm_mirror_destroy(m, &err), 0);
	close(nsfd);
}

/* Drop capabilities from the calling thread's effective set only (capset on pid 0
 * acts on the thread), as a confined or unprivileged caller would lack them. */
static void drop_effective(const int *caps, size_t n)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	assert_int_equal(syscall(SYS_capget, &hdr, data), 0);
	for (size_t i = 0; i < n; i++)
		data[caps[i] / 32].effective &= ~(1u << (caps[i] % 32));
	assert_int_equal(syscall(SYS_capset, &hdr, data), 0);
}

struct capless_attach {
	const struct fixture *fx;
	const int *drop;
	size_t ndrop;
	int rc;
	struct hm_err err;
};

static void *attach_without_caps(void *arg)
{
	struct capless_attach *a = arg;
	drop_effective(a->drop, a->ndrop);
	struct mirror_capture cap = {0};
	int nsfd = open(a->fx->pod_path, O_RDONLY | O_CLOEXEC);
	struct hm_mirror_opts o = {.netns_fd = nsfd, .on_segment = on_mirror_segment, .ctx = &cap};
	struct hm_mirror *m = NULL;
	a->rc = hm_mirror_attach(&o, &m, &a->err);
	hm_mirror_destroy(m, NULL);
	close(nsfd);
	return NULL;
}

static void test_mirror_missing_capability_says_which(void **state)
{
	struct fixture *fx = *state;
	static const int no_bpf[] = {CAP_BPF, CAP_SYS_ADMIN, CAP_PERFMON};
	static const int no_net_admin[] = {CAP_NET_ADMIN};
	struct {
		const int *drop;
		size_t n;
		const char *says;
	} cases[] = {
	    {no_bpf, HM_ARRAY_SIZE(no_bpf), "needs CAP_BPF"},
	    {no_net_admin, HM_ARRAY_SIZE(no_net_admin), "needs CAP_NET_ADMIN"},
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(cases); i++) {
		struct capless_attach a = {.fx = fx, .drop = cases[i].drop, .ndrop = cases[i].n};
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, attach_without_caps, &a), 0);
		pthread_join(t, NULL);
		assert_int_equal(a.rc, -1);
		assert_int_equal(a.err.code, EPERM);
		if (!strstr(a.err.msg, cases[i].says))
			fail_msg("'%s' does not say '%s'", a.err.msg, cases[i].says);
		/* nothing was left behind */
		assert_int_not_equal(query_mirror_filter(fx, POD_IF), 0);
		assert_int_not_equal(query_mirror_filter(fx, "lo"), 0);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_counts_udp_then_detaches, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_leaves_what_is_not_its_own, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readonly_config_selects_protocol, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loads_again_after_detach, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_live_owner_keeps_its_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_removes_stale_filter_of_dead_process, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_vanished_interface_detaches_quietly, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_qdisc_removed_by_someone_else, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_netns_by_fd_and_by_current_thread, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_bad_targets_fail_clearly, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mirror_copies_tcp_streams, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mirror_stale_filters_removed_at_start, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_mirror_missing_capability_says_which, setup,
					    teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
