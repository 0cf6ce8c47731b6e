#!/usr/bin/env bash
# Builds the attnserve container image and checks it end to end, offline:
#   bash deploy/docker/smoke_test.sh            (from the repository root; CI runs it as is)
#
# 1. installs podman + runc + debootstrap (and the Python gRPC client packages) from the Debian
#    mirror if missing;
# 2. creates the local base image debian:bookworm-slim with debootstrap --variant=minbase (no
#    registry is reachable here), unless it exists already;
# 3. builds the image from ./Dockerfile (layers are cached between runs); generates the Python
#    stubs (cmake target attnserve_python_stubs) only if build/python lacks them;
# 4. runs it on free loopback ports (host network namespace), waits until it listens, then
#    clients/python/smoke_check.py checks grpc.health.v1 SERVING, an Encode against numpy, /metrics;
# 5. runs the image's HEALTHCHECK once, sends SIGTERM and requires exit status 0 within
#    ATTNSERVE_SMOKE_STOP_TIMEOUT seconds; removes the container (images stay cached);
# 6. runs it again with TLS (certificates made with openssl) and a plaintext health port: a TLS
#    call, the plaintext one refused, the HEALTHCHECK and --health_probe over TLS, SIGTERM -> 0.
#
# Everything it creates (podman configs and storage, the base rootfs) lives under
# $ATTNSERVE_DOCKER_WORK (default /var/tmp/attnserve-docker), so reruns take seconds.
# Environment knobs (all optional):
#   ATTNSERVE_DOCKER_WORK            work folder                       (/var/tmp/attnserve-docker)
#   ATTNSERVE_IMAGE                  image tag to build and run        (localhost/attnserve:smoke)
#   ATTNSERVE_BUILD_DIR              host build folder holding python/ (build)
#   ATTNSERVE_PYTHON_STUBS           generated Python stubs            ($ATTNSERVE_BUILD_DIR/python)
#   ATTNSERVE_DEBIAN_MIRROR          mirror for debootstrap            (the one apt uses)
#   ATTNSERVE_SMOKE_BUILD_TIMEOUT    seconds for the image build       (3600)
#   ATTNSERVE_SMOKE_READY_TIMEOUT    seconds for the server to be ready (90)
#   ATTNSERVE_SMOKE_STOP_TIMEOUT     seconds allowed from SIGTERM to exit (15)
#   ATTNSERVE_SMOKE_BUILD_JOBS       parallel compile jobs in the image ($(nproc))
# Exit status: 0 when every check passed; non-zero with a "smoke_test: FAIL:" line otherwise.
set -euo pipefail

SECONDS=0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

WORK="${ATTNSERVE_DOCKER_WORK:-/var/tmp/attnserve-docker}"
IMAGE="${ATTNSERVE_IMAGE:-localhost/attnserve:smoke}"
BASE_IMAGE="debian:bookworm-slim"
BUILD_DIR="${ATTNSERVE_BUILD_DIR:-build}"
STUBS="${ATTNSERVE_PYTHON_STUBS:-$BUILD_DIR/python}"
BUILD_TIMEOUT="${ATTNSERVE_SMOKE_BUILD_TIMEOUT:-3600}"
READY_TIMEOUT="${ATTNSERVE_SMOKE_READY_TIMEOUT:-90}"
STOP_TIMEOUT="${ATTNSERVE_SMOKE_STOP_TIMEOUT:-15}"
BUILD_JOBS="${ATTNSERVE_SMOKE_BUILD_JOBS:-$(nproc)}"
PY=/usr/bin/python3   # Debian's python: the one that sees python3-grpcio/protobuf/numpy
CONTAINER=""

# podman 4.3 tries to set up healthcheck timers through systemd, which these hosts don't run; the
# check itself works (run explicitly below), so drop that one harmless error line.
# Usage: podman_q SECONDS ARGS... (podman with a timeout).
podman_q() { timeout "$1" podman "${@:2}" 2> >(grep -v 'unable to get systemd connection' >&2); }

log() { echo "==> [$(printf '%4d' "$SECONDS")s] $*"; }

container_logs() {
  if [ -n "$CONTAINER" ] && podman container exists "$CONTAINER" 2>/dev/null; then
    echo "---- last lines of the container log ($CONTAINER) ----" >&2
    timeout 20 podman logs --tail 60 "$CONTAINER" >&2 2>&1 || true
    echo "---- end of container log ----" >&2
  fi
}

die() {
  echo "smoke_test: FAIL: $*" >&2
  container_logs
  exit 1
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$CONTAINER" ] && podman container exists "$CONTAINER" 2>/dev/null; then
    timeout 60 podman rm -f --time 2 "$CONTAINER" >/dev/null 2>&1 \
      || echo "smoke_test: warning: could not remove container $CONTAINER" >&2
  fi
  if [ "$rc" -eq 0 ]; then
    log "smoke test PASSED in ${SECONDS}s"
  else
    echo "smoke_test: FAILED (exit $rc) after ${SECONDS}s" >&2
  fi
}

# ------------------------------------------------------------------------------------------------
# 0. Privileges: podman runs rootful here (rootless needs subuid setup and fuse-overlayfs).
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "needs root (or passwordless sudo) for apt and podman"
  log "re-running under sudo"
  exec sudo -n -E bash "${BASH_SOURCE[0]}" "$@"
fi
if [ ! -f Dockerfile ] || [ ! -f scripts/install_deps.sh ]; then
  die "run from the attnserve repository ($ROOT)"
fi
export DEBIAN_FRONTEND=noninteractive

# ------------------------------------------------------------------------------------------------
# 1. Host packages.
host_pkgs=(podman runc conmon containernetworking-plugins debootstrap util-linux
           python3 python3-grpcio python3-protobuf python3-numpy)
missing=()
for pkg in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing host packages: ${missing[*]}"
  timeout 600 apt-get update -q </dev/null >/dev/null || die "apt-get update failed"
  timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# ------------------------------------------------------------------------------------------------
# 2. Podman configuration of our own (no system config is read or changed).
mkdir -p "$WORK/conf" "$WORK/tmp"
exec 9>"$WORK/lock"
flock -w 1800 9 || die "another smoke test holds $WORK/lock for over 30 min"

# containers.conf: what works on these hosts (PLATFORM.md, "Containers"): host network namespace
# (no CNI bridge/iptables needed), ulimits that can't be raised here, runc (crun fails on this
# cgroup v1 setup), cgroupfs (no systemd), a file event log (no journald).
cat >"$WORK/conf/containers.conf" <<'EOF'
[containers]
netns = "host"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
# No registry: every image is local, so short names never resolve to a remote one.
cat >"$WORK/conf/registries.conf" <<'EOF'
unqualified-search-registries = []
short-name-mode = "permissive"
EOF
# Storage: kernel overlay where the work folder supports it, vfs otherwise. The driver is decided
# once; an existing storage keeps its driver.
storage_conf="$WORK/conf/storage.conf"
if [ ! -f "$storage_conf" ] || [ ! -d "$WORK/storage" ]; then
  driver=vfs
  probe="$WORK/tmp/overlay-probe"
  rm -rf "$probe" && mkdir -p "$probe"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
       "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    driver=overlay
  fi
  rm -rf "$probe"
  cat >"$storage_conf" <<EOF
[storage]
driver = "$driver"
graphroot = "$WORK/storage"
runroot = "$WORK/run"
EOF
fi
export CONTAINERS_CONF="$WORK/conf/containers.conf"
export CONTAINERS_STORAGE_CONF="$storage_conf"
export CONTAINERS_REGISTRIES_CONF="$WORK/conf/registries.conf"
export TMPDIR="$WORK/tmp"   # podman build's scratch space, next to its storage
timeout 60 podman info >/dev/null || die "podman does not work with $WORK/conf (podman info failed)"
log "podman $(podman version --format '{{.Client.Version}}') ready, storage $(sed -n 's/^driver = "\(.*\)"/\1/p' "$storage_conf") under $WORK"
trap cleanup EXIT

# Containers left over by an interrupted earlier run (the lock guarantees none is in use).
for old in $(podman ps -a --format '{{.Names}}' | grep '^attnserve-smoke-' || true); do
  timeout 60 podman rm -f --time 2 "$old" >/dev/null 2>&1 || true
done

# ------------------------------------------------------------------------------------------------
# 3. Base image debian:bookworm-slim, built from the Debian mirror apt uses.
apt_uri() {  # URI of the first apt source for suite $1, without a trailing slash
  # shellcheck disable=SC2016  # $(...) are apt-get's format fields
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null \
    | awk -v s="$1" '$2 == s { sub(/\/$/, "", $1); print $1; exit }'
}
if podman image exists "$BASE_IMAGE"; then
  log "base image $BASE_IMAGE present"
else
  mirror="${ATTNSERVE_DEBIAN_MIRROR:-$(apt_uri bookworm)}"
  mirror="${mirror:-http://deb.debian.org/debian}"
  security="$(apt_uri bookworm-security)"
  rootfs="$WORK/rootfs"
  if [ ! -f "$rootfs/.complete" ]; then
    log "debootstrap --variant=minbase bookworm from $mirror"
    rm -rf "$rootfs"
    timeout 900 debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    # Make it look like the official slim image: deb822 sources incl. updates/security, no docs
    # or man pages, no package caches.
    rm -f "$rootfs/etc/apt/sources.list"
    {
      printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$mirror"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
      if [ -n "$security" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\n' "$security"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
      fi
    } >"$rootfs/etc/apt/sources.list.d/debian.sources"
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    rm -rf "$rootfs"/usr/share/{man,info,groff,lintian,linda}/* "$rootfs"/var/cache/apt/archives/*.deb \
           "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
           "$rootfs"/tmp/* "$rootfs/debootstrap"
    : >"$rootfs/etc/resolv.conf"
    touch "$rootfs/.complete"
  fi
  log "importing $rootfs as $BASE_IMAGE"
  tar --exclude=./.complete -C "$rootfs" -c . \
    | timeout 600 podman import --change 'CMD ["bash"]' - "localhost/$BASE_IMAGE" >/dev/null \
    || die "podman import of the base rootfs failed"
  rm -rf "$rootfs"   # the image holds it now
fi

# ------------------------------------------------------------------------------------------------
# 4. Python stubs for the client check.
if [ ! -f "$STUBS/attnserve/v1/attention_service_pb2_grpc.py" ] || [ ! -f "$STUBS/health_pb2_grpc.py" ]; then
  [ -z "${ATTNSERVE_PYTHON_STUBS:-}" ] || die "ATTNSERVE_PYTHON_STUBS=$STUBS has no generated stubs"
  log "generating Python stubs into $BUILD_DIR/python"
  timeout 1200 bash scripts/install_deps.sh build </dev/null || die "scripts/install_deps.sh build failed"
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    timeout 600 cmake -S . -B "$BUILD_DIR" -G Ninja -DATTNSERVE_BUILD_TESTS=OFF >/dev/null \
      || die "cmake configure of $BUILD_DIR failed"
  fi
  timeout 600 cmake --build "$BUILD_DIR" --target attnserve_python_stubs \
    || die "building the attnserve_python_stubs target failed"
fi

# ------------------------------------------------------------------------------------------------
# 5. The attnserve image.
log "building $IMAGE (podman build, $BUILD_JOBS jobs; timeout ${BUILD_TIMEOUT}s)"
build_start=$SECONDS
timeout "$BUILD_TIMEOUT" podman build --pull=never --network=host --format docker --layers \
    --build-arg "BUILD_JOBS=$BUILD_JOBS" -t "$IMAGE" -f Dockerfile . </dev/null \
  || die "image build failed or timed out (see the build output above)"
log "image built in $((SECONDS - build_start))s: $(podman image inspect --format '{{.Id}} {{.Size}}' "$IMAGE" | awk '{printf "%.12s, %.0f MB", $1, $2/1e6}')"
user="$(podman image inspect --format '{{.Config.User}}' "$IMAGE")"
case "$user" in ""|root|0|0:*) die "image runs as root (USER is '$user')";; esac

# ------------------------------------------------------------------------------------------------
# 6. Run the container on free loopback ports.
# free_ports N: N loopback ports free a moment ago, on one line.
free_ports() {
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
}

# wait_until_listening PORT: until $CONTAINER accepts connections on PORT (or stops, or
# READY_TIMEOUT passes).
wait_until_listening() {
  local ready_start=$SECONDS state
  until timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; do
    state="$(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$CONTAINER" 2>/dev/null || echo gone)"
    case "$state" in
      running*|created*|configured*) ;;
      *) die "container stopped before listening (state: $state)";;
    esac
    [ $((SECONDS - ready_start)) -lt "$READY_TIMEOUT" ] \
      || die "server did not listen on 127.0.0.1:$1 within ${READY_TIMEOUT}s"
    sleep 0.5
  done
  log "listening after $((SECONDS - ready_start))s"
}

# stop_container: SIGTERM must end the server (PID 1) with status 0, promptly; then removes it.
stop_container() {
  log "sending SIGTERM"
  local stop_start code stop_ms
  stop_start=$(date +%s%N)
  timeout 30 podman kill --signal TERM "$CONTAINER" >/dev/null || die "podman kill --signal TERM failed"
  if ! code="$(timeout "$STOP_TIMEOUT" podman wait "$CONTAINER")"; then
    die "container still running ${STOP_TIMEOUT}s after SIGTERM"
  fi
  stop_ms=$(( ($(date +%s%N) - stop_start) / 1000000 ))
  [ "$code" = 0 ] || die "container exited with status $code after SIGTERM (want 0)"
  log "OK  exited with status 0 ${stop_ms} ms after SIGTERM"
  podman_q 60 rm "$CONTAINER" >/dev/null || die "podman rm $CONTAINER failed"
  CONTAINER=""
}

read -r GRPC_PORT METRICS_PORT HTTP_PORT < <(free_ports 3) || die "could not pick free ports"
CONTAINER="attnserve-smoke-$$"
log "starting $CONTAINER: gRPC 127.0.0.1:$GRPC_PORT, HTTP 127.0.0.1:$HTTP_PORT, metrics 127.0.0.1:$METRICS_PORT"
# (--health-interval=disable: no systemd timer here; the check runs once below.)
# Configured through the environment (FLAGS_<name>), as the image documents: with the host network
# namespace this keeps the service on loopback, and the HEALTHCHECK probes the same address.
podman_q 60 run -d --name "$CONTAINER" --pull=never --network=host --health-interval=disable \
    -e "FLAGS_grpc_address=127.0.0.1:$GRPC_PORT" -e "FLAGS_metrics_address=127.0.0.1:$METRICS_PORT" \
    -e "FLAGS_http_address=127.0.0.1:$HTTP_PORT" \
    "$IMAGE" >/dev/null \
  || die "podman run failed"

wait_until_listening "$GRPC_PORT"
wait_until_listening "$HTTP_PORT"
# The KServe v2 REST door: readiness, and an inference with plain curl.
curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" | grep -q '"ready":true' \
  || die "GET /v2/health/ready on the HTTP port failed"
curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/v2/models/demo-rope/infer" \
    -d '{"inputs":[{"name":"input","shape":[1,1,256],"datatype":"FP32","data":'"$(printf '[%s1]' "$(printf '0,%.0s' $(seq 255))")"'}]}' \
  | grep -q '"name":"output","datatype":"FP32","shape":\[1,1,256\]' \
  || die "POST /v2/models/demo-rope/infer on the HTTP port failed"
log "OK  KServe v2 over HTTP: ready, and an inference with curl"
# The web console is in the image's binary: its page and the models it lists.
curl -sf "http://127.0.0.1:$HTTP_PORT/" | grep -q '<html' \
  || die "GET / (the web console) on the HTTP port failed"
curl -sf "http://127.0.0.1:$HTTP_PORT/console/api/models" | grep -q '"name":"demo-rope"' \
  || die "GET /console/api/models on the HTTP port failed"
log "OK  web console: its page and /console/api/models"

# ------------------------------------------------------------------------------------------------
# 7. Client checks from the host: health, Encode vs numpy, /metrics.
timeout $((READY_TIMEOUT + 120)) "$PY" clients/python/smoke_check.py \
    --address "127.0.0.1:$GRPC_PORT" --metrics_url "http://127.0.0.1:$METRICS_PORT/metrics" \
    --timeout "$READY_TIMEOUT" --stubs "$STUBS" </dev/null \
  || die "clients/python/smoke_check.py failed"

# The image's own HEALTHCHECK (`attnserve --health_probe` on FLAGS_grpc_address).
if [ "$(podman image inspect --format '{{if .Config.Healthcheck}}yes{{end}}' "$IMAGE" 2>/dev/null)" = yes ]; then
  timeout 60 podman healthcheck run "$CONTAINER" >/dev/null || die "the image's HEALTHCHECK reports unhealthy"
  log "OK  image HEALTHCHECK passes"
else
  log "note: the image has no HEALTHCHECK"
fi

# ------------------------------------------------------------------------------------------------
# 8. Graceful stop: SIGTERM must end the server (PID 1) with status 0, promptly.
stop_container

# ------------------------------------------------------------------------------------------------
# 9. Once more with TLS (certificates made here, mounted read-only) and a plaintext health port:
#    a TLS call from the host, the plaintext one refused; the image's HEALTHCHECK (on the health
#    port) and --health_probe over TLS on the main port, inside the container; SIGTERM -> 0.
CERTS="$(mktemp -d)"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" -days 2 \
    -subj "/CN=attnserve smoke CA" >/dev/null 2>&1 || die "openssl: CA"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$CERTS/server.ext"
openssl req "${ec[@]}" -keyout "$CERTS/server.key" -out "$CERTS/server.csr" \
    -subj "/CN=attnserve smoke" >/dev/null 2>&1 || die "openssl: server key"
openssl x509 -req -in "$CERTS/server.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -out "$CERTS/server.pem" -days 2 -extfile "$CERTS/server.ext" >/dev/null 2>&1 \
  || die "openssl: server certificate"
chmod 755 "$CERTS" && chmod 644 "$CERTS"/*  # readable by the image's user (test keys only)
read -r GRPC_PORT METRICS_PORT HEALTH_PORT HTTP_PORT < <(free_ports 4) \
  || die "could not pick free ports"
CONTAINER="attnserve-smoke-tls-$$"
log "starting $CONTAINER with TLS: gRPC 127.0.0.1:$GRPC_PORT, health 127.0.0.1:$HEALTH_PORT"
podman_q 60 run -d --name "$CONTAINER" --pull=never --network=host --health-interval=disable \
    -v "$CERTS:/tls:ro" \
    -e "FLAGS_grpc_address=127.0.0.1:$GRPC_PORT" -e "FLAGS_metrics_address=127.0.0.1:$METRICS_PORT" \
    -e "FLAGS_health_address=127.0.0.1:$HEALTH_PORT" -e "FLAGS_http_address=127.0.0.1:$HTTP_PORT" \
    -e FLAGS_tls_cert_file=/tls/server.pem -e FLAGS_tls_key_file=/tls/server.key \
    "$IMAGE" >/dev/null \
  || die "podman run (TLS) failed"
wait_until_listening "$GRPC_PORT"
timeout 120 "$PY" - "127.0.0.1:$GRPC_PORT" "$CERTS/ca.pem" "$STUBS" <<'EOF' || die "TLS calls failed"
import sys
sys.path.insert(0, "clients/python")
from attnserve_client import AttnservError, Client
address, ca, stubs = sys.argv[1:]
with Client(address, stubs=stubs, timeout=30, tls_ca=ca) as client:
    names = [m["name"] for m in client.list_models()]
    assert "demo-rope" in names, names
with Client(address, stubs=stubs, timeout=10) as client:
    try:
        client.list_models()
        raise SystemExit("a plaintext call was served on the TLS port")
    except AttnservError as e:
        assert e.code == "UNAVAILABLE", e
print("[smoke_test] TLS call served, plaintext refused")
EOF
timeout 60 podman healthcheck run "$CONTAINER" >/dev/null \
  || die "the image's HEALTHCHECK (health port) reports unhealthy with TLS on"
log "OK  image HEALTHCHECK passes with TLS on (plaintext health port)"
timeout 60 podman exec "$CONTAINER" /usr/local/bin/attnserve --health_probe --health_address= \
  || die "--health_probe over TLS on the main port failed"
log "OK  --health_probe speaks TLS on the main port"
wait_until_listening "$HTTP_PORT"
curl -sf --cacert "$CERTS/ca.pem" "https://127.0.0.1:$HTTP_PORT/v2/health/ready" \
  | grep -q '"ready":true' || die "HTTPS GET /v2/health/ready failed"
if curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null 2>&1; then
  die "plaintext HTTP was answered on the HTTPS port"
fi
log "OK  KServe v2 over HTTPS with the same certificate, plaintext refused"
stop_container
rm -rf "$CERTS"
exit 0
