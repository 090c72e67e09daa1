#!/usr/bin/env bash
# Mirror mode through a real trace-agent: a pod runs an HTTP server (tests/apps/httpserve)
# and a TCP sink (tests/apps-c/tcp_sink); clients in another pod (busybox wget, the static
# Go httpbench, tcp_sink send) talk to it; subscribers (agent_e2e mirror, e2e_mirror.c)
# dump every copy the agent delivers. The pod's clients must still get the pod's answers,
# and the copies must be byte for byte what they sent — or end with ECONNRESET when the
# agent lost bytes, never with a hole.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

HTTPSERVE="$BUILD/apps/httpserve"
HTTPBENCH="$BUILD/apps/httpbench"
TCP_SINK="$BUILD/tests/tcp_sink"
for f in "$HTTPSERVE" "$HTTPBENCH" "$TCP_SINK" "$AGENT_E2E" "$TRACE_AGENT"; do
	[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/hermit-mirror-test.XXXXXX)
chmod 0755 "$WORK"
WEB=$(pod_name web) # the target: its clients' connections are mirrored
CLI=$(pod_name cli) # the clients
cleanup() {
	local f
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$WEB" "$CLI"
	[ -n "${HERMIT_TEST_KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
cp -a "$TEST_ROOTFS" "$ROOTFS"
for f in "$HTTPSERVE" "$HTTPBENCH" "$TCP_SINK"; do
	tp deploy "$f" --rootfs "$ROOTFS" >/dev/null
done

HTTP_PORT=8080
SINK_PORT=9000
tp run -d --init --name "$WEB" --rootfs "$ROOTFS" -- sh -c "
	tcp_sink serve -p $SINK_PORT &
	exec httpserve -listen :$HTTP_PORT" </dev/null >/dev/null
tp run -d --name "$CLI" --rootfs "$ROOTFS" -- sleep 1000000 </dev/null >/dev/null
wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>&1 | grep -q 'httpserve: listening'" ||
	fail "pod $WEB did not start httpserve: $("$TRACE_POD" logs "$WEB" 2>&1)"
wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>&1 | grep -q 'tcp_sink: listening'" ||
	fail "pod $WEB did not start tcp_sink: $("$TRACE_POD" logs "$WEB" 2>&1)"
wait_until 50 sh -c "[ -n \"\$('$TRACE_POD' ls --json | grep -F '\"$CLI\"')\" ]"
WEB_IP=$(pod_ip "$WEB")
WEB_PID=$(pod_pid "$WEB")
[ -n "$WEB_IP" ] && [ -n "$WEB_PID" ] || fail "pod $WEB has no IP or pid"
echo "pods: web $WEB_IP (pid $WEB_PID), clients in $CLI"

# ---- helpers ----

# mirror_start NAME PORT [AGENT [agent_e2e mirror options]]: a subscriber dumping copies
# into $WORK/NAME/ (N.data, N.end, N.addr), once subscribed; stopped when the test ends.
mirror_start() {
	local name="$1" port="$2" agent="${3:-main}"
	shift 3 || shift $#
	mkdir -p "$WORK/$name"
	rm -f "$WORK/sub-$name.ready"
	# not through e2e(): its timeout would be the pid killed, not the subscriber
	"$AGENT_E2E" --unix "$WORK/$agent.sock" --token-file "$WORK/token" --target "pod/$WEB" \
		mirror "$port" "$WORK/$name" --ready "$WORK/sub-$name.ready" "$@" \
		>"$WORK/sub-$name.out" 2>&1 &
	echo $! >"$WORK/sub-$name.pid"
	on_exit mirror_stop "$name"
	wait_until 100 test -s "$WORK/sub-$name.ready" ||
		fail "subscriber $name did not subscribe: $(cat "$WORK/sub-$name.out")"
}
mirror_stop() {
	[ -f "$WORK/sub-$1.pid" ] || return 0
	kill -TERM "$(cat "$WORK/sub-$1.pid")" 2>/dev/null || true
	wait "$(cat "$WORK/sub-$1.pid")" 2>/dev/null || true
	rm -f "$WORK/sub-$1.pid"
}
# ends_count NAME: copies of NAME that ended
ends_count() { find "$WORK/$1" -name '*.end' 2>/dev/null | wc -l; }
wait_ends() { # NAME N
	wait_until 300 sh -c "[ \$(find '$WORK/$1' -name '*.end' | wc -l) -ge $2 ]" ||
		fail "$1: $(ends_count "$1") of $2 copies ended; $(tail -3 "$WORK/sub-$1.out")"
}
in_pod() { tp exec "$CLI" -- "$@"; }
# hermit's mirror filters in the pod's netns, one "IF prio" line each
pod_mirror_filters() {
	local ifname
	for ifname in lo eth0; do
		nsenter -t "$WEB_PID" -n tc filter show dev "$ifname" ingress 2>/dev/null |
			grep -q 'hm_mirror' && echo "$ifname"
	done
	true
}
status_field() { # AGENT FIELD: a mirror counter of the agent's STATUS_REPLY
	e2e "$WORK" "$1" mirror-status | sed -n "s/.*\b$2 \([0-9]\+\).*/\1/p"
}

# check_http_copies NAME WGET_OUTPUT: every copy is one GET /echo?i=N request, whole,
# ended by the client's FIN, and says exactly what the pod's server saw of it (its
# /echo answer, from the same client address and port).
check_http_copies() {
	python3 - "$WORK/$1" "$2" <<'EOF'
import os, re, sys
d, answers = sys.argv[1], open(sys.argv[2]).read()
seen = {}
for block in answers.split("=== ")[1:]:
    i, _, body = block.partition("\n")
    kv = dict(l.split("=", 1) for l in body.splitlines() if "=" in l and not l.startswith("header "))
    hdrs = sorted(l[len("header "):] for l in body.splitlines() if l.startswith("header "))
    seen[kv["remote"]] = (i, kv, hdrs)
ok = 0
for f in sorted(os.listdir(d)):
    if not f.endswith(".end"):
        continue
    n = f[:-4]
    end = open(f"{d}/{n}.end").read().strip()
    addr = open(f"{d}/{n}.addr").read().strip()
    data = open(f"{d}/{n}.data", "rb").read()
    assert end == "0", f"copy {n} from {addr} ended {end!r}"
    assert addr in seen, f"copy {n}: no client answer from {addr}"
    i, kv, hdrs = seen[addr]
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep and rest == b"", f"copy {n}: not one whole request: {data[:200]!r}"
    lines = head.decode().split("\r\n")
    assert lines[0] == f"GET /echo?i={i} HTTP/1.1", f"copy {n}: request line {lines[0]!r}"
    assert kv["method"] == "GET" and kv["path"] == f"/echo?i={i}", kv
    names = {}
    for l in lines[1:]:
        name, _, value = l.partition(": ")
        if name.lower() == "host":
            assert value == kv["host"], (value, kv["host"])
            continue
        canon = "-".join(p.capitalize() for p in name.split("-"))
        names.setdefault(canon, []).append(value)
    mine = sorted(f"{k}: {v}" for k, vs in names.items() for v in vs)
    assert mine == hdrs, f"copy {n}: headers {mine} vs what the pod saw {hdrs}"
    ok += 1
print(f"{ok} copies match what the pod's server saw")
EOF
}

# check_pattern_copy FILE BYTES: tcp_sink's stream, byte i = f(i mod 1 MiB); with
# --prefix the file may be shorter (a copy reset after a loss) but never differs
check_pattern_copy() {
	python3 - "$@" <<'EOF'
import sys
path, size = sys.argv[1], int(sys.argv[2])
prefix = "--prefix" in sys.argv
data = open(path, "rb").read()
mib = bytes(((j * 7 + j // 4099) & 0xff) for j in range(1 << 20))
want = (mib * (size // len(mib) + 1))[:size]
if prefix:
    assert len(data) <= size and data == want[:len(data)], "the copy is not a prefix of what was sent"
    print(f"a true prefix: {len(data)} of {size} bytes")
else:
    assert len(data) == size, f"{len(data)} bytes, expected {size}"
    assert data == want, "the copy differs from what was sent"
    print(f"{size} bytes identical")
EOF
}

agent_start "$WORK" main

# ---- tests ----

test_sequential_requests() {
	mirror_start seq "$HTTP_PORT"
	[ "$(pod_mirror_filters | sort | tr '\n' ' ')" = "eth0 lo " ] ||
		fail "mirror filters in the pod: '$(pod_mirror_filters)'"
	in_pod sh -c "for i in \$(seq 200); do echo \"=== \$i\"; wget -q -O - 'http://$WEB_IP:$HTTP_PORT/echo?i='\$i || exit 1; done" \
		>"$WORK/seq.answers"
	# the clients got the pod's own answers
	assert_eq 200 "$(grep -c '^path=/echo?i=' "$WORK/seq.answers")" "pod answers"
	wait_ends seq 200
	check_http_copies seq "$WORK/seq.answers"
	mirror_stop seq
}

test_concurrent_go_clients() {
	mirror_start conc "$HTTP_PORT"
	local out
	out=$(in_pod httpbench -url "http://$WEB_IP:$HTTP_PORT/" -c 50 -n 50)
	echo "$out"
	assert_contains "$out" "requests=50 errors=0"
	# the connections close when httpbench exits: every copy ends soon
	wait_until 50 sh -c "[ \$(find '$WORK/conc' -name '*.end' | wc -l) -ge \$(find '$WORK/conc' -name '*.addr' | wc -l) ]"
	python3 - "$WORK/conc" "$WEB_IP:$HTTP_PORT" <<'EOF'
import os, sys
d, host = sys.argv[1], sys.argv[2]
want = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\r\n".encode()
ends = [f for f in os.listdir(d) if f.endswith(".end")]
requests, conns = 0, 0
for f in ends:
    n = f[:-4]
    assert open(f"{d}/{n}.end").read().strip() == "0", f"copy {n} did not end cleanly"
    data = open(f"{d}/{n}.data", "rb").read()
    # keep-alive: a connection carries one or more whole requests (or none: a spare
    # connection Go's transport dialed and did not use)
    k = len(data) // len(want)
    assert data == want * k, f"copy {n}: {data!r}"
    requests += k
    conns += k > 0
assert requests == 50, f"{requests} requests in the copies, 50 sent"
print(f"50 requests in {conns} connections, each copy exactly the Go client's bytes")
EOF
	mirror_stop conc
	# and 50 busybox clients at once, one connection each
	mirror_start conc_bb "$HTTP_PORT"
	in_pod sh -c "for i in \$(seq 50); do wget -q -O - 'http://$WEB_IP:$HTTP_PORT/echo?i='\$i >/tmp/conc.\$i & done; wait; for i in \$(seq 50); do echo \"=== \$i\"; cat /tmp/conc.\$i; done" \
		>"$WORK/conc_bb.answers"
	assert_eq 50 "$(grep -c '^path=/echo?i=' "$WORK/conc_bb.answers")" "pod answers"
	wait_ends conc_bb 50
	check_http_copies conc_bb "$WORK/conc_bb.answers"
	mirror_stop conc_bb
}

test_upload_10mib() {
	mirror_start up "$SINK_PORT"
	local out
	out=$(in_pod tcp_sink send "$WEB_IP:$SINK_PORT" 10M)
	echo "$out"
	assert_contains "$out" "sent 10485760"
	wait_ends up 1
	assert_eq 0 "$(cat "$WORK/up/1.end")" "end of the copy"
	check_pattern_copy "$WORK/up/1.data" 10485760
	mirror_stop up
}

test_two_sessions_each_a_copy() {
	mirror_start two_a "$HTTP_PORT"
	mirror_start two_b "$HTTP_PORT"
	in_pod wget -q -O - "http://$WEB_IP:$HTTP_PORT/echo?i=2" >"$WORK/two.answer"
	assert_contains "$(cat "$WORK/two.answer")" "path=/echo?i=2"
	wait_ends two_a 1
	wait_ends two_b 1
	assert_eq 0 "$(cat "$WORK/two_a/1.end")"
	assert_eq 0 "$(cat "$WORK/two_b/1.end")"
	cmp "$WORK/two_a/1.data" "$WORK/two_b/1.data" || fail "the two copies differ"
	head -1 "$WORK/two_a/1.data" | grep -q '^GET /echo?i=2 HTTP/1.1' || fail "not the request"
	# one session goes: the other keeps its copies
	mirror_stop two_a
	in_pod wget -q -O /dev/null "http://$WEB_IP:$HTTP_PORT/echo?i=3"
	wait_ends two_b 2
	assert_eq 1 "$(ends_count two_a)" "copies of the session that left"
	mirror_stop two_b
}

test_only_new_connections() {
	# a connection opened before the subscription sends its request after it
	in_pod sh -c "(sleep 3; printf 'GET /echo?i=old HTTP/1.0\r\n\r\n') | nc $WEB_IP $HTTP_PORT" \
		>"$WORK/old.answer" &
	local client=$!
	sleep 1
	mirror_start old "$HTTP_PORT"
	in_pod wget -q -O /dev/null "http://$WEB_IP:$HTTP_PORT/echo?i=new"
	wait "$client" || true
	assert_contains "$(cat "$WORK/old.answer")" "path=/echo?i=old" "the old connection's answer"
	wait_ends old 1
	sleep 1
	assert_eq 1 "$(ends_count old)" "copies"
	grep -q 'i=new' "$WORK/old/1.data" || fail "the copy is not the new connection's"
	mirror_stop old
}

test_detached_when_unsubscribed() {
	mirror_start det "$HTTP_PORT"
	[ -n "$(pod_mirror_filters)" ] || fail "no mirror filter while subscribed"
	mirror_stop det
	wait_until 50 sh -c "! nsenter -t $WEB_PID -n tc filter show dev eth0 ingress | grep -q hm_mirror" ||
		fail "the filter stayed after the session ended"
	assert_eq "" "$(pod_mirror_filters)" "filters left"
}

test_loss_resets_never_a_hole() {
	# a ring buffer too small for one 64 KiB segment: bytes are lost for sure
	# (main mirrors nothing now: one agent's filters at a time per pod)
	on_exit agent_stop "$WORK" small
	agent_start "$WORK" small --mirror-buffer 4k
	mirror_start loss "$SINK_PORT" small
	local out
	out=$(in_pod tcp_sink send "$WEB_IP:$SINK_PORT" 10M)
	assert_contains "$out" "sent 10485760" "the pod's client is not affected"
	wait_ends loss 1
	assert_eq ECONNRESET "$(cat "$WORK/loss/1.end")" "end of a copy that lost bytes"
	check_pattern_copy "$WORK/loss/1.data" 10485760 --prefix
	local lost status
	lost=$(status_field small mirror_lost)
	[ -n "$lost" ] && [ "$lost" -gt 0 ] || fail "the status's mirror_lost is '$lost'"
	# and where the operator looks, once trace-agent status prints the incoming counters
	status=$("$TRACE_AGENT" status --unix "$WORK/small.sock" --token-file "$WORK/token")
	echo "$status"
	if [[ "$status" == *mirror_lost* ]]; then
		[[ "$status" =~ mirror_lost[^0-9]*([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ] ||
			fail "trace-agent status: mirror_lost not counted"
	fi
	grep -q 'ring buffer full' "$WORK/small.log" || fail "no warning about the full ring buffer"
	mirror_stop loss
}

test_slow_subscriber_loses_only_its_copy() {
	on_exit agent_stop "$WORK" tight
	agent_start "$WORK" tight --mirror-copy-buffer 48M --mirror-buffer 256M
	mirror_start slow "$SINK_PORT" tight --stall-ms 3000
	mirror_start fast "$SINK_PORT" tight
	local out
	out=$(in_pod tcp_sink send "$WEB_IP:$SINK_PORT" 64M)
	assert_contains "$out" "sent 67108864" "the pod's client is not affected"
	wait_ends fast 1
	wait_ends slow 1
	assert_eq 0 "$(cat "$WORK/fast/1.end")" "the reading subscriber's copy"
	check_pattern_copy "$WORK/fast/1.data" 67108864
	assert_eq ECONNRESET "$(cat "$WORK/slow/1.end")" "the stalled subscriber's copy"
	check_pattern_copy "$WORK/slow/1.data" 67108864 --prefix
	grep -q 'fell .* behind: reset' "$WORK/tight.log" || fail "no log of the reset copy"
	[ "$(status_field tight mirror_lost)" = 1 ] || fail "mirror_lost: $(status_field tight mirror_lost)"
	[ "$(status_field tight mirrored)" = 1 ] || fail "mirrored: $(status_field tight mirrored)"
}

test_kill9_filters_removed_by_next_agent() {
	agent_start "$WORK" doomed
	on_exit agent_stop "$WORK" doomed
	on_exit agent_stop "$WORK" next
	mirror_start doomed "$HTTP_PORT" doomed
	[ "$(pod_mirror_filters | wc -l)" = 2 ] || fail "filters: '$(pod_mirror_filters)'"
	kill -KILL "$(agent_pid "$WORK" doomed)"
	wait "$(agent_pid "$WORK" doomed)" 2>/dev/null || true
	# tc filters outlive their process: this is what the next agent must clean
	[ "$(pod_mirror_filters | wc -l)" = 2 ] || fail "the killed agent's filters vanished by themselves?"
	mirror_stop doomed
	agent_start "$WORK" next
	assert_eq "" "$(pod_mirror_filters)" "filters after the next agent started"
	grep -q 'removed stale hermit tc filter hm_mirror' "$WORK/next.log" ||
		fail "the next agent did not say it removed them: $(grep -i stale "$WORK/next.log")"
	# and the pod serves as before
	in_pod wget -q -O - "http://$WEB_IP:$HTTP_PORT/" | grep -q 'hello from httpserve' ||
		fail "the pod does not answer"
}

# Each mirrored network namespace has a ring buffer (32 MiB of kernel memory by
# default): one peer (uid 0 here) mirroring a port in namespace after namespace (a
# non-root one may make as many as it likes with `unshare -rn`) is refused past 8.
test_mirrored_netns_per_peer() {
	local pids=() i out
	for i in $(seq 9); do
		unshare -n sleep 300 </dev/null >/dev/null 2>&1 &
		pids+=($!)
		echo $! >"$WORK/netns-$i.pid"
	done
	for i in "${pids[@]}"; do
		wait_until 50 sh -c "[ \"\$(readlink /proc/$i/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]"
	done
	out=$(e2e "$WORK" main mirror-netns 8080 8 EUSERS "${pids[@]}")
	echo "$out"
	assert_contains "$out" "this peer (uid 0) mirrors 8 network namespaces, the limit is 8"
	kill "${pids[@]}" 2>/dev/null
	wait "${pids[@]}" 2>/dev/null || true
	assert_contains "$(e2e "$WORK" main --target "pod/$WEB" incoming-status)" "subscriptions 0 "
}

# The mirror engine's one thread offers every new connection to its sessions: one
# that stopped reading its control connection (its events fill the socket) held that
# thread up to 30 s per event, the ring buffers of every mirrored namespace filled
# meanwhile and other sessions' copies were lost or late. Now an event waits 200 ms.
test_stalled_session_holds_no_one() {
	rm -f "$WORK/stall.ready"
	timeout 120 "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token" \
		--target "pod/$WEB" mirror-stall "$SINK_PORT" "$WORK/stall.ready" 60 \
		>"$WORK/stall.out" 2>&1 &
	echo $! >"$WORK/stall.pid"
	wait_until 100 test -s "$WORK/stall.ready" || fail "no stalled subscriber: $(cat "$WORK/stall.out")"
	mirror_start victim "$HTTP_PORT"
	# a thousand connections to the stalled session's port: its events fill its socket
	python3 - "$WEB_IP" "$SINK_PORT" <<'PY'
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
socks = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) for _ in range(1000)]
for s in socks:
    s.close()
PY
	in_pod wget -q -O /dev/null "http://$WEB_IP:$HTTP_PORT/" || fail "the pod does not answer"
	wait_until 50 sh -c "[ \$(find '$WORK/victim' -name '*.end' | wc -l) -ge 1 ]" ||
		fail "the other session's copy did not come within 5 s: $(tail -3 "$WORK/sub-victim.out")"
	assert_eq 0 "$(cat "$WORK"/victim/*.end | head -1)" "the other session's copy ended"
	kill "$(cat "$WORK/stall.pid")" 2>/dev/null || true
	wait "$(cat "$WORK/stall.pid")" 2>/dev/null || true
	mirror_stop victim
}

# budget_streams AGENT FIELD: the agent's streams budget, FIELD used or refused
budget_streams() {
	"$TRACE_AGENT" status --unix "$WORK/$1.sock" --token-file "$WORK/token" |
		awk -v f="$2" '$1 == "streams" && NF == 5 {print (f == "used" ? $2 : $5)}'
}
streams_used_is() { [ "$(budget_streams "$1" used)" = "$2" ]; } # AGENT N

# A claimed copy is a socket the agent holds for its session until the copy ends: it
# counts against the session's stream budget (--max-session-streams) for all that time,
# not only until the claim (then one session mirroring busy ports made the agent hold
# 4096 x 64 sockets). 20 connections held open by the pod's clients (opened one by one,
# each claimed before the next comes), a budget of 8: the session gets 8 copies, the
# others are refused (mirror_lost); another session still gets its copies; the count
# returns to 0 when the copies end.
test_claimed_copies_count() {
	on_exit agent_stop "$WORK" capped
	agent_start "$WORK" capped --max-session-streams 8
	mirror_start hog "$SINK_PORT" capped
	rm -f "$WORK/hold.ready"
	touch "$WORK/hold.go"
	python3 - "$WEB_IP" "$SINK_PORT" "$WORK/hold.ready" "$WORK/hold.go" <<'PY' &
import os, socket, sys, time
socks = []
for i in range(20):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"copy %d\n" % i)
    socks.append(s)
    time.sleep(0.2)  # one at a time: each copy is claimed before the next is offered
open(sys.argv[3], "w").write("20\n")
while os.path.exists(sys.argv[4]):
    time.sleep(0.1)
for s in socks:
    s.close()
PY
	local holder=$!
	echo "$holder" >"$WORK/holder.pid"
	wait_until 100 test -s "$WORK/hold.ready" || fail "the pod's clients did not connect"
	sleep 2 # every offer has been made by now (a copy is offered at its SYN)
	local copies used refused lost
	copies=$(find "$WORK/hog" -name '*.addr' | wc -l)
	used=$(budget_streams capped used)
	refused=$(budget_streams capped refused)
	lost=$(status_field capped mirror_lost)
	echo "20 connections held: $copies copies, streams used $used, refused $refused, mirror_lost $lost"
	assert_eq 8 "$copies" "copies the session holds with a budget of 8 streams"
	assert_eq 8 "$used" "streams counted while the copies are open"
	[ "$refused" -ge 12 ] && [ "$lost" -ge 12 ] ||
		fail "the 12 connections over the budget were not refused ($refused) and counted lost ($lost)"
	grep -q 'not offered to subscription .*--max-session-streams' "$WORK/capped.log" ||
		fail "no warning naming the limit: $(grep 'not offered' "$WORK/capped.log")"
	# another session has its own budget: its copy comes, whole
	mirror_start legit "$HTTP_PORT" capped
	in_pod wget -q -O - "http://$WEB_IP:$HTTP_PORT/echo?i=legit" >/dev/null ||
		fail "the pod does not answer"
	wait_ends legit 1
	assert_eq 0 "$(cat "$WORK/legit/1.end")" "the other session's copy"
	grep -q 'i=legit' "$WORK/legit/1.data" || fail "the other session's copy is not the request"
	# the clients close: the copies end and give their streams back
	rm -f "$WORK/hold.go"
	wait "$holder"
	wait_ends hog 8
	wait_until 50 streams_used_is capped 0 ||
		fail "streams still counted after the copies ended: $(budget_streams capped used)"
	# and the session gets copies again
	in_pod tcp_sink send "$WEB_IP:$SINK_PORT" 1K >/dev/null || fail "tcp_sink send after the flood"
	wait_ends hog 9
	mirror_stop hog
	mirror_stop legit
	assert_eq 0 "$(budget_streams capped used)" "streams after the sessions ended"
}

run_test "mirror: 200 sequential wget requests copied whole, pod answers" test_sequential_requests
run_test "mirror: 50 concurrent Go client connections" test_concurrent_go_clients
run_test "mirror: 10 MiB upload arrives complete" test_upload_10mib
run_test "mirror: two sessions on one port each get a copy" test_two_sessions_each_a_copy
run_test "mirror: only connections that start after the subscription" test_only_new_connections
run_test "mirror: filters detached when the session ends" test_detached_when_unsubscribed
run_test "mirror: lost bytes reset the copy, never a hole; status counts it" test_loss_resets_never_a_hole
run_test "mirror: a slow subscriber's copy is reset, the other goes on" test_slow_subscriber_loses_only_its_copy
run_test "mirror: kill -9 of the agent, the next one removes its filters" test_kill9_filters_removed_by_next_agent
run_test "mirror: network namespaces mirrored at once are limited per peer" test_mirrored_netns_per_peer
run_test "mirror: a session that stopped reading delays no other session's copies" test_stalled_session_holds_no_one
run_test "mirror: claimed copies count against the session's stream budget" test_claimed_copies_count

agent_stop "$WORK" main
