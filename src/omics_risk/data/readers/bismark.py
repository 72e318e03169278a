"""Bismark CpG coverage files (``.cov`` / ``.cov.gz``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from omics_risk.data.readers.common import (
    _STRING,
    DataFileError,
    FileIssue,
    _Column,
    _data_rows,
    _file_bytes,
    _first_line,
    _float_field,
    _int_field,
    _Issues,
    _parse_tsv,
    _report_rows,
    _text_field,
)

_BISMARK_COLUMNS = [
    _Column("chrom", _STRING, _text_field),
    _Column("start", pa.int64(), _int_field(0)),
    _Column("end", pa.int64(), _int_field(0)),
    _Column("percent", pa.float64(), _float_field(0.0, 100.0)),
    _Column("count_methylated", pa.int64(), _int_field(0)),
    _Column("count_unmethylated", pa.int64(), _int_field(0)),
]


def _start_not_after_end(fields: list[str]) -> tuple[str, str] | None:
    if int(fields[2]) < int(fields[1]):
        return "end", f"end ({fields[2]}) must be >= start ({fields[1]})"
    return None


#: Largest difference, in percentage points, between percent_methylated and 100 x count_methylated / coverage before
#: a line is reported as contradicting its counts. Bismark prints the exact ratio (Perl, 15 significant digits);
#: files whose percent was rounded to an integer are off by at most 0.5 and those whose percent was truncated to one
#: (MethylDackel, PileOMeth-style ``printf %d``) by less than 1, so 1 accepts every producer. The mistakes it is
#: for are far above: swapped count columns are off by |100 - 2p|, a fraction (0-1) written instead of a percent by
#: ~p. A further 1e-6 absorbs float formatting.
BISMARK_PERCENT_TOLERANCE = 1.0


def read_bismark_cov(path: str | Path, *, notes: list[FileIssue] | None = None) -> pd.DataFrame:
    """Read a Bismark coverage file (``.cov`` / ``.cov.gz``) into a typed frame, checking every line.

    Besides the format, each line's percent_methylated must agree with its counts (within
    :data:`BISMARK_PERCENT_TOLERANCE`): a disagreement means swapped or shifted columns, which would silently
    invert the methylation features. Lines with no read at all (both counts 0) are harmless to the features but
    are not what Bismark writes; they are listed in ``notes`` when given (``validate`` shows them as warnings).
    """
    path = Path(path)
    rows = _data_rows(_file_bytes(path), (b"#", b"track"))
    if rows.data:
        ncols = _first_line(rows).count(b"\t") + 1
        if ncols != 6:
            raise DataFileError(
                path,
                f"has {ncols} tab-separated column(s); a Bismark coverage file has 6 (chrom, "
                "start, end, percent_methylated, count_methylated, count_unmethylated)",
                rows.line(0),
            )
    table = _parse_tsv(path, rows, _BISMARK_COLUMNS, "Bismark coverage", row_checks=[_start_not_after_end])
    cols = {
        c: table.column(c).to_numpy() for c in ("start", "end", "percent", "count_methylated", "count_unmethylated")
    }
    issues = _Issues(path)
    for c in ("start", "count_methylated", "count_unmethylated"):
        v = cols[c]
        _report_rows(issues, rows, v < 0, c, lambda r, v=v, c=c: f"{c} must be >= 0, got {v[r]}")
    pct = cols["percent"]
    _report_rows(
        issues, rows, ~((pct >= 0) & (pct <= 100)), "percent", lambda r: f"percent must be in [0, 100], got {pct[r]}"
    )
    start, end = cols["start"], cols["end"]
    _report_rows(issues, rows, end < start, "end", lambda r: f"end ({end[r]}) must be >= start ({start[r]})")
    meth, unmeth = cols["count_methylated"], cols["count_unmethylated"]
    total = meth + unmeth
    counted = (meth >= 0) & (unmeth >= 0)
    expected = np.divide(100.0 * meth, total, out=np.zeros(len(total)), where=total > 0)
    contradicts = (
        counted & (total > 0) & (pct >= 0) & (pct <= 100) & (np.abs(pct - expected) > BISMARK_PERCENT_TOLERANCE + 1e-6)
    )
    _report_rows(
        issues,
        rows,
        contradicts,
        "percent",
        lambda r: (
            f"percent_methylated {pct[r]:g} contradicts the counts: 100 x {meth[r]} / ({meth[r]} + {unmeth[r]}) "
            f"= {expected[r]:.4g}; check the column order (chrom, start, end, percent_methylated, count_methylated, "
            "count_unmethylated)"
        ),
    )
    issues.raise_if_any()
    if notes is not None:
        empty = _Issues(path)
        _report_rows(
            empty,
            rows,
            counted & (total == 0),
            "count_methylated",
            lambda r: (
                "no read covers this CpG (count_methylated and count_unmethylated are 0); the line adds "
                "nothing to the features, and Bismark writes no such line: was the file made by another tool?"
            ),
        )
        notes += empty.items
        if empty.dropped:
            notes.append(FileIssue(str(path), f"... and {empty.dropped} more line(s) without reads"))
    return pd.DataFrame(
        {
            "chrom": pd.Categorical(table.column("chrom").to_numpy(zero_copy_only=False)),
            "start": start.astype(np.int64, copy=False),
            "end": end.astype(np.int64, copy=False),
            "percent": pct.astype(np.float64, copy=False),
            "count_methylated": cols["count_methylated"].astype(np.int64, copy=False),
            "count_unmethylated": cols["count_unmethylated"].astype(np.int64, copy=False),
        }
    )
