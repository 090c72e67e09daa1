/* tracer policy: the pure decisions trace-run's syscall handlers consult, and the
 * configuration they come from. Nothing here touches the traced program; every
 * function is a plain computation on strings and addresses, so it is unit-tested on
 * its own (tests/unit/test_tracer_policy.c).
 *
 *  - config (config.c): the `-f trace.json` file (json-c) and the struct the CLI flags
 *    fill too; hm_config_merge lets flags override the file. docs/config.md.
 *  - files (fs_policy.c): path -> LOCAL / REMOTE / REMOTE_WRITE / NOT_FOUND, mirrord's
 *    feature.fs modes and regex lists (PCRE2) on top of documented defaults.
 *  - outgoing traffic (net_filter.c): destination -> LOCAL / REMOTE, mirrord's
 *    outgoing.filter specs, with a name table fed from the DNS answers the program got.
 *  - environment (env_filter.c): the program's env from the pod's and the local one.
 *
 * Decision functions are thread-safe once their policy object is built. */
#ifndef HERMIT_TRACER_POLICY_H
#define HERMIT_TRACER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util/util.h"

/* ---------------------------------------------------------------- string lists */

struct hm_strv {
	char **items;
	size_t len;
	bool set; /* given by the file or a flag (an explicitly empty list is set) */
};
int hm_strv_push(struct hm_strv *v, const char *s, struct hm_err *err);
/* Push each non-empty piece of s split at sep (mirrord's "A;B" list syntax). */
int hm_strv_push_split(struct hm_strv *v, const char *s, char sep, struct hm_err *err);
int hm_strv_copy(struct hm_strv *dst, const struct hm_strv *src, struct hm_err *err);
void hm_strv_clear(struct hm_strv *v); /* frees the items, leaves an unset empty list */

/* ---------------------------------------------------------------- config */

enum hm_tristate { HM_TRI_UNSET = 0, HM_TRI_FALSE, HM_TRI_TRUE };

enum hm_cfg_backend {
	HM_CFG_BACKEND_UNSET = 0,
	HM_CFG_BACKEND_AUTO, /* the default: seccomp when the kernel can, else ptrace */
	HM_CFG_BACKEND_SECCOMP,
	HM_CFG_BACKEND_PTRACE,
};

enum hm_fs_mode {
	HM_FS_MODE_UNSET = 0,
	HM_FS_MODE_READ, /* the default */
	HM_FS_MODE_WRITE,
	HM_FS_MODE_LOCAL,
	HM_FS_MODE_LOCAL_WITH_OVERRIDES,
};

enum hm_net_filter_kind {
	HM_NET_FILTER_UNSET = 0,
	HM_NET_FILTER_NONE,   /* the default: every non-loopback destination goes remote */
	HM_NET_FILTER_REMOTE, /* only matching destinations go remote */
	HM_NET_FILTER_LOCAL,  /* matching destinations stay local, the rest go remote */
};

/* Every field starts unset (NULL, *_UNSET, list.set == false) so that a merge can tell
 * "not given" from "given as the default"; hm_config_finalize fills the defaults. */
struct hm_trace_config {
	char *target; /* "pod/web", "pid/N", "container/ID" */
	struct {
		char *unix_path; /* JSON "unix"; exclusive with address */
		char *address;	 /* "host:port" */
		char *token_file;
	} agent;
	enum hm_cfg_backend backend;
	struct {
		struct {
			enum hm_tristate enabled; /* "env": false turns the import off */
			struct hm_strv include;	  /* fnmatch globs; empty: "*" */
			struct hm_strv exclude;
			struct hm_strv override; /* "KEY=VALUE", one per key */
		} env;
		struct {
			enum hm_fs_mode mode;
			struct hm_strv read_only, read_write, local, not_found; /* PCRE2 */
			uint64_t max_file_size; /* bytes; 0: unset (HM_FS_MAX_FILE_DEFAULT) */
		} fs;
		struct {
			struct {
				enum hm_tristate tcp, udp;
				enum hm_net_filter_kind filter_kind;
				struct hm_strv filter; /* specs of filter_kind's list */
			} outgoing;
			enum hm_tristate dns;
		} network;
	} feature;
};

/* feature.fs.max_file_size when unset: the agent's own default cap */
#define HM_FS_MAX_FILE_DEFAULT (1ULL << 30)

void hm_config_init(struct hm_trace_config *c);
void hm_config_free(struct hm_trace_config *c); /* leaves c initialized (empty) */
/* Parse a config file into c (which must be freshly initialized). Errors name the file
 * and the key's JSON path: "trace.json: unknown key feature.fs.mdoe",
 * "trace.json: feature.network.dns: expected a boolean, got string". */
int hm_config_load_file(struct hm_trace_config *c, const char *path, struct hm_err *err);
/* The same from a string; origin names it in errors. */
int hm_config_load_string(struct hm_trace_config *c, const char *json, const char *origin,
			  struct hm_err *err);
/* Flags override the file: every field set in `over` replaces base's (lists as a whole,
 * agent.unix/agent.address as one endpoint choice), except env overrides, which merge
 * key by key with over's value winning. */
int hm_config_merge(struct hm_trace_config *base, const struct hm_trace_config *over,
		    struct hm_err *err);
/* Fill the defaults and check what a single source cannot (regexes compile, filter
 * specs parse, one agent endpoint). Call once, after the last merge. */
int hm_config_finalize(struct hm_trace_config *c, struct hm_err *err);
/* Set one env override from "KEY=VALUE" (replacing an earlier one for KEY). */
int hm_config_env_override(struct hm_trace_config *c, const char *key_value, struct hm_err *err);

/* Names as they appear in the file; parse returns < 0 on an unknown name. */
const char *hm_fs_mode_name(enum hm_fs_mode m);
int hm_fs_mode_parse(const char *s, enum hm_fs_mode *out);
const char *hm_cfg_backend_name(enum hm_cfg_backend b);
int hm_cfg_backend_parse(const char *s, enum hm_cfg_backend *out);

/* ---------------------------------------------------------------- files */

enum hm_fs_access {
	HM_FS_ACCESS_READ,  /* open for reading, readlink, getdents, chdir */
	HM_FS_ACCESS_WRITE, /* open with O_WRONLY/O_RDWR/O_CREAT/O_TRUNC, creat, mkdir, unlink... */
	HM_FS_ACCESS_STAT,  /* stat family, access, statfs: decided as a read */
};

enum hm_fs_verdict {
	HM_FS_LOCAL,	    /* let the kernel do it on this machine */
	HM_FS_REMOTE,	    /* read it from the pod (only for READ and STAT) */
	HM_FS_REMOTE_WRITE, /* write it in the pod (only for WRITE) */
	HM_FS_NOT_FOUND,    /* fail with ENOENT */
};

struct hm_fs_policy_opts {
	enum hm_fs_mode mode;						  /* UNSET: read */
	const struct hm_strv *read_only, *read_write, *local, *not_found; /* may be NULL */
	/* Local by default (NULL or "/" skips one): */
	const char *program; /* the program's absolute path */
	const char *cwd;     /* trace-run's working directory, with everything under it */
	const char *home;    /* $HOME, with everything under it */
	const char *tmpdir;  /* $TMPDIR; /tmp is always local */
	/* feature.network.dns: when false, /etc/resolv.conf and /etc/hosts stay local. */
	bool dns_remote;
};
/* The options a finalized config gives; the caller fills program, cwd, home, tmpdir. */
void hm_fs_policy_opts_from_config(const struct hm_trace_config *c, struct hm_fs_policy_opts *o);

struct hm_fs_policy;
/* Compiles every regex; an invalid one is an error naming its list and index. */
int hm_fs_policy_new(const struct hm_fs_policy_opts *o, struct hm_fs_policy **out,
		     struct hm_err *err);
void hm_fs_policy_free(struct hm_fs_policy *p);
/* Decide for an absolute path (normalized here, lexically). A relative path, which the
 * caller should have resolved against its dirfd first, stays LOCAL. When why is not
 * NULL it receives the rule that decided, e.g. "feature.fs.read_only[1]",
 * "default: system files" (a static or policy-owned string). */
enum hm_fs_verdict hm_fs_policy_decide(const struct hm_fs_policy *p, const char *path,
				       enum hm_fs_access access, const char **why);
const char *hm_fs_verdict_name(enum hm_fs_verdict v);

/* Lexical normalization: path (relative paths are taken from base, itself absolute)
 * becomes an absolute path without ".", "..", empty components or a trailing slash;
 * ".." at the root stays at the root. Symlinks are not followed, so "/a/link/.." is
 * "/a" even when the kernel would go elsewhere. Returns the length, or -ENAMETOOLONG
 * when out is too small, -EINVAL for an empty path or a relative base. */
int hm_fs_path_normalize(const char *base, const char *path, char *out, size_t size);

/* ---------------------------------------------------------------- outgoing traffic */

enum hm_net_proto { HM_NET_TCP = 1, HM_NET_UDP = 2 };
enum hm_net_verdict { HM_NET_LOCAL, HM_NET_REMOTE };

#define HM_DNS_NAME_MAX 254 /* 253 characters and the NUL */

enum hm_net_spec_kind {
	HM_NET_SPEC_ANY,  /* no address (":53", "udp://"), or 0.0.0.0 / [::] */
	HM_NET_SPEC_CIDR, /* an address or a subnet */
	HM_NET_SPEC_NAME, /* a host name, matched against recorded DNS answers */
};

/* One "[protocol://][name|address|subnet][:port]" filter entry. */
struct hm_net_spec {
	unsigned protocols; /* HM_NET_TCP | HM_NET_UDP bits; "any://" or none: both */
	enum hm_net_spec_kind kind;
	bool v4;		    /* CIDR: an IPv4 subnet (matches IPv4 and v4-mapped IPv6) */
	uint8_t addr[16];	    /* CIDR: the network, IPv4 as ::ffff:a.b.c.d */
	unsigned prefix;	    /* CIDR: over the 128 bits (IPv4 /n is 96 + n) */
	char name[HM_DNS_NAME_MAX]; /* NAME: lower case, no trailing dot */
	uint16_t port;		    /* 0: any port */
};
int hm_net_spec_parse(const char *s, struct hm_net_spec *out, struct hm_err *err);

/* Names the program resolved, by address: the tracer records each DNS answer the
 * program receives so that name specs can match later connects. Thread-safe. When
 * full, the entry added (or re-added) longest ago goes. */
struct hm_dns_table;
int hm_dns_table_new(size_t capacity, struct hm_dns_table **out, struct hm_err *err);
void hm_dns_table_free(struct hm_dns_table *t);
/* family AF_INET (addr: 4 bytes) or AF_INET6 (16 bytes). Returns < 0 on a bad name or
 * family. Re-adding a pair refreshes it. */
int hm_dns_table_add(struct hm_dns_table *t, const char *name, int family, const void *addr);
/* Record every A/AAAA answer of a DNS response message (UDP payload, or TCP without its
 * length prefix) under the question name and the owner name of each record (so CNAME
 * chains are covered). Returns the number of addresses recorded, < 0 when the message
 * is malformed (nothing is recorded then). */
int hm_dns_table_add_response(struct hm_dns_table *t, const void *msg, size_t len);
/* The most recent name recorded for an address: its length, or -ENOENT. */
int hm_dns_table_lookup(struct hm_dns_table *t, int family, const void *addr, char *name,
			size_t size);
size_t hm_dns_table_count(struct hm_dns_table *t);

struct hm_net_policy_opts {
	bool tcp, udp; /* feature.network.outgoing.tcp / udp */
	bool dns;      /* feature.network.dns: port 53 goes remote */
	enum hm_net_filter_kind filter_kind;
	const struct hm_strv *filter; /* may be NULL when filter_kind is NONE */
	struct hm_dns_table *names;   /* borrowed, may be NULL: name specs never match */
};
void hm_net_policy_opts_from_config(const struct hm_trace_config *c, struct hm_net_policy_opts *o);

struct hm_net_policy;
int hm_net_policy_new(const struct hm_net_policy_opts *o, struct hm_net_policy **out,
		      struct hm_err *err);
void hm_net_policy_free(struct hm_net_policy *p);
/* Decide for a connect/sendto destination. Families other than AF_INET/AF_INET6 stay
 * LOCAL. why: as for hm_fs_policy_decide. */
enum hm_net_verdict hm_net_policy_decide(const struct hm_net_policy *p, enum hm_net_proto proto,
					 const struct sockaddr *sa, socklen_t len,
					 const char **why);
const char *hm_net_verdict_name(enum hm_net_verdict v);

/* ---------------------------------------------------------------- environment */

struct hm_env_opts {
	bool import_remote;				    /* feature.env enabled */
	const struct hm_strv *include, *exclude, *override; /* may be NULL */
};
void hm_env_opts_from_config(const struct hm_trace_config *c, struct hm_env_opts *o);

/* The program's environment: the local one, where every remote variable that passes
 * include (default "*") and not exclude replaces or joins the local one, then the
 * overrides. PATH, HOME and the other variables of hm_env_local_by_default stay local
 * unless include names them exactly (a glob does not count). remote and local are
 * NULL-terminated "KEY=VALUE" arrays (remote may be NULL); entries without '=' are
 * skipped. *out is a NULL-terminated array, freed with hm_env_free. */
int hm_env_build(const struct hm_env_opts *o, char *const remote[], char *const local[],
		 char ***out, struct hm_err *err);
void hm_env_free(char **env);
/* PATH, HOME...: this machine's installation; and everything hm_env_never_imported says */
bool hm_env_local_by_default(const char *name);
/* Variables that make a local program load or run code (LD_*, BASH_ENV, ENV,
 * PYTHONSTARTUP, NODE_OPTIONS...): never taken from the pod unless include names them
 * exactly (not by a glob) or an override sets them. */
bool hm_env_never_imported(const char *name);

#endif
