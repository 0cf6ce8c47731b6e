# attnserve container image: a multi-stage build on Debian 12 (bookworm) packages only.
#
#   docker build -t attnserve .            (Docker: DOCKER_BUILDKIT=0 works too)
#   podman build --format docker -t attnserve .
#   docker run --rm -p 50051:50051 -p 9464:9464 attnserve [--max_batch=16 ...]
#
# Arguments after the image name are appended to the ENTRYPOINT flags; a flag given again
# overrides the default (e.g. --grpc_address=0.0.0.0:8001).
# deploy/docker/smoke_test.sh builds and checks this image offline.

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# Builder: compilers + -dev packages, then a Release build of the server only (no tests).
FROM ${BASE_IMAGE} AS builder

ARG BUILD_JOBS=2
ARG BUILD_TYPE=Release

# Dependencies first, so that this layer stays cached while the sources change.
COPY scripts/install_deps.sh /tmp/install_deps.sh
RUN bash /tmp/install_deps.sh build \
    && rm -rf /var/lib/apt/lists/* /tmp/install_deps.sh

WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja \
        -DCMAKE_BUILD_TYPE=${BUILD_TYPE} \
        -DATTNSERVE_BUILD_TESTS=OFF \
    && cmake --build /build --target attnserve -j"${BUILD_JOBS}" \
    && install -D -m 0755 /build/server/attnserve /opt/attnserve/bin/attnserve \
    && strip --strip-unneeded /opt/attnserve/bin/attnserve

# ---------------------------------------------------------------------------------------------
# Runtime: shared libraries only, the binary, a non-root user.
FROM ${BASE_IMAGE} AS runtime

COPY scripts/install_deps.sh /tmp/install_deps.sh
RUN bash /tmp/install_deps.sh runtime \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /tmp/install_deps.sh \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
               --shell /usr/sbin/nologin attnserve

COPY --from=builder /opt/attnserve/bin/attnserve /usr/local/bin/attnserve

# Fail the build (rather than the first start) if install_deps.sh's runtime list misses a library.
RUN if ldd /usr/local/bin/attnserve | grep 'not found'; then \
        echo 'attnserve: shared libraries missing from scripts/install_deps.sh runtime' >&2; exit 1; \
    fi

USER 10001:10001
EXPOSE 50051 9464

# Liveness via the metrics endpoint, with bash's /dev/tcp only (no curl in the image). Set
# ATTNSERVE_METRICS_PORT when --metrics_address moves the port. Needs --format docker under podman;
# orchestrators should probe the gRPC health service instead.
ENV ATTNSERVE_METRICS_PORT=9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${ATTNSERVE_METRICS_PORT:-9464} && printf 'GET /metrics HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r status <&3 && [[ $status == *' 200 '* ]]"]

# The server handles SIGTERM/SIGINT itself (graceful drain, exit 0), so it can be PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/attnserve", "--grpc_address=0.0.0.0:50051", "--metrics_address=0.0.0.0:9464"]
CMD []
