#!/usr/bin/python3
"""End-to-end test of the binary's --health_probe mode (the image's HEALTHCHECK), of flags taken
from FLAGS_<name> environment variables (the command line winning over them), of flags that name
a choice (read in any case; anything else stops the server at start), and of
--max_connection_age_seconds (clients reconnect; no call fails).

    /usr/bin/python3 tests/e2e/health_probe_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import socket
import subprocess
import sys
import time
import unittest
from unittest import mock

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import grpc, pb, ServerProcess, ServerTestCase, f32_tensor  # noqa: E402


def probe(*args, env=None):
    return subprocess.run([str(at.SERVER_PATH), "--health_probe", *args], capture_output=True,
                          text=True, timeout=30, env=env)


class HealthProbeTest(ServerTestCase):

    def test_serving_server_probes_healthy(self):
        result = probe(f"--grpc_address={self.server.grpc_address}")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SERVING", result.stdout)

    def test_wildcard_address_is_probed_on_loopback_and_read_from_the_environment(self):
        port = self.server.grpc_address.rsplit(":", 1)[1]
        env = dict(os.environ, FLAGS_grpc_address=f"0.0.0.0:{port}")
        result = probe(env=env)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"127.0.0.1:{port}: SERVING", result.stdout)

    def test_nothing_listening_probes_unhealthy(self):
        with socket.socket() as s:  # a port that was free a moment ago
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = probe(f"--grpc_address=127.0.0.1:{port}", "--health_probe_timeout_seconds=2")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("UNAVAILABLE", result.stdout)


class FlagsFromEnvironmentTest(unittest.TestCase):

    def attend_batch(self, server, batch):
        channel = grpc.insecure_channel(server.grpc_address)
        try:
            stub = at.pb_grpc.AttentionServiceStub(channel)
            x = np.ones((batch, 2, 512), np.float32)
            return stub.Attend(pb.AttendRequest(model="demo-sinusoidal", query=f32_tensor(x)),
                               timeout=30)
        finally:
            channel.close()

    def run_server(self, env, args=()):
        with mock.patch.dict(os.environ, env):
            server = ServerProcess(at.SERVER_PATH, args).start()
        self.addCleanup(server.kill)
        return server

    def test_environment_sets_a_flag(self):
        server = self.run_server({"FLAGS_max_batch": "2"})
        with self.assertRaises(grpc.RpcError) as raised:
            self.attend_batch(server, 3)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("2", raised.exception.details())
        self.attend_batch(server, 2)
        self.assertEqual(server.stop(), 0)

    def test_command_line_wins_over_the_environment(self):
        server = self.run_server({"FLAGS_max_batch": "2"}, ("--max_batch=8",))
        self.assertEqual(self.attend_batch(server, 3).output.shape[0], 3)
        self.assertEqual(server.stop(), 0)


class FlagChoicesTest(unittest.TestCase):

    def test_an_unknown_name_stops_the_server_listing_the_accepted_ones(self):
        for flag, value, accepted in (
                ("log_level", "INFO2", "trace, debug, info, warn, error, critical, off"),
                ("log_format", "xml", "text, json"),
                ("access_log", "maybe", "text, json, off")):
            with self.subTest(flag=flag):
                run = subprocess.run([str(at.SERVER_PATH), f"--{flag}={value}",
                                      "--grpc_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                                      "--http_address=127.0.0.1:0"],
                                     capture_output=True, text=True, timeout=60)
                self.assertNotEqual(run.returncode, 0)
                self.assertIn(f"--{flag}={value} must be one of {accepted} (in any case)",
                              run.stdout + run.stderr)

    def test_names_are_read_in_any_case(self):
        # An unrecognised level used to turn every log line off, the one announcing the port too.
        server = ServerProcess(at.SERVER_PATH, ("--log_level=INFO", "--log_format=Text",
                                                "--access_log=JSON")).start()
        self.addCleanup(server.kill)
        self.assertEqual(server.stop(), 0)


class ConnectionAgeTest(ServerTestCase):
    SERVER_ARGS = ("--max_connection_age_seconds=0.5", "--max_connection_age_grace_seconds=0.5")

    def test_connections_are_recycled_without_failing_calls(self):
        states = []
        channel = grpc.insecure_channel(self.server.grpc_address)
        channel.subscribe(states.append, try_to_connect=True)
        try:
            stub = at.pb_grpc.AttentionServiceStub(channel)
            x = np.ones((1, 2, 512), np.float32)
            deadline = time.monotonic() + 3.0
            calls = 0
            while time.monotonic() < deadline:
                stub.Attend(pb.AttendRequest(model="demo-sinusoidal", query=f32_tensor(x)),
                            timeout=30)
                calls += 1
                time.sleep(0.05)
        finally:
            channel.unsubscribe(states.append)
            channel.close()
        self.assertGreater(calls, 10)
        # The server closed the connection at least once (GOAWAY → IDLE), and it came back.
        ready = [i for i, s in enumerate(states) if s == grpc.ChannelConnectivity.READY]
        self.assertGreaterEqual(len(ready), 2, states)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
