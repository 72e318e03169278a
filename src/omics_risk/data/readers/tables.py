"""Shared tables (CSV or Parquet): the ctDNA variant table, the metabolomics matrix with its sample sheet, the
precomputed feature table and copy-number segments, all read through the strict :class:`_Table`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.data.readers.columns import map_columns, missing_column_message
from omics_risk.data.readers.common import (
    MAX_ISSUES,
    TABLE_EXTENSIONS,
    DataFileError,
    _file_bytes,
    _Issues,
    has_extension,
)


def first_wide_line(text: str, sep: str, width: int) -> int | None:
    """The line of the first CSV record with more than ``width`` fields (None when the csv module cannot tell).

    pandas reports such a record by its record count (wrong after a quoted line break) or, on the first data line,
    not at all: it silently makes the first column the index.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    try:
        for row in reader:
            if len(row) > width:
                return reader.line_num
    except csv.Error:
        return None
    return None


class _Table:
    """A CSV/Parquet table read as text (CSV) or typed (Parquet), with a way to locate a row for messages.

    CSV rows are located by their line (header = line 1); Parquet has no lines, so messages name the row.
    ``columns`` maps contract names to the file's headers (cohort.yaml ``columns:``, :mod:`.columns`); the frame
    carries the contract's names, and messages name a column as the file does.
    """

    def __init__(self, path: Path, what: str, columns: Mapping[str, str] | None = None):
        self.path = path
        self.what = what
        self.declared = dict(columns or {})
        self.is_parquet = has_extension(path, (".parquet", ".pq"))
        if not path.is_file():
            raise DataFileError(path, "file not found")
        if not self.is_parquet and not has_extension(path, TABLE_EXTENSIONS):
            raise DataFileError(path, f"unsupported table format; use {', '.join(TABLE_EXTENSIONS)}")
        raw = self._read()
        self.header = [str(c) for c in raw.columns]
        self.df, self.renamed, self.aliased, mapping_problems = map_columns(raw, what, self.declared)
        self.issues = _Issues(path)
        for column, message in mapping_problems:
            self.issues.add(message, None if self.is_parquet else 1, column)

    def _read(self) -> pd.DataFrame:
        path = self.path
        if self.is_parquet:
            try:
                df = pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises several types for corrupt files
                raise DataFileError(path, f"cannot be read as Parquet ({exc}); re-export the {self.what}") from exc
            if isinstance(df.index, pd.RangeIndex):
                return df
            # pandas may have stored e.g. sample_id as the index: keep it as a column, so rows are numbered.
            return df.reset_index(drop=all(n is None for n in df.index.names))
        sep = "\t" if has_extension(path, (".tsv", ".tsv.gz")) else ","
        try:
            data = _file_bytes(path)
            first = re.split(rb"\r\n|\r|\n", data, maxsplit=1)[0]  # pandas also ends lines at a lone \r
            header = next(csv.reader([first.decode("utf-8-sig")], delimiter=sep), [])
            df = pd.read_csv(
                io.BytesIO(data),
                sep=sep,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=True,
                encoding="utf-8-sig",
            )
        except pd.errors.EmptyDataError as exc:
            raise DataFileError(path, f"is empty; a {self.what} needs a header line") from exc
        except pd.errors.ParserError as exc:
            m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
            if not m:
                raise DataFileError(path, f"cannot be parsed as CSV ({str(exc).strip()})") from exc
            # pandas numbers records, not lines (a quoted line break or a lone \r shifts them): ask the csv module.
            text = data.decode("utf-8-sig", "replace")
            line = first_wide_line(text, sep, int(m.group(1)))
            if line is None and int(m.group(2)) <= len(re.split(r"\r\n|\r|\n", text.rstrip("\r\n"))):
                line = int(m.group(2))
            raise DataFileError(
                path,
                f"cannot be parsed as CSV: a line has {m.group(3)} fields where {m.group(1)} are expected; check the "
                "number of fields (and the quotes) on that line",
                line,
            ) from exc
        except UnicodeDecodeError as exc:
            raise DataFileError(path, f"is not UTF-8 text ({exc}); save it as UTF-8 CSV") from exc
        except csv.Error as exc:
            raise DataFileError(path, f"the header line cannot be parsed as CSV ({exc})", 1) from exc
        if not isinstance(df.index, pd.RangeIndex):
            # pandas silently makes the first column the index when the first data line has one field too many.
            raise DataFileError(
                path,
                f"a data line has more fields than the header has column names ({len(df.columns)}); remove the "
                "extra field or name its column in the header",
                first_wide_line(data.decode("utf-8-sig"), sep, len(df.columns)),
            )
        header = [h.strip() for h in header]
        dups = sorted({h for h in header if header.count(h) > 1})
        if dups:
            raise DataFileError(path, f"column(s) {', '.join(dups)} appear more than once in the header", 1, dups[0])
        df.columns = [str(c).strip() for c in df.columns]
        return df

    def line(self, idx: int) -> int | None:
        return None if self.is_parquet else int(idx) + 2

    def where(self, idx: int) -> str:
        return f"row {int(idx) + 1}: " if self.is_parquet else ""

    def add(self, idx: int | None, column: str | None, message: str) -> None:
        column = self.renamed.get(column, column) if column is not None else None  # as the file's header says
        if idx is None:
            self.issues.add(message, 1 if not self.is_parquet else None, column)
        else:
            self.issues.add(self.where(idx) + message, self.line(idx), column)

    def require(self, columns: Sequence[str]) -> bool:
        missing = [c for c in columns if c not in self.df.columns]
        for c in missing:
            self.add(None, c, missing_column_message(c, columns, self.header, self.what, self.declared))
        return not missing

    def text(self, col: str, *, required: bool = True) -> pd.Series:
        s = self.df[col]
        s = s.where(s.isna(), s.astype(str).str.strip()).replace("", np.nan)
        if required:
            for idx in s.index[s.isna()][:MAX_ISSUES]:
                self.add(idx, col, f"empty {col}")
        return s

    def numbers(
        self,
        col: str,
        *,
        integer: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        required: bool = True,
        above: float | None = None,
        hint: str = "",
    ) -> pd.Series:
        """Vectorised typing of one column; every bad cell is reported with its line and column."""
        raw = self.df[col]
        if raw.dtype == object or pd.api.types.is_string_dtype(raw):
            raw = raw.where(raw.isna(), raw.astype(str).str.strip()).replace("", np.nan)
        values = pd.to_numeric(raw, errors="coerce").astype(float)
        checks: list[tuple[pd.Series, Callable[[Any], str]]] = [
            (raw.notna() & values.isna(), lambda c: f"{col} must be a number, got {c!r}{hint}"),
            (values.notna() & ~np.isfinite(values.fillna(0)), lambda c: f"{col} must be finite, got {c!r}{hint}"),
        ]
        if required:
            checks.append((raw.isna(), lambda c: f"empty {col}{hint}"))
        if integer:
            checks.append(
                (
                    values.notna() & (values != values.round()),
                    lambda c: f"{col} must be a whole number, got {c!r}{hint}",
                )
            )
            # Read as float64: beyond 2^53 whole numbers are no longer exact, beyond 2^63 int64 wraps to negative.
            checks.append((values.abs() > 2.0**53, lambda c: f"{col} is too large for a whole number, got {c!r}{hint}"))
        if minimum is not None:
            checks.append((values < minimum, lambda c: f"{col} must be >= {minimum:g}, got {c!r}{hint}"))
        if above is not None:
            checks.append((values <= above, lambda c: f"{col} must be > {above:g}, got {c!r}{hint}"))
        if maximum is not None:
            checks.append((values > maximum, lambda c: f"{col} must be <= {maximum:g}, got {c!r}{hint}"))
        claimed = pd.Series(False, index=raw.index)
        for bad, msg in checks:
            bad = bad & ~claimed
            claimed |= bad
            for idx in bad.index[bad.to_numpy()][:MAX_ISSUES]:
                self.add(idx, col, msg(raw.at[idx]))
            self.issues.dropped += max(0, int(bad.sum()) - MAX_ISSUES)
        return values

    def duplicates(self, cols: list[str], what: str) -> None:
        sub = self.df[cols]
        dup = sub.duplicated(keep=False) & sub.notna().all(axis=1)
        if not dup.any():
            return
        first_of: dict[tuple, int] = {}
        for idx in sub.index[dup.to_numpy()]:
            key = tuple(sub.loc[idx])
            if key in first_of:
                first = first_of[key]
                ref = f"row {first + 1}" if self.is_parquet else f"line {first + 2}"
                desc = ", ".join(f"{c}={v}" for c, v in zip(cols, key, strict=True))
                self.add(idx, cols[-1], f"duplicate {what} ({desc}); first seen on {ref}")
            else:
                first_of[key] = idx


def read_variant_table(path: str | Path, *, depth_optional: bool = False) -> pd.DataFrame:
    """Read the ctDNA variant table: one row per tracked variant per sample (CSV or Parquet).

    ``depth_optional=True`` (``omics-risk monitor``) accepts a table without a ``depth`` column, as a report giving
    VAFs only; ``depth`` is then NaN (float) and detection falls back to the VAF limit of detection.
    """
    t = _Table(Path(path), "ctDNA variant table")
    required = ["patient_id", "sample_id", "day", "gene", "variant", "vaf"]
    has_depth = "depth" in t.df.columns or not depth_optional
    if has_depth:
        required.append("depth")
    if not t.require(required):
        t.issues.raise_if_any()
    df = t.df.copy()
    for c in ("patient_id", "sample_id", "gene", "variant"):
        df[c] = t.text(c)
    df["day"] = t.numbers("day", hint=" (days from the index date)")
    df["vaf"] = t.numbers("vaf", minimum=0.0, maximum=1.0, hint=" (a fraction in [0, 1]; 1 % is 0.01)")
    depth = t.numbers("depth", integer=True, minimum=0) if has_depth else pd.Series(np.nan, index=df.index)
    if "alt_count" in df.columns:
        alt = t.numbers("alt_count", integer=True, minimum=0, required=False)
        over = alt.notna() & depth.notna() & (depth >= 0) & (alt > depth)
        for idx in over.index[over.to_numpy()][:MAX_ISSUES]:
            t.add(idx, "alt_count", f"alt_count ({alt[idx]:g}) exceeds depth ({depth[idx]:g})")
        df["alt_count"] = alt
    t.duplicates(["sample_id", "gene", "variant"], "variant of a sample")
    sp = df[["sample_id", "patient_id"]].dropna().drop_duplicates()
    clash = sp["sample_id"].duplicated(keep="first")
    for idx in sp.index[clash.to_numpy()][:MAX_ISSUES]:
        t.add(
            idx,
            "patient_id",
            f"sample '{sp.at[idx, 'sample_id']}' is given to two patients; a sample belongs to one patient",
        )
    t.issues.raise_if_any()
    df["depth"] = depth.astype(np.int64) if has_depth else depth.astype(float)
    if "alt_count" in df.columns:
        df["alt_count"] = df["alt_count"].astype("Int64")
    return df


@dataclass
class MetabolomicsData:
    """A metabolomics run: ``intensities`` (feature x injection, NaN = below detection), its sample sheet
    (indexed by sample_id) and the optional feature annotation (indexed by feature_id)."""

    intensities: pd.DataFrame
    sheet: pd.DataFrame
    features: pd.DataFrame | None = None

    def injections(self, sample_type: str) -> list[str]:
        """The matrix columns of one sample type ('sample', 'qc' or 'blank'), in injection order."""
        sub = self.sheet[self.sheet["sample_type"] == sample_type]
        return sub.sort_values(["batch", "injection_order"]).index.tolist()


SAMPLE_TYPES = ("sample", "qc", "blank")


def read_metabolomics(
    matrix_path: str | Path, sample_sheet_path: str | Path, features_path: str | Path | None = None
) -> MetabolomicsData:
    """Read a metabolomics intensity matrix with its sample sheet (and optional feature annotation).

    Problems in any of the files are reported together, each naming its own file.
    """
    matrix_path, sample_sheet_path = Path(matrix_path), Path(sample_sheet_path)
    m = _Table(matrix_path, "metabolomics matrix")
    intensities = None
    if len(m.df.columns) == 0 or m.df.columns[0] != "feature_id":
        m.add(
            None,
            m.df.columns[0] if len(m.df.columns) else None,
            "the first column must be 'feature_id' (then one column per injection, named by sample_id)",
        )
    else:
        fid = m.text("feature_id")
        m.duplicates(["feature_id"], "feature_id")
        values = {
            c: m.numbers(
                c,
                required=False,
                above=0.0,
                hint=" (raw intensity > 0; leave the cell empty below the detection limit)",
            )
            for c in m.df.columns[1:]
        }
        intensities = pd.DataFrame(values, columns=list(m.df.columns[1:]))
        intensities.index = pd.Index(fid, name="feature_id")
        intensities.columns.name = "sample_id"

    s = _Table(sample_sheet_path, "metabolomics sample sheet")
    sheet = None
    if s.require(["sample_id", "sample_type", "batch", "injection_order"]):
        sheet = s.df.copy()
        sheet["sample_id"] = s.text("sample_id")
        sheet["batch"] = s.text("batch")
        stype = s.text("sample_type")
        bad = stype.notna() & ~stype.isin(SAMPLE_TYPES)
        for idx in stype.index[bad.to_numpy()][:MAX_ISSUES]:
            s.add(idx, "sample_type", f"sample_type must be one of {', '.join(SAMPLE_TYPES)}, got {stype[idx]!r}")
        sheet["sample_type"] = stype
        sheet["injection_order"] = s.numbers("injection_order", integer=True, minimum=0)
        s.duplicates(["sample_id"], "sample_id")
        s.duplicates(["batch", "injection_order"], "injection_order within a batch")
        if intensities is not None:
            in_sheet = set(sheet["sample_id"].dropna())
            for c in intensities.columns:
                if c not in in_sheet:
                    m.add(
                        None,
                        c,
                        f"matrix column '{c}' has no row in the sample sheet {sample_sheet_path.name}; "
                        "add one (sample_type sample, qc or blank) or drop the column",
                    )
            in_matrix = sheet["sample_id"].notna() & ~sheet["sample_id"].isin(set(intensities.columns))
            for idx in sheet.index[in_matrix.to_numpy()][:MAX_ISSUES]:
                s.add(
                    idx,
                    "sample_id",
                    f"sample '{sheet.at[idx, 'sample_id']}' has no column in the matrix "
                    f"{matrix_path.name}; remove the row or add the column",
                )

    features = None
    f = None
    if features_path is not None:
        f = _Table(Path(features_path), "metabolomics feature annotation")
        if f.require(["feature_id"]):
            f.df["feature_id"] = f.text("feature_id")
            f.duplicates(["feature_id"], "feature_id")
            features = f.df.set_index("feature_id")
    issues = _Issues(matrix_path)
    for t in (m, s, f):
        if t is not None:
            issues.extend(t.issues)
    issues.raise_if_any()
    assert intensities is not None and sheet is not None
    sheet = sheet.set_index("sample_id")
    sheet["injection_order"] = sheet["injection_order"].astype(np.int64)
    return MetabolomicsData(intensities, sheet, features)


def read_table(path: str | Path, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read a precomputed sample x feature table: ``sample_id`` then numeric features (empty = missing).

    ``columns``: cohort.yaml's mapping, e.g. ``{"sample_id": "Barcode"}`` for a table keyed by another header.
    """
    t = _Table(Path(path), "feature table", columns)
    if not t.require(["sample_id"]):
        t.issues.raise_if_any()
    sid = t.text("sample_id")
    t.duplicates(["sample_id"], "sample_id")
    features = [c for c in t.df.columns if c != "sample_id"]
    if not features:
        t.add(None, None, "no feature columns: a table has sample_id and then one numeric column per feature")
    values = {c: t.numbers(c, required=False, hint=" (leave the cell empty for a missing value)") for c in features}
    t.issues.raise_if_any()
    out = pd.DataFrame(values, columns=features)
    out.index = pd.Index(sid, name="sample_id")
    out.attrs["column_aliases"] = dict(t.aliased)
    return out


def read_cn_segments(path: str | Path, columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read copy-number segments (``sample_id, chrom, start, end, segment_mean`` [, ``num_probes``]).

    ``columns``: cohort.yaml's mapping (contract name -> the file's header); without one, the TCGA / GDC headers
    (``Sample, Chromosome, Start, End, Num_Probes, Segment_Mean``) are read as they are (``column_aliases`` in
    the frame's ``attrs`` says which were).
    """
    t = _Table(Path(path), "copy-number segment table", columns)
    required = ["sample_id", "chrom", "start", "end", "segment_mean"]
    if not t.require(required):
        t.issues.raise_if_any()
    df = t.df.copy()
    df["sample_id"] = t.text("sample_id")
    df["chrom"] = t.text("chrom")
    start = t.numbers("start", integer=True, minimum=0)
    end = t.numbers("end", integer=True, minimum=0)
    bad = start.notna() & end.notna() & (end < start)
    for idx in bad.index[bad.to_numpy()][:MAX_ISSUES]:
        t.add(idx, "end", f"end ({end[idx]:g}) must be >= start ({start[idx]:g})")
    df["segment_mean"] = t.numbers("segment_mean", hint=" (log2 copy ratio)")
    if "num_probes" in df.columns:
        df["num_probes"] = t.numbers("num_probes", integer=True, minimum=0, required=False)
    t.issues.raise_if_any()
    if "num_probes" in df.columns:  # cast only once every value is known to be a whole number
        df["num_probes"] = df["num_probes"].astype("Int64")
    df["start"] = start.astype(np.int64)
    df["end"] = end.astype(np.int64)
    df["chrom"] = df["chrom"].astype("category")
    df.attrs["column_aliases"] = dict(t.aliased)
    return df
