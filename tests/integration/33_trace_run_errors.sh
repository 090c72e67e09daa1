#!/usr/bin/env bash
# trace-run's bad-input paths against a real agent and pods (tests/trace_fixture.sh):
# an unknown target, the agent down, a wrong token, a program that is not there. Each
# must end fast with one clear line on stderr ("trace-run: ...", naming what is wrong)
# and an exit code of its own, documented in `trace-run --help`; and in none of them
# may the program run.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"

# The exit codes trace-run documents (tracer/redirect/main.c usage text, checked by test_help_codes).
EXIT_AGENT=121
EXIT_AUTH=122
EXIT_TARGET=123
EXIT_NOEXEC=126
EXIT_NOTFOUND=127

set -e
fixture_up
set +e
ERR_DIR=$(mktemp -d "$FX_WORK/errors.XXXXXX") # removed with the fixture
chmod 0755 "$ERR_DIR"
MARKER="$ERR_DIR/program-ran"

# err_run EXPECTED_CODE TRACE-RUN ARGS...: trace-run with a program that leaves a marker;
# asserts the code, a single "trace-run: " line on stderr within 10 s, and no marker.
# The stderr line is left in $ERR_LINE.
err_run() {
	local expected="$1" rc=0 start=$SECONDS
	shift
	rm -f "$MARKER"
	echo "+ trace-run $*"
	timeout 30 "$TRACE_RUN" "$@" >"$ERR_DIR/out" 2>"$ERR_DIR/err" || rc=$?
	ERR_LINE=$(cat "$ERR_DIR/err")
	echo "exit $rc, stderr: $ERR_LINE"
	[ ! -e "$MARKER" ] || fail "the program ran"
	assert_eq "$expected" "$rc" "exit code"
	assert_eq 1 "$(wc -l <"$ERR_DIR/err")" "lines on stderr"
	[[ "$ERR_LINE" == "trace-run: "* ]] || fail "stderr does not start with 'trace-run: '"
	[ $((SECONDS - start)) -le 10 ] || fail "took $((SECONDS - start)) s to fail"
	[ ! -s "$ERR_DIR/out" ] || fail "stdout: $(cat "$ERR_DIR/out")"
}
# the agent and token of the fixture, the program that would leave the marker
AUTH=(--agent-unix "$FX_SOCK" --token-file "$FX_TOKEN_FILE")
PROG=(/bin/sh -c "touch $MARKER")

test_help_codes() {
	local help
	help=$("$TRACE_RUN" --help)
	echo "$help"
	grep -qE "^ +$EXIT_AGENT +the agent is unreachable" <<<"$help" || fail "--help: no $EXIT_AGENT for the agent"
	grep -qE "^ +$EXIT_AUTH +.*token" <<<"$help" || fail "--help: no $EXIT_AUTH for the token"
	grep -qE "^ +$EXIT_TARGET +.*target" <<<"$help" || fail "--help: no $EXIT_TARGET for the target"
	grep -qE "^ +$EXIT_NOEXEC +PROGRAM is not executable" <<<"$help" || fail "--help: no $EXIT_NOEXEC"
	grep -qE "^ +$EXIT_NOTFOUND +PROGRAM not found" <<<"$help" || fail "--help: no $EXIT_NOTFOUND"
}

test_sanity() {
	# the same invocation with everything right does run the program
	rm -f "$MARKER"
	timeout 30 "$TRACE_RUN" "${AUTH[@]}" --target "pod/$FX_WEB" -- "${PROG[@]}" ||
		fail "trace-run failed where it should not"
	[ -e "$MARKER" ] || fail "the program did not run"
}

test_unknown_target() {
	err_run "$EXIT_TARGET" "${AUTH[@]}" --target pod/no-such-pod-here -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "pod/no-such-pod-here"
	err_run "$EXIT_TARGET" "${AUTH[@]}" --target pid/4194303 -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "pid/4194303"
	err_run "$EXIT_TARGET" "${AUTH[@]}" --target container/0123456789abcdef0123 -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "container/0123456789abcdef0123"
}

test_target_stopped() {
	# a pod that was there and is gone
	local gone
	gone=$(pod_name gone)
	on_exit pod_cleanup "$gone"
	tp run -d --name "$gone" --rootfs "$FX_ROOTFS" -- sleep 100000 </dev/null >/dev/null
	tp rm -f "$gone" >/dev/null
	err_run "$EXIT_TARGET" "${AUTH[@]}" --target "pod/$gone" -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "pod/$gone"
}

test_agent_down() {
	# no socket at all
	err_run "$EXIT_AGENT" --agent-unix "$ERR_DIR/nothing.sock" --token-file "$FX_TOKEN_FILE" \
		--target "pod/$FX_WEB" -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "$ERR_DIR/nothing.sock"
	# a socket file nobody listens on any more (the agent was killed)
	python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$ERR_DIR/stale.sock"
	err_run "$EXIT_AGENT" --agent-unix "$ERR_DIR/stale.sock" --token-file "$FX_TOKEN_FILE" \
		--target "pod/$FX_WEB" -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "$ERR_DIR/stale.sock"
	# TCP: a port nothing listens on
	local port
	port=$((20000 + RANDOM % 20000))
	! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null || fail "port $port is in use"
	err_run "$EXIT_AGENT" --agent "127.0.0.1:$port" --token-file "$FX_TOKEN_FILE" \
		--target "pod/$FX_WEB" -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "127.0.0.1:$port"
}

test_wrong_token() {
	echo "not-the-token-$RANDOM" >"$ERR_DIR/wrong-token"
	err_run "$EXIT_AUTH" --agent-unix "$FX_SOCK" --token-file "$ERR_DIR/wrong-token" \
		--target "pod/$FX_WEB" -- "${PROG[@]}"
	assert_contains "$ERR_LINE" "token"
	# HERMIT_TOKEN, as an unprivileged user
	local rc=0
	rm -f "$MARKER"
	(cd / && timeout 30 runuser -u nobody -- env HERMIT_TOKEN=wrong-token-$RANDOM "$TRACE_RUN" \
		--agent-unix "$FX_SOCK" --target "pod/$FX_WEB" -- "${PROG[@]}") 2>"$ERR_DIR/err" || rc=$?
	cat "$ERR_DIR/err"
	assert_eq "$EXIT_AUTH" "$rc" "exit code with a wrong HERMIT_TOKEN as nobody"
	assert_contains "$(cat "$ERR_DIR/err")" "token"
	[ ! -e "$MARKER" ] || fail "the program ran"
	# the agent logged the rejection and serves the next client
	grep -q 'wrong or missing auth token' "$FX_WORK/agent.log" || fail "the agent did not log it"
	test_sanity
}

test_token_unreadable() {
	# nobody cannot read root's token file: the message says which file and why
	local rc=0
	rm -f "$MARKER"
	(cd / && timeout 30 runuser -u nobody -- "$TRACE_RUN" --agent-unix "$FX_SOCK" \
		--token-file "$FX_TOKEN_FILE" --target "pod/$FX_WEB" -- "${PROG[@]}") 2>"$ERR_DIR/err" || rc=$?
	cat "$ERR_DIR/err"
	assert_eq "$EXIT_AUTH" "$rc" "exit code without a readable token"
	assert_eq 1 "$(wc -l <"$ERR_DIR/err")" "lines on stderr"
	assert_contains "$(cat "$ERR_DIR/err")" "$FX_TOKEN_FILE"
	[ ! -e "$MARKER" ] || fail "the program ran"
}

test_program_not_found() {
	err_run "$EXIT_NOTFOUND" "${AUTH[@]}" --target "pod/$FX_WEB" -- /no/such/program arg
	assert_contains "$ERR_LINE" "/no/such/program"
	err_run "$EXIT_NOTFOUND" "${AUTH[@]}" --target "pod/$FX_WEB" -- no-such-program-in-path-$$
	assert_contains "$ERR_LINE" "no-such-program-in-path-$$"
	# there but not executable
	printf '#!/bin/sh\ntouch %s\n' "$MARKER" >"$ERR_DIR/not-executable"
	chmod 0644 "$ERR_DIR/not-executable"
	err_run "$EXIT_NOEXEC" "${AUTH[@]}" --target "pod/$FX_WEB" -- "$ERR_DIR/not-executable"
	assert_contains "$ERR_LINE" "$ERR_DIR/not-executable"
}

test_program_only_in_pod() {
	# programs are the host's: a binary that exists only in the pod's root is not found
	[ ! -e /bin/podprobe ] || fail "the host has a /bin/podprobe: the check proves nothing"
	[ -x "$FX_ROOTFS/bin/podprobe" ] || fail "the pod has no /bin/podprobe"
	err_run "$EXIT_NOTFOUND" "${AUTH[@]}" --target "pod/$FX_WEB" -- /bin/podprobe -env HOME
}

test_usage() {
	local rc=0
	timeout 10 "$TRACE_RUN" "${AUTH[@]}" --target web -- "${PROG[@]}" 2>"$ERR_DIR/err" || rc=$?
	cat "$ERR_DIR/err"
	[ "$rc" -ne 0 ] || fail "--target web (no kind) accepted"
	assert_contains "$(cat "$ERR_DIR/err")" "web"
	rc=0
	timeout 10 "$TRACE_RUN" "${AUTH[@]}" --no-such-flag -- "${PROG[@]}" 2>"$ERR_DIR/err" || rc=$?
	cat "$ERR_DIR/err"
	[ "$rc" -ne 0 ] || fail "--no-such-flag accepted"
	assert_contains "$(cat "$ERR_DIR/err")" "--no-such-flag"
	[ ! -e "$MARKER" ] || fail "the program ran"
}

test_agent_still_fine() {
	kill -0 "$(agent_pid "$FX_WORK" agent)" || fail "the agent died"
	test_sanity
}

run_test "errors: exit codes documented" test_help_codes
run_test "errors: sanity, the good invocation runs the program" test_sanity
run_test "errors: unknown target (pod, pid, container)" test_unknown_target
run_test "errors: a pod that is gone" test_target_stopped
run_test "errors: agent down (no socket, stale socket, closed TCP port)" test_agent_down
run_test "errors: wrong token (file, HERMIT_TOKEN as nobody)" test_wrong_token
run_test "errors: token file unreadable for the user" test_token_unreadable
run_test "errors: program not found / not executable" test_program_not_found
run_test "errors: a program only the pod has is not found" test_program_only_in_pod
run_test "errors: bad usage" test_usage
run_test "errors: the agent serves on after all of the above" test_agent_still_fine
