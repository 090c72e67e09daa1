#!/usr/bin/env bash
# The pods' default seccomp profile (runtime/seccomp.c): each attack of
# tests/apps-c/pod_escape is performed from inside a real pod and must be refused; with
# --seccomp off the same program succeeds, which shows each check can fail. The limits
# attack is the issue's: unshare(user|mount|cgroup), mount the cgroup v1 controller and
# raise the pod's own pids.max / memory limit, checked from the host side.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs

WORK=$(mktemp -d /tmp/hermit-seccomp-test.XXXXXX)
ROOTFS="$WORK/rootfs"
rootfs_with "$ROOTFS" "$BUILD/tests/pod_escape"
PODS=()
cleanup() {
	pod_cleanup "${PODS[@]}"
	rm -rf "$WORK"
}
trap cleanup EXIT

# in_pod [RUN OPTIONS] -- CMD...: CMD's output in a fresh pod (its status is ignored)
in_pod() {
	local opts=()
	while [ "$1" != "--" ]; do
		opts+=("$1")
		shift
	done
	shift
	tp run --net none "${opts[@]}" --rootfs "$ROOTFS" -- "$@" </dev/null 2>&1 || true
}

test_default_profile_refuses() {
	local out
	# one pod runs every attack; each prints one line
	out=$(in_pod -- sh -c 'for c in unshare-user clone-user clone3 keyctl io-uring mount vsock; do
		pod_escape $c; done; pod_escape personality 400000; pod_escape personality 6
		pod_escape personality 40000')
	echo "$out"
	assert_contains "$out" "unshare-user errno=1 " "unshare(CLONE_NEWUSER)"
	assert_contains "$out" "clone-user errno=1 " "clone(CLONE_NEWUSER)"
	assert_contains "$out" "clone3 errno=38 " "clone3 (ENOSYS: libcs fall back to clone)"
	assert_contains "$out" "keyctl errno=1 " "keyctl"
	assert_contains "$out" "io-uring errno=38 " "io_uring_setup"
	assert_contains "$out" "mount errno=1 " "mount"
	assert_contains "$out" "vsock errno=97 " "socket(AF_VSOCK) (EAFNOSUPPORT)"
	# READ_IMPLIES_EXEC, PER_BSD, ADDR_NO_RANDOMIZE
	assert_eq 3 "$(grep -c '^personality errno=1 ' <<<"$out")" "refused personality() calls"
}

test_harmless_personalities_allowed() {
	local out
	out=$(in_pod -- sh -c 'for p in 0 8 20000 20008 ffffffff; do pod_escape personality $p; done')
	echo "$out"
	assert_eq 5 "$(grep -c '^personality ok' <<<"$out")" "PER_LINUX, PER_LINUX32, UNAME26, query"
}

test_seccomp_off_allows() {
	local out
	out=$(in_pod --seccomp off -- sh -c 'for c in unshare-user clone-user keyctl vsock; do
		pod_escape $c; done; pod_escape personality 400000')
	echo "$out"
	assert_contains "$out" "unshare-user ok" "unshare(CLONE_NEWUSER) with --seccomp off"
	assert_contains "$out" "clone-user ok" "clone(CLONE_NEWUSER) with --seccomp off"
	assert_contains "$out" "keyctl ok" "keyctl with --seccomp off"
	assert_contains "$out" "vsock ok" "socket(AF_VSOCK) with --seccomp off"
	assert_contains "$out" "personality ok" "personality with --seccomp off"
}

test_exec_follows_the_pods_profile() {
	local on off out
	on=$(pod_name sc)
	off=$(pod_name sc)
	PODS+=("$on" "$off")
	on_exit pod_cleanup "$on" "$off"
	tp run -d --name "$on" --net none --rootfs "$ROOTFS" -- sleep 600 </dev/null >/dev/null
	tp run -d --name "$off" --seccomp off --net none --rootfs "$ROOTFS" -- sleep 600 </dev/null >/dev/null
	out=$(tp exec "$on" -- sh -c 'pod_escape unshare-user; pod_escape keyctl' || true)
	echo "default: $out"
	assert_contains "$out" "unshare-user errno=1 " "exec in a default pod"
	assert_contains "$out" "keyctl errno=1 " "exec in a default pod"
	out=$(tp exec "$off" -- sh -c 'pod_escape unshare-user; pod_escape keyctl' || true)
	echo "off: $out"
	assert_contains "$out" "unshare-user ok" "exec in a --seccomp off pod"
}

# v1_cgroup_dir NAME CONTROLLER: the pod's cgroup v1 directory of CONTROLLER
v1_cgroup_dir() {
	grep "^v1 /sys/fs/cgroup/$2/" "/run/hermit/pods/$1/cgroups" | cut -d' ' -f2-
}

# raise_limits NAME: the issue's attack from inside the running pod NAME
raise_limits() {
	tp exec "$1" -- sh -c 'pod_escape raise-limit pids pids.max max /mnt
		pod_escape raise-limit memory memory.limit_in_bytes -1 /tmp' || true
}

test_limits_cannot_be_raised() {
	local name ctl pids_dir mem_dir out
	name=$(pod_name lim)
	ctl=$(pod_name lim)
	PODS+=("$name" "$ctl")
	on_exit pod_cleanup "$name" "$ctl"
	for n in "$name" "$ctl"; do
		local opt=()
		[ "$n" = "$ctl" ] && opt=(--seccomp off)
		tp run -d --name "$n" "${opt[@]}" --pids-max 50 --memory-max 64M --net none \
			--rootfs "$ROOTFS" -- sleep 600 </dev/null >/dev/null
	done
	pids_dir=$(v1_cgroup_dir "$name" pids)
	mem_dir=$(v1_cgroup_dir "$name" memory)
	[ -n "$pids_dir" ] && [ -n "$mem_dir" ] ||
		fail "this test needs pids and memory on cgroup v1 (the issue's hybrid host): $(cat "/run/hermit/pods/$name/cgroups")"

	# no cgroupfs in the pod to write to, and sysfs is read-only
	out=$(tp exec "$name" -- sh -c 'grep -c cgroup /proc/mounts; ls /sys/fs/cgroup 2>/dev/null | wc -l;
		mkdir /sys/fs/hermit-x 2>&1' || true)
	echo "$out"
	assert_eq "0" "$(sed -n 1p <<<"$out")" "cgroup mounts in the pod"
	assert_eq "0" "$(sed -n 2p <<<"$out")" "entries in the pod's /sys/fs/cgroup"
	assert_contains "$out" "Read-only file system" "mkdir in the pod's /sys"

	out=$(raise_limits "$name")
	echo "$out"
	assert_eq 2 "$(grep -c '^raise-limit unshare errno=1 ' <<<"$out")" "unshare(user|mount|cgroup) refused"
	assert_eq 50 "$(cat "$pids_dir/pids.max")" "pids.max seen from the host"
	assert_eq 67108864 "$(cat "$mem_dir/memory.limit_in_bytes")" "memory limit seen from the host"

	# control: without the profile this host lets the same attack through
	out=$(raise_limits "$ctl")
	echo "control (--seccomp off): $out"
	assert_eq max "$(cat "$(v1_cgroup_dir "$ctl" pids)/pids.max")" "control pod's pids.max after the attack"
}

test_bad_seccomp_value() {
	local out rc
	out=$("$TRACE_POD" run --seccomp nope --rootfs "$ROOTFS" -- true 2>&1 </dev/null) && rc=0 || rc=$?
	assert_eq 125 "$rc" "--seccomp nope"
	assert_contains "$out" "--seccomp 'nope': expected default or off"
}

run_test default_profile_refuses test_default_profile_refuses
run_test harmless_personalities_allowed test_harmless_personalities_allowed
run_test seccomp_off_allows test_seccomp_off_allows
run_test exec_follows_the_pods_profile test_exec_follows_the_pods_profile
run_test limits_cannot_be_raised test_limits_cannot_be_raised
run_test bad_seccomp_value test_bad_seccomp_value
