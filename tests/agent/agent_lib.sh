# Helpers for integration tests that drive a real trace-agent (sourced after tests/lib.sh).
# Every agent lives in a work directory: DIR/NAME.sock (its unix socket), DIR/NAME.log
# (its stderr, debug level), DIR/NAME.pid, and DIR/token (shared by the agents of DIR).
AGENT_E2E="$BUILD/tests/agent_e2e"

# agent_start DIR NAME [TRACE-AGENT ARGS...]: start an agent and wait until it serves.
# Its socket's group is nogroup (AGENT_UNIX_GROUP), user nobody's, so tests can run
# clients as nobody.
AGENT_UNIX_GROUP="${AGENT_UNIX_GROUP:-nogroup}"
agent_start() {
	local dir="$1" name="$2"
	shift 2
	"$TRACE_AGENT" --unix "$dir/$name.sock" --token-file "$dir/token" --log-level debug \
		--handshake-timeout 2000 --unix-group "$AGENT_UNIX_GROUP" "$@" </dev/null \
		2>"$dir/$name.log" &
	echo $! >"$dir/$name.pid"
	if ! wait_until 100 grep -q ' ready (pid ' "$dir/$name.log"; then
		cat "$dir/$name.log" >&2
		fail "agent $name did not start"
	fi
}

agent_pid() { cat "$1/$2.pid"; }

# agent_stop DIR NAME: SIGTERM, SIGKILL after 10 s; returns the agent's exit status.
agent_stop() {
	local pid
	pid=$(agent_pid "$1" "$2")
	kill -TERM "$pid" 2>/dev/null || return 0
	local i
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null
}

# e2e DIR NAME [agent_e2e ARGS...]: the e2e driver against agent NAME's unix socket.
e2e() {
	local dir="$1" name="$2"
	shift 2
	timeout 120 "$AGENT_E2E" --unix "$dir/$name.sock" --token-file "$dir/token" "$@"
}

# The pid of pod NAME's PID 1, from trace-pod's state.
pod_pid() { pod_field "$1" pid; }
