#!/usr/bin/python3
"""End-to-end tests of reloading the model repository while serving (SIGHUP, --model_poll_seconds).

    /usr/bin/python3 tests/e2e/model_reload_e2e_test.py --server build/server/attnserve \
        --stubs build/python [-v]

Each test starts its own server on a temporary repository of small models (encoding none, no
biases, F32 weights), changes the files, sends SIGHUP (or waits for the poll) and waits for
`attnserve_model_reloads_total` to count the reload. Attend results are compared with an
independent float64 numpy reference of the layer (softmax(q·kᵀ/√hd)·v, Hugging Face weight layout
y = x·Wᵀ): ‖got − ref‖ / ‖ref‖ < LAYER_REL. Promises checked:
  - changed weights are served after the reload, new folders are served, removed ones are not;
  - a broken new config or weights file leaves the previous version serving (logged, counted in
    attnserve_model_load_failures_total once per version of the files, attnserve_model_stale 1);
  - an unreadable repository changes nothing;
  - a request running during the reload, and an open Decode stream, finish on the old weights;
  - --model_poll_seconds picks up a new folder without a signal, and refuses nan, inf, negative
    and sub-0.1 s intervals; a symlink loop in the repository is skipped;
  - SIGHUP without a repository leaves the demo models serving.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

# Parses --server/--stubs and imports the stubs, so the names below are bound.
UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (  # noqa: E402
    RPC_TIMEOUT_S, SERVER_PATH, STARTUP_DEADLINE_S, grpc, pb, pb_grpc, ServerProcess, f32_tensor,
    to_numpy, safetensors_bytes, metric_value)

LAYER_REL = 1e-5
WAIT_S = 30
# Model shapes: d_model 32, 4 heads of 8 (small: fast to load and to check).
D, H, HD = 32, 4, 8
CONFIG = 'd_model: 32\nnum_heads: 4\nmax_positions: 64\n'
# The slow model of the in-flight test: d_model 256, 4 heads of 64; 8192 tokens take ~1 s here.
SLOW_D, SLOW_H, SLOW_HD, SLOW_SEQ = 256, 4, 64, 8192


def random_weights(seed, d=D, width=H * HD):
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(d)
    shapes = {"q_proj.weight": (width, d), "k_proj.weight": (width, d),
              "v_proj.weight": (width, d), "o_proj.weight": (d, width)}
    w = {n: rng.uniform(-bound, bound, s).astype(np.float32).astype(np.float64)
         for n, s in shapes.items()}
    w["q_proj.weight"] *= 4.0  # far from uniform attention, so the weights matter
    return w


def ref_layer(w, x, heads, head_dim, causal=False):
    """float64 reference: x [B, S, d] → [B, S, d]."""
    b, s, _ = x.shape

    def split(a):
        return a.reshape(b, s, heads, head_dim).transpose(0, 2, 1, 3)

    q = split(x @ w["q_proj.weight"].T)
    k = split(x @ w["k_proj.weight"].T)
    v = split(x @ w["v_proj.weight"].T)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
    if causal:
        scores = np.where(np.tril(np.ones((s, s), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(b, s, heads * head_dim)
    return o @ w["o_proj.weight"].T


def rel_err(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def write_atomically(path, data):
    """Writes `data` to `path` through a rename, as a deployment would (a new inode)."""
    tmp = path + ".tmp"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.replace(tmp, path)


def write_model(repo, name, weights, config=CONFIG):
    folder = os.path.join(repo, name)
    os.makedirs(folder, exist_ok=True)
    write_atomically(os.path.join(folder, "config.pbtxt"), config)
    write_atomically(os.path.join(folder, "weights.safetensors"),
                     safetensors_bytes({n: ("F32", a) for n, a in weights.items()}))


class ReloadTestCase(unittest.TestCase):
    """A fresh server per test on a repository with models alpha (seed 1) and beta (seed 2)."""

    EXTRA_ARGS = ()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="attnserve_reload_")
        self.repo = os.path.join(self.tmp, "repo")
        os.makedirs(self.repo)
        self.weights = {"alpha": random_weights(1), "beta": random_weights(2)}
        for name, w in self.weights.items():
            write_model(self.repo, name, w)
        self.server = ServerProcess(SERVER_PATH, (f"--model_repository={self.repo}",
                                                  *self.EXTRA_ARGS)).start()
        self.channel = grpc.insecure_channel(self.server.grpc_address, options=at.BIG_MESSAGES)
        grpc.channel_ready_future(self.channel).result(timeout=STARTUP_DEADLINE_S)
        self.stub = pb_grpc.AttentionServiceStub(self.channel)
        self.x = np.random.default_rng(7).standard_normal((2, 9, D)).astype(np.float32)

    def tearDown(self):
        self.channel.close()
        rc = self.server.stop(signal.SIGTERM)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(rc, 0, f"server exit code after SIGTERM; log:\n{self.server.log()}")

    # --- helpers ---------------------------------------------------------------------------

    def metric(self, name, labels=None):
        """Sum of the samples of `name` whose labels include `labels`; None if there is none."""
        return metric_value(self.server.metrics_url, name, labels, default=None)

    def reloads(self):
        return sum(self.metric("attnserve_model_reloads_total", {"result": r}) or 0
                   for r in ("ok", "failed"))

    def reload(self):
        """SIGHUP, then waits until the server has counted the reload."""
        before = self.reloads()
        self.server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_S
        while self.reloads() <= before:
            self.assertLess(time.monotonic(), deadline,
                            f"no reload counted within {WAIT_S} s; log:\n{self.server.log()}")
            time.sleep(0.02)

    def attend(self, model, x=None, causal=False):
        x = self.x if x is None else x
        response = self.stub.Attend(pb.AttendRequest(model=model, query=f32_tensor(x),
                                                     causal=causal), timeout=RPC_TIMEOUT_S)
        return to_numpy(response.output)

    def assertServes(self, model, weights):
        err = rel_err(self.attend(model), ref_layer(weights, self.x.astype(np.float64), H, HD))
        self.assertLess(err, LAYER_REL, f"{model} does not serve the expected weights")

    def assertNotFound(self, model):
        with self.assertRaises(grpc.RpcError) as ctx:
            self.attend(model)
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND, ctx.exception.details())

    def served_names(self):
        return sorted(m.name for m in self.stub.ListModels(pb.ListModelsRequest(),
                                                           timeout=RPC_TIMEOUT_S).models)


class SighupReloadTest(ReloadTestCase):

    def test_changed_weights_are_served_after_the_reload(self):
        self.assertServes("alpha", self.weights["alpha"])
        new = random_weights(11)
        write_model(self.repo, "alpha", new)
        self.reload()
        self.assertServes("alpha", new)
        self.assertServes("beta", self.weights["beta"])
        self.assertRegex(self.server.log(), r"models reloaded: added \[\], updated \[alpha\], "
                                            r"removed \[\], unchanged \[beta\]")
        self.assertEqual(self.metric("attnserve_model_reloads_total", {"result": "ok"}), 1)

    def test_new_folders_are_served_and_removed_ones_are_not(self):
        gamma = random_weights(3)
        write_model(self.repo, "gamma", gamma)
        shutil.rmtree(os.path.join(self.repo, "beta"))
        self.reload()
        self.assertEqual(self.served_names(), ["alpha", "gamma"])
        self.assertServes("gamma", gamma)
        self.assertServes("alpha", self.weights["alpha"])
        self.assertNotFound("beta")
        self.assertEqual(self.metric("attnserve_model_info", {"model": "gamma"}), 1)
        self.assertIsNone(self.metric("attnserve_model_info", {"model": "beta"}))

    def test_broken_config_keeps_the_previous_version_serving(self):
        config = os.path.join(self.repo, "alpha", "config.pbtxt")
        write_atomically(config, "d_model: 32\nnum_heads: four\n")
        self.reload()
        self.assertServes("alpha", self.weights["alpha"])
        self.assertEqual(self.served_names(), ["alpha", "beta"])
        self.assertRegex(self.server.log(),
                         r"model alpha failed to load; its previous version goes on serving: "
                         r".*alpha/config\.pbtxt:2")
        self.assertEqual(self.metric("attnserve_model_reloads_total", {"result": "failed"}), 1)
        self.assertEqual(self.metric("attnserve_model_load_failures_total", {"model": "alpha"}), 1)
        self.assertEqual(self.metric("attnserve_model_stale", {"model": "alpha"}), 1)
        # The same broken files are not retried (nor counted) again.
        self.reload()
        self.assertEqual(self.metric("attnserve_model_load_failures_total", {"model": "alpha"}), 1)
        self.assertEqual(self.metric("attnserve_model_stale", {"model": "alpha"}), 1)
        self.assertServes("alpha", self.weights["alpha"])
        # Fixed files load, and the model is no longer stale.
        new = random_weights(12)
        write_model(self.repo, "alpha", new)
        self.reload()
        self.assertServes("alpha", new)
        self.assertIsNone(self.metric("attnserve_model_stale", {"model": "alpha"}))

    def test_broken_weights_keep_the_previous_version_serving(self):
        path = os.path.join(self.repo, "beta", "weights.safetensors")
        with open(path, "rb") as f:
            data = f.read()
        write_atomically(path, data[:len(data) - 100])  # the last tensor's data cut short
        self.reload()
        self.assertServes("beta", self.weights["beta"])
        self.assertRegex(self.server.log(), r"model beta failed to load; its previous version "
                                            r"goes on serving: .*beta/weights\.safetensors")
        self.assertEqual(self.metric("attnserve_model_load_failures_total", {"model": "beta"}), 1)

    def test_a_new_folder_that_fails_is_not_served_and_the_others_are(self):
        bad = os.path.join(self.repo, "delta")
        os.makedirs(bad)
        write_atomically(os.path.join(bad, "config.pbtxt"), CONFIG)  # no weights file
        self.reload()
        self.assertEqual(self.served_names(), ["alpha", "beta"])
        with self.assertRaises(grpc.RpcError) as ctx:
            self.attend("delta")
        self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn("failed to load", ctx.exception.details())
        self.assertEqual(self.metric("attnserve_model_load_failures_total", {"model": "delta"}), 1)

    def test_an_unreadable_repository_changes_nothing(self):
        moved = self.repo + ".moved"
        os.rename(self.repo, moved)
        try:
            self.reload()
            self.assertEqual(self.metric("attnserve_model_reloads_total", {"result": "failed"}),
                             1)
            self.assertEqual(self.served_names(), ["alpha", "beta"])
            self.assertServes("alpha", self.weights["alpha"])
            self.assertIn("model reload failed, serving the models as they were",
                          self.server.log())
        finally:
            os.rename(moved, self.repo)

    def test_a_symlink_loop_in_the_repository_is_skipped(self):
        os.symlink("loop", os.path.join(self.repo, "loop"))  # stat fails with ELOOP
        os.symlink("loop", os.path.join(self.repo, "alpha", "loop"))
        self.reload()
        self.assertIsNone(self.server.proc.poll(), self.server.log())
        self.assertEqual(self.served_names(), ["alpha", "beta"])
        self.assertServes("alpha", self.weights["alpha"])

    def test_an_open_decode_stream_finishes_on_the_old_weights(self):
        x = np.random.default_rng(8).standard_normal((1, 6, D)).astype(np.float32)
        steps = [x[:, :3], x[:, 3:]]
        sent = []
        ready = threading.Event()
        proceed = threading.Event()

        def requests():
            for i, step in enumerate(steps):
                if i == 1:
                    ready.set()
                    proceed.wait(WAIT_S)
                sent.append(step)
                yield pb.DecodeRequest(model="alpha" if i == 0 else "", query=f32_tensor(step))

        responses = self.stub.Decode(requests(), timeout=WAIT_S + RPC_TIMEOUT_S)
        first = to_numpy(next(responses).output)
        self.assertTrue(ready.wait(WAIT_S))
        write_model(self.repo, "alpha", random_weights(13))
        self.reload()
        proceed.set()
        second = to_numpy(next(responses).output)
        want = ref_layer(self.weights["alpha"], x.astype(np.float64), H, HD, causal=True)
        self.assertLess(rel_err(first, want[:, :3]), LAYER_REL)
        self.assertLess(rel_err(second, want[:, 3:]), LAYER_REL,
                        "the stream's second step did not use the weights it started with")
        # A new stream uses the new weights.
        new_first = next(self.stub.Decode(iter([pb.DecodeRequest(model="alpha",
                                                                 query=f32_tensor(steps[0]))]),
                                          timeout=RPC_TIMEOUT_S))
        new_want = ref_layer(random_weights(13), x[:, :3].astype(np.float64), H, HD, causal=True)
        self.assertLess(rel_err(to_numpy(new_first.output), new_want), LAYER_REL)


class InFlightReloadTest(ReloadTestCase):
    """A request computing while its model is replaced finishes on the old weights."""

    EXTRA_ARGS = ("--compute_workers=1", "--max_sequence_length=16384",
                  "--max_attention_elements=1000000000")

    def setUp(self):
        super().setUp()
        self.slow_weights = random_weights(4, SLOW_D, SLOW_H * SLOW_HD)
        write_model(self.repo, "slow", self.slow_weights,
                    config=f"d_model: {SLOW_D}\nnum_heads: {SLOW_H}\n")
        self.reload()

    def test_a_running_request_finishes_on_the_old_weights(self):
        x = np.random.default_rng(9).standard_normal((1, SLOW_SEQ, SLOW_D)).astype(np.float32)
        request = pb.AttendRequest(model="slow", query=f32_tensor(x), causal=True)
        before = to_numpy(self.stub.Attend(request, timeout=WAIT_S).output)
        result = {}

        def run():
            result["output"] = to_numpy(self.stub.Attend(request, timeout=WAIT_S).output)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while self.metric("attnserve_compute_busy_workers") != 1:
            self.assertLess(time.monotonic(), deadline, "the request never started computing")
            time.sleep(0.005)
        write_model(self.repo, "slow", random_weights(14, SLOW_D, SLOW_H * SLOW_HD),
                    config=f"d_model: {SLOW_D}\nnum_heads: {SLOW_H}\n")
        self.reload()
        still_running = self.metric("attnserve_compute_busy_workers") == 1
        thread.join(WAIT_S)
        self.assertIn("output", result)
        if not still_running:
            self.skipTest("the request finished before the reload did; nothing was checked")
        self.assertLess(rel_err(result["output"], before), 1e-6)
        after = to_numpy(self.stub.Attend(request, timeout=WAIT_S).output)
        self.assertGreater(rel_err(after, before), 1e-2, "the new weights are not served")


class PollReloadTest(ReloadTestCase):
    EXTRA_ARGS = ("--model_poll_seconds=0.2",)

    def test_a_new_folder_is_served_without_a_signal(self):
        gamma = random_weights(5)
        write_model(self.repo, "gamma", gamma)
        deadline = time.monotonic() + WAIT_S
        while "gamma" not in self.served_names():
            self.assertLess(time.monotonic(), deadline, f"gamma not served within {WAIT_S} s")
            time.sleep(0.05)
        self.assertServes("gamma", gamma)
        # Polls that find nothing changed do not reload the unchanged models (no log line).
        time.sleep(0.5)
        self.assertEqual(self.server.log().count("models reloaded:"), 1, self.server.log())


class PollFlagTest(unittest.TestCase):

    def test_poll_intervals_that_are_not_finite_or_too_short_are_refused(self):
        for value in ("nan", "inf", "-1", "0.01"):
            with self.subTest(value=value):
                result = subprocess.run(
                    [str(SERVER_PATH), "--grpc_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
                     "--http_address=127.0.0.1:0",
                     f"--model_poll_seconds={value}"],
                    capture_output=True, text=True, timeout=STARTUP_DEADLINE_S)
                self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
                self.assertIn("--model_poll_seconds=", result.stdout + result.stderr)


class DemoModelsSighupTest(at.ServerTestCase):

    def test_sighup_without_a_repository_keeps_serving_the_demo_models(self):
        before = [m.name for m in self.list_models().models]
        self.server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_S
        while "nothing to reload" not in self.server.log():
            self.assertLess(time.monotonic(), deadline, self.server.log())
            time.sleep(0.02)
        self.assertEqual([m.name for m in self.list_models().models], before)
        self.assertIsNone(self.server.proc.poll())


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
