#!/usr/bin/env bash
# A pod's rootfs and the host's other users. Root in the pod owns what it makes in its
# rootfs, setuid-root binaries included; a host user who can walk to that file runs it
# as root. trace-pod run therefore wants a rootfs behind a root-owned 0700 directory
# and refuses any other unless told --unsafe-public-rootfs.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
# setpriv keeps root's capabilities up to its own execve (PR_SET_KEEPCAPS): a shell in
# between is a plain nobody by the time it looks the path up
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh -c 'exec "$@"' sh)

# a fresh private rootfs: WORK (mktemp, 0700) / rootfs
new_work() {
	WORK=$(mktemp -d /tmp/hermit-private-test.XXXXXX)
	on_exit rm -rf -- "$WORK"
	cp -a "$TEST_ROOTFS" "$WORK/rootfs"
	# an ordinary program in the rootfs (as deploy puts them) that reports its euid; the
	# pod's root is free to make it setuid (busybox drops setuid for its own id applet)
	cp /usr/bin/id "$WORK/rootfs/tmp/id"
}

# The attack: pod root makes a setuid-root shell; host user nobody runs it by its host
# path. The 0700 directory above the rootfs stops nobody at the first step.
test_setuid_from_pod_not_usable_on_host() {
	local out
	new_work
	[ "$(stat -c %a "$WORK")" = 700 ] || fail "mktemp -d gave $(stat -c %a "$WORK")"
	tp run --net none --rootfs "$WORK/rootfs" -- sh -c \
		'cp /bin/busybox /tmp/suid-sh && chmod 4755 /tmp/suid-sh /tmp/id' </dev/null
	# it is there, setuid root, on the host's filesystem
	assert_eq "4755 0" "$(stat -c '%a %u' "$WORK/rootfs/tmp/suid-sh")" "the pod's setuid file"
	out=$("${NOBODY[@]}" "$WORK/rootfs/tmp/suid-sh" id -u 2>&1) && fail "nobody ran it: $out"
	echo "as nobody: $out"
	assert_contains "$out" "Permission denied"
	out=$("${NOBODY[@]}" "$WORK/rootfs/tmp/id" -u 2>&1) && fail "nobody ran it: $out"
	assert_contains "$out" "Permission denied"
	# and the same from a directory next to it: the 0700 covers the whole rootfs
	out=$("${NOBODY[@]}" ls "$WORK/rootfs/tmp" 2>&1) && fail "nobody listed the rootfs: $out"
	assert_contains "$out" "Permission denied"
}

# The same rootfs moved where other users reach it: run refuses it before anything is
# created, with one line naming the path and the fix.
test_run_refuses_public_rootfs() {
	local pub out rc=0 name
	new_work
	pub="$WORK/pub"
	mkdir -m 0755 "$pub"
	mv "$WORK/rootfs" "$pub/rootfs"
	chmod 0755 "$WORK"
	name=$(pod_name pub)
	out=$(tp run --name "$name" --net none --rootfs "$pub/rootfs" -- echo pod-ran </dev/null 2>&1) || rc=$?
	echo "$out"
	assert_eq 125 "$rc" "exit code"
	assert_eq 1 "$(count_lines "$out")" "lines of output"
	assert_contains "$out" "rootfs $pub/rootfs is reachable by other host users"
	assert_contains "$out" "0700"
	assert_contains "$out" "--unsafe-public-rootfs"
	assert_not_contains "$out" pod-ran
	[ ! -e "/run/hermit/pods/$name" ] || fail "a refused pod left state"
	# a 0700 directory owned by another user is no protection from that user
	chmod 0700 "$pub"
	chown 65534 "$pub"
	rc=0
	out=$(tp run --net none --rootfs "$pub/rootfs" -- echo pod-ran </dev/null 2>&1) || rc=$?
	assert_eq 125 "$rc" "exit code with a nobody-owned 0700 parent"
	chown 0 "$pub"
	out=$(tp run --net none --rootfs "$pub/rootfs" -- echo pod-ran </dev/null 2>&1)
	assert_eq pod-ran "$out" "with a root-owned 0700 parent"
	# the opt-out runs it, and shows what it costs: nobody becomes root
	chmod 0755 "$pub"
	out=$(tp run --net none --unsafe-public-rootfs --rootfs "$pub/rootfs" -- sh -c \
		'chmod 4755 /tmp/id && echo pod-ran' </dev/null 2>&1)
	assert_eq pod-ran "$out" "with --unsafe-public-rootfs"
	out=$("${NOBODY[@]}" "$pub/rootfs/tmp/id" -u 2>&1) || true
	assert_eq 0 "$out" "nobody running the pod's setuid file from a public rootfs"
}

# The rootfs directory is the pod's /: a 0700 there is no protection, pod root chmods
# it open and plants a setuid file that host user nobody then runs as root. run must
# refuse such a rootfs (only a parent, out of the pod's reach, counts).
test_rootfs_dir_itself_does_not_count() {
	local pub out rc=0
	new_work
	pub="$WORK/rvpub"
	mkdir -m 0755 "$pub"
	chmod 0755 "$WORK"
	mv "$WORK/rootfs" "$pub/rootfs"
	chmod 0700 "$pub/rootfs"
	out=$(tp run --net none --rootfs "$pub/rootfs" -- /bin/sh -c \
		'chmod 755 / && cp /tmp/id /rvsuid && chmod 4755 /rvsuid && echo planted' \
		</dev/null 2>&1) || rc=$?
	echo "$out"
	assert_eq 125 "$rc" "exit code of run on a rootfs that is 0700 itself"
	assert_contains "$out" "rootfs $pub/rootfs is reachable by other host users"
	assert_not_contains "$out" planted
	[ ! -e "$pub/rootfs/rvsuid" ] || fail "the pod ran and planted $pub/rootfs/rvsuid"
	assert_eq 700 "$(stat -c %a "$pub/rootfs")" "mode of the rootfs directory"
	out=$("${NOBODY[@]}" "$pub/rootfs/tmp/id" -u 2>&1) && fail "nobody reached the rootfs: $out"
	assert_contains "$out" "Permission denied"
	# the same rootfs behind a root-owned 0700 parent runs, and the pod's chmod of / no
	# longer opens anything to nobody
	chmod 0700 "$pub"
	out=$(tp run --net none --rootfs "$pub/rootfs" -- /bin/sh -c \
		'chmod 755 / && cp /tmp/id /rvsuid && chmod 4755 /rvsuid && echo planted' </dev/null)
	assert_eq planted "$out"
	out=$("${NOBODY[@]}" "$pub/rootfs/rvsuid" -u 2>&1) && fail "nobody ran it: $out"
	assert_contains "$out" "Permission denied"
}

# trace-pod rootfs makes a missing parent 0700, and warns about an existing public one
test_rootfs_command_makes_private_parent() {
	local out
	new_work
	chmod 0755 "$WORK"
	tp rootfs "$WORK/new/sub/rootfs" >/dev/null
	assert_eq 700 "$(stat -c %a "$WORK/new")" "mode of the new parent"
	assert_eq 700 "$(stat -c %a "$WORK/new/sub")" "mode of the new parent's child"
	out=$(tp run --net none --rootfs "$WORK/new/sub/rootfs" -- echo fresh </dev/null)
	assert_eq fresh "$out"
	out=$(tp rootfs "$WORK/public-rootfs" 2>&1 >/dev/null)
	echo "$out"
	assert_contains "$out" "warning: rootfs $WORK/public-rootfs is reachable by other host users"
}

run_test setuid_from_pod_not_usable_on_host test_setuid_from_pod_not_usable_on_host
run_test run_refuses_public_rootfs test_run_refuses_public_rootfs
run_test rootfs_dir_itself_does_not_count test_rootfs_dir_itself_does_not_count
run_test rootfs_command_makes_private_parent test_rootfs_command_makes_private_parent
