"""The feature cache recognises unchanged shared-file inputs (``table``, ``cn_segments``, ``variant_table``): a second
extract serves them from the cache ("from cache N"), a changed file, setting or sample is recomputed, and a result
with a failed sample is never stored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from omics_risk.cli import main
from omics_risk.features.extract import extract_cohort

SHARED = ["rppa", "cnv", "ctdna"]


def _gdc_headers(root: Path) -> None:
    """The cohort's copy-number file with the raw TCGA / GDC headers (read without any mapping)."""
    seg = pd.read_csv(root / "cnv/segments.csv", dtype=str)
    gdc = {"sample_id": "Sample", "chrom": "Chromosome", "start": "Start", "end": "End",
           "segment_mean": "Segment_Mean", "num_probes": "Num_Probes"}
    seg.rename(columns=gdc).to_csv(root / "cnv/segments.csv", index=False)


def _run(root: Path, modalities: list[str] = SHARED, **kw: object):
    return extract_cohort(root, modalities=modalities, progress=False, workers=1, **kw)


def _cached(summary) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {m: summary.modalities[m]["cached"] for m in SHARED}


def test_a_second_extract_serves_shared_files_from_the_cache(valid_cohort: Path,
                                                             capsys) -> None:  # type: ignore[no-untyped-def]
    _gdc_headers(valid_cohort)
    first = _run(valid_cohort)
    n = {m: first.modalities[m]["ok"] for m in SHARED}
    assert n == {"rppa": 4, "cnv": 3, "ctdna": 5} and _cached(first) == dict.fromkeys(SHARED, 0)
    tables = {m: pd.read_parquet(valid_cohort / f"features/{m}.parquet") for m in SHARED}

    assert main(["extract", str(valid_cohort), "--quiet", "--workers", "1", "--modality", "rppa", "--modality",
                 "cnv"]) == 0
    out = capsys.readouterr().out
    assert "rppa" in out and "ok 4, failed 0, from cache 4" in out  # what the README promises, as printed
    second = _run(valid_cohort)
    assert _cached(second) == n
    for m in SHARED:  # served from the cache, bit for bit what was computed
        pd.testing.assert_frame_equal(pd.read_parquet(valid_cohort / f"features/{m}.parquet"), tables[m])

    # A changed table is recomputed, alone: the new value is in the features, the others still come from the cache.
    rppa = pd.read_csv(valid_cohort / "rppa/rppa.csv")
    feature = rppa.columns[1]
    rppa.loc[rppa["sample_id"] == "P01-rppa-preop", feature] = 123.5
    rppa.to_csv(valid_cohort / "rppa/rppa.csv", index=False)
    third = _run(valid_cohort)
    assert _cached(third) == {"rppa": 0, "cnv": 3, "ctdna": 5}
    assert pd.read_parquet(valid_cohort / "features/rppa.parquet").loc["P01", f"preop__{feature}"] == 123.5
    assert _cached(_run(valid_cohort, force=True)) == dict.fromkeys(SHARED, 0)


def test_settings_and_samples_are_part_of_the_key_and_failures_are_not_stored(valid_cohort: Path) -> None:
    _run(valid_cohort)
    spec = (valid_cohort / "cohort.yaml").read_text()
    (valid_cohort / "cohort.yaml").write_text(spec.replace("rppa: {format: table}",
                                                           "rppa: {format: table, extract: {prefix: p_}}"))
    assert _run(valid_cohort, modalities=["rppa"]).modalities["rppa"]["cached"] == 0  # a new setting
    assert _run(valid_cohort, modalities=["rppa"]).modalities["rppa"]["cached"] == 4

    samples = pd.read_csv(valid_cohort / "samples.csv", dtype=str, keep_default_na=False)
    samples = samples[samples["sample_id"] != "P05-rppa-preop"]
    samples.to_csv(valid_cohort / "samples.csv", index=False)
    assert _run(valid_cohort, modalities=["rppa"]).modalities["rppa"]["cached"] == 0  # a sample fewer

    rppa = pd.read_csv(valid_cohort / "rppa/rppa.csv", dtype=str)
    rppa.loc[rppa["sample_id"] == "P01-rppa-preop", rppa.columns[1]] = "n/a"
    rppa.to_csv(valid_cohort / "rppa/rppa.csv", index=False)
    for _ in range(2):  # the failed sample is retried, and the others recomputed with it, on every run
        summary = _run(valid_cohort, modalities=["rppa"])
        assert (summary.modalities["rppa"]["failed"], summary.modalities["rppa"]["cached"]) == (1, 0)
