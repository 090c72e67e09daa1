# shellcheck shell=bash
# Sourced by bench/run.sh: benchmarks of trace-run against a real trace-agent and real
# pods, the scenario of tests/trace_fixture.sh (pod web the target, pod svc an HTTP
# service), started on first use and removed by an exit hook.
#
#   tracer_syscalls  system calls trace-run does not intercept (getppid, pread of a local
#                    file), timed inside tests/apps-c/syscall_loop: vs native, goal <= 1.05x;
#                    with the floor any seccomp filter costs (a 1-instruction ALLOW filter)
#   tracer_open      open+read+close of a 4 KiB file in the pod, seccomp vs ptrace backend
#                    in the same run: goal seccomp <= 0.3x ptrace; beside them the floor
#                    of a user-notification round trip on this machine (notif_floor)
#   tracer_start     `trace-run --target pod/web /bin/true` vs /bin/true: goal < 50 ms added
#   tracer_python    python3 start-up importing json, http.server, email, urllib.request,
#                    asyncio, decimal (thousands of path syscalls that stay local): native
#                    vs trace-run (seccomp, ptrace) vs proot, the usual ptrace-based path
#                    interposer: goal trace-run <= 1.10x native; and under notif_floor, a
#                    supervisor that answers the same path calls with CONTINUE and does
#                    nothing else: the floor of any user-notification interposer here
#   tracer_http      httpbench (static Go) GETs to pod svc: under trace-run on the host vs
#                    the same binary inside pod web: goal >= 0.7x the requests per second
#                    (svc answers the pods' network only, so there is no host-direct row);
#                    also through the agent's TCP address (--agent 127.0.0.1:PORT, as a
#                    cluster's port-forward), where the program's socket is the stream,
#                    moved by the agent's kernel relay, and beside it the same through an
#                    agent with --no-kernel-relay (its user-space relay)
source "$HERMIT_ROOT/tests/lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"

# shellcheck disable=SC2034 # bench/run.sh adds them to BENCHMARKS
TRACER_BENCHMARKS=(tracer_syscalls tracer_open tracer_start tracer_python tracer_http)
SYSCALL_LOOP="$BUILD/tests/syscall_loop"
NOTIF_FLOOR="$BUILD/tests/notif_floor" # a do-nothing user-notification supervisor
BENCH_TRACER_PROCS="${BENCH_TRACER_PROCS:-5}"   # processes per row, interleaved
BENCH_SYSCALL_N="${BENCH_SYSCALL_N:-200000}"    # calls per round, 11 rounds per process
BENCH_OPEN_N="${BENCH_OPEN_N:-1000}"            # opens per round, 5 rounds per process
BENCH_HTTP_ROUNDS="${BENCH_HTTP_ROUNDS:-3}"
BENCH_HTTP_SECONDS="${BENCH_HTTP_SECONDS:-3}"
BENCH_HTTP_C="${BENCH_HTTP_C:-4}"


tracer_env_up() {
	[ -z "$FX_WORK" ] || return 0
	[ -x "$SYSCALL_LOOP" ] || { echo "bench: $SYSCALL_LOOP not built (make BUILD=... all)" >&2; return 1; }
	[ -x "$NOTIF_FLOOR" ] || { echo "bench: $NOTIF_FLOOR not built (make BUILD=... all)" >&2; return 1; }
	bench_on_exit fixture_down
	FX_PREFIX="hb$$-" FX_NO_TRAP=1 FX_QUIET=1 fixture_up
	# a local file for the pread loop: /tmp is local under trace-run's default policy
	head -c 4096 /dev/urandom >"$FX_WORK/local-4k.bin"
	# 1000 files of 4 KiB in the pod (000 to 999), for opens no cache answers
	mkdir -p "$FX_ROOTFS/srv/bench/many"
	head -c $((1000 * 4096)) /dev/urandom | split -b 4096 -a 3 -d - "$FX_ROOTFS/srv/bench/many/"
}

# tb_run BACKEND|native CMD [ARGS]: CMD natively or under trace-run on pod web.
tb_run() {
	local how="$1"
	shift
	if [ "$how" = native ]; then
		"$@"
	else
		trun --backend "$how" -- "$@"
	fi
}

# tb_ns HOW CMD [ARGS]: the ns= figure of one syscall_loop process
tb_ns() {
	local out
	out=$(tb_run "$@") || { echo "bench: $* failed" >&2; return 1; }
	sed -n 's/.* ns=\([0-9.]*\) .*/\1/p' <<<"$out"
}

# native | floor (syscall_loop -s: a one-instruction seccomp ALLOW filter, what any
# filter costs) | seccomp | ptrace (trace-run's backends)
bench_tracer_syscalls() {
	tracer_env_up
	local tsv="$BENCH_DIR/tracer_syscalls.tsv" mode how
	local -A runs=()
	local file="$FX_WORK/local-4k.bin"
	for _ in $(seq "$BENCH_TRACER_PROCS"); do
		for mode in getppid pread; do
			for how in native floor seccomp ptrace; do
				local args=(-n "$BENCH_SYSCALL_N" -r 11 "$mode")
				[ "$mode" = getppid ] || args+=("$file")
				if [ "$how" = floor ]; then
					runs[$mode.$how]+=" $(tb_ns native "$SYSCALL_LOOP" -s "${args[@]}")"
				else
					runs[$mode.$how]+=" $(tb_ns "$how" "$SYSCALL_LOOP" "${args[@]}")"
				fi
			done
		done
	done
	mkdir -p "$BENCH_DIR"
	: >"$tsv"
	for mode in getppid pread; do
		local base m
		# shellcheck disable=SC2086
		base=$(bench_median ${runs[$mode.native]})
		printf '%s\t%s\t%s\t%s\t%s\n' "$mode, native" "$base ns" "-" "-" "-" >>"$tsv"
		# shellcheck disable=SC2086
		m=$(bench_median ${runs[$mode.floor]})
		printf '%s\t%s\t%s\t%s\t%s\n' "$mode, floor: any seccomp filter (1 insn)" "$m ns" "$base ns" \
			"$(bench_ratio "$m" "$base")" "-" >>"$tsv"
		for how in seccomp ptrace; do
			# shellcheck disable=SC2086
			m=$(bench_median ${runs[$mode.$how]})
			printf '%s\t%s\t%s\t%s\t%s\n' "$mode, trace-run --backend $how" "$m ns" "$base ns" \
				"$(bench_ratio "$m" "$base")" "<= 1.05x native" >>"$tsv"
		done
	done
	print_rows "system calls trace-run does not intercept, ns per call (median of $BENCH_TRACER_PROCS processes x 11 rounds x $BENCH_SYSCALL_N calls)" "$tsv"
	for mode in getppid pread; do
		echo "runs $mode ns: native${runs[$mode.native]}; floor${runs[$mode.floor]}; seccomp${runs[$mode.seccomp]}; ptrace${runs[$mode.ptrace]}"
	done
}

bench_tracer_open() {
	tracer_env_up
	local tsv="$BENCH_DIR/tracer_open.tsv" how kind
	local -A runs=()
	# same: one file again and again (trace-run's cache of remote contents answers
	# most opens: this is the interception itself); many: 1000 files in turn (each open
	# is a round trip to the agent)
	local -A path=([same]=/srv/bench/4k.bin [many]=/srv/bench/many/%d)
	for _ in $(seq "$BENCH_TRACER_PROCS"); do
		for kind in same many; do
			for how in seccomp ptrace; do
				runs[$kind.$how]+=" $(tb_ns "$how" "$SYSCALL_LOOP" -n "$BENCH_OPEN_N" -r 5 open "${path[$kind]}")"
			done
		done
		runs[native]+=" $(tb_ns native "$SYSCALL_LOOP" -n "$BENCH_OPEN_N" -r 5 open "$FX_ROOTFS/srv/bench/many/%d")"
		# the machine's floor: a minimal supervisor answering the same loop's opens of a
		# local file of the same size, with CONTINUE or with ADDFD (a cached open's answer)
		for how in continue addfd; do
			local floor=("$NOTIF_FLOOR")
			[ "$how" = continue ] || floor+=(--addfd "$FX_WORK/local-4k.bin")
			runs[floor.$how]+=" $(tb_ns native "${floor[@]}" -- "$SYSCALL_LOOP" -n "$BENCH_OPEN_N" -r 5 open "$FX_WORK/local-4k.bin")"
		done
	done
	local -A med=()
	for kind in same.seccomp same.ptrace many.seccomp many.ptrace native floor.continue floor.addfd; do
		# shellcheck disable=SC2086
		med[$kind]=$(bench_median ${runs[$kind]})
	done
	bench_rows "$tsv" \
		"for scale: the files opened natively" "$(tb_us "${med[native]}") us" "-" "-" "-" \
		"floor: a minimal supervisor, CONTINUE" "$(tb_us "${med[floor.continue]}") us" "-" "-" "-" \
		"floor: a minimal supervisor, ADDFD (as a cached open)" "$(tb_us "${med[floor.addfd]}") us" "-" "-" "-" \
		"one file again (cached), --backend ptrace" "$(tb_us "${med[same.ptrace]}") us" "-" "-" "-" \
		"one file again (cached), --backend seccomp" "$(tb_us "${med[same.seccomp]}") us" \
		"$(tb_us "${med[same.ptrace]}") us" "$(bench_ratio "${med[same.seccomp]}" "${med[same.ptrace]}")" "<= 0.15x ptrace" \
		"1000 files in turn (agent), --backend ptrace" "$(tb_us "${med[many.ptrace]}") us" "-" "-" "-" \
		"1000 files in turn (agent), --backend seccomp" "$(tb_us "${med[many.seccomp]}") us" \
		"$(tb_us "${med[many.ptrace]}") us" "$(bench_ratio "${med[many.seccomp]}" "${med[many.ptrace]}")" "<= 0.30x ptrace"
	print_rows "intercepted open+read+close of 4 KiB files in pod web, us per open (median of $BENCH_TRACER_PROCS processes x 5 rounds x $BENCH_OPEN_N)" "$tsv"
	for kind in same.seccomp same.ptrace many.seccomp many.ptrace native floor.continue floor.addfd; do
		echo "runs $kind ns:${runs[$kind]}"
	done
}
tb_us() { python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) / 1000))' "$1"; }

bench_tracer_start() {
	tracer_env_up
	local tsv="$BENCH_DIR/tracer_start.tsv"
	local tr="$TRACE_RUN --agent-unix $FX_SOCK --token-file $FX_TOKEN_FILE --target pod/$FX_WEB"
	bench_measure "$tsv" \
		"/bin/true" "/bin/true" \
		"trace-run --backend seccomp" "$tr --backend seccomp -- /bin/true" \
		"trace-run --backend ptrace" "$tr --backend ptrace -- /bin/true"
	print_table "trace-run --target pod/web /bin/true vs /bin/true, N=$BENCH_N interleaved (goal: < 50 ms added)" "/bin/true" "$tsv"
	awk -F'\t' 'NR == 1 { base = $2 } NR > 1 { printf "added by %s: %.1f ms (goal < 50 ms)\n", $1, $2 - base }' "$tsv"
}

BENCH_PYTHON_IMPORTS="import json, http.server, email, urllib.request, asyncio, decimal"
bench_tracer_python() {
	tracer_env_up
	command -v proot >/dev/null || { echo "bench tracer_python: proot not installed (scripts/deps.sh)" >&2; return 1; }
	local tsv="$BENCH_DIR/tracer_python.tsv" py=/usr/bin/python3
	# Debian's python3 (scripts/deps.sh), not a version manager's shim first in PATH;
	# -I: the host's and the pod's PYTHON* variables (trace-run gives the program the
	# pod's environment) change nothing
	[ -x "$py" ] || { echo "bench tracer_python: $py not installed (scripts/deps.sh)" >&2; return 1; }
	local tr="$TRACE_RUN --agent-unix $FX_SOCK --token-file $FX_TOKEN_FILE --target pod/$FX_WEB"
	local prog="$py -I -c '$BENCH_PYTHON_IMPORTS'"
	bench_measure "$tsv" \
		"python3 native" "$prog" \
		"trace-run --backend seccomp" "$tr --backend seccomp -- $prog" \
		"trace-run --backend ptrace" "$tr --backend ptrace -- $prog" \
		"proot (ptrace path interposer)" "proot -r / -w $PWD $prog" \
		"floor: a do-nothing supervisor (notif_floor)" "$NOTIF_FLOOR -- $prog"
	print_table "python3 start-up ($BENCH_PYTHON_IMPORTS), N=$BENCH_N interleaved" "python3 native" "$tsv" \
		"trace-run --backend seccomp=<= 1.10x native"
}

# httpbench's rps= figure; the client's failures fail the benchmark
tb_rps() {
	local out
	out=$("$@") || { echo "bench: $* failed: $out" >&2; return 1; }
	sed -n 's/.* rps=\([0-9.]*\) .*/\1/p' <<<"$out"
}

# Two more agents of the fixture's, on TCP: trace-run's --agent HOST:PORT path, one
# with the kernel relay (the default), one with --no-kernel-relay. Sets TB_TCP_AGENT and
# TB_TCP_AGENT_USER to their addresses.
tb_tcp_agent_up() {
	[ -z "${TB_TCP_AGENT:-}" ] || return 0
	bench_on_exit tb_tcp_agent_down
	tb_tcp_agent_start tcpagent
	TB_TCP_AGENT=$TB_TCP_AGENT_STARTED
	tb_tcp_agent_start tcpagent-user --no-kernel-relay
	TB_TCP_AGENT_USER=$TB_TCP_AGENT_STARTED
}
# tb_tcp_agent_start NAME [AGENT OPTIONS]: its address in TB_TCP_AGENT_STARTED
tb_tcp_agent_start() {
	local name="$1" port
	shift
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	agent_start "$FX_WORK" "$name" --listen "127.0.0.1:$port" "$@" >&2
	TB_TCP_AGENT_PIDS+=("$(agent_pid "$FX_WORK" "$name")")
	TB_TCP_AGENT_STARTED="127.0.0.1:$port"
}
TB_TCP_AGENT_PIDS=()
# by pid: fixture_down, an earlier hook, removes the directory with the pid file
tb_tcp_agent_down() {
	local pid
	for pid in "${TB_TCP_AGENT_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || continue
		wait_until 100 sh -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid"
		wait "$pid" 2>/dev/null
	done
	TB_TCP_AGENT_PIDS=()
}

# trun_tcp [TRACE-RUN OPTIONS] -- PROGRAM [ARGS]: trun through the TCP agent
trun_tcp() {
	trun_tcp_at "$TB_TCP_AGENT" "$@"
}
# ... through the TCP agent that relays in user space
trun_tcp_user() {
	trun_tcp_at "$TB_TCP_AGENT_USER" "$@"
}
trun_tcp_at() {
	local agent="$1"
	shift
	timeout "${TRUN_TIMEOUT:-60}" "$TRACE_RUN" --agent "$agent" --token-file "$FX_TOKEN_FILE" \
		--target "pod/$FX_WEB" "$@"
}

bench_tracer_http() {
	tracer_env_up
	tb_tcp_agent_up
	local tsv="$BENCH_DIR/tracer_http.tsv" url="http://$FX_SVC_IP:$FX_PORT/" pod=() sec=() ptr=() tcp=() tcpu=()
	local args=(-url "$url" -c "$BENCH_HTTP_C" -d "${BENCH_HTTP_SECONDS}s")
	# unmeasured: the agent's worker for the pod, page cache, the service's goroutines
	tb_rps trun -- "$BUILD/apps/httpbench" -url "$url" -n 200 >/dev/null
	tb_rps trun_tcp -- "$BUILD/apps/httpbench" -url "$url" -n 200 >/dev/null
	tb_rps trun_tcp_user -- "$BUILD/apps/httpbench" -url "$url" -n 200 >/dev/null
	for _ in $(seq "$BENCH_HTTP_ROUNDS"); do
		pod+=("$(tb_rps tp exec "$FX_WEB" -- httpbench "${args[@]}")")
		sec+=("$(tb_rps trun --backend seccomp -- "$BUILD/apps/httpbench" "${args[@]}")")
		ptr+=("$(tb_rps trun --backend ptrace -- "$BUILD/apps/httpbench" "${args[@]}")")
		tcp+=("$(tb_rps trun_tcp --backend seccomp -- "$BUILD/apps/httpbench" "${args[@]}")")
		tcpu+=("$(tb_rps trun_tcp_user --backend seccomp -- "$BUILD/apps/httpbench" "${args[@]}")")
	done
	local mpod msec mptr mtcp mtcpu
	mpod=$(bench_median "${pod[@]}")
	msec=$(bench_median "${sec[@]}")
	mptr=$(bench_median "${ptr[@]}")
	mtcp=$(bench_median "${tcp[@]}")
	mtcpu=$(bench_median "${tcpu[@]}")
	bench_rows "$tsv" \
		"client inside pod web" "$mpod rps" "-" "-" "-" \
		"trace-run --backend seccomp on the host" "$msec rps" "$mpod rps" "$(bench_ratio "$msec" "$mpod")" ">= 0.90x in pod" \
		"trace-run --backend ptrace on the host" "$mptr rps" "$mpod rps" "$(bench_ratio "$mptr" "$mpod")" "-" \
		"trace-run --backend seccomp, agent on TCP (direct)" "$mtcp rps" "$mpod rps" "$(bench_ratio "$mtcp" "$mpod")" ">= 0.70x in pod" \
		"... agent on TCP, user-space relay (--no-kernel-relay)" "$mtcpu rps" "$mpod rps" "$(bench_ratio "$mtcpu" "$mpod")" "-"
	print_rows "HTTP GET to pod svc, httpbench -c $BENCH_HTTP_C keep-alive, ${BENCH_HTTP_SECONDS}s, median of $BENCH_HTTP_ROUNDS" "$tsv"
	echo "runs rps: pod ${pod[*]}; seccomp ${sec[*]}; ptrace ${ptr[*]}; seccomp TCP agent ${tcp[*]}; TCP agent, user-space relay ${tcpu[*]}"
}
