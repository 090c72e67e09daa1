# The pods of the incoming-traffic tests (24_agent_incoming_*.sh), sourced after lib.sh
# and agent_lib.sh: incoming_pods_start KIND WEB CLI makes $WORK (removed at exit with
# both pods and the agent "main"), a target pod $WEB running tests/apps/httpserve on
# $HTTP_PORT (answering "pod-answer") and tests/apps-c/echo_server on $ECHO_PORT, and a
# client pod $CLI; sets WEB_IP, CLI_IP and E (agent_e2e on the target).
incoming_pods_start() {
	local kind=$1 f
	ensure_rootfs

	HTTPSERVE="$BUILD/apps/httpserve"
	ECHO_SERVER="$BUILD/tests/echo_server"
	for f in "$HTTPSERVE" "$ECHO_SERVER" "$AGENT_E2E" "$TRACE_AGENT"; do
		[ -x "$f" ] || { echo "missing $f (make all)" >&2; exit 1; }
	done

	WORK=$(mktemp -d "/tmp/hermit-$kind-test.XXXXXX")
	chmod 0755 "$WORK"
	WEB=$(pod_name "$2") # the target: an HTTP server on 8080, an echo server on 7000
	CLI=$(pod_name "$3") # the clients
	HTTP_PORT=8080
	ECHO_PORT=7000
	trap incoming_pods_cleanup EXIT

	mkdir -m 0700 "$WORK/private"
	ROOTFS="$WORK/private/rootfs"
	cp -a "$TEST_ROOTFS" "$ROOTFS"
	tp deploy "$HTTPSERVE" --rootfs "$ROOTFS" >/dev/null
	tp deploy "$ECHO_SERVER" --rootfs "$ROOTFS" >/dev/null

	tp run -d --init --name "$WEB" --rootfs "$ROOTFS" -- sh -c "
		echo_server -p $ECHO_PORT &
		exec httpserve -listen :$HTTP_PORT -body pod-answer" </dev/null >/dev/null
	tp run -d --name "$CLI" --rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
	wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>/dev/null | grep -q 'httpserve: listening'" ||
		fail "pod $WEB did not start httpserve: $("$TRACE_POD" logs "$WEB" 2>&1)"
	wait_until 100 sh -c "'$TRACE_POD' logs '$WEB' 2>/dev/null | grep -q 'echo_server.*listening'" ||
		fail "pod $WEB did not start echo_server: $("$TRACE_POD" logs "$WEB" 2>&1)"
	WEB_IP=$(pod_ip "$WEB")
	CLI_IP=$(pod_ip "$CLI")
	[ -n "$WEB_IP" ] && [ -n "$CLI_IP" ] || fail "a pod has no IP"
	echo "pods: target $WEB_IP, client $CLI_IP"
}

incoming_pods_cleanup() {
	local f
	agent_stop "$WORK" main >/dev/null 2>&1
	for f in "$WORK"/*.pid; do
		[ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
	done
	pod_cleanup "$WEB" "$CLI"
	[ -z "${KEEP_LOGS:-}" ] || cp "$WORK"/*.log "$WORK"/*.out "$KEEP_LOGS"/ 2>/dev/null
	rm -rf "$WORK"
}

E() { e2e "$WORK" main --target "pod/$WEB" "$@"; }
