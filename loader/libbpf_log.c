/* libbpf prints through one process-wide callback; without it its messages (the
 * verifier log among them) would go to stderr unformatted or be lost. */
#include <pthread.h>
#include <string.h>

#include "loader/internal.h"

static int libbpf_to_hm_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	enum hm_log_level hm_level = level == LIBBPF_WARN ? HM_LOG_WARN : HM_LOG_DEBUG;
	/* libbpf 1.1 warns with the kernel's extack text on every failed netlink request,
	 * including the ones the loader expects (clsact already there, filter already
	 * gone) and handles by errno; a real failure is reported in the hm_err anyway */
	static const char extack[] = "libbpf: Kernel error message";
	if (strncmp(fmt, extack, sizeof(extack) - 1) == 0)
		hm_level = HM_LOG_DEBUG;
	/* the verifier's log is hundreds of lines: the loader's error says the program was
	 * refused, and the log is there at debug level */
	if (strstr(fmt, "PROG LOAD LOG"))
		hm_level = HM_LOG_DEBUG;
	/* libbpf is chatty at debug level: do not format what will be dropped */
	if (hm_level < hm_log_level())
		return 0;
	char *text = NULL;
	int n = vasprintf(&text, fmt, ap);
	if (n < 0)
		return 0;
	/* one log line per text line: the verifier log arrives as one multi-line message */
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		hm_log(hm_level, "%s", line); /* libbpf prefixes "libbpf: " itself */
	free(text);
	return n;
}

static void install(void)
{
	libbpf_set_print(libbpf_to_hm_log);
}

void hm_libbpf_log_setup(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, install);
}
