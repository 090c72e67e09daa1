#!/usr/bin/env bash
# kube/deploy renders with kubectl's own kustomize, and what it renders is what the
# agent needs on a node and no more: the DaemonSet's required fields, capabilities
# instead of privileged, hostPID, the mounts, tolerations for every node, requests and
# limits, the `trace-agent status` probe against the port trace-run port-forwards to,
# and users' RBAC with the least verbs (the Secret by name only). Also: the probe's
# command line works against a real agent listening as the DaemonSet starts it.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
PYTHON=/usr/bin/python3

test_kustomize() {
	local out
	out=$(mktemp)
	on_exit rm -f "$out"
	kubectl kustomize "$HERMIT_ROOT/kube/deploy" >"$out"
	"$PYTHON" - "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
def need(cond, what):
    if not cond:
        sys.exit("assertion failed: " + what)
    print("ok:", what)
need(("Namespace", "hermit-system") in by, "namespace hermit-system")
ds = by[("DaemonSet", "hermit-agent")]
need(ds["metadata"]["namespace"] == "hermit-system", "DaemonSet in hermit-system")
spec = ds["spec"]["template"]["spec"]
labels = ds["spec"]["template"]["metadata"]["labels"]
need(labels.get("app.kubernetes.io/name") == "hermit-agent", "label trace-run selects agents by")
need(ds["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "hermit-agent"}, "selector")
need(spec.get("hostPID") is True, "hostPID")
need({"operator": "Exists"} in spec.get("tolerations", []), "tolerates every taint")
need(spec.get("automountServiceAccountToken") is False, "no API token in the agent")
c = [c for c in spec["containers"] if c["name"] == "agent"][0]
sc = c["securityContext"]
need(not sc.get("privileged"), "not privileged")
caps = set(sc["capabilities"]["add"])
need({"SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "BPF", "PERFMON"} <= caps, "capabilities")
need(sc["capabilities"]["drop"] == ["ALL"], "drops the rest")
args = c["args"]
need(args[args.index("--listen") + 1] == "127.0.0.1:7070", "listens on the pod's loopback, port 7070")
need("--no-unix" in args, "no unix socket")
tf = args[args.index("--token-file") + 1]
probe = c["livenessProbe"]["exec"]["command"]
need(probe[:2] == ["trace-agent", "status"] and "127.0.0.1:7070" in probe and tf in probe,
     "liveness probe: trace-agent status on the agent's port with its token")
need(c["resources"]["requests"] and c["resources"]["limits"].get("memory"), "requests and limits")
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
vols = {v["name"]: v for v in spec["volumes"]}
need(vols[mounts["/sys/fs/bpf"]["name"]]["hostPath"]["path"] == "/sys/fs/bpf", "bpffs mounted")
need(vols[mounts["/run/containerd"]["name"]]["hostPath"]["path"] == "/run/containerd", "containerd state")
need(mounts["/run/containerd"].get("readOnly") is True, "containerd state mounted read-only")
need(args[args.index("--containerd-state") + 1].startswith("/run/containerd/"),
     "--containerd-state below the mounted /run/containerd")
tok = vols[[m for m in c["volumeMounts"] if tf.startswith(m["mountPath"])][0]["name"]]
need(tok["secret"]["secretName"] == "hermit-agent-token", "token from the Secret")
need(("Secret", "hermit-agent-token") in by, "the token Secret")
role = by[("Role", "hermit-user")]
verbs = {(tuple(r["resources"]), tuple(r["verbs"]), tuple(r.get("resourceNames", []))) for r in role["rules"]}
need((("secrets",), ("get",), ("hermit-agent-token",)) in verbs, "Secret readable by name only")
need((("pods/portforward",), ("create",), ()) in verbs, "port-forward: create")
for r in role["rules"] + by[("ClusterRole", "hermit-user-targets")]["rules"]:
    need(not set(r["verbs"]) & {"*", "create", "update", "patch", "delete"} or r["resources"] == ["pods/portforward"],
         "no write verbs on %s" % r["resources"])
PY
}

# the probe as the DaemonSet runs it, against an agent started with the DaemonSet's args
test_probe_command() {
	local dir port
	dir=$(mktemp -d /tmp/hermit-deploy.XXXXXX)
	on_exit rm -rf "$dir"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
	"$TRACE_AGENT" --no-unix --listen "127.0.0.1:$port" --token-file "$dir/token" 2>"$dir/log" &
	local pid=$!
	on_exit kill "$pid"
	wait_until 100 grep -q ' ready (pid ' "$dir/log" || { cat "$dir/log"; fail "agent did not start"; }
	"$TRACE_AGENT" status --agent "127.0.0.1:$port" --token-file "$dir/token" || fail "probe failed"
	echo wrong >"$dir/bad"
	"$TRACE_AGENT" status --agent "127.0.0.1:$port" --token-file "$dir/bad" && fail "probe passed with a wrong token"
	kill "$pid"
	wait "$pid"
	"$TRACE_AGENT" status --agent "127.0.0.1:$port" --token-file "$dir/token" && fail "probe passed with no agent"
	true
}

run_test "kube/deploy: kubectl kustomize renders; DaemonSet and RBAC fields" test_kustomize
run_test "kube/deploy: the liveness probe's command against a real agent" test_probe_command
