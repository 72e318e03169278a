"""Precomputed sample x feature tables (RPPA, miRNA, any omics computed elsewhere) passed through as features.

The contract's ``table`` format is already a feature matrix, so extraction only checks it (numeric, finite),
optionally applies ``log2(x + 1)`` (counts, RPM, intensities) and prefixes the column names, and reports the
samples of samples.csv the table lacks, holds only empty cells for, or holds unusable cells for (text, infinite,
negative under log2) as failures; the other samples of the table are extracted.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import ClassVar

import numpy as np
import pandas as pd

from omics_risk.data.contract import Cohort
from omics_risk.data.readers import DataFileError, read_table
from omics_risk.features.base import ExtractionResult, Extractor
from omics_risk.features.shared_files import SharedFile, each_shared_file, read_isolating

__all__ = ["TableExtractor", "check_numeric"]


def check_numeric(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``df`` as float64, or a :class:`DataFileError` naming the first column that is not numeric or finite."""
    for col in df.columns:
        s = df[col]
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
            example = f" (e.g. {bad.iloc[0]!r} for sample {bad.index[0]})" if len(bad) else ""
            raise DataFileError(
                source,
                f"column '{col}' is not numeric{example}; a feature table holds numbers "
                "only (put text annotations elsewhere)",
                None,
                str(col),
            )
        v = s.to_numpy(dtype=float, na_value=np.nan)
        if np.isinf(v).any():
            raise DataFileError(
                source, f"column '{col}' holds an infinite value; use an empty cell for missing", None, str(col)
            )
    return df.astype(float)


class TableExtractor(Extractor):
    """Pass a precomputed feature table through, with checks, an optional log2(x+1) and a name prefix.

    Args:
        log2: transform every value with ``log2(x + 1)`` (needs values >= 0, e.g. counts or RPM).
        prefix: prepended to every feature name, e.g. ``"rppa_"``; features keep the table's column names
            otherwise.
        columns: keep only these columns (in this order); default all.
    """

    name: ClassVar[str] = "table"
    formats: ClassVar[tuple[str, ...]] = ("table",)
    version: ClassVar[str] = "1"
    per_sample: ClassVar[bool] = False

    def __init__(self, log2: bool = False, prefix: str = "", columns: Sequence[str] | None = None):
        self.log2 = bool(log2)
        self.prefix = str(prefix)
        self.columns = tuple(str(c) for c in columns) if columns is not None else None

    def transform_table(self, table: pd.DataFrame, source: str) -> pd.DataFrame:
        """Checked, selected, transformed and renamed copy of a ``read_table`` frame (index sample_id)."""
        if self.columns is not None:
            missing = [c for c in self.columns if c not in table.columns]
            if missing:
                raise DataFileError(
                    source,
                    f"column(s) {', '.join(missing[:5])} named in the extractor's columns are not in the table",
                    1,
                    missing[0],
                )
            table = table[list(self.columns)]
        out = check_numeric(table, source)
        if self.log2:
            mins = out.min(skipna=True)
            neg = mins[mins < 0]
            if len(neg):
                raise DataFileError(
                    source,
                    f"log2(x + 1) needs values >= 0, but column '{neg.index[0]}' has "
                    f"{neg.iloc[0]:g}; the table may already be log-scaled (set log2: false)",
                    None,
                    str(neg.index[0]),
                )
            out = np.log2(out + 1.0)
        if self.prefix:
            out = out.add_prefix(self.prefix)
        return out

    def _negative(self, table: pd.DataFrame, source: str) -> dict[str, str]:
        """Samples with a value log2(x + 1) cannot take (x < 0), each with the first such column."""
        if not self.log2:
            return {}
        cols = [c for c in (self.columns or table.columns) if c in table.columns]
        values = table[cols].to_numpy(dtype=float, na_value=np.nan)
        out = {}
        for i in np.flatnonzero((values < 0).any(axis=1)):
            j = int(np.flatnonzero(values[i] < 0)[0])
            out[str(table.index[i])] = (
                f"{source} [{cols[j]}]: {values[i, j]:g} for this sample, but log2(x + 1) needs values >= 0 "
                "(if the table is already log-scaled, set log2: false)"
            )
        return out

    def extract_shared(self, cohort: Cohort, samples: pd.DataFrame) -> ExtractionResult:
        feats: list[pd.DataFrame] = []
        failures: dict[str, str] = {}

        def read(rel: str, group: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
            columns = cohort.spec.columns_of(str(group["modality"].iloc[0]))  # cohort.yaml's mapping of the key
            raw, dropped = read_isolating(partial(read_table, columns=columns),
                                          [SharedFile(cohort.path(rel), "feature table", "row", rel, columns)])
            raw = raw.loc[pd.Index(group["sample_id"]).intersection(raw.index, sort=False)]
            dropped.update(self._negative(raw, rel))
            return self.transform_table(raw.drop(index=list(set(dropped) & set(raw.index))), rel), dropped

        for rel, group, (table, dropped) in each_shared_file(samples, failures, read):
            wanted = pd.Index(group["sample_id"])
            for sid in wanted.difference(table.index):
                failures[sid] = dropped.get(sid, f"no row for this sample in {rel}")
            block = table.loc[wanted.intersection(table.index, sort=False)]
            empty = block.index[block.isna().all(axis=1).to_numpy()]
            for sid in empty:
                failures[sid] = f"every feature of this sample is empty in {rel}"
            feats.append(block.drop(index=empty))
        features = pd.concat(feats) if feats else pd.DataFrame()
        features.index.name = "sample_id"
        return ExtractionResult(features, failures)
