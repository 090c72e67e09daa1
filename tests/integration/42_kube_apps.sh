#!/usr/bin/env bash
# The whole app matrix of 32_trace_run_apps.sh (static Go, curl, busybox, python3; env,
# files, DNS, outgoing TCP and UDP; seccomp and ptrace; root and nobody) again, through
# the Kubernetes path: `trace-run --kubeconfig K --target pod/web` resolves the pod at
# the test API server, reads the agent's token from its Secret (root) and reaches the
# agent by WebSocket port-forward, control connection and every stream alike.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"
source "$HERMIT_ROOT/tests/kube/kube_lib.sh"
set -e
kube_up
set +e
FX_KUBECONFIG="$KUBECONFIG_ALICE"
FX_KUBE_TARGET="pod/web"
HERMIT_TEST_PREFIX="kube: "
# shellcheck source=tests/integration/32_trace_run_apps.sh
source "$HERMIT_ROOT/tests/integration/32_trace_run_apps.sh"
portforwards=$(grep -c 'portforward?ports=7070 HTTP/1.1" 101' "$KWORK/apiserver.log")
echo "port-forwards through the API server: $portforwards"
run_test "the sessions above went through the API server's port-forward" test "$portforwards" -gt 50
