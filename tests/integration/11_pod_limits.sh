#!/usr/bin/env bash
# trace-pod resource limits (cgroup v2 where the controller is there, v1 otherwise):
# the limit is in force from the command's first instruction and is enforced.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"

# Starts 6 background sleeps, printing "started I" after each successful fork.
SIX_SLEEPS='i=1; while [ $i -le 6 ]; do sleep 30 & echo "started $i"; i=$((i+1)); done; echo all-started; exit 0'

test_pids_max() {
	local out rc=0
	# control: with room for them, all six start (so a failure below is the limit's doing)
	out=$(tp run --net none --pids-max 20 --rootfs "$R" -- sh -c "$SIX_SLEEPS" </dev/null 2>&1)
	assert_contains "$out" all-started "with --pids-max 20"
	out=$(tp run --net none --pids-max 5 --rootfs "$R" -- sh -c "$SIX_SLEEPS" </dev/null 2>&1) || rc=$?
	echo "$out"
	echo "exit $rc"
	# the shell (PID 1) and four sleeps make five tasks: the next fork is refused
	assert_contains "$out" "can't fork" "with --pids-max 5"
	assert_eq 4 "$(grep -c '^started' <<<"$out")" "sleeps started under --pids-max 5"
	assert_not_contains "$out" all-started
	[ "$rc" -ne 0 ] || fail "trace-pod exited 0 though the shell failed"
}

# The hog keeps a growing string in the shell's memory (a command substitution).
HOG='x=$(head -c 300000000 /dev/zero | tr "\0" a); echo "survived ${#x}"'
SMALL='x=$(head -c 10000000 /dev/zero | tr "\0" a); echo "survived ${#x}"'

test_memory_max() {
	local tmp out rc=0
	tmp=$(mktemp -d)
	on_exit rm -rf -- "$tmp"
	# control: the same program with a small string survives under a generous limit
	out=$(tp run --net none --memory-max 268435456 --rootfs "$R" -- sh -c "$SMALL" </dev/null)
	assert_eq "survived 10000000" "$out" "small allocation under --memory-max 256MiB"
	tp run --net none --memory-max 33554432 --rootfs "$R" -- sh -c "$HOG" \
		</dev/null >"$tmp/out" 2>"$tmp/err" || rc=$?
	echo "exit $rc; stdout: $(cat "$tmp/out")"
	echo "stderr: $(cat "$tmp/err")"
	assert_not_contains "$(cat "$tmp/out")" survived "the hog under --memory-max 32MiB"
	assert_eq 137 "$rc" "exit code of an OOM-killed pod"
	grep -qiE 'oom|out of memory' "$tmp/err" || fail "trace-pod did not report the OOM kill on stderr"
}

# --cpu-max: the quota reaches the cgroup the command runs in (v2 cpu.max or v1 cfs quota).
test_cpu_max() {
	local name pid line rel val
	name=$(pod_name cpu)
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --cpu-max 20000 --rootfs "$R" -- sleep 300 </dev/null >/dev/null
	pid=$(pod_field "$name" pid)
	[ -n "$pid" ] && [ -d "/proc/$pid" ] || fail "no running PID 1 for $name (pid '$pid')"
	cat "/proc/$pid/cgroup"
	if line=$(grep -E '^[0-9]+:([^:]*,)?cpu(,[^:]*)?:' "/proc/$pid/cgroup"); then
		rel=${line#*:*:}
		val=$(cat /sys/fs/cgroup/cpu"$rel"/cpu.cfs_quota_us 2>/dev/null ||
			cat /sys/fs/cgroup/cpu,cpuacct"$rel"/cpu.cfs_quota_us)
		assert_eq 20000 "$val" "v1 cpu.cfs_quota_us of the pod"
	else
		rel=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
		val=$(cat /sys/fs/cgroup/unified"$rel"/cpu.max 2>/dev/null || cat /sys/fs/cgroup"$rel"/cpu.max)
		assert_eq "20000 100000" "$val" "v2 cpu.max of the pod"
	fi
}

run_test pids_max test_pids_max
run_test memory_max test_memory_max
run_test cpu_max test_cpu_max
