#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/; clang 14, ASan + UBSan, in build-fuzz/) and runs each for a
# bounded time over a copy of its seed corpus (fuzz/corpus/<target>):
#   scripts/fuzz.sh [seconds_per_target]    default 60
# Prints one line per target with its executions, and fails when any target finds something (a
# crash, a sanitizer report, a broken invariant, a timeout or running out of memory); the input is
# saved as build-fuzz/fuzz-runs/<target>/findings/<kind>-<sha1>, and the target's log is shown.
# Reproduce a finding with build-fuzz/fuzz/<target>_fuzzer <file>; once fixed, add the file to
# fuzz/corpus/<target>/ as regression-<what> so that ctest replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
scripts/install_deps.sh fuzz
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTNSERVE_FUZZ=ON -DATTNSERVE_BUILD_TESTS=OFF -DATTNSERVE_BUILD_BENCHMARKS=OFF >/dev/null
targets=(request rest_request safetensors config)
cmake --build build-fuzz --target "${targets[@]/%/_fuzzer}"

export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# One OpenMP thread: executions stay deterministic and the two cores of a CI machine go to the
# fuzzer rather than to thread hand-offs on tiny inputs.
export OMP_NUM_THREADS=1
failed=()
for target in "${targets[@]}"; do
  run=build-fuzz/fuzz-runs/$target
  rm -rf "$run"
  mkdir -p "$run/corpus" "$run/findings"
  cp fuzz/corpus/"$target"/* "$run/corpus/"
  dict=()
  [ -f fuzz/corpus/"$target".dict ] && dict=(-dict=fuzz/corpus/"$target".dict)
  status=0
  build-fuzz/fuzz/"$target"_fuzzer "$run/corpus" "${dict[@]}" -max_total_time="$seconds" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$run/findings/" \
    >"$run/log" 2>&1 || status=$?
  stat() { sed -n "s/^stat::$1: *//p" "$run/log"; }
  findings=$(find "$run/findings" -type f | wc -l)
  echo "fuzz $target: $(stat number_of_executed_units) executions in ${seconds} s" \
       "($(stat average_exec_per_sec)/s), corpus $(ls fuzz/corpus/"$target" | wc -l)" \
       "→ $(ls "$run/corpus" | wc -l) inputs, peak RSS $(stat peak_rss_mb) MB," \
       "$findings findings (exit $status)"
  if [ "$status" -ne 0 ] || [ "$findings" -ne 0 ]; then
    tail -n 60 "$run/log"
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: findings in ${failed[*]} (inputs under build-fuzz/fuzz-runs/<target>/findings/)" >&2
  exit 1
fi
