#!/usr/bin/env bash
# Filtered steal through a real trace-agent (agent/http_router.c): sessions subscribe to
# a pod's port with an http_filter (tests/agent/agent_e2e `steal --filter`); requests
# that match go to the session's local server, the others to the pod's own server
# (tests/apps/httpserve), request by request, also on one keep-alive connection. Real
# clients (busybox wget, nc) run in another pod.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/agent/incoming_pods.sh"
incoming_pods_start filter fweb fcli

# get [HEADER]: one GET from the client pod (busybox wget), with that header if given;
# prints the body or "ERR"
get() {
	if [ -n "${1:-}" ]; then
		tp exec "$CLI" -- timeout 5 wget -q -O - --header "$1" "http://$WEB_IP:$HTTP_PORT/" \
			2>/dev/null </dev/null || echo ERR
	else
		tp exec "$CLI" -- timeout 5 wget -q -O - "http://$WEB_IP:$HTTP_PORT/" 2>/dev/null \
			</dev/null || echo ERR
	fi
}

# raw TEXT PORT: TEXT (printf format) to PORT over one connection (busybox nc); prints
# what came back
raw() { tp exec "$CLI" -- sh -c "printf '$1' | timeout 5 nc $WEB_IP $2" 2>/dev/null </dev/null; }

# answer_is TEXT [HEADER]: a GET (with HEADER) gets TEXT
answer_is() { [ "$(get "${2:-}")" = "$1" ]; }

# bodies OUTPUT: the answers' bodies found in OUTPUT, in order, one line
bodies() { grep -oE '(pod|alice|bob)-answer' <<<"$1" | tr '\n' ' ' | sed 's/ $//'; }

# steal_bg NAME ARGS...: agent_e2e steal in the background; waits for its subscription.
steal_bg() {
	local name="$1"
	shift
	rm -f "$WORK/$name.ready"
	timeout 300 "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token" \
		--target "pod/$WEB" steal "$@" --ready "$WORK/$name.ready" >"$WORK/$name.out" 2>&1 &
	echo $! >"$WORK/$name.pid"
	wait_until 100 test -f "$WORK/$name.ready" ||
		fail "steal $name did not subscribe: $(cat "$WORK/$name.out")"
}
stop_steal() {
	kill -TERM "$(cat "$WORK/$1.pid")" 2>/dev/null || true
	wait "$(cat "$WORK/$1.pid")" 2>/dev/null || true
}

ALICE='{"header_filter": "^x-user: alice$"}'
BOB='{"any_of": [{"header": "^x-user: bob$"}, {"path": "^/bob"}]}'

agent_start "$WORK" main

# a filter the agent cannot take is refused, naming what is wrong
test_bad_filter_refused() {
	local out
	out=$(E subscribe "$HTTP_PORT" steal EINVAL 'http_filter.header_filter: bad regex' \
		--filter '{"header_filter": "(x-user"}')
	echo "$out"
	out=$(E subscribe "$HTTP_PORT" steal EINVAL 'http_filter.headers: unknown key' \
		--filter '{"headers": "x"}')
	echo "$out"
	assert_eq "pod-answer" "$(get)" "the pod after refused subscribes"
}

# requests with the header reach the session's server, the others the pod's
test_header_filter() {
	steal_bg alice "$HTTP_PORT" --http-keepalive alice-answer --filter "$ALICE"
	assert_eq "alice-answer" "$(get 'X-User: alice')" "a request with the header"
	assert_eq "alice-answer" "$(get 'x-user: alice')" "header names ignore case"
	assert_eq "pod-answer" "$(get)" "a request without the header"
	assert_eq "pod-answer" "$(get 'X-User: mallory')" "a request with another value"
	grep -q "from $CLI_IP:" "$WORK/alice.out" ||
		fail "the session did not see the real client: $(cat "$WORK/alice.out")"
}

# one keep-alive connection, mixed: each request goes its own way, answers in order
test_keepalive_mixed() {
	local req_a="GET / HTTP/1.1\r\nHost: web\r\nX-User: alice\r\n\r\n"
	local req_p="GET / HTTP/1.1\r\nHost: web\r\n\r\n"
	# the last one asks the pod to close: the router closes the client's side after it
	local req_close="GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"
	local out
	out=$(raw "$req_a$req_p$req_a$req_p$req_a$req_close" "$HTTP_PORT")
	assert_eq "alice-answer pod-answer alice-answer pod-answer alice-answer pod-answer" \
		"$(bodies "$out")" "six pipelined requests on one connection"
	# sequential on one connection: each written after the previous answer came
	out=$(tp exec "$CLI" -- sh -c "
		{ printf '$req_p'; sleep 0.5; printf '$req_a'; sleep 0.5;
		  printf 'GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n'; sleep 2; } |
		timeout 6 nc $WEB_IP $HTTP_PORT" 2>/dev/null </dev/null)
	assert_eq "pod-answer alice-answer pod-answer" "$(bodies "$out")" \
		"three requests one after the other on one connection"
}

# two sessions with different filters share the port; when one goes, its requests go
# back to the pod
test_two_sessions_share() {
	steal_bg bob "$HTTP_PORT" --http-keepalive bob-answer --filter "$BOB"
	assert_eq "alice-answer" "$(get 'X-User: alice')" "alice with two sessions"
	assert_eq "bob-answer" "$(get 'X-User: bob')" "bob's header"
	local out
	out=$(tp exec "$CLI" -- timeout 5 wget -q -O - "http://$WEB_IP:$HTTP_PORT/bob/x" 2>/dev/null </dev/null)
	assert_eq "bob-answer" "$out" "bob's path"
	assert_eq "pod-answer" "$(get)" "neither"
	local h="GET / HTTP/1.1\r\nHost: web\r\n"
	out=$(raw "${h}X-User: bob\r\n\r\n${h}X-User: alice\r\n\r\n${h}\r\n${h}X-User: bob\r\n\r\n${h}Connection: close\r\n\r\n" "$HTTP_PORT")
	assert_eq "bob-answer alice-answer pod-answer bob-answer pod-answer" "$(bodies "$out")" \
		"three destinations on one connection"
	stop_steal alice
	wait_until 20 answer_is pod-answer 'X-User: alice' ||
		fail "alice's requests do not go back to the pod: $(get 'X-User: alice')"
	assert_eq "bob-answer" "$(get 'X-User: bob')" "bob after alice left"
}

# a byte stream that is not HTTP reaches the pod's own server untouched (the pod's echo
# answers it as is; the session's echo would prefix "stolen:")
test_not_http_passthrough() {
	steal_bg echo "$ECHO_PORT" --echo --filter "$ALICE"
	local sent='\026\003\001binary X-User: alice\r\n\r\nhello'
	local out want
	out=$(raw "$sent" "$ECHO_PORT" | od -An -c | tr -s ' \n' ' ')
	want=$(printf "$sent" | od -An -c | tr -s ' \n' ' ')
	assert_eq "$want" "$out" "non-HTTP bytes echoed by the pod, byte for byte"
	! grep -q '^connection' "$WORK/echo.out" || fail "the session got the non-HTTP connection"
	# HTTP on that port with the header goes to the session (whose echo is no HTTP
	# answer: the client gets a reset, but the session saw the request)
	raw "GET / HTTP/1.1\r\nX-User: alice\r\n\r\n" "$ECHO_PORT" >/dev/null || true
	wait_until 30 grep -q '^connection' "$WORK/echo.out" ||
		fail "the HTTP request with the header did not reach the session: $(cat "$WORK/echo.out")"
	stop_steal echo
}

test_status_counts() {
	local out
	# the STATUS_REPLY's counters: requests the filters sent to a session (stolen) and
	# left to the pod (passed_to_target)
	out=$(E incoming-status)
	echo "$out"
	awk '{ for (i = 1; i < NF; i++) if ($i == "stolen" && $(i + 1) >= 10) found = 1 }
		END { exit !found }' <<<"$out" || fail "the stolen requests are not counted"
	awk '{ for (i = 1; i < NF; i++) if ($i == "passed_to_target" && $(i + 1) >= 10) found = 1 }
		END { exit !found }' <<<"$out" || fail "the requests passed to the pod are not counted"
}

# the sessions end: the pod answers everything again
test_sessions_end() {
	stop_steal bob
	wait_until 20 answer_is pod-answer 'X-User: bob' ||
		fail "the pod does not answer after the sessions ended: $(get 'X-User: bob')"
}

# The router's connections (4096) are shared by every filtered port of every pod: one
# port's clients (hostile: the pod's, from anywhere) held them all and the other ports'
# clients were reset. A flood of 4200 idle connections to one filtered port takes at
# most 1024; another port's clients are still routed.
test_port_flood_leaves_room() {
	steal_bg flood "$ECHO_PORT" --echo --filter "$ALICE"
	steal_bg alice "$HTTP_PORT" --http alice-answer --filter "$ALICE"
	python3 - "$WEB_IP" "$ECHO_PORT" "$WORK/flood.ready" <<'PY' &
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
socks = []
for _ in range(4200):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
        socks.append(s)
    except OSError:  # refused by the agent once its share is full
        s.close()
open(sys.argv[3], "w").write("%d\n" % len(socks))
time.sleep(300)
PY
	echo $! >"$WORK/flood.pid"
	wait_until 300 test -s "$WORK/flood.ready" || fail "the flood did not connect"
	sleep 1 # the agent accepts them all meanwhile
	assert_eq "alice-answer" "$(get 'X-User: alice')" "a client of the other port, for alice"
	assert_eq "pod-answer" "$(get)" "a client of the other port, for the pod"
	kill "$(cat "$WORK/flood.pid")"
	wait "$(cat "$WORK/flood.pid")" 2>/dev/null || true
	stop_steal flood
	stop_steal alice
}

# budget_streams_used AGENT: what its streams budget has in use
budget_streams_used() {
	"$TRACE_AGENT" status --unix "$WORK/$1.sock" --token-file "$WORK/token" |
		awk '$1 == "streams" && NF == 5 {print $2}'
}
streams_used_is() { [ "$(budget_streams_used "$1")" = "$2" ]; } # AGENT N

# The router's stream to a session (one per client connection) is a socket the agent
# holds for that session while the connection lasts: it counts against the session's
# --max-session-streams (before, it stopped counting once claimed, and the pod's
# clients could make the agent hold 4096 of them per session). 10 keep-alive
# connections, each with one matching request, opened one after the other; a budget
# of 4: 4 go to the session, the others to the pod; the count returns to 0 when they
# close, and the session is served again.
test_router_streams_count() {
	on_exit agent_stop "$WORK" capped
	agent_start "$WORK" capped --max-session-streams 4
	rm -f "$WORK/capped-alice.ready"
	timeout 300 "$AGENT_E2E" --unix "$WORK/capped.sock" --token-file "$WORK/token" \
		--target "pod/$WEB" steal "$HTTP_PORT" --http-keepalive alice-answer --filter "$ALICE" \
		--ready "$WORK/capped-alice.ready" >"$WORK/capped-alice.out" 2>&1 &
	echo $! >"$WORK/capped-alice.pid"
	wait_until 100 test -f "$WORK/capped-alice.ready" ||
		fail "the session did not subscribe: $(cat "$WORK/capped-alice.out")"
	rm -f "$WORK/held.go"
	touch "$WORK/held.go"
	python3 - "$WEB_IP" "$HTTP_PORT" "$WORK/held.answers" "$WORK/held.go" <<'PY' &
import os, socket, sys, time
socks, answers = [], []
for i in range(10):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nX-User: alice\r\n\r\n")
    got = b""
    while b"-answer" not in got:
        b = s.recv(4096)
        if not b:
            break
        got += b
    answers.append("alice" if b"alice-answer" in got else "pod" if b"pod-answer" in got else "none")
    socks.append(s)  # kept open: the router keeps its stream to the session
open(sys.argv[3], "w").write(" ".join(answers) + "\n")
while os.path.exists(sys.argv[4]):
    time.sleep(0.1)
for s in socks:
    s.close()
PY
	local holder=$! answers used
	wait_until 300 test -s "$WORK/held.answers" || fail "the clients got no answers"
	answers=$(cat "$WORK/held.answers")
	used=$(budget_streams_used capped)
	echo "10 keep-alive connections: $answers; streams used $used"
	assert_eq "alice alice alice alice pod pod pod pod pod pod" "$answers" \
		"who answered, with a budget of 4 streams"
	assert_eq 4 "$used" "streams counted while the connections are open"
	rm -f "$WORK/held.go"
	wait "$holder"
	wait_until 50 streams_used_is capped 0 ||
		fail "streams still counted after the connections closed: $(budget_streams_used capped)"
	local got
	got=$(tp exec "$CLI" -- timeout 5 wget -q -O - --header 'X-User: alice' \
		"http://$WEB_IP:$HTTP_PORT/" 2>/dev/null </dev/null)
	assert_eq "alice-answer" "$got" "the session after the connections closed"
	kill -TERM "$(cat "$WORK/capped-alice.pid")" 2>/dev/null || true
	wait "$(cat "$WORK/capped-alice.pid")" 2>/dev/null || true
	wait_until 50 streams_used_is capped 0 || fail "streams counted after the session ended"
}

run_test bad_filter_refused test_bad_filter_refused
run_test header_filter test_header_filter
run_test keepalive_mixed test_keepalive_mixed
run_test two_sessions_share test_two_sessions_share
run_test not_http_passthrough test_not_http_passthrough
run_test status_counts test_status_counts
run_test sessions_end test_sessions_end
run_test port_flood_leaves_room test_port_flood_leaves_room
run_test router_streams_count test_router_streams_count
