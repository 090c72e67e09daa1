/* dns_responder: a tiny authoritative DNS server over UDP for tests, linked statically
 * so `trace-pod deploy` can drop it into a pod's busybox rootfs.
 *
 *   dns_responder [-p PORT] [-b ADDR] NAME=IP...
 *
 * Answers A (IPv4 IP) and AAAA (IPv6 IP) queries for each NAME, NOERROR with no answer
 * for another type of a known name, NXDOMAIN for any other name. Listens on ADDR
 * (default 0.0.0.0; an IPv6 address such as :: works too) port PORT (default 53).
 * Logs one line per query on stdout: "query NAME TYPE from PEER -> RESULT". Exits on
 * SIGTERM or SIGINT, also as a pod's PID 1. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_RECORDS 64
#define DNS_HDR 12
#define TYPE_A 1
#define TYPE_AAAA 28
#define CLASS_IN 1
#define RCODE_FORMERR 1
#define RCODE_NXDOMAIN 3
#define RCODE_NOTIMP 4

struct record {
	char name[256]; /* lower case, no trailing dot */
	int family;
	uint8_t addr[16];
};

static struct record records[MAX_RECORDS];
static int nrecords;

static void on_signal(int sig)
{
	(void)sig;
	_exit(0);
}

static void lower_name(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static int add_record(const char *spec)
{
	const char *eq = strchr(spec, '=');
	if (!eq || eq == spec || (size_t)(eq - spec) >= sizeof(records[0].name) ||
	    nrecords == MAX_RECORDS)
		return -1;
	struct record *r = &records[nrecords];
	memcpy(r->name, spec, (size_t)(eq - spec));
	r->name[eq - spec] = '\0';
	size_t n = strlen(r->name);
	if (n > 1 && r->name[n - 1] == '.')
		r->name[n - 1] = '\0';
	lower_name(r->name);
	if (inet_pton(AF_INET, eq + 1, r->addr) == 1)
		r->family = AF_INET;
	else if (inet_pton(AF_INET6, eq + 1, r->addr) == 1)
		r->family = AF_INET6;
	else
		return -1;
	nrecords++;
	return 0;
}

/* Decode the question name at q (uncompressed, as every resolver sends it) into out.
 * Returns the offset just past it, or 0 if malformed. */
static size_t read_qname(const uint8_t *msg, size_t len, size_t off, char *out, size_t outlen)
{
	size_t o = 0;
	for (;;) {
		if (off >= len)
			return 0;
		uint8_t l = msg[off++];
		if (l == 0)
			break;
		if (l > 63 || off + l > len || o + l + 2 > outlen)
			return 0;
		if (o)
			out[o++] = '.';
		memcpy(out + o, msg + off, l);
		o += l;
		off += l;
	}
	out[o] = '\0';
	if (o == 0) {
		out[0] = '.';
		out[1] = '\0';
	}
	return off;
}

static const char *type_name(uint16_t t, char *buf, size_t len)
{
	if (t == TYPE_A)
		return "A";
	if (t == TYPE_AAAA)
		return "AAAA";
	snprintf(buf, len, "TYPE%u", t);
	return buf;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Build the answer to query q (qlen bytes) in out; returns its length, 0 to stay silent. */
static size_t answer(const uint8_t *q, size_t qlen, uint8_t *out, size_t outcap, char *log,
		     size_t loglen)
{
	if (qlen < DNS_HDR || (q[2] & 0x80)) /* too short, or a response */
		return 0;
	uint16_t qdcount = (uint16_t)(q[4] << 8 | q[5]);
	uint8_t opcode = (q[2] >> 3) & 0xf;
	char name[256];
	size_t end = qdcount == 1 ? read_qname(q, qlen, DNS_HDR, name, sizeof(name)) : 0;
	int rcode = 0;
	uint16_t qtype = 0;
	if (!end || end + 4 > qlen) {
		rcode = RCODE_FORMERR;
		snprintf(log, loglen, "malformed -> FORMERR");
		end = DNS_HDR;
	} else {
		qtype = (uint16_t)(q[end] << 8 | q[end + 1]);
		end += 4;
		if (opcode != 0)
			rcode = RCODE_NOTIMP;
	}
	/* header: same id, QR|AA, RD copied, RA */
	if (outcap < end + 16 + 16)
		return 0;
	memcpy(out, q, end);
	out[2] = (uint8_t)(0x80 | (opcode << 3) | 0x04 | (q[2] & 0x01));
	out[3] = 0x80;
	put16(out + 4, rcode == RCODE_FORMERR ? 0 : 1);
	put16(out + 6, 0);
	put16(out + 8, 0);
	put16(out + 10, 0);
	size_t o = end;
	if (rcode) {
		out[3] |= (uint8_t)rcode;
		if (rcode == RCODE_NOTIMP)
			snprintf(log, loglen, "opcode %u -> NOTIMP", opcode);
		return rcode == RCODE_FORMERR ? DNS_HDR : o;
	}
	char tbuf[16];
	char lname[256];
	snprintf(lname, sizeof(lname), "%s", name);
	lower_name(lname);
	bool known = false;
	uint16_t answers = 0;
	char result[128] = "";
	for (int i = 0; i < nrecords; i++) {
		if (strcmp(records[i].name, lname))
			continue;
		known = true;
		int want = qtype == TYPE_A ? AF_INET : qtype == TYPE_AAAA ? AF_INET6 : 0;
		if (records[i].family != want)
			continue;
		size_t alen = want == AF_INET ? 4 : 16;
		if (o + 12 + alen > outcap)
			break;
		put16(out + o, 0xc00c); /* the name: a pointer to the question's */
		put16(out + o + 2, qtype);
		put16(out + o + 4, CLASS_IN);
		out[o + 6] = out[o + 7] = 0;
		put16(out + o + 8, 60); /* TTL */
		put16(out + o + 10, (uint16_t)alen);
		memcpy(out + o + 12, records[i].addr, alen);
		o += 12 + alen;
		answers++;
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(want, records[i].addr, ip, sizeof(ip));
		size_t rl = strlen(result);
		snprintf(result + rl, sizeof(result) - rl, "%s%s", rl ? "," : "", ip);
	}
	put16(out + 6, answers);
	if (!known) {
		out[3] |= RCODE_NXDOMAIN;
		snprintf(result, sizeof(result), "NXDOMAIN");
	} else if (!answers) {
		snprintf(result, sizeof(result), "NODATA");
	}
	snprintf(log, loglen, "%s %s -> %s", name, type_name(qtype, tbuf, sizeof(tbuf)), result);
	return o;
}

static void usage(void)
{
	fprintf(stderr, "usage: dns_responder [-p PORT] [-b ADDR] NAME=IP...\n");
}

int main(int argc, char **argv)
{
	const char *bind_addr = "0.0.0.0";
	int port = 53, opt;
	while ((opt = getopt(argc, argv, "p:b:h")) != -1) {
		switch (opt) {
		case 'p':
			port = atoi(optarg);
			break;
		case 'b':
			bind_addr = optarg;
			break;
		default:
			usage();
			return 2;
		}
	}
	if (optind >= argc || port <= 0 || port > 65535) {
		usage();
		return 2;
	}
	for (int i = optind; i < argc; i++) {
		if (add_record(argv[i]) < 0) {
			fprintf(stderr, "dns_responder: bad record '%s' (NAME=IPv4 or NAME=IPv6)\n",
				argv[i]);
			return 2;
		}
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	struct sockaddr_storage ss = {0};
	socklen_t sl;
	int family;
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, bind_addr, &in->sin_addr) == 1) {
		family = in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		sl = sizeof(*in);
	} else if (inet_pton(AF_INET6, bind_addr, &in6->sin6_addr) == 1) {
		family = in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		sl = sizeof(*in6);
	} else {
		fprintf(stderr, "dns_responder: bad address '%s'\n", bind_addr);
		return 2;
	}
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		fprintf(stderr, "dns_responder: bind %s:%d: %s\n", bind_addr, port,
			strerror(errno));
		return 1;
	}
	printf("dns_responder: listening on %s port %d, %d records\n", bind_addr, port, nrecords);
	fflush(stdout);

	static uint8_t q[65536], out[65536];
	for (;;) {
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &pl);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "dns_responder: recvfrom: %s\n", strerror(errno));
			return 1;
		}
		char log[400] = "";
		size_t len = answer(q, (size_t)n, out, sizeof(out), log, sizeof(log));
		char ip[INET6_ADDRSTRLEN] = "?";
		int pport = 0;
		if (peer.ss_family == AF_INET) {
			struct sockaddr_in *p = (struct sockaddr_in *)&peer;
			inet_ntop(AF_INET, &p->sin_addr, ip, sizeof(ip));
			pport = ntohs(p->sin_port);
		} else if (peer.ss_family == AF_INET6) {
			struct sockaddr_in6 *p = (struct sockaddr_in6 *)&peer;
			inet_ntop(AF_INET6, &p->sin6_addr, ip, sizeof(ip));
			pport = ntohs(p->sin6_port);
		}
		printf("query %s from %s:%d\n", log[0] ? log : "(ignored)", ip, pport);
		fflush(stdout);
		if (len && sendto(fd, out, len, 0, (struct sockaddr *)&peer, pl) < 0)
			fprintf(stderr, "dns_responder: sendto: %s\n", strerror(errno));
	}
}
