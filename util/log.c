#include <string.h>
#include <time.h>

#include "util.h"

static const char *log_prog = "hermit";
static enum hm_log_level log_threshold = HM_LOG_INFO;

void hm_log_init(const char *prog, enum hm_log_level level)
{
	log_prog = prog;
	log_threshold = level;
}

enum hm_log_level hm_log_level(void)
{
	return log_threshold;
}

void hm_log(enum hm_log_level level, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	if (level < log_threshold || level >= HM_LOG_QUIET)
		return;
	int saved = errno;
	char line[2048];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s %s: ", tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, log_prog, names[level]);
	va_list ap;
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		n += vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* one write() so concurrent lines from threads do not interleave */
	if (write(STDERR_FILENO, line, n) < 0) {
	}
	errno = saved;
}
