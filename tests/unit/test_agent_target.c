/* agent: target_containerd.c, container/ID through containerd's task state: which ids
 * may name a task directory, which init.pid contents are a pid, that the lookup stays
 * below the state directory (no symlinks, no "..", no oversized or odd files), and
 * target.c's refusal of a pid the task state names when the process is not in the
 * container's cgroup. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/internal.h"

#define ID64 "4f8a2b6c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2"

static void test_id_ok(void **state)
{
	(void)state;
	char longest[AGENT_CONTAINER_ID_MAX + 2];
	memset(longest, 'a', sizeof(longest));
	longest[AGENT_CONTAINER_ID_MAX] = '\0';
	const char *good[] = {ID64, "web", "a", "my_task.1-x", ".hidden", longest};
	for (size_t i = 0; i < HM_ARRAY_SIZE(good); i++)
		if (!agent_container_id_ok(good[i]))
			fail_msg("id '%s' refused", good[i]);
	longest[AGENT_CONTAINER_ID_MAX] = 'a';
	longest[AGENT_CONTAINER_ID_MAX + 1] = '\0';
	const char *bad[] = {"",    ".",   "..",  "../../etc", "a/b", "/etc", "a..b",	"..a",
			     "a..", "a b", "a\n", "a\\b",      "a:b", "ä",    "%2e%2e", longest};
	for (size_t i = 0; i < HM_ARRAY_SIZE(bad); i++)
		if (agent_container_id_ok(bad[i]))
			fail_msg("id '%s' accepted", bad[i]);
}

static void test_parse_pid_file(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		pid_t pid;
	} good[] = {{"1", 1}, {"1234", 1234}, {"1234\n", 1234}, {"4194304", 4194304}};
	for (size_t i = 0; i < HM_ARRAY_SIZE(good); i++) {
		pid_t pid = 0;
		if (agent_parse_pid_file(good[i].text, strlen(good[i].text), &pid) < 0)
			fail_msg("'%s' refused", good[i].text);
		assert_int_equal(pid, good[i].pid);
	}
	const char *bad[] = {"",    "\n",    "0",	"01",	    "-1",	" 12",	"12 ",
			     "12a", "1\n\n", "4194305", "99999999", "12345678", "0x10", "+5"};
	for (size_t i = 0; i < HM_ARRAY_SIZE(bad); i++) {
		pid_t pid = 77;
		if (agent_parse_pid_file(bad[i], strlen(bad[i]), &pid) == 0)
			fail_msg("'%s' parsed as pid %d", bad[i], (int)pid);
		assert_int_equal(pid, 77);
	}
	/* an embedded NUL is not a digit */
	pid_t pid;
	assert_int_equal(agent_parse_pid_file("12\0"
					      "3",
					      4, &pid),
			 -1);
}

/* ---- the lookup, on a task state made in a temporary directory ---- */

static char root[64];

static void put(const char *rel, const char *text)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	char cmd[320];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
	assert_int_equal(system(cmd), 0);
	*slash = '/';
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup_root(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/hermit-ut-task.XXXXXX");
	return mkdtemp(root) ? 0 : -1;
}

static int remove_root(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

static int lookup(const char *id, pid_t *pid, char *ns, struct hm_err *err)
{
	*pid = 0;
	ns[0] = '\0';
	return agent_containerd_task_pid(root, id, pid, ns, 64, err);
}

static void test_task_lookup(void **state)
{
	(void)state;
	struct hm_err err = {0};
	pid_t pid;
	char ns[64];
	put("k8s.io/" ID64 "/init.pid", "4242");
	put("moby/web/init.pid", "17\n");
	put("default/" ID64 "/init.pid", "99"); /* k8s.io is asked first */
	assert_int_equal(lookup(ID64, &pid, ns, &err), 0);
	assert_int_equal(pid, 4242);
	assert_string_equal(ns, "k8s.io");
	assert_int_equal(lookup("web", &pid, ns, &err), 0);
	assert_int_equal(pid, 17);
	assert_string_equal(ns, "moby");

	assert_int_equal(lookup("nosuchtask", &pid, ns, &err), -1);
	assert_int_equal(err.code, ENOENT);
	assert_int_equal(pid, 0);

	/* hostile ids never become a path */
	const char *hostile[] = {"../../etc", "a/b", "..", "k8s.io/" ID64};
	for (size_t i = 0; i < HM_ARRAY_SIZE(hostile); i++) {
		err = (struct hm_err){0};
		assert_int_equal(lookup(hostile[i], &pid, ns, &err), -1);
		assert_int_equal(err.code, EINVAL);
		assert_non_null(strstr(err.msg, "never '/' or '..'"));
	}

	/* no state directory at all: "no task", so the caller scans */
	err = (struct hm_err){0};
	assert_int_equal(agent_containerd_task_pid("/nonexistent/hermit-task-state", ID64, &pid, ns,
						   sizeof(ns), &err),
			 -1);
	assert_int_equal(err.code, ENOENT);
}

static void test_task_file_refused(void **state)
{
	(void)state;
	struct hm_err err = {0};
	pid_t pid;
	char ns[64];
	char path[256], target[256];

	/* a symlinked init.pid (to a file of the host with digits in it) */
	put("outside/pidfile", "1");
	put("k8s.io/linked/placeholder", "");
	snprintf(path, sizeof(path), "%s/k8s.io/linked/init.pid", root);
	snprintf(target, sizeof(target), "%s/outside/pidfile", root);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(lookup("linked", &pid, ns, &err), -1);
	assert_int_equal(err.code, ELOOP);

	/* a symlinked task directory */
	snprintf(path, sizeof(path), "%s/k8s.io/dirlink", root);
	snprintf(target, sizeof(target), "%s/outside", root);
	put("outside/init.pid", "1");
	assert_int_equal(symlink(target, path), 0);
	err = (struct hm_err){0};
	assert_int_equal(lookup("dirlink", &pid, ns, &err), -1);
	assert_int_equal(err.code, ELOOP);

	/* not digits, too big, not a regular file */
	put("k8s.io/garbage/init.pid", "12; rm -rf /");
	err = (struct hm_err){0};
	assert_int_equal(lookup("garbage", &pid, ns, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_non_null(strstr(err.msg, "not a pid"));

	char big[4096];
	memset(big, '1', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	put("k8s.io/big/init.pid", big);
	err = (struct hm_err){0};
	assert_int_equal(lookup("big", &pid, ns, &err), -1);
	assert_int_equal(err.code, EINVAL);

	put("k8s.io/fifo/placeholder", "");
	snprintf(path, sizeof(path), "%s/k8s.io/fifo/init.pid", root);
	assert_int_equal(mkfifo(path, 0600), 0);
	err = (struct hm_err){0};
	assert_int_equal(lookup("fifo", &pid, ns, &err), -1); /* and no hang on the fifo */
	assert_int_equal(err.code, EINVAL);

	/* a bad file in another namespace is reported, not skipped silently */
	put("other/bad2/init.pid", "x");
	err = (struct hm_err){0};
	assert_int_equal(lookup("bad2", &pid, ns, &err), -1);
	assert_int_equal(err.code, EINVAL);
}

/* A forged init.pid naming a process that is not in the container's cgroup (this
 * test itself): refused, and the cgroup scan after it finds no such container. */
static void test_forged_pid_refused(void **state)
{
	(void)state;
	char text[16];
	snprintf(text, sizeof(text), "%d", (int)getpid());
	char rel[128];
	snprintf(rel, sizeof(rel), "k8s.io/%.63sb/init.pid", ID64);
	put(rel, text);
	char id[65];
	snprintf(id, sizeof(id), "%.63sb", ID64);
	pid_t pid;
	char ns[64];
	struct hm_err err = {0};
	assert_int_equal(lookup(id, &pid, ns, &err), 0);
	assert_int_equal(pid, getpid()); /* the task state does say so... */

	struct proto_target spec = {.kind = PROTO_TARGET_CONTAINER};
	snprintf(spec.value, sizeof(spec.value), "%s", id);
	struct agent_target *t = NULL;
	err = (struct hm_err){0};
	/* ...but the agent does not serve it */
	assert_int_equal(agent_target_resolve(&spec, root, &t, &err), -1);
	assert_null(t);
	assert_int_equal(err.code, ESRCH);
	assert_non_null(strstr(err.msg, "no process in a cgroup of container"));

	/* a hostile id is refused before any path or scan */
	snprintf(spec.value, sizeof(spec.value), "../../etc");
	err = (struct hm_err){0};
	assert_int_equal(agent_target_resolve(&spec, root, &t, &err), -1);
	assert_int_equal(err.code, EINVAL);
	assert_non_null(strstr(err.msg, "never '/' or '..'"));
}

int main(void)
{
	hm_log_init("test_agent_target", HM_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_id_ok),
	    cmocka_unit_test(test_parse_pid_file),
	    cmocka_unit_test_setup_teardown(test_task_lookup, setup_root, remove_root),
	    cmocka_unit_test_setup_teardown(test_task_file_refused, setup_root, remove_root),
	    cmocka_unit_test_setup_teardown(test_forged_pid_refused, setup_root, remove_root),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
