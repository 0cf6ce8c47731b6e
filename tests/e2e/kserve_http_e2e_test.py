#!/usr/bin/python3
"""End-to-end test of the KServe v2 door over HTTP/REST (--http_address), driven with curl:
health, metadata, inference with JSON tensors and with the binary tensor data extension against
Attend on the same server bit for bit (FP32, BF16, FP16), the protocol's errors with their HTTP
statuses, bearer tokens, x-request-id, timeouts.

    /usr/bin/python3 tests/e2e/kserve_http_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (pb, tensor_pb2, ServerTestCase, f32_tensor, bf16_tensor,  # noqa: E402
                               int_tensor, to_numpy, RPC_TIMEOUT_S)


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def curl(url, method="GET", body=None, headers=(), extra=()):
    """One request with curl; the status, the headers (lower-case names) and the body."""
    with tempfile.TemporaryDirectory() as tmp:
        head, out = os.path.join(tmp, "head"), os.path.join(tmp, "body")
        args = ["curl", "-s", "-X", method, "-D", head, "-o", out, "-w", "%{http_code}",
                "--max-time", "60", *extra]
        for header in headers:
            args += ["-H", header]
        if body is not None:
            args += ["--data-binary", "@-"]
        done = subprocess.run(args + [url], input=body, capture_output=True, timeout=90)
        status = int(done.stdout.decode() or 0)
        parsed = {}
        if os.path.exists(head):
            with open(head, "rb") as f:
                for line in f.read().decode("latin-1").splitlines()[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        parsed[name.strip().lower()] = value.strip()
        data = b""
        if os.path.exists(out):
            with open(out, "rb") as f:
                data = f.read()
        return Reply(status, parsed, data)


def tensor_json(name, array, datatype, **extra):
    return {"name": name, "shape": list(array.shape), "datatype": datatype,
            "data": array.tolist(), **extra}


def binary_body(request, blobs):
    """JSON then binary blobs: (body, Inference-Header-Content-Length header)."""
    head = json.dumps(request).encode()
    return head + b"".join(blobs), f"Inference-Header-Content-Length: {len(head)}"


def binary_outputs(reply):
    """The outputs of a binary response: name → (datatype, shape, bytes)."""
    length = int(reply.headers["inference-header-content-length"])
    head = json.loads(reply.body[:length])
    offset, outputs = length, {}
    for output in head["outputs"]:
        if "data" in output:
            continue
        size = output["parameters"]["binary_data_size"]
        outputs[output["name"]] = (output["datatype"], output["shape"],
                                   reply.body[offset:offset + size])
        offset += size
    assert offset == len(reply.body), (offset, len(reply.body))
    return head, outputs


class KServeHttpTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.url = cls.server.http_url
        cls.models = {m.name: m for m in cls.stub.ListModels(
            pb.ListModelsRequest(), timeout=RPC_TIMEOUT_S).models}

    def post(self, model, request, headers=(), raw=None):
        body = raw if raw is not None else json.dumps(request).encode()
        return curl(f"{self.url}/v2/models/{model}/infer", "POST", body, headers)

    def x(self, model, batch=2, seq=4, seed=0):
        return np.random.default_rng(seed).standard_normal(
            (batch, seq, self.models[model].d_model)).astype(np.float32)

    def assertError(self, reply, status, *needles):
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(reply.headers.get("content-type"), "application/json")
        message = reply.json()["error"]
        for needle in needles:
            self.assertIn(needle, message)
        return message

    # --- health and metadata -------------------------------------------------------------------

    def test_health_and_metadata(self):
        live = curl(f"{self.url}/v2/health/live")
        self.assertEqual((live.status, live.json()), (200, {"live": True}))
        ready = curl(f"{self.url}/v2/health/ready")
        self.assertEqual((ready.status, ready.json()), (200, {"ready": True}))
        server = curl(f"{self.url}/v2").json()
        self.assertEqual(server["name"], "attnserve")
        self.assertIn("binary_tensor_data", server["extensions"])
        for name, config in self.models.items():
            metadata = curl(f"{self.url}/v2/models/{name}").json()
            self.assertEqual(metadata["name"], name)
            self.assertEqual(metadata["versions"], ["1"])
            inputs = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]}
            self.assertEqual(inputs["input"], ("FP32", [-1, -1, config.d_model]))
            outputs = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["outputs"]}
            self.assertEqual(outputs["attention"], ("FP32", [-1, config.num_heads, -1, -1]))
            versioned = curl(f"{self.url}/v2/models/{name}/versions/1")
            self.assertEqual(versioned.json(), metadata)
            model_ready = curl(f"{self.url}/v2/models/{name}/ready")
            self.assertEqual((model_ready.status, model_ready.json()),
                             (200, {"name": name, "ready": True}))
        self.assertError(curl(f"{self.url}/v2/models/no-such-model/ready"), 404, "no-such-model")
        self.assertError(curl(f"{self.url}/v2/models/demo-rope/versions/2"), 404,
                         'no version "2"')
        self.assertError(curl(f"{self.url}/v2/nothing/here"), 404, "no route /v2/nothing/here")
        wrong = curl(f"{self.url}/v2/models/demo-rope/infer")
        self.assertError(wrong, 405, "GET /v2/models/demo-rope/infer is not served; use POST")
        self.assertEqual(wrong.headers["allow"], "POST")
        self.assertError(curl(f"{self.url}/v2/health/ready", "POST", b""), 405)

    # --- inference against Attend -------------------------------------------------------------

    def test_json_inference_equals_attend(self):
        for i, model in enumerate(["demo-sinusoidal", "demo-rope", "demo-alibi", "demo-t5",
                                   "demo-cope", "demo-learned", "demo-nope-gqa"]):
            with self.subTest(model=model):
                x = self.x(model, seed=i)
                expected = self.attend(model=model, query=f32_tensor(x), causal=True,
                                       position_offset=2, key_lengths=[4, 3],
                                       return_attention=True)
                reply = self.post(model, {
                    "id": f"json-{i}", "parameters": {"causal": True, "position_offset": 2,
                                                      "return_attention": True},
                    "inputs": [tensor_json("input", x, "FP32"),
                               tensor_json("key_lengths", np.array([4, 3]), "INT64")]})
                self.assertEqual(reply.status, 200, reply.body)
                self.assertEqual(reply.headers["content-type"], "application/json")
                body = reply.json()
                self.assertEqual((body["model_name"], body["model_version"], body["id"]),
                                 (model, "1", f"json-{i}"))
                outputs = {o["name"]: o for o in body["outputs"]}
                self.assertEqual(outputs["output"]["shape"], list(x.shape))
                np.testing.assert_array_equal(
                    np.array(outputs["output"]["data"], dtype=np.float32).reshape(x.shape),
                    to_numpy(expected.output))
                np.testing.assert_array_equal(
                    np.array(outputs["attention"]["data"], dtype=np.float32).reshape(
                        outputs["attention"]["shape"]), to_numpy(expected.attention))

    def test_binary_data_in_and_out(self):
        model = "demo-rope"
        x, context = self.x(model, seed=5), self.x(model, seq=6, seed=6)
        ids = np.array([3, 1, 4, 1], dtype="<i4")
        expected = to_numpy(self.attend(model=model, query=f32_tensor(x),
                                        context=f32_tensor(context),
                                        position_ids=int_tensor(ids, tensor_pb2.INT32)).output)
        request = {"parameters": {"binary_data_output": True}, "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "FP32",
             "parameters": {"binary_data_size": x.nbytes}},
            {"name": "context", "shape": list(context.shape), "datatype": "FP32",
             "parameters": {"binary_data_size": context.nbytes}},
            tensor_json("position_ids", ids, "INT32")]}
        body, header = binary_body(request, [x.tobytes(), context.tobytes()])
        reply = self.post(model, None, [header], raw=body)
        self.assertEqual(reply.status, 200, reply.body[:300])
        self.assertEqual(reply.headers["content-type"], "application/octet-stream")
        _, outputs = binary_outputs(reply)
        datatype, shape, data = outputs["output"]
        self.assertEqual((datatype, shape), ("FP32", list(x.shape)))
        np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(x.shape), expected)
        # One output asked for as binary, the other as JSON, per output.
        request = {"inputs": [tensor_json("input", x, "FP32")],
                   "outputs": [{"name": "output", "parameters": {"binary_data": True}},
                               {"name": "attention"}]}
        reply = self.post(model, request)
        head, outputs = binary_outputs(reply)
        self.assertEqual([o["name"] for o in head["outputs"]], ["output", "attention"])
        self.assertIn("data", head["outputs"][1])
        self.assertEqual(list(outputs), ["output"])

    def test_bf16_and_fp16(self):
        model = "demo-t5"
        x = self.x(model, seed=7)
        bits = at.bf16_round(x)
        expected = to_numpy(self.attend(model=model, query=bf16_tensor(x)).output)
        request = {"parameters": {"binary_data_output": True}, "inputs": [
            {"name": "input", "shape": list(x.shape), "datatype": "BF16",
             "parameters": {"binary_data_size": bits.nbytes}}]}
        body, header = binary_body(request, [bits.tobytes()])
        datatype, _, data = binary_outputs(self.post(model, None, [header], raw=body))[1]["output"]
        self.assertEqual(datatype, "BF16")
        np.testing.assert_array_equal(at.bf16_to_f32(np.frombuffer(data, "<u2")).reshape(x.shape),
                                      expected)
        # FP16 as JSON numbers: rounded to half by the server, exactly as the binary form.
        half = x.astype(np.float16)
        widened = to_numpy(self.attend(model=model, query=f32_tensor(half.astype(np.float32))).output)
        for form in ("json", "binary"):
            with self.subTest(form=form):
                if form == "json":
                    reply = self.post(model, {"inputs": [tensor_json("input", x, "FP16")]})
                    output = reply.json()["outputs"][0]
                    self.assertEqual(output["datatype"], "FP16")
                    got = np.array(output["data"], dtype=np.float32).reshape(x.shape)
                else:
                    request = {"inputs": [{"name": "input", "shape": list(x.shape),
                                           "datatype": "FP16",
                                           "parameters": {"binary_data_size": half.nbytes}}]}
                    body, header = binary_body(request, [half.tobytes()])
                    reply = self.post(model, None, [header], raw=body)
                    got = np.array(reply.json()["outputs"][0]["data"],
                                   dtype=np.float32).reshape(x.shape)
                np.testing.assert_array_equal(got, widened.astype(np.float16).astype(np.float32))

    # --- errors -------------------------------------------------------------------------------

    def test_bad_requests(self):
        model = "demo-rope"
        x = self.x(model, batch=1, seq=2)
        ok_input = tensor_json("input", x, "FP32")
        cases = [
            (b'{"inputs": [', [], 400, "the request is not valid JSON at byte"),
            (b"[1, 2]", [], 400, "the request must be a JSON object"),
            (b"[" * 5000 + b"]" * 5000, [], 400, "must be a JSON object"),
            (('{"inputs":[{"name":"input","shape":[1,1,2],"datatype":"FP32","data":' +
              "[" * 40 + "1" + "]" * 40 + "}]}").encode(), [], 400, "nests deeper than 32 levels"),
            (json.dumps({"inputz": []}).encode(), [], 400, "inputz is not a field"),
            (json.dumps({"inputs": [dict(ok_input, shape=[1, "2", 256])]}).encode(), [], 400,
             "inputs[0].shape[1] must be an integer"),
            (json.dumps({"inputs": [dict(ok_input, data=[[["a"]]])]}).encode(), [], 400,
             "inputs[0].data[0][0][0] is a string; tensor data must be numbers"),
            (json.dumps({"inputs": [dict(ok_input, datatype="INT8")]}).encode(), [], 400,
             'datatype="INT8" is not one this server reads'),
            (json.dumps({"inputs": [dict(ok_input, shape=[1, 3, 256])]}).encode(), [], 400,
             'inputs["input"] has 512 values; shape [1,3,256] of FP32 needs 768'),
            (json.dumps({"inputs": [dict(ok_input, shape=[1, 2, 128, 2])]}).encode(), [], 400,
             "has rank 4; must be [batch, seq, d_model]"),
            (json.dumps({"inputs": [ok_input], "parameters": {"causal": "yes"}}).encode(), [],
             400, "parameters.causal is a string; must be a bool"),
            (json.dumps({"inputs": [tensor_json("input", np.zeros((1, 2, 8), np.float32),
                                                "FP32")]}).encode(), [], 400,
             'inputs["input"].shape[2]=8 must equal d_model=256'),
            (json.dumps({"inputs": [dict(ok_input, data=None,
                                         parameters={"binary_data_size": 10})]}).encode(),
             [], 400, "null is not a value here"),
        ]
        for body, headers, status, needle in cases:
            with self.subTest(needle=needle):
                self.assertError(self.post(model, None, headers, raw=body), status, needle)
        # Binary sizes that do not add up.
        request = {"inputs": [{"name": "input", "shape": [1, 2, 256], "datatype": "FP32",
                               "parameters": {"binary_data_size": x.nbytes}}]}
        body, header = binary_body(request, [x.tobytes()[:-4]])
        self.assertError(self.post(model, None, [header], raw=body), 400,
                         f"binary_data_size={x.nbytes} is past the {x.nbytes - 4} bytes")
        body, header = binary_body(request, [x.tobytes() + b"1234"])
        self.assertError(self.post(model, None, [header], raw=body), 400,
                         f"the body has {x.nbytes + 4} bytes after its JSON")
        self.assertError(self.post(model, None, ["Inference-Header-Content-Length: 99999"],
                                   raw=b"{}"), 400, "Inference-Header-Content-Length=99999")
        self.assertError(self.post("no-such-model", {"inputs": [ok_input]}), 404, "no-such-model")

    def test_request_id_and_timeout(self):
        model = "demo-cope"
        x = self.x(model, batch=1, seq=4)
        reply = self.post(model, {"inputs": [tensor_json("input", x, "FP32")]},
                          ["x-request-id: abc-123"])
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["x-request-id"], "abc-123")
        # A deadline of 1 µs has passed before the computation can start.
        reply = self.post(model, {"inputs": [tensor_json("input", x, "FP32")],
                                  "parameters": {"timeout": 1}}, ["x-request-id: late"])
        self.assertError(reply, 504)
        self.assertEqual(reply.headers["x-request-id"], "late")


def raw_http(address, data, timeout=10):
    """Sends `data` on a new connection and returns everything the server answers until it
    closes (or `timeout`)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except socket.timeout:
            pass
        return b"".join(chunks)


class KServeHttpObservabilityTest(ServerTestCase):
    def test_metrics_and_access_lines(self):
        url, metrics = self.server.http_url, self.server.metrics_url
        route = {"route": "/v2/models/{model}/infer", "method": "POST"}
        before_ok = at.metric_value(metrics, "http_requests_total", dict(route, code="200"))
        before_bad = at.metric_value(metrics, "http_requests_total", dict(route, code="400"))
        before_work = at.metric_value(metrics, "attnserve_tokens_total",
                                      {"rpc": "ModelInfer", "model": "demo-rope"})
        x = np.zeros((1, 3, 256), np.float32)
        ok = curl(f"{url}/v2/models/demo-rope/infer", "POST",
                  json.dumps({"inputs": [tensor_json("input", x, "FP32")]}).encode(),
                  ["x-request-id: http-metrics-1"])
        self.assertEqual(ok.status, 200)
        bad = curl(f"{url}/v2/models/demo-rope/infer", "POST", b"{")
        self.assertEqual(bad.status, 400)
        curl(f"{url}/v2/models/anything-at-all/ready")
        curl(f"{url}/made/up/path")
        self.assertEqual(
            at.metric_value(metrics, "http_requests_total", dict(route, code="200")) - before_ok, 1)
        self.assertEqual(
            at.metric_value(metrics, "http_requests_total", dict(route, code="400")) - before_bad, 1)
        self.assertEqual(at.metric_value(metrics, "attnserve_tokens_total",
                                         {"rpc": "ModelInfer", "model": "demo-rope"}) - before_work, 3)
        self.assertGreaterEqual(at.metric_value(metrics, "http_request_duration_seconds_count",
                                                route), 2)
        self.assertEqual(at.metric_value(metrics, "http_requests_total",
                                         {"route": "/v2/models/{model}/ready", "code": "404"}), 1)
        self.assertEqual(at.metric_value(metrics, "http_requests_total",
                                         {"route": "other", "code": "404"}), 1)
        # Answers the transport gives itself are counted and logged too.
        before = at.metric_value(metrics, "http_requests_total", {"route": "other", "code": "400"})
        self.assertTrue(raw_http(url, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400"))
        self.assertEqual(at.metric_value(metrics, "http_requests_total",
                                         {"route": "other", "code": "400"}) - before, 1)
        # Route labels are the templates: no client-made value becomes one.
        text = urllib.request.urlopen(metrics, timeout=5).read().decode()
        self.assertNotIn("anything-at-all", text)
        self.assertNotIn("made/up", text)
        # One access line per request, with the client's id.
        deadline = time.monotonic() + 10
        while "request_id=http-metrics-1" not in self.server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("access request_id=http-metrics-1 method=POST_/v2/models/demo-rope/infer "
                      "model=demo-rope code=200", self.server.log())


class KServeHttpDrainTest(unittest.TestCase):
    def test_sigterm_turns_ready_503_refuses_new_requests_and_finishes_running_ones(self):
        server = at.ServerProcess(at.SERVER_PATH, ("--shutdown_grace_seconds=120",)).start()
        try:
            url = server.http_url
            # A CoPE layer over 8192 tokens takes seconds on two cores (4096 under ThreadSanitizer,
            # which slows it tenfold and more): it runs while we drain.
            seq = 4096 if os.environ.get("TSAN_OPTIONS") else 8192
            x = np.random.default_rng(9).standard_normal((1, seq, 256)).astype(np.float32)
            request = {"parameters": {"causal": True, "binary_data_output": True},
                       "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}]}
            body, header = binary_body(request, [x.tobytes()])
            running = {}
            worker = threading.Thread(target=lambda: running.update(
                reply=curl(f"{url}/v2/models/demo-cope/infer", "POST", body, [header])))
            worker.start()
            time.sleep(0.5)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while curl(f"{url}/v2/health/ready").status != 503 and time.monotonic() < deadline:
                time.sleep(0.02)
            ready = curl(f"{url}/v2/health/ready")
            self.assertEqual((ready.status, ready.json()), (503, {"ready": False}))
            self.assertTrue(worker.is_alive(), "the running request ended before the drain began")
            late = curl(f"{url}/v2/models/demo-rope/infer", "POST",
                        json.dumps({"inputs": [tensor_json("input", np.zeros((1, 1, 256),
                                                                            np.float32),
                                                           "FP32")]}).encode())
            self.assertEqual(late.status, 503, late.body)
            self.assertIn("draining", late.json()["error"])
            self.assertEqual(late.headers["retry-after"], "1")
            worker.join(timeout=150)
            self.assertEqual(running["reply"].status, 200, running["reply"].body[:300])
            self.assertEqual(server.proc.wait(timeout=30), 0, server.log())
        finally:
            server.kill()


class KServeHttpSlowClientsTest(ServerTestCase):
    SERVER_ARGS = ("--request_read_timeout_seconds=1", "--access_log=text")

    def test_slow_uploads_are_cut_and_leaving_clients_cancel_their_request(self):
        url = self.server.http_url
        # A header that never ends, and a body that never comes: closed after about 1 s each.
        for partial in (b"POST /v2/models/demo-rope/infer HTTP/1.1\r\nHost: x\r\n",
                        b"POST /v2/models/demo-rope/infer HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Length: 1000\r\n\r\n{\"inputs\":"):
            with self.subTest(partial=partial[-20:]):
                start = time.monotonic()
                answer = raw_http(url, partial, timeout=10)
                self.assertLess(time.monotonic() - start, 5)
                self.assertNotIn(b"200 OK", answer)
        self.assertEqual(curl(f"{url}/v2/health/ready").status, 200)
        # A client that gives up while its request computes: the request is cancelled, answered
        # 499 to nobody and logged so.
        # (8192 tokens even under a sanitizer: the request is cancelled long before it ends.)
        x = np.random.default_rng(2).standard_normal((1, 8192, 256)).astype(np.float32)
        request = {"parameters": {"causal": True, "binary_data_output": True},
                   "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "parameters": {"binary_data_size": x.nbytes}}]}
        body, header = binary_body(request, [x.tobytes()])
        gone = curl(f"{url}/v2/models/demo-cope/infer", "POST", body,
                    [header, "x-request-id: leaves-early"], extra=("--max-time", "0.5"))
        self.assertNotEqual(gone.status, 200)  # curl gave up (after 100 Continue, or before)
        deadline = time.monotonic() + 60
        while "request_id=leaves-early" not in self.server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn("access request_id=leaves-early method=POST_/v2/models/demo-cope/infer "
                      "model=demo-cope code=499", self.server.log())


class KServeHttpLimitsTest(ServerTestCase):
    SERVER_ARGS = ("--max_message_bytes=65536", "--max_request_memory_bytes=262144")

    def test_body_past_the_message_limit_is_refused_unread(self):
        url = f"{self.server.http_url}/v2/models/demo-rope/infer"
        reply = curl(url, "POST", b"x" * 70000)
        self.assertEqual(reply.status, 413, reply.body)
        self.assertIn(b"Content-Length=70000 is past the limit of 65536 bytes", reply.body)
        for encoding in ("chunked", "gzip"):
            with self.subTest(encoding=encoding):
                answer = raw_http(self.server.http_url, (
                    "POST /v2/models/demo-rope/infer HTTP/1.1\r\nHost: x\r\n"
                    f"Transfer-Encoding: {encoding}\r\n\r\n0\r\n\r\n").encode())
                self.assertTrue(answer.startswith(b"HTTP/1.1 411"), answer[:200])
        # A length past 2^63 is not taken for a negative one.
        answer = raw_http(self.server.http_url, (
            "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 18446744073709551615\r\n\r\nGET /v2 HTTP/1.1\r\n\r\n").encode())
        self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer[:200])
        self.assertEqual(answer.count(b"HTTP/1.1 "), 1, answer)  # nothing smuggled through
        # A client that sends its whole (too large) body without waiting still reads the 413:
        # the server drains what it did not read before closing, instead of resetting.
        answer = raw_http(self.server.http_url, (
            "POST /v2/models/demo-rope/infer HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 600000\r\n\r\n").encode() + b"x" * 600000)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413"), answer[:200])

    def test_what_parsing_or_answering_would_hold_is_bounded(self):
        url = f"{self.server.http_url}/v2/models/demo-rope/infer"
        # 60 000 bytes of JSON may hold 7 bytes each parsed: past the whole 256 KiB budget.
        body = b'{"inputs": [{"name": "input", "data": [' + b"0," * 29980 + b'0]}]}'
        reply = curl(url, "POST", body)
        self.assertEqual(reply.status, 413, reply.body)
        self.assertIn("past the whole memory budget", reply.json()["error"])
        self.assertNotIn("retry-after", reply.headers)
        # At most 64 inputs, and so on.
        many = {"inputs": [{"name": f"x{i}"} for i in range(65)]}
        reply = curl(url, "POST", json.dumps(many).encode())
        self.assertEqual(reply.status, 400, reply.body)
        self.assertIn("inputs[64] is one input too many: at most 64", reply.json()["error"])
        reply = curl(url, "POST", json.dumps({"parameters": {"timeout": 10 ** 17}}).encode())
        self.assertIn("parameters.timeout must be an integer in [0,", reply.json()["error"])
        # A JSON answer past --max_message_bytes: refused, binary suggested.
        x = np.zeros((1, 16, 256), np.float32)  # 4096 values: up to 64 KiB as JSON
        request = {"inputs": [{"name": "input", "shape": [1, 16, 256], "datatype": "FP32",
                               "parameters": {"binary_data_size": x.nbytes}}]}
        body, header = binary_body(request, [x.tobytes()])
        reply = curl(url, "POST", body, [header])
        self.assertEqual(reply.status, 400, reply.body[:300])
        self.assertIn("as JSON, past --max_message_bytes=65536", reply.json()["error"])
        request["parameters"] = {"binary_data_output": True}
        body, header = binary_body(request, [x.tobytes()])
        self.assertEqual(curl(url, "POST", body, [header]).status, 200)

    def test_a_full_memory_budget_answers_429_at_once(self):
        url = f"{self.server.http_url}/v2/models/demo-rope/infer"
        host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
        x = np.full((1, 8, 256), 0.5, np.float32)
        body = json.dumps({"inputs": [tensor_json("input", x, "FP32")],
                           "parameters": {"binary_data_output": True}}).encode()
        # A client that announces 30 000 bytes of JSON (parsing may hold 7 times that: 210 000 of
        # the 262 144-byte budget) and then stalls holds that while its body is awaited...
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(b"POST /v2/models/demo-rope/infer HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 30000\r\n\r\n{\"inputs\": [")
            time.sleep(0.3)
            # ...so a request that needs ~70 000 more finds no room: 429 at once, unread.
            reply = curl(url, "POST", body)
            self.assertEqual(reply.status, 429, reply.body)
            self.assertEqual(reply.headers["retry-after"], "1")
            self.assertIn("--max_request_memory_bytes", reply.json()["error"])
        # The stalled client gone, its reservation returns and the request is served.
        deadline = time.monotonic() + 10
        while (reply := curl(url, "POST", body)).status == 429 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(reply.status, 200, reply.body[:200])

    def test_expect_continue_and_escaped_names(self):
        x = np.zeros((1, 1, 256), np.float32)
        body = json.dumps({"inputs": [tensor_json("input", x, "FP32")]}).encode()
        reply = curl(f"{self.server.http_url}/v2/models/demo%2Drope/infer", "POST", body,
                     ["Expect: 100-continue"])
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["model_name"], "demo-rope")
        for escape in ("demo%2", "demo%-1", "demo%+1"):
            bad = curl(f"{self.server.http_url}/v2/models/{escape}/infer", "POST", body)
            self.assertEqual(bad.status, 404, bad.body)


class KServeHttpTokenTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.tokens = tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False)
        cls.tokens.write("# tokens\nsecret-one\n")
        cls.tokens.close()
        cls.SERVER_ARGS = (f"--auth_token_file={cls.tokens.name}",)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        os.unlink(cls.tokens.name)

    def test_bearer_token(self):
        url = self.server.http_url
        # Probes stay open.
        self.assertEqual(curl(f"{url}/v2/health/ready").status, 200)
        self.assertEqual(curl(f"{url}/v2/health/live").status, 200)
        missing = curl(f"{url}/v2/models/demo-rope")
        self.assertEqual(missing.status, 401, missing.body)
        self.assertEqual(missing.headers["www-authenticate"], "Bearer")
        wrong = curl(f"{url}/v2/models/demo-rope", headers=["Authorization: Bearer nope"])
        self.assertEqual(wrong.status, 401, wrong.body)
        self.assertEqual(wrong.headers["www-authenticate"], 'Bearer error="invalid_token"')
        self.assertNotIn(b"nope", wrong.body)
        right = curl(f"{url}/v2/models/demo-rope", headers=["Authorization: Bearer secret-one"])
        self.assertEqual(right.status, 200, right.body)
        x = np.zeros((1, 1, 256), np.float32)
        infer = curl(f"{url}/v2/models/demo-rope/infer", "POST",
                     json.dumps({"inputs": [tensor_json("input", x, "FP32")]}).encode())
        self.assertEqual(infer.status, 401)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
