"""The HTML review: one self-contained file, no network, no script at all.

Why no script: the page shows hostile text (function names, code, findings, model output). Every
such string is HTML-escaped (after control and bidirectional characters are made visible, so
Trojan Source cannot reorder what a reviewer reads), and the Content-Security-Policy allows no
script whatever, only this file's own stylesheet (by its hash): a missed escape still cannot run
code. Filters are CSS (radio buttons and sibling selectors); highlighting is done here with the
standard library's tokenizer; diffs come from difflib.
"""

from __future__ import annotations

import base64
import builtins
import difflib
import hashlib
import html
import io
import json
import keyword
import tokenize
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sandbox import terminal_safe

from .review import CallStats, FunctionVersion, ProposalInfo, Review, known, summarize

__all__ = ["CSP", "STYLE", "diff_html", "e", "highlight", "render_html", "t"]

MAX_TIMELINE = 20_000
MAX_TEXT = 12_000

STYLE = """
:root{--bg:#fdfdfc;--fg:#1d1f21;--mut:#666;--line:#ddd;--bad:#b3261e;--ok:#1b6e3a;
--warn:#8a5a00;--code:#f5f5f2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
header,main{max-width:1200px;margin:0 auto;padding:0 16px}
header{padding-top:12px;border-bottom:1px solid var(--line)}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;
border-bottom:1px solid var(--line)}h3{font-size:16px;margin:18px 0 6px}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0ee}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{margin:0;white-space:pre-wrap;word-break:break-word}
.mono{font-family:ui-monospace,monospace;font-size:12px;overflow-wrap:anywhere}
.t,pre,h3,h4{overflow-wrap:anywhere}
.verdict{padding:8px 12px;border-radius:4px;font-weight:600}
.verdict.ok{background:#e4f3e8;color:var(--ok)}
.verdict.broken{background:#fbe3e1;color:var(--bad)}
.badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;margin-right:4px;
border:1px solid currentColor}
.badge.rejected,.badge.refused,.badge.deny,.badge.broken,.badge.tampered{color:var(--bad)}
.badge.passed,.badge.applied,.badge.approve,.badge.best{color:var(--ok)}
.badge.flagged,.badge.pending,.badge.unreviewed{color:var(--warn)}
.version{border:1px solid var(--line);border-radius:6px;padding:8px 12px;margin:10px 0;
background:#fff}
.version.rejected{border-left:5px solid var(--bad)}
.version.flagged{border-left:5px solid var(--warn)}
.version.rejected.flagged{border-left:5px solid var(--bad)}
.codebox{display:flex;background:var(--code);border:1px solid var(--line);overflow:auto}
.gutter{color:#999;text-align:right;padding:4px 6px;border-right:1px solid var(--line);
user-select:none}
.src{padding:4px 8px;flex:1}
.tk-k{color:#7a2b9a;font-weight:600}.tk-s{color:#1b6e3a}.tk-c{color:#888;font-style:italic}
.tk-n{color:#a0522d}.tk-b{color:#0b5cad}.tk-f{color:#0b5cad;font-weight:600}
.diff{background:var(--code);border:1px solid var(--line);padding:4px 8px}
.d-add{background:#e4f3e8;display:block}.d-del{background:#fbe3e1;display:block}
.d-hunk{color:#0b5cad;display:block}.d-meta{color:#666;display:block}
details{margin:4px 0}summary{cursor:pointer;color:#0b5cad}
.muted{color:var(--mut)}
.filters{margin:10px 0}
.filters label{display:inline-block;padding:3px 10px;margin:2px;border:1px solid var(--line);
border-radius:14px;cursor:pointer;background:#fff}
.filter-input{position:absolute;left:-10000px}
#f-all:checked~header label[for=f-all],#f-rejected:checked~header label[for=f-rejected],
#f-flagged:checked~header label[for=f-flagged],
#f-approved:checked~header label[for=f-approved],
#f-best:checked~header label[for=f-best],
#f-trial:checked~header label[for=f-trial]{background:#1d1f21;color:#fff}
#f-rejected:checked~main .filterable:not(.rejected),
#f-flagged:checked~main .filterable:not(.flagged),
#f-approved:checked~main .filterable:not(.approved),
#f-best:checked~main .filterable:not(.best),
#f-trial:checked~main .filterable:not(.trial){display:none}
tr.k-call td{color:#444}tr.rejected td{background:#fdf0ef}
"""

STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src 'none'; "
       "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'")
"""No script, no network, no plugin, no form; only the stylesheet above (by hash)."""


def e(value: object, limit: int | None = None) -> str:
    """Untrusted text for HTML text or a quoted attribute: controls shown, then escaped."""
    if value is None:
        return ""
    return html.escape(terminal_safe(value, limit), quote=True)


def t(value: object, limit: int | None = None) -> str:
    """Free text in a table cell: escaped, and breakable anywhere so a long hostile word
    cannot push the page sideways (only this text, not its neighbours, may break)."""
    return f'<span class="t">{e(value, limit)}</span>' if value is not None else ""


# -- highlighting and diffs ----------------------------------------------------------------------
_BUILTINS = frozenset(dir(builtins))


def highlight(code: str) -> str:
    """Python source as escaped HTML with token classes; malformed code degrades to plain."""
    lines: list[str] = []
    reader = io.StringIO(code).readline

    def readline() -> str:
        line = reader()
        if line:
            lines.append(line)
        return line

    starts = [0]
    out: list[str] = []
    pos = 0
    after_def = False

    def offset(row: int, col: int) -> int:
        while len(starts) <= row:
            index = len(starts) - 1
            starts.append(starts[-1] + (len(lines[index]) if index < len(lines) else 0))
        return starts[row - 1] + col

    try:
        for tok in tokenize.generate_tokens(readline):
            if tok.type in (tokenize.ENDMARKER, tokenize.NEWLINE, tokenize.NL,
                            tokenize.INDENT, tokenize.DEDENT):
                continue
            start, end = offset(*tok.start), offset(*tok.end)
            if start < pos or end > len(code) or code[start:end] != tok.string:
                continue
            css = _token_class(tok, after_def)
            after_def = tok.type == tokenize.NAME and tok.string in ("def", "class")
            if css is None:
                continue
            out.append(e(code[pos:start]))
            out.append(f'<span class="tk-{css}">{e(tok.string)}</span>')
            pos = end
    except (tokenize.TokenError, SyntaxError, IndexError, ValueError):
        pass
    out.append(e(code[pos:]))
    return "".join(out)


def _token_class(tok: tokenize.TokenInfo, after_def: bool) -> str | None:
    if tok.type == tokenize.COMMENT:
        return "c"
    if tok.type == tokenize.STRING:
        return "s"
    if tok.type == tokenize.NUMBER:
        return "n"
    if tok.type == tokenize.NAME:
        if after_def:
            return "f"
        if keyword.iskeyword(tok.string):
            return "k"
        if tok.string in _BUILTINS:
            return "b"
    return None


def code_block(code: str) -> str:
    numbers = "\n".join(str(i) for i in range(1, code.count("\n") + 2 - code.endswith("\n")))
    return (f'<div class="codebox"><pre class="gutter">{numbers}</pre>'
            f'<pre class="src"><code>{highlight(code)}</code></pre></div>')


def diff_html(old: str, new: str, old_label: str, new_label: str) -> str:
    """A unified diff (difflib), each line escaped and classed."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), old_label, new_label,
                                 lineterm="", n=3)
    out = []
    for line in lines:
        if line.startswith(("+++", "---")):
            css = "d-meta"
        elif line.startswith("+"):
            css = "d-add"
        elif line.startswith("-"):
            css = "d-del"
        elif line.startswith("@@"):
            css = "d-hunk"
        else:
            css = ""
        out.append(f'<span class="{css}">{e(line) or " "}</span>' if css else
                   f"{e(line)}\n")
    if not out:
        return '<p class="muted">No change in the code (only the spec differs).</p>'
    return f'<pre class="diff"><code>{"".join(out)}</code></pre>'


# -- the page ------------------------------------------------------------------------------------
def _when(t: float | None) -> str:
    if t is None:
        return ""
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


_BADGE_CLASSES = frozenset({"rejected", "refused", "deny", "broken", "tampered", "passed",
                            "applied", "approve", "best", "trial", "flagged", "pending",
                            "unreviewed", "not-vetted"})


def _badge(text: str, css: str | None = None) -> str:
    """A badge; its class is one of the stylesheet's (anything else, data from the database
    included, becomes "tampered"), its text escaped."""
    cls = (css or text).replace(" ", "-")
    return (f'<span class="badge {cls if cls in _BADGE_CLASSES else "tampered"}">'
            f"{e(text)}</span>")


def _table(head: Iterable[str], rows: Iterable[str], css: str = "") -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows)
    return f'<table class="{css}"><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>'


class _Page:
    def __init__(self, review: Review) -> None:
        self.r = review
        self.ids = {id(v): f"v-{i}" for i, v in enumerate(review.versions, 1)}

    def link(self, v: FunctionVersion | None, text: str | None = None) -> str:
        if v is None:
            return '<span class="muted">unknown (not proposed in this run)</span>'
        return f'<a href="#{self.ids[id(v)]}">{t(text or v.ref)}</a>'

    def classes(self, v: FunctionVersion) -> str:
        css = ["filterable"]
        css += ["rejected"] if v.rejected else []
        css += ["flagged"] if v.flagged else []
        css += ["approved"] if v.approved else []
        css += ["best"] if v.in_best else []
        css += ["trial"] if v.in_last_trial else []
        return " ".join(css)

    def render(self) -> str:
        r = self.r
        rejected = sum(v.rejected for v in r.versions)
        flagged = sum(v.flagged for v in r.versions)
        approved = sum(v.approved for v in r.versions)
        title = f"fnforge review: run {e(r.run_id or 'unknown', 120)}"
        radios = "".join(
            f'<input type="radio" class="filter-input" name="filter" id="f-{k}"'
            f'{" checked" if k == "all" else ""}>'
            for k in ("all", "rejected", "flagged", "approved", "best", "trial"))
        filters = (
            '<nav class="filters" id="filters">Show versions: '
            f'<label for="f-all">all ({len(r.versions)})</label>'
            f'<label for="f-rejected">rejected ({rejected})</label>'
            f'<label for="f-flagged">flagged ({flagged})</label>'
            f'<label for="f-approved">approved ({approved})</label>'
            f'<label for="f-best">best library ({len(r.best)})</label>'
            f'<label for="f-trial">last trial set ({len(r.last_trial)})</label></nav>')
        body = "".join([self.summary(), self.problems(), self.library(), self.functions(),
                        self.proposals(), self.calls(), self.llm_calls(), self.metrics(),
                        self.timeline()])
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="referrer" content="no-referrer">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{STYLE}</style></head><body>"
            f"{radios}<header><h1>{title}</h1>{self.verdict()}{filters}</header>"
            f"<main>{body}</main></body></html>\n")

    def verdict(self) -> str:
        v = self.r.verify
        css = "ok" if v.ok else "broken"
        return f'<p class="verdict {css}" id="verdict">{e(v.summary())}</p>'

    def summary(self) -> str:
        r = self.r
        kinds = Counter(rec.kind for rec in r.records)
        conversations = r.of_kind("conversation")
        correct = sum(bool(c.data.get("correct")) for c in conversations)
        calls = r.of_kind("call")
        failed = sum(not c.data.get("ok") for c in calls)
        rows = [("run id", e(r.run_id or "unknown")),
                ("records", str(len(r.records))),
                ("head", f'<span class="mono">{e(r.verify.head_seq)} '
                         f'{e(r.verify.head_hash)}</span>'),
                ("history file", e(r.verify.path)),
                ("period", f"{_when(r.records[0].time if r.records else None)} to "
                           f"{_when(r.records[-1].time if r.records else None)} UTC"),
                ("optimizer LLM calls", str(kinds["llm_call"])),
                ("proposals", f"{len(r.proposals)} ({len(r.removals)} removals)"),
                ("function versions", f"{len(r.versions)}: "
                                      f"{sum(v.passed for v in r.versions)} passed vetting, "
                                      f"{sum(v.rejected for v in r.versions)} rejected"),
                ("approvals", str(kinds["approval"])),
                ("conversations", f"{len(conversations)} ({correct} correct)"),
                ("sandboxed calls", f"{len(calls)} ({failed} failed)")]
        body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f'<section id="summary"><h2>Summary</h2><table>{body}</table></section>'

    def problems(self) -> str:
        v = self.r.verify
        if v.ok:
            return ""
        rows = [f"<tr><td>{e(p.where)}</td><td>{e(p.check)}</td><td>{t(p.message)}</td></tr>"
                for p in v.problems]
        return ('<section id="problems"><h2>Verification problems</h2>'
                + _table(["where", "check", "problem"], rows) + "</section>")

    def library(self) -> str:
        """The best set first: it is what `eval` and a deployment run, so what to approve."""
        best = self.library_table(self.r.best, "The best library is empty: eval and a "
                                  "deployment run the agent without functions.")
        trial = self.library_table(self.r.last_trial, "The last trial set is empty.")
        return ('<section id="library"><h2>Best library (library.json)</h2>'
                '<p class="muted">The set that scored best: the run saves it as library.json; '
                "<code>eval</code>, <code>review lock</code> and a deployment use it.</p>"
                f"{best}</section>"
                '<section id="last-trial"><h2>Last trial set</h2>'
                '<p class="muted">What the optimizer held when the run stopped; not deployed '
                "unless it is also the best.</p>"
                f"{trial}</section>")

    def library_table(self, library: dict[str, FunctionVersion | None], empty: str) -> str:
        rows = []
        for name, v in sorted(library.items()):
            if v is None:
                rows.append(f"<tr><td>{t(name)}</td><td colspan=\"4\">"
                            f"{self.link(None)}</td></tr>")
                continue
            rows.append(f"<tr><td>{t(name)}</td><td>{self.link(v)}</td>"
                        f'<td class="mono">{e(v.code_hash[:16])}</td>'
                        f"<td>{self.approval_badge(v)}</td>"
                        f"<td>{v.calls.calls} calls, {v.calls.failures} failed; used in "
                        f"{v.used} of {v.offered} conversations that offered it</td></tr>")
        if not rows:
            return f'<p class="muted">{empty}</p>'
        return _table(["name", "version", "code hash", "review", "calls"], rows)

    def approval_badge(self, v: FunctionVersion) -> str:
        a = v.approval
        if a is None:
            return _badge("unreviewed")
        return _badge(f"{a.verdict} by {a.who}"[:120], a.verdict)

    def functions(self) -> str:
        parts = ['<section id="functions"><h2>Function versions</h2>']
        if not self.r.versions:
            parts.append('<p class="muted">No function was proposed.</p>')
        for name, versions in sorted(self.r.by_name().items()):
            parts.append(f'<h3 class="fname">{e(name)}</h3>')
            parts.extend(self.version(v) for v in versions)
        parts.append("</section>")
        return "".join(parts)

    def version(self, v: FunctionVersion) -> str:
        badges = [_badge(v.status)]
        if v.flagged:
            badges.append(_badge("flagged: " + ", ".join(v.flag_reasons), "flagged"))
        if v.in_best:
            badges.append(_badge("in the best library (deployed)", "best"))
        if v.in_last_trial:
            badges.append(_badge("in the last trial set", "trial"))
        badges.append(self.approval_badge(v))
        models = ", ".join(v.models) or "unknown"
        parts = [
            f'<article class="version {self.classes(v)}" id="{self.ids[id(v)]}" '
            f'data-ref="{e(v.ref)}" data-status="{e(v.status)}">',
            f'<h4 class="ref">{e(v.ref)}</h4><p>{"".join(badges)}</p>',
            f"<p>Proposed by model <b>{e(models)}</b>; code hash "
            f'<span class="mono">{e(v.code_hash)}</span>; imports: '
            f'{e(", ".join(v.imports) or "none")}</p>',
            self.version_proposals(v.proposals),
            f"<details open><summary>code</summary>{code_block(v.code)}</details>"]
        spec = _spec_text(v)
        parts.append(f'<details open class="spec"><summary>description and spec (spec hash '
                     f'<span class="mono">{e(v.spec_hash[:16])}</span>)</summary>'
                     f"<pre>{e(spec)}</pre></details>")
        if v.previous is not None:
            p = v.previous
            spec_diff = diff_html(_spec_text(p), spec, p.ref, v.ref).replace(
                "No change in the code (only the spec differs).", "No change in the spec.")
            parts.append(f"<details open><summary>diff to {self.link(p)}</summary>"
                         f"<h5>code</h5>{diff_html(p.code, v.code, p.ref, v.ref)}"
                         f'<h5>spec</h5><div class="spec-diff">{spec_diff}</div></details>')
        else:
            parts.append('<p class="muted">First version of this name.</p>')
        for vet in v.vets:
            parts.append(self.vet(vet.seq, vet.passed, vet.stages, vet.untested, vet.cached))
        audit = v.audit
        if audit:
            parts.append("<h5>Audit events</h5>" + _table(
                ["event", "detail", "reported by"],
                (f"<tr><td>{t(a.get('event'))}</td><td>{t(a.get('detail'), 500)}</td>"
                 f"<td>{t(a.get('reported_by', ''))}</td></tr>" for a in audit[:200])))
        parts.append(self.call_stats(v.calls))
        if v.approvals:
            parts.append("<h5>Approvals</h5>" + _table(
                ["verdict", "who", "why", "when", "record"],
                (f"<tr><td>{_badge(a.verdict)}</td><td>{t(a.who)}</td><td>{t(a.why)}</td>"
                 f"<td>{_when(a.time)}</td><td>{a.seq}</td></tr>" for a in v.approvals)))
        parts.append("</article>")
        return "".join(parts)

    def version_proposals(self, proposals: list[ProposalInfo]) -> str:
        rows = []
        for p in proposals:
            why = e(p.why, 2000) if p.why else ""
            rows.append(f"<tr><td>{p.seq}</td><td>{e(p.step)}</td><td>{e(p.action)}</td>"
                        f"<td>{t(p.model or 'unknown')}</td><td>{_badge(p.outcome)}</td>"
                        f"<td>{t(p.reason, 1000)}</td><td><pre>{why}</pre></td></tr>")
        return "<h5>Proposals</h5>" + _table(
            ["record", "step", "action", "model", "outcome", "reason", "why not applied"],
            rows)

    def vet(self, seq: int, passed: bool, stages: list[dict[str, Any]], untested: bool,
            cached: bool) -> str:
        rows = []
        for s in stages:
            result = "skipped" if s.get("skipped") else ("passed" if s.get("passed")
                                                         else "FAILED")
            findings = "".join(self.finding(f) for f in s.get("findings", [])
                               if isinstance(f, dict))
            rows.append(f"<tr><td>{t(s.get('name'))}</td>"
                        f"<td>{_badge(result, 'passed' if result != 'FAILED' else 'rejected')}"
                        f"</td><td>{e(s.get('duration_ms'))} ms</td>"
                        f"<td><ul>{findings}</ul></td></tr>")
        notes = (" (untested: no unit tests)" if untested else "") + \
            (" (cached verdict)" if cached else "")
        head = f"<h5>Vetting, record {seq}: {_badge('passed' if passed else 'rejected')}" \
               f"{e(notes)}</h5>"
        return head + _table(["stage", "result", "time", "findings"], rows, "vet")

    @staticmethod
    def finding(f: dict[str, Any]) -> str:
        severity = known(f.get("severity", "error"), ("error", "warning"))
        css = {"error": "rejected", "warning": "flagged"}.get(severity, "tampered")
        return (f"<li>{_badge(severity, css)}<b>{t(f.get('rule'))}</b> line "
                f"{e(f.get('line'))}:{e(f.get('col'))}: {t(f.get('message'), 2000)}</li>")

    def call_stats(self, c: CallStats) -> str:
        if not c.calls:
            return '<p class="muted">No sandboxed calls recorded.</p>'
        errors = ", ".join(f"{e(k)} x{n}" for k, n in c.errors.most_common(10)) or "none"
        return (f"<p>Calls: {c.calls}, failures: {c.failures}, timeouts: {c.timeouts}, "
                f"out of memory: {c.oom}, mean {c.total_ms / c.calls:.1f} ms; "
                f"errors: {errors}</p>")

    def proposals(self) -> str:
        rows = []
        for p in self.r.proposals:
            version = next((v for v in self.r.versions
                            if v.name == p.name and v.version == p.version), None)
            css = self.classes(version) if version is not None else "filterable"
            if p.outcome in ("rejected", "refused"):
                css += " rejected" if "rejected" not in css.split() else ""
            target = self.link(version) if version is not None else t(p.name)
            rows.append(f'<tr class="proposal {css}"><td>{p.seq}</td><td>{e(p.step)}</td>'
                        f"<td>{e(p.action)}</td><td>{target}</td>"
                        f"<td>{t(p.model or 'unknown')}</td><td>{_badge(p.outcome)}</td>"
                        f"<td>{t(p.reason, 300)}</td></tr>")
        return ('<section id="proposals"><h2>Every proposal</h2>'
                + _table(["record", "step", "action", "function", "model", "outcome",
                          "reason"], rows) + "</section>")

    def calls(self) -> str:
        rows = []
        for v in self.r.versions:
            if v.calls.calls:
                rows.append(self.call_row(self.link(v), v.calls))
        for name, stats in sorted(self.r.unattributed_calls.items()):
            rows.append(self.call_row(f"{e(name)} (version unknown)", stats))
        if self.r.code_calls.calls:
            rows.append(self.call_row("code blocks", self.r.code_calls))
        table = _table(["function", "calls", "failures", "timeouts", "out of memory",
                        "audit events", "errors"], rows) if rows else \
            '<p class="muted">No sandboxed calls recorded.</p>'
        return f'<section id="calls"><h2>Calls and failures</h2>{table}</section>'

    @staticmethod
    def call_row(label: str, c: CallStats) -> str:
        errors = ", ".join(f"{e(k)} x{n}" for k, n in c.errors.most_common(5))
        return (f"<tr><td>{label}</td><td>{c.calls}</td><td>{c.failures}</td>"
                f"<td>{c.timeouts}</td><td>{c.oom}</td><td>{len(c.audit)}</td>"
                f"<td>{errors}</td></tr>")

    def llm_calls(self) -> str:
        parts = ['<section id="llm"><h2>Optimizer LLM calls</h2>']
        records = self.r.of_kind("llm_call")
        if not records:
            parts.append('<p class="muted">None recorded.</p>')
        for rec in records:
            d = rec.data
            parts.append(
                f'<details class="llm"><summary>record {rec.seq}, step {e(rec.step)}: '
                f"{e(summarize(rec))}</summary>"
                f'<p class="mono">request {e(d.get("request_hash", ""))}<br>response '
                f'{e(d.get("response_hash", ""))}</p>'
                f"<h5>Response</h5><pre>{self.response(d.get('response'))}</pre>"
                f"<h5>Request</h5>{self.messages(d.get('request'))}</details>")
        parts.append("</section>")
        return "".join(parts)

    @staticmethod
    def response(response: Any) -> str:
        if not isinstance(response, dict):
            return e(response, MAX_TEXT)
        text = e(response.get("text") or "", MAX_TEXT)
        calls = response.get("tool_calls") or []
        shown = "".join(f"\n[tool call] {e(c.get('name'))}: {e(c.get('arguments'), MAX_TEXT)}"
                        for c in calls if isinstance(c, dict))
        return text + shown

    @staticmethod
    def messages(messages: Any) -> str:
        if not isinstance(messages, list):
            return f"<pre>{e(messages, MAX_TEXT)}</pre>"
        out = []
        for m in messages:
            if isinstance(m, dict):
                content = m.get("content")
                text = content if isinstance(content, str) else json.dumps(content)
                out.append(f"<p><b>{e(m.get('role'))}</b></p><pre>{e(text, MAX_TEXT)}</pre>")
        return "".join(out)

    def metrics(self) -> str:
        records = self.r.of_kind("metrics")
        if not records:
            return ""
        keys = sorted({k for rec in records for k, v in rec.data.items()
                       if not isinstance(v, dict | list)})[:12]
        rows = ["<tr>" + "".join(f"<td>{t(rec.data.get(k, ''))}</td>" for k in keys) + "</tr>"
                for rec in records]
        return ('<section id="metrics"><h2>Metrics</h2>'
                + _table([e(k) for k in keys], rows) + "</section>")

    def timeline(self) -> str:
        rows = []
        rejected = {p.seq for p in self.r.proposals if p.outcome in ("rejected", "refused")}
        for rec in self.r.records[:MAX_TIMELINE]:
            css = f"k-{e(rec.kind)}" + (" rejected" if rec.seq in rejected else "")
            rows.append(f'<tr class="{css}"><td>{rec.seq}</td><td>{_when(rec.time)}</td>'
                        f"<td>{e(rec.step)}</td><td>{e(rec.epoch)}</td><td>{e(rec.kind)}</td>"
                        f"<td>{t(summarize(rec), 400)}</td></tr>")
        more = len(self.r.records) - MAX_TIMELINE
        note = f'<p class="muted">{more} more records: see `review export`.</p>' \
            if more > 0 else ""
        return ('<section id="timeline"><h2>Timeline</h2>'
                + _table(["record", "time (UTC)", "step", "epoch", "kind", "what"], rows,
                         "timeline") + note + "</section>")


def _spec_text(v: FunctionVersion) -> str:
    """The spec but its code (shown above it), as the reviewer compares it between versions."""
    return json.dumps(v.spec_without_code, indent=1, sort_keys=True, ensure_ascii=False)


def render_html(review: Review) -> str:
    """The whole report as one string (UTF-8 when written)."""
    return _Page(review).render()
