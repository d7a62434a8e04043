"""Vetting stages 1-3 on the host: shape, static AST policy, RestrictedPython compilation.

Pure functions over a FunctionSpec, returning every finding at once (rule id, line, column,
message), so the optimizer LLM can fix all problems in one revision. The rules are data in
policy.py; this module is the mechanism.

Decisions (documented here because reviewers ask):
- One top-level `def` named like the spec, plus at most `max_helpers` public helper defs (no `_`
  prefix: RestrictedPython refuses such names) under the same rules. Nested defs and lambdas inside
  functions are fine.
- Nothing runs at definition time beyond imports, defs and constants: top-level statements are
  a docstring, imports, defs and `NAME = constant expression` (literals, arithmetic on literals,
  `math.pi`-style module attributes). Default values are constant expressions too; annotations are
  type expressions. Decorators are refused except functools' pure memoisers (`lru_cache`, `cache`).
  Class definitions are refused anywhere: a class body is code executed at definition time,
  metaclasses and `__init_subclass__` hooks run more, and a `str` subclass can fool a guarded
  getattr; math helpers do not need classes.
- `str.format` is allowed on literal format strings whose fields are plain (`{}`, `{0}`, `{n:.3f}`);
  fields with attribute or index access (`{0.__class__}`, `{x[0]}`) are refused; `format_map` is
  refused; a non-literal format string is left to the runtime guard (runner/guards.py checks the
  fields at call time). f-strings are plain expressions and are checked like any other code.
- sympify/parse_expr/lambdify evaluate strings as Python. They are allowed on data (an expression
  string passed in by the agent is the main use of math helpers), but string literals in their
  arguments that name an evaluator, a dangerous module or a dunder are refused.
- `except*` is refused (ExceptionGroup type confusion); positional-only parameters are refused on
  the main function (it is called with keyword arguments) and `_` names are refused everywhere
  (shadowing RestrictedPython's guard names).
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import keyword
import re
import string
import tokenize
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import jsonschema

from . import policy as P
from .spec import FunctionSpec


@dataclass(frozen=True)
class Finding:
    """One problem: a stable rule id (for reviewers and tests) and where it is."""

    rule: str
    line: int
    col: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(rule: str, node: ast.AST | None, message: str) -> Finding:
    line = getattr(node, "lineno", 0) if node is not None else 0
    col = getattr(node, "col_offset", 0) if node is not None else 0
    return Finding(rule, int(line or 0), int(col or 0), message)


# ---------------------------------------------------------------- stage 1: shape

def check_shape(spec: FunctionSpec) -> list[Finding]:
    """Name, description, parameter schema, code size, packages, test arguments."""
    lim = P.SIZE_LIMITS
    out: list[Finding] = []
    name = spec.name
    if not name.isidentifier() or not name.isascii():
        out.append(Finding("shape.name", 0, 0, f"name {name!r} is not a Python identifier"))
    elif keyword.iskeyword(name) or keyword.issoftkeyword(name):
        out.append(Finding("shape.name", 0, 0, f"name {name!r} is a Python keyword"))
    elif hasattr(builtins, name):
        out.append(Finding("shape.name", 0, 0,
                           f"name {name!r} shadows a Python builtin; choose a descriptive name"))
    elif name.startswith("_"):
        out.append(Finding("shape.name", 0, 0, f"name {name!r} must not start with '_'"))
    if len(name) > lim.max_name_chars:
        out.append(Finding("shape.name", 0, 0, f"name is longer than {lim.max_name_chars}"))
    if not spec.description.strip():
        out.append(Finding("shape.description", 0, 0,
                           "description is empty: say what the function computes and returns"))
    elif len(spec.description) > lim.max_description_chars:
        out.append(Finding("shape.description", 0, 0,
                           f"description is longer than {lim.max_description_chars} characters"))
    out.extend(_check_parameters(spec.parameters))
    if len(spec.code) > lim.max_code_chars:
        out.append(Finding("shape.code-size", 0, 0,
                           f"code has {len(spec.code)} characters; the limit is "
                           f"{lim.max_code_chars}"))
    if spec.code.count("\n") + 1 > lim.max_code_lines:
        out.append(Finding("shape.code-size", 0, 0,
                           f"code has more than {lim.max_code_lines} lines"))
    pkgs = P.image_packages()
    for pkg in spec.packages:
        if not pkgs.accepts(pkg):
            out.append(Finding("shape.packages", 0, 0,
                               f"package {pkg!r} is not in the sandbox image (available: "
                               f"{', '.join(sorted(pkgs.modules))}); nothing is installed at "
                               "run time"))
    if len(spec.tests) > lim.max_tests:
        out.append(Finding("shape.tests", 0, 0, f"more than {lim.max_tests} tests"))
    if not any(f.rule == "shape.parameters" for f in out):
        validator = jsonschema.Draft202012Validator(spec.parameters)
        props = spec.parameters.get("properties", {})
        required = spec.parameters.get("required", [])
        for i, test in enumerate(spec.tests):
            # Sandbox.call refuses arguments that break the schema before the function runs,
            # so every test (expect_error ones too) must be a valid call
            unknown = sorted(set(test.args) - set(props))
            missing = sorted(set(required) - set(test.args))
            if unknown or missing:
                out.append(Finding("shape.test-args", 0, 0,
                                   f"tests[{i}].args: unknown {unknown}, missing {missing}"))
                continue
            for err in validator.iter_errors(test.args):
                out.append(Finding("shape.test-args", 0, 0,
                                   f"tests[{i}].args do not match parameters: {err.message}"))
                break
    return out


def _check_parameters(params: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []

    def bad(msg: str) -> None:
        out.append(Finding("shape.parameters", 0, 0, msg))

    try:
        jsonschema.Draft202012Validator.check_schema(params)
    except jsonschema.SchemaError as exc:
        bad(f"parameters is not a valid JSON schema: {exc.message}")
        return out
    if params.get("type") != "object":
        bad('parameters must have "type": "object"')
    props = params.get("properties", {})
    if not isinstance(props, dict):
        bad('parameters.properties must be an object')
        return out
    if len(props) > P.SIZE_LIMITS.max_parameters:
        bad(f"more than {P.SIZE_LIMITS.max_parameters} parameters")
    for pname, pschema in props.items():
        if not (pname.isidentifier() and pname.isascii()) or keyword.iskeyword(pname):
            bad(f"parameter {pname!r} is not a valid Python parameter name")
        elif pname.startswith("_"):
            bad(f"parameter {pname!r} must not start with '_'")
        if not isinstance(pschema, dict):
            bad(f"parameter {pname!r} needs a schema object")
    required = params.get("required", [])
    if not isinstance(required, list):
        bad("parameters.required must be a list")
    else:
        for r in required:
            if r not in props:
                bad(f"required parameter {r!r} is not in properties")
    return out


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
    nodes = sum(1 for _ in ast.walk(tree))
    if nodes > P.SIZE_LIMITS.max_ast_nodes:
        out.append(Finding("static.size", 0, 0,
                           f"code has {nodes} syntax nodes; the limit is "
                           f"{P.SIZE_LIMITS.max_ast_nodes}"))
    checker = _Checker(spec, tree)
    out.extend(checker.run())
    return sorted(set(out), key=lambda f: (f.line, f.col, f.rule, f.message))


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


class _Checker(ast.NodeVisitor):
    """One pass over the tree; collects findings instead of stopping at the first."""

    def __init__(self, spec: FunctionSpec, tree: ast.Module) -> None:
        self.spec = spec
        self.tree = tree
        self.out: list[Finding] = []
        self.aliases: dict[str, str] = {}  # local name -> dotted module path it was imported as
        self.module_consts: set[str] = set()
        self.except_names: set[str] = set()
        self.scopes: list[set[str]] = []
        self.assigned: list[dict[str, list[ast.expr]]] = []  # per function: name -> values
        self.dunder_re = re.compile(P.DUNDER_STRING_PATTERN)
        self.sink_res = [re.compile(p) for p in P.EVAL_SINK_PATTERNS]

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
                value = stmt.value
                if all(isinstance(t, ast.Name) for t in targets) and value is not None \
                        and self._is_const(value):
                    self.module_consts.update(t.id for t in targets if isinstance(t, ast.Name))
                    continue
                self.add("static.toplevel", stmt,
                         "top-level assignments must bind a name to a constant expression "
                         "(literals and arithmetic on them); compute values inside the function")
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
            return self._is_const(node.left) and self._is_const(node.right)
        if isinstance(node, ast.Name):
            return node.id in self.module_consts or node.id in ("None", "True", "False")
        if isinstance(node, ast.Attribute):
            root = _chain_root(node)
            return root is not None and root in self.aliases and not node.attr.startswith("_")
        return False

    def _is_type_expr(self, node: ast.AST) -> bool:
        return all(isinstance(n, _TYPE_EXPR_NODES) for n in ast.walk(node)) and all(
            isinstance(n.op, ast.BitOr) for n in ast.walk(node) if isinstance(n, ast.BinOp))

    def _resolve(self, node: ast.AST) -> str | None:
        """Dotted module path of an import-rooted chain (`np.linalg` -> `numpy.linalg`)."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _bound(self, name: str) -> bool:
        return any(name in s for s in self.scopes)

    # ---- visitors
    def visit_Name(self, node: ast.Name) -> None:
        self._check_identifier(node.id, node)
        if isinstance(node.ctx, ast.Load) and node.id in P.FORBIDDEN_BUILTINS \
                and not self._bound(node.id):
            self.add("static.builtin", node,
                     f"{node.id!r} is not available to generated functions (it evaluates code, "
                     "looks names up by string, introspects or does I/O)")

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
                     "annotations must be plain type expressions (they run at definition time)")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if attr.startswith("__") and attr.endswith("__"):
            self.add("static.dunder", node, f"dunder attribute {attr!r} is not allowed")
        elif attr.startswith("_"):
            self.add("static.private-attr", node,
                     f"attribute {attr!r} starts with '_': private attributes are off limits")
        elif attr in P.DANGEROUS_ATTRIBUTES:
            self.add("static.attribute", node,
                     f"attribute {attr!r} reaches interpreter internals, files or FFI")
        elif attr in P.MODULE_NAME_ATTRIBUTES:
            self.add("static.module-attr", node,
                     f"attribute {attr!r} names a forbidden module")
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
        if attr in P.FORBIDDEN_MODULES:
            self.add("static.module-attr", node,
                     f"{full} reaches the forbidden module {attr!r} through an allowed one")
        elif any(full == s or full.startswith(s + ".") for s in P.FORBIDDEN_SUBMODULES):
            self.add("static.import", node, f"{full} is a forbidden submodule")
        elif attr in P.FORBIDDEN_MODULE_ATTRIBUTES.get(base, frozenset()):
            self.add("static.module-attr", node,
                     f"{full} is not available to generated functions (files, tests, "
                     "subprocesses or sessions)")
        elif attr in P.FORBIDDEN_BUILTINS:
            self.add("static.builtin", node, f"{full} is an evaluator or introspection helper")

    def visit_Constant(self, node: ast.Constant) -> None:
        v = node.value
        if isinstance(v, str | bytes):
            text = v if isinstance(v, str) else v.decode("latin-1")
            if self.dunder_re.search(text):
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
            elif a.name in P.MODULE_NAME_ATTRIBUTES:
                self.add("static.module-attr", node, f"{mod}.{a.name} names a forbidden module")
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

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._check_identifier(node.name, node)
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None:
            self._check_identifier(node.arg, node)
            if node.arg == "allow_pickle":
                self.add("static.pickle", node, "unpickling is not allowed")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else \
            func.attr if isinstance(func, ast.Attribute) else None
        if isinstance(func, ast.Name) and func.id == "type" and not self._bound("type") \
                and len(node.args) + len(node.keywords) != 1:
            self.add("static.type-call", node, "type() with more than one argument creates "
                     "classes; only type(x) is allowed")
        if isinstance(func, ast.Name) and func.id == "hasattr" and not self._bound("hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)
                    and not name.value.startswith("_")):
                self.add("static.hasattr", node, "hasattr() needs a literal public "
                         "attribute name")
        if isinstance(func, ast.Attribute) and func.attr == "format":
            self._check_format_call(func, node)
        if fname in P.EVAL_SINKS and (isinstance(func, ast.Attribute) or fname in self.aliases):
            self._check_eval_sink(fname, node)
        self.generic_visit(node)

    def _check_format_call(self, func: ast.Attribute, node: ast.Call) -> None:
        recv = func.value
        if isinstance(recv, ast.Constant) and isinstance(recv.value, str):
            problem = _format_problem(recv.value)
            if problem:
                self.add("static.format", node, f"format string field {problem!r} accesses "
                         "attributes or items; pass the values themselves")
        elif isinstance(recv, ast.Name) and recv.id == "str" and not self._bound("str"):
            self.add("static.format", node, "str.format(...) on a computed format string is "
                     "not allowed; call .format on a literal or use an f-string")

    def _check_eval_sink(self, fname: str, node: ast.Call) -> None:
        parts: list[str] = []
        uses_chr = False
        local = self.assigned[-1] if self.assigned else {}
        todo: list[tuple[ast.expr, int]] = [(a, 0) for a in node.args]
        todo += [(k.value, 0) for k in node.keywords]
        seen: set[int] = set()
        while todo:  # the arguments, and (3 levels deep) what local names in them were bound to
            expr, depth = todo.pop()
            if id(expr) in seen:
                continue
            seen.add(id(expr))
            for sub in ast.walk(expr):
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
        if hit or uses_chr:
            self.add("static.eval-sink", node,
                     f"{fname}() evaluates strings as Python; its string literals must be "
                     "mathematical expressions, not code (found "
                     f"{'chr()' if uses_chr and not hit else hit!r})")


def _import_msg(mod: str) -> str:
    allowed = ", ".join(sorted(P.allowed_modules()))
    return f"import of {mod!r} is not allowed; allowed modules: {allowed}"


def _format_problem(fmt: str) -> str | None:
    """The first field of a format string that does attribute or item access, if any."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except (ValueError, IndexError):
        return fmt[:40]
    for _lit, field, spec, _conv in parsed:
        if field and ("." in field or "[" in field):
            return field
        if spec:
            inner = _format_problem(spec)
            if inner:
                return inner
    return None


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


# ---------------------------------------------------------------- stage 3: RestrictedPython

_RP_LINE = re.compile(r"Line (\d+):\s*(.*)", re.S)


def check_restricted(code: str) -> list[Finding]:
    """RestrictedPython must accept the code; each of its errors becomes a finding."""
    from RestrictedPython.compile import compile_restricted_exec

    try:
        result = compile_restricted_exec(code, filename=P.USER_FILENAME)
    except (SyntaxError, ValueError, TypeError) as exc:
        return [Finding("restricted.compile", 0, 0, str(exc))]
    out = []
    for err in result.errors:
        m = _RP_LINE.match(err)
        line, msg = (int(m.group(1)), m.group(2)) if m else (0, err)
        out.append(Finding("restricted.compile", line, 0, msg.strip()))
    return out


def static_report(spec: FunctionSpec) -> dict[str, list[Finding]]:
    """All three host-side stages (for tests and the CLI); vet.py times them separately."""
    return {"shape": check_shape(spec), "static": check_static(spec),
            "restricted": check_restricted(spec.code)}


def findings_json(findings: Iterable[Finding]) -> str:
    return json.dumps([f.to_dict() for f in findings], indent=2)
