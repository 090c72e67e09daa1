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
TEST_ROOTFS="$BUILD/test-rootfs"

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
run_test() {
	local name="$1"
	shift
	local log
	log=$(mktemp)
	local start=$SECONDS
	(
		set -eE
		"$@"
	) >"$log" 2>&1 &
	wait $!
	local rc=$?
	if [ $rc -eq 0 ]; then
		echo "  ok   $name ($((SECONDS - start))s)"
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
