/* agent: peer.c, which pid/N targets a peer may open: its own uid's processes (every
 * uid of them), anything for root, nothing over TCP, anything with --allow-any-pid. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "agent/internal.h"

#define NOBODY 65534

/* A child that runs with uids (r, e, s) and waits to be killed (the tests run as root,
 * as `make test` does). */
static pid_t child_with_uids(uid_t r, uid_t e, uid_t s)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		if (setresuid(r, e, s) < 0)
			_exit(1);
		if (write(pfd[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(pfd[1]);
	char c;
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	return pid;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static struct agent_peer unix_uid(uid_t uid)
{
	struct agent_peer p = {.is_unix = true, .has_cred = true, .uid = uid};
	return p;
}

static void test_own_process_only(void **state)
{
	(void)state;
	pid_t mine = child_with_uids(NOBODY, NOBODY, NOBODY);
	struct agent_peer nobody = unix_uid(NOBODY), other = unix_uid(1000);
	struct hm_err err = {0};
	assert_int_equal(agent_peer_may_target_pid(&nobody, mine, false, &err), 0);
	assert_int_equal(agent_peer_may_target_pid(&other, mine, false, &err), -1);
	assert_int_equal(err.code, EPERM);
	assert_non_null(strstr(err.msg, "runs as uid 65534, the client is uid 1000"));
	/* init and this (root) process are not nobody's */
	assert_int_equal(agent_peer_may_target_pid(&nobody, 1, false, &err), -1);
	assert_int_equal(err.code, EPERM);
	assert_int_equal(agent_peer_may_target_pid(&nobody, getpid(), false, &err), -1);
	assert_int_equal(err.code, EPERM);
	reap(mine);
}

static void test_mixed_uids_refused(void **state)
{
	(void)state;
	/* real uid nobody, saved uid root: a setuid program's shape, not wholly nobody's */
	pid_t mixed = child_with_uids(NOBODY, NOBODY, 0);
	struct agent_peer nobody = unix_uid(NOBODY);
	struct hm_err err = {0};
	assert_int_equal(agent_peer_may_target_pid(&nobody, mixed, false, &err), -1);
	assert_int_equal(err.code, EPERM);
	reap(mixed);
}

static void test_root_tcp_and_allow_any(void **state)
{
	(void)state;
	struct agent_peer root = unix_uid(0), nobody = unix_uid(NOBODY);
	struct agent_peer tcp = {.addr_len = 4, .addr = {127, 0, 0, 1}};
	struct hm_err err = {0};
	assert_int_equal(agent_peer_may_target_pid(&root, 1, false, &err), 0);
	/* TCP has no credentials: even a pid of the agent's own user is refused */
	assert_int_equal(agent_peer_may_target_pid(&tcp, getpid(), false, &err), -1);
	assert_int_equal(err.code, EPERM);
	assert_non_null(strstr(err.msg, "--allow-any-pid"));
	assert_int_equal(agent_peer_may_target_pid(&tcp, 1, true, &err), 0);
	assert_int_equal(agent_peer_may_target_pid(&nobody, 1, true, &err), 0);
	/* no such process */
	assert_int_equal(agent_peer_may_target_pid(&nobody, 4194303, false, &err), -1);
	assert_int_equal(err.code, ESRCH);
}

static void test_same_source(void **state)
{
	(void)state;
	struct agent_peer u1 = unix_uid(1), u1b = unix_uid(1), u2 = unix_uid(2);
	struct agent_peer a = {.addr_len = 4, .addr = {10, 0, 0, 1}};
	struct agent_peer b = {.addr_len = 4, .addr = {10, 0, 0, 2}};
	struct agent_peer a2 = a;
	assert_true(agent_peer_same_source(&u1, &u1b));
	assert_false(agent_peer_same_source(&u1, &u2));
	assert_true(agent_peer_same_source(&a, &a2));
	assert_false(agent_peer_same_source(&a, &b));
	assert_false(agent_peer_same_source(&a, &u1));
}

/* The key --max-peer-sessions counts by: one per uid / source address, whatever the
 * port or the process; a peer without credentials is not mistaken for root. */
static void test_peer_key(void **state)
{
	(void)state;
	char k[64];
	struct agent_peer u0 = unix_uid(0), u7 = unix_uid(7);
	u7.pid = 1234;
	agent_peer_key(&u0, k, sizeof(k));
	assert_string_equal(k, "uid 0");
	agent_peer_key(&u7, k, sizeof(k));
	assert_string_equal(k, "uid 7");
	struct agent_peer anon = {.is_unix = true};
	agent_peer_key(&anon, k, sizeof(k));
	assert_string_equal(k, "unix");
	struct agent_peer a = {.addr_len = 4, .addr = {10, 0, 0, 1}};
	agent_peer_key(&a, k, sizeof(k));
	assert_string_equal(k, "10.0.0.1");
	struct agent_peer v6 = {.addr_len = 16, .addr = {[15] = 1}};
	agent_peer_key(&v6, k, sizeof(k));
	assert_string_equal(k, "loopback");
	struct agent_peer v6g = {.addr_len = 16, .addr = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}};
	agent_peer_key(&v6g, k, sizeof(k));
	assert_string_equal(k, "2001:db8::1");
	struct agent_peer none = {0};
	agent_peer_key(&none, k, sizeof(k));
	assert_string_equal(k, "tcp");
}

/* A local flooder connecting from 127.0.0.2..5, ::1 and ::ffff:127.0.0.9 is one peer
 * for the per-peer limits, not six. */
static void test_loopback_is_one_source(void **state)
{
	(void)state;
	struct agent_peer lo[] = {
	    {.addr_len = 4, .addr = {127, 0, 0, 1}},
	    {.addr_len = 4, .addr = {127, 0, 0, 2}},
	    {.addr_len = 4, .addr = {127, 0, 0, 5}},
	    {.addr_len = 4, .addr = {127, 255, 3, 9}},
	    {.addr_len = 16, .addr = {[15] = 1}},
	    {.addr_len = 16, .addr = {[10] = 0xff, [11] = 0xff, 127, 0, 0, 9}},
	};
	char k0[64], k[64];
	agent_peer_key(&lo[0], k0, sizeof(k0));
	for (size_t i = 0; i < sizeof(lo) / sizeof(lo[0]); i++) {
		for (size_t j = 0; j < sizeof(lo) / sizeof(lo[0]); j++)
			assert_true(agent_peer_same_source(&lo[i], &lo[j]));
		agent_peer_key(&lo[i], k, sizeof(k));
		assert_string_equal(k, k0);
	}
	/* other addresses stay apart, from loopback and from each other */
	struct agent_peer lan = {.addr_len = 4, .addr = {10, 0, 0, 1}};
	struct agent_peer mapped_lan = {.addr_len = 16,
					.addr = {[10] = 0xff, [11] = 0xff, 10, 0, 0, 1}};
	struct agent_peer v6 = {.addr_len = 16, .addr = {0x20, 0x01, 0x0d, 0xb8, [15] = 1}};
	struct agent_peer unix_root = unix_uid(0);
	assert_false(agent_peer_same_source(&lo[1], &lan));
	assert_false(agent_peer_same_source(&lan, &lo[1]));
	assert_false(agent_peer_same_source(&lo[4], &v6));
	assert_false(agent_peer_same_source(&lo[5], &mapped_lan));
	assert_false(agent_peer_same_source(&lo[0], &unix_root));
	agent_peer_key(&lan, k, sizeof(k));
	assert_string_not_equal(k, k0);
}

int main(void)
{
	hm_log_init("test_agent_peer", HM_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_own_process_only),
	    cmocka_unit_test(test_mixed_uids_refused),
	    cmocka_unit_test(test_root_tcp_and_allow_any),
	    cmocka_unit_test(test_same_source),
	    cmocka_unit_test(test_peer_key),
	    cmocka_unit_test(test_loopback_is_one_source),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
