/* Interfaces between the files of the kube module. Not for other modules: they use
 * kube/kube.h (the unit and fuzz tests include this one). */
#ifndef HERMIT_KUBE_INTERNAL_H
#define HERMIT_KUBE_INTERNAL_H

#include <json-c/json.h>
#include <pthread.h>

#include "kube/kube.h"

/* ---- yaml.c: a YAML document as a json-c tree (kubeconfig is YAML; JSON is YAML) ----
 * Scalars become strings, except plain true/false (booleans) and null; aliases are
 * refused. An empty document is an empty object. */
int kube_yaml_parse(const char *text, size_t len, const char *what, struct json_object **out,
		    struct hm_err *err);

/* ---- util.c ---- */
/* Standard base64 (padding optional, blanks skipped); *out malloc'ed and NUL-terminated. */
int kube_base64_decode(const char *in, unsigned char **out, size_t *outlen);
/* Standard base64 with padding into out (4 * ceil(len / 3) + 1 bytes). */
void kube_base64_encode(const unsigned char *in, size_t len, char *out);
/* A string member or NULL (also for non-strings). */
const char *kube_json_str(struct json_object *o, const char *key);
/* The member at a dotted path of object keys ("status.podIP"), or NULL. */
struct json_object *kube_json_path(struct json_object *o, const char *path);
/* RFC 3339 ("2026-12-05T01:00:00Z", fractions and offsets allowed) to Unix time. */
int kube_parse_time(const char *s, time_t *out);
/* Copy src into dst of size n, failing (ENAMETOOLONG, naming what) when it does not fit. */
int kube_copy(char *dst, size_t n, const char *src, const char *what, struct hm_err *err);

/* ---- kubeconfig.c ---- */
struct kube_exec {
	char *api_version; /* client.authentication.k8s.io/v1 or /v1beta1 */
	char *command;	   /* resolved against the kubeconfig's folder when it has a '/' */
	char **args;	   /* NULL-terminated */
	char **env;	   /* "NAME=VALUE", NULL-terminated */
};
struct kube_config {
	char *source;  /* "kubeconfig FILE", "in-cluster service account" */
	char *context; /* "" in-cluster */
	char *cluster; /* names, for messages */
	char *user;
	char *namespace; /* the context's; NULL for none */
	char *server;	 /* https://host:port, no trailing '/' */
	char *proxy_url;
	char *tls_server_name;
	bool insecure;
	char *ca_file; /* at most one of file and data */
	unsigned char *ca_data;
	size_t ca_data_len;
	char *cert_file;
	unsigned char *cert_data;
	size_t cert_data_len;
	char *key_file;
	unsigned char *key_data;
	size_t key_data_len;
	char *token;
	char *token_file; /* re-read at each use: kubelets rotate projected tokens */
	struct kube_exec *exec;
};
int kube_config_load(const struct kube_opts *opts, struct kube_config *out, struct hm_err *err);
void kube_config_free(struct kube_config *c);

/* ---- exec_plugin.c: client.authentication.k8s.io ExecCredential ---- */
struct kube_cred {
	char *token;
	unsigned char *cert_data, *key_data; /* PEM, or NULL */
	size_t cert_len, key_len;
	time_t expires; /* 0: does not expire */
};
/* Run the plugin and parse what it printed. */
int kube_exec_run(const struct kube_exec *exec, const char *server, struct kube_cred *out,
		  struct hm_err *err);
void kube_cred_free(struct kube_cred *c);

/* ---- portforward.c ---- */
struct kube_pf_target {
	struct kube_pf_target *next; /* k's list, freed by kube_close */
	struct kube *k;
	char namespace[KUBE_NAME_MAX];
	char pod[KUBE_NAME_MAX];
	uint16_t port;
};

/* Wait up to timeout_ms for every port-forward pump to end (their connections were
 * closed by their users). kube_close calls it. */
void kube_portforward_wait(int timeout_ms);

/* ---- api.c ---- */
struct kube {
	struct kube_pf_target *pf; /* what port-forward endpoints dial (their ctx) */
	struct kube_config cfg;
	char namespace[KUBE_NAME_MAX];
	pthread_mutex_t cred_lock; /* exec-plugin credentials, shared by port-forward threads */
	struct kube_cred cred;
	bool cred_valid;
	unsigned exec_runs; /* how often the plugin ran, for -v */
};
/* The credentials to present now: a bearer token (copied into token, "" for none) and,
 * from an exec plugin, certificate blobs (copied, freed by kube_cred_free). Runs or
 * reuses the exec plugin (until its expirationTimestamp), re-reads tokenFile. */
int kube_current_cred(struct kube *k, struct kube_cred *out, struct hm_err *err);
/* A libcurl easy handle set up for k's server, TLS and client certificate (not the
 * bearer token: callers add that header). */
void *kube_curl_new(struct kube *k, const struct kube_cred *cred, struct hm_err *err);
/* One error line for an HTTP status and the Status object of its body (may be NULL). */
int kube_http_error(struct kube *k, long status, const char *body, const struct kube_what *what,
		    struct hm_err *err);
/* One error line for a libcurl failure. */
int kube_curl_error(struct kube *k, int curl_code, const char *detail, struct hm_err *err);

/* ---- websocket.c: RFC 6455 frames ---- */
enum {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xA,
};
#define WS_MAX_HEADER 14
#define WS_MAX_PAYLOAD (16u << 20) /* a frame larger than this is refused */
/* The header of a client frame (always masked, FIN set) with payload len; returns its
 * size. The payload must then be masked with kube_ws_mask. */
size_t kube_ws_header(uint8_t *out, uint8_t opcode, uint64_t len, const uint8_t mask[4]);
void kube_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset);
struct ws_frame {
	bool fin;
	uint8_t opcode;
	uint8_t *payload; /* inside the parsed buffer, unmasked in place */
	uint64_t len;
};
/* Parse one frame at the start of buf: the bytes it takes (> 0), 0 when more bytes are
 * needed, < 0 on a protocol error (err says which). from_server: frames must be
 * unmasked (RFC 6455 5.1); otherwise masked. */
ssize_t kube_ws_parse(uint8_t *buf, size_t len, bool from_server, struct ws_frame *f,
		      struct hm_err *err);
/* Messages of the port-forward channel protocol (v4.channel.k8s.io) built from frames:
 * fragments are joined, each message's first byte is its channel, and each channel's
 * first two bytes are the port (little endian) and not data. */
struct ws_channels {
	bool in_message;	    /* a fragmented data message is open */
	int channel;		    /* of the open message; -1 before its first byte */
	uint8_t port_bytes_seen[2]; /* per channel (data, error), of the 2-byte port header */
};
struct ws_event {
	enum { WS_EV_DATA, WS_EV_ERROR_TEXT, WS_EV_PING, WS_EV_CLOSE, WS_EV_NONE } kind;
	const uint8_t *data;
	size_t len;
};
/* Feed one parsed frame; fills ev (WS_EV_NONE when nothing to act on). < 0 on a
 * protocol error (a channel other than 0 or 1, a continuation with no message...). */
int kube_ws_channels_feed(struct ws_channels *st, const struct ws_frame *f, struct ws_event *ev,
			  struct hm_err *err);
/* Sec-WebSocket-Accept for key (RFC 6455 4.2.2), 29 bytes with the NUL. */
int kube_ws_accept(const char *key, char out[29], struct hm_err *err);

#endif
