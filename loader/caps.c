/* Which capabilities this process holds: a BPF load that lacks one fails with a bare
 * EPERM, so the loaders check first and name what is missing. */
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "loader/internal.h"

bool hm_has_cap(int cap)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2] = {0};
	if (syscall(SYS_capget, &hdr, data) < 0)
		return false;
	return data[cap / 32].effective & (1u << (cap % 32));
}
