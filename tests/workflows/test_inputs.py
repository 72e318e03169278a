"""The one path from a cohort to model inputs (``omics_risk.workflows.inputs``): a loaded cohort is parsed once per
training run and role, and ``model_inputs`` gives what the pipeline loaded before (same data, same notes)."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import omics_risk.data.multimodal as multimodal
from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import MultimodalData, load_landmarks, load_multimodal
from omics_risk.data.synthetic import generate_cohort
from omics_risk.data.timing import PredictionTime
from omics_risk.features import extract as extract_module
from omics_risk.features.extract import extract_cohort
from omics_risk.workflows import inputs as inputs_module
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.inputs import ModelInputs, check_no_look_ahead, model_inputs

ROOT = Path(__file__).resolve().parents[2]
TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}


@pytest.fixture(scope="module")
def cohort_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = generate_cohort("nsclc-postop", n=30, seed=3, out=tmp_path_factory.mktemp("inputs") / "nsclc", **TINY)
    extract_cohort(root, root / "features", workers=1, progress=False)
    return root


def test_model_inputs_joins_the_store_of_a_loaded_cohort_without_parsing_it_again(
        cohort_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cohort = load_cohort(cohort_root)
    expected = load_multimodal(cohort_root, cohort_root / "features", endpoint="rfs")
    monkeypatch.setattr(multimodal, "load_cohort", lambda *a, **k: pytest.fail("the cohort was parsed again"))
    got = model_inputs(cohort, cohort_root / "features", extract=False, endpoint="rfs")
    assert isinstance(got, ModelInputs) and got.cohort is cohort and got.images is None and got.summary is None
    assert list(got.data.patients) == list(expected.patients)
    assert got.data.modality_names == expected.modality_names
    for m in expected.modality_names:
        assert got.data.modalities[m].equals(expected.modalities[m])
    assert got.n_unlabelled == len(cohort.clinical) - len(expected)
    assert got.notes == ([f"{got.n_unlabelled} patient(s) without the rfs outcome are left out"]
                         if got.n_unlabelled else [])
    # a modality the store does not hold is left out with only_stored (a model's modality this cohort lacks)
    kept = model_inputs(cohort, cohort_root / "features", extract=False, endpoint="rfs",
                        modalities=[*expected.modality_names, "rnaseq"], only_stored=True)
    assert kept.data.modality_names == expected.modality_names


def test_a_training_run_parses_each_cohort_once(cohort_root: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The training cohort and the validation cohort are each parsed once by the pipeline (extraction, data, CT
    images and the logged model all read that one Cohort); nothing below it, extraction included, parses them again."""
    calls: list[str] = []

    def counted(root: object, **kw: object) -> object:
        calls.append(str(root))
        return load_cohort(root, **kw)

    monkeypatch.setattr(pipeline, "load_cohort", counted)
    monkeypatch.setattr(multimodal, "load_cohort", lambda *a, **k: pytest.fail("load_multimodal parsed a cohort"))
    monkeypatch.setattr(extract_module, "load_cohort", lambda *a, **k: pytest.fail("extraction parsed a cohort"))
    metrics = _train(tmp_path, cohort_root, "training.final_model=false", "training.cv.folds=2",
                     "training.cv.repeats=1", "task.prediction_time=null")  # rfs predicts at postop1 by default
    assert calls == [str(cohort_root), str(cohort_root)]  # the training cohort, then the validation cohort
    assert "fused/cindex" in metrics and "external/fused/cindex" in metrics
    assert "prediction_time" not in json.loads((tmp_path / "run" / "summary.json").read_text())  # none configured


def _train(tmp_path: Path, root: Path, *overrides: str) -> dict[str, float]:
    """A tiny training run on ``root`` (validated on itself), writing into ``tmp_path``/run."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "tracking=none",
            "training.progress=false", "extract.workers=1", "debug=fast", "baselines=none", "data=cohort",
            f"data.root={root}", f"data.validation_root={root}", "model.estimator.epochs=2", *overrides])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pipeline.train(cfg)


# ------------------------------------------------------------------------------------------------ prediction times
DAY90 = PredictionTime(at="day", day=90.0)
SERIAL = ["ctdna", "recist"]  # nsclc-advanced's serial modalities: a draw before every cycle, RECIST visits


def _extracted_copy(src: Path, dst: Path, edit: Callable[[Path], None] | None = None) -> Path:
    """A copy of cohort ``src`` (without its store), edited by ``edit``, with its serial modalities extracted."""
    root = Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns("features")))
    if edit is not None:
        edit(root)
    extract_cohort(root, root / "features", modalities=SERIAL, workers=1, progress=False)
    return root


def _at(root: Path, pt: PredictionTime | None = DAY90) -> MultimodalData:
    return model_inputs(load_cohort(root), root / "features", extract=False, endpoint="pfs", modalities=SERIAL,
                        prediction_time=pt).data


@pytest.fixture(scope="module")
def advanced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("advanced")
    src = generate_cohort("nsclc-advanced", n=30, seed=3, out=base / "src", **TINY)
    return _extracted_copy(src, base / "cohort")


def test_model_inputs_at_a_prediction_time_match_the_cohort_files(advanced: Path) -> None:
    """Risk set, shifted outcome and presence, recomputed from clinical.csv and samples.csv."""
    clinical = pd.read_csv(advanced / "clinical.csv", dtype={"patient_id": str}).set_index("patient_id")
    samples = pd.read_csv(advanced / "samples.csv", dtype={"patient_id": str})
    got = model_inputs(load_cohort(advanced), advanced / "features", extract=False, endpoint="pfs",
                       modalities=SERIAL, prediction_time=DAY90)
    data = got.data
    later = clinical["pfs_time"] > 90
    assert list(data.patients) == list(clinical.index[later])
    assert data.risk_set == {"at_risk": int(later.sum()), "left_out": int((~later).sum()), "without_timepoint": 0}
    np.testing.assert_array_equal(data.time, clinical.loc[later, "pfs_time"].to_numpy(float) - 90)
    np.testing.assert_array_equal(data.event, clinical.loc[later, "pfs_event"].to_numpy(float))
    np.testing.assert_array_equal(data.prediction_day, np.full(len(data), 90.0))
    for m in SERIAL:
        early = samples[(samples["modality"] == m) & (samples["day"] <= 90)]["patient_id"]
        assert data.present[m].tolist() == data.patients.isin(early).tolist()
        later_labels = set(samples[(samples["modality"] == m) & (samples["day"] > 95)]["timepoint"])
        slots = {c.split("__")[0] for c in data.modalities[m].columns}
        assert slots and not slots & later_labels  # c6.. and a03.. are all after day 95
    assert got.n_unlabelled == 0 and got.prediction_time == DAY90
    assert got.notes == ["prediction time: day 90; inputs use only samples taken at or before it",
                         f"{int((~later).sum())} patient(s) with the pfs event or censoring at or before the "
                         "prediction time left the risk set"]
    # landmarks: one data set per landmark, the patients still at risk there
    sets = load_landmarks(advanced, prediction_time=PredictionTime(at="landmarks", landmarks=(0.0, 90.0, 180.0)),
                          modalities=SERIAL, endpoint="pfs")
    assert list(sets) == [0.0, 90.0, 180.0]
    for lm, d in sets.items():
        assert d.landmark == lm and list(d.patients) == list(clinical.index[clinical["pfs_time"] > lm])
    assert list(sets[90.0].modalities["ctdna"].columns) == list(data.modalities["ctdna"].columns)


def test_no_feature_at_a_prediction_time_depends_on_a_later_sample(advanced: Path, tmp_path: Path) -> None:
    """The issue's Done-when: samples after the prediction time deleted, or their values changed, change no input
    at it; moving one sample after it only empties that sample's own slot."""
    base = _at(advanced)

    def delete_later(root: Path) -> None:
        s = pd.read_csv(root / "samples.csv", dtype=str, keep_default_na=False)
        s[s["day"].astype(float) <= 90].to_csv(root / "samples.csv", index=False)

    def change_later(root: Path) -> None:
        v = pd.read_csv(root / "ctdna/variants.csv", dtype={"patient_id": str})
        v.loc[v["day"] > 90, "vaf"] = 0.25
        v.to_csv(root / "ctdna/variants.csv", index=False)
        days = pd.read_csv(root / "samples.csv").set_index("sample_id")["day"]
        r = pd.read_csv(root / "recist/recist.csv")
        r.loc[r["sample_id"].map(days) > 90, ["sld_mm", "new_lesion"]] = [999, 1]
        r.to_csv(root / "recist/recist.csv", index=False)

    for name, edit in (("deleted", delete_later), ("changed", change_later)):
        root = _extracted_copy(advanced, tmp_path / name, edit)
        other = _at(root)
        assert list(other.patients) == list(base.patients)
        for m in SERIAL:
            pd.testing.assert_frame_equal(other.modalities[m], base.modalities[m])
        pd.testing.assert_frame_equal(other.present, base.present)
        np.testing.assert_array_equal(other.time, base.time)
        if name == "changed":  # the edit did reach the later samples: every sample's table shows it
            assert not _at(root, None).modalities["ctdna"].equals(_at(advanced, None).modalities["ctdna"])

    # one ctdna draw on or before day 90 (the c3 draw of an at-risk patient) moved to day 120
    samples = pd.read_csv(advanced / "samples.csv", dtype={"patient_id": str})
    pid = str(base.patients[0])
    sid = samples[(samples["patient_id"] == pid) & (samples["sample_id"].str.contains("ctdna_c3$"))]["sample_id"]
    assert len(sid) == 1

    def move(root: Path) -> None:
        s = pd.read_csv(root / "samples.csv", dtype=str, keep_default_na=False)
        s.loc[s["sample_id"] == sid.iloc[0], "day"] = "120"
        s.to_csv(root / "samples.csv", index=False)

    moved = _at(_extracted_copy(advanced, tmp_path / "moved", move))
    pd.testing.assert_frame_equal(moved.modalities["recist"], base.modalities["recist"])
    ct, cb = moved.modalities["ctdna"], base.modalities["ctdna"]
    assert list(ct.columns) == list(cb.columns)
    own = [c for c in cb.columns if c.startswith("c3__")]
    assert cb.loc[pid, own].notna().any() and ct.loc[pid, own].isna().all()  # its own slot is empty now
    pd.testing.assert_frame_equal(ct.drop(index=pid), cb.drop(index=pid))
    pd.testing.assert_frame_equal(ct.loc[[pid]].drop(columns=own), cb.loc[[pid]].drop(columns=own))


def test_training_refuses_features_from_after_the_prediction_time(advanced: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard asserts, from the per-sample store alone, that no value and no presence came from a later sample:
    a table built by some other code path that reads a later draw is refused, naming what it found."""
    data = _at(advanced)
    check_no_look_ahead(data, advanced / "features")  # what model_inputs built passes
    store = pd.read_parquet(advanced / "features/ctdna.samples.parquet")
    pid = str(data.patients[0])
    late = store[(store["patient_id"] == pid) & (store["day"] > 90)].sort_values("day").iloc[0]
    bad = copy.deepcopy(data)
    bad.modalities["ctdna"].loc[pid, "c1__ctdna_mean_depth"] = late["ctdna_mean_depth"]  # a later draw's value
    with pytest.raises(ValueError) as err:
        check_no_look_ahead(bad, advanced / "features")
    expected = (f"look-ahead in the training data: 1 patient(s) have ctdna inputs from samples taken after their "
                f"prediction time, e.g. patient {pid}: ctdna column c1__ctdna_mean_depth = "
                f"{late['ctdna_mean_depth']:g} is carried only by sample {late.name} (day {late['day']:g}) after the "
                "prediction day 90")
    assert expected in str(err.value)
    # a presence no sample up to the prediction time supports
    ghost = copy.deepcopy(data)
    absent = ghost.patients[~ghost.present["recist"].to_numpy()]
    assert len(absent)
    ghost.present.loc[absent[0], "recist"] = True
    with pytest.raises(ValueError, match=f"patient {absent[0]} is marked present for recist"):
        check_no_look_ahead(ghost, advanced / "features", what="validation")
    # model_inputs runs the guard on whatever load_multimodal returned
    monkeypatch.setattr(inputs_module, "load_multimodal", lambda *a, **k: bad)
    with pytest.raises(ValueError, match="look-ahead in the training data"):
        _at(advanced)


def test_a_store_from_before_prediction_times_says_to_extract_again(advanced: Path, tmp_path: Path) -> None:
    store = Path(shutil.copytree(advanced / "features", tmp_path / "old", ignore=shutil.ignore_patterns("cache")))
    for f in store.glob("*.samples.parquet"):
        f.unlink()
    cohort = load_cohort(advanced)
    legacy = load_multimodal(cohort, store, endpoint="pfs")  # without a prediction time the old store still works
    assert legacy.modality_names == SERIAL
    with pytest.raises(ValueError, match=r"no per-sample table for ctdna, recist \(ctdna.samples.parquet\): it was "
                                         r"written before prediction times existed. Re-run `omics-risk extract "):
        load_multimodal(cohort, store, endpoint="pfs", prediction_time=DAY90)
    with pytest.raises(ValueError, match=r"one data set per landmark \(load_landmarks, for dynamic models\)"):
        load_multimodal(cohort, advanced / "features", prediction_time=PredictionTime(at="landmarks",
                                                                                      landmarks=(0.0,)))


def test_a_training_run_at_a_prediction_time_reports_it(advanced: Path, tmp_path: Path) -> None:
    """task.prediction_time reaches the data of the training and the validation cohort; summary.json says which
    prediction time and how many patients left the risk set (a run without one has no such entry: see above)."""
    # 4 folds: 21 patients are at risk at day 90, and the fused model needs 10 training patients a modality
    metrics = _train(tmp_path, advanced, "task=pfs", "data.modalities=[ctdna,recist]", "training.cv.folds=4",
                     "task.prediction_time={at: day, day: 90}")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    clinical = pd.read_csv(advanced / "clinical.csv")
    n_at_risk = int((clinical["pfs_time"] > 90).sum())
    assert summary["prediction_time"] == {"describe": "day 90", "n_at_risk": n_at_risk,
                                          "n_left_out": len(clinical) - n_at_risk, "n_without_timepoint": 0}
    assert summary["n_patients"] == n_at_risk and metrics["external/n_patients"] == n_at_risk
