#!/bin/bash
# Issue #16's measurements on the 16-core device machine in one call: the batched core against
# one call per sequence (batch_benchmark) and the server under 16 clients against the same work
# batched in process (serving_report.py), both with every core of that machine.
#
#   bench/device_batching.sh pack               # here, after a build: writes build-device.tar.xz
#   bench/device_batching.sh run [out folder]   # there ($OUT by default): unpacks and measures
#
# The binaries are built here against Debian's libraries, which travel beside them
# (bench/package_for_device.sh); packed as one xz archive they fit the device tool's carry limit
# (the libraries alone are ≈60 MiB, oneDNN most of it). The run takes about 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly ARCHIVE=build-device.tar.xz
readonly BINARIES=(build/server/attnserve build/bench/attnserve_loadgen build/bench/batch_benchmark)

pack() {
  local folder
  folder=$(mktemp -d)
  for binary in "${BINARIES[@]}"; do
    bench/package_for_device.sh "$binary" "$folder/build-device" > /dev/null
  done
  strip --strip-debug "$folder"/build-device/{attnserve,attnserve_loadgen,batch_benchmark}
  tar -C "$folder" -cJf "$ARCHIVE" build-device
  rm -rf "$folder"
  echo "wrote $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1)); carry it to the device and run:"
  echo "  bench/device_batching.sh run"
}

run() {
  local out=${1:-${OUT:?give an output folder or set OUT}}
  mkdir -p "$out"
  tar -xJf "$ARCHIVE"
  { nproc; lscpu; } > "$out/machine.txt"
  # The core's ratios with one OpenMP team over all cores.
  OMP_NUM_THREADS=$(nproc) build-device/batch_benchmark.sh --benchmark_min_time=0.5 \
      --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      2>&1 | tee "$out/batch_benchmark.txt"
  # The device's python3 has numpy; here Debian's has it (PLATFORM.md).
  local python=python3
  "$python" -c "import numpy" 2> /dev/null || python=/usr/bin/python3
  "$python" bench/serving_report.py --server build-device/attnserve.sh \
      --loadgen build-device/attnserve_loadgen.sh --warmup_seconds 3 \
      2>&1 | tee "$out/serving_report.md"
}

case "${1:-}" in
  pack) pack ;;
  run) run "${@:2}" ;;
  *) echo "usage: $0 pack | run [out folder]" >&2; exit 2 ;;
esac
