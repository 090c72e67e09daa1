#!/usr/bin/env bash
# trace-pod isolation: what a process inside a pod can see of the host. Each check runs
# a real pod from the busybox rootfs and asserts what the pod prints.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"

test_command_is_pid1() {
	local out procs pid cmd
	out=$(tp run --net none --rootfs "$R" -- ps </dev/null)
	echo "$out"
	procs=$(tail -n +2 <<<"$out")
	# A fresh PID namespace holds exactly one process: ps itself, as PID 1.
	assert_eq 1 "$(count_lines "$procs")" "processes visible in the pod"
	# busybox ps prints PID, USER, [TIME,] COMMAND
	pid=$(awk '{print $1}' <<<"$procs")
	cmd=$(awk '{print $NF}' <<<"$procs")
	assert_eq 1 "$pid" "PID of the command"
	[[ "$cmd" == ps || "$cmd" == */ps ]] || fail "PID 1 is '$cmd', not ps"
}

test_hostname_is_the_pods() {
	local out name
	out=$(tp run --net none --hostname hermit-podhost --rootfs "$R" -- hostname </dev/null)
	assert_eq hermit-podhost "$out" "hostname with --hostname"
	# Without --hostname the pod still has its own UTS namespace, not the host's name.
	name=$(pod_name h)
	out=$(tp run --net none --name "$name" --rootfs "$R" -- hostname </dev/null)
	echo "default hostname: $out (host: $(hostname))"
	[ -n "$out" ] || fail "empty hostname in the pod"
	[ "$out" != "$(hostname)" ] || fail "the pod sees the host's hostname '$out'"
}

test_root_is_the_rootfs() {
	local tmp marker out want
	tmp=$(mktemp -d)
	on_exit rm -rf -- "$tmp"
	cp -a "$R" "$tmp/rootfs"
	marker="hermit-rootfs-marker-$$-$RANDOM"
	: >"$tmp/rootfs/$marker"
	out=$(tp run --net none --rootfs "$tmp/rootfs" -- ls -1 / </dev/null | LC_ALL=C sort)
	echo "pod's /: $(echo $out)"
	assert_contains "$out" "$marker" "ls / in the pod"
	# Listed after the run: mount points the runtime may create are there too.
	want=$(ls -1 "$tmp/rootfs" | LC_ALL=C sort)
	assert_eq "$want" "$out" "ls / in the pod vs the rootfs directory"
}

test_os_release_from_rootfs() {
	local out
	[ -f "$R/etc/os-release" ] || fail "the rootfs built by 'trace-pod rootfs' has no /etc/os-release"
	out=$(tp run --net none --rootfs "$R" -- cat /etc/os-release </dev/null)
	echo "$out"
	assert_eq "$(cat "$R/etc/os-release")" "$out" "/etc/os-release in the pod"
	[ "$out" != "$(cat /etc/os-release)" ] || fail "the pod shows the host's /etc/os-release"
}

test_host_path_unreachable() {
	local tag out
	tag="hermit-hostonly-$$-$RANDOM"
	on_exit rm -rf -- "/tmp/$tag" "/opt/$tag"
	echo "secret-$tag" >"/tmp/$tag"
	mkdir -p "/opt/$tag" && echo "secret-$tag" >"/opt/$tag/file"
	out=$(tp run --net none --rootfs "$R" -- sh -c "
		cat /tmp/$tag /opt/$tag/file /../../tmp/$tag 2>&1
		ls -a /tmp /opt 2>&1
		cat /proc/1/root/tmp/$tag 2>&1
		echo reached-the-end" </dev/null) || true
	echo "$out"
	assert_contains "$out" reached-the-end
	assert_not_contains "$out" "secret-$tag" "pod output"
	! grep -qx -- "$tag" <<<"$out" || fail "the pod lists the host's /tmp/$tag or /opt/$tag"
	# and the host file is really there, so the check above means something
	grep -q "secret-$tag" "/tmp/$tag"
}

# CVE-2024-21626: an fd of the runtime (or of its caller) left open in the pod, or a
# working directory reached through one, lets the pod walk out of its root.
test_no_fd_leaked_into_pod() {
	local tag out n
	tag="hermit-fdleak-$$-$RANDOM"
	on_exit rm -f -- "/tmp/$tag"
	echo "secret-$tag" >"/tmp/$tag"
	exec 7</tmp 8>/dev/null 9</
	out=$(tp run --net none --rootfs "$R" -- ls /proc/self/fd </dev/null)
	# ls itself opens the directory as fd 3
	assert_eq "0 1 2 3" "$(echo $out)" "fds open in the pod"
	out=$(tp run --net none --rootfs "$R" -- sh -c 'pwd; readlink /proc/self/cwd' </dev/null)
	assert_eq "/ /" "$(echo $out)" "working directory of the command"
	for n in 3 4 5 6 7 8 9 10 11 12; do
		out=$(tp run --net none --workdir "/proc/self/fd/$n" --rootfs "$R" -- \
			cat "../../../../../../../../tmp/$tag" "../../../../../../../tmp/$tag" </dev/null 2>&1) || true
		assert_not_contains "$out" "secret-$tag" "--workdir /proc/self/fd/$n"
	done
	exec 7<&- 8>&- 9<&-
}

# moby CVE-2022-24769: an inheritable set equal to the bounding set would let a program
# with inheritable file capabilities gain them at execve. The pod's PID 1 and every
# exec hold none, and no ambient ones.
test_no_inheritable_capabilities() {
	local out name
	out=$(tp run --net none --rootfs "$R" -- grep -E '^Cap(Inh|Amb|Bnd)' /proc/1/status </dev/null)
	echo "$out"
	assert_contains "$out" "CapInh:	0000000000000000" "CapInh of the pod's PID 1"
	assert_contains "$out" "CapAmb:	0000000000000000" "CapAmb of the pod's PID 1"
	assert_not_contains "$out" "CapBnd:	0000000000000000" "CapBnd (the pod keeps some)"
	name=$(pod_name cap)
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --rootfs "$R" -- sleep 600 </dev/null >/dev/null
	out=$(tp exec "$name" -- sh -c 'grep -E "^Cap(Inh|Amb)" /proc/1/status /proc/self/status' </dev/null)
	echo "$out"
	assert_eq 2 "$(grep -c 'CapInh:	0000000000000000' <<<"$out")" "CapInh of PID 1 and of exec"
	assert_eq 2 "$(grep -c 'CapAmb:	0000000000000000' <<<"$out")" "CapAmb of PID 1 and of exec"
}

run_test command_is_pid1 test_command_is_pid1
run_test hostname_is_the_pods test_hostname_is_the_pods
run_test root_is_the_rootfs test_root_is_the_rootfs
run_test os_release_from_rootfs test_os_release_from_rootfs
run_test host_path_unreachable test_host_path_unreachable
run_test no_fd_leaked_into_pod test_no_fd_leaked_into_pod
run_test no_inheritable_capabilities test_no_inheritable_capabilities
