"""Break exactly one sample of a cohort, extract it and a clean copy, and check that only that sample changed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omics_risk.features.extract import ExtractSummary, extract_cohort


def extract(root: Path, modality: str, config: Mapping[str, Any] | None = None, **kw: Any) -> ExtractSummary:
    """``extract_cohort`` of one modality into ``root/features`` (serial, quiet unless told otherwise)."""
    kw = {"workers": 1, "progress": False, **kw}
    return extract_cohort(root, config=config, modalities=[modality], **kw)


def status_of(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "features" / "status.csv", keep_default_na=False).set_index("sample_id")


def expected_without(clean: pd.DataFrame, samples: pd.DataFrame, sample_id: str) -> pd.DataFrame:
    """The clean feature table with the broken sample's timepoint columns missing for its patient (and the
    patient's row gone when that was its only sample)."""
    row = samples.set_index("sample_id").loc[sample_id]
    out = clean.copy()
    cols = [c for c in out.columns if c.startswith(f"{row['timepoint']}__")]
    out.loc[row["patient_id"], cols] = np.nan
    return out[out.notna().any(axis=1)]


def assert_only_sample_failed(clean_root: Path, broken_root: Path, modality: str, sample_id: str,
                              reason_has: tuple[str, ...], *, exact: bool = True, rtol: float = 0.0) -> pd.DataFrame:
    """(a) ``sample_id`` failed with a reason holding every ``reason_has`` part; (b) every other sample of the
    modality is ok, and the feature table equals the clean one without that sample (exactly; within ``rtol`` where
    the extractor's vectorised arithmetic over all samples leaves last-bit rounding; or present and finite where a
    cohort-fitted step legitimately moves the values). Returns the broken run's table."""
    status = status_of(broken_root)
    reason = status.loc[sample_id, "reason"]
    assert status.loc[sample_id, "status"] == "failed", reason
    for part in reason_has:
        assert part in reason, (part, reason)
    mine = status[(status["modality"] == modality) & (status["status"] != "missing")]
    others = mine.drop(index=sample_id)
    assert (others["status"] == "ok").all(), others[others["status"] != "ok"]["reason"].to_dict()
    clean = pd.read_parquet(clean_root / "features" / f"{modality}.parquet")
    broken = pd.read_parquet(broken_root / "features" / f"{modality}.parquet")
    samples = pd.read_csv(clean_root / "samples.csv", dtype=str)
    expected = expected_without(clean, samples, sample_id)
    if exact and rtol:
        pd.testing.assert_frame_equal(broken, expected, check_exact=False, rtol=rtol, atol=0.0)
    elif exact:
        pd.testing.assert_frame_equal(broken, expected, check_exact=True)
    else:
        assert list(broken.index) == list(expected.index) and list(broken.columns) == list(expected.columns)
        present = expected.notna().to_numpy()
        assert np.isfinite(broken.to_numpy()[present]).all()
    return broken


def clean_and_broken(make_valid_cohort: Callable[..., Path], tmp_path: Path, modality: str,
                     breaker: Callable[[Path], None], config: Mapping[str, Any] | None = None,
                     **kw: Any) -> tuple[Path, Path, ExtractSummary]:
    """Extract ``modality`` of a clean tiny cohort and of a copy broken by ``breaker(root)``."""
    clean = make_valid_cohort(tmp_path / "clean", **kw.pop("cohort", {}))
    broken = make_valid_cohort(tmp_path / "broken")
    extra = kw.pop("prepare", None)
    for root in (clean, broken):
        if extra is not None:
            extra(root)
    breaker(broken)
    extract(clean, modality, config, **kw)
    summary = extract(broken, modality, config, **kw)
    return clean, broken, summary
