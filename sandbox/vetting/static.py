"""Vetting stage 2 on the host: the static AST policy (rules are data in sandbox/policy.py).

Pure functions over a FunctionSpec, returning every finding at once (rule id, line, column,
message), so the optimizer LLM can fix all problems in one revision.

What this layer is, honestly: a cheap first filter and a record for reviewers. It rejects
proposals that use known escape routes by name, early and with a reason the optimizer can act on.
It cannot prove code harmless: Python reaches objects through values the gate never sees (a
string built at run time, an object returned by a library, a method reached through `type(x)`),
so the same classes are refused again by value inside the container (runner/guards.py), and the
container, the kernel filter and a fresh process per call are what hold when both layers miss.
The gate's work is bounded on hostile input: the nesting depth is checked iteratively before any
recursive visitor runs, so deeply nested code is a finding, never a RecursionError.

Decisions (documented here because reviewers ask):
- One top-level `def` named like the spec, plus at most `max_helpers` public helper defs (no `_`
  prefix: RestrictedPython refuses such names) under the same rules. Nested defs and lambdas inside
  functions are fine.
- Nothing user-chosen runs at definition time: top-level statements are a docstring, imports,
  defs and `NAME = constant` (also `A, B = ...`), where a constant is a literal, arithmetic on
  literals with bounded powers and repeats, an import-rooted attribute (`math.pi`), or a call in
  CONSTANT_CALLS whose arguments are constants (`INF = float('inf')`, `X = sympy.Symbol('x')`).
  Default values are constants too; annotations are type expressions (string annotations are
  parsed and must be type expressions as well: `typing.get_type_hints` evaluates them).
  Decorators are refused except functools' pure memoisers (`lru_cache`, `cache`). Class
  definitions are refused anywhere: a class body is code executed at definition time,
  metaclasses and `__init_subclass__` hooks run more, and a `str` subclass can fool a guarded
  getattr; math helpers do not need classes. Metaclasses reached by name (METACLASS_NAMES),
  `type()` with more than one argument (also `type(x)(name, bases, ns)`) and class factories with
  a namespace argument (RUNTIME_CALL_LIMITS: `sympy.Function(name, bases, ns)`) are refused.
- Dunder and `_` names and attributes are refused, except reads of ALLOWED_DUNDER_ATTRIBUTES
  (`type(n).__name__`); docstrings may mention dunders, other string literals may not.
- Modules: imports only from the allowlist; an attribute naming a module the code may not import
  is refused (policy.module_name_attributes(); names that are also ordinary attributes, such as
  `np.select`, only on import-rooted chains where a module is clearly meant).
- Raw memory: `id` is a forbidden builtin; numpy's views over arbitrary addresses and pointers
  from bytes (`as_strided`, `DummyArray`, `np.core.multiarray.scalar`, `np.rec`, `ndarray(buffer=)`,
  `resize(refcheck=False)`) are refused by name and call shape; `sliding_window_view` is fine.
- `str.format` is allowed on literal format strings whose fields are plain or index into an
  argument (`{}`, `{0}`, `{n:.3f}`, `{0[1]}`); fields with attribute access (`{0.__class__}`) are
  refused; `format_map` is refused; a non-literal format string is left to the runtime guard
  (runner/guards.py checks the fields at call time, also for unbound `str.format` reached through
  any str subclass such as `np.str_`). f-strings are plain expressions and checked like any code.
- String evaluation: sympify/parse_expr/lambdify, typing's forward references and mpmath.identify
  evaluate strings as Python. They are allowed on data (an expression string passed in by the
  agent is the main use of math helpers), but string literals passed to them, or directly to any
  sympy/mpmath/typing function (which sympify strings), that name an evaluator, a dangerous
  module or a dunder are refused. The binding check is the audit hook's string-code chokepoint in
  the container, which sees every route whatever the alias.
- `except*` is refused (ExceptionGroup type confusion); positional-only parameters are refused on
  the main function (it is called with keyword arguments) and `_` names are refused everywhere
  (shadowing RestrictedPython's guard names), also in `global` and `nonlocal` statements, which
  are allowed: `nonlocal count` in a counting or backtracking closure only rebinds a name of
  the enclosing function (the RestrictedPython policy allows it too).
- Containers of the allowed modules that hold refused values (RUNTIME_DENIED_CONTAINERS:
  `sympy.strategies.util.basic_fns` holds the real `type`) are refused by their last name on
  import-rooted chains, whatever module re-exports them; the guards refuse them by identity.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator

from .. import policy as P
from ..runner.formats import format_field_problem
from ..spec import FunctionSpec
from .report import Finding

__all__ = ["check_static", "nesting_problem"]


def _f(rule: str, node: ast.AST | None, message: str) -> Finding:
    line = getattr(node, "lineno", 0) if node is not None else 0
    col = getattr(node, "col_offset", 0) if node is not None else 0
    return Finding(rule, int(line or 0), int(col or 0), message)


# ---------------------------------------------------------------- stage 2: AST policy

def check_static(spec: FunctionSpec) -> list[Finding]:
    """Every AST-policy finding of the spec's code at once (sorted by position)."""
    try:
        tree = ast.parse(spec.code, filename=P.USER_FILENAME)
    except SyntaxError as exc:
        return [Finding("static.syntax", exc.lineno or 0, (exc.offset or 1) - 1,
                        f"syntax error: {exc.msg}")]
    except (ValueError, MemoryError, RecursionError) as exc:
        return [Finding("static.syntax", 0, 0, f"code cannot be parsed: {exc}")]
    out = list(_check_identifiers(spec.code))
    deep = _too_deep(tree)
    if deep is not None:  # every visitor below recurses: stop before they run
        return [*out, deep]
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > P.SIZE_LIMITS.max_ast_nodes:
        out.append(Finding("static.size", 0, 0,
                           f"code has {nodes} syntax nodes; the limit is "
                           f"{P.SIZE_LIMITS.max_ast_nodes}"))
    checker = _Checker(spec, tree)
    out.extend(checker.run())
    return sorted(set(out), key=lambda f: (f.line, f.col, f.rule, f.message))


def nesting_problem(code: str) -> Finding | None:
    """A `static.nesting` finding when the code nests deeper than max_ast_depth, else None (also
    when it does not parse: the caller reports that). Iterative, so hostile nesting costs time
    linear in its size and never recursion."""
    try:
        tree = ast.parse(code, filename=P.USER_FILENAME)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return _too_deep(tree)


def _too_deep(tree: ast.AST) -> Finding | None:
    limit = P.SIZE_LIMITS.max_ast_depth
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return _f("static.nesting", node,
                      f"code nests deeper than {limit} levels (expressions or statements "
                      "inside each other); flatten it with intermediate variables")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


def _check_identifiers(code: str) -> Iterator[Finding]:
    """Identifiers whose spelling changes under NFKC (fullwidth `eval` is `eval` to Python)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and not tok.string.isascii():
                norm = unicodedata.normalize("NFKC", tok.string)
                if norm != tok.string:
                    yield Finding("static.confusable-identifier", tok.start[0], tok.start[1],
                                  f"identifier {tok.string!r} is read by Python as {norm!r}; "
                                  "write identifiers in their normal form")
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return


_TYPE_EXPR_NODES = (ast.Name, ast.Attribute, ast.Subscript, ast.Constant, ast.Tuple, ast.List,
                    ast.BinOp, ast.Load, ast.BitOr)
_MAX_STRING_ANNOTATION = 200


class _Checker(ast.NodeVisitor):
    """One pass over the tree; collects findings instead of stopping at the first."""

    def __init__(self, spec: FunctionSpec, tree: ast.Module) -> None:
        self.spec = spec
        self.tree = tree
        self.out: list[Finding] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted module path it was imported as
        self.module_consts: set[str] = set()
        self.except_names: set[str] = set()
        self.docstrings: set[int] = set()  # ids of docstring Constant nodes
        self.scopes: list[set[str]] = []
        self.assigned: list[dict[str, list[ast.expr]]] = []  # per function: name -> values
        self.dunder_re = re.compile(P.DUNDER_STRING_PATTERN)
        self.sink_res = [re.compile(p) for p in P.EVAL_SINK_PATTERNS]
        self.module_names = P.module_name_attributes()
        self.module_names_rooted = (P.FORBIDDEN_MODULES | self.module_names) - \
            P.allowed_modules() - P.MODULE_NAME_COLLISIONS

    def add(self, rule: str, node: ast.AST | None, message: str) -> None:
        self.out.append(_f(rule, node, message))

    # ---- driver
    def run(self) -> list[Finding]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    local = a.asname or a.name.split(".")[0]
                    self.aliases[local] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.except_names.add(node.name)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef
                          | ast.ClassDef) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    self.docstrings.add(id(first.value))
        self._check_toplevel()
        self.scopes.append(_bound_names(self.tree.body))
        self.visit(self.tree)
        return self.out

    def _check_toplevel(self) -> None:
        body = self.tree.body
        defs: dict[str, ast.FunctionDef] = {}
        helpers = 0
        for i, stmt in enumerate(body):
            if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                continue
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                continue
            if isinstance(stmt, ast.FunctionDef):
                if stmt.name in defs:
                    self.add("static.structure", stmt,
                             f"function {stmt.name!r} is defined twice")
                defs[stmt.name] = stmt
                if stmt.name != self.spec.name:
                    helpers += 1
                continue
            if isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                names = [n for t in targets for n in _plain_targets(t)]
                value = stmt.value
                if all(n is not None for n in names) and value is not None \
                        and self._is_const(value):
                    self.module_consts.update(n for n in names if n is not None)
                    continue
                self.add("static.toplevel", stmt,
                         "top-level assignments must bind names to a constant expression "
                         "(literals, arithmetic on them, or calls such as float('inf') or "
                         "sympy.Symbol('x') on constants); compute other values inside the "
                         "function")
                continue
            if isinstance(stmt, ast.ClassDef | ast.AsyncFunctionDef):
                continue  # reported by the visitor
            self.add("static.toplevel", stmt,
                     f"top-level {type(stmt).__name__} statement: only imports, defs and "
                     "constants may appear outside functions (nothing runs at definition time)")
        main = defs.get(self.spec.name)
        if main is None:
            self.add("static.structure", None,
                     f"no top-level 'def {self.spec.name}(...)': the code must define the "
                     "function named in the spec")
        else:
            self._check_signature(main)
        if helpers > P.SIZE_LIMITS.max_helpers:
            self.add("static.structure", None,
                     f"{helpers} helper functions; at most {P.SIZE_LIMITS.max_helpers} are allowed")

    def _check_signature(self, fn: ast.FunctionDef) -> None:
        a = fn.args
        if a.posonlyargs:
            self.add("static.signature", fn, "positional-only parameters are not allowed: the "
                     "function is called with keyword arguments")
        if a.vararg or a.kwarg:
            self.add("static.signature", fn, "*args/**kwargs are not allowed: declare every "
                     "parameter by name, matching the JSON schema")
        props = self.spec.parameters.get("properties", {})
        props = props if isinstance(props, dict) else {}
        required = self.spec.parameters.get("required", [])
        required = set(required) if isinstance(required, list) else set()
        positional = a.posonlyargs + a.args
        n_nodefault = len(positional) - len(a.defaults)
        params: dict[str, bool] = {}  # name -> has default
        for i, arg in enumerate(positional):
            params[arg.arg] = i >= n_nodefault
        for arg, dflt in zip(a.kwonlyargs, a.kw_defaults, strict=True):
            params[arg.arg] = dflt is not None
        for pname, has_default in params.items():
            if pname not in props:
                self.add("static.signature", fn,
                         f"parameter {pname!r} is not in the spec's parameters.properties")
            elif not has_default and pname not in required:
                self.add("static.signature", fn,
                         f"parameter {pname!r} has no default but is not required in the "
                         "schema: give it a default or list it in 'required'")
        for pname in props:
            if pname not in params:
                self.add("static.signature", fn,
                         f"schema property {pname!r} is not a parameter of {fn.name}()")

    # ---- helpers
    def _is_const(self, node: ast.AST) -> bool:
        """A constant expression: evaluating it runs no user-chosen code and stays small."""
        if isinstance(node, ast.Constant):
            v = node.value
            return not (isinstance(v, str | bytes) and len(v) > P.SIZE_LIMITS.max_string_constant)
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return all(self._is_const(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return all(k is not None and self._is_const(k) for k in node.keys) and \
                all(self._is_const(v) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            return self._is_const(node.operand)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow | ast.LShift):
                r = node.right
                if not (isinstance(r, ast.Constant) and isinstance(r.value, int | float)
                        and abs(r.value) <= P.SIZE_LIMITS.max_const_pow_exponent):
                    return False
            if isinstance(node.op, ast.Mult) and not _small_repeat(node):
                return False
            return self._is_const(node.left) and self._is_const(node.right)
        if isinstance(node, ast.Name):
            return node.id in self.module_consts or node.id in ("None", "True", "False")
        if isinstance(node, ast.Attribute):
            root = _chain_root(node)
            return root is not None and root in self.aliases and not node.attr.startswith("_")
        if isinstance(node, ast.Call):
            return self._call_path(node.func) in P.CONSTANT_CALLS and \
                all(self._is_const(a) for a in node.args) and \
                all(k.arg is not None and self._is_const(k.value) for k in node.keywords)
        return False

    def _call_path(self, func: ast.expr) -> str | None:
        """What a call's target names: a builtin (not rebound at top level) or an import-rooted
        dotted path (`sp.Symbol` -> `sympy.Symbol`)."""
        if isinstance(func, ast.Name) and func.id not in self.aliases:
            top = self.scopes[0] if self.scopes else _bound_names(self.tree.body)
            return None if func.id in top else func.id
        return self._resolve(func)

    def _is_type_expr(self, node: ast.AST, depth: int = 0) -> bool:
        """A plain type expression; string constants in it (forward references, which
        typing.get_type_hints evaluates) must parse as type expressions too."""
        for n in ast.walk(node):
            if not isinstance(n, _TYPE_EXPR_NODES):
                return False
            if isinstance(n, ast.BinOp) and not isinstance(n.op, ast.BitOr):
                return False
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                if depth > 0 or len(n.value) > _MAX_STRING_ANNOTATION:
                    return False
                try:
                    inner = ast.parse(n.value.strip(), mode="eval").body
                except (SyntaxError, ValueError, MemoryError, RecursionError):
                    return False
                if _too_deep(inner) is not None or not self._is_type_expr(inner, depth + 1):
                    return False
                for sub in ast.walk(inner):
                    for ident in _identifiers(sub):
                        self._check_identifier(ident, node)
        return True

    def _resolve(self, node: ast.AST) -> str | None:
        """Dotted module path of an import-rooted chain (`np.linalg` -> `numpy.linalg`)."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.aliases:
            return None
        return ".".join([self.aliases[node.id], *reversed(parts)])

    def _bound(self, name: str) -> bool:
        return any(name in s for s in self.scopes)

    # ---- visitors
    def visit_Name(self, node: ast.Name) -> None:
        self._check_identifier(node.id, node)
        if isinstance(node.ctx, ast.Load) and node.id in P.FORBIDDEN_BUILTINS \
                and not self._bound(node.id):
            self.add("static.builtin", node,
                     f"{node.id!r} is not available to generated functions (it evaluates code, "
                     "looks names up by string, introspects, does I/O or hands out addresses)")

    def _check_identifier(self, ident: str, node: ast.AST) -> None:
        if ident.startswith("__") and ident.endswith("__") and len(ident) > 4:
            self.add("static.dunder", node, f"dunder name {ident!r} is not allowed")
        elif ident.startswith("_") and ident != "_":
            self.add("static.private-name", node,
                     f"name {ident!r} starts with '_': private and guard names are reserved")

    def visit_arg(self, node: ast.arg) -> None:
        self._check_identifier(node.arg, node)
        if node.annotation is not None:
            self._check_annotation(node.annotation)
            self.visit(node.annotation)

    def _check_annotation(self, node: ast.AST) -> None:
        if not self._is_type_expr(node):
            self.add("static.annotation", node,
                     "annotations must be plain type expressions (they run at definition time, "
                     "and typing.get_type_hints evaluates string annotations)")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_annotation(node.annotation)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr.startswith("__") and attr.endswith("__"):
            if attr not in P.ALLOWED_DUNDER_ATTRIBUTES or not isinstance(node.ctx, ast.Load):
                self.add("static.dunder", node, f"dunder attribute {attr!r} is not allowed"
                         + (f" (only reading {', '.join(sorted(P.ALLOWED_DUNDER_ATTRIBUTES))} "
                            "is)" if attr in P.ALLOWED_DUNDER_ATTRIBUTES else ""))
        elif attr.startswith("_"):
            self.add("static.private-attr", node,
                     f"attribute {attr!r} starts with '_': private attributes are off limits")
        elif attr in P.DANGEROUS_ATTRIBUTES:
            self.add("static.attribute", node,
                     f"attribute {attr!r} reaches interpreter internals, raw memory, files, "
                     "processes or FFI")
        elif attr in self.module_names:
            self.add("static.module-attr", node,
                     f"attribute {attr!r} names a module generated code may not use")
        elif attr in P.METACLASS_NAMES:
            self.add("static.metaclass", node,
                     f"attribute {attr!r} is a metaclass: calling it creates classes")
        else:
            base = self._resolve(node.value)
            if base is not None:
                self._check_module_path(base, attr, node)
        if attr == "obj" and isinstance(node.value, ast.Name) \
                and node.value.id in self.except_names:
            self.add("static.exception-obj", node,
                     "AttributeError.obj hands out the object a guarded lookup refused")
        self.generic_visit(node)

    def _check_module_path(self, base: str, attr: str, node: ast.AST) -> None:
        full = f"{base}.{attr}"
        if attr in self.module_names_rooted:
            self.add("static.module-attr", node,
                     f"{full} reaches the forbidden module {attr!r} through an allowed one")
        elif any(full == s or full.startswith(s + ".") for s in P.FORBIDDEN_SUBMODULES):
            self.add("static.import", node, f"{full} is a forbidden submodule")
        elif attr in P.FORBIDDEN_MODULE_ATTRIBUTES.get(base, frozenset()) \
                or attr in P.denied_container_names():
            self.add("static.module-attr", node,
                     f"{full} is not available to generated functions (files, tests, "
                     "subprocesses, sessions, raw memory, attributes named by data, or a "
                     "container of refused values)")
        elif attr in P.FORBIDDEN_BUILTINS:
            self.add("static.builtin", node, f"{full} is an evaluator or introspection helper")

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, str | bytes):
            text = v if isinstance(v, str) else v.decode("latin-1")
            if id(node) not in self.docstrings and self.dunder_re.search(text):
                self.add("static.dunder-string", node,
                         "string literal names a dunder attribute (raw material of "
                         "getattr-by-string escapes)")
            if len(text) > P.SIZE_LIMITS.max_string_constant:
                self.add("static.size", node, "string literal is too long")

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if not P.module_allowed(a.name):
                self.add("static.import", node, _import_msg(a.name))
            if a.asname:
                self._check_identifier(a.asname, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if node.level:
            self.add("static.import", node, "relative imports are not allowed")
            return
        if mod == "__future__":
            for a in node.names:
                if a.name not in P.FUTURE_IMPORTS:
                    self.add("static.import", node, f"from __future__ import {a.name} refused")
            return
        if not P.module_allowed(mod):
            self.add("static.import", node, _import_msg(mod))
            return
        for a in node.names:
            if a.name == "*":
                self.add("static.import", node, "'import *' is not allowed: import names")
                continue
            self._check_identifier(a.name, node)
            if a.asname:
                self._check_identifier(a.asname, node)
            if a.name in P.DANGEROUS_ATTRIBUTES:
                self.add("static.attribute", node, f"{mod}.{a.name} is off limits")
            elif a.name in self.module_names:
                self.add("static.module-attr", node, f"{mod}.{a.name} names a forbidden module")
            elif a.name in P.METACLASS_NAMES:
                self.add("static.metaclass", node,
                         f"{mod}.{a.name} is a metaclass: calling it creates classes")
            elif not a.name.startswith("_"):
                self._check_module_path(mod, a.name, node)

    def _visit_function(self, node: ast.FunctionDef | ast.Lambda) -> None:
        args = node.args
        for d in [*args.defaults, *(k for k in args.kw_defaults if k is not None)]:
            if not self._is_const(d):
                self.add("static.default", d, "default values must be constants (they are "
                         "evaluated at definition time); use None and compute inside")
        if isinstance(node, ast.FunctionDef):
            self._check_identifier(node.name, node)
            for dec in node.decorator_list:
                if not self._safe_decorator(dec):
                    self.add("static.decorator", dec, "decorators run code at definition time; "
                             "only functools.lru_cache/cache are allowed")
            if node.returns is not None:
                self._check_annotation(node.returns)
        self.scopes.append(_function_scope(node))
        self.assigned.append(_assignments(node))
        self.generic_visit(node)
        self.assigned.pop()
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_function(node)

    def _safe_decorator(self, dec: ast.expr) -> bool:
        target = dec.func if isinstance(dec, ast.Call) else dec
        path = self._resolve(target)
        if path not in P.SAFE_DECORATORS:
            return False
        if isinstance(dec, ast.Call):
            return all(self._is_const(a) for a in dec.args) and all(
                self._is_const(k.value) for k in dec.keywords)
        return True

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.add("static.class", node, "class definitions are not allowed (class bodies, "
                 "metaclasses and subclass hooks run code at definition time); use functions, "
                 "tuples and dicts")
        self.generic_visit(node)

    def _async(self, node: ast.AST) -> None:
        self.add("static.async", node, "async code is not allowed")
        self.generic_visit(node)

    visit_AsyncFunctionDef = _async
    visit_Await = _async
    visit_AsyncFor = _async
    visit_AsyncWith = _async

    def visit_TryStar(self, node: ast.AST) -> None:
        self.add("static.try-star", node, "'except*' is not allowed (ExceptionGroup type "
                 "confusion); use a plain 'except'")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        """`global`/`nonlocal` are allowed (a counter or a flag in a closure); their names are
        checked like any other."""
        for name in node.names:
            self._check_identifier(name, node)

    visit_Nonlocal = visit_Global

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._check_identifier(node.name, node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None:
            self._check_identifier(node.arg, node)
            denied = P.DENIED_KEYWORDS.get(node.arg)
            if denied is not None:
                self.add(denied[0], node, f"keyword {node.arg!r}: {denied[1]}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else \
            func.attr if isinstance(func, ast.Attribute) else None
        n_args = len(node.args) + len(node.keywords)
        if isinstance(func, ast.Name) and func.id == "type" and not self._bound("type") \
                and n_args != 1:
            self.add("static.type-call", node, "type() with more than one argument creates "
                     "classes; only type(x) is allowed")
        if isinstance(func, ast.Call) and isinstance(func.func, ast.Name) \
                and func.func.id == "type" and not self._bound("type") and n_args >= 3:
            self.add("static.type-call", node, "calling type(x) with three arguments calls a "
                     "metaclass: it creates classes")
        if isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name) \
                and func.value.id == "type" and not self._bound("type"):
            self.add("static.type-call", node, "calling type[...] calls type(): it creates "
                     "classes; only type(x) is allowed")
        if isinstance(func, ast.Name) and func.id == "hasattr" and not self._bound("hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)
                    and not name.value.startswith("_")):
                self.add("static.hasattr", node, "hasattr() needs a literal public "
                         "attribute name")
        if isinstance(func, ast.Attribute) and func.attr == "format":
            self._check_format_call(func, node)
        path = self._resolve(func)
        if path is not None:
            self._check_call_limits(path, node)
        if fname in P.EVAL_SINKS and (isinstance(func, ast.Attribute) or fname in self.aliases):
            self._check_eval_sink(fname, node, follow=True)
        elif path is not None and path.split(".")[0] in P.STRING_EVALUATING_PACKAGES \
                and fname not in P.STRING_SAFE_CALLS:
            self._check_eval_sink(fname or path, node, follow=False)
        self.generic_visit(node)

    def _check_call_limits(self, path: str, node: ast.Call) -> None:
        """RUNTIME_CALL_LIMITS, applied to a call whose import-rooted path has the same package
        and the same last name as a limited callable (`sp.Function('f', bases, namespace)`)."""
        root, leaf = path.split(".")[0], path.rsplit(".", 1)[-1]
        for key, limits in P.RUNTIME_CALL_LIMITS.items():
            if key.split(".")[0] != root or key.rsplit(".", 1)[-1] != leaf:
                continue
            most = int(limits.get("max_positional", -1))
            denied = set(limits.get("denied_keywords", ()))
            starred = any(isinstance(a, ast.Starred) for a in node.args) or \
                any(k.arg is None for k in node.keywords)
            bad_kw = sorted(k.arg for k in node.keywords if k.arg is not None and k.arg in denied)
            if (most >= 0 and (len(node.args) > most or starred)) or bad_kw:
                self.add("static.call-limit", node,
                         f"{path}() with {'keyword ' + bad_kw[0] if bad_kw else 'these arguments'}"
                         f" is refused: {limits.get('why', 'unsafe form')}")

    def _check_format_call(self, func: ast.Attribute, node: ast.Call) -> None:
        recv = func.value
        if isinstance(recv, ast.Constant) and isinstance(recv.value, str):
            problem = format_field_problem(recv.value)
            if problem:
                self.add("static.format", node, f"format string field {problem!r} accesses "
                         "attributes; pass the values themselves")
            return
        first = node.args[0] if node.args else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            # unbound str.format through str or any str subclass: `np.str_.format("{0.x}", v)`
            problem = format_field_problem(first.value)
            if problem:
                self.add("static.format", node, f"format string field {problem!r} "
                         "accesses attributes; pass the values themselves")
        elif isinstance(recv, ast.Name) and recv.id == "str" and not self._bound("str"):
            self.add("static.format", node, "str.format(...) on a computed format string "
                     "is not allowed; call .format on a literal or use an f-string")

    def _check_eval_sink(self, fname: str, node: ast.Call, follow: bool) -> None:
        """String literals reaching a string evaluator must be mathematics, not code. With
        `follow`, local names in the arguments are followed (3 assignments deep) too."""
        parts: list[str] = []
        uses_chr = False
        local = self.assigned[-1] if self.assigned and follow else {}
        todo: list[tuple[ast.expr, int]] = [(a, 0) for a in node.args]
        todo += [(k.value, 0) for k in node.keywords]
        seen: set[int] = set()
        while todo:  # the arguments, and (3 levels deep) what local names in them were bound to
            expr, depth = todo.pop()
            if id(expr) in seen:
                continue
            seen.add(id(expr))
            for sub in _walk_sink_argument(expr, follow):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    parts.append(sub.value)
                elif isinstance(sub, ast.Name):
                    if sub.id in ("chr", "bytes") or (isinstance(sub.ctx, ast.Load)
                                                      and sub.id == "decode"):
                        uses_chr = True
                    elif depth < 3:
                        todo += [(v, depth + 1) for v in local.get(sub.id, [])]
                elif isinstance(sub, ast.Attribute) and sub.attr in ("decode", "fromhex"):
                    uses_chr = True
        joined = "".join(parts)
        hit = next((r.pattern for r in self.sink_res if r.search(joined)), None)
        if hit or (uses_chr and follow):
            self.add("static.eval-sink", node,
                     f"{fname}() evaluates strings as Python; its string literals must be "
                     "mathematical expressions, not code (found "
                     f"{'chr()' if uses_chr and not hit else hit!r})")


def _import_msg(mod: str) -> str:
    allowed = ", ".join(sorted(P.allowed_modules()))
    return f"import of {mod!r} is not allowed; allowed modules: {allowed}"


def _small_repeat(node: ast.BinOp) -> bool:
    """`seq * n` in a constant repeats a literal at most max_const_repeat times."""
    limit = P.SIZE_LIMITS.max_const_repeat
    for seq, count in ((node.left, node.right), (node.right, node.left)):
        if isinstance(seq, ast.Tuple | ast.List) or (
                isinstance(seq, ast.Constant) and isinstance(seq.value, str | bytes)):
            return isinstance(count, ast.Constant) and isinstance(count.value, int) \
                and not isinstance(count.value, bool) and count.value <= limit
    return True


def _plain_targets(target: ast.expr) -> list[str | None]:
    """Names bound by a top-level assignment target; None for anything but names and tuples of
    names (subscripts and attributes run code)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple | ast.List):
        return [n for elt in target.elts for n in _plain_targets(elt)]
    return [None]


def _identifiers(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


def _walk_sink_argument(expr: ast.expr, follow: bool) -> Iterator[ast.AST]:
    """The nodes of an eval-sink argument; without `follow`, nested calls to functions that
    never evaluate strings (`Symbol('lambda')`) are not entered."""
    queue: deque[ast.AST] = deque([expr])  # breadth first, left to right: "ev" + "al" is "eval"
    while queue:
        node = queue.popleft()
        yield node
        if not follow and isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else None
            if name in P.STRING_SAFE_CALLS:
                continue
        queue.extend(ast.iter_child_nodes(node))


def _chain_root(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _targets(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
            yield sub.id


def _bound_names(body: Iterable[ast.stmt]) -> set[str]:
    """Names bound in a scope (without descending into nested functions)."""
    names: set[str] = set()
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _assignments(node: ast.FunctionDef | ast.Lambda) -> dict[str, list[ast.expr]]:
    """Values assigned to each local name of a function (for the eval-sink data flow)."""
    out: dict[str, list[ast.expr]] = {}
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assign):
            for t in sub.targets:
                for name in _targets(t):
                    out.setdefault(name, []).append(sub.value)
        elif isinstance(sub, ast.AugAssign | ast.AnnAssign | ast.NamedExpr) and \
                isinstance(sub.target, ast.Name) and sub.value is not None:
            out.setdefault(sub.target.id, []).append(sub.value)
    return out


def _function_scope(node: ast.FunctionDef | ast.Lambda) -> set[str]:
    a = node.args
    names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs]}
    names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    body = node.body if isinstance(node, ast.FunctionDef) else [ast.Expr(node.body)]
    return names | _bound_names(body)
