/* libFuzzer target: DNS answers from the pod's resolver, decoded by the one DNS wire
 * decoder (policy_dns_decode): trace-run parses those the traced program receives
 * (policy_dns_table_add_response) to learn name -> address pairs for the outgoing
 * filter, and `trace-run port-forward` its own lookups; network-facing input. Also the outgoing
 * filter spec parser, fed from config files and flags. */
#include <stdint.h>
#include <string.h>

#include "tracer/policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct policy_dns_table *table;
	if (!table && policy_dns_table_new(64, &table, NULL) < 0)
		return 0;
	struct policy_dns_response decoded;
	if (policy_dns_decode(data, size, &decoded) == 0 && decoded.n > POLICY_DNS_MAX_RECORDS)
		__builtin_trap();
	policy_dns_table_add_response(table, data, size);

	/* whatever was learned must be readable back without tripping ASan */
	uint8_t addr4[4] = {0};
	char name[256];
	if (size >= 4)
		memcpy(addr4, data, 4);
	policy_dns_table_lookup(table, 2 /* AF_INET */, addr4, name, sizeof(name));

	char spec[256];
	size_t n = size < sizeof(spec) - 1 ? size : sizeof(spec) - 1;
	memcpy(spec, data, n);
	spec[n] = '\0';
	struct policy_net_spec parsed;
	policy_net_spec_parse(spec, &parsed, NULL);
	return 0;
}
