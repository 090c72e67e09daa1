#!/usr/bin/env bash
# trace-run's files, env, config and command line against a real agent and a real pod:
# programs linked every way (static Go, static busybox, glibc coreutils, python3) run on
# the host under `trace-run --target pod/NAME` and must see the pod's files and
# environment, keep local paths local, follow the fs config (not_found, local, modes),
# write back in write mode (checked from inside the pod), and fail with a clear line and
# a distinct exit code on bad input. Every program check runs with both backends; a
# subset runs as user nobody.
source "$(dirname "$0")/../lib.sh"
source "$HERMIT_ROOT/tests/agent/agent_lib.sh"
ensure_rootfs

PODPROBE="$BUILD/apps/podprobe"
PREEMPT="$BUILD/apps/preempt"
BUSYBOX=/bin/busybox
PYTHON=/usr/bin/python3
for f in "$PODPROBE" "$PREEMPT" "$BUSYBOX" "$PYTHON" /bin/cat /usr/bin/stat; do
	[ -x "$f" ] || { echo "missing $f" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/hermit-files-test.XXXXXX)
chmod 0755 "$WORK" # nobody reaches the agent's socket and its own token copy
WEB=$(pod_name web)
cleanup() {
	set +e # a trap must not stop half-way
	agent_stop "$WORK" main >/dev/null 2>&1
	pod_cleanup "$WEB"
	rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the pod: a copy of the shared rootfs with files the host does not have ----
set -e
# trace-pod runs only a rootfs other host users cannot reach: a 0700 directory holds it
mkdir -m 0700 "$WORK/private"
ROOTFS="$WORK/private/rootfs"
mkdir "$ROOTFS"
cp -a "$TEST_ROOTFS/." "$ROOTFS/"
P=/srv/hermit-files # pod-only tree
[ ! -e "$P" ] || { echo "the host has $P: the checks would prove nothing" >&2; exit 1; }
HELLO="only in pod $WEB $RANDOM$RANDOM"
mkdir -p "$ROOTFS$P/dir/sub" "$ROOTFS$P/rw"
printf '%s\n' "$HELLO" >"$ROOTFS$P/hello.txt"
chmod 0640 "$ROOTFS$P/hello.txt"
for n in a b c; do echo "file $n" >"$ROOTFS$P/dir/$n.txt"; done
ln -s a.txt "$ROOTFS$P/dir/link"
mkfifo "$ROOTFS$P/dir/fifo"
echo "secret" >"$ROOTFS$P/secret.conf"
head -c 3M /dev/urandom >"$ROOTFS$P/big.bin"
echo "pod copy" >"$ROOTFS$P/rw/existing.txt"
# paths that exist on both sides: local ones must stay local
LOCAL_TMP="/tmp/hermit-files-local-$$"
echo "host tmp" >"$LOCAL_TMP"
mkdir -p "$ROOTFS/tmp" && echo "pod tmp" >"$ROOTFS$LOCAL_TMP"
HOMEDIR="$WORK/home"
mkdir -p "$HOMEDIR" "$ROOTFS$HOMEDIR"
echo "host home" >"$HOMEDIR/marker"
echo "pod home" >"$ROOTFS$HOMEDIR/marker"
trap 'cleanup; rm -f "$LOCAL_TMP"' EXIT

tp run -d --name "$WEB" --env FOO=bar --env HERMIT_FILES_TEST=web --env PATH=/pod/bin:/bin:/usr/bin \
	--rootfs "$ROOTFS" -- sleep 100000 </dev/null >/dev/null
agent_start "$WORK" main
SOCK="$WORK/main.sock"
TOKEN="$WORK/token"
cp "$TOKEN" "$WORK/token-nobody"
chown nobody "$WORK/token-nobody"
set +e

BACKENDS=(seccomp ptrace)

# trun [TRACE-RUN OPTIONS] -- PROGRAM...: trace-run on the pod, as root
trun() {
	timeout 60 "$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" --target "pod/$WEB" "$@"
}
# expect_out WHAT EXPECTED CMD...: exit 0 and exactly this stdout
expect_out() {
	local what="$1" expected="$2" out rc=0
	shift 2
	echo "+ $*"
	out=$("$@") || rc=$?
	printf '%s\n' "$out" | sed 's/^/  | /'
	assert_eq 0 "$rc" "$what: exit status"
	assert_eq "$expected" "$out" "$what"
}
in_pod() { tp exec "$WEB" -- "$@" </dev/null; }

test_podprobe() {
	local b
	for b in "${BACKENDS[@]}"; do
		expect_out "podprobe ($b)" "$(printf '%s\n' "env HERMIT_FILES_TEST=web" "$HELLO" \
			"list $P/dir a.txt" "list $P/dir b.txt" "list $P/dir c.txt" "list $P/dir fifo" \
			"list $P/dir link" "list $P/dir sub" \
			"stat $P/hello.txt type=file size=$((${#HELLO} + 1)) mode=0640" \
			"stat $P/dir type=dir size=4096 mode=0755" \
			"lstat $P/dir/link type=symlink size=5 mode=0777" "file a")" \
			trun --backend "$b" -- "$PODPROBE" -env HERMIT_FILES_TEST -read "$P/hello.txt" \
			-list "$P/dir" -stat "$P/hello.txt" -stat "$P/dir" -lstat "$P/dir/link" \
			-read "$P/dir/link"
	done
}

test_busybox() {
	local b
	for b in "${BACKENDS[@]}"; do
		expect_out "busybox cat ($b)" "$HELLO" trun --backend "$b" -- "$BUSYBOX" cat "$P/hello.txt"
		expect_out "busybox ls ($b)" "$(printf '%s\n' a.txt b.txt c.txt fifo link sub)" \
			trun --backend "$b" -- "$BUSYBOX" ls "$P/dir"
		expect_out "busybox stat ($b)" "$(printf '%s\n' "$((${#HELLO} + 1)) regular file 640" \
			"4096 directory 755" "5 symbolic link 777")" \
			trun --backend "$b" -- "$BUSYBOX" stat -c '%s %F %a' "$P/hello.txt" "$P/dir/sub" \
			"$P/dir/link"
		expect_out "busybox readlink ($b)" "a.txt" \
			trun --backend "$b" -- "$BUSYBOX" readlink "$P/dir/link"
	done
}

test_glibc() {
	local b
	for b in "${BACKENDS[@]}"; do
		expect_out "glibc cat ($b)" "$HELLO" trun --backend "$b" -- /bin/cat "$P/hello.txt"
		expect_out "glibc stat ($b)" "$(printf '%s\n' "$P/hello.txt $((${#HELLO} + 1)) regular file 640" \
			"$P/dir 4096 directory 755" "$P/dir/fifo 0 fifo 644")" \
			trun --backend "$b" -- /usr/bin/stat -c '%n %s %F %a' "$P/hello.txt" "$P/dir" "$P/dir/fifo"
		expect_out "glibc ls -l ($b)" "$(printf '%s\n' "-rw-r--r-- a.txt" "lrwxrwxrwx link -> a.txt" \
			"drwxr-xr-x sub")" \
			sh -c "$(printf '%q ' "$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" \
				--target "pod/$WEB" --backend "$b" -- ls -l "$P/dir") | awk '/a.txt|link|sub/ {s = \$1 \" \" \$9; if (\$10) s = s \" \" \$10 \" \" \$11; print s}'"
		# 3 MiB of random bytes, checksummed
		expect_out "glibc cat of 3 MiB ($b)" "$(sha256sum <"$ROOTFS$P/big.bin")" \
			sh -c "$(printf '%q ' "$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" \
				--target "pod/$WEB" --backend "$b" -- cat "$P/big.bin") | sha256sum"
	done
}

PY_CHECKS='
import mmap, os, sys
P = sys.argv[1]
print(open(P + "/hello.txt").read(), end="")
print(sorted(os.listdir(P + "/dir")))
print(oct(os.stat(P + "/hello.txt").st_mode))
f = open(P + "/hello.txt", "rb")
st = os.fstat(f.fileno())
print("fstat", st.st_size, oct(st.st_mode))
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
print("mmap", m[:4])
try:
    os.write(f.fileno(), b"x")
except OSError as e:
    print("write", e.errno == 9)
fd = os.open(P + "/dir", os.O_RDONLY | os.O_DIRECTORY)
print("fstat dir", oct(os.fstat(fd).st_mode))
os.fchdir(fd)
print(os.getcwd(), open("a.txt").read(), end="")
os.chdir("sub")
print(os.getcwd(), os.listdir("."), open("../b.txt").read(), end="")
os.chdir("..")
print(os.getcwd(), os.path.islink("link"), os.readlink("link"))
os.chdir(P + "/dir/sub")
print("chdir", os.getcwd(), os.listdir("."), open("../a.txt").read(), end="")
os.chdir("/tmp")
print(os.path.exists(P + "/nope"), os.access(P + "/hello.txt", os.R_OK))
'
test_python() {
	local b expected
	expected="$(printf '%s\n' "$HELLO" "['a.txt', 'b.txt', 'c.txt', 'fifo', 'link', 'sub']" \
		"0o100640" "fstat $((${#HELLO} + 1)) 0o100640" "mmap b'only'" "write True" \
		"fstat dir 0o40755" "$P/dir file a" "$P/dir/sub [] file b" "$P/dir True a.txt" \
		"chdir $P/dir/sub [] file a" "False True")"
	for b in "${BACKENDS[@]}"; do
		expect_out "python3 ($b)" "$expected" trun --backend "$b" -- "$PYTHON" -c "$PY_CHECKS" "$P"
	done
}

# a directory only the pod has becomes the working directory (trace-run keeps it: the
# kernel cannot), for the shell and the programs it starts, until a local chdir
PY_CHDIR='
import os, sys
P, LOCAL = sys.argv[1], sys.argv[2]
os.chdir(P)
print(open("hello.txt").read(), end="")
print(os.getcwd(), sorted(os.listdir("dir")))
os.chdir("dir/sub")
print(os.getcwd(), open("../b.txt").read(), end="")
os.chdir(os.path.dirname(LOCAL))
print(os.getcwd(), open(os.path.basename(LOCAL)).read(), end="")
'
test_chdir_remote() {
	local b sh listing local_name
	listing="$(printf '%s\n' a.txt b.txt c.txt fifo link sub)"
	local_name=$(basename "$LOCAL_TMP")
	for b in "${BACKENDS[@]}"; do
		for sh in "$BUSYBOX sh" /bin/bash; do
			expect_out "$sh: cd into a pod-only dir ($b)" \
				"$(printf '%s\n' "$P/dir" "file a" "$listing" "$P/dir/sub" "file b" "/tmp" "host tmp")" \
				trun --backend "$b" -- $sh -c "cd $P/dir && pwd && cat a.txt && ls && cd sub && \
					pwd && cat ../b.txt && cd /tmp && pwd && cat $local_name"
		done
		expect_out "python3 chdir into a pod-only dir ($b)" "$(printf '%s\n' "$HELLO" \
			"$P ['a.txt', 'b.txt', 'c.txt', 'fifo', 'link', 'sub']" "$P/dir/sub file b" \
			"/tmp host tmp")" \
			trun --backend "$b" -- "$PYTHON" -c "$PY_CHDIR" "$P" "$LOCAL_TMP"
	done
}

test_local_stays_local() {
	local b
	mkdir -p "$WORK/cwd"
	echo "host cwd" >"$WORK/cwd/here.txt"
	mkdir -p "$ROOTFS$WORK/cwd" && echo "pod cwd" >"$ROOTFS$WORK/cwd/here.txt"
	for b in "${BACKENDS[@]}"; do
		expect_out "local /tmp, \$HOME, cwd ($b)" "$(printf '%s\n' "host tmp" "host home" "host cwd" "$WEB")" \
			bash -c "cd '$WORK/cwd' && HOME='$HOMEDIR' $(printf '%q ' "$TRACE_RUN" --agent-unix \
				"$SOCK" --token-file "$TOKEN" --target "pod/$WEB" --backend "$b") -- \
				/bin/cat '$LOCAL_TMP' '$HOMEDIR/marker' here.txt /etc/hostname"
	done
	# the pod really has other content at those paths
	assert_eq "pod tmp" "$(in_pod cat "$LOCAL_TMP")" "pod's $LOCAL_TMP"
	assert_eq "pod home" "$(in_pod cat "$HOMEDIR/marker")" "pod's home marker"
}

test_config() {
	local out rc
	cat >"$WORK/nf.json" <<-EOF
		{"feature": {"fs": {"not_found": ["^$P/secret\\\\.conf\$"], "local": ["^$P/dir(/|\$)"]}}}
	EOF
	cat "$WORK/nf.json"
	out=$(trun -f "$WORK/nf.json" -- /bin/cat "$P/secret.conf" 2>&1) && fail "not_found file was read: $out"
	assert_contains "$out" "No such file or directory"
	out=$(trun -f "$WORK/nf.json" -- "$BUSYBOX" ls "$P/dir" 2>&1) && fail "local dir was listed: $out"
	assert_contains "$out" "No such file or directory"
	expect_out "other pod files still remote" "$HELLO" trun -f "$WORK/nf.json" -- /bin/cat "$P/hello.txt"
	# flags override the file
	echo '{"feature": {"fs": {"mode": "local"}}, "target": "pod/nonexistent"}' >"$WORK/local.json"
	out=$(trun -f "$WORK/local.json" -- /bin/cat "$P/hello.txt" 2>&1) && fail "fs mode local read the pod: $out"
	assert_contains "$out" "No such file or directory"
	expect_out "--fs-mode over the file" "$HELLO" trun -f "$WORK/local.json" --fs-mode read -- /bin/cat "$P/hello.txt"
	# strict: an unknown key is an error naming it
	echo '{"feature": {"fs": {"mdoe": "read"}}}' >"$WORK/typo.json"
	rc=0
	out=$(trun -f "$WORK/typo.json" -- /bin/true 2>&1) || rc=$?
	echo "$out"
	assert_eq 125 "$rc" "exit status for a config error"
	assert_contains "$out" "unknown key feature.fs.mdoe"
}

# feature.fs.cache_ttl_ms: an open within the TTL of a read of the same file is answered
# from trace-run's copy (no agent request: a change in the pod is not seen yet); after
# the TTL the next open reads the file again and sees the change.
test_cache_ttl() {
	local b ttl out
	for b in "${BACKENDS[@]}"; do
		for ttl in 200 60000; do
			echo "first-$b-$ttl" >"$ROOTFS$P/ttl.txt"
			rm -f "$WORK/changed"
			echo "{\"feature\": {\"fs\": {\"cache_ttl_ms\": $ttl}}}" >"$WORK/ttl.json"
			trun -f "$WORK/ttl.json" --backend "$b" -- "$PYTHON" -c "
import os, sys, time
print(open('$P/ttl.txt').read().strip()); sys.stdout.flush()
open('$WORK/ready', 'w').close()
while not os.path.exists('$WORK/changed'):
    time.sleep(0.01)
time.sleep(0.5)
print(open('$P/ttl.txt').read().strip())" >"$WORK/ttl.out" 2>&1 &
			local pid=$!
			wait_until 200 test -e "$WORK/ready" || fail "python did not read ($b): $(cat "$WORK/ttl.out")"
			rm -f "$WORK/ready"
			echo "second-$b-$ttl" >"$ROOTFS$P/ttl.txt.new"
			mv "$ROOTFS$P/ttl.txt.new" "$ROOTFS$P/ttl.txt"
			touch "$WORK/changed"
			wait "$pid" || fail "trace-run failed ($b, ttl $ttl): $(cat "$WORK/ttl.out")"
			out=$(cat "$WORK/ttl.out")
			echo "$b ttl $ttl: $out"
			if [ "$ttl" = 200 ]; then
				assert_eq "first-$b-$ttl
second-$b-$ttl" "$out" "a change after the TTL is seen ($b)"
			else
				assert_eq "first-$b-$ttl
first-$b-$ttl" "$out" "within the TTL the copy answers ($b)"
			fi
		done
	done
	echo '{"feature": {"fs": {"cache_ttl_ms": -1}}}' >"$WORK/ttl.json"
	out=$(trun -f "$WORK/ttl.json" -- /bin/true 2>&1) && fail "a negative TTL was accepted"
	assert_contains "$out" "cache_ttl_ms: must be 0 to 60000 milliseconds"
}

test_write_mode() {
	local b n=0
	for b in "${BACKENDS[@]}"; do
		n=$((n + 1))
		expect_out "podprobe writes ($b)" "$(printf '%s\n' "write $P/rw/go$n.txt bytes=5" \
			"mkdir $P/rw/d$n" "rename $P/rw/go$n.txt $P/rw/d$n/moved.txt")" \
			trun --backend "$b" --fs-mode write -- "$PODPROBE" -write "$P/rw/go$n.txt" -data "hello" \
			-mkdir "$P/rw/d$n" -rename "$P/rw/go$n.txt" "$P/rw/d$n/moved.txt"
		assert_eq "hello" "$(in_pod cat "$P/rw/d$n/moved.txt")" "pod sees the Go write"
		expect_out "python appends ($b)" "" trun --backend "$b" --fs-mode write -- "$PYTHON" -c \
			"open('$P/rw/existing.txt', 'a').write('appended $n\n'); open('$P/rw/py$n.txt', 'w').write('py\n')"
		assert_contains "$(in_pod cat "$P/rw/existing.txt")" "appended $n" "pod sees the append"
		assert_eq "py" "$(in_pod cat "$P/rw/py$n.txt")" "pod sees the python file"
		# a shell redirection: the fd goes by dup2, never close()
		expect_out "busybox sh redirect ($b)" "sh $n" trun --backend "$b" --fs-mode write -- \
			"$BUSYBOX" sh -c "umask 027; echo 'sh $n' > $P/rw/sh$n.txt; cat $P/rw/sh$n.txt"
		assert_eq "sh $n" "$(in_pod cat "$P/rw/sh$n.txt")" "pod sees the shell's file"
		assert_eq "-rw-r-----" "$(in_pod stat -c %A "$P/rw/sh$n.txt")" "umask applied"
		expect_out "remove ($b)" "$(printf '%s\n' "remove $P/rw/d$n/moved.txt" "remove $P/rw/d$n")" \
			trun --backend "$b" --fs-mode write -- "$PODPROBE" -remove "$P/rw/d$n/moved.txt" -remove "$P/rw/d$n"
		in_pod test ! -e "$P/rw/d$n" || fail "$P/rw/d$n still in the pod"
		# more written files open at once than trace-run keeps a reference to
		in_pod mkdir -p "$P/rw/many"
		expect_out "300 files open at once ($b)" "" trun --backend "$b" --fs-mode write -- \
			"$PYTHON" -c "
fs = [open('$P/rw/many/f%d' % i, 'w') for i in range(300)]
for i, f in enumerate(fs): f.write('run $n file %d\n' % i)
for f in fs: f.close()"
		assert_eq 300 "$(in_pod sh -c "cat $P/rw/many/* | grep -c '^run $n file'")" "files written back"
	done
	# read mode: a write stays local (and fails here, the host has no such dir)
	local out
	out=$(trun -- "$PODPROBE" -write "$P/rw/local.txt" -data x 2>&1) && fail "read mode wrote: $out"
	assert_contains "$out" "no such file or directory"
	in_pod test ! -e "$P/rw/local.txt" || fail "read mode wrote into the pod"
	# read mode with a read_write list: that path is written in the pod
	echo "{\"feature\": {\"fs\": {\"read_write\": [\"^$P/rw/\"]}}}" >"$WORK/rw.json"
	expect_out "read_write list" "write $P/rw/listed.txt bytes=6" \
		trun -f "$WORK/rw.json" -- "$PODPROBE" -write "$P/rw/listed.txt" -data listed
	assert_eq "listed" "$(in_pod cat "$P/rw/listed.txt")" "pod sees the read_write file"
}

test_env() {
	local b
	for b in "${BACKENDS[@]}"; do
		expect_out "env ($b)" "$(printf '%s\n' "env FOO=bar" "env PATH=$PATH" "env HERMIT_TOKEN unset")" \
			env HERMIT_TOKEN=should-not-leak "$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" \
			--target "pod/$WEB" --backend "$b" -- "$PODPROBE" -env FOO -env PATH -env HERMIT_TOKEN
	done
	expect_out "--env-exclude" "env FOO unset" trun --env-exclude 'F*' -- "$PODPROBE" -env FOO
	expect_out "--env-include" "$(printf '%s\n' "env FOO unset" "env HERMIT_FILES_TEST=web")" \
		trun --env-include 'HERMIT_*' -- "$PODPROBE" -env FOO -env HERMIT_FILES_TEST
	expect_out "-e override" "$(printf '%s\n' "env FOO=mine" "env NEW=1")" \
		trun -e FOO=mine --env NEW=1 -- "$PODPROBE" -env FOO -env NEW
	expect_out "PATH named by include" "env PATH=/pod/bin:/bin:/usr/bin" \
		trun --env-include PATH -- "$PODPROBE" -env PATH
}

# expect_fail WHAT CODE MESSAGE CMD...
expect_fail() {
	local what="$1" code="$2" msg="$3" out rc=0
	shift 3
	out=$("$@" 2>&1) || rc=$?
	echo "$what: exit $rc: $out"
	assert_eq "$code" "$rc" "$what: exit status"
	assert_contains "$out" "$msg" "$what: message"
	assert_eq 1 "$(count_lines "$out")" "$what: one line"
}

test_bad_input() {
	echo wrong-token >"$WORK/wrong-token"
	expect_fail "unknown pod" 123 "target pod/no-such-pod-$$: no such pod" \
		"$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" --target "pod/no-such-pod-$$" -- /bin/true
	expect_fail "unknown pid" 123 "target pid/999999999" \
		"$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" --target pid/999999999 -- /bin/true
	expect_fail "agent down (no socket)" 121 "cannot reach the agent at unix:$WORK/nothing.sock" \
		"$TRACE_RUN" --agent-unix "$WORK/nothing.sock" --token-file "$TOKEN" --target "pod/$WEB" -- /bin/true
	expect_fail "agent down (TCP refused)" 121 "cannot reach the agent at 127.0.0.1:1" \
		"$TRACE_RUN" --agent 127.0.0.1:1 --token-file "$TOKEN" --target "pod/$WEB" -- /bin/true
	expect_fail "wrong token" 122 "rejected the auth token" \
		"$TRACE_RUN" --agent-unix "$SOCK" --token-file "$WORK/wrong-token" --target "pod/$WEB" -- /bin/true
	expect_fail "wrong HERMIT_TOKEN" 122 "rejected the auth token" \
		env HERMIT_TOKEN=nope "$TRACE_RUN" --agent-unix "$SOCK" --target "pod/$WEB" -- /bin/true
	expect_fail "no token" 122 "no auth token" \
		"$TRACE_RUN" --agent-unix "$SOCK" --token-file "$WORK/no-such-token" --target "pod/$WEB" -- /bin/true
	expect_fail "program not found" 127 "no-such-program-$$: No such file or directory" \
		trun -- "no-such-program-$$"
	echo "not a program" >"$WORK/not-executable"
	expect_fail "program not executable" 126 "Permission denied" trun -- "$WORK/not-executable"
	expect_fail "no target" 125 "no target" \
		"$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" -- /bin/true
	expect_fail "bad flag" 125 "unknown option '--bogus'" "$TRACE_RUN" --bogus -- /bin/true
	# the program's own status passes through
	local rc=0
	trun -- /bin/sh -c 'exit 42' || rc=$?
	assert_eq 42 "$rc" "program's exit status"
}

test_nobody() {
	local b out
	for b in "${BACKENDS[@]}"; do
		expect_out "nobody, HERMIT_TOKEN ($b)" "$(printf '%s\n' "env FOO=bar" "$HELLO" \
			"list $P/dir a.txt" "list $P/dir b.txt" "list $P/dir c.txt" "list $P/dir fifo" \
			"list $P/dir link" "list $P/dir sub")" \
			bash -c "cd / && HERMIT_TOKEN=\$(cat '$TOKEN') timeout 60 runuser -u nobody -- \
				$(printf '%q ' "$TRACE_RUN" --agent-unix "$SOCK" --target "pod/$WEB" --backend "$b" \
				-- "$PODPROBE" -env FOO -read "$P/hello.txt" -list "$P/dir")"
		expect_out "nobody, token file ($b)" "$HELLO" \
			bash -c "cd / && timeout 60 runuser -u nobody -- $(printf '%q ' "$TRACE_RUN" \
				--agent-unix "$SOCK" --token-file "$WORK/token-nobody" --target "pod/$WEB" \
				--backend "$b" -- /bin/cat "$P/hello.txt")"
	done
	local rc=0
	out=$(cd / && runuser -u nobody -- "$TRACE_RUN" --agent-unix "$SOCK" --token-file "$TOKEN" \
		--target "pod/$WEB" -- /bin/true 2>&1) || rc=$?
	assert_eq 122 "$rc" "nobody with root's token file"
	assert_contains "$out" "Permission denied"
}

test_preempt() {
	local b out rc
	for b in "${BACKENDS[@]}"; do
		rc=0
		out=$(trun --backend "$b" -- "$PREEMPT" "$P/hello.txt" "$HELLO"$'\n' 3000 2>&1) || rc=$?
		echo "$b: $out"
		assert_eq 0 "$rc" "preempt ($b)"
		assert_contains "$out" "ok 3000 reads"
	done
}

test_config_file_agent_tcp() {
	local port=$((20000 + RANDOM % 20000))
	agent_start "$WORK" tcp --listen "127.0.0.1:$port"
	on_exit agent_stop "$WORK" tcp
	cat >"$WORK/tcp.json" <<-EOF
		{"target": "pod/$WEB", "backend": "ptrace",
		 "agent": {"address": "127.0.0.1:$port", "token_file": "$TOKEN"},
		 "feature": {"env": {"include": ["HERMIT_*"], "override": {"FROM_FILE": "1"}}}}
	EOF
	expect_out "everything from the config file" "$(printf '%s\n' "env FOO unset" "env FROM_FILE=1" "$HELLO")" \
		timeout 60 "$TRACE_RUN" -f "$WORK/tcp.json" -v -- "$PODPROBE" -env FOO -env FROM_FILE -read "$P/hello.txt"
	# flags win over the file: the unix socket instead of TCP, a pod that does not exist
	expect_fail "--target over the file" 123 "no such pod" \
		"$TRACE_RUN" -f "$WORK/tcp.json" --agent-unix "$SOCK" --target pod/no-such-pod-$$ -- /bin/true
	agent_stop "$WORK" tcp
	expect_fail "TCP agent gone" 121 "cannot reach the agent at 127.0.0.1:$port" \
		"$TRACE_RUN" -f "$WORK/tcp.json" -- /bin/true
}

test_mirror_cleaned() {
	mkdir -p "$WORK/xdg"
	chmod 0700 "$WORK/xdg"
	# one left by a trace-run that was killed, and one of a live trace-run
	local dead=999999
	while kill -0 "$dead" 2>/dev/null; do dead=$((dead - 1)); done
	mkdir -p "$WORK/xdg/hermit-$dead-AbC123/root/srv" "$WORK/xdg/hermit-$$-XyZ789"
	XDG_RUNTIME_DIR="$WORK/xdg" trun -- "$BUSYBOX" ls "$P/dir" >/dev/null || fail "ls"
	assert_eq "hermit-$$-XyZ789" "$(ls -A "$WORK/xdg")" "left in XDG_RUNTIME_DIR"
}

run_test "trace-run files: static Go (podprobe), both backends" test_podprobe
run_test "trace-run files: static busybox cat/ls/stat/readlink" test_busybox
run_test "trace-run files: glibc cat/stat/ls -l, 3 MiB checksummed" test_glibc
run_test "trace-run files: python3 read, listdir, fstat, mmap, fchdir" test_python
run_test "trace-run files: chdir into a pod-only directory (sh, bash, python3)" test_chdir_remote
run_test "trace-run files: /tmp, \$HOME, cwd stay local; /etc/hostname remote" test_local_stays_local
run_test "trace-run files: not_found, local, fs mode; strict config" test_config
run_test "trace-run files: feature.fs.cache_ttl_ms, a change after the TTL is seen" test_cache_ttl
run_test "trace-run files: write mode writes back into the pod" test_write_mode
run_test "trace-run env: pod env, include/exclude/override, PATH local" test_env
run_test "trace-run errors: one line, distinct exit codes" test_bad_input
run_test "trace-run as nobody: HERMIT_TOKEN and token file" test_nobody
run_test "trace-run files: Go preemption during remote opens" test_preempt
run_test "trace-run config: agent over TCP, target, backend, env from the file" test_config_file_agent_tcp
run_test "trace-run files: mirror directory removed at exit" test_mirror_cleaned
