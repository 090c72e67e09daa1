#!/usr/bin/env bash
# trace-pod networking: --net bridge (the default) gives each pod a veth on the hermit
# bridge (10.213.0.1/16); pods reach each other and the bridge address by IP.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"
BRIDGE_IP=10.213.0.1

kill_quiet() { kill "$@" 2>/dev/null || true; }

test_pod_to_pod() {
	local a ip_a ip_b out
	a=$(pod_name srv)
	on_exit pod_cleanup "$a"
	# one connection: the server sends pong-from-a and prints what the client sent
	tp run -d --name "$a" --rootfs "$R" -- sh -c 'echo pong-from-a | nc -l -p 8080' </dev/null >/dev/null
	ip_a=$(pod_ip "$a")
	echo "pod $a has IP '$ip_a'"
	[[ "$ip_a" =~ ^10\.213\.[0-9]+\.[0-9]+$ ]] || fail "pod IP '$ip_a' is not in 10.213.0.0/16"
	[ "$ip_a" != "$BRIDGE_IP" ] || fail "the pod got the bridge's own address"
	# the listener may not be up yet: retry inside the client pod
	out=$(tp run --rootfs "$R" -- sh -c "
		ip -4 -o addr show dev eth0
		i=0
		while [ \$i -lt 100 ]; do
			r=\$(echo ping-from-b | nc -w 3 $ip_a 8080 2>/dev/null)
			if [ -n \"\$r\" ]; then echo \"reply: \$r\"; exit 0; fi
			i=\$((i + 1)); sleep 0.1
		done
		exit 1" </dev/null)
	echo "$out"
	assert_contains "$out" "reply: pong-from-a" "client pod"
	ip_b=$(grep -o '10\.213\.[0-9]*\.[0-9]*/16' <<<"$out" | head -1)
	[ -n "$ip_b" ] || fail "client pod has no 10.213.x.y/16 address on eth0"
	[ "${ip_b%/16}" != "$ip_a" ] || fail "both pods have address $ip_a"
	wait_until 50 sh -c "'$TRACE_POD' logs '$a' | grep -q ping-from-b" ||
		fail "server pod did not log the client's message: $("$TRACE_POD" logs "$a" 2>&1)"
}

test_pod_to_bridge() {
	local tmp port pypid out host_out
	tmp=$(mktemp -d)
	on_exit rm -rf -- "$tmp"
	port=$((20000 + RANDOM % 20000))
	# The host listener binds the bridge address; the bridge may only appear once a pod
	# starts, so it retries the bind.
	python3 - "$BRIDGE_IP" "$port" >"$tmp/host.out" 2>&1 <<'EOF' &
import socket, sys, time
addr, port = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 40
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
while True:
    try:
        s.bind((addr, port))
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.05)
s.listen(1)
s.settimeout(max(1, deadline - time.time()))
c, peer = s.accept()
c.settimeout(10)
c.sendall(b"pong-from-host\n")
c.shutdown(socket.SHUT_WR)
data = b""
while True:
    d = c.recv(4096)
    if not d:
        break
    data += d
print("peer", peer[0])
print("got", data.decode().strip())
EOF
	pypid=$!
	on_exit kill_quiet "$pypid"
	out=$(tp run --rootfs "$R" -- sh -c "
		i=0
		while [ \$i -lt 150 ]; do
			r=\$(echo ping-from-pod | nc -w 3 $BRIDGE_IP $port 2>/dev/null)
			if [ -n \"\$r\" ]; then echo \"reply: \$r\"; exit 0; fi
			i=\$((i + 1)); sleep 0.1
		done
		exit 1" </dev/null) || true
	echo "pod: $out"
	wait "$pypid" || true
	host_out=$(cat "$tmp/host.out")
	echo "host: $host_out"
	assert_contains "$out" "reply: pong-from-host" "pod"
	assert_contains "$host_out" "got ping-from-pod" "host listener"
	# the connection comes from the pod's own address, not through NAT from the host
	grep -qE '^peer 10\.213\.[0-9]+\.[0-9]+$' <<<"$host_out" || fail "peer address is not a pod address"
	# the pod's own address, not the bridge's (compare whole lines: .1 is a prefix of .17)
	if grep -qx "peer $BRIDGE_IP" <<<"$host_out"; then fail "the host saw the bridge address as peer"; fi
}

test_pod_network_config() {
	local name out
	name=$(pod_name cfg)
	out=$(tp run --name "$name" --hostname cfg-host --rootfs "$R" -- sh -c '
		echo "== route"; ip route
		echo "== links"; ip -o link | cut -d: -f2
		echo "== hosts"; cat /etc/hosts
		echo "== resolv"; cat /etc/resolv.conf' </dev/null)
	echo "$out"
	grep -qE "^default via $BRIDGE_IP" <<<"$out" || fail "no default route via $BRIDGE_IP"
	grep -qw eth0 <<<"$out" || fail "no eth0 in the pod"
	grep -qE '^[0-9.]+[[:space:]].*cfg-host' <<<"$out" || fail "/etc/hosts does not name the pod's hostname"
	grep -q '^nameserver ' <<<"$out" || fail "/etc/resolv.conf has no nameserver"

	# --net none: only loopback, and it is up
	out=$(tp run --net none --rootfs "$R" -- sh -c 'ip -o link | cut -d: -f2; ip -o addr show dev lo' </dev/null)
	echo "--net none: $out"
	assert_eq "lo" "$(ip_links_of "$out")" "links with --net none"
	assert_contains "$out" "127.0.0.1" "lo with --net none"

	# --net host: the host's interfaces (other pods' veths come and go: leave them out)
	out=$(tp run --net host --rootfs "$R" -- ip -o link </dev/null)
	assert_eq "$(ip -o link | link_names)" "$(link_names <<<"$out")" "links with --net host"
}

# Interface names from `ip -o link` on stdin, without hermit veths, sorted, one line.
link_names() { awk -F': ' '{print $2}' | sed 's/@.*//' | grep -v '^hm' | LC_ALL=C sort | tr '\n' ' '; }

# Interface names from `ip -o link | cut -d: -f2` output, space-separated.
ip_links_of() { grep -v 'inet' <<<"$1" | sed 's/^ *//; s/@.*//' | grep . | tr '\n' ' ' | sed 's/ $//'; }

run_test pod_to_pod test_pod_to_pod
run_test pod_to_bridge test_pod_to_bridge
run_test pod_network_config test_pod_network_config
