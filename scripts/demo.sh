#!/usr/bin/env bash
# make demo: the whole hermit flow on this machine, no Kubernetes needed. make has built
# everything; this starts three local pods and a trace-agent (tests/trace_fixture.sh),
# runs a static Go binary on the host under `trace-run --target pod/web` and shows that
# it sees the pod's environment, files, DNS and network, then removes all it started.
# Exits non-zero when any step fails or any answer is not the pod's.
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD="${BUILD:-build}"
source tests/lib.sh
source tests/agent/agent_lib.sh
source tests/trace_fixture.sh

# colours only on a terminal
if [ -t 1 ]; then B=$'\033[1m' D=$'\033[2m' C=$'\033[36m' R=$'\033[31m' N=$'\033[0m'; else B='' D='' C='' R='' N=''; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
show() { printf '  %s$ %s%s\n' "$D" "$*" "$N"; }
explain() { printf '  %s-> %s%s\n' "$C" "$*" "$N"; }
indent() { sed 's/^/     /'; }
# check WHAT EXPECTED ACTUAL: a wrong answer stops the demo with a non-zero status
check() {
	[ "$2" = "$3" ] && return 0
	printf '%sdemo failed: %s: expected %q, got %q%s\n' "$R" "$1" "$2" "$3" "$N" >&2
	exit 1
}
demo_failed() {
	printf '%sdemo failed at line %s (status %s); cleaning up%s\n' "$R" "$1" "$2" "$N" >&2
}
trap 'demo_failed $LINENO $?' ERR
started=$SECONDS

say "the scenario: three pods on the hermit0 bridge and a trace-agent"
FX_PREFIX="demo$$-" FX_QUIET=1 fixture_up
WEB="$FX_WEB"
cat <<EOF
  pod $FX_SVC  $FX_SVC_IP   HTTP service on :$FX_PORT, answers the pods' network only
  pod $FX_DNS  $FX_DNS_IP   DNS server: $FX_SVC_NAME -> $FX_SVC_IP, nothing else
  pod $FX_WEB  $FX_WEB_IP   the target: env HERMIT_DEMO_GREETING=$FX_GREETING,
                          files under /srv/web/, resolv.conf -> $FX_DNS_IP
  trace-agent on $FX_SOCK
  (on a cluster: the pods are Kubernetes pods, the agent a DaemonSet on their node;
  each trace-run below also gets --agent-unix and --token-file for this agent, which
  default to /run/hermit/agent.sock and /run/hermit/agent.token)
EOF

PROBE_ARGS=(-timeout 5s -env HERMIT_DEMO_GREETING -read /srv/web/message.txt -list /srv/web
	-resolve "$FX_SVC_NAME" -get "http://$FX_SVC_NAME:$FX_PORT/")
PODPROBE="$BUILD/apps/podprobe"

say "podprobe (a static Go binary) run on the host, without trace-run"
show "podprobe -all ${PROBE_ARGS[*]}"
host_out=$("$PODPROBE" -all "${PROBE_ARGS[@]}" 2>&1) && { echo "$host_out"; exit 1; }
echo "$host_out" | indent
explain "the host has no such variable, no /srv/web, and cannot resolve $FX_SVC_NAME"
show "curl --connect-timeout 2 http://$FX_SVC_IP:$FX_PORT/"
rc=0
curl -qsS --connect-timeout 2 --max-time 3 "http://$FX_SVC_IP:$FX_PORT/" 2>&1 | indent || rc=$?
check "the host reaching the service" 1 "$((rc != 0))"
explain "nor reach the service, even by its IP"

say "the same binary under trace-run --target pod/$WEB"
show "trace-run --target pod/$WEB -- podprobe ${PROBE_ARGS[*]}"
t0=$(date +%s%N)
out=$(trun -- "$PODPROBE" "${PROBE_ARGS[@]}")
t1=$(date +%s%N)
echo "$out" | indent
check "podprobe output" "$(printf '%s\n' "env HERMIT_DEMO_GREETING=$FX_GREETING" "$FX_MESSAGE" \
	"list /srv/web conf" "list /srv/web index.html" "list /srv/web message.txt" \
	"resolve $FX_SVC_NAME $FX_SVC_IP" "get http://$FX_SVC_NAME:$FX_PORT/ status=200" \
	"$FX_SVC_BODY")" "$out"
explain "env:     imported from pod $WEB (set with trace-pod run --env)"
explain "file:    /srv/web/message.txt and the listing come from the pod's root filesystem"
explain "resolve: Go's own resolver read the pod's /etc/resolv.conf and asked $FX_DNS_IP"
explain "get:     the service answered: the connection left from the pod's network"
explain "all of it in $(((t1 - t0) / 1000000)) ms, with nothing installed in the pod"

say "curl (dynamic, glibc) too: GET /echo reports the source address the service saw"
show "trace-run --target pod/$WEB -- curl -s http://$FX_SVC_NAME:$FX_PORT/echo"
pod_src=$(trun -- curl -qsS --max-time 10 "http://$FX_SVC_NAME:$FX_PORT/echo" | grep '^remote=')
echo "$pod_src" | indent
check "source address under trace-run" "remote=$FX_WEB_IP" "${pod_src%:*}"
explain "pod $WEB's own address: glibc's resolver and curl's connection went through"
explain "the pod just like Go's -- the tracer works on system calls, whatever the program"
explain "is linked against"

say "cleaning up"
fixture_down
left=$(compgen -G "/run/hermit/pods/demo$$-*" || true)
check "pods left behind" "" "$left"
[ ! -e "$FX_SOCK" ] || check "agent socket left behind" absent present
echo "  pods, agent and files removed; demo took $((SECONDS - started)) s"
