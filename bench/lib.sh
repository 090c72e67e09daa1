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
bench_measure() {
	local out="$1"
	shift
	python3 - "$BENCH_N" "$BENCH_WARMUP" "$@" >"$out" <<'EOF'
import math, shlex, subprocess, sys, time

n, warmup = int(sys.argv[1]), int(sys.argv[2])
pairs = sys.argv[3:]
rows = [(pairs[i], shlex.split(pairs[i + 1])) for i in range(0, len(pairs), 2)]

def once(name, argv):
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

# print_table TITLE BASELINE_NAME TSV: name | median ms | p90 ms | ratio vs baseline
# (ratio of medians). BASELINE_NAME may be empty: no ratio column values.
print_table() {
	local title="$1" base="$2" tsv="$3"
	echo
	echo "== $title"
	python3 - "$base" "$tsv" <<'EOF'
import sys
base, tsv = sys.argv[1], sys.argv[2]
rows = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()]
med = {r[0]: float(r[1]) for r in rows}
head = ["name", "median ms", "p90 ms", "min ms", "n", "ratio vs " + (base or "-")]
table = [head]
for r in rows:
    ratio = "%.2f" % (float(r[1]) / med[base]) if base in med and med[base] > 0 else "-"
    table.append([r[0], "%.2f" % float(r[1]), "%.2f" % float(r[2]), "%.2f" % float(r[3]), r[4], ratio])
w = [max(len(row[i]) for row in table) for i in range(len(head))]
for j, row in enumerate(table):
    print(" | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(row)))
    if j == 0:
        print("-+-".join("-" * x for x in w))
EOF
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
# already formatted (units included; "-" where nothing applies), printed as a table.
print_rows() {
	local title="$1" tsv="$2"
	echo
	echo "== $title"
	python3 - "$tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
table = [["name", "value", "baseline", "ratio", "goal"]] + rows
w = [max(len(r[i]) for r in table) for i in range(5)]
for j, r in enumerate(table):
    print(" | ".join(c.ljust(w[i]) if i in (0, 4) else c.rjust(w[i]) for i, c in enumerate(r)))
    if j == 0:
        print("-+-".join("-" * x for x in w))
PY
}
