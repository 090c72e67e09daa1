#!/usr/bin/env bash
# kubeconfig as kubectl reads it, each variant through a whole trace-run session against
# the test API server (tests/kube/kube_lib.sh): the pod is resolved through the API, the
# agent's token read from its Secret and the agent reached by WebSocket port-forward;
# the program reads a file only pod web has. A variant whose credentials or trust do
# not work fails the session, so each passing check shows the variant really was used.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"
source "$HERMIT_ROOT/tests/kube/kube_lib.sh"
TRUN_TIMEOUT=40
set -e
kube_up
set +e
P="$KWORK/pki"
b64() { base64 -w0 <"$1"; }

# session KUBECONFIG-FILE [TRACE-RUN ARGS]: the file only web has, read through it
session() {
	local cfg="$1" out rc=0
	shift
	out=$(timeout 40 "$TRACE_RUN" --kubeconfig "$cfg" "$@" --target pod/web -- cat /srv/web/message.txt 2>&1) || rc=$?
	echo "$out"
	assert_eq 0 "$rc" "trace-run exit status"
	assert_eq "$FX_MESSAGE" "$out"
}
# session_fails EXIT-CODE TEXT KUBECONFIG-FILE [ARGS]: one line on stderr, containing TEXT
session_fails() {
	local code="$1" text="$2" cfg="$3" out rc=0
	shift 3
	out=$(timeout 40 "$TRACE_RUN" --kubeconfig "$cfg" "$@" --target pod/web -- cat /srv/web/message.txt 2>&1) || rc=$?
	echo "exit $rc: $out"
	assert_eq "$code" "$rc" "exit status"
	assert_eq 1 "$(count_lines "$out")" "lines of output"
	assert_contains "$out" "$text"
}

test_token() {
	session "$KUBECONFIG_ALICE"
	kube_config "$KWORK/wrong.yaml" "    token: tok-wrong"
	session_fails 122 "rejected the credentials of user test (401 Unauthorized" "$KWORK/wrong.yaml"
}

test_token_file() {
	mkdir -p "$KWORK/tf"
	# as long as a service account's JWT, far longer than the agent's tokens
	local jwt
	jwt="eyJhbGciOiJSUzI1NiJ9.$(head -c 900 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d =)"
	kube_scenario "tokens={\"$jwt\": \"alice\"}"
	printf '%s\n' "$jwt" >"$KWORK/tf/token"
	# relative to the kubeconfig's folder, as kubectl resolves it
	kube_config "$KWORK/tf/config" "    tokenFile: token"
	local rc=0
	(cd / && session "$KWORK/tf/config") || rc=$?
	kube_scenario
	return $rc
}

test_client_cert_files() {
	kube_config "$KWORK/cert.yaml" "    client-certificate: $P/alice.crt
    client-key: $P/alice.key"
	session "$KWORK/cert.yaml"
	grep -q '^alice .*portforward' "$KWORK/apiserver.log" || fail "no port-forward as alice"
}

test_client_cert_data() {
	kube_config "$KWORK/certdata.yaml" "    client-certificate-data: $(b64 "$P/alice.crt")
    client-key-data: $(b64 "$P/alice.key")"
	session "$KWORK/certdata.yaml"
	# a certificate without its key is refused before any request
	kube_config "$KWORK/certonly.yaml" "    client-certificate-data: $(b64 "$P/alice.crt")"
	session_fails 125 "a client certificate needs its key" "$KWORK/certonly.yaml"
}

test_server_path() {
	# a server URL with a path: API calls and the port-forward's upgrade go below it
	kube_scenario 'prefix="/k8s/clusters/c-1"'
	sed "s|server: $KUBE_SERVER|server: $KUBE_SERVER/k8s/clusters/c-1/|" "$KUBECONFIG_ALICE" >"$KWORK/prefix.yaml"
	local rc=0
	session "$KWORK/prefix.yaml" || rc=$?
	kube_scenario
	grep -q 'GET /k8s/clusters/c-1/api/v1/namespaces/hermit-system/pods/hermit-agent-a1b2c/portforward' \
		"$KWORK/apiserver.log" || fail "no port-forward below the path"
	return $rc
}

test_ca_variants() {
	kube_config "$KWORK/cadata.yaml" "    token: tok-alice" \
		"    certificate-authority-data: $(b64 "$P/ca.crt")"
	session "$KWORK/cadata.yaml"
	kube_config "$KWORK/insecure.yaml" "    token: tok-alice" "    insecure-skip-tls-verify: true"
	session "$KWORK/insecure.yaml"
	# the wrong CA, and none (the system's roots): the server is not trusted
	kube_config "$KWORK/otherca.yaml" "    token: tok-alice" "    certificate-authority: $P/other-ca.crt"
	session_fails 121 "its certificate is not trusted" "$KWORK/otherca.yaml"
	kube_config "$KWORK/noca.yaml" "    token: tok-alice" ""
	session_fails 121 "its certificate is not trusted" "$KWORK/noca.yaml"
}

# an exec plugin that checks its args, env and KUBERNETES_EXEC_INFO, counts its runs
# and prints an ExecCredential of API version $1 expiring at $2
write_plugin() {
	cat >"$KWORK/plugin.sh" <<'SH'
#!/bin/sh
[ "$1" = --cluster ] && [ "$2" = test ] || { echo "plugin: bad args $*" >&2; exit 3; }
[ "$PLUGIN_ENV" = from-kubeconfig ] || { echo "plugin: no env" >&2; exit 4; }
case "$KUBERNETES_EXEC_INFO" in *"\"apiVersion\":\"$API\""*) ;; *) echo "plugin: info $KUBERNETES_EXEC_INFO" >&2; exit 5 ;; esac
echo run >>"$COUNT"
printf '{"apiVersion":"%s","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}\n' "${OUT_API:-$API}" "$TOKEN" "$EXPIRY"
SH
	chmod 0755 "$KWORK/plugin.sh"
}
exec_config() { # FILE API-VERSION TOKEN EXPIRY
	kube_config "$1" "    exec:
      apiVersion: $2
      command: ./plugin.sh
      args: [--cluster, test]
      env:
      - {name: PLUGIN_ENV, value: from-kubeconfig}
      - {name: API, value: $2}
      - {name: TOKEN, value: $3}
      - {name: EXPIRY, value: '$4'}
      - {name: COUNT, value: $KWORK/count}"
}
# a session that dials the agent several times: control, a file, and two TCP streams
multi_dial() {
	local out
	out=$(timeout 40 "$TRACE_RUN" --kubeconfig "$1" --target pod/web -- /bin/sh -c \
		"cat /srv/web/message.txt; curl -qsS --max-time 10 http://$FX_SVC_NAME:$FX_PORT/; echo; curl -qsS --max-time 10 http://$FX_SVC_NAME:$FX_PORT/" 2>&1)
	echo "$out"
	assert_eq "$(printf '%s\n%s\n%s' "$FX_MESSAGE" "$FX_SVC_BODY" "$FX_SVC_BODY")" "$out"
}

test_exec_v1_cached() {
	write_plugin
	: >"$KWORK/count"
	exec_config "$KWORK/exec1.yaml" client.authentication.k8s.io/v1 tok-exec-v1 \
		"$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
	multi_dial "$KWORK/exec1.yaml"
	# several API requests and port-forwards, one plugin run: cached until expiry
	assert_eq 1 "$(count_lines "$(cat "$KWORK/count")")" "plugin runs"
	grep -c 'portforward' "$KWORK/apiserver.log" >/dev/null
}

test_exec_v1beta1_expired() {
	write_plugin
	: >"$KWORK/count"
	exec_config "$KWORK/exec2.yaml" client.authentication.k8s.io/v1beta1 tok-exec-v1beta1 \
		"2020-01-01T00:00:00Z"
	multi_dial "$KWORK/exec2.yaml"
	# expired as it arrives: every request and port-forward runs it again
	local runs
	runs=$(count_lines "$(cat "$KWORK/count")")
	echo "plugin runs: $runs"
	[ "$runs" -ge 4 ] || fail "an expired credential was reused ($runs runs)"
	# a plugin that answers another API version than asked is refused
	exec_config "$KWORK/exec3.yaml" client.authentication.k8s.io/v1beta1 tok-exec-v1 "2030-01-01T00:00:00Z"
	sed -i 's|^      env:|      env:\n      - {name: OUT_API, value: client.authentication.k8s.io/v1}|' "$KWORK/exec3.yaml"
	session_fails 125 "answered apiVersion 'client.authentication.k8s.io/v1', the kubeconfig asked for client.authentication.k8s.io/v1beta1" "$KWORK/exec3.yaml"
}

test_kubeconfig_merge() {
	kube_config "$KWORK/m-good.yaml"
	kube_config "$KWORK/m-bad.yaml" "    token: tok-wrong"
	sed -i 's/^current-context: test/current-context: nowhere/' "$KWORK/m-bad.yaml"
	local out rc
	# first file wins for the user "test" and for current-context; missing files skipped
	out=$(KUBECONFIG="$KWORK/missing.yaml:$KWORK/m-good.yaml:$KWORK/m-bad.yaml" timeout 40 \
		"$TRACE_RUN" --kube --target pod/web -- cat /srv/web/message.txt 2>&1)
	assert_eq "$FX_MESSAGE" "$out" "good file first"
	rc=0
	out=$(KUBECONFIG="$KWORK/m-bad.yaml:$KWORK/m-good.yaml" timeout 40 \
		"$TRACE_RUN" --kube --target pod/web -- cat /srv/web/message.txt 2>&1) || rc=$?
	echo "$out"
	assert_eq 125 "$rc"
	assert_contains "$out" "context nowhere is not in kubeconfig $KWORK/m-bad.yaml, $KWORK/m-good.yaml"
	rc=0
	out=$(KUBECONFIG="$KWORK/m-bad.yaml:$KWORK/m-good.yaml" timeout 40 \
		"$TRACE_RUN" --context test --target pod/web -- cat /srv/web/message.txt 2>&1) || rc=$?
	echo "$out"
	assert_eq 122 "$rc" "bad file first: its user test wins"
	assert_contains "$out" "401 Unauthorized"
	# --kubeconfig: that file only, $KUBECONFIG ignored
	out=$(KUBECONFIG="$KWORK/m-bad.yaml" timeout 40 "$TRACE_RUN" --kubeconfig "$KWORK/m-good.yaml" \
		--target pod/web -- cat /srv/web/message.txt 2>&1)
	assert_eq "$FX_MESSAGE" "$out" "--kubeconfig over KUBECONFIG"
	# ~/.kube/config when nothing else is named
	mkdir -p "$KWORK/home/.kube"
	cp "$KWORK/m-good.yaml" "$KWORK/home/.kube/config"
	out=$(env -u KUBECONFIG HOME="$KWORK/home" timeout 40 "$TRACE_RUN" --kube --target pod/web -- \
		cat /srv/web/message.txt 2>&1)
	assert_eq "$FX_MESSAGE" "$out" "~/.kube/config"
}

test_context_and_namespace() {
	kube_config "$KWORK/ctx.yaml" "    token: tok-wrong"
	cat >>"$KWORK/ctx.yaml" <<YAML
- name: alice
  user:
    token: tok-alice
YAML
	sed -i "s/^contexts:/contexts:\n- name: good\n  context: {cluster: test, user: alice, namespace: shop}\n- name: elsewhere\n  context: {cluster: test, user: alice, namespace: default}/" "$KWORK/ctx.yaml"
	cat "$KWORK/ctx.yaml"
	session_fails 122 "401 Unauthorized" "$KWORK/ctx.yaml"
	session "$KWORK/ctx.yaml" --context good
	# the context's namespace is the default for -n; -n overrides it
	session_fails 123 "no pod web in namespace default" "$KWORK/ctx.yaml" --context elsewhere
	session "$KWORK/ctx.yaml" --context elsewhere -n shop
	session_fails 125 "context nope is not in kubeconfig" "$KWORK/ctx.yaml" --context nope
}

test_in_cluster() {
	local sa="$KWORK/sa"
	mkdir -p "$sa"
	echo tok-alice >"$sa/token"
	cp "$P/ca.crt" "$sa/ca.crt"
	echo shop >"$sa/namespace"
	local out
	out=$(env -u KUBECONFIG HOME=/nonexistent HERMIT_SERVICEACCOUNT_DIR="$sa" \
		KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="${KUBE_SERVER##*:}" \
		timeout 40 "$TRACE_RUN" --kube --target pod/web -- cat /srv/web/message.txt 2>&1)
	assert_eq "$FX_MESSAGE" "$out" "in-cluster"
	out=$(env -u KUBECONFIG -u KUBERNETES_SERVICE_HOST HOME=/nonexistent timeout 40 "$TRACE_RUN" --kube \
		--target pod/web -- true 2>&1) && fail "no config at all succeeded"
	assert_contains "$out" "no kubeconfig: give --kubeconfig"
}

run_test "kube config: token; a rejected token is one line" test_token
run_test "kube config: tokenFile relative to the kubeconfig" test_token_file
run_test "kube config: client certificate and key files" test_client_cert_files
run_test "kube config: client certificate and key data" test_client_cert_data
run_test "kube config: a server URL with a path" test_server_path
run_test "kube config: CA data, insecure-skip-tls-verify; wrong or no CA refused" test_ca_variants
run_test "kube config: exec plugin v1, args and env, cached until expiry" test_exec_v1_cached
run_test "kube config: exec plugin v1beta1, expired credentials rerun" test_exec_v1beta1_expired
run_test "kube config: KUBECONFIG merge order, --kubeconfig, ~/.kube/config" test_kubeconfig_merge
run_test "kube config: --context, the context's namespace, -n" test_context_and_namespace
run_test "kube config: in-cluster service account" test_in_cluster
