/* "Say it once per key": for warnings a program can trigger in a loop. */
#include "tracer/engine/internal.h"

bool tracer_once(struct tracer_once *o, const char *key)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h |= 1; /* 0 marks a free slot */
	for (unsigned i = 0; i < HM_ARRAY_SIZE(o->seen); i++)
		if (o->seen[i] == h)
			return false;
	o->seen[o->next++ % HM_ARRAY_SIZE(o->seen)] = h;
	return true;
}
