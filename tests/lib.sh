# Sourced by integration tests. Provides the binaries, a shared busybox rootfs,
# run_test (each test in its own `set -e` subshell) and assertions.
HERMIT_ROOT="${HERMIT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
BUILD="${BUILD:-build}"
case "$BUILD" in /*) ;; *) BUILD="$HERMIT_ROOT/$BUILD" ;; esac
BIN="$BUILD/bin"
TRACE_POD="$BIN/trace-pod"
TRACE_AGENT="$BIN/trace-agent"
TRACE_RUN="$BIN/trace-run"
RESULTS="${RESULTS:-/dev/null}"
# inside a 0700 directory (trace-pod rootfs creates it): trace-pod run refuses a rootfs
# other host users can reach
TEST_ROOTFS="$BUILD/private/test-rootfs"

# Build the shared busybox rootfs once per build tree.
ensure_rootfs() {
	if [ ! -x "$TEST_ROOTFS/bin/busybox" ]; then
		"$TRACE_POD" rootfs "$TEST_ROOTFS" >/dev/null
	fi
}

fail() {
	echo "assertion failed: $*" >&2
	exit 1
}
assert_eq() { # expected actual [what]
	[ "$1" == "$2" ] || fail "${3:-value}: expected '$1', got '$2'"
}
assert_contains() { # haystack needle [what]
	[[ "$1" == *"$2"* ]] || fail "${3:-output}: '$2' not in '$1'"
}
assert_not_contains() {
	[[ "$1" != *"$2"* ]] || fail "${3:-output}: '$2' unexpectedly in '$1'"
}

# run_test NAME FUNC [ARGS...]: runs FUNC in a subshell with errexit; records PASS/FAIL.
# HERMIT_TEST_PREFIX goes before every name (a file that reruns another's tests another way).
run_test() {
	local name="${HERMIT_TEST_PREFIX:-}$1"
	shift
	local log
	log=$(mktemp)
	local start=$SECONDS
	(
		set -eE
		${HM_XTRACE:+set -x}; "$@"
	) >"$log" 2>&1 &
	wait $!
	local rc=$?
	if [ $rc -eq 0 ]; then
		echo "  ok   $name ($((SECONDS - start))s)"
		[ -z "${HERMIT_TEST_VERBOSE:-}" ] || sed 's/^/       | /' "$log"
		echo "PASS $name" >>"$RESULTS"
	else
		echo "  FAIL $name (exit $rc)"
		sed 's/^/       | /' "$log" | tail -40
		echo "FAIL $name" >>"$RESULTS"
	fi
	rm -f "$log"
}

# A unique pod name for this test process.
pod_name() { echo "t$$-${1:-p}-$RANDOM"; }

# Wait until CMD succeeds, up to N tenths of a second.
wait_until() {
	local tries="$1"
	shift
	while ! "$@" >/dev/null 2>&1; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.1
	done
}

# ---- trace-pod helpers ----

# trace-pod with a deadline, so a hung runtime fails the test instead of the suite.
tp() { timeout "${TP_TIMEOUT:-60}" "$TRACE_POD" "$@"; }

# pod_field NAME FIELD: one field of pod NAME from `trace-pod ls --json` (empty if absent).
pod_field() {
	tp ls --json | python3 -c '
import json, sys
name, field = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin):
    if p.get("name") == name:
        v = p.get(field)
        print("" if v is None else v)
' "$1" "$2"
}
pod_ip() { pod_field "$1" ip; }

# rootfs_with DIR PROGRAM...: a private copy of the test rootfs in DIR with the static
# PROGRAMs (tests/apps-c, built by make all) deployed into its /bin.
rootfs_with() {
	local dir="$1" prog
	shift
	cp -a "$TEST_ROOTFS" "$dir"
	for prog in "$@"; do
		[ -x "$prog" ] || { echo "missing $prog (make all)" >&2; exit 1; }
		tp deploy "$prog" --rootfs "$dir" >/dev/null
	done
}

# Stop and remove pods, ignoring errors: for traps, so a failed test leaves nothing running.
pod_cleanup() {
	local n
	for n in "$@"; do
		[ -e "/run/hermit/pods/$n" ] || continue
		timeout 20 "$TRACE_POD" rm -f "$n" >/dev/null 2>&1 && continue
		timeout 20 "$TRACE_POD" stop "$n" >/dev/null 2>&1 || true
		timeout 20 "$TRACE_POD" rm "$n" >/dev/null 2>&1 || true
	done
}

# What trace-pod can leave behind, one item per line: cgroup directories (v1 and v2) and
# state directories whose name contains PREFIX, every host veth named hm*, and the number
# of mounts. Other sessions may run pods at the same time, so tests compare a snapshot
# taken before with one taken after, for their own PREFIX.
hermit_resources() { # PREFIX
	local prefix="$1"
	{
		find /sys/fs/cgroup/*/hermit -mindepth 1 -type d 2>/dev/null | grep -F -- "$prefix" | sed 's/^/cgroup /'
		ls /run/hermit/pods 2>/dev/null | grep -F -- "$prefix" | sed 's/^/state /'
		ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep '^hm' | sed 's/^/veth /'
		echo "mounts $(wc -l </proc/self/mountinfo)"
	} | sort
}

# assert_no_leaks BEFORE_FILE PREFIX: what is there now and was not before must vanish
# within a few seconds (teardown may still be finishing when the test checks).
assert_no_leaks() {
	local before="$1" prefix="$2" tries=50 now extra
	while :; do
		now=$(hermit_resources "$prefix")
		extra=$(comm -13 "$before" <(echo "$now"))
		[ -z "$extra" ] && return 0
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || break
		sleep 0.1
	done
	echo "left behind (not there before the test):" >&2
	echo "$extra" | sed 's/^/  /' >&2
	echo "mounts before: $(grep '^mounts' "$before")" >&2
	fail "trace-pod leaked resources"
}

# Count non-empty lines.
count_lines() { grep -c . <<<"$1" || true; }
pod_status_is() { [ "$(pod_field "$1" status)" = "$2" ]; }

# on_exit CMD [ARGS...]: run CMD with ARGS as they are now (quoted at this call) when the
# test's subshell exits, last registered first. Use it instead of `trap '... $var'`: a
# trap runs after the function returned, when its locals are gone, and `rm -rf "/tmp/$x"`
# with an empty x is rm -rf /tmp/.
on_exit() {
	_HM_ON_EXIT="$(printf '%q ' "$@") || true; ${_HM_ON_EXIT:-}"
	trap "$_HM_ON_EXIT" EXIT
}

# pid_exited PID: true once PID is gone or a zombie (a child we have not waited for yet).
pid_exited() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	stat=${stat##*) }
	[ "${stat%% *}" = Z ]
}
