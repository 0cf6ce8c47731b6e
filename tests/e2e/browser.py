"""A minimal headless-Chromium driver for the end-to-end tests, standard library only.

It speaks the Chrome DevTools Protocol (CDP) over --remote-debugging-pipe: the browser reads
commands from its fd 3 and writes replies and events to its fd 4, each a JSON text ended by a NUL
byte. That needs no websocket client, no free port and no Selenium/Puppeteer.

    with Browser() as b:
        b.goto("http://127.0.0.1:8000/")
        b.wait_for("document.querySelector('#status').textContent === 'ready'")
        b.click(100, 200)
        b.screenshot("/tmp/console.png")
        assert not b.errors, b.errors

One tab, attached with a flat session (commands carry its sessionId). A reader thread hands
replies to the callers waiting on them and turns console errors, uncaught exceptions and failed
loads into readable strings (`errors`), except the 404 of the /favicon.ico that Chromium asks
each origin for by itself (see _is_favicon_fetch). If the tab's renderer crashes, that is an
error too, and every command but goto() fails at once until goto() has reloaded the tab.

If the Python process dies without close(), Chromium sees its pipe close and exits by itself;
only its temporary profile (attnserve-chromium-* in $TMPDIR) stays behind.
"""

import base64
import fcntl
import itertools
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse

# Chromium as root (containers, CI) has no usable sandbox; a GPU process is pointless headless;
# the Debian wrapper's own /dev/shm check misfires where findmnt prints several mounts, so pass
# --disable-dev-shm-usage ourselves (a small /dev/shm otherwise crashes renderers).
_FLAGS = (
    "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
    "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio",
)
_CLOSE_WAIT_S = 5.0
_LOG_TAIL_BYTES = 3000


class BrowserError(Exception):
    """Anything that went wrong driving the browser: a timeout, a CDP error, a thrown expression,
    a failed navigation, or the browser's death (with the tail of its log)."""


class _Reply:
    """One command's reply slot, filled by the reader thread."""

    def __init__(self):
        self.done = threading.Event()
        self.message = None


class Browser:
    """Headless Chromium, one tab. Context manager: closes the browser (and kills it if needed) on
    exit. Every call is thread-safe; `timeout` bounds each command and each wait."""

    def __init__(self, chromium: str = "chromium", width: int = 1280, height: int = 900,
                 timeout: float = 30.0):
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()   # one message on the pipe at a time
        self._state = threading.Condition()   # guards everything below; notified on each change
        self._replies: dict[int, _Reply] = {}
        self._errors: list[str] = []
        self._loads = 0
        self._dead = None                     # why the browser is gone, once it is
        self._crashed = False                 # the tab's renderer is gone until the next goto
        self._session = None
        self._pid = None
        self._cmd_w = self._msg_r = None      # our ends of the CDP pipes
        self._reader = None
        self._closed = False
        self._tmp = tempfile.mkdtemp(prefix="attnserve-chromium-")
        self._log_path = os.path.join(self._tmp, "chromium.log")
        try:
            self._launch(chromium)
            self._attach()
        except BaseException:
            self.close()
            raise

    # ---- public interface -------------------------------------------------------------------

    def goto(self, url: str) -> None:
        """Navigates the tab and waits for the page's load event."""
        with self._state:
            loads_before = self._loads
        result = self._command("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        if "loaderId" not in result:
            return  # a same-document navigation (only the fragment changed) fires no load event
        self._wait_state(lambda: self._loads > loads_before, self.timeout,
                         f"the load event of {url}")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited), as JSON-like
        Python data; None for undefined. A throwing expression raises BrowserError."""
        return self._evaluate(expression, self.timeout)

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.1):
        """Polls `expression` until its value is truthy (by Python's rules, so [] and {} are
        not) and returns it. Throws while polling count as not yet; the last one is reported."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        last_throw = None
        while True:
            try:
                value = self._evaluate(expression, max(deadline - time.monotonic(), interval))
                if value:
                    return value
            except BrowserError as e:
                if self._dead:
                    raise
                last_throw = e
            if time.monotonic() >= deadline:
                raise BrowserError(self._wait_failure(expression, timeout, last_throw))
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))

    def hover(self, x: float, y: float) -> None:
        """Moves the mouse to CSS pixel (x, y) of the viewport."""
        self._mouse("mouseMoved", x, y)

    def click(self, x: float, y: float) -> None:
        """A left click at (x, y). The pointer moves there first, as a user's would, so hover
        state and mouseenter handlers see it before the press."""
        self._mouse("mouseMoved", x, y)
        self._mouse("mousePressed", x, y, button="left", buttons=1, clickCount=1)
        self._mouse("mouseReleased", x, y, button="left", buttons=0, clickCount=1)

    def screenshot(self, path: str) -> None:
        """Writes a PNG of the whole page (beyond the viewport) to `path`."""
        size = self._command("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "scale": 1,
                "width": math.ceil(size["width"]), "height": math.ceil(size["height"])}
        result = self._command("Page.captureScreenshot",
                               {"format": "png", "captureBeyondViewport": True, "clip": clip})
        with open(path, "wb") as f:
            f.write(base64.b64decode(result["data"]))

    @property
    def errors(self) -> list[str]:
        """Every console error, uncaught exception and error log entry so far, oldest first."""
        with self._state:
            return list(self._errors)

    def clear_errors(self) -> None:
        with self._state:
            self._errors.clear()

    def close(self) -> None:
        """Asks the browser to quit, kills it after 5 s, and removes its profile. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pid is not None:
            self._quit_process()
        if self._cmd_w is not None:
            with self._write_lock:  # no command may write to the number once it is reused
                os.close(self._cmd_w)
                self._cmd_w = None
        if self._reader is not None:
            self._reader.join(timeout=_CLOSE_WAIT_S)
        if self._msg_r is not None and not (self._reader and self._reader.is_alive()):
            os.close(self._msg_r)  # (a reader still in read() keeps it: its number could be reused)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- launching and attaching --------------------------------------------------------------

    def _launch(self, chromium: str) -> None:
        executable = shutil.which(chromium)
        if executable is None:
            raise BrowserError(f"no Chromium executable {chromium!r} (Debian package chromium)")
        argv = [executable, *_FLAGS, f"--user-data-dir={os.path.join(self._tmp, 'profile')}",
                f"--window-size={self.width},{self.height}", "about:blank"]
        cmd_r, self._cmd_w = os.pipe()
        self._msg_r, msg_w = os.pipe()
        log_fd = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._pid = _spawn(argv, stdio_fd=log_fd, cdp_in=cmd_r, cdp_out=msg_w)
        finally:
            # The child holds its own copies; ours of its ends must go, or we'd never see EOF.
            for fd in (cmd_r, msg_w, log_fd):
                os.close(fd)
        self._reader = threading.Thread(target=self._read_loop, name="chromium-cdp", daemon=True)
        self._reader.start()

    def _attach(self) -> None:
        target_id = self._page_target()
        attached = self._command("Target.attachToTarget", {"targetId": target_id, "flatten": True},
                                 session=False)
        self._session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Inspector"):
            self._command(f"{domain}.enable")
        self._command("Emulation.setDeviceMetricsOverride",
                      {"width": self.width, "height": self.height, "deviceScaleFactor": 1,
                       "mobile": False})

    def _page_target(self) -> str:
        """The tab Chromium opened at start, or a new one if it has none (yet)."""
        targets = self._command("Target.getTargets", session=False)["targetInfos"]
        pages = [t["targetId"] for t in targets if t["type"] == "page"]
        if pages:
            return pages[0]
        return self._command("Target.createTarget", {"url": "about:blank"},
                             session=False)["targetId"]

    # ---- commands -----------------------------------------------------------------------------

    def _command(self, method: str, params: dict | None = None, *, session: bool = True,
                 timeout: float | None = None) -> dict:
        """Sends one CDP command and waits for its result."""
        reply, message_id = self._send(method, params, session)
        timeout = self.timeout if timeout is None else timeout
        if not reply.done.wait(timeout):
            with self._state:
                self._replies.pop(message_id, None)
            raise BrowserError(f"{method}: no reply in {timeout:g} s")
        if "error" in reply.message:
            error = reply.message["error"]
            raise BrowserError(f"{method}: {error.get('message')} {error.get('data', '')}".strip())
        return reply.message.get("result", {})

    def _send(self, method: str, params: dict | None, session: bool) -> tuple[_Reply, int]:
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        reply = _Reply()
        with self._state:
            if self._dead:
                raise BrowserError(f"{method}: {self._dead}")
            if self._crashed and session and method != "Page.navigate":
                raise BrowserError(f"{method}: the tab's renderer crashed (goto() reloads it)")
            self._replies[message_id] = reply
        try:
            self._write(json.dumps(message).encode() + b"\0")
        except OSError as e:
            with self._state:
                self._replies.pop(message_id, None)
            raise BrowserError(f"{method}: cannot write to the browser ({e}); "
                               f"{self._log_tail()}") from e
        return reply, message_id

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            if self._cmd_w is None:
                raise OSError("the browser is closed")
            _write_all(self._cmd_w, data)

    def _evaluate(self, expression: str, timeout: float):
        result = self._command("Runtime.evaluate",
                               {"expression": expression, "returnByValue": True,
                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            thrown = _exception_text(result["exceptionDetails"])
            raise BrowserError(f"{expression!r} threw: {thrown}")
        return _remote_value(result["result"])

    def _mouse(self, kind: str, x: float, y: float, **extra) -> None:
        self._command("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})

    def _wait_state(self, predicate, timeout: float, what: str) -> None:
        """Waits until predicate() (called with _state held) holds or the browser dies."""
        with self._state:
            if not self._state.wait_for(lambda: predicate() or self._dead, timeout):
                raise BrowserError(f"timed out after {timeout:g} s waiting for {what}")
            if not predicate():
                raise BrowserError(f"waiting for {what}: {self._dead}")

    def _wait_failure(self, expression: str, timeout: float | None, last_throw) -> str:
        seconds = self.timeout if timeout is None else timeout
        text = f"timed out after {seconds:g} s waiting for {expression!r}"
        if last_throw is not None:
            text += f"; last attempt: {last_throw}"
        return text + f"; page errors: {self.errors}"

    # ---- the reader thread --------------------------------------------------------------------

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._msg_r, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *messages, buffer = (buffer + chunk).split(b"\0")
            try:
                for raw in messages:
                    self._dispatch(json.loads(raw))
            except Exception as e:  # a driver bug: say so rather than let every wait time out
                self._mark_dead(f"cannot handle a DevTools message ({e!r}): {raw[:300]!r}")
                raise
        self._mark_dead("the browser closed its DevTools pipe (exited)")

    def _dispatch(self, message: dict) -> None:
        if "id" in message:
            with self._state:
                reply = self._replies.pop(message["id"], None)
            if reply is not None:  # else its caller gave up waiting
                reply.message = message
                reply.done.set()
            return
        if self._session is not None and message.get("sessionId") not in (None, self._session):
            return  # another target's event
        self._on_event(message["method"], message.get("params", {}))

    def _on_event(self, method: str, params: dict) -> None:
        error = _event_error(method, params)
        with self._state:
            if method == "Page.loadEventFired":
                self._loads += 1
            elif method == "Inspector.targetReloadedAfterCrash":
                self._crashed = False
            if error is not None:
                self._errors.append(error)
            self._state.notify_all()
        if method == "Inspector.targetCrashed":
            # A dead renderer answers nothing: fail what waits (and what comes) at once.
            with self._state:
                self._crashed = True
            self._fail_replies("the tab's renderer crashed")

    def _mark_dead(self, why: str) -> None:
        """Fails every waiting command: nothing more will come from the browser."""
        with self._state:
            self._dead = "the browser is closed" if self._closed else f"{why}; {self._log_tail()}"
            self._state.notify_all()
        self._fail_replies(self._dead)

    def _fail_replies(self, why: str) -> None:
        with self._state:
            replies, self._replies = self._replies, {}
        for reply in replies.values():
            reply.message = {"error": {"message": why}}
            reply.done.set()

    # ---- shutting down --------------------------------------------------------------------------

    def _quit_process(self) -> None:
        if not self._dead:
            try:
                self._command("Browser.close", session=False, timeout=_CLOSE_WAIT_S)
            except BrowserError:
                pass  # it may exit before replying; killing below covers a hung one
        if not _wait_pid(self._pid, _CLOSE_WAIT_S):
            os.kill(self._pid, signal.SIGKILL)
            _wait_pid(self._pid, None)

    def _log_tail(self) -> str:
        try:
            with open(self._log_path, "rb") as f:
                f.seek(max(os.path.getsize(self._log_path) - _LOG_TAIL_BYTES, 0))
                tail = f.read().decode(errors="replace").strip()
        except OSError:
            return "no Chromium log"
        return f"Chromium log ({self._log_path}) ends with:\n{tail}"


# ---- process helpers ---------------------------------------------------------------------------

def _spawn(argv: list[str], stdio_fd: int, cdp_in: int, cdp_out: int) -> int:
    """Starts argv with stdout/stderr on stdio_fd and the CDP pipe ends on fds 3 and 4.

    posix_spawn's dup2 actions place the fds without running Python in the forked child (unlike
    preexec_fn, unsafe with threads). Sources are first moved to fds >= 10 so that no dup2 onto
    0..4 can overwrite a source that a later action still needs."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (stdio_fd, cdp_in, cdp_out)]
    try:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_DUP2, high[0], 1), (os.POSIX_SPAWN_DUP2, high[0], 2),
                   (os.POSIX_SPAWN_DUP2, high[1], 3), (os.POSIX_SPAWN_DUP2, high[2], 4)]
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    finally:
        for fd in high:
            os.close(fd)


def _wait_pid(pid: int, timeout: float | None) -> bool:
    """Reaps pid; False if it is still running after timeout (None: wait as long as it takes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while os.waitpid(pid, 0 if deadline is None else os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
    except ChildProcessError:
        pass  # someone else reaped it (a waitpid(-1) elsewhere in the process)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---- turning CDP objects into Python values and readable text ----------------------------------

_UNSERIALIZABLE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf, "-0": -0.0}


def _remote_value(obj: dict):
    """A by-value Runtime.RemoteObject as Python data (numbers JSON can't carry included)."""
    if "value" in obj:
        return obj["value"]
    special = obj.get("unserializableValue")
    if special is None:
        return None  # undefined
    if special.endswith("n"):
        return int(special[:-1])  # a BigInt
    return _UNSERIALIZABLE[special]


def _describe(obj: dict) -> str:
    """A console argument (a RemoteObject by reference) in one line, much as DevTools shows it."""
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    if "preview" in obj and obj.get("subtype") != "error":
        return _preview_text(obj["preview"])
    description = obj.get("unserializableValue") or obj.get("description") or obj.get("type", "?")
    return description.splitlines()[0]  # an Error's description goes on with its stack


def _preview_text(preview: dict) -> str:
    """{a: 1, b: "x"} or [1, 2] from an ObjectPreview (which carries values as text)."""
    def shown(prop):
        return json.dumps(prop["value"]) if prop["type"] == "string" else prop.get("value", "?")
    is_array = preview.get("subtype") == "array"
    items = [shown(p) if is_array else f"{p['name']}: {shown(p)}" for p in preview["properties"]]
    if preview.get("overflow"):
        items.append("…")
    return ("[{}]" if is_array else "{{{}}}").format(", ".join(items))


_FORMAT_SPEC = re.compile(r"%[sdifoOc%]")


def _console_message(args: list[dict]) -> str:
    """The console's printf-like substitutions (console.error("bad %s", x)), then the rest."""
    if not args or not isinstance(args[0].get("value"), str):
        return " ".join(_describe(arg) for arg in args)
    rest = list(args[1:])

    def substitute(match):
        spec = match.group()
        if spec == "%%":
            return "%"
        if not rest:
            return spec
        arg = rest.pop(0)
        return "" if spec == "%c" else _describe(arg)  # %c is CSS styling: shows nothing

    head = _FORMAT_SPEC.sub(substitute, args[0]["value"])
    return " ".join([head, *(_describe(arg) for arg in rest)])


def _location(url: str | None, line: int | None) -> str:
    """ " (url:line)" with CDP's 0-based line shown 1-based, or "" where nothing is known."""
    if not url:
        return ""
    return f" ({url}:{line + 1})" if line is not None else f" ({url})"


def _top_frame(stack: dict | None) -> dict:
    frames = (stack or {}).get("callFrames") or [{}]
    return frames[0]


def _event_error(method: str, params: dict) -> str | None:
    """The entry for `errors` that an event makes, if any."""
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
        return _console_text(params)
    if method == "Runtime.exceptionThrown":
        return "exception: " + _exception_text(params["exceptionDetails"])
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return None if _is_favicon_fetch(params["entry"]) else _log_text(params["entry"])
    if method == "Inspector.targetCrashed":
        return "the tab's renderer crashed"
    return None


def _console_text(params: dict) -> str:
    frame = _top_frame(params.get("stackTrace"))
    message = _console_message(params.get("args", []))
    if params["type"] == "assert":
        # A failed console.assert() without a message reports the single argument
        # "console.assert"; DevTools shows "Assertion failed" (followed by any message).
        message = "Assertion failed" + ("" if message == "console.assert" else f": {message}")
    return (f"console.{params['type']}: {message}"
            f"{_location(frame.get('url'), frame.get('lineNumber'))}")


def _exception_text(details: dict) -> str:
    """'Uncaught TypeError: x is undefined (url:line)' from Runtime.ExceptionDetails."""
    text = details.get("text", "exception")
    exception = details.get("exception")
    if exception is not None:
        # The description carries the stack after its first line; the location says enough.
        text += " " + _describe(exception).splitlines()[0]
    url, line = details.get("url"), details.get("lineNumber")
    if not url:
        frame = _top_frame(details.get("stackTrace"))
        url, line = frame.get("url"), frame.get("lineNumber")
    return text + _location(url, line)


def _is_favicon_fetch(entry: dict) -> bool:
    """Whether a log entry is about /favicon.ico, which Chromium fetches by itself once per origin
    at no predictable time (often after the load event, even after the next navigation): a 404
    there says nothing about the page and would land in whichever check runs next. The price:
    a page that links /favicon.ico itself gets no error for it missing."""
    return (entry["source"] == "network"
            and urllib.parse.urlsplit(entry.get("url", "")).path == "/favicon.ico")


def _log_text(entry: dict) -> str:
    return (f"log {entry['level']} {entry['source']}: {entry['text']}"
            f"{_location(entry.get('url'), entry.get('lineNumber'))}")
