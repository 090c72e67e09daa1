#!/usr/bin/env bash
# Stealing a pod's incoming connections through a real trace-agent: an sk_lookup program
# in the pod's netns hands new connections to the agent, which gives them to the
# subscribed session (tests/agent/agent_e2e `steal`, e2e_incoming.c). The pod runs a
# real server (tests/apps/httpserve, tests/apps-c/echo_server); real clients (busybox
# wget, nc) run in another pod.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

HTTPSERVE="$BUILD/apps/httpserve"
ECHO_SERVER="$BUILD/tests/echo_server"
for f in "$HTTPSERVE" "$ECHO_SERVER" "$AGENT_E2E" "$TRACE_AGENT"; do
	[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/hermit-steal-test.XXXXXX)
chmod 0755 "$WORK"
WEB=$(pod_name web) # the target: an HTTP server on 8080, an echo server on 7000
CLI=$(pod_name cli) # the clients
HTTP_PORT=8080
ECHO_PORT=7000
cleanup() {
	local f
	agent_stop "$WORK" main >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$WEB" "$CLI"
	[ -z "${KEEP_LOGS:-}" ] || cp "$WORK"/*.log "$WORK"/*.out "$KEEP_LOGS"/ 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
cp -a "$TEST_ROOTFS" "$ROOTFS"
tp deploy "$HTTPSERVE" --rootfs "$ROOTFS" >/dev/null
tp deploy "$ECHO_SERVER" --rootfs "$ROOTFS" >/dev/null

tp run -d --init --name "$WEB" --rootfs "$ROOTFS" -- sh -c "
	echo_server -p $ECHO_PORT &
	exec httpserve -listen :$HTTP_PORT -body pod-answer" </dev/null >/dev/null
tp run -d --name "$CLI" --rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>/dev/null | grep -q 'httpserve: listening'" ||
	fail "pod $WEB did not start httpserve: $("$TRACE_POD" logs "$WEB" 2>&1)"
wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>/dev/null | grep -q 'echo_server.*listening'" ||
	fail "pod $WEB did not start echo_server: $("$TRACE_POD" logs "$WEB" 2>&1)"
WEB_IP=$(pod_ip "$WEB")
CLI_IP=$(pod_ip "$CLI")
[ -n "$WEB_IP" ] && [ -n "$CLI_IP" ] || fail "a pod has no IP"
echo "pods: target $WEB_IP, client $CLI_IP"

E() { e2e "$WORK" main --target "pod/$WEB" "$@"; }

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

run_test pod_answers_before test_pod_answers_before
run_test steal_http test_steal_http
