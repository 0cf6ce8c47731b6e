#!/usr/bin/python3
"""End-to-end test of the access log: one line per RPC with the client's request id (or a sequence
number), the method, the model the request names, the status code and the latency; whole-line
JSON with --access_log=json, sanitised key=value text by default; no tensor data. Also the
server log's --log_format=json: every line of the output a JSON object.

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
        # Whole lines: each access line is one JSON object from its first character.
        return [json.loads(line) for line in self.server.log().splitlines()
                if '"access":true' in line]

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
        self.assertEqual(ok["model"], "demo-sinusoidal")
        self.assertEqual(ok["level"], "info")
        self.assertRegex(ok["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        bad = self.wait_for_line("req-bad-43")
        self.assertEqual(bad["code"], "NOT_FOUND")
        self.assertEqual(bad["model"], "nope")
        # Exactly one line per request, and never tensor contents (7.25 is the query's value).
        self.assertEqual(sum(1 for l in self.access_lines() if l["request_id"] == "req-ok-42"), 1)
        self.assertNotIn("7.25", self.server.log())

    def test_without_a_request_id_lines_are_numbered(self):
        self.stub.ListModels(pb.ListModelsRequest(), timeout=30)
        time.sleep(0.1)
        numbered = [l for l in self.access_lines() if l["request_id"].isdigit()]
        self.assertTrue(numbered, self.server.log())
        self.assertTrue(any(l["method"].endswith("/ListModels") for l in numbered))


class TextAccessLogAndJsonServerLogTest(ServerTestCase):
    SERVER_ARGS = ("--log_format=json", "--access_log=text")

    def test_text_lines_name_the_model_and_cannot_be_forged(self):
        x = np.zeros((1, 2, 512), np.float32)
        with self.assertRaises(grpc.RpcError):
            self.stub.Attend(pb.AttendRequest(model="evil code=OK\nforged", query=f32_tensor(x)),
                             metadata=(("x-request-id", "id with spaces"),), timeout=30)
        self.stub.Attend(pb.AttendRequest(model="demo-sinusoidal", query=f32_tensor(x)),
                         metadata=(("x-request-id", "text-1"),), timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "text-1" not in self.server.log():
            time.sleep(0.02)
        # The server log is JSON (--log_format=json); each access line is a message in it.
        messages = [json.loads(line)["msg"] for line in self.server.log().splitlines()]
        access = [m for m in messages if m.startswith("access ")]
        self.assertIn("access request_id=text-1 method=/attnserve.v1.AttentionService/Attend "
                      "model=demo-sinusoidal code=OK", "\n".join(access))
        evil = [m for m in access if "id_with_spaces" in m]
        self.assertEqual(len(evil), 1, access)
        self.assertIn("model=evil_code_OK_forged code=NOT_FOUND", evil[0])
        # The method is the client's path too: a made-up one cannot forge fields or lines.
        forged = self.channel.unary_unary("/attnserve.v1.AttentionService/Nope code=OK\nx model=m")
        with self.assertRaises(grpc.RpcError):
            forged(b"", metadata=(("x-request-id", "path-1"),), timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "path-1" not in self.server.log():
            time.sleep(0.02)
        messages = [json.loads(line)["msg"] for line in self.server.log().splitlines()]
        (line,) = [m for m in messages if "request_id=path-1" in m]
        self.assertIn("method=/attnserve.v1.AttentionService/Nope_code_OK_x_model_m model=- "
                      "code=UNIMPLEMENTED", line)

    def test_every_server_log_line_is_a_json_object(self):
        lines = self.server.log().splitlines()
        self.assertTrue(lines)
        for line in lines:
            entry = json.loads(line)
            self.assertEqual(set(entry), {"time", "level", "msg"}, line)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
