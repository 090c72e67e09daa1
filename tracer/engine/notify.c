/* The seccomp user-notification supervisor: poll the listener (never block in
 * NOTIF_RECV: it has no timeout and would not notice that everyone is gone), receive
 * one notification, run its handler, reply.
 *
 * A reply that finds the notification gone (ENOENT) means the syscall was interrupted
 * before we answered — typically a Go thread preempted with SIGURG, which re-issues the
 * syscall as a new notification — or the thread died. The result is abandoned: its fd
 * closed, its undo run. ADDFD_FLAG_SEND installs the fd and completes the syscall in
 * one step, so an interrupted open never leaks an fd into the program. */
#include <fcntl.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>

#include "tracer/engine/internal.h"

static int send_response(struct tracer *t, struct seccomp_notif_resp *resp)
{
	if (ioctl(t->listener, SECCOMP_IOCTL_NOTIF_SEND, resp) == 0)
		return 0;
	if (errno != ENOENT)
		hm_debug("NOTIF_SEND id %llu: %s", (unsigned long long)resp->id, strerror(errno));
	return -1;
}

static void reply(struct tracer *t, uint64_t id, struct tracer_result *res,
		  struct seccomp_notif_resp *resp)
{
	memset(resp, 0, t->resp_size);
	resp->id = id;
	switch (res->verdict) {
	case TRACER_DEFER: /* answer() parks these; never replied */
		resp->error = -ENOSYS;
		break;
	case TRACER_CONTINUE:
		resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
		break;
	case TRACER_RETURN:
		resp->val = res->value;
		break;
	case TRACER_ERROR:
		resp->error = -res->error;
		break;
	case TRACER_REPLACE_FD: {
		if ((res->fd_flags & O_NONBLOCK) && fcntl(res->fd, F_SETFL, O_NONBLOCK) < 0)
			hm_debug("O_NONBLOCK on installed fd: %s", strerror(errno));
		/* SETFD swaps the file under the program's number atomically, like dup2; the
		 * answer follows separately, so an interrupted call keeps the swap (undo) */
		struct seccomp_notif_addfd addfd = {
		    .id = id,
		    .flags = SECCOMP_ADDFD_FLAG_SETFD,
		    .srcfd = (uint32_t)res->fd,
		    .newfd = (uint32_t)res->target_fd,
		    .newfd_flags = (res->fd_flags & O_CLOEXEC) ? O_CLOEXEC : 0,
		};
		if (ioctl(t->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) < 0) {
			if (errno == ENOENT) {
				tracer_result_abandon(t, res);
				return;
			}
			resp->error = -errno;
			break;
		}
		t->stats.fds++;
		if (res->error)
			resp->error = -res->error;
		else
			resp->val = res->value;
		break;
	}
	case TRACER_INSTALL_FD: {
		if ((res->fd_flags & O_NONBLOCK) && fcntl(res->fd, F_SETFL, O_NONBLOCK) < 0)
			hm_debug("O_NONBLOCK on installed fd: %s", strerror(errno));
		/* Unlike NOTIF_SEND, this costs two wake-ups across CPUs on an idle machine,
		 * whatever SYNC_WAKE_UP says (kernel/seccomp.c, 6.18): seccomp_notify_addfd
		 * wakes the program with a plain complete(&knotif->ready) while we still run
		 * on its CPU, so the scheduler puts it on an idle CPU; we then sleep in
		 * wait_for_completion until seccomp_handle_addfd, in the program, wakes us
		 * with a plain complete() from there. Only the fd install must happen in the
		 * program, and no other reply installs an fd: no user-space way around it. */
		struct seccomp_notif_addfd addfd = {
		    .id = id,
		    .flags = t->features.addfd_send ? SECCOMP_ADDFD_FLAG_SEND : 0,
		    .srcfd = (uint32_t)res->fd,
		    .newfd_flags = (res->fd_flags & O_CLOEXEC) ? O_CLOEXEC : 0,
		};
		int newfd = ioctl(t->listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
		if (newfd < 0 && errno == ENOENT) {
			tracer_result_abandon(t, res);
			return;
		}
		if (newfd < 0) {
			/* e.g. EMFILE: the program's fd table is full; the syscall fails with it */
			resp->error = -errno;
			break;
		}
		t->stats.fds++;
		if (t->features.addfd_send) {
			tracer_result_release(res);
			return;
		}
		/* 5.9-5.13: install, then answer. If the answer finds the syscall gone, the fd
		 * stays in the program unannounced; nothing can take it back. */
		resp->val = newfd;
		break;
	}
	}
	if (send_response(t, resp) < 0)
		tracer_result_abandon(t, res);
	else
		tracer_result_release(res);
}

/* Reply now, or park a deferred call until its fd is ready. */
static void answer(struct tracer *t, const struct tracer_call *call, struct tracer_result *res,
		   struct seccomp_notif_resp *resp)
{
	if (res->verdict != TRACER_DEFER) {
		reply(t, call->id, res, resp);
		return;
	}
	if (tracer_defer_add(t, call, res, NULL) == 0)
		return;
	if (res->cancel)
		res->cancel(res->defer_arg);
	struct tracer_result oom = tracer_error(ENOMEM);
	reply(t, call->id, &oom, resp);
}

static void handle_notification(struct tracer *t, struct seccomp_notif *req,
				struct seccomp_notif_resp *resp)
{
	memset(req, 0, t->notif_size);
	if (ioctl(t->listener, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) {
		/* ENOENT: the thread was interrupted or killed before we got to it */
		if (errno != ENOENT && errno != EINTR)
			hm_debug("NOTIF_RECV: %s", strerror(errno));
		return;
	}
	struct tracer_call call = {
	    .tracer = t,
	    .pid = (pid_t)req->pid,
	    .nr = req->data.nr,
	    .arch = req->data.arch,
	    .ip = req->data.instruction_pointer,
	    .id = req->id,
	};
	memcpy(call.args, req->data.args, sizeof(call.args));
	struct tracer_result res;
	if (call.arch != TRACER_NATIVE_ARCH)
		res = tracer_error(ENOSYS); /* the filter kills foreign ABIs; belt and braces */
	else
		res = tracer_dispatch(t, &call);
	answer(t, &call, &res, resp);
}

static bool notif_gone(const struct tracer_call *call, void *arg)
{
	(void)arg;
	return !tracer_call_valid(call);
}

/* Deferred calls whose fd turned ready: resume them, answer or park them again. */
static void run_deferred(struct tracer *t, const struct pollfd *pfd, size_t npfd,
			 struct seccomp_notif_resp *resp)
{
	hm_cleanup_free struct tracer_deferred *ready = NULL;
	size_t n = tracer_defer_take_ready(t, pfd, npfd, &ready);
	for (size_t i = 0; i < n; i++) {
		struct tracer_deferred *d = &ready[i];
		if (!tracer_call_valid(&d->call)) {
			/* interrupted meanwhile: the program never sees this answer */
			t->stats.abandoned++;
			if (d->res.cancel)
				d->res.cancel(d->res.defer_arg);
			continue;
		}
		struct tracer_result res = d->res.resume(&d->call, d->res.defer_arg);
		answer(t, &d->call, &res, resp);
	}
}

int tracer_notify_loop(struct tracer *t, struct hm_err *err)
{
	struct seccomp_notif_sizes sizes;
	if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) < 0)
		return hm_err_errno(err, "SECCOMP_GET_NOTIF_SIZES");
	/* the kernel may know a larger struct than our headers; never hand it less */
	t->notif_size = sizes.seccomp_notif > sizeof(struct seccomp_notif)
			    ? sizes.seccomp_notif
			    : sizeof(struct seccomp_notif);
	t->resp_size = sizes.seccomp_notif_resp > sizeof(struct seccomp_notif_resp)
			   ? sizes.seccomp_notif_resp
			   : sizeof(struct seccomp_notif_resp);
	hm_cleanup_free struct seccomp_notif *req = calloc(1, t->notif_size);
	hm_cleanup_free struct seccomp_notif_resp *resp = calloc(1, t->resp_size);
	if (!req || !resp)
		return hm_err_set(err, ENOMEM, "notification buffers");

	hm_cleanup_free struct pollfd *pfd = NULL;
	size_t pfd_cap = 0;
	int64_t last_sweep = 0;
	while (!t->no_children) {
		if (pfd_cap < 3 + t->n_deferred) {
			size_t cap = 3 + t->cap_deferred;
			struct pollfd *bigger = realloc(pfd, cap * sizeof(*pfd));
			if (!bigger)
				return hm_err_set(err, ENOMEM, "poll set");
			pfd = bigger;
			pfd_cap = cap;
		}
		nfds_t n = 0;
		int lpos = -1;
		if (t->listener >= 0) {
			lpos = (int)n;
			pfd[n++] = (struct pollfd){.fd = t->listener, .events = POLLIN};
		}
		int spos = (int)n;
		pfd[n++] = (struct pollfd){.fd = t->sigfd, .events = POLLIN};
		size_t wpos = n, nw = tracer_watch_pollfd(t, pfd + n);
		n += nw;
		size_t dpos = n;
		n += tracer_defer_pollfds(t, pfd + dpos);
		/* deferred calls are checked for validity now and then: a thread killed while
		 * it waits leaves nothing behind that would wake us */
		int r = poll(pfd, n, t->n_deferred ? 1000 : -1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return hm_err_errno(err, "poll");
		}
		if (r > 0 && t->listener >= 0 && n > dpos)
			run_deferred(t, pfd + dpos, n - dpos, resp);
		if (lpos >= 0) {
			if (pfd[lpos].revents & POLLIN) {
				handle_notification(t, req, resp);
			} else if (pfd[lpos].revents & (POLLHUP | POLLERR | POLLNVAL)) {
				/* every process that had the filter is gone */
				close(t->listener);
				t->listener = -1;
				tracer_defer_drop(t, NULL, NULL);
			}
		}
		if (pfd[spos].revents & POLLIN)
			tracer_signals_handle(t);
		if (r > 0)
			tracer_watch_check(t, pfd + wpos, nw);
		/* after the poll set was used: dropping reorders the deferred calls */
		int64_t now_s = hm_now_ms() / 1000;
		if (t->n_deferred && now_s != last_sweep) {
			last_sweep = now_s;
			tracer_defer_drop(t, notif_gone, NULL);
		}
	}
	tracer_defer_drop(t, NULL, NULL);
	return 0;
}
