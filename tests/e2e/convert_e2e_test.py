#!/usr/bin/python3
"""End-to-end test of tools/hf_to_attnserve.py (Hugging Face checkpoint → attnserve model folder).

    /usr/bin/python3 tests/e2e/convert_e2e_test.py --server build/server/attnserve \
        --stubs build/python [-v]

Arguments and fixtures as in e2e_test.py (see attnserve_testing.py). setUpClass writes small
synthetic Hugging Face checkpoints (config.json + model.safetensors, 2 layers, random weights,
some tensors stored as F16 / BF16) for LLaMA (GQA), Qwen2 (q/k/v biases, partial rotary, linear
rope_scaling), GPT-2 (Conv1D weights, learned wpe) and BERT (learned position embeddings), runs
the tool as a subprocess on layer 1 of each into a temporary model repository, then starts the
real server on it. Attend results are compared with float64 numpy references written from the
ORIGINAL checkpoint tensors in each family's own convention (GPT-2: x·W + b on the fused c_attn;
BERT / LLaMA: nn.Linear), so a wrong split, transpose, layer or encoding in the tool shows up.
The tool's refusals (unknown model_type, a missing tensor) and its rope_scaling mapping are
checked without the server.

Tolerance: ‖got − ref‖ / ‖ref‖ < LAYER_REL (float32 results against float64 references).
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from google.protobuf import text_format  # noqa: E402

from attnserve_testing import (  # noqa: E402
    mc_pb2, RepositoryServerTestCase, f32_tensor, to_numpy)

TOOL = str(at.REPO_ROOT / "tools" / "hf_to_attnserve.py")
LAYER_REL = 1e-5
LAYER = 1
SEQ = 7


# ---------------------------------------------------------------------------------------------
# Synthetic checkpoints
# ---------------------------------------------------------------------------------------------

def _stored(dtype, a):
    """The float64 values a tensor of `dtype` holds once stored (F32, F16 or BF16 rounding)."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype(np.float64)
    if dtype == "F16":
        return a.astype("<f2").astype(np.float64)
    if dtype == "BF16":
        return at.bf16_to_f32(at.bf16_round(a)).astype(np.float64)
    raise ValueError(dtype)


def write_checkpoint(folder, config, tensors, drop=()):
    """tensors: {name: (dtype, array)}; writes config.json + model.safetensors and returns
    {name: float64 stored values}. Names in `drop` are left out of the file."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    values = {name: _stored(dtype, a) for name, (dtype, a) in tensors.items()}
    # The stored values are exactly representable in their dtype, as the writer requires.
    kept = {name: (dtype, values[name].astype(np.float32))
            for name, (dtype, _) in tensors.items() if name not in drop}
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(at.safetensors_bytes(kept))
    return values


def _u(rng, shape, fan_in, gain=1.0):
    return rng.uniform(-1, 1, size=shape) * gain / math.sqrt(fan_in)


LLAMA = dict(name="llama-gqa", d=24, H=4, Hkv=2, hd=8, theta=10000.0)
QWEN = dict(name="qwen2-partial", d=32, H=4, Hkv=2, hd=8, theta=5000.0, rotary_dim=4, factor=2.0)
GPT2 = dict(name="gpt2-small", d=16, H=4, Hkv=4, hd=4, n_pos=32)
BERT = dict(name="bert-tiny", d=32, H=4, Hkv=4, hd=8, n_pos=32)
MODELS = (LLAMA, QWEN, GPT2, BERT)


def llama_tensors(rng, m, biases=False):
    d, hq, hkv = m["d"], m["H"] * m["hd"], m["Hkv"] * m["hd"]
    t = {"model.embed_tokens.weight": ("F32", rng.standard_normal((11, d)))}
    for layer in range(2):
        p = f"model.layers.{layer}.self_attn."
        t[p + "q_proj.weight"] = ("F16", _u(rng, (hq, d), d, 4.0))
        t[p + "k_proj.weight"] = ("F16", _u(rng, (hkv, d), d, 4.0))
        t[p + "v_proj.weight"] = ("BF16", _u(rng, (hkv, d), d))
        t[p + "o_proj.weight"] = ("F32", _u(rng, (d, hq), hq))
        if biases:
            t[p + "q_proj.bias"] = ("F32", _u(rng, (hq,), d))
            t[p + "k_proj.bias"] = ("F16", _u(rng, (hkv,), d))
            t[p + "v_proj.bias"] = ("F32", _u(rng, (hkv,), d))
    return t


def llama_config(m, model_type="llama", **extra):
    cfg = {"model_type": model_type, "architectures": ["LlamaForCausalLM"],
           "hidden_size": m["d"], "num_attention_heads": m["H"], "num_key_value_heads": m["Hkv"],
           "num_hidden_layers": 2, "rope_theta": m["theta"], "max_position_embeddings": 64,
           "torch_dtype": "float16"}
    if m["hd"] != m["d"] // m["H"]:
        cfg["head_dim"] = m["hd"]
    cfg.update(extra)
    return cfg


def gpt2_tensors(rng, m):
    d = m["d"]
    t = {"wte.weight": ("F32", rng.standard_normal((11, d))),
         "wpe.weight": ("BF16", rng.standard_normal((m["n_pos"], d)))}
    for layer in range(2):
        w = _u(rng, (d, 3 * d), d)
        w[:, :2 * d] *= 4.0  # sharp attention: q and k columns
        t[f"h.{layer}.attn.c_attn.weight"] = ("F16", w)
        t[f"h.{layer}.attn.c_attn.bias"] = ("F32", _u(rng, (3 * d,), d))
        t[f"h.{layer}.attn.c_proj.weight"] = ("F32", _u(rng, (d, d), d))
        t[f"h.{layer}.attn.c_proj.bias"] = ("F32", _u(rng, (d,), d))
        t[f"h.{layer}.mlp.c_fc.weight"] = ("F32", _u(rng, (d, 4 * d), d))
    return t


def bert_tensors(rng, m):
    d = m["d"]
    t = {"bert.embeddings.word_embeddings.weight": ("F32", rng.standard_normal((11, d))),
         "bert.embeddings.position_embeddings.weight":
             ("F16", rng.standard_normal((m["n_pos"], d)))}
    for layer in range(2):
        p = f"bert.encoder.layer.{layer}.attention."
        for name, dtype, gain in (("self.query", "F16", 4.0), ("self.key", "F32", 4.0),
                                  ("self.value", "F32", 1.0), ("output.dense", "BF16", 1.0)):
            t[p + name + ".weight"] = (dtype, _u(rng, (d, d), d, gain))
            t[p + name + ".bias"] = ("F32", _u(rng, (d,), d))
    return t


# ---------------------------------------------------------------------------------------------
# References, each in its family's own convention, from the checkpoint's stored values
# ---------------------------------------------------------------------------------------------

def attention(q, k, v, causal):
    """q [S, H, hd], k/v [S, Hkv, hd] → merged heads [S, H·hd]; query head h uses kv head
    h // (H / Hkv) (Hugging Face repeat_kv)."""
    S, H, hd = q.shape
    rep = H // k.shape[1]
    out = np.zeros((S, H, hd))
    for h in range(H):
        s = q[:, h] @ k[:, h // rep].T / math.sqrt(hd)
        if causal:
            s = np.where(np.tril(np.ones((S, S), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, h] = p @ v[:, h // rep]
    return out.reshape(S, H * hd)


def rope_half_split(x, pos, theta, r, factor=1.0):
    """x [S, heads, hd]: HF rotate_half on the first r dims, inv_k = theta^(−2k/r) / factor."""
    inv = theta ** (-np.arange(0, r, 2, dtype=np.float64) / r) / factor
    ang = np.asarray(pos, np.float64)[:, None] * inv[None]          # [S, r/2]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    xr, rest = x[..., :r], x[..., r:]
    rotated = np.concatenate([-xr[..., r // 2:], xr[..., :r // 2]], -1)
    return np.concatenate([xr * cos + rotated * sin, rest], -1)


def ref_llama(T, m, x, causal, offset=0, layer=LAYER):
    p = f"model.layers.{layer}.self_attn."
    S, H, Hkv, hd = x.shape[0], m["H"], m["Hkv"], m["hd"]

    def proj(name):
        y = x @ T[p + name + ".weight"].T
        return y + T[p + name + ".bias"] if p + name + ".bias" in T else y

    q = proj("q_proj").reshape(S, H, hd)
    k = proj("k_proj").reshape(S, Hkv, hd)
    v = proj("v_proj").reshape(S, Hkv, hd)
    pos = offset + np.arange(S)
    r = m.get("rotary_dim", hd)
    q = rope_half_split(q, pos, m["theta"], r, m.get("factor", 1.0))
    k = rope_half_split(k, pos, m["theta"], r, m.get("factor", 1.0))
    return attention(q, k, v, causal) @ T[p + "o_proj.weight"].T


def ref_gpt2(T, m, x, causal, offset=0, layer=LAYER):
    S, H, hd, d = x.shape[0], m["H"], m["hd"], m["d"]
    h = x + T["wpe.weight"][offset:offset + S]
    p = f"h.{layer}.attn."
    qkv = h @ T[p + "c_attn.weight"] + T[p + "c_attn.bias"]       # Conv1D: x·W + b
    q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(S, H, hd) for i in range(3))
    return attention(q, k, v, causal) @ T[p + "c_proj.weight"] + T[p + "c_proj.bias"]


def ref_bert(T, m, x, causal, offset=0, layer=LAYER):
    S, H, hd = x.shape[0], m["H"], m["hd"]
    h = x + T["bert.embeddings.position_embeddings.weight"][offset:offset + S]
    p = f"bert.encoder.layer.{layer}.attention."

    def linear(a, name):
        return a @ T[p + name + ".weight"].T + T[p + name + ".bias"]

    q, k, v = (linear(h, n).reshape(S, H, hd) for n in ("self.query", "self.key", "self.value"))
    return linear(attention(q, k, v, causal), "output.dense")


REFS = {LLAMA["name"]: ref_llama, QWEN["name"]: ref_llama, GPT2["name"]: ref_gpt2,
        BERT["name"]: ref_bert}


def rel_err(got, want):
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))


def run_tool(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)], capture_output=True,
                          text=True, timeout=60)


class ReferenceSelfTest(unittest.TestCase):

    def test_rope_reference_keeps_norms_and_relative_scores(self):
        rng = np.random.default_rng(3)
        q, k = rng.standard_normal((1, 1, 8)), rng.standard_normal((1, 1, 8))
        a = rope_half_split(q, [5], 100.0, 8)[0, 0] @ rope_half_split(k, [2], 100.0, 8)[0, 0]
        b = rope_half_split(q, [13], 100.0, 8)[0, 0] @ rope_half_split(k, [10], 100.0, 8)[0, 0]
        self.assertAlmostEqual(a, b, places=12)
        np.testing.assert_allclose(np.linalg.norm(rope_half_split(q, [7], 100.0, 4)),
                                   np.linalg.norm(q), rtol=1e-13)
        np.testing.assert_array_equal(rope_half_split(q, [7], 100.0, 4)[..., 4:], q[..., 4:])


# ---------------------------------------------------------------------------------------------
# Converted models on a server
# ---------------------------------------------------------------------------------------------

class ConvertServeTest(RepositoryServerTestCase):

    @classmethod
    def build(cls, tmp):
        cls.checkpoints, cls.tool_output = {}, {}
        rng = np.random.default_rng(20240615)
        specs = {
            LLAMA["name"]: (llama_config(LLAMA), llama_tensors(rng, LLAMA)),
            QWEN["name"]: (llama_config(QWEN, "qwen2", partial_rotary_factor=0.5,
                                        rope_scaling={"type": "linear", "factor": 2.0}),
                           llama_tensors(rng, QWEN, biases=True)),
            GPT2["name"]: ({"model_type": "gpt2", "n_embd": GPT2["d"], "n_head": GPT2["H"],
                            "n_layer": 2, "n_positions": GPT2["n_pos"]},
                           gpt2_tensors(rng, GPT2)),
            BERT["name"]: ({"model_type": "bert", "hidden_size": BERT["d"],
                            "num_attention_heads": BERT["H"], "num_hidden_layers": 2,
                            "max_position_embeddings": BERT["n_pos"],
                            "position_embedding_type": "absolute"},
                           bert_tensors(rng, BERT)),
        }
        repo = os.path.join(tmp, "repo")
        for name, (cfg, tensors) in specs.items():
            ck = os.path.join(tmp, "hf", name)
            cls.checkpoints[name] = write_checkpoint(ck, cfg, tensors)
            res = run_tool(ck, os.path.join(repo, name), "--layer", LAYER)
            if res.returncode != 0:
                raise AssertionError(f"tool failed on {name}: {res.stderr}")
            cls.tool_output[name] = res.stdout
        return repo

    def test_tool_prints_what_it_wrote(self):
        out = self.tool_output[GPT2["name"]]
        self.assertIn("config.pbtxt", out)
        self.assertIn("weights.safetensors", out)
        self.assertIn("q_proj.weight [16, 16]", out)
        self.assertIn("position_embeddings.weight [32, 16]", out)

    def test_list_models_shows_the_converted_layers(self):
        by_name = {c.name: c for c in self.list_models().models}
        self.assertEqual(sorted(by_name), sorted(m["name"] for m in MODELS))
        for m in MODELS:
            with self.subTest(model=m["name"]):
                c = by_name[m["name"]]
                self.assertEqual((c.d_model, c.num_heads, c.num_kv_heads, c.head_dim),
                                 (m["d"], m["H"], m["Hkv"], m["hd"]))
        llama, qwen = by_name[LLAMA["name"]], by_name[QWEN["name"]]
        self.assertEqual(llama.encoding.WhichOneof("kind"), "rope")
        self.assertEqual(llama.encoding.rope.theta, 10000.0)
        self.assertIn(llama.encoding.rope.rotary_dim, (0, LLAMA["hd"]))
        self.assertFalse(llama.qkv_bias or llama.o_bias)
        self.assertEqual(qwen.encoding.rope.rotary_dim, 4)
        self.assertEqual(qwen.encoding.rope.WhichOneof("scaling"), "linear")
        self.assertEqual(qwen.encoding.rope.linear.factor, 2.0)
        self.assertTrue(qwen.qkv_bias)
        self.assertFalse(qwen.o_bias)
        for m in (GPT2, BERT):
            c = by_name[m["name"]]
            self.assertEqual(c.encoding.WhichOneof("kind"), "learned")
            self.assertEqual(c.max_positions, m["n_pos"])
            self.assertTrue(c.qkv_bias and c.o_bias)

    def test_attend_matches_the_original_checkpoint(self):
        rng = np.random.default_rng(11)
        for m in MODELS:
            for causal in (False, True):
                for offset in (0, 5):
                    with self.subTest(model=m["name"], causal=causal, position_offset=offset):
                        x = rng.standard_normal((1, SEQ, m["d"])).astype(np.float32)
                        resp = self.attend(model=m["name"], query=f32_tensor(x), causal=causal,
                                           position_offset=offset)
                        got = to_numpy(resp.output)
                        self.assertEqual(got.shape, x.shape)
                        want = REFS[m["name"]](self.checkpoints[m["name"]], m,
                                               x[0].astype(np.float64), causal, offset)
                        self.assertLess(rel_err(got[0], want), LAYER_REL)

    def test_layer_and_positions_matter(self):
        # Controls: layer 0's weights, or the layer without its positional encoding (learned:
        # offset 0 instead of 3; RoPE, which is relative: no rotation at all), give clearly
        # different outputs.
        rng = np.random.default_rng(12)
        for m in MODELS:
            with self.subTest(model=m["name"]):
                x = rng.standard_normal((1, SEQ, m["d"])).astype(np.float32)
                got = to_numpy(self.attend(model=m["name"], query=f32_tensor(x),
                                           position_offset=3).output)[0]
                ref = REFS[m["name"]]
                T = self.checkpoints[m["name"]]
                if ref is ref_llama:
                    no_pos = ref(T, dict(m, factor=np.inf), x[0].astype(np.float64), False, 3)
                else:
                    no_pos = ref(T, m, x[0].astype(np.float64), False, 0)
                self.assertGreater(rel_err(got, no_pos), 1e-3)
                wrong_layer = ref(T, m, x[0].astype(np.float64), False, 3, layer=0)
                self.assertGreater(rel_err(got, wrong_layer), 1e-2)


# ---------------------------------------------------------------------------------------------
# The tool alone: refusals and config mapping
# ---------------------------------------------------------------------------------------------

class ToolTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="attnserve_convert_tool_")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.rng = np.random.default_rng(5)

    def convert_config(self, cfg):
        ck = os.path.join(self.tmp, "ck")
        write_checkpoint(ck, cfg, llama_tensors(self.rng, LLAMA))
        out = os.path.join(self.tmp, "out", "m")
        res = run_tool(ck, out, "--layer", 1)
        self.assertEqual(res.returncode, 0, res.stderr)
        with open(os.path.join(out, "config.pbtxt")) as f:
            return text_format.Parse(f.read(), mc_pb2.ModelConfig())

    def test_unknown_model_type_is_refused(self):
        ck = os.path.join(self.tmp, "ck")
        write_checkpoint(ck, dict(llama_config(LLAMA), model_type="mamba"),
                         llama_tensors(self.rng, LLAMA))
        out = os.path.join(self.tmp, "out", "m")
        res = run_tool(ck, out, "--layer", 1)
        self.assertEqual(res.returncode, 1)
        self.assertIn("model_type 'mamba'", res.stderr)
        self.assertIn("not supported", res.stderr)
        self.assertFalse(os.path.exists(out))

    def test_missing_layer_tensor_is_refused(self):
        for family, cfg, tensors, missing in (
                ("llama", llama_config(LLAMA), llama_tensors(self.rng, LLAMA),
                 "model.layers.1.self_attn.v_proj.weight"),
                ("gpt2", {"model_type": "gpt2", "n_embd": 16, "n_head": 4, "n_layer": 2,
                          "n_positions": 32}, gpt2_tensors(self.rng, GPT2),
                 "h.1.attn.c_proj.bias"),
                ("bert", {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4,
                          "num_hidden_layers": 2, "max_position_embeddings": 32},
                 bert_tensors(self.rng, BERT), "bert.encoder.layer.1.attention.self.key.weight")):
            with self.subTest(family=family):
                ck = os.path.join(self.tmp, family)
                write_checkpoint(ck, cfg, tensors, drop=(missing,))
                out = os.path.join(self.tmp, "out", family)
                res = run_tool(ck, out, "--layer", 1)
                self.assertEqual(res.returncode, 1, res.stdout)
                self.assertIn(f"'{missing}' not found", res.stderr)
                self.assertFalse(os.path.exists(out))
                # Layer 0 is complete: converting it works.
                self.assertEqual(run_tool(ck, out, "--layer", 0).returncode, 0)

    def test_layer_out_of_range_is_refused(self):
        ck = os.path.join(self.tmp, "ck")
        write_checkpoint(ck, llama_config(LLAMA), llama_tensors(self.rng, LLAMA))
        res = run_tool(ck, os.path.join(self.tmp, "m"), "--layer", 2)
        self.assertEqual(res.returncode, 1)
        self.assertIn("out of range", res.stderr)

    def test_rope_scaling_mapping(self):
        c = self.convert_config(llama_config(LLAMA, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}))
        self.assertEqual(c.name, "m")
        self.assertEqual(c.encoding.rope.theta, 500000.0)
        s = c.encoding.rope.llama3
        self.assertEqual((s.factor, s.low_freq_factor, s.high_freq_factor,
                          s.original_max_positions), (8.0, 1.0, 4.0, 8192))
        c = self.convert_config(llama_config(LLAMA, rope_scaling={
            "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
            "beta_fast": 16, "beta_slow": 2}))
        s = c.encoding.rope.yarn
        self.assertEqual((s.factor, s.original_max_positions, s.beta_fast, s.beta_slow),
                         (4.0, 4096, 16.0, 2.0))
        c = self.convert_config(llama_config(LLAMA, rope_scaling={"type": "dynamic",
                                                                  "factor": 2.0}))
        s = c.encoding.rope.dynamic_ntk
        self.assertEqual((s.factor, s.original_max_positions), (2.0, 64))
        c = self.convert_config({k: v for k, v in llama_config(LLAMA).items()
                                 if k != "rope_theta"})
        self.assertEqual(c.encoding.rope.theta, 10000.0)
        self.assertEqual(c.encoding.rope.WhichOneof("scaling"), None)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
