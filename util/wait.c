#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include "util.h"

int64_t hm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t hm_deadline_in(int64_t timeout_ms)
{
	return timeout_ms < 0 ? HM_NO_DEADLINE : hm_now_ms() + timeout_ms;
}

void hm_realtime_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

int hm_ms_until(int64_t deadline_ms)
{
	if (deadline_ms < 0)
		return -1;
	int64_t left = deadline_ms - hm_now_ms();
	if (left <= 0)
		return 0;
	return left > INT_MAX ? INT_MAX : (int)left;
}

int hm_poll_fd(int fd, short events, int64_t deadline_ms)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, hm_ms_until(deadline_ms));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n > 0)
			return (unsigned short)p.revents;
		/* poll's timeout is an int: a deadline beyond it takes more than one wait */
		if (deadline_ms >= 0 && hm_now_ms() < deadline_ms)
			continue;
		return 0;
	}
}

/* err filled and errno set alike, so callers without an err still see why */
static int connect_failed(struct hm_err *err, int code, const char *what)
{
	hm_err_set(err, code, "%s", what);
	errno = code;
	return -1;
}

int hm_connect_wait(int fd, int64_t deadline_ms, struct hm_err *err)
{
	int n = hm_poll_fd(fd, POLLOUT, deadline_ms);
	if (n < 0)
		return connect_failed(err, errno, "connect: poll");
	if (n == 0)
		return connect_failed(err, ETIMEDOUT, "connect");
	/* reading SO_ERROR also clears it, as a caller handing the socket on wants */
	int soerr = 0;
	socklen_t len = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		return connect_failed(err, errno, "connect: getsockopt SO_ERROR");
	return soerr ? connect_failed(err, soerr, "connect") : 0;
}

int hm_connect_deadline(int fd, const struct sockaddr *sa, socklen_t len, int64_t deadline_ms,
			struct hm_err *err)
{
	if (connect(fd, sa, len) == 0)
		return 0;
	/* after EINTR the kernel carries on with the connect: wait for it like EINPROGRESS */
	if (errno != EINPROGRESS && errno != EINTR)
		return connect_failed(err, errno, "connect");
	return hm_connect_wait(fd, deadline_ms, err);
}
