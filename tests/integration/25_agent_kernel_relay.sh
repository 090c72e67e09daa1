#!/usr/bin/env bash
# The agent's kernel relay: TCP streams of TCP clients (trace-run --agent HOST:PORT, a
# cluster's port-forward) moved by a BPF sk_skb program instead of the relay thread.
# Servers are python3 processes in a pod's network namespace (nsenter); clients are
# python3 under trace-run through a TCP agent with the kernel relay (the default) and
# one with --no-kernel-relay: both must give the same answers. Each hazard of moving
# bytes in the kernel is attacked: EOF before the last bytes, a server that speaks
# first, a reset, a client that floods a server that does not read.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs
for f in "$TRACE_AGENT" "$TRACE_RUN"; do
	[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
done
PYTHON=/usr/bin/python3

WORK=$(mktemp -d /tmp/hermit-krelay-test.XXXXXX)
chmod 0755 "$WORK"
TGT=$(pod_name tgt) # the target: the program's connections leave from it
SRV=$(pod_name srv) # the servers' network namespace
cleanup() {
	local f
	agent_stop "$WORK" kr >/dev/null 2>&1
	agent_stop "$WORK" user >/dev/null 2>&1
	agent_stop "$WORK" budget >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$TGT" "$SRV"
	rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
cp -a "$TEST_ROOTFS" "$ROOTFS"
tp run -d --name "$SRV" --rootfs "$ROOTFS" -- sleep 1000000 </dev/null >/dev/null
tp run -d --name "$TGT" --rootfs "$ROOTFS" -- sleep 1000000 </dev/null >/dev/null
wait_until 50 sh -c "[ -n \"\$('$TRACE_POD' ls --json | grep -F '\"$SRV\"')\" ]"
wait_until 50 sh -c "[ -n \"\$('$TRACE_POD' ls --json | grep -F '\"$TGT\"')\" ]"
SRV_IP=$(pod_ip "$SRV")
[ -n "$SRV_IP" ] && [ -n "$(pod_ip "$TGT")" ] || fail "a pod has no IP"

free_port() {
	"$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
KR_PORT=$(free_port)
USER_PORT=$(free_port)
agent_start "$WORK" kr --listen "127.0.0.1:$KR_PORT"
agent_start "$WORK" user --listen "127.0.0.1:$USER_PORT" --no-kernel-relay

# server NAME PORT PYTHON-CODE: a python3 server in pod SRV's network namespace; the
# code runs once per accepted connection with `c` the socket, then c is closed
server() {
	local name="$1" port="$2" code="$3"
	nsenter -t "$(pod_pid "$SRV")" -n "$PYTHON" -c "
import hashlib, os, socket, struct, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('$SRV_IP', $port)); l.listen(16)
print('listening', flush=True)
while True:
    c, _ = l.accept()
$(sed 's/^/    /' <<<"$code")
    c.close()
" >"$WORK/$name.out" 2>&1 &
	echo $! >"$WORK/$name.pid"
	disown # killed by cleanup, without a word from bash
	wait_until 50 grep -q listening "$WORK/$name.out" || fail "server $name: $(cat "$WORK/$name.out")"
}

# client AGENT-NAME PYTHON-CODE: python3 under trace-run through agent kr or user
client() {
	local agent="$1" code="$2" port
	port=$([ "$agent" = kr ] && echo "$KR_PORT" || echo "$USER_PORT")
	timeout 120 "$TRACE_RUN" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
		--target "pod/$TGT" -- "$PYTHON" -c "
import hashlib, os, socket, struct, sys, time
$code"
}

kernel_streams_seen() { grep -c "relayed by the kernel" "$WORK/kr.log" || true; }

server sink 7001 "
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
time.sleep(0.3) # the answer comes well after the client's FIN went through
c.sendall(b'%d %s' % (n, h.hexdigest().encode()))"
server source 7002 "
want = struct.unpack('!Q', c.recv(8))[0]
data = os.urandom(1 << 20)
sent = 0
while sent < want:
    c.sendall(data[:min(len(data), want - sent)]); sent += min(len(data), want - sent)"
server greeter 7003 "
c.sendall(b'220 hello from the server\n')
line = c.makefile('rb').readline()
c.sendall(b'250 you said ' + line)"
server quick 7007 "
c.sendall(b'said and gone\n')"
server resetter 7004 "
c.recv(100)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))"
server slow_sink 7006 "
time.sleep(2) # meanwhile the kernel's credit runs out: bytes are left to the agent
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
    time.sleep(0.001)
c.sendall(b'%d %s' % (n, h.hexdigest().encode()))"
server lazy 7005 "
time.sleep(8)"
server hoarder 7009 "
held = globals().setdefault('held', [])
held.append(os.dup(c.fileno())) # open, never read
if len(held) == 8: # then, a while after the eighth, all reset (unread bytes)
    time.sleep(5)
    for f in held: os.close(f)
    held.clear()"
server half_closer 7008 "
time.sleep(0.5) # once the stream is in the kernel relay (not half closed before)
c.shutdown(socket.SHUT_WR) # its EOF first; then it reads nothing for a while
time.sleep(8)"

# EOF comes after every byte: 16 MiB written and shut down at once arrive whole before
# the server sees its EOF (a FIN forwarded as soon as the client's arrived would cut
# the stream short), and the half-closed stream still carries the server's answer;
# 16 MiB from the server arrive whole before the client's EOF.
test_eof_after_every_byte() {
	local a before out
	for a in kr user; do
		before=$(kernel_streams_seen)
		out=$(client "$a" "
data = os.urandom(16 << 20)
s = socket.create_connection(('$SRV_IP', 7001))
s.sendall(data); s.shutdown(socket.SHUT_WR)
reply = b''
while True:
    b = s.recv(4096)
    if not b: break
    reply += b
print('sink', reply.decode(), len(data), hashlib.sha256(data).hexdigest())
# a FIN of its own, after the bytes went through (not on the last data segment)
s = socket.create_connection(('$SRV_IP', 7001))
s.sendall(b'late'); time.sleep(0.3); s.shutdown(socket.SHUT_WR)
print('bare FIN', s.recv(4096).decode().split()[0])
s = socket.create_connection(('$SRV_IP', 7002))
s.sendall(struct.pack('!Q', 16 << 20))
n = 0
while True:
    b = s.recv(1 << 16)
    if not b: break
    n += len(b)
print('source', n)")
		echo "$a: $out"
		read -r _ n sha want wantsha <<<"$(grep ^sink <<<"$out")"
		assert_eq "$want" "$n" "bytes the server read before EOF ($a)"
		assert_eq "$wantsha" "$sha" "their sha256 ($a)"
		assert_contains "$out" "bare FIN 4" "the answer after a bare FIN ($a)"
		assert_contains "$out" "source $((16 << 20))" "bytes the client read before EOF ($a)"
		if [ "$a" = kr ]; then
			[ "$(kernel_streams_seen)" -ge $((before + 2)) ] ||
				fail "the streams did not go through the kernel relay: $(grep -i 'kernel\|relay' "$WORK/kr.log" | tail -5)"
		fi
	done
	grep -q "relayed by the kernel" "$WORK/user.log" && fail "--no-kernel-relay used the kernel relay"
	return 0
}

# A server that reads late and slowly: the program stops at its limit and leaves bytes
# to the agent, which writes them behind the ones the kernel queued, then lets the
# program go on; the server must read every byte in order
test_bytes_left_to_the_agent_keep_order() {
	local a out moved_before
	for a in kr user; do
		moved_before=$(grep -c 'moved by the agent [1-9]' "$WORK/kr.log" || true)
		out=$(client "$a" "
data = os.urandom(24 << 20)
s = socket.create_connection(('$SRV_IP', 7006))
s.sendall(data); s.shutdown(socket.SHUT_WR)
reply = b''
while True:
    b = s.recv(4096)
    if not b: break
    reply += b
print('slow', reply.decode(), len(data), hashlib.sha256(data).hexdigest())")
		echo "$a: $out"
		read -r _ n sha want wantsha <<<"$(grep ^slow <<<"$out")"
		assert_eq "$want" "$n" "bytes the slow server read ($a)"
		assert_eq "$wantsha" "$sha" "their sha256: the order ($a)"
		if [ "$a" = kr ]; then
			wait_until 50 sh -c "[ \$(grep -c 'moved by the agent [1-9]' '$WORK/kr.log') -gt $moved_before ]" ||
				fail "the agent moved no byte: the test did not reach the limit"
			grep 'moved by the agent [1-9]' "$WORK/kr.log" | tail -1
		fi
	done
}

# A server that speaks first (its greeting waits in the agent's socket before the
# stream is relayed) and a client that writes before it reads anything
test_server_speaks_first() {
	local a out
	for a in kr user; do
		# and one that answers and closes before the stream is relayed: its socket
		# is half closed, which the kernel's map refuses (user-space relay, whole)
		out=$(client "$a" "
s = socket.create_connection(('$SRV_IP', 7007))
time.sleep(0.2)
got = b''
while True:
    b = s.recv(100)
    if not b: break
    got += b
print(got.decode().strip())")
		assert_eq "said and gone" "$out" "a server that answered and closed ($a)"
		out=$(client "$a" "
s = socket.create_connection(('$SRV_IP', 7003))
s.sendall(b'HELO client\n')
f = s.makefile('rb')
print(f.readline().decode().strip()); print(f.readline().decode().strip())")
		echo "$a: $out"
		assert_eq "220 hello from the server
250 you said HELO client" "$out" "greeting, then the answer ($a)"
	done
}

# A reset from the server resets the program's connection (not a clean EOF)
test_reset_goes_through() {
	local a out
	for a in kr user; do
		out=$(client "$a" "
s = socket.create_connection(('$SRV_IP', 7004))
s.sendall(b'x')
try:
    while s.recv(100): pass
    print('clean EOF')
except ConnectionResetError:
    print('reset')")
		echo "$a: $out"
		assert_eq "reset" "$out" "the server's reset ($a)"
	done
}

# A client that floods a server that does not read: what it manages to write is what
# the kernel holds for it. The kernel's queue between the agent's two sockets has no
# bound of its own; the agent's credit must stop the client, as the user-space relay's
# buffers do.
test_flood_is_bounded() {
	local a out n
	for a in kr user; do
		out=$(client "$a" "
s = socket.create_connection(('$SRV_IP', 7005))
s.setblocking(False)
chunk = b'x' * (1 << 16); n = 0; end = time.time() + 4
while time.time() < end:
    try:
        n += s.send(chunk)
    except BlockingIOError:
        time.sleep(0.01)
print(n)")
		n=$(tail -1 <<<"$out")
		echo "$a: the client wrote $((n >> 20)) MiB to a server that does not read"
		[ "$n" -gt 0 ] || fail "the client wrote nothing ($a)"
		[ "$n" -lt $((64 << 20)) ] || fail "the client wrote $((n >> 20)) MiB: nothing holds it back ($a)"
	done
}

# status says the kernel relay is on and counts its streams; --no-kernel-relay says
# it is off, in status and in one log line
test_status_and_flag() {
	local out
	out=$("$TRACE_AGENT" status --agent "127.0.0.1:$KR_PORT" --token-file "$WORK/token")
	assert_contains "$out" "kernel relay on streams" "status of the default agent"
	out=$("$TRACE_AGENT" status --agent "127.0.0.1:$USER_PORT" --token-file "$WORK/token")
	assert_contains "$out" "kernel relay off streams 0" "status with --no-kernel-relay"
	assert_eq 1 "$(grep -c 'kernel relay off (--no-kernel-relay)' "$WORK/user.log")" "the log line"
	# a stream in flight shows in status
	client kr "
s = socket.create_connection(('$SRV_IP', 7005))
time.sleep(3)" &
	local pid=$!
	wait_until 50 sh -c "'$TRACE_AGENT' status --agent 127.0.0.1:$KR_PORT --token-file '$WORK/token' | grep -q 'kernel relay on streams 1'" ||
		fail "status did not count the stream: $("$TRACE_AGENT" status --agent "127.0.0.1:$KR_PORT" --token-file "$WORK/token")"
	wait "$pid"
}

# Without CAP_BPF/CAP_SYS_ADMIN the agent says why once and relays in user space
test_no_capability_fallback() {
	local port
	port=$(free_port)
	timeout 20 setpriv --bounding-set -bpf,-sys_admin -- "$TRACE_AGENT" --no-unix \
		--token-file "$WORK/token" --listen "127.0.0.1:$port" </dev/null 2>"$WORK/nocap.log" &
	local pid=$!
	wait_until 100 grep -q ' ready (pid ' "$WORK/nocap.log" || fail "agent without caps: $(cat "$WORK/nocap.log")"
	kill -TERM "$pid"
	wait "$pid" || true
	grep "kernel relay" "$WORK/nocap.log"
	assert_eq 1 "$(grep -c 'kernel relay off, TCP streams in the user-space relay: .*needs CAP_BPF' "$WORK/nocap.log")" \
		"one line saying why"
}

# kill -9 of the agent leaves no program or map behind (nothing is pinned)
test_kill9_leaves_nothing() {
	local port prog maps
	port=$(free_port)
	agent_start "$WORK" doomed --no-unix --listen "127.0.0.1:$port"
	prog=$(sed -n 's/.*kernel relay on: .*(BPF program \([0-9]*\)).*/\1/p' "$WORK/doomed.log")
	[ -n "$prog" ] && bpftool prog show id "$prog" >/dev/null || fail "no program id in the agent's log"
	maps=$(bpftool -j prog show id "$prog" | "$PYTHON" -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin)["map_ids"])))')
	[ -n "$maps" ] || fail "the program has no maps"
	kill -KILL "$(agent_pid "$WORK" doomed)"
	wait_until 50 sh -c "! bpftool prog show id $prog >/dev/null 2>&1" ||
		fail "program $prog still loaded after kill -9"
	local m
	for m in $maps; do
		wait_until 50 sh -c "! bpftool map show id $m >/dev/null 2>&1" ||
			fail "map $m still there after kill -9: $(bpftool map show id "$m")"
	done
	echo "program $prog and maps $maps gone after kill -9"
}

# CPU time (ticks) of the kernel relay agent so far
agent_cpu_ticks() { awk '{print $14 + $15}' "/proc/$(agent_pid "$WORK" kr)/stat"; }

# A socket whose both directions are shut (the server's EOF went to the client, then
# the client's came) is EPOLLHUP for good, which no event mask turns off: while the
# client's EOF waits for the server to read what came before it, the relay thread must
# not wake on it again and again (one core burnt for as long as the server likes, and
# the timer that moves the other streams' waiting bytes starved).
test_hangup_wait_does_not_spin() {
	local pid a b
	client kr "
s = socket.create_connection(('$SRV_IP', 7008))
time.sleep(1) # the server's EOF reaches the client
s.sendall(b'y' * (1 << 20)); s.shutdown(socket.SHUT_WR)
print('sent', flush=True)
time.sleep(5)" >"$WORK/hup.out" 2>&1 &
	pid=$!
	wait_until 100 grep -q sent "$WORK/hup.out" || fail "the client did not send: $(cat "$WORK/hup.out")"
	sleep 0.5
	a=$(agent_cpu_ticks)
	sleep 3
	b=$(agent_cpu_ticks)
	wait "$pid"
	echo "agent CPU over 3 s while the client's EOF waits: $((b - a)) ticks (100 a second)"
	[ $((b - a)) -lt 60 ] || fail "the agent spun: $((b - a)) ticks of CPU in 3 s"
}

# Many streams flooding servers that never read: each kernel-relayed one lets the kernel
# queue its credit between the two sockets, in memory no socket accounts for; with
# --max-streams of them (8192, one peer can open them all) that was 32 GiB. The
# agent's --kernel-relay-memory bounds the sum: here 1M, four streams of 128K a
# direction; the others go to the user-space relay, and a legitimate client still gets
# its answer meanwhile. Their credit comes back when they close.
test_kernel_memory_budget() {
	local port out before
	port=$(free_port)
	agent_start "$WORK" budget --listen "127.0.0.1:$port" --kernel-relay-memory 1M
	out=$(timeout 120 "$TRACE_RUN" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
		--target "pod/$TGT" -- "$PYTHON" -c "
import socket, time
chunk = b'x' * (1 << 16); socks = []
for i in range(8):
    s = socket.create_connection(('$SRV_IP', 7009)); s.setblocking(False); socks.append(s)
end = time.time() + 3; n = 0
while time.time() < end:
    moved = False
    for s in socks:
        try:
            n += s.send(chunk); moved = True
        except BlockingIOError:
            pass
    if not moved: time.sleep(0.01)
g = socket.create_connection(('$SRV_IP', 7003))
g.sendall(b'HELO meanwhile\n'); f = g.makefile('rb')
print(f.readline().decode().strip()); print(f.readline().decode().strip())
print('flooded', n >> 20, 'MiB')")
	echo "$out"
	assert_contains "$out" "250 you said HELO meanwhile" "a legitimate stream during the flood"
	echo "kernel: $(grep -c 'relayed by the kernel' "$WORK/budget.log"), user space: $(grep -c 'kernel-relay-memory) is spent' "$WORK/budget.log")"
	assert_eq 4 "$(grep -c 'relayed by the kernel' "$WORK/budget.log")" "streams the kernel took"
	[ "$(grep -c 'kernel-relay-memory) is spent' "$WORK/budget.log")" -ge 4 ] ||
		fail "the streams past the budget did not go to the user-space relay: $(grep -i 'stream' "$WORK/budget.log" | tail -5)"
	# the flood's streams closed (the server reset them): their credit is back
	wait_until 100 sh -c "'$TRACE_AGENT' status --agent 127.0.0.1:$port --token-file '$WORK/token' | grep -q 'kernel relay on streams 0'" ||
		fail "kernel streams still open"
	before=$(grep -c 'relayed by the kernel' "$WORK/budget.log")
	out=$(timeout 60 "$TRACE_RUN" --agent "127.0.0.1:$port" --token-file "$WORK/token" \
		--target "pod/$TGT" -- "$PYTHON" -c "
import socket
socks = [socket.create_connection(('$SRV_IP', 7003)) for i in range(4)]
for s in socks:
    s.sendall(b'HELO again\n')
print(sum(s.makefile('rb').readline().startswith(b'220') for s in socks))")
	assert_eq 4 "$out" "greetings after the flood"
	assert_eq $((before + 4)) "$(grep -c 'relayed by the kernel' "$WORK/budget.log")" \
		"streams the kernel took once the credit was back"
	# SIGTERM, like kill -9, leaves no program behind
	local prog
	prog=$(sed -n 's/.*kernel relay on: .*(BPF program \([0-9]*\)).*/\1/p' "$WORK/budget.log")
	[ -n "$prog" ] || fail "no program id in the agent's log"
	agent_stop "$WORK" budget
	wait_until 50 sh -c "! bpftool prog show id $prog >/dev/null 2>&1" ||
		fail "program $prog still loaded after SIGTERM"
}

# Once every stream is over, the agent's maps are empty (no socket, no slot left)
test_idle_maps_empty() {
	local prog m n
	prog=$(sed -n 's/.*kernel relay on: .*(BPF program \([0-9]*\)).*/\1/p' "$WORK/kr.log")
	[ -n "$prog" ] || fail "no program id in the agent's log"
	wait_until 100 sh -c "'$TRACE_AGENT' status --agent 127.0.0.1:$KR_PORT --token-file '$WORK/token' | grep -q 'kernel relay on streams 0'" ||
		fail "streams still open: $("$TRACE_AGENT" status --agent "127.0.0.1:$KR_PORT" --token-file "$WORK/token")"
	for m in $(bpftool -j prog show id "$prog" | "$PYTHON" -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin)["map_ids"])))'); do
		case "$(bpftool -j map show id "$m" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["type"])')" in
		hash | sockhash) ;;
		*) continue ;;
		esac
		n=$(bpftool -j map dump id "$m" 2>/dev/null | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))')
		echo "map $m: ${n:-?} entries"
		assert_eq 0 "$n" "entries left in map $m"
	done
}

run_test "kernel relay: EOF after every byte, both ways" test_eof_after_every_byte
run_test "kernel relay: bytes left to the agent keep their order" test_bytes_left_to_the_agent_keep_order
run_test "kernel relay: a server that speaks first" test_server_speaks_first
run_test "kernel relay: a reset goes through" test_reset_goes_through
run_test "kernel relay: a flood to a server that does not read is bounded" test_flood_is_bounded
run_test "kernel relay: a hung-up socket's wait does not spin" test_hangup_wait_does_not_spin
run_test "kernel relay: the kernel's memory for all streams is bounded" test_kernel_memory_budget
run_test "kernel relay: status and --no-kernel-relay" test_status_and_flag
run_test "kernel relay: the maps are empty when idle" test_idle_maps_empty
run_test "kernel relay: no capability, user-space relay" test_no_capability_fallback
run_test "kernel relay: kill -9 leaves nothing" test_kill9_leaves_nothing
