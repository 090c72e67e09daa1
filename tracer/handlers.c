/* The handler table (one entry per native syscall number) and the handlers the core
 * always installs: seccomp(), so that the program cannot put a listener of its own in
 * front of trace-run's. */
#include <linux/seccomp.h>
#include <string.h>
#include <sys/syscall.h>

#include "tracer/internal.h"

int tracer_set_handler(struct tracer *t, int nr, tracer_handler_fn fn, void *data,
		       struct hm_err *err)
{
	if (nr < 0 || nr >= TRACER_NR_MAX)
		return hm_err_set(err, EINVAL, "syscall number %d out of range", nr);
	if (tracer_filter_refused(nr))
		return hm_err_set(err, EINVAL, "syscall %d is always refused with ENOSYS", nr);
	if (t->main_pid)
		return hm_err_set(err, EBUSY, "handlers must be set before the program starts");
	t->handlers[nr] = (struct tracer_handler_entry){.fn = fn, .data = data};
	return 0;
}

struct tracer_result tracer_dispatch(struct tracer *t, const struct tracer_call *call)
{
	t->stats.calls++;
	if (call->nr < 0 || call->nr >= TRACER_NR_MAX || !t->handlers[call->nr].fn)
		return tracer_continue();
	struct tracer_result res = t->handlers[call->nr].fn(call, t->handlers[call->nr].data);
	if (res.verdict == TRACER_CONTINUE)
		t->stats.continued++;
	return res;
}

void tracer_result_release(struct tracer_result *res)
{
	if (res->verdict == TRACER_INSTALL_FD && res->fd >= 0) {
		close(res->fd);
		res->fd = -1;
	}
}

void tracer_result_abandon(struct tracer *t, struct tracer_result *res)
{
	t->stats.abandoned++;
	tracer_result_release(res);
	if (res->undo) {
		res->undo(res->undo_arg);
		res->undo = NULL;
	}
}

/* A second listener anywhere in the chain would take calls away from trace-run (with
 * the ptrace backend a USER_NOTIF filter even outranks our RET_TRACE). The kernel
 * already refuses a second listener with EBUSY under the seccomp backend; say the same
 * under ptrace. Every other seccomp() only adds restrictions, so CONTINUE is safe
 * despite the usual CONTINUE time-of-check caveat. */
static struct tracer_result handle_seccomp(const struct tracer_call *call, void *data)
{
	(void)data;
	if (call->args[0] == SECCOMP_SET_MODE_FILTER &&
	    (call->args[1] & SECCOMP_FILTER_FLAG_NEW_LISTENER)) {
		hm_debug("pid %d: refused a nested seccomp listener", call->pid);
		return tracer_error(EBUSY);
	}
	return tracer_continue();
}

int tracer_register_builtin(struct tracer *t, struct hm_err *err)
{
	return tracer_set_handler(t, SYS_seccomp, handle_seccomp, NULL, err);
}
