"""Shared fixtures of the attnserve end-to-end tests (tests/e2e/*_test.py).

A test script uses it like this, before it touches any stub:

    import attnserve_testing as at
    UNITTEST_ARGV = at.setup_from_argv()        # parses --server/--stubs, imports the stubs
    from attnserve_testing import grpc, pb, tensor_pb2, pe_pb2, ServerTestCase, f32_tensor, ...
    ...
    if __name__ == "__main__":
        at.run_tests(UNITTEST_ARGV)

--server and --stubs default to build/server/attnserve and build/python under the repository root
(or $ATTNSERVE_SERVER / $ATTNSERVE_PYTHON_STUBS); every other argument goes to unittest (e.g. -v,
-k Encode, a test name). Run with Debian's /usr/bin/python3, which sees python3-grpcio, -protobuf
and -numpy.

What is here:
  * ServerProcess: one attnserve process on free loopback ports, its log drained and kept.
  * ServerTestCase: one server per test class (setUpClass), stopped with SIGTERM in
    tearDownClass, which fails unless the server exits 0; RPC helpers and assertRpcError.
  * Tensor codecs: f32_tensor, bf16_round, bf16_to_f32, bf16_tensor, int_tensor, to_numpy.
  * parse_exposition: a strict parser of the Prometheus text format.
"""

import argparse
import atexit
import json
import struct
import os
import pathlib
import re
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Filled in by setup() before any test runs.
grpc = None
pb = None          # attnserve.v1.attention_service_pb2
pb_grpc = None     # attnserve.v1.attention_service_pb2_grpc
tensor_pb2 = None
pe_pb2 = None      # attnserve.v1.positional_encoding_pb2
mc_pb2 = None      # attnserve.v1.model_config_pb2
health_pb2 = None
health_pb2_grpc = None
reflection_pb2 = None
reflection_pb2_grpc = None
v2 = None          # inference.grpc_predict_v2_pb2 (KServe v2)
v2_grpc = None
SERVER_PATH = None
STUBS_PATH = None  # the generated Python stubs' folder

SERVICE_NAME = "attnserve.v1.AttentionService"
STARTUP_DEADLINE_S = 20.0
STOP_DEADLINE_S = 5.0
RPC_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------
# Arguments and stubs
# ---------------------------------------------------------------------------------------------

def _prog():
    return pathlib.Path(sys.argv[0]).stem or "attnserve_testing"


def _load_stubs(stubs_dir):
    global grpc, pb, pb_grpc, tensor_pb2, pe_pb2, mc_pb2, health_pb2, health_pb2_grpc
    global reflection_pb2, reflection_pb2_grpc, v2, v2_grpc
    stubs = pathlib.Path(stubs_dir)
    needed = ["attnserve/v1/attention_service_pb2.py", "attnserve/v1/attention_service_pb2_grpc.py",
              "attnserve/v1/tensor_pb2.py", "attnserve/v1/positional_encoding_pb2.py",
              "attnserve/v1/model_config_pb2.py", "inference/grpc_predict_v2_pb2.py",
              "inference/grpc_predict_v2_pb2_grpc.py",
              "health_pb2.py", "health_pb2_grpc.py", "reflection_pb2.py",
              "reflection_pb2_grpc.py"]
    missing = [n for n in needed if not (stubs / n).is_file()]
    if missing:
        sys.exit(f"{_prog()}: Python stubs missing under {stubs}: {', '.join(missing)}")
    sys.path.insert(0, str(stubs))
    import grpc as grpc_mod
    from attnserve.v1 import attention_service_pb2, attention_service_pb2_grpc
    from attnserve.v1 import model_config_pb2
    from attnserve.v1 import positional_encoding_pb2
    from attnserve.v1 import tensor_pb2 as tensor_mod
    from inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    import health_pb2 as h_pb2
    import health_pb2_grpc as h_pb2_grpc
    import reflection_pb2 as r_pb2
    import reflection_pb2_grpc as r_pb2_grpc
    grpc, pb, pb_grpc = grpc_mod, attention_service_pb2, attention_service_pb2_grpc
    tensor_pb2, pe_pb2, mc_pb2 = tensor_mod, positional_encoding_pb2, model_config_pb2
    health_pb2, health_pb2_grpc = h_pb2, h_pb2_grpc
    reflection_pb2, reflection_pb2_grpc = r_pb2, r_pb2_grpc
    v2, v2_grpc = grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


def setup(server, stubs):
    """Checks the server binary and imports the stubs from `stubs`; idempotent."""
    global SERVER_PATH, STUBS_PATH
    if not os.access(server, os.X_OK):
        sys.exit(f"{_prog()}: server binary {server} is not executable")
    SERVER_PATH = os.path.abspath(server)
    STUBS_PATH = os.path.abspath(stubs)
    if pb is None:
        _load_stubs(stubs)


def setup_from_argv(argv=None):
    """Parses --server and --stubs out of argv (default sys.argv[1:]), calls setup() and returns
    the remaining arguments, meant for unittest."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--server", default=os.environ.get("ATTNSERVE_SERVER") or
                        str(REPO_ROOT / "build" / "server" / "attnserve"))
    parser.add_argument("--stubs", default=os.environ.get("ATTNSERVE_PYTHON_STUBS") or
                        str(REPO_ROOT / "build" / "python"))
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    setup(args.server, args.stubs)
    return rest


def loadgen_from_argv(argv=None):
    """Parses --loadgen (the load tool's path, default build/bench/attnserve_loadgen) out of argv
    (default sys.argv[1:]); returns (absolute path, remaining arguments)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--loadgen", default=str(REPO_ROOT / "build" / "bench" /
                                                 "attnserve_loadgen"))
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return os.path.abspath(args.loadgen), rest


def run_tests(unittest_argv):
    """unittest.main over the __main__ module with the arguments setup_from_argv left."""
    unittest.main(module="__main__", argv=[sys.argv[0]] + list(unittest_argv))


# ---------------------------------------------------------------------------------------------
# Server process
# ---------------------------------------------------------------------------------------------

_LIVE_SERVERS = []


@atexit.register
def _kill_leftover_servers():
    for server in list(_LIVE_SERVERS):
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


class ServerProcess:
    """One attnserve process on free ports; its log is drained by a thread and kept."""

    GRPC_RE = re.compile(r"\bgRPC listening on (\S+)")
    METRICS_RE = re.compile(r"\bmetrics listening on (http://\S+)")
    HTTP_RE = re.compile(r"\bHTTP \(KServe v2\) listening on (https?://\S+)")

    def __init__(self, path, extra_args=()):
        self.args = [str(path), "--grpc_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                     "--http_address=127.0.0.1:0", *extra_args]
        self.proc = None
        self.grpc_address = None
        self.http_url = None  # the KServe v2 REST door, e.g. http://127.0.0.1:40123
        self.metrics_url = None
        self._lines = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._eof = threading.Event()

    def log(self):
        with self._lock:
            return "".join(self._lines)

    def _drain(self):
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)
            m = self.GRPC_RE.search(line)
            if m:
                self.grpc_address = m.group(1)
            m = self.METRICS_RE.search(line)
            if m:
                self.metrics_url = m.group(1)
            m = self.HTTP_RE.search(line)
            if m:
                self.http_url = m.group(1)
            if self.grpc_address and self.metrics_url:
                self._ready.set()
        self.proc.stdout.close()
        self._eof.set()

    def start(self, deadline_s=STARTUP_DEADLINE_S):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, bufsize=1)
        _LIVE_SERVERS.append(self)
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + deadline_s
        while not self._ready.wait(timeout=0.05):
            if self.proc.poll() is not None:
                self._eof.wait(timeout=1.0)
                raise RuntimeError(f"server exited with {self.proc.returncode} before printing "
                                   f"its addresses; command {self.args}; log:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not print its gRPC and metrics addresses within "
                                   f"{deadline_s} s; command {self.args}; log:\n{self.log()}")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=STOP_DEADLINE_S):
        """Sends `sig` and returns the exit code, or None if it did not exit within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        self._eof.wait(timeout=1.0)
        if self in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(self)
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(self)


# Channel options for messages up to the server's default --max_message_bytes (64 MiB) both ways;
# gRPC's own default receive limit is 4 MiB.
BIG_MESSAGES = [("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20)]


class ServerTestCase(unittest.TestCase):
    """Starts one server per test class; tearDownClass asserts a clean SIGTERM exit."""

    SERVER_ARGS = ()
    CHANNEL_OPTIONS = ()  # e.g. BIG_MESSAGES

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess(SERVER_PATH, cls.SERVER_ARGS).start()
        try:
            cls.channel = grpc.insecure_channel(cls.server.grpc_address,
                                                options=list(cls.CHANNEL_OPTIONS))
            grpc.channel_ready_future(cls.channel).result(timeout=STARTUP_DEADLINE_S)
            cls.stub = pb_grpc.AttentionServiceStub(cls.channel)
        except BaseException:
            cls.server.kill()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        rc = cls.server.stop(signal.SIGTERM)
        if rc != 0:
            raise AssertionError(
                f"{cls.__name__}: server exit code after SIGTERM was "
                f"{'<no exit within %.0f s>' % STOP_DEADLINE_S if rc is None else rc}, expected 0;"
                f" log:\n{cls.server.log()}")

    # --- RPC helpers -----------------------------------------------------------------------

    def encode(self, **kwargs):
        return self.stub.Encode(pb.EncodeRequest(**kwargs), timeout=RPC_TIMEOUT_S)

    def attend(self, **kwargs):
        return self.stub.Attend(pb.AttendRequest(**kwargs), timeout=RPC_TIMEOUT_S)

    def sdpa(self, **kwargs):
        return self.stub.ScaledDotProductAttention(pb.SdpaRequest(**kwargs),
                                                   timeout=RPC_TIMEOUT_S)

    def position_bias(self, **kwargs):
        return self.stub.PositionBias(pb.PositionBiasRequest(**kwargs), timeout=RPC_TIMEOUT_S)

    def list_models(self):
        return self.stub.ListModels(pb.ListModelsRequest(), timeout=RPC_TIMEOUT_S)

    def assertRpcError(self, code, fn, *args, contains=(), **kwargs):
        """Calls fn and asserts it fails with `code` and details containing every `contains`."""
        with self.assertRaises(grpc.RpcError) as ctx:
            fn(*args, **kwargs)
        err = ctx.exception
        self.assertEqual(err.code(), code,
                         f"expected {code.name}, got {err.code().name}: {err.details()!r}")
        details = err.details() or ""
        for needle in contains:
            self.assertIn(needle, details, f"details {details!r} should mention {needle!r}")
        return details


class RepositoryServerTestCase(ServerTestCase):
    """A server over a model repository built in a temporary folder (`cls.tmp`) before it starts.

    Subclasses implement `build(cls, tmp)`, which writes the models and returns the repository
    folder; the folder is removed when the class ends, also if starting fails."""

    @classmethod
    def build(cls, tmp):
        raise TypeError(f"{cls.__name__} must define build(cls, tmp)")

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix=f"attnserve_{cls.__name__}_")
        try:
            cls.repo = cls.build(cls.tmp)
            cls.SERVER_ARGS = (f"--model_repository={cls.repo}",)
            super().setUpClass()
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------

def f32_tensor(a):
    a = np.ascontiguousarray(a, dtype="<f4")
    return tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=list(a.shape), data=a.tobytes())


def bf16_round(a):
    """float32 → bfloat16 bits (uint16), round to nearest even (inputs here are finite)."""
    bits = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype("<u2")


def bf16_to_f32(bits):
    return (bits.astype("<u4") << 16).view("<f4")


def bf16_tensor(a):
    bits = bf16_round(a)
    return tensor_pb2.Tensor(dtype=tensor_pb2.BFLOAT16, shape=list(bits.shape),
                             data=bits.tobytes())


def int_tensor(a, dtype):
    np_dtype = {tensor_pb2.INT32: "<i4", tensor_pb2.INT64: "<i8"}[dtype]
    a = np.ascontiguousarray(a, dtype=np_dtype)
    return tensor_pb2.Tensor(dtype=dtype, shape=list(a.shape), data=a.tobytes())


def to_numpy(t):
    """Decodes a FLOAT32/BFLOAT16 Tensor into a float32 array, checking the byte length."""
    shape = tuple(t.shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if t.dtype == tensor_pb2.FLOAT32:
        if len(t.data) != 4 * n:
            raise AssertionError(f"FLOAT32 tensor {shape} has {len(t.data)} bytes, want {4 * n}")
        return np.frombuffer(t.data, dtype="<f4").reshape(shape).astype(np.float32)
    if t.dtype == tensor_pb2.BFLOAT16:
        if len(t.data) != 2 * n:
            raise AssertionError(f"BFLOAT16 tensor {shape} has {len(t.data)} bytes, want {2 * n}")
        return bf16_to_f32(np.frombuffer(t.data, dtype="<u2")).reshape(shape)
    raise AssertionError(f"unexpected dtype {t.dtype}")


# ---------------------------------------------------------------------------------------------
# Prometheus text exposition
# ---------------------------------------------------------------------------------------------

# name{label="value",...} value [timestamp]
_SAMPLE_RE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


# ---------------------------------------------------------------------------------------------
# Safetensors files (model repositories, checkpoints)
# ---------------------------------------------------------------------------------------------

def exact_bf16_bits(a):
    """float → bfloat16 bits; the values must be exactly representable (checked)."""
    bits = (np.ascontiguousarray(a, dtype="<f4").view("<u4") >> 16).astype("<u2")
    back = (bits.astype("<u4") << 16).view("<f4")
    if not np.array_equal(back, np.asarray(a, dtype=np.float32)):
        raise ValueError("values are not exactly representable in bfloat16")
    return bits


def exact_f16(a):
    half = np.asarray(a, dtype=np.float32).astype("<f2")
    if not np.array_equal(half.astype(np.float32), np.asarray(a, dtype=np.float32)):
        raise ValueError("values are not exactly representable in float16")
    return half


def safetensors_bytes(tensors):
    """tensors: {name: (dtype, array)} with dtype "F32", "BF16" or "F16" → the file's bytes:
    u64 LE header length N, N bytes of JSON (space-padded to a multiple of 8), then the data."""
    header, chunks, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        array = np.asarray(array)
        if dtype == "F32":
            raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        elif dtype == "BF16":
            raw = exact_bf16_bits(array).tobytes()
        elif dtype == "F16":
            raw = exact_f16(array).tobytes()
        else:
            raise ValueError(dtype)
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def parse_exposition(text):
    """Returns [(name, {label: value}, float)] for every sample line; raises on a bad line."""
    samples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            raise ValueError(f"line {lineno} is not a sample: {line!r}")
        labels = {}
        raw = m.group("labels") or ""
        pos = 0
        while pos < len(raw):
            lm = _LABEL_RE.match(raw, pos)
            if not lm:
                raise ValueError(f"line {lineno}: bad labels {raw!r}")
            labels[lm.group(1)] = (lm.group(2).replace('\\"', '"').replace("\\n", "\n")
                                   .replace("\\\\", "\\"))
            pos = lm.end()
        samples.append((m.group("name"), labels, float(m.group("value"))))
    return samples


def metric_value(metrics_url, name, labels=None, default=0.0):
    """Sum of the samples of `name` on the server's /metrics whose labels include `labels`;
    `default` when there is none."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    values = [value for sample, sample_labels, value in parse_exposition(text)
              if sample == name
              and all(sample_labels.get(k) == v for k, v in (labels or {}).items())]
    return sum(values) if values else default


def _status_mb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_mb(pid):
    """Resident memory of process `pid` in MiB (VmRSS)."""
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid):
    """The largest resident memory process `pid` has had, in MiB (VmHWM)."""
    return _status_mb(pid, "VmHWM")


# Under AddressSanitizer or ThreadSanitizer (scripts/sanitize.sh) the server's resident size
# includes the sanitizer's own memory (shadow, quarantine), which no bound describes: tests check
# bounds on RSS only in the plain build.
SANITIZED = bool(os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS"))
