/* The pod's filesystem view, built by the pod's first process inside its new mount
 * namespace: private propagation, the rootfs bind, pivot_root with the old root
 * detached, then /proc, /sys, /dev and the masked / read-only paths. Everything that
 * touches the rootfs happens after pivot_root, so a symlink a previous pod left in the
 * shared rootfs (say /dev -> /etc) resolves inside the new root and cannot reach the
 * host. The only host paths used after the pivot are the /etc/hosts-style files, cloned
 * as detached mounts (open_tree) before it. */
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "runtime/internal.h"

#define DEV_MOUNT_FLAGS (MS_NOSUID | MS_NOEXEC | MS_NODEV)

/* docker's defaults (moby/oci/defaults.go) */
static const char *const masked_paths[] = {
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
};
static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

struct dev_node {
	const char *name;
	unsigned major, minor;
};
static const struct dev_node dev_nodes[] = {
    {"null", 1, 3},   {"zero", 1, 5},	 {"full", 1, 7},
    {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};
static const char *const dev_links[][2] = {
    {"/dev/ptmx", "pts/ptmx"},		{"/dev/fd", "/proc/self/fd"},
    {"/dev/stdin", "/proc/self/fd/0"},	{"/dev/stdout", "/proc/self/fd/1"},
    {"/dev/stderr", "/proc/self/fd/2"},
};

static int mount_at(const char *src, const char *target, const char *type, unsigned long flags,
		    const char *data, struct hm_err *err)
{
	if (mount(src, target, type, flags, data) < 0)
		return hm_err_errno(err, "mount %s on %s",
				    type  ? type
				    : src ? src
					  : "(remount)",
				    target);
	return 0;
}

/* A mount point the rootfs must provide. Checked without following a final symlink so
 * a rootfs whose /proc is a link gets a clear error instead of a surprising target. */
static int require_dir(const char *path, struct hm_err *err)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return hm_err_errno(err, "rootfs has no %s", path);
	if (!S_ISDIR(st.st_mode))
		return hm_err_set(err, ENOTDIR, "rootfs: %s is not a directory", path);
	return 0;
}

/* Clone a host file as a detached mount (before pivot_root hides the host). Read-only:
 * the file is the host's (/run/hermit/pods/NAME/...), and a writable bind would let the
 * pod grow it without bound on the host's /run. */
static int clone_host_file(const char *path, int *tree_fd, struct hm_err *err)
{
	*tree_fd = -1;
	if (!path)
		return 0;
	*tree_fd = open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (*tree_fd < 0)
		return hm_err_errno(err, "bind %s", path);
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID |
					      MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC};
	if (mount_setattr(*tree_fd, "", AT_EMPTY_PATH, &attr, sizeof(attr)) < 0)
		return hm_err_errno(err, "bind %s: set ro,nosuid,nodev,noexec", path);
	return 0;
}

/* Attach a cloned host file over target inside the new root. A missing target is
 * created empty; nothing else is written into the rootfs, which several pods share. The
 * target is a pod's file and may be a link: it is resolved inside the root without
 * magic links (a /proc/self/fd/N link would reach the host files this process holds)
 * and the mount goes onto that fd, not onto a path resolved again. */
static int attach_host_file(int *tree_fd, const char *target, struct hm_err *err)
{
	if (*tree_fd < 0)
		return 0;
	if (mkdir("/etc", 0755) < 0 && errno != EEXIST)
		return hm_err_errno(err, "mkdir /etc");
	hm_cleanup_close int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return hm_err_errno(err, "open /");
	hm_cleanup_close int fd = rt_rootfs_mount_target(root, target, err);
	if (fd < 0)
		return hm_err_prefix(err, "bind onto %s", target);
	if (move_mount(*tree_fd, "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		return hm_err_errno(err, "bind onto %s", target);
	hm_closep(tree_fd);
	return 0;
}

static int setup_dev(struct hm_err *err)
{
	if (require_dir("/dev", err) < 0)
		return -1;
	/* a fresh tmpfs: nothing of the rootfs's /dev, only the nodes made below (and
	 * those the device policy lets the pod open); never a place to run code from */
	if (mount_at("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME,
		     "mode=755,size=65536k", err) < 0)
		return -1;
	for (size_t i = 0; i < HM_ARRAY_SIZE(dev_nodes); i++) {
		char path[32];
		snprintf(path, sizeof(path), "/dev/%s", dev_nodes[i].name);
		if (mknod(path, S_IFCHR | 0666, makedev(dev_nodes[i].major, dev_nodes[i].minor)) <
		    0)
			return hm_err_errno(err, "mknod %s", path);
		/* mknod applies the umask */
		if (chmod(path, 0666) < 0)
			return hm_err_errno(err, "chmod %s", path);
	}
	if (mkdir("/dev/pts", 0755) < 0)
		return hm_err_errno(err, "mkdir /dev/pts");
	if (mount_at("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		     "newinstance,ptmxmode=0666,mode=0620,gid=5", err) < 0)
		return -1;
	if (mkdir("/dev/shm", 01777) < 0)
		return hm_err_errno(err, "mkdir /dev/shm");
	if (mount_at("shm", "/dev/shm", "tmpfs", DEV_MOUNT_FLAGS, "mode=1777,size=65536k", err) < 0)
		return -1;
	/* the pod's own IPC namespace's POSIX message queues */
	if (mkdir("/dev/mqueue", 01777) < 0)
		return hm_err_errno(err, "mkdir /dev/mqueue");
	if (mount_at("mqueue", "/dev/mqueue", "mqueue", DEV_MOUNT_FLAGS, NULL, err) < 0)
		return -1;
	for (size_t i = 0; i < HM_ARRAY_SIZE(dev_links); i++)
		if (symlink(dev_links[i][1], dev_links[i][0]) < 0)
			return hm_err_errno(err, "symlink %s", dev_links[i][0]);
	return 0;
}

/* Files get /dev/null over them, directories an empty read-only tmpfs; paths this
 * kernel does not have are skipped. */
static int mask_path(const char *path, struct hm_err *err)
{
	struct stat st;
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "mask %s", path);
	}
	if (S_ISDIR(st.st_mode))
		return mount_at("tmpfs", path, "tmpfs", MS_RDONLY | DEV_MOUNT_FLAGS, NULL, err);
	return mount_at("/dev/null", path, NULL, MS_BIND, NULL, err);
}

static int make_readonly(const char *path, struct hm_err *err)
{
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
		if (errno == ENOENT)
			return 0;
		return hm_err_errno(err, "bind %s", path);
	}
	return mount_at(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | DEV_MOUNT_FLAGS, NULL,
			err);
}

int rt_mounts_setup(const struct rt_spec *spec, struct hm_err *err)
{
	/* nothing we mount may propagate back to the host, and pivot_root needs it */
	if (mount_at(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, err) < 0)
		return -1;
	if (mount_at(spec->rootfs, spec->rootfs, NULL, MS_BIND | MS_REC, NULL, err) < 0)
		return -1;
	/* Device nodes belong in the pod's /dev only: one left in the rootfs (made by an
	 * earlier pod run with --allow-mknod, or shipped in an image) cannot be opened.
	 * mount_setattr adds the flag and keeps the others (ro, nosuid) as they are. */
	struct mount_attr nodev = {.attr_set = MOUNT_ATTR_NODEV};
	if (mount_setattr(AT_FDCWD, spec->rootfs, AT_RECURSIVE, &nodev, sizeof(nodev)) < 0)
		return hm_err_errno(err, "mount %s nodev", spec->rootfs);

	struct {
		const char *host, *target;
		int tree;
	} files[] = {
	    {spec->hosts_file, "/etc/hosts", -1},
	    {spec->resolv_file, "/etc/resolv.conf", -1},
	    {spec->hostname_file, "/etc/hostname", -1},
	};
	int rc = -1;
	for (size_t i = 0; i < HM_ARRAY_SIZE(files); i++)
		if (clone_host_file(files[i].host, &files[i].tree, err) < 0)
			goto out;

	/* crun's sequence: the old root ends up stacked on "." and is detached at once */
	if (chdir(spec->rootfs) < 0) {
		hm_err_errno(err, "chdir %s", spec->rootfs);
		goto out;
	}
	if (syscall(SYS_pivot_root, ".", ".") < 0) {
		hm_err_errno(err, "pivot_root %s", spec->rootfs);
		goto out;
	}
	if (umount2(".", MNT_DETACH) < 0) {
		hm_err_errno(err, "detach the old root");
		goto out;
	}
	if (chdir("/") < 0) {
		hm_err_errno(err, "chdir /");
		goto out;
	}

	if (require_dir("/proc", err) < 0 ||
	    mount_at("proc", "/proc", "proc", DEV_MOUNT_FLAGS, NULL, err) < 0)
		goto out;
	if (require_dir("/sys", err) < 0 ||
	    mount_at("sysfs", "/sys", "sysfs", MS_RDONLY | DEV_MOUNT_FLAGS, NULL, err) < 0)
		goto out;
	if (setup_dev(err) < 0)
		goto out;
	for (size_t i = 0; i < HM_ARRAY_SIZE(files); i++)
		if (attach_host_file(&files[i].tree, files[i].target, err) < 0)
			goto out;
	for (size_t i = 0; i < HM_ARRAY_SIZE(masked_paths); i++)
		if (mask_path(masked_paths[i], err) < 0)
			goto out;
	for (size_t i = 0; i < HM_ARRAY_SIZE(readonly_paths); i++)
		if (make_readonly(readonly_paths[i], err) < 0)
			goto out;
	rc = 0;
out:
	for (size_t i = 0; i < HM_ARRAY_SIZE(files); i++)
		hm_closep(&files[i].tree);
	return rc;
}
