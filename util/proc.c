/* Fields of /proc/PID/status: many modules need one or two of them (a thread's tgid,
 * its uids, umask or capability set), read the same way. */
#include <string.h>

#include "util.h"

int hm_proc_status(pid_t pid, struct hm_proc_field *fields, size_t n)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	for (size_t i = 0; i < n; i++)
		fields[i].found = false;
	hm_cleanup_fclose FILE *f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			errno = ESRCH;
		return -1;
	}
	size_t left = n;
	/* only as far as the last field asked for: the status file is long */
	while (left && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = '\0';
		for (size_t i = 0; i < n; i++) {
			if (fields[i].found || strcmp(fields[i].key, line) != 0)
				continue;
			const char *v = colon + 1 + strspn(colon + 1, " \t");
			snprintf(fields[i].value, sizeof(fields[i].value), "%.*s",
				 (int)strcspn(v, "\n"), v);
			fields[i].found = true;
			left--;
			break;
		}
	}
	if (left) {
		errno = ENOENT;
		return -1;
	}
	return 0;
}
