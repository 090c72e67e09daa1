#!/usr/bin/env bash
# The node side as in a cluster: the target is a containerd container (Debian's
# containerd, started by this test, tests/kube/containerd_lib.sh) created as a kubelet
# creates one (hex ID, io.kubernetes.* labels, /kubepods/.../ID cgroup, a CNI network
# namespace), described by the test API server as pod shop/ctr-web with container ID
# containerd://ID. trace-run resolves it through the API, asks the agent (reached by
# port-forward) for container/ID, and the agent finds the container's process by the
# cgroup scan of /proc a DaemonSet agent with hostPID does: env, files and an outgoing
# connection all come from the container.
# With --containerd-state (the DaemonSet's default: the host's runc v2 task directory)
# the agent takes the container's pid from containerd's task state first, and serves it
# only if that pid is in the container's cgroup: agents "cagent" (this containerd's task
# state) and "fagent" (a forged task state) show both; "kagent" has no task state for
# this containerd and resolves by the cgroup scan.
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
CTRD_TASKS="$CTRD_DIR/state/io.containerd.runtime.v2.task"
CTR_PID=$(cat "$CTRD_TASKS/k8s.io/$CTR_ID/init.pid")
[ -n "$CTR_PID" ] || fail "no init.pid in $CTRD_TASKS/k8s.io/$CTR_ID"
agent_start "$KWORK" cagent --containerd-state "$CTRD_TASKS"
on_exit agent_stop "$KWORK" cagent
# the forged task state: whoever could write it names pids of their choosing
FORGED="$KWORK/forged-tasks"
mkdir -p "$FORGED/k8s.io"
sleep 1000000 </dev/null >/dev/null 2>&1 &
HOST_SLEEP=$!
on_exit kill "$HOST_SLEEP"
agent_start "$KWORK" fagent --containerd-state "$FORGED"
on_exit agent_stop "$KWORK" fagent
set +e
echo "container $CTR_ID at $CTR_IP, pid $CTR_PID" >&2

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

# forge DIR ID TEXT: DIR/k8s.io/ID/init.pid holds TEXT
forge() {
	mkdir -p "$FORGED/k8s.io/$1"
	printf '%s' "$2" >"$FORGED/k8s.io/$1/init.pid"
}

test_resolved_by_task_state() {
	e2e "$KWORK" cagent --target "container/$CTR_ID" session-pid "$CTR_PID"
	grep "container/$CTR_ID: pid $CTR_PID from containerd's task state (namespace k8s.io)" \
		"$KWORK/cagent.log" || fail "not resolved by the task state: $(tail -5 "$KWORK/cagent.log")"
	! grep -q "container/$CTR_ID: .*cgroup scan" "$KWORK/cagent.log" ||
		fail "cagent scanned /proc although the task state had the container"
	# the whole id only: an abbreviation is no task directory, the scan finds it
	e2e "$KWORK" cagent --target "container/${CTR_ID:0:12}" session-pid "$CTR_PID"
	grep "container/${CTR_ID:0:12}: pid $CTR_PID by a cgroup scan of /proc" "$KWORK/cagent.log"
}

test_no_task_state_scans() {
	# kagent: the default task directory, which is not this containerd's
	e2e "$KWORK" kagent --target "container/$CTR_ID" session-pid "$CTR_PID"
	grep "container/$CTR_ID: pid $CTR_PID by a cgroup scan of /proc" "$KWORK/kagent.log" ||
		fail "kagent did not resolve by the cgroup scan: $(tail -5 "$KWORK/kagent.log")"
	! grep -q "container/$CTR_ID: .*from containerd's task state" "$KWORK/kagent.log" ||
		fail "kagent used a task state"
}

test_forged_init_pid() {
	# the container's ID, but init.pid names a process of the host: refused, and the
	# cgroup scan finds the real one
	kill -0 "$HOST_SLEEP"
	forge "$CTR_ID" "$HOST_SLEEP"
	e2e "$KWORK" fagent --target "container/$CTR_ID" session-pid "$CTR_PID"
	grep "container/$CTR_ID: containerd's task state (namespace k8s.io) names pid $HOST_SLEEP, which is not a live process in a cgroup of the container; falling back" \
		"$KWORK/fagent.log" || fail "forged pid not refused: $(tail -5 "$KWORK/fagent.log")"
	grep "container/$CTR_ID: pid $CTR_PID by a cgroup scan of /proc" "$KWORK/fagent.log"
	! grep -q "pid $HOST_SLEEP from containerd's task state\|(pid $HOST_SLEEP) resolved" \
		"$KWORK/fagent.log" || fail "the host's sleep was served"

	# an ID no container has: the task state points it at the host's sleep, and at the
	# real container's process; both refused, and nothing else is found
	local ghost ghost2
	ghost=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	ghost2=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	forge "$ghost" "$HOST_SLEEP"
	forge "$ghost2" "$CTR_PID"
	e2e "$KWORK" fagent --target "container/$ghost" bad-target ESRCH
	e2e "$KWORK" fagent --target "container/$ghost2" bad-target ESRCH
	grep "container/$ghost2: containerd's task state (namespace k8s.io) names pid $CTR_PID, which is not" \
		"$KWORK/fagent.log"
	grep "target container/$ghost2: no process in a cgroup of container $ghost2" "$KWORK/fagent.log"

	# a symlinked init.pid, and one that is no number: not followed, not parsed
	mkdir -p "$FORGED/k8s.io/$ghost.l"
	echo "$CTR_PID" >"$KWORK/host-pidfile"
	ln -sfn "$KWORK/host-pidfile" "$FORGED/k8s.io/$ghost.l/init.pid"
	# ids a client may name a task by, but the cgroup scan needs hex: a clear EINVAL
	e2e "$KWORK" fagent --target "container/$ghost.l" bad-target EINVAL
	grep "container/$ghost.l: containerd's task state: k8s.io/$ghost.l/init.pid: Too many levels of symbolic links; falling back" \
		"$KWORK/fagent.log"
	forge "$ghost.x" "$CTR_PID; rm -rf /"
	e2e "$KWORK" fagent --target "container/$ghost.x" bad-target EINVAL
	grep "container/$ghost.x: containerd's task state: k8s.io/$ghost.x/init.pid: not a pid" \
		"$KWORK/fagent.log"
	! grep -q "target container/$ghost[^ ]* (pid [0-9]*) resolved\|session [0-9]* opened on container/$ghost" "$KWORK/fagent.log" ||
		fail "a forged task was served"
}

test_hostile_ids() {
	# from a client: refused before any path is made (the protocol's own check, then
	# the agent's, tests/unit/test_agent_target.c)
	local id out rc
	for id in "../../etc" "a/b" ".." "k8s.io/$CTR_ID"; do
		e2e "$KWORK" cagent --target "container/$id" bad-target EINVAL
	done
	# from the API server: a pod whose status carries a hostile container ID
	python3 - "$KWORK/scenario.json" <<'PY'
import json, sys
sc = json.load(open(sys.argv[1]))
for name, cid in (("evil-dots", "containerd://../../etc"), ("evil-slash", "containerd://a/b")):
    sc["pods"].append({"namespace": "shop", "name": name, "node": "node-a", "ip": "10.214.255.8",
                       "containers": [{"name": "app", "id": cid}]})
json.dump(sc, open(sys.argv[1] + ".new", "w"))
PY
	mv "$KWORK/scenario.json.new" "$KWORK/scenario.json"
	for id in evil-dots evil-slash; do
		rc=0
		out=$(krun --target "pod/$id" -- true 2>&1) || rc=$?
		echo "exit $rc: $out"
		[ "$rc" -ne 0 ] || fail "pod/$id ran"
		assert_contains "$out" "is not hexadecimal"
	done
	! grep -q "etc\|a/b" <(grep "container/" "$KWORK/kagent.log") ||
		fail "a hostile id reached the agent's resolution"
}

# ~500 processes on the node. The scan reads the cgroup file of every process with a
# pid below the best match so far: for the first container (started before them) it
# stops early; for one started after them it reads them all, as for containers that
# start late on a busy node. The task state reads one small file either way.
median_us() { # LOG ID PID WAY: median of the last 7 "... in N us" lines
	grep -o "container/$2: pid $3 $4.* in [0-9]* us" "$1" | tail -7 |
		sed 's/.* in \([0-9]*\) us$/\1/' | sort -n | sed -n 4p
}

test_resolution_time() {
	local i pids=() late_id late_pid id pid ts scan
	for i in $(seq 500); do
		sleep 600 </dev/null >/dev/null 2>&1 &
		pids+=($!)
	done
	read -r late_id _ < <(ctr_pod shop ctr-late app "$CTR_ROOTFS")
	late_pid=$(cat "$CTRD_TASKS/k8s.io/$late_id/init.pid")
	echo "processes: $(ls -d /proc/[0-9]* | wc -l); container pids $CTR_PID (early), $late_pid (late)"
	for id in "$CTR_ID" "$late_id"; do
		pid=$(cat "$CTRD_TASKS/k8s.io/$id/init.pid")
		for i in 1 2 3 4 5 6 7; do
			e2e "$KWORK" cagent --target "container/$id" session-pid "$pid" >/dev/null
			e2e "$KWORK" kagent --target "container/$id" session-pid "$pid" >/dev/null
		done
		ts=$(median_us "$KWORK/cagent.log" "$id" "$pid" "from containerd's task state")
		scan=$(median_us "$KWORK/kagent.log" "$id" "$pid" "by a cgroup scan")
		echo "RESOLVE container/${id:0:12} (pid $pid), median of 7: task state $ts us, cgroup scan of /proc $scan us"
		[ -n "$ts" ] && [ -n "$scan" ] || fail "no timings in the logs"
	done
	kill "${pids[@]}"
	wait "${pids[@]}" 2>/dev/null || true
}

run_test "kube containerd: env and files of a containerd container by its ID" test_env_and_files
run_test "kube containerd: outgoing TCP from the container's CNI network namespace" test_outgoing_from_container_netns
run_test "kube containerd: a container ID the node does not run" test_not_a_container
run_test "kube containerd: container/ID through containerd's task state" test_resolved_by_task_state
run_test "kube containerd: no task state for the container: the cgroup scan" test_no_task_state_scans
run_test "kube containerd: a forged init.pid is refused by the cgroup check" test_forged_init_pid
run_test "kube containerd: hostile container IDs are refused" test_hostile_ids
run_test "kube containerd: resolution time, task state vs cgroup scan" test_resolution_time
