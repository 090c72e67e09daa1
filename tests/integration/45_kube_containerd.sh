#!/usr/bin/env bash
# The node side as in a cluster: the target is a containerd container (Debian's
# containerd, started by this test, tests/kube/containerd_lib.sh) created as a kubelet
# creates one (hex ID, io.kubernetes.* labels, /kubepods/.../ID cgroup, a CNI network
# namespace), described by the test API server as pod shop/ctr-web with container ID
# containerd://ID. trace-run resolves it through the API, asks the agent (reached by
# port-forward) for container/ID, and the agent finds the container's process by the
# cgroup scan of /proc a DaemonSet agent with hostPID does: env, files and an outgoing
# connection all come from the container.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"
source "$HERMIT_ROOT/tests/kube/kube_lib.sh"
source "$HERMIT_ROOT/tests/kube/containerd_lib.sh"
set -e
kube_up
containerd_up
CTR_ROOTFS="$CTRD_DIR/private/rootfs"
mkdir -m 0700 "$CTRD_DIR/private"
cp -a "$TEST_ROOTFS" "$CTR_ROOTFS"
mkdir -p "$CTR_ROOTFS/srv/ctr"
echo "this file exists only in the containerd container" >"$CTR_ROOTFS/srv/ctr/message.txt"
read -r CTR_ID CTR_IP < <(ctr_pod shop ctr-web app "$CTR_ROOTFS" --env GREETING=from-containerd)
[ -n "$CTR_IP" ] || fail "no container"
python3 - "$KWORK/scenario.json" "$CTR_ID" "$CTR_IP" <<'PY'
import json, sys
path, cid, ip = sys.argv[1:]
sc = json.load(open(path))
sc["pods"].append({"namespace": "shop", "name": "ctr-web", "node": "node-a", "ip": ip,
                   "containers": [{"name": "app", "id": "containerd://" + cid}]})
json.dump(sc, open(path + ".new", "w"))
PY
mv "$KWORK/scenario.json.new" "$KWORK/scenario.json"
set +e
echo "container $CTR_ID at $CTR_IP" >&2

test_env_and_files() {
	local out
	out=$(krun --target pod/ctr-web -- /bin/sh -c 'echo "$GREETING"; cat /srv/ctr/message.txt')
	echo "$out"
	assert_eq "$(printf 'from-containerd\nthis file exists only in the containerd container')" "$out"
	grep -q "session 1 on container/$CTR_ID\|on container/$CTR_ID" "$KWORK/kagent.log" ||
		fail "the agent did not serve container/$CTR_ID: $(tail -3 "$KWORK/kagent.log")"
	# the host has neither
	[ ! -e /srv/ctr/message.txt ] || fail "the host has /srv/ctr"
}

test_outgoing_from_container_netns() {
	# a server on the bridge's gateway (the host side) reports the peer it saw: the
	# container's address, not the host's
	local gw port out
	gw=$(python3 -c 'import ipaddress,sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$CTRD_SUBNET")
	port=$(kube_free_port)
	python3 - "$gw" "$port" >"$CTRD_DIR/peer.txt" <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(30)
c, peer = s.accept()
c.sendall(("peer=%s\n" % peer[0]).encode())
c.close()
print(peer[0], flush=True)
PY
	local srv=$!
	wait_until 50 sh -c "ss -ltn | grep -q ':$port '"
	out=$(krun --target pod/ctr-web -- python3 -c "import socket; print(socket.create_connection(('$gw', $port), timeout=10).recv(100).decode().strip())")
	wait "$srv"
	echo "$out"
	assert_eq "peer=$CTR_IP" "$out" "the connection left from the container's network namespace"
}

test_not_a_container() {
	# a pod whose containerd ID names no container on this node: the agent's own error
	python3 - "$KWORK/scenario.json" <<'PY'
import json, sys
sc = json.load(open(sys.argv[1]))
sc["pods"].append({"namespace": "shop", "name": "ghost", "node": "node-a", "ip": "10.214.255.9",
                   "containers": [{"name": "app", "id": "containerd://" + "0f" * 32}]})
json.dump(sc, open(sys.argv[1] + ".new", "w"))
PY
	mv "$KWORK/scenario.json.new" "$KWORK/scenario.json"
	local out rc=0
	out=$(krun --target pod/ghost -- true 2>&1) || rc=$?
	echo "exit $rc: $out"
	assert_eq 123 "$rc"
	assert_contains "$out" "target pod/ghost:"
}

run_test "kube containerd: env and files of a containerd container by its ID" test_env_and_files
run_test "kube containerd: outgoing TCP from the container's CNI network namespace" test_outgoing_from_container_netns
run_test "kube containerd: a container ID the node does not run" test_not_a_container
