#!/usr/bin/env bash
# Side-by-side runtime benchmark: sluice-bench, the Go peer and the C++ peers,
# one after another in each of RUNS rounds (medians in the table), then
# ../shared/peers/compare.py's ratio table.
#
#   bash bench/compare.sh                    # all runtime workloads, 3 rounds
#   RUNS=1 bash bench/compare.sh chan_spsc   # only some workloads
#
# Raw RESULT lines go to build/bench/results-<date>.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-3}
peers=$(cd ../shared/peers && pwd)

bash scripts/setup.sh >&2
cmake --preset release >&2
cmake --build --preset release --target sluice-bench >&2
BUILD_ONLY=1 bash "$peers/go/run.sh" >&2
BUILD_ONLY=1 bash "$peers/cpp/run.sh" >&2
go_bin=${TMPDIR:-/tmp}/sluice-peers-go/bench
cpp_dir=${TMPDIR:-/tmp}/sluice-peers-cpp

mkdir -p build/bench
out=build/bench/results-$(date -u +%Y-%m-%d).txt
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -r) nproc=$(nproc) $(g++ --version | head -1)"
  for round in $(seq "$RUNS"); do
    echo "# round $round (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
    build/release/bin/sluice-bench "$@"
    "$go_bin" "$@"
    for peer in bench_fiber bench_asio bench_tbb bench_moodycamel; do
      timeout 900 "$cpp_dir/$peer" "$@" || echo "# $peer failed"
    done
  done
} | tee "$out"
echo
python3 "$peers/compare.py" "$out"
