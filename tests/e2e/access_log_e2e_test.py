#!/usr/bin/python3
"""End-to-end test of the access log: one line per RPC with the client's request id (or a sequence
number), the method, the status code and the latency; JSON with --access_log=json; no tensor data.

    /usr/bin/python3 tests/e2e/access_log_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import json
import os
import sys
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import grpc, pb, ServerTestCase, f32_tensor  # noqa: E402


class JsonAccessLogTest(ServerTestCase):
    SERVER_ARGS = ("--access_log=json",)

    def access_lines(self):
        lines = []
        for line in self.server.log().splitlines():
            start = line.find("{")
            if start >= 0 and '"access":true' in line:
                lines.append(json.loads(line[start:]))
        return lines

    def wait_for_line(self, request_id):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in self.access_lines():
                if line["request_id"] == request_id:
                    return line
            time.sleep(0.02)
        self.fail(f"no access line for request_id={request_id}; log:\n{self.server.log()}")

    def test_each_rpc_gets_one_json_line_with_the_clients_request_id(self):
        x = np.full((1, 3, 512), 7.25, np.float32)
        self.stub.Attend(pb.AttendRequest(model="demo-sinusoidal", query=f32_tensor(x)),
                         metadata=(("x-request-id", "req-ok-42"),), timeout=30)
        with self.assertRaises(grpc.RpcError):
            self.stub.Attend(pb.AttendRequest(model="nope", query=f32_tensor(x)),
                             metadata=(("x-request-id", "req-bad-43"),), timeout=30)
        ok = self.wait_for_line("req-ok-42")
        self.assertEqual(ok["method"], "/attnserve.v1.AttentionService/Attend")
        self.assertEqual(ok["code"], "OK")
        self.assertGreater(ok["latency_ms"], 0)
        self.assertTrue(ok["peer"].startswith("ipv4:127.0.0.1:"), ok["peer"])
        bad = self.wait_for_line("req-bad-43")
        self.assertEqual(bad["code"], "NOT_FOUND")
        # Exactly one line per request, and never tensor contents (7.25 is the query's value).
        self.assertEqual(sum(1 for l in self.access_lines() if l["request_id"] == "req-ok-42"), 1)
        self.assertNotIn("7.25", self.server.log())

    def test_without_a_request_id_lines_are_numbered(self):
        self.stub.ListModels(pb.ListModelsRequest(), timeout=30)
        time.sleep(0.1)
        numbered = [l for l in self.access_lines() if l["request_id"].isdigit()]
        self.assertTrue(numbered, self.server.log())
        self.assertTrue(any(l["method"].endswith("/ListModels") for l in numbered))


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
