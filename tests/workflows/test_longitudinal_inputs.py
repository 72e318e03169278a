"""Longitudinal features as model inputs (``task.longitudinal`` -> ``<modality>_dynamics``): built at the prediction
time from the per-sample store, equal to a direct ``longitudinal_table`` call, blind to draws after the prediction
time, and used by every model of a training run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# the tiny nsclc-advanced cohort and training-run helpers of the one-path tests (same folder)
from test_inputs import DAY90, SERIAL, TINY, _extracted_copy, _train

from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import MultimodalData
from omics_risk.data.synthetic import generate_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.features.longitudinal import FEATURES, LongitudinalSpec, longitudinal_table
from omics_risk.workflows.inputs import check_no_look_ahead, model_inputs

LONGITUDINAL = {"ctdna": [{"feature": "ctdna_mean_vaf", "detection_limit": 0.001}]}
SPEC = LongitudinalSpec("ctdna_mean_vaf", detection_limit=0.001)


@pytest.fixture(scope="module")
def advanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("longitudinal")
    src = generate_cohort("nsclc-advanced", n=30, seed=3, out=base / "src", **TINY)
    return _extracted_copy(src, base / "cohort")


def _data(root: Path, pt: PredictionTime | None = DAY90, longitudinal: object = LONGITUDINAL,
          modalities: list[str] | None = None) -> MultimodalData:
    return model_inputs(load_cohort(root), root / "features", extract=False, endpoint="pfs",
                        modalities=SERIAL if modalities is None else modalities, prediction_time=pt,
                        longitudinal=longitudinal).data  # type: ignore[arg-type]


def test_longitudinal_features_are_a_tabular_model_input_at_the_prediction_time(advanced: Path) -> None:
    data = _data(advanced)
    plain = _data(advanced, longitudinal=None)
    assert data.modality_names == [*SERIAL, "ctdna_dynamics"]
    for m in SERIAL:  # the other inputs are untouched
        pd.testing.assert_frame_equal(data.modalities[m], plain.modalities[m])
    table = data.modalities["ctdna_dynamics"]
    assert list(table.columns) == [f"ctdna_mean_vaf__{f}" for f in FEATURES]
    assert list(table.index) == list(data.patients)
    samples = pd.read_parquet(advanced / "features/ctdna.samples.parquet")
    direct = longitudinal_table(samples, pd.Series(data.prediction_day, index=data.patients), [SPEC])
    pd.testing.assert_frame_equal(table, direct.reindex(data.patients), check_names=False)
    assert data.formats["ctdna_dynamics"] == "table" and data.preprocessing_kind("ctdna_dynamics") == "tabular"

    # against samples.csv and the per-sample values, by hand: draws on or before day 90
    csv = pd.read_csv(advanced / "samples.csv", dtype={"patient_id": str})
    early = csv[(csv["modality"] == "ctdna") & (csv["day"] <= 90)]
    assert data.present["ctdna_dynamics"].tolist() == data.patients.isin(early["patient_id"]).tolist()
    n_baseline = 0
    for pid in data.patients:
        draws = samples[(samples["patient_id"] == pid) & (samples["day"] <= 90)].dropna(subset=["ctdna_mean_vaf"])
        draws = draws.groupby("day")["ctdna_mean_vaf"].mean()
        row = table.loc[pid]
        assert row["ctdna_mean_vaf__n_draws"] == len(draws)
        if draws.empty:
            assert row.drop("ctdna_mean_vaf__n_draws").isna().all()
            continue
        assert row["ctdna_mean_vaf__last"] == draws.iloc[-1]
        assert row["ctdna_mean_vaf__days_since_last"] == 90 - draws.index[-1]
        before = draws[draws.index <= 0]  # a failed c1 sample leaves no baseline
        n_baseline += len(before) > 0
        assert row["ctdna_mean_vaf__baseline"] == (before.iloc[-1] if len(before) else pytest.approx(np.nan,
                                                                                                    nan_ok=True))
        if len(draws) >= 2:
            slope = np.polyfit(draws.index.to_numpy(float), draws.to_numpy(), 1)[0] * 30
            assert row["ctdna_mean_vaf__slope"] == pytest.approx(slope, rel=1e-9, abs=1e-15)
    assert n_baseline > len(data) / 2
    # the look-ahead guard ran on these data (model_inputs) and passes again: nothing attributes derived values
    check_no_look_ahead(data, advanced / "features")


def test_no_dynamics_value_depends_on_a_draw_after_the_prediction_time(advanced: Path, tmp_path: Path) -> None:
    """The later ctDNA draws' values changed, or the draws moved to the day after the prediction day: no
    ``ctdna_dynamics`` value at day 90 changes; at day 400 the same edits do show."""
    base = _data(advanced)

    def change_later(root: Path) -> None:
        v = pd.read_csv(root / "ctdna/variants.csv", dtype={"patient_id": str})
        v.loc[v["day"] > 90, "vaf"] = 0.25
        v.to_csv(root / "ctdna/variants.csv", index=False)

    def move_later(root: Path) -> None:
        s = pd.read_csv(root / "samples.csv", dtype=str, keep_default_na=False)
        later = (s["modality"] == "ctdna") & (s["day"].astype(float) > 90)
        assert later.sum() > 10
        s.loc[later, "day"] = "91"
        s.to_csv(root / "samples.csv", index=False)

    late = PredictionTime(at="day", day=400.0)
    for name, edit in (("changed", change_later), ("moved", move_later)):
        root = _extracted_copy(advanced, tmp_path / name, edit)
        other = _data(root)
        assert list(other.patients) == list(base.patients)
        pd.testing.assert_frame_equal(other.modalities["ctdna_dynamics"], base.modalities["ctdna_dynamics"])
        pd.testing.assert_series_equal(other.present["ctdna_dynamics"], base.present["ctdna_dynamics"])
        assert not _data(root, late).modalities["ctdna_dynamics"].equals(
            _data(advanced, late).modalities["ctdna_dynamics"])  # the edit reached the later draws


def test_longitudinal_settings_are_checked_with_messages_naming_the_key(advanced: Path) -> None:
    with pytest.raises(ValueError, match=r"task.longitudinal needs task.prediction_time"):
        _data(advanced, pt=None)
    with pytest.raises(ValueError, match=r"task.longitudinal names modality 'rnaseq', but the feature store .* has "
                                         r"no per-sample table rnaseq.samples.parquet \(modalities with one: .*ctdna"):
        _data(advanced, longitudinal={"rnaseq": [{"feature": "x"}]})
    with pytest.raises(ValueError, match=r"task.longitudinal.ctdna\[0\].feature 'mean_vaf' is not a feature of "
                                         r"ctdna.samples.parquet; did you mean ctdna_mean_vaf\? \(it has 12: "):
        _data(advanced, longitudinal={"ctdna": [{"feature": "mean_vaf"}]})
    with pytest.raises(ValueError, match=r"task.longitudinal.ctdna\[0\]: unknown key\(s\) \['limit'\]"):
        _data(advanced, longitudinal={"ctdna": [{"feature": "ctdna_mean_vaf", "limit": 0.001}]})
    with pytest.raises(ValueError, match=r"task.longitudinal.ctdna\[0\].detection_limit must be a number"):
        _data(advanced, longitudinal={"ctdna": [{"feature": "ctdna_mean_vaf", "detection_limit": "low"}]})
    with pytest.raises(ValueError, match=r"task.longitudinal.ctdna\[0\]: ctdna_mean_vaf: response_fraction must be"):
        _data(advanced, longitudinal={"ctdna": [{"feature": "ctdna_mean_vaf", "response_fraction": 2}]})
    with pytest.raises(ValueError, match=r"task.longitudinal.ctdna\[1\]: a second quantity named 'ctdna_mean_vaf'"):
        _data(advanced, longitudinal={"ctdna": [{"feature": "ctdna_mean_vaf"}, {"feature": "ctdna_mean_vaf"}]})
    with pytest.raises(ValueError, match=r"task.longitudinal.recist must be a non-empty list"):
        _data(advanced, longitudinal={"recist": []})


def test_several_quantities_a_named_one_and_only_the_derived_table(advanced: Path) -> None:
    """Two quantities side by side (one renamed, YAML-style numbers as text); a model on the derived table alone;
    the validation cohort's call names the derived table among its modalities (as training passes them)."""
    cfg = {"ctdna": [{"feature": "ctdna_mean_vaf", "detection_limit": "1e-3"},
                     {"feature": "ctdna_pooled_vaf", "name": "pooled", "progression_factor": 1.5,
                      "baseline_window": ["-inf", 0]}]}
    data = _data(advanced, longitudinal=cfg, modalities=["recist", "ctdna_dynamics"])
    assert data.modality_names == ["recist", "ctdna_dynamics"]
    samples = pd.read_parquet(advanced / "features/ctdna.samples.parquet")
    direct = longitudinal_table(samples.rename(columns={"ctdna_pooled_vaf": "pooled"}),
                                pd.Series(data.prediction_day, index=data.patients),
                                [SPEC, LongitudinalSpec("pooled", detection_limit=None, progression_factor=1.5)])
    pd.testing.assert_frame_equal(data.modalities["ctdna_dynamics"], direct.reindex(data.patients),
                                  check_names=False)


def test_a_training_run_uses_the_longitudinal_features_in_every_model(advanced: Path, tmp_path: Path) -> None:
    """task.longitudinal reaches the fused model and the per-modality baselines (coxnet_ctdna_dynamics) of the
    training run and of the external validation (the same cohort here)."""
    metrics = _train(tmp_path, advanced, "task=pfs", "data.modalities=[ctdna,recist]", "training.cv.folds=4",
                     "task.prediction_time={at: day, day: 90}", "baselines.enabled=true",
                     "task.longitudinal={ctdna: [{feature: ctdna_mean_vaf, detection_limit: 0.001}]}")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["modalities"] == ["ctdna", "recist", "ctdna_dynamics"]
    for name in ("fused", "clinical_cox", "coxnet_ctdna", "coxnet_recist", "coxnet_ctdna_dynamics"):
        assert 0.0 <= metrics[f"{name}/cindex"] <= 1.0
        assert 0.0 <= metrics[f"external/{name}/cindex"] <= 1.0
