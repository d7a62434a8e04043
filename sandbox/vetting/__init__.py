"""Vetting: the only way a generated function gets into a FunctionLibrary.

`vet(sandbox, spec)` runs six stages in order and returns a VetReport:
    shape, static, restricted   on the host (shape.py, static.py, restricted.py): every finding
                                of all three at once, so the optimizer can fix them in one go;
    tests, smoke, isolation     in containers (dynamic.py); they stop at the first failing stage.
Verdicts are cached by the sandbox (verdicts.py) under (code, spec, image, policy) hashes.

What a passing verdict means: the host stages found nothing their rules know, the spec's own
tests passed in a container, the smoke cases ended cleanly or with warnings, and the function's
process reported no forbidden event. It is a filter and a record for reviewers. What keeps the
host safe from a function that passed anyway is the container, the kernel filter and a fresh
process per call, never this verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .. import policy as P
from ..spec import FunctionSpec
from .dynamic import CallsFunctions, container_stages, error_matches, json_equal
from .report import STAGES, Finding, StageResult, VetReport, verdict_key
from .restricted import check_restricted
from .shape import check_shape
from .static import check_static
from .verdicts import VerdictCache

__all__ = [
    "STAGES",
    "Finding",
    "StageResult",
    "VerdictCache",
    "VetReport",
    "Vettable",
    "error_matches",
    "json_equal",
    "vet",
]


class Vettable(CallsFunctions, Protocol):
    """What vet needs from a Sandbox: calls, the image it runs, and its verdict cache."""

    image_id: str
    verdicts: VerdictCache


def vet(sandbox: Vettable | None, spec: FunctionSpec, *, timeout: float | None = None,
        use_cache: bool = True) -> VetReport:
    """Vet `spec`; see the module doc. With `sandbox=None` only the host stages run (the
    verdict then only says the code may be sent to a container, and is never cached).
    SandboxError (infrastructure) propagates to the caller."""
    image_id = sandbox.image_id if sandbox is not None else ""
    phash = P.policy_hash()
    key = verdict_key(spec.code_hash, spec.spec_hash, image_id, phash)
    cache = sandbox.verdicts if sandbox is not None and use_cache else None
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return hit
    stages = [_host_stage("shape", lambda: check_shape(spec))]
    if any(f.rule == "shape.code-size" for f in stages[0].findings):
        # too big to parse cheaply: nothing more is read (the shape finding says why)
        stages += [StageResult(n, False, [], 0.0, skipped=True) for n in STAGES[1:3]]
    else:
        stages += [_host_stage("static", lambda: check_static(spec)),
                   _host_stage("restricted", lambda: check_restricted(spec.code))]
    audit: list[dict[str, Any]] = []
    host_ok = all(s.passed and not s.skipped for s in stages)
    if host_ok and sandbox is not None:
        stages += container_stages(sandbox, spec, timeout, audit)
    else:
        stages += [StageResult(n, False, [], 0.0, skipped=True) for n in STAGES[3:]]
    passed = host_ok if sandbox is None else all(s.passed and not s.skipped for s in stages)
    report = VetReport(passed=passed, function=spec.name, code_hash=spec.code_hash,
                       spec_hash=spec.spec_hash, image_id=image_id, policy_hash=phash,
                       stages=stages, untested=not spec.tests, audit=audit)
    if cache is not None:
        cache.put(report)
    return report


def _host_stage(name: str, check: Callable[[], list[Finding]]) -> StageResult:
    """Run one host stage; a spec that makes the checker itself fail is rejected, not a crash."""
    t0 = time.perf_counter()
    try:
        findings = check()
    except (RecursionError, MemoryError, ValueError, TypeError, KeyError) as exc:
        findings = [Finding(f"{name}.unanalysable", 0, 0,
                            f"the {name} stage could not analyse this spec "
                            f"({type(exc).__name__}): simplify it")]
    return StageResult.of(name, findings, (time.perf_counter() - t0) * 1000)
