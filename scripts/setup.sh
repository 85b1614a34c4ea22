#!/usr/bin/env bash
# Install the Debian 12 packages sluice needs to build and test. Idempotent:
# does nothing (and needs no network) when everything is already installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build g++ clang
  libgtest-dev libgmock-dev googletest
  libbenchmark-dev libcli11-dev nlohmann-json3-dev
  curl # the README walkthrough and bench/relay/run.sh talk to sluice-relay with it
  node-llhttp # llhttp C sources: /usr/share/llhttp/*.c, /usr/share/include/llhttp/llhttp.h
  golang-go golang-golang-x-time-dev # tests/rate_diff: the real Go rate limiter to compare with
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    echo "setup: not root and no sudo; please install: ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi

apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
echo "setup: installing ${missing[*]}"
"${apt[@]}" update || echo "setup: warning: apt-get update failed; trying the cached lists" >&2
"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
