# shellcheck shell=bash
# A node's container runtime for the kube tests: Debian's containerd, started with its
# own config, socket, root and state under CTRD_DIR (the host's containerd, if any, is
# not touched), and "pods" that are containerd containers as a kubelet makes them:
# a 64-hex container ID, the labels io.kubernetes.pod.name / .pod.namespace /
# .container.name, a cgroup under /kubepods/besteffort/pod<UID>/<ID> (the cgroupfs
# driver's layout), and a network namespace the CNI bridge plugin (Debian's
# containernetworking-plugins) wired to bridge CTRD_BRIDGE. The agent finds them by
# container ID as on a node. containerd_down (registered with on_exit) removes all of
# it: tasks, containers, CNI, netns, the cgroups, the daemon and its state.
CTRD_DIR=""
CTRD_BRIDGE="hk$$"
CTRD_SUBNET="10.214.$((RANDOM % 250)).0/24"

ctr_() { timeout 30 ctr -a "$CTRD_DIR/containerd.sock" -n k8s.io "$@"; }

containerd_up() {
	[ -z "$CTRD_DIR" ] || return 0
	command -v containerd >/dev/null && [ -x /usr/lib/cni/bridge ] ||
		fail "containerd or the CNI plugins are missing (scripts/deps.sh)"
	CTRD_DIR=$(mktemp -d /tmp/hermit-ctrd.XXXXXX)
	on_exit containerd_down "$CTRD_DIR" "$CTRD_BRIDGE" "$BASHPID"
	cat >"$CTRD_DIR/config.toml" <<TOML
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_DIR/containerd.sock"
TOML
	containerd --config "$CTRD_DIR/config.toml" </dev/null >"$CTRD_DIR/containerd.log" 2>&1 &
	echo $! >"$CTRD_DIR/containerd.pid"
	wait_until 100 ctr_ version || { tail "$CTRD_DIR/containerd.log" >&2; fail "containerd did not start"; }
	cat >"$CTRD_DIR/cni.json" <<JSON
{"cniVersion": "1.0.0", "name": "hermit-test", "type": "bridge", "bridge": "$CTRD_BRIDGE",
 "isGateway": true, "ipMasq": false,
 "ipam": {"type": "host-local", "subnet": "$CTRD_SUBNET", "dataDir": "$CTRD_DIR/ipam",
          "routes": [{"dst": "0.0.0.0/0"}]}}
JSON
}

cni_() { # ADD|DEL ID NETNS
	CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS="/var/run/netns/$3" CNI_IFNAME=eth0 \
		CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge <"$CTRD_DIR/cni.json"
}

# ctr_pod NAMESPACE POD CONTAINER ROOTFS [ctr run flags...]: a running container; prints
# "ID IP" (ID without the containerd:// the pod status would show)
ctr_pod() {
	local ns="$1" pod="$2" container="$3" rootfs="$4" id netns uid ip
	shift 4
	id=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	uid=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
	netns="hkn-${id:0:12}"
	ip netns add "$netns"
	echo "$id $netns $uid" >>"$CTRD_DIR/pods"
	ip=$(cni_ ADD "$id" "$netns" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])') ||
		fail "CNI ADD for $pod failed"
	ctr_ run -d --rootfs --cgroup "/kubepods/besteffort/pod$uid/$id" \
		--with-ns "network:/var/run/netns/$netns" \
		--label "io.kubernetes.pod.name=$pod" --label "io.kubernetes.pod.namespace=$ns" \
		--label "io.kubernetes.container.name=$container" "$@" "$rootfs" "$id" \
		/bin/sleep 1000000 >/dev/null || fail "ctr run $pod failed"
	echo "$id $ip"
}

containerd_down() { # DIR BRIDGE OWNER
	local dir="$1" bridge="$2" id netns uid
	[ "$3" = "$BASHPID" ] && [ -d "$dir" ] || return 0
	if [ -f "$dir/pods" ]; then
		while read -r id netns uid; do
			timeout 10 ctr -a "$dir/containerd.sock" -n k8s.io task kill -s KILL "$id" >/dev/null 2>&1
			timeout 10 ctr -a "$dir/containerd.sock" -n k8s.io task rm -f "$id" >/dev/null 2>&1
			timeout 10 ctr -a "$dir/containerd.sock" -n k8s.io container rm "$id" >/dev/null 2>&1
			CNI_COMMAND=DEL CNI_CONTAINERID="$id" CNI_NETNS="/var/run/netns/$netns" CNI_IFNAME=eth0 \
				CNI_PATH=/usr/lib/cni /usr/lib/cni/bridge <"$dir/cni.json" >/dev/null 2>&1
			ip netns del "$netns" 2>/dev/null
			find /sys/fs/cgroup -depth -type d -path "*/kubepods/besteffort/pod$uid" -exec rmdir {} \; 2>/dev/null
		done <"$dir/pods"
		# the parents, only when no one else's pods are under them
		find /sys/fs/cgroup -depth -type d \( -path '*/kubepods/besteffort' -o -path '*/kubepods' \) \
			-exec rmdir {} \; 2>/dev/null
	fi
	if [ -f "$dir/containerd.pid" ]; then
		local pid
		pid=$(cat "$dir/containerd.pid")
		kill -TERM "$pid" 2>/dev/null
		wait_until 100 sh -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null
	fi
	ip link del "$bridge" 2>/dev/null
	grep -o " $dir/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
	case "$dir" in /tmp/hermit-ctrd.?*) rm -rf -- "$dir" ;; esac
	true
}
