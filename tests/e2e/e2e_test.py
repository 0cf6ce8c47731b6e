#!/usr/bin/python3
"""End-to-end tests of the attnserve binary over real gRPC and HTTP.

    /usr/bin/python3 tests/e2e/e2e_test.py --server build/server/attnserve --stubs build/python [-v]

--server and --stubs default to build/server/attnserve and build/python under the repository root
(or $ATTNSERVE_SERVER / $ATTNSERVE_PYTHON_STUBS); every other argument goes to unittest (e.g. -v,
-k Encode, a test name). Run with Debian's /usr/bin/python3, which sees python3-grpcio, -protobuf
and -numpy.

Each test class starts its own server on free ports (setUpClass), reads the bound gRPC and metrics
addresses from its log, and stops it with SIGTERM in tearDownClass, which fails unless the server
exits 0. The demo models' weights are seeded-random and not exposed, so Attend is checked through
properties (probabilities, masking, causality, batch independence, equivariance); Encode is checked
against an independent float64 numpy implementation of the formulas in positional_encoding.proto.
The server fixture, argument parsing and tensor helpers live in attnserve_testing.py beside this
file; the encodings beyond the sinusoidal ones are covered by encodings_e2e_test.py.
"""

import math
import os
import signal
import sys
import unittest
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (  # noqa: E402
    SERVER_PATH, SERVICE_NAME, STARTUP_DEADLINE_S, RPC_TIMEOUT_S,
    grpc, pb, tensor_pb2, pe_pb2, health_pb2, health_pb2_grpc, reflection_pb2,
    reflection_pb2_grpc,
    ServerProcess, ServerTestCase,
    f32_tensor, bf16_round, bf16_to_f32, bf16_tensor, int_tensor, to_numpy, parse_exposition)

# Encode against the float64 reference: |got − ref| <= ENC_ATOL + ENC_RTOL·max(|ref|, |x·scale|).
# The relative part covers the float32 rounding of large inputs (a few ulp of the magnitude).
ENC_ATOL = 2e-6
ENC_RTOL = 5e-7
# bfloat16 keeps 8 significant bits (relative rounding 2^-9 ≈ 2e-3).
BF16_RTOL = 1e-2
BF16_ATOL = 4e-3
# Attend properties (same computation on equal inputs, or prefix/permutation of them).
ATTEND_ATOL = 1e-5
PROB_SUM_ATOL = 1e-5


# ---------------------------------------------------------------------------------------------
# Reference sinusoidal tables (float64), written from the proto comments
# ---------------------------------------------------------------------------------------------

def ref_vaswani(positions, d, base=10000.0):
    """P[p,2k] = sin(p·ω_k), P[p,2k+1] = cos(p·ω_k), ω_k = base^(−2k/d)."""
    p = np.asarray(positions, dtype=np.float64)[..., None]
    out = np.zeros(p.shape[:-1] + (d,), dtype=np.float64)
    for c in range(d):
        k = c // 2
        w = base ** (-2.0 * k / d)
        out[..., c] = np.sin(p[..., 0] * w) if c % 2 == 0 else np.cos(p[..., 0] * w)
    return out


def ref_t2t(positions, d, min_ts=1.0, max_ts=10000.0):
    """n = d//2, ω_k = min_ts·exp(−k·ln(max_ts/min_ts)/max(n−1,1)), [sin ‖ cos] (+0 if d odd)."""
    p = np.asarray(positions, dtype=np.float64)[..., None]
    n = d // 2
    k = np.arange(n, dtype=np.float64)
    w = min_ts * np.exp(-k * math.log(max_ts / min_ts) / max(n - 1, 1))
    out = np.zeros(p.shape[:-1] + (d,), dtype=np.float64)
    out[..., :n] = np.sin(p * w)
    out[..., n:2 * n] = np.cos(p * w)
    return out


def ref_fairseq(positions, d, base=10000.0, padding_idx=1):
    """t2t numbers with min 1, max base, at table row padding_idx + 1 + p."""
    rows = np.asarray(positions, dtype=np.int64) + padding_idx + 1
    return ref_t2t(rows, d, 1.0, base)


def sinusoidal(variant, **kwargs):
    return pe_pb2.PositionalEncoding(sinusoidal=pe_pb2.SinusoidalEncoding(variant=variant,
                                                                          **kwargs))


# ---------------------------------------------------------------------------------------------
# 1. Encode
# ---------------------------------------------------------------------------------------------

class EncodeTest(ServerTestCase):

    def setUp(self):
        self.rng = np.random.default_rng(1234)

    def check_encode(self, x, encoding, table, input_scale=None, **request):
        """Encodes x (float32 [B,S,d]) and compares with x·scale + table (broadcast [.., S, d])."""
        kwargs = dict(input=f32_tensor(x), encoding=encoding, **request)
        if input_scale is not None:
            kwargs["input_scale"] = input_scale
        out_t = self.encode(**kwargs).output
        self.assertEqual(out_t.dtype, tensor_pb2.FLOAT32)
        self.assertEqual(list(out_t.shape), list(x.shape))
        got = to_numpy(out_t).astype(np.float64)
        scale = 1.0 if input_scale is None else float(np.float32(input_scale))
        scaled = x.astype(np.float64) * scale
        want = scaled + table
        tol = ENC_ATOL + ENC_RTOL * np.maximum(np.abs(want), np.abs(scaled))
        err = np.abs(got - want)
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        self.assertTrue(np.all(err <= tol),
                        f"max abs error {err.max():.3g} (at {worst}: got {got[worst]!r}, want "
                        f"{want[worst]!r}, tol {tol[worst]:.3g})")
        return got

    def test_vaswani(self):
        cases = [  # (d, seq, offset, base, input_scale)
            (16, 5, 0, None, None),
            (64, 7, 37, None, 8.0),  # sqrt(d_model) scaling as in Vaswani et al.
            (7, 4, 3, None, None),   # odd d: last channel is a sin
            (32, 6, 5, 500.0, 0.5),
            (48, 3, 4093, None, None),  # large positions: arguments must not lose precision
        ]
        for d, seq, offset, base, scale in cases:
            with self.subTest(d=d, seq=seq, offset=offset, base=base, scale=scale):
                x = self.rng.standard_normal((2, seq, d)).astype(np.float32)
                kw = {} if base is None else {"base": base}
                table = ref_vaswani(offset + np.arange(seq), d, **({} if base is None else kw))
                self.check_encode(x, sinusoidal(pe_pb2.VASWANI, **kw), table,
                                  input_scale=scale, position_offset=offset)

    def test_unspecified_variant_means_vaswani(self):
        x = self.rng.standard_normal((1, 6, 20)).astype(np.float32)
        self.check_encode(x, sinusoidal(pe_pb2.SINUSOIDAL_VARIANT_UNSPECIFIED),
                          ref_vaswani(2 + np.arange(6), 20), position_offset=2)

    def test_tensor2tensor(self):
        cases = [  # (d, seq, offset, min_ts, max_ts, input_scale)
            (16, 5, 0, None, None, None),
            (17, 6, 11, None, None, 2.0),     # odd d: one zero channel at the end
            (3, 4, 1, None, None, None),      # n = 1: max(n−1, 1) guards the division
            (40, 5, 9, 2.0, 500.0, None),
            (33, 4, 250, 0.5, 1e4, 1.5),
        ]
        for d, seq, offset, min_ts, max_ts, scale in cases:
            with self.subTest(d=d, seq=seq, offset=offset, min_ts=min_ts, max_ts=max_ts,
                              scale=scale):
                x = self.rng.standard_normal((2, seq, d)).astype(np.float32)
                kw = {}
                if min_ts is not None:
                    kw["min_timescale"] = min_ts
                if max_ts is not None:
                    kw["max_timescale"] = max_ts
                table = ref_t2t(offset + np.arange(seq), d, min_ts or 1.0, max_ts or 1e4)
                if d % 2 == 1:
                    self.assertTrue(np.all(table[..., -1] == 0))
                got = self.check_encode(x, sinusoidal(pe_pb2.TENSOR2TENSOR, **kw), table,
                                        input_scale=scale, position_offset=offset)
                if d % 2 == 1:  # the pad channel is exactly the (scaled) input
                    s = np.float32(1.0 if scale is None else scale)
                    np.testing.assert_array_equal(got[..., -1].astype(np.float32),
                                                  x[..., -1] * s)

    def test_fairseq(self):
        cases = [  # (d, seq, offset, base, padding_idx, input_scale)
            (16, 5, 0, None, None, None),    # default padding_idx 1: rows 2, 3, ...
            (24, 4, 6, None, 0, None),       # explicit padding_idx 0: rows 1, 2, ...
            (15, 3, 2, 1000.0, 5, 3.0),      # odd d, custom base (= max timescale)
        ]
        for d, seq, offset, base, padding_idx, scale in cases:
            with self.subTest(d=d, seq=seq, offset=offset, base=base, padding_idx=padding_idx):
                x = self.rng.standard_normal((2, seq, d)).astype(np.float32)
                kw = {}
                if base is not None:
                    kw["base"] = base
                if padding_idx is not None:
                    kw["padding_idx"] = padding_idx
                table = ref_fairseq(offset + np.arange(seq), d, base or 1e4,
                                    1 if padding_idx is None else padding_idx)
                self.check_encode(x, sinusoidal(pe_pb2.FAIRSEQ, **kw), table,
                                  input_scale=scale, position_offset=offset)

    def test_fairseq_differs_from_t2t_by_padding_offset(self):
        # Guards the reference itself: fairseq at p equals t2t at p + padding_idx + 1.
        np.testing.assert_allclose(ref_fairseq(np.arange(4), 10), ref_t2t(2 + np.arange(4), 10))
        x = np.zeros((1, 4, 10), dtype=np.float32)
        fs = to_numpy(self.encode(input=f32_tensor(x),
                                  encoding=sinusoidal(pe_pb2.FAIRSEQ)).output)
        t2t = to_numpy(self.encode(input=f32_tensor(x), position_offset=2,
                                   encoding=sinusoidal(pe_pb2.TENSOR2TENSOR)).output)
        np.testing.assert_allclose(fs, t2t, rtol=0, atol=2 * ENC_ATOL)

    def test_position_ids_int64_1d(self):
        ids = np.array([5, 0, 3, 3, 100], dtype=np.int64)
        x = self.rng.standard_normal((2, 5, 24)).astype(np.float32)
        # position_offset is ignored when position_ids is set.
        self.check_encode(x, sinusoidal(pe_pb2.VASWANI), ref_vaswani(ids, 24),
                          position_ids=int_tensor(ids, tensor_pb2.INT64), position_offset=7)

    def test_position_ids_int32_2d(self):
        ids = np.array([[0, 1, 2, 3], [9, 4, 1, 2]], dtype=np.int32)
        x = self.rng.standard_normal((2, 4, 13)).astype(np.float32)
        for variant, ref in [(pe_pb2.VASWANI, ref_vaswani), (pe_pb2.TENSOR2TENSOR, ref_t2t),
                             (pe_pb2.FAIRSEQ, ref_fairseq)]:
            with self.subTest(variant=pe_pb2.SinusoidalVariant.Name(variant)):
                self.check_encode(x, sinusoidal(variant), ref(ids, 13), input_scale=1.25,
                                  position_ids=int_tensor(ids, tensor_pb2.INT32))

    def test_large_inputs_relative_tolerance(self):
        x = (self.rng.standard_normal((1, 4, 32)) * 1e4).astype(np.float32)
        self.check_encode(x, sinusoidal(pe_pb2.VASWANI), ref_vaswani(np.arange(4), 32),
                          input_scale=3.0)

    def test_bfloat16_in_bfloat16_out(self):
        x = self.rng.standard_normal((2, 6, 32)).astype(np.float32)
        bits = bf16_round(x)
        x_bf = bf16_to_f32(bits).astype(np.float64)  # the values the server actually receives
        for variant, ref in [(pe_pb2.VASWANI, ref_vaswani), (pe_pb2.TENSOR2TENSOR, ref_t2t),
                             (pe_pb2.FAIRSEQ, ref_fairseq)]:
            with self.subTest(variant=pe_pb2.SinusoidalVariant.Name(variant)):
                out_t = self.encode(input=bf16_tensor(x), encoding=sinusoidal(variant),
                                    position_offset=3, input_scale=2.0).output
                self.assertEqual(out_t.dtype, tensor_pb2.BFLOAT16)
                self.assertEqual(list(out_t.shape), [2, 6, 32])
                self.assertEqual(len(out_t.data), 2 * 2 * 6 * 32)
                got = to_numpy(out_t).astype(np.float64)
                want = x_bf * 2.0 + ref(3 + np.arange(6), 32)
                err = np.abs(got - want)
                self.assertTrue(np.all(err <= BF16_ATOL + BF16_RTOL * np.abs(want)),
                                f"max bf16 error {err.max():.3g}")


# ---------------------------------------------------------------------------------------------
# 2. Attend
# ---------------------------------------------------------------------------------------------

class AttendTest(ServerTestCase):
    SIN = "demo-sinusoidal"   # d_model 512, 8 heads
    GQA = "demo-nope-gqa"     # d_model 256, 8 query heads, 2 kv heads

    def setUp(self):
        self.rng = np.random.default_rng(99)

    def x(self, *shape):
        return self.rng.standard_normal(shape).astype(np.float32)

    def run_attend(self, model, query, **kwargs):
        """Returns (output, attention or None) as float32 arrays, checking dtypes."""
        resp = self.attend(model=model, query=f32_tensor(query), **kwargs)
        self.assertEqual(resp.output.dtype, tensor_pb2.FLOAT32)
        out = to_numpy(resp.output)
        self.assertTrue(np.all(np.isfinite(out)), "output has NaN/Inf")
        att = None
        if kwargs.get("return_attention"):
            self.assertEqual(resp.attention.dtype, tensor_pb2.FLOAT32)
            att = to_numpy(resp.attention)
            self.assertTrue(np.all(np.isfinite(att)), "attention has NaN/Inf")
        else:
            self.assertEqual(len(resp.attention.data), 0, "attention returned unrequested")
        return out, att

    def assertClose(self, got, want, atol=ATTEND_ATOL, msg=""):
        self.assertEqual(got.shape, want.shape)
        err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        self.assertLessEqual(err, atol, f"{msg} max abs diff {err:.3g} > {atol:g}")

    def assertRowsSumToOne(self, att):
        sums = att.astype(np.float64).sum(axis=-1)
        self.assertLessEqual(float(np.max(np.abs(sums - 1.0))), PROB_SUM_ATOL,
                             "attention rows must sum to 1")
        self.assertTrue(np.all(att >= 0), "probabilities must be >= 0")

    def assertCausalZeros(self, att, shift=0):
        """Entries with key j > i + shift must be exactly 0 (shift = kv_len − q_len)."""
        sq, sk = att.shape[-2:]
        above = np.triu(np.ones((sq, sk), dtype=bool), k=1 + shift)
        self.assertTrue(np.all(att[..., above] == 0.0), "masked probabilities must be exactly 0")
        # and the visible ones are not all zero (the mask is not over-applied)
        self.assertTrue(np.all(att[..., ~above] > 0.0), "visible probabilities should be > 0")

    def test_output_shape_and_dtype(self):
        q = self.x(2, 5, 512)
        out, att = self.run_attend(self.SIN, q)
        self.assertEqual(out.shape, (2, 5, 512))
        self.assertIsNone(att)
        self.assertGreater(float(np.abs(out).max()), 0.0)

    def test_attention_probabilities(self):
        q = self.x(2, 5, 512)
        out, att = self.run_attend(self.SIN, q, return_attention=True)
        self.assertEqual(att.shape, (2, 8, 5, 5))
        self.assertRowsSumToOne(att)
        # Non-causal: some probability above the diagonal.
        self.assertGreater(float(att[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]]
                                 .max()), 0.0)
        # Asking for probabilities does not change the output.
        out2, _ = self.run_attend(self.SIN, q)
        self.assertClose(out2, out)

    def test_causal_probabilities(self):
        q = self.x(2, 6, 512)
        _, att = self.run_attend(self.SIN, q, causal=True, return_attention=True)
        self.assertEqual(att.shape, (2, 8, 6, 6))
        self.assertRowsSumToOne(att)
        self.assertCausalZeros(att)
        np.testing.assert_allclose(att[..., 0, 0], 1.0, rtol=0, atol=PROB_SUM_ATOL)

    def test_causal_prefix_independent_of_later_tokens(self):
        q = self.x(1, 6, 512)
        q2 = q.copy()
        q2[:, -1] = self.x(1, 512)
        for model, qa, qb in [(self.SIN, q, q2), (self.GQA, q[..., :256], q2[..., :256])]:
            with self.subTest(model=model):
                out_a, _ = self.run_attend(model, qa, causal=True)
                out_b, _ = self.run_attend(model, qb, causal=True)
                self.assertClose(out_b[:, :-1], out_a[:, :-1], msg="earlier tokens changed:")
                self.assertGreater(float(np.abs(out_b[:, -1] - out_a[:, -1]).max()), 1e-3,
                                   "the changed token's own output should change")
                # Without the mask every position sees the last token.
                nc_a, _ = self.run_attend(model, qa)
                nc_b, _ = self.run_attend(model, qb)
                self.assertGreater(float(np.abs(nc_b[:, 0] - nc_a[:, 0]).max()), 1e-4)

    def test_batch_independence(self):
        q = self.x(2, 5, 512)
        out, att = self.run_attend(self.SIN, q, causal=True, return_attention=True)
        for b in range(2):
            with self.subTest(row=b):
                out_b, att_b = self.run_attend(self.SIN, q[b:b + 1], causal=True,
                                               return_attention=True)
                self.assertClose(out[b:b + 1], out_b)
                self.assertClose(att[b:b + 1], att_b)
        self.assertGreater(float(np.abs(out[0] - out[1]).max()), 1e-3)

    def test_key_lengths_mask_padding(self):
        q = self.x(1, 6, 512)
        out, att = self.run_attend(self.SIN, q, key_lengths=[3], return_attention=True)
        self.assertEqual(att.shape, (1, 8, 6, 6))
        self.assertTrue(np.all(att[..., 3:] == 0.0), "keys >= key_length must get exactly 0")
        self.assertTrue(np.all(att[..., :3] > 0.0))
        self.assertRowsSumToOne(att)
        # Padding keys do not influence the result: change them and nothing moves... except the
        # padded *queries* themselves (rows 3..5), whose own input changed.
        q2 = q.copy()
        q2[:, 3:] = self.x(1, 3, 512)
        out2, _ = self.run_attend(self.SIN, q2, key_lengths=[3])
        self.assertClose(out2[:, :3], out[:, :3], msg="padding keys leaked into the output:")

    def test_key_lengths_per_batch_row(self):
        q = self.x(2, 5, 256)
        _, att = self.run_attend(self.GQA, q, key_lengths=[5, 2], return_attention=True)
        self.assertTrue(np.all(att[1, ..., 2:] == 0.0))
        self.assertTrue(np.all(att[0] > 0.0))
        self.assertRowsSumToOne(att)

    def test_all_keys_masked_gives_zeros_not_nan(self):
        q = self.x(1, 4, 512)
        out, att = self.run_attend(self.SIN, q, key_lengths=[0], return_attention=True)
        self.assertTrue(np.all(att == 0.0), "a fully masked row has zero probabilities")
        # Zeros before the output projection → every token's output is the same (o bias).
        self.assertClose(out, np.broadcast_to(out[:, :1], out.shape), atol=0.0)

    def test_position_offset_changes_sinusoidal_output(self):
        q = self.x(1, 5, 512)
        out0, _ = self.run_attend(self.SIN, q)
        out7, _ = self.run_attend(self.SIN, q, position_offset=7)
        self.assertGreater(float(np.abs(out7 - out0).max()), 1e-3,
                           "the sinusoidal encoding must depend on position_offset")
        # position_ids = offset + t is the same request.
        ids = 7 + np.arange(5)
        out_ids, _ = self.run_attend(self.SIN, q,
                                     position_ids=int_tensor(ids, tensor_pb2.INT64))
        self.assertClose(out_ids, out7, msg="position_ids [q_len] vs position_offset:")
        out_ids2, _ = self.run_attend(self.SIN, q, position_offset=123,
                                      position_ids=int_tensor(ids[None], tensor_pb2.INT32))
        self.assertClose(out_ids2, out7, msg="position_ids [batch, q_len] INT32:")

    def test_position_offset_ignored_without_encoding(self):
        q = self.x(2, 5, 256)
        out0, _ = self.run_attend(self.GQA, q, causal=True)
        out7, _ = self.run_attend(self.GQA, q, causal=True, position_offset=7)
        self.assertClose(out7, out0, msg="NoPE output must not depend on position_offset:")

    def test_gqa_causal_attention(self):
        q = self.x(2, 5, 256)
        out, att = self.run_attend(self.GQA, q, causal=True, return_attention=True)
        self.assertEqual(out.shape, (2, 5, 256))
        self.assertEqual(att.shape, (2, 8, 5, 5))
        self.assertRowsSumToOne(att)
        self.assertCausalZeros(att)

    def test_nope_permutation_equivariance(self):
        q = self.x(2, 7, 256)
        perm = np.array([3, 0, 6, 1, 5, 2, 4])
        out, att = self.run_attend(self.GQA, q, return_attention=True)
        out_p, att_p = self.run_attend(self.GQA, q[:, perm], return_attention=True)
        self.assertClose(out_p, out[:, perm], msg="permuted queries:")
        self.assertClose(att_p, att[:, :, perm][:, :, :, perm], msg="permuted attention:")

    def test_cross_attention(self):
        for model, d in [(self.SIN, 512), (self.GQA, 256)]:
            with self.subTest(model=model):
                q, ctx = self.x(2, 4, d), self.x(2, 7, d)
                out, att = self.run_attend(model, q, context=f32_tensor(ctx),
                                           return_attention=True)
                self.assertEqual(out.shape, (2, 4, d))
                self.assertEqual(att.shape, (2, 8, 4, 7))
                self.assertRowsSumToOne(att)
                self.assertTrue(np.all(att > 0.0))
                # The keys come from the context, not the query.
                ctx2 = ctx.copy()
                ctx2[:, 2] = self.x(2, d)
                out2, _ = self.run_attend(model, q, context=f32_tensor(ctx2))
                self.assertGreater(float(np.abs(out2 - out).max()), 1e-4)

    def test_cross_attention_causal_bottom_right(self):
        q, ctx = self.x(1, 3, 256), self.x(1, 5, 256)
        _, att = self.run_attend(self.GQA, q, context=f32_tensor(ctx), causal=True,
                                 return_attention=True)
        self.assertEqual(att.shape, (1, 8, 3, 5))
        self.assertRowsSumToOne(att)
        self.assertCausalZeros(att, shift=5 - 3)  # query i sees keys j <= i + 2

    def test_bfloat16_query(self):
        q = bf16_to_f32(bf16_round(self.x(1, 4, 256)))
        resp = self.attend(model=self.GQA, query=bf16_tensor(q))
        self.assertEqual(resp.output.dtype, tensor_pb2.BFLOAT16)
        self.assertEqual(list(resp.output.shape), [1, 4, 256])
        got = to_numpy(resp.output)
        want, _ = self.run_attend(self.GQA, q)
        scale = float(np.abs(want).max())
        self.assertLessEqual(float(np.abs(got - want).max()), 2e-2 * scale)


# ---------------------------------------------------------------------------------------------
# 3. Errors
# ---------------------------------------------------------------------------------------------

class ErrorTest(ServerTestCase):
    SERVER_ARGS = ("--max_batch=4",)

    def setUp(self):
        self.INVALID = grpc.StatusCode.INVALID_ARGUMENT
        self.NOT_FOUND = grpc.StatusCode.NOT_FOUND

    def test_d_model_mismatch(self):
        q = np.zeros((1, 3, 700), np.float32)
        self.assertRpcError(self.INVALID, self.attend, model="demo-sinusoidal",
                            query=f32_tensor(q),
                            contains=["query.shape[2]=700 must equal d_model=512"])

    def test_wrong_rank(self):
        q = np.zeros((3, 512), np.float32)
        self.assertRpcError(self.INVALID, self.attend, model="demo-sinusoidal",
                            query=f32_tensor(q), contains=["query.shape"])

    def test_byte_length_mismatch(self):
        bad = tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=[1, 3, 512],
                                data=np.zeros(10, "<f4").tobytes())
        self.assertRpcError(self.INVALID, self.attend, model="demo-sinusoidal", query=bad,
                            contains=["query.data"])

    def test_unknown_model(self):
        q = np.zeros((1, 3, 512), np.float32)
        self.assertRpcError(self.NOT_FOUND, self.attend, model="no-such-model",
                            query=f32_tensor(q), contains=["no-such-model"])

    def test_encoding_not_set(self):
        x = np.zeros((1, 2, 8), np.float32)
        self.assertRpcError(self.INVALID, self.encode, input=f32_tensor(x),
                            contains=["encoding"])
        # An encoding message with no kind set is rejected the same way.
        self.assertRpcError(self.INVALID, self.encode, input=f32_tensor(x),
                            encoding=pe_pb2.PositionalEncoding(), contains=["encoding"])

    def test_unknown_sinusoidal_variant(self):
        x = np.zeros((1, 2, 8), np.float32)
        self.assertRpcError(self.INVALID, self.encode, input=f32_tensor(x),
                            encoding=sinusoidal(99), contains=["variant=99"])

    def test_alibi_in_encode(self):
        x = np.zeros((1, 2, 8), np.float32)
        enc = pe_pb2.PositionalEncoding(alibi=pe_pb2.AlibiEncoding())
        self.assertRpcError(self.INVALID, self.encode, input=f32_tensor(x), encoding=enc,
                            contains=["PositionBias", "alibi"])

    def test_batch_above_max_batch(self):
        x = np.zeros((5, 2, 8), np.float32)
        self.assertRpcError(self.INVALID, self.encode, input=f32_tensor(x),
                            encoding=sinusoidal(pe_pb2.VASWANI), contains=["max_batch", "5"])
        q = np.zeros((5, 2, 256), np.float32)
        self.assertRpcError(self.INVALID, self.attend, model="demo-nope-gqa",
                            query=f32_tensor(q), contains=["max_batch", "5"])
        # The limit itself is accepted.
        out = self.encode(input=f32_tensor(np.zeros((4, 2, 8), np.float32)),
                          encoding=sinusoidal(pe_pb2.VASWANI)).output
        self.assertEqual(list(out.shape), [4, 2, 8])

    def test_still_serves_after_errors(self):
        # Several failures in a row on this same server, then a correct Encode.
        x = np.zeros((1, 2, 8), np.float32)
        for _ in range(3):
            self.assertRpcError(self.INVALID, self.encode, input=f32_tensor(x))
            self.assertRpcError(self.NOT_FOUND, self.attend, model="nope",
                                query=f32_tensor(np.zeros((1, 2, 512), np.float32)))
        x = np.random.default_rng(5).standard_normal((2, 3, 8)).astype(np.float32)
        got = to_numpy(self.encode(input=f32_tensor(x), position_offset=4,
                                   encoding=sinusoidal(pe_pb2.VASWANI)).output)
        want = x.astype(np.float64) + ref_vaswani(4 + np.arange(3), 8)
        self.assertLessEqual(float(np.abs(got - want).max()), ENC_ATOL + ENC_RTOL * 4)


class HostileInputTest(ServerTestCase):
    """Requests built to overflow positions, echo huge strings or abuse float conversions: each
    gets INVALID_ARGUMENT (NOT_FOUND for a model) naming the field and value, and the server
    keeps serving (checked after every test)."""

    INT64_MAX = 2**63 - 1
    MAX_POSITION = 2**31 - 1

    def setUp(self):
        self.INVALID = grpc.StatusCode.INVALID_ARGUMENT

    def tearDown(self):
        self.assertGreater(len(self.list_models().models), 0, "the server must still serve")

    def qkv(self, H=2, Hkv=2, Sq=3, Sk=3, hd=8):
        rng = np.random.default_rng(3)
        return (f32_tensor(rng.standard_normal((1, H, Sq, hd))),
                f32_tensor(rng.standard_normal((1, Hkv, Sk, hd))),
                f32_tensor(rng.standard_normal((1, Hkv, Sk, hd))))

    def test_encode_int64_max_position_id(self):
        x = f32_tensor(np.zeros((1, 2, 8), np.float32))
        ids = int_tensor([0, self.INT64_MAX], tensor_pb2.INT64)
        self.assertRpcError(self.INVALID, self.encode, input=x,
                            encoding=sinusoidal(pe_pb2.VASWANI), position_ids=ids,
                            contains=["position_ids[1]=9223372036854775807",
                                      "must be in [0, 2147483647]"])
        self.assertRpcError(self.INVALID, self.encode, input=x,
                            encoding=sinusoidal(pe_pb2.FAIRSEQ), position_offset=self.INT64_MAX,
                            contains=["position_offset=9223372036854775807",
                                      "must be in [0, 2147483646]"])
        # The largest position itself is served.
        out = to_numpy(self.encode(input=x, encoding=sinusoidal(pe_pb2.VASWANI),
                                   position_offset=self.MAX_POSITION - 1).output)
        self.assertTrue(np.all(np.isfinite(out)))

    def test_attend_t5_huge_position_id(self):
        q = f32_tensor(np.zeros((1, 2, 256), np.float32))
        self.assertRpcError(self.INVALID, self.attend, model="demo-t5", query=q,
                            position_ids=int_tensor([0, 2**62], tensor_pb2.INT64),
                            contains=["position_ids[1]=4611686018427387904",
                                      "must be in [0, 2147483647]"])

    def test_sdpa_position_offset_out_of_range(self):
        q, k, v = self.qkv()
        alibi = pe_pb2.PositionalEncoding(alibi=pe_pb2.AlibiEncoding())
        for encoding in (alibi, None):
            with self.subTest(encoding=encoding):
                kw = dict(q=q, k=k, v=v)
                if encoding is not None:
                    kw["encoding"] = encoding
                self.assertRpcError(self.INVALID, self.sdpa, position_offset=self.INT64_MAX,
                                    contains=["position_offset=9223372036854775807",
                                              "must be in [0, 2147483645]"], **kw)
                self.assertRpcError(self.INVALID, self.sdpa, position_offset=-1,
                                    contains=["position_offset=-1 must be in [0, "], **kw)
        # Without an encoding positions do not exist, so Sq > Sk needs no offset.
        q5, _, _ = self.qkv(Sq=5)
        self.assertEqual(list(self.sdpa(q=q5, k=k, v=v).output.shape), [1, 2, 5, 8])

    def test_sdpa_scale_must_fit_float32(self):
        q, k, v = self.qkv()
        self.assertRpcError(self.INVALID, self.sdpa, q=q, k=k, v=v, scale=1e300,
                            contains=["scale=1e+300 must be finite and fit in float32"])
        self.assertRpcError(self.INVALID, self.sdpa, q=q, k=k, v=v, scale=float("-inf"),
                            contains=["scale=-inf must be finite"])
        self.assertEqual(list(self.sdpa(q=q, k=k, v=v, scale=1e-3).output.shape), [1, 2, 3, 8])

    def test_sdpa_kv_heads_must_divide_heads(self):
        q, k, v = self.qkv(H=3, Hkv=2)
        self.assertRpcError(self.INVALID, self.sdpa, q=q, k=k, v=v,
                            contains=["k.shape[1]=2 must divide q.shape[1]=3"])

    def test_encode_negative_or_overflowing_heads(self):
        x = f32_tensor(np.zeros((1, 2, 8), np.float32))
        rope = pe_pb2.PositionalEncoding(rope=pe_pb2.RotaryEncoding())
        self.assertRpcError(self.INVALID, self.encode, input=x, encoding=rope, num_heads=-2,
                            contains=["num_heads=-2 must be >= 0"])
        self.assertRpcError(self.INVALID, self.encode, input=x, encoding=rope, head_dim=-8,
                            contains=["head_dim=-8 must be >= 0"])
        # 4·(2^62 + 2) wraps to 8 in int64: the split must still be rejected.
        self.assertRpcError(self.INVALID, self.encode, input=x, encoding=rope, num_heads=4,
                            head_dim=2**62 + 2,
                            contains=["num_heads=4 and head_dim=4611686018427387906 must split "
                                      "d_model=8"])

    def test_fairseq_padding_idx_out_of_range(self):
        x = f32_tensor(np.zeros((1, 2, 8), np.float32))
        self.assertRpcError(self.INVALID, self.encode, input=x,
                            encoding=sinusoidal(pe_pb2.FAIRSEQ, padding_idx=2**40),
                            contains=["encoding.sinusoidal.padding_idx=1099511627776 must be in "
                                      "[0, 2147483647]"])

    def test_long_model_name_is_truncated(self):
        q = f32_tensor(np.zeros((1, 2, 256), np.float32))
        details = self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.attend, model="m" * 100000,
                                      query=q, contains=["m" * 128 + "…(100000 bytes)"])
        self.assertNotIn("m" * 129, details)
        self.assertLess(len(details), 1000)

    def test_long_shape_is_truncated(self):
        x = tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=[1] * 10000,
                              data=np.zeros(1, "<f4").tobytes())
        details = self.assertRpcError(self.INVALID, self.encode, input=x,
                                      encoding=sinusoidal(pe_pb2.VASWANI),
                                      contains=["input.shape=[1,1,1,1,1,1,1,1,…(10000 dims)]"])
        self.assertLess(len(details), 500)


class ResponseSizeTest(ServerTestCase):
    """A response that cannot fit --max_message_bytes is refused before it is computed."""
    SERVER_ARGS = ("--max_message_bytes=1048576",)

    def setUp(self):
        self.INVALID = grpc.StatusCode.INVALID_ARGUMENT

    def test_attend_return_attention_too_large(self):
        q = f32_tensor(np.zeros((1, 256, 256), np.float32))  # demo-nope-gqa: 8 heads
        self.assertRpcError(self.INVALID, self.attend, model="demo-nope-gqa", query=q,
                            return_attention=True,
                            contains=["return_attention: attention [1,8,256,256] FLOAT32 is "
                                      "2097152 bytes", "--max_message_bytes=1048576"])
        # Without the probabilities the same request fits.
        self.assertEqual(list(self.attend(model="demo-nope-gqa", query=q).output.shape),
                         [1, 256, 256])
        # The probabilities alone fit (924800 bytes), with the output (174080) they do not.
        q170 = f32_tensor(np.zeros((1, 170, 256), np.float32))
        self.assertRpcError(self.INVALID, self.attend, model="demo-nope-gqa", query=q170,
                            return_attention=True,
                            contains=["return_attention: attention [1,8,170,170] FLOAT32 is "
                                      "924800 bytes, 1098880 with the output",
                                      "--max_message_bytes=1048576"])

    def test_sdpa_return_attention_too_large(self):
        rng = np.random.default_rng(0)
        q = f32_tensor(rng.standard_normal((1, 4, 300, 16)))
        k = f32_tensor(rng.standard_normal((1, 4, 300, 16)))
        self.assertRpcError(self.INVALID, self.sdpa, q=q, k=k, v=k, return_attention=True,
                            contains=["return_attention: attention [1,4,300,300] FLOAT32 is "
                                      "1440000 bytes", "--max_message_bytes=1048576"])
        self.assertEqual(list(self.sdpa(q=q, k=k, v=k).output.shape), [1, 4, 300, 16])

    def test_position_bias_too_large(self):
        alibi = pe_pb2.PositionalEncoding(alibi=pe_pb2.AlibiEncoding())
        self.assertRpcError(self.INVALID, self.position_bias, encoding=alibi, num_heads=16,
                            q_len=256,
                            contains=["num_heads·q_len·kv_len: bias [16,256,256] FLOAT32 is "
                                      "4194304 bytes", "--max_message_bytes=1048576"])
        self.assertEqual(list(self.position_bias(encoding=alibi, num_heads=4, q_len=128)
                              .bias.shape), [4, 128, 128])


# ---------------------------------------------------------------------------------------------
# 4–7. Models, health, reflection, metrics
# ---------------------------------------------------------------------------------------------

class ServiceTest(ServerTestCase):
    EXPECTED_MODELS = {
        # name: (d_model, num_heads, num_kv_heads, head_dim)
        "demo-nope-gqa": (256, 8, 2, 32),
        "demo-sinusoidal": (512, 8, 8, 64),
    }

    # 4. ListModels / GetModel

    def test_list_models(self):
        resp = self.stub.ListModels(pb.ListModelsRequest(), timeout=RPC_TIMEOUT_S)
        names = [m.name for m in resp.models]
        self.assertEqual(names, sorted(names), "models must be sorted by name")
        for name, dims in self.EXPECTED_MODELS.items():
            self.assertIn(name, names)
            m = next(m for m in resp.models if m.name == name)
            self.assertEqual((m.d_model, m.num_heads, m.num_kv_heads, m.head_dim), dims, name)
        sin = next(m for m in resp.models if m.name == "demo-sinusoidal")
        self.assertEqual(sin.encoding.WhichOneof("kind"), "sinusoidal")
        self.assertTrue(sin.qkv_bias and sin.o_bias)
        gqa = next(m for m in resp.models if m.name == "demo-nope-gqa")
        self.assertIn(gqa.encoding.WhichOneof("kind"), (None, "none"))
        self.assertFalse(gqa.qkv_bias or gqa.o_bias)

    def test_get_model(self):
        cfg = self.stub.GetModel(pb.GetModelRequest(name="demo-sinusoidal"),
                                 timeout=RPC_TIMEOUT_S).config
        self.assertEqual(cfg.name, "demo-sinusoidal")
        self.assertEqual((cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim),
                         self.EXPECTED_MODELS["demo-sinusoidal"])
        self.assertIn(cfg.encoding.sinusoidal.variant,
                      (pe_pb2.VASWANI, pe_pb2.SINUSOIDAL_VARIANT_UNSPECIFIED))

    def test_get_unknown_model(self):
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, self.stub.GetModel,
                            pb.GetModelRequest(name="nope"), timeout=RPC_TIMEOUT_S,
                            contains=["nope"])

    # 5. Health

    def test_health(self):
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", SERVICE_NAME):
            with self.subTest(service=service):
                resp = health.Check(health_pb2.HealthCheckRequest(service=service),
                                    timeout=RPC_TIMEOUT_S)
                self.assertEqual(resp.status, health_pb2.HealthCheckResponse.SERVING)
        self.assertRpcError(grpc.StatusCode.NOT_FOUND, health.Check,
                            health_pb2.HealthCheckRequest(service="no.such.Service"),
                            timeout=RPC_TIMEOUT_S)

    # 6. Reflection

    def reflect(self, **request):
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        responses = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=RPC_TIMEOUT_S))
        self.assertEqual(len(responses), 1)
        return responses[0]

    def test_reflection_lists_services(self):
        resp = self.reflect(list_services="")
        self.assertEqual(resp.WhichOneof("message_response"), "list_services_response")
        names = {s.name for s in resp.list_services_response.service}
        for want in (SERVICE_NAME, "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"):
            self.assertIn(want, names)

    def test_reflection_file_containing_symbol(self):
        from google.protobuf import descriptor_pb2
        resp = self.reflect(file_containing_symbol=SERVICE_NAME)
        self.assertEqual(resp.WhichOneof("message_response"), "file_descriptor_response",
                         str(resp.error_response))
        blobs = resp.file_descriptor_response.file_descriptor_proto
        self.assertGreater(len(blobs), 0)
        self.assertGreater(min(len(b) for b in blobs), 0)
        files = {}
        for blob in blobs:
            fd = descriptor_pb2.FileDescriptorProto.FromString(blob)
            files[fd.name] = fd
        service_files = [fd for fd in files.values()
                         if fd.package == "attnserve.v1"
                         and any(s.name == "AttentionService" for s in fd.service)]
        self.assertEqual(len(service_files), 1, sorted(files))
        methods = {m.name for s in service_files[0].service for m in s.method}
        self.assertTrue({"Encode", "Attend", "ListModels", "GetModel"} <= methods, methods)

    def test_reflection_unknown_symbol(self):
        resp = self.reflect(file_containing_symbol="no.such.Symbol")
        self.assertEqual(resp.WhichOneof("message_response"), "error_response")
        self.assertEqual(resp.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])


class MetricsTest(ServerTestCase):
    N_OK = 3
    N_FAILED = 2

    def scrape(self):
        with urllib.request.urlopen(self.server.metrics_url, timeout=RPC_TIMEOUT_S) as resp:
            self.assertEqual(resp.status, 200)
            return parse_exposition(resp.read().decode("utf-8"))

    @staticmethod
    def select(samples, name, **labels):
        return [(lb, v) for n, lb, v in samples
                if n == name and all(lb.get(k) == want for k, want in labels.items())]

    def test_handled_and_latency_metrics(self):
        x = np.ones((1, 3, 8), np.float32)
        for i in range(self.N_OK):
            self.encode(input=f32_tensor(x), encoding=sinusoidal(pe_pb2.VASWANI),
                        position_offset=i)
        for _ in range(self.N_FAILED):
            with self.assertRaises(grpc.RpcError) as ctx:
                self.encode(input=f32_tensor(x))  # no encoding → INVALID_ARGUMENT
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

        samples = self.scrape()
        common = dict(grpc_service=SERVICE_NAME, grpc_method="Encode")

        ok = self.select(samples, "grpc_server_handled_total", grpc_code="OK", **common)
        self.assertEqual(len(ok), 1, f"one OK Encode series expected, got {ok}")
        self.assertEqual(ok[0][0].get("grpc_type"), "unary")
        self.assertGreaterEqual(ok[0][1], self.N_OK)

        bad = self.select(samples, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT",
                          **common)
        self.assertEqual(len(bad), 1, f"one INVALID_ARGUMENT Encode series expected, got {bad}")
        self.assertGreaterEqual(bad[0][1], self.N_FAILED)

        inf = self.select(samples, "grpc_server_handling_seconds_bucket", le="+Inf", **common)
        self.assertEqual(len(inf), 1, f"one +Inf Encode bucket expected, got {inf}")
        self.assertGreaterEqual(inf[0][1], self.N_OK + self.N_FAILED)
        count = self.select(samples, "grpc_server_handling_seconds_count", **common)
        self.assertEqual(len(count), 1)
        self.assertEqual(count[0][1], inf[0][1], "_count must equal the +Inf bucket")

        # Buckets are cumulative: non-decreasing in le.
        buckets = sorted((float(lb["le"]), v) for lb, v in
                         self.select(samples, "grpc_server_handling_seconds_bucket", **common))
        self.assertGreater(len(buckets), 1)
        values = [v for _, v in buckets]
        self.assertEqual(values, sorted(values), f"buckets not cumulative: {buckets}")

        started = self.select(samples, "grpc_server_started_total", **common)
        self.assertEqual(len(started), 1)
        self.assertGreaterEqual(started[0][1], self.N_OK + self.N_FAILED)

        # Counters grow with more calls.
        self.encode(input=f32_tensor(x), encoding=sinusoidal(pe_pb2.VASWANI))
        ok2 = self.select(self.scrape(), "grpc_server_handled_total", grpc_code="OK", **common)
        self.assertEqual(ok2[0][1], ok[0][1] + 1)

    def test_unknown_method_is_labelled_unknown(self):
        # Client-chosen paths must not become label values: they share "unknown".
        for path in ("/x/y", "/made.up.Service/Method1", "/made.up.Service/Method2"):
            call = self.channel.unary_unary(path)
            with self.assertRaises(grpc.RpcError) as ctx:
                call(b"", timeout=RPC_TIMEOUT_S)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        samples = self.scrape()
        unknown = self.select(samples, "grpc_server_handled_total", grpc_service="unknown",
                              grpc_method="unknown", grpc_code="UNIMPLEMENTED")
        self.assertEqual(len(unknown), 1, f"one unknown series expected, got {unknown}")
        self.assertGreaterEqual(unknown[0][1], 3)
        services = {lb.get("grpc_service") for n, lb, _ in samples
                    if n.startswith("grpc_server_")}
        self.assertNotIn("x", services)
        self.assertNotIn("made.up.Service", services)

    def test_parse_exposition_rejects_garbage(self):
        # Guards the parser used above.
        self.assertEqual(parse_exposition('a_total{x="1",y="a\\"b"} 3\n# c\n'),
                         [("a_total", {"x": "1", "y": 'a"b'}, 3.0)])
        with self.assertRaises(ValueError):
            parse_exposition("not a sample line at all\n")


# ---------------------------------------------------------------------------------------------
# 8. Graceful stop
# ---------------------------------------------------------------------------------------------

class GracefulStopTest(unittest.TestCase):

    def test_sigint_exits_zero_and_closes(self):
        server = ServerProcess(SERVER_PATH).start()
        channel = grpc.insecure_channel(server.grpc_address)
        try:
            grpc.channel_ready_future(channel).result(timeout=STARTUP_DEADLINE_S)
            health = health_pb2_grpc.HealthStub(channel)
            self.assertEqual(health.Check(health_pb2.HealthCheckRequest(service=""),
                                          timeout=RPC_TIMEOUT_S).status,
                             health_pb2.HealthCheckResponse.SERVING)
            rc = server.stop(signal.SIGINT)
            self.assertEqual(rc, 0, f"exit code after SIGINT; log:\n{server.log()}")
            with self.assertRaises(grpc.RpcError) as ctx:
                health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3.0)
            self.assertIn(ctx.exception.code(),
                          (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))
            # The metrics endpoint is gone too.
            with self.assertRaises(OSError):
                urllib.request.urlopen(server.metrics_url, timeout=3.0).read()
        finally:
            channel.close()
            server.kill()


# ---------------------------------------------------------------------------------------------

if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
