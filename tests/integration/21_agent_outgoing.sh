#!/usr/bin/env bash
# Outgoing traffic through a real trace-agent: TCP and UDP leave from the target pod's
# network namespace. Servers run in pods (tests/apps-c/echo_server, dns_responder,
# deployed into the rootfs); the client is tests/agent/agent_e2e (e2e_outgoing.c).
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

ECHO_SERVER="$BUILD/tests/echo_server"
DNS_RESPONDER="$BUILD/tests/dns_responder"
for f in "$ECHO_SERVER" "$DNS_RESPONDER" "$AGENT_E2E" "$TRACE_AGENT"; do
	[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/hermit-outgoing-test.XXXXXX)
chmod 0755 "$WORK"
SRC=$(pod_name src) # the target: what the app's traffic must look like it comes from
SRV=$(pod_name srv) # a TCP echo server in another pod
DNS=$(pod_name dns) # a DNS resolver in another pod
cleanup() {
	local f
	agent_stop "$WORK" main >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$SRC" "$SRV" "$DNS"
	rm -rf "$WORK"
}
trap cleanup EXIT

# trace-pod runs only a rootfs other host users cannot reach: a 0700 directory holds it
mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
cp -a "$TEST_ROOTFS" "$ROOTFS"
tp deploy "$ECHO_SERVER" --rootfs "$ROOTFS" >/dev/null
tp deploy "$DNS_RESPONDER" --rootfs "$ROOTFS" >/dev/null

ECHO_PORT=7000
LOOP_PORT=$((20000 + RANDOM % 20000)) # only on the target pod's loopback
LOOP_DNS_PORT=5353
NAME=web.hermit.test
NAME_V4=10.99.0.7
NAME_V6=fd00:99::7

tp run -d --name "$SRV" --rootfs "$ROOTFS" -- echo_server -p "$ECHO_PORT" </dev/null >/dev/null
tp run -d --name "$DNS" --rootfs "$ROOTFS" -- \
	dns_responder -p 53 "$NAME=$NAME_V4" "$NAME=$NAME_V6" </dev/null >/dev/null
# the target serves on its own loopback only: reachable from inside the pod, nowhere else
tp run -d --init --name "$SRC" --rootfs "$ROOTFS" -- sh -c "
	dns_responder -p $LOOP_DNS_PORT -b ::1 loop.hermit.test=fd00::53 &
	exec echo_server -p $LOOP_PORT -b 127.0.0.1 -b ::1" </dev/null >/dev/null

pod_logs() { "$TRACE_POD" logs "$1" 2>/dev/null; }
for p in "$SRV" "$DNS" "$SRC"; do
	wait_until 100 sh -c "'$TRACE_POD' logs '$p' 2>/dev/null | grep -q 'listening'" ||
		fail "pod $p did not start its server: $(pod_logs "$p")"
done
wait_until 100 sh -c "'$TRACE_POD' logs '$SRC' 2>/dev/null | grep -q 'dns_responder: listening'" ||
	fail "pod $SRC did not start its resolver: $(pod_logs "$SRC")"
SRC_IP=$(pod_ip "$SRC")
SRV_IP=$(pod_ip "$SRV")
DNS_IP=$(pod_ip "$DNS")
echo "pods: target $SRC_IP, echo server $SRV_IP, resolver $DNS_IP"
[ -n "$SRC_IP" ] && [ -n "$SRV_IP" ] && [ -n "$DNS_IP" ] || fail "a pod has no IP"

agent_start "$WORK" main
AGENT_PID=$(agent_pid "$WORK" main)

E() { e2e "$WORK" main --target "pod/$SRC" "$@"; }

agent_fds() { ls "/proc/$AGENT_PID/fd" | wc -l; }
agent_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$AGENT_PID/status"; }

test_tcp_to_other_pod() {
	local out local_addr
	out=$(E tcp-echo "$SRV_IP:$ECHO_PORT" 1M "$SRC_IP")
	echo "$out"
	local_addr=$(sed -n 's/^local //p' <<<"$out")
	[ -n "$local_addr" ] || fail "no local address reported"
	# the server saw the target pod's address and the very port the agent reported
	wait_until 50 sh -c "'$TRACE_POD' logs '$SRV' | grep -qF 'accept $local_addr on $SRV_IP:$ECHO_PORT'" ||
		fail "server log has no 'accept $local_addr': $(pod_logs "$SRV" | tail -5)"
	assert_not_contains "$(pod_logs "$SRV")" "accept 10.213.0.1:" "a peer from the host's bridge address"
}

test_tcp_pod_loopback() {
	# a server bound to the target pod's 127.0.0.1 and ::1 is reached through the agent...
	E tcp-echo "127.0.0.1:$LOOP_PORT" 256k 127.0.0.1
	E tcp-echo "[::1]:$LOOP_PORT" 256k ::1
	# ...while the host's own loopback has nothing on that port
	if timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$LOOP_PORT" 2>/dev/null; then
		fail "something listens on the host's 127.0.0.1:$LOOP_PORT: the check proves nothing"
	fi
}

test_tcp_200_parallel() {
	local fds_before fds_after out
	fds_before=$(agent_fds)
	# through the relay (the TCP agent's path; here the hand-off turned off)...
	E --no-handoff tcp-parallel "$SRV_IP:$ECHO_PORT" 200 256k
	# ...and handed off: the client holds the pod's sockets, the agent nothing
	out=$(E tcp-parallel "$SRV_IP:$ECHO_PORT" 200 256k)
	echo "$out"
	assert_contains "$out" "(0 relayed, 200 handed off)" "hand-off on the unix socket"
	# everything those 200 connections held is released; the relay may keep up to 32
	# idle pipes (64 fds) for reuse
	wait_until 50 sh -c "[ \$(ls /proc/$AGENT_PID/fd | wc -l) -le $((fds_before + 64)) ]" ||
		fail "agent fds: $fds_before before, $(agent_fds) after 200 connections"
}

test_tcp_errors() {
	E tcp-connect-fails "$SRV_IP:$((ECHO_PORT + 1))" ECONNREFUSED
	E tcp-connect-fails "127.0.0.1:1" ECONNREFUSED
	# an address on the pods' subnet that nobody has: no answer within the timeout
	E tcp-connect-fails "10.213.255.254:80" ETIMEDOUT 500
}

test_dns() {
	E dns-query "$DNS_IP:53" "$NAME" "$NAME_V4"
	E dns-query "$DNS_IP:53" "$NAME" "$NAME_V6"
	E dns-query "$DNS_IP:53" nothing.hermit.test NXDOMAIN
	# the resolver saw the queries come from the target pod
	wait_until 50 sh -c "'$TRACE_POD' logs '$DNS' | grep -qE '^query $NAME A -> $NAME_V4 from $SRC_IP:[0-9]+\$'" ||
		fail "resolver log: $(pod_logs "$DNS" | tail -5)"
	# a resolver on the pod's own IPv6 loopback
	E dns-query "[::1]:$LOOP_DNS_PORT" loop.hermit.test fd00::53
}

test_memory_200_connections() {
	local idle held
	idle=$(agent_rss_kib)
	rm -f "$WORK/hold"
	# relayed connections are what costs the agent memory; handed-off ones cost nothing
	E --no-handoff tcp-hold "$SRV_IP:$ECHO_PORT" 200 "$WORK/hold" &
	local holder=$!
	wait_until 300 test -f "$WORK/hold" || fail "the connections did not open"
	held=$(agent_rss_kib)
	local streams
	streams=$("$TRACE_AGENT" status --unix "$WORK/main.sock" --token-file "$WORK/token" |
		awk '/^streams/ {print $2}')
	rm -f "$WORK/hold"
	wait "$holder" || fail "held connections stopped echoing"
	echo "agent RSS: idle ${idle} KiB, with 200 open connections ${held} KiB; status streams: $streams"
	[ "${streams:-0}" -ge 200 ] || fail "status shows $streams streams with 200 open"
	# AddressSanitizer's shadow memory and quarantine are no part of the agent's cost
	if ! ldd "$TRACE_AGENT" 2>/dev/null | grep -q libasan; then
		[ "$held" -lt $((16 * 1024)) ] || fail "agent RSS ${held} KiB with 200 connections (goal < 16 MiB)"
	fi
	[ $((held - idle)) -lt $((4 * 1024)) ] ||
		fail "200 connections cost $((held - idle)) KiB of agent RSS"
}

test_agent_stops_clean() {
	kill -0 "$AGENT_PID" || fail "the agent died"
	kill -TERM "$AGENT_PID"
	wait_until 100 sh -c "! kill -0 $AGENT_PID 2>/dev/null" || fail "the agent did not stop within 10 s"
	grep -q 'stopped$' "$WORK/main.log" || fail "no clean stop in the log: $(tail -5 "$WORK/main.log")"
	# under SAN=1: no memory error, leak or undefined behaviour in the relay's streams
	if grep -B2 -A30 -E 'Sanitizer|runtime error' "$WORK/main.log"; then
		fail "sanitizer report in the agent's log"
	fi
}

run_test "outgoing: TCP to a server in another pod, peer is the target pod's IP" test_tcp_to_other_pod
run_test "outgoing: TCP to the target pod's own loopback, IPv4 and IPv6" test_tcp_pod_loopback
run_test "outgoing: 200 parallel connections, checksummed" test_tcp_200_parallel
run_test "outgoing: refused and timed-out connects carry the pod's errno" test_tcp_errors
run_test "outgoing: DNS over UDP to a resolver pod, real source address" test_dns
run_test "outgoing: agent memory with 200 open connections" test_memory_200_connections
run_test "outgoing: the agent stops cleanly after all of the above" test_agent_stops_clean
