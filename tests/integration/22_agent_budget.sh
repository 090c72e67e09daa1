#!/usr/bin/env bash
# trace-agent's global and per-session budgets (README, trace-agent): one token holder
# tries to use up the agent — unclaimed UDP streams (fds), big reads and listings
# (memory), connects to a black hole (threads), sessions — and must be refused with the
# documented errno while the agent stays within bounds and keeps serving another client.
# Driven by tests/agent/e2e_abuse.c, which samples the agent's /proc figures.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

WORK=$(mktemp -d /tmp/hermit-budget-test.XXXXXX)
chmod 0755 "$WORK"
POD=$(pod_name budget)
cleanup() {
	local f
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$POD"
	rm -rf "$WORK"
}
trap cleanup EXIT

set -e
ROOTFS="$WORK/rootfs"
mkdir "$ROOTFS"
cp -a "$TEST_ROOTFS/." "$ROOTFS/"
mkdir -p "$ROOTFS/data/wide"
echo "still served $RANDOM" >"$ROOTFS/data/small.txt"
# 7 MiB: below the inline limit, so a reply holds it in the agent's memory
head -c 7M /dev/urandom >"$ROOTFS/data/seven.bin"
# a listing of ~2.4 MiB: 12000 names of 200 characters
(cd "$ROOTFS/data/wide" && seq -f "%0200g" 12000 | xargs touch)
tp run -d --name "$POD" --rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
set +e

# Small budgets, so that the abuse reaches them quickly on a loaded machine.
start_budgeted() {
	agent_start "$WORK" "$1" --max-sessions 40 --max-peer-sessions 30 \
		--max-streams 300 --max-session-streams 100 --stream-ttl 3000 \
		--max-inflight 64M --max-session-inflight 24M \
		--max-connects 64 --max-session-connects 16
}

A() { e2e "$WORK" "$1" --target "pod/$POD" "${@:2}"; }

test_udp_streams() {
	start_budgeted udp
	local pid
	pid=$(agent_pid "$WORK" udp)
	# 6 x 150 unclaimed UDP sockets: each session stops at 100 (EMFILE), the agent at
	# 300 (ENFILE); an unlimited agent would hold 900 sockets
	A udp abuse udp 6 150 "$pid" check=/data/small.txt errno=EMFILE,ENFILE max-fds=700 ||
		fail "udp abuse"
	# unclaimed tokens expire: their sockets are closed within the TTL
	wait_until 100 sh -c "[ \$(ls /proc/$pid/fd | wc -l) -le 40 ]" ||
		fail "unclaimed UDP sockets still open after their TTL: $(ls /proc/$pid/fd | wc -l) fds"
	agent_stop "$WORK" udp
}

test_reads() {
	start_budgeted read
	local pid
	pid=$(agent_pid "$WORK" read)
	# 16 sessions x 7 MiB inline replies: at most 64 MiB in flight (plus the agent's own)
	A read abuse read 16 4 "$pid" path=/data/seven.bin check=/data/small.txt \
		errno=EMFILE,ENFILE,ENOBUFS max-rss-mib=200 || fail "read abuse"
	A read abuse readdir 16 4 "$pid" path=/data/wide check=/data/small.txt \
		errno=ENOBUFS max-rss-mib=200 || fail "readdir abuse"
	agent_stop "$WORK" read
}

test_connects() {
	start_budgeted conn
	local pid
	pid=$(agent_pid "$WORK" conn)
	# an address on the pods' subnet that nobody has: every connect hangs for seconds
	A conn abuse connect 8 100 "$pid" dst=10.213.255.254:80 timeout=4000 \
		check=/data/small.txt errno=EAGAIN max-threads=120 || fail "connect abuse"
	agent_stop "$WORK" conn
}

run_test "budget: unclaimed UDP streams refused with EMFILE/ENFILE, fds bounded" test_udp_streams
run_test "budget: big reads and listings bounded in memory" test_reads
run_test "budget: connects bounded in threads" test_connects
