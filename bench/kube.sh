# shellcheck shell=bash
# Sourced by bench/run.sh: trace-run through a Kubernetes API server's port-forward
# (the WebSocket path of kube/, against tests/kube/apiserver.py) next to the same agent
# reached directly over TCP, same run, rows side by side:
#   session start        trace-run --target pod/web /bin/true
#   outgoing connect     a TCP connect from the pod (each is a new agent stream: one
#                        more port-forward through the API server)
#   TCP throughput       64 MiB sent from the host program to a sink pod
#   remote 4 KiB open    open+read+close of 1000 different 4 KiB files in the pod
# The API server is Python (tests/kube), so the port-forward rows are an upper bound
# of what a real cluster's API server + kubelet cost, minus their network hops.
source "$HERMIT_ROOT/tests/kube/kube_lib.sh"

# shellcheck disable=SC2034
KUBE_BENCHMARKS=(kube_portforward)
BENCH_KUBE_CONNECTS="${BENCH_KUBE_CONNECTS:-50}"
BENCH_KUBE_MIB="${BENCH_KUBE_MIB:-64}"

kb_up() {
	[ -z "${KB_READY:-}" ] || return 0
	tracer_env_up
	tb_tcp_agent_up
	KWORK=$(mktemp -d /tmp/hermit-kube-bench.XXXXXX)
	chmod 0755 "$KWORK"
	bench_on_exit kb_down
	kube_certs
	KAGENT_PORT=${TB_TCP_AGENT##*:}
	tp deploy "$BUILD/tests/tcp_sink" --rootfs "$FX_ROOTFS" >/dev/null
	KB_SINK="${FX_WEB%web}kube-sink" # not agent.sh's hb-sink, alive in the same run
	tp run -d --name "$KB_SINK" --rootfs "$FX_ROOTFS" -- tcp_sink serve -p 9000 </dev/null >/dev/null
	fx_wait_log "$KB_SINK" listening
	KB_SINK_IP=$(pod_ip "$KB_SINK")
	kube_scenario
	python3 "$KUBE_APISERVER_PY" --scenario "$KWORK/scenario.json" --cert "$KWORK/pki/server.crt" \
		--key "$KWORK/pki/server.key" --client-ca "$KWORK/pki/ca.crt" --port-file "$KWORK/port" \
		</dev/null >>"$KWORK/apiserver.log" 2>&1 &
	KB_APISERVER_PID=$!
	wait_until 100 test -s "$KWORK/port" || { echo "bench: API server did not start" >&2; return 1; }
	KUBE_SERVER="https://127.0.0.1:$(cat "$KWORK/port")"
	KUBECONFIG_ALICE="$KWORK/alice.yaml"
	kube_config "$KUBECONFIG_ALICE"
	KB_READY=1
}
kb_down() {
	[ -z "${KB_APISERVER_PID:-}" ] || kill "$KB_APISERVER_PID" 2>/dev/null
	[ -z "${KB_SINK:-}" ] || pod_cleanup "$KB_SINK" >/dev/null 2>&1
	case "${KWORK:-}" in /tmp/hermit-kube-bench.?*) rm -rf -- "$KWORK" ;; esac
}

KB_CONNECT_PY='
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=10)
    t.append(time.perf_counter() - t0)
    s.close()
t.sort()
print("connect_ms=%.3f" % (t[len(t) // 2] * 1000))
'
KB_SEND_PY='
import socket, sys, time
host, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = bytes(1 << 20)
s = socket.create_connection((host, port), timeout=30)
t0 = time.perf_counter()
for _ in range(mib):
    s.sendall(buf)
dt = time.perf_counter() - t0
print("mbps=%.1f" % (mib / dt))
s.close()
'

# kb_run direct|kube PROGRAM [ARGS]
kb_run() {
	local how="$1"
	shift
	if [ "$how" = direct ]; then
		trun_tcp --backend seccomp -- "$@"
	else
		timeout 120 "$TRACE_RUN" --kubeconfig "$KUBECONFIG_ALICE" --target pod/web --backend seccomp -- "$@"
	fi
}
kb_field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

bench_kube_portforward() {
	kb_up
	local tsv="$BENCH_DIR/kube_start.tsv" how
	mkdir -p "$BENCH_DIR"
	bench_measure "$tsv" \
		"direct: --agent $TB_TCP_AGENT" "$TRACE_RUN --agent $TB_TCP_AGENT --token-file $FX_TOKEN_FILE --target pod/$FX_WEB -- /bin/true" \
		"port-forward: --kubeconfig" "$TRACE_RUN --kubeconfig $KUBECONFIG_ALICE --target pod/web -- /bin/true"
	print_table "kube: session start, trace-run --target pod/web /bin/true, N=$BENCH_N interleaved" "direct: --agent $TB_TCP_AGENT" "$tsv"
	local -A conn=() tput=() opn=()
	for _ in $(seq "$BENCH_TRACER_PROCS"); do
		for how in direct kube; do
			conn[$how]+=" $(kb_run "$how" python3 -c "$KB_CONNECT_PY" "$FX_SVC_IP" "$FX_PORT" "$BENCH_KUBE_CONNECTS" | kb_field connect_ms)"
			tput[$how]+=" $(kb_run "$how" python3 -c "$KB_SEND_PY" "$KB_SINK_IP" 9000 "$BENCH_KUBE_MIB" | kb_field mbps)"
			opn[$how]+=" $(kb_run "$how" "$SYSCALL_LOOP" -n 200 -r 3 open /srv/bench/many/%d | kb_field ns)"
		done
	done
	tsv="$BENCH_DIR/kube_paths.tsv"
	: >"$tsv"
	local d k
	# shellcheck disable=SC2086
	{
		d=$(bench_median ${conn[direct]}); k=$(bench_median ${conn[kube]})
		printf '%s\t%s\t%s\t%s\t%s\n' "outgoing TCP connect, ms (median of $BENCH_KUBE_CONNECTS)" "$d" "$k" "$(bench_ratio "$k" "$d")" "-"
		d=$(bench_median ${tput[direct]}); k=$(bench_median ${tput[kube]})
		printf '%s\t%s\t%s\t%s\t%s\n' "TCP send to a pod, MB/s ($BENCH_KUBE_MIB MiB)" "$d" "$k" "$(bench_ratio "$k" "$d")" "-"
		d=$(tb_us "$(bench_median ${opn[direct]})"); k=$(tb_us "$(bench_median ${opn[kube]})")
		printf '%s\t%s\t%s\t%s\t%s\n' "remote 4 KiB open+read+close, us" "$d" "$k" "$(bench_ratio "$k" "$d")" "-"
	} >>"$tsv"
	echo
	echo "== kube: the agent direct (TCP) vs through the API server's WebSocket port-forward, median of $BENCH_TRACER_PROCS processes"
	printf '%-52s %14s %14s %10s\n' "" "direct" "port-forward" "pf/direct"
	while IFS=$'\t' read -r name d k r _; do
		printf '%-52s %14s %14s %10s\n' "$name" "$d" "$k" "$r"
	done <"$tsv"
	echo "runs: connect direct${conn[direct]}; kube${conn[kube]}; MB/s direct${tput[direct]}; kube${tput[kube]}; open ns direct${opn[direct]}; kube${opn[kube]}"
}
