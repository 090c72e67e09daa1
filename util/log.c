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

const char *hm_printable(const char *in, char *out, size_t out_len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (!out_len)
		return out;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		/* U+0080..U+009F: C1 controls (0x9b is CSI) in a UTF-8 terminal */
		bool c1 = p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f;
		size_t take = c1 ? 2 : 1;
		bool escape = c1 || (*p < 0x20 && *p != '\t') || *p == 0x7f;
		if (o + (escape ? 4 * take : 1) >= out_len)
			break;
		for (size_t i = 0; i < take; i++) {
			if (!escape) {
				out[o++] = (char)p[i];
				continue;
			}
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[p[i] >> 4];
			out[o++] = hex[p[i] & 15];
		}
		p += take - 1;
	}
	out[o] = '\0';
	return out;
}

void hm_print_line(FILE *f, const char *fmt, ...)
{
	char msg[HM_ERR_MSG_MAX + 256], safe[sizeof(msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(f, "%s\n", hm_printable(msg, safe, sizeof(safe)));
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
	char msg[sizeof(line)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(line))
		n += (int)strlen(hm_printable(msg, line + n, sizeof(line) - (size_t)n));
	if (n >= (int)sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* one write() so concurrent lines from threads do not interleave */
	if (write(STDERR_FILENO, line, n) < 0) {
	}
	errno = saved;
}
