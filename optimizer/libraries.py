"""Hand-written function libraries (libraries/*.toml): a list of function specs, vetted like
any proposal before a run may use them.

A TOML file holds `[[function]]` tables with the FunctionSpec fields (name, description,
parameters, code, packages, tests); `eval --library FILE.toml` evaluates one, for instance the
oracle library that measures how much perfect functions can help (README, "Learning").
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from sandbox import FunctionLibrary, FunctionSpec, InvalidSpec, Sandbox

from .errors import ConfigError

__all__ = ["load_library", "read_function_file", "vetted_library"]

_MAX_FILE_BYTES = 1 << 20


def read_function_file(path: str | Path) -> list[FunctionSpec]:
    """The specs of a TOML function file, each parsed as hostile input (FunctionSpec)."""
    file = Path(path)
    try:
        raw = file.read_bytes()[: _MAX_FILE_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read function file {path}: {exc.strerror}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError(f"function file {path} is over {_MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"function file {path} is not valid TOML: {exc}") from None
    tables = data.get("function")
    if set(data) != {"function"} or not isinstance(tables, list) or not tables:
        raise ConfigError(f"function file {path}: expected [[function]] tables and nothing else")
    specs = []
    for i, table in enumerate(tables, 1):
        try:
            specs.append(FunctionSpec.from_dict(table))
        except InvalidSpec as exc:
            raise ConfigError(f"function file {path}, function {i}: {exc}") from None
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"function file {path} defines a name twice")
    return specs


def vetted_library(specs: Sequence[FunctionSpec], sandbox: Sandbox,
                   where: str = "library") -> FunctionLibrary:
    """A library of exactly these specs; every one must pass vetting, or nothing is returned."""
    library = FunctionLibrary()
    for spec in specs:
        report = sandbox.vet(spec)
        if not report.passed:
            why = "; ".join(f.message for f in report.errors)[:600]
            raise ConfigError(f"{where}: {spec.name} does not pass vetting: {why}")
        library.add(spec, report)
    return library


def load_library(path: str | Path, runtime: str = "") -> FunctionLibrary:
    """A saved library (library.json), or a TOML function file vetted in a sandbox of its own
    (`runtime` as the run's [sandbox] table names it)."""
    if Path(path).suffix != ".toml":
        return FunctionLibrary.load(path)
    specs = read_function_file(path)
    with Sandbox(pool_size=1, runtime=runtime or None) as sandbox:
        return vetted_library(specs, sandbox, str(path))
