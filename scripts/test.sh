#!/usr/bin/env bash
# Full test pipeline: every preset in $PRESETS (configure, build, ctest), then
# the shared API contract (plain and under TSan) when ../shared/contract exists.
#   PRESETS="release tsan" scripts/test.sh     # run a subset of presets
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

PRESETS=${PRESETS-"release clang tsan asan"} # PRESETS="" runs only the contract
CONTRACT_PARTS=${CONTRACT_PARTS:-"core flow"}
contract=../shared/contract/run.sh

current="startup"
stage() {
  current=$*
  printf '\n===== [%5ds] %s =====\n' "$SECONDS" "$current"
}
on_exit() {
  local rc=$?
  if ((rc != 0)); then
    echo "sluice: FAILED in stage \"$current\" (exit $rc) after ${SECONDS}s" >&2
  fi
}
trap on_exit EXIT

stage "setup"
bash scripts/setup.sh

for preset in $PRESETS; do
  stage "$preset: configure"
  cmake --preset "$preset"
  stage "$preset: build"
  cmake --build --preset "$preset"
  stage "$preset: test"
  ctest --preset "$preset"
done

# The HTTP connection's parse-and-dispatch path under libFuzzer (+ASan/UBSan)
# for a bounded time; any crash, leak or sanitizer report fails the run.
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
run_fuzzer() {  # run_fuzzer NAME SECONDS: build/fuzz/bin/sluice-fuzz-NAME on a copy of fuzz/corpus/NAME
  local name=$1 seconds=$2 corpus=$root/build/fuzz/corpus-$1
  stage "fuzz $name: run ${seconds}s"
  mkdir -p "$corpus"
  cp -n fuzz/corpus/"$name"/* "$corpus"/
  build/fuzz/bin/sluice-fuzz-"$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "$corpus" 2>&1 | tail -n 15
  test "${PIPESTATUS[0]}" -eq 0
}
if ((FUZZ_SECONDS > 0)); then
  stage "fuzz: build"
  cmake --preset fuzz
  cmake --build --preset fuzz
  run_fuzzer http "$FUZZ_SECONDS"
  # json_valid (the relay's body check) against nlohmann, half as long.
  run_fuzzer json $(((FUZZ_SECONDS + 1) / 2))
fi

if [[ -f $contract ]]; then
  # shellcheck disable=SC2086 # CONTRACT_PARTS is a space-separated list
  {
    stage "contract ($CONTRACT_PARTS)"
    CONTRACT_BUILD_DIR="$root/build/contract" \
      bash "$contract" "$root" $CONTRACT_PARTS

    stage "contract under TSan ($CONTRACT_PARTS)"
    CONTRACT_BUILD_DIR="$root/build/contract-tsan" \
      CONTRACT_CMAKE_ARGS="-DCMAKE_CXX_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread" \
      TSAN_OPTIONS="halt_on_error=1" \
      bash "$contract" "$root" $CONTRACT_PARTS
  }
else
  echo "note: $contract not found; skipping the API contract"
fi

printf '\n===== [%5ds] done =====\n' "$SECONDS"
echo "sluice: all test stages passed (presets: $PRESETS; contract: ${CONTRACT_PARTS}) in ${SECONDS}s"
