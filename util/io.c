#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

ssize_t hm_read_all(int fd, void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = read(fd, (char *)buf + done, len - done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0)
			break;
		done += r;
	}
	return done;
}

ssize_t hm_write_all(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t r = write(fd, (const char *)buf + done, len - done);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += r;
	}
	return done;
}

int hm_write_file_at(int dirfd, const char *path, const char *data, struct hm_err *err)
{
	hm_cleanup_close int fd = openat(dirfd, path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "open %s", path);
	size_t len = strlen(data);
	/* cgroup files report the real error from write(), not from close() */
	if (hm_write_all(fd, data, len) < 0)
		return hm_err_errno(err, "write '%s' to %s", data, path);
	return 0;
}

int hm_write_file(const char *path, const char *data, struct hm_err *err)
{
	return hm_write_file_at(AT_FDCWD, path, data, err);
}

int hm_create_file(const char *path, const void *data, size_t len, mode_t mode, struct hm_err *err)
{
	hm_cleanup_close int fd =
	    open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return hm_err_errno(err, "create %s", path);
	if (hm_write_all(fd, data, len) < 0)
		return hm_err_errno(err, "write %s", path);
	if (fchmod(fd, mode) < 0)
		return hm_err_errno(err, "chmod %s", path);
	return 0;
}

int hm_read_fd(int fd, size_t size_hint, size_t max, const char *what, char **out, size_t *len,
	       struct hm_err *err)
{
	/* +1 so the read that meets EOF (or the byte past max) needs no reallocation */
	size_t cap = size_hint + 2;
	if (max && cap > max + 2)
		cap = max + 2;
	if (cap < 4096)
		cap = 4096;
	size_t n = 0;
	hm_cleanup_free char *buf = malloc(cap);
	if (!buf)
		return hm_err_set(err, ENOMEM, "read %s", what);
	for (;;) {
		if (n + 1 >= cap) {
			size_t new_cap = cap * 2;
			if (max && new_cap > max + 2)
				new_cap = max + 2;
			char *nb = realloc(buf, new_cap);
			if (!nb)
				return hm_err_set(err, ENOMEM, "read %s", what);
			buf = nb;
			cap = new_cap;
		}
		ssize_t r = read(fd, buf + n, cap - n - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return hm_err_errno(err, "read %s", what);
		}
		if (r == 0)
			break;
		n += r;
		if (max && n > max)
			return hm_err_set(err, EFBIG, "%s: larger than %zu bytes", what, max);
	}
	buf[n] = '\0';
	if (len)
		*len = n;
	*out = hm_steal_ptr(&buf);
	return 0;
}

int hm_read_file(const char *path, char **out, size_t *len, struct hm_err *err)
{
	hm_cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return hm_err_errno(err, "open %s", path);
	return hm_read_fd(fd, 0, 0, path, out, len, err);
}

int hm_mkdir_p(const char *path, mode_t mode, struct hm_err *err)
{
	char buf[PATH_MAX];
	if (strlen(path) >= sizeof(buf))
		return hm_err_set(err, ENAMETOOLONG, "mkdir %s", path);
	strcpy(buf, path);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST)
				return hm_err_errno(err, "mkdir %s", buf);
			*p = c;
			if (c == '\0')
				break;
		}
	}
	return 0;
}

static int rm_rf_at(int parent_fd, const char *name, dev_t dev, struct hm_err *err)
{
	struct stat st;
	if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "stat %s", name);
	}
	if (S_ISDIR(st.st_mode)) {
		if (st.st_dev != dev)
			return hm_err_set(err, EXDEV, "refusing to cross a mount point at %s",
					  name);
		int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return hm_err_errno(err, "open %s", name);
		DIR *d = fdopendir(fd);
		if (!d) {
			close(fd);
			return hm_err_errno(err, "opendir %s", name);
		}
		struct dirent *de;
		int rc = 0;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (rm_rf_at(dirfd(d), de->d_name, dev, err) < 0) {
				rc = -1;
				break;
			}
		}
		closedir(d);
		if (rc < 0)
			return hm_err_prefix(err, "%s", name);
		if (unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
			return hm_err_errno(err, "rmdir %s", name);
		return 0;
	}
	if (unlinkat(parent_fd, name, 0) < 0 && errno != ENOENT)
		return hm_err_errno(err, "unlink %s", name);
	return 0;
}

int hm_rm_rf(const char *path, struct hm_err *err)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "stat %s", path);
	}
	return rm_rf_at(AT_FDCWD, path, st.st_dev, err);
}

int hm_parse_u64(const char *s, uint64_t *out)
{
	/* strtoull would skip spaces and accept a sign: " -5" becomes 2^64-5 */
	if (!s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

int hm_parse_size(const char *s, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	uint64_t mult = 1;
	if (*end) {
		switch (*end) {
		case 'k':
		case 'K':
			mult = 1ULL << 10;
			break;
		case 'm':
		case 'M':
			mult = 1ULL << 20;
			break;
		case 'g':
		case 'G':
			mult = 1ULL << 30;
			break;
		default:
			return -1;
		}
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end)
			return -1;
	}
	if (v > UINT64_MAX / mult)
		return -1;
	*out = v * mult;
	return 0;
}
