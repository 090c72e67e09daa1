#!/usr/bin/env bash
# The operator's terminal: a pod must never share the session and controlling terminal
# of the shell that runs trace-pod. The attack (tests/apps-c/pod_escape tiocsti) types
# "touch FILE" into the terminal with TIOCSTI; trace-pod runs under a real interactive
# shell on a pty (tests/tty_shell.py), which would run the typed line once trace-pod
# exits. The first test shows that this shell does run it when the attack is possible.
source "$(dirname "$0")/../lib.sh"
ensure_rootfs

TTY_SHELL="$HERMIT_ROOT/tests/tty_shell.py"
WORK=$(mktemp -d /tmp/hermit-tty-test.XXXXXX)
ROOTFS="$WORK/rootfs"
rootfs_with "$ROOTFS" "$BUILD/tests/pod_escape"
POD=$(pod_name tty)     # a running pod for exec
POD_OFF=$(pod_name tty) # the same with --seccomp off
cleanup() {
	pod_cleanup "$POD" "$POD_OFF"
	rm -rf "$WORK"
}
trap cleanup EXIT
tp run -d --name "$POD" --net none --rootfs "$ROOTFS" -- sleep 600 </dev/null >/dev/null
tp run -d --name "$POD_OFF" --seccomp off --net none --rootfs "$ROOTFS" -- sleep 600 \
	</dev/null >/dev/null

# at_terminal STEP...: tests/tty_shell.py with a deadline; steps as documented there
at_terminal() { python3 "$TTY_SHELL" 40 "$@"; }

# tiocsti_attack FILE CMD: run CMD (which types "touch FILE") at the terminal, then let
# the shell read whatever was typed; prints the terminal, fails when FILE exists.
tiocsti_attack() {
	local file="$1" cmd="$2" out
	rm -f "$file"
	out=$(at_terminal "!$cmd" "?__rc=[0-9]+__" "!echo typed-li''nes-done" "?typed-lines-done")
	echo "$out" >&2
	[ ! -e "$file" ] || fail "the line typed from the pod ran in the operator's shell: $file exists"
	printf '%s\n' "$out"
}

test_tiocsti_control_on_the_host() {
	# the same program outside any pod: the harness sees the attack when it works
	local f="$WORK/pwned-host" out
	rm -f "$f"
	out=$(at_terminal "!$BUILD/tests/pod_escape tiocsti 'touch $f'" "?__rc=[0-9]+__" "!echo sy''nc" "?sync")
	echo "$out"
	[ -e "$f" ] || fail "TIOCSTI on the host did not run the typed line (dev.tty.legacy_tiocsti=$(cat /proc/sys/dev/tty/legacy_tiocsti 2>/dev/null)): this test proves nothing here"
}

# tiocsti_refused WHAT ERRNO ARGS: the attack as `trace-pod ARGS -- pod_escape tiocsti ...`
tiocsti_refused() {
	local what="$1" errno="$2" args="$3" f="$WORK/pwned-$RANDOM" out
	out=$(tiocsti_attack "$f" "$TRACE_POD $args -- pod_escape tiocsti 'touch $f'")
	assert_contains "$out" "tiocsti errno=$errno " "TIOCSTI from $what"
}

test_tiocsti_from_run_refused() { tiocsti_refused run 1 "run --net none --rootfs $ROOTFS"; }

test_tiocsti_from_run_without_seccomp_refused() {
	# without the profile, fd 0 is a pipe, not the terminal (ENOTTY)
	tiocsti_refused "run --seccomp off" 25 "run --seccomp off --net none --rootfs $ROOTFS"
}

test_tiocsti_from_exec_refused() {
	tiocsti_refused exec 1 "exec $POD"
	tiocsti_refused "exec in a --seccomp off pod" 25 "exec $POD_OFF"
}

test_tiocsti_on_own_pty() {
	# -t: the pod's terminal is its own pty. The profile refuses TIOCSTI, also with bit
	# 32 of the request set (the kernel compares only 32 bits); without the profile
	# TIOCSTI works but types into the pod's pty, never into the operator's shell.
	local f="$WORK/pwned-pty" out
	out=$(tiocsti_attack "$f" "$TRACE_POD run -t --net none --rootfs $ROOTFS -- sh -c \"pod_escape tiocsti 'touch $f'; pod_escape tiocsti-hi 'touch $f'\"")
	assert_contains "$out" "tiocsti errno=1 " "TIOCSTI on the pod's pty"
	assert_contains "$out" "tiocsti-hi errno=1 " "TIOCSTI | 1<<32 on the pod's pty"
	out=$(tiocsti_attack "$f" "$TRACE_POD run -t --seccomp off --net none --rootfs $ROOTFS -- pod_escape tiocsti 'touch $f'")
	assert_contains "$out" "tiocsti ok" "TIOCSTI on the pod's own pty without the profile"
	out=$(tiocsti_attack "$f" "$TRACE_POD exec -t $POD_OFF -- pod_escape tiocsti 'touch $f'")
	assert_contains "$out" "tiocsti ok" "TIOCSTI on exec's own pty without the profile"
}

test_own_session_without_tty() {
	local out
	# PID 1 of the pod: pid 1 in its namespace, and the leader of its own session
	out=$(at_terminal "!$TRACE_POD run --net none --rootfs $ROOTFS -- pod_escape session" "?__rc=[0-9]+__")
	echo "$out"
	assert_contains "$out" "sid=1 pid=1 tty=0" "run: session (stdin a pipe, not the terminal)"
	out=$(at_terminal "!$TRACE_POD exec $POD -- pod_escape session" "?__rc=[0-9]+__")
	echo "$out"
	[[ "$out" =~ sid=([0-9]+)\ pid=([0-9]+) ]] || fail "no session line"
	assert_eq "${BASH_REMATCH[2]}" "${BASH_REMATCH[1]}" "exec: the command leads its own session"
}

# The attack: without -t, a process the command leaves behind in the pod keeps its
# stdin and reads what the operator types after trace-pod returned (a sudo password).
# trace-pod gives the pod a pipe instead of the terminal and closes it when the command
# exits: the process reads EOF, the typed secret stays with the operator's shell.
test_exec_left_reader_gets_no_later_input() {
	local keys="/tmp/keys-$RANDOM" out
	out=$( (sleep 3; printf 'operator-typed-secret\n'; sleep 3) | timeout 40 script -qfc \
		"$TRACE_POD exec $POD -- /bin/sh -c 'exec 5<&0; setsid sh -c \"echo started >$keys; exec cat <&5 >>$keys\" >/dev/null 2>&1 & true'; echo exec-returned; sleep 5" /dev/null)
	echo "$out"
	assert_contains "$out" exec-returned
	out=$(tp exec "$POD" -- cat "$keys" </dev/null)
	echo "the pod's $keys: $out"
	# the reader did start, and read nothing of what was typed later
	assert_contains "$out" started "the left-behind reader ran"
	assert_not_contains "$out" operator-typed-secret "the pod's copy of the later input"
}

# Without -t at a terminal: input, output and errors relayed through the pipes, and the
# command's exit status.
test_exec_without_tty_at_terminal() {
	local out
	out=$(at_terminal "!$TRACE_POD exec $POD -- sh -c 'pod_escape session; echo rea''dy; read x; echo got:\$x; echo to-std''err >&2; exit 4'" \
		"?ready" "hello" "?__rc=[0-9]+__" \
		"!$TRACE_POD run --net none --rootfs $ROOTFS -- sh -c 'read x; echo run-got:\$x; exit 3'" \
		"world" "?__rc=[0-9]+__" \
		"!$TRACE_POD exec $POD -- sh -c 'echo rea''dy; cat; echo cat-saw-''eof'" \
		"?ready" "line-one" $'\x04' "?__rc=[0-9]+__")
	echo "$out"
	assert_contains "$out" "tty=0" "exec's stdin (a pipe)"
	assert_contains "$out" "got:hello" "exec: input relayed"
	assert_contains "$out" "to-stderr" "exec: stderr relayed"
	assert_contains "$out" "__rc=4__" "exec: exit status"
	assert_contains "$out" "run-got:world" "run: input relayed"
	assert_contains "$out" "__rc=3__" "run: exit status"
	# ^D at the terminal: the pod's stdin pipe is closed, cat sees EOF
	assert_contains "$out" "cat-saw-eof" "exec: EOF relayed"
}

test_detached_pod_own_session() {
	local name out
	name=$(pod_name det)
	on_exit pod_cleanup "$name"
	tp run -d --name "$name" --net none --rootfs "$ROOTFS" -- sh -c 'pod_escape session; sleep 600' \
		</dev/null >/dev/null
	wait_until 50 sh -c "'$TRACE_POD' logs '$name' | grep -q sid=" || fail "no output in the log"
	out=$(tp logs "$name")
	echo "$out"
	# sh is PID 1 and leads the session of its child pod_escape
	assert_contains "$out" "sid=1 pid=2 tty=0" "detached pod's session"
}

test_run_tty() {
	# a terminal of its own: tty, own session, window size, input and output relayed,
	# exit status, and the operator's terminal settings back as they were
	local out
	out=$(at_terminal "=33x101" "!stty -g >$WORK/stty-before" "?__rc=[0-9]+__" \
		"!$TRACE_POD run -t --net none --rootfs $ROOTFS -- sh -c 'tty; pod_escape session; stty size; echo rea''dy; read x; echo got:\$x; stty size; exit 7'" \
		"?ready" "=40x120" "hello" "?__rc=[0-9]+__" "!stty -g >$WORK/stty-after" "?__rc=[0-9]+__")
	echo "$out"
	assert_contains "$out" "/dev/pts/0" "tty in the pod (its own devpts)"
	assert_contains "$out" "sid=1 pid=" "the pod's session"
	assert_contains "$out" "tty=1" "stdin is a terminal"
	assert_contains "$out" "33 101" "window size at start"
	assert_contains "$out" "got:hello" "input relayed"
	assert_contains "$out" "40 120" "window size after a resize"
	assert_contains "$out" "__rc=7__" "exit status"
	assert_eq "$(cat "$WORK/stty-before")" "$(cat "$WORK/stty-after")" "terminal settings after run -t"
}

test_exec_tty() {
	local out
	out=$(at_terminal "=20x70" "!stty -g >$WORK/stty-before" "?__rc=[0-9]+__" \
		"!$TRACE_POD exec -t $POD -- sh -c 'tty; pod_escape session; stty size; echo rea''dy; read x; echo got:\$x; exit 5'" \
		"?ready" "hello" "?__rc=[0-9]+__" "!stty -g >$WORK/stty-after" "?__rc=[0-9]+__")
	echo "$out"
	assert_contains "$out" "/dev/pts/" "tty in the pod"
	[[ "$out" =~ sid=([0-9]+)\ pid=([0-9]+)\ tty=1 ]] || fail "no session line with a tty"
	# sh leads the session; pod_escape is its child
	[ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ] || fail "pod_escape should be sh's child"
	assert_contains "$out" "20 70" "window size"
	assert_contains "$out" "got:hello" "input relayed"
	assert_contains "$out" "__rc=5__" "exit status"
	assert_eq "$(cat "$WORK/stty-before")" "$(cat "$WORK/stty-after")" "terminal settings after exec -t"
}

test_tty_restored_when_killed() {
	# SIGTERM kills `exec -t` (it does not block it): the terminal must come back as it
	# was. The killer runs in the background; trace-pod in the foreground, as typed.
	local out
	out=$(at_terminal "!stty -g >$WORK/stty-before" "?__rc=[0-9]+__" \
		"!(sleep 2; kill -TERM \$(cat $WORK/exec.pid)) & sh -c 'echo \$\$ >$WORK/exec.pid; exec $TRACE_POD exec -t $POD -- sleep 30'; echo exec-status:\$?; stty -g >$WORK/stty-after" \
		"?__rc=[0-9]+__")
	echo "$out"
	assert_contains "$out" "exec-status:143" "exec -t killed by SIGTERM"
	assert_eq "$(cat "$WORK/stty-before")" "$(cat "$WORK/stty-after")" "terminal settings after a killed exec -t"
}

test_tty_needs_a_terminal() {
	local out rc
	out=$(echo | "$TRACE_POD" run -t --net none --rootfs "$ROOTFS" -- true 2>&1) && rc=0 || rc=$?
	assert_eq 125 "$rc" "run -t without a terminal"
	assert_contains "$out" "not a terminal"
	out=$(echo | "$TRACE_POD" exec -t "$POD" -- true 2>&1) && rc=0 || rc=$?
	assert_eq 125 "$rc" "exec -t without a terminal"
	assert_contains "$out" "not a terminal"
	out=$("$TRACE_POD" run -d -t --net none --rootfs "$ROOTFS" -- true 2>&1 </dev/null) && rc=0 || rc=$?
	assert_eq 125 "$rc" "run -d -t"
	assert_contains "$out" "exclude each other"
}

run_test tiocsti_control_on_the_host test_tiocsti_control_on_the_host
run_test tiocsti_from_run_refused test_tiocsti_from_run_refused
run_test tiocsti_from_run_without_seccomp_refused test_tiocsti_from_run_without_seccomp_refused
run_test tiocsti_from_exec_refused test_tiocsti_from_exec_refused
run_test tiocsti_on_own_pty test_tiocsti_on_own_pty
run_test own_session_without_tty test_own_session_without_tty
run_test exec_left_reader_gets_no_later_input test_exec_left_reader_gets_no_later_input
run_test exec_without_tty_at_terminal test_exec_without_tty_at_terminal
run_test detached_pod_own_session test_detached_pod_own_session
run_test run_tty test_run_tty
run_test exec_tty test_exec_tty
run_test tty_restored_when_killed test_tty_restored_when_killed
run_test tty_needs_a_terminal test_tty_needs_a_terminal
