#!/usr/bin/env bash
# Set up, build the release preset, run every example-* program in order.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
cmake --preset release
cmake --build --preset release

shopt -s nullglob
ran=0
for exe in build/release/bin/example-*; do
  [[ -f $exe && -x $exe ]] || continue
  echo "===== $exe ====="
  "$exe"
  ran=$((ran + 1))
done
echo "sluice: ran $ran example(s)"
