"""The feature-store orchestrator: layout, caching, failure isolation (one bad sample, even one that kills its
worker, fails only itself) and provenance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from one_broken import assert_only_sample_failed
from toy_extractors import TOY_CONFIG

from omics_risk.cli import main
from omics_risk.data.multimodal import stored_modalities
from omics_risk.features.extract import ExtractSummary, extract_cohort, fingerprint

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


def test_a_failure_is_retried_and_names_the_cohort_of_this_run(valid_cohort: Path, tmp_path: Path) -> None:
    """Two cohorts (score's work-folder views of one cohort) sharing a store: each failure names its own folder."""
    (valid_cohort / "ct/P04_preop.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n garbage")
    copy = Path(shutil.copytree(valid_cohort, tmp_path / "copy"))
    store = tmp_path / "store"
    for root in (valid_cohort, copy):
        summary = _run(root, out=store, workers=1)
        assert summary.modalities["ct"] == {**summary.modalities["ct"], "cached": 3 if root == copy else 0,
                                            "failed": 1}
        reason = pd.read_csv(store / "status.csv").set_index("sample_id").loc["P04-ct-preop", "reason"]
        assert str(root / "ct/P04_preop.mha") in reason
        assert root == valid_cohort or str(valid_cohort) not in reason


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


# ------------------------------------------------------------------------------ failures stay per sample
UNSTABLE = "toy_extractors.Unstable"


def _cfdna(root: Path, workers: int, **settings: str):
    cfg = {"fragments": [{"_target_": UNSTABLE, **settings}]}
    return extract_cohort(root, config=cfg, modalities=["cfdna"], workers=workers, progress=False)


def test_a_sample_that_kills_its_worker_fails_alone(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clean = make_valid_cohort(tmp_path / "clean", with_bam=False)
    broken = make_valid_cohort(tmp_path / "broken", with_bam=False)
    _cfdna(clean, 2)
    summary = _cfdna(broken, 2, crash_on="P02-cfdna-postop1")
    assert_only_sample_failed(clean, broken, "cfdna", "P02-cfdna-postop1",
                              ("cfdna/P02_postop1.frag.tsv.gz", "the process extracting this sample died"))
    assert summary.modalities["cfdna"] == {"patients": 2, "n_features": 4, "ok": 3, "failed": 1, "cached": 0,
                                           "notes": []}
    # A dead process is not cached (it may have been the machine): a re-run tries that sample again.
    again = _cfdna(broken, 2, crash_on="P02-cfdna-postop1")
    assert again.modalities["cfdna"]["cached"] == 3 and again.modalities["cfdna"]["failed"] == 1


def test_a_sample_with_only_nan_features_fails(make_valid_cohort, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clean = make_valid_cohort(tmp_path / "clean", with_bam=False)
    broken = make_valid_cohort(tmp_path / "broken", with_bam=False)
    _cfdna(clean, 1)
    _cfdna(broken, 1, nan_on="P03-cfdna-postop1")
    assert_only_sample_failed(clean, broken, "cfdna", "P03-cfdna-postop1",
                              ("cfdna/P03_postop1.frag.gz: nothing usable was extracted (all 2 features missing",))


def test_an_unreadable_input_fails_only_its_sample(valid_cohort: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clean = valid_cohort.parent / "clean"
    shutil.copytree(valid_cohort, clean)
    _run(clean, workers=1)
    import omics_risk.features.extract as extract_mod

    real = extract_mod.fingerprint
    bad = valid_cohort / "ct/P02_preop_mask.nrrd"

    def fingerprint(path: Path) -> str:  # as a file without read permission behaves (the tests run as root)
        if path == bad:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(extract_mod, "fingerprint", fingerprint)
    _run(valid_cohort, workers=1)
    assert_only_sample_failed(clean, valid_cohort, "ct", "P02-ct-preop",
                              ("ct/P02_preop_mask.nrrd cannot be read (Permission denied)",))
    manifest = json.loads((valid_cohort / "features/manifest.json").read_text())
    assert manifest["modalities"]["ct"]["inputs"]["P02-ct-preop"] == "unreadable"


def test_a_torn_cache_entry_is_recomputed(valid_cohort: Path) -> None:
    _run(valid_cohort, workers=1)
    before = pd.read_parquet(valid_cohort / "features/ct.parquet")
    entries = sorted((valid_cohort / "features/cache/mask_stats").glob("*.json"))
    entries[0].write_text('{"features": {"mean": 1.0, "vox')  # a write cut short
    (valid_cohort / "features/cache/fingerprints.json").write_text("{")
    again = _run(valid_cohort, workers=1)
    assert again.modalities["ct"]["cached"] == 3 and again.modalities["ct"]["failed"] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(valid_cohort / "features/ct.parquet"), before, check_exact=True)


def test_a_side_table_that_fails_is_a_note(valid_cohort: Path) -> None:
    cfg = {"table": [{"_target_": "toy_extractors.TableWithBrokenSideTable"}]}
    summary = extract_cohort(valid_cohort, config=cfg, modalities=["rppa"], workers=1, progress=False)
    note = "table_side: side table(s) not written: ValueError: the side statistics need a column 'batch'"
    assert summary.modalities["rppa"]["notes"] == [note]
    assert f"note: rppa: {note}" in summary.to_text()
    manifest = json.loads((valid_cohort / "features/manifest.json").read_text())
    assert manifest["modalities"]["rppa"]["notes"] == [note]
    assert summary.modalities["rppa"]["ok"] == 4  # the features themselves are fine


def test_summary_counts_the_failures_it_does_not_print(tmp_path: Path) -> None:
    status = pd.DataFrame({"patient_id": [f"P{i:02d}" for i in range(25)], "modality": "cfdna", "timepoint": "t",
                           "sample_id": [f"S{i:02d}" for i in range(25)], "status": "failed", "reason": "bad"})
    text = ExtractSummary(tmp_path, {}, status).to_text()
    assert "25 sample(s) failed" in text and "cfdna/S19 (patient P19): bad" in text and "S20" not in text
    assert text.endswith(f"... and 5 more in {tmp_path / 'status.csv'}")


def test_cli_extract_reports_a_partial_failure_and_exits_0(valid_cohort: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The tester's case: one sample missing from the metabolomics matrix fails only that sample."""
    matrix = valid_cohort / "metabolomics/matrix.csv"
    pd.read_csv(matrix, dtype=str).drop(columns=["P02-metabolomics-preop"]).to_csv(matrix, index=False)
    code = main(["extract", str(valid_cohort), "--modality", "metabolomics", "--quiet", "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    assert "metabolomics       3 patients x     6 features   ok 3, failed 1, from cache 0" in out
    assert ("1 sample(s) failed" in out and "metabolomics/P02-metabolomics-preop (patient P02): metabolomics: "
            "metabolomics/sample_sheet.csv:4 [sample_id]: sample 'P02-metabolomics-preop' has no column in the "
            "matrix matrix.csv" in out)


def test_after_a_worker_dies_the_rest_goes_on_in_a_fresh_pool(valid_cohort: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the first samples still in flight run alone after a crash; the rest keep their parallel pool."""
    from toy_extractors import Unstable

    from omics_risk.data.contract import load_cohort
    from omics_risk.features import extract as extract_mod

    cohort = load_cohort(valid_cohort)
    base = cohort.samples_of("cfdna").iloc[0]
    rows = [base.copy() for _ in range(12)]
    for k, row in enumerate(rows):
        row["sample_id"] = f"S{k:02d}"
    alone: list[str] = []
    real = extract_mod._run_isolated

    def run_isolated(ext, cohort, sample):  # type: ignore[no-untyped-def]
        alone.append(sample["sample_id"])
        return real(ext, cohort, sample)

    class Bar:
        n = 0

        def update(self) -> None:
            self.n += 1

    bar = Bar()
    monkeypatch.setattr(extract_mod, "_run_isolated", run_isolated)
    results = extract_mod._map_pool(Unstable(crash_on="S00"), cohort, rows, 2, bar)
    assert "died" in results[0]["error"] and results[0]["cache"] is False
    assert all(r["features"] == results[1]["features"] for r in results[1:]) and bar.n == 12
    assert alone[0] == "S00" and len(alone) <= 5  # at most 2 x workers + 1 run alone


def test_the_per_sample_store_holds_each_ok_sample_with_its_day(valid_cohort: Path) -> None:
    """``<modality>.samples.parquet``: one row per usable sample (failed ones left out) with its patient, timepoint
    and day from samples.csv, and the same values as the wide table's ``<timepoint>__<feature>`` cells."""
    (valid_cohort / "cfdna/P02_postop1.frag.tsv.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    _run(valid_cohort, workers=1)
    out = valid_cohort / "features"
    cf = pd.read_parquet(out / "cfdna.samples.parquet")
    assert cf.index.name == "sample_id"
    assert list(cf.index) == ["P01-cfdna-preop", "P01-cfdna-postop1", "P03-cfdna-postop1"]  # P02's failed
    assert list(cf.columns[:3]) == ["patient_id", "timepoint", "day"]
    assert cf["day"].tolist() == [-7.0, 30.0, 28.0] and cf["timepoint"].tolist() == ["preop", "postop1", "postop1"]
    wide = pd.read_parquet(out / "cfdna.parquet")
    for _, row in cf.iterrows():
        for feat in cf.columns[3:]:
            assert wide.loc[row["patient_id"], f"{row['timepoint']}__{feat}"] == row[feat]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["modalities"]["cfdna"]["samples_table"] == "cfdna.samples.parquet"
    # the per-sample tables are no modality of their own
    assert stored_modalities(out) == sorted(MODS)
