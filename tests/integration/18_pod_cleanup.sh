#!/usr/bin/env bash
# What a pod leaves once it is gone: a detached pod whose trace-pod was killed -9 is
# cleaned up by the next ls / run of its name; a detached pod's log stays capped however
# fast it writes; the host-side veth is gone when trace-pod returns, not some time later.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"

state_of() { echo "/run/hermit/pods/$1"; }

# kill_monitor NAME: SIGKILL to the pod's trace-pod; waits until it and PID 1 are gone.
kill_monitor() {
	local name="$1" monitor pid
	monitor=$(cat "$(state_of "$name")/monitor_pid")
	pid=$(pod_field "$name" pid)
	[[ "$monitor" =~ ^[0-9]+$ ]] || fail "no monitor pid for $name"
	kill -KILL "$monitor"
	wait_until 100 pid_exited "$monitor" || fail "monitor $monitor survived SIGKILL"
	# PID 1 goes with its monitor (PR_SET_PDEATHSIG); make sure for the checks below
	wait_until 50 pid_exited "$pid" || kill -KILL "$pid" 2>/dev/null || true
}

# start_pod NAME: a detached pod with limits (v1 and v2 cgroup dirs) and a veth.
start_pod() {
	tp run -d --name "$1" --pids-max 20 --memory-max 67108864 --rootfs "$R" -- sleep 100000 </dev/null >/dev/null
	wait_until 100 pod_status_is "$1" running || fail "pod $1 never ran"
}

# After kill -9 of the monitor, `ls` (HOW=ls) removes the pod: no state, cgroups or veth
# are left and the name can be used again; without an ls in between (HOW=run), `run
# --name` of the dead pod's name takes it over.
test_dead_monitor() { # HOW
	local how="$1" prefix before name veth out
	prefix="t$$-dead$how"
	name="$prefix-1"
	before=$(mktemp)
	on_exit rm -f -- "$before"
	on_exit pod_cleanup "$name"
	hermit_resources "$prefix" >"$before"
	start_pod "$name"
	veth=$(cat "$(state_of "$name")/veth")
	hermit_resources "$prefix" | grep -q "^cgroup .*$name" || fail "control: the pod has no cgroup directory"
	kill_monitor "$name"
	if [ "$how" = run ]; then
		start_pod "$name"
		assert_eq running "$(pod_field "$name" status)" "status of the new pod"
		tp rm -f "$name"
		assert_no_leaks "$before" "$prefix"
		return
	fi
	out=$(tp ls)
	echo "$out"
	assert_not_contains "$out" "$name" "ls after the monitor was killed"
	[ ! -e "$(state_of "$name")" ] || fail "state directory of $name left: $(ls "$(state_of "$name")")"
	! ip link show "$veth" >/dev/null 2>&1 || fail "veth $veth left"
	assert_no_leaks "$before" "$prefix"
	out=$(tp run --name "$name" --net none --rootfs "$R" -- echo reused </dev/null)
	assert_eq reused "$out" "run with the name of the dead pod"
	assert_no_leaks "$before" "$prefix"
}

# A live pod and one that exited normally are not touched by ls.
test_ls_keeps_live_and_exited() {
	local prefix live done_
	prefix="t$$-keep"
	live="$prefix-live"
	done_="$prefix-done"
	on_exit pod_cleanup "$live" "$done_"
	start_pod "$live"
	tp run -d --name "$done_" --net none --rootfs "$R" -- sh -c 'echo bye' </dev/null >/dev/null
	wait_until 100 pod_status_is "$done_" exited || fail "pod never exited"
	tp ls >/dev/null
	assert_eq running "$(pod_field "$live" status)" "live pod after ls"
	assert_eq exited "$(pod_field "$done_" status)" "exited pod after ls"
	tp logs "$done_" | grep -q bye || fail "log of the exited pod lost"
}

# log_bytes NAME: size of the pod's log files together.
log_bytes() { cat "$(state_of "$1")"/log* 2>/dev/null | wc -c; }

# A pod writing as fast as it can: the log stays under two caps, and logs shows the end.
test_log_capped() { # CAP_OPTION CAP_BYTES
	local name max=0 size i marker out
	name=$(pod_name log)
	on_exit pod_cleanup "$name"
	marker="end-of-output-$RANDOM"
	tp run -d --name "$name" --net none "$@" --rootfs "$R" -- \
		sh -c "yes hermit-log-line-hermit-log-line | head -c 150000000; echo $marker; exec sleep 100000" </dev/null >/dev/null
	for i in $(seq 1 40); do
		size=$(log_bytes "$name")
		[ "$size" -gt "$max" ] && max=$size
		tail -c 200 "$(state_of "$name")/log" 2>/dev/null | grep -q "$marker" && break
		sleep 0.1
	done
	size=$(log_bytes "$name")
	[ "$size" -gt "$max" ] && max=$size
	echo "largest log seen: $max bytes (cap $CAP_BYTES per file)"
	ls -l "$(state_of "$name")"
	[ "$max" -le $((2 * CAP_BYTES)) ] || fail "log grew to $max bytes, more than twice the cap $CAP_BYTES"
	[ "$max" -ge "$CAP_BYTES" ] || fail "control: the pod wrote only $max bytes"
	out=$(tp logs "$name" | tail -n 2)
	assert_eq "hermit-log-line-hermit-log-line
$marker" "$out" "end of trace-pod logs"
}
test_log_capped_1m() { CAP_BYTES=1048576 test_log_capped --log-max-size 1M; }
test_log_capped_default() { CAP_BYTES=$((10 << 20)) test_log_capped; }

# While a pod floods its log, its trace-pod still forwards a stop's SIGTERM at once
# (--init passes it on to yes) instead of only relaying output.
test_log_flood_stop_is_prompt() {
	local name start
	name=$(pod_name flood)
	on_exit pod_cleanup "$name"
	tp run -d --init --name "$name" --net none --log-max-size 256k --rootfs "$R" -- yes flood </dev/null >/dev/null
	wait_until 50 sh -c "[ \$(cat '$(state_of "$name")'/log* | wc -c) -gt 262144 ]" || fail "the pod wrote nothing"
	start=$(date +%s%N)
	tp stop --timeout 20 "$name"
	echo "stop took $((($(date +%s%N) - start) / 1000000)) ms"
	[ $((($(date +%s%N) - start) / 1000000)) -lt 5000 ] || fail "stop waited for the timeout: the monitor did not forward SIGTERM"
	assert_eq exited "$(pod_field "$name" status)" "status after stop"
	[ "$(log_bytes "$name")" -le $((2 * 262144)) ] || fail "log above twice the cap"
}

# 5 pods end at the same time; when their trace-pods have returned, none of their veths
# is listed any more (the host end, found by the index eth0 names as its peer).
test_veth_gone_on_return() {
	local tmp round i idx left
	tmp=$(mktemp -d)
	on_exit rm -rf -- "$tmp"
	for round in 1 2 3; do
		for i in 1 2 3 4 5; do
			tp run --name "$(pod_name veth)-$i" --rootfs "$R" -- \
				sh -c 'cat /sys/class/net/eth0/iflink; sleep 0.3' </dev/null >"$tmp/$round.$i" &
		done
		wait
		left=$(ip -o link show | grep -E "^($(cat "$tmp/$round".* | paste -sd'|')): hm" || true)
		[ -z "$left" ] || fail "round $round: veths still listed after trace-pod returned:
$left"
		for i in 1 2 3 4 5; do
			grep -qE '^[0-9]+$' "$tmp/$round.$i" || fail "control: pod $i printed no peer index"
		done
	done
}

run_test dead_monitor_reaped_by_ls test_dead_monitor ls
run_test dead_monitor_name_reused_by_run test_dead_monitor run
run_test ls_keeps_live_and_exited test_ls_keeps_live_and_exited
run_test log_capped_1m test_log_capped_1m
run_test log_capped_default test_log_capped_default
run_test log_flood_stop_is_prompt test_log_flood_stop_is_prompt
run_test veth_gone_on_return test_veth_gone_on_return
