/* Conversions between the portable wire structs and the host's: struct stat and
 * statfs, socket addresses, and the session target syntax. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "proto/proto.h"

static struct proto_time time_from(struct timespec ts)
{
	return (struct proto_time){.sec = ts.tv_sec, .nsec = (uint32_t)ts.tv_nsec};
}

static struct timespec time_to(struct proto_time t)
{
	return (struct timespec){.tv_sec = (time_t)t.sec, .tv_nsec = t.nsec};
}

void proto_stat_from_host(const struct stat *st, struct proto_stat *out)
{
	*out = (struct proto_stat){
	    .ino = st->st_ino,
	    .size = (uint64_t)st->st_size,
	    .blocks = (uint64_t)st->st_blocks,
	    .dev_major = major(st->st_dev),
	    .dev_minor = minor(st->st_dev),
	    .rdev_major = major(st->st_rdev),
	    .rdev_minor = minor(st->st_rdev),
	    .mode = st->st_mode,
	    .nlink = (uint32_t)st->st_nlink,
	    .uid = st->st_uid,
	    .gid = st->st_gid,
	    .blksize = (uint32_t)st->st_blksize,
	    .atime = time_from(st->st_atim),
	    .mtime = time_from(st->st_mtim),
	    .ctime = time_from(st->st_ctim),
	};
}

void proto_stat_to_host(const struct proto_stat *in, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_size = (off_t)in->size;
	st->st_blocks = (blkcnt_t)in->blocks;
	st->st_dev = makedev(in->dev_major, in->dev_minor);
	st->st_rdev = makedev(in->rdev_major, in->rdev_minor);
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_blksize = (blksize_t)in->blksize;
	st->st_atim = time_to(in->atime);
	st->st_mtim = time_to(in->mtime);
	st->st_ctim = time_to(in->ctime);
}

void proto_statfs_from_host(const struct statfs *sf, struct proto_statfs *out)
{
	int fsid[2];
	memcpy(fsid, &sf->f_fsid, sizeof(fsid));
	*out = (struct proto_statfs){
	    .type = (uint64_t)sf->f_type,
	    .bsize = (uint64_t)sf->f_bsize,
	    .frsize = (uint64_t)sf->f_frsize,
	    .blocks = sf->f_blocks,
	    .bfree = sf->f_bfree,
	    .bavail = sf->f_bavail,
	    .files = sf->f_files,
	    .ffree = sf->f_ffree,
	    .namelen = (uint64_t)sf->f_namelen,
	    .flags = (uint64_t)sf->f_flags,
	    .fsid = {(uint32_t)fsid[0], (uint32_t)fsid[1]},
	};
}

void proto_statfs_to_host(const struct proto_statfs *in, struct statfs *sf)
{
	memset(sf, 0, sizeof(*sf));
	sf->f_type = (__fsword_t)in->type;
	sf->f_bsize = (__fsword_t)in->bsize;
	sf->f_frsize = (__fsword_t)in->frsize;
	sf->f_blocks = in->blocks;
	sf->f_bfree = in->bfree;
	sf->f_bavail = in->bavail;
	sf->f_files = in->files;
	sf->f_ffree = in->ffree;
	sf->f_namelen = (__fsword_t)in->namelen;
	sf->f_flags = (__fsword_t)in->flags;
	int fsid[2] = {(int)in->fsid[0], (int)in->fsid[1]};
	memcpy(&sf->f_fsid, fsid, sizeof(fsid));
}

int proto_addr_from_sockaddr(const struct sockaddr *sa, socklen_t len, struct proto_addr *out,
			     struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	if (len >= sizeof(struct sockaddr_in) && sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		out->family = PROTO_AF_INET;
		out->port = ntohs(in->sin_port);
		memcpy(out->addr, &in->sin_addr, 4);
		return 0;
	}
	if (len >= sizeof(struct sockaddr_in6) && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		out->family = PROTO_AF_INET6;
		out->port = ntohs(in6->sin6_port);
		memcpy(out->addr, &in6->sin6_addr, 16);
		out->scope_id = in6->sin6_scope_id;
		return 0;
	}
	return hm_err_set(err, EAFNOSUPPORT, "address family %d (length %u)",
			  len >= sizeof(sa_family_t) ? sa->sa_family : -1, (unsigned)len);
}

socklen_t proto_addr_to_sockaddr(const struct proto_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == PROTO_AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(a->port);
		memcpy(&in->sin_addr, a->addr, 4);
		return sizeof(*in);
	}
	if (a->family == PROTO_AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(a->port);
		memcpy(&in6->sin6_addr, a->addr, 16);
		in6->sin6_scope_id = a->scope_id;
		return sizeof(*in6);
	}
	return 0;
}

const char *proto_addr_str(const struct proto_addr *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (a->family == PROTO_AF_INET) {
		inet_ntop(AF_INET, a->addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, a->port);
	} else if (a->family == PROTO_AF_INET6) {
		inet_ntop(AF_INET6, a->addr, ip, sizeof(ip));
		if (a->scope_id)
			snprintf(buf, len, "[%s%%%u]:%u", ip, a->scope_id, a->port);
		else
			snprintf(buf, len, "[%s]:%u", ip, a->port);
	} else {
		snprintf(buf, len, "(family %u)", a->family);
	}
	return buf;
}

/* Names and ids end up in paths (/run/hermit/pods/NAME) and /proc scans, so only a
 * conservative character set passes, and never "." or "..". */
static bool ident_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
		if (!ok)
			return false;
	}
	return true;
}

#define PID_MAX_LIMIT 4194304 /* the kernel's ceiling for pid_max */

int proto_target_parse(const char *s, struct proto_target *t, struct hm_err *err)
{
	static const struct {
		const char *prefix;
		enum proto_target_kind kind;
	} kinds[] = {
	    {"pod/", PROTO_TARGET_POD},
	    {"pid/", PROTO_TARGET_PID},
	    {"container/", PROTO_TARGET_CONTAINER},
	};
	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < HM_ARRAY_SIZE(kinds); i++) {
		size_t plen = strlen(kinds[i].prefix);
		if (strncmp(s, kinds[i].prefix, plen))
			continue;
		const char *v = s + plen;
		if (!ident_ok(v, sizeof(t->value) - 1))
			return hm_err_set(err, EINVAL,
					  "bad target '%s': the name after '%s' is empty, too long "
					  "or has characters outside [A-Za-z0-9._-]",
					  s, kinds[i].prefix);
		t->kind = kinds[i].kind;
		strcpy(t->value, v);
		if (t->kind == PROTO_TARGET_PID) {
			uint64_t pid;
			if (v[0] == '0' || hm_parse_u64(v, &pid) < 0 || pid > PID_MAX_LIMIT)
				return hm_err_set(err, EINVAL, "bad target '%s': not a pid", s);
			t->pid = (uint32_t)pid;
		}
		return 0;
	}
	return hm_err_set(err, EINVAL, "bad target '%s': expected pod/NAME, pid/N or container/ID",
			  s);
}
