#!/usr/bin/env bash
# trace-run's outgoing traffic and DNS: programs run on this machine under
# `trace-run --target pod/NAME` reach servers in other pods from the target pod's
# address, resolve names with the target pod's resolver, and see consistent addresses
# (getpeername, recvfrom sources). Static Go (podprobe, httpbench), glibc curl, busybox
# (static) wget and nslookup, python3, a static musl program; with the seccomp and the
# ptrace backend. Plus `trace-run port-forward`.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

ECHO_SERVER="$BUILD/tests/echo_server"
DNS_RESPONDER="$BUILD/tests/dns_responder"
HTTPSERVE="$BUILD/apps/httpserve"
PODPROBE="$BUILD/apps/podprobe"
HTTPBENCH="$BUILD/apps/httpbench"
for f in "$ECHO_SERVER" "$DNS_RESPONDER" "$HTTPSERVE" "$PODPROBE" "$HTTPBENCH" "$TRACE_AGENT" \
	"$TRACE_RUN"; do
	[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
done
PYTHON=/usr/bin/python3
BUSYBOX=$(command -v busybox)

WORK=$(mktemp -d /tmp/hermit-trnet-test.XXXXXX)
chmod 0755 "$WORK"
TGT=$(pod_name tgt) # the target: the program's traffic must come from it
SRV=$(pod_name srv) # a TCP echo server
WEB=$(pod_name web) # an HTTP server
DNS=$(pod_name dns) # the resolver the target's /etc/resolv.conf names
cleanup() {
	local f
	agent_stop "$WORK" main >/dev/null 2>&1
	agent_stop "$WORK" tcp >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$TGT" "$SRV" "$WEB" "$DNS"
	rm -rf "$WORK"
}
trap cleanup EXIT

# trace-pod runs only a rootfs other host users cannot reach: a 0700 directory holds it
mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
cp -a "$TEST_ROOTFS" "$ROOTFS"
for f in "$ECHO_SERVER" "$DNS_RESPONDER" "$HTTPSERVE"; do
	tp deploy "$f" --rootfs "$ROOTFS" >/dev/null
done

ECHO_PORT=7000
NAME=web.hermit.test
ECHO_NAME=echo.hermit.test
pod_logs() { "$TRACE_POD" logs "$1" 2>/dev/null; }
wait_listening() {
	wait_until 100 sh -c "'$TRACE_POD' logs '$1' 2>&1 | grep -q 'listening'" ||
		fail "pod $1 did not start its server: $(pod_logs "$1")"
}

tp run -d --name "$SRV" --rootfs "$ROOTFS" -- echo_server -p "$ECHO_PORT" </dev/null >/dev/null
tp run -d --name "$WEB" --rootfs "$ROOTFS" -- httpserve -listen :8080 -body "hello from the web pod" \
	</dev/null >/dev/null
wait_listening "$SRV"
wait_listening "$WEB"
SRV_IP=$(pod_ip "$SRV")
WEB_IP=$(pod_ip "$WEB")
tp run -d --name "$DNS" --rootfs "$ROOTFS" -- dns_responder -p 53 "$NAME=$WEB_IP" \
	"$ECHO_NAME=$SRV_IP" </dev/null >/dev/null
wait_listening "$DNS"
DNS_IP=$(pod_ip "$DNS")
tp run -d --name "$TGT" --dns "$DNS_IP" --rootfs "$ROOTFS" -- sleep 1000000 </dev/null >/dev/null
wait_until 50 sh -c "[ -n \"\$('$TRACE_POD' ls --json | grep -F '\"$TGT\"')\" ]"
TGT_IP=$(pod_ip "$TGT")
echo "pods: target $TGT_IP, echo $SRV_IP, web $WEB_IP, resolver $DNS_IP"
[ -n "$TGT_IP" ] && [ -n "$SRV_IP" ] && [ -n "$WEB_IP" ] && [ -n "$DNS_IP" ] || fail "a pod has no IP"
# pod addresses are reused as pods come and go: a neighbour entry of the host's bridge
# may still name an earlier pod's MAC, which breaks the host->pod path the `local`
# checks take (pod-to-pod traffic through the agent is not affected)
for ip in "$SRV_IP" "$WEB_IP" "$DNS_IP" "$TGT_IP"; do
	ip neigh del "$ip" dev hermit0 2>/dev/null || true
done
# the host resolver does not know the test names: a local lookup would fail
! getent hosts "$NAME" >/dev/null || fail "$NAME resolves on the host: the checks prove nothing"

agent_start "$WORK" main

# TR BACKEND [trace-run options] -- PROGRAM ARGS: trace-run against the target pod
TR() {
	local backend="$1"
	shift
	timeout 60 "$TRACE_RUN" --agent-unix "$WORK/main.sock" --token-file "$WORK/token" \
		--target "pod/$TGT" --backend "$backend" "$@"
}
BACKENDS="seccomp ptrace"

test_go_connect() {
	local b out local_addr
	for b in $BACKENDS; do
		out=$(TR "$b" -- "$PODPROBE" -connect "$SRV_IP:$ECHO_PORT" -send "hello-$b")
		echo "$b: $out"
		# getpeername: the original destination; getsockname: the pod-side address
		assert_contains "$out" "remote=$SRV_IP:$ECHO_PORT" "getpeername"
		assert_contains "$out" "local=$TGT_IP:" "getsockname"
		assert_contains "$out" "hello-$b" "echo"
		local_addr=$(sed -n 's/.* local=\([^ ]*\) .*/\1/p' <<<"$out")
		# the server saw the connection come from the target pod, from that very port
		wait_until 50 sh -c "'$TRACE_POD' logs '$SRV' | grep -qF 'accept $local_addr on'" ||
			fail "echo server log has no 'accept $local_addr': $(pod_logs "$SRV" | tail -3)"
	done
}

test_go_dns_http() {
	local b out
	for b in $BACKENDS; do
		out=$(TR "$b" -- "$PODPROBE" -resolve "$NAME" -get "http://$NAME:8080/" \
			-get "http://$NAME:8080/echo")
		echo "$b: $out"
		assert_contains "$out" "resolve $NAME $WEB_IP" "Go resolver"
		assert_contains "$out" "hello from the web pod" "HTTP body"
		assert_contains "$out" "remote=$TGT_IP:" "the web server's view of the client"
	done
	wait_until 50 sh -c "'$TRACE_POD' logs '$DNS' | grep -q 'from $TGT_IP:'" ||
		fail "the resolver saw no query from the target pod: $(pod_logs "$DNS" | tail -3)"
}

test_curl() {
	local b out
	for b in $BACKENDS; do
		out=$(TR "$b" -- curl -sS "http://$WEB_IP:8080/echo")
		assert_contains "$out" "remote=$TGT_IP:" "curl by address ($b)"
		out=$(TR "$b" -- curl -sS "http://$NAME:8080/")
		assert_eq "hello from the web pod" "$out" "curl by name ($b)"
	done
}

test_busybox() {
	local b out
	for b in $BACKENDS; do
		out=$(TR "$b" -- "$BUSYBOX" wget -qO- "http://$NAME:8080/echo")
		assert_contains "$out" "remote=$TGT_IP:" "busybox wget by name ($b)"
		# nslookup has a resolver of its own: connect + write/read on UDP
		out=$(TR "$b" -- "$BUSYBOX" nslookup "$ECHO_NAME")
		echo "$out"
		assert_contains "$out" "Address: $SRV_IP" "busybox nslookup ($b)"
	done
}

# DNS the way musl does it: sendto() on an unconnected socket, then recvfrom/recvmsg,
# checking that the answer comes from the nameserver's address
PY_UDP='
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
for part in name.split("."):
    q += bytes([len(part)]) + part.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
for family, dst in ((socket.AF_INET, server), (socket.AF_INET6, "::ffff:" + server)):
    for blocking in (False, True):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if not blocking:
            s.settimeout(10)
        s.sendto(q, (dst, 53))
        data, addr = s.recvfrom(512)
        print("recvfrom", family == socket.AF_INET6 and 6 or 4, socket.inet_ntoa(data[-4:]), addr[0], addr[1])
        s.sendto(q, (dst, 53))
        data, anc, flags, addr = s.recvmsg(512)
        print("recvmsg", family == socket.AF_INET6 and 6 or 4, socket.inet_ntoa(data[-4:]), addr[0], addr[1])
        s.close()
'

test_python() {
	local b out
	for b in $BACKENDS; do
		out=$(TR "$b" -- "$PYTHON" -c "import urllib.request; print(urllib.request.urlopen('http://$NAME:8080/echo').read().decode())")
		assert_contains "$out" "remote=$TGT_IP:" "python urllib ($b)"
		out=$(TR "$b" -- "$PYTHON" -c "$PY_UDP" "$DNS_IP" "$NAME")
		echo "$b: $out"
		assert_eq 8 "$(grep -c " $WEB_IP " <<<"$out")" "answers ($b)"
		assert_eq 4 "$(grep -c " 4 $WEB_IP $DNS_IP 53\$" <<<"$out")" "IPv4 sources ($b)"
		assert_eq 4 "$(grep -c " 6 $WEB_IP ::ffff:$DNS_IP 53\$" <<<"$out")" "IPv6 sources ($b)"
	done
}

# musl's resolver: sendto() to each nameserver on an unconnected socket, and answers
# whose source is not the nameserver's address are dropped
MUSL_GAI_C='
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
int main(int argc, char **argv)
{
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
	int r = getaddrinfo(argv[1], "80", &hints, &res);
	if (r) {
		printf("error %s\n", gai_strerror(r));
		return 1;
	}
	char buf[64];
	for (struct addrinfo *a = res; a; a = a->ai_next)
		printf("%s\n", inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr,
					 buf, sizeof(buf)));
	return 0;
}
'

test_musl() {
	command -v musl-gcc >/dev/null || { echo "no musl-gcc (musl-tools): skipped"; return 0; }
	printf '%s' "$MUSL_GAI_C" >"$WORK/gai.c"
	musl-gcc -static -O2 -o "$WORK/gai-musl" "$WORK/gai.c"
	local b out
	for b in $BACKENDS; do
		out=$(TR "$b" -- "$WORK/gai-musl" "$NAME")
		assert_eq "$WEB_IP" "$out" "musl getaddrinfo ($b)"
	done
}

test_ipv6_socket() {
	local out
	out=$(TR seccomp -- "$PYTHON" -c "
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.connect(('::ffff:$SRV_IP', $ECHO_PORT))
print('peer', s.getpeername()[0], s.getpeername()[1], 'local', s.getsockname()[0])
s.sendall(b'six'); s.shutdown(socket.SHUT_WR); print('echo', s.recv(10).decode())")
	assert_contains "$out" "peer ::ffff:$SRV_IP $ECHO_PORT local ::ffff:$TGT_IP" "v4-mapped TCP"
	assert_contains "$out" "echo six" "v4-mapped echo"
}

# A unix agent hands the pod's socket itself to the program (PROTO_FEAT_TCP_FD): the
# program's fd is a socket of the target pod's network namespace (ss there lists its
# inode), its non-blocking mode and the options it set before connect() survive, and
# getsockname/getpeername are the kernel's own answers.
test_tcp_handoff() {
	local b out ino pid
	pid=$(pod_field "$TGT" pid)
	for b in $BACKENDS; do
		out=$(TR "$b" -vv -- "$PODPROBE" -connect "$SRV_IP:$ECHO_PORT" -send "handoff-$b" 2>"$WORK/handoff-$b.err")
		assert_contains "$out" "local=$TGT_IP:" "Go getsockname ($b)"
		assert_contains "$out" "remote=$SRV_IP:$ECHO_PORT" "Go getpeername ($b)"
		assert_contains "$out" "handoff-$b" "Go echo ($b)"
		grep -q "connect $SRV_IP:$ECHO_PORT through the pod .*the socket is the pod's" \
			"$WORK/handoff-$b.err" || fail "no hand-off ($b): $(grep -i connect "$WORK/handoff-$b.err")"
		rm -f "$WORK/go-on"
		TR "$b" -- "$PYTHON" -c "
import fcntl, os, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
print('connect', s.connect_ex(('$SRV_IP', $ECHO_PORT)))
select.select([], [s], [], 10)
print('so_error', s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
print('nonblock', bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK))
print('cloexec', bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
print('nodelay', s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
print('keepalive', s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
print('rcvbuf', s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
print('local', s.getsockname()[0], 'peer', s.getpeername()[0], s.getpeername()[1])
before = os.readlink('/proc/self/fd/%d' % s.fileno())
print('again', s.connect_ex(('$SRV_IP', $ECHO_PORT)))
print('same', before == os.readlink('/proc/self/fd/%d' % s.fileno()))
print('fd', os.readlink('/proc/self/fd/%d' % s.fileno()))
sys.stdout.flush()
for _ in range(200):
    if os.path.exists('$WORK/go-on'):
        break
    time.sleep(0.05)
s.setblocking(True)
s.sendall(b'seven'); s.shutdown(socket.SHUT_WR); print('echo', s.recv(10).decode())
" >"$WORK/handoff-py-$b.out" 2>&1 &
		local tr=$!
		wait_until 100 grep -q '^fd ' "$WORK/handoff-py-$b.out" ||
			fail "python did not connect ($b): $(cat "$WORK/handoff-py-$b.out")"
		ino=$(sed -n 's/^fd socket:\[\([0-9]*\)\]$/\1/p' "$WORK/handoff-py-$b.out")
		# the program's socket lives in the target pod's network namespace
		nsenter -t "$pid" -n ss -tne state established | grep -q " ino:$ino " ||
			fail "socket $ino is not in pod $TGT's netns ($b): $(nsenter -t "$pid" -n ss -tne)"
		touch "$WORK/go-on"
		wait "$tr" || fail "python under trace-run ($b) failed: $(cat "$WORK/handoff-py-$b.out")"
		out=$(cat "$WORK/handoff-py-$b.out")
		echo "$b: $out"
		assert_contains "$out" "connect 115" "non-blocking connect says EINPROGRESS ($b)"
		assert_contains "$out" "so_error 0" "SO_ERROR ($b)"
		assert_contains "$out" "nonblock True" "O_NONBLOCK survives ($b)"
		assert_contains "$out" "cloexec True" "FD_CLOEXEC survives ($b)"
		assert_contains "$out" "nodelay 1" "TCP_NODELAY copied ($b)"
		assert_contains "$out" "keepalive 1" "SO_KEEPALIVE copied ($b)"
		assert_contains "$out" "rcvbuf 131072" "SO_RCVBUF copied ($b)"
		assert_contains "$out" "local $TGT_IP peer $SRV_IP $ECHO_PORT" "kernel's names ($b)"
		# a second connect() is the kernel's (0 on Linux for a finished non-blocking
		# connect, as natively) on the same socket: no new hand-off
		assert_contains "$out" "again 0" "connect() again ($b)"
		assert_contains "$out" "same True" "connect() again keeps the socket ($b)"
		assert_contains "$out" "echo seven" "echo ($b)"
	done
}

# --agent HOST:PORT (a cluster's port-forward): the program's own socket connects to the
# agent and carries the stream, with no relay of trace-run's in between
test_tcp_agent() {
	local port b out local_addr
	port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	agent_start "$WORK" tcp --listen "127.0.0.1:$port"
	TRT() {
		local backend="$1"
		shift
		timeout 60 "$TRACE_RUN" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
			--target "pod/$TGT" --backend "$backend" "$@"
	}
	for b in $BACKENDS; do
		out=$(TRT "$b" -vv -- "$PODPROBE" -connect "$SRV_IP:$ECHO_PORT" -send "direct-$b" 2>"$WORK/tcp-$b.err")
		echo "$b: $out"
		assert_contains "$out" "remote=$SRV_IP:$ECHO_PORT" "getpeername ($b, TCP agent)"
		assert_contains "$out" "local=$TGT_IP:" "getsockname ($b, TCP agent)"
		assert_contains "$out" "direct-$b" "echo ($b, TCP agent)"
		local_addr=$(sed -n 's/.* local=\([^ ]*\) .*/\1/p' <<<"$out")
		wait_until 50 sh -c "'$TRACE_POD' logs '$SRV' | grep -qF 'accept $local_addr on'" ||
			fail "echo server log has no 'accept $local_addr': $(pod_logs "$SRV" | tail -3)"
		grep -q "connect $SRV_IP:$ECHO_PORT through the pod .*the socket is the agent's stream" \
			"$WORK/tcp-$b.err" || fail "not the direct path ($b): $(grep -i connect "$WORK/tcp-$b.err")"
		out=$(TRT "$b" -- "$PODPROBE" -get "http://$WEB_IP:8080/echo" -get "http://$WEB_IP:8080/")
		assert_contains "$out" "remote=$TGT_IP:" "the web server's view of the client ($b, TCP agent)"
		assert_contains "$out" "hello from the web pod" "HTTP body ($b, TCP agent)"
		out=$(TRT "$b" -- curl -sS "http://$WEB_IP:8080/echo")
		assert_contains "$out" "remote=$TGT_IP:" "curl ($b, TCP agent)"
		out=$(TRT "$b" -- "$PYTHON" -c "
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setblocking(False)
assert s.connect_ex(('::ffff:$SRV_IP', $ECHO_PORT)) in (0, 115)
import select; select.select([], [s], [], 10)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
s.setblocking(True)
print('peer', s.getpeername()[0], s.getpeername()[1], 'local', s.getsockname()[0])
s.sendall(b'six'); s.shutdown(socket.SHUT_WR); print('echo', s.recv(10).decode())")
		assert_contains "$out" "peer ::ffff:$SRV_IP $ECHO_PORT local ::ffff:$TGT_IP" "non-blocking v4-mapped ($b, TCP agent)"
		assert_contains "$out" "echo six" "v4-mapped echo ($b, TCP agent)"
	done
	agent_stop "$WORK" tcp >/dev/null 2>&1
}

test_errors() {
	local b out rc
	for b in $BACKENDS; do
		rc=0
		out=$(TR "$b" -- "$PODPROBE" -connect "$SRV_IP:$((ECHO_PORT + 1))" 2>&1) || rc=$?
		assert_eq 1 "$rc" "podprobe to a closed port ($b)"
		assert_contains "$out" "connection refused" "Go's error ($b)"
		rc=0
		TR "$b" -- curl -sS "http://$SRV_IP:$((ECHO_PORT + 1))/" >/dev/null 2>&1 || rc=$?
		assert_eq 7 "$rc" "curl to a closed port ($b)"
	done
}

test_slow_connect() {
	# a connect the pod cannot complete quickly (nobody has that address: ARP fails,
	# EHOSTUNREACH after ~3 s) waits in its own thread; the other calls go on
	local out ms
	out=$(TR seccomp -- bash -c "'$PODPROBE' -timeout 30s -connect 10.213.255.254:80 2>&1 |
		sed 's/^/slow: /' & s=\$(date +%s%N)
		for i in \$(seq 10); do curl -s http://$WEB_IP:8080/ >/dev/null || echo fail; done
		echo fast \$(( (\$(date +%s%N) - s) / 1000000 )); wait")
	echo "$out"
	assert_not_contains "$out" fail "connections meanwhile"
	assert_contains "$out" "slow: podprobe: connect 10.213.255.254:80" "the slow connect's error"
	ms=$(sed -n 's/^fast //p' <<<"$out")
	[ "$ms" -lt 2000 ] || fail "10 connections took ${ms} ms next to a pending connect"
}

test_local_stays_local() {
	local out port
	# loopback: a server only on this machine's 127.0.0.1
	"$PYTHON" -c "
import socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
print(s.getsockname()[1], flush=True)
c, a = s.accept(); c.recv(100); c.sendall(b'from the host'); c.close()" >"$WORK/lport" &
	echo $! >"$WORK/lserver.pid"
	wait_until 50 test -s "$WORK/lport"
	port=$(cat "$WORK/lport")
	out=$(TR seccomp -- "$PODPROBE" -connect "127.0.0.1:$port" -send x)
	assert_contains "$out" "remote=127.0.0.1:$port" "loopback peer"
	assert_contains "$out" "from the host" "loopback reply"
	# a `local` filter keeps a destination local: the server sees the host's address
	echo "{\"feature\":{\"network\":{\"outgoing\":{\"filter\":{\"local\":[\"$SRV_IP:$ECHO_PORT\"]}}}}}" \
		>"$WORK/local.json"
	out=$(TR seccomp -f "$WORK/local.json" -- "$PODPROBE" -connect "$SRV_IP:$ECHO_PORT" -send y)
	assert_not_contains "$out" "local=$TGT_IP:" "filtered connection"
	# a name filter matches through the DNS answers the program got
	echo "{\"feature\":{\"network\":{\"outgoing\":{\"filter\":{\"local\":[\"$NAME\"]}}}}}" \
		>"$WORK/localname.json"
	out=$(TR ptrace -f "$WORK/localname.json" -- "$PODPROBE" -get "http://$NAME:8080/echo")
	assert_contains "$out" "remote=" "HTTP through the name filter"
	assert_not_contains "$out" "remote=$TGT_IP:" "name-filtered connection"
}

test_many_connections() {
	local b n
	for b in $BACKENDS; do
		n=$(TR "$b" -- bash -c "for i in \$(seq 100); do curl -s http://$WEB_IP:8080/ & done; wait" |
			grep -o "hello from the web pod" | wc -l)
		assert_eq 100 "$n" "parallel curls ($b)"
		# Go with every P busy: preemption signals during deferred connects
		TR "$b" -- "$HTTPBENCH" -url "http://$WEB_IP:8080/" -c 8 -d 1s
	done
}

test_unprivileged() {
	command -v setpriv >/dev/null || { echo "no setpriv: skipped"; return 0; }
	install -m 0644 "$WORK/token" "$WORK/token.nobody"
	local out
	out=$(timeout 60 setpriv --reuid 65534 --regid 65534 --clear-groups "$TRACE_RUN" \
		--agent-unix "$WORK/main.sock" --token-file "$WORK/token.nobody" --target "pod/$TGT" \
		-- "$PODPROBE" -resolve "$NAME" -connect "$SRV_IP:$ECHO_PORT" -send nobody)
	echo "$out"
	assert_contains "$out" "resolve $NAME $WEB_IP" "resolve as nobody"
	assert_contains "$out" "local=$TGT_IP:" "connect as nobody"
}

test_port_forward() {
	local lport1=$((20000 + RANDOM % 10000)) lport2 out
	lport2=$((lport1 + 1))
	"$TRACE_RUN" port-forward --agent-unix "$WORK/main.sock" --token-file "$WORK/token" \
		--target "pod/$TGT" -v -L "$lport1:$NAME:8080" -L "127.0.0.1:$lport2:$SRV_IP:$ECHO_PORT" \
		2>"$WORK/pf.log" &
	local pf=$!
	echo $pf >"$WORK/pf.pid"
	wait_until 50 grep -q "forwarding 127.0.0.1:$lport2" "$WORK/pf.log" ||
		fail "port-forward did not start: $(cat "$WORK/pf.log")"
	out=$(curl -sS "http://127.0.0.1:$lport1/echo")
	assert_contains "$out" "remote=$TGT_IP:" "HTTP through the forward (a name resolved in the pod)"
	out=$("$PYTHON" -c "
import socket
s = socket.create_connection(('127.0.0.1', $lport2)); s.sendall(b'forwarded'); s.shutdown(socket.SHUT_WR)
print(s.recv(100).decode())")
	assert_eq forwarded "$out" "echo through the forward"
	kill -TERM "$pf"
	wait "$pf" || fail "port-forward exited with $?: $(cat "$WORK/pf.log")"
	grep -q "$NAME:8080: 127.0.0.1:.* -> $WEB_IP:8080 (from $TGT_IP:" "$WORK/pf.log" ||
		fail "no connection logged: $(cat "$WORK/pf.log")"
	# a name the pod cannot resolve: the connection is refused, port-forward goes on
	"$TRACE_RUN" port-forward --agent-unix "$WORK/main.sock" --token-file "$WORK/token" \
		--target "pod/$TGT" -L "$lport1:nothing.hermit.test:80" 2>"$WORK/pf2.log" &
	pf=$!
	echo $pf >"$WORK/pf.pid"
	sleep 0.5
	! curl -sS -m 10 "http://127.0.0.1:$lport1/" 2>/dev/null || fail "an unknown name was reached"
	kill -0 "$pf" || fail "port-forward died: $(cat "$WORK/pf2.log")"
	kill -TERM "$pf"
	wait "$pf" || true
	grep -q "nothing.hermit.test" "$WORK/pf2.log" || fail "no error logged: $(cat "$WORK/pf2.log")"
}

run_test "net: Go connect from the pod's address, getpeername/getsockname" test_go_connect
run_test "net: Go's own resolver and HTTP by name" test_go_dns_http
run_test "net: curl (glibc) by address and by name" test_curl
run_test "net: busybox wget and nslookup" test_busybox
run_test "net: python urllib, unconnected UDP with real sources" test_python
run_test "net: musl's resolver (static)" test_musl
run_test "net: an IPv6 socket to a v4-mapped address" test_ipv6_socket
run_test "net: a unix agent hands the pod's socket to the program" test_tcp_handoff
run_test "net: a TCP agent address, the program's socket carries the stream" test_tcp_agent
run_test "net: refused connects carry the pod's errno" test_errors
run_test "net: a slow connect does not hold up the others" test_slow_connect
run_test "net: loopback, local filters and name filters stay local" test_local_stays_local
run_test "net: 100 parallel connections, Go under load" test_many_connections
run_test "net: as an unprivileged user" test_unprivileged
run_test "net: port-forward" test_port_forward
