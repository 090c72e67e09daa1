# Sourced by bench/run.sh: a filtered steal (agent/http_router.c) under load. A pod runs
# tests/apps/httpserve; tests/apps/httpbench in another pod sends keep-alive GETs
# (BENCH_STEAL_C connections for BENCH_STEAL_SECS seconds): straight to the pod, then
# with a session stealing the port with a header filter: requests with the header (to
# the session's answerer, agent_e2e steal), and without it (through the router to the
# pod's own server). Uses agent.sh's agent (agent_env_up).

BENCH_STEAL_C="${BENCH_STEAL_C:-8}"
BENCH_STEAL_SECS="${BENCH_STEAL_SECS:-5}"
BENCH_STEAL_ROUNDS="${BENCH_STEAL_ROUNDS:-3}"

# sh_field LINE KEY: the value of KEY=VALUE in httpbench's result line
sh_field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" <<<"$1"; }

bench_steal_http() {
	agent_env_up
	local web="hb$$-sweb" cli="hb$$-scli" port=8080 out ip
	"$TRACE_POD" deploy "$BUILD/apps/httpserve" --rootfs "$AB_ROOTFS" >/dev/null
	"$TRACE_POD" deploy "$BUILD/apps/httpbench" --rootfs "$AB_ROOTFS" >/dev/null
	"$TRACE_POD" run -d --init --name "$web" --rootfs "$AB_ROOTFS" -- \
		httpserve -listen ":$port" -body pod-answer </dev/null >/dev/null
	"$TRACE_POD" run -d --name "$cli" --rootfs "$AB_ROOTFS" -- sleep 1000000 </dev/null >/dev/null
	steal_http_down() {
		local n
		[ -f "$AB_WORK/steal.pid" ] && kill -TERM "$(cat "$AB_WORK/steal.pid")" 2>/dev/null
		for n in "hb$$-sweb" "hb$$-scli"; do
			[ -e "/run/hermit/pods/$n" ] && timeout 20 "$TRACE_POD" rm -f "$n" >/dev/null 2>&1
		done
		return 0
	}
	bench_on_exit steal_http_down
	local i
	for i in $(seq 100); do
		"$TRACE_POD" logs "$web" 2>/dev/null | grep -q listening && break
		sleep 0.1
	done
	ip=$(ab_pod_ip "$web")
	[ -n "$ip" ] || { echo "bench: the web pod has no IP" >&2; return 1; }
	load() { # HEADER: one httpbench run from the client pod; its result line
		local args=(httpbench -url "http://$ip:$port/" -c "$BENCH_STEAL_C" -d "${BENCH_STEAL_SECS}s")
		[ -z "$1" ] || args+=(-header "$1")
		"$TRACE_POD" exec "$cli" -- "${args[@]}" 2>&1 | grep '^requests='
	}
	load "" >/dev/null # warm-up
	# rounds: direct, then with the session (matching, not matching), then the session
	# ends; medians, so load drift on this shared machine hits all three alike
	local r drps=() srps=() prps=() dl=() sl=() pl=()
	for r in $(seq "$BENCH_STEAL_ROUNDS"); do
		out=$(load "")
		drps+=("$(sh_field "$out" rps)") dl+=("$out")
		rm -f "$AB_WORK/steal.ready"
		timeout 600 "$AGENT_E2E" --unix "$AB_WORK/main.sock" --token-file "$AB_WORK/token" \
			--target "pod/$web" steal "$port" --http local-answer \
			--filter '{"header_filter": "^x-session: bench$"}' --ready "$AB_WORK/steal.ready" \
			>"$AB_WORK/steal.out" 2>&1 &
		echo $! >"$AB_WORK/steal.pid"
		for i in $(seq 100); do [ -f "$AB_WORK/steal.ready" ] && break; sleep 0.1; done
		[ -f "$AB_WORK/steal.ready" ] || { cat "$AB_WORK/steal.out" >&2; return 1; }
		out=$(load "X-Session: bench")
		srps+=("$(sh_field "$out" rps)") sl+=("$out")
		out=$(load "")
		prps+=("$(sh_field "$out" rps)") pl+=("$out")
		kill -TERM "$(cat "$AB_WORK/steal.pid")" 2>/dev/null || true
		wait "$(cat "$AB_WORK/steal.pid")" 2>/dev/null || true
		rm -f "$AB_WORK/steal.pid"
	done
	# latencies of the median run of each kind
	pick() { # RPS-MEDIAN LINES...: the line whose rps is closest to the median
		local m="$1" best="" bd="" l d
		shift
		for l in "$@"; do
			d=$(python3 -c 'import sys; print(abs(float(sys.argv[1]) - float(sys.argv[2])))' "$(sh_field "$l" rps)" "$m")
			if [ -z "$bd" ] || python3 -c 'import sys; sys.exit(float(sys.argv[1]) >= float(sys.argv[2]))' "$d" "$bd"; then
				best="$l" bd="$d"
			fi
		done
		echo "$best"
	}
	local dm sm pm direct stolen passed
	dm=$(median "${drps[@]}")
	sm=$(median "${srps[@]}")
	pm=$(median "${prps[@]}")
	direct=$(pick "$dm" "${dl[@]}")
	stolen=$(pick "$sm" "${sl[@]}")
	passed=$(pick "$pm" "${pl[@]}")
	local dr sr pr tsv="$BENCH_DIR/steal_http.tsv"
	dr=$dm sr=$sm pr=$pm
	mkdir -p "$BENCH_DIR"
	printf '%s\t%s\t%s\t%s\t%s\n' \
		"direct to the pod, req/s (p50 / p99 ms)" "$dr ($(sh_field "$direct" p50_ms) / $(sh_field "$direct" p99_ms))" "-" "-" "-" \
		"steal with a header filter, matching -> local, req/s (p50 / p99 ms)" "$sr ($(sh_field "$stolen" p50_ms) / $(sh_field "$stolen" p99_ms))" "$dr" "$(ratio "$sr" "$dr")" ">= 0.70x direct" \
		"steal with a header filter, not matching -> pod, req/s (p50 / p99 ms)" "$pr ($(sh_field "$passed" p50_ms) / $(sh_field "$passed" p99_ms))" "$dr" "$(ratio "$pr" "$dr")" ">= 0.70x direct" \
		>"$tsv"
	print_rows "filtered steal: httpbench in another pod, $BENCH_STEAL_C keep-alive connections, ${BENCH_STEAL_SECS}s runs, median of $BENCH_STEAL_ROUNDS (latency: of the median run)" "$tsv"
	echo "runs req/s: direct ${drps[*]}; matching ${srps[*]}; not matching ${prps[*]}"
}
