#!/usr/bin/env bash
# Builds the project with a sanitizer and runs the whole test suite under it:
#   scripts/sanitize.sh address    AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   scripts/sanitize.sh thread     ThreadSanitizer (build-tsan/)
# [ctest args…] may follow. Any report fails the test that triggered it. CI runs both.
#
# ThreadSanitizer sees only instrumented code: the prebuilt Debian libraries (gRPC, absl,
# protobuf, oneDNN, libgomp, …) synchronise in ways it cannot see, so scripts/tsan.supp silences
# reports that arise inside them or from their hand-offs (each entry says why), and OpenMP runs one
# thread (libgomp's barriers are invisible to it). The project's own locks are std::mutex, which
# TSan intercepts. ctest's tsan_reports_race_in_handler / _compute (tests/server/tsan_planted_race.cc,
# TSan builds only) check that a race planted in a gRPC handler and one in a computation are still
# reported with the suppressions in force.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
shift || true
case "$kind" in
  address) build_dir=build-asan
           export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
           export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ;;
  thread)  build_dir=build-tsan
           export TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
           export OMP_NUM_THREADS=1 ;;
  *) echo "usage: $0 address|thread [ctest args…]" >&2; exit 2 ;;
esac
scripts/install_deps.sh test
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DATTNSERVE_SANITIZE="$kind" -DATTNSERVE_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build_dir"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
