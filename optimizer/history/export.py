"""Export: the whole history as JSONL, one record per line, for SIEMs and notebooks.

Each line is canonical JSON: {"run_id", "seq", "time", "kind", "step", "epoch", "data",
"prev_hash", "hash"}. A tool can re-check the chain from the lines alone:

    hash == sha256(prev_hash + "\\n" + canonical({"seq", "time", "kind", "step", "epoch",
                                                  "data"}))

with canonical = JSON with sorted keys, separators (",", ":"), ASCII only (canonical.py).
Records that are broken are exported as they are stored: the export is evidence, not a verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from .canonical import canonical_json
from .verify import VerifyReport, read_history

__all__ = ["export_jsonl"]


def export_jsonl(run_dir: str | Path, out: TextIO) -> VerifyReport:
    """Write every readable record to `out`; returns the verification verdict as well."""
    records, report = read_history(run_dir)
    for record in records:
        out.write(canonical_json({**record.to_dict(), "run_id": report.run_id}) + "\n")
    out.flush()
    return report
