#!/usr/bin/python3
"""End-to-end smoke check of a running attnserve server.

    /usr/bin/python3 clients/python/smoke_check.py --address 127.0.0.1:50051 \
        [--metrics_url http://127.0.0.1:9464/metrics] [--timeout 60]

Checks, in order:
  1. the server becomes reachable and grpc.health.v1.Health/Check("") answers SERVING;
  2. Encode of a random FLOAT32 [2, 5, 16] tensor with the Vaswani sinusoidal encoding and
     position_offset 3 equals an independent numpy computation (max abs error < 1e-5);
  3. Attend on the demo model demo-sinusoidal with a batch of two identical sequences answers a
     finite [2, 6, 512] output whose two items agree (< 1e-6), the same on a second call;
  4. (with --metrics_url) the Prometheus endpoint answers 200 and exports grpc_server_handled_total.

Uses the Python stubs generated at build time (build/python, or $ATTNSERVE_PYTHON_STUBS, or
--stubs). Run it with Debian's /usr/bin/python3, which sees python3-grpcio/protobuf/numpy.
Exits 0 when every check passed, 1 on a failed check, 2 on a usage/setup error.
"""

import argparse
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

D_MODEL_SHAPE = (2, 5, 16)
POSITION_OFFSET = 3
TOLERANCE = 1e-5


class CheckFailed(Exception):
    pass


def log(msg):
    print(f"[smoke_check] {msg}", flush=True)


def setup_error(msg):
    print(f"[smoke_check] ERROR {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_stubs(stubs_dir):
    if stubs_dir is None:
        stubs_dir = os.environ.get("ATTNSERVE_PYTHON_STUBS") or str(REPO_ROOT / "build" / "python")
    stubs = pathlib.Path(stubs_dir)
    needed = ["attnserve/v1/attention_service_pb2.py", "attnserve/v1/attention_service_pb2_grpc.py",
              "attnserve/v1/tensor_pb2.py", "attnserve/v1/positional_encoding_pb2.py",
              "health_pb2.py", "health_pb2_grpc.py"]
    missing = [n for n in needed if not (stubs / n).is_file()]
    if missing:
        setup_error(f"Python stubs missing under {stubs}: {', '.join(missing)} "
                    "(build them: cmake --build build --target attnserve_python_stubs)")
    sys.path.insert(0, str(stubs))
    try:
        import grpc  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        setup_error(f"{e}: run with /usr/bin/python3 and install python3-grpcio python3-protobuf "
                    "python3-numpy")
    log(f"stubs: {stubs}")


def wait_serving(grpc, health_pb2, health_pb2_grpc, channel, deadline):
    """Waits until the channel connects and Health/Check("") says SERVING."""
    remaining = deadline - time.monotonic()
    try:
        grpc.channel_ready_future(channel).result(timeout=max(remaining, 0.1))
    except grpc.FutureTimeoutError:
        raise CheckFailed("server not reachable before the deadline")
    stub = health_pb2_grpc.HealthStub(channel)
    last = None
    while True:
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
        if time.monotonic() >= deadline:
            raise CheckFailed(f"health status of service '' is not SERVING before the deadline (last: {last})")
        time.sleep(0.2)


def sinusoidal_vaswani(positions, d, base=10000.0):
    """P[p, 2k] = sin(p·w_k), P[p, 2k+1] = cos(p·w_k), w_k = base^(−2k/d), in float64."""
    import numpy as np
    p = np.asarray(positions, dtype=np.float64)[:, None]
    k = np.arange((d + 1) // 2, dtype=np.float64)
    w = base ** (-2.0 * k / d)
    table = np.zeros((len(positions), d), dtype=np.float64)
    table[:, 0::2] = np.sin(p * w)[:, : (d + 1) // 2]
    table[:, 1::2] = np.cos(p * w)[:, : d // 2]
    return table


def check_encode(grpc, channel, seed):
    import numpy as np
    from attnserve.v1 import attention_service_pb2 as svc
    from attnserve.v1 import attention_service_pb2_grpc as svc_grpc
    from attnserve.v1 import positional_encoding_pb2 as pe
    from attnserve.v1 import tensor_pb2

    batch, seq, d = D_MODEL_SHAPE
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(D_MODEL_SHAPE).astype(np.float32)
    request = svc.EncodeRequest(
        input=tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=list(D_MODEL_SHAPE),
                                data=x.astype("<f4").tobytes()),
        encoding=pe.PositionalEncoding(sinusoidal=pe.SinusoidalEncoding(variant=pe.VASWANI)),
        position_offset=POSITION_OFFSET)
    try:
        response = svc_grpc.AttentionServiceStub(channel).Encode(request, timeout=10.0)
    except grpc.RpcError as e:
        raise CheckFailed(f"Encode failed: {e.code().name}: {e.details()}")

    out = response.output
    if out.dtype != tensor_pb2.FLOAT32:
        raise CheckFailed(f"Encode output dtype {tensor_pb2.DataType.Name(out.dtype)}, want FLOAT32")
    if list(out.shape) != list(D_MODEL_SHAPE):
        raise CheckFailed(f"Encode output shape {list(out.shape)}, want {list(D_MODEL_SHAPE)}")
    if len(out.data) != x.size * 4:
        raise CheckFailed(f"Encode output has {len(out.data)} bytes, want {x.size * 4}")
    y = np.frombuffer(out.data, dtype="<f4").reshape(D_MODEL_SHAPE).astype(np.float64)

    positions = np.arange(POSITION_OFFSET, POSITION_OFFSET + seq)
    expected = x.astype(np.float64) + sinusoidal_vaswani(positions, d)[None, :, :]
    err = float(np.max(np.abs(y - expected)))
    if not np.isfinite(err) or err >= TOLERANCE:
        b, t, c = np.unravel_index(int(np.nanargmax(np.abs(y - expected))), D_MODEL_SHAPE)
        raise CheckFailed(f"Encode max abs error {err:.3g} >= {TOLERANCE:g} (worst at batch {b}, "
                          f"token {t}, channel {c}: got {y[b, t, c]!r}, want {expected[b, t, c]!r})")
    log(f"OK  Encode sinusoidal/VASWANI {list(D_MODEL_SHAPE)} position_offset={POSITION_OFFSET}: "
        f"max abs error {err:.2e} < {TOLERANCE:g} (seed {seed})")


def check_attend(grpc, channel, seed):
    import numpy as np
    from attnserve.v1 import attention_service_pb2 as svc
    from attnserve.v1 import attention_service_pb2_grpc as svc_grpc
    from attnserve.v1 import tensor_pb2

    sequence = np.random.default_rng(seed + 1).standard_normal((6, 512)).astype(np.float32)
    x = np.stack([sequence, sequence])
    request = svc.AttendRequest(
        model="demo-sinusoidal", causal=True,
        query=tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=list(x.shape),
                                data=x.astype("<f4").tobytes()))
    outputs = []
    for _ in range(2):
        try:
            response = svc_grpc.AttentionServiceStub(channel).Attend(request, timeout=30.0)
        except grpc.RpcError as e:
            raise CheckFailed(f"Attend failed: {e.code().name}: {e.details()}")
        out = response.output
        if list(out.shape) != list(x.shape) or len(out.data) != x.size * 4:
            raise CheckFailed(f"Attend output shape {list(out.shape)} ({len(out.data)} bytes), "
                              f"want {list(x.shape)}")
        outputs.append(np.frombuffer(out.data, dtype="<f4").reshape(x.shape))
    y = outputs[0]
    if not np.all(np.isfinite(y)):
        raise CheckFailed("Attend output has non-finite values")
    spread = float(np.max(np.abs(y[0] - y[1])))
    repeat = float(np.max(np.abs(outputs[1] - y)))
    if spread >= 1e-6 or repeat >= 1e-6:
        raise CheckFailed(f"Attend: identical batch items differ by {spread:.3g}, repeated calls "
                          f"by {repeat:.3g} (want < 1e-6)")
    log(f"OK  Attend demo-sinusoidal {list(x.shape)} causal: finite, batch items and repeated "
        f"calls agree")


def check_metrics(url, deadline):
    # No proxies: the check must stay on loopback even when CI sets http_proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    last = None
    while True:
        try:
            with opener.open(url, timeout=5.0) as resp:
                body = resp.read().decode("utf-8", errors="replace")
                if resp.status == 200 and "grpc_server_handled_total" in body:
                    samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
                    log(f"OK  metrics {url}: HTTP 200, {samples} samples, grpc_server_handled_total present")
                    return
                last = f"HTTP {resp.status}, grpc_server_handled_total " + (
                    "present" if "grpc_server_handled_total" in body else "absent")
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        if time.monotonic() >= deadline:
            raise CheckFailed(f"metrics check of {url} failed: {last}")
        time.sleep(0.3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="gRPC address host:port")
    parser.add_argument("--metrics_url", help="Prometheus endpoint, e.g. http://127.0.0.1:9464/metrics")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for readiness (and for metrics) (default 60)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed of the Encode input")
    parser.add_argument("--stubs", help="generated Python stubs folder (default: $ATTNSERVE_PYTHON_STUBS "
                                        "or <repo>/build/python)")
    args = parser.parse_args()

    load_stubs(args.stubs)
    import grpc
    import health_pb2
    import health_pb2_grpc

    start = time.monotonic()
    deadline = start + args.timeout
    # No HTTP CONNECT proxy for a loopback check.
    channel = grpc.insecure_channel(args.address, options=[("grpc.enable_http_proxy", 0)])
    try:
        wait_serving(grpc, health_pb2, health_pb2_grpc, channel, deadline)
        log(f"OK  {args.address} grpc.health.v1 Check('') = SERVING "
            f"(after {time.monotonic() - start:.1f} s)")
        check_encode(grpc, channel, args.seed)
        check_attend(grpc, channel, args.seed)
        if args.metrics_url:
            check_metrics(args.metrics_url, max(deadline, time.monotonic() + 10.0))
    except CheckFailed as e:
        print(f"[smoke_check] FAIL {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        channel.close()
    log("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
