#!/usr/bin/python3
"""End-to-end tests of the Python client package (clients/python/attnserve_client) and its CLI
against the real server, with numpy float64 references.

    /usr/bin/python3 tests/e2e/client_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import math
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import REPO_ROOT, ServerTestCase, pe_pb2  # noqa: E402

CLIENT_DIR = REPO_ROOT / "clients" / "python"
sys.path.insert(0, str(CLIENT_DIR))
import attnserve_client  # noqa: E402
from attnserve_client import AttnservError, Client, KServeClient  # noqa: E402

# The folder the fixtures imported the stubs from (<stubs>/attnserve/v1/attention_service_pb2.py).
STUBS_DIR = str(pathlib.Path(at.pb.__file__).resolve().parents[2])
REL = 1e-5
ALIBI_12 = [2 ** -1, 2 ** -2, 2 ** -3, 2 ** -4, 2 ** -5, 2 ** -6, 2 ** -7, 2 ** -8,
            2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]  # .5 … .00390625 .70711 … .08839


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def vaswani(positions, d, base=10000.0):
    """P[p, 2k] = sin(p·base^(−2k/d)), P[p, 2k+1] = cos(·), in float64."""
    p = np.asarray(positions, np.float64)[:, None]
    k = np.arange(d) // 2
    angle = p * base ** (-2.0 * k / d)
    return np.where(np.arange(d) % 2 == 0, np.sin(angle), np.cos(angle))


def sdpa_reference(q, k, v, causal, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    sq, sk = q.shape[2], k.shape[2]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("bhid,bhjd->bhij", q, k) * scale
    if causal:
        i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
        s = np.where(j <= i + sk - sq, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p, v), p


class ClientTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = Client(cls.server.grpc_address, stubs=STUBS_DIR, timeout=at.RPC_TIMEOUT_S)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        super().tearDownClass()

    def test_stubs_are_found_through_the_environment_and_the_argument(self):
        old = os.environ.get("ATTNSERVE_PYTHON_STUBS")
        os.environ["ATTNSERVE_PYTHON_STUBS"] = STUBS_DIR
        try:
            self.assertEqual(attnserve_client.stubs_dir(), STUBS_DIR)
            with Client(self.server.grpc_address) as c:
                self.assertEqual(len(c.list_models()), 7)
        finally:
            if old is None:
                del os.environ["ATTNSERVE_PYTHON_STUBS"]
            else:
                os.environ["ATTNSERVE_PYTHON_STUBS"] = old
        with self.assertRaises(attnserve_client.StubsNotFound):
            Client(self.server.grpc_address, stubs="/nonexistent/stubs")

    def test_list_models_and_get_model(self):
        models = {m["name"]: m for m in self.client.list_models()}
        self.assertEqual(sorted(models), ["demo-alibi", "demo-cope", "demo-learned",
                                          "demo-nope-gqa", "demo-rope", "demo-sinusoidal",
                                          "demo-t5"])
        rope = models["demo-rope"]
        self.assertEqual((rope["d_model"], rope["num_heads"], rope["num_kv_heads"],
                          rope["head_dim"], rope["encoding"]), (256, 8, 4, 32, "rope"))
        self.assertIn("RoPE", rope["description"])
        self.assertEqual(models["demo-nope-gqa"]["num_kv_heads"], 2)
        self.assertEqual(models["demo-nope-gqa"]["encoding"], "none")
        one = self.client.get_model("demo-alibi")
        self.assertEqual((one["name"], one["d_model"], one["num_heads"], one["encoding"]),
                         ("demo-alibi", 384, 12, "alibi"))

    def test_encode_matches_the_vaswani_formula_for_every_encoding_form(self):
        x = np.random.default_rng(1).standard_normal((2, 7, 16))   # float64: converted
        want = np.asarray(x, np.float32).astype(np.float64) * 2.0 + vaswani(np.arange(10, 17), 16)
        forms = [pe_pb2.PositionalEncoding(
                     sinusoidal=pe_pb2.SinusoidalEncoding(variant=pe_pb2.VASWANI)),
                 "sinusoidal { variant: VASWANI }",
                 {"sinusoidal": {"variant": "VASWANI"}}]
        for form in forms:
            with self.subTest(form=type(form).__name__):
                got = self.client.encode(x, encoding=form, position_offset=10, input_scale=2.0)
                self.assertEqual(got.dtype, np.float32)
                self.assertEqual(got.shape, (2, 7, 16))
                self.assertLess(rel_err(got, want), REL)
                np.testing.assert_allclose(got, want, atol=1e-5)
        ids = [0, 5, 3]
        got = self.client.encode(np.zeros((3, 8), np.float32), encoding="sinusoidal {}",
                                 position_ids=ids)
        self.assertEqual(got.shape, (3, 8))
        np.testing.assert_allclose(got, vaswani(ids, 8), atol=1e-6)

    def test_encode_bfloat16_and_model_rope(self):
        x = np.random.default_rng(2).standard_normal((1, 4, 8)).astype(np.float32)
        got = self.client.encode(x, encoding="none {}", dtype="bfloat16")
        self.assertEqual(got.dtype, np.float32)
        np.testing.assert_allclose(got, x, rtol=2 ** -8)          # bf16 rounding only
        self.assertFalse(np.array_equal(got, x))
        # RoPE through a model is a rotation: each head's norm is kept.
        y = np.random.default_rng(3).standard_normal((1, 5, 256)).astype(np.float32)
        r = self.client.encode(y, model="demo-rope", position_offset=3)
        np.testing.assert_allclose(np.linalg.norm(r.reshape(1, 5, 8, 32), axis=-1),
                                   np.linalg.norm(y.reshape(1, 5, 8, 32), axis=-1), rtol=1e-5)

    def test_attend_shape_and_causal_attention(self):
        x = np.random.default_rng(4).standard_normal((2, 6, 256))
        out, att = self.client.attend("demo-rope", x, causal=True, return_attention=True)
        self.assertEqual(out.shape, (2, 6, 256))
        self.assertEqual(att.shape, (2, 8, 6, 6))
        self.assertTrue(np.all(np.triu(att, k=1) == 0), "causal: no weight above the diagonal")
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
        self.assertGreater(np.abs(np.tril(att, k=-1)).sum(), 0)
        plain = self.client.attend("demo-rope", x, causal=True)
        np.testing.assert_allclose(plain, out, atol=1e-6)
        # Cross-attention with key_lengths and bf16 input/compute.
        ctx = np.random.default_rng(5).standard_normal((2, 9, 256))
        out, att = self.client.attend("demo-nope-gqa", x, context=ctx, key_lengths=[9, 4],
                                      return_attention=True)
        self.assertEqual(att.shape, (2, 8, 6, 9))
        self.assertTrue(np.all(att[1, :, :, 4:] == 0))
        bf = self.client.attend("demo-rope", x, causal=True, dtype="bfloat16",
                                compute_dtype="bfloat16")
        self.assertEqual(bf.shape, (2, 6, 256))
        self.assertLess(rel_err(bf, plain.astype(np.float64)), 5e-2)

    def test_responses_larger_than_grpcs_default_4_mib_arrive(self):
        # 1 × 2100 × 512 float32 = 4.3 MB each way: above gRPC's default receive limit.
        x = np.ones((1, 2100, 512), np.float32)
        out = self.client.attend("demo-sinusoidal", x)
        self.assertEqual(out.shape, x.shape)
        self.assertTrue(np.all(np.isfinite(out)))

    def test_sdpa_matches_a_numpy_softmax_reference(self):
        rng = np.random.default_rng(6)
        q = rng.standard_normal((2, 4, 5, 16)).astype(np.float32)
        k = rng.standard_normal((2, 2, 7, 16)).astype(np.float32)
        v = rng.standard_normal((2, 2, 7, 16)).astype(np.float32)
        for causal in (False, True):
            with self.subTest(causal=causal):
                out, att = self.client.sdpa(q, k, v, causal=causal, return_attention=True)
                want, want_p = sdpa_reference(q, k, v, causal)
                self.assertEqual(out.shape, (2, 4, 5, 16))
                self.assertLess(rel_err(out, want), REL)
                self.assertLess(rel_err(att, want_p), REL)
        out = self.client.sdpa(q, k, v, scale=0.3)
        self.assertLess(rel_err(out, sdpa_reference(q, k, v, False, 0.3)[0]), REL)

    def test_position_bias_alibi_slopes_for_12_heads(self):
        bias = self.client.position_bias(num_heads=12, q_len=4, kv_len=4, encoding="alibi {}")
        self.assertEqual(bias.shape, (12, 4, 4))
        np.testing.assert_allclose(-bias[:, 0, 1], ALIBI_12, rtol=1e-6)
        np.testing.assert_allclose(-bias[:, 3, 0], 3 * np.array(ALIBI_12), rtol=1e-6)
        from_model = self.client.position_bias(q_len=3, causal=True, model="demo-alibi")
        self.assertEqual(from_model.shape, (12, 3, 3))
        self.assertTrue(np.all(np.isneginf(from_model[:, 0, 1:])))
        np.testing.assert_allclose(-from_model[:, 2, 1], ALIBI_12, rtol=1e-6)

    def test_decode_session_steps_equal_causal_attend(self):
        x = np.random.default_rng(7).standard_normal((1, 8, 256)).astype(np.float32)
        whole = self.client.attend("demo-rope", x, causal=True)
        with self.client.decode_session("demo-rope") as session:
            parts, start = [], 0
            for n in (3, 1, 2, 2):
                parts.append(session.step(x[:, start:start + n]))
                start += n
                self.assertEqual(session.position, start)
        stepped = np.concatenate(parts, axis=1)
        self.assertEqual(stepped.shape, (1, 8, 256))
        self.assertLess(rel_err(stepped, whole), REL)
        np.testing.assert_allclose(stepped, whole, atol=1e-5)
        with self.assertRaises(RuntimeError):
            session.step(x[:, :1])

    def test_decode_session_error_and_close(self):
        session = self.client.decode_session("nope")
        with self.assertRaises(AttnservError) as ctx:
            session.step(np.zeros((1, 2, 256), np.float32))
        self.assertEqual(ctx.exception.code, "NOT_FOUND")
        session.close()
        s = self.client.decode_session("demo-t5")
        s.close()          # a stream that never sent a token ends cleanly

    def test_errors_are_attnserv_errors(self):
        with self.assertRaises(AttnservError) as ctx:
            self.client.get_model("nope")
        err = ctx.exception
        self.assertIsInstance(err, Exception)
        self.assertEqual(err.code, "NOT_FOUND")
        self.assertIn('model="nope"', err.details)
        self.assertIsInstance(err.rpc_error, at.grpc.RpcError)
        with self.assertRaises(AttnservError) as ctx:
            self.client.attend("nope", np.zeros((1, 2, 8), np.float32))
        self.assertEqual(ctx.exception.code, "NOT_FOUND")
        with self.assertRaises(AttnservError) as ctx:
            self.client.attend("demo-sinusoidal", np.zeros((1, 2, 700), np.float32))
        self.assertEqual(ctx.exception.code, "INVALID_ARGUMENT")
        self.assertIn("query.shape[2]=700 must equal d_model=512", ctx.exception.details)

    # --- CLI ------------------------------------------------------------------------------

    def cli(self, *args):
        env = dict(os.environ, PYTHONPATH=str(CLIENT_DIR))
        env.pop("ATTNSERVE_PYTHON_STUBS", None)
        return subprocess.run(
            ["/usr/bin/python3", "-m", "attnserve_client", "--address", self.server.grpc_address,
             "--stubs", STUBS_DIR, *args],
            cwd=str(CLIENT_DIR), env=env, capture_output=True, text=True, timeout=60)

    def test_cli_list(self):
        r = self.cli("list")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0].split()[:6],
                         ["name", "d_model", "heads", "kv_heads", "head_dim", "encoding"])
        rope = next(line for line in lines if line.startswith("demo-rope "))
        self.assertEqual(rope.split()[:6], ["demo-rope", "256", "8", "4", "32", "rope"])
        self.assertEqual(len(lines), 8)

    def test_cli_describe(self):
        r = self.cli("describe", "demo-rope")
        self.assertEqual(r.returncode, 0, r.stderr)
        for needle in ('name: "demo-rope"', "d_model: 256", "num_kv_heads: 4", "rope {",
                       "theta: 10000"):
            self.assertIn(needle, r.stdout)

    def test_cli_attend_and_encode(self):
        r = self.cli("attend", "demo-rope", "--seq", "4", "--causal")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("output shape: (1, 4, 256)", r.stdout)
        r = self.cli("encode", "--variant", "vaswani", "--positions", "5", "--d_model", "8",
                     "--position_offset", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("shape: (1, 5, 8)", r.stdout)
        row = r.stdout.split("row 0 (position 1):")[1].strip().strip("[]")
        np.testing.assert_allclose([float(v) for v in row.split(",")], vaswani([1], 8)[0],
                                   atol=1e-4)

    def test_cli_errors_exit_nonzero(self):
        r = self.cli("describe", "nope")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)
        self.assertIn('model="nope" is not loaded', r.stderr)
        self.assertEqual(r.stdout, "")
        r = self.cli("--stubs", "/nonexistent/stubs", "list")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no generated Python stubs", r.stderr)

    def test_cli_plot_attention_draws_what_attend_returns(self):
        """`plot attention` draws Attend's probabilities: the arrays it hands to imshow (saved
        with --save_npy) are the requested heads of the same request's map, in the order asked,
        rows summing to 1, exact zeros behind the bottom-right aligned causal mask."""
        cases = [  # model, seq, kv_len (None: self-attention), causal, heads (None: all), extra
            ("demo-rope", 7, None, True, None, ["--seed", "3"]),
            ("demo-nope-gqa", 5, 9, True, [6, 1, 2], ["--seed", "4", "--heads", "6,1-2"]),
            ("demo-sinusoidal", 4, None, False, [3, 0],
             ["--cross", "--position_offset", "3", "--heads", "3,0", "--seed", "5", "--dpi", "72"]),
        ]
        for model, seq, kv_len, causal, heads, extra in cases:
            with self.subTest(model=model), tempfile.TemporaryDirectory() as tmp:
                png, npy = os.path.join(tmp, "a.png"), os.path.join(tmp, "a.npy")
                args = ["plot", "attention", "--model", model, "--seq", str(seq), "--out", png,
                        "--save_npy", npy, *extra]
                if kv_len is not None:
                    args += ["--kv_len", str(kv_len)]
                if causal:
                    args.append("--causal")
                r = self.cli(*args)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(f"wrote {png}", r.stdout)
                self.assertNotIn("plot_encodings: warning", r.stderr,
                                 "the plot warned about the server's numbers")

                # The request, rebuilt independently: default_rng(seed) draws the query, then
                # the context (cross-attention only), standard normal, sent as float32.
                info = self.client.get_model(model)
                heads = heads if heads is not None else list(range(info["num_heads"]))
                cross = kv_len is not None or "--cross" in extra
                kv = kv_len if kv_len is not None else seq
                rng = np.random.default_rng(int(extra[extra.index("--seed") + 1]))
                x = rng.standard_normal((1, seq, info["d_model"])).astype(np.float32)
                ctx = rng.standard_normal((1, kv, info["d_model"])).astype(np.float32) \
                    if cross else None
                offset = int(extra[extra.index("--position_offset") + 1]) \
                    if "--position_offset" in extra else 0
                _, want = self.client.attend(model, x, context=ctx, causal=causal,
                                             position_offset=offset, return_attention=True)

                drawn = np.load(npy)
                self.assertEqual(drawn.shape, (len(heads), seq, kv))
                # Same request, but a separate one: the server may batch it with others, which
                # docs/attention.md ("Tolerances") allows to move probabilities by up to 1e-6.
                np.testing.assert_allclose(drawn, want[0, heads], rtol=0, atol=1e-6)
                np.testing.assert_allclose(drawn.sum(-1), 1.0, atol=1e-5)
                hidden = np.arange(kv)[None, :] > np.arange(seq)[:, None] + kv - seq
                if causal:
                    self.assertTrue(np.all(drawn[:, hidden] == 0), "weight behind the mask")
                    self.assertTrue(np.all(drawn[:, ~hidden] > 0), "mask misaligned")
                else:
                    self.assertTrue(np.all(drawn > 0))
                # The heads differ, so drawing them in another order could not pass unnoticed.
                for a in range(len(heads)):
                    for b in range(a + 1, len(heads)):
                        self.assertGreater(np.abs(drawn[a] - drawn[b]).max(), 1e-3)

                with open(png, "rb") as f:
                    head = f.read(24)
                self.assertEqual(head[:8], b"\x89PNG\r\n\x1a\n")
                width, height = (int.from_bytes(head[16:20], "big"),
                                 int.from_bytes(head[20:24], "big"))
                # The grid's layout, restated here rather than taken from the plotting code: about
                # sqrt(heads) columns (--cols' default) of 2.9 x 2.7 inch panels, plus 1.5 inches
                # of width and 1.4 of height around them; at least 6.5 inches wide.
                cols = math.ceil(math.sqrt(len(heads)))
                rows = math.ceil(len(heads) / cols)
                dpi = int(extra[extra.index("--dpi") + 1]) if "--dpi" in extra else 100
                self.assertAlmostEqual(width, max(2.9 * cols + 1.5, 6.5) * dpi, delta=1)
                self.assertAlmostEqual(height, (2.7 * rows + 1.4) * dpi, delta=1)

    def test_cli_plot_attention_errors(self):
        r = self.cli("plot", "attention", "--model", "demo-rope", "--heads", "8",
                     "--out", os.devnull)
        self.assertEqual(r.returncode, 1)
        self.assertIn("head 8 does not exist; model 'demo-rope' has heads 0…7", r.stderr)
        r = self.cli("plot", "attention", "--model", "nope", "--out", os.devnull)
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)


class KServeClientTest(ServerTestCase):
    """KServeClient over both doors against Client.attend/position_bias on the same server."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client = Client(cls.server.grpc_address, stubs=STUBS_DIR, timeout=at.RPC_TIMEOUT_S)
        cls.doors = {
            "grpc": KServeClient(cls.server.grpc_address, "grpc", stubs=STUBS_DIR),
            "http": KServeClient(cls.server.http_url.removeprefix("http://"), "http"),
        }

    @classmethod
    def tearDownClass(cls):
        for door in cls.doors.values():
            door.close()
        cls.client.close()
        super().tearDownClass()

    def test_infer_equals_attend_on_both_doors(self):
        x = np.random.default_rng(3).standard_normal((2, 4, 256)).astype(np.float32)
        expected, attention = self.client.attend("demo-rope", x, causal=True, key_lengths=[4, 2],
                                                 return_attention=True)
        for protocol, door in self.doors.items():
            with self.subTest(protocol=protocol):
                self.assertTrue(door.live() and door.ready() and door.model_ready("demo-rope"))
                self.assertFalse(door.model_ready("no-such-model"))
                self.assertEqual(door.server_metadata()["name"], "attnserve")
                metadata = door.model_metadata("demo-rope")
                self.assertEqual(metadata["inputs"][0]["shape"], [-1, -1, 256])
                out = door.infer("demo-rope", {"input": x, "key_lengths": np.array([4, 2])},
                                 parameters={"causal": True, "return_attention": True})
                np.testing.assert_array_equal(out["output"], expected)
                np.testing.assert_array_equal(out["attention"], attention)
                bf16 = door.infer("demo-rope", {"input": x}, datatype="BF16")["output"]
                self.assertEqual(bf16.dtype, np.float32)
                np.testing.assert_array_equal(
                    bf16, self.client.attend("demo-rope", x, dtype="bfloat16"))
                bias = door.infer("attnserve.position_bias", {}, parameters={
                    "encoding": '{"alibi": {}}', "num_heads": 4, "q_len": 3})["bias"]
                np.testing.assert_array_equal(
                    bias, self.client.position_bias(num_heads=4, q_len=3,
                                                    encoding={"alibi": {}}))
                with self.assertRaises(AttnservError) as failed:
                    door.infer("demo-rope", {"input": x[..., :8]})
                self.assertEqual(failed.exception.code, "INVALID_ARGUMENT")
                self.assertIn("must equal d_model=256", failed.exception.details)
                with self.assertRaises(AttnservError) as failed:
                    door.model_metadata("no-such-model")
                self.assertEqual(failed.exception.code, "NOT_FOUND")


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
