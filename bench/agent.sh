# Sourced by bench/run.sh: benchmarks of a real trace-agent serving real trace-pod pods,
# driven by the client library (tests/agent/bench_agent.c, agent_e2e bench-* commands).
#
# One setup serves them all (started on first use, stopped by an exit hook): a pod
# SINK running tests/apps-c/tcp_sink (discards what it gets, answers the byte count),
# a pod SRC (the target: its network and files are what the agent serves) and one
# agent on a unix socket. Work files live in AB_WORK under /tmp.

AGENT_E2E="$BUILD/tests/agent_e2e"
TRACE_AGENT="$BIN/trace-agent"
TCP_SINK="$BUILD/tests/tcp_sink"
AB_WORK=""
AB_SINK_PORT=9000
BENCH_TCP_BYTES="${BENCH_TCP_BYTES:-512M}"
BENCH_TCP_ROUNDS="${BENCH_TCP_ROUNDS:-5}"
BENCH_FILE_N="${BENCH_FILE_N:-2000}"
BENCH_BULK_ROUNDS="${BENCH_BULK_ROUNDS:-3}"

# agent_up WORK NAME: start an agent on WORK/NAME.sock; its pid in WORK/NAME.pid.
agent_up() {
	local work="$1" name="$2" i
	"$TRACE_AGENT" --unix "$work/$name.sock" --token-file "$work/token" --log-level info \
		</dev/null 2>"$work/$name.log" &
	echo $! >"$work/$name.pid"
	for i in $(seq 100); do
		grep -q ' ready (pid ' "$work/$name.log" && return 0
		sleep 0.1
	done
	cat "$work/$name.log" >&2
	echo "bench: agent $name did not start" >&2
	return 1
}

# agent_down WORK NAME: SIGTERM, SIGKILL after 10 s.
agent_down() {
	local work="$1" name="$2" pid i
	[ -f "$work/$name.pid" ] || return 0
	pid=$(cat "$work/$name.pid")
	rm -f "$work/$name.pid"
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

agent_rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$(cat "$AB_WORK/$1.pid")/status"; }

ab_pod_ip() {
	"$TRACE_POD" ls --json | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    if p.get("name") == sys.argv[1]:
        print(p.get("ip") or "")' "$1"
}

# Stops what agent_env_up started. Removes AB_WORK only when it is the directory
# mktemp made (never an empty or foreign path).
agent_env_down() {
	local f
	[ -n "$AB_WORK" ] || return 0
	for f in "$AB_WORK"/*.pid; do
		[ -f "$f" ] && agent_down "$AB_WORK" "$(basename "$f" .pid)"
	done
	bench_pods_rm "${AB_SINK:-}" "${AB_SRC:-}"
	case "$AB_WORK" in
	/tmp/hermit-bench-agent.?*) rm -rf -- "$AB_WORK" ;;
	esac
	AB_WORK=""
}

agent_env_up() {
	[ -z "$AB_WORK" ] || return 0
	bench_need_built "$AGENT_E2E" "$TRACE_AGENT" "$TCP_SINK" || return 1
	AB_WORK=$(mktemp -d /tmp/hermit-bench-agent.XXXXXX)
	bench_on_exit agent_env_down
	chmod 0755 "$AB_WORK"
	AB_SINK="hb$$-sink"
	AB_SRC="hb$$-src"
	local rootfs
	rootfs=$(bench_pod_rootfs "$AB_WORK")
	"$TRACE_POD" deploy "$TCP_SINK" --rootfs "$rootfs" >/dev/null
	# files only the pod's root has, read through the agent; the host reads the same
	# files at their host path as the local baseline
	mkdir -p "$rootfs/bench"
	python3 - "$rootfs/bench/config-4k" <<'EOF'
import random, sys
random.seed(4)
lines, size = [], 0
while size < 4096:
    l = "option_%d = %s\n" % (len(lines), "".join(random.choice("abcdefghijklmnop0123456789") for _ in range(24)))
    lines.append(l)
    size += len(l)
open(sys.argv[1], "w").write("".join(lines)[:4096])
EOF
	head -c $((100 << 20)) /dev/urandom >"$rootfs/bench/blob-100m"
	"$TRACE_POD" run -d --name "$AB_SINK" --rootfs "$rootfs" -- tcp_sink serve -p "$AB_SINK_PORT" \
		</dev/null >/dev/null
	"$TRACE_POD" run -d --name "$AB_SRC" --rootfs "$rootfs" -- sleep 1000000 </dev/null >/dev/null
	local i
	for i in $(seq 100); do
		"$TRACE_POD" logs "$AB_SINK" 2>/dev/null | grep -q listening && break
		sleep 0.1
	done
	AB_SINK_IP=$(ab_pod_ip "$AB_SINK")
	AB_SRC_IP=$(ab_pod_ip "$AB_SRC")
	[ -n "$AB_SINK_IP" ] && [ -n "$AB_SRC_IP" ] || { echo "bench: a pod has no IP" >&2; return 1; }
	AB_ROOTFS="$rootfs"
	agent_up "$AB_WORK" main
}

# ab_e2e NAME CMD ARGS...: the driver against agent NAME, target the SRC pod.
ab_e2e() {
	local name="$1"
	shift
	timeout 300 "$AGENT_E2E" --unix "$AB_WORK/$name.sock" --token-file "$AB_WORK/token" \
		--target "pod/$AB_SRC" "$@"
}

mib() { python3 -c 'import sys; print("%.1f MiB" % (int(sys.argv[1]) / 1024))' "$1"; }

# The bare request round trip: PING on one control connection over the unix socket,
# BENCH_PING_N of them (tests/agent/bench_agent.c bench-ping), median of
# BENCH_PING_ROUNDS processes.
BENCH_PING_N="${BENCH_PING_N:-20000}"
BENCH_PING_ROUNDS="${BENCH_PING_ROUNDS:-3}"
bench_agent_ping() {
	agent_env_up
	local out r med=() p90=() p99=() tsv="$BENCH_DIR/agent_ping.tsv"
	for r in $(seq "$BENCH_PING_ROUNDS"); do
		out=$(ab_e2e main bench-ping "$BENCH_PING_N")
		read -r _ a b c _ <<<"$out"
		med+=("$a")
		p90+=("$b")
		p99+=("$c")
	done
	bench_rows "$tsv" \
		"PING round trip, median" "$(bench_median "${med[@]}") us" "-" "-" "<= 20 us" \
		"PING round trip, p90" "$(bench_median "${p90[@]}") us" "-" "-" "-" \
		"PING round trip, p99" "$(bench_median "${p99[@]}") us" "-" "-" "-"
	print_rows "agent request round trip (PING) on the unix socket, $BENCH_PING_N calls, median of $BENCH_PING_ROUNDS processes" "$tsv"
	echo "runs median us: ${med[*]}"
}

# Outgoing TCP throughput, one connection SRC pod -> SINK pod: a client inside SRC
# (trace-pod exec tcp_sink send) vs the client library through the agent from the host
# (the pod's socket handed over the unix socket, and with the hand-off turned off: the
# agent's splice relay) vs the same tcp_sink under trace-run --target pod/SRC, rounds
# interleaved so load drift hits them all alike.
bench_agent_tcp() {
	agent_env_up
	local dst="$AB_SINK_IP:$AB_SINK_PORT" direct=() agent=() relay=() traced=() r
	local trace=("$BIN/trace-run" --agent-unix "$AB_WORK/main.sock" --token-file "$AB_WORK/token"
		--target "pod/$AB_SRC" --)
	mbps() { sed -n 's/.*: \([0-9.]*\) MB\/s$/\1/p' <<<"$1"; }
	# one unmeasured round each: page cache, TCP autotuning, the agent's worker
	"$TRACE_POD" exec "$AB_SRC" -- tcp_sink send "$dst" 64M >/dev/null
	ab_e2e main bench-tcp-send "$dst" 64M >/dev/null
	"${trace[@]}" "$TCP_SINK" send "$dst" 64M >/dev/null
	for r in $(seq "$BENCH_TCP_ROUNDS"); do
		direct+=("$(mbps "$("$TRACE_POD" exec "$AB_SRC" -- tcp_sink send "$dst" "$BENCH_TCP_BYTES")")")
		agent+=("$(mbps "$(ab_e2e main bench-tcp-send "$dst" "$BENCH_TCP_BYTES")")")
		relay+=("$(mbps "$(ab_e2e main --no-handoff bench-tcp-send "$dst" "$BENCH_TCP_BYTES")")")
		traced+=("$(mbps "$("${trace[@]}" "$TCP_SINK" send "$dst" "$BENCH_TCP_BYTES")")")
	done
	local md ma mr mt tsv="$BENCH_DIR/agent_tcp.tsv"
	md=$(bench_median "${direct[@]}")
	ma=$(bench_median "${agent[@]}")
	mr=$(bench_median "${relay[@]}")
	mt=$(bench_median "${traced[@]}")
	bench_rows "$tsv" \
		"direct: client in the pod" "$md MB/s" "-" "-" "-" \
		"client library, unix agent (the pod's socket handed off)" "$ma MB/s" "$md MB/s" "$(bench_ratio "$ma" "$md")" ">= 0.95x direct" \
		"client library, unix agent, hand-off off (splice relay)" "$mr MB/s" "$md MB/s" "$(bench_ratio "$mr" "$md")" ">= 0.80x direct" \
		"tcp_sink under trace-run --target pod/SRC (unix agent)" "$mt MB/s" "$md MB/s" "$(bench_ratio "$mt" "$md")" ">= 0.95x direct"
	print_rows "outgoing TCP, 1 connection pod -> pod, $BENCH_TCP_BYTES per run, median of $BENCH_TCP_ROUNDS" "$tsv"
	echo "runs MB/s: direct ${direct[*]}; hand-off ${agent[*]}; relay ${relay[*]}; trace-run ${traced[*]}"
}

# Remote open+read: a 4 KiB file, FILE_READ round trips vs a local open+read+close of
# the same file; a 100 MiB file read whole (the stream path) vs a local read.
bench_agent_files() {
	agent_env_up
	local out tsv="$BENCH_DIR/agent_files.tsv" r rem=() loc=() rmed rp99 lmed lp99 pmed pp99 zmed zp99 rm lm
	out=$(ab_e2e main bench-file-rtt /bench/config-4k "$AB_ROOTFS/bench/config-4k" "$BENCH_FILE_N")
	read -r _ rmed rp99 _ lmed lp99 _ pmed pp99 _ <<<"$out"
	out=$(ab_e2e main bench-file-rtt /bench/config-4k "$AB_ROOTFS/bench/config-4k" "$BENCH_FILE_N" nozlib)
	read -r _ zmed zp99 _ <<<"$out"
	ab_e2e main bench-file-bulk /bench/blob-100m "$AB_ROOTFS/bench/blob-100m" >/dev/null
	for r in $(seq "$BENCH_BULK_ROUNDS"); do
		out=$(ab_e2e main bench-file-bulk /bench/blob-100m "$AB_ROOTFS/bench/blob-100m")
		read -r _ _ rm _ _ lm _ <<<"$out"
		rem+=("$rm")
		loc+=("$lm")
	done
	local mr ml
	mr=$(bench_median "${rem[@]}")
	ml=$(bench_median "${loc[@]}")
	bench_rows "$tsv" \
		"4 KiB file, open+read, median" "$rmed us" "$lmed us" "$(bench_ratio "$rmed" "$lmed")" "-" \
		"4 KiB file, open+read, p99" "$rp99 us" "$lp99 us" "$(bench_ratio "$rp99" "$lp99")" "-" \
		"4 KiB file, open+read, zlib off, median" "$zmed us" "$lmed us" "$(bench_ratio "$zmed" "$lmed")" "-" \
		"4 KiB file, open+read, zlib off, p99" "$zp99 us" "$lp99 us" "$(bench_ratio "$zp99" "$lp99")" "-" \
		"for scale: PING round trip, median / p99" "$pmed / $pp99 us" "-" "-" "-" \
		"100 MiB file, whole read" "$mr MB/s" "$ml MB/s" "$(bench_ratio "$mr" "$ml")" ">= 200 MB/s"
	print_rows "remote files through the agent (baseline: the same file read locally), 4 KiB N=$BENCH_FILE_N, 100 MiB median of $BENCH_BULK_ROUNDS" "$tsv"
	echo "100 MiB runs MB/s: agent ${rem[*]}; local ${loc[*]}"
}

# Agent resident memory: a fresh agent idle (after one session), then with 200 open
# outgoing connections to the sink.
bench_agent_memory() {
	agent_env_up
	local idle held tsv="$BENCH_DIR/agent_memory.tsv" holder
	agent_up "$AB_WORK" mem
	ab_e2e mem ping >/dev/null
	# relayed connections (the TCP agent's path) are what an agent holds memory for
	ab_e2e mem --no-handoff bench-hold "$AB_SINK_IP:$AB_SINK_PORT" 1 "$AB_WORK/hold1" &
	holder=$!
	for _ in $(seq 300); do [ -f "$AB_WORK/hold1" ] && break; sleep 0.1; done
	rm -f "$AB_WORK/hold1"
	wait "$holder"
	sleep 0.5
	idle=$(agent_rss_kib mem)
	ab_e2e mem --no-handoff bench-hold "$AB_SINK_IP:$AB_SINK_PORT" 200 "$AB_WORK/hold" &
	holder=$!
	for _ in $(seq 600); do [ -f "$AB_WORK/hold" ] && break; sleep 0.1; done
	[ -f "$AB_WORK/hold" ] || { echo "bench: 200 connections did not open" >&2; kill "$holder"; return 1; }
	held=$(agent_rss_kib mem)
	rm -f "$AB_WORK/hold"
	wait "$holder"
	agent_down "$AB_WORK" mem
	bench_rows "$tsv" \
		"agent VmRSS, idle (after a session)" "$(mib "$idle")" "-" "-" "-" \
		"agent VmRSS, 200 open connections" "$(mib "$held")" "$(mib "$idle")" "$(bench_ratio "$held" "$idle")" "< 16 MiB"
	print_rows "agent resident memory (VmRSS)" "$tsv"
}
