#!/usr/bin/python3
"""End-to-end tests of the positional encodings beyond the sinusoidal ones (RoPE and its
scalings, learned tables, ALiBi, T5 relative bias, CoPE) over real gRPC.

    /usr/bin/python3 tests/e2e/encodings_e2e_test.py --server build/server/attnserve \
        --stubs build/python [-v]

Arguments and fixtures as in e2e_test.py (see attnserve_testing.py): each test class starts its
own server on free ports and requires a clean SIGTERM exit.

Every numeric expectation comes from an independent float64 numpy reference written from the
comments in proto/attnserve/v1/*.proto and the published formulas they cite (Hugging Face
modeling_rope_utils for the RoPE scalings, Press et al. for ALiBi, HF T5Attention for the T5
buckets, the CoPE paper's code for CoPE). The demo models' weights and tables are seeded-random and
not exposed, so they are tested through properties (additivity, translation invariance, masking).

Tolerances (float32 results against float64 references):
  RoPE (Encode)  |got − ref| <= ROPE_ATOL + ROPE_RTOL·m per element, m = the magnitude of the
                 element's rotated pair (·attention factor), or |x| for a pass-through dim.
  bfloat16       |got − ref| <= BF16_RTOL·|ref| + ROPE_RTOL·m (one bf16 rounding of the result).
  SDPA           ‖got − ref‖ / ‖ref‖ < SDPA_REL for outputs and probabilities.
  bias maps      |got − ref| <= BIAS_ATOL (ALiBi slopes, T5 table entries are exact integers).
  invariance     ‖a − b‖ / ‖a‖ <= INVARIANCE_REL (Attend on the same tokens at shifted positions).
"""

import math
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (  # noqa: E402
    grpc, tensor_pb2, pe_pb2, ServerTestCase,
    f32_tensor, bf16_round, bf16_to_f32, bf16_tensor, int_tensor, to_numpy)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
NOT_FOUND = grpc.StatusCode.NOT_FOUND

ROPE_RTOL = 1e-5
ROPE_ATOL = 1e-6
BF16_RTOL = 2.0 ** -8    # bf16 keeps 8 significant bits: rounding <= 2^-9 relative
SDPA_REL = 1e-5
BIAS_ATOL = 1e-5
PROB_SUM_ATOL = 1e-5
INVARIANCE_REL = 1e-4
# A change that must be visible (positions matter): relative difference at least this.
CHANGED_REL = 1e-3

# The ALiBi slopes published for 12 and 6 heads (Press et al.'s interleave rule, max_bias 8).
ALIBI_SLOPES_12 = [.5, .25, .125, .0625, .03125, .015625, .0078125, .00390625,
                   .70710678, .35355339, .17677670, .08838835]
ALIBI_SLOPES_6 = [.25, .0625, .015625, .00390625, .5, .125]
# HF T5Attention._relative_position_bucket, 32 buckets, max_distance 128: {j − i: bucket}.
T5_BUCKETS_BIDIRECTIONAL = {-1: 1, -7: 7, -8: 8, -16: 10, -20: 10, -64: 14, -127: 15, -200: 15,
                            0: 0, 1: 17, 8: 24, 127: 31}
T5_BUCKETS_CAUSAL = {-20: 17, -64: 26, -200: 31, 0: 0, 1: 0, 8: 0, 127: 0}


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

_SCALING_MESSAGES = {"linear": "LinearRopeScaling", "dynamic_ntk": "DynamicNtkRopeScaling",
                     "yarn": "YarnRopeScaling", "llama3": "Llama3RopeScaling",
                     "longrope": "LongRopeScaling"}


def rope(theta=None, rotary_dim=None, layout=None, scaling=None, **params):
    """A PositionalEncoding with `rope` set; `scaling` names the oneof field, params its fields."""
    kw = {}
    if theta is not None:
        kw["theta"] = theta
    if rotary_dim is not None:
        kw["rotary_dim"] = rotary_dim
    if layout is not None:
        kw["layout"] = layout
    if scaling is not None:
        kw[scaling] = getattr(pe_pb2, _SCALING_MESSAGES[scaling])(**params)
    return pe_pb2.PositionalEncoding(rope=pe_pb2.RotaryEncoding(**kw))


def alibi(max_bias=None):
    return pe_pb2.PositionalEncoding(
        alibi=pe_pb2.AlibiEncoding(**({} if max_bias is None else {"max_bias": max_bias})))


def t5(**kw):
    return pe_pb2.PositionalEncoding(t5=pe_pb2.T5RelativeBias(**kw))


def cope(npos_max):
    return pe_pb2.PositionalEncoding(cope=pe_pb2.CopeEncoding(npos_max=npos_max))


def sinusoidal():
    return pe_pb2.PositionalEncoding(sinusoidal=pe_pb2.SinusoidalEncoding())


# ---------------------------------------------------------------------------------------------
# float64 references
# ---------------------------------------------------------------------------------------------

def ref_rope_frequencies(r, theta=10000.0, scaling=None, params=None, seq_len=1):
    """(inv_freq [r/2], attention_factor) as Hugging Face modeling_rope_utils computes them for a
    sequence whose largest position is seq_len − 1 (dynamic NTK and longrope depend on it)."""
    p = dict(params or {})
    k = np.arange(r // 2, dtype=np.float64)
    inv = 1.0 / theta ** (2.0 * k / r)  # _compute_default_rope_parameters
    attention_factor = 1.0
    if scaling is None:
        pass
    elif scaling == "linear":
        inv = inv / p["factor"]
    elif scaling == "dynamic_ntk":
        factor, original = p["factor"], p["original_max_positions"]
        s = max(seq_len, original)
        base = theta * ((factor * s / original) - (factor - 1)) ** (r / (r - 2))
        inv = 1.0 / base ** (2.0 * k / r)
    elif scaling == "yarn":
        factor, original = p["factor"], p["original_max_positions"]
        beta_fast = p.get("beta_fast") or 32.0
        beta_slow = p.get("beta_slow") or 1.0

        def correction_dim(rotations):
            return r * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if p.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, r - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((k - low) / (high - low), 0.0, 1.0)
        extrapolation_factor = 1.0 - ramp
        inv = (inv / factor) * (1.0 - extrapolation_factor) + inv * extrapolation_factor

        def get_mscale(scale, m=1.0):
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if "attention_factor" in p:
            attention_factor = p["attention_factor"]
        elif p.get("mscale") and p.get("mscale_all_dim"):
            attention_factor = get_mscale(factor, p["mscale"]) / get_mscale(factor,
                                                                            p["mscale_all_dim"])
        else:
            attention_factor = get_mscale(factor)
    elif scaling == "llama3":
        factor = p["factor"]
        low_ff = p.get("low_freq_factor") or 1.0
        high_ff = p.get("high_freq_factor") or 4.0
        original = p.get("original_max_positions") or 8192
        low_freq_wavelen = original / low_ff
        high_freq_wavelen = original / high_ff
        wavelen = 2 * math.pi / inv
        inv_llama = np.where(wavelen > low_freq_wavelen, inv / factor, inv)
        smooth = (original / wavelen - low_ff) / (high_ff - low_ff)
        smoothed = (1 - smooth) * inv_llama / factor + smooth * inv_llama
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        inv = np.where(medium, smoothed, inv_llama)
    elif scaling == "longrope":
        original, extended = p["original_max_positions"], p["max_positions"]
        ext = np.asarray(p["long_factor"] if seq_len > original else p["short_factor"],
                         dtype=np.float64)
        inv = 1.0 / (ext * theta ** (2.0 * k / r))
        s = extended / original
        if "attention_factor" in p:
            attention_factor = p["attention_factor"]
        else:
            attention_factor = 1.0 if s <= 1 else math.sqrt(1 + math.log(s) / math.log(original))
    else:
        raise ValueError(scaling)
    return inv, attention_factor


def ref_rope_apply(x, positions, r, inv, attention_factor=1.0, interleaved=False):
    """Rotates the first r dims of the last axis of x (float64) at `positions` (broadcast to
    x.shape[:-1]). Returns (rotated, magnitude) where magnitude is the tolerance scale per element.
    """
    x = np.asarray(x, dtype=np.float64)
    pos = np.broadcast_to(np.asarray(positions, dtype=np.float64), x.shape[:-1])
    angle = pos[..., None] * inv  # [..., r/2]
    c = attention_factor * np.cos(angle)
    s = attention_factor * np.sin(angle)
    if interleaved:
        ia = np.arange(0, r, 2)
        ib = ia + 1
    else:
        ia = np.arange(r // 2)
        ib = ia + r // 2
    a, b = x[..., ia], x[..., ib]
    out = x.copy()
    out[..., ia] = a * c - b * s
    out[..., ib] = b * c + a * s
    mag = np.abs(x).copy()
    pair = abs(attention_factor) * np.hypot(a, b)
    mag[..., ia] = pair
    mag[..., ib] = pair
    return out, mag


def ref_alibi_slopes(n, max_bias=8.0):
    """m_h = 2^(−max_bias·(h+1)/n) for n a power of two; otherwise those of the largest power of
    two c < n, then the odd terms 2^(−max_bias·(2i+1)/(2c)) of the sequence for 2c."""
    c = 1 << (n.bit_length() - 1)
    slopes = [2.0 ** (-max_bias * (h + 1) / c) for h in range(c)]
    slopes += [2.0 ** (-max_bias * (2 * i + 1) / (2 * c)) for i in range(n - c)]
    return np.array(slopes)


def ref_t5_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128):
    """HF T5Attention._relative_position_bucket of rel = key − query, in torch's float32 math:
    every op rounds to float32 (log correctly rounded), .to(torch.long) truncates."""
    rel = np.asarray(rel, dtype=np.int64)
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).astype(np.int64) * num_buckets
        n = np.abs(rel)
    else:
        n = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    safe_n = np.maximum(n, 1).astype(np.float32)
    log = np.log((safe_n / np.float32(max_exact)).astype(np.float64)).astype(np.float32)
    large = (log / np.float32(math.log(max_distance / max_exact))
             * np.float32(num_buckets - max_exact))
    large = max_exact + np.minimum(large, np.float32(num_buckets)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(is_small, n, large)


def sdpa_positions(sq, sk, offset):
    """Key j at offset + j, query i at offset + Sk − Sq + i (bottom-right aligned)."""
    return offset + sk - sq + np.arange(sq), offset + np.arange(sk)


def ref_sdpa(q, k, v, kind=None, causal=False, key_lengths=None, scale=None, offset=0,
             rope_args=None, max_bias=8.0, t5_table=None, t5_args=None, cope_emb=None):
    """softmax(q'k'ᵀ·scale + bias + mask)·v in float64; returns (out, probs).

    kind: None, "rope" (rope_args: dict of ref_rope_frequencies arguments plus "interleaved"),
    "alibi", "t5" (t5_table [buckets, H]; t5_args for ref_t5_bucket), "cope" (cope_emb
    [npos_max, hd]; the CoPE paper's code: gates σ of the scaled, masked logits, positions their
    reverse cumulative sum clamped to npos_max − 1, q·e interpolated between floor and ceil)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    B, H, Sq, hd = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    group = H // Hkv
    qpos, kpos = sdpa_positions(Sq, Sk, offset)
    if kind == "rope":
        args = dict(rope_args or {})
        interleaved = args.pop("interleaved", False)
        r = args.pop("r", hd)
        seq_len = int(max(qpos.max(), kpos.max())) + 1
        inv, f = ref_rope_frequencies(r, seq_len=seq_len, **args)
        q = ref_rope_apply(q, qpos, r, inv, f, interleaved)[0]  # x [B, H, S, hd]
        k = ref_rope_apply(k, kpos, r, inv, f, interleaved)[0]
    kx = np.repeat(k, group, axis=1)  # query head h uses kv head h // group
    vx = np.repeat(v, group, axis=1)
    if scale is None:
        scale = 1.0 if kind == "t5" else 1.0 / math.sqrt(hd)
    logits = np.einsum("bhid,bhjd->bhij", q, kx) * scale
    if kind == "alibi":
        slopes = ref_alibi_slopes(H, max_bias)
        logits = logits - slopes[None, :, None, None] * np.abs(qpos[:, None] - kpos[None, :])
    elif kind == "t5":
        buckets = ref_t5_bucket(kpos[None, :] - qpos[:, None], **(t5_args or {}))
        logits = logits + np.asarray(t5_table, np.float64)[buckets].transpose(2, 0, 1)[None]
    visible = np.ones((B, Sq, Sk), dtype=bool)
    if causal:
        visible &= (np.arange(Sk)[None, :] <= np.arange(Sq)[:, None] + Sk - Sq)[None]
    if key_lengths is not None:
        visible &= (np.arange(Sk)[None, None, :] < np.asarray(key_lengths)[:, None, None])
    vis = visible[:, None]  # [B, 1, Sq, Sk]
    logits = np.where(vis, logits, -np.inf)
    if kind == "cope":
        emb = np.asarray(cope_emb, np.float64)
        npos = emb.shape[0]
        gates = np.where(vis, 0.5 * (1.0 + np.tanh(np.where(vis, logits, 0.0) / 2)), 0.0)
        pos = np.cumsum(gates[..., ::-1], axis=-1)[..., ::-1]
        pos = np.minimum(pos, npos - 1)
        logits_int = np.einsum("bhid,nd->bhin", q, emb)  # [B, H, Sq, npos]
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        w = pos - lo
        added = (np.take_along_axis(logits_int, hi, axis=-1) * w
                 + np.take_along_axis(logits_int, lo, axis=-1) * (1 - w))
        logits = np.where(vis, logits + added, -np.inf)
    row_max = np.max(np.where(vis, logits, -1e300), axis=-1, keepdims=True)
    e = np.where(vis, np.exp(logits - row_max), 0.0)
    sums = e.sum(axis=-1, keepdims=True)
    probs = np.divide(e, sums, out=np.zeros_like(e), where=sums > 0)
    return np.einsum("bhij,bhjd->bhid", probs, vx), probs


def rel_err(got, want):
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))


# ---------------------------------------------------------------------------------------------
# Reference self-checks (guard the references against the published numbers)
# ---------------------------------------------------------------------------------------------

class ReferenceSelfTest(unittest.TestCase):

    def test_alibi_reference_matches_published_slopes(self):
        np.testing.assert_allclose(ref_alibi_slopes(12), ALIBI_SLOPES_12, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ref_alibi_slopes(6), ALIBI_SLOPES_6, rtol=0, atol=1e-8)
        np.testing.assert_allclose(ref_alibi_slopes(8), 0.5 ** np.arange(1, 9), rtol=0, atol=0)

    def test_t5_reference_matches_published_buckets(self):
        for rel, bucket in T5_BUCKETS_BIDIRECTIONAL.items():
            self.assertEqual(int(ref_t5_bucket(rel)), bucket, f"bidirectional rel={rel}")
        for rel, bucket in T5_BUCKETS_CAUSAL.items():
            self.assertEqual(int(ref_t5_bucket(rel, bidirectional=False)), bucket,
                             f"causal rel={rel}")

    def test_rope_reference_pairs(self):
        # Half-split pairs k with k + r/2; interleaved pairs 2k with 2k + 1 (r = 4, inv = [1, 0]).
        x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
        inv = np.array([math.pi / 2, 0.0])
        half, _ = ref_rope_apply(x, 1, 4, inv)
        np.testing.assert_allclose(half, [-3.0, 2.0, 1.0, 4.0, 5.0], atol=1e-12)
        inter, _ = ref_rope_apply(x, 1, 4, inv, interleaved=True)
        np.testing.assert_allclose(inter, [-2.0, 1.0, 3.0, 4.0, 5.0], atol=1e-12)

    def test_yarn_reference_ramp(self):
        # r = 64, theta 1e4, original 4096: correction dims 10.47 → 10 and 22.5 → 23.
        inv0, _ = ref_rope_frequencies(64)
        inv, f = ref_rope_frequencies(64, scaling="yarn",
                                      params=dict(factor=4.0, original_max_positions=4096))
        np.testing.assert_allclose(inv[:11], inv0[:11], rtol=1e-15)
        np.testing.assert_allclose(inv[23:], inv0[23:] / 4, rtol=1e-15)
        self.assertAlmostEqual(f, 0.1 * math.log(4) + 1, places=15)


# ---------------------------------------------------------------------------------------------
# A. Encode with RoPE
# ---------------------------------------------------------------------------------------------

class EncodeRopeTest(ServerTestCase):

    def setUp(self):
        self.rng = np.random.default_rng(2024)

    def x(self, *shape):
        return self.rng.standard_normal(shape).astype(np.float32)

    def encode_np(self, x, encoding, dtype=tensor_pb2.FLOAT32, **request):
        t = f32_tensor(x) if dtype == tensor_pb2.FLOAT32 else bf16_tensor(x)
        out = self.encode(input=t, encoding=encoding, **request).output
        self.assertEqual(out.dtype, dtype)
        self.assertEqual(list(out.shape), list(x.shape))
        return to_numpy(out).astype(np.float64)

    def reference(self, x, positions, hd, r=None, theta=10000.0, interleaved=False,
                  scaling=None, params=None):
        """x [B, S, d] in heads of width hd, positions [B, S] → (reference, magnitude), both
        [B, S, d]."""
        B, S, d = x.shape
        r = r or hd
        positions = np.broadcast_to(np.asarray(positions), (B, S))
        inv, f = ref_rope_frequencies(r, theta, scaling, params,
                                      seq_len=int(positions.max()) + 1)
        xh = x.astype(np.float64).reshape(B, S, d // hd, hd)
        out, mag = ref_rope_apply(xh, positions[:, :, None], r, inv, f, interleaved)
        return out.reshape(B, S, d), mag.reshape(B, S, d)

    def check(self, x, encoding, positions, hd, ref_kwargs=None, **request):
        """Encodes x with `request` and compares with reference(x, positions, hd, ...)."""
        got = self.encode_np(x, encoding, **request)
        want, mag = self.reference(x, positions, hd, **(ref_kwargs or {}))
        err = np.abs(got - want)
        tol = ROPE_ATOL + ROPE_RTOL * mag
        worst = np.unravel_index(np.argmax(err - tol), err.shape)
        self.assertTrue(np.all(err <= tol),
                        f"max error {err.max():.3g} at {worst}: got {got[worst]!r}, want "
                        f"{want[worst]!r}, tol {tol[worst]:.3g}")
        return got

    # --- layouts, partial rotary_dim, theta, heads -------------------------------------------

    def test_half_split_and_interleaved_vs_reference(self):
        cases = [  # (d, num_heads, head_dim, r, theta, offset)
            (64, 4, 0, None, None, 0),
            (48, 0, 16, None, 500.0, 3),
            (96, 3, 32, 16, None, 1000),   # both given (consistent), partial rotary_dim
            (32, 0, 32, 8, 1e6, 12345),
        ]
        for layout, interleaved in [(pe_pb2.HALF_SPLIT, False), (pe_pb2.INTERLEAVED, True)]:
            for d, heads, hd, r, theta, offset in cases:
                with self.subTest(layout=pe_pb2.RotaryLayout.Name(layout), d=d, heads=heads,
                                  hd=hd, r=r, theta=theta, offset=offset):
                    head_dim = hd or d // heads
                    x = self.x(2, 5, d)
                    ref_kwargs = dict(r=r, interleaved=interleaved)
                    if theta is not None:
                        ref_kwargs["theta"] = theta
                    self.check(x, rope(theta=theta, rotary_dim=r, layout=layout),
                               offset + np.arange(5)[None], head_dim, ref_kwargs,
                               num_heads=heads, head_dim=hd, position_offset=offset)

    def test_layout_pairs_differ_and_unspecified_is_half_split(self):
        x = self.x(1, 4, 32)
        half = self.encode_np(x, rope(layout=pe_pb2.HALF_SPLIT), head_dim=16, position_offset=1)
        unspecified = self.encode_np(x, rope(), head_dim=16, position_offset=1)
        inter = self.encode_np(x, rope(layout=pe_pb2.INTERLEAVED), head_dim=16, position_offset=1)
        np.testing.assert_array_equal(unspecified, half)
        self.assertGreater(np.abs(half - inter).max(), 0.1,
                           "the layouts must pair dims differently")

    def test_theta_default_is_10000(self):
        x = self.x(2, 3, 64)
        np.testing.assert_array_equal(
            self.encode_np(x, rope(), num_heads=2, position_offset=50),
            self.encode_np(x, rope(theta=10000.0), num_heads=2, position_offset=50))
        self.assertGreater(np.abs(self.encode_np(x, rope(theta=100.0), num_heads=2,
                                                 position_offset=50)
                                  - self.encode_np(x, rope(), num_heads=2,
                                                   position_offset=50)).max(), 1e-2)

    def test_partial_rotary_dims_pass_through_exactly(self):
        x = self.x(2, 6, 4 * 24)
        for layout in (pe_pb2.HALF_SPLIT, pe_pb2.INTERLEAVED):
            with self.subTest(layout=pe_pb2.RotaryLayout.Name(layout)):
                got = self.encode_np(x, rope(rotary_dim=10, layout=layout), num_heads=4,
                                     position_offset=7).reshape(2, 6, 4, 24)
                xh = x.reshape(2, 6, 4, 24)
                np.testing.assert_array_equal(got[..., 10:], xh[..., 10:])
                self.assertGreater(np.abs(got[..., :10] - xh[..., :10]).max(), 1e-2)

    def test_position_zero_is_identity(self):
        x = self.x(1, 1, 64)
        np.testing.assert_array_equal(self.encode_np(x, rope(), num_heads=2), x)

    def test_position_ids(self):
        x = self.x(2, 4, 32)
        ids1 = np.array([9, 0, 400, 9], np.int64)
        self.check(x, rope(), ids1[None], 16, position_ids=int_tensor(ids1, tensor_pb2.INT64),
                   position_offset=77, head_dim=16)
        ids2 = np.array([[0, 1, 2, 3], [50, 7, 7, 2000]], np.int32)
        self.check(x, rope(layout=pe_pb2.INTERLEAVED), ids2, 8, dict(interleaved=True),
                   position_ids=int_tensor(ids2, tensor_pb2.INT32), num_heads=4)

    def test_bfloat16_in_bfloat16_out(self):
        x = bf16_to_f32(bf16_round(self.x(2, 5, 64)))  # the values the server receives
        for layout, interleaved in [(pe_pb2.HALF_SPLIT, False), (pe_pb2.INTERLEAVED, True)]:
            with self.subTest(layout=pe_pb2.RotaryLayout.Name(layout)):
                got = self.encode_np(x, rope(rotary_dim=12, layout=layout),
                                     dtype=tensor_pb2.BFLOAT16, num_heads=4, position_offset=30)
                want, mag = self.reference(x, 30 + np.arange(5)[None], 16, r=12,
                                           interleaved=interleaved)
                err = np.abs(got - want)
                tol = BF16_RTOL * np.abs(want) + ROPE_RTOL * mag + ROPE_ATOL
                self.assertTrue(np.all(err <= tol), f"max bf16 error {err.max():.3g}")
                # Pass-through dims survive the bf16 round trip bit for bit.
                np.testing.assert_array_equal(got.reshape(2, 5, 4, 16)[..., 12:],
                                              x.reshape(2, 5, 4, 16)[..., 12:])

    # --- scalings ------------------------------------------------------------------------------

    def check_scaling(self, scaling, params, positions, d=64, heads=2, r=None, interleaved=False,
                      theta=10000.0, positions_2d=False):
        x = self.x(2, len(positions) if not positions_2d else positions.shape[1], d)
        ids = np.asarray(positions, np.int64)
        head_dim = d // heads
        return self.check(
            x, rope(theta=theta, rotary_dim=r, scaling=scaling,
                    layout=pe_pb2.INTERLEAVED if interleaved else None, **params),
            ids if positions_2d else ids[None], head_dim,
            dict(r=r, theta=theta, interleaved=interleaved, scaling=scaling, params=params),
            num_heads=heads, position_ids=int_tensor(ids, tensor_pb2.INT64))

    def unscaled(self, x, positions, heads):
        return self.encode_np(x, rope(), num_heads=heads,
                              position_ids=int_tensor(np.asarray(positions), tensor_pb2.INT64))

    def test_linear(self):
        for factor in (2.0, 0.5, 8.0):
            with self.subTest(factor=factor):
                self.check_scaling("linear", dict(factor=factor), np.array([0, 1, 17, 3000]))
        # Linear with factor f at position f·p equals no scaling at position p.
        x = self.x(1, 3, 64)
        scaled = self.encode_np(x, rope(scaling="linear", factor=4.0), num_heads=2,
                                position_ids=int_tensor([4, 40, 400], tensor_pb2.INT64))
        np.testing.assert_allclose(scaled, self.unscaled(x, [1, 10, 100], 2), rtol=0, atol=1e-5)

    def test_dynamic_ntk(self):
        params = dict(factor=2.0, original_max_positions=16)
        # Longer than original_max_positions: theta grows with max position + 1 (= 40 here).
        self.check_scaling("dynamic_ntk", params, np.arange(40), r=32)
        self.check_scaling("dynamic_ntk", dict(factor=4.0, original_max_positions=100),
                           np.array([[3, 250, 5], [0, 1, 2]]), positions_2d=True)
        # Within original_max_positions (max position 15 → seq_len 16): plain RoPE.
        x = self.x(2, 16, 64)
        ids = np.arange(16)
        got = self.encode_np(x, rope(scaling="dynamic_ntk", **params), num_heads=2,
                             position_ids=int_tensor(ids, tensor_pb2.INT64))
        np.testing.assert_allclose(got, self.unscaled(x, ids, 2), rtol=0, atol=1e-5)
        # ... and the same token at the same position changes once the sequence grows past it.
        x40 = self.x(1, 40, 64)
        plain = self.unscaled(x40, np.arange(40), 2)
        self.assertGreater(np.abs(self.encode_np(x40, rope(scaling="dynamic_ntk", **params),
                                                 num_heads=2) - plain)[:, 5:].max(), 1e-3)

    def test_yarn(self):
        positions = np.array([0, 1, 100, 4095, 9000, 16000])
        cases = [
            dict(factor=4.0, original_max_positions=4096),
            dict(factor=8.0, original_max_positions=2048, beta_fast=16.0, beta_slow=2.0),
            dict(factor=4.0, original_max_positions=4096, attention_factor=0.9),
            dict(factor=16.0, original_max_positions=4096, mscale=1.0, mscale_all_dim=0.5),
            dict(factor=0.5, original_max_positions=64),   # factor <= 1: attention factor 1
        ]
        for params in cases:
            for interleaved in (False, True):
                with self.subTest(interleaved=interleaved, **params):
                    self.check_scaling("yarn", params, positions, d=128, heads=2,
                                       interleaved=interleaved)
        with self.subTest("partial rotary_dim"):
            self.check_scaling("yarn", cases[0], positions, d=128, heads=2, r=40)

    def test_yarn_attention_factor_scales_cos_and_sin(self):
        # At position 0 the rotation is the identity: the rotated dims are x·attention_factor,
        # the pass-through dims are x.
        x = self.x(1, 1, 64)
        got = self.encode_np(x, rope(rotary_dim=16, scaling="yarn", factor=4.0,
                                     original_max_positions=4096), num_heads=2)
        f = 0.1 * math.log(4.0) + 1.0
        g, xh = got.reshape(2, 32), x.astype(np.float64).reshape(2, 32)
        np.testing.assert_allclose(g[:, :16], f * xh[:, :16], rtol=ROPE_RTOL, atol=ROPE_ATOL)
        np.testing.assert_array_equal(g[:, 16:], xh[:, 16:])

    def test_yarn_truncate_false(self):
        if "truncate" not in pe_pb2.YarnRopeScaling.DESCRIPTOR.fields_by_name:
            self.skipTest("YarnRopeScaling.truncate is not in these stubs")
        params = dict(factor=4.0, original_max_positions=4096, truncate=False)
        self.check_scaling("yarn", params, np.array([0, 3, 900, 20000]), d=128, heads=2)
        # The untruncated ramp really gives other frequencies (so the check above can tell).
        inv_t, _ = ref_rope_frequencies(64, scaling="yarn", params=dict(params, truncate=True))
        inv_u, _ = ref_rope_frequencies(64, scaling="yarn", params=params)
        self.assertGreater(np.max(np.abs(inv_u / inv_t - 1)), 1e-2)

    def test_llama3(self):
        positions = np.array([0, 5, 1000, 8191, 30000])
        cases = [
            dict(factor=8.0),   # defaults: low 1, high 4, original 8192 → all three bands (r 64)
            dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                 original_max_positions=8192),
            dict(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
                 original_max_positions=256),
        ]
        for params in cases:
            with self.subTest(**params):
                self.check_scaling("llama3", params, positions, d=128, heads=2)
        # The bands are really exercised: low frequencies divided by factor, high ones unchanged.
        inv0, _ = ref_rope_frequencies(64)
        inv, _ = ref_rope_frequencies(64, scaling="llama3", params=cases[0])
        self.assertEqual(inv[0], inv0[0])
        self.assertAlmostEqual(inv[-1], inv0[-1] / 8.0, delta=1e-18)
        self.assertTrue(np.any((inv < inv0) & (inv > inv0 / 8.0)), "no medium band")

    def test_longrope(self):
        r = 32
        short = list(1.0 + 0.05 * np.arange(r // 2))
        long = list(1.0 + 0.5 * np.arange(r // 2))
        base = dict(short_factor=short, long_factor=long, original_max_positions=64,
                    max_positions=1024)
        with self.subTest("short: max position 63 → seq_len 64 <= 64"):
            self.check_scaling("longrope", base, np.array([0, 10, 63]), d=64, heads=2)
        with self.subTest("long: max position 64 → seq_len 65 > 64"):
            self.check_scaling("longrope", base, np.array([0, 10, 64]), d=64, heads=2)
        with self.subTest("attention_factor override"):
            self.check_scaling("longrope", dict(base, attention_factor=1.25),
                               np.array([1, 2, 300]), d=64, heads=2)
        with self.subTest("max_positions == original: factor 1"):
            self.check_scaling("longrope", dict(base, max_positions=64),
                               np.array([5, 6, 7]), d=64, heads=2)
        with self.subTest("interleaved"):
            self.check_scaling("longrope", base, np.array([3, 200]), d=64, heads=2,
                               interleaved=True)

    # --- properties ----------------------------------------------------------------------------

    def test_norm_preserved_per_head(self):
        x = self.x(3, 7, 96)
        for encoding, heads in [(rope(), 3), (rope(layout=pe_pb2.INTERLEAVED, theta=77.0), 6),
                                (rope(rotary_dim=8), 4)]:
            got = self.encode_np(x, encoding, num_heads=heads, position_offset=123)
            n_got = np.linalg.norm(got.reshape(3, 7, heads, -1), axis=-1)
            n_x = np.linalg.norm(x.astype(np.float64).reshape(3, 7, heads, -1), axis=-1)
            np.testing.assert_allclose(n_got, n_x, rtol=1e-5)

    def test_relative_dot_products(self):
        # Rotated q at p and k at p + d: q'·k' depends only on d.
        d_model, heads = 64, 2
        q, k = self.x(d_model), self.x(d_model)
        for distance in (0, 3, 50):
            dots = []
            for p in (0, 7, 100, 2500):
                ids = np.array([[p], [p + distance]], np.int64)
                out = self.encode_np(np.stack([q, k])[:, None], rope(), num_heads=heads,
                                     position_ids=int_tensor(ids, tensor_pb2.INT64))
                qh, kh = out[0, 0].reshape(heads, -1), out[1, 0].reshape(heads, -1)
                dots.append((qh * kh).sum(-1))
            dots = np.array(dots)
            scale = np.linalg.norm(q) * np.linalg.norm(k)
            with self.subTest(distance=distance):
                self.assertLessEqual(np.abs(dots - dots[0]).max(), 1e-5 * scale,
                                     f"q'·k' per head for p = 0, 7, 100, 2500: {dots}")
        # ... and it does depend on d (the rotation is not the identity).
        self.assertGreater(abs(float(dots[0, 0]) - float(np.dot(q[:32], k[:32]))), 1e-3)

    # --- errors --------------------------------------------------------------------------------

    def test_errors(self):
        x16 = f32_tensor(np.zeros((1, 2, 16), np.float32))
        x24 = f32_tensor(np.zeros((1, 2, 24), np.float32))
        cases = [
            ("odd rotary_dim", dict(input=x16, encoding=rope(rotary_dim=7), head_dim=16),
             ["rotary_dim", "7"]),
            ("rotary_dim > head_dim", dict(input=x16, encoding=rope(rotary_dim=10), head_dim=8),
             ["rotary_dim", "10"]),
            ("num_heads does not divide d_model", dict(input=x24, encoding=rope(), num_heads=5),
             ["num_heads", "5"]),
            ("head_dim does not divide d_model", dict(input=x24, encoding=rope(), head_dim=7),
             ["head_dim", "7"]),
            ("inconsistent num_heads and head_dim",
             dict(input=x24, encoding=rope(), num_heads=2, head_dim=8), ["num_heads"]),
            ("linear factor 0", dict(input=x16, encoding=rope(scaling="linear", factor=0.0),
                                     head_dim=16), ["factor"]),
            ("NaN theta", dict(input=x16, encoding=rope(theta=float("nan")), head_dim=16),
             ["theta"]),
            ("theta <= 1", dict(input=x16, encoding=rope(theta=0.5), head_dim=16), ["theta"]),
            ("neither num_heads nor head_dim", dict(input=x16, encoding=rope()),
             ["num_heads", "head_dim"]),
            ("unknown layout", dict(input=x16, encoding=rope(layout=7), head_dim=16),
             ["layout"]),
            ("longrope short_factor length",
             dict(input=x16, encoding=rope(scaling="longrope", short_factor=[1.0] * 7,
                                           long_factor=[1.0] * 8, original_max_positions=4,
                                           max_positions=8), head_dim=16), ["short_factor"]),
            ("longrope long_factor length",
             dict(input=x16, encoding=rope(scaling="longrope", short_factor=[1.0] * 8,
                                           long_factor=[1.0] * 9, original_max_positions=4,
                                           max_positions=8), head_dim=16), ["long_factor"]),
            ("dynamic_ntk without original_max_positions",
             dict(input=x16, encoding=rope(scaling="dynamic_ntk", factor=2.0), head_dim=16),
             ["original_max_positions"]),
        ]
        for name, request, needles in cases:
            with self.subTest(name):
                self.assertRpcError(INVALID, self.encode, contains=needles, **request)


# ---------------------------------------------------------------------------------------------
# B. Encode with a model's encoding; bias kinds rejected
# ---------------------------------------------------------------------------------------------

class EncodeModelTest(ServerTestCase):
    LEARNED_ROWS = 8192  # demo-learned: 8192-row table (its ListModels description and config)

    def setUp(self):
        self.rng = np.random.default_rng(7)

    def encode_np(self, x, **request):
        out = self.encode(input=f32_tensor(x), **request).output
        self.assertEqual(list(out.shape), list(x.shape))
        return to_numpy(out)

    def test_learned_is_additive_exactly(self):
        x = self.rng.standard_normal((2, 6, 256)).astype(np.float32)
        zero = self.encode_np(np.zeros_like(x), model="demo-learned", position_offset=3)
        self.assertGreater(np.abs(zero).max(), 0.0, "the learned table must not be all zeros")
        got = self.encode_np(x, model="demo-learned", position_offset=3)
        # out = x + E[p] in float32: exactly the float32 rounding of the exact sum.
        want = (x.astype(np.float64) + zero.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(got, want)
        # input_scale multiplies x before the table is added (2 is exact in float32).
        got2 = self.encode_np(x, model="demo-learned", position_offset=3, input_scale=2.0)
        want2 = (2.0 * x.astype(np.float64) + zero.astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(got2, want2)

    def test_learned_rows_depend_only_on_position(self):
        ids = np.array([[4, 9, 4, 0], [9, 0, 300, 4]], np.int32)
        zero = self.encode_np(np.zeros((2, 4, 256), np.float32), model="demo-learned",
                              position_ids=int_tensor(ids, tensor_pb2.INT32))
        rows = {}
        for b in range(2):
            for t in range(4):
                p = int(ids[b, t])
                if p in rows:
                    np.testing.assert_array_equal(zero[b, t], rows[p], f"row of position {p}")
                rows[p] = zero[b, t]
        self.assertGreater(np.abs(rows[4] - rows[9]).max(), 0.0, "positions 4 and 9 share a row")
        # position_offset = p gives the same rows as position_ids.
        by_offset = self.encode_np(np.zeros((1, 2, 256), np.float32), model="demo-learned",
                                   position_offset=8)
        np.testing.assert_array_equal(by_offset[0, 1], rows[9])

    def test_learned_table_limit(self):
        last = self.LEARNED_ROWS - 1
        ok = self.encode_np(np.zeros((1, 3, 256), np.float32), model="demo-learned",
                            position_offset=last - 2)
        self.assertTrue(np.all(np.isfinite(ok)))
        self.assertRpcError(OUT_OF_RANGE, self.encode,
                            input=f32_tensor(np.zeros((1, 3, 256), np.float32)),
                            model="demo-learned", position_offset=last - 1,
                            contains=[str(self.LEARNED_ROWS)])
        self.assertRpcError(OUT_OF_RANGE, self.encode,
                            input=f32_tensor(np.zeros((1, 1, 256), np.float32)),
                            model="demo-learned",
                            position_ids=int_tensor([self.LEARNED_ROWS], tensor_pb2.INT64),
                            contains=[str(self.LEARNED_ROWS)])

    def test_learned_without_model(self):
        self.assertRpcError(INVALID, self.encode,
                            input=f32_tensor(np.zeros((1, 2, 8), np.float32)),
                            encoding=pe_pb2.PositionalEncoding(learned=pe_pb2.LearnedEncoding()),
                            contains=["model"])

    def test_model_rope_equals_inline_rope(self):
        x = self.rng.standard_normal((2, 5, 256)).astype(np.float32)
        by_model = self.encode_np(x, model="demo-rope", position_offset=11)
        inline = self.encode_np(x, encoding=rope(theta=10000.0), num_heads=8, head_dim=32,
                                position_offset=11)
        np.testing.assert_allclose(by_model, inline, rtol=0, atol=1e-6)
        inv, _ = ref_rope_frequencies(32)
        want, mag = ref_rope_apply(x.reshape(2, 5, 8, 32), (11 + np.arange(5))[None, :, None],
                                   32, inv)
        err = np.abs(by_model.reshape(2, 5, 8, 32) - want)
        self.assertTrue(np.all(err <= ROPE_ATOL + ROPE_RTOL * mag), f"max error {err.max():.3g}")

    def test_bias_encodings_rejected(self):
        x8 = f32_tensor(np.zeros((1, 2, 8), np.float32))
        cases = [
            ("inline alibi", dict(input=x8, encoding=alibi()), "alibi"),
            ("inline t5", dict(input=x8, encoding=t5()), "t5"),
            ("model demo-alibi",
             dict(input=f32_tensor(np.zeros((1, 2, 384), np.float32)), model="demo-alibi"),
             "alibi"),
            ("model demo-t5",
             dict(input=f32_tensor(np.zeros((1, 2, 256), np.float32)), model="demo-t5"), "t5"),
        ]
        for name, request, kind in cases:
            with self.subTest(name):
                self.assertRpcError(INVALID, self.encode, contains=["PositionBias", kind],
                                    **request)

    def test_cope_rejected_pointing_at_position_bias(self):
        # EncodeRequest.encoding: "bias kinds (ALiBi, T5, CoPE) are rejected with
        # INVALID_ARGUMENT pointing at PositionBias".
        cases = [
            ("inline cope", dict(input=f32_tensor(np.zeros((1, 2, 8), np.float32)),
                                 encoding=cope(4))),
            ("model demo-cope",
             dict(input=f32_tensor(np.zeros((1, 2, 256), np.float32)), model="demo-cope")),
        ]
        for name, request in cases:
            with self.subTest(name):
                self.assertRpcError(INVALID, self.encode, contains=["cope", "PositionBias"],
                                    **request)

    def test_unknown_model(self):
        self.assertRpcError(NOT_FOUND, self.encode,
                            input=f32_tensor(np.zeros((1, 2, 8), np.float32)),
                            model="no-such-model", contains=["no-such-model"])


# ---------------------------------------------------------------------------------------------
# C. PositionBias
# ---------------------------------------------------------------------------------------------

class PositionBiasTest(ServerTestCase):

    def bias(self, **request):
        t = self.position_bias(**request).bias
        self.assertEqual(t.dtype, tensor_pb2.FLOAT32)
        return to_numpy(t).astype(np.float64)

    def slopes_from(self, bias):
        """m_h recovered from bias[h, i, i−1] = −m_h (i = 1)."""
        return -bias[:, 1, 0]

    def test_alibi_12_heads_published_slopes(self):
        b = self.bias(encoding=alibi(), num_heads=12, q_len=6)
        self.assertEqual(b.shape, (12, 6, 6))
        np.testing.assert_allclose(self.slopes_from(b), ALIBI_SLOPES_12, rtol=0, atol=BIAS_ATOL)
        # Bidirectional: −m|i − j|, symmetric, zero on the diagonal.
        dist = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
        np.testing.assert_allclose(b, -np.array(ALIBI_SLOPES_12)[:, None, None] * dist,
                                   rtol=1e-6, atol=BIAS_ATOL)
        np.testing.assert_array_equal(b, b.transpose(0, 2, 1))

    def test_alibi_6_heads_published_slopes(self):
        b = self.bias(encoding=alibi(), num_heads=6, q_len=3)
        np.testing.assert_allclose(self.slopes_from(b), ALIBI_SLOPES_6, rtol=0, atol=BIAS_ATOL)

    def test_alibi_max_bias_changes_slopes(self):
        for heads, max_bias in [(8, 16.0), (4, 8.0), (12, 4.0), (3, 2.5)]:
            with self.subTest(heads=heads, max_bias=max_bias):
                b = self.bias(encoding=alibi(max_bias), num_heads=heads, q_len=2)
                np.testing.assert_allclose(self.slopes_from(b), ref_alibi_slopes(heads, max_bias),
                                           rtol=1e-6, atol=BIAS_ATOL)
        default = self.slopes_from(self.bias(encoding=alibi(), num_heads=8, q_len=2))
        doubled = self.slopes_from(self.bias(encoding=alibi(16.0), num_heads=8, q_len=2))
        np.testing.assert_allclose(doubled, default ** 2, rtol=1e-6)

    def test_alibi_causal_bottom_right(self):
        for q_len, kv_len in [(5, 5), (3, 7)]:
            with self.subTest(q_len=q_len, kv_len=kv_len):
                b = self.bias(encoding=alibi(), num_heads=12, q_len=q_len, kv_len=kv_len,
                              causal=True)
                self.assertEqual(b.shape, (12, q_len, kv_len))
                qpos = kv_len - q_len + np.arange(q_len)
                dist = qpos[:, None] - np.arange(kv_len)[None, :]
                masked = dist < 0
                self.assertTrue(np.all(np.isneginf(b[:, masked])), "−inf above the diagonal")
                self.assertTrue(np.all(np.isfinite(b[:, ~masked])))
                # The (shifted) diagonal is 0; below it −m·(i − j).
                self.assertTrue(np.all(b[:, dist == 0] == 0.0))
                want = -np.array(ALIBI_SLOPES_12)[:, None, None] * dist
                np.testing.assert_allclose(b[:, ~masked], want[:, ~masked], rtol=1e-6,
                                           atol=BIAS_ATOL)

    def test_alibi_kv_shorter_than_q(self):
        b = self.bias(encoding=alibi(), num_heads=4, q_len=5, kv_len=3)
        qpos = 3 - 5 + np.arange(5)
        dist = np.abs(qpos[:, None] - np.arange(3)[None, :])
        np.testing.assert_allclose(b, -ref_alibi_slopes(4)[:, None, None] * dist, rtol=1e-6,
                                   atol=BIAS_ATOL)

    def test_alibi_model(self):
        b = self.bias(model="demo-alibi", q_len=4)
        self.assertEqual(b.shape, (12, 4, 4))
        np.testing.assert_allclose(self.slopes_from(b), ALIBI_SLOPES_12, rtol=0, atol=BIAS_ATOL)

    def t5_buckets(self, heads, q_len, kv_len, **enc):
        """Recovers the bucket of every entry from table[b, h] = 100·b + h."""
        num_buckets = enc.get("num_buckets") or 32
        table = (100.0 * np.arange(num_buckets)[:, None] + np.arange(heads)[None, :])
        b = self.bias(encoding=t5(**enc), num_heads=heads, q_len=q_len, kv_len=kv_len,
                      t5_table=f32_tensor(table))
        self.assertEqual(b.shape, (heads, q_len, kv_len))
        buckets = np.round((b - np.arange(heads)[:, None, None]) / 100.0)
        np.testing.assert_array_equal(b, 100.0 * buckets + np.arange(heads)[:, None, None],
                                      "entries must be table rows")
        # The bucket does not depend on the head.
        np.testing.assert_array_equal(buckets, np.broadcast_to(buckets[:1], buckets.shape))
        qpos = kv_len - q_len + np.arange(q_len)
        rel = np.arange(kv_len)[None, :] - qpos[:, None]  # j − i
        return buckets[0].astype(np.int64), rel

    def test_t5_published_buckets(self):
        for bidirectional, published in [(None, T5_BUCKETS_BIDIRECTIONAL),
                                         (True, T5_BUCKETS_BIDIRECTIONAL),
                                         (False, T5_BUCKETS_CAUSAL)]:
            with self.subTest(bidirectional=bidirectional):
                enc = {} if bidirectional is None else {"bidirectional": bidirectional}
                # q_len 130, kv_len 330: j − i ranges over [−329, 199].
                buckets, rel = self.t5_buckets(3, 130, 330, **enc)
                for r, want in published.items():
                    got = set(buckets[rel == r].tolist())
                    self.assertEqual(got, {want}, f"bucket of j − i = {r}")
                np.testing.assert_array_equal(
                    buckets, ref_t5_bucket(rel, bidirectional=bidirectional is not False))

    def test_t5_custom_buckets(self):
        for enc in [dict(num_buckets=16, max_distance=20, bidirectional=False),
                    dict(num_buckets=12, max_distance=40),
                    dict(num_buckets=36, max_distance=50, bidirectional=False)]:
            with self.subTest(**enc):
                buckets, rel = self.t5_buckets(2, 40, 90, **enc)
                np.testing.assert_array_equal(
                    buckets, ref_t5_bucket(rel, enc.get("bidirectional", True),
                                           enc["num_buckets"], enc["max_distance"]))

    def test_t5_causal_mask(self):
        table = np.arange(32 * 2, dtype=np.float32).reshape(32, 2)
        b = self.bias(encoding=t5(), num_heads=2, q_len=3, kv_len=6, causal=True,
                      t5_table=f32_tensor(table))
        qpos = 3 + np.arange(3)
        masked = np.arange(6)[None, :] > qpos[:, None]
        self.assertTrue(np.all(np.isneginf(b[:, masked])))
        buckets = ref_t5_bucket(np.arange(6)[None, :] - qpos[:, None])
        want = table[buckets].transpose(2, 0, 1)
        np.testing.assert_array_equal(b[:, ~masked], want[:, ~masked])

    def test_t5_model(self):
        b = self.bias(model="demo-t5", q_len=5, kv_len=9)
        self.assertEqual(b.shape, (8, 5, 9))
        self.assertTrue(np.all(np.isfinite(b)))
        # Entries with the same bucket are equal; the table is not constant.
        qpos = 4 + np.arange(5)
        buckets = ref_t5_bucket(np.arange(9)[None, :] - qpos[:, None])
        for bucket in np.unique(buckets):
            sel = b[:, buckets == bucket]
            np.testing.assert_array_equal(sel, np.broadcast_to(sel[:, :1], sel.shape))
        self.assertGreater(np.ptp(b), 0.0)

    def test_errors(self):
        cases = [
            ("t5 without t5_table", dict(encoding=t5(), num_heads=2, q_len=2), ["t5_table"]),
            ("t5_table wrong shape",
             dict(encoding=t5(), num_heads=2, q_len=2,
                  t5_table=f32_tensor(np.zeros((32, 3), np.float32))), ["t5_table"]),
            ("rope", dict(encoding=rope(), num_heads=2, q_len=2), ["rope"]),
            ("sinusoidal", dict(encoding=sinusoidal(), num_heads=2, q_len=2), ["sinusoidal"]),
            ("cope inline", dict(encoding=cope(4), num_heads=2, q_len=2), ["cope"]),
            ("model without a bias encoding", dict(model="demo-rope", q_len=2), ["rope"]),
            ("num_heads=0", dict(encoding=alibi(), num_heads=0, q_len=2), ["num_heads"]),
            ("q_len=0", dict(encoding=alibi(), num_heads=2, q_len=0), ["q_len"]),
            ("no encoding", dict(num_heads=2, q_len=2), ["encoding"]),
            ("max_bias NaN", dict(encoding=alibi(float("nan")), num_heads=2, q_len=2),
             ["max_bias"]),
        ]
        for name, request, needles in cases:
            with self.subTest(name):
                self.assertRpcError(INVALID, self.position_bias, contains=needles, **request)
        self.assertRpcError(NOT_FOUND, self.position_bias, model="no-such-model", q_len=2,
                            contains=["no-such-model"])

    def test_num_heads_range(self):
        # Its own message, not a sequence-length limit.
        details = self.assertRpcError(INVALID, self.position_bias, encoding=alibi(),
                                      num_heads=2**40, q_len=2,
                                      contains=["num_heads=1099511627776 must be in [1, 65536]"])
        self.assertNotIn("sequence length", details)
        self.assertRpcError(INVALID, self.position_bias, encoding=alibi(), num_heads=-3, q_len=2,
                            contains=["num_heads=-3 must be in [1, 65536]"])

    def test_cope_has_no_fixed_bias(self):
        details = self.assertRpcError(INVALID, self.position_bias, encoding=cope(4), num_heads=2,
                                      q_len=2, contains=["encoding.cope has no fixed score bias"])
        self.assertNotIn("cope_pos_emb", details)  # PositionBiasRequest has no such field
        self.assertRpcError(INVALID, self.position_bias, model="demo-cope", q_len=2,
                            contains=["encoding.cope has no fixed score bias"])

    def test_model_num_heads_must_match(self):
        self.assertRpcError(INVALID, self.position_bias, model="demo-alibi", num_heads=3, q_len=2,
                            contains=["num_heads=3 differs from num_heads=12 of "
                                      'model="demo-alibi"'])
        b = self.bias(model="demo-alibi", num_heads=12, q_len=2)
        self.assertEqual(b.shape, (12, 2, 2))

    def test_t5_parameters_before_table_shape(self):
        table = f32_tensor(np.zeros((32, 2), np.float32))
        cases = [
            (dict(num_buckets=-4), "encoding.t5.num_buckets=-4 must be >= 2"),
            (dict(num_buckets=6), None),  # valid: 6 buckets, then the table shape is wrong
            (dict(num_buckets=5), "encoding.t5.num_buckets=5 must be even and >= 4 when "
                                  "bidirectional"),
            (dict(num_buckets=32, max_distance=-1), "encoding.t5.max_distance=-1 must be > "
                                                    "max_exact=8"),
        ]
        for params, needle in cases:
            with self.subTest(params=params):
                details = self.assertRpcError(
                    INVALID, self.position_bias, encoding=t5(**params), num_heads=2, q_len=2,
                    t5_table=table, contains=[needle or "t5_table.shape=[32,2] must be [6,2]"])
                if needle is not None:
                    self.assertNotIn("t5_table", details)


# ---------------------------------------------------------------------------------------------
# D. ScaledDotProductAttention with inline encodings
# ---------------------------------------------------------------------------------------------

class SdpaEncodingTest(ServerTestCase):

    def setUp(self):
        self.rng = np.random.default_rng(31)

    def qkv(self, B=2, H=4, Hkv=4, Sq=5, Sk=5, hd=16, q_scale=1.0):
        q = (q_scale * self.rng.standard_normal((B, H, Sq, hd))).astype(np.float32)
        k = self.rng.standard_normal((B, Hkv, Sk, hd)).astype(np.float32)
        v = self.rng.standard_normal((B, Hkv, Sk, hd)).astype(np.float32)
        return q, k, v

    def run_sdpa(self, q, k, v, encoding=None, return_attention=True, **request):
        """Output (and attention when requested). With return_attention the server
        materialises the probabilities; without, it runs the tiled online-softmax kernel."""
        kw = dict(q=f32_tensor(q), k=f32_tensor(k), v=f32_tensor(v),
                  return_attention=return_attention, **request)
        if encoding is not None:
            kw["encoding"] = encoding
        resp = self.sdpa(**kw)
        self.assertEqual(list(resp.output.shape), list(q.shape))
        if not return_attention:
            self.assertEqual(len(resp.attention.shape), 0)
            return to_numpy(resp.output), None
        self.assertEqual(list(resp.attention.shape),
                         [q.shape[0], q.shape[1], q.shape[2], k.shape[2]])
        return to_numpy(resp.output), to_numpy(resp.attention)

    def check(self, q, k, v, encoding, ref_kwargs, **request):
        out, att = self.run_sdpa(q, k, v, encoding, **request)
        want_out, want_att = ref_sdpa(q, k, v, **ref_kwargs)
        self.assertLess(rel_err(out, want_out), SDPA_REL, "output")
        self.assertLess(rel_err(att, want_att), SDPA_REL, "probabilities")
        self.assertTrue(np.all(att[want_att == 0] == 0), "masked probabilities must be exactly 0")
        # The tiled kernel (no probabilities requested) must match the reference as well.
        tiled, _ = self.run_sdpa(q, k, v, encoding, return_attention=False, **request)
        self.assertLess(rel_err(tiled, want_out), SDPA_REL, "tiled output")
        return out, att

    def test_bfloat16_compute_is_bf16_accurate_in_both_paths(self):
        # bf16 operands carry 8 significant bits: ~1e-2 relative against the f64 reference, and
        # measurably less exact than FLOAT32 compute (so bf16 really ran).
        q, k, v = self.qkv(B=2, H=4, Hkv=2, Sq=37, Sk=37, hd=32)
        want_out, _ = ref_sdpa(q, k, v, causal=True)
        for return_attention in (True, False):
            out, _ = self.run_sdpa(q, k, v, return_attention=return_attention, causal=True,
                                   compute_dtype=tensor_pb2.BFLOAT16)
            self.assertLess(rel_err(out, want_out), 1e-2, f"return_attention={return_attention}")
            self.assertGreater(rel_err(out, want_out), 1e-4, "bf16 must differ from f32")
            f32, _ = self.run_sdpa(q, k, v, return_attention=return_attention, causal=True)
            self.assertLess(rel_err(f32, want_out), SDPA_REL)

    def test_bfloat16_tensors_stay_bf16(self):
        # BFLOAT16 q, k and v come back as BFLOAT16, bit for bit the rounding of what the same
        # values as FLOAT32 tensors give (the server keeps them bf16 for bf16 compute with no
        # encoding, ALiBi or T5, and widens them otherwise), and bf16-accurate against f64.
        q, k, v = (bf16_to_f32(bf16_round(x)) for x in self.qkv(B=2, H=4, Hkv=2, Sq=37, Sk=70,
                                                                  hd=32))
        for encoding, ref_kind in ((None, None), (alibi(), "alibi"), (rope(), "rope")):
            for compute in (tensor_pb2.BFLOAT16, tensor_pb2.FLOAT32):
                with self.subTest(encoding=ref_kind, compute=compute):
                    request = dict(causal=True, key_lengths=[70, 44], compute_dtype=compute)
                    with_encoding = dict(request)
                    if encoding is not None:
                        with_encoding["encoding"] = encoding
                    resp = self.sdpa(q=bf16_tensor(q), k=bf16_tensor(k), v=bf16_tensor(v),
                                     **with_encoding)
                    self.assertEqual(resp.output.dtype, tensor_pb2.BFLOAT16)
                    self.assertEqual(list(resp.output.shape), list(q.shape))
                    got = np.frombuffer(resp.output.data, dtype="<u2").reshape(q.shape)
                    f32, _ = self.run_sdpa(q, k, v, encoding, return_attention=False, **request)
                    np.testing.assert_array_equal(got, bf16_round(f32))
                    want, _ = ref_sdpa(q, k, v, kind=ref_kind, causal=True,
                                       key_lengths=[70, 44])
                    self.assertLess(rel_err(bf16_to_f32(got), want), 1e-2)

    def both_head_layouts(self):
        return [(4, 4), (4, 2)]  # MHA, GQA (query head h uses kv head h // 2)

    def test_rope(self):
        for H, Hkv in self.both_head_layouts():
            for causal, Sq, Sk, offset in [(False, 5, 5, 0), (True, 3, 7, 20), (True, 6, 6, 0)]:
                with self.subTest(H=H, Hkv=Hkv, causal=causal, Sq=Sq, Sk=Sk, offset=offset):
                    q, k, v = self.qkv(H=H, Hkv=Hkv, Sq=Sq, Sk=Sk)
                    out, _ = self.check(q, k, v, rope(), dict(kind="rope", causal=causal,
                                                              offset=offset),
                                        causal=causal, position_offset=offset)
                    # The rotation matters: without it the result differs.
                    plain, _ = ref_sdpa(q, k, v, causal=causal)
                    self.assertGreater(rel_err(out, plain), CHANGED_REL)

    def test_rope_variants(self):
        q, k, v = self.qkv(H=4, Hkv=2, Sq=4, Sk=9, hd=32)
        cases = [
            (rope(layout=pe_pb2.INTERLEAVED, theta=500.0),
             dict(interleaved=True, theta=500.0)),
            (rope(rotary_dim=12), dict(r=12)),
            (rope(scaling="yarn", factor=4.0, original_max_positions=8),
             dict(scaling="yarn", params=dict(factor=4.0, original_max_positions=8))),
            (rope(scaling="dynamic_ntk", factor=2.0, original_max_positions=4),
             dict(scaling="dynamic_ntk", params=dict(factor=2.0, original_max_positions=4))),
        ]
        for encoding, rope_args in cases:
            with self.subTest(rope_args=rope_args):
                self.check(q, k, v, encoding, dict(kind="rope", rope_args=rope_args, offset=3,
                                                   causal=True),
                           position_offset=3, causal=True)

    def test_alibi(self):
        for H, Hkv in self.both_head_layouts():
            for causal, Sq, Sk, offset, key_lengths in [(False, 5, 5, 0, None),
                                                        (True, 5, 5, 0, None),
                                                        (True, 2, 6, 10, [6, 4]),
                                                        (False, 4, 6, 0, [3, 6])]:
                with self.subTest(H=H, Hkv=Hkv, causal=causal, Sq=Sq, Sk=Sk, offset=offset,
                                  key_lengths=key_lengths):
                    q, k, v = self.qkv(H=H, Hkv=Hkv, Sq=Sq, Sk=Sk)
                    request = dict(causal=causal, position_offset=offset)
                    if key_lengths is not None:
                        request["key_lengths"] = key_lengths
                    self.check(q, k, v, alibi(), dict(kind="alibi", causal=causal, offset=offset,
                                                      key_lengths=key_lengths), **request)
        with self.subTest("max_bias 2, 12 heads"):
            q, k, v = self.qkv(H=12, Hkv=3, Sq=4, Sk=4)
            self.check(q, k, v, alibi(2.0), dict(kind="alibi", max_bias=2.0))

    def test_t5(self):
        for H, Hkv in self.both_head_layouts():
            for enc, t5_args, causal in [({}, {}, False),
                                         ({"bidirectional": False}, {"bidirectional": False},
                                          True),
                                         ({"num_buckets": 8, "max_distance": 6},
                                          {"num_buckets": 8, "max_distance": 6}, False)]:
                with self.subTest(H=H, Hkv=Hkv, enc=enc, causal=causal):
                    nb = enc.get("num_buckets", 32)
                    table = self.rng.standard_normal((nb, H)).astype(np.float32)
                    q, k, v = self.qkv(H=H, Hkv=Hkv, Sq=4, Sk=20, q_scale=0.3)
                    # scale unset: T5 uses none (1), not 1/sqrt(hd).
                    out, _ = self.check(
                        q, k, v, t5(**enc),
                        dict(kind="t5", t5_table=table, t5_args=t5_args, causal=causal,
                             offset=2),
                        t5_table=f32_tensor(table), causal=causal, position_offset=2)
                    scaled, _ = ref_sdpa(q, k, v, kind="t5", t5_table=table, t5_args=t5_args,
                                         causal=causal, offset=2, scale=1 / 4.0)
                    self.assertGreater(rel_err(out, scaled), CHANGED_REL,
                                       "must not be the 1/sqrt(hd)-scaled result")
        with self.subTest("explicit scale"):
            table = self.rng.standard_normal((32, 4)).astype(np.float32)
            q, k, v = self.qkv(Sq=3, Sk=3)
            self.check(q, k, v, t5(), dict(kind="t5", t5_table=table, scale=0.125),
                       t5_table=f32_tensor(table), scale=0.125)

    def test_cope(self):
        for H, Hkv in self.both_head_layouts():
            for causal, npos, Sq, Sk, key_lengths in [(True, 4, 8, 8, None),
                                                      (True, 16, 8, 8, None),
                                                      (True, 3, 3, 7, None),
                                                      (False, 5, 6, 6, [6, 3])]:
                with self.subTest(H=H, Hkv=Hkv, causal=causal, npos=npos, Sq=Sq, Sk=Sk,
                                  key_lengths=key_lengths):
                    q, k, v = self.qkv(H=H, Hkv=Hkv, Sq=Sq, Sk=Sk, q_scale=2.0)
                    emb = self.rng.standard_normal((npos, 16)).astype(np.float32)
                    request = dict(causal=causal, cope_pos_emb=f32_tensor(emb))
                    if key_lengths is not None:
                        request["key_lengths"] = key_lengths
                    out, _ = self.check(q, k, v, cope(npos),
                                        dict(kind="cope", cope_emb=emb, causal=causal,
                                             key_lengths=key_lengths), **request)
                    plain, _ = ref_sdpa(q, k, v, causal=causal, key_lengths=key_lengths)
                    self.assertGreater(rel_err(out, plain), CHANGED_REL)

    def test_cope_clamps_positions(self):
        # Keys equal to 10·q: every gate is σ(≈40) = 1, so p_ij counts the keys from j to the end
        # (6, 5, 4, 3, 2, 1), clamped to npos_max − 1 = 2: keys 0..4 read e[2], key 5 reads e[1],
        # and e[0] is never read.
        q, _, v = self.qkv(B=1, H=1, Hkv=1, Sq=1, Sk=6)
        k = np.repeat(q, 6, axis=2) * 10.0
        emb = self.rng.standard_normal((3, 16)).astype(np.float32)
        out, att = self.check(q, k, v, cope(3), dict(kind="cope", cope_emb=emb),
                              cope_pos_emb=f32_tensor(emb))
        np.testing.assert_allclose(att[0, 0, 0, :5], att[0, 0, 0, 0], rtol=1e-6)
        emb0 = emb.copy()
        emb0[0] += 5.0
        out0, _ = self.run_sdpa(q, k, v, cope(3), cope_pos_emb=f32_tensor(emb0))
        np.testing.assert_allclose(out0, out, rtol=1e-6, atol=1e-6)
        emb1 = emb.copy()
        emb1[1] += 5.0
        out1, _ = self.run_sdpa(q, k, v, cope(3), cope_pos_emb=f32_tensor(emb1))
        self.assertGreater(rel_err(out1, out), CHANGED_REL)

    def test_errors(self):
        q, k, v = self.qkv(B=1, H=2, Hkv=2, Sq=3, Sk=3, hd=8)
        base = dict(q=f32_tensor(q), k=f32_tensor(k), v=f32_tensor(v))
        cases = [
            ("sinusoidal", dict(encoding=sinusoidal()), ["sinusoidal"]),
            ("learned", dict(encoding=pe_pb2.PositionalEncoding(
                learned=pe_pb2.LearnedEncoding())), ["learned"]),
            ("cope without cope_pos_emb", dict(encoding=cope(4)), ["cope_pos_emb"]),
            ("cope_pos_emb wrong shape",
             dict(encoding=cope(4), cope_pos_emb=f32_tensor(np.zeros((4, 9), np.float32))),
             ["cope_pos_emb"]),
            ("t5 without t5_table", dict(encoding=t5()), ["t5_table"]),
            ("t5_table wrong shape",
             dict(encoding=t5(), t5_table=f32_tensor(np.zeros((32, 3), np.float32))),
             ["t5_table"]),
            ("odd rotary_dim", dict(encoding=rope(rotary_dim=3)), ["rotary_dim"]),
            ("negative position_offset", dict(encoding=alibi(), position_offset=-1),
             ["position_offset"]),
        ]
        for name, request, needles in cases:
            with self.subTest(name):
                self.assertRpcError(INVALID, self.sdpa, contains=needles, **base, **request)
        with self.subTest("messages name encoding fields, not request.*"):
            details = self.assertRpcError(INVALID, self.sdpa, encoding=alibi(float("nan")),
                                          contains=["encoding.alibi.max_bias=nan"], **base)
            self.assertNotIn("request.", details)
        with self.subTest("t5 parameters before the table"):
            details = self.assertRpcError(
                INVALID, self.sdpa, encoding=t5(num_buckets=-4),
                t5_table=f32_tensor(np.zeros((32, 2), np.float32)),
                contains=["encoding.t5.num_buckets=-4 must be >= 2"], **base)
            self.assertNotIn("t5_table", details)
        with self.subTest("cope npos_max before the table"):
            self.assertRpcError(INVALID, self.sdpa, encoding=cope(0),
                                contains=["encoding.cope.npos_max=0 must be >= 1"], **base)
        with self.subTest("key_lengths named without a prefix"):
            details = self.assertRpcError(INVALID, self.sdpa, key_lengths=[9],
                                          contains=["key_lengths[0]=9 must be in [0, kv_len=3]"],
                                          **base)
            self.assertFalse(details.startswith("request."), details)
        with self.subTest("Sq > Sk needs position_offset >= Sq − Sk"):
            q5, _, _ = self.qkv(B=1, H=2, Hkv=2, Sq=5, Sk=3, hd=8)
            self.assertRpcError(INVALID, self.sdpa, q=f32_tensor(q5), k=f32_tensor(k),
                                v=f32_tensor(v), encoding=alibi(), contains=["position_offset"])
            out, _ = self.run_sdpa(q5, k, v, alibi(), position_offset=2)
            want, _ = ref_sdpa(q5, k, v, kind="alibi", offset=2)
            self.assertLess(rel_err(out, want), SDPA_REL)


# ---------------------------------------------------------------------------------------------
# E. Attend on the demo models; F. ListModels
# ---------------------------------------------------------------------------------------------

class DemoModelTest(ServerTestCase):
    # name: (d_model, num_heads, num_kv_heads, head_dim, encoding kind)
    DEMO = {
        "demo-sinusoidal": (512, 8, 8, 64, "sinusoidal"),
        "demo-nope-gqa": (256, 8, 2, 32, "none"),
        "demo-learned": (256, 4, 4, 64, "learned"),
        "demo-rope": (256, 8, 4, 32, "rope"),
        "demo-alibi": (384, 12, 12, 32, "alibi"),
        "demo-t5": (256, 8, 8, 32, "t5"),
        "demo-cope": (256, 4, 4, 64, "cope"),
    }
    RELATIVE = ("demo-rope", "demo-alibi", "demo-t5", "demo-cope")

    def setUp(self):
        self.rng = np.random.default_rng(5)

    def x(self, model, batch, seq):
        return self.rng.standard_normal((batch, seq, self.DEMO[model][0])).astype(np.float32)

    def run_attend(self, model, query, **kwargs):
        resp = self.attend(model=model, query=f32_tensor(query), **kwargs)
        out = to_numpy(resp.output)
        self.assertEqual(out.shape, query.shape)
        self.assertTrue(np.all(np.isfinite(out)))
        att = to_numpy(resp.attention) if kwargs.get("return_attention") else None
        return out, att

    def test_shapes_and_probabilities(self):
        for model in self.RELATIVE + ("demo-learned",):
            heads = self.DEMO[model][1]
            for causal in (False, True):
                with self.subTest(model=model, causal=causal):
                    q = self.x(model, 2, 6)
                    out, att = self.run_attend(model, q, causal=causal, return_attention=True,
                                               position_offset=4)
                    self.assertEqual(att.shape, (2, heads, 6, 6))
                    self.assertTrue(np.all(att >= 0))
                    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=0, atol=PROB_SUM_ATOL)
                    above = np.triu(np.ones((6, 6), bool), 1)
                    if causal:
                        self.assertTrue(np.all(att[..., above] == 0.0))
                        self.assertTrue(np.all(att[..., ~above] > 0.0))
                    else:
                        self.assertTrue(np.all(att > 0.0))

    def test_cross_attention_causal_bottom_right(self):
        for model in self.RELATIVE:
            with self.subTest(model=model):
                q, ctx = self.x(model, 1, 3), self.x(model, 1, 5)
                _, att = self.run_attend(model, q, context=f32_tensor(ctx), causal=True,
                                         return_attention=True)
                masked = np.arange(5)[None, :] > np.arange(3)[:, None] + 2
                self.assertTrue(np.all(att[..., masked] == 0.0))
                np.testing.assert_allclose(att.sum(-1), 1.0, rtol=0, atol=PROB_SUM_ATOL)

    def test_relative_encodings_are_translation_invariant(self):
        for model in self.RELATIVE:
            for causal in (False, True):
                with self.subTest(model=model, causal=causal):
                    q = self.x(model, 2, 7)
                    a, att_a = self.run_attend(model, q, causal=causal, return_attention=True)
                    b, att_b = self.run_attend(model, q, causal=causal, return_attention=True,
                                               position_offset=37)
                    self.assertLessEqual(rel_err(b, a), INVARIANCE_REL)
                    self.assertLessEqual(rel_err(att_b, att_a), INVARIANCE_REL)
                    ids = int_tensor(np.array([[100 + t for t in range(7)]] * 2), tensor_pb2.INT64)
                    c, _ = self.run_attend(model, q, causal=causal, position_ids=ids)
                    self.assertLessEqual(rel_err(c, a), INVARIANCE_REL)

    def test_relative_encodings_see_order(self):
        # Translation invariance above would hold trivially without any encoding; with one,
        # attention is not permutation-equivariant (NoPE without a mask is).
        perm = np.array([3, 0, 6, 1, 5, 2, 4])
        for model in self.RELATIVE + ("demo-learned", "demo-sinusoidal"):
            with self.subTest(model=model):
                q = self.x(model, 1, 7)
                out, _ = self.run_attend(model, q)
                out_p, _ = self.run_attend(model, q[:, perm])
                self.assertGreater(rel_err(out_p, out[:, perm]), CHANGED_REL)
        with self.subTest(model="demo-nope-gqa (control)"):
            q = self.x("demo-nope-gqa", 1, 7)
            out, _ = self.run_attend("demo-nope-gqa", q)
            out_p, _ = self.run_attend("demo-nope-gqa", q[:, perm])
            self.assertLessEqual(rel_err(out_p, out[:, perm]), INVARIANCE_REL)

    def test_absolute_encodings_depend_on_offset(self):
        for model in ("demo-sinusoidal", "demo-learned"):
            with self.subTest(model=model):
                q = self.x(model, 1, 5)
                a, _ = self.run_attend(model, q)
                b, _ = self.run_attend(model, q, position_offset=37)
                self.assertGreater(rel_err(b, a), CHANGED_REL)

    def test_learned_table_limit_in_attend(self):
        q = self.x("demo-learned", 1, 3)
        out, _ = self.run_attend("demo-learned", q, position_offset=8189)  # last position 8191
        self.assertRpcError(OUT_OF_RANGE, self.attend, model="demo-learned", query=f32_tensor(q),
                            position_offset=8190, contains=["8192"])
        self.assertRpcError(OUT_OF_RANGE, self.attend, model="demo-learned", query=f32_tensor(q),
                            position_ids=int_tensor([0, 1, 8192], tensor_pb2.INT64),
                            contains=["8192"])

    # F. ListModels

    def test_list_models_has_every_demo_with_its_encoding(self):
        models = {m.name: m for m in self.list_models().models}
        for name, (d, heads, kv_heads, hd, kind) in self.DEMO.items():
            with self.subTest(model=name):
                self.assertIn(name, models)
                m = models[name]
                self.assertEqual((m.d_model, m.num_heads, m.num_kv_heads, m.head_dim),
                                 (d, heads, kv_heads, hd))
                self.assertEqual(m.encoding.WhichOneof("kind"), kind)
                self.assertTrue(m.description)
        self.assertIn(models["demo-rope"].encoding.rope.theta, (0.0, 10000.0))
        self.assertIn(models["demo-rope"].encoding.rope.layout,
                      (pe_pb2.ROTARY_LAYOUT_UNSPECIFIED, pe_pb2.HALF_SPLIT))
        self.assertEqual(models["demo-alibi"].encoding.alibi.max_bias, 8.0)
        self.assertTrue(models["demo-t5"].HasField("scale"))
        self.assertEqual(models["demo-t5"].scale, 1.0)
        self.assertEqual(models["demo-cope"].encoding.cope.npos_max, 64)
        self.assertEqual(models["demo-learned"].max_positions, 8192)
        t5_cfg = models["demo-t5"].encoding.t5
        self.assertIn(t5_cfg.num_buckets, (0, 32))
        self.assertIn(t5_cfg.max_distance, (0, 128))
        self.assertTrue(not t5_cfg.HasField("bidirectional") or t5_cfg.bidirectional)
        for name in self.DEMO:
            with self.subTest(get_model=name):
                cfg = self.stub.GetModel(at.pb.GetModelRequest(name=name),
                                         timeout=at.RPC_TIMEOUT_S).config
                self.assertEqual(cfg, models[name])


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
