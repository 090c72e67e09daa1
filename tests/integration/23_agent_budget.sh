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

# Under SAN=1 freed memory would sit in ASan's quarantine and count as the agent's RSS.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0:allocator_release_to_os_interval_ms=50"

set -e
# trace-pod wants a rootfs other host users cannot reach ($WORK stays 0755 for the agent)
mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
mkdir "$ROOTFS"
cp -a "$TEST_ROOTFS/." "$ROOTFS/"
mkdir -p "$ROOTFS/data/wide"
echo "still served $RANDOM" >"$ROOTFS/data/small.txt"
# 7 MiB: below the inline limit, so a reply holds it in the agent's memory
head -c 7M /dev/urandom >"$ROOTFS/data/seven.bin"
# a listing of ~4 MiB: 20000 names of 200 characters
(cd "$ROOTFS/data/wide" && seq -f "%0200g" 20000 | xargs touch)
tp run -d --name "$POD" --rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
set +e

# Small budgets, so that the abuse reaches them quickly on a loaded machine.
start_budgeted() {
	agent_start "$WORK" "$1" --max-sessions 40 --max-peer-sessions 30 \
		--max-streams 300 --max-session-streams 100 --stream-ttl 3000 \
		--max-inflight 64M --max-session-inflight 24M \
		--max-connects 64 --max-session-connects 16 "${@:2}"
}

A() { e2e "$WORK" "$1" --target "pod/$POD" "${@:2}"; }

# stop_clean NAME: SIGTERM; a clean stop, and (under SAN=1) no sanitizer report.
stop_clean() {
	local pid
	pid=$(agent_pid "$WORK" "$1")
	kill -TERM "$pid"
	wait_until 150 sh -c "! kill -0 $pid 2>/dev/null" || fail "agent $1 did not stop in 15 s"
	grep -q 'stopped$' "$WORK/$1.log" || fail "agent $1: no clean stop: $(tail -5 "$WORK/$1.log")"
	if grep -B2 -A30 -E 'Sanitizer|runtime error' "$WORK/$1.log"; then
		fail "sanitizer report in agent $1's log"
	fi
}

test_udp_streams() {
	start_budgeted udp
	local pid
	pid=$(agent_pid "$WORK" udp)
	# one session stops at 100 unclaimed sockets (EMFILE)
	A udp abuse udp 1 150 "$pid" check=/data/small.txt errno=EMFILE max-fds=200 ||
		fail "udp abuse, one session"
	# 6 x 150: the agent stops at 300 (ENFILE); an unlimited one would hold 900 sockets
	A udp abuse udp 6 150 "$pid" check=/data/small.txt errno=EMFILE,ENFILE max-fds=700 ||
		fail "udp abuse"
	# unclaimed tokens expire: their sockets are closed within the TTL
	wait_until 100 sh -c "[ \$(ls /proc/$pid/fd | wc -l) -le 40 ]" ||
		fail "unclaimed UDP sockets still open after their TTL: $(ls /proc/$pid/fd | wc -l) fds"
	stop_clean udp
}

test_reads() {
	start_budgeted read
	local pid
	pid=$(agent_pid "$WORK" read)
	# 24 sessions reading 7 MiB files inline would hold ~340 MiB; with 64 MiB for
	# replies the rest come as streams, and another client still reads the whole file
	A read abuse read 24 3 "$pid" path=/data/seven.bin check=/data/seven.bin \
		allow=EMFILE,ENFILE max-rss-mib=160 || fail "read abuse"
	stop_clean read
	start_budgeted list
	pid=$(agent_pid "$WORK" list)
	# 24 sessions listing ~14 MiB each (names, entries, the encoded reply) would hold
	# ~330 MiB; they wait their turn instead
	A list abuse readdir 24 3 "$pid" path=/data/wide check=/data/small.txt \
		allow=ENOBUFS max-rss-mib=160 || fail "readdir abuse"
	stop_clean list
	start_budgeted write --max-sessions 55 --max-peer-sessions 45
	pid=$(agent_pid "$WORK" write)
	# 40 sessions writing 7 MiB each at once: ~280 MiB of requests held unbounded
	A write abuse write 40 1 "$pid" path=/data/out check=/data/small.txt \
		allow=ENOBUFS max-rss-mib=160 || fail "write abuse"
	stop_clean write
}

test_connects() {
	start_budgeted conn
	local pid
	pid=$(agent_pid "$WORK" conn)
	# an address on the pods' subnet that nobody has: every connect hangs for seconds.
	# A connect in progress is a socket the session's thread waits for, not a thread:
	# 800 of them (the agent used to start 800 threads) are refused beyond 16 per
	# session and 64 in all, and the agent's threads stay few
	A conn abuse connect 8 100 "$pid" dst=10.213.255.254:80 timeout=4000 \
		check=/data/small.txt errno=EAGAIN max-threads=40 max-fds=200 ||
		fail "connect abuse"
	stop_clean conn
}

test_sessions() {
	local port=$((20000 + RANDOM % 20000))
	start_budgeted sess --listen "127.0.0.1:$port"
	local pid
	pid=$(agent_pid "$WORK" sess)
	# 36 sessions of one uid on the unix socket: 30 open (the peer's limit), 6 refused
	# with EUSERS; another peer (TCP from 127.0.0.1) still gets a session
	A sess abuse session 36 1 "$pid" check-agent="127.0.0.1:$port" check=/data/small.txt \
		errno=EUSERS max-threads=60 || fail "session abuse"
	local out
	out=$("$TRACE_AGENT" status --unix "$WORK/sess.sock" --token-file "$WORK/token") ||
		fail "status: $out"
	echo "$out"
	assert_contains "$out" "sessions" "status lists the session budget"
	assert_contains "$out" "refused" "status counts refusals"
	stop_clean sess
}

test_refusals_release() {
	# two sessions in all; refused sessions must not keep what they took
	start_budgeted refuse --max-sessions 2 --max-peer-sessions 2
	install -m 0600 -o nobody "$WORK/token" "$WORK/token-nobody"
	local i
	for i in $(seq 6); do
		# refused after the session's budget was taken (the target does not resolve)
		e2e "$WORK" refuse --target pod/no-such-pod-here bad-target ENOENT ||
			fail "pod/no-such-pod-here"
		e2e "$WORK" refuse --target pid/4194303 bad-target ESRCH || fail "pid/4194303"
		# refused before it (nobody may not target init)
		(cd / && timeout 60 setpriv --reuid 65534 --regid 65534 --clear-groups \
			"$AGENT_E2E" --unix "$WORK/refuse.sock" --token-file "$WORK/token-nobody" \
			--target pid/1 bad-target EPERM) || fail "pid/1 as nobody"
	done
	# both slots are still free: two sessions open at once, a third is over the limit
	A refuse hold "$WORK/hold1" &
	local h1=$!
	A refuse hold "$WORK/hold2" &
	local h2=$!
	wait_until 100 sh -c "[ -e '$WORK/hold1' ] && [ -e '$WORK/hold2' ]" ||
		fail "two sessions could not open after 18 refused ones (leaked reservations)"
	A refuse bad-target EUSERS || fail "a third session was not refused"
	rm -f "$WORK/hold1" "$WORK/hold2"
	wait "$h1" "$h2"
	local out
	out=$("$TRACE_AGENT" status --unix "$WORK/refuse.sock" --token-file "$WORK/token")
	echo "$out"
	assert_eq 0 "$(echo "$out" | awk '$1 == "sessions" && NF >= 5 {print $2}')" \
		"sessions budget used after every session ended"
	stop_clean refuse
}

test_fd_spare() {
	# an agent whose budgets do not fit its fd limit: it runs out of fds, and a new
	# client is turned away at once instead of hanging in the backlog
	(
		ulimit -n 128
		agent_start "$WORK" fds --max-streams 0 --max-session-streams 0
	)
	local pid
	pid=$(agent_pid "$WORK" fds)
	A fds abuse udp 1 200 "$pid" check=refused errno=EMFILE || fail "fd exhaustion"
	grep -q "out of file descriptors" "$WORK/fds.log" || fail "no warning in the log"
	stop_clean fds
}

run_test "budget: unclaimed UDP streams refused with EMFILE/ENFILE, fds bounded" test_udp_streams
run_test "budget: big reads, listings and writes bounded in memory" test_reads
run_test "budget: connects bounded in threads" test_connects
run_test "budget: sessions per peer refused with EUSERS" test_sessions
run_test "budget: refused sessions give their budget back" test_refusals_release
run_test "budget: out of fds, a new client is turned away, not left hanging" test_fd_spare
