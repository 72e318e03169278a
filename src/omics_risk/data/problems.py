"""Contract problems: one located finding (:class:`Problem`) and the error that carries them all
(:class:`CohortError`), so every check reports every problem at once; :func:`grouped_lines` folds the per-row
findings of one kind (a sub-stage in 482 rows) into one line with a count, the first rows and the distinct values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: Rows listed in a grouped line (the rest are counted).
FIRST_ROWS = 5
#: Distinct values listed in a grouped line (the rest are counted).
FIRST_VALUES = 8
_QUOTED = re.compile(r"'[^']*'")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    """One finding about a cohort, located as precisely as possible.

    ``line`` is the 1-based line of a CSV file (the header is line 1, the first data row line 2), so an
    editor jumps straight to it. A ``note`` is neither error nor warning: something read in a documented way the
    user may want to know about (the TCGA headers of a segment file, samples.csv without ``day``).
    """

    severity: Literal["error", "warning", "note"]
    file: str
    message: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.column is not None:
            where += f" [{self.column}]"
        return f"{self.severity.upper()}: {where}: {self.message}"


def _kind(p: Problem) -> tuple[str, str, str | None, str]:
    """What makes two findings the same kind: severity, file, column and the message without its values."""
    return p.severity, p.file, p.column, _NUMBER.sub("#", _QUOTED.sub("'", p.message))


def _grouped(group: Sequence[Problem]) -> str:
    """One line for the per-row findings of one kind: count, first rows, the message and its distinct values."""
    first = group[0]
    quoted = [_QUOTED.findall(p.message) for p in group]
    varying = {k for k in range(len(quoted[0])) if len({q[k] for q in quoted if len(q) > k}) > 1}
    parts = _QUOTED.split(first.message)
    message = parts[0]
    for k, text in enumerate(parts[1:]):
        message += ("'<value>'" if k in varying else quoted[0][k]) + text
    lines = sorted({p.line for p in group if p.line is not None})
    shown = ", ".join(map(str, lines[:FIRST_ROWS])) + (", ..." if len(lines) > FIRST_ROWS else "")
    where = first.file + (f" [{first.column}]" if first.column is not None else "")
    out = f"{where}: {len(group)} rows (lines {shown}): {message}"
    if varying:
        k = min(varying)
        counts = Counter(q[k] for q in quoted if len(q) > k)
        values = ", ".join(f"{v} ({n})" for v, n in counts.most_common(FIRST_VALUES))
        more = f", and {len(counts) - FIRST_VALUES} more" if len(counts) > FIRST_VALUES else ""
        out += f"; distinct values (rows): {values}{more}"
    return out


def grouped_lines(problems: Sequence[Problem]) -> list[str]:
    """``problems`` as report lines (``file:line [column]: message``), in their order, with every kind found on
    several rows folded into one line at the place of its first finding."""
    kinds: dict[tuple[str, str, str | None, str], list[Problem]] = {}
    for p in problems:
        if p.line is not None:
            kinds.setdefault(_kind(p), []).append(p)
    out: list[str] = []
    for p in problems:
        group = kinds.get(_kind(p), []) if p.line is not None else []
        if len(group) < 2:
            out.append(str(p).split(": ", 1)[1])
        elif group[0] is p:
            out.append(_grouped(group))
    return out


class CohortError(ValueError):
    """A cohort that breaks the contract; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        shown = "\n".join(f"  {p}" for p in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(
            f"cohort breaks the data contract ({len(errors)} error(s)); run `omics-risk validate` for the full "
            f"report:\n{shown}{more}"
        )
