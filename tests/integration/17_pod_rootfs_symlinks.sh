#!/usr/bin/env bash
# A pod owns its rootfs and may replace any entry with a symlink to a host path. The
# operator's later `trace-pod rootfs` (repair), `trace-pod deploy` and `trace-pod run`
# must then resolve every path inside the rootfs, as the pod would see it, and never
# write, chmod or mount anything outside it.
source "$(dirname "$0")/../lib.sh"

# snapshot DIR: every entry's path, type, mode, size and link target, and every regular
# file's checksum, so "unchanged" means byte-for-byte and mode-for-mode.
snapshot() {
	(
		cd "$1"
		find . -printf '%p %y %m %s %l\n' | sort
		find . -type f -exec sha256sum {} + | sort
	)
}

# A fresh rootfs in $1/rootfs and a host directory $1/host that the pod's links aim at:
# a passwd copy, a 0600 secret, a bin/ with a "busybox" and a usr/ tree.
make_scene() {
	local t="$1"
	tp rootfs "$t/rootfs" >/dev/null
	mkdir -p "$t/host/etc" "$t/host/bin" "$t/host/usr/bin" "$t/host/secret-dir"
	printf 'root:x:0:0:host-root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n' >"$t/host/etc/passwd"
	chmod 0644 "$t/host/etc/passwd"
	printf 'top secret\n' >"$t/host/secret"
	chmod 0600 "$t/host/secret"
	chmod 0700 "$t/host/secret-dir"
	printf 'host busybox\n' >"$t/host/bin/busybox"
	chmod 0755 "$t/host/bin/busybox"
	snapshot "$t/host" >"$t/host.before"
}

assert_host_unchanged() { # T
	local diff
	diff=$(diff "$1/host.before" <(snapshot "$1/host")) ||
		fail "host files outside the rootfs changed:
$diff"
}

# run_expect_refusal WHAT CMD...: CMD must fail with 125 and name a symlink.
run_expect_refusal() {
	local what="$1" rc=0 out
	shift
	out=$("$@" 2>&1 </dev/null) || rc=$?
	echo "$what: exit $rc: $out"
	assert_eq 125 "$rc" "exit code of $what"
	assert_contains "$out" "symlink" "message of $what"
}

# /etc -> a host directory with a passwd copy: the repair must not overwrite it.
test_rootfs_etc_to_host() {
	local t
	t=$(mktemp -d)
	on_exit rm -rf -- "$t"
	make_scene "$t"
	rm -rf "$t/rootfs/etc"
	ln -s "$t/host/etc" "$t/rootfs/etc"
	run_expect_refusal "rootfs with /etc -> host" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
	# a relative link climbing out with .. is held at the rootfs too
	rm "$t/rootfs/etc"
	ln -s "../../../../../../../../..$t/host/etc" "$t/rootfs/etc"
	run_expect_refusal "rootfs with /etc -> ../../host" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
}

# /tmp -> a 0600 host file or a 0700 host directory: the repair must not chmod it 1777.
test_rootfs_tmp_to_host() {
	local t
	t=$(mktemp -d)
	on_exit rm -rf -- "$t"
	make_scene "$t"
	rmdir "$t/rootfs/tmp"
	ln -s "$t/host/secret" "$t/rootfs/tmp"
	run_expect_refusal "rootfs with /tmp -> host file" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
	rm "$t/rootfs/tmp"
	ln -s "$t/host/secret-dir" "$t/rootfs/tmp"
	run_expect_refusal "rootfs with /tmp -> host dir" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
	assert_eq 600 "$(stat -c %a "$t/host/secret")" "mode of the host secret"
	assert_eq 700 "$(stat -c %a "$t/host/secret-dir")" "mode of the host directory"
}

# /bin and /usr -> host directories: no busybox copy, no applet links land there, and
# deploy does not install into the host's bin.
test_rootfs_bin_usr_to_host() {
	local t
	t=$(mktemp -d)
	on_exit rm -rf -- "$t"
	make_scene "$t"
	rm -rf "$t/rootfs/usr"
	ln -s "$t/host/usr" "$t/rootfs/usr"
	run_expect_refusal "rootfs with /usr -> host" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
	rm "$t/rootfs/usr"
	mkdir -p "$t/rootfs/usr"
	rm -rf "$t/rootfs/bin"
	ln -s "$t/host/bin" "$t/rootfs/bin"
	run_expect_refusal "rootfs with /bin -> host" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
	printf 'deployed\n' >"$t/busybox"
	run_expect_refusal "deploy with /bin -> host" tp deploy "$t/busybox" --rootfs "$t/rootfs"
	assert_host_unchanged "$t"
}

# A link in a deeper directory the repair writes into (var/tmp, etc/passwd's own name).
test_rootfs_deeper_links() {
	local t out
	t=$(mktemp -d)
	on_exit rm -rf -- "$t"
	make_scene "$t"
	# /etc/passwd itself -> the host copy: replaced by trace-pod's passwd inside the
	# rootfs (a rename over the link), never written through
	rm "$t/rootfs/etc/passwd"
	ln -s "$t/host/etc/passwd" "$t/rootfs/etc/passwd"
	rmdir "$t/rootfs/var/tmp"
	ln -s "$t/host/secret-dir" "$t/rootfs/var/tmp"
	run_expect_refusal "rootfs with /var/tmp -> host" tp rootfs "$t/rootfs"
	assert_host_unchanged "$t"
	rm "$t/rootfs/var/tmp"
	tp rootfs "$t/rootfs" >/dev/null
	assert_host_unchanged "$t"
	[ -f "$t/rootfs/etc/passwd" ] && [ ! -L "$t/rootfs/etc/passwd" ] ||
		fail "etc/passwd was not restored as a file inside the rootfs"
	out=$(cat "$t/rootfs/etc/passwd")
	assert_contains "$out" "nobody:x:65534" "restored passwd"
	assert_eq 1777 "$(stat -c %a "$t/rootfs/var/tmp")" "mode of the recreated var/tmp"
}

# Links that stay inside the rootfs are followed as the pod sees them: an absolute /etc
# link to /pod-etc (a directory of the rootfs) gets the repair's files there.
test_rootfs_links_inside_are_followed() {
	local t
	t=$(mktemp -d)
	on_exit rm -rf -- "$t"
	make_scene "$t"
	mv "$t/rootfs/etc" "$t/rootfs/pod-etc"
	rm "$t/rootfs/pod-etc/passwd"
	ln -s /pod-etc "$t/rootfs/etc"
	tp rootfs "$t/rootfs" >/dev/null
	assert_host_unchanged "$t"
	[ -L "$t/rootfs/etc" ] || fail "the pod's /etc link was replaced"
	assert_contains "$(cat "$t/rootfs/pod-etc/passwd")" "nobody:x:65534" "passwd written through the in-rootfs link"
	tp run --net none --rootfs "$t/rootfs" -- cat /etc/passwd </dev/null | grep -q nobody ||
		fail "pod does not see the repaired passwd"
}

# /etc/hosts (a bind-mount target at run) -> a host file or through /proc magic links:
# the pod's own hosts file is mounted inside the pod, never over a host path.
test_run_hosts_link() {
	local t rc out name
	t=$(mktemp -d)
	on_exit rm -rf -- "$t"
	make_scene "$t"
	cp "$t/host/etc/passwd" "$t/host/hosts"
	snapshot "$t/host" >"$t/host.before"
	rm -f "$t/rootfs/etc/hosts"
	ln -s "$t/host/hosts" "$t/rootfs/etc/hosts"
	name=$(pod_name hosts)
	rc=0
	out=$(tp run --name "$name" --net none --rootfs "$t/rootfs" -- cat /etc/hosts 2>&1 </dev/null) || rc=$?
	echo "run with /etc/hosts -> host file: exit $rc: $out"
	assert_host_unchanged "$t"
	grep -q "^$t" /proc/self/mountinfo && fail "a mount appeared on the host under $t"
	assert_eq 125 "$rc" "exit code with a dangling /etc/hosts link"
	assert_contains "$out" "/etc/hosts" "message"
	# the same link whose target exists inside the rootfs: the pod gets its hosts there
	mkdir -p "$t/rootfs/$t/host"
	: >"$t/rootfs/$t/host/hosts"
	out=$(tp run --name "$name" --net none --rootfs "$t/rootfs" -- cat /etc/hosts 2>&1 </dev/null)
	assert_contains "$out" "localhost" "hosts seen by the pod"
	assert_host_unchanged "$t"
	assert_eq "" "$(cat "$t/rootfs/$t/host/hosts")" "in-rootfs hosts file after the pod (a mount, not a write)"
	# magic links of the pod's setup process
	rm "$t/rootfs/etc/hosts"
	ln -s /proc/self/fd/0 "$t/rootfs/etc/hosts"
	rc=0
	out=$(tp run --name "$name" --net none --rootfs "$t/rootfs" -- cat /etc/hosts 2>&1 </dev/null) || rc=$?
	echo "run with /etc/hosts -> /proc/self/fd/0: exit $rc: $out"
	assert_eq 125 "$rc" "exit code with /etc/hosts -> /proc/self/fd/0"
	assert_host_unchanged "$t"
}

run_test rootfs_etc_to_host test_rootfs_etc_to_host
run_test rootfs_tmp_to_host test_rootfs_tmp_to_host
run_test rootfs_bin_usr_to_host test_rootfs_bin_usr_to_host
run_test rootfs_deeper_links test_rootfs_deeper_links
run_test rootfs_links_inside_are_followed test_rootfs_links_inside_are_followed
run_test run_hosts_link test_run_hosts_link
