#!/usr/bin/env bash
# Installs the Debian packages that hermit's build, tests, demo and benchmarks need.
# Idempotent: when everything is present it only runs dpkg-query and returns.
set -euo pipefail

PACKAGES=(
  make gcc clang clang-format llvm pkg-config
  bpftool libbpf-dev libelf-dev zlib1g-dev
  libhttp-parser-dev libmnl-dev libcmocka-dev libjson-c-dev libpcre2-dev libseccomp-dev
  busybox-static runc golang-go
  iproute2 procps curl python3 valgrind git
  musl-tools
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages and not root; run: sudo $0" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done" >&2
