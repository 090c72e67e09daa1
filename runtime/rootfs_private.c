/* A pod's rootfs must be out of reach of the host's other users. Root in the pod owns
 * the files it makes there: a setuid-root binary, a device node, a world-writable
 * directory. If a host user can walk to them, the pod has handed that user root. So,
 * as runc expects of its bundles, some directory on the rootfs's path must close the
 * way: owned by root and without search permission for group and others (0700).
 * The rootfs directory itself never counts: it is the pod's `/`, and root in the pod
 * (CAP_FOWNER) can chmod it open. Only a parent is out of the pod's reach. */
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/internal.h"

/* Whether dir keeps other users from reaching anything below it. Group and other
 * bits include an ACL's mask, so a directory with an ACL entry granting search fails. */
static bool closes_the_way(const struct stat *st)
{
	return S_ISDIR(st->st_mode) && (st->st_mode & (S_IXGRP | S_IXOTH)) == 0 &&
	       (st->st_uid == 0 || st->st_uid == geteuid());
}

/* Cuts path to its parent directory; false when path is "/", which has none. */
static bool to_parent(char *path)
{
	char *slash = strrchr(path, '/');
	if (slash == path) {
		if (path[1] == '\0')
			return false;
		path[1] = '\0';
	} else {
		*slash = '\0';
	}
	return true;
}

int rt_rootfs_check_private(const char *rootfs, struct hm_err *err)
{
	if (rootfs[0] != '/')
		return hm_err_plain(err, EINVAL, "rootfs %s: not an absolute path", rootfs);
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s", rootfs) >= (int)sizeof(path))
		return hm_err_plain(err, ENAMETOOLONG, "rootfs %s: path too long", rootfs);
	/* rootfs is a realpath: every component is a directory, no symlink on the way */
	while (to_parent(path)) {
		struct stat st;
		if (stat(path, &st) < 0)
			return hm_err_errno(err, "rootfs %s: stat %s", rootfs, path);
		if (closes_the_way(&st))
			return 0;
	}
	return hm_err_plain(err, EACCES,
			    "rootfs %s is reachable by other host users (no parent directory "
			    "of it is root-owned with mode 0700), so setuid files made in the "
			    "pod would work for them: move it into one (mkdir -m 0700 DIR) or "
			    "pass --unsafe-public-rootfs",
			    rootfs);
}

int rt_rootfs_prepare_parent(const char *dir, struct hm_err *err)
{
	char copy[PATH_MAX];
	if (snprintf(copy, sizeof(copy), "%s", dir) >= (int)sizeof(copy))
		return hm_err_plain(err, ENAMETOOLONG, "rootfs %s: path too long", dir);
	const char *parent = dirname(copy);
	struct stat st;
	if (stat(parent, &st) == 0 || errno != ENOENT)
		return 0;
	/* every directory made here is new and ours: private from the start */
	if (hm_mkdir_p(parent, 0700, err) < 0)
		return hm_err_prefix(err, "rootfs %s", dir);
	return 0;
}
