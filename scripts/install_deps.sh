#!/usr/bin/env bash
# Installs the Debian 12 packages attnserve needs, skipping those already installed.
#   scripts/install_deps.sh build    compilers and -dev libraries to build the server
#   scripts/install_deps.sh test     build + test tools (GoogleTest, Benchmark, Python gRPC client)
#   scripts/install_deps.sh runtime  shared libraries the attnserve binary needs to run
#   scripts/install_deps.sh fuzz     build + clang 14 with libFuzzer and its sanitizer runtimes
# apt waits (up to 10 minutes) for another install holding its lock instead of failing at once.
set -euo pipefail

runtime=(libgrpc++1.51 libprotobuf32 libdnnl2 libgomp1 libabsl20220623 libprometheus-cpp-pull1.0
         libprometheus-cpp-core1.0 libspdlog1.10 ca-certificates)
build=(build-essential cmake ninja-build pkg-config libgrpc++-dev libgrpc-dev protobuf-compiler-grpc
       libprotobuf-dev protobuf-compiler libdnnl-dev ocl-icd-opencl-dev libabsl-dev
       prometheus-cpp-dev libspdlog-dev nlohmann-json3-dev grpc-proto libssl-dev libboost-dev)
test=("${build[@]}" libgtest-dev libgmock-dev libbenchmark-dev python3 python3-grpcio
      python3-protobuf python3-numpy python3-matplotlib python3-yaml python3-kubernetes python3-h2 curl chromium
      prometheus)
# clang's OpenMP (libomp) is needed by the core compiled with clang.
fuzz=("${build[@]}" clang-14 libclang-rt-14-dev libomp-14-dev)

case "${1:-}" in
  runtime) wanted=("${runtime[@]}") ;;
  build) wanted=("${build[@]}") ;;
  fuzz) wanted=("${fuzz[@]}") ;;
  test) wanted=("${test[@]}")
        # kubectl renders deploy/k8s (kubectl kustomize). Debian's kubernetes-client provides one;
        # a kubectl installed otherwise (e.g. from Kubernetes' own repository) is used as it is.
        command -v kubectl >/dev/null || wanted+=(kubernetes-client) ;;
  *) echo "usage: $0 build|test|runtime|fuzz" >&2; exit 2 ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing: ${missing[*]}"
lock_wait=(-o DPkg::Lock::Timeout=600)
$sudo apt-get "${lock_wait[@]}" update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get "${lock_wait[@]}" install -y -q \
  --no-install-recommends "${missing[@]}"
