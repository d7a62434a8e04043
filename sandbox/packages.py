"""The sandbox image's Debian packages (images/packages.txt): one parser for the one list.

The list pins what the image is built from (sandbox/image.py) and is also the allowlist of
third-party modules generated functions may import (sandbox/policy.py).
Format, one package a line: `debian-package=version  module[,module]` ("-": adds no module).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import SandboxError

__all__ = ["PACKAGES_FILE", "ImagePackages", "Package", "image_packages", "parse_packages"]

PACKAGES_FILE = Path(__file__).resolve().parent.parent / "images" / "packages.txt"

NEVER_ALLOWED_THIRD_PARTY: frozenset[str] = frozenset({"RestrictedPython", "docker"})
"""Modules an image package may ship that are infrastructure, not tools for generated code."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    modules: tuple[str, ...]


@dataclass(frozen=True)
class ImagePackages:
    packages: tuple[Package, ...]

    @property
    def modules(self) -> frozenset[str]:
        """Importable third-party modules: the non-standard part of the import allowlist."""
        mods = {m for p in self.packages for m in p.modules}
        return frozenset(mods - NEVER_ALLOWED_THIRD_PARTY)

    def accepts(self, name: str) -> bool:
        """A spec may name a package as `python3-sympy`, `sympy` or the module `sympy`; a
        standard-library module (`math`, `fractions`) ships with the interpreter. Naming a
        module here permits nothing: the static gate still decides what may be imported."""
        if name.strip() in _STDLIB:
            return True
        key = name.strip().lower().replace("_", "-")
        key = re.split(r"[<>=!~\[ ]", key, maxsplit=1)[0]
        names = {p.name.lower() for p in self.packages}
        names |= {n.removeprefix("python3-") for n in names}
        names |= {m.lower() for m in self.modules}
        return key in names or key.replace("-", "_") in names


_STDLIB = frozenset(n for n in sys.stdlib_module_names if not n.startswith("_"))


def parse_packages(text: str, where: str = "packages.txt") -> ImagePackages:
    packages = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2 or "=" not in fields[0]:
            raise SandboxError(f"{where}:{number}: expected 'package=version  modules', "
                               f"got {raw!r}")
        name, version = fields[0].split("=", 1)
        modules = () if fields[1] == "-" else tuple(m for m in fields[1].split(",") if m)
        packages.append(Package(name, version, modules))
    return ImagePackages(tuple(packages))


@lru_cache(maxsize=1)
def image_packages() -> ImagePackages:
    """The image's package list; fnforge runs from a checkout, where images/ always exists."""
    try:
        text = PACKAGES_FILE.read_text(encoding="utf-8")
    except OSError as exc:
        raise SandboxError(f"cannot read {PACKAGES_FILE} ({exc.strerror}): fnforge runs from "
                           "its source checkout, which holds images/") from None
    return parse_packages(text, str(PACKAGES_FILE))
