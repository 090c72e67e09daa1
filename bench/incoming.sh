# Sourced by bench/run.sh: incoming traffic of a pod through a real trace-agent.
#
#   incoming_steal   httpbench (static Go, keep-alive) in pod LOAD against httpserve in pod
#                    WEB: direct, and with the port stolen by a session that relays each
#                    connection to an httpserve on the host (agent_e2e steal --forward, the
#                    path trace-run takes: sk_lookup -> agent's listener -> relay -> stream
#                    -> local server). Rounds interleaved, median of BENCH_STEAL_ROUNDS.
#                    With a header filter (agent_e2e steal --filter): requests with the
#                    header to the local server, the others through the router to the pod.
#                    And the real thing: httpserve under `trace-run --incoming steal`
#                    (unix agent), which accepts the pod's own socket (the hand-off), and
#                    the same with fd_handoff false (agent relay + trace-run relay).
#
# Uses the agent setup of bench/agent.sh's helpers (agent_up/agent_down) with pods of
# its own.

HTTPSERVE="$BUILD/apps/httpserve"
HTTPBENCH="$BUILD/apps/httpbench"
BI_WORK=""
BI_PORT=8080
BI_LOCAL_PORT="${BI_LOCAL_PORT:-18481}"
BENCH_STEAL_ROUNDS="${BENCH_STEAL_ROUNDS:-3}"
BENCH_STEAL_SECONDS="${BENCH_STEAL_SECONDS:-4}"
BENCH_STEAL_C="${BENCH_STEAL_C:-8}"

# The stolen rows: the local server behind a user-space relay (agent_e2e --forward: the
# hop trace-run's local delivery adds), and a C responder on the stream itself (the
# agent's own cost; faster per request than the pod's Go server, so not the same
# server); then httpserve under `trace-run --target pod/WEB --incoming steal`.
incoming_env_down() {
	local f
	[ -n "$BI_WORK" ] || return 0
	for f in "$BI_WORK"/*.pid; do
		[ -f "$f" ] || continue
		case "$f" in
		*/agent.pid) agent_down "$BI_WORK" agent ;;
		*) kill -TERM "$(cat "$f")" 2>/dev/null || true ;;
		esac
	done
	bench_pods_rm "${BI_WEB:-}" "${BI_LOAD:-}"
	case "$BI_WORK" in
	/tmp/hermit-bench-incoming.?*) rm -rf -- "$BI_WORK" ;;
	esac
	BI_WORK=""
}

incoming_env_up() {
	[ -z "$BI_WORK" ] || return 0
	local i
	bench_need_built "$AGENT_E2E" "$TRACE_AGENT" "$TRACE_RUN" "$HTTPSERVE" "$HTTPBENCH" || return 1
	BI_WORK=$(mktemp -d /tmp/hermit-bench-incoming.XXXXXX)
	bench_on_exit incoming_env_down
	chmod 0755 "$BI_WORK"
	BI_WEB="bi$$-web"
	BI_LOAD="bi$$-load"
	local rootfs
	rootfs=$(bench_pod_rootfs "$BI_WORK")
	"$TRACE_POD" deploy "$HTTPSERVE" --rootfs "$rootfs" >/dev/null
	"$TRACE_POD" deploy "$HTTPBENCH" --rootfs "$rootfs" >/dev/null
	"$TRACE_POD" run -d --name "$BI_WEB" --rootfs "$rootfs" -- \
		httpserve -listen ":$BI_PORT" -body "hello from the pod" </dev/null >/dev/null
	"$TRACE_POD" run -d --name "$BI_LOAD" --rootfs "$rootfs" -- sleep 1000000 </dev/null >/dev/null
	# the session's local server, the same program and body size
	"$HTTPSERVE" -listen "127.0.0.1:$BI_LOCAL_PORT" -body "hello from local!!" \
		</dev/null >/dev/null 2>"$BI_WORK/local.log" &
	echo $! >"$BI_WORK/local.pid"
	for i in $(seq 100); do
		"$TRACE_POD" logs "$BI_WEB" 2>/dev/null | grep -q listening &&
			grep -q listening "$BI_WORK/local.log" && break
		sleep 0.1
	done
	BI_WEB_IP=$(ab_pod_ip "$BI_WEB")
	[ -n "$BI_WEB_IP" ] || { echo "bench: pod $BI_WEB has no IP" >&2; return 1; }
	agent_up "$BI_WORK" agent
}

# bi_steal_start ARGS...: a session stealing the web pod's port, serving connections
# as agent_e2e steal ARGS says; bi_steal_stop ends it
bi_steal_start() {
	rm -f "$BI_WORK/steal.ready"
	timeout 600 "$AGENT_E2E" --unix "$BI_WORK/agent.sock" --token-file "$BI_WORK/token" \
		--target "pod/$BI_WEB" steal "$BI_PORT" "$@" \
		--ready "$BI_WORK/steal.ready" >"$BI_WORK/steal.out" 2>&1 &
	echo $! >"$BI_WORK/steal.pid"
	local i
	for i in $(seq 100); do
		[ -f "$BI_WORK/steal.ready" ] && return 0
		sleep 0.1
	done
	echo "bench: the steal did not start: $(cat "$BI_WORK/steal.out")" >&2
	return 1
}
# bi_trun_start on|off [LISTEN]: httpserve under trace-run stealing the web pod's port,
# with the fd hand-off on or off; on 0.0.0.0:PORT unless LISTEN says otherwise (Go
# listens dual-stack on both); bi_trun_stop ends it
bi_trun_start() {
	echo "{\"feature\": {\"network\": {\"incoming\": {\"mode\": \"steal\", \"fd_handoff\": $([ "$1" = on ] && echo true || echo false)}}}}" \
		>"$BI_WORK/trun.json"
	: >"$BI_WORK/trun.err"
	timeout 600 "$TRACE_RUN" --agent-unix "$BI_WORK/agent.sock" --token-file "$BI_WORK/token" \
		--target "pod/$BI_WEB" -f "$BI_WORK/trun.json" -- \
		"$HTTPSERVE" -listen "${2:-0.0.0.0:$BI_PORT}" -body "hello from local!!" \
		</dev/null >/dev/null 2>"$BI_WORK/trun.err" &
	echo $! >"$BI_WORK/trun.pid"
	local i
	for i in $(seq 100); do
		grep -q 'is stolen by the program' "$BI_WORK/trun.err" && return 0
		sleep 0.1
	done
	echo "bench: trace-run did not steal: $(cat "$BI_WORK/trun.err")" >&2
	return 1
}
bi_trun_stop() { bi_stop trun; }
bi_steal_stop() { bi_stop steal; }

# bi_stop NAME: ends the process BI_WORK/NAME.pid names, and forgets it
bi_stop() {
	local pid
	pid=$(cat "$BI_WORK/$1.pid")
	rm -f "$BI_WORK/$1.pid"
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# bi_load [HEADER]: one httpbench run in the load pod (with that header on every
# request); prints its result line
bi_load() {
	local out hdr=()
	[ -z "${1:-}" ] || hdr=(-header "$1")
	out=$(timeout 120 "$TRACE_POD" exec "$BI_LOAD" -- httpbench -url "http://$BI_WEB_IP:$BI_PORT/" \
		-c "$BENCH_STEAL_C" -d "${BENCH_STEAL_SECONDS}s" "${hdr[@]}" </dev/null) ||
		{ echo "bench: httpbench failed: $out" >&2; return 1; }
	echo "$out"
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

BI_FORWARD=(--forward "127.0.0.1:$BI_LOCAL_PORT")
BI_STREAM=(--http-keepalive "hello from local!!")
# a filtered steal (agent/http_router.c): requests with the header go to the local
# server, the others through the router to the pod's own
BI_FILTER_HEADER="X-Session: bench"
BI_FILTER=(--filter '{"header_filter": "^x-session: bench$"}' "${BI_FORWARD[@]}")

bench_incoming_steal() {
	incoming_env_up
	local -A rps p50 p99
	local r out body mode
	# the stealer really answers: the local server's body, not the pod's
	for mode in BI_FORWARD BI_STREAM; do
		local -n args=$mode
		bi_steal_start "${args[@]}"
		body=$("$TRACE_POD" exec "$BI_LOAD" -- wget -q -O - "http://$BI_WEB_IP:$BI_PORT/" </dev/null)
		bi_steal_stop
		[ "$body" = "hello from local!!" ] || { echo "bench: the steal answered '$body'" >&2; return 1; }
	done
	# the filter: the header to the local server, the rest to the pod
	bi_steal_start "${BI_FILTER[@]}"
	body=$("$TRACE_POD" exec "$BI_LOAD" -- wget -q -O - --header "$BI_FILTER_HEADER" \
		"http://$BI_WEB_IP:$BI_PORT/" </dev/null)
	local passed
	passed=$("$TRACE_POD" exec "$BI_LOAD" -- wget -q -O - "http://$BI_WEB_IP:$BI_PORT/" </dev/null)
	bi_steal_stop
	[ "$body" = "hello from local!!" ] && [ "$passed" = "hello from the pod" ] ||
		{ echo "bench: the filtered steal answered '$body' / '$passed'" >&2; return 1; }
	# trace-run answers from the local program, with and without the hand-off
	for mode in on off; do
		bi_trun_start "$mode"
		body=$("$TRACE_POD" exec "$BI_LOAD" -- wget -q -O - "http://$BI_WEB_IP:$BI_PORT/" </dev/null)
		bi_trun_stop
		[ "$body" = "hello from local!!" ] || { echo "bench: trace-run ($mode) answered '$body'" >&2; return 1; }
	done
	for r in $(seq "$BENCH_STEAL_ROUNDS"); do
		for mode in direct BI_FORWARD BI_STREAM BI_FILTER TRUN_HANDOFF TRUN_DUAL TRUN_RELAY; do
			if [ "$mode" = TRUN_HANDOFF ]; then
				bi_trun_start on
			elif [ "$mode" = TRUN_DUAL ]; then
				bi_trun_start on ":$BI_PORT"
			elif [ "$mode" = TRUN_RELAY ]; then
				bi_trun_start off
			elif [ "$mode" != direct ]; then
				local -n args=$mode
				bi_steal_start "${args[@]}"
			fi
			if [ "$mode" = BI_FILTER ]; then
				# matching first, then passed to the pod, on the same subscription
				out=$(bi_load "$BI_FILTER_HEADER")
				local pass
				pass=$(bi_load)
				rps[BI_FILTER_PASS]+=" $(field rps "$pass")"
				p50[BI_FILTER_PASS]+=" $(field p50_ms "$pass")"
				p99[BI_FILTER_PASS]+=" $(field p99_ms "$pass")"
			else
				out=$(bi_load)
			fi
			case "$mode" in
			direct) ;;
			TRUN_*) bi_trun_stop ;;
			*) bi_steal_stop ;;
			esac
			rps[$mode]+=" $(field rps "$out")"
			p50[$mode]+=" $(field p50_ms "$out")"
			p99[$mode]+=" $(field p99_ms "$out")"
		done
	done
	local tsv="$BI_WORK/steal.tsv" d
	# shellcheck disable=SC2086 # word lists of numbers
	d=$(bench_median ${rps[direct]})
	added() { python3 -c 'import sys; print("%+.2f ms" % (float(sys.argv[1]) - float(sys.argv[2])))' "$1" "$2"; }
	# latencies are fractions of a ms: two decimals
	median2() { python3 -c 'import statistics, sys; print("%.2f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
	{
		printf 'direct to the pod (httpserve), req/s\t%s\t-\t-\t-\n' "$d"
		for mode in TRUN_HANDOFF TRUN_DUAL TRUN_RELAY BI_FORWARD BI_STREAM BI_FILTER BI_FILTER_PASS; do
			local name s
			case "$mode" in
			TRUN_HANDOFF) name="steal, Go httpserve under trace-run --incoming steal vs direct to the pod (unix agent)" ;;
			TRUN_DUAL) name="the same, listening on :$BI_PORT" ;;
			TRUN_RELAY) name="the same, fd_handoff false (agent relay + trace-run relay)" ;;
			BI_FORWARD) name="stolen -> relay -> local httpserve" ;;
			BI_STREAM) name="stolen, served on the stream (C)" ;;
			BI_FILTER) name="header filter, matching -> router -> local httpserve" ;;
			BI_FILTER_PASS) name="header filter, not matching -> router -> the pod" ;;
			esac
			# shellcheck disable=SC2086
			s=$(bench_median ${rps[$mode]})
			printf '%s, req/s\t%s\t%s\t%s\t>= 0.70x\n' "$name" "$s" "$d" "$(bench_ratio "$s" "$d")"
			# shellcheck disable=SC2086
			printf '%s, latency p50\t%s ms\t%s ms\t%s\t-\n' "$name" "$(median2 ${p50[$mode]})" \
				"$(median2 ${p50[direct]})" "$(added "$(median2 ${p50[$mode]})" "$(median2 ${p50[direct]})")"
			# shellcheck disable=SC2086
			printf '%s, latency p99\t%s ms\t%s ms\t%s\t-\n' "$name" "$(median2 ${p99[$mode]})" \
				"$(median2 ${p99[direct]})" "$(added "$(median2 ${p99[$mode]})" "$(median2 ${p99[direct]})")"
		done
	} >"$tsv"
	print_rows "steal: httpbench -c $BENCH_STEAL_C keep-alive from another pod, ${BENCH_STEAL_SECONDS}s, median of $BENCH_STEAL_ROUNDS interleaved" "$tsv"
	# shellcheck disable=SC2086
	echo "runs req/s: direct${rps[direct]}; trace-run hand-off${rps[TRUN_HANDOFF]}; trace-run dual-stack${rps[TRUN_DUAL]}; trace-run fd_handoff false${rps[TRUN_RELAY]}; relay to httpserve${rps[BI_FORWARD]}; on the stream${rps[BI_STREAM]}; filter matching${rps[BI_FILTER]}; filter passed to the pod${rps[BI_FILTER_PASS]}"
}
