#!/usr/bin/env bash
# hermit benchmarks, printed as tables. `make bench` runs them all; `bench/run.sh NAME...`
# runs some (NAME is a bench_NAME function below). BENCH_N (default 30) rounds each.
# To add a benchmark: write bench_NAME (measure with bench_measure, print with
# print_table) and append NAME to BENCHMARKS.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
source bench/agent.sh
source bench/tracer.sh
source bench/incoming.sh

BENCHMARKS=(pod_start agent_tcp agent_files agent_memory "${TRACER_BENCHMARKS[@]}" incoming_steal)

# Busybox rootfs shared by the benchmarks, built by trace-pod itself.
bench_rootfs() {
	# trace-pod rootfs makes the missing private/ 0700: trace-pod run wants it so
	if [ ! -x "$BENCH_DIR/private/rootfs/bin/busybox" ]; then
		mkdir -p "$BENCH_DIR"
		"$TRACE_POD" rootfs "$BENCH_DIR/private/rootfs" >/dev/null
	fi
	echo "$BENCH_DIR/private/rootfs"
}

# A runc bundle over a copy of the same rootfs, running /bin/true with the namespaces
# trace-pod uses (pid, mount, uts, ipc, network, cgroup; no user namespace), no tty.
runc_bundle() {
	local rootfs="$1" bundle="$BENCH_DIR/runc-bundle"
	rm -rf "$bundle"
	mkdir -p "$bundle"
	cp -a "$rootfs" "$bundle/rootfs"
	(cd "$bundle" && runc spec)
	python3 - "$bundle/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["linux"]["namespaces"] = [{"type": t} for t in ("pid", "mount", "uts", "ipc", "network", "cgroup")]
json.dump(c, open(path, "w"), indent=1)
EOF
	echo "$bundle"
}

# Start a pod running /bin/true: trace-pod vs runc.
bench_pod_start() {
	local rootfs bundle id tsv
	command -v runc >/dev/null || { echo "bench pod_start: runc not installed (scripts/deps.sh)" >&2; return 1; }
	rootfs=$(bench_rootfs)
	bundle=$(runc_bundle "$rootfs")
	id="hermit-bench-$$"
	tsv="$BENCH_DIR/pod_start.tsv"
	# runc's own state dir, so nothing of the host's runc is touched
	bench_measure "$tsv" \
		"runc run" "runc --root $BENCH_DIR/runc-state run --bundle $bundle $id" \
		"trace-pod --net none" "$TRACE_POD run --net none --rootfs $rootfs -- /bin/true" \
		"trace-pod --net bridge" "$TRACE_POD run --net bridge --rootfs $rootfs -- /bin/true" \
		"trace-pod --net none +limits" "$TRACE_POD run --net none --pids-max 100 --memory-max 268435456 --cpu-max 50000 --rootfs $rootfs -- /bin/true" \
		"floor: host /bin/true" "/bin/true"
	print_table "pod start: /bin/true, N=$BENCH_N interleaved (goal: trace-pod <= 0.5x runc)" "runc run" "$tsv"
}

main() {
	local b
	# whatever ends the run, pods and daemons a benchmark started are stopped
	trap bench_run_exit_hooks EXIT
	trap 'exit 130' INT TERM
	[ -x "$TRACE_POD" ] || { echo "bench: $TRACE_POD not built (make BUILD=... all)" >&2; exit 1; }
	local selected=("$@")
	[ ${#selected[@]} -gt 0 ] || selected=("${BENCHMARKS[@]}")
	echo "hermit benchmarks: $(uname -r), $(nproc) CPUs, build $BUILD"
	for b in "${selected[@]}"; do
		declare -F "bench_$b" >/dev/null || { echo "bench: no benchmark '$b' (have: ${BENCHMARKS[*]})" >&2; exit 2; }
		"bench_$b"
	done
}

main "$@"
