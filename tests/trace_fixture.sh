# shellcheck shell=bash
# The trace-run scenario shared by `make demo`, tests/integration/32_trace_run_apps.sh,
# 33_trace_run_errors.sh and bench/tracer.sh. Source it after tests/lib.sh and
# tests/agent/agent_lib.sh, then call fixture_up (idempotent) and let the exit hook it
# registers (or fixture_down) remove everything.
#
# What it builds, and why each piece is there:
#   rootfs   a private copy of the busybox test rootfs with podprobe, httpserve,
#            httpbench and dns_responder deployed, and files only the pod has:
#            /srv/web/message.txt, /srv/web/index.html, /srv/web/conf/ (the host has
#            no /srv/web at all); /srv/bench/4k.bin for the benchmarks.
#   pod svc  httpserve on SVC_IP:8080 answering FX_SVC_BODY; GET /echo reports the
#            source address it saw.
#   pod dns  dns_responder on DNS_IP:53: svc.hermit.test -> SVC_IP. The host's resolver
#            has never heard of the name.
#            svc and dns answer the pods' network only (fx_pods_network_only): the
#            host, on the same bridge, gets no answer from them.
#   pod web  the target: --env HERMIT_DEMO_GREETING=hello-from-web, --dns DNS_IP (its
#            /etc/resolv.conf names the dns pod), sleep as PID 1 (not --init: the agent
#            reads PID 1's environment, and hermit-init's is not the pod's).
#   agent    a real trace-agent on FX_WORK/agent.sock (0660, group nogroup) with token
#            FX_WORK/token (root only); FX_TOKEN_NOBODY is a copy owned by nobody.
#
# What a correct answer under `trace-run --target pod/web` proves:
#   env HERMIT_DEMO_GREETING  the pod's environment was imported (the host has none)
#   /srv/web/...              files come from the pod's root filesystem
#   resolve svc.hermit.test   DNS went to the pod's resolv.conf and its nameserver
#   GET svc.hermit.test:8080  name resolution in the pod + a TCP connection from the
#                             pod's network (the host cannot reach svc at all); GET
#                             /echo shows svc saw WEB_IP as the source.
# (Loopback is no test of the pod's network: trace-run keeps 127.0.0.0/8 and ::1 local
# by design, docs/config.md "Outgoing traffic".)
#
# Reuse across processes (for iterating on a test): `bash tests/trace_fixture.sh up`
# prints a file to export as TRACE_FIXTURE; fixture_up then loads that scenario instead
# of building one and never tears it down; `bash tests/trace_fixture.sh down FILE` does.

FX_GREETING="hello-from-web"
FX_MESSAGE="this file exists only in pod web"
FX_INDEX="<h1>web's index</h1>"
FX_SVC_NAME="svc.hermit.test"
FX_SVC_BODY="hello from svc, on the pods' network"
FX_PORT=8080
FX_VARS=(FX_WORK FX_ROOTFS FX_WEB FX_SVC FX_DNS FX_WEB_IP FX_SVC_IP FX_DNS_IP FX_SOCK
	FX_TOKEN_FILE FX_TOKEN_NOBODY FX_OWNER)
FX_WORK="${FX_WORK:-}" # kept when sourced again (42_kube_apps.sh sources 32, which sources this)
FX_OWNER="${FX_OWNER:-}"

fx_log() { [ -n "${FX_QUIET:-}" ] || echo "fixture: $*" >&2; }

fixture_up() {
	[ -z "$FX_WORK" ] || return 0
	if [ -n "${TRACE_FIXTURE:-}" ]; then
		# shellcheck disable=SC1090
		source "$TRACE_FIXTURE" || fail "cannot load TRACE_FIXTURE=$TRACE_FIXTURE"
		FX_OWNER="" # someone else's: never torn down from here
		kill -0 "$(cat "$FX_WORK/agent.pid")" 2>/dev/null || fail "the agent of $TRACE_FIXTURE is gone"
		return 0
	fi
	local f
	for f in "$TRACE_POD" "$TRACE_AGENT" "$TRACE_RUN" "$BUILD/apps/podprobe" \
		"$BUILD/apps/httpserve" "$BUILD/apps/httpbench" "$BUILD/tests/dns_responder"; do
		[ -x "$f" ] || fail "missing $f (make BUILD=$BUILD all)"
	done
	ensure_rootfs
	FX_WORK=$(mktemp -d /tmp/hermit-fixture.XXXXXX)
	FX_OWNER=$BASHPID
	# FX_NO_TRAP=1: the caller owns the EXIT trap and calls fixture_down itself
	[ -n "${FX_NO_TRAP:-}" ] || on_exit fixture_down
	chmod 0755 "$FX_WORK" # nobody must reach the socket and its token copy
	local prefix="${FX_PREFIX:-hx$$-}"
	FX_WEB="${prefix}web"
	FX_SVC="${prefix}svc"
	FX_DNS="${prefix}dns"

	# trace-pod runs only a rootfs other host users cannot reach: a 0700 directory holds it
	mkdir -m 0700 "$FX_WORK/private"
	FX_ROOTFS="$FX_WORK/private/rootfs"
	cp -a "$TEST_ROOTFS" "$FX_ROOTFS"
	for f in "$BUILD/apps/podprobe" "$BUILD/apps/httpserve" "$BUILD/apps/httpbench" \
		"$BUILD/tests/dns_responder"; do
		tp deploy "$f" --rootfs "$FX_ROOTFS" >/dev/null
	done
	mkdir -p "$FX_ROOTFS/srv/web/conf"
	printf '%s\n' "$FX_MESSAGE" >"$FX_ROOTFS/srv/web/message.txt"
	printf '%s\n' "$FX_INDEX" >"$FX_ROOTFS/srv/web/index.html"
	echo "mode=pod" >"$FX_ROOTFS/srv/web/conf/app.conf"
	mkdir -p "$FX_ROOTFS/srv/bench"
	head -c 4096 /dev/urandom >"$FX_ROOTFS/srv/bench/4k.bin"
	[ ! -e /srv/web ] || fail "the host has a /srv/web: the file checks would prove nothing"

	fx_log "starting pods $FX_SVC, $FX_DNS, $FX_WEB"
	tp run -d --name "$FX_SVC" --rootfs "$FX_ROOTFS" -- \
		httpserve -listen ":$FX_PORT" -body "$FX_SVC_BODY" </dev/null >/dev/null
	fx_wait_log "$FX_SVC" "httpserve: listening"
	FX_SVC_IP=$(pod_ip "$FX_SVC")
	[ -n "$FX_SVC_IP" ] || fail "pod $FX_SVC has no IP"
	fx_pods_network_only "$FX_SVC"
	tp run -d --name "$FX_DNS" --rootfs "$FX_ROOTFS" -- \
		dns_responder -p 53 "$FX_SVC_NAME=$FX_SVC_IP" </dev/null >/dev/null
	fx_wait_log "$FX_DNS" "dns_responder: listening"
	FX_DNS_IP=$(pod_ip "$FX_DNS")
	[ -n "$FX_DNS_IP" ] || fail "pod $FX_DNS has no IP"
	fx_pods_network_only "$FX_DNS"
	tp run -d --name "$FX_WEB" --rootfs "$FX_ROOTFS" --dns "$FX_DNS_IP" \
		--env "HERMIT_DEMO_GREETING=$FX_GREETING" -- sleep 1000000 </dev/null >/dev/null
	FX_WEB_IP=$(pod_ip "$FX_WEB")
	[ -n "$FX_WEB_IP" ] || fail "pod $FX_WEB has no IP"

	# the scenario itself, seen from inside web: if this fails, trace-run is not to blame
	local got
	got=$(tp exec "$FX_WEB" -- wget -qO- "http://$FX_SVC_NAME:$FX_PORT/" </dev/null 2>&1) ||
		fail "inside $FX_WEB, wget http://$FX_SVC_NAME:$FX_PORT/ failed: $got"
	[ "$got" = "$FX_SVC_BODY" ] || fail "inside $FX_WEB, the service answered '$got'"

	agent_start "$FX_WORK" agent
	FX_SOCK="$FX_WORK/agent.sock"
	FX_TOKEN_FILE="$FX_WORK/token"
	FX_TOKEN_NOBODY="$FX_WORK/token-nobody"
	cp "$FX_TOKEN_FILE" "$FX_TOKEN_NOBODY"
	chown nobody "$FX_TOKEN_NOBODY"
	chmod 0600 "$FX_TOKEN_NOBODY"
	fx_save
	fx_log "web $FX_WEB_IP, svc $FX_SVC_IP, dns $FX_DNS_IP, agent $FX_SOCK"
}

# fx_pods_network_only POD: the host reaches pod IPs over hermit0; a "prohibit" route to
# the host's bridge address in POD's own netns drops every answer to the host, so only
# the pods' network reaches POD. It lives in the pod's netns and goes away with it.
fx_pods_network_only() {
	local pid host_ip
	pid=$(pod_pid "$1")
	host_ip=$(nsenter -t "$pid" -n ip route show default | awk '{print $3; exit}')
	[ -n "$host_ip" ] || fail "pod $1 has no default route"
	nsenter -t "$pid" -n ip route add prohibit "$host_ip/32"
}

# the scenario's variables, loadable from inside a function (declare -g)
fx_save() {
	declare -p "${FX_VARS[@]}" | sed 's/^declare -- /declare -g /' >"$FX_WORK/fixture.env"
}

fx_wait_log() { # POD TEXT
	wait_until 100 sh -c "'$TRACE_POD' logs '$1' 2>/dev/null | grep -qF '$2'" ||
		fail "pod $1 did not log '$2': $("$TRACE_POD" logs "$1" 2>&1 | tail -5)"
}

# Removes everything fixture_up made; only in the process that made it (a test's
# subshell inherits the exit hooks' text, and must not tear down the shared scenario).
fixture_down() {
	[ -n "$FX_WORK" ] && [ "$FX_OWNER" = "$BASHPID" ] || return 0
	agent_stop "$FX_WORK" agent >/dev/null 2>&1 || true
	pod_cleanup "$FX_WEB" "$FX_SVC" "$FX_DNS"
	case "$FX_WORK" in
	/tmp/hermit-fixture.?*) rm -rf -- "$FX_WORK" ;;
	esac
	FX_WORK=""
}

# trun [TRACE-RUN OPTIONS] -- PROGRAM [ARGS]: trace-run on pod web through the fixture's
# agent, as root, with a deadline so a hang fails the check instead of the suite.
# With FX_KUBECONFIG set (tests/kube/kube_lib.sh), both go through the test API server
# instead: pod FX_KUBE_TARGET of its namespace describes web, the token comes from the
# agent's Secret (root) or as below (nobody).
trun() {
	if [ -n "${FX_KUBECONFIG:-}" ]; then
		timeout "${TRUN_TIMEOUT:-60}" "$TRACE_RUN" --kubeconfig "$FX_KUBECONFIG" \
			--target "$FX_KUBE_TARGET" "$@"
		return
	fi
	timeout "${TRUN_TIMEOUT:-60}" "$TRACE_RUN" --agent-unix "$FX_SOCK" --token-file "$FX_TOKEN_FILE" \
		--target "pod/$FX_WEB" "$@"
}

# trun_nobody [TRACE-RUN OPTIONS] -- PROGRAM [ARGS]: the same as user nobody, with the
# token in HERMIT_TOKEN; FX_NOBODY_TOKEN=file passes nobody's copy with --token-file.
trun_nobody() {
	local auth=(env "HERMIT_TOKEN=$(cat "$FX_TOKEN_FILE")" "$TRACE_RUN")
	[ "${FX_NOBODY_TOKEN:-env}" != file ] || auth=("$TRACE_RUN" --token-file "$FX_TOKEN_NOBODY")
	local where=(--agent-unix "$FX_SOCK" --target "pod/$FX_WEB")
	[ -z "${FX_KUBECONFIG:-}" ] || where=(--kubeconfig "$FX_KUBECONFIG" --target "$FX_KUBE_TARGET")
	(cd / && timeout "${TRUN_TIMEOUT:-60}" runuser -u nobody -- "${auth[@]}" "${where[@]}" "$@")
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	# `bash tests/trace_fixture.sh up|down FILE`: a scenario that outlives this process
	set -euo pipefail
	source "$(dirname "$0")/lib.sh"
	source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
	case "${1:-}" in
	up)
		# the agent inherits stdout: keep it off the pipe of a $(...) that reads ours
		fixture_up >&2
		FX_OWNER=detached
		fx_save
		trap - EXIT
		echo "export TRACE_FIXTURE=$FX_WORK/fixture.env"
		;;
	down)
		[ -f "${2:-}" ] || { echo "usage: $0 down FIXTURE.env" >&2; exit 2; }
		# shellcheck disable=SC1090
		source "$2"
		FX_OWNER=$BASHPID
		fixture_down
		;;
	*)
		echo "usage: $0 up | down FIXTURE.env" >&2
		exit 2
		;;
	esac
fi
