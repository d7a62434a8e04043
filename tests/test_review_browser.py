"""The HTML review in a real headless browser (Debian's chromium, DevTools protocol over a pipe).

What a reviewer sees: every proposal, rejected ones included, with verdicts, and working filters.
What an attacker cannot do: a function whose name, code, findings, audit events or model text
hold `<script>`, `"><img onerror=...>` or `</script>` must not run anything in the page. A
control page proves the harness notices script that does run.

CI needs: apt-get install -y chromium
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from optimizer.history import HistoryStore, build_review, render_html, review_command
from optimizer.history.canonical import sha256_hex, spec_hash
from sandbox import Sandbox
from tests.test_history import HOSTILE_TEXT, fn, make_run

PAYLOADS = ("<script>document.title='PWNED'</script>",
            "\"><img src=x onerror=\"document.title='PWNED'\">",
            "</script><script>document.title='PWNED'</script>")
HOSTILE_NAMES = (PAYLOADS[0], PAYLOADS[1] + "x")


class Browser:
    """Headless chromium driven through --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, profile: Path) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            pytest.fail("the browser test needs Debian's chromium: apt-get install -y chromium")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 and 4
            a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire, close_fds=False, start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)
            self._dismiss_dialogs(reply)

    def _dismiss_dialogs(self, event: dict[str, Any]) -> None:
        if event.get("method") == "Page.javascriptDialogOpening":  # never block on alert()
            message = {"id": 10**9 + self._id, "method": "Page.handleJavaScriptDialog",
                       "params": {"accept": True}, "sessionId": event.get("sessionId")}
            os.write(self._to_child, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise EOFError("chromium exited")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def wait_event(self, method: str, session: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            event = self._read(deadline)
            self.events.append(event)
            self._dismiss_dialogs(event)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)


class Page:
    """One loaded file in its own tab, with what happened while it loaded."""

    def __init__(self, browser: Browser, path: Path) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget",
                                    {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=self.session)
        browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=self.session)
        browser.wait_event("Page.loadEventFired", self.session)
        time.sleep(0.3)  # let any injected timer or error handler fire
        self.eval("0")  # drain events

    def eval(self, expression: str) -> Any:
        result = self.browser.send("Runtime.evaluate",
                                   {"expression": expression, "returnByValue": True},
                                   session=self.session)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def events(self, method: str) -> list[dict[str, Any]]:
        return [e for e in self.browser.events
                if e.get("method") == method and e.get("sessionId") == self.session]

    @property
    def csp_violations(self) -> list[str]:
        return [e["params"]["entry"]["text"] for e in self.events("Log.entryAdded")
                if "Content Security Policy" in e["params"]["entry"].get("text", "")]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def _hostile_records(store: HistoryStore) -> None:
    """Proposals whose names, code, findings, audit events and model text are all attacks."""
    store.record("llm_call", {"role": "optimizer", "model": PAYLOADS[1], "prompt_tokens": 1,
                              "completion_tokens": 1, "attempts": 1, "cached": False,
                              "request": [{"role": "user", "content": PAYLOADS[2]}],
                              "response": {"text": HOSTILE_TEXT, "tool_calls": [
                                  {"name": PAYLOADS[0], "arguments": PAYLOADS[2]}]},
                              "parse_errors": [PAYLOADS[0]]}, step=9)
    for name, passed in zip(HOSTILE_NAMES, (False, True), strict=True):
        code = (f"def f(n):\n    '''{PAYLOADS[2]}'''\n    return n  # {PAYLOADS[0]}\n"
                f"# {PAYLOADS[1]}\n")
        spec = {**fn("f", "", 1, code=code), "name": name, "description": PAYLOADS[1]}
        spec.pop("reason")
        c_hash, s_hash = sha256_hex(code), spec_hash(spec)
        finding = {"rule": f"static.{PAYLOADS[0]}", "line": 1, "col": 0,
                   "message": PAYLOADS[1] + PAYLOADS[2],
                   "severity": "warning" if passed else "error"}
        report = {"passed": passed, "function": name, "untested": False, "code_hash": c_hash,
                  "spec_hash": s_hash, "image_id": PAYLOADS[0], "policy_hash": "p",
                  "cached": False,
                  "stages": [{"name": PAYLOADS[0], "passed": passed, "skipped": False,
                              "duration_ms": 1.0, "findings": [finding]}],
                  "audit": [{"event": PAYLOADS[0], "detail": PAYLOADS[1],
                             "reported_by": PAYLOADS[2]}]}
        store.record("proposal", {"action": "add_function", "name": name, "reason": PAYLOADS[2],
                                  "spec": spec, "code_hash": c_hash, "parent": None, "slot": 1,
                                  "attempt": 1}, step=9)
        store.record("vet", {"name": name, "code_hash": c_hash, "spec_hash": s_hash,
                             "passed": passed, "report": report}, step=9)
        if passed:
            store.record("applied", {"action": "add_function", "name": name, "version": 99,
                                     "code_hash": c_hash}, step=9)
        else:
            store.record("refused", {"action": "add_function", "name": name,
                                     "why": PAYLOADS[0]}, step=9)
    store.record("call", {"function": HOSTILE_NAMES[1], "ok": False, "duration_ms": 3.0,
                          "error": {"kind": "exception", "type": PAYLOADS[0], "message": "x"},
                          "audit": [{"event": PAYLOADS[2], "detail": PAYLOADS[1]}]})
    store.record("approval", {"name": HOSTILE_NAMES[1], "version": 1, "verdict": "approve",
                              "who": PAYLOADS[0], "why": PAYLOADS[2],
                              "code_hash": sha256_hex(
                                  f"def f(n):\n    '''{PAYLOADS[2]}'''\n    return n  # "
                                  f"{PAYLOADS[0]}\n# {PAYLOADS[1]}\n")})


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox) -> Path:
    run = make_run(tmp_path_factory.mktemp("browser-run"), sandbox)
    with HistoryStore.open(run.path) as store:
        _hostile_records(store)
    assert review_command(["show", str(run.path)]) == 0  # verifies, and writes review.html
    return run.path


def test_the_report_shows_every_proposal_rejected_ones_too(browser: Browser,
                                                           report: Path) -> None:
    review = build_review(report)
    page = Page(browser, report / "review.html")
    assert page.csp_violations == []  # the stylesheet is allowed by its hash; nothing else ran
    assert "history intact" in page.eval("document.getElementById('verdict').textContent")
    proposals = review.of_kind("proposal")
    assert page.eval("document.querySelectorAll('tr.proposal').length") == len(proposals) == 9
    shown = page.eval("[...document.querySelectorAll('tr.proposal td:first-child')]"
                      ".map(td => +td.textContent)")
    assert shown == [r.seq for r in proposals]
    articles = page.eval("Object.fromEntries([...document.querySelectorAll('article.version')]"
                         ".map(a => [a.dataset.ref, a.dataset.status]))")
    assert articles == {v.ref: v.status for v in review.versions}
    rejected = {ref for ref, status in articles.items() if status == "rejected"}
    assert rejected == {"cwd_len@1", "helper@1", f"{HOSTILE_NAMES[0]}@1"}
    text = page.eval("document.body.innerText")
    assert "static.import" in text and "static.dunder" in text
    assert "import of 'os' is not allowed" in text
    for section in ("summary", "library", "functions", "proposals", "calls", "llm",
                    "timeline"):
        assert page.eval(f"!!document.getElementById('{section}')"), section
    library = page.eval("[...document.querySelectorAll('#library tbody tr td:first-child')]"
                        ".map(td => td.textContent)")
    assert library == sorted(review.best)


def _visible_versions(page: Page) -> list[str]:
    return list(page.eval("[...document.querySelectorAll('article.version')]"
                          ".filter(a => a.offsetParent !== null).map(a => a.dataset.ref)"))


def test_filters_show_rejected_and_flagged_versions(browser: Browser, report: Path) -> None:
    review = build_review(report)
    page = Page(browser, report / "review.html")
    every = _visible_versions(page)
    assert sorted(every) == sorted(v.ref for v in review.versions)
    expected = {"rejected": {v.ref for v in review.versions if v.rejected},
                "flagged": {v.ref for v in review.versions if v.flagged},
                "approved": {v.ref for v in review.versions if v.approved},
                "best": {v.ref for v in review.versions if v.in_best},
                "trial": {v.ref for v in review.versions if v.in_last_trial}}
    assert all(expected.values()), expected
    for name, refs in expected.items():
        page.eval(f"document.querySelector('label[for=f-{name}]').click()")
        assert set(_visible_versions(page)) == refs, name
    page.eval("document.querySelector('label[for=f-all]').click()")
    assert sorted(_visible_versions(page)) == sorted(every)


def test_hostile_names_and_code_cannot_inject_script(browser: Browser, report: Path) -> None:
    page = Page(browser, report / "review.html")
    title = page.eval("document.title")
    assert title.startswith("fnforge review: run ") and "PWNED" not in title
    assert page.events("Page.javascriptDialogOpening") == []
    assert page.events("Runtime.exceptionThrown") == []
    assert page.csp_violations == []  # not even an attempt reached the parser as markup
    assert page.eval("document.scripts.length") == 0
    assert page.eval("document.images.length") == 0
    assert page.eval("[...document.querySelectorAll('*')].filter(el => [...el.attributes]"
                     ".some(a => a.name.startsWith('on'))).length") == 0
    text = page.eval("document.body.innerText")
    for payload in PAYLOADS:
        assert payload in text  # shown, as text
    refs = page.eval("[...document.querySelectorAll('article.version')].map(a => a.dataset.ref)")
    assert f"{HOSTILE_NAMES[0]}@1" in refs and f"{HOSTILE_NAMES[1]}@1" in refs
    width = page.eval("[document.documentElement.scrollWidth, "
                      "document.documentElement.clientWidth]")
    assert width[0] <= width[1]  # no long hostile word pushes the page sideways
    html = (report / "review.html").read_text()
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "script-src 'none'" in html


def test_the_harness_notices_script_that_runs(browser: Browser, tmp_path: Path) -> None:
    """A control: the same payloads unescaped and without the policy do run."""
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><head><title>control</title></head><body>"
                       f"{PAYLOADS[1]}</body></html>")
    page = Page(browser, control)
    deadline = time.monotonic() + 5
    while page.eval("document.title") != "PWNED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert page.eval("document.title") == "PWNED"


def test_a_report_with_a_broken_history_says_so(browser: Browser, report: Path,
                                                tmp_path: Path) -> None:
    broken = tmp_path / "run"
    shutil.copytree(report, broken)
    import sqlite3

    with sqlite3.connect(broken / "history.sqlite") as db:
        db.execute("UPDATE records SET data = replace(data, 'getcwd', 'getpid')")
    assert review_command(["show", str(broken)]) == 1
    page = Page(browser, broken / "review.html")
    verdict = page.eval("document.getElementById('verdict').textContent")
    assert "BROKEN" in verdict
    assert page.eval("document.querySelectorAll('#problems tbody tr').length") >= 1
    assert render_html(build_review(broken)).count("verdict broken") == 1
