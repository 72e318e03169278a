"""``train.py`` with ``task.prediction_time: {at: landmarks, ...}`` (``omics_risk.workflows.dynamic``): the landmark
super-model against the baseline-only model on patient folds, evaluated per landmark, on a tiny nsclc-advanced."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from omics_risk.data.contract import load_cohort
from omics_risk.data.synthetic import generate_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.features.extract import extract_cohort
from omics_risk.models.landmark import patient_folds
from omics_risk.models.time_varying import TimeVaryingCox
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.dynamic import (
    LANDMARK,
    STATIC,
    TIME_VARYING,
    _time_varying_risk,
    dynamic_inputs,
    shuffled_outcome,
)
from omics_risk.workflows.longitudinal_inputs import longitudinal_inputs

ROOT = Path(__file__).resolve().parents[2]
TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}
LANDMARKS = [0.0, 90.0, 180.0, 270.0]
SERIAL = ["ctdna", "recist"]


@pytest.fixture(scope="module")
def advanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_cohort("nsclc-advanced", n=60, seed=5, out=tmp_path_factory.mktemp("dyn") / "adv", **TINY)
    extract_cohort(root, root / "features", modalities=SERIAL, workers=1, progress=False)
    return root


def _run(out: Path, root: Path, *overrides: str) -> tuple[dict[str, float], dict]:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={out}", f"paths.output_dir={out / 'run'}", "tracking=none", "training.progress=false",
            "extract.run=false", "data=cohort", f"data.root={root}", f"data.modalities=[{','.join(SERIAL)}]",
            "task=pfs", "task.prediction_time={at: landmarks, landmarks: [0, 90, 180, 270]}",
            "task.horizon_window=365", "training.cv.folds=3", "training.cv.repeats=1", "evaluation.bootstrap=20",
            "training.final_model=false", *overrides])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = pipeline.train(cfg)
    return metrics, json.loads((out / "run" / "summary.json").read_text())


@pytest.fixture(scope="module")
def run(advanced: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], dict]:
    return _run(tmp_path_factory.mktemp("run"), advanced)


def test_the_run_reports_each_landmark_for_both_models(run: tuple[dict[str, float], dict], advanced: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    metrics, summary = run
    dyn = summary["dynamic"]
    assert dyn["landmarks"] == LANDMARKS and dyn["horizon_window"] == 365.0 and dyn["shuffle_outcome"] is False
    clinical = pd.read_csv(advanced / "clinical.csv", dtype={"patient_id": str})
    for name in (LANDMARK, STATIC):
        rows = dyn["per_landmark"][name]
        assert [r["landmark"] for r in rows] == LANDMARKS
        for r in rows:  # the risk set, recomputed from clinical.csv: still without event or censoring at s
            s, t = r["landmark"], clinical["pfs_time"]
            assert r["n_at_risk"] == int((t > s).sum())
            assert r["n_events"] == int(((t > s) & (t <= s + 365) & (clinical["pfs_event"] == 1)).sum())
            assert 0.0 <= r["harrell_c"] <= 1.0 and r["harrell_c_ci_low"] <= r["harrell_c"] <= r["harrell_c_ci_high"]
            assert metrics[f"dynamic/{name}/{s:g}d/cindex"] == pytest.approx(r["harrell_c"])
            assert f"dynamic/{name}/{s:g}d/auc" in metrics
    comp = dyn["comparison"]["per_landmark"]
    for c, a, b in zip(comp, dyn["per_landmark"][LANDMARK], dyn["per_landmark"][STATIC], strict=True):
        assert c["c_difference"] == pytest.approx(a["harrell_c"] - b["harrell_c"])
    assert "fused/cindex" not in metrics and "table" not in summary  # the single-time run's entries are not made


def test_the_landmark_bootstrap_is_the_evaluation_bootstrap(run: tuple[dict[str, float], dict], advanced: Path,
                                                            tmp_path: Path) -> None:
    """evaluation.bootstrap / evaluation.seed (bootstrap_settings) drive the landmark CIs and p, not the run's seed:
    another evaluation.seed moves the CIs and keeps the fits (same point estimates)."""
    _, summary = run
    assert summary["dynamic"]["bootstrap"] == {"n": 20, "seed": 0, "headline_p": "bootstrap"}
    _, other = _run(tmp_path, advanced, "evaluation.seed=3")
    assert other["dynamic"]["bootstrap"]["seed"] == 3
    a, b = summary["dynamic"]["comparison"]["per_landmark"], other["dynamic"]["comparison"]["per_landmark"]
    assert [r["c_difference"] for r in a] == pytest.approx([r["c_difference"] for r in b])
    assert all(r["n_boot"] <= 20 for r in a)
    lows = [(x["c_difference_ci_low"], y["c_difference_ci_low"]) for x, y in zip(a, b, strict=True)
            if np.isfinite(x["c_difference_ci_low"])]
    assert lows and any(x != y for x, y in lows)


def test_the_baseline_only_model_sees_index_date_inputs_at_every_landmark(advanced: Path) -> None:
    cohort = load_cohort(advanced)
    inp = dynamic_inputs(cohort, advanced / "features", PredictionTime(at="landmarks", landmarks=tuple(LANDMARKS)),
                         365.0, modalities=SERIAL, endpoint="pfs")
    st, dy = inp.static, inp.stacked
    np.testing.assert_array_equal(st.patient, dy.patient)
    np.testing.assert_array_equal(st.landmark, dy.landmark)
    np.testing.assert_array_equal(st.time, dy.time)
    index = inp.index.data.modalities["ctdna"].set_axis(inp.index.patient)
    late = np.flatnonzero(st.landmark == 270.0)
    got = st.data.modalities["ctdna"].iloc[late].set_axis(st.patient[late])
    pd.testing.assert_frame_equal(got[index.columns], index.loc[st.patient[late]], check_dtype=False)
    # the landmark model's rows at 270 carry later draws the static rows do not
    assert dy.data.modalities["ctdna"].shape[1] > index.shape[1]


def test_folds_keep_each_patient_in_one_fold(advanced: Path) -> None:
    inp = dynamic_inputs(load_cohort(advanced), advanced / "features",
                         PredictionTime(at="landmarks", landmarks=tuple(LANDMARKS)), 365.0, modalities=SERIAL,
                         endpoint="pfs")
    patients = inp.stacked.patient
    for train, test in patient_folds(patients, 3, 42, event=inp.stacked.event):
        assert not set(patients[train]) & set(patients[test])


def test_shuffled_outcomes_permute_time_and_event_together(advanced: Path) -> None:
    cohort = load_cohort(advanced)
    shuffled = shuffled_outcome(cohort, "pfs", 0)
    before, after = cohort.clinical, shuffled.clinical
    assert sorted(zip(before.pfs_time, before.pfs_event, strict=True)) == \
        sorted(zip(after.pfs_time, after.pfs_event, strict=True))
    assert not np.array_equal(before.pfs_time, after.pfs_time)
    pd.testing.assert_series_equal(before.patient_id, after.patient_id)
    assert cohort.clinical is before and before.pfs_time.equals(load_cohort(advanced).clinical.pfs_time)


def test_a_shuffled_run_has_c_near_one_half(advanced: Path, tmp_path: Path) -> None:
    _, summary = _run(tmp_path, advanced, "task.shuffle_outcome=true")
    assert summary["dynamic"]["shuffle_outcome"] is True
    for name in (LANDMARK, STATIC):
        c = [r["harrell_c"] for r in summary["dynamic"]["per_landmark"][name]]
        assert abs(np.nanmean(c) - 0.5) < 0.15, (name, c)


def test_a_dynamic_task_needs_a_horizon_window(advanced: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"set task.horizon_window"):
        _run(tmp_path, advanced, "task.horizon_window=null")


# ------------------------------------------------------------------------------- time-varying Cox (task.longitudinal)
LONGITUDINAL = "task.longitudinal={ctdna: [{feature: ctdna_mean_vaf, detection_limit: 0.001}]}"


def test_longitudinal_quantities_add_the_time_varying_cox_and_the_landmark_dynamics(advanced: Path,
                                                                                     tmp_path: Path) -> None:
    metrics, summary = _run(tmp_path, advanced, LONGITUDINAL)
    dyn = summary["dynamic"]
    assert set(dyn["per_landmark"]) == {LANDMARK, STATIC, TIME_VARYING}
    assert "ctdna_dynamics" in dyn["models"][LANDMARK]["modalities"]
    assert dyn["models"][TIME_VARYING]["serial"] == ["task.longitudinal.ctdna[0]"]
    assert [c["a"] for c in dyn["comparisons"]] == [LANDMARK, TIME_VARYING]
    for r in dyn["per_landmark"][TIME_VARYING]:
        assert 0.0 <= r["harrell_c"] <= 1.0
        assert metrics[f"dynamic/{TIME_VARYING}/{r['landmark']:g}d/cindex"] == pytest.approx(r["harrell_c"])
        assert f"dynamic/{TIME_VARYING}_vs_{STATIC}/{r['landmark']:g}d/p" in metrics


def test_the_time_varying_cox_reads_no_draw_after_a_landmark(advanced: Path) -> None:
    """Scores at each landmark from the draws up to it: wrecking the test patients' later draws changes nothing;
    each landmark's score is the model fitted on the training patients, scored from the last values at that day."""
    cohort = load_cohort(advanced)
    quantities = longitudinal_inputs({"ctdna": [{"feature": "ctdna_mean_vaf", "detection_limit": 0.001}]})
    inp = dynamic_inputs(cohort, advanced / "features", PredictionTime.from_config({"at": "landmarks",
                         "landmarks": LANDMARKS}), 365.0, modalities=SERIAL, endpoint="pfs", longitudinal=quantities)
    assert inp.serial is not None and inp.day0 is not None
    patients = np.unique(inp.stacked.patient)
    train_patients, test_patients = patients[::2], patients[1::2]
    test = np.flatnonzero(np.isin(inp.stacked.patient, test_patients))
    risk = _time_varying_risk(inp, train_patients, test, 0)
    model = TimeVaryingCox(seed=0).fit(inp.day0.subset(np.flatnonzero(np.isin(inp.day0.patients, train_patients))),
                                       long=inp.serial)
    for s in LANDMARKS:
        rows = np.flatnonzero(inp.stacked.landmark[test] == s)
        at_s = inp.day0.subset(pd.Index(inp.day0.patients).get_indexer(inp.stacked.patient[test][rows]))
        np.testing.assert_allclose(risk[rows], model.predict_risk(at_s, long=inp.serial, day=s))
        wrecked = inp.serial.copy()
        later = wrecked["patient_id"].isin(test_patients) & (wrecked["day"] > s)
        wrecked.loc[later, "ctdna_mean_vaf"] = 1e6
        again = dataclasses.replace(inp, serial=pd.concat([inp.serial[~inp.serial["patient_id"].isin(test_patients)],
                                                           wrecked[wrecked["patient_id"].isin(test_patients)]]))
        np.testing.assert_allclose(_time_varying_risk(again, train_patients, test, 0)[rows], risk[rows])
