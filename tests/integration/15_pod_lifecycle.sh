#!/usr/bin/env bash
# trace-pod detached lifecycle: run -d, ls, exec, logs, stop, rm; plus rootfs/deploy,
# --env/--workdir and --init.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"

test_detached_lifecycle() {
	local prefix before name out pid ip rc start
	prefix="t$$-life"
	before=$(mktemp)
	name="$prefix-1"
	on_exit rm -f -- "$before"
	on_exit pod_cleanup "$name"
	hermit_resources "$prefix" >"$before"

	start=$SECONDS
	# PID 1 exits on SIGTERM (after at most one sleep), so stop is quick
	tp run -d --name "$name" --hostname life-host --rootfs "$R" -- \
		sh -c 'trap "echo got-term; exit 0" TERM; echo hello-from-pod; while :; do sleep 1; done' </dev/null
	[ $((SECONDS - start)) -le 5 ] || fail "run -d took $((SECONDS - start))s to return"

	# ls: running, with a pid and an address
	tp ls --json | python3 -m json.tool
	assert_eq running "$(pod_field "$name" status)" "status in ls --json"
	pid=$(pod_field "$name" pid)
	ip=$(pod_field "$name" ip)
	[[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] || fail "pid '$pid' of the pod is not a live process"
	[[ "$ip" =~ ^10\.213\.[0-9]+\.[0-9]+$ ]] || fail "ip '$ip' of the pod is not in 10.213.0.0/16"
	[ "$(readlink "/proc/$pid/ns/uts")" != "$(readlink /proc/self/ns/uts)" ] || fail "pod shares the host uts namespace"
	[ "$(readlink "/proc/$pid/ns/pid")" != "$(readlink /proc/self/ns/pid)" ] || fail "pod shares the host pid namespace"
	out=$(tp ls)
	echo "$out"
	grep -F -- "$name" <<<"$out" | grep -q running || fail "'trace-pod ls' does not show $name as running"
	[ -d "/run/hermit/pods/$name" ] || fail "no state directory /run/hermit/pods/$name"

	# exec joins the pod's namespaces
	out=$(tp exec "$name" -- hostname </dev/null)
	assert_eq life-host "$out" "hostname seen by exec"
	out=$(tp exec "$name" -- ps </dev/null)
	echo "$out"
	grep -qE '^ *1 .*sh -c trap' <<<"$out" || fail "exec'd ps does not show the pod's command as PID 1"
	grep -qE '^ *[0-9]+ .*ps$' <<<"$out" || fail "exec'd ps does not show itself"
	# only the pod's processes: sh, its sleep, ps
	[ "$(tail -n +2 <<<"$out" | grep -c .)" -le 3 ] || fail "exec'd ps sees more than the pod's processes"
	assert_not_contains "$out" trace-pod "processes seen by exec"
	out=$(tp exec "$name" -- sh -c 'ip -4 -o addr show dev eth0' </dev/null)
	assert_contains "$out" "$ip/" "eth0 address seen by exec"
	out=$(tp exec "$name" -- cat /etc/os-release </dev/null)
	assert_eq "$(cat "$R/etc/os-release")" "$out" "/etc/os-release seen by exec"
	out=$(tp exec "$name" -- ls /proc/self/fd </dev/null)
	assert_eq "0 1 2 3" "$(echo $out)" "fds open in an exec'd process"
	rc=0
	tp exec "$name" -- sh -c 'exit 7' </dev/null || rc=$?
	assert_eq 7 "$rc" "exit code through exec"
	rc=0
	tp exec "$name" -- /nonexistent-cmd </dev/null 2>/dev/null || rc=$?
	assert_eq 127 "$rc" "exec of a missing command"

	# logs
	wait_until 50 sh -c "'$TRACE_POD' logs '$name' | grep -q hello-from-pod" ||
		fail "logs do not show the pod's output: $("$TRACE_POD" logs "$name" 2>&1)"

	# stop: the pod's processes go, the pod is listed as not running
	start=$SECONDS
	tp stop "$name"
	[ $((SECONDS - start)) -le 8 ] || fail "stop took $((SECONDS - start))s"
	wait_until 50 pid_exited "$pid" || fail "PID 1 ($pid) still alive after stop"
	out=$(pod_field "$name" status)
	echo "status after stop: $out"
	[ "$out" != running ] || fail "ls still shows $name as running after stop"
	rc=0
	tp exec "$name" -- /bin/true </dev/null 2>/dev/null || rc=$?
	[ "$rc" -ne 0 ] || fail "exec into a stopped pod succeeded"

	# rm: gone from ls and from /run/hermit/pods, nothing left behind
	tp rm "$name"
	[ -z "$(pod_field "$name" name)" ] || fail "ls still lists $name after rm"
	[ ! -e "/run/hermit/pods/$name" ] || fail "state directory of $name left after rm"
	assert_no_leaks "$before" "$prefix"
}

# A detached pod whose command exits on its own is reported as exited and can be removed.
test_detached_exit() {
	local prefix before name
	prefix="t$$-dexit"
	before=$(mktemp)
	name="$prefix-1"
	on_exit rm -f -- "$before"
	on_exit pod_cleanup "$name"
	hermit_resources "$prefix" >"$before"
	tp run -d --name "$name" --net none --rootfs "$R" -- sh -c 'echo short-lived; exit 5' </dev/null
	wait_until 100 pod_status_is "$name" exited ||
		fail "pod never reported as exited: $("$TRACE_POD" ls --json)"
	assert_eq exited "$(pod_field "$name" status)"
	"$TRACE_POD" logs "$name" | grep -q short-lived || fail "logs of an exited pod are missing"
	tp rm "$name"
	[ -z "$(pod_field "$name" name)" ] || fail "ls still lists $name after rm"
	assert_no_leaks "$before" "$prefix"
}

test_env_and_workdir() {
	local out
	out=$(tp run --net none --env FOO=bar --env "SPACED=a b" --workdir /etc --rootfs "$R" -- \
		sh -c 'echo "$FOO|$SPACED|$(pwd)|$PATH"' </dev/null)
	echo "$out"
	IFS='|' read -r foo spaced wd path <<<"$out"
	assert_eq bar "$foo" FOO
	assert_eq "a b" "$spaced" SPACED
	assert_eq /etc "$wd" "working directory"
	assert_contains "$path" /bin PATH
	# the host environment does not leak in
	out=$(HERMIT_HOST_ONLY=leak tp run --net none --rootfs "$R" -- env </dev/null)
	assert_not_contains "$out" HERMIT_HOST_ONLY "pod environment"
}

# --init reaps orphans. The command execs into sleep, which never waits: an orphan
# re-parented to PID 1 stays a zombie unless PID 1 is trace-pod's init.
ORPHAN='(sh -c "sleep 0.2 &"; sleep 1; ps -o pid,stat,args) & exec sleep 1.5'

test_init_reaps_zombies() {
	local out
	out=$(tp run --net none --rootfs "$R" -- sh -c "$ORPHAN" </dev/null)
	echo "without --init: $out"
	grep -qE '^ *[0-9]+ +Z' <<<"$out" || fail "control: no zombie without --init, the check below means nothing"
	out=$(tp run --net none --init --rootfs "$R" -- sh -c "$ORPHAN" </dev/null)
	echo "with --init: $out"
	! grep -qE '^ *[0-9]+ +Z' <<<"$out" || fail "zombie left with --init"
	grep -qE '^ *1 ' <<<"$out" || fail "no PID 1 in ps output"
	! grep -qE '^ *1 +[A-Z<]* +sh -c' <<<"$out" || fail "with --init the command is still PID 1"
}

test_rootfs_and_deploy() {
	local tmp out
	tmp=$(mktemp -d)
	on_exit rm -rf -- "$tmp"
	tp rootfs "$tmp/rootfs" >/dev/null
	[ -x "$tmp/rootfs/bin/busybox" ] || fail "no bin/busybox in the new rootfs"
	out=$(tp run --net none --rootfs "$tmp/rootfs" -- sh -c 'echo fresh-rootfs-ok' </dev/null)
	assert_eq fresh-rootfs-ok "$out"
	printf '#include <stdio.h>\nint main(void) { puts("hello-static"); return 0; }\n' >"$tmp/hello.c"
	gcc -static -O1 -o "$tmp/hello-static" "$tmp/hello.c"
	tp deploy "$tmp/hello-static" --rootfs "$tmp/rootfs" >/dev/null
	[ -x "$tmp/rootfs/bin/hello-static" ] || fail "deploy did not put hello-static in bin/"
	out=$(tp run --net none --rootfs "$tmp/rootfs" -- hello-static </dev/null)
	assert_eq hello-static "$out" "deployed static binary"
}

run_test detached_lifecycle test_detached_lifecycle
run_test detached_exit test_detached_exit
run_test env_and_workdir test_env_and_workdir
run_test init_reaps_zombies test_init_reaps_zombies
run_test rootfs_and_deploy test_rootfs_and_deploy
