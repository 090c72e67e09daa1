#!/usr/bin/env bash
# Who gets into trace-agent, and what they may target (issue 7 items 11, 13, 14):
# a flood of silent connections does not keep legitimate clients out, the unix socket
# admits only root and its group, pid/N targets only the caller's own processes, and
# TCP listens on loopback only unless --insecure.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

WORK=$(mktemp -d /tmp/hermit-agent-access.XXXXXX)
chmod 0755 "$WORK"
WEB=$(pod_name web)
FAKE_POD=$(pod_name fake)
SECRET="/root/.hermit-access-secret-$$"
CREATED="/root/.hermit-access-created-$$"
SLEEPERS=()
for CGROUP_BASE in /sys/fs/cgroup/pids /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
	[ -w "$CGROUP_BASE/cgroup.procs" ] && break
done
# fake containers' cgroups; root stands in for systemd's delegation of one to a user
CGROUP_DIR="$CGROUP_BASE/hermit-rv-65534-delegated-$$"
cleanup() {
	local f p
	agent_stop "$WORK" main >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	for p in "${SLEEPERS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	pod_cleanup "$WEB"
	rm -f "$SECRET" "$CREATED"
	rm -rf "/run/hermit/pods/$FAKE_POD"
	if [ -d "$CGROUP_DIR" ]; then
		find "$CGROUP_DIR" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		sleep 0.3
		find "$CGROUP_DIR" -depth -type d -exec rmdir {} \; 2>/dev/null
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

set -e
tp run -d --name "$WEB" --env FOO=bar --rootfs "$TEST_ROOTFS" -- sleep 100000 </dev/null >/dev/null
PORT=$((20000 + RANDOM % 20000))
agent_start "$WORK" main --listen "127.0.0.1:$PORT"
# nobody's copy of the token: having the token is not the question here
install -m 0600 -o nobody "$WORK/token" "$WORK/token-nobody"
set +e

# as_user UID GID CMD...: CMD as that uid and gid, with no supplementary groups
as_user() {
	local uid="$1" gid="$2"
	shift 2
	(cd / && timeout 120 setpriv --reuid "$uid" --regid "$gid" --clear-groups "$@")
}
# e2e as nobody (in the socket's group nogroup) over the unix socket
E_nobody() {
	as_user 65534 65534 "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token-nobody" "$@"
}

test_flood() {
	# 300 connections that never send a byte, reopened as soon as the agent closes
	# them; meanwhile 20 real clients, one after the other over 4 s (longer than the
	# pre-auth deadline), must all get in
	local out
	out=$(timeout 300 "$AGENT_E2E" --agent "127.0.0.1:$PORT" --token-file "$WORK/token" \
		flood 300 20 3000 4000)
	echo "$out"
	assert_contains "$out" "legitimate clients 20/20 succeeded" "TCP flood"
	out=$(E_nobody flood 300 20 3000 4000)
	echo "$out"
	assert_contains "$out" "legitimate clients 20/20 succeeded" "unix flood as nobody"
	# the flood did fill the budgets: the agent evicted silent connections
	grep -qE 'evicted by a newer connection|closed before their hello' "$WORK/main.log" ||
		fail "the agent never evicted a silent connection: the flood proved nothing"
	# a silent peer from another uid does not crowd root out either
	as_user 65534 65534 "$AGENT_E2E" --unix "$WORK/main.sock" --token-file "$WORK/token-nobody" \
		flood 300 2 3000 6000 >/dev/null &
	local flooder=$!
	sleep 1
	e2e "$WORK" main --target "pod/$WEB" env-has FOO=bar
	wait "$flooder" || true
	kill -0 "$(agent_pid "$WORK" main)" || fail "the agent died"
}

test_unix_socket_mode() {
	local st out rc
	st=$(stat -c '%a %U %G' "$WORK/main.sock")
	assert_eq "660 root nogroup" "$st" "socket with --unix-group nogroup"
	# by default: root's group, no one else
	"$TRACE_AGENT" --unix "$WORK/def.sock" --token-file "$WORK/token" </dev/null \
		2>"$WORK/def.log" &
	echo $! >"$WORK/def.pid"
	wait_until 100 grep -q ' ready (pid ' "$WORK/def.log" || fail "default agent did not start"
	st=$(stat -c '%a %U %G' "$WORK/def.sock")
	assert_eq "660 root root" "$st" "default socket"
	rc=0
	out=$(as_user 65534 65534 "$TRACE_AGENT" status --unix "$WORK/def.sock" \
		--token-file "$WORK/token-nobody" 2>&1) || rc=$?
	echo "$out"
	[ "$rc" -ne 0 ] || fail "nobody reached the default (root-only) socket"
	assert_contains "$out" "permission denied (only root and the socket's group"
	"$TRACE_AGENT" status --unix "$WORK/def.sock" --token-file "$WORK/token" >/dev/null ||
		fail "root cannot use the default socket"
	agent_stop "$WORK" def

	# a user outside the group (uid nobody, gid daemon) holding the token is refused
	rc=0
	out=$(as_user 65534 1 "$TRACE_AGENT" status --unix "$WORK/main.sock" \
		--token-file "$WORK/token-nobody" 2>&1) || rc=$?
	echo "$out"
	[ "$rc" -ne 0 ] || fail "a user outside the socket's group got in"
	assert_contains "$out" "permission denied (only root and the socket's group"
	rc=0
	out=$(as_user 65534 1 env HERMIT_TOKEN="$(cat "$WORK/token")" "$TRACE_RUN" \
		--agent-unix "$WORK/main.sock" --target "pod/$WEB" -- /bin/true 2>&1) || rc=$?
	echo "$out"
	assert_eq 122 "$rc" "trace-run exit code outside the socket's group"
	assert_contains "$out" "permission denied (only root and the socket's group"
	# the same user in the group gets in
	as_user 65534 65534 "$TRACE_AGENT" status --unix "$WORK/main.sock" \
		--token-file "$WORK/token-nobody" >/dev/null || fail "a member of the group was refused"
}

# sleeper UID: a process running as UID (all its uids); prints its pid
sleeper() {
	if [ "$1" = 0 ]; then
		sleep 1000 </dev/null >/dev/null 2>&1 &
	else
		setpriv --reuid "$1" --regid "$1" --clear-groups sleep 1000 </dev/null >/dev/null 2>&1 &
	fi
	echo $!
}

test_pid_targets() {
	local mine roots out rc
	mine=$(sleeper 65534)
	roots=$(sleeper 0)
	SLEEPERS+=("$mine" "$roots")
	wait_until 50 sh -c "grep -q '^Uid:.65534' /proc/$mine/status" || fail "nobody's sleeper"
	# nobody, with the token: init and root's processes are not its to target
	E_nobody --target pid/1 bad-target EPERM
	E_nobody --target "pid/$roots" bad-target EPERM
	# its own process is
	E_nobody --target "pid/$mine" session-pid "$mine"
	# pods (and containers) stay token-only
	E_nobody --target "pod/$WEB" env-has FOO=bar
	grep -q "target pid/1 refused: pid/1: permission denied: the process runs as uid 0, the client is uid 65534" \
		"$WORK/main.log" || fail "refusal not logged"
	# root may target anything
	e2e "$WORK" main --target "pid/$roots" session-pid "$roots"
	e2e "$WORK" main --target "pid/$mine" session-pid "$mine"
	# TCP peers have no credentials: no pid/N at all
	timeout 60 "$AGENT_E2E" --agent "127.0.0.1:$PORT" --token-file "$WORK/token" \
		--target "pid/$mine" bad-target EPERM
	timeout 60 "$AGENT_E2E" --agent "127.0.0.1:$PORT" --token-file "$WORK/token" \
		--target "pod/$WEB" env-has FOO=bar

	# the attack of the issue: nobody with the token reads a 0600 file in /root and
	# creates one there through pid/1
	echo "root only $RANDOM" >"$SECRET"
	chmod 0600 "$SECRET"
	rc=0
	out=$(as_user 65534 65534 env HERMIT_TOKEN="$(cat "$WORK/token")" "$TRACE_RUN" \
		--agent-unix "$WORK/main.sock" --target pid/1 --fs-mode write -- \
		/bin/sh -c "cat $SECRET; echo planted >$CREATED" 2>&1) || rc=$?
	echo "$out"
	assert_eq 123 "$rc" "trace-run exit code for pid/1 as nobody"
	assert_contains "$out" "permission denied: the process runs as uid 0"
	assert_not_contains "$out" "root only" "the secret leaked"
	[ ! -e "$CREATED" ] || fail "nobody created $CREATED through pid/1"

	# --allow-any-pid restores the token-only rule, on purpose
	agent_start "$WORK" any --allow-any-pid
	as_user 65534 65534 "$AGENT_E2E" --unix "$WORK/any.sock" --token-file "$WORK/token-nobody" \
		--target "pid/$roots" session-pid "$roots"
	agent_stop "$WORK" any
}

test_own_pid_is_not_root() {
	# the reviewer's attack: nobody's own process has the host's / as its root; the
	# agent used to serve it with root's rights
	local shadow1 owned="/root/owned-$$"
	shadow1=$(head -1 /etc/shadow)
	echo "{\"feature\":{\"fs\":{\"mode\":\"write\",\"read_write\":[\"^/etc/shadow\$\",\"^/root/\",\"^/etc/passwd\$\"]}}}" \
		>"$WORK/own.json"
	chmod 0644 "$WORK/own.json"
	rm -f "$owned"
	# pid/$$ of the user's own shell, which execs trace-run (so stays nobody's)
	RC=0
	OUT=$(as_user 65534 65534 env HERMIT_TOKEN="$(cat "$WORK/token")" TRACE_RUN="$TRACE_RUN" \
		SOCK="$WORK/main.sock" CFG="$WORK/own.json" OWNED="$owned" sh -c \
		'exec "$TRACE_RUN" --agent-unix "$SOCK" -f "$CFG" --target pid/$$ -- /bin/sh -c \
		"head -1 /etc/passwd; head -2 /etc/shadow; echo x >> $OWNED"' 2>&1) || RC=$?
	echo "$OUT (exit $RC)"
	assert_not_contains "$OUT" "$shadow1" "nobody read /etc/shadow through its own pid"
	[ ! -e "$owned" ] || { rm -f "$owned"; fail "nobody created $owned through its own pid"; }
	assert_contains "$OUT" "Permission denied" "the shadow read and the /root write fail with EACCES"
	# the session itself works: a file nobody may read comes through
	assert_contains "$OUT" "root:x:0:0" "a file nobody can read, through its own pid"
}

test_no_kernel_files() {
	# the agent's root capabilities are not lent to a target's /proc and /sys
	echo '{"feature":{"fs":{"read_only":["^/proc/","^/sys/"]}}}' >"$WORK/proc.json"
	chmod 0644 "$WORK/proc.json"
	local out rc=0
	out=$(HERMIT_TOKEN="$(cat "$WORK/token")" timeout 120 "$TRACE_RUN" \
		--agent-unix "$WORK/main.sock" -f "$WORK/proc.json" --target "pod/$WEB" -- \
		/bin/sh -c 'head -3 /proc/kallsyms; head -1 /sys/kernel/notes' 2>&1) || rc=$?
	echo "$out (exit $rc)"
	if echo "$out" | grep -qE '^[0-9a-f]{16} [a-zA-Z] '; then
		fail "kernel symbols read through the agent"
	fi
	assert_contains "$out" "cannot open '/proc/kallsyms' for reading: Permission denied"
	assert_contains "$out" "cannot open '/sys/kernel/notes' for reading: Permission denied"
}

# the pid of the only process in cgroup directory DIR, once there is one
cgroup_pid() {
	wait_until 100 grep -q . "$1/cgroup.procs" || fail "nothing in $1"
	head -1 "$1/cgroup.procs"
}

test_fake_containers() {
	local id out rc pid
	mkdir -p "$CGROUP_DIR"
	chown nobody "$CGROUP_DIR"
	local tcp=("$AGENT_E2E" --agent "127.0.0.1:$PORT" --token-file "$WORK/token")
	id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-16)
	echo '{"feature":{"fs":{"mode":"read"}}}' >"$WORK/ro.json"
	chmod 0644 "$WORK/ro.json"

	# the reviewer's attack: nobody names a cgroup like a container, over TCP
	as_user 65534 65534 sh -c "mkdir $CGROUP_DIR/$id.scope && echo \$\$ >$CGROUP_DIR/$id.scope/cgroup.procs && exec sleep 1000" &
	pid=$(cgroup_pid "$CGROUP_DIR/$id.scope")
	rc=0
	out=$(HERMIT_TOKEN="$(cat "$WORK/token")" timeout 60 "$TRACE_RUN" --agent "127.0.0.1:$PORT" \
		-f "$WORK/ro.json" --target "container/$id" -- head -1 /etc/shadow 2>&1) || rc=$?
	echo "$out (exit $rc)"
	[ "$rc" -ne 0 ] || fail "trace-run on the fake container succeeded"
	assert_not_contains "$out" "$(head -1 /etc/shadow)" "/etc/shadow read through a fake container"
	timeout 60 "${tcp[@]}" --target "container/$id" bad-target ESRCH

	# the same with a runtime's name: in the host's namespaces, it is a process
	id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
	as_user 65534 65534 sh -c "mkdir $CGROUP_DIR/docker-$id.scope && echo \$\$ >$CGROUP_DIR/docker-$id.scope/cgroup.procs && exec sleep 1000" &
	pid=$(cgroup_pid "$CGROUP_DIR/docker-$id.scope")
	timeout 60 "${tcp[@]}" --target "container/$id" bad-target EPERM
	grep -q "container/$id (pid $pid): it shares the agent's pid namespace" "$WORK/main.log" ||
		fail "no reason logged for the refused container"
	# as nobody over the socket, its own process is served as pid/N would be
	E_nobody --target "container/${id:0:12}" session-pid "$pid"

	# and in namespaces of its own making (unshare -Urpm): its user namespace is nobody's
	id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
	as_user 65534 65534 sh -c "mkdir -p $CGROUP_DIR/docker/$id" || fail "mkdir docker/$id as nobody"
	as_user 65534 65534 unshare -Urpm --fork sh -c "echo 0 >$CGROUP_DIR/docker/$id/cgroup.procs && exec sleep 1000" &
	pid=$(cgroup_pid "$CGROUP_DIR/docker/$id")
	timeout 60 "${tcp[@]}" --target "container/$id" bad-target EPERM
	grep -q "container/$id (pid $pid): its user namespace belongs to uid 65534" "$WORK/main.log" ||
		fail "no user-namespace reason logged"

	# a container as a runtime makes it (root: new pid and mount namespaces) is served
	# over TCP
	id=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
	mkdir -p "$CGROUP_DIR/root/docker/$id"
	unshare -pm --fork sh -c "echo 0 >$CGROUP_DIR/root/docker/$id/cgroup.procs && exec sleep 1000" &
	pid=$(cgroup_pid "$CGROUP_DIR/root/docker/$id")
	timeout 60 "${tcp[@]}" --target "container/$id" session-pid "$pid"
}

test_pod_recycled_pid() {
	# a pod whose PID 1 was reaped and whose pid went to another process, while the
	# state still says running: a copy of a live pod's state (its monitor is alive)
	# with the pid of a host process, then of a process in a pid namespace of its own
	local host_pid ns_pid
	sleep 1000 </dev/null >/dev/null 2>&1 &
	host_pid=$!
	unshare -p --fork sleep 1000 </dev/null >/dev/null 2>&1 &
	wait_until 50 pgrep -P $! >/dev/null || fail "no unshared sleeper"
	ns_pid=$(pgrep -P $!)
	mkdir "/run/hermit/pods/$FAKE_POD"
	cp -a "/run/hermit/pods/$WEB"/. "/run/hermit/pods/$FAKE_POD"/
	echo "$host_pid" >"/run/hermit/pods/$FAKE_POD/pid"
	e2e "$WORK" main --target "pod/$FAKE_POD" bad-target ESRCH
	grep -q "pod/$FAKE_POD: pid $host_pid is in the host's pid namespace" "$WORK/main.log" ||
		fail "no reason logged for the host process"
	echo "$ns_pid" >"/run/hermit/pods/$FAKE_POD/pid"
	e2e "$WORK" main --target "pod/$FAKE_POD" bad-target ESRCH
	grep -q "pod/$FAKE_POD: pid $ns_pid is not in the pod's cgroup" "$WORK/main.log" ||
		fail "no reason logged for the process outside the pod's cgroup"
	# the real pod's PID 1 passes the same checks
	e2e "$WORK" main --target "pod/$WEB" session-pid "$(pod_pid "$WEB")"
	rm -rf "/run/hermit/pods/$FAKE_POD"
	kill -KILL "$host_pid" "$ns_pid" 2>/dev/null || true
}

test_creation_modes() {
	# setuid/setgid/sticky on what the agent creates (as root) are root's to ask for
	local out
	out=$(timeout 60 "$AGENT_E2E" --agent "127.0.0.1:$PORT" --token-file "$WORK/token" \
		--target "pod/$WEB" create-modes "/tmp/modes-tcp-$$")
	echo "$out"
	assert_contains "$out" "modes 0" "special bits over TCP"
	[[ "$out" =~ modes\ 0[0-7]{3}\ 0[0-7]{3} ]] || fail "setuid/setgid/sticky given over TCP: $out"
	out=$(E_nobody --target "pod/$WEB" create-modes "/tmp/modes-nobody-$$")
	echo "$out"
	[[ "$out" =~ modes\ 0[0-7]{3}\ 0[0-7]{3} ]] || fail "setuid/setgid/sticky given to nobody: $out"
	# root may
	out=$(e2e "$WORK" main --target "pod/$WEB" create-modes "/tmp/modes-root-$$")
	echo "$out"
	[[ "$out" =~ modes\ 6[0-7]{3}\ 1[0-7]{3} ]] || fail "root's special bits were dropped: $out"
}

test_listen_loopback_only() {
	local ip out rc port
	ip=$(ip -4 -o addr show dev hermit0 | awk '{split($4, a, "/"); print a[1]; exit}')
	[ -n "$ip" ] || fail "no address on hermit0"
	port=$((20000 + RANDOM % 20000))
	for addr in "$ip:$port" "0.0.0.0:$port" "[::]:$port"; do
		rc=0
		out=$(timeout 20 "$TRACE_AGENT" --no-unix --token-file "$WORK/token" --listen "$addr" \
			</dev/null 2>&1) || rc=$?
		echo "$out"
		[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "listened on $addr without --insecure (exit $rc)"
		assert_contains "$out" "not a loopback address"
		assert_contains "$out" "--insecure"
	done
	# loopback needs nothing; --insecure allows the bridge address, with a warning
	agent_start "$WORK" lo --no-unix --listen "[::1]:$port"
	agent_stop "$WORK" lo
	agent_start "$WORK" bridge --no-unix --listen "$ip:$port" --insecure
	grep -q "listening on $ip:$port" "$WORK/bridge.log" || fail "no listener on $ip:$port"
	grep -q "unencrypted" "$WORK/bridge.log" || fail "no warning about --insecure"
	# a client in a pod reaches it
	nsenter -t "$(pod_pid "$WEB")" -n timeout 60 "$AGENT_E2E" --agent "$ip:$port" \
		--token-file "$WORK/token" ping
	agent_stop "$WORK" bridge
}

test_main_agent_stops() {
	local pid
	pid=$(agent_pid "$WORK" main)
	kill -TERM "$pid"
	wait_until 100 sh -c "! kill -0 $pid 2>/dev/null" || fail "the agent did not stop within 10 s"
	grep -q 'stopped$' "$WORK/main.log" || fail "no clean stop in the log"
	# under SAN=1: no memory error, leak or undefined behaviour in the whole run
	if grep -B2 -A30 -E 'Sanitizer|runtime error' "$WORK"/*.log; then
		fail "sanitizer report in an agent's log"
	fi
}

run_test "agent access: 300 silent connections do not keep clients out" test_flood
run_test "agent access: unix socket only for root and --unix-group" test_unix_socket_mode
run_test "agent access: pid/N only for the caller's own processes" test_pid_targets
run_test "agent access: pid/<own pid> works with the caller's rights, not root's" test_own_pid_is_not_root
run_test "agent access: no procfs/sysfs contents through the agent" test_no_kernel_files
run_test "agent access: container/ID only for a privileged runtime's containers" test_fake_containers
run_test "agent access: pod/NAME is not served on a recycled pid" test_pod_recycled_pid
run_test "agent access: setuid/setgid/sticky modes only for root" test_creation_modes
run_test "agent access: TCP on loopback only unless --insecure" test_listen_loopback_only
run_test "agent access: clean shutdown after the floods" test_main_agent_stops
