#!/usr/bin/python3
"""End-to-end test of the KServe v2 door over gRPC (inference.GRPCInferenceService, stubs generated
from proto/inference/grpc_predict_v2.proto): health and metadata, and ModelInfer against Attend on
the same server — raw and typed contents, FP32/BF16/FP16, every demo model's encoding, causal,
cross-attention, key lengths, positions, attention maps — bit for bit, plus every protocol rule
and input check as a precise INVALID_ARGUMENT or NOT_FOUND.

    /usr/bin/python3 tests/e2e/kserve_grpc_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import sys
import unittest

import numpy as np
from google.protobuf import json_format

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (grpc, pb, pe_pb2, tensor_pb2, v2, v2_grpc,  # noqa: E402
                               ServerTestCase, f32_tensor, bf16_tensor, int_tensor, to_numpy,
                               RPC_TIMEOUT_S)

DEMO_MODELS = ["demo-sinusoidal", "demo-nope-gqa", "demo-learned", "demo-rope", "demo-alibi",
               "demo-t5", "demo-cope"]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def raw_input(name, array, datatype):
    """An InferInputTensor and its raw bytes (little-endian, row-major)."""
    np_type = {"FP32": "<f4", "FP16": "<f2", "INT32": "<i4", "INT64": "<i8"}[datatype]
    a = np.ascontiguousarray(array, dtype=np_type)
    return v2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype,
                                                 shape=list(a.shape)), a.tobytes()


def raw_request(model, inputs, **fields):
    """A ModelInferRequest with raw contents: `inputs` is a list of (tensor, bytes)."""
    request = v2.ModelInferRequest(model_name=model, **fields)
    for tensor, data in inputs:
        request.inputs.append(tensor)
        request.raw_input_contents.append(data)
    return request


def params(**values):
    """InferParameter map entries from Python values (bool, int, float, str)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = v2.InferParameter(bool_param=value)
        elif isinstance(value, int):
            out[key] = v2.InferParameter(int64_param=value)
        elif isinstance(value, float):
            out[key] = v2.InferParameter(double_param=value)
        else:
            out[key] = v2.InferParameter(string_param=value)
    return out


def encoding_json(encoding):
    """An attnserve.v1.PositionalEncoding as the JSON string parameters.encoding takes."""
    return json_format.MessageToJson(encoding, indent=None)


def raw_output(response, name):
    """An output of a raw response as a float32 array of its shape (FP32, BF16 or FP16)."""
    for i, tensor in enumerate(response.outputs):
        if tensor.name == name:
            data = response.raw_output_contents[i]
            if tensor.datatype == "FP32":
                values = np.frombuffer(data, dtype="<f4")
            elif tensor.datatype == "FP16":
                values = np.frombuffer(data, dtype="<f2").astype(np.float32)
            else:
                values = at.bf16_to_f32(np.frombuffer(data, dtype="<u2"))
            assert values.size == np.prod(tensor.shape), (values.size, list(tensor.shape))
            return values.reshape(tuple(tensor.shape)), tensor.datatype
    raise AssertionError(f"no output {name} in {[t.name for t in response.outputs]}")


class KServeGrpcTest(ServerTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.v2 = v2_grpc.GRPCInferenceServiceStub(cls.channel)
        cls.d_model = {m.name: m.d_model for m in cls.stub.ListModels(
            pb.ListModelsRequest(), timeout=RPC_TIMEOUT_S).models}

    def infer(self, request):
        return self.v2.ModelInfer(request, timeout=RPC_TIMEOUT_S)

    def x(self, model, batch=2, seq=5, seed=0):
        return np.random.default_rng(seed).standard_normal(
            (batch, seq, self.d_model[model])).astype(np.float32)

    # --- health and metadata -------------------------------------------------------------------

    def test_health_and_server_metadata(self):
        self.assertTrue(self.v2.ServerLive(v2.ServerLiveRequest(), timeout=RPC_TIMEOUT_S).live)
        self.assertTrue(self.v2.ServerReady(v2.ServerReadyRequest(), timeout=RPC_TIMEOUT_S).ready)
        metadata = self.v2.ServerMetadata(v2.ServerMetadataRequest(), timeout=RPC_TIMEOUT_S)
        self.assertEqual(metadata.name, "attnserve")
        self.assertRegex(metadata.version, r"^\d+\.\d+\.\d+")
        self.assertIn("binary_tensor_data", metadata.extensions)
        ready = lambda name, version="": self.v2.ModelReady(  # noqa: E731
            v2.ModelReadyRequest(name=name, version=version), timeout=RPC_TIMEOUT_S).ready
        self.assertTrue(ready("demo-rope"))
        self.assertTrue(ready("demo-rope", "1"))
        self.assertFalse(ready("demo-rope", "2"))
        self.assertFalse(ready("no-such-model"))

    def test_model_metadata_states_the_layer(self):
        for model in self.stub.ListModels(pb.ListModelsRequest(), timeout=RPC_TIMEOUT_S).models:
            metadata = self.v2.ModelMetadata(v2.ModelMetadataRequest(name=model.name),
                                             timeout=RPC_TIMEOUT_S)
            self.assertEqual(metadata.name, model.name)
            self.assertEqual(list(metadata.versions), ["1"])
            self.assertEqual(metadata.platform, "attnserve")
            inputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}
            self.assertEqual(inputs["input"], ("FP32", [-1, -1, model.d_model]))
            self.assertEqual(inputs["context"], ("FP32", [-1, -1, model.d_model]))
            self.assertEqual(inputs["key_lengths"], ("INT64", [-1]))
            self.assertEqual(inputs["position_ids"], ("INT64", [-1, -1]))
            outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
            self.assertEqual(outputs, {"output": ("FP32", [-1, -1, model.d_model]),
                                       "attention": ("FP32", [-1, model.num_heads, -1, -1])})
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.v2.ModelMetadata,
                            v2.ModelMetadataRequest(name="no-such-model"), contains=["no-such-model"])
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.v2.ModelMetadata,
                            v2.ModelMetadataRequest(name="demo-rope", version="7"),
                            contains=['no version "7"'])

    # --- ModelInfer against Attend ------------------------------------------------------------

    def test_raw_fp32_equals_attend_on_every_demo_model(self):
        for i, model in enumerate(DEMO_MODELS):
            for causal in (False, True):
                with self.subTest(model=model, causal=causal):
                    x = self.x(model, seed=i)
                    expected = to_numpy(self.attend(model=model, query=f32_tensor(x), causal=causal,
                                                    position_offset=3).output)
                    response = self.infer(raw_request(
                        model, [raw_input("input", x, "FP32")], id=f"req-{model}",
                        parameters=params(causal=causal, position_offset=3)))
                    self.assertEqual(response.model_name, model)
                    self.assertEqual(response.model_version, "1")
                    self.assertEqual(response.id, f"req-{model}")
                    self.assertEqual(len(response.outputs), 1)
                    self.assertEqual(len(response.outputs[0].contents.fp32_contents), 0)
                    output, datatype = raw_output(response, "output")
                    self.assertEqual(datatype, "FP32")
                    np.testing.assert_array_equal(output, expected)

    def test_cross_attention_key_lengths_and_position_ids_equal_attend(self):
        model = "demo-rope"
        x, context = self.x(model, seed=1), self.x(model, seq=7, seed=2)
        ids = np.array([[4, 9, 2, 0, 11], [1, 1, 5, 6, 7]])
        expected = self.attend(model=model, query=f32_tensor(x), context=f32_tensor(context),
                               key_lengths=[7, 3], position_ids=int_tensor(ids, tensor_pb2.INT64),
                               return_attention=True)
        for ids_type, lengths_type in (("INT64", "INT32"), ("INT32", "INT64")):
            with self.subTest(ids=ids_type, lengths=lengths_type):
                response = self.infer(raw_request(
                    model, [raw_input("input", x, "FP32"), raw_input("context", context, "FP32"),
                            raw_input("key_lengths", [7, 3], lengths_type),
                            raw_input("position_ids", ids, ids_type)],
                    parameters=params(return_attention=True)))
                self.assertEqual([t.name for t in response.outputs], ["output", "attention"])
                np.testing.assert_array_equal(raw_output(response, "output")[0],
                                              to_numpy(expected.output))
                np.testing.assert_array_equal(raw_output(response, "attention")[0],
                                              to_numpy(expected.attention))
        # Asking for the attention output by name alone returns just it.
        response = self.infer(raw_request(
            model, [raw_input("input", x, "FP32"), raw_input("context", context, "FP32"),
                    raw_input("key_lengths", [7, 3], "INT64"),
                    raw_input("position_ids", ids, "INT64")],
            outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(name="attention")]))
        self.assertEqual([t.name for t in response.outputs], ["attention"])
        np.testing.assert_array_equal(raw_output(response, "attention")[0],
                                      to_numpy(expected.attention))

    def test_typed_contents_in_typed_contents_out(self):
        model = "demo-alibi"
        x = self.x(model, seed=3)
        expected = to_numpy(self.attend(model=model, query=f32_tensor(x), causal=True,
                                        key_lengths=[5, 2]).output)
        request = v2.ModelInferRequest(model_name=model, parameters=params(causal=True))
        request.inputs.add(name="input", datatype="FP32", shape=list(x.shape),
                           contents=v2.InferTensorContents(fp32_contents=x.ravel().tolist()))
        request.inputs.add(name="key_lengths", datatype="INT32", shape=[2],
                           contents=v2.InferTensorContents(int_contents=[5, 2]))
        response = self.infer(request)
        self.assertEqual(len(response.raw_output_contents), 0)
        output = response.outputs[0]
        self.assertEqual((output.name, output.datatype, list(output.shape)),
                         ("output", "FP32", list(x.shape)))
        np.testing.assert_array_equal(
            np.array(output.contents.fp32_contents, dtype=np.float32).reshape(x.shape), expected)

    def test_bf16_and_fp16_inputs(self):
        model = "demo-t5"
        x = self.x(model, seed=4)
        # BF16 in, BF16 out: the same numbers as Attend on the BFLOAT16 tensor.
        bits = at.bf16_round(x)
        expected = to_numpy(self.attend(model=model, query=bf16_tensor(x)).output)
        tensor = v2.ModelInferRequest.InferInputTensor(name="input", datatype="BF16",
                                                       shape=list(x.shape))
        output, datatype = raw_output(self.infer(raw_request(model, [(tensor, bits.tobytes())])),
                                      "output")
        self.assertEqual(datatype, "BF16")
        np.testing.assert_array_equal(output, expected)
        # FP16 in, FP16 out: Attend on the widened values, its output rounded to half (numpy
        # rounds to nearest even, as the server does).
        half = x.astype(np.float16)
        widened = to_numpy(self.attend(model=model, query=f32_tensor(half.astype(np.float32))).output)
        output, datatype = raw_output(self.infer(raw_request(
            model, [raw_input("input", half, "FP16")])), "output")
        self.assertEqual(datatype, "FP16")
        np.testing.assert_array_equal(output, widened.astype(np.float16).astype(np.float32))
        # bf16 compute, asked for by parameter, equals Attend's compute_dtype=BFLOAT16.
        expected = to_numpy(self.attend(model=model, query=f32_tensor(x),
                                        compute_dtype=tensor_pb2.BFLOAT16).output)
        output, _ = raw_output(self.infer(raw_request(
            model, [raw_input("input", x, "FP32")], parameters=params(compute_dtype="BF16"))),
            "output")
        np.testing.assert_array_equal(output, expected)

    def test_request_id_echoed_and_calls_counted(self):
        x = self.x("demo-rope", batch=1, seq=2)
        metrics = self.server.metrics_url
        labels = {"grpc_service": "inference.GRPCInferenceService", "grpc_method": "ModelInfer",
                  "grpc_type": "unary"}
        ok_before = at.metric_value(metrics, "grpc_server_handled_total", dict(labels, grpc_code="OK"))
        _, call = self.v2.ModelInfer.with_call(
            raw_request("demo-rope", [raw_input("input", x, "FP32")]),
            metadata=[("x-request-id", "grpc-echo-1")], timeout=RPC_TIMEOUT_S)
        self.assertIn(("x-request-id", "grpc-echo-1"), list(call.initial_metadata()))
        with self.assertRaises(grpc.RpcError) as failed:
            self.v2.ModelInfer(raw_request("no-such-model", [raw_input("input", x, "FP32")]),
                               metadata=[("x-request-id", "grpc-echo-2")], timeout=RPC_TIMEOUT_S)
        echoed = list(failed.exception.initial_metadata() or []) + list(
            failed.exception.trailing_metadata() or [])
        self.assertIn(("x-request-id", "grpc-echo-2"), echoed)
        self.assertEqual(at.metric_value(metrics, "grpc_server_handled_total",
                                         dict(labels, grpc_code="OK")) - ok_before, 1)
        self.assertGreaterEqual(at.metric_value(metrics, "grpc_server_handled_total",
                                                dict(labels, grpc_code="NOT_FOUND")), 1)
        self.assertGreaterEqual(at.metric_value(metrics, "attnserve_tokens_total",
                                                {"rpc": "ModelInfer", "model": "demo-rope"}), 2)

    # --- the protocol's rules and the model's checks ------------------------------------------

    def test_protocol_rules(self):
        model = "demo-rope"
        x = self.x(model, batch=1, seq=2)
        tensor, data = raw_input("input", x, "FP32")
        # Raw contents need one entry per input.
        request = raw_request(model, [(tensor, data)])
        request.inputs.add(name="key_lengths", datatype="INT64", shape=[1])
        self.assertRpcError(INVALID, self.infer, request,
                            contains=["raw_input_contents has 1 entries for 2 inputs"])
        # Raw and typed never mixed.
        request = raw_request(model, [(tensor, data)])
        request.inputs[0].contents.fp32_contents.extend([1.0])
        self.assertRpcError(INVALID, self.infer, request,
                            contains=["inputs[0] (input) has typed contents beside raw_input_contents"])
        # Typed contents in the datatype's own field; BF16 and FP16 have none.
        request = v2.ModelInferRequest(model_name=model)
        request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 2],
                           contents=v2.InferTensorContents(int64_contents=[1, 2]))
        self.assertRpcError(INVALID, self.infer, request,
                            contains=["inputs[0].contents.int64_contents is set; datatype FP32 "
                                      "takes fp32_contents"])
        request.inputs[0].datatype = "BF16"
        self.assertRpcError(INVALID, self.infer, request,
                            contains=["BF16 has no typed contents: send it in raw_input_contents"])
        # Sizes match shapes.
        self.assertRpcError(INVALID, self.infer, raw_request(model, [(tensor, data[:-4])]),
                            contains=['inputs["input"] has ' + str(len(data) - 4) +
                                      " bytes of raw data; shape [1,2,", f"needs {len(data)}"])
        request = v2.ModelInferRequest(model_name=model)
        request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 4],
                           contents=v2.InferTensorContents(fp32_contents=[1, 2, 3]))
        self.assertRpcError(INVALID, self.infer, request,
                            contains=['inputs["input"] has 3 values; shape [1,1,4] of FP32 needs 4'])
        # A parameter without a value.
        request = raw_request(model, [(tensor, data)])
        request.parameters["causal"].CopyFrom(v2.InferParameter())
        self.assertRpcError(INVALID, self.infer, request, contains=["parameters.causal has no value"])

    def test_model_checks(self):
        model = "demo-rope"
        x = self.x(model, batch=1, seq=2)
        ok = raw_input("input", x, "FP32")
        cases = [
            ([raw_input("input", x, "INT32")], {}, [],
             'inputs["input"].datatype="INT32" must be FP32, BF16 or FP16'),
            ([raw_input("input", x[0], "FP32")], {}, [],
             'inputs["input"].shape=[2,' + str(self.d_model[model]) + "] has rank 2; must be "
             "[batch, seq, d_model]"),
            ([ok, raw_input("mask", [1], "INT64")], {}, [],
             'inputs["mask"] is not an input of model demo-rope (input, context, key_lengths, '
             "position_ids)"),
            ([ok, ok], {}, [], 'inputs["input"] is sent twice'),
            ([raw_input("context", x, "FP32")], {}, [], 'inputs has no "input" tensor'),
            ([ok], {"casual": True}, [], "parameters.casual is not a parameter of model demo-rope"),
            ([ok], {"causal": 1}, [], "parameters.causal is a int64; must be a bool"),
            ([ok], {"compute_dtype": "FP64"}, [],
             'parameters.compute_dtype="FP64" must be "FP32" or "BF16"'),
            ([ok], {"position_offset": -1}, [], "position_offset=-1 must be in [0,"),
            ([ok], {}, ["scores"], 'outputs["scores"] is not an output of model demo-rope'),
            ([ok], {}, ["output", "output"], 'outputs["output"] is asked for twice'),
            ([ok, raw_input("position_ids", [1, 2, 3], "INT64")], {}, [],
             'inputs["position_ids"].shape=[3] must be [2] or [1,2]'),
            ([ok, raw_input("key_lengths", [3, 3], "INT64")], {}, [], "key_lengths"),
        ]
        for inputs, parameters, outputs, message in cases:
            with self.subTest(message=message):
                request = raw_request(model, inputs, parameters=params(**parameters))
                for name in outputs:
                    request.outputs.add(name=name)
                self.assertRpcError(INVALID, self.infer, request, contains=[message])
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.infer,
                            raw_request("no-such-model", [ok]), contains=["no-such-model"])
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.infer,
                            raw_request(model, [ok], model_version="3"), contains=['no version "3"'])


class OperationModelsTest(ServerTestCase):
    """attnserve.encode, attnserve.sdpa and attnserve.position_bias against the attnserve.v1 RPCs
    they stand for, on the same server, bit for bit."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.v2 = v2_grpc.GRPCInferenceServiceStub(cls.channel)

    def infer(self, request):
        return self.v2.ModelInfer(request, timeout=RPC_TIMEOUT_S)

    def test_encode(self):
        rng = np.random.default_rng(11)
        x = rng.standard_normal((2, 5, 32)).astype(np.float32)
        rope = pe_pb2.PositionalEncoding(rope=pe_pb2.RotaryEncoding(
            theta=500.0, layout=pe_pb2.INTERLEAVED))
        expected = to_numpy(self.encode(input=f32_tensor(x), encoding=rope, head_dim=16,
                                        position_offset=7).output)
        response = self.infer(raw_request("attnserve.encode", [raw_input("input", x, "FP32")],
                                          parameters=params(encoding=encoding_json(rope),
                                                            head_dim=16, position_offset=7)))
        np.testing.assert_array_equal(raw_output(response, "output")[0], expected)
        # A served model's encoding, positions by id, a scale.
        x = rng.standard_normal((1, 3, 512)).astype(np.float32)
        ids = np.array([9, 2, 4])
        expected = to_numpy(self.encode(input=f32_tensor(x), model="demo-sinusoidal",
                                        position_ids=int_tensor(ids, tensor_pb2.INT64),
                                        input_scale=2.5).output)
        response = self.infer(raw_request(
            "attnserve.encode", [raw_input("input", x, "FP32"), raw_input("position_ids", ids, "INT64")],
            parameters=params(model="demo-sinusoidal", input_scale=2.5)))
        np.testing.assert_array_equal(raw_output(response, "output")[0], expected)

    def test_sdpa(self):
        rng = np.random.default_rng(12)
        q = rng.standard_normal((2, 4, 3, 16)).astype(np.float32)
        k = rng.standard_normal((2, 2, 6, 16)).astype(np.float32)
        v = rng.standard_normal((2, 2, 6, 16)).astype(np.float32)
        table = rng.standard_normal((32, 4)).astype(np.float32)
        t5 = pe_pb2.PositionalEncoding(t5=pe_pb2.T5RelativeBias(num_buckets=32))
        expected = self.sdpa(q=f32_tensor(q), k=f32_tensor(k), v=f32_tensor(v), encoding=t5,
                             t5_table=f32_tensor(table), causal=True, key_lengths=[6, 4],
                             scale=0.5, return_attention=True)
        response = self.infer(raw_request(
            "attnserve.sdpa",
            [raw_input("q", q, "FP32"), raw_input("k", k, "FP32"), raw_input("v", v, "FP32"),
             raw_input("t5_table", table, "FP32"), raw_input("key_lengths", [6, 4], "INT32")],
            parameters=params(encoding=encoding_json(t5), causal=True, scale=0.5,
                              return_attention=True)))
        np.testing.assert_array_equal(raw_output(response, "output")[0], to_numpy(expected.output))
        np.testing.assert_array_equal(raw_output(response, "attention")[0],
                                      to_numpy(expected.attention))
        # All three BF16: computed and returned in bf16, as attnserve.v1 does.
        expected = to_numpy(self.sdpa(q=bf16_tensor(q), k=bf16_tensor(k), v=bf16_tensor(v),
                                      compute_dtype=tensor_pb2.BFLOAT16).output)
        tensors = []
        for name, a in (("q", q), ("k", k), ("v", v)):
            tensors.append((v2.ModelInferRequest.InferInputTensor(name=name, datatype="BF16",
                                                                  shape=list(a.shape)),
                            at.bf16_round(a).tobytes()))
        output, datatype = raw_output(self.infer(raw_request(
            "attnserve.sdpa", tensors, parameters=params(compute_dtype="BF16"))), "output")
        self.assertEqual(datatype, "BF16")
        np.testing.assert_array_equal(output, expected)

    def test_position_bias(self):
        alibi = pe_pb2.PositionalEncoding(alibi=pe_pb2.AlibiEncoding())
        expected = to_numpy(self.position_bias(encoding=alibi, num_heads=6, q_len=3, kv_len=5,
                                               causal=True).bias)
        response = self.infer(v2.ModelInferRequest(
            model_name="attnserve.position_bias",
            parameters=params(encoding=encoding_json(alibi), num_heads=6, q_len=3, kv_len=5,
                              causal=True)))
        np.testing.assert_array_equal(
            np.array(response.outputs[0].contents.fp32_contents, np.float32).reshape(
                tuple(response.outputs[0].shape)), expected)
        expected = to_numpy(self.position_bias(model="demo-t5", q_len=4).bias)
        response = self.infer(v2.ModelInferRequest(
            model_name="attnserve.position_bias", parameters=params(model="demo-t5", q_len=4)))
        self.assertEqual(list(response.outputs[0].shape), list(expected.shape))
        np.testing.assert_array_equal(
            np.array(response.outputs[0].contents.fp32_contents, np.float32).reshape(
                expected.shape), expected)

    def test_metadata_and_errors(self):
        for name in ("attnserve.encode", "attnserve.sdpa", "attnserve.position_bias"):
            self.assertTrue(self.v2.ModelReady(v2.ModelReadyRequest(name=name),
                                               timeout=RPC_TIMEOUT_S).ready)
            metadata = self.v2.ModelMetadata(v2.ModelMetadataRequest(name=name),
                                             timeout=RPC_TIMEOUT_S)
            self.assertEqual(metadata.name, name)
        self.assertRpcError(INVALID, self.infer, v2.ModelInferRequest(
            model_name="attnserve.position_bias", parameters=params(q_len=2)),
            contains=["parameters.model or parameters.encoding must be set"])
        self.assertRpcError(INVALID, self.infer, v2.ModelInferRequest(
            model_name="attnserve.position_bias",
            parameters=params(encoding="{\"rope\": 3}", num_heads=2, q_len=2)),
            contains=["parameters.encoding is not an attnserve.v1.PositionalEncoding in JSON"])
        self.assertRpcError(INVALID, self.infer, raw_request(
            "attnserve.sdpa", [raw_input("q", np.zeros((1, 1, 1, 4)), "FP32")]),
            contains=['inputs has no "k" tensor; model attnserve.sdpa needs it'])


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
