/* tracer policy: the pure decisions trace-run's syscall handlers consult, and the
 * configuration they come from. Nothing here touches the traced program; every
 * function is a plain computation on strings and addresses, so it is unit-tested on
 * its own (tests/unit/test_tracer_policy.c).
 *
 *  - config (config.c): the `-f trace.json` file (json-c) and the struct the CLI flags
 *    fill too; policy_config_merge lets flags override the file. docs/config.md.
 *  - files (fs.c): path -> LOCAL / REMOTE / REMOTE_WRITE / NOT_FOUND, mirrord's
 *    feature.fs modes and regex lists (PCRE2) on top of documented defaults.
 *  - outgoing traffic (net.c): destination -> LOCAL / REMOTE, mirrord's
 *    outgoing.filter specs, with a name table fed from the DNS answers the program got.
 *  - environment (env.c): the program's env from the pod's and the local one.
 *
 * Decision functions are thread-safe once their policy object is built. */
#ifndef HERMIT_TRACER_POLICY_H
#define HERMIT_TRACER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tracer/engine/tracer.h"
#include "util/util.h"

/* ---------------------------------------------------------------- string lists */

struct policy_strv {
	char **items;
	size_t len;
	bool set; /* given by the file or a flag (an explicitly empty list is set) */
};
int policy_strv_push(struct policy_strv *v, const char *s, struct hm_err *err);
/* Push each non-empty piece of s split at sep (mirrord's "A;B" list syntax). */
int policy_strv_push_split(struct policy_strv *v, const char *s, char sep, struct hm_err *err);
void policy_strv_clear(struct policy_strv *v); /* frees the items, leaves an unset empty list */

/* ---------------------------------------------------------------- config */

enum policy_tristate { POLICY_TRI_UNSET = 0, POLICY_TRI_FALSE, POLICY_TRI_TRUE };

enum policy_fs_mode {
	POLICY_FS_MODE_UNSET = 0,
	POLICY_FS_MODE_READ, /* the default */
	POLICY_FS_MODE_WRITE,
	POLICY_FS_MODE_LOCAL,
	POLICY_FS_MODE_LOCAL_WITH_OVERRIDES,
};

enum policy_net_filter_kind {
	POLICY_NET_FILTER_UNSET = 0,
	POLICY_NET_FILTER_NONE,	  /* the default: every non-loopback destination goes remote */
	POLICY_NET_FILTER_REMOTE, /* only matching destinations go remote */
	POLICY_NET_FILTER_LOCAL,  /* matching destinations stay local, the rest go remote */
};

/* feature.network.incoming */
enum policy_incoming_mode {
	POLICY_INCOMING_UNSET = 0,
	POLICY_INCOMING_MIRROR, /* the default */
	POLICY_INCOMING_STEAL,
	POLICY_INCOMING_OFF,
};
enum policy_concurrent_steal {
	POLICY_CONCURRENT_UNSET = 0,
	POLICY_CONCURRENT_ABORT, /* the default: trace-run ends when the port is taken */
	POLICY_CONCURRENT_CONTINUE,
};
struct policy_ports {
	uint16_t *items;
	size_t len;
	bool set;
};
struct policy_port_map {
	uint16_t (*pairs)[2]; /* [local, remote] */
	size_t len;
	bool set;
};

/* Every field starts unset (NULL, *_UNSET, list.set == false) so that a merge can tell
 * "not given" from "given as the default"; policy_config_finalize fills the defaults. */
struct policy_config {
	char *target; /* "pod/web", "pid/N", "container/ID" */
	struct {
		char *unix_path; /* JSON "unix"; exclusive with address */
		char *address;	 /* "host:port" */
		char *token_file;
	} agent;
	enum tracer_backend backend; /* tracer/engine: AUTO by default */
	bool backend_set;	     /* given by the file or a flag */
	struct {
		struct {
			enum policy_tristate enabled; /* "env": false turns the import off */
			struct policy_strv include;   /* fnmatch globs; empty: "*" */
			struct policy_strv exclude;
			struct policy_strv override; /* "KEY=VALUE", one per key */
		} env;
		struct {
			enum policy_fs_mode mode;
			struct policy_strv read_only, read_write, local, not_found; /* PCRE2 */
			uint64_t max_file_size; /* bytes; 0: unset (POLICY_FS_MAX_FILE_DEFAULT) */
			/* how long a remote file read stays the answer to its opens (0: never
			 * reused); unset until finalize: POLICY_FS_CACHE_TTL_MS_DEFAULT */
			uint32_t cache_ttl_ms;
			bool cache_ttl_set;
		} fs;
		struct {
			struct {
				enum policy_tristate tcp, udp;
				enum policy_net_filter_kind filter_kind;
				struct policy_strv filter; /* specs of filter_kind's list */
			} outgoing;
			enum policy_tristate dns;
			struct {
				enum policy_incoming_mode mode;
				struct policy_port_map port_mapping;
				struct policy_ports ports, ignore_ports; /* the program's ports */
				/* mirrord's http_filter object without "ports", as JSON text
				 * for the agent; NULL: none */
				char *http_filter;
				struct policy_ports
				    http_filter_ports; /* the target's; unset: all */
				enum policy_concurrent_steal on_concurrent_steal;
				enum policy_tristate flush_connections;
				/* steal over a unix agent: the program accepts the pod's
				 * socket itself (PROTO_FEAT_TCP_FD); false: relayed */
				enum policy_tristate fd_handoff;
			} incoming;
		} network;
	} feature;
};

/* feature.fs.cache_ttl_ms when unset, and its ceiling */
#define POLICY_FS_CACHE_TTL_MS_DEFAULT 5
#define POLICY_FS_CACHE_TTL_MS_MAX 60000
/* feature.fs.max_file_size when unset: the agent's own default cap */
#define POLICY_FS_MAX_FILE_DEFAULT (1ULL << 30)

void policy_config_init(struct policy_config *c);
void policy_config_free(struct policy_config *c); /* leaves c initialized (empty) */
/* `policy_cleanup_config struct policy_config c = {0};` frees c on scope exit (an empty
 * or moved-from config is freed harmlessly) */
#define policy_cleanup_config __attribute__((cleanup(policy_config_free)))
/* Parse a config file into c (which must be freshly initialized). Errors name the file
 * and the key's JSON path: "trace.json: unknown key feature.fs.mdoe",
 * "trace.json: feature.network.dns: expected a boolean, got string". */
int policy_config_load_file(struct policy_config *c, const char *path, struct hm_err *err);
/* The same from a string; origin names it in errors. */
int policy_config_load_string(struct policy_config *c, const char *json, const char *origin,
			      struct hm_err *err);
/* Flags override the file: every field set in `over` replaces base's (lists as a whole,
 * agent.unix/agent.address as one endpoint choice), except env overrides, which merge
 * key by key with over's value winning. */
int policy_config_merge(struct policy_config *base, const struct policy_config *over,
			struct hm_err *err);
/* Fill the defaults and check what a single source cannot (regexes compile, filter
 * specs parse, one agent endpoint). Call once, after the last merge. */
int policy_config_finalize(struct policy_config *c, struct hm_err *err);
/* Set one env override from "KEY=VALUE" (replacing an earlier one for KEY). */
int policy_config_env_override(struct policy_config *c, const char *key_value, struct hm_err *err);

/* Names as they appear in the file; < 0 on an unknown name. */
int policy_fs_mode_parse(const char *s, enum policy_fs_mode *out);
int policy_incoming_mode_parse(const char *s, enum policy_incoming_mode *out); /* mirror... */
const char *policy_incoming_mode_name(enum policy_incoming_mode m);

/* Incoming traffic of a finalized config: whether the program's listening port local is
 * subscribed (mode not off, ports / ignore_ports), and the target's port it stands for
 * (port_mapping, else the same). */
bool policy_incoming_port(const struct policy_config *c, uint16_t local, uint16_t *remote);
/* The http_filter JSON text for the target's port remote (steal only; ports), or NULL. */
const char *policy_incoming_http_filter(const struct policy_config *c, uint16_t remote);

/* ---------------------------------------------------------------- files */

enum policy_fs_access {
	POLICY_FS_ACCESS_READ,	/* open for reading, readlink, getdents, chdir */
	POLICY_FS_ACCESS_WRITE, /* open with O_WRONLY/O_RDWR/O_CREAT/O_TRUNC, creat, mkdir,
				   unlink... */
	POLICY_FS_ACCESS_STAT,	/* stat family, access, statfs: decided as a read */
};

enum policy_fs_verdict {
	POLICY_FS_LOCAL,	/* let the kernel do it on this machine */
	POLICY_FS_REMOTE,	/* read it from the pod (only for READ and STAT) */
	POLICY_FS_REMOTE_WRITE, /* write it in the pod (only for WRITE) */
	POLICY_FS_NOT_FOUND,	/* fail with ENOENT */
};

struct policy_fs_opts {
	enum policy_fs_mode mode;					      /* UNSET: read */
	const struct policy_strv *read_only, *read_write, *local, *not_found; /* may be NULL */
	/* Local by default (NULL or "/" skips one): */
	const char *program; /* the program's absolute path */
	const char *cwd;     /* trace-run's working directory, with everything under it */
	const char *home;    /* $HOME, with everything under it */
	const char *tmpdir;  /* $TMPDIR; /tmp is always local */
	/* feature.network.dns: when false, /etc/resolv.conf and /etc/hosts stay local. */
	bool dns_remote;
};
/* The options a finalized config gives; the caller fills program, cwd, home, tmpdir. */
void policy_fs_opts_from_config(const struct policy_config *c, struct policy_fs_opts *o);

struct policy_fs;
/* Compiles every regex; an invalid one is an error naming its list and index. */
int policy_fs_new(const struct policy_fs_opts *o, struct policy_fs **out, struct hm_err *err);
void policy_fs_free(struct policy_fs *p);
/* Decide for an absolute path (normalized here, lexically). A relative path, which the
 * caller should have resolved against its dirfd first, stays LOCAL. When why is not
 * NULL it receives the rule that decided, e.g. "feature.fs.read_only[1]",
 * "default: system files" (a static or policy-owned string); why NULL is faster (the
 * deciding rule is not looked for when a set's joined regex already answers). */
enum policy_fs_verdict policy_fs_decide(const struct policy_fs *p, const char *path,
					enum policy_fs_access access, const char **why);
const char *policy_fs_verdict_name(enum policy_fs_verdict v);

/* Lexical normalization: path (relative paths are taken from base, itself absolute)
 * becomes an absolute path without ".", "..", empty components or a trailing slash;
 * ".." at the root stays at the root. Symlinks are not followed, so "/a/link/.." is
 * "/a" even when the kernel would go elsewhere. Returns the length, or -ENAMETOOLONG
 * when out is too small, -EINVAL for an empty path or a relative base. */
int policy_fs_path_normalize(const char *base, const char *path, char *out, size_t size);

/* ---------------------------------------------------------------- outgoing traffic */

enum policy_net_proto { POLICY_NET_TCP = 1, POLICY_NET_UDP = 2 };
enum policy_net_verdict { POLICY_NET_LOCAL, POLICY_NET_REMOTE };

#define POLICY_DNS_NAME_MAX 254 /* 253 characters and the NUL */

enum policy_net_spec_kind {
	POLICY_NET_SPEC_ANY,  /* no address (":53", "udp://"), or 0.0.0.0 / [::] */
	POLICY_NET_SPEC_CIDR, /* an address or a subnet */
	POLICY_NET_SPEC_NAME, /* a host name, matched against recorded DNS answers */
};

/* One "[protocol://][name|address|subnet][:port]" filter entry. */
struct policy_net_spec {
	unsigned protocols; /* POLICY_NET_TCP | POLICY_NET_UDP bits; "any://" or none: both */
	enum policy_net_spec_kind kind;
	bool v4;			/* CIDR: an IPv4 subnet (matches IPv4 and v4-mapped IPv6) */
	uint8_t addr[16];		/* CIDR: the network, IPv4 as ::ffff:a.b.c.d */
	unsigned prefix;		/* CIDR: over the 128 bits (IPv4 /n is 96 + n) */
	char name[POLICY_DNS_NAME_MAX]; /* NAME: lower case, no trailing dot */
	uint16_t port;			/* 0: any port */
};
int policy_net_spec_parse(const char *s, struct policy_net_spec *out, struct hm_err *err);

/* The DNS wire decoder (fuzzed: tests/fuzz/fuzz_dns.c): a response message (UDP
 * payload, or TCP without its length prefix) as its id, rcode, first question name and
 * its IN A/AAAA records in order (the first POLICY_DNS_MAX_RECORDS). Returns < 0 when
 * the message is malformed or is a query. */
#define POLICY_DNS_MAX_RECORDS 64
struct policy_dns_record {
	int family; /* AF_INET (addr: 4 bytes) or AF_INET6 (16 bytes) */
	uint8_t addr[16];
	char owner[256]; /* the record's owner name, dotted (a CNAME chain's last name) */
};
struct policy_dns_response {
	uint16_t id;
	int rcode; /* 0 no error, 3 NXDOMAIN... */
	char qname[256];
	size_t n;
	struct policy_dns_record rec[POLICY_DNS_MAX_RECORDS];
};
int policy_dns_decode(const void *msg, size_t len, struct policy_dns_response *out);

/* Names the program resolved, by address: the tracer records each DNS answer the
 * program receives so that name specs can match later connects. Thread-safe. When
 * full, the entry added (or re-added) longest ago goes. */
struct policy_dns_table;
int policy_dns_table_new(size_t capacity, struct policy_dns_table **out, struct hm_err *err);
void policy_dns_table_free(struct policy_dns_table *t);
/* family AF_INET (addr: 4 bytes) or AF_INET6 (16 bytes). Returns < 0 on a bad name or
 * family. Re-adding a pair refreshes it. */
int policy_dns_table_add(struct policy_dns_table *t, const char *name, int family,
			 const void *addr);
/* Record every A/AAAA answer of a DNS response message (UDP payload, or TCP without its
 * length prefix) under the question name and the owner name of each record (so CNAME
 * chains are covered). Returns the number of addresses recorded, < 0 when the message
 * is malformed (nothing is recorded then). */
int policy_dns_table_add_response(struct policy_dns_table *t, const void *msg, size_t len);
/* The most recent name recorded for an address: its length, or -ENOENT. */
int policy_dns_table_lookup(struct policy_dns_table *t, int family, const void *addr, char *name,
			    size_t size);
size_t policy_dns_table_count(struct policy_dns_table *t);

struct policy_net_opts {
	bool tcp, udp; /* feature.network.outgoing.tcp / udp */
	bool dns;      /* feature.network.dns: port 53 goes remote */
	enum policy_net_filter_kind filter_kind;
	const struct policy_strv *filter; /* may be NULL when filter_kind is NONE */
	struct policy_dns_table *names;	  /* borrowed, may be NULL: name specs never match */
};
void policy_net_opts_from_config(const struct policy_config *c, struct policy_net_opts *o);

struct policy_net;
int policy_net_new(const struct policy_net_opts *o, struct policy_net **out, struct hm_err *err);
void policy_net_free(struct policy_net *p);
/* Decide for a connect/sendto destination. Families other than AF_INET/AF_INET6 stay
 * LOCAL. why: as for policy_fs_decide. */
enum policy_net_verdict policy_net_decide(const struct policy_net *p, enum policy_net_proto proto,
					  const struct sockaddr *sa, socklen_t len,
					  const char **why);

/* ---------------------------------------------------------------- environment */

struct policy_env_opts {
	bool import_remote;					/* feature.env enabled */
	const struct policy_strv *include, *exclude, *override; /* may be NULL */
};
void policy_env_opts_from_config(const struct policy_config *c, struct policy_env_opts *o);

/* The program's environment: the local one, where every remote variable that passes
 * include (default "*") and not exclude replaces or joins the local one, then the
 * overrides. PATH, HOME and the other variables of policy_env_local_by_default stay local
 * unless include names them exactly (a glob does not count). remote and local are
 * NULL-terminated "KEY=VALUE" arrays (remote may be NULL); entries without '=' are
 * skipped. *out is a NULL-terminated array, freed with policy_env_free. */
int policy_env_build(const struct policy_env_opts *o, char *const remote[], char *const local[],
		     char ***out, struct hm_err *err);
void policy_env_free(char **env);
/* PATH, HOME...: this machine's installation; and everything policy_env_never_imported says */
bool policy_env_local_by_default(const char *name);
/* Variables that make a local program load or run code (LD_*, BASH_ENV, ENV,
 * PYTHONSTARTUP, NODE_OPTIONS...): never taken from the pod unless include names them
 * exactly (not by a glob) or an override sets them. */
bool policy_env_never_imported(const char *name);

#endif
