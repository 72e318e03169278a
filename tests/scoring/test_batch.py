"""Batch scoring of a cohort directory (``omics_risk.workflows.scoring``): one row per patient with the right status and
reason, chunked and resumable, atomic output, clear errors when the cohort does not fit the model, and a loading path
that executes nothing from the model files.

Fast tests use a hand-written cohort of two ``table`` modalities and a Cox model wrapped without MLflow; the slow
ones score the demo fused network, registered in a temporary MLflow store, on a fresh synthetic cohort with injected
problems, and tamper with its files.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scoring_cohorts import write_table_cohort

from omics_risk.data.contract import CohortError, load_cohort
from omics_risk.data.multimodal import load_multimodal
from omics_risk.features.extract import extract_cohort
from omics_risk.scoring.pyfunc import UntrustedModelClassError, scoring_settings
from omics_risk.workflows import scoring as batch
from omics_risk.workflows.scoring import (
    LOCK_FILE,
    BatchModel,
    CohortMismatchError,
    ModelLoadError,
    ModelNotFoundError,
    RegistryNotFoundError,
    ScoreInputError,
    ScoringInterrupted,
    UnverifiedWrapperError,
    WorkDirLockedError,
    check_model_uri,
    extraction_config,
    load_batch_model,
    local_store_path,
    parse_horizons,
    pickle_globals,
    prepare_cohort,
    score_cohort,
)


def _score(model: BatchModel, root: Path, out: Path, **kw) -> batch.ScoreResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score_cohort(model, root, out, progress=False, workers=1, **kw)


def _edit_csv(path: Path, fn) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


# ------------------------------------------------------------------------------------------------ small pieces
def test_parse_horizons_reads_units_and_refuses_unitless_small_numbers() -> None:
    assert parse_horizons(["365", "2y", "3y", "6m", "12m", "52w", "10d", "400.5"]) == [
        365.0, 730.0, 1095.0, 183.0, 365.0, 364.0, 10.0, 400.5]
    assert parse_horizons(None) is None
    with pytest.raises(ValueError, match=r"would be 3 days.*write 3y"):
        parse_horizons(["3"])
    with pytest.raises(ValueError, match="unit d, w, m or y"):
        parse_horizons(["3 years"])
    with pytest.raises(ValueError, match="positive"):
        parse_horizons(["0y"])


class _Payload:
    """Pickles into a call of ``open(path, 'w')``: unpickling it creates the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_globals_reads_a_pickle_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    found, calls = pickle_globals(pickle.dumps(_Payload(marker), protocol=4))
    assert found == ["io.open"] and "REDUCE" in calls
    assert not marker.exists()
    found, calls = pickle_globals(pickle.dumps(_Payload(marker), protocol=0))
    assert found == ["io.open"] and not marker.exists()


def test_extraction_config_allow_lists_extractor_classes(table_model: SimpleNamespace) -> None:
    bm = table_model.batch
    cfg = extraction_config(bm)
    assert cfg == {"rppa": [{"_target_": "omics_risk.features.tables.TableExtractor", "log2": False, "prefix": "",
                             "columns": None}],
                   "mirna": [{"_target_": "omics_risk.features.tables.TableExtractor", "log2": False, "prefix": "",
                              "columns": None}]}

    def tampered(**change) -> BatchModel:
        settings = json.loads(json.dumps(bm.settings))
        settings["extraction"]["rppa"]["extractors"][0].update(change)
        return BatchModel(bm.uri, bm.model, bm.manifest, settings, bm.identity)

    for qual in ("os.system", "builtins.eval", "omics_risk.scoring.pyfunc.OmicsRiskPyfunc", "omics_risk.features.x;y"):
        with pytest.raises(ModelLoadError, match="refusing"):
            extraction_config(tampered(**{"class": qual}))
    nested = {"log2": {"_target_": "os.system", "_args_": ["touch /tmp/x"]}}
    with pytest.raises(ModelLoadError, match="Hydra key"):
        extraction_config(tampered(settings=nested))
    no_spec = BatchModel(bm.uri, bm.model, bm.manifest, {k: v for k, v in bm.settings.items() if k != "extraction"},
                         bm.identity)
    assert extraction_config(no_spec) is None


def test_scoring_settings_store_cutoffs_ranges_extraction_and_cohort(table_model: SimpleNamespace) -> None:
    s = table_model.settings
    risk = table_model.model.predict_risk(table_model.data)
    np.testing.assert_allclose(s["risk_cutoffs"]["median"], [np.median(risk)])
    np.testing.assert_allclose(s["risk_cutoffs"]["tertiles"], np.quantile(risk, [1 / 3, 2 / 3]))
    akt = table_model.data.modalities["rppa"]["baseline__AKT"].dropna()
    lo, hi, med, n = s["feature_ranges"]["columns"]["rppa/baseline__AKT"]
    assert (lo, hi, med, n) == pytest.approx((akt.quantile(0.01), akt.quantile(0.99), akt.median(), len(akt)))
    assert set(s["feature_ranges"]["columns"]) == {"clinical/age", "rppa/baseline__AKT", "rppa/baseline__EGFR",
                                                   "mirna/baseline__m1"}
    assert s["extraction"]["rppa"]["extractors"][0]["class"] == "omics_risk.features.tables.TableExtractor"
    assert s["cohort"]["time_unit"] == "days" and s["cohort"]["sample_days"] == {
        "rppa": {"baseline": -7.0}, "mirna": {"baseline": -7.0}}
    assert s["cohort"]["formats"] == {"rppa": "table", "mirna": "table"}


# ------------------------------------------------------------------------------------------------ lenient cohort
def test_prepare_cohort_sets_rows_aside_with_reasons(tmp_path: Path) -> None:
    root = write_table_cohort(tmp_path / "c", n=8, seed=4)

    def clinical(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[df["patient_id"] == "T002", "age"] = "sixty"
        df.loc[df["patient_id"] == "T003", "rfs_event"] = "2"  # an outcome: not read by scoring
        return pd.concat([df, df[df["patient_id"] == "T004"]])  # T004 twice

    def samples(df: pd.DataFrame) -> pd.DataFrame:
        extra = [{"patient_id": "T001", "sample_id": "T001-P", "modality": "proteomics", "timepoint": "baseline",
                  "day": "-7", "path": "p.csv", "mask_path": ""},
                 {"patient_id": "T777", "sample_id": "T777-R", "modality": "rppa", "timepoint": "baseline",
                  "day": "-7", "path": "rppa/rppa.csv", "mask_path": ""}]
        return pd.concat([df, pd.DataFrame(extra)])

    _edit_csv(root / "clinical.csv", clinical)
    _edit_csv(root / "samples.csv", samples)
    with pytest.raises(CohortError):
        load_cohort(root)
    prep = prepare_cohort(root, tmp_path / "view")
    assert prep.root == tmp_path / "view" and prep.source == root
    assert prep.order == [f"T{i:03d}" for i in range(8)] + ["T777"]
    assert set(prep.failed) == {"T004", "T777"}
    assert "several lines of clinical.csv (6, 10)" in prep.failed["T004"]
    assert "not in clinical.csv" in prep.failed["T777"]
    assert prep.notes["T002"] == [("clinical/age", "clinical.csv line 4 [age]: age must be a number, got 'sixty'; "
                                                   "read as missing")]
    assert prep.notes["T001"][0][0] == "proteomics" and "unknown modality 'proteomics'" in prep.notes["T001"][0][1]
    assert "T003" not in prep.notes  # an outcome cell: cleared silently, scoring does not read outcomes
    assert set(prep.cohort.samples["modality"]) == {"rppa", "mirna"}
    assert (tmp_path / "view" / "rppa").is_symlink()
    assert np.isnan(prep.cohort.clinical.set_index("patient_id").at["T002", "age"])
    # structural problems stay errors
    (root / "samples.csv").write_text("patient_id,sample_id\nT001,x\n")
    with pytest.raises(CohortError, match="required column 'modality'"):
        prepare_cohort(root, tmp_path / "view")


# ------------------------------------------------------------------------------------------------ statuses
@pytest.fixture
def problem_tables(tmp_path: Path) -> SimpleNamespace:
    """A fresh table cohort with one problem per patient (see ``expected``)."""
    root = write_table_cohort(tmp_path / "fresh", n=12, seed=9)
    s = pd.read_csv(root / "samples.csv", dtype=str, keep_default_na=False)
    has = {m: set(s.loc[s["modality"] == m, "patient_id"]) for m in ("rppa", "mirna")}
    both = sorted(has["rppa"] & has["mirna"])
    who = {"ok": both[0], "unknown_modality": both[1], "bad_sample": both[2], "bad_age": both[3],
           "no_sample": both[4], "nothing": both[5]}
    rppa_only = sorted(has["rppa"] - has["mirna"])
    if rppa_only:
        who["no_mirna"] = rppa_only[0]
    # a sample id the shared table does not have: that sample fails in extraction
    s.loc[(s["patient_id"] == who["bad_sample"]) & (s["modality"] == "rppa"), "sample_id"] = "GHOST-R"
    s = s[~s["patient_id"].isin([who["no_sample"], who["nothing"]])]
    extra = [{"patient_id": who["unknown_modality"], "sample_id": "X-P", "modality": "proteomics",
              "timepoint": "baseline", "day": "-7", "path": "p.csv", "mask_path": ""},
             {"patient_id": "T900", "sample_id": "T900-R", "modality": "rppa", "timepoint": "baseline", "day": "-7",
              "path": "rppa/rppa.csv", "mask_path": ""}]
    pd.concat([s, pd.DataFrame(extra)]).to_csv(root / "samples.csv", index=False)

    def clinical(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[df["patient_id"] == who["bad_age"], "age"] = "n/a?"
        df.loc[df["patient_id"] == who["nothing"], ["age", "stage"]] = ""
        return df

    _edit_csv(root / "clinical.csv", clinical)
    who["only_in_samples"] = "T900"
    return SimpleNamespace(root=root, who=who)


def test_every_patient_gets_a_row_with_status_and_reason(table_model: SimpleNamespace, problem_tables: SimpleNamespace,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    res = _score(table_model.batch, problem_tables.root, out, chunk_size=4)
    df = pd.read_parquet(out).set_index("patient_id")
    who = problem_tables.who
    assert len(df) == 13 and df.index.is_unique  # 12 in clinical.csv + 1 only in samples.csv
    assert list(df.columns) == ["status", "reason", "risk_score", "risk_group", "surv_365d", "surv_730d",
                                "modalities_used", "modalities_missing", "n_out_of_range"]
    st = df["status"]
    assert st[who["ok"]] == "ok" and df.at[who["ok"], "reason"] == ""
    assert df.at[who["ok"], "modalities_used"] == "clinical,rppa,mirna"
    assert st[who["unknown_modality"]] == "ok"  # a sample the model does not use: reported, score unaffected
    assert "unknown modality 'proteomics'" in df.at[who["unknown_modality"], "reason"]
    assert st[who["bad_sample"]] == "partial"
    assert df.at[who["bad_sample"], "reason"] == ("rppa: baseline sample GHOST-R failed: table: no row for this sample "
                                                  "in rppa/rppa.csv")
    assert df.at[who["bad_sample"], "modalities_missing"] == "rppa"
    assert st[who["bad_age"]] == "partial"
    assert "clinical.csv line" in df.at[who["bad_age"], "reason"] and "got 'n/a?'" in df.at[who["bad_age"], "reason"]
    assert st[who["no_sample"]] == "partial"
    assert df.at[who["no_sample"], "reason"] == "no sample of any modality in samples.csv; rppa: no sample; " \
                                                "mirna: no sample"
    assert df.at[who["no_sample"], "modalities_used"] == "clinical"
    assert st[who["nothing"]] == "failed" and df.at[who["nothing"], "reason"].startswith("no usable input")
    assert np.isnan(df.at[who["nothing"], "risk_score"]) and df.at[who["nothing"], "risk_group"] is None
    assert st["T900"] == "failed" and "not in clinical.csv" in df.at["T900", "reason"]
    if "no_mirna" in who:
        assert st[who["no_mirna"]] == "partial" and df.at[who["no_mirna"], "reason"] == "mirna: no sample"
    assert res.counts == {s: int((st == s).sum()) for s in ("ok", "partial", "failed")}
    # scores: what the model says for the same inputs; groups from the training tertiles
    scored = df[st != "failed"]
    cut = table_model.settings["risk_cutoffs"]["tertiles"]
    expected = np.where(scored["risk_score"] < cut[0], "low", np.where(scored["risk_score"] < cut[1], "intermediate",
                                                                        "high"))
    assert scored["risk_group"].tolist() == expected.tolist()
    assert ((scored["surv_730d"] <= scored["surv_365d"]) & (scored["surv_365d"] <= 1)).all()
    report = json.loads(res.report_path.read_text())
    assert report["counts"] == res.counts and report["model"]["uri"] == "<in-memory>"
    assert not (tmp_path / ".scores.parquet.work" / "checkpoints").exists() or not any(
        (tmp_path / ".scores.parquet.work" / "checkpoints").iterdir())


def test_batch_scores_equal_the_model_on_the_same_data(table_model: SimpleNamespace, tmp_path: Path) -> None:
    root = write_table_cohort(tmp_path / "fresh", n=20, seed=5)
    res = _score(table_model.batch, root, tmp_path / "s.csv", chunk_size=6, risk_groups="median")
    df = pd.read_csv(tmp_path / "s.csv", keep_default_na=False, na_values=[""]).set_index("patient_id")
    store = tmp_path / "ref_features"
    extract_cohort(root, store, workers=1, progress=False)
    data = load_multimodal(root, store, endpoint="rfs", drop_unlabelled=False)
    m = table_model.model
    np.testing.assert_allclose(df.loc[list(data.patients), "risk_score"], m.predict_risk(data), rtol=0, atol=1e-12)
    np.testing.assert_allclose(df.loc[list(data.patients), ["surv_365d", "surv_730d"]],
                               m.predict_survival(data, np.array([365.0, 730.0])), rtol=0, atol=1e-12)
    cut = table_model.settings["risk_cutoffs"]["median"][0]
    assert (df["risk_group"] == np.where(df["risk_score"] < cut, "low", "high")).all()
    assert res.n_patients == 20 and set(df["status"]) <= {"ok", "partial"}


def test_response_probability_and_image_free_fused_model(table_model: SimpleNamespace, tmp_path: Path) -> None:
    """A model with a response head (as the SCLC models) adds ``response_prob``."""
    from omics_risk.models.fused import FusedSurvivalModel
    from omics_risk.scoring.frames import to_frame

    data = table_model.data
    rng = np.random.default_rng(0)
    train = type(data)(data.patients, data.clinical, data.modalities, data.present, data.time, data.event,
                       endpoint="rfs", extra_labels={"response": (rng.random(len(data)) > 0.5).astype(float)})
    fused = FusedSurvivalModel(epochs=3, patience=None, validation_fraction=0.0, hidden=(4,), embed_dim=4,
                               fusion_dim=4, fusion_hidden=4, k=None, device="cpu", amp=False, seed=0,
                               heads=("cox", "binary"), response_label="response",
                               clinical_types=table_model.model.clinical_types).fit(train)
    settings = scoring_settings(fused, to_frame(data), horizons=[365.0], feature_store=table_model.store,
                                training_cohort=table_model.root)
    root = write_table_cohort(tmp_path / "fresh", n=10, seed=6)
    _score(BatchModel.from_model(fused, settings), root, tmp_path / "s.parquet")
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert "response_prob" in df and df["response_prob"].between(0, 1).all()
    assert list(df.columns[5:7]) == ["surv_365d", "response_prob"]


def test_shift_warning_names_the_feature_and_counts_patients(table_model: SimpleNamespace, tmp_path: Path) -> None:
    root = write_table_cohort(tmp_path / "fresh", n=15, seed=7)
    table = pd.read_csv(root / "rppa" / "rppa.csv")
    table.loc[:2, "AKT"] = [40.0, 55.0, -60.0]  # the training AKT is standard normal
    table.to_csv(root / "rppa" / "rppa.csv", index=False)
    with pytest.warns(UserWarning, match=r"(?s)distribution shift.*rppa \(1\).*rppa/baseline__AKT: 3 of \d+ patient"):
        res = score_cohort(table_model.batch, root, tmp_path / "s.parquet", progress=False, workers=1)
    assert res.shift is not None and res.shift.counts["rppa/baseline__AKT"] == 3
    assert res.shift.examples["rppa/baseline__AKT"] == -60.0
    df = pd.read_parquet(tmp_path / "s.parquet").set_index("patient_id")
    assert (df.loc[["T000", "T001", "T002"], "n_out_of_range"] >= 1).all()
    report = json.loads(res.report_path.read_text())
    assert report["shift"]["features"][0]["feature"] == "baseline__AKT"


# ------------------------------------------------------------------------------------------------ resume, atomicity
def test_interrupted_run_resumes_from_its_checkpoints(table_model: SimpleNamespace, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_table_cohort(tmp_path / "fresh", n=20, seed=8)
    out = tmp_path / "s.parquet"
    out.write_text("an older result")
    calls: list[int] = []
    real = batch._Scorer.run

    def flaky(self, patients):
        calls.append(len(patients))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is killed in its third chunk
        return real(self, patients)

    monkeypatch.setattr(batch._Scorer, "run", flaky)
    with pytest.raises(KeyboardInterrupt) as stopped:  # still a KeyboardInterrupt, saying how far it got
        _score(table_model.batch, root, out, chunk_size=6)
    assert out.read_text() == "an older result"  # nothing half-written
    ckpts = list((tmp_path / ".s.parquet.work" / "checkpoints").glob("*/chunk-*.parquet"))
    assert len(ckpts) == 2
    assert isinstance(stopped.value, ScoringInterrupted)
    assert (stopped.value.stage, stopped.value.done, stopped.value.total) == ("scoring", 2, 4)
    assert stopped.value.checkpoints == ckpts[0].parent
    assert str(stopped.value) == (f"interrupted after 2 of 4 chunks; checkpoints kept in {ckpts[0].parent}: run the "
                                  "same command again to resume")
    assert not (tmp_path / ".s.parquet.work" / LOCK_FILE).read_text()  # the lock went with the interrupted run
    calls.clear()
    res = _score(table_model.batch, root, out, chunk_size=6)
    assert calls == [6, 2] and res.resumed_chunks == 2 and res.chunks == 4
    monkeypatch.setattr(batch._Scorer, "run", real)
    fresh = _score(table_model.batch, root, tmp_path / "again.parquet", chunk_size=6, resume=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "again.parquet"))
    assert fresh.resumed_chunks == 0
    assert not list((tmp_path / ".s.parquet.work" / "checkpoints").glob("*/chunk-*"))  # removed after success


def test_checkpoints_are_keyed_by_model_and_cohort_content(table_model: SimpleNamespace, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_table_cohort(tmp_path / "fresh", n=8, seed=8)
    out = tmp_path / "s.parquet"
    _score(table_model.batch, root, out, chunk_size=4, keep_checkpoints=True)
    _edit_csv(root / "clinical.csv", lambda df: df.assign(age=df["age"].where(df["patient_id"] != "T000", "99")))
    res = _score(table_model.batch, root, out, chunk_size=4, keep_checkpoints=True)
    assert res.resumed_chunks == 0  # another cohort content: nothing reused
    assert len(list((tmp_path / ".s.parquet.work" / "checkpoints").iterdir())) == 2
    res = _score(table_model.batch, root, out, chunk_size=4)
    assert res.resumed_chunks == 2


# ------------------------------------------------------------------------------------------------ fit checks
def _variant(tmp_path: Path, *, yaml_edit=None, clinical=None, samples=None, rppa=None, day: int = -7) -> Path:
    root = write_table_cohort(tmp_path / "variant", n=10, seed=3, day=day)
    if yaml_edit is not None:
        spec = yaml.safe_load((root / "cohort.yaml").read_text())
        yaml_edit(spec)
        (root / "cohort.yaml").write_text(yaml.safe_dump(spec))
    if clinical is not None:
        _edit_csv(root / "clinical.csv", clinical)
    if samples is not None:
        _edit_csv(root / "samples.csv", samples)
    if rppa is not None:
        _edit_csv(root / "rppa" / "rppa.csv", rppa)
    return root


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clinical": lambda df: df.drop(columns=["stage"]), "yaml_edit": lambda s: s["clinical"].pop("stage")},
         r"clinical.csv lacks column\(s\) the model needs: stage"),
        ({"yaml_edit": lambda s: s["clinical"].pop("stage")}, r"does not declare clinical column\(s\).*stage"),
        ({"yaml_edit": lambda s: s["clinical"].update(stage="numeric"),
          "clinical": lambda df: df.assign(stage=df["stage"].map({"I": "1", "II": "2", "III": "3"}))},
         "'stage' is declared numeric here but the model reads it as text"),
        ({"samples": lambda df: df.assign(timepoint="base")},
         "model uses 'rppa' at timepoint.*baseline, but this cohort's rppa samples are at base"),
        ({"day": -1}, r"'day' must be in days, but these look like weeks \(rppa at baseline: median -1 here, -7 in "
                      r"training; mirna at baseline"),
        ({"yaml_edit": lambda s: s["modalities"].update(rppa={"format": "cn_segments"})},
         "modality 'rppa' is cn_segments here but table for the model"),
    ],
)
def test_cohort_that_does_not_fit_is_refused_with_the_reason(table_model: SimpleNamespace, tmp_path: Path,
                                                             kwargs: dict, message: str) -> None:
    root = _variant(tmp_path, **kwargs)
    with pytest.raises(CohortMismatchError, match=message):
        _score(table_model.batch, root, tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()


def test_feature_manifest_mismatch_after_extraction(table_model: SimpleNamespace, tmp_path: Path) -> None:
    root = _variant(tmp_path, yaml_edit=lambda s: s["modalities"].update(rppa={"format": "table",
                                                                              "extract": {"log2": True}}))
    (root / "rppa" / "rppa.csv").write_text("sample_id,AKT,EGFR\n" + "".join(
        f"T{i:03d}-R,{i + 1}.0,{i + 2}.0\n" for i in range(10)))
    with pytest.raises(CohortMismatchError, match=r"extractor table of 'rppa' has other settings than for the model "
                                                  r"\(log2\); remove the cohort.yaml modalities.rppa.extract"):
        _score(table_model.batch, root, tmp_path / "s.parquet")
    root = _variant(tmp_path / "b", rppa=lambda df: df.rename(columns={"EGFR": "EGFR_pY1068"}))
    with pytest.raises(CohortMismatchError, match=r"'rppa' at baseline lacks 1 of the model's 2 features "
                                                  r"\(baseline__EGFR\)"):
        _score(table_model.batch, root, tmp_path / "s.parquet")


def test_a_modality_the_cohort_lacks_is_a_warning_and_partial(table_model: SimpleNamespace, tmp_path: Path) -> None:
    root = _variant(tmp_path, samples=lambda df: df[df["modality"] != "mirna"])
    with pytest.warns(UserWarning, match="this cohort has no 'mirna' sample: every patient is scored without mirna"):
        score_cohort(table_model.batch, root, tmp_path / "s.parquet", progress=False, workers=1)
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert set(df["status"]) == {"partial"} and df["reason"].str.contains("mirna: not in this cohort").all()


def test_model_without_cutoffs_degrades_clearly(table_model: SimpleNamespace, tmp_path: Path) -> None:
    bm = table_model.batch
    old = BatchModel(bm.uri, bm.model, bm.manifest, {"horizons": [365.0], "chunk_size": 1024}, bm.identity)
    root = write_table_cohort(tmp_path / "fresh", n=6, seed=2)
    with pytest.warns(UserWarning) as record:
        res = score_cohort(old, root, tmp_path / "s.parquet", progress=False, workers=1)
    text = " ".join(str(w.message) for w in record)
    assert "no training risk cut-offs" in text and "risk_group is left empty" in text
    assert "no extraction settings" in text and "no training feature ranges" in text
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert df["risk_group"].isna().all() and df["risk_score"].notna().all() and res.shift is None


def test_output_must_be_parquet_or_csv(table_model: SimpleNamespace, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.parquet or \.csv"):
        score_cohort(table_model.batch, tmp_path, tmp_path / "s.xlsx")


# ------------------------------------------------------------------------------------------------ hardening
def test_inputs_are_checked_before_the_model_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the model must not be loaded when an input is wrong")

    monkeypatch.setattr(batch, "load_batch_model", never)
    monkeypatch.chdir(tmp_path)
    root = write_table_cohort(tmp_path / "c", n=4, seed=1)
    with pytest.raises(ScoreInputError, match=r"--cohort .*nowhere does not exist"):
        score_cohort("models:/m@a", tmp_path / "nowhere", tmp_path / "s.csv")
    (root / "clinical.csv").rename(root / "clinical.txt")  # samples.csv alone may be absent (clinical-only cohort)
    with pytest.raises(ScoreInputError, match=r"has no clinical\.csv: it is not a cohort folder"):
        score_cohort("models:/m@a", root, tmp_path / "s.csv")
    (root / "clinical.txt").rename(root / "clinical.csv")
    with pytest.raises(ScoreInputError, match=r"the output folder .*missing does not exist"):
        score_cohort("models:/m@a", root, tmp_path / "missing" / "s.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no work folder, no mlflow.db


def test_model_uri_is_checked_without_creating_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        check_model_uri(tmp_path / "model")
    with pytest.raises(ModelNotFoundError, match="holds no MLmodel file"):
        check_model_uri(tmp_path)
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", previous)  # set_tracking_uri exports it: restored after the test
    db = tmp_path / "none" / "mlflow.db"
    try:
        mlflow.set_tracking_uri(f"sqlite:///{db}")
        for uri in ("models:/omics-risk-rfs@challenger", "runs:/0123/model"):
            with pytest.raises(RegistryNotFoundError, match=f"there is no MLflow registry at {db}"):
                load_batch_model(uri)
        assert not db.exists() and not db.parent.exists()
    finally:
        mlflow.set_tracking_uri(previous)
    assert local_store_path("sqlite:////abs/mlflow.db?mode=ro") == Path("/abs/mlflow.db")
    assert local_store_path("sqlite:///rel.db") == Path("rel.db")
    assert local_store_path("file:///srv/mlruns") == Path("/srv/mlruns")
    assert local_store_path("http://host:5000") is None and local_store_path("sqlite://") is None


def test_a_model_with_a_changed_wrapper_is_refused_unless_allowed(table_model: SimpleNamespace,
                                                                   tmp_path: Path) -> None:
    bm = table_model.batch
    changed = BatchModel(bm.uri, bm.model, bm.manifest, bm.settings, bm.identity,
                         {**bm.info, "wrapper_ok": False, "wrapper_globals": ["os.system"]})
    root = write_table_cohort(tmp_path / "fresh", n=6, seed=2)
    with pytest.raises(UnverifiedWrapperError, match=r"python_model\.pkl references os\.system.*allow_unverified"):
        _score(changed, root, tmp_path / "s.parquet")
    assert not (tmp_path / "s.parquet").exists()
    res = _score(changed, root, tmp_path / "s.parquet", allow_unverified_wrapper=True)
    assert any("references os.system" in w and "scored anyway" in w for w in res.warnings)


def test_two_runs_never_share_a_work_folder_or_a_feature_store(table_model: SimpleNamespace, tmp_path: Path) -> None:
    root = write_table_cohort(tmp_path / "fresh", n=6, seed=2)
    out = tmp_path / "s.parquet"
    work = tmp_path / ".s.parquet.work"
    with batch._folder_lock(work, "work folder", []):  # another run (in this process: its own OS lock)
        held = json.loads((work / LOCK_FILE).read_text())
        assert held["pid"] == os.getpid() and held["host"] and held["started"]
        with pytest.raises(WorkDirLockedError, match=f"using the work folder {work} \\(pid {os.getpid()} on host"):
            _score(table_model.batch, root, out)
    assert not out.exists()
    store = tmp_path / "shared_features"
    with batch._folder_lock(store, "feature store", []):
        with pytest.raises(WorkDirLockedError, match=r"using the feature store .*its own --features folder"):
            _score(table_model.batch, root, out, features_dir=store)
        res = _score(table_model.batch, root, out)  # its own store, in its work folder: not blocked
    assert res.counts["failed"] == 0
    _score(table_model.batch, root, tmp_path / "t.parquet", features_dir=store)  # released: usable again
    assert (store / LOCK_FILE).read_text() == "" and (work / LOCK_FILE).read_text() == ""


def test_warnings_raised_while_scoring_become_notes_of_the_result(table_model: SimpleNamespace, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = batch._Scorer.run

    def noisy(self, patients):
        warnings.warn("something worth saying", UserWarning, stacklevel=1)
        return real(self, patients)

    monkeypatch.setattr(batch._Scorer, "run", noisy)
    root = write_table_cohort(tmp_path / "fresh", n=6, seed=2)
    with pytest.warns(UserWarning, match="something worth saying"):  # still raised, once, for Python callers
        res = score_cohort(table_model.batch, root, tmp_path / "s.parquet", progress=False, workers=1, chunk_size=2)
    assert res.warnings.count("UserWarning from test_batch: something worth saying") == 1
    report = json.loads(res.report_path.read_text())
    assert "UserWarning from test_batch: something worth saying" in report["warnings"]


# ------------------------------------------------------------------------------------------------ the demo model
@pytest.mark.slow
def test_demo_model_scores_a_fresh_cohort_with_injected_problems(demo: SimpleNamespace,
                                                                  problem_cohort: SimpleNamespace,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    res = _score(demo.uri, problem_cohort.root, out, features_dir=problem_cohort.features, chunk_size=5)
    df = pd.read_parquet(out).set_index("patient_id")
    who = problem_cohort.who
    assert df.index.tolist() == [*problem_cohort.patients, "PO9999"]  # everyone, in clinical.csv order
    assert df.at[who["missing_file"], "status"] == "partial"
    assert "cfdna: postop1 sample" in df.at[who["missing_file"], "reason"]
    assert "No such file or directory" in df.at[who["missing_file"], "reason"]
    assert str(problem_cohort.root) in df.at[who["missing_file"], "reason"]  # the cohort's path, not a work copy
    assert df.at[who["corrupt_image"], "status"] == "partial"
    assert "ct: preop sample" in df.at[who["corrupt_image"], "reason"]
    assert "corrupt gzip stream" in df.at[who["corrupt_image"], "reason"]
    assert df.at[who["unknown_modality"], "status"] == "ok"
    assert "unknown modality 'proteomics'" in df.at[who["unknown_modality"], "reason"]
    assert df.at[who["no_sample"], "status"] == "partial"
    assert df.at[who["no_sample"], "reason"].startswith("no sample of any modality in samples.csv")
    assert df.at[who["no_sample"], "modalities_used"] == "clinical"
    assert df.at["PO9999", "status"] == "failed" and "not in clinical.csv" in df.at["PO9999", "reason"]
    scored = df[df["status"] != "failed"]
    assert scored["risk_score"].notna().all() and scored["risk_group"].isin(["low", "intermediate", "high"]).all()
    assert list(df.columns[4:7]) == ["surv_365d", "surv_730d", "surv_1095d"]
    # the scores are the registered model's, on the features extracted with its own settings (the cohort itself
    # breaks the contract; the repaired view in the work directory is what was extracted)
    view = tmp_path / ".scores.parquet.work" / "cohort_view"
    data = load_multimodal(view, problem_cohort.features, endpoint="rfs", drop_unlabelled=False)
    np.testing.assert_allclose(df.loc[list(data.patients), "risk_score"], demo.model.predict_risk(data), atol=1e-6)
    assert res.model["class"] == "omics_risk.models.fused.FusedSurvivalModel" and res.model["wrapper_ok"]
    assert res.counts["failed"] == 1 and sum(res.counts.values()) == len(df)


@pytest.mark.slow
def test_runs_uri_and_local_directory_load_the_same_model(demo: SimpleNamespace, tmp_path: Path) -> None:
    by_alias = load_batch_model(demo.uri)
    by_run = load_batch_model(f"runs:/{demo.run_id}/model")
    local = mlflow.artifacts.download_artifacts(demo.info.model_uri, dst_path=str(tmp_path / "m"))
    by_dir = load_batch_model(local)
    assert by_alias.identity == by_run.identity == by_dir.identity
    assert by_alias.info["wrapper_globals"] == ["omics_risk.scoring.pyfunc.OmicsRiskPyfunc"]
    assert by_alias.settings["extraction"]["cfdna"]["extractors"][0]["name"] == "fragmentomics"
    with pytest.raises(ModelLoadError, match="cannot resolve model 'models:/omics-risk-rfs@nope'"):
        load_batch_model("models:/omics-risk-rfs@nope")


@pytest.mark.slow
def test_tampered_model_files_cannot_run_code_through_our_loader(demo: SimpleNamespace, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    source = Path(mlflow.artifacts.download_artifacts(demo.info.model_uri, dst_path=str(tmp_path / "orig")))

    def copy(name: str) -> Path:
        return Path(shutil.copytree(source, tmp_path / name))

    # 1. config.json names a function outside omics_risk
    m = copy("cls")
    cfg_path = m / "artifacts" / "model_dir" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "class": "os.system"}))
    with pytest.raises(UntrustedModelClassError, match="not under omics_risk"):
        load_batch_model(m)
    # 2. weights.pt holds a pickled object whose unpickling would create the marker file
    m = copy("weights")
    torch.save({"payload": _Payload(marker)}, m / "artifacts" / "model_dir" / "weights.pt")
    with pytest.raises(ModelLoadError, match=r"(?s)refusing the model's weights.*Weights only load failed"):
        load_batch_model(m)
    assert not marker.exists()
    # 3. MLflow's own wrapper pickle is replaced by a payload: our loader never unpickles it, and says so
    m = copy("wrapper")
    (m / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.warns(UserWarning, match="references io.open.*would run that code"):
        bm = load_batch_model(m)
    assert not marker.exists() and bm.info["wrapper_ok"] is False
    # ... whereas MLflow's loader runs it at load time: the limit of MLflow's format (docs/scoring.md)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):  # noqa: B017 - the payload returns a file object, not a PythonModel
            mlflow.pyfunc.load_model(str(m))
    assert marker.exists()
    marker.unlink()
    # 4. MLmodel points an artifact outside the model directory
    m = copy("traversal")
    meta = yaml.safe_load((m / "MLmodel").read_text())
    meta["flavors"]["python_function"]["artifacts"]["model_dir"]["path"] = "../orig/artifacts/model_dir"
    (m / "MLmodel").write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match="outside the model directory"):
        load_batch_model(m)
    # 5. scoring.json asks the extraction to instantiate something else
    m = copy("extract")
    sj = m / "artifacts" / "scoring.json"
    settings = json.loads(sj.read_text())
    settings["extraction"]["ctdna"]["extractors"][0]["class"] = "subprocess.run"
    sj.write_text(json.dumps(settings))
    with pytest.raises(ModelLoadError, match="refusing"):
        extraction_config(load_batch_model(m))
    assert not marker.exists()


@pytest.mark.slow
def test_ct_image_model_scores_with_the_cohort_scans(demo: SimpleNamespace, problem_cohort: SimpleNamespace,
                                                     tmp_path: Path) -> None:
    """A CT-image model gets each chunk's CT tensors (the flat pyfunc frame cannot carry them); a corrupt scan is
    that patient's reason, and scores equal the model's own with the same images."""
    from omics_risk.data.contract import load_cohort
    from omics_risk.features.clinical import clinical_types
    from omics_risk.features.ct import CTConfig
    from omics_risk.models.fused import CTImageStore, FusedSurvivalModel
    from omics_risk.scoring.frames import to_frame

    cohort = load_cohort(demo.root)
    data = load_multimodal(demo.root, demo.store, endpoint="rfs", modalities=["ctdna"])
    cfg = CTConfig(roi_size=(16, 16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = CTImageStore(cohort, cfg=cfg, cache_dir=tmp_path / "train_ct")
        model = FusedSurvivalModel(epochs=2, patience=None, validation_fraction=0.0, hidden=(4,), embed_dim=4,
                                   fusion_dim=4, fusion_hidden=4, k=None, device="cpu", amp=False, seed=0,
                                   clinical_types=clinical_types(cohort.spec), use_ct_images=True,
                                   ct_widths=(4, 4, 8, 8), ct_embed_dim=4, ct_augment=False,
                                   ct_timepoints=("preop", "postop1")).fit(data, images=images)
        risk = model.predict_risk(data, images=images)
        settings = scoring_settings(model, to_frame(data), feature_store=demo.store, training_cohort=demo.root,
                                    ct_config=cfg, training_risk=risk)
    bm = BatchModel.from_model(model, settings)
    assert bm.images == ["ct"] and bm.timepoints("ct") == ["preop", "postop1"]
    # the training cohort again: the batch path feeds the same tensors as the in-memory model got
    _score(bm, demo.root, tmp_path / "train.parquet", features_dir=demo.store, chunk_size=7)
    again = pd.read_parquet(tmp_path / "train.parquet").set_index("patient_id")
    np.testing.assert_allclose(again.loc[list(data.patients), "risk_score"], risk, rtol=0, atol=1e-6)
    # the problem cohort: the corrupt scan is reported and the patient scored with the other one
    _score(bm, problem_cohort.root, tmp_path / "s.parquet", features_dir=problem_cohort.features, chunk_size=5)
    df = pd.read_parquet(tmp_path / "s.parquet").set_index("patient_id")
    bad = problem_cohort.who["corrupt_image"]
    assert df.at[bad, "status"] == "partial" and "corrupt gzip stream" in df.at[bad, "reason"]
    assert "(scored with its other scans)" in df.at[bad, "reason"] or "ct" in df.at[bad, "modalities_missing"]
    assert df.at[problem_cohort.who["no_sample"], "reason"].endswith("ct: no sample")
    ok = df[df["status"] == "ok"]
    assert len(ok) and ok["modalities_used"].str.endswith("ct").all()
