#!/usr/bin/env bash
# trace-pod bad input: exactly one clear line on stderr, nothing on stdout, and the exit
# code docker and podman use (125 runtime error, 126 not executable, 127 not found).
# Failed runs leave nothing behind either.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs
R="$TEST_ROOTFS"

# expect_error CODE NEEDLE -- TRACE_POD_ARGS...: CODE "nonzero" accepts any failure.
expect_error() {
	local code="$1" needle="$2" rc=0 err
	shift 3
	tp "$@" </dev/null >"$ERR_TMP/out" 2>"$ERR_TMP/err" || rc=$?
	err=$(cat "$ERR_TMP/err")
	echo "trace-pod $* -> exit $rc, stderr: $err"
	if [ "$code" = nonzero ]; then
		[ "$rc" -ne 0 ] || fail "trace-pod $* succeeded"
	else
		assert_eq "$code" "$rc" "exit code of 'trace-pod $*'"
	fi
	assert_eq 1 "$(wc -l <"$ERR_TMP/err")" "lines on stderr of 'trace-pod $*'"
	[ -n "$err" ] || fail "empty error line"
	[ ! -s "$ERR_TMP/out" ] || fail "stdout of 'trace-pod $*' is not empty: $(cat "$ERR_TMP/out")"
	[[ "${err,,}" == *"${needle,,}"* ]] || fail "error line of 'trace-pod $*' does not mention '$needle'"
}

setup_err_tmp() {
	ERR_TMP=$(mktemp -d)
	BEFORE="$ERR_TMP/before"
	hermit_resources "$PREFIX" >"$BEFORE"
}

test_missing_rootfs() {
	PREFIX="t$$-nort"
	setup_err_tmp
	on_exit rm -rf -- "$ERR_TMP"
	expect_error 125 /nonexistent-rootfs-$$ -- run --name "$PREFIX-1" --rootfs /nonexistent-rootfs-$$ -- /bin/true
	# a rootfs that is a file, not a directory
	expect_error 125 /etc/hostname -- run --name "$PREFIX-2" --rootfs /etc/hostname -- /bin/true
	assert_no_leaks "$BEFORE" "$PREFIX"
}

test_bad_limits() {
	PREFIX="t$$-lim"
	setup_err_tmp
	on_exit rm -rf -- "$ERR_TMP"
	expect_error 125 pids-max -- run --name "$PREFIX-1" --pids-max abc --rootfs "$R" -- /bin/true
	expect_error 125 pids-max -- run --name "$PREFIX-2" --pids-max -5 --rootfs "$R" -- /bin/true
	expect_error 125 memory-max -- run --name "$PREFIX-3" --memory-max -1 --rootfs "$R" -- /bin/true
	expect_error 125 memory-max -- run --name "$PREFIX-4" --memory-max 12zz --rootfs "$R" -- /bin/true
	expect_error 125 cpu-max -- run --name "$PREFIX-5" --cpu-max 0 --rootfs "$R" -- /bin/true
	expect_error 125 cpu-max -- run --name "$PREFIX-6" --cpu-max abc --rootfs "$R" -- /bin/true
	assert_no_leaks "$BEFORE" "$PREFIX"
}

test_bad_flags() {
	PREFIX="t$$-flag"
	setup_err_tmp
	on_exit rm -rf -- "$ERR_TMP"
	expect_error 125 --bogus-flag -- run --bogus-flag --rootfs "$R" -- /bin/true
	expect_error 125 net -- run --name "$PREFIX-1" --net bogus --rootfs "$R" -- /bin/true
	expect_error 125 name -- run --name "../$PREFIX-x" --rootfs "$R" -- /bin/true
	expect_error 125 rootfs -- run --name "$PREFIX-2" -- /bin/true
	expect_error 125 command -- run --name "$PREFIX-3" --rootfs "$R"
	expect_error nonzero bogus-command -- bogus-command
	assert_no_leaks "$BEFORE" "$PREFIX"
}

test_duplicate_name() {
	PREFIX="t$$-dup"
	setup_err_tmp
	local name="$PREFIX-1" pid
	on_exit rm -rf -- "$ERR_TMP"
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --rootfs "$R" -- sleep 300 </dev/null >/dev/null
	pid=$(pod_field "$name" pid)
	expect_error 125 "$name" -- run --name "$name" --net none --rootfs "$R" -- /bin/true
	# the failed run did not disturb the pod that owns the name
	assert_eq running "$(pod_field "$name" status)" "status of the existing pod"
	assert_eq "$pid" "$(pod_field "$name" pid)" "pid of the existing pod"
	pod_cleanup "$name"
	assert_no_leaks "$BEFORE" "$PREFIX"
}

test_command_not_found() {
	PREFIX="t$$-nf"
	setup_err_tmp
	on_exit rm -rf -- "$ERR_TMP"
	expect_error 127 /nonexistent-cmd -- run --name "$PREFIX-1" --rootfs "$R" -- /nonexistent-cmd
	expect_error 127 nosuchcommand -- run --name "$PREFIX-2" --net none --rootfs "$R" -- nosuchcommand arg
	assert_no_leaks "$BEFORE" "$PREFIX"
}

test_command_not_executable() {
	PREFIX="t$$-nx"
	setup_err_tmp
	on_exit rm -rf -- "$ERR_TMP"
	expect_error 126 /dev/null -- run --name "$PREFIX-1" --rootfs "$R" -- /dev/null
	expect_error 126 /etc -- run --name "$PREFIX-2" --net none --rootfs "$R" -- /etc
	assert_no_leaks "$BEFORE" "$PREFIX"
}

# The command's own status is passed through, so 125-127 from trace-pod mean something.
test_exit_status_passthrough() {
	local rc=0
	tp run --net none --rootfs "$R" -- sh -c 'exit 42' </dev/null || rc=$?
	assert_eq 42 "$rc" "exit code of the pod's command"
	tp run --net none --rootfs "$R" -- /bin/true </dev/null
	rc=0
	tp run --net none --init --rootfs "$R" -- sh -c 'exit 3' </dev/null || rc=$?
	assert_eq 3 "$rc" "exit code with --init"
}

test_unknown_pod() {
	PREFIX="t$$-unk"
	setup_err_tmp
	on_exit rm -rf -- "$ERR_TMP"
	local name="$PREFIX-none"
	expect_error nonzero "$name" -- exec "$name" -- /bin/true
	expect_error nonzero "$name" -- stop "$name"
	expect_error nonzero "$name" -- rm "$name"
	expect_error nonzero "$name" -- logs "$name"
	assert_no_leaks "$BEFORE" "$PREFIX"
}

test_help() {
	local cmd out
	out=$(tp --help </dev/null)
	for cmd in run ls exec stop rm logs rootfs deploy; do
		assert_contains "$out" "$cmd" "trace-pod --help"
	done
	for cmd in run ls exec stop rm logs rootfs deploy; do
		out=$(tp "$cmd" --help </dev/null) || fail "trace-pod $cmd --help exited $?"
		assert_contains "$out" "$cmd" "trace-pod $cmd --help"
	done
}

run_test missing_rootfs test_missing_rootfs
run_test bad_limits test_bad_limits
run_test bad_flags test_bad_flags
run_test duplicate_name test_duplicate_name
run_test command_not_found test_command_not_found
run_test command_not_executable test_command_not_executable
run_test exit_status_passthrough test_exit_status_passthrough
run_test unknown_pod test_unknown_pod
run_test help test_help
