#!/usr/bin/python3
"""Runs every ```sh and ```python snippet of docs/attention.md against a server started here, so
the page cannot rot (the running and checking is doc_snippets.py's, shared with
kserve_docs_e2e_test.py).

The page's snippets are written for a reader in the repository root with a server on the default
ports. The test gives them the same world in a temporary folder, in page order:

  * the working folder is a fresh temporary directory holding `clients` (a symbolic link to this
    checkout's clients/, so `sys.path.insert(0, "clients/python")` and
    `PYTHONPATH=clients/python` find the client) and an empty `docs/images/`, which receives the
    pictures the snippets draw: the repository's docs/images is never written;
  * `127.0.0.1:50051` / `localhost:50051` in a snippet's text become this server's gRPC address,
    `localhost:8000` / `127.0.0.1:8000` its HTTP (KServe v2) address;
  * $ATTNSERVE_PYTHON_STUBS names the stubs under test (the client package and plot_encodings.py
    read it); PYTHONDONTWRITEBYTECODE keeps __pycache__ out of the checkout.

Checks: each snippet exits 0, prints each of its `# expect:` lines and checks something (an
`# expect:` line or an `assert`); every picture the page shows (images/attention_*.png) is drawn
by a snippet, is a PNG, and the committed copy in docs/images has the same pixel size (the
documented command draws a picture of the committed one's size; the pixels themselves are not
compared, as they can differ with the matplotlib version); no attention_*.png in docs/images or
drawn by a snippet is left unshown; docs/images itself is untouched by the run.

    /usr/bin/python3 tests/e2e/attention_docs_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import pathlib
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402
import doc_snippets as ds  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import ServerTestCase  # noqa: E402

DOC = at.REPO_ROOT / "docs" / "attention.md"
IMAGES = at.REPO_ROOT / "docs" / "images"
IMAGE_RE = re.compile(r"!\[[^\]]*\]\(images/(attention_[A-Za-z0-9_.-]+\.png)\)")
SNIPPET_TIMEOUT_S = 120


def images_state():
    """(name, size, mtime_ns) of every file in docs/images: what a run must leave unchanged."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in IMAGES.iterdir())


class AttentionDocsTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.snippets = ds.snippets(DOC, ("sh", "python"), doc="docs/attention.md")
        cls.images_before = images_state()
        cls.tmp = tempfile.TemporaryDirectory(prefix="attention_docs_")
        root = pathlib.Path(cls.tmp.name)
        (root / "clients").symlink_to(at.REPO_ROOT / "clients", target_is_directory=True)
        (root / "docs" / "images").mkdir(parents=True)
        cls.drawn = root / "docs" / "images"
        http = cls.server.http_url.removeprefix("http://")
        replacements = {"127.0.0.1:50051": cls.server.grpc_address,
                        "localhost:50051": cls.server.grpc_address,
                        "127.0.0.1:8000": http, "localhost:8000": http}
        env = {"ATTNSERVE_PYTHON_STUBS": at.STUBS_PATH, "PYTHONDONTWRITEBYTECODE": "1",
               "MPLBACKEND": "Agg"}
        cls.results = []
        for snippet in cls.snippets:
            start = time.monotonic()
            done = ds.run(snippet, cwd=root, env=env, replacements=replacements,
                          timeout=SNIPPET_TIMEOUT_S)
            cls.results.append((snippet, done, time.monotonic() - start))
            print(f"{snippet.where} ({snippet.lang}): exit {done.returncode}, "
                  f"{time.monotonic() - start:.1f} s", file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()
        super().tearDownClass()

    def test_the_page_has_its_snippets(self):
        langs = [s.lang for s in self.snippets]
        self.assertGreaterEqual(langs.count("python"), 8, "docs/attention.md lost Python snippets")
        self.assertGreaterEqual(langs.count("sh"), 4, "docs/attention.md lost shell snippets")

    def test_every_snippet_runs_and_prints_what_it_says(self):
        for snippet, done, _ in self.results:
            with self.subTest(line=snippet.line, lang=snippet.lang):
                self.assertTrue(snippet.expects or re.search(r"^\s*assert\b", snippet.code, re.M),
                                f"{snippet.where}: checks nothing (no `# expect:` line, no assert)")
                ds.assert_ran(self, snippet, done)

    def test_every_picture_shown_is_drawn_by_a_snippet_and_committed(self):
        shown = IMAGE_RE.findall(DOC.read_text())
        self.assertGreaterEqual(len(shown), 5, "docs/attention.md lost its pictures")
        for name in shown:
            with self.subTest(image=name):
                drawn = self.drawn / name
                self.assertTrue(drawn.is_file(), f"no snippet of docs/attention.md drew {name}")
                size = ds.png_size(drawn)
                committed = IMAGES / name
                self.assertTrue(committed.is_file(), f"docs/images/{name} is not committed")
                self.assertEqual(ds.png_size(committed), size,
                                 f"docs/images/{name} is not the size its snippet draws: "
                                 f"regenerate it with the page's command")
        drawn_names = {p.name for p in self.drawn.glob("attention_*.png")}
        committed_names = {p.name for p in IMAGES.glob("attention_*.png")}
        self.assertEqual(drawn_names - set(shown), set(), "drawn but not shown on the page")
        self.assertEqual(committed_names - set(shown), set(),
                         "committed in docs/images but not shown on the page")

    def test_the_repository_images_are_untouched(self):
        self.assertEqual(images_state(), self.images_before)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
