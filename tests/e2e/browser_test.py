#!/usr/bin/python3
"""Self-test of tests/e2e/browser.py, the headless-Chromium driver of the web console's tests:
pages served by a local http.server exercise navigation, evaluation, waiting, error collection,
mouse input and screenshots. Chromium (Debian package chromium) is required, never skipped.

    /usr/bin/python3 tests/e2e/browser_test.py
"""
import functools
import http.server
import os
import pathlib
import socket
import struct
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import browser  # noqa: E402
from browser import Browser, BrowserError  # noqa: E402

WIDTH, HEIGHT = 1280, 900

# Line numbers matter: the expected error strings below name them.
PAGES = {
    "index.html": "<!doctype html><title>Fixture</title><p>hello</p>",
    "later.html": "<!doctype html><script>setTimeout(() => { window.ready = 'yes'; }, 300);"
                  "</script>",
    "errors.html": "<!doctype html><script src='errors.js'></script>",
    "errors.js": "console.error('boom', 42);\n"
                 "console.assert(1 === 2, 'math is %s', 'broken');\n"
                 "setTimeout(() => { undefinedFn(); });\n",
    "missing.html": "<!doctype html><script src='missing.js'></script>",
    "mouse.html": """<!doctype html>
<style>body { margin: 0; } #b { position: absolute; left: 100px; top: 200px;
  width: 100px; height: 40px; }</style>
<button id="b">press</button>
<script>
  window.moves = []; window.clicks = [];
  document.addEventListener('mousemove', e => moves.push([e.clientX, e.clientY]));
  document.getElementById('b').addEventListener('click',
      e => clicks.push([e.clientX, e.clientY, e.button, e.detail]));
</script>""",
    "tall.html": "<!doctype html><style>body { margin: 0; }</style>"
                 "<div style='height: 2000px; background: linear-gradient(red, blue)'></div>",
}


class Server:
    """http.server on a free loopback port, serving PAGES, noting the paths asked for."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="browser-test-")
        for name, text in PAGES.items():
            pathlib.Path(self.dir.name, name).write_text(text)
        self.paths = []
        paths = self.paths

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                paths.append(self.path)

        handler = functools.partial(Handler, directory=self.dir.name)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.dir.cleanup()


SERVER = None


def setUpModule():
    global SERVER
    SERVER = Server()


def tearDownModule():
    SERVER.close()


def png_size(path):
    """(width, height) from a PNG's IHDR, checking the signature on the way."""
    data = pathlib.Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"{path} is not a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


def wait_until(condition, timeout=10):
    """Polls `condition` until it is true or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.base = SERVER.base
        cls.browser = Browser(width=WIDTH, height=HEIGHT, timeout=30)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()

    def setUp(self):
        self.browser.clear_errors()

    def open(self, page):
        self.browser.goto(self.base + page)

    def wait_errors(self, count, timeout=10):
        """The errors once there are `count` of them (events trail the load event)."""
        wait_until(lambda: len(self.browser.errors) >= count, timeout)
        return self.browser.errors

    def test_goto_and_evaluate(self):
        self.open("index.html")
        b = self.browser
        self.assertEqual(b.evaluate("document.title"), "Fixture")
        self.assertEqual(b.evaluate("({n: 1 + 2, list: [true, null], s: 'x'})"),
                         {"n": 3, "list": [True, None], "s": "x"})
        self.assertEqual(b.evaluate("new Promise(r => setTimeout(() => r('late'), 50))"), "late")
        self.assertIsNone(b.evaluate("undefined"))
        self.assertEqual(b.evaluate("[innerWidth, innerHeight, devicePixelRatio]"),
                         [WIDTH, HEIGHT, 1])
        self.assertEqual(b.errors, [])

    def test_evaluate_raises_what_the_expression_throws(self):
        self.open("index.html")
        with self.assertRaisesRegex(BrowserError, "TypeError.*nothing"):
            self.browser.evaluate("null.nothing")
        with self.assertRaisesRegex(BrowserError, "Error: rejected"):
            self.browser.evaluate("Promise.reject(new Error('rejected'))")
        self.assertEqual(self.browser.errors, [])  # evaluate's throws are not page errors

    def test_goto_fragment_and_failed_navigation(self):
        self.open("index.html")
        self.open("index.html#part")  # same document: no load event to wait for
        self.assertEqual(self.browser.evaluate("location.hash"), "#part")
        with self.assertRaisesRegex(BrowserError, "ERR_CONNECTION_REFUSED"):
            self.browser.goto(f"http://127.0.0.1:{closed_port()}/")

    def test_wait_for(self):
        self.open("later.html")
        self.assertIsNone(self.browser.evaluate("window.ready"))
        self.assertEqual(self.browser.wait_for("window.ready"), "yes")

    def test_wait_for_timeout_names_expression_and_errors(self):
        self.open("errors.html")
        self.wait_errors(3)
        with self.assertRaises(BrowserError) as caught:
            self.browser.wait_for("document.querySelector('#never').id", timeout=0.5)
        message = str(caught.exception)
        self.assertIn("document.querySelector('#never').id", message)
        self.assertIn("TypeError", message)     # why the last poll failed
        self.assertIn("console.error: boom", message)

    def test_console_errors_and_uncaught_exception(self):
        self.open("errors.html")
        script = self.base + "errors.js"
        self.assertEqual(self.wait_errors(3), [
            f"console.error: boom 42 ({script}:1)",
            f"console.assert: Assertion failed: math is broken ({script}:2)",
            f"exception: Uncaught ReferenceError: undefinedFn is not defined ({script}:3)",
        ])
        self.browser.clear_errors()
        self.assertEqual(self.browser.errors, [])

    def test_missing_script(self):
        self.open("missing.html")
        self.assertEqual(self.wait_errors(1), [
            "log error network: Failed to load resource: the server responded with a status of"
            f" 404 (File not found) ({self.base}missing.js)"])

    def test_hover(self):
        self.open("mouse.html")
        self.browser.hover(123, 45)
        self.assertEqual(self.browser.evaluate("moves"), [[123, 45]])
        self.browser.hover(7, 600)
        self.assertEqual(self.browser.evaluate("moves"), [[123, 45], [7, 600]])

    def test_click(self):
        self.open("mouse.html")
        self.browser.click(20, 20)  # beside the button
        self.browser.click(150, 220)
        self.assertEqual(self.browser.evaluate("clicks"), [[150, 220, 0, 1]])
        self.assertEqual(self.browser.evaluate("document.activeElement.id"), "b")

    def test_screenshot(self):
        with tempfile.TemporaryDirectory() as out:
            self.open("index.html")
            self.browser.screenshot(os.path.join(out, "short.png"))
            self.assertEqual(png_size(os.path.join(out, "short.png")), (WIDTH, HEIGHT))
            self.open("tall.html")
            self.browser.screenshot(os.path.join(out, "tall.png"))
            self.assertEqual(png_size(os.path.join(out, "tall.png")), (WIDTH, 2000))
        self.assertEqual(self.browser.evaluate("[innerWidth, innerHeight]"), [WIDTH, HEIGHT])


class LifecycleTest(unittest.TestCase):
    def test_close_ends_the_browser_and_removes_its_profile(self):
        with Browser(width=640, height=480, timeout=30) as b:
            self.assertEqual(b.evaluate("[innerWidth, innerHeight]"), [640, 480])
            pid, profile = b._pid, b._tmp
        with self.assertRaises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # already reaped
        self.assertFalse(os.path.exists(profile))
        with self.assertRaisesRegex(BrowserError, "Runtime.evaluate: the browser is closed"):
            b.evaluate("1")
        b.close()  # again: nothing to do

    def test_implicit_favicon_404_is_not_an_error(self):
        # A fresh browser (a new profile): Chromium asks each origin for /favicon.ico once, on its
        # own. Earlier tests' browsers have asked this server already, hence counting the asks.
        asked = SERVER.paths.count("/favicon.ico")
        dropped = []  # the log entries the filter kept out of `errors`
        filter_favicon = browser._is_favicon_fetch

        def is_favicon_fetch(entry):
            if not filter_favicon(entry):
                return False
            dropped.append(entry)
            return True

        with mock.patch.object(browser, "_is_favicon_fetch", is_favicon_fetch), \
                Browser(timeout=30) as b:
            b.goto(SERVER.base + "index.html")
            wait_until(lambda: SERVER.paths.count("/favicon.ico") > asked)
            self.assertGreater(SERVER.paths.count("/favicon.ico"), asked)
            # The 404 has come through once the filter has seen its error-level log entry, which
            # without the filter would be in `errors`.
            wait_until(lambda: dropped)
            self.assertEqual([(e["level"], e["url"]) for e in dropped],
                             [("error", SERVER.base + "favicon.ico")])
            self.assertIn("404", dropped[0]["text"])
            self.assertEqual(b.errors, [])

    def test_renderer_crash_fails_fast_until_goto(self):
        with Browser(timeout=30) as b:
            b.goto(SERVER.base + "index.html")
            with self.assertRaisesRegex(BrowserError, "renderer crashed"):
                b._command("Page.crash")  # (no public way to crash a tab)
            self.assertEqual(b.errors, ["the tab's renderer crashed"])
            started = time.monotonic()
            with self.assertRaisesRegex(BrowserError, "renderer crashed"):
                b.evaluate("1")
            self.assertLess(time.monotonic() - started, 1)
            b.goto(SERVER.base + "index.html")
            self.assertEqual(b.evaluate("document.title"), "Fixture")

    def test_missing_executable(self):
        with self.assertRaisesRegex(BrowserError, "no Chromium executable"):
            Browser(chromium="/nonexistent/chromium")


if __name__ == "__main__":
    unittest.main()
