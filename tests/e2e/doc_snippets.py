"""Runs the code blocks of a Markdown page as tests, so that a documentation page cannot rot.

Shared by the tests that check a page of docs/ (kserve_docs_e2e_test.py,
attention_docs_e2e_test.py).

A snippet is a fenced block whose info string is one of the languages asked for:

  * ```sh     runs as `bash -e -o pipefail -c CODE`: the block fails at its first failing command;
  * ```python runs as `/usr/bin/python3 FILE`, the code written to a file in a temporary folder
    of its own, not the working folder (a traceback then names the snippet's own line numbers).

A snippet passes when it exits 0 and its standard output contains the text of each of its
`# expect: TEXT` lines (a line that starts with `# expect: `; in Python too, where it is a
comment). Before a snippet runs, the test's `replacements` are applied to its text, e.g. the
documented `127.0.0.1:50051` turned into the address of the server the test started.

    import doc_snippets as ds
    for snippet in ds.snippets(PATH, ("sh", "python")):
        done = ds.run(snippet, cwd=tmp, env={...}, replacements={...})
        ds.assert_ran(self, snippet, done)
"""
import dataclasses
import os
import pathlib
import re
import subprocess
import tempfile

PYTHON = "/usr/bin/python3"  # Debian's Python: python3-grpcio, -protobuf, -numpy, -matplotlib
EXPECT_RE = re.compile(r"^# expect: (.*)$", re.M)
RUNNERS = ("sh", "python")


@dataclasses.dataclass(frozen=True)
class Snippet:
    doc: str         # the page, as messages name it (e.g. docs/kserve.md)
    lang: str        # "sh" or "python"
    line: int        # line of the opening fence, 1-based
    code: str        # the block's text, without the fences
    expects: tuple   # the texts of its `# expect:` lines

    @property
    def where(self):
        return f"{self.doc}:{self.line}"


def snippets(path, langs=("sh",), doc=None):
    """The ```LANG blocks of the Markdown file `path` for LANG in `langs`, in page order."""
    unknown = set(langs) - set(RUNNERS)
    if unknown:
        raise ValueError(f"no runner for {sorted(unknown)}; known: {RUNNERS}")
    path = pathlib.Path(path)
    text = path.read_text()
    name = doc or _relative_name(path)
    block_re = re.compile(r"^```(%s)\n(.*?)^```$" % "|".join(map(re.escape, langs)), re.S | re.M)
    return [Snippet(name, m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2),
                    tuple(EXPECT_RE.findall(m.group(2))))
            for m in block_re.finditer(text)]


def _relative_name(path):
    parts = path.resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else str(path)


def substitute(code, replacements):
    """`code` with each key of `replacements` (a dict, applied in order) replaced by its value."""
    for old, new in (replacements or {}).items():
        code = code.replace(old, new)
    return code


def run(snippet, cwd, env=None, replacements=None, timeout=120):
    """Runs `snippet` in the folder `cwd` with os.environ updated by `env`; returns the
    subprocess.CompletedProcess (text stdout and stderr)."""
    code = substitute(snippet.code, replacements)
    environment = dict(os.environ)
    environment.update(env or {})
    with tempfile.TemporaryDirectory(prefix="doc_snippet_") as scratch:
        if snippet.lang == "sh":
            command = ["bash", "-e", "-o", "pipefail", "-c", code]
        else:
            name = f"{pathlib.Path(snippet.doc).stem}_line{snippet.line}.py"
            script = pathlib.Path(scratch) / name
            script.write_text(code)
            command = [PYTHON, str(script)]
        try:
            return subprocess.run(command, cwd=cwd, env=environment, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as error:
            return subprocess.CompletedProcess(
                command, 124, _text(error.stdout),
                _text(error.stderr) + f"\n[doc_snippets: killed after {timeout} s]")


def _text(data):
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def assert_ran(test, snippet, done):
    """unittest assertions: the snippet exited 0 and printed each of its `# expect:` texts."""
    test.assertEqual(done.returncode, 0,
                     f"{snippet.where} ({snippet.lang}) exited {done.returncode}:\n"
                     f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}")
    for expect in snippet.expects:
        test.assertIn(expect, done.stdout,
                      f"{snippet.where}: `# expect: {expect}` not in what it printed:\n"
                      f"{done.stdout}")


def png_size(path):
    """(width, height) in pixels of a PNG file; ValueError if it is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
