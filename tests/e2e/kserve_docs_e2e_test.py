#!/usr/bin/python3
"""Runs every ```sh example of docs/kserve.md against a server started here: each block with bash
(-e -o pipefail), localhost:8000 and localhost:50051 pointed at this server's HTTP and gRPC ports
and build/python at the generated stubs; a block must exit 0 and print its `# expect:` line.

    /usr/bin/python3 tests/e2e/kserve_docs_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import ServerTestCase  # noqa: E402

DOC = at.REPO_ROOT / "docs" / "kserve.md"
BLOCK_RE = re.compile(r"^```sh\n(.*?)^```$", re.S | re.M)


def examples():
    """(line number, script, expected text) of each ```sh block."""
    text = DOC.read_text()
    found = []
    for match in BLOCK_RE.finditer(text):
        script = match.group(1)
        expect = re.search(r"^# expect: (.*)$", script, re.M)
        found.append((text.count("\n", 0, match.start()) + 1, script,
                      expect.group(1) if expect else None))
    return found


class KServeDocsTest(ServerTestCase):
    def test_every_example_runs_and_prints_what_it_says(self):
        blocks = examples()
        self.assertGreaterEqual(len(blocks), 10, "docs/kserve.md lost its examples")
        http = self.server.http_url.removeprefix("http://")
        for line, script, expect in blocks:
            with self.subTest(line=line):
                self.assertIsNotNone(expect, f"docs/kserve.md:{line}: no '# expect:' line")
                script = (script.replace("localhost:8000", http)
                          .replace("localhost:50051", self.server.grpc_address)
                          .replace('"build/python"', repr(at.STUBS_PATH)))
                with tempfile.TemporaryDirectory() as tmp:
                    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp,
                                          capture_output=True, text=True, timeout=120)
                self.assertEqual(done.returncode, 0,
                                 f"docs/kserve.md:{line} failed:\n{done.stdout}\n{done.stderr}")
                self.assertIn(expect, done.stdout, f"docs/kserve.md:{line} printed:\n{done.stdout}")


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
