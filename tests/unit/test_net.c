/* runtime/net.c against the real kernel: a throwaway netns (a child that unshared
 * CLONE_NEWNET), the shared hermit0 bridge, real veths and the real /run/hermit state
 * dir (with test-only pod names). Needs root. The bridge is left in place afterwards:
 * it is shared by every pod and persistent by design. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "runtime/internal.h"

#define N_CONCURRENT_ALLOCS 8

struct fixture {
	pid_t netns_pid; /* child holding a fresh netns, 0 if none */
	int release_fd;	 /* closing it lets that child exit */
	char host_if[IFNAMSIZ];
	char pod_names[N_CONCURRENT_ALLOCS][64]; /* state dirs to remove */
};

static void pod_name(char *buf, size_t len, const char *tag, int i)
{
	snprintf(buf, len, "test-net-%d-%s%d", (int)getpid(), tag, i);
}

static void make_state_dir(struct fixture *f, int slot, const char *name)
{
	struct hm_err err = {0};
	if (rt_state_create(name, &err) < 0)
		fail_msg("%s", err.msg);
	snprintf(f->pod_names[slot], sizeof(f->pod_names[slot]), "%s", name);
}

/* Fork a child that sits in a new netns until release_fd is closed. */
static void spawn_netns_child(struct fixture *f)
{
	int ready[2], release[2];
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	assert_int_equal(pipe2(release, O_CLOEXEC), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ready[0]);
		close(release[1]);
		char ok = unshare(CLONE_NEWNET) == 0 ? 'y' : 'n';
		if (write(ready[1], &ok, 1) != 1)
			_exit(1);
		char c;
		while (read(release[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(ready[1]);
	close(release[0]);
	f->netns_pid = pid;
	f->release_fd = release[1];
	char ok = 0;
	assert_int_equal(read(ready[0], &ok, 1), 1);
	close(ready[0]);
	assert_int_equal(ok, 'y');
}

static int setup(void **state)
{
	if (geteuid() != 0) {
		print_message("test_net needs root (netns, veth, bridge)\n");
		return -1;
	}
	struct fixture *f = calloc(1, sizeof(*f));
	f->release_fd = -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	struct hm_err err = {0};
	if (f->host_if[0] && rt_net_teardown_pod(f->host_if, &err) < 0)
		print_message("cleanup: %s\n", err.msg);
	if (f->netns_pid > 0) {
		kill(f->netns_pid, SIGKILL);
		waitpid(f->netns_pid, NULL, 0);
	}
	if (f->release_fd >= 0)
		close(f->release_fd);
	for (int i = 0; i < N_CONCURRENT_ALLOCS; i++) {
		if (f->pod_names[i][0] && rt_state_remove(f->pod_names[i], &err) < 0)
			print_message("cleanup: %s\n", err.msg);
	}
	free(f);
	return 0;
}

/* Run fn in a forked process inside the netns of pid; returns fn's exit code. */
static int run_in_netns(pid_t pid, int (*fn)(void *), void *arg)
{
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		alarm(10);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			_exit(100);
		_exit(fn(arg));
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* Exit code bits say what is wrong inside the pod's netns. */
enum { POD_NO_LO_UP = 1, POD_NO_ETH0_UP = 2, POD_NO_ADDR = 4, POD_BAD_MASK = 8 };

static int check_pod_interfaces(void *arg)
{
	const char *ip = arg;
	struct ifaddrs *ifas;
	if (getifaddrs(&ifas) < 0)
		return 99;
	int missing = POD_NO_LO_UP | POD_NO_ETH0_UP | POD_NO_ADDR | POD_BAD_MASK;
	for (struct ifaddrs *a = ifas; a; a = a->ifa_next) {
		if (strcmp(a->ifa_name, "lo") == 0 && (a->ifa_flags & IFF_UP))
			missing &= ~POD_NO_LO_UP;
		if (strcmp(a->ifa_name, "eth0") != 0)
			continue;
		if (a->ifa_flags & IFF_UP)
			missing &= ~POD_NO_ETH0_UP;
		if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET)
			continue;
		char text[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, text,
			  sizeof(text));
		if (strcmp(text, ip) == 0)
			missing &= ~POD_NO_ADDR;
		inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_netmask)->sin_addr, text,
			  sizeof(text));
		if (strcmp(text, "255.255.0.0") == 0)
			missing &= ~POD_BAD_MASK;
	}
	freeifaddrs(ifas);
	return missing;
}

static int check_lo_up(void *arg)
{
	(void)arg;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return 99;
	return (ifr.ifr_flags & IFF_UP) ? 0 : 1;
}

static int check_eth0_gone(void *arg)
{
	(void)arg;
	return if_nametoindex("eth0") == 0 ? 0 : 1;
}

static int connect_and_send(void *arg)
{
	const struct sockaddr_in *to = arg;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return 98;
	if (connect(s, (const struct sockaddr *)to, sizeof(*to)) < 0)
		return 97;
	return write(s, "ping", 4) == 4 ? 0 : 96;
}

static bool pod_has_default_route(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/net/route", (int)pid);
	FILE *fp = fopen(path, "re");
	assert_non_null(fp);
	struct in_addr gw;
	inet_pton(AF_INET, RT_BRIDGE_IP, &gw);
	char want_gw[16];
	/* The kernel prints the raw __be32, i.e. host-order hex of the network-order word. */
	snprintf(want_gw, sizeof(want_gw), "%08X", gw.s_addr);
	bool found = false;
	while (fgets(line, sizeof(line), fp)) {
		char iface[IFNAMSIZ + 1], dst[16], via[16];
		if (sscanf(line, "%16s %15s %15s", iface, dst, via) == 3 &&
		    strcmp(iface, "eth0") == 0 && strcmp(dst, "00000000") == 0 &&
		    strcmp(via, want_gw) == 0)
			found = true;
	}
	fclose(fp);
	return found;
}

static bool host_has_bridge_addr(void)
{
	struct ifaddrs *ifas;
	assert_int_equal(getifaddrs(&ifas), 0);
	bool found = false;
	for (struct ifaddrs *a = ifas; a; a = a->ifa_next) {
		if (strcmp(a->ifa_name, RT_BRIDGE_NAME) || !a->ifa_addr ||
		    a->ifa_addr->sa_family != AF_INET)
			continue;
		char text[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, text,
			  sizeof(text));
		if (strcmp(text, RT_BRIDGE_IP) == 0 && (a->ifa_flags & IFF_UP))
			found = true;
	}
	freeifaddrs(ifas);
	return found;
}

static void assert_enslaved_to_bridge(const char *host_if)
{
	char path[PATH_MAX], target[PATH_MAX];
	snprintf(path, sizeof(path), "/sys/class/net/%s/master", host_if);
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	const char *base = strrchr(target, '/');
	assert_string_equal(base ? base + 1 : target, RT_BRIDGE_NAME);
}

/* From inside the pod's netns, open a TCP connection to a listener on the bridge
 * address in the host netns: proves veth, bridge, addresses and ARP all work. */
static void assert_pod_reaches_bridge(pid_t pid)
{
	int lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lsock >= 0);
	struct sockaddr_in addr = {.sin_family = AF_INET};
	inet_pton(AF_INET, RT_BRIDGE_IP, &addr.sin_addr);
	assert_int_equal(bind(lsock, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(lsock, 1), 0);
	socklen_t alen = sizeof(addr);
	assert_int_equal(getsockname(lsock, (struct sockaddr *)&addr, &alen), 0);

	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		alarm(10);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			_exit(100);
		_exit(connect_and_send(&addr));
	}
	struct pollfd pfd = {.fd = lsock, .events = POLLIN};
	int ready = poll(&pfd, 1, 10000);
	int conn = ready == 1 ? accept4(lsock, NULL, NULL, SOCK_CLOEXEC) : -1;
	char buf[8] = {0};
	ssize_t n = conn >= 0 ? hm_read_all(conn, buf, 4) : -1;
	int status;
	waitpid(child, &status, 0);
	if (conn >= 0)
		close(conn);
	close(lsock);
	assert_int_equal(ready, 1);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "ping", 4);
}

static void test_setup_pod_and_teardown(void **state)
{
	struct fixture *f = *state;
	struct hm_err err = {0};
	char name[64], ip[64];
	pod_name(name, sizeof(name), "pod", 0);
	make_state_dir(f, 0, name);
	if (rt_net_alloc_ip(name, ip, sizeof(ip), &err) < 0)
		fail_msg("%s", err.msg);
	spawn_netns_child(f);

	if (rt_net_setup_pod(f->netns_pid, name, ip, f->host_if, sizeof(f->host_if), &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(strlen(f->host_if), 10);
	assert_memory_equal(f->host_if, "hm", 2);

	assert_true(host_has_bridge_addr());
	assert_true(if_nametoindex(f->host_if) > 0);
	assert_enslaved_to_bridge(f->host_if);
	assert_int_equal(run_in_netns(f->netns_pid, check_pod_interfaces, ip), 0);
	assert_true(pod_has_default_route(f->netns_pid));
	assert_pod_reaches_bridge(f->netns_pid);

	/* The netns already has eth0: a second setup must fail clearly and leave nothing. */
	char second_if[IFNAMSIZ] = "x";
	assert_int_equal(
	    rt_net_setup_pod(f->netns_pid, name, ip, second_if, sizeof(second_if), &err), -1);
	assert_int_equal(err.code, EEXIST);
	assert_non_null(strstr(err.msg, "create veth hm"));
	assert_non_null(strstr(err.msg, "File exists"));
	assert_string_equal(second_if, "");

	if (rt_net_teardown_pod(f->host_if, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(if_nametoindex(f->host_if), 0);
	assert_int_equal(run_in_netns(f->netns_pid, check_eth0_gone, NULL), 0);
	/* Gone already (as when the pod's netns died first) is success. */
	assert_int_equal(rt_net_teardown_pod(f->host_if, &err), 0);
	f->host_if[0] = '\0';
}

static void test_setup_pod_bad_input(void **state)
{
	struct fixture *f = *state;
	struct hm_err err = {0};
	char host_if[IFNAMSIZ];
	spawn_netns_child(f);

	assert_int_equal(
	    rt_net_setup_pod(f->netns_pid, "x", "10.213.0.999", host_if, sizeof(host_if), &err),
	    -1);
	assert_int_equal(err.code, EINVAL);
	assert_non_null(strstr(err.msg, "10.213.0.999"));

	assert_int_equal(rt_net_setup_pod(f->netns_pid, "x", "10.213.9.9", host_if, 4, &err), -1);
	assert_int_equal(err.code, EINVAL);

	/* A pid that is gone: reaped, so it cannot be there any more. */
	pid_t dead = fork();
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	assert_int_equal(rt_net_setup_pod(dead, "x", "10.213.9.9", host_if, sizeof(host_if), &err),
			 -1);
	assert_int_equal(err.code, ENOENT);
	assert_non_null(strstr(err.msg, "network namespace of pid"));

	assert_int_equal(rt_net_teardown_pod("", &err), 0);
	assert_int_equal(rt_net_teardown_pod("hmnotthere", &err), 0);
}

static void test_setup_loopback(void **state)
{
	struct fixture *f = *state;
	struct hm_err err = {0};
	spawn_netns_child(f);
	assert_int_equal(run_in_netns(f->netns_pid, check_lo_up, NULL), 1);
	if (rt_net_setup_loopback(f->netns_pid, &err) < 0)
		fail_msg("%s", err.msg);
	assert_int_equal(run_in_netns(f->netns_pid, check_lo_up, NULL), 0);
}

static void test_alloc_ip_concurrent(void **state)
{
	struct fixture *f = *state;
	char names[N_CONCURRENT_ALLOCS][64];
	for (int i = 0; i < N_CONCURRENT_ALLOCS; i++) {
		pod_name(names[i], sizeof(names[i]), "alloc", i);
		make_state_dir(f, i, names[i]);
	}
	int go[2], results[2];
	assert_int_equal(pipe2(go, O_CLOEXEC), 0);
	assert_int_equal(pipe2(results, O_CLOEXEC), 0);
	pid_t pids[N_CONCURRENT_ALLOCS];
	for (int i = 0; i < N_CONCURRENT_ALLOCS; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(go[1]);
			char c;
			/* all start together when the parent closes the pipe */
			while (read(go[0], &c, 1) < 0 && errno == EINTR)
				;
			struct hm_err err = {0};
			char ip[64], line[128];
			if (rt_net_alloc_ip(names[i], ip, sizeof(ip), &err) < 0)
				snprintf(line, sizeof(line), "%d ERR %.100s\n", i, err.msg);
			else
				snprintf(line, sizeof(line), "%d %s\n", i, ip);
			/* one short write per child: atomic on a pipe */
			_exit(write(results[1], line, strlen(line)) > 0 ? 0 : 1);
		}
	}
	close(go[0]);
	close(go[1]);
	close(results[1]);
	for (int i = 0; i < N_CONCURRENT_ALLOCS; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	char buf[4096] = {0};
	ssize_t n = hm_read_all(results[0], buf, sizeof(buf) - 1);
	close(results[0]);
	assert_true(n > 0);

	char ips[N_CONCURRENT_ALLOCS][64] = {{0}};
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int i;
		char ip[64];
		if (sscanf(line, "%d %63s", &i, ip) != 2 || strcmp(ip, "ERR") == 0)
			fail_msg("allocation failed: %s", line);
		assert_true(i >= 0 && i < N_CONCURRENT_ALLOCS);
		snprintf(ips[i], sizeof(ips[i]), "%s", ip);
	}
	for (int i = 0; i < N_CONCURRENT_ALLOCS; i++) {
		assert_true(ips[i][0]);
		assert_memory_equal(ips[i], RT_BRIDGE_PREFIX ".", strlen(RT_BRIDGE_PREFIX) + 1);
		assert_string_not_equal(ips[i], RT_BRIDGE_IP);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(ips[i], ips[j]);
		char recorded[64];
		struct hm_err err = {0};
		if (rt_state_read(names[i], "ip", recorded, sizeof(recorded), &err) < 0)
			fail_msg("%s", err.msg);
		assert_string_equal(recorded, ips[i]);
	}
}

static void test_alloc_ip_needs_state_dir(void **state)
{
	(void)state;
	struct hm_err err = {0};
	char name[64], ip[64];
	pod_name(name, sizeof(name), "missing", 0);
	assert_int_equal(rt_net_alloc_ip(name, ip, sizeof(ip), &err), -1);
	assert_int_equal(err.code, ENOENT);
	assert_non_null(strstr(err.msg, name));
	assert_int_equal(rt_net_alloc_ip("../etc", ip, sizeof(ip), &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_int_equal(rt_net_alloc_ip(".hidden", ip, sizeof(ip), &err), -1);
	assert_int_equal(err.code, EINVAL);
}

/* A pod's own earlier record does not block it, and junk in another pod's file is
 * ignored rather than fatal. */
static void test_alloc_ip_reuses_own_and_ignores_junk(void **state)
{
	struct fixture *f = *state;
	struct hm_err err = {0};
	char name[64], junk[64], ip1[64], ip2[64];
	pod_name(name, sizeof(name), "again", 0);
	pod_name(junk, sizeof(junk), "junk", 0);
	make_state_dir(f, 0, name);
	make_state_dir(f, 1, junk);
	assert_int_equal(rt_state_write(junk, "ip", "not an address", &err), 0);
	if (rt_net_alloc_ip(name, ip1, sizeof(ip1), &err) < 0)
		fail_msg("%s", err.msg);
	if (rt_net_alloc_ip(name, ip2, sizeof(ip2), &err) < 0)
		fail_msg("%s", err.msg);
	assert_string_equal(ip1, ip2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_alloc_ip_needs_state_dir, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alloc_ip_concurrent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alloc_ip_reuses_own_and_ignores_junk, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_setup_loopback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_pod_bad_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_pod_and_teardown, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
