"""Vetting stage 3 on the host: RestrictedPython must accept the code.

It compiles with the same policy class as the container (runner/restricted_policy.py, given
policy.py's ALLOWED_DUNDER_ATTRIBUTES), so the host verdict and the container's compile agree:
the readable dunders compile to guarded reads, every call to a call guard, parameters to checks
on entry, and `nonlocal` is accepted. Inside the container the function also runs under those
guards; that is a second filter and a source of evidence, not the boundary (the container and
the kernel filter are).
"""

from __future__ import annotations

import re

from .. import policy as P
from ..runner.restricted_policy import policy_class
from .report import Finding
from .static import nesting_problem

__all__ = ["check_restricted"]

_RP_LINE = re.compile(r"Line (\d+):\s*(.*)", re.S)


def check_restricted(code: str) -> list[Finding]:
    """RestrictedPython must accept the code; each of its errors becomes a finding. Code nested
    too deeply for a recursive compiler is a finding before RestrictedPython sees it."""
    from RestrictedPython.compile import compile_restricted_exec

    deep = nesting_problem(code)
    if deep is not None:
        return [Finding("restricted.nesting", deep.line, deep.col, deep.message)]
    try:
        result = compile_restricted_exec(code, filename=P.USER_FILENAME,
                                         policy=policy_class(P.ALLOWED_DUNDER_ATTRIBUTES))
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError) as exc:
        return [Finding("restricted.compile", 0, 0, f"{type(exc).__name__}: {exc}")]
    out = []
    for err in result.errors:
        m = _RP_LINE.match(err)
        line, msg = (int(m.group(1)), m.group(2)) if m else (0, err)
        out.append(Finding("restricted.compile", line, 0, msg.strip()))
    return out
