#!/usr/bin/python3
"""End-to-end tests of the compute queue and draining: RESOURCE_EXHAUSTED when the queue is full
or --rpc_threads calls are running, DEADLINE_EXCEEDED and CANCELLED while queued (the request is
never computed), a running request cancelled by its client freeing the worker at once (the kernel
stops between tiles), UNAVAILABLE for new requests while the server drains, with the in-flight
request still completed.

The server runs with one compute worker; a slow request (attention over 8192 tokens, ~0.6 s here)
holds it, and the tests wait for the `attnserve_compute_busy_workers` /
`attnserve_compute_waiting_requests` gauges instead of sleeping, so they do not depend on timing.

    /usr/bin/python3 tests/e2e/queue_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import signal
import sys
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (  # noqa: E402
    grpc, pb, pb_grpc, pe_pb2, health_pb2, health_pb2_grpc, ServerProcess, ServerTestCase,
    f32_tensor, metric_value)

SLOW_ARGS = ("--compute_workers=1", "--compute_queue_depth=1",
             "--max_attention_elements=1000000000", "--max_sequence_length=16384")
WAIT_S = 60
# The slow request's q/k/v and output are 16 MB each: past gRPC Python's 4 MB default.


def slow_sdpa_request():
    """B=1, H=8, 8192 tokens, head_dim 64, not causal: ~140 GFLOP, ~0.6 s on two cores, well over
    the 0.1 s deadline of the queued call in test_deadline_passing_while_queued_is_never_computed
    (a causal request's ~0.3 s left too little of it to run once the busy gauge was seen)."""
    x = np.random.default_rng(1).standard_normal((1, 8, 8192, 64)).astype(np.float32)
    t = f32_tensor(x)
    return pb.SdpaRequest(q=t, k=t, v=t)


def small_encode_request():
    x = np.zeros((1, 4, 8), np.float32)
    return pb.EncodeRequest(input=f32_tensor(x),
                            encoding=pe_pb2.PositionalEncoding(sinusoidal=pe_pb2.SinusoidalEncoding()))



def wait_for(metrics_url, name, value, labels=None):
    """Waits until the gauge equals `value`."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if metric_value(metrics_url, name, labels) == value:
            return
        time.sleep(0.005)
    raise AssertionError(f"{name}{labels or ''} did not reach {value} in {WAIT_S} s")


class SlowRequestTestCase(ServerTestCase):
    """A server with one compute worker, and the slow request to hold it with."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.big_channel = grpc.insecure_channel(cls.server.grpc_address, options=at.BIG_MESSAGES)
        cls.big_stub = pb_grpc.AttentionServiceStub(cls.big_channel)

    @classmethod
    def tearDownClass(cls):
        cls.big_channel.close()
        super().tearDownClass()

    def start_slow(self):
        """Starts the slow request in a thread; returns (thread, result holder) once it computes."""
        deadline = time.monotonic() + WAIT_S
        while metric_value(self.server.metrics_url, "attnserve_compute_busy_workers") != 0:
            self.assertLess(time.monotonic(), deadline, "the worker never became idle")
            time.sleep(0.005)
        result = {}

        def run():
            result["response"] = self.big_stub.ScaledDotProductAttention(slow_sdpa_request(),
                                                                         timeout=WAIT_S)
        thread = threading.Thread(target=run)
        thread.start()
        wait_for(self.server.metrics_url, "attnserve_compute_busy_workers", 1)
        return thread, result

    def refused_behind_a_slow_and_a_queued_call(self, expected_details):
        """With the slow request computing and a small one waiting for the worker, a third call
        is refused at once with RESOURCE_EXHAUSTED and `expected_details` in its message;
        returns (slow thread, its result holder, the waiting call's future)."""
        slow, slow_result = self.start_slow()
        queued = self.stub.Encode.future(small_encode_request(), timeout=WAIT_S)
        wait_for(self.server.metrics_url, "attnserve_compute_waiting_requests", 1)
        start = time.monotonic()
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.Encode(small_encode_request(), timeout=WAIT_S)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn(expected_details, ctx.exception.details())
        self.assertLess(time.monotonic() - start, 5.0)
        return slow, slow_result, queued


class QueueTest(SlowRequestTestCase):
    SERVER_ARGS = SLOW_ARGS

    def handled(self, method, code):
        return metric_value(self.server.metrics_url, "grpc_server_handled_total",
                     {"grpc_method": method, "grpc_code": code})

    def test_full_queue_is_resource_exhausted_and_the_queued_request_runs_later(self):
        # One computing, one waiting, depth 1: the next is refused at once.
        slow, slow_result, queued = self.refused_behind_a_slow_and_a_queued_call(
            "--compute_queue_depth=1")
        self.assertEqual(list(queued.result().output.shape), [1, 4, 8])
        slow.join()
        self.assertEqual(list(slow_result["response"].output.shape), [1, 8, 8192, 64])

    def test_deadline_passing_while_queued_is_never_computed(self):
        # The server ends the queued call when its deadline passes (DEADLINE_EXCEEDED), or, if the
        # client's own expiry reaches it first, as CANCELLED; either way it is never computed.
        def ended():
            return (self.handled("Encode", "DEADLINE_EXCEEDED")
                    + self.handled("Encode", "CANCELLED"))
        before_ended = ended()
        before_computed = metric_value(self.server.metrics_url, "attnserve_compute_seconds_count",
                                {"rpc": "Encode"})
        slow, _ = self.start_slow()
        with self.assertRaises(grpc.RpcError) as ctx:
            self.stub.Encode(small_encode_request(), timeout=0.1)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        slow.join()
        deadline = time.monotonic() + WAIT_S
        while ended() < before_ended + 1:
            self.assertLess(time.monotonic(), deadline, "the server never ended the queued call")
            time.sleep(0.01)
        self.assertEqual(metric_value(self.server.metrics_url, "attnserve_compute_seconds_count",
                               {"rpc": "Encode"}), before_computed)
        rejected = (metric_value(self.server.metrics_url, "attnserve_rejected_requests_total",
                          {"reason": "deadline"})
                    + metric_value(self.server.metrics_url, "attnserve_rejected_requests_total",
                            {"reason": "cancelled"}))
        self.assertGreaterEqual(rejected, 1)

    def test_cancelled_while_queued_is_never_computed(self):
        before = self.handled("Encode", "CANCELLED") + self.handled("Encode", "OK")
        before_computed = metric_value(self.server.metrics_url, "attnserve_compute_seconds_count",
                                {"rpc": "Encode"})
        slow, _ = self.start_slow()
        queued = self.stub.Encode.future(small_encode_request(), timeout=WAIT_S)
        wait_for(self.server.metrics_url, "attnserve_compute_waiting_requests", 1)
        queued.cancel()
        wait_for(self.server.metrics_url, "attnserve_compute_waiting_requests", 0)
        self.assertEqual(metric_value(self.server.metrics_url, "attnserve_compute_waiting_requests"), 0)
        slow.join()
        deadline = time.monotonic() + WAIT_S
        while self.handled("Encode", "CANCELLED") + self.handled("Encode", "OK") < before + 1:
            self.assertLess(time.monotonic(), deadline, "the cancelled call was not recorded")
            time.sleep(0.01)
        self.assertEqual(self.handled("Encode", "OK") + self.handled("Encode", "CANCELLED"),
                         before + 1)
        self.assertGreaterEqual(self.handled("Encode", "CANCELLED"), 1)
        self.assertEqual(metric_value(self.server.metrics_url, "attnserve_compute_seconds_count",
                               {"rpc": "Encode"}), before_computed, "the cancelled call ran")


class RpcThreadsTest(SlowRequestTestCase):
    """--rpc_threads caps the unary calls whose bodies run at once (each on a request thread while
    it waits for its computation); past it RESOURCE_EXHAUSTED at once, while the model RPCs,
    answered on gRPC's own threads, still work."""
    SERVER_ARGS = ("--compute_workers=1", "--compute_queue_depth=8", "--rpc_threads=2",
                   "--max_attention_elements=1000000000", "--max_sequence_length=16384")

    def test_calls_past_rpc_threads_are_refused_at_once(self):
        # Two bodies running (one computing, one waiting for the worker): the third is refused,
        # though the compute queue has room.
        slow, result, queued = self.refused_behind_a_slow_and_a_queued_call(
            "all 2 RPC threads are busy (--rpc_threads)")
        self.assertGreaterEqual(metric_value(self.server.metrics_url,
                                             "attnserve_rejected_requests_total",
                                             {"reason": "rpc_threads"}), 1)
        self.assertGreater(len(self.stub.ListModels(pb.ListModelsRequest(), timeout=5).models), 0)
        self.assertEqual(list(queued.result().output.shape), [1, 4, 8])
        slow.join()
        self.assertEqual(list(result["response"].output.shape), [1, 8, 8192, 64])


class DrainTest(unittest.TestCase):

    def test_draining_server_refuses_new_requests_and_finishes_the_running_one(self):
        # The grace period must outlast the slow request, which takes tens of seconds under
        # ThreadSanitizer (scripts/sanitize.sh thread).
        server = ServerProcess(at.SERVER_PATH,
                               (*SLOW_ARGS, f"--shutdown_grace_seconds={WAIT_S}")).start()
        try:
            channel = grpc.insecure_channel(server.grpc_address, options=at.BIG_MESSAGES)
            stub = pb_grpc.AttentionServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            result = {}

            def run():
                result["response"] = stub.ScaledDotProductAttention(slow_sdpa_request(),
                                                                    timeout=WAIT_S)
            slow = threading.Thread(target=run)
            slow.start()
            wait_for(server.metrics_url, "attnserve_compute_busy_workers", 1)
            server.proc.send_signal(signal.SIGTERM)
            # Health turns NOT_SERVING, and new calls are refused as UNAVAILABLE.
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                time.sleep(0.01)
            self.assertEqual(status, health_pb2.HealthCheckResponse.NOT_SERVING)
            refused = None
            while time.monotonic() < deadline and refused is None:
                try:
                    stub.Encode(small_encode_request(), timeout=5)
                except grpc.RpcError as err:
                    refused = err
                time.sleep(0.01)
            self.assertIsNotNone(refused, "new requests were still served while draining")
            self.assertEqual(refused.code(), grpc.StatusCode.UNAVAILABLE, refused.details())
            slow.join()
            self.assertEqual(list(result["response"].output.shape), [1, 8, 8192, 64])
            channel.close()
            self.assertEqual(server.proc.wait(timeout=WAIT_S), 0)
        finally:
            server.kill()


class CancelRunningTest(ServerTestCase):
    # 4 heads × 16384 tokens: ~275 GFLOP, seconds on two cores; 50 MB of request.
    SERVER_ARGS = ("--compute_workers=1", "--max_sequence_length=16384",
                   "--max_attention_elements=2000000000")

    def test_a_cancelled_running_request_frees_its_worker_promptly(self):
        x = np.random.default_rng(2).standard_normal((1, 4, 16384, 64)).astype(np.float32)
        t = f32_tensor(x)
        request = pb.SdpaRequest(q=t, k=t, v=t)
        channel = grpc.insecure_channel(self.server.grpc_address, options=at.BIG_MESSAGES)
        stub = pb_grpc.AttentionServiceStub(channel)
        try:
            start = time.monotonic()
            stub.ScaledDotProductAttention(request, timeout=WAIT_S)
            full = time.monotonic() - start
            self.assertGreater(full, 0.5, "the request must be long enough to cancel midway")

            call = stub.ScaledDotProductAttention.future(request, timeout=WAIT_S)
            wait_for(self.server.metrics_url, "attnserve_compute_busy_workers", 1)
            time.sleep(min(0.2, full / 4))  # well inside the computation
            cancelled = time.monotonic()
            call.cancel()
            wait_for(self.server.metrics_url, "attnserve_compute_busy_workers", 0)
            freed = time.monotonic() - cancelled
            print(f"cancel: worker freed after {freed:.3f} s; full run {full:.3f} s", file=sys.stderr)
            # Tiles take milliseconds: the worker is free long before the computation would end.
            self.assertLess(freed, full / 4, f"freed after {freed:.3f} s; full run {full:.3f} s")
            with self.assertRaises(grpc.FutureCancelledError):
                call.result()
            # The server saw the cancellation (not a completed call).
            deadline = time.monotonic() + WAIT_S
            while metric_value(self.server.metrics_url, "grpc_server_handled_total",
                        {"grpc_method": "ScaledDotProductAttention",
                         "grpc_code": "CANCELLED"}) < 1:
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.01)
        finally:
            channel.close()


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
