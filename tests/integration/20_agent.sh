#!/usr/bin/env bash
# trace-agent against real trace-pod pods, driven through the client library by
# tests/agent/agent_e2e: env, files (also 50 MiB, checksummed), directory listings,
# escapes out of the pod's root, target kinds, hostile peers, the target dying, the
# agent stopping (SIGTERM) and dying (SIGKILL).
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

WORK=$(mktemp -d /tmp/hermit-agent-test.XXXXXX)
chmod 0755 "$WORK"
WEB=$(pod_name web)
OTHER=$(pod_name other)
CGROUP_DIR=""
cleanup() {
	local f
	agent_stop "$WORK" main >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$WEB" "$OTHER"
	if [ -n "$CGROUP_DIR" ]; then
		find "$CGROUP_DIR" -depth -type d -exec rmdir {} \; 2>/dev/null
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the pods' root filesystem: a copy of the shared one with pod-only files ----
set -e # a broken setup fails the file, not every test with a puzzling message
# trace-pod runs only a rootfs other host users cannot reach: a 0700 directory holds it
mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
mkdir "$ROOTFS"
cp -a "$TEST_ROOTFS/." "$ROOTFS/"
mkdir -p "$ROOTFS/data/dir/sub"
echo "only in the pod $RANDOM$RANDOM" >"$ROOTFS/data/hello.txt"
printf 'a\0b\nc' >"$ROOTFS/data/binary"
: >"$ROOTFS/data/empty"
for i in $(seq 20); do echo "$i" >"$ROOTFS/data/dir/file$i"; done
ln -s file1 "$ROOTFS/data/dir/link"
mkfifo "$ROOTFS/data/dir/fifo"
head -c 50M /dev/urandom >"$ROOTFS/data/big.bin"
# a host-only secret next to the pod's root, and ways to try to reach it from inside
SECRET="$WORK/private/host-only/secret"
mkdir -p "$WORK/private/host-only"
echo "host secret $RANDOM" >"$SECRET"
ln -s "$SECRET" "$ROOTFS/data/escape-abs"
ln -s "../../../../../../../../../..$SECRET" "$ROOTFS/data/escape-rel"
ln -s "../../host-only/secret" "$ROOTFS/data/escape-sibling"
mkdir -p "$ROOTFS/data/hop"
ln -s "/.." "$ROOTFS/data/hop/up"

tp run -d --name "$WEB" --env FOO=bar --env HERMIT_AGENT_TEST=web --rootfs "$ROOTFS" \
	-- sleep 100000 </dev/null >/dev/null
tp run -d --name "$OTHER" --env FOO=other --rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
agent_start "$WORK" main
set +e

E() { e2e "$WORK" main "$@"; }

test_env() {
	local pid
	pid=$(pod_pid "$WEB")
	cp "/proc/$pid/environ" "$WORK/web.environ"
	tr '\0' '\n' <"$WORK/web.environ"
	E --target "pod/$WEB" env-equals "$WORK/web.environ"
	E --target "pod/$WEB" env-has FOO=bar
	# two pods, two sessions at once: each sees its own
	E --target "pod/$OTHER" env-has FOO=other &
	E --target "pod/$WEB" env-has HERMIT_AGENT_TEST=web
	wait $! || fail "the other pod's environment"
}

test_file_read() {
	E --target "pod/$WEB" read-equals /data/hello.txt "$ROOTFS/data/hello.txt"
	E --target "pod/$WEB" read-equals /data/binary "$ROOTFS/data/binary"
	E --target "pod/$WEB" read-equals /data/empty "$ROOTFS/data/empty"
	E --target "pod/$WEB" read-equals /data/dir/link "$ROOTFS/data/dir/file1"
	# pod-only: the host has no /data/hello.txt
	[ ! -e /data/hello.txt ] || fail "/data/hello.txt exists on the host too"
}

test_file_50mib() {
	E --target "pod/$WEB" read-crc /data/big.bin "$ROOTFS/data/big.bin"
	E --target "pod/$WEB" stream-token-once /data/big.bin
	E --target "pod/$WEB" stream-token-dies dropped /data/big.bin 200
	agent_start "$WORK" ttl --stream-ttl 300
	trap 'agent_stop "$WORK" ttl' EXIT
	e2e "$WORK" ttl --target "pod/$WEB" stream-token-dies expires /data/big.bin 1000
	grep -q 'expired unclaimed' "$WORK/ttl.log" || fail "expiry not logged"
}

test_readdir() {
	E --target "pod/$WEB" readdir-equals /data/dir "$ROOTFS/data/dir"
	E --target "pod/$WEB" readdir-equals / "$ROOTFS"
	E --target "pod/$WEB" readdir-equals /etc "$ROOTFS/etc"
}

test_file_write() {
	E --target "pod/$WEB" write-read /data/written.txt
	# it landed in the pod's root, nowhere else
	assert_contains "$(cat "$ROOTFS/data/written.txt")" "written through the agent"
}

test_escapes() {
	# the secret is there on the host...
	[ -f "$SECRET" ] || fail "host secret $SECRET missing"
	assert_contains "$(cat "$SECRET")" "host secret"
	# ...and a symlink resolved by the host would reach it
	assert_eq "$(cat "$SECRET")" "$(cat "$ROOTFS/data/escape-abs")" "host view of escape-abs"
	assert_eq "$(cat "$SECRET")" "$(cat "$ROOTFS/data/escape-sibling")" "host view of escape-sibling"
	local p
	for p in "/../../../../../../..$SECRET" "/../host-only/secret" /data/escape-abs \
		/data/escape-rel /data/escape-sibling "/data/hop/up/host-only/secret" \
		"/data/hop/up/../host-only/secret"; do
		E --target "pod/$WEB" read-denied "$p" "$SECRET"
	done
}

test_targets() {
	local pid
	pid=$(pod_pid "$WEB")
	E --target "pod/$WEB" session-pid "$pid"
	E --target "pid/$pid" session-pid "$pid"
	E --target "pid/$pid" env-has FOO=bar
	E --target pod/no-such-pod-here bad-target ENOENT
	E --target pid/999999999 bad-target EINVAL
	E --target pid/4194303 bad-target ESRCH
	E --target container/0123456789abcdef0123 bad-target ESRCH
	E --target container/abc bad-target EINVAL
	E --target container/zzzzzzzzzzzzzzzz bad-target EINVAL
	E --target "pod/.." bad-target EINVAL

	# container/ID: a process in a cgroup named like docker's and containerd's
	local id base
	id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
	for base in /sys/fs/cgroup/pids /sys/fs/cgroup/unified /sys/fs/cgroup; do
		[ -w "$base/cgroup.procs" ] && break
	done
	CGROUP_DIR="$base/hermit-agent-test-$$"
	mkdir -p "$CGROUP_DIR/docker/$id" "$CGROUP_DIR/kubepods/pod1/cri-containerd-${id%????}beef.scope"
	sleep 1000 &
	local sleeper=$!
	# shellcheck disable=SC2064
	trap "kill $sleeper 2>/dev/null || true; wait $sleeper 2>/dev/null || true
		find '$CGROUP_DIR' -depth -type d -exec rmdir {} \; 2>/dev/null || true" EXIT
	echo "$sleeper" >"$CGROUP_DIR/docker/$id/cgroup.procs"
	grep "$id" "/proc/$sleeper/cgroup"
	E --target "container/$id" session-pid "$sleeper"
	E --target "container/${id:0:12}" session-pid "$sleeper"
	E --target "container/${id^^}" session-pid "$sleeper"
	# containerd's scope naming
	echo "$sleeper" >"$CGROUP_DIR/kubepods/pod1/cri-containerd-${id%????}beef.scope/cgroup.procs"
	E --target "container/${id%????}beef" session-pid "$sleeper"
	# a prefix that is not a whole element does not match
	E --target "container/${id:1:20}" bad-target ESRCH
}

test_hostile_peers() {
	local kind
	for kind in wrong-token empty-token no-hello request-before-hello oversized-hello garbage \
		bad-stream-token oversized unknown-type reserved-type bad-flags malformed \
		trailing-bytes reply-type second-hello truncated; do
		E --target "pod/$WEB" reject "$kind" 4000
	done
	# rejections are logged with the peer
	grep -E 'conn [0-9]+ \(unix pid [0-9]+ uid 0\): rejected client .*wrong or missing auth token' \
		"$WORK/main.log" || fail "no log line for the wrong token"
	grep -q 'no hello within' "$WORK/main.log" || fail "no log line for the silent peer"
	grep -q 'over the limit' "$WORK/main.log" || fail "no log line for the oversized frame"
	kill -0 "$(agent_pid "$WORK" main)" || fail "the agent died"
}

test_sessions() {
	E --target "pod/$WEB" session-rules
	E --target "pod/$WEB" concurrent 16 /data/hello.txt
	# many clients at once, two targets
	local pids=() i
	for i in $(seq 20); do
		if ((i % 2)); then
			E --target "pod/$WEB" env-has FOO=bar >/dev/null &
		else
			E --target "pod/$OTHER" env-has FOO=other >/dev/null &
		fi
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || fail "a parallel session failed"; done
}

test_status() {
	local out
	rm -f "$WORK/hold"
	E --target "pod/$WEB" hold "$WORK/hold" &
	local holder=$!
	wait_until 100 test -f "$WORK/hold" || fail "holder did not start"
	out=$("$TRACE_AGENT" status --unix "$WORK/main.sock" --token-file "$WORK/token")
	echo "$out"
	rm -f "$WORK/hold"
	wait "$holder"
	grep -qE '^sessions +[1-9]' <<<"$out" || fail "status shows no session"
	grep -qE '^requests +[1-9]' <<<"$out" || fail "status shows no request"
	grep -qE '^errors +[0-9]' <<<"$out" || fail "status shows no error count"
	grep -qE '^to clients +[1-9]' <<<"$out" || fail "status shows no bytes"
	# a wrong token is refused by status too
	echo wrong >"$WORK/wrong-token"
	if "$TRACE_AGENT" status --unix "$WORK/main.sock" --token-file "$WORK/wrong-token" 2>"$WORK/err"; then
		fail "status with a wrong token succeeded"
	fi
	assert_contains "$(cat "$WORK/err")" "auth token"
}

test_tcp_listener() {
	local port out
	port=$((20000 + RANDOM % 20000))
	agent_start "$WORK" tcp --no-unix --listen "127.0.0.1:$port"
	trap 'agent_stop "$WORK" tcp' EXIT
	grep -q "listening on 127.0.0.1:$port" "$WORK/tcp.log" || fail "no TCP listener"
	[ ! -e "$WORK/tcp.sock" ] || fail "--no-unix made a socket"
	timeout 60 "$AGENT_E2E" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
		--target "pod/$WEB" env-has FOO=bar
	timeout 60 "$AGENT_E2E" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
		--target "pod/$WEB" read-crc /data/big.bin "$ROOTFS/data/big.bin"
	timeout 60 "$AGENT_E2E" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
		--target "pod/$WEB" reject wrong-token 4000
	grep -E "conn [0-9]+ \(127\.0\.0\.1:[0-9]+\): rejected client" "$WORK/tcp.log" ||
		fail "rejection over TCP not logged with the peer address"
}

test_target_killed() {
	local victim pid
	victim=$(pod_name victim)
	# shellcheck disable=SC2064
	trap "pod_cleanup '$victim'" EXIT
	tp run -d --name "$victim" --rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
	pid=$(pod_pid "$victim")
	rm -f "$WORK/ready"
	E --target "pod/$victim" session-ended ESRCH 20 "$WORK/ready" &
	local driver=$!
	wait_until 100 test -f "$WORK/ready" || fail "session did not open"
	kill -KILL "$pid"
	wait "$driver" || fail "the client did not get a clean end of session"
	grep -q "ended: target pod/$victim (pid $pid) exited" "$WORK/main.log" || fail "not logged"
	# a dead pod is not a target
	wait_until 50 sh -c "! kill -0 $pid 2>/dev/null"
	E --target "pod/$victim" bad-target ESRCH
	E ping
}

test_sigterm() {
	agent_start "$WORK" term
	local pid
	pid=$(agent_pid "$WORK" term)
	rm -f "$WORK/ready-term"
	e2e "$WORK" term --target "pod/$WEB" session-ended ESHUTDOWN 20 "$WORK/ready-term" &
	local driver=$!
	wait_until 100 test -f "$WORK/ready-term" || fail "session did not open"
	kill -TERM "$pid"
	wait "$driver" || fail "the client did not get SESSION_ENDED on shutdown"
	local rc=0
	wait "$pid" || rc=$?
	cat "$WORK/term.log"
	assert_eq 0 "$rc" "agent exit status after SIGTERM"
	[ ! -e "$WORK/term.sock" ] || fail "the unix socket was left behind"
	grep -q 'stopped$' "$WORK/term.log" || fail "no clean stop in the log"
	pod_status_is "$WEB" running || fail "pod $WEB stopped with the agent"
}

test_sigkill() {
	agent_start "$WORK" kill
	local pid
	pid=$(agent_pid "$WORK" kill)
	rm -f "$WORK/hold-kill"
	e2e "$WORK" kill --target "pod/$WEB" hold "$WORK/hold-kill" &
	local holder=$!
	wait_until 100 test -f "$WORK/hold-kill" || fail "session did not open"
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null || true
	rm -f "$WORK/hold-kill"
	wait "$holder" || true
	# the pod is unaffected
	pod_status_is "$WEB" running || fail "pod $WEB is not running after the agent's SIGKILL"
	assert_eq "alive" "$(tp exec "$WEB" -- echo alive </dev/null)" "exec in the pod"
	E --target "pod/$WEB" env-has FOO=bar
	# a new agent takes over the stale socket
	agent_start "$WORK" kill
	e2e "$WORK" kill --target "pod/$WEB" env-has FOO=bar
	grep -q 'removing stale socket' "$WORK/kill.log" || fail "stale socket not replaced"
	agent_stop "$WORK" kill
}

test_refuses_second_agent() {
	# a second agent on a live socket must not steal it
	if "$TRACE_AGENT" --unix "$WORK/main.sock" --token-file "$WORK/token" 2>"$WORK/second.log"; then
		fail "a second agent started on the same socket"
	fi
	assert_contains "$(cat "$WORK/second.log")" "another agent is listening"
	E ping
}

test_main_agent_stops() {
	local pid
	pid=$(agent_pid "$WORK" main)
	kill -TERM "$pid"
	wait_until 100 sh -c "! kill -0 $pid 2>/dev/null" || fail "the agent did not stop within 10 s"
	tail -5 "$WORK/main.log"
	grep -q 'stopped$' "$WORK/main.log" || fail "no clean stop in the log"
	[ ! -e "$WORK/main.sock" ] || fail "the unix socket was left behind"
	# under SAN=1: no memory error, leak or undefined behaviour in the whole run
	if grep -B2 -A30 -E 'Sanitizer|runtime error' "$WORK"/*.log; then
		fail "sanitizer report in an agent's log"
	fi
}

run_test "agent: env equals the pod's, per session" test_env
run_test "agent: pod-only files read intact" test_file_read
run_test "agent: 50 MiB file checksummed, stream token single-use" test_file_50mib
run_test "agent: directory listings match" test_readdir
run_test "agent: file written into the pod" test_file_write
run_test "agent: .., absolute and relative symlinks stay in the pod" test_escapes
run_test "agent: pod/, pid/ and container/ targets" test_targets
run_test "agent: hostile peers cut off, others served" test_hostile_peers
run_test "agent: session rules and concurrent sessions" test_sessions
run_test "agent: status" test_status
run_test "agent: TCP listener" test_tcp_listener
run_test "agent: target killed mid-session" test_target_killed
run_test "agent: SIGTERM ends sessions and cleans up" test_sigterm
run_test "agent: SIGKILL leaves the pod running" test_sigkill
run_test "agent: one agent per socket" test_refuses_second_agent
run_test "agent: clean shutdown after all of the above" test_main_agent_stops
