/* Which outgoing connections and datagrams leave from the pod: mirrord's
 * outgoing.filter, decided per destination address. A name in a filter matches the
 * addresses the program got for that name in DNS answers, which the tracer records in
 * a policy_dns_table as they pass (the program resolves through the pod, so its answers
 * are the pod's). docs/config.md describes the spec syntax and the order of checks. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>

#include "tracer/policy/policy.h"

#define DNS_PORT 53

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool is_v4_mapped(const uint8_t a[16])
{
	return memcmp(a, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

static void v4_to_mapped(const void *v4, uint8_t out[16])
{
	memcpy(out, v4_mapped_prefix, sizeof(v4_mapped_prefix));
	memcpy(out + 12, v4, 4);
}

/* Keep the first prefix bits of a 128-bit address, zero the rest. */
static void mask_bits(uint8_t a[16], unsigned prefix)
{
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = prefix >= (i + 1) * 8 ? 8 : prefix > i * 8 ? prefix - i * 8 : 0;
		a[i] &= (uint8_t)(keep ? 0xff << (8 - keep) : 0);
	}
}

static bool prefix_equal(const uint8_t a[16], const uint8_t net[16], unsigned prefix)
{
	uint8_t masked[16];
	memcpy(masked, a, 16);
	mask_bits(masked, prefix);
	return memcmp(masked, net, 16) == 0;
}

/* ---------------------------------------------------------------- names */

/* A host name as the table and specs keep it: lower case, no trailing dot, RFC 1035
 * lengths, letters, digits, '-', '_' (service records) and '*'. */
static int name_canonical(const char *in, size_t len, char *out, size_t size)
{
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len >= POLICY_DNS_NAME_MAX || len >= size)
		return -1;
	size_t label = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		if (ch == '.') {
			if (label == 0 || in[i - 1] == '-')
				return -1;
			label = 0;
		} else if (ch == '-' && label == 0) {
			return -1; /* a label neither starts nor ends with '-' */
		} else if (isalnum(ch) || ch == '-' || ch == '_' || ch == '*') {
			if (++label > 63)
				return -1;
		} else {
			return -1;
		}
		out[i] = (char)tolower(ch);
	}
	if (label == 0 || in[len - 1] == '-')
		return -1;
	out[len] = '\0';
	return (int)len;
}

/* A spec name F matches a resolved name N when they are equal, when N is F completed by
 * a search domain ("db" -> "db.default.svc.cluster.local"), or when N is under the
 * domain F ("svc.cluster.local"). Whole labels only: "db" does not match "mydb". */
static bool name_matches(const char *resolved, const char *spec)
{
	size_t n = strlen(resolved), f = strlen(spec);
	if (n == f)
		return memcmp(resolved, spec, n) == 0;
	if (n < f)
		return false;
	if (memcmp(resolved, spec, f) == 0 && resolved[f] == '.')
		return true;
	return memcmp(resolved + n - f, spec, f) == 0 && resolved[n - f - 1] == '.';
}

/* ---------------------------------------------------------------- specs */

static int parse_u(const char *s, size_t len, unsigned max, unsigned *out)
{
	if (len == 0 || len > 5)
		return -1;
	unsigned v = 0;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static bool looks_numeric(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!isdigit((unsigned char)s[i]) && s[i] != '.')
			return false;
	return true;
}

int policy_net_spec_parse(const char *s, struct policy_net_spec *out, struct hm_err *err)
{
	memset(out, 0, sizeof(*out));
	out->protocols = POLICY_NET_TCP | POLICY_NET_UDP;
	if (!*s)
		return hm_err_set(err, 0, "empty filter");

	const char *p = s;
	const char *scheme_end = strstr(p, "://");
	if (scheme_end) {
		size_t n = (size_t)(scheme_end - p);
		if (n == 3 && strncasecmp(p, "tcp", 3) == 0)
			out->protocols = POLICY_NET_TCP;
		else if (n == 3 && strncasecmp(p, "udp", 3) == 0)
			out->protocols = POLICY_NET_UDP;
		else if (!(n == 3 && strncasecmp(p, "any", 3) == 0))
			return hm_err_set(err, 0,
					  "\"%s\": unknown protocol \"%.*s\" (expected tcp, udp "
					  "or any)",
					  s, (int)n, p);
		p = scheme_end + 3;
	}

	/* the address: "[v6]", a bare v6 (two colons or more: no port then), or a name or
	 * v4 up to the subnet or port */
	const char *addr = p;
	size_t addr_len;
	bool bracketed = false;
	if (*p == '[') {
		const char *close = strchr(p, ']');
		if (!close)
			return hm_err_set(err, 0, "\"%s\": missing ']'", s);
		addr = p + 1;
		addr_len = (size_t)(close - addr);
		p = close + 1;
		bracketed = true;
	} else {
		size_t colons = 0;
		for (const char *q = p; *q && *q != '/'; q++)
			colons += *q == ':';
		addr_len = colons >= 2 ? strcspn(p, "/") : strcspn(p, "/:");
		p += addr_len;
		bracketed = colons >= 2;
	}
	bool has_prefix = false;
	unsigned prefix = 0;
	if (*p == '/') {
		size_t n = strcspn(p + 1, ":");
		if (parse_u(p + 1, n, 128, &prefix) < 0)
			return hm_err_set(err, 0, "\"%s\": bad subnet prefix length", s);
		has_prefix = true;
		p += 1 + n;
	}
	if (*p == ':') {
		unsigned port;
		if (parse_u(p + 1, strlen(p + 1), 65535, &port) < 0)
			return hm_err_set(err, 0, "\"%s\": bad port", s);
		out->port = (uint16_t)port;
		p += strlen(p);
	}
	if (*p)
		return hm_err_set(err, 0, "\"%s\": unexpected \"%s\"", s, p);

	if (addr_len == 0) {
		if (has_prefix || bracketed)
			return hm_err_set(err, 0, "\"%s\": a subnet needs an address", s);
		out->kind = POLICY_NET_SPEC_ANY;
		return 0;
	}
	char text[INET6_ADDRSTRLEN + 8];
	if (addr_len < sizeof(text)) {
		memcpy(text, addr, addr_len);
		text[addr_len] = '\0';
		uint8_t raw[16];
		if (!bracketed && inet_pton(AF_INET, text, raw) == 1) {
			if (has_prefix && prefix > 32)
				return hm_err_set(err, 0, "\"%s\": an IPv4 prefix is at most /32",
						  s);
			v4_to_mapped(raw, out->addr);
			out->v4 = true;
			out->prefix = 96 + (has_prefix ? prefix : 32);
		} else if (bracketed && inet_pton(AF_INET6, text, raw) == 1) {
			memcpy(out->addr, raw, 16);
			out->prefix = has_prefix ? prefix : 128;
			/* ::ffff:a.b.c.d/n, n >= 96, is an IPv4 subnet written in IPv6 */
			out->v4 = is_v4_mapped(raw) && out->prefix >= 96;
		} else {
			goto not_ip;
		}
		static const uint8_t zero[16];
		bool unspecified = memcmp(out->addr, zero, 16) == 0 ||
				   (out->v4 && memcmp(out->addr + 12, zero, 4) == 0);
		if (unspecified && !has_prefix) {
			/* as in mirrord, 0.0.0.0 and [::] stand for any address */
			out->kind = POLICY_NET_SPEC_ANY;
			memset(out->addr, 0, 16);
			out->prefix = 0;
			out->v4 = false;
			return 0;
		}
		mask_bits(out->addr, out->prefix);
		out->kind = POLICY_NET_SPEC_CIDR;
		return 0;
	}
not_ip:
	if (bracketed)
		return hm_err_set(err, 0, "\"%s\": bad IPv6 address", s);
	if (looks_numeric(addr, addr_len))
		return hm_err_set(err, 0, "\"%s\": bad IPv4 address", s);
	if (has_prefix)
		return hm_err_set(err, 0, "\"%s\": a subnet needs an IP address, not a name", s);
	if (name_canonical(addr, addr_len, out->name, sizeof(out->name)) < 0)
		return hm_err_set(err, 0, "\"%s\": bad host name", s);
	out->kind = POLICY_NET_SPEC_NAME;
	return 0;
}

/* ---------------------------------------------------------------- the name table */

struct dns_entry {
	uint64_t seq; /* 0: free */
	uint8_t addr[16];
	char name[POLICY_DNS_NAME_MAX];
};

struct policy_dns_table {
	pthread_mutex_t lock;
	struct dns_entry *v;
	size_t cap;
	uint64_t seq; /* of the last add: entries with the lowest are evicted first */
};

int policy_dns_table_new(size_t capacity, struct policy_dns_table **out, struct hm_err *err)
{
	struct policy_dns_table *t = calloc(1, sizeof(*t));
	if (!t)
		return hm_err_set(err, ENOMEM, "name table");
	pthread_mutex_init(&t->lock, NULL);
	t->cap = capacity ? capacity : 1024;
	t->v = calloc(t->cap, sizeof(*t->v));
	if (!t->v) {
		policy_dns_table_free(t);
		return hm_err_set(err, ENOMEM, "name table");
	}
	*out = t;
	return 0;
}

void policy_dns_table_free(struct policy_dns_table *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->v);
	free(t);
}

static int addr_from_family(int family, const void *addr, uint8_t out[16])
{
	if (family == AF_INET)
		v4_to_mapped(addr, out);
	else if (family == AF_INET6)
		memcpy(out, addr, 16);
	else
		return -EAFNOSUPPORT;
	return 0;
}

static void table_put(struct policy_dns_table *t, const char *name, const uint8_t addr[16])
{
	pthread_mutex_lock(&t->lock);
	struct dns_entry *slot = NULL, *oldest = &t->v[0];
	for (size_t i = 0; i < t->cap; i++) {
		struct dns_entry *e = &t->v[i];
		if (e->seq && memcmp(e->addr, addr, 16) == 0 && strcmp(e->name, name) == 0) {
			slot = e;
			break;
		}
		if (e->seq < oldest->seq)
			oldest = e; /* a free slot (seq 0) is the oldest of all */
	}
	if (!slot) {
		slot = oldest;
		memcpy(slot->addr, addr, 16);
		snprintf(slot->name, sizeof(slot->name), "%s", name);
	}
	slot->seq = ++t->seq;
	pthread_mutex_unlock(&t->lock);
}

int policy_dns_table_add(struct policy_dns_table *t, const char *name, int family, const void *addr)
{
	uint8_t a[16];
	char canon[POLICY_DNS_NAME_MAX];
	if (addr_from_family(family, addr, a) < 0)
		return -EAFNOSUPPORT;
	if (name_canonical(name, strlen(name), canon, sizeof(canon)) < 0)
		return -EINVAL;
	table_put(t, canon, a);
	return 0;
}

int policy_dns_table_lookup(struct policy_dns_table *t, int family, const void *addr, char *name,
			    size_t size)
{
	uint8_t a[16];
	if (addr_from_family(family, addr, a) < 0)
		return -EAFNOSUPPORT;
	int rc = -ENOENT;
	uint64_t best = 0;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->cap; i++) {
		const struct dns_entry *e = &t->v[i];
		if (e->seq > best && memcmp(e->addr, a, 16) == 0) {
			best = e->seq;
			rc = snprintf(name, size, "%s", e->name);
		}
	}
	pthread_mutex_unlock(&t->lock);
	return rc;
}

size_t policy_dns_table_count(struct policy_dns_table *t)
{
	size_t n = 0;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->cap; i++)
		n += t->v[i].seq != 0;
	pthread_mutex_unlock(&t->lock);
	return n;
}

static bool table_has_match(struct policy_dns_table *t, const uint8_t addr[16], const char *spec)
{
	bool found = false;
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->cap && !found; i++) {
		const struct dns_entry *e = &t->v[i];
		found = e->seq && memcmp(e->addr, addr, 16) == 0 && name_matches(e->name, spec);
	}
	pthread_mutex_unlock(&t->lock);
	return found;
}

/* ---------------------------------------------------------------- DNS responses */

#define DNS_HEADER_LEN 12
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* Read the (possibly compressed) name at *off into out as dotted text; *off moves past
 * it. Pointers must go backwards, which also rules out loops. */
static int dns_read_name(const uint8_t *msg, size_t len, size_t *off, char *out, size_t size)
{
	size_t pos = *off, outlen = 0;
	bool jumped = false;
	size_t limit = pos; /* a pointer must point before the name that uses it */
	for (;;) {
		if (pos >= len)
			return -1;
		uint8_t b = msg[pos];
		if ((b & 0xc0) == 0xc0) {
			if (pos + 1 >= len)
				return -1;
			size_t target = (size_t)((b & 0x3f) << 8 | msg[pos + 1]);
			if (target >= limit)
				return -1;
			if (!jumped)
				*off = pos + 2;
			jumped = true;
			limit = target;
			pos = target;
			continue;
		}
		if (b & 0xc0)
			return -1; /* 0x40/0x80: extended label types, obsolete */
		pos++;
		if (b == 0)
			break;
		if (pos + b > len)
			return -1;
		if (outlen + (outlen ? 1 : 0) + b + 1 > size)
			return -1;
		if (outlen)
			out[outlen++] = '.';
		memcpy(out + outlen, msg + pos, b);
		outlen += b;
		pos += b;
	}
	if (!jumped)
		*off = pos;
	out[outlen] = '\0';
	return (int)outlen;
}

int policy_dns_decode(const void *data, size_t len, struct policy_dns_response *out)
{
	const uint8_t *msg = data;
	if (len < DNS_HEADER_LEN || !(msg[2] & 0x80))
		return -EINVAL; /* too short, or a query rather than a response */
	out->id = get16(msg);
	out->rcode = msg[3] & 0x0f;
	out->qname[0] = '\0';
	out->n = 0;
	unsigned qdcount = get16(msg + 4), ancount = get16(msg + 6);
	size_t off = DNS_HEADER_LEN;
	for (unsigned i = 0; i < qdcount; i++) {
		char name[256];
		if (dns_read_name(msg, len, &off, name, sizeof(name)) < 0 || off + 4 > len)
			return -EINVAL;
		if (i == 0)
			memcpy(out->qname, name, sizeof(out->qname));
		off += 4;
	}
	for (unsigned i = 0; i < ancount; i++) {
		char owner[256];
		if (dns_read_name(msg, len, &off, owner, sizeof(owner)) < 0 || off + 10 > len)
			return -EINVAL;
		uint16_t type = get16(msg + off), class = get16(msg + off + 2);
		uint16_t rdlen = get16(msg + off + 8);
		off += 10;
		if (off + rdlen > len)
			return -EINVAL;
		if (class == DNS_CLASS_IN && out->n < POLICY_DNS_MAX_RECORDS &&
		    ((type == DNS_TYPE_A && rdlen == 4) ||
		     (type == DNS_TYPE_AAAA && rdlen == 16))) {
			struct policy_dns_record *r = &out->rec[out->n++];
			r->family = type == DNS_TYPE_A ? AF_INET : AF_INET6;
			memcpy(r->addr, msg + off, rdlen);
			memcpy(r->owner, owner, sizeof(owner));
		}
		off += rdlen;
	}
	return 0;
}

int policy_dns_table_add_response(struct policy_dns_table *t, const void *data, size_t len)
{
	struct policy_dns_response res;
	if (policy_dns_decode(data, len, &res) < 0)
		return -EINVAL;
	int recorded = 0;
	for (size_t i = 0; i < res.n; i++) {
		uint8_t addr[16];
		addr_from_family(res.rec[i].family, res.rec[i].addr, addr);
		char canon[POLICY_DNS_NAME_MAX];
		bool any = false;
		if (name_canonical(res.qname, strlen(res.qname), canon, sizeof(canon)) >= 0) {
			table_put(t, canon, addr);
			any = true;
		}
		if (name_canonical(res.rec[i].owner, strlen(res.rec[i].owner), canon,
				   sizeof(canon)) >= 0) {
			table_put(t, canon, addr);
			any = true;
		}
		recorded += any;
	}
	return recorded;
}

/* ---------------------------------------------------------------- the policy */

struct net_rule {
	struct policy_net_spec spec;
	char why[64];
};

struct policy_net {
	bool tcp, udp, dns;
	enum policy_net_filter_kind kind;
	struct net_rule *rules;
	size_t n;
	struct policy_dns_table *names;
};

void policy_net_opts_from_config(const struct policy_config *c, struct policy_net_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->tcp = c->feature.network.outgoing.tcp != POLICY_TRI_FALSE;
	o->udp = c->feature.network.outgoing.udp != POLICY_TRI_FALSE;
	o->dns = c->feature.network.dns != POLICY_TRI_FALSE;
	o->filter_kind = c->feature.network.outgoing.filter_kind;
	o->filter = &c->feature.network.outgoing.filter;
}

int policy_net_new(const struct policy_net_opts *o, struct policy_net **out, struct hm_err *err)
{
	struct policy_net *p = calloc(1, sizeof(*p));
	if (!p)
		return hm_err_set(err, ENOMEM, "outgoing filter");
	p->tcp = o->tcp;
	p->udp = o->udp;
	p->dns = o->dns;
	p->kind =
	    o->filter_kind == POLICY_NET_FILTER_UNSET ? POLICY_NET_FILTER_NONE : o->filter_kind;
	p->names = o->names;
	const char *key = p->kind == POLICY_NET_FILTER_LOCAL
			      ? "feature.network.outgoing.filter.local"
			      : "feature.network.outgoing.filter.remote";
	size_t n = p->kind != POLICY_NET_FILTER_NONE && o->filter ? o->filter->len : 0;
	if (n) {
		p->rules = calloc(n, sizeof(*p->rules));
		if (!p->rules) {
			policy_net_free(p);
			return hm_err_set(err, ENOMEM, "outgoing filter");
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (policy_net_spec_parse(o->filter->items[i], &p->rules[i].spec, err) < 0) {
			policy_net_free(p);
			return hm_err_prefix(err, "%s[%zu]", key, i);
		}
		snprintf(p->rules[i].why, sizeof(p->rules[i].why), "%s[%zu]", key, i);
		p->n++;
	}
	*out = p;
	return 0;
}

void policy_net_free(struct policy_net *p)
{
	if (!p)
		return;
	free(p->rules);
	free(p);
}

static bool spec_matches(const struct policy_net *p, const struct policy_net_spec *s,
			 enum policy_net_proto proto, const uint8_t addr[16], bool v4,
			 uint16_t port)
{
	if (!(s->protocols & proto))
		return false;
	if (s->port && s->port != port)
		return false;
	switch (s->kind) {
	case POLICY_NET_SPEC_ANY:
		return true;
	case POLICY_NET_SPEC_CIDR:
		return s->v4 == v4 && prefix_equal(addr, s->addr, s->prefix);
	case POLICY_NET_SPEC_NAME:
		return p->names && table_has_match(p->names, addr, s->name);
	}
	return false;
}

static const struct net_rule *first_rule(const struct policy_net *p, enum policy_net_proto proto,
					 const uint8_t addr[16], bool v4, uint16_t port,
					 bool only_port_53)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct net_rule *r = &p->rules[i];
		if (only_port_53 && r->spec.port != DNS_PORT)
			continue;
		if (spec_matches(p, &r->spec, proto, addr, v4, port))
			return r;
	}
	return NULL;
}

enum policy_net_verdict policy_net_decide(const struct policy_net *p, enum policy_net_proto proto,
					  const struct sockaddr *sa, socklen_t len,
					  const char **why)
{
	const char *unused;
	if (!why)
		why = &unused;
	uint8_t addr[16];
	uint16_t port;
	if (sa && sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		v4_to_mapped(&in->sin_addr, addr);
		port = ntohs(in->sin_port);
	} else if (sa && sa->sa_family == AF_INET6 &&
		   len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		memcpy(addr, &in6->sin6_addr, 16);
		port = ntohs(in6->sin6_port);
	} else {
		*why = "not an IP destination";
		return POLICY_NET_LOCAL;
	}
	bool v4 = is_v4_mapped(addr);
	static const uint8_t zero[16];
	static const uint8_t v6_loopback[16] = {[15] = 1};
	if ((v4 && addr[12] == 127) || memcmp(addr, v6_loopback, 16) == 0) {
		*why = "loopback";
		return POLICY_NET_LOCAL;
	}
	/* connecting to 0.0.0.0 or :: reaches this host */
	if (memcmp(addr, zero, 16) == 0 || (v4 && memcmp(addr + 12, zero, 4) == 0)) {
		*why = "unspecified address";
		return POLICY_NET_LOCAL;
	}

	/* DNS follows feature.network.dns rather than the tcp/udp switches and the filter:
	 * name specs only work when the answers come from the pod. A local-filter entry
	 * that names port 53 explicitly still keeps matching traffic local. */
	if (port == DNS_PORT) {
		if (!p->dns) {
			*why = "feature.network.dns false";
			return POLICY_NET_LOCAL;
		}
		const struct net_rule *r;
		if (p->kind == POLICY_NET_FILTER_LOCAL &&
		    (r = first_rule(p, proto, addr, v4, port, true))) {
			*why = r->why;
			return POLICY_NET_LOCAL;
		}
		*why = "feature.network.dns";
		return POLICY_NET_REMOTE;
	}
	if (proto == POLICY_NET_TCP && !p->tcp) {
		*why = "feature.network.outgoing.tcp false";
		return POLICY_NET_LOCAL;
	}
	if (proto == POLICY_NET_UDP && !p->udp) {
		*why = "feature.network.outgoing.udp false";
		return POLICY_NET_LOCAL;
	}
	const struct net_rule *r;
	switch (p->kind) {
	case POLICY_NET_FILTER_REMOTE:
		if ((r = first_rule(p, proto, addr, v4, port, false))) {
			*why = r->why;
			return POLICY_NET_REMOTE;
		}
		*why = "not in feature.network.outgoing.filter.remote";
		return POLICY_NET_LOCAL;
	case POLICY_NET_FILTER_LOCAL:
		if ((r = first_rule(p, proto, addr, v4, port, false))) {
			*why = r->why;
			return POLICY_NET_LOCAL;
		}
		*why = "not in feature.network.outgoing.filter.local";
		return POLICY_NET_REMOTE;
	default:
		*why = "no outgoing filter";
		return POLICY_NET_REMOTE;
	}
}
