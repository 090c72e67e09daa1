#!/usr/bin/env bash
# The app matrix of trace-run: real programs, each linked its own way, run on the host
# under `trace-run --target pod/web` against a real agent and real pods
# (tests/trace_fixture.sh), must see the pod's environment, files, DNS and network:
#   podprobe  static Go (CGO_ENABLED=0): Go's own resolver, raw syscalls, no libc
#   curl      glibc, dynamic: getaddrinfo reads the pod's /etc/resolv.conf and talks UDP
#   busybox   static (glibc), /bin/busybox: cat, ls, wget, nslookup (its own resolver)
#   python3   glibc, dynamic, an interpreter that opens hundreds of local files
# Every check runs with --backend seccomp and --backend ptrace, as root and as user
# nobody (token in HERMIT_TOKEN with seccomp, in a file nobody owns with ptrace), and
# compares the exact output. The "host" checks first show that without trace-run the
# same programs see none of it, which is what makes the other checks mean something.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"

PODPROBE="$BUILD/apps/podprobe"
PYTHON=/usr/bin/python3
BUSYBOX=/bin/busybox
CURL=/usr/bin/curl
for f in "$PYTHON" "$BUSYBOX" "$CURL"; do
	[ -x "$f" ] || { echo "missing $f (scripts/deps.sh)" >&2; exit 1; }
done
TRUN_TIMEOUT=40

set -e # a broken scenario fails the file, not every check with a puzzling message
fixture_up
set +e
SVC_URL="http://$FX_SVC_NAME:$FX_PORT/"

# under BACKEND USER PROGRAM [ARGS]: PROGRAM under trace-run on pod web.
# USER: root, or nobody (seccomp: HERMIT_TOKEN; ptrace: a token file nobody owns).
under() {
	local backend="$1" user="$2"
	shift 2
	echo "+ trace-run --backend $backend (as $user) -- $*" >&2
	if [ "$user" = root ]; then
		trun --backend "$backend" -- "$@"
	elif [ "$backend" = ptrace ]; then
		FX_NOBODY_TOKEN="file" trun_nobody --backend "$backend" -- "$@"
	else
		FX_NOBODY_TOKEN="env" trun_nobody --backend "$backend" -- "$@"
	fi
}

# check_out WHAT EXPECTED BACKEND USER PROGRAM [ARGS]: runs it, exit status 0, exact stdout.
check_out() {
	local what="$1" expected="$2" out rc=0
	shift 2
	out=$(under "$@") || rc=$?
	echo "stdout:"
	printf '%s\n' "$out" | sed 's/^/  | /'
	assert_eq 0 "$rc" "$what: exit status"
	assert_eq "$expected" "$out" "$what"
}

# ---- host: without trace-run, nothing of the pod is visible ----

test_host_baseline() {
	local out rc=0
	out=$("$PODPROBE" -all -timeout 3s -env HERMIT_DEMO_GREETING -read /srv/web/message.txt \
		-list /srv/web -resolve "$FX_SVC_NAME" 2>&1) && fail "podprobe succeeded on the host: $out"
	echo "$out"
	assert_contains "$out" "env HERMIT_DEMO_GREETING unset"
	assert_contains "$out" "read /srv/web/message.txt: open /srv/web/message.txt: no such file"
	assert_contains "$out" "list /srv/web: open /srv/web: no such file"
	assert_contains "$out" "resolve $FX_SVC_NAME: lookup $FX_SVC_NAME"
	# the service answers the pods' network only, not the host (which is on hermit0)
	out=$("$CURL" -qsS --connect-timeout 2 --max-time 3 "http://$FX_SVC_IP:$FX_PORT/" 2>&1) || rc=$?
	echo "curl from the host: exit $rc: $out"
	[ "$rc" -ne 0 ] || fail "the host reached the service: the GET checks would prove little"
	# nor the resolver: a query for svc.hermit.test from the host gets no answer...
	dns_query "$FX_DNS_IP" && fail "the host got an answer from the pods' resolver"
	# ...while the same query and GET from inside web's network namespace are answered
	local web_pid
	web_pid=$(pod_pid "$FX_WEB")
	nsenter -t "$web_pid" -n "$PYTHON" - "$FX_DNS_IP" <<<"$DNS_QUERY_PY" || fail "no answer in web's netns"
	nsenter -t "$web_pid" -n "$CURL" -qsS --max-time 5 "http://$FX_SVC_IP:$FX_PORT/" ||
		fail "no HTTP answer in web's netns"
}

# dns_query SERVER: true when SERVER:53 answers an A query for svc.hermit.test within 1 s
DNS_QUERY_PY='
import socket, sys
q = bytes.fromhex("12340100000100000000000003737663066865726d697404746573740000010001")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(q, (sys.argv[1], 53))
try:
    print("DNS answer of %d bytes from %s" % (len(s.recv(512)), sys.argv[1]))
except OSError as e:
    print("DNS query to %s: %s" % (sys.argv[1], e))
    sys.exit(1)
'
dns_query() {
	"$PYTHON" - "$1" <<<"$DNS_QUERY_PY"
}

# ---- podprobe: static Go ----

podprobe_env() {
	check_out "env" "env HERMIT_DEMO_GREETING=$FX_GREETING" "$@" "$PODPROBE" -env HERMIT_DEMO_GREETING
}
podprobe_read() {
	check_out "read" "$FX_MESSAGE" "$@" "$PODPROBE" -read /srv/web/message.txt
}
podprobe_list() {
	check_out "list" "$(printf 'list /srv/web %s\n' conf index.html message.txt)" \
		"$@" "$PODPROBE" -list /srv/web
}
podprobe_resolve() {
	check_out "resolve" "resolve $FX_SVC_NAME $FX_SVC_IP" "$@" "$PODPROBE" -timeout 5s -resolve "$FX_SVC_NAME"
}
podprobe_get() {
	check_out "get" "$(printf 'get %s status=200\n%s' "$SVC_URL" "$FX_SVC_BODY")" \
		"$@" "$PODPROBE" -timeout 5s -get "$SVC_URL"
}
podprobe_source() {
	local out
	out=$(under "$@" "$PODPROBE" -timeout 5s -get "${SVC_URL}echo")
	echo "$out"
	assert_eq "remote=$FX_WEB_IP" "$(sed -n 's/^\(remote=[^:]*\):.*/\1/p' <<<"$out")" \
		"source address the service saw"
}
podprobe_all() {
	# everything in one process, as the demo runs it
	check_out "all at once" "$(printf '%s\n' "env HERMIT_DEMO_GREETING=$FX_GREETING" "$FX_MESSAGE" \
		"list /srv/web conf" "list /srv/web index.html" "list /srv/web message.txt" \
		"resolve $FX_SVC_NAME $FX_SVC_IP" "get $SVC_URL status=200" "$FX_SVC_BODY")" \
		"$@" "$PODPROBE" -timeout 5s -env HERMIT_DEMO_GREETING -read /srv/web/message.txt \
		-list /srv/web -resolve "$FX_SVC_NAME" -get "$SVC_URL"
}

# ---- curl: glibc, dynamic ----

curl_get() {
	check_out "curl $SVC_URL" "$FX_SVC_BODY" "$@" "$CURL" -qsS --max-time 15 "$SVC_URL"
}
curl_source() {
	local out
	out=$(under "$@" "$CURL" -qsS --max-time 15 "${SVC_URL}echo")
	echo "$out"
	assert_eq "remote=$FX_WEB_IP" "$(sed -n 's/^\(remote=[^:]*\):.*/\1/p' <<<"$out")" \
		"source address the service saw"
}
curl_file() {
	check_out "curl file://" "$FX_MESSAGE" "$@" "$CURL" -qsS file:///srv/web/message.txt
}
# ---- busybox: static ----

busybox_cat() {
	check_out "busybox cat" "$FX_MESSAGE" "$@" "$BUSYBOX" cat /srv/web/message.txt
}
busybox_ls() {
	check_out "busybox ls" "$(printf '%s\n' conf index.html message.txt)" "$@" "$BUSYBOX" ls /srv/web
}
busybox_env() {
	# Debian's busybox has no printenv applet
	check_out "busybox sh: echo \$HERMIT_DEMO_GREETING" "$FX_GREETING" "$@" "$BUSYBOX" sh -c 'echo "$HERMIT_DEMO_GREETING"'
}
busybox_wget() {
	# no -T: Debian's static busybox 1.35 wget crashes (SIGSEGV) with it, trace-run or not
	check_out "busybox wget" "$FX_SVC_BODY" "$@" "$BUSYBOX" wget -qO- "$SVC_URL"
}
busybox_nslookup() {
	# the server lines prove which resolv.conf was read, the answer which server replied
	check_out "busybox nslookup" "$(printf 'Server:\t\t%s\nAddress:\t%s:53\n\nName:\t%s\nAddress: %s' \
		"$FX_DNS_IP" "$FX_DNS_IP" "$FX_SVC_NAME" "$FX_SVC_IP")" \
		"$@" "$BUSYBOX" nslookup "$FX_SVC_NAME"
}

# ---- python3: glibc, dynamic, interpreter ----

python_check() { # WHAT EXPECTED BACKEND USER CODE
	local what="$1" expected="$2" backend="$3" user="$4" code="$5"
	check_out "python3 $what" "$expected" "$backend" "$user" "$PYTHON" -c \
		"import os, socket, urllib.request; socket.setdefaulttimeout(15); $code"
}
python_env() {
	python_check "os.environ" "$FX_GREETING" "$@" "print(os.environ['HERMIT_DEMO_GREETING'])"
}
python_read() {
	python_check "open().read()" "$FX_MESSAGE" "$@" "print(open('/srv/web/message.txt').read(), end='')"
}
python_listdir() {
	python_check "os.listdir" "['conf', 'index.html', 'message.txt']" "$@" \
		"print(sorted(os.listdir('/srv/web')))"
}
python_getaddrinfo() {
	python_check "getaddrinfo" "$FX_SVC_IP" "$@" \
		"print(socket.getaddrinfo('$FX_SVC_NAME', $FX_PORT, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])"
}
python_urlopen() {
	python_check "urlopen" "$FX_SVC_BODY" "$@" \
		"print(urllib.request.urlopen('$SVC_URL').read().decode())"
}

run_test "host: without trace-run none of the pod is reachable" test_host_baseline

CHECKS=(
	"podprobe: env var" podprobe_env
	"podprobe: pod-only file" podprobe_read
	"podprobe: pod-only dir listing" podprobe_list
	"podprobe: resolve (Go resolver)" podprobe_resolve
	"podprobe: GET by name" podprobe_get
	"podprobe: service sees the pod's IP" podprobe_source
	"podprobe: all in one run" podprobe_all
	"curl: GET by name (glibc getaddrinfo)" curl_get
	"curl: service sees the pod's IP" curl_source
	"curl: file://" curl_file
	"busybox: cat" busybox_cat
	"busybox: ls" busybox_ls
	"busybox: sh echo \$VAR" busybox_env
	"busybox: wget by name" busybox_wget
	"busybox: nslookup" busybox_nslookup
	"python3: os.environ" python_env
	"python3: open().read()" python_read
	"python3: os.listdir" python_listdir
	"python3: socket.getaddrinfo" python_getaddrinfo
	"python3: urllib urlopen" python_urlopen
)
# APPS_ONLY=REGEX (a check's name) and APPS_VARIANTS="seccomp/root ..." narrow a run
read -ra VARIANTS <<<"${APPS_VARIANTS:-seccomp/root ptrace/root seccomp/nobody ptrace/nobody}"
for variant in "${VARIANTS[@]}"; do
	for ((i = 0; i < ${#CHECKS[@]}; i += 2)); do
		[[ -z "${APPS_ONLY:-}" || "${CHECKS[i]}" =~ $APPS_ONLY ]] || continue
		run_test "[$variant] ${CHECKS[i]}" "${CHECKS[i + 1]}" "${variant%/*}" "${variant#*/}"
	done
done
