# Sourced by bench/run.sh: mirror mode (issue 9). A pod WEB runs httpserve (:8080) and a
# TCP sink (:9000), clients run in a pod CLI, a subscriber (agent_e2e mirror) takes the
# copies the agent delivers. Rows:
#   - WEB's throughput (httpbench in CLI, keep-alive GETs) with no session and with a
#     mirror session on its port, rounds interleaved (goal >= 0.95x);
#   - completeness: copies delivered whole / connections sent, for short connections at
#     the highest rate the clients reach and for parallel uploads (goal 100%);
#   - the agent's CPU (utime + stime) per mirrored MiB.
MB_WORK=""
MB_HTTP_PORT=8080
MB_SINK_PORT=9000
BENCH_MIRROR_ROUNDS="${BENCH_MIRROR_ROUNDS:-5}"
BENCH_MIRROR_SECONDS="${BENCH_MIRROR_SECONDS:-5}"
BENCH_MIRROR_C="${BENCH_MIRROR_C:-8}"
BENCH_MIRROR_CONNS="${BENCH_MIRROR_CONNS:-1000}" # short connections per client count
BENCH_MIRROR_CLIENTS="${BENCH_MIRROR_CLIENTS:-2 4 8}" # busybox wget loops at once
BENCH_MIRROR_UPLOADS="${BENCH_MIRROR_UPLOADS:-8}"
BENCH_MIRROR_UPLOAD_MIB="${BENCH_MIRROR_UPLOAD_MIB:-10}"

mirror_env_down() {
	local f
	[ -n "$MB_WORK" ] || return 0
	for f in "$MB_WORK"/sub-*.pid; do
		[ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
	done
	agent_down "$MB_WORK" main
	bench_pods_rm "${MB_WEB:-}" "${MB_CLI:-}"
	case "$MB_WORK" in
	/tmp/hermit-bench-mirror.?*) [ -n "${BENCH_KEEP:-}" ] || rm -rf -- "$MB_WORK" ;;
	esac
	MB_WORK=""
}

mirror_env_up() {
	[ -z "$MB_WORK" ] || return 0
	local f i
	bench_need_built "$AGENT_E2E" "$TRACE_AGENT" "$TCP_SINK" "$BUILD/apps/httpserve" \
		"$BUILD/apps/httpbench" || return 1
	MB_WORK=$(mktemp -d /tmp/hermit-bench-mirror.XXXXXX)
	bench_on_exit mirror_env_down
	chmod 0755 "$MB_WORK"
	MB_WEB="hb$$-mweb"
	MB_CLI="hb$$-mcli"
	local rootfs
	rootfs=$(bench_pod_rootfs "$MB_WORK")
	for f in "$TCP_SINK" "$BUILD/apps/httpserve" "$BUILD/apps/httpbench"; do
		"$TRACE_POD" deploy "$f" --rootfs "$rootfs" >/dev/null
	done
	"$TRACE_POD" run -d --init --name "$MB_WEB" --rootfs "$rootfs" -- sh -c "
		tcp_sink serve -p $MB_SINK_PORT &
		exec httpserve -listen :$MB_HTTP_PORT" </dev/null >/dev/null
	"$TRACE_POD" run -d --name "$MB_CLI" --rootfs "$rootfs" -- sleep 1000000 </dev/null >/dev/null
	for i in $(seq 100); do
		[ "$("$TRACE_POD" logs "$MB_WEB" 2>&1 | grep -c listening)" -ge 2 ] && break
		sleep 0.1
	done
	MB_WEB_IP=$(ab_pod_ip "$MB_WEB")
	[ -n "$MB_WEB_IP" ] && [ -n "$(ab_pod_ip "$MB_CLI")" ] || { echo "bench: a pod has no IP" >&2; return 1; }
	agent_up "$MB_WORK" main
}

# mb_sub_start NAME PORT [mirror options]: a subscriber dumping copies into MB_WORK/NAME
mb_sub_start() {
	local name="$1" port="$2" i
	shift 2
	mkdir -p "$MB_WORK/$name"
	"$AGENT_E2E" --unix "$MB_WORK/main.sock" --token-file "$MB_WORK/token" --target "pod/$MB_WEB" \
		mirror "$port" "$MB_WORK/$name" --ready "$MB_WORK/sub-$name.ready" "$@" \
		>"$MB_WORK/sub-$name.out" 2>&1 &
	echo $! >"$MB_WORK/sub-$name.pid"
	for i in $(seq 100); do
		[ -s "$MB_WORK/sub-$name.ready" ] && return 0
		sleep 0.1
	done
	echo "bench: subscriber $name did not subscribe: $(cat "$MB_WORK/sub-$name.out")" >&2
	return 1
}
mb_sub_stop() {
	local pid
	pid=$(cat "$MB_WORK/sub-$1.pid")
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -f "$MB_WORK/sub-$1.pid"
}
# mb_wait_ends NAME N: until N copies ended (30 s at most); prints how many did
mb_wait_ends() {
	local i n=0
	for i in $(seq 300); do
		n=$(find "$MB_WORK/$1" -name '*.end' | wc -l)
		[ "$n" -ge "$2" ] && break
		sleep 0.1
	done
	echo "$n"
}
# mb_settle NAME: until every copy NAME got has ended (30 s at most)
mb_settle() {
	local i
	for i in $(seq 300); do
		[ "$(find "$MB_WORK/$1" -name '*.end' | wc -l)" -ge "$(find "$MB_WORK/$1" -name '*.addr' | wc -l)" ] &&
			return 0
		sleep 0.1
	done
}
mb_httpbench() { "$TRACE_POD" exec "$MB_CLI" -- httpbench "$@"; }
mb_agent_cpu_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$MB_WORK/main.pid")/stat"; }
mb_mirror_bytes() {
	"$AGENT_E2E" --unix "$MB_WORK/main.sock" --token-file "$MB_WORK/token" mirror-status |
		sed -n 's/.*mirror_bytes \([0-9]*\).*/\1/p'
}

# mb_round_base HTTPBENCH-ARGS: the pod's rate with no session (prints rps)
mb_round_base() {
	local out
	out=$(mb_httpbench "$@") || { echo "bench: httpbench: $out" >&2; return 1; }
	sed -n 's/.* rps=\([0-9.]*\) .*/\1/p' <<<"$out"
}
# mb_round_mirror R HTTPBENCH-ARGS: the pod's rate with a mirror session, copies in
# MB_WORK/rpsR (prints "rps requests")
mb_round_mirror() {
	local r="$1" out
	shift
	mb_sub_start "rps$r" "$MB_HTTP_PORT" || return 1
	out=$(mb_httpbench "$@") || { echo "bench: httpbench: $out" >&2; return 1; }
	mb_wait_ends "rps$r" "$BENCH_MIRROR_C" >/dev/null
	mb_settle "rps$r"
	mb_sub_stop "rps$r"
	echo "$(sed -n 's/.* rps=\([0-9.]*\) .*/\1/p' <<<"$out") $(sed -n 's/^requests=\([0-9]*\) .*/\1/p' <<<"$out")"
}

bench_mirror() {
	mirror_env_up
	local url="http://$MB_WEB_IP:$MB_HTTP_PORT/" tsv="$BENCH_DIR/mirror.tsv" out r
	local args=(-url "$url" -c "$BENCH_MIRROR_C" -d "${BENCH_MIRROR_SECONDS}s")
	local base=() with=() sent=0 mirrored=0
	mb_httpbench -url "$url" -n 500 >/dev/null # unmeasured: the server's goroutines
	# the order alternates (no session first in odd rounds, the mirror first in even
	# ones) and the ratio is the median of the rounds' own ratios: on a shared 2-CPU
	# machine the rate drifts by more than the effect from one round to the next
	local ratios=()
	for r in $(seq "$BENCH_MIRROR_ROUNDS"); do
		local b w
		if [ $((r % 2)) = 1 ]; then
			b=$(mb_round_base "${args[@]}") && w=$(mb_round_mirror "$r" "${args[@]}") || return 1
		else
			w=$(mb_round_mirror "$r" "${args[@]}") && b=$(mb_round_base "${args[@]}") || return 1
		fi
		base+=("$b")
		with+=("${w% *}")
		sent=$((sent + ${w#* }))
		ratios+=("$(python3 -c "print($b and ${w% *} / $b or 0)")")
		# every request the pod answered is in a copy, whole
		mirrored=$((mirrored + $(cat "$MB_WORK/rps$r"/*.data | grep -c '^GET / HTTP/1.1')))
	done
	local mbase mwith mratio
	mbase=$(bench_median "${base[@]}")
	mwith=$(bench_median "${with[@]}")
	mratio=$(python3 -c "import statistics, sys; print('%.2fx' % statistics.median(float(x) for x in sys.argv[1:]))" "${ratios[@]}")

	# short connections, as fast as P busybox clients open them, for a few P
	local p per total t0 t1 ended whole rate short_rows=()
	for p in $BENCH_MIRROR_CLIENTS; do
		per=$((BENCH_MIRROR_CONNS / p))
		total=$((per * p))
		mb_sub_start "conns$p" "$MB_HTTP_PORT"
		t0=$(date +%s.%N)
		"$TRACE_POD" exec "$MB_CLI" -- sh -c "for p in \$(seq $p); do
			(for i in \$(seq $per); do wget -q -O /dev/null 'http://$MB_WEB_IP:$MB_HTTP_PORT/echo?c='\$p.\$i; done) & done; wait"
		t1=$(date +%s.%N)
		ended=$(mb_wait_ends "conns$p" "$total")
		whole=$(python3 - "$MB_WORK/conns$p" <<'EOF'
import os, re, sys
d = sys.argv[1]
n = 0
for f in os.listdir(d):
    if f.endswith(".end") and open(f"{d}/{f}").read().strip() == "0":
        data = open(f"{d}/{f[:-4]}.data", "rb").read()
        n += bool(re.fullmatch(rb"GET /echo\?c=\d+\.\d+ HTTP/1\.1\r\n(?:[^\r\n]+\r\n)+\r\n", data))
print(n)
EOF
)
		rate=$(python3 -c "print('%.0f' % ($total / ($t1 - $t0)))")
		mb_sub_stop "conns$p"
		short_rows+=("short connections delivered whole / sent, $p clients at $rate conn/s" \
			"$whole / $total" "($ended ended)" \
			"$(python3 -c "print('%.1f%%' % (100 * $whole / $total))")" "100%")
	done

	# parallel uploads: completeness in bytes, and the agent's CPU per mirrored MiB
	local cpu0 cpu1 bytes0 bytes1 up_whole mbps
	mb_sub_start up "$MB_SINK_PORT" --sum
	cpu0=$(mb_agent_cpu_ticks)
	bytes0=$(mb_mirror_bytes)
	t0=$(date +%s.%N)
	"$TRACE_POD" exec "$MB_CLI" -- sh -c "for i in \$(seq $BENCH_MIRROR_UPLOADS); do
		tcp_sink send $MB_WEB_IP:$MB_SINK_PORT ${BENCH_MIRROR_UPLOAD_MIB}M >/dev/null & done; wait"
	t1=$(date +%s.%N)
	mb_wait_ends up "$BENCH_MIRROR_UPLOADS" >/dev/null
	cpu1=$(mb_agent_cpu_ticks)
	bytes1=$(mb_mirror_bytes)
	up_whole=$(python3 - "$MB_WORK/up" "$BENCH_MIRROR_UPLOAD_MIB" <<'EOF'
import os, sys, zlib
d, mib = sys.argv[1], int(sys.argv[2])
one = bytes(((j * 7 + j // 4099) & 0xff) for j in range(1 << 20))
crc = 0
for _ in range(mib):
    crc = zlib.crc32(one, crc)
want = f"{mib << 20} {crc}"
print(sum(1 for f in os.listdir(d) if f.endswith(".sum") and open(f"{d}/{f}").read().strip() == want
          and open(f"{d}/{f[:-4]}.end").read().strip() == "0"))
EOF
)
	mbps=$(python3 -c "print('%.0f' % ($BENCH_MIRROR_UPLOADS * $BENCH_MIRROR_UPLOAD_MIB / ($t1 - $t0)))")
	if [ "$up_whole" != "$BENCH_MIRROR_UPLOADS" ]; then
		for f in "$MB_WORK"/up/*.end; do
			echo "upload copy $(basename "$f" .end): end $(cat "$f"), bytes+crc $(cat "${f%.end}.sum" 2>/dev/null)"
		done
		grep -E 'ring buffer full|fell .* behind|not offered' "$MB_WORK/main.log" || true
	fi
	mb_sub_stop up
	local cpu_per_mib
	cpu_per_mib=$(python3 -c "
import os
ms = ($cpu1 - $cpu0) * 1000 / os.sysconf('SC_CLK_TCK')
mib = ($bytes1 - $bytes0) / 1048576
print('%.2f ms' % (ms / mib) if mib else '-')")

	bench_rows "$tsv" \
		"pod web, no session" "$mbase rps" "-" "-" "-" \
		"pod web, a mirror session on its port" "$mwith rps" "$mbase rps" "$mratio" ">= 0.95x" \
		"requests in whole copies / answered (keep-alive)" "$mirrored / $sent" "-" \
		"$(python3 -c "print('%.1f%%' % (100 * $mirrored / $sent) if $sent else '-')")" "100%" \
		"${short_rows[@]}" \
		"uploads delivered whole / sent, ${BENCH_MIRROR_UPLOADS}x${BENCH_MIRROR_UPLOAD_MIB} MiB at $mbps MiB/s" \
		"$up_whole / $BENCH_MIRROR_UPLOADS" "-" \
		"$(python3 -c "print('%.1f%%' % (100 * $up_whole / $BENCH_MIRROR_UPLOADS))")" "100%" \
		"agent CPU per mirrored MiB (utime+stime)" "$cpu_per_mib" "-" "-" "-"
	print_rows "mirror mode: pod $MB_WEB throughput with no session vs a mirror session (httpbench -c $BENCH_MIRROR_C, ${BENCH_MIRROR_SECONDS}s x $BENCH_MIRROR_ROUNDS rounds in alternating order, medians; ratio: median of the rounds' ratios), completeness, agent CPU" "$tsv"
	echo "rounds rps: no session ${base[*]}; mirror ${with[*]}"
}
