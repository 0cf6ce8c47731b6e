#!/usr/bin/python3
"""Runs every ```sh example of docs/kserve.md against a server started here: each block with bash
(-e -o pipefail), localhost:8000 and localhost:50051 pointed at this server's HTTP and gRPC ports
and build/python at the generated stubs; a block must exit 0 and print its `# expect:` line
(the running and checking is doc_snippets.py's, shared with attention_docs_e2e_test.py).

    /usr/bin/python3 tests/e2e/kserve_docs_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402
import doc_snippets as ds  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import ServerTestCase  # noqa: E402

DOC = at.REPO_ROOT / "docs" / "kserve.md"


class KServeDocsTest(ServerTestCase):
    def test_every_example_runs_and_prints_what_it_says(self):
        blocks = ds.snippets(DOC, ("sh",), doc="docs/kserve.md")
        self.assertGreaterEqual(len(blocks), 10, "docs/kserve.md lost its examples")
        replacements = {"localhost:8000": self.server.http_url.removeprefix("http://"),
                        "localhost:50051": self.server.grpc_address,
                        '"build/python"': repr(at.STUBS_PATH)}
        for snippet in blocks:
            with self.subTest(line=snippet.line):
                self.assertTrue(snippet.expects, f"{snippet.where}: no '# expect:' line")
                with tempfile.TemporaryDirectory() as tmp:
                    done = ds.run(snippet, cwd=tmp, replacements=replacements)
                ds.assert_ran(self, snippet, done)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
