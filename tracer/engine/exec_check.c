/* setuid, setgid and file-capability programs cannot gain privileges under trace-run:
 * the program runs with no_new_privs, which an ordinary user needs to install a seccomp
 * filter (and ptrace would strip the privileges anyway). su, sudo or newgrp then fail
 * with messages of their own that do not say why ("su: Authentication failure",
 * "sudo: effective uid is not 0"), so trace-run says it, once per program, when one is
 * exec'd. The exec itself goes on unchanged. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include "tracer/engine/internal.h"

/* the caller's effective uid and gid, from /proc/TID/status */
static bool effective_ids(pid_t tid, uid_t *euid, gid_t *egid)
{
	struct hm_proc_field ids[] = {{.key = "Uid"}, {.key = "Gid"}};
	unsigned r, e;
	if (hm_proc_status(tid, ids, HM_ARRAY_SIZE(ids)) < 0 ||
	    sscanf(ids[0].value, "%u %u", &r, &e) != 2)
		return false;
	*euid = e;
	if (sscanf(ids[1].value, "%u %u", &r, &e) != 2)
		return false;
	*egid = e;
	return true;
}

static struct tracer_result handle_exec(const struct tracer_call *call, void *data)
{
	(void)call;
	(void)data;
	return tracer_continue(); /* tracer_exec_check, from the dispatcher, did the work */
}

int tracer_exec_check_register(struct tracer *t, struct hm_err *err)
{
	if (tracer_set_handler(t, SYS_execve, handle_exec, NULL, err) < 0 ||
	    tracer_set_handler(t, SYS_execveat, handle_exec, NULL, err) < 0)
		return -1;
	return 0;
}

void tracer_exec_check(struct tracer *t, const struct tracer_call *call)
{
	bool at = call->nr == SYS_execveat;
	int dirfd = at ? (int)call->args[0] : AT_FDCWD;
	char raw[PATH_MAX], abs[PATH_MAX];
	struct hm_err err = {0};
	if (tracer_read_path(call, call->args[at ? 1 : 0], raw, sizeof(raw), &err) < 0 || !raw[0])
		return; /* fexecve and the like: not worth a guess */
	if (raw[0] == '/')
		snprintf(abs, sizeof(abs), "%s", raw);
	else if (tracer_resolve_at(call, dirfd, raw, abs, sizeof(abs), &err) < 0)
		return;
	struct stat st;
	if (stat(abs, &st) < 0 || !S_ISREG(st.st_mode))
		return;
	uid_t euid = 0;
	gid_t egid = 0;
	if (!effective_ids(call->pid, &euid, &egid))
		return;
	const char *what = (st.st_mode & S_ISUID) && st.st_uid != euid	 ? "setuid"
			   : (st.st_mode & S_ISGID) && st.st_gid != egid ? "setgid"
			   : getxattr(abs, "security.capability", NULL, 0) > 0
			       ? "given file capabilities"
			       : NULL;
	if (!what || !tracer_once(&t->warned_exec, abs))
		return;
	hm_warn("%s is %s, but programs under trace-run run with no_new_privs (required for the "
		"seccomp filter): it runs without those privileges and may fail",
		abs, what);
}
