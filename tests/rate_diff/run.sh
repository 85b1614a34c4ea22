#!/usr/bin/env bash
# Builds tests/rate_diff/gen.go against Debian's golang.org/x/time/rate (GOPATH
# mode, offline) and writes its trace for RateDiff.MatchesGoLimiter.
#   run.sh TRACE_FILE BUILD_DIR [SEEDS OPS]
# Fails (never skips) when Go or x/time/rate is missing: the differential test
# is part of every test run. scripts/setup.sh installs both.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
trace=$1
build=$2
seeds=${3:-2000}
ops=${4:-200}

if ! command -v go >/dev/null; then
  echo "rate_diff: FAIL: no 'go' on PATH; install golang-go golang-golang-x-time-dev (scripts/setup.sh)" >&2
  exit 1
fi
if [[ ! -f /usr/share/gocode/src/golang.org/x/time/rate/rate.go ]]; then
  echo "rate_diff: FAIL: golang.org/x/time/rate not found under /usr/share/gocode; install golang-golang-x-time-dev" >&2
  exit 1
fi

# Debian ships x/time as GOPATH sources: build with no network and no go.mod.
# GOAMD64=v1: no fused multiply-add in Go's float code (sluice fuses none either).
export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off GOTOOLCHAIN=local GOAMD64=v1
export GOCACHE="$build/gocache"
mkdir -p "$build" "$(dirname "$trace")"
go build -o "$build/rate-diff-gen" "$here/gen.go"
"$build/rate-diff-gen" -seeds "$seeds" -ops "$ops" >"$trace.tmp"
mv "$trace.tmp" "$trace"
echo "rate_diff: wrote $trace with $(go env GOVERSION)"
