#!/usr/bin/env bash
# trace-pod device policy: what root in a pod can do with device nodes. The pod's /dev
# is a fresh tmpfs with the standard nodes only, CAP_MKNOD is gone, and a cgroup policy
# (v1 devices controller and a v2 BPF_CGROUP_DEVICE program, both checked by the
# kernel) answers EPERM for every other device, even for a node made with
# --allow-mknod. Without the policy, opening these nodes as root succeeds or fails with
# ENXIO/ENODEV for an absent device, never with EPERM.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
# a private copy: the pods write into it
WORK=$(mktemp -d /tmp/hermit-devices-test.XXXXXX)
R="$WORK/rootfs"
cp -a "$TEST_ROOTFS" "$R"
trap 'rm -rf -- "$WORK"' EXIT

V1_DEVICES=/sys/fs/cgroup/devices
if [ -d /sys/fs/cgroup/unified ] && [ "$(stat -fc %T /sys/fs/cgroup/unified)" = cgroup2fs ]; then
	V2=/sys/fs/cgroup/unified
else
	V2=/sys/fs/cgroup
fi
# what a pod tries: mknod (when it can) then open, for a host device each
HOST_DEVICES='kvm:c:10:232 loop0:b:7:0 tty1:c:4:1 console:c:5:1 mem:c:1:1 sda:b:8:0'
TRY_HOST_DEVICES='
for d in '"$HOST_DEVICES"'; do
	IFS=: read -r name type major minor <<EOT
$d
EOT
	if mknod "/dev/hm-$name" "$type" "$major" "$minor" 2>/dev/null; then
		echo "mknod $name ok"
		# count=0: opened, never read (a tty would wait for input)
		dd if="/dev/hm-$name" of=/dev/null bs=1 count=0 2>"/dev/shm/err" && echo "open $name ok" ||
			echo "open $name: $(sed "s/.*: //" /dev/shm/err)"
	else
		echo "mknod $name denied"
	fi
done'

test_dev_is_the_standard_set() {
	local out
	out=$(tp run --net none --rootfs "$R" -- ls /dev </dev/null)
	assert_eq "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero" \
		"$(echo $out)" "ls /dev in the pod"
}

test_standard_nodes_work() {
	local out
	out=$(tp run --net none --rootfs "$R" -- sh -c '
		echo x >/dev/null && echo null-ok
		echo zero=$(head -c 16 /dev/zero | wc -c)
		echo urandom=$(head -c 16 /dev/urandom | wc -c)
		echo random=$(head -c 16 /dev/random | wc -c)
		echo x 2>/dev/null >/dev/full || echo full-is-full
		[ -c /dev/pts/ptmx ] && echo ptmx-ok' </dev/null)
	echo "$out"
	assert_eq "null-ok zero=16 urandom=16 random=16 full-is-full ptmx-ok" "$(echo $out)"
}

test_mknod_denied_by_default() {
	local out
	out=$(tp run --net none --rootfs "$R" -- sh -c '
		grep CapBnd /proc/self/status
		mknod /tmp/sda b 8 0 2>&1 || echo "exit $?"
		mknod /dev/null2 c 1 3 2>&1 || echo "exit $?"
		'"$TRY_HOST_DEVICES" </dev/null)
	echo "$out"
	assert_contains "$out" "mknod: /tmp/sda: Operation not permitted"
	assert_contains "$out" "mknod: /dev/null2: Operation not permitted"
	assert_not_contains "$out" "mknod kvm ok"
	assert_not_contains "$out" " ok" "any node made or opened"
	# CAP_MKNOD (bit 27) is not in the bounding set
	local bnd
	bnd=$(awk '/CapBnd/ {print $2}' <<<"$out")
	[ $((0x$bnd & (1 << 27))) -eq 0 ] || fail "CAP_MKNOD in the pod's bounding set: $bnd"
	[ ! -e "$R/tmp/sda" ] || fail "the pod made $R/tmp/sda"
}

# --allow-mknod: nodes can be made, but the cgroup policy refuses to open them
test_allow_mknod_cannot_open_host_devices() {
	local out d name
	out=$(tp run --net none --allow-mknod --rootfs "$R" -- sh -c "$TRY_HOST_DEVICES"'
		mknod /dev/null2 c 1 3 && echo x >/dev/null2 && echo null2-ok
		mknod /tmp/hm-null c 1 3 && { echo x >/tmp/hm-null && echo rootfs-node-opened; rm /tmp/hm-null; }
		' </dev/null 2>&1)
	echo "$out"
	for d in $HOST_DEVICES; do
		name=${d%%:*}
		assert_contains "$out" "mknod $name ok"
		assert_contains "$out" "open $name: Operation not permitted"
	done
	assert_contains "$out" "null2-ok" "an allowed device through a new node"
	# the rootfs is mounted nodev: a node left there is useless, whatever it is
	assert_contains "$out" "can't create /tmp/hm-null: Permission denied"
	assert_not_contains "$out" "rootfs-node-opened"
}

# The two policies hold one without the other: a detached pod, one of them switched off
# from the host side, the pod's root tries again. Also: the v2 program belongs to the
# cgroup (legacy attach), not to trace-pod, whose monitor holds no BPF fd.
test_each_cgroup_policy_alone() {
	local name mon out prog
	name=$(pod_name dev)
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --allow-mknod --rootfs "$R" -- sleep 1000 </dev/null >/dev/null
	wait_until 50 pod_status_is "$name" running
	mon=$(cat "/run/hermit/pods/$name/monitor_pid")
	if ls -l "/proc/$mon/fd" | grep -q 'bpf'; then
		fail "the monitor holds a BPF fd: $(ls -l /proc/$mon/fd)"
	fi
	bpftool cgroup show "$V2/hermit/$name" | tee /dev/stderr | grep -q hm_dev_policy ||
		fail "no hm_dev_policy program on $V2/hermit/$name"
	grep -qx 'c 1:3 rwm' "$V1_DEVICES/hermit/$name/devices.list" ||
		fail "v1 devices.list: $(cat "$V1_DEVICES/hermit/$name/devices.list")"
	assert_not_contains "$(cat "$V1_DEVICES/hermit/$name/devices.list")" "a *:*"

	# v2 alone: the v1 controller opened up for the pod
	echo a >"$V1_DEVICES/hermit/$name/devices.allow"
	out=$(tp exec "$name" -- sh -c "$TRY_HOST_DEVICES" 2>&1)
	echo "v2 alone: $out"
	assert_contains "$out" "mknod kvm ok"
	assert_contains "$out" "open kvm: Operation not permitted"
	assert_contains "$out" "open mem: Operation not permitted"

	# v1 alone: the v1 rules back, the v2 program detached
	echo a >"$V1_DEVICES/hermit/$name/devices.deny"
	echo 'c 1:3 rwm' >"$V1_DEVICES/hermit/$name/devices.allow"
	echo 'c *:* m' >"$V1_DEVICES/hermit/$name/devices.allow"
	echo 'b *:* m' >"$V1_DEVICES/hermit/$name/devices.allow"
	prog=$(bpftool -j cgroup show "$V2/hermit/$name" | python3 -c 'import json,sys; print([p["id"] for p in json.load(sys.stdin) if p["name"]=="hm_dev_policy"][0])')
	bpftool cgroup detach "$V2/hermit/$name" device id "$prog"
	! bpftool cgroup show "$V2/hermit/$name" | grep -q hm_dev_policy || fail "still attached"
	out=$(tp exec "$name" -- sh -c "rm -f /dev/hm-*; $TRY_HOST_DEVICES" 2>&1)
	echo "v1 alone: $out"
	assert_contains "$out" "mknod kvm ok"
	assert_contains "$out" "open kvm: Operation not permitted"
	assert_contains "$out" "open mem: Operation not permitted"

	# neither: the same opens get past the cgroup (a real device, or ENXIO/ENODEV),
	# which is what makes the EPERMs above the policy's
	echo a >"$V1_DEVICES/hermit/$name/devices.allow"
	out=$(tp exec "$name" -- sh -c "rm -f /dev/hm-*; $TRY_HOST_DEVICES" 2>&1)
	echo "no policy: $out"
	assert_not_contains "$out" "open loop0: Operation not permitted"
	assert_not_contains "$out" "open sda: Operation not permitted"
	tp rm -f "$name" >/dev/null
}

# exec'd commands get the pod's capabilities: no CAP_MKNOD unless the pod has it
test_exec_follows_the_pods_mknod() {
	local name out
	name=$(pod_name dex)
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --rootfs "$R" -- sleep 1000 </dev/null >/dev/null
	out=$(tp exec "$name" -- sh -c 'mknod /dev/hm-null c 1 3 2>&1; echo done' 2>&1)
	assert_contains "$out" "Operation not permitted"
	tp rm -f "$name" >/dev/null
}

# nosuid/nodev/noexec on what the pod does not need them for
test_mount_flags() {
	local out line
	out=$(tp run --net none --rootfs "$R" -- awk '{print $5, $6}' /proc/self/mountinfo </dev/null)
	echo "$out"
	flags() { awk -v m="$1" '$1 == m {print $2}' <<<"$out"; }
	assert_contains "$(flags /)" nodev "/"
	for m in /proc /sys /dev/shm /dev/mqueue /etc/hosts /etc/resolv.conf /etc/hostname; do
		line=$(flags "$m")
		for f in nosuid nodev noexec; do assert_contains "$line" "$f" "$m"; done
	done
	for f in nosuid noexec; do assert_contains "$(flags /dev)" "$f" "/dev"; done
	for f in nosuid noexec; do assert_contains "$(flags /dev/pts)" "$f" "/dev/pts"; done
	out=$(tp run --net none --rootfs "$R" -- sh -c \
		'cp /bin/busybox /dev/shm/bb; /dev/shm/bb true 2>&1; cp /bin/busybox /dev/bb; /dev/bb true 2>&1' </dev/null) || true
	echo "$out"
	assert_eq 2 "$(grep -c 'Permission denied' <<<"$out")" "exec from /dev/shm and /dev"
}

# The /etc/hosts-style files are binds of host files (/run/hermit/pods/NAME/...): the pod
# must not write them, or it could fill the host's /run. Root in the pod gets EROFS and
# the host files keep their size.
test_host_files_read_only() {
	local name out f before
	name=$(pod_name ro)
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --rootfs "$R" -- sleep 600 </dev/null >/dev/null
	before=$(cd "/run/hermit/pods/$name" && wc -c hosts resolv.conf hostname)
	out=$(tp exec "$name" -- sh -c 'for f in /etc/hosts /etc/resolv.conf /etc/hostname; do
		if echo 6.6.6.6 grown >>$f; then echo "$f written"; fi
		if dd if=/dev/zero of=$f bs=1k count=64 conv=notrunc 2>/dev/null; then
			echo "$f grown"; fi
	done' 2>&1 </dev/null) || true
	echo "$out"
	assert_not_contains "$out" written
	assert_not_contains "$out" grown
	for f in hosts resolv.conf hostname; do
		assert_contains "$out" "/etc/$f: Read-only file system" "writing /etc/$f"
	done
	assert_eq "$before" "$(cd "/run/hermit/pods/$name" && wc -c hosts resolv.conf hostname)" \
		"sizes of the host files"
	tp rm -f "$name" >/dev/null
}

run_test dev_is_the_standard_set test_dev_is_the_standard_set
run_test standard_nodes_work test_standard_nodes_work
run_test mknod_denied_by_default test_mknod_denied_by_default
run_test allow_mknod_cannot_open_host_devices test_allow_mknod_cannot_open_host_devices
run_test each_cgroup_policy_alone test_each_cgroup_policy_alone
run_test exec_follows_the_pods_mknod test_exec_follows_the_pods_mknod
run_test mount_flags test_mount_flags
run_test host_files_read_only test_host_files_read_only
