#!/usr/bin/env bash
# trace-run hardening against a real agent and pods (tests/trace_fixture.sh): the
# program's process tree dies with trace-run even on SIGKILL; loader and shell start-up
# variables are never imported from the pod; remote files have a size limit and big
# ones are shared between opens; one clear line when the pod or the agent goes away
# mid-session and when a setuid program cannot gain privileges.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
source "$HERMIT_ROOT/tests/trace_fixture.sh"

set -e
fixture_up
set +e
HD=$(mktemp -d "$FX_WORK/hardening.XXXXXX") # removed with the fixture
chmod 0755 "$HD"

# pids_alive PID...: the ones that still exist and are not zombies
pids_alive() {
	local p state
	for p in "$@"; do
		state=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
		[ "$state" = Z ] || echo "$p"
	done
}

# kill -9 of trace-run takes the program's whole tree with it: the program, a subshell
# and their sleeps, grandchildren included, none of which trace-run's death signals.
kill9_tree() {
	local backend="$1" pidfile="$HD/pids-$1" tr alive
	rm -f "$pidfile"
	"$TRACE_RUN" --agent-unix "$FX_SOCK" --token-file "$FX_TOKEN_FILE" --target "pod/$FX_WEB" \
		--backend "$backend" -- sh -c "echo \$\$ >>$pidfile
			(sleep 300 & echo \$! >>$pidfile; sleep 301 & echo \$! >>$pidfile; wait) &
			echo \$! >>$pidfile; sleep 302 & echo \$! >>$pidfile; wait" </dev/null &
	tr=$!
	wait_until 100 sh -c "[ \$(cat '$pidfile' | wc -l) -ge 5 ]" || fail "the program did not start its tree"
	local pids
	mapfile -t pids <"$pidfile"
	echo "trace-run $tr, program tree: ${pids[*]}"
	assert_eq 5 "$(pids_alive "${pids[@]}" | wc -l)" "processes alive before the kill"
	kill -9 "$tr"
	wait "$tr" 2>/dev/null || true # 137: killed
	local tries=20
	while [ -n "$(pids_alive "${pids[@]}")" ] && [ $((tries -= 1)) -gt 0 ]; do sleep 0.1; done
	[ -z "$(pids_alive "${pids[@]}")" ] ||
		fail "still alive 2 s after kill -9 of trace-run: $(pids_alive "${pids[@]}" | tr '\n' ' ')"
}

test_kill9_seccomp() { kill9_tree seccomp; }
test_kill9_ptrace() { kill9_tree ptrace; }

# the guard between trace-run and the program keeps exit statuses and orphans as they were
test_exit_status_kept() {
	local b rc out
	for b in seccomp ptrace; do
		rc=0
		trun --backend "$b" -- sh -c 'exit 7' || rc=$?
		assert_eq 7 "$rc" "$b: exit status"
		rc=0
		trun --backend "$b" -- sh -c 'kill -TERM $$' 2>/dev/null || rc=$?
		assert_eq 143 "$rc" "$b: status of a signalled program"
		rc=0
		out=$(trun --backend "$b" -- sh -c '(sleep 0.5; echo orphan-done) & exit 3') || rc=$?
		assert_eq 3 "$rc" "$b: exit status with an orphan left behind"
		assert_eq orphan-done "$out" "$b: trace-run waited for the orphan"
	done
}

# A pod whose environment would run the pod's code on this machine: LD_AUDIT and
# LD_PRELOAD name a library only the pod has (served by trace-run like any pod file, and
# not named *.so, which would stay local), BASH_ENV a script only the pod has. Each
# leaves a marker on the host when it runs.
test_env_code_not_imported() {
	local pod marker="$HD/pod-code-ran" out
	pod=$(pod_name envx)
	on_exit pod_cleanup "$pod"
	mkdir -p "$FX_ROOTFS/srv/evil"
	printf '#include <fcntl.h>\n#include <unistd.h>\n
		static void mark(void) { close(open("%s", O_CREAT | O_WRONLY | O_CLOEXEC, 0644)); }
		__attribute__((constructor)) static void on_load(void) { mark(); }
		unsigned int la_version(unsigned int v) { mark(); return v; }\n' "$marker" >"$HD/evil.c"
	cc -shared -fPIC -o "$FX_ROOTFS/srv/evil/audit.lib" "$HD/evil.c" || fail "cannot build the library"
	printf 'touch %s\n' "$marker" >"$FX_ROOTFS/srv/evil/bashenv"
	[ ! -e /srv/evil ] || fail "the host has a /srv/evil: the check proves nothing"
	tp run -d --name "$pod" --rootfs "$FX_ROOTFS" --env LD_AUDIT=/srv/evil/audit.lib \
		--env LD_PRELOAD=/srv/evil/audit.lib --env BASH_ENV=/srv/evil/bashenv \
		--env ENV=/srv/evil/bashenv --env PYTHONSTARTUP=/srv/evil/bashenv \
		--env HARMLESS=pod-value -- sleep 100000 </dev/null >/dev/null
	local run=("$TRACE_RUN" --agent-unix "$FX_SOCK" --token-file "$FX_TOKEN_FILE" --target "pod/$pod")

	out=$(timeout 30 "${run[@]}" -- /usr/bin/env) || fail "env failed under trace-run: $out"
	assert_contains "$out" "HARMLESS=pod-value" "the pod's ordinary variables"
	local v
	for v in LD_AUDIT LD_PRELOAD BASH_ENV ENV PYTHONSTARTUP; do
		! grep -q "^$v=" <<<"$out" || fail "$v was imported: $(grep "^$v=" <<<"$out")"
	done
	out=$(timeout 30 "${run[@]}" -- bash -c 'id -u; echo bash ran') || fail "bash failed: $out"
	assert_contains "$out" "bash ran"
	[ ! -e "$marker" ] || fail "the pod's code ran on the host"

	# the attack is real: named exactly, BASH_ENV comes in and the pod's script runs
	out=$(timeout 30 "${run[@]}" --env-include BASH_ENV -- bash -c 'echo bash ran') ||
		fail "bash failed: $out"
	[ -e "$marker" ] || fail "an explicitly included BASH_ENV did not apply"
	rm -f "$marker"
	# and so does the loader's, given with -e
	out=$(timeout 30 "${run[@]}" -e LD_AUDIT=/srv/evil/audit.lib -- /usr/bin/true) ||
		fail "true failed: $out"
	[ -e "$marker" ] || fail "-e LD_AUDIT did not apply"
}

# A pod's configuration that makes a local tool run commands stays out: git's
# core.fsmonitor from the pod's /etc/gitconfig or from GIT_CONFIG_* variables would run
# the pod's command on this machine at `git status`.
test_pod_config_not_run() {
	local pod marker="$HD/pod-git-ran" repo="$HD/repo" out
	command -v git >/dev/null || fail "git is not installed (scripts/deps.sh)"
	pod=$(pod_name gitx)
	on_exit pod_cleanup "$pod"
	on_exit rm -f "$FX_ROOTFS/etc/gitconfig"
	printf '[core]\n\tfsmonitor = "touch %s; false" # hermit-test\n' "$marker" >"$FX_ROOTFS/etc/gitconfig"
	git init -q "$repo"
	tp run -d --name "$pod" --rootfs "$FX_ROOTFS" --env GIT_CONFIG_COUNT=1 \
		--env GIT_CONFIG_KEY_0=core.fsmonitor --env "GIT_CONFIG_VALUE_0=touch $marker; false" \
		-- sleep 100000 </dev/null >/dev/null
	local run=("$TRACE_RUN" --agent-unix "$FX_SOCK" --token-file "$FX_TOKEN_FILE" --target "pod/$pod")
	out=$(cd "$repo" && timeout 30 "${run[@]}" -- git status 2>&1) || fail "git status failed: $out"
	[ ! -e "$marker" ] || fail "the pod's git configuration ran a command on the host"
	out=$(timeout 30 "${run[@]}" -- /usr/bin/env) || fail "env failed: $out"
	! grep -q '^GIT_CONFIG' <<<"$out" || fail "GIT_CONFIG_* imported: $out"
	# the attack is real: with the pod's /etc/gitconfig asked for, git runs its command
	echo '{"feature":{"fs":{"read_only":["^/etc/gitconfig$"]}}}' >"$HD/gitcfg.json"
	out=$(cd "$repo" && timeout 30 "${run[@]}" -f "$HD/gitcfg.json" -- git status 2>&1) || true
	[ -e "$marker" ] || fail "the pod's /etc/gitconfig, asked for, did not apply: $out"
	rm -f "$marker"
	# and so does the variable, named exactly
	out=$(cd "$repo" && timeout 30 "${run[@]}" --env-include GIT_CONFIG_COUNT \
		--env-include GIT_CONFIG_KEY_0 --env-include GIT_CONFIG_VALUE_0 -- git status 2>&1) || true
	[ -e "$marker" ] || fail "GIT_CONFIG_* named exactly did not apply: $out"
}

# opens PATH three times (the last after the marker file FLAG appears, if given) and
# prints per open: errno or "ok", the memfd's local inode, the content's sha256
OPEN_PROBE='
import hashlib, os, sys, time
path, flag = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
for i in range(3):
    if i == 2 and flag:
        open(flag, "w").close()
        while os.path.exists(flag):
            time.sleep(0.05)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        print("open", i, "errno", e.errno)
        continue
    ino = os.stat("/proc/self/fd/%d" % fd).st_ino  # /proc is local: the memfd itself
    data = os.pread(fd, 64 << 20, 0)
    print("open", i, "ok", ino, hashlib.sha256(data).hexdigest())
    time.sleep(0.1)  # past the 5 ms cache of repeated opens
'

# A remote file over feature.fs.max_file_size is not read: the open fails with EFBIG
# and trace-run says which setting refused it, once, on its own stderr.
test_max_file_size() {
	mkdir -p "$FX_ROOTFS/srv/big"
	head -c $((3 << 20)) /dev/urandom >"$FX_ROOTFS/srv/big/3m.bin"
	local out
	out=$(trun --max-file-size 2M -- python3 -c "$OPEN_PROBE" /srv/big/3m.bin 2>"$HD/err") ||
		fail "the probe failed: $out $(cat "$HD/err")"
	cat "$HD/err"
	echo "$out"
	assert_eq 3 "$(grep -c 'errno 27$' <<<"$out")" "opens failing with EFBIG (27)"
	grep -q 'trace-run warn: open /srv/big/3m.bin: .*EFBIG.*max_file_size' "$HD/err" ||
		fail "no trace-run line naming max_file_size: $(cat "$HD/err")"
	assert_eq 1 "$(wc -l <"$HD/err")" "lines on stderr for three opens"
	# the config key does the same; the limit lets smaller files through
	printf '{"feature": {"fs": {"max_file_size": "2M"}}}\n' >"$HD/max.json"
	out=$(trun -f "$HD/max.json" -- python3 -c "$OPEN_PROBE" /srv/big/3m.bin 2>/dev/null)
	assert_eq 3 "$(grep -c 'errno 27$' <<<"$out")" "opens failing with EFBIG (config key)"
	out=$(trun --max-file-size 4M -- python3 -c "$OPEN_PROBE" /srv/big/3m.bin 2>/dev/null)
	assert_eq 3 "$(grep -c ' ok ' <<<"$out")" "opens under a 4M limit"
}

# Two opens of a big unchanged file share one copy (the same memfd inode) with the same
# content as the pod's file; once the file changes in the pod, the next open reads the
# new version.
test_big_file_shared() {
	mkdir -p "$FX_ROOTFS/srv/big"
	local file="$FX_ROOTFS/srv/big/16m.bin" flag="$HD/changed" out want new
	head -c $((16 << 20)) /dev/urandom >"$file"
	want=$(sha256sum "$file" | cut -d' ' -f1)
	rm -f "$flag"
	trun -- python3 -c "$OPEN_PROBE" /srv/big/16m.bin "$flag" >"$HD/out" 2>"$HD/err" &
	local tr=$!
	wait_until 300 test -e "$flag" || fail "the probe did not get to its third open"
	head -c $((16 << 20)) /dev/urandom >"$file.new"
	mv "$file.new" "$file"
	new=$(sha256sum "$file" | cut -d' ' -f1)
	rm -f "$flag"
	wait "$tr" || fail "the probe failed: $(cat "$HD/err")"
	cat "$HD/out"
	local -a o0 o1 o2
	read -ra o0 < <(sed -n 1p "$HD/out")
	read -ra o1 < <(sed -n 2p "$HD/out")
	read -ra o2 < <(sed -n 3p "$HD/out")
	assert_eq "$want" "${o0[4]}" "content of the first open"
	assert_eq "$want" "${o1[4]}" "content of the second open"
	assert_eq "${o0[3]}" "${o1[3]}" "memfd inode of the two opens (one shared copy)"
	assert_eq "$new" "${o2[4]}" "content after the pod's file changed"
	[ "${o2[3]}" != "${o0[3]}" ] || fail "the changed file was served from the old copy"
}

# Opens two pod files, connects twice to svc and sends a datagram, before and after FLAG
# is removed (the test takes the pod or the agent away meanwhile); one line per attempt
# with the errno.
SESSION_PROBE='
import os, socket, sys, time
flag, host = sys.argv[1], sys.argv[2]
def attempt(tag):
    for path in ("/srv/web/message.txt", "/srv/web/index.html"):
        try:
            open(path).read()
            print(tag, "open ok")
        except OSError as e:
            print(tag, "open errno", e.errno)
    for i in range(2):
        s = socket.socket()
        s.settimeout(10)
        try:
            s.connect((host, 8080))
            print(tag, "connect ok")
        except OSError as e:
            print(tag, "connect errno", e.errno)
        s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(b"x", (host, 9))
        print(tag, "udp ok")
    except OSError as e:
        print(tag, "udp errno", e.errno)
    u.close()
    sys.stdout.flush()
attempt("before")
open(flag, "w").close()
while os.path.exists(flag):
    time.sleep(0.05)
attempt("after")
'

# session_probe AGENT-SOCK TOKEN TARGET BREAK-COMMAND...: runs SESSION_PROBE and breaks
# the session with the command once the "before" round is done; output in $HD/out,
# trace-run's stderr in $HD/err
session_probe() {
	local sock="$1" token="$2" target="$3" flag="$HD/flag" tr
	shift 3
	rm -f "$flag"
	timeout 60 "$TRACE_RUN" --agent-unix "$sock" --token-file "$token" --target "$target" -- \
		python3 -c "$SESSION_PROBE" "$flag" "$FX_SVC_IP" >"$HD/out" 2>"$HD/err" &
	tr=$!
	wait_until 300 test -e "$flag" || fail "the probe did not start: $(cat "$HD/err")"
	"$@"
	# said when it happens, before the program's next remote call
	wait_until 50 grep -q 'trace-run warn: ' "$HD/err" ||
		fail "nothing from trace-run while the program made no remote call"
	rm -f "$flag"
	wait "$tr" || fail "trace-run failed: $(cat "$HD/err")"
	cat "$HD/out" "$HD/err"
	assert_eq 5 "$(grep -c '^before .* ok$' "$HD/out")" "calls that worked before"
}

# The target pod exits mid-session: file calls fail with ESRCH, connects with
# ENETUNREACH, and trace-run says why in one line, once.
test_target_exits_mid_session() {
	local pod
	pod=$(pod_name gone)
	on_exit pod_cleanup "$pod"
	tp run -d --name "$pod" --rootfs "$FX_ROOTFS" -- sleep 100000 </dev/null >/dev/null
	session_probe "$FX_SOCK" "$FX_TOKEN_FILE" "pod/$pod" tp rm -f "$pod"
	assert_eq 2 "$(grep -c '^after open errno 3$' "$HD/out")" "opens failing with ESRCH"
	assert_eq 2 "$(grep -c '^after connect errno 101$' "$HD/out")" "connects failing with ENETUNREACH"
	assert_eq 1 "$(grep -c '^after udp errno 101$' "$HD/out")" "datagrams failing with ENETUNREACH"
	assert_eq 1 "$(wc -l <"$HD/err")" "lines from trace-run"
	grep -q "^[0-9:.]* trace-run warn: session ended: target pod/$pod .*exited; .*ESRCH.*ENETUNREACH" "$HD/err" ||
		fail "no line saying the target exited"
}

# The agent dies mid-session: file calls fail with EIO; connects with ENETUNREACH, not
# with the ECONNRESET / ECONNREFUSED a server would give; one line says so.
test_agent_dies_mid_session() {
	agent_start "$HD" agent2
	on_exit agent_stop "$HD" agent2
	session_probe "$HD/agent2.sock" "$HD/token" "pod/$FX_WEB" kill -9 "$(agent_pid "$HD" agent2)"
	assert_eq 2 "$(grep -c '^after open errno 5$' "$HD/out")" "opens failing with EIO"
	assert_eq 2 "$(grep -c '^after connect errno 101$' "$HD/out")" "connects failing with ENETUNREACH"
	assert_eq 1 "$(grep -c '^after udp errno 101$' "$HD/out")" "datagrams failing with ENETUNREACH"
	assert_eq 1 "$(wc -l <"$HD/err")" "lines from trace-run"
	grep -q "^[0-9:.]* trace-run warn: lost the agent (.*); .*EIO.*ENETUNREACH" "$HD/err" ||
		fail "no line saying the agent is gone"
}

# A setuid program gains nothing under no_new_privs; trace-run says so once per program.
test_setuid_explained() {
	printf '#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf("euid %%d\\n", (int)geteuid()); return 0; }\n' >"$HD/euid.c"
	cc -o "$HD/euid" "$HD/euid.c" || fail "cannot build the probe"
	chmod 4755 "$HD/euid"
	assert_eq "euid 0" "$(runuser -u nobody -- "$HD/euid")" "the setuid probe outside trace-run"
	local b out
	for b in seccomp ptrace; do
		out=$(trun_nobody --backend "$b" -- sh -c "$HD/euid; $HD/euid; su -c true </dev/null; true" 2>"$HD/err")
		cat "$HD/err"
		assert_eq "euid 65534
euid 65534" "$out" "$b: euid of the setuid probe under trace-run"
		assert_eq 1 "$(grep -c "trace-run warn: $HD/euid is setuid, .*no_new_privs" "$HD/err")" \
			"$b: lines explaining the probe"
		assert_eq 1 "$(grep -c "trace-run warn: /[a-z/]*bin/su is setuid, .*no_new_privs" "$HD/err")" \
			"$b: lines explaining su"
	done
}

run_test "hardening: kill -9 of trace-run kills the program's tree (seccomp)" test_kill9_seccomp
run_test "hardening: kill -9 of trace-run kills the program's tree (ptrace)" test_kill9_ptrace
run_test "hardening: exit statuses through the guard" test_exit_status_kept
run_test "hardening: loader/shell start-up variables are not imported" test_env_code_not_imported
run_test "hardening: the pod's git configuration runs nothing here" test_pod_config_not_run
run_test "hardening: remote files over max_file_size fail with EFBIG, with one line" test_max_file_size
run_test "hardening: big remote files are shared between opens while unchanged" test_big_file_shared
run_test "hardening: the target exits mid-session: one line, ESRCH / ENETUNREACH" test_target_exits_mid_session
run_test "hardening: the agent dies mid-session: one line, EIO / ENETUNREACH" test_agent_dies_mid_session
run_test "hardening: a setuid program under trace-run: the no_new_privs line" test_setuid_explained
