"""Which format strings may run: one check for both sides of the boundary.

`str.format` reads attributes of its arguments (`"{0.__class__}".format(x)`), so a format string
is a way to reach what the guarded getattr refuses. The static gate applies this check to literal
format strings on the host (sandbox.vetting.static), the guards to computed ones at call time in
the container (runner/guards.py). Standard library only: the runner imports it as `formats`.
"""

from __future__ import annotations

import _string
import string

__all__ = ["format_field_problem"]


def format_field_problem(fmt: str) -> str | None:
    """The first field of a format string that accesses an attribute (`{0.__class__}`), if
    any. Index fields (`{0[1]}`) only format an item of an argument the code already holds."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except (ValueError, IndexError):
        return fmt[:40]
    for _lit, field, spec, _conv in parsed:
        if field:
            try:
                _first, rest = _string.formatter_field_name_split(field)
                if any(is_attr for is_attr, _key in rest):
                    return field
            except (ValueError, IndexError):
                return field
        if spec:
            inner = format_field_problem(spec)
            if inner:
                return inner
    return None
