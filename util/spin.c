/* Adaptive busy-waiting (util.h): a thread that expects a message within microseconds
 * checks for it a little while before it sleeps. On a VM, waking a thread whose vCPU
 * went idle costs 20-30 us per hop (the host has to reschedule the vCPU); a request
 * round trip has two hops. */
#include <sched.h>
#include <time.h>

#include "util/util.h"

uint64_t hm_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool hm_spin_more(const struct hm_spin *s, uint64_t since_ns)
{
	/* only while the recent waits were short: a slow peer (a port-forwarded agent, a
	 * program that thinks between requests) would only burn the CPU */
	if (s->last_wait_ns > 2 * HM_SPIN_NS)
		return false;
	if (hm_now_ns() - since_ns >= HM_SPIN_NS)
		return false;
	/* another thread of this CPU (often the peer itself) goes first */
	sched_yield();
	return true;
}

void hm_spin_waited(struct hm_spin *s, uint64_t since_ns)
{
	s->last_wait_ns = hm_now_ns() - since_ns;
}
