#!/usr/bin/env bash
# The test API server (tests/kube/apiserver.py) is only worth what it proves if real
# clients accept it: kubectl reads its pods and Secrets (and gets its RBAC denials),
# and the official Python client (Debian's python3-kubernetes) port-forwards through
# its WebSocket implementation, a byte-exact round trip.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"
source "$HERMIT_ROOT/tests/kube/kube_lib.sh"
DEBIAN_PYTHON=/usr/bin/python3
set -e
kube_up
set +e
kc() { HOME="$KWORK/home" timeout 30 kubectl --kubeconfig "$KUBECONFIG_ALICE" --cache-dir "$KWORK/kcache" "$@"; }

test_kubectl_get_pod() {
	local out
	kc get pod web -o json >"$KWORK/pod.json" || fail "kubectl get pod failed"
	"$DEBIAN_PYTHON" - "$FX_WEB_IP" "$FX_WEB" "$KWORK/pod.json" <<'PY' || fail "pod JSON"
import json, sys
p = json.load(open(sys.argv[3]))
assert p["kind"] == "Pod" and p["metadata"]["name"] == "web", p["metadata"]
assert p["status"]["podIP"] == sys.argv[1], p["status"]
assert p["status"]["containerStatuses"][0]["containerID"] == "hermit://" + sys.argv[2]
assert p["spec"]["nodeName"] == "node-a"
print("kubectl read pod web:", p["status"]["podIP"], p["status"]["phase"])
PY
	out=$(kc get pods -l app=web --field-selector spec.nodeName=node-a -o name)
	echo "$out"
	assert_eq "$(printf 'pod/web\npod/web-old')" "$out" "label and field selectors"
	out=$(kc get deployment web -o jsonpath='{.spec.selector.matchLabels.app}')
	assert_eq web "$out" "deployment"
}

test_kubectl_get_secret() {
	local out
	out=$(kc -n hermit-system get secret hermit-agent-token -o jsonpath='{.data.token}' | base64 -d)
	assert_eq "$(cat "$FX_TOKEN_FILE")" "$out" "token"
	kube_config "$KWORK/bob.yaml" "    token: tok-bob"
	out=$(HOME="$KWORK/home" timeout 30 kubectl --kubeconfig "$KWORK/bob.yaml" --cache-dir "$KWORK/kcache-bob" \
		-n hermit-system get secret hermit-agent-token -o json 2>&1) && fail "bob read the secret"
	echo "$out"
	assert_contains "$out" 'secrets "hermit-agent-token" is forbidden: User "bob" cannot get resource "secrets"'
	out=$(kc get pod nosuch -o json 2>&1) && fail "a missing pod"
	assert_contains "$out" 'pods "nosuch" not found'
}

test_python_client_port_forward() {
	# an echo server stands in for the pod's port; the Python client port-forwards to it
	"$DEBIAN_PYTHON" - "$KUBECONFIG_ALICE" "$KWORK" <<'PY'
import json, os, socket, sys, threading
from kubernetes import client, config
from kubernetes.stream import portforward
kubeconfig, kwork = sys.argv[1], sys.argv[2]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
def echo():
    c, _ = srv.accept()
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
threading.Thread(target=echo, daemon=True).start()
sc = json.load(open(kwork + "/scenario.json"))
sc["forward"]["shop/web"] = {"9000": "127.0.0.1:%d" % srv.getsockname()[1]}
sc["rbac"]["alice"].append({"verbs": ["create"], "resources": ["pods/portforward"], "namespaces": ["shop"]})
json.dump(sc, open(kwork + "/scenario.json.new", "w"))
os.rename(kwork + "/scenario.json.new", kwork + "/scenario.json")
config.load_kube_config(config_file=kubeconfig)
api = client.CoreV1Api()
pf = portforward(api.connect_get_namespaced_pod_portforward, "web", "shop", ports="9000")
s = pf.socket(9000)
s.settimeout(60)  # a hang fails the test in a minute, not at the file's 30-min timeout
payload = os.urandom(200000)
s.sendall(payload)
got = b""
while len(got) < len(payload):
    d = s.recv(65536)
    if not d:
        break
    got += d
s.close()
assert got == payload, "round trip: %d of %d bytes, equal prefix %s" % (len(got), len(payload), got == payload[:len(got)])
print("python3-kubernetes port-forward: %d bytes round trip" % len(got))
PY
	local rc=$?
	kube_scenario
	return $rc
}

run_test "kube clients: kubectl get pod -o json, selectors, deployment" test_kubectl_get_pod
run_test "kube clients: kubectl get secret; RBAC denial and 404 as kubectl shows them" test_kubectl_get_secret
run_test "kube clients: python3-kubernetes port-forward round trip" test_python_client_port_forward
