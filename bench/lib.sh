# Sourced by bench/run.sh. Timing of commands (interleaved, so drift in machine load
# hits every row alike) and a small table printer. A benchmark is a function that
# measures into a TSV file and prints it with print_table.
HERMIT_ROOT="${HERMIT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
BUILD="${BUILD:-build}"
case "$BUILD" in /*) ;; *) BUILD="$HERMIT_ROOT/$BUILD" ;; esac
BIN="$BUILD/bin"
TRACE_POD="$BIN/trace-pod"
BENCH_DIR="$BUILD/bench"
BENCH_N="${BENCH_N:-30}"
BENCH_WARMUP="${BENCH_WARMUP:-3}"

# bench_measure OUT_TSV NAME CMD [NAME CMD]...: runs every CMD (a shell-quoted argv, run
# without a shell) BENCH_WARMUP times unmeasured, then BENCH_N rounds, each round running
# every CMD once in turn. Wall time is time.perf_counter() around the child's fork..wait.
# Writes "name<TAB>median_ms<TAB>p90_ms<TAB>min_ms<TAB>n" per CMD. Any failing run aborts.
# BENCH_GAP_MS (default 0): a pause before every run, so that no run finds the kernel
# state the run before it left warm (see bench_pod_start).
bench_measure() {
	local out="$1"
	shift
	python3 - "$BENCH_N" "$BENCH_WARMUP" "${BENCH_GAP_MS:-0}" "$@" >"$out" <<'EOF'
import math, shlex, subprocess, sys, time

n, warmup, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000.0
pairs = sys.argv[4:]
rows = [(pairs[i], shlex.split(pairs[i + 1])) for i in range(0, len(pairs), 2)]

def once(name, argv):
    if gap:
        time.sleep(gap)
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write("bench: %s: %s exited %d: %s\n" % (
            name, shlex.join(argv), p.returncode, p.stderr.decode(errors="replace").strip()))
        sys.exit(1)
    return dt * 1000.0

for _ in range(warmup):
    for name, argv in rows:
        once(name, argv)
samples = {name: [] for name, _ in rows}
for _ in range(n):
    for name, argv in rows:
        samples[name].append(once(name, argv))

def pct(s, p):  # nearest rank
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]

for name, _ in rows:
    s = sorted(samples[name])
    print("%s\t%.3f\t%.3f\t%.3f\t%d" % (name, pct(s, 50), pct(s, 90), s[0], len(s)))
EOF
}

# print_table TITLE BASELINE_NAME TSV [NAME=GOAL]...: name | median | p90 | min | n |
# ratio vs baseline (of medians) | goal | mark, for bench_measure's TSV. BASELINE_NAME
# may be empty: no ratios. A GOAL (bench/report.py) such as "<= 0.30x" is checked.
# The table also goes to BENCH_DIR/results.md.
print_table() {
	local title="$1" base="$2" tsv="$3"
	shift 3
	python3 "$HERMIT_ROOT/bench/report.py" timing "$BENCH_DIR" "$title" "$base" "$tsv" "$@"
}

# bench_median VALUE...: their median, one decimal. bench_ratio A B: A/B as "1.23x" ("-"
# when B is 0).
bench_median() { python3 -c 'import statistics, sys; print("%.1f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
bench_ratio() { python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print("%.2fx" % (a / b) if b else "-")' "$1" "$2"; }

# bench_rows TSV NAME VALUE BASELINE RATIO GOAL...: writes TSV, the rows print_rows
# shows, five fields each.
bench_rows() {
	local tsv="$1"
	shift
	mkdir -p "$BENCH_DIR"
	printf '%s\t%s\t%s\t%s\t%s\n' "$@" >"$tsv"
}

# bench_need_built FILE...: fails, naming the first, when one is not an executable.
bench_need_built() {
	local f
	for f in "$@"; do
		[ -x "$f" ] || { echo "bench: $f not built (make BUILD=... all)" >&2; return 1; }
	done
}

# bench_pod_rootfs WORK: a copy of the benchmarks' rootfs at WORK/private/rootfs, its
# path printed. trace-pod runs only a rootfs other host users cannot reach: private/ is
# 0700.
bench_pod_rootfs() {
	mkdir -m 0700 "$1/private" &&
		cp -a "$(bench_rootfs)" "$1/private/rootfs" &&
		echo "$1/private/rootfs"
}

# bench_pods_rm NAME...: removes those of the pods that exist (empty names skipped).
bench_pods_rm() {
	local n
	for n in "$@"; do
		[ -n "$n" ] && [ -e "/run/hermit/pods/$n" ] || continue
		timeout 20 "$TRACE_POD" rm -f "$n" >/dev/null 2>&1 || true
	done
}

# Exit hooks: a benchmark that starts something (pods, daemons) registers a function
# that stops it; run.sh runs them all once on exit, whatever the exit path.
BENCH_EXIT_HOOKS=()
bench_on_exit() { BENCH_EXIT_HOOKS+=("$1"); }
bench_run_exit_hooks() {
	local h
	for h in "${BENCH_EXIT_HOOKS[@]}"; do
		"$h" || true
	done
	BENCH_EXIT_HOOKS=()
}

# print_rows TITLE TSV: rows "name<TAB>value<TAB>baseline<TAB>ratio<TAB>goal", values
# already formatted (units included; "-" where nothing applies), printed as a table with
# a pass/FAIL mark where the goal (bench/report.py: "<= 1.10x native", "<= 20 us") can
# be checked, and added to BENCH_DIR/results.md.
print_rows() {
	python3 "$HERMIT_ROOT/bench/report.py" rows "$BENCH_DIR" "$1" "$2"
}

# bench_report_init / bench_report_finish: around a run, results.md's header, and its
# summary of the goals with the chart of the ratio rows (results.png).
bench_report_init() {
	python3 "$HERMIT_ROOT/bench/report.py" init "$BENCH_DIR" "$1"
}
bench_report_finish() {
	python3 "$HERMIT_ROOT/bench/report.py" finish "$BENCH_DIR"
}
