# shellcheck shell=bash
# A Kubernetes "cluster" for the kube tests (tests/integration/4x_kube_*.sh), sourced
# after tests/lib.sh, tests/agent/agent_lib.sh and tests/trace_fixture.sh. What is real
# and what stands in is in tests/kube/README.md. kube_up builds on the trace fixture:
#   CA        a CA made for this run (openssl); the API server's certificate
#             (127.0.0.1) and client certificates for user alice are signed by it
#   kagent    a real trace-agent on a TCP loopback port (as in the DaemonSet's pod),
#             sharing the fixture's token; the API server port-forwards to it
#   apiserver tests/kube/apiserver.py on 127.0.0.1:KPORT with KWORK/scenario.json:
#             namespace shop: pod web (= trace-pod pod FX_WEB, container ID
#             hermit://FX_WEB, IP FX_WEB_IP, node node-a, labels app=web), web-old
#             (Running, container not ready), pending (Pending), crash
#             (CrashLoopBackOff), lost (node-b, which has no agent); deployment web
#             (app=web: web and web-old) and its ReplicaSet; namespace hermit-system:
#             the agent pod hermit-agent-a1b2c (node-a) and Secret hermit-agent-token
#   users     alice (token tok-alice, client cert, exec plugin): what kube/deploy's
#             hermit-user ClusterRole grants; bob: pods only (no Secret); carol: no
#             pods/portforward
KUBE_APISERVER_PY="$HERMIT_ROOT/tests/kube/apiserver.py"
KWORK=""
KUBE_NS=shop

kube_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

kube_certs() {
	local d="$KWORK/pki"
	mkdir -p "$d"
	local o=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
	openssl req -x509 "${o[@]}" -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 \
		-subj /CN=hermit-test-ca 2>/dev/null
	openssl req -x509 "${o[@]}" -keyout "$d/other-ca.key" -out "$d/other-ca.crt" -days 2 \
		-subj /CN=some-other-ca 2>/dev/null
	kube_cert server "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
	kube_cert alice "/O=developers/CN=alice" "extendedKeyUsage=clientAuth"
	chmod 0644 "$d"/*
}

kube_cert() { # NAME SUBJECT EXTENSIONS
	local d="$KWORK/pki"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$1.key" \
		-out "$d/$1.csr" -subj "$2" 2>/dev/null
	printf '%s\n' "$3" >"$d/$1.ext"
	openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
		-out "$d/$1.crt" -days 2 -extfile "$d/$1.ext" 2>/dev/null
}

# kube_scenario [KEY=JSON]...: (re)write the scenario; the API server reloads it
kube_scenario() {
	KWORK="$KWORK" FX_WEB="$FX_WEB" FX_WEB_IP="$FX_WEB_IP" KAGENT_PORT="$KAGENT_PORT" \
		TOKEN="$(cat "$FX_TOKEN_FILE")" python3 - "$@" <<'PY'
import json, os, sys
e = os.environ
alice = [
    {"verbs": ["get", "list"], "resources": ["pods", "deployments", "replicasets", "nodes"]},
    {"verbs": ["get"], "resources": ["secrets"], "namespaces": ["hermit-system"]},
    {"verbs": ["create"], "resources": ["pods/portforward"], "namespaces": ["hermit-system"]},
]
sc = {
    "tokens": {"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol",
               "tok-exec-v1": "alice", "tok-exec-v1beta1": "alice"},
    "rbac": {"alice": alice,
             "bob": [{"verbs": ["get", "list"], "resources": ["pods", "deployments"]}],
             "carol": alice[:2]},
    "nodes": ["node-a", "node-b"],
    "pods": [
        {"namespace": "shop", "name": "web", "node": "node-a", "ip": e["FX_WEB_IP"],
         "labels": {"app": "web"}, "replicaset": "web-5d4f8", "readySince": "2026-12-01T10:00:00Z",
         "containers": [{"name": "app", "id": "hermit://" + e["FX_WEB"]},
                        {"name": "sidecar", "id": "hermit://" + e["FX_WEB"]}]},
        {"namespace": "shop", "name": "web-old", "node": "node-a", "ip": "10.213.250.2",
         "labels": {"app": "web"}, "replicaset": "web-5d4f8", "created": "2026-11-01T10:00:00Z",
         "containers": [{"name": "app", "id": "hermit://nonexistent", "ready": False}]},
        {"namespace": "shop", "name": "pending", "phase": "Pending", "node": "",
         "containers": [{"name": "app", "id": "", "ready": False}]},
        {"namespace": "shop", "name": "crash", "node": "node-a", "ip": "10.213.250.3",
         "containers": [{"name": "app", "id": "containerd://" + "ab" * 32, "ready": False,
                         "waiting": "CrashLoopBackOff"}]},
        {"namespace": "shop", "name": "lost", "node": "node-b", "ip": "10.213.250.4",
         "containers": [{"name": "app", "id": "containerd://" + "cd" * 32}]},
        {"namespace": "hermit-system", "name": "hermit-agent-a1b2c", "node": "node-a",
         "ip": "10.213.250.9", "labels": {"app.kubernetes.io/name": "hermit-agent",
                                          "app.kubernetes.io/version": "0.1"},
         "containers": [{"name": "agent", "id": "containerd://" + "ef" * 32}]},
    ],
    "deployments": [{"namespace": "shop", "name": "web", "matchLabels": {"app": "web"},
                     "replicas": 2}],
    "replicasets": [{"namespace": "shop", "name": "web-5d4f8", "deployment": "web",
                     "matchLabels": {"app": "web"}}],
    "secrets": [{"namespace": "hermit-system", "name": "hermit-agent-token",
                 "data": {"token": e["TOKEN"]}}],
    "forward": {"hermit-system/hermit-agent-a1b2c": {"7070": "127.0.0.1:" + e["KAGENT_PORT"]}},
}
for kv in sys.argv[1:]:
    k, v = kv.split("=", 1)
    sc[k] = json.loads(v)
tmp = e["KWORK"] + "/scenario.json.tmp"
with open(tmp, "w") as f:
    json.dump(sc, f, indent=1)
os.rename(tmp, e["KWORK"] + "/scenario.json")
PY
}

# kube_config FILE [USER-YAML] [CLUSTER-EXTRA-YAML]: a kubeconfig with one context
# "test" (namespace shop) whose user is USER-YAML (default: token tok-alice)
kube_config() {
	local file="$1" user="${2:-    token: tok-alice}" cluster="${3-    certificate-authority: $KWORK/pki/ca.crt}"
	cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: $KUBE_SERVER
$cluster
contexts:
- name: test
  context:
    cluster: test
    user: test
    namespace: $KUBE_NS
current-context: test
users:
- name: test
  user:
$user
YAML
	chmod 0644 "$file"
}

kube_up() {
	fixture_up
	[ -z "$KWORK" ] || return 0
	KWORK=$(mktemp -d /tmp/hermit-kube.XXXXXX)
	chmod 0755 "$KWORK"
	on_exit kube_down "$KWORK" "$BASHPID"
	kube_certs
	cp "$FX_TOKEN_FILE" "$KWORK/token"
	KAGENT_PORT=$(kube_free_port)
	agent_start "$KWORK" kagent --listen "127.0.0.1:$KAGENT_PORT"
	kube_scenario
	python3 "$KUBE_APISERVER_PY" --scenario "$KWORK/scenario.json" --cert "$KWORK/pki/server.crt" \
		--key "$KWORK/pki/server.key" --client-ca "$KWORK/pki/ca.crt" \
		--port-file "$KWORK/port" --log "$KWORK/apiserver.log" </dev/null \
		>>"$KWORK/apiserver.log" 2>&1 &
	echo $! >"$KWORK/apiserver.pid"
	wait_until 100 test -s "$KWORK/port" || { cat "$KWORK/apiserver.log" >&2; fail "API server did not start"; }
	KUBE_SERVER="https://127.0.0.1:$(cat "$KWORK/port")"
	KUBECONFIG_ALICE="$KWORK/alice.yaml"
	kube_config "$KUBECONFIG_ALICE"
	echo "kube: API server $KUBE_SERVER, agent 127.0.0.1:$KAGENT_PORT, work $KWORK" >&2
}

kube_down() { # KWORK OWNER
	[ "$2" = "$BASHPID" ] || return 0
	[ -f "$1/apiserver.pid" ] && kill "$(cat "$1/apiserver.pid")" 2>/dev/null
	[ -f "$1/kagent.pid" ] && agent_stop "$1" kagent >/dev/null 2>&1
	case "$1" in /tmp/hermit-kube.?*) rm -rf -- "$1" ;; esac
}

# krun [TRACE-RUN OPTIONS] -- PROGRAM: trace-run through the API server as alice
krun() {
	timeout "${TRUN_TIMEOUT:-60}" "$TRACE_RUN" --kubeconfig "$KUBECONFIG_ALICE" "$@"
}
