"""What a security reviewer asks of a history, derived from its records (nothing stored twice).

A function *version* is the n-th distinct spec of a name in the run (NAME@1, NAME@2, ...), in
the order proposals first showed it: any change to the code, the description, the parameters or
the tests is a new version. Approvals bind to a version's name, number, code hash and spec hash,
so a revision that keeps the code but changes the spec needs its own approval; lock files name
versions that way. Two libraries are replayed from applied/decision/registered records
(roll-backs included): the best set, which the run saves as library.json and `eval` and a
deployment use, and the last trial set, what the optimizer held when the run stopped (scored or
not, it is not what runs afterwards).

Enumerated fields read from the database (verdicts, actions, decisions) are shown only as one of
their known values; anything else is shown as "tampered" (`known`).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnknownVersion
from .canonical import sha256_hex, spec_hash
from .store import Record
from .verify import VerifyReport, read_history

__all__ = [
    "ApprovalInfo",
    "CallStats",
    "FunctionVersion",
    "ProposalInfo",
    "Review",
    "VetInfo",
    "build_review",
    "known",
    "parse_ref",
    "summarize",
]

_REF = re.compile(r"(?P<name>[^@\s]{1,200})@(?P<version>[1-9][0-9]{0,8})\Z")

TAMPERED = "tampered"
VERDICTS = ("approve", "deny")
ACTIONS = ("add_function", "revise_function", "remove_function", "terminate")
DECISIONS = ("first", "accepted", "accepted_tie", "rolled_back", "tie_rejected")


def known(value: Any, allowed: tuple[str, ...]) -> str:
    """An enumerated field from the database as one of its known values, else "tampered":
    the report never shows (or puts into markup) a value fnforge did not write."""
    return value if isinstance(value, str) and value in allowed else TAMPERED


def parse_ref(ref: str) -> tuple[str, int]:
    """"NAME@VERSION" -> (name, version); UnknownVersion if it is not of that form."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if match is None:
        raise UnknownVersion(f"{ref!r:.80} is not NAME@VERSION (for example add@2); `python -m "
                             "optimizer review RUN` lists the versions")
    return match["name"], int(match["version"])


@dataclass
class VetInfo:
    seq: int
    passed: bool
    untested: bool
    cached: bool
    stages: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    spec_hash: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [f for s in self.stages for f in s.get("findings", [])
                if f.get("severity", "error") == "error"]

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [f for s in self.stages for f in s.get("findings", [])
                if f.get("severity") == "warning"]


@dataclass
class ProposalInfo:
    seq: int
    step: int | None
    time: float
    action: str
    name: str
    reason: str
    model: str | None
    code_hash: str | None
    spec_hash: str | None
    parent: str | None
    version: int | None = None
    vet: VetInfo | None = None
    outcome: str = "pending"  # applied | rejected | refused | pending
    why: str = ""


@dataclass
class ApprovalInfo:
    seq: int
    time: float
    name: str
    version: int
    verdict: str  # one of VERDICTS, or TAMPERED
    who: str
    why: str
    code_hash: str
    spec_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "verdict": self.verdict, "who": self.who,
                "why": self.why}


@dataclass
class CallStats:
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    oom: int = 0
    total_ms: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def add(self, data: dict[str, Any]) -> None:
        self.calls += 1
        ok = bool(data.get("ok"))
        self.failures += not ok
        self.timeouts += bool(data.get("timed_out"))
        self.oom += bool(data.get("oom_killed"))
        duration = data.get("duration_ms")
        if isinstance(duration, int | float) and not isinstance(duration, bool):
            self.total_ms += float(duration)
        if not ok:  # call_data's nested "error", or flat error_type/error_kind fields
            raw = data.get("error")
            error: dict[str, Any] = raw if isinstance(raw, dict) else {}
            kind = (error.get("type") or error.get("kind") or data.get("error_type")
                    or data.get("error_kind") or "error")
            self.errors[str(kind)] += 1
        for event in data.get("audit") or []:
            if isinstance(event, dict) and len(self.audit) < 200:
                self.audit.append(event)


@dataclass
class FunctionVersion:
    """One distinct spec (code, description, parameters, tests) of one name, with everything
    that happened to it."""

    name: str
    version: int
    code: str
    code_hash: str
    spec: dict[str, Any]
    spec_hash: str = ""
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec hash -> spec
    proposals: list[ProposalInfo] = field(default_factory=list)
    approvals: list[ApprovalInfo] = field(default_factory=list)
    calls: CallStats = field(default_factory=CallStats)
    previous: FunctionVersion | None = None
    offered: int = 0  # conversations whose assistant was offered this version
    used: int = 0  # of those, conversations that called it (as a tool or by name in code)
    in_best: bool = False  # in the best set: library.json, what `eval` and a deployment use
    in_last_trial: bool = False  # in the set the optimizer held when the run stopped
    applied: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def vets(self) -> list[VetInfo]:
        return [p.vet for p in self.proposals if p.vet is not None]

    @property
    def passed(self) -> bool:
        return any(v.passed for v in self.vets)

    @property
    def passing_vet(self) -> VetInfo | None:
        """The last passing vet of exactly this spec."""
        passing = [v for v in self.vets if v.passed and v.spec_hash == self.spec_hash]
        return passing[-1] if passing else None

    @property
    def rejected(self) -> bool:
        """Vetted and never passed (a proposal refused before vetting is not rejected code)."""
        return bool(self.vets) and not self.passed

    @property
    def status(self) -> str:
        if self.passed:
            return "passed"
        if self.rejected:
            return "rejected"
        return "not vetted"

    @property
    def approval(self) -> ApprovalInfo | None:
        """The latest verdict: a later deny revokes an approval, and the other way round."""
        return self.approvals[-1] if self.approvals else None

    @property
    def approved(self) -> bool:
        return self.approval is not None and self.approval.verdict == "approve"

    @property
    def spec_without_code(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.items() if k != "code"}

    @property
    def models(self) -> list[str]:
        return sorted({p.model for p in self.proposals if p.model})

    @property
    def audit(self) -> list[dict[str, Any]]:
        return [e for v in self.vets for e in v.audit if isinstance(e, dict)] + self.calls.audit

    @property
    def flag_reasons(self) -> list[str]:
        """Why a reviewer should look at this version even if it passed."""
        reasons = []
        if any(v.warnings for v in self.vets):
            reasons.append("vetting warnings")
        if self.audit:
            reasons.append("audit events")
        if any(v.untested for v in self.vets):
            reasons.append("untested")
        if self.calls.timeouts or self.calls.oom:
            reasons.append("calls hit limits")
        if self.approval is not None and self.approval.verdict == "deny":
            reasons.append("denied")
        if sha256_hex(self.code) != self.code_hash:
            reasons.append("code hash mismatch")
        return reasons

    @property
    def flagged(self) -> bool:
        return bool(self.flag_reasons)

    @property
    def imports(self) -> list[str]:
        return imports_of(self.code)


@dataclass
class Review:
    """Everything the report shows: records, verdict, versions, the two libraries, calls."""

    run_dir: Path
    records: list[Record]
    verify: VerifyReport
    versions: list[FunctionVersion]
    removals: list[ProposalInfo]
    proposals: list[ProposalInfo]
    best: dict[str, FunctionVersion | None]
    """The run's best set, saved as library.json: what `eval` and a deployment use."""
    last_trial: dict[str, FunctionVersion | None]
    """The set the optimizer held when the run stopped (its last trial; not deployed)."""
    unattributed_calls: dict[str, CallStats]
    code_calls: CallStats

    @property
    def run_id(self) -> str | None:
        return self.verify.run_id

    def by_name(self) -> dict[str, list[FunctionVersion]]:
        out: dict[str, list[FunctionVersion]] = {}
        for v in self.versions:
            out.setdefault(v.name, []).append(v)
        return out

    def version(self, name: str, number: int) -> FunctionVersion:
        for v in self.versions:
            if v.name == name and v.version == number:
                return v
        known = [v.ref for v in self.versions if v.name == name]
        hint = f"; {name} has {', '.join(known)}" if known else \
            f"; no function {name!r:.80} was proposed in this run"
        raise UnknownVersion(f"{name}@{number} is not a version of this run{hint}")

    def of_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]


def build_review(run_dir: str | Path) -> Review:
    """Read and verify the history, then derive the review (broken records are still shown)."""
    records, report = read_history(run_dir)
    return _Builder(Path(run_dir), records, report).build()


class _Builder:
    def __init__(self, run_dir: Path, records: list[Record], report: VerifyReport) -> None:
        self.run_dir, self.records, self.report = run_dir, records, report
        self.versions: list[FunctionVersion] = []
        self.index: dict[tuple[str, str, str], FunctionVersion] = {}  # name, code, spec hash
        self.latest: dict[str, FunctionVersion] = {}
        self.proposals: list[ProposalInfo] = []
        self.removals: list[ProposalInfo] = []
        self.open: dict[str, ProposalInfo] = {}  # name -> its latest proposal, for vet/refused
        self.model: str | None = None
        self.state: dict[str, FunctionVersion | None] = {}  # library now: name -> version
        self.library_version = 0
        self.states: dict[int, dict[str, FunctionVersion | None]] = {0: {}}  # version -> state
        self.best: dict[str, FunctionVersion | None] | None = None
        self.registered: list[str] | None = None
        self.unattributed: dict[str, CallStats] = {}
        self.code_calls = CallStats()

    def build(self) -> Review:
        for r in self.records:
            try:
                handler = getattr(self, f"_{r.kind}", None)
                if handler is not None:
                    handler(r)
            except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
                continue  # a malformed record: verify names it; the review shows the rest
        names = self.registered if self.registered is not None else sorted(self.state)
        last_trial = {name: self.state.get(name) for name in sorted(set(names))}
        # no step was ever scored: the run saves what it holds (AgentOptimizer.best_library)
        best = dict(sorted((self.best if self.best is not None else self.state).items()))
        for version in last_trial.values():
            if version is not None:
                version.in_last_trial = True
        for version in best.values():
            if version is not None:
                version.in_best = True
        return Review(self.run_dir, self.records, self.report, self.versions, self.removals,
                      self.proposals, best, last_trial, self.unattributed, self.code_calls)

    def _llm_call(self, r: Record) -> None:
        model = r.data.get("model")
        self.model = str(model) if model is not None else None

    def _step(self, r: Record) -> None:
        self.model = None

    def _proposal(self, r: Record) -> None:
        d = r.data
        spec = d.get("spec") if isinstance(d.get("spec"), dict) else None
        code = spec.get("code") if spec else None
        info = ProposalInfo(
            seq=r.seq, step=r.step, time=r.time, action=known(d.get("action"), ACTIONS),
            name=str(d["name"]), reason=str(d.get("reason") or ""), model=self.model,
            code_hash=str(d["code_hash"]) if d.get("code_hash") else None,
            spec_hash=spec_hash(spec) if spec else None,
            parent=str(d["parent"]) if d.get("parent") else None)
        self.proposals.append(info)
        self.open[info.name] = info
        if spec is None or not isinstance(code, str):
            self.removals.append(info)
            return
        code_hash = info.code_hash or sha256_hex(code)
        s_hash = info.spec_hash or ""
        version = self.index.get((info.name, code_hash, s_hash))
        if version is None:
            number = sum(1 for v in self.versions if v.name == info.name) + 1
            version = FunctionVersion(info.name, number, code, code_hash, dict(spec), s_hash,
                                      {s_hash: dict(spec)}, previous=self.latest.get(info.name))
            self.versions.append(version)
            self.index[(info.name, code_hash, s_hash)] = version
        self.latest[info.name] = version
        info.version = version.version
        version.proposals.append(info)

    def _vet(self, r: Record) -> None:
        d = r.data
        raw = d.get("report")
        report: dict[str, Any] = raw if isinstance(raw, dict) else {}
        vet = VetInfo(r.seq, bool(d.get("passed")), bool(report.get("untested")),
                      bool(report.get("cached")),
                      [s for s in report.get("stages", []) if isinstance(s, dict)],
                      [a for a in report.get("audit", []) if isinstance(a, dict)],
                      str(d.get("spec_hash", "")), report)
        proposal = self.open.get(str(d.get("name")))
        if proposal is not None and proposal.code_hash == d.get("code_hash") \
                and proposal.spec_hash == vet.spec_hash and proposal.vet is None:
            proposal.vet = vet
            proposal.outcome = "pending" if vet.passed else "rejected"

    def _refused(self, r: Record) -> None:
        proposal = self.open.get(str(r.data.get("name")))
        if proposal is not None and proposal.outcome in ("pending", "rejected") \
                and not proposal.why:
            proposal.outcome = "rejected" if proposal.vet is not None and \
                not proposal.vet.passed else "refused"
            proposal.why = str(r.data.get("why") or "")

    def _applied(self, r: Record) -> None:
        d = r.data
        name = str(d["name"])
        proposal = self.open.get(name)
        if proposal is not None and proposal.outcome == "pending":
            proposal.outcome = "applied"
        if d.get("action") == "remove_function":
            self.state.pop(name, None)
        else:
            version = self._applied_version(name, str(d.get("code_hash")), d.get("spec_hash"),
                                            proposal)
            self.state[name] = version
            if version is not None:
                version.applied = True
        if isinstance(d.get("version"), int):
            self.library_version = int(d["version"])
            self.states[self.library_version] = dict(self.state)

    def _applied_version(self, name: str, code_hash: str, s_hash: Any,
                         proposal: ProposalInfo | None) -> FunctionVersion | None:
        """The version an applied record put in the library: by its spec hash; else (records
        without one) the open proposal's, when its code is the applied code."""
        if isinstance(s_hash, str):
            return self.index.get((name, code_hash, s_hash))
        if proposal is not None and proposal.code_hash == code_hash and proposal.spec_hash:
            return self.index.get((name, code_hash, proposal.spec_hash))
        return None

    def _decision(self, r: Record) -> None:
        d = r.data
        after = d.get("library_version")
        if isinstance(after, int) and after != self.library_version:
            if after < self.library_version and after in self.states:
                self.state = dict(self.states[after])  # resumed from an earlier checkpoint
            else:
                self.state = dict(self.best or {})  # a roll-back (or early stop) restored best
            self.library_version = after
            self.states[after] = dict(self.state)
        if d.get("decision") in ("first", "accepted", "accepted_tie"):
            self.best = dict(self.state)

    def _registered(self, r: Record) -> None:
        names = r.data.get("names")
        if isinstance(names, list):
            self.registered = [str(n) for n in names]
            for name in self.registered:
                self.state.setdefault(name, None)
            for name in list(self.state):
                if name not in self.registered:
                    del self.state[name]

    def _conversation(self, r: Record) -> None:
        """Use: which versions a conversation was offered and which it called."""
        d = r.data
        raw = d.get("library_calls")
        calls: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for name in d.get("functions") or []:
            version = self.state.get(str(name))
            if version is not None:
                version.offered += 1
                version.used += bool(calls.get(name))

    def _call(self, r: Record) -> None:
        d = r.data
        name = str(d.get("function", ""))
        if name == "<code>":
            self.code_calls.add(d)
            return
        current = self.state.get(name)
        code_hash = d.get("code_hash")
        version = current if current is not None and code_hash in (None, current.code_hash) \
            else next((v for v in reversed(self.versions)
                       if v.name == name and v.code_hash == code_hash), None)
        if version is not None:
            version.calls.add(d)
        else:
            self.unattributed.setdefault(name, CallStats()).add(d)

    def _approval(self, r: Record) -> None:
        d = r.data
        info = ApprovalInfo(r.seq, r.time, str(d["name"]), int(d["version"]),
                            known(d.get("verdict"), VERDICTS), str(d.get("who", "")),
                            str(d.get("why", "")), str(d.get("code_hash", "")),
                            str(d.get("spec_hash") or ""))
        version = next((v for v in self.versions
                        if v.name == info.name and v.version == info.version), None)
        # bound to this very version: its number (the n-th distinct spec), its code hash and,
        # when given (always, since approvals carry it), its spec hash
        if version is not None and version.code_hash == info.code_hash \
                and info.spec_hash in ("", version.spec_hash):
            version.approvals.append(info)


def imports_of(code: str) -> list[str]:
    """The modules a version imports (sorted), or a note that it does not parse."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return ["(the code does not parse)"]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.update(f"{base}.{a.name}" if a.name != "*" else f"{base}.*"
                         for a in node.names)
    return sorted(found)


def summarize(r: Record) -> str:
    """One line for the timeline (untrusted text inside: escape it wherever it is shown)."""
    d = r.data
    try:
        return str(_SUMMARIES.get(r.kind, _generic)(d))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError):
        return _generic(d)


def _generic(d: dict[str, Any]) -> str:
    keys = ", ".join(sorted(d)[:8])
    return f"fields: {keys}" if keys else ""


def _first_error(d: dict[str, Any]) -> str:
    for stage in d.get("report", {}).get("stages", []):
        for f in stage.get("findings", []):
            if f.get("severity", "error") == "error":
                return f" ({f.get('rule')}: {str(f.get('message'))[:160]})"
    return ""


def _call_summary(d: dict[str, Any]) -> str:
    raw = d.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    kind = error.get("type") or d.get("error_type") or ""
    outcome = "ok" if d.get("ok") else f"failed {kind}".strip()
    where = f", problem {d['problem_id']}" if d.get("problem_id") is not None else ""
    return f"{d.get('function')}: {outcome} in {d.get('duration_ms', 0):.0f} ms{where}"


_SUMMARIES: dict[str, Any] = {
    "genesis": lambda d: f"history started for run {d.get('run_id')}",
    "run": lambda d: f"run {d.get('event', '')}".strip(),
    "llm_call": lambda d: (f"{d.get('role', 'optimizer')} model {d.get('model')}: "
                           f"{d.get('prompt_tokens', 0)} + {d.get('completion_tokens', 0)} "
                           f"tokens, {d.get('attempts', 1)} attempt(s)"),
    "prompt": lambda d: (f"prompt: {d.get('conversations')} conversations, "
                         f"~{d.get('estimated_tokens')} tokens"),
    "proposal": lambda d: (f"{known(d.get('action'), ACTIONS)} {d.get('name')}: "
                           f"{str(d.get('reason'))[:160]}"),
    "vet": lambda d: (f"vet {d.get('name')}: "
                      + ("passed" if d.get("passed") else "REJECTED" + _first_error(d))),
    "applied": lambda d: f"applied {known(d.get('action'), ACTIONS)} {d.get('name')}",
    "refused": lambda d: (f"refused {known(d.get('action'), ACTIONS)} {d.get('name')}: "
                          f"{str(d.get('why'))[:200]}"),
    "dropped": lambda d: f"dropped {d.get('action')}: {d.get('why')}",
    "terminate": lambda d: f"terminate: {str(d.get('reason'))[:160]}",
    "decision": lambda d: (f"decision {known(d.get('decision'), DECISIONS)}: "
                           f"score {d.get('score')}, best {d.get('best_score')}"),
    "early_stop": lambda d: f"early stop after {d.get('steps_without_improvement')} steps",
    "registered": lambda d: f"registered: {', '.join(map(str, d.get('names', []))) or 'none'}",
    "removed": lambda d: f"removed: {', '.join(map(str, d.get('names', [])))}",
    "step": lambda d: (f"step {d.get('step')}: score {d.get('score')}, {d.get('decision')}, "
                       f"{d.get('proposals')} proposals, {d.get('applied')} applied"),
    "call": _call_summary,
    "conversation": lambda d: (f"problem {d.get('problem_id')}: "
                               + ("correct" if d.get("correct") else "incorrect")
                               + (f" ({d.get('outcome')})" if d.get("outcome") else "")),
    "metrics": lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())
                                   if not isinstance(v, dict | list))[:300],
    "approval": lambda d: (f"{known(d.get('verdict'), VERDICTS)} {d.get('name')}@"
                           f"{d.get('version')} by {d.get('who')}: {str(d.get('why'))[:200]}"),
}
