#!/usr/bin/python3
"""End-to-end tests of loading models from a model repository (--model_repository=DIR).

    /usr/bin/python3 tests/e2e/repository_e2e_test.py --server build/server/attnserve \
        --stubs build/python [-v]

Arguments and fixtures as in e2e_test.py (see attnserve_testing.py). setUpClass writes a temporary
repository (one folder per model: config.pbtxt, text-format attnserve.v1.ModelConfig, and a
safetensors weights file written by the small writer below), starts the real binary on it and
tearDownClass stops it (clean SIGTERM exit required) and deletes the folder.

The repository holds good models, whose Attend / Encode results are compared with an independent
float64 numpy reference of the layer written from model_config.proto and the README (Hugging Face
/ torch.nn.Linear weights, y = x·Wᵀ + b), and broken models, which must be skipped at start-up and
then answer NOT_FOUND with a message saying "failed to load" and naming the file and the tensor or
line at fault. A repository with only broken models must make the server exit 1.

Tolerances (float32 results against float64 references):
  Attend   ‖got − ref‖ / ‖ref‖ < LAYER_REL, for the outputs and the attention probabilities.
  Encode   |got − ref| <= ENC_ATOL + ENC_RTOL·|ref| (one float32 addition per element).
"""

import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from google.protobuf import text_format  # noqa: E402

from attnserve_testing import (  # noqa: E402
    RPC_TIMEOUT_S, grpc, pb, tensor_pb2, mc_pb2, pe_pb2,
    f32_tensor, int_tensor, to_numpy, safetensors_bytes, RepositoryServerTestCase)

NOT_FOUND = grpc.StatusCode.NOT_FOUND
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE

LAYER_REL = 1e-5
ENC_ATOL = 1e-7
ENC_RTOL = 1e-6
PROB_SUM_ATOL = 1e-5
SERVER_EXIT_TIMEOUT_S = 30


# ---------------------------------------------------------------------------------------------
# safetensors writer (and a reader, used only to check the writer)
# ---------------------------------------------------------------------------------------------

def read_safetensors(data):
    """The inverse of safetensors_bytes, as float64 arrays (for the writer's self-check)."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = body[begin:end]
        if entry["dtype"] == "F32":
            a = np.frombuffer(raw, "<f4")
        elif entry["dtype"] == "BF16":
            a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
        else:
            a = np.frombuffer(raw, "<f2")
        out[name] = a.astype(np.float64).reshape(entry["shape"])
    return out


# ---------------------------------------------------------------------------------------------
# float64 reference of the layer
# ---------------------------------------------------------------------------------------------

def ref_vaswani(positions, d, base=10000.0):
    """P[p,2k] = sin(p·ω_k), P[p,2k+1] = cos(p·ω_k), ω_k = base^(−2k/d)."""
    p = np.asarray(positions, dtype=np.float64)[..., None]
    k = np.arange(d) // 2
    w = base ** (-2.0 * k / d)
    return np.where(np.arange(d) % 2 == 0, np.sin(p * w), np.cos(p * w))


def ref_layer(w, cfg, query, context=None, causal=False, positions=None, additive=None):
    """The attention layer in float64; returns (output [B, Sq, d], probs [B, H, Sq, Sk]).

    w: {"q_proj.weight", …} float64 arrays (biases optional); cfg: dict(H, Hkv, hd);
    additive: None, or P [B or 1, Sq, d] added to the query input (an additive encoding) before
    the projections; a cross-attention context is used as given."""
    H, Hkv, hd = cfg["H"], cfg["Hkv"], cfg["hd"]
    x = np.asarray(query, dtype=np.float64)
    if additive is not None:
        x = x + additive
    src = x if context is None else np.asarray(context, dtype=np.float64)
    B, Sq, _ = x.shape
    Sk = src.shape[1]

    def linear(a, name):
        y = a @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    q = linear(x, "q_proj").reshape(B, Sq, H, hd).transpose(0, 2, 1, 3)
    k = linear(src, "k_proj").reshape(B, Sk, Hkv, hd).transpose(0, 2, 1, 3)
    v = linear(src, "v_proj").reshape(B, Sk, Hkv, hd).transpose(0, 2, 1, 3)
    k = np.repeat(k, H // Hkv, axis=1)  # query head h uses kv head h // (H / Hkv)
    v = np.repeat(v, H // Hkv, axis=1)
    scores = np.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(hd)
    if causal:  # bottom-right aligned: query i sees keys j <= i + Sk − Sq
        visible = np.arange(Sk)[None, :] <= np.arange(Sq)[:, None] + Sk - Sq
        scores = np.where(visible, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    probs = e / e.sum(axis=-1, keepdims=True)
    heads = np.einsum("bhij,bhjd->bhid", probs, v)
    merged = heads.transpose(0, 2, 1, 3).reshape(B, Sq, H * hd)
    return linear(merged, "o_proj"), probs


def rel_err(got, want):
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))


# ---------------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------------

def _exact_values(rng, shape, lo=-48, hi=48):
    """Multiples of 1/64 in [lo/64, hi/64]: exact in bfloat16 (8 significant bits) and float16."""
    return rng.integers(lo, hi + 1, size=shape).astype(np.float64) / 64.0


def _random_f32(rng, shape, fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32).astype(np.float64)


def _write_model(repo, folder, config_text, weights_bytes=None, weights_file="weights.safetensors"):
    path = os.path.join(repo, folder)
    os.makedirs(path)
    with open(os.path.join(path, "config.pbtxt"), "w") as f:
        f.write(config_text)
    if weights_bytes is not None:
        with open(os.path.join(path, weights_file), "wb") as f:
            f.write(weights_bytes)


# Good model 1: MHA, q/k/v/o biases, Vaswani sinusoidal, F32. head_dim and num_kv_heads are left
# to their defaults (8 and 4). Hand-written text format, with comments.
MHA = dict(name="mha-sinusoidal", d=32, H=4, Hkv=4, hd=8)
MHA_CONFIG = """\
# A Vaswani-style layer: biases everywhere, sinusoidal positions added to the input.
name: "mha-sinusoidal"
description: "repository test: MHA, biases, Vaswani"
d_model: 32
num_heads: 4   # head_dim defaults to 32 / 4
qkv_bias: true
o_bias: true
encoding { sinusoidal { variant: VASWANI } }
"""

# Good model 2: GQA (4 query heads, 2 K/V heads), explicit head_dim 8 (so H·hd = 32 ≠ d = 24),
# no biases, encoding `none`, BF16 and F16 weights under LLaMA names in "model.safetensors".
GQA = dict(name="gqa-llama", d=24, H=4, Hkv=2, hd=8)
GQA_PREFIX = "model.layers.0.self_attn."
GQA_DTYPES = {"q_proj": "BF16", "k_proj": "F16", "v_proj": "BF16", "o_proj": "F16"}

# Good model 3: learned absolute positions, 16 rows; `name` left out (defaults to the folder).
LEARNED = dict(name="learned-abs", d=8, H=2, Hkv=2, hd=4, rows=16)
LEARNED_CONFIG = """\
d_model: 8
num_heads: 2
qkv_bias: true
encoding { learned {} }
max_positions: 16
"""

# Good model 4: the encoding field left unset, which model_config.proto defines as none.
NOPE = dict(name="nope-default", d=8, H=2, Hkv=2, hd=4)
NOPE_CONFIG = """\
name: "nope-default"
d_model: 8
num_heads: 2
"""

GOOD = (MHA, GQA, LEARNED, NOPE)

# The broken models share one shape: d_model 12, 3 heads of width 5 (so k_proj is [15, 12]).
BROKEN_CONFIG = """\
d_model: 12
num_heads: 3
head_dim: 5
"""
BROKEN_SHAPES = {"q_proj.weight": (15, 12), "k_proj.weight": (15, 12),
                 "v_proj.weight": (15, 12), "o_proj.weight": (12, 15)}
BROKEN = ("broken-kshape", "broken-missing-o", "broken-syntax", "broken-name",
          "broken-truncated", "broken-short-data", "broken-huge-heads", "broken-offsets")


def build_repository(repo, rng):
    """Writes every model; returns {model name: float64 weights by HF name}."""
    weights = {}

    # MHA, F32.
    d, hq, hkv = MHA["d"], MHA["H"] * MHA["hd"], MHA["Hkv"] * MHA["hd"]
    w = {"q_proj.weight": _random_f32(rng, (hq, d), d),
         "k_proj.weight": _random_f32(rng, (hkv, d), d),
         "v_proj.weight": _random_f32(rng, (hkv, d), d),
         "o_proj.weight": _random_f32(rng, (d, hq), hq),
         "q_proj.bias": _random_f32(rng, (hq,), d),
         "k_proj.bias": _random_f32(rng, (hkv,), d),
         "v_proj.bias": _random_f32(rng, (hkv,), d),
         "o_proj.bias": _random_f32(rng, (d,), hq)}
    # q/k scaled up so the attention is far from uniform (the positions must matter).
    w["q_proj.weight"] *= 4.0
    w["k_proj.weight"] *= 4.0
    weights[MHA["name"]] = w
    _write_model(repo, MHA["name"], MHA_CONFIG,
                 safetensors_bytes({n: ("F32", a) for n, a in w.items()}))

    # GQA, BF16/F16 with exact values, renamed tensors, another weights file name.
    d, hq, hkv = GQA["d"], GQA["H"] * GQA["hd"], GQA["Hkv"] * GQA["hd"]
    w = {"q_proj.weight": _exact_values(rng, (hq, d)),
         "k_proj.weight": _exact_values(rng, (hkv, d)),
         "v_proj.weight": _exact_values(rng, (hkv, d), -16, 16),
         "o_proj.weight": _exact_values(rng, (d, hq), -16, 16)}
    weights[GQA["name"]] = w
    config = mc_pb2.ModelConfig(
        name=GQA["name"], description="repository test: GQA, bf16/f16, LLaMA names",
        d_model=d, num_heads=GQA["H"], num_kv_heads=GQA["Hkv"], head_dim=GQA["hd"],
        weights_file="model.safetensors",
        encoding=pe_pb2.PositionalEncoding(none=pe_pb2.NoPositionalEncoding()),
        tensor_names=mc_pb2.TensorNames(**{
            f"{p}_weight": f"{GQA_PREFIX}{p}.weight" for p in GQA_DTYPES}))
    _write_model(repo, GQA["name"], text_format.MessageToString(config),
                 safetensors_bytes({f"{GQA_PREFIX}{p}.weight": (dt, w[f"{p}.weight"])
                                    for p, dt in GQA_DTYPES.items()}),
                 weights_file="model.safetensors")

    # Learned positions, F32, a decoy tensor the server must ignore.
    d, hq = LEARNED["d"], LEARNED["H"] * LEARNED["hd"]
    w = {"q_proj.weight": _random_f32(rng, (hq, d), d) * 4.0,
         "k_proj.weight": _random_f32(rng, (hq, d), d) * 4.0,
         "v_proj.weight": _random_f32(rng, (hq, d), d),
         "o_proj.weight": _random_f32(rng, (d, hq), hq),
         "q_proj.bias": _random_f32(rng, (hq,), d),
         "k_proj.bias": _random_f32(rng, (hq,), d),
         "v_proj.bias": _random_f32(rng, (hq,), d),
         "position_embeddings.weight": rng.standard_normal((LEARNED["rows"], d))
         .astype(np.float32).astype(np.float64)}
    weights[LEARNED["name"]] = w
    tensors = {n: ("F32", a) for n, a in w.items()}
    tensors["unused.weight"] = ("F32", np.ones((3, 3)))
    _write_model(repo, LEARNED["name"], LEARNED_CONFIG, safetensors_bytes(tensors))

    # Encoding unset, F32, no biases.
    d, hq = NOPE["d"], NOPE["H"] * NOPE["hd"]
    w = {"q_proj.weight": _random_f32(rng, (hq, d), d) * 4.0,
         "k_proj.weight": _random_f32(rng, (hq, d), d) * 4.0,
         "v_proj.weight": _random_f32(rng, (hq, d), d),
         "o_proj.weight": _random_f32(rng, (d, hq), hq)}
    weights[NOPE["name"]] = w
    _write_model(repo, NOPE["name"], NOPE_CONFIG,
                 safetensors_bytes({n: ("F32", a) for n, a in w.items()}))

    # Broken models.
    good = {n: ("F32", rng.standard_normal(s)) for n, s in BROKEN_SHAPES.items()}
    transposed = dict(good, **{"k_proj.weight": ("F32", rng.standard_normal((12, 15)))})
    _write_model(repo, "broken-kshape", BROKEN_CONFIG, safetensors_bytes(transposed))
    missing = {n: t for n, t in good.items() if n != "o_proj.weight"}
    _write_model(repo, "broken-missing-o", BROKEN_CONFIG, safetensors_bytes(missing))
    # Line 4 misspells qkv_bias.
    _write_model(repo, "broken-syntax", BROKEN_CONFIG + "qkv_bais: true\n",
                 safetensors_bytes(good))
    _write_model(repo, "broken-name", 'name: "other-name"\n' + BROKEN_CONFIG,
                 safetensors_bytes(good))
    # The header claims 4096 bytes; the file has 8 + 24.
    _write_model(repo, "broken-truncated", BROKEN_CONFIG,
                 struct.pack("<Q", 4096) + b'{"q_proj.weight": {"dty')
    # A complete header, the data cut short (an interrupted download).
    full = safetensors_bytes(good)
    _write_model(repo, "broken-short-data", BROKEN_CONFIG, full[:len(full) - 100])
    # num_heads·head_dim = 64·2^58 wraps to 0 in int64: must be refused, not loaded.
    _write_model(repo, "broken-huge-heads", "d_model: 1\nnum_heads: 64\nhead_dim: 288230376151711744\n",
                 safetensors_bytes(good))
    # Offsets of 2^64 − 16 would wrap to a negative position before the data.
    header = json.dumps({"q_proj.weight": {"dtype": "F32", "shape": [2, 2],
                                           "data_offsets": [2**64 - 16, 0]}}).encode()
    _write_model(repo, "broken-offsets", "d_model: 2\nnum_heads: 1\nhead_dim: 2\n",
                 struct.pack("<Q", len(header)) + header + bytes(16))
    return weights


# ---------------------------------------------------------------------------------------------
# Self-checks of the writer and the reference
# ---------------------------------------------------------------------------------------------

class ReferenceSelfTest(unittest.TestCase):

    def test_safetensors_writer_round_trips(self):
        rng = np.random.default_rng(1)
        exact = _exact_values(rng, (3, 5))
        f32 = rng.standard_normal((2, 7)).astype(np.float32)
        data = safetensors_bytes({"a": ("BF16", exact), "b": ("F16", exact), "c": ("F32", f32)})
        (n,) = struct.unpack("<Q", data[:8])
        self.assertEqual((8 + n) % 8, 0)
        back = read_safetensors(data)
        np.testing.assert_array_equal(back["a"], exact)
        np.testing.assert_array_equal(back["b"], exact)
        np.testing.assert_array_equal(back["c"], f32)
        # BF16 keeps the upper half of the float32 bits: 1.5 is 0x3FC0.
        raw = safetensors_bytes({"x": ("BF16", np.array([1.5]))})
        self.assertTrue(raw.endswith(b"\xc0\x3f"))
        with self.assertRaises(ValueError):
            safetensors_bytes({"x": ("BF16", np.array([1.0 + 2.0 ** -10]))})

    def test_vaswani_reference(self):
        P = ref_vaswani([0, 1], 4)
        np.testing.assert_allclose(P[0], [0, 1, 0, 1], atol=0)
        np.testing.assert_allclose(P[1], [math.sin(1), math.cos(1), math.sin(0.01),
                                          math.cos(0.01)], rtol=1e-15)

    def test_layer_reference_against_loops(self):
        # One query/key head pair by explicit loops: GQA mapping, causal mask, biases.
        rng = np.random.default_rng(2)
        d, H, Hkv, hd = 6, 4, 2, 3
        w = {"q_proj.weight": rng.standard_normal((H * hd, d)),
             "k_proj.weight": rng.standard_normal((Hkv * hd, d)),
             "v_proj.weight": rng.standard_normal((Hkv * hd, d)),
             "o_proj.weight": rng.standard_normal((d, H * hd)),
             "q_proj.bias": rng.standard_normal(H * hd), "o_proj.bias": rng.standard_normal(d)}
        x = rng.standard_normal((1, 3, d))
        out, probs = ref_layer(w, dict(H=H, Hkv=Hkv, hd=hd), x, causal=True)
        heads = np.zeros((3, H * hd))
        for h in range(H):
            g = h // (H // Hkv)
            for i in range(3):
                qi = w["q_proj.weight"][h * hd:(h + 1) * hd] @ x[0, i] + \
                    w["q_proj.bias"][h * hd:(h + 1) * hd]
                s = np.array([qi @ (w["k_proj.weight"][g * hd:(g + 1) * hd] @ x[0, j])
                              / math.sqrt(hd) for j in range(i + 1)])
                p = np.exp(s - s.max())
                p /= p.sum()
                np.testing.assert_allclose(probs[0, h, i, :i + 1], p, rtol=1e-12)
                self.assertTrue(np.all(probs[0, h, i, i + 1:] == 0))
                heads[i, h * hd:(h + 1) * hd] = sum(
                    p[j] * (w["v_proj.weight"][g * hd:(g + 1) * hd] @ x[0, j])
                    for j in range(i + 1))
        np.testing.assert_allclose(out[0], heads @ w["o_proj.weight"].T + w["o_proj.bias"],
                                   rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# A server on a repository with good and broken models
# ---------------------------------------------------------------------------------------------

class RepositoryTest(RepositoryServerTestCase):

    @classmethod
    def build(cls, tmp):
        cls.weights = build_repository(tmp, np.random.default_rng(20240601))
        return tmp

    def setUp(self):
        self.rng = np.random.default_rng(7)

    def x(self, model, batch, seq, scale=1.0):
        return (self.rng.standard_normal((batch, seq, model["d"])) * scale).astype(np.float32)

    def get_model(self, name):
        return self.stub.GetModel(pb.GetModelRequest(name=name), timeout=RPC_TIMEOUT_S).config

    def run_attend(self, model, query, **kwargs):
        resp = self.attend(model=model["name"], query=f32_tensor(query), **kwargs)
        self.assertEqual(resp.output.dtype, tensor_pb2.FLOAT32)
        out = to_numpy(resp.output)
        self.assertEqual(out.shape, query.shape)
        att = None
        if kwargs.get("return_attention"):
            att = to_numpy(resp.attention)
            sk = query.shape[1] if "context" not in kwargs else kwargs["context"].shape[1]
            self.assertEqual(att.shape, (query.shape[0], model["H"], query.shape[1], sk))
        return out, att

    def check_attend(self, model, query, want_out, want_att, **kwargs):
        out, att = self.run_attend(model, query, return_attention=True, **kwargs)
        self.assertLess(rel_err(out, want_out), LAYER_REL, "output")
        self.assertLess(rel_err(att, want_att), LAYER_REL, "attention")
        np.testing.assert_allclose(att.sum(-1), 1.0, rtol=0, atol=PROB_SUM_ATOL)
        return out, att

    # 1. MHA, biases, Vaswani, F32.

    def test_mha_sinusoidal_matches_reference(self):
        m, w = MHA, self.weights[MHA["name"]]
        cfg = dict(H=m["H"], Hkv=m["Hkv"], hd=m["hd"])
        for causal in (False, True):
            for offset in (0, 7):
                with self.subTest(causal=causal, position_offset=offset):
                    q = self.x(m, 2, 6)
                    P = ref_vaswani(offset + np.arange(6), m["d"])[None]
                    want, probs = ref_layer(w, cfg, q, causal=causal, additive=P)
                    _, att = self.check_attend(m, q, want, probs, causal=causal,
                                               position_offset=offset)
                    if causal:
                        self.assertTrue(np.all(att[..., np.triu(np.ones((6, 6), bool), 1)] == 0))
        with self.subTest("position_ids [batch, seq]"):
            q = self.x(m, 2, 4)
            ids = np.array([[3, 1, 4, 1], [50, 9, 2, 6]])
            want, probs = ref_layer(w, cfg, q, additive=ref_vaswani(ids, m["d"]))
            self.check_attend(m, q, want, probs,
                              position_ids=int_tensor(ids, tensor_pb2.INT64))
        with self.subTest("cross-attention, causal bottom-right"):
            q, ctx = self.x(m, 1, 3), self.x(m, 1, 5)
            P = ref_vaswani(2 + np.arange(3), m["d"])[None]
            want, probs = ref_layer(w, cfg, q, context=ctx, causal=True, additive=P)
            self.check_attend(m, q, want, probs, context=f32_tensor(ctx), causal=True,
                              position_offset=2)
        with self.subTest("the encoding is applied (control)"):
            q = self.x(m, 1, 6)
            wrong, _ = ref_layer(w, cfg, q)  # no P added
            out, _ = self.run_attend(m, q)
            self.assertGreater(rel_err(out, wrong), 1e-3)

    # 2. GQA, BF16/F16 storage, renamed tensors.

    def test_gqa_half_precision_weights_match_reference(self):
        m, w = GQA, self.weights[GQA["name"]]
        cfg = dict(H=m["H"], Hkv=m["Hkv"], hd=m["hd"])
        for causal in (False, True):
            with self.subTest(causal=causal):
                q = self.x(m, 2, 5)
                want, probs = ref_layer(w, cfg, q, causal=causal)
                self.check_attend(m, q, want, probs, causal=causal)
        with self.subTest("no encoding: positions do not matter"):
            q = self.x(m, 1, 5)
            a, _ = self.run_attend(m, q)
            b, _ = self.run_attend(m, q, position_offset=1000)
            np.testing.assert_array_equal(a, b)

    def test_model_info_metric_names_the_stored_dtypes(self):
        import urllib.request
        with urllib.request.urlopen(self.server.metrics_url, timeout=10) as response:
            samples = at.parse_exposition(response.read().decode())
        info = {labels["model"]: labels for name, labels, value in samples
                if name == "attnserve_model_info" and value == 1}
        self.assertEqual(info[MHA["name"]]["dtype"], "F32")
        self.assertEqual(info[GQA["name"]]["dtype"], "BF16+F16")  # GQA_DTYPES mixes both
        self.assertEqual(info[GQA["name"]]["kv_heads"], str(GQA["Hkv"]))

    def test_unset_encoding_means_none(self):
        # model_config.proto: "The layer's positional encoding. ... Default (unset): none."
        m, w = NOPE, self.weights[NOPE["name"]]
        cfg = dict(H=m["H"], Hkv=m["Hkv"], hd=m["hd"])
        listed = self.get_model(m["name"])
        self.assertIn(listed.encoding.WhichOneof("kind"), (None, "none"))
        q = self.x(m, 2, 5)
        want, probs = ref_layer(w, cfg, q, causal=True)
        self.check_attend(m, q, want, probs, causal=True, position_offset=3)

    # 3. Learned absolute positions.

    def test_learned_encode_adds_table_rows(self):
        m, E = LEARNED, self.weights[LEARNED["name"]]["position_embeddings.weight"]
        x = self.x(m, 2, 5)
        for offset in (0, 11):  # 11: the last token is at position 15, the table's last row
            with self.subTest(position_offset=offset):
                out = to_numpy(self.encode(input=f32_tensor(x), model=m["name"],
                                           position_offset=offset).output)
                want = x.astype(np.float64) + E[offset:offset + 5][None]
                np.testing.assert_allclose(out, want, rtol=ENC_RTOL, atol=ENC_ATOL)
        with self.subTest("position_ids"):
            ids = np.array([15, 0, 7, 7, 3])
            out = to_numpy(self.encode(input=f32_tensor(x), model=m["name"],
                                       position_ids=int_tensor(ids, tensor_pb2.INT32)).output)
            np.testing.assert_allclose(out, x.astype(np.float64) + E[ids][None],
                                       rtol=ENC_RTOL, atol=ENC_ATOL)

    def test_learned_position_16_is_out_of_range(self):
        m = LEARNED
        x = self.x(m, 1, 5)
        self.assertRpcError(OUT_OF_RANGE, self.encode, input=f32_tensor(x), model=m["name"],
                            position_offset=12, contains=["16"])
        self.assertRpcError(OUT_OF_RANGE, self.encode, input=f32_tensor(x[:, :1]),
                            model=m["name"],
                            position_ids=int_tensor([16], tensor_pb2.INT64), contains=["16"])
        self.assertRpcError(OUT_OF_RANGE, self.attend, model=m["name"], query=f32_tensor(x),
                            position_offset=12, contains=["16"])

    def test_learned_attend_matches_reference(self):
        m, w = LEARNED, self.weights[LEARNED["name"]]
        cfg = dict(H=m["H"], Hkv=m["Hkv"], hd=m["hd"])
        q = self.x(m, 2, 4)
        want, probs = ref_layer(w, cfg, q, causal=True,
                                additive=w["position_embeddings.weight"][12:16][None])
        self.check_attend(m, q, want, probs, causal=True, position_offset=12)

    # 4. ListModels / GetModel.

    def test_list_models_lists_exactly_the_good_models(self):
        models = list(self.list_models().models)
        names = [c.name for c in models]
        self.assertEqual(names, sorted(g["name"] for g in GOOD), "sorted by name, no broken ones")
        by_name = {c.name: c for c in models}
        for g in GOOD:
            with self.subTest(model=g["name"]):
                c = by_name[g["name"]]
                self.assertEqual((c.d_model, c.num_heads, c.num_kv_heads, c.head_dim),
                                 (g["d"], g["H"], g["Hkv"], g["hd"]))
                self.assertEqual(self.get_model(g["name"]), c)
        mha, gqa, learned, nope = (by_name[g["name"]] for g in GOOD)
        self.assertEqual(mha.encoding.WhichOneof("kind"), "sinusoidal")
        self.assertIn(mha.encoding.sinusoidal.variant,
                      (pe_pb2.VASWANI, pe_pb2.SINUSOIDAL_VARIANT_UNSPECIFIED))
        self.assertTrue(mha.qkv_bias and mha.o_bias)
        self.assertEqual(mha.description, "repository test: MHA, biases, Vaswani")
        self.assertEqual(gqa.encoding.WhichOneof("kind"), "none")
        self.assertIn(nope.encoding.WhichOneof("kind"), (None, "none"))
        self.assertFalse(gqa.qkv_bias or gqa.o_bias)
        self.assertEqual(learned.encoding.WhichOneof("kind"), "learned")
        self.assertEqual(learned.max_positions, 16)
        self.assertTrue(learned.qkv_bias)
        self.assertFalse(learned.o_bias)

    # 5. Broken models.

    def failed_load(self, folder, *needles):
        """GetModel(folder) must be NOT_FOUND saying "failed to load" and containing needles
        (strings, or compiled regexes); returns the message."""
        details = self.assertRpcError(NOT_FOUND, self.get_model, folder,
                                      contains=("failed to load",))
        for needle in needles:
            if isinstance(needle, re.Pattern):
                self.assertRegex(details, needle)
            else:
                self.assertIn(needle, details)
        return details

    def file_of(self, folder, name="weights.safetensors"):
        return os.path.join(folder, name)

    def test_broken_wrong_k_proj_shape(self):
        details = self.failed_load("broken-kshape", self.file_of("broken-kshape"),
                                   "k_proj.weight")
        # Expected [num_kv_heads·head_dim, d_model] = [15, 12]; the file has [12, 15].
        self.assertRegex(details, r"expect\w*\W+\[?15\s*[,x×]\s*12\b",
                         "must give the expected shape [15, 12]")

    def test_broken_missing_o_proj(self):
        self.failed_load("broken-missing-o", self.file_of("broken-missing-o"), "o_proj.weight")

    def test_broken_config_syntax(self):
        self.failed_load("broken-syntax", self.file_of("broken-syntax", "config.pbtxt"),
                         re.compile(r"config\.pbtxt:4\b|line 4\b"))

    def test_broken_name_mismatch(self):
        self.failed_load("broken-name", "other-name", "broken-name",
                         self.file_of("broken-name", "config.pbtxt"))
        self.assertRpcError(NOT_FOUND, self.get_model, "other-name")

    def test_broken_truncated_header(self):
        self.failed_load("broken-truncated", self.file_of("broken-truncated"))

    def test_broken_dimensions_that_would_overflow(self):
        self.failed_load("broken-huge-heads", "head_dim=288230376151711744 must be in")

    def test_broken_offsets_past_2_63(self):
        self.failed_load("broken-offsets", "lie outside")

    def test_broken_truncated_data(self):
        self.failed_load("broken-short-data", self.file_of("broken-short-data"))

    def test_broken_models_fail_attend_and_encode_too(self):
        x = np.zeros((1, 2, 12), np.float32)
        for folder in BROKEN:
            with self.subTest(model=folder):
                self.assertRpcError(NOT_FOUND, self.attend, model=folder, query=f32_tensor(x),
                                    contains=["failed to load", folder])
        self.assertRpcError(NOT_FOUND, self.encode, input=f32_tensor(x), model="broken-kshape",
                            contains=["failed to load", "k_proj.weight"])

    def test_broken_models_are_logged_at_start(self):
        log = self.server.log()
        for folder in BROKEN:
            with self.subTest(model=folder):
                self.assertIn(folder, log)

    def test_unknown_model_lists_the_loaded_ones(self):
        details = self.assertRpcError(NOT_FOUND, self.get_model, "bert")
        self.assertNotIn("failed to load", details)
        for model in self.list_models().models:
            self.assertIn(model.name, details)


# ---------------------------------------------------------------------------------------------
# 6. A repository without a loadable model
# ---------------------------------------------------------------------------------------------

class NoLoadableModelTest(unittest.TestCase):

    def run_server(self, repo):
        try:
            proc = subprocess.run(
                [at.SERVER_PATH, f"--model_repository={repo}", "--grpc_address=127.0.0.1:0", "--http_address=127.0.0.1:0",
                 "--metrics_address=127.0.0.1:0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=SERVER_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            self.fail(f"server did not exit within {SERVER_EXIT_TIMEOUT_S} s; output:\n"
                      f"{e.output}")
        return proc.returncode, proc.stdout

    def test_only_broken_models_exit_1(self):
        with tempfile.TemporaryDirectory(prefix="attnserve_repo_") as repo:
            rng = np.random.default_rng(3)
            good = {n: ("F32", rng.standard_normal(s)) for n, s in BROKEN_SHAPES.items()}
            _write_model(repo, "bad-syntax", BROKEN_CONFIG + "qkv_bais: true\n",
                         safetensors_bytes(good))
            _write_model(repo, "bad-truncated", BROKEN_CONFIG,
                         struct.pack("<Q", 4096) + b"{}")
            rc, out = self.run_server(repo)
            self.assertEqual(rc, 1, out)
            self.assertIn("no model loaded", out)
            self.assertIn("bad-syntax", out)
            self.assertIn("bad-truncated", out)
            self.assertNotIn("gRPC listening", out)

    def test_empty_repository_exits_1(self):
        with tempfile.TemporaryDirectory(prefix="attnserve_repo_") as repo:
            rc, out = self.run_server(repo)
            self.assertEqual(rc, 1, out)
            self.assertIn("no model loaded", out)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
