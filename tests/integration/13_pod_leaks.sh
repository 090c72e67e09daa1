#!/usr/bin/env bash
# trace-pod cleans up: after pods exit (normally, concurrently, or because trace-pod got a
# signal) no cgroup directory (v1 or v2), veth, mount or state directory is left behind.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"

test_sequential_runs() {
	local prefix before i args start
	prefix="t$$-seq"
	before=$(mktemp)
	on_exit rm -f -- "$before"
	hermit_resources "$prefix" >"$before"
	start=$(date +%s%N)
	for i in $(seq 1 100); do
		args=()
		# mix the paths through the runtime: limits (v1 cgroup dirs), no network, init
		[ $((i % 2)) -eq 1 ] && args+=(--pids-max 50 --memory-max 67108864 --cpu-max 50000)
		[ $((i % 5)) -eq 0 ] && args+=(--net none)
		[ $((i % 7)) -eq 0 ] && args+=(--init)
		tp run --name "$prefix-$i" "${args[@]}" --rootfs "$R" -- /bin/true </dev/null ||
			fail "run $i (${args[*]}) exited $?"
	done
	echo "100 runs in $((($(date +%s%N) - start) / 1000000)) ms"
	assert_no_leaks "$before" "$prefix"
}

test_concurrent_runs() {
	local prefix before tmp i ips
	prefix="t$$-conc"
	before=$(mktemp)
	tmp=$(mktemp -d)
	on_exit rm -rf -- "$before" "$tmp"
	hermit_resources "$prefix" >"$before"
	for i in $(seq 1 10); do
		(
			rc=0
			tp run --name "$prefix-$i" --pids-max 20 --memory-max 67108864 --rootfs "$R" -- \
				sh -c "ip -4 -o addr show dev eth0; sleep 0.5; echo done-$i" </dev/null >"$tmp/$i.out" 2>&1 || rc=$?
			echo "$rc" >"$tmp/$i.rc"
		) &
	done
	wait
	for i in $(seq 1 10); do
		echo "pod $i: exit $(cat "$tmp/$i.rc"): $(cat "$tmp/$i.out")"
	done
	for i in $(seq 1 10); do
		assert_eq 0 "$(cat "$tmp/$i.rc")" "exit code of concurrent pod $i"
		assert_contains "$(cat "$tmp/$i.out")" "done-$i"
	done
	# every pod got its own address
	ips=$(cat "$tmp"/*.out | grep -o '10\.213\.[0-9]*\.[0-9]*/' | sort)
	assert_eq 10 "$(count_lines "$ips")" "pods with an address"
	assert_eq 10 "$(sort -u <<<"$ips" | grep -c .)" "distinct pod addresses"
	assert_no_leaks "$before" "$prefix"
}

# The foreground trace-pod of a signal test, global so the exit hook still sees it.
TPID=
kill_tpid() { [ -z "$TPID" ] || kill -KILL "$TPID" 2>/dev/null || true; }

# SIGTERM to a foreground trace-pod: the signal reaches the pod, trace-pod exits with the
# pod's status, and everything is removed.
test_sigterm_cleanup() {
	local prefix before name secs rc
	prefix="t$$-term"
	before=$(mktemp)
	name="$prefix-1"
	on_exit rm -f -- "$before"
	on_exit pod_cleanup "$name"
	on_exit kill_tpid
	hermit_resources "$prefix" >"$before"
	secs="7$RANDOM"
	"$TRACE_POD" run --name "$name" --init --pids-max 10 --memory-max 67108864 --rootfs "$R" -- \
		sleep "$secs" </dev/null &
	TPID=$!
	wait_until 100 pgrep -f "^sleep $secs\$" || fail "the pod's sleep never started"
	kill -TERM "$TPID"
	wait_until 100 pid_exited "$TPID" || fail "trace-pod still running 10s after SIGTERM"
	rc=0
	wait "$TPID" || rc=$?
	TPID=
	echo "trace-pod exited $rc"
	# --init passes SIGTERM to sleep, which dies of it: 128 + 15
	assert_eq 143 "$rc" "exit code after SIGTERM"
	! pgrep -f "sleep $secs" || fail "the pod's sleep survived"
	assert_no_leaks "$before" "$prefix"
}

# Without --init, PID 1 gets the forwarded signal itself (SIGTERM and SIGHUP).
test_signal_forwarded_to_pid1() {
	local prefix before name sig code rc
	prefix="t$$-fwd"
	before=$(mktemp)
	on_exit rm -f -- "$before" "$before.out"
	on_exit pod_cleanup "$prefix-TERM" "$prefix-HUP"
	on_exit kill_tpid
	hermit_resources "$prefix" >"$before"
	for sig in TERM:3 HUP:4; do
		code=${sig#*:}
		sig=${sig%:*}
		name="$prefix-$sig"
		"$TRACE_POD" run --name "$name" --net none --rootfs "$R" -- \
			sh -c "trap 'exit $code' $sig; echo ready; while :; do sleep 0.1; done" </dev/null >"$before.out" &
		TPID=$!
		wait_until 100 grep -q ready "$before.out" || fail "pod $name never got ready"
		kill -"$sig" "$TPID"
		wait_until 100 pid_exited "$TPID" || fail "trace-pod still running 10s after SIG$sig"
		rc=0
		wait "$TPID" || rc=$?
		TPID=
		assert_eq "$code" "$rc" "exit code after SIG$sig (the pod's trap exits $code)"
	done
	rm -f "$before.out"
	assert_no_leaks "$before" "$prefix"
}

run_test sequential_runs test_sequential_runs
run_test concurrent_runs test_concurrent_runs
run_test sigterm_cleanup test_sigterm_cleanup
run_test signal_forwarded_to_pid1 test_signal_forwarded_to_pid1
