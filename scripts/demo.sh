#!/usr/bin/env bash
# make demo: builds (done by make), makes a busybox rootfs, starts a local pod and
# shows that it is isolated from the host. Cleans up everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
POD="$BUILD/bin/trace-pod"
ROOTFS="$BUILD/demo-rootfs"
NAME="demo-$$"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	"$POD" rm -f "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

say "building a busybox root filesystem in $ROOTFS"
"$POD" rootfs "$ROOTFS"

say "host view: hostname $(hostname), PID of this shell $$, $(grep PRETTY_NAME /etc/os-release)"

say "trace-pod run --name $NAME --hostname web --pids-max 64 --memory-max 64M -- sh -c '...'"
"$POD" run --name "$NAME" --rootfs "$ROOTFS" --hostname web --pids-max 64 --memory-max 64M \
	--env GREETING=hello-from-the-pod -- /bin/sh -c '
echo "hostname:   $(hostname)"
echo "os-release: $(grep PRETTY_NAME /etc/os-release)"
echo "env:        GREETING=$GREETING"
echo "processes (the command is PID 1):"; ps
echo "network:"; ip -4 -o addr show | sed "s/^/  /"
echo "bridge reachable: $(ping -c1 -W1 10.213.0.1 >/dev/null 2>&1 && echo yes || echo no)"
echo "root dir:   $(ls /)"
'
echo
echo "pod exited with status $?; cgroups, veth and state are gone:"
ls /run/hermit/pods 2>/dev/null | grep -c "$NAME" || true
