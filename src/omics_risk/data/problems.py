"""Contract problems: one located finding (:class:`Problem`) and the error that carries them all
(:class:`CohortError`), so every check reports every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One finding about a cohort, located as precisely as possible.

    ``line`` is the 1-based line of a CSV file (the header is line 1, the first data row line 2), so an
    editor jumps straight to it.
    """

    severity: Literal["error", "warning"]
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
