"""What vetting returns: findings, stages and the report, as plain JSON-ready data."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

__all__ = ["STAGES", "Finding", "Severity", "StageResult", "VetReport", "verdict_key"]

STAGES = ("shape", "static", "restricted", "tests", "smoke", "isolation")
"""In order: three on the host (all findings at once), three in containers."""

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem: a stable rule id (for reviewers and tests), where it is, and how bad.

    A warning is recorded for reviewers and fed back to the optimizer, but does not reject."""

    rule: str
    line: int
    col: int
    message: str
    severity: Severity = "error"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        severity: Severity = "warning" if data.get("severity") == "warning" else "error"
        return cls(str(data["rule"]), int(data["line"]), int(data["col"]),
                   str(data["message"]), severity)


@dataclass(frozen=True)
class StageResult:
    name: str
    passed: bool
    findings: list[Finding] = field(default_factory=list)
    duration_ms: float = 0.0
    skipped: bool = False

    @classmethod
    def of(cls, name: str, findings: list[Finding], duration_ms: float) -> StageResult:
        """A stage that ran: it passes unless a finding is an error."""
        return cls(name, not any(f.severity == "error" for f in findings), findings,
                   duration_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "skipped": self.skipped,
                "duration_ms": round(self.duration_ms, 3),
                "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        return cls(name=str(d["name"]), passed=bool(d["passed"]), skipped=bool(d.get("skipped")),
                   duration_ms=float(d.get("duration_ms", 0.0)),
                   findings=[Finding.from_dict(f) for f in d.get("findings", [])])


@dataclass(frozen=True)
class VetReport:
    """The verdict on exactly one spec, under one image and one policy.

    `audit` holds the events the function's own process reported while it ran its tests and
    smoke cases: evidence for reviewers, never a guarantee (code that escapes the Python layer
    can silence its own audit hook; the container and the kernel filter are the boundary)."""

    passed: bool
    function: str
    code_hash: str
    spec_hash: str
    image_id: str
    policy_hash: str
    stages: list[StageResult]
    untested: bool = False
    audit: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.stages for f in s.findings]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def key(self) -> str:
        return verdict_key(self.code_hash, self.spec_hash, self.image_id, self.policy_hash)

    def as_cached(self) -> VetReport:
        return replace(self, cached=True)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "function": self.function, "untested": self.untested,
                "code_hash": self.code_hash, "spec_hash": self.spec_hash,
                "image_id": self.image_id, "policy_hash": self.policy_hash,
                "cached": self.cached, "stages": [s.to_dict() for s in self.stages],
                "audit": self.audit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VetReport:
        return cls(passed=bool(d["passed"]), function=str(d["function"]),
                   code_hash=str(d["code_hash"]), spec_hash=str(d["spec_hash"]),
                   image_id=str(d["image_id"]), policy_hash=str(d["policy_hash"]),
                   untested=bool(d.get("untested")),
                   stages=[StageResult.from_dict(s) for s in d["stages"]],
                   audit=[dict(e) for e in d.get("audit", [])], cached=bool(d.get("cached")))


def verdict_key(code_hash: str, spec_hash: str, image_id: str, policy_hash: str) -> str:
    """A verdict holds for this code, spec, image and policy; any change means a new vet."""
    raw = "\n".join([code_hash, spec_hash, image_id, policy_hash])
    return hashlib.sha256(raw.encode()).hexdigest()
