"""The RestrictedPython policy fnforge compiles generated functions with, host and container alike.

Standard library and RestrictedPython only, never `sandbox.*`: runner/guards.py imports it inside
the container (as a top-level module) and vetting/restricted.py imports it on the host
(`sandbox.runner.restricted_policy`), so the code that decides what compiles is the same file on
both sides of the boundary. The names it lets through arrive as data (policy.py
ALLOWED_DUNDER_ATTRIBUTES), never as constants here.

Two changes to RestrictedPython's RestrictingNodeTransformer, both narrowing what runs rather than
widening what is reachable:
- A small allowlist of read-only dunder attributes (`type(n).__name__`) is compiled like any
  other attribute read, into a guarded `_getattr_(obj, "__name__")` call. RestrictedPython refuses
  every `_` attribute at compile time; the guarded getattr (runner/guards.py) allows exactly these
  names and hands out only str (or None) values. Stores and deletes stay refused.
- An annotated assignment (`PRIMES: tuple[int, ...] = (2, 3, 5)`) is compiled as the plain
  assignment, without its annotation, so no annotation is evaluated at definition time; a bare
  annotation (`x: int`) compiles to nothing.
"""

from __future__ import annotations

import ast
from functools import lru_cache

from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations

__all__ = ["policy_class"]


class _FnforgePolicy(RestrictingNodeTransformer):
    """RestrictingNodeTransformer plus the allowlisted dunder reads and plain annotated
    assignments; see the module doc. Subclassed per allowlist by policy_class()."""

    allowed_dunders: frozenset[str] = frozenset()

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        """`x.__name__` (allowlisted, load only) becomes `_getattr_(x, "__name__")`."""
        if node.attr in self.allowed_dunders and isinstance(node.ctx, ast.Load):
            visited = self.node_contents_visit(node)
            assert isinstance(visited, ast.Attribute)
            call = ast.Call(func=ast.Name("_getattr_", ast.Load()),
                            args=[visited.value, ast.Constant(visited.attr)], keywords=[])
            copy_locations(call, visited)
            return call
        result = super().visit_Attribute(node)
        assert isinstance(result, ast.AST)
        return result

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        """`NAME: T = value` compiles as `NAME = value`; the annotation is never evaluated."""
        if node.value is None:
            stmt: ast.stmt = ast.Pass()
        else:
            stmt = ast.Assign(targets=[node.target], value=node.value)
        copy_locations(stmt, node)
        ast.fix_missing_locations(stmt)
        visited: ast.AST = self.visit(stmt)
        return visited


@lru_cache(maxsize=8)
def policy_class(allowed_dunders: frozenset[str]) -> type[RestrictingNodeTransformer]:
    """The policy class to pass as `policy=` to compile_restricted_exec, for this allowlist of
    read-only dunders. Names that are not dunders are ignored: the allowlist never opens
    `_private` attributes."""
    names = frozenset(n for n in allowed_dunders
                      if n.startswith("__") and n.endswith("__") and len(n) > 4)
    return type("FnforgePolicy", (_FnforgePolicy,), {"allowed_dunders": names})
