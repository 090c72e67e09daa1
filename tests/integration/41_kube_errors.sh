#!/usr/bin/env bash
# Every failure of a cluster target is one line on trace-run's stderr naming what to fix,
# with the exit code of its kind (121 unreachable, 122 credentials/RBAC, 123 target),
# and never a hang: against the test API server (tests/kube/kube_lib.sh), whose users
# bob (no Secret) and carol (no pods/portforward) are denied by its RBAC rules, and
# whose pods are Pending, not ready, crashing, or on a node without an agent. Also the
# targets that do work: deployment/NAME picks the ready pod as kubectl does,
# pod/NAME/container/C, and `trace-run agents`.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"
source "$HERMIT_ROOT/tests/kube/kube_lib.sh"
TRUN_TIMEOUT=40
set -e
kube_up
set +e

# fails CODE TEXT [TRACE-RUN ARGS...]: one line, with TEXT, exit CODE, within 20 s
fails() {
	local code="$1" text="$2" out rc=0
	shift 2
	out=$(timeout 20 "$TRACE_RUN" "$@" -- cat /srv/web/message.txt 2>&1) || rc=$?
	echo "exit $rc: $out"
	assert_eq "$code" "$rc" "exit status"
	assert_eq 1 "$(count_lines "$out")" "lines of output"
	assert_contains "$out" "$text"
}
works() {
	local out
	out=$(krun "$@" -- cat /srv/web/message.txt 2>&1)
	echo "$out"
	assert_eq "$FX_MESSAGE" "$out"
}

test_rbac() {
	kube_config "$KWORK/bob.yaml" "    token: tok-bob"
	fails 122 'forbidden by RBAC: cannot get secrets "hermit-agent-token" in namespace hermit-system (secrets "hermit-agent-token" is forbidden: User "bob" cannot get resource "secrets" in API group "" in the namespace "hermit-system")' \
		--kubeconfig "$KWORK/bob.yaml" --target pod/web
	kube_config "$KWORK/carol.yaml" "    token: tok-carol"
	fails 122 'forbidden by RBAC: cannot create pods/portforward "hermit-agent-a1b2c" in namespace hermit-system' \
		--kubeconfig "$KWORK/carol.yaml" --target pod/web
	fails 122 "rejected the credentials" --kubeconfig "$KWORK/bob.yaml" --target pod/web \
		--context test --kubeconfig <(sed 's/tok-bob/tok-nobody-knows/' "$KWORK/bob.yaml")
}

test_not_found() {
	fails 123 "no pod nosuch in namespace shop" --kubeconfig "$KUBECONFIG_ALICE" --target pod/nosuch
	fails 123 "no deployment nosuch in namespace shop" --kubeconfig "$KUBECONFIG_ALICE" --target deployment/nosuch
	fails 123 "no pod web in namespace kube-system" --kubeconfig "$KUBECONFIG_ALICE" -n kube-system --target pod/web
	fails 123 "pod web in namespace shop has no container nope" --kubeconfig "$KUBECONFIG_ALICE" --target pod/web/container/nope
	fails 125 "bad pod name 'Web_1'" --kubeconfig "$KUBECONFIG_ALICE" --target pod/Web_1
}

test_not_running() {
	fails 123 "pod pending in namespace shop is Pending, not Running" --kubeconfig "$KUBECONFIG_ALICE" --target pod/pending
	fails 123 "container app of pod crash in namespace shop is not ready: CrashLoopBackOff" \
		--kubeconfig "$KUBECONFIG_ALICE" --target pod/crash
	fails 123 "container app of pod web-old in namespace shop is not ready" \
		--kubeconfig "$KUBECONFIG_ALICE" --target pod/web-old
	fails 121 "no hermit agent on node node-b" --kubeconfig "$KUBECONFIG_ALICE" --target pod/lost
}

test_unreachable() {
	local port
	port=$(kube_free_port)
	sed "s|$KUBE_SERVER|https://127.0.0.1:$port|" "$KUBECONFIG_ALICE" >"$KWORK/down.yaml"
	fails 121 "cannot reach the API server https://127.0.0.1:$port" --kubeconfig "$KWORK/down.yaml" --target pod/web
	sed "s|$KUBE_SERVER|https://no-such-host.invalid:6443|" "$KUBECONFIG_ALICE" >"$KWORK/nohost.yaml"
	fails 121 "cannot reach the API server https://no-such-host.invalid:6443" --kubeconfig "$KWORK/nohost.yaml" --target pod/web
	# the agent pod's port-forward reaches nothing: the error channel's words
	kube_scenario 'forward={"hermit-system/hermit-agent-a1b2c": {"7070": "127.0.0.1:'"$port"'"}}'
	local out rc=0
	out=$(timeout 20 "$TRACE_RUN" --kubeconfig "$KUBECONFIG_ALICE" --target pod/web -- true 2>&1) || rc=$?
	kube_scenario
	echo "exit $rc: $out"
	assert_eq 121 "$rc"
	assert_eq 1 "$(count_lines "$out")" "lines of output"
	assert_contains "$out" "error forwarding port 7070 to pod hermit-agent-a1b2c"
	assert_contains "$out" "cannot reach the agent at pod hermit-system/hermit-agent-a1b2c port 7070 through the API server"
	fails 125 "--agent / --agent-unix name a local agent" --kubeconfig "$KUBECONFIG_ALICE" --agent-unix "$FX_SOCK" --target pod/web
}

test_deployment() {
	# web (ready) and web-old (not ready, older): kubectl picks the ready one
	works --target deployment/web
	works --target deploy/web
	works -n shop --target pod/web/container/sidecar
	# with web gone from the deployment's pods, its best pod is not ready: an error
	kube_scenario 'deployments=[{"namespace": "shop", "name": "web", "matchLabels": {"app": "web", "track": "old"}}]'
	fails 123 "has no pods (app=web,track=old)" --kubeconfig "$KUBECONFIG_ALICE" --target deployment/web
	kube_scenario
	grep -q 'GET /apis/apps/v1/namespaces/shop/deployments/web ' "$KWORK/apiserver.log"
	grep -q 'GET /api/v1/namespaces/shop/pods?labelSelector=app%3Dweb ' "$KWORK/apiserver.log"
}

test_agents() {
	local out rc=0
	out=$("$TRACE_RUN" agents --kubeconfig "$KUBECONFIG_ALICE" 2>&1) || rc=$?
	echo "$out"
	assert_eq 0 "$rc"
	# the version is the agent's own answer, through a port-forward with the Secret's token
	assert_eq "node-a hermit-agent-a1b2c yes $("$TRACE_AGENT" --version | sed 's/ (protocol.*//')" \
		"$(tail -1 <<<"$out" | tr -s ' ')"
	# ready as a pod, but its port reaches nothing: not counted as working
	local port
	port=$(kube_free_port)
	kube_scenario 'forward={"hermit-system/hermit-agent-a1b2c": {"7070": "127.0.0.1:'"$port"'"}}'
	rc=0
	out=$("$TRACE_RUN" agents --kubeconfig "$KUBECONFIG_ALICE" 2>&1) || rc=$?
	kube_scenario
	echo "$out"
	assert_eq 121 "$rc"
	assert_contains "$(tr -s " " <<<"$out")" "node-a hermit-agent-a1b2c yes -"
	assert_contains "$out" "trace-run: agent on node node-a: error forwarding port 7070 to pod hermit-agent-a1b2c"
	# the Secret holds another token: the agent rejects it
	rc=0
	out=$(HERMIT_TOKEN=not-the-token "$TRACE_RUN" agents --kubeconfig "$KUBECONFIG_ALICE" 2>&1) || rc=$?
	echo "$out"
	assert_eq 121 "$rc"
	assert_contains "$out" "agent on node node-a:"
	# the agent pod not ready: listed as such, exit 121; a session finds no agent to use
	python3 - "$KWORK/scenario.json" <<'PY'
import json, sys
sc = json.load(open(sys.argv[1]))
for p in sc["pods"]:
    if p["namespace"] == "hermit-system":
        p["containers"][0]["ready"] = False
json.dump(sc, open(sys.argv[1] + ".new", "w"))
PY
	mv "$KWORK/scenario.json.new" "$KWORK/scenario.json"
	rc=0
	out=$("$TRACE_RUN" agents --kubeconfig "$KUBECONFIG_ALICE" 2>&1) || rc=$?
	echo "$out"
	assert_eq 121 "$rc"
	assert_eq "node-a hermit-agent-a1b2c no -" "$(tail -1 <<<"$out" | tr -s ' ')"
	fails 121 "the hermit agent on node node-a (pod hermit-system/hermit-agent-a1b2c) is Running but not ready" \
		--kubeconfig "$KUBECONFIG_ALICE" --target pod/web
	kube_scenario
}

# A hostile API server (or anyone who names pods and users in the cluster) puts escape
# sequences in what trace-run prints: a user name in a 403's message, a pod's and a
# node's name in `trace-run agents`. They reach the operator's terminal as \xNN text,
# never as the bytes that retitle, clear or answer back into it.
test_hostile_cluster_text() {
	local evil='evil\u001b]0;owned\u0007\u001b[2J\u009b6n'
	local out rc=0
	kube_scenario 'tokens={"tok-alice": "alice", "tok-evil": "'"$evil"'"}'
	kube_config "$KWORK/evil.yaml" "    token: tok-evil"
	out=$(timeout 20 "$TRACE_RUN" --kubeconfig "$KWORK/evil.yaml" --target pod/web -- true 2>&1) || rc=$?
	echo "exit $rc: $out"
	assert_eq 122 "$rc" "exit status"
	assert_contains "$out" 'User "evil\x1b]0;owned\x07\x1b[2J\xc2\x9b6n" cannot get resource'
	assert_eq 0 "$(LC_ALL=C grep -c $'[\x01-\x08\x0b-\x1f\x7f]\|\xc2[\x80-\x9f]' <<<"$out")" \
		"lines with control characters"
	python3 - "$KWORK/scenario.json" <<'PY'
import json, sys
sc = json.load(open(sys.argv[1]))
for p in sc["pods"]:
    if p["namespace"] == "hermit-system":
        p["node"] = "node-a\u001b[31m"
        p["name"] = "hermit-agent\u001b]2;owned\u0007"
json.dump(sc, open(sys.argv[1] + ".new", "w"))
PY
	mv "$KWORK/scenario.json.new" "$KWORK/scenario.json"
	rc=0
	out=$("$TRACE_RUN" agents --kubeconfig "$KUBECONFIG_ALICE" 2>&1) || rc=$?
	kube_scenario
	echo "exit $rc: $out"
	assert_contains "$out" 'node-a\x1b[31m'
	assert_contains "$out" 'hermit-agent\x1b]2;owned\x07'
	assert_eq 0 "$(LC_ALL=C grep -c $'[\x01-\x08\x0b-\x1f\x7f]' <<<"$out")" \
		"lines with control characters"
}

run_test "kube errors: RBAC denials and 401 name verb, resource, namespace" test_rbac
run_test "kube errors: no such pod, deployment, namespace, container" test_not_found
run_test "kube errors: Pending, not ready, CrashLoopBackOff, node without agent" test_not_running
run_test "kube errors: API server down or unknown, port-forward refused" test_unreachable
run_test "kube targets: deployment/NAME picks the ready pod; container/C" test_deployment
run_test "kube: trace-run agents lists the agent per node, asking each its version" test_agents
run_test "kube: escape sequences in cluster names and errors are printed as text" test_hostile_cluster_text
