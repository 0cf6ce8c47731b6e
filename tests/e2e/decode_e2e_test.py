#!/usr/bin/python3
"""End-to-end tests of the Decode stream against the real server.

Decoding a sequence a few tokens at a time must give what Attend with causal=true gives over the
whole sequence (relative error < 1e-5: the same f32 arithmetic, keys cached instead of
recomputed), for every demo model's encoding; the stream's errors carry precise codes.

    /usr/bin/python3 tests/e2e/decode_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (  # noqa: E402
    RPC_TIMEOUT_S, grpc, pb, tensor_pb2, ServerTestCase, f32_tensor, bf16_tensor, to_numpy)

REL = 1e-5

D_MODEL = {"demo-sinusoidal": 512, "demo-nope-gqa": 256, "demo-learned": 256, "demo-rope": 256,
           "demo-alibi": 384, "demo-t5": 256, "demo-cope": 256}


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


class DecodeTest(ServerTestCase):
    CHANNEL_OPTIONS = at.BIG_MESSAGES  # a whole 8192-token answer is 8 MiB

    def decode(self, requests):
        """Runs one stream; returns the responses."""
        return list(self.stub.Decode(iter(requests), timeout=RPC_TIMEOUT_S))

    def chunks(self, model, x, sizes, **first):
        requests, start = [], 0
        for i, n in enumerate(sizes):
            fields = dict(first) if i == 0 else {}
            if i == 0:
                fields["model"] = model
            requests.append(pb.DecodeRequest(query=f32_tensor(x[:, start:start + n]), **fields))
            start += n
        self.assertEqual(start, x.shape[1])
        return requests

    def test_steps_equal_causal_attend_for_every_demo_model(self):
        rng = np.random.default_rng(7)
        sizes = [3, 1, 1, 4, 2]
        for model, d in D_MODEL.items():
            with self.subTest(model=model):
                x = rng.standard_normal((1, sum(sizes), d)).astype(np.float32)
                responses = self.decode(self.chunks(model, x, sizes))
                self.assertEqual([r.position for r in responses], [0, 3, 4, 5, 9])
                stepped = np.concatenate([to_numpy(r.output) for r in responses], axis=1)
                whole = to_numpy(self.attend(model=model, query=f32_tensor(x), causal=True).output)
                self.assertLess(rel_err(stepped, whole), REL)

    def test_attention_of_new_tokens_spans_the_cache(self):
        x = np.random.default_rng(8).standard_normal((1, 5, 256)).astype(np.float32)
        requests = self.chunks("demo-rope", x, [2, 3], return_attention=True)
        requests[1].return_attention = True
        responses = self.decode(requests)
        att = to_numpy(responses[1].attention)
        self.assertEqual(att.shape, (1, 8, 3, 5))
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
        self.assertTrue(np.all(att[0, :, 0, 3:] == 0), "new token 0 (position 2) sees keys <= 2")
        whole = to_numpy(self.attend(model="demo-rope", query=f32_tensor(x), causal=True,
                                     return_attention=True).attention)
        np.testing.assert_allclose(att, whole[:, :, 2:, :], atol=1e-6)

    def test_bfloat16_tokens_come_back_bfloat16(self):
        x = np.random.default_rng(9).standard_normal((1, 3, 256)).astype(np.float32)
        (response,) = self.decode([pb.DecodeRequest(model="demo-t5", query=bf16_tensor(x))])
        self.assertEqual(response.output.dtype, tensor_pb2.BFLOAT16)
        self.assertEqual(list(response.output.shape), [1, 3, 256])

    def assertStreamError(self, code, requests, *needles):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.decode(requests)
        self.assertEqual(ctx.exception.code(), code, ctx.exception.details())
        for needle in needles:
            self.assertIn(needle, ctx.exception.details())

    def test_errors(self):
        x = f32_tensor(np.zeros((1, 2, 256), np.float32))
        self.assertStreamError(grpc.StatusCode.NOT_FOUND,
                               [pb.DecodeRequest(model="nope", query=x)], 'model="nope"')
        self.assertStreamError(grpc.StatusCode.INVALID_ARGUMENT,
                               [pb.DecodeRequest(query=x)], "model name is empty")
        self.assertStreamError(grpc.StatusCode.INVALID_ARGUMENT,
                               [pb.DecodeRequest(model="demo-rope", query=x),
                                pb.DecodeRequest(model="demo-t5", query=x)],
                               'model="demo-t5" differs')
        self.assertStreamError(grpc.StatusCode.INVALID_ARGUMENT,
                               [pb.DecodeRequest(model="demo-rope",
                                                 query=f32_tensor(np.zeros((2, 1, 256))))],
                               "query.shape[0]=2 must be 1")
        self.assertStreamError(grpc.StatusCode.INVALID_ARGUMENT,
                               [pb.DecodeRequest(model="demo-rope",
                                                 query=f32_tensor(np.zeros((1, 1, 100))))],
                               "query.shape[2]=100 must equal d_model=256")
        # demo-learned has 8192 positions: token 8192 does not exist, in one step or after them.
        self.assertStreamError(grpc.StatusCode.OUT_OF_RANGE,
                               [pb.DecodeRequest(model="demo-learned",
                                                 query=f32_tensor(np.zeros((1, 8193, 256))))],
                               "8192 positions")
        full = f32_tensor(np.zeros((1, 8192, 256), np.float32))
        self.assertStreamError(grpc.StatusCode.OUT_OF_RANGE,
                               [pb.DecodeRequest(model="demo-learned", query=full),
                                pb.DecodeRequest(query=f32_tensor(np.zeros((1, 1, 256))))],
                               "8192 positions")

    def test_empty_stream_is_ok(self):
        self.assertEqual(self.decode([]), [])


class DecodeBudgetTest(ServerTestCase):
    # Room for 64 tokens of demo-rope's cache (2 · 4 kv heads · 32 · 4 bytes = 1 KiB a token).
    SERVER_ARGS = ("--max_kv_cache_bytes=65536",)

    def test_cache_budget_is_resource_exhausted_and_freed_with_the_stream(self):
        tokens = lambda n: f32_tensor(np.zeros((1, n, 256), np.float32))  # noqa: E731
        stream = [pb.DecodeRequest(model="demo-rope", query=tokens(60)),
                  pb.DecodeRequest(query=tokens(10))]
        with self.assertRaises(grpc.RpcError) as ctx:
            list(self.stub.Decode(iter(stream), timeout=RPC_TIMEOUT_S))
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("--max_kv_cache_bytes=65536", ctx.exception.details())
        # The failed stream's cache was released: a new 60-token stream fits again.
        responses = list(self.stub.Decode(
            iter([pb.DecodeRequest(model="demo-rope", query=tokens(60))]), timeout=RPC_TIMEOUT_S))
        self.assertEqual(len(responses), 1)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
