#!/usr/bin/env bash
# Incoming traffic end to end: a program run on this machine under
# `trace-run --target pod/WEB --incoming mirror|steal` listens on a TCP port, and what
# clients in another pod send to WEB's port reaches it. Real pods, a real agent, real
# clients (busybox wget and the static Go client of tests/apps/reqlog, run with
# trace-pod exec in pod CLI).
#   WEB   runs reqlog (HTTP on 8080, raw TCP echo on 7000), both answering "pod ..."
#   CLI   the clients
# The local program answers "local ..." and logs each request (method, path, body
# length and sha256) to a file, so a check can tell who answered and compare what the
# local program saw with what was sent, byte for byte.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

REQLOG="$BUILD/apps/reqlog"
PYTHON=/usr/bin/python3
for f in "$REQLOG" "$TRACE_AGENT" "$TRACE_RUN" "$PYTHON"; do
	[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/hermit-incoming-test.XXXXXX)
chmod 0755 "$WORK"
WEB=$(pod_name web)
CLI=$(pod_name cli)
cleanup() {
	local f
	for f in "$WORK"/*.trun.pid; do
		[ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
	done
	sleep 0.3
	for f in "$WORK"/*.trun.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	agent_stop "$WORK" agent >/dev/null 2>&1
	pod_cleanup "$WEB" "$CLI"
	rm -rf "$WORK"
}
trap cleanup EXIT

set -e
mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
rootfs_with "$ROOTFS" "$REQLOG"
tp run -d --name "$WEB" --rootfs "$ROOTFS" -- sh -c \
	'reqlog serve -tcp -listen :7000 -name pod & exec reqlog serve -listen :8080 -name pod' \
	</dev/null >/dev/null
tp run -d --name "$CLI" --rootfs "$ROOTFS" -- sleep 1000000 </dev/null >/dev/null
WEB_IP=$(pod_ip "$WEB")
CLI_IP=$(pod_ip "$CLI")
[ -n "$WEB_IP" ] && [ -n "$CLI_IP" ] || fail "pods without an IP"
wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>&1 | grep -q 'listening on \[::\]:8080'" ||
	fail "pod $WEB: $("$TRACE_POD" logs "$WEB" 2>&1)"
agent_start "$WORK" agent
chmod 0644 "$WORK/token" # the checks run as nobody too (token in HERMIT_TOKEN)
TOKEN=$(cat "$WORK/token")
# the scenario without trace-run: the pod answers
got=$(tp exec "$CLI" -- reqlog client -url "http://$WEB_IP:8080" -n 3 </dev/null)
[ "$got" = "answers pod=3" ] || fail "the pod itself does not answer: $got"
set +e

# cli CMD...: run CMD in the client pod
cli() { timeout 120 "$TRACE_POD" exec "$CLI" -- "$@" </dev/null; }

# trun_bg NAME BACKEND USER [TRACE-RUN ARGS] -- PROGRAM...: trace-run in the background
# on pod WEB, its stderr in WORK/NAME.err, its pid in WORK/NAME.trun.pid; waits until
# it says the port is mirrored or stolen (or it ended).
trun_bg() {
	local name="$1" backend="$2" user="$3"
	shift 3
	local cmd=("$TRACE_RUN" --agent-unix "$WORK/agent.sock" --target "pod/$WEB" --backend "$backend")
	echo "+ trace-run --backend $backend (as $user) $*" >&2
	if [ "$user" = root ]; then
		HERMIT_TOKEN="$TOKEN" "${cmd[@]}" "$@" </dev/null >"$WORK/$name.out" 2>"$WORK/$name.err" &
	else
		(cd / && exec runuser -u nobody -- env HERMIT_TOKEN="$TOKEN" "${cmd[@]}" "$@") \
			</dev/null >"$WORK/$name.out" 2>"$WORK/$name.err" &
	fi
	echo $! >"$WORK/$name.trun.pid"
	wait_until 150 grep -qE 'is (mirrored to|stolen by) the program' "$WORK/$name.err" || {
		cat "$WORK/$name.err" >&2
		fail "$name: trace-run did not subscribe"
	}
	cat "$WORK/$name.err" >&2
}

# trun_stop NAME: SIGTERM trace-run (the program gets it) and wait for it
trun_stop() {
	local pid
	pid=$(cat "$WORK/$1.trun.pid")
	kill -TERM "$pid" 2>/dev/null || true # it may have ended with its program
	wait_until 100 pid_exited "$pid" || kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null || true # the program's SIGTERM is trace-run's status
	rm -f "$WORK/$1.trun.pid"
	# under make asan: trace-run's own report (its status is the program's)
	! grep -A20 'Sanitizer' "$WORK/$1.err" >&2 || fail "trace-run: sanitizer report"
}

# mirror_lost: the agent's count of mirrored connections it reset for lost bytes
mirror_lost() {
	"$TRACE_AGENT" status --unix "$WORK/agent.sock" --token-file "$WORK/token" |
		sed -n 's/.* mirror_lost \([0-9]*\).*/\1/p'
}

# same_requests EXPECTED_FILE LOG_FILE [LOST_BEFORE]: the local program saw exactly these
# requests (method, path, body length and sha256), in any order. Mirrored requests
# arrive asynchronously: waits for the count first. LOST_BEFORE (mirror): a connection
# the agent could not copy whole is reset, never delivered with a hole, and counted in
# its mirror_lost; such requests may be missing (on a machine too loaded for the agent
# to keep up), no others, and nothing the local program saw may differ from what was sent.
same_requests() {
	local want=$(grep -c . "$1")
	wait_until 200 sh -c "[ \$(grep -c . '$2' 2>/dev/null) -ge $want ]" ||
		echo "only $(grep -c . "$2" 2>/dev/null) of $want requests logged" >&2
	local extra missing lost=0
	extra=$(comm -13 <(sort "$1") <(sort "$2"))
	[ -z "$extra" ] || fail "the local program saw requests that were not sent: $(head -3 <<<"$extra")"
	missing=$(comm -23 <(sort "$1") <(sort "$2") | grep -c . || true)
	[ -z "${3:-}" ] || lost=$(($(mirror_lost) - $3))
	if [ "$missing" -gt 0 ]; then
		echo "$missing requests missing; the agent counted $lost mirrored connections lost"
		[ "$missing" -le "$lost" ] || fail "the local program did not see the requests sent"
	fi
	echo "the local program saw the $((want - missing)) of $want requests sent, byte for byte"
}

# http_checks NAME WHO: 200 sequential requests, 50 concurrent connections, a 10 MiB
# upload from CLI; every answer from WHO (pod: mirror, local: steal), and the local
# program's log equals what was sent.
http_checks() {
	local name="$1" who="$2" got lost_before=""
	[ "$who" != pod ] || lost_before=$(mirror_lost)
	: >"$WORK/$name.expect"
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 200 -c 1 -size 700 -expect /tmp/seq)
	echo "200 sequential: $got"
	assert_eq "answers $who=200" "$got" "200 sequential requests"
	cli cat /tmp/seq >>"$WORK/$name.expect"
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 50 -c 50 -size 3000 -method PUT \
		-expect /tmp/conc)
	echo "50 concurrent: $got"
	assert_eq "answers $who=50" "$got" "50 concurrent connections"
	cli cat /tmp/conc >>"$WORK/$name.expect"
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 1 -size 10485760 -expect /tmp/big)
	echo "10 MiB upload: $got"
	assert_eq "answers $who=1" "$got" "a 10 MiB upload"
	cli cat /tmp/big >>"$WORK/$name.expect"
	same_requests "$WORK/$name.expect" "$WORK/$name.log" $lost_before
}

# ---- HTTP, the static Go server (accept4 non-blocking + epoll) ----

test_go_http() { # MODE BACKEND USER
	local mode="$1" backend="$2" user="$3" name="go-$1-$2-$3"
	local who=pod
	[ "$mode" = mirror ] || who=local
	: >"$WORK/$name.log"
	chmod 0666 "$WORK/$name.log"
	trun_bg "$name" "$backend" "$user" --incoming "$mode" -- \
		"$REQLOG" serve -listen :8080 -name local -log "$WORK/$name.log"
	http_checks "$name" "$who"
	# the address the local program got from accept is the client pod's, not loopback
	local got
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 1)
	[ "$mode" = mirror ] || assert_eq "answers local=1" "$got"
	if [ "$mode" = steal ]; then
		got=$(cli wget -qO- "http://$WEB_IP:8080/who")
		assert_contains "$got" "local GET /who 0 "
		assert_contains "$got" " $CLI_IP:" "the client address the Go server saw"
	fi
	trun_stop "$name"
	# the session is over: the pod answers again
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 5)
	assert_eq "answers pod=5" "$got" "after the session"
}

# ---- python3 http.server (blocking accept, glibc) ----

test_python_http() { # MODE BACKEND
	local mode="$1" backend="$2" name="py-$1-$2" got
	mkdir -p "$WORK/$name.www"
	echo "a file only the local program has" >"$WORK/$name.www/local.txt"
	# http.server looks its own address up (getfqdn) before it listens: with the
	# pods' resolver (none here) that takes the resolver's timeouts
	echo '{"feature": {"network": {"dns": false}}}' >"$WORK/nodns.json"
	(cd "$WORK/$name.www" && trun_bg "$name" "$backend" root -f "$WORK/nodns.json" \
		--incoming "$mode" -- "$PYTHON" -u -m http.server 8080)
	got=$(cli wget -qO- "http://$WEB_IP:8080/local.txt")
	if [ "$mode" = steal ]; then
		assert_eq "a file only the local program has" "$got" "wget answered by python"
	else
		assert_contains "$got" "pod GET /local.txt 0 " "wget answered by the pod"
	fi
	# python logs each request with the client address accept gave it
	wait_until 100 grep -q 'GET /local.txt' "$WORK/$name.err" || fail "python saw no request"
	got=$(grep 'GET /local.txt' "$WORK/$name.err")
	assert_contains "$got" "$CLI_IP - -" "python's accept address"
	trun_stop "$name"
}

# ---- raw TCP: an echo protocol ----

test_tcp_echo() { # MODE BACKEND
	local mode="$1" backend="$2" name="tcp-$1-$2" got
	: >"$WORK/$name.log"
	trun_bg "$name" "$backend" root --incoming "$mode" -- \
		"$REQLOG" serve -tcp -listen :7000 -name local -log "$WORK/$name.log"
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line "hello $mode")
	if [ "$mode" = steal ]; then
		assert_contains "$got" "local: hello $mode (from $CLI_IP:" "stolen echo"
	else
		assert_contains "$got" "pod: hello $mode" "mirrored echo: the pod answers"
	fi
	# the local program got the bytes, whole: "hello MODE\n"
	local want
	want="tcp $((7 + ${#mode})) $(printf 'hello %s\n' "$mode" | sha256sum | cut -d' ' -f1)"
	wait_until 100 grep -qF "$want" "$WORK/$name.log" ||
		fail "the local echo server logged '$(cat "$WORK/$name.log")', wanted '$want'"
	trun_stop "$name"
}

# ---- accept and getpeername show the original client; the port taken here ----

PEER_PY='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("bound", s.getsockname()[1], flush=True)
c, a = s.accept()
c.recv(100)
c.sendall(("accept=%s:%d peer=%s:%d\n" % (a + c.getpeername())).encode())
c.close()
'

test_peer_and_taken_port() { # BACKEND
	local backend="$1" name="peer-$1" got
	# the port is taken on this machine: the program gets another, but sees its own
	"$PYTHON" -c 'import socket,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(1); time.sleep(60)' &
	local blocker=$! # it fails when another process has the port: taken either way
	on_exit kill "$blocker"
	wait_until 50 sh -c "ss -ltn | grep -q ':8080 '" || fail "no local listener on 8080"
	trun_bg "$name" "$backend" root --incoming steal -- "$PYTHON" -c "$PEER_PY" 8080
	wait_until 50 grep -q bound "$WORK/$name.out" || fail "no output: $(cat "$WORK/$name.err")"
	assert_eq "bound 8080" "$(cat "$WORK/$name.out")" "getsockname of the moved listener"
	got=$(cli reqlog tcp -addr "$WEB_IP:8080" -line hi)
	echo "answer: $got"
	[[ "$got" == "accept=$CLI_IP:"*" peer=$CLI_IP:"* ]] ||
		fail "accept/getpeername did not show the client pod $CLI_IP: '$got'"
	# the same port both times: the client's own
	local a=${got#accept=} p=${got#*peer=}
	assert_eq "${a%% *}" "$p" "accept's and getpeername's addresses"
	kill "$blocker" 2>/dev/null || true
	trun_stop "$name"
}

# ---- C servers, glibc and musl: blocking accept() (SYS_accept), getpeername ----

ACCEPT_C='
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static const char *str(struct sockaddr_in *a, char *b) {
	sprintf(b, "%s:%d", inet_ntoa(a->sin_addr), ntohs(a->sin_port));
	return b;
}
int main(void) {
	int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7000)};
	if (bind(s, (void *)&a, sizeof(a)) || listen(s, 8)) { perror("bind/listen"); return 1; }
	for (int i = 0; i < 3; i++) {
		struct sockaddr_in p, q, l;
		socklen_t pl = sizeof(p), ql = sizeof(q), ll = sizeof(l);
		int c = accept(s, (void *)&p, &pl);
		if (c < 0) { perror("accept"); return 1; }
		getpeername(c, (void *)&q, &ql);
		getsockname(c, (void *)&l, &ll);
		char buf[512], x[64], y[64], z[64];
		read(c, buf, sizeof(buf));
		int n = snprintf(buf, sizeof(buf), "local: accept=%s peer=%s self=%s\n",
				 str(&p, x), str(&q, y), str(&l, z));
		write(c, buf, n);
		close(c);
	}
	return 0;
}
'

test_c_accept() { # LIBC BACKEND
	local libc="$1" backend="$2" name="c-$1-$2" got cc=gcc
	[ "$libc" = glibc ] || cc=musl-gcc
	printf '%s' "$ACCEPT_C" >"$WORK/accept.c"
	"$cc" -static -O2 -o "$WORK/accept-$libc" "$WORK/accept.c" || fail "$cc failed"
	trun_bg "$name" "$backend" root --incoming steal -- "$WORK/accept-$libc"
	# -hold: the server's close must reach the client now, not at its next accept
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line hi -hold 5s)
	echo "answer: $got"
	assert_contains "$got" "ended: EOF" "the server closed the connection ($libc)"
	assert_contains "$got" "local: accept=$CLI_IP:" "accept's address ($libc)"
	local port=${got#*accept=$CLI_IP:}
	port=${port%% *}
	assert_contains "$got" "peer=$CLI_IP:$port " "getpeername ($libc)"
	assert_contains "$got" "self=$WEB_IP:7000" "getsockname of the accepted socket ($libc)"
	trun_stop "$name"
}

# ---- a signal reaches a program waiting in a blocking accept ----

SIGNAL_PY='
import signal, socket, sys
def handler(sig, frame):
    print("handled signal", sig, flush=True)
    sys.exit(3)
signal.signal(signal.SIGUSR1, handler)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("0.0.0.0", 7000))
s.listen(8)
s.accept()
print("accept returned", flush=True)
'

test_signal_in_accept() { # BACKEND
	local backend="$1" name="sig-$1" pid rc=0
	trun_bg "$name" "$backend" root --incoming steal -- "$PYTHON" -c "$SIGNAL_PY"
	pid=$(cat "$WORK/$name.trun.pid")
	sleep 0.5 # python waits in accept(), deferred by trace-run
	local t0=$SECONDS
	kill -USR1 "$pid" # trace-run forwards it
	wait_until 50 pid_exited "$pid" || fail "SIGUSR1 did not reach python waiting in accept"
	wait "$pid" || rc=$?
	rm -f "$WORK/$name.trun.pid"
	echo "python ended $((SECONDS - t0)) s after SIGUSR1, exit $rc"
	assert_eq "handled signal 10" "$(cat "$WORK/$name.out")" "python's handler ran"
	assert_eq 3 "$rc" "python's exit status"
}

# ---- busybox httpd ----

test_busybox_httpd() { # BACKEND
	local backend="$1" name="httpd-$1" got
	mkdir -p "$WORK/$name.www"
	echo "served by the local busybox httpd" >"$WORK/$name.www/index.html"
	trun_bg "$name" "$backend" root --incoming steal -- \
		busybox httpd -f -p 8080 -h "$WORK/$name.www"
	got=$(cli wget -qO- "http://$WEB_IP:8080/index.html")
	assert_eq "served by the local busybox httpd" "$got" "wget answered by busybox httpd"
	trun_stop "$name"
}

# ---- a second steal of the same port is refused, the first keeps it ----

test_second_steal_refused() {
	local got rc=0
	: >"$WORK/first.log"
	trun_bg first seccomp root --incoming steal -- \
		"$REQLOG" serve -listen :8080 -name local -log "$WORK/first.log"
	timeout 30 env HERMIT_TOKEN="$TOKEN" "$TRACE_RUN" --agent-unix "$WORK/agent.sock" \
		--target "pod/$WEB" --incoming steal -- "$REQLOG" serve -listen :8080 -name second \
		</dev/null >"$WORK/second.out" 2>"$WORK/second.err" || rc=$?
	cat "$WORK/second.err"
	assert_eq 125 "$rc" "exit code of the refused steal"
	got=$(cat "$WORK/second.err")
	assert_contains "$got" "cannot steal port 8080 of pod/$WEB"
	assert_contains "$got" "session"
	assert_eq 1 "$(grep -c 'cannot steal' "$WORK/second.err")" "one line"
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 3)
	assert_eq "answers local=3" "$got" "the first session still steals"
	trun_stop first
}

# ---- the session ends while connections are open ----

test_session_end_open_connections() {
	local got
	trun_bg ending seccomp root --incoming steal -- \
		"$REQLOG" serve -tcp -listen :7000 -name local
	# a connection that stays open, up to 40 s unless the server side ends it
	timeout 60 "$TRACE_POD" exec "$CLI" -- reqlog tcp -addr "$WEB_IP:7000" -line one \
		-hold 40s >"$WORK/open.out" 2>&1 </dev/null &
	local held=$!
	wait_until 100 grep -q 'local: one' "$WORK/open.out" || fail "the held connection got no answer"
	local t0=$SECONDS
	trun_stop ending
	# the held client is not left hanging
	wait_until 100 pid_exited "$held" || fail "the open connection hangs after the session ended"
	cat "$WORK/open.out"
	assert_contains "$(cat "$WORK/open.out")" "ended: " "the held connection"
	assert_not_contains "$(cat "$WORK/open.out")" "still open" "the held connection"
	echo "held connection ended $((SECONDS - t0)) s after the session"
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line again)
	assert_contains "$got" "pod: again" "a new connection after the session"
}

# ---- the program closes its listener: the port is given back ----

CLOSE_PY='
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.bind(("::", 7000))
s.listen(8)
print("listening", flush=True)
c, a = s.accept()
c.recv(100)
c.sendall(b"local: before close\n")
c.close()
s.close()
print("closed", flush=True)
time.sleep(60)
'

test_listener_closed() { # BACKEND
	local backend="$1" name="close-$1" got
	trun_bg "$name" "$backend" root --incoming steal -- "$PYTHON" -c "$CLOSE_PY"
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line x)
	assert_eq "local: before close" "$got" "while the program listens"
	wait_until 50 grep -q closed "$WORK/$name.out" || fail "the program did not close"
	# trace-run notices the closed listener and unsubscribes: the pod serves the port
	wait_until 50 sh -c "'$TRACE_POD' exec '$CLI' -- reqlog tcp -addr '$WEB_IP:7000' -line y \
		</dev/null 2>/dev/null | grep -q 'pod: y'" ||
		fail "the pod did not get its port back after the program closed its listener"
	trun_stop "$name"
}

# ---- on_concurrent_steal: continue ----

test_concurrent_continue() {
	local got rc=0
	trun_bg holder seccomp root --incoming steal -- "$REQLOG" serve -tcp -listen :7000 -name local
	echo '{"feature": {"network": {"incoming": {"mode": "steal", "on_concurrent_steal": "continue"}}}}' \
		>"$WORK/continue.json"
	timeout 30 env HERMIT_TOKEN="$TOKEN" "$TRACE_RUN" --agent-unix "$WORK/agent.sock" \
		--target "pod/$WEB" -f "$WORK/continue.json" -- "$PYTHON" -c \
		'import socket; s=socket.socket(); s.bind(("0.0.0.0", 7000)); s.listen(1); print("still running")' \
		</dev/null >"$WORK/cont.out" 2>"$WORK/cont.err" || rc=$?
	cat "$WORK/cont.err"
	assert_eq 0 "$rc" "exit code with on_concurrent_steal continue"
	assert_eq "still running" "$(cat "$WORK/cont.out")" "the program went on"
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line z)
	assert_contains "$got" "local: z" "the holder still steals"
	trun_stop holder
}

# ---- port_mapping and ignore_ports ----

test_port_mapping_and_ignore() {
	local got
	echo '{"feature": {"network": {"incoming": {"mode": "steal",
  "port_mapping": [[18080, 8080]], "ignore_ports": [7000]}}}}' >"$WORK/mapping.json"
	# the program's 18080 stands for the pod's 8080
	trun_bg mapped seccomp root -f "$WORK/mapping.json" -- \
		"$REQLOG" serve -listen :18080 -name local
	assert_contains "$(cat "$WORK/mapped.err")" "port 8080 of pod/$WEB is stolen by the program (port 18080)"
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 3)
	assert_eq "answers local=3" "$got" "the pod's 8080 through the program's 18080"
	trun_stop mapped
	# an ignored port stays local: the pod keeps serving it
	HERMIT_TOKEN="$TOKEN" timeout 30 "$TRACE_RUN" --agent-unix "$WORK/agent.sock" \
		--target "pod/$WEB" -f "$WORK/mapping.json" -- "$REQLOG" serve -tcp -listen :7000 \
		-name local </dev/null >/dev/null 2>"$WORK/ignored.err" &
	local pid=$!
	wait_until 100 grep -q 'listening on' "$WORK/ignored.err" || fail "no listener: $(cat "$WORK/ignored.err")"
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line ignored)
	kill -TERM "$pid"
	wait "$pid" || true
	assert_contains "$got" "pod: ignored" "an ignored port"
	assert_not_contains "$(cat "$WORK/ignored.err")" "stolen by" "trace-run's stderr"
}

# ---- two SO_REUSEPORT listeners on one port share the subscription ----

REUSEPORT_PY='
import select, socket
socks = []
for i in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", 7000))
    s.listen(8)
    socks.append(s)
print("listening", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        c, a = s.accept()
        c.recv(100)
        c.sendall(("local: socket %d saw %s\n" % (socks.index(s), a[0])).encode())
        c.close()
'

test_reuseport() {
	local got i
	trun_bg reuse seccomp root --incoming steal -- "$PYTHON" -c "$REUSEPORT_PY"
	for i in 1 2 3 4; do
		# the server accepts only when select says so: its close must still reach
		# the client at once
		got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line "r$i" -hold 5s)
		assert_contains "$got" "ended: EOF" "connection $i closed by the server"
		assert_contains "$got" "local: socket " "connection $i"
		assert_contains "$got" " saw $CLI_IP" "connection $i"
	done
	assert_eq 1 "$(grep -c 'stolen by the program' "$WORK/reuse.err")" "one subscription"
	assert_not_contains "$(cat "$WORK/reuse.err")" "cannot steal" "trace-run's stderr"
	trun_stop reuse
}

# ---- the notice: once per port, not with -q ----

test_notice_quiet() {
	local prog='import socket; s=socket.socket(); s.bind(("0.0.0.0", 7000)); s.listen(1); print("ok")'
	local out err
	err=$(HERMIT_TOKEN="$TOKEN" timeout 30 "$TRACE_RUN" --agent-unix "$WORK/agent.sock" \
		--target "pod/$WEB" --incoming steal -- "$PYTHON" -c "$prog" 2>&1 >/dev/null)
	echo "without -q: $err"
	assert_eq "trace-run: port 7000 of pod/$WEB is stolen by the program (port 7000)" "$err"
	out=$(HERMIT_TOKEN="$TOKEN" timeout 30 "$TRACE_RUN" --agent-unix "$WORK/agent.sock" \
		--target "pod/$WEB" --incoming steal -q -- "$PYTHON" -c "$prog" 2>"$WORK/quiet.err")
	assert_eq "ok" "$out" "the program's output with -q"
	assert_eq "" "$(cat "$WORK/quiet.err")" "trace-run's stderr with -q"
}

# ---- kill -9 of the agent during a steal: the pod answers again at once ----

test_agent_killed() {
	local got t0
	trun_bg doomed seccomp root --incoming steal -- "$REQLOG" serve -listen :8080 -name local
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 2)
	assert_eq "answers local=2" "$got" "stolen while the agent lives"
	kill -KILL "$(agent_pid "$WORK" agent)"
	t0=$(date +%s%N)
	# the sk_lookup link died with the agent's fd: the pod's own server is back
	wait_until 10 sh -c "'$TRACE_POD' exec '$CLI' -- reqlog client -url 'http://$WEB_IP:8080' \
		</dev/null 2>/dev/null | grep -qx 'answers pod=1'" ||
		fail "the pod did not answer within 1 s of the agent's death"
	echo "the pod answered $((($(date +%s%N) - t0) / 1000000)) ms after kill -9 of the agent"
	# trace-run says so, once, and its program goes on
	wait_until 50 grep -q 'agent' "$WORK/doomed.err" || fail "trace-run did not say the agent is gone"
	grep -i 'agent' "$WORK/doomed.err" | tail -1
	kill -0 "$(cat "$WORK/doomed.trun.pid")" || fail "trace-run ended with the agent"
	trun_stop doomed
}

# ---- steal over the unix agent: the program accepts the pod's own socket ----

# accepts one connection on 7000 (AF_INET, or with argument 6 a dual-stack AF_INET6
# socket), answers with its pid, its socket's family and the kernel's addresses of the
# socket, and keeps it until it has said so on stdout
HANDOFF_PY='
import os, socket, sys, time
v6 = sys.argv[1:] == ["6"]
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::" if v6 else "0.0.0.0", 7000))
s.listen(8)
c, a = s.accept()
c.recv(100)
fam = c.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
c.sendall(("local: pid=%d family=%d peer=%s:%d self=%s:%d\n" % ((os.getpid(), fam) + c.getpeername()[:2] + c.getsockname()[:2])).encode())
print("answered", flush=True)
time.sleep(30)
'

# agent_streams: the streams the agent relays now
agent_streams() {
	"$TRACE_AGENT" status --unix "$WORK/agent.sock" --token-file "$WORK/token" |
		awk '$1 == "streams" { print $2; exit }'
}

# pod_sock_owner PORT PEER_IP: the pid that owns the pod's end of the connection
# PEER_IP -> WEB:PORT in WEB's network namespace
pod_sock_owner() {
	nsenter -n -t "$(pod_pid "$WEB")" ss -tnpeH "sport = :$1" |
		grep -E "[^0-9]${2//./\\.}\]?:" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1
}

test_steal_handoff() { # BACKEND HANDOFF(on|off) [USER [4|6]]
	local backend="$1" handoff="$2" user="${3:-root}" ipv="${4:-4}" got prog owner
	local name="handoff-$1-$2-$user-$ipv"
	echo "{\"feature\": {\"network\": {\"incoming\": {\"mode\": \"steal\", \"fd_handoff\": $([ "$handoff" = on ] && echo true || echo false)}}}}" \
		>"$WORK/$name.json"
	chmod 0644 "$WORK/$name.json"
	trun_bg "$name" "$backend" "$user" -vv -f "$WORK/$name.json" -- "$PYTHON" -c "$HANDOFF_PY" "$ipv"
	got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line hi)
	echo "answer: $got"
	# the kernel's own answers on the socket: the client pod, the pod's address
	local mapped=""
	[ "$ipv" = 4 ] || mapped="::ffff:"
	assert_contains "$got" "peer=$mapped$CLI_IP:" "getpeername"
	assert_contains "$got" "self=$mapped$WEB_IP:7000" "getsockname"
	wait_until 50 grep -q answered "$WORK/$name.out" || fail "python did not answer"
	prog=$(sed -n 's/.*pid=\([0-9]*\) .*/\1/p' <<<"$got")
	# a dual-stack listener's accept gives an IPv6 socket (v4-mapped), as the kernel's
	assert_contains "$got" "family=$([ "$ipv" = 6 ] && echo 10 || echo 2) " "the accepted socket's family"
	owner=$(pod_sock_owner 7000 "$CLI_IP")
	echo "the pod's end of the connection belongs to pid $owner (the program: $prog, agent: $(agent_pid "$WORK" agent))"
	if [ "$handoff" = on ]; then
		assert_eq "$prog" "$owner" "the program owns the pod's socket"
		grep -q "the pod's socket handed to the program" "$WORK/$name.err" ||
			fail "trace-run did not log the hand-off"
		assert_eq 0 "$(agent_streams)" "streams the agent relays"
	else
		assert_eq "$(agent_pid "$WORK" agent)" "$owner" "the agent owns the pod's socket (relay)"
		grep -q "steal, relayed" "$WORK/$name.err" || fail "trace-run did not log the relay"
		[ "$(agent_streams)" -ge 1 ] || fail "the agent relays no stream"
	fi
	trun_stop "$name"
}

# ---- HTTP filter: matching requests to the local program, the rest to the pod ----

test_http_filter() { # BACKEND
	local backend="$1" name="filter-$1" got
	cat >"$WORK/filter.json" <<EOF
{"feature": {"network": {"incoming": {"mode": "steal",
  "http_filter": {"header_filter": "^x-hermit: local$"}}}}}
EOF
	: >"$WORK/$name.log"
	trun_bg "$name" "$backend" root -f "$WORK/filter.json" -- \
		"$REQLOG" serve -listen :8080 -name local -log "$WORK/$name.log"
	# one keep-alive connection, every other request with the header
	got=$(cli reqlog client -url "http://$WEB_IP:8080" -n 20 -c 1 -keepalive -size 100 \
		-header "X-Hermit: local" -header-every 2 -expect /tmp/mixed)
	assert_eq "answers local=10 pod=10" "$got" "mixed keep-alive connection"
	cli cat /tmp/mixed | awk 'NR % 2 == 1' >"$WORK/$name.expect"
	same_requests "$WORK/$name.expect" "$WORK/$name.log"
	got=$(cli wget -qO- "http://$WEB_IP:8080/plain")
	assert_contains "$got" "pod GET /plain" "a request without the header"
	trun_stop "$name"
}

# ---- a flood of connections: trace-run's threads stay bounded ----

# A server that accepts nothing until SIGUSR1 (as a busy program would not, for a
# while), then answers "local: LINE" to each connection's first line.
SLOW_PY='
import signal, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000))
s.listen(16)
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
print("pid", __import__("os").getpid(), flush=True)
while not go:
    signal.pause()
while True:
    c, a = s.accept()
    c.settimeout(2)
    try:
        line = c.recv(100)
        if line:
            c.sendall(b"local: " + line)
    except OSError:
        pass
    c.close()
'

# threads_of PID: the Threads line of its /proc status
threads_of() { awk '/^Threads:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# A pod is hostile to the developer's machine: 2000 connections at once to a stolen
# port of a program that accepts nothing meanwhile made trace-run start a thread per
# connection (each waiting up to 5 s for the program's full listen queue). Now it has
# at most INCOMING_THREADS_MAX (128) delivery threads, 256 more connections wait, the
# rest are refused with a warning, and the program serves a client once the flood is
# over.
test_flood_bounded_threads() { # BACKEND
	local backend="$1" name="flood-$1" pid prog base max=0 n got i
	trun_bg "$name" "$backend" root --incoming steal -- "$PYTHON" -u -c "$SLOW_PY"
	pid=$(cat "$WORK/$name.trun.pid")
	wait_until 100 grep -q '^pid ' "$WORK/$name.out" || fail "the server did not start"
	prog=$(awk '/^pid / {print $2}' "$WORK/$name.out")
	base=$(threads_of "$pid")
	rm -f "$WORK/$name.flood-done"
	"$PYTHON" - "$WEB_IP" 7000 2000 "$WORK/$name.flood-done" <<'PY' &
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
socks = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((sys.argv[1], int(sys.argv[2])))
    socks.append(s)
time.sleep(8)  # held while trace-run's threads are counted
for s in socks:
    s.close()
open(sys.argv[4], "w").write("done\n")
PY
	local flood=$!
	while [ ! -f "$WORK/$name.flood-done" ] && kill -0 "$flood" 2>/dev/null; do
		n=$(threads_of "$pid")
		[ "${n:-0}" -le "$max" ] || max=$n
		sleep 0.05
	done
	wait "$flood"
	echo "trace-run's threads: $base before the flood, at most $max during it"
	# + 32: a delivery thread leaves the count when its last connection is done, a moment
	# before it has exited, and a new one may start in that moment (10 such seen under ASan)
	[ "$max" -le $((base + 128 + 32)) ] ||
		fail "trace-run ran $max threads for a flood of 2000 connections (cap 128 + $base + 32 on their way out)"
	# 128 delivering and 256 waiting: the agent offered more (up to its 1024 streams)
	grep 'connection(s) to port 7000 refused: 128 are being delivered' "$WORK/$name.err" ||
		fail "trace-run did not say it refused connections: $(tail -3 "$WORK/$name.err")"
	# the program serves once the flood is over: when the flood's connections that
	# wait for it are gone (the agent holds a session's unclaimed ones up to its
	# --stream-ttl, 10 s, and refuses more meanwhile)
	kill -USR1 "$prog"
	for i in $(seq 40); do
		got=$(cli reqlog tcp -addr "$WEB_IP:7000" -line "after the flood $i" 2>&1) &&
			[[ "$got" == local:* ]] && break
		sleep 1
	done
	echo "after the flood, attempt $i: $got"
	assert_contains "$got" "local: after the flood" "a client after the flood"
	trun_stop "$name"
}

# INCOMING_TESTS=TEXT runs only the checks whose name contains TEXT (while iterating)
check() {
	[[ -z "${INCOMING_TESTS:-}" || "$1" == *"$INCOMING_TESTS"* ]] || return 0
	run_test "$@"
}

for mode in steal mirror; do
	for backend in seccomp ptrace; do
		check "go HTTP $mode ($backend, root)" test_go_http "$mode" "$backend" root
	done
	check "go HTTP $mode (seccomp, nobody)" test_go_http "$mode" seccomp nobody
	check "python http.server $mode (seccomp)" test_python_http "$mode" seccomp
	check "raw TCP echo $mode (seccomp)" test_tcp_echo "$mode" seccomp
done
check "python http.server steal (ptrace)" test_python_http steal ptrace
check "raw TCP echo steal (ptrace)" test_tcp_echo steal ptrace
check "accept/getpeername show the client, port taken here (seccomp)" test_peer_and_taken_port seccomp
check "accept/getpeername show the client, port taken here (ptrace)" test_peer_and_taken_port ptrace
check "C server, glibc, blocking accept (seccomp)" test_c_accept glibc seccomp
check "C server, musl, blocking accept (seccomp)" test_c_accept musl seccomp
check "C server, musl, blocking accept (ptrace)" test_c_accept musl ptrace
check "busybox httpd steal (seccomp)" test_busybox_httpd seccomp
check "a signal reaches python in a blocking accept (seccomp)" test_signal_in_accept seccomp
check "a signal reaches python in a blocking accept (ptrace)" test_signal_in_accept ptrace
check "steal hands the pod's socket to the program (seccomp)" test_steal_handoff seccomp on
check "steal hands the pod's socket to the program (ptrace)" test_steal_handoff ptrace on
check "steal hands the pod's socket to the program (seccomp, nobody)" test_steal_handoff seccomp on nobody
check "steal hands the pod's socket to a dual-stack listener (seccomp)" test_steal_handoff seccomp on root 6
check "steal hands the pod's socket to a dual-stack listener (ptrace)" test_steal_handoff ptrace on root 6
check "steal with fd_handoff false: relayed (seccomp)" test_steal_handoff seccomp off
check "a second steal of a port is refused" test_second_steal_refused
check "the session ends with connections open" test_session_end_open_connections
check "HTTP filter on a keep-alive connection (seccomp)" test_http_filter seccomp
check "HTTP filter on a keep-alive connection (ptrace)" test_http_filter ptrace
check "a closed listener gives the port back (seccomp)" test_listener_closed seccomp
check "a closed listener gives the port back (ptrace)" test_listener_closed ptrace
check "on_concurrent_steal continue" test_concurrent_continue
check "the notice, and -q" test_notice_quiet
check "port_mapping and ignore_ports" test_port_mapping_and_ignore
check "two SO_REUSEPORT listeners share the port" test_reuseport
check "a flood of 2000 connections: trace-run's threads stay bounded (seccomp)" test_flood_bounded_threads seccomp
# last: it kills the agent
check "kill -9 of the agent during a steal: the pod answers again" test_agent_killed
