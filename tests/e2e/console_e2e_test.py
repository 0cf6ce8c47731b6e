#!/usr/bin/python3
"""The web console (docs/console.md) in a real browser: headless Chromium (tests/e2e/browser.py)
against servers started here.

    /usr/bin/python3 tests/e2e/console_e2e_test.py --server build/server/attnserve \
        --stubs build/python [-v]

Promises checked:
  - every page loads and renders its data with no console error, no exception and no failed
    resource load (any 4xx/5xx fails);
  - the encodings explorer's heat maps hold the service's numbers: the sinusoidal table against
    its closed form in float64 (|Δ| ≤ 2e-6, float32 rounding of values ≤ 1), ALiBi's bias maps
    against −m_h·|i − j| with m_h = 2^(−8h/n) (exact in float32 for these slopes);
  - the attention explorer's heat maps are the probabilities the service returns for the very
    request the page sent (resent here: |Δ| ≤ 1e-6), causal maps are zero above the diagonal, and
    the side-by-side mode draws both panels; hovering a cell shows its row, column and value;
  - the models page lists every model with its state, shows traffic sent here as a request rate,
    and shows a model added to the repository by a reload (SIGHUP) and a folder that failed;
  - the console's HTTP contract: content types, the security policy, no token for files but one
    for data when tokens are set, --console=false turns it off.
Screenshots of each page go to $ATTNSERVE_SCREENSHOT_DIR (default build/tests/console_screenshots,
where ctest puts them too); the current ones are kept in docs/images/console_*.png.
"""
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402
from browser import Browser  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (  # noqa: E402
    SERVER_PATH, ServerProcess, grpc, pb, pb_grpc, f32_tensor, safetensors_bytes)

SCREENSHOT_DIR = os.environ.get("ATTNSERVE_SCREENSHOT_DIR") or str(
    at.REPO_ROOT / "build" / "tests" / "console_screenshots")
RENDER_S = 60      # a page's data rendered (sanitizer builds are slow)
REFRESH_S = 30     # the models page picks up new metrics and models
READY = "document.body.dataset.state === 'ready'"
HEATMAPS = "window.attnserveConsole.heatmaps().map(h => ({title: h.title, rows: h.rows, " \
           "cols: h.cols, values: Array.from(h.values), plot: h.plot}))"


def http_get(url, headers=None):
    """(status, headers, body) of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        header = f.read(24)
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path} is not a PNG")
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def post_json(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def output(answer, name):
    """A v2 JSON answer's output `name` as a float64 array of its shape."""
    for out in answer["outputs"]:
        if out["name"] == name:
            return np.array(out["data"], dtype=np.float64).reshape(out["shape"])
    raise AssertionError(f"no output {name} in {[o['name'] for o in answer['outputs']]}")


class ConsoleTestCase(unittest.TestCase):
    """One browser for the class, one server per class (SERVER_ARGS)."""
    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess(SERVER_PATH, cls.SERVER_ARGS).start()
        cls.browser = Browser(width=1280, height=900).__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.browser.__exit__(None, None, None)
        cls.server.stop()

    def open_page(self, fragment):
        """Opens `fragment` of the console and waits until its data is rendered."""
        self.browser.clear_errors()
        # A fresh document each time: a hash change alone would keep the previous page's state.
        self.browser.goto("about:blank")
        self.browser.goto(f"{self.server.http_url}/{fragment}")
        # Until the page has rendered or failed; a console error ends the wait at once (a page
        # whose scripts fail to load would otherwise stay "loading" for the whole wait).
        deadline = time.monotonic() + RENDER_S
        state = None
        while time.monotonic() < deadline and not self.browser.errors:
            state = self.browser.evaluate("document.body.dataset.state")
            if state in ("ready", "error"):
                break
            time.sleep(0.1)
        self.assertNoConsoleErrors()
        self.assertEqual(state, "ready", self.browser.evaluate("document.body.innerText")[:2000])

    def assertNoConsoleErrors(self):
        self.assertEqual(self.browser.errors, [], "console errors on the page")

    def screenshot(self, name):
        """Writes the page's picture to SCREENSHOT_DIR; docs/images keeps a copy of the same
        size (a page whose layout changed must have its documented picture taken again)."""
        os.makedirs(SCREENSHOT_DIR, exist_ok=True)
        path = os.path.join(SCREENSHOT_DIR, name)
        self.browser.screenshot(path)
        documented = at.REPO_ROOT / "docs" / "images" / name
        self.assertTrue(documented.exists(), f"docs/images/{name} is missing; copy {path}")
        self.assertEqual(png_size(path), png_size(documented),
                         f"docs/images/{name} is not the current page's size; copy {path}")

    def heatmaps(self):
        maps = self.browser.evaluate(HEATMAPS)
        self.assertTrue(maps, "no heat map drawn")
        return [dict(m, values=np.array(m["values"], dtype=np.float64).reshape(m["rows"],
                                                                                m["cols"]))
                for m in maps]

    def hover_cell(self, heatmap, row, col):
        """Moves the mouse to the centre of a cell; returns the tooltip's text."""
        plot = heatmap["plot"]
        x = plot["left"] + (col + 0.5) * plot["width"] / heatmap["cols"]
        y = plot["top"] + (row + 0.5) * plot["height"] / heatmap["rows"]
        self.browser.hover(x, y)
        return self.browser.wait_for(
            "(() => { const t = document.getElementById('heatmap-tooltip');"
            " return t && !t.hidden && t.textContent; })()", 10)

    def assertTooltipShows(self, text, row, col, value):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]
        self.assertGreaterEqual(len(numbers), 3, text)
        self.assertEqual(numbers[:2], [row, col], text)
        self.assertAlmostEqual(numbers[-1], value, delta=abs(value) * 1e-3 + 1e-6, msg=text)


class ExplorersTest(ConsoleTestCase):
    """The encodings and attention explorers on the demo models."""

    def test_sinusoidal_table_is_the_closed_form(self):
        seq, d = 48, 32
        self.open_page(f"#/encodings?family=sinusoidal&variant=vaswani&seq={seq}&d_model={d}")
        table = self.heatmaps()[0]
        self.assertEqual((table["rows"], table["cols"]), (seq, d))
        pos = np.arange(seq, dtype=np.float64)[:, None]
        freq = 10000.0 ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        expected = np.empty((seq, d))
        expected[:, 0::2] = np.sin(pos * freq)
        expected[:, 1::2] = np.cos(pos * freq)
        np.testing.assert_allclose(table["values"], expected, rtol=0, atol=2e-6)
        self.assertTooltipShows(self.hover_cell(table, 5, 7), 5, 7, expected[5, 7])
        self.assertNoConsoleErrors()
        self.screenshot("console_encodings.png")

    def test_alibi_bias_maps_are_the_closed_form(self):
        heads, seq = 4, 12
        self.open_page(f"#/encodings?family=alibi&heads={heads}&seq={seq}&kv_len={seq}&causal=0")
        maps = self.heatmaps()
        self.assertEqual(len(maps), heads)
        distance = np.abs(np.arange(seq)[:, None] - np.arange(seq)[None, :])
        for h, bias in enumerate(maps):
            slope = 2.0 ** (-8.0 * (h + 1) / heads)
            np.testing.assert_array_equal(bias["values"], -slope * distance, err_msg=f"head {h}")
        self.assertNoConsoleErrors()

    def test_every_family_renders(self):
        for fragment in ("#/encodings?family=sinusoidal&variant=tensor2tensor",
                         "#/encodings?family=sinusoidal&variant=fairseq",
                         "#/encodings?family=learned",
                         "#/encodings?family=rope&scaling=yarn",
                         "#/encodings?family=rope&scaling=llama3",
                         "#/encodings?family=t5",
                         "#/encodings?family=cope"):
            with self.subTest(fragment):
                self.open_page(fragment)
                for heatmap in self.heatmaps():
                    self.assertTrue(np.all(np.isfinite(heatmap["values"])), heatmap["title"])
                self.assertNoConsoleErrors()

    def attention_maps_match_the_service(self, fragment, causal):
        self.open_page(fragment)
        maps = self.heatmaps()
        sent = self.browser.evaluate("window.attnserveConsole.lastInference")
        answer = post_json(self.server.http_url + sent["url"], sent["body"])
        attention = output(answer, "attention")[0]
        self.assertEqual(len(maps), attention.shape[0])
        for h, heatmap in enumerate(maps):
            np.testing.assert_allclose(heatmap["values"], attention[h], rtol=0, atol=1e-6,
                                       err_msg=f"head {h}")
            np.testing.assert_allclose(heatmap["values"].sum(axis=1), 1.0, atol=1e-5)
            if causal:  # bottom-right aligned: query i sees keys ≤ i + (kv_len − seq)
                offset = heatmap["cols"] - heatmap["rows"]
                self.assertTrue(np.all(np.triu(heatmap["values"], k=1 + offset) == 0))
        return maps

    def test_attention_maps_are_the_service_probabilities(self):
        maps = self.attention_maps_match_the_service(
            "#/attention?model=demo-alibi&seq=12&causal=1&seed=3", causal=True)
        self.assertEqual((maps[0]["rows"], maps[0]["cols"]), (12, 12))
        value = maps[1]["values"][9, 4]
        self.assertTooltipShows(self.hover_cell(maps[1], 9, 4), 9, 4, value)
        self.assertNoConsoleErrors()
        self.screenshot("console_attention.png")

    def test_cross_attention_maps(self):
        maps = self.attention_maps_match_the_service(
            "#/attention?model=demo-rope&seq=6&cross=1&kv_len=10&seed=5", causal=False)
        self.assertEqual((maps[0]["rows"], maps[0]["cols"]), (6, 10))
        self.assertNoConsoleErrors()

    def test_side_by_side_causal_and_bidirectional(self):
        self.open_page("#/attention?model=demo-sinusoidal&seq=8&causal=1&seed=2&compare=1")
        maps = self.heatmaps()
        heads = len(maps) // 2
        self.assertEqual(len(maps), 2 * heads)
        # Panel A causal: nothing above the diagonal; panel B (causal toggled) attends there.
        self.assertTrue(all(np.all(np.triu(m["values"], k=1) == 0) for m in maps[:heads]))
        self.assertTrue(all(np.any(np.triu(m["values"], k=1) > 0) for m in maps[heads:]))
        self.assertNoConsoleErrors()
        self.screenshot("console_attention_compare.png")


class ModelsPageTest(ConsoleTestCase):
    """The models page on a model repository: states, live traffic, a model added by a reload."""

    @classmethod
    def setUpClass(cls):
        cls.repo = tempfile.mkdtemp(prefix="attnserve_console_repo_")
        cls.write_model("alpha")
        cls.SERVER_ARGS = (f"--model_repository={cls.repo}",)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.repo, ignore_errors=True)

    @classmethod
    def write_model(cls, name, config="d_model: 16\nnum_heads: 2\n"):
        folder = os.path.join(cls.repo, name)
        os.makedirs(folder, exist_ok=True)
        rng = np.random.default_rng(len(name))
        weights = {n: ("F32", rng.standard_normal((16, 16)) * 0.25)
                   for n in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight")}
        with open(os.path.join(folder, "weights.safetensors"), "wb") as f:
            f.write(safetensors_bytes(weights))
        with open(os.path.join(folder, "config.pbtxt"), "w") as f:
            f.write(config)

    def row_state(self, model):
        return self.browser.evaluate(
            f"(() => {{ const r = document.querySelector('[data-model=\"{model}\"]');"
            f" if (!r) return null; const s = r.querySelector('[data-state]');"
            f" return s ? {{state: s.dataset.state, text: r.innerText}} : null; }})()")

    def test_models_traffic_and_a_model_added_by_reload(self):
        self.open_page("#/models?refresh=1")
        self.assertEqual(self.row_state("alpha")["state"], "loaded")
        self.assertNoConsoleErrors()

        # Traffic on alpha shows as a request rate on its row.
        channel = grpc.insecure_channel(self.server.grpc_address)
        stub = pb_grpc.AttentionServiceStub(channel)
        x = f32_tensor(np.ones((1, 4, 16), dtype=np.float32))
        deadline = time.monotonic() + REFRESH_S
        rate_shown = None
        while time.monotonic() < deadline and not rate_shown:
            for _ in range(20):
                stub.Attend(pb.AttendRequest(model="alpha", query=x), timeout=10)
            rate_shown = self.browser.evaluate(
                "(() => { const r = document.querySelector('[data-model=\"alpha\"] [data-field=\"rate\"]');"
                " return r && parseFloat(r.textContent) > 0 ? r.textContent : null; })()")
        channel.close()
        self.assertTrue(rate_shown, "no request rate shown for alpha")

        # A new folder and a broken one, then SIGHUP: the page shows both without a reload.
        self.write_model("beta")
        self.write_model("gamma", config="d_model: 16\nnum_heads: three\n")
        self.server.proc.send_signal(signal.SIGHUP)
        self.browser.wait_for(
            "!!(document.querySelector('[data-model=\"beta\"] [data-state=\"loaded\"]') &&"
            " document.querySelector('[data-model=\"gamma\"] [data-state=\"failed\"]'))",
            REFRESH_S)
        self.assertIn("gamma/config.pbtxt", self.row_state("gamma")["text"])
        self.assertNoConsoleErrors()

    def test_screenshot_of_demo_models(self):
        # The demo models' page, for docs/images (a separate server: this class's serves a
        # repository).
        server = ServerProcess(SERVER_PATH).start()
        channel = grpc.insecure_channel(server.grpc_address)
        stub = pb_grpc.AttentionServiceStub(channel)
        try:
            self.browser.clear_errors()
            self.browser.goto(f"{server.http_url}/#/models?refresh=1")
            self.browser.wait_for(READY, RENDER_S)
            self.assertEqual(self.browser.evaluate(
                "document.querySelectorAll('[data-model] [data-state=\"loaded\"]').length"), 7)
            # Some traffic, so that the picture shows live figures.
            rng = np.random.default_rng(0)
            deadline = time.monotonic() + REFRESH_S
            while time.monotonic() < deadline and not self.browser.evaluate(
                    "!!document.querySelector('[data-model=\"demo-alibi\"] [data-field=\"p99\"][data-value]')"):
                for model, d, seq in (("demo-rope", 256, 64), ("demo-alibi", 384, 16)):
                    x = f32_tensor(rng.standard_normal((1, seq, d)).astype(np.float32))
                    stub.Attend(pb.AttendRequest(model=model, query=x, causal=True), timeout=10)
            self.assertTrue(self.browser.evaluate(
                "!!document.querySelector('[data-model=\"demo-alibi\"] [data-field=\"p99\"][data-value]')"),
                "no p99 shown for demo-alibi under traffic")
            self.assertNoConsoleErrors()
            self.screenshot("console_models.png")
        finally:
            channel.close()
            self.browser.goto("about:blank")
            server.stop()


class HttpContractTest(unittest.TestCase):
    """The console's routes without a browser."""

    def test_files_data_and_tokens(self):
        tokens = tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False)
        tokens.write("secret-one\n")
        tokens.close()
        server = ServerProcess(SERVER_PATH, (f"--auth_token_file={tokens.name}",)).start()
        try:
            url = server.http_url
            status, headers, body = http_get(url + "/")
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
            self.assertIn("script-src 'self'", headers["content-security-policy"])
            self.assertEqual(headers["x-content-type-options"], "nosniff")
            self.assertIn(b"<html", body)
            # Every script the page names is served, as JavaScript.
            for script in re.findall(rb'src="(/console/[^"]+\.js)"', body):
                status, headers, _ = http_get(url + script.decode())
                self.assertEqual((status, headers["content-type"]),
                                 (200, "text/javascript; charset=utf-8"), script)
            # Any other path is no console file: with the token, 404 (without, 401 as for every
            # route that is not a file).
            token = {"Authorization": "Bearer secret-one"}
            self.assertEqual(http_get(url + "/console/missing.js", token)[0], 404)
            self.assertEqual(http_get(url + "/console/../README.md", token)[0], 404)
            self.assertEqual(http_get(url + "/console/missing.js")[0], 401)
            self.assertEqual(http_get(url + "/console/api/nothing", token)[0], 404)
            post = urllib.request.Request(url + "/", data=b"x", method="POST")
            with self.assertRaises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(post, timeout=10)
            self.assertEqual(refused.exception.code, 405)
            self.assertEqual(refused.exception.headers["allow"], "GET")
            # Data needs the token: the models and the whole metrics registry.
            for route in ("/console/api/models", "/console/api/metrics"):
                status, headers, _ = http_get(url + route)
                self.assertEqual(status, 401, route)
                self.assertEqual(headers["www-authenticate"], "Bearer")
            status, _, body = http_get(url + "/console/api/models", token)
            self.assertEqual(status, 200)
            self.assertIn("demo-alibi", [m["name"] for m in json.loads(body)["models"]])
            # One inference, then its count on the metrics route.
            request = urllib.request.Request(
                url + "/v2/models/attnserve.position_bias/infer",
                data=json.dumps({"parameters": {"model": "demo-alibi", "q_len": 2}}).encode(),
                headers=token)
            urllib.request.urlopen(request, timeout=10).read()
            status, _, body = http_get(url + "/console/api/metrics", token)
            self.assertEqual(status, 200)
            families = {f["name"]: f for f in json.loads(body)["families"]}
            self.assertEqual(families["attnserve_requests_total"]["samples"],
                             [{"labels": {"rpc": "ModelInfer", "model": "attnserve.position_bias",
                                          "code": "OK"}, "value": 1.0}])
            self.assertEqual(families["attnserve_request_seconds"]["samples"][0]["count"], 1)
        finally:
            server.stop()
            os.unlink(tokens.name)

    def test_console_off(self):
        server = ServerProcess(SERVER_PATH, ("--console=false",)).start()
        try:
            self.assertEqual(http_get(server.http_url + "/")[0], 404)
            self.assertEqual(http_get(server.http_url + "/console/api/models")[0], 404)
            self.assertEqual(http_get(server.http_url + "/v2/health/live")[0], 200)
        finally:
            server.stop()


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
