/* loader: the steal program attached for real. Each test runs in a child process in a
 * fresh network namespace (its loopback only): a "pod" server listens on the stolen
 * port, the "agent" listens on ephemeral loopback ports, and connections show who gets
 * them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loader/loader.h"

#define STOLEN_PORT 8080

/* Run fn in a child inside a new netns with lo up; the child's cmocka failures end it
 * with a non-zero status. */
static void in_new_netns(void (*fn)(void))
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0)
			_exit(90);
		int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		struct ifreq ifr = {0};
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
		ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
		if (s < 0 || ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			_exit(91);
		close(s);
		fn();
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static int listener(int family, uint16_t port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	}
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, sl), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* Connect to loopback:port from src_port (0: any); returns the connected socket. */
static int dial(int family, uint16_t port, uint16_t src_port)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_storage ss = {0}, src = {0};
	socklen_t sl;
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss, *b = (struct sockaddr_in *)&src;
		a->sin_family = b->sin_family = AF_INET;
		a->sin_port = htons(port);
		b->sin_port = htons(src_port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss,
				    *b = (struct sockaddr_in6 *)&src;
		a->sin6_family = b->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		b->sin6_port = htons(src_port);
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	}
	if (src_port)
		assert_int_equal(bind(fd, (struct sockaddr *)&src, sl), 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
	return fd;
}

/* Which of the listeners has a connection waiting: its index, -1 for none. */
static int who_got_it(const int *lfds, int n)
{
	struct pollfd pf[4];
	for (int i = 0; i < n; i++)
		pf[i] = (struct pollfd){.fd = lfds[i], .events = POLLIN};
	if (poll(pf, (nfds_t)n, 1000) <= 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if (pf[i].revents & POLLIN) {
			int fd = accept4(lfds[i], NULL, NULL, SOCK_CLOEXEC);
			assert_true(fd >= 0);
			close(fd);
			return i;
		}
	}
	return -1;
}

static int netns_fd(void)
{
	int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void steal_then_give_back(void)
{
	int pod4 = listener(AF_INET, STOLEN_PORT), pod6 = listener(AF_INET6, STOLEN_PORT);
	int ours4 = listener(AF_INET, 0), ours6 = listener(AF_INET6, 0);
	int ns = netns_fd();
	int lfds[4] = {pod4, pod6, ours4, ours6};
	struct hm_err err = {0};
	struct hm_steal *s;
	if (hm_steal_attach(ns, STOLEN_PORT, ours4, ours6, &s, &err) < 0)
		fail_msg("attach: %s", err.msg);
	assert_true(hm_steal_prog_id(s) > 0);
	/* both families, to the agent's listener of that family */
	int c = dial(AF_INET, STOLEN_PORT, 0);
	assert_int_equal(who_got_it(lfds, 4), 2);
	close(c);
	c = dial(AF_INET6, STOLEN_PORT, 0);
	assert_int_equal(who_got_it(lfds, 4), 3);
	close(c);
	/* another port is not touched */
	int other = listener(AF_INET, STOLEN_PORT + 1);
	c = dial(AF_INET, STOLEN_PORT + 1, 0);
	assert_int_equal(who_got_it(&other, 1), 0);
	close(c);
	/* a bypassed source port reaches the pod's server, until the entry goes */
	assert_int_equal(hm_steal_bypass(s, 40001, true, &err), 0);
	c = dial(AF_INET, STOLEN_PORT, 40001);
	assert_int_equal(who_got_it(lfds, 4), 0);
	close(c);
	assert_int_equal(hm_steal_bypass(s, 40001, false, &err), 0);
	assert_int_equal(hm_steal_bypass(s, 40001, false, &err), 0); /* idempotent */
	c = dial(AF_INET, STOLEN_PORT, 40002);
	assert_int_equal(who_got_it(lfds, 4), 2);
	close(c);
	/* detached: the pod's server again */
	hm_steal_destroy(s);
	c = dial(AF_INET, STOLEN_PORT, 0);
	assert_int_equal(who_got_it(lfds, 4), 0);
	close(c);
	close(ns);
}

static void test_steal_then_give_back(void **state)
{
	(void)state;
	in_new_netns(steal_then_give_back);
}

/* The link belongs to its fd: a process that dies without detaching leaves nothing. */
static void dies_without_detaching(void)
{
	int pod4 = listener(AF_INET, STOLEN_PORT);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ours4 = listener(AF_INET, 0);
		struct hm_err err = {0};
		struct hm_steal *s;
		if (hm_steal_attach(netns_fd(), STOLEN_PORT, ours4, -1, &s, &err) < 0)
			_exit(1);
		int c = dial(AF_INET, STOLEN_PORT, 0);
		if (who_got_it(&ours4, 1) != 0)
			_exit(2);
		close(c);
		_exit(0); /* no hm_steal_destroy: the kernel closes the link's fd */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	int c = dial(AF_INET, STOLEN_PORT, 0);
	assert_int_equal(who_got_it(&pod4, 1), 0);
	close(c);
}

static void test_dies_without_detaching(void **state)
{
	(void)state;
	in_new_netns(dies_without_detaching);
}

/* Without the capabilities: one message naming them, nothing attached. */
static void without_capabilities(void)
{
	int ours4 = listener(AF_INET, 0);
	int ns = netns_fd();
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {0};
	assert_int_equal(syscall(SYS_capset, &hdr, data), 0);
	struct hm_err err = {0};
	struct hm_steal *s = NULL;
	assert_int_equal(hm_steal_attach(ns, STOLEN_PORT, ours4, -1, &s, &err), -1);
	assert_null(s);
	assert_int_equal(err.code, EPERM);
	assert_non_null(strstr(err.msg, "CAP_BPF"));
	assert_non_null(strstr(err.msg, "CAP_NET_ADMIN"));
}

static void test_without_capabilities(void **state)
{
	(void)state;
	in_new_netns(without_capabilities);
}

int main(void)
{
	hm_log_init("test_loader_steal", HM_LOG_WARN);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_steal_then_give_back),
	    cmocka_unit_test(test_dies_without_detaching),
	    cmocka_unit_test(test_without_capabilities),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
