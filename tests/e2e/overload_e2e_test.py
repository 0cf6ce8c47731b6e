#!/usr/bin/python3
"""Overload: ten times the sustainable concurrency against one server.

The server runs one compute worker and a queue of 4, so it holds at most 5 Attend requests at
once: the sustainable concurrency is 5 (closed-loop clients), at which nothing is refused (a
client sends its next request only after its previous answer, so a sixth never arrives). The test
measures that load first, then drives 50 clients and checks:

  * the excess is answered RESOURCE_EXHAUSTED, and quickly: refused calls never wait for a
    computation, so their latency stays well below the admitted requests' (median and p99);
  * admitted requests keep a bounded latency: the queue is bounded, so their median stays within
    a few service times under the overload and their p99 within a stated bound (see
    ADMITTED_P50_SERVICE_TIMES);
  * resident memory stays under RSS_LIMIT_MB;
  * when the load drops, the next request succeeds at once, the queue is empty, and a single
    client is served without refusals and without waiting behind a queue.

Every figure is printed (docs/reliability.md records them).

    /usr/bin/python3 tests/e2e/overload_e2e_test.py --server build/server/attnserve \\
        --stubs build/python --loadgen build/bench/attnserve_loadgen
"""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

LOADGEN, _rest = at.loadgen_from_argv()
UNITTEST_ARGV = at.setup_from_argv(_rest)

from attnserve_testing import (  # noqa: E402
    pb, ServerTestCase, f32_tensor, metric_value, rss_mb)

WORKERS, QUEUE_DEPTH = 1, 4
SUSTAINABLE = WORKERS + QUEUE_DEPTH
OVERLOAD = 10 * SUSTAINABLE
SEQ = 128
# Under overload the worker never idles, so 1 / (OK requests per second) is the service time
# there, including the CPU the refused calls take from it (45 client threads and the server's
# handlers on 2 shared cores: 382 → 55 OK/s in one CI run). An admitted request waits behind at
# most QUEUE_DEPTH others, while an unbounded queue would put the 45 other clients ahead of it
# (≈50 service times at the median). Measured medians: 3.9 service times with gRPC's synchronous
# server, 10–13 on the callback API, where the service time is shorter (143–166 OK/s against
# 33–90 in CI runs, admitted p50 73–92 ms against 119–254 ms) while receiving and answering
# each admitted call among ~100 runnable threads is not. The p99 also carries that scheduling
# noise (measured 14 and 24 service times on the synchronous server, 23–62 on the callback
# API); its bound is stated, not tight. (Bounds relative to the p99 at the sustainable load,
# then 20 and 50 service times for the p99, each failed once in CI.)
ADMITTED_P50_SERVICE_TIMES = 25.0
ADMITTED_P99_SERVICE_TIMES = 80.0
# Resident memory under overload. Every call, refused or not, is received whole before it is
# answered (a 1×128×512 float32 query is 256 KiB, held as wire bytes and as a message), on one of
# ~50 handler threads whose malloc arenas keep freed blocks: RSS rises from ≈50 MiB at the
# sustainable load to a plateau of 100–200 MiB (measured over 40 s at this overload: no upward
# trend, docs/reliability.md), bounded by the number of calls in flight, not by their count.
RSS_LIMIT_MB = 320
SLACK_MS = 20.0




class OverloadTest(ServerTestCase):
    SERVER_ARGS = (f"--compute_workers={WORKERS}", f"--compute_queue_depth={QUEUE_DEPTH}",
                   "--access_log=off")

    def load(self, concurrency, seconds, expect):
        """Runs the load tool; returns its summary and the RSS samples (MiB) taken meanwhile."""
        samples = []
        proc = subprocess.Popen(
            [LOADGEN, f"--target={self.server.grpc_address}", "--rpc=attend",
             "--model=demo-sinusoidal", f"--seq={SEQ}", f"--concurrency={concurrency}",
             f"--duration_seconds={seconds}", f"--expect_codes={expect}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = threading.Event()

        def sample():
            while not done.wait(0.1):
                samples.append(rss_mb(self.server.proc.pid))
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        finally:
            done.set()
            sampler.join()
        self.assertEqual(proc.returncode, 0, f"{out}\n{err}")
        return json.loads(out.strip().splitlines()[-1]), samples

    def test_ten_times_the_sustainable_concurrency(self):
        single, _ = self.load(1, 2, "OK")
        sustained, sustained_rss = self.load(SUSTAINABLE, 4, "OK")
        rss_before = max(sustained_rss)
        over, over_rss = self.load(OVERLOAD, 8, "OK,RESOURCE_EXHAUSTED")
        # The load has stopped: the next request is served at once.
        query = f32_tensor(np.random.default_rng(0).standard_normal((1, SEQ, 512)))
        start = time.monotonic()
        self.stub.Attend(pb.AttendRequest(model="demo-sinusoidal", query=query),
                         timeout=at.RPC_TIMEOUT_S)
        first_after_ms = (time.monotonic() - start) * 1e3
        self.assertEqual(metric_value(self.server.metrics_url, "attnserve_compute_waiting_requests"), 0)
        after, _ = self.load(1, 2, "OK")

        figures = {
            "single_p50_ms": single["p50_ms"], "single_rps": single["rps"],
            "sustainable_rps": sustained["rps"], "sustainable_p99_ms": sustained["p99_ms"],
            "overload_rps": over["rps"], "overload_codes": over["codes"],
            "admitted_p50_ms": over["p50_ms"], "admitted_p99_ms": over["p99_ms"],
            "rejected_p50_ms": over["rejected_p50_ms"],
            "rejected_p99_ms": over["rejected_p99_ms"],
            "rss_sustainable_max_mb": rss_before, "rss_overload_max_mb": max(over_rss),
            "first_after_ms": first_after_ms, "after_p50_ms": after["p50_ms"],
        }
        print("overload figures: " + json.dumps(figures), file=sys.stderr)

        # Both kinds of answer, and nothing else (the load tool checked the codes).
        self.assertGreater(over["codes"].get("OK", 0), 0, over)
        self.assertGreater(over["codes"].get("RESOURCE_EXHAUSTED", 0), 0, over)
        # Refusals do not wait for a computation, admitted requests wait for one to five: refusals
        # are faster at the median and at p99, both measured in the same run, so machine load
        # slows both (measured: median 8–16× faster, p99 3–9× faster on a shared, loaded
        # machine). A refusal that waited for a queue slot would be as slow as an admission.
        self.assertLess(over["rejected_p50_ms"], over["p50_ms"] / 2, figures)
        self.assertLess(over["rejected_p99_ms"], over["p99_ms"], figures)
        # Admitted latency stays bounded by the queue.
        service_ms = 1e3 / over["rps"]
        figures["overload_service_ms"] = service_ms
        self.assertLess(over["p50_ms"], ADMITTED_P50_SERVICE_TIMES * service_ms + SLACK_MS,
                        figures)
        self.assertLess(over["p99_ms"], ADMITTED_P99_SERVICE_TIMES * service_ms + SLACK_MS,
                        figures)
        # Memory stays bounded.
        self.assertLess(max(over_rss), RSS_LIMIT_MB, figures)
        # Recovery: the first request after the load succeeded (above) with an empty queue, a
        # single client is never refused (the load tool checked OK only), and it does not wait
        # behind anything: its median is below the admitted median under overload, which waits
        # behind up to 4 computations. (Single-client latency before and after is recorded,
        # not compared: on the shared machine it swung 7–170 ms between runs.)
        self.assertLess(after["p50_ms"], over["p50_ms"], figures)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
