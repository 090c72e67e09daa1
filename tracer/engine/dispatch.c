/* Dispatch: the handler table (one entry per native syscall number) and the handlers the core
 * always installs: seccomp(), so that the program cannot put a listener of its own in
 * front of trace-run's. */
#include <linux/seccomp.h>
#include <string.h>
#include <sys/syscall.h>

#include "tracer/engine/internal.h"

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

int tracer_set_handler_if_arg(struct tracer *t, int nr, int arg, tracer_handler_fn fn, void *data,
			      struct hm_err *err)
{
	if (arg < 0 || arg > 5)
		return hm_err_set(err, EINVAL, "syscall argument %d out of range", arg);
	if (tracer_set_handler(t, nr, fn, data, err) < 0)
		return -1;
	t->handlers[nr].when_arg_set = (uint8_t)(arg + 1);
	return 0;
}

struct tracer_result tracer_dispatch(struct tracer *t, const struct tracer_call *call)
{
	t->stats.calls++;
	if (call->nr == SYS_execve || call->nr == SYS_execveat)
		tracer_exec_check(t, call);
	if (call->nr < 0 || call->nr >= TRACER_NR_MAX || !t->handlers[call->nr].fn)
		return tracer_continue();
	struct tracer_result res = t->handlers[call->nr].fn(call, t->handlers[call->nr].data);
	if (res.verdict == TRACER_CONTINUE)
		t->stats.continued++;
	return res;
}

void tracer_result_release(struct tracer_result *res)
{
	if ((res->verdict == TRACER_INSTALL_FD || res->verdict == TRACER_REPLACE_FD) &&
	    res->fd >= 0) {
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
	if (tracer_set_handler(t, SYS_seccomp, handle_seccomp, NULL, err) < 0)
		return -1;
	return tracer_exec_check_register(t, err);
}

/* ---- the watched fd ---- */

void tracer_watch_fd(struct tracer *t, int fd, void (*fn)(void *arg), void *arg)
{
	t->watch_fd = fd;
	t->watch_fn = fn;
	t->watch_arg = arg;
}

size_t tracer_watch_pollfd(const struct tracer *t, struct pollfd *pfd)
{
	if (t->watch_fd < 0)
		return 0;
	*pfd = (struct pollfd){.fd = t->watch_fd, .events = POLLIN};
	return 1;
}

void tracer_watch_check(struct tracer *t, const struct pollfd *pfd, size_t n)
{
	if (n == 0 || !pfd->revents)
		return;
	t->watch_fd = -1; /* once: it stays readable */
	t->watch_fn(t->watch_arg);
}

/* ---- deferred calls ---- */

int tracer_defer_add(struct tracer *t, const struct tracer_call *call,
		     const struct tracer_result *res, const struct user_regs_struct *regs)
{
	if (t->n_deferred == t->cap_deferred) {
		size_t cap = t->cap_deferred ? t->cap_deferred * 2 : 16;
		struct tracer_deferred *n = realloc(t->deferred, cap * sizeof(*n));
		if (!n)
			return -1;
		t->deferred = n;
		t->cap_deferred = cap;
	}
	struct tracer_deferred *d = &t->deferred[t->n_deferred++];
	memset(d, 0, sizeof(*d));
	d->call = *call;
	d->res = *res;
	if (regs)
		d->regs = *regs;
	return 0;
}

size_t tracer_defer_pollfds(const struct tracer *t, struct pollfd *pfd)
{
	for (size_t i = 0; i < t->n_deferred; i++)
		pfd[i] = (struct pollfd){.fd = t->deferred[i].res.defer_fd, .events = POLLIN};
	return t->n_deferred;
}

static void defer_remove(struct tracer *t, size_t i)
{
	t->deferred[i] = t->deferred[--t->n_deferred];
}

size_t tracer_defer_take_ready(struct tracer *t, const struct pollfd *pfd, size_t npfd,
			       struct tracer_deferred **ready)
{
	*ready = NULL;
	size_t n = 0, count = npfd < t->n_deferred ? npfd : t->n_deferred;
	for (size_t i = 0; i < count; i++)
		if (pfd[i].revents)
			n++;
	if (!n)
		return 0;
	struct tracer_deferred *out = malloc(n * sizeof(*out));
	if (!out)
		return 0; /* try again on the next round */
	size_t k = 0;
	/* from the end, so that the swap-with-last removal never moves an unvisited entry
	 * into a visited slot */
	for (size_t i = count; i-- > 0;) {
		if (!pfd[i].revents)
			continue;
		out[k++] = t->deferred[i];
		defer_remove(t, i);
	}
	*ready = out;
	return k;
}

void tracer_defer_drop(struct tracer *t, bool (*gone)(const struct tracer_call *call, void *arg),
		       void *arg)
{
	for (size_t i = t->n_deferred; i-- > 0;) {
		struct tracer_deferred d = t->deferred[i];
		if (gone && !gone(&d.call, arg))
			continue;
		defer_remove(t, i);
		t->stats.abandoned++;
		if (d.res.cancel)
			d.res.cancel(d.res.defer_arg);
	}
	if (!t->n_deferred) {
		free(t->deferred);
		t->deferred = NULL;
		t->cap_deferred = 0;
	}
}
