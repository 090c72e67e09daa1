#!/usr/bin/env bash
# Stealing a pod's incoming connections through a real trace-agent: an sk_lookup program
# in the pod's netns hands new connections to the agent, which gives them to the
# subscribed session (tests/agent/agent_e2e `steal`, e2e_incoming.c). The pod runs a
# real server (tests/apps/httpserve, tests/apps-c/echo_server); real clients (busybox
# wget, nc) run in another pod.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/agent/incoming_pods.sh"
incoming_pods_start steal web cli

# get: one HTTP GET from the client pod (busybox wget); prints the body or "ERR".
# (busybox wget -T crashes in this static build: the timeout applet bounds it)
get() { tp exec "$CLI" -- timeout 5 wget -q -O - "http://$WEB_IP:$HTTP_PORT/" 2>/dev/null </dev/null || echo ERR; }

# answer_is TEXT: the next GET gets TEXT
answer_is() { [ "$(get)" = "$1" ]; }

# steal_bg NAME ARGS...: agent_e2e steal in the background; waits for its subscription.
steal_bg() {
	local name="$1"
	shift
	rm -f "$WORK/$name.ready"
	# timeout passes our signals on to agent_e2e: killing $! ends the session
	timeout 300 "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token" \
		--target "pod/$WEB" steal "$@" --ready "$WORK/$name.ready" >"$WORK/$name.out" 2>&1 &
	echo $! >"$WORK/$name.pid"
	wait_until 100 test -f "$WORK/$name.ready" ||
		fail "steal $name did not subscribe: $(cat "$WORK/$name.out")"
}
steal_pid() { cat "$WORK/$1.pid"; }

# our objects in the pod's netns: BPF links attached to it (sk_lookup), and whatever
# `bpftool net` lists there (tc, xdp, flow dissector, and sk_lookup in newer bpftools)
ours_in_pod() {
	local pid ino
	pid=$(pod_pid "$WEB")
	ino=$(stat -L -c %i "/proc/$pid/ns/net")
	bpftool link show 2>/dev/null | grep -w "netns_ino $ino" || true
	nsenter -t "$pid" -n bpftool net show 2>/dev/null | grep -E 'hm_|sk_lookup.*id' || true
}

agent_start "$WORK" main

test_pod_answers_before() {
	assert_eq "pod-answer" "$(get)" "the pod's own server before any steal"
	[ -z "$(ours_in_pod)" ] || fail "BPF objects before any steal: $(ours_in_pod)"
}

test_steal_http() {
	steal_bg s1 "$HTTP_PORT" --http stolen-answer
	local got
	got=$(get)
	assert_eq "stolen-answer" "$got" "a client of the pod while stolen"
	got=$(get)
	assert_eq "stolen-answer" "$got" "a second client"
	local out
	out=$(cat "$WORK/s1.out")
	# the session saw the real client (the other pod) and the pod address it dialed
	assert_contains "$out" "from $CLI_IP:" "the client address delivered"
	assert_contains "$out" "to $WEB_IP:$HTTP_PORT" "the server address delivered"
	[ -n "$(ours_in_pod)" ] || fail "no sk_lookup program attached while stealing"
	out=$(E incoming-status)
	assert_contains "$out" "subscriptions 1 " "status while stealing"
	kill -TERM "$(steal_pid s1)"
	wait "$(steal_pid s1)" 2>/dev/null || true
	# the session ended: the pod answers again and nothing of ours stays
	wait_until 20 answer_is pod-answer ||
		fail "the pod does not answer after the session ended: $(get)"
	wait_until 20 test -z "$(ours_in_pod)" || fail "left behind: $(ours_in_pod)"
}

# stop_steal NAME: end that session (its agent_e2e exits, the connection closes)
stop_steal() {
	kill -TERM "$(steal_pid "$1")" 2>/dev/null || true
	wait "$(steal_pid "$1")" 2>/dev/null || true
}
session_of() { sed -n 's/^session //p' "$WORK/$1.out"; }

test_status_counts() {
	local out
		# the STATUS_REPLY's counters (trace-agent status prints them through the client
	# library, i-trace's)
	out=$(E incoming-status)
	echo "$out"
	assert_contains "$out" "subscriptions 0 " "the agent's status"
	awk '{ for (i = 1; i < NF; i++) if ($i == "stolen" && $(i + 1) >= 2) found = 1 }
		END { exit !found }' <<<"$out" || fail "the stolen connections are not counted"
}

# unsubscribing (the session stays open) gives the port back
test_unsubscribe_gives_back() {
	steal_bg s2 "$HTTP_PORT" --http stolen-once --max 1 --unsubscribe --linger 30
	assert_eq "stolen-once" "$(get)" "the first client"
	wait_until 50 grep -q '^unsubscribed' "$WORK/s2.out" || fail "no unsubscribe: $(cat "$WORK/s2.out")"
	assert_eq "pod-answer" "$(get)" "a client after the unsubscribe, session still open"
	[ -z "$(ours_in_pod)" ] || fail "left behind after unsubscribe: $(ours_in_pod)"
	stop_steal s2
}

# a second unfiltered steal of the port is refused, naming who holds it; with
# on_concurrent_steal=continue it waits and takes over when the holder goes
test_second_steal() {
	steal_bg holder "$HTTP_PORT" --http holder-answer
	local sid out
	sid=$(session_of holder)
	[ -n "$sid" ] || fail "no session id: $(cat "$WORK/holder.out")"
	out=$(E subscribe "$HTTP_PORT" steal EADDRINUSE "stolen by session $sid (unix pid")
	echo "$out"
	assert_contains "$out" "pod/$WEB" "the refusal names the target"
	assert_eq "holder-answer" "$(get)" "the holder keeps the port after a refused steal"
	steal_bg waiter "$HTTP_PORT" --http waiter-answer --concurrent
	assert_contains "$(cat "$WORK/waiter.out")" "note: port $HTTP_PORT of pod/$WEB" "the waiter's note"
	assert_contains "$(cat "$WORK/waiter.out")" "takes over when that one ends" "the waiter's note"
	assert_eq "holder-answer" "$(get)" "the holder keeps the port while another waits"
	stop_steal holder
	assert_eq "waiter-answer" "$(get)" "the waiter took over"
	stop_steal waiter
	wait_until 20 answer_is pod-answer || fail "the pod does not answer after both ended: $(get)"
}

# kill -9 of the agent while stealing: the link dies with the process's fds
test_agent_killed() {
	steal_bg k "$HTTP_PORT" --http stolen-k
	assert_eq "stolen-k" "$(get)" "stolen before the kill"
	[ -n "$(ours_in_pod)" ] || fail "no sk_lookup link while stealing"
	local prog
	prog=$(sed -n 's/.*stealing port .* (sk_lookup program id \([0-9]*\)).*/\1/p' "$WORK/main.log" | tail -1)
	[ -n "$prog" ] && bpftool prog show id "$prog" >/dev/null || fail "no program id in the agent's log"
	# timed from the host (over the pods' bridge): a pod exec costs more than the wait
	kill -KILL "$(agent_pid "$WORK" main)"
	local start=$EPOCHREALTIME
	while [ "$(timeout 1 busybox wget -q -O - "http://$WEB_IP:$HTTP_PORT/" 2>/dev/null </dev/null)" != pod-answer ]; do
		awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n - s < 1) }' ||
			fail "the pod did not answer within 1 s of kill -9"
	done
	local took
	took=$(awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (n - s) * 1000 }')
	echo "the pod answered ${took} ms after kill -9"
		[ -z "$(ours_in_pod)" ] || fail "left behind after kill -9: $(ours_in_pod)"
	# the program itself is unloaded: nothing else held it
	wait_until 20 sh -c "! bpftool prog show id $prog >/dev/null 2>&1" ||
		fail "program $prog still loaded after kill -9: $(bpftool prog show id "$prog")"
	assert_eq "pod-answer" "$(get)" "a client in the other pod after kill -9"
	stop_steal k
	agent_start "$WORK" main
}

# raw TCP: an echo protocol, stolen; the agent_e2e echo answers "stolen:" first
echo_once() { tp exec "$CLI" -- sh -c "echo ${1:-hello} | timeout 3 nc $WEB_IP $ECHO_PORT" 2>/dev/null </dev/null; }
test_raw_tcp_echo() {
	assert_eq "hello" "$(echo_once)" "the pod's own echo server"
	steal_bg e "$ECHO_PORT" --echo
	assert_eq "stolen:hello" "$(echo_once)" "a stolen echo connection"
	assert_eq "stolen:again" "$(echo_once again)" "a second one"
	stop_steal e
	wait_until 20 sh -c "true" && assert_eq "hello" "$(echo_once)" "the pod's echo server again"
}

# keep_alive NAME: a connection to the pod's echo server held open from the client pod;
# NAME.out gets "closed" once it ends
keep_alive() {
	tp exec "$CLI" -- sh -c "(echo first; sleep 60) | { nc $WEB_IP $ECHO_PORT; echo closed; }" \
		</dev/null >"$WORK/$1.out" 2>&1 &
	echo $! >"$WORK/$1.pid"
	wait_until 50 grep -q first "$WORK/$1.out" || fail "no keep-alive connection: $(cat "$WORK/$1.out")"
}
established_to_echo() {
	nsenter -t "$(pod_pid "$WEB")" -n ss -Htn state established "( sport = :$ECHO_PORT and dst $CLI_IP )" | grep -c . || true
}

# flush_connections: the pod's open connections on the port are closed when the steal
# starts; without it they stay on the pod's server
test_flush() {
	keep_alive ka1
	steal_bg nf "$ECHO_PORT" --echo
	sleep 1
	! grep -q closed "$WORK/ka1.out" || fail "a steal without flush closed an open connection"
	[ "$(established_to_echo)" -ge 1 ] || fail "the kept-alive connection is gone without flush"
	stop_steal nf
	steal_bg fl "$ECHO_PORT" --echo --flush
	wait_until 50 grep -q closed "$WORK/ka1.out" || fail "flush did not close the kept-alive connection"
	assert_eq "stolen:hello" "$(echo_once)" "the client reconnects into the steal"
	stop_steal fl
	kill -KILL "$(cat "$WORK/ka1.pid")" 2>/dev/null || true
}

# a unix peer that is not root, on a pid/N target it owns (the pid rules): the port
# belongs to the whole netns, so only a netns of its own user namespace may be stolen
install -m 0600 -o nobody "$WORK/token" "$WORK/token-nobody"
as_nobody() { (cd / && timeout 120 setpriv --reuid 65534 --regid 65534 --clear-groups "$@"); }
own_netns_ready() {
	grep -q '^Uid:.65534' "/proc/$1/status" &&
		[ "$(readlink "/proc/$2/ns/net")" != "$(readlink /proc/self/ns/net)" ]
}
test_nonroot_pid_rules() {
	setpriv --reuid 65534 --regid 65534 --clear-groups sleep 1000 </dev/null >/dev/null 2>&1 &
	local host_sleeper=$!
	echo "$host_sleeper" >"$WORK/host-sleeper.pid"
	setpriv --reuid 65534 --regid 65534 --clear-groups unshare -rn sh -c 'ip link set lo up; exec sleep 1000' \
		</dev/null >/dev/null 2>&1 &
	local own=$!
	echo "$own" >"$WORK/own-netns.pid"
	wait_until 50 own_netns_ready "$host_sleeper" "$own" || fail "the sleepers did not start"
	local out
	# its own process in the host's netns: refused (port 22 of the host is not its)
	out=$(as_nobody "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token-nobody" \
		--target "pid/$host_sleeper" subscribe 18080 steal EPERM "network namespace its own user namespace owns")
	echo "$out"
	# its own process in a netns its user namespace owns: stolen, and served
	install -d -o nobody "$WORK/nobody"
	as_nobody "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token-nobody" \
		--target "pid/$own" steal 18080 --echo --ready "$WORK/nobody/own.ready" >"$WORK/own.out" 2>&1 &
	echo $! >"$WORK/own.pid"
	wait_until 100 test -f "$WORK/nobody/own.ready" || fail "nobody's steal: $(cat "$WORK/own.out")"
	out=$(nsenter -t "$own" -n sh -c 'echo mine | timeout 3 busybox nc 127.0.0.1 18080' 2>&1)
	assert_eq "stolen:mine" "$out" "a connection in nobody's own netns"
	kill -TERM "$(cat "$WORK/own.pid")" 2>/dev/null || true
	kill -KILL "$host_sleeper" "$own" 2>/dev/null || true
}

# a session that ends (killed) while its stolen connections are open: they close, no
# client hangs, and new ones reach the pod
test_session_ends_with_open_connections() {
	steal_bg open "$HTTP_PORT" --silent
	tp exec "$CLI" -- sh -c "timeout 30 wget -q -O - http://$WEB_IP:$HTTP_PORT/; echo \"wget exited \$?\"" \
		</dev/null >"$WORK/held.out" 2>&1 &
	echo $! >"$WORK/held.pid"
	wait_until 50 grep -q '^connection' "$WORK/open.out" || fail "no stolen connection: $(cat "$WORK/open.out")"
	sleep 0.5
	! grep -q exited "$WORK/held.out" || fail "the client did not wait for the silent stealer"
	# agent_e2e itself (timeout cannot pass SIGKILL on): the session dies with it
	kill -KILL "$(pgrep -P "$(steal_pid open)")"
	wait_until 50 grep -q 'wget exited' "$WORK/held.out" || fail "the client of a dead session hangs"
	cat "$WORK/held.out"
	assert_eq "pod-answer" "$(get)" "a new client reaches the pod"
	wait "$(steal_pid open)" 2>/dev/null || true
}

# a session cannot end another session's subscription
test_other_sessions_subscription() {
	steal_bg mine "$HTTP_PORT" --http mine-answer
	local sub
	sub=$(sed -n 's/^subscribed //p' "$WORK/mine.out")
	E unsubscribe "$sub" ENOENT
	assert_eq "mine-answer" "$(get)" "the port after another session tried to unsubscribe it"
	stop_steal mine
}

# Each steal is a thread, listeners and an sk_lookup program with its maps (64 at most
# in one netns, but a peer may target many: a non-root one its own `unshare -rn`
# namespaces), a mirror a port of the tc program's: one peer (uid 0 here) with the 128
# sessions it may open held 128 x 64 of them. 5 sessions of 64 mirrored ports: 256
# held, the rest refused with EUSERS; a subscription works again once they are gone.
test_peer_subscription_limit() {
	local out
	out=$(E subscribe-many mirror 5 64 20000 256 EUSERS)
	echo "$out"
	assert_contains "$out" "this peer (uid 0) holds 256 subscriptions in its sessions, the limit is 256"
	wait_until 100 test -z "$(ours_in_pod)" || fail "left behind: $(ours_in_pod | wc -l) objects"
	assert_contains "$(E incoming-status)" "subscriptions 0 "
	steal_bg after "$HTTP_PORT" --http after-answer
	assert_eq "after-answer" "$(get)" "a steal after the limit was reached"
	stop_steal after
}

run_test pod_answers_before test_pod_answers_before
run_test other_sessions_subscription test_other_sessions_subscription
run_test steal_http test_steal_http
run_test status_counts test_status_counts
run_test unsubscribe_gives_back test_unsubscribe_gives_back
run_test second_steal test_second_steal
run_test raw_tcp_echo test_raw_tcp_echo
run_test flush test_flush
run_test session_ends_open test_session_ends_with_open_connections
run_test nonroot_pid_rules test_nonroot_pid_rules
run_test agent_killed test_agent_killed
run_test peer_subscription_limit test_peer_subscription_limit
