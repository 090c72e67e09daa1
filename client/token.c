/* Auth token files (client/client.h). */
#include <fcntl.h>
#include <string.h>

#include "client/client.h"

int client_token_load(const char *path, char *out, size_t outlen, struct hm_err *err)
{
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "token file %s", path);
	char buf[PROTO_AUTH_TOKEN_MAX + 64];
	ssize_t n = hm_read_all(fd, buf, sizeof(buf) - 1);
	if (n < 0)
		return hm_err_errno(err, "read token file %s", path);
	buf[n] = '\0';
	char *start = buf;
	while (*start == ' ' || *start == '\t' || *start == '\r' || *start == '\n')
		start++;
	size_t len = strcspn(start, "\r\n");
	while (len && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	start[len] = '\0';
	int rc = 0;
	if (!len)
		rc = hm_err_set(err, EINVAL, "token file %s is empty", path);
	else if (len > PROTO_AUTH_TOKEN_MAX || strlen(start) != len)
		rc = hm_err_set(err, E2BIG, "token in %s is longer than %d bytes", path,
				PROTO_AUTH_TOKEN_MAX);
	else if (len >= outlen)
		rc = hm_err_set(err, ENAMETOOLONG, "token in %s does not fit", path);
	else
		memcpy(out, start, len + 1);
	explicit_bzero(buf, sizeof(buf));
	return rc;
}
