"""The feature-store orchestrator: layout, caching, failure isolation and provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from toy_extractors import TOY_CONFIG

from omics_risk.cli import main
from omics_risk.features.extract import extract_cohort, fingerprint

MODS = ["ct", "cfdna", "rppa"]


def _run(cohort: Path, **kw: object):
    return extract_cohort(cohort, config=TOY_CONFIG, modalities=MODS, progress=False, **kw)


def test_layout_values_and_status(valid_cohort: Path) -> None:
    summary = _run(valid_cohort, workers=1)
    out = valid_cohort / "features"
    ct = pd.read_parquet(out / "ct.parquet")
    assert list(ct.index) == ["P01", "P02", "P03", "P04"]
    assert list(ct.columns) == ["preop__mean", "preop__voxels"]
    # Voxels inside the mask, recomputed independently from the file.
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(valid_cohort / "ct/P01_preop_mask.nii.gz")))
    assert ct.filter(like="voxels").loc["P01"].iloc[0] == float((mask == 1).sum())

    cf = pd.read_parquet(out / "cfdna.parquet")
    # P01 has two timepoints: both become columns of one patient row.
    assert {"preop__n", "postop1__n"} <= set(cf.columns)
    assert np.isnan(cf.loc["P02", "preop__n"]) and cf.loc["P02", "postop1__n"] > 0

    status = pd.read_csv(out / "status.csv", keep_default_na=False)
    # Every sample of samples.csv has a row, and every patient lacking a modality is listed as missing.
    samples = pd.read_csv(valid_cohort / "samples.csv")
    wanted = samples[samples["modality"].isin(MODS)]
    assert set(status.loc[status["status"] != "missing", "sample_id"]) == set(wanted["sample_id"])
    missing_ct = status[(status["modality"] == "ct") & (status["status"] == "missing")]["patient_id"]
    assert sorted(missing_ct) == ["P05", "P06"]
    assert (status.loc[status["status"] != "missing", "status"] == "ok").all()
    assert summary.modalities["ct"]["ok"] == 4

    manifest = json.loads((out / "manifest.json").read_text())
    ct_inputs = manifest["modalities"]["ct"]["inputs"]
    assert ct_inputs["P01-ct-preop"].split(",")[0] == fingerprint(valid_cohort / "ct/P01_preop.nii.gz")
    assert manifest["modalities"]["ct"]["extractors"][0]["name"] == "mask_stats"


def test_rerun_uses_cache_and_only_recomputes_changed(valid_cohort: Path) -> None:
    first = _run(valid_cohort, workers=2)
    second = _run(valid_cohort, workers=1)
    assert second.modalities["ct"]["cached"] == 4 and second.modalities["cfdna"]["cached"] == 4
    before = pd.read_parquet(valid_cohort / "features/ct.parquet")
    assert first.modalities["ct"]["cached"] == 0

    # Brighten P02's image by 10 HU: only that sample is recomputed, and its mean moves by exactly 10.
    path = valid_cohort / "ct/P02_preop.nrrd"
    img = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.Cast(img + 10, img.GetPixelID()), str(path))
    third = _run(valid_cohort, workers=1)
    assert third.modalities["ct"]["cached"] == 3
    after = pd.read_parquet(valid_cohort / "features/ct.parquet")
    assert after.loc["P02", "preop__mean"] == pytest.approx(before.loc["P02", "preop__mean"] + 10)
    pd.testing.assert_series_equal(after.loc["P01"], before.loc["P01"])

    # Identical content is identical input: a copy of P01's scan for P02 is served from P01's cache entry.
    shutil.copy(valid_cohort / "ct/P01_preop.nii.gz", valid_cohort / "ct/P02_copy.nii.gz")
    samples = (valid_cohort / "samples.csv").read_text().replace("ct/P02_preop.nrrd", "ct/P02_copy.nii.gz")
    (valid_cohort / "samples.csv").write_text(samples.replace("ct/P02_preop_mask.nrrd", "ct/P01_preop_mask.nii.gz"))
    fourth = _run(valid_cohort, workers=1)
    assert fourth.modalities["ct"]["cached"] == 4
    copied = pd.read_parquet(valid_cohort / "features/ct.parquet")
    pd.testing.assert_series_equal(copied.loc["P02"], before.loc["P01"], check_names=False)

    # A changed setting invalidates the cache of that extractor.
    cfg = {**TOY_CONFIG, "image": [{"_target_": "toy_extractors.MaskStats", "label": 1}]}
    again = extract_cohort(valid_cohort, config=cfg, modalities=["ct"], progress=False, workers=1)
    assert again.modalities["ct"]["cached"] == 4  # same effective settings -> same hash
    cfg2 = {**TOY_CONFIG, "image": [{"_target_": "toy_extractors.MaskStats", "label": 2}]}
    changed = extract_cohort(valid_cohort, config=cfg2, modalities=["ct"], progress=False, workers=1)
    assert changed.modalities["ct"]["cached"] == 0


def test_broken_file_is_recorded_not_fatal(valid_cohort: Path) -> None:
    (valid_cohort / "ct/P04_preop.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n garbage")
    (valid_cohort / "cfdna/P02_postop1.frag.tsv.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    summary = _run(valid_cohort, workers=2)
    status = pd.read_csv(valid_cohort / "features/status.csv", keep_default_na=False).set_index("sample_id")
    assert status.loc["P04-ct-preop", "status"] == "failed"
    assert "P04_preop.mha" in status.loc["P04-ct-preop", "reason"]
    assert status.loc["P02-cfdna-postop1", "status"] == "failed"
    assert status.loc["P01-ct-preop", "status"] == "ok"
    ct = pd.read_parquet(valid_cohort / "features/ct.parquet")
    assert "P04" not in ct.index and len(ct) == 3
    assert summary.modalities["ct"]["failed"] == 1
    assert "P04-ct-preop" in summary.to_text()


def test_shared_table_missing_sample_fails_that_sample(valid_cohort: Path) -> None:
    table = valid_cohort / "rppa/rppa.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(line for line in lines if not line.startswith("P05")) + "\n")
    _run(valid_cohort, workers=1)
    status = pd.read_csv(valid_cohort / "features/status.csv", keep_default_na=False).set_index("sample_id")
    assert status.loc["P05-rppa-preop", "status"] == "failed"
    assert "not in the table" in status.loc["P05-rppa-preop", "reason"]
    rppa = pd.read_parquet(valid_cohort / "features/rppa.parquet")
    assert sorted(rppa.index) == ["P01", "P02", "P03"]


def test_unknown_modality_is_a_clear_error(valid_cohort: Path) -> None:
    with pytest.raises(ValueError, match="modality 'pet' is not in cohort"):
        extract_cohort(valid_cohort, config=TOY_CONFIG, modalities=["pet"], progress=False)


def test_cli_extract(valid_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = tmp_path / "extract.yaml"
    cfg.write_text(yaml.safe_dump(TOY_CONFIG))
    out = tmp_path / "store"
    args = ["extract", str(valid_cohort), "--out", str(out), "--config", str(cfg), "--quiet", "--workers", "1"]
    assert main([*args, "--modality", "ct"]) == 0
    assert (out / "ct.parquet").is_file() and not (out / "cfdna.parquet").exists()
    assert "ct" in capsys.readouterr().out
