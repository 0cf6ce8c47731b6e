# attnserve container image: a multi-stage build on Debian 12 (bookworm) packages only.
#
#   docker build -t attnserve .            (Docker: DOCKER_BUILDKIT=0 works too)
#   podman build --format docker -t attnserve .
#   docker run --rm -p 50051:50051 -p 8000:8000 -p 9464:9464 attnserve [--max_batch=16 ...]
#   docker run --rm -p 50051:50051 -v "$PWD/models:/models:ro" -e FLAGS_model_repository=/models \
#       -e FLAGS_compute_workers=2 attnserve
#
# Every flag can be set as an environment variable FLAGS_<name> or as an argument after the image
# name (arguments win). Move the ports with FLAGS_grpc_address / FLAGS_http_address /
# FLAGS_metrics_address rather than arguments: the HEALTHCHECK (`attnserve --health_probe`) reads
# the same variables.
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
# gRPC (attnserve.v1 and KServe v2), HTTP (KServe v2 REST), metrics.
EXPOSE 50051 8000 9464

# Two malloc arenas: memory freed by the calls goes back to where the next call takes it, instead
# of staying behind in one arena per thread, so the process's size follows the memory budget
# (--max_request_memory_bytes; docs/reliability.md "Memory").
ENV FLAGS_grpc_address=0.0.0.0:50051 \
    FLAGS_http_address=0.0.0.0:8000 \
    FLAGS_metrics_address=0.0.0.0:9464 \
    MALLOC_ARENA_MAX=2

# The binary's own probe: grpc.health.v1 Check on FLAGS_grpc_address (0.0.0.0 → loopback), exit 0
# only when SERVING, so a draining server turns unhealthy. Needs --format docker under podman.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/attnserve", "--health_probe", "--health_probe_timeout_seconds=4"]

# The server handles SIGTERM/SIGINT itself (graceful drain, exit 0), so it can be PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/attnserve"]
CMD []
