#include <string.h>
#include <unistd.h>

#include "util.h"

int hm_err_set(struct hm_err *err, int code, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (code && (size_t)n < sizeof(err->msg))
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(code));
	err->code = code;
	return -1;
}

int hm_err_plain(struct hm_err *err, int code, const char *fmt, ...)
{
	if (!err)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	err->code = code;
	return -1;
}

int hm_cli_fail(const char *prog, int code, const char *fmt, ...)
{
	char msg[HM_ERR_MSG_MAX + 128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	hm_print_line(stderr, "%s: %s", prog, msg);
	return code;
}

int hm_cli_bad_option(const char *prog, int code, int opt, char *const argv[], const char *help)
{
	if (opt == ':')
		return hm_cli_fail(prog, code, "option '%s' needs a value (see %s)",
				   argv[optind - 1], help);
	return hm_cli_fail(prog, code, "unknown option '%s' (see %s)", argv[optind - 1], help);
}

int hm_err_prefix(struct hm_err *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[HM_ERR_MSG_MAX];
	char old[HM_ERR_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* truncation is acceptable: the message is for humans */
	size_t n = strnlen(prefix, sizeof(prefix) - 1);
	memcpy(err->msg, prefix, n);
	if (n + 2 < sizeof(err->msg)) {
		err->msg[n++] = ':';
		err->msg[n++] = ' ';
	}
	size_t rest = strnlen(old, sizeof(old));
	if (rest > sizeof(err->msg) - 1 - n)
		rest = sizeof(err->msg) - 1 - n;
	memcpy(err->msg + n, old, rest);
	err->msg[n + rest] = '\0';
	return -1;
}

void hm_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
	*fd = -1;
}

void hm_freep(void *p)
{
	void **pp = (void **)p;
	free(*pp);
	*pp = NULL;
}

void hm_fclosep(FILE **f)
{
	if (*f) {
		int saved = errno;
		fclose(*f);
		errno = saved;
	}
	*f = NULL;
}
