/* The seccomp filter, hand-assembled classic BPF:
 *
 *   arch != native                  -> KILL_PROCESS (a foreign ABI, e.g. int 0x80,
 *                                      would reach syscalls the handlers never see)
 *   nr has the x32 bit              -> ERRNO(ENOSYS)
 *   io_uring_setup/enter/register   -> ERRNO(ENOSYS) (io_uring bypasses seccomp)
 *   a registered syscall            -> the intercept action (USER_NOTIF or TRACE),
 *                                      or ALLOW when registered with a condition on an
 *                                      argument (tracer_set_handler_if_arg) that is 0
 *   anything else                   -> ALLOW
 *
 * Registered numbers are found by a binary search, so a non-intercepted syscall costs
 * a handful of instructions; on 5.11+ the filter only ever looks at arch and nr for
 * those, so the kernel's seccomp action cache allows them without running it at all.
 *
 * One exception keeps the launch from deadlocking: the child hands the listener to
 * trace-run with sendmsg() after the filter is in place, and sendmsg may well be
 * intercepted, by a supervisor that does not have the listener yet. That one sendmsg
 * carries a 128-bit random cookie in its unused 4th and 5th argument registers, and the
 * filter allows sendmsg with exactly that cookie. */
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>

#include "tracer/engine/internal.h"

struct bpf_builder {
	struct sock_filter *insns;
	size_t len, cap;
	bool oom;
};

static size_t emit(struct bpf_builder *b, uint16_t code, uint32_t k, uint8_t jt, uint8_t jf)
{
	if (b->len == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct sock_filter *n = realloc(b->insns, cap * sizeof(*n));
		if (!n) {
			b->oom = true;
			return b->len;
		}
		b->insns = n;
		b->cap = cap;
	}
	b->insns[b->len] = (struct sock_filter){.code = code, .jt = jt, .jf = jf, .k = k};
	return b->len++;
}

static void emit_ret(struct bpf_builder *b, uint32_t action)
{
	emit(b, BPF_RET | BPF_K, action, 0, 0);
}

struct filter_rule {
	uint32_t nr;
	uint32_t action;
	bool cookie;	      /* allow when args[3], args[4] carry the handoff cookie */
	uint8_t when_arg_set; /* 1 + the argument that must be non-zero for action */
};

#define ARG_LO(i) ((uint32_t)offsetof(struct seccomp_data, args[i]))
#define ARG_HI(i) ((uint32_t)offsetof(struct seccomp_data, args[i]) + 4)

static void emit_rule(struct bpf_builder *b, const struct filter_rule *r, const uint64_t cookie[2])
{
	if (r->when_arg_set && !r->cookie) {
		/* both halves zero: allow; the block returns on every path once nr matched */
		int arg = r->when_arg_set - 1;
		emit(b, BPF_JMP | BPF_JEQ | BPF_K, r->nr, 0, 6);
		emit(b, BPF_LD | BPF_W | BPF_ABS, ARG_LO(arg), 0, 0);
		emit(b, BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 3);
		emit(b, BPF_LD | BPF_W | BPF_ABS, ARG_HI(arg), 0, 0);
		emit(b, BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1);
		emit_ret(b, SECCOMP_RET_ALLOW);
		emit_ret(b, r->action);
		return;
	}
	if (!r->cookie) {
		emit(b, BPF_JMP | BPF_JEQ | BPF_K, r->nr, 0, 1);
		emit_ret(b, r->action);
		return;
	}
	/* the block returns on every path once nr matched, so clobbering A is fine */
	const uint32_t words[4] = {(uint32_t)cookie[0], (uint32_t)(cookie[0] >> 32),
				   (uint32_t)cookie[1], (uint32_t)(cookie[1] >> 32)};
	const uint32_t offsets[4] = {ARG_LO(3), ARG_HI(3), ARG_LO(4), ARG_HI(4)};
	emit(b, BPF_JMP | BPF_JEQ | BPF_K, r->nr, 0, 10);
	for (int i = 0; i < 4; i++) {
		emit(b, BPF_LD | BPF_W | BPF_ABS, offsets[i], 0, 0);
		/* mismatch: jump to the final "ret action" */
		emit(b, BPF_JMP | BPF_JEQ | BPF_K, words[i], 0, (uint8_t)(7 - 2 * i));
	}
	emit_ret(b, SECCOMP_RET_ALLOW);
	emit_ret(b, r->action);
}

/* rules[lo, hi) sorted by nr; A holds nr on entry */
static void emit_tree(struct bpf_builder *b, const struct filter_rule *rules, size_t lo, size_t hi,
		      const uint64_t cookie[2])
{
	if (hi - lo <= 4) {
		for (size_t i = lo; i < hi; i++)
			emit_rule(b, &rules[i], cookie);
		emit_ret(b, SECCOMP_RET_ALLOW);
		return;
	}
	size_t mid = lo + (hi - lo) / 2;
	/* nr > rules[mid-1].nr: take the `ja` to the right half; otherwise skip it */
	emit(b, BPF_JMP | BPF_JGT | BPF_K, rules[mid - 1].nr, 0, 1);
	size_t ja = emit(b, BPF_JMP | BPF_JA, 0, 0, 0);
	emit_tree(b, rules, lo, mid, cookie);
	if (!b->oom)
		b->insns[ja].k = (uint32_t)(b->len - ja - 1);
	emit_tree(b, rules, mid, hi, cookie);
}

static const int refused_syscalls[] = {SYS_io_uring_setup, SYS_io_uring_enter,
				       SYS_io_uring_register};

bool tracer_filter_refused(int nr)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(refused_syscalls); i++)
		if (refused_syscalls[i] == nr)
			return true;
	return false;
}

int tracer_filter_build(const struct tracer *t, uint32_t intercept_action, struct sock_fprog *prog,
			struct hm_err *err)
{
	struct filter_rule rules[TRACER_NR_MAX];
	size_t n = 0;
	/* ascending nr by construction */
	for (int nr = 0; nr < TRACER_NR_MAX; nr++) {
		if (tracer_filter_refused(nr)) {
			rules[n++] = (struct filter_rule){nr, SECCOMP_RET_ERRNO | ENOSYS, false, 0};
		} else if (t->handlers[nr].fn) {
			bool cookie =
			    intercept_action == SECCOMP_RET_USER_NOTIF && nr == SYS_sendmsg;
			rules[n++] = (struct filter_rule){nr, intercept_action, cookie,
							  t->handlers[nr].when_arg_set};
		}
	}

	struct bpf_builder b = {0};
	emit(&b, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch), 0, 0);
	emit(&b, BPF_JMP | BPF_JEQ | BPF_K, TRACER_NATIVE_ARCH, 1, 0);
	emit_ret(&b, SECCOMP_RET_KILL_PROCESS);
	emit(&b, BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr), 0, 0);
#ifdef TRACER_X32_SYSCALL_BIT
	emit(&b, BPF_JMP | BPF_JGE | BPF_K, TRACER_X32_SYSCALL_BIT, 0, 1);
	emit_ret(&b, SECCOMP_RET_ERRNO | ENOSYS);
#endif
	emit_tree(&b, rules, 0, n, t->handoff_cookie);
	if (b.oom) {
		free(b.insns);
		return hm_err_set(err, ENOMEM, "build seccomp filter");
	}
	if (b.len > BPF_MAXINSNS) {
		free(b.insns);
		return hm_err_set(err, E2BIG, "seccomp filter of %zu instructions", b.len);
	}
	prog->len = (unsigned short)b.len;
	prog->filter = b.insns;
	return 0;
}
