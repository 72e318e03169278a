"""What ``omics-risk validate`` hands back: every problem found, the modality-coverage summary, as text or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from omics_risk.data.problems import Problem, grouped_lines

__all__ = ["COVERAGE_COLUMNS", "ValidationReport"]

COVERAGE_COLUMNS = ["modality", "timepoint", "patients", "percent"]


@dataclass
class ValidationReport:
    """Everything ``validate`` found: problems (errors and warnings) and the modality-coverage summary."""

    root: str
    problems: list[Problem]
    coverage: pd.DataFrame
    n_patients: int
    n_samples: int
    n_files_opened: int = 0
    seconds: float = 0.0
    name: str | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def notes(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "note"]

    @property
    def ok(self) -> bool:
        """True when the cohort has no errors (warnings do not block training or scoring)."""
        return not self.errors

    def _grouped(self, severity: str) -> list[Problem]:
        """Problems of one severity grouped by file (in order of first appearance), then by line."""
        probs = [p for p in self.problems if p.severity == severity]
        order: dict[str, int] = {}
        for p in probs:
            order.setdefault(p.file, len(order))
        return sorted(
            probs, key=lambda p: (order[p.file], p.message.startswith("..."), p.line if p.line is not None else -1)
        )

    def to_text(self) -> str:
        """The human-readable report: errors, warnings, notes, the coverage table and a final count line.

        A kind of problem found on several rows is one line (count, first rows, distinct values): 482 rows of
        sub-stages are one finding, not 482 (:func:`~omics_risk.data.problems.grouped_lines`); ``to_dict`` keeps
        every row.
        """
        out = [
            f"Cohort {self.name or '?'} at {self.root}: {self.n_patients} patient(s), {self.n_samples} sample(s), "
            f"{self.n_files_opened} data file(s) opened in {self.seconds:.1f} s"
        ]
        for severity, title in (("error", "Errors"), ("warning", "Warnings"), ("note", "Notes")):
            probs = self._grouped(severity)
            if not probs:
                continue
            out += ["", f"{title} ({len(probs)}):"]
            files = list(dict.fromkeys(p.file for p in probs))
            for k, file in enumerate(files):
                if k:
                    out.append("")
                out += ["  " + line for line in grouped_lines([p for p in probs if p.file == file])]
        if len(self.coverage):
            out += ["", f"Modality coverage (patients with at least one sample, of {self.n_patients}):"]
            table = self.coverage.copy()
            table["percent"] = table["percent"].map(lambda v: f"{v:.1f}%")
            out += ["  " + line for line in table.to_string(index=False).splitlines()]
        n_err, n_warn, n_note = len(self.errors), len(self.warnings), len(self.notes)
        out += ["", f"{n_err} error(s), {n_warn} warning(s)" + (f", {n_note} note(s)" if n_note else "")]
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``omics-risk validate --json``)."""
        return {
            "root": self.root,
            "name": self.name,
            "ok": self.ok,
            "n_patients": self.n_patients,
            "n_samples": self.n_samples,
            "n_files_opened": self.n_files_opened,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "n_notes": len(self.notes),
            "problems": [
                {"severity": p.severity, "file": p.file, "line": p.line, "column": p.column, "message": p.message}
                for p in self.problems
            ],
            "coverage": [
                {
                    "modality": str(r.modality),
                    "timepoint": str(r.timepoint),
                    "patients": int(r.patients),
                    "percent": round(float(r.percent), 2),
                }
                for r in self.coverage.itertuples(index=False)
            ],
        }
