"""The RestrictedPython policy fnforge compiles generated functions with, host and container alike.

Standard library and RestrictedPython only, never `sandbox.*`: runner/guards.py imports it inside
the container (as a top-level module) and vetting/restricted.py imports it on the host
(`sandbox.runner.restricted_policy`), so the code that decides what compiles is the same file on
both sides of the boundary. The names it lets through arrive as data (policy.py
ALLOWED_DUNDER_ATTRIBUTES), never as constants here.

Changes to RestrictedPython's RestrictingNodeTransformer. All but the last two narrow what runs;
`+=` on a name and `nonlocal` change nothing a function can reach:
- A small allowlist of read-only dunder attributes (`type(n).__name__`) is compiled like any
  other attribute read, into a guarded `_getattr_(obj, "__name__")` call. RestrictedPython refuses
  every `_` attribute at compile time; the guarded getattr (runner/guards.py) allows exactly these
  names and hands out only str (or None) values. Stores and deletes stay refused.
- An annotated assignment (`PRIMES: tuple[int, ...] = (2, 3, 5)`) is compiled as the plain
  assignment, without its annotation, so no annotation is evaluated at definition time; a bare
  annotation (`x: int`) compiles to nothing.
- Every call goes through a guard: `f(a, b)` becomes `_call2_(f, a, b)` (`_call0_` to
  `_call3_`), `f(a, k=b)` `_call_(f, a, k=b)` and a call with `*args`/`**kwargs`
  RestrictedPython's own `_apply_(f, *args, **kwargs)`: one guard (runner/guards.py),
  specialised for speed, which checks the callee at the point of use (the real `type`, a
  metaclass, a refused builtin or value, however it was obtained), the arguments, and the
  result like any attribute value. `obj.m(...)` reads the method with `_getmethod_` (the guarded
  getattr without wrapping what is only called). The one exception: a call of the code's own
  undecorated `def` whose name is bound nowhere else in the code (no assignment, parameter,
  import, loop target, `global`, builtin of that name) is a plain call: every load of that name
  is that function, whose parameters are checked on entry (recursive helpers cost nothing).
- Every value that enters the function from outside without passing an attribute, item,
  iteration or call guard is checked where it enters: the parameters of every `def` and
  `lambda` (library code calls them back: `functools.reduce`, `map`, `sorted(key=...)`), the
  target of `with ... as name` and the value of a `yield` expression (`_check_`,
  `_check_args_`, `_check_kwargs_`, with the inline fast path
  `if _type_(a) not in _safe_types_: a = _check_(a)`, runner/guards.py). A lambda rebinds its
  parameters with `:=`, or, inside a comprehension's iterable where Python refuses `:=`, passes
  them checked to an inner lambda.
- `n += x` on a name compiles natively (RestrictedPython calls `_inplacevar_`): it is an
  operator like `n + x`, which RestrictedPython does not guard either; augmented assignment of
  attributes and items stays refused.
- `nonlocal` is allowed (RestrictedPython refuses it): it only rebinds a name of an enclosing
  function, which the same code defined; its names are checked like any other name.
"""

from __future__ import annotations

import ast
import builtins
from collections import Counter
from functools import lru_cache

from RestrictedPython.transformer import RestrictingNodeTransformer, copy_locations

__all__ = ["CALL_GUARDS", "policy_class"]

CALL_GUARDS = frozenset({"_call_", "_apply_", "_call0_", "_call1_", "_call2_", "_call3_"})
"""The names calls are compiled to: `_callN_` for N positional arguments and nothing else,
`_call_` for any other call, `_apply_` (RestrictedPython's own) for star-args. One guard."""


def _name(identifier: str) -> ast.Name:
    return ast.Name(identifier, ast.Load())


def _check_call(guard: str, *values: ast.expr) -> ast.Call:
    return ast.Call(func=_name(guard), args=list(values), keywords=[])


def _checked_expression(result: object) -> ast.AST:
    """`_check_(<expression>)`, placed where the expression was."""
    assert isinstance(result, ast.expr)
    call = _check_call("_check_", result)
    copy_locations(call, result)
    return call


def _parameters(args: ast.arguments) -> tuple[list[str], str | None, str | None]:
    """(plain parameter names, *args name, **kwargs name) of a def or lambda."""
    plain = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
    return (plain, args.vararg.arg if args.vararg else None,
            args.kwarg.arg if args.kwarg else None)


def _store(identifier: str) -> ast.Name:
    return ast.Name(identifier, ast.Store())


def _is_safe(identifier: str, negate: bool = False) -> ast.expr:
    """`_type_(a) in _safe_types_` (or `not in`): the inline fast path of a value check (plain
    data and instances of classes already checked cost no Python call)."""
    return ast.Compare(left=_check_call("_type_", _name(identifier)),
                       ops=[ast.NotIn() if negate else ast.In()],
                       comparators=[_name("_safe_types_")])


def _parameter_checks(args: ast.arguments) -> list[ast.stmt]:
    """`if _type_(a) not in _safe_types_: a = _check_(a)` per parameter,
    `args = _check_args_(*args)`, `kwargs = _check_kwargs_(kwargs)`."""
    plain, vararg, kwarg = _parameters(args)
    out: list[ast.stmt] = [
        ast.If(test=_is_safe(p, negate=True), orelse=[],
               body=[ast.Assign(targets=[_store(p)], value=_check_call("_check_", _name(p)))])
        for p in plain]
    if vararg is not None:
        out.append(ast.Assign(targets=[_store(vararg)], value=_check_call(
            "_check_args_", ast.Starred(_name(vararg), ast.Load()))))
    if kwarg is not None:
        out.append(ast.Assign(targets=[_store(kwarg)],
                              value=_check_call("_check_kwargs_", _name(kwarg))))
    return out


def _direct_defs(tree: ast.AST) -> frozenset[str]:
    """Names whose only binding in the whole code is one undecorated `def` (no assignment,
    parameter, import, `global`/`nonlocal`, except or loop target of the same name anywhere,
    and no builtin of that name): every load of such a name is that function (or a NameError),
    so calling it needs no call guard. Its parameters are checked on entry and what it returns
    comes from checked sources."""
    defs: Counter[str] = Counter()
    bound: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound[node.name] += 1
            if isinstance(node, ast.FunctionDef) and not node.decorator_list:
                defs[node.name] += 1
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound[node.id] += 1
        elif isinstance(node, ast.arg):
            bound[node.arg] += 1
        elif isinstance(node, ast.alias):
            bound[(node.asname or node.name).split(".")[0]] += 1
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound[node.name] += 1
        elif isinstance(node, ast.Global | ast.Nonlocal):
            bound.update(node.names)
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            bound[node.name] += 1
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound[node.rest] += 1
    return frozenset(n for n, count in defs.items()
                     if count == 1 and bound[n] == 1 and not hasattr(builtins, n))


def _docstring_end(body: list[ast.stmt]) -> int:
    first = body[0] if body else None
    return 1 if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str) else 0


class _FnforgePolicy(RestrictingNodeTransformer):
    """RestrictingNodeTransformer plus the changes in the module doc. Subclassed per allowlist
    by policy_class()."""

    allowed_dunders: frozenset[str] = frozenset()
    direct_defs: frozenset[str] = frozenset()
    in_comprehension = 0  # > 0 while a comprehension's target, iterable or conditions are visited

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.in_comprehension += 1
        try:
            result = super().visit_comprehension(node)
        finally:
            self.in_comprehension -= 1
        assert isinstance(result, ast.AST)
        return result

    def visit_Module(self, node: ast.Module) -> ast.AST:
        self.direct_defs = _direct_defs(node)
        result = super().visit_Module(node)
        assert isinstance(result, ast.Module)
        return result

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        """`x.__name__` (allowlisted, load only) becomes `_getattr_(x, "__name__")`."""
        if node.attr in self.allowed_dunders and isinstance(node.ctx, ast.Load):
            visited = self.node_contents_visit(node)
            assert isinstance(visited, ast.Attribute)
            call = ast.Call(func=_name("_getattr_"),
                            args=[visited.value, ast.Constant(visited.attr)], keywords=[])
            copy_locations(call, visited)
            return call
        result = super().visit_Attribute(node)
        assert isinstance(result, ast.AST)
        if isinstance(result, ast.Call):  # `_getattr_(obj, "name")`: a load of `obj.name`
            result.fnforge_attribute = True  # type: ignore[attr-defined]
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

    def visit_Call(self, node: ast.Call) -> ast.AST:
        """`f(a, b)` becomes `_call2_(f, a, b)`, `f(a, k=b)` `_call_(f, a, k=b)`;
        RestrictedPython already turns calls with star-args into `_apply_(f, ...)`, the same
        guard."""
        result = super().visit_Call(node)
        assert isinstance(result, ast.Call)
        if isinstance(result.func, ast.Name) and result.func.id in CALL_GUARDS:
            return result
        if isinstance(result.func, ast.Name) and result.func.id in self.direct_defs:
            return result  # the code's own function: see _direct_defs
        method = result.func
        if isinstance(method, ast.Call) and isinstance(method.func, ast.Name) \
                and method.func.id == "_getattr_" and len(method.args) == 2 \
                and getattr(method, "fnforge_attribute", False):
            method.func.id = "_getmethod_"  # `obj.m(...)`: the bound method is only called
        guard = f"_call{len(result.args)}_" if not result.keywords and len(result.args) <= 3 \
            else "_call_"
        result.args.insert(0, result.func)
        result.func = _name(guard)
        copy_locations(result.func, result.args[0])
        return result

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        """The parameters are checked first thing in the body (after the docstring)."""
        result = super().visit_FunctionDef(node)
        assert isinstance(result, ast.FunctionDef)
        checks = _parameter_checks(result.args)
        if checks:
            at = _docstring_end(result.body)
            for stmt in checks:
                copy_locations(stmt, result)
                ast.fix_missing_locations(stmt)
            result.body[at:at] = checks
        return result

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        """`lambda a: body` becomes
        `lambda a: ((_type_(a) in _safe_types_ or (a := _check_(a)) is _check_) and None)
        or body`: each parameter is checked (rebound when the check wraps it), then the value
        is the body's. Inside a comprehension's iterable, where Python refuses `:=`, it becomes
        `lambda a: (lambda a: body)(_check_(a))` instead."""
        result = super().visit_Lambda(node)
        assert isinstance(result, ast.Lambda)
        if self.in_comprehension:
            return self._lambda_through_inner(result)
        plain, vararg, kwarg = _parameters(result.args)
        rebinds: list[tuple[str, ast.expr | None, ast.Call]] = [
            (p, _is_safe(p), _check_call("_check_", _name(p))) for p in plain]
        if vararg is not None:
            rebinds.append((vararg, None, _check_call(
                "_check_args_", ast.Starred(_name(vararg), ast.Load()))))
        if kwarg is not None:
            rebinds.append((kwarg, None, _check_call("_check_kwargs_", _name(kwarg))))
        guards: list[ast.expr] = []
        for target, fast, check in rebinds:
            rebind: ast.expr = ast.Compare(left=ast.NamedExpr(_store(target), check),
                                           ops=[ast.Is()], comparators=[_name("_check_")])
            if fast is not None:
                rebind = ast.BoolOp(op=ast.Or(), values=[fast, rebind])
            guards.append(ast.BoolOp(op=ast.And(), values=[rebind, ast.Constant(None)]))
        if guards:
            result.body = ast.BoolOp(op=ast.Or(), values=[*guards, result.body])
            copy_locations(result.body, result)
            ast.fix_missing_locations(result.body)
        return result

    @staticmethod
    def _lambda_through_inner(result: ast.Lambda) -> ast.Lambda:
        args = result.args
        if not (args.posonlyargs or args.args or args.kwonlyargs or args.vararg or args.kwarg):
            return result
        inner = ast.Lambda(args=ast.arguments(
            posonlyargs=[ast.arg(a.arg) for a in args.posonlyargs],
            args=[ast.arg(a.arg) for a in args.args],
            vararg=ast.arg(args.vararg.arg) if args.vararg else None,
            kwonlyargs=[ast.arg(a.arg) for a in args.kwonlyargs],
            kw_defaults=[None for _ in args.kwonlyargs],
            kwarg=ast.arg(args.kwarg.arg) if args.kwarg else None, defaults=[]),
            body=result.body)
        positional: list[ast.expr] = [_check_call("_check_", _name(a.arg))
                                      for a in [*args.posonlyargs, *args.args]]
        if args.vararg is not None:
            positional.append(ast.Starred(_check_call(
                "_check_args_", ast.Starred(_name(args.vararg.arg), ast.Load())), ast.Load()))
        keywords = [ast.keyword(a.arg, _check_call("_check_", _name(a.arg)))
                    for a in args.kwonlyargs]
        if args.kwarg is not None:
            keywords.append(ast.keyword(None, _check_call("_check_kwargs_",
                                                          _name(args.kwarg.arg))))
        result.body = ast.Call(func=inner, args=positional, keywords=keywords)
        copy_locations(result.body, result)
        ast.fix_missing_locations(result.body)
        return result

    def visit_With(self, node: ast.With) -> ast.AST:
        """`with m as name:` checks `name` (what `m.__enter__()` returned) first thing."""
        result = super().visit_With(node)
        assert isinstance(result, ast.With)
        checks: list[ast.stmt] = []
        for item in result.items:
            target = item.optional_vars
            if isinstance(target, ast.Name):
                stmt = ast.Assign(targets=[_store(target.id)],
                                  value=_check_call("_check_", _name(target.id)))
                copy_locations(stmt, result)
                ast.fix_missing_locations(stmt)
                checks.append(stmt)
        result.body[0:0] = checks
        return result

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        """The value a `yield` expression receives (`gen.send(v)`) is checked."""
        return _checked_expression(super().visit_Yield(node))

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.AST:
        """The value of `yield from` (the sub-generator's return value) is checked."""
        return _checked_expression(super().visit_YieldFrom(node))

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        """`n += x` on a name compiles natively (RestrictedPython calls `_inplacevar_`): it is
        `n = n + x`, an operator like any other; attribute and subscript targets stay
        refused."""
        if isinstance(node.target, ast.Name):
            visited: ast.AST = self.node_contents_visit(node)
            return visited
        result = super().visit_AugAssign(node)
        assert isinstance(result, ast.AST)
        return result

    def visit_Nonlocal(self, node: ast.Nonlocal) -> ast.AST:
        """`nonlocal count` rebinds a name of the enclosing function: allowed, names checked."""
        for name in node.names:
            self.check_name(node, name)
        visited: ast.AST = self.node_contents_visit(node)
        return visited


@lru_cache(maxsize=8)
def policy_class(allowed_dunders: frozenset[str]) -> type[RestrictingNodeTransformer]:
    """The policy class to pass as `policy=` to compile_restricted_exec, for this allowlist of
    read-only dunders. Names that are not dunders are ignored: the allowlist never opens
    `_private` attributes."""
    names = frozenset(n for n in allowed_dunders
                      if n.startswith("__") and n.endswith("__") and len(n) > 4)
    return type("FnforgePolicy", (_FnforgePolicy,), {"allowed_dunders": names})
