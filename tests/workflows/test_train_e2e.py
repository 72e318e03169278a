"""``train(cfg)`` end to end on tiny synthetic cohorts, composed from the real configs with Hydra's compose API.

- ``model=fused_ct``: the CT tensors of the cohort reach every fold, the CT-only network (deep radiomic risk score)
  and the final model; the saved model scores flat frames (no CT) through the pyfunc's ``score``;
- ``experiment=sclc_response``: PFS C-index and response AUC with CIs, with a clinical logistic reference;
- ``-m hparams_search=optuna_cindex``: the Optuna sweep through ``train.py`` in a subprocess.

Plus fast unit tests of the pieces the pipeline adds: fold-safe image routing in ``_fit_predict``, the CT
timepoint order, the response reference and the joint response head.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from omics_risk.data.contract import load_cohort
from omics_risk.data.multimodal import MultimodalData
from omics_risk.data.synthetic import generate_cohort
from omics_risk.models.fused import FusedSurvivalModel
from omics_risk.privacy import Pseudonymiser
from omics_risk.tracking.audit import audit_store
from omics_risk.tracking.mlflow_utils import clear_protected_identifiers
from omics_risk.workflows import training as pipeline
from omics_risk.workflows.inputs import ModelInputs
from omics_risk.workflows.training import ResponseReference, ct_timepoints_of, train

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TINY = {"fragments_per_sample": 300, "n_metabolites": 20, "ct_shape": (24, 24, 16), "workers": 1, "progress": False}


def _compose(out: Path, *overrides: str, tracking: str = "tracking=none") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=[f"paths.root_dir={out}", f"paths.output_dir={out / 'run'}",
                                           tracking, "training.progress=false", "extract.workers=1", *overrides])


@pytest.fixture(scope="session")
def nsclc_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "nsclc"
    return generate_cohort("nsclc-postop", n=40, seed=5, out=out, **TINY)


@pytest.fixture(scope="session")
def sclc_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "sclc"
    return generate_cohort("sclc", n=40, seed=5, out=out, **TINY)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_fused_ct_trains_end_to_end_with_the_cohort_ct(nsclc_cohort: Path, tmp_path: Path,
                                                       mlflow_template_db: Path) -> None:
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _compose(tmp_path, "model=fused_ct", "debug=fast", "baselines=fast", "data=cohort",
                   f"data.root={nsclc_cohort}", "model.ct.roi_size=[16,16,16]", "model.deep_radiomic_score=true",
                   "model.estimator.epochs=3", "+model.estimator.num_threads=1",
                   "training.final_model=true", "optimized_metric=fused_ct/cindex", f"tracking.uri={uri}",
                   "tracking.log_folds=false",
                   f"data.validation_root={nsclc_cohort}",  # the same cohort as "external": exercises the path
                   "task.prediction_time=null",  # every patient (rfs predicts at postop1 by default: 38 of 40 at risk)
                   tracking="tracking=mlflow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = train(cfg)
    clear_protected_identifiers()
    for name in ("fused_ct", "ct_deep", "clinical_cox", "coxnet_ct"):
        assert 0.0 <= metrics[f"{name}/cindex"] <= 1.0, name
        assert metrics[f"{name}/cindex_ci_low"] <= metrics[f"{name}/cindex_pooled"] <= metrics[f"{name}/cindex_ci_high"]
    assert metrics["external/n_patients"] == 40
    for name in ("fused_ct", "ct_deep", "clinical_cox"):
        assert 0.0 <= metrics[f"external/{name}/cindex"] <= 1.0, name
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    cohort = load_cohort(nsclc_cohort)
    with_ct = cohort.samples_of("ct")["patient_id"].nunique()
    assert summary["ct_images"]["patients"] == with_ct
    # The run's evaluation report: written, and no error recorded.
    assert "report_error" not in summary and Path(summary["report"]).is_file()
    assert (run / "evaluation" / "metrics.csv").is_file()
    assert summary["ct_images"]["timepoints"] == ["preop", "postop1"]
    assert summary["ct_images_in_pyfunc"] is False
    # the tensors were cached once per scan, with the configured crop
    cached = list((nsclc_cohort / "features" / "cache" / "ct_tensors").rglob("*.pt"))
    assert len(cached) == len(cohort.samples_of("ct"))
    assert tuple(torch.load(cached[0], weights_only=True)["image"].shape) == (1, 16, 16, 16)
    # deep radiomic risk score: one out-of-fold score per patient, from the fold the patient was held out in
    scores = pd.read_csv(run / "deep_radiomic_score.csv")
    assert scores["patient_id"].nunique() == summary["n_patients"] == len(scores)
    assert np.isfinite(scores["deep_radiomic_score"]).all() and set(scores["fold"]) == {0, 1}
    # the local file keeps the cohort's ids; the copy logged to the job run has the store's keyed pseudonyms
    assert set(scores["patient_id"]) <= set(cohort.clinical["patient_id"])
    client = MlflowClient(uri)
    job = client.search_runs([client.get_experiment_by_name("omics-risk").experiment_id],
                             "tags.`omics_risk.level` = 'job'")[0]
    logged = pd.read_csv(client.download_artifacts(job.info.run_id, "deep_radiomic_score.csv", str(tmp_path / "dl")))
    assert logged["patient_id"].tolist() == Pseudonymiser.for_store(uri)(scores["patient_id"])
    pd.testing.assert_frame_equal(logged.drop(columns="patient_id"), scores.drop(columns="patient_id"))
    ids = [*cohort.clinical["patient_id"], *cohort.samples["sample_id"]]
    assert audit_store(ids, tracking_uri=uri) == []

    # the final model's network saw the CT crops, and its scores differ with and without them
    from omics_risk.scoring.pyfunc import load_saved_model

    final = load_saved_model(run / "model")
    net = final.network_model_
    assert "ct" in final.modalities_ and net.image_shape_ == [1, 16, 16, 16]
    assert net.ct_timepoints == ["preop", "postop1"]
    from omics_risk.data.multimodal import load_multimodal
    from omics_risk.features.ct import CTConfig
    from omics_risk.models.fused import CTImageStore
    from omics_risk.scoring.frames import to_frame
    from omics_risk.scoring.pyfunc import score

    data = load_multimodal(cohort, endpoint="rfs")
    store = CTImageStore(cohort, cfg=CTConfig(roi_size=(16, 16, 16)),
                         cache_dir=nsclc_cohort / "features" / "cache" / "ct_tensors")
    with_images = net.predict_risk(data, images=store)
    with pytest.warns(UserWarning, match="without CT"):
        assert not np.allclose(with_images, net.predict_risk(data))
    assert np.isfinite(with_images).all() and np.isfinite(final.predict_risk(data, images=store)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = final.predict_risk(data)
    # what the logged pyfunc does: load the model directory, score the flat frame (CT scored as absent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scored without CT" when the stack weighs the network
        scored = score(load_saved_model(run / "model"), to_frame(data), horizons=[365.0])
    assert np.allclose(scored["risk_score"], without)


@pytest.mark.slow
def test_sclc_response_reports_response_auc_with_ci(sclc_cohort: Path, tmp_path: Path) -> None:
    """Pre-treatment (index) and on-treatment (c3d1) response prediction, side by side in one run."""
    cfg = _compose(tmp_path, "experiment=sclc_response", "debug=fast", "baselines=fast",
                   f"data.root={sclc_cohort}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = train(cfg)
    clinical = pd.read_csv(sclc_cohort / "clinical.csv").set_index("patient_id")
    samples = pd.read_csv(sclc_cohort / "samples.csv")
    # Who is asked at c3d1, by hand: a c3d1 sample, and progression-free (no pfs event or censoring) up to its day.
    c3d1_day = samples[samples["timepoint"] == "c3d1"].groupby("patient_id")["day"].max()
    at_c3d1 = [p for p, day in c3d1_day.items() if clinical.loc[p, "pfs_time"] > day]
    expected = {"index": list(clinical.index), "c3d1": at_c3d1}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [e["slug"] for e in summary["prediction_times"]] == ["index", "c3d1"]
    for entry in summary["prediction_times"]:
        name, patients = entry["slug"], expected[entry["slug"]]
        assert entry["n_patients"] == entry["prediction_time"]["n_at_risk"] == len(patients), name
        n_labelled = int(clinical.loc[patients, "response"].notna().sum())
        assert entry["response"]["n_labelled"] == n_labelled, name
        for model in ("fused", "clinical_logistic"):
            auc, low, high = (metrics[f"{name}/{model}/response_auc{s}"] for s in ("", "_ci_low", "_ci_high"))
            assert 0.0 <= low <= auc <= high <= 1.0, (name, model)
            assert entry["models"][model]["response_auc"] == pytest.approx(auc)
            assert metrics[f"{name}/{model}/response_n"] == n_labelled
        assert "coxnet_clinical/response_auc" not in entry["models"]  # survival baselines predict no response
        table = pd.read_csv(tmp_path / "run" / name / "summary.csv").set_index("model")
        assert table.loc["fused", "response_auc_ci_low"] == pytest.approx(metrics[f"{name}/fused/response_auc_ci_low"])
        run_summary = json.loads((tmp_path / "run" / name / "summary.json").read_text())
        assert run_summary["endpoint"] == "pfs" and run_summary["response"]["endpoint"] == "response"
    assert len(at_c3d1) < len(clinical)  # the on-treatment question is asked of fewer patients
    assert metrics["fused/response_auc"] == metrics["index/fused/response_auc"]  # unprefixed: the first one
    side = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert set(side["prediction_time"]) == {"index", "c3d1"}


@pytest.mark.slow
def test_optuna_sweep_through_train_py(nsclc_cohort: Path, tmp_path: Path, mlflow_template_db: Path) -> None:
    from mlflow.tracking import MlflowClient

    from omics_risk.tracking.mlflow_utils import LEVEL_TAG

    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OMICS_RISK_"))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna_cindex", "hydra.sweeper.n_trials=2",
         "debug=fast", "data=cohort", f"data.root={nsclc_cohort}", f"tracking.uri={uri}",
         f"hydra.sweep.dir={tmp_path / 'multirun'}", f"paths.root_dir={tmp_path}", "training.progress=false",
         "extract.workers=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, encoding="utf-8", timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    jobs = [json.loads((tmp_path / "multirun" / str(j) / "summary.json").read_text()) for j in (0, 1)]
    values = [j["metrics"]["fused/cindex"] for j in jobs]
    assert all(np.isfinite(values)) and results["best_value"] == pytest.approx(max(values))
    assert all([r["model"] for r in j["table"]] == ["fused"] for j in jobs)  # the sweep turns baselines off
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("omics-risk").experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get(LEVEL_TAG) == "sweep"]
    assert len(parent) == 1 and parent[0].data.metrics["best/fused/cindex"] == pytest.approx(max(values))


@pytest.mark.slow
def test_tracked_run_registers_the_fused_model_with_a_card_of_its_report_metrics(
        nsclc_cohort: Path, tmp_path: Path, mlflow_template_db: Path) -> None:
    """The registered version's model card carries the run report's out-of-fold metrics (Uno's C, td-AUC) next to
    Harrell's C, each with the numbers report.html shows."""
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}",
                                          f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "debug=fast",
                                          "training.progress=false", "extract.workers=1", "data=cohort",
                                          f"data.root={nsclc_cohort}", "baselines=none", "training.final_model=true"])
    train(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert "model_card_error" not in summary and "report_error" not in summary
    card = Path(summary["model_card"]).read_text(encoding="utf-8")
    report = pd.read_csv(tmp_path / "run" / "evaluation" / "metrics.csv")
    fused = report[report["model"] == "fused"].set_index("metric")
    for metric in ("uno_c", "mean_auc"):
        label = metric.replace("_", "\\_") + " (pooled out-of-fold)"  # Markdown escapes the underscores
        rows = [line for line in card.splitlines() if label in line]
        assert len(rows) == 1 and f"| {fused.loc[metric, 'estimate']:.3f} |" in rows[0], card
    assert "harrell\\_c (pooled out-of-fold)" in card


def test_unknown_optimized_metric_fails_before_training(valid_cohort: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _compose(tmp_path, "data=cohort", f"data.root={valid_cohort}", "extract.run=false",
                   "baselines=none", "optimized_metric=nomodel/cindex")
    monkeypatch.setattr(pipeline, "_inputs", lambda cfg, cohort, store, **k: ModelInputs(cohort, store, _tiny_data()))
    monkeypatch.setattr(pipeline, "_fit_predict", lambda *a, **k: pytest.fail("trained despite the bad metric"))
    with pytest.raises(ValueError, match="set optimized_metric=fused/cindex"):
        train(cfg)


# ------------------------------------------------------------------------------------------------ units
def _tiny_data(n: int = 48, seed: int = 0) -> MultimodalData:
    """Clinical + one omics table; the response follows ``age``, the hazard follows the omics signal."""
    rng = np.random.default_rng(seed)
    patients = pd.Index([f"T{i:03d}" for i in range(n)], name="patient_id")
    x = rng.normal(size=(n, 4))
    clinical = pd.DataFrame({"age": rng.normal(65, 9, n), "sex": rng.choice(["M", "F"], n)}, index=patients)
    t = 500 * rng.exponential(1, n) / np.exp(x[:, 0])
    event = (rng.random(n) < 0.8).astype(float)
    response = ((clinical["age"].to_numpy() - 65) / 9 + rng.normal(0, 0.5, n) > 0).astype(float)
    response[:3] = np.nan
    return MultimodalData(patients=patients, clinical=clinical,
                          modalities={"cfdna": pd.DataFrame(x, index=patients, columns=[f"f{i}" for i in range(4)])},
                          present=pd.DataFrame({"clinical": True, "cfdna": True}, index=patients),
                          time=t.round() + 1, event=event, label=response, endpoint="pfs",
                          extra_labels={"response": response})


class _Recorder(Mapping):
    """An ``images=`` provider of random (C=1, 8, 8, 8) crops for two timepoints that records who was fetched."""

    def __init__(self, patients: pd.Index, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self._data = {str(p): {"preop": torch.rand(1, 8, 8, 8, generator=gen),
                               "postop1": torch.rand(1, 8, 8, 8, generator=gen)} for p in patients}
        self.seen: set[str] = set()

    def __getitem__(self, key: str) -> dict[str, torch.Tensor]:
        self.seen.add(str(key))
        return self._data[str(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _ct_model() -> FusedSurvivalModel:
    return FusedSurvivalModel(use_ct_images=True, modalities=["cfdna"], epochs=2, patience=None, refit=False,
                              batch_size=16, ct_widths=[4, 4, 8, 8], ct_embed_dim=4, device="cpu", num_threads=1,
                              seed=0)


def test_fit_predict_routes_each_cohorts_images_and_stays_in_the_fold() -> None:
    data = _tiny_data()
    train_d, test_d = data.subset(np.arange(32)), data.subset(np.arange(32, 48))
    train_images = _Recorder(data.patients, seed=1)  # the training cohort's store (every patient of it)
    test_images = _Recorder(data.patients, seed=2)  # e.g. the external validation cohort's store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        risk, resp = pipeline._fit_predict(_ct_model(), train_d, test_d, None, train_images, test_images)
        again, _ = pipeline._fit_predict(_ct_model(), train_d, test_d, None, train_images, test_images)
    assert train_images.seen == set(train_d.patients)  # fit fetched training patients only
    assert test_images.seen == set(test_d.patients)  # scoring used the other cohort's store
    assert np.isfinite(risk).all() and resp is None  # no binary head: no response
    assert np.array_equal(risk, again)  # seeded: the same fold gives the same scores
    # models without a CT encoder get no images
    tab = FusedSurvivalModel(epochs=2, patience=None, refit=False, device="cpu", seed=0)
    seen = _Recorder(data.patients, seed=3)
    pipeline._fit_predict(tab, train_d, test_d, None, seen)
    assert not seen.seen and tab.image_provider is None


def test_ct_timepoints_follow_the_sample_days(valid_cohort: Path, tmp_path: Path) -> None:
    cohort = load_cohort(valid_cohort)
    assert ct_timepoints_of(cohort) == ["preop"]
    assert ct_timepoints_of(cohort, "nothing") == []
    samples = cohort.samples.copy()
    extra = samples[samples["modality"] == "ct"].assign(timepoint="postop1", day=90)
    cohort.samples = pd.concat([extra, samples], ignore_index=True)  # listed first, but later in time
    assert ct_timepoints_of(cohort) == ["preop", "postop1"]
    with pytest.raises(ValueError, match=r"ct_timepoints \['week6'\]"):
        pipeline._check_ct_cohort(cohort, "ct", ["preop", "week6"], "training")
    with pytest.raises(ValueError, match="image modality 'rppa'"):
        pipeline._check_ct_cohort(cohort, "rppa", None, "training")


def test_response_reference_is_a_clinical_logistic_model() -> None:
    from omics_risk.models.baselines import make_baselines

    data = _tiny_data(n=200)
    train_d, test_d = data.subset(np.arange(150)), data.subset(np.arange(150, 200))
    ref = ResponseReference(make_baselines(["cfdna"], "binary", {"include": ["clinical_cox"]})["clinical_cox"],
                            "response").fit(train_d)
    prob = ref.predict_response(test_d)
    assert np.allclose(ref.predict_risk(test_d), 1 - prob)
    label = test_d.extra_labels["response"]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(label, prob) > 0.8  # response follows age
    with pytest.raises(ValueError, match=r"not in data\.extra_labels"):
        ResponseReference(ref.model, "orr").fit(train_d)


def test_response_task_adds_the_binary_head(tmp_path: Path) -> None:
    cfg = _compose(tmp_path, "task=sclc_response", "baselines=fast", "data=cohort", "data.root=unused")
    data = _tiny_data()
    factories = pipeline._factories(cfg, data, {"age": "numeric", "sex": "categorical"})
    fused = factories["fused"]()
    assert list(fused.heads) == ["cox", "binary"] and fused.response_label == "response"
    assert pipeline.RESPONSE_REFERENCE in factories and "clinical_cox" in factories
    with open_dict(cfg):
        cfg.task.response = None
    assert list(pipeline._factories(cfg, data, {})["fused"]().heads) == ["cox"]


def test_fused_ct_config_fills_timepoints_and_channels(tmp_path: Path) -> None:
    cfg = _compose(tmp_path, "model=fused_ct", "data=cohort", "data.root=unused", "model.ct.mask_channel=true",
                   "baselines=none", "model.deep_radiomic_score=true")
    factories = pipeline._factories(cfg, _tiny_data(), {}, ["baseline", "c3d1"])
    model = factories["fused_ct"]()
    assert model.use_ct_images and list(model.ct_timepoints) == ["baseline", "c3d1"] and model.ct_in_channels == 2
    ct_only = factories["ct_deep"]()
    assert ct_only.modalities == [] and not ct_only.use_clinical and list(ct_only.heads) == ["cox"]


def test_model_parts_are_config_groups(tmp_path: Path) -> None:
    """`model/encoder=`, `model/fusion=` and `model/head=` swap one part of the fused network each."""
    data = _tiny_data()
    default = pipeline._factories(_compose(tmp_path, "data=cohort", "data.root=unused", "baselines=none"),
                                  data, {})["fused"]()
    assert (default.fusion, list(default.heads), list(default.hidden)) == ("gated_attention", ["cox"], [])
    cfg = _compose(tmp_path, "data=cohort", "data.root=unused", "baselines=none", "model/fusion=concat",
                   "model/head=cox_discrete", "model/encoder=mlp", "task=sclc_response")
    model = pipeline._factories(cfg, data, {"age": "numeric", "sex": "categorical"})["fused"]()
    assert model.fusion == "concat" and list(model.hidden) == [64]
    assert list(model.heads) == ["cox", "discrete", "binary"] and model.n_intervals == 10
    # the rest of the network is untouched by the swap
    assert (model.k, model.n_members, model.epochs, model.lr) == (default.k, default.n_members, default.epochs,
                                                                  default.lr)
    with pytest.raises(Exception, match="fusion"):  # Hydra names the group and its options
        _compose(tmp_path, "model/fusion=sum")
