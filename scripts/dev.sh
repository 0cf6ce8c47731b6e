#!/usr/bin/env bash
# The README's quick start. Installs missing Debian packages, builds, then:
#   scripts/dev.sh serve [attnserve flags…]   starts the server on the built-in demo models
#   scripts/dev.sh test  [ctest args…]        runs every test (unit, end-to-end) with ctest
# ATTNSERVE_BUILD_DIR overrides the build directory (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${ATTNSERVE_BUILD_DIR:-build}
command=${1:-}
shift || true

configure_and_build() {
  cmake -S . -B "$build_dir" -G Ninja -DATTNSERVE_BUILD_TESTS="$1" >/dev/null
  cmake --build "$build_dir"
}

case "$command" in
  serve)
    scripts/install_deps.sh build
    configure_and_build OFF
    exec "$build_dir/server/attnserve" "$@"
    ;;
  test)
    scripts/install_deps.sh test
    configure_and_build ON
    ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "$@"
    ;;
  *)
    echo "usage: $0 serve [attnserve flags…] | test [ctest args…]" >&2
    exit 2
    ;;
esac
